//! The kind-agnostic part of every agent: [`AgentLogic`] (an agent's
//! prepared profiles behind one handle, with the step's span, timeout,
//! cancellation and metrics) and [`AgentActor`], the actix actor around it
//! (supervision, panic catching, restarts). Neither knows any kind: each
//! kind's logic comes in as a [`KindLogic`] type.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext as _, Addr, AsyncContext as _, Context, Handler, ResponseFuture};
use futures::FutureExt as _;
use opentelemetry::KeyValue;
use tracing::Instrument as _;

use super::step::{KindLogic, StepContext};
use crate::config::{AgentKind, AgentSpec};
use crate::mesh::error::error_kind;
use crate::mesh::messages::{RunStep, StepOutput};
use crate::mesh::{MeshError, Resources, StepRecord};
use crate::telemetry::attr;

/// What a step gives back to the orchestrator.
type StepResult = Result<(StepOutput, StepRecord), MeshError>;

/// What every agent has, whatever its kind.
struct Common {
    /// The agent's name, on spans, records, errors and metrics.
    name: String,
    /// The agent's kind, on its step spans and records.
    kind: AgentKind,
    /// Upper bound on one step (`timeout_ms`).
    timeout: Duration,
    /// Restarts of this agent's replicas after a panic.
    restarts: AtomicU64,
    /// The agent attribute of metrics, built once (its value is shared, so
    /// cloning it per step allocates nothing).
    agent_attr: KeyValue,
}

/// An agent's logic of kind `K`: one prepared `K` per profile.
struct Profiles<K> {
    /// What does not depend on the profile.
    common: Common,
    /// The profile used when the request names no variant.
    base: K,
    /// Profiles by variant name, for variants that override this agent.
    variants: HashMap<String, K>,
}

/// [`Profiles`] with its kind erased, so actors, pools and the mesh handle
/// hold every kind alike.
///
/// `handle` builds the whole future of a step (panic catching, span,
/// timeout and the kind's step) in code generic over the kind, and boxes it
/// once, as the actor's `ResponseFuture`: erasing the kind costs no
/// allocation per step.
trait Erased: Send + Sync {
    fn common(&self) -> &Common;
    fn handle(self: Arc<Self>, msg: RunStep, me: Addr<AgentActor>) -> ResponseFuture<StepResult>;
}

/// One agent's logic, shared by its replicas; cheap to clone.
#[derive(Clone)]
pub struct AgentLogic(Arc<dyn Erased>);

impl AgentLogic {
    /// Prepares `spec`'s base profile and each variant's as kind `K`; a
    /// profile that cannot be served fails here, at start-up.
    pub fn of<K: KindLogic>(spec: &AgentSpec, resources: &Resources) -> Result<AgentLogic, MeshError> {
        let mut variants = HashMap::new();
        for (v, profile) in &spec.variants {
            variants.insert(v.clone(), K::prepare(spec, profile, resources)?);
        }
        let common = Common {
            name: spec.name.clone(),
            kind: spec.kind,
            timeout: Duration::from_millis(spec.timeout_ms),
            restarts: AtomicU64::new(0),
            agent_attr: KeyValue::new(
                attr::AGENT,
                opentelemetry::Value::String(Arc::<str>::from(spec.name.as_str()).into()),
            ),
        };
        let base = K::prepare(spec, &spec.base, resources)?;
        Ok(AgentLogic(Arc::new(Profiles { common, base, variants })))
    }

    pub fn name(&self) -> &str {
        &self.0.common().name
    }

    pub fn kind(&self) -> AgentKind {
        self.0.common().kind
    }

    /// How many times this agent's replicas were restarted after a panic.
    pub fn restarts(&self) -> u64 {
        self.0.common().restarts.load(Ordering::Relaxed)
    }
}

impl<K: KindLogic> Erased for Profiles<K> {
    fn common(&self) -> &Common {
        &self.common
    }

    fn handle(self: Arc<Self>, msg: RunStep, me: Addr<AgentActor>) -> ResponseFuture<StepResult> {
        // Each step runs as its own task, so a panic can only take this
        // step down: it is caught here, the request gets a status naming
        // the agent, and the replica is restarted. Steps of other requests
        // on the same replica are separate tasks and go on. Built from
        // combinators rather than an `async` block, so the step's message is
        // held once, in `run`'s future, not also in a block around it.
        let step = std::panic::AssertUnwindSafe(Arc::clone(&self).run(msg)).catch_unwind();
        Box::pin(step.map(move |caught| match caught {
            Ok(result) => result,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                let agent = &self.common.name;
                tracing::error!(agent = %agent, panic = %what, "agent step panicked; restarting the replica");
                me.do_send(Restart);
                Err(MeshError::AgentPanicked { agent: agent.clone() })
            }
        }))
    }
}

