//! `meshops eval run|score|compare`: the arguments, the calls into
//! `meshops::eval`, and what each prints. A failed gate of `compare` is an
//! error here (the process exits 1), after the comparison is printed.

use std::path::PathBuf;

use anyhow::Result;
use meshops::config::{LoadOptions, MeshSpec};
use meshops::eval::compare::{self, CompareOptions};
use meshops::eval::evaluators::{ColumnMap, EvaluatorSet};
use meshops::eval::runner::{self, RunOptions, RunResult};
use meshops::eval::score::{self, ScoreOptions};

/// `meshops eval …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Drive the mesh with a dataset and score the outputs.
    Run(RunArgs),
    /// Score an existing output dataset without running the mesh.
    Score(ScoreArgs),
    /// Compare two runs with paired statistics; exit non-zero when a gate fails.
    Compare(CompareArgs),
}

/// Arguments of `meshops eval run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
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
    /// (DIR/<run id>/) and add it to DIR/index.jsonl; or, as
    /// `mlflow+http://HOST:PORT`, log it to that MLflow tracking server
    /// (an experiment per dataset, a run per variant).
    #[arg(long, value_name = "DIR|mlflow+URL")]
    pub publish: Option<PathBuf>,
}

/// Arguments of `meshops eval score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// JSONL file with `id`, `response`, `ground_truth`, `retrieved_doc_ids`,
    /// `relevant_doc_ids`, ... per line.
    #[arg(long, value_name = "FILE.jsonl")]
    pub input: PathBuf,
    /// Metrics to compute, comma-separated or repeated (`--metrics f1,bleu
    /// --metrics ndcg@5`). Default: every metric whose fields appear in at
    /// least one input row (text metrics need response + ground_truth,
    /// hit_rate/mrr/ndcg need retrieved_doc_ids + relevant_doc_ids).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Output JSONL: one line per input row with `id` and one field per metric.
    #[arg(long, value_name = "FILE.jsonl")]
    pub out: PathBuf,
    /// Field renames, CANONICAL=FIELD (repeatable), e.g. `--map
    /// response=prediction --map ground_truth=answer`.
    #[arg(long = "map", value_name = "CANONICAL=FIELD")]
    pub map: Vec<String>,
    /// Evaluators file: its rule-based evaluators (contains, regex,
    /// json_schema) add one field each; its `[columns]` apply under `--map`.
    #[arg(long, value_name = "FILE")]
    pub evaluators: Option<PathBuf>,
    /// Dataset (JSONL) whose ground truth and gold ids fill in rows that
    /// lack them, joined by `id`. Default for an `eval run`'s
    /// `outputs.jsonl`: the dataset its `summary.json` names.
    #[arg(long, value_name = "FILE.jsonl")]
    pub dataset: Option<PathBuf>,
}

/// Arguments of `meshops eval compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Baseline: a run directory (with `scores.jsonl`) or a scores file.
    pub run_a: PathBuf,
    /// Candidate: a run directory or a scores file.
    pub run_b: PathBuf,
    /// Gates to judge (e.g. eval/gates.toml); none when omitted.
    #[arg(long)]
    pub gates: Option<PathBuf>,
    /// Also write the Markdown here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the comparison as an HTML page here (the differences
    /// with their intervals as a forest plot, and the gates).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Variant of RUN_A to use when it holds several.
    #[arg(long)]
    pub variant_a: Option<String>,
    /// Variant of RUN_B to use when it holds several.
    #[arg(long)]
    pub variant_b: Option<String>,
    /// A results folder (see `eval run --publish`): RUN_A and RUN_B may
    /// then be run ids from its index.jsonl.
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
}

