//! The `meshops` command line: `serve`, `ask`, `batch`, `probe`, `ingest`,
//! `validate`, `eval`, `keys`, `bench`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use meshops::config::{LoadOptions, MeshSpec};

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
        /// Serve the OpenAI-compatible HTTP API on this address too,
        /// overriding gateway.http_listen.
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Serve the mesh as an MCP server over stdin/stdout (tools `ask` and
    /// `describe_mesh`), for MCP clients that start their servers.
    Mcp,
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
        /// Conversation id: the question is a turn of that conversation
        /// (the mesh sees its earlier turns).
        #[arg(long)]
        session: Option<String>,
        /// Send the question N times, one after another on one connection,
        /// and print client-side latency percentiles and, per agent, step
        /// latency and tokens per second instead of the answer.
        #[arg(long, value_name = "N")]
        repeat: Option<usize>,
        #[command(flatten)]
        conn: cli::connect::ConnectArgs,
    },
    /// API keys for `gateway.api_keys_file`.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Chunk, embed and upsert files into the configured collection
    /// (idempotent; a document ingested again replaces its earlier version),
    /// or remove documents with --delete. With --target, through a running
    /// gateway (which holds the embedded store while it runs).
    Ingest {
        /// Files or folders of .md, .markdown, .txt or .rst files (default:
        /// retrieval.corpus).
        paths: Vec<PathBuf>,
        /// Remove the chunks of this document id instead (repeatable).
        #[arg(long, value_name = "DOC_ID", conflicts_with = "paths")]
        delete: Vec<String>,
        /// A running gateway (http://HOST:PORT) to ingest through; the files
        /// are read here and their text sent.
        #[arg(long)]
        target: Option<String>,
        /// Ingest through the running gateway that `ask` reaches by default
        /// (http:// + gateway.listen), as --target with that URL.
        #[arg(long, conflicts_with = "target")]
        gateway: bool,
        #[command(flatten)]
        conn: cli::connect::ConnectArgs,
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
        conn: cli::connect::ConnectArgs,
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
        conn: cli::connect::ConnectArgs,
    },
    /// Conversations on a running gateway.
    /// Rate an answer by its trace id (`ask --json` prints it): a score in
    /// [0, 1] (thumbs down 0, up 1) and an optional comment.
    Feedback {
        trace_id: String,
        #[arg(long)]
        score: f64,
        #[arg(long, default_value = "")]
        comment: String,
        /// Gateway URL (default: http:// + gateway.listen).
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        conn: cli::connect::ConnectArgs,
    },
    /// Records of answered requests (`[live]`): export them as a dataset.
    Live {
        #[command(subcommand)]
        command: LiveCommand,
    },
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
        /// Gateway URL (default: http:// + gateway.listen).
        #[arg(long, global = true)]
        target: Option<String>,
        #[command(flatten)]
        conn: cli::connect::ConnectArgs,
    },
}

