//! Telemetry: structured logs, OpenTelemetry traces and metrics.
//!
//! [`init`] installs the global `tracing` subscriber: a human or JSON log
//! layer filtered by `RUST_LOG`, and, when an OTLP endpoint is configured, a
//! `tracing-opentelemetry` layer exporting spans over OTLP/gRPC plus an OTLP
//! metrics pipeline. With no endpoint nothing is exported and no exporter
//! runs; spans then cost what plain `tracing` spans cost.
//!
//! Span and metric names live here, following the OpenTelemetry GenAI
//! semantic conventions where they apply. Span *field* names are written
//! as dotted identifiers at the span sites (the `tracing` macros need them
//! literally); [`attr`] holds the same names for metric attributes, and the
//! OTLP export test (`tests/telemetry.rs`) checks exported spans by these
//! constants.

pub mod metrics;
pub mod propagation;
pub mod scrape;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySettings};

/// Span names (`otel.name` overrides carry the dynamic parts).
pub mod span {
    /// The server span of one gRPC call.
    pub const GRPC_REQUEST: &str = "grpc.request";
    /// One agent step.
    pub const AGENT_STEP: &str = "agent.step";
    /// One model call (`otel.name` = "chat {model}").
    pub const MODEL_CALL: &str = "gen_ai.call";
    /// One vector search.
    pub const VECTOR_SEARCH: &str = "vector.search";
}

/// Attribute names (OpenTelemetry semantic conventions, then ours).
pub mod attr {
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const GEN_AI_SYSTEM: &str = "gen_ai.system";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
    pub const ERROR_TYPE: &str = "error.type";
    pub const RPC_METHOD: &str = "rpc.method";
    pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
    pub const AGENT: &str = "meshops.agent";
    pub const AGENT_KIND: &str = "meshops.agent.kind";
    pub const VARIANT: &str = "meshops.variant";
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
}

/// Keeps the exporters alive; [`Telemetry::shutdown`] flushes them.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    /// What Prometheus scrapes read, with `telemetry.prometheus_listen`.
    registry: Option<prometheus::Registry>,
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// The registry Prometheus scrapes read (see [`scrape`]), when
    /// `telemetry.prometheus_listen` is set.
    pub fn prometheus_registry(&self) -> Option<prometheus::Registry> {
        self.registry.clone()
    }

    /// Exports everything buffered now (tests and shutdown use it).
    pub fn flush(&self) {
        if let Some(p) = &self.tracer_provider {
            if let Err(e) = p.force_flush() {
                tracing::warn!(error = %e, "flushing spans failed");
            }
        }
        if let Some(p) = &self.meter_provider {
            if let Err(e) = p.force_flush() {
                tracing::warn!(error = %e, "flushing metrics failed");
            }
        }
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(self) {
        self.flush();
        if let Some(p) = self.tracer_provider {
            // Errors here mean the collector went away; nothing is left to do.
            let _ = p.shutdown();
        }
        if let Some(p) = self.meter_provider {
            let _ = p.shutdown();
        }
    }
}

/// The endpoint to export to: config first, then the standard variables;
/// `None` when export is off.
pub fn endpoint(settings: &TelemetrySettings) -> Option<String> {
    if !settings.export || std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    settings
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty())
}

fn resource(settings: &TelemetrySettings) -> Resource {
    let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| settings.service_name.clone());
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("deployment.environment.name", settings.environment.clone()),
    ];
    for (k, v) in &settings.resource_attributes {
        attrs.push(KeyValue::new(k.clone(), v.clone()));
    }
    // `Resource::builder` also reads OTEL_RESOURCE_ATTRIBUTES.
    Resource::builder().with_service_name(service_name).with_attributes(attrs).build()
}

/// Log targets of qdrant-edge whose warnings are about the embedding
/// process, not the store: the engine expects the Qdrant server's `main`
/// to initialise its feature flags and probe multi-mmap support, which
/// qdrant-edge does not export. Its defaults are the right ones here, so
/// these warnings ("Feature flags not initialized",
/// "MULTI_MMAP_SUPPORT_CHECK_RESULT should be initialized") say nothing an
/// operator can act on, and every start printed them.
const QUIET_TARGETS: [&str; 2] = ["qdrant_edge::common::flags", "qdrant_edge::common::mmap::ops"];

