//! Configuration: loads `config/`, `agents/` and `prompts/` into one typed,
//! validated [`MeshSpec`], once, before anything starts.
//!
//! Settings are layered, later wins: compiled-in defaults →
//! `config/meshops.toml` → `config/<env>.toml` (env from `MESHOPS_ENV`) →
//! `--config FILE` → environment variables `MESHOPS__<SECTION>__<KEY>`.
//! Every error names the file, the field and what would be valid; all errors
//! found are reported together.

pub mod agents;
pub mod keys;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

pub use agents::{
    AgentFile, AgentKind, CriticSettings, IntentSpec, KindSettings, RetrieverSettings, RouterSettings,
    SummarizerSettings,
};
pub use settings::{
    AgentOverride, BatchSettings, EmbedderProvider, EvalSettings, FlowSpec, GatewaySettings, LogFormat,
    MeshSettings, ModelProfile, Provider, RetrievalSettings, Settings, StoreBackend, TelemetrySettings,
    TlsSettings, VariantSettings,
};

use crate::prompt::Prompty;

/// Prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "MESHOPS__";
/// Environment variable naming the overlay (`config/<env>.toml`).
pub const ENV_NAME_VAR: &str = "MESHOPS_ENV";

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A field holds something invalid (or is unknown, or missing).
    #[error("{file}: field `{field}`: {message}")]
    Field { file: String, field: String, message: String },
    /// The file itself could not be read or parsed.
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

impl ConfigError {
    fn field(file: impl fmt::Display, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Field { file: file.to_string(), field: field.into(), message: message.into() }
    }

    fn file(file: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::File { file: file.to_string(), message: message.into() }
    }
}

/// Every problem found while loading, reported together so one
/// `meshops validate` run shows them all.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where to load from.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Project root: `config/`, and relative paths in settings, resolve
    /// against it.
    pub root: PathBuf,
    /// Overlay name (`dev`, `qa`, `prod`): loads `config/<env>.toml`.
    pub env: Option<String>,
    /// An extra settings file given on the command line.
    pub config_file: Option<PathBuf>,
    /// `MESHOPS__…` variables, as (name, value) pairs; callers pass
    /// `std::env::vars()` so tests can pass their own.
    pub env_vars: Vec<(String, String)>,
}

impl LoadOptions {
    /// Options for the process: root as given, env and variables from the
    /// environment.
    pub fn from_process(root: PathBuf, config_file: Option<PathBuf>) -> Self {
        Self {
            root,
            env: std::env::var(ENV_NAME_VAR).ok().filter(|v| !v.is_empty()),
            config_file,
            env_vars: std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect(),
        }
    }

    /// Only the files under `root`: no overlay, no variables.
    pub fn files_only(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), env: None, config_file: None, env_vars: Vec::new() }
    }
}

/// An agent as the mesh runs it for one variant (or the base mesh).
#[derive(Debug, Clone)]
pub struct AgentProfile {
    /// Loaded prompt; `None` for kinds that call no model.
    pub prompt: Option<Arc<Prompty>>,
    /// Prompt file, for descriptions.
    pub prompt_file: Option<PathBuf>,
    /// Model profile name; `None` for kinds that call no model.
    pub model: Option<String>,
    pub settings: KindSettings,
}

/// One agent, validated.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub kind: AgentKind,
    pub description: String,
    /// The file the agent came from, for error messages.
    pub file: PathBuf,
    pub replicas: usize,
    pub timeout_ms: u64,
    /// The profile used when the request names no variant.
    pub base: AgentProfile,
    /// Profiles by variant name, for variants that override this agent.
    pub variants: BTreeMap<String, AgentProfile>,
}

impl AgentSpec {
    /// The profile in force for `variant`.
    pub fn profile(&self, variant: Option<&str>) -> &AgentProfile {
        variant.and_then(|v| self.variants.get(v)).unwrap_or(&self.base)
    }
}

