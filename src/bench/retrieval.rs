//! `meshops bench retrieval`: qdrant-edge on synthetic 384-dimension unit
//! vectors (100,000 by default, `--points N`): upsert rate, the time to
//! build the HNSW index (`[retrieval.index]` settings), search latency
//! p50/p99 before and after the build, beside an exact brute-force scan of
//! the same vectors in plain Rust, and the indexed search's recall@10 and
//! recall@4 against that scan; then the ingest rate of the shipped corpus
//! with the offline embedder, beside the embedder alone on the same chunks.
//!
//! Two data sets, each loaded into its own store: embedding-like vectors
//! (the target's figure: like text embeddings they lie near a space of few
//! dimensions, here 32, plus noise) and vectors uniform on the sphere, the
//! hard case for a graph index (every neighbour nearly as far as the next),
//! at the same settings. `--data embedding-like|uniform` runs one of them
//! (at a million points each takes a good part of an hour on two cores).

use std::time::Instant;

use super::{BenchError, Options, Samples, TempDir, fail};
use crate::config::{IndexSettings, MeshSpec};
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

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn gauss(&mut self) -> f32 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// A unit vector with components uniform in [-1, 1] before scaling.
    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIMENSION).map(|_| self.uniform() as f32 * 2.0 - 1.0).collect();
        normalized(v)
    }
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Latent dimensions of the embedding-like vectors.
const LATENT: usize = 32;
/// Noise beside the latent signal, per component (the signal's is ~1).
const NOISE: f32 = 0.3;

/// The synthetic vectors a run searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// Like text embeddings: a fixed random linear map of a 32-dimensional
    /// gaussian, plus 30 % isotropic noise, normalised. Real embeddings
    /// also lie near a space of far fewer dimensions than their length.
    EmbeddingLike,
    /// Uniform on the sphere in all 384 dimensions: every neighbour nearly
    /// as far as the next, the hard case for any graph index.
    Uniform,
}

impl Data {
    pub fn label(self) -> &'static str {
        match self {
            Data::EmbeddingLike => "embedding-like (32 latent dims + 30 % noise)",
            Data::Uniform => "uniform on the sphere",
        }
    }

    fn dir_name(self) -> &'static str {
        match self {
            Data::EmbeddingLike => "embedding",
            Data::Uniform => "uniform",
        }
    }
}

/// Draws vectors of one [`Data`] kind.
struct Source {
    data: Data,
    rng: Rng,
    /// The latent → 384 map (rows of `LATENT`), for `EmbeddingLike`.
    map: Vec<[f32; LATENT]>,
}

impl Source {
    fn new(data: Data, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let scale = 1.0 / (LATENT as f32).sqrt();
        let map = match data {
            Data::EmbeddingLike => {
                (0..DIMENSION).map(|_| std::array::from_fn(|_| rng.gauss() * scale)).collect()
            }
            Data::Uniform => Vec::new(),
        };
        Source { data, rng, map }
    }

    fn draw(&mut self) -> Vec<f32> {
        match self.data {
            Data::Uniform => self.rng.unit(),
            Data::EmbeddingLike => {
                let z: [f32; LATENT] = std::array::from_fn(|_| self.rng.gauss());
                let v = self
                    .map
                    .iter()
                    .map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + NOISE * self.rng.gauss())
                    .collect();
                normalized(v)
            }
        }
    }
}

/// Points per upsert call while loading the synthetic vectors.
const UPSERT_BATCH: usize = 1000;

/// One data set loaded, indexed and searched.
#[derive(Debug, Clone)]
pub struct SearchRun {
    pub data: Data,
    /// Seconds to upsert all the points.
    pub upsert_secs: f64,
    /// Points per second upserted.
    pub upsert_points_per_s: f64,
    /// Seconds to build the index of all the points (`EdgeStore::index`).
    pub index_secs: f64,
    /// Vectors in indexed segments after the build.
    pub indexed_vectors: usize,
    /// qdrant-edge search before the build (plain segments, what every
    /// search did before indexing), median in µs.
    pub plain_p50_us: f64,
    /// The same, 99th percentile in µs.
    pub plain_p99_us: f64,
    /// qdrant-edge search on the index, through the store's async API,
    /// median in µs.
    pub edge_p50_us: f64,
    /// Indexed search, 99th percentile in µs.
    pub edge_p99_us: f64,
    /// Exact brute-force scan of the same vectors (plain Rust, one
    /// thread), median in µs: the comparison for `edge_p50_us`.
    pub scan_p50_us: f64,
    /// Exact scan, 99th percentile in µs.
    pub scan_p99_us: f64,
    /// Share of the exact top `top_k` the indexed search found (0..1).
    pub recall: f64,
    /// Share of the exact top 4 among the indexed search's first 4.
    pub recall_at_4: f64,
    /// The same index searched with wider beams (`hnsw_ef` ×2 and ×4 the
    /// configured one): what recall more latency buys, without a rebuild.
    pub wider: Vec<EfRun>,
}

