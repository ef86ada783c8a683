//! OpenAI-compatible chat models on `async-openai`: OpenAI itself, Azure
//! OpenAI (endpoint, deployment, api-version) and any server that speaks the
//! same wire protocol at `base_url` (vLLM, Ollama, llama.cpp, LiteLLM).
//!
//! [`OpenAiClient`] makes exactly one HTTP call per [`Attempt`]; timeouts,
//! retries and fallback live in [`super::retry::RetryingClient`], which
//! [`super::build_client`] wraps around it. `async-openai`'s own transport
//! retries 429 and 5xx silently and drops the `Retry-After` header, so the
//! client is given a transport of ours (a tower service over reqwest) that
//! never retries and reports error statuses with their `Retry-After`.
//!
//! The API key is read from the environment variable named by the profile's
//! `api_key_env` (written as `NAME` or `${env:NAME}`) once, when the client
//! is built; it is never logged or put in an error.

use std::sync::Arc;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, ChatCompletionTool, ChatCompletionTools,
    CreateChatCompletionRequest, FinishReason, FunctionCall, FunctionObject, ResponseFormat,
    ResponseFormatJsonSchema, StopConfiguration,
};
use futures::StreamExt;
use futures::future::BoxFuture;

use super::retry::{Attempt, AttemptFailure};
use super::{LlmError, LlmRequest, LlmResponse, ModelParams, Role, TokenSink, TokenUsage, ToolCall};
/// How `api_key_env` names its variable is configuration (validation reads
/// it too); re-exported here, where the key is read.
pub use crate::config::api_key_var;
use crate::config::{ModelProfile, Provider};
use crate::text;

/// Where `provider = "openai"` goes when the profile names no `base_url`.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// An HTTP error status seen by our transport, carried through
/// `async-openai` as a boxed error so its `Retry-After` survives.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}: {body}")]
struct HttpStatusError {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

/// Longest error body kept in a message: enough for a provider's JSON error,
/// short enough that an HTML error page does not flood the logs.
const MAX_ERROR_BODY: usize = 500;

/// One OpenAI-compatible model profile, one HTTP call per attempt.
pub struct OpenAiClient {
    profile: String,
    provider: Provider,
    model: String,
    client: Client<Box<dyn Config>>,
    /// The profile's `parameters`, laid over the prompt's.
    params: ModelParams,
    input_price_per_mtok: Option<f64>,
    output_price_per_mtok: Option<f64>,
}

impl OpenAiClient {
    /// Builds the client, reading the API key from the environment. Fails
    /// with a message naming the profile when a setting or the key's
    /// variable is missing.
    pub fn new(profile_name: &str, profile: &ModelProfile) -> Result<Self, LlmError> {
        let client = endpoint(profile_name, profile)?;
        Ok(Self {
            profile: profile_name.to_string(),
            provider: profile.provider,
            model: profile.model.clone(),
            client,
            params: profile.parameters.clone(),
            input_price_per_mtok: profile.input_price_per_mtok,
            output_price_per_mtok: profile.output_price_per_mtok,
        })
    }

