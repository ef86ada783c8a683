//! Loading `agents/*.toml`: each file parsed and checked, its prompt file
//! read, its model profile resolved (`mesh.agent_models` wins over the
//! file), and one profile built per variant that overrides it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::agents::{AgentFile, AgentKind, AgentProfile, AgentSpec, KindSettings};
use super::error::{ConfigError, known, locate_at};
use super::llm_output::output_spec;
use super::prompt_file::{PromptFile, PromptFileError};
use super::settings::{AgentOverride, Settings};

/// Loads every agent file under `mesh.agents_dir`, in name order. An agent
/// with any error is left out (and the error recorded); so are references
/// to agents that do not exist, once every file loaded cleanly.
pub(super) fn load_agents(
    root: &Path,
    s: &Settings,
    layers: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, AgentSpec> {
    let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
    let dir = resolve(&s.mesh.agents_dir);
    let files = match agent_files(&dir) {
        Ok(files) => files,
        Err(e) => {
            errors.push(ConfigError::field(
                locate_at(&["mesh"], layers),
                "mesh.agents_dir",
                format!("{}: {e}", dir.display()),
            ));
            return BTreeMap::new();
        }
    };
    let mut loader = AgentLoader {
        settings: s,
        layers,
        prompts_dir: resolve(&s.mesh.prompts_dir),
        prompts: BTreeMap::new(),
    };
    let mut agents = BTreeMap::new();
    for file in files {
        if let Some(agent) = loader.load(&file, errors) {
            agents.insert(agent.name.clone(), agent);
        }
    }
    check_agent_names(s, layers, &agents, errors);
    agents
}

/// The `*.toml` files of `dir`, sorted.
fn agent_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Agents named in `mesh.agent_models` and in variants must exist; checked
/// only when nothing else failed, since an agent with an error is missing
/// from `agents`.
fn check_agent_names(
    s: &Settings,
    layers: &[PathBuf],
    agents: &BTreeMap<String, AgentSpec>,
    errors: &mut Vec<ConfigError>,
) {
    for agent in s.mesh.agent_models.keys() {
        if !agents.contains_key(agent) && errors.is_empty() {
            errors.push(ConfigError::field(
                locate_at(&["mesh", "agent_models"], layers),
                format!("mesh.agent_models.{agent}"),
                format!("no agent named `{agent}`; known: {}", known(agents)),
            ));
        }
    }
    for (vname, variant) in &s.variants {
        for agent in variant.agents.keys() {
            if !agents.contains_key(agent) && errors.is_empty() {
                errors.push(ConfigError::field(
                    locate_at(&["variants", vname], layers),
                    format!("variants.{vname}.agents.{agent}"),
                    format!("no agent named `{agent}`; known: {}", known(agents)),
                ));
            }
        }
    }
}

/// What loading one agent file needs from the settings, and the prompt
/// files read so far (agents sharing a prompt file share one copy).
struct AgentLoader<'a> {
    /// The layered settings: model profiles, agent models, variants.
    settings: &'a Settings,
    /// The settings files, to name the one that set a field.
    layers: &'a [PathBuf],
    /// `mesh.prompts_dir`, resolved: prompt names are relative to it.
    prompts_dir: PathBuf,
    /// Prompt files already read, by path.
    prompts: BTreeMap<PathBuf, Arc<PromptFile>>,
}

