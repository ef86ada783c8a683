//! Conversions between proto messages and mesh types: the one place where
//! the two meet (the mesh never sees a proto type).

use std::collections::BTreeMap;

use crate::batch::{ItemResult, JobState, JobSummary, NewItem, Outcome};
use crate::config::{GatewaySettings, MeshSpec};
use crate::mesh::{Answer, AskInput, MeshEvent, StepRecord};
use crate::proto;
use crate::retrieval::ingest::{Document, IngestReport};

/// Validates a request against the gateway's limits and turns it into mesh
/// input. The error is the message for `INVALID_ARGUMENT`.
pub fn ask_input(req: proto::AskRequest, limits: &GatewaySettings) -> Result<AskInput, String> {
    let query = req.query.trim();
    if query.is_empty() {
        return Err("query must not be empty".into());
    }
    let chars = query.chars().count();
    if chars > limits.max_query_chars {
        return Err(format!(
            "query is {chars} characters; the limit is {} (gateway.max_query_chars)",
            limits.max_query_chars
        ));
    }
    if req.metadata.len() > limits.max_metadata_entries {
        return Err(format!(
            "metadata has {} entries; the limit is {} (gateway.max_metadata_entries)",
            req.metadata.len(),
            limits.max_metadata_entries
        ));
    }
    if query.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err("query must not contain control characters".into());
    }
    if req.session_id.chars().count() > MAX_SESSION_ID_CHARS {
        return Err(format!("session_id is longer than {MAX_SESSION_ID_CHARS} characters"));
    }
    let variant = req.variant.trim();
    if variant.chars().count() > MAX_VARIANT_CHARS {
        return Err(format!("variant is longer than {MAX_VARIANT_CHARS} characters"));
    }
    Ok(AskInput {
        query: query.to_string(),
        session_id: req.session_id,
        variant: (!variant.is_empty()).then(|| variant.to_string()),
        metadata: req.metadata.into_iter().collect::<BTreeMap<_, _>>(),
    })
}

pub fn step(s: StepRecord) -> proto::Step {
    proto::Step {
        agent: s.agent,
        model: s.model,
        attempt: s.attempt,
        latency_ms: s.latency_ms,
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        cost_usd: s.cost_usd,
        summary: s.summary,
        kind: s.kind,
        tokens_estimated: s.tokens_estimated,
        model_attempts: s.model_attempts,
        failed_model_attempts: s.failed_model_attempts,
    }
}

pub fn answer(a: Answer) -> proto::AskResponse {
    proto::AskResponse {
        answer: a.answer,
        citations: a
            .citations
            .into_iter()
            .map(|c| proto::Citation { doc_id: c.doc_id, chunk_id: c.chunk_id, text: c.text, score: c.score })
            .collect(),
        intent: a.intent,
        verdict: a.verdict.map(|v| proto::Verdict {
            accepted: v.accepted,
            scores: v.scores.into_iter().collect(),
            feedback: v.feedback,
        }),
        steps: a.steps.into_iter().map(step).collect(),
        usage: Some(usage(a.usage)),
        trace_id: a.trace_id,
        variant: a.variant,
    }
}

pub fn event(e: MeshEvent) -> proto::AskEvent {
    use proto::ask_event::Event;
    let event = match e {
        MeshEvent::StepStarted { agent, kind, attempt } => {
            Event::StepStarted(proto::StepStarted { agent, kind, attempt })
        }
        MeshEvent::StepFinished(record) => {
            Event::StepFinished(proto::StepFinished { step: Some(step(record)) })
        }
        MeshEvent::Token { agent, text } => Event::Token(proto::TokenDelta { agent, text }),
    };
    proto::AskEvent { event: Some(event) }
}

fn usage(u: crate::mesh::Usage) -> proto::Usage {
    proto::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cost_usd: u.cost_usd,
        model_calls: u.model_calls,
        latency_ms: u.latency_ms,
    }
}

