//! Property lists: `inputs`, `outputs` and tools' `parameters`.
//!
//! Written as a v2 list of `{name, kind, description, required, default,
//! example, enumValues}`, as a mapping of name → declaration (v1 `type` and
//! `sample`, or v2 keys) or name → plain default (the shorthand), or
//! wrapped as `{properties: …}` (`inputSchema`, tool parameters, JSON
//! Schema objects). Inputs become [`PromptyInput`]s; outputs and tool
//! parameters become JSON Schema objects (spec §7.1.4), the form a
//! `response_format` or a tool definition takes.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::error::PromptFileError;
use super::front_matter::Cx;
use super::header::{PromptyInput, PromptyTool};

/// Keys that make a mapping a declaration rather than a default value.
const DECLARATION_KEYS: [&str; 11] = [
    "type",
    "kind",
    "description",
    "default",
    "sample",
    "example",
    "required",
    "enumValues",
    "enum",
    "properties",
    "items",
];

/// JSON Schema keywords a v1 declaration may carry, copied into schemas.
const SCHEMA_KEYWORDS: [&str; 8] =
    ["format", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"];

/// Input kinds rendered (`thread` is expanded into messages); `image`,
/// `file` and `audio` need content parts meshops does not send.
const INPUT_KINDS: [&str; 9] =
    ["string", "integer", "float", "number", "boolean", "array", "object", "thread", "any"];

/// One property, as declared.
#[derive(Debug, Default)]
struct Property {
    name: String,
    kind: Option<String>,
    description: Option<String>,
    /// As written; unset means optional for inputs and tool parameters,
    /// required for outputs (a declared output is expected).
    required: Option<bool>,
    default: Option<serde_json::Value>,
    example: Option<serde_json::Value>,
    enum_values: Vec<serde_json::Value>,
    /// An object's own properties.
    properties: Vec<Property>,
    /// An array's item.
    items: Option<Box<Property>>,
    extra: BTreeMap<String, serde_json::Value>,
}

/// The kind a shorthand default implies (spec §2.7).
fn infer_kind(value: &Value) -> Option<&'static str> {
    match value {
        Value::String(_) => Some("string"),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some("integer"),
        Value::Number(_) => Some("float"),
        Value::Bool(_) => Some("boolean"),
        Value::Sequence(_) => Some("array"),
        Value::Mapping(_) => Some("object"),
        Value::Null | Value::Tagged(_) => None,
    }
}

/// The JSON Schema type of a property kind.
fn json_type(kind: &str) -> Option<&'static str> {
    match kind {
        "string" | "str" => Some("string"),
        "integer" | "int" | "long" => Some("integer"),
        "float" | "double" | "number" => Some("number"),
        "boolean" | "bool" => Some("boolean"),
        "array" | "list" => Some("array"),
        "object" | "dict" | "map" => Some("object"),
        _ => None,
    }
}

