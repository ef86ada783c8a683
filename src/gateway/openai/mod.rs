//! The OpenAI-compatible HTTP API, served beside gRPC when
//! `gateway.http_listen` is set: `GET /v1/models` and `POST
//! /v1/chat/completions` (whole or streamed as server-sent events).
//!
//! It is a front door onto the same [`GatewayService`]: each HTTP request
//! becomes the `Ask`/`AskStream` call a gRPC client would make, with the
//! HTTP headers as its metadata, so API keys (`Authorization: Bearer`),
//! rate limits, admission, deadlines, telemetry and variants are the
//! gateway's own. Statuses become OpenAI's error JSON with the matching
//! HTTP status.
//!
//! A stream carries the final answer, checked: the critic may revise or
//! replace a draft and `[n]` markers are renumbered at the end, so the
//! answer's text is sent (in word-sized chunks) once the flow is done.
//! While it runs, each step's start is sent as an SSE comment (`: step
//! retriever`), which keeps the connection visibly alive.

pub mod wire;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tonic::{Code, Status};

use super::GatewayService;
use super::arrival::front_door_request;
use crate::proto::gateway_server::Gateway as _;
use crate::proto::{self, ask_event::Event as AskEvent};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpApi {
    gateway: GatewayService,
    /// The variants a `model` may name (`meshops:<variant>`).
    variants: Arc<Vec<String>>,
    /// When the gateway started: the models' `created`.
    started: u64,
}

impl HttpApi {
    pub fn new(gateway: GatewayService, variants: Vec<String>) -> HttpApi {
        HttpApi { gateway, variants: Arc::new(variants), started: now() }
    }

    /// The routes, with request bodies bounded by `max_body_bytes`.
    pub fn router(self, max_body_bytes: usize) -> Router {
        Router::new()
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .fallback(unknown_route)
            .layer(DefaultBodyLimit::max(max_body_bytes))
            .with_state(self)
    }

    /// The variant a `model` names: `meshops` is the base mesh (`""`),
    /// `meshops:<v>` a configured variant; anything else is unknown.
    fn variant_of(&self, model: &str) -> Option<String> {
        match model.strip_prefix(wire::BASE_MODEL) {
            Some("") => Some(String::new()),
            Some(rest) => {
                let v = rest.strip_prefix(':')?;
                self.variants.iter().any(|known| known == v).then(|| v.to_string())
            }
            None => None,
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn models(State(api): State<HttpApi>, headers: HeaderMap) -> Response {
    // The same authentication as every RPC: DescribeMesh checks the key.
    match api.gateway.describe_mesh(front_door_request(headers.clone(), proto::DescribeMeshRequest {})).await
    {
        Ok(_) => json_response(StatusCode::OK, &wire::models(&api.variants, api.started)),
        Err(status) => status_response(&status),
    }
}

async fn chat(State(api): State<HttpApi>, headers: HeaderMap, body: Bytes) -> Response {
    let request: wire::ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return invalid(&format!("the request body is not a chat completion request: {e}")),
    };
    let Some(variant) = api.variant_of(&request.model) else {
        let known: Vec<String> = std::iter::once(wire::BASE_MODEL.to_string())
            .chain(api.variants.iter().map(|v| format!("{}:{v}", wire::BASE_MODEL)))
            .collect();
        let message = format!("The model `{}` does not exist; known: {}", request.model, known.join(", "));
        return error_response(
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            Some("model_not_found"),
        );
    };
    // The last message is the question; earlier ones are not sent to the
    // mesh (it keeps no conversation yet).
    let query = match request.messages.last() {
        Some(m) if m.role == "user" => match m.content.as_ref().map(wire::Content::text) {
            Some(Some(text)) => text,
            Some(None) => return invalid("only text content is supported"),
            None => String::new(),
        },
        Some(m) => {
            return invalid(&format!("the last message must be the user's question, not `{}`", m.role));
        }
        None => return invalid("`messages` is empty: the last message must be the user's question"),
    };
    // OpenAI's `user` names the end user, not a conversation: as a
    // `session_id` it would join every chat of that user into one mesh
    // conversation, with history the client never sent. It is kept as the
    // request's `user` attribute instead.
    let mut metadata = request.metadata.clone().unwrap_or_default();
    if let Some(user) = &request.user {
        metadata.entry("user".to_string()).or_insert_with(|| user.clone());
    }
    let ask = proto::AskRequest { query, session_id: String::new(), variant, metadata };
    let created = now();
    if !request.stream {
        return match api.gateway.ask(front_door_request(headers.clone(), ask)).await {
            Ok(answer) => {
                json_response(StatusCode::OK, &wire::completion(answer.get_ref(), &request.model, created))
            }
            Err(status) => status_response(&status),
        };
    }
    let events = match api.gateway.ask_stream(front_door_request(headers.clone(), ask)).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => return status_response(&status),
    };
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let model = request.model;
    // Each gRPC event becomes zero or more SSE events; the stream ends
    // after the final answer (or an error) with `[DONE]`.
    let sse = events
        .map(move |event| sse_events(event, &model, created, include_usage))
        .flat_map(futures::stream::iter)
        .map(Ok::<Event, std::convert::Infallible>);
    let opening = futures::stream::iter([Ok(Event::default().comment("meshops: answering"))]);
    Sse::new(opening.chain(sse)).into_response()
}

/// The SSE events of one `AskStream` event: a comment for a step's start,
/// the answer's chunks, its usage and `[DONE]` for the final answer, an
/// error object and `[DONE]` for a failure.
fn sse_events(
    event: Result<proto::AskEvent, Status>,
    model: &str,
    created: u64,
    include_usage: bool,
) -> Vec<Event> {
    let data = |v: &Value| Event::default().data(v.to_string());
    match event.map(|e| e.event) {
        Ok(Some(AskEvent::StepStarted(s))) => vec![Event::default().comment(format!("step {}", s.agent))],
        Ok(Some(AskEvent::Final(a))) => {
            let id = wire::completion_id(&a);
            let mut out = vec![data(&wire::chunk(
                &id,
                model,
                created,
                json!({"role": "assistant", "content": ""}),
                None,
            ))];
            for piece in a.answer.split_inclusive(' ') {
                out.push(data(&wire::chunk(&id, model, created, json!({"content": piece}), None)));
            }
            let mut last = wire::chunk(&id, model, created, json!({}), Some("stop"));
            last["meshops"] = wire::extension(&a);
            out.push(data(&last));
            if include_usage {
                let mut usage = json!({
                    "id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                });
                usage["usage"] = wire::usage(&a);
                out.push(data(&usage));
            }
            out.push(Event::default().data("[DONE]"));
            out
        }
        // Tokens of drafts and step results are the gRPC stream's detail.
        Ok(_) => Vec::new(),
        Err(status) => {
            let (_, kind, code) = http_status(status.code());
            vec![data(&wire::error(status.message(), kind, code)), Event::default().data("[DONE]")]
        }
    }
}

async fn unknown_route() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "Unknown route: meshops serves GET /v1/models and POST /v1/chat/completions",
        "invalid_request_error",
        Some("unknown_url"),
    )
}

fn invalid(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, message, "invalid_request_error", None)
}

