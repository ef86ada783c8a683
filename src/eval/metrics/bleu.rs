//! Sentence BLEU as sacreBLEU computes it (`sacrebleu.sentence_bleu(hyp,
//! [ref])` with its defaults: `13a` tokenizer, case-sensitive, smoothing
//! `exp`, effective order on, max n-gram order 4), and NLTK's sentence GLEU
//! over the same `13a` tokens.
//!
//! BLEU is reported on 0..1 (sacreBLEU's score divided by 100).

use std::collections::HashMap;

use super::pystr;

/// Version of the BLEU implementation (bump on any behaviour change).
pub const BLEU_VERSION: &str = "sacrebleu-2.6.0:nrefs1|case.mixed|eff.yes|tok.13a|smooth.exp/1";
/// Version of the GLEU implementation (bump on any behaviour change).
pub const GLEU_VERSION: &str = "nltk-3.10.4:sentence_gleu(min_len=1,max_len=4)|tok.13a/1";

const MAX_ORDER: usize = 4;

/// sacreBLEU's `Tokenizer13a` applied the way `BLEU` applies it
/// (`tokenizer(sent.rstrip())`), returning the whitespace-separated tokens.
pub fn tokenize_13a(text: &str) -> Vec<String> {
    let mut line = pystr::rstrip(text).replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        // Sequential replaces, in sacreBLEU's order: "&amp;lt;" becomes "<".
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let padded: Vec<char> = format!(" {line} ").chars().collect();

    // r'([\{-\~\[-\` -\&\(-\+\:-\@\/])' -> r' \1 '
    let mut step1 = Vec::with_capacity(padded.len() * 2);
    for &c in &padded {
        let isolated = matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
        if isolated {
            step1.extend([' ', c, ' ']);
        } else {
            step1.push(c);
        }
    }
    // The next three are two-char patterns; `re.sub` scans left to right and
    // resumes after each match, which `sub_pairs` reproduces.
    // r'([^0-9])([\.,])' -> r'\1 \2 '
    let step2 = sub_pairs(
        &step1,
        |a, b| !a.is_ascii_digit() && matches!(b, '.' | ','),
        |a, b| [Some(a), Some(' '), Some(b), Some(' ')],
    );
    // r'([\.,])([^0-9])' -> r' \1 \2'
    let step3 = sub_pairs(
        &step2,
        |a, b| matches!(a, '.' | ',') && !b.is_ascii_digit(),
        |a, b| [Some(' '), Some(a), Some(' '), Some(b)],
    );
    // r'([0-9])(-)' -> r'\1 \2 '
    let step4 = sub_pairs(
        &step3,
        |a, b| a.is_ascii_digit() && b == '-',
        |a, b| [Some(a), Some(' '), Some(b), Some(' ')],
    );
    let joined: String = step4.into_iter().collect();
    pystr::split_whitespace(&joined).map(str::to_string).collect()
}

/// Non-overlapping left-to-right substitution of a two-character pattern.
fn sub_pairs(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char) -> [Option<char>; 4],
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        match (chars.get(i), chars.get(i + 1)) {
            (Some(&a), Some(&b)) if matches(a, b) => {
                out.extend(replace(a, b).into_iter().flatten());
                i += 2;
            }
            (Some(&a), _) => {
                out.push(a);
                i += 1;
            }
            (None, _) => break,
        }
    }
    out
}

