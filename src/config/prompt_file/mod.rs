//! Prompty files as configuration: YAML front matter and a role-marked,
//! Jinja-templated body, read into a [`PromptFile`] and checked.
//!
//! A Prompty file (Microsoft's prompt format, v1) looks like
//!
//! ```text
//! ---
//! name: ExamplePrompt
//! model:
//!   api: chat
//!   parameters:
//!     max_tokens: 3000
//! ---
//! system:
//! You help {{firstName}}.
//!
//! user:
//! {{question}}
//! ```
//!
//! Loading reads and validates the front matter and checks that the body is
//! a valid template, so `meshops validate` reports every broken prompt file
//! by name and line before anything starts. Compiling the body for rendering
//! and rendering it into chat messages belong to the `prompt` layer
//! (`prompt::Prompty`), which builds on a [`PromptFile`].
//!
//! Loading never resolves `${env:…}` references (keys stay by reference in
//! memory and in errors); callers resolve them with
//! [`resolve_env_refs`](crate::config::resolve_env_refs) when they build a
//! client.

mod error;
mod front_matter;
mod header;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::PromptFileError;
pub use header::{PromptyConfiguration, PromptyInput, PromptyModel, PromptyParameters};

/// A Prompty file, read and checked: its front matter as plain data and its
/// template text.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptFile {
    /// `name`, or the file stem when the file has none.
    pub name: String,
    /// `description`, for listings.
    pub description: String,
    /// `authors`, as written.
    pub authors: Vec<String>,
    /// `version`, which the evaluation harness records with each judge.
    pub version: Option<String>,
    /// `tags`, as written.
    pub tags: Vec<String>,
    /// The `model` section: API, configuration and sampling parameters.
    pub model: PromptyModel,
    /// Declared inputs by name, with their defaults.
    pub inputs: BTreeMap<String, PromptyInput>,
    /// `outputs` as written (`Null` when absent).
    pub outputs: serde_json::Value,
    /// `sample` as written, or loaded from its `${file:…}`; an empty object
    /// when absent.
    pub sample: serde_json::Value,
    /// Top-level keys this module does not interpret, kept as written.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The template text after the front matter.
    pub body: String,
    /// The file, for errors and descriptions.
    pub path: PathBuf,
    /// Lines before the body, so template errors can report file lines.
    pub body_line_offset: usize,
}

impl PromptFile {
    /// Reads and checks a Prompty file.
    pub fn load(path: &Path) -> Result<PromptFile, PromptFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PromptFileError::Io { path: path.to_path_buf(), source })?;
        PromptFile::parse(&text, path)
    }

    /// Parses and checks Prompty text. `path` names the file in errors and
    /// anchors `${file:…}` references.
    pub fn parse(text: &str, path: &Path) -> Result<PromptFile, PromptFileError> {
        let split = front_matter::split(text, path)?;
        let header = front_matter::parse_header(split.yaml_padded.as_str(), path)?;
        check_template(split.body, path, split.body_line_offset)?;
        Ok(PromptFile {
            name: header.name,
            description: header.description,
            authors: header.authors,
            version: header.version,
            tags: header.tags,
            model: header.model,
            inputs: header.inputs,
            outputs: header.outputs,
            sample: header.sample,
            extra: header.extra,
            body: split.body.to_string(),
            path: path.to_path_buf(),
            body_line_offset: split.body_line_offset,
        })
    }
}

/// Checks that `body` parses as a Jinja template. Only the syntax is
/// checked here (the environment's rendering settings do not change what
/// parses); the `prompt` layer compiles the body it renders.
fn check_template(body: &str, path: &Path, line_offset: usize) -> Result<(), PromptFileError> {
    let mut env = minijinja::Environment::new();
    env.add_template("body", body).map_err(|e| PromptFileError::Template {
        path: path.to_path_buf(),
        message: describe_template_error(&e, line_offset),
    })
}

/// A minijinja error as text, with its line counted in the whole file (the
/// template only sees the body, which starts `line_offset` lines in).
pub fn describe_template_error(err: &minijinja::Error, line_offset: usize) -> String {
    let what = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    match err.line() {
        Some(line) => format!("{what} (line {})", line + line_offset),
        None => what,
    }
}
