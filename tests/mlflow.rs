//! `eval run --publish mlflow+http://…` against a real MLflow tracking
//! server (`mlflow server` from PyPI, pinned in scripts/validators.txt,
//! with a SQLite backend and local artifacts in a temp dir, on a free
//! loopback port): the run, its params, metrics and artifacts are read back
//! through MLflow's own REST API, and publishing again logs nothing twice.

mod common;

use std::process::{Child, Command, Stdio};

use common::served::meshops;
use common::wait;
use serde_json::{Value, json};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // `mlflow server` runs its web server and job runners as children
        // in its own session (setsid): end that process group.
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(url: &str) -> Option<Value> {
    let resp = reqwest::Client::new().get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    serde_json::from_str(&resp.text().await.ok()?).ok()
}

async fn post(url: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eval_run_is_logged_to_a_real_mlflow_server() {
    let Some(mlflow) = common::require::require_tool("mlflow", "publishing to MLflow") else { return };
    // reqwest is built without a bundled crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = format!("sqlite:///{}", dir.path().join("mlflow.db").display());
    let log = std::fs::File::create(dir.path().join("mlflow.log")).unwrap();
    // In a session of its own (setsid), so its process group is all its
    // own and nothing it does reaches the test's terminal or group.
    let child = Command::new("setsid")
        .arg(mlflow)
        .args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
        .args(["--backend-store-uri", &store, "--artifacts-destination"])
        .arg(dir.path().join("artifacts"))
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _server = Server(child);
    let base = format!("http://127.0.0.1:{port}");
    wait::until("the MLflow server to answer", wait::PATIENCE, || {
        let url = format!("{base}/health");
        async move { reqwest::Client::new().get(&url).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;

    let data = tempfile::tempdir().unwrap();
    let out = data.path().join("run");
    let target = format!("mlflow+{base}");
    let args = [
        "eval",
        "run",
        "--dataset",
        "eval/datasets/toy.jsonl",
        "--variant",
        "base",
        "--variant",
        "concise",
        "--out",
        out.to_str().unwrap(),
        "--publish",
        &target,
    ];
    let run = meshops(&args, data.path());
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.contains("MLflow: base logged as run") && stdout.contains("MLflow: concise logged"),
        "{stdout}"
    );

    // Read back through MLflow's REST API.
    let experiment =
        get(&format!("{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=meshops%2Ftoy"))
            .await
            .expect("the experiment `meshops/toy`");
    let id = experiment["experiment"]["experiment_id"].as_str().unwrap().to_string();
    let found = post(&format!("{base}/api/2.0/mlflow/runs/search"), json!({"experiment_ids": [id]})).await;
    let runs = found["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{found}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for run in runs {
        assert_eq!(run["info"]["status"], "FINISHED");
        let params: std::collections::BTreeMap<&str, &str> = run["data"]["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["key"].as_str().unwrap(), p["value"].as_str().unwrap()))
            .collect();
        assert_eq!(params["config_hash"], summary["config_hash"].as_str().unwrap());
        assert_eq!(params["dataset_hash"], summary["dataset_hash"].as_str().unwrap());
        assert!(["base", "concise"].contains(&params["variant"]), "{params:?}");
        let metrics: std::collections::BTreeMap<&str, f64> = run["data"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["key"].as_str().unwrap(), m["value"].as_f64().unwrap()))
            .collect();
        let variants = &summary["variants"];
        let own = match &variants[params["variant"]] {
            Value::Null => &variants[""],
            v => v,
        };
        let f1 = own["metrics"]["f1"]["mean"].as_f64().unwrap();
        assert_eq!(metrics["f1"], f1, "{metrics:?}");
        assert!(metrics.contains_key("latency_p95_ms") && metrics.contains_key("cost_usd"), "{metrics:?}");
        let run_id = run["info"]["run_id"].as_str().unwrap();
        let listed = get(&format!("{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}")).await.unwrap();
        let files: Vec<&str> =
            listed["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        for f in ["summary.json", "report.html", "scores.jsonl"] {
            assert!(files.contains(&f), "{f} not among {files:?}");
        }
    }
    // Publishing the same results again logs nothing twice.
    let again = meshops(&args, data.path());
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already logged"));
    let found = post(&format!("{base}/api/2.0/mlflow/runs/search"), json!({"experiment_ids": [id]})).await;
    assert_eq!(found["runs"].as_array().unwrap().len(), 2);

    // `live compare --publish`: the A/B readout of live traffic, a run per
    // variant in the experiment `meshops/live`.
    let mut t = common::start(
        |s| {
            s.settings.gateway.ab.weights = [("base".to_string(), 50), ("concise".to_string(), 50)].into();
            s.settings.online_eval.sample_rate = 1.0;
            s.settings.online_eval.judges = vec!["relevance".into()];
            s.settings.sessions.enabled = false;
        },
        meshops::gateway::Overrides::default(),
    )
    .await;
    for i in 0..20 {
        let q = meshops::proto::AskRequest {
            query: "What is a variant?".into(),
            session_id: format!("m-{i}"),
            ..Default::default()
        };
        t.client.ask(q).await.unwrap();
    }
    let live_data = t._data.path().to_path_buf();
    let probe = live_data.join("probe.jsonl");
    wait::until("the online scores of all 20 answers", wait::PATIENCE, || {
        let (probe, live_data) = (probe.clone(), live_data.clone());
        async move {
            meshops(&["live", "export", "--out", probe.to_str().unwrap()], &live_data);
            let text = std::fs::read_to_string(&probe).unwrap_or_default();
            text.lines().count() == 20 && text.lines().all(|l| l.contains("\"scores\""))
        }
    })
    .await;
    t.server.shutdown().await.unwrap();
    let compared = meshops(&["live", "compare", "--publish", &target], &live_data);
    let stdout = String::from_utf8_lossy(&compared.stdout).into_owned();
    assert!(compared.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&compared.stderr));
    let live = get(&format!("{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=meshops%2Flive"))
        .await
        .expect("the experiment `meshops/live`");
    let live_id = live["experiment"]["experiment_id"].as_str().unwrap().to_string();
    let found =
        post(&format!("{base}/api/2.0/mlflow/runs/search"), json!({"experiment_ids": [live_id]})).await;
    let runs = found["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{found}");
    let mut requests = 0.0;
    for run in runs {
        let metrics: std::collections::BTreeMap<&str, f64> = run["data"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["key"].as_str().unwrap(), m["value"].as_f64().unwrap()))
            .collect();
        assert!(metrics.contains_key("relevance") && metrics.contains_key("relevance_ci_low"), "{metrics:?}");
        requests += metrics["requests"];
    }
    assert_eq!(requests, 20.0, "every live record counted once");
}
