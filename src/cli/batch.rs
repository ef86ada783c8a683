//! `meshops batch submit|status|results|cancel|list`: a client of a
//! running gateway's `Batch` service (TLS and the API key as for `ask`).
//! Submit reads JSONL rows like the evaluation datasets (`query`, optional
//! `id`, `variant` and `session_id`; other fields are ignored); a row's
//! `id` comes back on its result. Jobs and results are printed as JSON
//! lines.

use std::path::{Path, PathBuf};

use anyhow::Result;
use meshops::batch::BatchError;
use meshops::proto;
use meshops::proto::batch_client::BatchClient;
use tonic::transport::Channel;

use super::authorized;

/// `meshops batch …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Submit a JSONL file of questions as one job; prints the job.
    Submit {
        file: PathBuf,
        /// Idempotency key: resubmitting with it returns the same job.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Print a job's state and counts.
    Status {
        job: String,
        #[command(flatten)]
        target: Target,
    },
    /// Stream a job's results as JSON lines until every item has one.
    Results {
        job: String,
        /// First result offset (resume after the last one seen).
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel the items of a job not answered yet.
    Cancel {
        job: String,
        #[command(flatten)]
        target: Target,
    },
    /// List jobs, newest first, as JSON lines (with API keys: the key's own
    /// jobs). Prints where the next page starts on stderr.
    List {
        /// Jobs per page (the gateway's default when absent; at most 100).
        #[arg(long)]
        page_size: Option<u32>,
        /// Start at this page (the token a previous page printed).
        #[arg(long)]
        page_token: Option<String>,
        /// Follow every page to the oldest job.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Which gateway a batch command talks to.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Gateway URL (default: http:// + gateway.listen).
    #[arg(long)]
    pub target: Option<String>,
}

impl Command {
    /// The `--target` given, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Command::Submit { target, .. }
            | Command::Status { target, .. }
            | Command::Results { target, .. }
            | Command::Cancel { target, .. }
            | Command::List { target, .. } => target.target.as_deref(),
        }
    }
}

/// One line of a batch file.
#[derive(Debug, serde::Deserialize)]
struct Row {
    /// The row's id (a string or a number, as datasets write it), sent as
    /// the item's id so its result names the row.
    #[serde(default)]
    id: Option<RowId>,
    /// The question.
    query: String,
    /// The variant to answer it with; the base mesh when absent.
    #[serde(default)]
    variant: Option<String>,
    /// Makes the item a turn of that conversation.
    #[serde(default)]
    session_id: Option<String>,
}

/// A dataset row's id.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum RowId {
    Text(String),
    Number(serde_json::Number),
}

impl RowId {
    fn text(self) -> String {
        match self {
            RowId::Text(s) => s,
            RowId::Number(n) => n.to_string(),
        }
    }
}

/// Reads a JSONL batch file into items and their ids (empty when no row
/// has one); blank lines are skipped, a bad line is an error naming the
/// file and line.
fn read_items(path: &Path) -> Result<(Vec<proto::AskRequest>, Vec<String>), BatchError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| BatchError::Io { path: shown.clone(), source })?;
    let (mut items, mut ids) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| BatchError::Input {
            path: shown.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        ids.push(row.id.map(RowId::text).unwrap_or_default());
        items.push(proto::AskRequest {
            query: row.query,
            variant: row.variant.unwrap_or_default(),
            session_id: row.session_id.unwrap_or_default(),
            metadata: Default::default(),
        });
    }
    if items.is_empty() {
        return Err(BatchError::Input { path: shown, line: 0, message: "no rows".into() });
    }
    if ids.iter().all(String::is_empty) {
        ids.clear();
    }
    Ok((items, ids))
}

fn rpc(s: tonic::Status) -> BatchError {
    BatchError::Client(format!("{:?}: {}", s.code(), s.message()))
}

