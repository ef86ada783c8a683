//! Scoring an existing JSONL file of responses with the standard metrics,
//! without running the mesh (`meshops eval score`).
//!
//! Input rows may carry `id` (required, string or number), `response`,
//! `ground_truth`, `context`, `query`, `retrieved_doc_ids` and
//! `relevant_doc_ids`; other fields are ignored and `null` counts as absent.
//! Blank lines are skipped. Each input row yields one output line: `id`
//! first, then one numeric field per metric, named exactly as the metric
//! (`"f1": 0.5`, `"ndcg@5": 0.63`). A metric that does not apply to a row
//! (the row lacks its fields) is **omitted** from that row, never written as
//! `null`, so every present value is a real score.
//!
//! An `eval run`'s own `outputs.jsonl` is accepted as it is: its `answer`
//! is the response, its cited `retrieved_doc_ids` are used, and the
//! ground truth, gold ids, context and query come from the dataset the run
//! read (`--dataset`, else the one its `summary.json` names), joined by
//! `id`.
//!
//! A run where none of the metrics applies to any row is an error, not a
//! table of `n/a`: nothing was scored.
//!
//! The output is written to a temporary file next to `--out` and renamed into
//! place at the end: a failed run never leaves a half-written file.

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::EvalError;
use super::evaluators::{ColumnMap, Custom, EvaluatorSet};
use super::metrics::{self, ScoreInput};

/// What to score (the options of `meshops eval score`).
#[derive(Debug, Clone, Default)]
pub struct ScoreOptions {
    /// JSONL file with `id`, `response`, `ground_truth`, `retrieved_doc_ids`,
    /// `relevant_doc_ids`, ... per line.
    pub input: PathBuf,
    /// Metrics to compute, in order. Empty: every metric whose fields
    /// appear in at least one input row (text metrics need response +
    /// ground_truth, hit_rate/mrr/ndcg need retrieved_doc_ids +
    /// relevant_doc_ids).
    pub metrics: Vec<String>,
    /// Output JSONL: one line per input row with `id` and one field per metric.
    pub out: PathBuf,
    /// Field renames, CANONICAL=FIELD, e.g. `response=prediction`.
    pub map: Vec<String>,
    /// Evaluators file: its rule-based evaluators (contains, regex,
    /// json_schema) add one field each; its `[columns]` apply under `map`.
    pub evaluators: Option<PathBuf>,
    /// The dataset whose `ground_truth`, `relevant_doc_ids`, `context` and
    /// `query` fill in rows that lack them, joined by `id`. For an `eval
    /// run`'s `outputs.jsonl` it defaults to the dataset its `summary.json`
    /// names.
    pub dataset: Option<PathBuf>,
}

/// Mean of one metric over the rows it applied to.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummary {
    /// The metric's name, as in the output.
    pub name: String,
    /// Rows the metric applied to.
    pub count: usize,
    /// Mean over those rows; `None` when it applied to none.
    pub mean: Option<f64>,
}

/// What a scoring run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSummary {
    /// Input rows scored.
    pub rows: usize,
    /// Each metric's mean, in output order.
    pub metrics: Vec<MetricSummary>,
}

impl fmt::Display for ScoreSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scored {} rows", self.rows)?;
        let width = self.metrics.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in &self.metrics {
            match m.mean {
                Some(mean) => writeln!(f, "  {:<width$}  mean {mean:.4}  (n={})", m.name, m.count)?,
                None => writeln!(f, "  {:<width$}  n/a  (no row has its fields)", m.name)?,
            }
        }
        Ok(())
    }
}

/// One parsed input row.
struct InputRow {
    /// Copied to the output line as it was (string or number).
    id: Value,
    /// The line is an `eval run` output record.
    from_run: bool,
    /// What the metrics read.
    input: ScoreInput,
}

/// [`score_file`] on a blocking thread, off the async workers.
pub async fn run(opts: ScoreOptions) -> Result<ScoreSummary, EvalError> {
    tokio::task::spawn_blocking(move || score_file(&opts))
        .await
        .map_err(|e| EvalError::Run(format!("scoring task failed: {e}")))?
}