impl Cx<'_> {
    /// `inputs` (or `inputSchema`).
    pub(crate) fn inputs(
        &mut self,
        value: &Value,
        field: &str,
    ) -> Result<BTreeMap<String, PromptyInput>, PromptFileError> {
        let mut inputs = BTreeMap::new();
        for p in self.properties(value, field)? {
            let kind = p.kind.as_deref().unwrap_or("string");
            // The JSON types under any spelling (`list`, `dict`, `int`, …),
            // and Prompty's own kinds.
            if json_type(kind).is_none() && !INPUT_KINDS.contains(&kind) {
                self.unsupported(format!("input `{}` of kind `{kind}` (rendered as text)", p.name));
            }
            let input = PromptyInput {
                kind: p.kind,
                description: p.description,
                default: p.default,
                sample: p.example,
                required: p.required.unwrap_or(false),
                enum_values: p.enum_values,
                extra: p.extra,
            };
            inputs.insert(p.name, input);
        }
        Ok(inputs)
    }

    /// `outputs` (or `outputSchema`) as the JSON Schema of the answer;
    /// `None` when it declares nothing. A JSON Schema written as one is
    /// kept as written (`$ref`s, `oneOf` and all); the Prompty forms become
    /// a closed object where every output is required unless it says
    /// `required: false`.
    pub(crate) fn output_schema(
        &mut self,
        value: &Value,
        field: &str,
    ) -> Result<Option<serde_json::Value>, PromptFileError> {
        if let Some(map) = value.as_mapping().filter(|m| is_json_schema(m)) {
            let mut schema = self.json(value, field)?;
            if let serde_json::Value::Object(obj) = &mut schema {
                if !obj.contains_key("type") && map.contains_key("properties") {
                    obj.insert("type".to_string(), "object".into());
                }
            }
            return Ok(Some(schema));
        }
        let properties = self.properties(value, field)?;
        if properties.is_empty() {
            return Ok(None);
        }
        for p in &properties {
            if let Some(kind) = p.kind.as_deref().filter(|k| json_type(k).is_none()) {
                self.unsupported(format!("output `{}` of kind `{kind}` (left untyped)", p.name));
            }
        }
        Ok(Some(object_schema(&properties, true, true)))
    }

    /// A property collection in any of its spellings (see the module doc).
    fn properties(&mut self, value: &Value, field: &str) -> Result<Vec<Property>, PromptFileError> {
        match value {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let sub = format!("{field}[{i}]");
                    let map = item.as_mapping().ok_or_else(|| {
                        self.expected(&sub, "a mapping declaring a property (with a `name`)", item)
                    })?;
                    let name = match map.get("name") {
                        Some(name) => self.scalar_string(name, &format!("{sub}.name"))?,
                        None => return Err(self.error(&sub, "a property needs a `name`")),
                    };
                    self.property(map, name, &sub)
                })
                .collect(),
            Value::Mapping(map) => {
                if let Some(wrapped) = wrapped_properties(map) {
                    let mut properties = self.properties(wrapped, &format!("{field}.properties"))?;
                    // JSON Schema's `required: [names]` beside `properties`.
                    if let Some(Value::Sequence(names)) = map.get("required") {
                        for p in &mut properties {
                            let listed = names.iter().any(|n| n.as_str() == Some(p.name.as_str()));
                            p.required = Some(p.required.unwrap_or(false) || listed);
                        }
                    }
                    return Ok(properties);
                }
                let mut properties = Vec::new();
                for (key, value) in map {
                    let name = self.key(key, field)?.to_string();
                    let sub = format!("{field}.{name}");
                    let declaration =
                        value.as_mapping().filter(|m| DECLARATION_KEYS.iter().any(|k| m.contains_key(*k)));
                    properties.push(match declaration {
                        Some(map) => self.property(map, name, &sub)?,
                        None if value.is_null() => Property { name, ..Property::default() },
                        None => Property {
                            name,
                            kind: infer_kind(value).map(str::to_string),
                            default: Some(self.json(value, &sub)?),
                            ..Property::default()
                        },
                    });
                }
                Ok(properties)
            }
            other => {
                Err(self.expected(field, "a list of properties or a mapping of name to declaration", other))
            }
        }
    }

    /// One declaration (`field` names it in errors).
    fn property(&mut self, map: &Mapping, name: String, field: &str) -> Result<Property, PromptFileError> {
        let mut p = Property { name, ..Property::default() };
        for (key, value) in map {
            let key = self.key(key, field)?;
            if value.is_null() {
                continue;
            }
            let sub = format!("{field}.{key}");
            match key {
                "name" => {}
                "type" | "kind" => p.kind = Some(self.string(value, &sub)?.trim().to_ascii_lowercase()),
                "description" => p.description = Some(self.scalar_string(value, &sub)?),
                // A JSON Schema object's own `required: [names]`, read with
                // its `properties` (below).
                "required" if value.is_sequence() => {}
                "required" => {
                    p.required =
                        Some(value.as_bool().ok_or_else(|| self.expected(&sub, "true or false", value))?);
                }
                "default" => p.default = Some(self.json(value, &sub)?),
                "sample" | "example" => p.example = Some(self.json(value, &sub)?),
                "enumValues" | "enum" => match self.json(value, &sub)? {
                    serde_json::Value::Array(values) => p.enum_values = values,
                    _ => return Err(self.expected(&sub, "a list of allowed values", value)),
                },
                "properties" => {
                    p.properties = self.properties(value, &sub)?;
                    if let Some(Value::Sequence(names)) = map.get("required") {
                        for q in &mut p.properties {
                            let listed = names.iter().any(|n| n.as_str() == Some(q.name.as_str()));
                            q.required = Some(q.required.unwrap_or(false) || listed);
                        }
                    }
                }
                "items" => {
                    let item = value.as_mapping().ok_or_else(|| self.expected(&sub, "a mapping", value))?;
                    p.items = Some(Box::new(self.property(item, "items".to_string(), &sub)?));
                }
                _ => {
                    p.extra.insert(key.to_string(), self.json(value, &sub)?);
                }
            }
        }
        Ok(p)
    }

    /// `tools` (v2), or v1 `model.parameters.tools`: a list of tools.
    pub(crate) fn tools(&mut self, value: &Value, field: &str) -> Result<Vec<PromptyTool>, PromptFileError> {
        let items = value.as_sequence().ok_or_else(|| self.expected(field, "a list of tools", value))?;
        let mut tools = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let sub = format!("{field}[{i}]");
            let map =
                item.as_mapping().ok_or_else(|| self.expected(&sub, "a mapping declaring a tool", item))?;
            let tool = match map.get("function").and_then(Value::as_mapping) {
                // OpenAI's wire form: `{type: function, function: {name, …}}`.
                Some(function) if map.get("kind").is_none() => self.wire_tool(function, &sub)?,
                _ => self.tool(map, &sub)?,
            };
            if !matches!(tool.kind.as_str(), "function" | "mcp") {
                self.unsupported(format!("tool `{}` of kind `{}`", tool.name, tool.kind));
            }
            tools.push(tool);
        }
        Ok(tools)
    }

    /// A v2 tool declaration.
    fn tool(&mut self, map: &Mapping, field: &str) -> Result<PromptyTool, PromptFileError> {
        // Earlier v2 drafts (Prompty's own runtime tests) name a tool `id`.
        let name = match (map.get("name"), map.get("id")) {
            (Some(name), _) => self.scalar_string(name, &format!("{field}.name"))?,
            (None, Some(id)) => self.scalar_string(id, &format!("{field}.id"))?,
            (None, None) => return Err(self.error(field, "a tool needs a `name`")),
        };
        let mut tool = PromptyTool {
            name,
            kind: "function".to_string(),
            description: String::new(),
            parameters: None,
            strict: false,
            bindings: BTreeMap::new(),
            connection: None,
            extra: BTreeMap::new(),
        };
        for (key, value) in map {
            let key = self.key(key, field)?;
            if value.is_null() {
                continue;
            }
            let sub = format!("{field}.{key}");
            match key {
                "name" | "id" => {}
                "kind" | "type" => tool.kind = self.string(value, &sub)?.trim().to_ascii_lowercase(),
                "description" => tool.description = self.scalar_string(value, &sub)?,
                "parameters" => {
                    // `strict` may sit beside the wrapped properties.
                    if let Some(strict) = value.get("strict").and_then(Value::as_bool) {
                        tool.strict |= strict;
                    }
                    let properties = self.properties(value, &sub)?;
                    tool.parameters = Some(object_schema(&properties, false, false));
                }
                "strict" => {
                    tool.strict =
                        value.as_bool().ok_or_else(|| self.expected(&sub, "true or false", value))?;
                }
                "bindings" => self.bindings(value, &sub, &mut tool.bindings)?,
                "connection" => tool.connection = Some(self.json(value, &sub)?),
                _ => {
                    tool.extra.insert(key.to_string(), self.json(value, &sub)?);
                }
            }
        }
        if tool.strict
            && let Some(serde_json::Value::Object(schema)) = &mut tool.parameters
        {
            schema.insert("additionalProperties".to_string(), serde_json::Value::Bool(false));
        }
        Ok(tool)
    }

    /// A tool's `bindings`: a mapping of parameter name to binding
    /// (`unit: {input: preferred_unit}`), or a list of bindings that each
    /// carry their `name` (`- {name: unit, input: preferred_unit}`).
    fn bindings(
        &mut self,
        value: &Value,
        field: &str,
        bindings: &mut BTreeMap<String, serde_json::Value>,
    ) -> Result<(), PromptFileError> {
        if let Value::Sequence(items) = value {
            for (i, item) in items.iter().enumerate() {
                let sub = format!("{field}[{i}]");
                let map =
                    item.as_mapping().ok_or_else(|| self.expected(&sub, "a mapping with a `name`", item))?;
                let name = match map.get("name") {
                    Some(name) => self.scalar_string(name, &format!("{sub}.name"))?,
                    None => return Err(self.error(&sub, "a binding needs a `name`")),
                };
                let mut rest = map.clone();
                rest.remove("name");
                bindings.insert(name, self.json(&Value::Mapping(rest), &sub)?);
            }
            return Ok(());
        }
        for (name, binding) in self.mapping(value, field)? {
            let name = self.key(name, field)?;
            bindings.insert(name.to_string(), self.json(binding, &format!("{field}.{name}"))?);
        }
        Ok(())
    }

    /// A tool in OpenAI's wire form; its `parameters` are a JSON Schema,
    /// kept as written.
    fn wire_tool(&mut self, function: &Mapping, field: &str) -> Result<PromptyTool, PromptFileError> {
        let field = format!("{field}.function");
        let get = |key: &str| function.get(key).filter(|v| !v.is_null());
        let name = match get("name") {
            Some(name) => self.scalar_string(name, &format!("{field}.name"))?,
            None => return Err(self.error(&field, "a function needs a `name`")),
        };
        let description = match get("description") {
            Some(d) => self.scalar_string(d, &format!("{field}.description"))?,
            None => String::new(),
        };
        let parameters =
            get("parameters").map(|p| self.json(p, &format!("{field}.parameters"))).transpose()?;
        let strict = get("strict").and_then(Value::as_bool).unwrap_or(false);
        Ok(PromptyTool {
            name,
            kind: "function".to_string(),
            description,
            parameters,
            strict,
            bindings: BTreeMap::new(),
            connection: None,
            extra: BTreeMap::new(),
        })
    }
}

