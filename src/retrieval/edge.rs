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
//!
//! Indexing: qdrant-edge runs no optimizer by itself, so without help every
//! search would scan plain segments. Past `[retrieval.index]
//! indexing_threshold_kb` of vectors the store builds an HNSW graph
//! (`EdgeShard::optimize`): at the end of an ingest ([`VectorStore::index`]),
//! and in the background once writes have settled for `settle_secs` after
//! any write, on the blocking pool, off the request path. Searches go on
//! during a build (on the segments as they were); writes wait for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::lock::StoreLock;
use super::schema::{self, StaleSelector};
use super::{Chunk, Hit, RetrievalError, VectorStore, point_id};
use crate::config::{IndexSettings, Quantization};
use futures::future::BoxFuture;
use qdrant_edge::{
    CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfig, EdgeConfigBuilder,
    EdgeOptimizersConfig, EdgeShard, EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations, Filter,
    HasIdCondition, HnswIndexConfig, JsonPath, Match, NamedQuery, Payload, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStructPersisted,
    QuantizationConfig, QuantizationSearchParams, QueryEnum, ScalarQuantizationConfig, ScalarType,
    ScoredPoint, SearchParams, SearchRequest, UpdateOperation, VectorInternal, VectorStructPersisted,
    WithPayloadInterface,
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
    /// Serialises updates, flushes and index builds (see the module docs).
    writes: Mutex<()>,
    /// What every search asks of the index (`hnsw_ef`, quantization).
    search: SearchParams,
    /// Quiet time after a write before the background indexer runs.
    settle: Duration,
    /// When the store opened: the clock of `last_write_ms`.
    opened: Instant,
    /// Milliseconds after `opened` of the last write.
    last_write_ms: AtomicU64,
    /// Whether a background index build is scheduled or running.
    indexer: AtomicBool,
    /// Whether anything was written since the last build.
    dirty: AtomicBool,
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

    /// Builds the index of whatever segments need it, now, holding the
    /// write lock. `true` when anything was (re)built.
    fn build_index(&self) -> Result<bool, String> {
        let _guard = self.write_lock();
        self.dirty.store(false, Ordering::Release);
        let built = self.shard.optimize().map_err(|e| e.to_string())?;
        if built {
            self.shard.flush();
        }
        Ok(built)
    }

    /// Clears the indexer flag; `false` when a write came in while it was
    /// still set (that write scheduled no build of its own), in which case
    /// the flag is taken again and the indexer must go on.
    fn indexer_done(&self) -> bool {
        self.indexer.store(false, Ordering::Release);
        // Done unless there is new work and this call took the flag back.
        !self.dirty.load(Ordering::Acquire) || self.indexer.swap(true, Ordering::AcqRel)
    }

    fn since_opened_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes a write and makes sure a background build will follow it once
    /// writes settle.
    fn wrote(self: &Arc<Self>) {
        self.last_write_ms.store(self.since_opened_ms(), Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        self.schedule_index();
    }

    /// Starts the background indexer unless one is already scheduled. It
    /// holds only a weak reference while it waits, so a store that is
    /// dropped meanwhile closes (and lets go of its directory) as usual.
    fn schedule_index(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.indexer.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        runtime.spawn(background_index(weak, self.settle));
    }
}

/// Waits until writes have settled, builds the index, and repeats while
/// writes came in meanwhile.
async fn background_index(weak: Weak<Inner>, settle: Duration) {
    loop {
        tokio::time::sleep(settle).await;
        let Some(inner) = weak.upgrade() else { return };
        let quiet = inner.since_opened_ms().saturating_sub(inner.last_write_ms.load(Ordering::Acquire));
        if u128::from(quiet) < settle.as_millis() {
            continue;
        }
        // An ingest's own build may have covered every write already.
        if !inner.dirty.load(Ordering::Acquire) {
            if inner.indexer_done() {
                return;
            }
            continue;
        }
        let started = Instant::now();
        let build = Arc::clone(&inner);
        match tokio::task::spawn_blocking(move || build.build_index()).await {
            Ok(Ok(true)) => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "indexed the embedded collection for search"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "building the search index failed; searches scan"),
            Err(e) => tracing::warn!(error = %e, "the search index build stopped"),
        }
        if inner.indexer_done() {
            return;
        }
    }
}

