//! `meshops bench overhead`: the same chat completion sent straight to an
//! OpenAI-wire-protocol server on loopback, and through a one-agent meshops
//! flow (gRPC `Ask` → gateway → router on the zero-work model → summarizer
//! on an `openai_compatible` profile → the same server). The server is a
//! test double started inside the bench: real HTTP/1.1 with keep-alive,
//! answering every `POST …/chat/completions` with a fixed completion.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{BenchError, Options, Samples, fail};
use crate::config::{FlowSpec, MeshSpec, ModelProfile, Provider};
use crate::proto;
use crate::proto::gateway_client::GatewayClient;

/// The fixed completion the double answers with.
const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"bench-double","choices":[{"index":0,"message":{"role":"assistant","content":"A short answer [1]."},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":6,"total_tokens":126}}"#;

/// The OpenAI-wire test double; keeps the last request body it received.
struct Double {
    addr: std::net::SocketAddr,
    last_body: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Double {
    async fn start() -> Result<Double, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail("bind double", e))?;
        let addr = listener.local_addr().map_err(|e| fail("double address", e))?;
        let last_body = Arc::new(Mutex::new(Vec::new()));
        let keep = last_body.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, keep).await;
                });
            }
        });
        Ok(Double { addr, last_body, task })
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves requests on one connection until the client closes it.
async fn serve(mut socket: TcpStream, keep: Arc<Mutex<Vec<u8>>>) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if let Ok(mut last) = keep.lock() {
            last.clear();
            last.extend_from_slice(&buf[head_end..head_end + length]);
        }
        buf.drain(..head_end + length);
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
            COMPLETION.len()
        );
        socket.write_all(reply.as_bytes()).await?;
    }
}

/// The figures of `meshops bench overhead`, measured in one run: client
/// latencies of the same completion, sent directly and through meshops.
#[derive(Debug, Clone)]
pub struct OverheadFigures {
    /// Size of the completion request meshops sent (and the direct client
    /// replays), in bytes.
    pub request_bytes: usize,
    /// Calls each way, interleaved.
    pub calls: usize,
    /// The agent that calls the test double (the flow's one model step).
    pub summarizer: String,
    /// Direct HTTP call, median latency in µs.
    pub direct_p50_us: f64,
    /// Direct HTTP call, 99th percentile latency in µs.
    pub direct_p99_us: f64,
    /// Through meshops (gRPC, gateway, router, summarizer, HTTP), median
    /// latency in µs.
    pub meshops_p50_us: f64,
    /// Through meshops, 99th percentile latency in µs.
    pub meshops_p99_us: f64,
    /// What meshops adds at the median: `meshops_p50_us - direct_p50_us`.
    pub added_p50_us: f64,
    /// What meshops adds at the 99th percentile.
    pub added_p99_us: f64,
    /// The limit for `added_p50_us`, in µs.
    pub target_added_p50_us: f64,
    /// Whether `added_p50_us` is within `target_added_p50_us`.
    pub met: bool,
}

pub async fn run(mut spec: MeshSpec, opts: &Options) -> Result<OverheadFigures, BenchError> {
    let n = if opts.quick { 200 } else { 3_000 };
    let double = Double::start().await?;
    let base_url = format!("http://{}/v1", double.addr);
    super::zero_mode(&mut spec, 0);
    // The router runs on the zero-work model; the one agent that calls a
    // model is the summarizer, on the double.
    spec.settings.models.insert(
        "double".into(),
        ModelProfile {
            provider: Provider::OpenaiCompatible,
            model: "bench-double".into(),
            base_url: Some(base_url.clone()),
            max_retries: Some(0),
            input_price_per_mtok: None,
            output_price_per_mtok: None,
            ..ModelProfile::offline()
        },
    );
    let summarizer = spec
        .agents
        .values_mut()
        .find(|a| a.kind == crate::config::AgentKind::Summarizer)
        .ok_or_else(|| fail("overhead", "the configuration has no summarizer agent"))?;
    summarizer.base.model = Some("double".into());
    let summarizer_name = summarizer.name.clone();
    let router = spec.settings.mesh.router.clone();
    let intent = match spec.agents.get(&router).map(|a| &a.base.settings) {
        Some(crate::config::KindSettings::Router(r)) => r.default_intent.clone(),
        _ => return Err(fail("overhead", "the router agent is missing")),
    };
    spec.settings.flows.insert(
        intent,
        FlowSpec { steps: vec![summarizer_name.clone().into()], max_revisions: 0, ..Default::default() },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail("bind gateway", e))?;
    let server = crate::gateway::start(spec, listener).await.map_err(|e| fail("gateway start", e))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .map_err(|e| fail("endpoint", e))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| fail("connect gateway", e))?;
    let mut client = GatewayClient::new(channel);
    let request = proto::AskRequest { query: super::QUERY.into(), ..Default::default() };
    let warm = n / 10 + 1;
    for _ in 0..warm {
        let a = client.ask(request.clone()).await.map_err(|e| fail("meshops warm-up", e))?.into_inner();
        if a.steps.len() != 2 {
            return Err(fail(
                "overhead",
                format!("expected router + {summarizer_name}, ran {}", a.steps.len()),
            ));
        }
    }
    // The exact body meshops sent, replayed by the direct client.
    let body = double.last_body.lock().map(|b| b.clone()).map_err(|e| fail("double", e))?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build().map_err(|e| fail("http client", e))?;
    let url = format!("{base_url}/chat/completions");
    let direct = |http: reqwest::Client, body: Vec<u8>, url: String| async move {
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| fail("direct call", e))?;
        r.bytes().await.map_err(|e| fail("direct call body", e))
    };
    for _ in 0..warm {
        direct(http.clone(), body.clone(), url.clone()).await?;
    }
    let (mut d, mut m) = (Samples::with_capacity(n), Samples::with_capacity(n));
    // Interleaved, so drift on a busy machine hits both alike.
    for _ in 0..n {
        let t = Instant::now();
        direct(http.clone(), body.clone(), url.clone()).await?;
        d.push_since(t);
        let t = Instant::now();
        client.ask(request.clone()).await.map_err(|e| fail("meshops call", e))?;
        m.push_since(t);
    }
    let (d50, d99, m50, m99) = (d.pct(0.5), d.pct(0.99), m.pct(0.5), m.pct(0.99));
    server.shutdown().await.map_err(|e| fail("gateway shutdown", e))?;
    // The performance round's limit (docs/performance.md).
    let target_added_p50_us = 300.0;
    Ok(OverheadFigures {
        request_bytes: body.len(),
        calls: n,
        summarizer: summarizer_name,
        direct_p50_us: d50,
        direct_p99_us: d99,
        meshops_p50_us: m50,
        meshops_p99_us: m99,
        added_p50_us: m50 - d50,
        added_p99_us: m99 - d99,
        target_added_p50_us,
        met: m50 - d50 <= target_added_p50_us,
    })
}
