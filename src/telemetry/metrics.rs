//! Metric instruments, created once from the global meter. Before
//! [`super::init`] installs a meter provider (and when export is off) they
//! are no-ops.

use std::sync::OnceLock;

use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};

/// Metric names.
pub const REQUEST_DURATION: &str = "meshops.request.duration";
pub const STEP_DURATION: &str = "meshops.agent.step.duration";
pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const COST: &str = "meshops.cost";
pub const ERRORS: &str = "meshops.errors";
pub const IN_FLIGHT: &str = "meshops.requests.in_flight";
pub const LIMITS_FALLBACK: &str = "meshops.gateway.limits.fallback";
pub const FEEDBACK: &str = "meshops.feedback.score";
pub const ONLINE_SCORE: &str = "meshops.eval.online.score";
pub const ONLINE_SKIPPED: &str = "meshops.eval.online.skipped";

pub struct Metrics {
    /// Seconds per gRPC request, by method and status.
    pub request_duration: Histogram<f64>,
    /// Seconds per agent step, by agent.
    pub step_duration: Histogram<f64>,
    /// Seconds per model call, by model.
    pub operation_duration: Histogram<f64>,
    /// Tokens per model call, by model and type (input/output).
    pub token_usage: Histogram<u64>,
    /// USD, by agent and model (only known prices are added).
    pub cost: Counter<f64>,
    /// Failures, by agent and kind.
    pub errors: Counter<u64>,
    /// Requests being served now.
    pub in_flight: UpDownCounter<i64>,
    /// Per-key limit checks made in this process because the shared
    /// limits store (Redis) could not be reached (`limits_fallback =
    /// "local"`), or refused for it (`fail_closed`), by outcome.
    pub limits_fallback: Counter<u64>,
    /// Users' ratings of answers (`SubmitFeedback`), in [0, 1].
    pub feedback: Histogram<f64>,
    /// Online judges' scores, by judge and variant.
    pub online_score: Histogram<f64>,
    /// Samples not judged online, by reason (queue_full, cost_cap,
    /// judge_failed).
    pub online_skipped: Counter<u64>,
}

/// The instruments (created on first use).
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("meshops");
        Metrics {
            request_duration: meter.f64_histogram(REQUEST_DURATION).with_unit("s").build(),
            step_duration: meter.f64_histogram(STEP_DURATION).with_unit("s").build(),
            operation_duration: meter.f64_histogram(OPERATION_DURATION).with_unit("s").build(),
            token_usage: meter.u64_histogram(TOKEN_USAGE).with_unit("{token}").build(),
            cost: meter.f64_counter(COST).with_unit("USD").build(),
            errors: meter.u64_counter(ERRORS).build(),
            in_flight: meter.i64_up_down_counter(IN_FLIGHT).build(),
            limits_fallback: meter.u64_counter(LIMITS_FALLBACK).build(),
            feedback: meter.f64_histogram(FEEDBACK).build(),
            online_score: meter.f64_histogram(ONLINE_SCORE).build(),
            online_skipped: meter.u64_counter(ONLINE_SKIPPED).build(),
        }
    })
}
