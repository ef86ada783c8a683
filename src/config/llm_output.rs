//! What an `llm` agent returns, from its `[llm]` settings and its prompt's
//! `outputs`: text, or a JSON value that must fit a schema.
//!
//! `outputs` is read in any of the forms Prompty files use:
//! - a JSON schema as is (`type: object`, `properties`, `required`, …);
//! - Prompty v1's map of output names to their types
//!   (`answer: {type: string, description: …}`, or `answer: string`);
//! - Prompty v2's list of properties (`- name: answer` / `kind: string`).
//!
//! The two Prompty forms become an object schema with every output
//! required (unless it says `required: false`) and no other property.

use serde_json::{Map, Value};

use super::agents::{LlmOutput, LlmSettings};
use super::prompt_file::PromptFile;

/// An `llm` agent's output, resolved for one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    /// Text or JSON.
    pub output: LlmOutput,
    /// The JSON schema a reply must match; `None` for text, or for JSON
    /// when the prompt declares no `outputs` (any JSON value then).
    pub schema: Option<Value>,
    /// Whether the schema meets the strict structured-output rules of
    /// OpenAI-compatible servers (every object closed and every property
    /// required), so they can be asked to enforce it exactly.
    pub strict: bool,
}

/// Keywords that make an `outputs` object a JSON schema of its own rather
/// than a map of output names.
const SCHEMA_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "definitions",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
];

/// The output of an `llm` agent with `settings` and `prompt`: `output`
/// when set, else JSON when the prompt declares `outputs`, else text. Fails
/// (with a message for the `prompt` field) when `outputs` has no form above
/// or is not a schema the validator accepts.
pub fn output_spec(settings: &LlmSettings, prompt: Option<&PromptFile>) -> Result<OutputSpec, String> {
    let declared = match prompt.map(|p| &p.outputs) {
        None | Some(Value::Null) => None,
        Some(outputs) => Some(schema_of(outputs)?),
    };
    let output = settings.output.unwrap_or(match declared {
        Some(_) => LlmOutput::Json,
        None => LlmOutput::Text,
    });
    let schema = match output {
        LlmOutput::Json => declared,
        // A text agent ignores declared outputs: `output = "text"` says so.
        LlmOutput::Text => None,
    };
    if let Some(s) = &schema {
        jsonschema::validator_for(s).map_err(|e| format!("`outputs` is not a valid JSON schema: {e}"))?;
    }
    let strict = schema.as_ref().is_some_and(is_strict);
    Ok(OutputSpec { output, schema, strict })
}

/// The JSON schema `outputs` declares, in any of its forms.
fn schema_of(outputs: &Value) -> Result<Value, String> {
    match outputs {
        Value::Object(map) if is_schema(map) => {
            let mut schema = map.clone();
            if !schema.contains_key("type") && schema.contains_key("properties") {
                schema.insert("type".into(), "object".into());
            }
            Ok(Value::Object(schema))
        }
        Value::Object(map) => {
            let entries = map.iter().map(|(name, v)| (name.as_str(), v));
            object_schema(entries.map(|(n, v)| property(n, v)))
        }
        Value::Array(list) => {
            let entries = list.iter().enumerate().map(|(i, v)| {
                let name = v.get("name").and_then(Value::as_str).ok_or_else(|| {
                    format!("`outputs[{i}]` needs a `name` (a Prompty v2 output is {{name, kind}})")
                })?;
                property(name, v)
            });
            object_schema(entries)
        }
        _ => Err("`outputs` must be a map of output names to types, a list of {name, kind} \
                  or a JSON schema"
            .into()),
    }
}

/// Whether an `outputs` map is a JSON schema itself: it has a `type` that
/// names a type, or only schema keywords around its `properties`.
fn is_schema(map: &Map<String, Value>) -> bool {
    let typed = matches!(map.get("type"), Some(Value::String(_) | Value::Array(_)));
    let only_keywords = map.contains_key("properties")
        && map.get("properties").is_some_and(Value::is_object)
        && map.keys().all(|k| SCHEMA_KEYWORDS.contains(&k.as_str()));
    typed || only_keywords || map.contains_key("$schema")
}

/// One output: its name, its property schema, and whether it is required.
fn property(name: &str, decl: &Value) -> Result<(String, Value, bool), String> {
    let mut schema = match decl {
        // `answer: string` is shorthand for `answer: {type: string}`.
        Value::String(kind) => Map::from_iter([("type".to_string(), Value::from(type_name(kind)))]),
        Value::Object(m) => m.clone(),
        _ => return Err(format!("output `{name}` must be a type name or a map with `type` (or `kind`)")),
    };
    // Prompty v2 writes `kind`; JSON schema says `type`.
    if let Some(kind) = schema.remove("kind") {
        if !schema.contains_key("type") {
            let kind = kind.as_str().map(type_name).map(Value::from).unwrap_or(kind);
            schema.insert("type".into(), kind);
        }
    }
    if let Some(values) = schema.remove("enumValues") {
        schema.entry("enum").or_insert(values);
    }
    schema.remove("name");
    let required = match schema.remove("required") {
        Some(Value::Bool(b)) => b,
        // A `required` list belongs to a nested object schema: keep it.
        Some(other) => {
            schema.insert("required".into(), other);
            true
        }
        None => true,
    };
    Ok((name.to_string(), Value::Object(schema), required))
}

