//! Online evaluation: a sample of live answers judged off the request path
//! by the same judges and prompts as `meshops eval run`
//! (`[online_eval]`).
//!
//! The gateway offers each answered request; one in `1 / sample_rate` is
//! taken (by a hash of its trace id, so the sample is reproducible) into a
//! bounded queue, and a single task judges them. A full queue drops the
//! sample and counts it: answers never wait for judging. Judging stops for
//! the rest of the hour once `max_cost_per_hour_usd` is spent. Each score
//! becomes the `meshops.eval.online.score` metric (by judge and variant)
//! and is stored with the request's live record (`meshops live export`
//! shows it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::EvalError;
use super::judge::{Judge, JudgeInput, applicable};
use crate::config::MeshSpec;
use crate::config::ab::OnlineEvalSettings;
use crate::live::LiveStore;

/// One answer to judge.
#[derive(Debug, Clone)]
pub struct Sample {
    pub trace_id: String,
    /// "" for the base mesh.
    pub variant: String,
    pub query: String,
    pub response: String,
    /// The cited passages, for groundedness.
    pub context: Option<String>,
}

/// The sampler and the judging task's queue.
pub struct OnlineEval {
    tx: mpsc::Sender<Sample>,
    /// Samples per million requests.
    per_million: u64,
}

impl OnlineEval {
    /// Starts the judging task when `[online_eval] sample_rate` is above 0.
    pub fn start(
        spec: &MeshSpec,
        live: Option<Arc<LiveStore>>,
    ) -> Result<Option<Arc<OnlineEval>>, EvalError> {
        let settings = spec.settings.online_eval.clone();
        if settings.sample_rate <= 0.0 {
            return Ok(None);
        }
        let profile = settings.judge_model.clone().unwrap_or_else(|| spec.settings.eval.judge_model.clone());
        let judge = Judge::build(spec, &profile, None)?;
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let per_million = (settings.sample_rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        tracing::info!(
            rate = settings.sample_rate,
            judges = ?settings.judges,
            judge_model = judge.model(),
            "online evaluation on"
        );
        tokio::spawn(judge_loop(judge, settings, rx, live));
        Ok(Some(Arc::new(OnlineEval { tx, per_million })))
    }

    /// Whether the request with this trace id is in the sample.
    pub fn sampled(&self, trace_id: &str) -> bool {
        crate::text::fnv1a64(trace_id.as_bytes()) % 1_000_000 < self.per_million
    }

    /// Queues a sample; never waits (a full queue drops it, counted).
    pub fn offer(&self, sample: Sample) {
        if self.tx.try_send(sample).is_err() {
            crate::telemetry::metrics::get().online_skipped.add(1, &[KeyValue::new("reason", "queue_full")]);
        }
    }
}

async fn judge_loop(
    judge: Judge,
    settings: OnlineEvalSettings,
    mut rx: mpsc::Receiver<Sample>,
    live: Option<Arc<LiveStore>>,
) {
    let metrics = crate::telemetry::metrics::get();
    let mut hour = (Instant::now(), 0.0_f64);
    let criteria: Vec<(String, Option<String>)> = settings
        .judges
        .iter()
        .map(|j| (j.clone(), None))
        .chain(settings.rubrics.iter().map(|(name, rubric)| (name.clone(), Some(rubric.clone()))))
        .collect();
    while let Some(sample) = rx.recv().await {
        if hour.0.elapsed() >= Duration::from_secs(3600) {
            hour = (Instant::now(), 0.0);
        }
        if settings.max_cost_per_hour_usd.is_some_and(|cap| hour.1 >= cap) {
            metrics.online_skipped.add(1, &[KeyValue::new("reason", "cost_cap")]);
            continue;
        }
        let input = JudgeInput {
            query: sample.query,
            response: sample.response,
            context: sample.context,
            ground_truth: None,
        };
        let mut scores = BTreeMap::new();
        for (name, rubric) in &criteria {
            if rubric.is_none() && !applicable(name, &input) {
                continue;
            }
            let outcome = judge.judge(name, rubric.as_deref(), &input).await;
            hour.1 += outcome.cost_usd.unwrap_or(0.0);
            let value = match outcome.result {
                Ok(verdict) => {
                    metrics.online_score.record(
                        f64::from(verdict.score),
                        &[
                            KeyValue::new("judge", name.clone()),
                            KeyValue::new("meshops.variant", sample.variant.clone()),
                        ],
                    );
                    json!({"score": verdict.score, "reason": verdict.reason})
                }
                Err(message) => {
                    metrics.online_skipped.add(1, &[KeyValue::new("reason", "judge_failed")]);
                    json!({"error": message})
                }
            };
            scores.insert(name.clone(), value);
        }
        if let Some(live) = &live {
            live.scores(&sample.trace_id, &Value::Object(scores.into_iter().collect()));
        }
    }
}
