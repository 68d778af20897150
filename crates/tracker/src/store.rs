//! [`ExecutionTracker`]: all of this crate's SQL.

use aigentflow_core_states::{time, ProjectId, TaskId};
use aigentflow_persistence::Row;
use aigentflow_persistence::{Backend, Database, Param, SqliteStateStore, Tx};
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{
    AgentMetrics, Invocation, InvocationId, InvocationUpdate, NewInvocation, RecoveredRun,
    RecoveryOptions, RecoveryReport, TokenUsage, Trace, TraceCursor, TraceId, TracePage,
    TraceStatus,
};
use crate::owner::Owner;

const TRACE_COLUMNS: &str = "id, project_id, task_id, prompt, started_at, completed_at, success, \
    duration_ms, token_usage, metadata, status, owner_pid, owner_started_at, owner_host, \
    heartbeat_at, recovery_attempts";
/// How many columns [`TRACE_COLUMNS`] names.
const TRACE_COLUMN_COUNT: usize = 16;
const INVOCATION_COLUMNS: &str = "id, trace_id, agent, task_fragment, started_at, completed_at, \
    outcome, quality_score, token_usage, output_summary, error";

/// An agent's figures over a window: one range of idx_agent_invocations_metrics, which covers
/// every column read here. AVG of an INTEGER column is its exact integer sum over the count.
const METRICS: &str = "
    SELECT COUNT(*), COALESCE(SUM(outcome = 'success'), 0), COALESCE(SUM(outcome = 'failure'), 0),
        AVG(quality_score), AVG(total_tokens)
    FROM agent_invocations INDEXED BY idx_agent_invocations_metrics
    WHERE agent = ?1 AND started_at >= ?2";
/// [`METRICS`] in PostgreSQL's dialect (`SUM` of a boolean does not exist, and `INDEXED BY` is
/// SQLite's). Counts are BIGINT. The token average is SQLite's computation step for step: the
/// exact sum (NUMERIC here) made a double, divided by the count as a double, so the two agree to
/// the bit; AVG of a BIGINT would divide in NUMERIC and be NUMERIC, which a row cannot read. The
/// quality average is AVG of DOUBLE PRECISION, which adds in order where SQLite compensates its
/// sum (Kahan-Babuska-Neumaier): the two may differ in the last bits.
const METRICS_PG: &str = "
    SELECT COUNT(*), COUNT(*) FILTER (WHERE outcome = 'success'),
        COUNT(*) FILTER (WHERE outcome = 'failure'), AVG(quality_score),
        SUM(total_tokens)::DOUBLE PRECISION / NULLIF(COUNT(total_tokens), 0)
    FROM agent_invocations
    WHERE agent = ?1 AND started_at >= ?2";

/// What [`METRICS`] reads: invocations, successes, failures, average score, average tokens.
type Figures = (i64, i64, i64, Option<f64>, Option<f64>);

/// How a recovery pass on PostgreSQL reads the running traces it judges, where recovering hosts
/// do not queue behind one writer as on SQLite: each row is locked until the pass commits, so no
/// heartbeat, resume or other pass changes it between the judgement and the mark; a row another
/// pass (or a heartbeat) holds is skipped, not waited for: it is that pass's to judge, or its
/// owner is beating.
const CLAIM_RUNNING_PG: &str = "FOR UPDATE SKIP LOCKED";

/// The server's clock in the stored form, as the schema's defaults write it.
const SERVER_NOW_PG: &str =
    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')";

/// The most traces one [`ExecutionTracker::traces_since`] call returns: a page a poller reads in
/// one short transaction.
pub const MAX_PAGE: u64 = 1000;

/// Execution traces and agent invocations of one database.
#[derive(Debug, Clone)]
pub struct ExecutionTracker {
    db: Database,
}

impl ExecutionTracker {
    /// The tracker over `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database it writes to.
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Starts a trace owned by this process (prompt redacted first).
    pub fn start_trace(&self, project: &ProjectId, task: &TaskId, prompt: &str) -> Result<Trace> {
        self.db.write(|tx| self.start_trace_in(tx, project, task, prompt))
    }

