//! The flow model (`[flows.<intent>]` and `[variants.<v>.flows.<intent>]`):
//! a small graph of agent steps written in TOML.
//!
//! A step is written one of three ways, freely mixed in one `steps` list:
//!
//! ```toml
//! [flows.question]
//! steps = [
//!   "classify",                                   # one agent
//!   { agent = "retriever", when = { step = "classify", field = "needs_search", equals = true } },
//!   ["answer_a", "answer_b"],                     # agents run at once (fan-out)
//!   "judge",
//! ]
//! answer = "judge"     # whose output is the answer (default: the last answering step)
//! max_revisions = 1    # how often a critic may send a draft back
//! ```
//!
//! The members of a fan-out group are names or `{ agent, when }` tables;
//! a group never nests another. What each form means at run time, and what
//! is valid, is checked in `flows.rs` against the loaded agents.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeStruct as _, Serializer};
use serde::{Deserialize, Serialize};

/// The steps run for one intent (`[flows.<intent>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The steps in order: an agent, a conditional agent, or a group of
    /// agents run at once. A critic after an answering step sends rejected
    /// drafts back to that step's agent.
    #[serde(default)]
    pub steps: Vec<FlowStep>,
    /// How many times a rejected draft is revised before it is returned
    /// with the critic's rejection.
    #[serde(default = "default_max_revisions")]
    pub max_revisions: u32,
    /// Fixed answer for flows where no answering step runs (a polite
    /// refusal).
    pub reply: Option<String>,
    /// The agent whose (latest) output is the answer. Unset: the last
    /// answering step that ran (a summarizer's draft or an `llm` agent's
    /// text).
    pub answer: Option<String>,
}

fn default_max_revisions() -> u32 {
    1
}

impl FlowSpec {
    /// Every agent the flow names, with its condition, in order.
    pub fn agents(&self) -> impl Iterator<Item = &StepAgent> {
        self.steps.iter().flat_map(FlowStep::members)
    }
}

/// One step of a flow.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowStep {
    /// One agent, perhaps under a condition.
    One(StepAgent),
    /// Agents run at once; each sees what the steps before the group
    /// produced, and their outputs are taken in the order written.
    Parallel(Vec<StepAgent>),
}

impl FlowStep {
    /// The agents of this step: one, or the group's.
    pub fn members(&self) -> &[StepAgent] {
        match self {
            FlowStep::One(a) => std::slice::from_ref(a),
            FlowStep::Parallel(group) => group,
        }
    }
}

impl From<&str> for FlowStep {
    fn from(agent: &str) -> Self {
        FlowStep::One(StepAgent { agent: agent.to_string(), when: None })
    }
}

impl From<String> for FlowStep {
    fn from(agent: String) -> Self {
        FlowStep::One(StepAgent { agent, when: None })
    }
}

/// An agent in a flow, and when it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StepAgent {
    /// The agent's name (its file stem in `agents/`).
    pub agent: String,
    /// Runs only when this holds; always when `None`.
    pub when: Option<Condition>,
}

/// A test of an earlier step's output: the step runs only when it holds.
///
/// The output tested is the latest of agent `step`, seen as JSON: an `llm`
/// agent's JSON value (or its text as a string), a summarizer's draft as a
/// string, a critic's `{accepted, scores, feedback}`, a retriever's list of
/// passages. `field` is a dotted path into it (`plan.needs_search`, `0`
/// for a list's first item); numbers compare by value (`1` equals `1.0`).
/// A step that did not run, or a field that is not there, equals nothing:
/// `equals` fails and `not_equals` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The agent of an earlier step whose output is tested.
    pub step: String,
    /// Dotted path into that output; the whole output when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Holds when the value equals this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// Holds when the value does not equal this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<serde_json::Value>,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.step)?;
        if let Some(field) = &self.field {
            write!(f, ".{field}")?;
        }
        match (&self.equals, &self.not_equals) {
            (Some(v), _) => write!(f, " == {v}"),
            (None, Some(v)) => write!(f, " != {v}"),
            (None, None) => Ok(()),
        }
    }
}

impl fmt::Display for StepAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.when {
            None => write!(f, "{}", self.agent),
            Some(c) => write!(f, "{} (when {c})", self.agent),
        }
    }
}

