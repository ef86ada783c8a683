//! `scores.jsonl`: every row scored by every metric of the run (the
//! harness's own, the standard ones, custom rules, and the judges' stored
//! verdicts), with pass/fail against each metric's threshold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::eval::EvalError;
use crate::eval::dataset::Row;
use crate::eval::evaluators::{self, EvaluatorInfo, EvaluatorSet, OWN_METRICS};
use crate::eval::judge::{self, ModelEval};
use crate::eval::metrics::{ScoreInput, compute};
use crate::eval::records::{JudgementRecord, Key, OutputRecord, judge_input};

/// One line of `scores.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    /// The row key's id, repeat and variant (`eval compare` pairs rows by
    /// id and repeat).
    pub id: String,
    pub repeat: u32,
    pub variant: String,
    /// Whether the row's latest attempt answered.
    pub ok: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// Every value scored on the row, by metric name.
    pub metrics: BTreeMap<String, f64>,
    /// Pass/fail of each metric that has a threshold (see `summary.json`'s
    /// `evaluators`).
    #[serde(default)]
    pub passed: BTreeMap<String, bool>,
    /// Evaluators that could not score this row (a judge that answered
    /// garbage or failed), with why. Such a metric has no value here and
    /// counts as failed, never as 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, String>,
    /// The judges' and custom evaluators' reasons.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
}

/// What a run's scoring needs besides the records: the runner fills it,
/// the report scores with it.
pub struct ScoringSetup {
    /// The requested metrics (standard ones, judges, harness metrics).
    pub metrics: Vec<String>,
    /// Custom evaluators and threshold overrides.
    pub evaluators: EvaluatorSet,
    /// The judge-scored evaluators of the run.
    pub model_evals: Vec<ModelEval>,
    /// The judge's model name and profile, when the run has judges.
    pub judge_model: Option<String>,
    pub judge_profile: Option<String>,
    /// Versions of the built-in judges and the rubric prompt.
    pub judge_versions: BTreeMap<String, String>,
}

/// The evaluator table of a run: every metric it may write, with kind,
/// version, scale and threshold.
pub fn evaluator_infos(setup: &ScoringSetup) -> BTreeMap<String, EvaluatorInfo> {
    let version = |name: &str| setup.judge_versions.get(name).cloned().unwrap_or_else(|| "1".into());
    let mut names: Vec<String> = OWN_METRICS.iter().map(|s| s.to_string()).collect();
    names.extend(setup.metrics.iter().cloned());
    names.extend(setup.evaluators.evaluators.iter().map(|e| e.name.clone()));
    names
        .into_iter()
        .filter_map(|n| evaluators::info(&n, &setup.evaluators, &version).map(|i| (n, i)))
        .collect()
}

