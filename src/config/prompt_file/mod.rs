//! Prompty files as configuration: YAML front matter and a role-marked,
//! Jinja-templated body, read into a [`PromptFile`] and checked.
//!
//! Both versions of Microsoft's format load. A v1 file looks like
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
//! and a v2 file (the 2026 spec: `spec/spec.md` in microsoft/prompty) like
//!
//! ```text
//! ---
//! name: ExamplePrompt
//! model:
//!   id: gpt-4o
//!   options:
//!     maxOutputTokens: 3000
//! inputs:
//!   - name: firstName
//!     kind: string
//!     default: Jane
//! ---
//! system:
//! You help {{firstName}}.
//! ```
//!
//! and a file with no front matter at all is a template-only prompt. The
//! spellings of both versions read into one [`PromptFile`]: `inputs` as a
//! v1 map or a v2 list, `model` as an id or a mapping with v1
//! `parameters` or v2 `options`, `template` as a name or `{format: {kind}}`,
//! plus v2 `tools`, `outputs` (as a JSON Schema in
//! [`PromptFile::output_schema`]) and `thread` inputs.
//!
//! Loading reads and validates the front matter and checks that the body is
//! a valid template, so `meshops validate` reports every broken prompt file
//! by name and line before anything starts. A feature meshops lacks (a
//! provider with no client, an `openapi` tool, a Mustache body) is not an
//! error: the file loads and the feature is listed by name in
//! [`PromptFile::unsupported`], which `meshops validate` prints. Compiling
//! the body for rendering and rendering it into chat messages belong to the
//! `prompt` layer (`prompt::Prompty`), which builds on a [`PromptFile`].
//!
//! `${file:…}` references are read at load, relative to the file.
//! `${env:…}` references to keys and endpoints (`model.connection`,
//! `model.configuration`, `tools`) stay as written (keys stay by reference
//! in memory and in errors; callers resolve them with
//! [`resolve_env_refs`](crate::config::resolve_env_refs) when they build a
//! client); elsewhere they are resolved at load (see `refs.rs`).

mod error;
mod front_matter;
mod header;
mod model;
mod properties;
mod refs;
mod template;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::PromptFileError;
pub use header::{
    PromptyConfiguration, PromptyInput, PromptyModel, PromptyParameters, PromptyTemplate, PromptyTool,
    TemplateEngine,
};

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
    /// Declared inputs by name, with their defaults (v1 map and v2 list
    /// alike).
    pub inputs: BTreeMap<String, PromptyInput>,
    /// `outputs` as written (`Null` when absent).
    pub outputs: serde_json::Value,
    /// The answer's JSON Schema, from `outputs` (v1 map or v2 list) or a v1
    /// `response_format` of type `json_schema`: what a structured-output
    /// request sends as `response_format` and checks the reply against.
    /// `None` when the prompt declares no outputs.
    pub output_schema: Option<serde_json::Value>,
    /// `template`: the format and parser written, and how meshops renders
    /// the body.
    pub template: PromptyTemplate,
    /// `tools` (and v1 `model.parameters.tools`), as plain data.
    pub tools: Vec<PromptyTool>,
    /// Features the file uses that meshops does not support, each named
    /// (with what happens instead), for `meshops validate`. Loading never
    /// fails for these.
    pub unsupported: Vec<String>,
    /// `sample` as written, or loaded from its `${file:…}`; an empty object
    /// when absent.
    pub sample: serde_json::Value,
    /// Top-level keys this module does not interpret, kept as written.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The template text after the front matter (the whole file when it
    /// has none), as written.
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
        let mut header = match &split.yaml_padded {
            Some(yaml) => front_matter::parse_header(yaml, path)?,
            None => front_matter::Header::empty(path),
        };
        let mut engine = template::engine_for(&header.template.format, split.body);
        // No format written, and a body in Mustache that is not Jinja2:
        // read it as Mustache, the default of langchain-prompty and the
        // Azure AI Inference SDK, which such files were written for.
        let inferred = !header.template_declared
            && template::looks_like_mustache(split.body)
            && !template::parses(split.body);
        if inferred {
            header.template.format = "mustache".to_string();
            engine = template::engine_for("mustache", split.body);
        }
        header.template.engine = engine;
        if !template::JINJA_FORMATS.contains(&header.template.format.as_str()) {
            let note = template::engine_note(engine);
            let given = if inferred { ", not given: the body is written in it" } else { "" };
            header
                .unsupported
                .insert(0, format!("template format `{}`{given} ({note})", header.template.format));
        }
        check_template(&template::source(engine, split.body), path, split.body_line_offset)?;
        Ok(PromptFile {
            name: header.name,
            description: header.description,
            authors: header.authors,
            version: header.version,
            tags: header.tags,
            model: header.model,
            inputs: header.inputs,
            outputs: header.outputs,
            output_schema: header.output_schema,
            template: header.template,
            tools: header.tools,
            unsupported: header.unsupported,
            sample: header.sample,
            extra: header.extra,
            body: split.body.to_string(),
            path: path.to_path_buf(),
            body_line_offset: split.body_line_offset,
        })
    }

    /// The Jinja2 source the `prompt` layer compiles: the body as written,
    /// or rewritten when it was written for another format (see
    /// [`TemplateEngine`]). Line numbers match the body's.
    pub fn template_source(&self) -> Cow<'_, str> {
        template::source(self.template.engine, &self.body)
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
