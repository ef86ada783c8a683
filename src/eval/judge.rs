//! LLM judges: `groundedness`, `relevance`, `coherence`, `fluency` and
//! `similarity` on 1–5 with a reason, and the `llm_rubric` custom
//! evaluators.
//!
//! Each judge is a Prompty file in `<prompts_dir>/eval/` (`rubric.prompty`
//! for rubrics), rendered with `query`, `response`, `context`,
//! `ground_truth` (and `rubric`) and sent to the judge's model profile
//! (`[eval] judge_model`, or `--judge-model`) through the same
//! [`LlmClient`](crate::llm::LlmClient) as any agent's, so retries,
//! fallback, tokens and cost work the same. With an offline profile the
//! offline engine answers with its heuristics
//! ([`crate::llm::judge_heuristic`]) under the model name
//! `offline-heuristic-judge`.
//!
//! The answer is parsed strictly ([`parse_verdict`]): one JSON object with
//! exactly `score` (an integer 1–5) and `reason` (non-empty text), possibly
//! inside one Markdown code fence. Anything else is a failure of that row's
//! judge metric, recorded with its message — never dropped, never a score.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use super::EvalError;
use crate::config::{MeshSpec, Provider};
use crate::llm::judge_heuristic::OFFLINE_JUDGE_MODEL;
use crate::llm::offline::OfflineEngine;
use crate::llm::{LlmRequest, SharedLlm, TaskHint};
use crate::prompt::Prompty;

/// The built-in judges, in display order.
pub const JUDGES: &[&str] = &["groundedness", "relevance", "coherence", "fluency", "similarity"];

/// The prompt (file stem in `prompts/eval/`) of `llm_rubric` evaluators.
pub const RUBRIC_PROMPT: &str = "rubric";

/// Lowest and highest judge score.
pub const JUDGE_SCALE: (f64, f64) = (1.0, 5.0);

/// Default pass threshold of a judge score (`score >= 3` passes).
pub const DEFAULT_JUDGE_THRESHOLD: f64 = 3.0;

/// Version of the judging code (prompt inputs and the verdict parser);
/// each evaluator's version adds its prompt's version and a hash of its
/// text, so an edited prompt never compares silently with the old one.
const JUDGE_CODE_VERSION: &str = "1";

/// Whether `name` is one of the built-in judges.
pub fn is_judge(name: &str) -> bool {
    JUDGES.contains(&name)
}

/// A judge's parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub score: u8,
    pub reason: String,
}

/// What one row gives a judge.
#[derive(Debug, Clone, Default)]
pub struct JudgeInput {
    pub query: String,
    pub response: String,
    pub context: Option<String>,
    pub ground_truth: Option<String>,
}

/// Whether `criterion` can judge `input`: groundedness needs a context,
/// similarity a ground truth; rubrics and the others need nothing more.
pub fn applicable(criterion: &str, input: &JudgeInput) -> bool {
    match criterion {
        "groundedness" => input.context.as_deref().is_some_and(|c| !c.trim().is_empty()),
        "similarity" => input.ground_truth.is_some(),
        _ => true,
    }
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(120).collect();
    if text.chars().count() > 120 { format!("{t}…") } else { t }
}

/// Parses a judge's answer strictly: one JSON object with exactly `score`
/// (an integer from 1 to 5; `4.0` counts as 4) and `reason` (non-empty
/// text). Surrounding whitespace and one enclosing Markdown code fence are
/// allowed; nothing else is.
pub fn parse_verdict(text: &str) -> Result<Verdict, String> {
    let mut body = text.trim();
    if let Some(rest) = body.strip_prefix("```") {
        // The fence's language tag (```json) runs to the end of its line.
        let rest = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
        body = rest.trim_end().strip_suffix("```").map(str::trim).unwrap_or("");
        if body.is_empty() {
            return Err(format!("judge answer is an unclosed or empty code fence: {:?}", snippet(text)));
        }
    }
    let value: Value = serde_json::from_str(body)
        .map_err(|e| format!("judge answer is not a JSON object ({e}): {:?}", snippet(text)))?;
    let Value::Object(map) = value else {
        return Err(format!("judge answer is JSON but not an object: {:?}", snippet(text)));
    };
    if let Some(extra) = map.keys().find(|k| *k != "score" && *k != "reason") {
        return Err(format!(
            "judge answer has an unexpected field `{extra}` (expected only score and reason)"
        ));
    }
    let score = match map.get("score") {
        None => return Err("judge answer lacks `score`".into()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && (1.0..=5.0).contains(&x) => x as u8,
            Some(x) if x.fract() == 0.0 => return Err(format!("judge score {n} is outside 1–5")),
            _ => return Err(format!("judge score {n} is not an integer")),
        },
        Some(other) => return Err(format!("judge `score` must be an integer 1–5, got {other}")),
    };
    let reason = match map.get("reason") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::String(_)) => return Err("judge `reason` is empty".into()),
        Some(other) => return Err(format!("judge `reason` must be text, got {other}")),
        None => return Err("judge answer lacks `reason`".into()),
    };
    Ok(Verdict { score, reason })
}

