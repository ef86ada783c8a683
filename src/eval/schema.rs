//! A documented subset of JSON Schema (draft 2020-12 semantics) for the
//! `json_schema` evaluator.
//!
//! The `jsonschema` crate was not used: it brings about two dozen crates
//! (big-number arithmetic, a second regex engine, URI handling) for one
//! evaluator. This subset covers what response-format checks need:
//!
//! - `type` (a name or a list: `object`, `array`, `string`, `number`,
//!   `integer`, `boolean`, `null`), `enum`, `const`;
//! - objects: `properties`, `required`, `additionalProperties` (a boolean
//!   or a schema);
//! - arrays: `items` (one schema for every item), `minItems`, `maxItems`;
//! - strings: `minLength`, `maxLength` (in characters), `pattern` (Rust
//!   `regex` syntax, unanchored as in JSON Schema);
//! - numbers: `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`;
//! - combinators: `allOf`, `anyOf`, `oneOf`, `not`;
//! - annotations, ignored: `$schema`, `$id`, `title`, `description`,
//!   `default`, `examples`, `$comment`.
//!
//! Any other keyword (`$ref`, `format`, `patternProperties`, …) is an error
//! when the evaluators file is loaded, never silently ignored.

use serde_json::Value;

const ANNOTATIONS: &[&str] = &["$schema", "$id", "title", "description", "default", "examples", "$comment"];
const TYPES: &[&str] = &["object", "array", "string", "number", "integer", "boolean", "null"];

/// Checks that `schema` uses only the supported subset; the error names the
/// JSON pointer of the offending keyword.
pub fn check(schema: &Value, at: &str) -> Result<(), String> {
    let Value::Object(map) = schema else {
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{at}: a schema must be an object or a boolean")),
        };
    };
    for (k, v) in map {
        let here = format!("{at}/{k}");
        let non_negative = |v: &Value| {
            v.as_u64().map(|_| ()).ok_or_else(|| format!("{here}: must be a non-negative integer"))
        };
        let number = |v: &Value| v.as_f64().map(|_| ()).ok_or_else(|| format!("{here}: must be a number"));
        match k.as_str() {
            a if ANNOTATIONS.contains(&a) => {}
            "type" => {
                let names: Vec<&Value> = match v {
                    Value::Array(xs) => xs.iter().collect(),
                    one => vec![one],
                };
                for n in names {
                    if !n.as_str().is_some_and(|s| TYPES.contains(&s)) {
                        return Err(format!("{here}: unknown type {n}; known: {}", TYPES.join(", ")));
                    }
                }
            }
            "enum" => {
                if !v.is_array() {
                    return Err(format!("{here}: must be an array"));
                }
            }
            "const" => {}
            "properties" => {
                let Value::Object(props) = v else { return Err(format!("{here}: must be an object")) };
                for (name, sub) in props {
                    check(sub, &format!("{here}/{name}"))?;
                }
            }
            "required" => {
                if !v.as_array().is_some_and(|xs| xs.iter().all(Value::is_string)) {
                    return Err(format!("{here}: must be an array of property names"));
                }
            }
            "additionalProperties" | "items" | "not" => check(v, &here)?,
            "allOf" | "anyOf" | "oneOf" => {
                let Value::Array(xs) = v else { return Err(format!("{here}: must be an array of schemas")) };
                for (i, sub) in xs.iter().enumerate() {
                    check(sub, &format!("{here}/{i}"))?;
                }
            }
            "minItems" | "maxItems" | "minLength" | "maxLength" => non_negative(v)?,
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => number(v)?,
            "pattern" => {
                let Some(p) = v.as_str() else { return Err(format!("{here}: must be a string")) };
                regex::Regex::new(p).map_err(|e| format!("{here}: invalid pattern: {e}"))?;
            }
            other => {
                return Err(format!(
                    "{here}: keyword `{other}` is not in the supported subset of JSON Schema (see `meshops::eval::schema`)"
                ));
            }
        }
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
            "integer"
        }
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(v: &Value, want: &str) -> bool {
    let t = type_name(v);
    t == want || (want == "number" && t == "integer")
}

/// JSON equality with numbers compared by value (1 equals 1.0).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Validates `instance` against a schema that passed [`check`]; returns
/// the violations, each with the JSON pointer of the offending value.
pub fn validate(schema: &Value, instance: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, instance, "", &mut errors);
    errors
}

fn walk(schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let here = if at.is_empty() { "/" } else { at };
    let map = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errors.push(format!("{here}: no value is allowed here"));
            return;
        }
        Value::Object(m) => m,
        _ => return,
    };
    if let Some(t) = map.get("type") {
        let names: Vec<&str> = match t {
            Value::Array(xs) => xs.iter().filter_map(Value::as_str).collect(),
            one => one.as_str().into_iter().collect(),
        };
        if !names.iter().any(|n| has_type(v, n)) {
            errors.push(format!("{here}: expected {}, got {}", names.join(" or "), type_name(v)));
            return;
        }
    }
    if let Some(Value::Array(options)) = map.get("enum") {
        if !options.iter().any(|o| json_eq(o, v)) {
            errors.push(format!("{here}: {v} is not one of {}", Value::Array(options.clone())));
        }
    }
    if let Some(c) = map.get("const") {
        if !json_eq(c, v) {
            errors.push(format!("{here}: expected {c}, got {v}"));
        }
    }
    walk_value(map, v, at, errors);
    if let Some(Value::Array(all)) = map.get("allOf") {
        for s in all {
            walk(s, v, at, errors);
        }
    }
    if let Some(Value::Array(any)) = map.get("anyOf") {
        if !any.iter().any(|s| validate_at(s, v, at).is_empty()) {
            errors.push(format!("{here}: matches none of anyOf"));
        }
    }
    if let Some(Value::Array(one)) = map.get("oneOf") {
        let matching = one.iter().filter(|s| validate_at(s, v, at).is_empty()).count();
        if matching != 1 {
            errors.push(format!("{here}: matches {matching} of oneOf, not exactly one"));
        }
    }
    if let Some(not) = map.get("not") {
        if validate_at(not, v, at).is_empty() {
            errors.push(format!("{here}: matches the schema under `not`"));
        }
    }
}

