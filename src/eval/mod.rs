//! Evaluation: drive the mesh with dataset rows, score the outputs, compare
//! runs with paired statistics, gate changes.
//!
//! - [`dataset`]: JSONL rows (`id`, `query`, optional `ground_truth`,
//!   `relevant_doc_ids`, `context`, extra fields kept).
//! - [`metrics`]: standard metrics that must match their reference
//!   implementations (SQuAD EM/F1, sacreBLEU, NLTK GLEU, rouge-score,
//!   retrieval hit rate / MRR / nDCG).
//! - [`score_cmd`]: `meshops eval score` (score an existing output file).
//! - [`run_cmd`]: `meshops eval run` (drive the mesh, resumable).
//! - [`compare_cmd`]: `meshops eval compare` (paired bootstrap, gates).
//! - [`runner`]: the library entry point of a run ([`runner::run`]).
//! - [`report`]: scores, `summary.json` and the Markdown/HTML reports.
//! - [`stats`]: mean, percentiles, seeded paired bootstrap.
//! - [`gates`]: the `eval/gates.toml` format and its judgement.
//! - [`judge`]: LLM judges (Prompty prompts in `prompts/eval/`, strict
//!   verdict parsing, the offline heuristic judge).
//! - [`evaluators`]: what each metric is (kind, version, scale,
//!   threshold), custom evaluators from a file, column mapping.
//! - [`schema`]: the JSON Schema subset of `json_schema` evaluators.
//! - [`publish`]: `--publish DIR` (shared results folder and its index).

pub mod compare_cmd;
pub mod dataset;
pub mod evaluators;
pub mod gates;
pub mod judge;
pub mod metrics;
pub mod publish;
pub mod report;
pub mod run_cmd;
pub mod runner;
pub mod schema;
pub mod score_cmd;
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
    #[error("gate failed: {0}")]
    GateFailed(String),
}
