//! What a run writes as it goes: one line of `outputs.jsonl` per attempt at
//! a row ([`OutputRecord`]) and one line of `judgements.jsonl` per judge
//! verdict ([`JudgementRecord`]), how they are read back (a torn last line
//! from a crash is skipped), and what the judges see of a record.
//!
//! The runner appends these records and the report reads them; neither
//! defines them, so the report never depends on the runner.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::EvalError;
use super::dataset::Row;
use super::judge::{JudgeInput, ModelEval};
use crate::mesh::Answer;

/// One step as recorded in `outputs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOut {
    /// The agent that ran the step (per-agent latency in the report).
    pub agent: String,
    /// The agent's kind (router, retriever, …).
    pub kind: String,
    /// The model that answered, for cost and latency by model.
    pub model: String,
    /// 1 for the first run of the step; more after a critic's revision.
    pub attempt: u32,
    pub latency_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when the model's price is unknown (never counted as 0).
    pub cost_usd: Option<f64>,
}

/// Usage totals as recorded in `outputs.jsonl`; `cost_usd` is `None` when
/// any step's cost is unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageOut {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Counted toward `--max-cost-usd`; `None` when unknown.
    pub cost_usd: Option<f64>,
    pub model_calls: u32,
}

/// The critic's verdict as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictOut {
    /// Whether the critic let the answer through.
    pub accepted: bool,
    /// The critic's scores by name.
    pub scores: BTreeMap<String, f64>,
    /// What the critic asked the summarizer to change.
    pub feedback: String,
}

/// One attempt at one row: a line of `outputs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The dataset row's id.
    pub id: String,
    /// Which of `--repeats` this attempt is (from 0).
    pub repeat: u32,
    /// The variant that answered (`base` for the base mesh).
    pub variant: String,
    /// The configuration that answered; records of another configuration
    /// are not resumed.
    pub config_hash: String,
    /// The query sent, so an edited row under an old id runs again.
    pub query: String,
    /// `None` when the attempt failed.
    pub answer: Option<String>,
    /// Cited document ids, in citation order (retrieval metrics).
    #[serde(default)]
    pub retrieved_doc_ids: Vec<String>,
    /// The cited passages' text, in citation order: the context judges
    /// read when the dataset row has none.
    #[serde(default)]
    pub contexts: Vec<String>,
    /// The routed intent (`intent_match`).
    pub intent: Option<String>,
    pub verdict: Option<VerdictOut>,
    /// One record per step, for per-agent latency and cost.
    #[serde(default)]
    pub steps: Vec<StepOut>,
    /// `None` on a failed attempt (its cost is unknown).
    pub usage: Option<UsageOut>,
    /// `None` on success; the gRPC code and message or the mesh error text
    /// otherwise.
    pub error: Option<String>,
    /// End to end, as the harness saw it.
    pub latency_ms: f64,
    /// When the attempt finished (RFC 3339, UTC).
    pub finished_at: String,
}

impl OutputRecord {
    /// Builds the record of one attempt from its result.
    pub fn new(
        key: &Key,
        config_hash: &str,
        query: &str,
        result: Result<Answer, String>,
        latency: Duration,
    ) -> OutputRecord {
        let mut rec = OutputRecord {
            id: key.id.clone(),
            repeat: key.repeat,
            variant: key.variant.clone(),
            config_hash: config_hash.to_string(),
            query: query.to_string(),
            answer: None,
            retrieved_doc_ids: Vec::new(),
            contexts: Vec::new(),
            intent: None,
            verdict: None,
            steps: Vec::new(),
            usage: None,
            error: None,
            latency_ms: latency.as_secs_f64() * 1000.0,
            finished_at: rfc3339(SystemTime::now()),
        };
        match result {
            Ok(a) => {
                rec.answer = Some(a.answer);
                rec.contexts = a.citations.iter().map(|c| c.text.clone()).collect();
                rec.retrieved_doc_ids = a.citations.into_iter().map(|c| c.doc_id).collect();
                rec.intent = Some(a.intent);
                rec.verdict = a.verdict.map(|v| VerdictOut {
                    accepted: v.accepted,
                    scores: v.scores,
                    feedback: v.feedback,
                });
                rec.steps = a
                    .steps
                    .into_iter()
                    .map(|s| StepOut {
                        agent: s.agent,
                        kind: s.kind,
                        model: s.model,
                        attempt: s.attempt,
                        latency_ms: s.latency_ms,
                        input_tokens: s.input_tokens,
                        output_tokens: s.output_tokens,
                        cost_usd: s.cost_usd,
                    })
                    .collect();
                rec.usage = Some(UsageOut {
                    input_tokens: a.usage.input_tokens,
                    output_tokens: a.usage.output_tokens,
                    cost_usd: a.usage.cost_usd,
                    model_calls: a.usage.model_calls,
                });
            }
            Err(e) => rec.error = Some(e),
        }
        rec
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    pub fn key(&self) -> Key {
        Key { id: self.id.clone(), repeat: self.repeat, variant: self.variant.clone() }
    }
}

/// What identifies a row's result within one configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The dataset row's id.
    pub id: String,
    /// Which repeat.
    pub repeat: u32,
    /// Which variant.
    pub variant: String,
}

