//! `${env:VAR}` and `${env:VAR:default}` references in configuration values.
//!
//! Prompty files keep secrets and endpoints by reference; these are resolved
//! only when a client is built, so a loaded file never holds a key.

use super::PromptError;

const OPEN: &str = "${env:";

/// Replaces every `${env:VAR}` / `${env:VAR:default}` in `value` with the
/// variable's value (or the default when the variable is unset). Text that is
/// not such a reference, including other `${…}` forms and an unterminated
/// `${env:`, is kept as written.
pub fn resolve_env_refs(value: &str) -> Result<String, PromptError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else {
            // Not a reference after all: keep the remainder verbatim.
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let reference = &after[..end];
        // The default may itself contain ':' (URLs), so split at the first.
        let (var, default) = match reference.split_once(':') {
            Some((var, default)) => (var.trim(), Some(default)),
            None => (reference.trim(), None),
        };
        match (std::env::var(var), default) {
            (Ok(found), _) if !var.is_empty() => out.push_str(&found),
            (_, Some(default)) => out.push_str(default),
            _ => {
                return Err(PromptError::Env { var: var.to_string() });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
