//! Error → `tonic::Status` maps. A mesh error's class is decided in
//! `mesh::error` by one exhaustive `match` (`MeshError::class`, with the
//! reasons), and its code is the class's standard gRPC code; batch errors
//! are mapped here, also by an exhaustive `match`. Either way a new variant
//! cannot slip out as `INTERNAL` unnoticed.

use tonic::Status;

use crate::batch::BatchError;
use crate::mesh::MeshError;
use crate::retrieval::RetrievalError;

/// The status of a failed mesh request: its class's code, its message.
/// Its message is [`MeshError::public_message`]: a provider's error body or
/// an internal URL stays in the log.
pub fn status(err: MeshError) -> Status {
    Status::new(tonic::Code::from(err.class().grpc_code()), err.public_message())
}

/// The map from batch errors to status codes.
pub fn batch_status(err: BatchError) -> Status {
    let message = err.to_string();
    match err {
        BatchError::NotFound(_) => Status::not_found(message),
        BatchError::InvalidRequest(_) => Status::invalid_argument(message),
        BatchError::Quota(_) => Status::resource_exhausted(message),
        BatchError::Postgres(_) => Status::unavailable(message),
        BatchError::RequestIdReused(_) => Status::already_exists(message),
        // Not OUT_OF_RANGE: `limits.rs` reads that code as tonic's
        // message-size refusal.
        BatchError::OffsetOutOfRange { .. } => Status::invalid_argument(message),
        // Busy, full or unwritable storage: the caller may retry later.
        BatchError::Db { .. } | BatchError::Sqlite(_) | BatchError::Io { .. } => Status::unavailable(message),
        BatchError::Closed | BatchError::Locked { .. } => Status::unavailable(message),
        BatchError::Corrupt(_) => Status::data_loss(message),
        BatchError::Join(_) => Status::internal(message),
        // Client-side errors (`meshops batch`); a server never returns them.
        BatchError::Input { .. } | BatchError::Client(_) => Status::internal(message),
    }
}

/// The map from retrieval errors to status codes, for the `Admin` service
/// (a retrieval error inside a request is a [`MeshError`] with its class).
pub fn retrieval_status(err: RetrievalError) -> Status {
    let message = err.to_string();
    match err {
        // The request's documents (the service checks them first; this is
        // what the ingest itself still finds).
        RetrievalError::Input { .. } => Status::invalid_argument(message),
        // The store or the embedder is down or busy: the caller may retry.
        RetrievalError::Store { .. }
        | RetrievalError::Embed { .. }
        | RetrievalError::Io { .. }
        | RetrievalError::Locked { .. } => Status::unavailable(message),
        // The embedder does not fit the collection: the deployment's to fix,
        // and a retry fails the same way.
        RetrievalError::Dimension { .. } => Status::failed_precondition(message),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::llm::LlmError;
    use crate::mesh::ErrorClass;
    use crate::retrieval::RetrievalError;

    #[test]
    fn every_class_has_its_tonic_code() {
        for class in ErrorClass::ALL {
            // Exhaustive: a new class must be given its code here.
            let want = match class {
                ErrorClass::InvalidArgument => Code::InvalidArgument,
                ErrorClass::FailedPrecondition => Code::FailedPrecondition,
                ErrorClass::DeadlineExceeded => Code::DeadlineExceeded,
                ErrorClass::Cancelled => Code::Cancelled,
                ErrorClass::Unavailable => Code::Unavailable,
                ErrorClass::Internal => Code::Internal,
            };
            assert_eq!(Code::from(class.grpc_code()), want, "{class:?}");
        }
    }

    #[test]
    fn mesh_errors_keep_their_codes_and_messages() {
        let model = |source| MeshError::Model { agent: "a".into(), profile: "p".into(), source };
        let llm_status = |code| LlmError::Status { model: "m".into(), code, message: String::new() };
        let retrieval = |source| MeshError::Retrieval { agent: "a".into(), source };
        let cases = [
            (MeshError::InvalidRequest("x".into()), Code::InvalidArgument),
            (
                MeshError::UnknownVariant { variant: "v".into(), known: "(none)".into() },
                Code::InvalidArgument,
            ),
            (model(LlmError::Unavailable { model: "m".into(), message: String::new() }), Code::Unavailable),
            (model(LlmError::Timeout { model: "m".into(), timeout_ms: 1 }), Code::Unavailable),
            (
                model(LlmError::Rejected { model: "m".into(), message: String::new() }),
                Code::FailedPrecondition,
            ),
            (model(LlmError::BadResponse { model: "m".into(), message: String::new() }), Code::Internal),
            (model(llm_status(429)), Code::Unavailable),
            (model(llm_status(503)), Code::Unavailable),
            (model(llm_status(401)), Code::FailedPrecondition),
            (
                retrieval(RetrievalError::Store { collection: "c".into(), message: String::new() }),
                Code::Unavailable,
            ),
            (
                retrieval(RetrievalError::Input { path: "p".into(), message: String::new() }),
                Code::FailedPrecondition,
            ),
            (
                MeshError::Prompt {
                    agent: "a".into(),
                    source: crate::prompt::PromptError::Render { path: "p".into(), message: "m".into() },
                },
                Code::FailedPrecondition,
            ),
            (MeshError::AgentTimeout { agent: "a".into(), timeout_ms: 1 }, Code::Unavailable),
            (MeshError::DeadlineExceeded, Code::DeadlineExceeded),
            (MeshError::Cancelled, Code::Cancelled),
            (MeshError::AgentUnavailable { agent: "a".into(), message: "m".into() }, Code::Unavailable),
            (MeshError::AgentPanicked { agent: "a".into() }, Code::Internal),
            (MeshError::NoFlow { intent: "i".into() }, Code::FailedPrecondition),
            (MeshError::internal(Some("a"), "returned no draft"), Code::Internal),
            (MeshError::Startup("s".into()), Code::Unavailable),
        ];
        for (err, code) in cases {
            let message = err.public_message();
            let s = status(err);
            assert_eq!((s.code(), s.message()), (code, message.as_str()));
        }
        // What the public message leaves out: a provider's body, a store's
        // address; the rest is the error's own text.
        let leaky = model(LlmError::Status {
            model: "m".into(),
            code: 502,
            message: "body at http://10.0.0.7".into(),
        });
        assert!(leaky.to_string().contains("10.0.0.7"));
        let s = status(leaky);
        assert!(s.message().contains("HTTP 502") && !s.message().contains("10.0.0.7"), "{}", s.message());
        let store = retrieval(RetrievalError::Store {
            collection: "c".into(),
            message: "qdrant at http://10.0.0.8:6334".into(),
        });
        assert!(!status(store).message().contains("10.0.0.8"));
        let timeout = MeshError::AgentTimeout { agent: "a".into(), timeout_ms: 1 };
        assert_eq!(timeout.public_message(), timeout.to_string());
    }
}
