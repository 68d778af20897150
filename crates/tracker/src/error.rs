use aigentflow_persistence::SafeText;

/// What went wrong in the execution tracker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the database layer.
    #[error(transparent)]
    Persistence(#[from] aigentflow_persistence::Error),
    /// A caller gave a value the tracker cannot take.
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: SafeText },
    /// No trace with this id.
    #[error("trace {id} not found")]
    UnknownTrace { id: SafeText },
    /// No span with this id.
    #[error("span {id} not found")]
    UnknownSpan { id: SafeText },
    /// No invocation with this id.
    #[error("agent invocation {id} not found")]
    UnknownInvocation { id: crate::InvocationId },
    /// A span of a batch ([`crate::ExecutionTracker::record_spans`]) is refused: `index` is its
    /// place in the batch (from 0), `error` what its one-at-a-time recording would have said.
    /// Nothing of the batch is written.
    #[error("span {index} of the batch: {error}")]
    InBatch { index: usize, error: Box<Error> },
    /// The trace is not in a status that allows the operation.
    #[error("trace {id} is {status}; cannot {action}")]
    WrongStatus { id: SafeText, status: SafeText, action: &'static str },
}

impl From<aigentflow_core_states::UnknownVariant> for Error {
    fn from(e: aigentflow_core_states::UnknownVariant) -> Self {
        Self::InvalidInput { what: e.what, reason: e.to_string().into() }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
