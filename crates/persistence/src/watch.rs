//! Waiting for what other connections commit, without a busy loop: [`Watch`], made by
//! [`Database::watch`](crate::Database::watch). A wake-up is only a hint that something may be
//! new: the follower reads again by cursor, and also reads on a timer of its own, so a hint
//! that never comes loses nothing.
//!
//! * PostgreSQL: a connection of its own, outside the pool, LISTENs on the channel the schema's
//!   triggers signal (`migrations-postgres/V2__feeds.sql`): `aigentflow_audit_logs` when rows
//!   are appended to the audit log, `aigentflow_execution_traces` when a trace is numbered in
//!   the trace feed. The server delivers a notification when the writing transaction commits,
//!   and the wait blocks in the driver until one comes or the time runs out.
//! * SQLite: a read-only connection of its own looks at `PRAGMA data_version` every
//!   [`SQLITE_POLL`] and sleeps in between. The number changes whenever another connection (of
//!   any process) commits to the file, whatever it wrote, so any commit wakes a follower of
//!   either feed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::Result;

/// How often a watch on SQLite looks at `PRAGMA data_version`: one read of the WAL index
/// header, between sleeps.
pub const SQLITE_POLL: Duration = Duration::from_millis(200);

/// What a [`Watch`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Watched {
    /// Entries appended to the audit log.
    AuditLog,
    /// Traces started (numbered in the trace feed).
    Traces,
}

impl Watched {
    /// The PostgreSQL channel the schema's triggers signal for it.
    pub(crate) fn channel(self) -> &'static str {
        match self {
            Self::AuditLog => "aigentflow_audit_logs",
            Self::Traces => "aigentflow_execution_traces",
        }
    }
}

/// Waits for commits of other connections (see the module doc): [`Watch::wait`].
#[derive(Debug)]
pub struct Watch {
    how: How,
}

#[derive(Debug)]
enum How {
    Sqlite { conn: Connection, version: i64, path: PathBuf },
    Postgres(Box<crate::pg::Listener>),
}

impl Watch {
    /// A watch on a SQLite file through `conn`, a connection of its own: commits from now on
    /// wake it.
    pub(crate) fn sqlite(conn: Connection, path: PathBuf) -> Result<Self> {
        let version = data_version(&conn, &path)?;
        Ok(Self { how: How::Sqlite { conn, version, path } })
    }

    /// A watch through a PostgreSQL listener.
    pub(crate) fn postgres(listener: crate::pg::Listener) -> Self {
        Self { how: How::Postgres(Box::new(listener)) }
    }

    /// Blocks until something may have been committed since the watch was made or last woke
    /// (true), or `timeout` has passed without a sign of it (false). A true is a hint, not a
    /// promise: read again by cursor, and read on a timer too.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        match &mut self.how {
            How::Postgres(listener) => listener.wait(timeout),
            How::Sqlite { conn, version, path } => {
                let deadline = Instant::now() + timeout;
                loop {
                    let now = data_version(conn, path)?;
                    if now != *version {
                        *version = now;
                        return Ok(true);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    std::thread::sleep(left.min(SQLITE_POLL));
                }
            }
        }
    }
}

/// The file's `data_version` as `conn` sees it.
fn data_version(conn: &Connection, path: &std::path::Path) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(crate::migrate::classify(path))
}
