//! What a run is asked to do ([`RunOptions`]) and what it reports back
//! ([`RunResult`]), with the checks made before anything starts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::eval::EvalError;
use crate::eval::evaluators::{ColumnMap, EvaluatorSet, OWN_METRICS};
use crate::eval::report::Summary;
use crate::eval::{judge, metrics};
use crate::llm::SharedLlm;

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
    /// The JSONL dataset to drive.
    pub dataset: PathBuf,
    /// Variants to run; empty means the base mesh only.
    pub variants: Vec<String>,
    /// Times each row runs, to see non-determinism.
    pub repeats: u32,
    /// Rows in flight at once.
    pub concurrency: usize,
    /// The run folder; rerunning into the same folder resumes.
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

/// What [`run`](super::run) did.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// What `summary.json` holds.
    pub summary: Summary,
    /// Rows attempted by this invocation (not skipped).
    pub attempted: usize,
    /// Time spent running rows (after start-up, before the reports).
    pub rows_elapsed: Duration,
}

/// Checks a cost cap: it must be a non-negative number.
pub fn check_max_cost(cap: Option<f64>) -> Result<(), EvalError> {
    if cap.is_some_and(|c| !c.is_finite() || c < 0.0) {
        return Err(EvalError::Run("--max-cost-usd must be a non-negative number".into()));
    }
    Ok(())
}

/// Checks the requested metrics: standard ones, judges, harness metrics,
/// and the evaluators file's own names.
pub fn check_metrics(names: &[String], set: &EvaluatorSet) -> Result<(), EvalError> {
    for m in names {
        if m.trim().is_empty() {
            return Err(EvalError::Run("empty metric name in --metrics".into()));
        }
        if judge::is_judge(m) || OWN_METRICS.contains(&m.as_str()) || set.get(m).is_some() {
            continue;
        }
        metrics::compute(m, &metrics::ScoreInput::default())?;
    }
    Ok(())
}
