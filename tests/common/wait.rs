//! Waiting on a condition instead of sleeping for a guessed time: a test
//! polls what it waits for until it holds, and fails naming it when the
//! deadline passes first. The deadline only bounds a hang; it is never
//! what a test asserts.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a test waits for something that should happen promptly
/// before it fails: long enough for a loaded 2-core build machine.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(10);

/// Blocks until `condition` holds; panics naming `what` once `within` has
/// passed without it.
#[track_caller]
pub fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        if Instant::now() >= deadline {
            panic!("waited {within:?} for {what}; it never happened");
        }
        std::thread::sleep(POLL);
    }
}

/// Awaits until `condition` resolves to true; panics naming `what` once
/// `within` has passed without it.
pub async fn until<F: Future<Output = bool>>(what: &str, within: Duration, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    while !condition().await {
        if Instant::now() >= deadline {
            panic!("waited {within:?} for {what}; it never happened");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the gateway at `target` (http://HOST:PORT) answers
/// `grpc.health.v1.Health/Check` with SERVING now.
pub async fn is_serving(target: &str) -> bool {
    let Ok(endpoint) = Channel::from_shared(target.to_string()) else { return false };
    let Ok(channel) = endpoint.connect().await else { return false };
    let check = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
    check.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

/// Waits until the gateway at `target` reports SERVING (health, not a
/// call under test: the call then runs once).
pub async fn serving(target: &str) {
    assert!(serving_within(target, PATIENCE).await, "waited {PATIENCE:?} for {target} to report SERVING");
}

/// Whether the gateway at `target` reports SERVING within `within`.
pub async fn serving_within(target: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !is_serving(target).await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// [`serving`] for a test without a runtime of its own.
pub fn serving_blocking(target: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(serving(target));
}
