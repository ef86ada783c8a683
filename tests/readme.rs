//! The README cannot drift: its shell commands (the ```sh fences of
//! README.md, read when the test runs) run as written on a fresh copy of
//! the project, with `cargo run --release --` as the only translation (to
//! the `meshops` binary this test was built with).
//!
//! Where the README says a gateway runs ("With the gateway running"), the
//! test starts one with the README's own `serve` command. The commands run
//! in the shell a user would have, with one setting in its environment:
//! `MESHOPS__GATEWAY__LISTEN` (the README's overlay variables), a free
//! loopback port instead of 50051, so a gateway a developer left running,
//! or another checkout's tests, cannot collide with this one. The README's
//! client commands reach the gateway through that setting, never through
//! a port written into them.
//!
//! Every command either runs (and exits 0, or the code the README gives
//! it), or is in [`SKIPPED`] with the reason it cannot run here. A command
//! added to the README fails this test until it is one or the other, and
//! so does a section with commands that [`SECTIONS`] does not place.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::wait;

/// README commands that cannot run on a build machine, keyed by their text
/// (a trailing `# comment` left off), each with why. Reviewed: add to it
/// only what truly needs something outside the project.
const SKIPPED: &[(&str, &str)] = &[
    ("cargo test", "the test suite itself: this test runs inside it"),
    ("grpcurl -plaintext localhost:50051 list", GRPCURL),
    (
        "grpcurl -plaintext -d '{\"query\": \"What does the retriever agent do?\"}' localhost:50051 meshops.v1.Gateway/Ask",
        GRPCURL,
    ),
    ("grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check", GRPCURL),
    (
        "grpcurl -plaintext -d '{\"items\": [{\"query\": \"What is a variant?\"}]}' localhost:50051 meshops.v1.Batch/SubmitBatch",
        GRPCURL,
    ),
    (
        "grpcurl -plaintext -d '{\"documents\": [{\"id\": \"notes\", \"text\": \"# Notes\\n\\nThe lab opens at nine.\"}]}' localhost:50051 meshops.v1.Admin/Ingest",
        GRPCURL,
    ),
    ("scripts/local-llm.sh start", LLAMA),
    ("cargo run --release -- serve --config config/local-llm.toml", LLAMA),
    ("cargo run --release -- ask --stream \"Which port does the gateway listen on?\"", LLAMA),
    ("cargo run --release -- ask --repeat 10 \"Which port does the gateway listen on?\"", LLAMA),
    ("scripts/local-llm.sh stop", LLAMA),
    (
        "cargo run --release -- serve --http-listen 127.0.0.1:8000",
        "a second long-running gateway on a fixed port; tests/openai_api.rs starts the gateway with \
         http_listen and drives it with the official OpenAI Python SDK, as the section's Python does",
    ),
];

const GRPCURL: &str = "grpcurl is not a tool of this project's builds, and it is pointed at the \
                       default port 50051; the same calls (reflection, Ask, health, SubmitBatch, \
                       Ingest) run over the wire in tests/gateway.rs, tests/batch.rs and tests/admin.rs";
const LLAMA: &str = "needs a llama.cpp server and model weights (scripts/local-llm.sh builds and \
                     fetches them, minutes and a download); tests/providers.rs runs the live check \
                     when MESHOPS_LLM_BASE_URL is set";

/// The README's command that starts the gateway: the test runs it (in the
/// background) wherever a section needs a gateway running.
const SERVE: &str = "cargo run --release -- serve";

/// Whether a section's commands talk to a running gateway.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Needs {
    Gateway,
    /// No gateway: these commands open the embedded store themselves
    /// (`eval run` in-process), which a running gateway would hold.
    NoGateway,
}

/// Every README section (its heading) with sh commands, and what it needs.
const SECTIONS: &[(&str, Needs)] = &[
    ("The two commands", Needs::NoGateway),
    ("Asking questions", Needs::Gateway),
    ("OpenAI-compatible API", Needs::NoGateway),
    ("Batch jobs", Needs::Gateway),
    ("Evaluating", Needs::NoGateway),
    ("Build your own mesh", Needs::NoGateway),
    ("Tools and MCP", Needs::NoGateway),
    ("Conversations", Needs::Gateway),
    ("In production: A/B, online evaluation, feedback", Needs::Gateway),
    ("A local model, no cloud", Needs::NoGateway),
    ("Security and limits", Needs::Gateway),
];