    /// Starts a trace inside a caller's transaction (e.g. with the task's first state save).
    pub fn start_trace_in(
        &self,
        tx: &Tx<'_>,
        project: &ProjectId,
        task: &TaskId,
        prompt: &str,
    ) -> Result<Trace> {
        for (what, text) in [("project id", project.as_str()), ("task id", task.as_str())] {
            if text.trim().is_empty() {
                return Err(Error::InvalidInput { what, reason: "it is empty".into() });
            }
        }
        let id = TraceId::random();
        let me = Owner::current();
        let beat = lease_now(tx)?;
        tx.execute(
            "INSERT INTO execution_traces (id, project_id, task_id, prompt, started_at, status,
                 owner_pid, owner_started_at, owner_host, heartbeat_at, recovery_attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9, 0)",
            &[
                Param::text(id.as_str()),
                Param::text(project.as_str()),
                Param::text(task.as_str()),
                Param::text(prompt),
                Param::time(tx.now()),
                Param::int(i64::from(me.pid)),
                Param::opt_time(me.started_at),
                Param::text(&me.host),
                Param::time(beat),
            ],
        )?;
        get_trace_in(tx, id.as_str())?
            .ok_or_else(|| Error::UnknownTrace { id: id.to_string().into() })
    }

    /// Completes a trace: success, token usage and metadata (redacted), with its duration
    /// measured from its start. A completed trace cannot be completed again.
    pub fn complete_trace(
        &self,
        id: &TraceId,
        success: bool,
        token_usage: Option<&TokenUsage>,
        metadata: Option<&Value>,
    ) -> Result<Trace> {
        let id = id.as_str();
        let usage = token_usage.map(json).transpose()?.unwrap_or(Param::NULL);
        let metadata = metadata.map(Param::json).transpose()?.unwrap_or(Param::NULL);
        self.db.write(|tx| {
            let trace =
                get_trace_in(tx, id)?.ok_or_else(|| Error::UnknownTrace { id: id.into() })?;
            if trace.status == TraceStatus::Completed {
                return Err(Error::WrongStatus {
                    id: id.into(),
                    status: trace.status.to_string().into(),
                    action: "complete it again",
                });
            }
            let now = tx.now();
            let duration = (now - trace.started_at).num_milliseconds().max(0);
            tx.execute(
                "UPDATE execution_traces SET completed_at = ?1, success = ?2, duration_ms = ?3,
                     token_usage = ?4, metadata = ?5, status = 'completed'
                 WHERE id = ?6",
                &[
                    Param::time(now),
                    Param::bool(success),
                    Param::int(duration),
                    usage,
                    metadata,
                    Param::text(id),
                ],
            )?;
            get_trace_in(tx, id)?.ok_or_else(|| Error::UnknownTrace { id: id.into() })
        })
    }

    /// Tells that the trace's owner is alive. Fails if the trace is no longer running (e.g. it
    /// was recovered by another process after a missed lease): its owner should stop.
    ///
    /// The time recorded is the lease clock's: the injected clock on SQLite, the database
    /// server's on PostgreSQL (see [`recover`](Self::recover)).
    pub fn heartbeat(&self, id: &TraceId) -> Result<()> {
        let id = id.as_str();
        self.db.write(|tx| {
            let changed = tx.execute(
                "UPDATE execution_traces SET heartbeat_at = ?1
                 WHERE id = ?2 AND status = 'running'",
                &[Param::time(lease_now(tx)?), Param::text(id)],
            )?;
            if changed == 0 {
                return Err(not_running(tx, id, "heartbeat")?);
            }
            Ok(())
        })
    }

    /// The trace with this id, if any.
    pub fn get_trace(&self, id: &TraceId) -> Result<Option<Trace>> {
        let id = id.as_str();
        self.db.read(|tx| get_trace_in(tx, id))
    }

    /// The most recent traces, of one project or of all, newest first.
    pub fn recent_traces(&self, project: Option<&ProjectId>, limit: u64) -> Result<Vec<Trace>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.read(|tx| {
            let (sql, values) = match project {
                Some(p) => (
                    format!(
                        "SELECT {TRACE_COLUMNS} FROM execution_traces WHERE project_id = ?
                         ORDER BY started_at DESC, id DESC LIMIT ?"
                    ),
                    vec![Param::text(p.as_str()), Param::int(limit)],
                ),
                None => (
                    format!(
                        "SELECT {TRACE_COLUMNS} FROM execution_traces
                         ORDER BY started_at DESC, id DESC LIMIT ?"
                    ),
                    vec![Param::int(limit)],
                ),
            };
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt.query_map(&values, RawTrace::read)?;
            rows.into_iter().map(|r| r.into_trace()).collect()
        })
    }

    /// Up to `limit` traces after `cursor` in the trace feed, oldest first, with the cursor to
    /// pass next: the traces started since a poller last looked. Start from
    /// [`TraceCursor::START`] (the whole feed) or [`traces_end`](Self::traces_end) (only what
    /// comes next). `limit` is 1 to [`MAX_PAGE`], else [`Error::InvalidInput`].
    ///
    /// The feed is the order traces were numbered in as they were inserted (`feed_seq`, from
    /// the one-row `trace_feed` counter; traces that were there before it existed were
    /// numbered in the order they were inserted on SQLite, started on PostgreSQL). A number
    /// becomes visible only after every smaller one, so a cursor never skips a trace: SQLite
    /// has one writer; on PostgreSQL the number is taken at the end of the inserting
    /// transaction, under the counter's row lock held until it commits. A trace appears once,
    /// as it stands when read: follow its later changes with [`get_trace`](Self::get_trace).
    pub fn traces_since(&self, cursor: TraceCursor, limit: u64) -> Result<TracePage> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::InvalidInput {
                what: "page limit",
                reason: format!("{limit} is not between 1 and {MAX_PAGE}").into(),
            });
        }
        self.db.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {TRACE_COLUMNS}, feed_seq FROM execution_traces WHERE feed_seq > ?1
                 ORDER BY feed_seq LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(&[Param::int(cursor.seq()), Param::int(limit as i64)], |r| {
                    Ok((RawTrace::read(r)?, r.get::<i64>(TRACE_COLUMN_COUNT)?))
                })?;
            let mut next = cursor;
            let mut traces = Vec::with_capacity(rows.len());
            for (raw, seq) in rows {
                traces.push(raw.into_trace()?);
                next = TraceCursor::at(seq);
            }
            Ok(TracePage { traces, next })
        })
    }

    /// The cursor after the last trace committed so far: [`traces_since`](Self::traces_since)
    /// from it reads only traces started after this call.
    pub fn traces_end(&self) -> Result<TraceCursor> {
        self.db.read(|tx| {
            let last = tx
                .query_row("SELECT COALESCE(MAX(feed_seq), 0) FROM execution_traces", &[], |r| {
                    r.get::<i64>(0)
                })?
                .unwrap_or(0);
            Ok(TraceCursor::at(last))
        })
    }

    /// How many traces are in each status.
    pub fn count_by_status(&self) -> Result<Vec<(String, u64)>> {
        self.db.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT status, COUNT(*) FROM execution_traces GROUP BY status ORDER BY status",
            )?;
            let rows = stmt.query_map(&[], |r| Ok((r.get(0)?, r.get::<i64>(1)? as u64)))?;
            Ok(rows)
        })
    }

    /// Records an agent invocation (text redacted first) and its agent span (see
    /// [`Span::invocation_id`](crate::Span::invocation_id)); returns its id.
    pub fn record_invocation(&self, new: &NewInvocation) -> Result<InvocationId> {
        self.db.write(|tx| self.record_invocation_in(tx, new))
    }

    /// Records an agent invocation inside a caller's transaction.
    pub fn record_invocation_in(&self, tx: &Tx<'_>, new: &NewInvocation) -> Result<InvocationId> {
        if new.agent.trim().is_empty() {
            return Err(Error::InvalidInput { what: "agent", reason: "it is empty".into() });
        }
        let score = new.quality_score.map(quality).transpose()?;
        let usage = new.token_usage.as_ref().map(json).transpose()?.unwrap_or(Param::NULL);
        let known = tx.query_row(
            "SELECT 1 FROM execution_traces WHERE id = ?1",
            &[Param::text(new.trace_id.as_str())],
            |_| Ok(()),
        )?;
        if known.is_none() {
            return Err(Error::UnknownTrace { id: new.trace_id.to_string().into() });
        }
        let id = tx.query_row(
            "INSERT INTO agent_invocations (trace_id, agent, task_fragment, started_at, completed_at,
                 outcome, quality_score, token_usage, output_summary, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
            &[
                Param::text(new.trace_id.as_str()),
                Param::text(&new.agent),
                Param::opt_text(new.task_fragment.as_deref()),
                Param::time(new.started_at),
                Param::opt_time(new.completed_at),
                Param::opt_text(new.outcome.map(|o| o.as_str())),
                score.map_or(Param::NULL, Param::real),
                usage,
                Param::opt_text(new.output_summary.as_deref()),
                Param::opt_text(new.error.as_deref()),
            ],
            |r| r.get::<i64>(0).map(InvocationId::new),
        )?;
        let id = id.ok_or_else(|| Error::UnknownTrace { id: new.trace_id.to_string().into() })?;
        let stored = get_invocation_in(tx, id)?.ok_or(Error::UnknownInvocation { id })?;
        crate::spans::mirror_invocation(tx, &stored)?;
        Ok(id)
    }

    /// Changes the given fields of an invocation (text redacted first); returns it.
    pub fn update_invocation(
        &self,
        id: InvocationId,
        update: &InvocationUpdate,
    ) -> Result<Invocation> {
        let mut sets: Vec<&str> = Vec::new();
        let mut values = Vec::new();
        if let Some(t) = update.completed_at {
            sets.push("completed_at");
            values.push(Param::time(t));
        }
        if let Some(o) = update.outcome {
            sets.push("outcome");
            values.push(Param::text(o.as_str()));
        }
        if let Some(q) = update.quality_score {
            sets.push("quality_score");
            values.push(Param::real(quality(q)?));
        }
        if let Some(u) = &update.token_usage {
            sets.push("token_usage");
            values.push(json(u)?);
        }
        if let Some(s) = &update.output_summary {
            sets.push("output_summary");
            values.push(Param::text(s));
        }
        if let Some(e) = &update.error {
            sets.push("error");
            values.push(Param::text(e));
        }
        self.db.write(|tx| {
            if !sets.is_empty() {
                let assignments: Vec<String> = sets.iter().map(|c| format!("{c} = ?")).collect();
                let sql =
                    format!("UPDATE agent_invocations SET {} WHERE id = ?", assignments.join(", "));
                values.push(Param::int(id.get()));
                tx.execute(&sql, &values)?;
            }
            let stored = get_invocation_in(tx, id)?.ok_or(Error::UnknownInvocation { id })?;
            crate::spans::mirror_invocation(tx, &stored)?;
            Ok(stored)
        })
    }

    /// A trace's invocations, in the order they started.
    pub fn invocations(&self, trace_id: &TraceId) -> Result<Vec<Invocation>> {
        let trace_id = trace_id.as_str();
        self.db.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {INVOCATION_COLUMNS} FROM agent_invocations WHERE trace_id = ?1
                 ORDER BY started_at, id"
            ))?;
            let rows = stmt.query_map(&[Param::text(trace_id)], RawInvocation::read)?;
            rows.into_iter().map(|r| r.into_invocation()).collect()
        })
    }

    /// How an agent did over the last `days` days (invocations started at or after now − days).
    /// A window that would start before year 0000 (the first a timestamp is stored with) is
    /// [`Error::InvalidInput`].
    pub fn agent_metrics(&self, agent: &str, days: u32) -> Result<AgentMetrics> {
        self.db.read(|tx| {
            // The window's start is computed here and bound: one SQL bound on both backends.
            let since = window_start(tx.now(), days)?;
            let (total, successes, failures, quality, tokens): Figures = tx
                .query_row(
                    tx.dialect(METRICS, METRICS_PG),
                    &[Param::text(agent), Param::time(since)],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?
                .unwrap_or((0, 0, 0, None, None));
            let rate = |n: i64| if total > 0 { n as f64 / total as f64 } else { 0.0 };
            Ok(AgentMetrics {
                agent: agent.into(),
                since,
                total_invocations: total as u64,
                successes: successes as u64,
                failures: failures as u64,
                success_rate: rate(successes),
                failure_rate: rate(failures),
                avg_quality_score: quality,
                avg_tokens_per_invocation: tokens,
            })
        })
    }

    /// Finds running traces whose owner is gone and marks them crashed (or abandoned past the
    /// attempt cap), then returns every crashed run with its task's latest checkpoint.
    /// A negative lease is [`Error::InvalidInput`].
    ///
    /// An owner this host can probe is judged by the probe; any other by its lease: dead when
    /// its last heartbeat is older than `options.lease` by the lease clock. On SQLite that is
    /// the database's injected clock (one machine, one clock), and passes never overlap (one
    /// writer). On PostgreSQL it is the server's clock, which heartbeats also record, so hosts
    /// whose clocks disagree judge alike; and each running trace is locked while it is judged
    /// and marked, a trace another pass holds being skipped (`FOR UPDATE SKIP LOCKED`), so of
    /// passes that run at once each dead run is marked by one pass only, and a pass reports
    /// only the runs it judged (in `crashed` with its reason, in `abandoned`, or as `alive`)
    /// plus those already marked. Either way [`resume`](Self::resume) is the claim that one
    /// caller wins.
    pub fn recover(&self, options: &RecoveryOptions) -> Result<RecoveryReport> {
        if options.lease < TimeDelta::zero() {
            return Err(Error::InvalidInput {
                what: "lease",
                reason: format!("{} is negative", options.lease).into(),
            });
        }
        let states = SqliteStateStore::new(self.db.clone());
        self.db.write(|tx| {
            let running: Vec<Trace> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {TRACE_COLUMNS} FROM execution_traces WHERE status = 'running'
                     ORDER BY started_at, id {}",
                    tx.dialect("", CLAIM_RUNNING_PG)
                ))?;
                let rows = stmt.query_map(&[], RawTrace::read)?;
                rows.into_iter().map(|r| r.into_trace()).collect::<Result<_>>()?
            };
            let mut report = RecoveryReport::default();
            if tx.backend() == Backend::Postgres {
                // Counted while this pass holds the rows it judges, so every row it locked is
                // still running: the rest are the ones it skipped.
                let running_now = tx
                    .query_row(
                        "SELECT COUNT(*) FROM execution_traces WHERE status = 'running'",
                        &[],
                        |r| r.get::<u64>(0),
                    )?
                    .unwrap_or(0);
                report.skipped = running_now.saturating_sub(running.len() as u64);
            }
            // Read after the locks are held: a lease is judged against the time they were taken.
            let now = lease_now(tx)?;
            let mut reasons = std::collections::HashMap::new();
            for trace in running {
                let Some(reason) = dead_reason(&trace, now, options.lease) else {
                    report.alive += 1;
                    continue;
                };
                let attempts = trace.recovery_attempts.saturating_add(1);
                let status = if attempts > options.max_attempts {
                    TraceStatus::Abandoned
                } else {
                    TraceStatus::Crashed
                };
                tx.execute(
                    "UPDATE execution_traces SET status = ?1, recovery_attempts = ?2 WHERE id = ?3",
                    &[
                        Param::text(status.as_str()),
                        Param::int(i64::from(attempts)),
                        Param::text(trace.id.as_str()),
                    ],
                )?;
                tracing::warn!(trace = %trace.id, task = %trace.task_id, %reason, %status, attempts,
                    "run's owner is gone");
                if status == TraceStatus::Abandoned {
                    report.abandoned.push(Trace { status, recovery_attempts: attempts, ..trace });
                } else {
                    reasons.insert(trace.id.to_string(), reason);
                }
            }
            let crashed: Vec<Trace> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {TRACE_COLUMNS} FROM execution_traces WHERE status = 'crashed'
                     ORDER BY started_at, id"
                ))?;
                let rows = stmt.query_map(&[], RawTrace::read)?;
                rows.into_iter().map(|r| r.into_trace()).collect::<Result<_>>()?
            };
            for trace in crashed {
                let (task, problem) = match states.task_in(tx, &trace.task_id) {
                    Ok(task) => (task, None),
                    Err(e) => (None, Some(e.to_string())),
                };
                let reason = reasons
                    .remove(trace.id.as_str())
                    .unwrap_or_else(|| "marked crashed earlier".into());
                report.crashed.push(RecoveredRun { trace, reason, task, problem });
            }
            Ok(report)
        })
    }

    /// Claims a crashed run for this process: it is running again, owned by this process.
    /// Of callers that resume one run at once, one wins; the others get
    /// [`Error::WrongStatus`] (on PostgreSQL they wait for the winner's row lock, then find the
    /// run no longer crashed).
    pub fn resume(&self, id: &TraceId) -> Result<Trace> {
        let id = id.as_str();
        self.db.write(|tx| {
            let me = Owner::current();
            let beat = lease_now(tx)?;
            let changed = tx.execute(
                "UPDATE execution_traces SET status = 'running', owner_pid = ?1,
                     owner_started_at = ?2, owner_host = ?3, heartbeat_at = ?4
                 WHERE id = ?5 AND status = 'crashed'",
                &[
                    Param::int(i64::from(me.pid)),
                    Param::opt_time(me.started_at),
                    Param::text(&me.host),
                    Param::time(beat),
                    Param::text(id),
                ],
            )?;
            if changed == 0 {
                return Err(not_running(tx, id, "resume it (only a crashed run can be)")?);
            }
            get_trace_in(tx, id)?.ok_or_else(|| Error::UnknownTrace { id: id.into() })
        })
    }
}

