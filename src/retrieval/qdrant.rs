//! The Qdrant server store (`retrieval.backend = "qdrant"`), on
//! `qdrant-client` over gRPC.
//!
//! Same collection and payload schema as the embedded store
//! ([`super::schema`]): a collection ingested here answers the same
//! searches as one in qdrant-edge. [`QdrantStore::connect`] creates the
//! collection (cosine, the embedder's dimension, a keyword index on
//! `doc_id`) when it is missing and refuses one whose vector size or
//! distance differs. Writes wait for the server to apply them, so a search
//! right after an ingest sees it.

use std::time::Duration;

use futures::future::BoxFuture;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, GetCollectionInfoResponse, PointStruct,
    QueryPointsBuilder, ScoredPoint, UpsertPointsBuilder, VectorParamsBuilder, r#match::MatchValue,
    vectors_config,
};
use qdrant_client::{Payload, Qdrant, QdrantError};

use super::schema::{self, StaleSelector};
use super::{Chunk, Hit, RetrievalError, VectorStore, point_id};

/// Per-request timeout towards the server.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A collection on a Qdrant server.
pub struct QdrantStore {
    client: Qdrant,
    url: String,
    collection: String,
    dimension: usize,
}

impl std::fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantStore")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .field("dimension", &self.dimension)
            .finish()
    }
}

impl QdrantStore {
    /// Connects to the server at `url` (gRPC, `http://HOST:6334`) with an
    /// optional API key, and opens `collection`, creating it for vectors of
    /// `dimension` when missing. An existing collection with another vector
    /// size is a [`RetrievalError::Dimension`].
    pub async fn connect(
        url: &str,
        api_key: Option<String>,
        collection: &str,
        dimension: usize,
    ) -> Result<QdrantStore, RetrievalError> {
        schema::check_collection_name(collection)?;
        let err = |message: String| RetrievalError::Store { collection: collection.to_string(), message };
        if dimension == 0 {
            return Err(err("vector dimension must be at least 1".into()));
        }
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .skip_compatibility_check()
            .build()
            .map_err(|e| store_error(collection, &format!("cannot set up a client for {url}"), e))?;
        let store =
            QdrantStore { client, url: url.to_string(), collection: collection.to_string(), dimension };
        let exists =
            store.client.collection_exists(collection).await.map_err(|e| {
                store_error(collection, &format!("cannot reach the Qdrant server at {url}"), e)
            })?;
        if exists {
            let info = store
                .client
                .collection_info(collection)
                .await
                .map_err(|e| store_error(collection, "collection info", e))?;
            check_existing(collection, dimension, &info)?;
        } else {
            store.create().await?;
        }
        Ok(store)
    }

    async fn create(&self) -> Result<(), RetrievalError> {
        let c = &self.collection;
        self.client
            .create_collection(
                CreateCollectionBuilder::new(c.clone())
                    .vectors_config(VectorParamsBuilder::new(self.dimension as u64, Distance::Cosine)),
            )
            .await
            .map_err(|e| store_error(c, "create collection", e))?;
        for field in schema::KEYWORD_INDEXES {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(c.clone(), field, FieldType::Keyword).wait(true),
                )
                .await
                .map_err(|e| store_error(c, &format!("index {field}"), e))?;
        }
        tracing::info!(url = %self.url, collection = %c, dimension = self.dimension, "created Qdrant collection");
        Ok(())
    }

    /// Deletes the collection (for tests and tools that start afresh).
    pub async fn delete_collection(&self) -> Result<(), RetrievalError> {
        self.client
            .delete_collection(self.collection.clone())
            .await
            .map(|_| ())
            .map_err(|e| store_error(&self.collection, "delete collection", e))
    }

    /// The vector length this collection stores.
    pub fn dimension(&self) -> usize {
        self.dimension
    }
}

