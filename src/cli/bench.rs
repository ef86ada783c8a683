//! `meshops bench`: its arguments, and the printing of each benchmark's
//! figures beside their limits. The benchmarks themselves live in
//! `meshops::bench` and return their figures as values; this file runs the
//! ones asked for in turn and prints each section as its benchmark ends.

use std::io::Write;

use anyhow::{Result, anyhow};
use meshops::bench::{
    self, EvalFigures, ExternalFigures, GatewayFigures, InflightRun, MeshFigures, OverheadFigures,
    RetrievalFigures, StartupFigures, ratio,
};
use meshops::config::{LoadOptions, MeshSpec};

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Mesh,
    Gateway,
    Inflight,
    Overhead,
    Eval,
    Retrieval,
    Startup,
    /// `Ask` and the health check loaded by h2load (a separate process).
    External,
    All,
}

/// The synthetic data sets of `bench retrieval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataSet {
    /// Like text embeddings: 32 latent dimensions plus noise.
    EmbeddingLike,
    /// Uniform on the sphere: the hard case for a graph index.
    Uniform,
}

impl From<DataSet> for bench::Data {
    fn from(d: DataSet) -> Self {
        match d {
            DataSet::EmbeddingLike => bench::Data::EmbeddingLike,
            DataSet::Uniform => bench::Data::Uniform,
        }
    }
}

/// Arguments of `meshops bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The benchmark to run (`all` runs each in turn).
    #[arg(value_enum)]
    pub name: Which,
    /// Shrink every benchmark to seconds (for CI: proves they run, times
    /// mean little).
    #[arg(long)]
    pub quick: bool,
    /// `retrieval`: synthetic points to search (default 100,000).
    #[arg(long)]
    pub points: Option<usize>,
    /// `retrieval`: only this data set (default: both, one after the other).
    #[arg(long, value_enum)]
    pub data: Option<DataSet>,
    /// `mesh`: requests per measurement; `inflight`: requests at once.
    #[arg(long)]
    pub requests: Option<usize>,
    /// `gateway`: seconds per load run.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// `mesh`: only the sequential mesh figure, no floor and no concurrency
    /// runs (for counting instructions or allocations per request under
    /// valgrind).
    #[arg(long)]
    pub sequential_only: bool,
}

impl From<Which> for bench::Which {
    fn from(w: Which) -> Self {
        match w {
            Which::Mesh => bench::Which::Mesh,
            Which::Gateway => bench::Which::Gateway,
            Which::Inflight => bench::Which::Inflight,
            Which::Overhead => bench::Which::Overhead,
            Which::Eval => bench::Which::Eval,
            Which::Retrieval => bench::Which::Retrieval,
            Which::Startup => bench::Which::Startup,
            Which::External => bench::Which::External,
            Which::All => bench::Which::All,
        }
    }
}

impl From<&Args> for bench::Options {
    fn from(a: &Args) -> Self {
        bench::Options {
            name: a.name.into(),
            quick: a.quick,
            points: a.points,
            data: a.data.map(Into::into),
            requests: a.requests,
            seconds: a.seconds,
            sequential_only: a.sequential_only,
        }
    }
}

