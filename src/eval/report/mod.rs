//! Scores, summary and reports of a run: `scores.jsonl`, `summary.json`,
//! `report.md`, `report.html` (with an inline-SVG latency histogram) and,
//! with several variants, `comparison.md`.
//!
//! Everything here is rebuilt from the latest record per planned key, so a
//! resumed run reports on all of its rows, not only the ones it just ran.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EvalError;
use super::dataset::Row;
use super::evaluators::{self, EvaluatorInfo};
use super::metrics::{ScoreInput, compute};
use super::runner::{JudgementRecord, Key, OutputRecord, ScoringSetup};
use super::stats;

/// Metrics the harness computes itself, always present on successful rows.
pub const OWN_METRICS: &[&str] =
    &["ok", "latency_ms", "cost_usd", "input_tokens", "output_tokens", "intent_match"];

/// One line of `scores.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub id: String,
    pub repeat: u32,
    pub variant: String,
    pub ok: bool,
    pub error: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    /// Pass/fail of each metric that has a threshold (see `summary.json`'s
    /// `evaluators`).
    #[serde(default)]
    pub passed: BTreeMap<String, bool>,
    /// Evaluators that could not score this row (a judge that answered
    /// garbage or failed), with why. Such a metric has no value here and
    /// counts as failed, never as 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, String>,
    /// The judges' and custom evaluators' reasons.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
}

/// Aggregate of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Mean over the `n` rows with a value (0 when `n` is 0).
    pub mean: f64,
    /// Standard deviation of the per-repeat means (0 with one repeat).
    pub std_across_repeats: f64,
    /// Passing rows over `n + failed` (an evaluator failure never passes).
    pub pass_rate: Option<f64>,
    pub n: usize,
    /// Rows whose evaluator failed (no value).
    #[serde(default)]
    pub failed: usize,
}

/// p50/p95/p99 in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub n: usize,
}

/// Row counts; `ok + failed + not_run == total`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub ok: usize,
    pub failed: usize,
    /// Done by an earlier invocation and not run again.
    pub skipped: usize,
    /// Never attempted (the run was cut short).
    pub not_run: usize,
}

/// Cost of the rows; unknown cost is never counted as 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Sum over rows whose cost is known.
    pub known_usd: f64,
    pub rows_with_known_cost: usize,
    /// Rows (failed ones included) whose cost is unknown.
    pub rows_with_unknown_cost: usize,
}

/// The summary of one variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    pub counts: Counts,
    pub metrics: BTreeMap<String, MetricSummary>,
    pub latency_ms: Latency,
    pub agent_latency_ms: BTreeMap<String, Latency>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Cost,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub meshops_version: String,
    pub dataset: String,
    pub dataset_hash: String,
    pub config_hash: String,
    pub target: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    /// True when the cost cap stopped scheduling before every row ran.
    pub cut_short: bool,
    pub max_cost_usd: Option<f64>,
    pub counts: Counts,
    pub cost: Cost,
    /// Requested metrics that `metrics::compute` does not know (yet).
    pub metrics_unavailable: Vec<String>,
    pub variants: BTreeMap<String, VariantSummary>,
    /// Identifies this run's results (dataset, config and a hash of
    /// `scores.jsonl`); the same results always get the same id.
    #[serde(default)]
    pub run_id: String,
    /// Every metric's kind, version, scale and threshold.
    #[serde(default)]
    pub evaluators: BTreeMap<String, EvaluatorInfo>,
    /// The judge's model name (`offline-heuristic-judge` for the offline
    /// judge), when the run has judges.
    #[serde(default)]
    pub judge_model: Option<String>,
    #[serde(default)]
    pub judge: Option<JudgeSummary>,
    /// Canonical field ← dataset field renames applied to the dataset.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

/// What the judges did, over the planned rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeSummary {
    pub profile: String,
    pub model: String,
    /// Judgements behind the scores (latest per row and evaluator).
    pub judgements: usize,
    /// Of those, the ones without a score (garbage or a failed call).
    pub failures: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Judge cost; counted toward `--max-cost-usd` with the app's.
    pub cost: Cost,
}

