//! The offline engine's tool step, so flows with tools run offline and in
//! tests. It is deterministic and documented, not a model:
//!
//! - When a request offers tools and no tool has answered yet, the engine
//!   calls the first offered tool whose name the query names (the name as
//!   written, or with `-` and `_` read as spaces; case does not matter),
//!   once. Its arguments come from the tool's schema: a string property
//!   named `query`, `message`, `text`, `input`, `q` or `prompt` (else the
//!   first string property) gets the query; number properties take the
//!   query's numbers in order (their minimum, or 0, when it runs out);
//!   other required properties get their type's empty value.
//! - When tools have answered, the engine's text is their results, each on
//!   its own line, so the answer carries what the tools said.
//! - Otherwise (no tool named, or no tools), it answers as it would have
//!   without tools.

use serde_json::{Map, Value, json};

use super::{LlmRequest, Role, TaskHint, ToolCall, ToolSpec};

/// Names a string argument that carries the query.
const QUERY_NAMES: [&str; 6] = ["query", "message", "text", "input", "q", "prompt"];

/// The call the engine makes for `request`, if any (see the module docs).
pub(super) fn tool_call(request: &LlmRequest) -> Option<ToolCall> {
    if request.tools.is_empty() || request.messages.iter().any(|m| m.role == Role::Tool) {
        return None;
    }
    let query = match &request.hint {
        TaskHint::Generate { query, .. } | TaskHint::Answer { query, .. } => query.as_str(),
        _ => return None,
    };
    let words = normalize(query);
    let tool = request.tools.iter().find(|t| {
        let name = normalize(&t.name);
        !name.trim().is_empty() && format!(" {words} ").contains(&format!(" {} ", name.trim()))
    })?;
    Some(ToolCall {
        id: "call_offline_1".to_string(),
        name: tool.name.clone(),
        arguments: Value::Object(arguments(tool, query)).to_string(),
    })
}

/// The tools' answers in the request, one per line (`None` when no tool
/// has answered).
pub(super) fn tool_results(request: &LlmRequest) -> Option<String> {
    let results: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.trim())
        .filter(|c| !c.is_empty())
        .collect();
    (!results.is_empty()).then(|| results.join("\n"))
}

/// Lower case, with `-`, `_` and punctuation read as spaces, words single
/// spaced.
fn normalize(text: &str) -> String {
    let spaced: String =
        text.chars().map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { ' ' }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Arguments for `tool` from `query` (see the module docs).
fn arguments(tool: &ToolSpec, query: &str) -> Map<String, Value> {
    let empty = Map::new();
    let properties = tool.parameters.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let required: Vec<&str> = tool
        .parameters
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let type_of = |schema: &Value| schema.get("type").and_then(Value::as_str).unwrap_or("string").to_string();
    let query_field = properties
        .iter()
        .find(|(name, s)| QUERY_NAMES.contains(&name.as_str()) && type_of(s) == "string")
        .or_else(|| properties.iter().find(|(_, s)| type_of(s) == "string"))
        .map(|(name, _)| name.clone());
    let mut numbers = query
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter_map(|w| w.trim_matches('.').parse::<f64>().ok());
    let mut args = Map::new();
    for (name, schema) in properties {
        let kind = type_of(schema);
        let value = match kind.as_str() {
            "string" if Some(name) == query_field.as_ref() => json!(query),
            "number" | "integer" => {
                let n =
                    numbers.next().or_else(|| schema.get("minimum").and_then(Value::as_f64)).unwrap_or(0.0);
                if kind == "integer" { json!(n.round() as i64) } else { json!(n) }
            }
            _ if !required.contains(&name.as_str()) => continue,
            "string" => json!(""),
            "boolean" => json!(false),
            "array" => json!([]),
            "object" => json!({}),
            _ => Value::Null,
        };
        args.insert(name.clone(), value);
    }
    args
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::llm::{ChatMessage, ModelParams};

    fn request(query: &str, tools: Vec<ToolSpec>) -> LlmRequest {
        LlmRequest {
            agent: "a".into(),
            messages: vec![ChatMessage::new(Role::User, query)],
            params: ModelParams::default(),
            hint: TaskHint::Generate {
                query: query.into(),
                intent: "question".into(),
                passages: Arc::from([]),
                outputs: Arc::from([]),
                feedback: None,
                previous: None,
                judged: None,
                json: false,
            },
            response_schema: None,
            tools: tools.into(),
        }
    }

    fn tool(name: &str, parameters: Value) -> ToolSpec {
        ToolSpec { name: name.into(), description: String::new(), parameters }
    }

    #[test]
    fn a_named_tool_is_called_once_with_arguments_from_the_query() {
        let echo = tool(
            "echo",
            json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}),
        );
        let sum = tool(
            "get-sum",
            json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
        );
        let r = request("What is the get sum of 2 and 3.5?", vec![echo.clone(), sum.clone()]);
        let call = tool_call(&r).unwrap();
        assert_eq!(call.name, "get-sum");
        assert_eq!(serde_json::from_str::<Value>(&call.arguments).unwrap(), json!({"a": 2.0, "b": 3.5}));

        let r = request("Echo this back", vec![echo.clone(), sum]);
        let call = tool_call(&r).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&call.arguments).unwrap(),
            json!({"message": "Echo this back"})
        );

        // Not named: no call. Answered already: no second call.
        assert!(tool_call(&request("What port does it use?", vec![echo.clone()])).is_none());
        let mut r = request("echo hi", vec![echo]);
        r.messages.push(ChatMessage::tool_result("call_offline_1", "Echo: echo hi"));
        assert!(tool_call(&r).is_none());
        assert_eq!(tool_results(&r).as_deref(), Some("Echo: echo hi"));
    }
}