impl AgentLoader<'_> {
    /// One agent file, checked; `None` when it has any error (recorded).
    fn load(&mut self, file: &Path, errors: &mut Vec<ConfigError>) -> Option<AgentSpec> {
        let name = file.file_stem().and_then(|n| n.to_str())?.to_string();
        let shown = file.display().to_string();
        let agent = read_agent_file(file, &shown, errors)?;
        let before = errors.len();
        let settings = kind_settings(&shown, &agent, errors);
        if agent.replicas == 0 || agent.replicas > 1024 {
            errors.push(ConfigError::field(&shown, "replicas", "must be between 1 and 1024"));
        }
        if agent.timeout_ms == 0 {
            errors.push(ConfigError::field(&shown, "timeout_ms", "must be at least 1"));
        }
        let needs_model = agent.kind != AgentKind::Retriever;
        let (prompt, prompt_file) = match (&agent.prompt, needs_model) {
            (Some(p), _) => match self.base_prompt(&shown, p, errors) {
                Some((path, prompt)) => (Some(prompt), Some(path)),
                None => (None, None),
            },
            (None, true) => {
                errors.push(ConfigError::field(
                    &shown,
                    "prompt",
                    format!("required for a {} agent", agent.kind.as_str()),
                ));
                (None, None)
            }
            (None, false) => (None, None),
        };
        let model = self.model(&name, &shown, &agent, needs_model, errors);
        let base = AgentProfile { prompt, prompt_file, model, settings: settings? };
        let variants = self.variant_profiles(&name, &base, errors);
        self.check_llm_outputs(&name, &shown, &base, &variants, errors);
        (errors.len() == before).then(|| AgentSpec {
            name,
            kind: agent.kind,
            description: agent.description,
            file: file.to_path_buf(),
            replicas: agent.replicas,
            timeout_ms: agent.timeout_ms,
            base,
            variants,
        })
    }

    /// The agent's own prompt file (field `prompt`).
    fn base_prompt(
        &mut self,
        shown: &str,
        file_name: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<(PathBuf, Arc<PromptFile>)> {
        let path = self.prompts_dir.join(file_name);
        if !self.prompts.contains_key(&path) && !path.is_file() {
            errors.push(ConfigError::field(
                shown,
                "prompt",
                format!(
                    "prompt file {} does not exist (names are relative to {})",
                    path.display(),
                    self.prompts_dir.display()
                ),
            ));
            return None;
        }
        match self.prompt_file(&path) {
            Ok(p) => Some((path, p)),
            Err(e) => {
                errors.push(ConfigError::field(shown, "prompt", e.to_string()));
                None
            }
        }
    }

    /// The prompt file at `path`, read once.
    fn prompt_file(&mut self, path: &Path) -> Result<Arc<PromptFile>, PromptFileError> {
        if let Some(p) = self.prompts.get(path) {
            return Ok(p.clone());
        }
        let p = Arc::new(PromptFile::load(path)?);
        self.prompts.insert(path.to_path_buf(), p.clone());
        Ok(p)
    }

    /// The agent's model profile: `mesh.agent_models.<name>` when set (it
    /// moves agents between profiles without editing their files), else the
    /// file's `model`; either must name a profile, and only kinds that call
    /// a model may have one.
    fn model(
        &self,
        name: &str,
        shown: &str,
        agent: &AgentFile,
        needs_model: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Option<String> {
        let s = self.settings;
        let unknown = |m: &str| format!("unknown model profile `{m}`; known: {}", known(&s.models));
        if let Some(m) = s.mesh.agent_models.get(name) {
            let file = locate_at(&["mesh", "agent_models", name], self.layers);
            let field = format!("mesh.agent_models.{name}");
            if !s.models.contains_key(m) {
                errors.push(ConfigError::field(file, field, unknown(m)));
            } else if !needs_model {
                errors.push(ConfigError::field(
                    file,
                    field,
                    format!("a {} agent calls no chat model", agent.kind.as_str()),
                ));
            }
            return Some(m.clone());
        }
        match (&agent.model, needs_model) {
            (Some(m), _) if !s.models.contains_key(m) => {
                errors.push(ConfigError::field(shown, "model", unknown(m)));
            }
            (Some(_), _) | (None, false) => {}
            (None, true) => errors.push(ConfigError::field(
                shown,
                "model",
                format!("required for a {} agent", agent.kind.as_str()),
            )),
        }
        agent.model.clone()
    }

    /// An llm agent's output (text, or JSON and its schema) must follow
    /// from its settings and each profile's prompt `outputs`; a variant is
    /// checked only where it brings a prompt of its own.
    fn check_llm_outputs(
        &self,
        name: &str,
        shown: &str,
        base: &AgentProfile,
        variants: &BTreeMap<String, AgentProfile>,
        errors: &mut Vec<ConfigError>,
    ) {
        let check = |profile: &AgentProfile| match &profile.settings {
            KindSettings::Llm(ls) => output_spec(ls, profile.prompt.as_deref()).err(),
            _ => None,
        };
        if let Some(e) = check(base) {
            errors.push(ConfigError::field(shown, "prompt", e));
        }
        for (vname, profile) in variants {
            let own_prompt = match (&profile.prompt, &base.prompt) {
                (Some(p), Some(b)) => !Arc::ptr_eq(p, b),
                (p, b) => p.is_some() != b.is_some(),
            };
            if !own_prompt {
                continue;
            }
            if let Some(e) = check(profile) {
                errors.push(ConfigError::field(
                    locate_at(&["variants", vname], self.layers),
                    format!("variants.{vname}.agents.{name}.prompt"),
                    e,
                ));
            }
        }
    }

    /// One profile per variant that overrides agent `name`: `base` with the
    /// variant's prompt, model and kind settings.
    fn variant_profiles(
        &mut self,
        name: &str,
        base: &AgentProfile,
        errors: &mut Vec<ConfigError>,
    ) -> BTreeMap<String, AgentProfile> {
        let mut variants = BTreeMap::new();
        for (vname, variant) in &self.settings.variants {
            let Some(ov) = variant.agents.get(name) else { continue };
            let vfile = locate_at(&["variants", vname], self.layers);
            let prefix = format!("variants.{vname}.agents.{name}");
            let mut profile = base.clone();
            if let Some(p) = &ov.prompt {
                let field = format!("{prefix}.prompt");
                let path = self.prompts_dir.join(p);
                if !self.prompts.contains_key(&path) && !path.is_file() {
                    errors.push(ConfigError::field(
                        &vfile,
                        &field,
                        format!("prompt file {} does not exist", path.display()),
                    ));
                } else {
                    match self.prompt_file(&path) {
                        Ok(loaded) => {
                            profile.prompt = Some(loaded);
                            profile.prompt_file = Some(path);
                        }
                        Err(e) => errors.push(ConfigError::field(&vfile, &field, e.to_string())),
                    }
                }
            }
            if let Some(m) = &ov.model {
                if !self.settings.models.contains_key(m) {
                    errors.push(ConfigError::field(
                        &vfile,
                        format!("{prefix}.model"),
                        format!("unknown model profile `{m}`; known: {}", known(&self.settings.models)),
                    ));
                }
                profile.model = Some(m.clone());
            }
            apply_override(&mut profile.settings, ov, &vfile, &prefix, errors);
            variants.insert(vname.clone(), profile);
        }
        variants
    }
}

/// Reads and parses one agent file; `None` (error recorded) when it cannot.
fn read_agent_file(file: &Path, shown: &str, errors: &mut Vec<ConfigError>) -> Option<AgentFile> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::file(shown, e.to_string()));
            return None;
        }
    };
    match toml::from_str(&text) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(ConfigError::file(shown, e.to_string().trim().to_string()));
            None
        }
    }
}

