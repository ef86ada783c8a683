//! `ListBatches` on the real `meshops serve` binary with API keys: newest
//! first, in pages that follow one another, a key seeing only the jobs it
//! submitted (over gRPC and through `meshops batch list`), and the codes
//! for a missing key and a made-up page token.

mod common;

use common::served::serve;
use meshops::proto::batch_client::BatchClient;
use meshops::proto::{AskRequest, ListBatchesRequest, ListBatchesResponse, SubmitBatchRequest};
use tonic::Code;
use tonic::transport::Channel;

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

async fn submit(c: &mut BatchClient<Channel>, key: &str, query: &str) -> String {
    let request = SubmitBatchRequest {
        items: vec![AskRequest { query: query.into(), ..Default::default() }],
        ..Default::default()
    };
    c.submit_batch(with_key(request, key)).await.unwrap().into_inner().job_id
}

async fn list(
    c: &mut BatchClient<Channel>,
    key: &str,
    page_size: u32,
    page_token: &str,
) -> ListBatchesResponse {
    let request = ListBatchesRequest { page_size, page_token: page_token.into() };
    c.list_batches(with_key(request, key)).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_newest_first_in_pages_and_only_the_callers_own() {
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("MESHOPS__GATEWAY__API_KEYS_ENV", "MESHOPS_TEST_LIST_KEYS"),
        ("MESHOPS_TEST_LIST_KEYS", "k-one,k-two"),
    ];
    let served = serve(data.path(), &env).await;
    let mut c = BatchClient::connect(served.target.clone()).await.unwrap();

    // Interleaved: five jobs of the first key, two of the second.
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..7 {
        if i % 3 == 1 {
            theirs.push(submit(&mut c, "k-two", &format!("What is a variant? ({i})")).await);
        } else {
            mine.push(submit(&mut c, "k-one", &format!("What does the critic do? ({i})")).await);
        }
    }
    assert_eq!((mine.len(), theirs.len()), (5, 2));

    // Pages of two: 2 + 2 + 1, newest first, nothing of the other key.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(&mut c, "k-one", 2, &token).await;
        pages += 1;
        assert!(page.jobs.len() <= 2, "{page:?}");
        seen.extend(page.jobs.iter().map(|j| j.job_id.clone()));
        let created: Vec<u64> = page.jobs.iter().map(|j| j.created_unix_ms).collect();
        assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<String> = mine.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let other = list(&mut c, "k-two", 0, "").await;
    let other_ids: Vec<String> = other.jobs.iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(other_ids, theirs.iter().rev().cloned().collect::<Vec<_>>());
    assert!(other.next_page_token.is_empty());

    // No key: refused; a token no listing gave: INVALID_ARGUMENT.
    let err = c.list_batches(ListBatchesRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let bad = ListBatchesRequest { page_size: 2, page_token: "garbage".into() };
    let err = c.list_batches(with_key(bad, "k-one")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // The CLI, with the second key from the environment.
    let target = served.target.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshops"))
            .args(["batch", "list", "--all", "--page-size", "1", "--target", &target])
            .current_dir(common::root())
            .env("MESHOPS_API_KEY", "k-two")
            .env_remove("MESHOPS_ENV")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["job_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(listed, other_ids);
}

/// A job is its key's: another key gets NOT_FOUND for it on every call
/// that names it (the answer an unknown id gets), and a `request_id` is
/// per key, so one key can neither squat another's id nor reach its job
/// through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_job_is_not_found_and_request_ids_are_per_key() {
    use meshops::proto::{CancelBatchRequest, GetBatchRequest, StreamBatchResultsRequest};
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("MESHOPS__GATEWAY__API_KEYS_ENV", "MESHOPS_TEST_OWNER_KEYS"),
        ("MESHOPS_TEST_OWNER_KEYS", "k-one,k-two"),
    ];
    let served = serve(data.path(), &env).await;
    let mut c = BatchClient::connect(served.target.clone()).await.unwrap();
    let job = submit(&mut c, "k-one", "What is a variant?").await;

    let get = c.get_batch(with_key(GetBatchRequest { job_id: job.clone() }, "k-two")).await.unwrap_err();
    assert_eq!(get.code(), Code::NotFound, "{get:?}");
    let stream = c
        .stream_batch_results(with_key(
            StreamBatchResultsRequest { job_id: job.clone(), from_offset: 0 },
            "k-two",
        ))
        .await
        .unwrap_err();
    assert_eq!(stream.code(), Code::NotFound, "{stream:?}");
    let cancel =
        c.cancel_batch(with_key(CancelBatchRequest { job_id: job.clone() }, "k-two")).await.unwrap_err();
    assert_eq!(cancel.code(), Code::NotFound, "{cancel:?}");
    // The owner still reads it, and it was not cancelled.
    let own =
        c.get_batch(with_key(GetBatchRequest { job_id: job.clone() }, "k-one")).await.unwrap().into_inner();
    assert_ne!(own.state, meshops::proto::BatchState::Cancelled as i32);

    let with_id = |key: &str| {
        with_key(
            SubmitBatchRequest {
                items: vec![AskRequest { query: "What does the critic do?".into(), ..Default::default() }],
                request_id: "nightly-1".into(),
                ..Default::default()
            },
            key,
        )
    };
    let first = c.submit_batch(with_id("k-one")).await.unwrap().into_inner().job_id;
    let other = c.submit_batch(with_id("k-two")).await.unwrap().into_inner().job_id;
    assert_ne!(first, other, "the same request_id under another key is another job");
    let again = c.submit_batch(with_id("k-one")).await.unwrap().into_inner().job_id;
    assert_eq!(first, again, "the same key's request_id returns its job");
}
