//! `meshops eval compare` on real runs of the offline mesh: a known
//! difference is detected, a run compared with itself has intervals
//! containing 0 and passes the shipped gates, failing gates are named, a
//! bad gates file names the file and the field, and runs that ran
//! differently (concurrency, machine, build) get a warning above the
//! figures.

mod common;

use std::path::{Path, PathBuf};

use meshops::eval::EvalError;
use meshops::eval::compare::{self, CompareOptions, compare};
use meshops::eval::gates;
use meshops::eval::runner::{self, RunOptions};

async fn run(data: &Path, out: &Path, variant: Option<&str>) {
    let mut o = RunOptions::new(common::root().join("eval/datasets/sample.jsonl"), out);
    o.variants = variant.map(|v| vec![v.to_string()]).unwrap_or_default();
    runner::run(common::spec(data), o).await.unwrap();
}

fn args(a: &Path, b: &Path, gates: Option<PathBuf>, out: Option<PathBuf>) -> CompareOptions {
    CompareOptions {
        run_a: a.into(),
        run_b: b.into(),
        gates,
        out,
        variant_a: None,
        variant_b: None,
        results: None,
    }
}

/// What `meshops eval compare` does: compare, then fail on a failed gate.
fn compare_gated(opts: &CompareOptions) -> Result<(), EvalError> {
    compare::run(opts)?.gate_result()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_detects_a_known_difference_and_a_run_matches_itself() {
    let data = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let nc = tempfile::tempdir().unwrap();
    run(data.path(), base.path(), None).await;
    run(data.path(), nc.path(), Some("no_critic")).await;

    // Without the critic, question rows make one model call fewer: fewer
    // input tokens on every question row, never more.
    let c = compare(base.path(), nc.path(), &[], None, None).unwrap();
    let rows = common::sample_rows().len();
    assert_eq!((c.paired, c.only_a, c.only_b), (rows, 0, 0));
    let t = c.metric("input_tokens").unwrap();
    assert_eq!(t.n, rows);
    assert!(t.diff < 0.0 && t.ci_high < 0.0, "{t:?}");
    assert!(t.ci_low <= t.diff && t.diff <= t.ci_high);
    assert!((t.diff - (t.mean_b - t.mean_a)).abs() < 1e-9);
    assert!(c.markdown.contains("| input_tokens |") && c.markdown.contains("**≠**"), "{}", c.markdown);
    // Reproducible: the bootstrap is seeded.
    let again = compare(base.path(), nc.path(), &[], None, None).unwrap();
    assert_eq!(again.metrics, c.metrics);

    // A gate on that difference fails and is named in the error.
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("gates.toml");
    std::fs::write(&g, "[[gate]]\nmetric = \"input_tokens\"\nmax_drop = 10\n").unwrap();
    let err = compare_gated(&args(base.path(), nc.path(), Some(g.clone()), None)).unwrap_err();
    match err {
        EvalError::GateFailed(msg) => {
            assert!(msg.contains("input_tokens") && msg.contains("max_drop"), "{msg}")
        }
        other => panic!("expected GateFailed, got {other}"),
    }
    // The other direction is a rise, which that gate allows.
    compare_gated(&args(nc.path(), base.path(), Some(g), None)).unwrap();

    // A run with itself: every interval contains 0 and the shipped gates
    // pass; the Markdown also lands in --out.
    let md = dir.path().join("cmp.md");
    let shipped = common::root().join("eval/gates.toml");
    compare_gated(&args(base.path(), base.path(), Some(shipped.clone()), Some(md.clone()))).unwrap();
    assert!(std::fs::read_to_string(&md).unwrap().contains("All gates pass"));
    let same = compare(base.path(), base.path(), &gates::load(&shipped).unwrap(), None, None).unwrap();
    assert!(!same.metrics.is_empty());
    let p95 = same.metric("latency_ms p95").unwrap();
    assert_eq!((p95.diff, p95.ci_low, p95.ci_high), (0.0, 0.0, 0.0));
    assert!(same.metric("groundedness").is_some(), "judge scores are compared too");
    for m in &same.metrics {
        assert!(m.ci_low <= 0.0 && 0.0 <= m.ci_high, "{m:?}");
    }
    assert!(same.failed_gates().is_empty());
    assert!(same.gates.iter().any(|g| g.passed == Some(true)), "some gate must actually be judged");
}

#[tokio::test]
async fn bad_gate_files_and_missing_runs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("gates.toml");
    std::fs::write(&g, "[[gate]]\nmetric = \"f1\"\nmax_drop = 0.02\nconfidnce = 0.9\n").unwrap();
    let err = gates::load(&g).unwrap_err().to_string();
    assert!(err.contains("gates.toml") && err.contains("confidnce"), "{err}");
    std::fs::write(&g, "[[gate]]\nmetric = \"f1\"\nstat = \"p42\"\nmax_drop = 0.02\n").unwrap();
    assert!(gates::load(&g).unwrap_err().to_string().contains("p42"));

    let missing = dir.path().join("nope");
    let err = compare(&missing, &missing, &[], None, None).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    std::fs::create_dir(&missing).unwrap();
    std::fs::write(missing.join("scores.jsonl"), "{\"id\":1}\n").unwrap();
    let err = compare(&missing, &missing, &[], None, None).unwrap_err().to_string();
    assert!(err.contains("scores.jsonl:1"), "{err}");
}

