//! The layered settings file model: what `config/meshops.toml`, its
//! per-environment overlays, `--config FILE` and `MESHOPS__…` variables
//! deserialize into. Every struct denies unknown fields, so a typo is an
//! error that names the field instead of a silently ignored line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::index::IndexSettings;
use serde::{Deserialize, Serialize};

/// The flow model lives beside the settings, in `flow_spec.rs`.
pub use super::flow_spec::FlowSpec;

/// All layered settings. Agents live in their own files (`agents/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub gateway: GatewaySettings,
    pub mesh: MeshSettings,
    pub retrieval: RetrievalSettings,
    /// Model profiles by name; agents refer to them by that name.
    pub models: BTreeMap<String, ModelProfile>,
    /// What runs for each routed intent.
    pub flows: BTreeMap<String, FlowSpec>,
    /// Named experiment variants a request can select.
    pub variants: BTreeMap<String, VariantSettings>,
    pub telemetry: TelemetrySettings,
    pub batch: BatchSettings,
    /// The evaluation harness (`meshops eval`).
    pub eval: EvalSettings,
    /// MCP servers the mesh starts, by name; agents call their tools as
    /// `mcp:<server>`.
    pub mcp: BTreeMap<String, super::tools::McpServerSettings>,
    /// Conversations kept per `session_id`.
    pub sessions: super::tools::SessionSettings,
    /// What is kept of each answered request (feedback, live export).
    pub live: super::ab::LiveSettings,
    /// Judging a sample of live answers.
    pub online_eval: super::ab::OnlineEvalSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            gateway: GatewaySettings::default(),
            mesh: MeshSettings::default(),
            retrieval: RetrievalSettings::default(),
            models: BTreeMap::from([("offline".to_string(), ModelProfile::offline())]),
            flows: BTreeMap::new(),
            variants: BTreeMap::new(),
            telemetry: TelemetrySettings::default(),
            batch: BatchSettings::default(),
            eval: EvalSettings::default(),
            mcp: BTreeMap::new(),
            sessions: super::tools::SessionSettings::default(),
            live: super::ab::LiveSettings::default(),
            online_eval: super::ab::OnlineEvalSettings::default(),
        }
    }
}

/// The evaluation harness (`[eval]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    /// Model profile the LLM judges and `llm_rubric` evaluators call, like
    /// an agent's `model`; `meshops eval run --judge-model` overrides it.
    /// An offline profile runs the heuristic judge
    /// (`offline-heuristic-judge`).
    pub judge_model: String,
}

impl Default for EvalSettings {
    fn default() -> Self {
        Self { judge_model: "offline".into() }
    }
}

/// Log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object per line, for log collectors (Kubernetes).
    Json,
}

