//! Admission: API keys, per-key rate limits (requests per second and model
//! tokens per minute), and the global bound on requests in flight (load
//! shedding). Everything here answers at once: a refused request never
//! waits behind admitted ones.
//!
//! The per-key budgets are counted in this process (`limits_backend =
//! "local"`) or in Redis, shared by every replica ([`super::shared_limits`]);
//! while Redis cannot be reached, `limits_fallback` decides: refuse
//! (UNAVAILABLE) or count here meanwhile. A request's tokens are reserved
//! at admission and settled by its [`Settlement`] when it ends, however it
//! ends.
//!
//! Keys are held only as SHA-256 digests ([`crate::config::keys`]); a
//! presented key is hashed and compared with each digest in constant time.
//! No key is ever logged: logs and errors use the key's label.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use super::shared_limits::{Ask as SharedAsk, SharedLimits, Verdict};
use crate::config::keys::{self, ApiKey};
use crate::config::{GatewaySettings, LimitsFallback};

/// The gateway's admission state, shared by all calls.
pub struct Admission {
    keys: Vec<ApiKey>,
    slots: std::sync::Arc<Semaphore>,
    max_in_flight: usize,
    max_queued: usize,
    queued: AtomicUsize,
    /// Requests per second and burst, when limited.
    rate: Option<(f64, f64)>,
    /// Model tokens per minute, when limited.
    tpm: Option<f64>,
    /// One entry per configured key (same index as `keys`): memory is
    /// bounded by the key list, never by the callers seen.
    buckets: Vec<Mutex<KeyBuckets>>,
    draining: AtomicBool,
    /// Failed authentications are logged at most once per
    /// [`AUTH_LOG_INTERVAL`] (a client retrying a bad key, or a scan, must
    /// not flood the log); this counts those not logged since.
    auth_failures_unlogged: AtomicUsize,
    /// When a failed authentication was last logged.
    auth_logged_at: Mutex<Option<Instant>>,
    /// Tokens reserved per admitted request (`rate_limit_token_reserve`).
    reserve: u64,
    /// Requests of one key at once (`rate_limit_concurrency`), and how long
    /// a place in the shared count outlives a replica that dies holding it
    /// (the longest a request may run), in ms.
    concurrency: Option<u32>,
    hold_ms: u64,
    /// The budgets shared by replicas, when `limits_backend = "redis"`.
    shared: Option<SharedLimits>,
    fallback: LimitsFallback,
    /// When the shared store's absence was last logged.
    fallback_logged_at: Mutex<Option<Instant>>,
}

/// The least time between two log lines about failed authentications.
const AUTH_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The token buckets of one key.
struct KeyBuckets {
    /// Requests left in the burst, and when it was last refilled.
    requests: (f64, Instant),
    /// Model tokens left this minute (negative: in debt after a large
    /// request), and when it was last refilled.
    tokens: (f64, Instant),
    /// The key's requests running now (`rate_limit_concurrency`).
    running: u32,
}

/// Who is calling: the index of the key they presented, the tokens
/// reserved for the request, and where they were reserved. Copy and small
/// so it can travel with a request to settle its tokens at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    index: usize,
    reserved: u64,
    /// Reserved in the shared store (else in this process).
    shared: bool,
    /// The request's place among its key's running requests
    /// (`rate_limit_concurrency`), freed when it is settled.
    ticket: Option<u64>,
}