impl<K: KindLogic> Profiles<K> {
    /// Runs one step with the profile of the request's variant, bounded by
    /// the agent's timeout and the request's cancellation.
    ///
    /// One flat future: the kind's step is boxed and raced, as it is,
    /// against the cancellation and a sleep. Nesting it in a timeout inside
    /// an instrumented block inside another `async fn` taking the message
    /// by value gave every layer its own copy of the kind's future and of
    /// the message, each copied into the next as it was built (kilobytes
    /// per step; see docs/performance.md, "Instructions are not time").
    async fn run(self: Arc<Self>, msg: RunStep) -> StepResult {
        let c = &self.common;
        let started = Instant::now();
        let span = tracing::info_span!(
            parent: &msg.parent,
            "agent.step",
            otel.name = %format_args!("{} {}", c.kind.as_str(), c.name),
            otel.status_code = tracing::field::Empty,
            meshops.agent = %c.name,
            meshops.agent.kind = c.kind.as_str(),
            meshops.attempt = i64::from(msg.attempt),
            meshops.intent = %msg.intent,
            meshops.flow = %msg.intent,
            meshops.variant = msg.variant.as_deref().unwrap_or(""),
            error.type = tracing::field::Empty,
        );
        let variant = msg.variant.as_deref();
        let logic = variant.and_then(|v| self.variants.get(v)).unwrap_or(&self.base);
        // Set in place: the context is a few hundred bytes, and builder
        // methods taking it by value would copy it once each.
        let mut ctx = StepContext::new(&c.name, c.kind, msg.attempt, &msg.events, &msg.cancel);
        ctx.set_variant(variant);
        ctx.set_history(msg.history.as_deref().unwrap_or_default());
        let outcome = {
            // Boxed: a kind's step future is large (its model call and
            // request inside); the span is entered around the box, so the
            // model call's span is the step's child.
            let kind_step = Box::pin(logic.step(&mut ctx, msg.input)).instrument(span.clone());
            // The step is polled before its deadline, as a timeout would.
            tokio::select! {
                biased;
                _ = msg.cancel.cancelled() => Err(MeshError::Cancelled),
                r = kind_step => r,
                () = tokio::time::sleep(c.timeout) => Err(MeshError::AgentTimeout {
                    agent: c.name.clone(),
                    timeout_ms: c.timeout.as_millis() as u64,
                }),
            }
        };
        let m = crate::telemetry::metrics::get();
        m.step_duration.record(started.elapsed().as_secs_f64(), std::slice::from_ref(&c.agent_attr));
        match outcome {
            Ok(output) => Ok((output, ctx.finish(started))),
            Err(e) => {
                let kind = error_kind(&e);
                span.record("otel.status_code", "ERROR");
                span.record("error.type", kind);
                m.errors.add(1, &[c.agent_attr.clone(), KeyValue::new(attr::ERROR_TYPE, kind)]);
                Err(e)
            }
        }
    }
}

/// The actor around an agent's logic.
pub struct AgentActor {
    /// Shared with the agent's other replicas; survives restarts.
    logic: AgentLogic,
}

impl AgentActor {
    pub fn new(logic: AgentLogic) -> Self {
        Self { logic }
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Handlers return at once (their work runs as a spawned future), so
        // a deep mailbox only absorbs bursts; it never holds work hostage.
        ctx.set_mailbox_capacity(4096);
    }
}

impl actix::Supervised for AgentActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.logic.0.common().restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(agent = %self.logic.name(), "agent replica restarted after a panic");
    }
}

/// Asks a replica to restart (sent by its own step that panicked).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Restart;

impl Handler<Restart> for AgentActor {
    type Result = ();

    fn handle(&mut self, _msg: Restart, ctx: &mut Self::Context) {
        // Under its `Supervisor`, a stopped actor is restarted in place.
        ctx.stop();
    }
}

impl Handler<RunStep> for AgentActor {
    type Result = ResponseFuture<StepResult>;

    fn handle(&mut self, msg: RunStep, ctx: &mut Self::Context) -> Self::Result {
        self.logic.0.clone().handle(msg, ctx.address())
    }
}
