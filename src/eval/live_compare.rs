//! `meshops live compare`: the A/B readout of live traffic. Per variant,
//! every online judge's score, users' feedback (its rate and its score),
//! latency and cost, each mean with a 95 % bootstrap interval; then each
//! variant against the baseline (`base` by default) with the interval of
//! the difference (unpaired: different requests) and the same gates file
//! as `eval compare`, judged unpaired.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::gates::{Gate, GateOutcome, evaluate_unpaired};
use super::stats::{
    BOOTSTRAP_RESAMPLES, BOOTSTRAP_RESAMPLES_PERCENTILE, BOOTSTRAP_SEED, Bootstrap, mean, percentile,
};

/// Metric name → values, per variant ("" is the base mesh).
pub type Samples = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

/// The values of live-export rows by variant and metric: `latency_ms`,
/// `cost_usd` (when known), `feedback_rate` (1 with feedback, else 0),
/// `feedback` (the score, where given) and each online judge's score.
pub fn samples(rows: &[Value]) -> Samples {
    let mut out: Samples = BTreeMap::new();
    for row in rows {
        let variant = row["variant"].as_str().unwrap_or_default().to_string();
        let metrics = out.entry(variant).or_default();
        let mut push = |name: &str, v: f64| metrics.entry(name.to_string()).or_default().push(v);
        if let Some(l) = row["latency_ms"].as_f64() {
            push("latency_ms", l);
        }
        if let Some(c) = row["cost_usd"].as_f64() {
            push("cost_usd", c);
        }
        let feedback = row["feedback"]["score"].as_f64();
        push("feedback_rate", if feedback.is_some() { 1.0 } else { 0.0 });
        if let Some(f) = feedback {
            push("feedback", f);
        }
        if let Some(scores) = row["scores"].as_object() {
            for (judge, s) in scores {
                if let Some(score) = s["score"].as_f64() {
                    push(judge, score);
                }
            }
        }
    }
    out
}

/// A variant's name as shown.
fn shown(variant: &str) -> &str {
    if variant.is_empty() { crate::config::ab::BASE } else { variant }
}

