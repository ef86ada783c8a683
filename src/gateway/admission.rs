//! Admission: API keys, per-key rate limits, and the global bound on
//! requests in flight (load shedding). Everything here answers at once: a
//! refused request never waits behind admitted ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::config::GatewaySettings;

/// The gateway's admission state, shared by all calls.
pub struct Admission {
    keys: Vec<String>,
    slots: std::sync::Arc<Semaphore>,
    max_in_flight: usize,
    max_queued: usize,
    queued: AtomicUsize,
    rate: Option<(f64, f64)>,
    /// Token buckets per key: (tokens, last refill). Bounded by the number
    /// of configured keys: unknown keys are refused before they get one.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    draining: AtomicBool,
}

/// Holds a slot; dropping it frees the slot.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(settings: &GatewaySettings, keys: Vec<String>) -> Self {
        Self {
            keys,
            slots: std::sync::Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            max_queued: settings.max_queued,
            queued: AtomicUsize::new(0),
            rate: (settings.rate_limit_rps > 0.0)
                .then_some((settings.rate_limit_rps, f64::from(settings.rate_limit_burst.max(1)))),
            buckets: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
        }
    }

    /// Reads the keys from the variable `settings.api_keys_env` names.
    pub fn keys_from_env(settings: &GatewaySettings) -> Vec<String> {
        settings
            .api_keys_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .map(|v| v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Stops admitting: later calls get UNAVAILABLE.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.slots.available_permits())
    }

    /// Checks the caller's key and rate limit. Returns the key (for logs).
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Option<String>, Status> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(Status::unauthenticated("missing `authorization: Bearer <key>` metadata"));
        };
        let Some(key) = self.keys.iter().find(|k| constant_time_eq(k.as_bytes(), presented.as_bytes()))
        else {
            return Err(Status::unauthenticated("API key not recognised"));
        };
        if let Some((rps, burst)) = self.rate {
            let now = Instant::now();
            let mut buckets =
                self.buckets.lock().map_err(|_| Status::internal("rate limiter state poisoned"))?;
            let (tokens, last) = buckets.entry(key.clone()).or_insert((burst, now));
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rps).min(burst);
            *last = now;
            if *tokens < 1.0 {
                return Err(Status::resource_exhausted(format!(
                    "rate limit of {rps} requests/s for this API key exceeded; retry after {:.0} ms",
                    (1.0 - *tokens) / rps * 1000.0
                )));
            }
            *tokens -= 1.0;
        }
        Ok(Some(key.clone()))
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
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::resource_exhausted(format!(
                "the gateway is at capacity ({} requests in flight, {} queued); retry with backoff",
                self.max_in_flight, self.max_queued
            )));
        }
        let waited = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
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

/// Compares keys without an early exit, so timing does not reveal how much
/// of a key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    fn keys_and_rate_limits() {
        let settings = GatewaySettings { rate_limit_rps: 1.0, rate_limit_burst: 2, ..Default::default() };
        let a = Admission::new(&settings, vec!["k1".into()]);
        assert_eq!(a.authenticate(&meta(None)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(
            a.authenticate(&meta(Some("Bearer nope"))).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(a.authenticate(&meta(Some("Bearer k1"))).is_ok());
        assert!(a.authenticate(&meta(Some("Bearer k1"))).is_ok());
        assert_eq!(
            a.authenticate(&meta(Some("Bearer k1"))).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        let open = Admission::new(&GatewaySettings::default(), vec![]);
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
}
