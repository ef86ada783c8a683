//! The YAML front matter of a Prompty file: finding it, then reading each
//! known field with its own type check (the model in `model.rs`, inputs,
//! outputs and tools in `properties.rs`).
//!
//! Fields are read from a generic YAML value rather than through serde
//! derive so that every error names the exact field
//! (`model.parameters.temperature`) and what it accepts, and so that
//! unknown keys can be kept instead of rejected.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::error::PromptFileError;
use super::header::{PromptyInput, PromptyModel, PromptyTemplate, PromptyTool};
use super::refs;

/// A file cut into front matter and body.
pub(crate) struct Split<'a> {
    /// The YAML, preceded by blank lines so YAML errors report file lines;
    /// `None` for a file without front matter (all body).
    pub yaml_padded: Option<String>,
    /// The template text after the front matter.
    pub body: &'a str,
    /// Lines of the file before the body.
    pub body_line_offset: usize,
}

/// Whether `line` is a front matter delimiter: `---` (or `+++`, which the
/// v2 spec allows), with surrounding blanks.
fn is_delimiter(line: &str) -> bool {
    matches!(line.trim(), "---" | "+++")
}

/// Cuts `text` at its delimiter lines. Leading blank lines and a BOM are
/// allowed before the opening line. A file whose first non-blank line is
/// not a delimiter has no front matter: it is all template (a v2
/// "shorthand" prompt).
pub(crate) fn split<'a>(text: &'a str, path: &Path) -> Result<Split<'a>, PromptFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let error = |message: String| PromptFileError::FrontMatter { path: path.to_path_buf(), message };
    let mut pos = 0;
    let mut line_no = 0;
    let mut opening: Option<(usize, usize)> = None; // (line number, yaml start)
    for line in text.split_inclusive('\n') {
        line_no += 1;
        pos += line.len();
        match opening {
            None if line.trim().is_empty() => {}
            None if is_delimiter(line) => opening = Some((line_no, pos)),
            None => return Ok(Split { yaml_padded: None, body: text, body_line_offset: 0 }),
            Some((open_line, yaml_start)) if is_delimiter(line) => {
                let yaml = &text[yaml_start..pos - line.len()];
                return Ok(Split {
                    yaml_padded: Some(format!("{}{yaml}", "\n".repeat(open_line))),
                    body: &text[pos..],
                    body_line_offset: line_no,
                });
            }
            Some(_) => {}
        }
    }
    Err(error(match opening {
        Some((open_line, _)) => {
            format!("the `---` on line {open_line} is never closed by another `---` line")
        }
        None => {
            "the file is empty; expected a template, with or without YAML front matter between `---` lines"
                .to_string()
        }
    }))
}

/// Everything the front matter says.
pub(crate) struct Header {
    pub name: String,
    pub description: String,
    pub authors: Vec<String>,
    pub version: Option<String>,
    pub tags: Vec<String>,
    pub model: PromptyModel,
    pub inputs: BTreeMap<String, PromptyInput>,
    pub outputs: serde_json::Value,
    pub output_schema: Option<serde_json::Value>,
    pub sample: serde_json::Value,
    pub template: PromptyTemplate,
    /// Whether the file says its `template` format (an undeclared one may
    /// be read as Mustache when the body is written in it).
    pub template_declared: bool,
    pub tools: Vec<PromptyTool>,
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Features the file uses that meshops does not support, by name.
    pub unsupported: Vec<String>,
}

impl Header {
    /// The header of a file with no front matter (or an empty one).
    pub(crate) fn empty(path: &Path) -> Header {
        Header {
            name: path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default(),
            description: String::new(),
            authors: Vec::new(),
            version: None,
            tags: Vec::new(),
            model: PromptyModel::default(),
            inputs: BTreeMap::new(),
            outputs: serde_json::Value::Null,
            output_schema: None,
            sample: serde_json::Value::Object(serde_json::Map::new()),
            template: PromptyTemplate::default(),
            template_declared: false,
            tools: Vec::new(),
            extra: BTreeMap::new(),
            unsupported: Vec::new(),
        }
    }
}

