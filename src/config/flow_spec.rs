//! The flow model (`[flows.<intent>]` and `[variants.<v>.flows.<intent>]`):
//! a small graph of agent steps written in TOML.
//!
//! A step is written one of these ways, freely mixed in one `steps` list:
//!
//! ```toml
//! [flows.question]
//! steps = [
//!   "classify",                                   # one agent
//!   { agent = "retriever", when = { step = "classify", field = "needs_search", equals = true } },
//!   ["answer_a", "answer_b"],                     # agents run at once (fan-out)
//!   { group = ["answer_a", "answer_b"], merge = "concat" },   # the same, texts merged into one draft
//!   { agent = "judge", judges = "answer_a" },     # a judge step over an earlier step
//!   { repeat = ["writer", "judge"], until = { step = "judge", field = "accepted", equals = true }, max_rounds = 3 },
//! ]
//! answer = "writer"     # whose output is the answer (default: the last answering step)
//! max_revisions = 1     # how often a judge may send a draft back
//! on_reject = "reply"   # the judge still rejects: answer `reply` ("draft": the last draft)
//! ```
//!
//! The members of a fan-out group are names or `{ agent, when }` tables;
//! a group never nests another, and a repeat holds agents and groups but
//! no other repeat. What each form means at run time, and what is valid
//! (a repeat needs `max_rounds`: a cycle always has a bound), is checked
//! in `flows.rs` against the loaded agents.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeStruct as _, Serializer};
use serde::{Deserialize, Serialize};

/// The steps run for one intent (`[flows.<intent>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The steps in order: an agent, a conditional agent, a judge, a group
    /// of agents run at once, or a bounded repeat. A critic after an
    /// answering step sends rejected drafts back to that step's agent.
    #[serde(default)]
    pub steps: Vec<FlowStep>,
    /// How many times a rejected draft is revised before the judge's last
    /// verdict stands.
    #[serde(default = "default_max_revisions")]
    pub max_revisions: u32,
    /// Fixed answer for flows where no answering step runs (a polite
    /// refusal), and the fallback answer of `on_reject = "reply"`.
    pub reply: Option<String>,
    /// The agent whose (latest) output is the answer. Unset: the last
    /// answering step that ran (a summarizer's draft or an `llm` agent's
    /// text).
    pub answer: Option<String>,
    /// What is answered when the flow's last judge verdict is a rejection.
    #[serde(default, skip_serializing_if = "OnReject::is_default")]
    pub on_reject: OnReject,
}

fn default_max_revisions() -> u32 {
    1
}

/// What a flow answers when its judge still rejects after the last
/// revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnReject {
    /// The last draft, with the rejecting verdict beside it.
    #[default]
    Draft,
    /// The flow's `reply` (or a plain "not found" sentence), with the
    /// verdict beside it: an honest fallback instead of an answer the
    /// judge found unsupported.
    Reply,
}

impl OnReject {
    fn is_default(&self) -> bool {
        *self == OnReject::Draft
    }
}

/// The fallback answer of `on_reject = "reply"` when the flow sets no
/// `reply`.
pub const NOT_FOUND_REPLY: &str = "I could not find an answer to that in the knowledge base.";

impl FlowSpec {
    /// Every agent the flow names, with its condition, in order (a
    /// repeat's agents once).
    pub fn agents(&self) -> Vec<&StepAgent> {
        let mut all = Vec::new();
        for step in &self.steps {
            step.collect_agents(&mut all);
        }
        all
    }
}

/// One step of a flow.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowStep {
    /// One agent, perhaps under a condition, perhaps judging another.
    One(StepAgent),
    /// Agents run at once; each sees what the steps before the group
    /// produced, and their outputs are taken in the order written.
    Parallel(Group),
    /// Steps run again and again, until a condition holds or `max_rounds`
    /// rounds have run.
    Repeat(Repeat),
}

/// Agents run at once, and how their outputs are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub members: Vec<StepAgent>,
    pub merge: Merge,
}

/// How a group's answering outputs are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// Each output is kept under its agent's name (`outputs.<agent>`) for
    /// the next steps, which see them all; the latest draft is the last
    /// member's text.
    #[default]
    List,
    /// As `list`, and the members' texts, in the order written, become one
    /// draft (a blank line between them).
    Concat,
}

/// A bounded loop: `{ repeat = [...], until = {...}, max_rounds = N }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// The steps of one round (agents and groups).
    pub repeat: Vec<FlowStep>,
    /// Stops after a round where this holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Condition>,
    /// Most rounds run; required (a cycle without a bound is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
}