    /// The wire request: messages, and the prompt's parameters overlaid by
    /// the profile's.
    // `max_tokens` and `seed` are deprecated by OpenAI but are what
    // compatible servers and Azure's older API versions understand.
    #[allow(deprecated)]
    fn wire_request(&self, request: &LlmRequest, stream: bool) -> CreateChatCompletionRequest {
        let p = merge_params(&request.params, &self.params);
        let messages = request
            .messages
            .iter()
            .map(|m| match m.role {
                Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                    content: m.content.clone().into(),
                    name: None,
                }),
                Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                    content: m.content.clone().into(),
                    name: None,
                }),
                Role::Assistant => {
                    ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                        // A message that only calls tools has no content.
                        content: (!m.content.is_empty() || m.tool_calls.is_empty())
                            .then(|| m.content.clone().into()),
                        tool_calls: (!m.tool_calls.is_empty()).then(|| {
                            m.tool_calls
                                .iter()
                                .map(|c| {
                                    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                                        id: c.id.clone(),
                                        function: FunctionCall {
                                            name: c.name.clone(),
                                            arguments: c.arguments.clone(),
                                        },
                                    })
                                })
                                .collect()
                        }),
                        ..Default::default()
                    })
                }
                Role::Tool => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
                    content: m.content.clone().into(),
                    tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
                }),
            })
            .collect();
        let tools = (!request.tools.is_empty()).then(|| {
            request
                .tools
                .iter()
                .map(|t| {
                    ChatCompletionTools::Function(ChatCompletionTool {
                        function: FunctionObject {
                            name: t.name.clone(),
                            description: (!t.description.is_empty()).then(|| t.description.clone()),
                            parameters: Some(t.parameters.clone()),
                            strict: None,
                        },
                    })
                })
                .collect()
        });
        CreateChatCompletionRequest {
            model: self.model.clone(),
            messages,
            temperature: p.temperature.map(|t| t as f32),
            top_p: p.top_p.map(|t| t as f32),
            // `max_tokens`, not `max_completion_tokens`: compatible servers
            // (vLLM, Ollama, llama.cpp) and Azure's older API versions only
            // know the former.
            max_tokens: p.max_tokens,
            seed: p.seed,
            stop: match p.stop.len() {
                0 => None,
                1 => p.stop.first().cloned().map(StopConfiguration::String),
                _ => Some(StopConfiguration::StringArray(p.stop.clone())),
            },
            response_format: response_format(request, &p),
            tools,
            stream: stream.then_some(true),
            stream_options: stream.then_some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            }),
            ..Default::default()
        }
    }

    fn map_error(&self, err: OpenAIError) -> AttemptFailure {
        map_error(&self.profile, &self.model, err)
    }

    fn response(
        &self,
        text: String,
        model: String,
        usage: TokenUsage,
        finish: Option<FinishReason>,
        tool_calls: Vec<ToolCall>,
    ) -> LlmResponse {
        let cost_usd = LlmResponse::cost(&usage, self.input_price_per_mtok, self.output_price_per_mtok);
        LlmResponse {
            text,
            model: if model.is_empty() { self.model.clone() } else { model },
            usage,
            cost_usd,
            finish_reason: finish.map(finish_name),
            attempts: 1,
            failed_attempts: Vec::new(),
            tool_calls,
        }
    }

    async fn call(&self, request: &LlmRequest) -> Result<LlmResponse, AttemptFailure> {
        let resp = self
            .client
            .chat()
            .create(self.wire_request(request, false))
            .await
            .map_err(|e| self.map_error(e))?;
        let Some(choice) = resp.choices.into_iter().next() else {
            return Err(LlmError::BadResponse {
                model: self.model.clone(),
                message: format!("profile `{}`: the answer has no choices", self.profile),
            }
            .into());
        };
        let text = choice.message.content.unwrap_or_default();
        let tool_calls = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| match c {
                ChatCompletionMessageToolCalls::Function(f) => {
                    Some(ToolCall { id: f.id, name: f.function.name, arguments: f.function.arguments })
                }
                ChatCompletionMessageToolCalls::Custom(_) => None,
            })
            .collect();
        let usage = match resp.usage {
            Some(u) => TokenUsage {
                input_tokens: u64::from(u.prompt_tokens),
                output_tokens: u64::from(u.completion_tokens),
                estimated: false,
            },
            None => estimate(request, &text),
        };
        Ok(self.response(text, resp.model, usage, choice.finish_reason, tool_calls))
    }

    async fn stream(&self, request: &LlmRequest, sink: &TokenSink) -> Result<LlmResponse, AttemptFailure> {
        let mut stream = self
            .client
            .chat()
            .create_stream(self.wire_request(request, true))
            .await
            .map_err(|e| self.map_error(e))?;
        let mut text = String::new();
        let mut model = String::new();
        let mut usage = None;
        let mut finish = None;
        let mut streamed = false;
        // Tool calls arrive in pieces, by index: the id and name first,
        // the arguments' text in parts.
        let mut calls: Vec<ToolCall> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| AttemptFailure { streamed, ..self.map_error(e) })?;
            if model.is_empty() {
                model = chunk.model;
            }
            if let Some(u) = chunk.usage {
                usage = Some(TokenUsage {
                    input_tokens: u64::from(u.prompt_tokens),
                    output_tokens: u64::from(u.completion_tokens),
                    estimated: false,
                });
            }
            for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                if let Some(delta) = choice.delta.content.filter(|d| !d.is_empty()) {
                    text.push_str(&delta);
                    // A caller that stopped listening still gets the full
                    // text returned; only the live view is gone.
                    let _ = sink.send(delta);
                    streamed = true;
                }
                for piece in choice.delta.tool_calls.unwrap_or_default() {
                    let i = piece.index as usize;
                    if calls.len() <= i {
                        calls.resize_with(i + 1, || ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        });
                    }
                    let call = &mut calls[i];
                    if let Some(id) = piece.id {
                        call.id = id;
                    }
                    if let Some(f) = piece.function {
                        call.name.push_str(&f.name.unwrap_or_default());
                        call.arguments.push_str(&f.arguments.unwrap_or_default());
                    }
                }
                if choice.finish_reason.is_some() {
                    finish = choice.finish_reason;
                }
            }
        }
        // Servers that ignore `stream_options` send no usage: estimate it,
        // and say so.
        let usage = usage.unwrap_or_else(|| estimate(request, &text));
        calls.retain(|c| !c.name.is_empty());
        Ok(self.response(text, model, usage, finish, calls))
    }
}

