//! Scores, summary and reports of a run: `scores.jsonl` ([`scores`]),
//! `summary.json` ([`summary`]), `report.md` and, with several variants,
//! `comparison.md` ([`markdown`]), and `report.html` with inline-SVG
//! histograms ([`html`]).
//!
//! Everything here is rebuilt from the latest record per planned key, so a
//! resumed run reports on all of its rows, not only the ones it just ran.

pub mod html;
pub mod markdown;
pub mod page;
pub mod scores;
pub mod summary;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::eval::EvalError;
use crate::eval::dataset::Row;
use crate::eval::records::{JudgementRecord, Key, OutputRecord};

// The paths callers and tests name (`report::Summary`, `report::score`, …).
pub use crate::eval::evaluators::OWN_METRICS;
pub use html::{histogram_svg, scale_histogram_svg};
pub use scores::{ScoreRecord, ScoringSetup, evaluator_infos, score};
pub use summary::{
    AgentSummary, Cost, Counts, JudgeSummary, Latency, MetricSummary, RunSetup, Summary, VariantSummary,
    summarize_variant,
};

/// What the runner knows that the records do not.
#[derive(Debug, Clone)]
pub struct Context {
    /// Hash of what decides the answers.
    pub config_hash: String,
    /// The dataset file as given, and a hash of its bytes.
    pub dataset: String,
    pub dataset_hash: String,
    /// When the invocation started and finished (RFC 3339, UTC).
    pub started_at: String,
    pub finished_at: String,
    /// True when the cost cap stopped scheduling before every row ran.
    pub cut_short: bool,
    /// The cap the invocation ran under.
    pub max_cost_usd: Option<f64>,
    /// Rows done by an earlier invocation and not run again.
    pub skipped: usize,
    /// The variants planned, in order (each gets a summary, even empty).
    pub variants: Vec<String>,
    /// The deployed gateway driven with `--target`.
    pub target: Option<String>,
    /// Canonical field ← dataset field renames applied.
    pub columns: BTreeMap<String, String>,
    /// The agents of the mesh run in process (none with `--target`).
    pub agents: Vec<summary::AgentSummary>,
    /// How the invocation ran (concurrency, repeats, machine, build).
    pub setup: summary::RunSetup,
}

/// Writes `scores.jsonl`, `summary.json`, `report.md`, `report.html` and
/// (several variants) `comparison.md` into `out`.
pub fn write_all(
    out: &Path,
    planned: &[Key],
    latest: &BTreeMap<Key, OutputRecord>,
    judgements: &BTreeMap<(Key, String), JudgementRecord>,
    rows: &HashMap<&str, &Row>,
    setup: &ScoringSetup,
    ctx: &Context,
) -> Result<Summary, EvalError> {
    let infos = evaluator_infos(setup);
    let mut unavailable = Vec::new();
    let mut scored: Vec<(ScoreRecord, &OutputRecord)> = Vec::new();
    let mut not_run: BTreeMap<&str, usize> = BTreeMap::new();
    for key in planned {
        match latest.get(key) {
            Some(rec) => {
                let row = rows.get(rec.id.as_str()).copied();
                scored.push((score(rec, row, setup, &infos, judgements, &mut unavailable), rec));
            }
            None => *not_run.entry(key.variant.as_str()).or_default() += 1,
        }
    }
    let judge = summary::judge_summary(setup, planned, latest, judgements);
    let mut text = String::new();
    for (s, _) in &scored {
        text.push_str(&serde_json::to_string(s).map_err(EvalError::Encode)?);
        text.push('\n');
    }
    write(&out.join("scores.jsonl"), &text)?;
    let stem =
        Path::new(&ctx.dataset).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let run_id = format!(
        "{stem}-{}-{}",
        &ctx.config_hash.get(..8).unwrap_or(&ctx.config_hash),
        &format!("{:016x}", crate::text::fnv1a64(text.as_bytes()))[..8]
    );

    let mut variants = BTreeMap::new();
    for v in &ctx.variants {
        let s: Vec<&ScoreRecord> = scored.iter().filter(|(s, _)| &s.variant == v).map(|(s, _)| s).collect();
        let r: Vec<&OutputRecord> = scored.iter().filter(|(s, _)| &s.variant == v).map(|(_, r)| *r).collect();
        variants.insert(
            v.clone(),
            summarize_variant(&s, &r, not_run.get(v.as_str()).copied().unwrap_or(0), &infos),
        );
    }
    let (counts, cost) = summary::totals(&variants, ctx.skipped);
    let evaluators = infos.into_iter().filter(|(name, _)| !unavailable.contains(name)).collect();
    let summary = Summary {
        meshops_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: ctx.dataset.clone(),
        dataset_hash: ctx.dataset_hash.clone(),
        config_hash: ctx.config_hash.clone(),
        target: ctx.target.clone(),
        started_at: ctx.started_at.clone(),
        finished_at: ctx.finished_at.clone(),
        cut_short: ctx.cut_short,
        max_cost_usd: ctx.max_cost_usd,
        counts,
        cost,
        metrics_unavailable: unavailable,
        variants,
        run_id,
        evaluators,
        judge_model: setup.judge_model.clone(),
        judge,
        columns: ctx.columns.clone(),
        agents: ctx.agents.clone(),
        setup: Some(ctx.setup.clone()),
    };
    let json = serde_json::to_string_pretty(&summary).map_err(EvalError::Encode)?;
    write(&out.join("summary.json"), &format!("{json}\n"))?;
    let md = markdown::markdown(&summary, &scored);
    write(&out.join("report.md"), &md)?;
    write(&out.join("report.html"), &page::report(&md, &summary, &scored, rows))?;
    if summary.variants.len() > 1 {
        write(&out.join("comparison.md"), &markdown::comparison(&summary))?;
    }
    Ok(summary)
}

fn write(path: &Path, text: &str) -> Result<(), EvalError> {
    std::fs::write(path, text).map_err(|source| EvalError::Io { path: path.display().to_string(), source })
}
