//! Layering the settings with figment, later wins: compiled-in defaults →
//! `config/meshops.toml` → `config/<env>.toml` → `--config FILE` →
//! `MESHOPS__…` variables; and turning figment's errors into located
//! [`ConfigError`]s.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use super::env::{ENV_NAME_VAR, ENV_PREFIX, env_overrides, variable_setting};
use super::error::{ConfigError, locate};
use super::settings::Settings;

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

/// The layered settings and the files they came from, in order.
pub(super) fn load_settings(opts: &LoadOptions) -> Result<(Settings, Vec<PathBuf>), ConfigError> {
    let layers = settings_files(opts)?;
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
    match figment.extract::<Settings>() {
        Ok(settings) => Ok((settings, layers)),
        Err(err) => Err(located(&err, opts, &layers, has_env)),
    }
}

/// The settings files that exist, in layering order; an overlay or
/// `--config` file that is named but missing is an error.
fn settings_files(opts: &LoadOptions) -> Result<Vec<PathBuf>, ConfigError> {
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
    Ok(layers)
}

/// A figment error as a [`ConfigError`] naming the field (dotted, once) and
/// where it was set: the file figment names, else the `MESHOPS__…`
/// variable that set it, else the layer whose TOML holds it.
fn located(err: &figment::Error, opts: &LoadOptions, layers: &[PathBuf], has_env: bool) -> ConfigError {
    let path = field_path(err);
    let from_file = err.metadata.as_ref().and_then(|m| m.source.as_ref()).and_then(|s| s.file_path());
    let file = match from_file {
        Some(p) => p.display().to_string(),
        None => match variable_setting(&opts.env_vars, &path) {
            Some(var) if has_env => format!("environment variable {var}"),
            _ => locate(&path, layers),
        },
    };
    ConfigError::field(file, path.join("."), kind_message(&err.kind))
}

/// figment's message for an error, but an unknown field in serde's
/// wording (`unknown field `x`, expected one of `a`, `b``): figment's own
/// (`found `x`, expected `one of `a`, …``) nests its quotes.
fn kind_message(kind: &figment::error::Kind) -> String {
    match kind {
        figment::error::Kind::UnknownField(field, expected) if !expected.is_empty() => {
            let list: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
            format!("unknown field `{field}`, expected one of {}", list.join(", "))
        }
        figment::error::Kind::UnknownField(field, _) => {
            format!("unknown field `{field}`, there are no fields")
        }
        other => other.to_string(),
    }
}

/// The keys of the field an error is about. figment's path for an unknown
/// field already ends with the field's name (the key failed to deserialize
/// under its own name), so the name is added only when it is missing.
fn field_path(err: &figment::Error) -> Vec<String> {
    let mut path = err.path.clone();
    if let figment::error::Kind::UnknownField(field, _) = &err.kind {
        if path.last() != Some(field) {
            path.push(field.clone());
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(vars: &[(&str, &str)]) -> LoadOptions {
        let root = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        LoadOptions {
            env_vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..LoadOptions::files_only(root)
        }
    }

    fn error_of(opts: &LoadOptions) -> ConfigError {
        match load_settings(opts) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn an_unknown_field_set_by_a_variable_names_the_variable_and_the_field_once() {
        let err = error_of(&options(&[("MESHOPS__BATCH__BACKEND", "bogus")]));
        let ConfigError::Field { file, field, .. } = &err else { panic!("{err}") };
        assert_eq!(file, "environment variable MESHOPS__BATCH__BACKEND", "{err}");
        assert_eq!(field, "batch.backend", "{err}");
    }

    #[test]
    fn an_unknown_field_in_a_file_is_named_once() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("extra.toml");
        std::fs::write(&extra, "[gateway]\nmax_query_char = 5\n").unwrap();
        let err = error_of(&LoadOptions { config_file: Some(extra.clone()), ..options(&[]) });
        let ConfigError::Field { file, field, .. } = &err else { panic!("{err}") };
        assert_eq!(file, &extra.display().to_string(), "{err}");
        assert_eq!(field, "gateway.max_query_char", "{err}");
    }

    #[test]
    fn a_mistyped_variable_names_the_field_it_was_probably_meant_for() {
        let err = error_of(&options(&[("MESHOPS__GATEWAY__MAX_QUERY_CHAR", "5")]));
        let ConfigError::Field { file, field, message } = &err else { panic!("{err}") };
        assert_eq!(file, "environment variable MESHOPS__GATEWAY__MAX_QUERY_CHAR", "{err}");
        assert_eq!(field, "gateway.max_query_char", "{err}");
        assert!(message.ends_with("did you mean `max_query_chars`?"), "{err}");
    }

    #[test]
    fn a_bad_value_from_a_variable_names_the_variable() {
        let err = error_of(&options(&[("MESHOPS__GATEWAY__MAX_QUERY_CHARS", "lots")]));
        let ConfigError::Field { file, field, .. } = &err else { panic!("{err}") };
        assert_eq!(file, "environment variable MESHOPS__GATEWAY__MAX_QUERY_CHARS", "{err}");
        assert_eq!(field, "gateway.max_query_chars", "{err}");
    }
}
