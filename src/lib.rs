//! aigentflow persistence (CP0): one façade over the workspace crates.
//!
//! * [`states`]: the workflow state machine (no I/O).
//! * [`audit`]: the append-only, hash-chained audit log and its exports.
//! * [`lessons`]: lessons learned, searched with SQLite FTS5 or PostgreSQL full-text search.
//! * [`persistence`]: the SQLite database, migrations, redaction, state and configuration stores.
//! * [`tracker`]: execution traces, agent invocations, metrics and crash recovery.
//! * [`approvals`]: durable approval requests, decided or expired in one transaction with the
//!   task's transition and its audit entry.
//! * [`workflows`]: workflow definitions as versioned files, cached in the database, tasks
//!   bound to the one they started under, pictures of the graph.
//! * [`bundle`]: a task's execution exported as a JSON Lines bundle and imported into another
//!   database (its audit entries appended to that chain with their provenance).
//!
//! Ids are typed on both sides, writes and reads alike: [`ProjectId`], [`TaskId`], [`TraceId`],
//! [`InvocationId`] and [`LessonId`] are re-exported here; so are [`chrono`] and [`serde_json`],
//! whose types the stores' signatures use, so a caller needs no path but `aigentflow::…`.
//!
//! [`Error`] holds an error of any of them, so one closure that spans several stores in a
//! transaction (`db.write(|tx| { states.save_in(tx, …)?; audit.log_in(tx, …)?; Ok(()) })`) uses
//! `?` on every store.
//!
//! The integration tests of the whole layer live in this package's `tests/`; the
//! `aigentflow-worker` binary is the worker process those tests spawn.

pub use aigentflow_approvals as approvals;
pub use aigentflow_audit as audit;
pub use aigentflow_bundle as bundle;
pub use aigentflow_core_states as states;
pub use aigentflow_lessons as lessons;
pub use aigentflow_persistence as persistence;
pub use aigentflow_tracker as tracker;
pub use aigentflow_workflows as workflows;

/// The ids every store takes and hands back, in one place: a project's and a task's (from
/// [`states`]), a trace's and an agent invocation's (from [`tracker`]), a lesson's (from
/// [`lessons`]). A string id is made from text with `.into()` (`AuditQuery { project_id:
/// Some("p".into()), .. }`), compares with text (`id == "p"`) and serialises as the plain text;
/// an invocation id is the number its row was given.
pub use lessons::LessonId;
pub use states::{ProjectId, TaskId};
pub use tracker::{InvocationId, TraceId};

/// The crates whose types the stores' signatures use (`chrono::DateTime<Utc>` instants and
/// `TimeDelta` leases, `serde_json::Value` details, metadata and configuration values), at the
/// versions the stores are built with.
pub use chrono;
pub use serde_json;

/// An error of any crate of the layer: what a transaction spanning several stores returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database, the state store or the configuration store.
    #[error(transparent)]
    Persistence(#[from] persistence::Error),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] audit::Error),
    /// The lessons store.
    #[error(transparent)]
    Lessons(#[from] lessons::Error),
    /// The execution tracker.
    #[error(transparent)]
    Tracker(#[from] tracker::Error),
    /// The approvals store.
    #[error(transparent)]
    Approvals(#[from] approvals::Error),
    /// Workflow definitions (a file that is not one, a changed definition, an unknown task).
    #[error(transparent)]
    Workflows(#[from] workflows::Error),
    /// A bundle's export or import.
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    /// The state machine (a refused transition, a table that breaks an invariant).
    #[error(transparent)]
    States(#[from] states::Error),
}

/// `Result` with the layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