/// Scores `opts.input` into `opts.out` and returns the summary.
pub fn score_file(opts: &ScoreOptions) -> Result<ScoreSummary, EvalError> {
    let requested = requested_metrics(&opts.metrics)?;
    let set = match &opts.evaluators {
        Some(p) => EvaluatorSet::load(p)?,
        None => EvaluatorSet::default(),
    };
    if let Some(c) = set.evaluators.iter().find(|c| c.rubric().is_some()) {
        return Err(EvalError::Input {
            path: opts.evaluators.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            message: format!(
                "evaluator `{}` is an llm_rubric: judges run with `meshops eval run`, which has the judge's model profile",
                c.name
            ),
        });
    }
    let columns = set.columns.merged(&ColumnMap::from_args(&opts.map)?);
    let input_path = opts.input.display().to_string();
    let text = std::fs::read_to_string(&opts.input)
        .map_err(|source| EvalError::Io { path: input_path.clone(), source })?;
    // Tolerate a UTF-8 byte order mark (some Windows editors add one).
    let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows: Vec<InputRow> = Vec::new();
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = parse_row(line, &columns)
            .map_err(|message| EvalError::Input { path: format!("{input_path}:{}", i + 1), message })?;
        rows.push(row);
    }
    if let Some(dataset) = dataset_for(opts, &rows)? {
        join_dataset(&mut rows, &dataset, &columns)?;
    }
    let names = match requested {
        Some(names) => names,
        None => default_metrics(&rows),
    };

    let customs: Vec<&Custom> = set.evaluators.iter().collect();
    let mut names = names;
    names.extend(customs.iter().map(|c| c.name.clone()));
    let mut sums = vec![(0usize, 0.0f64); names.len()];
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        // Built by hand so `id` comes first and metrics keep the requested
        // order (serde_json's map would sort the keys).
        let mut line = format!("{{\"id\":{}", row.id);
        for (name, (count, sum)) in names.iter().zip(sums.iter_mut()) {
            let custom = customs.iter().find(|c| &c.name == name);
            let value = match custom {
                Some(c) => row.input.response.as_deref().and_then(|r| c.score(r)).map(|(v, _)| v),
                None => metrics::compute(name, &row.input)?,
            };
            if let Some(value) = value {
                *count += 1;
                *sum += value;
                let key = Value::String(name.clone());
                let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
                line.push_str(&format!(",{key}:{value}"));
            }
        }
        line.push('}');
        lines.push(line);
    }
    if !names.is_empty() && sums.iter().all(|(count, _)| *count == 0) {
        return Err(EvalError::Input {
            path: input_path,
            message: format!(
                "none of the metrics ({}) applies to any row: text metrics need `response` (an eval run's \
                 `answer`) and `ground_truth` (from the row or --dataset), retrieval metrics \
                 `retrieved_doc_ids` and `relevant_doc_ids`",
                names.join(", ")
            ),
        });
    }
    if names.is_empty() {
        return Err(EvalError::Input {
            path: input_path,
            message: "no metric applies to any row: no row has `response` and `ground_truth`, or \
                      `retrieved_doc_ids` and `relevant_doc_ids` (see --map and --dataset)"
                .into(),
        });
    }
    write_atomically(&opts.out, &lines)?;

    let metrics = names
        .into_iter()
        .zip(sums)
        .map(|(name, (count, sum))| MetricSummary {
            name,
            count,
            mean: (count > 0).then(|| sum / count as f64),
        })
        .collect();
    Ok(ScoreSummary { rows: rows.len(), metrics })
}