/// Parses and checks the front matter YAML: references first (`refs`),
/// then each known field with its own reader. Prompty v1 and v2 spellings
/// both read; unknown top-level keys are kept in `extra`.
pub(crate) fn parse_header(yaml: &str, path: &Path) -> Result<Header, PromptFileError> {
    let front_matter_error =
        |message: String| PromptFileError::FrontMatter { path: path.to_path_buf(), message };
    let mut root: Value =
        serde_yaml_ng::from_str(yaml).map_err(|e| front_matter_error(format!("invalid YAML: {e}")))?;
    root.apply_merge().map_err(|e| front_matter_error(format!("invalid YAML merge key: {e}")))?;
    if !matches!(root, Value::Null | Value::Mapping(_)) {
        return Err(front_matter_error(format!(
            "expected a YAML mapping of fields, got {}",
            yaml_kind(&root)
        )));
    }
    let notes = refs::resolve(&mut root, path)?;
    let empty = Mapping::new();
    let root = root.as_mapping().unwrap_or(&empty);

    let mut cx = Cx { path, unsupported: notes, tools: Vec::new(), response_schema: None };
    let mut header = Header::empty(path);
    let mut outputs: Option<(&str, &Value)> = None;
    for (key, value) in root {
        let key = cx.key(key, "")?;
        // An empty field (`description:`) means "not given".
        if value.is_null() {
            continue;
        }
        match key {
            "name" => header.name = cx.scalar_string(value, key)?,
            "description" => header.description = cx.scalar_string(value, key)?,
            "authors" => header.authors = cx.string_list(value, key)?,
            "version" => header.version = Some(cx.scalar_string(value, key)?),
            "tags" => header.tags = cx.string_list(value, key)?,
            "model" => header.model = cx.model(value)?,
            "inputs" | "inputSchema" => header.inputs = cx.inputs(value, key)?,
            "outputs" | "outputSchema" => {
                header.outputs = cx.json(value, key)?;
                outputs = Some((key, value));
            }
            "sample" => header.sample = cx.sample(value)?,
            "template" => {
                header.template = cx.template(value)?;
                header.template_declared = true;
            }
            "tools" => {
                let tools = cx.tools(value, key)?;
                cx.tools.extend(tools);
            }
            _ => {
                header.extra.insert(key.to_string(), cx.json(value, key)?);
            }
        }
    }
    if let Some((key, value)) = outputs {
        header.output_schema = cx.output_schema(value, key)?;
    }
    if header.output_schema.is_none() {
        header.output_schema = cx.response_schema.take();
    }
    lift_metadata(&mut header);
    header.tools = std::mem::take(&mut cx.tools);
    header.unsupported = cx.unsupported;
    Ok(header)
}

