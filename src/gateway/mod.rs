//! The gRPC gateway: `meshops.v1.Gateway`, `meshops.v1.Batch`,
//! `meshops.v1.Admin`, `grpc.health.v1.Health` and server reflection (v1
//! and v1alpha) on one tonic server.
//!
//! The gateway validates a request, turns it into a mesh message
//! ([`convert`]), bounds it by the client's deadline, and maps every error to
//! a status through the one exhaustive map in [`error`]. Health reports
//! NOT_SERVING until the store and the mesh are ready.

pub mod admin;
pub mod admission;
pub mod arrival;
pub mod batch;
pub mod convert;
pub mod error;
pub mod limits;
pub mod mcp;
pub mod openai;
pub mod quality;
pub mod server;
pub mod shared_limits;

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::config::GatewaySettings;
use crate::mesh::{Ask, MeshError, MeshHandle};
use crate::proto;
use crate::proto::gateway_server::Gateway;
use admission::Settlement;

pub use server::{Overrides, ServeError, ServerHandle, start, start_with};

/// The `Gateway` service implementation.
#[derive(Clone)]
pub struct GatewayService {
    /// Set once the mesh has started; until then requests get UNAVAILABLE.
    mesh: Arc<OnceLock<Arc<MeshHandle>>>,
    /// What the running mesh adds to the description and the conversation
    /// store; set with the mesh.
    running: Arc<OnceLock<Running>>,
    limits: Arc<GatewaySettings>,
    description: Arc<proto::MeshDescription>,
    admission: Arc<admission::Admission>,
    /// A/B weights and live records.
    quality: Arc<quality::Quality>,
}

impl GatewayService {
    pub fn new(
        mesh: Arc<OnceLock<Arc<MeshHandle>>>,
        limits: GatewaySettings,
        description: proto::MeshDescription,
        admission: Arc<admission::Admission>,
        quality: Arc<quality::Quality>,
    ) -> Self {
        Self {
            mesh,
            running: Arc::new(OnceLock::new()),
            limits: Arc::new(limits),
            description: Arc::new(description),
            admission,
            quality,
        }
    }

    /// What the mesh brought once it started: its MCP servers' tools and
    /// its conversation store. Set once; a second call changes nothing.
    pub fn set_running(&self, running: Running) {
        let _ = self.running.set(running);
    }

    fn mesh(&self) -> Result<Arc<MeshHandle>, Status> {
        self.mesh.get().cloned().ok_or_else(|| Status::unavailable("the mesh is starting; retry shortly"))
    }

    /// Builds the mesh message for a request: validated input, a deadline
    /// (the client's `grpc-timeout`, capped by the configured timeout), a
    /// cancellation token and a trace id.
    fn prepare(
        &self,
        request: Request<proto::AskRequest>,
        span: tracing::Span,
    ) -> Result<(Ask, CancellationToken), Status> {
        let trace_id = crate::telemetry::propagation::adopt_parent(&span, request.metadata());
        span.record("trace_id", trace_id.as_str());
        let timeout = client_timeout(request.metadata())
            .map(|t| t.min(Duration::from_millis(self.limits.request_timeout_ms)))
            .unwrap_or(Duration::from_millis(self.limits.request_timeout_ms));
        // tonic's server timeout layer fires at the same instant with a less
        // useful status, and most clients (tonic's among them) run their own
        // timer too and give up with CANCELLED. Finish early enough that our
        // DEADLINE_EXCEEDED crosses the network first.
        let margin = (timeout / 10).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let arrival = request
            .extensions()
            .get::<arrival::Arrival>()
            .map(|a| a.0)
            .unwrap_or_else(tokio::time::Instant::now);
        let deadline = arrival + timeout.saturating_sub(margin);
        let input =
            convert::ask_input(request.into_inner(), &self.limits).map_err(Status::invalid_argument)?;
        let ask = Ask::new(input, deadline, trace_id, span);
        let cancel = ask.cancel.clone();
        Ok((ask, cancel))
    }
}

/// The server span of one call: named for the RPC, parented by the caller's
/// `traceparent`, carrying the trace id so every log line of the request
/// shows it.
fn request_span(method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "grpc.request",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = "meshops.v1.Gateway",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        meshops.intent = tracing::field::Empty,
        meshops.variant = tracing::field::Empty,
    )
}

/// Records the outcome of a call on its span and in the request metrics.
struct CallRecord {
    method: &'static str,
    started: std::time::Instant,
    /// The variant that answered ("" for the base mesh).
    variant: String,
}

impl CallRecord {
    fn start(method: &'static str) -> Self {
        crate::telemetry::metrics::get().in_flight.add(1, &[]);
        Self { method, started: std::time::Instant::now(), variant: String::new() }
    }

    fn set_variant(&mut self, variant: Option<&str>) {
        self.variant = variant.unwrap_or_default().to_string();
    }

