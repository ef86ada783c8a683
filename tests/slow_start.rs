//! A gateway whose start is slow for a real reason: the first start embeds
//! the corpus through a remote embeddings endpoint (the OpenAI-wire
//! double), which holds its answers until the test lets them go. While the
//! store is being filled, health says NOT_SERVING for every service, a
//! question is refused as UNAVAILABLE, and a batch job is already accepted;
//! once the store is ready, health says SERVING and the job is answered.

mod common;

use std::time::Duration;

use common::fake_openai::{FakeOpenAi, Reply, Seen};
use meshops::config::{EmbedderProvider, ModelProfile, Provider};
use meshops::gateway::Overrides;
use meshops::proto::batch_client::BatchClient;
use meshops::proto::gateway_client::GatewayClient;
use meshops::proto::{AskRequest, BatchState, GetBatchRequest, SubmitBatchRequest};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const DIMENSION: usize = 64;

/// The embeddings a remote endpoint would give (the offline embedder's
/// vectors, so retrieval still finds the right passages).
fn embeddings(seen: &Seen) -> Reply {
    let e = meshops::retrieval::embed::OfflineEmbedder::new(DIMENSION);
    let inputs: Vec<String> = match &seen.body["input"] {
        Value::Array(items) => items.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": e.embed_text(t)}))
        .collect();
    let body = json!({
        "object": "list", "model": seen.body["model"], "data": data,
        "usage": {"prompt_tokens": 1, "total_tokens": 1}
    });
    Reply::Body { status: 200, headers: vec![], body: body.to_string() }
}

/// Waits until `check` holds; the deadline only turns a hang into a failure.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let r = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: service.into() })
        .await
        .unwrap()
        .into_inner();
    r.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_first_start_fills_the_store() {
    let (gate, held) = tokio::sync::watch::channel(false);
    let server =
        FakeOpenAi::start(move |_, seen| Reply::Held(held.clone(), Box::new(embeddings(seen)))).await;
    let data = tempfile::tempdir().unwrap();
    let mut spec = common::spec(data.path());
    spec.settings.models.insert(
        "embed".into(),
        ModelProfile {
            provider: Provider::OpenaiCompatible,
            model: "text-embedding-test".into(),
            base_url: Some(server.base_url()),
            api_key_env: None,
            // Longer than the test holds an answer: a held call must not
            // time out and be retried while the test looks at health.
            timeout_ms: Some(600_000),
            ..ModelProfile::offline()
        },
    );
    let e = &mut spec.settings.retrieval.embedder;
    e.provider = EmbedderProvider::OpenaiCompatible;
    e.model = Some("embed".into());
    e.dimension = DIMENSION;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let starting = tokio::spawn(meshops::gateway::start_with(spec, listener, Overrides::default()));

    // The corpus is being embedded: the first batch waits at the double.
    wait_for("the first start's ingest reaches the embeddings endpoint", || async {
        !server.requests().is_empty()
    })
    .await;
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    for service in ["", "meshops.v1.Gateway", "meshops.v1.Batch", "meshops.v1.Admin"] {
        assert_eq!(health(&channel, service).await, ServingStatus::NotServing, "service {service:?}");
    }
    let ask = AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() };
    let err = GatewayClient::new(channel.clone()).ask(ask.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("starting"), "{}", err.message());
    // A batch job is stored now and answered once the mesh is up.
    let mut batch = BatchClient::new(channel.clone());
    let job = batch
        .submit_batch(SubmitBatchRequest { items: vec![ask.clone()], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert!(!starting.is_finished(), "the start must still be waiting for the embeddings");

    gate.send(true).unwrap();
    let handle = starting.await.unwrap().unwrap();
    assert_eq!(health(&channel, "").await, ServingStatus::Serving);
    assert_eq!(health(&channel, "meshops.v1.Gateway").await, ServingStatus::Serving);
    let answer = GatewayClient::new(channel.clone()).ask(ask).await.unwrap().into_inner();
    assert!(!answer.citations.is_empty(), "the store filled while held answers: {answer:?}");
    wait_for("the batch job submitted during the start finishes", || {
        let mut batch = batch.clone();
        let job = job.clone();
        async move {
            let j = batch.get_batch(GetBatchRequest { job_id: job }).await.unwrap().into_inner();
            j.state() == BatchState::Completed
        }
    })
    .await;
    let j = batch.get_batch(GetBatchRequest { job_id: job }).await.unwrap().into_inner();
    assert_eq!((j.total, j.done, j.failed), (1, 1, 0), "{j:?}");
    handle.shutdown().await.unwrap();
}
