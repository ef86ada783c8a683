//! The `eval` flags through the real `meshops` binary on the shipped
//! offline engine: `--max-cost-usd` and `--judge-model` (a priced judge on
//! the OpenAI wire), `--map`, `--evaluators`, `--publish`, and the exit
//! code of `eval compare` (gates pass → 0, a failing gate → 1).

mod common;

use std::path::Path;
use std::process::Output;

use common::fake_openai::{FakeOpenAi, Reply, Seen, completion};
use serde_json::Value;

/// `meshops ARGS` from the project root with a data dir of its own, run
/// off the async runtime (a test's fake server keeps serving meanwhile).
async fn meshops<S: AsRef<str>>(args: &[S], data: &Path) -> Output {
    let (args, data): (Vec<String>, _) =
        (args.iter().map(|a| a.as_ref().to_string()).collect(), data.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::served::meshops(&args, &data)
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn summary(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every judge call answers a valid verdict for 100 + 20 tokens: at
/// $10/$50 per million, $0.002 a call.
fn judge_script(_: usize, _: &Seen) -> Reply {
    completion(r#"{"score": 4, "reason": "Supported by the passages."}"#, "judge-test-0001", Some((100, 20)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_model_and_max_cost_usd_choose_the_judge_and_stop_the_run() {
    let server = FakeOpenAi::start(judge_script).await;
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("judge.toml");
    std::fs::write(
        &overlay,
        format!(
            "[models.judge]\nprovider = \"openai_compatible\"\nmodel = \"judge-test\"\nbase_url = \"{}\"\n\
             max_retries = 0\ninput_price_per_mtok = 10.0\noutput_price_per_mtok = 50.0\n",
            server.base_url()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let args = [
        "--config",
        path(&overlay),
        "eval",
        "run",
        "--dataset",
        "eval/datasets/toy.jsonl",
        "--concurrency",
        "1",
        "--judge-model",
        "judge",
        "--max-cost-usd",
        "0.015",
        "--out",
        path(&out),
    ];
    let o = meshops(&args, &dir.path().join("data")).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("cut short"), "{}", text(&o));
    let s = summary(&out);
    // The judge is the profile the flag named, not `[eval] judge_model`.
    assert_eq!(s["judge"]["profile"], "judge", "{s}");
    assert_eq!(s["judge"]["model"], "judge-test", "{s}");
    assert!(!server.requests().is_empty());
    // The judge's cost reached the cap, and rows were left unrun.
    assert_eq!(s["cut_short"], true, "{s}");
    assert!(s["counts"]["not_run"].as_u64().unwrap() > 0, "{s}");
    assert!(s["judge"]["cost"]["known_usd"].as_f64().unwrap() >= 0.015, "{s}");

    // A cap that is no amount is refused before anything runs.
    let bad = dir.path().join("bad");
    let o = meshops(
        &["eval", "run", "--dataset", "eval/datasets/toy.jsonl", "--max-cost-usd=-1", "--out", path(&bad)],
        &dir.path().join("data"),
    )
    .await;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-cost-usd"), "{}", text(&o));
    assert!(!bad.join("outputs.jsonl").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_evaluators_publish_and_the_compare_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The toy dataset with its own field names.
    let renamed: Vec<String> = std::fs::read_to_string(common::root().join("eval/datasets/toy.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut row: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
            let query = row.remove("query").unwrap();
            let truth = row.remove("ground_truth").unwrap();
            row.insert("question".into(), query);
            row.insert("answer".into(), truth);
            Value::Object(row).to_string()
        })
        .collect();
    let dataset = dir.path().join("renamed.jsonl");
    std::fs::write(&dataset, renamed.join("\n")).unwrap();
    let (run, results) = (dir.path().join("run"), dir.path().join("results"));
    let run_args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = ["eval", "run", "--dataset", path(&dataset), "--out", path(&run)]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // Without --map the rows have no `query`: the run is refused.
    let args = run_args(&[]);
    let o = meshops(&args, &data).await;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("query"), "{}", text(&o));

    // With it, every row runs; the evaluators file adds its evaluators;
    // the finished run is published.
    let results_dir = path(&results).to_string();
    let mut args = run_args(&[
        "--map",
        "query=question",
        "--map",
        "ground_truth=answer",
        "--evaluators",
        "eval/evaluators.toml",
        "--publish",
    ]);
    args.push(results_dir.clone());
    let o = meshops(&args, &data).await;
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&run);
    assert_eq!(s["counts"]["ok"], 10, "{s}");
    let evaluators = s["evaluators"].to_string();
    for name in ["cites_a_source", "no_apology", "answers_in_one_paragraph", "names_its_component"] {
        assert!(evaluators.contains(name), "{name} missing from {evaluators}");
    }
    // The mapped ground truth was scored: f1 is a number on every row.
    let scores = std::fs::read_to_string(run.join("scores.jsonl")).unwrap();
    assert_eq!(scores.lines().filter(|l| l.contains("\"f1\"")).count(), 10, "{scores}");
    let index = std::fs::read_to_string(results.join("index.jsonl")).unwrap();
    assert_eq!(index.lines().count(), 1, "{index}");
    let entry: Value = serde_json::from_str(index.lines().next().unwrap()).unwrap();
    let run_id = entry["run_id"].as_str().unwrap().to_string();
    assert!(results.join(&run_id).join("scores.jsonl").is_file());

    // Publishing the same results again changes nothing.
    let o = meshops(&args, &data).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("already published"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(results.join("index.jsonl")).unwrap(), index);

    // compare: gates that pass exit 0, a gate that fails exits 1; runs
    // found by id in the results folder.
    let pass = dir.path().join("pass.toml");
    std::fs::write(&pass, "[[gate]]\nmetric = \"f1\"\nmax_drop = 0.0\n").unwrap();
    let fail = dir.path().join("fail.toml");
    std::fs::write(&fail, "[[gate]]\nmetric = \"f1\"\nmin_mean = 1.5\n").unwrap();
    let compare = |gates: &Path| {
        let args = ["eval", "compare", &run_id, &run_id, "--results", &results_dir, "--gates", path(gates)];
        args.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let o = meshops(&compare(&pass), &data).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = meshops(&compare(&fail), &data).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("f1"), "{}", text(&o));
}