/// What the runner knows that the records do not.
#[derive(Debug, Clone)]
pub struct Context {
    pub config_hash: String,
    pub dataset: String,
    pub dataset_hash: String,
    pub started_at: String,
    pub finished_at: String,
    pub cut_short: bool,
    pub max_cost_usd: Option<f64>,
    pub skipped: usize,
    pub variants: Vec<String>,
    pub target: Option<String>,
    pub columns: BTreeMap<String, String>,
}

/// The evaluator table of a run: every metric it may write, with kind,
/// version, scale and threshold.
pub fn evaluator_infos(setup: &ScoringSetup) -> BTreeMap<String, EvaluatorInfo> {
    let version = |name: &str| setup.judge_versions.get(name).cloned().unwrap_or_else(|| "1".into());
    let mut names: Vec<String> = OWN_METRICS.iter().map(|s| s.to_string()).collect();
    names.extend(setup.metrics.iter().cloned());
    names.extend(setup.evaluators.evaluators.iter().map(|e| e.name.clone()));
    names
        .into_iter()
        .filter_map(|n| evaluators::info(&n, &setup.evaluators, &version).map(|i| (n, i)))
        .collect()
}

/// Scores one record against its dataset row. Failed rows are scored with
/// an empty answer and no retrieved docs, so they count as misses in every
/// quality metric instead of leaving the denominator; judges give a failed
/// row their scale's minimum without a call, custom rules give it 0. A judge whose answer was
/// garbage leaves a failure, not a value.
pub fn score(
    rec: &OutputRecord,
    row: Option<&Row>,
    setup: &ScoringSetup,
    infos: &BTreeMap<String, EvaluatorInfo>,
    judgements: &BTreeMap<(Key, String), JudgementRecord>,
    unavailable: &mut Vec<String>,
) -> ScoreRecord {
    let mut m = BTreeMap::new();
    let mut failures = BTreeMap::new();
    let mut reasons = BTreeMap::new();
    m.insert("ok".to_string(), if rec.ok() { 1.0 } else { 0.0 });
    m.insert("latency_ms".to_string(), rec.latency_ms);
    if let Some(u) = &rec.usage {
        if let Some(c) = u.cost_usd {
            m.insert("cost_usd".to_string(), c);
        }
        m.insert("input_tokens".to_string(), u.input_tokens as f64);
        m.insert("output_tokens".to_string(), u.output_tokens as f64);
    }
    if let Some(want) = row.and_then(|r| r.extra.get("intent")).and_then(|v| v.as_str()) {
        let hit = rec.intent.as_deref() == Some(want);
        m.insert("intent_match".to_string(), if hit { 1.0 } else { 0.0 });
    }
    let response = rec.answer.clone().unwrap_or_default();
    let input = ScoreInput {
        query: Some(rec.query.clone()),
        response: Some(response.clone()),
        ground_truth: row.and_then(|r| r.ground_truth.clone()),
        context: row.and_then(|r| r.context.clone()),
        retrieved_doc_ids: Some(rec.retrieved_doc_ids.clone()),
        relevant_doc_ids: row.and_then(|r| r.relevant_doc_ids.clone()),
    };
    for name in &setup.metrics {
        // The harness's own metrics are always there; asking for them is
        // fine. Judges are scored below.
        if unavailable.contains(name)
            || OWN_METRICS.contains(&name.as_str())
            || super::judge::is_judge(name)
            || setup.evaluators.get(name).is_some()
        {
            continue;
        }
        match compute(name, &input) {
            Ok(Some(v)) if v.is_finite() => {
                m.insert(name.clone(), v);
            }
            Ok(_) => {}
            Err(EvalError::UnknownMetric { .. }) => unavailable.push(name.clone()),
            Err(e) => tracing::warn!(metric = %name, row = %rec.id, error = %e, "metric failed"),
        }
    }
    for c in &setup.evaluators.evaluators {
        if c.rubric().is_some() {
            continue;
        }
        // A failed row has no answer: it fails every rule, even one that
        // an empty answer would pass (`must_match = false`).
        let scored = if rec.ok() { c.score(&response) } else { Some((0.0, "the row failed".to_string())) };
        if let Some((v, reason)) = scored {
            m.insert(c.name.clone(), v);
            reasons.insert(c.name.clone(), reason);
        }
    }
    let judge_in = super::runner::judge_input(rec, row);
    // What a failed row would have given the judges, to know which apply.
    let as_failed = super::judge::JudgeInput {
        query: rec.query.clone(),
        response: String::new(),
        context: row.and_then(|r| r.context.clone()),
        ground_truth: row.and_then(|r| r.ground_truth.clone()),
    };
    for me in &setup.model_evals {
        let Some(input) = &judge_in else {
            if me.applies(&as_failed) {
                m.insert(me.name.clone(), super::judge::JUDGE_SCALE.0);
                reasons.insert(
                    me.name.clone(),
                    "the row failed: scored as the scale's minimum, no judge call".into(),
                );
            }
            continue;
        };
        if !me.applies(input) {
            continue;
        }
        let hash = super::judge::input_hash(input);
        let model = setup.judge_model.as_deref().unwrap_or_default();
        match judgements.get(&(rec.key(), me.name.clone())).filter(|j| j.matches(me, model, &hash)) {
            Some(j) => match (j.score, &j.error) {
                (Some(v), None) => {
                    m.insert(me.name.clone(), v);
                    reasons.insert(me.name.clone(), j.reason.clone().unwrap_or_default());
                }
                (_, e) => {
                    failures.insert(
                        me.name.clone(),
                        e.clone().unwrap_or_else(|| "the judge gave no score".into()),
                    );
                }
            },
            None => {
                failures.insert(
                    me.name.clone(),
                    "not judged: the run stopped at the cost cap before the judge ran".into(),
                );
            }
        }
    }
    let passed = m
        .iter()
        .filter_map(|(k, v)| infos.get(k).and_then(|i| i.passes(*v)).map(|p| (k.clone(), p)))
        .collect();
    ScoreRecord {
        id: rec.id.clone(),
        repeat: rec.repeat,
        variant: rec.variant.clone(),
        ok: rec.ok(),
        error: rec.error.clone(),
        metrics: m,
        passed,
        failures,
        reasons,
    }
}

