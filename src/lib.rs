//! aigentflow persistence (CP0): one façade over the workspace crates.
//!
//! * [`states`]: the workflow state machine (no I/O).
//! * [`audit`]: the append-only, hash-chained audit log and its exports.
//! * [`lessons`]: lessons learned, searched with SQLite FTS5 or PostgreSQL full-text search.
//! * [`persistence`]: the SQLite database, migrations, redaction, state and configuration stores.
//! * [`tracker`]: execution traces, agent invocations, metrics and crash recovery.
//!
//! The integration tests of the whole layer live in this package's `tests/`; the
//! `aigentflow-worker` binary is the worker process those tests spawn.

pub use aigentflow_audit as audit;
pub use aigentflow_core_states as states;
pub use aigentflow_lessons as lessons;
pub use aigentflow_persistence as persistence;
pub use aigentflow_tracker as tracker;
