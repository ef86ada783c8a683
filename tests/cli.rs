//! The `meshops` binary as a user runs it: `validate`, `ingest`, and `ask`
//! against a running `serve`.

mod common;

use std::process::{Command, Output};

fn meshops(args: &[&str], data_dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshops"))
        .args(args)
        .current_dir(common::root())
        .env("MESHOPS__RETRIEVAL__DATA_DIR", data_dir)
        .env_remove("MESHOPS_ENV")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn validate_accepts_the_shipped_files_and_rejects_a_broken_one() {
    let data = tempfile::tempdir().unwrap();
    let ok = meshops(&["validate"], data.path());
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("configuration OK"));
    assert!(stdout(&ok).contains("flow  question"), "{}", stdout(&ok));
    // The judges' prompts in prompts/eval/ are checked too.
    assert!(
        stdout(&ok).contains("judges  coherence, fluency, groundedness, relevance, rubric, similarity"),
        "{}",
        stdout(&ok)
    );

    let bad = data.path().join("bad.toml");
    std::fs::write(&bad, "[gateway]\nlisten = \"not an address\"\n[retrieval]\nchunk_max_char = 5\n")
        .unwrap();
    let out = meshops(&["validate", "--config", bad.to_str().unwrap()], data.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad.toml") && err.contains("retrieval.chunk_max_char"), "{err}");
    // The field is named once, and the valid one it is closest to is named.
    assert!(!err.contains("chunk_max_char.chunk_max_char"), "{err}");
    assert!(err.contains("did you mean `chunk_max_chars`?"), "{err}");
}

#[test]
fn ingest_twice_leaves_the_point_count_unchanged() {
    let data = tempfile::tempdir().unwrap();
    let first = meshops(&["ingest"], data.path());
    assert!(first.status.success(), "{}", stderr(&first));
    // A clean start of the embedded store prints no warning (qdrant-edge's
    // start-up warnings about its host process are filtered).
    assert!(!stderr(&first).contains("WARN"), "{}", stderr(&first));
    let second = meshops(&["ingest", "corpus"], data.path());
    assert!(second.status.success(), "{}", stderr(&second));
    let points = |o: &Output| -> usize {
        let s = stdout(o);
        let words: Vec<&str> = s.split_whitespace().collect();
        let i = words.iter().position(|w| *w == "points").unwrap_or_else(|| panic!("no count in {s:?}"));
        words[i - 1].parse().unwrap()
    };
    assert!(points(&first) > 20, "{}", stdout(&first));
    assert_eq!(points(&first), points(&second), "{} / {}", stdout(&first), stdout(&second));
    assert!(stdout(&second).contains(" 0 stale removed"), "{}", stdout(&second));
}

#[test]
fn serve_then_ask_prints_a_cited_answer() {
    let data = tempfile::tempdir().unwrap();
    // Find a free port, then let `serve` bind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshops"))
        .args(["serve", "--listen", &listen])
        .current_dir(common::root())
        .env("MESHOPS__RETRIEVAL__DATA_DIR", data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let target = format!("http://{listen}");
    // Health first; the calls under test then run once.
    common::wait::serving_blocking(&target);
    let out = meshops(&["ask", "--target", &target, "What does the retriever agent do?"], data.path());
    let streamed = meshops(&["ask", "--stream", "--json", "--target", &target, "hello"], data.path());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("[1]") && text.contains("Sources:") && text.contains("retriever-agent"), "{text}");
    assert!(streamed.status.success(), "{}", stderr(&streamed));
    let v: serde_json::Value = serde_json::from_str(&stdout(&streamed)).unwrap();
    assert_eq!(v["intent"], "greeting");
}

#[test]
fn output_cut_short_by_its_reader_ends_quietly() {
    use std::process::Stdio;
    // `meshops validate | head -0`: the reader is gone before the first
    // line is written. Every run must end without a panic (exit 101).
    for _ in 0..3 {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshops"))
            .arg("validate")
            .current_dir(common::root())
            .env("MESHOPS__RETRIEVAL__DATA_DIR", data.path())
            .env_remove("MESHOPS_ENV")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