/// Prompty's type names as JSON schema's.
fn type_name(kind: &str) -> &str {
    match kind {
        "float" | "double" => "number",
        "int" | "long" => "integer",
        "bool" => "boolean",
        "dict" | "map" => "object",
        "list" => "array",
        other => other,
    }
}

/// A closed object schema of `entries`.
fn object_schema(
    entries: impl Iterator<Item = Result<(String, Value, bool), String>>,
) -> Result<Value, String> {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for entry in entries {
        let (name, schema, is_required) = entry?;
        if is_required {
            required.push(Value::from(name.clone()));
        }
        properties.insert(name, schema);
    }
    if properties.is_empty() {
        return Err("`outputs` declares no output".into());
    }
    Ok(serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    }))
}

/// Whether every object in `schema` is closed and requires all its
/// properties (OpenAI's `strict` structured outputs need both).
fn is_strict(schema: &Value) -> bool {
    let Some(map) = schema.as_object() else { return true };
    let is_object =
        map.get("type").and_then(Value::as_str) == Some("object") || map.contains_key("properties");
    if is_object {
        let props = map.get("properties").and_then(Value::as_object);
        let closed = map.get("additionalProperties") == Some(&Value::Bool(false));
        let required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let all_required = props.is_none_or(|p| p.keys().all(|k| required.contains(&k.as_str())));
        if !closed || !all_required || !props.is_none_or(|p| p.values().all(is_strict)) {
            return false;
        }
    }
    map.get("items").is_none_or(is_strict)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(output: Option<LlmOutput>, outputs: Value) -> Result<OutputSpec, String> {
        let mut prompt =
            PromptFile::parse("---\nname: t\n---\nuser:\n{{ query }}\n", std::path::Path::new("t.prompty"))
                .map_err(|e| e.to_string())?;
        prompt.outputs = outputs;
        output_spec(&LlmSettings { output }, Some(&prompt))
    }

    #[test]
    fn the_output_defaults_from_whether_the_prompt_declares_outputs() {
        let text = spec(None, Value::Null).unwrap();
        assert_eq!((text.output, text.schema, text.strict), (LlmOutput::Text, None, false));
        let json = spec(Some(LlmOutput::Json), Value::Null).unwrap();
        assert_eq!((json.output, json.schema), (LlmOutput::Json, None));
        let declared = spec(None, json!({"title": {"type": "string"}})).unwrap();
        assert_eq!(declared.output, LlmOutput::Json);
        let ignored = spec(Some(LlmOutput::Text), json!({"title": {"type": "string"}})).unwrap();
        assert_eq!((ignored.output, ignored.schema), (LlmOutput::Text, None));
    }

    #[test]
    fn prompty_v1_and_v2_outputs_become_closed_object_schemas() {
        let want = json!({
            "type": "object",
            "properties": {"needs_search": {"type": "boolean"}, "topic": {"type": "string", "description": "d"}},
            "required": ["needs_search", "topic"],
            "additionalProperties": false,
        });
        let v1 = spec(None, json!({"needs_search": "bool", "topic": {"type": "string", "description": "d"}}));
        let v2 = spec(
            None,
            json!([{"name": "needs_search", "kind": "boolean"}, {"name": "topic", "kind": "string", "description": "d"}]),
        );
        for s in [v1.unwrap(), v2.unwrap()] {
            assert_eq!(s.schema.as_ref(), Some(&want));
            assert!(s.strict);
        }
        let optional = spec(None, json!([{"name": "a", "kind": "string", "required": false}])).unwrap();
        assert_eq!(optional.schema.unwrap()["required"], json!([]));
        assert!(!optional.strict, "an optional output is not strict");
    }

    #[test]
    fn a_json_schema_is_taken_as_written() {
        let schema = json!({"properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]});
        let s = spec(None, schema.clone()).unwrap();
        let mut want = schema;
        want["type"] = json!("object");
        assert_eq!(s.schema, Some(want));
        assert!(!s.strict, "not closed");
    }

    #[test]
    fn unusable_outputs_are_named() {
        let err = spec(None, json!(3)).unwrap_err();
        assert!(err.contains("must be a map of output names"), "{err}");
        let err = spec(None, json!([{"kind": "string"}])).unwrap_err();
        assert!(err.contains("`outputs[0]` needs a `name`"), "{err}");
        let err = spec(None, json!({"type": "object", "properties": {"a": {"type": 5}}})).unwrap_err();
        assert!(err.contains("not a valid JSON schema"), "{err}");
        let err = spec(None, json!({"a": 5})).unwrap_err();
        assert!(err.contains("output `a` must be a type name"), "{err}");
    }
}
