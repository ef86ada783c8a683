//! The one map from mesh errors to gRPC status codes. It is an exhaustive
//! `match`: a new error variant cannot slip out as `INTERNAL` unnoticed.

use tonic::Status;

use crate::batch::BatchError;
use crate::llm::LlmError;
use crate::mesh::MeshError;
use crate::retrieval::RetrievalError;

pub fn status(err: MeshError) -> Status {
    let message = err.to_string();
    match err {
        MeshError::InvalidRequest(_) | MeshError::UnknownVariant { .. } => Status::invalid_argument(message),
        MeshError::Model { source, .. } => match source {
            LlmError::Unavailable { .. } | LlmError::Timeout { .. } => Status::unavailable(message),
            LlmError::Rejected { .. } => Status::failed_precondition(message),
            LlmError::BadResponse { .. } => Status::internal(message),
            // 429 and 5xx mean the provider is down or overloaded (retries
            // and fallback already ran out); other codes (401, 403, 404,
            // 422, …) mean this deployment's model set-up is wrong.
            LlmError::Status { code, .. } if code == 429 || (500..=599).contains(&code) => {
                Status::unavailable(message)
            }
            LlmError::Status { .. } => Status::failed_precondition(message),
        },
        MeshError::Retrieval { source, .. } => match source {
            RetrievalError::Store { .. } | RetrievalError::Embed { .. } | RetrievalError::Io { .. } => {
                Status::unavailable(message)
            }
            RetrievalError::Dimension { .. } | RetrievalError::Input { .. } => {
                Status::failed_precondition(message)
            }
        },
        MeshError::AgentTimeout { .. } => Status::unavailable(message),
        MeshError::DeadlineExceeded => Status::deadline_exceeded(message),
        MeshError::Cancelled => Status::cancelled(message),
        MeshError::AgentUnavailable { .. } => Status::unavailable(message),
        // A panic is a bug, not an outage: the same request would likely
        // panic again, so clients must not be told to retry it (which
        // UNAVAILABLE means). Later requests are served by the restarted
        // replica.
        MeshError::AgentPanicked { .. } => Status::internal(message),
        MeshError::NoFlow { .. } => Status::failed_precondition(message),
        MeshError::Startup(_) => Status::unavailable(message),
    }
}

/// The map from batch errors to status codes.
pub fn batch_status(err: BatchError) -> Status {
    let message = err.to_string();
    match err {
        BatchError::NotFound(_) => Status::not_found(message),
        BatchError::InvalidRequest(_) => Status::invalid_argument(message),
        BatchError::RequestIdReused(_) => Status::already_exists(message),
        // Not OUT_OF_RANGE: `limits.rs` reads that code as tonic's
        // message-size refusal.
        BatchError::OffsetOutOfRange { .. } => Status::invalid_argument(message),
        // Busy, full or unwritable storage: the caller may retry later.
        BatchError::Db { .. } | BatchError::Sqlite(_) | BatchError::Io { .. } => Status::unavailable(message),
        BatchError::Closed => Status::unavailable(message),
        BatchError::Corrupt(_) => Status::data_loss(message),
        BatchError::Join(_) => Status::internal(message),
        // Client-side errors (`meshops batch`); a server never returns them.
        BatchError::Input { .. } | BatchError::Client(_) => Status::internal(message),
    }
}
