//! Lock waits are bounded on both backends: a write that needs a lock another writer holds waits
//! up to the busy timeout (`Options::busy_timeout`, the CLI's `--lock-timeout`), then fails with
//! one `Locked` error naming the database, having written nothing; once the lock is released the
//! same write goes through. On SQLite the lock is the file's single writer; on PostgreSQL it is
//! whatever row, table or advisory lock the store takes (the connection's `lock_timeout`), so
//! every store that locks something is tried. Recovery claims with `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL and so never waits at all.

use std::sync::mpsc;
use std::time::Duration;

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::persistence::{
    Access, Backend, ConfigStore, Database, Error as DbError, Options, Param, Scope,
    SqliteStateStore, Tx,
};
use aigentflow::states::{
    Event, PersistedState, StateContext, StateMachine, StateStore, TaskId, WorkflowState,
};
use aigentflow::tracker::{ExecutionTracker, RecoveryOptions};
use aigentflow::{Error, Result};
use serde_json::json;

use crate::support::*;

/// The busy timeout of the handle whose writes are blocked.
const BUSY: Duration = Duration::from_millis(300);

/// `t`'s database opened again, waiting for locks for [`BUSY`] only.
fn impatient(t: &TestDb) -> Database {
    let options = Options { busy_timeout: BUSY, access: Access::ReadWrite, ..Options::default() };
    Database::open_with(t.location(), options).unwrap()
}

/// The `Locked` error inside `e`, whichever store returned it.
fn locked(e: &Error) -> Option<&DbError> {
    let inner = match e {
        Error::Persistence(p)
        | Error::Audit(aigentflow::audit::Error::Persistence(p))
        | Error::Tracker(aigentflow::tracker::Error::Persistence(p)) => p,
        _ => return None,
    };
    matches!(inner, DbError::Locked { .. }).then_some(inner)
}

/// Asserts that `e` is one `Locked` error naming `db` and a wait of at least [`BUSY`].
fn assert_locked(what: &str, db: &Database, e: &Error) {
    let Some(DbError::Locked { path, waited }) = locked(e) else {
        panic!("{what}: not a lock wait that ran out: {e:?}")
    };
    assert_eq!(path, db.location(), "{what}");
    assert!(*waited >= BUSY, "{what}: waited {waited:?}");
    let line = e.to_string();
    let expected = format!("database {} is locked by another process (waited ", path.display());
    assert!(line.starts_with(&expected) && line.ends_with(" s)"), "{what}: {line}");
    assert!(!line.contains('\n'), "{what}: {line}");
}

/// Runs `blocked` while a write on `holder`, on another thread, holds what `hold` locks in it;
/// that write commits once `blocked` has returned (or panicked).
fn while_held<T>(
    holder: &Database,
    hold: impl FnOnce(&Tx<'_>) -> Result<()> + Send,
    blocked: impl FnOnce() -> T,
) -> T {
    std::thread::scope(|scope| {
        // Made here, so that a panic of `blocked` drops `release` before the scope waits for
        // the holder, which that ends the wait of.
        let (held, is_held) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let holding = scope.spawn(move || {
            holder.write(|tx| {
                if tx.backend() == Backend::Postgres {
                    // Should lock waits not be bounded, the server ends this session once it has
                    // been idle in its transaction that long, and the waiting write then goes
                    // through: the test fails rather than hangs.
                    tx.execute_batch("SET LOCAL idle_in_transaction_session_timeout = '60s'")?;
                }
                hold(tx)?;
                held.send(()).unwrap();
                let _ = released.recv();
                Ok::<_, Error>(())
            })
        });
        if is_held.recv().is_err() {
            panic!("the holder failed before holding its lock: {:?}", holding.join());
        }
        let value = blocked();
        release.send(()).unwrap();
        holding.join().unwrap().unwrap_or_else(|e| panic!("the holder, once released: {e}"));
        value
    })
}

/// A task of its own for each case, stored at IDLE.
fn stored_task(states: &SqliteStateStore, task: &str) {
    let machine = StateMachine::new(StateContext::new("p".into(), task.into(), "prompt"));
    states.save_state(machine.persisted()).unwrap();
}

/// `state` one transition further.
fn advanced(state: PersistedState) -> PersistedState {
    let mut machine = StateMachine::from_persisted(state);
    let event = match machine.state() {
        WorkflowState::Idle => Event::Start,
        WorkflowState::Analyzing => Event::AnalysisComplete,
        WorkflowState::Orchestrating => Event::SpawnAgent,
        WorkflowState::AgentWorking => Event::AgentDone,
        _ => Event::RouteNext,
    };
    machine.apply(event, None).unwrap();
    machine.persisted().clone()
}

/// A load-modify-save of `task` in one write, as an orchestrator does.
fn step(states: &SqliteStateStore, tx: &Tx<'_>, task: &str) -> Result<()> {
    let task = TaskId::from(task);
    let state = states.load_in(tx, &task)?.unwrap_or_else(|| panic!("{task} is stored"));
    Ok(states.save_in(tx, &advanced(state))?)
}

type Hold<'a> = Box<dyn FnOnce(&Tx<'_>) -> Result<()> + Send + 'a>;
type Blocked<'a> = Box<dyn Fn(&Tx<'_>) -> Result<()> + 'a>;