/// Validates a `SubmitBatch` request: at least one item, at most
/// `batch.max_items`, each item valid as an `Ask` and naming a known
/// variant, and `item_ids` empty or one per item. The error is the message
/// for `INVALID_ARGUMENT`.
pub fn batch_items(
    req: proto::SubmitBatchRequest,
    limits: &GatewaySettings,
    max_items: usize,
    variants: &[String],
) -> Result<(Vec<NewItem>, Option<String>), String> {
    if req.items.is_empty() {
        return Err("a batch needs at least one item".into());
    }
    if req.items.len() > max_items {
        return Err(format!(
            "the batch has {} items; the limit is batch.max_items = {max_items}",
            req.items.len()
        ));
    }
    let request_id = req.request_id.trim();
    if request_id.chars().count() > MAX_REQUEST_ID_CHARS {
        return Err(format!("request_id is longer than {MAX_REQUEST_ID_CHARS} characters"));
    }
    if !req.item_ids.is_empty() && req.item_ids.len() != req.items.len() {
        return Err(format!(
            "item_ids has {} entries for {} items: give one per item (empty for an item without one) or none",
            req.item_ids.len(),
            req.items.len()
        ));
    }
    let mut ids = req.item_ids.into_iter();
    let mut items = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.into_iter().enumerate() {
        let input = ask_input(item, limits).map_err(|e| format!("items[{i}]: {e}"))?;
        if let Some(v) = &input.variant {
            if !variants.contains(v) {
                return Err(format!("items[{i}]: unknown variant `{v}`; known: {}", variants.join(", ")));
            }
        }
        let id = ids.next().map(|id| id.trim().to_string()).filter(|id| !id.is_empty());
        if let Some(id) = &id {
            if id.chars().count() > MAX_REQUEST_ID_CHARS || id.chars().any(char::is_control) {
                return Err(format!(
                    "item_ids[{i}] must be at most {MAX_REQUEST_ID_CHARS} characters, without control characters"
                ));
            }
        }
        items.push(NewItem { id, input });
    }
    Ok((items, (!request_id.is_empty()).then(|| request_id.to_string())))
}

/// Longest accepted `SubmitBatchRequest.request_id`, and item id.
pub const MAX_REQUEST_ID_CHARS: usize = 256;

pub fn batch_job(j: JobSummary) -> proto::BatchJob {
    let state = match j.state {
        JobState::Queued => proto::BatchState::Queued,
        JobState::Running => proto::BatchState::Running,
        JobState::Completed => proto::BatchState::Completed,
        JobState::Cancelled => proto::BatchState::Cancelled,
    };
    proto::BatchJob {
        job_id: j.job_id,
        state: state as i32,
        request_id: j.request_id.unwrap_or_default(),
        total: j.total,
        done: j.done,
        failed: j.failed,
        cancelled: j.cancelled,
        pending: j.pending,
        usage: Some(usage(j.usage)),
        created_unix_ms: j.created_ms,
        finished_unix_ms: j.finished_ms.unwrap_or(0),
    }
}

pub fn batch_result(r: ItemResult) -> proto::BatchResult {
    use proto::batch_result::Outcome as P;
    let outcome = match r.outcome {
        Outcome::Answered(a) => P::Response(answer(*a)),
        Outcome::Failed { code, message } => P::Error(proto::BatchItemError { code, message }),
    };
    proto::BatchResult {
        item_index: r.item_index,
        offset: r.offset,
        outcome: Some(outcome),
        item_id: r.item_id.unwrap_or_default(),
    }
}

/// Longest accepted document id.
pub const MAX_DOC_ID_CHARS: usize = 512;