/// Runs the benchmarks `args` names, in turn, with the configuration `load`
/// gives, and prints each one's figures when it ends.
pub async fn execute(args: &Args, load: LoadOptions) -> Result<()> {
    let spec = MeshSpec::load(&load).map_err(|e| anyhow!("configuration: \n{e}"))?;
    let opts = bench::Options::from(args);
    println!("meshops bench{}: {}", if opts.quick { " --quick" } else { "" }, bench::machine());
    if opts.runs(bench::Which::Mesh) {
        let figures = bench::mesh::run(spec.clone(), &opts).await?;
        mesh(&mut std::io::stdout().lock(), &figures)?;
    }
    if opts.runs(bench::Which::Gateway) {
        let figures = bench::gateway::throughput(spec.clone(), &opts).await?;
        gateway(&mut std::io::stdout().lock(), &figures)?;
    }
    if opts.runs(bench::Which::Inflight) {
        let figures = bench::gateway::inflight(spec.clone(), &opts).await?;
        let mut out = std::io::stdout().lock();
        inflight(&mut out, &figures.offline)?;
        inflight(&mut out, &figures.zero_work)?;
    }
    if opts.runs(bench::Which::Overhead) {
        let figures = bench::overhead::run(spec.clone(), &opts).await?;
        overhead(&mut std::io::stdout().lock(), &figures)?;
    }
    if opts.runs(bench::Which::Eval) {
        let figures = bench::eval::run(spec.clone(), &opts).await?;
        eval(&mut std::io::stdout().lock(), &figures)?;
    }
    if opts.runs(bench::Which::Retrieval) {
        let figures = bench::retrieval::run(spec.clone(), &opts).await?;
        retrieval(&mut std::io::stdout().lock(), &figures)?;
    }
    if opts.runs(bench::Which::Startup) {
        let figures = bench::startup::run(spec.clone(), &opts).await?;
        startup(&mut std::io::stdout().lock(), &figures)?;
    }
    if opts.runs(bench::Which::External) {
        // `all` goes on without h2load; asked for by name, it is an error.
        if opts.name == bench::Which::All && !bench::external::available().await {
            println!("\n== external: skipped: h2load is not installed (Debian: nghttp2-client)");
        } else {
            let figures = bench::external::run(spec.clone(), &opts).await?;
            external(&mut std::io::stdout().lock(), &figures)?;
        }
    }
    println!("done; {}", bench::machine());
    Ok(())
}

