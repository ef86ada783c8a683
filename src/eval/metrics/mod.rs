//! Standard metrics with reference parity.
//!
//! Every metric here reproduces a named reference implementation exactly
//! (checked to 1e-9 by `tests/metrics_parity.rs` against values produced by
//! `scripts/metrics_reference.py`):
//!
//! | names | reference |
//! |---|---|
//! | `exact_match`, `f1` | SQuAD v2.0 official script ([`squad`]) |
//! | `bleu` | `sacrebleu.sentence_bleu` defaults, on 0..1 ([`bleu`]) |
//! | `gleu` | `nltk` `sentence_gleu` over 13a tokens ([`bleu`]) |
//! | `rouge1`, `rouge2`, `rougeL` (+`_precision`/`_recall`, +`_stem`) | `rouge-score` ([`rouge`], [`porter`]) |
//! | `hit_rate`, `mrr`, `ndcg` (+`@k`) | binary-relevance IR metrics ([`retrieval`]) |
//!
//! Text metrics compare `response` (prediction) with `ground_truth`
//! (reference); retrieval metrics compare `retrieved_doc_ids` with
//! `relevant_doc_ids`. All scores are on 0..1, higher is better.
//!
//! Known limit of parity: Unicode data. Rust's case tables are newer than
//! the Unicode 14 database of the CPython 3.11 that produced the reference
//! values, so lowercasing differs for about fifty characters encoded since
//! (e.g. U+A7CB, U+10D50..); word characters are aligned by a generated
//! table (see `pystr`).

pub mod bleu;
pub mod porter;
mod pystr;
mod pyword_table;
pub mod retrieval;
pub mod rouge;
pub mod squad;

use std::ops::RangeInclusive;

use super::EvalError;
use retrieval::RetrievalKind;
use rouge::RougeKind;

/// What a metric may look at for one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreInput {
    pub query: Option<String>,
    pub response: Option<String>,
    pub ground_truth: Option<String>,
    pub context: Option<String>,
    /// Doc ids in the order the system retrieved/cited them.
    pub retrieved_doc_ids: Option<Vec<String>>,
    pub relevant_doc_ids: Option<Vec<String>>,
}

/// Static description of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricInfo {
    /// The name as requested (e.g. `ndcg@5`).
    pub name: String,
    /// Implementation version; bump when values could change, so stored
    /// scores from different versions are never compared silently.
    pub version: &'static str,
    /// Range of the values.
    pub scale: RangeInclusive<f64>,
    /// Per-row pass threshold (`value >= threshold` passes). These are
    /// starting points, meant to be overridden per project.
    pub default_threshold: f64,
}

/// The family a metric name resolves to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    ExactMatch,
    F1,
    Bleu,
    Gleu,
    Rouge { kind: RougeKind, stem: bool, part: RougePart },
    Retrieval { kind: RetrievalKind, k: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RougePart {
    F,
    Precision,
    Recall,
}

/// Text metrics, in display order.
const TEXT_METRICS: &[&str] = &[
    "exact_match",
    "f1",
    "bleu",
    "gleu",
    "rouge1",
    "rouge1_precision",
    "rouge1_recall",
    "rouge2",
    "rouge2_precision",
    "rouge2_recall",
    "rougeL",
    "rougeL_precision",
    "rougeL_recall",
    "rouge1_stem",
    "rouge1_stem_precision",
    "rouge1_stem_recall",
    "rouge2_stem",
    "rouge2_stem_precision",
    "rouge2_stem_recall",
    "rougeL_stem",
    "rougeL_stem_precision",
    "rougeL_stem_recall",
];

/// Retrieval metrics under their default names (k = 10); `name@k` also works.
const RETRIEVAL_METRICS: &[&str] = &["hit_rate", "mrr", "ndcg"];

/// Names of the text metrics (need `response` and `ground_truth`).
pub fn text_metrics() -> Vec<&'static str> {
    TEXT_METRICS.to_vec()
}

/// Names of the retrieval metrics at the default cutoff (need
/// `retrieved_doc_ids` and `relevant_doc_ids`).
pub fn retrieval_metrics() -> Vec<&'static str> {
    RETRIEVAL_METRICS.to_vec()
}

/// Every metric name without a cutoff suffix. Retrieval metrics also accept
/// `@k` with k >= 1 (`ndcg@5`).
pub fn known_metrics() -> Vec<&'static str> {
    TEXT_METRICS.iter().chain(RETRIEVAL_METRICS).copied().collect()
}

