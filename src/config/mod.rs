//! Configuration: loads `config/`, `agents/` and `prompts/` into one typed,
//! validated [`MeshSpec`], once, before anything starts.
//!
//! Settings are layered, later wins: compiled-in defaults →
//! `config/meshops.toml` → `config/<env>.toml` (env from `MESHOPS_ENV`) →
//! `--config FILE` → environment variables `MESHOPS__<SECTION>__<KEY>`.
//! Every error names the file, the field and what would be valid; all errors
//! found are reported together.
//!
//! This is the bottom layer: it holds plain data and its validation, and
//! imports no other module of the crate; `llm`, `prompt`, `retrieval` and
//! the layers above import it.
//!
//! # Layout
//! - `settings.rs`, `agents.rs`: the file models (settings, agent files) and
//!   the validated agent ([`AgentSpec`]); `prompt_file/`: Prompty files read
//!   into a [`PromptFile`] (front matter and template syntax checked).
//! - `load.rs`: layering with figment ([`LoadOptions`]); `env.rs`:
//!   `MESHOPS__…` overrides; `env_refs.rs`: `${env:…}` references.
//! - `validate.rs`: checks of the settings; `agents_load.rs`: agent files,
//!   their prompts, models and variant overrides; `flow_spec.rs`: the flow
//!   graph model (steps, fan-out groups, conditions); `flows.rs`: flow
//!   checks; `llm_output.rs`: what an `llm` agent returns (text, or JSON
//!   fitting the schema its prompt's `outputs` declare).
//! - `error.rs`: [`ConfigError`]; `tls.rs`, `keys.rs`: files the gateway
//!   reads, checked here.

pub mod ab;
pub mod agents;
mod agents_load;
mod env;
mod env_refs;
mod error;
pub mod flow_spec;
mod flows;
pub mod index;
pub mod keys;
pub mod llm_output;
mod load;
pub mod prompt_file;
pub mod settings;
pub mod shared;
mod shared_checks;
mod tls;
pub mod tools;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use agents::{
    AgentFile, AgentKind, AgentProfile, AgentSpec, CriticSettings, IntentSpec, KindSettings, LlmOutput,
    LlmSettings, RetrieverSettings, RouterSettings, SummarizerSettings, ToolRef,
};
pub use env::{ENV_NAME_VAR, ENV_PREFIX};
pub use env_refs::{EnvRefError, api_key_var, resolve_env_refs};
pub use error::{ConfigError, ConfigErrors};
pub use flow_spec::{Condition, FlowStep, Group, Merge, NOT_FOUND_REPLY, OnReject, Repeat, StepAgent};
pub use index::{IndexSettings, Quantization};
pub use llm_output::{OutputSpec, is_strict_schema, output_spec};
pub use load::LoadOptions;
pub use prompt_file::{
    PromptFile, PromptFileError, PromptyConfiguration, PromptyInput, PromptyModel, PromptyParameters,
};
pub use settings::{
    AgentOverride, BatchSettings, EmbedderProvider, EvalSettings, FlowSpec, GatewaySettings, LogFormat,
    MeshSettings, ModelParams, ModelProfile, Provider, RetrievalSettings, Settings, StoreBackend,
    TelemetrySettings, TlsSettings, VariantSettings,
};
pub use shared::{LimitsBackend, LimitsFallback, StateBackend, resolve_url};
pub use tls::{read_pem_certs, read_pem_key};
pub use tools::{McpServerSettings, SessionSettings, profile_tools};

/// Everything the mesh, gateway and tools need, validated.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// Project root; relative paths in settings resolve against it.
    pub root: PathBuf,
    /// The layered settings.
    pub settings: Settings,
    /// The agents by name.
    pub agents: BTreeMap<String, AgentSpec>,
    /// The settings files that were layered, in order, for `validate`.
    pub layers: Vec<PathBuf>,
}

impl MeshSpec {
    /// Loads and validates everything; returns every problem found.
    pub fn load(opts: &LoadOptions) -> Result<MeshSpec, ConfigErrors> {
        let (settings, layers) = load::load_settings(opts).map_err(|e| ConfigErrors(vec![e]))?;
        let mut errors = Vec::new();
        validate::validate_settings(&settings, &layers, &mut errors);
        validate::validate_gateway_files(&opts.root, &settings.gateway, &layers, &mut errors);
        let agents = agents_load::load_agents(&opts.root, &settings, &layers, &mut errors);
        if errors.is_empty() {
            flows::validate_flows(&settings, &agents, &layers, &mut errors);
            tools::validate_agent_tools(&settings, &agents, &mut errors);
        }
        if errors.is_empty() {
            Ok(MeshSpec { root: opts.root.clone(), settings, agents, layers })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The overlay names under `root/config/` (`dev`, `qa`, `prod`, …: every
    /// `*.toml` but `meshops.toml`), sorted, for `meshops validate`, which
    /// checks each one layered over `meshops.toml`.
    pub fn overlays(root: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(root.join("config")) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
            .filter(|stem| stem != "meshops")
            .collect();
        names.sort();
        names
    }

    /// A path from settings, resolved against the project root.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.root.join(path) }
    }

    /// The flow for `intent` under `variant`.
    pub fn flow(&self, variant: Option<&str>, intent: &str) -> Option<&FlowSpec> {
        variant
            .and_then(|v| self.settings.variants.get(v))
            .and_then(|v| v.flows.get(intent))
            .or_else(|| self.settings.flows.get(intent))
    }

    /// The model profile `name` (validated to exist).
    pub fn model(&self, name: &str) -> Option<&ModelProfile> {
        self.settings.models.get(name)
    }

    /// The flows that run `agent`: `question` for the base mesh's,
    /// `debate:question` for a variant's; the router runs before every
    /// flow, so it is listed as `(every flow)`.
    pub fn flows_using(&self, agent: &str) -> Vec<String> {
        if agent == self.settings.mesh.router {
            return vec!["(every flow)".to_string()];
        }
        let uses = |f: &FlowSpec| f.agents().iter().any(|a| a.agent == agent);
        let base = self.settings.flows.iter().filter(|(_, f)| uses(f)).map(|(intent, _)| intent.clone());
        let variants = self.settings.variants.iter().flat_map(|(v, settings)| {
            settings.flows.iter().filter(|(_, f)| uses(f)).map(move |(intent, _)| format!("{v}:{intent}"))
        });
        base.chain(variants).collect()
    }

    /// How many replicas of `agent` run: the file's `replicas`, and at
    /// least one per mesh thread (`mesh.arbiters`), so every thread's
    /// orchestrator has one beside it.
    pub fn running_replicas(&self, agent: &AgentSpec) -> usize {
        agent.replicas.max(self.settings.mesh.arbiters.max(1))
    }
}