impl Attempt for OpenAiClient {
    fn model(&self) -> &str {
        &self.model
    }

    fn provider(&self) -> &str {
        self.provider.as_str()
    }

    fn attempt<'a>(
        &'a self,
        request: &'a LlmRequest,
        tokens: Option<&'a TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, AttemptFailure>> {
        Box::pin(async move {
            match tokens {
                Some(sink) => self.stream(request, sink).await,
                None => self.call(request).await,
            }
        })
    }
}

/// The `async-openai` client for a profile: OpenAI, Azure OpenAI or a
/// compatible server, with the API key read from the environment and our
/// non-retrying transport. Chat completions and embeddings both use it.
/// Fails with a message naming the profile when a setting or the key's
/// variable is missing.
pub(crate) fn endpoint(
    profile_name: &str,
    profile: &ModelProfile,
) -> Result<Client<Box<dyn Config>>, LlmError> {
    let fail = |message: String| LlmError::Unavailable {
        model: profile.model.clone(),
        message: format!("profile `{profile_name}`: {message}"),
    };
    let resolve = |field: &str, value: &Option<String>| -> Result<Option<String>, LlmError> {
        match value {
            None => Ok(None),
            Some(v) => crate::config::resolve_env_refs(v)
                .map(|s| Some(s.trim().trim_end_matches('/').to_string()))
                .map_err(|e| fail(format!("`{field}`: {e}"))),
        }
    };
    let base_url = resolve("base_url", &profile.base_url)?;
    let api_version = resolve("api_version", &profile.api_version)?;
    let api_key = match &profile.api_key_env {
        None => String::new(),
        Some(name) => {
            let var = api_key_var(name);
            match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => key.trim().to_string(),
                _ => {
                    return Err(fail(format!(
                        "environment variable `{var}` (named by `api_key_env`) is not set"
                    )));
                }
            }
        }
    };
    // async-openai turns the key into a header with a panicking parse;
    // a key that is not a valid header value is refused here instead.
    if !api_key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail("the API key holds characters that cannot go in an HTTP header".into()));
    }
    let config: Box<dyn Config> = match profile.provider {
        Provider::Azure => {
            let (Some(endpoint), Some(version)) = (base_url, api_version) else {
                return Err(fail("azure needs `base_url` (the endpoint) and `api_version`".into()));
            };
            Box::new(
                AzureConfig::new()
                    .with_api_base(endpoint)
                    .with_deployment_id(profile.model.clone())
                    .with_api_version(version)
                    .with_api_key(api_key),
            )
        }
        Provider::Openai | Provider::OpenaiCompatible => {
            let base = match (base_url, profile.provider) {
                (Some(b), _) => b,
                (None, Provider::Openai) => OPENAI_BASE_URL.to_string(),
                (None, _) => return Err(fail("openai_compatible needs `base_url`".into())),
            };
            // The key is always set explicitly (empty for keyless local
            // servers): the default would read OPENAI_API_KEY and send
            // it to whatever server `base_url` names.
            Box::new(OpenAIConfig::new().with_api_base(base).with_api_key(api_key))
        }
        Provider::Offline | Provider::Zero => {
            return Err(fail(format!("the {} provider has no HTTP client", profile.provider.as_str())));
        }
    };
    // reqwest is built without a bundled crypto provider; ring is
    // already in the tree (tonic's TLS). Installing fails only when a
    // provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let timeout =
        Duration::from_millis(profile.timeout_ms.unwrap_or(super::retry::DEFAULT_TIMEOUT_MS).max(1));
    let http = reqwest::Client::builder()
        .connect_timeout(timeout)
        // A model endpoint that redirects is misconfigured (or hostile):
        // following it would send the API key and the prompt elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
    Ok(Client::with_config(config).with_http_service(transport(http)))
}

