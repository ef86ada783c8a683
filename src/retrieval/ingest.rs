//! Ingest: files or texts → chunks → vectors → store, idempotently; and
//! removing documents.
//!
//! Point ids derive from chunk content ([`super::point_id`]), so ingesting the
//! same files again rewrites the same points. After upserting, every ingested
//! document's points that the new chunks did not produce are pruned, so an
//! edited document leaves no stale chunks behind: ingesting a document id
//! again replaces that document. `meshops ingest` calls this on a store it
//! opens; a running gateway calls it on its own open store for the `Admin`
//! service's `Ingest` and `DeleteDocuments`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::chunk::{ChunkOptions, chunk_document};
use super::{Chunk, Embedder, RetrievalError, VectorStore, point_id};
use crate::config::MeshSpec;

/// Chunks embedded and upserted per call: large enough to amortise a remote
/// embedder's round trip, small enough to keep requests and memory bounded.
const BATCH: usize = 64;

/// File extensions ingest reads (lowercase): the one list both a folder's
/// walk and files named one by one are checked against.
pub const EXTENSIONS: [&str; 4] = ["md", "markdown", "txt", "rst"];

/// A document to ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// What citations report, and what a later ingest of the same document
    /// replaces (see [`collect_files`] for the ids files get).
    pub doc_id: String,
    /// Where the text came from (a file name), stored with each chunk.
    pub source: String,
    /// Markdown or plain text.
    pub text: String,
}

/// How far an ingest has come: chunks stored, of the total.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Send + Sync);

/// What an ingest run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Documents read.
    pub files: usize,
    /// Chunks they were cut into.
    pub chunks: usize,
    /// Points written (unchanged chunks are rewritten too, with the same id).
    pub upserted: usize,
    /// Stale points removed.
    pub pruned: usize,
    /// Points in the collection afterwards.
    pub points: usize,
    /// Milliseconds spent building the search index at the end, when the
    /// collection was large enough to need one (`None`: nothing to index).
    pub index_ms: Option<u64>,
}

fn io_err(path: &Path, source: std::io::Error) -> RetrievalError {
    RetrievalError::Io { path: path.display().to_string(), source }
}

fn input_err(path: &Path, message: impl Into<String>) -> RetrievalError {
    RetrievalError::Input { path: path.display().to_string(), message: message.into() }
}

/// Whether ingest reads `path` (by its extension, see [`EXTENSIONS`]).
pub fn supported(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The extensions as a message lists them: `.md, .markdown, .txt or .rst`.
fn extensions_text() -> String {
    let dotted: Vec<String> = EXTENSIONS.iter().map(|e| format!(".{e}")).collect();
    match dotted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => dotted.join(""),
    }
}

/// The documents under `paths`, as `(file, doc_id)` in a stable order. A file
/// is taken as given (doc id: its stem); a directory is walked recursively in
/// name order for files of the same kinds, [`EXTENSIONS`] (doc id: the relative
/// path without extension, `/`-separated). Hidden entries (`.git`, …) and
/// symlinked directories (which could loop) are skipped. A missing or
/// unreadable path, a file of another kind, and two files with the same doc id
/// (`a.md` next to `a.txt`) are errors.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, RetrievalError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        if meta.is_dir() {
            walk(path, path, &mut out)?;
        } else if supported(path) {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            out.push((path.clone(), stem));
        } else {
            return Err(input_err(path, format!("unsupported file type: expected {}", extensions_text())));
        }
    }
    // Two files mapping to one doc id would overwrite each other's chunk ids
    // and prune each other's points.
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for (path, doc_id) in &out {
        if let Some(first) = seen.insert(doc_id.as_str(), path.as_path()) {
            return Err(input_err(
                path,
                format!("doc id {doc_id:?} is also the doc id of {}", first.display()),
            ));
        }
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<(), RetrievalError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry.file_type().map_err(|e| io_err(&path, e))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
            continue;
        }
        // A symlink to a file counts as the file; `metadata` follows it.
        let is_file =
            kind.is_file() || kind.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_file());
        if is_file && supported(&path) {
            out.push((path.clone(), doc_id(root, &path)));
        }
    }
    Ok(())
}

/// `root/guides/deploy.md` → `guides/deploy`.
fn doc_id(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path).with_extension("");
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

