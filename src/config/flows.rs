//! Checks of the flows (`[flows.<intent>]` and each variant's): every step
//! names an agent that can run there, fan-out groups hold agents that can
//! run at once, conditions test steps that run before them, the declared
//! answer is an answering step of the flow, and every intent the router may
//! pick has a flow.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::agents::{AgentKind, AgentSpec, KindSettings, LlmOutput};
use super::error::{ConfigError, known, locate, locate_at};
use super::flow_spec::{Condition, FlowStep, Repeat, StepAgent};
use super::llm_output::output_spec;
use super::settings::{FlowSpec, Settings};

/// Checks the flows against the loaded agents (run only when the agents
/// loaded without error, so a missing agent is a flow's mistake).
pub(super) fn validate_flows(
    s: &Settings,
    agents: &BTreeMap<String, AgentSpec>,
    layers: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) {
    let router = match agents.get(&s.mesh.router) {
        Some(a) if a.kind == AgentKind::Router => Some(a),
        Some(a) => {
            errors.push(ConfigError::field(
                locate_at(&["mesh"], layers),
                "mesh.router",
                format!("agent `{}` is a {}, not a router", a.name, a.kind.as_str()),
            ));
            None
        }
        None => {
            errors.push(ConfigError::field(
                locate_at(&["mesh"], layers),
                "mesh.router",
                format!("no agent named `{}`; known: {}", s.mesh.router, known(agents)),
            ));
            None
        }
    };
    // Each flow with the variant whose flow it is: a variant's flow runs
    // the agents' profiles of that variant.
    let mut all_flows: Vec<(Vec<String>, Option<&str>, &FlowSpec)> =
        s.flows.iter().map(|(intent, f)| (vec!["flows".into(), intent.clone()], None, f)).collect();
    for (vname, v) in &s.variants {
        for (intent, f) in &v.flows {
            let path = vec!["variants".into(), vname.clone(), "flows".into(), intent.clone()];
            all_flows.push((path, Some(vname.as_str()), f));
        }
    }
    for (path, variant, flow) in &all_flows {
        let file = locate(path, layers);
        check_flow(&path.join("."), &file, flow, agents, *variant, errors);
    }
    if let Some(router) = router {
        if let KindSettings::Router(r) = &router.base.settings {
            for intent in &r.intents {
                if !s.flows.contains_key(&intent.name) {
                    errors.push(ConfigError::field(
                        router.file.display(),
                        "router.intents",
                        format!("intent `{}` has no `[flows.{}]` in the settings", intent.name, intent.name),
                    ));
                }
            }
        }
    }
}

/// Whether `agent`'s output can be a flow's answer and a critic's draft: a
/// summarizer's, or an `llm` agent's text (under `variant`'s profile).
pub(super) fn answers(agent: &AgentSpec, variant: Option<&str>) -> bool {
    match agent.kind {
        AgentKind::Summarizer => true,
        AgentKind::Llm => {
            let profile = agent.profile(variant);
            match &profile.settings {
                KindSettings::Llm(ls) => {
                    output_spec(ls, profile.prompt.as_deref()).is_ok_and(|o| o.output == LlmOutput::Text)
                }
                _ => false,
            }
        }
        AgentKind::Router | AgentKind::Retriever | AgentKind::Critic => false,
    }
}

/// Whether `agent` can judge another step's text (`judges = …`): a
/// critic, or an `llm` agent whose JSON output declares a boolean
/// `accepted` (under `variant`'s profile).
pub(super) fn judges(agent: &AgentSpec, variant: Option<&str>) -> bool {
    match agent.kind {
        AgentKind::Critic => true,
        AgentKind::Llm => {
            let profile = agent.profile(variant);
            let KindSettings::Llm(ls) = &profile.settings else { return false };
            output_spec(ls, profile.prompt.as_deref()).is_ok_and(|o| {
                o.output == LlmOutput::Json
                    && o.schema.as_ref().and_then(|s| s.pointer("/properties/accepted/type"))
                        == Some(&serde_json::Value::from("boolean"))
            })
        }
        AgentKind::Router | AgentKind::Retriever | AgentKind::Summarizer => false,
    }
}

/// Most rounds a repeat may run, and most revisions a judge may ask for.
const MAX_ROUNDS: u32 = 10;

/// One flow being checked: where it is, the agents, and what the steps
/// checked so far make available.
struct FlowCheck<'a> {
    field: &'a str,
    file: &'a str,
    agents: &'a BTreeMap<String, AgentSpec>,
    variant: Option<&'a str>,
    /// Agents of the steps checked so far: what a condition may test.
    earlier: Vec<&'a str>,
    /// Earlier agents whose output is an answer: what a judge may judge.
    answering: Vec<&'a str>,
    errors: &'a mut Vec<ConfigError>,
}

impl<'a> FlowCheck<'a> {
    fn error(&mut self, at: String, message: String) {
        self.errors.push(ConfigError::field(self.file, at, message));
    }