/// Everything the mesh, gateway and tools need, validated.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    pub root: PathBuf,
    pub settings: Settings,
    pub agents: BTreeMap<String, AgentSpec>,
    /// The settings files that were layered, in order, for `validate`.
    pub layers: Vec<PathBuf>,
}

impl MeshSpec {
    /// Loads and validates everything; returns every problem found.
    pub fn load(opts: &LoadOptions) -> Result<MeshSpec, ConfigErrors> {
        let (settings, layers) = load_settings(opts).map_err(|e| ConfigErrors(vec![e]))?;
        let mut errors = Vec::new();
        validate_settings(&settings, &layers, &mut errors);
        validate_gateway_files(&opts.root, &settings.gateway, &layers, &mut errors);
        let agents = load_agents(&opts.root, &settings, &layers, &mut errors);
        if errors.is_empty() {
            validate_flows(&settings, &agents, &layers, &mut errors);
        }
        if errors.is_empty() {
            Ok(MeshSpec { root: opts.root.clone(), settings, agents, layers })
        } else {
            Err(ConfigErrors(errors))
        }
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
}

/// The file that most likely set `path` (dotted): the last layer whose TOML
/// holds it, else the main settings file.
fn locate(path: &[String], layers: &[PathBuf]) -> String {
    for layer in layers.iter().rev() {
        let Ok(text) = std::fs::read_to_string(layer) else { continue };
        let Ok(value) = text.parse::<toml::Table>() else { continue };
        let mut cur = toml::Value::Table(value);
        let mut found = true;
        for key in path {
            match cur.get(key) {
                Some(next) => cur = next.clone(),
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            return layer.display().to_string();
        }
    }
    match layers.first() {
        Some(first) => first.display().to_string(),
        None => "config/meshops.toml".into(),
    }
}

fn load_settings(opts: &LoadOptions) -> Result<(Settings, Vec<PathBuf>), ConfigError> {
    let mut layers = Vec::new();
    let main = opts.root.join("config").join("meshops.toml");
    if main.is_file() {
        layers.push(main);
    }
    if let Some(env) = &opts.env {
        let overlay = opts.root.join("config").join(format!("{env}.toml"));
        if !overlay.is_file() {
            return Err(ConfigError::file(
                overlay.display(),
                format!("{ENV_NAME_VAR}={env} names an overlay that does not exist"),
            ));
        }
        layers.push(overlay);
    }
    if let Some(file) = &opts.config_file {
        if !file.is_file() {
            return Err(ConfigError::file(file.display(), "--config file does not exist"));
        }
        layers.push(file.clone());
    }

    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    for layer in &layers {
        // Parse each file alone first: a syntax error then names its file
        // and line instead of surfacing as a merged-value error.
        let text =
            std::fs::read_to_string(layer).map_err(|e| ConfigError::file(layer.display(), e.to_string()))?;
        text.parse::<toml::Table>()
            .map_err(|e| ConfigError::file(layer.display(), e.to_string().trim().to_string()))?;
        figment = figment.merge(Toml::file_exact(layer));
    }
    let env_table = env_overrides(&opts.env_vars)?;
    let has_env = !env_table.is_empty();
    if has_env {
        let text =
            toml::to_string(&env_table).map_err(|e| ConfigError::file("environment", e.to_string()))?;
        figment = figment.merge(Toml::string(&text));
    }

    figment.extract::<Settings>().map(|s| (s, layers.clone())).map_err(|err| {
        let mut path = err.path.clone();
        let message = err.kind.to_string();
        if let figment::error::Kind::UnknownField(field, _) = &err.kind {
            path.push(field.clone());
        }
        let from_file = err.metadata.as_ref().and_then(|m| m.source.as_ref()).and_then(|s| s.file_path());
        let file = match from_file {
            Some(p) => p.display().to_string(),
            None if has_env && env_sets(&opts.env_vars, &path) => {
                format!("environment variable {ENV_PREFIX}{}", path.join("__").to_uppercase())
            }
            None => locate(&path, &layers),
        };
        ConfigError::field(file, path.join("."), message)
    })
}

/// Whether some `MESHOPS__…` variable sets `path` or a prefix of it.
fn env_sets(vars: &[(String, String)], path: &[String]) -> bool {
    vars.iter().any(|(k, _)| {
        let Some(rest) = k.strip_prefix(ENV_PREFIX) else { return false };
        let keys: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        keys.iter().zip(path).all(|(a, b)| a == b)
    })
}

/// Builds a TOML table from `MESHOPS__A__B=value` variables. Values parse
/// as TOML when they can (`5`, `true`, `["a"]`) and are strings otherwise.
fn env_overrides(vars: &[(String, String)]) -> Result<toml::Table, ConfigError> {
    let mut root = toml::Table::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        let keys: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::file(
                format!("environment variable {name}"),
                "empty key segment; use MESHOPS__SECTION__KEY",
            ));
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let mut table = &mut root;
        for key in &keys[..keys.len() - 1] {
            let entry = table.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            let toml::Value::Table(next) = entry else {
                return Err(ConfigError::file(format!("environment variable {name}"), "conflicting keys"));
            };
            table = next;
        }
        if let Some(last) = keys.last() {
            table.insert(last.clone(), value);
        }
    }
    Ok(root)
}

