//! The gateway under load, faults and bad callers: load shedding, API keys,
//! deadlines that stop mesh work, graceful shutdown.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meshops::gateway::Overrides;
use meshops::llm::offline::{OFFLINE_MODEL, OfflineEngine};
use meshops::proto::AskRequest;
use tonic::Code;

fn slow(latency_ms: u64) -> (Arc<OfflineEngine>, Overrides) {
    let engine = Arc::new(OfflineEngine::new(OFFLINE_MODEL, latency_ms, 0.0));
    let overrides = Overrides {
        models: HashMap::from([("offline".to_string(), engine.clone() as meshops::llm::SharedLlm)]),
        ..Default::default()
    };
    (engine, overrides)
}

fn ask(q: &str) -> AskRequest {
    AskRequest { query: q.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_capacity_requests_are_shed_at_once() {
    let (_engine, overrides) = slow(300);
    let t = common::start(
        |s| {
            s.settings.gateway.max_in_flight = 2;
            s.settings.gateway.max_queued = 1;
        },
        overrides,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut c = t.client.clone();
        tasks.push(tokio::spawn(async move { c.ask(ask("hello")).await }));
    }
    let (mut ok, mut shed) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("retry"), "{}", s.message());
                shed += 1;
            }
        }
    }
    assert_eq!(ok + shed, 10);
    assert_eq!(ok, 3, "two slots and one queue place");
    assert_eq!(shed, 7);
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_call_but_health() {
    let overrides = Overrides { api_keys: Some(vec!["s3cret".into(), "other".into()]), ..Default::default() };
    let mut t = common::start(|_| {}, overrides).await;
    let err = t.client.ask(ask("hello")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(ask("hello"));
    wrong.metadata_mut().insert("authorization", "Bearer s3cre".parse().unwrap());
    assert_eq!(t.client.ask(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    let mut right = tonic::Request::new(ask("hello"));
    right.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
    assert_eq!(t.client.ask(right).await.unwrap().into_inner().intent, "greeting");
    let err = t.client.describe_mesh(meshops::proto::DescribeMeshRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = t.client.ask_stream(ask("hello")).await.map(|_| ()).unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut health = tonic_health::pb::health_client::HealthClient::new(t.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving);
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_stops_work_in_the_mesh() {
    let (engine, overrides) = slow(1000);
    let mut t = common::start(|_| {}, overrides).await;
    let mut req = tonic::Request::new(ask("How does the critic agent decide to accept a draft?"));
    // tonic's client also runs a timer from this header and would report
    // its own CANCELLED at 300 ms; the gateway answers a tenth of the
    // timeout earlier, so what arrives is the server's status.
    req.metadata_mut().insert("grpc-timeout", "300m".parse().unwrap());
    let err = t.client.ask(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    // Only the router's call had started; nothing follows it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(engine.calls(), 1, "no model call after the deadline");
    assert_eq!(t.server.in_flight(), 0);
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_refuses_new_ones() {
    let (_engine, overrides) = slow(400);
    let t = common::start(|_| {}, overrides).await;
    let mut c = t.client.clone();
    let in_flight = tokio::spawn(async move { c.ask(ask("hello")).await });
    for _ in 0..100 {
        if t.server.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(t.server.in_flight(), 1);
    let mut late = t.client.clone();
    let mut health = tonic_health::pb::health_client::HealthClient::new(t.channel.clone());
    let stopping = tokio::spawn(t.server.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = late.ask(ask("hello")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::NotServing);
    let answer = in_flight.await.unwrap().expect("the in-flight request finishes");
    assert_eq!(answer.into_inner().intent, "greeting");
    stopping.await.unwrap().unwrap();
}
