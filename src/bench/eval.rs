//! `meshops bench eval`: `eval run` rows/s at concurrency 1, 10, 100 and
//! 1000 with the offline engine's `latency_ms = 200`, against linear
//! scaling from concurrency 1 (rows/s at 1 × concurrency).

use super::{Args, BenchError, TempDir, fail, ratio, verdict};
use crate::config::MeshSpec;
use crate::eval::runner::{self, RunOptions};

pub async fn run(mut spec: MeshSpec, args: &Args) -> Result<(), BenchError> {
    let latency_ms = if args.quick { 20 } else { 200 };
    let levels: &[usize] = if args.quick { &[1, 10, 100] } else { &[1, 10, 100, 1000] };
    super::offline_latency(&mut spec, latency_ms);
    let data = TempDir::new("eval")?;
    spec.settings.retrieval.data_dir = data.path().join("data");
    // Rows must not time out waiting behind each other.
    spec.settings.gateway.request_timeout_ms = 600_000;
    let sample = spec.resolve(std::path::Path::new("eval/datasets/sample.jsonl"));
    let queries: Vec<String> = std::fs::read_to_string(&sample)
        .map_err(|e| fail(sample.display().to_string(), e))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("query").and_then(|q| q.as_str()).map(str::to_string))
        .collect();
    if queries.is_empty() {
        return Err(fail(sample.display().to_string(), "no rows with a query"));
    }
    println!(
        "\n== eval: `eval run` in process, offline engine latency_ms = {latency_ms}, rows from {}",
        sample.display()
    );
    let mut base = 0.0;
    let mut last_ratio = 0.0;
    for &c in levels {
        // Enough rows for a few waves at each level.
        let rows = if args.quick { c.max(2) } else { (c * 3).max(6) };
        let dataset = data.path().join(format!("rows-{c}.jsonl"));
        let lines: Vec<String> = (0..rows)
            .map(|i| {
                serde_json::json!({"id": format!("r{i}"), "query": queries[i % queries.len()], "ground_truth": ""})
                    .to_string()
            })
            .collect();
        std::fs::write(&dataset, lines.join("\n")).map_err(|e| fail(dataset.display().to_string(), e))?;
        let mut opts = RunOptions::new(&dataset, data.path().join(format!("out-{c}")));
        opts.concurrency = c;
        opts.metrics = vec!["f1".into()];
        let result = runner::run(spec.clone(), opts).await.map_err(|e| fail("eval run", e))?;
        let secs = result.rows_elapsed.as_secs_f64();
        let rps = result.attempted as f64 / secs.max(1e-9);
        if c == 1 {
            base = rps;
        }
        let linear = base * c as f64;
        last_ratio = ratio(rps, linear);
        println!(
            "  concurrency {c:<5} {rows:>5} rows in {secs:>6.2} s   {rps:>8.1} rows/s   linear {linear:>8.1}   {:>5.1} % of linear{}",
            ratio(rps, linear) * 100.0,
            if result.summary.counts.failed > 0 {
                format!("   ({} rows failed)", result.summary.counts.failed)
            } else {
                String::new()
            }
        );
    }
    let last = levels.last().copied().unwrap_or(1);
    println!(
        "  target: linear to {last} (counted as ≥ 90 % of linear): {} ({:.1} %)",
        verdict(last_ratio >= 0.9),
        last_ratio * 100.0
    );
    Ok(())
}
