use crate::ids::{CheckpointId, TaskId};
use crate::names::{Event, WorkflowState};
use crate::table::Guard;

/// What went wrong in the state machine. Every variant names the state, event or id at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The table has no rule for this event in this state (or the state is closed).
    #[error("event {event} is not allowed in state {state}")]
    NotAllowed { state: WorkflowState, event: Event },
    /// A rule exists but its guard does not hold.
    #[error("event {event} is refused in state {state}: guard {guard} does not hold")]
    GuardFailed { state: WorkflowState, event: Event, guard: Guard },
    /// A restore was asked for but the task has no checkpoint.
    #[error("task {task_id} has no checkpoint to restore")]
    NoCheckpoint { task_id: TaskId },
    /// A restore named a checkpoint the task does not have.
    #[error("task {task_id} has no checkpoint {checkpoint_id}")]
    UnknownCheckpoint { task_id: TaskId, checkpoint_id: CheckpointId },
    /// The checkpoint's context cannot be merged back into the task's context.
    #[error("checkpoint {checkpoint_id} holds a context that does not fit: {source}")]
    BadCheckpoint { checkpoint_id: CheckpointId, source: serde_json::Error },
    /// A transition table failed its check.
    #[error("invalid transition table: {0}")]
    InvalidTable(String),
    /// A workflow definition's text is not a valid definition; `line` and `column` (from 1) say
    /// where, when the problem is at one place of the text.
    #[error("invalid workflow{}: {reason}", place(*line, *column))]
    InvalidWorkflow { line: Option<usize>, column: Option<usize>, reason: String },
}

/// " at line L column C", or nothing.
fn place(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l} column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
