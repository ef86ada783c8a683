//! Zero-work retrieval (`backend = "zero"`, `embedder.provider = "zero"`):
//! a benchmark mode, not a store. The embedder returns a fixed unit vector
//! and the store answers every search at once with one fixed passage, so
//! `meshops bench` measures the mesh's own cost. Upserts are accepted and
//! dropped; the store reports one point so nothing ingests into it.

use futures::future::BoxFuture;

use super::{Embedder, Hit, RetrievalError, VectorStore};
use crate::retrieval::Chunk;

/// An embedder that does no work.
pub struct ZeroEmbedder {
    dimension: usize,
}

impl ZeroEmbedder {
    pub fn new(dimension: usize) -> Self {
        Self { dimension: dimension.max(1) }
    }
}

impl Embedder for ZeroEmbedder {
    fn name(&self) -> &str {
        "zero-work"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, RetrievalError>> {
        let c = 1.0 / (self.dimension as f32).sqrt();
        let out = texts.iter().map(|_| vec![c; self.dimension]).collect();
        Box::pin(async move { Ok(out) })
    }
}

/// A store that holds nothing and returns one fixed passage.
pub struct ZeroStore {
    collection: String,
}

impl ZeroStore {
    pub fn new(collection: impl Into<String>) -> Self {
        Self { collection: collection.into() }
    }
}

impl VectorStore for ZeroStore {
    fn backend(&self) -> &str {
        "zero"
    }

    fn collection(&self) -> &str {
        &self.collection
    }

    fn upsert(&self, points: Vec<(Chunk, Vec<f32>)>) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        let n = points.len();
        Box::pin(async move { Ok(n) })
    }

    fn prune_doc(&self, _: String, _: Vec<uuid::Uuid>) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        Box::pin(async { Ok(0) })
    }

    fn search(
        &self,
        _vector: Vec<f32>,
        top_k: usize,
        _score_threshold: Option<f32>,
    ) -> BoxFuture<'_, Result<Vec<Hit>, RetrievalError>> {
        let hits = (top_k > 0)
            .then(|| Hit {
                doc_id: "zero".into(),
                chunk_id: "zero#0".into(),
                source: "zero".into(),
                text: "A zero-work passage.".into(),
                score: 1.0,
            })
            .into_iter()
            .collect();
        Box::pin(async move { Ok(hits) })
    }

    fn count(&self) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        Box::pin(async { Ok(1) })
    }
}
