//! API keys at rest: a key is kept only as its SHA-256 digest. The key file
//! (`gateway.api_keys_file`) holds one hex digest per line, optionally
//! followed by a label that logs use instead of the key; `#` starts a
//! comment. `meshops keys hash` prints the line for a key.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The SHA-256 digest of a key.
pub type KeyDigest = [u8; 32];

/// One accepted key, as the gateway holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub digest: KeyDigest,
    /// What logs and errors call the key; never the key itself.
    pub label: String,
}

/// The digest of `key` (surrounding whitespace ignored).
pub fn digest(key: &str) -> KeyDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(key.trim().as_bytes()));
    out
}

/// The line for `key` in a key file: its digest in lower-case hex.
pub fn hash_line(key: &str) -> String {
    digest(key).iter().map(|b| format!("{b:02x}")).collect()
}

/// A short, safe name for a digest (its first 8 hex digits).
pub fn digest_label(d: &KeyDigest) -> String {
    let hex: String = d.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Parses a key file's text. Errors name the line and say what is valid;
/// they never echo the line (it may hold a pasted key).
pub fn parse_key_file(text: &str) -> Result<Vec<ApiKey>, String> {
    let mut keys = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (hex, label) = match line.split_once(char::is_whitespace) {
            Some((h, l)) => (h, l.trim()),
            None => (line, ""),
        };
        let digest = parse_hex_digest(hex).ok_or_else(|| {
            format!(
                "line {}: expected a SHA-256 digest (64 hex digits, from `meshops keys hash`) \
                 optionally followed by a label",
                i + 1
            )
        })?;
        let label = if label.is_empty() { digest_label(&digest) } else { label.to_string() };
        keys.push(ApiKey { digest, label });
    }
    Ok(keys)
}

/// Reads and parses a key file.
pub fn read_key_file(path: &Path) -> Result<Vec<ApiKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_key_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_hex_digest(hex: &str) -> Option<KeyDigest> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Compares two digests without an early exit, so timing does not reveal
/// how much of a digest matched.
pub fn digests_equal(a: &KeyDigest, b: &KeyDigest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_parses_key_lines() {
        // sha256("s3cret"), as `printf s3cret | sha256sum` prints it.
        let line = hash_line("s3cret");
        assert_eq!(line, "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0");
        let text = format!("# keys\n\n{line} ci-runner  # the CI key\n{}\n", hash_line("other"));
        let keys = parse_key_file(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].label, "ci-runner");
        assert!(keys[1].label.starts_with("sha256:"));
        assert!(digests_equal(&keys[0].digest, &digest("s3cret")));
        assert!(!digests_equal(&keys[0].digest, &digest("s3cre")));
    }

    #[test]
    fn a_bad_line_names_its_number_and_never_echoes_it() {
        let err = parse_key_file("# ok\nmy-plain-secret-key\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("my-plain-secret-key"), "{err}");
    }
}
