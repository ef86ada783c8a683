//! Drives dataset rows through the mesh (in process, as `mesh::Ask`
//! messages) or through a deployed gateway (gRPC), with bounded concurrency,
//! a cost cap, and resumable append-only output.
//!
//! Every attempt is one line of `outputs.jsonl`, written and flushed as soon
//! as the row finishes, so a crash loses nothing. A row is keyed by
//! (id, repeat, variant, config hash); on a rerun the latest record per key
//! wins: keys whose latest record succeeded are skipped, failed ones are
//! retried. After the run `scores.jsonl`, `summary.json` and the reports
//! are rewritten from the latest records of the planned keys.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::EvalError;
use super::dataset::Row;
use super::evaluators::{ColumnMap, EvaluatorSet};
use super::judge::{Judge, JudgeInput, ModelEval};
use crate::config::MeshSpec;
use crate::llm::SharedLlm;
use crate::mesh::{Answer, Ask, AskInput, MeshHandle, Resources};

/// Name of the base mesh in outputs (requests carry no variant).
pub const BASE_VARIANT: &str = "base";

/// The standard text and retrieval metrics and the LLM judges, scored by
/// default.
pub const DEFAULT_METRICS: &[&str] = &[
    "exact_match",
    "f1",
    "bleu",
    "gleu",
    "rouge1",
    "rouge2",
    "rougeL",
    "hit_rate@5",
    "mrr@5",
    "ndcg@5",
    "groundedness",
    "relevance",
    "coherence",
    "fluency",
    "similarity",
];

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    pub dataset: PathBuf,
    /// Variants to run; empty means the base mesh only.
    pub variants: Vec<String>,
    pub repeats: u32,
    pub concurrency: usize,
    pub out: PathBuf,
    /// Stop scheduling rows once the known cost reaches this.
    pub max_cost_usd: Option<f64>,
    /// Metrics passed to `metrics::compute`.
    pub metrics: Vec<String>,
    /// Drive a deployed gateway (`http://host:port`) instead of the
    /// in-process mesh.
    pub target: Option<String>,
    /// Model clients by profile name used instead of the configured ones
    /// (tests wrap the offline engine to give it a price).
    pub model_overrides: HashMap<String, SharedLlm>,
    /// Show a progress bar (drawn only on a terminal).
    pub progress: bool,
    /// Custom evaluators, extra thresholds and the file's column map.
    pub evaluators: EvaluatorSet,
    /// Column map from the command line; wins over the evaluators file's.
    pub columns: ColumnMap,
    /// Judge model profile replacing `[eval] judge_model`.
    pub judge_model: Option<String>,
    /// A judge client used instead of the profile's (tests).
    pub judge_client: Option<SharedLlm>,
}

impl RunOptions {
    /// Defaults for `dataset` into `out`: base mesh, one repeat,
    /// concurrency 8, default metrics, no cap.
    pub fn new(dataset: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            dataset: dataset.into(),
            variants: Vec::new(),
            repeats: 1,
            concurrency: 8,
            out: out.into(),
            max_cost_usd: None,
            metrics: DEFAULT_METRICS.iter().map(|s| s.to_string()).collect(),
            target: None,
            model_overrides: HashMap::new(),
            progress: false,
            evaluators: EvaluatorSet::default(),
            columns: ColumnMap::default(),
            judge_model: None,
            judge_client: None,
        }
    }
}

/// One step as recorded in `outputs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOut {
    pub agent: String,
    pub kind: String,
    pub model: String,
    pub attempt: u32,
    pub latency_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
}

/// Usage totals as recorded in `outputs.jsonl`; `cost_usd` is `None` when
/// any step's cost is unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageOut {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    pub model_calls: u32,
}

/// The critic's verdict as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictOut {
    pub accepted: bool,
    pub scores: BTreeMap<String, f64>,
    pub feedback: String,
}

