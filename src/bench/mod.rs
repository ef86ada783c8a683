//! `meshops bench`: benchmarks that measure their figures beside the limit
//! each is measured against, in the same run, on the same machine. Each
//! returns its figures as a typed value (`MeshFigures`, `GatewayFigures`,
//! …) that carries its limits and targets too; printing them is the
//! binary's business (`src/cli/bench.rs`).
//!
//! - [`mesh`]: the 4-agent pipeline in process with the zero-work model and
//!   store, against bare actix round trips of the same shape.
//! - [`gateway`]: `Ask` over loopback gRPC against a bare tonic echo server
//!   (`gateway`), and 10,000 requests in flight against Little's law
//!   (`inflight`).
//! - [`overhead`]: one completion straight to an OpenAI-wire server against
//!   the same completion through a one-agent flow.
//! - [`eval`]: eval rows/s against concurrency.
//! - [`retrieval`]: qdrant-edge search latency and ingest rate.
//! - [`startup`]: exec to health SERVING.
//! - [`external`]: `Ask` and the health check loaded by h2load, a separate
//!   process, as an operator would measure the gateway.
//!
//! Benchmarks assert nothing about time; `--quick` shrinks each to seconds
//! so a broken benchmark is noticed in CI.

pub mod eval;
pub mod external;
pub mod gateway;
pub mod mesh;
pub mod overhead;
pub mod retrieval;
pub mod startup;

pub use eval::EvalFigures;
pub use external::{ExternalFigures, ExternalRun};
pub use gateway::{GatewayFigures, InflightFigures, InflightRun};
pub use mesh::{ConcurrencyRow, MeshComparison, MeshFigures};
pub use overhead::OverheadFigures;
pub use retrieval::{Data, EfRun, RetrievalFigures, SearchRun};
pub use startup::StartupFigures;

use std::time::{Duration, Instant};

use crate::config::{EmbedderProvider, MeshSpec, ModelProfile, Provider, StoreBackend};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {message}")]
    Failed { what: String, message: String },
}

/// Shorthand for a [`BenchError`] naming what failed.
pub fn fail(what: impl Into<String>, e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed { what: what.into(), message: e.to_string() }
}

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Mesh,
    Gateway,
    Inflight,
    Overhead,
    Eval,
    Retrieval,
    Startup,
    External,
    /// Each of the above in turn.
    All,
}

/// What to run and at what size; the binary fills it from its arguments.
#[derive(Debug, Clone)]
pub struct Options {
    /// The benchmark to run (`All` runs each in turn).
    pub name: Which,
    /// Shrinks every benchmark to seconds (for CI: proves they run; times
    /// mean little).
    pub quick: bool,
    /// `retrieval`: synthetic points to search (default 100,000).
    pub points: Option<usize>,
    /// `retrieval`: only this data set (default: both, in turn).
    pub data: Option<Data>,
    /// `mesh`: requests per measurement; `inflight`: requests at once.
    pub requests: Option<usize>,
    /// `gateway`: seconds per load run.
    pub seconds: Option<f64>,
    /// `mesh`: only the sequential mesh figure, no floor and no concurrency
    /// runs (for counting instructions or allocations per request under
    /// valgrind).
    pub sequential_only: bool,
}

impl Options {
    /// Whether `which` is one of the benchmarks these options name.
    pub fn runs(&self, which: Which) -> bool {
        self.name == Which::All || self.name == which
    }
}

/// Cores and load average: figures from a busy machine are noise.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    format!("{cores} cores, load average {load}")
}

/// Peak resident memory of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    rss_field("VmHWM:")
}

/// Resident memory of this process now (`VmRSS`), in MiB.
pub fn rss_mib() -> Option<f64> {
    rss_field("VmRSS:")
}

fn rss_field(name: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Switches `spec` to the zero-work bench mode: every model profile becomes
/// the zero-work model (after `latency_ms`), and retrieval the zero-work
/// store and embedder. Agents, prompts, flows and spans stay as configured.
pub fn zero_mode(spec: &mut MeshSpec, latency_ms: u64) {
    for profile in spec.settings.models.values_mut() {
        *profile = zero_profile(latency_ms);
    }
    spec.settings.retrieval.backend = StoreBackend::Zero;
    spec.settings.retrieval.embedder.provider = EmbedderProvider::Zero;
    spec.settings.telemetry.export = false;
}

/// A `provider = "zero"` model profile.
pub fn zero_profile(latency_ms: u64) -> ModelProfile {
    ModelProfile {
        provider: Provider::Zero,
        model: crate::llm::zero::ZERO_MODEL.into(),
        latency_ms,
        ..ModelProfile::offline()
    }
}

/// Sets every offline profile's injected latency.
pub fn offline_latency(spec: &mut MeshSpec, latency_ms: u64) {
    for profile in spec.settings.models.values_mut() {
        if profile.provider == Provider::Offline {
            profile.latency_ms = latency_ms;
        }
    }
    spec.settings.telemetry.export = false;
}

/// Latencies, sorted on demand.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub fn push(&mut self, x: f64) {
        self.0.push(x);
    }

    pub fn push_since(&mut self, t: Instant) {
        self.0.push(t.elapsed().as_secs_f64() * 1e6);
    }

    /// The `p` quantile (0..1), nearest rank; 0 when empty.
    pub fn pct(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_by(f64::total_cmp);
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }
}

/// The median of a few figures (0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut s = Samples(xs.to_vec());
    s.pct(0.5)
}

/// A temporary directory removed on drop (best effort).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self, BenchError> {
        let path = std::env::temp_dir().join(format!("meshops-bench-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).map_err(|e| fail(format!("create {}", path.display()), e))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (up to 10 s) until `store` is the last handle of a stopped
/// server's store, then drops it: the store flushes when its last handle
/// drops, and the mesh's threads let go of theirs only as they end, so the
/// data dir must outlive them.
pub async fn release_store(store: crate::retrieval::SharedStore) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::sync::Arc::strong_count(&store) > 1 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(store);
}

/// `a / b` as a ratio (0 when `b` is 0).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Seconds as a `Duration`, clamped to something sensible.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.05, 3600.0))
}

/// A query from the shipped sample's topic, routed to the question flow.
pub const QUERY: &str = "How does the critic decide to reject a draft?";
