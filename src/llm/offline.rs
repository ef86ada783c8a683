//! The offline engine: a deterministic stand-in for a chat model that needs
//! no network and no weights, and says so (its model name is
//! `offline-extractive`, its cost is 0, its token counts are estimates).
//!
//! It cannot read free text like a model, so it works from the request's
//! [`TaskHint`]:
//! - **Route**: the intent whose description or examples are most similar
//!   to the query (cosine of offline embeddings), or the default intent when
//!   nothing is similar enough.
//! - **Answer**: an extractive answer: the passage sentences that best
//!   overlap the query's content words (and the critic's feedback), each
//!   with its `[n]` marker.
//! - **Judge**: the heuristics of [`super::judge_heuristic`], for the
//!   evaluation harness's LLM judges.
//! - **Generate** (an `llm` agent): extractive over its inputs. For text,
//!   the first sentence of the latest earlier text output (a headline of
//!   the draft, its `[n]` markers kept), else an extractive answer from the
//!   passages like **Answer**'s, else the query plainly marked as not
//!   answered. For JSON, a value built from the request's schema: each
//!   field its `const`, first `enum` value, `default` or first example
//!   when the schema gives one, else a placeholder of its type (strings
//!   take the text above, numbers their minimum or 0, booleans `false`,
//!   lists their fewest items); with no schema, `{"text": <the text>}`.
//!   Nothing is made up: a schema it cannot fill (a `pattern`, a `$ref`)
//!   gets a value that fails validation, which the agent reports.
//! - **Critique**: groundedness (how much of each answer sentence the
//!   passages support) and coverage (how many of the query's content words
//!   the answer covers), with feedback naming what is missing.
//!
//! `latency_ms` and `failure_rate` let load and fault tests use it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use super::{
    IntentChoice, LlmClient, LlmError, LlmRequest, LlmResponse, Passage, ResponseSchema, TaskHint, TokenSink,
    TokenUsage,
};
use crate::text;

/// The model name the engine reports.
pub const OFFLINE_MODEL: &str = "offline-extractive";

/// Dimension of the hashed vectors ([`text::hashed_vector`]) the router
/// compares.
const ROUTER_DIMENSION: usize = 384;

/// The offline engine. Cheap to share; safe to call concurrently.
pub struct OfflineEngine {
    model: String,
    latency: Duration,
    failure_rate: f64,
    /// Counts calls, so injected failures are deterministic for a given
    /// order of calls.
    calls: AtomicU64,
    /// Calls running now, and the most ever at once: proof (for tests and
    /// benchmarks) that callers are not serialized.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    /// TEST ONLY fault hook (`panic_on_query`): panic on a query holding
    /// this text, so supervision can be tested end to end.
    panic_on_query: Option<String>,
    /// Embeddings of intent descriptions and examples: the same few texts
    /// on every request, so they are embedded once. Bounded by
    /// [`EXAMPLE_CACHE_LIMIT`].
    example_vectors: RwLock<HashMap<String, Arc<Vec<f32>>>>,
    /// Passage readings by text, bounded by [`READING_CACHE_LIMIT`].
    readings: RwLock<HashMap<String, Arc<PassageReading>>>,
}

/// Most cached intent texts; past it the cache starts over (only a caller
/// sending ever-new intents would get there).
const EXAMPLE_CACHE_LIMIT: usize = 4096;

impl OfflineEngine {
    pub fn new(model: impl Into<String>, latency_ms: u64, failure_rate: f64) -> Self {
        Self {
            model: model.into(),
            latency: Duration::from_millis(latency_ms),
            failure_rate: failure_rate.clamp(0.0, 1.0),
            calls: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            panic_on_query: None,
            example_vectors: RwLock::new(HashMap::new()),
            readings: RwLock::new(HashMap::new()),
        }
    }

    /// Sets the test-only fault hook: calls for a query containing `text`
    /// panic (after the configured latency).
    pub fn with_panic_on_query(mut self, text: Option<String>) -> Self {
        self.panic_on_query = text.filter(|t| !t.is_empty());
        self
    }

