//! The generic model-calling kind (`kind = "llm"`): an agent that is only
//! its prompt and its model, so a researcher adds a role (a headline
//! writer, a planner, a second answerer, a judge) with files alone.
//!
//! Its prompt sees `query`, `intent`, `passages` (numbered `[n]` like the
//! summarizer's), `outputs` (earlier steps' outputs by agent name: a text
//! as a string, a JSON output as its value, a verdict as `{accepted,
//! scores, feedback}`, passages as a list) and, when a critic sends its
//! text back, `feedback` and `previous`.
//!
//! Its output is text (streamed as it is written, an answer candidate the
//! critic may judge), or JSON when its prompt declares `outputs` (or its
//! `[llm] output = "json"`): the reply must parse as JSON and fit the
//! declared schema, else the step fails with
//! [`MeshError::StructuredOutput`].

use std::collections::BTreeMap;

use minijinja::context;
use serde_json::Value;

use std::sync::Arc;

use super::step::{KindLogic, Model, StepContext, wrong_settings};
use crate::config::{AgentProfile, AgentSpec, KindSettings, LlmOutput, output_spec};
use crate::llm::{ChatMessage, LlmRequest, LlmResponse, ResponseSchema, Role, TaskHint};
use crate::mesh::messages::{StepInput, StepOutput};
use crate::mesh::tools::{CallerContext, Toolbox};
use crate::mesh::{MeshError, Resources, StepRecord};

/// Most schema violations named in one error: enough to fix the prompt,
/// few enough to read.
const MAX_VIOLATIONS: usize = 5;

/// An `llm` profile, prepared.
pub struct Llm {
    /// The model and the prompt (no fixed values), asked for JSON when the
    /// output is JSON, offered the tools when it has some.
    model: Model,
    /// Whether the output is JSON (else text).
    json: bool,
    /// The compiled schema a JSON reply must fit; `None`: any JSON.
    validator: Option<jsonschema::Validator>,
    /// How often a reply that misses the schema is asked for again: the
    /// model profile's retries.
    retries: u32,
    /// The tools the model may call; `None`: it calls none.
    toolbox: Option<Toolbox>,
}

impl KindLogic for Llm {
    fn prepare(agent: &AgentSpec, profile: &AgentProfile, resources: &Resources) -> Result<Self, MeshError> {
        let KindSettings::Llm(settings) = &profile.settings else {
            return Err(wrong_settings(agent));
        };
        let startup = |e: String| MeshError::Startup(format!("agent `{}`: {e}", agent.name));
        let spec = output_spec(settings, profile.prompt.as_deref()).map_err(startup)?;
        let mut model = Model::prepare(agent, profile, resources, context! {})?;
        let json = spec.output == LlmOutput::Json;
        let validator = match &spec.schema {
            Some(s) => Some(jsonschema::validator_for(s).map_err(|e| startup(format!("`outputs`: {e}")))?),
            None => None,
        };
        if json {
            let schema = spec.schema.map(|s| ResponseSchema::new(&agent.name, s, spec.strict));
            model = model.with_json_output(schema);
        }
        let toolbox = Toolbox::build(agent, profile, resources)?;
        if let Some(t) = &toolbox {
            model = model.with_tools(t.specs());
        }
        let retries = profile.model.as_ref().and_then(|m| resources.retries.get(m)).copied().unwrap_or(0);
        Ok(Llm { model, json, validator, retries, toolbox })
    }

