//! RELIABILITY.md R20, fault injection: a write that fails in the middle of its transaction
//! (SQLite's page limit reached: a full disk) is an error to the caller, `integrity_check` stays
//! ok and nothing is half-written: the database holds exactly what it held before, byte for byte
//! in every table (FTS shadow tables included). Each operation is tried with every page limit
//! from none to spare up to the one it fits in, so the failure strikes at each point of it.

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::lessons::{self, LessonsStore, NewLesson};
use aigentflow::persistence::{Database, Error as PError, SqliteStateStore, Tx};
use aigentflow::states::{Event, StateContext, StateMachine, StateStore};
use aigentflow::tracker::{self, ExecutionTracker, NewInvocation, Outcome};
use rusqlite::types::Value;
use serde_json::json;

use crate::support::*;

/// Every row of every table (virtual tables excepted: their shadow tables hold their data).
type Dump = Vec<(String, Vec<Vec<Value>>)>;

fn dump(db: &Database) -> Dump {
    db.read(|tx| {
        let conn = tx.sqlite().unwrap();
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut all = Vec::new();
        for table in tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1"))?;
            let width = stmt.column_count();
            let rows = stmt
                .query_map([], |r| (0..width).map(|i| r.get::<_, Value>(i)).collect())?
                .collect::<Result<Vec<Vec<Value>>, _>>()?;
            all.push((table, rows));
        }
        Ok::<_, PError>(all)
    })
    .unwrap()
}

