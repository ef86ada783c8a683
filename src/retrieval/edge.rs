//! The embedded vector store: qdrant-edge, persisted under `data_dir`.