/// Logs, traces and metrics (`[telemetry]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// OTLP/gRPC collector (`http://collector:4317`). Unset: nothing is
    /// exported and no exporter runs. `OTEL_EXPORTER_OTLP_ENDPOINT` is used
    /// when this is unset and `export` is true.
    pub otlp_endpoint: Option<String>,
    /// Master switch for OTLP export (`false` turns it off even when an
    /// endpoint is set anywhere).
    pub export: bool,
    /// `service.name`; `OTEL_SERVICE_NAME` wins when set.
    pub service_name: String,
    /// `deployment.environment.name` resource attribute.
    pub environment: String,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES` adds more).
    pub resource_attributes: BTreeMap<String, String>,
    /// Share of new traces sampled (0..1); a sampled parent is always kept.
    pub sampling_ratio: f64,
    /// How often metrics are exported.
    pub export_interval_ms: u64,
    pub log_format: LogFormat,
    /// Record prompt and completion text on spans (off: they may hold
    /// personal data).
    pub capture_content: bool,
    /// Where `meshops serve` answers Prometheus scrapes (`GET /metrics`,
    /// the same metrics as OTLP); unset: not served.
    pub prometheus_listen: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            export: true,
            service_name: "meshops".into(),
            environment: "local".into(),
            resource_attributes: BTreeMap::new(),
            sampling_ratio: 1.0,
            export_interval_ms: 10_000,
            log_format: LogFormat::Text,
            capture_content: false,
            prometheus_listen: None,
        }
    }
}

/// The gRPC front door.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Socket address to listen on (`127.0.0.1:50051`; `0.0.0.0:50051` in a
    /// container).
    pub listen: String,
    /// Longest accepted query, in characters: bounds the work one request
    /// can ask for.
    pub max_query_chars: usize,
    /// Deadline applied when the client sends none (and the cap when it
    /// sends a longer one).
    pub request_timeout_ms: u64,
    /// Requests served at once; beyond it (and the queue) requests are shed
    /// with RESOURCE_EXHAUSTED at once, so admitted ones keep their latency.
    pub max_in_flight: usize,
    /// Requests that may wait for a slot (bounded by their deadline).
    pub max_queued: usize,
    /// Name of the environment variable holding the accepted API keys,
    /// comma-separated. Unset or empty variable: no authentication.
    pub api_keys_env: Option<String>,
    /// Requests per second allowed per API key (0: unlimited).
    pub rate_limit_rps: f64,
    /// Burst size of the per-key rate limit.
    pub rate_limit_burst: u32,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_grace_ms: u64,
    /// File of accepted API keys, stored hashed: one SHA-256 hex digest per
    /// line (`meshops keys hash` prints one), `#` starts a comment, text
    /// after the digest is a label used in logs instead of the key.
    /// Relative to the project root. Used together with `api_keys_env`.
    pub api_keys_file: Option<PathBuf>,
    /// Model tokens (input + output) per minute allowed per API key (0:
    /// unlimited). A request's tokens are charged when it finishes; a key
    /// whose budget is spent is refused until it refills.
    pub rate_limit_tpm: u64,
    /// Tokens reserved from that budget when a request is admitted (an
    /// estimate; a batch item too), settled to the tokens its model calls
    /// used when it ends: answered, failed, cancelled or dropped by its
    /// client (a dropped request is charged at least the reservation).
    pub rate_limit_token_reserve: u64,
    /// Requests of one API key running at once (0: no limit); beyond it
    /// RESOURCE_EXHAUSTED. Counted across replicas with `limits_backend =
    /// "redis"` (a replica that dies frees its requests' places at their
    /// deadlines).
    pub rate_limit_concurrency: u32,
    /// Largest request message the server decodes, in bytes.
    pub max_message_bytes: usize,
    /// Most entries in a call's gRPC metadata (headers, standard ones
    /// included), and in an `AskRequest`'s `metadata` map.
    pub max_metadata_entries: usize,
    /// Most concurrent HTTP/2 streams (calls) one connection may carry;
    /// a client past it waits for a stream (or opens another connection).
    pub max_concurrent_streams: u32,
    /// How often an idle HTTP/2 connection is pinged, in ms (0: never); a
    /// peer that does not answer within `http2_keepalive_timeout_ms` is
    /// dropped, so dead clients do not hold connections.
    pub http2_keepalive_interval_ms: u64,
    pub http2_keepalive_timeout_ms: u64,
    /// Longest a connection lives, in ms (0: no limit): past it the client
    /// is sent GOAWAY and reconnects, which spreads long-lived clients over
    /// new replicas behind a load balancer.
    pub max_connection_age_ms: u64,
    /// Serve gRPC server reflection to callers without a key (for
    /// development with grpcurl). Off: with API keys configured,
    /// reflection needs a key like every other call; health stays open.
    pub public_reflection: bool,
    /// TLS for the gateway; absent: plaintext (the default, for loopback).
    pub tls: Option<TlsSettings>,
    /// Where the OpenAI-compatible HTTP API (`/v1/models`,
    /// `/v1/chat/completions`) listens, beside gRPC; unset: not served.
    pub http_listen: Option<String>,
    /// Where the MCP server (streamable HTTP, at `/mcp`) listens, beside
    /// gRPC; unset: not served (`meshops mcp` serves it over stdio).
    pub mcp_listen: Option<String>,
    /// Where the per-key budgets (`rate_limit_rps`, `rate_limit_tpm`) are
    /// counted: `local` (per process) or `redis` (shared by replicas).
    pub limits_backend: super::shared::LimitsBackend,
    /// The Redis URL (`redis://…` or `rediss://…`), for `limits_backend =
    /// "redis"`.
    pub redis_url: Option<String>,
    /// The environment variable holding that URL (for a Secret).
    pub redis_url_env: Option<String>,
    /// While Redis cannot be reached: `fail_closed` (UNAVAILABLE) or
    /// `local` (per-process limits, logged and counted).
    pub limits_fallback: super::shared::LimitsFallback,
    /// A/B: requests without a `variant` are assigned one by these weights
    /// (`[gateway.ab] weights = { base = 50, concise = 50 }`); reloaded on
    /// SIGHUP.
    pub ab: super::ab::AbSettings,
}