/// v2 keeps `authors`, `tags` and `version` under `metadata`; they fill the
/// typed fields a v1 file sets at the top level (`metadata` stays in
/// `extra` as written).
fn lift_metadata(header: &mut Header) {
    let Some(meta) = header.extra.get("metadata").and_then(serde_json::Value::as_object) else {
        return;
    };
    let strings = |key: &str| -> Vec<String> {
        meta.get(key)
            .and_then(serde_json::Value::as_array)
            .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    if header.authors.is_empty() {
        header.authors = strings("authors");
    }
    if header.tags.is_empty() {
        header.tags = strings("tags");
    }
    if header.version.is_none() {
        header.version = match meta.get("version") {
            Some(serde_json::Value::String(v)) => Some(v.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
    }
}

/// Field readers; each error names `path` and the field.
pub(crate) struct Cx<'p> {
    /// The file, for errors.
    pub(crate) path: &'p Path,
    /// Features met that meshops does not support, by name.
    pub(crate) unsupported: Vec<String>,
    /// Tools from `tools` and from v1's `model.parameters.tools`.
    pub(crate) tools: Vec<PromptyTool>,
    /// The JSON Schema of a v1 `response_format: {type: json_schema}`.
    pub(crate) response_schema: Option<serde_json::Value>,
}

impl Cx<'_> {
    /// Notes a feature meshops does not support; `validate` lists them.
    pub(crate) fn unsupported(&mut self, feature: String) {
        if !self.unsupported.contains(&feature) {
            self.unsupported.push(feature);
        }
    }

    pub(crate) fn error(&self, field: &str, message: impl Into<String>) -> PromptFileError {
        PromptFileError::Field {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn expected(&self, field: &str, what: &str, got: &Value) -> PromptFileError {
        self.error(field, format!("expected {what}, got {}", yaml_kind(got)))
    }

    /// A mapping key, which must be a string; `parent` names the mapping.
    pub(crate) fn key<'v>(&self, key: &'v Value, parent: &str) -> Result<&'v str, PromptFileError> {
        key.as_str().ok_or_else(|| {
            let field = if parent.is_empty() { "(top level)" } else { parent };
            self.error(field, format!("keys must be strings, got {}", yaml_kind(key)))
        })
    }

    pub(crate) fn mapping<'v>(&self, value: &'v Value, field: &str) -> Result<&'v Mapping, PromptFileError> {
        value.as_mapping().ok_or_else(|| self.expected(field, "a mapping", value))
    }

    pub(crate) fn string(&self, value: &Value, field: &str) -> Result<String, PromptFileError> {
        value.as_str().map(str::to_string).ok_or_else(|| self.expected(field, "a string", value))
    }

    /// A string, number or boolean as text (`version: 1.0` is common).
    pub(crate) fn scalar_string(&self, value: &Value, field: &str) -> Result<String, PromptFileError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(self.expected(field, "a string", other)),
        }
    }

    pub(crate) fn string_list(&self, value: &Value, field: &str) -> Result<Vec<String>, PromptFileError> {
        let items = value.as_sequence().ok_or_else(|| self.expected(field, "a list of strings", value))?;
        items.iter().enumerate().map(|(i, item)| self.string(item, &format!("{field}[{i}]"))).collect()
    }

    /// A string restricted to `valid` (compared case-insensitively, kept
    /// lowercase).
    pub(crate) fn one_of(
        &self,
        value: &Value,
        field: &str,
        valid: &[&str],
    ) -> Result<String, PromptFileError> {
        let text = self.string(value, field)?.to_ascii_lowercase();
        if valid.contains(&text.as_str()) {
            Ok(text)
        } else {
            Err(self
                .error(field, format!("`{text}` is not supported; expected one of: {}", valid.join(", "))))
        }
    }

    pub(crate) fn number(
        &self,
        value: &Value,
        field: &str,
        min: f64,
        max: f64,
    ) -> Result<f64, PromptFileError> {
        let number = value
            .as_f64()
            .ok_or_else(|| self.expected(field, &format!("a number from {min} to {max}"), value))?;
        if (min..=max).contains(&number) {
            Ok(number)
        } else {
            Err(self.error(field, format!("{number} is out of range; expected a number from {min} to {max}")))
        }
    }

    pub(crate) fn json(&self, value: &Value, field: &str) -> Result<serde_json::Value, PromptFileError> {
        serde_json::to_value(value)
            .map_err(|e| self.error(field, format!("cannot be represented as JSON: {e}")))
    }

    /// `sample`: input values for trying the prompt (a `${file:…}`
    /// reference or a bare data file name was read by `refs`). meshops only
    /// shows them, so one that is not a mapping is a note, not an error.
    fn sample(&mut self, value: &Value) -> Result<serde_json::Value, PromptFileError> {
        const FIELD: &str = "sample";
        let empty = || serde_json::Value::Object(serde_json::Map::new());
        match value {
            Value::Mapping(_) => self.json(value, FIELD),
            Value::String(text) => {
                self.unsupported(format!(
                    "`sample` `{}` (not a mapping or a readable file of input values; ignored)",
                    text.trim()
                ));
                Ok(empty())
            }
            other => {
                self.unsupported(format!(
                    "`sample` of {} (not a mapping of input values; ignored)",
                    yaml_kind(other)
                ));
                Ok(empty())
            }
        }
    }

    /// `template`: a format name (`jinja2`), or `{format, parser}` where
    /// each is a name (v1) or `{kind: name}` (v2). Formats and parsers
    /// meshops lacks are reported, not refused: the body is then rendered as
    /// `template::engine_for` decides, and always cut at role markers.
    fn template(&mut self, value: &Value) -> Result<PromptyTemplate, PromptFileError> {
        let mut template = PromptyTemplate::default();
        match value {
            Value::Mapping(map) => {
                for (key, value) in map {
                    let key = self.key(key, "template")?;
                    if value.is_null() {
                        continue;
                    }
                    let field = format!("template.{key}");
                    match key {
                        "format" => template.format = self.kind_name(value, &field)?,
                        "parser" => template.parser = self.kind_name(value, &field)?,
                        _ => self.unsupported(format!("`{field}`")),
                    }
                }
            }
            other => template.format = self.kind_name(other, "template")?,
        }
        if template.parser != "prompty" {
            self.unsupported(format!("template parser `{}` (role markers used)", template.parser));
        }
        Ok(template)
    }

    /// A kind written as a name or as `{kind: name}` (v2), lowercase.
    pub(crate) fn kind_name(&self, value: &Value, field: &str) -> Result<String, PromptFileError> {
        let name = match value {
            Value::Mapping(map) => match map.get("kind").or_else(|| map.get("type")) {
                Some(kind) => self.string(kind, &format!("{field}.kind"))?,
                None => return Err(self.error(field, "expected a name or `{kind: <name>}`")),
            },
            other => self
                .string(other, field)
                .map_err(|_| self.expected(field, "a name such as `jinja2`, or `{kind: <name>}`", other))?,
        };
        Ok(name.trim().to_ascii_lowercase())
    }
}

/// The YAML type of a value, for messages.
pub(crate) fn yaml_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