fn validate_settings(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let at = |path: &[&str]| locate(&path.iter().map(|p| p.to_string()).collect::<Vec<_>>(), layers);
    if s.gateway.listen.parse::<std::net::SocketAddr>().is_err() {
        errors.push(ConfigError::field(
            at(&["gateway", "listen"]),
            "gateway.listen",
            format!(
                "`{}` is not a socket address; expected HOST:PORT such as 127.0.0.1:50051",
                s.gateway.listen
            ),
        ));
    }
    if s.gateway.max_query_chars == 0 {
        errors.push(ConfigError::field(at(&["gateway"]), "gateway.max_query_chars", "must be at least 1"));
    }
    if s.gateway.max_in_flight == 0 {
        errors.push(ConfigError::field(at(&["gateway"]), "gateway.max_in_flight", "must be at least 1"));
    }
    if !(s.gateway.rate_limit_rps >= 0.0 && s.gateway.rate_limit_rps.is_finite()) {
        errors.push(ConfigError::field(
            at(&["gateway"]),
            "gateway.rate_limit_rps",
            "must be a number ≥ 0 (0 turns the limit off)",
        ));
    }
    if s.gateway.max_message_bytes < 1024 {
        errors.push(ConfigError::field(
            at(&["gateway"]),
            "gateway.max_message_bytes",
            "must be at least 1024 bytes",
        ));
    }
    if s.gateway.max_metadata_entries < 16 {
        errors.push(ConfigError::field(
            at(&["gateway"]),
            "gateway.max_metadata_entries",
            "must be at least 16 (a gRPC call carries several standard metadata entries)",
        ));
    }
    if s.gateway.request_timeout_ms == 0 {
        errors.push(ConfigError::field(at(&["gateway"]), "gateway.request_timeout_ms", "must be at least 1"));
    }
    for (value, key) in [
        (s.batch.workers, "workers"),
        (s.batch.per_job_concurrency, "per_job_concurrency"),
        (s.batch.max_items, "max_items"),
    ] {
        if value == 0 {
            errors.push(ConfigError::field(
                at(&["batch", key]),
                format!("batch.{key}"),
                "must be at least 1",
            ));
        }
    }
    if !s.models.contains_key(&s.eval.judge_model) {
        errors.push(ConfigError::field(
            at(&["eval", "judge_model"]),
            "eval.judge_model",
            format!("unknown model profile `{}`; known: {}", s.eval.judge_model, keys(&s.models)),
        ));
    }
    if s.mesh.arbiters == 0 || s.mesh.arbiters > 256 {
        errors.push(ConfigError::field(
            at(&["mesh", "arbiters"]),
            "mesh.arbiters",
            "must be between 1 and 256",
        ));
    }
    let t = &s.telemetry;
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        errors.push(ConfigError::field(
            at(&["telemetry", "sampling_ratio"]),
            "telemetry.sampling_ratio",
            "must be between 0 and 1",
        ));
    }
    if t.export_interval_ms < 100 {
        errors.push(ConfigError::field(
            at(&["telemetry", "export_interval_ms"]),
            "telemetry.export_interval_ms",
            "must be at least 100",
        ));
    }
    if let Some(ep) = &t.otlp_endpoint {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            errors.push(ConfigError::field(
                at(&["telemetry", "otlp_endpoint"]),
                "telemetry.otlp_endpoint",
                format!("`{ep}` is not a URL; expected http://HOST:4317"),
            ));
        }
    }
    let r = &s.retrieval;
    if r.backend == StoreBackend::Qdrant {
        validate_qdrant(r, &at(&["retrieval"]), errors);
    }
    validate_embedder(s, &at(&["retrieval", "embedder"]), errors);
    if r.embedder.dimension < 8 || r.embedder.dimension > 65_536 {
        errors.push(ConfigError::field(
            at(&["retrieval", "embedder", "dimension"]),
            "retrieval.embedder.dimension",
            "must be between 8 and 65536",
        ));
    }
    if r.collection.is_empty()
        || !r.collection.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errors.push(ConfigError::field(
            at(&["retrieval", "collection"]),
            "retrieval.collection",
            "must be non-empty ASCII letters, digits, `_` or `-`",
        ));
    }
    if r.chunk_max_chars < 100 || r.chunk_overlap_chars >= r.chunk_max_chars {
        errors.push(ConfigError::field(
            at(&["retrieval"]),
            "retrieval.chunk_max_chars",
            "chunk_max_chars must be at least 100 and greater than chunk_overlap_chars",
        ));
    }
    for (name, m) in &s.models {
        let field = |f: &str| format!("models.{name}.{f}");
        let file = at(&["models", name]);
        validate_remote_model(name, m, &file, errors);
        if m.model.trim().is_empty() {
            errors.push(ConfigError::field(&file, field("model"), "must not be empty"));
        }
        if !(0.0..=1.0).contains(&m.failure_rate) {
            errors.push(ConfigError::field(&file, field("failure_rate"), "must be between 0 and 1"));
        }
        if m.panic_on_query.is_some() && m.provider != Provider::Offline {
            errors.push(ConfigError::field(
                &file,
                field("panic_on_query"),
                "is a test-only fault hook of the offline engine; remove it or use provider `offline`",
            ));
        }
        if m.panic_on_query.as_deref().is_some_and(|t| t.trim().is_empty()) {
            errors.push(ConfigError::field(
                &file,
                field("panic_on_query"),
                "must not be empty (it would match every query)",
            ));
        }
        if let Some(fb) = &m.fallback {
            if !s.models.contains_key(fb) || fb == name {
                errors.push(ConfigError::field(
                    &file,
                    field("fallback"),
                    format!("`{fb}` is not another model profile; known: {}", keys(&s.models)),
                ));
            }
        }
    }
    validate_fallback_cycles(s, layers, errors);
}

