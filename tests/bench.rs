//! `meshops bench all --quick` runs every benchmark end to end and prints
//! its figures beside their comparisons. Nothing here asserts on time:
//! this only catches a benchmark that no longer runs.

mod common;

use std::process::Command;

#[test]
fn bench_all_quick_runs_every_benchmark_and_prints_figures() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshops"))
        .args(["bench", "all", "--quick"])
        .current_dir(common::root())
        .env("MESHOPS__RETRIEVAL__DATA_DIR", data.path())
        .env("RUST_LOG", "warn")
        .env_remove("MESHOPS_ENV")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for (section, figure) in [
        ("== mesh:", "µs/request"),
        ("== gateway:", "bare tonic echo"),
        ("== inflight:", "Little's-law bound"),
        ("== overhead:", "added: p50"),
        ("== eval:", "rows/s"),
        ("== retrieval:", "chunks/s"),
        ("== startup:", "corpus already ingested"),
    ] {
        let at = stdout.find(section).unwrap_or_else(|| panic!("no `{section}` section in:\n{stdout}"));
        assert!(stdout[at..].contains(figure), "`{section}` printed no `{figure}` figure:\n{stdout}");
    }
    assert!(stdout.contains("cores, load average"), "{stdout}");
    // h2load, a separate process, loads the gateway from outside.
    if common::require::require_tool("h2load", "`bench external` loads the gateway with it").is_some() {
        let at = stdout.find("== external:").unwrap_or_else(|| panic!("no external section:\n{stdout}"));
        for engine in ["zero-work model and store", "offline engine"] {
            let line = stdout[at..].lines().find(|l| l.trim_start().starts_with(engine));
            let line = line.unwrap_or_else(|| panic!("no `{engine}` line:\n{stdout}"));
            assert!(line.contains("Health/Check") && line.contains(", 0 not)"), "{line}");
        }
    }
}
