//! Why a request failed in the mesh ([`MeshError`]), and what class of
//! failure that is for a caller ([`ErrorClass`]).
//!
//! The class is decided here, in one exhaustive `match` with no wildcard, so
//! a new variant cannot slip out with a code nobody chose. The mesh knows no
//! tonic: [`ErrorClass::grpc_code`] gives the standard gRPC status code
//! number (a wire standard), and the gateway and the batch runner turn it
//! into their own types.

use crate::llm::LlmError;
use crate::prompt::PromptError;
use crate::retrieval::RetrievalError;

/// Why a request failed in the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unknown variant `{variant}`; known: {known}")]
    UnknownVariant { variant: String, known: String },
    #[error("agent `{agent}` (model profile `{profile}`): {source}")]
    Model {
        agent: String,
        profile: String,
        #[source]
        source: LlmError,
    },
    #[error("agent `{agent}`: {source}")]
    Retrieval {
        agent: String,
        #[source]
        source: RetrievalError,
    },
    /// The agent's prompt could not be rendered: at start-up with its fixed
    /// values, or on a request with that request's values.
    #[error("agent `{agent}`: prompt: {source}")]
    Prompt {
        agent: String,
        #[source]
        source: PromptError,
    },
    /// An `llm` agent with JSON output got a reply that is not JSON, or
    /// does not fit the schema its prompt's `outputs` declare.
    #[error("agent `{agent}` (model {model}): the reply does not fit the declared outputs: {message}")]
    StructuredOutput { agent: String, model: String, message: String },
    #[error("agent `{agent}` did not finish within {timeout_ms} ms")]
    AgentTimeout { agent: String, timeout_ms: u64 },
    #[error("request deadline exceeded")]
    DeadlineExceeded,
    #[error("request cancelled")]
    Cancelled,
    #[error("agent `{agent}` is unavailable: {message}")]
    AgentUnavailable { agent: String, message: String },
    /// The agent's code panicked while serving this request; the replica
    /// was restarted by its supervisor.
    #[error(
        "agent `{agent}` failed: it panicked while serving this request and was restarted; \
         the gateway log has the details"
    )]
    AgentPanicked { agent: String },
    #[error("no flow for intent `{intent}`")]
    NoFlow { intent: String },
    /// A broken invariant of the mesh itself: a step sent to an agent of
    /// the wrong kind, a step output of the wrong shape, a flow naming an
    /// agent that validation let through. A bug, never the caller's fault.
    #[error("internal error{}: {message}", agent.as_deref().map(|a| format!(" in agent `{a}`")).unwrap_or_default())]
    Internal { agent: Option<String>, message: String },
    #[error("mesh failed to start: {0}")]
    Startup(String),
    /// The model clients of the configured profiles could not be built.
    #[error("mesh failed to start: model clients: {0}")]
    ModelClients(#[source] LlmError),
    /// The mesh's actor thread could not be spawned.
    #[error("mesh failed to start: cannot spawn the mesh thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl MeshError {
    /// What a caller is told: the error without what only the operator
    /// should see — a model provider's error body, an endpoint's URL, a
    /// store's address — which the gateway logs in full with the request's
    /// trace id. Every other error is its own text.
    pub fn public_message(&self) -> String {
        const LOGGED: &str = "the details are in the gateway's log";
        match self {
            MeshError::Model { agent, profile, source } => match source {
                LlmError::Timeout { timeout_ms, .. } => {
                    format!(
                        "agent `{agent}` (model profile `{profile}`): the model did not answer within {timeout_ms} ms"
                    )
                }
                LlmError::Status { code, .. } => format!(
                    "agent `{agent}` (model profile `{profile}`): the model provider answered HTTP {code}; {LOGGED}"
                ),
                other => format!(
                    "agent `{agent}` (model profile `{profile}`): the model call failed ({}); {LOGGED}",
                    other.kind()
                ),
            },
            MeshError::Retrieval { agent, source } => match source {
                // The caller's own documents: theirs to see.
                RetrievalError::Input { .. } => self.to_string(),
                _ => format!("agent `{agent}`: retrieval failed; {LOGGED}"),
            },
            other => other.to_string(),
        }
    }

    /// An invariant of the mesh that does not hold (see
    /// [`MeshError::Internal`]).
    pub fn internal(agent: Option<&str>, message: impl Into<String>) -> MeshError {
        MeshError::Internal { agent: agent.map(str::to_string), message: message.into() }
    }

    /// What class of failure this is for a caller: what a client can do
    /// about it, and so which status code it gets.
    pub fn class(&self) -> ErrorClass {
        match self {
            MeshError::InvalidRequest(_) | MeshError::UnknownVariant { .. } => ErrorClass::InvalidArgument,
            MeshError::Model { source, .. } => match source {
                LlmError::Unavailable { .. } | LlmError::Timeout { .. } => ErrorClass::Unavailable,
                LlmError::Rejected { .. } => ErrorClass::FailedPrecondition,
                LlmError::BadResponse { .. } => ErrorClass::Internal,
                // 429 and 5xx mean the provider is down or overloaded (retries
                // and fallback already ran out); other codes (401, 403, 404,
                // 422, …) mean this deployment's model set-up is wrong.
                LlmError::Status { code, .. } if *code == 429 || (500..=599).contains(code) => {
                    ErrorClass::Unavailable
                }
                LlmError::Status { .. } => ErrorClass::FailedPrecondition,
            },
            MeshError::Retrieval { source, .. } => match source {
                RetrievalError::Store { .. }
                | RetrievalError::Embed { .. }
                | RetrievalError::Io { .. }
                | RetrievalError::Locked { .. } => ErrorClass::Unavailable,
                RetrievalError::Dimension { .. } | RetrievalError::Input { .. } => {
                    ErrorClass::FailedPrecondition
                }
            },
            // FAILED_PRECONDITION, not INTERNAL: the prompt is a file of the
            // deployment (a researcher's), compiled at load and rendered with
            // its fixed values at start-up, so a render that fails on a
            // request means the deployed prompt does not fit the values the
            // agent gives it. The operator fixes the file, not the code, and a
            // retry of the same request fails the same way. (Until this
            // variant existed it left as a rejected model call, which maps to
            // FAILED_PRECONDITION too.)
            MeshError::Prompt { .. } => ErrorClass::FailedPrecondition,
            // FAILED_PRECONDITION, not UNAVAILABLE: the deployed model and
            // prompt do not produce the outputs the prompt declares (a small
            // model that never closes its JSON, a schema the prompt does
            // not explain). The operator fixes the prompt, the schema or the
            // model; a client retrying the same request is told not to.
            // Not INTERNAL either: meshops did what it was set up to do.
            MeshError::StructuredOutput { .. } => ErrorClass::FailedPrecondition,
            MeshError::AgentTimeout { .. } => ErrorClass::Unavailable,
            MeshError::DeadlineExceeded => ErrorClass::DeadlineExceeded,
            MeshError::Cancelled => ErrorClass::Cancelled,
            MeshError::AgentUnavailable { .. } => ErrorClass::Unavailable,
            // A panic is a bug, not an outage: the same request would likely
            // panic again, so clients must not be told to retry it (which
            // UNAVAILABLE means). Later requests are served by the restarted
            // replica.
            MeshError::AgentPanicked { .. } => ErrorClass::Internal,
            MeshError::NoFlow { .. } => ErrorClass::FailedPrecondition,
            // A bug: retrying cannot help, so not UNAVAILABLE.
            MeshError::Internal { .. } => ErrorClass::Internal,
            // The mesh is not running (yet, or any more): come back later.
            MeshError::Startup(_) | MeshError::ModelClients(_) | MeshError::Thread(_) => {
                ErrorClass::Unavailable
            }
        }
    }
}

