//! OpenTelemetry export to a real OTLP/gRPC receiver: one trace per request,
//! parented by the caller's `traceparent`, with agent, model-call (GenAI
//! attributes) and vector-search spans, and metrics.
//!
//! The receiver is a tonic server implementing the OTLP collector services
//! from `opentelemetry-proto`: the real wire protocol the exporter speaks.
//! This test owns its process's global subscriber, so it is the only test
//! in this file.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
use opentelemetry_proto::tonic::trace::v1::Span;

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
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
                self.metric_names.lock().unwrap().extend(sm.metrics.into_iter().map(|m| m.name));
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
    let mut spans = Vec::new();
    let mut metric_names = Vec::new();
    for _ in 0..50 {
        spans = receiver.spans.lock().unwrap().clone();
        metric_names = receiver.metric_names.lock().unwrap().clone();
        if spans.iter().any(|s| s.name.starts_with("chat "))
            && metric_names.iter().any(|n| n == "gen_ai.client.token.usage")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        telemetry.flush();
    }
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
    t.server.shutdown().await.unwrap();
    telemetry.shutdown();
}