#[derive(Subcommand)]
enum LiveCommand {
    /// Write live records as JSON lines that `eval run --dataset` and
    /// `eval score --input` read as they are (with `[live]
    /// capture_content`: query, response, cited doc ids).
    Export {
        /// Where to write the rows.
        #[arg(long)]
        out: PathBuf,
        /// Only records this recent: an age (30m, 24h, 7d) or, as a number
        /// of 13 digits or more, Unix milliseconds.
        #[arg(long)]
        since: Option<String>,
        /// Only this variant's records (`base`: the mesh without one).
        #[arg(long)]
        variant: Option<String>,
        /// Only records with users' feedback.
        #[arg(long)]
        with_feedback: bool,
        /// Only records whose feedback score is at least this.
        #[arg(long)]
        min_score: Option<f64>,
    },
    /// The A/B readout of live traffic: per variant, the online judges'
    /// scores, feedback rate and score, latency and cost with 95 %
    /// intervals; each variant against the baseline (unpaired) with the
    /// gates of --gates. Exits 1 when a gate fails.
    Compare {
        /// Only records this recent (as for export).
        #[arg(long)]
        since: Option<String>,
        /// The variant the others are compared with.
        #[arg(long, default_value = "base")]
        baseline: String,
        /// Gates file (`eval/gates.toml` format; metrics: the judges' names,
        /// `feedback`, `feedback_rate`, `latency_ms`, `cost_usd`).
        #[arg(long)]
        gates: Option<PathBuf>,
        /// Also log the readout to an MLflow server
        /// (`mlflow+http://HOST:PORT`): experiment `meshops/live`, a run per
        /// variant.
        #[arg(long, value_name = "mlflow+URL")]
        publish: Option<String>,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Forget a conversation (its turns are deleted).
    Delete {
        /// The conversation's `session_id`.
        id: String,
    },
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
    if !matches!(cli.command, Command::Serve { .. }) {
        quiet_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(no_sigpipe_on_this_thread)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// A command whose output is cut short by its reader (`meshops validate |
/// head -3`) ends quietly, as other command-line tools do, instead of
/// panicking in `println!`: Rust ignores SIGPIPE, so a write to a closed
/// pipe fails; the default action ends the process. Not for `serve`, whose
/// logs must never end the gateway. Sockets are kept out of it by
/// [`no_sigpipe_on_this_thread`] on the runtime's threads, where all
/// network I/O runs: a plain `send` passes `MSG_NOSIGNAL`, but the
/// vectored writes of the HTTP/2 client do not, and a server that closes
/// the connection (a TLS port spoken to in plaintext) would otherwise end
/// the process silently instead of letting it report the error.
fn quiet_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: called at start-up, before any other thread exists; setting a
    // signal's disposition to its default is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Blocks SIGPIPE on the calling thread (the async runtime's threads): a
/// write to a socket the peer closed then fails with `EPIPE`, which the
/// caller sees as an error, whatever the process's disposition of SIGPIPE.
fn no_sigpipe_on_this_thread() {
    #[cfg(unix)]
    // SAFETY: `set` is a plain value initialised by `sigemptyset` before
    // use; changing the calling thread's own signal mask is thread-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// An error and its causes on one line, each said once: many errors
/// (tonic's transport errors, `io::Error`s wrapped by their callers)
/// repeat their source's text in their own, and `{:#}` would print
/// `tcp connect error: tcp connect error`.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
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
    if let Command::Serve { listen, http_listen } = &cli.command {
        let opts = load_options(&cli)?;
        let reload =
            move || MeshSpec::load(&opts).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"));
        return cli::serve::serve(load(&cli)?, listen.clone(), http_listen.clone(), reload).await;
    }
    if let Command::Mcp = &cli.command {
        return cli::serve::mcp(load(&cli)?).await;
    }
    // Tools log to the terminal only; the gateway's telemetry follows its config.
    let local = meshops::config::TelemetrySettings { export: false, ..Default::default() };
    meshops::telemetry::init(&local)?;
    match &cli.command {
        Command::Eval(cli::eval::Command::Run(args)) => cli::eval::run(args, load_options(&cli)?).await,
        Command::Bench(args) => cli::bench::execute(args, load_options(&cli)?).await,
        Command::Eval(cli::eval::Command::Score(args)) => cli::eval::score(args).await,
        Command::Eval(cli::eval::Command::Compare(args)) => cli::eval::compare(args),
        Command::Validate => cli::admin::validate(&load(&cli)?, &load_options(&cli)?),
        Command::Serve { .. } | Command::Mcp => Ok(()),
        Command::Probe { target, timeout, conn } => {
            let target = target_url(&cli, target.as_deref());
            let outcome = cli::admin::probe(target.clone(), *timeout, conn).await;
            cli::connect::with_hint(&target, outcome).await
        }
        Command::Keys(KeysCommand::Hash { label }) => cli::admin::keys_hash(label.as_deref()),
        Command::Ingest { paths, delete, target, gateway, conn } => {
            let target = if *gateway { Some(target_url(&cli, None)) } else { target.clone() };
            let args = cli::ingest::IngestArgs { paths, delete, target: target.as_deref(), conn };
            let outcome = cli::ingest::execute(args, || load(&cli)).await;
            match target {
                Some(target) => cli::connect::with_hint(&target, outcome).await,
                None => outcome,
            }
        }
        Command::Batch { command, conn } => {
            let target = target_url(&cli, command.target());
            let outcome = async {
                let channel = cli::connect::connect(&target, conn).await?;
                cli::batch::execute(command, channel, conn.api_key.as_deref()).await
            }
            .await;
            cli::connect::with_hint(&target, outcome).await
        }
        Command::Live { command: LiveCommand::Compare { since, baseline, gates, publish } } => {
            let spec = load(&cli)?;
            let filter = cli::live::filter(since.as_deref(), None, false, None)?;
            if !cli::live::compare(&spec, &filter, baseline, gates.as_deref(), publish.as_deref()).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Live { command: LiveCommand::Export { out, since, variant, with_feedback, min_score } } => {
            let spec = load(&cli)?;
            let filter = cli::live::filter(since.as_deref(), variant.clone(), *with_feedback, *min_score)?;
            cli::live::export(&spec, out, &filter).await
        }
        Command::Feedback { trace_id, score, comment, target, conn } => {
            let target = target_url(&cli, target.as_deref());
            let channel = cli::connect::connect(&target, conn).await?;
            let mut client = meshops::proto::gateway_client::GatewayClient::new(channel);
            let request = meshops::proto::FeedbackRequest {
                trace_id: trace_id.clone(),
                score: *score,
                comment: comment.clone(),
            };
            client
                .submit_feedback(cli::authorized(request, conn.api_key.as_deref())?)
                .await
                .map_err(cli::status_error)?;
            println!("feedback stored for {trace_id}");
            Ok(())
        }
        Command::Sessions { command: SessionsCommand::Delete { id }, target, conn } => {
            let target = target_url(&cli, target.as_deref());
            let outcome = async {
                let channel = cli::connect::connect(&target, conn).await?;
                let mut client = meshops::proto::gateway_client::GatewayClient::new(channel);
                let request = meshops::proto::DeleteSessionRequest { session_id: id.clone() };
                client
                    .delete_session(cli::authorized(request, conn.api_key.as_deref())?)
                    .await
                    .map_err(cli::status_error)?;
                println!("deleted session {id}");
                anyhow::Ok(())
            }
            .await;
            cli::connect::with_hint(&target, outcome).await
        }
        Command::Ask { query, target, stream, json, variant, session, repeat, conn } => {
            let target = target_url(&cli, target.as_deref());
            let args = cli::ask::AskArgs {
                query,
                target: target.clone(),
                stream: *stream,
                json: *json,
                variant: variant.as_deref(),
                session: session.as_deref(),
                repeat: *repeat,
                conn,
            };
            let outcome = cli::ask::execute(args).await;
            cli::connect::with_hint(&target, outcome).await
        }
    }
}

/// The gateway URL a client command talks to (see [`cli::connect::target_url`]).
fn target_url(cli: &Cli, target: Option<&str>) -> String {
    cli::connect::target_url(target, || load(cli).ok().map(|s| s.settings.gateway.listen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Leaf(String);

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Wrapper {
        text: String,
        #[source]
        source: Leaf,
    }

    #[test]
    fn error_text_says_each_cause_once() {
        let repeated = anyhow::Error::new(Wrapper {
            text: "tcp connect error".into(),
            source: Leaf("tcp connect error".into()),
        })
        .context("cannot connect to http://127.0.0.1:1");
        assert_eq!(error_text(&repeated), "cannot connect to http://127.0.0.1:1: tcp connect error");
        let contained = anyhow::Error::new(Wrapper {
            text: "invalid peer certificate: UnknownIssuer".into(),
            source: Leaf("UnknownIssuer".into()),
        });
        assert_eq!(error_text(&contained), "invalid peer certificate: UnknownIssuer");
        let distinct = anyhow::Error::new(Leaf("No such file or directory (os error 2)".into()))
            .context("reading a.pem");
        assert_eq!(error_text(&distinct), "reading a.pem: No such file or directory (os error 2)");
    }
}