/// Why a running trace's owner is taken for dead, or None if it is alive or cannot be judged.
fn dead_reason(trace: &Trace, now: DateTime<Utc>, lease: TimeDelta) -> Option<String> {
    if let Some(owner) = &trace.owner {
        match owner.is_alive() {
            Some(true) => return None,
            Some(false) => {
                return Some(format!("owner process {} on {} is gone", owner.pid, owner.host))
            }
            None => {}
        }
    }
    let last = trace.heartbeat_at.unwrap_or(trace.started_at);
    (now - last > lease).then(|| {
        let who = trace
            .owner
            .as_ref()
            .map_or("an unknown owner".to_owned(), |o| format!("process {} on {}", o.pid, o.host));
        format!("no heartbeat from {who} since {}", time::to_rfc3339(last))
    })
}

/// The clock heartbeats are recorded and leases judged by: the database's injected clock on
/// SQLite (one machine, and tests can move it), the server's clock on PostgreSQL (several hosts
/// share one database, and only the server's clock is theirs alike).
fn lease_now(tx: &Tx<'_>) -> Result<DateTime<Utc>> {
    if tx.backend() != Backend::Postgres {
        return Ok(tx.now());
    }
    let text: String = tx.query_row(SERVER_NOW_PG, &[], |r| r.get(0))?.unwrap_or_default();
    time::parse(&text).ok_or_else(|| Error::InvalidInput {
        what: "server clock",
        reason: format!(
            "it reads \"{text}\", not a time from year {:04} to {:04}",
            time::MIN_YEAR,
            time::MAX_YEAR
        )
        .into(),
    })
}

