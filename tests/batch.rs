//! Durable batch jobs against the real `meshops serve` binary over gRPC on
//! loopback: a job survives SIGKILL and every item ends with exactly one
//! result (checked through `StreamBatchResults` and in the database file);
//! `request_id` makes submission idempotent; cancel, limits and unknown
//! jobs answer with the right codes; the `meshops batch` commands work.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::served::{Served, serve};
use common::wait;
use meshops::proto::batch_client::BatchClient;
use meshops::proto::batch_result::Outcome;
use meshops::proto::{
    AskRequest, BatchJob, BatchResult, BatchState, CancelBatchRequest, GetBatchRequest,
    StreamBatchResultsRequest, SubmitBatchRequest,
};
use tonic::Code;
use tonic::transport::Channel;

async fn client(s: &Served) -> BatchClient<Channel> {
    BatchClient::connect(s.target.clone()).await.unwrap()
}

fn items(n: usize) -> Vec<AskRequest> {
    let rows = common::sample_rows();
    (0..n).map(|i| AskRequest { query: rows[i % rows.len()].query.clone(), ..Default::default() }).collect()
}

async fn get(c: &mut BatchClient<Channel>, job_id: &str) -> BatchJob {
    c.get_batch(GetBatchRequest { job_id: job_id.into() }).await.unwrap().into_inner()
}

/// Follows a job's results from `from` until the stream ends.
async fn results(c: &mut BatchClient<Channel>, job_id: &str, from: u64) -> Vec<BatchResult> {
    let request = StreamBatchResultsRequest { job_id: job_id.into(), from_offset: from };
    let mut stream = c.stream_batch_results(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    // A bound for a broken build (a lost item would keep the stream open
    // forever), not a speed check.
    let follow = async {
        while let Some(r) = stream.message().await.unwrap() {
            out.push(r);
        }
    };
    if tokio::time::timeout(Duration::from_secs(FOLLOW_BOUND_S), follow).await.is_err() {
        panic!("job {job_id} still had items without a result after {FOLLOW_BOUND_S} s");
    }
    out
}

const FOLLOW_BOUND_S: u64 = 300;

fn db(data: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data.join("batch.sqlite3")).unwrap()
}

/// (results, distinct items with a result, items claimed without a result)
fn counts(data: &Path, job_id: &str) -> (i64, i64, i64) {
    let conn = db(data);
    let (rows, distinct) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT item_index) FROM results WHERE job_id = ?1",
            [job_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let claimed = conn
        .query_row(
            "SELECT COUNT(*) FROM items i WHERE job_id = ?1 AND state = 1 AND NOT EXISTS \
             (SELECT 1 FROM results r WHERE r.job_id = i.job_id AND r.item_index = i.item_index)",
            [job_id],
            |r| r.get(0),
        )
        .unwrap();
    (rows, distinct, claimed)
}

