//! W3C trace context: from gRPC metadata into the request span, and the
//! trace id a response reports.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Reads W3C headers out of tonic metadata.
struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Makes the caller's `traceparent` (if any) the parent of `span`, and
/// returns the request's trace id: the span's when spans are exported, else
/// the caller's, else a fresh random one (so responses always carry one).
pub fn adopt_parent(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) -> String {
    let parent = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
    let remote = parent.span().span_context().clone();
    if remote.is_valid() {
        // Fails only when the span is disabled; the id below still holds.
        let _ = span.set_parent(parent);
    }
    let own = span.context().span().span_context().trace_id();
    if own != opentelemetry::trace::TraceId::INVALID {
        return own.to_string();
    }
    if remote.is_valid() {
        return remote.trace_id().to_string();
    }
    new_trace_id()
}

/// A fresh random trace id (32 lowercase hex digits) for a request that
/// arrives with none.
pub fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_follows_traceparent_without_export() {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        let id = adopt_parent(&tracing::Span::none(), &m);
        assert_eq!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let fresh = adopt_parent(&tracing::Span::none(), &tonic::metadata::MetadataMap::new());
        assert_eq!(fresh.len(), 32);
        assert_ne!(fresh, id);
    }
}
