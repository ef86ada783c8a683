//! `meshops bench retrieval`: qdrant-edge search latency p50/p99 on
//! synthetic 384-dimension vectors (100,000 by default, `--points N`),
//! beside an exact brute-force scan of the same vectors in plain Rust; and
//! the ingest rate of the shipped corpus with the offline embedder, beside
//! the embedder alone on the same chunks.

use std::time::Instant;

use super::{BenchError, Options, Samples, TempDir, fail};
use crate::config::MeshSpec;
use crate::retrieval::chunk::ChunkOptions;
use crate::retrieval::edge::EdgeStore;
use crate::retrieval::embed::OfflineEmbedder;
use crate::retrieval::{Chunk, Embedder, VectorStore};

const DIMENSION: usize = 384;

/// A small deterministic generator (splitmix64), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A unit vector with components uniform in [-1, 1] before scaling.
    fn unit(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> =
            (0..DIMENSION).map(|_| (self.next() >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

/// Points per upsert call while loading the synthetic vectors.
const UPSERT_BATCH: usize = 1000;

/// The figures of `meshops bench retrieval`, measured in one run.
#[derive(Debug, Clone)]
pub struct RetrievalFigures {
    /// Synthetic unit vectors loaded and searched.
    pub points: usize,
    /// Their dimension.
    pub dimension: usize,
    /// Hits asked of each search.
    pub top_k: usize,
    /// Searches timed (after 10 untimed ones).
    pub queries: usize,
    /// Points per upsert call.
    pub upsert_batch: usize,
    /// Seconds to upsert all `points`.
    pub upsert_secs: f64,
    /// `points / upsert_secs`, points per second.
    pub upsert_points_per_s: f64,
    /// qdrant-edge search through the store's async API, median in µs.
    pub edge_p50_us: f64,
    /// qdrant-edge search, 99th percentile in µs.
    pub edge_p99_us: f64,
    /// Exact brute-force scan of the same vectors (plain Rust, one
    /// thread), median in µs: the comparison for `edge_p50_us`.
    pub scan_p50_us: f64,
    /// Exact scan, 99th percentile in µs.
    pub scan_p99_us: f64,
    /// Share of the exact top `top_k` that qdrant-edge found (0..1).
    pub recall: f64,
    /// Ingest: files of the copied corpus.
    pub ingest_files: usize,
    /// Ingest: chunks they made.
    pub ingest_chunks: usize,
    /// Ingest: seconds to chunk, embed (offline) and upsert them.
    pub ingest_secs: f64,
    /// `ingest_chunks / ingest_secs`, chunks per second.
    pub ingest_chunks_per_s: f64,
    /// The offline embedder alone on the same chunks, chunks per second:
    /// how much of ingest is embedding.
    pub embed_chunks_per_s: f64,
}

pub async fn run(spec: MeshSpec, opts: &Options) -> Result<RetrievalFigures, BenchError> {
    let n = opts.points.unwrap_or(if opts.quick { 5_000 } else { 100_000 }).max(10);
    let queries = if opts.quick { 50 } else { 500 };
    let top_k = 4;
    let dir = TempDir::new("retrieval")?;
    let data = dir.path().join("search");
    let store = tokio::task::spawn_blocking(move || EdgeStore::open(&data, "bench", DIMENSION))
        .await
        .map_err(|e| fail("open store", e))?
        .map_err(|e| fail("open store", e))?;
    let mut rng = Rng(42);
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| rng.unit()).collect();
    let t = Instant::now();
    for (b, batch) in vectors.chunks(UPSERT_BATCH).enumerate() {
        let points = batch
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let id = b * UPSERT_BATCH + i;
                let chunk = Chunk {
                    doc_id: format!("doc{}", id / 10),
                    chunk_id: format!("doc{}#{}", id / 10, id % 10),
                    source: "synthetic".into(),
                    text: format!("synthetic point {id}"),
                };
                (chunk, v.clone())
            })
            .collect();
        store.upsert(points).await.map_err(|e| fail("upsert", e))?;
    }
    let upsert_secs = t.elapsed().as_secs_f64();
    let qs: Vec<Vec<f32>> = (0..queries).map(|_| rng.unit()).collect();
    for q in qs.iter().take(10) {
        store.search(q.clone(), top_k, None).await.map_err(|e| fail("search", e))?;
    }
    let (mut edge, mut scan) = (Samples::with_capacity(queries), Samples::with_capacity(queries));
    let mut agree = 0usize;
    for q in &qs {
        let t = Instant::now();
        let hits = store.search(q.clone(), top_k, None).await.map_err(|e| fail("search", e))?;
        edge.push_since(t);
        let t = Instant::now();
        let exact = brute_force(&vectors, q, top_k);
        scan.push_since(t);
        agree += exact
            .iter()
            .filter(|&&i| hits.iter().any(|h| h.chunk_id == format!("doc{}#{}", i / 10, i % 10)))
            .count();
    }
    let (e50, e99, s50, s99) = (edge.pct(0.5), edge.pct(0.99), scan.pct(0.5), scan.pct(0.99));
    let recall = agree as f64 / (queries * top_k) as f64;
    drop(store);

    // Ingest: the shipped corpus, copied to get enough chunks to time.
    let copies = if opts.quick { 1 } else { 20 };
    let src = spec.resolve(std::path::Path::new("corpus"));
    let corpus = dir.path().join("corpus");
    for c in 0..copies {
        let to = corpus.join(format!("copy{c}"));
        std::fs::create_dir_all(&to).map_err(|e| fail(to.display().to_string(), e))?;
        let entries = std::fs::read_dir(&src).map_err(|e| fail(src.display().to_string(), e))?;
        for entry in entries.flatten() {
            let from = entry.path();
            if let Some(name) = from.file_name() {
                std::fs::copy(&from, to.join(name)).map_err(|e| fail(from.display().to_string(), e))?;
            }
        }
    }
    let data = dir.path().join("ingest");
    let store = tokio::task::spawn_blocking(move || EdgeStore::open(&data, "bench", DIMENSION))
        .await
        .map_err(|e| fail("open store", e))?
        .map_err(|e| fail("open store", e))?;
    let r = &spec.settings.retrieval;
    let opts = ChunkOptions { max_chars: r.chunk_max_chars, overlap_chars: r.chunk_overlap_chars };
    let embedder = OfflineEmbedder::new(DIMENSION);
    let t = Instant::now();
    let report = crate::retrieval::ingest::ingest_paths(
        std::slice::from_ref(&corpus),
        &opts,
        &embedder,
        &store,
        &|_, _| {},
    )
    .await
    .map_err(|e| fail("ingest", e))?;
    let ingest_secs = t.elapsed().as_secs_f64();
    // The embedder alone on the same chunks: how much of ingest it is.
    let files = crate::retrieval::ingest::collect_files(&[corpus]).map_err(|e| fail("ingest", e))?;
    let mut texts = Vec::new();
    for (path, doc_id) in &files {
        let text = std::fs::read_to_string(path).map_err(|e| fail(path.display().to_string(), e))?;
        let chunks =
            crate::retrieval::chunk::chunk_document(doc_id, &path.display().to_string(), &text, &opts);
        texts.extend(chunks.into_iter().map(|c| c.text));
    }
    let t = Instant::now();
    embedder.embed(&texts).await.map_err(|e| fail("embed", e))?;
    let embed_secs = t.elapsed().as_secs_f64();
    Ok(RetrievalFigures {
        points: n,
        dimension: DIMENSION,
        top_k,
        queries,
        upsert_batch: UPSERT_BATCH,
        upsert_secs,
        upsert_points_per_s: n as f64 / upsert_secs,
        edge_p50_us: e50,
        edge_p99_us: e99,
        scan_p50_us: s50,
        scan_p99_us: s99,
        recall,
        ingest_files: report.files,
        ingest_chunks: report.chunks,
        ingest_secs,
        ingest_chunks_per_s: report.chunks as f64 / ingest_secs,
        embed_chunks_per_s: texts.len() as f64 / embed_secs,
    })
}

/// Indices of the `k` vectors with the largest dot product with `q`.
fn brute_force(vectors: &[Vec<f32>], q: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (i, v) in vectors.iter().enumerate() {
        let s: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
        if best.len() < k || best.last().is_some_and(|&(w, _)| s > w) {
            best.push((s, i));
            best.sort_by(|a, b| b.0.total_cmp(&a.0));
            best.truncate(k);
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}
