//! Admission: API keys, per-key rate limits (requests per second and model
//! tokens per minute), and the global bound on requests in flight (load
//! shedding). Everything here answers at once: a refused request never
//! waits behind admitted ones.
//!
//! Keys are held only as SHA-256 digests ([`crate::config::keys`]); a
//! presented key is hashed and compared with each digest in constant time.
//! No key is ever logged: logs and errors use the key's label.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::config::GatewaySettings;
use crate::config::keys::{self, ApiKey};

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
}

/// Who is calling: the index of the key they presented. Copy and small so
/// it can travel with a request to charge its tokens at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(usize);

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
            .map(|_| Mutex::new(KeyBuckets { requests: (burst, now), tokens: (tpm.unwrap_or(0.0), now) }))
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
        }
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

    /// Who owns what a caller stores (its batch jobs): the hex SHA-256
    /// digest of its key, which stays the same when the key is relabelled
    /// or the key list reordered (an environment key's label is its
    /// position). The digest is what the key file already holds; it is
    /// never logged. `None` without a key (no keys configured).
    pub fn identity(&self, caller: Option<Caller>) -> Option<String> {
        let key = self.keys.get(caller?.0)?;
        Some(key.digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The label of a caller's key, for logs.
    pub fn label(&self, caller: Caller) -> &str {
        self.keys.get(caller.0).map(|k| k.label.as_str()).unwrap_or("")
    }

    /// Checks the caller's key and its rate limits. `None` when no keys are
    /// configured (nothing to check, nothing to charge).
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Option<Caller>, Status> {
        self.authenticate_at(metadata, Instant::now())
    }

    /// As [`Admission::authenticate`], with the buckets refilled up to
    /// `now` (a test passes its own clock; the refill never looks at the
    /// wall clock itself). A `now` earlier than a bucket's last refill adds
    /// nothing.
    fn authenticate_at(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        now: Instant,
    ) -> Result<Option<Caller>, Status> {
        let Some(index) = self.key_index(metadata)? else {
            return Ok(None);
        };
        self.charge_request(index, now)
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

    /// Takes one request (and checks the token budget) from key `index`'s
    /// buckets, refilled up to `now`.
    fn charge_request(&self, index: usize, now: Instant) -> Result<Option<Caller>, Status> {
        let Some(bucket) = self.buckets.get(index) else {
            return Err(Status::internal("rate limiter state missing for a configured key"));
        };
        let mut b = bucket.lock().map_err(|_| Status::internal("rate limiter state poisoned"))?;
        if let Some(tpm) = self.tpm {
            let (tokens, last) = &mut b.tokens;
            *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * tpm / 60.0).min(tpm);
            *last = (*last).max(now);
            if *tokens <= 0.0 {
                let wait = ((1.0 - *tokens) * 60.0 / tpm).ceil();
                return Err(retry_after(
                    Status::resource_exhausted(format!(
                        "token limit of {tpm} model tokens per minute for this API key \
                         (gateway.rate_limit_tpm) exceeded; retry after {wait:.0} s"
                    )),
                    wait,
                ));
            }
        }
        if let Some((rps, burst)) = self.rate {
            let (tokens, last) = &mut b.requests;
            *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rps).min(burst);
            *last = (*last).max(now);
            if *tokens < 1.0 {
                let wait = (1.0 - *tokens) / rps;
                return Err(retry_after(
                    Status::resource_exhausted(format!(
                        "rate limit of {rps} requests/s for this API key (gateway.rate_limit_rps) exceeded; \
                         retry after {:.0} ms",
                        wait * 1000.0
                    )),
                    wait,
                ));
            }
            *tokens -= 1.0;
        }
        Ok(Some(Caller(index)))
    }

    /// Charges a finished request's model tokens to its caller's
    /// tokens-per-minute budget. The budget may go into debt: the request
    /// already ran, and the debt refuses the key's next requests until it
    /// is paid back by the refill.
    pub fn charge_tokens(&self, caller: Option<Caller>, tokens: u64) {
        let (Some(caller), Some(_)) = (caller, self.tpm) else { return };
        let Some(bucket) = self.buckets.get(caller.0) else { return };
        match bucket.lock() {
            Ok(mut b) => b.tokens.0 -= tokens as f64,
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
mod tests {
    use super::*;

    fn meta(auth: Option<&str>) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        if let Some(a) = auth {
            m.insert("authorization", a.parse().unwrap());
        }
        m
    }

    #[test]
    fn failed_authentications_are_logged_at_most_once_per_interval() {
        let a = Admission::new(&GatewaySettings::default(), Admission::plain_keys(&["k1".into()], "test"));
        for _ in 0..5 {
            assert!(a.authenticate(&meta(Some("Bearer wrong"))).is_err());
        }
        // The first was logged; the next four wait for the next line.
        assert_eq!(a.auth_failures_unlogged.load(Ordering::Relaxed), 4);
        // A good key is not a failure.
        assert!(a.authenticate(&meta(Some("Bearer k1"))).is_ok());
        assert_eq!(a.auth_failures_unlogged.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn keys_and_rate_limits() {
        let settings = GatewaySettings { rate_limit_rps: 1.0, rate_limit_burst: 2, ..Default::default() };
        let a = Admission::new(&settings, Admission::plain_keys(&["k1".into()], "test"));
        assert_eq!(a.authenticate(&meta(None)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(
            a.authenticate(&meta(Some("Bearer nope"))).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(a.authenticate(&meta(None)).unwrap_err().message().starts_with("missing"));
        for malformed in ["k1", "Basic k1", "Bearer ", "Bearer    "] {
            let err = a.authenticate(&meta(Some(malformed))).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{malformed}");
            assert!(err.message().starts_with("malformed"), "{malformed}: {}", err.message());
        }
        assert!(a.authenticate(&meta(Some("Bearer k1"))).is_ok());
        assert!(a.authenticate(&meta(Some("Bearer k1"))).is_ok());
        assert_eq!(
            a.authenticate(&meta(Some("Bearer k1"))).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        let open = Admission::new(&GatewaySettings::default(), vec![]);
        assert!(open.authenticate(&meta(None)).unwrap().is_none());
        assert!(open.authenticate(&meta(None)).is_ok());
    }

    #[tokio::test]
    async fn sheds_beyond_slots_and_queue() {
        let settings = GatewaySettings { max_in_flight: 1, max_queued: 0, ..Default::default() };
        let a = Admission::new(&settings, vec![]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let held = a.admit(deadline).await.unwrap();
        assert_eq!(a.admit(deadline).await.err().unwrap().code(), tonic::Code::ResourceExhausted);
        drop(held);
        assert!(a.admit(deadline).await.is_ok());
        a.drain();
        assert_eq!(a.admit(deadline).await.err().unwrap().code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_while_queued_gives_its_place_back() {
        let settings = GatewaySettings { max_in_flight: 1, max_queued: 2, ..Default::default() };
        let a = Admission::new(&settings, vec![]);
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let held = a.admit(far).await.unwrap();
        // Ten times the queue's size of callers queue and hang up (their
        // futures dropped while waiting for a slot).
        for _ in 0..10 * settings.max_queued {
            let mut waiting = Box::pin(a.admit(far));
            assert!(futures::poll!(waiting.as_mut()).is_pending(), "queued behind the held slot");
            drop(waiting);
        }
        assert_eq!(a.queued.load(Ordering::SeqCst), 0, "every place was given back");
        // The queue still admits: a waiter gets the slot when it frees.
        let waiter = tokio::spawn({
            let a = std::sync::Arc::new(a);
            async move { a.admit(far).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[test]
    fn tokens_per_minute_are_charged_after_the_request() {
        let settings = GatewaySettings { rate_limit_tpm: 100, ..Default::default() };
        let keys = Admission::plain_keys(&["k1".into(), "k2".into()], "test");
        let a = Admission::new(&settings, keys);
        let caller = a.authenticate(&meta(Some("Bearer k1"))).unwrap();
        assert!(caller.is_some());
        a.charge_tokens(caller, 150);
        let err = a.authenticate(&meta(Some("Bearer k1"))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("gateway.rate_limit_tpm"), "{}", err.message());
        // Another key has its own budget.
        assert!(a.authenticate(&meta(Some("Bearer k2"))).is_ok());
    }

    fn retry_after_secs(s: &Status) -> u64 {
        s.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap()
    }

    #[test]
    fn the_request_bucket_refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let settings = GatewaySettings { rate_limit_rps: 2.0, rate_limit_burst: 2, ..Default::default() };
        let a = Admission::new_at(&settings, Admission::plain_keys(&["k1".into()], "test"), t0);
        let k1 = meta(Some("Bearer k1"));
        // The burst, then a refusal that says how long a token takes.
        assert!(a.authenticate_at(&k1, at(0)).is_ok());
        assert!(a.authenticate_at(&k1, at(0)).is_ok());
        let err = a.authenticate_at(&k1, at(0)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("retry after 500 ms"), "{}", err.message());
        assert_eq!(retry_after_secs(&err), 1);
        // Half a token after 250 ms is not enough; a whole one after 500 ms is.
        assert_eq!(a.authenticate_at(&k1, at(250)).unwrap_err().code(), tonic::Code::ResourceExhausted);
        assert!(a.authenticate_at(&k1, at(500)).is_ok());
        assert_eq!(a.authenticate_at(&k1, at(500)).unwrap_err().code(), tonic::Code::ResourceExhausted);
        // A long idle time refills the burst, never more than the burst.
        assert!(a.authenticate_at(&k1, at(60_000)).is_ok());
        assert!(a.authenticate_at(&k1, at(60_000)).is_ok());
        assert!(a.authenticate_at(&k1, at(60_000)).is_err());
        // A clock read before the last refill adds nothing.
        assert!(a.authenticate_at(&k1, at(59_000)).is_err());
    }

    #[test]
    fn the_token_budget_refills_per_minute_and_pays_back_a_debt() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let settings = GatewaySettings { rate_limit_tpm: 60, ..Default::default() };
        let a = Admission::new_at(&settings, Admission::plain_keys(&["k1".into()], "test"), t0);
        let k1 = meta(Some("Bearer k1"));
        let caller = a.authenticate_at(&k1, at(0)).unwrap();
        // A request of 90 tokens leaves the key 30 in debt: one token a
        // second pays it back, and the key needs one more to be admitted.
        a.charge_tokens(caller, 90);
        let err = a.authenticate_at(&k1, at(0)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(retry_after_secs(&err), 31);
        assert!(err.message().contains("retry after 31 s"), "{}", err.message());
        assert!(a.authenticate_at(&k1, at(30)).is_err(), "a budget of exactly 0 admits nothing");
        let caller = a.authenticate_at(&k1, at(31)).unwrap();
        // An hour idle refills a minute's budget, not more: 61 tokens put
        // the key in debt again.
        a.charge_tokens(caller, 1);
        assert!(a.authenticate_at(&k1, at(3_600)).is_ok());
        a.charge_tokens(caller, 61);
        assert!(a.authenticate_at(&k1, at(3_600)).is_err());
    }
}
