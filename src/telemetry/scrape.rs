//! The Prometheus scrape endpoint (`GET /metrics` on
//! `telemetry.prometheus_listen`), for clusters that scrape rather than
//! receive OTLP: the same instruments, read through the OpenTelemetry
//! Prometheus exporter's registry and written in the text exposition
//! format.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, TextEncoder};

/// `GET /metrics` over `registry`.
pub fn router(registry: prometheus::Registry) -> axum::Router {
    axum::Router::new().route("/metrics", get(move || metrics(registry.clone())))
}

async fn metrics(registry: prometheus::Registry) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, encoder.format_type().to_string())], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}")).into_response(),
    }
}
