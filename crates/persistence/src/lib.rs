//! The SQLite foundation of aigentflow: one database file shared by every store.
//!
//! * [`Database`]: a cheap `Clone + Send + Sync` handle. How it opens is [`Access`]: `Create`
//!   makes the folder and the file; `Create` and `ReadWrite` set WAL, foreign keys, the busy
//!   timeout and the durability, and run the embedded migrations (`migrations/` at the workspace
//!   root) inside one `IMMEDIATE` transaction, adopting a database written by the TypeScript
//!   version in place; `ReadOnly` and `Snapshot` never write. [`Database::write`] runs a closure
//!   in an `IMMEDIATE` transaction ([`Tx`]) that several stores can share (decision 4).
//! * [`Param`]: the only way a value reaches a statement; text becomes one only through
//!   [`redact`], the one redaction policy (decision 9).
//! * [`SqliteStateStore`]: the `StateStore` of `aigentflow-core-states` on SQLite.
//! * [`ConfigStore`]: configuration values by key and scope.
//! * [`Watch`]: waits for other connections' commits to the audit log or the trace feed
//!   (LISTEN/NOTIFY on PostgreSQL, `PRAGMA data_version` on SQLite), a hint to read again by
//!   cursor.
//! * [`Output`]: the one rule for every file the command writes (exports, backups): a regular
//!   file through an exclusive temporary file renamed into place, a pipe or device straight
//!   through, the database's own files refused (decision 14).
//! * [`Error`]: one error for both backends. A driver's error becomes [`Error::Sqlite`] or
//!   [`Error::Postgres`] (the database's code and message), or a variant that names the file
//!   and what to do; [`Error::is_busy`], [`Error::is_corrupt`], [`Error::is_statement_error`]
//!   and [`Error::db_message`] classify them for the stores.
//!
//! Architecture invariant: every write runs inside [`Database::write`], so it is `IMMEDIATE`,
//! atomic, and waits for other writers instead of failing with `SQLITE_BUSY`.
//!
//! Architecture invariant: no driver type (rusqlite, postgres, r2d2, refinery) appears in a
//! public signature or in [`Error`], but [`Tx::sqlite`], the escape hatch (the tests of
//! `no_driver_types.rs`).

pub mod audit_chain;
mod bind;
mod checkpoint;
mod config;
mod copy;
mod db;
mod error;
mod location;
mod maintenance;
pub mod migrate;
#[cfg(test)]
mod no_driver_types;
pub mod output;
mod pg;
pub mod redact;
mod sets;
mod state_store;
mod watch;

pub use aigentflow_core_states::{time, Clock, ManualClock, SystemClock};
pub use bind::{
    check_json_depth, Cell, Clean, FromCell, Param, Row, Rows, Stmt, TextRow, MAX_JSON_DEPTH,
};
pub use config::{ConfigEntry, ConfigStore, Scope};
pub use copy::{CopyReport, SourceCheck};
pub use db::{
    Access, Backend, Builder, Database, Durability, Options, SchemaVersion, Tx, DB_ENV,
    DEFAULT_PATH, SLOW_TARGET,
};
pub use error::{Error, NotWritable, Result, SafeText};
pub use location::Location;
pub use maintenance::{BackupReport, ForeignKeyProblem, TABLES};
pub use output::{check_database_destination, open_input, Leftover, Output};
pub use pg::{display_url, is_url as is_postgres_url};
pub use sets::{AppMigration, MigrationSet, SetVersion, CORE_SET};
pub use state_store::{ResumableTask, SqliteStateStore, TaskSummary};
pub use watch::{Watch, Watched, SQLITE_POLL};

/// The SQLite library this build embeds, for status reports.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}
