//! Resuming: what a run folder already holds for this configuration, and
//! what is left to do. A row is keyed by (id, repeat, variant) within a
//! configuration hash; the latest record per key wins. Keys whose latest
//! record succeeded on the same query are done; failed ones run again;
//! done rows whose judges changed (added, a prompt edited, an earlier
//! failure) are judged again without being rerun. What earlier invocations
//! spent counts toward the cost cap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::judging::Judging;
use crate::config::MeshSpec;
use crate::eval::EvalError;
use crate::eval::dataset::Row;
use crate::eval::judge::ModelEval;
use crate::eval::records::{JudgementRecord, Key, OutputRecord, read_judgements, read_outputs};

/// A stable hash of what decides the mesh's answers: the settings (minus
/// fields that only move where things run or inject faults), every agent
/// file and every prompt body. Hex of FNV-1a 64.
pub fn config_hash(spec: &MeshSpec) -> String {
    let mut settings = spec.settings.clone();
    // The listen address, timeouts and data dir say where and how long, not
    // what is answered; latency and failure injection are test knobs, and a
    // rerun without them must resume (and retry) the same keys.
    settings.gateway = Default::default();
    // The judge scores answers; it does not decide them.
    settings.eval = Default::default();
    settings.retrieval.data_dir = PathBuf::new();
    for m in settings.models.values_mut() {
        m.latency_ms = 0;
        m.failure_rate = 0.0;
    }
    let mut bytes = serde_json::to_vec(&settings).unwrap_or_default();
    let mut files: Vec<PathBuf> = Vec::new();
    for agent in spec.agents.values() {
        files.push(agent.file.clone());
        files.extend(agent.base.prompt_file.clone());
        files.extend(agent.variants.values().filter_map(|p| p.prompt_file.clone()));
    }
    files.sort();
    files.dedup();
    for f in files {
        // Hash the name relative to the root, so a moved checkout hashes
        // the same.
        let name = f.strip_prefix(&spec.root).unwrap_or(&f).to_string_lossy().into_owned();
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&std::fs::read(spec.resolve(&f)).unwrap_or_default());
        bytes.push(0);
    }
    format!("{:016x}", crate::text::fnv1a64(&bytes))
}

/// What the run folder holds for one configuration.
pub struct Stored {
    /// Latest record per key of this configuration.
    pub latest: BTreeMap<Key, OutputRecord>,
    /// Latest judgement per key and evaluator.
    pub judgements: BTreeMap<(Key, String), JudgementRecord>,
}

impl Stored {
    /// Reads `outputs.jsonl` (records of `config_hash` only) and
    /// `judgements.jsonl`; missing files are empty.
    pub fn load(outputs: &Path, judgements: &Path, config_hash: &str) -> Result<Stored, EvalError> {
        let mut latest = BTreeMap::new();
        for r in read_outputs(outputs)? {
            if r.config_hash == config_hash {
                latest.insert(r.key(), r);
            }
        }
        Ok(Stored { latest, judgements: read_judgements(judgements)? })
    }

    /// Whether `key` is done: its latest attempt succeeded on the same
    /// query text (an edited row under an old id runs again).
    fn is_done(&self, key: &Key, row: &Row) -> bool {
        self.latest.get(key).is_some_and(|r| r.ok() && r.query == row.query)
    }
}

/// One row to run (and judge), or a done row still to judge.
pub struct WorkItem<'a> {
    /// The row's key in this run.
    pub key: Key,
    /// The dataset row.
    pub row: &'a Row,
    /// The done record to judge; `None` when the row runs.
    pub existing: Option<OutputRecord>,
    /// The judges `existing` still needs (empty for a row that runs: its
    /// judges are chosen once it has answered).
    pub needed: Vec<ModelEval>,
}

/// What is left of a run.
pub struct Plan<'a> {
    /// Every key the run covers, in order (variants, then repeats, then
    /// rows).
    pub planned: Vec<(Key, &'a Row)>,
    /// Keys done by an earlier invocation.
    pub skipped: usize,
    /// What this invocation does.
    pub work: Vec<WorkItem<'a>>,
}

impl<'a> Plan<'a> {
    /// Plans `rows` × `repeats` × `variants` against what is `stored`, and
    /// adds what earlier invocations spent (done rows and their standing
    /// judgements) to `meter`.
    pub fn new(
        rows: &'a [Row],
        variants: &[String],
        repeats: u32,
        stored: &Stored,
        judging: Option<&Judging>,
        meter: &CostMeter,
    ) -> Plan<'a> {
        let mut planned: Vec<(Key, &Row)> = Vec::new();
        for variant in variants {
            for repeat in 0..repeats {
                for row in rows {
                    planned.push((Key { id: row.id.clone(), repeat, variant: variant.clone() }, row));
                }
            }
        }
        let done: Vec<&Key> =
            planned.iter().filter(|(k, row)| stored.is_done(k, row)).map(|(k, _)| k).collect();
        let skipped = done.len();
        for k in &done {
            if let Some(r) = stored.latest.get(*k) {
                meter.add(r);
            }
        }
        for j in stored.judgements.values() {
            if stored.latest.get(&j.jkey().0).is_some_and(|r| r.ok()) {
                meter.add_usd(j.cost_usd.unwrap_or(0.0));
            }
        }
        let mut work = Vec::new();
        for (k, row) in &planned {
            if !stored.is_done(k, row) {
                work.push(WorkItem { key: k.clone(), row, existing: None, needed: Vec::new() });
            } else if let (Some(j), Some(rec)) = (judging, stored.latest.get(k)) {
                let needed = j.needed(rec, Some(*row), &stored.judgements);
                if !needed.is_empty() {
                    work.push(WorkItem { key: k.clone(), row, existing: Some(rec.clone()), needed });
                }
            }
        }
        Plan { planned, skipped, work }
    }
}

/// Known cost so far (app and judge), in micro-dollars (atomics hold
/// integers); the number of finished rows whose cost was unknown is
/// counted apart.
#[derive(Default)]
pub struct CostMeter {
    /// Known cost in millionths of a dollar.
    micro_usd: AtomicU64,
    /// Rows whose cost is unknown (they add nothing to the cap).
    unknown: AtomicU64,
}

impl CostMeter {
    /// Adds a record's cost, or counts it as unknown.
    pub fn add(&self, rec: &OutputRecord) {
        match rec.usage.as_ref().and_then(|u| u.cost_usd) {
            Some(c) => self.add_usd(c),
            // A failed row has no usage; its cost is unknown too.
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds a known cost.
    pub fn add_usd(&self, c: f64) {
        self.micro_usd.fetch_add((c.max(0.0) * 1e6).round() as u64, Ordering::Relaxed);
    }

    /// The known cost so far.
    pub fn usd(&self) -> f64 {
        self.micro_usd.load(Ordering::Relaxed) as f64 / 1e6
    }
}