/// One failed call as the retry loop sees it: HTTP statuses (with
/// `Retry-After`), connection errors, malformed answers; every message names
/// the profile.
pub(crate) fn map_error(profile: &str, model: &str, err: OpenAIError) -> AttemptFailure {
    let model = model.to_string();
    match err {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatusError>() {
            // OpenAI answers an exhausted quota with 429 too, but waiting
            // does not refill it: a permanent failure, not a rate limit.
            Ok(status) if status.status == 429 && status.body.contains("insufficient_quota") => {
                LlmError::Rejected {
                    model,
                    message: format!("profile `{profile}`: quota exhausted (HTTP 429): {}", status.body),
                }
                .into()
            }
            Ok(status) => AttemptFailure {
                error: LlmError::Status {
                    model,
                    code: status.status,
                    message: format!("profile `{profile}`: {}", status.body),
                },
                retry_after: status.retry_after,
                streamed: false,
            },
            Err(other) => {
                LlmError::Unavailable { model, message: format!("profile `{profile}`: {other}") }.into()
            }
        },
        OpenAIError::ApiError(api) => LlmError::Status {
            model,
            code: api.status_code.as_u16(),
            message: format!("profile `{profile}`: {}", api.api_error),
        }
        .into(),
        OpenAIError::Reqwest(e) => {
            LlmError::Unavailable { model, message: format!("profile `{profile}`: {}", describe_reqwest(&e)) }
                .into()
        }
        OpenAIError::JSONDeserialize(e, content) => LlmError::BadResponse {
            model,
            message: format!(
                "profile `{profile}`: malformed JSON from the server ({e}): {}",
                truncate(&content, MAX_ERROR_BODY)
            ),
        }
        .into(),
        OpenAIError::StreamError(e) => {
            LlmError::Unavailable { model, message: format!("profile `{profile}`: stream broke off: {e}") }
                .into()
        }
        OpenAIError::InvalidArgument(m) => {
            LlmError::Rejected { model, message: format!("profile `{profile}`: {m}") }.into()
        }
        other => LlmError::BadResponse { model, message: format!("profile `{profile}`: {other}") }.into(),
    }
}

/// The wire `response_format`: the request's schema as `json_schema` when
/// it has one (the agent needs that shape whatever the parameters say),
/// else the parameters' `json_object` or `text`.
fn response_format(request: &LlmRequest, params: &ModelParams) -> Option<ResponseFormat> {
    if let Some(s) = &request.response_schema {
        return Some(ResponseFormat::JsonSchema {
            json_schema: ResponseFormatJsonSchema {
                description: None,
                name: s.name.clone(),
                schema: s.schema.clone(),
                strict: Some(s.strict),
            },
        });
    }
    match params.response_format.as_deref() {
        Some("json_object") => Some(ResponseFormat::JsonObject),
        Some("text") => Some(ResponseFormat::Text),
        _ => None,
    }
}

