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
use super::metrics::{ScoreInput, compute};
use super::runner::{Key, OutputRecord};
use super::stats;

/// Metrics the harness computes itself, always present on successful rows.
pub const OWN_METRICS: &[&str] =
    &["ok", "latency_ms", "cost_usd", "input_tokens", "output_tokens", "intent_match"];

/// A row counts as passing a metric at or above this value; metrics without
/// an entry (latency, cost, tokens) have no pass rate.
pub fn pass_threshold(metric: &str) -> Option<f64> {
    match metric {
        "ok" | "intent_match" | "exact_match" => Some(1.0),
        m if m.starts_with("hit_rate") => Some(1.0),
        "f1" | "rouge1" | "rouge2" | "rougeL" | "bleu" | "gleu" => Some(0.5),
        m if m.starts_with("mrr") || m.starts_with("ndcg") => Some(0.5),
        _ => None,
    }
}

/// Whether a higher value of `metric` is better (for worst-row ranking and
/// comparisons).
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "latency_ms" | "cost_usd" | "input_tokens" | "output_tokens")
}

/// One line of `scores.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub id: String,
    pub repeat: u32,
    pub variant: String,
    pub ok: bool,
    pub error: Option<String>,
    pub metrics: BTreeMap<String, f64>,
}

/// Aggregate of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub mean: f64,
    /// Standard deviation of the per-repeat means (0 with one repeat).
    pub std_across_repeats: f64,
    pub pass_rate: Option<f64>,
    pub n: usize,
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
}

/// Scores one record against its dataset row. Failed rows are scored with
/// an empty answer and no retrieved docs, so they count as misses in every
/// quality metric instead of leaving the denominator.
pub fn score(
    rec: &OutputRecord,
    row: Option<&Row>,
    metrics: &[String],
    unavailable: &mut Vec<String>,
) -> ScoreRecord {
    let mut m = BTreeMap::new();
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
    let input = ScoreInput {
        query: Some(rec.query.clone()),
        response: Some(rec.answer.clone().unwrap_or_default()),
        ground_truth: row.and_then(|r| r.ground_truth.clone()),
        context: row.and_then(|r| r.context.clone()),
        retrieved_doc_ids: Some(rec.retrieved_doc_ids.clone()),
        relevant_doc_ids: row.and_then(|r| r.relevant_doc_ids.clone()),
    };
    for name in metrics {
        // The harness's own metrics are always there; asking for them is fine.
        if unavailable.contains(name) || OWN_METRICS.contains(&name.as_str()) {
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
    ScoreRecord {
        id: rec.id.clone(),
        repeat: rec.repeat,
        variant: rec.variant.clone(),
        ok: rec.ok(),
        error: rec.error.clone(),
        metrics: m,
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
) -> VariantSummary {
    let mut s = VariantSummary::default();
    s.counts.total = scores.len() + not_run;
    s.counts.ok = scores.iter().filter(|r| r.ok).count();
    s.counts.failed = scores.len() - s.counts.ok;
    s.counts.not_run = not_run;
    let mut names: Vec<&String> = scores.iter().flat_map(|r| r.metrics.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let vals: Vec<(u32, f64)> =
            scores.iter().filter_map(|r| r.metrics.get(name).map(|v| (r.repeat, *v))).collect();
        let all: Vec<f64> = vals.iter().map(|(_, v)| *v).collect();
        let mut by_repeat: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for (rep, v) in &vals {
            by_repeat.entry(*rep).or_default().push(*v);
        }
        let repeat_means: Vec<f64> = by_repeat.values().filter_map(|v| stats::mean(v)).collect();
        let pass_rate = pass_threshold(name)
            .map(|t| all.iter().filter(|v| **v >= t - 1e-12).count() as f64 / all.len().max(1) as f64);
        s.metrics.insert(
            name.clone(),
            MetricSummary {
                mean: stats::mean(&all).unwrap_or(0.0),
                std_across_repeats: stats::std_dev(&repeat_means).unwrap_or(0.0),
                pass_rate,
                n: all.len(),
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
    rows: &HashMap<&str, &Row>,
    metrics: &[String],
    ctx: &Context,
) -> Result<Summary, EvalError> {
    let mut unavailable = Vec::new();
    let mut scored: Vec<(ScoreRecord, &OutputRecord)> = Vec::new();
    let mut not_run: BTreeMap<&str, usize> = BTreeMap::new();
    for key in planned {
        match latest.get(key) {
            Some(rec) => {
                scored.push((score(rec, rows.get(rec.id.as_str()).copied(), metrics, &mut unavailable), rec))
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

    let mut variants = BTreeMap::new();
    for v in &ctx.variants {
        let s: Vec<&ScoreRecord> = scored.iter().filter(|(s, _)| &s.variant == v).map(|(s, _)| s).collect();
        let r: Vec<&OutputRecord> = scored.iter().filter(|(s, _)| &s.variant == v).map(|(_, r)| *r).collect();
        variants.insert(v.clone(), summarize_variant(&s, &r, not_run.get(v.as_str()).copied().unwrap_or(0)));
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
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| EvalError::Run(e.to_string()))?;
    write(&out.join("summary.json"), &format!("{json}\n"))?;
    let md = markdown(&summary, &scored);
    write(&out.join("report.md"), &md)?;
    write(&out.join("report.html"), &html(&md, &scored))?;
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
    for (name, v) in &s.variants {
        let _ = writeln!(md, "## Variant `{name}`\n");
        let _ = writeln!(md, "| metric | mean | std (repeats) | pass rate | n |\n|---|---|---|---|---|");
        for (m, ms) in &v.metrics {
            let pass = ms.pass_rate.map(|p| format!("{:.1} %", p * 100.0)).unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {m} | {} | {} | {pass} | {} |",
                fmt_num(ms.mean),
                fmt_num(ms.std_across_repeats),
                ms.n
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
        let _ = writeln!(md, "| id | repeat | ok | key metric | answer or error |\n|---|---|---|---|---|");
        for (sr, rec) in worst(scored, name, 10) {
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
                "| {} | {} | {} | {val} | {} |",
                cell(&sr.id, 40),
                sr.repeat,
                sr.ok,
                cell(&text, 200)
            );
        }
        md.push('\n');
    }
    md
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
fn html(md: &str, scored: &[(ScoreRecord, &OutputRecord)]) -> String {
    let lat: Vec<f64> = scored.iter().map(|(_, r)| r.latency_ms).collect();
    let mut h = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>meshops eval report</title>\
         <style>body{font-family:sans-serif;margin:2em}pre{white-space:pre-wrap}</style></head><body>\n",
    );
    h.push_str("<h2>End-to-end latency</h2>\n");
    h.push_str(&histogram_svg(&lat, 20));
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