    async fn step(&self, ctx: &mut StepContext<'_>, input: StepInput) -> Result<StepOutput, MeshError> {
        let (query, intent, passages, outputs, feedback, previous, judged) = match input {
            StepInput::Generate { query, intent, passages, outputs, feedback, previous, judged } => {
                (query, intent, passages, outputs, feedback, previous, judged)
            }
            other => return Err(ctx.cannot_run(&other)),
        };
        let numbered = super::step::numbered_passages(&passages);
        // By name, the latest output of an agent that ran twice wins.
        let by_agent: BTreeMap<&str, &Value> = outputs.iter().map(|(a, v)| (a.as_str(), v)).collect();
        let vars = context! {
            query => query, intent => intent, passages => numbered,
            outputs => minijinja::Value::from_serialize(&by_agent),
            feedback => feedback, previous => previous, answer => judged,
        };
        let revised = if feedback.is_some() { " (revised)" } else { "" };
        let caller_query = query.clone();
        let caller_intent = intent.clone();
        let hint = TaskHint::Generate {
            query,
            intent,
            passages: passages.clone(),
            outputs,
            feedback,
            previous,
            judged,
            json: self.json,
        };
        let caller = CallerContext {
            query: &caller_query,
            intent: &caller_intent,
            passages: &passages,
            variant: ctx.variant(),
        };
        let mut request = ctx.request(&self.model, vars, hint)?;
        let mut tools = Vec::new();
        let resp = self.answer(ctx, &caller, &mut request, &mut tools).await?;
        if !self.json {
            let text = resp.text.trim().to_string();
            ctx.record.summary =
                format!("text of {} chars{revised}{}", text.chars().count(), tool_note(&tools));
            return Ok(StepOutput::Generated { text, json: None, tools });
        }
        // A reply that misses the schema is asked for again, as often as
        // the profile retries a failed call; the last miss is the error.
        let mut misses = 0;
        let mut reply = resp.text;
        let value = loop {
            match self.check(&reply) {
                Ok(value) => break value,
                Err(message) if misses < self.retries => {
                    misses += 1;
                    tracing::warn!(agent = %ctx.agent(), model = %ctx.record.model, %message, "reply misses the output schema; asking again");
                    ctx.record.failed_model_attempts.push("structured_output".to_string());
                    reply = ctx.complete(&self.model, &request, false).await?.text;
                }
                Err(message) => {
                    return Err(MeshError::StructuredOutput {
                        agent: ctx.agent().to_string(),
                        model: ctx.record.model.clone(),
                        message,
                    });
                }
            }
        };
        ctx.record.summary = match &value {
            Value::Object(map) => {
                format!(
                    "JSON {{{}}}{revised}{}",
                    map.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
                    tool_note(&tools)
                )
            }
            _ => format!("JSON value{revised}{}", tool_note(&tools)),
        };
        Ok(StepOutput::Generated { text: value.to_string(), json: Some(Box::new(value)), tools })
    }
}

impl Llm {
    /// The model's answer to `request`, through as many tool rounds as it
    /// asks for (up to `max_tool_rounds`; the call after the last round
    /// offers no tools, so the model answers). Each round's calls run at
    /// once; their results join `request` as `tool` messages and their
    /// records go to `tools`. Text is streamed when it is the output.
    async fn answer(
        &self,
        ctx: &mut StepContext<'_>,
        caller: &CallerContext<'_>,
        request: &mut LlmRequest,
        tools: &mut Vec<StepRecord>,
    ) -> Result<LlmResponse, MeshError> {
        let stream = !self.json;
        let Some(toolbox) = &self.toolbox else {
            return ctx.complete(&self.model, request, stream).await;
        };
        let mut rounds = 0;
        loop {
            if rounds >= toolbox.max_rounds() {
                // Out of rounds: the model answers with what it has.
                request.tools = Arc::from([]);
            }
            let resp = ctx.complete(&self.model, request, stream).await?;
            if resp.tool_calls.is_empty() || request.tools.is_empty() {
                return Ok(resp);
            }
            rounds += 1;
            let mut said = ChatMessage::new(Role::Assistant, resp.text.clone());
            said.tool_calls = resp.tool_calls.clone();
            request.messages.push(said);
            let results = toolbox.run_all(ctx, caller, &resp.tool_calls, tools).await;
            request.messages.extend(results);
        }
    }

