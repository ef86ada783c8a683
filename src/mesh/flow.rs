//! Flows as the orchestrator runs them: each configured flow (the base
//! mesh's and every variant's) compiled once, at start-up, with each
//! step's agent kind resolved, and the test of a step's condition.
//!
//! Compiling up front keeps the request path as it was: finding a flow is
//! the same two map look-ups, and a step's kind is read from the plan
//! instead of looked up per step.

use std::collections::HashMap;

use serde_json::Value;

use super::MeshError;
use crate::config::{AgentKind, Condition, FlowSpec, FlowStep, Merge, MeshSpec, OnReject, StepAgent};

/// Flows by intent (and variant), looked up once per request: FxHash, as
/// for the agents (`run::AgentPools`).
type FxHashMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// An agent of a flow step, resolved.
pub struct PlannedAgent {
    /// The agent's name: its pool, its record, its key in `outputs`.
    pub name: String,
    /// Its kind, which decides the step's input and what its output means
    /// for the flow.
    pub kind: AgentKind,
    /// Runs only when this holds.
    pub when: Option<Condition>,
    /// A judge step: the agent whose latest text it judges (a critic
    /// without it judges the latest draft).
    pub judges: Option<String>,
}

impl PlannedAgent {
    /// Whether this step judges a draft (and may send it back).
    pub fn is_judge(&self) -> bool {
        self.kind == AgentKind::Critic || self.judges.is_some()
    }
}

/// A flow step, resolved.
pub enum PlannedStep {
    /// One agent.
    One(PlannedAgent),
    /// Agents run at once, their outputs taken in the order written.
    Parallel { members: Vec<PlannedAgent>, merge: Merge },
    /// Steps (agents and groups) run in rounds until `until` holds after
    /// one, at most `max_rounds` times.
    Repeat { steps: Vec<PlannedStep>, until: Option<Condition>, max_rounds: u32 },
}

/// One flow, ready to run.
pub struct FlowPlan {
    /// The steps in order.
    pub steps: Vec<PlannedStep>,
    /// How often a critic may send a draft back.
    pub max_revisions: u32,
    /// The answer when no answering step runs.
    pub reply: Option<String>,
    /// The agent whose output is the answer; `None`: the last answering
    /// step.
    pub answer: Option<String>,
    /// What is answered when the last verdict rejects.
    pub on_reject: OnReject,
    /// Whether any step reads earlier outputs (an `llm` step, a
    /// condition, a judge of a named step, a repeat): only such flows keep
    /// each step's output as JSON, so the shipped flows pay nothing for it.
    pub keeps_outputs: bool,
}

/// Every flow by variant and intent.
pub struct Flows {
    /// `[flows.<intent>]`.
    base: FxHashMap<String, FlowPlan>,
    /// `[variants.<v>.flows.<intent>]`: a variant's flow replaces the base
    /// flow of its intent.
    variants: FxHashMap<String, FxHashMap<String, FlowPlan>>,
}

impl Flows {
    /// Compiles every flow of `spec`, `kind_of` giving the kind of each
    /// started agent. Flows are validated at load, so a step naming no
    /// agent is a broken invariant; it fails the start, never a request.
    pub fn compile(spec: &MeshSpec, kind_of: impl Fn(&str) -> Option<AgentKind>) -> Result<Flows, MeshError> {
        let compile_all = |flows: &std::collections::BTreeMap<String, FlowSpec>, at: &str| {
            flows
                .iter()
                .map(|(intent, f)| Ok((intent.clone(), compile(f, &kind_of, &format!("{at}.{intent}"))?)))
                .collect::<Result<FxHashMap<_, _>, MeshError>>()
        };
        let base = compile_all(&spec.settings.flows, "flows")?;
        let mut variants = FxHashMap::default();
        for (v, settings) in &spec.settings.variants {
            if !settings.flows.is_empty() {
                variants.insert(v.clone(), compile_all(&settings.flows, &format!("variants.{v}.flows"))?);
            }
        }
        Ok(Flows { base, variants })
    }

    /// The flow for `intent` under `variant`: the variant's own, else the
    /// base mesh's.
    pub fn get(&self, variant: Option<&str>, intent: &str) -> Option<&FlowPlan> {
        variant
            .and_then(|v| self.variants.get(v))
            .and_then(|flows| flows.get(intent))
            .or_else(|| self.base.get(intent))
    }
}

