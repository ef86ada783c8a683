//! OpenTelemetry export to a real OTLP/gRPC receiver: one trace per request,
//! parented by the caller's `traceparent`, with agent, model-call (GenAI
//! attributes) and vector-search spans, and metrics.
//!
//! The receiver is a tonic server implementing the OTLP collector services
//! from `opentelemetry-proto`: the real wire protocol the exporter speaks.
//! This test owns its process's global subscriber, so it is the only test
//! in this file.

mod common;

use common::wait;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use meshops::gateway::Overrides;
use meshops::proto::AskRequest;
use meshops::telemetry::attr;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::Span;

/// Sum of `count` (or of `sum` when `use_sum`) over the histogram points of
/// the last export of `name` whose attributes include all of `filter`.
fn histogram_total(metrics: &[Metric], name: &str, filter: &[(&str, Value)], use_sum: bool) -> f64 {
    let Some(m) = metrics.iter().rev().find(|m| m.name == name) else { return 0.0 };
    let Some(metric::Data::Histogram(h)) = &m.data else { panic!("{name} is not a histogram: {m:?}") };
    h.data_points
        .iter()
        .filter(|p| {
            filter.iter().all(|(k, v)| {
                p.attributes
                    .iter()
                    .any(|kv| kv.key == *k && kv.value.as_ref().and_then(|x| x.value.as_ref()) == Some(v))
            })
        })
        .map(|p| if use_sum { p.sum.unwrap_or(0.0) } else { p.count as f64 })
        .sum()
}

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
    /// Every exported metric, in arrival order (cumulative temporality: the
    /// last one of a name holds the totals).
    metrics: Arc<Mutex<Vec<Metric>>>,
    service_names: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            if let Some(res) = &rs.resource {
                for kv in &res.attributes {
                    if kv.key == "service.name" {
                        if let Some(Value::StringValue(s)) = kv.value.as_ref().and_then(|v| v.value.clone()) {
                            self.service_names.lock().unwrap().push(s);
                        }
                    }
                }
            }
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        for rm in request.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                self.metric_names.lock().unwrap().extend(sm.metrics.iter().map(|m| m.name.clone()));
                self.metrics.lock().unwrap().extend(sm.metrics);
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