fn latency(xs: &[f64]) -> Latency {
    Latency {
        p50: stats::percentile(xs, 50.0).unwrap_or(0.0),
        p95: stats::percentile(xs, 95.0).unwrap_or(0.0),
        p99: stats::percentile(xs, 99.0).unwrap_or(0.0),
        n: xs.len(),
    }
}

/// Aggregates scores (and records, for per-agent latency) of one variant.
pub fn summarize_variant(
    scores: &[&ScoreRecord],
    records: &[&OutputRecord],
    not_run: usize,
    infos: &BTreeMap<String, EvaluatorInfo>,
) -> VariantSummary {
    let mut s = VariantSummary::default();
    s.counts.total = scores.len() + not_run;
    s.counts.ok = scores.iter().filter(|r| r.ok).count();
    s.counts.failed = scores.len() - s.counts.ok;
    s.counts.not_run = not_run;
    let mut names: Vec<&String> =
        scores.iter().flat_map(|r| r.metrics.keys().chain(r.failures.keys())).collect();
    names.sort();
    names.dedup();
    for name in names {
        let vals: Vec<(u32, f64)> =
            scores.iter().filter_map(|r| r.metrics.get(name).map(|v| (r.repeat, *v))).collect();
        let failed = scores.iter().filter(|r| r.failures.contains_key(name)).count();
        let all: Vec<f64> = vals.iter().map(|(_, v)| *v).collect();
        let mut by_repeat: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for (rep, v) in &vals {
            by_repeat.entry(*rep).or_default().push(*v);
        }
        let repeat_means: Vec<f64> = by_repeat.values().filter_map(|v| stats::mean(v)).collect();
        let pass_rate = infos.get(name).and_then(|i| i.threshold).map(|_| {
            let passes = scores.iter().filter(|r| r.passed.get(name) == Some(&true)).count();
            passes as f64 / (all.len() + failed).max(1) as f64
        });
        s.metrics.insert(
            name.clone(),
            MetricSummary {
                mean: stats::mean(&all).unwrap_or(0.0),
                std_across_repeats: stats::std_dev(&repeat_means).unwrap_or(0.0),
                pass_rate,
                n: all.len(),
                failed,
            },
        );
    }
    let lat: Vec<f64> = records.iter().map(|r| r.latency_ms).collect();
    s.latency_ms = latency(&lat);
    let mut per_agent: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in records {
        for st in &r.steps {
            per_agent.entry(st.agent.clone()).or_default().push(st.latency_ms);
        }
    }
    s.agent_latency_ms = per_agent.into_iter().map(|(a, v)| (a, latency(&v))).collect();
    for r in records {
        match r.usage.as_ref() {
            Some(u) => {
                s.input_tokens += u.input_tokens;
                s.output_tokens += u.output_tokens;
                match u.cost_usd {
                    Some(c) => {
                        s.cost.known_usd += c;
                        s.cost.rows_with_known_cost += 1;
                    }
                    None => s.cost.rows_with_unknown_cost += 1,
                }
            }
            None => s.cost.rows_with_unknown_cost += 1,
        }
    }
    s
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
    let mut judge = setup.judge_model.as_ref().map(|model| JudgeSummary {
        profile: setup.judge_profile.clone().unwrap_or_default(),
        model: model.clone(),
        ..JudgeSummary::default()
    });
    for key in planned {
        match latest.get(key) {
            Some(rec) => {
                let row = rows.get(rec.id.as_str()).copied();
                scored.push((score(rec, row, setup, &infos, judgements, &mut unavailable), rec));
                if let Some(js) = judge.as_mut() {
                    for me in &setup.model_evals {
                        let Some(j) = judgements.get(&(key.clone(), me.name.clone())) else { continue };
                        if !rec.ok()
                            || j.version != me.version
                            || Some(&j.judge_model) != setup.judge_model.as_ref()
                        {
                            continue;
                        }
                        js.judgements += 1;
                        js.failures += usize::from(j.score.is_none());
                        js.input_tokens += j.input_tokens;
                        js.output_tokens += j.output_tokens;
                        match j.cost_usd {
                            Some(c) => {
                                js.cost.known_usd += c;
                                js.cost.rows_with_known_cost += 1;
                            }
                            None => js.cost.rows_with_unknown_cost += 1,
                        }
                    }
                }
            }
            None => *not_run.entry(key.variant.as_str()).or_default() += 1,
        }
    }
    let mut text = String::new();
    for (s, _) in &scored {
        text.push_str(&serde_json::to_string(s).map_err(|e| EvalError::Run(e.to_string()))?);
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
    let mut counts = Counts { skipped: ctx.skipped, ..Counts::default() };
    let mut cost = Cost::default();
    for v in variants.values() {
        counts.total += v.counts.total;
        counts.ok += v.counts.ok;
        counts.failed += v.counts.failed;
        counts.not_run += v.counts.not_run;
        cost.known_usd += v.cost.known_usd;
        cost.rows_with_known_cost += v.cost.rows_with_known_cost;
        cost.rows_with_unknown_cost += v.cost.rows_with_unknown_cost;
    }
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
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| EvalError::Run(e.to_string()))?;
    write(&out.join("summary.json"), &format!("{json}\n"))?;
    let md = markdown(&summary, &scored);
    write(&out.join("report.md"), &md)?;
    write(&out.join("report.html"), &html(&md, &summary, &scored))?;
    if summary.variants.len() > 1 {
        write(&out.join("comparison.md"), &comparison(&summary))?;
    }
    Ok(summary)
}

