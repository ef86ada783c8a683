//! The OpenAI chat-completions wire format, as far as meshops serves it:
//! the request it reads, and the JSON of models, completions, stream
//! chunks and errors it writes. Unknown request fields (`temperature`,
//! `max_tokens`, …) are accepted and ignored: the mesh's agents have their
//! own model settings.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::proto;

/// `POST /v1/chat/completions`'s body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// OpenAI's end-user id: the request's `user` attribute (not a
    /// conversation: see `chat`).
    #[serde(default)]
    pub user: Option<String>,
    /// Request attributes, carried through the mesh like `AskRequest`'s.
    #[serde(default)]
    pub metadata: Option<std::collections::HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: a string, or a list of parts of which the text
/// parts are read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    /// The text of the content; `None` when a part is not text (an image,
    /// audio: the mesh answers text questions).
    pub fn text(&self) -> Option<String> {
        match self {
            Content::Text(t) => Some(t.clone()),
            Content::Parts(parts) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        _ => return None,
                    }
                }
                Some(text)
            }
        }
    }
}

/// The model id of the base mesh; a variant's is `meshops:<variant>`.
pub const BASE_MODEL: &str = "meshops";

/// `GET /v1/models`: the base mesh and each variant.
pub fn models(variants: &[String], created: u64) -> Value {
    let model = |id: String| json!({"id": id, "object": "model", "created": created, "owned_by": "meshops"});
    let data: Vec<Value> = std::iter::once(model(BASE_MODEL.to_string()))
        .chain(variants.iter().map(|v| model(format!("{BASE_MODEL}:{v}"))))
        .collect();
    json!({"object": "list", "data": data})
}

/// The meshops extension of a completion (`meshops`): where the answer
/// came from (citations), how (steps, intent, verdict) and its trace.
pub fn extension(a: &proto::AskResponse) -> Value {
    let steps: Vec<Value> = a
        .steps
        .iter()
        .map(|s| {
            json!({
                "agent": s.agent, "kind": s.kind, "model": s.model, "attempt": s.attempt,
                "latency_ms": s.latency_ms, "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
                "tokens_estimated": s.tokens_estimated, "cost_usd": s.cost_usd, "summary": s.summary,
            })
        })
        .collect();
    json!({
        "trace_id": a.trace_id, "intent": a.intent, "variant": a.variant,
        "citations": citations(a), "steps": steps, "verdict": verdict(a),
        "cost_usd": a.usage.as_ref().and_then(|u| u.cost_usd),
    })
}

/// An answer's citations as JSON (the HTTP API's extension, MCP's
/// structured content).
pub fn citations(a: &proto::AskResponse) -> Vec<Value> {
    a.citations
        .iter()
        .map(|c| json!({"doc_id": c.doc_id, "chunk_id": c.chunk_id, "text": c.text, "score": c.score}))
        .collect()
}

/// An answer's verdict as JSON; `null` when no judge ran.
pub fn verdict(a: &proto::AskResponse) -> Value {
    a.verdict
        .as_ref()
        .map(|v| json!({"accepted": v.accepted, "scores": v.scores, "feedback": v.feedback}))
        .unwrap_or(Value::Null)
}

/// OpenAI's `usage` of an answer: the mesh's token totals.
pub fn usage(a: &proto::AskResponse) -> Value {
    let (input, output) = a.usage.as_ref().map(|u| (u.input_tokens, u.output_tokens)).unwrap_or((0, 0));
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// The completion id of an answer: its trace id, so a client can find the
/// request's trace.
pub fn completion_id(a: &proto::AskResponse) -> String {
    format!("chatcmpl-{}", a.trace_id)
}

/// A whole (non-streamed) completion.
pub fn completion(a: &proto::AskResponse, model: &str, created: u64) -> Value {
    json!({
        "id": completion_id(a),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": a.answer, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage(a),
        "meshops": extension(a),
    })
}

/// One `chat.completion.chunk` of a stream.
pub fn chunk(id: &str, model: &str, created: u64, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

/// OpenAI's error JSON.
pub fn error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}