/// Validated, de-duplicated metric names in the order given; `None` when
/// none were given (use the defaults).
fn requested_metrics(given: &[String]) -> Result<Option<Vec<String>>, EvalError> {
    let mut names: Vec<String> = Vec::new();
    for name in given.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if super::judge::is_judge(name) {
            return Err(EvalError::Run(format!(
                "`{name}` is an LLM judge: judges run with `meshops eval run`, which has the judge's model profile"
            )));
        }
        if metrics::metric_info(name).is_none() {
            // `compute` builds the error with the list of known names.
            metrics::compute(name, &ScoreInput::default())?;
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok((!names.is_empty()).then_some(names))
}

/// Every known metric that applies to at least one row.
fn default_metrics(rows: &[InputRow]) -> Vec<String> {
    let has_text = rows.iter().any(|r| r.input.response.is_some() && r.input.ground_truth.is_some());
    let has_ids =
        rows.iter().any(|r| r.input.retrieved_doc_ids.is_some() && r.input.relevant_doc_ids.is_some());
    let mut names = Vec::new();
    if has_text {
        names.extend(metrics::text_metrics().into_iter().map(str::to_string));
    }
    if has_ids {
        names.extend(metrics::retrieval_metrics().into_iter().map(str::to_string));
    }
    names
}

fn parse_row(line: &str, columns: &ColumnMap) -> Result<InputRow, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("expected a JSON object".into());
    };
    columns.apply(&mut obj);
    // An `eval run` output line: its `answer` is the response.
    let from_run = obj.contains_key("answer") && obj.contains_key("config_hash");
    if from_run && !obj.contains_key("response") {
        if let Some(answer) = obj.remove("answer") {
            obj.insert("response".into(), answer);
        }
    }
    let id = match obj.get("id") {
        Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
        Some(_) => return Err("`id` must be a string or a number".into()),
        None => return Err(format!("missing {}", columns.describe("id"))),
    };
    let text = |field: &str| -> Result<Option<String>, String> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{field}` must be a string")),
        }
    };
    let ids = |field: &str| -> Result<Option<Vec<String>>, String> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    // Numeric doc ids are common in exported datasets; keep
                    // them comparable with string ids by their JSON text.
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(format!("`{field}` must contain strings or numbers")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(format!("`{field}` must be an array of ids")),
        }
    };
    Ok(InputRow {
        id,
        from_run,
        input: ScoreInput {
            query: text("query")?,
            response: text("response")?,
            ground_truth: text("ground_truth")?,
            context: text("context")?,
            retrieved_doc_ids: ids("retrieved_doc_ids")?,
            relevant_doc_ids: ids("relevant_doc_ids")?,
        },
    })
}

/// The dataset to join: `--dataset`, else (for an `eval run`'s outputs)
/// the one named by the `summary.json` beside the input.
fn dataset_for(opts: &ScoreOptions, rows: &[InputRow]) -> Result<Option<PathBuf>, EvalError> {
    if let Some(d) = &opts.dataset {
        return Ok(Some(d.clone()));
    }
    if !rows.iter().any(|r| r.from_run) {
        return Ok(None);
    }
    let summary = opts.input.with_file_name("summary.json");
    let Ok(text) = std::fs::read_to_string(&summary) else {
        return Err(EvalError::Input {
            path: opts.input.display().to_string(),
            message: format!(
                "an eval run's outputs carry no ground truth, and {} is missing: give the dataset with --dataset",
                summary.display()
            ),
        });
    };
    let named = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("dataset").and_then(Value::as_str).map(PathBuf::from));
    match named {
        Some(path) if path.is_file() => Ok(Some(path)),
        other => Err(EvalError::Input {
            path: summary.display().to_string(),
            message: format!(
                "the run's dataset {} cannot be read from here: give it with --dataset",
                other.map(|p| format!("`{}`", p.display())).unwrap_or_else(|| "(not named)".into())
            ),
        }),
    }
}

/// Fills the fields a row lacks from the dataset row with the same id.
fn join_dataset(rows: &mut [InputRow], dataset: &Path, columns: &ColumnMap) -> Result<(), EvalError> {
    let (data, _) = super::dataset::read_dataset(dataset, columns)?;
    let by_id: std::collections::HashMap<&str, &super::dataset::Row> =
        data.iter().map(|r| (r.id.as_str(), r)).collect();
    for row in rows.iter_mut() {
        let id = match &row.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let Some(d) = by_id.get(id.as_str()) else { continue };
        let input = &mut row.input;
        if input.ground_truth.is_none() {
            input.ground_truth = d.ground_truth.clone();
        }
        if input.relevant_doc_ids.is_none() {
            input.relevant_doc_ids = d.relevant_doc_ids.clone();
        }
        if input.context.is_none() {
            input.context = d.context.clone();
        }
        if input.query.is_none() {
            input.query = Some(d.query.clone());
        }
    }
    Ok(())
}

/// Writes `lines` to a temporary file beside `out`, then renames it over
/// `out`, so readers never see a partial file. The temp file is removed if
/// anything fails.
fn write_atomically(out: &Path, lines: &[String]) -> Result<(), EvalError> {
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| EvalError::Io { path, source }
    };
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
        EvalError::Input { path: out.display().to_string(), message: "not a file path".into() }
    })?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = BufWriter::new(file);
        for line in lines {
            writeln!(w, "{line}").map_err(io_err(&tmp))?;
        }
        let file = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, out).map_err(io_err(out))
    })();
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, metrics: &[&str]) -> ScoreOptions {
        ScoreOptions {
            input: dir.join("in.jsonl"),
            metrics: metrics.iter().map(|s| s.to_string()).collect(),
            out: dir.join("out.jsonl"),
            map: Vec::new(),
            evaluators: None,
            dataset: None,
        }
    }

    fn read_out(path: &Path) -> Vec<serde_json::Map<String, Value>> {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(o)) => o,
                other => panic!("bad output line {l}: {other:?}"),
            })
            .collect()
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    #[test]
    fn scores_rows_keeps_ids_and_omits_inapplicable_metrics() {
        let dir = tempdir();
        let a = args(dir.path(), &["f1", "rougeL", "mrr@2", "f1"]);
        std::fs::write(
            &a.input,
            concat!(
                r#"{"id":"q1","query":"?","response":"the cat sat","ground_truth":"a cat sat down"}"#,
                "\n\n",
                r#"{"id":2,"retrieved_doc_ids":["d9","d1"],"relevant_doc_ids":["d1"],"response":null}"#,
                "\n",
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let summary = score_file(&a).unwrap_or_else(|e| panic!("{e}"));
        let out = read_out(&a.out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["id"], "q1");
        let f1 = metrics::compute(
            "f1",
            &ScoreInput {
                response: Some("the cat sat".into()),
                ground_truth: Some("a cat sat down".into()),
                ..ScoreInput::default()
            },
        )
        .ok()
        .flatten();
        assert_eq!(out[0]["f1"].as_f64(), f1);
        assert!(out[0].contains_key("rougeL") && !out[0].contains_key("mrr@2"));
        assert_eq!(out[1]["id"], 2);
        assert_eq!(out[1]["mrr@2"].as_f64(), Some(0.5));
        assert!(!out[1].contains_key("f1"));
        assert_eq!(summary.rows, 2);
        let names: Vec<&str> = summary.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["f1", "rougeL", "mrr@2"], "deduplicated, in order");
        assert_eq!(summary.metrics[2], MetricSummary { name: "mrr@2".into(), count: 1, mean: Some(0.5) });
        assert!(summary.to_string().contains("scored 2 rows"));
    }

    #[test]
    fn default_metrics_are_those_that_apply() {
        let dir = tempdir();
        let a = args(dir.path(), &[]);
        // Leading BOM: must be tolerated.
        std::fs::write(
            &a.input,
            "\u{feff}{\"id\":\"x\",\"response\":\"Paris\",\"ground_truth\":\"paris\"}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let summary = score_file(&a).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = summary.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, metrics::text_metrics());
        let out = read_out(&a.out);
        assert_eq!(out[0]["exact_match"].as_f64(), Some(1.0));
        assert!(!out[0].contains_key("ndcg"));
    }

    #[test]
    fn malformed_line_names_file_and_line_and_writes_nothing() {
        let dir = tempdir();
        let a = args(dir.path(), &["f1"]);
        for (bad, why) in [
            ("{not json", "invalid JSON"),
            ("[1,2]", "JSON object"),
            (r#"{"response":"x"}"#, "missing `id`"),
            (r#"{"id":"a","response":3}"#, "`response` must be a string"),
            (r#"{"id":"a","relevant_doc_ids":"d1"}"#, "array"),
        ] {
            std::fs::write(
                &a.input,
                format!("{{\"id\":\"ok\",\"response\":\"a\",\"ground_truth\":\"a\"}}\n{bad}\n"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let err = score_file(&a).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("in.jsonl:2") && err.contains(why), "{bad}: {err}");
            assert!(!a.out.exists(), "nothing may be written on error");
        }
        let leftovers = std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 1, "only the input file remains");
    }

    #[test]
    fn unknown_metric_and_missing_input_are_errors() {
        let dir = tempdir();
        let a = args(dir.path(), &["f1", "bogus"]);
        std::fs::write(&a.input, "").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(score_file(&a), Err(EvalError::UnknownMetric { name, .. }) if name == "bogus"));
        let a = args(&dir.path().join("missing"), &[]);
        assert!(matches!(score_file(&a), Err(EvalError::Io { .. })));
    }

    #[test]
    fn mapped_columns_and_custom_evaluators_score() {
        let dir = tempdir();
        let mut a = args(dir.path(), &["f1"]);
        a.map = vec!["response=prediction".into(), "ground_truth=answer".into(), "id=qid".into()];
        let ev = dir.path().join("ev.toml");
        std::fs::write(&ev, "[[evaluator]]\nname = \"cites\"\nkind = \"contains\"\nany = [\"[1]\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        a.evaluators = Some(ev.clone());
        std::fs::write(&a.input, "{\"qid\":\"x\",\"prediction\":\"Paris [1]\",\"answer\":\"paris\"}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        score_file(&a).unwrap_or_else(|e| panic!("{e}"));
        let out = read_out(&a.out);
        assert_eq!(out[0]["id"], "x");
        assert!(out[0]["f1"].as_f64().is_some_and(|f| f > 0.6), "{:?}", out[0]);
        assert_eq!(out[0]["cites"].as_f64(), Some(1.0));
        a.map = vec!["id=nope".into()];
        let err = score_file(&a).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("`nope` (mapped to id)"), "{err}");
        let mut j = args(dir.path(), &["groundedness"]);
        j.evaluators = None;
        assert!(score_file(&j).err().map(|e| e.to_string()).unwrap_or_default().contains("eval run"));
    }

    #[tokio::test]
    async fn run_writes_output() {
        let dir = tempdir();
        let a = args(dir.path(), &["bleu"]);
        std::fs::write(&a.input, "{\"id\":\"1\",\"response\":\"a b c d\",\"ground_truth\":\"a b c d\"}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        run(a.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        let out = read_out(&a.out);
        assert!(out[0]["bleu"].as_f64().is_some_and(|b| (b - 1.0).abs() < 1e-12));
    }
}
