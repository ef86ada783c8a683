//! The embedded vector store: qdrant-edge, persisted under `data_dir`.
//!
//! One collection is one edge shard in `data_dir/collections/<collection>`,
//! with one unnamed cosine vector and the payload schema a Qdrant server
//! collection uses too (`doc_id`, `chunk_id`, `source`, `text`).
//!
//! qdrant-edge is synchronous and does disk I/O, so every call runs on
//! tokio's blocking pool, holding an `Arc` of the shard. Its `flush` panics
//! when the WAL or segment lock is taken, so all writes and flushes go
//! through one mutex. `EdgeShard::load` does not replay its WAL, so every
//! write is flushed before it is reported done: a process that reopens the
//! directory sees it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::lock::StoreLock;
use super::schema::{self, StaleSelector};
use super::{Chunk, Hit, RetrievalError, VectorStore, point_id};
use futures::future::BoxFuture;
use qdrant_edge::{
    CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations, Filter, HasIdCondition, JsonPath, Match,
    NamedQuery, Payload, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStructPersisted, QueryEnum, ScoredPoint, SearchRequest, UpdateOperation,
    VectorInternal, VectorStructPersisted, WithPayloadInterface,
};

/// A collection in an embedded qdrant-edge shard.
pub struct EdgeStore {
    inner: Arc<Inner>,
    collection: String,
    dimension: usize,
    path: PathBuf,
}

struct Inner {
    shard: EdgeShard,
    /// Serialises updates and flushes (see the module docs).
    writes: Mutex<()>,
    /// Held while the shard is (see [`super::lock`]); declared after it, so
    /// it is let go only once the shard has closed, even when a blocking
    /// task outlives the `EdgeStore`.
    _lock: StoreLock,
}

impl Inner {
    fn write_lock(&self) -> MutexGuard<'_, ()> {
        // The guarded value is `()`: a panic while holding it leaves nothing
        // inconsistent on our side, so a poisoned lock is still usable.
        self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("collection", &self.collection)
            .field("dimension", &self.dimension)
            .field("path", &self.path)
            .finish()
    }
}

impl EdgeStore {
    /// Opens the collection's shard under `data_dir/collections/<collection>`,
    /// creating it (with a keyword index on `doc_id`) when absent. An existing
    /// shard whose vector size is not `dimension` is a
    /// [`RetrievalError::Dimension`]: its vectors came from another embedder
    /// and would not compare.
    pub fn open(data_dir: &Path, collection: &str, dimension: usize) -> Result<EdgeStore, RetrievalError> {
        let err = |message: String| RetrievalError::Store { collection: collection.to_string(), message };
        // The name becomes a directory: refuse anything that could escape
        // `collections/` or that the filesystem would treat specially.
        schema::check_collection_name(collection)?;
        if dimension == 0 {
            return Err(err("vector dimension must be at least 1".into()));
        }
        let path = data_dir.join("collections").join(collection);
        // Before the shard: a second opener is told who holds it, instead
        // of failing inside qdrant-edge's WAL.
        let lock = StoreLock::acquire(&path)?;
        let exists = path.join("edge_config.json").is_file() || path.join("segments").is_dir();
        let shard = if exists {
            let shard = EdgeShard::load(&path, None)
                .map_err(|e| err(format!("cannot load shard at {}: {e}", path.display())))?;
            let params = shard.config().vectors.get(DEFAULT_VECTOR_NAME).cloned();
            let Some(params) = params else {
                return Err(err(format!("shard at {} has no unnamed dense vector", path.display())));
            };
            if params.size != dimension {
                return Err(RetrievalError::Dimension {
                    collection: collection.to_string(),
                    store: params.size,
                    embedder: dimension,
                });
            }
            if params.distance != Distance::Cosine {
                return Err(err(format!(
                    "shard at {} uses {:?} distance, meshops needs Cosine",
                    path.display(),
                    params.distance
                )));
            }
            shard
        } else {
            std::fs::create_dir_all(&path)
                .map_err(|source| RetrievalError::Io { path: path.display().to_string(), source })?;
            let config = EdgeConfigBuilder::new()
                .vector(
                    DEFAULT_VECTOR_NAME,
                    EdgeVectorParamsBuilder::new(dimension, Distance::Cosine).build(),
                )
                .build();
            let shard = EdgeShard::new(&path, config)
                .map_err(|e| err(format!("cannot create shard at {}: {e}", path.display())))?;
            for field in schema::KEYWORD_INDEXES {
                let field_name: JsonPath =
                    field.parse().map_err(|()| err(format!("invalid payload path {field}")))?;
                shard
                    .update(UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(
                        CreateIndex {
                            field_name,
                            field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
                        },
                    )))
                    .map_err(|e| err(format!("cannot index {field}: {e}")))?;
            }
            shard.flush();
            shard
        };
        Ok(EdgeStore {
            inner: Arc::new(Inner { shard, writes: Mutex::new(()), _lock: lock }),
            collection: collection.to_string(),
            dimension,
            path,
        })
    }

    /// The shard directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The vector length this collection stores.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Writes the WAL and segments to disk. Writes through [`VectorStore`]
    /// already flush; this is for callers that want a sync point anyway.
    pub fn flush(&self) {
        let _guard = self.inner.write_lock();
        self.inner.shard.flush();
    }

    fn error(&self, message: impl Into<String>) -> RetrievalError {
        RetrievalError::Store { collection: self.collection.clone(), message: message.into() }
    }

    fn check_vector(&self, v: &[f32]) -> Result<(), RetrievalError> {
        schema::check_vector(&self.collection, self.dimension, v)
    }

    /// Runs `f` on the shard on the blocking pool; errors name the collection.
    fn run<T, F>(&self, what: &'static str, f: F) -> BoxFuture<'_, Result<T, RetrievalError>>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, String> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&inner))
                .await
                .map_err(|e| self.error(format!("{what} task failed: {e}")))?
                .map_err(|e| self.error(format!("{what}: {e}")))
        })
    }
}

