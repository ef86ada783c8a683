//! Prompty v1 and v2 files as found in the wild: every file under
//! `tests/data/prompty/` (the Prompty v2 spec's fixtures, real v1/v2
//! runtime test prompts from microsoft/prompty, and prompts from other
//! repositories that use Prompty; see its README) loads as a
//! `PromptFile`, compiles and renders; focused checks of each v2 shape; and
//! `meshops validate` names the features a prompt uses that meshops lacks.

use std::path::{Path, PathBuf};
use std::process::Command;

use meshops::config::{ModelParams, PromptFile};
use meshops::llm::Role;
use meshops::prompt::{Prompty, TemplateEngine};
use serde_json::json;

fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

fn data(file: &str) -> PathBuf {
    root().join("tests/data/prompty").join(file)
}

/// Files in `tests/data/prompty/` that are broken on purpose (the
/// prompt layer's error tests use them).
const BROKEN: [&str; 3] = ["syntax_error.prompty", "unterminated.prompty", "bad_temperature.prompty"];

/// Every `.prompty` file under `dir`, recursively, sorted.
fn prompty_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(prompty_files(&path));
        } else if path.extension().is_some_and(|e| e == "prompty") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn load(file: &str) -> Prompty {
    Prompty::load(&data(file)).unwrap_or_else(|e| panic!("{file} should load: {e}"))
}

fn messages(p: &Prompty, inputs: serde_json::Value) -> Vec<(Role, String)> {
    let rendered = p.render(&inputs).unwrap_or_else(|e| panic!("{} should render: {e}", p.path.display()));
    rendered.into_iter().map(|m| (m.role, m.content)).collect()
}

fn sorted(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort();
    items
}

/// The data-driven check: every file loads as a `PromptFile`, compiles as
/// a `Prompty` and renders with its `sample` (or no inputs: defaults fill
/// in).
#[test]
fn every_file_loads_compiles_and_renders() {
    let files = prompty_files(&data(""));
    let spec = files.iter().filter(|p| p.to_string_lossy().contains("v2/spec/")).count();
    assert_eq!(spec, 12, "every Prompty v2 spec fixture is here");
    assert!(files.len() >= 40, "{} files", files.len());
    for path in &files {
        if BROKEN.iter().any(|b| path.ends_with(b)) {
            continue;
        }
        let file = PromptFile::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let prompty = Prompty::compile(std::sync::Arc::new(file)).unwrap_or_else(|e| panic!("{e}"));
        let no_sample = prompty.sample.as_object().is_none_or(|sample| sample.is_empty());
        let other_repository = path.to_string_lossy().contains("/wild/");
        let rendered = match prompty.render(&prompty.sample) {
            Ok(rendered) => rendered,
            // A file from another repository with no sample (none written,
            // or its file missing there too) whose body reads a field of an
            // input it was not given fails as in Jinja2; it must render with
            // the inputs filled. Every other file renders with its sample.
            Err(e) if other_repository && no_sample && e.to_string().contains("undefined value") => {
                Vec::new()
            }
            Err(e) => panic!("{e}"),
        };
        // With a value for every name the template reads, something is said.
        let mut inputs = serde_json::Map::new();
        for name in prompty.undeclared_variables().into_iter().chain(prompty.inputs.keys().cloned()) {
            inputs.insert(name, json!("x"));
        }
        if let Some(sample) = prompty.sample.as_object() {
            inputs.extend(sample.clone());
        }
        let filled = prompty.render(&inputs.into()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!filled.is_empty(), "{} renders no message", path.display());
        assert!(rendered.len() <= filled.len(), "{}", path.display());
    }
}

/// What each spec fixture uses that meshops lacks: named, never refused.
#[test]
fn spec_fixtures_report_what_meshops_lacks() {
    let cases: &[(&str, &[&str])] = &[
        ("basic", &[]),
        ("embedding", &["model API `embedding` (called as chat)"]),
        (
            "image",
            &[
                "model API `image` (called as chat)",
                "`model.options.additionalProperties.size`",
                "`model.options.additionalProperties.quality`",
            ],
        ),
        (
            "multimodal",
            &[
                "input `photo` of kind `image` (rendered as text)",
                "input `recording` of kind `audio` (rendered as text)",
            ],
        ),
        ("responses", &["model API `responses` (called as chat)"]),
        ("structured", &[]),
        ("summarize", &[]),
        ("threaded", &[]),
        ("tools_function", &[]),
        ("tools_mcp", &[]),
        ("tools_openapi", &["tool `weather_api` of kind `openapi`"]),
        ("tools_prompty", &["tool `summarize` of kind `prompty`"]),
    ];
    for (name, expected) in cases {
        let p = load(&format!("v2/spec/{name}.prompty"));
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(sorted(&p.unsupported), sorted(&expected), "{name}");
    }
}

