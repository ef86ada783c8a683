//! Checks across the layered settings, once, at load: values in range,
//! names that refer to something, remote endpoints that can be reached with
//! what the environment holds, and the files the gateway will read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::env_refs::{api_key_var, resolve_env_refs};
use super::error::{ConfigError, known, locate_at};
use super::keys;
use super::settings::{
    EmbedderProvider, GatewaySettings, ModelProfile, Provider, RetrievalSettings, Settings, StoreBackend,
};
use super::tls::{read_pem_certs, read_pem_key};

/// Most of anything that runs at once (requests in flight or queued,
/// batch workers): a semaphore's permits, with room to spare.
const MAX_CONCURRENCY: usize = 1_000_000;

/// Every check of the settings alone (agents and flows are checked when
/// they load), in the order their errors are reported.
pub(super) fn validate_settings(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    validate_gateway(s, layers, errors);
    validate_batch_eval_mesh(s, layers, errors);
    validate_telemetry(s, layers, errors);
    validate_retrieval(s, layers, errors);
    validate_models(s, layers, errors);
    validate_fallback_cycles(s, layers, errors);
    super::tools::validate_tools(&s.mcp, &s.sessions, layers, errors);
    super::shared_checks::validate_shared(s, layers, errors);
    super::shared_checks::validate_ab(s, layers, errors);
    super::shared_checks::validate_online_eval(s, layers, errors);
}

/// `[gateway]`: the address and the limits.
fn validate_gateway(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let at = |path: &[&str]| locate_at(path, layers);
    // Every listener: an address, and (for the plaintext front doors) no
    // way around the gRPC port's TLS.
    let listeners = [
        (["gateway", "listen"], Some(&s.gateway.listen), "127.0.0.1:50051", None),
        (["telemetry", "prometheus_listen"], s.telemetry.prometheus_listen.as_ref(), "0.0.0.0:9464", None),
        (
            ["gateway", "mcp_listen"],
            s.gateway.mcp_listen.as_ref(),
            "127.0.0.1:8001",
            Some("the MCP endpoint"),
        ),
        (["gateway", "http_listen"], s.gateway.http_listen.as_ref(), "127.0.0.1:8000", Some("the HTTP API")),
    ];
    for (path, value, example, plaintext) in listeners {
        let Some(value) = value else { continue };
        let field = path.join(".");
        if value.parse::<std::net::SocketAddr>().is_err() {
            errors.push(ConfigError::field(
                at(&path),
                field.clone(),
                format!("`{value}` is not a socket address; expected HOST:PORT such as {example}"),
            ));
        }
        if let (Some(what), Some(_)) = (plaintext, &s.gateway.tls) {
            errors.push(ConfigError::field(
                at(&path),
                field.clone(),
                format!(
                    "{what} serves plaintext, and [gateway.tls] is set: it would bypass TLS; terminate TLS \
                     in front of it (an ingress) and leave [gateway.tls] unset, or unset {}",
                    path[1]
                ),
            ));
        }
    }
    if s.gateway.max_query_chars == 0 {
        errors.push(ConfigError::field(at(&["gateway"]), "gateway.max_query_chars", "must be at least 1"));
    }
    // Counts become semaphores: past their limit they would panic at
    // start; far below it they are still more than any machine runs.
    if s.gateway.max_in_flight > MAX_CONCURRENCY || s.gateway.max_queued > MAX_CONCURRENCY {
        errors.push(ConfigError::field(
            at(&["gateway"]),
            if s.gateway.max_in_flight > MAX_CONCURRENCY {
                "gateway.max_in_flight"
            } else {
                "gateway.max_queued"
            },
            format!("must be at most {MAX_CONCURRENCY}"),
        ));
    }
    if s.gateway.max_concurrent_streams == 0 {
        errors.push(ConfigError::field(
            at(&["gateway", "max_concurrent_streams"]),
            "gateway.max_concurrent_streams",
            "must be at least 1",
        ));
    }
    if s.gateway.http2_keepalive_interval_ms > 0 && s.gateway.http2_keepalive_timeout_ms == 0 {
        errors.push(ConfigError::field(
            at(&["gateway", "http2_keepalive_timeout_ms"]),
            "gateway.http2_keepalive_timeout_ms",
            "must be at least 1 when http2_keepalive_interval_ms pings",
        ));
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
}

/// `[batch]` sizes, the judges' model profile and the mesh's threads.
fn validate_batch_eval_mesh(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let at = |path: &[&str]| locate_at(path, layers);
    for (value, key) in [
        (s.batch.workers, "workers"),
        (s.batch.per_job_concurrency, "per_job_concurrency"),
        (s.batch.max_items, "max_items"),
    ] {
        if value == 0 || value > MAX_CONCURRENCY {
            errors.push(ConfigError::field(
                at(&["batch", key]),
                format!("batch.{key}"),
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
    }
    if !s.models.contains_key(&s.eval.judge_model) {
        errors.push(ConfigError::field(
            at(&["eval", "judge_model"]),
            "eval.judge_model",
            format!("unknown model profile `{}`; known: {}", s.eval.judge_model, known(&s.models)),
        ));
    }
    if s.mesh.arbiters == 0 || s.mesh.arbiters > 256 {
        errors.push(ConfigError::field(
            at(&["mesh", "arbiters"]),
            "mesh.arbiters",
            "must be between 1 and 256",
        ));
    }
}

/// `[telemetry]`: sampling, export interval and the collector's URL.
fn validate_telemetry(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let at = |path: &[&str]| locate_at(path, layers);
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
}

/// `[retrieval]`: the store backend, the embedder, the collection and
/// chunking.
fn validate_retrieval(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let at = |path: &[&str]| locate_at(path, layers);
    let r = &s.retrieval;
    if r.backend == StoreBackend::Qdrant {
        validate_qdrant(r, &at(&["retrieval"]), errors);
    }
    validate_embedder(s, &at(&["retrieval", "embedder"]), errors);
    r.index.check(&at(&["retrieval", "index"]), errors);
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
}

/// `[models.<name>]`: each profile alone (fallback loops are checked
/// across profiles in [`validate_fallback_cycles`]).
fn validate_models(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let at = |path: &[&str]| locate_at(path, layers);
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
                    format!("`{fb}` is not another model profile; known: {}", known(&s.models)),
                ));
            }
        }
    }
}

