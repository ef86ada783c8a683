//! Small text utilities shared by the offline embedder, the offline engine and
//! the evaluators: tokenisation, stop words, a light stemmer, sentence
//! splitting, a stable hash, hashed feature vectors and citation markers.
//!
//! The hashed vectors live here, not in `retrieval`, because two layers use
//! them: the offline embedder (`retrieval::embed::OfflineEmbedder`) and the
//! offline engine's router (`llm::offline`), and neither layer imports the
//! other.
//!
//! Everything here is deterministic and allocation-light: these functions sit
//! on the request path of the offline engine.

/// English stop words: function words that carry no topic and would make
/// unrelated questions look similar ("what is the …").
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could",
    "did", "do", "does", "doing", "down", "during", "each", "else", "few", "for", "from", "further", "get",
    "gets", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if",
    "in", "into", "is", "it", "its", "itself", "just", "let", "me", "more", "most", "my", "no", "nor", "not",
    "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own", "same",
    "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "then", "there",
    "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "us", "use", "used",
    "uses", "using", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
    "why", "will", "with", "would", "you", "your", "yours", "yourself", "tell", "please", "way", "ways",
    "thing", "things", "one", "ones", "many", "much", "may", "might", "must", "shall", "s", "t", "d", "ll",
    "re", "ve", "m", "don", "doesn", "isn", "aren", "won",
];

/// A word of at most 8 bytes packed into a `u64` (big-endian, zero
/// padded), so it compares as the word does.
fn pack8(word: &[u8]) -> Option<u64> {
    if word.len() > 8 {
        return None;
    }
    let mut bytes = [0u8; 8];
    bytes[..word.len()].copy_from_slice(word);
    Some(u64::from_be_bytes(bytes))
}

/// Whether `word` (already lowercased) is a stop word.
pub fn is_stop_word(word: &str) -> bool {
    // Every stop word fits in 8 bytes: packed, the list is a sorted array
    // of integers, searched without hashing or allocating. This runs for
    // every word the offline engine and the evaluators read.
    static PACKED: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
        let mut v: Vec<u64> = STOP_WORDS.iter().filter_map(|w| pack8(w.as_bytes())).collect();
        v.sort_unstable();
        v
    });
    pack8(word.as_bytes()).is_some_and(|w| PACKED.binary_search(&w).is_ok())
}

/// Lowercased alphanumeric tokens of `text`, in order. Apostrophes split
/// words ("don't" → "don", "t"); every other non-alphanumeric char separates.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() {
            cur.push(ch.to_ascii_lowercase());
        } else if !ch.is_ascii() && ch.is_alphanumeric() {
            cur.extend(ch.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Content words of `text`: tokens minus stop words, each reduced by
/// [`stem`]. This is what "the same topic" is measured on.
pub fn content_terms(text: &str) -> Vec<String> {
    tokens(text).into_iter().filter(|t| !is_stop_word(t)).map(stem_owned).collect()
}

/// A deliberately light suffix stripper (plural and common verb endings).
/// It only has to make "agents"/"agent" and "retries"/"retry" meet; a full
/// Porter stemmer lives with the evaluators that must match a reference.
pub fn stem(word: &str) -> String {
    stem_owned(word.to_string())
}

/// [`stem`] of an owned word, in place.
fn stem_owned(mut w: String) -> String {
    let n = w.len();
    if n <= 3 || !w.is_ascii() {
        return w;
    }
    for (suffix, replacement, min_stem) in
        [("ies", "y", 2), ("sses", "ss", 2), ("ing", "", 3), ("ed", "", 3), ("es", "", 3), ("s", "", 3)]
    {
        if let Some(base) = w.strip_suffix(suffix) {
            if base.len() >= min_stem && !(suffix == "s" && (base.ends_with('s') || base.ends_with('u'))) {
                w.truncate(n - suffix.len());
                w.push_str(replacement);
                return w;
            }
        }
    }
    w
}

/// Splits `text` into sentences at `.`, `!`, `?` followed by whitespace, and
/// at blank lines. Keeps the terminal punctuation; trims whitespace; drops
/// empty pieces. Markdown list items and headings become their own pieces.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        for line in block.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let mut start = 0;
            let bytes = line.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                let is_end = matches!(b, b'.' | b'!' | b'?')
                    && bytes.get(i + 1).is_none_or(|next| next.is_ascii_whitespace());
                if is_end {
                    let piece = line[start..=i].trim();
                    if !piece.is_empty() {
                        out.push(piece.to_string());
                    }
                    start = i + 1;
                }
            }
            let rest = line[start..].trim();
            if !rest.is_empty() {
                out.push(rest.to_string());
            }
        }
    }
    out
}

