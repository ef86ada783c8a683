//! meshops runs LLM application services as a mesh of agents and gives them
//! the MLOps around them.
//!
//! # Layout
//! Modules bottom-up: each imports only from the ones listed before it
//! (or, within one line, one way), never from a later one.
//! - [`config`]: loads `config/`, `agents/`, `prompts/` into one validated
//!   [`config::MeshSpec`]; every error names the file and the field. Plain
//!   data: it imports no other module.
//! - [`text`]: tokenisation, sentence splitting, hashed feature vectors.
//! - [`telemetry`]: logs, OpenTelemetry traces and metrics, attribute names.
//! - [`llm`]: the [`llm::LlmClient`] trait, its layers (traced, retrying),
//!   the OpenAI-compatible client and the offline engine.
//! - [`prompt`]: Prompty templates compiled and rendered with minijinja.
//! - [`retrieval`]: embedders, vector stores (qdrant-edge, Qdrant server),
//!   chunking, ingest.
//! - [`pg`]: PostgreSQL pools and versioned migrations, for state shared
//!   by replicas.
//! - [`tools`]: clients of what agents call besides models (MCP servers).
//! - [`sessions`]: the conversation store (turns by owner and session).
//! - [`mesh`]: the actix actors (orchestrator, one type per agent kind) and
//!   their messages and errors.
//! - [`runtime`]: the one assembly (retrieval, ingest, model clients,
//!   agents) that serve, eval and bench start the mesh with.
//! - [`client`]: a running gateway seen from outside (checks, answers).
//! - [`gateway`]: the tonic services, admission, the error → `Status` map.
//! - [`live`]: records of answered requests (feedback, `live export`).
//! - [`batch`]: durable batch jobs: the SQLite or PostgreSQL store and the
//!   workers.
//! - [`eval`]: datasets, metrics, runs, comparisons and gates.
//! - [`bench`]: `meshops bench`, figures beside their limits.
//!
//! The binary (`src/main.rs`, `src/cli/`) parses the command line and
//! prints; nothing in this library does.

pub mod batch;
pub mod bench;
pub mod client;
pub mod config;
pub mod eval;
pub mod gateway;
pub mod live;
pub mod llm;
pub mod mesh;
pub mod pg;
pub mod prompt;
pub mod retrieval;
pub mod runtime;
pub mod sessions;
pub mod telemetry;
pub mod text;
pub mod tools;

/// Generated protobuf and gRPC code for `meshops.v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("meshops.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meshops_descriptor");
}
