//! Checks of the flows (`[flows.<intent>]` and each variant's): every step
//! names an agent that can run there, and every intent the router may pick
//! has a flow.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::agents::{AgentKind, AgentSpec, KindSettings};
use super::error::{ConfigError, known, locate, locate_at};
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
    let mut all_flows: Vec<(String, &String, &FlowSpec)> =
        s.flows.iter().map(|(intent, f)| (format!("flows.{intent}"), intent, f)).collect();
    for (vname, v) in &s.variants {
        for (intent, f) in &v.flows {
            all_flows.push((format!("variants.{vname}.flows.{intent}"), intent, f));
        }
    }
    for (field, _intent, flow) in &all_flows {
        let path: Vec<String> = field.split('.').map(str::to_string).collect();
        let file = locate(&path, layers);
        let mut seen_summarizer = false;
        for (i, step) in flow.steps.iter().enumerate() {
            match agents.get(step) {
                None => errors.push(ConfigError::field(
                    &file,
                    format!("{field}.steps[{i}]"),
                    format!("no agent named `{step}`; known: {}", known(agents)),
                )),
                Some(a) if a.kind == AgentKind::Router => errors.push(ConfigError::field(
                    &file,
                    format!("{field}.steps[{i}]"),
                    "a router cannot be a flow step (it runs before every flow)",
                )),
                Some(a) if a.kind == AgentKind::Critic && !seen_summarizer => {
                    errors.push(ConfigError::field(
                        &file,
                        format!("{field}.steps[{i}]"),
                        format!("critic `{step}` needs a summarizer before it in the flow"),
                    ))
                }
                Some(a) => seen_summarizer |= a.kind == AgentKind::Summarizer,
            }
        }
        if flow.max_revisions > 10 {
            errors.push(ConfigError::field(&file, format!("{field}.max_revisions"), "must be at most 10"));
        }
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
