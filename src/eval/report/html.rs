//! `report.html`: the Markdown report in a page of its own, with inline-SVG
//! histograms of latency and of each metric, so the file needs nothing else
//! to open.

use std::fmt::Write as _;

use super::scores::ScoreRecord;
use super::summary::Summary;
use crate::eval::records::OutputRecord;

/// The Markdown report, escaped, inside `<pre>` plus an
/// inline-SVG histogram of end-to-end latency, so the file needs nothing
/// else to open.
pub fn html(md: &str, s: &Summary, scored: &[(ScoreRecord, &OutputRecord)]) -> String {
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

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
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
    fn html_is_escaped() {
        assert_eq!(html_escape("<b>&"), "&lt;b&gt;&amp;");
    }
}