fn write(path: &Path, text: &str) -> Result<(), EvalError> {
    std::fs::write(path, text).map_err(|source| EvalError::Io { path: path.display().to_string(), source })
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 { format!("{v:.1}") } else { format!("{v:.4}") }
}

fn cost_text(c: &Cost) -> String {
    if c.rows_with_unknown_cost == 0 {
        format!("${:.6}", c.known_usd)
    } else {
        format!(
            "${:.6} known over {} rows; unknown for {} rows (not counted as 0)",
            c.known_usd, c.rows_with_known_cost, c.rows_with_unknown_cost
        )
    }
}

/// Fits text into a Markdown table cell: shortened, pipes escaped, one
/// line.
fn cell(s: &str, max: usize) -> String {
    let mut t: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        t.push('…');
    }
    t.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn markdown(s: &Summary, scored: &[(ScoreRecord, &OutputRecord)]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Eval run: `{}`\n", s.dataset);
    let _ = writeln!(
        md,
        "meshops {} · config `{}` · dataset `{}` · {} → {}\n",
        s.meshops_version, s.config_hash, s.dataset_hash, s.started_at, s.finished_at
    );
    let c = &s.counts;
    let _ = writeln!(
        md,
        "Rows: {} total, {} ok, {} failed, {} not run ({} reused from earlier runs). Cost: {}.\n",
        c.total,
        c.ok,
        c.failed,
        c.not_run,
        c.skipped,
        cost_text(&s.cost)
    );
    if s.cut_short {
        let _ = writeln!(
            md,
            "**Cut short:** the cost cap (${}) was reached; {} rows were not run.\n",
            s.max_cost_usd.unwrap_or(0.0),
            c.not_run
        );
    }
    if !s.metrics_unavailable.is_empty() {
        let _ = writeln!(md, "Metrics not available in this build: {}.\n", s.metrics_unavailable.join(", "));
    }
    if let Some(j) = &s.judge {
        let _ = writeln!(
            md,
            "Judge: `{}` (profile `{}`): {} judgements, {} without a score; {} tokens in, {} out; cost {}.\n",
            j.model,
            j.profile,
            j.judgements,
            j.failures,
            j.input_tokens,
            j.output_tokens,
            cost_text(&j.cost)
        );
    }
    for (name, v) in &s.variants {
        let _ = writeln!(md, "## Variant `{name}`\n");
        let _ = writeln!(
            md,
            "| metric | kind | mean | std (repeats) | threshold | pass rate | n | failed |\n|---|---|---|---|---|---|---|---|"
        );
        for (m, ms) in &v.metrics {
            let pass = ms.pass_rate.map(|p| format!("{:.1} %", p * 100.0)).unwrap_or_else(|| "–".into());
            let info = s.evaluators.get(m);
            let kind = info.map(|i| i.kind.as_str()).unwrap_or("–");
            let threshold = info
                .and_then(|i| {
                    i.threshold.map(|t| format!("{} {t}", if i.higher_is_better { "≥" } else { "≤" }))
                })
                .unwrap_or_else(|| "–".into());
            let mean = if ms.n == 0 { "–".to_string() } else { fmt_num(ms.mean) };
            let _ = writeln!(
                md,
                "| {m} | {kind} | {mean} | {} | {threshold} | {pass} | {} | {} |",
                fmt_num(ms.std_across_repeats),
                ms.n,
                ms.failed
            );
        }
        let _ = writeln!(
            md,
            "\nLatency (ms): p50 {:.1}, p95 {:.1}, p99 {:.1}. Tokens: {} in, {} out. Cost: {}.\n",
            v.latency_ms.p50,
            v.latency_ms.p95,
            v.latency_ms.p99,
            v.input_tokens,
            v.output_tokens,
            cost_text(&v.cost)
        );
        if !v.agent_latency_ms.is_empty() {
            let _ = writeln!(md, "| agent | p50 ms | p95 ms | p99 ms | steps |\n|---|---|---|---|---|");
            for (a, l) in &v.agent_latency_ms {
                let _ = writeln!(md, "| {a} | {:.2} | {:.2} | {:.2} | {} |", l.p50, l.p95, l.p99, l.n);
            }
            md.push('\n');
        }
        let _ = writeln!(md, "### Worst rows\n");
        let _ = writeln!(
            md,
            "| id | repeat | ok | key metric | answer or error | judges below threshold (score: reason) |\n|---|---|---|---|---|---|"
        );
        for (sr, rec) in worst(scored, name, 10) {
            let judged = judge_notes(s, sr);
            let key = quality_key(sr);
            let val = key.map(|(k, v)| format!("{k} = {}", fmt_num(v))).unwrap_or_else(|| "–".into());
            let text = rec
                .error
                .as_deref()
                .map(|e| format!("error: {e}"))
                .or_else(|| rec.answer.clone())
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {val} | {} | {} |",
                cell(&sr.id, 40),
                sr.repeat,
                sr.ok,
                cell(&text, 200),
                cell(&judged, 400)
            );
        }
        md.push('\n');
    }
    md
}