    fn finish(self, span: &tracing::Span, code: tonic::Code) {
        span.record("rpc.grpc.status_code", code as i32);
        ANSWERED[usize::from(code != tonic::Code::Ok)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if code != tonic::Code::Ok {
            span.record("otel.status_code", "ERROR");
        }
        let m = crate::telemetry::metrics::get();
        let attrs = [
            opentelemetry::KeyValue::new(crate::telemetry::attr::RPC_METHOD, self.method),
            opentelemetry::KeyValue::new(crate::telemetry::attr::RPC_GRPC_STATUS_CODE, code as i64),
            opentelemetry::KeyValue::new("meshops.variant", self.variant.clone()),
        ];
        m.request_duration.record(self.started.elapsed().as_secs_f64(), &attrs);
    }
}

/// Calls this process answered, by outcome, counted as each call ends:
/// `meshops bench external` checks an outside load generator's run
/// against it (h2load sees HTTP statuses only, and a gRPC error is HTTP 200).
static ANSWERED: [std::sync::atomic::AtomicU64; 2] =
    [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// Calls answered so far by this process: (`OK`, any other status).
pub fn answered() -> (u64, u64) {
    let load = |i: usize| ANSWERED[i].load(std::sync::atomic::Ordering::Relaxed);
    (load(0), load(1))
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        crate::telemetry::metrics::get().in_flight.add(-1, &[]);
    }
}

/// Parses the `grpc-timeout` header (`<digits><unit>`, unit one of
/// H M S m u n).
fn client_timeout(meta: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let raw = meta.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::AskEvent, Status>> + Send>>;

use convert::MAX_SESSION_ID_CHARS;

/// What the running mesh adds to the gateway.
pub struct Running {
    /// The MCP servers and their tools, for `DescribeMesh`.
    pub mcp_servers: Vec<proto::McpServerInfo>,
    /// The conversation store (`None`: conversations are off).
    pub sessions: Option<crate::sessions::SharedSessions>,
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn ask(&self, request: Request<proto::AskRequest>) -> Result<Response<proto::AskResponse>, Status> {
        let mut record = CallRecord::start("Ask");
        let span = request_span("meshops.v1.Gateway/Ask");
        // The caller's parent must be set before the span is first entered.
        let authenticated = self.admission.authenticate_request(request.metadata()).await;
        let prepared = self.prepare(request, span.clone());
        let result = async {
            let caller = authenticated?;
            // Settles the reserved tokens however this ends, a client that
            // hangs up (this future dropped) included.
            let mut settlement = Settlement::new(self.admission.clone(), caller);
            let mesh = self.mesh()?;
            let (ask, cancel) = prepared?;
            let mut ask = ask
                .with_owner(self.admission.identity(caller).unwrap_or_default())
                .with_meter(settlement.meter());
            self.quality.assign(&mut ask);
            record.set_variant(ask.input.variant.as_deref());
            let (owner, query) = (ask.owner.clone(), self.quality.query_to_keep(&ask));
            let _slot = self.admission.admit(ask.deadline.unwrap_or_else(tokio::time::Instant::now)).await?;
            settlement.start();
            // If the client goes away tonic drops this future; the guard then
            // cancels the request inside the mesh so no more model calls run.
            let guard = cancel.drop_guard();
            // The deadline is also enforced here, in the same task as tonic's
            // own `grpc-timeout` timer: this future is polled first when that
            // timer wakes the task, so the client gets DEADLINE_EXCEEDED
            // rather than tonic's CANCELLED "Timeout expired".
            let deadline = ask.deadline;
            let result = match deadline {
                Some(d) => tokio::time::timeout_at(d, mesh.ask(ask))
                    .await
                    .unwrap_or(Err(MeshError::DeadlineExceeded)),
                None => mesh.ask(ask).await,
            };
            guard.disarm();
            settlement.finish_now().await;
            match result {
                Ok(answer) => {
                    self.quality.record(&owner, query, &answer);
                    Ok(Response::new(convert::answer(answer)))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "request failed");
                    Err(error::status(e))
                }
            }
        }
        .instrument(span.clone())
        .await;
        record.finish(&span, result.as_ref().map(|_| tonic::Code::Ok).unwrap_or_else(|s| s.code()));
        result
    }

    type AskStreamStream = EventStream;

    async fn ask_stream(&self, request: Request<proto::AskRequest>) -> Result<Response<EventStream>, Status> {
        let mut record = CallRecord::start("AskStream");
        let span = request_span("meshops.v1.Gateway/AskStream");
        let authenticated = self.admission.authenticate_request(request.metadata()).await;
        let prepared = self.prepare(request, span.clone());
        let caller = match authenticated {
            Ok(c) => c,
            Err(s) => {
                record.finish(&span, s.code());
                return Err(s);
            }
        };
        // Dropped unstarted on the early returns below: the reservation
        // goes back.
        let mut settlement = Settlement::new(self.admission.clone(), caller);
        let mesh = match self.mesh() {
            Ok(m) => m,
            Err(s) => {
                record.finish(&span, s.code());
                return Err(s);
            }
        };
        let (ask, cancel) = match prepared {
            Ok(x) => x,
            Err(s) => {
                record.finish(&span, s.code());
                return Err(s);
            }
        };
        let slot = match self.admission.admit(ask.deadline.unwrap_or_else(tokio::time::Instant::now)).await {
            Ok(slot) => slot,
            Err(s) => {
                record.finish(&span, s.code());
                return Err(s);
            }
        };
        let (event_tx, mut event_rx) = mpsc::unbounded_channel();
        settlement.start();
        let mut ask = ask
            .with_events(event_tx)
            .with_owner(self.admission.identity(caller).unwrap_or_default())
            .with_meter(settlement.meter());
        self.quality.assign(&mut ask);
        record.set_variant(ask.input.variant.as_deref());
        let (owner, query, quality) =
            (ask.owner.clone(), self.quality.query_to_keep(&ask), self.quality.clone());
        let (out_tx, out_rx) = mpsc::channel::<Result<proto::AskEvent, Status>>(64);
        tokio::spawn(async move {
            // The slot is held until the stream's work is done; the tokens
            // are settled however it ends (a dropped stream included).
            let _slot = slot;
            let settlement = settlement;
            let guard = cancel.clone().drop_guard();
            let run = mesh.ask(ask);
            tokio::pin!(run);
            let result = loop {
                tokio::select! {
                    biased;
                    Some(event) = event_rx.recv() => {
                        if out_tx.send(Ok(convert::event(event))).await.is_err() {
                            // The client hung up: the guard cancels the mesh work.
                            return;
                        }
                    }
                    result = &mut run => break result,
                    _ = out_tx.closed() => return,
                }
            };
            // Events sent before the answer are still queued: flush them so
            // the final answer is always last.
            while let Ok(event) = event_rx.try_recv() {
                if out_tx.send(Ok(convert::event(event))).await.is_err() {
                    return;
                }
            }
            settlement.finish_now().await;
            let last = match result {
                Ok(answer) => {
                    quality.record(&owner, query, &answer);
                    Ok(proto::AskEvent {
                        event: Some(proto::ask_event::Event::Final(convert::answer(answer))),
                    })
                }
                Err(e) => {
                    span.in_scope(|| tracing::warn!(error = %e, "request failed"));
                    Err(error::status(e))
                }
            };
            record.finish(&span, last.as_ref().map(|_| tonic::Code::Ok).unwrap_or_else(|s| s.code()));
            // Ignored: the client may have gone; nothing is left to cancel.
            let _ = out_tx.send(last).await;
            guard.disarm();
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))))
    }

    async fn describe_mesh(
        &self,
        request: Request<proto::DescribeMeshRequest>,
    ) -> Result<Response<proto::MeshDescription>, Status> {
        self.admission.authenticate(request.metadata()).await?;
        let mut description = (*self.description).clone();
        if let Some(running) = self.running.get() {
            description.mcp_servers = running.mcp_servers.clone();
        }
        Ok(Response::new(description))
    }

    async fn submit_feedback(
        &self,
        request: Request<proto::FeedbackRequest>,
    ) -> Result<Response<proto::FeedbackAck>, Status> {
        let caller = self.admission.authenticate(request.metadata()).await?;
        let owner = self.admission.identity(caller).unwrap_or_default();
        self.quality.feedback(&owner, request.into_inner()).await.map(Response::new)
    }

    async fn delete_session(
        &self,
        request: Request<proto::DeleteSessionRequest>,
    ) -> Result<Response<proto::DeleteSessionResponse>, Status> {
        let caller = self.admission.authenticate(request.metadata()).await?;
        let owner = self.admission.identity(caller).unwrap_or_default();
        let session = request.into_inner().session_id;
        if session.trim().is_empty() {
            return Err(Status::invalid_argument("session_id is empty"));
        }
        if session.chars().count() > MAX_SESSION_ID_CHARS {
            return Err(Status::invalid_argument(format!(
                "session_id is longer than {MAX_SESSION_ID_CHARS} characters"
            )));
        }
        let running =
            self.running.get().ok_or_else(|| Status::unavailable("the mesh is starting; retry shortly"))?;
        let Some(store) = &running.sessions else {
            return Err(Status::failed_precondition("conversations are off ([sessions] enabled = false)"));
        };
        match store.delete(&owner, &session).await {
            Ok(true) => Ok(Response::new(proto::DeleteSessionResponse { deleted: true })),
            Ok(false) => Err(Status::not_found(format!("no conversation `{session}`"))),
            Err(e) => {
                tracing::error!(error = %e, "cannot delete a session");
                Err(Status::unavailable("the conversation store failed; retry"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout_units() {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(client_timeout(&m), Some(Duration::from_millis(250)));
        m.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(client_timeout(&m), Some(Duration::from_secs(2)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(client_timeout(&m), None);
    }
}
