//! What a flow's steps do to one request: the [`FlowState`] they build (the
//! passages, the latest draft, the verdict, the outputs later steps read),
//! and how each step form runs: one agent, a group run at once, a judge
//! with its revision loop, a bounded repeat.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::flow::{self, FlowPlan, PlannedAgent, PlannedStep};
use super::messages::{StepInput, StepOutput};
use super::run::Run;
use super::{MeshError, Verdict};
use crate::config::{AgentKind, Condition, Merge, OnReject};
use crate::llm::{Passage, Scores};

/// The latest answer candidate: a summarizer's draft or an `llm` agent's
/// text, and who wrote it (a judge sends it back there). A group's merged
/// draft has no single writer and is judged, not revised.
#[derive(Clone)]
pub(super) struct Draft {
    writer: Option<(String, AgentKind)>,
    pub(super) text: String,
}

/// What a flow has produced so far in one request.
pub(super) struct FlowState<'f> {
    /// The flow being run.
    pub(super) flow: &'f FlowPlan,
    pub(super) query: String,
    /// What retrieval searches for: the query, with the conversation's
    /// earlier question when the request is a follow-up turn.
    pub(super) search_query: Option<String>,
    pub(super) intent: String,
    /// Every passage retrieved so far: shared by the steps that read them,
    /// one copy per request.
    pub(super) passages: Arc<[Passage]>,
    /// The latest answering step's text.
    pub(super) draft: Option<Draft>,
    /// The declared answer agent's latest text (only with `answer = …`).
    pub(super) declared: Option<String>,
    /// The last judge's verdict.
    pub(super) verdict: Option<Verdict>,
    /// Summarizer steps so far, across the flow's summarizers: their
    /// attempt numbers.
    summarizer_attempts: u32,
    /// Each step's output as JSON, in the order they ran; kept only when
    /// the flow reads it (`FlowPlan::keeps_outputs`).
    outputs: Vec<(String, Value)>,
    /// In a repeat's later rounds: the feedback its answering steps revise
    /// by (the `until` step's `feedback`, else the last verdict's).
    round_feedback: Option<String>,
    /// Whether a repeat is past its first round.
    revising_round: bool,
}

impl<'f> FlowState<'f> {
    pub(super) fn new(flow: &'f FlowPlan, query: String, intent: String) -> Self {
        FlowState {
            flow,
            query,
            search_query: None,
            intent,
            passages: Arc::from(Vec::new()),
            draft: None,
            declared: None,
            verdict: None,
            summarizer_attempts: 0,
            outputs: Vec::new(),
            round_feedback: None,
            revising_round: false,
        }
    }

    /// The answer text: the declared agent's, else the latest draft; the
    /// flow's reply when the last verdict rejects and the flow says so, or
    /// when nothing answered.
    pub(super) fn answer(&mut self) -> String {
        let rejected = self.verdict.as_ref().is_some_and(|v| !v.accepted);
        let reply = || self.flow.reply.clone();
        if rejected && self.flow.on_reject == OnReject::Reply {
            return reply().unwrap_or_else(|| crate::config::NOT_FOUND_REPLY.to_string());
        }
        let text = match &self.flow.answer {
            Some(_) => self.declared.take(),
            None => self.draft.take().map(|d| d.text),
        };
        text.or_else(reply).unwrap_or_else(|| "I can't help with that request.".to_string())
    }

    /// Whether `agent`'s condition (if any) holds now.
    fn runs(&self, agent: &PlannedAgent) -> bool {
        agent.when.as_ref().is_none_or(|c| flow::holds(c, &self.outputs))
    }

    /// The latest text `agent` wrote in this request.
    fn text_of(&self, agent: &str) -> Option<&str> {
        self.outputs.iter().rev().find(|(a, _)| a == agent).and_then(|(_, v)| v.as_str())
    }

    /// The input of a step of `agent` (a judge's comes from its loop). In
    /// a repeat's later rounds an answering agent revises its own latest
    /// text by the round's feedback.
    fn input(
        &self,
        agent: &str,
        kind: AgentKind,
        mut feedback: Option<String>,
        mut previous: Option<String>,
    ) -> Result<StepInput, MeshError> {
        if self.revising_round && feedback.is_none() {
            previous = self.text_of(agent).map(str::to_string);
            if previous.is_some() {
                feedback = self.round_feedback.clone();
            }
        }
        Ok(match kind {
            AgentKind::Retriever => {
                StepInput::Retrieve { query: self.search_query.as_ref().unwrap_or(&self.query).clone() }
            }
            AgentKind::Summarizer => StepInput::Summarize {
                query: self.query.clone(),
                intent: self.intent.clone(),
                passages: self.passages.clone(),
                feedback,
                previous,
            },
            AgentKind::Llm => StepInput::Generate {
                query: self.query.clone(),
                intent: self.intent.clone(),
                passages: self.passages.clone(),
                outputs: self.outputs.as_slice().into(),
                feedback,
                previous,
                judged: None,
            },
            AgentKind::Router | AgentKind::Critic => {
                return Err(MeshError::internal(Some(agent), "not a step here (validated at load)"));
            }
        })
    }

