//! `meshops eval run`: drive a dataset through the mesh (in process, or a
//! deployed gateway with `--target`) and write outputs, scores, a summary
//! and reports; see [`super::runner`].

use std::path::PathBuf;

use super::EvalError;
use super::runner::{self, RunOptions};

/// Arguments of `meshops eval run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Dataset (JSONL: id, query, ground_truth, relevant_doc_ids, intent…).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Variant to run (repeatable); none runs the base mesh.
    #[arg(long = "variant")]
    pub variants: Vec<String>,
    /// Times each row runs.
    #[arg(long, default_value_t = 1)]
    pub repeats: u32,
    /// Rows in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Output directory; rerunning with the same directory resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// Stop scheduling rows once the known cost reaches this (USD).
    #[arg(long)]
    pub max_cost_usd: Option<f64>,
    /// Comma-separated metrics (default: the standard text and retrieval
    /// metrics); latency, cost, tokens and intent match are always scored.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Drive a deployed gateway (http://HOST:PORT) instead of the
    /// in-process mesh.
    #[arg(long)]
    pub target: Option<String>,
    /// Custom evaluators, thresholds and column map (TOML; see
    /// eval/evaluators.toml).
    #[arg(long, value_name = "FILE")]
    pub evaluators: Option<PathBuf>,
    /// Dataset field renames, CANONICAL=FIELD (repeatable), e.g.
    /// `--map query=question --map ground_truth=answer`.
    #[arg(long = "map", value_name = "CANONICAL=FIELD")]
    pub map: Vec<String>,
    /// Model profile of the LLM judges (default: `[eval] judge_model`).
    #[arg(long, value_name = "PROFILE")]
    pub judge_model: Option<String>,
    /// Copy the finished run into this shared results folder
    /// (DIR/<run id>/) and add it to DIR/index.jsonl.
    #[arg(long, value_name = "DIR")]
    pub publish: Option<PathBuf>,
}

/// Runs the subcommand.
/// `load` says where the mesh configuration comes from (the CLI's `--root`
/// and `--config`, `MESHOPS_ENV`, `MESHOPS__…` variables).
pub async fn execute(args: &Args, load: crate::config::LoadOptions) -> Result<(), EvalError> {
    if args.max_cost_usd.is_some_and(|c| !c.is_finite() || c < 0.0) {
        return Err(EvalError::Run("--max-cost-usd must be a non-negative number".into()));
    }
    let spec =
        crate::config::MeshSpec::load(&load).map_err(|e| EvalError::Run(format!("configuration:\n{e}")))?;
    let mut opts = RunOptions::new(&args.dataset, &args.out);
    opts.variants = args.variants.clone();
    opts.repeats = args.repeats;
    opts.concurrency = args.concurrency;
    opts.max_cost_usd = args.max_cost_usd;
    if !args.metrics.is_empty() {
        opts.metrics = args.metrics.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
    }
    opts.target = args.target.clone();
    opts.progress = true;
    if let Some(path) = &args.evaluators {
        opts.evaluators = super::evaluators::EvaluatorSet::load(path)?;
    }
    opts.columns = super::evaluators::ColumnMap::from_args(&args.map)?;
    opts.judge_model = args.judge_model.clone();
    let t0 = std::time::Instant::now();
    let result = runner::run(spec, opts).await?;
    let s = &result.summary;
    let secs = result.rows_elapsed.as_secs_f64();
    println!(
        "{} rows: {} ok, {} failed, {} not run, {} reused; {} attempted in {:.2} s ({:.1} rows/s, start-up and reports excluded; {:.2} s in all)",
        s.counts.total,
        s.counts.ok,
        s.counts.failed,
        s.counts.not_run,
        s.counts.skipped,
        result.attempted,
        secs,
        result.attempted as f64 / secs.max(1e-9),
        t0.elapsed().as_secs_f64()
    );
    if s.cost.rows_with_unknown_cost > 0 {
        println!(
            "cost: ${:.6} known; unknown for {} rows (not counted as 0)",
            s.cost.known_usd, s.cost.rows_with_unknown_cost
        );
    } else {
        println!("cost: ${:.6}", s.cost.known_usd);
    }
    if args.max_cost_usd.is_some() && s.cost.rows_with_unknown_cost > 0 {
        println!("note: the cost cap counts known cost only; rows with unknown cost add nothing to it");
    }
    if s.cut_short {
        println!("cut short: the cost cap was reached before every row ran");
    }
    if let Some(j) = &s.judge {
        println!(
            "judge {} (profile {}): {} judgements, {} without a score, cost ${:.6}{}",
            j.model,
            j.profile,
            j.judgements,
            j.failures,
            j.cost.known_usd,
            if j.cost.rows_with_unknown_cost > 0 { " known (some unknown)" } else { "" }
        );
    }
    for (variant, v) in &s.variants {
        let mut parts = Vec::new();
        for m in [
            "ok",
            "f1",
            "rougeL",
            "hit_rate@5",
            "groundedness",
            "relevance",
            "coherence",
            "fluency",
            "similarity",
        ] {
            if let Some(x) = v.metrics.get(m).filter(|x| x.n > 0) {
                let failed = if x.failed > 0 { format!(" ({} failed)", x.failed) } else { String::new() };
                parts.push(format!("{m} {:.3}{failed}", x.mean));
            }
        }
        println!(
            "{variant}: {}; latency p50 {:.1} ms, p95 {:.1} ms",
            parts.join(", "),
            v.latency_ms.p50,
            v.latency_ms.p95
        );
    }
    if !s.metrics_unavailable.is_empty() {
        println!("metrics not available in this build: {}", s.metrics_unavailable.join(", "));
    }
    println!("wrote {} (run id {})", args.out.display(), s.run_id);
    if let Some(dir) = &args.publish {
        let p = super::publish::publish(&args.out, dir)?;
        if p.added {
            println!("published to {} and indexed in {}", p.dir.display(), dir.join("index.jsonl").display());
        } else {
            println!("already published: {}", p.dir.display());
        }
    }
    Ok(())
}
