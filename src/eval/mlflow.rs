//! `eval run --publish mlflow+http://HOST:PORT`: a finished run logged to an
//! MLflow tracking server over its REST API (`/api/2.0/mlflow/…`): one
//! experiment per dataset (`meshops/<dataset file stem>`), one run per
//! variant with its params (config hash, dataset hash, judge model,
//! variant, …), metrics (each evaluator's mean, latency percentiles, cost,
//! tokens, row counts) and artifacts (`summary.json`, `report.html`,
//! `scores.jsonl`, uploaded through the server's artifact proxy).
//!
//! Publishing again is idempotent: a variant already logged with the same
//! results (`meshops.run_id` and `meshops.variant` tags) is found and not
//! logged twice.

use std::path::Path;

use serde_json::{Value, json};

use super::EvalError;
use super::report::Summary;

/// The scheme prefix that selects MLflow for `--publish`.
pub const PREFIX: &str = "mlflow+";

/// Whether a `--publish` target is an MLflow server.
pub fn is_mlflow(target: &str) -> bool {
    target.starts_with("mlflow+http://") || target.starts_with("mlflow+https://")
}

/// Artifacts uploaded with each run (those that exist).
const ARTIFACTS: &[&str] = &["summary.json", "report.html", "scores.jsonl"];

/// What was published.
#[derive(Debug, Clone)]
pub struct Published {
    pub experiment_id: String,
    /// (variant, MLflow run id, whether it was logged now).
    pub runs: Vec<(String, String, bool)>,
}

