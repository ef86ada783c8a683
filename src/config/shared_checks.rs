//! Checks of the shared-state settings (`config::shared`): a backend that
//! needs a URL has one, of the right scheme, directly or through a set
//! variable; the lease is long enough to be renewed.

use std::path::PathBuf;

use super::error::{ConfigError, locate_at};
use super::settings::Settings;
use super::shared::{LimitsBackend, StateBackend, resolve_url};

/// `[gateway.ab]`: every name a variant (or `base`), some weight, and no
/// variant called `base`.
pub(super) fn validate_ab(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let ab = &s.gateway.ab;
    if s.variants.contains_key(super::ab::BASE) {
        errors.push(ConfigError::field(
            locate_at(&["variants", super::ab::BASE], layers),
            "variants.base",
            "`base` names the mesh without a variant (in [gateway.ab] weights); rename this variant",
        ));
    }
    for name in ab.weights.keys() {
        if name != super::ab::BASE && !s.variants.contains_key(name) {
            let known: Vec<&str> =
                std::iter::once(super::ab::BASE).chain(s.variants.keys().map(String::as_str)).collect();
            errors.push(ConfigError::field(
                locate_at(&["gateway", "ab", "weights"], layers),
                format!("gateway.ab.weights.{name}"),
                format!("no variant `{name}`; known: {}", known.join(", ")),
            ));
        }
    }
    if !ab.weights.is_empty() && !ab.active() {
        errors.push(ConfigError::field(
            locate_at(&["gateway", "ab", "weights"], layers),
            "gateway.ab.weights",
            "every weight is 0: give some variant (or base) a weight, or remove [gateway.ab]",
        ));
    }
}

/// `[online_eval]`: a rate in [0, 1], judges that need no ground truth, a
/// judge model that exists, a queue.
pub(super) fn validate_online_eval(s: &Settings, layers: &[PathBuf], errors: &mut Vec<ConfigError>) {
    let o = &s.online_eval;
    let at = |key: &str| (locate_at(&["online_eval", key], layers), format!("online_eval.{key}"));
    if !(0.0..=1.0).contains(&o.sample_rate) {
        let (file, field) = at("sample_rate");
        errors.push(ConfigError::field(file, field, format!("{} is outside [0, 1]", o.sample_rate)));
    }
    const ONLINE: [&str; 4] = ["groundedness", "relevance", "coherence", "fluency"];
    for j in &o.judges {
        if !ONLINE.contains(&j.as_str()) {
            let (file, field) = at("judges");
            let why =
                if j == "similarity" { " (it needs a ground truth, which live traffic has not)" } else { "" };
            errors.push(ConfigError::field(
                file,
                field,
                format!("`{j}` cannot judge live answers{why}; known: {}", ONLINE.join(", ")),
            ));
        }
    }
    let model = o.judge_model.as_deref().unwrap_or(&s.eval.judge_model);
    if o.sample_rate > 0.0 && !s.models.contains_key(model) {
        let (file, field) = at("judge_model");
        let known: Vec<&str> = s.models.keys().map(String::as_str).collect();
        errors.push(ConfigError::field(
            file,
            field,
            format!("no model profile `{model}`; known: {}", known.join(", ")),
        ));
    }
    if o.queue == 0 || o.queue > 1_000_000 {
        let (file, field) = at("queue");
        errors.push(ConfigError::field(file, field, "must be between 1 and 1000000"));
    }
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
    let live = &s.live;
    if live.enabled && live.backend == StateBackend::Postgres {
        check_url(
            UrlCheck {
                section: "live",
                url_key: "url",
                env_key: "url_env",
                url: live.url.as_deref(),
                url_env: live.url_env.as_deref(),
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

    #[test]
    fn ab_weights_name_known_variants_and_base() {
        let mut s = Settings::default();
        s.variants.insert("concise".into(), Default::default());
        s.gateway.ab.weights = [("base".to_string(), 1), ("concise".into(), 1), ("nope".into(), 1)].into();
        let mut errors = Vec::new();
        validate_ab(&s, &[], &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let text = errors[0].to_string();
        assert!(text.contains("gateway.ab.weights.nope") && text.contains("known: base, concise"), "{text}");
        s.gateway.ab.weights = [("concise".to_string(), 0)].into();
        let mut errors = Vec::new();
        validate_ab(&s, &[], &mut errors);
        assert!(errors[0].to_string().contains("every weight is 0"), "{errors:?}");
    }
}
