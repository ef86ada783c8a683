//! The offline engine's stand-in for an LLM judge: deterministic text
//! heuristics that answer a [`TaskHint::Judge`](super::TaskHint::Judge) in
//! the judge's JSON format, `{"score": 1..5, "reason": "..."}`.
//!
//! Each criterion measures a share `s` in 0..1 and maps it to
//! `1 + round(4 s)`, so 0 → 1, ½ → 3 and 1 → 5. Answers are read with
//! their `[n]` citation markers removed; "content words" are
//! [`crate::text::content_terms`] (stop words dropped, lightly stemmed).
//!
//! | criterion | share `s` |
//! |---|---|
//! | `groundedness` | answer sentences with at least half of their content words in the context |
//! | `relevance` | the query's content words that the answer contains |
//! | `coherence` | (distinct sentences / sentences) × (sentences after the first that share a content word with the one before or with the query / sentences after the first) |
//! | `fluency` | well-formed sentences: ≥ 3 words, first letter upper-case (or a digit), ends in `.`, `!` or `?`, no word doubled ("the the"), no table or code markup |
//! | `similarity` | token F1 (multiset overlap of lower-cased words) between answer and ground truth |
//! | a rubric | the rubric's content words that the answer contains (crude: it cannot read the rubric's intent) |
//!
//! These are measurements of surface text, not judgements of meaning: a
//! fluent, on-topic, wrong answer scores well. They exist so the harness,
//! its reports and its gates run end to end without a model; the model
//! name (`offline-heuristic-judge`) says what produced the scores.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use crate::text;

/// The model name the offline judge reports.
pub const OFFLINE_JUDGE_MODEL: &str = "offline-heuristic-judge";

/// What one judge call is about.
#[derive(Debug, Clone, Copy)]
pub struct JudgeTask<'a> {
    pub criterion: &'a str,
    pub query: &'a str,
    pub response: &'a str,
    pub context: Option<&'a str>,
    pub ground_truth: Option<&'a str>,
    pub rubric: Option<&'a str>,
}

/// Maps a share in 0..1 to the 1–5 scale.
pub fn to_scale(share: f64) -> u8 {
    let s = if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.0 };
    1 + (4.0 * s).round() as u8
}

fn terms(s: &str) -> BTreeSet<String> {
    text::content_terms(s).into_iter().collect()
}

fn verdict(share: f64, reason: String) -> String {
    json!({"score": to_scale(share), "reason": format!("offline heuristic: {reason}")}).to_string()
}

/// Answers one judge task with the heuristic for its criterion (or its
/// rubric). An unknown criterion gets an answer that is not a verdict, so
/// the caller records a failure instead of a made-up score.
pub fn judge(task: &JudgeTask<'_>) -> String {
    let plain = text::strip_citation_markers(task.response);
    let sentences = text::sentences(&plain);
    if let Some(rubric) = task.rubric {
        let wanted = terms(rubric);
        let have = terms(&plain);
        let found = wanted.intersection(&have).count();
        let share = if wanted.is_empty() { 0.0 } else { found as f64 / wanted.len() as f64 };
        return verdict(
            share,
            format!("{found} of {} rubric content words appear in the answer", wanted.len()),
        );
    }
    match task.criterion {
        "groundedness" => {
            let ctx = terms(task.context.unwrap_or_default());
            let mut checked = 0usize;
            let mut supported = 0usize;
            for s in &sentences {
                let t = terms(s);
                if t.is_empty() {
                    continue;
                }
                checked += 1;
                if t.intersection(&ctx).count() * 2 >= t.len() {
                    supported += 1;
                }
            }
            if checked == 0 {
                return verdict(0.0, "the answer has no sentence with content words to check".into());
            }
            verdict(
                supported as f64 / checked as f64,
                format!(
                    "{supported} of {checked} answer sentences have at least half of their content words in the context"
                ),
            )
        }
        "relevance" => {
            let q = terms(task.query);
            let a = terms(&plain);
            if a.is_empty() {
                return verdict(0.0, "the answer has no content words".into());
            }
            if q.is_empty() {
                return verdict(1.0, "the query has no content words; any answer covers it".into());
            }
            let found = q.intersection(&a).count();
            verdict(
                found as f64 / q.len() as f64,
                format!("the answer contains {found} of the query's {} content words", q.len()),
            )
        }
        "coherence" => {
            if sentences.is_empty() {
                return verdict(0.0, "the answer has no sentences".into());
            }
            let lowered: BTreeSet<String> = sentences.iter().map(|s| s.to_lowercase()).collect();
            let distinct = lowered.len() as f64 / sentences.len() as f64;
            let q = terms(task.query);
            let sets: Vec<BTreeSet<String>> = sentences.iter().map(|s| terms(s)).collect();
            let linked = sets
                .windows(2)
                .filter(|w| {
                    w[1].intersection(&w[0]).next().is_some() || w[1].intersection(&q).next().is_some()
                })
                .count();
            let pairs = sentences.len() - 1;
            let connected = if pairs == 0 { 1.0 } else { linked as f64 / pairs as f64 };
            verdict(
                distinct * connected,
                format!(
                    "{} distinct of {} sentences; {linked} of {pairs} follow-on sentences share a content word with the one before or the query",
                    lowered.len(),
                    sentences.len()
                ),
            )
        }
        "fluency" => {
            if sentences.is_empty() {
                return verdict(0.0, "the answer has no sentences".into());
            }
            let good = sentences.iter().filter(|s| well_formed(s)).count();
            verdict(
                good as f64 / sentences.len() as f64,
                format!("{good} of {} sentences are well-formed", sentences.len()),
            )
        }
        "similarity" => {
            let Some(truth) = task.ground_truth else {
                return json!({"error": "similarity needs a ground truth"}).to_string();
            };
            let f1 = token_f1(&plain, truth);
            verdict(f1, format!("token F1 with the ground truth is {f1:.2}"))
        }
        other => json!({"error": format!("the offline judge has no heuristic for `{other}`")}).to_string(),
    }
}