/// The files the gateway reads at start-up: TLS certificates and key, and
/// the API key file. Read and parsed here so a bad path or a bad file is a
/// configuration error naming its field, not a failed start.
fn validate_gateway_files(
    root: &Path,
    g: &GatewaySettings,
    layers: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) {
    let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
    if let Some(tls) = &g.tls {
        let file = locate(&["gateway".into(), "tls".into()], layers);
        if let Err(e) = read_pem_certs(&resolve(&tls.cert_path)) {
            errors.push(ConfigError::field(&file, "gateway.tls.cert_path", e));
        }
        if let Err(e) = read_pem_key(&resolve(&tls.key_path)) {
            errors.push(ConfigError::field(&file, "gateway.tls.key_path", e));
        }
        if let Some(ca) = &tls.client_ca_path {
            if let Err(e) = read_pem_certs(&resolve(ca)) {
                errors.push(ConfigError::field(&file, "gateway.tls.client_ca_path", e));
            }
        }
    }
    if let Some(path) = &g.api_keys_file {
        let file = locate(&["gateway".into(), "api_keys_file".into()], layers);
        match keys::read_key_file(&resolve(path)) {
            Ok(k) if k.is_empty() => errors.push(ConfigError::field(
                &file,
                "gateway.api_keys_file",
                format!("{} holds no key; remove the setting to run without authentication", path.display()),
            )),
            Ok(_) => {}
            Err(e) => errors.push(ConfigError::field(&file, "gateway.api_keys_file", e)),
        }
    }
}

