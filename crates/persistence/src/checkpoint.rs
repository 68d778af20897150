//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the WAL size limit, so that
//! one commit waits for copying pages into the database file and for its fsync (milliseconds,
//! where a commit otherwise takes tens of microseconds). Here the pool's connections only
//! checkpoint as a safety net when the WAL grows very large, and a background thread runs a
//! PASSIVE checkpoint (it never blocks readers or writers) after every [`EVERY`] commits, or
//! [`EVERY_ROWS`] rows changed, or within a second of the last commit.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Commits between background checkpoints.
pub(crate) const EVERY: u64 = 128;
/// Rows changed between background checkpoints, however few the commits: commits of large
/// batches (a thousand rows, each a page or more with its indexes) filled the WAL to the safety
/// net long before [`EVERY`] of them, and the commit crossing it then checkpointed on its
/// caller's time (400,000 spans in batches of 1,000 took 48 s where they took 35 without it).
pub(crate) const EVERY_ROWS: u64 = 2048;
/// WAL pages at which a committing connection checkpoints anyway (the background thread is behind).
pub(crate) const SAFETY_NET_PAGES: i64 = 16_384;

#[derive(Debug, Default)]
struct State {
    /// Commits since the last checkpoint.
    pending: u64,
    /// Rows those commits changed.
    rows: u64,
    stop: bool,
}

impl State {
    /// Whether enough has been committed for a checkpoint.
    fn due(&self) -> bool {
        self.pending >= EVERY || self.rows >= EVERY_ROWS
    }
}

/// The handle of the checkpoint thread; dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to the database.
    pub(crate) fn start(conn: Connection) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("aigentflow-checkpoint".into())
            .spawn(move || run(&conn, &theirs))?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Counts a commit that changed `rows` rows; wakes the thread when enough have gathered.
    pub(crate) fn committed(&self, rows: u64) {
        let mut state = lock(&self.shared.0);
        let was_due = state.due();
        state.pending += 1;
        state.rows = state.rows.saturating_add(rows);
        if !was_due && state.due() {
            self.shared.1.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        lock(&self.shared.0).stop = true;
        self.shared.1.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(conn: &Connection, shared: &(Mutex<State>, Condvar)) {
    let (mutex, wake) = shared;
    let mut state = lock(mutex);
    loop {
        while !state.stop && !state.due() {
            let (next, timeout) =
                wake.wait_timeout(state, Duration::from_secs(1)).unwrap_or_else(|e| e.into_inner());
            state = next;
            if timeout.timed_out() && state.pending > 0 {
                break;
            }
        }
        if state.stop {
            return;
        }
        state.pending = 0;
        state.rows = 0;
        drop(state);
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match result {
            Ok((log, done)) => tracing::trace!(log, done, "checkpointed the WAL"),
            Err(e) => tracing::debug!(error = %e, "background checkpoint failed; will retry"),
        }
        state = lock(mutex);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint is due after [`EVERY`] commits however small, or after commits that changed
    /// [`EVERY_ROWS`] rows however few.
    #[test]
    fn a_checkpoint_is_due_by_commits_or_by_rows_changed() {
        let due = |pending, rows| State { pending, rows, stop: false }.due();
        assert!(!due(0, 0));
        assert!(!due(EVERY - 1, EVERY - 1));
        assert!(due(EVERY, 0));
        assert!(due(EVERY, 1));
        assert!(!due(1, EVERY_ROWS - 1));
        assert!(due(1, EVERY_ROWS));
        assert!(due(2, u64::MAX));
        assert!(!due(EVERY / 2, EVERY_ROWS / 2));
    }
}
