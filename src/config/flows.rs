//! Checks of the flows (`[flows.<intent>]` and each variant's): every step
//! names an agent that can run there, fan-out groups hold agents that can
//! run at once, conditions test steps that run before them, the declared
//! answer is an answering step of the flow, and every intent the router may
//! pick has a flow.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::agents::{AgentKind, AgentSpec, KindSettings, LlmOutput};
use super::error::{ConfigError, known, locate, locate_at};
use super::flow_spec::{FlowStep, StepAgent};
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
    let mut error = |at: String, message: String| errors.push(ConfigError::field(file, at, message));
    // Agents of the steps checked so far: what a condition may test.
    let mut earlier: Vec<&str> = Vec::new();
    let mut seen_answering = false;
    for (i, step) in flow.steps.iter().enumerate() {
        let group = matches!(step, FlowStep::Parallel(_));
        if let FlowStep::Parallel(members) = step {
            if members.is_empty() {
                error(format!("{field}.steps[{i}]"), "a group run at once needs at least one agent".into());
            }
        }
        let mut answering_here = false;
        for (j, member) in step.members().iter().enumerate() {
            let at = if group { format!("{field}.steps[{i}][{j}]") } else { format!("{field}.steps[{i}]") };
            let StepAgent { agent: name, when } = member;
            match agents.get(name) {
                None => error(at.clone(), format!("no agent named `{name}`; known: {}", known(agents))),
                Some(a) if a.kind == AgentKind::Router => {
                    error(at.clone(), "a router cannot be a flow step (it runs before every flow)".into())
                }
                Some(a) if a.kind == AgentKind::Critic && group => error(
                    at.clone(),
                    format!("critic `{name}` cannot run in a group: its revisions run one after another"),
                ),
                Some(a) if a.kind == AgentKind::Critic && !seen_answering => error(
                    at.clone(),
                    format!(
                        "critic `{name}` needs an answering step before it in the flow \
                         (a summarizer, or an llm agent with text output)"
                    ),
                ),
                Some(a) => answering_here |= answers(a, variant),
            }
            if let Some(c) = when {
                if !earlier.contains(&c.step.as_str()) {
                    error(
                        format!("{at}.when.step"),
                        format!("`{}` is not an agent of an earlier step of this flow", c.step),
                    );
                }
                if c.equals.is_some() == c.not_equals.is_some() {
                    error(format!("{at}.when"), "give exactly one of `equals` and `not_equals`".into());
                }
            }
        }
        seen_answering |= answering_here;
        earlier.extend(step.members().iter().map(|m| m.agent.as_str()));
    }
    if let Some(answer) = &flow.answer {
        let in_flow = flow.agents().any(|m| &m.agent == answer);
        match agents.get(answer) {
            Some(a) if in_flow && answers(a, variant) => {}
            Some(a) if in_flow => error(
                format!("{field}.answer"),
                format!(
                    "`{answer}` is a {} whose output is not an answer; name a summarizer or an llm \
                     agent with text output",
                    a.kind.as_str()
                ),
            ),
            _ => error(format!("{field}.answer"), format!("`{answer}` is not a step of this flow")),
        }
    }
    if flow.max_revisions > 10 {
        error(format!("{field}.max_revisions"), "must be at most 10".into());
    }
}
