//! `meshops bench gateway` and `meshops bench inflight`: the gateway over
//! loopback gRPC.
//!
//! - `gateway`: `Ask` in zero-work mode under a load generator with many
//!   concurrent HTTP/2 streams over a few connections, against a bare tonic
//!   server whose unary `Ask` echoes the query, started in the same run on
//!   the same server set-up, driven by the same client.
//! - `inflight`: 10,000 `Ask` calls at once with the offline engine's
//!   `latency_ms = 200`: throughput against the Little's-law bound
//!   (in flight / unloaded latency) and peak RSS.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::Stream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use super::{Args, BenchError, Samples, TempDir, fail, median, peak_rss_mib, ratio, rss_mib, verdict};
use crate::config::MeshSpec;
use crate::proto;
use crate::proto::gateway_client::GatewayClient;
use crate::proto::gateway_server::{Gateway, GatewayServer};

/// A bare tonic `Gateway` whose `Ask` returns the query as the answer.
struct Echo;

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::AskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Gateway for Echo {
    async fn ask(&self, request: Request<proto::AskRequest>) -> Result<Response<proto::AskResponse>, Status> {
        Ok(Response::new(proto::AskResponse { answer: request.into_inner().query, ..Default::default() }))
    }

    type AskStreamStream = EventStream;

    async fn ask_stream(&self, _: Request<proto::AskRequest>) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("echo serves Ask only"))
    }

    async fn describe_mesh(
        &self,
        _: Request<proto::DescribeMeshRequest>,
    ) -> Result<Response<proto::MeshDescription>, Status> {
        Ok(Response::new(proto::MeshDescription::default()))
    }
}

/// Starts the echo server on 127.0.0.1:0 with the gateway's socket set-up
/// (TCP_NODELAY, tonic defaults); returns its address and a stopper.
async fn start_echo() -> Result<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>), BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail("bind echo", e))?;
    let addr = listener.local_addr().map_err(|e| fail("echo address", e))?;
    let incoming =
        futures::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
            conn.and_then(|stream| {
                stream.set_nodelay(true)?;
                Ok(stream)
            })
        });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Server::builder().add_service(GatewayServer::new(Echo)).serve_with_incoming_shutdown(
        incoming,
        async {
            let _ = rx.await;
        },
    ));
    Ok((addr, tx))
}

/// `connections` HTTP/2 connections to `addr`.
async fn connect(addr: std::net::SocketAddr, connections: usize) -> Result<Vec<Channel>, BenchError> {
    let mut out = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| fail("endpoint", e))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| fail(format!("connect {addr}"), e))?;
        out.push(channel);
    }
    Ok(out)
}

fn request() -> proto::AskRequest {
    proto::AskRequest { query: super::QUERY.into(), ..Default::default() }
}