on_both! {
/// Every store write that takes a lock, blocked by another writer holding it past the busy
/// timeout, fails with one `Locked` error naming the database (on PostgreSQL as on SQLite, never
/// a wait without end), keeps nothing of its transaction (a configuration change made before
/// the wait is gone), and goes through once the lock is released. The locks: the audit log's
/// head row (an append, a batch), a task's lock (a load-modify-save, a delete), a configuration
/// key another writer is inserting, the trace feed's row (taken at COMMIT).
fn a_write_waiting_past_the_busy_timeout_is_locked_naming_the_database_and_writes_nothing(t) {
    let (db, quick) = (t.db(), impatient(t));
    let (states, audit, config) =
        (SqliteStateStore::new(db.clone()), AuditLog::new(db.clone()), ConfigStore::new(db.clone()));
    let (q_states, q_audit, q_config, q_tracker) = (
        SqliteStateStore::new(quick.clone()),
        AuditLog::new(quick.clone()),
        ConfigStore::new(quick.clone()),
        ExecutionTracker::new(quick.clone()),
    );
    for task in ["saved", "deleted"] {
        stored_task(&states, task);
    }
    let entry = |action: &str| AuditEntry::new(action, Category::User);
    let cases: Vec<(&str, Hold<'_>, Blocked<'_>)> = vec![
        (
            "an audit append",
            Box::new(|tx| Ok(audit.log_in(tx, &entry("held")).map(drop)?)),
            Box::new(|tx| Ok(q_audit.log_in(tx, &entry("blocked")).map(drop)?)),
        ),
        (
            "an audit batch",
            Box::new(|tx| Ok(audit.log_in(tx, &entry("held")).map(drop)?)),
            Box::new(|tx| Ok(q_audit.log_all_in(tx, &[entry("b1"), entry("b2")]).map(drop)?)),
        ),
        (
            "a load-modify-save of a task",
            Box::new(|tx| step(&states, tx, "saved")),
            Box::new(|tx| step(&q_states, tx, "saved")),
        ),
        (
            "a delete of a task",
            Box::new(|tx| step(&states, tx, "deleted")),
            Box::new(|tx| Ok(q_states.delete_in(tx, &"deleted".into()).map(drop)?)),
        ),
        (
            "a configuration change",
            Box::new(|tx| Ok(config.set_in(tx, "shared", &Scope::Global, &json!(1)).map(drop)?)),
            Box::new(|tx| Ok(q_config.set_in(tx, "shared", &Scope::Global, &json!(2)).map(drop)?)),
        ),
        (
            "a trace start",
            Box::new(|tx| {
                // SQLite's one writer holds every lock; on PostgreSQL a trace's number comes
                // from the trace feed's row, locked at COMMIT.
                if tx.backend() == Backend::Postgres {
                    tx.query_row("SELECT last_seq FROM trace_feed FOR UPDATE", &[], |_| Ok(()))?;
                }
                Ok(())
            }),
            Box::new(|tx| {
                Ok(q_tracker.start_trace_in(tx, &"p".into(), &"t".into(), "go").map(drop)?)
            }),
        ),
    ];
    for (what, hold, blocked) in cases {
        let marker = format!("written before waiting on {what}");
        let attempt = || {
            quick.write(|tx| {
                q_config.set_in(tx, &marker, &Scope::Global, &json!(true))?;
                blocked(tx)
            })
        };
        let err = while_held(db, hold, || attempt().unwrap_err());
        assert_locked(what, &quick, &err);
        assert!(config.get(&marker, None).unwrap().is_none(), "{what}: its transaction was kept");
        attempt().unwrap_or_else(|e| panic!("{what}, once the lock is released: {e}"));
        assert!(config.get(&marker, None).unwrap().is_some(), "{what}");
    }
    // What went through once released is all there, and nothing else.
    assert_eq!(audit.count(&Default::default()).unwrap(), 2 + 3);
    assert!(audit.verify(None).unwrap().is_ok());
    let saved = states.load_state(&"saved".into()).unwrap().unwrap();
    assert_eq!(saved.history.len(), 2, "the held save and the one after it");
    assert!(states.load_state(&"deleted".into()).unwrap().is_none());
    let shared = config.get("shared", None).unwrap().unwrap();
    assert_eq!(shared.value, json!(2));
    assert_eq!(q_tracker.recent_traces(None, 10).unwrap().len(), 1);
}
}