/// An MLflow metric key: letters, digits and `_ - . / space`; anything else
/// becomes `_` (`hit_rate@5` → `hit_rate_5`).
pub fn metric_key(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || "_-./ ".contains(c) { c } else { '_' }).collect()
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, EvalError> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| EvalError::Run(format!("MLflow {url}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| EvalError::Run(format!("MLflow {url}: {e}")))?;
        if !status.is_success() {
            return Err(EvalError::Run(format!(
                "MLflow {path}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        serde_json::from_str(if text.trim().is_empty() { "{}" } else { &text })
            .map_err(|e| EvalError::Run(format!("MLflow {path}: not JSON: {e}")))
    }

    async fn experiment(&self, name: &str) -> Result<String, EvalError> {
        let path = format!("experiments/get-by-name?experiment_name={}", urlencode(name));
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(v) => v["experiment"]["experiment_id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| EvalError::Run(format!("MLflow: experiment `{name}` without an id"))),
            Err(EvalError::Run(m)) if m.contains("RESOURCE_DOES_NOT_EXIST") || m.contains("HTTP 404") => {
                let v = self
                    .call(reqwest::Method::POST, "experiments/create", Some(json!({"name": name})))
                    .await?;
                v["experiment_id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| EvalError::Run("MLflow: experiments/create returned no id".into()))
            }
            Err(e) => Err(e),
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One MLflow run to log: its name (the variant), the key that makes
/// logging it again a no-op, params, metrics and artifacts.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub name: String,
    pub key: String,
    pub params: Vec<(String, String)>,
    pub metrics: Vec<(String, f64)>,
    /// File name → bytes.
    pub artifacts: Vec<(String, Vec<u8>)>,
}

/// Logs `runs` into the experiment `experiment` (created when missing) of
/// the MLflow server of `target` (`mlflow+http://HOST:PORT`). A run whose
/// name and key were logged before is found and left alone.
pub async fn log(target: &str, experiment: &str, runs: Vec<RunSpec>) -> Result<Published, EvalError> {
    let base = target.strip_prefix(PREFIX).unwrap_or(target).trim_end_matches('/').to_string();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| EvalError::Run(format!("MLflow client: {e}")))?;
    let client = Client { base, http };
    let experiment_id = client.experiment(experiment).await?;
    let mut logged = Vec::new();
    for run in runs {
        let filter = format!(
            "tags.`meshops.run_id` = '{}' and tags.`meshops.variant` = '{}'",
            run.key.replace('\'', ""),
            run.name.replace('\'', "")
        );
        let found = client
            .call(
                reqwest::Method::POST,
                "runs/search",
                Some(json!({"experiment_ids": [experiment_id], "filter": filter, "max_results": 1})),
            )
            .await?;
        if let Some(id) = found["runs"][0]["info"]["run_id"].as_str() {
            logged.push((run.name, id.to_string(), false));
            continue;
        }
        let created = client
            .call(
                reqwest::Method::POST,
                "runs/create",
                Some(json!({
                    "experiment_id": experiment_id,
                    "run_name": run.name,
                    "start_time": now_ms(),
                    "tags": [
                        {"key": "meshops.run_id", "value": run.key},
                        {"key": "meshops.variant", "value": run.name},
                    ],
                })),
            )
            .await?;
        let run_id = created["run"]["info"]["run_id"]
            .as_str()
            .ok_or_else(|| EvalError::Run("MLflow: runs/create returned no run id".into()))?
            .to_string();
        let ts = now_ms();
        let metrics: Vec<Value> = run
            .metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({"key": metric_key(k), "value": v, "timestamp": ts, "step": 0}))
            .collect();
        let params: Vec<Value> = run.params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        client
            .call(
                reqwest::Method::POST,
                "runs/log-batch",
                Some(json!({"run_id": run_id, "metrics": metrics, "params": params})),
            )
            .await?;
        for (file, bytes) in run.artifacts {
            let url = format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/{file}",
                client.base
            );
            let resp = client
                .http
                .put(&url)
                .body(bytes)
                .send()
                .await
                .map_err(|e| EvalError::Run(format!("MLflow artifact {file}: {e}")))?;
            if !resp.status().is_success() {
                return Err(EvalError::Run(format!(
                    "MLflow artifact {file}: HTTP {} (is the server serving artifacts? `mlflow server` does by default)",
                    resp.status()
                )));
            }
        }
        client
            .call(
                reqwest::Method::POST,
                "runs/update",
                Some(json!({"run_id": run_id, "status": "FINISHED", "end_time": now_ms()})),
            )
            .await?;
        logged.push((run.name, run_id, true));
    }
    Ok(Published { experiment_id, runs: logged })
}

/// Logs the run in `out` (an `eval run --out` folder) to the MLflow server
/// of `target` (`mlflow+http://HOST:PORT`).
pub async fn publish(target: &str, out: &Path) -> Result<Published, EvalError> {
    let summary_path = out.join("summary.json");
    let text = std::fs::read_to_string(&summary_path)
        .map_err(|e| EvalError::Run(format!("{}: {e}", summary_path.display())))?;
    let summary: Summary = serde_json::from_str(&text)
        .map_err(|e| EvalError::Run(format!("{}: {e}", summary_path.display())))?;
    let artifacts: Vec<(String, Vec<u8>)> = ARTIFACTS
        .iter()
        .filter_map(|f| std::fs::read(out.join(f)).ok().map(|b| (f.to_string(), b)))
        .collect();
    let runs = summary
        .variants
        .iter()
        .map(|(variant, v)| {
            let name = if variant.is_empty() { "base" } else { variant.as_str() }.to_string();
            let mut metrics: Vec<(String, f64)> =
                v.metrics.iter().map(|(k, m)| (k.clone(), m.mean)).collect();
            metrics.extend([
                ("latency_p50_ms".to_string(), v.latency_ms.p50),
                ("latency_p95_ms".into(), v.latency_ms.p95),
                ("latency_p99_ms".into(), v.latency_ms.p99),
                ("cost_usd".into(), v.cost.known_usd),
                ("input_tokens".into(), v.input_tokens as f64),
                ("output_tokens".into(), v.output_tokens as f64),
                ("rows_ok".into(), v.counts.ok as f64),
                ("rows_failed".into(), v.counts.failed as f64),
            ]);
            RunSpec {
                params: vec![
                    ("variant".into(), name.clone()),
                    ("config_hash".into(), summary.config_hash.clone()),
                    ("dataset_hash".into(), summary.dataset_hash.clone()),
                    ("dataset".into(), summary.dataset.clone()),
                    ("judge_model".into(), summary.judge_model.clone().unwrap_or_default()),
                    ("meshops_version".into(), summary.meshops_version.clone()),
                    ("run_id".into(), summary.run_id.clone()),
                ],
                name,
                key: summary.run_id.clone(),
                metrics,
                artifacts: artifacts.clone(),
            }
        })
        .collect();
    let stem =
        Path::new(&summary.dataset).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    log(target, &format!("meshops/{stem}"), runs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_keys() {
        assert!(
            is_mlflow("mlflow+http://127.0.0.1:5000") && !is_mlflow("results/") && !is_mlflow("http://x")
        );
        assert_eq!(metric_key("hit_rate@5"), "hit_rate_5");
        assert_eq!(metric_key("rougeL"), "rougeL");
    }
}