/// The judge-scored metrics (built-in judges and rubrics) of a run.
fn judged_metrics(s: &Summary) -> Vec<&str> {
    s.evaluators
        .iter()
        .filter(|(_, i)| i.kind == "judge" || i.kind == "llm_rubric")
        .map(|(n, _)| n.as_str())
        .collect()
}

/// A row's judge scores below their threshold and judge failures, with
/// reasons, for the worst-rows table.
fn judge_notes(s: &Summary, sr: &ScoreRecord) -> String {
    let mut notes = Vec::new();
    for name in judged_metrics(s) {
        if let Some(e) = sr.failures.get(name) {
            notes.push(format!("{name}: failed ({e})"));
        } else if let Some(v) = sr.metrics.get(name) {
            if sr.passed.get(name) == Some(&false) {
                let reason = sr.reasons.get(name).map(String::as_str).unwrap_or("");
                notes.push(format!("{name} {v}: {reason}"));
            }
        }
    }
    if notes.is_empty() { "–".into() } else { notes.join("; ") }
}

/// The quality metric a row is ranked by: the first standard text metric
/// present, else intent match.
fn quality_key(s: &ScoreRecord) -> Option<(&str, f64)> {
    ["f1", "rougeL", "exact_match", "intent_match"].iter().find_map(|k| s.metrics.get(*k).map(|v| (*k, *v)))
}