/// `backend = "qdrant"` needs the server's URL; its API key, when named,
/// must be set (checked here so `meshops validate` reports it).
fn validate_qdrant(r: &RetrievalSettings, file: &str, errors: &mut Vec<ConfigError>) {
    match r.url.as_deref().map(str::trim) {
        None | Some("") => errors.push(ConfigError::field(
            file,
            "retrieval.url",
            "required for backend `qdrant`: the server's gRPC URL, e.g. http://localhost:6334",
        )),
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => errors.push(
            ConfigError::field(file, "retrieval.url", format!("`{u}` is not an http:// or https:// URL")),
        ),
        Some(_) => {}
    }
    if let Some(env) = &r.api_key_env {
        let var = crate::llm::openai::api_key_var(env);
        if var.is_empty() {
            errors.push(ConfigError::field(
                file,
                "retrieval.api_key_env",
                "must name an environment variable",
            ));
        } else if std::env::var(var).map(|v| v.trim().is_empty()).unwrap_or(true) {
            errors.push(ConfigError::field(
                file,
                "retrieval.api_key_env",
                format!(
                    "the Qdrant server's API key must be in environment variable `{var}`, which is not set"
                ),
            ));
        }
    }
}

/// Reads a PEM file of certificates; at least one must be there.
pub fn read_pem_certs(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)", path.display()));
    }
    Ok(bytes)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_pem_key(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: holds no PEM private key: {e}", path.display()))?;
    Ok(bytes)
}

/// A remote embedder names a model profile of its own provider.
fn validate_embedder(s: &Settings, file: &str, errors: &mut Vec<ConfigError>) {
    let e = &s.retrieval.embedder;
    if e.batch_size == 0 {
        errors.push(ConfigError::field(file, "retrieval.embedder.batch_size", "must be at least 1"));
    }
    if matches!(e.provider, EmbedderProvider::Offline | EmbedderProvider::Zero) {
        return;
    }
    let Some(name) = &e.model else {
        errors.push(ConfigError::field(
            file,
            "retrieval.embedder.model",
            format!(
                "required for provider `{}`: the name of a [models.<name>] profile; known: {}",
                e.provider.as_str(),
                keys(&s.models)
            ),
        ));
        return;
    };
    match s.models.get(name) {
        None => errors.push(ConfigError::field(
            file,
            "retrieval.embedder.model",
            format!("`{name}` is not a model profile; known: {}", keys(&s.models)),
        )),
        Some(m) if m.provider != e.provider.model_provider() => errors.push(ConfigError::field(
            file,
            "retrieval.embedder.provider",
            format!(
                "`{}` but model profile `{name}` has provider `{}`; make them the same",
                e.provider.as_str(),
                m.provider.as_str()
            ),
        )),
        Some(_) => {}
    }
}

