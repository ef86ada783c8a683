//! The router: asks its model which configured intent a query has, and
//! falls back to the default intent when the answer names none it knows.

use std::sync::Arc;

use minijinja::context;

use super::step::{KindLogic, Model, StepContext, wrong_settings};
use crate::config::{AgentProfile, AgentSpec, KindSettings};
use crate::llm::{IntentChoice, TaskHint};
use crate::mesh::messages::{StepInput, StepOutput};
use crate::mesh::{MeshError, Resources};

/// A router profile, prepared.
pub struct Router {
    /// The model and the prompt, with the intents and the default intent
    /// rendered in once.
    model: Model,
    /// The intents to choose from, shared by every request's hint (never
    /// copied per request).
    intents: Arc<[IntentChoice]>,
    /// Chosen when the model names no configured intent.
    default_intent: String,
}

impl KindLogic for Router {
    fn prepare(agent: &AgentSpec, profile: &AgentProfile, resources: &Resources) -> Result<Self, MeshError> {
        let KindSettings::Router(rs) = &profile.settings else {
            return Err(wrong_settings(agent));
        };
        let intents: Arc<[IntentChoice]> = rs
            .intents
            .iter()
            .map(|i| IntentChoice {
                name: i.name.clone(),
                description: i.description.clone(),
                examples: i.examples.clone(),
                min_similarity: i.min_similarity.unwrap_or(rs.min_similarity),
            })
            .collect();
        let fixed = context! {
            intents => minijinja::Value::from_serialize(&*intents),
            default_intent => rs.default_intent,
        };
        let model = Model::prepare(agent, profile, resources, fixed)?;
        Ok(Router { model, intents, default_intent: rs.default_intent.clone() })
    }

    async fn step(&self, ctx: &mut StepContext<'_>, input: StepInput) -> Result<StepOutput, MeshError> {
        let query = match input {
            StepInput::Route { query } => query,
            other => return Err(ctx.cannot_run(&other)),
        };
        // The intents and the default are rendered in already.
        let vars = context! { query => query };
        let hint = TaskHint::Route {
            query,
            intents: self.intents.clone(),
            default_intent: self.default_intent.clone(),
        };
        let resp = ctx.call(&self.model, vars, hint).await?;
        let parsed = crate::llm::extract_json(&resp.text);
        let known = |name: &str| self.intents.iter().any(|i| i.name == name);
        let named = parsed
            .as_ref()
            .and_then(|m| m.get("intent"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| {
                // A model may answer with the bare intent name.
                let t = resp.text.trim().trim_matches('"');
                known(t).then(|| t.to_string())
            });
        let intent = match named {
            Some(n) if known(&n) => n,
            _ => self.default_intent.clone(),
        };
        let score = parsed.as_ref().and_then(|m| m.get("score")).and_then(|v| v.as_f64());
        ctx.record.summary = match score {
            Some(s) => format!("intent={intent} similarity={s:.3}"),
            None => format!("intent={intent}"),
        };
        Ok(StepOutput::Routed { intent })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Harness, fixed_reply};
    use super::*;

    async fn route(h: &Harness, query: &str) -> (String, String) {
        let router = Router::prepare(h.agent("router"), &h.agent("router").base, &h.resources).unwrap();
        let (output, record) =
            h.run(&router, "router", StepInput::Route { query: query.into() }).await.unwrap();
        let StepOutput::Routed { intent } = output else { panic!("not routed: {output:?}") };
        (intent, record.summary)
    }

    #[tokio::test]
    async fn the_offline_model_picks_the_closest_intent() {
        let h = Harness::offline();
        let (intent, summary) = route(&h, "hello there").await;
        assert_eq!(intent, "greeting");
        assert!(summary.starts_with("intent=greeting similarity="), "{summary}");
        assert_eq!(route(&h, "How does the gateway handle a request?").await.0, "question");
        assert_eq!(route(&h, "Give me a recipe for chocolate cake").await.0, "out_of_scope");
    }

    #[tokio::test]
    async fn a_bare_intent_name_is_understood() {
        let h = Harness::with_model(fixed_reply("\"greeting\"\n"));
        assert_eq!(route(&h, "anything").await, ("greeting".to_string(), "intent=greeting".to_string()));
    }

    #[tokio::test]
    async fn garbage_or_an_unknown_intent_falls_back_to_the_default() {
        for reply in
            ["I would say it is a question about cooking.", r#"{"intent": "weather", "score": 0.9}"#, ""]
        {
            let h = Harness::with_model(fixed_reply(reply));
            let (intent, _) = route(&h, "What is the weather tomorrow?").await;
            assert_eq!(intent, "question", "reply {reply:?} must fall back to the default intent");
        }
    }

    #[tokio::test]
    async fn a_step_of_another_kind_is_an_internal_error() {
        let h = Harness::offline();
        let router = Router::prepare(h.agent("router"), &h.agent("router").base, &h.resources).unwrap();
        let err = h.run(&router, "router", StepInput::Retrieve { query: "q".into() }).await.unwrap_err();
        assert_eq!(err.class(), crate::mesh::ErrorClass::Internal);
        assert!(err.to_string().contains("is a router and cannot run a retrieve step"), "{err}");
    }

    #[test]
    fn a_router_without_a_model_fails_at_start_up() {
        let h = Harness::offline();
        let mut spec = h.agent("router").clone();
        spec.base.model = None;
        let Err(err) = Router::prepare(&spec, &spec.base, &h.resources) else { panic!("must fail") };
        assert!(matches!(err, MeshError::Startup(_)), "{err:?}");
        assert!(err.to_string().contains("needs a model and a prompt"), "{err}");
    }
}
