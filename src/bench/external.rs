//! `meshops bench external`: the gateway as an operator sees it, loaded by
//! a separate process. `h2load` (nghttp2's HTTP/2 load generator, Debian's
//! `nghttp2-client`) posts gRPC frames over h2c, 16 connections × 32
//! streams, to `meshops.v1.Gateway/Ask` and to the same server's
//! `grpc.health.v1.Health/Check`: the health check is the cheapest call
//! the same server, socket set-up and HTTP/2 stack can answer, so `Ask`'s
//! share of it is what the gateway and mesh cost on top of tonic. Run once
//! with the zero-work model and store (only the gateway and mesh are left)
//! and once with the offline engine (the embedded default, real retrieval
//! and text work).
//!
//! h2load counts HTTP statuses, not gRPC's: a call refused with a gRPC
//! status still has HTTP 200. So the server counts the answers it gave
//! with each status while h2load runs, and the figure is refused when any
//! was not `OK`.

use std::process::Stdio;
use std::time::Duration;

use prost::Message;

use super::{BenchError, Options, fail, ratio};
use crate::config::MeshSpec;
use crate::proto;

/// HTTP/2 connections h2load opens.
pub const CONNECTIONS: usize = 16;
/// Concurrent streams on each connection.
pub const STREAMS: usize = 32;

/// One engine's run: `Ask` and the health check on the same server.
#[derive(Debug, Clone)]
pub struct ExternalRun {
    /// What answers the model calls.
    pub engine: &'static str,
    /// `Ask` calls per second that h2load completed.
    pub ask_rps: f64,
    /// `Ask` calls answered `OK` while h2load ran, counted by the server.
    pub ask_ok: u64,
    /// `Ask` calls answered with another gRPC status (must be 0).
    pub ask_not_ok: u64,
    /// Health checks per second on the same server.
    pub health_rps: f64,
    /// `ask_rps / health_rps`.
    pub ratio: f64,
    /// The target for `ratio`.
    pub target_ratio: f64,
    /// Whether `ratio` reaches `target_ratio`.
    pub met: bool,
    /// µs of the machine's CPU time per `Ask` (cores × 1 s / `ask_rps`):
    /// an upper bound, h2load's own share included.
    pub cpu_us_per_ask: f64,
}

/// The figures of `meshops bench external`.
#[derive(Debug, Clone)]
pub struct ExternalFigures {
    pub connections: usize,
    pub streams: usize,
    /// Seconds h2load ran each load (after its warm-up).
    pub seconds: f64,
    /// `h2load --version`'s first line.
    pub h2load: String,
    pub zero_work: ExternalRun,
    pub offline: ExternalRun,
}

/// `meshops bench external`.
pub async fn run(spec: MeshSpec, opts: &Options) -> Result<ExternalFigures, BenchError> {
    let version = h2load_version().await?;
    let seconds = opts.seconds.unwrap_or(if opts.quick { 1.0 } else { 5.0 }).clamp(0.5, 600.0);
    let mut zero = spec.clone();
    super::zero_mode(&mut zero, 0);
    let zero_work = engine_run(zero, "zero-work model and store", seconds, 0.35).await?;
    let mut offline = spec;
    super::offline_latency(&mut offline, 0);
    let offline = engine_run(offline, "offline engine", seconds, 0.10).await?;
    Ok(ExternalFigures {
        connections: CONNECTIONS,
        streams: STREAMS,
        seconds,
        h2load: version,
        zero_work,
        offline,
    })
}

/// Whether h2load can be run here.
pub async fn available() -> bool {
    h2load_version().await.is_ok()
}

