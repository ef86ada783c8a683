//! Doing a run's work: rows in flight up to `concurrency`, each answered by
//! the driver and then judged, every attempt and judgement appended to
//! `outputs.jsonl` / `judgements.jsonl` and flushed as soon as it
//! finishes (a crash loses nothing), and no new row started once the cost
//! cap is reached.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::driver::Driver;
use super::judging::Judging;
use super::resume::{CostMeter, Stored, WorkItem};
use crate::eval::EvalError;
use crate::eval::records::OutputRecord;

/// What drives the work and where it goes.
pub struct Workers<'a> {
    /// Answers rows; `None` when every item is a done row to judge.
    pub driver: Option<Arc<Driver>>,
    /// Judges answers; `None` when the run has no judge.
    pub judging: Option<Arc<Judging>>,
    /// Cost so far, checked against `cap` before each item starts.
    pub meter: Arc<CostMeter>,
    /// `--max-cost-usd`.
    pub cap: Option<f64>,
    /// The configuration hash written on each record.
    pub config_hash: String,
    /// Each row's deadline.
    pub timeout: Duration,
    /// Items in flight at once.
    pub concurrency: usize,
    /// Whether to draw a progress bar.
    pub progress: bool,
    /// `outputs.jsonl` and `judgements.jsonl`, appended to.
    pub outputs_path: &'a Path,
    pub judgements_path: &'a Path,
}

/// What the work did.
pub struct Done {
    /// Rows attempted (not judged-only items).
    pub attempted: usize,
    /// Whether the cost cap stopped some item from starting.
    pub cut_short: bool,
    /// Time from the first item to the last.
    pub rows_elapsed: Duration,
}

impl Workers<'_> {
    /// Runs `work`, adding each new record and judgement to `stored` as it
    /// is written.
    pub async fn run(self, work: Vec<WorkItem<'_>>, stored: &mut Stored) -> Result<Done, EvalError> {
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(std::io::BufWriter::new)
                .map_err(|source| EvalError::Io { path: path.display().to_string(), source })
        };
        let mut file = open(self.outputs_path)?;
        let mut jfile = open(self.judgements_path)?;
        let bar = progress_bar(self.progress, work.len() as u64);
        let errors = AtomicU64::new(0);
        let (mut attempted, mut cut_short) = (0usize, false);
        let rows_t0 = Instant::now();
        let (cap, timeout) = (self.cap, self.timeout);
        let (d, m, h, jd) =
            (self.driver.clone(), self.meter.clone(), self.config_hash.clone(), self.judging.clone());
        let stream = futures::stream::iter(work.into_iter().map(move |item| {
            let driver = d.clone();
            let meter = m.clone();
            let hash = h.clone();
            let judging = jd.clone();
            async move {
                // Checked when the item is scheduled (buffer_unordered polls
                // a future first when a slot frees), so nothing new starts
                // once the cap is reached; work in flight still finishes.
                if cap.is_some_and(|cap| meter.usd() >= cap) {
                    return None;
                }
                let WorkItem { key, row, existing, needed } = item;
                let (rec, fresh, needed) = match (existing, driver.as_deref()) {
                    (Some(rec), _) => (rec, false, needed),
                    (None, Some(driver)) => {
                        let t0 = Instant::now();
                        let result = driver.ask(row, key.repeat, &key.variant, timeout).await;
                        let rec = OutputRecord::new(&key, &hash, &row.query, result, t0.elapsed());
                        meter.add(&rec);
                        let needed = match &judging {
                            Some(j) => j.needed(&rec, Some(row), &BTreeMap::new()),
                            None => Vec::new(),
                        };
                        (rec, true, needed)
                    }
                    (None, None) => return None,
                };
                let verdicts = match &judging {
                    Some(j) if !needed.is_empty() => j.run(&rec, Some(row), &needed).await,
                    _ => Vec::new(),
                };
                for v in &verdicts {
                    meter.add_usd(v.cost_usd.unwrap_or(0.0));
                }
                Some((rec, fresh, verdicts))
            }
        }))
        .buffer_unordered(self.concurrency.max(1));
        let mut stream = Box::pin(stream);
        while let Some(done) = stream.next().await {
            bar.inc(1);
            let Some((rec, fresh, verdicts)) = done else {
                cut_short = true;
                continue;
            };
            for v in verdicts {
                append(&mut jfile, &v, self.judgements_path)?;
                stored.judgements.insert(v.jkey(), v);
            }
            if !fresh {
                continue;
            }
            attempted += 1;
            if !rec.ok() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            bar.set_message(format!(
                "errors {}  cost ${:.4}",
                errors.load(Ordering::Relaxed),
                self.meter.usd()
            ));
            append(&mut file, &rec, self.outputs_path)?;
            stored.latest.insert(rec.key(), rec);
        }
        bar.finish_and_clear();
        let rows_elapsed = rows_t0.elapsed();
        // Drops the futures' clones of the driver so it can be shut down.
        drop(stream);
        if let Some(driver) = self.driver {
            Driver::shutdown(driver).await;
        }
        Ok(Done { attempted, cut_short, rows_elapsed })
    }
}

/// Appends one JSON line to `file` and flushes it, so a crash loses at most
/// the line being written.
fn append<T: serde::Serialize>(file: &mut impl Write, value: &T, path: &Path) -> Result<(), EvalError> {
    let line = serde_json::to_string(value).map_err(EvalError::Encode)?;
    writeln!(file, "{line}")
        .and_then(|_| file.flush())
        .map_err(|source| EvalError::Io { path: path.display().to_string(), source })
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    // indicatif hides itself when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} rows  {per_sec}  eta {eta}  {msg}")
    {
        bar.set_style(style);
    }
    bar
}
