//! Conversations over the real gateway: a request with a `session_id` is a
//! turn, and on a later turn every model-calling agent's request carries
//! the earlier turns (the question and the answer the client got) before
//! its own question; `DeleteSession` forgets a conversation; with API keys
//! a conversation belongs to its key (another key's same `session_id` is a
//! fresh one it cannot delete); the conversations are kept in SQLite under
//! the data dir and survive a restart; an over-long `session_id` is
//! refused.
//!
//! The summarizer calls a fake OpenAI-wire server, so the test reads what
//! the model was sent; the router and the critic stay offline.

mod common;

use std::path::Path;

use common::fake_openai::{FakeOpenAi, Seen, completion};
use meshops::config::MeshSpec;
use meshops::gateway::{Overrides, ServerHandle};
use meshops::proto::gateway_client::GatewayClient;
use meshops::proto::{AskRequest, AskResponse, DeleteSessionRequest};
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

const FIRST: &str = "Which port does the gateway listen on?";
const FOLLOW_UP: &str = "And how do I change it?";

/// A model that answers `answer <n>` to its n-th request (from 0).
async fn fake_model() -> FakeOpenAi {
    FakeOpenAi::start(|i, _| completion(&format!("answer {i}"), "fake", Some((10, 3)))).await
}

/// The summarizer on the fake model (profile `remote`); the critic accepts
/// any draft, so the answer a client gets is the model's own text rather
/// than the flow's fallback reply for every turn alike.
fn remote_summarizer(base_url: String) -> impl FnOnce(&mut MeshSpec) {
    move |spec: &mut MeshSpec| {
        common::on_remote_model(spec, "summarizer", "fake", base_url);
        if let Some(critic) = spec.agents.get_mut("critic") {
            if let meshops::config::KindSettings::Critic(c) = &mut critic.base.settings {
                c.accept_threshold = 0.0;
                c.min_coverage = 0.0;
            }
        }
    }
}

fn request(query: &str, session: &str) -> AskRequest {
    AskRequest { query: query.into(), session_id: session.into(), ..Default::default() }
}

/// `message` with the caller's API key.
fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

async fn ask(client: &mut GatewayClient<Channel>, query: &str, session: &str) -> AskResponse {
    client.ask(request(query, session)).await.unwrap().into_inner()
}

async fn ask_as(client: &mut GatewayClient<Channel>, key: &str, query: &str, session: &str) -> AskResponse {
    client.ask(keyed(request(query, session), key)).await.unwrap().into_inner()
}

fn delete(session: &str) -> DeleteSessionRequest {
    DeleteSessionRequest { session_id: session.into() }
}

