//! Embedders. [`OfflineEmbedder`] is deterministic and needs no model;
//! [`OpenAiEmbedder`] calls a model profile's OpenAI-compatible
//! `/embeddings` endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp).
//!
//! The offline embedder hashes lexical features into a fixed number of
//! buckets ([`text::hashed_vector`]: content terms, their bigrams and
//! character 3-grams). This is no semantic model, but texts about the same
//! topic share stems and sub-word pieces, so cosine similarity ranks them
//! close: enough for offline runs, tests and CI, where downloading a model is
//! not an option.

use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use futures::future::BoxFuture;

use super::{Embedder, RetrievalError};
use crate::config::ModelProfile;
use crate::llm::openai::{endpoint, map_error};
use crate::llm::retry::RetryPolicy;
use crate::text;

/// A deterministic embedder based on signed feature hashing.
#[derive(Debug, Clone)]
pub struct OfflineEmbedder {
    dimension: usize,
    name: String,
}

impl OfflineEmbedder {
    /// An embedder giving vectors of length `dimension` (at least 1: a zero
    /// dimension is raised to 1 rather than dividing by zero later).
    pub fn new(dimension: usize) -> Self {
        let dimension = dimension.max(1);
        Self { dimension, name: format!("offline-hash-{dimension}") }
    }

    /// Embeds one text. The result is L2-normalised, so a dot product is the
    /// cosine similarity.
    pub fn embed_text(&self, text: &str) -> Vec<f32> {
        text::hashed_vector(text, self.dimension)
    }
}

impl Embedder for OfflineEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, RetrievalError>> {
        Box::pin(async move { Ok(texts.iter().map(|t| self.embed_text(t)).collect()) })
    }
}

