//! Retrieval: embedders, vector stores, chunking and ingest.
//!
//! Agents see two traits: [`Embedder`] (text → vector) and [`VectorStore`]
//! (upsert, search, count). The embedded default is qdrant-edge
//! ([`edge::EdgeStore`]) with the deterministic [`embed::OfflineEmbedder`];
//! a Qdrant server ([`qdrant::QdrantStore`]) shares the same collection and
//! payload schema ([`schema`]: `doc_id`, `chunk_id`, `source`, `text`; one
//! unnamed cosine vector), and [`embed::OpenAiEmbedder`] calls a model
//! profile's embeddings endpoint. [`open`] builds what the settings name.

pub mod chunk;
pub mod edge;
pub mod embed;
pub mod ingest;
pub mod lock;
pub mod qdrant;
pub mod schema;
pub mod zero;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{EmbedderProvider, MeshSpec, StoreBackend};

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
    /// A document or directory named for ingest is missing, unreadable or of
    /// an unsupported kind.
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("vector store {collection}: {message}")]
    Store { collection: String, message: String },
    #[error("embedder {embedder}: {message}")]
    Embed { embedder: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("vector dimension mismatch in {collection}: store has {store}, embedder gives {embedder}")]
    Dimension { collection: String, store: usize, embedder: usize },
    /// The embedded store is open in another process (a running gateway,
    /// most often) or already open in this one: one holder at a time.
    #[error("the embedded store {path} is in use by {}", holder_text(*.holder))]
    Locked {
        path: String,
        /// The holder's process id, when its lock file says.
        holder: Option<u32>,
    },
}

fn holder_text(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("process {pid}"),
        None => "another process".into(),
    }
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
    /// Removes the points of `doc_id` whose point ids (see [`point_id`]) are
    /// not in `keep`: stale chunks of an edited document. Point ids rather
    /// than chunk ids, because an edited chunk keeps its chunk id but gets a
    /// new point id, and the old point must go. Returns how many were removed.
    fn prune_doc(
        &self,
        doc_id: String,
        keep: Vec<uuid::Uuid>,
    ) -> BoxFuture<'_, Result<usize, RetrievalError>>;
    /// The `top_k` nearest chunks with score at least `score_threshold`.
    fn search(
        &self,
        vector: Vec<f32>,
        top_k: usize,
        score_threshold: Option<f32>,
    ) -> BoxFuture<'_, Result<Vec<Hit>, RetrievalError>>;
    /// Number of points in the collection.
    fn count(&self) -> BoxFuture<'_, Result<usize, RetrievalError>>;
    /// Builds the search index of what was written, now, if the collection
    /// is large enough to have one; `true` when anything was (re)indexed.
    /// The embedded store also does this by itself once writes settle; a
    /// Qdrant server indexes on its own, so the default does nothing.
    fn index(&self) -> BoxFuture<'_, Result<bool, RetrievalError>> {
        Box::pin(async { Ok(false) })
    }
}

/// Namespace of [`point_id`]. Changing it re-keys every stored point, so a
/// re-ingest would duplicate all content: never change it.
const POINT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d65_7368_6f70_732d_7265_7472_6965_7665);

/// The id of a chunk's point: UUID v5 of `chunk_id + "\n" + text`. Derived
/// from content so re-ingesting unchanged files rewrites the same points
/// instead of adding copies, and an edited chunk gets a new id (the old one is
/// then pruned). Qdrant accepts UUIDs as point ids, so a server store shares
/// these ids.
pub fn point_id(chunk: &Chunk) -> uuid::Uuid {
    let mut name = Vec::with_capacity(chunk.chunk_id.len() + 1 + chunk.text.len());
    name.extend_from_slice(chunk.chunk_id.as_bytes());
    name.push(b'\n');
    name.extend_from_slice(chunk.text.as_bytes());
    uuid::Uuid::new_v5(&POINT_ID_NAMESPACE, &name)
}

pub type SharedEmbedder = Arc<dyn Embedder>;
pub type SharedStore = Arc<dyn VectorStore>;

/// Builds the configured embedder (`[retrieval.embedder]`).
pub fn open_embedder(spec: &MeshSpec) -> Result<SharedEmbedder, RetrievalError> {
    let e = &spec.settings.retrieval.embedder;
    match e.provider {
        EmbedderProvider::Offline => return Ok(Arc::new(embed::OfflineEmbedder::new(e.dimension))),
        EmbedderProvider::Zero => return Ok(Arc::new(zero::ZeroEmbedder::new(e.dimension))),
        _ => {}
    }
    let name = e.model.as_deref().unwrap_or_default();
    let Some(profile) = spec.model(name) else {
        return Err(RetrievalError::Embed {
            embedder: e.provider.as_str().to_string(),
            message: format!("retrieval.embedder.model `{name}` is not a model profile"),
        });
    };
    Ok(Arc::new(embed::OpenAiEmbedder::new(name, profile, e.dimension, e.batch_size)?))
}

/// Opens the configured store (`retrieval.backend`) for the embedder's
/// dimension, creating the collection when it is missing.
pub async fn open_store(spec: &MeshSpec, dimension: usize) -> Result<SharedStore, RetrievalError> {
    let r = &spec.settings.retrieval;
    match r.backend {
        StoreBackend::Zero => Ok(Arc::new(zero::ZeroStore::new(r.collection.clone()))),
        StoreBackend::Edge => {
            let data_dir = spec.resolve(&r.data_dir);
            let collection = r.collection.clone();
            let index = r.index.clone();
            let store = tokio::task::spawn_blocking(move || {
                edge::EdgeStore::open(&data_dir, &collection, dimension, &index)
            })
            .await
            .map_err(|e| RetrievalError::Store {
                collection: r.collection.clone(),
                message: format!("opening the store failed: {e}"),
            })??;
            Ok(Arc::new(store))
        }
        StoreBackend::Qdrant => {
            let store_err =
                |message: String| RetrievalError::Store { collection: r.collection.clone(), message };
            let url = r.url.as_deref().ok_or_else(|| store_err("retrieval.url is not set".into()))?;
            let api_key = match &r.api_key_env {
                None => None,
                Some(env) => {
                    let var = crate::config::api_key_var(env);
                    match std::env::var(var) {
                        Ok(key) if !key.trim().is_empty() => Some(key.trim().to_string()),
                        _ => {
                            return Err(store_err(format!(
                                "environment variable `{var}` (named by retrieval.api_key_env) is not set"
                            )));
                        }
                    }
                }
            };
            let store = qdrant::QdrantStore::connect(url, api_key, &r.collection, dimension).await?;
            Ok(Arc::new(store))
        }
    }
}

/// The configured embedder and store.
pub async fn open(spec: &MeshSpec) -> Result<(SharedStore, SharedEmbedder), RetrievalError> {
    let embedder = open_embedder(spec)?;
    let store = open_store(spec, embedder.dimension()).await?;
    Ok((store, embedder))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(chunk_id: &str, text: &str) -> Chunk {
        Chunk { doc_id: "d".into(), chunk_id: chunk_id.into(), source: "d.md".into(), text: text.into() }
    }

    #[test]
    fn point_id_is_stable_and_content_derived() {
        let a = point_id(&chunk("d#0", "Hello."));
        assert_eq!(a, point_id(&chunk("d#0", "Hello.")));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, point_id(&chunk("d#0", "Hello!")));
        assert_ne!(a, point_id(&chunk("d#1", "Hello.")));
    }
}
