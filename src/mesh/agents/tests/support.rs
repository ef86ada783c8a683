//! What the kinds' unit tests share: the shipped agents with offline (or
//! fixed-reply) models and a store, and a way to run one step with no actor
//! system.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::step::{KindLogic, StepContext};
use crate::config::IndexSettings;
use crate::config::{
    AgentKind, AgentProfile, AgentSpec, KindSettings, LlmOutput, LlmSettings, LoadOptions, MeshSpec,
    PromptFile, TelemetrySettings,
};
use crate::llm::{LlmClient, LlmError, LlmRequest, LlmResponse, Passage, SharedLlm, TokenSink, TokenUsage};
use crate::mesh::messages::{StepInput, StepOutput};
use crate::mesh::{MeshError, Resources, StepRecord};
use crate::retrieval::edge::EdgeStore;
use crate::retrieval::embed::OfflineEmbedder;
use crate::retrieval::zero::{ZeroEmbedder, ZeroStore};
use crate::retrieval::{Chunk, Embedder as _, SharedStore, VectorStore as _};

/// The shipped configuration (`config/`, `agents/`, `prompts/`), loaded
/// once per test binary.
fn shipped() -> &'static MeshSpec {
    static SPEC: OnceLock<MeshSpec> = OnceLock::new();
    SPEC.get_or_init(|| match MeshSpec::load(&LoadOptions::files_only(env!("CARGO_MANIFEST_DIR"))) {
        Ok(spec) => spec,
        Err(e) => panic!("the shipped configuration must load: {e}"),
    })
}

/// The shipped agents and the resources a kind is prepared from.
pub struct Harness {
    /// What a kind is prepared from.
    pub resources: Resources,
    /// Keeps a store's folder alive as long as the store.
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// The shipped model profiles (the offline engine, traced as
    /// `build_clients` makes them) and a zero-work store.
    pub fn offline() -> Harness {
        let models = crate::llm::build_clients(&shipped().settings.models, &TelemetrySettings::default())
            .expect("the shipped model profiles build");
        let resources = Resources {
            store: Arc::new(ZeroStore::new("test")),
            embedder: Arc::new(ZeroEmbedder::new(8)),
            models,
            retries: Default::default(),
            agents: Arc::new(
                shipped().agents.iter().map(|(n, a)| (n.clone(), (a.kind, a.description.clone()))).collect(),
            ),
            mcp_settings: Default::default(),
            mcp: crate::tools::mcp::McpHub::empty(),
            peers: Default::default(),
            sessions: None,
        };
        Harness { resources, _dir: None }
    }

    /// Every model profile answered by `client`.
    pub fn with_model(client: SharedLlm) -> Harness {
        let mut h = Harness::offline();
        for m in h.resources.models.values_mut() {
            *m = client.clone();
        }
        h
    }

    /// An embedded store in a temporary folder holding `docs` (doc id,
    /// text: one chunk each), and the offline embedder.
    pub async fn with_store(docs: &[(&str, &str)]) -> Harness {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let embedder = OfflineEmbedder::new(384);
        let store = EdgeStore::open(dir.path(), "test", embedder.dimension(), &IndexSettings::default())
            .expect("the store opens");
        let mut points = Vec::new();
        for (doc, text) in docs {
            let chunk = Chunk {
                doc_id: doc.to_string(),
                chunk_id: format!("{doc}#0"),
                source: format!("{doc}.md"),
                text: text.to_string(),
            };
            points.push((chunk, embedder.embed_text(text)));
        }
        store.upsert(points).await.expect("the store takes the chunks");
        let mut h = Harness::offline();
        h.resources.store = Arc::new(store) as SharedStore;
        h.resources.embedder = Arc::new(embedder);
        h._dir = Some(dir);
        h
    }