/// The prompt's parameters with the profile's laid over them: a parameter
/// set in the profile wins (operators tune models per deployment).
pub fn merge_params(prompt: &ModelParams, profile: &ModelParams) -> ModelParams {
    ModelParams {
        temperature: profile.temperature.or(prompt.temperature),
        max_tokens: profile.max_tokens.or(prompt.max_tokens),
        top_p: profile.top_p.or(prompt.top_p),
        seed: profile.seed.or(prompt.seed),
        stop: if profile.stop.is_empty() { prompt.stop.clone() } else { profile.stop.clone() },
        response_format: profile.response_format.clone().or_else(|| prompt.response_format.clone()),
    }
}

/// Token counts estimated from the text, for servers that report none.
fn estimate(request: &LlmRequest, answer: &str) -> TokenUsage {
    TokenUsage {
        input_tokens: request.messages.iter().map(|m| text::estimate_tokens(&m.content)).sum(),
        output_tokens: text::estimate_tokens(answer),
        estimated: true,
    }
}

fn finish_name(reason: FinishReason) -> String {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::FunctionCall => "function_call",
    }
    .to_string()
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the answer"
    } else {
        "HTTP request failed"
    };
    // reqwest's Display hides the cause (refused, reset, DNS…); it is what
    // an operator needs.
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    message
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// `Retry-After` in seconds; the HTTP-date form is not honoured (OpenAI and
/// Azure send seconds), and backoff applies instead.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    // A server may say anything; a wait past an hour is cut to one (and a
    // huge number must not overflow a Duration).
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER_S)))
}

/// Longest `Retry-After` honoured, in seconds.
const MAX_RETRY_AFTER_S: f64 = 3600.0;

type Transport = tower::util::BoxCloneSyncService<HttpRequestFactory, reqwest::Response, OpenAIError>;

/// The HTTP transport handed to `async-openai`: one request, no retry, and
/// error statuses turned into [`HttpStatusError`] with their `Retry-After`.
fn transport(http: reqwest::Client) -> Transport {
    let http = Arc::new(http);
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |factory: HttpRequestFactory| {
        let http = http.clone();
        async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = retry_after(response.headers());
            let body = match response.text().await {
                Ok(body) => truncate(body.trim(), MAX_ERROR_BODY),
                Err(e) => format!("(body unreadable: {e})"),
            };
            let body =
                if body.is_empty() { status.canonical_reason().unwrap_or("").to_string() } else { body };
            Err(OpenAIError::Boxed(Box::new(HttpStatusError { status: status.as_u16(), retry_after, body })))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_var_accepts_both_forms() {
        assert_eq!(api_key_var("OPENAI_API_KEY"), "OPENAI_API_KEY");
        assert_eq!(api_key_var("${env:OPENAI_API_KEY}"), "OPENAI_API_KEY");
    }

    #[test]
    fn profile_parameters_override_the_prompts() {
        let prompt = ModelParams {
            temperature: Some(0.2),
            max_tokens: Some(400),
            stop: vec!["\n\n".into()],
            ..Default::default()
        };
        let profile = ModelParams { temperature: Some(0.0), seed: Some(7), ..Default::default() };
        let m = merge_params(&prompt, &profile);
        assert_eq!(m.temperature, Some(0.0));
        assert_eq!(m.max_tokens, Some(400));
        assert_eq!(m.seed, Some(7));
        assert_eq!(m.stop, vec!["\n\n".to_string()]);
    }

    #[test]
    fn a_response_schema_goes_on_the_wire_as_json_schema() {
        let schema = serde_json::json!({"type": "object", "properties": {"t": {"type": "string"}}});
        let mut request = super::super::LlmRequest {
            agent: "headline".into(),
            messages: vec![],
            params: ModelParams { response_format: Some("json_object".into()), ..Default::default() },
            hint: super::super::TaskHint::Freeform,
            response_schema: Some(Arc::new(super::super::ResponseSchema::new(
                "head line",
                schema.clone(),
                true,
            ))),
            tools: Default::default(),
        };
        let wire = serde_json::to_value(response_format(&request, &request.params)).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"type": "json_schema", "json_schema": {"name": "head_line", "schema": schema, "strict": true}})
        );
        request.response_schema = None;
        let wire = serde_json::to_value(response_format(&request, &request.params)).unwrap();
        assert_eq!(wire, serde_json::json!({"type": "json_object"}));
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("1e300"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3600)), "a huge wait is cut, not a panic");
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
