//! Remote model providers over real HTTP: the OpenAI-compatible client
//! (plain and streamed completions, usage and cost; its failure handling
//! is in `tests/model_failures.rs`), configuration checks, the whole mesh with the summarizer on a remote
//! profile, and remote embeddings (`/v1/embeddings`: batching, order,
//! dimension check, retries, ingest and retrieval through them). A test
//! gated by `MESHOPS_LLM_BASE_URL` runs the mesh against a real endpoint.

mod common;

use std::sync::Once;

use meshops::config::{LoadOptions, MeshSpec, ModelProfile, Provider};
use meshops::gateway::Overrides;
use meshops::llm::{ChatMessage, LlmRequest, ModelParams, Role, SharedLlm, TaskHint, build_client};
use meshops::proto::AskRequest;
use serde_json::{Value, json};

use common::fake_openai::{FakeOpenAi, Reply, Seen, completion, error};

/// The variable the test profiles read their API key from.
const KEY_VAR: &str = "MESHOPS_TEST_PROVIDER_KEY";
const KEY: &str = "sk-test-1234";

/// Sets [`KEY_VAR`] once, before any test reads the environment: every
/// test calls this first, and `Once` makes the others wait until it is set,
/// so no thread reads the environment while it is written.
fn set_key() {
    static ONCE: Once = Once::new();
    // SAFETY: see above: the only write happens inside the `Once`, before
    // any test in this binary reads the environment.
    ONCE.call_once(|| unsafe { std::env::set_var(KEY_VAR, KEY) });
}