/// The properties a wrapper mapping holds: `{properties: [...]}`, or a JSON
/// Schema object `{type: object, properties: {...}}`. A mapping of inputs
/// that merely has one named `properties` is not a wrapper.
fn wrapped_properties(map: &Mapping) -> Option<&Value> {
    let properties = map.get("properties")?;
    let is_object_schema = map.get("type").and_then(Value::as_str) == Some("object")
        || map.get("kind").and_then(Value::as_str) == Some("object");
    let only_schema_keys = map.keys().all(|k| {
        matches!(
            k.as_str(),
            Some("properties" | "required" | "strict" | "type" | "kind" | "additionalProperties")
        )
    });
    match properties {
        Value::Sequence(_) => Some(properties),
        Value::Mapping(_) if is_object_schema || only_schema_keys => Some(properties),
        _ => None,
    }
}

/// Whether an `outputs` mapping is a JSON Schema written as one (kept as
/// written) rather than a Prompty mapping of output names: it says
/// `$schema`, or it is `type: object` with `properties` written as a
/// mapping (a v2 `kind: object` with a list is Prompty's own form).
fn is_json_schema(map: &Mapping) -> bool {
    map.contains_key("$schema")
        || (map.get("type").and_then(Value::as_str) == Some("object")
            && map.get("properties").is_some_and(Value::is_mapping))
}

