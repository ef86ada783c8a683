//! Regression gates (`eval/gates.toml`): what a candidate run may not do
//! relative to a baseline.
//!
//! ```toml
//! [[gate]]
//! metric = "f1"
//! max_drop = 0.02        # fail when the drop is beyond 0.02 with 95 % confidence
//! confidence = 0.95
//!
//! [[gate]]
//! metric = "latency_ms"
//! stat = "p95"           # mean (default), p50, p95, p99
//! max_rise_pct = 20
//!
//! [[gate]]
//! metric = "cost_usd"
//! max_mean = 0.01        # the candidate's own mean, no baseline needed
//! ```
//!
//! For `stat = "mean"`, `max_drop`, `max_rise` and `max_rise_pct` read the
//! paired-bootstrap interval of B − A: a gate fails only when the whole
//! interval lies beyond the allowed change, i.e. the regression is there
//! with the gate's confidence. Percentile stats (`p50`, `p95`, `p99`) do
//! the same with a paired bootstrap of the percentile's change (rows
//! resampled together in both runs, 2 000 resamples, fixed seed):
//! `max_rise_pct` fails only when the whole interval of the percentage
//! rise lies above the limit. `max_mean`/`min_mean` bound the candidate's
//! own statistic. Unknown fields are errors naming file and field.

use std::path::Path;

use serde::Deserialize;

use super::EvalError;
use super::stats::Bootstrap;

/// Which statistic of the metric a gate looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    #[default]
    Mean,
    P50,
    P95,
    P99,
}

impl Stat {
    fn percentile(self) -> Option<f64> {
        match self {
            Stat::Mean => None,
            Stat::P50 => Some(50.0),
            Stat::P95 => Some(95.0),
            Stat::P99 => Some(99.0),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::P50 => "p50",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
        }
    }
}

fn default_confidence() -> f64 {
    0.95
}

/// One gate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub metric: String,
    #[serde(default)]
    pub stat: Stat,
    /// Largest allowed decrease (absolute) of a higher-is-better metric.
    pub max_drop: Option<f64>,
    /// Largest allowed increase (absolute).
    pub max_rise: Option<f64>,
    /// Largest allowed increase, in percent of the baseline.
    pub max_rise_pct: Option<f64>,
    /// Upper bound on the candidate's statistic.
    pub max_mean: Option<f64>,
    /// Lower bound on the candidate's statistic.
    pub min_mean: Option<f64>,
    #[serde(default = "default_confidence")]
    pub confidence: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GateFile {
    #[serde(default)]
    gate: Vec<Gate>,
}

/// Parses gates from TOML text; `path` names the file in errors.
pub fn parse(path: &str, text: &str) -> Result<Vec<Gate>, EvalError> {
    let file: GateFile = toml::from_str(text)
        .map_err(|e| EvalError::Input { path: path.to_string(), message: e.to_string() })?;
    for (i, g) in file.gate.iter().enumerate() {
        let bad = |field: &str, message: &str| EvalError::Input {
            path: path.to_string(),
            message: format!("gate[{i}] (`{}`): field `{field}`: {message}", g.metric),
        };
        if g.metric.trim().is_empty() {
            return Err(bad("metric", "must not be empty"));
        }
        if !(g.confidence > 0.0 && g.confidence < 1.0) {
            return Err(bad("confidence", "must lie strictly between 0 and 1"));
        }
        let limits = [g.max_drop, g.max_rise, g.max_rise_pct, g.max_mean, g.min_mean];
        if limits.iter().all(Option::is_none) {
            return Err(bad(
                "metric",
                "sets no limit (max_drop, max_rise, max_rise_pct, max_mean or min_mean)",
            ));
        }
        if limits.iter().flatten().any(|v| !v.is_finite()) {
            return Err(bad("metric", "limits must be finite numbers"));
        }
        for (field, v) in
            [("max_drop", g.max_drop), ("max_rise", g.max_rise), ("max_rise_pct", g.max_rise_pct)]
        {
            if v.is_some_and(|v| v < 0.0) {
                return Err(bad(field, "must not be negative"));
            }
        }
    }
    Ok(file.gate)
}

/// Reads and parses a gates file.
pub fn load(path: &Path) -> Result<Vec<Gate>, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EvalError::Io { path: path.display().to_string(), source })?;
    parse(&path.display().to_string(), &text)
}

/// How one gate came out.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutcome {
    /// `metric stat limit`, e.g. `f1 mean max_drop=0.02`.
    pub gate: String,
    /// `None` when the metric is absent from both runs (nothing to judge).
    pub passed: Option<bool>,
    pub detail: String,
}

impl GateOutcome {
    pub fn failed(&self) -> bool {
        self.passed == Some(false)
    }
}

