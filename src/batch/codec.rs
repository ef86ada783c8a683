//! How batch items and results are stored, the same in both stores:
//! inputs and answers as JSON, a failure as its gRPC code and message.

use super::BatchError;
use crate::mesh::{Answer, AskInput, Usage};

/// How an item ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Boxed: an answer is large, and most of a job's life is spent
    /// moving smaller values around.
    Answered(Box<Answer>),
    /// A gRPC status code and message, as `Ask` would have answered.
    Failed { code: i32, message: String },
}

/// An item as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    /// The caller's own id for it (a dataset row's `id`), carried back on
    /// its result.
    pub id: Option<String>,
    pub input: AskInput,
}

/// Items as stored: the input as JSON, and the caller's id.
pub(super) fn encode_items(items: &[NewItem]) -> Result<Vec<(String, Option<String>)>, BatchError> {
    items
        .iter()
        .map(|item| serde_json::to_string(&item.input).map(|input| (input, item.id.clone())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BatchError::Corrupt(format!("cannot encode an item: {e}")))
}

/// An outcome as stored: its code (0: answered), message, answer as JSON
/// and usage.
pub(super) fn encode_outcome(outcome: &Outcome) -> Result<(i32, String, Option<String>, Usage), BatchError> {
    Ok(match outcome {
        Outcome::Answered(a) => {
            let json = serde_json::to_string(a)
                .map_err(|e| BatchError::Corrupt(format!("cannot encode an answer: {e}")))?;
            (0, String::new(), Some(json), a.usage.clone())
        }
        Outcome::Failed { code, message } => (*code, message.clone(), None, Usage::default()),
    })
}

/// A stored result back as an outcome.
pub(super) fn decode_outcome(
    job_id: &str,
    index: i64,
    code: i32,
    message: String,
    answer: Option<String>,
) -> Result<Outcome, BatchError> {
    match (code, answer) {
        (0, Some(json)) => {
            Ok(Outcome::Answered(serde_json::from_str(&json).map_err(|e| {
                BatchError::Corrupt(format!("job {job_id} item {index}: stored answer: {e}"))
            })?))
        }
        (0, None) => Err(BatchError::Corrupt(format!("job {job_id} item {index}: result has no answer"))),
        (code, _) => Ok(Outcome::Failed { code, message }),
    }
}
