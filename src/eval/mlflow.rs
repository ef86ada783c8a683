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

/// Logs the run in `out` (an `eval run --out` folder) to the MLflow server
/// of `target` (`mlflow+http://HOST:PORT`).
pub async fn publish(target: &str, out: &Path) -> Result<Published, EvalError> {
    let base = target.strip_prefix(PREFIX).unwrap_or(target).trim_end_matches('/').to_string();
    let summary_path = out.join("summary.json");
    let text = std::fs::read_to_string(&summary_path)
        .map_err(|e| EvalError::Run(format!("{}: {e}", summary_path.display())))?;
    let summary: Summary = serde_json::from_str(&text)
        .map_err(|e| EvalError::Run(format!("{}: {e}", summary_path.display())))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| EvalError::Run(format!("MLflow client: {e}")))?;
    let client = Client { base, http };
    let stem =
        Path::new(&summary.dataset).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let experiment_id = client.experiment(&format!("meshops/{stem}")).await?;
    let mut runs = Vec::new();
    for (variant, v) in &summary.variants {
        let shown = if variant.is_empty() { "base" } else { variant.as_str() };
        let filter = format!(
            "tags.`meshops.run_id` = '{}' and tags.`meshops.variant` = '{}'",
            summary.run_id.replace('\'', ""),
            shown.replace('\'', "")
        );
        let found = client
            .call(
                reqwest::Method::POST,
                "runs/search",
                Some(json!({"experiment_ids": [experiment_id], "filter": filter, "max_results": 1})),
            )
            .await?;
        if let Some(id) = found["runs"][0]["info"]["run_id"].as_str() {
            runs.push((shown.to_string(), id.to_string(), false));
            continue;
        }
        let created = client
            .call(
                reqwest::Method::POST,
                "runs/create",
                Some(json!({
                    "experiment_id": experiment_id,
                    "run_name": shown,
                    "start_time": now_ms(),
                    "tags": [
                        {"key": "meshops.run_id", "value": summary.run_id},
                        {"key": "meshops.variant", "value": shown},
                    ],
                })),
            )
            .await?;
        let run_id = created["run"]["info"]["run_id"]
            .as_str()
            .ok_or_else(|| EvalError::Run("MLflow: runs/create returned no run id".into()))?
            .to_string();
        let params = [
            ("variant", shown.to_string()),
            ("config_hash", summary.config_hash.clone()),
            ("dataset_hash", summary.dataset_hash.clone()),
            ("dataset", summary.dataset.clone()),
            ("judge_model", summary.judge_model.clone().unwrap_or_default()),
            ("meshops_version", summary.meshops_version.clone()),
            ("run_id", summary.run_id.clone()),
        ];
        let ts = now_ms();
        let mut metrics: Vec<Value> = v
            .metrics
            .iter()
            .map(|(name, m)| json!({"key": metric_key(name), "value": m.mean, "timestamp": ts, "step": 0}))
            .collect();
        for (key, value) in [
            ("latency_p50_ms", v.latency_ms.p50),
            ("latency_p95_ms", v.latency_ms.p95),
            ("latency_p99_ms", v.latency_ms.p99),
            ("cost_usd", v.cost.known_usd),
            ("input_tokens", v.input_tokens as f64),
            ("output_tokens", v.output_tokens as f64),
            ("rows_ok", v.counts.ok as f64),
            ("rows_failed", v.counts.failed as f64),
        ] {
            metrics.push(json!({"key": key, "value": value, "timestamp": ts, "step": 0}));
        }
        let params: Vec<Value> = params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        client
            .call(
                reqwest::Method::POST,
                "runs/log-batch",
                Some(json!({"run_id": run_id, "metrics": metrics, "params": params})),
            )
            .await?;
        for file in ARTIFACTS {
            let path = out.join(file);
            let Ok(bytes) = std::fs::read(&path) else { continue };
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
        runs.push((shown.to_string(), run_id, true));
    }
    Ok(Published { experiment_id, runs })
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