fn integrity(db: &Database) -> String {
    db.read(|tx| {
        Ok::<_, PError>(tx.sqlite().unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    })
    .unwrap()
}

/// Runs `f` in one write transaction whose connection may grow the file by only `extra` pages
/// (beyond the free pages it already has), then lifts the limit again.
fn with_limit<T, E: From<PError>>(
    db: &Database,
    extra: i64,
    f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
) -> Result<T, E> {
    db.write(|tx| {
        let conn = tx.sqlite().unwrap();
        let limit = |pages: i64| {
            conn.pragma_update_and_check(None, "max_page_count", pages, |r| r.get::<_, i64>(0))
                .map_err(PError::from)
        };
        let pages: i64 =
            conn.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(PError::from)?;
        let unlimited = limit(i64::from(u32::MAX))?;
        limit(pages + extra)?;
        let result = f(tx);
        limit(unlimited)?;
        result
    })
}

/// Tries `op` with ever larger page limits until it fits. Every failure must be a disk-full
/// error that leaves the database exactly as before, integrity ok; the fitting run must succeed.
/// Returns how many failures there were.
fn fails_cleanly_until_it_fits<E: From<PError> + std::fmt::Display>(
    what: &str,
    db: &Database,
    mut op: impl FnMut(&Tx<'_>) -> Result<(), E>,
) -> usize {
    let before = dump(db);
    for extra in 0..10_000 {
        match with_limit(db, extra, &mut op) {
            Ok(()) => {
                assert_ne!(dump(db), before, "{what}: the fitting run wrote");
                assert_eq!(integrity(db), "ok", "{what}");
                return usize::try_from(extra).unwrap();
            }
            Err(e) => {
                assert!(e.to_string().contains("full"), "{what}, {extra} pages: {e}");
                assert_eq!(integrity(db), "ok", "{what}, {extra} pages: {e}");
                assert!(dump(db) == before, "{what}, {extra} pages: half-written after {e}");
            }
        }
    }
    panic!("{what}: never fitted");
}

/// Text of many distinct words, so nothing about it is small.
fn prose(seed: usize, words: usize) -> String {
    (0..words).map(|i| format!("word{}x{}", seed, i * 7919 % 100_003)).collect::<Vec<_>>().join(" ")
}

fn databases() -> Vec<(&'static str, Database, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("faults.db"));
    vec![
        ("memory", Database::open_in_memory().unwrap(), tempfile::tempdir().unwrap()),
        ("file", file, dir),
    ]
}

#[test]
fn a_state_save_with_its_audit_entry_that_runs_out_of_space_writes_nothing() {
    for (kind, db, _dir) in databases() {
        let states = SqliteStateStore::new(db.clone());
        let audit = AuditLog::new(db.clone());
        let mut machine =
            StateMachine::new(StateContext::new("p".into(), "task-full".into(), prose(1, 50)));
        machine.apply(Event::Start, None).unwrap();
        states.save_state(machine.persisted()).unwrap();
        // The next save appends transitions and checkpoints and rewrites a large context.
        machine.context_mut().metadata.insert("notes".into(), json!(prose(2, 4_000)));
        machine.apply(Event::AnalysisComplete, None).unwrap();
        machine.create_checkpoint(vec!["a.rs".into()]);
        machine.context_mut().agent_queue.push("coder".into());
        machine.apply(Event::SpawnAgent, None).unwrap();
        machine.create_checkpoint(vec!["b.rs".into()]);
        let entry = AuditEntry {
            details: Some(json!({"big": prose(3, 1_000)})),
            ..AuditEntry::new("saved", Category::State)
        };
        let failures =
            fails_cleanly_until_it_fits(kind, &db, |tx| -> Result<(), aigentflow::audit::Error> {
                states.save_in(tx, machine.persisted())?;
                audit.log_in(tx, &entry)?;
                Ok(())
            });
        assert!(failures > 5, "{kind}: {failures}");
        let stored = states.load_state(&"task-full".into()).unwrap().unwrap();
        assert_eq!(stored.history.len(), 3, "{kind}");
    }
}

#[test]
fn a_lesson_created_when_space_runs_out_leaves_no_row_and_no_index_entry() {
    for (kind, db, _dir) in databases() {
        let store = LessonsStore::new(db.clone());
        store.create(&NewLesson::new(lessons::Category::Pattern, "kept", "already here")).unwrap();
        let lesson = NewLesson {
            details: Some(prose(4, 5_000)),
            tags: (0..50).map(|i| format!("tag{i}")).collect(),
            ..NewLesson::new(lessons::Category::Bug, "big lesson", prose(5, 500))
        };
        let failures = fails_cleanly_until_it_fits(kind, &db, |tx| -> Result<(), lessons::Error> {
            store.create_in(tx, &lesson)?;
            Ok(())
        });
        assert!(failures > 5, "{kind}: {failures}");
        assert_eq!(store.check().unwrap(), lessons::IndexHealth::Ok { lessons: 2 }, "{kind}");
    }
}

#[test]
fn an_invocation_recorded_when_space_runs_out_leaves_nothing() {
    for (kind, db, _dir) in databases() {
        let tracker = ExecutionTracker::new(db.clone());
        let trace = tracker.start_trace(&"p".into(), &"t".into(), "prompt").unwrap();
        let invocation = NewInvocation {
            task_fragment: Some(prose(6, 2_000)),
            output_summary: Some(prose(7, 4_000)),
            outcome: Some(Outcome::Failure),
            error: Some(prose(8, 1_000)),
            ..NewInvocation::new(trace.id.clone(), "coder", db.now())
        };
        let failures = fails_cleanly_until_it_fits(kind, &db, |tx| -> Result<(), tracker::Error> {
            tracker.record_invocation_in(tx, &invocation)?;
            Ok(())
        });
        assert!(failures > 5, "{kind}: {failures}");
        assert_eq!(tracker.invocations(&trace.id).unwrap().len(), 1, "{kind}");
    }
}

#[test]
fn an_audit_batch_that_runs_out_of_space_appends_no_entry_and_keeps_the_chain() {
    for (kind, db, _dir) in databases() {
        let log = AuditLog::new(db.clone());
        log.log(&AuditEntry::new("first", Category::User)).unwrap();
        let batch: Vec<AuditEntry> = (0..100)
            .map(|i| AuditEntry {
                details: Some(json!({"text": prose(i, 60)})),
                ..AuditEntry::new(format!("entry {i}"), Category::Agent)
            })
            .collect();
        let failures =
            fails_cleanly_until_it_fits(kind, &db, |tx| -> Result<(), aigentflow::audit::Error> {
                log.log_all_in(tx, &batch)?;
                Ok(())
            });
        assert!(failures > 5, "{kind}: {failures}");
        let verified = log.verify(None).unwrap();
        assert!(verified.is_ok(), "{kind}: {verified:?}");
        assert_eq!(log.head().unwrap().unwrap().rows, 101, "{kind}");
    }
}