/// Runs the command on a connected `channel`, printing to stdout.
pub async fn execute(command: &Command, channel: Channel, api_key: Option<&str>) -> Result<()> {
    let mut client = BatchClient::new(channel);
    let job = match command {
        Command::Submit { file, request_id, .. } => {
            let (items, item_ids) = read_items(file)?;
            let request = proto::SubmitBatchRequest {
                items,
                request_id: request_id.clone().unwrap_or_default(),
                item_ids,
            };
            client.submit_batch(authorized(request, api_key)?).await.map_err(rpc)?.into_inner()
        }
        Command::Status { job, .. } => {
            let request = authorized(proto::GetBatchRequest { job_id: job.clone() }, api_key)?;
            client.get_batch(request).await.map_err(rpc)?.into_inner()
        }
        Command::Cancel { job, .. } => {
            let request = authorized(proto::CancelBatchRequest { job_id: job.clone() }, api_key)?;
            client.cancel_batch(request).await.map_err(rpc)?.into_inner()
        }
        Command::Results { job, from, .. } => {
            let request = proto::StreamBatchResultsRequest { job_id: job.clone(), from_offset: *from };
            let request = authorized(request, api_key)?;
            let mut stream = client.stream_batch_results(request).await.map_err(rpc)?.into_inner();
            while let Some(result) = stream.message().await.map_err(rpc)? {
                if !print_line(&result_json(result))? {
                    break;
                }
            }
            return Ok(());
        }
        Command::List { page_size, page_token, all, .. } => {
            let mut token = page_token.clone().unwrap_or_default();
            loop {
                let request =
                    proto::ListBatchesRequest { page_size: page_size.unwrap_or(0), page_token: token };
                let page =
                    client.list_batches(authorized(request, api_key)?).await.map_err(rpc)?.into_inner();
                for job in &page.jobs {
                    if !print_line(&job_json(job))? {
                        return Ok(());
                    }
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                if !all {
                    eprintln!("more jobs: --page-token {}", page.next_page_token);
                    return Ok(());
                }
                token = page.next_page_token;
            }
        }
    };
    print_line(&job_json(&job))?;
    Ok(())
}

/// Prints one JSON line; false when the reader went away (`| head`), which
/// ends the command quietly.
fn print_line(v: &serde_json::Value) -> Result<bool, BatchError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{v}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(source) => Err(BatchError::Io { path: "stdout".into(), source }),
    }
}

/// A job as one JSON object, field names as in the proto.
fn job_json(j: &proto::BatchJob) -> serde_json::Value {
    let state = proto::BatchState::try_from(j.state)
        .map(|s| s.as_str_name().trim_start_matches("BATCH_STATE_").to_lowercase())
        .unwrap_or_else(|_| j.state.to_string());
    let usage = j.usage.unwrap_or_default();
    serde_json::json!({
        "job_id": j.job_id,
        "state": state,
        "request_id": j.request_id,
        "total": j.total,
        "done": j.done,
        "failed": j.failed,
        "cancelled": j.cancelled,
        "pending": j.pending,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_usd,
            "model_calls": usage.model_calls,
            "latency_ms": usage.latency_ms,
        },
        "created_unix_ms": j.created_unix_ms,
        "finished_unix_ms": j.finished_unix_ms,
    })
}

/// The canonical name of a gRPC status code (`CANCELLED`), as the gRPC
/// spec, grpcurl and the README write it.
fn code_name(code: i32) -> &'static str {
    use tonic::Code;
    match Code::from_i32(code) {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A result as one JSON object, with the proto's field names: the
/// `response`, or the `error`'s code (by name) and message.
fn result_json(r: proto::BatchResult) -> serde_json::Value {
    use proto::batch_result::Outcome;
    let mut v = serde_json::json!({ "item_index": r.item_index, "offset": r.offset });
    if !r.item_id.is_empty() {
        v["id"] = serde_json::Value::String(r.item_id);
    }
    match r.outcome {
        Some(Outcome::Response(answer)) => v["response"] = super::ask::response_json(&answer),
        Some(Outcome::Error(e)) => {
            v["error"] = serde_json::json!({ "code": code_name(e.code), "message": e.message });
        }
        None => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_use_the_proto_names_and_grpc_code_names() {
        use proto::batch_result::Outcome;
        let failed = proto::BatchResult {
            item_index: 3,
            offset: 7,
            outcome: Some(Outcome::Error(proto::BatchItemError { code: 1, message: "cancelled".into() })),
            item_id: "q7".into(),
        };
        let v = result_json(failed);
        assert_eq!(v["error"]["code"], "CANCELLED", "{v}");
        assert_eq!(v["id"], "q7", "{v}");
        assert_eq!((v["item_index"].as_u64(), v["offset"].as_u64()), (Some(3), Some(7)));
        let answered = proto::BatchResult {
            outcome: Some(Outcome::Response(proto::AskResponse {
                answer: "yes".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = result_json(answered);
        assert_eq!(v["response"]["answer"], "yes");
        assert!(v.get("id").is_none(), "no id when the item had none: {v}");
        assert_eq!(code_name(4), "DEADLINE_EXCEEDED");
    }

    #[test]
    fn reads_rows_and_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.jsonl");
        std::fs::write(&ok, "{\"id\": \"q1\", \"query\": \"a\", \"ground_truth\": \"x\"}\n\n{\"query\": \"b\", \"variant\": \"concise\"}\n{\"id\": 7, \"query\": \"c\"}\n")
            .unwrap();
        let (items, ids) = read_items(&ok).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!((items[1].query.as_str(), items[1].variant.as_str()), ("b", "concise"));
        assert_eq!(ids, vec!["q1".to_string(), String::new(), "7".to_string()]);
        let plain = dir.path().join("plain.jsonl");
        std::fs::write(&plain, "{\"query\": \"a\"}\n").unwrap();
        assert!(read_items(&plain).unwrap().1.is_empty(), "no ids at all: none sent");
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"query\": \"a\"}\n{\"qery\": \"b\"}\n").unwrap();
        let err = read_items(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2:") && err.contains("query"), "{err}");
    }
}
