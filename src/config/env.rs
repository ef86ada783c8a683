//! Settings from environment variables: `MESHOPS__<SECTION>__<KEY>=value`,
//! the last settings layer, and the variable that names the overlay.

use super::error::ConfigError;

/// Prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "MESHOPS__";
/// Environment variable naming the overlay (`config/<env>.toml`).
pub const ENV_NAME_VAR: &str = "MESHOPS_ENV";

/// The settings keys a `MESHOPS__A__B` variable names (`["a", "b"]`), or
/// `None` for a variable without the prefix.
fn keys_of(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    Some(rest.split("__").map(str::to_lowercase).collect())
}

/// Whether some `MESHOPS__…` variable sets `path` or a prefix of it.
pub(super) fn env_sets(vars: &[(String, String)], path: &[String]) -> bool {
    vars.iter().any(|(k, _)| {
        let Some(keys) = keys_of(k) else { return false };
        keys.iter().zip(path).all(|(a, b)| a == b)
    })
}

/// Builds a TOML table from `MESHOPS__A__B=value` variables. Values parse
/// as TOML when they can (`5`, `true`, `["a"]`) and are strings otherwise.
pub(super) fn env_overrides(vars: &[(String, String)]) -> Result<toml::Table, ConfigError> {
    let mut root = toml::Table::new();
    for (name, raw) in vars {
        let Some(keys) = keys_of(name) else { continue };
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
