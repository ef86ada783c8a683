//! `meshops ingest`: documents into the store, or `--delete` out of it.
//!
//! Locally it opens the configured store itself, which the embedded store
//! allows one process at a time: while a gateway runs on the same data dir,
//! `--target URL` sends the files' contents (read here) to the gateway's
//! `Admin` service instead, which writes them into the store it holds.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use meshops::config::MeshSpec;
use meshops::proto;
use meshops::proto::admin_client::AdminClient;
use meshops::retrieval::ingest::{self, Document};
use tonic::transport::Channel;

use super::connect::{ConnectArgs, connect};
use super::{authorized, status_error};

/// What `meshops ingest` was asked.
pub struct IngestArgs<'a> {
    /// Files or folders; empty: `retrieval.corpus`.
    pub paths: &'a [PathBuf],
    /// Document ids to remove instead of ingesting.
    pub delete: &'a [String],
    /// A running gateway to go through; `None`: the store itself.
    pub target: Option<&'a str>,
    pub conn: &'a ConnectArgs,
}

/// Documents per `Ingest` call are cut to stay well within the gateway's
/// message limit (`gateway.max_message_bytes`, 4 MiB by default); a larger
/// document goes alone, and the gateway says if it is over its limit.
const REQUEST_BYTES: usize = 1 << 20;

/// Runs `meshops ingest`. `spec` loads the configuration; it is needed for
/// a local ingest, for the default paths and for the gateway's address in
/// the message that points to `--target`.
pub async fn execute(args: IngestArgs<'_>, spec: impl Fn() -> Result<MeshSpec>) -> Result<()> {
    match args.target {
        Some(target) => {
            let channel = connect(target, args.conn).await?;
            let mut client = AdminClient::new(channel);
            let key = args.conn.api_key.as_deref();
            if !args.delete.is_empty() {
                return delete_remote(&mut client, args.delete, key, target).await;
            }
            let paths = paths_or_corpus(args.paths, &spec)?;
            ingest_remote(&mut client, &paths, key, target).await
        }
        None => {
            let spec = spec()?;
            let opened = meshops::retrieval::open(&spec).await;
            let (store, embedder) =
                opened.map_err(|e| super::store_error(e.into(), &spec.settings.gateway.listen, "ingest"))?;
            if !args.delete.is_empty() {
                let report = ingest::delete_documents(args.delete, store.as_ref()).await?;
                print_deleted(
                    report.removed as u64,
                    &report.not_found,
                    report.points as u64,
                    store.collection(),
                );
                return Ok(());
            }
            let paths = paths_or_corpus(args.paths, &|| Ok(spec.clone()))?;
            let r = &spec.settings.retrieval;
            let opts = meshops::retrieval::chunk::ChunkOptions {
                max_chars: r.chunk_max_chars,
                overlap_chars: r.chunk_overlap_chars,
            };
            let bar = progress_bar()?;
            let progress = |stored: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(stored as u64);
            };
            let report =
                ingest::ingest_paths(&paths, &opts, embedder.as_ref(), store.as_ref(), &progress).await?;
            bar.finish_and_clear();
            println!(
                "ingested {} files into {} chunks: {} upserted, {} stale removed, {} points in `{}`",
                report.files, report.chunks, report.upserted, report.pruned, report.points, r.collection
            );
            if let Some(ms) = report.index_ms {
                println!("indexed `{}` for search in {:.1} s", r.collection, ms as f64 / 1000.0);
            }
            Ok(())
        }
    }
}

/// The paths given, or the configured corpus.
fn paths_or_corpus(paths: &[PathBuf], spec: &dyn Fn() -> Result<MeshSpec>) -> Result<Vec<PathBuf>> {
    if !paths.is_empty() {
        return Ok(paths.to_vec());
    }
    let spec = spec()?;
    Ok(spec.settings.retrieval.corpus.iter().map(|p| spec.resolve(p)).collect())
}

fn progress_bar() -> Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} chunks {per_sec} eta {eta}")
            .context("progress template")?,
    );
    Ok(bar)
}

