//! Property tests over everything that parses outside input: request
//! conversion, settings files (and `MESHOPS__` variables), Prompty files and
//! dataset lines. Whatever the input, nothing panics and every error says
//! something. Case counts are modest so the suite stays fast; raise them
//! with `PROPTEST_CASES=N` for a longer run.

mod common;

use std::collections::HashMap;
use std::path::Path;

use meshops::config::{ConfigError, GatewaySettings, LoadOptions, MeshSpec};
use meshops::prompt::Prompty;
use meshops::proto::AskRequest;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    // PROPTEST_CASES, when set, wins (longer runs in CI or by hand).
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Lines picked from `known`, or arbitrary printable text, joined.
fn lines_of(known: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    let line = prop_oneof![
        3 => proptest::sample::select(known).prop_map(str::to_string),
        1 => "[ -~]{0,40}",
        1 => any::<String>().prop_map(|s| s.chars().take(20).collect::<String>()),
    ];
    proptest::collection::vec(line, 0..max).prop_map(|v| v.join("\n"))
}

const TOML_PIECES: &[&str] = &[
    "[gateway]",
    "[gateway.tls]",
    "[mesh]",
    "[retrieval]",
    "[retrieval.embedder]",
    "[models.offline]",
    "[models.extra]",
    "[flows.question]",
    "[flows.new]",
    "[variants.v1]",
    "[variants.v1.agents.summarizer]",
    "[telemetry]",
    "[[gateway]]",
    "[gateway",
    "listen = \"127.0.0.1:0\"",
    "listen = \"nowhere\"",
    "max_in_flight = 0",
    "max_in_flight = -1",
    "max_in_flight = 99999999999999999999",
    "max_message_bytes = 10",
    "max_metadata_entries = 3",
    "rate_limit_tpm = 100",
    "rate_limit_rps = nan",
    "rate_limit_rps = -1.5",
    "request_timeout_ms = 0",
    "api_keys_file = \"missing-keys.txt\"",
    "cert_path = \"nope.pem\"",
    "key_path = \"Cargo.toml\"",
    "client_ca_path = \"\"",
    "arbiters = 300",
    "router = \"nobody\"",
    "agents_dir = \"/nonexistent\"",
    "prompts_dir = \"..\"",
    "provider = \"offline\"",
    "provider = \"openai\"",
    "provider = \"teleport\"",
    "model = \"\"",
    "model = \"m\"",
    "failure_rate = 2.0",
    "panic_on_query = \"\"",
    "fallback = \"offline\"",
    "fallback = \"extra\"",
    "base_url = \"ftp://x\"",
    "steps = [\"retriever\", \"summarizer\"]",
    "steps = [\"nobody\"]",
    "steps = 5",
    "max_revisions = -3",
    "dimension = 4",
    "collection = \"bad name\"",
    "chunk_max_chars = 50",
    "sampling_ratio = 1.5",
    "otlp_endpoint = \"collector:4317\"",
    "log_format = \"xml\"",
    "top_k = 0",
    "x = { y = [1, 2, { z = 3 }] }",
    "= 1",
    "\"unterminated = 1",
    "key = \"\\u{0}\"",
    "a.b.c = true",
];

const ENV_NAMES: &[&str] = &[
    "MESHOPS__GATEWAY__LISTEN",
    "MESHOPS__GATEWAY__MAX_IN_FLIGHT",
    "MESHOPS__GATEWAY__TLS__CERT_PATH",
    "MESHOPS__MESH__ARBITERS",
    "MESHOPS__MODELS__OFFLINE__LATENCY_MS",
    "MESHOPS__NOPE",
    "MESHOPS____X",
    "MESHOPS__GATEWAY",
];

const PROMPTY_PIECES: &[&str] = &[
    "---",
    "name: Fuzz",
    "description: 5",
    "authors: [a, b]",
    "authors: x",
    "version: 1",
    "tags: {a: 1}",
    "model:",
    "  api: chat",
    "  api: completion",
    "  api: 7",
    "  configuration:",
    "    type: azure_openai",
    "    api_key: ${env:FUZZ_UNSET_VARIABLE}",
    "  parameters:",
    "    temperature: hot",
    "    max_tokens: -1",
    "    stop: [a, 1]",
    "    response_format: {type: json_object}",
    "inputs:",
    "  query:",
    "    type: string",
    "    default: hi",
    "  items: [1, 2]",
    "sample: ${file:missing.json}",
    "sample:",
    "  query: q",
    "outputs: 3",
    "- - -",
    ": :",
    "system:",
    "user:",
    "assistant:",
    "# Tool:",
    "{{ query }}",
    "{{ query | upper }}",
    "{{ missing.deep.value }}",
    "{{ query[0] }}",
    "{{ 1 / 0 }}",
    "{% for x in items %}{{ x }}{% endfor %}",
    "{% for x in query %}",
    "{% endfor %}",
    "{% if %}",
    "{{",
    "}}",
    "{% raw %}",
    "{# comment",
    "{{ range(100000000) | length }}",
];