/// One attempt at one row: a line of `outputs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub id: String,
    pub repeat: u32,
    pub variant: String,
    pub config_hash: String,
    pub query: String,
    pub answer: Option<String>,
    #[serde(default)]
    pub retrieved_doc_ids: Vec<String>,
    /// The cited passages' text, in citation order: the context judges
    /// read when the dataset row has none.
    #[serde(default)]
    pub contexts: Vec<String>,
    pub intent: Option<String>,
    pub verdict: Option<VerdictOut>,
    #[serde(default)]
    pub steps: Vec<StepOut>,
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
    pub id: String,
    pub repeat: u32,
    pub variant: String,
}

/// What [`run`] did.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub summary: super::report::Summary,
    /// Rows attempted by this invocation (not skipped).
    pub attempted: usize,
    /// Time spent running rows (after start-up, before the reports).
    pub rows_elapsed: Duration,
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

/// A stable hash of what decides the mesh's answers: the settings (minus
/// fields that only move where things run or inject faults), every agent
/// file and every prompt body. Hex of FNV-1a 64.
pub fn config_hash(spec: &MeshSpec) -> String {
    let mut settings = spec.settings.clone();
    // The listen address, timeouts and data dir say where and how long, not
    // what is answered; latency and failure injection are test knobs, and a
    // rerun without them must resume (and retry) the same keys.
    settings.gateway = Default::default();
    // The judge scores answers; it does not decide them.
    settings.eval = Default::default();
    settings.retrieval.data_dir = PathBuf::new();
    for m in settings.models.values_mut() {
        m.latency_ms = 0;
        m.failure_rate = 0.0;
    }
    let mut bytes = serde_json::to_vec(&settings).unwrap_or_default();
    let mut files: Vec<PathBuf> = Vec::new();
    for agent in spec.agents.values() {
        files.push(agent.file.clone());
        files.extend(agent.base.prompt_file.clone());
        files.extend(agent.variants.values().filter_map(|p| p.prompt_file.clone()));
    }
    files.sort();
    files.dedup();
    for f in files {
        // Hash the name relative to the root, so a moved checkout hashes
        // the same.
        let name = f.strip_prefix(&spec.root).unwrap_or(&f).to_string_lossy().into_owned();
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&std::fs::read(spec.resolve(&f)).unwrap_or_default());
        bytes.push(0);
    }
    format!("{:016x}", crate::text::fnv1a64(&bytes))
}

/// Reads a JSONL dataset, renaming fields by `columns` first; every bad
/// line is an error naming file and line.
pub fn read_dataset(path: &Path, columns: &ColumnMap) -> Result<(Vec<Row>, String), EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EvalError::Io { path: path.display().to_string(), source })?;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let mut obj = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => return Err(EvalError::Input { path: at(), message: "expected a JSON object".into() }),
            Err(e) => return Err(EvalError::Input { path: at(), message: e.to_string() }),
        };
        columns.apply(&mut obj);
        for required in ["id", "query"] {
            if !obj.contains_key(required) {
                return Err(EvalError::Input {
                    path: at(),
                    message: format!("missing field {}", columns.describe(required)),
                });
            }
        }
        let row: Row = serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| EvalError::Input { path: at(), message: e.to_string() })?;
        if !seen.insert(row.id.clone()) {
            return Err(EvalError::Input {
                path: format!("{}:{}", path.display(), i + 1),
                message: format!("duplicate row id `{}`", row.id),
            });
        }
        rows.push(row);
    }
    Ok((rows, format!("{:016x}", crate::text::fnv1a64(text.as_bytes()))))
}