/// Exit codes the README gives a command other than 0.
const EXIT_CODES: &[(&str, i32)] = &[];

/// One logical command of a sh fence (continuation lines joined).
#[derive(Debug, Clone)]
struct Cmd {
    section: String,
    /// As written, continuation lines included.
    text: String,
    /// Continuations joined, whitespace squeezed, the trailing comment off.
    key: String,
}

/// The sh fences of `readme`, each a list of commands, with its section.
fn sh_blocks(readme: &str) -> Vec<(String, Vec<Cmd>)> {
    let mut blocks = Vec::new();
    let (mut section, mut in_sh, mut in_other) = (String::new(), false, false);
    let (mut cmds, mut pending) = (Vec::new(), String::new());
    for line in readme.lines() {
        if in_sh {
            if line.trim_start().starts_with("```") {
                in_sh = false;
                blocks.push((section.clone(), std::mem::take(&mut cmds)));
                continue;
            }
            if pending.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
                continue;
            }
            pending.push_str(line);
            if line.trim_end().ends_with('\\') {
                pending.push('\n');
                continue;
            }
            let text = std::mem::take(&mut pending);
            cmds.push(Cmd { section: section.clone(), key: key_of(&text), text });
        } else if in_other {
            in_other = !line.trim_start().starts_with("```");
        } else if line.trim_start() == "```sh" {
            in_sh = true;
        } else if line.trim_start().starts_with("```") {
            in_other = true;
        } else if let Some(h) = line.strip_prefix("## ").or_else(|| line.strip_prefix("### ")) {
            section = h.trim().to_string();
        }
    }
    assert!(!in_sh, "README.md: an sh fence is never closed");
    blocks
}