    /// Checks `steps` (a flow's, or a repeat's at `at`).
    fn steps(&mut self, steps: &'a [FlowStep], at: &str, in_repeat: bool) {
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{at}[{i}]");
            match step {
                FlowStep::One(member) => {
                    self.member(member, &at, false);
                    self.ran(std::slice::from_ref(member));
                }
                FlowStep::Parallel(group) => {
                    if group.members.is_empty() {
                        self.error(at.clone(), "a group run at once needs at least one agent".into());
                    }
                    for (j, member) in group.members.iter().enumerate() {
                        self.member(member, &format!("{at}[{j}]"), true);
                    }
                    self.ran(&group.members);
                }
                FlowStep::Repeat(r) => self.repeat(r, &at, in_repeat),
            }
        }
    }

    fn repeat(&mut self, r: &'a Repeat, at: &str, in_repeat: bool) {
        if in_repeat {
            self.error(at.to_string(), "a repeat cannot hold another repeat".into());
        }
        if r.repeat.is_empty() {
            self.error(format!("{at}.repeat"), "a repeat needs at least one step".into());
        }
        match r.max_rounds {
            None => self.error(
                format!("{at}.max_rounds"),
                format!(
                    "flow `{}` has a cycle without a bound: a repeat needs `max_rounds` (1 to {MAX_ROUNDS})",
                    self.field
                ),
            ),
            Some(n) if n == 0 || n > MAX_ROUNDS => {
                self.error(format!("{at}.max_rounds"), format!("must be 1 to {MAX_ROUNDS}"))
            }
            Some(_) => {}
        }
        self.steps(&r.repeat, &format!("{at}.repeat"), true);
        if let Some(c) = &r.until {
            // Tested after each round: the repeat's own agents count.
            self.condition(c, &format!("{at}.until"));
        }
    }

    /// Takes the agents of a step that ran into what later steps may use.
    fn ran(&mut self, members: &'a [StepAgent]) {
        for m in members {
            self.earlier.push(m.agent.as_str());
            if self.agents.get(&m.agent).is_some_and(|a| answers(a, self.variant)) {
                self.answering.push(m.agent.as_str());
            }
        }
    }

    fn condition(&mut self, c: &Condition, at: &str) {
        if !self.earlier.contains(&c.step.as_str()) {
            self.error(
                format!("{at}.step"),
                format!("`{}` is not an agent of an earlier step of this flow", c.step),
            );
        }
        if c.equals.is_some() == c.not_equals.is_some() {
            self.error(at.to_string(), "give exactly one of `equals` and `not_equals`".into());
        }
    }

    /// Checks one agent of a step (`group`: a member of a group run at
    /// once).
    fn member(&mut self, member: &StepAgent, at: &str, group: bool) {
        let StepAgent { agent: name, when, judges: judged } = member;
        let agents = self.agents;
        match agents.get(name) {
            None => self.error(at.to_string(), format!("no agent named `{name}`; known: {}", known(agents))),
            Some(a) if a.kind == AgentKind::Router => self
                .error(at.to_string(), "a router cannot be a flow step (it runs before every flow)".into()),
            Some(a) if (a.kind == AgentKind::Critic || judged.is_some()) && group => self.error(
                at.to_string(),
                format!("judge `{name}` cannot run in a group: its revisions run one after another"),
            ),
            Some(a) if judged.is_some() && !judges(a, self.variant) => self.error(
                format!("{at}.judges"),
                format!(
                    "`{name}` is a {} that cannot judge; a judge is a critic, or an llm agent whose \
                     outputs declare a boolean `accepted` (and optionally `feedback`)",
                    a.kind.as_str()
                ),
            ),
            Some(a) if a.kind == AgentKind::Critic && judged.is_none() && self.answering.is_empty() => self
                .error(
                    at.to_string(),
                    format!(
                        "critic `{name}` needs an answering step before it in the flow \
                     (a summarizer, or an llm agent with text output)"
                    ),
                ),
            Some(_) => {}
        }
        if let Some(judged) = judged {
            if !self.answering.contains(&judged.as_str()) {
                self.error(
                    format!("{at}.judges"),
                    format!(
                        "`{judged}` is not an earlier answering step of this flow (a summarizer, or \
                         an llm agent with text output)"
                    ),
                );
            }
        }
        if let Some(c) = when {
            self.condition(c, &format!("{at}.when"));
        }
    }
}

/// The checks of one flow, `field` naming it (`flows.question`,
/// `variants.v.flows.question`) in `file`.
fn check_flow(
    field: &str,
    file: &str,
    flow: &FlowSpec,
    agents: &BTreeMap<String, AgentSpec>,
    variant: Option<&str>,
    errors: &mut Vec<ConfigError>,
) {
    let mut check =
        FlowCheck { field, file, agents, variant, earlier: Vec::new(), answering: Vec::new(), errors };
    check.steps(&flow.steps, &format!("{field}.steps"), false);
    if let Some(answer) = &flow.answer {
        let in_flow = flow.agents().iter().any(|m| &m.agent == answer);
        match agents.get(answer) {
            Some(a) if in_flow && answers(a, variant) => {}
            Some(a) if in_flow => check.error(
                format!("{field}.answer"),
                format!(
                    "`{answer}` is a {} whose output is not an answer; name a summarizer or an llm \
                     agent with text output",
                    a.kind.as_str()
                ),
            ),
            _ => check.error(format!("{field}.answer"), format!("`{answer}` is not a step of this flow")),
        }
    }
    if flow.max_revisions > MAX_ROUNDS {
        check.error(format!("{field}.max_revisions"), format!("must be at most {MAX_ROUNDS}"));
    }
}
