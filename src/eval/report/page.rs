//! The HTML pages a researcher reads: `report.html` (the headline metrics
//! first as a table of variants, latency and cost, the distributions, then
//! every row to open: query, answer, ground truth, citations, each
//! evaluator's score and reason) and the comparison page (`eval compare
//! --html`: the differences with their intervals drawn as a forest plot,
//! and the gates). One self-contained file each: inline CSS and SVG, no
//! script, nothing fetched.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::html::{esc, histogram_svg, scale_histogram_svg};
use super::scores::ScoreRecord;
use super::summary::Summary;
use crate::eval::compare::Comparison;
use crate::eval::dataset::Row;
use crate::eval::records::OutputRecord;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th:first-child,td:first-child{text-align:left}thead th{background:#f3f5f9}td.bad{color:#b00020}td.good{color:#006b2e}td.sig{font-weight:700}\
details.row{border:1px solid #ddd;margin:.3em 0;padding:.3em .6em}details.row>summary{cursor:pointer}\
dl{display:grid;grid-template-columns:9em 1fr;gap:.3em 1em}dt{font-weight:600}dd{margin:0;white-space:pre-wrap}\
.meta{color:#555}svg{display:block;margin:.3em 0}";

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    )
}

fn shown(variant: &str) -> &str {
    if variant.is_empty() { "base" } else { variant }
}

/// `report.html`.
pub fn report(
    md: &str,
    s: &Summary,
    scored: &[(ScoreRecord, &OutputRecord)],
    rows: &HashMap<&str, &Row>,
) -> String {
    let mut h = head(&format!("meshops eval — {}", s.dataset));
    let _ = writeln!(h, "<h1>Evaluation of <code>{}</code></h1>", esc(&s.dataset));
    let _ = writeln!(
        h,
        "<p class=\"meta\" id=\"run\">run <code>{}</code> · config <code>{}</code> · dataset <code>{}</code> · judge {} · {} → {}{}</p>",
        esc(&s.run_id),
        esc(s.config_hash.get(..12).unwrap_or(&s.config_hash)),
        esc(s.dataset_hash.get(..12).unwrap_or(&s.dataset_hash)),
        esc(s.judge_model.as_deref().unwrap_or("none")),
        esc(&s.started_at),
        esc(&s.finished_at),
        if s.cut_short { " · <strong>cut short by the cost cap</strong>" } else { "" }
    );

    // Headline metrics: one row per evaluator, one column per variant.
    h.push_str("<h2>Headline metrics</h2>\n<table id=\"metrics\"><thead><tr><th>metric</th>");
    for v in s.variants.keys() {
        let _ = write!(h, "<th>{}</th>", esc(shown(v)));
    }
    h.push_str("</tr></thead><tbody>\n");
    for (name, info) in &s.evaluators {
        let _ = write!(h, "<tr><td title=\"{}\">{}</td>", esc(&info.kind), esc(name));
        for v in s.variants.values() {
            match v.metrics.get(name) {
                Some(m) => {
                    let pass = m
                        .pass_rate
                        .map(|p| format!(" <span class=\"meta\">({:.0} % pass)</span>", p * 100.0));
                    let failed = if m.failed > 0 {
                        format!(" <span class=\"meta\">{} failed</span>", m.failed)
                    } else {
                        String::new()
                    };
                    let _ = write!(h, "<td>{:.4}{}{failed}</td>", m.mean, pass.unwrap_or_default());
                }
                None => h.push_str("<td>–</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");

    h.push_str(
        "<h2>Latency and cost</h2>\n<table id=\"latency\"><thead><tr><th>variant</th><th>rows ok</th><th>failed</th>\
         <th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>input tokens</th><th>output tokens</th><th>cost USD</th></tr></thead><tbody>\n",
    );
    for (name, v) in &s.variants {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.6}{}</td></tr>",
            esc(shown(name)),
            v.counts.ok,
            v.counts.failed,
            v.latency_ms.p50,
            v.latency_ms.p95,
            v.latency_ms.p99,
            v.input_tokens,
            v.output_tokens,
            v.cost.known_usd,
            if v.cost.rows_with_unknown_cost > 0 { " (some unknown)" } else { "" }
        );
    }
    h.push_str("</tbody></table>\n");

    h.push_str("<h2>Distributions</h2>\n<h3>End-to-end latency</h3>\n");
    let lat: Vec<f64> = scored.iter().map(|(_, r)| r.latency_ms).collect();
    h.push_str(&histogram_svg(&lat, 20));
    for (name, info) in &s.evaluators {
        let (lo, Some(hi)) = info.scale else { continue };
        let xs: Vec<f64> = scored.iter().filter_map(|(sr, _)| sr.metrics.get(name).copied()).collect();
        if xs.is_empty() || name == "ok" {
            continue;
        }
        let bins = if hi - lo == 4.0 { 5 } else { 10 };
        let _ = writeln!(h, "<h3>{} ({})</h3>", esc(name), esc(&info.kind));
        h.push_str(&scale_histogram_svg(&xs, lo, hi, bins));
    }

    let _ = writeln!(h, "<h2>Rows</h2>\n<section id=\"rows\">");
    for (sr, rec) in scored {
        row(&mut h, sr, rec, rows.get(sr.id.as_str()).copied());
    }
    h.push_str("</section>\n<details id=\"markdown\"><summary>Markdown source (report.md)</summary><pre>");
    h.push_str(&esc(md));
    h.push_str("</pre></details>\n</body></html>\n");
    h
}

/// One row's drill-down.
fn row(h: &mut String, sr: &ScoreRecord, rec: &OutputRecord, data: Option<&Row>) {
    let headline: Vec<String> = ["f1", "relevance", "groundedness"]
        .iter()
        .filter_map(|m| sr.metrics.get(*m).map(|v| format!("{m} {v:.2}")))
        .collect();
    let _ = write!(
        h,
        "<details class=\"row\" data-id=\"{}\" data-variant=\"{}\"><summary><code>{}</code> · {} · repeat {} · {}{}</summary><dl>",
        esc(&sr.id),
        esc(shown(&sr.variant)),
        esc(&sr.id),
        esc(shown(&sr.variant)),
        sr.repeat,
        if sr.ok { "answered" } else { "<strong>failed</strong>" },
        if headline.is_empty() { String::new() } else { format!(" · {}", headline.join(" · ")) }
    );
    let _ = write!(h, "<dt>query</dt><dd class=\"query\">{}</dd>", esc(&rec.query));
    match (&rec.answer, &sr.error) {
        (Some(a), _) => {
            let _ = write!(h, "<dt>answer</dt><dd class=\"answer\">{}</dd>", esc(a));
        }
        (None, e) => {
            let _ = write!(
                h,
                "<dt>error</dt><dd class=\"answer\">{}</dd>",
                esc(e.as_deref().unwrap_or("no answer"))
            );
        }
    }
    if let Some(gt) = data.and_then(|r| r.ground_truth.as_deref()) {
        let _ = write!(h, "<dt>ground truth</dt><dd class=\"ground-truth\">{}</dd>", esc(gt));
    }
    h.push_str("<dt>citations</dt><dd><ol class=\"citations\">");
    for (i, doc) in rec.retrieved_doc_ids.iter().enumerate() {
        let text = rec.contexts.get(i).map(|c| c.chars().take(300).collect::<String>()).unwrap_or_default();
        let _ = write!(h, "<li><code>{}</code> {}</li>", esc(doc), esc(&text));
    }
    h.push_str("</ol></dd></dl><table class=\"scores\"><thead><tr><th>evaluator</th><th>score</th><th>reason</th></tr></thead><tbody>");
    for (name, value) in &sr.metrics {
        let class = match sr.passed.get(name) {
            Some(true) => " class=\"good\"",
            Some(false) => " class=\"bad\"",
            None => "",
        };
        let reason = sr.reasons.get(name).map(String::as_str).unwrap_or("");
        let _ =
            write!(h, "<tr><td>{}</td><td{class}>{value:.4}</td><td>{}</td></tr>", esc(name), esc(reason));
    }
    for (name, why) in &sr.failures {
        let _ =
            write!(h, "<tr><td>{}</td><td class=\"bad\">failed</td><td>{}</td></tr>", esc(name), esc(why));
    }
    h.push_str("</tbody></table></details>\n");
}

/// The comparison page: the differences (B − A) with their intervals as a
/// forest plot, the table behind it, and the gates.
pub fn comparison(c: &Comparison, a: &str, b: &str) -> String {
    let mut h = head(&format!("meshops compare — {a} vs {b}"));
    let _ = writeln!(
        h,
        "<h1>{} vs {}</h1>\n<p class=\"meta\">{} paired rows · {} only in A · {} only in B · 95 % paired-bootstrap intervals of B − A</p>",
        esc(b),
        esc(a),
        c.paired,
        c.only_a,
        c.only_b
    );
    for w in &c.warnings {
        let _ = writeln!(h, "<p class=\"meta warning\">⚠ {}</p>", esc(w));
    }
    h.push_str("<h2>Differences</h2>\n<p class=\"meta\">Each row on its own scale, 0 in the middle: left, B is lower; right, B is higher. Orange: the interval excludes 0.</p>\n");
    h.push_str(&forest(c));
    h.push_str(
        "<table id=\"diffs\"><thead><tr><th>metric</th><th>A</th><th>B</th><th>B − A</th><th>95 % CI</th><th>n</th></tr></thead><tbody>\n",
    );
    for m in &c.metrics {
        // The interval excludes 0: a difference beyond the noise, either way.
        let class = if m.ci_low > 0.0 || m.ci_high < 0.0 { " class=\"sig\"" } else { "" };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td{class}>{:+.4}</td><td>[{:+.4}, {:+.4}]</td><td>{}</td></tr>",
            esc(&m.metric),
            m.mean_a,
            m.mean_b,
            m.diff,
            m.ci_low,
            m.ci_high,
            m.n
        );
    }
    h.push_str("</tbody></table>\n<h2>Gates</h2>\n<table id=\"gates\"><thead><tr><th>gate</th><th>outcome</th><th>detail</th></tr></thead><tbody>\n");
    for g in &c.gates {
        let (text, class) = match g.passed {
            Some(true) => ("PASS", "good"),
            Some(false) => ("FAIL", "bad"),
            None => ("n/a", ""),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"{class}\">{text}</td><td>{}</td></tr>",
            esc(&g.gate),
            esc(&g.detail)
        );
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    h
}

/// A forest plot: one line per metric from its interval's low to high end,
/// a dot at the difference, and a vertical line at 0 in the middle. Each
/// metric is drawn on its own scale, symmetric about 0, so metrics of
/// different units sit on one page; the table gives the values.
fn forest(c: &Comparison) -> String {
    let (w, row_h, label_w) = (720.0, 26.0, 170.0);
    let plot_w = w - label_w - 20.0;
    let height = row_h * c.metrics.len().max(1) as f64 + 10.0;
    let mut svg = format!(
        "<svg id=\"forest\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" role=\"img\" aria-label=\"forest plot of the differences\">"
    );
    for (i, m) in c.metrics.iter().enumerate() {
        let y = row_h * i as f64 + row_h / 2.0 + 5.0;
        // Symmetric about 0, so left is "B lower" and right "B higher" on
        // every row.
        let ext = m.ci_low.abs().max(m.ci_high.abs()).max(m.diff.abs());
        let ext = if ext > 0.0 { ext * 1.05 } else { 1.0 };
        let (lo, span) = (-ext, 2.0 * ext);
        let x = |v: f64| label_w + (v - lo) / span * plot_w;
        let colour = if m.ci_low > 0.0 || m.ci_high < 0.0 { "#d06a4a" } else { "#4a7bd0" };
        let _ = write!(
            svg,
            "<g class=\"metric\" data-metric=\"{name}\"><text x=\"0\" y=\"{:.1}\" font-size=\"12\">{name}</text>\
             <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"3 3\"/>\
             <line class=\"ci\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{colour}\"><title>{name}: {:+.4} [{:+.4}, {:+.4}]</title></circle></g>",
            y + 4.0,
            x(0.0),
            x(0.0),
            y - row_h / 2.0 + 3.0,
            y + row_h / 2.0 - 3.0,
            x(m.ci_low),
            x(m.ci_high),
            x(m.diff),
            m.diff,
            m.ci_low,
            m.ci_high,
            name = esc(&m.metric),
        );
    }
    svg.push_str("</svg>\n");
    svg
}
