//! The zero-work model (`provider = "zero"`): a benchmark mode, not a model.
//!
//! It answers every call at once with a fixed, well-formed reply for the
//! request's [`TaskHint`] (the router's default intent, a one-sentence
//! answer citing passage 1, an accepting verdict), so a benchmark measures
//! what the mesh itself costs: messages, hops, spans, records. Its model
//! name is `zero-work` and it never pretends to answer anything. With
//! `latency_ms` set it sleeps that long first, which gives load tests a
//! model whose only cost is time.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{LlmClient, LlmError, LlmRequest, LlmResponse, TaskHint, TokenSink, TokenUsage};

/// The model name the zero-work model reports.
pub const ZERO_MODEL: &str = "zero-work";

/// The critic's verdict: accepted with full scores, so no revision runs.
const VERDICT: &str =
    r#"{"accepted": true, "scores": {"groundedness": 1.0, "coverage": 1.0}, "feedback": ""}"#;

/// The zero-work model. Stateless; safe to share.
pub struct ZeroModel {
    model: String,
    latency: Duration,
}

impl ZeroModel {
    pub fn new(model: impl Into<String>, latency_ms: u64) -> Self {
        Self { model: model.into(), latency: Duration::from_millis(latency_ms) }
    }
}

/// The fixed reply for a task.
fn reply(hint: &TaskHint) -> String {
    match hint {
        TaskHint::Route { default_intent, .. } => format!(r#"{{"intent": "{default_intent}"}}"#),
        TaskHint::Answer { passages, .. } if !passages.is_empty() => "A zero-work answer [1].".to_string(),
        TaskHint::Answer { .. } => "A zero-work answer.".to_string(),
        TaskHint::Critique { .. } => VERDICT.to_string(),
        TaskHint::Judge { .. } => r#"{"score": 3, "reason": "zero-work judge"}"#.to_string(),
        TaskHint::Generate { json: true, .. } => "{}".to_string(),
        TaskHint::Generate { .. } => "A zero-work answer.".to_string(),
        TaskHint::Freeform => String::new(),
    }
}

impl LlmClient for ZeroModel {
    fn model(&self) -> &str {
        &self.model
    }

    fn provider(&self) -> &str {
        "zero"
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            let text = reply(&request.hint);
            if let Some(sink) = tokens {
                // A closed receiver only means the client stopped listening.
                let _ = sink.send(text.clone());
            }
            Ok(LlmResponse {
                text,
                model: self.model.clone(),
                usage: TokenUsage { input_tokens: 0, output_tokens: 0, estimated: true },
                cost_usd: Some(0.0),
                finish_reason: Some("stop".into()),
                attempts: 1,
                failed_attempts: Vec::new(),
                tool_calls: Vec::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ModelParams;

    #[tokio::test]
    async fn replies_are_well_formed_for_each_task() {
        let m = ZeroModel::new(ZERO_MODEL, 0);
        let ask = |hint| LlmRequest {
            agent: "a".into(),
            messages: vec![],
            params: ModelParams::default(),
            hint,
            response_schema: None,
            tools: Default::default(),
        };
        let route = ask(TaskHint::Route {
            query: "q".into(),
            intents: Vec::new().into(),
            default_intent: "question".into(),
        });
        let r = m.complete(&route, None).await.unwrap();
        assert_eq!(crate::llm::extract_json(&r.text).unwrap()["intent"], "question");
        let critique =
            ask(TaskHint::Critique { query: "q".into(), answer: "a".into(), passages: Vec::new().into() });
        let v = crate::llm::extract_json(&m.complete(&critique, None).await.unwrap().text).unwrap();
        assert_eq!(v["accepted"], true);
        assert_eq!(r.model, "zero-work");
    }
}
