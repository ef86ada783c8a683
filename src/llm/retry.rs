//! Failure handling around one remote model: a per-call timeout, retries with
//! exponential backoff and jitter for transient failures (HTTP 429, 5xx,
//! connection errors, timeouts) that honour `Retry-After`, and, when the
//! profile stays down after its last retry, the `fallback` profile's client.
//!
//! Permanent failures (400, 401, 403, 404, 422, an unusable answer) are
//! returned at once: repeating the same request cannot fix them.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{LlmClient, LlmError, LlmRequest, LlmResponse, SharedLlm, TokenSink};
use crate::config::ModelProfile;

/// Per-call timeout when the profile sets none: long enough for a slow
/// completion of a few hundred tokens.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Retries after the first call when the profile sets none.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// First backoff delay; doubled per retry.
const BASE_DELAY: Duration = Duration::from_millis(200);
/// Longest backoff delay, and the longest `Retry-After` honoured, so one
/// bad header cannot park a request for an hour.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// How one call failed, as the retry loop needs to know it.
#[derive(Debug)]
pub struct AttemptFailure {
    pub error: LlmError,
    /// `Retry-After` from the server, when it sent one.
    pub retry_after: Option<Duration>,
    /// True when deltas already reached the caller's sink: a retry would
    /// send the caller a second copy of the text, so it is not retried.
    pub streamed: bool,
}

impl From<LlmError> for AttemptFailure {
    fn from(error: LlmError) -> Self {
        Self { error, retry_after: None, streamed: false }
    }
}

/// One call to a remote model, with no retry of its own.
pub trait Attempt: Send + Sync {
    fn model(&self) -> &str;
    fn provider(&self) -> &str;
    fn attempt<'a>(
        &'a self,
        request: &'a LlmRequest,
        tokens: Option<&'a TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, AttemptFailure>>;
}

/// An [`LlmClient`] that adds timeout, retries and fallback to an
/// [`Attempt`].
pub struct RetryingClient {
    profile: String,
    inner: std::sync::Arc<dyn Attempt>,
    policy: RetryPolicy,
    fallback: Option<SharedLlm>,
}

impl RetryingClient {
    pub fn new(
        profile_name: &str,
        profile: &ModelProfile,
        inner: std::sync::Arc<dyn Attempt>,
        fallback: Option<SharedLlm>,
    ) -> Self {
        Self { profile: profile_name.to_string(), inner, policy: RetryPolicy::of(profile), fallback }
    }

    async fn run(&self, request: &LlmRequest, tokens: Option<TokenSink>) -> Result<LlmResponse, LlmError> {
        let outcome = self
            .policy
            .run(&self.profile, &request.agent, self.inner.model(), |_| {
                self.inner.attempt(request, tokens.as_ref())
            })
            .await;
        let (last_error, attempt, mut failed) = match outcome {
            Ok(done) => {
                let mut resp = done.value;
                resp.attempts = done.attempts;
                resp.failed_attempts = done.failed;
                tracing::debug!(
                    profile = %self.profile,
                    agent = %request.agent,
                    model = %resp.model,
                    input_tokens = resp.usage.input_tokens,
                    output_tokens = resp.usage.output_tokens,
                    tokens_estimated = resp.usage.estimated,
                    cost_usd = resp.cost_usd,
                    attempts = resp.attempts,
                    "model call"
                );
                return Ok(resp);
            }
            Err(gave_up) => (gave_up.failure, gave_up.attempts, gave_up.failed),
        };
        let fallback = match &self.fallback {
            Some(f) if last_error.error.is_transient() && !last_error.streamed => f,
            _ => return Err(last_error.error),
        };
        tracing::warn!(
            profile = %self.profile,
            agent = %request.agent,
            fallback_model = fallback.model(),
            "profile still failing after its retries; using the fallback profile"
        );
        match fallback.complete(request, tokens).await {
            Ok(mut resp) => {
                failed.extend(std::mem::take(&mut resp.failed_attempts));
                resp.failed_attempts = failed;
                resp.attempts += attempt;
                Ok(resp)
            }
            Err(e) => Err(e),
        }
    }
}

/// A call that succeeded, possibly after retries.
#[derive(Debug)]
pub struct Retried<T> {
    pub value: T,
    /// Calls made, the successful one included.
    pub attempts: u32,
    /// Error kinds of the failed calls, in order.
    pub failed: Vec<String>,
}

/// A call that failed for good: its last failure and what came before.
#[derive(Debug)]
pub struct GaveUp {
    pub failure: AttemptFailure,
    pub attempts: u32,
    pub failed: Vec<String>,
}

/// Timeout and retry settings of one profile, shared by chat completions
/// and embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Per-call timeout.
    pub timeout: Duration,
    /// Retries after the first call.
    pub max_retries: u32,
}

impl RetryPolicy {
    /// The profile's `timeout_ms` and `max_retries`, or the defaults.
    pub fn of(profile: &ModelProfile) -> Self {
        Self {
            timeout: Duration::from_millis(profile.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).max(1)),
            max_retries: profile.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        }
    }

    /// Calls `call` (given the 1-based attempt number) under the timeout,
    /// retrying transient failures after [`RetryPolicy::delay`]. `profile`,
    /// `caller` and `model` name the call in logs and timeout errors.
    pub async fn run<'a, T, F>(
        &self,
        profile: &str,
        caller: &str,
        model: &str,
        mut call: F,
    ) -> Result<Retried<T>, GaveUp>
    where
        F: FnMut(u32) -> BoxFuture<'a, Result<T, AttemptFailure>>,
    {
        let mut failed: Vec<String> = Vec::new();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let failure = match tokio::time::timeout(self.timeout, call(attempt)).await {
                Ok(Ok(value)) => return Ok(Retried { value, attempts: attempt, failed }),
                Ok(Err(failure)) => failure,
                Err(_) => AttemptFailure::from(LlmError::Timeout {
                    model: model.to_string(),
                    timeout_ms: self.timeout.as_millis() as u64,
                }),
            };
            failed.push(failure.error.kind());
            let retry = failure.error.is_transient() && !failure.streamed && attempt <= self.max_retries;
            tracing::warn!(
                profile = %profile,
                agent = %caller,
                attempt,
                error = %failure.error,
                retry,
                "model call failed"
            );
            if !retry {
                return Err(GaveUp { failure, attempts: attempt, failed });
            }
            tokio::time::sleep(self.delay(attempt, failure.retry_after)).await;
        }
    }

    /// The wait before retry number `attempt` (1-based): the server's
    /// `Retry-After` when it gave one, else exponential backoff with jitter
    /// (a random share between half and all of the doubled delay), so many
    /// callers that failed together do not come back together.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(MAX_DELAY);
        }
        let exp = BASE_DELAY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(MAX_DELAY);
        // A randomly keyed hasher is a random number source without a
        // dependency; the quality needed here is low.
        let random = RandomState::new().hash_one(attempt) % 1000;
        let half = exp / 2;
        half + half.mul_f64(random as f64 / 1000.0)
    }
}

impl LlmClient for RetryingClient {
    fn model(&self) -> &str {
        self.inner.model()
    }

    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(self.run(request, tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelProfile;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let policy = RetryPolicy::of(&ModelProfile::offline());
        for attempt in 1..=4 {
            let full = BASE_DELAY * (1 << (attempt - 1));
            let d = policy.delay(attempt, None);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not within [{:?}, {full:?}]",
                full / 2
            );
        }
        assert!(policy.delay(40, None) <= MAX_DELAY);
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3600))), MAX_DELAY);
    }
}