/// A gRPC status as OpenAI's error JSON with the matching HTTP status;
/// `retry-after` metadata (rate limits) becomes the `Retry-After` header.
fn status_response(status: &Status) -> Response {
    let (http, kind, code) = http_status(status.code());
    let mut response = error_response(http, status.message(), kind, code);
    let retry = status.metadata().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let retry = retry.or_else(|| {
        matches!(status.code(), Code::ResourceExhausted | Code::Unavailable).then(|| "1".to_string())
    });
    if let Some(value) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The HTTP status, OpenAI error type and code of a gRPC code.
fn http_status(code: Code) -> (StatusCode, &'static str, Option<&'static str>) {
    match code {
        Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "authentication_error", Some("invalid_api_key")),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_error", None),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found_error", None),
        Code::ResourceExhausted => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"))
        }
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error", None),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", None),
        // A model's reply that fails its agent's schema: the upstream's fault.
        Code::FailedPrecondition => (StatusCode::BAD_GATEWAY, "upstream_error", None),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
    }
}

fn error_response(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    json_response(status, &wire::error(message, kind, code))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_openai_statuses() {
        assert_eq!(http_status(Code::InvalidArgument).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::Unauthenticated),
            (StatusCode::UNAUTHORIZED, "authentication_error", Some("invalid_api_key"))
        );
        assert_eq!(http_status(Code::ResourceExhausted).0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(http_status(Code::Unavailable).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::Internal).0, StatusCode::INTERNAL_SERVER_ERROR);
        let mut status = Status::resource_exhausted("slow down");
        status.metadata_mut().insert("retry-after", tonic::metadata::MetadataValue::from_static("7"));
        let response = status_response(&status);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn text_parts_are_read_and_other_parts_refused() {
        let c: wire::Content =
            serde_json::from_value(json!([{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]))
                .unwrap();
        assert_eq!(c.text().as_deref(), Some("a b"));
        let c: wire::Content =
            serde_json::from_value(json!([{"type": "image_url", "image_url": {"url": "x"}}])).unwrap();
        assert_eq!(c.text(), None);
    }
}