    /// Takes `agent`'s output into the flow: passages, the draft, the
    /// declared answer, the outputs later steps read. The name is copied
    /// only where it is kept (a revision hands over the draft's own).
    fn take(&mut self, agent: Cow<'_, str>, kind: AgentKind, output: StepOutput) -> Result<(), MeshError> {
        if self.flow.keeps_outputs {
            self.outputs.push((agent.to_string(), output.as_json()));
        }
        match (kind, output) {
            (AgentKind::Retriever, StepOutput::Retrieved { passages: found }) => {
                self.passages = if self.passages.is_empty() {
                    found.into()
                } else {
                    self.passages.iter().cloned().chain(found).collect()
                };
            }
            (AgentKind::Summarizer, StepOutput::Drafted { answer: text })
            | (AgentKind::Llm, StepOutput::Generated { text, json: None, .. }) => {
                if self.flow.answer.as_deref() == Some(&*agent) {
                    self.declared = Some(text.clone());
                }
                self.draft = Some(Draft { writer: Some((agent.into_owned(), kind)), text });
            }
            // A JSON output is read by later steps and conditions only.
            (AgentKind::Llm, StepOutput::Generated { json: Some(_), .. }) => {}
            (AgentKind::Retriever, _) => return Err(unexpected(&agent, "passages")),
            (AgentKind::Summarizer, _) => return Err(unexpected(&agent, "draft")),
            (AgentKind::Llm, _) => return Err(unexpected(&agent, "generated output")),
            (AgentKind::Router | AgentKind::Critic, _) => {
                return Err(MeshError::internal(Some(&*agent), "not a step here (validated at load)"));
            }
        }
        Ok(())
    }

    /// The attempt number of `agent`'s next step: summarizers count
    /// together (as they always have), retrievers are always 1, other
    /// agents count each on their own.
    fn attempt_of(&mut self, run: &Run<'_>, agent: &str, kind: AgentKind) -> u32 {
        match kind {
            AgentKind::Summarizer => {
                self.summarizer_attempts += 1;
                self.summarizer_attempts
            }
            AgentKind::Retriever => 1,
            _ => run.next_attempt(agent),
        }
    }
}

/// A step output of the wrong shape: every kind answers its own step with
/// its own output, so this is a bug (INTERNAL), not an outage a retry could
/// get past.
pub(super) fn unexpected(agent: &str, wanted: &str) -> MeshError {
    MeshError::internal(Some(agent), format!("returned no {wanted}"))
}

/// Runs one step of the flow.
pub(super) async fn run_step(
    run: &mut Run<'_>,
    state: &mut FlowState<'_>,
    step: &PlannedStep,
) -> Result<(), MeshError> {
    match step {
        // Boxed: a repeat holds a step of its own, and without the box every
        // request's flow future would carry room for both. Bound before it
        // is awaited, so no temporary keeps that room anyway.
        PlannedStep::Repeat { steps, until, max_rounds } => {
            let repeated = Box::pin(repeat(run, state, steps, until.as_ref(), *max_rounds));
            repeated.await
        }
        other => simple_step(run, state, other).await,
    }
}

