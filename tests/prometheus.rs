//! The Prometheus scrape endpoint of `meshops serve`
//! (`telemetry.prometheus_listen`): after a real request over gRPC, a
//! scrape of `/metrics` in the text format carries the request, step and
//! model-call metrics, with their counts.

mod common;

use meshops::proto::AskRequest;
use meshops::proto::gateway_client::GatewayClient;

/// A scrape of `http://{addr}/metrics`: status and body.
async fn scrape(addr: &str) -> (u16, String, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
    let status = response.status().as_u16();
    let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, kind, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_the_requests_steps_and_model_calls() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let served =
        common::served::serve(data.path(), &[("MESHOPS__TELEMETRY__PROMETHEUS_LISTEN", addr.as_str())]).await;
    let mut client = GatewayClient::connect(served.target.clone()).await.unwrap();
    for _ in 0..3 {
        let request =
            AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() };
        client.ask(request).await.unwrap();
    }
    let (status, kind, body) = scrape(&addr).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/plain"), "{kind}");
    // Three requests, each counted once in the request histogram, and
    // every agent's steps in the step histogram.
    let count = |prefix: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("meshops_request_duration_seconds_count"), 3.0, "{body}");
    for agent in ["router", "retriever", "summarizer", "critic"] {
        assert!(
            body.lines().any(|l| l.starts_with("meshops_agent_step_duration_seconds_count")
                && l.contains(&format!("meshops_agent=\"{agent}\""))),
            "no steps of {agent}:\n{body}"
        );
    }
    assert!(count("gen_ai_client_operation_duration_seconds_count") >= 9.0, "{body}");
    assert!(body.contains("# TYPE meshops_request_duration_seconds histogram"), "{body}");
    drop(served);
}
