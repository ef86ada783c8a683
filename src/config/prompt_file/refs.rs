//! `${file:…}` and `${env:…}` references in a front matter, resolved once,
//! over the whole YAML tree, before any field is read (Prompty v2 spec §2.11,
//! §4.2 step 5).
//!
//! - `${file:relative/path}` — a whole string value — is replaced by the
//!   file's content, read relative to the prompt file: parsed as JSON for
//!   `.json`, as YAML for `.yaml`/`.yml`, as text otherwise. Everywhere, so a
//!   shared `model.connection` or a whole `inputs` list can live in a file.
//!   A referenced file's own references are not followed. The older
//!   spelling `file:relative/path` (langchain-prompty, early Prompty) reads
//!   the same way when the file exists, and stays text otherwise; so does
//!   a `sample` written as a bare `.json`/`.yaml` file name.
//! - A referenced file that is missing is an error where meshops uses the
//!   value (inputs, outputs, model options, tools, the template). Where it
//!   does not (`sample`, `metadata`, `model.connection`,
//!   `model.configuration`, a tool's `options`) the value is dropped and
//!   the file is named in the notes `meshops validate` prints, so a prompt
//!   copied without its test data still loads.
//! - `${env:NAME}` / `${env:NAME:default}` are resolved where meshops uses
//!   the value (input defaults, `sample`, model options, …), with the same
//!   function the clients use. They are kept as written where keys and
//!   endpoints live (`model.connection`, `model.configuration`, any
//!   `tools`), which meshops never calls: so a file never holds a key in
//!   memory, and a variable only those sections need does not have to be
//!   set for `meshops validate`.

use std::path::Path;

use serde_yaml_ng::Value;

use super::error::PromptFileError;
use crate::config::resolve_env_refs;

/// Resolves the references in `root` (the front matter), naming `path`
/// (the prompt file) in errors and reading `${file:…}` relative to it.
/// Returns a note for each missing file it dropped (see the module doc).
pub(crate) fn resolve(root: &mut Value, path: &Path) -> Result<Vec<String>, PromptFileError> {
    let mut notes = Vec::new();
    walk(root, path, "", &mut notes)?;
    Ok(notes)
}