fn describe(g: &Gate) -> String {
    let mut s = format!("{} {}", g.metric, g.stat.name());
    for (k, v) in [
        ("max_drop", g.max_drop),
        ("max_rise", g.max_rise),
        ("max_rise_pct", g.max_rise_pct),
        ("max_mean", g.max_mean),
        ("min_mean", g.min_mean),
    ] {
        if let Some(v) = v {
            s.push_str(&format!(" {k}={v}"));
        }
    }
    s
}

/// Judges `gate` on paired values (`a[i]` and `b[i]` are the same row and
/// repeat in the baseline and the candidate). `a_present`/`b_present` say
/// whether each run has the metric at all.
pub fn evaluate(gate: &Gate, a: &[f64], b: &[f64], a_present: bool, b_present: bool) -> GateOutcome {
    evaluate_with(gate, a, b, a_present, b_present, Pairing::Paired)
}

/// How a gate's two samples relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// `a[i]` and `b[i]` are the same row (an offline comparison).
    Paired,
    /// Different requests (variants of live traffic): each sample is
    /// resampled on its own.
    Unpaired,
}

/// Judges `gate` on two independent samples (`live compare`).
pub fn evaluate_unpaired(gate: &Gate, a: &[f64], b: &[f64]) -> GateOutcome {
    evaluate_with(gate, a, b, !a.is_empty(), !b.is_empty(), Pairing::Unpaired)
}

fn evaluate_with(
    gate: &Gate,
    a: &[f64],
    b: &[f64],
    a_present: bool,
    b_present: bool,
    pairing: Pairing,
) -> GateOutcome {
    let name = describe(gate);
    if !a_present && !b_present {
        return GateOutcome { gate: name, passed: None, detail: "metric absent from both runs".into() };
    }
    let paired = pairing == Pairing::Paired;
    if a.is_empty() || b.is_empty() || (paired && a.len() != b.len()) {
        return GateOutcome {
            gate: name,
            passed: Some(false),
            detail: format!("no paired values (baseline has it: {a_present}, candidate has it: {b_present})"),
        };
    }
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    match gate.stat.percentile() {
        None => {
            let diffs: Vec<f64> = b.iter().zip(a).map(|(b, a)| b - a).collect();
            let ma = super::stats::mean(a).unwrap_or(0.0);
            let mb = super::stats::mean(b).unwrap_or(0.0);
            let needs_ci = gate.max_drop.is_some() || gate.max_rise.is_some() || gate.max_rise_pct.is_some();
            let ci = match (needs_ci, pairing) {
                (false, _) => None,
                (true, Pairing::Paired) => {
                    Bootstrap::paired(&diffs, super::stats::BOOTSTRAP_RESAMPLES, super::stats::BOOTSTRAP_SEED)
                }
                (true, Pairing::Unpaired) => Bootstrap::unpaired_statistic(
                    a,
                    b,
                    super::stats::BOOTSTRAP_RESAMPLES_PERCENTILE,
                    super::stats::BOOTSTRAP_SEED,
                    |x, y| super::stats::mean(y).unwrap_or(0.0) - super::stats::mean(x).unwrap_or(0.0),
                ),
            }
            .map(|bs| bs.interval(gate.confidence));
            if let Some((lo, hi)) = ci {
                notes.push(format!(
                    "Δ mean {:+.4}, {:.0} % CI [{lo:+.4}, {hi:+.4}]",
                    mb - ma,
                    gate.confidence * 100.0
                ));
                if let Some(d) = gate.max_drop {
                    if hi < -d {
                        failures.push(format!("dropped beyond {d} (CI upper bound {hi:+.4})"));
                    }
                }
                if let Some(r) = gate.max_rise {
                    if lo > r {
                        failures.push(format!("rose beyond {r} (CI lower bound {lo:+.4})"));
                    }
                }
                if let Some(p) = gate.max_rise_pct {
                    let allowed = ma.abs() * p / 100.0;
                    if lo > allowed {
                        failures.push(format!("rose beyond {p} % of {ma:.4} (CI lower bound {lo:+.4})"));
                    }
                }
            }
            bounds(gate, mb, "mean", &mut failures, &mut notes);
        }
        Some(p) => {
            let pct = |x: &[f64]| super::stats::percentile(x, p).unwrap_or(0.0);
            let va = pct(a);
            let vb = pct(b);
            let st = gate.stat.name();
            let conf = gate.confidence * 100.0;
            let boot = |stat: &dyn Fn(&[f64], &[f64]) -> f64| {
                let (r, seed) = (super::stats::BOOTSTRAP_RESAMPLES_PERCENTILE, super::stats::BOOTSTRAP_SEED);
                match pairing {
                    Pairing::Paired => Bootstrap::paired_statistic(a, b, r, seed, stat),
                    Pairing::Unpaired => Bootstrap::unpaired_statistic(a, b, r, seed, stat),
                }
                .map(|bs| bs.interval(gate.confidence))
            };
            notes.push(format!("{st} {va:.4} → {vb:.4}"));
            if gate.max_drop.is_some() || gate.max_rise.is_some() {
                if let Some((lo, hi)) = boot(&|x, y| pct(y) - pct(x)) {
                    notes.push(format!("Δ {st} {:+.4}, {conf:.0} % CI [{lo:+.4}, {hi:+.4}]", vb - va));
                    if let Some(d) = gate.max_drop {
                        if hi < -d {
                            failures.push(format!("{st} dropped beyond {d} (CI upper bound {hi:+.4})"));
                        }
                    }
                    if let Some(r) = gate.max_rise {
                        if lo > r {
                            failures.push(format!("{st} rose beyond {r} (CI lower bound {lo:+.4})"));
                        }
                    }
                }
            }
            if let Some(limit) = gate.max_rise_pct {
                let rise = |x: &[f64], y: &[f64]| {
                    let (px, py) = (pct(x), pct(y));
                    if px > 0.0 {
                        (py - px) / px * 100.0
                    } else if py > px {
                        f64::INFINITY
                    } else {
                        0.0
                    }
                };
                if let Some((lo, hi)) = boot(&rise) {
                    notes.push(format!(
                        "{st} rise {:+.1} %, {conf:.0} % CI [{lo:+.1} %, {hi:+.1} %]",
                        rise(a, b)
                    ));
                    if lo > limit {
                        failures.push(format!("{st} rose beyond {limit} % (CI lower bound {lo:+.1} %)"));
                    }
                }
            }
            bounds(gate, vb, st, &mut failures, &mut notes);
        }
    }
    let passed = failures.is_empty();
    let mut detail = failures;
    detail.extend(notes);
    GateOutcome { gate: name, passed: Some(passed), detail: detail.join("; ") }
}

