//! Evaluators: what every metric is (name, kind, version, scale,
//! threshold), custom evaluators declared in a TOML file (`--evaluators
//! FILE`), and column mapping for datasets with other field names.
//!
//! ```toml
//! [columns]                 # canonical field = the dataset's field
//! query = "question"
//! ground_truth = "answer"
//!
//! [thresholds]              # pass thresholds of standard metrics and judges
//! f1 = 0.6
//! latency_ms = 2000         # lower-is-better metrics pass at or below
//!
//! [[evaluator]]
//! name = "cites_a_source"
//! kind = "contains"         # contains | regex | json_schema | llm_rubric
//! version = "1"
//! any = ["[1]", "[2]"]      # or all = [...]
//! case_sensitive = false
//! ```
//!
//! `contains`, `regex` and `json_schema` score 1 or 0 on the 0–1 scale
//! (threshold 1 unless given); `llm_rubric` sends its `rubric` to the judge
//! and scores 1–5 (threshold 3 unless given). Every problem in the file is
//! an error naming the file, the evaluator and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::EvalError;
use super::dataset::check_canonical;
// The column map is read with the evaluators file; it lives with the
// dataset it renames.
pub use super::dataset::{CANONICAL_FIELDS, ColumnMap};
use super::judge;

/// Metrics the harness computes itself, always present on successful rows.
pub const OWN_METRICS: &[&str] =
    &["ok", "latency_ms", "cost_usd", "input_tokens", "output_tokens", "intent_match"];

/// What every metric in `scores.jsonl` is; listed in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluatorInfo {
    /// `harness` (ok, intent_match), `operational` (latency, tokens, cost),
    /// `standard` (reference-parity metrics), `judge`, or a custom kind.
    pub kind: String,
    pub version: String,
    /// Lowest and highest value; the highest is `None` when unbounded.
    pub scale: (f64, Option<f64>),
    /// Per-row pass threshold; `None` for measurements without one.
    pub threshold: Option<f64>,
    pub higher_is_better: bool,
}

impl EvaluatorInfo {
    /// Whether `value` passes; `None` without a threshold.
    pub fn passes(&self, value: f64) -> Option<bool> {
        let t = self.threshold?;
        Some(if self.higher_is_better { value >= t - 1e-12 } else { value <= t + 1e-12 })
    }
}

/// A custom evaluator's check.
#[derive(Debug, Clone)]
pub enum CustomKind {
    Contains { strings: Vec<String>, all: bool, case_sensitive: bool },
    Regex { regex: regex::Regex, must_match: bool },
    JsonSchema { schema: Value },
    LlmRubric { rubric: String },
}

impl CustomKind {
    fn name(&self) -> &'static str {
        match self {
            CustomKind::Contains { .. } => "contains",
            CustomKind::Regex { .. } => "regex",
            CustomKind::JsonSchema { .. } => "json_schema",
            CustomKind::LlmRubric { .. } => "llm_rubric",
        }
    }
}

/// One custom evaluator from the file.
#[derive(Debug, Clone)]
pub struct Custom {
    pub name: String,
    pub version: String,
    pub threshold: f64,
    pub kind: CustomKind,
}

impl Custom {
    /// Whether the judge scores this one.
    pub fn rubric(&self) -> Option<&str> {
        match &self.kind {
            CustomKind::LlmRubric { rubric } => Some(rubric),
            _ => None,
        }
    }

    /// Name, kind, version, scale and threshold.
    pub fn info(&self) -> EvaluatorInfo {
        let scale = if self.rubric().is_some() {
            (judge::JUDGE_SCALE.0, Some(judge::JUDGE_SCALE.1))
        } else {
            (0.0, Some(1.0))
        };
        EvaluatorInfo {
            kind: self.kind.name().to_string(),
            version: self.version.clone(),
            scale,
            threshold: Some(self.threshold),
            higher_is_better: true,
        }
    }