/// What a remote profile needs before a client can be built: its endpoint
/// settings, sane limits and prices, and the API key's variable set in the
/// environment (checked here so `meshops validate` reports it, not the first
/// request).
fn validate_remote_model(name: &str, m: &ModelProfile, file: &str, errors: &mut Vec<ConfigError>) {
    let field = |f: &str| format!("models.{name}.{f}");
    let mut need = |f: &str, what: &str| {
        errors.push(ConfigError::field(
            file,
            field(f),
            format!("required for provider `{}`: {what}", m.provider.as_str()),
        ))
    };
    match m.provider {
        Provider::Offline | Provider::Zero => return,
        Provider::Openai => {
            if m.api_key_env.is_none() {
                need("api_key_env", "the name of the environment variable holding the API key");
            }
        }
        Provider::Azure => {
            if m.base_url.is_none() {
                need("base_url", "the resource endpoint, e.g. https://NAME.openai.azure.com");
            }
            if m.api_version.is_none() {
                need("api_version", "the Azure OpenAI API version, e.g. 2024-10-21");
            }
            if m.api_key_env.is_none() {
                need("api_key_env", "the name of the environment variable holding the API key");
            }
        }
        Provider::OpenaiCompatible => {
            if m.base_url.is_none() {
                need("base_url", "the server's OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1");
            }
        }
    }
    if let Some(url) = &m.base_url {
        match crate::prompt::resolve_env_refs(url) {
            Ok(u) if u.starts_with("http://") || u.starts_with("https://") => {}
            Ok(u) => errors.push(ConfigError::field(
                file,
                field("base_url"),
                format!("`{u}` is not an http:// or https:// URL"),
            )),
            Err(e) => {
                errors.push(ConfigError::field(file, field("base_url"), format!("profile `{name}`: {e}")))
            }
        }
    }
    if let Some(env) = &m.api_key_env {
        let var = crate::llm::openai::api_key_var(env);
        if var.is_empty() {
            errors.push(ConfigError::field(file, field("api_key_env"), "must name an environment variable"));
        } else if std::env::var(var).map(|v| v.trim().is_empty()).unwrap_or(true) {
            errors.push(ConfigError::field(
                file,
                field("api_key_env"),
                format!("model profile `{name}` needs the API key in environment variable `{var}`, which is not set"),
            ));
        }
    }
    if m.timeout_ms == Some(0) {
        errors.push(ConfigError::field(file, field("timeout_ms"), "must be at least 1"));
    }
    if m.max_retries.is_some_and(|r| r > 10) {
        errors.push(ConfigError::field(file, field("max_retries"), "must be at most 10"));
    }
    for (f, price) in
        [("input_price_per_mtok", m.input_price_per_mtok), ("output_price_per_mtok", m.output_price_per_mtok)]
    {
        if price.is_some_and(|p| !p.is_finite() || p < 0.0) {
            errors.push(ConfigError::field(
                file,
                field(f),
                "must be a price of 0 or more (USD per million tokens)",
            ));
        }
    }
}

/// Fallback chains that loop (`a -> b -> a`) would never end; each profile
/// on a loop is reported.
fn validate_fallback_cycles(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    for name in s.models.keys() {
        let mut seen = BTreeSet::from([name.as_str()]);
        let mut chain = vec![name.as_str()];
        let mut cur = name.as_str();
        while let Some(next) = s.models.get(cur).and_then(|m| m.fallback.as_deref()) {
            chain.push(next);
            if next == name {
                errors.push(ConfigError::field(
                    locate(&["models".into(), name.clone()], layers),
                    format!("models.{name}.fallback"),
                    format!("fallback chain loops: {}", chain.join(" -> ")),
                ));
                break;
            }
            if !seen.insert(next) {
                break;
            }
            cur = next;
        }
    }
}

fn keys<V>(map: &BTreeMap<String, V>) -> String {
    let names: Vec<&str> = map.keys().map(String::as_str).collect();
    if names.is_empty() { "(none)".into() } else { names.join(", ") }
}

