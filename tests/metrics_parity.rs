//! Parity of `meshops::eval::metrics` with the reference implementations.
//!
//! `tests/data/metrics/parity.jsonl` and `porter.tsv` are produced by
//! `scripts/metrics_reference.py` (sacreBLEU, NLTK, rouge-score and the SQuAD
//! v2.0 script); this test needs no Python. Every metric of every row must
//! agree to 1e-9; failures list the first mismatches with their inputs.

use std::collections::BTreeSet;

use meshops::eval::metrics::{self, ScoreInput};
use serde_json::Value;

const TOLERANCE: f64 = 1e-9;
/// The test data folder, found at run time (a test binary reused from a
/// shared target dir may have been built in another checkout).
fn data_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("tests/data/metrics")
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
}

#[test]
fn every_metric_matches_the_reference_values() {
    let path = data_dir().join("parity.jsonl").display().to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut mismatches = Vec::new();
    let mut checked = 0usize;
    let mut rows = 0usize;
    let mut max_diff = 0.0f64;
    let mut seen_metrics = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let row: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1));
        let Some(expected) = row.get("expected").and_then(Value::as_object) else {
            continue; // the header row records the reference versions
        };
        rows += 1;
        let input = ScoreInput {
            response: row.get("response").and_then(Value::as_str).map(str::to_string),
            ground_truth: row.get("ground_truth").and_then(Value::as_str).map(str::to_string),
            retrieved_doc_ids: strings(row.get("retrieved_doc_ids")),
            relevant_doc_ids: strings(row.get("relevant_doc_ids")),
            ..ScoreInput::default()
        };
        for (metric, want) in expected {
            let want = want.as_f64().unwrap_or_else(|| panic!("{path}:{}: {metric} is not a number", n + 1));
            seen_metrics.insert(metric.split('@').next().unwrap_or(metric).to_string());
            checked += 1;
            let got = metrics::compute(metric, &input);
            let diff = match &got {
                Ok(Some(v)) => (v - want).abs(),
                _ => f64::INFINITY,
            };
            if diff.is_finite() {
                max_diff = max_diff.max(diff);
            }
            // NaN (a metric returning NaN) must count as a mismatch too.
            if diff.is_nan() || diff > TOLERANCE {
                mismatches.push(format!(
                    "line {} id={} {metric}: got {got:?}, want {want} (diff {diff:e})\n    response={:?}\n    ground_truth={:?}\n    retrieved={:?} relevant={:?}",
                    n + 1,
                    row["id"],
                    input.response,
                    input.ground_truth,
                    input.retrieved_doc_ids,
                    input.relevant_doc_ids,
                ));
            }
        }
    }
    eprintln!("parity: {rows} rows, {checked} values, max abs diff {max_diff:e}");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} values differ from the reference; first ones:\n{}",
        mismatches.len(),
        mismatches.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
    // The data must exercise every metric, or parity says nothing about it.
    let known: BTreeSet<String> = metrics::known_metrics().iter().map(|s| s.to_string()).collect();
    let missing: Vec<&String> = known.difference(&seen_metrics).collect();
    assert!(missing.is_empty(), "no reference values for {missing:?}");
    assert!(rows >= 300, "expected a few hundred rows, found {rows}");
}

#[test]
fn porter_stemmer_matches_nltk_word_by_word() {
    let path = data_dir().join("porter.tsv").display().to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut mismatches = Vec::new();
    let mut words = 0usize;
    for (n, line) in text.lines().enumerate() {
        let (word, want) = line.split_once('\t').unwrap_or_else(|| panic!("{path}:{}: no tab", n + 1));
        words += 1;
        let got = metrics::porter::stem(word);
        if got != want {
            mismatches.push(format!("{word}: got {got}, want {want}"));
        }
    }
    assert!(words > 1000, "word list too short: {words}");
    assert!(
        mismatches.is_empty(),
        "{} of {words} stems differ from NLTK; first ones:\n{}",
        mismatches.len(),
        mismatches.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
