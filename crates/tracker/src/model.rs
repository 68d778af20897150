use aigentflow_core_states::{string_id, time, ProjectId, TaskId};
use aigentflow_persistence::ResumableTask;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::owner::Owner;

string_id!(
    /// The id of an execution trace (one run of a task).
    TraceId
);

/// The id of an agent invocation: the number its row was given, which
/// [`record_invocation`](crate::ExecutionTracker::record_invocation) returns and
/// [`update_invocation`](crate::ExecutionTracker::update_invocation) takes back. Stored and
/// serialised as the plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvocationId(i64);

impl InvocationId {
    /// The invocation with this row number.
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// The row number.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for InvocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i64> for InvocationId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

impl From<InvocationId> for i64 {
    fn from(id: InvocationId) -> Self {
        id.0
    }
}

/// Token usage, in the JSON keys the TypeScript version wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

impl TokenUsage {
    /// Usage with the total as the sum of input and output.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self { input_tokens, output_tokens, total_tokens: input_tokens + output_tokens }
    }
}

aigentflow_core_states::closed_enum! {
    /// Where a trace stands.
    pub enum TraceStatus as "trace status" {
        /// Started and not completed; its owner is expected to be alive.
        Running = "running",
        /// Completed, successfully or not.
        Completed = "completed",
        /// Its owner died; it waits to be resumed.
        Crashed = "crashed",
        /// Found dead more often than the recovery cap allows; not offered again.
        Abandoned = "abandoned",
    }
}

/// A stored execution trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub id: TraceId,
    pub project_id: ProjectId,
    pub task_id: TaskId,
    pub prompt: String,
    #[serde(with = "time::serde_millis")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_time")]
    pub completed_at: Option<DateTime<Utc>>,
    pub success: Option<bool>,
    pub duration_ms: Option<i64>,
    pub token_usage: Option<TokenUsage>,
    pub metadata: Option<Value>,
    pub status: TraceStatus,
    /// None for traces written by the TypeScript version.
    pub owner: Option<Owner>,
    #[serde(serialize_with = "opt_time")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub recovery_attempts: u32,
}

aigentflow_core_states::closed_enum! {
    /// How an agent invocation ended.
    pub enum Outcome as "outcome" {
        Success = "success",
        Partial = "partial",
        Failure = "failure",
        Escalated = "escalated",
    }
}

/// An agent invocation to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvocation {
    pub trace_id: TraceId,
    pub agent: String,
    pub task_fragment: Option<String>,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    /// From 0 to 1.
    pub quality_score: Option<f64>,
    pub token_usage: Option<TokenUsage>,
    pub output_summary: Option<String>,
    pub error: Option<String>,
}

impl NewInvocation {
    /// An invocation of `agent` in a trace, started at `started_at`; other fields set directly.
    pub fn new(trace_id: TraceId, agent: impl Into<String>, started_at: DateTime<Utc>) -> Self {
        Self {
            trace_id,
            agent: agent.into(),
            task_fragment: None,
            started_at,
            completed_at: None,
            outcome: None,
            quality_score: None,
            token_usage: None,
            output_summary: None,
            error: None,
        }
    }
}

/// Changes to an invocation; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvocationUpdate {
    pub completed_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    pub quality_score: Option<f64>,
    pub token_usage: Option<TokenUsage>,
    pub output_summary: Option<String>,
    pub error: Option<String>,
}

/// A stored agent invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invocation {
    pub id: InvocationId,
    pub trace_id: TraceId,
    pub agent: String,
    pub task_fragment: Option<String>,
    #[serde(with = "time::serde_millis")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_time")]
    pub completed_at: Option<DateTime<Utc>>,
    /// The stored text (one of [`Outcome`] for rows this tracker wrote).
    pub outcome: Option<String>,
    pub quality_score: Option<f64>,
    pub token_usage: Option<TokenUsage>,
    pub output_summary: Option<String>,
    pub error: Option<String>,
}

/// How an agent did over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentMetrics {
    pub agent: String,
    /// Invocations started at or after this instant count.
    #[serde(with = "time::serde_millis")]
    pub since: DateTime<Utc>,
    pub total_invocations: u64,
    pub successes: u64,
    pub failures: u64,
    /// Successes over all invocations (0 when there are none).
    pub success_rate: f64,
    pub failure_rate: f64,
    /// Over the invocations that have a score.
    pub avg_quality_score: Option<f64>,
    /// Over the invocations that have token usage.
    pub avg_tokens_per_invocation: Option<f64>,
}

/// How [`crate::ExecutionTracker::recover`] judges and caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryOptions {
    /// An owner this host cannot probe (another host, or none recorded) is taken for dead when
    /// the trace's last heartbeat (or its start) is older than this.
    pub lease: TimeDelta,
    /// A run found dead more often than this is abandoned instead of offered for resumption.
    pub max_attempts: u32,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        Self { lease: TimeDelta::minutes(5), max_attempts: 3 }
    }
}

