//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the WAL size limit, so that
//! one commit waits for copying pages into the database file and for its fsync (milliseconds,
//! where a commit otherwise takes tens of microseconds). Here the pool's connections only
//! checkpoint as a safety net when the WAL grows very large, and a background thread runs a
//! PASSIVE checkpoint (it never blocks readers or writers) after every [`EVERY`] commits, or
//! within a second of the last commit.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Commits between background checkpoints.
pub(crate) const EVERY: u64 = 128;
/// WAL pages at which a committing connection checkpoints anyway (the background thread is behind).
pub(crate) const SAFETY_NET_PAGES: i64 = 16_384;

#[derive(Debug, Default)]
struct State {
    pending: u64,
    stop: bool,
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

    /// Counts a commit; wakes the thread when enough have gathered.
    pub(crate) fn committed(&self) {
        let mut state = lock(&self.shared.0);
        state.pending += 1;
        if state.pending == EVERY {
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
        while !state.stop && state.pending < EVERY {
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