const DATASET_PIECES: &[&str] = &[
    "{\"id\": \"a\", \"query\": \"q\"}",
    "{\"id\": \"a\", \"query\": \"again\"}",
    "{\"id\": \"b\", \"query\": \"q\", \"ground_truth\": \"g\", \"relevant_doc_ids\": [\"d\"]}",
    "{\"id\": 1, \"query\": \"q\"}",
    "{\"query\": \"no id\"}",
    "{\"id\": \"c\"}",
    "{\"id\": \"d\", \"query\": null}",
    "{\"id\": \"e\", \"query\": \"q\", \"relevant_doc_ids\": \"not a list\"}",
    "{\"id\": \"f\", \"query\": \"q\", \"extra\": {\"nested\": [1, {\"x\": null}]}}",
    "[1, 2, 3]",
    "null",
    "{\"id\": \"g\", \"query\": \"\\ud800\"}",
    "{",
    "",
    "   ",
];

fn check_config(overlay: &str, env: Vec<(String, String)>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("overlay.toml");
    std::fs::write(&file, overlay).unwrap();
    let opts =
        LoadOptions { config_file: Some(file), env_vars: env, ..LoadOptions::files_only(common::root()) };
    if let Err(errors) = MeshSpec::load(&opts) {
        prop_assert!(!errors.0.is_empty());
        for e in &errors.0 {
            let (file, message) = match e {
                ConfigError::Field { file, field, message }
                | ConfigError::Environment { file, field, message, .. } => {
                    prop_assert!(!field.trim().is_empty(), "{e}");
                    (file, message)
                }
                ConfigError::File { file, message } => (file, message),
            };
            prop_assert!(!file.trim().is_empty(), "{e}");
            prop_assert!(!message.trim().is_empty(), "{e}");
        }
    }
    Ok(())
}

fn check_prompty(text: &str, query: &str, dir: &Path) -> Result<(), TestCaseError> {
    match Prompty::parse(text, &dir.join("fuzz.prompty")) {
        Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
        Ok(p) => {
            let inputs = serde_json::json!({"query": query, "items": [query, 1, null]});
            match p.render(&inputs) {
                Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
                Ok(messages) => {
                    for m in messages {
                        prop_assert!(!m.content.trim().is_empty(), "empty messages are dropped");
                    }
                }
            }
            let _ = p.render(&serde_json::json!(query));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn request_conversion_never_panics(
        query in any::<String>(),
        variant in "[ -~]{0,12}",
        session_id in any::<String>(),
        metadata in proptest::collection::hash_map(".{0,8}", ".{0,16}", 0..12),
        max_query_chars in 1usize..64,
        max_metadata_entries in 0usize..8,
    ) {
        let limits = GatewaySettings { max_query_chars, max_metadata_entries, ..Default::default() };
        let req = AskRequest { query, variant, session_id, metadata: metadata.clone() };
        match meshops::gateway::convert::ask_input(req, &limits) {
            Err(message) => prop_assert!(!message.trim().is_empty()),
            Ok(input) => {
                prop_assert!(!input.query.is_empty());
                prop_assert!(input.query.chars().count() <= max_query_chars);
                prop_assert!(input.metadata.len() <= max_metadata_entries);
                prop_assert!(!input.query.chars().any(|c| c.is_control() && !c.is_whitespace()));
                prop_assert_eq!(input.metadata.len(), metadata.len());
            }
        }
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn settings_files_never_panic(
        overlay in lines_of(TOML_PIECES, 12),
        env in proptest::collection::vec(
            (proptest::sample::select(ENV_NAMES), "[ -~]{0,12}"),
            0..3,
        ),
    ) {
        let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        check_config(&overlay, env)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn prompty_files_never_panic(text in lines_of(PROMPTY_PIECES, 24), query in any::<String>()) {
        let dir = tempfile::tempdir().unwrap();
        check_prompty(&text, &query, dir.path())?;
    }

    #[test]
    fn dataset_lines_never_panic(text in lines_of(DATASET_PIECES, 10)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        std::fs::write(&path, &text).unwrap();
        match meshops::eval::runner::read_dataset(&path, &meshops::eval::evaluators::ColumnMap::default()) {
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains("rows.jsonl"), "{}", message);
                prop_assert!(message.len() > "rows.jsonl".len() + 2, "{}", message);
            }
            Ok((rows, _hash)) => {
                let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
                prop_assert_eq!(rows.len(), lines);
            }
        }
        for line in text.lines() {
            if let Err(e) = serde_json::from_str::<meshops::eval::dataset::Row>(line) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

/// The shipped Prompty files, mutated by dropping, doubling and swapping
/// lines: close to valid, where parsers are most likely to trip.
#[test]
fn mutated_shipped_prompts_never_panic() {
    let prompts: HashMap<String, String> = std::fs::read_dir(common::root().join("prompts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "prompty"))
        .map(|e| (e.path().display().to_string(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    assert!(!prompts.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config(64));
    for text in prompts.values() {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let n = lines.len();
        let strategy = proptest::collection::vec((0..n, 0..n, 0u8..3), 1..6);
        runner
            .run(&(strategy, any::<String>()), |(edits, query)| {
                let mut l = lines.clone();
                for (a, b, op) in edits {
                    match op {
                        0 if a < l.len() => {
                            l.remove(a);
                        }
                        1 if a < l.len() => l.insert(a, l[a].clone()),
                        _ if a < l.len() && b < l.len() => l.swap(a, b),
                        _ => {}
                    }
                }
                check_prompty(&l.join("\n"), &query, dir.path())
            })
            .unwrap();
    }
}
