//! `[retrieval.index]`: how the embedded store (qdrant-edge) indexes a
//! collection. The names are Qdrant's (`m`, `ef_construct`, `hnsw_ef`,
//! `on_disk`, `indexing_threshold_kb`), so an operator who knows a Qdrant
//! server's collection settings knows these.
//!
//! A collection smaller than `indexing_threshold_kb` of vectors is searched
//! by an exact scan, which is faster there; past it the store builds an
//! HNSW graph after ingest and, in the background, after writes settle.
//! A Qdrant server (`backend = "qdrant"`) indexes by its own collection
//! settings; these apply to the embedded store only.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// Vector quantization of an indexed collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    /// Full f32 vectors only.
    None,
    /// Scalar int8 copies kept in RAM for the graph walk (4× smaller);
    /// the best candidates are rescored with the f32 vectors.
    Int8,
}

/// `[retrieval.index]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSettings {
    /// Edges per node of the HNSW graph: more is more accurate and larger.
    pub m: usize,
    /// Candidates considered while building the graph: more is more
    /// accurate and slower to build.
    pub ef_construct: usize,
    /// Candidates considered per search (the beam): more is more accurate
    /// and slower. At least the number of hits asked. 256 by default: at a
    /// million 384-d vectors, 128 found 94.8 % of the true top 4 and 256
    /// found 98.6 %, at 2.5 and 4.3 ms (`meshops bench retrieval`).
    pub hnsw_ef: usize,
    /// Keep the graph (and the vectors) on disk, memory-mapped, instead of
    /// in RAM.
    pub on_disk: bool,
    pub quantization: Quantization,
    /// Vectors (in KiB, 1 KiB ≈ one 256-d vector) a segment holds before
    /// it is indexed; below it searches scan exactly.
    pub indexing_threshold_kb: usize,
    /// Seconds without writes before the background indexer runs after
    /// upserts (ingest indexes at its end without waiting).
    pub settle_secs: f64,
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construct: 100,
            hnsw_ef: 256,
            on_disk: false,
            quantization: Quantization::None,
            indexing_threshold_kb: 10_000,
            settle_secs: 2.0,
        }
    }
}

impl IndexSettings {
    /// Field errors of these settings, each naming `file` and the field.
    pub(super) fn check(&self, file: &str, errors: &mut Vec<ConfigError>) {
        let mut bad = |field: &str, message: &str| {
            errors.push(ConfigError::field(file, format!("retrieval.index.{field}"), message));
        };
        if !(4..=128).contains(&self.m) {
            bad("m", "must be between 4 and 128 (16 is Qdrant's default)");
        }
        if !(4..=4096).contains(&self.ef_construct) {
            bad("ef_construct", "must be between 4 and 4096 (100 is Qdrant's default)");
        }
        if !(1..=65_536).contains(&self.hnsw_ef) {
            bad("hnsw_ef", "must be between 1 and 65536");
        }
        if self.indexing_threshold_kb == 0 {
            bad("indexing_threshold_kb", "must be at least 1 (10000 is Qdrant's default)");
        }
        if !self.settle_secs.is_finite() || !(0.0..=3600.0).contains(&self.settle_secs) {
            bad("settle_secs", "must be between 0 and 3600 seconds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bad_field_is_named() {
        let mut errors = Vec::new();
        IndexSettings::default().check("config/meshops.toml", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let bad = IndexSettings {
            m: 2,
            ef_construct: 0,
            hnsw_ef: 0,
            on_disk: false,
            quantization: Quantization::Int8,
            indexing_threshold_kb: 0,
            settle_secs: f64::NAN,
        };
        bad.check("config/meshops.toml", &mut errors);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for field in ["m", "ef_construct", "hnsw_ef", "indexing_threshold_kb", "settle_secs"] {
            let name = format!("retrieval.index.{field}");
            assert!(
                text.iter().any(|e| e.contains(&name) && e.contains("config/meshops.toml")),
                "{name}: {text:?}"
            );
        }
        assert_eq!(errors.len(), 5);
    }

    #[test]
    fn quantization_reads_from_toml() {
        let s: IndexSettings = toml::from_str("quantization = \"int8\"\nhnsw_ef = 64").unwrap();
        assert_eq!(s.quantization, Quantization::Int8);
        assert_eq!(s.hnsw_ef, 64);
        assert_eq!(s.m, 16);
        assert!(toml::from_str::<IndexSettings>("quantization = \"int4\"").is_err());
    }
}
