//! `meshops bench mesh`: the 4-agent pipeline (router → retriever →
//! summarizer → critic) in process with the zero-work model and store:
//! µs per request sequentially and throughput at concurrency 1, 16 and 256,
//! beside the floor: bare actix messages round-tripped in the same shape
//! (one from the caller into an actor on a worker arbiter, four from there
//! to actors on the same arbiter, in sequence; arbiters used round robin).
//!
//! The sequential figure is measured twice: with the caller on one of the
//! mesh's threads (as the gateway's connection tasks and a single-threaded
//! runtime's caller are; the whole request runs on that thread, and the
//! target applies to it), and with the caller on another runtime (each
//! request wakes a mesh thread and is woken back).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, Context, Handler, Message, ResponseFuture};

use super::{BenchError, Options, fail, zero_mode};
use crate::config::MeshSpec;
use crate::mesh::{Ask, AskInput, MeshHandle};

/// Round trips of one request: `Ask` into the orchestrator, then one
/// `RunStep` per agent.
const HOPS: usize = 5;

/// Target: µs per request, sequential, on the 2-core machine.
const TARGET_US: f64 = 14.0;

/// The figures of `meshops bench mesh`, measured in one run.
#[derive(Debug, Clone)]
pub struct MeshFigures {
    /// The agents one request went through, in order (the warm-up
    /// request's steps): the pipeline the figures are for.
    pub pipeline: Vec<String>,
    /// Requests per figure (sequential runs and each concurrency level).
    pub requests: usize,
    /// Mean µs per request, one after another, with the caller on one of
    /// the mesh's threads (the target's figure).
    pub seq_on_thread_us: f64,
    /// The floor and the other figures; `None` with `sequential_only`,
    /// which measures only `seq_on_thread_us`.
    pub compared: Option<MeshComparison>,
    /// The target for `seq_on_thread_us`, in µs per request.
    pub target_us: f64,
    /// Whether `seq_on_thread_us` is within `target_us`.
    pub met: bool,
}

/// The mesh's figures beside the floor (bare actix round trips of the
/// same shape), measured in the same run as [`MeshFigures`].
#[derive(Debug, Clone)]
pub struct MeshComparison {
    /// Round trips in one floor chain (and in one mesh request): `Ask`
    /// into the orchestrator, then one `RunStep` per agent.
    pub hops: usize,
    /// Mean µs per floor chain, one after another, caller on a floor
    /// worker thread: the floor for `seq_on_thread_us`.
    pub floor_seq_us: f64,
    /// Mean µs per mesh request, one after another, caller on another
    /// runtime (each request wakes a mesh thread and is woken back).
    pub seq_off_thread_us: f64,
    /// Mean µs per floor chain with the caller on another runtime: the
    /// floor for `seq_off_thread_us`.
    pub floor_off_thread_us: f64,
    /// Throughput at each concurrency level, mesh beside floor.
    pub concurrency: Vec<ConcurrencyRow>,
}

/// Throughput of the mesh and of the floor with the same number of
/// callers sharing the same number of calls.
#[derive(Debug, Clone)]
pub struct ConcurrencyRow {
    /// Callers at once.
    pub callers: usize,
    /// Mesh requests completed per second.
    pub mesh_rps: f64,
    /// Floor chains completed per second.
    pub floor_rps: f64,
}