/// The gateway's TLS identity and, optionally, the CA that client
/// certificates must chain to (`[gateway.tls]`). Paths are relative to the
/// project root; files are PEM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain.
    pub cert_path: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// When set, clients must present a certificate signed by this CA
    /// (mutual TLS).
    pub client_ca_path: Option<PathBuf>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            max_query_chars: 4000,
            request_timeout_ms: 30_000,
            max_in_flight: 1024,
            max_queued: 1024,
            api_keys_env: None,
            rate_limit_rps: 0.0,
            rate_limit_burst: 20,
            shutdown_grace_ms: 20_000,
            api_keys_file: None,
            rate_limit_tpm: 0,
            rate_limit_token_reserve: 256,
            rate_limit_concurrency: 0,
            max_message_bytes: 4 * 1024 * 1024,
            max_metadata_entries: 64,
            public_reflection: false,
            max_concurrent_streams: 1024,
            http2_keepalive_interval_ms: 30_000,
            http2_keepalive_timeout_ms: 10_000,
            max_connection_age_ms: 0,
            tls: None,
            http_listen: None,
            mcp_listen: None,
            limits_backend: super::shared::LimitsBackend::Local,
            redis_url: None,
            redis_url_env: None,
            limits_fallback: super::shared::LimitsFallback::FailClosed,
            ab: super::ab::AbSettings::default(),
        }
    }
}

/// Where agents and prompts come from and how the actor system is laid out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshSettings {
    /// Folder of `<agent>.toml` files, relative to the project root.
    pub agents_dir: PathBuf,
    /// Folder of `.prompty` files that agent files name.
    pub prompts_dir: PathBuf,
    /// The agent that routes every request (must be of kind `router`).
    pub router: String,
    /// Worker threads (actix arbiters) that agent replicas are spread over.
    pub arbiters: usize,
    /// Model profile per agent name, in place of the agent file's `model`:
    /// lets a settings overlay (`--config config/local-llm.toml`) move agents
    /// to another model without editing `agents/`. Variants still override.
    pub agent_models: BTreeMap<String, String>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            agents_dir: "agents".into(),
            prompts_dir: "prompts".into(),
            router: "router".into(),
            arbiters: 2,
            agent_models: BTreeMap::new(),
        }
    }
}

/// Which vector store backend holds the collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// qdrant-edge, in process, persisted under `data_dir`.
    Edge,
    /// A Qdrant server at `url`.
    Qdrant,
    /// Bench mode: a store that holds nothing and answers every search at
    /// once with one fixed passage (`meshops bench`; never for serving).
    Zero,
}

/// The knowledge base: store, collection, corpus and chunking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalSettings {
    pub backend: StoreBackend,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// Collection name, the same on the embedded store and a server.
    pub collection: String,
    /// Files or folders ingested on first `serve` when the collection is
    /// empty, and by `meshops ingest` when given no paths.
    pub corpus: Vec<PathBuf>,
    /// Whether `serve` ingests `corpus` into an empty collection.
    pub auto_ingest: bool,
    pub chunk_max_chars: usize,
    /// Characters of the previous chunk repeated at the start of the next,
    /// so an answer spanning a boundary is still found whole.
    pub chunk_overlap_chars: usize,
    /// Qdrant server gRPC URL, for `backend = "qdrant"`
    /// (`http://localhost:6334`).
    pub url: Option<String>,
    /// Name of the environment variable holding the Qdrant API key.
    pub api_key_env: Option<String>,
    pub embedder: EmbedderSettings,
    /// How the embedded store indexes the collection (`[retrieval.index]`).
    pub index: IndexSettings,
}

