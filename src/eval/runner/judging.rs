//! The judges of a run: which judge-scored evaluators it has (the requested
//! built-in judges and every `llm_rubric` evaluator), which of them a
//! record still needs, and the calls that judge it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::options::RunOptions;
use crate::config::MeshSpec;
use crate::eval::EvalError;
use crate::eval::dataset::Row;
use crate::eval::judge::{self, Judge, ModelEval};
use crate::eval::records::{JudgementRecord, Key, OutputRecord, judge_input, rfc3339};

/// The judges of a run and what they score.
pub struct Judging {
    /// The judge model client and its prompts.
    pub judge: Judge,
    /// Every judge-scored evaluator of the run, in order.
    pub evals: Vec<ModelEval>,
}

impl Judging {
    /// The run's judging, or `None` when it asks for no judge (no judge
    /// metric and no `llm_rubric` evaluator), so no judge model is built.
    pub fn for_run(spec: &MeshSpec, opts: &RunOptions) -> Result<Option<Judging>, EvalError> {
        let wants_judge = opts.metrics.iter().any(|m| judge::is_judge(m))
            || opts.evaluators.evaluators.iter().any(|e| e.rubric().is_some());
        if !wants_judge {
            return Ok(None);
        }
        let profile = opts.judge_model.clone().unwrap_or_else(|| spec.settings.eval.judge_model.clone());
        let judge = Judge::build(spec, &profile, opts.judge_client.clone())?;
        let mut evals: Vec<ModelEval> = Vec::new();
        for m in opts.metrics.iter().filter(|m| judge::is_judge(m)) {
            if !evals.iter().any(|e| &e.name == m) {
                evals.push(ModelEval {
                    name: m.clone(),
                    criterion: m.clone(),
                    rubric: None,
                    version: judge.version(m),
                });
            }
        }
        for c in &opts.evaluators.evaluators {
            if let Some(rubric) = c.rubric() {
                evals.push(ModelEval {
                    name: c.name.clone(),
                    criterion: c.name.clone(),
                    rubric: Some(rubric.to_string()),
                    version: format!("{}+judge {}", c.version, judge.version(judge::RUBRIC_PROMPT)),
                });
            }
        }
        Ok(Some(Judging { judge, evals }))
    }

    /// Versions of the built-in judges and the rubric prompt, for the
    /// evaluator table.
    pub fn versions(&self) -> BTreeMap<String, String> {
        judge::JUDGES
            .iter()
            .copied()
            .chain([judge::RUBRIC_PROMPT])
            .map(|name| (name.to_string(), self.judge.version(name)))
            .collect()
    }

    /// The evaluators `rec` still needs: those that apply and have no
    /// standing successful judgement in `stored`.
    pub fn needed(
        &self,
        rec: &OutputRecord,
        row: Option<&Row>,
        stored: &BTreeMap<(Key, String), JudgementRecord>,
    ) -> Vec<ModelEval> {
        let Some(input) = judge_input(rec, row) else { return Vec::new() };
        let hash = judge::input_hash(&input);
        let key = rec.key();
        self.evals
            .iter()
            .filter(|me| me.applies(&input))
            .filter(|me| {
                !stored
                    .get(&(key.clone(), me.name.clone()))
                    .is_some_and(|j| j.error.is_none() && j.matches(me, self.judge.model(), &hash))
            })
            .cloned()
            .collect()
    }

    /// Runs `evals` on `rec`, all at once.
    pub async fn run(
        &self,
        rec: &OutputRecord,
        row: Option<&Row>,
        evals: &[ModelEval],
    ) -> Vec<JudgementRecord> {
        let Some(input) = judge_input(rec, row) else { return Vec::new() };
        let hash = judge::input_hash(&input);
        let calls = evals.iter().map(|me| {
            let (input, hash) = (&input, &hash);
            async move {
                let o = self.judge.judge(&me.criterion, me.rubric.as_deref(), input).await;
                let (score, reason, error) = match o.result {
                    Ok(v) => (Some(f64::from(v.score)), Some(v.reason), None),
                    Err(e) => (None, None, Some(e)),
                };
                JudgementRecord {
                    id: rec.id.clone(),
                    repeat: rec.repeat,
                    variant: rec.variant.clone(),
                    evaluator: me.name.clone(),
                    version: me.version.clone(),
                    judge_model: self.judge.model().to_string(),
                    input_hash: hash.clone(),
                    score,
                    reason,
                    error,
                    answered_by: o.model,
                    input_tokens: o.input_tokens,
                    output_tokens: o.output_tokens,
                    cost_usd: o.cost_usd,
                    finished_at: rfc3339(SystemTime::now()),
                }
            }
        });
        futures::future::join_all(calls).await
    }
}