/// Refuses an existing collection that does not have the schema's vector:
/// one unnamed cosine vector of `dimension`.
fn check_existing(
    collection: &str,
    dimension: usize,
    info: &GetCollectionInfoResponse,
) -> Result<(), RetrievalError> {
    let err = |message: String| RetrievalError::Store { collection: collection.to_string(), message };
    let config = info
        .result
        .as_ref()
        .and_then(|r| r.config.as_ref())
        .and_then(|c| c.params.as_ref())
        .and_then(|p| p.vectors_config.as_ref())
        .and_then(|v| v.config.as_ref());
    let params = match config {
        Some(vectors_config::Config::Params(p)) => p,
        Some(vectors_config::Config::ParamsMap(map)) => match map.map.get("") {
            Some(p) => p,
            None => {
                let mut names: Vec<&str> = map.map.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(err(format!(
                    "the collection has only named vectors ({}); meshops stores one unnamed vector",
                    names.join(", ")
                )));
            }
        },
        None => return Err(err("the server reported no vector configuration".into())),
    };
    let size = usize::try_from(params.size).unwrap_or(usize::MAX);
    if size != dimension {
        return Err(RetrievalError::Dimension {
            collection: collection.to_string(),
            store: size,
            embedder: dimension,
        });
    }
    if params.distance != Distance::Cosine as i32 {
        let name = Distance::try_from(params.distance).map(|d| d.as_str_name()).unwrap_or("unknown");
        return Err(err(format!("the collection uses {name} distance, meshops needs Cosine")));
    }
    Ok(())
}

/// A client error as a [`RetrievalError`], saying what failed and, for
/// gRPC statuses, the code and the server's message.
fn store_error(collection: &str, what: &str, e: QdrantError) -> RetrievalError {
    let message = match e {
        QdrantError::ResponseError { status } => {
            // The client reports a refused connection as INTERNAL with a
            // transport message, not UNAVAILABLE.
            let unreachable =
                status.code() == tonic::Code::Unavailable || status.message().contains("Failed to connect");
            let hint = match status.code() {
                _ if unreachable => " (is the server running, and is the URL its gRPC port, 6334?)",
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    " (check the API key named by retrieval.api_key_env)"
                }
                _ => "",
            };
            format!("{what}: {:?}: {}{hint}", status.code(), status.message())
        }
        QdrantError::ResourceExhaustedError { status, retry_after_seconds } => {
            format!("{what}: rate limited ({}); retry after {retry_after_seconds} s", status.message())
        }
        other => format!("{what}: {other}"),
    };
    RetrievalError::Store { collection: collection.to_string(), message }
}

/// A chunk and its vector as a server point: the schema's id and payload.
fn point_of(chunk: Chunk, vector: Vec<f32>) -> PointStruct {
    let id = point_id(&chunk).to_string();
    PointStruct::new(id, vector, Payload::from(schema::payload(chunk)))
}

/// A scored point back as a [`Hit`] (see [`schema::hit`]).
fn hit_of(point: ScoredPoint) -> Hit {
    let payload = serde_json::Map::from(Payload::from(point.payload));
    schema::hit(&payload, point.score)
}

/// The schema's stale-point selector as a server filter. The doc id is
/// matched as a keyword explicitly: the client's `From<String>` would make
/// an id with a space a full-text match.
fn stale_filter(selector: StaleSelector) -> Filter {
    let mut filter = Filter::must([Condition::matches(schema::DOC_ID, MatchValue::Keyword(selector.doc_id))]);
    if !selector.keep.is_empty() {
        filter.must_not = vec![Condition::has_id(selector.keep.iter().map(|id| id.to_string()))];
    }
    filter
}

impl VectorStore for QdrantStore {
    fn backend(&self) -> &str {
        "qdrant"
    }

    fn collection(&self) -> &str {
        &self.collection
    }