#[test]
fn v2_model_inputs_and_template() {
    let p = load("v2/spec/basic.prompty");
    assert_eq!(p.name, "basic-prompt");
    assert_eq!(p.authors, ["testauthor"], "lifted from metadata");
    let m = &p.model;
    assert_eq!(
        (m.id.as_deref(), m.provider.as_deref(), m.api.as_str()),
        (Some("gpt-4"), Some("openai"), "chat")
    );
    // Keys and endpoints stay by reference; options map onto ModelParams.
    let connection = m.connection.as_ref().unwrap();
    assert_eq!(connection["endpoint"], "${env:OPENAI_ENDPOINT:https://api.openai.com/v1}");
    assert_eq!(connection["apiKey"], "${env:OPENAI_API_KEY}");
    assert_eq!(
        m.parameters.to_model_params(),
        ModelParams { temperature: Some(0.7), max_tokens: Some(1000), ..ModelParams::default() }
    );
    assert_eq!(p.inputs.len(), 3);
    assert_eq!(p.inputs["firstName"].kind.as_deref(), Some("string"));
    assert_eq!(p.inputs["lastName"].default, Some(json!("Doe")));
    assert_eq!((p.template.format.as_str(), p.template.parser.as_str()), ("jinja2", "prompty"));
    assert_eq!(
        messages(&p, json!({"firstName": "Ann"})),
        [
            (
                Role::System,
                "You are an AI assistant who helps people find information.\n\n# Customer\n\
                 You are helping Ann Doe to find answers to their questions."
                    .to_string()
            ),
            (Role::User, "What is the meaning of life?".to_string()),
        ]
    );
    // `model: <id>` shorthand, and `inputSchema: {properties: [...]}`.
    let p = load("v2/runtime/shorthand_quick.prompty");
    assert_eq!(p.model.id.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(p.inputs["topic"].default, Some(json!("Python")));
    // A file with no front matter is a template-only prompt named by its file.
    let p = load("v2/runtime/shorthand_body_only.prompty");
    assert_eq!(p.name, "shorthand_body_only");
    assert_eq!(
        messages(&p, json!({})),
        [(Role::System, "You are a helpful assistant that answers questions concisely.".to_string())]
    );
    let p = load("v2/runtime/rich_metadata.prompty");
    assert_eq!(
        (p.authors.clone(), p.tags.clone(), p.version.as_deref()),
        (
            vec!["alice".to_string(), "bob".to_string()],
            vec!["production".to_string(), "v2".to_string()],
            Some("2.0")
        )
    );
}

#[test]
fn outputs_become_a_json_schema() {
    let p = load("v2/spec/structured.prompty");
    assert_eq!(
        p.output_schema,
        Some(json!({
            "type": "object",
            "properties": {
                "temperature": {"type": "integer", "description": "Temperature in Fahrenheit"},
                "condition": {"type": "string", "description": "Weather condition"},
                "city": {"type": "string", "description": "City name"},
            },
            "required": ["temperature", "condition", "city"],
            "additionalProperties": false,
        }))
    );
    assert!(p.outputs.is_array(), "outputs kept as written");
    // v1 map form, nested objects and arrays.
    let p = load("v1/runtime/structured_complex.prompty");
    let schema = p.output_schema.clone().unwrap();
    assert_eq!(schema["properties"]["location"]["properties"]["city"]["type"], "string");
    assert_eq!(schema["properties"]["location"]["additionalProperties"], false);
    assert_eq!(schema["properties"]["activities"]["items"]["type"], "string");
    // v1 `response_format: {type: json_schema}` (here from a `${file:…}`).
    let p = load("v1/runtime/structured_output.prompty");
    let schema = p.output_schema.clone().unwrap();
    assert_eq!(schema["required"], json!(["name", "date", "participants"]));
    assert_eq!(schema["properties"]["date"]["format"], "date-time");
    assert_eq!(p.model.parameters.response_format, None);
}

#[test]
fn tools_are_kept_as_data() {
    let p = load("v2/spec/tools_function.prompty");
    let tool = &p.tools[0];
    assert_eq!((tool.name.as_str(), tool.kind.as_str(), tool.strict), ("get_weather", "function", true));
    let schema = tool.parameters.clone().unwrap();
    assert_eq!(schema["properties"]["unit"]["enum"], json!(["celsius", "fahrenheit"]));
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(tool.bindings["unit"], json!({"input": "preferred_unit"}));
    // The bound argument is not shown to the model.
    let shown = tool.parameters_for_model().unwrap();
    assert_eq!(shown["properties"].as_object().unwrap().keys().collect::<Vec<_>>(), ["location"]);
    let p = load("v2/spec/tools_mcp.prompty");
    let tool = &p.tools[0];
    assert_eq!(tool.kind, "mcp");
    assert_eq!(tool.connection, Some(json!({"kind": "reference", "name": "fs-server"})));
    assert_eq!(tool.extra["serverName"], "filesystem-server");
    // v1: OpenAI wire-form tools under `model.options`.
    let p = load("v1/runtime/functions.prompty");
    let names: Vec<&str> = p.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["get_current_weather", "create_a_picture"]);
    assert_eq!(p.tools[0].parameters.as_ref().unwrap()["required"], json!(["location"]));
    // v1: v2-style tools under `model.parameters`; `strict` beside the properties.
    assert_eq!(load("v1/runtime/legacy_tools.prompty").tools[0].name, "get_weather");
    assert!(load("v2/runtime/tools_function.prompty").tools[0].strict);
}