    /// The most calls that were ever running at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::Relaxed)
    }

    /// How many calls are running now (a call whose caller stopped waiting
    /// for it is no longer running).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// How many calls have started.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Whether call number `n` is one of the injected failures: a splitmix64
    /// draw compared with `failure_rate`.
    fn fails(&self, n: u64) -> bool {
        if self.failure_rate <= 0.0 {
            return false;
        }
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.failure_rate
    }

    fn example_vector(&self, text: &str) -> Arc<Vec<f32>> {
        if let Ok(cache) = self.example_vectors.read() {
            if let Some(v) = cache.get(text) {
                return v.clone();
            }
        }
        let v = Arc::new(text::hashed_vector(text, ROUTER_DIMENSION));
        // A poisoned lock only loses the cache; the vector is still right.
        if let Ok(mut cache) = self.example_vectors.write() {
            if cache.len() >= EXAMPLE_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(text.to_string(), v.clone());
        }
        v
    }

    /// The most similar intent among those whose own threshold is met;
    /// the default intent when none is.
    fn route(&self, query: &str, intents: &[IntentChoice], default_intent: &str) -> String {
        let q = text::hashed_vector(query, ROUTER_DIMENSION);
        let mut best: Option<(&str, f64)> = None;
        let mut closest = f64::MIN;
        for intent in intents {
            let score = std::iter::once(intent.description.as_str())
                .chain(intent.examples.iter().map(String::as_str))
                .map(|t| cosine(&q, &self.example_vector(t)))
                .fold(f64::MIN, f64::max);
            closest = closest.max(score);
            if score >= intent.min_similarity && best.is_none_or(|(_, s)| score > s) {
                best = Some((intent.name.as_str(), score));
            }
        }
        match best {
            Some((name, score)) => json!({"intent": name, "score": round3(score)}).to_string(),
            None => json!({"intent": default_intent, "score": round3(closest.max(0.0)), "fallback": true})
                .to_string(),
        }
    }
}

/// Decrements the in-flight count when a call ends, including when its
/// future is dropped (a cancelled request).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

/// Sentences of a passage worth quoting: not headings, not the heading
/// trail a chunk starts with, not code fences or fragments.
fn quotable_sentences(passage: &str) -> Vec<String> {
    // A chunk's first line is its heading trail ("Gateway > Limits"), not a
    // sentence: drop it before wrapped lines are joined.
    let body = match passage.split_once('\n') {
        Some((first, rest)) if !first.trim_end().ends_with(['.', '!', '?', ':']) => rest,
        _ => passage,
    };
    let unwrapped = text::unwrap_paragraphs(body);
    let mut out = Vec::new();
    let mut in_code = false;
    for line in unwrapped.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || t.starts_with('#') || t.starts_with('|') {
            continue;
        }
        let t = t.trim_start_matches(['-', '*', ' ']);
        for s in text::sentences(t) {
            // A sentence that ends in a colon introduces a list; alone it
            // says nothing.
            if s.split_whitespace().count() >= 4 && !s.ends_with(':') {
                out.push(s);
            }
        }
    }
    out
}

/// Appends ` [n]` before a sentence's final punctuation.
fn cite(sentence: &str, n: usize) -> String {
    let trimmed = sentence.trim_end();
    match trimmed.chars().last() {
        Some(p @ ('.' | '!' | '?')) => format!("{} [{n}]{p}", &trimmed[..trimmed.len() - p.len_utf8()]),
        _ => format!("{trimmed} [{n}]."),
    }
}

fn term_set(text: &str) -> BTreeSet<String> {
    text::content_terms(text).into_iter().collect()
}

/// What the engine reads of a passage: its content terms, and its
/// quotable sentences with theirs. It depends on the text alone, so the
/// engine keeps it by text ([`OfflineEngine::reading`]): a knowledge base's
/// passages come back request after request.
#[derive(Debug)]
pub struct PassageReading {
    terms: BTreeSet<String>,
    sentences: Vec<(String, BTreeSet<String>)>,
}

impl PassageReading {
    fn of(text: &str) -> Self {
        let sentences = quotable_sentences(text)
            .into_iter()
            .map(|s| {
                let terms = term_set(&s);
                (s, terms)
            })
            .collect();
        PassageReading { terms: term_set(text), sentences }
    }
}

/// How a passage's [`PassageReading`] is had: kept by the engine, or read
/// afresh.
type Reader<'r> = &'r (dyn Fn(&str) -> Arc<PassageReading> + Sync);