/// Requests per second completed by `streams` callers on each of
/// `channels`, counted from `warmup` after the start for `measure`.
async fn load(
    channels: &[Channel],
    streams: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<(f64, u64), BenchError> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let count_from = start + warmup;
    let end = count_from + measure;
    let mut tasks = Vec::new();
    for channel in channels {
        for _ in 0..streams {
            let mut client = GatewayClient::new(channel.clone());
            let (done, failed) = (done.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let ok = client.ask(request()).await.is_ok();
                    let now = Instant::now();
                    if now >= count_from && now < end {
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.map_err(|e| fail("load task", e))?;
    }
    Ok((done.load(Ordering::Relaxed) as f64 / measure.as_secs_f64(), failed.load(Ordering::Relaxed)))
}

/// `meshops bench gateway`.
pub async fn throughput(mut spec: MeshSpec, args: &Args) -> Result<(), BenchError> {
    let (connections, streams) = (4usize, 64usize);
    let measure = super::secs(args.seconds.unwrap_or(if args.quick { 0.5 } else { 5.0 }));
    let warmup = Duration::from_millis(if args.quick { 100 } else { 500 });
    let rounds = if args.quick { 1 } else { 3 };
    super::zero_mode(&mut spec, 0);
    // Shedding is not what is measured here.
    spec.settings.gateway.max_in_flight = 100_000;
    spec.settings.gateway.max_queued = 100_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail("bind gateway", e))?;
    let server = crate::gateway::start(spec, listener).await.map_err(|e| fail("gateway start", e))?;
    let (echo_addr, echo_stop) = start_echo().await?;
    let mesh_channels = connect(server.addr, connections).await?;
    let echo_channels = connect(echo_addr, connections).await?;
    println!(
        "\n== gateway: Ask over loopback gRPC, zero-work mode, {connections} connections × {streams} streams, {:.1} s per run, {rounds} rounds (median)",
        measure.as_secs_f64()
    );
    let (mut mesh_rps, mut echo_rps) = (Vec::new(), Vec::new());
    let mut failures = 0;
    for _ in 0..rounds {
        let (e, f1) = load(&echo_channels, streams, warmup, measure).await?;
        let (m, f2) = load(&mesh_channels, streams, warmup, measure).await?;
        echo_rps.push(e);
        mesh_rps.push(m);
        failures += f1 + f2;
    }
    let (m, e) = (median(&mesh_rps), median(&echo_rps));
    println!("  meshops Ask      {m:>9.0} requests/s   (runs: {})", list(&mesh_rps));
    println!("  bare tonic echo  {e:>9.0} requests/s   (runs: {})", list(&echo_rps));
    println!(
        "  meshops / echo {:.1} %   target ≥ 50 %: {}{}",
        ratio(m, e) * 100.0,
        verdict(ratio(m, e) >= 0.5),
        if failures > 0 { format!("   ({failures} calls failed)") } else { String::new() }
    );
    let _ = echo_stop.send(());
    server.shutdown().await.map_err(|e| fail("gateway shutdown", e))?;
    Ok(())
}

fn list(xs: &[f64]) -> String {
    xs.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

/// `meshops bench inflight`: with the offline engine, then with the
/// zero-work model and store (same latency), which leaves only the
/// gateway's and the mesh's own cost.
pub async fn inflight(spec: MeshSpec, args: &Args) -> Result<(), BenchError> {
    let n = args.requests.unwrap_or(if args.quick { 500 } else { 10_000 }).max(1);
    let latency_ms = 200;
    let mut offline = spec.clone();
    super::offline_latency(&mut offline, latency_ms);
    inflight_run(offline, n, latency_ms, "offline engine").await?;
    let mut zero = spec;
    super::zero_mode(&mut zero, latency_ms);
    inflight_run(zero, n, latency_ms, "zero-work model and store").await
}

async fn inflight_run(mut spec: MeshSpec, n: usize, latency_ms: u64, model: &str) -> Result<(), BenchError> {
    let connections = 10usize;
    let data = TempDir::new("inflight")?;
    spec.settings.retrieval.data_dir = data.path().to_path_buf();
    // The admission limits would shed most of the burst: raised for this run.
    spec.settings.gateway.max_in_flight = n * 2;
    spec.settings.gateway.max_queued = n * 2;
    spec.settings.gateway.request_timeout_ms = 600_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail("bind gateway", e))?;
    let server = crate::gateway::start(spec, listener).await.map_err(|e| fail("gateway start", e))?;
    let channels = connect(server.addr, connections).await?;
    // Unloaded latency: a few requests alone.
    let mut alone = Samples::default();
    let mut client = GatewayClient::new(channels[0].clone());
    for _ in 0..3 {
        let t = Instant::now();
        client.ask(request()).await.map_err(|e| fail("inflight warm-up", e))?;
        alone.push(t.elapsed().as_secs_f64());
    }
    let latency = alone.pct(0.5);
    let rss_before = rss_mib().unwrap_or(0.0);
    println!(
        "\n== inflight: {n} Ask calls at once over {connections} connections, {model}, latency_ms = {latency_ms}"
    );
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut client = GatewayClient::new(channels[i % connections].clone());
        tasks.push(tokio::spawn(async move { client.ask(request()).await.is_ok() }));
    }
    let mut ok = 0usize;
    for task in tasks {
        if task.await.map_err(|e| fail("inflight task", e))? {
            ok += 1;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let rps = ok as f64 / elapsed;
    let bound = n as f64 / latency;
    let peak = peak_rss_mib().unwrap_or(0.0);
    println!(
        "  unloaded latency {:.1} ms (3 model calls × {latency_ms} ms + the rest); all {n} done in {:.2} s, {ok} ok",
        latency * 1e3,
        elapsed
    );
    println!(
        "  throughput {rps:.0} requests/s   Little's-law bound {n}/{:.3} s = {bound:.0} requests/s   {:.1} % of bound   target ≥ 90 %: {}",
        latency,
        ratio(rps, bound) * 100.0,
        verdict(ratio(rps, bound) >= 0.9)
    );
    println!(
        "  peak RSS (VmHWM, bench process: gateway + mesh + client) {peak:.0} MiB (before the burst {rss_before:.0} MiB)   target ≤ 512 MiB: {}",
        verdict(peak <= 512.0)
    );
    let store = server.store.clone();
    server.shutdown().await.map_err(|e| fail("gateway shutdown", e))?;
    // The store flushes when its last handle drops: wait for the mesh's
    // threads to let go before the data dir is removed.
    let until = Instant::now() + Duration::from_secs(10);
    while std::sync::Arc::strong_count(&store) > 1 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(store);
    drop(data);
    Ok(())
}
