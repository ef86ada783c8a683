//! Dataset rows (JSONL).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One dataset row. Unknown fields are kept in `extra` and passed through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground_truth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant_doc_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}