/// "met" or "MISSED" for a target line.
fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Figures of each run, comma-separated, to the request.
fn list(xs: &[f64]) -> String {
    xs.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

/// The `== mesh:` section.
fn mesh(out: &mut impl Write, f: &MeshFigures) -> std::io::Result<()> {
    writeln!(
        out,
        "\n== mesh: {} in process, zero-work model and store, {} requests per figure",
        f.pipeline.join(" → "),
        f.requests
    )?;
    let mesh_seq = f.seq_on_thread_us;
    let Some(c) = &f.compared else {
        // `--sequential-only`: the one figure, without the floor to set
        // it beside, so no target line either.
        return writeln!(out, "  sequential, caller on a mesh thread  mesh {mesh_seq:>8.2} µs/request");
    };
    let hops = c.hops;
    writeln!(
        out,
        "  sequential, caller on a mesh thread      mesh {mesh_seq:>8.2} µs/request   floor ({hops} bare actix round trips) {:>6.2} µs   mesh/floor {:.1}×",
        c.floor_seq_us,
        ratio(mesh_seq, c.floor_seq_us)
    )?;
    writeln!(
        out,
        "  sequential, caller on another thread     mesh {:>8.2} µs/request   floor ({hops} bare actix round trips) {:>6.2} µs   mesh/floor {:.1}×",
        c.seq_off_thread_us,
        c.floor_off_thread_us,
        ratio(c.seq_off_thread_us, c.floor_off_thread_us)
    )?;
    for row in &c.concurrency {
        writeln!(
            out,
            "  concurrency {:<3} mesh {:>9.0} requests/s    floor {:>9.0} chains/s   mesh/floor {:.2}",
            row.callers,
            row.mesh_rps,
            row.floor_rps,
            ratio(row.mesh_rps, row.floor_rps)
        )?;
    }
    writeln!(out, "  target ≤ {} µs/request sequential: {} ({mesh_seq:.2} µs)", f.target_us, verdict(f.met))
}

/// The `== gateway:` section.
fn gateway(out: &mut impl Write, f: &GatewayFigures) -> std::io::Result<()> {
    writeln!(
        out,
        "\n== gateway: Ask over loopback gRPC, zero-work mode, {} connections × {} streams, {:.1} s per run, {} rounds (median)",
        f.connections, f.streams, f.seconds_per_run, f.rounds
    )?;
    writeln!(
        out,
        "  meshops Ask      {:>9.0} requests/s   (runs: {})",
        f.meshops_rps,
        list(&f.meshops_runs)
    )?;
    writeln!(out, "  bare tonic echo  {:>9.0} requests/s   (runs: {})", f.echo_rps, list(&f.echo_runs))?;
    writeln!(
        out,
        "  meshops / echo {:.1} %   target ≥ {:.0} %: {}{}",
        f.ratio * 100.0,
        f.target_ratio * 100.0,
        verdict(f.met),
        if f.failed_calls > 0 { format!("   ({} calls failed)", f.failed_calls) } else { String::new() }
    )
}

/// One `== inflight:` section (the benchmark prints two, one per engine).
fn inflight(out: &mut impl Write, f: &InflightRun) -> std::io::Result<()> {
    let (n, latency_ms) = (f.requests, f.model_latency_ms);
    writeln!(
        out,
        "\n== inflight: {n} Ask calls at once over {} connections, {}, latency_ms = {latency_ms}",
        f.connections, f.engine
    )?;
    writeln!(
        out,
        "  unloaded latency {:.1} ms (3 model calls × {latency_ms} ms + the rest); all {n} done in {:.2} s, {} ok",
        f.unloaded_latency_s * 1e3,
        f.elapsed_s,
        f.ok
    )?;
    writeln!(
        out,
        "  throughput {:.0} requests/s   Little's-law bound {n}/{:.3} s = {:.0} requests/s   {:.1} % of bound   target ≥ {:.0} %: {}",
        f.throughput_rps,
        f.unloaded_latency_s,
        f.bound_rps,
        f.of_bound * 100.0,
        f.target_of_bound * 100.0,
        verdict(f.throughput_met)
    )?;
    writeln!(
        out,
        "  peak RSS (VmHWM, bench process: gateway + mesh + client) {:.0} MiB (before the burst {:.0} MiB)   target ≤ {:.0} MiB: {}",
        f.peak_rss_mib,
        f.rss_before_mib,
        f.rss_limit_mib,
        verdict(f.rss_met)
    )
}

/// The `== overhead:` section.
fn overhead(out: &mut impl Write, f: &OverheadFigures) -> std::io::Result<()> {
    writeln!(
        out,
        "\n== overhead: one chat completion ({} byte request) to an OpenAI-wire test double on loopback, {} calls each, interleaved",
        f.request_bytes, f.calls
    )?;
    writeln!(
        out,
        "  direct HTTP call            p50 {:>8.0} µs   p99 {:>8.0} µs",
        f.direct_p50_us, f.direct_p99_us
    )?;
    writeln!(
        out,
        "  through meshops (gRPC → gateway → router [zero-work] → {} → HTTP)   p50 {:>8.0} µs   p99 {:>8.0} µs",
        f.summarizer, f.meshops_p50_us, f.meshops_p99_us
    )?;
    writeln!(
        out,
        "  added: p50 {:.0} µs, p99 {:.0} µs   target ≤ {:.0} µs added at p50: {}",
        f.added_p50_us,
        f.added_p99_us,
        f.target_added_p50_us,
        verdict(f.met)
    )
}

/// The `== eval:` section.
fn eval(out: &mut impl Write, f: &EvalFigures) -> std::io::Result<()> {
    writeln!(
        out,
        "\n== eval: `eval run` in process, offline engine latency_ms = {}, rows from {}",
        f.model_latency_ms,
        f.dataset.display()
    )?;
    for l in &f.levels {
        writeln!(
            out,
            "  concurrency {:<5} {:>5} rows in {:>6.2} s   {:>8.1} rows/s   linear {:>8.1}   {:>5.1} % of linear{}",
            l.concurrency,
            l.rows,
            l.secs,
            l.rows_per_s,
            l.linear,
            l.of_linear * 100.0,
            if l.failed > 0 { format!("   ({} rows failed)", l.failed) } else { String::new() }
        )?;
    }
    writeln!(
        out,
        "  target: linear to {} (counted as ≥ {:.0} % of linear): {} ({:.1} %)",
        f.target_concurrency,
        f.target_of_linear * 100.0,
        verdict(f.met),
        f.last_of_linear * 100.0
    )
}

/// The `== retrieval:` section.
fn retrieval(out: &mut impl Write, f: &RetrievalFigures) -> std::io::Result<()> {
    let (n, top_k, i) = (f.points, f.top_k, &f.index);
    writeln!(
        out,
        "\n== retrieval: qdrant-edge, {n} synthetic {}-d unit vectors (cosine) per data set, top {top_k}, {} queries",
        f.dimension, f.queries
    )?;
    writeln!(
        out,
        "  index settings: HNSW m {} ef_construct {} hnsw_ef {} quantization {:?}, threshold {} KiB",
        i.m, i.ef_construct, i.hnsw_ef, i.quantization, i.indexing_threshold_kb
    )?;
    for r in &f.runs {
        writeln!(out, "  {}:", r.data.label())?;
        writeln!(
            out,
            "    upsert {:.0} points/s ({:.2} s, batches of {})   index built in {:.2} s ({} of {n} vectors indexed)",
            r.upsert_points_per_s, r.upsert_secs, f.upsert_batch, r.index_secs, r.indexed_vectors
        )?;
        writeln!(
            out,
            "    exact scan  p50 {:>8.0} µs   p99 {:>8.0} µs   (plain Rust, one thread: the reference)",
            r.scan_p50_us, r.scan_p99_us
        )?;
        writeln!(
            out,
            "    unindexed   p50 {:>8.0} µs   p99 {:>8.0} µs   {:.2}× the scan   (qdrant-edge before the build)",
            r.plain_p50_us,
            r.plain_p99_us,
            ratio(r.plain_p50_us, r.scan_p50_us)
        )?;
        writeln!(
            out,
            "    indexed     p50 {:>8.0} µs   p99 {:>8.0} µs   {:.3}× the scan   recall@{top_k} {:.3}   recall@4 {:.3}",
            r.edge_p50_us,
            r.edge_p99_us,
            ratio(r.edge_p50_us, r.scan_p50_us),
            r.recall,
            r.recall_at_4
        )?;
        for w in &r.wider {
            writeln!(
                out,
                "    hnsw_ef {:<5}p50 {:>8.0} µs   p99 {:>8.0} µs   {:.3}× the scan   recall@{top_k} {:.3}   recall@4 {:.3}",
                w.hnsw_ef,
                w.p50_us,
                w.p99_us,
                ratio(w.p50_us, r.scan_p50_us),
                w.recall,
                w.recall_at_4
            )?;
        }
    }
    if let Some(e) = f.runs.iter().find(|r| r.data == meshops::bench::Data::EmbeddingLike) {
        // The configured beam first, then the wider ones: the first that
        // meets the target is named.
        let meets = |p50: f64, r4: f64| ratio(p50, e.scan_p50_us) <= 0.1 && r4 >= 0.95;
        let at = std::iter::once((i.hnsw_ef, e.edge_p50_us, e.recall_at_4))
            .chain(e.wider.iter().map(|w| (w.hnsw_ef, w.p50_us, w.recall_at_4)))
            .find(|&(_, p50, r4)| meets(p50, r4))
            .map(|(ef, ..)| ef);
        let outcome = match at {
            Some(ef) if ef == i.hnsw_ef => verdict(true).to_string(),
            Some(ef) => format!("met at hnsw_ef {ef}; {} at the configured {}", verdict(false), i.hnsw_ef),
            None => verdict(false).to_string(),
        };
        writeln!(
            out,
            "  target (embedding-like): indexed p50 ≤ 0.1× the scan with recall@4 ≥ 0.95: {outcome}"
        )?;
    }
    writeln!(
        out,
        "  ingest   {:.0} chunks/s ({} files, {} chunks in {:.2} s: chunk + offline embed + upsert)   embedder alone {:.0} chunks/s",
        f.ingest_chunks_per_s, f.ingest_files, f.ingest_chunks, f.ingest_secs, f.embed_chunks_per_s
    )
}

/// The `== external:` section.
fn external(out: &mut impl Write, f: &ExternalFigures) -> std::io::Result<()> {
    writeln!(
        out,
        "\n== external: {} over h2c, {} connections × {} streams, {:.0} s per load (after 1 s of warm-up)",
        f.h2load, f.connections, f.streams, f.seconds
    )?;
    for r in [&f.zero_work, &f.offline] {
        writeln!(
            out,
            "  {:<26} Ask {:>8.0} req/s   Health/Check {:>8.0} req/s   Ask/Check {:>5.1} %   ≈ {:.0} µs of CPU per Ask   ({} answered OK, {} not)",
            r.engine,
            r.ask_rps,
            r.health_rps,
            r.ratio * 100.0,
            r.cpu_us_per_ask,
            r.ask_ok,
            r.ask_not_ok
        )?;
        writeln!(
            out,
            "  target ({}): Ask ≥ {:.0} % of Health/Check: {}",
            r.engine,
            r.target_ratio * 100.0,
            verdict(r.met)
        )?;
    }
    Ok(())
}

/// The `== startup:` section.
fn startup(out: &mut impl Write, f: &StartupFigures) -> std::io::Result<()> {
    writeln!(
        out,
        "\n== startup: exec of `meshops serve` → health SERVING (spawned binary, health polled every {} ms)",
        f.health_poll_ms
    )?;
    writeln!(
        out,
        "  corpus already ingested  {:>7.1} ms  (median of {}: {})",
        f.warm_median_ms,
        f.warm_ms.len(),
        f.warm_ms.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(out, "  first start, ingesting   {:>7.1} ms", f.cold_ms)?;
    writeln!(out, "  bare exec (meshops --version to exit) {:.1} ms", f.exec_ms)
}

#[cfg(test)]
mod tests {
    //! Each section printed from known figures, against the lines the
    //! printing inside `meshops::bench` gave for the same figures before it
    //! moved here (`docs/performance.md` quotes them; `tests/bench.rs`
    //! looks for some).

    use super::*;
    use meshops::bench::eval::EvalLevel;
    use meshops::bench::{ConcurrencyRow, MeshComparison};

    fn printed(print: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        print(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn mesh_figures(compared: Option<MeshComparison>, seq: f64) -> MeshFigures {
        MeshFigures {
            pipeline: ["router", "retriever", "summarizer", "critic"].map(String::from).to_vec(),
            requests: 2000,
            seq_on_thread_us: seq,
            compared,
            target_us: 14.0,
            met: false,
        }
    }

    #[test]
    fn mesh_section() {
        let rows = [(1, 665.0, 5198.0), (16, 930.0, 12474.0), (256, 1027.0, 13394.0)];
        let f = mesh_figures(
            Some(MeshComparison {
                hops: 5,
                floor_seq_us: 113.78,
                seq_off_thread_us: 1409.00,
                floor_off_thread_us: 115.79,
                concurrency: rows
                    .map(|(callers, mesh_rps, floor_rps)| ConcurrencyRow { callers, mesh_rps, floor_rps })
                    .to_vec(),
            }),
            1308.63,
        );
        assert_eq!(
            printed(|o| mesh(o, &f)),
            "
== mesh: router → retriever → summarizer → critic in process, zero-work model and store, 2000 requests per figure
  sequential, caller on a mesh thread      mesh  1308.63 µs/request   floor (5 bare actix round trips) 113.78 µs   mesh/floor 11.5×
  sequential, caller on another thread     mesh  1409.00 µs/request   floor (5 bare actix round trips) 115.79 µs   mesh/floor 12.2×
  concurrency 1   mesh       665 requests/s    floor      5198 chains/s   mesh/floor 0.13
  concurrency 16  mesh       930 requests/s    floor     12474 chains/s   mesh/floor 0.07
  concurrency 256 mesh      1027 requests/s    floor     13394 chains/s   mesh/floor 0.08
  target ≤ 14 µs/request sequential: MISSED (1308.63 µs)
"
        );
    }

    #[test]
    fn mesh_section_sequential_only() {
        assert_eq!(
            printed(|o| mesh(o, &mesh_figures(None, 1331.89))),
            "
== mesh: router → retriever → summarizer → critic in process, zero-work model and store, 2000 requests per figure
  sequential, caller on a mesh thread  mesh  1331.89 µs/request
"
        );
    }

    #[test]
    fn gateway_section() {
        let mut f = GatewayFigures {
            connections: 4,
            streams: 64,
            seconds_per_run: 0.5,
            rounds: 1,
            meshops_rps: 334.0,
            meshops_runs: vec![334.0],
            echo_rps: 1126.0,
            echo_runs: vec![1126.0],
            ratio: 334.0 / 1126.0,
            target_ratio: 0.5,
            met: false,
            failed_calls: 0,
        };
        assert_eq!(
            printed(|o| gateway(o, &f)),
            "
== gateway: Ask over loopback gRPC, zero-work mode, 4 connections × 64 streams, 0.5 s per run, 1 rounds (median)
  meshops Ask            334 requests/s   (runs: 334)
  bare tonic echo       1126 requests/s   (runs: 1126)
  meshops / echo 29.7 %   target ≥ 50 %: MISSED
"
        );
        f.failed_calls = 3;
        assert!(printed(|o| gateway(o, &f)).ends_with("target ≥ 50 %: MISSED   (3 calls failed)\n"));
    }

    #[test]
    fn inflight_section() {
        let f = InflightRun {
            engine: "offline engine",
            requests: 500,
            connections: 10,
            model_latency_ms: 200,
            unloaded_latency_s: 0.6217,
            elapsed_s: 4.48,
            ok: 500,
            throughput_rps: 112.0,
            bound_rps: 804.0,
            of_bound: 0.139,
            target_of_bound: 0.9,
            throughput_met: false,
            peak_rss_mib: 124.0,
            rss_before_mib: 97.0,
            rss_limit_mib: 512.0,
            rss_met: true,
        };
        assert_eq!(
            printed(|o| inflight(o, &f)),
            "
== inflight: 500 Ask calls at once over 10 connections, offline engine, latency_ms = 200
  unloaded latency 621.7 ms (3 model calls × 200 ms + the rest); all 500 done in 4.48 s, 500 ok
  throughput 112 requests/s   Little's-law bound 500/0.622 s = 804 requests/s   13.9 % of bound   target ≥ 90 %: MISSED
  peak RSS (VmHWM, bench process: gateway + mesh + client) 124 MiB (before the burst 97 MiB)   target ≤ 512 MiB: met
"
        );
    }

    #[test]
    fn overhead_section() {
        let f = OverheadFigures {
            request_bytes: 297,
            calls: 200,
            summarizer: "summarizer".into(),
            direct_p50_us: 1141.0,
            direct_p99_us: 6501.0,
            meshops_p50_us: 7957.0,
            meshops_p99_us: 13477.0,
            added_p50_us: 6816.0,
            added_p99_us: 6977.0,
            target_added_p50_us: 300.0,
            met: false,
        };
        assert_eq!(
            printed(|o| overhead(o, &f)),
            "
== overhead: one chat completion (297 byte request) to an OpenAI-wire test double on loopback, 200 calls each, interleaved
  direct HTTP call            p50     1141 µs   p99     6501 µs
  through meshops (gRPC → gateway → router [zero-work] → summarizer → HTTP)   p50     7957 µs   p99    13477 µs
  added: p50 6816 µs, p99 6977 µs   target ≤ 300 µs added at p50: MISSED
"
        );
    }

    #[test]
    fn eval_section() {
        let level = |concurrency, rows, secs, rows_per_s, linear, of_linear, failed| EvalLevel {
            concurrency,
            rows,
            secs,
            rows_per_s,
            linear,
            of_linear,
            failed,
        };
        let f = EvalFigures {
            model_latency_ms: 20,
            dataset: "/tmp/wtbench/base/eval/datasets/sample.jsonl".into(),
            levels: vec![
                level(1, 2, 0.25, 7.9, 7.9, 1.0, 0),
                level(10, 10, 0.19, 54.1, 79.2, 0.682, 0),
                level(100, 100, 0.66, 152.7, 792.3, 0.193, 2),
            ],
            target_concurrency: 100,
            target_of_linear: 0.9,
            last_of_linear: 0.193,
            met: false,
        };
        assert_eq!(
            printed(|o| eval(o, &f)),
            "
== eval: `eval run` in process, offline engine latency_ms = 20, rows from /tmp/wtbench/base/eval/datasets/sample.jsonl
  concurrency 1         2 rows in   0.25 s        7.9 rows/s   linear      7.9   100.0 % of linear
  concurrency 10       10 rows in   0.19 s       54.1 rows/s   linear     79.2    68.2 % of linear
  concurrency 100     100 rows in   0.66 s      152.7 rows/s   linear    792.3    19.3 % of linear   (2 rows failed)
  target: linear to 100 (counted as ≥ 90 % of linear): MISSED (19.3 %)
"
        );
    }

    #[test]
    fn retrieval_section() {
        let run = |data, scale: f64| meshops::bench::SearchRun {
            data,
            upsert_secs: 2.78,
            upsert_points_per_s: 1796.0,
            index_secs: 1.5,
            indexed_vectors: 5000,
            plain_p50_us: 900.0 * scale,
            plain_p99_us: 1200.0,
            edge_p50_us: 150.0 * scale,
            edge_p99_us: 300.0,
            scan_p50_us: 1800.0,
            scan_p99_us: 2500.0,
            recall: 0.97,
            recall_at_4: 0.99,
            wider: vec![meshops::bench::EfRun {
                hnsw_ef: 256,
                p50_us: 190.0 * scale,
                p99_us: 400.0,
                recall: 0.99,
                recall_at_4: 1.0,
            }],
        };
        let f = RetrievalFigures {
            points: 5000,
            dimension: 384,
            top_k: 10,
            queries: 50,
            upsert_batch: 1000,
            index: meshops::config::IndexSettings { hnsw_ef: 128, ..Default::default() },
            runs: vec![
                run(meshops::bench::Data::EmbeddingLike, 1.0),
                run(meshops::bench::Data::Uniform, 2.0),
            ],
            ingest_files: 21,
            ingest_chunks: 177,
            ingest_secs: 0.66,
            ingest_chunks_per_s: 268.0,
            embed_chunks_per_s: 886.0,
        };
        assert_eq!(
            printed(|o| retrieval(o, &f)),
            "
== retrieval: qdrant-edge, 5000 synthetic 384-d unit vectors (cosine) per data set, top 10, 50 queries
  index settings: HNSW m 16 ef_construct 100 hnsw_ef 128 quantization None, threshold 10000 KiB
  embedding-like (32 latent dims + 30 % noise):
    upsert 1796 points/s (2.78 s, batches of 1000)   index built in 1.50 s (5000 of 5000 vectors indexed)
    exact scan  p50     1800 µs   p99     2500 µs   (plain Rust, one thread: the reference)
    unindexed   p50      900 µs   p99     1200 µs   0.50× the scan   (qdrant-edge before the build)
    indexed     p50      150 µs   p99      300 µs   0.083× the scan   recall@10 0.970   recall@4 0.990
    hnsw_ef 256  p50      190 µs   p99      400 µs   0.106× the scan   recall@10 0.990   recall@4 1.000
  uniform on the sphere:
    upsert 1796 points/s (2.78 s, batches of 1000)   index built in 1.50 s (5000 of 5000 vectors indexed)
    exact scan  p50     1800 µs   p99     2500 µs   (plain Rust, one thread: the reference)
    unindexed   p50     1800 µs   p99     1200 µs   1.00× the scan   (qdrant-edge before the build)
    indexed     p50      300 µs   p99      300 µs   0.167× the scan   recall@10 0.970   recall@4 0.990
    hnsw_ef 256  p50      380 µs   p99      400 µs   0.211× the scan   recall@10 0.990   recall@4 1.000
  target (embedding-like): indexed p50 ≤ 0.1× the scan with recall@4 ≥ 0.95: met
  ingest   268 chunks/s (21 files, 177 chunks in 0.66 s: chunk + offline embed + upsert)   embedder alone 886 chunks/s
"
        );
        // Recall short at the configured beam, met at a wider one: named.
        let mut f = f;
        f.runs[0].recall_at_4 = 0.9;
        f.runs[0].wider[0].p50_us = 170.0;
        let text = printed(|o| retrieval(o, &f));
        assert!(
            text.contains("recall@4 ≥ 0.95: met at hnsw_ef 256; MISSED at the configured 128\n"),
            "{text}"
        );
        f.runs[0].wider[0].recall_at_4 = 0.94;
        assert!(printed(|o| retrieval(o, &f)).contains("recall@4 ≥ 0.95: MISSED\n"));
    }

    #[test]
    fn startup_section() {
        let f = StartupFigures {
            warm_ms: vec![129.9],
            warm_median_ms: 129.9,
            cold_ms: 1070.7,
            exec_ms: 21.5,
            health_poll_ms: 2,
        };
        assert_eq!(
            printed(|o| startup(o, &f)),
            "
== startup: exec of `meshops serve` → health SERVING (spawned binary, health polled every 2 ms)
  corpus already ingested    129.9 ms  (median of 1: 129.9)
  first start, ingesting    1070.7 ms
  bare exec (meshops --version to exit) 21.5 ms
"
        );
    }

    #[test]
    fn options_keep_every_argument() {
        let args = Args {
            name: Which::Retrieval,
            quick: true,
            points: Some(7),
            data: Some(DataSet::Uniform),
            requests: Some(8),
            seconds: Some(0.25),
            sequential_only: true,
        };
        let o = bench::Options::from(&args);
        assert_eq!(o.name, bench::Which::Retrieval);
        assert!(o.quick && o.sequential_only);
        assert_eq!((o.points, o.requests, o.seconds), (Some(7), Some(8), Some(0.25)));
        assert_eq!(o.data, Some(bench::Data::Uniform));
        assert!(o.runs(bench::Which::Retrieval) && !o.runs(bench::Which::Mesh));
    }
}