/// The schema's payload as qdrant-edge's type.
fn payload_of(chunk: Chunk) -> Payload {
    Payload(schema::payload(chunk))
}

/// A search result back as a [`Hit`] (see [`schema::hit`]).
fn hit_of(point: ScoredPoint) -> Hit {
    let payload = point.payload.map(|p| p.0).unwrap_or_default();
    schema::hit(&payload, point.score)
}

/// The schema's stale-point selector as a qdrant-edge filter.
fn stale_filter(selector: StaleSelector) -> Result<Filter, String> {
    let key: JsonPath =
        schema::DOC_ID.parse().map_err(|()| format!("invalid payload path {}", schema::DOC_ID))?;
    let mut filter = Filter::new_must(qdrant_edge::Condition::Field(FieldCondition::new_match(
        key,
        Match::from(selector.doc_id),
    )));
    if !selector.keep.is_empty() {
        let keep: HasIdCondition = selector.keep.into_iter().map(PointId::Uuid).collect();
        filter.must_not = Some(vec![qdrant_edge::Condition::HasId(keep)]);
    }
    Ok(filter)
}

impl VectorStore for EdgeStore {
    fn backend(&self) -> &str {
        "edge"
    }

    fn collection(&self) -> &str {
        &self.collection
    }

    fn upsert(&self, points: Vec<(Chunk, Vec<f32>)>) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        let checked = points.iter().try_for_each(|(_, v)| self.check_vector(v));
        if let Err(e) = checked {
            return Box::pin(async move { Err(e) });
        }
        let n = points.len();
        if n == 0 {
            return Box::pin(async { Ok(0) });
        }
        let structs: Vec<PointStructPersisted> = points
            .into_iter()
            .map(|(chunk, vector)| PointStructPersisted {
                id: PointId::Uuid(point_id(&chunk)),
                vector: VectorStructPersisted::Single(vector),
                payload: Some(payload_of(chunk)),
            })
            .collect();
        self.run("upsert", move |inner| {
            let _guard = inner.write_lock();
            inner
                .shard
                .update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                    PointInsertOperations::PointsList(structs),
                )))
                .map_err(|e| e.to_string())?;
            inner.shard.flush();
            Ok(n)
        })
    }

    fn prune_doc(
        &self,
        doc_id: String,
        keep: Vec<uuid::Uuid>,
    ) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        self.run("prune", move |inner| {
            let filter = stale_filter(StaleSelector { doc_id, keep })?;
            let _guard = inner.write_lock();
            // Count first (under the write lock, so nothing changes between
            // count and delete): the delete operation does not report it.
            let stale = inner
                .shard
                .count(CountRequest { filter: Some(filter.clone()), exact: true })
                .map_err(|e| e.to_string())?;
            if stale > 0 {
                inner
                    .shard
                    .update(UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter)))
                    .map_err(|e| e.to_string())?;
                inner.shard.flush();
            }
            Ok(stale)
        })
    }

    fn search(
        &self,
        vector: Vec<f32>,
        top_k: usize,
        score_threshold: Option<f32>,
    ) -> BoxFuture<'_, Result<Vec<Hit>, RetrievalError>> {
        if let Err(e) = self.check_vector(&vector) {
            return Box::pin(async move { Err(e) });
        }
        if top_k == 0 {
            return Box::pin(async { Ok(Vec::new()) });
        }
        self.run("search", move |inner| {
            let request = SearchRequest {
                query: QueryEnum::Nearest(NamedQuery { query: VectorInternal::Dense(vector), using: None }),
                filter: None,
                params: None,
                limit: top_k,
                offset: 0,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: None,
                score_threshold,
            };
            let points = inner.shard.search(request).map_err(|e| e.to_string())?;
            Ok(points.into_iter().map(hit_of).collect())
        })
    }

    fn count(&self) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        self.run("count", |inner| {
            inner.shard.count(CountRequest { filter: None, exact: true }).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::embed::OfflineEmbedder;

    fn chunk(doc: &str, n: usize, text: &str) -> Chunk {
        Chunk {
            doc_id: doc.into(),
            chunk_id: format!("{doc}#{n}"),
            source: format!("{doc}.md"),
            text: text.into(),
        }
    }

    fn points(e: &OfflineEmbedder, chunks: &[Chunk]) -> Vec<(Chunk, Vec<f32>)> {
        chunks.iter().map(|c| (c.clone(), e.embed_text(&c.text))).collect()
    }

    #[tokio::test]
    async fn upsert_search_count_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let e = OfflineEmbedder::new(64);
        let chunks = vec![
            chunk("gateway", 0, "The gateway retries failed requests three times."),
            chunk("agents", 0, "Agents are actix actors that exchange messages."),
            chunk("store", 0, "Vectors live in an embedded qdrant-edge shard."),
        ];
        {
            let store = EdgeStore::open(dir.path(), "docs", 64).unwrap();
            assert_eq!(store.backend(), "edge");
            assert_eq!(store.collection(), "docs");
            assert_eq!(store.count().await.unwrap(), 0);
            assert_eq!(store.upsert(points(&e, &chunks)).await.unwrap(), 3);
            // Same content again: same ids, no duplicates.
            assert_eq!(store.upsert(points(&e, &chunks)).await.unwrap(), 3);
            assert_eq!(store.count().await.unwrap(), 3);
            let hits =
                store.search(e.embed_text("how often are failed requests retried"), 2, None).await.unwrap();
            assert_eq!(hits.len(), 2);
            assert_eq!(hits[0].doc_id, "gateway");
            assert_eq!(hits[0].chunk_id, "gateway#0");
            assert_eq!(hits[0].source, "gateway.md");
            assert_eq!(hits[0].text, chunks[0].text);
            assert!(hits[0].score >= hits[1].score);
            let none = store.search(e.embed_text("gateway retries"), 5, Some(1.01)).await.unwrap();
            assert!(none.is_empty());
        }
        let reopened = EdgeStore::open(dir.path(), "docs", 64).unwrap();
        assert_eq!(reopened.count().await.unwrap(), 3);
        assert!(dir.path().join("collections/docs").is_dir());
    }

    #[tokio::test]
    async fn prune_removes_only_stale_points_of_the_doc() {
        let dir = tempfile::tempdir().unwrap();
        let e = OfflineEmbedder::new(32);
        let store = EdgeStore::open(dir.path(), "c", 32).unwrap();
        let old = vec![chunk("a", 0, "one"), chunk("a", 1, "two"), chunk("b", 0, "three")];
        store.upsert(points(&e, &old)).await.unwrap();
        // Document a edited: chunk 0 changed text, chunk 1 is gone.
        let new = vec![chunk("a", 0, "one, edited")];
        store.upsert(points(&e, &new)).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 4);
        let pruned = store.prune_doc("a".into(), vec![point_id(&new[0])]).await.unwrap();
        assert_eq!(pruned, 2);
        assert_eq!(store.count().await.unwrap(), 2);
        // Nothing left to prune; b untouched.
        assert_eq!(store.prune_doc("a".into(), vec![point_id(&new[0])]).await.unwrap(), 0);
        // Empty keep removes the whole document.
        assert_eq!(store.prune_doc("b".into(), Vec::new()).await.unwrap(), 1);
        let hits = store.search(e.embed_text("one edited"), 10, None).await.unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].text, "one, edited");
        drop(store);
        let reopened = EdgeStore::open(dir.path(), "c", 32).unwrap();
        assert_eq!(reopened.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn bad_input_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EdgeStore::open(dir.path(), "c", 8).unwrap();
            let err = store.upsert(vec![(chunk("a", 0, "x"), vec![0.5; 7])]).await.unwrap_err();
            assert!(matches!(err, RetrievalError::Dimension { store: 8, embedder: 7, .. }), "{err}");
            let err = store.upsert(vec![(chunk("a", 0, "x"), vec![f32::NAN; 8])]).await.unwrap_err();
            assert!(err.to_string().contains("non-finite"), "{err}");
            let err = store.search(vec![1.0; 3], 3, None).await.unwrap_err();
            assert!(matches!(err, RetrievalError::Dimension { .. }), "{err}");
            assert!(store.search(vec![1.0; 8], 0, None).await.unwrap().is_empty());
            assert_eq!(store.upsert(Vec::new()).await.unwrap(), 0);
        }
        let err = EdgeStore::open(dir.path(), "c", 16).unwrap_err();
        assert!(matches!(err, RetrievalError::Dimension { store: 8, embedder: 16, .. }), "{err}");
        for name in ["", "..", "a/b", "x y"] {
            let err = EdgeStore::open(dir.path(), name, 8).unwrap_err();
            assert!(err.to_string().contains("invalid collection name"), "{name:?}: {err}");
        }
        assert!(EdgeStore::open(dir.path(), "zero", 0).is_err());
    }
}
