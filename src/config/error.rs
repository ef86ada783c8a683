//! [`ConfigError`] and [`ConfigErrors`], and the helpers every check uses to
//! name the file that set a value and the names that would be valid.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A field holds something invalid (or is unknown, or missing).
    #[error("{file}: field `{field}`: {message}")]
    Field {
        /// The file (or environment variable) that set the field.
        file: String,
        /// The dotted field, as written in that file.
        field: String,
        /// What is wrong and what would be valid.
        message: String,
    },
    /// A field names an environment variable (an API key's) that is not set
    /// in this process: the files are right, the environment is not (yet).
    /// `meshops validate` reports it for the active configuration and
    /// notes it for an overlay checked on a machine it does not run on.
    #[error("{file}: field `{field}`: {message}")]
    Environment {
        /// The file that named the variable.
        file: String,
        /// The dotted field naming it.
        field: String,
        /// The variable that is not set.
        variable: String,
        /// What is needed.
        message: String,
    },
    /// The file itself could not be read or parsed.
    #[error("{file}: {message}")]
    File {
        /// The file (or environment variable).
        file: String,
        /// What is wrong, with a line where the parser gives one.
        message: String,
    },
}

impl ConfigError {
    pub(super) fn field(
        file: impl fmt::Display,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Field { file: file.to_string(), field: field.into(), message: with_suggestion(message.into()) }
    }

    pub(super) fn environment(
        file: impl fmt::Display,
        field: impl Into<String>,
        variable: &str,
        message: impl Into<String>,
    ) -> Self {
        Self::Environment {
            file: file.to_string(),
            field: field.into(),
            variable: variable.to_string(),
            message: message.into(),
        }
    }

    /// The environment variable this error waits for, when that is all it
    /// is about.
    pub fn missing_variable(&self) -> Option<&str> {
        match self {
            Self::Environment { variable, .. } => Some(variable),
            Self::Field { .. } | Self::File { .. } => None,
        }
    }

    pub(super) fn file(file: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::File { file: file.to_string(), message: with_suggestion(message.into()) }
    }
}

/// `message` with "did you mean `x`?" added when it is a deserializer's
/// unknown-field (or unknown-variant) error — `unknown field `max_query_char`,
/// expected one of `listen`, `max_query_chars`, …` — and one of the expected
/// names is close to the unknown one: a typo is the usual cause, and the
/// list alone makes the reader find it.
fn with_suggestion(message: String) -> String {
    let Some((unknown, expected)) = unknown_and_expected(&message) else { return message };
    match closest(unknown, &expected) {
        Some(best) => format!("{message}; did you mean `{best}`?"),
        None => message,
    }
}

/// The unknown name and the expected ones, from serde's wording (figment
/// and toml both use it).
fn unknown_and_expected(message: &str) -> Option<(&str, Vec<&str>)> {
    let start =
        ["unknown field `", "unknown variant `"].iter().find_map(|p| message.find(p).map(|i| i + p.len()))?;
    let rest = &message[start..];
    let end = rest.find('`')?;
    let unknown = &rest[..end];
    let tail = &rest[end + 1..];
    let expected_at = tail.find("expected")?;
    let expected: Vec<&str> = tail[expected_at..].split('`').skip(1).step_by(2).collect();
    Some((unknown, expected))
}

/// The expected name nearest to `unknown` by edit distance, if it is near
/// enough to be a typo (at most a third of its length, and at least 1).
fn closest<'a>(unknown: &str, expected: &[&'a str]) -> Option<&'a str> {
    let limit = (unknown.chars().count() / 3).max(1);
    expected
        .iter()
        .map(|name| (strsim::damerau_levenshtein(unknown, name), *name))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Every problem found while loading, reported together so one
/// `meshops validate` run shows them all.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The file that most likely set `path` (dotted): the last layer whose TOML
/// holds it, else the main settings file.
pub(super) fn locate(path: &[String], layers: &[PathBuf]) -> String {
    for layer in layers.iter().rev() {
        let Ok(text) = std::fs::read_to_string(layer) else { continue };
        let Ok(value) = text.parse::<toml::Table>() else { continue };
        let mut cur = toml::Value::Table(value);
        let mut found = true;
        for key in path {
            match cur.get(key) {
                Some(next) => cur = next.clone(),
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            return layer.display().to_string();
        }
    }
    match layers.first() {
        Some(first) => first.display().to_string(),
        None => "config/meshops.toml".into(),
    }
}

/// [`locate`] for a path written as string slices.
pub(super) fn locate_at(path: &[&str], layers: &[PathBuf]) -> String {
    locate(&path.iter().map(|p| p.to_string()).collect::<Vec<_>>(), layers)
}

/// The names of `map`, for "known: …" in messages.
pub(super) fn known<V>(map: &BTreeMap<String, V>) -> String {
    let names: Vec<&str> = map.keys().map(String::as_str).collect();
    if names.is_empty() { "(none)".into() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_field_near_a_valid_one_is_suggested() {
        let m = "unknown field `max_query_char`, expected one of `listen`, `max_query_chars`, `tls`";
        assert_eq!(with_suggestion(m.into()), format!("{m}; did you mean `max_query_chars`?"));
        let variant = "unknown variant `sqllite`, expected `sqlite` or `postgres`";
        assert!(with_suggestion(variant.into()).ends_with("did you mean `sqlite`?"));
        // Nothing close: the message stays as it is.
        let far = "unknown field `colour`, expected one of `listen`, `tls`";
        assert_eq!(with_suggestion(far.into()), far);
        assert_eq!(with_suggestion("missing field `x`".into()), "missing field `x`");
    }
}