/// The files the gateway reads at start-up: TLS certificates and key, and
/// the API key file. Read and parsed here so a bad path or a bad file is a
/// configuration error naming its field, not a failed start.
pub(super) fn validate_gateway_files(
    root: &Path,
    g: &GatewaySettings,
    layers: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) {
    let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
    if let Some(tls) = &g.tls {
        let file = locate_at(&["gateway", "tls"], layers);
        // A file that is not here at all is the environment's (a mounted
        // Secret, for an overlay checked away from where it runs); one that
        // is here but unreadable is the file's fault.
        let check = |path: &Path, field: &str, read: &dyn Fn(&Path) -> Result<(), String>| {
            let path = resolve(path);
            if !path.exists() {
                let shown = path.display().to_string();
                return Some(ConfigError::environment(
                    &file,
                    field,
                    &shown,
                    format!("{shown} does not exist (a certificate file, e.g. a mounted TLS Secret)"),
                ));
            }
            read(&path).err().map(|e| ConfigError::field(&file, field, e))
        };
        let certs = |p: &Path| read_pem_certs(p).map(|_| ());
        let key = |p: &Path| read_pem_key(p).map(|_| ());
        errors.extend(check(&tls.cert_path, "gateway.tls.cert_path", &certs));
        errors.extend(check(&tls.key_path, "gateway.tls.key_path", &key));
        if let Some(ca) = &tls.client_ca_path {
            errors.extend(check(ca, "gateway.tls.client_ca_path", &certs));
        }
    }
    // Keys configured but none to be loaded must not become "no
    // authentication": the gateway would serve everyone.
    if let (Some(var), None) = (&g.api_keys_env, &g.api_keys_file) {
        let has_key = std::env::var(var).is_ok_and(|v| v.split(',').any(|k| !k.trim().is_empty()));
        if !has_key {
            errors.push(ConfigError::environment(
                locate_at(&["gateway", "api_keys_env"], layers),
                "gateway.api_keys_env",
                var,
                format!(
                    "names environment variable `{var}`, which is unset or holds no key; the gateway refuses \
                     to start rather than serve without authentication (set it to comma-separated keys, or \
                     remove api_keys_env)"
                ),
            ));
        }
    }
    if let Some(path) = &g.api_keys_file {
        let file = locate_at(&["gateway", "api_keys_file"], layers);
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
        let var = api_key_var(env);
        if var.is_empty() {
            errors.push(ConfigError::field(
                file,
                "retrieval.api_key_env",
                "must name an environment variable",
            ));
        } else if std::env::var(var).map(|v| v.trim().is_empty()).unwrap_or(true) {
            errors.push(ConfigError::environment(
                file,
                "retrieval.api_key_env",
                var,
                format!(
                    "the Qdrant server's API key must be in environment variable `{var}`, which is not set"
                ),
            ));
        }
    }
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
                known(&s.models)
            ),
        ));
        return;
    };
    match s.models.get(name) {
        None => errors.push(ConfigError::field(
            file,
            "retrieval.embedder.model",
            format!("`{name}` is not a model profile; known: {}", known(&s.models)),
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
        match resolve_env_refs(url) {
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
        let var = api_key_var(env);
        if var.is_empty() {
            errors.push(ConfigError::field(file, field("api_key_env"), "must name an environment variable"));
        } else if std::env::var(var).map(|v| v.trim().is_empty()).unwrap_or(true) {
            errors.push(ConfigError::environment(
                file,
                field("api_key_env"),
                var,
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
                    locate_at(&["models", name], layers),
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