on_both! {
/// A recovery pass never waits for a running trace another writer holds: on PostgreSQL it
/// claims traces `FOR UPDATE SKIP LOCKED`, so it skips the held one at once and succeeds, while
/// the heartbeat that needs that row waits out the busy timeout and is `Locked`. On SQLite the
/// one writer makes both wait, and both are `Locked`. Released, the pass judges the trace and the
/// heartbeat goes through.
fn a_recovery_pass_skips_a_trace_another_writer_holds_where_a_heartbeat_waits_for_it(t) {
    let (db, quick) = (t.db(), impatient(t));
    let tracker = ExecutionTracker::new(quick.clone());
    let trace = ExecutionTracker::new(db.clone()).start_trace(&"p".into(), &"t".into(), "go").unwrap();
    let options = RecoveryOptions::default();
    let hold: Hold<'_> = Box::new(|tx| {
        let beat = "UPDATE execution_traces SET heartbeat_at = heartbeat_at WHERE id = ?1";
        assert_eq!(tx.execute(beat, &[Param::text(trace.id.as_str())])?, 1);
        Ok(())
    });
    let (recovered, beat) =
        while_held(db, hold, || (tracker.recover(&options), tracker.heartbeat(&trace.id)));
    match t.backend() {
        Backend::Postgres => {
            let report = recovered.unwrap();
            assert_eq!((report.skipped, report.alive), (1, 0), "{report:?}");
            assert!(report.crashed.is_empty() && report.abandoned.is_empty(), "{report:?}");
        }
        Backend::Sqlite => assert_locked("a recovery pass", &quick, &recovered.unwrap_err().into()),
    }
    assert_locked("a heartbeat", &quick, &beat.unwrap_err().into());
    let report = tracker.recover(&options).unwrap();
    assert_eq!((report.skipped, report.alive), (0, 1), "{report:?}");
    tracker.heartbeat(&trace.id).unwrap();
}
}

on_both! {
/// A save that waited for another save of the same task to commit reads what that one stored:
/// the same state saved twice at once is stored once and both saves succeed, and a stale copy
/// saved while the newer one is being written is a `StaleSave`, not a duplicate-key error.
fn a_save_that_waited_for_another_of_its_task_reads_what_that_one_committed(t) {
    let states = SqliteStateStore::new(t.db().clone());
    let other = SqliteStateStore::new(Database::open(t.location()).unwrap());
    for (round, stale) in [false, true, false].into_iter().enumerate() {
        let task = format!("waited{round}");
        stored_task(&states, &task);
        let first = states.load_state(&TaskId::from(task.as_str())).unwrap().unwrap();
        let newer = advanced(advanced(first.clone()));
        let given = if stale { advanced(first) } else { newer.clone() };
        let (holding, held) = mpsc::channel();
        let holder = std::thread::scope(|scope| {
            let holder = scope.spawn(|| {
                t.db().write(|tx| {
                    states.save_in(tx, &newer)?;
                    holding.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(400));
                    Ok::<_, Error>(())
                })
            });
            held.recv().unwrap();
            let waited = other.save_state(&given);
            (holder.join().unwrap(), waited)
        });
        holder.0.unwrap();
        match (stale, holder.1) {
            (false, Ok(())) => {}
            (true, Err(aigentflow::persistence::Error::StaleSave { .. })) => {}
            (_, other) => panic!("round {round}: {other:?}"),
        }
        let stored = states.load_state(&TaskId::from(task.as_str())).unwrap().unwrap();
        assert_eq!(stored, newer, "round {round}");
    }
}
}
