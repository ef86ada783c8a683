//! The HTML pages, loaded in a real headless browser (Chromium from
//! Debian): `report.html` of an evaluation run shows the headline metrics
//! as a table of variants, latency and cost, and every row to open (query,
//! answer, ground truth, citations, each evaluator's score and reason);
//! `eval compare --html` draws the differences' intervals as a forest plot.
//! The browser's own DOM is checked, not the file's text.

mod common;

use std::path::Path;
use std::process::Command;

use common::served::meshops;

/// The DOM Chromium built from `page` (`--dump-dom`).
fn dom(chromium: &Path, page: &Path, profile: &Path) -> String {
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_report_and_the_comparison_page_render_in_a_browser() {
    let Some(chromium) = common::require::require_tool("chromium", "report pages in a real browser") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let args =
        ["eval", "run", "--dataset", "eval/datasets/toy.jsonl", "--variant", "base", "--variant", "concise"];
    let out = meshops(&[&args[..], &["--out", run.to_str().unwrap()]].concat(), dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = std::fs::read_to_string(run.join("scores.jsonl")).unwrap().lines().count();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let evaluators = summary["evaluators"].as_object().unwrap().len();

    let profile = dir.path().join("chromium-profile");
    let report = dom(&chromium, &run.join("report.html"), &profile);
    // The headline table first: one row per evaluator, a column per variant.
    let metrics_at = report.find("id=\"metrics\"").expect("the headline metrics table");
    assert!(metrics_at < report.find("id=\"rows\"").unwrap(), "headline metrics come before the rows");
    let table = &report[metrics_at..report[metrics_at..].find("</table>").unwrap() + metrics_at];
    assert_eq!(table.matches("<tr>").count(), evaluators + 1, "{table}");
    assert!(table.contains("<th>base</th>") && table.contains("<th>concise</th>"), "{table}");
    assert!(report.contains("id=\"latency\""));
    // Every scored row can be opened, with its parts.
    assert_eq!(report.matches("<details class=\"row\"").count(), rows);
    for part in [
        "class=\"query\"",
        "class=\"answer\"",
        "class=\"ground-truth\"",
        "class=\"citations\"",
        "class=\"scores\"",
    ] {
        assert!(report.contains(part), "no {part} in the rows");
    }
    // A judge's reason is shown beside its score.
    let reason = serde_json::from_str::<serde_json::Value>(
        std::fs::read_to_string(run.join("scores.jsonl")).unwrap().lines().next().unwrap(),
    )
    .unwrap()["reasons"]["relevance"]
        .as_str()
        .map(str::to_string)
        .expect("a relevance reason");
    let shown = reason.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    assert!(report.contains(&shown), "the reason `{reason}` is not on the page");

    // The comparison page: a forest plot with one interval per metric.
    let page = dir.path().join("compare.html");
    let cmp = meshops(
        &[
            "eval",
            "compare",
            run.to_str().unwrap(),
            run.to_str().unwrap(),
            "--variant-a",
            "base",
            "--variant-b",
            "concise",
            "--html",
            page.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stderr));
    let compare = dom(&chromium, &page, &profile);
    let diffs_at = compare.find("id=\"diffs\"").expect("the differences table");
    let diffs = &compare[diffs_at..compare[diffs_at..].find("</table>").unwrap() + diffs_at];
    let metrics = diffs.matches("<tr>").count() - 1;
    assert!(metrics > 5, "{diffs}");
    assert!(compare.contains("id=\"forest\""), "no forest plot");
    assert_eq!(compare.matches("<g class=\"metric\"").count(), metrics, "one interval per metric");
    assert_eq!(compare.matches("class=\"ci\"").count(), metrics);
}
