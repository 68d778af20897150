//! `audit tail`: the entries after a cursor, and with `--follow` every later one as it commits,
//! from any process, until Ctrl-C, SIGTERM or a closed stdout.
//!
//! Following never spins. A [`Watch`](aigentflow_persistence::Watch) made before the first
//! read blocks until another connection commits (LISTEN/NOTIFY on PostgreSQL, `PRAGMA
//! data_version` looked at between sleeps on SQLite), at most [`TICK`] at a time; the log is
//! then read again by cursor. A wake-up is only a hint: the log is also read every [`RESYNC`]
//! without one, so an entry whose hint was lost is printed all the same. Each entry is one whole
//! line, printed once, in id order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigentflow_audit::{AuditLog, AuditRecord, MAX_PAGE};
use aigentflow_persistence::Watched;
use anyhow::Context;

use crate::out::{opt, say, when};
use crate::{Ctx, Done};

/// The longest one wait lasts: how soon Ctrl-C, SIGTERM or a closed stdout is noticed.
const TICK: Duration = Duration::from_millis(250);

/// The log is read by cursor at least this often while following, hint or not.
const RESYNC: Duration = Duration::from_secs(2);

/// Prints the entries after `after` (or the last `limit` entries), at most `limit`; with
/// `follow`, then every later entry as it commits.
pub fn run(ctx: &Ctx, after: Option<i64>, limit: u64, follow: bool) -> anyhow::Result<Done> {
    let db = ctx.read()?;
    let log = AuditLog::new(db.clone());
    // Both before the first read: a signal from here on ends the loop between two lines, and
    // a commit from here on wakes the first wait, so nothing committed after the read is lost.
    let stop = if follow { Some(Stop::install()?) } else { None };
    let watch = if follow { Some(db.watch(Watched::AuditLog)?) } else { None };
    let first = match after {
        Some(id) => log.since(id, limit)?,
        None => log.latest(limit)?,
    };
    let mut cursor = after.unwrap_or(0);
    print(ctx, &first, &mut cursor)?;
    let (Some(stop), Some(mut watch)) = (stop, watch) else { return Ok(Done::Ok) };
    let mut hinted = false;
    let mut last_read = Instant::now();
    loop {
        // A failed write to stdout does not stop a command by itself (see `out`): a follower,
        // whose output is all its work, stops here.
        if stop.requested() || stdout_is_closed() || crate::out::stdout_failed().is_some() {
            return Ok(Done::Ok);
        }
        if hinted || last_read.elapsed() >= RESYNC {
            last_read = Instant::now();
            loop {
                let page = log.since(cursor, MAX_PAGE)?;
                print(ctx, &page, &mut cursor)?;
                let done = page.len() < MAX_PAGE as usize;
                if done || stop.requested() || crate::out::stdout_failed().is_some() {
                    break;
                }
            }
        }
        hinted = watch.wait(TICK)?;
    }
}

/// Prints each entry on a line of its own and moves `cursor` past it: a JSON object (the fields
/// of `audit query --json`) with `--json`, else id, time, category, action, project, task and
/// agent, sanitised like every line for people.
fn print(ctx: &Ctx, records: &[AuditRecord], cursor: &mut i64) -> anyhow::Result<()> {
    for r in records {
        if ctx.out.json {
            crate::out::write_json(&serde_json::to_string(r)?);
        } else {
            say!(
                "{}  {}  {}  {}  {}  {}  {}",
                r.id,
                when(r.timestamp),
                r.category,
                r.action,
                opt(r.project_id.as_ref()),
                opt(r.task_id.as_ref()),
                opt(r.agent.as_deref())
            );
        }
        *cursor = r.id;
    }
    Ok(())
}

/// Set by SIGINT or SIGTERM: the follower ends before its next read or wait (whole lines
/// printed, stdout flushed) with exit code 0. A second signal ends the process at once, with
/// exit code 1, as a stuck follower should.
struct Stop(Arc<AtomicBool>);

impl Stop {
    fn install() -> anyhow::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&flag))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
                .context("cannot handle Ctrl-C and SIGTERM")?;
        }
        Ok(Self(flag))
    }

    fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether stdout is a pipe or socket whose reader has gone (`aigentflow audit tail --follow |
/// head -3` after head exits): the kernel reports it as an error or hang-up on the descriptor,
/// found without writing anything.
fn stdout_is_closed() -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    match poll(&mut fds, Some(&now)) {
        Ok(_) => fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP),
        Err(_) => false,
    }
}
