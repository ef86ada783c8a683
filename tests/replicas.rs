//! Three `meshops serve` processes as one gateway, on a real PostgreSQL and
//! a real Redis started by the test on loopback (`tests/common/backends`):
//! batch jobs are shared and owned by keys, a replica killed with SIGKILL
//! mid-job leaves its items to the others (every item exactly one result),
//! a PostgreSQL restart loses and duplicates nothing, one key's budgets
//! hold across the replicas (batch items included), and while Redis is
//! down the configured policy holds.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::backends::{Postgres, Redis};
use common::served::{Served, serve};
use common::wait;
use meshops::proto::batch_client::BatchClient;
use meshops::proto::batch_result::Outcome;
use meshops::proto::gateway_client::GatewayClient;
use meshops::proto::{
    AskRequest, BatchJob, BatchResult, BatchState, DeleteSessionRequest, FeedbackRequest, GetBatchRequest,
    StreamBatchResultsRequest, SubmitBatchRequest,
};
use tonic::Code;
use tonic::transport::Channel;

const KEYS_VAR: &str = "MESHOPS_TEST_REPLICA_KEYS";
const KEY_A: &str = "replica-key-a";
const KEY_B: &str = "replica-key-b";

/// A request carrying `key`.
fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// The environment of a replica on the shared stores, with `extra`.
fn shared_env(pg: &Postgres, redis: &Redis, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("MESHOPS__BATCH__BACKEND", "postgres".to_string()),
        ("MESHOPS__BATCH__URL", pg.url()),
        ("MESHOPS__BATCH__LEASE_MS", "2000".into()),
        ("MESHOPS__SESSIONS__BACKEND", "postgres".into()),
        ("MESHOPS__SESSIONS__URL", pg.url()),
        ("MESHOPS__LIVE__BACKEND", "postgres".into()),
        ("MESHOPS__LIVE__URL", pg.url()),
        ("MESHOPS__LIVE__CAPTURE_CONTENT", "true".into()),
        ("MESHOPS__GATEWAY__LIMITS_BACKEND", "redis".into()),
        ("MESHOPS__GATEWAY__REDIS_URL", redis.url()),
        ("MESHOPS__GATEWAY__API_KEYS_ENV", KEYS_VAR.into()),
        (KEYS_VAR, format!("{KEY_A},{KEY_B}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Three replicas with `env`, each with a data dir of its own.
async fn replicas(env: &[(String, String)], dirs: &[tempfile::TempDir; 3]) -> Vec<Served> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for dir in dirs {
        out.push(serve(dir.path(), &env).await);
    }
    out
}

fn dirs() -> [tempfile::TempDir; 3] {
    [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()]
}

async fn batch(s: &Served) -> BatchClient<Channel> {
    BatchClient::connect(s.target.clone()).await.unwrap()
}

async fn gateway(s: &Served) -> GatewayClient<Channel> {
    GatewayClient::connect(s.target.clone()).await.unwrap()
}

fn items(n: usize) -> Vec<AskRequest> {
    let rows = common::sample_rows();
    (0..n).map(|i| AskRequest { query: rows[i % rows.len()].query.clone(), ..Default::default() }).collect()
}

async fn get(c: &mut BatchClient<Channel>, job_id: &str, key: &str) -> Result<BatchJob, tonic::Status> {
    c.get_batch(keyed(GetBatchRequest { job_id: job_id.into() }, key)).await.map(|r| r.into_inner())
}

/// Follows a job's results from offset 0 until its stream ends.
async fn follow(c: &mut BatchClient<Channel>, job_id: &str, key: &str) -> Vec<BatchResult> {
    let request = keyed(StreamBatchResultsRequest { job_id: job_id.into(), from_offset: 0 }, key);
    let mut stream = c.stream_batch_results(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    // A bound for a broken build (a lost item keeps the stream open), not
    // a speed check.
    let all = async {
        while let Some(r) = stream.message().await.unwrap() {
            out.push(r);
        }
    };
    if tokio::time::timeout(Duration::from_secs(300), all).await.is_err() {
        panic!("job {job_id} still had items without a result after 300 s");
    }
    out
}

/// Every item exactly once, offsets dense, every one answered.
fn exactly_once(results: &[BatchResult], total: usize) {
    assert_eq!(results.len(), total, "results streamed");
    let indexes: BTreeSet<u32> = results.iter().map(|r| r.item_index).collect();
    assert_eq!(indexes, (0..total as u32).collect(), "every item has a result");
    let offsets: Vec<u64> = results.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..total as u64).collect::<Vec<_>>(), "offsets dense in commit order");
    for r in results {
        assert!(matches!(&r.outcome, Some(Outcome::Response(a)) if !a.answer.is_empty()), "{r:?}");
    }
}

/// (result rows, distinct items with a result) of a job, in PostgreSQL.
fn stored(pg: &Postgres, job_id: &str) -> (u64, u64) {
    let row = pg.sql(&format!(
        "SELECT count(*) || ',' || count(DISTINCT item_index) FROM batch_results WHERE job_id = '{job_id}'"
    ));
    let (rows, distinct) = row.split_once(',').unwrap();
    (rows.parse().unwrap(), distinct.parse().unwrap())
}

const SLOW: [(&str, &str); 3] = [
    ("MESHOPS__MODELS__OFFLINE__LATENCY_MS", "40"),
    ("MESHOPS__BATCH__WORKERS", "3"),
    ("MESHOPS__BATCH__PER_JOB_CONCURRENCY", "3"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_jobs_and_finish_a_killed_replicas_items() {
    let what = "three replicas on postgres and redis";
    let (Some(pg), Some(redis)) = (Postgres::start(what), Redis::start(what)) else { return };
    let env = shared_env(&pg, &redis, &SLOW);
    let dirs = dirs();
    let mut r = replicas(&env, &dirs).await;
    const N: usize = 120;

    // Submitted to A, read from B with the same key; another key gets
    // NOT_FOUND, as for an unknown id.
    let mut a = batch(&r[0]).await;
    let submit =
        SubmitBatchRequest { items: items(N), request_id: "replicas-1".into(), ..Default::default() };
    let job = a.submit_batch(keyed(submit.clone(), KEY_A)).await.unwrap().into_inner();
    let mut b = batch(&r[1]).await;
    assert_eq!(get(&mut b, &job.job_id, KEY_A).await.unwrap().job_id, job.job_id);
    assert_eq!(get(&mut b, &job.job_id, KEY_B).await.unwrap_err().code(), Code::NotFound);
    // The same request_id on another replica is the same job.
    let again = b.submit_batch(keyed(submit, KEY_A)).await.unwrap().into_inner();
    assert_eq!(again.job_id, job.job_id);

    // Some results, then A dies without warning.
    wait::until("20 results before the kill", wait::PATIENCE, || {
        let (mut b, id) = (b.clone(), job.job_id.clone());
        async move {
            let j = get(&mut b, &id, KEY_A).await.unwrap();
            assert_ne!(
                j.state,
                BatchState::Completed as i32,
                "finished before the kill; slow the engine down"
            );
            j.done >= 20
        }
    })
    .await;
    let mut killed = r.remove(0);
    killed.child.kill().unwrap(); // SIGKILL
    killed.child.wait().unwrap();
    let at_kill = Instant::now();
    let held_by_a = pg.sql(&format!(
        "SELECT count(*) FROM batch_items WHERE job_id = '{}' AND state = 1 AND lease_owner IS NOT NULL",
        job.job_id
    ));

    // C streams the job to its end; B and C ran the rest.
    let mut c = batch(&r[1]).await;
    let results = follow(&mut c, &job.job_id, KEY_A).await;
    let finished_after = at_kill.elapsed();
    exactly_once(&results, N);
    let j = get(&mut c, &job.job_id, KEY_A).await.unwrap();
    assert_eq!((j.state, j.done, j.pending), (BatchState::Completed as i32, N as u32, 0), "{j:?}");
    let (rows, distinct) = stored(&pg, &job.job_id);
    assert_eq!((rows, distinct), (N as u64, N as u64), "one stored result per item");
    let taken_over: u64 = pg
        .sql(&format!("SELECT count(*) FROM batch_items WHERE job_id = '{}' AND attempts > 1", job.job_id))
        .parse()
        .unwrap();
    println!(
        "replicas: {N} items, lost 0, duplicated {}; {held_by_a} claimed (A's and the survivors') at the kill, \
         {taken_over} run again after a lease ran out (lease 2000 ms); job finished {:.1} s after the kill",
        rows - distinct,
        finished_after.as_secs_f64()
    );

    // A conversation is the owner's on every replica.
    let mut g1 = gateway(&r[0]).await;
    let turn = AskRequest {
        query: "how do I reset my password".into(),
        session_id: "s-1".into(),
        ..Default::default()
    };
    g1.ask(keyed(turn, KEY_A)).await.unwrap();
    let mut g2 = gateway(&r[1]).await;
    let delete = |key| keyed(DeleteSessionRequest { session_id: "s-1".into() }, key);
    assert_eq!(g2.delete_session(delete(KEY_B)).await.unwrap_err().code(), Code::NotFound);
    assert!(g2.delete_session(delete(KEY_A)).await.unwrap().into_inner().deleted);

    // Live records are shared too: an answer from B is rated through C by
    // the key that asked (another key: NOT_FOUND), and the export, run
    // anywhere on the same configuration, shows it.
    let asked = AskRequest { query: "What is a variant?".into(), ..Default::default() };
    let answer = g1.ask(keyed(asked, KEY_A)).await.unwrap().into_inner();
    let rate = |key| {
        keyed(FeedbackRequest { trace_id: answer.trace_id.clone(), score: 1.0, comment: "ok".into() }, key)
    };
    wait::until("the record to reach the shared store", wait::PATIENCE, || {
        let mut g2 = g2.clone();
        let r = rate(KEY_A);
        async move { g2.submit_feedback(r).await.is_ok() }
    })
    .await;
    assert_eq!(g2.submit_feedback(rate(KEY_B)).await.unwrap_err().code(), Code::NotFound);
    let out = dirs[2].path().join("live.jsonl");
    let export = std::process::Command::new(env!("CARGO_BIN_EXE_meshops"))
        .args(["live", "export", "--with-feedback", "--out", out.to_str().unwrap()])
        .current_dir(common::root())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("MESHOPS_ENV")
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["trace_id"], answer.trace_id.as_str());
    assert_eq!(rows[0]["feedback"]["score"], 1.0);
    assert_eq!(rows[0]["query"], "What is a variant?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_job_loses_and_duplicates_nothing() {
    let what = "batch on a restarting postgres";
    let (Some(mut pg), Some(redis)) = (Postgres::start(what), Redis::start(what)) else { return };
    let env = shared_env(&pg, &redis, &SLOW);
    let dirs = dirs();
    let r = replicas(&env, &dirs).await;
    const N: usize = 90;
    let mut a = batch(&r[0]).await;
    let submit = SubmitBatchRequest { items: items(N), ..Default::default() };
    let job = a.submit_batch(keyed(submit, KEY_A)).await.unwrap().into_inner();
    wait::until("15 results before the restart", wait::PATIENCE, || {
        let (mut a, id) = (a.clone(), job.job_id.clone());
        async move { get(&mut a, &id, KEY_A).await.unwrap().done >= 15 }
    })
    .await;
    pg.restart();
    // While the database comes back the replicas answer UNAVAILABLE or
    // recover; the job ends on its own.
    let mut c = batch(&r[2]).await;
    wait::until("the job to complete after the restart", wait::PATIENCE, || {
        let (mut c, id) = (c.clone(), job.job_id.clone());
        async move { get(&mut c, &id, KEY_A).await.is_ok_and(|j| j.state == BatchState::Completed as i32) }
    })
    .await;
    let results = follow(&mut c, &job.job_id, KEY_A).await;
    exactly_once(&results, N);
    assert_eq!(stored(&pg, &job.job_id), (N as u64, N as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_budgets_hold_across_replicas_and_redis_down_fails_closed() {
    let what = "shared limits in redis";
    let (Some(pg), Some(mut redis)) = (Postgres::start(what), Redis::start(what)) else { return };
    let limits = [("MESHOPS__GATEWAY__RATE_LIMIT_RPS", "5"), ("MESHOPS__GATEWAY__RATE_LIMIT_BURST", "5")];
    let env = shared_env(&pg, &redis, &limits);
    let dirs = dirs();
    let r = replicas(&env, &dirs).await;
    let mut clients = Vec::new();
    for s in &r {
        clients.push(gateway(s).await);
    }
    // Round-robin over the three replicas as fast as answers come: the
    // key's 5/s with a burst of 5 holds for all of them together.
    let start = Instant::now();
    let (mut admitted, mut refused) = (0u32, 0u32);
    while start.elapsed() < Duration::from_secs(2) {
        for c in clients.iter_mut() {
            match c.ask(keyed(AskRequest { query: "hello".into(), ..Default::default() }, KEY_A)).await {
                Ok(_) => admitted += 1,
                Err(s) => {
                    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                    assert!(s.message().contains("gateway.rate_limit_rps"), "{}", s.message());
                    refused += 1;
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bound = 5.0 + 5.0 * elapsed;
    println!("shared rate limit: {admitted} admitted, {refused} refused in {elapsed:.2} s; bound {bound:.1}");
    assert!(admitted >= 5, "the burst is admitted: {admitted}");
    assert!(
        f64::from(admitted) <= bound + 1.0,
        "{admitted} admitted over three replicas; 5/s burst 5 allows {bound:.1}"
    );
    assert!(refused > 0);
    // The other key has its own budget.
    let mut c = clients[2].clone();
    c.ask(keyed(AskRequest { query: "hello".into(), ..Default::default() }, KEY_B)).await.unwrap();

    // Redis down: fail_closed (the default) refuses keyed calls with
    // UNAVAILABLE on every replica; back up, they are served again.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for c in clients.iter_mut() {
        let s = c
            .ask(keyed(AskRequest { query: "hello".into(), ..Default::default() }, KEY_B))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
        assert!(s.message().contains("limits_fallback"), "{}", s.message());
    }
    redis.resume();
    wait::until("redis to be used again", wait::PATIENCE, || {
        let mut c = clients[0].clone();
        async move {
            c.ask(keyed(AskRequest { query: "hello".into(), ..Default::default() }, KEY_B)).await.is_ok()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_items_spend_the_keys_shared_token_budget_and_local_fallback_serves() {
    let what = "shared token budget";
    let (Some(pg), Some(mut redis)) = (Postgres::start(what), Redis::start(what)) else { return };
    let limits = [
        ("MESHOPS__GATEWAY__RATE_LIMIT_TPM", "300"),
        ("MESHOPS__GATEWAY__RATE_LIMIT_TOKEN_RESERVE", "10"),
        ("MESHOPS__GATEWAY__LIMITS_FALLBACK", "local"),
    ];
    let env = shared_env(&pg, &redis, &limits);
    let dirs = dirs();
    let r = replicas(&env, &dirs).await;
    // Key B's batch runs on whichever replicas claim its items, and spends
    // B's one budget: once it has, B's own requests are refused on C.
    let mut a = batch(&r[0]).await;
    let job = a
        .submit_batch(keyed(SubmitBatchRequest { items: items(4), ..Default::default() }, KEY_B))
        .await
        .unwrap()
        .into_inner();
    let mut c = gateway(&r[2]).await;
    wait::until("key B's batch to spend its token budget", wait::PATIENCE, || {
        let mut c = c.clone();
        async move {
            match c.ask(keyed(AskRequest { query: "hello".into(), ..Default::default() }, KEY_B)).await {
                Err(s) => {
                    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                    assert!(s.message().contains("gateway.rate_limit_tpm"), "{}", s.message());
                    true
                }
                Ok(_) => false,
            }
        }
    })
    .await;
    let spent = get(&mut a, &job.job_id, KEY_B).await.unwrap();
    assert!(spent.done >= 1, "the budget was spent by batch items: {spent:?}");
    // Key A is untouched.
    c.ask(keyed(AskRequest { query: "hello".into(), ..Default::default() }, KEY_A)).await.unwrap();

    // limits_fallback = "local": with Redis down, requests are counted in
    // each process and served.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut b = gateway(&r[1]).await;
    b.ask(keyed(AskRequest { query: "hello".into(), ..Default::default() }, KEY_A)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_concurrent_requests_are_bounded_across_replicas() {
    let what = "shared concurrency limit";
    let (Some(pg), Some(redis)) = (Postgres::start(what), Redis::start(what)) else { return };
    let limits = [
        ("MESHOPS__GATEWAY__RATE_LIMIT_CONCURRENCY", "2"),
        // Each request takes several model calls of 600 ms: six sent at
        // once all overlap.
        ("MESHOPS__MODELS__OFFLINE__LATENCY_MS", "600"),
    ];
    let env = shared_env(&pg, &redis, &limits);
    let dirs = dirs();
    let r = replicas(&env, &dirs).await;
    let mut calls = Vec::new();
    for i in 0..6 {
        let target = r[i % 3].target.clone();
        calls.push(tokio::spawn(async move {
            let mut c = GatewayClient::connect(target).await.unwrap();
            c.ask(keyed(
                AskRequest { query: "how do I reset my password".into(), ..Default::default() },
                KEY_A,
            ))
            .await
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("gateway.rate_limit_concurrency"), "{}", s.message());
                refused += 1;
            }
        }
    }
    println!("shared concurrency: {admitted} admitted, {refused} refused of 6 at once (limit 2)");
    assert_eq!((admitted, refused), (2, 4));
    // Each place was given back before its answer was sent: the key's
    // next request, at once and on any replica, is served.
    let mut c = gateway(&r[2]).await;
    c.ask(keyed(AskRequest { query: "hello".into(), ..Default::default() }, KEY_A)).await.unwrap();
}
