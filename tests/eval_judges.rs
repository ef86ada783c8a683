//! LLM judges, custom evaluators, column mapping and publishing, over real
//! runs of the offline mesh: the offline heuristic judge end to end, a
//! remote judge over the OpenAI wire protocol (valid verdicts, garbage,
//! out-of-range scores, cost counted toward the cap), an evaluators file
//! with every kind, and `--publish`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshops::config::{MeshSpec, ModelProfile, Provider};
use meshops::eval::compare::{self, CompareOptions};
use meshops::eval::evaluators::{ColumnMap, EvaluatorSet};
use meshops::eval::publish;
use meshops::eval::report::{ScoreRecord, Summary};
use meshops::eval::runner::{self, JudgementRecord, RunOptions};
use serde_json::Value;

use common::fake_openai::{FakeOpenAi, Reply, completion};

fn toy() -> PathBuf {
    common::root().join("eval/datasets/toy.jsonl")
}

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn scores(dir: &Path) -> Vec<ScoreRecord> {
    jsonl(&dir.join("scores.jsonl"))
}

fn summary(dir: &Path) -> Summary {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_judge_scores_every_answer_with_reasons_and_says_what_it_is() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = runner::run(common::spec(data.path()), RunOptions::new(toy(), out.path())).await.unwrap();
    let s = &r.summary;
    assert_eq!(s.judge_model.as_deref(), Some("offline-heuristic-judge"));
    let judge = s.judge.as_ref().unwrap();
    assert_eq!((judge.profile.as_str(), judge.failures), ("offline", 0));
    assert!(judge.judgements > 0);

    // Every evaluator carries kind, version, scale and threshold.
    for name in ["groundedness", "relevance", "coherence", "fluency", "similarity"] {
        let info = &s.evaluators[name];
        assert_eq!((info.kind.as_str(), info.scale, info.threshold), ("judge", (1.0, Some(5.0)), Some(3.0)));
        assert!(info.version.starts_with("1.1+"), "{name}: {}", info.version);
    }
    for name in ["f1", "exact_match", "bleu", "rougeL", "hit_rate@5", "ok", "intent_match"] {
        let info = &s.evaluators[name];
        assert!(info.threshold.is_some() && info.scale.1 == Some(1.0), "{name}: {info:?}");
    }
    assert_eq!(s.evaluators["latency_ms"].threshold, None);

    let sc = scores(out.path());
    let outs: Vec<runner::OutputRecord> = jsonl(&out.path().join("outputs.jsonl"));
    for row in &sc {
        let out_rec = outs.iter().find(|o| o.id == row.id).unwrap();
        // Every judge applies to an answered row (the toy rows have ground
        // truth; answers cite passages or the greeting's context is absent).
        for name in ["relevance", "coherence", "fluency", "similarity"] {
            let v = row.metrics[name];
            assert!((1.0..=5.0).contains(&v) && v.fract() == 0.0, "{}: {name} = {v}", row.id);
            assert!(row.reasons[name].starts_with("offline heuristic:"), "{}", row.reasons[name]);
            assert_eq!(row.passed[name], v >= 3.0);
        }
        assert_eq!(row.metrics.contains_key("groundedness"), !out_rec.contexts.is_empty(), "{}", row.id);
        // Standard metrics carry pass/fail too.
        assert_eq!(row.passed["f1"], row.metrics["f1"] >= s.evaluators["f1"].threshold.unwrap());
    }
    // A cited, extractive answer is grounded in its passages.
    let q03 = sc.iter().find(|r| r.id == "q03").unwrap();
    assert!(q03.metrics["groundedness"] >= 4.0, "{:?}", q03.reasons);
    let base = &s.variants["base"];
    let pass = base.metrics["fluency"].pass_rate.unwrap();
    let passed = sc.iter().filter(|r| r.passed["fluency"]).count();
    assert!((pass - passed as f64 / sc.len() as f64).abs() < 1e-12);

    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("offline-heuristic-judge") && md.contains("judges below threshold"), "{md}");
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("<h3>groundedness (judge)</h3>"), "per-metric distribution charts");

    // A rerun reuses every judgement: nothing is judged twice.
    let before = jsonl::<JudgementRecord>(&out.path().join("judgements.jsonl")).len();
    assert_eq!(before, judge.judgements);
    let again = runner::run(common::spec(data.path()), RunOptions::new(toy(), out.path())).await.unwrap();
    assert_eq!(again.attempted, 0);
    assert_eq!(jsonl::<JudgementRecord>(&out.path().join("judgements.jsonl")).len(), before);
    assert_eq!(scores(out.path()), sc);
}