/// A message's content as text (a string, or the text of its parts).
fn content(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// (role, content) of each message of a request to the model.
fn messages(seen: &Seen) -> Vec<(String, String)> {
    seen.body["messages"]
        .as_array()
        .map(|ms| ms.iter().map(|m| (m["role"].as_str().unwrap_or("").to_string(), content(m))).collect())
        .unwrap_or_default()
}

/// Whether the request carries no earlier turn: one user message and no
/// assistant message.
fn without_history(seen: &Seen) -> bool {
    let ms = messages(seen);
    ms.iter().filter(|(r, _)| r == "user").count() == 1 && ms.iter().all(|(r, _)| r != "assistant")
}

/// Whether the request carries the turn (`query`, `answer`) before its
/// last user message.
fn carries(seen: &Seen, query: &str, answer: &str) -> bool {
    let ms = messages(seen);
    let Some(last_user) = ms.iter().rposition(|(r, _)| r == "user") else { return false };
    ms[..last_user]
        .windows(2)
        .any(|w| w[0].0 == "user" && w[0].1 == query && w[1].0 == "assistant" && w[1].1 == answer)
}

/// The content of the request's last user message.
fn last_user(seen: &Seen) -> String {
    messages(seen).into_iter().rev().find(|(r, _)| r == "user").map(|(_, c)| c).unwrap_or_default()
}

/// The router's step summary.
fn router_summary(a: &AskResponse) -> String {
    let router = a.steps.iter().find(|s| s.kind == "router");
    router.unwrap_or_else(|| panic!("no router step: {:?}", a.steps)).summary.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_turn_carries_the_first_turn_to_the_model() {
    let fake = fake_model().await;
    let mut t = common::start(remote_summarizer(fake.base_url()), Overrides::default()).await;

    let first = ask(&mut t.client, FIRST, "s1").await;
    assert!(!first.answer.is_empty());
    let turn_one = fake.requests().len();
    assert!(turn_one >= 1, "the summarizer called the model in the first turn: {first:?}");
    for seen in &fake.requests()[..turn_one] {
        assert!(without_history(seen), "the first turn has no history: {:?}", messages(seen));
    }
    assert!(!router_summary(&first).contains("(conversation:"), "{}", router_summary(&first));

    let second = ask(&mut t.client, FOLLOW_UP, "s1").await;
    let seen = fake.requests();
    assert!(seen.len() > turn_one, "the summarizer called the model in the second turn: {second:?}");
    let last = seen.last().unwrap();
    assert!(
        carries(last, FIRST, &first.answer),
        "the second turn's request carries the first turn ({FIRST:?} -> {:?}): {:?}",
        first.answer,
        messages(last)
    );
    assert_eq!(last_user(last), FOLLOW_UP, "the turn's own question comes last");
    for s in &seen[turn_one..] {
        assert!(carries(s, FIRST, &first.answer), "every model request of the turn: {:?}", messages(s));
    }
    let router = router_summary(&second);
    assert!(router.contains("(conversation: 1 earlier turn)"), "{router}");
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_forgets_and_an_unknown_session_is_not_found() {
    let fake = fake_model().await;
    let mut t = common::start(remote_summarizer(fake.base_url()), Overrides::default()).await;

    ask(&mut t.client, FIRST, "s2").await;
    let deleted = t.client.delete_session(delete("s2")).await.unwrap().into_inner();
    assert!(deleted.deleted);

    // A question that stands on its own: without history it is still
    // routed to a flow that calls the model.
    let before = fake.requests().len();
    let again = ask(&mut t.client, "How does the critic agent decide to accept a draft?", "s2").await;
    let seen = fake.requests();
    assert!(seen.len() > before, "the summarizer called the model: {again:?}");
    for s in &seen[before..] {
        assert!(without_history(s), "a deleted conversation starts again: {:?}", messages(s));
    }
    assert!(!router_summary(&again).contains("(conversation:"), "{}", router_summary(&again));

    let err = t.client.delete_session(delete("s2-unknown")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = t.client.delete_session(delete("")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_never_sees_the_conversation() {
    let fake = fake_model().await;
    let overrides = Overrides { api_keys: Some(vec!["key-a".into(), "key-b".into()]), ..Default::default() };
    let mut t = common::start(remote_summarizer(fake.base_url()), overrides).await;
    let other = "How are documents chunked and ingested?";

    let first = ask_as(&mut t.client, "key-a", FIRST, "shared").await;
    let after_a = fake.requests().len();

    let err = t.client.delete_session(keyed(delete("shared"), "key-b")).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "key B cannot delete key A's conversation: {err:?}");

    let b = ask_as(&mut t.client, "key-b", other, "shared").await;
    let seen = fake.requests();
    assert!(seen.len() > after_a, "the summarizer called the model for key B: {b:?}");
    for s in &seen[after_a..] {
        assert!(without_history(s), "key B gets a fresh conversation: {:?}", messages(s));
    }
    assert!(!router_summary(&b).contains("(conversation:"), "{}", router_summary(&b));
    let after_b = seen.len();

    let second = ask_as(&mut t.client, "key-a", FOLLOW_UP, "shared").await;
    let seen = fake.requests();
    assert!(seen.len() > after_b, "the summarizer called the model for key A: {second:?}");
    for s in &seen[after_b..] {
        assert!(carries(s, FIRST, &first.answer), "key A's turn carries its first turn: {:?}", messages(s));
        assert!(messages(s).iter().all(|(_, c)| c != other), "nothing of key B's turn: {:?}", messages(s));
    }
    let router = router_summary(&second);
    assert!(router.contains("(conversation: 1 earlier turn)"), "only key A's own turn: {router}");
    t.server.shutdown().await.unwrap();
}

/// A gateway on the shipped files whose data dir is `data` (kept by the
/// test, so a second start finds what the first kept), the summarizer on
/// the fake model at `base_url`.
async fn start_on(data: &Path, base_url: String) -> (ServerHandle, GatewayClient<Channel>) {
    let mut spec = common::spec(data);
    remote_summarizer(base_url)(&mut spec);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = meshops::gateway::start_with(spec, listener, Overrides::default()).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    (server, GatewayClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_conversations() {
    let data = tempfile::tempdir().unwrap();
    let fake = fake_model().await;
    let (server, mut client) = start_on(data.path(), fake.base_url()).await;
    let first = ask(&mut client, FIRST, "s4").await;
    server.shutdown().await.unwrap();

    // The embedded vector store locks its collection; the second start on
    // the same data dir waits until the first one has let go of it.
    let collection = common::spec(data.path()).settings.retrieval.collection.clone();
    let shard = data.path().join("collections").join(collection);
    common::wait::until("the first server to release its store", common::wait::PATIENCE, || {
        let shard = shard.clone();
        async move { meshops::retrieval::lock::StoreLock::acquire(&shard).is_ok() }
    })
    .await;

    // A new model server: what the second turn is sent can only come from
    // the conversation kept on disk.
    let fake = fake_model().await;
    let (server, mut client) = start_on(data.path(), fake.base_url()).await;
    let second = ask(&mut client, FOLLOW_UP, "s4").await;
    let seen = fake.requests();
    assert!(!seen.is_empty(), "the summarizer called the model: {second:?}");
    for s in &seen {
        assert!(
            carries(s, FIRST, &first.answer),
            "the turn before the restart is carried ({:?}): {:?}",
            first.answer,
            messages(s)
        );
    }
    assert!(
        router_summary(&second).contains("(conversation: 1 earlier turn)"),
        "{}",
        router_summary(&second)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_input_limits() {
    let mut t = common::start(|_| {}, Overrides::default()).await;
    let long = "s".repeat(300);
    let err = t.client.ask(request(FIRST, &long)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = t.client.ask_stream(request(FIRST, &long)).await.map(|_| ()).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = t.client.delete_session(delete(&long)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    t.server.shutdown().await.unwrap();
}

/// `eval run` drives a row with `turns` as one conversation and scores its
/// last turn; a row without turns carries no history, and two rows never
/// share one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eval_row_with_turns_is_one_conversation_scored_on_its_last_turn() {
    let fake = fake_model().await;
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dataset = out.path().join("turns.jsonl");
    std::fs::write(
        &dataset,
        format!(
            "{}\n{}\n",
            serde_json::json!({"id": "c1", "turns": [FIRST, FOLLOW_UP]}),
            serde_json::json!({"id": "c2", "query": "What does the critic agent do?"}),
        ),
    )
    .unwrap();
    let mut spec = common::spec(data.path());
    remote_summarizer(fake.base_url())(&mut spec);
    let mut opts = meshops::eval::runner::RunOptions::new(dataset, out.path().join("run"));
    opts.concurrency = 1;
    let r = meshops::eval::runner::run(spec, opts).await.unwrap();
    assert_eq!((r.summary.counts.ok, r.summary.counts.failed), (2, 0));

    let outputs = std::fs::read_to_string(out.path().join("run/outputs.jsonl")).unwrap();
    let rows: Vec<Value> = outputs.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let c1 = rows.iter().find(|r| r["row_id"] == "c1" || r["id"] == "c1").expect("c1's output");
    assert_eq!(c1["query"], FOLLOW_UP, "the last turn is the row's query, and the one scored: {c1}");

    let seen = fake.requests();
    let last_turn: Vec<&Seen> = seen.iter().filter(|s| last_user(s) == FOLLOW_UP).collect();
    assert!(!last_turn.is_empty(), "the follow-up reached the model");
    for s in &last_turn {
        let m = messages(s);
        assert!(m.iter().any(|(r, c)| r == "user" && c == FIRST), "the first turn is carried: {m:?}");
        assert!(m.iter().any(|(r, _)| r == "assistant"), "with its answer: {m:?}");
    }
    for s in seen.iter().filter(|s| last_user(s) != FOLLOW_UP) {
        assert!(without_history(s), "no other request carries a conversation: {:?}", messages(s));
    }
}
