//! Agents: one type per agent kind behind one small trait
//! ([`KindLogic`], in `step.rs`), the kind-agnostic actor around them
//! (`actor.rs`), and the one table that says which type serves which kind
//! ([`KINDS`]).
//!
//! A new kind is a file here with a type implementing [`KindLogic`], and one
//! line in [`KINDS`] (plus its `AgentKind` and settings in `config`).

mod actor;
pub mod critic;
pub mod llm;
pub mod retriever;
pub mod router;
pub mod step;
pub mod summarizer;
#[cfg(test)]
#[path = "tests/support.rs"]
mod test_support;

pub use actor::{AgentActor, AgentLogic};
pub use step::{KindLogic, Model, StepContext};

use crate::config::{AgentKind, AgentSpec};
use crate::mesh::{MeshError, Resources};

/// Builds an agent's logic: every profile prepared as one kind's type.
type Build = fn(&AgentSpec, &Resources) -> Result<AgentLogic, MeshError>;

/// The registration table: which type serves each agent kind.
pub const KINDS: &[(AgentKind, Build)] = &[
    (AgentKind::Router, AgentLogic::of::<router::Router>),
    (AgentKind::Retriever, AgentLogic::of::<retriever::Retriever>),
    (AgentKind::Summarizer, AgentLogic::of::<summarizer::Summarizer>),
    (AgentKind::Critic, AgentLogic::of::<critic::Critic>),
    (AgentKind::Llm, AgentLogic::of::<llm::Llm>),
];

impl AgentLogic {
    /// The logic of agent `spec`, by its kind's entry in [`KINDS`]. Fails
    /// at start-up when a profile cannot be served (a model-calling kind
    /// with no model or prompt, a prompt that does not render with its
    /// fixed values).
    pub fn new(spec: &AgentSpec, resources: &Resources) -> Result<AgentLogic, MeshError> {
        match KINDS.iter().find(|(kind, _)| *kind == spec.kind) {
            Some((_, build)) => build(spec, resources),
            None => Err(MeshError::Startup(format!(
                "agent `{}`: no logic is registered for kind `{}`",
                spec.name,
                spec.kind.as_str()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_once() {
        for kind in [
            AgentKind::Router,
            AgentKind::Retriever,
            AgentKind::Summarizer,
            AgentKind::Critic,
            AgentKind::Llm,
        ] {
            assert_eq!(KINDS.iter().filter(|(k, _)| *k == kind).count(), 1, "{kind:?}");
        }
    }
}