/// Failed rows first, then the lowest quality, then the slowest.
fn worst<'a>(
    scored: &'a [(ScoreRecord, &'a OutputRecord)],
    variant: &str,
    n: usize,
) -> Vec<&'a (ScoreRecord, &'a OutputRecord)> {
    let mut v: Vec<_> = scored.iter().filter(|(s, _)| s.variant == variant).collect();
    v.sort_by(|(a, ra), (b, rb)| {
        a.ok.cmp(&b.ok)
            .then_with(|| {
                let qa = quality_key(a).map(|x| x.1).unwrap_or(1.0);
                let qb = quality_key(b).map(|x| x.1).unwrap_or(1.0);
                qa.total_cmp(&qb)
            })
            .then_with(|| rb.latency_ms.total_cmp(&ra.latency_ms))
    });
    v.truncate(n);
    v
}

/// The Markdown report, escaped, inside `<pre>` plus an
/// inline-SVG histogram of end-to-end latency, so the file needs nothing
/// else to open.
fn html(md: &str, s: &Summary, scored: &[(ScoreRecord, &OutputRecord)]) -> String {
    let lat: Vec<f64> = scored.iter().map(|(_, r)| r.latency_ms).collect();
    let mut h = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>meshops eval report</title>\
         <style>body{font-family:sans-serif;margin:2em}pre{white-space:pre-wrap}</style></head><body>\n",
    );
    h.push_str("<h2>End-to-end latency</h2>\n");
    h.push_str(&histogram_svg(&lat, 20));
    for (name, info) in &s.evaluators {
        let xs: Vec<f64> = scored.iter().filter_map(|(sr, _)| sr.metrics.get(name).copied()).collect();
        let (lo, Some(hi)) = info.scale else { continue };
        if xs.is_empty() || name == "ok" {
            continue;
        }
        // Judges score whole numbers: one bar per score; 0–1 metrics get
        // ten bins.
        let bins = if hi - lo == 4.0 { 5 } else { 10 };
        let _ = writeln!(h, "<h3>{} ({})</h3>", html_escape(name), html_escape(&info.kind));
        h.push_str(&scale_histogram_svg(&xs, lo, hi, bins));
    }
    h.push_str("\n<pre>");
    h.push_str(&html_escape(md));
    h.push_str("</pre>\n</body></html>\n");
    h
}