/// Reads the documents under `paths` (see [`collect_files`]); a file that
/// is not UTF-8 text is an error naming it.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, RetrievalError> {
    let files = collect_files(paths)?;
    let mut docs = Vec::with_capacity(files.len());
    for (path, doc_id) in files {
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| input_err(&path, "not UTF-8 text"))?;
        docs.push(Document { doc_id, source: path.display().to_string(), text });
    }
    Ok(docs)
}

/// Ingests `paths` (see [`collect_files`]) into `store`: reads them and
/// calls [`ingest_documents`]. Documents deleted from disk are not
/// detected; their points stay until removed ([`delete_documents`]).
pub async fn ingest_paths(
    paths: &[PathBuf],
    opts: &ChunkOptions,
    embedder: &dyn Embedder,
    store: &dyn VectorStore,
    progress: Progress<'_>,
) -> Result<IngestReport, RetrievalError> {
    let docs = read_documents(paths)?;
    ingest_documents(&docs, opts, embedder, store, progress).await
}

/// Ingests `docs` into `store`: chunks every document, embeds and upserts
/// the chunks in batches of 64, then prunes each document's stale points
/// (chunks of an earlier version that the new text did not produce), so a
/// document ingested again under its id replaces the old one. `progress`
/// hears of every batch stored. Two documents with one id are refused:
/// each would prune the other's chunks.
pub async fn ingest_documents(
    docs: &[Document],
    opts: &ChunkOptions,
    embedder: &dyn Embedder,
    store: &dyn VectorStore,
    progress: Progress<'_>,
) -> Result<IngestReport, RetrievalError> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for d in docs {
        if let Some(first) = seen.insert(d.doc_id.as_str(), d.source.as_str()) {
            return Err(RetrievalError::Input {
                path: d.source.clone(),
                message: format!("doc id {:?} is also the doc id of {first}", d.doc_id),
            });
        }
    }
    let chunked: Vec<(&str, Vec<Chunk>)> = docs
        .iter()
        .map(|d| (d.doc_id.as_str(), chunk_document(&d.doc_id, &d.source, &d.text, opts)))
        .collect();
    let all: Vec<&Chunk> = chunked.iter().flat_map(|(_, c)| c.iter()).collect();
    let mut report = IngestReport { files: docs.len(), chunks: all.len(), ..IngestReport::default() };
    progress(0, all.len());

    // Batches may span documents: fewer, fuller embedder calls. Pruning waits
    // until everything is upserted, so no document is ever missing points.
    let mut stored = 0;
    for batch in all.chunks(BATCH) {
        let texts: Vec<String> = batch.iter().map(|c| c.text.clone()).collect();
        let vectors = embedder.embed(&texts).await?;
        if vectors.len() != batch.len() {
            return Err(RetrievalError::Embed {
                embedder: embedder.name().to_string(),
                message: format!("returned {} vectors for {} texts", vectors.len(), batch.len()),
            });
        }
        let points = batch.iter().map(|c| (*c).clone()).zip(vectors).collect::<Vec<_>>();
        report.upserted += store.upsert(points).await?;
        stored += batch.len();
        progress(stored, all.len());
    }

    for (doc_id, chunks) in &chunked {
        let keep = chunks.iter().map(point_id).collect();
        report.pruned += store.prune_doc((*doc_id).to_string(), keep).await?;
    }
    // Searchable at full speed as soon as ingest returns: no waiting for the
    // background indexer.
    let started = std::time::Instant::now();
    if store.index().await? {
        report.index_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    }
    report.points = store.count().await?;
    Ok(report)
}

/// What removing documents did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Chunks removed, over all the documents.
    pub removed: usize,
    /// The ids that had no chunks.
    pub not_found: Vec<String>,
    /// Points in the collection afterwards.
    pub points: usize,
}

/// Removes every chunk of the documents `doc_ids` from `store`.
pub async fn delete_documents(
    doc_ids: &[String],
    store: &dyn VectorStore,
) -> Result<DeleteReport, RetrievalError> {
    let mut report = DeleteReport::default();
    for id in doc_ids {
        // Keeping nothing prunes the whole document.
        let removed = store.prune_doc(id.clone(), Vec::new()).await?;
        if removed == 0 {
            report.not_found.push(id.clone());
        }
        report.removed += removed;
    }
    report.points = store.count().await?;
    Ok(report)
}

