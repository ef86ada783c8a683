//! Where state shared by replicas lives: the backend of batch jobs and of
//! conversations (`sqlite`, one process, the default; or `postgres`, shared
//! by every replica), and of the per-key limits (`local` or `redis`). The
//! URLs are given in the file (`url`, `redis_url`) or, for a secret, by the
//! name of the environment variable holding them (`url_env`,
//! `redis_url_env`). Their checks are in `shared_checks`.

use serde::{Deserialize, Serialize};

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
}