#[test]
fn threads_render_as_messages() {
    let p = load("v2/spec/threaded.prompty");
    let got = messages(
        &p,
        json!({"conversation": [
            {"role": "user", "content": "What is a mesh?"},
            {"role": "assistant", "content": "Agents that talk."},
        ]}),
    );
    assert_eq!(
        got,
        [
            (Role::System, "You are a helpful assistant.".to_string()),
            (Role::User, "What is a mesh?".to_string()),
            (Role::Assistant, "Agents that talk.".to_string()),
            (Role::User, "Hello".to_string()),
        ]
    );
}

#[test]
fn references_to_files_and_variables() {
    // `${file:…}` anywhere: a whole input list, a shared connection.
    let p = load("v2/runtime/file_ref.prompty");
    assert_eq!(p.inputs["question"].default, Some(json!("What is AI?")));
    let p = load("v2/runtime/config_cascade.prompty");
    assert_eq!(p.model.connection.as_ref().unwrap()["apiKey"], "${env:OPENAI_API_KEY}");
    // Connections keep their references, so an unset key does not fail a load.
    let p = load("v2/runtime/env_test.prompty");
    assert_eq!(p.model.connection.as_ref().unwrap()["endpoint"], "${env:TEST_ENDPOINT}");
    // Elsewhere `${env:NAME:default}` resolves, typed under `model`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.prompty");
    std::fs::write(
        &path,
        "---\nmodel:\n  options:\n    temperature: ${env:MESHOPS_SURELY_UNSET_TEMP:0.3}\n\
         inputs:\n  - name: who\n    default: ${env:MESHOPS_SURELY_UNSET_WHO:friend}\n---\nHi {{who}}\n",
    )
    .unwrap();
    let p = Prompty::load(&path).unwrap();
    assert_eq!(p.model.parameters.temperature, Some(0.3));
    assert_eq!(messages(&p, json!({})), [(Role::System, "Hi friend".to_string())]);
    std::fs::write(
        &path,
        "---\ninputs:\n  - name: who\n    default: ${env:MESHOPS_SURELY_UNSET_WHO}\n---\nx\n",
    )
    .unwrap();
    let err = Prompty::load(&path).unwrap_err().to_string();
    assert!(err.contains("`inputs[0].default`") && err.contains("MESHOPS_SURELY_UNSET_WHO"), "{err}");
}

#[test]
fn v1_files_from_the_wild() {
    let p = load("v1/runtime/legacy_basic.prompty");
    assert_eq!(
        p.model.parameters.to_model_params(),
        ModelParams {
            temperature: Some(0.7),
            max_tokens: Some(500),
            top_p: Some(0.9),
            stop: vec!["\n".to_string()],
            ..ModelParams::default()
        }
    );
    assert_eq!(
        sorted(&p.unsupported),
        ["`model.parameters.frequency_penalty`", "`model.parameters.presence_penalty`"]
    );
    let first = &p.inputs["firstName"];
    assert!(first.required);
    assert_eq!(first.sample, Some(json!("Jane")));
    // A Mustache body of variables and comments renders through Jinja2.
    let p = load("v1/runtime/basic_mustache.prompty");
    assert_eq!(p.template.engine, TemplateEngine::MustacheAsJinja);
    assert_eq!(p.unsupported, ["template format `mustache` (rendered as Jinja2)"]);
    let got = messages(&p, p.sample.clone());
    assert!(got[0].1.contains("You are helping Jane Doe to find answers"), "{got:?}");
    assert!(!got[0].1.contains("ignore this line"), "{got:?}");
    let p = load("v1/runtime/basic.prompty");
    assert_eq!(p.unsupported, ["model.configuration.type `mcs` (the agent's model profile is called)"]);
}

