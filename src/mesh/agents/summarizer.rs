//! The summarizer: drafts an answer from the retrieved passages, citing
//! them as `[n]`, and revises it on the critic's feedback. Its model's
//! text streams to the caller as it is written.

use minijinja::context;

use super::step::{KindLogic, Model, StepContext, wrong_settings};
use crate::config::{AgentProfile, AgentSpec, KindSettings};
use crate::llm::TaskHint;
use crate::mesh::messages::{StepInput, StepOutput};
use crate::mesh::{MeshError, Resources};

/// A summarizer profile, prepared.
pub struct Summarizer {
    /// The model and the prompt, with the sentence limit rendered in once.
    model: Model,
    /// Longest draft, in sentences; the offline engine reads it from the
    /// hint.
    max_sentences: usize,
}

impl KindLogic for Summarizer {
    fn prepare(agent: &AgentSpec, profile: &AgentProfile, resources: &Resources) -> Result<Self, MeshError> {
        let KindSettings::Summarizer(ss) = &profile.settings else {
            return Err(wrong_settings(agent));
        };
        let fixed = context! { max_sentences => ss.max_sentences };
        let model = Model::prepare(agent, profile, resources, fixed)?;
        Ok(Summarizer { model, max_sentences: ss.max_sentences })
    }

    async fn step(&self, ctx: &mut StepContext<'_>, input: StepInput) -> Result<StepOutput, MeshError> {
        let (query, intent, passages, feedback, previous) = match input {
            StepInput::Summarize { query, intent, passages, feedback, previous } => {
                (query, intent, passages, feedback, previous)
            }
            other => return Err(ctx.cannot_run(&other)),
        };
        let numbered = super::step::numbered_passages(&passages);
        let vars = context! {
            query => query, intent => intent, passages => numbered,
            feedback => feedback, previous => previous,
        };
        let revised = feedback.is_some();
        let cited_from = passages.len();
        // The prompt's values are copied into `vars`; the hint takes the
        // request's own strings.
        let hint = TaskHint::Answer {
            query,
            intent,
            passages,
            feedback,
            previous,
            max_sentences: self.max_sentences,
        };
        let resp = ctx.call_streaming(&self.model, vars, hint).await?;
        let answer = trimmed(resp.text);
        ctx.record.summary = format!(
            "draft of {} chars citing {} passages{}",
            answer.chars().count(),
            cited_indices(&answer, cited_from).len(),
            if revised { " (revised)" } else { "" }
        );
        Ok(StepOutput::Drafted { answer })
    }
}

/// `text` without surrounding white space, reusing its buffer when there
/// is none to cut (the common case).
fn trimmed(text: String) -> String {
    let t = text.trim();
    if t.len() == text.len() { text } else { t.to_string() }
}

/// The passage indices (0-based) an answer cites with `[n]` markers, in
/// order of first appearance; out-of-range markers are ignored.
pub fn cited_indices(answer: &str, passages: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find('[') {
        let after = &rest[start + 1..];
        let Some(end) = after.find(']') else { break };
        for part in after[..end].split(',') {
            if let Ok(n) = part.trim().parse::<usize>() {
                if n >= 1 && n <= passages && !out.contains(&(n - 1)) {
                    out.push(n - 1);
                }
            }
        }
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_support::{Harness, passage};
    use super::*;
    use crate::llm::Passage;

    #[test]
    fn cited_indices_parse_markers() {
        assert_eq!(cited_indices("a [2]. b [1,2]. c [9]. d [x].", 3), vec![1, 0]);
    }

    fn passages() -> Arc<[Passage]> {
        vec![
            passage(
                "gateway",
                "The gateway listens on port 50051 by default. It checks every request first.",
            ),
            passage("critic", "The critic accepts a draft when its groundedness is above the threshold."),
        ]
        .into()
    }

    async fn summarize(h: &Harness, query: &str, feedback: Option<&str>) -> (String, String) {
        let spec = h.agent("summarizer");
        let summarizer = Summarizer::prepare(spec, &spec.base, &h.resources).unwrap();
        let input = StepInput::Summarize {
            query: query.into(),
            intent: "question".into(),
            passages: passages(),
            feedback: feedback.map(str::to_string),
            previous: feedback.map(|_| "An earlier draft [1].".to_string()),
        };
        let (output, record) = h.run(&summarizer, "summarizer", input).await.unwrap();
        let StepOutput::Drafted { answer } = output else { panic!("no draft: {output:?}") };
        assert_eq!(record.model, "offline-extractive");
        assert!(record.input_tokens > 0 && record.output_tokens > 0 && record.tokens_estimated);
        assert_eq!((record.model_attempts, record.cost_usd), (1, Some(0.0)));
        (answer, record.summary)
    }

    #[tokio::test]
    async fn drafts_an_answer_citing_the_passages() {
        let h = Harness::offline();
        let (answer, summary) = summarize(&h, "Which port does the gateway listen on?", None).await;
        assert!(answer.contains("50051") && answer.contains("[1]"), "{answer}");
        assert_eq!(cited_indices(&answer, 2), vec![0]);
        assert_eq!(summary, format!("draft of {} chars citing 1 passages", answer.chars().count()));
    }

    #[tokio::test]
    async fn a_revision_acts_on_the_feedback() {
        let h = Harness::offline();
        let query = "Which port does the gateway listen on?";
        let (answer, summary) =
            summarize(&h, query, Some("Also say when the critic accepts a draft (groundedness threshold)."))
                .await;
        assert!(answer.contains("[2]"), "the feedback's words bring in the critic passage: {answer}");
        assert!(summary.ends_with("(revised)"), "{summary}");
    }
}