fn walk(value: &mut Value, path: &Path, field: &str, notes: &mut Vec<String>) -> Result<(), PromptFileError> {
    match value {
        Value::String(text) => {
            if let Some(relative) = file_ref(text).map(str::to_string) {
                *value = match read_file(path, field, &relative) {
                    Ok(read) => read,
                    Err(PromptFileError::FileRef { file, source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound && unused(field) =>
                    {
                        notes.push(format!(
                            "`{field}`: {} not found (meshops does not use it)",
                            file.display()
                        ));
                        Value::Null
                    }
                    Err(e) => return Err(e),
                };
            } else if let Some(relative) =
                legacy_file_ref(text).or_else(|| bare_sample_file(field, text)).map(str::to_string)
                && let file = path.parent().unwrap_or(Path::new("")).join(&relative)
                && file.is_file()
            {
                *value = read_file(path, field, &relative)?;
            } else if text.contains("${env:") && resolves_env(field) {
                let whole_ref = is_single_env_ref(text);
                let resolved = resolve_env_refs(text).map_err(|source| PromptFileError::EnvRef {
                    path: path.to_path_buf(),
                    field: field.to_string(),
                    source,
                })?;
                // A number or switch under `model` (`temperature:
                // ${env:TEMP:0.2}`) is read as the scalar it spells.
                *value = match serde_yaml_ng::from_str::<Value>(&resolved) {
                    Ok(scalar @ (Value::Number(_) | Value::Bool(_)))
                        if whole_ref && field.starts_with("model.") =>
                    {
                        scalar
                    }
                    _ => Value::String(resolved),
                };
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, path, &format!("{field}[{i}]"), notes)?;
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let name = match key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_string(),
                };
                let sub = if field.is_empty() { name } else { format!("{field}.{name}") };
                walk(item, path, &sub, notes)?;
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, field, notes)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// The path of a value that is exactly `${file:<path>}`.
fn file_ref(text: &str) -> Option<&str> {
    text.trim()
        .strip_prefix("${file:")
        .and_then(|rest| rest.strip_suffix('}'))
        .map(str::trim)
        .filter(|relative| !relative.is_empty())
}

/// The path of a value that is exactly `file:<path>` (the spelling before
/// `${file:…}`).
fn legacy_file_ref(text: &str) -> Option<&str> {
    // `file:///…` and other absolute paths are URLs or host paths, not this.
    text.trim()
        .strip_prefix("file:")
        .map(str::trim)
        .filter(|relative| !relative.is_empty() && !relative.starts_with('/'))
}

/// A `sample` written as a bare data file name (`sample: chat.json`, an
/// early spelling): read like a reference when the file exists.
fn bare_sample_file<'t>(field: &str, text: &'t str) -> Option<&'t str> {
    let name = text.trim();
    let data = [".json", ".yaml", ".yml"].iter().any(|ext| name.ends_with(ext));
    (field == "sample" && data && !name.starts_with('/')).then_some(name)
}

/// Whether meshops leaves the value under `field` unused, so a missing
/// referenced file there is a note rather than an error.
fn unused(field: &str) -> bool {
    const UNUSED: [&str; 4] = ["sample", "metadata", "model.connection", "model.configuration"];
    UNUSED.iter().any(|prefix| is_under(field, prefix)) || tool_options(field)
}

/// Whether `field` is inside a tool's `options` (`tools[3].options.schema`).
fn tool_options(field: &str) -> bool {
    field
        .strip_prefix("tools[")
        .and_then(|rest| rest.split_once(']'))
        .is_some_and(|(_, rest)| rest == ".options" || rest.starts_with(".options."))
}

/// Whether `text` is one `${env:…}` reference and nothing else.
fn is_single_env_ref(text: &str) -> bool {
    let text = text.trim();
    text.starts_with("${env:") && text.ends_with('}') && text.matches("${").count() == 1
}

/// Whether `${env:…}` references under `field` are resolved at load: not
/// where keys and endpoints live.
fn resolves_env(field: &str) -> bool {
    const KEPT: [&str; 3] = ["model.connection", "model.configuration", "tools"];
    !KEPT.iter().any(|prefix| is_under(field, prefix)) && !field.contains(".tools")
}

/// Whether `field` is `prefix` or a field inside it.
fn is_under(field: &str, prefix: &str) -> bool {
    field == prefix
        || field.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// A referenced file's content, as the value that replaces the reference.
fn read_file(path: &Path, field: &str, relative: &str) -> Result<Value, PromptFileError> {
    let file = path.parent().unwrap_or(Path::new("")).join(relative);
    let text = std::fs::read_to_string(&file).map_err(|source| PromptFileError::FileRef {
        path: path.to_path_buf(),
        field: field.to_string(),
        file: file.clone(),
        source,
    })?;
    let extension = file.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    let parse_error = |message: String| PromptFileError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        message: format!("cannot parse {}: {message}", file.display()),
    };
    match extension.as_deref() {
        Some("json") => {
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
            serde_yaml_ng::to_value(json).map_err(|e| parse_error(e.to_string()))
        }
        Some("yaml" | "yml") => serde_yaml_ng::from_str(&text).map_err(|e| parse_error(e.to_string())),
        _ => Ok(Value::String(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_refs_are_kept_where_keys_live() {
        for kept in [
            "model.connection",
            "model.connection.apiKey",
            "model.configuration.api_key",
            "tools",
            "tools[0].bindings.user",
            "model.parameters.tools[0].x",
        ] {
            assert!(!resolves_env(kept), "{kept}");
        }
        for resolved in
            ["inputs[0].default", "sample.x", "model.options.temperature", "model.connectionless", "toolsets"]
        {
            assert!(resolves_env(resolved), "{resolved}");
        }
        assert!(is_single_env_ref(" ${env:A:1} "));
        assert!(!is_single_env_ref("x ${env:A:1}"));
        assert_eq!(file_ref(" ${file: a.json } "), Some("a.json"));
        assert_eq!(file_ref("${file:}"), None);
    }

    #[test]
    fn model_numbers_from_env_refs_are_numbers() {
        let mut root: Value = serde_yaml_ng::from_str(
            "model:\n  options:\n    temperature: ${env:MESHOPS_SURELY_UNSET_T:0.25}\ninputs:\n  n: ${env:MESHOPS_SURELY_UNSET_N:7}\n",
        )
        .unwrap();
        resolve(&mut root, Path::new("x.prompty")).unwrap();
        assert_eq!(root["model"]["options"]["temperature"], Value::from(0.25));
        // Outside `model` the text stays text.
        assert_eq!(root["inputs"]["n"], Value::from("7"));
        let mut root: Value =
            serde_yaml_ng::from_str("sample:\n  k: ${env:MESHOPS_SURELY_UNSET_K}\n").unwrap();
        let err = resolve(&mut root, Path::new("x.prompty")).unwrap_err().to_string();
        assert!(err.contains("`sample.k`") && err.contains("MESHOPS_SURELY_UNSET_K"), "{err}");
    }
}
