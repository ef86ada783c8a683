//! `meshops bench startup`: time from exec of `meshops serve` to health
//! SERVING with the sample corpus already ingested, beside the bare cost
//! of exec (`meshops --version` to exit) and a cold start that ingests
//! the corpus first.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{BenchError, Options, TempDir, fail, median};
use crate::config::MeshSpec;

/// Longest a start may take before the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(120);

/// How often health is asked while a start is timed, in ms: the figures'
/// resolution.
const POLL_MS: u64 = 2;

/// The figures of `meshops bench startup`, measured in one run.
#[derive(Debug, Clone)]
pub struct StartupFigures {
    /// Starts with the corpus already ingested, each in ms from exec of
    /// `meshops serve` to health SERVING, in the order run.
    pub warm_ms: Vec<f64>,
    /// The median of `warm_ms`: the figure.
    pub warm_median_ms: f64,
    /// The first start, which ingests the corpus, in ms to SERVING.
    pub cold_ms: f64,
    /// Bare exec (`meshops --version` to exit), in ms: what any start
    /// costs before meshops does anything.
    pub exec_ms: f64,
    /// How often health was asked during a start, in ms: the resolution of
    /// `warm_ms` and `cold_ms`.
    pub health_poll_ms: u64,
}

pub async fn run(spec: MeshSpec, opts: &Options) -> Result<StartupFigures, BenchError> {
    let exe = std::env::current_exe().map_err(|e| fail("the meshops binary", e))?;
    let runs = if opts.quick { 1 } else { 5 };
    let data = TempDir::new("startup")?;
    let t = Instant::now();
    let status = Command::new(&exe)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| fail(exe.display().to_string(), e))?;
    let exec_ms = t.elapsed().as_secs_f64() * 1e3;
    if !status.success() {
        return Err(fail("meshops --version", status));
    }
    let cold = serve_once(&exe, &spec, data.path()).await?;
    let mut warm = Vec::new();
    for _ in 0..runs {
        warm.push(serve_once(&exe, &spec, data.path()).await?);
    }
    let warm_median_ms = median(&warm);
    Ok(StartupFigures { warm_ms: warm, warm_median_ms, cold_ms: cold, exec_ms, health_poll_ms: POLL_MS })
}

/// Spawns `meshops serve` on a free port with `data` as its data dir and
/// returns ms until health says SERVING; then stops it with SIGTERM.
async fn serve_once(
    exe: &std::path::Path,
    spec: &MeshSpec,
    data: &std::path::Path,
) -> Result<f64, BenchError> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail("free port", e))?;
        l.local_addr().map_err(|e| fail("free port", e))?.port()
    };
    let t = Instant::now();
    let child = Command::new(exe)
        .arg("--root")
        .arg(&spec.root)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("MESHOPS__RETRIEVAL__DATA_DIR", data)
        .env("MESHOPS__TELEMETRY__EXPORT", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(exe.display().to_string(), e))?;
    let mut child = Running(child);
    let url = format!("http://127.0.0.1:{port}");
    loop {
        if t.elapsed() > GIVE_UP {
            return Err(fail("startup", format!("not SERVING after {} s", GIVE_UP.as_secs())));
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(fail("startup", format!("meshops serve exited early: {status}")));
        }
        if serving(&url).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    child.stop().await;
    Ok(ms)
}

async fn serving(url: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.to_string()) else { return false };
    let Ok(channel) = endpoint.connect().await else { return false };
    let mut health = HealthClient::new(channel);
    match health.check(HealthCheckRequest { service: String::new() }).await {
        Ok(r) => r.into_inner().status == ServingStatus::Serving as i32,
        Err(_) => false,
    }
}

/// The spawned server; killed if the bench stops early.
struct Running(Child);

impl Running {
    /// SIGTERM (a graceful drain, so the store is closed cleanly), then
    /// wait for exit; SIGKILL after 10 s.
    async fn stop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