/// Joins lines that belong to one paragraph so sentences are not cut by
/// hard-wrapped Markdown. Blank lines, headings and list items stay breaks.
pub fn unwrap_paragraphs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev_blank = true;
    let mut prev_heading = false;
    for line in text.lines() {
        let t = line.trim();
        let is_block_start = t.is_empty()
            || t.starts_with('#')
            || t.starts_with("- ")
            || t.starts_with("* ")
            || t.starts_with('|')
            || t.starts_with("```")
            || t.chars().next().is_some_and(|c| c.is_ascii_digit()) && t.contains(". ");
        if t.is_empty() {
            out.push_str("\n\n");
            prev_blank = true;
            continue;
        }
        if !out.is_empty() && !prev_blank {
            out.push(if is_block_start || prev_heading { '\n' } else { ' ' });
        }
        out.push_str(t);
        prev_blank = false;
        prev_heading = t.starts_with('#');
    }
    out
}

/// 64-bit FNV-1a: a stable hash (unlike `std`'s `DefaultHasher`, it is
/// specified and never changes between releases), used for feature hashing
/// and deterministic choices.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Weight of a whole content term: the main topical signal.
const TERM_WEIGHT: f32 = 1.0;
/// Weight of an adjacent content-term pair: rewards shared phrases, but a
/// paraphrase rarely keeps word order, so it must not dominate.
const BIGRAM_WEIGHT: f32 = 0.5;
/// Weight of one character 3-gram: lets "retry"/"retries"/"retrying" and
/// compound words partially meet where the light stemmer misses. There are
/// many 3-grams per term, so each one counts little.
const TRIGRAM_WEIGHT: f32 = 0.25;

