//! `meshops live export`: live records as a dataset.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use meshops::config::MeshSpec;
use meshops::live::ExportFilter;

/// The export's filter from the command line: `since` is an age (`24h`)
/// or Unix milliseconds.
pub fn filter(
    since: Option<&str>,
    variant: Option<String>,
    with_feedback: bool,
    min_score: Option<f64>,
) -> Result<ExportFilter> {
    let since_ms = match since.map(str::trim) {
        None => None,
        Some(s) if s.len() >= 13 && s.chars().all(|c| c.is_ascii_digit()) => {
            Some(s.parse::<i64>().with_context(|| format!("--since {s}"))?)
        }
        Some(s) => {
            let Some(age) = meshops::config::tools::parse_duration_s(s) else {
                bail!("--since {s}: expected an age such as 30m, 24h or 7d, or Unix milliseconds");
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            Some(now - (age as i64).saturating_mul(1000))
        }
    };
    if let Some(m) = min_score {
        anyhow::ensure!((0.0..=1.0).contains(&m), "--min-score {m}: feedback scores are in [0, 1]");
    }
    Ok(ExportFilter { since_ms, variant, with_feedback, min_score })
}

/// Writes the selected records to `out` as JSON lines.
pub async fn export(spec: &MeshSpec, out: &Path, filter: &ExportFilter) -> Result<()> {
    let (rows, without_content) = meshops::live::read(spec, filter).await.context("reading live records")?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    for row in &rows {
        serde_json::to_writer(&mut file, row)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    eprintln!("wrote {} records to {}", rows.len(), out.display());
    if without_content > 0 {
        eprintln!(
            "{without_content} of them have no query or response ([live] capture_content was off): \
             `eval run --dataset` needs the query"
        );
    }
    Ok(())
}

/// Prints the A/B readout (and logs it to MLflow with `publish`); false
/// when a gate failed.
pub async fn compare(
    spec: &MeshSpec,
    filter: &ExportFilter,
    baseline: &str,
    gates: Option<&Path>,
    publish: Option<&str>,
) -> Result<bool> {
    let (rows, _) = meshops::live::read(spec, filter).await.context("reading live records")?;
    if rows.is_empty() {
        bail!("no live records in the window");
    }
    let gates = match gates {
        Some(p) => meshops::eval::gates::load(p)?,
        None => Vec::new(),
    };
    let samples = meshops::eval::live_compare::samples(&rows);
    let (text, outcomes) = meshops::eval::live_compare::compare(&samples, baseline, &gates);
    println!("{} live records\n\n{text}", rows.len());
    if let Some(target) = publish {
        anyhow::ensure!(
            meshops::eval::mlflow::is_mlflow(target),
            "--publish {target}: expected mlflow+http://HOST:PORT"
        );
        let key = format!("live-{:016x}", meshops::text::fnv1a64(serde_json::to_string(&rows)?.as_bytes()));
        let params = vec![
            ("baseline".to_string(), baseline.to_string()),
            ("since_ms".to_string(), filter.since_ms.map(|s| s.to_string()).unwrap_or_else(|| "all".into())),
            ("records".to_string(), rows.len().to_string()),
        ];
        let runs = meshops::eval::live_compare::run_specs(&samples, &text, &key, &params);
        let p = meshops::eval::mlflow::log(target, "meshops/live", runs).await?;
        for (variant, run_id, logged) in &p.runs {
            let what = if *logged { "logged" } else { "already logged" };
            println!("MLflow: {variant} {what} as run {run_id} (experiment {})", p.experiment_id);
        }
    }
    let failed: Vec<String> =
        outcomes.iter().filter(|(_, o)| o.failed()).map(|(v, o)| format!("{v}: {}", o.gate)).collect();
    if !failed.is_empty() {
        eprintln!("gates failed: {}", failed.join("; "));
    }
    Ok(failed.is_empty())
}