/// One judge's verdict on one row: a line of `judgements.jsonl`. The
/// latest line per (row key, evaluator) wins; it is reused only while its
/// version, judge model and input hash still match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgementRecord {
    /// The row key's id, repeat and variant.
    pub id: String,
    pub repeat: u32,
    pub variant: String,
    /// The metric name the judgement scores.
    pub evaluator: String,
    /// The evaluator's version when judged; another version judges again.
    pub version: String,
    /// The judge's model name (the client's, not the one that answered).
    pub judge_model: String,
    /// [`super::judge::input_hash`] of what the judge saw.
    pub input_hash: String,
    /// `None` when the judge gave no usable score.
    pub score: Option<f64>,
    /// The judge's reason, shown beside low scores in the report.
    pub reason: Option<String>,
    /// Why there is no score: the judge answered garbage, or the call failed.
    pub error: Option<String>,
    /// The model that answered (may be a fallback).
    pub answered_by: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Counted toward `--max-cost-usd`; `None` when unknown.
    pub cost_usd: Option<f64>,
    /// When the judgement finished (RFC 3339, UTC).
    pub finished_at: String,
}

impl JudgementRecord {
    /// The row key and evaluator this judgement is stored under.
    pub fn jkey(&self) -> (Key, String) {
        (
            Key { id: self.id.clone(), repeat: self.repeat, variant: self.variant.clone() },
            self.evaluator.clone(),
        )
    }

    /// Whether this judgement still stands for `me` on `input_hash`.
    pub fn matches(&self, me: &ModelEval, judge_model: &str, input_hash: &str) -> bool {
        self.version == me.version && self.judge_model == judge_model && self.input_hash == input_hash
    }
}

/// The judges' inputs for a successful record: the row's context, or else
/// the cited passages; `None` for a failed row.
pub fn judge_input(rec: &OutputRecord, row: Option<&Row>) -> Option<JudgeInput> {
    let answer = rec.answer.as_ref().filter(|_| rec.ok())?;
    let context = row.and_then(|r| r.context.clone()).or_else(|| {
        (!rec.contexts.is_empty()).then(|| {
            rec.contexts
                .iter()
                .enumerate()
                .map(|(i, c)| format!("[{}] {c}", i + 1))
                .collect::<Vec<_>>()
                .join("\n\n")
        })
    });
    Some(JudgeInput {
        query: rec.query.clone(),
        response: answer.clone(),
        context,
        ground_truth: row.and_then(|r| r.ground_truth.clone()),
    })
}

/// Formats `t` as RFC 3339 UTC with milliseconds (civil-from-days, so no
/// date crate is needed).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Reads `outputs.jsonl`; a torn last line (a crash mid-write) is skipped,
/// other bad lines are errors.
pub fn read_outputs(path: &Path) -> Result<Vec<OutputRecord>, EvalError> {
    read_jsonl(path)
}

/// Reads `judgements.jsonl` (latest line per row and evaluator); a torn
/// last line is skipped.
pub fn read_judgements(path: &Path) -> Result<BTreeMap<(Key, String), JudgementRecord>, EvalError> {
    let records: Vec<JudgementRecord> = read_jsonl(path)?;
    Ok(records.into_iter().map(|j| (j.jkey(), j)).collect())
}

/// Reads a JSON-lines file this harness appends to: a missing file is
/// empty, a torn last line (a crash mid-write) is skipped, any other bad
/// line is an error naming the file and line.
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, EvalError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(EvalError::Io { path: path.display().to_string(), source }),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                tracing::warn!(file = %path.display(), "skipping a torn last line");
            }
            Err(e) => {
                return Err(EvalError::Input {
                    path: format!("{}:{}", path.display(), i + 1),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
    }
}