    /// Scores a response with a rule-based check: 1 or 0 and the reason.
    /// `None` for `llm_rubric` (the judge scores those).
    pub fn score(&self, response: &str) -> Option<(f64, String)> {
        let hit = |ok: bool| if ok { 1.0 } else { 0.0 };
        Some(match &self.kind {
            CustomKind::Contains { strings, all, case_sensitive } => {
                let norm = |s: &str| if *case_sensitive { s.to_string() } else { s.to_lowercase() };
                let text = norm(response);
                let missing: Vec<&String> = strings.iter().filter(|s| !text.contains(&norm(s))).collect();
                let found = strings.len() - missing.len();
                let ok = if *all { missing.is_empty() } else { found > 0 };
                let reason = if missing.is_empty() {
                    format!("contains all {} strings", strings.len())
                } else {
                    format!(
                        "contains {found} of {}; missing: {}",
                        strings.len(),
                        missing.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
                    )
                };
                (hit(ok), reason)
            }
            CustomKind::Regex { regex, must_match } => {
                let found = regex.find(response);
                let reason = match &found {
                    Some(m) => format!("matches {:?}", m.as_str()),
                    None => "no match".to_string(),
                };
                (hit(found.is_some() == *must_match), reason)
            }
            CustomKind::JsonSchema { schema } => match serde_json::from_str::<Value>(response.trim()) {
                Err(e) => (0.0, format!("the response is not JSON: {e}")),
                Ok(v) => {
                    let errors = super::schema::validate(schema, &v);
                    match errors.first() {
                        None => (1.0, "valid against the schema".to_string()),
                        Some(first) => (0.0, format!("{} violation(s); first: {first}", errors.len())),
                    }
                }
            },
            CustomKind::LlmRubric { .. } => return None,
        })
    }
}