fn load_agents(
    root: &Path,
    s: &Settings,
    layers: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, AgentSpec> {
    let dir = if s.mesh.agents_dir.is_absolute() {
        s.mesh.agents_dir.clone()
    } else {
        root.join(&s.mesh.agents_dir)
    };
    let prompts_dir = if s.mesh.prompts_dir.is_absolute() {
        s.mesh.prompts_dir.clone()
    } else {
        root.join(&s.mesh.prompts_dir)
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            errors.push(ConfigError::field(
                locate(&["mesh".into()], layers),
                "mesh.agents_dir",
                format!("{}: {e}", dir.display()),
            ));
            return BTreeMap::new();
        }
    };
    files.sort();
    let mut prompts: BTreeMap<PathBuf, Arc<Prompty>> = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for file in files {
        let Some(name) = file.file_stem().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        let shown = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError::file(&shown, e.to_string()));
                continue;
            }
        };
        let agent: AgentFile = match toml::from_str(&text) {
            Ok(a) => a,
            Err(e) => {
                errors.push(ConfigError::file(&shown, e.to_string().trim().to_string()));
                continue;
            }
        };
        let before = errors.len();
        let settings = kind_settings(&shown, &agent, errors);
        if agent.replicas == 0 || agent.replicas > 1024 {
            errors.push(ConfigError::field(&shown, "replicas", "must be between 1 and 1024"));
        }
        if agent.timeout_ms == 0 {
            errors.push(ConfigError::field(&shown, "timeout_ms", "must be at least 1"));
        }
        let needs_model = agent.kind != AgentKind::Retriever;
        let mut load_prompt = |field: &str,
                               file_name: &str,
                               errors: &mut Vec<ConfigError>|
         -> Option<(PathBuf, Arc<Prompty>)> {
            let path = prompts_dir.join(file_name);
            if let Some(p) = prompts.get(&path) {
                return Some((path, p.clone()));
            }
            if !path.is_file() {
                errors.push(ConfigError::field(
                    &shown,
                    field,
                    format!(
                        "prompt file {} does not exist (names are relative to {})",
                        path.display(),
                        prompts_dir.display()
                    ),
                ));
                return None;
            }
            match Prompty::load(&path) {
                Ok(p) => {
                    let p = Arc::new(p);
                    prompts.insert(path.clone(), p.clone());
                    Some((path, p))
                }
                Err(e) => {
                    errors.push(ConfigError::field(&shown, field, e.to_string()));
                    None
                }
            }
        };
        let check_model = |field: &str, model: &str, errors: &mut Vec<ConfigError>| {
            if !s.models.contains_key(model) {
                errors.push(ConfigError::field(
                    &shown,
                    field,
                    format!("unknown model profile `{model}`; known: {}", keys(&s.models)),
                ));
            }
        };
        let (prompt, prompt_file) = match (&agent.prompt, needs_model) {
            (Some(p), _) => match load_prompt("prompt", p, errors) {
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
        let model = match s.mesh.agent_models.get(&name) {
            Some(m) => {
                let file = locate(&["mesh".into(), "agent_models".into(), name.clone()], layers);
                if !s.models.contains_key(m) {
                    errors.push(ConfigError::field(
                        file,
                        format!("mesh.agent_models.{name}"),
                        format!("unknown model profile `{m}`; known: {}", keys(&s.models)),
                    ));
                } else if !needs_model {
                    errors.push(ConfigError::field(
                        file,
                        format!("mesh.agent_models.{name}"),
                        format!("a {} agent calls no chat model", agent.kind.as_str()),
                    ));
                }
                Some(m.clone())
            }
            None => agent.model.clone(),
        };
        match (&model, needs_model) {
            (Some(m), _) if !s.mesh.agent_models.contains_key(&name) => check_model("model", m, errors),
            (Some(_), _) => {}
            (None, true) => errors.push(ConfigError::field(
                &shown,
                "model",
                format!("required for a {} agent", agent.kind.as_str()),
            )),
            (None, false) => {}
        }
        let Some(settings) = settings else { continue };
        let base = AgentProfile { prompt, prompt_file, model, settings };

        let mut variants = BTreeMap::new();
        for (vname, variant) in &s.variants {
            let Some(ov) = variant.agents.get(&name) else { continue };
            let vfile = locate(&["variants".into(), vname.clone()], layers);
            let mut profile = base.clone();
            if let Some(p) = &ov.prompt {
                let field = format!("variants.{vname}.agents.{name}.prompt");
                let path = prompts_dir.join(p);
                if !path.is_file() {
                    errors.push(ConfigError::field(
                        &vfile,
                        &field,
                        format!("prompt file {} does not exist", path.display()),
                    ));
                } else {
                    match Prompty::load(&path) {
                        Ok(loaded) => {
                            profile.prompt = Some(Arc::new(loaded));
                            profile.prompt_file = Some(path);
                        }
                        Err(e) => errors.push(ConfigError::field(&vfile, &field, e.to_string())),
                    }
                }
            }
            if let Some(m) = &ov.model {
                if !s.models.contains_key(m) {
                    errors.push(ConfigError::field(
                        &vfile,
                        format!("variants.{vname}.agents.{name}.model"),
                        format!("unknown model profile `{m}`; known: {}", keys(&s.models)),
                    ));
                }
                profile.model = Some(m.clone());
            }
            apply_override(
                &mut profile.settings,
                ov,
                &vfile,
                &format!("variants.{vname}.agents.{name}"),
                errors,
            );
            variants.insert(vname.clone(), profile);
        }
        if errors.len() == before {
            agents.insert(
                name.clone(),
                AgentSpec {
                    name,
                    kind: agent.kind,
                    description: agent.description.clone(),
                    file: file.clone(),
                    replicas: agent.replicas,
                    timeout_ms: agent.timeout_ms,
                    base,
                    variants,
                },
            );
        }
    }
    for agent in s.mesh.agent_models.keys() {
        if !agents.contains_key(agent) && errors.is_empty() {
            errors.push(ConfigError::field(
                locate(&["mesh".into(), "agent_models".into()], layers),
                format!("mesh.agent_models.{agent}"),
                format!("no agent named `{agent}`; known: {}", keys(&agents)),
            ));
        }
    }
    for (vname, variant) in &s.variants {
        for agent in variant.agents.keys() {
            if !agents.contains_key(agent) && errors.is_empty() {
                errors.push(ConfigError::field(
                    locate(&["variants".into(), vname.clone()], layers),
                    format!("variants.{vname}.agents.{agent}"),
                    format!("no agent named `{agent}`; known: {}", keys(&agents)),
                ));
            }
        }
    }
    agents
}

