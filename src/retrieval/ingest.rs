//! `meshops ingest`: files → chunks → vectors → store, idempotently.