/// `days` days before `now`, to the millisecond; an error past the first stored year.
fn window_start(now: DateTime<Utc>, days: u32) -> Result<DateTime<Utc>> {
    TimeDelta::try_days(i64::from(days))
        .and_then(|span| now.checked_sub_signed(span))
        .filter(|since| since.year() >= time::MIN_YEAR)
        .map(time::millis)
        .ok_or_else(|| Error::InvalidInput {
            what: "days",
            reason: format!(
                "a window of {days} days before {} starts before year {:04}, the first a timestamp is stored with",
                time::to_rfc3339(now),
                time::MIN_YEAR
            ).into(),
        })
}

/// The error for an operation on a trace that is not in the status it needs.
fn not_running(tx: &Tx<'_>, id: &str, action: &'static str) -> Result<Error> {
    Ok(match get_trace_in(tx, id)? {
        None => Error::UnknownTrace { id: id.into() },
        Some(t) => {
            Error::WrongStatus { id: id.into(), status: t.status.to_string().into(), action }
        }
    })
}

fn json<T: serde::Serialize>(value: &T) -> Result<Param<'static>> {
    let value = serde_json::to_value(value).map_err(aigentflow_persistence::Error::from)?;
    Ok(Param::json(&value)?)
}

fn quality(q: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&q) {
        return Err(Error::InvalidInput {
            what: "quality score",
            reason: format!("{q} is not between 0 and 1").into(),
        });
    }
    Ok(q)
}