#[test]
fn the_committed_baseline_parses_and_covers_the_toy_dataset() {
    let base = common::root().join("eval/baselines/toy");
    let scores = compare::read_scores(&base).unwrap();
    let toy = std::fs::read_to_string(common::root().join("eval/datasets/toy.jsonl")).unwrap();
    assert_eq!(scores.len(), toy.lines().filter(|l| !l.trim().is_empty()).count());
    assert!(scores.iter().all(|s| s.ok && s.metrics.contains_key("latency_ms")));
    let summary: meshops::eval::report::Summary =
        serde_json::from_str(&std::fs::read_to_string(base.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary.counts.total, scores.len());
}

/// Runs the toy dataset with `concurrency` rows in flight into `out`.
async fn run_toy(data: &Path, out: &Path, concurrency: usize) {
    let mut o = RunOptions::new(common::root().join("eval/datasets/toy.jsonl"), out);
    o.concurrency = concurrency;
    runner::run(common::spec(data), o).await.unwrap();
}

/// Edits a run's `summary.json` as JSON.
fn edit_summary(run: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let file = run.join("summary.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_warns_above_the_figures_when_the_runs_ran_differently() {
    let data = tempfile::tempdir().unwrap();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    run_toy(data.path(), a.path(), 8).await;
    run_toy(data.path(), b.path(), 1).await;

    // `eval run` records how it ran.
    let summary: meshops::eval::report::Summary =
        serde_json::from_str(&std::fs::read_to_string(a.path().join("summary.json")).unwrap()).unwrap();
    let setup = summary.setup.expect("a new run records its setup");
    assert_eq!((setup.concurrency, setup.repeats), (8, 1));
    assert!(setup.cpus >= 1 && !setup.platform.is_empty() && !setup.build.is_empty(), "{setup:?}");

    // Same settings: no warning.
    let same = compare(a.path(), a.path(), &[], None, None).unwrap();
    assert!(same.warnings.is_empty(), "{:?}", same.warnings);
    assert!(!same.markdown.contains("Warning"), "{}", same.markdown);

    // Another concurrency: named, with both values, above the table and
    // so above the latency rows; through the binary as a user runs it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshops"))
        .args(["eval", "compare"])
        .args([a.path(), b.path()])
        .current_dir(common::root())
        .env_remove("MESHOPS_ENV")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let warning = text.find("Warning: the runs differ").unwrap_or_else(|| panic!("no warning:\n{text}"));
    let latency = text.find("| latency_ms p50").unwrap_or_else(|| panic!("no latency row:\n{text}"));
    let table = text.find("| metric |").unwrap();
    assert!(warning < table && table < latency, "{text}");
    assert!(text.contains("concurrency: A 8, B 1"), "{text}");

    // Another machine and build, an older run without a record, and a
    // scores file with no summary beside it.
    edit_summary(b.path(), |v| {
        v["setup"]["concurrency"] = 8.into();
        v["setup"]["host"] = "ci-runner-7".into();
        v["setup"]["build"] = "release-test".into();
    });
    let c = compare(a.path(), b.path(), &[], None, None).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.starts_with("host:") && w.ends_with("B ci-runner-7")),
        "{:?}",
        c.warnings
    );
    assert!(c.warnings.iter().any(|w| w.starts_with("build:")), "{:?}", c.warnings);
    assert!(!c.warnings.iter().any(|w| w.starts_with("concurrency")), "{:?}", c.warnings);
    edit_summary(b.path(), |v| {
        v.as_object_mut().unwrap().remove("setup");
    });
    let c = compare(a.path(), b.path(), &[], None, None).unwrap();
    assert!(c.warnings.iter().any(|w| w.starts_with("B does not record")), "{:?}", c.warnings);
    let lone = tempfile::tempdir().unwrap();
    let scores = lone.path().join("scores.jsonl");
    std::fs::copy(a.path().join("scores.jsonl"), &scores).unwrap();
    let c = compare(a.path(), &scores, &[], None, None).unwrap();
    assert!(c.warnings.iter().any(|w| w.starts_with("B's settings are unknown")), "{:?}", c.warnings);
    assert!(c.markdown.contains("B's settings are unknown"), "{}", c.markdown);
}
