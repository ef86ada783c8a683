//! `summary.json`: what a run's rows add up to, per variant and in all
//! (counts, metric means and pass rates, latency percentiles, tokens,
//! cost), built from the rows' scores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::scores::{ScoreRecord, ScoringSetup};
use crate::eval::evaluators::EvaluatorInfo;
use crate::eval::records::{JudgementRecord, Key, OutputRecord};
use crate::eval::stats;

/// Aggregate of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Mean over the `n` rows with a value (0 when `n` is 0).
    pub mean: f64,
    /// Standard deviation of the per-repeat means (0 with one repeat).
    pub std_across_repeats: f64,
    /// Passing rows over `n + failed` (an evaluator failure never passes).
    pub pass_rate: Option<f64>,
    /// Rows with a value.
    pub n: usize,
    /// Rows whose evaluator failed (no value).
    #[serde(default)]
    pub failed: usize,
}

/// p50/p95/p99 in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// The tail most users still meet.
    pub p95: f64,
    /// The far tail.
    pub p99: f64,
    /// Samples behind the percentiles.
    pub n: usize,
}

/// Row counts; `ok + failed + not_run == total`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Planned rows (dataset rows × repeats × variants).
    pub total: usize,
    /// Rows whose latest attempt answered.
    pub ok: usize,
    /// Rows whose latest attempt failed; they stay in every denominator.
    pub failed: usize,
    /// Done by an earlier invocation and not run again.
    pub skipped: usize,
    /// Never attempted (the run was cut short).
    pub not_run: usize,
}

/// Cost of the rows; unknown cost is never counted as 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Sum over rows whose cost is known.
    pub known_usd: f64,
    /// Rows whose cost is known.
    pub rows_with_known_cost: usize,
    /// Rows (failed ones included) whose cost is unknown.
    pub rows_with_unknown_cost: usize,
}

/// The summary of one variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    /// The variant's rows by outcome.
    pub counts: Counts,
    /// Every metric scored on the variant's rows.
    pub metrics: BTreeMap<String, MetricSummary>,
    /// End-to-end latency of the recorded attempts.
    pub latency_ms: Latency,
    /// Step latency per agent, to see where the time goes.
    pub agent_latency_ms: BTreeMap<String, Latency>,
    /// Tokens of the app's model calls (judges apart).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The app's cost (judges apart).
    pub cost: Cost,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The harness that wrote the summary.
    pub meshops_version: String,
    /// The dataset file as given.
    pub dataset: String,
    /// Hash of the dataset's bytes: two runs on different data differ here.
    pub dataset_hash: String,
    /// Hash of what decides the answers (see `runner::config_hash`).
    pub config_hash: String,
    /// The deployed gateway driven with `--target`; `None` in process.
    pub target: Option<String>,
    /// When this invocation started and finished (RFC 3339, UTC).
    pub started_at: String,
    pub finished_at: String,
    /// True when the cost cap stopped scheduling before every row ran.
    pub cut_short: bool,
    /// The cap this invocation ran under.
    pub max_cost_usd: Option<f64>,
    /// All variants' rows together.
    pub counts: Counts,
    /// All variants' app cost together (judges apart).
    pub cost: Cost,
    /// Requested metrics that `metrics::compute` does not know (yet).
    pub metrics_unavailable: Vec<String>,
    /// Each variant's own summary, by name.
    pub variants: BTreeMap<String, VariantSummary>,
    /// Identifies this run's results (dataset, config and a hash of
    /// `scores.jsonl`); the same results always get the same id.
    #[serde(default)]
    pub run_id: String,
    /// Every metric's kind, version, scale and threshold.
    #[serde(default)]
    pub evaluators: BTreeMap<String, EvaluatorInfo>,
    /// The judge's model name (`offline-heuristic-judge` for the offline
    /// judge), when the run has judges.
    #[serde(default)]
    pub judge_model: Option<String>,
    /// What the judges did and cost, when the run has judges.
    #[serde(default)]
    pub judge: Option<JudgeSummary>,
    /// Canonical field ← dataset field renames applied to the dataset.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// The mesh's agents as configured for the run (in-process runs; a
    /// `--target` run leaves it empty, the deployed mesh is its own).
    #[serde(default)]
    pub agents: Vec<AgentSummary>,
    /// How the run ran (concurrency, repeats, machine, build): what moves
    /// its latency without changing its answers, so `eval compare` can warn
    /// when two runs differ there. `None` in runs written before it was
    /// recorded.
    #[serde(default)]
    pub setup: Option<RunSetup>,
}

