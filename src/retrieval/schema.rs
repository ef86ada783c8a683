//! The collection schema that the embedded store ([`super::edge`]) and a
//! Qdrant server ([`super::qdrant`]) share, so moving between them is one
//! config line and a collection written by one reads the same in the other:
//!
//! - one unnamed dense vector, cosine distance, of the embedder's dimension;
//! - point ids from [`super::point_id`] (UUID v5 of the chunk);
//! - payload `doc_id`, `chunk_id`, `source`, `text` (strings), with a keyword
//!   index on `doc_id`, which stale-chunk pruning filters on.
//!
//! Each store converts these plain forms into its client's types; the
//! conversions are tested against the functions here.

use serde_json::{Map, Value};

use super::{Chunk, Hit, RetrievalError};

/// Payload field: the document id, filtered on by pruning (keyword index).
pub const DOC_ID: &str = "doc_id";
/// Payload field: `<doc_id>#<n>`.
pub const CHUNK_ID: &str = "chunk_id";
/// Payload field: the file the chunk came from.
pub const SOURCE: &str = "source";
/// Payload field: the chunk text.
pub const TEXT: &str = "text";
/// Payload fields that get a keyword index when a collection is created.
pub const KEYWORD_INDEXES: [&str; 1] = [DOC_ID];

/// The payload stored with a chunk's point.
pub fn payload(chunk: Chunk) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(DOC_ID.into(), Value::String(chunk.doc_id));
    map.insert(CHUNK_ID.into(), Value::String(chunk.chunk_id));
    map.insert(SOURCE.into(), Value::String(chunk.source));
    map.insert(TEXT.into(), Value::String(chunk.text));
    map
}

/// A search result back as a [`Hit`]. Fields missing from the payload (a
/// point written by another tool into a shared collection) become empty
/// strings rather than failing the whole search.
pub fn hit(payload: &Map<String, Value>, score: f32) -> Hit {
    let field = |name: &str| payload.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
    Hit { doc_id: field(DOC_ID), chunk_id: field(CHUNK_ID), source: field(SOURCE), text: field(TEXT), score }
}

/// The points a prune removes: those of `doc_id` whose ids are not in
/// `keep` (an empty `keep` removes the whole document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSelector {
    pub doc_id: String,
    pub keep: Vec<uuid::Uuid>,
}

/// Collection names are directory names in the embedded store and URL path
/// segments on a server: letters, digits, `-`, `_` and `.`, and not `.`/`..`.
pub fn check_collection_name(collection: &str) -> Result<(), RetrievalError> {
    let valid = !collection.is_empty()
        && collection != "."
        && collection != ".."
        && collection.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(RetrievalError::Store {
            collection: collection.to_string(),
            message: "invalid collection name: use letters, digits, '-', '_' and '.'".into(),
        })
    }
}

/// A vector may be stored or searched: the collection's length, all
/// components finite (cosine normalises vectors, so one NaN or infinity
/// would make every score with this point NaN).
pub fn check_vector(collection: &str, dimension: usize, v: &[f32]) -> Result<(), RetrievalError> {
    if v.len() != dimension {
        return Err(RetrievalError::Dimension {
            collection: collection.to_string(),
            store: dimension,
            embedder: v.len(),
        });
    }
    if !v.iter().all(|x| x.is_finite()) {
        return Err(RetrievalError::Store {
            collection: collection.to_string(),
            message: "vector has a non-finite component".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_chunk() -> Chunk {
        Chunk {
            doc_id: "guides/deploy".into(),
            chunk_id: "guides/deploy#3".into(),
            source: "corpus/guides/deploy.md".into(),
            text: "# Deploy\nBlue/green moves the Service.".into(),
        }
    }

    #[test]
    fn payload_round_trips_to_a_hit() {
        let chunk = sample_chunk();
        let p = payload(chunk.clone());
        assert_eq!(p.len(), 4);
        let h = hit(&p, 0.5);
        assert_eq!(
            (h.doc_id, h.chunk_id, h.source, h.text, h.score),
            (chunk.doc_id, chunk.chunk_id, chunk.source, chunk.text, 0.5)
        );
        let foreign = hit(&Map::from_iter([("text".to_string(), Value::from(3))]), 0.1);
        assert_eq!((foreign.doc_id.as_str(), foreign.text.as_str()), ("", ""));
    }

    #[test]
    fn names_and_vectors_are_checked() {
        for ok in ["meshops_docs", "a-b.c", "X1"] {
            assert!(check_collection_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "x y", "é"] {
            assert!(check_collection_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_vector("c", 3, &[0.0, 1.0, 0.5]).is_ok());
        let err = check_vector("c", 3, &[0.0; 2]).unwrap_err();
        assert!(matches!(err, RetrievalError::Dimension { store: 3, embedder: 2, .. }), "{err}");
        let err = check_vector("c", 2, &[f32::INFINITY, 0.0]).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
    }
}
