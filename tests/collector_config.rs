//! The shipped OpenTelemetry Collector config is well-formed: every pipeline
//! names receivers, processors and exporters that are defined, and the
//! OTLP gRPC receiver listens where meshops exports.

use std::collections::BTreeSet;

#[test]
fn collector_pipelines_reference_defined_components() {
    // Run-time root: see tests/common/mod.rs.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let path = format!("{root}/k8s/observability/otel-collector-config.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let names = |section: &str| -> BTreeSet<String> {
        doc[section].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_string()).collect()
    };
    let (receivers, processors, exporters) = (names("receivers"), names("processors"), names("exporters"));
    let pipelines = doc["service"]["pipelines"].as_mapping().unwrap();
    assert!(pipelines.contains_key("traces") && pipelines.contains_key("metrics"));
    for (name, p) in pipelines {
        for (kind, defined) in
            [("receivers", &receivers), ("processors", &processors), ("exporters", &exporters)]
        {
            for c in p[kind].as_sequence().map(|s| s.as_slice()).unwrap_or_default() {
                let c = c.as_str().unwrap();
                assert!(defined.contains(c), "pipeline {name:?} uses undefined {kind} {c:?}");
            }
        }
    }
    assert_eq!(doc["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(), Some("0.0.0.0:4317"));
    assert!(exporters.contains("azuremonitor") && exporters.iter().any(|e| e.starts_with("otlp/")));
    assert!(!text.contains("InstrumentationKey="), "no secrets in the config");
}
