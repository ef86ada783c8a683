//! With export off, nothing is exported and no connection is attempted,
//! even when an endpoint is configured. This test owns its process's global
//! subscriber, so it is the only test in this file.

mod common;

use std::time::Duration;

use meshops::gateway::Overrides;
use meshops::proto::AskRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_off_never_connects_to_the_endpoint() {
    // A listener that would accept an exporter's connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = meshops::config::TelemetrySettings {
        otlp_endpoint: Some(format!("http://{}", listener.local_addr().unwrap())),
        export: false,
        export_interval_ms: 100,
        ..Default::default()
    };
    let telemetry = meshops::telemetry::init(&settings).unwrap();
    assert!(!telemetry.exporting());

    let mut t = common::start(|_| {}, Overrides::default()).await;
    for _ in 0..5 {
        let a = t.client.ask(AskRequest { query: "hello".into(), ..Default::default() }).await.unwrap();
        assert_eq!(a.into_inner().trace_id.len(), 32);
    }
    telemetry.flush();
    // Several export intervals pass; no connection may arrive.
    let accepted = tokio::time::timeout(Duration::from_millis(600), listener.accept()).await;
    assert!(accepted.is_err(), "an exporter connected although export is off");
    t.server.shutdown().await.unwrap();
    telemetry.shutdown();
}