/// Item index by offset, as stored.
fn stored_offsets(data: &Path, job_id: &str) -> BTreeMap<i64, i64> {
    let conn = db(data);
    let mut q = conn.prepare("SELECT seq, item_index FROM results WHERE job_id = ?1").unwrap();
    q.query_map([job_id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

const ITEMS: usize = 200;
const SLOW: [(&str, &str); 3] = [
    ("MESHOPS__MODELS__OFFLINE__LATENCY_MS", "20"),
    ("MESHOPS__BATCH__WORKERS", "4"),
    ("MESHOPS__BATCH__PER_JOB_CONCURRENCY", "4"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_sigkill_and_every_item_gets_exactly_one_result() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().to_path_buf();
    let mut first = serve(&data, &SLOW).await;
    let mut c = client(&first).await;
    let submit =
        SubmitBatchRequest { items: items(ITEMS), request_id: "sigkill-test".into(), ..Default::default() };
    let job = c.submit_batch(submit.clone()).await.unwrap().into_inner();
    assert_eq!(job.total, ITEMS as u32);
    assert_eq!(job.pending, ITEMS as u32);

    // Let some items finish, then kill the server without warning.
    wait::until("20 results before the kill", wait::PATIENCE, || {
        let (mut c, job_id) = (c.clone(), job.job_id.clone());
        async move {
            let j = get(&mut c, &job_id).await;
            assert_ne!(
                j.state,
                BatchState::Completed as i32,
                "finished before the kill; slow the engine down"
            );
            j.done + j.failed >= 20
        }
    })
    .await;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    drop(c);
    let (before, _, in_flight) = counts(&data, &job.job_id);
    assert!((20..ITEMS as i64).contains(&before), "{before} results at the kill");
    let answered_before = stored_offsets(&data, &job.job_id);

    // Restart on the same data dir and follow the job to its end.
    let restarted = Instant::now();
    let second = serve(&data, &SLOW).await;
    let serving = restarted.elapsed();
    let mut c = client(&second).await;
    let streamed = results(&mut c, &job.job_id, 0).await;
    let done = restarted.elapsed();
    let j = get(&mut c, &job.job_id).await;
    assert_eq!(j.state, BatchState::Completed as i32);
    assert_eq!((j.done, j.failed, j.cancelled, j.pending), (ITEMS as u32, 0, 0, 0), "{j:?}");
    assert!(j.finished_unix_ms >= j.created_unix_ms);

    // Every item exactly once, offsets dense, every one an answer.
    assert_eq!(streamed.len(), ITEMS);
    let indexes: BTreeSet<u32> = streamed.iter().map(|r| r.item_index).collect();
    assert_eq!(indexes, (0..ITEMS as u32).collect());
    let offsets: Vec<u64> = streamed.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..ITEMS as u64).collect::<Vec<_>>());
    for r in &streamed {
        match &r.outcome {
            Some(Outcome::Response(a)) => assert!(!a.answer.is_empty() && !a.intent.is_empty(), "{a:?}"),
            other => panic!("item {} has no answer: {other:?}", r.item_index),
        }
    }
    // Results committed before the kill were not answered again.
    let after: BTreeMap<u64, u32> = streamed.iter().map(|r| (r.offset, r.item_index)).collect();
    for (seq, index) in &answered_before {
        assert_eq!(after.get(&(*seq as u64)), Some(&(*index as u32)), "offset {seq} changed after restart");
    }
    // Resuming from an offset gives the tail.
    let tail = results(&mut c, &job.job_id, 150).await;
    assert_eq!(tail.iter().map(|r| r.offset).collect::<Vec<_>>(), (150..ITEMS as u64).collect::<Vec<_>>());

    // The same request_id again: the same job, not a new one.
    let again = c.submit_batch(submit).await.unwrap().into_inner();
    assert_eq!(again.job_id, job.job_id);
    assert_eq!(again.state, BatchState::Completed as i32);

    // Graceful stop: exit 0, database closed cleanly (WAL checkpointed away).
    let mut second = second;
    sigterm(&second.child);
    let status = second.child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
    let wal = data.join("batch.sqlite3-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "WAL left behind");
    let (rows, distinct, claimed) = counts(&data, &job.job_id);
    assert_eq!((rows, distinct, claimed), (ITEMS as i64, ITEMS as i64, 0));
    let jobs: i64 = db(&data)
        .query_row("SELECT COUNT(*) FROM jobs WHERE request_id = 'sigkill-test'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jobs, 1);
    let mode: String = db(&data).query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");

    println!(
        "batch recovery: {ITEMS} items, {before} results committed before SIGKILL ({in_flight} claimed \
         without a result), restart -> SERVING {:.2} s, restart -> job completed {:.2} s \
         ({} items run after the restart), {rows} result rows for {distinct} distinct items",
        serving.as_secs_f64(),
        done.as_secs_f64(),
        ITEMS as i64 - before,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_cancel_limits_unknown_jobs_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MESHOPS__MODELS__OFFLINE__LATENCY_MS", "20"),
        // One worker: a job finishing shows that the item before it ended.
        ("MESHOPS__BATCH__WORKERS", "1"),
        ("MESHOPS__BATCH__PER_JOB_CONCURRENCY", "1"),
        ("MESHOPS__BATCH__MAX_ITEMS", "50"),
    ];
    let served = serve(dir.path(), &env).await;
    let mut c = client(&served).await;

    // Unknown jobs.
    let err = c.get_batch(GetBatchRequest { job_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("nope"), "{}", err.message());
    let err = c.cancel_batch(CancelBatchRequest { job_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let request = StreamBatchResultsRequest { job_id: "nope".into(), from_offset: 0 };
    assert_eq!(c.stream_batch_results(request).await.map(|_| ()).unwrap_err().code(), Code::NotFound);

    // Limits and bad items.
    let submit = |items: Vec<AskRequest>, rid: &str| SubmitBatchRequest {
        items,
        request_id: rid.into(),
        ..Default::default()
    };
    let err = c.submit_batch(submit(vec![], "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at least one item"), "{}", err.message());
    let err = c.submit_batch(submit(items(51), "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("batch.max_items = 50"), "{}", err.message());
    let mut bad = items(5);
    bad[3].query = "  ".into();
    let err = c.submit_batch(submit(bad, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("items[3]"), "{}", err.message());
    let mut bad = items(2);
    bad[1].variant = "no_such_variant".into();
    let err = c.submit_batch(submit(bad, "")).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("no_such_variant"), "{err:?}");

    // Idempotent submission; the same key with other items is refused.
    let first = c.submit_batch(submit(items(40), "twice")).await.unwrap().into_inner();
    let second = c.submit_batch(submit(items(40), "twice")).await.unwrap().into_inner();
    assert_eq!(first.job_id, second.job_id);
    let err = c.submit_batch(submit(items(3), "twice")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Cancel, once some items are answered: pending items end CANCELLED,
    // every item still has one result.
    wait::until("an answered item before the cancel", wait::PATIENCE, || {
        let (mut c, job_id) = (c.clone(), first.job_id.clone());
        async move { get(&mut c, &job_id).await.done >= 1 }
    })
    .await;
    let cancelled =
        c.cancel_batch(CancelBatchRequest { job_id: first.job_id.clone() }).await.unwrap().into_inner();
    assert_eq!(cancelled.state, BatchState::Cancelled as i32);
    assert_eq!(cancelled.pending, 0);
    assert!(cancelled.cancelled > 0, "{cancelled:?}");
    assert_eq!(cancelled.done + cancelled.failed + cancelled.cancelled, 40);
    let all = results(&mut c, &first.job_id, 0).await;
    assert_eq!(all.len(), 40);
    assert_eq!(all.iter().map(|r| r.item_index).collect::<BTreeSet<_>>().len(), 40);
    let cancelled_results = all
        .iter()
        .filter(|r| matches!(&r.outcome, Some(Outcome::Error(e)) if e.code == Code::Cancelled as i32))
        .count();
    assert_eq!(cancelled_results as u32, cancelled.cancelled);
    let err = c
        .stream_batch_results(StreamBatchResultsRequest { job_id: first.job_id.clone(), from_offset: 41 })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("offset 41"), "{}", err.message());

    // The CLI: submit a JSONL file (eval dataset rows), follow, status.
    let file = dir.path().join("questions.jsonl");
    let rows: Vec<String> = common::sample_rows()
        .iter()
        .take(3)
        .map(|r| serde_json::json!({"id": r.id, "query": r.query, "variant": "concise"}).to_string())
        .collect();
    std::fs::write(&file, rows.join("\n")).unwrap();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_meshops"))
            .arg("batch")
            .args(args)
            .args(["--target", &served.target])
            .current_dir(common::root())
            .env_remove("MESHOPS_ENV")
            .output()
            .unwrap()
    };
    let out = cli(&["submit", file.to_str().unwrap(), "--request-id", "cli-1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(job["total"], 3);
    let out = cli(&["results", &job_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["response"]["variant"] == "concise"), "{lines:?}");
    // The one worker ran this job after the item running at the cancel had
    // stopped: that item's late answer, if any, was dropped.
    let later = get(&mut c, &first.job_id).await;
    assert_eq!((later.done, later.cancelled), (cancelled.done, cancelled.cancelled));
    // Each result names its dataset row.
    let ids: Vec<String> = common::sample_rows().iter().take(3).map(|r| r.id.clone()).collect();
    for line in &lines {
        let index = line["item_index"].as_u64().unwrap() as usize;
        assert_eq!(line["id"].as_str(), Some(ids[index].as_str()), "{line}");
    }
    // The newest job first, one page at a time.
    let out = cli(&["list", "--page-size", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["job_id"].as_str(), Some(job_id.as_str()));
    let more = String::from_utf8_lossy(&out.stderr).into_owned();
    let token = more.trim().strip_prefix("more jobs: --page-token ").unwrap_or_else(|| panic!("{more}"));
    let out = cli(&["list", "--page-token", token, "--all"]);
    let older: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(older.len(), 1, "the one job submitted before: {older:?}");
    assert_eq!(older[0]["job_id"].as_str(), Some(first.job_id.as_str()));
    let out = cli(&["status", &job_id]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((status["state"].as_str(), status["done"].as_u64()), (Some("completed"), Some(3)));
    let out = cli(&["status", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["cancel", &job_id]);
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(after["state"], "completed", "cancelling a finished job changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_work_leaves_real_time_slots_free_and_sigterm_stops_at_an_item_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MESHOPS__MODELS__OFFLINE__LATENCY_MS", "20"),
        ("MESHOPS__BATCH__WORKERS", "4"),
        ("MESHOPS__BATCH__PER_JOB_CONCURRENCY", "4"),
        // One real-time slot and no queue: were batch items to take it,
        // the Ask below would be shed.
        ("MESHOPS__GATEWAY__MAX_IN_FLIGHT", "1"),
        ("MESHOPS__GATEWAY__MAX_QUEUED", "0"),
    ];
    let served = serve(dir.path(), &env).await;
    let mut c = client(&served).await;
    let job = c
        .submit_batch(SubmitBatchRequest { items: items(100), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    wait::until("five answered items", wait::PATIENCE, || {
        let (mut c, job_id) = (c.clone(), job.job_id.clone());
        async move { get(&mut c, &job_id).await.done >= 5 }
    })
    .await;
    assert_eq!(get(&mut c, &job.job_id).await.state, BatchState::Running as i32);
    let mut gateway =
        meshops::proto::gateway_client::GatewayClient::connect(served.target.clone()).await.unwrap();
    let answer = gateway
        .ask(AskRequest { query: "What does the retriever agent do?".into(), ..Default::default() })
        .await
        .expect("a real-time Ask while four batch items run");
    assert!(!answer.into_inner().answer.is_empty());

    // A results stream open at shutdown ends with UNAVAILABLE and the
    // offset to resume from.
    let request = StreamBatchResultsRequest { job_id: job.job_id.clone(), from_offset: 0 };
    let mut stream = c.stream_batch_results(request).await.unwrap().into_inner();
    sigterm(&served.child);
    let mut seen = 0;
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => seen += 1,
            Ok(None) => panic!("stream ended cleanly before the job finished"),
            Err(s) => break s,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains(&format!("from_offset = {seen}")), "{} after {seen}", end.message());
    let mut served = served;
    let status = served.child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");

    // Workers finished the items they held and claimed no more; the
    // database was closed cleanly.
    let (rows, _, claimed) = counts(dir.path(), &job.job_id);
    assert_eq!(claimed, 0, "items left claimed without a result");
    assert!((5..100).contains(&rows), "{rows}");
    let wal = dir.path().join("batch.sqlite3-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "WAL left behind");
}
