//! SQuAD v2.0 exact match and token F1, as in the official evaluation script
//! (`evaluate-v2.0.py`: `normalize_answer`, `compute_exact`, `compute_f1`).
//!
//! Normalisation: lowercase, drop ASCII punctuation (`string.punctuation`),
//! replace the whole words `a`/`an`/`the` with a space, collapse whitespace.

use std::collections::HashMap;

use super::pystr;

/// Version of the exact-match implementation (bump on any behaviour change).
pub const EXACT_MATCH_VERSION: &str = "squad-v2.0/1";
/// Version of the F1 implementation (bump on any behaviour change).
pub const F1_VERSION: &str = "squad-v2.0/1";

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// `normalize_answer`, returning the tokens of the normalised string (the
/// script joins them with single spaces, so tokens carry the same content).
pub fn normalized_tokens(s: &str) -> Vec<String> {
    // Python's `str.lower()` is full Unicode lowercasing, like Rust's.
    let lowered = s.to_lowercase();
    let no_punct: Vec<char> = lowered.chars().filter(|c| !PUNCTUATION.contains(*c)).collect();
    let no_articles = remove_articles(&no_punct);
    pystr::split_whitespace(&no_articles).map(str::to_string).collect()
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)` with Python's Unicode `\b`.
/// A word boundary sits between a word and a non-word char, so an article
/// glued to e.g. `€` ("a€") still counts as a whole word, as in Python.
fn remove_articles(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len());
    let is_word = |i: usize| chars.get(i).is_some_and(|c| pystr::is_word_char(*c));
    let mut i = 0;
    while i < chars.len() {
        let at_boundary = i == 0 || !is_word(i - 1);
        if at_boundary && is_word(i) {
            // Alternation order a|an|the: "a" is tried first but fails the
            // trailing \b inside "an", so the effective match is the one
            // whose end is a boundary; at most one can be.
            let matched = ["a", "an", "the"].iter().find_map(|article| {
                let len = article.chars().count();
                let fits = chars.get(i..i + len).is_some_and(|w| w.iter().copied().eq(article.chars()));
                (fits && !is_word(i + len)).then_some(len)
            });
            if let Some(len) = matched {
                out.push(' ');
                i += len;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `compute_exact`: 1.0 when the normalised strings are equal, else 0.0.
pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    if normalized_tokens(prediction) == normalized_tokens(gold) { 1.0 } else { 0.0 }
}

/// `compute_f1`: harmonic mean of token precision and recall over the
/// multiset intersection. If either side has no tokens the score is 1.0
/// when both are empty and 0.0 otherwise.
pub fn f1(prediction: &str, gold: &str) -> f64 {
    let pred = normalized_tokens(prediction);
    let gold = normalized_tokens(gold);
    if pred.is_empty() || gold.is_empty() {
        return if pred == gold { 1.0 } else { 0.0 };
    }
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for t in &gold {
        *gold_counts.entry(t.as_str()).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &pred {
        if let Some(n) = gold_counts.get_mut(t.as_str()).filter(|n| **n > 0) {
            *n -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    // Same operation order as the script, so the floats agree bit for bit.
    let precision = 1.0 * same as f64 / pred.len() as f64;
    let recall = 1.0 * same as f64 / gold.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_the_script() {
        assert_eq!(normalized_tokens("The  Cat's hat, an apple!"), vec!["cats", "hat", "apple"]);
        assert_eq!(normalized_tokens("theatre a€b"), vec!["theatre", "€b"]);
        assert_eq!(normalized_tokens("...!"), Vec::<String>::new());
    }

    #[test]
    fn exact_and_f1_values() {
        assert_eq!(exact_match("The Eiffel Tower.", "eiffel tower"), 1.0);
        assert_eq!(exact_match("Eiffel", "eiffel tower"), 0.0);
        assert!((f1("eiffel", "eiffel tower") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f1("", ""), 1.0);
        assert_eq!(f1("the", "a"), 1.0, "both normalise to nothing");
        assert_eq!(f1("x", ""), 0.0);
    }
}
