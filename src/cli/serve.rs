//! `meshops serve`: the gateway until Ctrl-C or SIGTERM.

use anyhow::{Context, Result};
use meshops::config::MeshSpec;

/// `meshops serve`: telemetry as configured, the gateway until Ctrl-C or
/// SIGTERM, then a drain and a flush of buffered telemetry.
///
/// SIGHUP reloads the configuration files and puts the new `[gateway.ab]`
/// weights in force without dropping requests (other settings need a
/// restart); a configuration that does not load is reported and the old
/// weights stay.
pub async fn serve(
    mut spec: MeshSpec,
    listen: Option<String>,
    http_listen: Option<String>,
    reload: impl Fn() -> Result<MeshSpec>,
) -> Result<()> {
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
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    enum Event {
        Stop(Result<&'static str>),
        Ended(Result<()>),
        Hangup,
    }
    let result = loop {
        #[cfg(unix)]
        let hangup = hangups.recv();
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let event = tokio::select! {
            r = &mut shutdown => Event::Stop(r),
            r = server.wait() => Event::Ended(r.map_err(anyhow::Error::from)),
            _ = hangup => Event::Hangup,
        };
        match event {
            Event::Stop(r) => {
                let signal = r?;
                eprintln!("{signal}: shutting down (health NOT_SERVING, draining in-flight calls)");
                break server.shutdown().await.map_err(anyhow::Error::from);
            }
            Event::Ended(r) => break r,
            Event::Hangup => match reload() {
                Ok(new) => {
                    let weights = new.settings.gateway.ab.weights.clone();
                    server.set_ab(new.settings.gateway.ab);
                    tracing::info!(?weights, "SIGHUP: configuration reloaded; A/B weights in force");
                    eprintln!("SIGHUP: A/B weights now {weights:?}");
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: the configuration does not load; the old weights stay");
                    eprintln!("SIGHUP: not reloaded: {e:#}");
                }
            },
        }
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