/// The judge prompts: `<prompts_dir>/eval/<judge>.prompty` for every
/// built-in judge and `rubric.prompty`, loaded and checked (every
/// variable the template reads must be declared). `meshops validate` and
/// `meshops eval run` both load them through this.
pub fn load_prompts(spec: &MeshSpec) -> Result<BTreeMap<String, Arc<Prompty>>, EvalError> {
    let dir = prompts_dir(spec);
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for name in JUDGES.iter().copied().chain([RUBRIC_PROMPT]) {
        let path = dir.join(format!("{name}.prompty"));
        match Prompty::load(&path) {
            Ok(p) => {
                let undeclared = p.undeclared_variables();
                if undeclared.is_empty() {
                    out.insert(name.to_string(), Arc::new(p));
                } else {
                    problems.push(format!(
                        "{}: field `inputs`: the template reads undeclared inputs: {}",
                        path.display(),
                        undeclared.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(EvalError::Run(format!("judge prompts:\n{}", problems.join("\n"))))
    }
}

/// `<prompts_dir>/eval`.
pub fn prompts_dir(spec: &MeshSpec) -> PathBuf {
    spec.resolve(&spec.settings.mesh.prompts_dir).join("eval")
}

/// One judge-scored evaluator of a run: a built-in judge or an
/// `llm_rubric` evaluator.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEval {
    /// The metric name in `scores.jsonl`.
    pub name: String,
    /// The judge criterion (the built-in judge's name, or the custom
    /// evaluator's name for a rubric).
    pub criterion: String,
    pub rubric: Option<String>,
    /// Recorded with each judgement; a stored judgement of another version
    /// is judged again.
    pub version: String,
}

impl ModelEval {
    /// Whether this evaluator applies to `input`.
    pub fn applies(&self, input: &JudgeInput) -> bool {
        self.rubric.is_some() || applicable(&self.criterion, input)
    }
}

/// A stable hash of what a judge sees of one row, so a stored judgement is
/// reused only for the same answer, context and ground truth.
pub fn input_hash(input: &JudgeInput) -> String {
    let mut bytes = Vec::new();
    for part in [
        Some(input.query.as_str()),
        Some(input.response.as_str()),
        input.context.as_deref(),
        input.ground_truth.as_deref(),
    ] {
        bytes.extend_from_slice(part.unwrap_or("\u{1}absent").as_bytes());
        bytes.push(0);
    }
    format!("{:016x}", crate::text::fnv1a64(&bytes))
}

/// What one judge call gave.
#[derive(Debug, Clone)]
pub struct JudgeOutcome {
    pub result: Result<Verdict, String>,
    /// The model that answered (empty when the call failed).
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when unknown (or the call failed).
    pub cost_usd: Option<f64>,
}

/// A judge model with its prompts.
pub struct Judge {
    client: SharedLlm,
    /// The judge's model profile name.
    pub profile: String,
    prompts: BTreeMap<String, Arc<Prompty>>,
}

impl Judge {
    /// The judge for `profile` (a model profile of `spec`): the offline
    /// heuristic judge for an offline profile, the profile's client (with
    /// its retries and fallback) otherwise. `client` replaces the client
    /// (tests).
    pub fn build(spec: &MeshSpec, profile: &str, client: Option<SharedLlm>) -> Result<Judge, EvalError> {
        let prompts = load_prompts(spec)?;
        let client = match client {
            Some(c) => c,
            None => {
                let Some(p) = spec.settings.models.get(profile) else {
                    let known: Vec<&str> = spec.settings.models.keys().map(String::as_str).collect();
                    return Err(EvalError::Run(format!(
                        "judge model: unknown model profile `{profile}`; known: {}",
                        known.join(", ")
                    )));
                };
                if p.provider == Provider::Offline {
                    // Traced like the clients `build_clients` makes.
                    let engine = OfflineEngine::new(OFFLINE_JUDGE_MODEL, p.latency_ms, p.failure_rate);
                    crate::llm::traced::TracedClient::wrap(Arc::new(engine), &spec.settings.telemetry)
                } else {
                    let clients = crate::llm::build_clients(&spec.settings.models, &spec.settings.telemetry)
                        .map_err(|e| EvalError::Run(format!("judge model `{profile}`: {e}")))?;
                    clients.get(profile).cloned().ok_or_else(|| {
                        EvalError::Run(format!("judge model `{profile}`: no client was built"))
                    })?
                }
            }
        };
        Ok(Judge { client, profile: profile.to_string(), prompts })
    }

    /// The judge's model name, as summaries report it.
    pub fn model(&self) -> &str {
        self.client.model()
    }

    /// The version of evaluator `criterion` (a judge name or
    /// [`RUBRIC_PROMPT`]): code version, prompt version and a hash of the
    /// prompt text.
    pub fn version(&self, criterion: &str) -> String {
        match self.prompts.get(criterion) {
            Some(p) => format!(
                "{JUDGE_CODE_VERSION}.{}+{:08x}",
                p.version.as_deref().unwrap_or("0"),
                crate::text::fnv1a64(p.body.as_bytes()) as u32
            ),
            None => JUDGE_CODE_VERSION.to_string(),
        }
    }

    /// Asks the judge to score `input` on `criterion` (or against `rubric`,
    /// with the rubric prompt). Never fails: a failed call or an answer
    /// that is not a verdict comes back as `result: Err(message)`.
    pub async fn judge(&self, criterion: &str, rubric: Option<&str>, input: &JudgeInput) -> JudgeOutcome {
        let failed = |message: String| JudgeOutcome {
            result: Err(message),
            model: String::new(),
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: None,
        };
        let prompt_name = if rubric.is_some() { RUBRIC_PROMPT } else { criterion };
        let Some(prompt) = self.prompts.get(prompt_name) else {
            return failed(format!("no judge prompt `{prompt_name}.prompty`"));
        };
        let vars = json!({
            "query": input.query,
            "response": input.response,
            "context": input.context,
            "ground_truth": input.ground_truth,
            "rubric": rubric,
        });
        let messages = match prompt.render(&vars) {
            Ok(m) => m,
            Err(e) => return failed(e.to_string()),
        };
        let request = LlmRequest {
            agent: format!("judge:{criterion}"),
            messages,
            params: prompt.model.parameters.to_model_params(),
            hint: TaskHint::Judge {
                criterion: criterion.to_string(),
                query: input.query.clone(),
                response: input.response.clone(),
                context: input.context.clone(),
                ground_truth: input.ground_truth.clone(),
                rubric: rubric.map(str::to_string),
            },
            response_schema: None,
            tools: Default::default(),
        };
        match self.client.complete(&request, None).await {
            Ok(resp) => JudgeOutcome {
                result: parse_verdict(&resp.text),
                model: resp.model,
                input_tokens: resp.usage.input_tokens,
                output_tokens: resp.usage.output_tokens,
                cost_usd: resp.cost_usd,
            },
            Err(e) => failed(format!("judge call failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing_accepts_only_verdicts() {
        let ok = parse_verdict("{\"score\": 4, \"reason\": \"mostly supported\"}").unwrap();
        assert_eq!(ok, Verdict { score: 4, reason: "mostly supported".into() });
        assert_eq!(parse_verdict("```json\n{\"score\": 5.0, \"reason\": \"ok\"}\n```").unwrap().score, 5);
        for (bad, why) in [
            ("", "not a JSON object"),
            ("Score: 4", "not a JSON object"),
            ("Sure! {\"score\": 4, \"reason\": \"x\"}", "not a JSON object"),
            ("[4]", "not an object"),
            ("{\"score\": 6, \"reason\": \"x\"}", "outside 1–5"),
            ("{\"score\": 0, \"reason\": \"x\"}", "outside 1–5"),
            ("{\"score\": 3.5, \"reason\": \"x\"}", "not an integer"),
            ("{\"score\": \"4\", \"reason\": \"x\"}", "must be an integer"),
            ("{\"reason\": \"x\"}", "lacks `score`"),
            ("{\"score\": 4}", "lacks `reason`"),
            ("{\"score\": 4, \"reason\": \" \"}", "is empty"),
            ("{\"score\": 4, \"reason\": 2}", "must be text"),
            ("{\"score\": 4, \"reason\": \"x\", \"confidence\": 1}", "unexpected field `confidence`"),
            ("```json\n{\"score\": 4, \"reason\": \"x\"}", "code fence"),
        ] {
            let err = parse_verdict(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn applicability_follows_the_inputs() {
        let mut input = JudgeInput { query: "q".into(), response: "r".into(), ..JudgeInput::default() };
        assert!(!applicable("groundedness", &input) && !applicable("similarity", &input));
        assert!(applicable("fluency", &input));
        input.context = Some("ctx".into());
        input.ground_truth = Some("gt".into());
        assert!(applicable("groundedness", &input) && applicable("similarity", &input));
    }
}
