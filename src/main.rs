//! The `meshops` command line: `serve`, `ask`, `batch`, `probe`, `ingest`,
//! `validate`, `eval`, `keys`, `bench`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cli::authorized;
use meshops::config::{LoadOptions, MeshSpec};
use meshops::proto;
use meshops::proto::gateway_client::GatewayClient;

/// mimalloc: a request allocates a few hundred small, short-lived objects
/// (messages, records, spans) across threads, which it serves in about a
/// third of the instructions of the system allocator (`docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "meshops", version, about = "Run LLM application services as a mesh of agents")]
struct Cli {
    /// Project root holding config/, agents/, prompts/ (default: current directory).
    #[arg(long, global = true, env = "MESHOPS_ROOT")]
    root: Option<PathBuf>,
    /// An extra settings file layered over config/meshops.toml and config/<env>.toml.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gRPC gateway (ingests the corpus on first start).
    Serve {
        /// Listen address, overriding gateway.listen.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Ask a running gateway a question.
    Ask {
        query: String,
        /// Gateway URL (default: http:// + gateway.listen).
        #[arg(long)]
        target: Option<String>,
        /// Stream step events and answer tokens as they happen.
        #[arg(long)]
        stream: bool,
        /// Print the full response as JSON.
        #[arg(long)]
        json: bool,
        /// Variant to run.
        #[arg(long)]
        variant: Option<String>,
        /// Send the question N times, one after another on one connection,
        /// and print client-side latency percentiles and, per agent, step
        /// latency and tokens per second instead of the answer.
        #[arg(long, value_name = "N")]
        repeat: Option<usize>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// API keys for `gateway.api_keys_file`.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Chunk, embed and upsert files into the configured collection (idempotent).
    Ingest {
        /// Files or folders (default: retrieval.corpus).
        paths: Vec<PathBuf>,
    },
    /// Check every config, agent and prompt file; exit non-zero on error.
    Validate,
    /// Check a running gateway over the wire: health and server reflection;
    /// exit non-zero unless it is SERVING and lists the Gateway service.
    Probe {
        /// Gateway URL (default: http:// + gateway.listen).
        #[arg(long)]
        target: Option<String>,
        /// Seconds to wait for the whole probe.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Evaluate: run datasets through the mesh, score, compare runs.
    #[command(subcommand)]
    Eval(cli::eval::Command),
    /// Benchmarks, each beside its comparison (`all --quick` for CI).
    Bench(cli::bench::Args),
    /// Durable batch jobs on a running gateway: submit, status, results, cancel.
    Batch {
        #[command(subcommand)]
        command: cli::batch::Command,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// How `ask` and `batch` reach the gateway: TLS material and the API key.
/// Global, so `meshops batch submit FILE --api-key …` works after the
/// batch subcommand too.
#[derive(clap::Args)]
struct ConnectArgs {
    /// PEM file of the CA that signed the gateway's certificate (needed for
    /// an https:// target).
    #[arg(long, value_name = "FILE", global = true)]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a gateway that requires mutual TLS.
    #[arg(long, value_name = "FILE", requires = "client_key", global = true)]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert", global = true)]
    client_key: Option<PathBuf>,
    /// API key sent as `authorization: Bearer <key>` (from the environment,
    /// so it stays out of shell history and process lists).
    #[arg(long, env = "MESHOPS_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Read a key from standard input and print its line for
    /// `gateway.api_keys_file` (SHA-256 hex, then the label if given).
    Hash {
        /// A name for the key, shown in logs instead of the key.
        #[arg(long)]
        label: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_options(cli: &Cli) -> Result<LoadOptions> {
    let root = match &cli.root {
        Some(r) => r.clone(),
        None => std::env::current_dir().context("current directory")?,
    };
    Ok(LoadOptions::from_process(root, cli.config.clone()))
}

fn load(cli: &Cli) -> Result<MeshSpec> {
    MeshSpec::load(&load_options(cli)?).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Serve { listen } = &cli.command {
        return serve(&cli, listen.clone()).await;
    }
    // Tools log to the terminal only; the gateway's telemetry follows its config.
    let local = meshops::config::TelemetrySettings { export: false, ..Default::default() };
    meshops::telemetry::init(&local)?;
    match &cli.command {
        Command::Eval(cli::eval::Command::Run(args)) => cli::eval::run(args, load_options(&cli)?).await,
        Command::Bench(args) => cli::bench::execute(args, load_options(&cli)?).await,
        Command::Eval(cli::eval::Command::Score(args)) => cli::eval::score(args).await,
        Command::Eval(cli::eval::Command::Compare(args)) => cli::eval::compare(args),
        Command::Validate => {
            let spec = load(&cli)?;
            println!("configuration OK");
            for layer in &spec.layers {
                println!("  settings: {}", layer.display());
            }
            for a in spec.agents.values() {
                println!(
                    "  agent {:<12} {:<10} model={} replicas={}",
                    a.name,
                    a.kind.as_str(),
                    a.base.model.as_deref().unwrap_or("-"),
                    a.replicas
                );
            }
            for (intent, f) in &spec.settings.flows {
                println!("  flow  {intent:<12} {}", f.steps.join(" -> "));
            }
            for name in spec.settings.variants.keys() {
                println!("  variant {name}");
            }
            let judges = meshops::eval::judge::load_prompts(&spec)?;
            println!(
                "  judges  {} ({}), model profile {}",
                judges.keys().cloned().collect::<Vec<_>>().join(", "),
                meshops::eval::judge::prompts_dir(&spec).display(),
                spec.settings.eval.judge_model
            );
            Ok(())
        }
        Command::Serve { .. } => Ok(()),
        Command::Probe { target, timeout, conn } => {
            let target = target_url(&cli, target.as_deref());
            let service = meshops::client::GATEWAY_SERVICE;
            let probe = async {
                let channel = connect(&target, conn).await?;
                let key = conn.api_key.as_deref();
                anyhow::Ok(meshops::client::probe(channel, &target, service, key).await?)
            };
            let report = tokio::time::timeout(std::time::Duration::from_secs(*timeout), probe)
                .await
                .map_err(|_| anyhow::anyhow!("{target} did not answer the probe within {timeout} s"))??;
            println!("target:   {target}");
            println!("health:   {} ({service})", report.health);
            println!("services: {}", report.services.join(", "));
            if !report.ok(service) {
                bail!(
                    "{target} is not ready: health {}, services [{}]",
                    report.health,
                    report.services.join(", ")
                );
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Hash { label }) => {
            let mut key = String::new();
            std::io::stdin().read_line(&mut key).context("reading the key from standard input")?;
            let key = key.trim();
            if key.is_empty() {
                bail!("no key on standard input; usage: printf %s \"$KEY\" | meshops keys hash --label NAME");
            }
            match label {
                Some(l) if !l.trim().is_empty() => {
                    println!("{} {}", meshops::config::keys::hash_line(key), l.trim())
                }
                _ => println!("{}", meshops::config::keys::hash_line(key)),
            }
            Ok(())
        }
        Command::Ingest { paths } => {
            let spec = load(&cli)?;
            let (store, embedder) = meshops::retrieval::open(&spec).await?;
            let r = &spec.settings.retrieval;
            let paths: Vec<PathBuf> = if paths.is_empty() {
                r.corpus.iter().map(|p| spec.resolve(p)).collect()
            } else {
                paths.clone()
            };
            let opts = meshops::retrieval::chunk::ChunkOptions {
                max_chars: r.chunk_max_chars,
                overlap_chars: r.chunk_overlap_chars,
            };
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} chunks {per_sec} eta {eta}")
                    .context("progress template")?,
            );
            let report = meshops::retrieval::ingest::ingest_paths(
                &paths,
                &opts,
                embedder.as_ref(),
                store.as_ref(),
                &bar,
            )
            .await?;
            bar.finish_and_clear();
            println!(
                "ingested {} files into {} chunks: {} upserted, {} stale removed, {} points in `{}`",
                report.files, report.chunks, report.upserted, report.pruned, report.points, r.collection
            );
            Ok(())
        }
        Command::Batch { command, conn } => {
            let target = target_url(&cli, command.target());
            let channel = connect(&target, conn).await?;
            cli::batch::execute(command, channel, conn.api_key.as_deref()).await
        }
        Command::Ask { query, target, stream, json, variant, repeat, conn } => {
            let target = target_url(&cli, target.as_deref());
            let channel = connect(&target, conn).await?;
            let mut client = GatewayClient::new(channel);
            let request = proto::AskRequest {
                query: query.clone(),
                variant: variant.clone().unwrap_or_default(),
                ..Default::default()
            };
            let key = conn.api_key.as_deref();
            if let Some(n) = *repeat {
                return repeat_latency(&mut client, request, n.max(1), key).await;
            }
            if *stream {
                let mut events =
                    client.ask_stream(authorized(request, key)?).await.map_err(status_error)?.into_inner();
                let mut last = None;
                while let Some(event) = events.message().await.map_err(status_error)? {
                    use proto::ask_event::Event;
                    match event.event {
                        Some(Event::StepStarted(s)) => {
                            eprintln!("→ {} ({}) attempt {}", s.agent, s.kind, s.attempt)
                        }
                        Some(Event::StepFinished(f)) => {
                            if let Some(s) = f.step {
                                eprintln!("✓ {} {:.1} ms: {}", s.agent, s.latency_ms, s.summary)
                            }
                        }
                        Some(Event::Token(t)) if !*json => {
                            print!("{}", t.text);
                            // Show each token as it arrives, not at the end.
                            std::io::Write::flush(&mut std::io::stdout()).context("stdout")?;
                        }
                        Some(Event::Token(_)) => {}
                        Some(Event::Final(answer)) => last = Some(answer),
                        None => {}
                    }
                }
                let Some(answer) = last else { bail!("the stream ended without a final answer") };
                if *json {
                    println!("{}", serde_json::to_string_pretty(&response_json(&answer))?);
                } else {
                    println!();
                    print_answer(&answer, false);
                }
            } else {
                let answer = client.ask(authorized(request, key)?).await.map_err(status_error)?.into_inner();
                if *json {
                    println!("{}", serde_json::to_string_pretty(&response_json(&answer))?);
                } else {
                    print_answer(&answer, true);
                }
            }
            Ok(())
        }
    }
}

/// The gateway URL a client command talks to: `--target`, else
/// `http://` + `gateway.listen` (loopback for a wildcard address).
fn target_url(cli: &Cli, target: Option<&str>) -> String {
    match target {
        Some(t) => t.to_string(),
        None => {
            let listen =
                load(cli).map(|s| s.settings.gateway.listen).unwrap_or_else(|_| "127.0.0.1:50051".into());
            format!("http://{}", listen.replace("0.0.0.0", "127.0.0.1"))
        }
    }
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

/// Connects to the gateway at `target`, over TLS for an https:// target
/// (the CA from --ca-cert; a client certificate for mutual TLS).
async fn connect(target: &str, conn: &ConnectArgs) -> Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut endpoint =
        Endpoint::from_shared(target.to_string()).with_context(|| format!("`{target}` is not a URL"))?;
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    if target.starts_with("https://") {
        let Some(ca) = &conn.ca_cert else {
            bail!(
                "--ca-cert FILE is required for an https:// target (the CA that signed the gateway's certificate)"
            );
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&conn.client_cert, &conn.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    } else if conn.ca_cert.is_some() || conn.client_cert.is_some() {
        bail!("--ca-cert and --client-cert need an https:// target; `{target}` is plaintext");
    }
    endpoint.connect().await.with_context(|| {
        format!("cannot connect to {target}; is `meshops serve` running (with TLS if https)?")
    })
}

/// Sends `request` `n` times in sequence and prints latency percentiles.
async fn repeat_latency(
    client: &mut GatewayClient<tonic::transport::Channel>,
    request: proto::AskRequest,
    n: usize,
    key: Option<&str>,
) -> Result<()> {
    let mut micros = Vec::with_capacity(n);
    let mut mesh_ms = Vec::with_capacity(n);
    // Per agent: (model, step latencies in ms, output tokens, input tokens,
    // whether any count was estimated).
    let mut agents: std::collections::BTreeMap<String, (String, Vec<f64>, u64, u64, bool)> =
        std::collections::BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    for _ in 0..n {
        let started = std::time::Instant::now();
        let answer = match client.ask(authorized(request.clone(), key)?).await {
            Ok(a) => a.into_inner(),
            // A failed call is counted and reported, not the end of the run:
            // a weak model fails some steps, and the rest still measure.
            Err(s) => {
                failures.push(format!("{:?}: {}", s.code(), s.message()));
                continue;
            }
        };
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        mesh_ms.push(answer.usage.map(|u| u.latency_ms).unwrap_or_default());
        for step in &answer.steps {
            let entry = agents
                .entry(step.agent.clone())
                .or_insert_with(|| (step.model.clone(), Vec::new(), 0, 0, false));
            entry.1.push(step.latency_ms);
            entry.2 += step.output_tokens;
            entry.3 += step.input_tokens;
            entry.4 |= step.tokens_estimated;
        }
    }
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    if micros.is_empty() {
        bail!("all {n} Ask calls failed; first: {}", failures.first().map(String::as_str).unwrap_or(""));
    }
    micros.sort_by(f64::total_cmp);
    mesh_ms.sort_by(f64::total_cmp);
    println!(
        "{} sequential Ask calls ({} failed): client latency p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, \
         max {:.0} µs; mesh latency p50 {:.3} ms",
        micros.len(),
        failures.len(),
        pct(&micros, 0.5),
        pct(&micros, 0.9),
        pct(&micros, 0.99),
        pct(&micros, 1.0),
        pct(&mesh_ms, 0.5)
    );
    for (agent, (model, mut latencies, output, input, estimated)) in agents {
        latencies.sort_by(f64::total_cmp);
        let seconds: f64 = latencies.iter().sum::<f64>() / 1000.0;
        let steps = latencies.len();
        let rate = if seconds > 0.0 { output as f64 / seconds } else { 0.0 };
        println!(
            "  {agent} ({model}): {steps} steps, latency p50 {:.1} ms, p90 {:.1} ms; \
             {:.1} input and {:.1} output tokens per step, {rate:.1} output tokens/s of step time{}",
            pct(&latencies, 0.5),
            pct(&latencies, 0.9),
            input as f64 / steps as f64,
            output as f64 / steps as f64,
            if estimated { " (token counts estimated)" } else { "" }
        );
    }
    for (i, f) in failures.iter().enumerate().take(3) {
        println!("  failure {}: {f}", i + 1);
    }
    Ok(())
}

/// `meshops serve`: telemetry as configured, the gateway until Ctrl-C or
/// SIGTERM, then a drain and a flush of buffered telemetry.
async fn serve(cli: &Cli, listen: Option<String>) -> Result<()> {
    let mut spec = load(cli)?;
    let telemetry = meshops::telemetry::init(&spec.settings.telemetry)?;
    if let Some(l) = listen {
        spec.settings.gateway.listen = l;
    }
    let addr: std::net::SocketAddr = spec
        .settings
        .gateway
        .listen
        .parse()
        .with_context(|| format!("listen address `{}`", spec.settings.gateway.listen))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    let mut server = meshops::gateway::start(spec, listener).await?;
    eprintln!("meshops gateway serving on {} (Ctrl-C or SIGTERM to stop)", server.addr);
    let result = tokio::select! {
        r = shutdown_signal() => {
            let signal = r?;
            eprintln!("{signal}: shutting down (health NOT_SERVING, draining in-flight calls)");
            server.shutdown().await.map_err(anyhow::Error::from)
        }
        r = server.wait() => r.map_err(anyhow::Error::from),
    };
    telemetry.shutdown();
    result
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

fn print_answer(a: &proto::AskResponse, with_text: bool) {
    if with_text {
        println!("{}", a.answer);
    }
    if !a.citations.is_empty() {
        println!("\nSources:");
        for (i, c) in a.citations.iter().enumerate() {
            println!("  [{}] {} ({}, score {:.3})", i + 1, c.doc_id, c.chunk_id, c.score);
        }
    }
    let verdict = a
        .verdict
        .as_ref()
        .map(|v| format!(", critic {}", if v.accepted { "accepted" } else { "rejected" }))
        .unwrap_or_default();
    println!("\nintent {}{verdict}, trace {}", a.intent, a.trace_id);
    for s in &a.steps {
        println!(
            "  {:<11} {:<20} attempt {} {:>8.2} ms  {}",
            s.agent, s.model, s.attempt, s.latency_ms, s.summary
        );
    }
    if let Some(u) = &a.usage {
        let cost = u.cost_usd.map(|c| format!("${c:.6}")).unwrap_or_else(|| "unknown".into());
        println!(
            "  tokens in {} out {} (estimated where marked), cost {cost}",
            u.input_tokens, u.output_tokens
        );
    }
}

/// The response as JSON, field names as in the proto.
fn response_json(a: &proto::AskResponse) -> serde_json::Value {
    serde_json::json!({
        "answer": a.answer,
        "citations": a.citations.iter().map(|c| serde_json::json!({
            "doc_id": c.doc_id, "chunk_id": c.chunk_id, "text": c.text, "score": c.score,
        })).collect::<Vec<_>>(),
        "intent": a.intent,
        "verdict": a.verdict.as_ref().map(|v| serde_json::json!({
            "accepted": v.accepted, "scores": v.scores, "feedback": v.feedback,
        })),
        "steps": a.steps.iter().map(|s| serde_json::json!({
            "agent": s.agent, "kind": s.kind, "model": s.model, "attempt": s.attempt,
            "latency_ms": s.latency_ms, "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
            "tokens_estimated": s.tokens_estimated, "cost_usd": s.cost_usd, "summary": s.summary,
        })).collect::<Vec<_>>(),
        "usage": a.usage.as_ref().map(|u| serde_json::json!({
            "input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_usd": u.cost_usd,
            "model_calls": u.model_calls, "latency_ms": u.latency_ms,
        })),
        "trace_id": a.trace_id,
        "variant": a.variant,
    })
}
