//! Documents added to and removed from a running gateway: `meshops ingest
//! --target` against the real `meshops serve` binary over loopback (the
//! next `Ask` cites the new document; `--delete` takes it out again; no
//! restart), the clear refusal of a local ingest or evaluation while a
//! gateway holds the store, and the `Admin` service's codes for bad input
//! and missing keys.

mod common;

use std::path::Path;

use common::served::{meshops, serve};
use meshops::proto::admin_client::AdminClient;
use meshops::proto::gateway_client::GatewayClient;
use meshops::proto::{
    AskRequest, AskResponse, DeleteDocumentsRequest, Document, IngestRequest, ingest_event,
};
use tonic::Code;

/// A document no shipped corpus file talks about, and a question only it
/// answers. The offline router sends a question it cannot place to the
/// default `question` flow, and the hashed embedder matches the rare words.
const DOC: &str = "# Zorblax calibration\n\nThe zorblax flux capacitor is recalibrated every fortnight by the night shift.\n";
const EDITED: &str = "# Zorblax calibration\n\nThe zorblax flux capacitor is recalibrated every full moon by the harbour crew.\n";
const QUESTION: &str = "How often is the zorblax flux capacitor recalibrated?";

fn text(o: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

async fn ask(target: &str) -> AskResponse {
    let mut client = GatewayClient::connect(target.to_string()).await.unwrap();
    client.ask(AskRequest { query: QUESTION.into(), ..Default::default() }).await.unwrap().into_inner()
}

fn cites(answer: &AskResponse, doc_id: &str) -> bool {
    answer.citations.iter().any(|c| c.doc_id == doc_id)
}

/// The binary, run off the test's async threads.
async fn run(args: &[&str], data: &Path) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let data = data.to_path_buf();
    tokio::task::spawn_blocking(move || meshops(&args.iter().map(String::as_str).collect::<Vec<_>>(), &data))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_through_a_running_gateway_is_cited_at_once_and_delete_takes_it_out() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(docs.path().join("ops")).unwrap();
    std::fs::write(docs.path().join("ops/zorblax.md"), DOC).unwrap();
    let served = serve(data.path(), &[]).await;
    let before = ask(&served.target).await;
    assert!(!cites(&before, "ops/zorblax"), "cited before it was ingested: {:?}", before.citations);

    // A folder, read by the client: the document id is its path in it.
    let folder = docs.path().to_str().unwrap();
    let out = run(&["ingest", "--target", &served.target, folder], data.path()).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ingested 1 files") && stdout.contains(&served.target), "{stdout}");
    let after = ask(&served.target).await;
    assert!(cites(&after, "ops/zorblax"), "not cited: {after:?}");
    let cited = |a: &AskResponse| -> Vec<String> {
        a.citations.iter().filter(|c| c.doc_id == "ops/zorblax").map(|c| c.text.clone()).collect()
    };
    assert!(cited(&after).iter().all(|t| t.contains("fortnight")), "{:?}", cited(&after));

    // The same id again, edited: replaced, not added beside the old one.
    std::fs::write(docs.path().join("ops/zorblax.md"), EDITED).unwrap();
    let again = run(&["ingest", "--target", &served.target, folder], data.path()).await;
    let (stdout, stderr) = text(&again);
    assert!(again.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("1 stale removed"), "{stdout}");
    let replaced = ask(&served.target).await;
    let texts = cited(&replaced);
    assert!(!texts.is_empty() && texts.iter().all(|t| t.contains("full moon")), "{texts:?}");

    let out = run(&["ingest", "--target", &served.target, "--delete", "ops/zorblax"], data.path()).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("removed 1 chunks"), "{stdout}");
    let gone = ask(&served.target).await;
    assert!(!cites(&gone, "ops/zorblax"), "still cited after delete: {:?}", gone.citations);

    // Deleting it again finds nothing to remove, and says so.
    let out = run(&["ingest", "--target", &served.target, "--delete", "ops/zorblax"], data.path()).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success() && stdout.contains("no chunks stored for: ops/zorblax"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_ingest_or_eval_while_a_gateway_holds_the_store_points_to_target() {
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &[]).await;
    let out = run(&["ingest", "corpus"], data.path()).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "ingested beside a running gateway: {stdout}");
    assert!(stderr.contains("a running gateway"), "{stderr}");
    assert!(stderr.contains(&format!("(process {})", served.child.id())), "{stderr}");
    assert!(stderr.contains("`meshops ingest --target http://"), "{stderr}");
    assert!(!stderr.contains("WouldBlock"), "{stderr}");

    let runs = tempfile::tempdir().unwrap();
    let out_dir = runs.path().join("run");
    let args = ["eval", "run", "--dataset", "eval/datasets/sample.jsonl", "--out", out_dir.to_str().unwrap()];
    let out = run(&args, data.path()).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "evaluated beside a running gateway: {stdout}");
    assert!(stderr.contains("a running gateway"), "{stderr}");
    assert!(stderr.contains("`meshops eval run --target http://"), "{stderr}");
    drop(served);

    // The gateway gone, the same local ingest works.
    let out = run(&["ingest", "corpus"], data.path()).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
}

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn doc(id: &str, text: &str) -> Document {
    Document { id: id.into(), text: text.into(), source: String::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_a_key_and_valid_documents_and_stream_progress_then_a_summary() {
    let overrides = meshops::gateway::Overrides { api_keys: Some(vec!["k1".into()]), ..Default::default() };
    let t = common::start(|_| {}, overrides).await;
    let mut admin = AdminClient::new(t.channel.clone());
    let ingest = |documents| IngestRequest { documents };
    let delete =
        |ids: &[&str]| DeleteDocumentsRequest { document_ids: ids.iter().map(|s| s.to_string()).collect() };

    // Fail closed: no key, or a wrong one.
    let err = admin.ingest(ingest(vec![doc("a", "text")])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = admin.ingest(with_key(ingest(vec![doc("a", "text")]), "nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = admin.delete_documents(delete(&["a"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let bad = [
        (ingest(vec![]), "documents must not be empty"),
        (ingest(vec![doc("", "text")]), "documents[0].id must not be empty"),
        (ingest(vec![doc("a", "  \n")]), "text must not be empty"),
        (ingest(vec![doc("a", "x"), doc("a", "y")]), "appears more than once"),
    ];
    for (request, message) in bad {
        let err = admin.ingest(with_key(request, "k1")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(message), "{err:?}");
    }
    for ids in [&[][..], &[""][..]] {
        let err = admin.delete_documents(with_key(delete(ids), "k1")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("document_ids"), "{err:?}");
    }

    // Progress first, the summary last; then the document can be deleted.
    let text = "# Notes\n\nFirst part.\n\n## More\n\nSecond part.\n";
    let mut stream =
        admin.ingest(with_key(ingest(vec![doc("notes", text)]), "k1")).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.unwrap());
    }
    let Some(ingest_event::Event::Summary(summary)) = events.last() else {
        panic!("no summary last: {events:?}")
    };
    assert_eq!((summary.documents, summary.chunks, summary.stale_removed), (1, 2, 0), "{summary:?}");
    assert!(events[..events.len() - 1].iter().all(|e| matches!(e, ingest_event::Event::Progress(_))));
    assert!(
        events.iter().any(
            |e| matches!(e, ingest_event::Event::Progress(p) if p.chunks_stored == 2 && p.chunks_total == 2)
        ),
        "{events:?}"
    );
    let deleted =
        admin.delete_documents(with_key(delete(&["notes", "other"]), "k1")).await.unwrap().into_inner();
    assert_eq!(deleted.chunks_removed, 2);
    assert_eq!(deleted.not_found, vec!["other".to_string()]);
    assert_eq!(deleted.points, summary.points - 2);
}