/// An embedder on a model profile's OpenAI-compatible `/embeddings`
/// endpoint. Texts go out in batches of `batch_size` per request, each
/// request under the profile's timeout and retries (the profile's
/// `fallback` is not used: another model's vectors would not compare with
/// the stored ones). Every returned vector must have the configured
/// dimension: a model that returns another length is an error naming the
/// setting, not a collection of vectors that silently never match.
pub struct OpenAiEmbedder {
    profile: String,
    model: String,
    name: String,
    dimension: usize,
    batch_size: usize,
    policy: RetryPolicy,
    client: async_openai::Client<Box<dyn async_openai::config::Config>>,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("profile", &self.profile)
            .field("model", &self.model)
            .field("dimension", &self.dimension)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl OpenAiEmbedder {
    /// The embedder of model profile `profile_name`, giving vectors of
    /// length `dimension`, `batch_size` texts per request (at least 1).
    pub fn new(
        profile_name: &str,
        profile: &ModelProfile,
        dimension: usize,
        batch_size: usize,
    ) -> Result<Self, RetrievalError> {
        let name = format!("{profile_name}:{}", profile.model);
        let client = endpoint(profile_name, profile)
            .map_err(|e| RetrievalError::Embed { embedder: name.clone(), message: e.to_string() })?;
        Ok(Self {
            profile: profile_name.to_string(),
            model: profile.model.clone(),
            name,
            dimension,
            batch_size: batch_size.max(1),
            policy: RetryPolicy::of(profile),
            client,
        })
    }

    fn error(&self, message: impl Into<String>) -> RetrievalError {
        RetrievalError::Embed { embedder: self.name.clone(), message: message.into() }
    }

    /// One request for `texts`, retried per the profile; the vectors come
    /// back in input order whatever order the server lists them in.
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, RetrievalError> {
        let request = CreateEmbeddingRequest {
            model: self.model.clone(),
            input: EmbeddingInput::StringArray(texts.to_vec()),
            ..Default::default()
        };
        let outcome = self
            .policy
            .run(&self.profile, "embedder", &self.model, |_| {
                let request = request.clone();
                Box::pin(async move {
                    self.client
                        .embeddings()
                        .create(request)
                        .await
                        .map_err(|e| map_error(&self.profile, &self.model, e))
                })
            })
            .await;
        let done = outcome.map_err(|gave_up| {
            self.error(format!("{} (after {} attempts)", gave_up.failure.error, gave_up.attempts))
        })?;
        tracing::debug!(
            profile = %self.profile,
            model = %self.model,
            texts = texts.len(),
            input_tokens = done.value.usage.prompt_tokens,
            attempts = done.attempts,
            "embeddings call"
        );
        order_vectors(
            done.value.data.into_iter().map(|e| (e.index, e.embedding)),
            texts.len(),
            self.dimension,
        )
        .map_err(|message| self.error(message))
    }
}

/// Puts `(index, vector)` pairs from an embeddings answer into input order
/// and checks them: one vector per input, each of length `dimension`, all
/// components finite.
fn order_vectors(
    data: impl Iterator<Item = (u32, Vec<f32>)>,
    inputs: usize,
    dimension: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for (index, vector) in data {
        let slot = usize::try_from(index).ok().and_then(|i| out.get_mut(i));
        let Some(slot) = slot else {
            return Err(format!("the answer has a vector for input {index}, but only {inputs} were sent"));
        };
        if slot.is_some() {
            return Err(format!("the answer has two vectors for input {index}"));
        }
        if vector.len() != dimension {
            return Err(format!(
                "the model returned a vector of length {}, but retrieval.embedder.dimension is {dimension}; \
                 set the dimension to the model's (and re-create the collection)",
                vector.len()
            ));
        }
        if !vector.iter().all(|x| x.is_finite()) {
            return Err(format!("the vector for input {index} has a non-finite component"));
        }
        *slot = Some(vector);
    }
    let missing = out.iter().filter(|v| v.is_none()).count();
    if missing > 0 {
        return Err(format!("the answer lacks {missing} of {inputs} vectors"));
    }
    Ok(out.into_iter().flatten().collect())
}

impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, RetrievalError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(self.batch_size) {
                out.extend(self.embed_batch(batch).await?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    #[test]
    fn deterministic_and_named() {
        let e = OfflineEmbedder::new(384);
        let a = e.embed_text("The gateway retries failed requests three times.");
        let b = OfflineEmbedder::new(384).embed_text("The gateway retries failed requests three times.");
        assert_eq!(a, b);
        assert_eq!(a.len(), 384);
        assert_eq!(e.name(), "offline-hash-384");
        assert_eq!(e.dimension(), 384);
    }

    #[test]
    fn unit_norm_including_featureless_text() {
        let e = OfflineEmbedder::new(64);
        for text in ["Agents exchange messages over gRPC.", "", "the of and", "!!!"] {
            let v = e.embed_text(text);
            assert!((norm(&v) - 1.0).abs() < 1e-4, "norm of {text:?} is {}", norm(&v));
            assert!(v.iter().all(|x| x.is_finite()));
        }
        assert_eq!(OfflineEmbedder::new(0).embed_text("anything").len(), 1);
    }

    #[test]
    fn paraphrase_is_closer_than_unrelated() {
        let e = OfflineEmbedder::new(384);
        let q = e.embed_text("How many times does the gateway retry a failed request?");
        let para = e.embed_text("Failed requests are retried by the gateway up to three times.");
        let other = e.embed_text("Bananas ripen faster when stored next to apples.");
        let (sp, so) = (cosine(&q, &para), cosine(&q, &other));
        assert!(sp > so + 0.2, "paraphrase {sp} vs unrelated {so}");
    }

    #[tokio::test]
    async fn trait_embed_matches_embed_text() {
        let e = OfflineEmbedder::new(32);
        let texts = vec!["alpha beta".to_string(), "gamma".to_string()];
        let out = e.embed(&texts).await.unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], e.embed_text("alpha beta"));
        assert_eq!(out[1], e.embed_text("gamma"));
    }

    #[test]
    fn answers_are_put_in_input_order_and_checked() {
        let v = |x: f32| vec![x; 4];
        let ordered = order_vectors([(1, v(1.0)), (0, v(0.0))].into_iter(), 2, 4).unwrap();
        assert_eq!(ordered, vec![v(0.0), v(1.0)]);
        let err = order_vectors([(0, vec![0.5; 3])].into_iter(), 1, 4).unwrap_err();
        assert!(err.contains("length 3") && err.contains("retrieval.embedder.dimension is 4"), "{err}");
        let err = order_vectors([(0, v(0.0))].into_iter(), 2, 4).unwrap_err();
        assert!(err.contains("lacks 1 of 2"), "{err}");
        let err = order_vectors([(0, v(0.0)), (0, v(1.0))].into_iter(), 2, 4).unwrap_err();
        assert!(err.contains("two vectors for input 0"), "{err}");
        let err = order_vectors([(5, v(0.0))].into_iter(), 2, 4).unwrap_err();
        assert!(err.contains("input 5"), "{err}");
        let err = order_vectors([(0, vec![f32::NAN; 4])].into_iter(), 1, 4).unwrap_err();
        assert!(err.contains("non-finite"), "{err}");
    }
}