/// A bounded loop: `steps` again until `until` holds or `max_rounds` ran.
async fn repeat(
    run: &mut Run<'_>,
    state: &mut FlowState<'_>,
    steps: &[PlannedStep],
    until: Option<&Condition>,
    max_rounds: u32,
) -> Result<(), MeshError> {
    for round in 1..=max_rounds {
        state.revising_round = round > 1;
        for s in steps {
            simple_step(run, state, s).await?;
        }
        let Some(until) = until else { continue };
        if flow::holds(until, &state.outputs) {
            break;
        }
        // The next round revises by what the deciding step said.
        let said = state.outputs.iter().rev().find(|(a, _)| *a == until.step);
        state.round_feedback = said
            .and_then(|(_, v)| v.get("feedback"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| state.verdict.as_ref().map(|v| v.feedback.clone()));
    }
    state.revising_round = false;
    state.round_feedback = None;
    Ok(())
}

/// An agent, a judge or a group: the steps a repeat may hold.
async fn simple_step(
    run: &mut Run<'_>,
    state: &mut FlowState<'_>,
    step: &PlannedStep,
) -> Result<(), MeshError> {
    match step {
        PlannedStep::One(a) if !state.runs(a) => Ok(()),
        PlannedStep::One(a) if a.is_judge() => judge(run, state, a).await,
        PlannedStep::One(a) => {
            let attempt = state.attempt_of(run, &a.name, a.kind);
            let input = state.input(&a.name, a.kind, None, None)?;
            let done = run.send(&a.name, input, attempt).await?;
            let output = run.recorded(done);
            state.take(Cow::Borrowed(&a.name), a.kind, output)
        }
        PlannedStep::Parallel { members, merge } => fan_out(run, state, members, *merge).await,
        PlannedStep::Repeat { .. } => {
            Err(MeshError::internal(None, "a repeat inside a repeat (validated at load)"))
        }
    }
}

/// A judge step: judges the latest draft (or, with `judges`, that agent's
/// latest text) and, while it rejects and revisions are left, sends it
/// back to its writer with the judge's feedback.
async fn judge(run: &mut Run<'_>, state: &mut FlowState<'_>, judge: &PlannedAgent) -> Result<(), MeshError> {
    let mut revisions = 0u32;
    loop {
        let draft = match &judge.judges {
            None => state.draft.clone(),
            Some(name) => state.text_of(name).map(|text| Draft {
                writer: run.plan.agents.get(name).map(|p| (name.clone(), p.kind)),
                text: text.to_string(),
            }),
        };
        let Some(draft) = draft else { return Ok(()) };
        let input = match judge.kind {
            AgentKind::Critic => StepInput::Critique {
                query: state.query.clone(),
                answer: draft.text.clone(),
                passages: state.passages.clone(),
            },
            _ => StepInput::Generate {
                query: state.query.clone(),
                intent: state.intent.clone(),
                passages: state.passages.clone(),
                outputs: state.outputs.as_slice().into(),
                feedback: None,
                previous: None,
                judged: Some(draft.text.clone()),
            },
        };
        let attempt = run.next_attempt(&judge.name);
        let done = run.send(&judge.name, input, attempt).await?;
        let output = run.recorded(done);
        if state.flow.keeps_outputs {
            state.outputs.push((judge.name.clone(), output.as_json()));
        }
        let verdict = verdict_of(&judge.name, output)?;
        let (accepted, feedback) = (verdict.accepted, verdict.feedback.clone());
        state.verdict = Some(verdict);
        let Some((writer, kind)) = draft.writer else { return Ok(()) };
        if accepted || revisions >= state.flow.max_revisions {
            return Ok(());
        }
        revisions += 1;
        let attempt = state.attempt_of(run, &writer, kind);
        let input = state.input(&writer, kind, Some(feedback), Some(draft.text))?;
        let done = run.send(&writer, input, attempt).await?;
        let output = run.recorded(done);
        state.take(Cow::Owned(writer), kind, output)?;
    }
}

/// A judge's output as a verdict: a critic's, or an `llm` judge's JSON
/// (`accepted`, optional `feedback`, and `scores` or its top-level
/// numbers).
fn verdict_of(agent: &str, output: StepOutput) -> Result<Verdict, MeshError> {
    match output {
        StepOutput::Judged { accepted, scores, feedback } => Ok(Verdict { accepted, scores, feedback }),
        StepOutput::Generated { json: Some(v), .. } => {
            let accepted = v.get("accepted").and_then(Value::as_bool).unwrap_or(false);
            let feedback = v.get("feedback").and_then(Value::as_str).unwrap_or_default().to_string();
            let numbers = v.get("scores").and_then(Value::as_object).or(v.as_object());
            let scores: Scores = numbers
                .into_iter()
                .flatten()
                .filter_map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)))
                .collect();
            Ok(Verdict { accepted, scores, feedback })
        }
        _ => Err(unexpected(agent, "verdict")),
    }
}

/// A group of agents run at once: each sees what the steps before the
/// group produced; their records and outputs are taken in the order
/// written, and with `merge = "concat"` their texts become one draft. The
/// first failure fails the request (the others are dropped).
async fn fan_out(
    run: &mut Run<'_>,
    state: &mut FlowState<'_>,
    group: &[PlannedAgent],
    merge: Merge,
) -> Result<(), MeshError> {
    let mut calls = Vec::with_capacity(group.len());
    for a in group {
        if !state.runs(a) {
            continue;
        }
        let attempt = state.attempt_of(run, &a.name, a.kind);
        calls.push((a, state.input(&a.name, a.kind, None, None)?, attempt));
    }
    let shared: &Run<'_> = run;
    let results = futures::future::try_join_all(calls.into_iter().map(|(a, input, attempt)| async move {
        shared.send(&a.name, input, attempt).await.map(|done| (a, done))
    }))
    .await?;
    let mut merged: Vec<String> = Vec::new();
    for (a, (mut output, record)) in results {
        run.record(&mut output, record);
        if merge == Merge::Concat {
            if let StepOutput::Drafted { answer: text } | StepOutput::Generated { text, json: None, .. } =
                &output
            {
                merged.push(text.clone());
            }
        }
        state.take(Cow::Borrowed(&a.name), a.kind, output)?;
    }
    if merge == Merge::Concat && !merged.is_empty() {
        state.draft = Some(Draft { writer: None, text: merged.join("\n\n") });
    }
    Ok(())
}
