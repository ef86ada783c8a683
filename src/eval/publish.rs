//! `--publish DIR`: copies a finished run into a shared results folder as
//! `DIR/<run id>/` and appends one line per variant to `DIR/index.jsonl`
//! (run id, publish time, variant, dataset hash, config hash, judge model,
//! counts, headline metrics), so PR, CI and CD builds can look runs up.
//!
//! Publishing is idempotent: the run id comes from the results themselves
//! (`summary.json`'s `run_id`), and a run already in the index is neither
//! copied nor indexed again. The copy goes to a temporary folder that is
//! renamed into place, so readers never see half a run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::EvalError;
use super::report::Summary;

/// Files of a run that are published (those that exist).
const FILES: &[&str] = &[
    "summary.json",
    "scores.jsonl",
    "outputs.jsonl",
    "judgements.jsonl",
    "report.md",
    "report.html",
    "comparison.md",
];

/// Metrics copied into the index when a variant has them.
const HEADLINE: &[&str] = &[
    "ok",
    "intent_match",
    "exact_match",
    "f1",
    "rougeL",
    "hit_rate@5",
    "mrr@5",
    "groundedness",
    "relevance",
    "similarity",
];

/// One line of `index.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub run_id: String,
    pub published_at: String,
    pub finished_at: String,
    pub variant: String,
    pub dataset: String,
    pub dataset_hash: String,
    pub config_hash: String,
    pub judge_model: Option<String>,
    pub total: usize,
    pub ok: usize,
    pub failed: usize,
    pub not_run: usize,
    pub cut_short: bool,
    /// Means of the headline metrics, plus `latency_p95_ms` and
    /// `cost_usd` (known cost).
    pub headline: BTreeMap<String, f64>,
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub run_id: String,
    pub dir: PathBuf,
    /// False when the run was already published.
    pub added: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io { path: path.display().to_string(), source }
}

/// Reads `DIR/index.jsonl` (empty when absent).
pub fn read_index(dir: &Path) -> Result<Vec<IndexEntry>, EvalError> {
    let path = dir.join("index.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&path)(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| EvalError::Input {
                path: format!("{}:{}", path.display(), i + 1),
                message: e.to_string(),
            })
        })
        .collect()
}

/// The folder of run `id` in results folder `dir`, when the index has it.
pub fn resolve(dir: &Path, id: &str) -> Result<Option<PathBuf>, EvalError> {
    Ok(read_index(dir)?.iter().any(|e| e.run_id == id).then(|| dir.join(id)))
}

/// Publishes the run in `run_dir` (which must hold `summary.json`) into
/// `dir`.
pub fn publish(run_dir: &Path, dir: &Path) -> Result<Published, EvalError> {
    let summary_path = run_dir.join("summary.json");
    let text = std::fs::read_to_string(&summary_path).map_err(io(&summary_path))?;
    let s: Summary = serde_json::from_str(&text)
        .map_err(|e| EvalError::Input { path: summary_path.display().to_string(), message: e.to_string() })?;
    if s.run_id.is_empty() {
        return Err(EvalError::Input {
            path: summary_path.display().to_string(),
            message: "no `run_id`: rerun `meshops eval run` with this version to rewrite the summary".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let target = dir.join(&s.run_id);
    if read_index(dir)?.iter().any(|e| e.run_id == s.run_id) && target.is_dir() {
        return Ok(Published { run_id: s.run_id, dir: target, added: false });
    }
    if !target.is_dir() {
        let tmp = dir.join(format!(".{}.tmp-{}", s.run_id, std::process::id()));
        let copy = || -> Result<(), EvalError> {
            std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
            for f in FILES {
                let from = run_dir.join(f);
                if from.is_file() {
                    std::fs::copy(&from, tmp.join(f)).map_err(io(&from))?;
                }
            }
            std::fs::rename(&tmp, &target).map_err(io(&target))
        };
        if let Err(e) = copy() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    }
    let now = super::records::rfc3339(std::time::SystemTime::now());
    let mut lines = String::new();
    for (variant, v) in &s.variants {
        let mut headline: BTreeMap<String, f64> = HEADLINE
            .iter()
            .filter_map(|m| v.metrics.get(*m).filter(|x| x.n > 0).map(|x| (m.to_string(), x.mean)))
            .collect();
        headline.insert("latency_p95_ms".into(), v.latency_ms.p95);
        headline.insert("cost_usd".into(), v.cost.known_usd);
        let entry = IndexEntry {
            run_id: s.run_id.clone(),
            published_at: now.clone(),
            finished_at: s.finished_at.clone(),
            variant: variant.clone(),
            dataset: s.dataset.clone(),
            dataset_hash: s.dataset_hash.clone(),
            config_hash: s.config_hash.clone(),
            judge_model: s.judge_model.clone(),
            total: v.counts.total,
            ok: v.counts.ok,
            failed: v.counts.failed,
            not_run: v.counts.not_run,
            cut_short: s.cut_short,
            headline,
        };
        lines.push_str(&serde_json::to_string(&entry).map_err(EvalError::Encode)?);
        lines.push('\n');
    }
    let index = dir.join("index.jsonl");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&index).map_err(io(&index))?;
    // One write of whole lines, so concurrent publishers do not interleave
    // within a line.
    f.write_all(lines.as_bytes()).map_err(io(&index))?;
    Ok(Published { run_id: s.run_id, dir: target, added: true })
}