fn known_list() -> String {
    let mut names = known_metrics().join(", ");
    names.push_str(" (retrieval metrics also as name@k, k >= 1)");
    names
}

fn parse(name: &str) -> Option<Metric> {
    if let Some((base, k)) = name.split_once('@') {
        let k: usize = k.parse().ok().filter(|k| *k >= 1)?;
        return parse_retrieval(base, k);
    }
    if let Some(m) = parse_retrieval(name, retrieval::DEFAULT_K) {
        return Some(m);
    }
    match name {
        "exact_match" => return Some(Metric::ExactMatch),
        "f1" => return Some(Metric::F1),
        "bleu" => return Some(Metric::Bleu),
        "gleu" => return Some(Metric::Gleu),
        _ => {}
    }
    let rest = name.strip_prefix("rouge")?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix('1') {
        (RougeKind::N(1), r)
    } else if let Some(r) = rest.strip_prefix('2') {
        (RougeKind::N(2), r)
    } else {
        (RougeKind::L, rest.strip_prefix('L')?)
    };
    let (stem, rest) = match rest.strip_prefix("_stem") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let part = match rest {
        "" => RougePart::F,
        "_precision" => RougePart::Precision,
        "_recall" => RougePart::Recall,
        _ => return None,
    };
    Some(Metric::Rouge { kind, stem, part })
}

fn parse_retrieval(base: &str, k: usize) -> Option<Metric> {
    let kind = match base {
        "hit_rate" => RetrievalKind::HitRate,
        "mrr" => RetrievalKind::Mrr,
        "ndcg" => RetrievalKind::Ndcg,
        _ => return None,
    };
    Some(Metric::Retrieval { kind, k })
}

fn unknown(name: &str) -> EvalError {
    EvalError::UnknownMetric { name: name.to_string(), known: known_list() }
}

/// Name, version, scale and default threshold of metric `name`; `None` for
/// unknown names.
pub fn metric_info(name: &str) -> Option<MetricInfo> {
    let metric = parse(name)?;
    let (version, default_threshold) = match metric {
        // A row either matches or not, so only a match passes.
        Metric::ExactMatch => (squad::EXACT_MATCH_VERSION, 1.0),
        Metric::F1 => (squad::F1_VERSION, 0.5),
        Metric::Bleu => (bleu::BLEU_VERSION, 0.3),
        Metric::Gleu => (bleu::GLEU_VERSION, 0.3),
        Metric::Rouge { .. } => (rouge::ROUGE_VERSION, 0.4),
        // Hit rate is 0/1 per row: pass means "found something relevant".
        Metric::Retrieval { kind: RetrievalKind::HitRate, .. } => (retrieval::RETRIEVAL_VERSION, 1.0),
        Metric::Retrieval { .. } => (retrieval::RETRIEVAL_VERSION, 0.5),
    };
    Some(MetricInfo { name: name.to_string(), version, scale: 0.0..=1.0, default_threshold })
}

/// Whether `value` of metric `name` passes `threshold` (or the metric's
/// default threshold when `None`). NaN never passes.
pub fn passes(name: &str, value: f64, threshold: Option<f64>) -> Result<bool, EvalError> {
    let info = metric_info(name).ok_or_else(|| unknown(name))?;
    Ok(value >= threshold.unwrap_or(info.default_threshold))
}

