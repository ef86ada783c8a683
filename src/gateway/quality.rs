//! The quality loop at the gateway: A/B assignment of requests that name
//! no variant (`[gateway.ab]`, reloadable), the live record of each answer,
//! and `SubmitFeedback`.

use std::sync::{Arc, RwLock};

use tonic::Status;

use crate::config::ab::AbSettings;
use crate::eval::online::{OnlineEval, Sample};
use crate::live::{Content, Feedback, LiveStore, Record};
use crate::mesh::{Answer, Ask};
use crate::proto;

/// Longest accepted feedback comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 4000;

/// The A/B weights in force and the live store.
pub struct Quality {
    ab: RwLock<Arc<AbSettings>>,
    live: Option<Arc<LiveStore>>,
    /// Judging a sample of answers (`[online_eval]`).
    online: Option<Arc<OnlineEval>>,
}

impl Quality {
    pub fn new(ab: AbSettings, live: Option<Arc<LiveStore>>, online: Option<Arc<OnlineEval>>) -> Self {
        Quality { ab: RwLock::new(Arc::new(ab)), live, online }
    }

    /// Puts new weights in force (a config reload); requests already
    /// assigned keep their variant.
    pub fn set_ab(&self, ab: AbSettings) {
        match self.ab.write() {
            Ok(mut w) => *w = Arc::new(ab),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ab),
        }
    }

    /// The weights in force.
    pub fn ab(&self) -> Arc<AbSettings> {
        match self.ab.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Assigns a variant to a request that names none: by its
    /// `session_id` (a conversation stays on one variant), else its key's
    /// identity, else at random. An explicit `variant` wins.
    pub fn assign(&self, ask: &mut Ask) {
        if ask.input.variant.as_deref().is_some_and(|v| !v.is_empty()) {
            return;
        }
        let ab = self.ab();
        if !ab.active() {
            return;
        }
        let random;
        let key: &[u8] = if !ask.input.session_id.is_empty() {
            // Sessions are their owner's: the same id under two keys is two
            // conversations, each hashed with its owner.
            random = format!("{}\u{1f}{}", ask.owner, ask.input.session_id);
            random.as_bytes()
        } else if !ask.owner.is_empty() {
            ask.owner.as_bytes()
        } else {
            random = uuid::Uuid::new_v4().simple().to_string();
            random.as_bytes()
        };
        ask.input.variant = ab.pick(key).map(str::to_string);
    }

    /// The query to keep for the record (content captured) or for the
    /// online judges; `None` when neither wants it.
    pub fn query_to_keep(&self, ask: &Ask) -> Option<String> {
        let capture = self.live.as_ref().is_some_and(|l| l.captures_content());
        (capture || self.online.is_some()).then(|| ask.input.query.clone())
    }

    /// Hands an answered request's record to the live store and, when it
    /// is in the sample, to the online judges (never waits).
    pub fn record(&self, owner: &str, query: Option<String>, answer: &Answer) {
        // The record first: the judges' scores are stored into it.
        if let Some(live) = &self.live {
            let kept = query.clone().filter(|_| live.captures_content());
            self.keep(live, owner, kept, answer);
        }
        if let (Some(online), Some(query)) = (&self.online, query) {
            if online.sampled(&answer.trace_id) {
                let context = (!answer.citations.is_empty()).then(|| {
                    answer.citations.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join("\n\n")
                });
                online.offer(Sample {
                    trace_id: answer.trace_id.clone(),
                    variant: answer.variant.clone(),
                    query,
                    response: answer.answer.clone(),
                    context,
                });
            }
        }
    }

    fn keep(&self, live: &LiveStore, owner: &str, query: Option<String>, answer: &Answer) {
        let content = query.map(|query| Content {
            query,
            answer: answer.answer.clone(),
            citations: answer.citations.iter().map(|c| c.doc_id.clone()).collect(),
        });
        live.record(Record {
            trace_id: answer.trace_id.clone(),
            owner: owner.to_string(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            variant: answer.variant.clone(),
            intent: answer.intent.clone(),
            latency_ms: answer.usage.latency_ms,
            input_tokens: answer.usage.input_tokens,
            output_tokens: answer.usage.output_tokens,
            cost_usd: answer.usage.cost_usd,
            model_calls: answer.usage.model_calls,
            content,
        });
    }

    /// `SubmitFeedback` for `owner`.
    pub async fn feedback(
        &self,
        owner: &str,
        request: proto::FeedbackRequest,
    ) -> Result<proto::FeedbackAck, Status> {
        let proto::FeedbackRequest { trace_id, score, comment } = request;
        let trace_id = trace_id.trim().to_string();
        if trace_id.is_empty() || trace_id.len() > 64 {
            return Err(Status::invalid_argument(
                "trace_id must be an answer's trace id (1 to 64 characters)",
            ));
        }
        if !(0.0..=1.0).contains(&score) {
            return Err(Status::invalid_argument(format!(
                "score {score} is outside [0, 1] (thumbs down 0, up 1, or a rating scaled to it)"
            )));
        }
        if comment.chars().count() > MAX_COMMENT_CHARS {
            return Err(Status::invalid_argument(format!(
                "comment is longer than {MAX_COMMENT_CHARS} characters"
            )));
        }
        let Some(live) = &self.live else {
            return Err(Status::failed_precondition("live records are off ([live] enabled = false)"));
        };
        match live.feedback(&trace_id, owner, Feedback { score, comment }).await {
            Ok(true) => {
                crate::telemetry::metrics::get().feedback.record(score, &[]);
                Ok(proto::FeedbackAck { trace_id })
            }
            Ok(false) => {
                Err(Status::not_found(format!("no answer with trace id `{trace_id}` (unknown or expired)")))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store feedback");
                Err(Status::unavailable("the live record store failed; retry"))
            }
        }
    }
}
