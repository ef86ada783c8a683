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

use super::{BenchError, Options, Samples, TempDir, fail, median, peak_rss_mib, ratio, rss_mib};
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

    async fn delete_session(
        &self,
        _: Request<proto::DeleteSessionRequest>,
    ) -> Result<Response<proto::DeleteSessionResponse>, Status> {
        Err(Status::unimplemented("echo serves Ask only"))
    }

    async fn submit_feedback(
        &self,
        _: Request<proto::FeedbackRequest>,
    ) -> Result<Response<proto::FeedbackAck>, Status> {
        Err(Status::unimplemented("echo serves Ask only"))
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

/// The figures of `meshops bench gateway`, measured in one run.
#[derive(Debug, Clone)]
pub struct GatewayFigures {
    /// HTTP/2 connections of the load generator, to each server.
    pub connections: usize,
    /// Concurrent callers (streams) on each connection.
    pub streams: usize,
    /// Seconds counted per load run (after its warm-up).
    pub seconds_per_run: f64,
    /// Load runs per server, interleaved; the figures are their median.
    pub rounds: usize,
    /// meshops `Ask`, requests per second: the median of `meshops_runs`.
    pub meshops_rps: f64,
    /// meshops `Ask`, requests per second of each run.
    pub meshops_runs: Vec<f64>,
    /// The bare tonic echo server, requests per second: the median of
    /// `echo_runs`.
    pub echo_rps: f64,
    /// The bare tonic echo server, requests per second of each run.
    pub echo_runs: Vec<f64>,
    /// `meshops_rps / echo_rps` (0 when the echo did nothing).
    pub ratio: f64,
    /// The target for `ratio`: at least this fraction of the echo.
    pub target_ratio: f64,
    /// Whether `ratio` reaches `target_ratio`.
    pub met: bool,
    /// Calls that failed while counted, both servers together: a figure
    /// with failures is not a throughput.
    pub failed_calls: u64,
}

/// `meshops bench gateway`.
pub async fn throughput(mut spec: MeshSpec, opts: &Options) -> Result<GatewayFigures, BenchError> {
    let (connections, streams) = (4usize, 64usize);
    let measure = super::secs(opts.seconds.unwrap_or(if opts.quick { 0.5 } else { 5.0 }));
    let warmup = Duration::from_millis(if opts.quick { 100 } else { 500 });
    let rounds = if opts.quick { 1 } else { 3 };
    super::zero_mode(&mut spec, 0);
    // Shedding is not what is measured here.
    spec.settings.gateway.max_in_flight = 100_000;
    spec.settings.gateway.max_queued = 100_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail("bind gateway", e))?;
    let server = crate::gateway::start(spec, listener).await.map_err(|e| fail("gateway start", e))?;
    let (echo_addr, echo_stop) = start_echo().await?;
    let mesh_channels = connect(server.addr, connections).await?;
    let echo_channels = connect(echo_addr, connections).await?;
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
    let _ = echo_stop.send(());
    server.shutdown().await.map_err(|e| fail("gateway shutdown", e))?;
    let target_ratio = 0.5;
    Ok(GatewayFigures {
        connections,
        streams,
        seconds_per_run: measure.as_secs_f64(),
        rounds,
        meshops_rps: m,
        meshops_runs: mesh_rps,
        echo_rps: e,
        echo_runs: echo_rps,
        ratio: ratio(m, e),
        target_ratio,
        met: ratio(m, e) >= target_ratio,
        failed_calls: failures,
    })
}

/// The figures of one `meshops bench inflight` run: `requests` calls sent
/// at once, against the Little's-law bound measured in the same run.
#[derive(Debug, Clone)]
pub struct InflightRun {
    /// What answers the model calls: the offline engine, or the zero-work
    /// model and store (which leaves only the gateway's and mesh's cost).
    pub engine: &'static str,
    /// Calls sent at once.
    pub requests: usize,
    /// HTTP/2 connections the calls share.
    pub connections: usize,
    /// Latency injected into every model call, in ms.
    pub model_latency_ms: u64,
    /// Median latency of a few calls sent alone before the burst, in
    /// seconds: the latency of the Little's-law bound.
    pub unloaded_latency_s: f64,
    /// Seconds from the first call sent to the last answered.
    pub elapsed_s: f64,
    /// Calls answered with `OK`.
    pub ok: usize,
    /// Calls answered with `OK` per second of `elapsed_s`.
    pub throughput_rps: f64,
    /// Little's-law bound: `requests / unloaded_latency_s`, requests per
    /// second.
    pub bound_rps: f64,
    /// `throughput_rps / bound_rps`.
    pub of_bound: f64,
    /// The target for `of_bound`: at least this fraction of the bound.
    pub target_of_bound: f64,
    /// Whether `of_bound` reaches `target_of_bound`.
    pub throughput_met: bool,
    /// Peak resident memory of the bench process (gateway, mesh and
    /// client) after the burst (`VmHWM`), in MiB; 0 where unknown.
    pub peak_rss_mib: f64,
    /// Resident memory just before the burst (`VmRSS`), in MiB; 0 where
    /// unknown.
    pub rss_before_mib: f64,
    /// The limit for `peak_rss_mib`, in MiB.
    pub rss_limit_mib: f64,
    /// Whether `peak_rss_mib` is within `rss_limit_mib`.
    pub rss_met: bool,
}

/// The figures of `meshops bench inflight`: the same burst with each
/// engine, one after the other in the same process.
#[derive(Debug, Clone)]
pub struct InflightFigures {
    /// With the offline engine (real retrieval and text work).
    pub offline: InflightRun,
    /// With the zero-work model and store at the same latency: only the
    /// gateway's and the mesh's own cost is left.
    pub zero_work: InflightRun,
}

/// `meshops bench inflight`: with the offline engine, then with the
/// zero-work model and store (same latency), which leaves only the
/// gateway's and the mesh's own cost.
pub async fn inflight(spec: MeshSpec, opts: &Options) -> Result<InflightFigures, BenchError> {
    let n = opts.requests.unwrap_or(if opts.quick { 500 } else { 10_000 }).max(1);
    let latency_ms = 200;
    let mut offline = spec.clone();
    super::offline_latency(&mut offline, latency_ms);
    let offline = inflight_run(offline, n, latency_ms, "offline engine").await?;
    let mut zero = spec;
    super::zero_mode(&mut zero, latency_ms);
    let zero_work = inflight_run(zero, n, latency_ms, "zero-work model and store").await?;
    Ok(InflightFigures { offline, zero_work })
}

async fn inflight_run(
    mut spec: MeshSpec,
    n: usize,
    latency_ms: u64,
    engine: &'static str,
) -> Result<InflightRun, BenchError> {
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
    let store = server.store.clone();
    server.shutdown().await.map_err(|e| fail("gateway shutdown", e))?;
    super::release_store(store).await;
    drop(data);
    let (target_of_bound, rss_limit_mib) = (0.9, 512.0);
    Ok(InflightRun {
        engine,
        requests: n,
        connections,
        model_latency_ms: latency_ms,
        unloaded_latency_s: latency,
        elapsed_s: elapsed,
        ok,
        throughput_rps: rps,
        bound_rps: bound,
        of_bound: ratio(rps, bound),
        target_of_bound,
        throughput_met: ratio(rps, bound) >= target_of_bound,
        peak_rss_mib: peak,
        rss_before_mib: rss_before,
        rss_limit_mib,
        rss_met: peak <= rss_limit_mib,
    })
}