/// A sentence that reads like prose: at least three words, starts with an
/// upper-case letter or a digit, ends with terminal punctuation, no word
/// twice in a row, no table or code markup.
fn well_formed(s: &str) -> bool {
    let words = text::tokens(s);
    let starts_well =
        s.chars().find(|c| c.is_alphanumeric()).is_some_and(|c| c.is_uppercase() || c.is_numeric());
    let ends_well = s.trim_end().ends_with(['.', '!', '?']);
    let doubled = words.windows(2).any(|w| w[0] == w[1]);
    let markup = s.contains("```") || s.contains(" | ") || s.trim_start().starts_with(['|', '#']);
    words.len() >= 3 && starts_well && ends_well && !doubled && !markup
}

/// Multiset overlap F1 of lower-cased word tokens.
fn token_f1(a: &str, b: &str) -> f64 {
    let ta = text::tokens(a);
    let tb = text::tokens(b);
    if ta.is_empty() || tb.is_empty() {
        return if ta.is_empty() && tb.is_empty() { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &tb {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut common = 0usize;
    for t in &ta {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let p = common as f64 / ta.len() as f64;
    let r = common as f64 / tb.len() as f64;
    2.0 * p * r / (p + r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        criterion: &str,
        query: &str,
        response: &str,
        context: Option<&str>,
        truth: Option<&str>,
    ) -> (u64, String) {
        let out =
            judge(&JudgeTask { criterion, query, response, context, ground_truth: truth, rubric: None });
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v["score"].as_u64().unwrap_or(0), v["reason"].as_str().unwrap_or_default().to_string())
    }

    #[test]
    fn scale_maps_shares() {
        assert_eq!(
            [to_scale(0.0), to_scale(0.5), to_scale(1.0), to_scale(0.3), to_scale(f64::NAN)],
            [1, 3, 5, 2, 1]
        );
    }

    #[test]
    fn groundedness_counts_supported_sentences() {
        let ctx = "The gateway listens on port 50051 by default.";
        let (s, r) = run("groundedness", "", "The gateway listens on port 50051 [1].", Some(ctx), None);
        assert_eq!(s, 5, "{r}");
        let (s, r) = run(
            "groundedness",
            "",
            "The gateway listens on port 50051. Bananas grow on tall trees.",
            Some(ctx),
            None,
        );
        assert_eq!(s, 3, "{r}");
        assert!(r.contains("1 of 2"), "{r}");
        assert_eq!(run("groundedness", "", "Purple elephants dance.", Some(ctx), None).0, 1);
    }

    #[test]
    fn relevance_coherence_fluency_similarity() {
        assert_eq!(run("relevance", "gateway port", "The gateway port is 50051.", None, None).0, 5);
        assert_eq!(run("relevance", "gateway port", "Bananas.", None, None).0, 1);
        assert_eq!(run("coherence", "q", "The gateway starts. The gateway stops.", None, None).0, 5);
        assert_eq!(run("coherence", "q", "The gateway starts. The gateway starts.", None, None).0, 3);
        assert_eq!(run("fluency", "", "The gateway starts quickly.", None, None).0, 5);
        assert_eq!(run("fluency", "", "the the gateway", None, None).0, 1);
        assert_eq!(run("similarity", "", "a b c d", None, Some("a b c d")).0, 5);
        assert_eq!(run("similarity", "", "x y", None, Some("a b")).0, 1);
    }

    #[test]
    fn unknown_criteria_are_not_verdicts() {
        let out = judge(&JudgeTask {
            criterion: "wit",
            query: "",
            response: "x",
            context: None,
            ground_truth: None,
            rubric: None,
        });
        assert!(out.contains("error") && !out.contains("score"), "{out}");
    }
}