    /// The shipped agent `name`.
    pub fn agent(&self, name: &str) -> &'static AgentSpec {
        &shipped().agents[name]
    }

    /// Runs one step of `logic` as agent `agent` (attempt 1, nobody
    /// streaming), with no actor around it.
    pub async fn run<K: KindLogic>(
        &self,
        logic: &K,
        agent: &str,
        input: StepInput,
    ) -> Result<(StepOutput, StepRecord), MeshError> {
        self.run_spec(logic, self.agent(agent), input).await
    }

    /// [`Harness::run`] for an agent that is not shipped.
    pub async fn run_spec<K: KindLogic>(
        &self,
        logic: &K,
        spec: &AgentSpec,
        input: StepInput,
    ) -> Result<(StepOutput, StepRecord), MeshError> {
        let started = Instant::now();
        let (events, cancel) = (None, CancellationToken::new());
        let mut ctx = StepContext::new(&spec.name, spec.kind, 1, &events, &cancel);
        let output = logic.step(&mut ctx, input).await?;
        Ok((output, ctx.finish(started)))
    }
}

/// An `llm` agent `name` on the `offline` profile with the prompt file
/// `prompt` (its text) and `[llm] output = output`.
pub fn llm_agent(name: &str, prompt: &str, output: Option<LlmOutput>) -> AgentSpec {
    let file = match PromptFile::parse(prompt, std::path::Path::new("test.prompty")) {
        Ok(f) => f,
        Err(e) => panic!("the test prompt must load: {e}"),
    };
    let mut spec = shipped().agents["summarizer"].clone();
    spec.name = name.to_string();
    spec.kind = AgentKind::Llm;
    spec.variants.clear();
    spec.base = AgentProfile {
        prompt: Some(Arc::new(file)),
        prompt_file: None,
        model: Some("offline".into()),
        settings: KindSettings::Llm(LlmSettings { output, ..LlmSettings::default() }),
    };
    spec
}

/// A model that answers every call with its prompt's last user message
/// (its model name is `echo`): what a test reads to see what a prompt
/// was given.
pub fn echo() -> SharedLlm {
    Arc::new(Echo)
}

/// See [`echo`].
struct Echo;

impl LlmClient for Echo {
    fn model(&self) -> &str {
        "echo"
    }

    fn provider(&self) -> &str {
        "test"
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
        _tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        let last = request.messages.iter().rev().find(|m| m.role == crate::llm::Role::User);
        let resp = LlmResponse {
            text: last.map(|m| m.content.trim().to_string()).unwrap_or_default(),
            model: "echo".into(),
            usage: TokenUsage::default(),
            cost_usd: None,
            finish_reason: Some("stop".into()),
            attempts: 1,
            failed_attempts: Vec::new(),
            tool_calls: Vec::new(),
        };
        Box::pin(async move { Ok(resp) })
    }
}

/// A passage of document `doc`.
pub fn passage(doc: &str, text: &str) -> Passage {
    Passage { doc_id: doc.into(), chunk_id: format!("{doc}#0"), text: text.into(), score: 0.5 }
}

/// A model that answers every call with `text` (its model name is
/// `fixed`, its price unknown).
pub fn fixed_reply(text: &str) -> SharedLlm {
    Arc::new(FixedReply(text.to_string()))
}

/// The reply text of every call.
struct FixedReply(String);

impl LlmClient for FixedReply {
    fn model(&self) -> &str {
        "fixed"
    }

    fn provider(&self) -> &str {
        "test"
    }

    fn complete<'a>(
        &'a self,
        _request: &'a LlmRequest,
        _tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        let resp = LlmResponse {
            text: self.0.clone(),
            model: "fixed".into(),
            usage: TokenUsage { input_tokens: 10, output_tokens: 5, estimated: false },
            cost_usd: None,
            finish_reason: Some("stop".into()),
            attempts: 1,
            failed_attempts: Vec::new(),
            tool_calls: Vec::new(),
        };
        Box::pin(async move { Ok(resp) })
    }
}