impl fmt::Display for FlowStep {
    /// `agent`, `agent (when step.field == value)`, or `(a | b)` for a
    /// group run at once: how `validate` and `DescribeMesh` show a step.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowStep::One(a) => write!(f, "{a}"),
            FlowStep::Parallel(group) => {
                write!(f, "(")?;
                for (i, a) in group.iter().enumerate() {
                    if i > 0 {
                        write!(f, " | ")?;
                    }
                    write!(f, "{a}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// `{ agent = "…", when = { … } }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepTable {
    agent: String,
    when: Option<Condition>,
}

const STEP_EXPECTED: &str =
    "an agent name, a list of agent names run at once, or a table { agent = \"…\", when = { … } }";
const MEMBER_EXPECTED: &str = "an agent name or a table { agent = \"…\", when = { … } } (groups do not nest)";

impl<'de> Deserialize<'de> for FlowStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = FlowStep;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(STEP_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FlowStep, E> {
                Ok(FlowStep::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FlowStep, A::Error> {
                let mut group = Vec::new();
                while let Some(member) = seq.next_element::<StepAgent>()? {
                    group.push(member);
                }
                Ok(FlowStep::Parallel(group))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FlowStep, A::Error> {
                let t = StepTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FlowStep::One(StepAgent { agent: t.agent, when: t.when }))
            }
        }
        d.deserialize_any(StepVisitor)
    }
}

impl<'de> Deserialize<'de> for StepAgent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MemberVisitor;
        impl<'de> Visitor<'de> for MemberVisitor {
            type Value = StepAgent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(MEMBER_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StepAgent, E> {
                Ok(StepAgent { agent: v.to_string(), when: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StepAgent, A::Error> {
                let t = StepTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(StepAgent { agent: t.agent, when: t.when })
            }
        }
        d.deserialize_any(MemberVisitor)
    }
}

impl Serialize for StepAgent {
    /// A bare name when unconditional, as most flows are written.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.when {
            None => s.serialize_str(&self.agent),
            Some(when) => {
                let mut t = s.serialize_struct("StepAgent", 2)?;
                t.serialize_field("agent", &self.agent)?;
                t.serialize_field("when", when)?;
                t.end()
            }
        }
    }
}

impl Serialize for FlowStep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FlowStep::One(a) => a.serialize(s),
            FlowStep::Parallel(group) => group.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Flows {
        flows: std::collections::BTreeMap<String, FlowSpec>,
    }

    #[test]
    fn the_three_step_forms_read_and_write_back() {
        let text = r#"
[flows.question]
steps = [
  "classify",
  { agent = "retriever", when = { step = "classify", field = "needs_search", equals = true } },
  ["answer_a", { agent = "answer_b", when = { step = "classify", not_equals = "x" } }],
  "judge",
]
answer = "judge"
"#;
        let f: Flows = toml::from_str(text).unwrap();
        let q = &f.flows["question"];
        assert_eq!((q.max_revisions, q.answer.as_deref()), (1, Some("judge")));
        let shown: Vec<String> = q.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "classify",
                "retriever (when classify.needs_search == true)",
                "(answer_a | answer_b (when classify != \"x\"))",
                "judge"
            ]
        );
        let again: Flows = toml::from_str(&toml::to_string(&f).unwrap()).unwrap();
        assert_eq!(&again.flows["question"], q);
        let names: Vec<&str> = q.agents().map(|a| a.agent.as_str()).collect();
        assert_eq!(names, ["classify", "retriever", "answer_a", "answer_b", "judge"]);
    }

    #[test]
    fn wrong_shapes_say_what_a_step_can_be() {
        for (text, wanted) in [
            ("[flows.q]\nsteps = [5]", "an agent name, a list of agent names run at once"),
            ("[flows.q]\nsteps = [[\"a\", [\"b\"]]]", "groups do not nest"),
            ("[flows.q]\nsteps = [{ agent = \"a\", if = 1 }]", "unknown field `if`"),
            ("[flows.q]\nsteps = [{ agent = \"a\", when = { step = \"b\", is = 1 } }]", "unknown field `is`"),
        ] {
            let err = toml::from_str::<Flows>(text).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }
}