/// Scores one record against its dataset row. Failed rows are scored with
/// an empty answer and no retrieved docs, so they count as misses in every
/// quality metric instead of leaving the denominator; judges give a failed
/// row their scale's minimum without a call, custom rules give it 0. A judge whose answer was
/// garbage leaves a failure, not a value.
pub fn score(
    rec: &OutputRecord,
    row: Option<&Row>,
    setup: &ScoringSetup,
    infos: &BTreeMap<String, EvaluatorInfo>,
    judgements: &BTreeMap<(Key, String), JudgementRecord>,
    unavailable: &mut Vec<String>,
) -> ScoreRecord {
    let mut m = BTreeMap::new();
    let mut failures = BTreeMap::new();
    let mut reasons = BTreeMap::new();
    m.insert("ok".to_string(), if rec.ok() { 1.0 } else { 0.0 });
    m.insert("latency_ms".to_string(), rec.latency_ms);
    if let Some(u) = &rec.usage {
        if let Some(c) = u.cost_usd {
            m.insert("cost_usd".to_string(), c);
        }
        m.insert("input_tokens".to_string(), u.input_tokens as f64);
        m.insert("output_tokens".to_string(), u.output_tokens as f64);
    }
    if let Some(want) = row.and_then(|r| r.extra.get("intent")).and_then(|v| v.as_str()) {
        let hit = rec.intent.as_deref() == Some(want);
        m.insert("intent_match".to_string(), if hit { 1.0 } else { 0.0 });
    }
    let response = rec.answer.clone().unwrap_or_default();
    let input = ScoreInput {
        query: Some(rec.query.clone()),
        response: Some(response.clone()),
        ground_truth: row.and_then(|r| r.ground_truth.clone()),
        context: row.and_then(|r| r.context.clone()),
        retrieved_doc_ids: Some(rec.retrieved_doc_ids.clone()),
        relevant_doc_ids: row.and_then(|r| r.relevant_doc_ids.clone()),
    };
    for name in &setup.metrics {
        // The harness's own metrics are always there; asking for them is
        // fine. Judges are scored below.
        if unavailable.contains(name)
            || OWN_METRICS.contains(&name.as_str())
            || judge::is_judge(name)
            || setup.evaluators.get(name).is_some()
        {
            continue;
        }
        match compute(name, &input) {
            Ok(Some(v)) if v.is_finite() => {
                m.insert(name.clone(), v);
            }
            Ok(_) => {}
            Err(EvalError::UnknownMetric { .. }) => unavailable.push(name.clone()),
            Err(e) => tracing::warn!(metric = %name, row = %rec.id, error = %e, "metric failed"),
        }
    }
    for c in &setup.evaluators.evaluators {
        if c.rubric().is_some() {
            continue;
        }
        // A failed row has no answer: it fails every rule, even one that
        // an empty answer would pass (`must_match = false`).
        let scored = if rec.ok() { c.score(&response) } else { Some((0.0, "the row failed".to_string())) };
        if let Some((v, reason)) = scored {
            m.insert(c.name.clone(), v);
            reasons.insert(c.name.clone(), reason);
        }
    }
    judge_scores(rec, row, setup, judgements, &mut m, &mut failures, &mut reasons);
    let passed = m
        .iter()
        .filter_map(|(k, v)| infos.get(k).and_then(|i| i.passes(*v)).map(|p| (k.clone(), p)))
        .collect();
    ScoreRecord {
        id: rec.id.clone(),
        repeat: rec.repeat,
        variant: rec.variant.clone(),
        ok: rec.ok(),
        error: rec.error.clone(),
        metrics: m,
        passed,
        failures,
        reasons,
    }
}

/// The judges' scores of one record, from the stored judgements: a failed
/// row gets each applicable judge's scale minimum without a call; a
/// judgement that gave no score, or none at all (the cost cap stopped the
/// run), leaves a failure.
fn judge_scores(
    rec: &OutputRecord,
    row: Option<&Row>,
    setup: &ScoringSetup,
    judgements: &BTreeMap<(Key, String), JudgementRecord>,
    m: &mut BTreeMap<String, f64>,
    failures: &mut BTreeMap<String, String>,
    reasons: &mut BTreeMap<String, String>,
) {
    let judge_in = judge_input(rec, row);
    // What a failed row would have given the judges, to know which apply.
    let as_failed = judge::JudgeInput {
        query: rec.query.clone(),
        response: String::new(),
        context: row.and_then(|r| r.context.clone()),
        ground_truth: row.and_then(|r| r.ground_truth.clone()),
    };
    for me in &setup.model_evals {
        let Some(input) = &judge_in else {
            if me.applies(&as_failed) {
                m.insert(me.name.clone(), judge::JUDGE_SCALE.0);
                reasons.insert(
                    me.name.clone(),
                    "the row failed: scored as the scale's minimum, no judge call".into(),
                );
            }
            continue;
        };
        if !me.applies(input) {
            continue;
        }
        let hash = judge::input_hash(input);
        let model = setup.judge_model.as_deref().unwrap_or_default();
        match judgements.get(&(rec.key(), me.name.clone())).filter(|j| j.matches(me, model, &hash)) {
            Some(j) => match (j.score, &j.error) {
                (Some(v), None) => {
                    m.insert(me.name.clone(), v);
                    reasons.insert(me.name.clone(), j.reason.clone().unwrap_or_default());
                }
                (_, e) => {
                    failures.insert(
                        me.name.clone(),
                        e.clone().unwrap_or_else(|| "the judge gave no score".into()),
                    );
                }
            },
            None => {
                failures.insert(
                    me.name.clone(),
                    "not judged: the run stopped at the cost cap before the judge ran".into(),
                );
            }
        }
    }
}