    /// The reply as JSON fitting the schema, or what is wrong with it.
    fn check(&self, reply: &str) -> Result<Value, String> {
        let Some(value) = parse_json(reply) else {
            return Err(format!("the reply is not JSON: {}", preview(reply)));
        };
        if let Some(validator) = &self.validator {
            let violations: Vec<String> = validator
                .iter_errors(&value)
                .take(MAX_VIOLATIONS)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() { e.to_string() } else { format!("{e} (at {at})") }
                })
                .collect();
            if !violations.is_empty() {
                return Err(violations.join("; "));
            }
        }
        Ok(value)
    }
}

/// What the summary says of the tools a step called.
fn tool_note(tools: &[StepRecord]) -> String {
    let calls = tools.iter().filter(|r| r.kind == "tool").count();
    match calls {
        0 => String::new(),
        1 => "; 1 tool call".to_string(),
        n => format!("; {n} tool calls"),
    }
}

/// The JSON value of a reply: the whole reply, or the object inside code
/// fences or prose (models add them, even when asked not to).
fn parse_json(text: &str) -> Option<Value> {
    serde_json::from_str(text.trim()).ok().or_else(|| crate::llm::extract_json(text).map(Value::Object))
}

/// The start of a reply, for an error message.
fn preview(text: &str) -> String {
    const MAX: usize = 120;
    let t = text.trim();
    match t.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &t[..cut]),
        None => format!("{t:?}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::{Harness, echo, fixed_reply, llm_agent, passage};
    use super::*;
    use crate::mesh::ErrorClass;

    /// A headline prompt: text output, reading the summarizer's output.
    const HEADLINE: &str = "---\nname: Headline\n---\nsystem:\nWrite a headline.\n\nuser:\n\
        {{ intent }} | {{ outputs.summarizer }} | {% for p in passages %}[{{ p.n }}] {{ p.text }}{% endfor %} \
        | {{ query }}\n";

    /// A classifier prompt whose `outputs` declare its JSON.
    const CLASSIFY: &str = "---\nname: Classify\noutputs:\n  needs_search:\n    type: boolean\n  \
        topic:\n    type: string\n---\nuser:\n{{ query }}\n";

    fn generate(outputs: Vec<(String, Value)>) -> StepInput {
        StepInput::Generate {
            query: "Which port does the gateway listen on?".into(),
            intent: "question".into(),
            passages: vec![passage("gateway", "The gateway listens on port 50051 by default.")].into(),
            outputs: outputs.into(),
            feedback: None,
            previous: None,
            judged: None,
        }
    }

    fn summarized() -> Vec<(String, Value)> {
        vec![("summarizer".into(), json!("It listens on port 50051 [1]. It checks requests first [1]."))]
    }

    async fn run(h: &Harness, prompt: &str, input: StepInput) -> Result<(StepOutput, String), MeshError> {
        let spec = llm_agent("headline", prompt, None);
        let llm = Llm::prepare(&spec, &spec.base, &h.resources)?;
        let (output, record) = h.run_spec(&llm, &spec, input).await?;
        Ok((output, record.summary))
    }

    #[tokio::test]
    async fn the_offline_model_heads_the_draft_and_says_it_is_offline() {
        let h = Harness::offline();
        let spec = llm_agent("headline", HEADLINE, None);
        let llm = Llm::prepare(&spec, &spec.base, &h.resources).unwrap();
        let (output, record) = h.run_spec(&llm, &spec, generate(summarized())).await.unwrap();
        let StepOutput::Generated { text, json: None, .. } = output else { panic!("{output:?}") };
        assert_eq!(text, "It listens on port 50051 [1].");
        assert_eq!((record.model.as_str(), record.kind.as_str()), ("offline-extractive", "llm"));
        assert_eq!(record.summary, "text of 29 chars");
        assert!(record.tokens_estimated && record.model_attempts == 1);
    }

    #[tokio::test]
    async fn the_prompt_sees_the_query_passages_outputs_and_intent() {
        let h = Harness::with_model(echo());
        let (output, _) = run(&h, HEADLINE, generate(summarized())).await.unwrap();
        let StepOutput::Generated { text, .. } = output else { panic!("{output:?}") };
        assert!(text.contains("question | It listens on port 50051 [1]."), "{text}");
        assert!(text.contains("[1] The gateway listens on port 50051 by default."), "{text}");
        assert!(text.ends_with("| Which port does the gateway listen on?"), "{text}");
    }

    #[tokio::test]
    async fn declared_outputs_make_a_validated_json_output() {
        let h = Harness::offline();
        let (output, summary) = run(&h, CLASSIFY, generate(Vec::new())).await.unwrap();
        let StepOutput::Generated { json: Some(value), text, .. } = output else { panic!("{output:?}") };
        assert_eq!(value["needs_search"], json!(false), "a placeholder of the declared type");
        assert!(value["topic"].as_str().unwrap().contains("50051"), "strings take the extract: {value}");
        assert_eq!(text, value.to_string());
        assert_eq!(summary, "JSON {needs_search, topic}");

        let h =
            Harness::with_model(fixed_reply("```json\n{\"needs_search\": true, \"topic\": \"ports\"}\n```"));
        let (output, _) = run(&h, CLASSIFY, generate(Vec::new())).await.unwrap();
        assert!(
            matches!(output, StepOutput::Generated { json: Some(v), .. } if v["needs_search"] == json!(true))
        );
    }

    #[tokio::test]
    async fn a_reply_that_misses_the_schema_is_a_clear_error_not_to_retry() {
        for (reply, wanted) in [
            ("Sure! It needs a search.", "the reply is not JSON: \"Sure! It needs a search.\""),
            (
                r#"{"needs_search": "yes", "topic": "ports"}"#,
                "\"yes\" is not of type \"boolean\" (at /needs_search)",
            ),
            (r#"{"needs_search": true}"#, "\"topic\" is a required property"),
        ] {
            let h = Harness::with_model(fixed_reply(reply));
            let err = run(&h, CLASSIFY, generate(Vec::new())).await.unwrap_err();
            assert!(
                matches!(&err, MeshError::StructuredOutput { agent, model, .. } if agent == "headline" && model == "fixed")
            );
            assert!(err.to_string().contains(wanted), "{reply}: {err}");
            assert_eq!(err.class(), ErrorClass::FailedPrecondition);
            assert_eq!(crate::mesh::error::error_kind(&err), "structured_output");
        }
    }

    #[tokio::test]
    async fn json_output_without_a_schema_takes_any_json() {
        let h = Harness::offline();
        let spec = llm_agent("planner", "---\nname: P\n---\nuser:\n{{ query }}\n", Some(LlmOutput::Json));
        let llm = Llm::prepare(&spec, &spec.base, &h.resources).unwrap();
        let (output, record) = h.run_spec(&llm, &spec, generate(Vec::new())).await.unwrap();
        let StepOutput::Generated { json: Some(value), .. } = output else { panic!("{output:?}") };
        assert!(value["text"].as_str().unwrap().contains("50051"), "{value}");
        assert_eq!(record.summary, "JSON {text}");
    }

    #[tokio::test]
    async fn a_step_of_another_kind_is_an_internal_error() {
        let h = Harness::offline();
        let err = run(&h, HEADLINE, StepInput::Retrieve { query: "q".into() }).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Internal);
        assert!(err.to_string().contains("is a llm and cannot run a retrieve step"), "{err}");
    }

    #[test]
    fn an_unusable_outputs_declaration_fails_before_start_up() {
        // The prompt file itself is refused when it loads (so `validate`
        // names it): no agent is ever built from it.
        let text = "---\nname: B\noutputs: 3\n---\nuser:\n{{ query }}\n";
        let Err(err) = crate::config::PromptFile::parse(text, std::path::Path::new("test.prompty")) else {
            panic!("must fail")
        };
        assert!(err.to_string().contains("field `outputs`"), "{err}");
    }
}