/// `meshops validate` passes with a v2 prompt that uses features meshops
/// lacks, and names them on one line for that prompt.
#[test]
fn validate_names_unsupported_features() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["config", "agents", "prompts", "prompts/eval"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(root().join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let critic = dir.path().join("prompts/critic.prompty");
    let text = std::fs::read_to_string(&critic).unwrap();
    let v2 = text
        .replacen(
            "model:\n  api: chat\n  configuration:\n    type: openai\n    name: gpt-4o-mini\n  parameters:",
            "model:\n  id: gpt-4o-mini\n  provider: anthropic\n  options:",
            1,
        )
        .replacen("max_tokens: 300", "maxOutputTokens: 300", 1)
        .replacen("inputs:\n", "tools:\n  - name: weather_api\n    kind: openapi\ninputs:\n", 1);
    assert!(v2.contains("provider: anthropic") && v2.contains("maxOutputTokens"), "{v2}");
    std::fs::write(&critic, v2).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshops"))
        .arg("validate")
        .current_dir(dir.path())
        .env("MESHOPS__RETRIEVAL__DATA_DIR", dir.path().join("data"))
        .env_remove("MESHOPS_ENV")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(
        warnings,
        [format!(
            "  warning: prompt Critic ({}) uses model.provider `anthropic` (the agent's model profile is called); \
             tool `weather_api` of kind `openapi` (not supported; ignored)",
            dir.path().join("prompts").join("critic.prompty").display()
        )],
        "{stdout}"
    );
}

/// Shapes found in real files of other repositories (`wild/`, see the
/// README there): each reads as its runtime reads it.
#[test]
fn files_from_other_repositories_read_as_their_runtimes_read_them() {
    // azure-ai-inference: no `template` key and a Mustache body with
    // sections; the chat history section writes role markers.
    let p =
        load("wild/Azure__azure-sdk-for-python/sdk/ai/azure-ai-inference/tests/sample1_with_secrets.prompty");
    assert_eq!(p.template.format, "mustache");
    assert_eq!(p.template.engine, TemplateEngine::MustacheAsJinja);
    let got = messages(
        &p,
        json!({
            "rules": [{"rule": "Be brief."}, {"rule": "Be kind."}],
            "chat_history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
            "input": "When is breakfast?",
        }),
    );
    let roles: Vec<Role> = got.iter().map(|(role, _)| *role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User], "{got:?}");
    assert!(got[0].1.ends_with("# context\nBe brief.\nBe kind."), "{got:?}");
    assert_eq!(
        (got[1].1.as_str(), got[2].1.as_str(), got[3].1.as_str()),
        ("Hi", "Hello!", "When is breakfast?")
    );

    // Prompty's own evaluators: `base:` and `{% extends %}` of a sibling.
    let p = load("wild/microsoft__prompty/runtime/prompty/tests/prompts/faithfulness.prompty");
    let got = messages(&p, json!({"name": "Faithfulness", "context": "The sky is blue."}));
    let text: String = got.iter().map(|(_, content)| content.as_str()).collect();
    assert!(text.contains("numerical score called Faithfulness"), "{text}");
    assert!(text.contains("context: \nThe sky is blue."), "{text}");

    // Tools named by `id` (an earlier v2 draft), of kinds meshops lacks.
    let p = load("wild/microsoft__prompty/runtime/prompty/tests/tools/basic.prompty");
    assert_eq!((p.tools[0].name.as_str(), p.tools[0].kind.as_str()), ("bing", "web_search"));
    assert_eq!(p.unsupported, ["tool `bing` of kind `web_search`"]);
    // Bindings written as a list.
    let p = load("wild/microsoft__prompty/runtime/python/prompty/tests/prompts/tools_prompty.prompty");
    assert_eq!(p.tools[0].bindings["context"], json!({"input": "document"}));
    // langchain-prompty: tools from `file:funcfile.json`.
    let p =
        load("wild/langchain-ai__langchain/libs/partners/prompty/tests/unit_tests/prompts/funcfile.prompty");
    assert_eq!(p.tools[0].name, "get_current_weather");
    assert_eq!(p.tools[0].kind, "function");
    // azure-ai-evaluation: `max_tokens: None` is no limit.
    let p = load(
        "wild/Azure__azure-sdk-for-python/sdk/evaluation/azure-ai-evaluation/azure/ai/evaluation/_evaluators/_groundedness/groundedness_without_query.prompty",
    );
    assert_eq!(p.model.parameters.max_tokens, None);
    assert_eq!(p.model.parameters.temperature, Some(0.0));
    // contoso-chat: its sample file is not in the repository; the prompt
    // loads and says so.
    let p = load("wild/Azure-Samples__contoso-chat/src/api/contoso_chat/chat.prompty");
    assert!(
        p.unsupported.iter().any(|n| n.starts_with("`sample`") && n.contains("chat.json")),
        "{:?}",
        p.unsupported
    );
}
