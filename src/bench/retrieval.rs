//! `meshops bench retrieval`: qdrant-edge search latency p50/p99 on
//! synthetic 384-dimension vectors (100,000 by default, `--points N`),
//! beside an exact brute-force scan of the same vectors in plain Rust; and
//! the ingest rate of the shipped corpus with the offline embedder, beside
//! the embedder alone on the same chunks.

use std::time::Instant;

use super::{Args, BenchError, Samples, TempDir, fail, ratio};
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

pub async fn run(spec: MeshSpec, args: &Args) -> Result<(), BenchError> {
    let n = args.points.unwrap_or(if args.quick { 5_000 } else { 100_000 }).max(10);
    let queries = if args.quick { 50 } else { 500 };
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
    for (b, batch) in vectors.chunks(1000).enumerate() {
        let points = batch
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let id = b * 1000 + i;
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
    println!(
        "\n== retrieval: qdrant-edge, {n} synthetic {DIMENSION}-d unit vectors (cosine), top {top_k}, {queries} queries"
    );
    println!(
        "  upsert   {:.0} points/s ({n} points in {upsert_secs:.2} s, batches of 1000)",
        n as f64 / upsert_secs
    );
    let (e50, e99, s50, s99) = (edge.pct(0.5), edge.pct(0.99), scan.pct(0.5), scan.pct(0.99));
    println!(
        "  search   qdrant-edge p50 {e50:>8.0} µs   p99 {e99:>8.0} µs   (through the store's async API)"
    );
    println!(
        "           exact scan  p50 {s50:>8.0} µs   p99 {s99:>8.0} µs   (plain Rust, one thread)   edge/scan p50 {:.2}   recall@{top_k} {:.3}",
        ratio(e50, s50),
        agree as f64 / (queries * top_k) as f64
    );
    drop(store);

    // Ingest: the shipped corpus, copied to get enough chunks to time.
    let copies = if args.quick { 1 } else { 20 };
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
    let bar = indicatif::ProgressBar::hidden();
    let t = Instant::now();
    let report =
        crate::retrieval::ingest::ingest_paths(std::slice::from_ref(&corpus), &opts, &embedder, &store, &bar)
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
    println!(
        "  ingest   {:.0} chunks/s ({} files, {} chunks in {ingest_secs:.2} s: chunk + offline embed + upsert)   embedder alone {:.0} chunks/s",
        report.chunks as f64 / ingest_secs,
        report.files,
        report.chunks,
        texts.len() as f64 / embed_secs
    );
    Ok(())
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