/// What class of failure a [`MeshError`] is, for a caller: exactly the
/// gRPC codes the mesh's errors leave with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request itself is wrong; do not retry it unchanged.
    InvalidArgument,
    /// This deployment cannot serve the request as set up (model, prompt,
    /// store or flow configuration); retrying does not help.
    FailedPrecondition,
    /// The request's deadline passed.
    DeadlineExceeded,
    /// The caller went away.
    Cancelled,
    /// Something the mesh depends on is down or slow; a retry may succeed.
    Unavailable,
    /// A bug in the mesh; retrying does not help.
    Internal,
}

impl ErrorClass {
    /// Every class, for tests that must cover each one.
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::InvalidArgument,
        ErrorClass::FailedPrecondition,
        ErrorClass::DeadlineExceeded,
        ErrorClass::Cancelled,
        ErrorClass::Unavailable,
        ErrorClass::Internal,
    ];

    /// The standard gRPC status code number of this class (the numbers of
    /// `google.rpc.Code`, which every gRPC library shares).
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorClass::Cancelled => 1,
            ErrorClass::InvalidArgument => 3,
            ErrorClass::DeadlineExceeded => 4,
            ErrorClass::FailedPrecondition => 9,
            ErrorClass::Internal => 13,
            ErrorClass::Unavailable => 14,
        }
    }
}

/// A short, stable name for an error, for `error.type` and metrics.
pub fn error_kind(e: &MeshError) -> &'static str {
    match e {
        MeshError::InvalidRequest(_) => "invalid_request",
        MeshError::UnknownVariant { .. } => "unknown_variant",
        MeshError::Model { source, .. } => crate::llm::traced::error_type(source),
        MeshError::Retrieval { .. } => "retrieval",
        MeshError::Prompt { .. } => "prompt",
        MeshError::StructuredOutput { .. } => "structured_output",
        MeshError::AgentTimeout { .. } => "agent_timeout",
        MeshError::DeadlineExceeded => "deadline_exceeded",
        MeshError::Cancelled => "cancelled",
        MeshError::AgentUnavailable { .. } => "agent_unavailable",
        MeshError::AgentPanicked { .. } => "agent_panicked",
        MeshError::NoFlow { .. } => "no_flow",
        MeshError::Internal { .. } => "internal",
        MeshError::Startup(_) | MeshError::ModelClients(_) | MeshError::Thread(_) => "startup",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_are_the_standard_numbers_and_distinct() {
        let mut codes: Vec<i32> = ErrorClass::ALL.iter().map(|c| c.grpc_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes, [1, 3, 4, 9, 13, 14]);
    }

    #[test]
    fn invariant_violations_are_internal_and_name_the_agent() {
        let e = MeshError::internal(Some("critic"), "returned no verdict");
        assert_eq!(e.class(), ErrorClass::Internal);
        assert_eq!(e.to_string(), "internal error in agent `critic`: returned no verdict");
        assert_eq!(MeshError::internal(None, "x").to_string(), "internal error: x");
        assert_eq!(error_kind(&e), "internal");
    }
}