/// The settings of a run that move its figures (latency above all) but not
/// its answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSetup {
    /// Rows in flight at once: more rows queue behind each other.
    pub concurrency: usize,
    /// Times each row ran: later repeats may meet warm caches.
    pub repeats: u32,
    /// The machine's host name, so runs from a laptop and from CI are told
    /// apart.
    pub host: String,
    /// Cores the process could use.
    pub cpus: usize,
    /// Operating system and architecture (`linux-x86_64`).
    pub platform: String,
    /// `release` or `debug`: an unoptimised harness is several times
    /// slower.
    pub build: String,
}

impl RunSetup {
    /// This machine and build, with the run's concurrency and repeats.
    pub fn here(concurrency: usize, repeats: u32) -> Self {
        Self {
            concurrency,
            repeats,
            host: host_name(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            build: if cfg!(debug_assertions) { "debug" } else { "release" }.to_string(),
        }
    }
}

/// The host name from the kernel (Linux) or the usual variables; empty
/// when none says.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// One agent of the mesh a run drove: what it is and where it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub name: String,
    pub kind: String,
    /// The prompt file, relative to the project root; empty for none.
    pub prompt: String,
    /// The model profile and its model.
    pub model_profile: String,
    pub model: String,
    /// The flows that run it (`question`, `debate:question`).
    pub flows: Vec<String>,
}

impl AgentSummary {
    /// Every agent of `spec`, by name.
    pub fn of(spec: &crate::config::MeshSpec) -> Vec<AgentSummary> {
        spec.agents
            .values()
            .map(|a| {
                let profile = a.base.model.clone().unwrap_or_default();
                AgentSummary {
                    name: a.name.clone(),
                    kind: a.kind.as_str().to_string(),
                    prompt: a
                        .base
                        .prompt_file
                        .as_ref()
                        .map(|p| p.strip_prefix(&spec.root).unwrap_or(p).display().to_string())
                        .unwrap_or_default(),
                    model: spec.model(&profile).map(|m| m.model.clone()).unwrap_or_default(),
                    model_profile: profile,
                    flows: spec.flows_using(&a.name),
                }
            })
            .collect()
    }
}

/// What the judges did, over the planned rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeSummary {
    /// The judge's model profile.
    pub profile: String,
    /// The judge's model name.
    pub model: String,
    /// Judgements behind the scores (latest per row and evaluator).
    pub judgements: usize,
    /// Of those, the ones without a score (garbage or a failed call).
    pub failures: usize,
    /// Tokens of the judge calls behind the scores.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Judge cost; counted toward `--max-cost-usd` with the app's.
    pub cost: Cost,
}

fn latency(xs: &[f64]) -> Latency {
    Latency {
        p50: stats::percentile(xs, 50.0).unwrap_or(0.0),
        p95: stats::percentile(xs, 95.0).unwrap_or(0.0),
        p99: stats::percentile(xs, 99.0).unwrap_or(0.0),
        n: xs.len(),
    }
}

