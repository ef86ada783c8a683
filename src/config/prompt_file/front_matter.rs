//! The YAML front matter of a Prompty file: finding it, then reading each
//! known field with its own type check.
//!
//! Fields are read from a generic YAML value rather than through serde
//! derive so that every error names the exact field
//! (`model.parameters.temperature`) and what it accepts, and so that
//! unknown keys can be kept instead of rejected.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::error::PromptFileError;
use super::header::{PromptyConfiguration, PromptyInput, PromptyModel, PromptyParameters};

/// A file cut into front matter and body.
pub(crate) struct Split<'a> {
    /// The YAML, preceded by blank lines so YAML errors report file lines.
    pub yaml_padded: String,
    pub body: &'a str,
    /// Lines of the file before the body.
    pub body_line_offset: usize,
}

/// Cuts `text` at its `---` lines. Leading blank lines and a BOM are allowed
/// before the opening line.
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
            None if line.trim_end() == "---" => opening = Some((line_no, pos)),
            None => {
                return Err(error(format!(
                    "line {line_no}: a Prompty file must begin with a `---` line opening its YAML front matter"
                )));
            }
            Some((open_line, yaml_start)) if line.trim_end() == "---" => {
                let yaml = &text[yaml_start..pos - line.len()];
                return Ok(Split {
                    yaml_padded: format!("{}{yaml}", "\n".repeat(open_line)),
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
        None => "the file is empty; expected YAML front matter between `---` lines".to_string(),
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
    pub sample: serde_json::Value,
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Parses and checks the front matter YAML.
pub(crate) fn parse_header(yaml: &str, path: &Path) -> Result<Header, PromptFileError> {
    let front_matter_error =
        |message: String| PromptFileError::FrontMatter { path: path.to_path_buf(), message };
    let mut root: Value =
        serde_yaml_ng::from_str(yaml).map_err(|e| front_matter_error(format!("invalid YAML: {e}")))?;
    root.apply_merge().map_err(|e| front_matter_error(format!("invalid YAML merge key: {e}")))?;
    let empty = Mapping::new();
    let root = match &root {
        Value::Null => &empty,
        Value::Mapping(map) => map,
        other => {
            return Err(front_matter_error(format!(
                "expected a YAML mapping of fields, got {}",
                yaml_kind(other)
            )));
        }
    };

    let cx = Cx { path };
    let mut header = Header {
        name: path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default(),
        description: String::new(),
        authors: Vec::new(),
        version: None,
        tags: Vec::new(),
        model: PromptyModel::default(),
        inputs: BTreeMap::new(),
        outputs: serde_json::Value::Null,
        sample: serde_json::Value::Object(serde_json::Map::new()),
        extra: BTreeMap::new(),
    };
    for (key, value) in root {
        let key = cx.key(key, "")?;
        // An empty field (`description:`) means "not given".
        if value.is_null() {
            continue;
        }
        match key {
            "name" => header.name = cx.string(value, key)?,
            "description" => header.description = cx.string(value, key)?,
            "authors" => header.authors = cx.string_list(value, key)?,
            "version" => header.version = Some(cx.scalar_string(value, key)?),
            "tags" => header.tags = cx.string_list(value, key)?,
            "model" => header.model = cx.model(value)?,
            "inputs" => header.inputs = cx.inputs(value)?,
            "outputs" => header.outputs = cx.json(value, key)?,
            "sample" => header.sample = cx.sample(value)?,
            "template" => cx.template(value)?,
            _ => {
                header.extra.insert(key.to_string(), cx.json(value, key)?);
            }
        }
    }
    Ok(header)
}

/// Field readers; each error names `path` and the field.
struct Cx<'p> {
    path: &'p Path,
}

impl Cx<'_> {
    fn error(&self, field: &str, message: impl Into<String>) -> PromptFileError {
        PromptFileError::Field {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn expected(&self, field: &str, what: &str, got: &Value) -> PromptFileError {
        self.error(field, format!("expected {what}, got {}", yaml_kind(got)))
    }

    /// A mapping key, which must be a string; `parent` names the mapping.
    fn key<'v>(&self, key: &'v Value, parent: &str) -> Result<&'v str, PromptFileError> {
        key.as_str().ok_or_else(|| {
            let field = if parent.is_empty() { "(top level)" } else { parent };
            self.error(field, format!("keys must be strings, got {}", yaml_kind(key)))
        })
    }

    fn mapping<'v>(&self, value: &'v Value, field: &str) -> Result<&'v Mapping, PromptFileError> {
        value.as_mapping().ok_or_else(|| self.expected(field, "a mapping", value))
    }

    fn string(&self, value: &Value, field: &str) -> Result<String, PromptFileError> {
        value.as_str().map(str::to_string).ok_or_else(|| self.expected(field, "a string", value))
    }

    /// A string, number or boolean as text (`version: 1.0` is common).
    fn scalar_string(&self, value: &Value, field: &str) -> Result<String, PromptFileError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(self.expected(field, "a string", other)),
        }
    }

    fn string_list(&self, value: &Value, field: &str) -> Result<Vec<String>, PromptFileError> {
        let items = value.as_sequence().ok_or_else(|| self.expected(field, "a list of strings", value))?;
        items.iter().enumerate().map(|(i, item)| self.string(item, &format!("{field}[{i}]"))).collect()
    }

    /// A string restricted to `valid` (compared case-insensitively, kept
    /// lowercase).
    fn one_of(&self, value: &Value, field: &str, valid: &[&str]) -> Result<String, PromptFileError> {
        let text = self.string(value, field)?.to_ascii_lowercase();
        if valid.contains(&text.as_str()) {
            Ok(text)
        } else {
            Err(self
                .error(field, format!("`{text}` is not supported; expected one of: {}", valid.join(", "))))
        }
    }

    fn number(&self, value: &Value, field: &str, min: f64, max: f64) -> Result<f64, PromptFileError> {
        let number = value
            .as_f64()
            .ok_or_else(|| self.expected(field, &format!("a number from {min} to {max}"), value))?;
        if (min..=max).contains(&number) {
            Ok(number)
        } else {
            Err(self.error(field, format!("{number} is out of range; expected a number from {min} to {max}")))
        }
    }

    fn json(&self, value: &Value, field: &str) -> Result<serde_json::Value, PromptFileError> {
        serde_json::to_value(value)
            .map_err(|e| self.error(field, format!("cannot be represented as JSON: {e}")))
    }

    fn model(&self, value: &Value) -> Result<PromptyModel, PromptFileError> {
        let mut model = PromptyModel::default();
        for (key, value) in self.mapping(value, "model")? {
            let key = self.key(key, "model")?;
            if value.is_null() {
                continue;
            }
            let field = format!("model.{key}");
            match key {
                "api" => model.api = self.one_of(value, &field, &["chat", "completion"])?,
                "configuration" => model.configuration = self.configuration(value)?,
                "parameters" => model.parameters = self.parameters(value)?,
                "response" => model.response = Some(self.one_of(value, &field, &["first", "all"])?),
                _ => {
                    model.extra.insert(key.to_string(), self.json(value, &field)?);
                }
            }
        }
        Ok(model)
    }

    fn configuration(&self, value: &Value) -> Result<PromptyConfiguration, PromptFileError> {
        let mut config = PromptyConfiguration::default();
        for (key, value) in self.mapping(value, "model.configuration")? {
            let key = self.key(key, "model.configuration")?;
            if value.is_null() {
                continue;
            }
            let field = format!("model.configuration.{key}");
            let slot = match key {
                "type" => &mut config.kind,
                "azure_endpoint" => &mut config.azure_endpoint,
                "azure_deployment" => &mut config.azure_deployment,
                "api_version" => &mut config.api_version,
                "api_key" => &mut config.api_key,
                "name" => &mut config.name,
                "organization" => &mut config.organization,
                "base_url" | "endpoint" => {
                    let url = self.string(value, &field)?;
                    // Both spellings given with different values is ambiguous.
                    if config.base_url.as_ref().is_some_and(|old| *old != url) {
                        return Err(self
                            .error(&field, "`base_url` and `endpoint` are the same setting; give only one"));
                    }
                    config.base_url = Some(url);
                    continue;
                }
                _ => {
                    config.extra.insert(key.to_string(), self.json(value, &field)?);
                    continue;
                }
            };
            *slot = Some(self.string(value, &field)?);
        }
        Ok(config)
    }

    fn parameters(&self, value: &Value) -> Result<PromptyParameters, PromptFileError> {
        let mut params = PromptyParameters::default();
        for (key, value) in self.mapping(value, "model.parameters")? {
            let key = self.key(key, "model.parameters")?;
            if value.is_null() {
                continue;
            }
            let field = format!("model.parameters.{key}");
            match key {
                "temperature" => params.temperature = Some(self.number(value, &field, 0.0, 2.0)?),
                "top_p" => params.top_p = Some(self.number(value, &field, 0.0, 1.0)?),
                "max_tokens" => {
                    let tokens =
                        value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0).ok_or_else(
                            || self.expected(&field, "a whole number from 1 to 4294967295", value),
                        )?;
                    params.max_tokens = Some(tokens);
                }
                "seed" => {
                    let seed =
                        value.as_i64().ok_or_else(|| self.expected(&field, "a whole number", value))?;
                    params.seed = Some(seed);
                }
                "stop" => {
                    params.stop = match value {
                        Value::String(one) => vec![one.clone()],
                        Value::Sequence(_) => self.string_list(value, &field)?,
                        other => {
                            return Err(self.expected(&field, "a string or a list of strings", other));
                        }
                    };
                }
                "response_format" => {
                    let format = match value {
                        Value::Mapping(map) => {
                            let kind = map
                                .get("type")
                                .ok_or_else(|| self.error(&field, "a mapping needs a `type` key"))?;
                            self.one_of(kind, &format!("{field}.type"), &["text", "json_object"])?
                        }
                        other => self.one_of(other, &field, &["text", "json_object"])?,
                    };
                    params.response_format = Some(format);
                }
                _ => {
                    params.extra.insert(key.to_string(), self.json(value, &field)?);
                }
            }
        }
        Ok(params)
    }

    fn inputs(&self, value: &Value) -> Result<BTreeMap<String, PromptyInput>, PromptFileError> {
        const DECLARATION_KEYS: [&str; 4] = ["type", "description", "default", "sample"];
        let mut inputs = BTreeMap::new();
        for (key, value) in self.mapping(value, "inputs")? {
            let name = self.key(key, "inputs")?;
            let field = format!("inputs.{name}");
            let mut input = PromptyInput::default();
            // A mapping with a declaration key declares the input; anything
            // else (an object included) is a plain default value.
            let declaration =
                value.as_mapping().filter(|map| DECLARATION_KEYS.iter().any(|k| map.contains_key(*k)));
            match declaration {
                Some(map) => {
                    for (key, value) in map {
                        let key = self.key(key, &field)?;
                        let sub = format!("{field}.{key}");
                        match key {
                            "type" if !value.is_null() => input.kind = Some(self.string(value, &sub)?),
                            "description" if !value.is_null() => {
                                input.description = Some(self.string(value, &sub)?);
                            }
                            "default" if !value.is_null() => input.default = Some(self.json(value, &sub)?),
                            "sample" if !value.is_null() => input.sample = Some(self.json(value, &sub)?),
                            "type" | "description" | "default" | "sample" => {}
                            _ => {
                                input.extra.insert(key.to_string(), self.json(value, &sub)?);
                            }
                        }
                    }
                }
                None if value.is_null() => {}
                None => input.default = Some(self.json(value, &field)?),
            }
            inputs.insert(name.to_string(), input);
        }
        Ok(inputs)
    }

    /// `sample`: a mapping, or `${file:relative.json}` (JSON, or YAML for
    /// `.yaml`/`.yml`) read relative to the Prompty file.
    fn sample(&self, value: &Value) -> Result<serde_json::Value, PromptFileError> {
        const FIELD: &str = "sample";
        let reference = match value {
            Value::Mapping(_) => return self.json(value, FIELD),
            Value::String(text) => text.trim(),
            other => return Err(self.expected(FIELD, "a mapping or `${file:<path>}`", other)),
        };
        let relative = reference
            .strip_prefix("${file:")
            .and_then(|rest| rest.strip_suffix('}'))
            .map(str::trim)
            .filter(|rel| !rel.is_empty())
            .ok_or_else(|| {
                self.error(
                    FIELD,
                    format!("expected a mapping or `${{file:<path>}}`, got the string `{reference}`"),
                )
            })?;
        let file = self.path.parent().unwrap_or(Path::new("")).join(relative);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| self.error(FIELD, format!("cannot read {}: {e}", file.display())))?;
        let is_yaml = file
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml"));
        let sample: serde_json::Value = if is_yaml {
            serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        }
        .map_err(|e| self.error(FIELD, format!("cannot parse {}: {e}", file.display())))?;
        if sample.is_object() {
            Ok(sample)
        } else {
            Err(self.error(FIELD, format!("{} must hold an object of input values", file.display())))
        }
    }

    /// `template`: `jinja2`, or `{format, parser}`. Only Jinja is rendered,
    /// and only the `prompty` role-marker parser exists.
    fn template(&self, value: &Value) -> Result<(), PromptFileError> {
        const FORMATS: [&str; 2] = ["jinja2", "jinja"];
        match value {
            Value::String(_) => self.one_of(value, "template", &FORMATS).map(drop),
            Value::Mapping(map) => {
                for (key, value) in map {
                    let key = self.key(key, "template")?;
                    if value.is_null() {
                        continue;
                    }
                    let field = format!("template.{key}");
                    match key {
                        "format" => self.one_of(value, &field, &FORMATS).map(drop)?,
                        "parser" => self.one_of(value, &field, &["prompty"]).map(drop)?,
                        _ => {
                            return Err(self.error(&field, "unknown key; expected `format` or `parser`"));
                        }
                    }
                }
                Ok(())
            }
            other => {
                Err(self.expected("template", "a format name such as `jinja2`, or {format, parser}", other))
            }
        }
    }
}

/// The YAML type of a value, for messages.
fn yaml_kind(value: &Value) -> &'static str {
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
