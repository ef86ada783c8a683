//! Comparing two runs (`meshops eval compare RUN_A RUN_B`): pairs rows by
//! (id, repeat) present in both runs' `scores.jsonl`, reports per metric
//! both means and the paired mean difference (B − A) with a seeded 95 %
//! paired-bootstrap interval, and judges the gates. The Markdown is meant
//! for a PR comment. A failed gate is part of the result, not an error:
//! the caller decides what it means (the CLI exits non-zero).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::EvalError;
use super::gates::{self, GateOutcome};
use super::report::{ScoreRecord, Summary};
use super::stats::{self, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Bootstrap};

/// What to compare (the options of `meshops eval compare`).
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    /// Baseline: a run directory (with `scores.jsonl`), a scores file, or a
    /// run id in `results`.
    pub run_a: PathBuf,
    /// Candidate: as `run_a`.
    pub run_b: PathBuf,
    /// Gates to judge (e.g. eval/gates.toml); none when `None`.
    pub gates: Option<PathBuf>,
    /// Also write the Markdown here.
    pub out: Option<PathBuf>,
    /// Variant of `run_a` to use when it holds several.
    pub variant_a: Option<String>,
    /// Variant of `run_b` to use when it holds several.
    pub variant_b: Option<String>,
    /// A results folder (see `publish`): `run_a` and `run_b` may then be
    /// run ids from its index.jsonl.
    pub results: Option<PathBuf>,
}

/// `run` itself when it exists, else the run of that id in `results`.
fn locate(run: &Path, results: Option<&Path>) -> Result<PathBuf, EvalError> {
    if run.exists() {
        return Ok(run.to_path_buf());
    }
    if let (Some(dir), Some(id)) = (results, run.to_str()) {
        if let Some(found) = super::publish::resolve(dir, id)? {
            return Ok(found);
        }
        return Err(EvalError::Input {
            path: run.display().to_string(),
            message: format!("neither a run folder nor a run id in {}", dir.join("index.jsonl").display()),
        });
    }
    Err(EvalError::Input {
        path: run.display().to_string(),
        message: "no such run folder or scores file (a run id needs --results DIR)".into(),
    })
}

/// One metric compared.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDiff {
    /// The metric's name, or `latency_ms pNN` for a latency percentile.
    pub metric: String,
    /// A's and B's mean (or percentile) over the paired rows.
    pub mean_a: f64,
    pub mean_b: f64,
    /// Mean of B − A over paired rows.
    pub diff: f64,
    /// The 95 % paired-bootstrap interval of `diff`; a change is real when
    /// it excludes 0.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Rows paired on this metric.
    pub n: usize,
}

/// The whole comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Every metric both runs have, then the latency percentiles.
    pub metrics: Vec<MetricDiff>,
    /// Each gate's verdict, in the gates file's order.
    pub gates: Vec<GateOutcome>,
    /// Rows present in both runs.
    pub paired: usize,
    /// Rows present in one run only (left out of every statistic).
    pub only_a: usize,
    pub only_b: usize,
    /// Settings the two runs differ in that move their figures (latency
    /// above all): concurrency, repeats, machine, build, version, target,
    /// models. Empty when they match as far as both runs recorded.
    pub warnings: Vec<String>,
    /// The report, for a PR comment.
    pub markdown: String,
}

impl Comparison {
    pub fn failed_gates(&self) -> Vec<&GateOutcome> {
        self.gates.iter().filter(|g| g.failed()).collect()
    }

    pub fn metric(&self, name: &str) -> Option<&MetricDiff> {
        self.metrics.iter().find(|m| m.metric == name)
    }

    /// The gates' verdict as a result: [`EvalError::GateFailed`] naming
    /// each failed gate and why, `Ok` when none failed.
    pub fn gate_result(&self) -> Result<(), EvalError> {
        let failed: Vec<String> =
            self.failed_gates().iter().map(|g| format!("{} ({})", g.gate, g.detail)).collect();
        if failed.is_empty() { Ok(()) } else { Err(EvalError::GateFailed(failed.join("; "))) }
    }
}

