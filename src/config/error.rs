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
        Self::Field { file: file.to_string(), field: field.into(), message: message.into() }
    }

    pub(super) fn file(file: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::File { file: file.to_string(), message: message.into() }
    }
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