pub async fn run(mut spec: MeshSpec, opts: &Options) -> Result<MeshFigures, BenchError> {
    let n = opts.requests.unwrap_or(if opts.quick { 2_000 } else { 50_000 }).max(16);
    zero_mode(&mut spec, 0);
    let arbiters = spec.settings.mesh.arbiters.max(1);
    let mesh = Arc::new(start_mesh(spec).await?);
    let answer = mesh.ask(ask()).await.map_err(|e| fail("mesh warm-up request", e))?;
    let pipeline: Vec<String> = answer.steps.iter().map(|s| s.agent.clone()).collect();
    if pipeline.len() != 4 {
        return Err(fail("mesh", format!("expected the 4-agent pipeline, ran {}", pipeline.join(" → "))));
    }
    let figures = |seq_on_thread_us: f64, compared: Option<MeshComparison>| MeshFigures {
        pipeline: pipeline.clone(),
        requests: n,
        seq_on_thread_us,
        compared,
        target_us: TARGET_US,
        met: seq_on_thread_us <= TARGET_US,
    };
    if opts.sequential_only {
        mesh_seq_on_thread(&mesh, n / 10).await?;
        let mesh_seq = mesh_seq_on_thread(&mesh, n).await?;
        return Ok(figures(mesh_seq, None));
    }
    let floor = Arc::new(Floor::start(arbiters)?);
    // Warm both paths.
    mesh_seq_on_thread(&mesh, n / 10).await?;
    floor_seq_on_thread(&floor, n / 10).await?;
    measure_seq(n / 10, || mesh.ask(ask()), |r| r.is_ok()).await?;
    measure_seq(n / 10, || floor.chain(), |ok| *ok).await?;

    // As a gRPC connection's task calls it (and as a single-threaded
    // runtime's caller does): on one of the mesh's threads, where the
    // whole request runs without waking another thread.
    let mesh_seq = mesh_seq_on_thread(&mesh, n).await?;
    let floor_seq = floor_seq_on_thread(&floor, n).await?;
    // From another runtime: two thread wake-ups per request (in and out).
    let mesh_off = measure_seq(n, || mesh.ask(ask()), |r| r.is_ok()).await?;
    let floor_off = measure_seq(n, || floor.chain(), |ok| *ok).await?;
    let mut concurrency = Vec::with_capacity(3);
    for c in [1usize, 16, 256] {
        let m = mesh.clone();
        let mesh_rps = measure_concurrent(n, c, move || {
            let m = m.clone();
            async move { m.ask(ask()).await.is_ok() }
        })
        .await?;
        let f = floor.clone();
        let floor_rps = measure_concurrent(n, c, move || {
            let f = f.clone();
            async move { f.chain().await }
        })
        .await?;
        concurrency.push(ConcurrencyRow { callers: c, mesh_rps, floor_rps });
    }
    if let Ok(floor) = Arc::try_unwrap(floor) {
        floor.stop();
    }
    if let Ok(mesh) = Arc::try_unwrap(mesh) {
        let _ = tokio::task::spawn_blocking(move || mesh.shutdown()).await;
    }
    Ok(figures(
        mesh_seq,
        Some(MeshComparison {
            hops: HOPS,
            floor_seq_us: floor_seq,
            seq_off_thread_us: mesh_off,
            floor_off_thread_us: floor_off,
            concurrency,
        }),
    ))
}

/// Starts the mesh of `spec` with its configured (here: zero-work) parts.
pub async fn start_mesh(spec: MeshSpec) -> Result<MeshHandle, BenchError> {
    let runtime = crate::runtime::start(Arc::new(spec), crate::runtime::Options::default())
        .await
        .map_err(|e| fail("mesh start", e))?;
    Ok(runtime.mesh)
}

/// One request as the gateway builds it: a deadline, a cancellation token,
/// a trace id and a request span.
pub fn ask() -> Ask {
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = "meshops.v1.Gateway/Ask",
        otel.kind = "server",
        trace_id = tracing::field::Empty,
        meshops.intent = tracing::field::Empty,
        meshops.variant = tracing::field::Empty,
    );
    let input = AskInput { query: super::QUERY.into(), ..Default::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    Ask::new(input, deadline, "00000000000000000000000000000000".into(), span)
}

/// [`measure_seq`] of mesh requests from a task on the mesh's first
/// worker thread.
async fn mesh_seq_on_thread(mesh: &Arc<MeshHandle>, n: usize) -> Result<f64, BenchError> {
    let m = mesh.clone();
    on_thread(|f| mesh.spawn_on(0, f), async move { measure_seq(n, || m.ask(ask()), |r| r.is_ok()).await })
        .await
}

/// [`measure_seq`] of floor chains from a task on the floor's first
/// worker thread.
async fn floor_seq_on_thread(floor: &Arc<Floor>, n: usize) -> Result<f64, BenchError> {
    let Some(arbiter) = floor.arbiters.first() else {
        return Err(fail("floor", "no arbiter"));
    };
    let f = floor.clone();
    on_thread(|fut| arbiter.spawn(fut), async move { measure_seq(n, || f.chain_on(0), |ok| *ok).await }).await
}

/// Runs `measure` as a task that `spawn` places on a worker thread and
/// waits for its figure.
async fn on_thread<M>(
    spawn: impl FnOnce(futures::future::BoxFuture<'static, ()>) -> bool,
    measure: M,
) -> Result<f64, BenchError>
where
    M: std::future::Future<Output = Result<f64, BenchError>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !spawn(Box::pin(async move {
        let _ = tx.send(measure.await);
    })) {
        return Err(fail("mesh bench", "the worker thread has stopped"));
    }
    rx.await.map_err(|e| fail("mesh bench", e))?
}

