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
//!
//! - [`options`]: what a run is asked to do and what it reports back.
//! - [`resume`]: the configuration hash, what the run folder holds, the plan.
//! - [`judging`]: the run's judges and what each record still needs.
//! - [`driver`]: the mesh or the gateway that answers rows.
//! - [`work`]: rows in flight, the cost cap, the appended outputs.

pub mod driver;
pub mod judging;
pub mod options;
pub mod resume;
pub mod work;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::MeshSpec;
use crate::eval::EvalError;
use crate::eval::dataset::Row;
use crate::eval::records::rfc3339;
use crate::eval::report::{self, Context};
use judging::Judging;
use resume::{CostMeter, Plan, Stored};

// The paths callers and tests name (`runner::RunOptions`,
// `runner::OutputRecord`, …).
pub use crate::eval::dataset::read_dataset;
pub use crate::eval::records::{JudgementRecord, Key, OutputRecord, read_judgements, read_outputs};
pub use crate::eval::report::ScoringSetup;
pub use options::{BASE_VARIANT, DEFAULT_METRICS, RunOptions, RunResult};
pub use resume::config_hash;

/// Runs `opts.dataset` through the mesh built from `spec` (or through
/// `opts.target`), resuming what `opts.out` already holds, judges the
/// answers, and writes the outputs, judgements, scores, summary and
/// reports there.
pub async fn run(spec: MeshSpec, opts: RunOptions) -> Result<RunResult, EvalError> {
    let started_at = SystemTime::now();
    options::check_max_cost(opts.max_cost_usd)?;
    if opts.repeats == 0 {
        return Err(EvalError::Run("--repeats must be at least 1".into()));
    }
    options::check_metrics(&opts.metrics, &opts.evaluators)?;
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
    let judging = Judging::for_run(&spec, &opts)?.map(Arc::new);

    let hash = config_hash(&spec);
    std::fs::create_dir_all(&opts.out)
        .map_err(|source| EvalError::Io { path: opts.out.display().to_string(), source })?;
    let outputs_path = opts.out.join("outputs.jsonl");
    let judgements_path = opts.out.join("judgements.jsonl");
    let mut stored = Stored::load(&outputs_path, &judgements_path, &hash)?;
    let meter = Arc::new(CostMeter::default());
    let Plan { planned, skipped, work } =
        Plan::new(&rows, &variants, opts.repeats, &stored, judging.as_deref(), &meter);

    let mut attempted = 0usize;
    let mut cut_short = false;
    let mut rows_elapsed = Duration::ZERO;
    if !work.is_empty() && !opts.max_cost_usd.is_some_and(|cap| meter.usd() >= cap) {
        let needs_driver = work.iter().any(|w| w.existing.is_none());
        let driver =
            if needs_driver { Some(Arc::new(driver::start_driver(&spec, &opts).await?)) } else { None };
        let workers = work::Workers {
            driver,
            judging: judging.clone(),
            meter: meter.clone(),
            cap: opts.max_cost_usd,
            config_hash: hash.clone(),
            timeout: Duration::from_millis(spec.settings.gateway.request_timeout_ms.max(1)),
            concurrency: opts.concurrency,
            progress: opts.progress,
            outputs_path: &outputs_path,
            judgements_path: &judgements_path,
        };
        let done = workers.run(work, &mut stored).await?;
        (attempted, cut_short, rows_elapsed) = (done.attempted, done.cut_short, done.rows_elapsed);
    } else if !work.is_empty() {
        cut_short = true;
    }

    let planned: Vec<_> = planned.into_iter().map(|(k, _)| k).collect();
    let rows_by_id: HashMap<&str, &Row> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let ctx = Context {
        config_hash: hash,
        dataset: opts.dataset.display().to_string(),
        dataset_hash,
        started_at: rfc3339(started_at),
        finished_at: rfc3339(SystemTime::now()),
        cut_short,
        max_cost_usd: opts.max_cost_usd,
        skipped,
        variants,
        target: opts.target.clone(),
        columns: columns.0.clone(),
        agents: if opts.target.is_none() { report::AgentSummary::of(&spec) } else { Vec::new() },
        setup: report::RunSetup::here(opts.concurrency, opts.repeats),
    };
    let setup = ScoringSetup {
        metrics: opts.metrics.clone(),
        evaluators: opts.evaluators.clone(),
        model_evals: judging.as_ref().map(|j| j.evals.clone()).unwrap_or_default(),
        judge_model: judging.as_ref().map(|j| j.judge.model().to_string()),
        judge_profile: judging.as_ref().map(|j| j.judge.profile.clone()),
        judge_versions: judging.as_ref().map(|j| j.versions()).unwrap_or_else(BTreeMap::new),
    };
    let summary = report::write_all(
        &opts.out,
        &planned,
        &stored.latest,
        &stored.judgements,
        &rows_by_id,
        &setup,
        &ctx,
    )?;
    Ok(RunResult { summary, attempted, rows_elapsed })
}