/// Takes the collection's lock. A store this process has just dropped may
/// still be held for a moment by its background indexer (finishing a build
/// or its flush); that holder is waited for, briefly. Another process's
/// hold, or a store this process still has open, is refused.
fn acquire_lock(path: &Path) -> Result<StoreLock, RetrievalError> {
    const OWN_HOLD_WAIT: Duration = Duration::from_secs(10);
    let started = Instant::now();
    loop {
        match StoreLock::acquire(path) {
            Err(RetrievalError::Locked { holder: Some(pid), .. })
                if pid == std::process::id() && started.elapsed() < OWN_HOLD_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// qdrant-edge's HNSW, quantization and optimizer settings for `index`.
fn edge_index_config(
    index: &IndexSettings,
) -> (HnswIndexConfig, Option<QuantizationConfig>, EdgeOptimizersConfig) {
    let hnsw = HnswIndexConfig {
        m: index.m,
        ef_construct: index.ef_construct,
        // Qdrant's default: below this many KiB of candidates a filtered
        // search scans instead of walking the graph.
        full_scan_threshold: 10_000,
        // 0: as many threads as the machine has, up to Qdrant's limit.
        max_indexing_threads: 0,
        on_disk: Some(index.on_disk),
        payload_m: None,
        inline_storage: None,
    };
    let quantization = match index.quantization {
        Quantization::None => None,
        Quantization::Int8 => Some(QuantizationConfig::from(ScalarQuantizationConfig {
            r#type: ScalarType::Int8,
            quantile: Some(0.99),
            always_ram: Some(true),
        })),
    };
    let optimizers =
        EdgeOptimizersConfig { indexing_threshold: Some(index.indexing_threshold_kb), ..Default::default() };
    (hnsw, quantization, optimizers)
}

/// What each search asks: `hnsw_ef` candidates; with quantization, the
/// int8 scores narrow the candidates and the f32 vectors rescore twice the
/// hits asked.
fn search_params(index: &IndexSettings) -> SearchParams {
    SearchParams {
        hnsw_ef: Some(index.hnsw_ef),
        quantization: (index.quantization != Quantization::None).then_some(QuantizationSearchParams {
            ignore: false,
            rescore: Some(true),
            oversampling: Some(2.0),
        }),
        ..SearchParams::default()
    }
}

/// `config` with the index settings `index` asks for; `None` when it has them.
fn with_index(config: &EdgeConfig, index: &IndexSettings) -> Option<EdgeConfig> {
    let (hnsw, quantization, optimizers) = edge_index_config(index);
    if config.hnsw_config == hnsw
        && config.quantization_config == quantization
        && config.optimizers == optimizers
    {
        return None;
    }
    let mut changed = config.clone();
    changed.hnsw_config = hnsw;
    changed.quantization_config = quantization;
    changed.optimizers = optimizers;
    Some(changed)
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
    /// creating it (with a keyword index on `doc_id`) when absent, with the
    /// index settings `index` (an existing shard takes them on, and its
    /// index is rebuilt in the background when they changed). An existing
    /// shard whose vector size is not `dimension` is a
    /// [`RetrievalError::Dimension`]: its vectors came from another embedder
    /// and would not compare.
    pub fn open(
        data_dir: &Path,
        collection: &str,
        dimension: usize,
        index: &IndexSettings,
    ) -> Result<EdgeStore, RetrievalError> {
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
        let lock = acquire_lock(&path)?;
        let exists = path.join("edge_config.json").is_file() || path.join("segments").is_dir();
        let shard = if exists {
            let saved = EdgeConfig::load(&path)
                .transpose()
                .map_err(|e| err(format!("cannot read the shard config at {}: {e}", path.display())))?;
            let wanted = saved.as_ref().and_then(|c| with_index(c, index));
            let shard = EdgeShard::load(&path, wanted)
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
            let (hnsw, quantization, optimizers) = edge_index_config(index);
            let mut config = EdgeConfigBuilder::new()
                .vector(
                    DEFAULT_VECTOR_NAME,
                    EdgeVectorParamsBuilder::new(dimension, Distance::Cosine).on_disk(index.on_disk).build(),
                )
                .hnsw_config(hnsw)
                .optimizers(optimizers)
                .build();
            config.quantization_config = quantization;
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
        let inner = Arc::new(Inner {
            shard,
            writes: Mutex::new(()),
            search: search_params(index),
            settle: Duration::from_secs_f64(index.settle_secs),
            opened: Instant::now(),
            last_write_ms: AtomicU64::new(0),
            indexer: AtomicBool::new(false),
            dirty: AtomicBool::new(exists),
            _lock: lock,
        });
        // Data written by an earlier run, or under other index settings,
        // may need a build: the background indexer finds out.
        if exists {
            inner.schedule_index();
        }
        Ok(EdgeStore { inner, collection: collection.to_string(), dimension, path })
    }

    /// The shard directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The vector length this collection stores.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Vectors in HNSW-indexed segments; the rest are searched by a scan.
    pub fn indexed_vectors(&self) -> usize {
        self.inner.shard.info().indexed_vectors_count
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
        F: FnOnce(&Arc<Inner>) -> Result<T, String> + Send + 'static,
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
            inner.wrote();
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
                inner.wrote();
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
        self.search_with_ef(vector, top_k, score_threshold, None)
    }

    fn count(&self) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        self.run("count", |inner| {
            inner.shard.count(CountRequest { filter: None, exact: true }).map_err(|e| e.to_string())
        })
    }

    fn index(&self) -> BoxFuture<'_, Result<bool, RetrievalError>> {
        self.run("index", |inner| inner.build_index())
    }
}

impl EdgeStore {
    /// [`VectorStore::search`] walking the graph with `hnsw_ef` candidates
    /// instead of the configured `[retrieval.index] hnsw_ef` (either raised
    /// to `top_k`): the recall/latency trade of one index, without a
    /// rebuild (`bench retrieval` measures it).
    pub fn search_with_ef(
        &self,
        vector: Vec<f32>,
        top_k: usize,
        score_threshold: Option<f32>,
        hnsw_ef: Option<usize>,
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
                params: Some(SearchParams {
                    hnsw_ef: hnsw_ef.or(inner.search.hnsw_ef).map(|ef| ef.max(top_k)),
                    ..inner.search
                }),
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
            let store = EdgeStore::open(dir.path(), "docs", 64, &IndexSettings::default()).unwrap();
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
        let reopened = EdgeStore::open(dir.path(), "docs", 64, &IndexSettings::default()).unwrap();
        assert_eq!(reopened.count().await.unwrap(), 3);
        assert!(dir.path().join("collections/docs").is_dir());
    }

    #[tokio::test]
    async fn prune_removes_only_stale_points_of_the_doc() {
        let dir = tempfile::tempdir().unwrap();
        let e = OfflineEmbedder::new(32);
        let store = EdgeStore::open(dir.path(), "c", 32, &IndexSettings::default()).unwrap();
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
        let reopened = EdgeStore::open(dir.path(), "c", 32, &IndexSettings::default()).unwrap();
        assert_eq!(reopened.count().await.unwrap(), 1);
    }

    /// `n` random unit points of dimension `dim` (splitmix64), as chunks.
    fn random_points(n: usize, dim: usize, seed: u64) -> Vec<(Chunk, Vec<f32>)> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        (0..n)
            .map(|i| {
                let mut v: Vec<f32> = (0..dim).map(|_| next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                (chunk("p", i, &format!("point {i}")), v)
            })
            .collect()
    }

    /// The chunk ids of the `k` points nearest `q` by an exact scan.
    fn exact(points: &[(Chunk, Vec<f32>)], q: &[f32], k: usize) -> Vec<String> {
        let mut scored: Vec<(f32, &str)> = points
            .iter()
            .map(|(c, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), c.chunk_id.as_str()))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(k).map(|(_, id)| id.to_string()).collect()
    }

    /// Share of the exact top 10 the store finds, over `queries`.
    async fn recall(store: &EdgeStore, points: &[(Chunk, Vec<f32>)], queries: &[(Chunk, Vec<f32>)]) -> f64 {
        let mut found = 0;
        for (_, q) in queries {
            let hits = store.search(q.clone(), 10, None).await.unwrap();
            let truth = exact(points, q, 10);
            found += hits.iter().filter(|h| truth.contains(&h.chunk_id)).count();
        }
        found as f64 / (queries.len() * 10) as f64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_collection_is_indexed_by_ingest_and_finds_the_exact_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        // 64-d vectors are 0.25 KiB each: past 16 KiB (64 vectors) a
        // segment is indexed. The background indexer waits an hour here.
        let index =
            IndexSettings { indexing_threshold_kb: 16, settle_secs: 3600.0, ..IndexSettings::default() };
        let points = random_points(2000, 64, 7);
        let queries = random_points(20, 64, 99);
        {
            let store = EdgeStore::open(dir.path(), "big", 64, &index).unwrap();
            store.upsert(points.clone()).await.unwrap();
            assert_eq!(store.indexed_vectors(), 0, "nothing is indexed before a build");
            assert!(store.index().await.unwrap(), "a build ran");
            assert_eq!(store.indexed_vectors(), 2000);
            assert!(!store.index().await.unwrap(), "nothing left to build");
            let r = recall(&store, &points, &queries).await;
            assert!(r >= 0.95, "recall@10 {r}");
        }
        let reopened = EdgeStore::open(dir.path(), "big", 64, &index).unwrap();
        assert_eq!(reopened.indexed_vectors(), 2000, "the index is kept on disk");
        assert_eq!(reopened.count().await.unwrap(), 2000);
        let r = recall(&reopened, &points, &queries).await;
        assert!(r >= 0.95, "recall@10 after reopening {r}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_indexed_in_the_background_once_they_settle() {
        let dir = tempfile::tempdir().unwrap();
        let index = IndexSettings {
            indexing_threshold_kb: 16,
            settle_secs: 0.2,
            quantization: Quantization::Int8,
            ..IndexSettings::default()
        };
        let points = random_points(1500, 64, 3);
        let store = EdgeStore::open(dir.path(), "bg", 64, &index).unwrap();
        for batch in points.chunks(500) {
            store.upsert(batch.to_vec()).await.unwrap();
        }
        // No one asks for a build: the store starts one once writes stop.
        let deadline = Instant::now() + Duration::from_secs(120);
        while store.indexed_vectors() < 1500 {
            assert!(Instant::now() < deadline, "not indexed: {} of 1500", store.indexed_vectors());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let queries = random_points(20, 64, 5);
        let r = recall(&store, &points, &queries).await;
        assert!(r >= 0.9, "recall@10 with int8 quantization and rescoring {r}");
        // The indexer flushes after the build and then lets go of the
        // shard; until it has, the store's lock is (rightly) still held.
        while Arc::strong_count(&store.inner) > 1 {
            assert!(Instant::now() < deadline, "the background indexer never let go of the store");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Changed settings are taken on by an existing shard and rebuilt.
        drop(store);
        let wider = IndexSettings { m: 32, settle_secs: 3600.0, ..index };
        let store = EdgeStore::open(dir.path(), "bg", 64, &wider).unwrap();
        assert!(store.index().await.unwrap(), "a config change rebuilds the index");
        assert_eq!(store.indexed_vectors(), 1500);
    }

    #[tokio::test]
    async fn bad_input_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EdgeStore::open(dir.path(), "c", 8, &IndexSettings::default()).unwrap();
            let err = store.upsert(vec![(chunk("a", 0, "x"), vec![0.5; 7])]).await.unwrap_err();
            assert!(matches!(err, RetrievalError::Dimension { store: 8, embedder: 7, .. }), "{err}");
            let err = store.upsert(vec![(chunk("a", 0, "x"), vec![f32::NAN; 8])]).await.unwrap_err();
            assert!(err.to_string().contains("non-finite"), "{err}");
            let err = store.search(vec![1.0; 3], 3, None).await.unwrap_err();
            assert!(matches!(err, RetrievalError::Dimension { .. }), "{err}");
            assert!(store.search(vec![1.0; 8], 0, None).await.unwrap().is_empty());
            assert_eq!(store.upsert(Vec::new()).await.unwrap(), 0);
        }
        let err = EdgeStore::open(dir.path(), "c", 16, &IndexSettings::default()).unwrap_err();
        assert!(matches!(err, RetrievalError::Dimension { store: 8, embedder: 16, .. }), "{err}");
        for name in ["", "..", "a/b", "x y"] {
            let err = EdgeStore::open(dir.path(), name, 8, &IndexSettings::default()).unwrap_err();
            assert!(err.to_string().contains("invalid collection name"), "{name:?}: {err}");
        }
        assert!(EdgeStore::open(dir.path(), "zero", 0, &IndexSettings::default()).is_err());
    }
}