/// A document id from a request: trimmed, not empty, not too long, no
/// control characters. `field` names it in the error.
fn doc_id(raw: &str, field: &str) -> Result<String, String> {
    let id = raw.trim();
    if id.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if id.chars().count() > MAX_DOC_ID_CHARS {
        return Err(format!("{field} is longer than {MAX_DOC_ID_CHARS} characters"));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(id.to_string())
}

/// Validates an `Ingest` request: at least one document, each with an id
/// (unique in the request) and non-empty text. The error is the message
/// for `INVALID_ARGUMENT`.
pub fn ingest_documents(req: proto::IngestRequest) -> Result<Vec<Document>, String> {
    if req.documents.is_empty() {
        return Err("documents must not be empty: send at least one".into());
    }
    let mut seen = std::collections::HashSet::new();
    let mut docs = Vec::with_capacity(req.documents.len());
    for (i, d) in req.documents.into_iter().enumerate() {
        let id = doc_id(&d.id, &format!("documents[{i}].id"))?;
        if d.text.trim().is_empty() {
            return Err(format!("documents[{i}] (`{id}`): text must not be empty"));
        }
        if !seen.insert(id.clone()) {
            return Err(format!("documents[{i}]: id `{id}` appears more than once in the request"));
        }
        let source = d.source.trim();
        let source = if source.is_empty() { id.clone() } else { source.to_string() };
        docs.push(Document { doc_id: id, source, text: d.text });
    }
    Ok(docs)
}

/// Validates a `DeleteDocuments` request: at least one id, each valid; an
/// id given twice counts once. The error is the message for
/// `INVALID_ARGUMENT`.
pub fn document_ids(req: proto::DeleteDocumentsRequest) -> Result<Vec<String>, String> {
    if req.document_ids.is_empty() {
        return Err("document_ids must not be empty: name at least one document".into());
    }
    let mut ids: Vec<String> = Vec::with_capacity(req.document_ids.len());
    for (i, raw) in req.document_ids.iter().enumerate() {
        let id = doc_id(raw, &format!("document_ids[{i}]"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The last message of a successful ingest.
pub fn ingest_summary(r: &IngestReport, collection: &str) -> proto::IngestEvent {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    proto::IngestEvent {
        event: Some(proto::ingest_event::Event::Summary(proto::IngestSummary {
            documents: n(r.files),
            chunks: n(r.chunks),
            upserted: n(r.upserted),
            stale_removed: n(r.pruned),
            points: r.points as u64,
            collection: collection.to_string(),
        })),
    }
}

/// What `DescribeMesh` reports; computed once at start-up.
/// The tools `agent`'s base profile offers its model, as configured.
pub fn agent_tools(spec: &MeshSpec, agent: &crate::config::AgentSpec) -> Vec<String> {
    let crate::config::KindSettings::Llm(settings) = &agent.base.settings else { return Vec::new() };
    let is_agent = |name: &str| spec.agents.contains_key(name);
    let (tools, _) =
        crate::config::profile_tools(settings, agent.base.prompt.as_deref(), &is_agent, &spec.settings.mcp);
    tools.iter().map(crate::config::ToolRef::label).collect()
}

/// The running MCP servers and their tools, for `DescribeMesh`.
pub fn mcp_servers(spec: &MeshSpec, hub: &crate::tools::mcp::McpHub) -> Vec<proto::McpServerInfo> {
    hub.servers()
        .into_iter()
        .map(|(name, tools)| proto::McpServerInfo {
            transport: match spec.settings.mcp.get(&name).and_then(|s| s.url.as_ref()) {
                Some(_) => "streamable_http".into(),
                None => "stdio".into(),
            },
            name,
            tools: tools
                .into_iter()
                .map(|t| proto::McpToolInfo { name: t.name, description: t.description })
                .collect(),
        })
        .collect()
}

/// Longest `session_id` a request may carry.
pub const MAX_SESSION_ID_CHARS: usize = 256;

/// Longest `variant` name a request may carry (variants are config keys).
pub const MAX_VARIANT_CHARS: usize = 128;

pub fn describe(spec: &MeshSpec) -> proto::MeshDescription {
    let models = &spec.settings.models;
    let model_name = |profile: &Option<String>| {
        profile.as_ref().and_then(|p| models.get(p)).map(|m| m.model.clone()).unwrap_or_default()
    };
    let show = |p: &Option<std::path::PathBuf>| {
        p.as_ref().map(|p| p.strip_prefix(&spec.root).unwrap_or(p).display().to_string()).unwrap_or_default()
    };
    proto::MeshDescription {
        agents: spec
            .agents
            .values()
            .map(|a| proto::AgentInfo {
                name: a.name.clone(),
                kind: a.kind.as_str().into(),
                prompt: show(&a.base.prompt_file),
                model_profile: a.base.model.clone().unwrap_or_default(),
                model: model_name(&a.base.model),
                replicas: spec.running_replicas(a) as u32,
                flows: spec.flows_using(&a.name),
                tools: agent_tools(spec, a),
            })
            .collect(),
        flows: spec
            .settings
            .flows
            .iter()
            .map(|(intent, f)| ("", intent, f))
            .chain(spec.settings.variants.iter().flat_map(|(v, settings)| {
                settings.flows.iter().map(move |(intent, f)| (v.as_str(), intent, f))
            }))
            .map(|(variant, intent, f)| proto::FlowInfo {
                intent: intent.clone(),
                // A group run at once shows as `(a | b)`, a conditional
                // step as `agent (when step.field == value)`.
                steps: f.steps.iter().map(ToString::to_string).collect(),
                max_revisions: f.max_revisions,
                variant: variant.to_string(),
                answer: f.answer.clone().unwrap_or_default(),
                on_reject: match f.on_reject {
                    crate::config::OnReject::Draft => "draft".into(),
                    crate::config::OnReject::Reply => "reply".into(),
                },
            })
            .collect(),
        models: models
            .iter()
            .map(|(name, m)| proto::ModelInfo {
                profile: name.clone(),
                provider: m.provider.as_str().into(),
                model: m.model.clone(),
            })
            .collect(),
        variants: spec
            .settings
            .variants
            .iter()
            .map(|(name, v)| proto::VariantInfo {
                name: name.clone(),
                description: v.description.clone(),
                overrides: spec
                    .agents
                    .values()
                    .filter_map(|a| {
                        let p = a.variants.get(name)?;
                        Some((
                            a.name.clone(),
                            format!(
                                "prompt={}, model={}",
                                show(&p.prompt_file),
                                p.model.clone().unwrap_or_default()
                            ),
                        ))
                    })
                    .collect(),
            })
            .collect(),
        retrieval_backend: format!("{:?}", spec.settings.retrieval.backend).to_lowercase(),
        collection: spec.settings.retrieval.collection.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        mcp_servers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::answer_from_proto;
    use crate::mesh::{Citation, Usage, Verdict};

    #[test]
    fn answers_round_trip_through_proto() {
        let a = Answer {
            answer: "A [1].".into(),
            citations: vec![Citation {
                doc_id: "d".into(),
                chunk_id: "d#0".into(),
                text: "t".into(),
                score: 0.5,
            }],
            intent: "question".into(),
            verdict: Some(Verdict {
                accepted: true,
                scores: [("coverage".to_string(), 1.0)].into(),
                feedback: String::new(),
            }),
            steps: vec![StepRecord {
                agent: "critic".into(),
                kind: "critic".into(),
                model: "m".into(),
                attempt: 2,
                latency_ms: 1.5,
                input_tokens: 10,
                output_tokens: 3,
                tokens_estimated: true,
                cost_usd: None,
                summary: "s".into(),
                model_attempts: 2,
                failed_model_attempts: vec!["http_429".into()],
            }],
            usage: Usage {
                input_tokens: 10,
                output_tokens: 3,
                cost_usd: None,
                model_calls: 1,
                latency_ms: 2.0,
            },
            trace_id: "0123".into(),
            variant: "v".into(),
        };
        assert_eq!(answer_from_proto(answer(a.clone())), a);
    }

    fn doc(id: &str, text: &str) -> proto::Document {
        proto::Document { id: id.into(), text: text.into(), source: String::new() }
    }

    #[test]
    fn ingest_requests_are_checked_and_name_the_bad_document() {
        let check = |documents| ingest_documents(proto::IngestRequest { documents });
        assert!(check(vec![]).unwrap_err().contains("documents must not be empty"));
        assert!(check(vec![doc(" ", "t")]).unwrap_err().contains("documents[0].id must not be empty"));
        assert!(
            check(vec![doc("a", "t"), doc("b", " \n")]).unwrap_err().contains("documents[1] (`b`): text")
        );
        assert!(
            check(vec![doc("a", "t"), doc("a ", "u")]).unwrap_err().contains("`a` appears more than once")
        );
        assert!(check(vec![doc("a\u{7}", "t")]).unwrap_err().contains("control characters"));
        let long = "x".repeat(MAX_DOC_ID_CHARS + 1);
        assert!(check(vec![doc(&long, "t")]).unwrap_err().contains("longer than"));
        let ok = check(vec![doc(" guides/a ", "text")]).unwrap();
        assert_eq!(
            ok,
            vec![Document { doc_id: "guides/a".into(), source: "guides/a".into(), text: "text".into() }]
        );
    }

    #[test]
    fn delete_requests_need_ids_and_count_each_once() {
        let check = |ids: &[&str]| {
            document_ids(proto::DeleteDocumentsRequest {
                document_ids: ids.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert!(check(&[]).unwrap_err().contains("document_ids must not be empty"));
        assert!(check(&["a", ""]).unwrap_err().contains("document_ids[1] must not be empty"));
        assert_eq!(check(&["a", "b", " a"]).unwrap(), vec!["a".to_string(), "b".to_string()]);
    }
}