/// A loaded evaluators file.
#[derive(Debug, Clone, Default)]
pub struct EvaluatorSet {
    pub path: Option<PathBuf>,
    pub columns: ColumnMap,
    /// Thresholds replacing the defaults of standard metrics and judges.
    pub thresholds: BTreeMap<String, f64>,
    pub evaluators: Vec<Custom>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    columns: BTreeMap<String, String>,
    #[serde(default)]
    thresholds: BTreeMap<String, f64>,
    #[serde(default)]
    evaluator: Vec<RawEvaluator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvaluator {
    name: Option<String>,
    kind: Option<String>,
    version: Option<String>,
    threshold: Option<f64>,
    any: Option<Vec<String>>,
    all: Option<Vec<String>>,
    case_sensitive: Option<bool>,
    pattern: Option<String>,
    must_match: Option<bool>,
    schema: Option<toml::Value>,
    schema_file: Option<PathBuf>,
    rubric: Option<String>,
}

/// Names the standard metrics, judges and harness metrics take.
fn reserved(name: &str) -> bool {
    super::metrics::metric_info(name).is_some() || judge::is_judge(name) || OWN_METRICS.contains(&name)
}

impl EvaluatorSet {
    /// Reads and checks an evaluators file.
    pub fn load(path: &Path) -> Result<EvaluatorSet, EvalError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| EvalError::Io { path: path.display().to_string(), source })?;
        Self::parse(path, &text)
    }

    /// Parses evaluators TOML; `path` names the file in errors and anchors
    /// `schema_file`.
    pub fn parse(path: &Path, text: &str) -> Result<EvaluatorSet, EvalError> {
        let file = path.display().to_string();
        let err = |message: String| EvalError::Input { path: file.clone(), message };
        let raw: RawFile = toml::from_str(text).map_err(|e| err(e.to_string().trim().to_string()))?;
        for canon in raw.columns.keys() {
            check_canonical(canon).map_err(|m| err(format!("field `columns.{canon}`: {m}")))?;
        }
        for (name, t) in &raw.thresholds {
            if !reserved(name) {
                return Err(err(format!(
                    "field `thresholds.{name}`: not a standard metric, judge or harness metric (custom evaluators set `threshold` themselves)"
                )));
            }
            if !t.is_finite() {
                return Err(err(format!("field `thresholds.{name}`: must be a finite number")));
            }
        }
        let mut evaluators: Vec<Custom> = Vec::new();
        for (i, r) in raw.evaluator.into_iter().enumerate() {
            let label =
                format!("evaluator[{i}]{}", r.name.as_ref().map(|n| format!(" (`{n}`)")).unwrap_or_default());
            let field_err = |field: &str, m: &str| err(format!("{label}: field `{field}`: {m}"));
            let name = r
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| field_err("name", "required"))?;
            if reserved(&name) {
                return Err(field_err("name", "is the name of a built-in metric; choose another"));
            }
            if evaluators.iter().any(|e| e.name == name) {
                return Err(field_err("name", "is used by an earlier evaluator"));
            }
            let kind_name = r
                .kind
                .clone()
                .ok_or_else(|| field_err("kind", "required: contains, regex, json_schema or llm_rubric"))?;
            // Fields each kind may set, beyond name, kind, version, threshold.
            let set: Vec<(&str, bool)> = vec![
                ("any", r.any.is_some()),
                ("all", r.all.is_some()),
                ("case_sensitive", r.case_sensitive.is_some()),
                ("pattern", r.pattern.is_some()),
                ("must_match", r.must_match.is_some()),
                ("schema", r.schema.is_some()),
                ("schema_file", r.schema_file.is_some()),
                ("rubric", r.rubric.is_some()),
            ];
            let allowed: &[&str] = match kind_name.as_str() {
                "contains" => &["any", "all", "case_sensitive"],
                "regex" => &["pattern", "must_match"],
                "json_schema" => &["schema", "schema_file"],
                "llm_rubric" => &["rubric"],
                other => {
                    return Err(field_err(
                        "kind",
                        &format!("unknown kind `{other}`; known: contains, regex, json_schema, llm_rubric"),
                    ));
                }
            };
            if let Some((f, _)) = set.iter().find(|(f, on)| *on && !allowed.contains(f)) {
                return Err(field_err(
                    f,
                    &format!("does not apply to kind `{kind_name}` (it takes: {})", allowed.join(", ")),
                ));
            }
            let (given_threshold, version) = (r.threshold, r.version.clone());
            let kind = custom_kind(&kind_name, r, path, &field_err)?;
            let (lo, hi) =
                if matches!(kind, CustomKind::LlmRubric { .. }) { judge::JUDGE_SCALE } else { (0.0, 1.0) };
            let threshold = given_threshold.unwrap_or(if matches!(kind, CustomKind::LlmRubric { .. }) {
                judge::DEFAULT_JUDGE_THRESHOLD
            } else {
                1.0
            });
            if !(lo..=hi).contains(&threshold) {
                return Err(field_err("threshold", &format!("must lie on the evaluator's scale {lo}–{hi}")));
            }
            let version = version.unwrap_or_else(|| "1".into());
            evaluators.push(Custom { name, version, threshold, kind });
        }
        Ok(EvaluatorSet {
            path: Some(path.to_path_buf()),
            columns: ColumnMap(raw.columns),
            thresholds: raw.thresholds,
            evaluators,
        })
    }

    /// The custom evaluator called `name`.
    pub fn get(&self, name: &str) -> Option<&Custom> {
        self.evaluators.iter().find(|e| e.name == name)
    }
}

