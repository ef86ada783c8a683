//! Telemetry of model calls as a layer around any [`LlmClient`]: one
//! `gen_ai.call` span per logical call, with the OpenTelemetry GenAI
//! attributes, and the operation-duration, token-usage and cost metrics.
//!
//! [`super::build_clients`] puts it outermost, around the retries and the
//! fallback, so a call that was retried or fell back is still one span and
//! one duration sample (the retries show in the step record's attempts).
//! Every caller of a built client (agents, evaluation judges) gets the same
//! spans and metrics without repeating them.

use std::sync::Arc;

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use tracing::Instrument as _;

use super::{LlmClient, LlmError, LlmRequest, LlmResponse, SharedLlm, TokenSink};
use crate::config::TelemetrySettings;
use crate::telemetry::attr;

/// An [`LlmClient`] that records each call as a span and in the metrics.
pub struct TracedClient {
    inner: SharedLlm,
    /// Record prompt and completion text on the span
    /// (`telemetry.capture_content`): off by default, since they may hold
    /// personal data.
    capture_content: bool,
    /// The model attribute of every metric sample, built once (its value is
    /// shared, so cloning it per call allocates nothing).
    model_attr: KeyValue,
}

impl TracedClient {
    pub fn new(inner: SharedLlm, telemetry: &TelemetrySettings) -> Self {
        let model_attr = shared_attr(attr::GEN_AI_REQUEST_MODEL, inner.model());
        Self { inner, capture_content: telemetry.capture_content, model_attr }
    }

    /// `inner` wrapped, as a shared client.
    pub fn wrap(inner: SharedLlm, telemetry: &TelemetrySettings) -> SharedLlm {
        Arc::new(Self::new(inner, telemetry))
    }

    async fn call(&self, request: &LlmRequest, tokens: Option<TokenSink>) -> Result<LlmResponse, LlmError> {
        let llm = &self.inner;
        let span = tracing::info_span!(
            "gen_ai.call",
            otel.name = %format_args!("chat {}", llm.model()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = llm.provider(),
            gen_ai.system = llm.provider(),
            gen_ai.request.model = llm.model(),
            gen_ai.request.temperature = tracing::field::Empty,
            gen_ai.request.max_tokens = tracing::field::Empty,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            gen_ai.prompt = tracing::field::Empty,
            gen_ai.completion = tracing::field::Empty,
            meshops.tokens_estimated = tracing::field::Empty,
            meshops.cost_usd = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if let Some(t) = request.params.temperature {
            span.record("gen_ai.request.temperature", t);
        }
        if let Some(t) = request.params.max_tokens {
            // Unsigned values reach OTLP as strings; integers must be i64.
            span.record("gen_ai.request.max_tokens", i64::from(t));
        }
        if self.capture_content {
            let prompt: Vec<String> =
                request.messages.iter().map(|m| format!("{}: {}", m.role.as_str(), m.content)).collect();
            span.record("gen_ai.prompt", prompt.join("\n").as_str());
        }
        let started = std::time::Instant::now();
        let result = llm.complete(request, tokens).instrument(span.clone()).await;
        let m = crate::telemetry::metrics::get();
        m.operation_duration.record(started.elapsed().as_secs_f64(), std::slice::from_ref(&self.model_attr));
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error_type(&e));
                return Err(e);
            }
        };
        span.record("gen_ai.response.model", resp.model.as_str());
        span.record("gen_ai.usage.input_tokens", i64::try_from(resp.usage.input_tokens).unwrap_or(i64::MAX));
        span.record(
            "gen_ai.usage.output_tokens",
            i64::try_from(resp.usage.output_tokens).unwrap_or(i64::MAX),
        );
        span.record("meshops.tokens_estimated", resp.usage.estimated);
        if let Some(reason) = &resp.finish_reason {
            span.record("gen_ai.response.finish_reasons", reason.as_str());
        }
        if let Some(cost) = resp.cost_usd {
            span.record("meshops.cost_usd", cost);
            // The caller names itself on the request; its name is copied
            // into the attribute only here, where a price is known.
            let agent = KeyValue::new(attr::AGENT, request.agent.clone());
            m.cost.add(cost, &[agent, self.model_attr.clone()]);
        }
        if self.capture_content {
            span.record("gen_ai.completion", resp.text.as_str());
        }
        for (kind, n) in [("input", resp.usage.input_tokens), ("output", resp.usage.output_tokens)] {
            m.token_usage.record(n, &[self.model_attr.clone(), KeyValue::new(attr::GEN_AI_TOKEN_TYPE, kind)]);
        }
        Ok(resp)
    }
}

impl LlmClient for TracedClient {
    fn model(&self) -> &str {
        self.inner.model()
    }

    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(self.call(request, tokens))
    }
}

/// A metric attribute whose value is shared, so cloning it per call
/// allocates nothing.
fn shared_attr(key: &'static str, value: &str) -> KeyValue {
    KeyValue::new(key, opentelemetry::Value::String(Arc::<str>::from(value).into()))
}

/// A short, stable name for a failed model call, for `error.type` on spans
/// and the error metrics.
pub fn error_type(e: &LlmError) -> &'static str {
    match e {
        LlmError::Unavailable { .. } => "model_unavailable",
        LlmError::Timeout { .. } => "model_timeout",
        LlmError::Rejected { .. } => "model_rejected",
        LlmError::BadResponse { .. } => "model_bad_response",
        LlmError::Status { code: 429, .. } => "model_rate_limited",
        LlmError::Status { code, .. } if *code >= 500 => "model_server_error",
        LlmError::Status { .. } => "model_http_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::zero::ZeroModel;
    use crate::llm::{ModelParams, TaskHint};

    #[tokio::test]
    async fn passes_the_call_through_unchanged() {
        let inner: SharedLlm = Arc::new(ZeroModel::new("zero-work", 0));
        let traced = TracedClient::wrap(inner.clone(), &TelemetrySettings::default());
        assert_eq!((traced.model(), traced.provider()), (inner.model(), inner.provider()));
        let request = LlmRequest {
            agent: "critic".into(),
            messages: vec![],
            params: ModelParams::default(),
            hint: TaskHint::Critique { query: "q".into(), answer: "a".into(), passages: Vec::new().into() },
            response_schema: None,
            tools: Default::default(),
        };
        let want = inner.complete(&request, None).await.unwrap();
        assert_eq!(traced.complete(&request, None).await.unwrap(), want);
    }

    #[test]
    fn error_types_tell_rate_limits_from_server_errors() {
        let status = |code| LlmError::Status { model: "m".into(), code, message: String::new() };
        assert_eq!(error_type(&status(429)), "model_rate_limited");
        assert_eq!(error_type(&status(503)), "model_server_error");
        assert_eq!(error_type(&status(401)), "model_http_error");
    }
}