/// Reads `outputs.jsonl`; a torn last line (a crash mid-write) is skipped,
/// other bad lines are errors.
pub fn read_outputs(path: &Path) -> Result<Vec<OutputRecord>, EvalError> {
    read_jsonl(path)
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

enum Driver {
    /// The mesh and a handle on its store, kept to see when the mesh has
    /// let go of it.
    Mesh(MeshHandle, crate::retrieval::SharedStore),
    Grpc(crate::proto::gateway_client::GatewayClient<tonic::transport::Channel>),
}

impl Driver {
    async fn ask(&self, row: &Row, repeat: u32, variant: &str, timeout: Duration) -> Result<Answer, String> {
        let variant_opt = (variant != BASE_VARIANT).then(|| variant.to_string());
        let session_id = format!("eval-{}-{repeat}", row.id);
        match self {
            Driver::Mesh(mesh, _) => {
                let cancel = CancellationToken::new();
                let ask = Ask {
                    input: AskInput {
                        query: row.query.clone(),
                        session_id,
                        variant: variant_opt,
                        metadata: BTreeMap::from([("source".to_string(), "eval".to_string())]),
                    },
                    events: None,
                    deadline: Some(tokio::time::Instant::now() + timeout),
                    cancel: cancel.clone(),
                    trace_id: uuid::Uuid::new_v4().simple().to_string(),
                    span: tracing::info_span!("eval.row", row = %row.id, repeat, variant = %variant),
                };
                // Cancelled if this future is dropped (e.g. the run stops).
                let _guard = cancel.drop_guard();
                mesh.ask(ask).await.map_err(|e| e.to_string())
            }
            Driver::Grpc(client) => {
                let mut client = client.clone();
                let mut req = tonic::Request::new(crate::proto::AskRequest {
                    query: row.query.clone(),
                    session_id,
                    variant: variant_opt.unwrap_or_default(),
                    metadata: [("source".to_string(), "eval".to_string())].into(),
                });
                req.set_timeout(timeout);
                match client.ask(req).await {
                    Ok(resp) => Ok(crate::gateway::convert::answer_from_proto(resp.into_inner())),
                    Err(s) => Err(format!("gRPC {:?}: {}", s.code(), s.message())),
                }
            }
        }
    }
}

fn record(
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

/// Known cost so far (app and judge), in micro-dollars (atomics hold
/// integers); the number of finished rows whose cost was unknown is
/// counted apart.
struct CostMeter {
    micro_usd: AtomicU64,
    unknown: AtomicU64,
}

impl CostMeter {
    fn add(&self, rec: &OutputRecord) {
        match rec.usage.as_ref().and_then(|u| u.cost_usd) {
            Some(c) => self.add_usd(c),
            // A failed row has no usage; its cost is unknown too.
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn add_usd(&self, c: f64) {
        self.micro_usd.fetch_add((c.max(0.0) * 1e6).round() as u64, Ordering::Relaxed);
    }

    fn usd(&self) -> f64 {
        self.micro_usd.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// One judge's verdict on one row: a line of `judgements.jsonl`. The
/// latest line per (row key, evaluator) wins; it is reused only while its
/// version, judge model and input hash still match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgementRecord {
    pub id: String,
    pub repeat: u32,
    pub variant: String,
    pub evaluator: String,
    pub version: String,
    /// The judge's model name (the client's, not the one that answered).
    pub judge_model: String,
    /// [`super::judge::input_hash`] of what the judge saw.
    pub input_hash: String,
    pub score: Option<f64>,
    pub reason: Option<String>,
    /// Why there is no score: the judge answered garbage, or the call failed.
    pub error: Option<String>,
    /// The model that answered (may be a fallback).
    pub answered_by: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    pub finished_at: String,
}

impl JudgementRecord {
    fn jkey(&self) -> (Key, String) {
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

/// Reads `judgements.jsonl` (latest line per row and evaluator); a torn
/// last line is skipped.
pub fn read_judgements(path: &Path) -> Result<BTreeMap<(Key, String), JudgementRecord>, EvalError> {
    let records: Vec<JudgementRecord> = read_jsonl(path)?;
    Ok(records.into_iter().map(|j| (j.jkey(), j)).collect())
}

/// The judges of a run and what they score.
struct Judging {
    judge: Judge,
    evals: Vec<ModelEval>,
}

impl Judging {
    /// The evaluators `rec` still needs: those that apply and have no
    /// standing successful judgement in `stored`.
    fn needed(
        &self,
        rec: &OutputRecord,
        row: Option<&Row>,
        stored: &BTreeMap<(Key, String), JudgementRecord>,
    ) -> Vec<ModelEval> {
        let Some(input) = judge_input(rec, row) else { return Vec::new() };
        let hash = super::judge::input_hash(&input);
        let key = rec.key();
        self.evals
            .iter()
            .filter(|me| me.applies(&input))
            .filter(|me| {
                !stored
                    .get(&(key.clone(), me.name.clone()))
                    .is_some_and(|j| j.error.is_none() && j.matches(me, self.judge.model(), &hash))
            })
            .cloned()
            .collect()
    }

    /// Runs `evals` on `rec`, all at once.
    async fn run(&self, rec: &OutputRecord, row: Option<&Row>, evals: &[ModelEval]) -> Vec<JudgementRecord> {
        let Some(input) = judge_input(rec, row) else { return Vec::new() };
        let hash = super::judge::input_hash(&input);
        let calls = evals.iter().map(|me| {
            let (input, hash) = (&input, &hash);
            async move {
                let o = self.judge.judge(&me.criterion, me.rubric.as_deref(), input).await;
                let (score, reason, error) = match o.result {
                    Ok(v) => (Some(f64::from(v.score)), Some(v.reason), None),
                    Err(e) => (None, None, Some(e)),
                };
                JudgementRecord {
                    id: rec.id.clone(),
                    repeat: rec.repeat,
                    variant: rec.variant.clone(),
                    evaluator: me.name.clone(),
                    version: me.version.clone(),
                    judge_model: self.judge.model().to_string(),
                    input_hash: hash.clone(),
                    score,
                    reason,
                    error,
                    answered_by: o.model,
                    input_tokens: o.input_tokens,
                    output_tokens: o.output_tokens,
                    cost_usd: o.cost_usd,
                    finished_at: rfc3339(SystemTime::now()),
                }
            }
        });
        futures::future::join_all(calls).await
    }
}

/// What a run's scoring needs besides the records; shared with the
/// report.
pub struct ScoringSetup {
    pub metrics: Vec<String>,
    pub evaluators: EvaluatorSet,
    pub model_evals: Vec<ModelEval>,
    /// The judge's model name and profile, when the run has judges.
    pub judge_model: Option<String>,
    pub judge_profile: Option<String>,
    /// Versions of the built-in judges and the rubric prompt.
    pub judge_versions: BTreeMap<String, String>,
}

/// Checks the requested metrics: standard ones, judges, harness metrics,
/// and the evaluators file's own names.
fn check_metrics(metrics: &[String], set: &EvaluatorSet) -> Result<(), EvalError> {
    for m in metrics {
        if m.trim().is_empty() {
            return Err(EvalError::Run("empty metric name in --metrics".into()));
        }
        if super::judge::is_judge(m)
            || super::report::OWN_METRICS.contains(&m.as_str())
            || set.get(m).is_some()
        {
            continue;
        }
        super::metrics::compute(m, &super::metrics::ScoreInput::default())?;
    }
    Ok(())
}

/// Runs `opts.dataset` through the mesh built from `spec` (or through
/// `opts.target`), resuming what `opts.out` already holds, judges the
/// answers, and writes the outputs, judgements, scores, summary and
/// reports there.
pub async fn run(spec: MeshSpec, opts: RunOptions) -> Result<RunResult, EvalError> {
    let started_at = SystemTime::now();
    if opts.repeats == 0 {
        return Err(EvalError::Run("--repeats must be at least 1".into()));
    }
    check_metrics(&opts.metrics, &opts.evaluators)?;
    let columns = opts.evaluators.columns.merged(&opts.columns);
    let (rows, dataset_hash) = read_dataset(&opts.dataset, &columns)?;
    let variants: Vec<String> =
        if opts.variants.is_empty() { vec![BASE_VARIANT.to_string()] } else { opts.variants.clone() };
    if opts.target.is_none() {
        for v in variants.iter().filter(|v| v.as_str() != BASE_VARIANT) {
            if !spec.settings.variants.contains_key(v) {
                let known: Vec<&str> = spec.settings.variants.keys().map(String::as_str).collect();
                return Err(EvalError::Run(format!("unknown variant `{v}`; known: {}", known.join(", "))));
            }
        }
    }

    // Judges: the requested built-in ones and every llm_rubric evaluator.
    let mut model_evals: Vec<ModelEval> = Vec::new();
    let wants_judge = opts.metrics.iter().any(|m| super::judge::is_judge(m))
        || opts.evaluators.evaluators.iter().any(|e| e.rubric().is_some());
    let judging = if wants_judge {
        let profile = opts.judge_model.clone().unwrap_or_else(|| spec.settings.eval.judge_model.clone());
        let judge = Judge::build(&spec, &profile, opts.judge_client.clone())?;
        for m in opts.metrics.iter().filter(|m| super::judge::is_judge(m)) {
            if !model_evals.iter().any(|e| &e.name == m) {
                model_evals.push(ModelEval {
                    name: m.clone(),
                    criterion: m.clone(),
                    rubric: None,
                    version: judge.version(m),
                });
            }
        }
        for c in &opts.evaluators.evaluators {
            if let Some(rubric) = c.rubric() {
                model_evals.push(ModelEval {
                    name: c.name.clone(),
                    criterion: c.name.clone(),
                    rubric: Some(rubric.to_string()),
                    version: format!("{}+judge {}", c.version, judge.version(super::judge::RUBRIC_PROMPT)),
                });
            }
        }
        Some(Arc::new(Judging { judge, evals: model_evals.clone() }))
    } else {
        None
    };

    let hash = config_hash(&spec);
    std::fs::create_dir_all(&opts.out)
        .map_err(|source| EvalError::Io { path: opts.out.display().to_string(), source })?;
    let outputs_path = opts.out.join("outputs.jsonl");
    let judgements_path = opts.out.join("judgements.jsonl");

    // Latest record per key of this configuration.
    let mut latest: BTreeMap<Key, OutputRecord> = BTreeMap::new();
    for r in read_outputs(&outputs_path)? {
        if r.config_hash == hash {
            latest.insert(r.key(), r);
        }
    }
    let mut judgements = read_judgements(&judgements_path)?;

    let mut plan: Vec<(Key, &Row)> = Vec::new();
    for variant in &variants {
        for repeat in 0..opts.repeats {
            for row in &rows {
                plan.push((Key { id: row.id.clone(), repeat, variant: variant.clone() }, row));
            }
        }
    }
    // Done: the latest attempt succeeded on the same query text (an edited
    // row under an old id runs again).
    let is_done = |k: &Key, row: &Row| latest.get(k).is_some_and(|r| r.ok() && r.query == row.query);
    let done: Vec<&Key> = plan.iter().filter(|(k, row)| is_done(k, row)).map(|(k, _)| k).collect();
    let skipped = done.len();
    let meter = Arc::new(CostMeter { micro_usd: AtomicU64::new(0), unknown: AtomicU64::new(0) });
    for k in &done {
        if let Some(r) = latest.get(*k) {
            meter.add(r);
        }
    }
    for j in judgements.values() {
        if latest.get(&j.jkey().0).is_some_and(|r| r.ok()) {
            meter.add_usd(j.cost_usd.unwrap_or(0.0));
        }
    }
    // Work: rows to run (and judge), and done rows that still need a judge
    // (judges added, a prompt edited, or an earlier judge failure).
    let mut work: Vec<(Key, &Row, Option<OutputRecord>, Vec<ModelEval>)> = Vec::new();
    for (k, row) in &plan {
        if !is_done(k, row) {
            work.push((k.clone(), *row, None, Vec::new()));
        } else if let (Some(j), Some(rec)) = (&judging, latest.get(k)) {
            let needed = j.needed(rec, Some(*row), &judgements);
            if !needed.is_empty() {
                work.push((k.clone(), *row, Some(rec.clone()), needed));
            }
        }
    }

    let mut attempted = 0usize;
    let mut cut_short = false;
    let mut rows_elapsed = Duration::ZERO;
    let needs_driver = work.iter().any(|(_, _, existing, _)| existing.is_none());
    if !work.is_empty() && !opts.max_cost_usd.is_some_and(|cap| meter.usd() >= cap) {
        let driver = if needs_driver { Some(Arc::new(start_driver(&spec, &opts).await?)) } else { None };
        let timeout = Duration::from_millis(spec.settings.gateway.request_timeout_ms.max(1));
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(std::io::BufWriter::new)
                .map_err(|source| EvalError::Io { path: path.display().to_string(), source })
        };
        let mut file = open(&outputs_path)?;
        let mut jfile = open(&judgements_path)?;
        let bar = progress_bar(opts.progress, work.len() as u64);
        let errors = AtomicU64::new(0);
        let cap = opts.max_cost_usd;
        let rows_t0 = Instant::now();
        let (d, m, h, jd) = (driver.clone(), meter.clone(), hash.clone(), judging.clone());
        let stream = futures::stream::iter(work.into_iter().map(move |(key, row, existing, needed)| {
            let driver = d.clone();
            let meter = m.clone();
            let hash = h.clone();
            let judging = jd.clone();
            async move {
                // Checked when the item is scheduled (buffer_unordered polls
                // a future first when a slot frees), so nothing new starts
                // once the cap is reached; work in flight still finishes.
                if cap.is_some_and(|cap| meter.usd() >= cap) {
                    return None;
                }
                let (rec, fresh, needed) = match (existing, driver.as_deref()) {
                    (Some(rec), _) => (rec, false, needed),
                    (None, Some(driver)) => {
                        let t0 = Instant::now();
                        let result = driver.ask(row, key.repeat, &key.variant, timeout).await;
                        let rec = record(&key, &hash, &row.query, result, t0.elapsed());
                        meter.add(&rec);
                        let needed = match &judging {
                            Some(j) => j.needed(&rec, Some(row), &BTreeMap::new()),
                            None => Vec::new(),
                        };
                        (rec, true, needed)
                    }
                    (None, None) => return None,
                };
                let verdicts = match &judging {
                    Some(j) if !needed.is_empty() => j.run(&rec, Some(row), &needed).await,
                    _ => Vec::new(),
                };
                for v in &verdicts {
                    meter.add_usd(v.cost_usd.unwrap_or(0.0));
                }
                Some((rec, fresh, verdicts))
            }
        }))
        .buffer_unordered(opts.concurrency.max(1));
        let mut stream = Box::pin(stream);
        while let Some(done) = stream.next().await {
            bar.inc(1);
            let Some((rec, fresh, verdicts)) = done else {
                cut_short = true;
                continue;
            };
            for v in verdicts {
                let line = serde_json::to_string(&v).map_err(|e| EvalError::Run(e.to_string()))?;
                writeln!(jfile, "{line}").and_then(|_| jfile.flush()).map_err(|source| EvalError::Io {
                    path: judgements_path.display().to_string(),
                    source,
                })?;
                judgements.insert(v.jkey(), v);
            }
            if !fresh {
                continue;
            }
            attempted += 1;
            if !rec.ok() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            bar.set_message(format!("errors {}  cost ${:.4}", errors.load(Ordering::Relaxed), meter.usd()));
            let line = serde_json::to_string(&rec).map_err(|e| EvalError::Run(e.to_string()))?;
            writeln!(file, "{line}")
                .and_then(|_| file.flush())
                .map_err(|source| EvalError::Io { path: outputs_path.display().to_string(), source })?;
            latest.insert(rec.key(), rec);
        }
        bar.finish_and_clear();
        rows_elapsed = rows_t0.elapsed();
        // Drops the futures' clones of the driver so it can be shut down.
        drop(stream);
        if let Some(Ok(Driver::Mesh(mesh, store))) = driver.map(Arc::try_unwrap) {
            // Joining the mesh thread blocks; keep it off the runtime.
            let _ = tokio::task::spawn_blocking(move || mesh.shutdown()).await;
            release(store).await;
        }
    } else if !work.is_empty() {
        cut_short = true;
    }

    let planned: Vec<Key> = plan.iter().map(|(k, _)| k.clone()).collect();
    let rows_by_id: HashMap<&str, &Row> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let ctx = super::report::Context {
        config_hash: hash,
        dataset: opts.dataset.display().to_string(),
        dataset_hash,
        started_at: rfc3339(started_at),
        finished_at: rfc3339(SystemTime::now()),
        cut_short,
        max_cost_usd: opts.max_cost_usd,
        skipped,
        variants: variants.clone(),
        target: opts.target.clone(),
        columns: columns.0.clone(),
    };
    let mut judge_versions = BTreeMap::new();
    if let Some(j) = &judging {
        for name in super::judge::JUDGES.iter().copied().chain([super::judge::RUBRIC_PROMPT]) {
            judge_versions.insert(name.to_string(), j.judge.version(name));
        }
    }
    let setup = ScoringSetup {
        metrics: opts.metrics.clone(),
        evaluators: opts.evaluators.clone(),
        model_evals,
        judge_model: judging.as_ref().map(|j| j.judge.model().to_string()),
        judge_profile: judging.as_ref().map(|j| j.judge.profile.clone()),
        judge_versions,
    };
    let summary =
        super::report::write_all(&opts.out, &planned, &latest, &judgements, &rows_by_id, &setup, &ctx)?;
    Ok(RunResult { summary, attempted, rows_elapsed })
}

async fn start_driver(spec: &MeshSpec, opts: &RunOptions) -> Result<Driver, EvalError> {
    if let Some(target) = &opts.target {
        let client = crate::proto::gateway_client::GatewayClient::connect(target.clone())
            .await
            .map_err(|e| EvalError::Run(format!("cannot connect to {target}: {e}")))?;
        return Ok(Driver::Grpc(client));
    }
    let startup = |e: String| EvalError::Run(format!("starting the mesh: {e}"));
    let (store, embedder) =
        crate::gateway::server::open_retrieval(spec).await.map_err(|e| startup(e.to_string()))?;
    crate::gateway::server::ingest_if_empty(spec, &store, &embedder)
        .await
        .map_err(|e| startup(e.to_string()))?;
    let mut resources =
        Resources::build(spec, store.clone(), embedder).map_err(|e| startup(e.to_string()))?;
    resources.models.extend(opts.model_overrides.clone());
    let spec = Arc::new(spec.clone());
    let mesh = tokio::task::spawn_blocking(move || MeshHandle::start(spec, resources))
        .await
        .map_err(|e| startup(e.to_string()))?
        .map_err(|e| startup(e.to_string()))?;
    Ok(Driver::Mesh(mesh, store))
}

/// Waits (up to 5 s) until the stopped mesh's worker arbiters have dropped
/// their agents' store handles: the embedded store locks its files, and a
/// second run in the same process (a resume, a test) must be able to open
/// it again.
async fn release(store: crate::retrieval::SharedStore) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&store) > 1 {
        tracing::warn!("the mesh still holds the store after shutdown");
    }
    drop(store);
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    // indicatif hides itself when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} rows  {per_sec}  eta {eta}  {msg}")
    {
        bar.set_style(style);
    }
    bar
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
