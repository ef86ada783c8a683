//! Shared test set-up: the shipped configuration with a temporary data dir,
//! a real gateway on 127.0.0.1:0 and the real generated client; tools and
//! services a test needs (`require`: fail under CI, skip visibly elsewhere).
#![allow(dead_code)]

pub mod backends;
pub mod fake_openai;
pub mod require;
pub mod served;
pub mod wait;

use std::path::{Path, PathBuf};

use meshops::config::{LoadOptions, MeshSpec};
use meshops::gateway::{Overrides, ServerHandle};
use meshops::proto::gateway_client::GatewayClient;
use tonic::transport::Channel;

/// The package root. Read at run time: a test binary may be reused from a
/// shared target dir built in another checkout of the same sources, and the
/// compile-time value would then point at that other checkout.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// The shipped spec (files only, no env overlay) with its data dir moved
/// into `data`.
pub fn spec(data: &Path) -> MeshSpec {
    let mut spec = match MeshSpec::load(&LoadOptions::files_only(root())) {
        Ok(s) => s,
        Err(e) => panic!("shipped configuration must load:\n{e}"),
    };
    spec.settings.retrieval.data_dir = data.to_path_buf();
    spec
}

pub struct TestServer {
    pub server: ServerHandle,
    pub client: GatewayClient<Channel>,
    pub channel: Channel,
    pub _data: tempfile::TempDir,
}

pub async fn start(tweak: impl FnOnce(&mut MeshSpec), overrides: Overrides) -> TestServer {
    let data = tempfile::tempdir().unwrap();
    let mut spec = spec(data.path());
    tweak(&mut spec);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = meshops::gateway::start_with(spec, listener, overrides).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    let client = GatewayClient::new(channel.clone());
    TestServer { server, client, channel, _data: data }
}

/// One row of `eval/datasets/sample.jsonl`.
#[derive(Debug, serde::Deserialize)]
pub struct Row {
    pub id: String,
    pub query: String,
    #[serde(default)]
    pub ground_truth: String,
    #[serde(default)]
    pub relevant_doc_ids: Vec<String>,
    #[serde(default)]
    pub intent: Option<String>,
}

pub fn sample_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(root().join("eval/datasets/sample.jsonl")).unwrap();
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Copies `from` into `to`, folders included (a project copy a test may
/// change).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A temporary copy of the project's `parts` (e.g. `config`, `agents`,
/// `prompts`).
pub fn project_copy(parts: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for part in parts {
        copy_dir(&root().join(part), &dir.path().join(part));
    }
    dir
}

/// Starts the gateway in-process on the project files in `dir` (a
/// [`project_copy`]), with `extra` as its `--config` file and `tweak`
/// applied to the loaded spec; its data dir is a fresh temporary one.
pub async fn start_in(dir: &Path, extra: &str, tweak: impl FnOnce(&mut MeshSpec)) -> TestServer {
    let file = dir.join("extra.toml");
    std::fs::write(&file, extra).unwrap();
    let opts =
        LoadOptions { root: dir.to_path_buf(), env: None, config_file: Some(file), env_vars: Vec::new() };
    let mut spec = match MeshSpec::load(&opts) {
        Ok(s) => s,
        Err(e) => panic!("the test configuration must load:\n{e}"),
    };
    let data = tempfile::tempdir().unwrap();
    spec.settings.retrieval.data_dir = data.path().to_path_buf();
    tweak(&mut spec);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = meshops::gateway::start_with(spec, listener, Overrides::default()).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    TestServer { server, client: GatewayClient::new(channel.clone()), channel, _data: data }
}

/// The load errors of the project files in `dir` with `extra` as the
/// `--config` file; panics when it loads.
pub fn load_errors(dir: &Path, extra: &str) -> String {
    let file = dir.join("extra.toml");
    std::fs::write(&file, extra).unwrap();
    let opts =
        LoadOptions { root: dir.to_path_buf(), env: None, config_file: Some(file), env_vars: Vec::new() };
    match MeshSpec::load(&opts) {
        Ok(_) => panic!("{extra} must not load"),
        Err(e) => e.to_string(),
    }
}

/// Puts `agent` on a model profile `remote` that calls the
/// OpenAI-wire server at `base_url` as model `model`: no retries, no
/// price (a test double's calls cost nothing known).
pub fn on_remote_model(spec: &mut MeshSpec, agent: &str, model: &str, base_url: String) {
    let mut remote = spec.settings.models["offline"].clone();
    remote.provider = meshops::config::Provider::OpenaiCompatible;
    remote.model = model.into();
    remote.base_url = Some(base_url);
    remote.max_retries = Some(0);
    remote.input_price_per_mtok = None;
    remote.output_price_per_mtok = None;
    spec.settings.models.insert("remote".into(), remote);
    match spec.agents.get_mut(agent) {
        Some(a) => a.base.model = Some("remote".into()),
        None => panic!("no agent `{agent}` to put on the remote model"),
    }
}