/// The kind table of `agent`, defaults filled in; other kinds' tables are
/// errors (they would be silently ignored otherwise).
fn kind_settings(file: &str, agent: &AgentFile, errors: &mut Vec<ConfigError>) -> Option<KindSettings> {
    let present = [
        ("router", agent.router.is_some(), AgentKind::Router),
        ("retriever", agent.retriever.is_some(), AgentKind::Retriever),
        ("summarizer", agent.summarizer.is_some(), AgentKind::Summarizer),
        ("critic", agent.critic.is_some(), AgentKind::Critic),
        ("llm", agent.llm.is_some(), AgentKind::Llm),
    ];
    for (table, is_set, kind) in present {
        if is_set && kind != agent.kind {
            errors.push(ConfigError::field(
                file,
                table,
                format!(
                    "a `[{table}]` table does not apply to a {} agent; use `[{}]`",
                    agent.kind.as_str(),
                    agent.kind.as_str()
                ),
            ));
        }
    }
    let settings = match agent.kind {
        AgentKind::Router => {
            let Some(r) = agent.router.clone() else {
                errors.push(ConfigError::field(
                    file,
                    "router",
                    "a router agent needs a `[router]` table with intents",
                ));
                return None;
            };
            if r.intents.is_empty() {
                errors.push(ConfigError::field(file, "router.intents", "at least one intent is required"));
            }
            let mut seen = BTreeSet::new();
            for (i, intent) in r.intents.iter().enumerate() {
                if !seen.insert(intent.name.clone()) {
                    errors.push(ConfigError::field(
                        file,
                        format!("router.intents[{i}].name"),
                        format!("duplicate intent `{}`", intent.name),
                    ));
                }
            }
            if !r.intents.iter().any(|i| i.name == r.default_intent) {
                errors.push(ConfigError::field(
                    file,
                    "router.default_intent",
                    format!(
                        "`{}` is not one of the intents: {}",
                        r.default_intent,
                        r.intents.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            KindSettings::Router(r)
        }
        AgentKind::Retriever => {
            let r = agent.retriever.unwrap_or_default();
            if r.top_k == 0 || r.top_k > 100 {
                errors.push(ConfigError::field(file, "retriever.top_k", "must be between 1 and 100"));
            }
            KindSettings::Retriever(r)
        }
        AgentKind::Summarizer => {
            let s = agent.summarizer.unwrap_or_default();
            if s.max_sentences == 0 {
                errors.push(ConfigError::field(file, "summarizer.max_sentences", "must be at least 1"));
            }
            KindSettings::Summarizer(s)
        }
        AgentKind::Critic => {
            let c = agent.critic.unwrap_or_default();
            for (f, v) in
                [("critic.accept_threshold", c.accept_threshold), ("critic.min_coverage", c.min_coverage)]
            {
                if !(0.0..=1.0).contains(&v) {
                    errors.push(ConfigError::field(file, f, "must be between 0 and 1"));
                }
            }
            KindSettings::Critic(c)
        }
        // What an llm agent returns depends on its prompt too: checked per
        // profile once the prompts are read (`check_llm_outputs`).
        AgentKind::Llm => KindSettings::Llm(agent.llm.clone().unwrap_or_default()),
    };
    Some(settings)
}

/// Applies a variant's kind settings to `settings`; a setting of another
/// kind is an error (it would be silently ignored otherwise).
fn apply_override(
    settings: &mut KindSettings,
    ov: &AgentOverride,
    file: &str,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) {
    let mut misplaced = |field: &str| {
        errors.push(ConfigError::field(
            file,
            format!("{prefix}.{field}"),
            "does not apply to this agent's kind",
        ));
    };
    match settings {
        KindSettings::Retriever(r) => {
            if let Some(k) = ov.top_k {
                r.top_k = k;
            }
            if let Some(t) = ov.score_threshold {
                r.score_threshold = t;
            }
        }
        KindSettings::Summarizer(s) => {
            if let Some(n) = ov.max_sentences {
                s.max_sentences = n;
            }
        }
        KindSettings::Critic(c) => {
            if let Some(t) = ov.accept_threshold {
                c.accept_threshold = t;
            }
            if let Some(t) = ov.min_coverage {
                c.min_coverage = t;
            }
        }
        KindSettings::Router(_) | KindSettings::Llm(_) => {}
    }
    let kind_fields = [
        ("top_k", ov.top_k.is_some(), matches!(settings, KindSettings::Retriever(_))),
        ("score_threshold", ov.score_threshold.is_some(), matches!(settings, KindSettings::Retriever(_))),
        ("max_sentences", ov.max_sentences.is_some(), matches!(settings, KindSettings::Summarizer(_))),
        ("accept_threshold", ov.accept_threshold.is_some(), matches!(settings, KindSettings::Critic(_))),
        ("min_coverage", ov.min_coverage.is_some(), matches!(settings, KindSettings::Critic(_))),
    ];
    for (field, set, applies) in kind_fields {
        if set && !applies {
            misplaced(field);
        }
    }
}