/// Aggregates scores (and records, for per-agent latency) of one variant.
pub fn summarize_variant(
    scores: &[&ScoreRecord],
    records: &[&OutputRecord],
    not_run: usize,
    infos: &BTreeMap<String, EvaluatorInfo>,
) -> VariantSummary {
    let mut s = VariantSummary::default();
    s.counts.total = scores.len() + not_run;
    s.counts.ok = scores.iter().filter(|r| r.ok).count();
    s.counts.failed = scores.len() - s.counts.ok;
    s.counts.not_run = not_run;
    let mut names: Vec<&String> =
        scores.iter().flat_map(|r| r.metrics.keys().chain(r.failures.keys())).collect();
    names.sort();
    names.dedup();
    for name in names {
        let vals: Vec<(u32, f64)> =
            scores.iter().filter_map(|r| r.metrics.get(name).map(|v| (r.repeat, *v))).collect();
        let failed = scores.iter().filter(|r| r.failures.contains_key(name)).count();
        let all: Vec<f64> = vals.iter().map(|(_, v)| *v).collect();
        let mut by_repeat: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for (rep, v) in &vals {
            by_repeat.entry(*rep).or_default().push(*v);
        }
        let repeat_means: Vec<f64> = by_repeat.values().filter_map(|v| stats::mean(v)).collect();
        let pass_rate = infos.get(name).and_then(|i| i.threshold).map(|_| {
            let passes = scores.iter().filter(|r| r.passed.get(name) == Some(&true)).count();
            passes as f64 / (all.len() + failed).max(1) as f64
        });
        s.metrics.insert(
            name.clone(),
            MetricSummary {
                mean: stats::mean(&all).unwrap_or(0.0),
                std_across_repeats: stats::std_dev(&repeat_means).unwrap_or(0.0),
                pass_rate,
                n: all.len(),
                failed,
            },
        );
    }
    let lat: Vec<f64> = records.iter().map(|r| r.latency_ms).collect();
    s.latency_ms = latency(&lat);
    let mut per_agent: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in records {
        for st in &r.steps {
            per_agent.entry(st.agent.clone()).or_default().push(st.latency_ms);
        }
    }
    s.agent_latency_ms = per_agent.into_iter().map(|(a, v)| (a, latency(&v))).collect();
    for r in records {
        match r.usage.as_ref() {
            Some(u) => {
                s.input_tokens += u.input_tokens;
                s.output_tokens += u.output_tokens;
                match u.cost_usd {
                    Some(c) => {
                        s.cost.known_usd += c;
                        s.cost.rows_with_known_cost += 1;
                    }
                    None => s.cost.rows_with_unknown_cost += 1,
                }
            }
            None => s.cost.rows_with_unknown_cost += 1,
        }
    }
    s
}

/// What the judges did over the planned rows: the judgements behind the
/// scores (of the evaluators' current versions and the run's judge model,
/// on rows that answered). `None` when the run has no judge.
pub fn judge_summary(
    setup: &ScoringSetup,
    planned: &[Key],
    latest: &BTreeMap<Key, OutputRecord>,
    judgements: &BTreeMap<(Key, String), JudgementRecord>,
) -> Option<JudgeSummary> {
    let model = setup.judge_model.as_ref()?;
    let mut js = JudgeSummary {
        profile: setup.judge_profile.clone().unwrap_or_default(),
        model: model.clone(),
        ..JudgeSummary::default()
    };
    for key in planned {
        let Some(rec) = latest.get(key) else { continue };
        for me in &setup.model_evals {
            let Some(j) = judgements.get(&(key.clone(), me.name.clone())) else { continue };
            if !rec.ok() || j.version != me.version || Some(&j.judge_model) != setup.judge_model.as_ref() {
                continue;
            }
            js.judgements += 1;
            js.failures += usize::from(j.score.is_none());
            js.input_tokens += j.input_tokens;
            js.output_tokens += j.output_tokens;
            match j.cost_usd {
                Some(c) => {
                    js.cost.known_usd += c;
                    js.cost.rows_with_known_cost += 1;
                }
                None => js.cost.rows_with_unknown_cost += 1,
            }
        }
    }
    Some(js)
}

/// Row counts and app cost over all variants; `skipped` rows were done by
/// an earlier invocation.
pub fn totals(variants: &BTreeMap<String, VariantSummary>, skipped: usize) -> (Counts, Cost) {
    let mut counts = Counts { skipped, ..Counts::default() };
    let mut cost = Cost::default();
    for v in variants.values() {
        counts.total += v.counts.total;
        counts.ok += v.counts.ok;
        counts.failed += v.counts.failed;
        counts.not_run += v.counts.not_run;
        cost.known_usd += v.cost.known_usd;
        cost.rows_with_known_cost += v.cost.rows_with_known_cost;
        cost.rows_with_unknown_cost += v.cost.rows_with_unknown_cost;
    }
    (counts, cost)
}