/// `docs` cut into requests of about [`REQUEST_BYTES`] each, in order.
fn requests(docs: Vec<Document>) -> Vec<proto::IngestRequest> {
    let mut out: Vec<proto::IngestRequest> = Vec::new();
    let mut size = 0;
    for d in docs {
        let bytes = d.text.len() + d.doc_id.len() + d.source.len();
        let full = out.last().is_none_or(|r| !r.documents.is_empty() && size + bytes > REQUEST_BYTES);
        if full {
            out.push(proto::IngestRequest::default());
            size = 0;
        }
        size += bytes;
        if let Some(last) = out.last_mut() {
            last.documents.push(proto::Document { id: d.doc_id, text: d.text, source: d.source });
        }
    }
    out
}

/// Reads `paths` here and sends them to the gateway, one request after
/// another, following each one's progress.
async fn ingest_remote(
    client: &mut AdminClient<Channel>,
    paths: &[PathBuf],
    key: Option<&str>,
    target: &str,
) -> Result<()> {
    let docs = ingest::read_documents(paths)?;
    if docs.is_empty() {
        bail!("no documents to ingest under {}", shown(paths));
    }
    let bar = progress_bar()?;
    let mut total = proto::IngestSummary::default();
    // Chunks of the requests already done, for the bar.
    let (mut done_chunks, mut seen_chunks) = (0u64, 0u64);
    for request in requests(docs) {
        let mut events = client.ingest(authorized(request, key)?).await.map_err(status_error)?.into_inner();
        let mut summary = None;
        while let Some(event) = events.message().await.map_err(status_error)? {
            match event.event {
                Some(proto::ingest_event::Event::Progress(p)) => {
                    if p.chunks_stored == 0 {
                        seen_chunks += u64::from(p.chunks_total);
                        bar.set_length(seen_chunks);
                    }
                    bar.set_position(done_chunks + u64::from(p.chunks_stored));
                }
                Some(proto::ingest_event::Event::Summary(s)) => summary = Some(s),
                None => {}
            }
        }
        let Some(s) = summary else {
            bail!("{target} ended the ingest without its summary; some documents may not be stored");
        };
        done_chunks += u64::from(s.chunks);
        total.documents += s.documents;
        total.chunks += s.chunks;
        total.upserted += s.upserted;
        total.stale_removed += s.stale_removed;
        total.points = s.points;
        total.collection = s.collection;
    }
    bar.finish_and_clear();
    println!(
        "ingested {} files into {} chunks: {} upserted, {} stale removed, {} points in `{}` (through {target})",
        total.documents, total.chunks, total.upserted, total.stale_removed, total.points, total.collection
    );
    Ok(())
}

async fn delete_remote(
    client: &mut AdminClient<Channel>,
    ids: &[String],
    key: Option<&str>,
    target: &str,
) -> Result<()> {
    let request = proto::DeleteDocumentsRequest { document_ids: ids.to_vec() };
    let r = client.delete_documents(authorized(request, key)?).await.map_err(status_error)?.into_inner();
    print_deleted(r.chunks_removed, &r.not_found, r.points, &format!("the store of {target}"));
    Ok(())
}

fn print_deleted(removed: u64, not_found: &[String], points: u64, store: &str) {
    println!("removed {removed} chunks; {points} points left in {store}");
    if !not_found.is_empty() {
        println!("no chunks stored for: {}", not_found.join(", "));
    }
}

fn shown(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, bytes: usize) -> Document {
        Document { doc_id: id.into(), source: String::new(), text: "x".repeat(bytes) }
    }

    #[test]
    fn documents_are_cut_into_requests_within_the_budget_in_order() {
        let cut = requests(vec![doc("a", 600_000), doc("b", 600_000), doc("c", 3 << 20), doc("d", 10)]);
        let ids: Vec<Vec<&str>> =
            cut.iter().map(|r| r.documents.iter().map(|d| d.id.as_str()).collect()).collect();
        assert_eq!(ids, vec![vec!["a"], vec!["b"], vec!["c"], vec!["d"]]);
        let small = requests(vec![doc("a", 10), doc("b", 10)]);
        assert_eq!(small.len(), 1);
        assert!(requests(Vec::new()).is_empty());
    }
}
