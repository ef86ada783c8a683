//! What an `llm` agent returns, from its `[llm]` settings and its prompt's
//! declared outputs: text, or a JSON value that must fit a schema. The
//! schema is the prompt file's own reading of `outputs`
//! ([`PromptFile::output_schema`]): a JSON Schema as written, or the
//! Prompty v1 map or v2 list of outputs as a closed object schema.

use serde_json::Value;

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

/// The output of an `llm` agent with `settings` and `prompt`: `output`
/// when set, else JSON when the prompt declares `outputs`, else text. Fails
/// (with a message for the `prompt` field) when `outputs` has no form above
/// or is not a schema the validator accepts.
pub fn output_spec(settings: &LlmSettings, prompt: Option<&PromptFile>) -> Result<OutputSpec, String> {
    let declared = prompt.and_then(|p| p.output_schema.clone());
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
    let strict = schema.as_ref().is_some_and(is_strict_schema);
    Ok(OutputSpec { output, schema, strict })
}

/// Whether every object in `schema` is closed and requires all its
/// properties (OpenAI's `strict` structured outputs need both).
pub fn is_strict_schema(schema: &Value) -> bool {
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
        if !closed || !all_required || !props.is_none_or(|p| p.values().all(is_strict_schema)) {
            return false;
        }
    }
    map.get("items").is_none_or(is_strict_schema)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The spec of a prompt whose front matter declares `outputs` (JSON is
    /// YAML's flow style, so it is written as is).
    fn spec(output: Option<LlmOutput>, outputs: Value) -> Result<OutputSpec, String> {
        let declared = if outputs.is_null() { String::new() } else { format!("outputs: {outputs}\n") };
        let text = format!("---\nname: t\n{declared}---\nuser:\n{{{{ query }}}}\n");
        let prompt =
            PromptFile::parse(&text, std::path::Path::new("t.prompty")).map_err(|e| e.to_string())?;
        output_spec(&LlmSettings { output, ..LlmSettings::default() }, Some(&prompt))
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
        let v1 = spec(
            None,
            json!({"needs_search": {"type": "bool"}, "topic": {"type": "string", "description": "d"}}),
        );
        let v2 = spec(
            None,
            json!([{"name": "needs_search", "kind": "boolean"}, {"name": "topic", "kind": "string", "description": "d"}]),
        );
        for s in [v1.unwrap(), v2.unwrap()] {
            assert_eq!(s.schema.as_ref(), Some(&want));
            assert!(s.strict);
        }
        let optional = spec(None, json!([{"name": "a", "kind": "string", "required": false}])).unwrap();
        assert!(optional.schema.unwrap().get("required").is_none());
        assert!(!optional.strict, "an optional output is not strict");
        // A v2 object output lists its own properties; they are required
        // too, and the object is closed.
        let nested = spec(
            None,
            json!([{"name": "scores", "kind": "object", "properties": [{"name": "g", "kind": "number", "default": 0.5}]}]),
        )
        .unwrap();
        assert_eq!(
            nested.schema.unwrap()["properties"]["scores"],
            json!({"type": "object", "properties": {"g": {"type": "number", "default": 0.5}}, "required": ["g"], "additionalProperties": false})
        );
        assert!(nested.strict);
    }

    #[test]
    fn a_json_schema_is_taken_as_written() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"], "$defs": {"x": {"type": "string"}}});
        let s = spec(None, schema.clone()).unwrap();
        assert_eq!(s.schema, Some(schema));
        assert!(!s.strict, "not closed");
    }

    #[test]
    fn unusable_outputs_are_named() {
        let err = spec(None, json!(3)).unwrap_err();
        assert!(err.contains("outputs") && err.contains("a list of properties or a mapping"), "{err}");
        let err = spec(None, json!([{"kind": "string"}])).unwrap_err();
        assert!(err.contains("outputs[0]") && err.contains("needs a `name`"), "{err}");
        let err = spec(None, json!({"type": "object", "properties": {"a": {"type": 5}}})).unwrap_err();
        assert!(err.contains("not a valid JSON schema"), "{err}");
    }
}
