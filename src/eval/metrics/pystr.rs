//! Python `str` semantics that the reference implementations rely on.
//!
//! The references are Python scripts, so "whitespace" and "word character"
//! mean what CPython says, not what Rust's `char` methods say. The two agree
//! except on a handful of control characters; matching CPython exactly keeps
//! parity on odd inputs instead of merely on typical ones.

/// CPython's `str.isspace()`: Rust's `White_Space` set plus the four
/// information separators U+001C..U+001F, which CPython also treats as
/// whitespace (bidirectional class B/S).
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// CPython's `str.split()` with no argument: runs of whitespace separate,
/// leading/trailing whitespace yields no empty pieces.
pub fn split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|piece| !piece.is_empty())
}

/// CPython's `str.rstrip()` with no argument.
pub fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

use super::pyword_table::RUST_ONLY_ALNUM;

/// Whether `c` matches `\w` in a CPython `re` pattern on `str` (Unicode
/// mode): `str.isalnum()` or `_`. Rust's `is_alphanumeric` also accepts
/// `Other_Alphabetic` marks (e.g. U+093F, Ⓐ) that CPython rejects; the
/// generated table removes exactly those, so "theⒶ" loses its article in
/// both languages.
pub fn is_word_char(c: char) -> bool {
    c == '_' || (c.is_alphanumeric() && !in_ranges(RUST_ONLY_ALNUM, u32::from(c)))
}

/// Whether `cp` falls in one of the sorted inclusive `[start, end]` pairs.
fn in_ranges(flat: &[u32], cp: u32) -> bool {
    // Index of the first pair whose end is >= cp; binary search over pairs.
    let pairs = flat.len() / 2;
    let (mut lo, mut hi) = (0usize, pairs);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if flat.get(2 * mid + 1).is_some_and(|end| *end < cp) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    flat.get(2 * lo).is_some_and(|start| *start <= cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_python_including_separators() {
        let got: Vec<&str> = split_whitespace("  a\u{1f}b\t\u{3000}c  ").collect();
        assert_eq!(got, vec!["a", "b", "c"]);
        assert_eq!(split_whitespace("").count(), 0);
    }

    #[test]
    fn word_chars_follow_python_isalnum() {
        for c in ['a', 'é', '東', '٣', '_', 'Ⅻ'] {
            assert!(is_word_char(c), "{c:?}");
        }
        for c in ['Ⓐ', 'ⓐ', '\u{93f}', '\u{301}', '-', ' ', '😀'] {
            assert!(!is_word_char(c), "{c:?}");
        }
    }

    #[test]
    fn rstrip_only_trailing() {
        assert_eq!(rstrip(" a b \n\u{1c}"), " a b");
    }
}