/// The check of one custom evaluator of kind `kind_name` (already checked
/// to be known, with only its own fields set) from its raw fields;
/// `schema_file` is read relative to the evaluators file at `path`.
fn custom_kind(
    kind_name: &str,
    r: RawEvaluator,
    path: &Path,
    field_err: &dyn Fn(&str, &str) -> EvalError,
) -> Result<CustomKind, EvalError> {
    Ok(match kind_name {
        "contains" => {
            let (strings, all) = match (r.any, r.all) {
                (Some(s), None) => (s, false),
                (None, Some(s)) => (s, true),
                _ => {
                    return Err(field_err("any", "give exactly one of `any` or `all` (a list of strings)"));
                }
            };
            if strings.is_empty() || strings.iter().any(String::is_empty) {
                return Err(field_err(if all { "all" } else { "any" }, "must list non-empty strings"));
            }
            CustomKind::Contains { strings, all, case_sensitive: r.case_sensitive.unwrap_or(false) }
        }
        "regex" => {
            let p = r.pattern.ok_or_else(|| field_err("pattern", "required for kind `regex`"))?;
            let regex =
                regex::Regex::new(&p).map_err(|e| field_err("pattern", &format!("invalid regex: {e}")))?;
            CustomKind::Regex { regex, must_match: r.must_match.unwrap_or(true) }
        }
        "json_schema" => {
            let schema = match (r.schema, r.schema_file) {
                (Some(s), None) => {
                    serde_json::to_value(s).map_err(|e| field_err("schema", &e.to_string()))?
                }
                (None, Some(f)) => {
                    let f = if f.is_absolute() { f } else { path.parent().unwrap_or(Path::new(".")).join(f) };
                    let text = std::fs::read_to_string(&f)
                        .map_err(|e| field_err("schema_file", &format!("{}: {e}", f.display())))?;
                    serde_json::from_str(&text)
                        .map_err(|e| field_err("schema_file", &format!("{}: {e}", f.display())))?
                }
                _ => {
                    return Err(field_err(
                        "schema",
                        "give exactly one of `schema` (inline) or `schema_file`",
                    ));
                }
            };
            super::schema::check(&schema, "schema").map_err(|m| field_err("schema", &m))?;
            CustomKind::JsonSchema { schema }
        }
        _ => {
            let rubric = r
                .rubric
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| field_err("rubric", "required for kind `llm_rubric`"))?;
            CustomKind::LlmRubric { rubric }
        }
    })
}

