//! The inline-SVG charts and the escaping the HTML pages (`page.rs`) are
//! built from.

use std::fmt::Write as _;

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

/// Text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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
        assert_eq!(esc("<b a=\"x\">&"), "&lt;b a=&quot;x&quot;&gt;&amp;");
    }
}
