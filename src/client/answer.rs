//! Reading a gateway's answers on the client side: a `proto::AskResponse`
//! back into a [`mesh::Answer`](crate::mesh::Answer). The gateway converts
//! the other way at its edge (`gateway::convert::answer`); a round-trip
//! test there keeps the two in step.

use crate::mesh::{Answer, Citation, StepRecord, Usage, Verdict};
use crate::proto;

/// A gateway's answer as the mesh's [`Answer`]: the inverse of the
/// gateway's own conversion, so a client (the eval harness with
/// `--target`, `meshops batch results`) reads a deployed gateway's answers
/// as it reads the in-process mesh's.
pub fn answer_from_proto(r: proto::AskResponse) -> Answer {
    let usage = r.usage.unwrap_or_default();
    Answer {
        answer: r.answer,
        citations: r
            .citations
            .into_iter()
            .map(|c| Citation { doc_id: c.doc_id, chunk_id: c.chunk_id, text: c.text, score: c.score })
            .collect(),
        intent: r.intent,
        verdict: r.verdict.map(|v| Verdict {
            accepted: v.accepted,
            scores: v.scores.into_iter().collect(),
            feedback: v.feedback,
        }),
        steps: r
            .steps
            .into_iter()
            .map(|s| StepRecord {
                agent: s.agent,
                kind: s.kind,
                model: s.model,
                attempt: s.attempt,
                latency_ms: s.latency_ms,
                input_tokens: s.input_tokens,
                output_tokens: s.output_tokens,
                tokens_estimated: s.tokens_estimated,
                cost_usd: s.cost_usd,
                summary: s.summary,
                model_attempts: s.model_attempts,
                failed_model_attempts: s.failed_model_attempts,
            })
            .collect(),
        usage: Usage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: usage.cost_usd,
            model_calls: usage.model_calls,
            latency_ms: usage.latency_ms,
        },
        trace_id: r.trace_id,
        variant: r.variant,
    }
}
