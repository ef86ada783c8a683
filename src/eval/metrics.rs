//! Standard metrics (to be implemented with reference parity).

use super::EvalError;

/// What a metric may look at for one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreInput {
    pub query: Option<String>,
    pub response: Option<String>,
    pub ground_truth: Option<String>,
    pub context: Option<String>,
    /// Doc ids in the order the system retrieved/cited them.
    pub retrieved_doc_ids: Option<Vec<String>>,
    pub relevant_doc_ids: Option<Vec<String>>,
}

/// Computes metric `name` for one row; `Ok(None)` when the row lacks the
/// fields the metric needs.
pub fn compute(name: &str, _input: &ScoreInput) -> Result<Option<f64>, EvalError> {
    Err(EvalError::UnknownMetric { name: name.to_string(), known: String::new() })
}