/// Computes metric `name` for one row; `Ok(None)` when the row lacks the
/// fields the metric needs.
pub fn compute(name: &str, input: &ScoreInput) -> Result<Option<f64>, EvalError> {
    let metric = parse(name).ok_or_else(|| unknown(name))?;
    if let Metric::Retrieval { kind, k } = metric {
        let (Some(retrieved), Some(relevant)) = (&input.retrieved_doc_ids, &input.relevant_doc_ids) else {
            return Ok(None);
        };
        return Ok(retrieval::score(kind, k, retrieved, relevant));
    }
    let (Some(response), Some(truth)) = (input.response.as_deref(), input.ground_truth.as_deref()) else {
        return Ok(None);
    };
    let value = match metric {
        Metric::ExactMatch => squad::exact_match(response, truth),
        Metric::F1 => squad::f1(response, truth),
        Metric::Bleu => bleu::sentence_bleu(response, truth),
        Metric::Gleu => bleu::sentence_gleu(response, truth),
        Metric::Rouge { kind, stem, part } => {
            let s = rouge::score(kind, truth, response, stem);
            match part {
                RougePart::F => s.fmeasure,
                RougePart::Precision => s.precision,
                RougePart::Recall => s.recall,
            }
        }
        // Handled above; kept exhaustive so a new family cannot be forgotten.
        Metric::Retrieval { .. } => return Ok(None),
    };
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(response: &str, truth: &str) -> ScoreInput {
        ScoreInput {
            response: Some(response.into()),
            ground_truth: Some(truth.into()),
            ..ScoreInput::default()
        }
    }

    #[test]
    fn every_known_metric_computes_and_has_info() {
        let input = ScoreInput {
            retrieved_doc_ids: Some(vec!["d1".into(), "d2".into()]),
            relevant_doc_ids: Some(vec!["d2".into()]),
            ..text("The cat sat.", "the cat sat")
        };
        for name in known_metrics() {
            let v = compute(name, &input).ok().flatten();
            assert!(v.is_some_and(|v| (0.0..=1.0).contains(&v)), "{name} gave {v:?}");
            assert!(metric_info(name).is_some(), "{name} has no info");
        }
        assert_eq!(compute("mrr@1", &input).ok().flatten(), Some(0.0));
        assert_eq!(compute("mrr@2", &input).ok().flatten(), Some(0.5));
    }

    #[test]
    fn missing_fields_give_none() {
        let only_response = ScoreInput { response: Some("x".into()), ..ScoreInput::default() };
        assert_eq!(compute("f1", &only_response).ok(), Some(None));
        assert_eq!(compute("ndcg@3", &only_response).ok(), Some(None));
    }

    #[test]
    fn unknown_names_list_known_ones() {
        for bad in ["f2", "rouge3", "rougeL_stem_f", "ndcg@0", "ndcg@x", "hit_rate@", "bleu@4", ""] {
            match compute(bad, &ScoreInput::default()) {
                Err(EvalError::UnknownMetric { name, known }) => {
                    assert_eq!(name, bad);
                    assert!(known.contains("rougeL_stem_recall") && known.contains("ndcg"), "{known}");
                }
                other => panic!("{bad}: expected UnknownMetric, got {other:?}"),
            }
        }
    }

    #[test]
    fn info_and_pass_fail() {
        let info = metric_info("ndcg@5").unwrap_or_else(|| panic!("ndcg@5 should be known"));
        assert_eq!(info.name, "ndcg@5");
        assert_eq!(info.scale, 0.0..=1.0);
        assert_eq!(passes("exact_match", 1.0, None).ok(), Some(true));
        assert_eq!(passes("exact_match", 0.0, None).ok(), Some(false));
        assert_eq!(passes("f1", 0.3, Some(0.25)).ok(), Some(true));
        assert_eq!(passes("f1", f64::NAN, None).ok(), Some(false));
        assert!(passes("nope", 1.0, None).is_err());
    }

    /// Arbitrary text (control chars, combining marks, astral chars, HTML
    /// entities, digits around dots and dashes) never panics and always
    /// yields a finite value on the 0..1 scale.
    #[test]
    fn arbitrary_text_stays_in_range() {
        const POOL: &[&str] = &[
            "a",
            "an",
            "the",
            "ing",
            "ed",
            "yy",
            "sses",
            "ies",
            "ational",
            " ",
            "\t",
            "\n",
            "\u{1c}",
            "-",
            "-\n",
            ".",
            ",",
            "1",
            "0",
            "&amp;",
            "&lt;",
            "<skipped>",
            "é",
            "e\u{301}",
            "\u{93f}",
            "Ⓐ",
            "東",
            "😀",
            "İ",
            "K",
            "Σ",
            "ß",
            "'",
            "_",
            "\u{0}",
            "\u{feff}",
            "\u{200b}",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            // xorshift64: deterministic, no dependency needed for a test.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..400 {
            let mut random_text = || (0..next(12)).map(|_| POOL[next(POOL.len())]).collect::<String>();
            let input = text(&random_text(), &random_text());
            for name in text_metrics() {
                let v = compute(name, &input).ok().flatten();
                assert!(
                    v.is_some_and(|v| v.is_finite() && (0.0..=1.0 + 1e-12).contains(&v)),
                    "{name} on {input:?} gave {v:?}"
                );
            }
        }
    }

    #[test]
    fn text_values() {
        assert_eq!(compute("exact_match", &text("The answer!", "answer")).ok().flatten(), Some(1.0));
        let r = compute("rougeL_stem", &text("dogs running", "the dog runs")).ok().flatten();
        assert!(r.is_some_and(|v| (v - 0.8).abs() < 1e-12), "{r:?}");
    }
}