/// The JSON Schema of an object with `properties` (spec §7.1.4);
/// `closed` adds `additionalProperties: false` (structured output, §7.1.6);
/// `required_by_default` (outputs) makes a property that does not say
/// otherwise required.
fn object_schema(properties: &[Property], closed: bool, required_by_default: bool) -> serde_json::Value {
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    for p in properties {
        props.insert(p.name.clone(), property_schema(p, required_by_default));
        if p.required.unwrap_or(required_by_default) {
            required.push(serde_json::Value::String(p.name.clone()));
        }
    }
    let mut schema = serde_json::Map::new();
    schema.insert("type".to_string(), "object".into());
    schema.insert("properties".to_string(), props.into());
    if !required.is_empty() {
        schema.insert("required".to_string(), required.into());
    }
    if closed {
        schema.insert("additionalProperties".to_string(), false.into());
    }
    schema.into()
}

/// The JSON Schema of one property (with its `default` and `examples`,
/// which a stand-in model fills a reply from).
fn property_schema(p: &Property, required_by_default: bool) -> serde_json::Value {
    let kind = p.kind.as_deref().unwrap_or(if !p.properties.is_empty() {
        "object"
    } else if p.items.is_some() {
        "array"
    } else {
        ""
    });
    let mut schema = match kind {
        "object" if !p.properties.is_empty() => match object_schema(&p.properties, true, required_by_default)
        {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        _ => serde_json::Map::new(),
    };
    if let Some(t) = json_type(kind) {
        schema.insert("type".to_string(), t.into());
    }
    if let Some(description) = &p.description {
        schema.insert("description".to_string(), description.clone().into());
    }
    if !p.enum_values.is_empty() {
        schema.insert("enum".to_string(), p.enum_values.clone().into());
    }
    if let (Some(items), "array") = (&p.items, kind) {
        schema.insert("items".to_string(), property_schema(items, required_by_default));
    }
    if let Some(default) = &p.default {
        schema.insert("default".to_string(), default.clone());
    }
    if let Some(example) = &p.example {
        schema.insert("examples".to_string(), vec![example.clone()].into());
    }
    for keyword in SCHEMA_KEYWORDS {
        if let Some(value) = p.extra.get(keyword) {
            schema.insert(keyword.to_string(), value.clone());
        }
    }
    schema.into()
}
