//! A `meshops serve` child process on a free loopback port with its own
//! data dir, and the `meshops` binary run as a user runs it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A `meshops serve` child process, killed when dropped.
pub struct Served {
    pub child: Child,
    pub target: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `meshops serve` on a free port with `data` as its data dir and
/// waits until its health check says SERVING.
pub async fn serve(data: &Path, env: &[(&str, &str)]) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data.join("serve.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meshops"))
        .args(["serve", "--listen", &listen])
        .current_dir(super::root())
        .env("MESHOPS__RETRIEVAL__DATA_DIR", data)
        .env("MESHOPS__TELEMETRY__EXPORT", "false")
        .envs(env.iter().copied())
        .env_remove("MESHOPS_ENV")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let served = Served { child, target: format!("http://{listen}") };
    if !super::wait::serving_within(&served.target, super::wait::PATIENCE).await {
        let log = std::fs::read_to_string(data.join("serve.log")).unwrap_or_default();
        panic!("serve never became SERVING; log:\n{log}");
    }
    served
}

/// Runs the `meshops` binary with `args` from the project root, with
/// `data` as its data dir (and no environment overlay), to completion.
pub fn meshops(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshops"))
        .args(args)
        .current_dir(super::root())
        .env("MESHOPS__RETRIEVAL__DATA_DIR", data)
        .env_remove("MESHOPS_ENV")
        .env_remove("RUST_LOG")
        .env_remove("MESHOPS_API_KEY")
        .output()
        .unwrap()
}
