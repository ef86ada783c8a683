//! Reading jobs back: one job's summary (its row, and counts and sums
//! over its results), and pages of jobs newest first.

use rusqlite::{Connection, OptionalExtension, params};

use super::BatchError;
use crate::mesh::Usage;

/// Item state `claimed` in `items.state` (the store's other states are
/// its own).
pub(super) const CLAIMED: i64 = 1;

/// gRPC's CANCELLED: the code of items a cancel answered.
pub const CODE_CANCELLED: i32 = 1;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Cancelled,
}

/// A job's state, counts and usage so far.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub job_id: String,
    pub request_id: Option<String>,
    pub state: JobState,
    pub total: u32,
    pub done: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub pending: u32,
    /// Summed over answered items; `cost_usd` is `None` when any answered
    /// item's cost is unknown.
    pub usage: Usage,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
}

/// A job's row in `jobs`.
pub(super) struct JobRow {
    pub request_id: Option<String>,
    pub state: String,
    pub total: i64,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

/// Counts and sums over a job's results.
pub(super) struct Tally {
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Answered items whose cost is unknown.
    pub unknown_cost: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: f64,
    pub calls: i64,
    pub latency: f64,
}

/// Reads a job's summary.
pub(super) fn summary(conn: &Connection, job_id: &str) -> Result<JobSummary, BatchError> {
    let job = conn
        .query_row(
            "SELECT request_id, state, total, created_ms, finished_ms FROM jobs WHERE job_id = ?1",
            params![job_id],
            |r| {
                Ok(JobRow {
                    request_id: r.get(0)?,
                    state: r.get(1)?,
                    total: r.get(2)?,
                    created_ms: r.get(3)?,
                    finished_ms: r.get(4)?,
                })
            },
        )
        .optional()?;
    let Some(job) = job else {
        return Err(BatchError::NotFound(job_id.to_string()));
    };
    let t = conn.query_row(
        "SELECT COALESCE(SUM(code = 0), 0), COALESCE(SUM(code NOT IN (0, ?2)), 0), \
         COALESCE(SUM(code = ?2), 0), COALESCE(SUM(code = 0 AND cost_usd IS NULL), 0), \
         COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0.0), \
         COALESCE(SUM(model_calls), 0), COALESCE(SUM(latency_ms), 0.0) \
         FROM results WHERE job_id = ?1",
        params![job_id, CODE_CANCELLED],
        |r| {
            Ok(Tally {
                done: r.get(0)?,
                failed: r.get(1)?,
                cancelled: r.get(2)?,
                unknown_cost: r.get(3)?,
                input_tokens: r.get(4)?,
                output_tokens: r.get(5)?,
                cost: r.get(6)?,
                calls: r.get(7)?,
                latency: r.get(8)?,
            })
        },
    )?;
    let claimed: i64 = conn.query_row(
        "SELECT COUNT(*) FROM items WHERE job_id = ?1 AND state = ?2",
        params![job_id, CLAIMED],
        |r| r.get(0),
    )?;
    Ok(assemble(job_id, job, t, claimed))
}

/// A job's summary from its row, its results' tally and how many of its
/// items are claimed now (either store).
pub(super) fn assemble(job_id: &str, job: JobRow, t: Tally, claimed: i64) -> JobSummary {
    let finished = t.done + t.failed + t.cancelled;
    let state = match job.state.as_str() {
        "cancelled" => JobState::Cancelled,
        "completed" => JobState::Completed,
        _ if finished > 0 || claimed > 0 => JobState::Running,
        _ => JobState::Queued,
    };
    JobSummary {
        job_id: job_id.to_string(),
        request_id: job.request_id,
        state,
        total: job.total as u32,
        done: t.done as u32,
        failed: t.failed as u32,
        cancelled: t.cancelled as u32,
        pending: (job.total - finished).max(0) as u32,
        usage: Usage {
            input_tokens: t.input_tokens as u64,
            output_tokens: t.output_tokens as u64,
            cost_usd: (t.unknown_cost == 0).then_some(t.cost),
            model_calls: t.calls as u32,
            latency_ms: t.latency,
        },
        created_ms: job.created_ms as u64,
        finished_ms: job.finished_ms.map(|f| f as u64),
    }
}

/// Which jobs a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owners {
    /// Every job (the gateway checks no API keys).
    All,
    /// The jobs submitted with this key identity.
    Only(String),
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    /// Where the next page starts (pass it back as `after`); `None` on the
    /// last page.
    pub next: Option<i64>,
}

/// Up to `limit` jobs of `owners`, newest first, starting after the job
/// whose position is `after` (a previous page's [`JobPage::next`]).
/// Positions are `rowid`s: they grow with every job stored and no job is
/// ever deleted, so a page boundary stays put while new jobs arrive.
pub(super) fn page(
    conn: &Connection,
    owners: &Owners,
    after: Option<i64>,
    limit: u32,
) -> Result<JobPage, BatchError> {
    let owner = match owners {
        Owners::All => None,
        Owners::Only(o) => Some(o.as_str()),
    };
    // One more than asked: whether a next page exists.
    let rows: Vec<(i64, String)> = {
        let mut q = conn.prepare_cached(
            "SELECT rowid, job_id FROM jobs WHERE (?1 IS NULL OR owner = ?1) \
             AND (?2 IS NULL OR rowid < ?2) ORDER BY rowid DESC LIMIT ?3",
        )?;
        q.query_map(params![owner, after, i64::from(limit) + 1], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let more = rows.len() > limit as usize;
    let mut jobs = Vec::with_capacity(rows.len().min(limit as usize));
    let mut last = None;
    for (rowid, job_id) in rows.into_iter().take(limit as usize) {
        jobs.push(summary(conn, &job_id)?);
        last = Some(rowid);
    }
    Ok(JobPage { jobs, next: if more { last } else { None } })
}