impl Default for RetrievalSettings {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Edge,
            data_dir: "data".into(),
            collection: "meshops_docs".into(),
            corpus: vec!["corpus".into()],
            auto_ingest: true,
            chunk_max_chars: 900,
            chunk_overlap_chars: 150,
            url: None,
            api_key_env: None,
            embedder: EmbedderSettings::default(),
            index: IndexSettings::default(),
        }
    }
}

/// Which embedder turns text into vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderProvider {
    /// Deterministic hashed n-gram features; no model needed.
    Offline,
    /// The `/embeddings` endpoint of the model profile named by `model`,
    /// whose provider must be the same: OpenAI, an OpenAI-compatible server
    /// (vLLM, Ollama, llama.cpp, LiteLLM) or Azure OpenAI.
    Openai,
    OpenaiCompatible,
    Azure,
    /// Bench mode: returns a fixed unit vector at once (with `backend =
    /// "zero"`; never for serving).
    Zero,
}

impl EmbedderProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            EmbedderProvider::Offline => "offline",
            EmbedderProvider::Openai => "openai",
            EmbedderProvider::OpenaiCompatible => "openai_compatible",
            EmbedderProvider::Azure => "azure",
            EmbedderProvider::Zero => "zero",
        }
    }

    /// The model provider a remote embedder's profile must have.
    pub fn model_provider(self) -> Provider {
        match self {
            EmbedderProvider::Offline => Provider::Offline,
            EmbedderProvider::Openai => Provider::Openai,
            EmbedderProvider::OpenaiCompatible => Provider::OpenaiCompatible,
            EmbedderProvider::Azure => Provider::Azure,
            EmbedderProvider::Zero => Provider::Zero,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderSettings {
    pub provider: EmbedderProvider,
    /// Vector length; must match the collection's, and a remote model's
    /// output (checked on every answer).
    pub dimension: usize,
    /// Model profile (`[models.<name>]`) for remote embedders: its base
    /// URL, key variable, timeout and retries are used.
    pub model: Option<String>,
    /// Texts per request to a remote embedder.
    pub batch_size: usize,
}

impl EmbedderSettings {
    /// Texts per `/embeddings` request when the settings give no batch
    /// size: the same as ingest's batch, so one ingest batch is one request.
    pub const DEFAULT_BATCH_SIZE: usize = 64;
}

impl Default for EmbedderSettings {
    fn default() -> Self {
        Self {
            provider: EmbedderProvider::Offline,
            dimension: 384,
            model: None,
            batch_size: Self::DEFAULT_BATCH_SIZE,
        }
    }
}

/// Who serves a model profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// The built-in deterministic engine (`offline-extractive`).
    Offline,
    Openai,
    Azure,
    /// Any server speaking the OpenAI wire protocol (vLLM, llama.cpp,
    /// Ollama, LiteLLM) at `base_url`.
    OpenaiCompatible,
    /// Bench mode: the zero-work model (`zero-work`), which answers every
    /// call at once (after `latency_ms`) with a fixed reply, so benchmarks
    /// measure the mesh and not a model.
    Zero,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Offline => "offline",
            Provider::Openai => "openai",
            Provider::Azure => "azure",
            Provider::OpenaiCompatible => "openai_compatible",
            Provider::Zero => "zero",
        }
    }
}

/// A model profile (`[models.<name>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProfile {
    pub provider: Provider,
    /// Model (or Azure deployment) name reported in every step.
    pub model: String,
    /// Offline engine and zero-work model: added latency per call, for
    /// load tests.
    #[serde(default)]
    pub latency_ms: u64,
    /// Offline engine: share of calls that fail, for fault tests (0..1).
    #[serde(default)]
    pub failure_rate: f64,
    /// Offline engine, TEST ONLY: the engine panics on a request whose
    /// query contains this text, so supervision can be tested over the
    /// wire. Never set it in a deployed configuration.
    #[serde(default)]
    pub panic_on_query: Option<String>,
    pub base_url: Option<String>,
    /// Name of the environment variable that holds the API key; the key
    /// itself never appears in a file.
    pub api_key_env: Option<String>,
    pub api_version: Option<String>,
    pub timeout_ms: Option<u64>,
    pub max_retries: Option<u32>,
    /// Profile to use when this one stays down after its retries.
    pub fallback: Option<String>,
    /// USD per million input tokens; unknown when absent.
    pub input_price_per_mtok: Option<f64>,
    /// USD per million output tokens; unknown when absent.
    pub output_price_per_mtok: Option<f64>,
    /// Sampling parameters that override the prompt's.
    #[serde(default)]
    pub parameters: ModelParams,
}

