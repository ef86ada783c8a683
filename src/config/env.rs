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

/// The variable that sets `path` (the settings keys of a field), or a
/// prefix or extension of it, so an error can name the variable the user
/// wrote. A variable that names `path` exactly wins.
pub(super) fn variable_setting<'v>(vars: &'v [(String, String)], path: &[String]) -> Option<&'v str> {
    let mut related = vars.iter().filter_map(|(name, _)| {
        let keys = keys_of(name)?;
        keys.iter().zip(path).all(|(a, b)| a == b).then_some((name.as_str(), keys == path))
    });
    let first = related.next()?;
    if first.1 {
        return Some(first.0);
    }
    Some(related.find(|(_, exact)| *exact).map_or(first.0, |(name, _)| name))
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

    fn vars(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "x".to_string())).collect()
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

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

    #[test]
    fn the_variable_setting_a_field_is_the_one_written() {
        let v = vars(&["MESHOPS__GATEWAY__LISTEN", "MESHOPS__BATCH__BACKEND", "OTHER"]);
        assert_eq!(variable_setting(&v, &path("batch.backend")), Some("MESHOPS__BATCH__BACKEND"));
        assert_eq!(variable_setting(&v, &path("gateway.listen")), Some("MESHOPS__GATEWAY__LISTEN"));
        assert_eq!(variable_setting(&v, &path("gateway.max_query_chars")), None);
        // A whole section set by one variable, and an exact name preferred
        // over a prefix.
        let v = vars(&["MESHOPS__GATEWAY", "MESHOPS__GATEWAY__LISTEN"]);
        assert_eq!(variable_setting(&v, &path("gateway.listen")), Some("MESHOPS__GATEWAY__LISTEN"));
        assert_eq!(variable_setting(&v, &path("gateway.tls")), Some("MESHOPS__GATEWAY"));
        // Names keep the case they were written in.
        let v = vars(&["MESHOPS__batch__Backend"]);
        assert_eq!(variable_setting(&v, &path("batch.backend")), Some("MESHOPS__batch__Backend"));
    }
}