impl FlowStep {
    /// The agents of this step, in order, into `all`.
    pub fn collect_agents<'a>(&'a self, all: &mut Vec<&'a StepAgent>) {
        match self {
            FlowStep::One(a) => all.push(a),
            FlowStep::Parallel(group) => all.extend(group.members.iter()),
            FlowStep::Repeat(r) => r.repeat.iter().for_each(|s| s.collect_agents(all)),
        }
    }
}

impl From<&str> for FlowStep {
    fn from(agent: &str) -> Self {
        FlowStep::One(StepAgent::named(agent))
    }
}

impl From<String> for FlowStep {
    fn from(agent: String) -> Self {
        FlowStep::One(StepAgent::named(&agent))
    }
}

/// An agent in a flow, and when it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StepAgent {
    /// The agent's name (its file stem in `agents/`).
    pub agent: String,
    /// Runs only when this holds; always when `None`.
    pub when: Option<Condition>,
    /// A judge step: the agent (a critic, or an `llm` agent whose JSON has
    /// a boolean `accepted`) judges the latest text of this earlier agent
    /// and sends it back for revision while it rejects. A critic without
    /// it judges the latest draft.
    pub judges: Option<String>,
}

impl StepAgent {
    /// An unconditional step of `agent`.
    pub fn named(agent: &str) -> StepAgent {
        StepAgent { agent: agent.to_string(), when: None, judges: None }
    }
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
        write!(f, "{}", self.agent)?;
        if let Some(judged) = &self.judges {
            write!(f, " (judges {judged})")?;
        }
        if let Some(c) = &self.when {
            write!(f, " (when {c})")?;
        }
        Ok(())
    }
}

impl fmt::Display for FlowStep {
    /// `agent`, `agent (when step.field == value)`, `(a | b)` for a group
    /// run at once (`(a + b)` when merged into one draft), `repeat[a → b]
    /// until … ≤ N`: how `validate` and `DescribeMesh` show a step.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowStep::One(a) => write!(f, "{a}"),
            FlowStep::Parallel(group) => {
                let sep = match group.merge {
                    Merge::List => " | ",
                    Merge::Concat => " + ",
                };
                write!(f, "(")?;
                for (i, a) in group.members.iter().enumerate() {
                    if i > 0 {
                        write!(f, "{sep}")?;
                    }
                    write!(f, "{a}")?;
                }
                write!(f, ")")
            }
            FlowStep::Repeat(r) => {
                write!(f, "repeat[")?;
                for (i, s) in r.repeat.iter().enumerate() {
                    if i > 0 {
                        write!(f, " → ")?;
                    }
                    write!(f, "{s}")?;
                }
                write!(f, "]")?;
                if let Some(c) = &r.until {
                    write!(f, " until {c}")?;
                }
                match r.max_rounds {
                    Some(n) => write!(f, " ≤ {n} rounds"),
                    None => write!(f, " (no bound)"),
                }
            }
        }
    }
}

/// `{ agent = "…", when = { … }, judges = "…" }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepTable {
    agent: String,
    when: Option<Condition>,
    judges: Option<String>,
}

impl From<StepTable> for StepAgent {
    fn from(t: StepTable) -> StepAgent {
        StepAgent { agent: t.agent, when: t.when, judges: t.judges }
    }
}

/// `{ group = [...], merge = "…" }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupTable {
    group: Vec<StepAgent>,
    #[serde(default)]
    merge: Merge,
}