/// The kind table of `agent`, defaults filled in; other kinds' tables are
/// errors (they would be silently ignored otherwise).
fn kind_settings(file: &str, agent: &AgentFile, errors: &mut Vec<ConfigError>) -> Option<KindSettings> {
    let present = [
        ("router", agent.router.is_some(), AgentKind::Router),
        ("retriever", agent.retriever.is_some(), AgentKind::Retriever),
        ("summarizer", agent.summarizer.is_some(), AgentKind::Summarizer),
        ("critic", agent.critic.is_some(), AgentKind::Critic),
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
    };
    Some(settings)
}

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
        KindSettings::Router(_) => {}
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

fn validate_flows(
    s: &Settings,
    agents: &BTreeMap<String, AgentSpec>,
    layers: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) {
    let router = match agents.get(&s.mesh.router) {
        Some(a) if a.kind == AgentKind::Router => Some(a),
        Some(a) => {
            errors.push(ConfigError::field(
                locate(&["mesh".into()], layers),
                "mesh.router",
                format!("agent `{}` is a {}, not a router", a.name, a.kind.as_str()),
            ));
            None
        }
        None => {
            errors.push(ConfigError::field(
                locate(&["mesh".into()], layers),
                "mesh.router",
                format!("no agent named `{}`; known: {}", s.mesh.router, keys(agents)),
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
                    format!("no agent named `{step}`; known: {}", keys(agents)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_parse_values_and_nest() {
        let vars = vec![
            ("MESHOPS__RETRIEVAL__DATA_DIR".to_string(), "/x".to_string()),
            ("MESHOPS__GATEWAY__MAX_QUERY_CHARS".to_string(), "12".to_string()),
        ];
        let t = env_overrides(&vars).unwrap();
        assert_eq!(t["retrieval"]["data_dir"].as_str(), Some("/x"));
        assert_eq!(t["gateway"]["max_query_chars"].as_integer(), Some(12));
    }
}