/// Reads `scores.jsonl` of a run directory (or the file itself).
pub fn read_scores(path: &Path) -> Result<Vec<ScoreRecord>, EvalError> {
    let file = if path.is_dir() { path.join("scores.jsonl") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file)
        .map_err(|source| EvalError::Io { path: file.display().to_string(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| EvalError::Input {
            path: format!("{}:{}", file.display(), i + 1),
            message: e.to_string(),
        })?);
    }
    Ok(out)
}

fn pick_variant(scores: &[ScoreRecord], want: Option<&str>, run: &Path) -> Result<String, EvalError> {
    let variants: BTreeSet<&str> = scores.iter().map(|s| s.variant.as_str()).collect();
    match want {
        Some(v) if variants.contains(v) => Ok(v.to_string()),
        Some(v) => Err(EvalError::Input {
            path: run.display().to_string(),
            message: format!(
                "no variant `{v}`; the run has: {}",
                variants.into_iter().collect::<Vec<_>>().join(", ")
            ),
        }),
        None if variants.len() <= 1 => Ok(variants.into_iter().next().unwrap_or_default().to_string()),
        None => Err(EvalError::Input {
            path: run.display().to_string(),
            message: format!(
                "the run holds several variants ({}); choose one with --variant-a/--variant-b",
                variants.into_iter().collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// Compares two runs and judges `gates`.
pub fn compare(
    run_a: &Path,
    run_b: &Path,
    gates: &[gates::Gate],
    variant_a: Option<&str>,
    variant_b: Option<&str>,
) -> Result<Comparison, EvalError> {
    let a = read_scores(run_a)?;
    let b = read_scores(run_b)?;
    let va = pick_variant(&a, variant_a, run_a)?;
    let vb = pick_variant(&b, variant_b, run_b)?;
    let index = |s: Vec<ScoreRecord>, v: &str| -> BTreeMap<(String, u32), ScoreRecord> {
        s.into_iter().filter(|r| r.variant == v).map(|r| ((r.id.clone(), r.repeat), r)).collect()
    };
    let a = index(a, &va);
    let b = index(b, &vb);
    let keys: Vec<&(String, u32)> = a.keys().filter(|k| b.contains_key(*k)).collect();
    let only_a = a.len() - keys.len();
    let only_b = b.len() - keys.len();
    let names: BTreeSet<&String> = a.values().chain(b.values()).flat_map(|r| r.metrics.keys()).collect();

    // Paired values per metric: rows where both runs have the metric.
    let paired = |name: &str| -> (Vec<f64>, Vec<f64>) {
        keys.iter()
            .filter_map(|k| {
                let x = a.get(*k)?.metrics.get(name)?;
                let y = b.get(*k)?.metrics.get(name)?;
                Some((*x, *y))
            })
            .unzip()
    };
    let mut metrics = Vec::new();
    for name in &names {
        let (xa, xb) = paired(name);
        if xa.is_empty() {
            continue;
        }
        let diffs: Vec<f64> = xb.iter().zip(&xa).map(|(y, x)| y - x).collect();
        let (lo, hi) = Bootstrap::paired(&diffs, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
            .map(|bs| bs.interval(0.95))
            .unwrap_or((0.0, 0.0));
        metrics.push(MetricDiff {
            metric: (*name).clone(),
            mean_a: stats::mean(&xa).unwrap_or(0.0),
            mean_b: stats::mean(&xb).unwrap_or(0.0),
            diff: stats::mean(&diffs).unwrap_or(0.0),
            ci_low: lo,
            ci_high: hi,
            n: xa.len(),
        });
    }
    // Tail latency: percentiles of the paired rows, with a paired
    // bootstrap of their change (rows resampled together in both runs).
    let (la, lb) = paired("latency_ms");
    for p in [50.0, 95.0] {
        let pct = |x: &[f64]| stats::percentile(x, p).unwrap_or(0.0);
        let Some(bs) = Bootstrap::paired_statistic(
            &la,
            &lb,
            stats::BOOTSTRAP_RESAMPLES_PERCENTILE,
            BOOTSTRAP_SEED,
            |x, y| pct(y) - pct(x),
        ) else {
            continue;
        };
        let (lo, hi) = bs.interval(0.95);
        metrics.push(MetricDiff {
            metric: format!("latency_ms p{p:.0}"),
            mean_a: pct(&la),
            mean_b: pct(&lb),
            diff: pct(&lb) - pct(&la),
            ci_low: lo,
            ci_high: hi,
            n: la.len(),
        });
    }
    let has = |m: &BTreeMap<(String, u32), ScoreRecord>, name: &str| {
        m.values().any(|r| r.metrics.contains_key(name))
    };
    let outcomes: Vec<GateOutcome> = gates
        .iter()
        .map(|g| {
            let (xa, xb) = paired(&g.metric);
            gates::evaluate(g, &xa, &xb, has(&a, &g.metric), has(&b, &g.metric))
        })
        .collect();

    let warnings = setup_warnings(&run_summary(run_a), &run_summary(run_b));
    let mut c = Comparison {
        metrics,
        gates: outcomes,
        paired: keys.len(),
        only_a,
        only_b,
        warnings,
        markdown: String::new(),
    };
    c.markdown = markdown(&c, (run_a, &va), (run_b, &vb));
    Ok(c)
}

/// The comparison as Markdown: which runs, the metric table with
/// intervals, and the gates.
fn markdown(c: &Comparison, (run_a, va): (&Path, &str), (run_b, vb): (&Path, &str)) -> String {
    let mut md = String::from("## meshops eval compare\n\n");
    let _ = writeln!(
        md,
        "A (baseline): `{}` variant `{va}` · B (candidate): `{}` variant `{vb}`  \n{} rows paired by (id, repeat); {} only in A, {} only in B.\n",
        run_a.display(),
        run_b.display(),
        c.paired,
        c.only_a,
        c.only_b
    );
    if !c.warnings.is_empty() {
        md.push_str(
            "> **Warning: the runs differ in settings that move the figures**; latency (and \
             whatever depends on load) may differ for that reason alone, not for the change:\n",
        );
        for w in &c.warnings {
            let _ = writeln!(md, "> - {w}");
        }
        md.push('\n');
    }
    md.push_str("| metric | A | B | Δ (B − A) | 95 % CI | n |\n|---|---:|---:|---:|---|---:|\n");
    for m in &c.metrics {
        let mark = if m.ci_low > 0.0 || m.ci_high < 0.0 { " **≠**" } else { "" };
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:+.4}{mark} | [{:+.4}, {:+.4}] | {} |",
            m.metric, m.mean_a, m.mean_b, m.diff, m.ci_low, m.ci_high, m.n
        );
    }
    let _ = writeln!(
        md,
        "\nA and B are means, except for `latency_ms pNN` (percentiles). **≠**: the interval excludes 0. Paired bootstrap, {BOOTSTRAP_RESAMPLES} resamples ({} for percentiles), fixed seed.\n",
        stats::BOOTSTRAP_RESAMPLES_PERCENTILE
    );
    if !c.gates.is_empty() {
        md.push_str("### Gates\n\n| gate | result | detail |\n|---|---|---|\n");
        for g in &c.gates {
            let result = match g.passed {
                Some(true) => "pass",
                Some(false) => "**FAIL**",
                None => "not evaluated",
            };
            let _ = writeln!(md, "| {} | {result} | {} |", g.gate, g.detail.replace('|', "\\|"));
        }
        let failed = c.gates.iter().filter(|g| g.failed()).count();
        if failed == 0 {
            md.push_str("\nAll gates pass.\n");
        } else {
            let _ = writeln!(md, "\n**{failed} gate(s) failed.**");
        }
    }
    md
}

/// A run's `summary.json` (beside its scores file, or in its folder):
/// `Err` says why there is none to read.
fn run_summary(run: &Path) -> Result<Summary, String> {
    let dir = if run.is_dir() { run } else { run.parent().unwrap_or(Path::new(".")) };
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|_| format!("no {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} does not parse: {e}", path.display()))
}

/// What two runs' summaries say about their settings, as warnings: every
/// recorded setting that differs, and any run whose settings are unknown.
pub fn setup_warnings(a: &Result<Summary, String>, b: &Result<Summary, String>) -> Vec<String> {
    let mut out = Vec::new();
    let (sa, sb) = match (a, b) {
        (Ok(sa), Ok(sb)) => (sa, sb),
        (a, b) => {
            for (side, r) in [("A", a), ("B", b)] {
                if let Err(why) = r {
                    out.push(format!("{side}'s settings are unknown ({why})"));
                }
            }
            return out;
        }
    };
    fn differ(out: &mut Vec<String>, what: &str, x: String, y: String) {
        if x != y {
            out.push(format!("{what}: A {x}, B {y}"));
        }
    }
    differ(&mut out, "meshops version", sa.meshops_version.clone(), sb.meshops_version.clone());
    let target = |s: &Summary| s.target.clone().unwrap_or_else(|| "in process".into());
    differ(&mut out, "target", target(sa), target(sb));
    match (&sa.setup, &sb.setup) {
        (Some(x), Some(y)) => {
            differ(&mut out, "concurrency", x.concurrency.to_string(), y.concurrency.to_string());
            differ(&mut out, "repeats", x.repeats.to_string(), y.repeats.to_string());
            differ(&mut out, "host", x.host.clone(), y.host.clone());
            differ(&mut out, "cpus", x.cpus.to_string(), y.cpus.to_string());
            differ(&mut out, "platform", x.platform.clone(), y.platform.clone());
            differ(&mut out, "build", x.build.clone(), y.build.clone());
        }
        (x, y) => {
            for (side, s) in [("A", x), ("B", y)] {
                if s.is_none() {
                    out.push(format!(
                        "{side} does not record its concurrency, repeats or machine (an older run)"
                    ));
                }
            }
        }
    }
    for x in &sa.agents {
        if let Some(y) = sb.agents.iter().find(|y| y.name == x.name) {
            let model = |m: &super::report::AgentSummary| format!("{} ({})", m.model_profile, m.model);
            differ(&mut out, &format!("agent `{}` model", x.name), model(x), model(y));
        }
    }
    let judge = |s: &Summary| s.judge_model.clone().unwrap_or_else(|| "none".into());
    differ(&mut out, "judge model", judge(sa), judge(sb));
    out
}

/// Loads the gates, finds both runs and compares them (see [`compare`]),
/// then writes the Markdown to `opts.out` when given. Failed gates are in
/// the result ([`Comparison::gate_result`]).
pub fn run(opts: &CompareOptions) -> Result<Comparison, EvalError> {
    let gates = match &opts.gates {
        Some(p) => gates::load(p)?,
        None => Vec::new(),
    };
    let a = locate(&opts.run_a, opts.results.as_deref())?;
    let b = locate(&opts.run_b, opts.results.as_deref())?;
    let c = compare(&a, &b, &gates, opts.variant_a.as_deref(), opts.variant_b.as_deref())?;
    if let Some(out) = &opts.out {
        write_markdown(&c, out)?;
    }
    Ok(c)
}

/// Writes the comparison's Markdown to `out`.
pub fn write_markdown(c: &Comparison, out: &Path) -> Result<(), EvalError> {
    std::fs::write(out, &c.markdown)
        .map_err(|source| EvalError::Io { path: out.display().to_string(), source })
}