    fn upsert(&self, points: Vec<(Chunk, Vec<f32>)>) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        Box::pin(async move {
            for (_, v) in &points {
                schema::check_vector(&self.collection, self.dimension, v)?;
            }
            let n = points.len();
            if n == 0 {
                return Ok(0);
            }
            let structs: Vec<PointStruct> = points.into_iter().map(|(c, v)| point_of(c, v)).collect();
            self.client
                .upsert_points(UpsertPointsBuilder::new(self.collection.clone(), structs).wait(true))
                .await
                .map_err(|e| store_error(&self.collection, "upsert", e))?;
            Ok(n)
        })
    }

    fn prune_doc(
        &self,
        doc_id: String,
        keep: Vec<uuid::Uuid>,
    ) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        Box::pin(async move {
            let filter = stale_filter(StaleSelector { doc_id, keep });
            // The delete does not report how many points it removed: count
            // first. Another writer could change the count in between; the
            // number is for the report only.
            let stale = self
                .client
                .count(CountPointsBuilder::new(self.collection.clone()).filter(filter.clone()).exact(true))
                .await
                .map_err(|e| store_error(&self.collection, "count stale points", e))?
                .result
                .map_or(0, |r| r.count);
            if stale > 0 {
                self.client
                    .delete_points(
                        DeletePointsBuilder::new(self.collection.clone()).points(filter).wait(true),
                    )
                    .await
                    .map_err(|e| store_error(&self.collection, "prune", e))?;
            }
            Ok(usize::try_from(stale).unwrap_or(usize::MAX))
        })
    }

    fn search(
        &self,
        vector: Vec<f32>,
        top_k: usize,
        score_threshold: Option<f32>,
    ) -> BoxFuture<'_, Result<Vec<Hit>, RetrievalError>> {
        Box::pin(async move {
            schema::check_vector(&self.collection, self.dimension, &vector)?;
            if top_k == 0 {
                return Ok(Vec::new());
            }
            let mut query = QueryPointsBuilder::new(self.collection.clone())
                .query(vector)
                .limit(top_k as u64)
                .with_payload(true);
            if let Some(t) = score_threshold {
                query = query.score_threshold(t);
            }
            let response =
                self.client.query(query).await.map_err(|e| store_error(&self.collection, "search", e))?;
            Ok(response.result.into_iter().map(hit_of).collect())
        })
    }

    fn count(&self) -> BoxFuture<'_, Result<usize, RetrievalError>> {
        Box::pin(async move {
            let response = self
                .client
                .count(CountPointsBuilder::new(self.collection.clone()).exact(true))
                .await
                .map_err(|e| store_error(&self.collection, "count", e))?;
            Ok(response.result.map_or(0, |r| usize::try_from(r.count).unwrap_or(usize::MAX)))
        })
    }
}

#[cfg(test)]
mod tests {
    use qdrant_client::qdrant::{
        CollectionConfig, CollectionInfo, CollectionParams, PointId, VectorParams, VectorParamsMap,
        VectorsConfig, condition::ConditionOneOf, point_id::PointIdOptions,
    };

    use std::collections::HashMap;

    use super::*;
    use crate::retrieval::schema::tests::sample_chunk;

