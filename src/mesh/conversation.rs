//! Conversations: a request with a `session_id` is a turn. Before the
//! flow runs, the earlier turns are read (the last `max_history_turns`,
//! then oldest dropped first until they fit `history_token_budget`); after
//! it answers, the turn is kept. A conversation belongs to its owner (the
//! API key's label): another key's same `session_id` is another
//! conversation. The store failing never fails the answer: the turn runs
//! without history (or is not kept), and a warning says so.

use std::sync::Arc;

use super::Answer;
use super::messages::Ask;
use super::run::Plan;
use crate::sessions::Turn;

/// The request's earlier turns (`None` when it is no turn, or the
/// conversation is new) and how many older turns did not fit the budget.
pub(super) async fn load(plan: &Plan, ask: &Ask) -> (Option<Arc<[Turn]>>, usize) {
    let (Some(store), session) = (&plan.sessions, ask.input.session_id.as_str()) else { return (None, 0) };
    let settings = &plan.spec.settings.sessions;
    if session.is_empty() || settings.max_history_turns == 0 {
        return (None, 0);
    }
    let turns = match store.load(&ask.owner, session, settings.max_history_turns).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, session, "cannot read the conversation; answering without its history");
            return (None, 0);
        }
    };
    let (kept, dropped) = fit(turns, settings.history_token_budget);
    if kept.is_empty() { (None, dropped) } else { (Some(kept.into()), dropped) }
}

/// Keeps the newest turns whose estimated tokens fit `budget`; returns
/// them (oldest first) and how many older ones were dropped.
fn fit(turns: Vec<Turn>, budget: usize) -> (Vec<Turn>, usize) {
    let mut used = 0usize;
    let mut start = turns.len();
    for (i, t) in turns.iter().enumerate().rev() {
        let cost =
            (crate::text::estimate_tokens(&t.query) + crate::text::estimate_tokens(&t.answer)) as usize;
        if used + cost > budget {
            break;
        }
        used += cost;
        start = i;
    }
    let dropped = start;
    (turns.into_iter().skip(start).collect(), dropped)
}

/// What the router's step summary says of the history.
pub(super) fn note(kept: usize, dropped: usize) -> String {
    let turns = if kept == 1 { "1 earlier turn".to_string() } else { format!("{kept} earlier turns") };
    match dropped {
        0 => format!(" (conversation: {turns})"),
        d => format!(" (conversation: {turns}; {d} older dropped to fit the token budget)"),
    }
}

/// Keeps the answered turn, when the request is one.
pub(super) async fn remember(plan: &Plan, ask: &Ask, answer: &Answer) {
    let (Some(store), session) = (&plan.sessions, ask.input.session_id.as_str()) else { return };
    if session.is_empty() {
        return;
    }
    let turn = Turn {
        query: ask.input.query.clone(),
        answer: answer.answer.clone(),
        citations: answer.citations.iter().map(|c| c.chunk_id.clone()).collect(),
        variant: answer.variant.clone(),
        at_ms: 0,
    };
    if let Err(e) = store.append(&ask.owner, session, turn).await {
        tracing::warn!(error = %e, session, "cannot keep the conversation's turn");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(q: &str, a: &str) -> Turn {
        Turn { query: q.into(), answer: a.into(), citations: vec![], variant: String::new(), at_ms: 1 }
    }

    #[test]
    fn the_newest_turns_that_fit_the_budget_are_kept() {
        let long = "word ".repeat(200);
        let turns = vec![turn("first", &long), turn("second", "short"), turn("third", "short too")];
        let (kept, dropped) = fit(turns.clone(), 40);
        assert_eq!((kept.len(), dropped), (2, 1));
        assert_eq!(kept[0].query, "second");
        let (kept, dropped) = fit(turns, 10_000);
        assert_eq!((kept.len(), dropped), (3, 0));
        assert_eq!(note(2, 1), " (conversation: 2 earlier turns; 1 older dropped to fit the token budget)");
    }
}