fn get_trace_in(tx: &Tx<'_>, id: &str) -> Result<Option<Trace>> {
    let raw = tx.query_row(
        &format!("SELECT {TRACE_COLUMNS} FROM execution_traces WHERE id = ?1"),
        &[Param::text(id)],
        RawTrace::read,
    )?;
    raw.map(RawTrace::into_trace).transpose()
}

/// Writes (or brings up to date) the agent span of invocation `id`, in the caller's
/// transaction: for an invocation written around the tracker, as a bundle import writes one, so
/// that it too is its agent span. An unknown id is [`Error::UnknownInvocation`].
pub fn mirror_invocation_in(tx: &Tx<'_>, id: InvocationId) -> Result<()> {
    let stored = get_invocation_in(tx, id)?.ok_or(Error::UnknownInvocation { id })?;
    crate::spans::mirror_invocation(tx, &stored)
}

fn get_invocation_in(tx: &Tx<'_>, id: InvocationId) -> Result<Option<Invocation>> {
    let raw = tx.query_row(
        &format!("SELECT {INVOCATION_COLUMNS} FROM agent_invocations WHERE id = ?1"),
        &[Param::int(id.get())],
        RawInvocation::read,
    )?;
    raw.map(RawInvocation::into_invocation).transpose()
}

/// Readers of stored text that name the table, column and row at fault.
struct Fields<'a> {
    table: &'static str,
    id: &'a str,
}

