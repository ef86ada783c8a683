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

/// Whether `c` matches `\w` in a CPython `re` pattern on `str` (Unicode
/// mode): `str.isalnum()` or `_`. Rust's `is_alphanumeric` is the closest
/// stable approximation of `isalnum` (they differ only for some combining
/// marks, which Rust counts as alphabetic).
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
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
    fn rstrip_only_trailing() {
        assert_eq!(rstrip(" a b \n\u{1c}"), " a b");
    }
}