/// A deterministic vector of length `dimension` (at least 1: a zero
/// dimension is raised to 1 rather than dividing by zero later) for `text`,
/// by signed feature hashing ("the hashing trick") of its content terms,
/// content-term bigrams and character 3-grams of each term. L2-normalised,
/// so a dot product is the cosine similarity.
///
/// This is no semantic model, but texts about the same topic share stems
/// and sub-word pieces, so cosine similarity ranks them close: enough for
/// offline runs, tests and CI, where downloading a model is not an option.
pub fn hashed_vector(text: &str, dimension: usize) -> Vec<f32> {
    let dimension = dimension.max(1);
    let counts = features(text);
    let mut v = vec![0.0f32; dimension];
    // Iterate in key order (the map is sorted): float addition is not
    // associative, so a fixed order keeps the vector bit-for-bit identical
    // across runs.
    for (key, &(weight, count)) in &counts {
        let h = fnv1a64(key.as_bytes());
        // `dimension` fits in u64 on every supported target; the modulo
        // result is below `dimension`, so it fits back into usize.
        let bucket = (h % dimension as u64) as usize;
        // The sign comes from a high bit, independent of the low bits
        // that pick the bucket, so collisions cancel out on average
        // instead of piling up.
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        // Sublinear tf: a term repeated ten times is more important than
        // once, but not ten times more.
        let tf = 1.0 + (count as f32).ln();
        if let Some(slot) = v.get_mut(bucket) {
            *slot += sign * weight * tf;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON && norm.is_finite() {
        for x in &mut v {
            *x /= norm;
        }
        v
    } else {
        // No features (empty text, only stop words) or all features
        // cancelled: a zero vector has no cosine and NaN would poison a
        // store, so return a fixed unit vector instead.
        let c = 1.0 / (dimension as f32).sqrt();
        vec![c; dimension]
    }
}

/// Feature key → (kind weight, occurrence count). Keys carry a kind prefix so
/// the term "ing" and the 3-gram "ing" are different features.
fn features(text: &str) -> std::collections::BTreeMap<String, (f32, u32)> {
    let terms = content_terms(text);
    // Sorted by key: the order the vector is summed in (see hashed_vector).
    let mut out: std::collections::BTreeMap<String, (f32, u32)> = std::collections::BTreeMap::new();
    let mut key = String::new();
    let mut add = |key: &str, weight: f32| match out.get_mut(key) {
        Some(entry) => entry.1 += 1,
        None => {
            out.insert(key.to_string(), (weight, 1));
        }
    };
    for term in &terms {
        key.clear();
        key.push_str("w:");
        key.push_str(term);
        add(&key, TERM_WEIGHT);
        // Boundary markers make prefixes and suffixes distinct features.
        let chars: Vec<char> = std::iter::once('<').chain(term.chars()).chain(std::iter::once('>')).collect();
        for gram in chars.windows(3) {
            key.clear();
            key.push_str("c:");
            key.extend(gram);
            add(&key, TRIGRAM_WEIGHT);
        }
    }
    for pair in terms.windows(2) {
        if let [a, b] = pair {
            key.clear();
            key.push_str("b:");
            key.push_str(a);
            key.push(' ');
            key.push_str(b);
            add(&key, BIGRAM_WEIGHT);
        }
    }
    out
}

/// Removes `[n]` citation markers (`[1]`, `[2,3]`) from an answer, with the
/// space before one when punctuation follows; other brackets stay.
pub fn strip_citation_markers(answer: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(start) = rest.find('[') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find(']') {
            Some(end)
                if end > 0 && after[..end].chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') =>
            {
                rest = &after[end + 1..];
                if out.ends_with(' ') && rest.starts_with(['.', '!', '?', ',', ' ']) {
                    out.pop();
                }
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renumbers an answer's `[n]` citation markers (1-based indices into
/// `passages` passages) so that they index the passages the answer cites, in
/// order of first citation: `[3] … [1] … [3]` becomes `[1] … [2] … [1]`, and
/// the second value lists the cited passages' 0-based indices in that
/// order. A marker naming no passage (`[9]` of three) is dropped, with the
/// space before it when punctuation follows; brackets holding anything but
/// numbers and commas (`[x]`, `[]`) stay as written.
pub fn renumber_citations(answer: &str, passages: usize) -> (String, Vec<usize>) {
    let mut cited: Vec<usize> = Vec::new();
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(start) = rest.find('[') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let group = after.find(']').map(|end| (end, &after[..end]));
        match group {
            Some((end, inner))
                if !inner.trim().is_empty()
                    && inner
                        .split(',')
                        .all(|p| !p.trim().is_empty() && p.trim().bytes().all(|b| b.is_ascii_digit())) =>
            {
                let mut numbers: Vec<usize> = Vec::new();
                for n in inner.split(',').filter_map(|p| p.trim().parse::<usize>().ok()) {
                    if n == 0 || n > passages {
                        continue;
                    }
                    let at = match cited.iter().position(|&i| i == n - 1) {
                        Some(at) => at,
                        None => {
                            cited.push(n - 1);
                            cited.len() - 1
                        }
                    };
                    if !numbers.contains(&(at + 1)) {
                        numbers.push(at + 1);
                    }
                }
                rest = &after[end + 1..];
                if numbers.is_empty() {
                    if out.ends_with(' ') && rest.starts_with(['.', '!', '?', ',', ' ']) {
                        out.pop();
                    }
                } else {
                    let list: Vec<String> = numbers.iter().map(usize::to_string).collect();
                    out.push('[');
                    out.push_str(&list.join(", "));
                    out.push(']');
                }
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out, cited)
}

/// Rough token count of `text` for models that do not report usage: about
/// four characters per token, at least one per word. Callers must mark counts
/// from here as estimated.
pub fn estimate_tokens(text: &str) -> u64 {
    let (chars, words) = if text.is_ascii() {
        // The same counts as below, byte by byte: ASCII whitespace is
        // exactly what `char::is_whitespace` says of ASCII (VT included).
        let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
        let bytes = text.as_bytes();
        // A word starts where a non-space byte follows a space (or the
        // start): no loop-carried state, so the count vectorises.
        let first = bytes.first().is_some_and(|&b| !space(b));
        let starts = bytes.windows(2).filter(|w| space(w[0]) && !space(w[1])).count();
        (text.len() as u64, u64::from(first) + starts as u64)
    } else {
        (text.chars().count() as u64, text.split_whitespace().count() as u64)
    };
    (chars.div_ceil(4)).max(words)
}

#[cfg(test)]
mod tests {

    #[test]
    fn fast_paths_give_what_the_plain_definitions_give() {
        let plain_tokens = |t: &str| -> u64 {
            (t.chars().count() as u64).div_ceil(4).max(t.split_whitespace().count() as u64)
        };
        for t in [
            "",
            " ",
            "one",
            " two  words ",
            "tab\tand\x0bvt\x0cff\r\nend",
            "a b c d e f g h i j",
            "héllo wörld",
            "x\u{a0}y",
        ] {
            assert_eq!(estimate_tokens(t), plain_tokens(t), "{t:?}");
        }
        for w in STOP_WORDS {
            assert!(is_stop_word(w), "{w}");
        }
        for w in ["", "agent", "critic", "yourselves", "abouts", "aa", "zzzzzzzz", "thereafter", "é"] {
            assert_eq!(is_stop_word(w), STOP_WORDS.contains(&w), "{w}");
        }
        for (w, stemmed) in [
            ("retries", "retry"),
            ("agents", "agent"),
            ("running", "runn"),
            ("bus", "bus"),
            ("class", "class"),
            ("passes", "pass"),
            ("ran", "ran"),
            ("naïves", "naïves"),
        ] {
            assert_eq!(stem(w), stemmed, "{w}");
        }
    }
    use super::*;

    #[test]
    fn citations_renumber_to_the_cited_passages_in_order() {
        let (text, cited) = renumber_citations("B is so [3]. A too [1, 3]. Again [3].", 4);
        assert_eq!(text, "B is so [1]. A too [2, 1]. Again [1].");
        assert_eq!(cited, vec![2, 0]);
        // Out of range markers go (with their space); other brackets stay.
        let (text, cited) = renumber_citations("Gone [9]. Kept [x] and [] here [2,9].", 2);
        assert_eq!(text, "Gone. Kept [x] and [] here [1].");
        assert_eq!(cited, vec![1]);
        // Already in order: unchanged.
        let (text, cited) = renumber_citations("One [1]. Two [2].", 2);
        assert_eq!(text, "One [1]. Two [2].");
        assert_eq!(cited, vec![0, 1]);
    }

    #[test]
    fn strip_citation_markers_removes_citations_only() {
        assert_eq!(strip_citation_markers("A b [1]. C [2,3]! [x]"), "A b. C! [x]");
    }

    #[test]
    fn tokens_lowercase_and_split() {
        assert_eq!(tokens("Hello, World! gRPC-based"), vec!["hello", "world", "grpc", "based"]);
        assert_eq!(tokens("Ärger über STRASSE, naïve"), vec!["ärger", "über", "strasse", "naïve"]);
        assert!(is_stop_word("the") && is_stop_word("won") && !is_stop_word("agent"));
    }

    #[test]
    fn content_terms_drop_stop_words_and_stem() {
        assert_eq!(content_terms("What are the agents doing with documents?"), vec!["agent", "document"]);
        assert_eq!(content_terms("retries"), vec!["retry"]);
    }

    #[test]
    fn sentences_split_on_terminal_punctuation() {
        let s = sentences("One two. Three? Four!\n\nFive v1.2 here");
        assert_eq!(s, vec!["One two.", "Three?", "Four!", "Five v1.2 here"]);
    }

    #[test]
    fn unwrap_joins_wrapped_lines_but_keeps_lists() {
        let t = unwrap_paragraphs("a b\nc d\n\n- x\n- y\n# H\ntext");
        assert_eq!(t, "a b c d\n\n- x\n- y\n# H\ntext");
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn estimate_is_positive_for_words() {
        assert!(estimate_tokens("hi") >= 1);
        assert_eq!(estimate_tokens(""), 0);
    }
}