/// Name, kind, version, scale and threshold of `name` among the harness,
/// operational, standard, judge (`judge_version` gives the judges'
/// versions) and `set`'s custom evaluators; `set`'s thresholds replace the
/// defaults. `None` for unknown names.
pub fn info(name: &str, set: &EvaluatorSet, judge_version: &dyn Fn(&str) -> String) -> Option<EvaluatorInfo> {
    if let Some(c) = set.get(name) {
        let mut i = c.info();
        if c.rubric().is_some() {
            i.version = format!("{}+judge {}", c.version, judge_version(judge::RUBRIC_PROMPT));
        }
        return Some(i);
    }
    let mut info = match name {
        "ok" | "intent_match" => EvaluatorInfo {
            kind: "harness".into(),
            version: "1".into(),
            scale: (0.0, Some(1.0)),
            threshold: Some(1.0),
            higher_is_better: true,
        },
        "latency_ms" | "cost_usd" | "input_tokens" | "output_tokens" => EvaluatorInfo {
            kind: "operational".into(),
            version: "1".into(),
            scale: (0.0, None),
            threshold: None,
            higher_is_better: false,
        },
        j if judge::is_judge(j) => EvaluatorInfo {
            kind: "judge".into(),
            version: judge_version(j),
            scale: (judge::JUDGE_SCALE.0, Some(judge::JUDGE_SCALE.1)),
            threshold: Some(judge::DEFAULT_JUDGE_THRESHOLD),
            higher_is_better: true,
        },
        other => {
            let m = super::metrics::metric_info(other)?;
            EvaluatorInfo {
                kind: "standard".into(),
                version: m.version.to_string(),
                scale: (*m.scale.start(), Some(*m.scale.end())),
                threshold: Some(m.default_threshold),
                higher_is_better: true,
            }
        }
    };
    if let Some(t) = set.thresholds.get(name) {
        info.threshold = Some(*t);
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EvaluatorSet, String> {
        EvaluatorSet::parse(Path::new("ev.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_every_kind_and_scores_rule_based_ones() {
        let set = parse(
            r#"
[columns]
query = "question"
[thresholds]
f1 = 0.6
[[evaluator]]
name = "cites"
kind = "contains"
any = ["[1]", "[2]"]
[[evaluator]]
name = "all_words"
kind = "contains"
all = ["Gateway", "port"]
case_sensitive = true
[[evaluator]]
name = "no_apology"
kind = "regex"
pattern = "(?i)\\bsorry\\b"
must_match = false
version = "2"
[[evaluator]]
name = "json"
kind = "json_schema"
schema = { type = "object", required = ["answer"] }
[[evaluator]]
name = "polite"
kind = "llm_rubric"
rubric = "The answer is polite."
threshold = 4
"#,
        )
        .unwrap();
        assert_eq!(set.columns.0["query"], "question");
        assert_eq!(set.evaluators.len(), 5);
        let s = |n: &str, r: &str| set.get(n).unwrap().score(r).map(|x| x.0);
        assert_eq!(s("cites", "Yes [2]."), Some(1.0));
        assert_eq!(s("cites", "Yes."), Some(0.0));
        assert_eq!(s("all_words", "The Gateway port."), Some(1.0));
        assert_eq!(s("all_words", "The gateway port."), Some(0.0));
        assert_eq!(s("no_apology", "Here it is."), Some(1.0));
        assert_eq!(s("no_apology", "Sorry, no."), Some(0.0));
        assert_eq!(s("json", "{\"answer\": 1}"), Some(1.0));
        assert_eq!(s("json", "{\"x\": 1}"), Some(0.0));
        assert_eq!(s("json", "not json"), Some(0.0));
        assert_eq!(s("polite", "x"), None);
        let v = |_: &str| "j1".to_string();
        let polite = info("polite", &set, &v).unwrap();
        assert_eq!((polite.scale, polite.threshold), ((1.0, Some(5.0)), Some(4.0)));
        assert_eq!(info("f1", &set, &v).unwrap().threshold, Some(0.6));
        assert_eq!(info("no_apology", &set, &v).unwrap().version, "2");
        assert!(info("latency_ms", &set, &v).unwrap().passes(5.0).is_none());
    }

    #[test]
    fn bad_files_name_file_evaluator_and_field() {
        for (text, want) in [
            ("[[evaluator]]\nkind = \"regex\"\npattern = \"x\"\n", "evaluator[0]: field `name`"),
            (
                "[[evaluator]]\nname = \"a\"\nkind = \"regex\"\npattern = \"(\"\n",
                "field `pattern`: invalid regex",
            ),
            (
                "[[evaluator]]\nname = \"a\"\nkind = \"regex\"\nany = [\"x\"]\npattern = \"x\"\n",
                "field `any`: does not apply",
            ),
            ("[[evaluator]]\nname = \"a\"\nkind = \"maybe\"\n", "unknown kind `maybe`"),
            ("[[evaluator]]\nname = \"f1\"\nkind = \"regex\"\npattern = \"x\"\n", "built-in metric"),
            ("[[evaluator]]\nname = \"a\"\nkind = \"contains\"\n", "exactly one of `any` or `all`"),
            (
                "[[evaluator]]\nname = \"a\"\nkind = \"json_schema\"\nschema = { format = \"email\" }\n",
                "schema/format",
            ),
            (
                "[[evaluator]]\nname = \"a\"\nkind = \"llm_rubric\"\nrubric = \"x\"\nthreshold = 9\n",
                "field `threshold`",
            ),
            ("[[evaluator]]\nname = \"a\"\nkind = \"regex\"\npatern = \"x\"\n", "patern"),
            ("[columns]\nquestion = \"q\"\n", "columns.question"),
            ("[thresholds]\nmy_metric = 1\n", "thresholds.my_metric"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("ev.toml") && err.contains(want), "{text}: {err}");
        }
    }
}