impl ModelProfile {
    /// The built-in offline profile, present unless a file replaces it.
    pub fn offline() -> Self {
        Self {
            provider: Provider::Offline,
            model: "offline-extractive".into(),
            latency_ms: 0,
            failure_rate: 0.0,
            panic_on_query: None,
            base_url: None,
            api_key_env: None,
            api_version: None,
            timeout_ms: None,
            max_retries: None,
            fallback: None,
            input_price_per_mtok: Some(0.0),
            output_price_per_mtok: Some(0.0),
            parameters: ModelParams::default(),
        }
    }
}

/// Sampling parameters, merged from the prompt file's `model.parameters` and
/// the model profile's `parameters`. `None` leaves the provider's default.
/// Plain configuration data: the `llm` layer re-exports it for requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// Sampling temperature; lower is more deterministic.
    pub temperature: Option<f64>,
    /// Longest answer, in tokens, so a runaway answer costs a known amount.
    pub max_tokens: Option<u32>,
    /// Nucleus sampling share, for providers tuned that way.
    pub top_p: Option<f64>,
    /// Seed for providers that can repeat an answer, for evaluations.
    pub seed: Option<i64>,
    /// Sequences that end the answer.
    #[serde(default)]
    pub stop: Vec<String>,
    /// `"json_object"` or `"text"`; passed to providers that support it.
    pub response_format: Option<String>,
}

/// A named variant (`[variants.<name>]`): overrides for an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct VariantSettings {
    pub description: String,
    /// Per-agent overrides.
    pub agents: BTreeMap<String, AgentOverride>,
    /// Flows replaced for this variant (whole flows, by intent).
    pub flows: BTreeMap<String, FlowSpec>,
}

/// What a variant may change about one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AgentOverride {
    /// Prompt file, relative to `prompts_dir`.
    pub prompt: Option<String>,
    /// Model profile name.
    pub model: Option<String>,
    pub top_k: Option<usize>,
    pub score_threshold: Option<f32>,
    pub max_sentences: Option<usize>,
    pub accept_threshold: Option<f64>,
    pub min_coverage: Option<f64>,
}

/// Durable batch jobs (`[batch]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// The SQLite file holding jobs, items and results. Unset: `batch.sqlite3`
    /// under `retrieval.data_dir`, so one volume keeps all durable state.
    pub db_path: Option<PathBuf>,
    /// Batch items run at once across all jobs. Batch work does not take
    /// the gateway's real-time slots (`gateway.max_in_flight`), so this is
    /// what bounds its share of the mesh.
    pub workers: usize,
    /// Items of one job run at once, so one large job cannot hold every
    /// worker while later jobs wait.
    pub per_job_concurrency: usize,
    /// Most items one `SubmitBatch` may carry.
    pub max_items: usize,
    /// Where jobs live: `sqlite` (the file above, one process) or
    /// `postgres` (shared by every replica; `url` or `url_env`).
    pub backend: super::shared::StateBackend,
    /// The PostgreSQL URL (`postgresql://…`), for `backend = "postgres"`.
    pub url: Option<String>,
    /// The environment variable holding that URL (for a Secret).
    pub url_env: Option<String>,
    /// How long a claimed item stays its replica's without a renewal, in
    /// ms; renewed every third of it while the item runs. A replica that
    /// dies leaves its items to another one after this long (postgres).
    pub lease_ms: u64,
    /// Finished and cancelled jobs older than this many days are deleted
    /// with their items and results (0: kept forever).
    pub retention_days: u32,
    /// Most unfinished jobs one API key may have (0: no limit).
    pub max_active_jobs_per_key: u32,
    /// Most items without a result one API key may have over all its jobs
    /// (0: no limit).
    pub max_pending_items_per_key: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            db_path: None,
            workers: 4,
            per_job_concurrency: 2,
            max_items: 1000,
            backend: super::shared::StateBackend::Sqlite,
            url: None,
            url_env: None,
            lease_ms: 30_000,
            retention_days: 30,
            max_active_jobs_per_key: 0,
            max_pending_items_per_key: 0,
        }
    }
}