impl Fields<'_> {
    fn corrupt(&self, column: &'static str, reason: String) -> Error {
        aigentflow_persistence::Error::CorruptRow {
            table: self.table,
            column,
            id: self.id.to_owned().into(),
            reason: reason.into(),
        }
        .into()
    }

    fn time(&self, column: &'static str, text: &str) -> Result<DateTime<Utc>> {
        Ok(aigentflow_persistence::Error::read_time(self.table, column, self.id, text)?)
    }

    fn opt_time(&self, column: &'static str, text: Option<&str>) -> Result<Option<DateTime<Utc>>> {
        text.map(|t| self.time(column, t)).transpose()
    }

    fn usage(&self, text: Option<&str>) -> Result<Option<TokenUsage>> {
        text.map(|t| {
            serde_json::from_str(t)
                .map_err(|e| self.corrupt("token_usage", format!("malformed JSON: {e}")))
        })
        .transpose()
    }
}

struct RawTrace {
    id: String,
    project_id: String,
    task_id: String,
    prompt: String,
    started_at: String,
    completed_at: Option<String>,
    success: Option<i64>,
    duration_ms: Option<i64>,
    token_usage: Option<String>,
    metadata: Option<String>,
    status: String,
    owner_pid: Option<i64>,
    owner_started_at: Option<String>,
    owner_host: Option<String>,
    heartbeat_at: Option<String>,
    recovery_attempts: i64,
}

