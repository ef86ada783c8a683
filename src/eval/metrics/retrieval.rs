//! Retrieval metrics over ranked doc ids with binary relevance: hit rate,
//! mean reciprocal rank and nDCG, each cut off at rank `k`.
//!
//! Duplicates in the retrieved list are counted once, at their first
//! position, and later copies are removed before ranks are assigned: a system
//! must not earn extra gain by citing the same document twice, and a repeat
//! should not push other documents down. Duplicates in the relevant list are
//! likewise collapsed (it is a set).

use std::collections::HashSet;

/// Version of the retrieval metrics (bump on any behaviour change).
pub const RETRIEVAL_VERSION: &str = "binary-relevance|dedup-first|log2/1";

/// The default cutoff for `hit_rate`, `mrr` and `ndcg` without `@k`.
pub const DEFAULT_K: usize = 10;

/// Which retrieval metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalKind {
    HitRate,
    Mrr,
    Ndcg,
}

/// Retrieved ids with duplicates removed (first occurrence kept), cut at `k`.
fn top_k(retrieved: &[String], k: usize) -> Vec<&str> {
    let mut seen = HashSet::new();
    retrieved.iter().map(String::as_str).filter(|id| seen.insert(*id)).take(k).collect()
}

/// Computes the metric; `None` when `relevant` is empty (nothing to find, so
/// the row cannot be judged; nDCG would be 0/0).
pub fn score(kind: RetrievalKind, k: usize, retrieved: &[String], relevant: &[String]) -> Option<f64> {
    let relevant: HashSet<&str> = relevant.iter().map(String::as_str).collect();
    if relevant.is_empty() {
        return None;
    }
    let top = top_k(retrieved, k);
    let first_hit = top.iter().position(|id| relevant.contains(id));
    Some(match kind {
        RetrievalKind::HitRate => {
            if first_hit.is_some() {
                1.0
            } else {
                0.0
            }
        }
        RetrievalKind::Mrr => first_hit.map_or(0.0, |i| 1.0 / (i as f64 + 1.0)),
        RetrievalKind::Ndcg => {
            // Gain 1 at 0-based rank i is discounted by log2(i + 2).
            let dcg: f64 = top
                .iter()
                .enumerate()
                .filter(|(_, id)| relevant.contains(*id))
                .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
                .sum();
            let ideal: f64 = (0..k.min(relevant.len())).map(|i| 1.0 / (i as f64 + 2.0).log2()).sum();
            if ideal > 0.0 { dcg / ideal } else { 0.0 }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hit_mrr_ndcg() {
        let retrieved = ids(&["x", "a", "y", "b"]);
        let relevant = ids(&["a", "b"]);
        assert_eq!(score(RetrievalKind::HitRate, 1, &retrieved, &relevant), Some(0.0));
        assert_eq!(score(RetrievalKind::HitRate, 2, &retrieved, &relevant), Some(1.0));
        assert_eq!(score(RetrievalKind::Mrr, 10, &retrieved, &relevant), Some(0.5));
        let dcg = 1.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        let got = score(RetrievalKind::Ndcg, 10, &retrieved, &relevant).unwrap_or(f64::NAN);
        assert!((got - dcg / idcg).abs() < 1e-12);
    }

    #[test]
    fn duplicates_count_once_and_do_not_push_ranks() {
        let retrieved = ids(&["a", "a", "a", "b"]);
        let relevant = ids(&["a", "b"]);
        // Deduplicated list is [a, b]: a perfect ranking.
        assert_eq!(score(RetrievalKind::Ndcg, 2, &retrieved, &relevant), Some(1.0));
    }

    #[test]
    fn empty_relevant_is_not_applicable() {
        assert_eq!(score(RetrievalKind::Mrr, 10, &ids(&["a"]), &[]), None);
        assert_eq!(score(RetrievalKind::Ndcg, 10, &[], &ids(&["a"])), Some(0.0));
    }
}