/// Indexed searches at one `hnsw_ef`.
#[derive(Debug, Clone)]
pub struct EfRun {
    pub hnsw_ef: usize,
    /// Median latency in µs.
    pub p50_us: f64,
    /// 99th percentile latency in µs.
    pub p99_us: f64,
    /// Recall@top_k against the exact scan.
    pub recall: f64,
    /// Recall@4 against the exact scan.
    pub recall_at_4: f64,
}

/// The figures of `meshops bench retrieval`, measured in one run.
#[derive(Debug, Clone)]
pub struct RetrievalFigures {
    /// Synthetic unit vectors loaded and searched, per data set.
    pub points: usize,
    /// Their dimension.
    pub dimension: usize,
    /// Hits asked of each search (recall is counted at this depth and at 4).
    pub top_k: usize,
    /// Searches timed per figure (after 10 untimed ones).
    pub queries: usize,
    /// Points per upsert call.
    pub upsert_batch: usize,
    /// The index settings searched with (`[retrieval.index]`).
    pub index: IndexSettings,
    /// One run per data set asked for (`--data`; both by default):
    /// embedding-like vectors, the target's figure, then uniform ones, the
    /// hard case at the same settings.
    pub runs: Vec<SearchRun>,
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

/// The chunk id the bench gives synthetic point `i`.
fn chunk_id(i: usize) -> String {
    format!("doc{}#{}", i / 10, i % 10)
}

/// Timed searches of `qs`: latency samples and, per query, the chunk ids
/// found in order.
async fn timed_searches(
    store: &EdgeStore,
    qs: &[Vec<f32>],
    top_k: usize,
    hnsw_ef: Option<usize>,
) -> Result<(Samples, Vec<Vec<String>>), BenchError> {
    for q in qs.iter().take(10) {
        store.search_with_ef(q.clone(), top_k, None, hnsw_ef).await.map_err(|e| fail("search", e))?;
    }
    let mut samples = Samples::with_capacity(qs.len());
    let mut found = Vec::with_capacity(qs.len());
    for q in qs {
        let t = Instant::now();
        let hits =
            store.search_with_ef(q.clone(), top_k, None, hnsw_ef).await.map_err(|e| fail("search", e))?;
        samples.push_since(t);
        found.push(hits.into_iter().map(|h| h.chunk_id).collect());
    }
    Ok((samples, found))
}

/// Share of `exact`'s first `k` among `found`'s first `k`, over all queries.
fn recall_at(found: &[Vec<String>], exact: &[Vec<usize>], k: usize) -> f64 {
    let mut hits = 0usize;
    for (f, e) in found.iter().zip(exact) {
        let truth: Vec<String> = e.iter().take(k).map(|&i| chunk_id(i)).collect();
        hits += f.iter().take(k).filter(|id| truth.contains(id)).count();
    }
    hits as f64 / (found.len() * k).max(1) as f64
}

pub async fn run(spec: MeshSpec, opts: &Options) -> Result<RetrievalFigures, BenchError> {
    let n = opts.points.unwrap_or(if opts.quick { 5_000 } else { 100_000 }).max(10);
    let queries = if opts.quick {
        50
    } else if n > 200_000 {
        200
    } else {
        500
    };
    let top_k = 10;
    let dir = TempDir::new("retrieval")?;
    // The configured index settings; the bench builds the index itself, so
    // the background indexer waits longer than the run.
    let index = IndexSettings { settle_secs: 3600.0, ..spec.settings.retrieval.index.clone() };
    let shape = Shape { n, queries, top_k };
    let mut runs = Vec::new();
    for data in [Data::EmbeddingLike, Data::Uniform] {
        if opts.data.is_none_or(|only| only == data) {
            let path = dir.path().join(data.dir_name());
            runs.push(search_run(&path, data, &index, shape).await?);
            // The next set is loaded into a fresh store: let this one's
            // files go first (at 1M points they are gigabytes).
            std::fs::remove_dir_all(&path).map_err(|e| fail(path.display().to_string(), e))?;
        }
    }

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
    let ingest_index = index.clone();
    let store =
        tokio::task::spawn_blocking(move || EdgeStore::open(&data, "bench", DIMENSION, &ingest_index))
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
        index,
        runs,
        ingest_files: report.files,
        ingest_chunks: report.chunks,
        ingest_secs,
        ingest_chunks_per_s: report.chunks as f64 / ingest_secs,
        embed_chunks_per_s: texts.len() as f64 / embed_secs,
    })
}

