//! meshops runs LLM application services as a mesh of agents and gives them
//! the MLOps around them.
//!
//! # Layout
//! - [`client`]: client-side checks of a running gateway (health, reflection).
//! - [`config`]: loads `config/`, `agents/`, `prompts/` into one validated
//!   [`config::MeshSpec`]; every error names the file and the field.
//! - [`prompt`]: Prompty files, rendered with minijinja.
//! - [`llm`]: the [`llm::LlmClient`] trait and the offline engine.
//! - [`retrieval`]: embedders, vector stores (qdrant-edge), chunking, ingest.
//! - [`mesh`]: the actix actors (orchestrator and agents) and their messages.
//! - [`runtime`]: the one assembly (retrieval, ingest, model clients, agents)
//!   that serve, eval, batch and bench start the mesh with.
//! - [`gateway`]: the tonic services and the one error → `Status` map.
//! - [`batch`]: durable batch jobs: the SQLite store and the workers.
//! - [`eval`]: datasets, metrics, runs, comparisons and gates.
//! - [`bench`]: `meshops bench`, benchmarks beside their comparisons.
//! - [`telemetry`]: logs, OpenTelemetry traces and metrics, attribute names.
//! - [`text`]: tokenisation and other small text helpers.

pub mod batch;
pub mod bench;
pub mod client;
pub mod config;
pub mod eval;
pub mod gateway;
pub mod llm;
pub mod mesh;
pub mod prompt;
pub mod retrieval;
pub mod runtime;
pub mod telemetry;
pub mod text;

/// Generated protobuf and gRPC code for `meshops.v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("meshops.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meshops_descriptor");
}
