//! The Qdrant server backend against a live server, when
//! `MESHOPS_QDRANT_URL` names one (its gRPC URL, `http://HOST:6334`;
//! `MESHOPS_QDRANT_API_KEY_ENV` names the key's variable if it needs one).
//! No Qdrant server can be installed on the build machines, so unset, the
//! test says it skipped (a SKIP line on stderr, CI included:
//! `common::require::opt_in_env`); the conversions are unit-tested in
//! `src/retrieval/qdrant.rs` against the shared schema.

mod common;

use meshops::config::StoreBackend;
use meshops::gateway::Overrides;
use meshops::proto::AskRequest;
use meshops::retrieval::RetrievalError;
use meshops::retrieval::qdrant::QdrantStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_ask_against_a_qdrant_server_when_configured() {
    let Some(url) = common::require::opt_in_env(
        "MESHOPS_QDRANT_URL",
        "(e.g. http://127.0.0.1:6334) to run against a Qdrant server",
    ) else {
        return;
    };
    let key_env = std::env::var("MESHOPS_QDRANT_API_KEY_ENV").ok();
    let api_key = key_env.as_ref().and_then(|v| std::env::var(v).ok());
    let collection = format!("meshops_test_{}", uuid::Uuid::new_v4().simple());
    let (c, u, k) = (collection.clone(), url.clone(), key_env.clone());
    // Starting the gateway creates the collection and ingests the corpus.
    let mut t = common::start(
        move |spec| {
            let r = &mut spec.settings.retrieval;
            r.backend = StoreBackend::Qdrant;
            r.url = Some(u);
            r.api_key_env = k;
            r.collection = c;
        },
        Overrides::default(),
    )
    .await;
    let points = t.server.store.count().await.unwrap();
    assert!(points > 0, "the corpus was ingested");
    assert_eq!(t.server.store.backend(), "qdrant");
    let a = t
        .client
        .ask(AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!a.citations.is_empty(), "{a:?}");

    // Ingesting the same corpus again rewrites the same points.
    let spec = common::spec(std::path::Path::new("unused"));
    let corpus: Vec<_> = spec.settings.retrieval.corpus.iter().map(|p| spec.resolve(p)).collect();
    let opts = meshops::retrieval::chunk::ChunkOptions {
        max_chars: spec.settings.retrieval.chunk_max_chars,
        overlap_chars: spec.settings.retrieval.chunk_overlap_chars,
    };
    let embedder = meshops::retrieval::open_embedder(&spec).unwrap();
    let report = meshops::retrieval::ingest::ingest_paths(
        &corpus,
        &opts,
        embedder.as_ref(),
        t.server.store.as_ref(),
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((report.points, report.pruned), (points, 0));
    t.server.shutdown().await.unwrap();

    // The same collection opened for another dimension is refused.
    let err = QdrantStore::connect(&url, api_key.clone(), &collection, 17).await.unwrap_err();
    assert!(matches!(err, RetrievalError::Dimension { embedder: 17, .. }), "{err}");
    let store = QdrantStore::connect(&url, api_key, &collection, spec.settings.retrieval.embedder.dimension)
        .await
        .unwrap();
    store.delete_collection().await.unwrap();
}