/// How many points, queries and hits a search run has.
#[derive(Debug, Clone, Copy)]
struct Shape {
    n: usize,
    queries: usize,
    top_k: usize,
}

/// Loads `shape.n` vectors of `data` into a new store under `path`, times
/// searches before and after building its index, and checks them against
/// an exact scan.
async fn search_run(
    path: &std::path::Path,
    data: Data,
    index: &IndexSettings,
    shape: Shape,
) -> Result<SearchRun, BenchError> {
    let Shape { n, queries, top_k } = shape;
    let (open_path, open_index) = (path.to_path_buf(), index.clone());
    let store =
        tokio::task::spawn_blocking(move || EdgeStore::open(&open_path, "bench", DIMENSION, &open_index))
            .await
            .map_err(|e| fail("open store", e))?
            .map_err(|e| fail("open store", e))?;
    let mut source = Source::new(data, 42);
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| source.draw()).collect();
    let t = Instant::now();
    for (b, batch) in vectors.chunks(UPSERT_BATCH).enumerate() {
        let points = batch
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let id = b * UPSERT_BATCH + i;
                let chunk = Chunk {
                    doc_id: format!("doc{}", id / 10),
                    chunk_id: chunk_id(id),
                    source: "synthetic".into(),
                    text: format!("synthetic point {id}"),
                };
                (chunk, v.clone())
            })
            .collect();
        store.upsert(points).await.map_err(|e| fail("upsert", e))?;
    }
    let upsert_secs = t.elapsed().as_secs_f64();
    let qs: Vec<Vec<f32>> = (0..queries).map(|_| source.draw()).collect();

    // The exact answers, timed: the scan every figure is compared with.
    let mut scan = Samples::with_capacity(queries);
    let mut exact = Vec::with_capacity(queries);
    for q in &qs {
        let t = Instant::now();
        exact.push(brute_force(&vectors, q, top_k));
        scan.push_since(t);
    }
    // Before the build: what every search did before the store indexed.
    let plain_qs = &qs[..qs.len().min(100)];
    let (mut plain, _) = timed_searches(&store, plain_qs, top_k, None).await?;
    let t = Instant::now();
    store.index().await.map_err(|e| fail("index", e))?;
    let index_secs = t.elapsed().as_secs_f64();
    let indexed_vectors = store.indexed_vectors();
    let (mut edge, found) = timed_searches(&store, &qs, top_k, None).await?;
    let mut wider = Vec::new();
    for factor in [2, 4] {
        let hnsw_ef = index.hnsw_ef * factor;
        let (mut s, found) = timed_searches(&store, &qs, top_k, Some(hnsw_ef)).await?;
        wider.push(EfRun {
            hnsw_ef,
            p50_us: s.pct(0.5),
            p99_us: s.pct(0.99),
            recall: recall_at(&found, &exact, top_k),
            recall_at_4: recall_at(&found, &exact, 4),
        });
    }
    drop(store);
    Ok(SearchRun {
        data,
        upsert_secs,
        upsert_points_per_s: n as f64 / upsert_secs,
        index_secs,
        indexed_vectors,
        plain_p50_us: plain.pct(0.5),
        plain_p99_us: plain.pct(0.99),
        edge_p50_us: edge.pct(0.5),
        edge_p99_us: edge.pct(0.99),
        scan_p50_us: scan.pct(0.5),
        scan_p99_us: scan.pct(0.99),
        recall: recall_at(&found, &exact, top_k),
        recall_at_4: recall_at(&found, &exact, 4),
        wider,
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