/// A run found dead (now or earlier) and not yet resumed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveredRun {
    pub trace: Trace,
    /// Why its owner was taken for dead (for runs marked earlier: "marked crashed earlier").
    pub reason: String,
    /// The task with its latest checkpoint, if the state store has it.
    pub task: Option<ResumableTask>,
    /// Why the task could not be read, if it could not; the other runs are recovered anyway.
    pub problem: Option<String>,
}

/// What a recovery pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// Runs waiting to be resumed, with their checkpoints.
    pub crashed: Vec<RecoveredRun>,
    /// Runs given up on in this pass (over the attempt cap).
    pub abandoned: Vec<Trace>,
    /// Running traces whose owner is alive (or cannot be judged yet).
    pub alive: u64,
    /// Running traces this pass did not judge: on PostgreSQL, those another recovery pass or a
    /// heartbeat held at that moment (`FOR UPDATE SKIP LOCKED`: theirs to judge, or their owner
    /// is beating), and those started while it ran. Always 0 on SQLite, whose one writer lets
    /// a pass judge every running trace.
    pub skipped: u64,
}

/// A place in the trace feed, the order in which traces were started and committed: the traces
/// after it are what a poller has not read yet ([`crate::ExecutionTracker::traces_since`]).
/// Opaque: keep the one a page returns and pass it back. It is written and read as a whole
/// number (`Display`/`FromStr`, and serde), so it can be kept between runs; 0 is
/// [`START`](Self::START), before every trace.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct TraceCursor(i64);

impl TraceCursor {
    /// Before every trace: a poller's first cursor reads the feed from its start.
    pub const START: Self = Self(0);

    /// The cursor of a stored feed number.
    pub(crate) fn at(seq: i64) -> Self {
        Self(seq)
    }

    /// The feed number it stands after.
    pub(crate) fn seq(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for TraceCursor {
    type Error = crate::Error;

    /// A cursor written out earlier; a negative number is [`crate::Error::InvalidInput`].
    fn try_from(n: i64) -> crate::Result<Self> {
        if n < 0 {
            return Err(crate::Error::InvalidInput {
                what: "trace cursor",
                reason: format!("{n} is negative; 0 is the start of the feed").into(),
            });
        }
        Ok(Self(n))
    }
}

impl From<TraceCursor> for i64 {
    fn from(cursor: TraceCursor) -> Self {
        cursor.0
    }
}

impl std::fmt::Display for TraceCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for TraceCursor {
    type Err = crate::Error;

    /// A cursor as [`Display`](std::fmt::Display) wrote it: a whole number from 0.
    fn from_str(text: &str) -> crate::Result<Self> {
        let n: i64 = text.trim().parse().map_err(|e| crate::Error::InvalidInput {
            what: "trace cursor",
            reason: format!("\"{text}\" is not a whole number from 0: {e}").into(),
        })?;
        Self::try_from(n)
    }
}

/// One page of the trace feed ([`crate::ExecutionTracker::traces_since`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TracePage {
    /// The traces after the cursor, in feed order, as they stand now (a trace started earlier
    /// may since have completed).
    pub traces: Vec<Trace>,
    /// The cursor to pass next: after the last trace of this page, or the cursor given when the
    /// page is empty.
    pub next: TraceCursor,
}

/// An optional instant as RFC 3339 with milliseconds.
pub(crate) fn opt_time<S: serde::Serializer>(
    ts: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => s.serialize_str(&time::to_rfc3339(*ts)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An invocation id is its row number: the plain number in JSON and in text, both ways.
    #[test]
    fn an_invocation_id_is_its_number_in_json_and_text() {
        for n in [i64::MIN, -1, 0, 1, 42, i64::MAX] {
            let id = InvocationId::from(n);
            assert_eq!(serde_json::to_value(id).ok(), Some(Value::from(n)));
            assert_eq!(serde_json::from_value::<InvocationId>(Value::from(n)).ok(), Some(id));
            assert_eq!((id.to_string(), i64::from(id), id.get()), (n.to_string(), n, n));
        }
    }

    #[test]
    fn token_usage_keeps_the_typescript_keys() {
        let usage = TokenUsage::new(100, 200);
        insta::assert_json_snapshot!((Outcome::ALL, TraceStatus::ALL, usage));
        let legacy: TokenUsage =
            serde_json::from_str(r#"{"inputTokens":1,"totalTokens":3}"#).unwrap_or_default();
        assert_eq!(legacy, TokenUsage { input_tokens: 1, output_tokens: 0, total_tokens: 3 });
    }
}