fn attr_of(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_metrics_reach_an_otlp_receiver() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    let r = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r.clone()))
            .add_service(MetricsServiceServer::new(r))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });

    let settings = meshops::config::TelemetrySettings {
        otlp_endpoint: Some(format!("http://{otlp_addr}")),
        service_name: "meshops-test".into(),
        export_interval_ms: 200,
        ..Default::default()
    };
    let telemetry = meshops::telemetry::init(&settings).unwrap();
    assert!(telemetry.exporting());

    let mut t = common::start(|_| {}, Overrides::default()).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span_id = "00f067aa0ba902b7";
    let mut req = tonic::Request::new(AskRequest {
        query: "How does the critic agent decide to accept a draft?".into(),
        ..Default::default()
    });
    req.metadata_mut().insert("traceparent", format!("00-{trace_id}-{parent_span_id}-01").parse().unwrap());
    let answer = t.client.ask(req).await.unwrap().into_inner();
    assert_eq!(answer.trace_id, trace_id, "the response reports the caller's trace");
    // A second request without traceparent gets a trace of its own.
    let other =
        t.client.ask(AskRequest { query: "hello".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_ne!(other.trace_id, trace_id);
    assert_eq!(other.trace_id.len(), 32);

    telemetry.flush();
    wait::until("the model-call spans and the token metric to arrive", wait::PATIENCE, || {
        let done = {
            let spans = receiver.spans.lock().unwrap();
            let names = receiver.metric_names.lock().unwrap();
            spans.iter().any(|s| s.name.starts_with("chat "))
                && names.iter().any(|n| n == "gen_ai.client.token.usage")
        };
        if !done {
            telemetry.flush();
        }
        async move { done }
    })
    .await;
    let spans = receiver.spans.lock().unwrap().clone();
    let metric_names = receiver.metric_names.lock().unwrap().clone();
    let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
    let by_id: HashMap<String, &Span> = ours.iter().map(|s| (hex(&s.span_id), *s)).collect();
    let server = ours.iter().find(|s| s.name == "meshops.v1.Gateway/Ask").unwrap_or_else(|| {
        panic!("no server span in {:?}", ours.iter().map(|s| &s.name).collect::<Vec<_>>())
    });
    assert_eq!(hex(&server.parent_span_id), parent_span_id, "traceparent is the parent");
    assert_eq!(attr_of(server, "meshops.intent"), Some(Value::StringValue("question".into())));

    let steps: Vec<&&Span> = ours.iter().filter(|s| attr_of(s, attr::AGENT).is_some()).collect();
    let agents: std::collections::BTreeSet<String> = steps
        .iter()
        .filter_map(|s| match attr_of(s, attr::AGENT) {
            Some(Value::StringValue(a)) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(agents.into_iter().collect::<Vec<_>>(), ["critic", "retriever", "router", "summarizer"]);
    for s in &steps {
        assert_eq!(hex(&s.parent_span_id), hex(&server.span_id), "step {} nests under the request", s.name);
    }
    let chat: Vec<&&Span> = ours.iter().filter(|s| s.name == "chat offline-extractive").collect();
    assert!(chat.len() >= 3, "router, summarizer and critic call the model");
    let int = |v: Option<Value>| match v {
        Some(Value::IntValue(n)) => n as u64,
        other => panic!("not an int: {other:?}"),
    };
    let span_in: u64 = chat.iter().map(|c| int(attr_of(c, attr::GEN_AI_USAGE_INPUT_TOKENS))).sum();
    let span_out: u64 = chat.iter().map(|c| int(attr_of(c, attr::GEN_AI_USAGE_OUTPUT_TOKENS))).sum();
    let usage = answer.usage.unwrap();
    assert_eq!(
        (span_in, span_out),
        (usage.input_tokens, usage.output_tokens),
        "span tokens match the response"
    );
    for c in &chat {
        assert_eq!(attr_of(c, attr::GEN_AI_OPERATION_NAME), Some(Value::StringValue("chat".into())));
        assert_eq!(
            attr_of(c, attr::GEN_AI_REQUEST_MODEL),
            Some(Value::StringValue("offline-extractive".into()))
        );
        assert_eq!(attr_of(c, attr::GEN_AI_PROVIDER_NAME), Some(Value::StringValue("offline".into())));
        assert!(
            matches!(attr_of(c, attr::GEN_AI_USAGE_INPUT_TOKENS), Some(Value::IntValue(n)) if n > 0),
            "{:?}",
            c.attributes
        );
        assert!(matches!(attr_of(c, attr::GEN_AI_USAGE_OUTPUT_TOKENS), Some(Value::IntValue(n)) if n > 0));
        assert!(attr_of(c, "gen_ai.prompt").is_none(), "content is not captured by default");
        let parent = by_id.get(&hex(&c.parent_span_id)).expect("model call has a step parent");
        assert!(attr_of(parent, attr::AGENT).is_some());
    }
    let search = ours.iter().find(|s| s.name == "search meshops_docs").expect("a vector search span");
    assert!(matches!(attr_of(search, "meshops.hits"), Some(Value::IntValue(n)) if n > 0));
    assert!(receiver.service_names.lock().unwrap().iter().any(|s| s == "meshops-test"));
    for name in [
        "meshops.request.duration",
        "meshops.agent.step.duration",
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
    ] {
        assert!(metric_names.iter().any(|n| n == name), "metric {name} missing from {metric_names:?}");
    }

    // 50 concurrent requests, each under its own caller trace: every span
    // lands in its own request's trace, nested under that request.
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let mut client = t.client.clone();
        tasks.push(tokio::spawn(async move {
            let trace = format!("{:032x}", 0xabc0_0000_0000_0000_0000_0000_0000u128 + u128::from(i) + 1);
            let mut req = tonic::Request::new(AskRequest {
                query: format!("What does the retriever agent do with top_k {i}?"),
                ..Default::default()
            });
            req.metadata_mut()
                .insert("traceparent", format!("00-{trace}-{:016x}-01", i + 1).parse().unwrap());
            let a = client.ask(req).await.unwrap().into_inner();
            assert_eq!(a.trace_id, trace);
            a
        }));
    }
    let mut answers = vec![answer, other];
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    telemetry.flush();
    let expected_spans: usize = answers[2..].iter().map(|a| 1 + a.steps.len()).sum();
    wait::until("every request's spans to arrive", wait::PATIENCE, || {
        let n = receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id).starts_with("0000abc0"))
            .count();
        if n < expected_spans {
            telemetry.flush();
        }
        async move { n >= expected_spans }
    })
    .await;
    let spans = receiver.spans.lock().unwrap().clone();
    for (i, a) in answers[2..].iter().enumerate() {
        let trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == a.trace_id).collect();
        let servers: Vec<&&Span> = trace.iter().filter(|s| s.name == "meshops.v1.Gateway/Ask").collect();
        assert_eq!(servers.len(), 1, "request {i}: one server span");
        assert_eq!(hex(&servers[0].parent_span_id), format!("{:016x}", i + 1));
        let steps: Vec<&&Span> = trace.iter().filter(|s| attr_of(s, attr::AGENT).is_some()).collect();
        assert_eq!(steps.len(), a.steps.len(), "request {i}: one span per step, none from other requests");
        assert!(steps.iter().all(|s| s.parent_span_id == servers[0].span_id));
    }

    // Metrics: counts and sums match what was sent (once an export has
    // counted every request).
    let ask_ok =
        [("rpc.method", Value::StringValue("Ask".into())), ("rpc.grpc.status_code", Value::IntValue(0))];
    let want = answers.len();
    wait::until("an export that counts every request", wait::PATIENCE, || {
        telemetry.flush();
        let metrics = receiver.metrics.lock().unwrap();
        let counted = histogram_total(&metrics, "meshops.request.duration", &ask_ok, false) as usize;
        async move { counted >= want }
    })
    .await;
    let metrics = receiver.metrics.lock().unwrap().clone();
    let asks = histogram_total(&metrics, "meshops.request.duration", &ask_ok, false);
    assert_eq!(asks as usize, answers.len(), "one request-duration sample per Ask");
    let input_tokens: u64 = answers.iter().map(|a| a.usage.as_ref().unwrap().input_tokens).sum();
    let metered = histogram_total(
        &metrics,
        "gen_ai.client.token.usage",
        &[(attr::GEN_AI_TOKEN_TYPE, Value::StringValue("input".into()))],
        true,
    );
    assert_eq!(metered as u64, input_tokens, "token usage metric sums the responses' input tokens");
    let model_calls: u32 = answers.iter().map(|a| a.usage.as_ref().unwrap().model_calls).sum();
    let calls = histogram_total(
        &metrics,
        "gen_ai.client.operation.duration",
        &[(attr::GEN_AI_REQUEST_MODEL, Value::StringValue("offline-extractive".into()))],
        false,
    );
    assert_eq!(calls as u32, model_calls);
    let retriever_steps = histogram_total(
        &metrics,
        "meshops.agent.step.duration",
        &[(attr::AGENT, Value::StringValue("retriever".into()))],
        false,
    );
    let expected_retrievals =
        answers.iter().flat_map(|a| &a.steps).filter(|s| s.agent == "retriever").count();
    assert_eq!(retriever_steps as usize, expected_retrievals);

    t.server.shutdown().await.unwrap();
    telemetry.shutdown();
}