/// A bar chart of `xs` in `bins` equal-width bins.
pub fn histogram_svg(xs: &[f64], bins: usize) -> String {
    let (w, hgt, pad) = (600.0, 200.0, 30.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"latency histogram\">",
        hgt + pad
    );
    let finite: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() || bins == 0 {
        svg.push_str("<text x=\"10\" y=\"20\">no rows</text></svg>");
        return svg;
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let width = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 };
    let mut counts = vec![0usize; bins];
    for x in &finite {
        let i = (((x - lo) / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bw = w / bins as f64;
    for (i, c) in counts.iter().enumerate() {
        let bh = *c as f64 / max * hgt;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4a7bd0\"><title>{:.1}–{:.1} ms: {c}</title></rect>",
            i as f64 * bw + 1.0,
            hgt - bh,
            bw - 2.0,
            lo + i as f64 * width,
            lo + (i + 1) as f64 * width
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{:.0}\" font-size=\"12\">{lo:.1} ms</text><text x=\"{:.0}\" y=\"{:.0}\" font-size=\"12\" text-anchor=\"end\">{hi:.1} ms</text></svg>",
        hgt + 20.0,
        w,
        hgt + 20.0
    );
    svg
}

/// A bar chart of `xs` over the fixed scale `lo..=hi` in `bins` bins (a
/// metric's distribution).
pub fn scale_histogram_svg(xs: &[f64], lo: f64, hi: f64, bins: usize) -> String {
    let (w, hgt, pad) = (400.0, 120.0, 24.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"distribution\">",
        hgt + pad
    );
    let bins = bins.max(1);
    let width = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 };
    let mut counts = vec![0usize; bins];
    for x in xs.iter().filter(|x| x.is_finite()) {
        // Whole-number scales put each score in its own bin.
        let i = if hi - lo + 1.0 == bins as f64 { (x - lo).round() } else { ((x - lo) / width).floor() };
        counts[(i.max(0.0) as usize).min(bins - 1)] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bw = w / bins as f64;
    for (i, c) in counts.iter().enumerate() {
        let bh = *c as f64 / max * hgt;
        let label = if hi - lo + 1.0 == bins as f64 {
            format!("{}", lo + i as f64)
        } else {
            format!("{:.1}–{:.1}", lo + i as f64 * width, lo + (i + 1) as f64 * width)
        };
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4a7bd0\"><title>{label}: {c}</title></rect><text x=\"{:.1}\" y=\"{:.0}\" font-size=\"10\" text-anchor=\"middle\">{label}</text>",
            i as f64 * bw + 1.0,
            hgt - bh,
            bw - 2.0,
            i as f64 * bw + bw / 2.0,
            hgt + 14.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn comparison(s: &Summary) -> String {
    let mut md = String::from("# Variants compared\n\n");
    let mut metrics: Vec<&String> = s.variants.values().flat_map(|v| v.metrics.keys()).collect();
    metrics.sort();
    metrics.dedup();
    md.push_str("| metric |");
    for v in s.variants.keys() {
        let _ = write!(md, " {v} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(s.variants.len()));
    md.push('\n');
    for m in metrics {
        let _ = write!(md, "| {m} |");
        for v in s.variants.values() {
            let val = v.metrics.get(m).map(|x| fmt_num(x.mean)).unwrap_or_else(|| "–".into());
            let _ = write!(md, " {val} |");
        }
        md.push('\n');
    }
    for (label, f) in [
        ("latency p50 ms", (|v: &VariantSummary| v.latency_ms.p50) as fn(&VariantSummary) -> f64),
        ("latency p95 ms", |v| v.latency_ms.p95),
        ("failed rows", |v| v.counts.failed as f64),
    ] {
        let _ = write!(md, "| {label} |");
        for v in s.variants.values() {
            let _ = write!(md, " {} |", fmt_num(f(v)));
        }
        md.push('\n');
    }
    md.push_str("| cost |");
    for v in s.variants.values() {
        let _ = write!(md, " {} |", cost_text(&v.cost));
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_has_one_bar_per_bin_and_survives_empty_input() {
        let svg = histogram_svg(&[1.0, 2.0, 2.0, 10.0], 5);
        assert_eq!(svg.matches("<rect").count(), 5);
        assert!(histogram_svg(&[], 5).contains("no rows"));
        assert_eq!(histogram_svg(&[3.0, 3.0], 4).matches("<rect").count(), 4);
    }

    #[test]
    fn cells_and_html_are_escaped() {
        assert_eq!(cell("a|b<c>\nd", 100), "a\\|b<c> d");
        assert_eq!(html_escape("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(cell("abcdef", 3), "abc…");
    }
}