/// The readout: per-variant means with intervals, then each variant against
/// `baseline` with the difference's interval and the gates. Returns the
/// text and the gates' outcomes by candidate.
pub fn compare(samples: &Samples, baseline: &str, gates: &[Gate]) -> (String, Vec<(String, GateOutcome)>) {
    let base_key = if baseline == crate::config::ab::BASE { "" } else { baseline };
    let mut text = String::new();
    let _ = writeln!(text, "| variant | requests | metric | mean | 95 % CI | p50 | p95 |");
    let _ = writeln!(text, "|---|---:|---|---:|---|---:|---:|");
    for (variant, metrics) in samples {
        let n = metrics.get("feedback_rate").map_or(0, Vec::len);
        for (metric, values) in metrics {
            let m = mean(values).unwrap_or(f64::NAN);
            let ci = Bootstrap::paired(values, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
                .map(|b| b.interval(0.95))
                .map_or("–".to_string(), |(lo, hi)| format!("[{lo:.4}, {hi:.4}]"));
            let p = |q| percentile(values, q).map_or("–".into(), |v: f64| format!("{v:.4}"));
            let _ = writeln!(
                text,
                "| {} | {n} | {metric} ({}) | {m:.4} | {ci} | {} | {} |",
                shown(variant),
                values.len(),
                p(50.0),
                p(95.0)
            );
        }
    }
    let mut outcomes = Vec::new();
    let empty = BTreeMap::new();
    let base = samples.get(base_key).unwrap_or(&empty);
    for (variant, metrics) in samples.iter().filter(|(v, _)| v.as_str() != base_key) {
        let _ = writeln!(
            text,
            "\n{} vs {} (unpaired, 95 % CI of the difference):",
            shown(variant),
            shown(base_key)
        );
        for (metric, b) in metrics {
            let Some(a) = base.get(metric) else { continue };
            let diff = |x: &[f64], y: &[f64]| mean(y).unwrap_or(0.0) - mean(x).unwrap_or(0.0);
            if let Some((lo, hi)) =
                Bootstrap::unpaired_statistic(a, b, BOOTSTRAP_RESAMPLES_PERCENTILE, BOOTSTRAP_SEED, diff)
                    .map(|bs| bs.interval(0.95))
            {
                let _ = writeln!(text, "  {metric}: Δ mean {:+.4} [{lo:+.4}, {hi:+.4}]", diff(a, b));
            }
        }
        for gate in gates {
            let a = base.get(&gate.metric).map(Vec::as_slice).unwrap_or_default();
            let b = metrics.get(&gate.metric).map(Vec::as_slice).unwrap_or_default();
            let outcome = evaluate_unpaired(gate, a, b);
            let verdict = match outcome.passed {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "n/a",
            };
            let _ = writeln!(text, "  gate {}: {verdict} ({})", outcome.gate, outcome.detail);
            outcomes.push((shown(variant).to_string(), outcome));
        }
    }
    (text, outcomes)
}

/// The readout as MLflow runs (`live compare --publish mlflow+…`): one
/// per variant, each metric's mean and interval, the number of requests,
/// and the readout itself as an artifact. `key` names the records read
/// (publishing the same records again logs nothing twice).
pub fn run_specs(
    samples: &Samples,
    text: &str,
    key: &str,
    params: &[(String, String)],
) -> Vec<super::mlflow::RunSpec> {
    samples
        .iter()
        .map(|(variant, metrics)| {
            let mut values =
                vec![("requests".to_string(), metrics.get("feedback_rate").map_or(0, Vec::len) as f64)];
            for (metric, xs) in metrics {
                values.push((metric.clone(), mean(xs).unwrap_or(f64::NAN)));
                if let Some((lo, hi)) =
                    Bootstrap::paired(xs, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED).map(|b| b.interval(0.95))
                {
                    values.push((format!("{metric}_ci_low"), lo));
                    values.push((format!("{metric}_ci_high"), hi));
                }
            }
            let name = shown(variant).to_string();
            let mut run_params = params.to_vec();
            run_params.push(("variant".into(), name.clone()));
            super::mlflow::RunSpec {
                name,
                key: key.to_string(),
                params: run_params,
                metrics: values,
                artifacts: vec![("live_compare.md".into(), text.as_bytes().to_vec())],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(variant: &str, latency: f64, relevance: u32, feedback: Option<f64>) -> Value {
        let mut r = json!({"variant": variant, "latency_ms": latency, "cost_usd": null,
                           "scores": {"relevance": {"score": relevance, "reason": "r"}}});
        if let Some(f) = feedback {
            r["feedback"] = json!({"score": f, "comment": ""});
        }
        r
    }

    #[test]
    fn a_clearly_worse_variant_fails_its_gate_and_a_like_one_passes() {
        let mut rows = Vec::new();
        for i in 0..60u32 {
            rows.push(row("", 100.0 + f64::from(i % 7), 5 - (i % 2), Some(1.0)));
            rows.push(row("worse", 100.0 + f64::from(i % 5), 2 - (i % 2), (i % 3 == 0).then_some(0.0)));
            rows.push(row("same", 101.0 + f64::from(i % 6), 5 - (i % 2), Some(1.0)));
        }
        let s = samples(&rows);
        assert_eq!(s[""]["feedback_rate"].len(), 60);
        assert_eq!(s["worse"]["feedback"].len(), 20);
        let gates =
            super::super::gates::parse("g.toml", "[[gate]]\nmetric = \"relevance\"\nmax_drop = 0.5\n")
                .unwrap();
        let (text, outcomes) = compare(&s, "base", &gates);
        let verdict: BTreeMap<&str, Option<bool>> =
            outcomes.iter().map(|(v, o)| (v.as_str(), o.passed)).collect();
        assert_eq!(verdict["worse"], Some(false), "{text}");
        assert_eq!(verdict["same"], Some(true), "{text}");
        assert!(text.contains("| base | 60 | relevance (60) | 4.5000"), "{text}");
    }
}
