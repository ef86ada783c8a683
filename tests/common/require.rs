//! What a test needs from outside the project: a tool on PATH (kubectl, the
//! validators, python3) or a service it is pointed at (a Qdrant server, a
//! real model endpoint).
//!
//! A missing **tool** is a failure under `CI=true` (`.ci/run` sets it, and
//! so does GitHub Actions): CI installs or checks every tool first
//! (`scripts/ci-setup.sh`), so a missing one there is a broken set-up that
//! must not pass as green. Elsewhere (a laptop without kubectl) the check is
//! skipped with a `SKIP` line naming the test and the tool.
//!
//! A **service** is opt-in everywhere, CI included: no build machine can
//! run a Qdrant server or reach a model provider, so those tests run only
//! when an environment variable names one, and say that they skipped
//! otherwise.
//!
//! Skip lines go to the stderr handle: libtest captures `print!` and
//! `eprint!` of a passing test, but not writes to `std::io::stderr()`, so
//! they show in a plain `cargo test`. A test binary that skipped anything
//! also prints, when it exits (after libtest's `test result:` line), how
//! many checks it skipped and which: libtest counts a skipped check as
//! passed and has no way to be told otherwise.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, Once};

/// Whether this run is CI's: `CI` set to `true` or `1` (any case).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The executable `name` on PATH, or in the npm tools folder that
/// scripts/ci-setup.sh installs buf into, if any.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let tools = std::env::var_os("MESHOPS_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meshops-tools")));
    std::env::split_paths(&path)
        .chain(tools.map(|t| t.join("node_modules/.bin")))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The tool `name` for the check `what` of the running test. Missing: the
/// test fails under CI, and elsewhere gets `None` after a printed SKIP.
#[track_caller]
pub fn require_tool(name: &str, what: &str) -> Option<PathBuf> {
    if let Some(found) = tool(name) {
        return Some(found);
    }
    if in_ci() {
        panic!(
            "{}: {what}: `{name}` is not installed, and under CI=true a missing tool is a failure, \
             not a skip (scripts/ci-setup.sh installs or checks every tool the tests use)",
            test_name()
        );
    }
    skip(&format!("{what}: `{name}` is not installed (scripts/ci-setup.sh installs or checks it)"));
    None
}

/// Whether `python3` can import `module` (a client library the test drives,
/// pinned in scripts/validators.txt); missing: the test fails under CI, and
/// elsewhere gets `false` after a printed SKIP.
#[track_caller]
pub fn require_python_module(module: &str, what: &str) -> bool {
    let Some(python) = require_tool("python3", what) else { return false };
    let found = std::process::Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    if in_ci() {
        panic!(
            "{}: {what}: the Python module `{module}` is not installed, and under CI=true a missing tool \
             is a failure (scripts/ci-setup.sh installs it from scripts/validators.txt)",
            test_name()
        );
    }
    skip(&format!("{what}: the Python module `{module}` is not installed (scripts/ci-setup.sh installs it)"));
    false
}

/// The value of the opt-in variable `var` that points the running test at
/// a service; unset, the test is skipped (CI included), and the SKIP line
/// says what to set (`how`).
pub fn opt_in_env(var: &str, how: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            skip(&format!("opt-in: set {var} {how}"));
            None
        }
    }
}

/// The running test's name: libtest runs each test on a thread named after
/// it (its module path); "main" when tests run on the main thread.
fn test_name() -> String {
    std::thread::current().name().unwrap_or("a test").to_string()
}

/// Every skip of this test binary, for the summary printed at exit.
static SKIPS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SUMMARY_AT_EXIT: Once = Once::new();

unsafe extern "C" {
    /// The C library's `atexit`: libtest returns from `main` (or calls
    /// `exit` on failure) after printing its result, and both run these.
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// Prints the skips of this binary to stderr (run once, at exit).
extern "C" fn print_skip_summary() {
    let skips = SKIPS.lock().map(|s| s.clone()).unwrap_or_default();
    if skips.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "SKIPPED {} check(s) in this test binary (libtest counted them as passed above):",
        skips.len()
    );
    for s in &skips {
        let _ = writeln!(err, "  {s}");
    }
}

/// Prints `SKIP <test>: <reason>` where a plain `cargo test` shows it, and
/// records it for the summary at exit.
fn skip(reason: &str) {
    let line = format!("{}: {reason}", test_name());
    let _ = writeln!(std::io::stderr(), "SKIP {line}");
    SUMMARY_AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` with no arguments, as
        // `atexit` expects; it only locks a static and writes to stderr.
        let _ = unsafe { atexit(print_skip_summary) };
    });
    if let Ok(mut skips) = SKIPS.lock() {
        skips.push(line);
    }
}
