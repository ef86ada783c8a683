//! Inputs of kind `thread` (Prompty v2 spec §5.2, §6.7): a conversation
//! placed in the template (`{{conversation}}`) becomes messages of their
//! own roles at that spot.
//!
//! Before rendering, each thread input's value (a list of `{role,
//! content}` turns) is swapped for a nonce, a string no input can guess;
//! after the body is rendered and cut into messages, the message holding a
//! nonce is split around it and the turns are put in its place. The turns
//! never pass through the template or the marker splitter, so their text
//! cannot open messages of its own.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use minijinja::value::{Value, ValueKind};

use super::messages;
use crate::llm::ChatMessage;

/// The input kind this module expands.
pub(crate) const KIND: &str = "thread";

/// Every nonce starts so (the spec's form), for anyone reading a rendered
/// prompt.
const PREFIX: &str = "__PROMPTY_THREAD_";

/// One thread input of one render: its nonce and its turns.
pub(crate) struct Thread {
    /// What the template rendered in the thread's place.
    nonce: String,
    /// The turns that replace it.
    turns: Vec<ChatMessage>,
}

/// Swaps each thread input in `inputs` (a map) that holds a list of turns
/// for a fresh nonce. Inputs that are absent or not a list of turns are
/// left as they are (they render as text).
pub(crate) fn substitute(names: &[String], inputs: Value) -> (Value, Vec<Thread>) {
    let mut threads = Vec::new();
    let mut nonces = BTreeMap::new();
    for name in names {
        let Some(turns) = inputs.get_attr(name).ok().as_ref().and_then(turns) else {
            continue;
        };
        let nonce = format!("{PREFIX}{:016x}_{name}__", random());
        nonces.insert(name.clone(), Value::from(nonce.clone()));
        threads.push(Thread { nonce, turns });
    }
    if nonces.is_empty() {
        return (inputs, threads);
    }
    (minijinja::value::merge_maps([inputs, Value::from(nonces)]), threads)
}

/// Puts each thread's turns where its nonce was rendered: the message
/// holding it is split into the text before (same role), the turns, and
/// the text after (same role); blank pieces are dropped.
pub(crate) fn expand(messages: Vec<ChatMessage>, threads: &[Thread]) -> Vec<ChatMessage> {
    if threads.is_empty() {
        return messages;
    }
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        expand_one(message, threads, &mut out);
    }
    out
}

fn expand_one(message: ChatMessage, threads: &[Thread], out: &mut Vec<ChatMessage>) {
    let first = threads
        .iter()
        .filter_map(|t| message.content.find(&t.nonce).map(|at| (at, t)))
        .min_by_key(|(at, _)| *at);
    let Some((at, thread)) = first else {
        out.push(message);
        return;
    };
    let before = message.content[..at].trim();
    if !before.is_empty() {
        out.push(ChatMessage::new(message.role, before.to_string()));
    }
    out.extend(thread.turns.iter().cloned());
    let after = message.content[at + thread.nonce.len()..].trim();
    if !after.is_empty() {
        let rest = ChatMessage::new(message.role, after.to_string());
        expand_one(rest, threads, out);
    }
}

/// A list of `{role, content}` turns as messages; `None` when `value` is
/// not a list. Content may be text or a list of parts (`{kind: text,
/// value}` as Prompty writes them, `{type: text, text}` as OpenAI does);
/// turns with an unknown role or no text are left out.
fn turns(value: &Value) -> Option<Vec<ChatMessage>> {
    if value.kind() != ValueKind::Seq {
        return None;
    }
    let mut out = Vec::new();
    for turn in value.try_iter().ok()? {
        let role = turn.get_attr("role").ok();
        let Some(role) = role.as_ref().and_then(Value::as_str).and_then(messages::role_named) else {
            continue;
        };
        let content = turn.get_attr("content").unwrap_or_default();
        let text = match content.kind() {
            ValueKind::Seq => content
                .try_iter()
                .map(|parts| parts.filter_map(|part| part_text(&part)).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default(),
            ValueKind::Undefined | ValueKind::None => String::new(),
            _ => content.as_str().map_or_else(|| content.to_string(), str::to_string),
        };
        let text = text.trim();
        if !text.is_empty() {
            out.push(ChatMessage::new(role, text.to_string()));
        }
    }
    Some(out)
}

/// The text of one content part.
fn part_text(part: &Value) -> Option<String> {
    if let Some(text) = part.as_str() {
        return Some(text.to_string());
    }
    ["text", "value"].iter().find_map(|key| part.get_attr(key).ok()?.as_str().map(str::to_string))
}

/// A fresh random number per call: the standard library's per-instance
/// random hash keys, over a counter.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}
