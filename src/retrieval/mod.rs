//! Retrieval: embedders, vector stores, chunking and ingest.
//!
//! Agents see two traits: [`Embedder`] (text → vector) and [`VectorStore`]
//! (upsert, search, count). The embedded default is qdrant-edge
//! ([`edge::EdgeStore`]) with the deterministic [`embed::OfflineEmbedder`];
//! a Qdrant server shares the same collection and payload schema
//! (`doc_id`, `chunk_id`, `source`, `text`; one unnamed cosine vector).

pub mod chunk;
pub mod edge;
pub mod embed;
pub mod ingest;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// A piece of a document, the unit that is embedded and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The document's id: its path relative to the ingest root, without
    /// extension (`gateway`, `guides/deploy`). Citations report it.
    pub doc_id: String,
    /// `<doc_id>#<n>`, n counting from 0 in document order.
    pub chunk_id: String,
    /// The file the chunk came from, as given to ingest.
    pub source: String,
    /// The chunk text, headings included, as shown to models.
    pub text: String,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub doc_id: String,
    pub chunk_id: String,
    pub source: String,
    pub text: String,
    /// Cosine similarity, higher is closer.
    pub score: f32,
}

/// Errors of embedding, storage and ingest.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    #[error("vector store {collection}: {message}")]
    Store { collection: String, message: String },
    #[error("embedder {embedder}: {message}")]
    Embed { embedder: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("vector dimension mismatch in {collection}: store has {store}, embedder gives {embedder}")]
    Dimension { collection: String, store: usize, embedder: usize },
}

/// Turns text into vectors. Async because remote embedders call a network.
pub trait Embedder: Send + Sync {
    /// A name for logs and errors (`offline-hash-384`, a model name, …).
    fn name(&self) -> &str;
    /// Length of every vector this embedder returns.
    fn dimension(&self) -> usize;
    /// Embeds each text; the result has one vector per input, in order.
    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, RetrievalError>>;
}

/// A collection of chunk vectors with the meshops payload schema.
pub trait VectorStore: Send + Sync {
    /// `edge` or `qdrant`.
    fn backend(&self) -> &str;
    fn collection(&self) -> &str;
    /// Inserts or replaces points; ids derive from content, so upserting the
    /// same chunk twice leaves one point. Returns the number written.
    fn upsert(&self, points: Vec<(Chunk, Vec<f32>)>) -> BoxFuture<'_, Result<usize, RetrievalError>>;
    /// Removes the points of `doc_id` whose chunk ids are not in `keep`
    /// (stale chunks of an edited document). Returns how many were removed.
    fn prune_doc(&self, doc_id: String, keep: Vec<String>) -> BoxFuture<'_, Result<usize, RetrievalError>>;
    /// The `top_k` nearest chunks with score at least `score_threshold`.
    fn search(
        &self,
        vector: Vec<f32>,
        top_k: usize,
        score_threshold: Option<f32>,
    ) -> BoxFuture<'_, Result<Vec<Hit>, RetrievalError>>;
    /// Number of points in the collection.
    fn count(&self) -> BoxFuture<'_, Result<usize, RetrievalError>>;
}

pub type SharedEmbedder = Arc<dyn Embedder>;
pub type SharedStore = Arc<dyn VectorStore>;