/// The keywords that depend on the value's kind: properties of an object,
/// items of an array, length and pattern of a string, bounds of a number.
fn walk_value(map: &serde_json::Map<String, Value>, v: &Value, at: &str, errors: &mut Vec<String>) {
    let here = if at.is_empty() { "/" } else { at };
    match v {
        Value::Object(obj) => {
            if let Some(Value::Array(req)) = map.get("required") {
                for name in req.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(name) {
                        errors.push(format!("{here}: missing required property `{name}`"));
                    }
                }
            }
            let props = map.get("properties").and_then(Value::as_object);
            for (k, sub) in obj {
                let path = format!("{at}/{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(s) => walk(s, sub, &path, errors),
                    None => {
                        if let Some(extra) = map.get("additionalProperties") {
                            if extra == &Value::Bool(false) {
                                errors.push(format!("{path}: property `{k}` is not allowed"));
                            } else {
                                walk(extra, sub, &path, errors);
                            }
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = map.get("minItems").and_then(Value::as_u64).filter(|m| n < *m) {
                errors.push(format!("{here}: {n} items, fewer than {min}"));
            }
            if let Some(max) = map.get("maxItems").and_then(Value::as_u64).filter(|m| n > *m) {
                errors.push(format!("{here}: {n} items, more than {max}"));
            }
            if let Some(item_schema) = map.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{at}/{i}"), errors);
                }
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if let Some(min) = map.get("minLength").and_then(Value::as_u64).filter(|m| n < *m) {
                errors.push(format!("{here}: {n} characters, fewer than {min}"));
            }
            if let Some(max) = map.get("maxLength").and_then(Value::as_u64).filter(|m| n > *m) {
                errors.push(format!("{here}: {n} characters, more than {max}"));
            }
            if let Some(p) = map.get("pattern").and_then(Value::as_str) {
                if let Ok(re) = regex::Regex::new(p) {
                    if !re.is_match(s) {
                        errors.push(format!("{here}: does not match pattern {p:?}"));
                    }
                }
            }
        }
        Value::Number(num) => {
            let x = num.as_f64().unwrap_or(f64::NAN);
            let bound = |k: &str| map.get(k).and_then(Value::as_f64);
            if let Some(m) = bound("minimum").filter(|m| x < *m) {
                errors.push(format!("{here}: {x} is less than the minimum {m}"));
            }
            if let Some(m) = bound("maximum").filter(|m| x > *m) {
                errors.push(format!("{here}: {x} is more than the maximum {m}"));
            }
            if let Some(m) = bound("exclusiveMinimum").filter(|m| x <= *m) {
                errors.push(format!("{here}: {x} is not more than {m}"));
            }
            if let Some(m) = bound("exclusiveMaximum").filter(|m| x >= *m) {
                errors.push(format!("{here}: {x} is not less than {m}"));
            }
        }
        _ => {}
    }
}

fn validate_at(schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, v, at, &mut errors);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_the_subset() {
        let schema = json!({
            "type": "object",
            "required": ["answer", "sources"],
            "additionalProperties": false,
            "properties": {
                "answer": {"type": "string", "minLength": 1, "pattern": "\\S"},
                "sources": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "kind": {"enum": ["fact", "opinion"]}
            }
        });
        check(&schema, "schema").unwrap();
        assert!(validate(&schema, &json!({"answer": "x", "sources": ["a"], "confidence": 1})).is_empty());
        let errs =
            validate(&schema, &json!({"answer": "", "sources": [], "confidence": 2, "kind": "joke", "x": 1}));
        let all = errs.join("\n");
        for want in [
            "/answer: 0 characters",
            "/sources: 0 items",
            "/confidence: 2 is more",
            "not one of",
            "/x: property",
        ] {
            assert!(all.contains(want), "{want} missing in {all}");
        }
        assert_eq!(validate(&schema, &json!([1])), vec!["/: expected object, got array".to_string()]);
        assert!(validate(&json!({"anyOf": [{"type": "integer"}, {"type": "null"}]}), &json!(2)).is_empty());
        assert!(
            !validate(&json!({"oneOf": [{"type": "number"}, {"type": "integer"}]}), &json!(2)).is_empty()
        );
        assert!(!validate(&json!({"not": {"const": 1.0}}), &json!(1)).is_empty());
    }

    #[test]
    fn unsupported_keywords_are_named() {
        let err = check(&json!({"properties": {"a": {"$ref": "#/x"}}}), "schema").unwrap_err();
        assert!(
            err.contains("schema/properties/a/$ref") && err.contains("not in the supported subset"),
            "{err}"
        );
        assert!(check(&json!({"type": "float"}), "s").unwrap_err().contains("unknown type"));
        assert!(check(&json!({"pattern": "("}), "s").unwrap_err().contains("invalid pattern"));
    }
}
