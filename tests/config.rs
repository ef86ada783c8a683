//! Configuration: every shipped file loads; mistakes name the file and the
//! field; layering works in the documented order.

mod common;

use std::path::Path;

use meshops::config::{LoadOptions, MeshSpec};

/// Copies the shipped config/, agents/ and prompts/ into a temp dir so a test
/// can break one file.
fn project_copy() -> tempfile::TempDir {
    common::project_copy(&["config", "agents", "prompts"])
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} does not contain {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn load_err(opts: &LoadOptions) -> String {
    match MeshSpec::load(opts) {
        Ok(_) => panic!("expected a configuration error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_shipped_file_loads() {
    let spec = MeshSpec::load(&LoadOptions::files_only(common::root())).unwrap();
    assert_eq!(spec.agents.len(), 4);
    for env in ["dev", "qa"] {
        let opts = LoadOptions { env: Some(env.into()), ..LoadOptions::files_only(common::root()) };
        let spec = MeshSpec::load(&opts).unwrap_or_else(|e| panic!("overlay {env}: {e}"));
        assert!(spec.layers.iter().any(|l| l.ends_with(format!("{env}.toml"))));
    }
    // prod fails closed: its files are right, and away from its cluster it
    // lacks exactly what its Secrets provide there (keys, shared stores'
    // URLs, the TLS files), each an environment error, never a file error.
    let opts = LoadOptions { env: Some("prod".into()), ..LoadOptions::files_only(common::root()) };
    let errors = MeshSpec::load(&opts).expect_err("prod without its secrets must not load");
    let needs: std::collections::BTreeSet<&str> = errors
        .0
        .iter()
        .map(|e| e.missing_variable().unwrap_or_else(|| panic!("prod: not an environment error: {e}")))
        .collect();
    let expected = [
        "/etc/meshops/tls/tls.crt",
        "/etc/meshops/tls/tls.key",
        "MESHOPS_API_KEYS",
        "MESHOPS_POSTGRES_URL",
        "MESHOPS_REDIS_URL",
    ];
    assert_eq!(needs, expected.into_iter().collect(), "{errors}");
    // Every prompt file, including ones no agent uses yet and the judges'.
    for dir in ["prompts", "prompts/eval"] {
        for entry in std::fs::read_dir(common::root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "prompty") {
                meshops::prompt::Prompty::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
    let judges = meshops::eval::judge::load_prompts(&spec).unwrap();
    assert_eq!(judges.len(), meshops::eval::judge::JUDGES.len() + 1, "five judges and the rubric prompt");
}

#[test]
fn layers_apply_in_order() {
    let dir = project_copy();
    let extra = dir.path().join("extra.toml");
    std::fs::write(&extra, "[gateway]\nmax_query_chars = 77\n[telemetry]\nenvironment = \"extra\"\n")
        .unwrap();
    let opts = LoadOptions {
        root: dir.path().into(),
        env: Some("qa".into()),
        config_file: Some(extra),
        env_vars: vec![
            ("MESHOPS__GATEWAY__MAX_QUERY_CHARS".into(), "55".into()),
            ("MESHOPS__RETRIEVAL__DATA_DIR".into(), "/x".into()),
        ],
    };
    let spec = MeshSpec::load(&opts).unwrap();
    assert_eq!(spec.settings.gateway.listen, "0.0.0.0:50051", "from qa.toml");
    assert_eq!(spec.settings.telemetry.environment, "extra", "--config beats qa.toml");
    assert_eq!(spec.settings.gateway.max_query_chars, 55, "variables beat --config");
    assert_eq!(spec.settings.retrieval.data_dir, Path::new("/x"), "variables beat qa.toml");
    assert_eq!(spec.settings.retrieval.collection, "meshops_docs", "from meshops.toml");
}

#[test]
fn typo_in_settings_names_file_and_field() {
    let dir = project_copy();
    edit(&dir.path().join("config/meshops.toml"), "max_query_chars", "max_query_charz");
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(err.contains("meshops.toml"), "{err}");
    assert!(err.contains("gateway.max_query_charz"), "{err}");
    assert!(err.contains("max_query_chars"), "should list what is valid: {err}");
}

#[test]
fn typo_in_an_overlay_names_the_overlay() {
    let dir = project_copy();
    std::fs::write(dir.path().join("config/dev.toml"), "[retrieval]\ncolection = \"x\"\n").unwrap();
    let opts = LoadOptions { env: Some("dev".into()), ..LoadOptions::files_only(dir.path()) };
    let err = load_err(&opts);
    assert!(err.contains("dev.toml") && err.contains("retrieval.colection"), "{err}");
}

#[test]
fn bad_env_variable_names_the_variable() {
    let opts = LoadOptions {
        env_vars: vec![("MESHOPS__GATEWAY__MAX_QUERY_CHARS".into(), "lots".into())],
        ..LoadOptions::files_only(common::root())
    };
    let err = load_err(&opts);
    assert!(
        err.contains("MESHOPS__GATEWAY__MAX_QUERY_CHARS") && err.contains("gateway.max_query_chars"),
        "{err}"
    );
}

/// An unknown key set by a variable names that variable as written and the
/// field once (not `MESHOPS__BATCH__BACKEND__BACKEND`, `batch.backend.backend`).
#[test]
fn unknown_field_from_a_variable_names_the_variable_and_the_field_once() {
    let opts = LoadOptions {
        env_vars: vec![("MESHOPS__BATCH__BACKEND".into(), "bogus".into())],
        ..LoadOptions::files_only(common::root())
    };
    let err = load_err(&opts);
    assert!(
        err.starts_with("environment variable MESHOPS__BATCH__BACKEND: field `batch.backend`: "),
        "{err}"
    );
}

/// An unknown key in a file is named once: ``field `gateway.max_query_char` ``.
#[test]
fn unknown_field_in_a_file_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.toml");
    std::fs::write(&extra, "[gateway]\nmax_query_char = 5\n").unwrap();
    let err = load_err(&LoadOptions { config_file: Some(extra), ..LoadOptions::files_only(common::root()) });
    assert!(err.contains("extra.toml: field `gateway.max_query_char`: "), "{err}");
}

#[test]
fn zero_batch_workers_names_the_field() {
    let opts = LoadOptions {
        env_vars: vec![("MESHOPS__BATCH__WORKERS".into(), "0".into())],
        ..LoadOptions::files_only(common::root())
    };
    let err = load_err(&opts);
    assert!(err.contains("batch.workers") && err.contains("between 1 and"), "{err}");
}

#[test]
fn front_door_listeners_must_be_addresses_and_never_bypass_tls() {
    let env = |vars: &[(&str, &str)]| LoadOptions {
        env_vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..LoadOptions::files_only(common::root())
    };
    let err = load_err(&env(&[
        ("MESHOPS__GATEWAY__HTTP_LISTEN", "nope"),
        ("MESHOPS__GATEWAY__MCP_LISTEN", "127.0.0.1"),
        ("MESHOPS__TELEMETRY__PROMETHEUS_LISTEN", "localhost"),
    ]));
    for (field, example) in [
        ("gateway.http_listen", "127.0.0.1:8000"),
        ("gateway.mcp_listen", "127.0.0.1:8001"),
        ("telemetry.prometheus_listen", "0.0.0.0:9464"),
    ] {
        assert!(err.contains(&format!("field `{field}`")) && err.contains(example), "{field}: {err}");
    }
    // With TLS on the gRPC port, a plaintext front door is refused.
    let err = load_err(&env(&[
        ("MESHOPS__GATEWAY__HTTP_LISTEN", "127.0.0.1:8000"),
        ("MESHOPS__GATEWAY__TLS__CERT_PATH", "tls/server.pem"),
        ("MESHOPS__GATEWAY__TLS__KEY_PATH", "tls/server.key"),
    ]));
    assert!(err.contains("field `gateway.http_listen`: the HTTP API serves plaintext"), "{err}");
}

#[test]
fn typo_in_an_agent_file_names_file_and_field() {
    let dir = project_copy();
    edit(&dir.path().join("agents/retriever.toml"), "top_k", "tpo_k");
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(err.contains("retriever.toml") && err.contains("tpo_k"), "{err}");
}

#[test]
fn missing_prompt_file_names_agent_file_and_field() {
    let dir = project_copy();
    std::fs::remove_file(dir.path().join("prompts/critic.prompty")).unwrap();
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(
        err.contains("critic.toml") && err.contains("field `prompt`") && err.contains("critic.prompty"),
        "{err}"
    );
}

/// A broken prompt file fails the load (so `meshops validate`), naming the
/// agent file, its `prompt` field, the prompt file and the line or field.
#[test]
fn broken_prompt_file_names_agent_file_prompt_file_and_line() {
    let dir = project_copy();
    let file = dir.path().join("prompts/critic.prompty");
    // The line of the file the broken tag is on (1-based).
    let line =
        std::fs::read_to_string(&file).unwrap().lines().position(|l| l.contains("{% endfor %}")).unwrap() + 1;
    edit(&file, "{% endfor %}", "{% endfr %}");
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(
        err.contains("critic.toml: field `prompt`: ")
            && err.contains("critic.prompty: template: syntax error")
            && err.contains(&format!("(line {line})")),
        "{err}"
    );

    let dir = project_copy();
    edit(&dir.path().join("prompts/critic.prompty"), "temperature: 0", "temperature: hot");
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(
        err.contains("critic.toml: field `prompt`: ")
            && err.contains("critic.prompty: field `model.parameters.temperature`"),
        "{err}"
    );
}

#[test]
fn unknown_model_profile_names_file_field_and_known_profiles() {
    let dir = project_copy();
    edit(&dir.path().join("agents/summarizer.toml"), "model = \"offline\"", "model = \"gpt-9\"");
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(
        err.contains("summarizer.toml") && err.contains("field `model`") && err.contains("gpt-9"),
        "{err}"
    );
    assert!(err.contains("known: offline"), "{err}");
}

#[test]
fn unknown_judge_model_and_a_broken_judge_prompt_are_named() {
    let dir = project_copy();
    edit(&dir.path().join("config/meshops.toml"), "judge_model = \"offline\"", "judge_model = \"gpt-judge\"");
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(
        err.contains("meshops.toml") && err.contains("eval.judge_model") && err.contains("gpt-judge"),
        "{err}"
    );

    let dir = project_copy();
    let spec = MeshSpec::load(&LoadOptions::files_only(dir.path())).unwrap();
    edit(&dir.path().join("prompts/eval/fluency.prompty"), "{{ response }}", "{{ respnse }}");
    let err = meshops::eval::judge::load_prompts(&spec).unwrap_err().to_string();
    assert!(err.contains("fluency.prompty") && err.contains("respnse"), "{err}");
    std::fs::remove_file(dir.path().join("prompts/eval/rubric.prompty")).unwrap();
    let err = meshops::eval::judge::load_prompts(&spec).unwrap_err().to_string();
    assert!(err.contains("rubric.prompty"), "{err}");
}

#[test]
fn flow_with_unknown_agent_names_the_step() {
    let dir = project_copy();
    edit(
        &dir.path().join("config/meshops.toml"),
        "steps = [\"retriever\", \"summarizer\", \"critic\"]",
        "steps = [\"retriever\", \"sumarizer\", \"critic\"]",
    );
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(err.contains("flows.question.steps[1]") && err.contains("sumarizer"), "{err}");
}

#[test]
fn several_errors_are_reported_together() {
    let dir = project_copy();
    edit(&dir.path().join("agents/summarizer.toml"), "model = \"offline\"", "model = \"nope\"");
    edit(&dir.path().join("agents/critic.toml"), "model = \"offline\"", "model = \"nope2\"");
    let err = load_err(&LoadOptions::files_only(dir.path()));
    assert!(err.contains("nope`") && err.contains("nope2"), "{err}");
}

/// Remote embedders and the Qdrant server backend: what they need is
/// checked at load, naming the file and the field.
#[test]
fn remote_embedder_and_qdrant_backend_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("remote.toml");
    let load = |text: &str| {
        std::fs::write(&overlay, text).unwrap();
        let opts =
            LoadOptions { config_file: Some(overlay.clone()), ..LoadOptions::files_only(common::root()) };
        MeshSpec::load(&opts)
    };
    let shown = overlay.display().to_string();

    let err = load("[retrieval.embedder]\nprovider = \"openai\"\n").unwrap_err().to_string();
    assert!(err.contains(&format!("{shown}: field `retrieval.embedder.model`: required")), "{err}");
    let err =
        load("[retrieval.embedder]\nprovider = \"openai\"\nmodel = \"nope\"\n").unwrap_err().to_string();
    assert!(err.contains("`nope` is not a model profile"), "{err}");
    let err = load(
        "[models.local]\nprovider = \"openai_compatible\"\nmodel = \"e\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n\
         [retrieval.embedder]\nprovider = \"azure\"\nmodel = \"local\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("retrieval.embedder.provider") && err.contains("has provider `openai_compatible`"),
        "{err}"
    );
    let ok = load(
        "[models.local]\nprovider = \"openai_compatible\"\nmodel = \"e\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n\
         [retrieval.embedder]\nprovider = \"openai_compatible\"\nmodel = \"local\"\ndimension = 768\nbatch_size = 32\n",
    )
    .unwrap();
    assert_eq!(ok.settings.retrieval.embedder.dimension, 768);
    assert_eq!(ok.settings.retrieval.embedder.batch_size, 32);

    let err = load("[retrieval]\nbackend = \"qdrant\"\n").unwrap_err().to_string();
    assert!(err.contains(&format!("{shown}: field `retrieval.url`: required for backend `qdrant`")), "{err}");
    let err = load(
        "[retrieval]\nbackend = \"qdrant\"\nurl = \"http://127.0.0.1:6334\"\napi_key_env = \"MESHOPS_TEST_SURELY_UNSET_QDRANT_KEY\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("retrieval.api_key_env") && err.contains("MESHOPS_TEST_SURELY_UNSET_QDRANT_KEY"),
        "{err}"
    );
    let ok = load("[retrieval]\nbackend = \"qdrant\"\nurl = \"http://127.0.0.1:6334\"\n").unwrap();
    assert_eq!(ok.settings.retrieval.backend, meshops::config::StoreBackend::Qdrant);
}

/// `config/local-llm.toml` layers over the shipped config and moves every
/// model-calling agent to the local server's profiles; `mesh.agent_models`
/// mistakes are named.
#[test]
fn local_llm_overlay_points_agents_at_the_local_server() {
    let file = common::root().join("config/local-llm.toml");
    let opts = LoadOptions { config_file: Some(file.clone()), ..LoadOptions::files_only(common::root()) };
    let spec = MeshSpec::load(&opts).unwrap_or_else(|e| panic!("{e}"));
    for (agent, profile) in [("router", "local-router"), ("summarizer", "local"), ("critic", "local-critic")]
    {
        assert_eq!(spec.agents[agent].base.model.as_deref(), Some(profile), "{agent}");
        let m = spec.model(profile).unwrap();
        assert_eq!(m.provider, meshops::config::Provider::OpenaiCompatible);
        assert_eq!(m.base_url.as_deref(), Some("http://127.0.0.1:8080/v1"));
    }
    assert_eq!(spec.agents["retriever"].base.model, None);

    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("bad.toml");
    std::fs::write(&overlay, "[mesh.agent_models]\nsummarizer = \"nope\"\nretriever = \"offline\"\n")
        .unwrap();
    let err =
        load_err(&LoadOptions { config_file: Some(overlay), ..LoadOptions::files_only(common::root()) });
    assert!(
        err.contains("mesh.agent_models.summarizer") && err.contains("unknown model profile `nope`"),
        "{err}"
    );
    assert!(err.contains("mesh.agent_models.retriever") && err.contains("calls no chat model"), "{err}");
}

#[test]
fn validate_checks_every_overlay_even_one_not_in_force() {
    let dir = project_copy();
    let data = tempfile::tempdir().unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshops"))
            .args(["validate", "--root"])
            .arg(dir.path())
            .env("MESHOPS__RETRIEVAL__DATA_DIR", data.path())
            .env_remove("MESHOPS_ENV")
            .env_remove("OPENAI_API_KEY")
            .output()
            .unwrap()
    };
    let ok = run();
    let stdout = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(ok.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&ok.stderr));
    for overlay in ["dev", "qa", "prod"] {
        assert!(stdout.contains(&format!("overlay {overlay}: OK")), "{stdout}");
    }
    // A key an overlay needs at run time is noted, not an error.
    assert!(stdout.contains("overlay openai: OK (needs OPENAI_API_KEY"), "{stdout}");

    // A typo in the prod overlay fails validation although MESHOPS_ENV is
    // not prod, naming the overlay, the file and the field.
    edit(&dir.path().join("config/prod.toml"), "[mesh]", "[mesh]\narbiterz = 2");
    let bad = run();
    let stderr = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(!bad.status.success(), "{}", String::from_utf8_lossy(&bad.stdout));
    assert!(stderr.contains("overlay `prod`") && stderr.contains("prod.toml"), "{stderr}");
    assert!(stderr.contains("mesh.arbiterz") && stderr.contains("did you mean `arbiters`?"), "{stderr}");
}

#[test]
fn keys_configured_but_unset_fail_closed() {
    // A variable no test sets: the keys it names cannot load.
    let opts = LoadOptions {
        env_vars: vec![("MESHOPS__GATEWAY__API_KEYS_ENV".into(), "MESHOPS_TEST_KEYS_NEVER_SET".into())],
        ..LoadOptions::files_only(common::root())
    };
    let err = load_err(&opts);
    assert!(
        err.contains("gateway.api_keys_env")
            && err.contains("MESHOPS_TEST_KEYS_NEVER_SET")
            && err.contains("refuses to start rather than serve without authentication"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_keys_did_not_load_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let mut spec = common::spec(data.path());
    spec.settings.gateway.api_keys_env = Some("MESHOPS_TEST_KEYS_NEVER_SET".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(err) = meshops::gateway::start_with(spec, listener, meshops::gateway::Overrides::default()).await
    else {
        panic!("a gateway with configured keys and none loaded must not serve")
    };
    assert!(err.to_string().contains("refusing to serve without authentication"), "{err}");
}

#[test]
fn counts_past_what_can_run_are_config_errors_not_panics() {
    let opts = LoadOptions {
        env_vars: vec![
            ("MESHOPS__GATEWAY__MAX_IN_FLIGHT".into(), "5000000000000".into()),
            ("MESHOPS__BATCH__WORKERS".into(), "9999999999".into()),
        ],
        ..LoadOptions::files_only(common::root())
    };
    let err = load_err(&opts);
    assert!(err.contains("gateway.max_in_flight") && err.contains("at most 1000000"), "{err}");
    assert!(err.contains("batch.workers") && err.contains("between 1 and 1000000"), "{err}");
}
