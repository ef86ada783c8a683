//! Evaluation: drive the mesh with dataset rows, score the outputs, compare
//! runs with paired statistics, gate changes. Nothing here parses command
//! lines or prints: `meshops eval …` (the binary's `cli::eval`) calls these
//! functions and prints what they return.
//!
//! The files form a ladder, each importing only those above it:
//! - [`metrics`], [`stats`], [`schema`]: standard metrics that must match
//!   their reference implementations (SQuAD EM/F1, sacreBLEU, NLTK GLEU,
//!   rouge-score, retrieval hit rate / MRR / nDCG), mean, percentiles and a
//!   seeded paired bootstrap, the JSON Schema subset of `json_schema`
//!   evaluators.
//! - [`judge`]: LLM judges (Prompty prompts in `prompts/eval/`, strict
//!   verdict parsing, the offline heuristic judge).
//! - [`dataset`]: JSONL rows (`id`, `query`, optional `ground_truth`,
//!   `relevant_doc_ids`, `context`, extra fields kept) and column maps.
//! - [`evaluators`]: what each metric is (kind, version, scale,
//!   threshold), custom evaluators from a file.
//! - [`records`]: the lines of `outputs.jsonl` and `judgements.jsonl`.
//! - [`report`]: scores, `summary.json` and the Markdown/HTML reports.
//! - [`runner`]: a run ([`runner::run`]): resumable, judged, cost-capped.
//! - [`score`]: scoring an existing file of responses (`eval score`).
//! - [`gates`]: the `eval/gates.toml` format and its judgement.
//! - [`publish`]: a shared results folder and its index (`--publish DIR`).
//! - [`compare`]: two runs side by side, paired bootstrap, gates
//!   (`eval compare`).

pub mod compare;
pub mod dataset;
pub mod evaluators;
pub mod gates;
pub mod judge;
pub mod live_compare;
pub mod metrics;
pub mod mlflow;
pub mod online;
pub mod publish;
pub mod records;
pub mod report;
pub mod runner;
pub mod schema;
pub mod score;
pub mod stats;

/// Errors of the evaluation harness.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("unknown metric `{name}`; known: {known}")]
    UnknownMetric { name: String, known: String },
    #[error("{0}")]
    Run(String),
    /// The in-process mesh could not be assembled (store, models, agents).
    #[error("starting the mesh: {0}")]
    Start(#[from] crate::runtime::RuntimeError),
    /// A record, summary or index line could not be written as JSON.
    #[error("encoding JSON")]
    Encode(#[source] serde_json::Error),
    #[error("gate failed: {0}")]
    GateFailed(String),
}