const STEP_EXPECTED: &str = "an agent name, a list of agent names run at once, or a table \
     { agent = \"…\", when = { … }, judges = \"…\" }, { group = [...], merge = \"list\"|\"concat\" } \
     or { repeat = [...], until = { … }, max_rounds = N }";
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
                let mut members = Vec::new();
                while let Some(member) = seq.next_element::<StepAgent>()? {
                    members.push(member);
                }
                Ok(FlowStep::Parallel(Group { members, merge: Merge::List }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FlowStep, A::Error> {
                // Buffered, then read as the form its key names, so an
                // error names the table's own mistake (an unknown field, a
                // wrong type) rather than "no variant matched".
                let value = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let step = if value.get("agent").is_some() {
                    serde_json::from_value::<StepTable>(value).map(|t| FlowStep::One(t.into()))
                } else if value.get("group").is_some() {
                    serde_json::from_value::<GroupTable>(value)
                        .map(|g| FlowStep::Parallel(Group { members: g.group, merge: g.merge }))
                } else if value.get("repeat").is_some() {
                    serde_json::from_value::<Repeat>(value).map(FlowStep::Repeat)
                } else {
                    return Err(de::Error::custom(format!(
                        "a step table needs `agent`, `group` or `repeat`; a step is {STEP_EXPECTED}"
                    )));
                };
                step.map_err(de::Error::custom)
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
                Ok(StepAgent::named(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StepAgent, A::Error> {
                let t = StepTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(t.into())
            }
        }
        d.deserialize_any(MemberVisitor)
    }
}

impl Serialize for StepAgent {
    /// A bare name when unconditional, as most flows are written.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.when.is_none() && self.judges.is_none() {
            return s.serialize_str(&self.agent);
        }
        let mut t = s.serialize_struct("StepAgent", 3)?;
        t.serialize_field("agent", &self.agent)?;
        if let Some(when) = &self.when {
            t.serialize_field("when", when)?;
        }
        if let Some(judges) = &self.judges {
            t.serialize_field("judges", judges)?;
        }
        t.end()
    }
}

impl Serialize for FlowStep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FlowStep::One(a) => a.serialize(s),
            FlowStep::Parallel(Group { members, merge: Merge::List }) => members.serialize(s),
            FlowStep::Parallel(Group { members, merge }) => {
                let mut t = s.serialize_struct("Group", 2)?;
                t.serialize_field("group", members)?;
                t.serialize_field("merge", merge)?;
                t.end()
            }
            FlowStep::Repeat(r) => r.serialize(s),
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
        let names: Vec<&str> = q.agents().into_iter().map(|a| a.agent.as_str()).collect();
        assert_eq!(names, ["classify", "retriever", "answer_a", "answer_b", "judge"]);
    }

    #[test]
    fn judges_merged_groups_and_repeats_read_and_write_back() {
        let text = r#"
[flows.debate]
steps = [
  "retriever",
  { repeat = [
      { group = ["pro", "con"], merge = "concat" },
      { agent = "judge", judges = "pro" },
    ], until = { step = "judge", field = "accepted", equals = true }, max_rounds = 3 },
  { agent = "critic", judges = "pro", when = { step = "judge", field = "accepted", equals = false } },
]
on_reject = "reply"
reply = "No agreement."
"#;
        let f: Flows = toml::from_str(text).unwrap();
        let d = &f.flows["debate"];
        assert_eq!(d.on_reject, OnReject::Reply);
        let shown: Vec<String> = d.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "retriever",
                "repeat[(pro + con) → judge (judges pro)] until judge.accepted == true ≤ 3 rounds",
                "critic (judges pro) (when judge.accepted == false)",
            ]
        );
        let again: Flows = toml::from_str(&toml::to_string(&f).unwrap()).unwrap();
        assert_eq!(&again.flows["debate"], d);
        let names: Vec<&str> = d.agents().into_iter().map(|a| a.agent.as_str()).collect();
        assert_eq!(names, ["retriever", "pro", "con", "judge", "critic"]);
        let unbounded: Flows = toml::from_str("[flows.q]\nsteps = [{ repeat = [\"a\"] }]").unwrap();
        assert_eq!(unbounded.flows["q"].steps[0].to_string(), "repeat[a] (no bound)");
    }

    #[test]
    fn wrong_shapes_say_what_a_step_can_be() {
        for (text, wanted) in [
            ("[flows.q]\nsteps = [5]", "an agent name, a list of agent names run at once"),
            ("[flows.q]\nsteps = [[\"a\", [\"b\"]]]", "groups do not nest"),
            ("[flows.q]\nsteps = [{ agent = \"a\", if = 1 }]", "unknown field `if`"),
            ("[flows.q]\nsteps = [{ agent = \"a\", when = { step = \"b\", is = 1 } }]", "unknown field `is`"),
            ("[flows.q]\nsteps = [{ group = [\"a\"], merge = \"vote\" }]", "unknown variant `vote`"),
            ("[flows.q]\nsteps = [{ repeat = [\"a\"], max_round = 2 }]", "unknown field `max_round`"),
            ("[flows.q]\nsteps = [{ agents = \"a\" }]", "needs `agent`, `group` or `repeat`"),
            ("[flows.q]\non_reject = \"best\"", "unknown variant `best`"),
        ] {
            let err = toml::from_str::<Flows>(text).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }
}
