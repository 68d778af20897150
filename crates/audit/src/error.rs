use aigentflow_persistence::SafeText;

/// What went wrong in the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the database layer.
    #[error(transparent)]
    Persistence(#[from] aigentflow_persistence::Error),
    /// A caller gave a value the audit log cannot take.
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: SafeText },
    /// The log's ids have reached the largest there is (a row written around the log can take
    /// it): no entry can follow.
    #[error("the audit log is full: no id follows {last_id}, the largest there is")]
    Full { last_id: i64 },
    /// Writing an export failed.
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
    /// Encoding a CSV row failed.
    #[error("cannot write the CSV export: {0}")]
    Csv(#[from] csv::Error),
    /// Encoding a JSON row failed.
    #[error("cannot write the JSON export: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<aigentflow_core_states::UnknownVariant> for Error {
    fn from(e: aigentflow_core_states::UnknownVariant) -> Self {
        Self::InvalidInput { what: e.what, reason: e.to_string().into() }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
