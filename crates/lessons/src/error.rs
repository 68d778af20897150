use aigentflow_persistence::SafeText;

/// What went wrong in the lessons store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the database layer.
    #[error(transparent)]
    Persistence(#[from] aigentflow_persistence::Error),
    /// A caller gave a value the store cannot take.
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: SafeText },
    /// No lesson with this id.
    #[error("lesson {id} not found")]
    NotFound { id: SafeText },
    /// A raw-mode query that FTS5 cannot parse.
    #[error("bad search query \"{query}\": {reason}")]
    BadQuery { query: SafeText, reason: SafeText },
    /// What this backend does not offer (raw FTS5 syntax on PostgreSQL), and what to do instead.
    #[error("{what} is not available on {backend}; {instead}")]
    Unsupported { what: &'static str, backend: &'static str, instead: &'static str },
}

impl From<aigentflow_core_states::UnknownVariant> for Error {
    fn from(e: aigentflow_core_states::UnknownVariant) -> Self {
        Self::InvalidInput { what: e.what, reason: e.to_string().into() }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
