//! Embedders. [`OfflineEmbedder`] is deterministic and needs no model.
