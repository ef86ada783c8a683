//! `${env:VAR}` and `${env:VAR:default}` references in configuration values
//! (model profiles' `base_url` and `api_version`, prompt files'
//! `model.configuration`), and the variable an `api_key_env` setting names.
//!
//! Files keep secrets and endpoints by reference; references are resolved
//! only when a client is built (and when validation checks a URL), so a
//! loaded file never holds a key. Plain string work: the `llm` layer resolves
//! with the same functions validation uses.

const OPEN: &str = "${env:";

/// A `${env:VAR}` reference to a variable that is not set, with no default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable `{var}` is not set and its `${{env:{var}}}` reference has no default")]
pub struct EnvRefError {
    /// The variable named by the reference, so the message says which one
    /// to set.
    pub var: String,
}

/// Replaces every `${env:VAR}` / `${env:VAR:default}` in `value` with the
/// variable's value (or the default when the variable is unset). Text that is
/// not such a reference, including other `${…}` forms and an unterminated
/// `${env:`, is kept as written.
pub fn resolve_env_refs(value: &str) -> Result<String, EnvRefError> {
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
                return Err(EnvRefError { var: var.to_string() });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The environment variable named by an `api_key_env` setting, accepting
/// `NAME`, `${env:NAME}` and `${env:NAME:default}` (a key has no useful
/// default, so the default is ignored here: the variable is what to set).
pub fn api_key_var(api_key_env: &str) -> &str {
    let trimmed = api_key_env.trim();
    match trimmed.strip_prefix("${env:").and_then(|rest| rest.strip_suffix('}')) {
        Some(reference) => reference.split_once(':').map_or(reference, |(var, _)| var).trim(),
        None => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_refs() {
        // PATH is set in any test environment; the other name is not.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(resolve_env_refs("p=${env:PATH}!").unwrap(), format!("p={path}!"));
        assert_eq!(
            resolve_env_refs("${env:MESHOPS_SURELY_UNSET_VAR:http://localhost:8080}").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(resolve_env_refs("${env:MESHOPS_SURELY_UNSET_VAR:}").unwrap(), "");
        assert_eq!(resolve_env_refs("plain ${file:x} ${env:open").unwrap(), "plain ${file:x} ${env:open");
        let err = resolve_env_refs("key=${env:MESHOPS_SURELY_UNSET_VAR}").unwrap_err();
        assert!(matches!(err, EnvRefError { ref var } if var == "MESHOPS_SURELY_UNSET_VAR"));
        assert!(err.to_string().contains("MESHOPS_SURELY_UNSET_VAR"));
    }

    #[test]
    fn api_key_var_accepts_both_forms() {
        assert_eq!(api_key_var("OPENAI_API_KEY"), "OPENAI_API_KEY");
        assert_eq!(api_key_var("${env:OPENAI_API_KEY}"), "OPENAI_API_KEY");
        assert_eq!(api_key_var("  ${env: KEY }  "), "KEY");
        assert_eq!(api_key_var("${env:OPENAI_API_KEY:sk-none}"), "OPENAI_API_KEY");
    }
}