/// Mean µs per call over `n` calls made one after another.
async fn measure_seq<F, Fut, T>(n: usize, mut call: F, ok: impl Fn(&T) -> bool) -> Result<f64, BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let t = Instant::now();
    for _ in 0..n {
        if !ok(&call().await) {
            return Err(fail("mesh bench", "a request failed"));
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
}

/// Calls per second with `c` callers sharing `n` calls.
async fn measure_concurrent<F, Fut>(n: usize, c: usize, call: F) -> Result<f64, BenchError>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let call = Arc::new(call);
    let left = Arc::new(AtomicUsize::new(n));
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(c);
    for _ in 0..c {
        let (call, left) = (call.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            while left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| x.checked_sub(1)).is_ok() {
                if !call().await {
                    return false;
                }
            }
            true
        }));
    }
    for task in tasks {
        if !task.await.map_err(|e| fail("mesh bench task", e))? {
            return Err(fail("mesh bench", "a request failed"));
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// The floor's request: one message into the front actor.
#[derive(Message)]
#[rtype(result = "u32")]
struct Chain;

/// One bare round trip to a worker actor.
#[derive(Message)]
#[rtype(result = "u32")]
struct Ping(u32);

struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Ping> for Echo {
    type Result = ResponseFuture<u32>;

    fn handle(&mut self, msg: Ping, _: &mut Self::Context) -> Self::Result {
        // A future, as agent handlers return one.
        Box::pin(async move { msg.0 + 1 })
    }
}

/// Stands where an orchestrator stands: sends four pings in sequence to
/// actors on its own arbiter, as an orchestrator does.
struct Front {
    echoes: Arc<Vec<Addr<Echo>>>,
    next: usize,
}

impl Actor for Front {
    type Context = Context<Self>;
}

impl Handler<Chain> for Front {
    type Result = ResponseFuture<u32>;

    fn handle(&mut self, _: Chain, _: &mut Self::Context) -> Self::Result {
        let echoes = self.echoes.clone();
        let start = self.next;
        self.next = self.next.wrapping_add(1);
        Box::pin(async move {
            let mut x = 0;
            for i in 0..HOPS - 1 {
                if let Some(e) = echoes.get((start + i) % echoes.len().max(1)) {
                    x = e.send(Ping(x)).await.unwrap_or(x);
                }
            }
            x
        })
    }
}

/// The floor's actor system on its own threads, laid out like the mesh's.
struct Floor {
    fronts: Vec<Addr<Front>>,
    /// The arbiter of each front.
    arbiters: Vec<actix::ArbiterHandle>,
    next: AtomicUsize,
    system: actix::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Floor {
    fn start(arbiters: usize) -> Result<Floor, BenchError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bench-floor".into())
            .spawn(move || {
                let system = actix::System::new();
                let started: Vec<(Addr<Front>, actix::ArbiterHandle)> = system.block_on(async move {
                    (0..arbiters)
                        .map(|_| {
                            let arbiter = Arbiter::new();
                            // One echo per agent of the 4-step flow.
                            let echoes: Vec<Addr<Echo>> = (0..HOPS - 1)
                                .map(|_| Echo::start_in_arbiter(&arbiter.handle(), |_| Echo))
                                .collect();
                            let echoes = Arc::new(echoes);
                            let front = Front::start_in_arbiter(&arbiter.handle(), move |_| Front {
                                echoes,
                                next: 0,
                            });
                            (front, arbiter.handle())
                        })
                        .collect()
                });
                let _ = tx.send((started, actix::System::current()));
                let _ = system.run();
            })
            .map_err(|e| fail("floor thread", e))?;
        let (started, system) = rx.recv().map_err(|e| fail("floor start", e))?;
        let (fronts, arbiters) = started.into_iter().unzip();
        Ok(Floor { fronts, arbiters, next: AtomicUsize::new(0), system, thread: Some(thread) })
    }

    /// One chain through the front on arbiter `i`.
    async fn chain_on(&self, i: usize) -> bool {
        match self.fronts.get(i) {
            Some(f) => f.send(Chain).await.is_ok(),
            None => false,
        }
    }

    /// One chain of round trips through the next front.
    async fn chain(&self) -> bool {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.fronts.len().max(1);
        match self.fronts.get(i) {
            Some(f) => f.send(Chain).await.is_ok(),
            None => false,
        }
    }

    fn stop(mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
