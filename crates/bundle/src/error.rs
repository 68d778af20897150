//! The crate's [`Error`].

use aigentflow_persistence::SafeText;

/// What went wrong exporting or importing a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the database layer.
    #[error(transparent)]
    Persistence(#[from] aigentflow_persistence::Error),
    /// From the execution tracker (an imported invocation's agent span).
    #[error(transparent)]
    Tracker(#[from] aigentflow_tracker::Error),
    /// From the audit log.
    #[error(transparent)]
    Audit(#[from] aigentflow_audit::Error),
    /// The workflow definitions: the bundle's definition is loaded here under another content.
    #[error(transparent)]
    Workflows(#[from] aigentflow_workflows::Error),
    /// A line of the bundle is not what the format allows there; nothing was imported.
    #[error("bundle line {line}: {reason}")]
    Invalid { line: u64, reason: SafeText },
    /// A line of the bundle is longer than any line the format writes; nothing was imported.
    #[error("bundle line {line} is longer than {max} bytes")]
    LineTooLong { line: u64, max: usize },
    /// The bundle ends before its end record; nothing was imported.
    #[error("bundle ends after line {line} without its end record: the file is truncated")]
    Truncated { line: u64 },
    /// A task to export is not in the database.
    #[error("task {task} not found")]
    TaskNotFound { task: SafeText },
    /// A task of the bundle is in the database with other content; nothing was imported.
    #[error("task {task} already exists here with different {what}: nothing imported")]
    Conflict { task: SafeText, what: &'static str },
    /// An id of the bundle is taken here by a row of another task; nothing was imported.
    #[error("{what} {id} of task {task} already exists here (of another task): nothing imported")]
    IdTaken { what: &'static str, id: SafeText, task: SafeText },
    /// An audit row of the bundle claims to be a row of a database whose row this one knows
    /// with another hash (this database itself, or one it imported that row from before): the
    /// bundle was edited (or its source is a database made anew at the same location); nothing
    /// was imported.
    #[error("audit row {id} of {source_db} in the bundle differs from that row as this database knows it (hash {known}…, the bundle's {given}…): the bundle was edited, or it comes from another database made at that location since; nothing imported")]
    OriginDiffers { id: i64, source_db: SafeText, known: SafeText, given: SafeText },
    /// A task of the bundle would be stored in a form the state store cannot read back;
    /// nothing was imported.
    #[error("task {task} cannot be imported: the state store could not read it back ({reason}): nothing imported")]
    Unreadable { task: SafeText, reason: SafeText },
    /// A stored row cannot be exported as it is (e.g. an audit row whose hash does not match).
    #[error("cannot export task {task}: {reason}")]
    NotExportable { task: SafeText, reason: SafeText },
    /// The bundle was to be signed by a given key and carries no signature; nothing was
    /// imported.
    #[error("the bundle is not signed, and a signed one was asked for: nothing imported")]
    Unsigned,
    /// The bundle was signed by another key than the one given; nothing was imported.
    #[error("the bundle was signed by another key ({found:.16}…), not the one given ({given:.16}…): nothing imported")]
    OtherSigner { found: String, given: String },
    /// Reading the bundle or writing the export failed.
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
