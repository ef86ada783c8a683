//! `report.md` (the readable report of a run) and `comparison.md` (its
//! variants side by side).

use std::fmt::Write as _;

use super::scores::ScoreRecord;
use super::summary::{Cost, Summary, VariantSummary};
use crate::eval::records::OutputRecord;

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

/// `report.md`: the run's header, then one section per variant.
pub fn markdown(s: &Summary, scored: &[(ScoreRecord, &OutputRecord)]) -> String {
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
    if !s.agents.is_empty() {
        let _ = writeln!(md, "| agent | kind | prompt | model | flows |\n|---|---|---|---|---|");
        for a in &s.agents {
            let model = if a.model_profile.is_empty() {
                "–".to_string()
            } else {
                format!("{} ({})", a.model, a.model_profile)
            };
            let prompt = if a.prompt.is_empty() { "–" } else { a.prompt.as_str() };
            let flows = if a.flows.is_empty() { "(none)".to_string() } else { a.flows.join(", ") };
            let _ = writeln!(md, "| {} | {} | {prompt} | {model} | {flows} |", a.name, a.kind);
        }
        md.push('\n');
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
        variant_section(&mut md, s, name, v, scored);
    }
    md
}

/// One variant's part of `report.md`: its metric table, latency, tokens
/// and cost, per-agent latency and its worst rows.
fn variant_section(
    md: &mut String,
    s: &Summary,
    name: &str,
    v: &VariantSummary,
    scored: &[(ScoreRecord, &OutputRecord)],
) {
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
            .and_then(|i| i.threshold.map(|t| format!("{} {t}", if i.higher_is_better { "≥" } else { "≤" })))
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

/// `comparison.md`: the variants of one run side by side, per metric.
pub fn comparison(s: &Summary) -> String {
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
    fn cells_are_escaped_and_shortened() {
        assert_eq!(cell("a|b<c>\nd", 100), "a\\|b<c> d");
        assert_eq!(cell("abcdef", 3), "abc…");
    }
}
