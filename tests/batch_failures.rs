//! Batch items that fail and items that time out, against the real
//! `meshops serve` binary: each item's result carries its error's gRPC
//! code, the job's counts add up, and `meshops batch results` prints the
//! code's name.

mod common;

use common::served::{Served, meshops, serve};
use meshops::proto::batch_client::BatchClient;
use meshops::proto::batch_result::Outcome;
use meshops::proto::{
    AskRequest, BatchJob, BatchResult, BatchState, GetBatchRequest, StreamBatchResultsRequest,
    SubmitBatchRequest,
};
use tonic::Code;

/// Submits `n` sample questions (with row ids) and follows the job until
/// every item has a result; returns the results and the finished job.
async fn run_job(served: &Served, n: usize) -> (Vec<BatchResult>, BatchJob) {
    let mut c = BatchClient::connect(served.target.clone()).await.unwrap();
    let rows = common::sample_rows();
    let items = (0..n).map(|i| AskRequest { query: rows[i].query.clone(), ..Default::default() }).collect();
    let item_ids = (0..n).map(|i| rows[i].id.clone()).collect();
    let job = c.submit_batch(SubmitBatchRequest { items, item_ids, ..Default::default() }).await.unwrap();
    let job_id = job.into_inner().job_id;
    let request = StreamBatchResultsRequest { job_id: job_id.clone(), from_offset: 0 };
    let mut stream = c.stream_batch_results(request).await.unwrap().into_inner();
    let mut results = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        results.push(r);
    }
    let job = c.get_batch(GetBatchRequest { job_id }).await.unwrap().into_inner();
    (results, job)
}

/// The code and message of every result; panics on an answered one.
fn errors(results: &[BatchResult]) -> Vec<(i32, String)> {
    results
        .iter()
        .map(|r| match &r.outcome {
            Some(Outcome::Error(e)) => (e.code, e.message.clone()),
            other => panic!("item {} was answered, not failed: {other:?}", r.item_index),
        })
        .collect()
}

/// `meshops batch results JOB` against `served`: the error code names of
/// the printed lines, by row id.
fn cli_codes(served: &Served, job: &BatchJob) -> Vec<(String, String)> {
    let data = tempfile::tempdir().unwrap();
    let out = meshops(&["batch", "results", &job.job_id, "--target", &served.target], data.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["error"]["code"].as_str().unwrap_or_default().into(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_whose_model_fails_end_unavailable_and_the_job_counts_them_failed() {
    let data = tempfile::tempdir().unwrap();
    // An overlay that makes every model call fail, as a provider that is down.
    let served = serve(data.path(), &[("MESHOPS__MODELS__OFFLINE__FAILURE_RATE", "1.0")]).await;
    let (results, job) = run_job(&served, 6).await;
    assert_eq!(results.len(), 6);
    for (code, message) in errors(&results) {
        assert_eq!(Code::from_i32(code), Code::Unavailable, "{message}");
        // The class and the agent, not the provider's own words (they stay
        // in the gateway's log).
        assert!(message.contains("the model call failed (unavailable)"), "{message}");
        assert!(!message.contains("injected failure"), "{message}");
    }
    assert_eq!(job.state, BatchState::Completed as i32, "{job:?}");
    assert_eq!((job.total, job.done, job.failed, job.cancelled, job.pending), (6, 0, 6, 0, 0), "{job:?}");
    let ids: Vec<String> = common::sample_rows().into_iter().take(6).map(|r| r.id).collect();
    let mut printed = cli_codes(&served, &job);
    printed.sort();
    let mut want: Vec<(String, String)> = ids.into_iter().map(|id| (id, "UNAVAILABLE".to_string())).collect();
    want.sort();
    assert_eq!(printed, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_slower_than_the_request_timeout_end_deadline_exceeded() {
    let data = tempfile::tempdir().unwrap();
    // A model slower than the whole request may take: each item's deadline
    // (`gateway.request_timeout_ms`) passes during its first model call.
    let env =
        [("MESHOPS__MODELS__OFFLINE__LATENCY_MS", "3000"), ("MESHOPS__GATEWAY__REQUEST_TIMEOUT_MS", "200")];
    let served = serve(data.path(), &env).await;
    let (results, job) = run_job(&served, 4).await;
    assert_eq!(results.len(), 4);
    for (code, message) in errors(&results) {
        assert_eq!(Code::from_i32(code), Code::DeadlineExceeded, "{message}");
    }
    assert_eq!(job.state, BatchState::Completed as i32, "{job:?}");
    assert_eq!((job.total, job.done, job.failed, job.cancelled, job.pending), (4, 0, 4, 0, 0), "{job:?}");
    let codes: Vec<String> = cli_codes(&served, &job).into_iter().map(|(_, code)| code).collect();
    assert_eq!(codes, ["DEADLINE_EXCEEDED"; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_some_failing_items_counts_each_outcome_once() {
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &[("MESHOPS__MODELS__OFFLINE__FAILURE_RATE", "0.5")]).await;
    let (results, job) = run_job(&served, 20).await;
    assert_eq!(results.len(), 20);
    let failed = results.iter().filter(|r| matches!(r.outcome, Some(Outcome::Error(_)))).count() as u32;
    let answered = results.iter().filter(|r| matches!(r.outcome, Some(Outcome::Response(_)))).count() as u32;
    assert_eq!(failed + answered, 20);
    assert!(failed > 0 && answered > 0, "{failed} failed, {answered} answered at failure_rate 0.5");
    assert_eq!((job.done, job.failed, job.pending), (answered, failed, 0), "{job:?}");
    assert_eq!(job.state, BatchState::Completed as i32, "{job:?}");
}
