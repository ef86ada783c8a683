//! The local commands that look at files and the store, and the probe of
//! a running gateway: `validate`, `ingest`, `keys hash`, `probe`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use meshops::config::MeshSpec;

use super::connect::{ConnectArgs, connect};

/// `meshops validate`: the loaded configuration, one line per part, and
/// the judges' prompts (loading them checks them).
pub fn validate(spec: &MeshSpec) -> Result<()> {
    println!("configuration OK");
    for layer in &spec.layers {
        println!("  settings: {}", layer.display());
    }
    for a in spec.agents.values() {
        println!(
            "  agent {:<12} {:<10} model={} replicas={}",
            a.name,
            a.kind.as_str(),
            a.base.model.as_deref().unwrap_or("-"),
            a.replicas
        );
    }
    for (intent, f) in &spec.settings.flows {
        let steps: Vec<String> = f.steps.iter().map(ToString::to_string).collect();
        println!("  flow  {intent:<12} {}", steps.join(" -> "));
    }
    for name in spec.settings.variants.keys() {
        println!("  variant {name}");
    }
    let judges = meshops::eval::judge::load_prompts(spec)?;
    println!(
        "  judges  {} ({}), model profile {}",
        judges.keys().cloned().collect::<Vec<_>>().join(", "),
        meshops::eval::judge::prompts_dir(spec).display(),
        spec.settings.eval.judge_model
    );
    Ok(())
}

/// `meshops probe`: health and server reflection of the gateway at
/// `target`, within `timeout` seconds; an error unless it is SERVING.
pub async fn probe(target: String, timeout: u64, conn: &ConnectArgs) -> Result<()> {
    let service = meshops::client::GATEWAY_SERVICE;
    let probe = async {
        let channel = connect(&target, conn).await?;
        let key = conn.api_key.as_deref();
        anyhow::Ok(meshops::client::probe(channel, &target, service, key).await?)
    };
    let report = tokio::time::timeout(std::time::Duration::from_secs(timeout), probe)
        .await
        .map_err(|_| anyhow::anyhow!("{target} did not answer the probe within {timeout} s"))??;
    println!("target:   {target}");
    println!("health:   {} ({service})", report.health);
    println!("services: {}", report.services.join(", "));
    if !report.ok(service) {
        bail!("{target} is not ready: health {}, services [{}]", report.health, report.services.join(", "));
    }
    Ok(())
}

/// `meshops keys hash`: a key from standard input as its line for
/// `gateway.api_keys_file`.
pub fn keys_hash(label: Option<&str>) -> Result<()> {
    let mut key = String::new();
    std::io::stdin().read_line(&mut key).context("reading the key from standard input")?;
    let key = key.trim();
    if key.is_empty() {
        bail!("no key on standard input; usage: printf %s \"$KEY\" | meshops keys hash --label NAME");
    }
    match label {
        Some(l) if !l.trim().is_empty() => {
            println!("{} {}", meshops::config::keys::hash_line(key), l.trim())
        }
        _ => println!("{}", meshops::config::keys::hash_line(key)),
    }
    Ok(())
}

/// `meshops ingest`: `paths` (default: `retrieval.corpus`) chunked,
/// embedded and upserted into the configured collection.
pub async fn ingest(spec: &MeshSpec, paths: &[PathBuf]) -> Result<()> {
    let (store, embedder) = meshops::retrieval::open(spec).await?;
    let r = &spec.settings.retrieval;
    let paths: Vec<PathBuf> =
        if paths.is_empty() { r.corpus.iter().map(|p| spec.resolve(p)).collect() } else { paths.to_vec() };
    let opts = meshops::retrieval::chunk::ChunkOptions {
        max_chars: r.chunk_max_chars,
        overlap_chars: r.chunk_overlap_chars,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} chunks {per_sec} eta {eta}")
            .context("progress template")?,
    );
    let report =
        meshops::retrieval::ingest::ingest_paths(&paths, &opts, embedder.as_ref(), store.as_ref(), &bar)
            .await?;
    bar.finish_and_clear();
    println!(
        "ingested {} files into {} chunks: {} upserted, {} stale removed, {} points in `{}`",
        report.files, report.chunks, report.upserted, report.pruned, report.points, r.collection
    );
    Ok(())
}
