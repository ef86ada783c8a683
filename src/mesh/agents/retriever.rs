//! The retriever: embeds the query and returns the closest passages from
//! the vector store. It calls no chat model.

use tracing::Instrument as _;

use super::step::{KindLogic, StepContext, wrong_settings};
use crate::config::{AgentProfile, AgentSpec, KindSettings};
use crate::llm::Passage;
use crate::mesh::messages::{StepInput, StepOutput};
use crate::mesh::{MeshError, Resources};
use crate::retrieval::{RetrievalError, SharedEmbedder, SharedStore};

/// A retriever profile, prepared.
pub struct Retriever {
    /// Where the passages are searched.
    store: SharedStore,
    /// Embeds the query; the same embedder the corpus was ingested with.
    embedder: SharedEmbedder,
    /// How many passages at most.
    top_k: usize,
    /// Least score of a passage; `None` keeps every hit.
    threshold: Option<f32>,
}

impl KindLogic for Retriever {
    fn prepare(agent: &AgentSpec, profile: &AgentProfile, resources: &Resources) -> Result<Self, MeshError> {
        let KindSettings::Retriever(rs) = &profile.settings else {
            return Err(wrong_settings(agent));
        };
        Ok(Retriever {
            store: resources.store.clone(),
            embedder: resources.embedder.clone(),
            top_k: rs.top_k,
            threshold: (rs.score_threshold > 0.0).then_some(rs.score_threshold),
        })
    }

    async fn step(&self, ctx: &mut StepContext<'_>, input: StepInput) -> Result<StepOutput, MeshError> {
        let query = match input {
            StepInput::Retrieve { query } => query,
            other => return Err(ctx.cannot_run(&other)),
        };
        let agent = ctx.agent();
        let failed = |source| MeshError::Retrieval { agent: agent.to_string(), source };
        ctx.record.model = self.embedder.name().to_string();
        let vectors = self.embedder.embed(std::slice::from_ref(&query)).await.map_err(failed)?;
        let Some(vector) = vectors.into_iter().next() else {
            return Err(failed(RetrievalError::Embed {
                embedder: self.embedder.name().to_string(),
                message: "returned no vector".into(),
            }));
        };
        let search_span = tracing::info_span!(
            "vector.search",
            otel.name = %format_args!("search {}", self.store.collection()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = "qdrant",
            db.collection.name = %self.store.collection(),
            meshops.store.backend = %self.store.backend(),
            meshops.top_k = self.top_k as i64,
            meshops.hits = tracing::field::Empty,
        );
        let hits =
            self.store.search(vector, self.top_k, self.threshold).instrument(search_span.clone()).await;
        match &hits {
            Ok(h) => search_span.record("meshops.hits", h.len() as i64),
            Err(_) => search_span.record("otel.status_code", "ERROR"),
        };
        let passages: Vec<Passage> = hits
            .map_err(failed)?
            .into_iter()
            .map(|h| Passage { doc_id: h.doc_id, chunk_id: h.chunk_id, text: h.text, score: h.score })
            .collect();
        let mut docs: Vec<&str> = passages.iter().map(|p| p.doc_id.as_str()).collect();
        docs.dedup();
        ctx.record.summary = format!("{} passages from {}", passages.len(), docs.join(", "));
        Ok(StepOutput::Retrieved { passages })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::Harness;
    use super::*;

    #[tokio::test]
    async fn returns_the_closest_passages_from_the_store() {
        let h = Harness::with_store(&[
            ("gateway", "The gateway retries failed requests three times before it gives up."),
            ("agents", "Agents are actix actors that exchange messages with the orchestrator."),
            ("store", "Vectors live in an embedded qdrant-edge shard under the data folder."),
        ])
        .await;
        let spec = h.agent("retriever");
        let retriever = Retriever::prepare(spec, &spec.base, &h.resources).unwrap();
        let input = StepInput::Retrieve { query: "How often does the gateway retry failed requests?".into() };
        let (output, record) = h.run(&retriever, "retriever", input).await.unwrap();
        let StepOutput::Retrieved { passages } = output else { panic!("no passages: {output:?}") };
        assert!(!passages.is_empty() && passages.len() <= 4, "{passages:?}");
        assert_eq!(passages[0].doc_id, "gateway");
        assert_eq!(passages[0].chunk_id, "gateway#0");
        assert!(passages[0].text.contains("three times"));
        assert!(passages.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(record.model, "offline-hash-384");
        assert!(
            record.summary.starts_with(&format!("{} passages from gateway", passages.len())),
            "{}",
            record.summary
        );
        assert_eq!((record.model_attempts, record.input_tokens), (0, 0), "no chat model is called");
    }
}
