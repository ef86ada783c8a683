//! A/B inside the gateway (`[gateway.ab]`) and live records (`[live]`).
//!
//! A request that names no `variant` is assigned one by weight: a stable
//! hash of its `session_id` (so a conversation stays on one variant), else
//! of its API key's identity, else a random draw. `base` is the mesh
//! without a variant.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The weights' name for the mesh without a variant.
pub const BASE: &str = "base";

/// `[gateway.ab]`: variant name (or `base`) → weight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbSettings {
    pub weights: BTreeMap<String, u32>,
}

impl AbSettings {
    /// Whether requests are assigned variants at all.
    pub fn active(&self) -> bool {
        self.weights.values().any(|w| *w > 0)
    }

    /// The variant for a request keyed by `key` (`None`: the base mesh, or
    /// no weights). The same key always gets the same answer for the same
    /// weights; keys spread over the variants in proportion to them.
    pub fn pick(&self, key: &[u8]) -> Option<&str> {
        let total: u64 = self.weights.values().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let digest = Sha256::digest(key);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let mut point = u64::from_be_bytes(first) % total;
        for (name, weight) in &self.weights {
            let weight = u64::from(*weight);
            if point < weight {
                return (name != BASE).then_some(name.as_str());
            }
            point -= weight;
        }
        None
    }
}

/// `[live]`: what the gateway keeps of each answered request, for feedback
/// and for `meshops live export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSettings {
    /// Keep records at all.
    pub enabled: bool,
    /// Also keep the query, the answer and its citations (off: ids,
    /// variant, timings, tokens, cost, scores and feedback only).
    pub capture_content: bool,
    /// Records older than this many days are deleted (0: kept forever).
    pub retention_days: u32,
    /// The SQLite file; unset: `live.sqlite3` under `retrieval.data_dir`.
    pub db_path: Option<PathBuf>,
    /// `sqlite` (the file above, per process) or `postgres` (shared by
    /// every replica; `url` or `url_env`).
    pub backend: super::shared::StateBackend,
    /// The PostgreSQL URL, for `backend = "postgres"`.
    pub url: Option<String>,
    /// The environment variable holding that URL (for a Secret).
    pub url_env: Option<String>,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            capture_content: false,
            retention_days: 30,
            db_path: None,
            backend: super::shared::StateBackend::Sqlite,
            url: None,
            url_env: None,
        }
    }
}

/// `[online_eval]`: judging a sample of live answers off the request path,
/// with the same judges and prompts as `meshops eval run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineEvalSettings {
    /// Share of answered requests judged, in [0, 1] (0: off). Chosen by a
    /// hash of the trace id, so a sample is reproducible.
    pub sample_rate: f64,
    /// Built-in judges that need no ground truth: `groundedness`,
    /// `relevance`, `coherence`, `fluency`.
    pub judges: Vec<String>,
    /// `llm_rubric` evaluators: name → rubric text.
    pub rubrics: BTreeMap<String, String>,
    /// The judges' model profile; unset: `[eval] judge_model`.
    pub judge_model: Option<String>,
    /// Samples waiting to be judged; beyond it they are dropped and
    /// counted, never slowing answers.
    pub queue: usize,
    /// Judging stops for the rest of the hour once it has cost this much
    /// (USD; unset: no cap; a judge of unknown price counts 0).
    pub max_cost_per_hour_usd: Option<f64>,
}

impl Default for OnlineEvalSettings {
    fn default() -> Self {
        Self {
            sample_rate: 0.0,
            judges: vec!["groundedness".into(), "relevance".into(), "coherence".into()],
            rubrics: BTreeMap::new(),
            judge_model: None,
            queue: 256,
            max_cost_per_hour_usd: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_variant_and_keys_split_by_weight() {
        let ab = AbSettings { weights: BTreeMap::from([("base".into(), 30), ("concise".into(), 70)]) };
        let first = ab.pick(b"session-1");
        assert!((0..10).all(|_| ab.pick(b"session-1") == first));
        let concise = (0..2000).filter(|i| ab.pick(format!("s-{i}").as_bytes()) == Some("concise")).count();
        // 70 % of 2000 = 1400; a fair hash stays well within ±100.
        assert!((1300..=1500).contains(&concise), "{concise}");
        let none = AbSettings::default();
        assert!(!none.active() && none.pick(b"x").is_none());
        let zero = AbSettings { weights: BTreeMap::from([("concise".into(), 0)]) };
        assert!(!zero.active() && zero.pick(b"x").is_none());
    }
}
