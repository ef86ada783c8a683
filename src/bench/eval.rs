//! `meshops bench eval`: `eval run` rows/s at concurrency 1, 10, 100 and
//! 1000 with the offline engine's `latency_ms = 200`, against linear
//! scaling from concurrency 1 (rows/s at 1 × concurrency).

use std::path::PathBuf;

use super::{BenchError, Options, TempDir, fail, ratio};
use crate::config::MeshSpec;
use crate::eval::runner::{self, RunOptions};

/// The figures of `meshops bench eval`, measured in one run.
#[derive(Debug, Clone)]
pub struct EvalFigures {
    /// Latency injected into every offline model call, in ms.
    pub model_latency_ms: u64,
    /// The dataset whose queries the rows repeat.
    pub dataset: PathBuf,
    /// One `eval run` per concurrency level, lowest first.
    pub levels: Vec<EvalLevel>,
    /// The concurrency the target is checked at (the highest level).
    pub target_concurrency: usize,
    /// The target for the last level's `of_linear`: linear scaling, counted
    /// as reached at this fraction of linear.
    pub target_of_linear: f64,
    /// The highest level's `of_linear`.
    pub last_of_linear: f64,
    /// Whether `last_of_linear` reaches `target_of_linear`.
    pub met: bool,
}

/// One `eval run` at one concurrency level.
#[derive(Debug, Clone)]
pub struct EvalLevel {
    /// Rows run at once.
    pub concurrency: usize,
    /// Rows in the run's dataset.
    pub rows: usize,
    /// Seconds the rows took (`RunResult::rows_elapsed`).
    pub secs: f64,
    /// Rows attempted per second.
    pub rows_per_s: f64,
    /// Linear scaling from concurrency 1: its rows/s × `concurrency`.
    pub linear: f64,
    /// `rows_per_s / linear`.
    pub of_linear: f64,
    /// Rows that failed (no answer): a rate with failures is suspect.
    pub failed: usize,
}

pub async fn run(mut spec: MeshSpec, opts: &Options) -> Result<EvalFigures, BenchError> {
    let latency_ms = if opts.quick { 20 } else { 200 };
    let levels: &[usize] = if opts.quick { &[1, 10, 100] } else { &[1, 10, 100, 1000] };
    super::offline_latency(&mut spec, latency_ms);
    let data = TempDir::new("eval")?;
    spec.settings.retrieval.data_dir = data.path().join("data");
    // Rows must not time out waiting behind each other.
    spec.settings.gateway.request_timeout_ms = 600_000;
    let sample = spec.resolve(std::path::Path::new("eval/datasets/sample.jsonl"));
    let queries: Vec<String> = std::fs::read_to_string(&sample)
        .map_err(|e| fail(sample.display().to_string(), e))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("query").and_then(|q| q.as_str()).map(str::to_string))
        .collect();
    if queries.is_empty() {
        return Err(fail(sample.display().to_string(), "no rows with a query"));
    }
    let mut base = 0.0;
    let mut last_ratio = 0.0;
    let mut figures = Vec::with_capacity(levels.len());
    for &c in levels {
        // Enough rows for a few waves at each level.
        let rows = if opts.quick { c.max(2) } else { (c * 3).max(6) };
        let dataset = data.path().join(format!("rows-{c}.jsonl"));
        let lines: Vec<String> = (0..rows)
            .map(|i| {
                serde_json::json!({"id": format!("r{i}"), "query": queries[i % queries.len()], "ground_truth": ""})
                    .to_string()
            })
            .collect();
        std::fs::write(&dataset, lines.join("\n")).map_err(|e| fail(dataset.display().to_string(), e))?;
        let mut opts = RunOptions::new(&dataset, data.path().join(format!("out-{c}")));
        opts.concurrency = c;
        opts.metrics = vec!["f1".into()];
        let result = runner::run(spec.clone(), opts).await.map_err(|e| fail("eval run", e))?;
        let secs = result.rows_elapsed.as_secs_f64();
        let rps = result.attempted as f64 / secs.max(1e-9);
        if c == 1 {
            base = rps;
        }
        let linear = base * c as f64;
        last_ratio = ratio(rps, linear);
        figures.push(EvalLevel {
            concurrency: c,
            rows,
            secs,
            rows_per_s: rps,
            linear,
            of_linear: ratio(rps, linear),
            failed: result.summary.counts.failed,
        });
    }
    let target_of_linear = 0.9;
    Ok(EvalFigures {
        model_latency_ms: latency_ms,
        dataset: sample,
        levels: figures,
        target_concurrency: levels.last().copied().unwrap_or(1),
        target_of_linear,
        last_of_linear: last_ratio,
        met: last_ratio >= target_of_linear,
    })
}
