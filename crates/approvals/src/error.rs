use aigentflow_core_states::{time, WorkflowState};
use aigentflow_persistence::SafeText;
use chrono::{DateTime, Utc};

use crate::model::Status;

/// What went wrong with an approval. Every variant names the request or task at fault; ids and
/// texts from the caller pass the redaction policy before they are shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the database layer (the state store included).
    #[error(transparent)]
    Persistence(#[from] aigentflow_persistence::Error),
    /// From the audit log.
    #[error(transparent)]
    Audit(#[from] aigentflow_audit::Error),
    /// No request with this id.
    #[error("approval {id} not found")]
    NotFound { id: SafeText },
    /// A request for a task the state store does not hold.
    #[error("task {task_id} not found; save its state before requesting an approval")]
    UnknownTask { task_id: SafeText },
    /// The task already waits on a request: a task has one pending request at a time.
    #[error("task {task_id} already waits on approval {id}; decide that one first")]
    AlreadyPending { task_id: SafeText, id: SafeText },
    /// A decision on a request that was already decided or expired: a request ends once.
    #[error("approval {id} is {status}, not pending: a request is decided once")]
    NotPending { id: SafeText, status: Status },
    /// A decision on a pending request whose deadline has passed (by the database's clock, read
    /// as the expiry pass reads it, [`Approval::is_due`](crate::Approval::is_due)): it expired
    /// then, whether or not an expiry pass has recorded it yet, and a reviewer who comes late
    /// cannot overturn the timeout.
    #[error(
        "approval {id} expired at {}: a request past its deadline cannot be decided",
        time::to_rfc3339(*.deadline)
    )]
    Expired { id: SafeText, deadline: DateTime<Utc> },
    /// A decision on a pending request whose task has left AWAITING_APPROVAL by another event
    /// (an abort, an error): there is nothing left to approve.
    #[error(
        "approval {id} cannot be decided: task {task_id} is in state {state}, no longer AWAITING_APPROVAL"
    )]
    TaskMoved { id: SafeText, task_id: SafeText, state: WorkflowState },
    /// The task's transition table refuses the event (NEEDS_APPROVAL while the task is not in
    /// AGENT_COMPLETE, or its last output does not need approval; a table without the rule).
    #[error("task {task_id}: {source}")]
    Refused { task_id: SafeText, source: aigentflow_core_states::Error },
    /// A deadline the request cannot have.
    #[error("invalid deadline {deadline}: {reason}")]
    BadDeadline { deadline: String, reason: String },
    /// A caller gave a value the store cannot take.
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: SafeText },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is a "no such request" error.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}