/// Counts of all n-grams of orders `1..=max_order`.
fn ngram_counts(tokens: &[String], max_order: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for n in 1..=max_order {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// sacreBLEU's `my_log`: log with 0 mapped to a huge negative number.
fn my_log(x: f64) -> f64 {
    if x == 0.0 { -9_999_999_999.0 } else { x.ln() }
}

/// `sacrebleu.sentence_bleu(hypothesis, [reference]).score / 100`.
///
/// Surprising but faithful: an empty hypothesis, an empty reference, or no
/// matching unigram at all gives 0.0, even when both sides are empty
/// (sacreBLEU's "no matches" early return).
pub fn sentence_bleu(hypothesis: &str, reference: &str) -> f64 {
    let hyp = tokenize_13a(hypothesis);
    let reference = tokenize_13a(reference);
    let ref_counts = ngram_counts(&reference, MAX_ORDER);
    let mut correct = [0usize; MAX_ORDER];
    let mut total = [0usize; MAX_ORDER];
    for (gram, count) in ngram_counts(&hyp, MAX_ORDER) {
        let n = gram.len() - 1;
        total[n] += count;
        if let Some(r) = ref_counts.get(gram) {
            correct[n] += count.min(*r);
        }
    }
    let (sys_len, ref_len) = (hyp.len(), reference.len());
    let bp = if sys_len < ref_len {
        if sys_len > 0 { (1.0 - ref_len as f64 / sys_len as f64).exp() } else { 0.0 }
    } else {
        1.0
    };
    if correct.iter().all(|c| *c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; MAX_ORDER];
    let mut smooth_mteval = 1.0f64;
    let mut eff_order = MAX_ORDER;
    for n in 1..=MAX_ORDER {
        if total[n - 1] == 0 {
            break;
        }
        eff_order = n;
        if correct[n - 1] == 0 {
            smooth_mteval *= 2.0;
            precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1] as f64);
        } else {
            precisions[n - 1] = 100.0 * correct[n - 1] as f64 / total[n - 1] as f64;
        }
    }
    // Python's `sum` starts from 0 and adds in order; keep that order.
    let log_sum = precisions[..eff_order].iter().fold(0.0, |acc, p| acc + my_log(*p));
    let score = bp * (log_sum / eff_order as f64).exp();
    score / 100.0
}

/// `nltk.translate.gleu_score.sentence_gleu([ref_tokens], hyp_tokens,
/// min_len=1, max_len=4)` over `13a` tokens: matched n-grams (orders 1..4,
/// clipped counts) divided by the larger of the two n-gram totals; 0.0 when
/// both sides have no n-grams.
pub fn sentence_gleu(hypothesis: &str, reference: &str) -> f64 {
    let hyp = tokenize_13a(hypothesis);
    let reference = tokenize_13a(reference);
    let hyp_counts = ngram_counts(&hyp, MAX_ORDER);
    let ref_counts = ngram_counts(&reference, MAX_ORDER);
    let tpfp: usize = hyp_counts.values().sum();
    let tpfn: usize = ref_counts.values().sum();
    let tp: usize = ref_counts.iter().map(|(gram, r)| hyp_counts.get(gram).map_or(0, |h| (*h).min(*r))).sum();
    let n_all = tpfp.max(tpfn);
    if n_all == 0 { 0.0 } else { tp as f64 / n_all as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        tokenize_13a(s)
    }

    #[test]
    fn tokenizer_13a_cases() {
        assert_eq!(toks("Hello, world."), vec!["Hello", ",", "world", "."]);
        assert_eq!(toks("3.14 and 1,000 items"), vec!["3.14", "and", "1,000", "items"]);
        assert_eq!(toks("pre-trained 2-3 don't"), vec!["pre-trained", "2", "-", "3", "don't"]);
        assert_eq!(toks("a &amp; b &lt;x&gt;"), vec!["a", "&", "b", "<", "x", ">"]);
        assert_eq!(toks("  "), Vec::<String>::new());
    }

    #[test]
    fn bleu_identity_and_empty() {
        let s = "the quick brown fox jumps over the lazy dog";
        assert!((sentence_bleu(s, s) - 1.0).abs() < 1e-12);
        assert_eq!(sentence_bleu("", ""), 0.0);
        assert_eq!(sentence_bleu("cat", ""), 0.0);
    }

    #[test]
    fn gleu_simple() {
        // hyp n-grams: a, b, "a b" = 3; ref: a, b, c, "a b", "b c", "a b c" = 6; tp = 3.
        assert!((sentence_gleu("a b", "a b c") - 0.5).abs() < 1e-12);
        assert_eq!(sentence_gleu("", ""), 0.0);
    }
}