async fn h2load_version() -> Result<String, BenchError> {
    let out = tokio::process::Command::new("h2load")
        .arg("--version")
        .output()
        .await
        .map_err(|e| fail("h2load (install Debian's nghttp2-client)", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("h2load").trim().to_string())
}

/// A gRPC message frame: uncompressed flag, big-endian length, message.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

async fn engine_run(
    mut spec: MeshSpec,
    engine: &'static str,
    seconds: f64,
    target_ratio: f64,
) -> Result<ExternalRun, BenchError> {
    let data = super::TempDir::new("external")?;
    spec.settings.retrieval.data_dir = data.path().to_path_buf();
    // Shedding is not what is measured here.
    spec.settings.gateway.max_in_flight = 100_000;
    spec.settings.gateway.max_queued = 100_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail("bind gateway", e))?;
    let server = crate::gateway::start(spec, listener).await.map_err(|e| fail("gateway start", e))?;
    let base = format!("http://{}", server.addr);
    let ask = data.path().join("ask.grpc");
    let ask_request = proto::AskRequest { query: super::QUERY.into(), ..Default::default() };
    std::fs::write(&ask, grpc_frame(&ask_request)).map_err(|e| fail("write the Ask frame", e))?;
    let health = data.path().join("health.grpc");
    std::fs::write(&health, grpc_frame(&tonic_health::pb::HealthCheckRequest { service: String::new() }))
        .map_err(|e| fail("write the health frame", e))?;
    // One call through a real client first: a refused or broken Ask fails
    // the bench here, with its status.
    let mut client = crate::proto::gateway_client::GatewayClient::connect(base.clone())
        .await
        .map_err(|e| fail("connect", e))?;
    client.ask(ask_request).await.map_err(|e| fail("a first Ask", e))?;
    let before = crate::gateway::answered();
    let ask_rps = h2load(&format!("{base}/meshops.v1.Gateway/Ask"), &ask, seconds).await?;
    let after = crate::gateway::answered();
    let health_rps = h2load(&format!("{base}/grpc.health.v1.Health/Check"), &health, seconds).await?;
    let store = server.store.clone();
    server.shutdown().await.map_err(|e| fail("gateway shutdown", e))?;
    super::release_store(store).await;
    drop(data);
    let (ask_ok, ask_not_ok) = (after.0 - before.0, after.1 - before.1);
    if ask_not_ok > 0 {
        return Err(fail(
            format!("Ask under h2load ({engine})"),
            format!("{ask_not_ok} calls were answered with a gRPC error ({ask_ok} OK): not a throughput"),
        ));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let r = ratio(ask_rps, health_rps);
    Ok(ExternalRun {
        engine,
        ask_rps,
        ask_ok,
        ask_not_ok,
        health_rps,
        ratio: r,
        target_ratio,
        met: r >= target_ratio,
        cpu_us_per_ask: ratio(cores * 1e6, ask_rps),
    })
}

/// Runs h2load against `url` posting `body` for `seconds` after a one
/// second warm-up; requests per second it finished.
async fn h2load(url: &str, body: &std::path::Path, seconds: f64) -> Result<f64, BenchError> {
    let out = tokio::process::Command::new("h2load")
        .args(["-c", &CONNECTIONS.to_string(), "-m", &STREAMS.to_string(), "-t", "1"])
        .args(["--warm-up-time", "1", "-D", &format!("{seconds}")])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(body)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs_f64(seconds + 60.0), out)
        .await
        .map_err(|_| fail("h2load", "did not finish"))?
        .map_err(|e| fail("h2load", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(fail(
            "h2load",
            format!("{}\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr)),
        ));
    }
    parse_h2load(&text).ok_or_else(|| fail("h2load", format!("unexpected output:\n{text}")))
}

/// Requests per second from h2load's report, when every request
/// succeeded (HTTP 2xx).
fn parse_h2load(text: &str) -> Option<f64> {
    let requests = text.lines().find(|l| l.trim_start().starts_with("requests:"))?;
    let count = |word: &str| -> Option<u64> {
        let at = requests.find(&format!(" {word}"))?;
        requests[..at].rsplit([' ', ',']).find(|s| !s.is_empty())?.parse().ok()
    };
    let (done, succeeded) = (count("done")?, count("succeeded")?);
    if done == 0 || succeeded != done {
        return None;
    }
    let finished = text.lines().find(|l| l.starts_with("finished in"))?;
    let rps = finished.split(',').nth(1)?.trim().strip_suffix(" req/s")?;
    rps.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load_reports_and_refuses_failed_requests() {
        let ok = "starting benchmark...\n\
            finished in 5.00s, 12345.67 req/s, 1.20MB/s\n\
            requests: 61728 total, 62240 started, 61728 done, 61728 succeeded, 0 failed, 0 errored, 0 timeout\n\
            status codes: 61728 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        assert_eq!(parse_h2load(ok), Some(12345.67));
        let failed = ok.replace("61728 succeeded, 0 failed", "61000 succeeded, 728 failed");
        assert_eq!(parse_h2load(&failed), None);
        assert_eq!(parse_h2load("finished in 5.00s, 0.00 req/s, 0B/s\n"), None);
    }

    #[test]
    fn frames_carry_flag_length_and_message() {
        let frame = grpc_frame(&proto::AskRequest { query: "hi".into(), ..Default::default() });
        assert_eq!(frame[0], 0);
        assert_eq!(u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize, frame.len() - 5);
        let back = proto::AskRequest::decode(&frame[5..]).unwrap();
        assert_eq!(back.query, "hi");
    }
}