/// Which judge a request is for, from the system prompt of
/// `prompts/eval/<judge>.prompty`.
fn criterion(body: &Value) -> &'static str {
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    for (marker, name) in [
        ("GROUNDEDNESS", "groundedness"),
        ("RELEVANCE", "relevance"),
        ("COHERENCE", "coherence"),
        ("FLUENCY", "fluency"),
        ("SIMILARITY", "similarity"),
        ("against this rubric", "rubric"),
    ] {
        if system.contains(marker) {
            return name;
        }
    }
    "unknown"
}

/// The shipped spec plus a `judge` profile at `base_url`, priced so that
/// every judge call costs 100 input + 20 output tokens at $10/$50 per
/// million: $0.002.
fn spec_with_remote_judge(data: &Path, base_url: &str) -> MeshSpec {
    let mut spec = common::spec(data);
    spec.settings.models.insert(
        "judge".into(),
        ModelProfile {
            provider: Provider::OpenaiCompatible,
            model: "judge-test".into(),
            base_url: Some(base_url.into()),
            timeout_ms: Some(5_000),
            max_retries: Some(0),
            input_price_per_mtok: Some(10.0),
            output_price_per_mtok: Some(50.0),
            ..ModelProfile::offline()
        },
    );
    spec.settings.eval.judge_model = "judge".into();
    spec
}