fn compile(
    flow: &FlowSpec,
    kind_of: &impl Fn(&str) -> Option<AgentKind>,
    at: &str,
) -> Result<FlowPlan, MeshError> {
    let steps = flow.steps.iter().map(|s| compile_step(s, kind_of, at)).collect::<Result<Vec<_>, _>>()?;
    let keeps_outputs = flow.steps.iter().any(|s| matches!(s, FlowStep::Repeat(_)))
        || flow
            .agents()
            .iter()
            .any(|a| a.when.is_some() || a.judges.is_some() || kind_of(&a.agent) == Some(AgentKind::Llm));
    Ok(FlowPlan {
        steps,
        max_revisions: flow.max_revisions,
        reply: flow.reply.clone(),
        answer: flow.answer.clone(),
        on_reject: flow.on_reject,
        keeps_outputs,
    })
}

fn compile_step(
    step: &FlowStep,
    kind_of: &impl Fn(&str) -> Option<AgentKind>,
    at: &str,
) -> Result<PlannedStep, MeshError> {
    let resolve = |a: &StepAgent| match kind_of(&a.agent) {
        Some(kind) => {
            Ok(PlannedAgent { name: a.agent.clone(), kind, when: a.when.clone(), judges: a.judges.clone() })
        }
        None => Err(MeshError::Startup(format!("{at}: no agent `{}` in the mesh", a.agent))),
    };
    Ok(match step {
        FlowStep::One(a) => PlannedStep::One(resolve(a)?),
        FlowStep::Parallel(group) => PlannedStep::Parallel {
            members: group.members.iter().map(resolve).collect::<Result<_, _>>()?,
            merge: group.merge,
        },
        FlowStep::Repeat(r) => {
            // Validation refuses a repeat without a bound; were one to get
            // here, it fails the start rather than loop for ever.
            let max_rounds = r.max_rounds.ok_or_else(|| {
                MeshError::Startup(format!("{at}: a repeat without `max_rounds` (validated at load)"))
            })?;
            PlannedStep::Repeat {
                steps: r.repeat.iter().map(|s| compile_step(s, kind_of, at)).collect::<Result<_, _>>()?,
                until: r.until.clone(),
                max_rounds,
            }
        }
    })
}

/// Whether `cond` holds over the earlier `outputs` (agent name and output
/// as JSON, in the order they ran): the latest output of its step, at its
/// field, compared by value. A step that did not run or a missing field
/// equals nothing.
pub fn holds(cond: &Condition, outputs: &[(String, Value)]) -> bool {
    let output = outputs.iter().rev().find(|(agent, _)| *agent == cond.step).map(|(_, v)| v);
    let value = output.and_then(|v| match &cond.field {
        None => Some(v),
        Some(path) => path.split('.').try_fold(v, |cur, key| match cur {
            Value::Object(map) => map.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }),
    });
    match (&cond.equals, &cond.not_equals) {
        (Some(want), _) => value.is_some_and(|v| same(v, want)),
        (None, Some(unwanted)) => !value.is_some_and(|v| same(v, unwanted)),
        // Validation asks for exactly one of the two.
        (None, None) => value.is_some(),
    }
}

/// JSON equality where numbers compare by value: a TOML `1` equals a
/// model's `1.0`.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len() && xs.iter().all(|(k, x)| ys.get(k).is_some_and(|y| same(x, y)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cond(field: Option<&str>, equals: Option<Value>, not_equals: Option<Value>) -> Condition {
        Condition { step: "classify".into(), field: field.map(str::to_string), equals, not_equals }
    }

    #[test]
    fn conditions_test_the_latest_output_at_a_field() {
        let outputs = vec![
            ("classify".to_string(), json!({"needs_search": false, "plan": {"steps": [3, "x"]}})),
            ("other".to_string(), json!("text")),
            ("classify".to_string(), json!({"needs_search": true, "plan": {"steps": [3, "x"]}})),
        ];
        assert!(holds(&cond(Some("needs_search"), Some(json!(true)), None), &outputs), "the latest wins");
        assert!(holds(&cond(Some("plan.steps.0"), Some(json!(3.0)), None), &outputs), "1 == 1.0");
        assert!(holds(&cond(Some("plan.steps.1"), None, Some(json!("y"))), &outputs));
        assert!(!holds(&cond(Some("plan.missing"), Some(json!(null)), None), &outputs));
        assert!(holds(&cond(Some("plan.missing"), None, Some(json!(1))), &outputs), "missing equals nothing");
        assert!(!holds(&cond(None, Some(json!("x")), None), &[]), "a step that did not run");
        assert!(holds(&cond(None, None, Some(json!("x"))), &[]));
    }
}