/// `meshops eval run`: runs the dataset, prints the outcome, publishes.
/// `load` says where the mesh configuration comes from (the CLI's `--root`
/// and `--config`, `MESHOPS_ENV`, `MESHOPS__…` variables).
pub async fn run(args: &RunArgs, load: LoadOptions) -> Result<()> {
    // Checked before the configuration loads, so a bad flag is named first.
    runner::options::check_max_cost(args.max_cost_usd)?;
    let spec = MeshSpec::load(&load).map_err(|e| anyhow::anyhow!("configuration:\n{e}"))?;
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
        opts.evaluators = EvaluatorSet::load(path)?;
    }
    opts.columns = ColumnMap::from_args(&args.map)?;
    opts.judge_model = args.judge_model.clone();
    let t0 = std::time::Instant::now();
    let listen = spec.settings.gateway.listen.clone();
    let result =
        runner::run(spec, opts).await.map_err(|e| super::store_error(e.into(), &listen, "eval run"))?;
    print_run(&result, args, t0.elapsed());
    if let Some(target) =
        args.publish.as_deref().and_then(|p| p.to_str()).filter(|t| meshops::eval::mlflow::is_mlflow(t))
    {
        let p = meshops::eval::mlflow::publish(target, &args.out).await?;
        for (variant, run_id, logged) in &p.runs {
            let what = if *logged { "logged" } else { "already logged" };
            println!("MLflow: {variant} {what} as run {run_id} (experiment {})", p.experiment_id);
        }
    } else if let Some(dir) = &args.publish {
        let p = meshops::eval::publish::publish(&args.out, dir)?;
        if p.added {
            println!("published to {} and indexed in {}", p.dir.display(), dir.join("index.jsonl").display());
        } else {
            println!("already published: {}", p.dir.display());
        }
    }
    Ok(())
}

/// The run's outcome: rows, throughput, cost, judges, headline metrics
/// per variant, where it was written.
fn print_run(result: &RunResult, args: &RunArgs, elapsed: std::time::Duration) {
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
        elapsed.as_secs_f64()
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
}

/// `meshops eval score`: scores the file, prints the summary.
pub async fn score(args: &ScoreArgs) -> Result<()> {
    let opts = ScoreOptions {
        input: args.input.clone(),
        metrics: args.metrics.clone(),
        out: args.out.clone(),
        map: args.map.clone(),
        evaluators: args.evaluators.clone(),
        dataset: args.dataset.clone(),
    };
    let summary = score::run(opts).await?;
    print!("{summary}");
    Ok(())
}

/// `meshops eval compare`: prints the Markdown, writes `--out`, and fails
/// (exit 1) naming each failed gate.
pub fn compare(args: &CompareArgs) -> Result<()> {
    let opts = CompareOptions {
        run_a: args.run_a.clone(),
        run_b: args.run_b.clone(),
        gates: args.gates.clone(),
        // Written below, after the Markdown is printed, so a failed write
        // still shows the comparison.
        out: None,
        variant_a: args.variant_a.clone(),
        variant_b: args.variant_b.clone(),
        results: args.results.clone(),
    };
    let c = compare::run(&opts)?;
    println!("{}", c.markdown);
    if let Some(out) = &args.out {
        compare::write_markdown(&c, out)?;
    }
    if let Some(page) = &args.html {
        let name = |p: &std::path::Path, v: &Option<String>| {
            let run = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            v.as_ref().map_or(run.clone(), |v| format!("{run} ({v})"))
        };
        let html = meshops::eval::report::page::comparison(
            &c,
            &name(&args.run_a, &args.variant_a),
            &name(&args.run_b, &args.variant_b),
        );
        anyhow::Context::with_context(std::fs::write(page, html), || format!("writing {}", page.display()))?;
        println!("wrote {}", page.display());
    }
    c.gate_result()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScoreArgs,
    }

    #[test]
    fn metrics_flag_accepts_commas_and_repeats() {
        let cli = Cli::try_parse_from([
            "x",
            "--input",
            "a.jsonl",
            "--metrics",
            "f1,bleu",
            "--metrics",
            "ndcg@5",
            "--out",
            "b.jsonl",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.args.metrics, vec!["f1", "bleu", "ndcg@5"]);
        assert!(Cli::try_parse_from(["x", "--input", "a.jsonl"]).is_err(), "--out is required");
    }
}