/// Reads a passage afresh, keeping nothing.
fn fresh(text: &str) -> Arc<PassageReading> {
    Arc::new(PassageReading::of(text))
}

/// Most passage readings the engine keeps; past it they start over.
const READING_CACHE_LIMIT: usize = 4096;

fn answer(
    query: &str,
    intent: &str,
    passages: &[Passage],
    feedback: Option<&str>,
    max_sentences: usize,
    read: Reader<'_>,
) -> String {
    if passages.is_empty() {
        return if intent == "greeting" {
            "Hello! I answer questions about the documents in my knowledge base. What would you like to know?"
                .to_string()
        } else {
            "I could not find anything about that in the knowledge base.".to_string()
        };
    }
    let query_terms = term_set(query);
    // Feedback from the critic names what is missing; its words count as
    // wanted too, a little less than the query's own.
    let wanted: BTreeSet<String> =
        feedback.map(term_set).unwrap_or_default().difference(&query_terms).cloned().collect();
    let readings: Vec<Arc<PassageReading>> = passages.iter().map(|p| read(&p.text)).collect();
    let mut candidates: Vec<(f64, usize, usize, &str, &BTreeSet<String>)> = Vec::new();
    for (pi, (p, reading)) in passages.iter().zip(&readings).enumerate() {
        for (si, (s, terms)) in reading.sentences.iter().enumerate() {
            let hits = query_terms.intersection(terms).count() as f64;
            let extra = wanted.intersection(terms).count() as f64;
            if hits + extra == 0.0 {
                continue;
            }
            let score = hits / query_terms.len().max(1) as f64
                + 0.5 * extra / wanted.len().max(1) as f64
                + 0.2 * f64::from(p.score)
                - 0.002 * si as f64;
            candidates.push((score, pi, si, s.as_str(), terms));
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut chosen: Vec<(usize, &str, &BTreeSet<String>)> = Vec::new();
    for (_, pi, _, s, terms) in candidates {
        if chosen.len() >= max_sentences.max(1) {
            break;
        }
        let duplicate = chosen.iter().any(|(_, _, t)| {
            let inter = t.intersection(terms).count() as f64;
            let union = t.union(terms).count() as f64;
            union > 0.0 && inter / union > 0.7
        });
        if !duplicate {
            chosen.push((pi, s, terms));
        }
    }
    if chosen.is_empty() {
        // Nothing overlaps the query: quote the best passage's first sentence.
        let first = readings.first().and_then(|r| r.sentences.first());
        return match first {
            Some((s, _)) => cite(s, 1),
            None => "I could not find a clear answer in the knowledge base.".to_string(),
        };
    }
    chosen.iter().map(|(pi, s, _)| cite(s, pi + 1)).collect::<Vec<_>>().join(" ")
}

/// Sentences of an `llm` agent's offline text when its passages give any.
const GENERATE_SENTENCES: usize = 3;

/// An `llm` agent's text, extractively (see the module docs).
fn generate_text(
    query: &str,
    intent: &str,
    passages: &[Passage],
    outputs: &[(String, serde_json::Value)],
    feedback: Option<&str>,
    read: Reader<'_>,
) -> String {
    let latest_text = outputs.iter().rev().filter_map(|(_, v)| v.as_str()).find(|t| !t.trim().is_empty());
    if let Some(first) = latest_text.and_then(|t| text::sentences(t).into_iter().next()) {
        return first;
    }
    if !passages.is_empty() {
        return answer(query, intent, passages, feedback, GENERATE_SENTENCES, read);
    }
    format!("[{OFFLINE_MODEL} cannot write free text] {query}")
}

/// Deepest schema nesting the placeholder follows; deeper parts are null.
const PLACEHOLDER_DEPTH: usize = 16;

/// A value fitting `schema` where it can be read without inventing
/// anything: declared values first, else a placeholder of the type.
fn placeholder(schema: &serde_json::Value, text: &str, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    let Some(s) = schema.as_object() else { return Value::Null };
    if depth > PLACEHOLDER_DEPTH {
        return Value::Null;
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    let first = |key: &str| s.get(key).and_then(Value::as_array).and_then(|a| a.first());
    if let Some(v) = first("enum").or_else(|| s.get("default")).or_else(|| first("examples")) {
        return v.clone();
    }
    if let Some(sub) = first("anyOf").or_else(|| first("oneOf")).or_else(|| first("allOf")) {
        return placeholder(sub, text, depth + 1);
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // A nullable type (`["string", "null"]`) gets its other type.
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null")
        }
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "null",
    };
    let bound = |key: &str| s.get(key).and_then(Value::as_f64);
    match ty {
        "object" => {
            let props = s.get("properties").and_then(Value::as_object);
            let fields =
                props.into_iter().flatten().map(|(k, v)| (k.clone(), placeholder(v, text, depth + 1)));
            Value::Object(fields.collect())
        }
        "array" => {
            let n = s.get("minItems").and_then(Value::as_u64).unwrap_or(0).min(16) as usize;
            let item = s.get("items").map(|i| placeholder(i, text, depth + 1)).unwrap_or(Value::Null);
            Value::Array(vec![item; n])
        }
        "string" => {
            let max = s.get("maxLength").and_then(Value::as_u64).map(|m| m as usize);
            Value::from(match max {
                Some(m) => text.chars().take(m).collect::<String>(),
                None => text.to_string(),
            })
        }
        "integer" => {
            let min = bound("minimum").map(f64::ceil).or(bound("exclusiveMinimum").map(|m| m.floor() + 1.0));
            Value::from(min.unwrap_or(0.0) as i64)
        }
        "number" => Value::from(bound("minimum").unwrap_or(0.0)),
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

/// An `llm` judge's JSON: the critic's verdict on `draft` (`accepted`,
/// `scores`, `feedback`) in the fields the schema declares, the others
/// filled like any JSON output.
fn judge_verdict(query: &str, draft: &str, passages: &[Passage], schema: Option<&ResponseSchema>) -> String {
    let verdict: serde_json::Value =
        serde_json::from_str(&critique(query, draft, passages, &fresh)).unwrap_or_default();
    let Some(schema) = schema else { return verdict.to_string() };
    let mut value = placeholder(&schema.schema, draft, 0);
    if let (Some(fields), Some(known)) = (value.as_object_mut(), verdict.as_object()) {
        for (key, v) in known {
            if let Some(slot) = fields.get_mut(key) {
                *slot = v.clone();
            }
        }
    }
    value.to_string()
}

fn critique(query: &str, answer_text: &str, passages: &[Passage], read: Reader<'_>) -> String {
    let plain = text::strip_citation_markers(answer_text);
    let readings: Vec<Arc<PassageReading>> = passages.iter().map(|p| read(&p.text)).collect();
    let passage_terms: Vec<&BTreeSet<String>> = readings.iter().map(|r| &r.terms).collect();
    let sentences = text::sentences(&plain);
    let mut supports = Vec::new();
    let mut unsupported = Vec::new();
    for s in &sentences {
        let terms = term_set(s);
        if terms.is_empty() {
            continue;
        }
        let support = passage_terms
            .iter()
            .map(|pt| terms.intersection(pt).count() as f64 / terms.len() as f64)
            .fold(0.0, f64::max);
        if support < 0.5 {
            unsupported.push(s.clone());
        }
        supports.push(support);
    }
    let groundedness =
        if supports.is_empty() { 0.0 } else { supports.iter().sum::<f64>() / supports.len() as f64 };
    let query_terms = term_set(query);
    let answer_terms = term_set(&plain);
    let missing: Vec<&String> = query_terms.difference(&answer_terms).collect();
    let coverage = if query_terms.is_empty() {
        1.0
    } else {
        (query_terms.len() - missing.len()) as f64 / query_terms.len() as f64
    };
    let mut feedback = Vec::new();
    if !missing.is_empty() {
        feedback.push(format!(
            "Cover these query terms: {}.",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if !unsupported.is_empty() {
        feedback.push(format!("Remove unsupported sentences: {}", unsupported.join(" ")));
    }
    json!({
        "accepted": groundedness >= 0.6 && coverage >= 0.5,
        "scores": {"groundedness": round3(groundedness), "coverage": round3(coverage)},
        "feedback": feedback.join(" "),
    })
    .to_string()
}

impl LlmClient for OfflineEngine {
    fn model(&self) -> &str {
        &self.model
    }

    fn provider(&self) -> &str {
        "offline"
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            let _in_flight = InFlight(&self.in_flight);
            self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            if let Some(trigger) = &self.panic_on_query {
                let query = match &request.hint {
                    TaskHint::Route { query, .. }
                    | TaskHint::Answer { query, .. }
                    | TaskHint::Critique { query, .. }
                    | TaskHint::Generate { query, .. }
                    | TaskHint::Judge { query, .. } => query.as_str(),
                    TaskHint::Freeform => "",
                };
                if query.contains(trigger.as_str()) {
                    panic!("offline engine `{}`: test fault hook panic_on_query matched", self.model);
                }
            }
            if self.fails(n) {
                return Err(LlmError::Unavailable {
                    model: self.model.clone(),
                    message: format!("injected failure (failure_rate = {})", self.failure_rate),
                });
            }
            // A tool the query names is called first (see `offline_tools`).
            if let Some(call) = super::offline_tools::tool_call(request) {
                return Ok(self.response(request, String::new(), vec![call]));
            }
            let text = match &request.hint {
                TaskHint::Route { query, intents, default_intent, .. } => {
                    self.route(query, intents, default_intent)
                }
                TaskHint::Answer { query, intent, passages, feedback, max_sentences, .. } => {
                    answer(query, intent, passages, feedback.as_deref(), *max_sentences, &|t| self.reading(t))
                }
                TaskHint::Critique { query, answer, passages } => {
                    critique(query, answer, passages, &|t| self.reading(t))
                }
                TaskHint::Generate { query, passages, judged: Some(draft), json: true, .. } => {
                    judge_verdict(query, draft, passages, request.response_schema.as_deref())
                }
                TaskHint::Generate { query, intent, passages, outputs, feedback, json, .. } => {
                    let text = super::offline_tools::tool_results(request).unwrap_or_else(|| {
                        generate_text(query, intent, passages, outputs, feedback.as_deref(), &|t| {
                            self.reading(t)
                        })
                    });
                    match (json, &request.response_schema) {
                        (false, _) => text,
                        (true, Some(s)) => placeholder(&s.schema, &text, 0).to_string(),
                        (true, None) => json!({ "text": text }).to_string(),
                    }
                }
                TaskHint::Judge { criterion, query, response, context, ground_truth, rubric } => {
                    super::judge_heuristic::judge(&super::judge_heuristic::JudgeTask {
                        criterion,
                        query,
                        response,
                        context: context.as_deref(),
                        ground_truth: ground_truth.as_deref(),
                        rubric: rubric.as_deref(),
                    })
                }
                TaskHint::Freeform => {
                    // No model to write free text: echo the last user message,
                    // plainly marked, rather than pretend.
                    let last = request.messages.iter().rev().find(|m| m.role == super::Role::User);
                    format!(
                        "[{OFFLINE_MODEL} cannot write free text] {}",
                        last.map(|m| m.content.as_str()).unwrap_or("")
                    )
                }
            };
            if let Some(sink) = tokens {
                for piece in text.split_inclusive(' ') {
                    // A closed receiver only means the client stopped
                    // listening; the full text is still returned.
                    let _ = sink.send(piece.to_string());
                }
            }
            Ok(self.response(request, text, Vec::new()))
        })
    }
}

impl OfflineEngine {
    /// The reading of passage `text`, kept for the next request that
    /// retrieves it.
    fn reading(&self, text: &str) -> Arc<PassageReading> {
        // A poisoned lock only means another call panicked mid-insert; the
        // map itself is still a valid cache.
        if let Some(r) = self.readings.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(text) {
            return r.clone();
        }
        let reading = fresh(text);
        let mut kept = self.readings.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() >= READING_CACHE_LIMIT {
            kept.clear();
        }
        kept.insert(text.to_string(), reading.clone());
        reading
    }

    /// An answer of `text` (and `tool_calls`), its usage estimated.
    fn response(&self, request: &LlmRequest, text: String, tool_calls: Vec<super::ToolCall>) -> LlmResponse {
        let input_tokens: u64 = request.messages.iter().map(|m| text::estimate_tokens(&m.content) + 4).sum();
        LlmResponse {
            usage: TokenUsage { input_tokens, output_tokens: text::estimate_tokens(&text), estimated: true },
            text,
            model: self.model.clone(),
            cost_usd: Some(0.0),
            finish_reason: Some(if tool_calls.is_empty() { "stop" } else { "tool_calls" }.into()),
            attempts: 1,
            failed_attempts: Vec::new(),
            tool_calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(text: &str) -> Passage {
        Passage { doc_id: "d".into(), chunk_id: "d#0".into(), text: text.into(), score: 0.5 }
    }

    #[test]
    fn passage_readings_are_kept_by_text_and_equal_a_fresh_reading() {
        let engine = OfflineEngine::new(OFFLINE_MODEL, 0, 0.0);
        let text =
            "Gateway > Limits\nThe gateway listens on port 50051 by default. Retries happen three times.";
        let first = engine.reading(text);
        assert!(Arc::ptr_eq(&first, &engine.reading(text)), "read once, kept");
        let again = fresh(text);
        assert_eq!(first.terms, again.terms);
        assert_eq!(first.sentences, again.sentences);
        assert_eq!(first.sentences.len(), 2, "{:?}", first.sentences);
    }

    #[test]
    fn answer_quotes_overlapping_sentences_with_markers() {
        let ps = vec![
            passage("Gateway\nThe gateway listens on port 50051 by default. Bananas are yellow fruit."),
            passage("Limits\nThe gateway rejects empty queries with INVALID_ARGUMENT."),
        ];
        let a = answer("Which port does the gateway listen on?", "question", &ps, None, 2, &fresh);
        assert!(a.starts_with("The gateway listens on port 50051 by default [1]."), "{a}");
        assert!(!a.contains("Bananas"));
    }

    #[test]
    fn critique_scores_support_and_coverage() {
        let ps = vec![passage("The gateway listens on port 50051 by default.")];
        let v: serde_json::Value = serde_json::from_str(&critique(
            "gateway port",
            "The gateway listens on port 50051 [1].",
            &ps,
            &fresh,
        ))
        .unwrap();
        assert_eq!(v["scores"]["groundedness"], 1.0);
        assert_eq!(v["scores"]["coverage"], 1.0);
        assert_eq!(v["accepted"], true);
        let v: serde_json::Value =
            serde_json::from_str(&critique("gateway port retries", "Bananas grow on trees.", &ps, &fresh))
                .unwrap();
        assert_eq!(v["accepted"], false);
        assert!(v["feedback"].as_str().unwrap().contains("retry"));
    }

    #[test]
    fn generate_heads_the_latest_text_output_or_extracts_from_the_passages() {
        let outputs = vec![
            ("classify".to_string(), json!({"needs_search": true})),
            (
                "summarizer".to_string(),
                json!("The gateway listens on port 50051 [1]. It checks requests [1]."),
            ),
        ];
        assert_eq!(
            generate_text("q", "question", &[], &outputs, None, &fresh),
            "The gateway listens on port 50051 [1]."
        );
        let ps = vec![passage("Gateway\nThe gateway listens on port 50051 by default.")];
        let a = generate_text(
            "Which port does the gateway listen on?",
            "question",
            &ps,
            &outputs[..1],
            None,
            &fresh,
        );
        assert_eq!(a, "The gateway listens on port 50051 by default [1].");
        let none = generate_text("What is up?", "question", &[], &[], None, &fresh);
        assert_eq!(none, "[offline-extractive cannot write free text] What is up?");
    }

    #[test]
    fn placeholders_take_declared_values_then_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 3},
                "needs_search": {"type": "boolean", "default": true},
                "tone": {"enum": ["plain", "bold"]},
                "count": {"type": "integer", "minimum": 2.5},
                "score": {"type": ["number", "null"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "nested": {"properties": {"ok": {"const": 1}}},
            },
        });
        assert_eq!(
            placeholder(&schema, "Headline", 0),
            json!({
                "title": "Hea", "needs_search": true, "tone": "plain", "count": 3, "score": 0.0,
                "tags": ["Headline"], "nested": {"ok": 1},
            })
        );
    }

    #[test]
    fn injected_failures_follow_the_rate() {
        let e = OfflineEngine::new(OFFLINE_MODEL, 0, 0.25);
        let failures = (0..10_000).filter(|n| e.fails(*n)).count();
        assert!((2000..3000).contains(&failures), "{failures}");
        let never = OfflineEngine::new(OFFLINE_MODEL, 0, 0.0);
        assert!(!(0..1000).any(|n| never.fails(n)));
    }
}
