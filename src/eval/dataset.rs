//! Dataset rows (JSONL) and the column map that renames a dataset's own
//! field names to the canonical ones before a row is read.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::EvalError;

/// Canonical dataset fields a column map may fill.
pub const CANONICAL_FIELDS: &[&str] =
    &["id", "query", "ground_truth", "context", "relevant_doc_ids", "response", "retrieved_doc_ids"];

/// One dataset row. Unknown fields are kept in `extra` and passed through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Keys the row's results across repeats, variants and resumed runs.
    pub id: String,
    /// What the mesh is asked.
    pub query: String,
    /// The reference answer text metrics and the similarity judge compare
    /// with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground_truth: Option<String>,
    /// Gold document ids for the retrieval metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant_doc_ids: Option<Vec<String>>,
    /// Context the judges read instead of the cited passages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// A conversation's earlier questions, asked first, in order, as turns
    /// of one session; `query` is its last turn, the one scored. A row
    /// with `turns` and no `query` takes its last turn as `query`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<String>,
    /// Every other field (`intent`, …), kept so evaluators can read it.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Canonical field → the dataset's own field name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMap(pub BTreeMap<String, String>);

impl ColumnMap {
    /// Parses `--map canonical=field` arguments.
    pub fn from_args(args: &[String]) -> Result<ColumnMap, EvalError> {
        let mut map = BTreeMap::new();
        for a in args {
            let bad = |message: String| EvalError::Input { path: "--map".into(), message };
            let Some((canon, field)) = a.split_once('=') else {
                return Err(bad(format!("`{a}`: expected CANONICAL=FIELD, e.g. query=question")));
            };
            let (canon, field) = (canon.trim(), field.trim());
            check_canonical(canon).map_err(bad)?;
            if field.is_empty() {
                return Err(bad(format!("`{a}`: the dataset field name is empty")));
            }
            map.insert(canon.to_string(), field.to_string());
        }
        Ok(ColumnMap(map))
    }

    /// This map with `other`'s entries winning.
    pub fn merged(&self, other: &ColumnMap) -> ColumnMap {
        let mut m = self.0.clone();
        m.extend(other.0.clone());
        ColumnMap(m)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Renames the mapped fields of one JSON row to their canonical names.
    /// A canonical field already present is replaced by the mapped one.
    pub fn apply(&self, row: &mut serde_json::Map<String, Value>) {
        for (canon, field) in &self.0 {
            if canon == field {
                continue;
            }
            if let Some(v) = row.remove(field) {
                row.insert(canon.clone(), v);
            }
        }
    }

    /// How a missing canonical field is called in the dataset, for errors.
    pub fn describe(&self, canon: &str) -> String {
        match self.0.get(canon) {
            Some(f) => format!("`{f}` (mapped to {canon})"),
            None => format!("`{canon}`"),
        }
    }
}

/// `Ok` for a canonical field name; otherwise the message listing them.
pub fn check_canonical(canon: &str) -> Result<(), String> {
    if CANONICAL_FIELDS.contains(&canon) {
        Ok(())
    } else {
        Err(format!("unknown canonical field `{canon}`; known: {}", CANONICAL_FIELDS.join(", ")))
    }
}

/// A row's `turns` as written: a list of strings; with no `query`, the
/// last one becomes the query (the turn that is scored).
fn take_last_turn(obj: &mut serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    let Some(turns) = obj.get_mut("turns") else { return Ok(()) };
    let Some(list) = turns.as_array_mut() else {
        return Err("`turns` must be a list of questions".into());
    };
    if list.iter().any(|t| !t.is_string()) {
        return Err("`turns` must be a list of questions (strings)".into());
    }
    if !obj.contains_key("query") {
        let Some(serde_json::Value::Array(list)) = obj.get_mut("turns") else { return Ok(()) };
        match list.pop() {
            Some(last) => {
                obj.insert("query".into(), last);
            }
            None => return Err("`turns` is empty and there is no `query`".into()),
        }
    }
    Ok(())
}

/// Reads a JSONL dataset, renaming fields by `columns` first; every bad
/// line is an error naming file and line. Returns the rows and a hash of
/// the file's bytes (recorded in the summary).
pub fn read_dataset(path: &Path, columns: &ColumnMap) -> Result<(Vec<Row>, String), EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EvalError::Io { path: path.display().to_string(), source })?;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let mut obj = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => return Err(EvalError::Input { path: at(), message: "expected a JSON object".into() }),
            Err(e) => return Err(EvalError::Input { path: at(), message: e.to_string() }),
        };
        columns.apply(&mut obj);
        take_last_turn(&mut obj).map_err(|message| EvalError::Input { path: at(), message })?;
        for required in ["id", "query"] {
            if !obj.contains_key(required) {
                return Err(EvalError::Input {
                    path: at(),
                    message: format!("missing field {}", columns.describe(required)),
                });
            }
        }
        let row: Row = serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| EvalError::Input { path: at(), message: e.to_string() })?;
        if !seen.insert(row.id.clone()) {
            return Err(EvalError::Input {
                path: format!("{}:{}", path.display(), i + 1),
                message: format!("duplicate row id `{}`", row.id),
            });
        }
        rows.push(row);
    }
    Ok((rows, format!("{:016x}", crate::text::fnv1a64(text.as_bytes()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_of_turns_is_scored_on_its_last_turn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(
            &path,
            "{\"id\": \"a\", \"turns\": [\"one\", \"two\", \"three\"]}\n{\"id\": \"b\", \"turns\": [\"one\"], \"query\": \"two\"}\n",
        )
        .unwrap();
        let (rows, _) = read_dataset(&path, &ColumnMap::default()).unwrap();
        assert_eq!(
            (rows[0].query.as_str(), rows[0].turns.clone()),
            ("three", vec!["one".into(), "two".into()])
        );
        assert_eq!((rows[1].query.as_str(), rows[1].turns.clone()), ("two", vec!["one".to_string()]));
        for bad in
            [r#"{"id": "c", "turns": []}"#, r#"{"id": "c", "turns": "one"}"#, r#"{"id": "c", "turns": [1]}"#]
        {
            std::fs::write(&path, bad).unwrap();
            let err = read_dataset(&path, &ColumnMap::default()).unwrap_err().to_string();
            assert!(err.contains("turns") && err.contains("t.jsonl:1"), "{err}");
        }
    }

    #[test]
    fn column_maps_rename_fields() {
        let m = ColumnMap::from_args(&["query=question".into(), "ground_truth = answer".into()]).unwrap();
        let mut row =
            serde_json::json!({"id": "1", "question": "q?", "answer": "a"}).as_object().cloned().unwrap();
        m.apply(&mut row);
        assert_eq!(row["query"], "q?");
        assert_eq!(row["ground_truth"], "a");
        assert!(!row.contains_key("question"));
        assert!(ColumnMap::from_args(&["queryquestion".into()]).unwrap_err().to_string().contains("--map"));
        assert!(
            ColumnMap::from_args(&["prompt=x".into()]).unwrap_err().to_string().contains("unknown canonical")
        );
    }
}