/// Ingests the configured corpus (`retrieval.corpus`) when
/// `retrieval.auto_ingest` is on and the collection is empty: what a fresh
/// clone needs to answer its first question. `None` when nothing was done.
pub async fn ingest_if_empty(
    spec: &MeshSpec,
    embedder: &dyn Embedder,
    store: &dyn VectorStore,
) -> Result<Option<IngestReport>, RetrievalError> {
    let r = &spec.settings.retrieval;
    if !r.auto_ingest || store.count().await? > 0 {
        return Ok(None);
    }
    let paths: Vec<_> = r.corpus.iter().map(|p| spec.resolve(p)).collect();
    let opts = ChunkOptions { max_chars: r.chunk_max_chars, overlap_chars: r.chunk_overlap_chars };
    let report = ingest_paths(&paths, &opts, embedder, store, &|_, _| {}).await?;
    tracing::info!(
        files = report.files,
        chunks = report.chunks,
        points = report.points,
        "ingested corpus into empty collection"
    );
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IndexSettings;
    use crate::retrieval::edge::EdgeStore;
    use crate::retrieval::embed::OfflineEmbedder;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const GATEWAY: &str = "# Gateway\n\nThe gateway accepts gRPC calls from clients.\n\n## Limits\n\nEach client may send at most sixty four requests per second.\nExcess requests are rejected with RESOURCE_EXHAUSTED.\n\n## Retries\n\nFailed upstream calls are retried three times with exponential backoff.\n";
    const AGENTS: &str = "# Agents\n\nAgents are actix actors.\n\n## Mailboxes\n\nEach agent owns a bounded mailbox of pending messages.\n\n## Supervision\n\nA crashed agent is restarted by its supervisor.\n";
    const NOTES: &str = "Plain notes about the embedded vector store.\n\nThe store persists qdrant-edge segments under the data directory.";

    fn corpus() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "gateway.md", GATEWAY);
        write(dir.path(), "guides/agents.markdown", AGENTS);
        write(dir.path(), "notes.txt", NOTES);
        write(dir.path(), "image.png", "not text");
        write(dir.path(), ".hidden/secret.md", "# Hidden\n\nShould not be read.");
        dir
    }

    #[test]
    fn collects_supported_files_sorted_with_doc_ids() {
        let dir = corpus();
        let files = collect_files(&[dir.path().to_path_buf()]).unwrap();
        let ids: Vec<&str> = files.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, vec!["gateway", "guides/agents", "notes"]);
        assert_eq!(files[1].0, dir.path().join("guides/agents.markdown"));

        let direct = collect_files(&[dir.path().join("guides/agents.markdown")]).unwrap();
        assert_eq!(direct[0].1, "agents");
    }

    #[test]
    fn a_folder_and_a_file_named_alone_accept_the_same_kinds() {
        let dir = corpus();
        write(dir.path(), "guides/setup.rst", "Setup\n=====\n\nRun the binary.");
        let walked = collect_files(&[dir.path().to_path_buf()]).unwrap();
        assert!(walked.iter().any(|(_, id)| id == "guides/setup"), "{walked:?}");
        let direct = collect_files(&[dir.path().join("guides/setup.rst")]).unwrap();
        assert_eq!(direct[0].1, "setup");
        // Every extension either way, or neither.
        for ext in EXTENSIONS.iter().chain(["png", "pdf"].iter()) {
            let one = tempfile::tempdir().unwrap();
            write(one.path(), &format!("doc.{ext}"), "text");
            let by_folder = collect_files(&[one.path().to_path_buf()]).unwrap().len() == 1;
            let by_name = collect_files(&[one.path().join(format!("doc.{ext}"))]).is_ok();
            assert_eq!(by_folder, by_name, ".{ext}");
            assert_eq!(by_folder, EXTENSIONS.contains(ext), ".{ext}");
        }
        let err = collect_files(&[dir.path().join("image.png")]).unwrap_err().to_string();
        assert!(err.contains(".md, .markdown, .txt or .rst"), "{err}");
    }

    #[tokio::test]
    async fn a_document_ingested_again_under_its_id_replaces_it_and_delete_removes_it() {
        let data = tempfile::tempdir().unwrap();
        let embedder = OfflineEmbedder::new(64);
        let store = EdgeStore::open(data.path(), "docs", 64, &IndexSettings::default()).unwrap();
        let opts = ChunkOptions::default();
        let doc = |text: &str| Document {
            doc_id: "notes/plan".into(),
            source: "plan.md".into(),
            text: text.into(),
        };
        let none = |_: usize, _: usize| {};
        let v1 = "# Plan\n\nFirst we build.\n\n## Later\n\nThen we ship.";
        let first = ingest_documents(&[doc(v1)], &opts, &embedder, &store, &none).await.unwrap();
        assert_eq!((first.files, first.chunks, first.points), (1, 2, 2));
        let v2 = "# Plan\n\nWe only ship.";
        let second = ingest_documents(&[doc(v2)], &opts, &embedder, &store, &none).await.unwrap();
        assert_eq!((second.chunks, second.pruned, second.points), (1, 2, 1));
        let hits = store.search(embedder.embed_text("ship"), 5, None).await.unwrap();
        assert_eq!(hits.len(), 1);
        assert!(hits[0].text.contains("We only ship"), "{}", hits[0].text);

        let twice = [doc(v1), doc(v2)];
        let err = ingest_documents(&twice, &opts, &embedder, &store, &none).await.unwrap_err();
        assert!(err.to_string().contains("notes/plan"), "{err}");

        let ids = vec!["notes/plan".to_string(), "missing".to_string()];
        let deleted = delete_documents(&ids, &store).await.unwrap();
        assert_eq!(deleted, DeleteReport { removed: 1, not_found: vec!["missing".into()], points: 0 });
    }

    #[test]
    fn bad_paths_are_errors_naming_the_path() {
        let dir = corpus();
        let missing = dir.path().join("missing.md");
        let err = collect_files(std::slice::from_ref(&missing)).unwrap_err();
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
        let png = dir.path().join("image.png");
        let err = collect_files(&[png]).unwrap_err();
        assert!(err.to_string().contains("image.png") && err.to_string().contains("unsupported"), "{err}");
        write(dir.path(), "gateway.txt", "clash");
        let err = collect_files(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("\"gateway\""), "{err}");
    }

    #[tokio::test]
    async fn ingest_is_idempotent_prunes_edits_and_finds_docs() {
        let corpus = corpus();
        let data = tempfile::tempdir().unwrap();
        let embedder = OfflineEmbedder::new(128);
        let store = EdgeStore::open(data.path(), "docs", 128, &IndexSettings::default()).unwrap();
        let opts = ChunkOptions::default();
        let paths = vec![corpus.path().to_path_buf()];
        let bar = indicatif::ProgressBar::hidden();
        let progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };

        let first = ingest_paths(&paths, &opts, &embedder, &store, &progress).await.unwrap();
        assert_eq!(first.files, 3);
        // gateway: 3 sections, agents: 3 sections, notes: 1 chunk.
        assert_eq!(first.chunks, 7);
        assert_eq!(first.upserted, 7);
        assert_eq!(first.pruned, 0);
        assert_eq!(first.points, 7);
        assert_eq!(bar.length(), Some(7));
        assert_eq!(bar.position(), 7);

        let again = ingest_paths(&paths, &opts, &embedder, &store, &progress).await.unwrap();
        assert_eq!(again.points, 7);
        assert_eq!(again.pruned, 0);

        // The gateway doc loses its Retries section and edits its Limits.
        write(
            corpus.path(),
            "gateway.md",
            "# Gateway\n\nThe gateway accepts gRPC calls from clients.\n\n## Limits\n\nEach client may send at most ten requests per second.\n",
        );
        let edited = ingest_paths(&paths, &opts, &embedder, &store, &progress).await.unwrap();
        assert_eq!(edited.chunks, 6);
        assert_eq!(edited.pruned, 2);
        assert_eq!(edited.points, 6);

        let query = embedder.embed_text("bounded mailbox of pending messages");
        let hits = store.search(query, 3, None).await.unwrap();
        assert_eq!(hits[0].doc_id, "guides/agents");
        assert_eq!(hits[0].chunk_id, "guides/agents#1");
        assert!(hits[0].text.starts_with("Agents > Mailboxes\n"), "{}", hits[0].text);

        let hits = store
            .search(embedder.embed_text("how many requests per second may a client send"), 1, None)
            .await
            .unwrap();
        assert_eq!(hits[0].doc_id, "gateway");
        assert!(hits[0].text.contains("ten requests"), "{}", hits[0].text);

        // A store reopened from disk holds the same points.
        drop(store);
        let reopened = EdgeStore::open(data.path(), "docs", 128, &IndexSettings::default()).unwrap();
        assert_eq!(reopened.count().await.unwrap(), 6);
    }
}