/// Holds a slot; dropping it frees the slot.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(settings: &GatewaySettings, keys: Vec<ApiKey>) -> Self {
        Self::new_at(settings, keys, Instant::now())
    }

    /// As [`Admission::new`], with every bucket full at `now`: the clock is
    /// a parameter so a test can move it.
    fn new_at(settings: &GatewaySettings, keys: Vec<ApiKey>, now: Instant) -> Self {
        let burst = f64::from(settings.rate_limit_burst.max(1));
        let tpm = (settings.rate_limit_tpm > 0).then_some(settings.rate_limit_tpm as f64);
        let buckets = keys
            .iter()
            .map(|_| {
                Mutex::new(KeyBuckets {
                    requests: (burst, now),
                    tokens: (tpm.unwrap_or(0.0), now),
                    running: 0,
                })
            })
            .collect();
        Self {
            keys,
            slots: std::sync::Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            max_queued: settings.max_queued,
            queued: AtomicUsize::new(0),
            rate: (settings.rate_limit_rps > 0.0).then_some((settings.rate_limit_rps, burst)),
            tpm,
            buckets,
            draining: AtomicBool::new(false),
            auth_failures_unlogged: AtomicUsize::new(0),
            auth_logged_at: Mutex::new(None),
            reserve: if tpm.is_some() { settings.rate_limit_token_reserve } else { 0 },
            concurrency: (settings.rate_limit_concurrency > 0).then_some(settings.rate_limit_concurrency),
            hold_ms: settings.request_timeout_ms.saturating_add(5_000),
            shared: None,
            fallback: settings.limits_fallback,
            fallback_logged_at: Mutex::new(None),
        }
    }

    /// Counts the per-key budgets in `shared` (Redis) from now on.
    pub fn with_shared(mut self, shared: SharedLimits) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Logs a failed authentication (why, never the key: an unknown key is
    /// as secret as a known one), at most once per [`AUTH_LOG_INTERVAL`],
    /// with the count of those not logged in between.
    fn auth_failed(&self, reason: &'static str) -> Status {
        let now = Instant::now();
        let due = match self.auth_logged_at.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| now.duration_since(t) >= AUTH_LOG_INTERVAL);
                if due {
                    *last = Some(now);
                }
                due
            }
            Err(_) => false,
        };
        if due {
            let suppressed = self.auth_failures_unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(reason, suppressed, "authentication failed");
        } else {
            self.auth_failures_unlogged.fetch_add(1, Ordering::Relaxed);
        }
        Status::unauthenticated(reason)
    }

    /// Hashes plain keys (from the environment or a test) for [`Admission::new`].
    pub fn plain_keys(keys: &[String], source: &str) -> Vec<ApiKey> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| ApiKey { digest: keys::digest(k), label: format!("{source}#{}", i + 1) })
            .collect()
    }

    /// Reads the keys from the variable `settings.api_keys_env` names.
    pub fn keys_from_env(settings: &GatewaySettings) -> Vec<ApiKey> {
        let Some(var) = settings.api_keys_env.as_deref() else { return Vec::new() };
        let plain: Vec<String> = std::env::var(var)
            .map(|v| v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        Self::plain_keys(&plain, var)
    }

    /// Stops admitting: later calls get UNAVAILABLE.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.slots.available_permits())
    }

    /// Callers waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Who owns what a caller stores (its batch jobs): the hex SHA-256
    /// digest of its key, which stays the same when the key is relabelled
    /// or the key list reordered (an environment key's label is its
    /// position). The digest is what the key file already holds; it is
    /// never logged. `None` without a key (no keys configured).
    pub fn identity(&self, caller: Option<Caller>) -> Option<String> {
        let key = self.keys.get(caller?.index)?;
        Some(key.digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The label of a caller's key, for logs.
    pub fn label(&self, caller: Caller) -> &str {
        self.keys.get(caller.index).map(|k| k.label.as_str()).unwrap_or("")
    }

    /// Checks the caller's key and its request rate, for a call that runs
    /// no model (its token budget is neither checked nor charged: a key
    /// that spent it may still read its jobs). `None` when no keys are
    /// configured (nothing to check, nothing to charge).
    pub async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Caller>, Status> {
        self.check(metadata, false).await
    }

    /// As [`Admission::authenticate`], for a request that runs the mesh:
    /// its tokens are reserved, to be settled by a [`Settlement`].
    pub async fn authenticate_request(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Caller>, Status> {
        self.check(metadata, true).await
    }

    async fn check(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        model: bool,
    ) -> Result<Option<Caller>, Status> {
        let Some(index) = self.key_index(metadata)? else {
            return Ok(None);
        };
        let tpm = if model { self.tpm } else { None };
        let concurrency = if model { self.concurrency } else { None };
        if self.rate.is_none() && tpm.is_none() && concurrency.is_none() {
            return Ok(Some(Caller { index, reserved: 0, shared: false, ticket: None }));
        }
        if self.shared.is_some() {
            let ask = SharedAsk {
                rate: self.rate,
                tpm,
                reserve: if model { self.reserve } else { 0 },
                concurrency: concurrency
                    .map(|limit| (limit, uuid::Uuid::new_v4().as_u64_pair().0 >> 1, self.hold_ms)),
            };
            return self.charge_shared(index, ask).await.map(Some);
        }
        self.charge_request(index, Instant::now(), model)
    }

    /// Charges a request (with `rate`) or a batch item (without) in the
    /// shared store; while it is unreachable, as `limits_fallback` says.
    async fn charge_shared(&self, index: usize, ask: SharedAsk) -> Result<Caller, Status> {
        let (Some(shared), Some(key)) =
            (&self.shared, self.identity(Some(Caller { index, reserved: 0, shared: true, ticket: None })))
        else {
            return Err(Status::internal("shared limits missing for a configured key"));
        };
        match shared.admit(&key, ask).await {
            Ok(Verdict::Admitted) => Ok(Caller {
                index,
                reserved: ask.reserve,
                shared: true,
                ticket: ask.concurrency.map(|(_, member, _)| member),
            }),
            Ok(Verdict::Rate(wait)) => Err(self.rate_refusal(wait)),
            Ok(Verdict::Tokens(wait)) => Err(self.token_refusal(wait)),
            Ok(Verdict::Concurrency) => Err(self.concurrency_refusal()),
            Err(e) => {
                let local = self.fallback == LimitsFallback::Local;
                let outcome = if local { "local" } else { "refused" };
                crate::telemetry::metrics::get()
                    .limits_fallback
                    .add(1, &[opentelemetry::KeyValue::new("outcome", outcome)]);
                if self.fallback_due() {
                    tracing::warn!(error = %e, fallback = outcome, "the shared limits store (redis) is unreachable");
                }
                if local {
                    if ask.rate.is_some() {
                        let model = ask.tpm.is_some() || ask.concurrency.is_some();
                        let caller = self.charge_request(index, Instant::now(), model)?;
                        return Ok(caller.unwrap_or(Caller {
                            index,
                            reserved: 0,
                            shared: false,
                            ticket: None,
                        }));
                    }
                    return Ok(Caller { index, reserved: 0, shared: false, ticket: None });
                }
                Err(Status::unavailable(
                    "the per-key limits store is unreachable and gateway.limits_fallback is fail_closed; retry later",
                ))
            }
        }
    }

    /// Whether the shared store's absence is due a log line (one per
    /// [`AUTH_LOG_INTERVAL`]).
    fn fallback_due(&self) -> bool {
        let now = Instant::now();
        match self.fallback_logged_at.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| now.duration_since(t) >= AUTH_LOG_INTERVAL);
                if due {
                    *last = Some(now);
                }
                due
            }
            Err(_) => false,
        }
    }

    /// Reserves a batch item's tokens from its owner's budget (the owner
    /// is the key's identity, [`Admission::identity`]). `Ok(None)`: the
    /// owner is no configured key, or no budget applies. `Err(wait)`: the
    /// budget is spent; try the item again after `wait` seconds.
    pub async fn charge_item(&self, owner: &str) -> Result<Option<Caller>, f64> {
        let Some(tpm) = self.tpm else { return Ok(None) };
        let Some(index) = (0..self.keys.len()).find(|&i| {
            self.identity(Some(Caller { index: i, reserved: 0, shared: false, ticket: None })).as_deref()
                == Some(owner)
        }) else {
            return Ok(None);
        };
        if self.shared.is_some() {
            let ask = SharedAsk { rate: None, tpm: Some(tpm), reserve: self.reserve, concurrency: None };
            return match self.charge_shared(index, ask).await {
                Ok(caller) => Ok(Some(caller)),
                Err(status) => Err(retry_after_of(&status).unwrap_or(1.0)),
            };
        }
        let Some(bucket) = self.buckets.get(index) else { return Ok(None) };
        let mut b = bucket.lock().map_err(|_| 1.0)?;
        let now = Instant::now();
        let (tokens, last) = &mut b.tokens;
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * tpm / 60.0).min(tpm);
        *last = (*last).max(now);
        if *tokens <= 0.0 {
            return Err(((1.0 - *tokens) * 60.0 / tpm).ceil());
        }
        *tokens -= self.reserve as f64;
        Ok(Some(Caller { index, reserved: self.reserve, shared: false, ticket: None }))
    }

    fn concurrency_refusal(&self) -> Status {
        retry_after(
            Status::resource_exhausted(format!(
                "this API key already runs {} requests at once (gateway.rate_limit_concurrency); retry when one ends",
                self.concurrency.unwrap_or(0)
            )),
            1.0,
        )
    }

    fn rate_refusal(&self, wait: f64) -> Status {
        let rps = self.rate.map_or(0.0, |r| r.0);
        retry_after(
            Status::resource_exhausted(format!(
                "rate limit of {rps} requests/s for this API key (gateway.rate_limit_rps) exceeded; \
                 retry after {:.0} ms",
                wait * 1000.0
            )),
            wait,
        )
    }

    fn token_refusal(&self, wait: f64) -> Status {
        let tpm = self.tpm.unwrap_or(0.0);
        let wait = wait.ceil();
        retry_after(
            Status::resource_exhausted(format!(
                "token limit of {tpm} model tokens per minute for this API key \
                 (gateway.rate_limit_tpm) exceeded; retry after {wait:.0} s"
            )),
            wait,
        )
    }

    /// As [`Admission::authenticate`], with the buckets refilled up to
    /// `now` (a test passes its own clock; the refill never looks at the
    /// wall clock itself). A `now` earlier than a bucket's last refill adds
    /// nothing. Local budgets only.
    #[cfg(test)]
    fn authenticate_at(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        now: Instant,
    ) -> Result<Option<Caller>, Status> {
        let Some(index) = self.key_index(metadata)? else {
            return Ok(None);
        };
        self.charge_request(index, now, true)
    }

    /// Checks the caller's key only, charging nothing (a front door whose
    /// calls are checked and charged again by the service they reach).
    pub fn verify_key(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        self.key_index(metadata).map(|_| ())
    }

    /// The index of the caller's key; `None` when no keys are configured.
    fn key_index(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Option<usize>, Status> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let Some(header) = metadata.get("authorization") else {
            return Err(self.auth_failed("missing `authorization: Bearer <key>` metadata"));
        };
        // Present but not a bearer token: say so, so a client sending
        // `Basic …` or a bare key is not told the header is missing.
        let presented = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let Some(presented) = presented else {
            return Err(self.auth_failed("malformed `authorization` metadata: expected `Bearer <key>`"));
        };
        let wanted = keys::digest(presented);
        // Every digest is compared, so the time taken does not depend on
        // where (or whether) the key is in the list.
        let mut found = None;
        for (i, key) in self.keys.iter().enumerate() {
            if keys::digests_equal(&key.digest, &wanted) {
                found = Some(i);
            }
        }
        found.map(Some).ok_or_else(|| self.auth_failed("API key not recognised"))
    }

    /// Takes one request from key `index`'s buckets, refilled up to `now`;
    /// for a `model` request also checks the token budget and reserves the
    /// request's tokens.
    fn charge_request(&self, index: usize, now: Instant, model: bool) -> Result<Option<Caller>, Status> {
        let tpm = if model { self.tpm } else { None };
        let reserve = if model { self.reserve } else { 0 };
        let Some(bucket) = self.buckets.get(index) else {
            return Err(Status::internal("rate limiter state missing for a configured key"));
        };
        let mut b = bucket.lock().map_err(|_| Status::internal("rate limiter state poisoned"))?;
        let concurrency = if model { self.concurrency } else { None };
        if concurrency.is_some_and(|limit| b.running >= limit) {
            return Err(self.concurrency_refusal());
        }
        if let Some(tpm) = tpm {
            let (tokens, last) = &mut b.tokens;
            *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * tpm / 60.0).min(tpm);
            *last = (*last).max(now);
            if *tokens <= 0.0 {
                return Err(self.token_refusal((1.0 - *tokens) * 60.0 / tpm));
            }
        }
        if let Some((rps, burst)) = self.rate {
            let (tokens, last) = &mut b.requests;
            *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rps).min(burst);
            *last = (*last).max(now);
            if *tokens < 1.0 {
                return Err(self.rate_refusal((1.0 - *tokens) / rps));
            }
            *tokens -= 1.0;
        }
        if tpm.is_some() {
            b.tokens.0 -= reserve as f64;
        }
        let ticket = concurrency.map(|_| {
            b.running += 1;
            0
        });
        Ok(Some(Caller { index, reserved: reserve, shared: false, ticket }))
    }

    /// Settles a finished request's model tokens against what was reserved
    /// for it. The budget may go into debt: the request already ran, and
    /// the debt refuses the key's next requests until it is paid back by
    /// the refill.
    pub fn settle(&self, caller: Option<Caller>, used: u64) {
        if let Some(shared) = self.shared_settlement(caller, used) {
            tokio::spawn(shared);
            return;
        }
        self.settle_local(caller, used);
    }

    /// As [`Admission::settle`], waiting for the shared store: a request
    /// that ends this way has given its place back before its caller hears
    /// the answer, so the caller's next request finds it free.
    pub async fn settle_now(&self, caller: Option<Caller>, used: u64) {
        match self.shared_settlement(caller, used) {
            Some(shared) => shared.await,
            None => self.settle_local(caller, used),
        }
    }

    /// The Redis call that settles a caller admitted by the shared store;
    /// `None` for one admitted here (or nothing to settle).
    fn shared_settlement(
        &self,
        caller: Option<Caller>,
        used: u64,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let caller = caller.filter(|c| c.shared)?;
        if self.tpm.is_none() && caller.ticket.is_none() {
            return None;
        }
        let delta = used as i64 - caller.reserved as i64;
        let (shared, key, tpm) = (self.shared.clone()?, self.identity(Some(caller))?, self.tpm);
        Some(async move {
            if let Err(e) = shared.settle(&key, tpm, delta, caller.ticket).await {
                tracing::warn!(error = %e, tokens = delta, "cannot settle a request in redis");
            }
        })
    }

    fn settle_local(&self, caller: Option<Caller>, used: u64) {
        let Some(caller) = caller else { return };
        if self.tpm.is_none() && caller.ticket.is_none() {
            return;
        }
        if caller.shared {
            return;
        }
        let delta = used as i64 - caller.reserved as i64;
        let Some(bucket) = self.buckets.get(caller.index) else { return };
        match bucket.lock() {
            Ok(mut b) => {
                if let Some(tpm) = self.tpm {
                    b.tokens.0 = (b.tokens.0 - delta as f64).min(tpm);
                }
                if caller.ticket.is_some() {
                    b.running = b.running.saturating_sub(1);
                }
            }
            // A poisoned lock loses one charge; refusing service for it
            // would be worse.
            Err(_) => tracing::error!(key = %self.label(caller), "token bucket poisoned; charge dropped"),
        }
    }

    /// Takes a slot, waiting in the bounded queue at most until `deadline`;
    /// sheds with RESOURCE_EXHAUSTED when the queue is full too.
    pub async fn admit(&self, deadline: tokio::time::Instant) -> Result<Admitted, Status> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the gateway is shutting down; retry on another instance"));
        }
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Admitted { _permit: permit });
        }
        // The queue place is given back however the wait ends, a client
        // that hangs up (this future dropped) included.
        let place = QueuePlace(&self.queued);
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            drop(place);
            return Err(Status::resource_exhausted(format!(
                "the gateway is at capacity ({} requests in flight, {} queued); retry with backoff",
                self.max_in_flight, self.max_queued
            )));
        }
        let waited = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await;
        drop(place);
        match waited {
            Ok(Ok(permit)) => Ok(Admitted { _permit: permit }),
            Ok(Err(_)) => Err(Status::unavailable("the gateway is shutting down")),
            Err(_) => Err(Status::deadline_exceeded("deadline passed while queued for a slot")),
        }
    }

    /// Waits until no request holds a slot, or `grace` has passed.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let until = Instant::now() + grace;
        while self.in_flight() > 0 {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// One place in the admission queue, counted in `queued` from just
/// before it is created until it is dropped.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The seconds a refusal's `retry-after` entry says.
fn retry_after_of(status: &Status) -> Option<f64> {
    status.metadata().get("retry-after")?.to_str().ok()?.parse().ok()
}

/// A request's token charge, settled once when it ends: with the tokens
/// its finished model calls used ([`Settlement::meter`] counts them), and
/// if it is dropped unfinished (its client hung up), with at least the
/// reservation, since a model call may have been under way.
pub struct Settlement {
    admission: std::sync::Arc<Admission>,
    caller: Option<Caller>,
    meter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    settled: bool,
    /// Set once the mesh has the request: from then on a drop may leave a
    /// model call unaccounted for. Before, nothing ran: a drop hands the
    /// reservation back.
    started: bool,
}

impl Settlement {
    pub fn new(admission: std::sync::Arc<Admission>, caller: Option<Caller>) -> Self {
        Settlement { admission, caller, meter: Default::default(), settled: false, started: false }
    }

    /// The mesh is about to run the request.
    pub fn start(&mut self) {
        self.started = true;
    }

    /// Where the mesh adds each finished model call's tokens (`None`: no
    /// budget to settle, nothing to count).
    pub fn meter(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        (self.caller.is_some() && self.admission.tpm.is_some()).then(|| self.meter.clone())
    }

    /// The request ended (answered or failed): charge what it used.
    pub fn finish(mut self) {
        self.settled = true;
        self.admission.settle(self.caller, self.meter.load(Ordering::Relaxed));
    }

    /// As [`Settlement::finish`], waiting until the shared store has it
    /// (the request's concurrent place is free before the answer is sent).
    pub async fn finish_now(mut self) {
        self.settled = true;
        let (admission, caller) = (self.admission.clone(), self.caller);
        admission.settle_now(caller, self.meter.load(Ordering::Relaxed)).await;
    }
}

impl crate::batch::runner::ItemCharge for Settlement {
    fn meter(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        Settlement::meter(self)
    }

    fn finish(self: Box<Self>) {
        Settlement::finish(*self);
    }
}

/// The per-key token budgets, as the batch runner charges its items to
/// them.
pub struct KeyBudgets(pub std::sync::Arc<Admission>);

impl crate::batch::runner::ItemBudget for KeyBudgets {
    fn reserve<'a>(
        &'a self,
        owner: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<Box<dyn crate::batch::runner::ItemCharge>>, f64>> {
        Box::pin(async move {
            let Some(caller) = self.0.charge_item(owner).await? else { return Ok(None) };
            let mut settlement = Settlement::new(self.0.clone(), Some(caller));
            settlement.start();
            Ok(Some(Box::new(settlement) as Box<dyn crate::batch::runner::ItemCharge>))
        })
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if !self.settled {
            let used = self.meter.load(Ordering::Relaxed);
            let floor = if self.started { self.caller.map_or(0, |c| c.reserved) } else { 0 };
            self.admission.settle(self.caller, used.max(floor));
        }
    }
}

/// `status` with a `retry-after` entry: whole seconds (at least 1) before
/// the caller may try again, for clients and the HTTP API's `Retry-After`.
fn retry_after(mut status: Status, seconds: f64) -> Status {
    let whole = seconds.ceil().max(1.0) as u64;
    if let Ok(value) = whole.to_string().parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

#[cfg(test)]
mod tests;
