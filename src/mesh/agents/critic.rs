//! The critic: asks its model to score a draft against the passages, and
//! accepts or rejects it by the agent's thresholds, with feedback the
//! summarizer acts on.

use minijinja::context;

use super::step::{KindLogic, Model, StepContext, wrong_settings};
use crate::config::{AgentProfile, AgentSpec, KindSettings};
use crate::llm::{ResponseSchema, Scores, TaskHint};
use crate::mesh::messages::{StepInput, StepOutput};
use crate::mesh::{MeshError, Resources};

/// A critic profile, prepared.
pub struct Critic {
    /// The model and the prompt (the critic has no fixed values).
    model: Model,
    /// Least groundedness of an accepted draft.
    accept_threshold: f64,
    /// Least coverage of an accepted draft, when the model scores it.
    min_coverage: f64,
}

impl KindLogic for Critic {
    fn prepare(agent: &AgentSpec, profile: &AgentProfile, resources: &Resources) -> Result<Self, MeshError> {
        let KindSettings::Critic(cs) = &profile.settings else {
            return Err(wrong_settings(agent));
        };
        let mut model = Model::prepare(agent, profile, resources, context! {})?;
        // A prompt that declares the verdict's shape (`outputs`) asks for
        // it as a JSON schema: servers that constrain their output by it
        // (llama.cpp's grammar, OpenAI's structured outputs) then always
        // close the object. The reply is read leniently either way.
        if let Some(schema) = profile.prompt.as_ref().and_then(|p| p.output_schema.clone()) {
            let strict = crate::config::is_strict_schema(&schema);
            model = model.with_json_output(Some(ResponseSchema::new(&agent.name, schema, strict)));
        }
        Ok(Critic { model, accept_threshold: cs.accept_threshold, min_coverage: cs.min_coverage })
    }

    async fn step(&self, ctx: &mut StepContext<'_>, input: StepInput) -> Result<StepOutput, MeshError> {
        let (query, answer, passages) = match input {
            StepInput::Critique { query, answer, passages } => (query, answer, passages),
            other => return Err(ctx.cannot_run(&other)),
        };
        let numbered: Vec<minijinja::Value> = passages
            .iter()
            .enumerate()
            .map(|(i, p)| context! {n => i + 1, doc_id => p.doc_id, text => p.text})
            .collect();
        let vars = context! {query => query, answer => answer, passages => numbered};
        let hint = TaskHint::Critique { query, answer, passages };
        let resp = ctx.call(&self.model, vars, hint).await?;
        let Some(parsed) = crate::llm::extract_json(&resp.text) else {
            return Err(ctx.bad_response(&self.model, "critic answer holds no JSON object"));
        };
        let mut scores = Scores::new();
        if let Some(obj) = parsed.get("scores").and_then(|s| s.as_object()) {
            for (k, v) in obj {
                if let Some(x) = v.as_f64() {
                    scores.insert(k.clone(), x);
                }
            }
        }
        let model_accepts = parsed.get("accepted").and_then(|v| v.as_bool()).unwrap_or(false);
        // The agent's thresholds decide where the model gave scores;
        // the model's own yes/no counts only when it gave none.
        let accepted = match (scores.get("groundedness"), scores.get("coverage")) {
            (Some(g), Some(c)) => *g >= self.accept_threshold && *c >= self.min_coverage,
            (Some(g), None) => *g >= self.accept_threshold,
            _ => model_accepts,
        };
        let feedback = parsed.get("feedback").and_then(|v| v.as_str()).unwrap_or("").to_string();
        ctx.record.summary = format!(
            "{} {}",
            if accepted { "accepted" } else { "rejected" },
            scores.iter().map(|(k, v)| format!("{k}={v:.2}")).collect::<Vec<_>>().join(" ")
        );
        Ok(StepOutput::Judged { accepted, scores, feedback })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Harness, fixed_reply, passage};
    use super::*;
    use crate::llm::LlmError;
    use crate::mesh::ErrorClass;

    fn critique(answer: &str) -> StepInput {
        StepInput::Critique {
            query: "Which port does the gateway listen on?".into(),
            answer: answer.into(),
            passages: vec![passage("gateway", "The gateway listens on port 50051 by default.")].into(),
        }
    }

    /// The verdict of the shipped critic (thresholds 0.6 and 0.5) on
    /// `reply`.
    async fn judge(reply: &str) -> Result<(bool, Scores, String, String), MeshError> {
        let h = Harness::with_model(fixed_reply(reply));
        let spec = h.agent("critic");
        let critic = Critic::prepare(spec, &spec.base, &h.resources).unwrap();
        let (output, record) = h.run(&critic, "critic", critique("It listens on 50051 [1].")).await?;
        let StepOutput::Judged { accepted, scores, feedback } = output else { panic!("{output:?}") };
        Ok((accepted, scores, feedback, record.summary))
    }

    #[tokio::test]
    async fn the_thresholds_decide_over_the_models_own_verdict() {
        let (accepted, scores, _, summary) =
            judge(r#"{"accepted": false, "scores": {"groundedness": 0.9, "coverage": 0.8}, "feedback": ""}"#)
                .await
                .unwrap();
        assert!(accepted, "both scores meet the thresholds");
        assert_eq!(scores["groundedness"], 0.9);
        assert_eq!(summary, "accepted coverage=0.80 groundedness=0.90");

        let (accepted, _, feedback, summary) = judge(
            "```json\n{\"accepted\": true, \"scores\": {\"groundedness\": 0.9, \"coverage\": 0.2}, \
             \"feedback\": \"say which port\"}\n```",
        )
        .await
        .unwrap();
        assert!(!accepted, "coverage 0.2 is under min_coverage 0.5");
        assert_eq!(feedback, "say which port");
        assert_eq!(summary, "rejected coverage=0.20 groundedness=0.90");

        let (accepted, ..) = judge(r#"{"scores": {"groundedness": 0.5}}"#).await.unwrap();
        assert!(!accepted, "groundedness 0.5 is under accept_threshold 0.6");
        let (accepted, scores, ..) = judge(r#"{"accepted": true}"#).await.unwrap();
        assert!(accepted && scores.is_empty(), "with no scores the model's yes counts");
    }

    #[tokio::test]
    async fn a_reply_with_no_json_fails_cleanly() {
        let err = judge("Looks good to me!").await.unwrap_err();
        let MeshError::Model { agent, profile, source: LlmError::BadResponse { model, message } } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((agent.as_str(), profile.as_str(), model.as_str()), ("critic", "offline", "fixed"));
        assert_eq!(message, "critic answer holds no JSON object");
        assert_eq!(err.class(), ErrorClass::Internal);
    }

    #[tokio::test]
    async fn the_offline_model_accepts_a_grounded_draft_and_rejects_an_unsupported_one() {
        let h = Harness::offline();
        let spec = h.agent("critic");
        let critic = Critic::prepare(spec, &spec.base, &h.resources).unwrap();
        let grounded = critique("The gateway listens on port 50051 by default [1].");
        let (output, _) = h.run(&critic, "critic", grounded).await.unwrap();
        assert!(matches!(output, StepOutput::Judged { accepted: true, .. }), "{output:?}");
        let made_up = critique("Bananas are rich in potassium and grow in tropical climates.");
        let (output, record) = h.run(&critic, "critic", made_up).await.unwrap();
        let StepOutput::Judged { accepted, scores, feedback } = output else { panic!("{output:?}") };
        assert!(!accepted && scores["groundedness"] < 0.6 && !feedback.is_empty(), "{scores:?} {feedback}");
        assert!(record.summary.starts_with("rejected "), "{}", record.summary);
    }
}
