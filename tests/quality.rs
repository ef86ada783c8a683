//! The quality loop at the gateway, over real gRPC: A/B assignment by
//! `[gateway.ab]` weights (stable per session, an explicit variant wins,
//! reloaded on SIGHUP by a real `meshops serve`), live records, and
//! `SubmitFeedback` through to `meshops live export`, whose rows the
//! evaluation harness reads as a dataset.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::served::meshops;
use common::wait;
use meshops::gateway::Overrides;
use meshops::proto::gateway_client::GatewayClient;
use meshops::proto::{AskRequest, FeedbackRequest};
use tonic::Code;

fn ask(q: &str, session: &str) -> AskRequest {
    AskRequest { query: q.into(), session_id: session.into(), ..Default::default() }
}

fn weights(pairs: &[(&str, u32)]) -> meshops::config::ab::AbSettings {
    meshops::config::ab::AbSettings { weights: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_split_by_weight_sessions_keep_their_variant_and_feedback_reaches_the_export() {
    let mut t = common::start(
        |s| {
            s.settings.gateway.ab = weights(&[("base", 50), ("concise", 50)]);
            s.settings.live.capture_content = true;
            // Conversations off: 200 sessions need not be remembered here.
            s.settings.sessions.enabled = false;
        },
        Overrides::default(),
    )
    .await;
    let mut by_variant: BTreeMap<String, u32> = BTreeMap::new();
    let mut first = Vec::new();
    for i in 0..200 {
        let r = t.client.ask(ask("What is a variant?", &format!("s-{i}"))).await.unwrap().into_inner();
        *by_variant.entry(r.variant.clone()).or_default() += 1;
        first.push(r);
    }
    println!("A/B 50/50 over 200 sessions: {by_variant:?}");
    assert_eq!(by_variant.keys().cloned().collect::<Vec<_>>(), ["", "concise"], "{by_variant:?}");
    // Binomial(200, 0.5): 70..=130 is beyond four standard deviations.
    for n in by_variant.values() {
        assert!((70..=130).contains(n), "{by_variant:?}");
    }
    // A session asked again keeps its variant; an explicit one wins.
    for (i, r) in first.iter().enumerate().take(20) {
        let again =
            t.client.ask(ask("And how do I pick one?", &format!("s-{i}"))).await.unwrap().into_inner();
        assert_eq!(again.variant, r.variant, "session s-{i}");
    }
    let explicit = AskRequest { variant: "no_critic".into(), ..ask("What is a variant?", "s-0") };
    assert_eq!(t.client.ask(explicit).await.unwrap().into_inner().variant, "no_critic");

    // Feedback on an answer's trace id is accepted and exported with it;
    // bad scores and unknown ids get the right codes.
    let rated = &first[3];
    let ack = t
        .client
        .submit_feedback(FeedbackRequest {
            trace_id: rated.trace_id.clone(),
            score: 1.0,
            comment: "clear".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.trace_id, rated.trace_id);
    let bad = FeedbackRequest { trace_id: rated.trace_id.clone(), score: 1.5, comment: String::new() };
    assert_eq!(t.client.submit_feedback(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let unknown = FeedbackRequest { trace_id: "0".repeat(32), score: 0.0, comment: String::new() };
    assert_eq!(t.client.submit_feedback(unknown).await.unwrap_err().code(), Code::NotFound);

    let data = t._data.path().to_path_buf();
    t.server.shutdown().await.unwrap();
    let out = data.join("live.jsonl");
    let run = meshops(
        &["live", "export", "--out", out.to_str().unwrap(), "--with-feedback", "--since", "1h"],
        &data,
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["trace_id"], rated.trace_id.as_str());
    assert_eq!(row["variant"], rated.variant.as_str());
    assert_eq!(row["feedback"]["score"], 1.0);
    assert_eq!(row["feedback"]["comment"], "clear");
    assert_eq!(row["query"], "What is a variant?");
    assert_eq!(row["response"], rated.answer.as_str());
    // The export is a dataset as it is.
    let (dataset, _) =
        meshops::eval::dataset::read_dataset(&out, &meshops::eval::dataset::ColumnMap::default()).unwrap();
    assert_eq!(dataset[0].query, "What is a variant?");

    // Every answer was recorded; by variant.
    let all = data.join("all.jsonl");
    let run = meshops(&["live", "export", "--out", all.to_str().unwrap(), "--variant", "concise"], &data);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let concise = std::fs::read_to_string(&all).unwrap().lines().count() as u32;
    assert!(concise >= by_variant["concise"], "{concise} concise records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_key_that_asked_may_rate_the_answer() {
    let mut t = common::start(
        |s| s.settings.gateway.api_keys_env = None,
        Overrides { api_keys: Some(vec!["key-one".into(), "key-two".into()]), ..Default::default() },
    )
    .await;
    let keyed = |q: AskRequest, key: &str| {
        let mut r = tonic::Request::new(q);
        r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        r
    };
    let answer = t.client.ask(keyed(ask("hello", ""), "key-one")).await.unwrap().into_inner();
    let rate = |key: &str| {
        let mut r = tonic::Request::new(FeedbackRequest {
            trace_id: answer.trace_id.clone(),
            score: 0.0,
            comment: String::new(),
        });
        r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        r
    };
    // The writer may still hold the record: the other key's NOT_FOUND is
    // checked after the owner's rating went through.
    let mut c = t.client.clone();
    wait::until("the owner's rating to be accepted", wait::PATIENCE, || {
        let mut c = c.clone();
        let r = rate("key-one");
        async move { c.submit_feedback(r).await.is_ok() }
    })
    .await;
    assert_eq!(c.submit_feedback(rate("key-two")).await.unwrap_err().code(), Code::NotFound);
    let unkeyed = FeedbackRequest { trace_id: answer.trace_id.clone(), score: 0.0, comment: String::new() };
    assert_eq!(c.submit_feedback(unkeyed).await.unwrap_err().code(), Code::Unauthenticated);
    t.server.shutdown().await.unwrap();
}

/// A real `meshops serve`: SIGHUP puts new weights in force without a
/// restart; a broken file leaves the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_ab_weights() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("ab.toml");
    std::fs::write(&config, "[gateway.ab]\nweights = { base = 100 }\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshops"))
        .args(["serve", "--listen", &listen, "--config", config.to_str().unwrap()])
        .current_dir(common::root())
        .env("MESHOPS__RETRIEVAL__DATA_DIR", data.path())
        .env("MESHOPS__TELEMETRY__EXPORT", "false")
        .env_remove("MESHOPS_ENV")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let target = format!("http://{listen}");
    assert!(wait::serving_within(&target, wait::PATIENCE).await, "serve never became SERVING");
    let mut c = GatewayClient::connect(target).await.unwrap();
    assert_eq!(c.ask(ask("hello", "s-1")).await.unwrap().into_inner().variant, "");
    let hup =
        |pid: u32| std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    // A broken file: the old weights stay, the server keeps serving.
    std::fs::write(&config, "[gateway.ab]\nweights = { nope = 100 }\n").unwrap();
    assert!(hup(child.id()).success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.ask(ask("hello", "s-2")).await.unwrap().into_inner().variant, "");
    // A good file: every session now goes to `concise`.
    std::fs::write(&config, "[gateway.ab]\nweights = { concise = 100 }\n").unwrap();
    assert!(hup(child.id()).success());
    wait::until("the new weights to be in force", wait::PATIENCE, || {
        let mut c = c.clone();
        async move { c.ask(ask("hello", "s-3")).await.unwrap().into_inner().variant == "concise" }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

/// `[online_eval] sample_rate = 1.0`: every answer is judged off the
/// request path by the same judges as `eval run` (the offline heuristic
/// judge here), and the scores are exported with the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_answer_sampled_every_exported_row_carries_the_online_scores() {
    let mut t = common::start(
        |s| {
            s.settings.live.capture_content = true;
            s.settings.online_eval.sample_rate = 1.0;
            s.settings.online_eval.judges = vec!["groundedness".into(), "relevance".into()];
            s.settings.online_eval.rubrics =
                [("cites".to_string(), "The answer names where its facts come from.".to_string())].into();
        },
        Overrides::default(),
    )
    .await;
    let questions = ["What is a variant?", "How do I reset my password?", "hello"];
    for q in questions {
        t.client.ask(ask(q, "")).await.unwrap();
    }
    let data = t._data.path().to_path_buf();
    // Judging is off the request path: wait until the last answer's scores
    // are stored, then stop the gateway.
    let out = data.join("scored.jsonl");
    wait::until("every answer's online scores", wait::PATIENCE, || {
        let (out, data) = (out.clone(), data.clone());
        async move {
            let run = meshops(&["live", "export", "--out", out.to_str().unwrap()], &data);
            assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
            let text = std::fs::read_to_string(&out).unwrap();
            text.lines().count() == 3 && text.lines().all(|l| l.contains("\"scores\""))
        }
    })
    .await;
    t.server.shutdown().await.unwrap();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let scores = row["scores"].as_object().unwrap();
        // Relevance and the rubric judge every answer; groundedness the
        // ones with cited passages.
        for judge in ["relevance", "cites"] {
            let score = scores[judge]["score"].as_u64().unwrap_or_else(|| panic!("{judge}: {row}"));
            assert!((1..=5).contains(&score), "{row}");
            assert!(!scores[judge]["reason"].as_str().unwrap().is_empty(), "{row}");
        }
        if !row["retrieved_doc_ids"].as_array().unwrap().is_empty() {
            assert!(scores["groundedness"]["score"].is_u64(), "{row}");
        }
    }
}

/// `meshops live compare`: per-variant judge scores, feedback, latency and
/// cost with intervals, and the gates file judged unpaired; exit 1 when a
/// gate fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_compare_reads_out_the_ab_test_and_gates_it() {
    let mut t = common::start(
        |s| {
            s.settings.gateway.ab = weights(&[("base", 50), ("concise", 50)]);
            s.settings.online_eval.sample_rate = 1.0;
            s.settings.online_eval.judges = vec!["relevance".into()];
            s.settings.sessions.enabled = false;
        },
        Overrides::default(),
    )
    .await;
    for i in 0..40 {
        let r = t.client.ask(ask("What is a variant?", &format!("c-{i}"))).await.unwrap().into_inner();
        if i % 4 == 0 {
            let fb = FeedbackRequest { trace_id: r.trace_id, score: 1.0, comment: String::new() };
            t.client.submit_feedback(fb).await.unwrap();
        }
    }
    let data = t._data.path().to_path_buf();
    let probe = data.join("probe.jsonl");
    wait::until("the online scores of all 40 answers", wait::PATIENCE, || {
        let (probe, data) = (probe.clone(), data.clone());
        async move {
            meshops(&["live", "export", "--out", probe.to_str().unwrap()], &data);
            let text = std::fs::read_to_string(&probe).unwrap_or_default();
            text.lines().count() == 40 && text.lines().all(|l| l.contains("\"scores\""))
        }
    })
    .await;
    t.server.shutdown().await.unwrap();
    let gates = data.join("gates.toml");
    std::fs::write(&gates, "[[gate]]\nmetric = \"relevance\"\nmax_drop = 4\n").unwrap();
    let ok = meshops(&["live", "compare", "--gates", gates.to_str().unwrap()], &data);
    let stdout = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(ok.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&ok.stderr));
    for needle in ["40 live records", "| base |", "| concise |", "relevance", "feedback_rate", "latency_ms"] {
        assert!(stdout.contains(needle), "`{needle}` missing:\n{stdout}");
    }
    assert!(
        stdout.contains("concise vs base") && stdout.contains("gate relevance mean max_drop=4: PASS"),
        "{stdout}"
    );
    // A gate no variant can meet fails the command.
    std::fs::write(&gates, "[[gate]]\nmetric = \"latency_ms\"\nmax_mean = 0.000001\n").unwrap();
    let failed = meshops(&["live", "compare", "--gates", gates.to_str().unwrap()], &data);
    assert_eq!(failed.status.code(), Some(1), "{}", String::from_utf8_lossy(&failed.stdout));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("gates failed: concise: latency_ms"));
}
