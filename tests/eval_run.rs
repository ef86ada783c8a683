//! `meshops eval run` over the real mesh with the offline engine, in
//! temporary directories: files and counts, resuming, injected failures,
//! the cost cap, and driving a real gateway over gRPC.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use meshops::config::MeshSpec;
use meshops::eval::report::ScoreRecord;
use meshops::eval::runner::{self, OutputRecord, RunOptions};
use meshops::gateway::Overrides;
use meshops::llm::offline::OfflineEngine;
use meshops::llm::{LlmClient, LlmError, LlmRequest, LlmResponse, TokenSink};

fn dataset(name: &str) -> PathBuf {
    common::root().join("eval/datasets").join(name)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn outputs(dir: &Path) -> Vec<OutputRecord> {
    lines(&dir.join("outputs.jsonl")).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn scores(dir: &Path) -> Vec<ScoreRecord> {
    lines(&dir.join("scores.jsonl")).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn opts(ds: &str, out: &Path) -> RunOptions {
    let mut o = RunOptions::new(dataset(ds), out);
    o.concurrency = 8;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_run_writes_every_file_and_a_rerun_resumes_without_rescoring() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let rows = common::sample_rows();

    let r = runner::run(common::spec(data.path()), opts("sample.jsonl", out.path())).await.unwrap();
    let s = &r.summary;
    assert_eq!(r.attempted, rows.len());
    assert_eq!(s.counts.total, rows.len());
    assert_eq!(s.counts.ok + s.counts.failed + s.counts.not_run, s.counts.total);
    assert_eq!((s.counts.failed, s.counts.not_run, s.counts.skipped), (0, 0, 0));
    assert!(!s.cut_short);
    for f in ["outputs.jsonl", "scores.jsonl", "summary.json", "report.md", "report.html"] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
    assert!(!out.path().join("comparison.md").exists(), "one variant needs no comparison");
    let outs = outputs(out.path());
    assert_eq!(outs.len(), rows.len());
    // Answerable questions cite documents; the ids are kept in order.
    let q02 = outs.iter().find(|o| o.id == "q02").unwrap();
    assert!(!q02.retrieved_doc_ids.is_empty() && q02.answer.as_deref().is_some_and(|a| !a.is_empty()));
    assert!(q02.steps.iter().any(|st| st.agent == "critic") && q02.verdict.is_some());
    // The report shows every agent, its kind, prompt, model and flows.
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        report.contains("| critic | critic | prompts/critic.prompty | offline-extractive (offline) | question |")
            && report.contains("| summarizer | summarizer | prompts/summarizer.prompty | offline-extractive (offline) | greeting, question, no_critic:question |")
            && report.contains("| router | router |"),
        "{report}"
    );
    assert_eq!(s.agents.len(), 4, "{:?}", s.agents);

    let sc = scores(out.path());
    assert_eq!(sc.len(), rows.len());
    let with_intent = rows.iter().filter(|r| r.intent.is_some()).count();
    let base = &s.variants["base"];
    assert_eq!(base.metrics["intent_match"].n, with_intent);
    assert_eq!(base.metrics["latency_ms"].n, rows.len());
    assert_eq!(base.metrics["ok"].mean, 1.0);
    // The offline engine's tokens add up to the summary's totals.
    let tokens: u64 = outs.iter().map(|o| o.usage.as_ref().unwrap().input_tokens).sum();
    assert_eq!(base.input_tokens, tokens);
    assert_eq!(base.cost.rows_with_unknown_cost, 0);
    for agent in ["router", "retriever", "summarizer", "critic"] {
        assert!(base.agent_latency_ms.contains_key(agent), "no latency for {agent}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["counts"]["total"], rows.len());
    assert_eq!(summary["config_hash"].as_str().unwrap().len(), 16);
    assert!(summary["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(std::fs::read_to_string(out.path().join("report.html")).unwrap().contains("<svg"));
    assert!(std::fs::read_to_string(out.path().join("report.md")).unwrap().contains("Worst rows"));

    // `eval score` takes the run's own outputs: the answers, joined by id
    // with the ground truth of the dataset its summary names, score as the
    // run scored them.
    let scored = out.path().join("rescored.jsonl");
    let opts_score = meshops::eval::score::ScoreOptions {
        input: out.path().join("outputs.jsonl"),
        metrics: vec!["f1".into(), "hit_rate".into()],
        out: scored.clone(),
        ..Default::default()
    };
    let rescored = meshops::eval::score::run(opts_score).await.unwrap();
    let f1 = &rescored.metrics[0];
    let with_truth = rows.iter().filter(|r| !r.ground_truth.is_empty()).count();
    assert_eq!((f1.name.as_str(), f1.count), ("f1", with_truth), "{rescored}");
    let run_f1 = base.metrics["f1"].mean;
    assert!((f1.mean.unwrap() - run_f1).abs() < 1e-9, "eval score f1 {:?} vs the run's {run_f1}", f1.mean);
    assert!(rescored.metrics[1].count > 0, "{rescored}");
    // Without the summary beside it and no --dataset, nothing can be
    // scored: an error, not a table of n/a.
    let lone = tempfile::tempdir().unwrap();
    std::fs::copy(out.path().join("outputs.jsonl"), lone.path().join("outputs.jsonl")).unwrap();
    let err = meshops::eval::score::run(meshops::eval::score::ScoreOptions {
        input: lone.path().join("outputs.jsonl"),
        metrics: vec!["f1".into()],
        out: lone.path().join("s.jsonl"),
        ..Default::default()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("--dataset"), "{err}");

    let again = runner::run(common::spec(data.path()), opts("sample.jsonl", out.path())).await.unwrap();
    assert_eq!(again.attempted, 0);
    assert_eq!(again.summary.counts.skipped, rows.len());
    assert_eq!(again.summary.counts.ok, rows.len());
    assert_eq!(outputs(out.path()).len(), rows.len(), "a resumed run appends nothing for done rows");
    let keys: BTreeSet<(String, u32, String)> =
        scores(out.path()).into_iter().map(|s| (s.id, s.repeat, s.variant)).collect();
    assert_eq!(keys.len(), rows.len(), "no row scored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_are_counted_and_a_rerun_retries_only_them() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut spec = common::spec(data.path());
    spec.settings.models.get_mut("offline").unwrap().failure_rate = 0.5;
    let r = runner::run(spec, opts("sample.jsonl", out.path())).await.unwrap();
    let s = &r.summary;
    assert!(s.counts.failed > 0, "failure_rate 0.5 over 68 rows must fail some");
    assert_eq!(s.counts.ok + s.counts.failed, s.counts.total);
    let sc = scores(out.path());
    let failed: Vec<&ScoreRecord> = sc.iter().filter(|x| !x.ok).collect();
    assert_eq!(failed.len(), s.counts.failed);
    assert!(failed.iter().all(|f| f.error.as_deref().is_some_and(|e| e.contains("offline"))), "{failed:?}");
    // A failed row has no answer to judge: the judges give it their
    // scale's minimum (no call), so it stays in their denominators too.
    for f in &failed {
        assert_eq!(f.metrics["relevance"], 1.0);
        assert!(f.reasons["relevance"].contains("the row failed"), "{:?}", f.reasons);
        assert!(!f.passed["relevance"]);
    }
    assert_eq!(
        s.variants["base"].metrics["relevance"].n + s.variants["base"].metrics["relevance"].failed,
        s.counts.total
    );
    // Failed rows stay in the denominator of the success rate.
    let ok = &s.variants["base"].metrics["ok"];
    assert_eq!(ok.n, s.counts.total);
    assert!((ok.mean - s.counts.ok as f64 / s.counts.total as f64).abs() < 1e-12);
    assert_eq!(s.variants["base"].cost.rows_with_unknown_cost, s.counts.failed);

    // Fault injection is not part of the config hash: without it the rerun
    // resumes the same keys and retries exactly the failed ones.
    let again = runner::run(common::spec(data.path()), opts("sample.jsonl", out.path())).await.unwrap();
    assert_eq!(again.attempted, s.counts.failed);
    assert_eq!(again.summary.counts.skipped, s.counts.ok);
    assert_eq!(again.summary.counts.failed, 0);
    assert_eq!(again.summary.counts.ok, again.summary.counts.total);
    assert_eq!(outputs(out.path()).len(), s.counts.total + s.counts.failed, "outputs.jsonl only appends");
    assert_eq!(scores(out.path()).len(), s.counts.total);
}

/// The offline engine with a fake price: every call costs `usd`. The
/// offline engine itself always costs 0, so this is how a test gives a run
/// a cost to cap.
struct Priced {
    inner: OfflineEngine,
    usd: Option<f64>,
}

impl LlmClient for Priced {
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let mut r = self.inner.complete(request, tokens).await?;
            r.cost_usd = self.usd;
            Ok(r)
        })
    }
}

fn priced(spec: &MeshSpec, usd: Option<f64>) -> HashMap<String, meshops::llm::SharedLlm> {
    let p = &spec.settings.models["offline"];
    let engine = OfflineEngine::new(p.model.clone(), p.latency_ms, p.failure_rate);
    HashMap::from([(
        "offline".to_string(),
        Arc::new(Priced { inner: engine, usd }) as meshops::llm::SharedLlm,
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_cap_stops_scheduling_and_a_rerun_finishes_the_rest() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let spec = common::spec(data.path());
    let mut o = opts("sample.jsonl", out.path());
    o.concurrency = 1;
    o.max_cost_usd = Some(0.01);
    o.model_overrides = priced(&spec, Some(0.001));
    let r = runner::run(spec, o).await.unwrap();
    let s = &r.summary;
    assert!(s.cut_short);
    assert!(s.counts.not_run > 0 && s.counts.ok < s.counts.total, "{:?}", s.counts);
    assert_eq!(s.counts.ok + s.counts.failed + s.counts.not_run, s.counts.total);
    assert!(s.cost.known_usd >= 0.01, "stops only once the cap is reached: {}", s.cost.known_usd);
    // One row at a time: at most the row that crossed the cap is beyond it
    // (a question row makes at most a handful of model calls).
    assert!(s.cost.known_usd < 0.01 + 0.01, "{}", s.cost.known_usd);
    assert_eq!(scores(out.path()).len(), s.counts.ok + s.counts.failed);
    assert!(std::fs::read_to_string(out.path().join("report.md")).unwrap().contains("Cut short"));

    // Without a cap the same directory finishes the remaining rows; cost
    // unknown is reported as such, not as 0.
    let spec = common::spec(data.path());
    let mut o = opts("sample.jsonl", out.path());
    o.model_overrides = priced(&spec, None);
    let again = runner::run(spec, o).await.unwrap();
    assert_eq!(again.attempted, s.counts.not_run);
    assert!(!again.summary.cut_short);
    assert_eq!(again.summary.counts.ok, again.summary.counts.total);
    assert_eq!(again.summary.cost.rows_with_unknown_cost, s.counts.not_run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_and_repeats_run_side_by_side_with_a_comparison() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts("toy.jsonl", out.path());
    o.variants = vec!["base".into(), "no_critic".into()];
    o.repeats = 2;
    let r = runner::run(common::spec(data.path()), o).await.unwrap();
    assert_eq!(r.summary.counts.total, 10 * 2 * 2);
    assert_eq!(r.summary.variants.len(), 2);
    let nc = outputs(out.path()).into_iter().filter(|o| o.variant == "no_critic").collect::<Vec<_>>();
    assert_eq!(nc.len(), 20);
    assert!(nc.iter().all(|o| o.steps.iter().all(|s| s.agent != "critic")));
    let cmp = std::fs::read_to_string(out.path().join("comparison.md")).unwrap();
    assert!(cmp.contains("no_critic") && cmp.contains("input_tokens"), "{cmp}");

    let mut bad = opts("toy.jsonl", out.path());
    bad.variants = vec!["nope".into()];
    let err = runner::run(common::spec(data.path()), bad).await.unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("no_critic"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_gateway_is_driven_over_grpc() {
    let t = common::start(|_| {}, Overrides::default()).await;
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let addr = t.server.addr;
    let mut o = opts("toy.jsonl", out.path());
    o.target = Some(format!("http://{addr}"));
    o.variants = vec!["no_critic".into()];
    let r = runner::run(common::spec(data.path()), o).await.unwrap();
    assert_eq!((r.summary.counts.ok, r.summary.counts.total), (10, 10));
    let outs = outputs(out.path());
    assert!(outs.iter().all(|o| o.variant == "no_critic" && o.ok()));
    assert!(
        outs.iter()
            .filter(|o| o.intent.as_deref() == Some("question"))
            .all(|o| !o.retrieved_doc_ids.is_empty())
    );
    assert!(
        outs.iter().all(|o| o.steps.iter().all(|s| s.agent != "critic")),
        "the variant reached the gateway"
    );
    t.server.shutdown().await.unwrap();

    // A gateway that is gone: every row is recorded with its gRPC error.
    let out2 = tempfile::tempdir().unwrap();
    let mut o = opts("toy.jsonl", out2.path());
    o.target = Some(format!("http://{addr}"));
    match runner::run(common::spec(data.path()), o).await {
        Err(e) => assert!(e.to_string().contains("cannot connect"), "{e}"),
        Ok(r) => {
            assert_eq!(r.summary.counts.failed, 10);
            assert!(
                outputs(out2.path()).iter().all(|o| o.error.as_deref().is_some_and(|e| e.contains("gRPC")))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datasets_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("bad.jsonl");
    std::fs::write(&ds, "{\"id\": \"a\", \"query\": \"q\"}\nnot json\n").unwrap();
    let err = runner::run(common::spec(dir.path()), RunOptions::new(&ds, dir.path().join("out")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.jsonl:2"), "{err}");
    std::fs::write(&ds, "{\"id\": \"a\", \"query\": \"q\"}\n{\"id\": \"a\", \"query\": \"r\"}\n").unwrap();
    let err = runner::run(common::spec(dir.path()), RunOptions::new(&ds, dir.path().join("out")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate row id"), "{err}");

    let mut o = RunOptions::new(dataset("toy.jsonl"), dir.path().join("out"));
    o.metrics = vec!["latency_ms".into(), "f2".into()];
    let err = runner::run(common::spec(dir.path()), o).await.unwrap_err().to_string();
    assert!(err.contains("f2"), "a misspelt metric names itself: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_row_runs_again_under_its_old_id() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds.jsonl");
    let out = dir.path().join("out");
    std::fs::write(
        &ds,
        "{\"id\": \"a\", \"query\": \"hello\"}\n{\"id\": \"b\", \"query\": \"What is meshops?\"}\n",
    )
    .unwrap();
    let r = runner::run(common::spec(data.path()), RunOptions::new(&ds, &out)).await.unwrap();
    assert_eq!(r.attempted, 2);
    std::fs::write(
        &ds,
        "{\"id\": \"a\", \"query\": \"hi there\"}\n{\"id\": \"b\", \"query\": \"What is meshops?\"}\n",
    )
    .unwrap();
    let r = runner::run(common::spec(data.path()), RunOptions::new(&ds, &out)).await.unwrap();
    assert_eq!((r.attempted, r.summary.counts.skipped), (1, 1));
    let a = outputs(&out).into_iter().rfind(|o| o.id == "a").unwrap();
    assert_eq!(a.query, "hi there");
}
