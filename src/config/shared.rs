//! Where state shared by replicas lives: the backend of batch jobs and of
//! conversations (`sqlite`, one process, the default; or `postgres`, shared
//! by every replica), and of the per-key limits (`local` or `redis`). The
//! URLs are given in the file (`url`, `redis_url`) or, for a secret, by the
//! name of the environment variable holding them (`url_env`,
//! `redis_url_env`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, locate_at};
use super::settings::Settings;

/// Where batch jobs or conversations are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    /// A SQLite file under the data dir: one gateway process (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every replica.
    Postgres,
}

/// Where the per-key request and token budgets are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsBackend {
    /// In this process: with N replicas a key gets N times its budget.
    #[default]
    Local,
    /// In Redis, shared by every replica.
    Redis,
}

/// What the gateway does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsFallback {
    /// Refuse keyed requests with UNAVAILABLE (the default): no budget is
    /// exceeded while the shared count is unknown.
    #[default]
    FailClosed,
    /// Count in this process meanwhile, and say so in a log line and the
    /// `meshops.gateway.limits.fallback` metric.
    Local,
}

/// A URL given directly or by the name of the variable holding it.
pub fn resolve_url(url: Option<&str>, url_env: Option<&str>) -> Option<String> {
    if let Some(u) = url.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(u.to_string());
    }
    let var = url_env?;
    std::env::var(var).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// One section's shared-store URL: present and of the right scheme when
/// the backend needs it.
struct UrlCheck<'a> {
    section: &'a str,
    url_key: &'a str,
    env_key: &'a str,
    url: Option<&'a str>,
    url_env: Option<&'a str>,
    schemes: &'a [&'a str],
    example: &'a str,
}

fn check_url(c: UrlCheck<'_>, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let url_field = format!("{}.{}", c.section, c.url_key);
    let env_field = format!("{}.{}", c.section, c.env_key);
    match (c.url.map(str::trim).filter(|u| !u.is_empty()), c.url_env) {
        (Some(url), _) => {
            if !c.schemes.iter().any(|s| url.starts_with(&format!("{s}://"))) {
                errors.push(ConfigError::field(
                    locate_at(&[c.section, c.url_key], layers),
                    url_field,
                    format!("is not a {} URL; expected e.g. {}", c.schemes.join(" or "), c.example),
                ));
            }
        }
        (None, Some(var)) => match resolve_url(None, Some(var)) {
            None => errors.push(ConfigError::environment(
                locate_at(&[c.section, c.env_key], layers),
                env_field,
                var,
                format!(
                    "names environment variable `{var}`, which is unset or empty; set it to {}",
                    c.example
                ),
            )),
            Some(url) if !c.schemes.iter().any(|s| url.starts_with(&format!("{s}://"))) => {
                errors.push(ConfigError::field(
                    locate_at(&[c.section, c.env_key], layers),
                    env_field,
                    format!(
                        "`{var}` does not hold a {} URL; expected e.g. {}",
                        c.schemes.join(" or "),
                        c.example
                    ),
                ))
            }
            Some(_) => {}
        },
        (None, None) => errors.push(ConfigError::field(
            locate_at(&[c.section], layers),
            url_field,
            format!(
                "required by this backend: set `{}` (e.g. {}) or `{}` (the environment variable holding it)",
                c.url_key, c.example, c.env_key
            ),
        )),
    }
}

const POSTGRES_EXAMPLE: &str = "postgresql://meshops:PASSWORD@HOST:5432/meshops";
const POSTGRES_SCHEMES: &[&str] = &["postgresql", "postgres"];

/// The shared-state settings: URLs where a backend needs them, and the
/// lease, retention and quota values in range.
pub(super) fn validate_shared(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let b = &s.batch;
    if b.backend == StateBackend::Postgres {
        check_url(
            UrlCheck {
                section: "batch",
                url_key: "url",
                env_key: "url_env",
                url: b.url.as_deref(),
                url_env: b.url_env.as_deref(),
                schemes: POSTGRES_SCHEMES,
                example: POSTGRES_EXAMPLE,
            },
            layers,
            errors,
        );
    }
    if b.lease_ms < 1000 {
        errors.push(ConfigError::field(
            locate_at(&["batch", "lease_ms"], layers),
            "batch.lease_ms",
            format!(
                "{} ms is too short: a lease is renewed every third of it, so at least 1000 ms",
                b.lease_ms
            ),
        ));
    }
    let sessions = &s.sessions;
    if sessions.backend == StateBackend::Postgres {
        check_url(
            UrlCheck {
                section: "sessions",
                url_key: "url",
                env_key: "url_env",
                url: sessions.url.as_deref(),
                url_env: sessions.url_env.as_deref(),
                schemes: POSTGRES_SCHEMES,
                example: POSTGRES_EXAMPLE,
            },
            layers,
            errors,
        );
    }
    let g = &s.gateway;
    if g.limits_backend == LimitsBackend::Redis {
        check_url(
            UrlCheck {
                section: "gateway",
                url_key: "redis_url",
                env_key: "redis_url_env",
                url: g.redis_url.as_deref(),
                url_env: g.redis_url_env.as_deref(),
                schemes: &["redis", "rediss"],
                example: "redis://HOST:6379 or rediss://:KEY@HOST:6380",
            },
            layers,
            errors,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_in_the_file_wins_over_its_variable() {
        assert_eq!(
            resolve_url(Some(" postgresql://a/b "), Some("PATH")).as_deref(),
            Some("postgresql://a/b")
        );
        assert_eq!(resolve_url(None, Some("MESHOPS_TEST_SURELY_UNSET_VAR")), None);
        assert_eq!(resolve_url(Some(""), None), None);
    }

    #[test]
    fn postgres_without_a_url_names_the_field() {
        let mut s = Settings::default();
        s.batch.backend = StateBackend::Postgres;
        s.gateway.limits_backend = LimitsBackend::Redis;
        s.gateway.redis_url = Some("http://x".into());
        let mut errors = Vec::new();
        validate_shared(&s, &[], &mut errors);
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{text:?}");
        assert!(text[0].contains("batch.url") && text[0].contains("url_env"), "{text:?}");
        assert!(text[1].contains("gateway.redis_url") && text[1].contains("redis"), "{text:?}");
    }
}
