//! ROUGE-1, ROUGE-2 and ROUGE-L (precision, recall, F1) as Google's
//! `rouge-score` package computes them: `RougeScorer([...], use_stemmer=...)
//! .score(target=ground_truth, prediction=response)` with its default
//! tokenizer (lowercase, every run of characters outside `[a-z0-9]` is a
//! separator; with the stemmer, tokens longer than 3 chars go through NLTK's
//! Porter stemmer, see [`super::porter`]).

use std::collections::HashMap;

use super::porter;

/// Version of the ROUGE implementation (bump on any behaviour change).
pub const ROUGE_VERSION: &str = "rouge-score-0.1.2|nltk-porter-3.10.4/1";

/// Precision, recall and F1 of one ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

/// Which ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RougeKind {
    /// ROUGE-N with the given n.
    N(usize),
    /// Longest common subsequence.
    L,
}

/// `rouge_score.tokenize.tokenize(text, stemmer)`.
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    // Python's `lower()` can turn non-ASCII into ASCII (KELVIN SIGN -> "k"),
    // so lowercase the whole text before filtering to [a-z0-9].
    let lowered = text.to_lowercase();
    lowered
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| if use_stemmer && t.len() > 3 { porter::stem(t) } else { t.to_string() })
        // The package's final check drops tokens that are no longer
        // [a-z0-9]+; the stemmer never produces those, but keep the guard.
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .collect()
}

/// `scoring.fmeasure`.
fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 }
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if n == 0 {
        return counts;
    }
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

/// `_score_ngrams`: clipped overlap over max(count, 1) on each side.
fn score_ngrams(target: &[String], prediction: &[String], n: usize) -> RougeScore {
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let overlap: usize = t.iter().map(|(g, c)| p.get(g).map_or(0, |pc| (*c).min(*pc))).sum();
    let t_total: usize = t.values().sum();
    let p_total: usize = p.values().sum();
    let precision = overlap as f64 / p_total.max(1) as f64;
    let recall = overlap as f64 / t_total.max(1) as f64;
    RougeScore { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/// Length of the longest common subsequence (two-row DP).
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `_score_lcs`: all zeros when either side has no tokens.
fn score_lcs(target: &[String], prediction: &[String]) -> RougeScore {
    if target.is_empty() || prediction.is_empty() {
        return RougeScore { precision: 0.0, recall: 0.0, fmeasure: 0.0 };
    }
    let lcs = lcs_len(target, prediction) as f64;
    let precision = lcs / prediction.len() as f64;
    let recall = lcs / target.len() as f64;
    RougeScore { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/// Scores `prediction` (the response) against `target` (the ground truth).
pub fn score(kind: RougeKind, target: &str, prediction: &str, use_stemmer: bool) -> RougeScore {
    let t = tokenize(target, use_stemmer);
    let p = tokenize(prediction, use_stemmer);
    match kind {
        RougeKind::N(n) => score_ngrams(&t, &p, n),
        RougeKind::L => score_lcs(&t, &p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_lowercases_and_splits() {
        assert_eq!(
            tokenize("Don't STOP—the 2nd café!", false),
            vec!["don", "t", "stop", "the", "2nd", "caf"]
        );
        assert_eq!(tokenize("running dogs ran", true), vec!["run", "dog", "ran"]);
        assert!(tokenize("¿¡…!", false).is_empty());
    }

    #[test]
    fn rouge_values() {
        let r1 = score(RougeKind::N(1), "the cat sat on the mat", "the cat on the mat", false);
        assert!((r1.precision - 1.0).abs() < 1e-12);
        assert!((r1.recall - 5.0 / 6.0).abs() < 1e-12);
        let l = score(RougeKind::L, "a b c d", "a c b d", false);
        assert!((l.fmeasure - 0.75).abs() < 1e-12);
        let empty = score(RougeKind::N(2), "", "", false);
        assert_eq!(empty.fmeasure, 0.0);
    }
}