    /// Payload values as JSON, to compare with the schema.
    fn payload_json(
        payload: HashMap<String, qdrant_client::qdrant::Value>,
    ) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::from(Payload::from(payload))
    }

    #[test]
    fn points_carry_the_schema_id_and_payload() {
        let chunk = sample_chunk();
        let p = point_of(chunk.clone(), vec![0.25, 0.5]);
        let id = p.id.and_then(|id| id.point_id_options);
        assert_eq!(id, Some(PointIdOptions::Uuid(point_id(&chunk).to_string())));
        // The same JSON the embedded store writes.
        assert_eq!(payload_json(p.payload), schema::payload(chunk));
        let vectors = format!("{:?}", p.vectors);
        assert!(vectors.contains("0.25") && vectors.contains("0.5"), "{vectors}");
    }

    #[test]
    fn scored_points_become_hits() {
        let chunk = sample_chunk();
        let payload: HashMap<String, qdrant_client::qdrant::Value> =
            Payload::from(schema::payload(chunk.clone())).into();
        let h = hit_of(ScoredPoint { payload, score: 0.75, ..Default::default() });
        assert_eq!(h, schema::hit(&schema::payload(chunk), 0.75));
        let empty = hit_of(ScoredPoint { score: 0.1, ..Default::default() });
        assert_eq!((empty.doc_id.as_str(), empty.score), ("", 0.1));
    }

    #[test]
    fn stale_filter_matches_the_doc_as_a_keyword_and_keeps_ids() {
        let keep = vec![uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2)];
        // A doc id with a space: still a keyword match, not full text.
        let f = stale_filter(StaleSelector { doc_id: "notes/my file".into(), keep: keep.clone() });
        assert_eq!(f.must.len(), 1);
        let Some(ConditionOneOf::Field(field)) = f.must[0].condition_one_of.clone() else {
            panic!("expected a field condition: {f:?}")
        };
        assert_eq!(field.key, schema::DOC_ID);
        let value = field.r#match.and_then(|m| m.match_value);
        assert_eq!(value, Some(MatchValue::Keyword("notes/my file".into())));
        assert_eq!(f.must_not.len(), 1);
        let Some(ConditionOneOf::HasId(has)) = f.must_not[0].condition_one_of.clone() else {
            panic!("expected a has_id condition: {f:?}")
        };
        let ids: Vec<PointId> = keep.iter().map(|u| PointId::from(u.to_string())).collect();
        assert_eq!(has.has_id, ids);
        let whole = stale_filter(StaleSelector { doc_id: "a".into(), keep: Vec::new() });
        assert!(whole.must_not.is_empty(), "empty keep removes the whole document");
    }

    fn info(config: vectors_config::Config) -> GetCollectionInfoResponse {
        GetCollectionInfoResponse {
            result: Some(CollectionInfo {
                config: Some(CollectionConfig {
                    params: Some(CollectionParams {
                        vectors_config: Some(VectorsConfig { config: Some(config) }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            time: 0.0,
        }
    }

    fn params(size: u64, distance: Distance) -> VectorParams {
        VectorParams { size, distance: distance as i32, ..Default::default() }
    }

    #[test]
    fn existing_collections_must_match_dimension_and_distance() {
        assert!(
            check_existing("c", 384, &info(vectors_config::Config::Params(params(384, Distance::Cosine))))
                .is_ok()
        );
        let err =
            check_existing("c", 384, &info(vectors_config::Config::Params(params(1536, Distance::Cosine))))
                .unwrap_err();
        assert!(matches!(err, RetrievalError::Dimension { store: 1536, embedder: 384, .. }), "{err}");
        assert!(err.to_string().contains("store has 1536, embedder gives 384"), "{err}");
        let err = check_existing("c", 384, &info(vectors_config::Config::Params(params(384, Distance::Dot))))
            .unwrap_err();
        assert!(err.to_string().contains("Dot distance"), "{err}");
        let unnamed =
            VectorParamsMap { map: HashMap::from([(String::new(), params(384, Distance::Cosine))]) };
        assert!(check_existing("c", 384, &info(vectors_config::Config::ParamsMap(unnamed))).is_ok());
        let named = VectorParamsMap { map: HashMap::from([("dense".into(), params(384, Distance::Cosine))]) };
        let err = check_existing("c", 384, &info(vectors_config::Config::ParamsMap(named))).unwrap_err();
        assert!(err.to_string().contains("only named vectors (dense)"), "{err}");
        let err = check_existing("c", 384, &GetCollectionInfoResponse::default()).unwrap_err();
        assert!(err.to_string().contains("no vector configuration"), "{err}");
    }

    #[test]
    fn client_errors_name_the_operation_and_hint_at_the_fix() {
        let e = store_error(
            "docs",
            "cannot reach the Qdrant server at http://q:6333",
            QdrantError::ResponseError { status: tonic::Status::unavailable("connection refused") },
        );
        let text = e.to_string();
        assert!(text.starts_with("vector store docs: cannot reach the Qdrant server"), "{text}");
        assert!(
            text.contains("Unavailable") && text.contains("connection refused") && text.contains("6334"),
            "{text}"
        );
        let e = store_error(
            "docs",
            "cannot reach",
            QdrantError::ResponseError {
                status: tonic::Status::internal("Failed to connect to http://127.0.0.1:6334/: refused"),
            },
        );
        assert!(e.to_string().contains("gRPC port, 6334"), "{e}");
        let e = store_error(
            "docs",
            "upsert",
            QdrantError::ResponseError { status: tonic::Status::unauthenticated("bad key") },
        );
        assert!(e.to_string().contains("retrieval.api_key_env"), "{e}");
        let e = store_error(
            "docs",
            "search",
            QdrantError::ResourceExhaustedError {
                status: tonic::Status::resource_exhausted("slow down"),
                retry_after_seconds: 3,
            },
        );
        assert!(e.to_string().contains("retry after 3 s"), "{e}");
        let e = store_error("docs", "search", QdrantError::ConversionError("sparse".into()));
        assert!(e.to_string().contains("search: ") && e.to_string().contains("sparse"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        // A port nothing listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let err = QdrantStore::connect(&url, None, "docs", 8).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("cannot reach the Qdrant server at {url}")), "{text}");
        let err = QdrantStore::connect(&url, None, "a/b", 8).await.unwrap_err();
        assert!(err.to_string().contains("invalid collection name"), "{err}");
    }
}