impl RawTrace {
    fn read(r: &Row<'_>) -> aigentflow_persistence::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            project_id: r.get(1)?,
            task_id: r.get(2)?,
            prompt: r.get(3)?,
            started_at: r.get(4)?,
            completed_at: r.get(5)?,
            success: r.get(6)?,
            duration_ms: r.get(7)?,
            token_usage: r.get(8)?,
            metadata: r.get(9)?,
            status: r.get(10)?,
            owner_pid: r.get(11)?,
            owner_started_at: r.get(12)?,
            owner_host: r.get(13)?,
            heartbeat_at: r.get(14)?,
            recovery_attempts: r.get(15)?,
        })
    }

    fn into_trace(self) -> Result<Trace> {
        let f = Fields { table: "execution_traces", id: &self.id };
        let status = self
            .status
            .parse()
            .map_err(|_| f.corrupt("status", format!("unknown status \"{}\"", self.status)))?;
        let owner = match (self.owner_pid, &self.owner_host) {
            (Some(pid), Some(host)) => Some(Owner {
                pid: u32::try_from(pid)
                    .map_err(|_| f.corrupt("owner_pid", format!("{pid} is not a pid")))?,
                started_at: f.opt_time("owner_started_at", self.owner_started_at.as_deref())?,
                host: host.clone(),
            }),
            _ => None,
        };
        let metadata = self
            .metadata
            .as_deref()
            .map(|m| serde_json::from_str(m).unwrap_or_else(|_| Value::from(m)));
        Ok(Trace {
            started_at: f.time("started_at", &self.started_at)?,
            completed_at: f.opt_time("completed_at", self.completed_at.as_deref())?,
            heartbeat_at: f.opt_time("heartbeat_at", self.heartbeat_at.as_deref())?,
            token_usage: f.usage(self.token_usage.as_deref())?,
            status,
            owner,
            metadata,
            success: self.success.map(|s| s != 0),
            duration_ms: self.duration_ms,
            recovery_attempts: u32::try_from(self.recovery_attempts).map_err(|_| {
                f.corrupt(
                    "recovery_attempts",
                    format!("{} is not a number of attempts", self.recovery_attempts),
                )
            })?,
            project_id: ProjectId::new(self.project_id),
            task_id: TaskId::new(self.task_id),
            prompt: self.prompt,
            id: TraceId::new(self.id),
        })
    }
}