/// The log filter: `RUST_LOG` (default `info`), with [`QUIET_TARGETS`] at
/// `error` unless `RUST_LOG` names qdrant-edge itself.
fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let spec = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    let mut filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    if !spec.contains("qdrant_edge") {
        for target in QUIET_TARGETS {
            if let Ok(directive) = format!("{target}=error").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// Installs logging and, when configured, OTLP export. Must run inside a
/// tokio runtime (the exporters use it). Call once per process.
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let env_filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    // Log lines carry the request's span (its trace id and intent) but not
    // the per-step spans below it: formatting every step's fields for a
    // log line that almost never comes was most of a request's cost in the
    // mesh (`meshops bench mesh`). Steps and model calls are traced over
    // OTLP, and their log events name the agent themselves.
    let filter = env_filter.and(filter_fn(|m| m.is_event() || m.name() == span::GRPC_REQUEST));
    // Colour codes only for a terminal: a log file or collector gets plain
    // text, and writing them cost as much as the rest of the line.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = match settings.log_format {
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // Prometheus reads the same instruments as OTLP, through its own
    // reader on the one meter provider.
    let (registry, prometheus_reader) = match &settings.prometheus_listen {
        Some(_) => {
            let registry = prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
            (Some(registry), Some(reader))
        }
        None => (None, None),
    };
    let Some(endpoint) = endpoint(settings) else {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        let meter_provider = prometheus_reader.map(|reader| {
            let provider =
                SdkMeterProvider::builder().with_reader(reader).with_resource(resource(settings)).build();
            opentelemetry::global::set_meter_provider(provider.clone());
            provider
        });
        return Ok(Telemetry { tracer_provider: None, meter_provider, registry });
    };
    let exporter_error = |e: &dyn std::fmt::Display| TelemetryError::Exporter {
        endpoint: endpoint.clone(),
        message: e.to_string(),
    };
    use opentelemetry_otlp::WithExportConfig as _;
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| exporter_error(&e))?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling_ratio))))
        .with_resource(resource(settings))
        .build();
    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| exporter_error(&e))?;
    let reader = PeriodicReader::builder(metric_exporter)
        .with_interval(Duration::from_millis(settings.export_interval_ms))
        .build();
    let mut meter_provider =
        SdkMeterProvider::builder().with_reader(reader).with_resource(resource(settings));
    if let Some(prometheus) = prometheus_reader {
        meter_provider = meter_provider.with_reader(prometheus);
    }
    let meter_provider = meter_provider.build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    let tracer = tracer_provider.tracer("meshops");
    // Only meshops' own spans go to the collector: dependencies' debug spans
    // would drown the request traces.
    let otel_filter = EnvFilter::new("meshops=info");
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(otel_filter))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    tracing::info!(%endpoint, "exporting traces and metrics over OTLP/gRPC");
    Ok(Telemetry { tracer_provider: Some(tracer_provider), meter_provider: Some(meter_provider), registry })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filter_quiets_qdrant_edge_start_up_warnings_unless_asked_for() {
        let quiet = log_filter(None).to_string();
        assert!(quiet.contains("qdrant_edge::common::flags=error"), "{quiet}");
        assert!(quiet.contains("info"), "{quiet}");
        let user = log_filter(Some("warn,meshops=debug")).to_string();
        assert!(
            user.contains("meshops=debug") && user.contains("qdrant_edge::common::mmap::ops=error"),
            "{user}"
        );
        let asked = log_filter(Some("qdrant_edge=debug")).to_string();
        assert!(!asked.contains("=error"), "{asked}");
    }

    #[test]
    fn export_off_means_no_endpoint_even_when_one_is_set() {
        let s = TelemetrySettings {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            export: false,
            ..Default::default()
        };
        assert_eq!(endpoint(&s), None);
        let on = TelemetrySettings { export: true, ..s };
        assert_eq!(endpoint(&on).as_deref(), Some("http://127.0.0.1:4317"));
    }
}