fn bounds(gate: &Gate, value: f64, stat: &str, failures: &mut Vec<String>, notes: &mut Vec<String>) {
    if let Some(m) = gate.max_mean {
        if value > m {
            failures.push(format!("candidate {stat} {value:.6} > {m}"));
        } else {
            notes.push(format!("candidate {stat} {value:.6} ≤ {m}"));
        }
    }
    if let Some(m) = gate.min_mean {
        if value < m {
            failures.push(format!("candidate {stat} {value:.6} < {m}"));
        } else {
            notes.push(format!("candidate {stat} {value:.6} ≥ {m}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format_and_names_unknown_fields() {
        let gates = parse(
            "g.toml",
            "[[gate]]\nmetric = \"f1\"\nmax_drop = 0.02\n[[gate]]\nmetric = \"latency_ms\"\nstat = \"p95\"\nmax_rise_pct = 20\n",
        )
        .unwrap();
        assert_eq!(gates.len(), 2);
        assert_eq!(gates[1].stat, Stat::P95);
        assert_eq!(gates[0].confidence, 0.95);
        let err = parse("g.toml", "[[gate]]\nmetric = \"f1\"\nmax_dorp = 0.02\n").unwrap_err().to_string();
        assert!(err.contains("g.toml") && err.contains("max_dorp"), "{err}");
        let err = parse("g.toml", "[[gate]]\nmetric = \"f1\"\n").unwrap_err().to_string();
        assert!(err.contains("sets no limit"), "{err}");
    }

    #[test]
    fn a_clear_drop_fails_and_noise_passes() {
        let gate = parse("g", "[[gate]]\nmetric = \"m\"\nmax_drop = 0.02\n").unwrap().remove(0);
        let a = vec![1.0; 40];
        let b: Vec<f64> = (0..40).map(|i| if i % 2 == 0 { 0.0 } else { 1.0 }).collect();
        assert!(evaluate(&gate, &a, &b, true, true).failed());
        assert_eq!(evaluate(&gate, &a, &a, true, true).passed, Some(true));
        assert_eq!(evaluate(&gate, &[], &[], false, false).passed, None);
        assert!(evaluate(&gate, &[], &[], true, false).failed());
    }

    #[test]
    fn percentile_rise_gate() {
        let gate = parse("g", "[[gate]]\nmetric = \"latency_ms\"\nstat = \"p95\"\nmax_rise_pct = 20\n")
            .unwrap()
            .remove(0);
        let a: Vec<f64> = (1..=100).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x * 1.5).collect();
        let out = evaluate(&gate, &a, &b, true, true);
        assert!(out.failed() && out.detail.contains("CI"), "{}", out.detail);
        assert!(!evaluate(&gate, &a, &a, true, true).failed());
        // A 30 % rise of p95 carried by six rows in a hundred is not a
        // confident rise beyond 20 %: the interval reaches below it.
        let flat = vec![100.0; 100];
        let c: Vec<f64> = (0..100).map(|i| if i % 17 == 0 { 130.0 } else { 100.0 }).collect();
        assert_eq!(crate::eval::stats::percentile(&c, 95.0), Some(130.0));
        let out = evaluate(&gate, &flat, &c, true, true);
        assert!(!out.failed() && out.detail.contains("rise +30.0 %"), "{}", out.detail);
    }
}