fn chunk(model: &str, delta: Option<&str>, finish: Option<&str>) -> Value {
    let mut d = json!({});
    if let Some(t) = delta {
        d = json!({"role": "assistant", "content": t});
    }
    json!({
        "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1_700_000_000u32, "model": model,
        "choices": [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": null}]
    })
}

fn profile(base_url: &str, model: &str) -> ModelProfile {
    ModelProfile {
        provider: Provider::OpenaiCompatible,
        model: model.into(),
        base_url: Some(base_url.into()),
        api_key_env: Some(KEY_VAR.into()),
        timeout_ms: Some(5_000),
        max_retries: Some(2),
        input_price_per_mtok: None,
        output_price_per_mtok: None,
        ..ModelProfile::offline()
    }
}

fn request() -> LlmRequest {
    LlmRequest {
        agent: "summarizer".into(),
        messages: vec![
            ChatMessage::new(Role::System, "Answer from the passages."),
            ChatMessage::new(Role::User, "Which port does the gateway listen on?"),
        ],
        params: ModelParams { temperature: Some(0.2), max_tokens: Some(400), ..Default::default() },
        hint: TaskHint::Freeform,
        response_schema: None,
        tools: Default::default(),
    }
}

fn client(name: &str, p: &ModelProfile) -> SharedLlm {
    match build_client(name, p) {
        Ok(c) => c,
        Err(e) => panic!("client for {name}: {e}"),
    }
}

#[tokio::test]
async fn completion_reports_usage_and_cost_from_prices() {
    set_key();
    let server = FakeOpenAi::start(|_, _| {
        completion("It listens on 127.0.0.1:50051 [1].", "gpt-test-0613", Some((1000, 500)))
    })
    .await;
    let mut p = profile(&server.base_url(), "gpt-test");
    p.input_price_per_mtok = Some(2.0);
    p.output_price_per_mtok = Some(8.0);
    // The profile's parameters win over the prompt's.
    p.parameters = ModelParams { temperature: Some(0.0), seed: Some(7), ..Default::default() };
    let resp = client("remote", &p).complete(&request(), None).await.unwrap();
    assert_eq!(resp.text, "It listens on 127.0.0.1:50051 [1].");
    assert_eq!(resp.model, "gpt-test-0613", "the model that answered is reported");
    assert_eq!((resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.estimated), (1000, 500, false));
    let cost = resp.cost_usd.unwrap();
    assert!((cost - (1000.0 * 2.0 + 500.0 * 8.0) / 1e6).abs() < 1e-12, "cost {cost}");
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    assert_eq!(resp.attempts, 1);
    assert!(resp.failed_attempts.is_empty());

    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(r.body["model"], "gpt-test");
    assert_eq!(r.body["temperature"], 0.0);
    assert_eq!(r.body["max_tokens"], 400);
    assert_eq!(r.body["seed"], 7);
    assert_eq!(r.body["messages"][0]["role"], "system");
    assert_eq!(r.body["messages"][1]["content"], "Which port does the gateway listen on?");
    assert!(r.body.get("stream").is_none_or(|s| s == false), "{}", r.body);

    // Without prices the cost is unknown, not 0.
    let unpriced = client("unpriced", &profile(&server.base_url(), "gpt-test"));
    assert_eq!(unpriced.complete(&request(), None).await.unwrap().cost_usd, None);
}

#[tokio::test]
async fn json_response_format_and_stop_reach_the_wire() {
    set_key();
    let server = FakeOpenAi::start(|_, _| completion("{\"intent\": \"question\"}", "m", Some((10, 5)))).await;
    let mut req = request();
    req.params.response_format = Some("json_object".into());
    req.params.stop = vec!["\n\n".into()];
    req.params.top_p = Some(0.9);
    client("json", &profile(&server.base_url(), "m")).complete(&req, None).await.unwrap();
    let body = &server.requests()[0].body;
    assert_eq!(body["response_format"]["type"], "json_object");
    assert_eq!(body["stop"], "\n\n");
    assert!((body["top_p"].as_f64().unwrap() - 0.9).abs() < 1e-6);
}

#[tokio::test]
async fn streamed_completion_sends_deltas_and_counts_usage() {
    set_key();
    let server = FakeOpenAi::start(|_, _| {
        let mut events: Vec<Value> = ["The gateway", " listens on", " port 50051 [1]."]
            .iter()
            .map(|t| chunk("gpt-stream", Some(t), None))
            .collect();
        events.push(chunk("gpt-stream", None, Some("stop")));
        events.push(json!({
            "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1_700_000_000u32,
            "model": "gpt-stream", "choices": [],
            "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51}
        }));
        Reply::Sse(events)
    })
    .await;
    let mut p = profile(&server.base_url(), "gpt-stream");
    p.input_price_per_mtok = Some(1.0);
    p.output_price_per_mtok = Some(1.0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let resp = client("stream", &p).complete(&request(), Some(tx)).await.unwrap();
    let mut deltas = Vec::new();
    while let Ok(d) = rx.try_recv() {
        deltas.push(d);
    }
    assert_eq!(deltas, vec!["The gateway", " listens on", " port 50051 [1]."]);
    assert_eq!(resp.text, "The gateway listens on port 50051 [1].");
    assert_eq!((resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.estimated), (42, 9, false));
    assert!((resp.cost_usd.unwrap() - 51.0 / 1e6).abs() < 1e-12);
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    let body = &server.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn stream_without_usage_is_estimated_and_marked() {
    set_key();
    let server = FakeOpenAi::start(|_, _| {
        Reply::Sse(vec![chunk("m", Some("Hello there,"), None), chunk("m", Some(" friend."), Some("stop"))])
    })
    .await;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let resp =
        client("nousage", &profile(&server.base_url(), "m")).complete(&request(), Some(tx)).await.unwrap();
    assert_eq!(resp.text, "Hello there, friend.");
    assert!(resp.usage.estimated);
    assert_eq!(resp.usage.output_tokens, meshops::text::estimate_tokens("Hello there, friend."));
    assert!(resp.usage.input_tokens > 0);
}

#[tokio::test]
async fn azure_profile_calls_the_deployment_with_api_version_and_key_header() {
    set_key();
    let server = FakeOpenAi::start(|_, _| completion("azure says hi", "gpt-4o", Some((2, 3)))).await;
    let p = ModelProfile {
        provider: Provider::Azure,
        base_url: Some(format!("http://{}", server.addr)),
        api_version: Some("2024-10-21".into()),
        ..profile("unused", "my-deployment")
    };
    let resp = client("azure", &p).complete(&request(), None).await.unwrap();
    assert_eq!(resp.text, "azure says hi");
    let r = &server.requests()[0];
    assert_eq!(r.path, "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21");
    assert_eq!(r.header("api-key"), Some(KEY));
}

#[tokio::test]
async fn a_missing_key_variable_fails_at_start_naming_profile_and_variable() {
    set_key();
    let mut p = profile("http://127.0.0.1:9/v1", "m");
    p.api_key_env = Some("${env:MESHOPS_TEST_SURELY_UNSET_KEY}".into());
    let Err(err) = build_client("needs-key", &p) else { panic!("a missing key must fail the build") };
    let text = err.to_string();
    assert!(text.contains("needs-key") && text.contains("MESHOPS_TEST_SURELY_UNSET_KEY"), "{text}");

    // `meshops validate` and `serve` see the same through the config.
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("remote.toml");
    std::fs::write(
        &overlay,
        "[models.needs-key]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\napi_key_env = \"MESHOPS_TEST_SURELY_UNSET_KEY\"\n\n\
         [models.azure-half]\nprovider = \"azure\"\nmodel = \"dep\"\napi_key_env = \"MESHOPS_TEST_PROVIDER_KEY\"\n\n\
         [models.local]\nprovider = \"openai_compatible\"\nmodel = \"llama\"\n",
    )
    .unwrap();
    let opts = LoadOptions {
        root: common::root(),
        env: None,
        config_file: Some(overlay.clone()),
        env_vars: Vec::new(),
    };
    let errors = MeshSpec::load(&opts).unwrap_err().to_string();
    let shown = overlay.display().to_string();
    for needle in [
        format!("{shown}: field `models.needs-key.api_key_env`"),
        "MESHOPS_TEST_SURELY_UNSET_KEY".to_string(),
        format!("{shown}: field `models.azure-half.base_url`"),
        format!("{shown}: field `models.azure-half.api_version`"),
        format!("{shown}: field `models.local.base_url`"),
    ] {
        assert!(errors.contains(&needle), "{needle:?} missing from:\n{errors}");
    }
    assert!(!errors.contains("not available in this build"), "{errors}");
}

/// The whole mesh with the summarizer on a remote profile: the answer is
/// the server's text and the summarizer's step carries the server's token
/// counts and the cost from the profile's prices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_answers_with_the_remote_summarizer() {
    set_key();
    const ANSWER: &str = "The gateway listens on 127.0.0.1:50051 by default [1].";
    // The first call fails once, so the step also shows its retry.
    let server = FakeOpenAi::start(|i, _| match i {
        0 => Reply::Body { status: 502, headers: vec![], body: "bad gateway".into() },
        _ => completion(ANSWER, "gpt-remote", Some((300, 20))),
    })
    .await;
    let base_url = server.base_url();
    let mut t = common::start(
        move |spec| {
            let mut p = profile(&base_url, "gpt-remote");
            p.input_price_per_mtok = Some(0.15);
            p.output_price_per_mtok = Some(0.6);
            spec.settings.models.insert("remote".into(), p);
            let summarizer = spec.agents.get_mut("summarizer").unwrap();
            summarizer.base.model = Some("remote".into());
            for v in summarizer.variants.values_mut() {
                v.model = Some("remote".into());
            }
        },
        Overrides::default(),
    )
    .await;
    let a = t
        .client
        .ask(AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.answer, ANSWER);
    let steps: Vec<_> = a.steps.iter().filter(|s| s.kind == "summarizer").collect();
    assert!(!steps.is_empty(), "{:?}", a.steps);
    for s in &steps {
        assert_eq!(s.model, "gpt-remote");
        assert_eq!((s.input_tokens, s.output_tokens, s.tokens_estimated), (300, 20, false));
        let cost = s.cost_usd.unwrap();
        assert!((cost - (300.0 * 0.15 + 20.0 * 0.6) / 1e6).abs() < 1e-12, "cost {cost}");
    }
    assert!(
        steps[0].summary.ends_with("(model attempts: 2; failed: http_502)"),
        "the first step notes its retry: {}",
        steps[0].summary
    );
    assert_eq!(
        server.requests().len(),
        steps.len() + 1,
        "one model call per summarizer step, plus the retry"
    );
    let prompt = server.requests()[0].body["messages"][0]["content"].as_str().unwrap_or("").to_string();
    assert!(prompt.contains("Passages:"), "the rendered prompt with passages reaches the model: {prompt}");
    t.server.shutdown().await.unwrap();
}

/// `AskStream` with the summarizer on a remote profile: the server's SSE
/// deltas reach the gRPC caller as token events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_streams_remote_tokens_to_ask_stream() {
    use meshops::proto::ask_event::Event;
    set_key();
    let server = FakeOpenAi::start(|_, seen| {
        if seen.body["stream"] != true {
            return error(400, "this test expects a streamed request", &[]);
        }
        Reply::Sse(vec![
            chunk("gpt-remote", Some("Hello!"), None),
            chunk("gpt-remote", Some(" Ask me about meshops."), Some("stop")),
        ])
    })
    .await;
    let base_url = server.base_url();
    let mut t = common::start(
        move |spec| {
            spec.settings.models.insert("remote".into(), profile(&base_url, "gpt-remote"));
            spec.agents.get_mut("summarizer").unwrap().base.model = Some("remote".into());
        },
        Overrides::default(),
    )
    .await;
    let mut stream = t
        .client
        .ask_stream(AskRequest { query: "hello there".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut tokens = Vec::new();
    let mut last = None;
    while let Some(e) = stream.message().await.unwrap() {
        match e.event {
            Some(Event::Token(t)) => tokens.push(t.text),
            Some(Event::Final(a)) => last = Some(a),
            _ => {}
        }
    }
    let answer = last.expect("a final answer");
    assert_eq!(answer.intent, "greeting");
    assert_eq!(answer.answer, "Hello! Ask me about meshops.");
    assert_eq!(tokens, vec!["Hello!", " Ask me about meshops."]);
    let step = answer.steps.iter().find(|s| s.kind == "summarizer").unwrap();
    // The fake server sends no usage in the stream: counts are estimates.
    assert!(step.tokens_estimated);
    assert_eq!(step.cost_usd, None, "the remote profile has no prices");
    t.server.shutdown().await.unwrap();
}

/// The shipped `config/openai.toml` overlay parses; without OPENAI_API_KEY
/// the only problem is that variable, named.
#[test]
fn shipped_openai_overlay_loads_or_names_the_missing_key() {
    set_key();
    let opts = LoadOptions {
        root: common::root(),
        env: Some("openai".into()),
        config_file: None,
        env_vars: Vec::new(),
    };
    match MeshSpec::load(&opts) {
        Ok(spec) => {
            assert_eq!(spec.model("openai").map(|m| m.provider), Some(Provider::Openai));
            assert!(spec.settings.variants.contains_key("openai"));
        }
        Err(errors) => {
            assert_eq!(errors.0.len(), 1, "{errors}");
            let text = errors.to_string();
            assert!(text.contains("models.openai.api_key_env") && text.contains("OPENAI_API_KEY"), "{text}");
        }
    }
}

/// Runs the mesh against a real endpoint when `MESHOPS_LLM_BASE_URL` is
/// set (`MESHOPS_LLM_MODEL`, default `gpt-4o-mini`; `MESHOPS_LLM_API_KEY_ENV`
/// names the key's variable, none for keyless local servers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_against_a_real_endpoint_when_configured() {
    set_key();
    let Some(base_url) = common::require::opt_in_env(
        "MESHOPS_LLM_BASE_URL",
        "(and MESHOPS_LLM_MODEL, MESHOPS_LLM_API_KEY_ENV) to run against a real endpoint",
    ) else {
        return;
    };
    let model = std::env::var("MESHOPS_LLM_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
    let key_env = std::env::var("MESHOPS_LLM_API_KEY_ENV").ok();
    let mut t = common::start(
        move |spec| {
            let p =
                ModelProfile { api_key_env: key_env, timeout_ms: Some(60_000), ..profile(&base_url, &model) };
            spec.settings.models.insert("real".into(), p);
            spec.agents.get_mut("summarizer").unwrap().base.model = Some("real".into());
        },
        Overrides::default(),
    )
    .await;
    let a = t
        .client
        .ask(AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    println!("answer: {}", a.answer);
    assert!(!a.answer.trim().is_empty());
    let s = a.steps.iter().find(|s| s.kind == "summarizer").unwrap();
    assert!(s.output_tokens > 0, "{s:?}");
    t.server.shutdown().await.unwrap();
}

/// An embeddings answer for `seen`'s `input` array: vectors from the
/// offline hashed embedder (so retrieval through them really works), listed
/// in reverse order to check the client restores input order.
fn embeddings(seen: &Seen, dimension: usize) -> Reply {
    let e = meshops::retrieval::embed::OfflineEmbedder::new(dimension);
    let inputs: Vec<String> = match &seen.body["input"] {
        Value::Array(items) => items.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
        Value::String(s) => vec![s.clone()],
        _ => return error(400, "input must be a string or an array of strings", &[]),
    };
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": e.embed_text(t)}))
        .collect();
    data.reverse();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    let body = json!({
        "object": "list", "model": seen.body["model"], "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    });
    Reply::Body { status: 200, headers: vec![], body: body.to_string() }
}

fn embedder(base_url: &str, dimension: usize, batch: usize) -> meshops::retrieval::embed::OpenAiEmbedder {
    let p = profile(base_url, "text-embedding-test");
    match meshops::retrieval::embed::OpenAiEmbedder::new("embed", &p, dimension, batch) {
        Ok(e) => e,
        Err(e) => panic!("embedder: {e}"),
    }
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text number {i} about the gateway")).collect()
}

#[tokio::test]
async fn remote_embeddings_are_batched_and_kept_in_input_order() {
    use meshops::retrieval::Embedder;
    set_key();
    let server = FakeOpenAi::start(|_, seen| embeddings(seen, 16)).await;
    let e = embedder(&server.base_url(), 16, 2);
    assert_eq!((e.name(), e.dimension()), ("embed:text-embedding-test", 16));
    let input = texts(5);
    let vectors = e.embed(&input).await.unwrap();
    let offline = meshops::retrieval::embed::OfflineEmbedder::new(16);
    let expected: Vec<Vec<f32>> = input.iter().map(|t| offline.embed_text(t)).collect();
    assert_eq!(vectors, expected);
    let seen = server.requests();
    let batches: Vec<usize> = seen.iter().map(|r| r.body["input"].as_array().map_or(0, Vec::len)).collect();
    assert_eq!(batches, vec![2, 2, 1]);
    for r in &seen {
        assert_eq!(r.path, "/v1/embeddings");
        assert_eq!(r.body["model"], "text-embedding-test");
        assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    }
}

#[tokio::test]
async fn a_remote_vector_of_another_dimension_is_a_clear_error() {
    use meshops::retrieval::Embedder;
    set_key();
    let server = FakeOpenAi::start(|_, seen| embeddings(seen, 12)).await;
    let err = embedder(&server.base_url(), 16, 8).embed(&texts(2)).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("embed:text-embedding-test")
            && text.contains("length 12")
            && text.contains("retrieval.embedder.dimension is 16"),
        "{text}"
    );
    assert_eq!(server.requests().len(), 1, "a wrong dimension is not retried");
}

#[tokio::test]
async fn remote_embeddings_retry_429_and_do_not_retry_401() {
    use meshops::retrieval::Embedder;
    set_key();
    let server = FakeOpenAi::start(|i, seen| match i {
        0 => error(429, "slow down", &[("Retry-After", "0")]),
        _ => embeddings(seen, 8),
    })
    .await;
    let vectors = embedder(&server.base_url(), 8, 8).embed(&texts(3)).await.unwrap();
    assert_eq!(vectors.len(), 3);
    assert_eq!(server.requests().len(), 2);

    let server = FakeOpenAi::start(|_, _| error(401, "bad key", &[])).await;
    let err = embedder(&server.base_url(), 8, 8).embed(&texts(1)).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("401") && text.contains("profile `embed`") && text.contains("after 1 attempts"),
        "{text}"
    );
    assert_eq!(server.requests().len(), 1);
}

/// The whole gateway with `[retrieval.embedder]` on a remote profile: the
/// corpus is ingested through `/v1/embeddings` in batches, and questions are
/// embedded there too and find their passages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_ingests_and_retrieves_through_remote_embeddings() {
    use meshops::config::EmbedderProvider;
    set_key();
    let server = FakeOpenAi::start(|_, seen| embeddings(seen, 384)).await;
    let base_url = server.base_url();
    let mut t = common::start(
        move |spec| {
            spec.settings.models.insert("embed".into(), profile(&base_url, "text-embedding-test"));
            let e = &mut spec.settings.retrieval.embedder;
            e.provider = EmbedderProvider::OpenaiCompatible;
            e.model = Some("embed".into());
            e.dimension = 384;
            e.batch_size = 16;
        },
        Overrides::default(),
    )
    .await;
    let ingest_requests = server.requests().len();
    assert!(ingest_requests > 0, "auto-ingest embeds the corpus remotely");
    assert!(server.requests().iter().all(|r| r.body["input"].as_array().is_some_and(|a| a.len() <= 16)));
    let a = t
        .client
        .ask(AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!a.citations.is_empty(), "retrieval through remote vectors finds passages: {a:?}");
    assert_eq!(server.requests().len(), ingest_requests + 1, "one embeddings call for the question");
    t.server.shutdown().await.unwrap();
}

/// Ingest and retrieval through a real embeddings endpoint when
/// `MESHOPS_EMBED_BASE_URL` is set (`MESHOPS_EMBED_MODEL`,
/// `MESHOPS_EMBED_DIMENSION`, `MESHOPS_EMBED_API_KEY_ENV` as needed; e.g.
/// `scripts/local-llm.sh start --port 8081 --embeddings`, dimension 640).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_embeddings_against_a_real_endpoint_when_configured() {
    use meshops::config::EmbedderProvider;
    set_key();
    let Some(base_url) = common::require::opt_in_env(
        "MESHOPS_EMBED_BASE_URL",
        "(and MESHOPS_EMBED_MODEL, MESHOPS_EMBED_DIMENSION, MESHOPS_EMBED_API_KEY_ENV) to run against a real \
         endpoint",
    ) else {
        return;
    };
    let model = std::env::var("MESHOPS_EMBED_MODEL").unwrap_or_else(|_| "text-embedding-3-small".into());
    let dimension: usize =
        std::env::var("MESHOPS_EMBED_DIMENSION").ok().and_then(|d| d.parse().ok()).unwrap_or(1536);
    let key_env = std::env::var("MESHOPS_EMBED_API_KEY_ENV").ok();
    let mut t = common::start(
        move |spec| {
            let p = ModelProfile {
                api_key_env: key_env,
                timeout_ms: Some(120_000),
                ..profile(&base_url, &model)
            };
            spec.settings.models.insert("embed".into(), p);
            let e = &mut spec.settings.retrieval.embedder;
            e.provider = EmbedderProvider::OpenaiCompatible;
            e.model = Some("embed".into());
            e.dimension = dimension;
        },
        Overrides::default(),
    )
    .await;
    let points = t.server.store.count().await.unwrap();
    println!("ingested {points} points through {dimension}-d remote embeddings");
    assert!(points > 0);
    let a = t
        .client
        .ask(AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let retriever = a.steps.iter().find(|s| s.kind == "retriever").unwrap();
    println!("retriever: {}", retriever.summary);
    assert!(retriever.model.starts_with("embed:"), "{retriever:?}");
    t.server.shutdown().await.unwrap();
}