/// Valid verdicts for groundedness, relevance (in a code fence) and
/// similarity; garbage for fluency; an out-of-range score for coherence.
fn judge_server_script(_: usize, seen: &common::fake_openai::Seen) -> Reply {
    let text = match criterion(&seen.body) {
        "groundedness" => r#"{"score": 4, "reason": "One sentence is not in the passages."}"#,
        "relevance" => "```json\n{\"score\": 5, \"reason\": \"Answers the question.\"}\n```",
        "similarity" => r#"{"score": 2, "reason": "Different main point."}"#,
        "fluency" => "The answer reads well, I'd give it a 4.",
        "coherence" => r#"{"score": 9, "reason": "Excellent."}"#,
        _ => "?",
    };
    completion(text, "judge-test-0001", Some((100, 20)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_judge_over_the_openai_wire_garbage_and_out_of_range_are_recorded_failures() {
    let server = FakeOpenAi::start(judge_server_script).await;
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let spec = spec_with_remote_judge(data.path(), &server.base_url());
    let r = runner::run(spec, RunOptions::new(toy(), out.path())).await.unwrap();
    let s = &r.summary;
    assert_eq!(s.judge_model.as_deref(), Some("judge-test"));
    assert_eq!(s.counts.ok, 10);

    // The request went out as the judge prompt asks: JSON mode, temperature
    // 0, the answer in the user message.
    let seen = server.requests();
    assert!(!seen.is_empty());
    for req in &seen {
        assert_eq!(req.path, "/v1/chat/completions");
        assert_eq!(req.body["model"], "judge-test");
        assert_eq!(req.body["response_format"]["type"], "json_object");
        assert_eq!(req.body["temperature"], 0.0);
        assert!(req.body["messages"][1]["content"].as_str().unwrap().contains("Response:"));
    }

    let sc = scores(out.path());
    let mut with_context = 0;
    for row in &sc {
        assert_eq!(row.metrics["relevance"], 5.0);
        assert_eq!(row.reasons["relevance"], "Answers the question.");
        assert_eq!(row.metrics["similarity"], 2.0);
        assert!(!row.passed["similarity"]);
        if let Some(g) = row.metrics.get("groundedness") {
            assert_eq!(*g, 4.0);
            with_context += 1;
        }
        // Garbage and out-of-range scores are failures with a clear
        // message: no value, not dropped, not 0.
        assert!(!row.metrics.contains_key("fluency") && !row.metrics.contains_key("coherence"));
        assert!(row.failures["fluency"].contains("not a JSON object"), "{}", row.failures["fluency"]);
        assert!(row.failures["fluency"].contains("I'd give it a 4"), "the message quotes the answer");
        assert!(row.failures["coherence"].contains("9 is outside 1–5"), "{}", row.failures["coherence"]);
    }
    let base = &s.variants["base"];
    assert_eq!((base.metrics["fluency"].n, base.metrics["fluency"].failed), (0, 10));
    assert_eq!(base.metrics["fluency"].pass_rate, Some(0.0));
    assert_eq!((base.metrics["relevance"].n, base.metrics["relevance"].failed), (10, 0));
    let judge = s.judge.as_ref().unwrap();
    let calls = 10 * 4 + with_context;
    assert_eq!((judge.judgements, judge.failures), (calls, 20));
    assert_eq!(seen.len(), calls);
    assert!((judge.cost.known_usd - calls as f64 * 0.002).abs() < 1e-9, "{}", judge.cost.known_usd);
    assert_eq!((judge.input_tokens, judge.output_tokens), (100 * calls as u64, 20 * calls as u64));
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("fluency: failed (judge answer is not a JSON object"), "{md}");
    assert!(md.contains("similarity 2: Different main point."), "{md}");

    // A rerun asks the judge again only for the failed judgements.
    let again = runner::run(
        spec_with_remote_judge(data.path(), &server.base_url()),
        RunOptions::new(toy(), out.path()),
    )
    .await
    .unwrap();
    assert_eq!(again.attempted, 0);
    assert_eq!(server.requests().len(), calls + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_cost_counts_toward_the_cost_cap() {
    let server = FakeOpenAi::start(judge_server_script).await;
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // The offline mesh costs nothing: only the judge can reach the cap.
    let mut o = RunOptions::new(toy(), out.path());
    o.concurrency = 1;
    o.max_cost_usd = Some(0.015);
    let r = runner::run(spec_with_remote_judge(data.path(), &server.base_url()), o).await.unwrap();
    let s = &r.summary;
    assert!(s.cut_short && s.counts.not_run > 0, "{:?}", s.counts);
    assert_eq!(s.cost.known_usd, 0.0, "the app itself is free");
    let judge = s.judge.as_ref().unwrap();
    assert!(judge.cost.known_usd >= 0.015, "{}", judge.cost.known_usd);
    // One row at a time: stops after the row that crossed the cap (at most
    // five judge calls of $0.002 each beyond it).
    assert!(judge.cost.known_usd < 0.015 + 0.0101, "{}", judge.cost.known_usd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluators_file_with_every_kind_and_mapped_columns() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The toy dataset with other field names.
    let ds = dir.path().join("renamed.jsonl");
    let mut text = String::new();
    for line in std::fs::read_to_string(toy()).unwrap().lines() {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        let q = v.remove("query").unwrap();
        v.insert("question".into(), q);
        let gt = v.remove("ground_truth").unwrap();
        v.insert("answer".into(), gt);
        text.push_str(&serde_json::to_string(&v).unwrap());
        text.push('\n');
    }
    std::fs::write(&ds, text).unwrap();
    let ev_path = dir.path().join("evaluators.toml");
    std::fs::write(
        &ev_path,
        r#"
[columns]
query = "question"

[thresholds]
f1 = 0.2

[[evaluator]]
name = "cites_a_source"
kind = "contains"
version = "2"
any = ["[1]", "[2]", "[3]"]

[[evaluator]]
name = "no_apology"
kind = "regex"
pattern = "(?i)\\b(sorry|apologi[sz]e)\\b"
must_match = false

[[evaluator]]
name = "json_answer"
kind = "json_schema"
schema = { type = "object", required = ["answer"] }

[[evaluator]]
name = "names_the_gateway"
kind = "llm_rubric"
rubric = "The answer names the gateway and the port it listens on."
threshold = 2
"#,
    )
    .unwrap();
    let mut o = RunOptions::new(&ds, dir.path().join("out"));
    o.evaluators = EvaluatorSet::load(&ev_path).unwrap();
    o.columns = ColumnMap::from_args(&["ground_truth=answer".into()]).unwrap();
    let r = runner::run(common::spec(data.path()), o).await.unwrap();
    let s = &r.summary;
    assert_eq!(s.counts.ok, 10);
    assert_eq!(
        s.columns,
        BTreeMap::from([("ground_truth".into(), "answer".into()), ("query".into(), "question".into())])
    );
    assert_eq!(s.evaluators["cites_a_source"].version, "2");
    assert_eq!(s.evaluators["json_answer"].kind, "json_schema");
    assert!(s.evaluators["names_the_gateway"].version.starts_with("1+judge 1.1+"));
    assert_eq!(s.evaluators["f1"].threshold, Some(0.2), "the file's threshold wins");
    let sc = scores(&dir.path().join("out"));
    let outs: Vec<runner::OutputRecord> = jsonl(&dir.path().join("out/outputs.jsonl"));
    for row in &sc {
        let rec = outs.iter().find(|o| o.id == row.id).unwrap();
        let answer = rec.answer.clone().unwrap();
        assert_eq!(
            row.metrics["cites_a_source"] == 1.0,
            answer.contains("[1]") || answer.contains("[2]") || answer.contains("[3]")
        );
        assert_eq!(row.metrics["no_apology"], 1.0, "{answer}");
        assert_eq!(row.metrics["json_answer"], 0.0, "prose is not JSON");
        assert!(row.reasons["json_answer"].contains("not JSON"));
        let rubric = row.metrics["names_the_gateway"];
        assert!((1.0..=5.0).contains(&rubric));
        assert!(row.reasons["names_the_gateway"].contains("rubric content words"));
        assert_eq!(row.passed["names_the_gateway"], rubric >= 2.0);
        // Ground truth came through the map: f1 is scored.
        assert!(row.metrics.contains_key("f1") && row.metrics.contains_key("similarity"));
    }

    // A mapped field that is missing names both names.
    let mut o = RunOptions::new(&ds, dir.path().join("out2"));
    o.columns = ColumnMap::from_args(&["query=prompt".into()]).unwrap();
    let err = runner::run(common::spec(data.path()), o).await.unwrap_err().to_string();
    assert!(err.contains("renamed.jsonl:1") && err.contains("`prompt` (mapped to query)"), "{err}");
}

#[test]
fn the_shipped_evaluators_file_loads() {
    let set = EvaluatorSet::load(&common::root().join("eval/evaluators.toml")).unwrap();
    let kinds: Vec<String> = set.evaluators.iter().map(|e| e.info().kind).collect();
    assert_eq!(kinds, ["contains", "regex", "regex", "llm_rubric"]);
    assert_eq!(set.thresholds.get("groundedness"), Some(&4.0));
    // The commented json_schema example is valid too.
    let text = std::fs::read_to_string(common::root().join("eval/evaluators.toml")).unwrap();
    let example: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# For a service whose answers are JSON"))
        .skip(1)
        .map(|l| l.trim_start_matches("# "))
        .collect::<Vec<_>>()
        .join("\n");
    let set = EvaluatorSet::parse(Path::new("example.toml"), &example).unwrap();
    let json = set.get("answer_format").unwrap();
    assert_eq!(json.score("{\"answer\": \"x\", \"sources\": [\"a\"]}").map(|s| s.0), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_copies_a_run_once_and_compare_finds_it_by_id() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let mut o = RunOptions::new(toy(), out.path());
    o.variants = vec!["base".into(), "no_critic".into()];
    let r = runner::run(common::spec(data.path()), o).await.unwrap();
    let p = publish::publish(out.path(), results.path()).unwrap();
    assert!(p.added);
    assert_eq!(p.run_id, r.summary.run_id);
    assert!(p.run_id.starts_with("toy-"), "{}", p.run_id);
    for f in
        ["summary.json", "scores.jsonl", "outputs.jsonl", "judgements.jsonl", "report.md", "comparison.md"]
    {
        assert!(p.dir.join(f).is_file(), "{f} not published");
    }
    let index = publish::read_index(results.path()).unwrap();
    assert_eq!(index.len(), 2, "one line per variant");
    let base = index.iter().find(|e| e.variant == "base").unwrap();
    assert_eq!(
        (base.dataset_hash.as_str(), base.config_hash.as_str()),
        (r.summary.dataset_hash.as_str(), r.summary.config_hash.as_str())
    );
    assert_eq!(base.judge_model.as_deref(), Some("offline-heuristic-judge"));
    assert_eq!(base.headline["f1"], r.summary.variants["base"].metrics["f1"].mean);
    assert!(base.headline.contains_key("groundedness") && base.headline.contains_key("latency_p95_ms"));

    // Again, after a resume that changed nothing: same id, nothing added.
    let first = lines(&out.path().join("scores.jsonl"));
    let mut o = RunOptions::new(toy(), out.path());
    o.variants = vec!["base".into(), "no_critic".into()];
    runner::run(common::spec(data.path()), o).await.unwrap();
    assert_eq!(lines(&out.path().join("scores.jsonl")), first);
    assert_eq!(summary(out.path()).run_id, p.run_id);
    let again = publish::publish(out.path(), results.path()).unwrap();
    assert_eq!((again.run_id.as_str(), again.added), (p.run_id.as_str(), false));
    assert_eq!(publish::read_index(results.path()).unwrap().len(), 2);

    // compare takes run ids from the index.
    let args = CompareOptions {
        run_a: PathBuf::from(&p.run_id),
        run_b: PathBuf::from(&p.run_id),
        gates: Some(common::root().join("eval/gates.toml")),
        out: None,
        variant_a: Some("base".into()),
        variant_b: Some("no_critic".into()),
        results: Some(results.path().to_path_buf()),
    };
    compare::run(&args).and_then(|c| c.gate_result()).unwrap();
    let missing = CompareOptions { run_a: PathBuf::from("nope-123"), ..args };
    let err = compare::run(&missing).and_then(|c| c.gate_result()).unwrap_err().to_string();
    assert!(err.contains("nope-123") && err.contains("index.jsonl"), "{err}");
}