/// A command's key: continuations joined, a trailing `# comment` (a `#`
/// after whitespace, outside quotes) left off, whitespace squeezed.
fn key_of(text: &str) -> String {
    let joined = text.replace("\\\n", " ");
    let (mut quote, mut prev_space, mut end) = (None, true, joined.len());
    for (i, c) in joined.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => {
                end = i;
                break;
            }
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    joined[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

fn skip_reason(key: &str) -> Option<&'static str> {
    SKIPPED.iter().find(|(k, _)| *k == key).map(|(_, why)| *why)
}

/// What one command did.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The project copy the commands run in, and its environment.
struct Session {
    dir: tempfile::TempDir,
    listen: String,
    gateway: Option<std::process::Child>,
}

impl Session {
    fn new() -> Session {
        let dir = tempfile::tempdir().unwrap();
        for part in ["agents", "config", "corpus", "docs", "eval", "examples", "prompts", "scripts"] {
            common::copy_dir(&common::root().join(part), &dir.path().join(part));
        }
        std::fs::copy(common::root().join("README.md"), dir.path().join("README.md")).unwrap();
        // The user's own documents the README ingests (`my-docs/ notes.md`).
        let guides = dir.path().join("my-docs/guides");
        std::fs::create_dir_all(&guides).unwrap();
        std::fs::write(
            guides.join("setup.md"),
            "# A question my-docs answers\n\nThe answer to a question my-docs answers is that the \
             lab's espresso machine is descaled every Friday at noon by the night shift.\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.md"), "# Notes\n\nThe lab opens at nine.\n").unwrap();
        std::fs::create_dir_all(dir.path().join(".readme")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Session { dir, listen: format!("127.0.0.1:{port}"), gateway: None }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A shell in the copy, in a user's environment plus the listen address.
    fn shell(&self, script: &str) -> Command {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(translate(script)).current_dir(self.path());
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("MESHOPS") || name == "RUST_LOG" {
                sh.env_remove(&name);
            }
        }
        sh.env("MESHOPS__GATEWAY__LISTEN", &self.listen);
        sh
    }

    /// Starts the README's `serve` and waits until it reports SERVING.
    fn start_gateway(&mut self) {
        if self.gateway.is_some() {
            return;
        }
        let log = std::fs::File::create(self.path().join(".readme/serve.log")).unwrap();
        let child = self
            .shell(&format!("exec {SERVE}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.gateway = Some(child);
        let target = format!("http://{}", self.listen);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let path = self.path().to_path_buf();
        let serving = runtime.block_on(wait::serving_within(&target, wait::PATIENCE));
        assert!(serving, "`{SERVE}` never reported SERVING; log:\n{}", log_of(&path));
    }

    /// Stops the gateway (SIGTERM, as a user's Ctrl-C) and waits for it.
    fn stop_gateway(&mut self) {
        if let Some(mut child) = self.gateway.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let status = child.wait().unwrap();
            assert!(status.success(), "the gateway ended with {status}; log:\n{}", log_of(self.path()));
        }
    }

    /// Runs one block's runnable commands in one shell (so a variable set
    /// by one command is there for the next), each with its own output.
    fn run_block(&self, n: usize, cmds: &[Cmd]) -> Vec<Outcome> {
        let files = |i: usize, what: &str| format!(".readme/{n}-{i}.{what}");
        let mut script = String::new();
        for (i, c) in cmds.iter().enumerate() {
            script.push_str(&format!(
                "{{ {}\n}} >{} 2>{} </dev/null\necho $? >{}\n",
                c.text,
                files(i, "out"),
                files(i, "err"),
                files(i, "rc")
            ));
        }
        let mut child = self.shell(&script).stdin(Stdio::null()).spawn().unwrap();
        let mut status = None;
        wait::wait_until("the README's commands to finish", Duration::from_secs(600), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let read = |p: String| std::fs::read_to_string(self.path().join(p)).unwrap_or_default();
        (0..cmds.len())
            .map(|i| Outcome {
                code: read(files(i, "rc")).trim().parse().unwrap_or(-1),
                stdout: read(files(i, "out")),
                stderr: read(files(i, "err")),
            })
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut child) = self.gateway.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".readme/serve.log")).unwrap_or_default()
}

/// The one translation: `cargo run --release --` is the built binary.
fn translate(text: &str) -> String {
    text.replace("cargo run --release --", env!("CARGO_BIN_EXE_meshops"))
}

/// Checks what the README says of a command's outcome, where that is cheap
/// to see; `dir` is the project copy.
fn check_outcome(key: &str, out: &Outcome, dir: &Path) {
    let said = |what: &str| format!("`{key}`: {what}\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let rows = std::fs::read_to_string(dir.join("eval/datasets/sample.jsonl")).unwrap();
    let rows = rows.lines().filter(|l| !l.trim().is_empty()).count();
    if key.contains("-- ask \"…a question my-docs/ answers…\"") {
        // "cites them at once": the document just ingested is a source.
        assert!(out.stdout.contains("guides/setup"), "{}", said("the answer cites no my-docs/ document"));
    } else if key.contains("-- ask --json --variant concise") {
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{}", said(&e.to_string())));
        assert_eq!(v["variant"], "concise", "{}", said("not answered by the variant asked for"));
    } else if key.starts_with("TRACE=$(") {
        // The answer's trace id went into the variable; the next command
        // uses it.
    } else if key.contains("-- feedback \"$TRACE\"") {
        let stored = out.stdout.trim().strip_prefix("feedback stored for ").unwrap_or_default();
        assert!(stored.len() == 32, "{}", said("the feedback was not stored with a trace id"));
    } else if key.contains("-- live export --out live.jsonl") {
        // "writes JSON lines … and feedback": the rated answer is there.
        let rows = std::fs::read_to_string(dir.join("live.jsonl")).unwrap_or_default();
        let rated: Vec<serde_json::Value> = rows.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(
            rated.len() == 1 && rated[0]["feedback"]["score"] == 1.0 && rated[0]["id"].is_string(),
            "{}",
            said("the rated answer is not exported with its feedback")
        );
    } else if key.contains("-- ask") {
        assert!(!out.stdout.trim().is_empty(), "{}", said("no answer printed"));
    } else if key.contains("-- batch results") {
        // JSON lines, one per item, each naming its item and its row's id.
        let lines: Vec<serde_json::Value> =
            out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), rows, "{}", said("not one result per row"));
        for l in &lines {
            assert!(l["item_index"].is_u64() && l["id"].is_string(), "{}", said("a result without its item"));
            assert!(l.get("response").is_some() || l.get("error").is_some(), "{}", said("an empty result"));
        }
    } else if key.contains("-- batch status") || key.contains("-- batch cancel") {
        let job: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(job["total"], rows, "{}", said("the job does not hold the dataset's rows"));
    } else if key.contains("-- batch list") {
        assert!(out.stdout.contains("\"job_id\""), "{}", said("no job listed"));
    } else if let Some(rest) = key.split(" --out ").nth(1).filter(|_| key.contains("-- eval run")) {
        // "writes outputs.jsonl, judgements.jsonl, scores.jsonl, summary.json,
        // report.md and report.html".
        let run = dir.join(rest.split_whitespace().next().unwrap());
        for f in
            ["outputs.jsonl", "judgements.jsonl", "scores.jsonl", "summary.json", "report.md", "report.html"]
        {
            assert!(run.join(f).is_file(), "{}", said(&format!("no {f} in {}", run.display())));
        }
    } else if key.contains("-- eval score") {
        let first = std::fs::read_to_string(dir.join("rescored.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        assert!(first.get("f1").is_some() && first.get("rougeL").is_some(), "{}", said(&first.to_string()));
    } else if key.contains("-- validate") {
        assert!(out.stdout.contains("configuration OK"), "{}", said("validation did not pass"));
    } else if key.contains("-- keys hash") {
        let keys = std::fs::read_to_string(dir.join("keys.txt")).unwrap();
        assert!(keys.lines().any(|l| l.ends_with(" ci") && l.len() > 60), "{}", said(&keys));
    }
}

#[test]
fn the_readme_commands_run_as_written() {
    if common::require::require_tool("jq", "the README's batch commands pipe through jq").is_none() {
        return;
    }
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let blocks = sh_blocks(&readme);
    let all: Vec<&Cmd> = blocks.iter().flat_map(|(_, c)| c).collect();
    assert!(all.iter().any(|c| c.key == SERVE), "the README no longer starts the gateway with `{SERVE}`");
    for (key, _) in SKIPPED {
        assert!(all.iter().any(|c| c.key == *key), "SKIPPED lists `{key}`, which the README no longer has");
    }
    for (key, _) in EXIT_CODES {
        assert!(
            all.iter().any(|c| c.key == *key),
            "EXIT_CODES lists `{key}`, which the README no longer has"
        );
    }

    let mut session = Session::new();
    let mut ran = Vec::new();
    for (n, (section, cmds)) in blocks.iter().enumerate() {
        let Some(&(_, needs)) = SECTIONS.iter().find(|(s, _)| s == section) else {
            panic!("README section `{section}` has sh commands; say in SECTIONS whether they need a gateway");
        };
        let runnable: Vec<Cmd> =
            cmds.iter().filter(|c| c.key != SERVE && skip_reason(&c.key).is_none()).cloned().collect();
        for c in cmds {
            if let Some(why) = skip_reason(&c.key) {
                let line = format!("README: not run here: `{}`: {why}\n", c.key);
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            }
        }
        if runnable.is_empty() {
            continue;
        }
        match needs {
            Needs::Gateway => session.start_gateway(),
            Needs::NoGateway => session.stop_gateway(),
        }
        let outcomes = session.run_block(n, &runnable);
        for (c, out) in runnable.iter().zip(&outcomes) {
            let want = EXIT_CODES.iter().find(|(k, _)| *k == c.key).map_or(0, |(_, code)| *code);
            assert_eq!(
                out.code,
                want,
                "README ({}): `{}` exited {}\nstdout:\n{}\nstderr:\n{}\ngateway log:\n{}",
                c.section,
                c.text,
                out.code,
                out.stdout,
                out.stderr,
                if needs == Needs::Gateway { log_of(session.path()) } else { String::new() }
            );
            check_outcome(&c.key, out, session.path());
            ran.push(c.key.clone());
        }
    }
    session.stop_gateway();
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("README: {} commands ran as written, {} skipped (SKIPPED)\n", ran.len(), SKIPPED.len())
            .as_bytes(),
    );
    assert!(ran.len() >= 20, "only {} README commands ran: {ran:?}", ran.len());
}

#[test]
fn commands_are_read_from_fences_with_their_sections() {
    let text = "## One\n\n```sh\ncargo run --release -- ask \"a # b\"   # comment\n# a comment line\n\
                grpcurl -d '{}' \\\n  host:1 svc/M\n```\n\n```toml\n[x]\n```\n### Two\n```sh\nls\n```\n";
    let blocks = sh_blocks(text);
    let keys: Vec<(&str, &str)> =
        blocks.iter().flat_map(|(_, c)| c).map(|c| (c.section.as_str(), c.key.as_str())).collect();
    assert_eq!(
        keys,
        [
            ("One", "cargo run --release -- ask \"a # b\""),
            ("One", "grpcurl -d '{}' host:1 svc/M"),
            ("Two", "ls")
        ]
    );
}
