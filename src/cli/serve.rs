//! `meshops serve`: the gateway until Ctrl-C or SIGTERM.

use anyhow::{Context, Result};
use meshops::config::MeshSpec;

/// `meshops serve`: telemetry as configured, the gateway until Ctrl-C or
/// SIGTERM, then a drain and a flush of buffered telemetry.
pub async fn serve(mut spec: MeshSpec, listen: Option<String>, http_listen: Option<String>) -> Result<()> {
    let telemetry = meshops::telemetry::init(&spec.settings.telemetry)?;
    if let Some(l) = listen {
        spec.settings.gateway.listen = l;
    }
    if let Some(h) = http_listen {
        anyhow::ensure!(
            spec.settings.gateway.tls.is_none(),
            "--http-listen: the HTTP API serves plaintext and [gateway.tls] is set; terminate TLS in front of it"
        );
        spec.settings.gateway.http_listen = Some(h);
    }
    let addr: std::net::SocketAddr = spec
        .settings
        .gateway
        .listen
        .parse()
        .with_context(|| format!("listen address `{}`", spec.settings.gateway.listen))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    let scrape = match (telemetry.prometheus_registry(), &spec.settings.telemetry.prometheus_listen) {
        (Some(registry), Some(addr)) => {
            let listener =
                tokio::net::TcpListener::bind(addr.as_str()).await.with_context(|| format!("bind {addr}"))?;
            eprintln!("Prometheus metrics on http://{}/metrics", listener.local_addr()?);
            let router = meshops::telemetry::scrape::router(registry);
            Some(tokio::spawn(async move { axum::serve(listener, router).await }))
        }
        _ => None,
    };
    let mut server = meshops::gateway::start(spec, listener).await?;
    eprintln!("meshops gateway serving on {} (Ctrl-C or SIGTERM to stop)", server.addr);
    if let Some(http) = server.http_addr {
        eprintln!("OpenAI-compatible HTTP API on http://{http}/v1");
    }
    if let Some(mcp) = server.mcp_addr {
        eprintln!("MCP server (streamable HTTP) on http://{mcp}/mcp");
    }
    let result = tokio::select! {
        r = shutdown_signal() => {
            let signal = r?;
            eprintln!("{signal}: shutting down (health NOT_SERVING, draining in-flight calls)");
            server.shutdown().await.map_err(anyhow::Error::from)
        }
        r = server.wait() => r.map_err(anyhow::Error::from),
    };
    if let Some(task) = scrape {
        task.abort();
    }
    telemetry.shutdown();
    result
}

/// `meshops mcp`: the mesh as an MCP server over stdin/stdout. The gateway
/// runs in process on a loopback port of its own (stdout carries only MCP
/// messages; logs go to stderr), and its tools call it directly; it stops
/// when the client closes stdin.
pub async fn mcp(mut spec: MeshSpec) -> Result<()> {
    let telemetry = meshops::telemetry::init(&spec.settings.telemetry)?;
    let gw = &mut spec.settings.gateway;
    gw.listen = "127.0.0.1:0".into();
    gw.http_listen = None;
    gw.mcp_listen = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind 127.0.0.1:0")?;
    let server = meshops::gateway::start(spec, listener).await?;
    let served = meshops::gateway::mcp::serve_stdio(server.mcp_tools()).await.context("MCP over stdio");
    let stopped = server.shutdown().await.map_err(anyhow::Error::from);
    telemetry.shutdown();
    served.and(stopped)
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `docker stop` and
/// Kubernetes send); returns the signal's name.
async fn shutdown_signal() -> Result<&'static str> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C").map(|()| "SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        Ok("SIGINT")
    }
}