struct RawInvocation {
    id: i64,
    trace_id: String,
    agent: String,
    task_fragment: Option<String>,
    started_at: String,
    completed_at: Option<String>,
    outcome: Option<String>,
    quality_score: Option<f64>,
    token_usage: Option<String>,
    output_summary: Option<String>,
    error: Option<String>,
}

impl RawInvocation {
    fn read(r: &Row<'_>) -> aigentflow_persistence::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            trace_id: r.get(1)?,
            agent: r.get(2)?,
            task_fragment: r.get(3)?,
            started_at: r.get(4)?,
            completed_at: r.get(5)?,
            outcome: r.get(6)?,
            quality_score: r.get(7)?,
            token_usage: r.get(8)?,
            output_summary: r.get(9)?,
            error: r.get(10)?,
        })
    }

    fn into_invocation(self) -> Result<Invocation> {
        let id = self.id.to_string();
        let f = Fields { table: "agent_invocations", id: &id };
        Ok(Invocation {
            started_at: f.time("started_at", &self.started_at)?,
            completed_at: f.opt_time("completed_at", self.completed_at.as_deref())?,
            token_usage: f.usage(self.token_usage.as_deref())?,
            id: InvocationId::new(self.id),
            trace_id: TraceId::new(self.trace_id),
            agent: self.agent,
            task_fragment: self.task_fragment,
            outcome: self.outcome,
            quality_score: self.quality_score,
            output_summary: self.output_summary,
            error: self.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigentflow_core_states::ManualClock;
    use aigentflow_persistence::Options;

    fn tracker_at(now: &str) -> ExecutionTracker {
        let start = time::parse(now).unwrap_or_default();
        let clock = std::sync::Arc::new(ManualClock::new(start, TimeDelta::zero()));
        let db = Database::open_in_memory_with(Options { clock, ..Options::default() });
        ExecutionTracker::new(db.unwrap_or_else(|e| panic!("{e}")))
    }

    /// Every u32 of days either gives a window inside the stored years or a typed error; the
    /// largest never panics (it overflowed chrono's arithmetic before).
    #[test]
    fn any_window_of_days_gives_metrics_or_a_typed_error_never_a_panic() {
        let now = "2026-01-05 10:00:00.000";
        let tracker = tracker_at(now);
        // 739,986 days back from 2026-01-05 is 0000-01-01, the first stored day.
        let first_day = 739_986;
        for days in [0, 1, 30, 36_500, first_day - 1, first_day] {
            let m = tracker.agent_metrics("coder", days).unwrap_or_else(|e| panic!("{days}: {e}"));
            let expected = time::parse(now).unwrap_or_default() - TimeDelta::days(i64::from(days));
            assert_eq!(m.since, expected, "{days}");
        }
        for days in [first_day + 1, 1_000_000, u32::MAX / 2, u32::MAX - 1, u32::MAX] {
            let err = tracker.agent_metrics("coder", days).map(|m| m.since);
            assert!(
                matches!(err, Err(Error::InvalidInput { what: "days", .. })),
                "{days}: {err:?}"
            );
        }
    }

    #[test]
    fn a_negative_lease_is_refused_before_anything_is_judged() {
        let tracker = tracker_at("2026-01-05 10:00:00.000");
        for lease in [TimeDelta::milliseconds(-1), TimeDelta::MIN] {
            let err = tracker.recover(&RecoveryOptions { lease, max_attempts: 3 });
            assert!(
                matches!(err, Err(Error::InvalidInput { what: "lease", .. })),
                "{lease}: {err:?}"
            );
        }
        for lease in [TimeDelta::zero(), TimeDelta::MAX] {
            let report = tracker.recover(&RecoveryOptions { lease, max_attempts: 3 });
            assert!(report.is_ok(), "{lease}: {report:?}");
        }
    }
}
