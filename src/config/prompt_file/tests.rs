//! Unit tests of the front matter readers, one per Prompty v2 shape (the
//! files in `tests/data/prompty/` are checked by `tests/prompty_fixtures.rs`).

use std::path::Path;

use serde_json::json;

use super::*;
use crate::config::ModelParams;

fn parse(text: &str) -> PromptFile {
    PromptFile::parse(text, Path::new("inline.prompty")).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn inputs_as_list_map_and_wrapper() {
    let list = parse(
        "---\ninputs:\n  - name: q\n    kind: string\n    description: The question\n    required: true\n    example: why?\n    enumValues: [a, b]\n  - name: n\n    kind: integer\n    default: 3\n---\n",
    );
    let q = &list.inputs["q"];
    assert_eq!(
        (q.kind.as_deref(), q.description.as_deref(), q.required, q.sample.clone(), q.default.clone()),
        (Some("string"), Some("The question"), true, Some(json!("why?")), None)
    );
    assert_eq!(q.enum_values, [json!("a"), json!("b")]);
    assert_eq!(list.inputs["n"].default, Some(json!(3)));
    // v2 map form with `kind`, shorthand defaults with inferred kinds.
    let map =
        parse("---\ninputs:\n  q: {kind: string}\n  n: 2\n  x: 1.5\n  b: true\n  l: [1]\n  o: {a: 1}\n---\n");
    let kinds: Vec<(&str, Option<&str>)> =
        map.inputs.iter().map(|(name, i)| (name.as_str(), i.kind.as_deref())).collect();
    assert_eq!(
        kinds,
        [
            ("b", Some("boolean")),
            ("l", Some("array")),
            ("n", Some("integer")),
            ("o", Some("object")),
            ("q", Some("string")),
            ("x", Some("float")),
        ]
    );
    assert_eq!(
        map.inputs["o"].default,
        Some(json!({"a": 1})),
        "an object without declaration keys is a default"
    );
    // `inputSchema: {properties: [...]}` and a JSON Schema object.
    let wrapped = parse("---\ninputSchema:\n  properties:\n    - name: topic\n      default: Rust\n---\n");
    assert_eq!(wrapped.inputs["topic"].default, Some(json!("Rust")));
    let schema =
        parse("---\ninputs:\n  type: object\n  properties:\n    q: {type: string}\n  required: [q]\n---\n");
    assert!(schema.inputs["q"].required);
    assert_eq!(schema.inputs.len(), 1);
}

#[test]
fn model_string_and_v2_options() {
    let p = parse("---\nmodel: gpt-4o\n---\n");
    assert_eq!((p.model.id.as_deref(), p.model.api.as_str()), (Some("gpt-4o"), "chat"));
    let p = parse(
        "---\nmodel:\n  id: m\n  apiType: Chat\n  options:\n    temperature: 0.5\n    maxOutputTokens: 64\n    topP: 0.8\n    seed: 9\n    stopSequences: [END]\n    frequencyPenalty: 0.1\n    additionalProperties:\n      logprobs: true\n---\n",
    );
    assert_eq!(
        p.model.parameters.to_model_params(),
        ModelParams {
            temperature: Some(0.5),
            max_tokens: Some(64),
            top_p: Some(0.8),
            seed: Some(9),
            stop: vec!["END".to_string()],
            response_format: None,
        }
    );
    assert_eq!(p.model.parameters.extra["frequencyPenalty"], json!(0.1));
    assert_eq!(p.model.parameters.extra["logprobs"], json!(true));
    assert_eq!(
        p.unsupported,
        ["`model.options.frequencyPenalty`", "`model.options.additionalProperties.logprobs`"]
    );
    // Options keep their ranges.
    let err = PromptFile::parse("---\nmodel:\n  options:\n    topP: 2\n---\n", Path::new("x.prompty"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`model.options.topP`") && err.contains("out of range"), "{err}");
}

#[test]
fn template_v2_form() {
    let p =
        parse("---\ntemplate:\n  format:\n    kind: Jinja2\n  parser:\n    kind: prompty\n---\n{{ x }}\n");
    assert_eq!(p.template, PromptyTemplate::default());
    assert!(p.unsupported.is_empty());
    let p = parse("---\ntemplate: {format: {kind: mustache}, strict: true}\n---\n{{x}}\n");
    assert_eq!(p.template.engine, TemplateEngine::MustacheAsJinja);
    assert_eq!(p.unsupported, ["template format `mustache` (rendered as Jinja2)", "`template.strict`"]);
    // A Jinja2 body that does not parse stays an error.
    assert!(PromptFile::parse("---\ntemplate: jinja2\n---\n{% if %}\n", Path::new("x.prompty")).is_err());
}

#[test]
fn tools_of_every_kind() {
    let p = parse(
        "---\ntools:\n  - name: f\n    kind: function\n    parameters:\n      - name: a\n        kind: float\n        required: true\n  - name: m\n    kind: mcp\n    serverName: s\n  - name: o\n    kind: openapi\n    specification: ./x.json\n  - name: c\n    kind: my_provider\n---\n",
    );
    let kinds: Vec<&str> = p.tools.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["function", "mcp", "openapi", "my_provider"]);
    assert_eq!(
        p.tools[0].parameters,
        Some(json!({"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]}))
    );
    assert_eq!(p.tools[2].extra["specification"], "./x.json");
    assert_eq!(p.unsupported, ["tool `o` of kind `openapi`", "tool `c` of kind `my_provider`"]);
}

#[test]
fn file_references_read_text_json_and_yaml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.txt"), "from a file").unwrap();
    std::fs::write(dir.path().join("i.yaml"), "- name: q\n  default: yes please\n").unwrap();
    let path = dir.path().join("p.prompty");
    let p =
        PromptFile::parse("---\ndescription: ${file:d.txt}\ninputs: ${file:i.yaml}\n---\n", &path).unwrap();
    assert_eq!(p.description, "from a file");
    assert_eq!(p.inputs["q"].default, Some(json!("yes please")));
    let err = PromptFile::parse("---\nmodel:\n  options: ${file:none.json}\n---\n", &path).unwrap_err();
    assert!(matches!(err, PromptFileError::FileRef { ref field, .. } if field == "model.options"), "{err}");
    // The older `file:` spelling reads an existing file and leaves other text alone.
    std::fs::write(dir.path().join("t.json"), r#"[{"type": "function", "function": {"name": "f"}}]"#)
        .unwrap();
    let p = PromptFile::parse(
        "---\ndescription: 'file: a note'\nmodel:\n  parameters:\n    tools: file:t.json\n---\n",
        &path,
    )
    .unwrap();
    assert_eq!(p.description, "file: a note");
    assert_eq!(p.tools.len(), 1);
    assert_eq!(p.tools[0].name, "f");
}

/// What meshops only shows or never calls — a sample, a connection, a
/// tool's options — loads even when its file is missing or its value is
/// not input values; the note names the field (and the file).
#[test]
fn unused_values_that_cannot_be_read_are_notes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.prompty");
    let cases: &[(&str, &[&str])] = &[
        ("---\nsample: 3\n---\n", &["`sample`", "a number"]),
        ("---\nsample: hello\n---\n", &["`sample`", "`hello`"]),
        ("---\nsample: chat.json\n---\n", &["`sample`", "`chat.json`"]),
        ("---\nsample: ${file:missing.json}\n---\n", &["`sample`", "missing.json", "not found"]),
        ("---\nmodel:\n  connection: ${file:none.json}\n---\n", &["`model.connection`", "none.json"]),
        (
            "---\ntools:\n  - id: s\n    type: openapi\n    options:\n      schema: ${file:schema.json}\n---\n",
            &["`tools[0].options.schema`", "schema.json"],
        ),
    ];
    for (text, fragments) in cases {
        let p = PromptFile::parse(text, &path).unwrap_or_else(|e| panic!("{text:?} should load: {e}"));
        assert_eq!(p.sample, json!({}), "{text:?}");
        let notes = p.unsupported.join("; ");
        for fragment in *fragments {
            assert!(notes.contains(fragment), "{text:?}: expected {fragment:?} in {notes}");
        }
    }
    // A bare sample file name that exists is read, as early Prompty did.
    std::fs::write(dir.path().join("chat.json"), r#"{"question": "why?"}"#).unwrap();
    let p = PromptFile::parse("---\nsample: chat.json\n---\n", &path).unwrap();
    assert_eq!(p.sample, json!({"question": "why?"}));
    assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
}

/// Shapes found in real files: a tool named by `id`, bindings as a list, a
/// number written as text or as Python's `None`, and a Mustache body with
/// no `template` key.
#[test]
fn shapes_from_real_files_load() {
    let path = Path::new("p.prompty");
    let p = PromptFile::parse(
        "---\nmodel:\n  parameters:\n    max_tokens: None\n    temperature: '0.5'\n    stop: '42'\ntools:\n  - id: get_weather\n    type: function\n    bindings:\n      - name: unit\n        input: preferred_unit\n---\nuser:\n{{q}}\n",
        path,
    )
    .unwrap();
    assert_eq!(p.model.parameters.max_tokens, None);
    assert_eq!(p.model.parameters.temperature, Some(0.5));
    assert_eq!(p.model.parameters.stop, ["42"]);
    assert_eq!(p.tools[0].name, "get_weather");
    assert_eq!(p.tools[0].bindings["unit"], json!({"input": "preferred_unit"}));
    assert_eq!(p.template.format, "jinja2");
    let p = PromptFile::parse(
        "---\nname: m\n---\nsystem:\n{{#rules}}\n{{rule}}\n{{/rules}}\nuser:\n{{input}}\n",
        path,
    )
    .unwrap();
    assert_eq!(p.template.format, "mustache");
    assert!(p.unsupported.iter().any(|n| n.contains("`mustache`, not given")), "{:?}", p.unsupported);
    // A declared Jinja2 body that does not parse is still an error.
    let err = PromptFile::parse("---\ntemplate: jinja2\n---\n{{#rules}}\n", path).unwrap_err();
    assert!(matches!(err, PromptFileError::Template { .. }), "{err}");
}
