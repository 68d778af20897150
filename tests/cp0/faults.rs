//! RELIABILITY.md R20, fault injection: a write that fails in the middle of its transaction
//! (SQLite's page limit reached: a full disk) is an error to the caller, `integrity_check` stays
//! ok and nothing is half-written: the database holds exactly what it held before, byte for byte
//! in every table (FTS shadow tables included). Each operation is tried with every page limit
//! from none to spare up to the one it fits in, so the failure strikes at each point of it.
//!
//! SQLite's page limit has no PostgreSQL twin: there a trigger fails the N-th row write of the
//! transaction with the server's disk-full error, for every N up to the number of rows written.

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::lessons::{self, LessonsStore, NewLesson};
use aigentflow::persistence::{
    ConfigStore, Database, Error as PError, Scope, SqliteStateStore, Tx,
};
use aigentflow::states::{Event, StateContext, StateMachine, StateStore};
use aigentflow::tracker::{self, ExecutionTracker, NewInvocation, Outcome};
use rusqlite::types::Value;
use serde_json::json;

use crate::inspect::{Driver, Raw};
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
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut all = Vec::new();
        for table in tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1")).unwrap();
            let width = stmt.column_count();
            let rows = stmt
                .query_map([], |r| (0..width).map(|i| r.get::<_, Value>(i)).collect())
                .unwrap()
                .collect::<Result<Vec<Vec<Value>>, _>>()
                .unwrap();
            all.push((table, rows));
        }
        Ok::<_, PError>(all)
    })
    .unwrap()
}

fn integrity(db: &Database) -> String {
    db.read(|tx| {
        Ok::<_, PError>(
            tx.sqlite().unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap(),
        )
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
                .unwrap()
        };
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        let unlimited = limit(i64::from(u32::MAX));
        limit(pages + extra);
        let result = f(tx);
        limit(unlimited);
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
fn a_state_save_with_its_audit_entry_that_runs_out_of_space_writes_nothing_on_sqlite() {
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
fn a_lesson_created_when_space_runs_out_leaves_no_row_and_no_index_entry_on_sqlite() {
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
fn an_invocation_recorded_when_space_runs_out_leaves_nothing_on_sqlite() {
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
fn an_audit_batch_that_runs_out_of_space_appends_no_entry_and_keeps_the_chain_on_sqlite() {
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

/// Makes every row written to the state store's and the configuration's tables count, and the
/// `at`-th of a transaction fail as a full disk does (SQLSTATE 53100).
const INJECT_FAULTS_PG: &str = "
    CREATE TABLE fault_injection (at BIGINT NOT NULL, seen BIGINT NOT NULL);
    INSERT INTO fault_injection VALUES (0, 0);
    CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        seen_now BIGINT;
        fail_at BIGINT;
    BEGIN
        UPDATE fault_injection SET seen = seen + 1 RETURNING seen, at INTO seen_now, fail_at;
        IF seen_now = fail_at THEN
            RAISE EXCEPTION 'could not extend file: No space left on device (injected at row %)',
                seen_now USING ERRCODE = 'disk_full';
        END IF;
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END
    $$;
    CREATE TRIGGER inject_fault BEFORE INSERT OR UPDATE OR DELETE ON workflow_states
        FOR EACH ROW EXECUTE FUNCTION inject_fault();
    CREATE TRIGGER inject_fault BEFORE INSERT OR UPDATE OR DELETE ON state_transitions
        FOR EACH ROW EXECUTE FUNCTION inject_fault();
    CREATE TRIGGER inject_fault BEFORE INSERT OR UPDATE OR DELETE ON checkpoints
        FOR EACH ROW EXECUTE FUNCTION inject_fault();
    CREATE TRIGGER inject_fault BEFORE INSERT OR UPDATE OR DELETE ON configurations
        FOR EACH ROW EXECUTE FUNCTION inject_fault();";

/// A state save (new transitions and checkpoints, a rewritten context) with a configuration
/// change in one transaction, failing at each of its row writes in turn: each failure is the
/// server's disk-full error to the caller and leaves every table exactly as before, the pool
/// goes on working, and the run that fails nowhere writes it all.
#[test]
fn a_state_save_with_a_configuration_change_that_fails_at_any_row_writes_nothing_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let db = t.db();
    let states = SqliteStateStore::new(db.clone());
    let config = ConfigStore::new(db.clone());
    let mut machine =
        StateMachine::new(StateContext::new("p".into(), "task-full".into(), prose(1, 50)));
    machine.apply(Event::Start, None).unwrap();
    states.save_state(machine.persisted()).unwrap();
    config.set("model", &Scope::Global, &json!("opus")).unwrap();
    machine.context_mut().metadata.insert("notes".into(), json!(prose(2, 400)));
    machine.apply(Event::AnalysisComplete, None).unwrap();
    machine.create_checkpoint(vec!["a.rs".into()]);
    machine.context_mut().agent_queue.push("coder".into());
    machine.apply(Event::SpawnAgent, None).unwrap();
    machine.create_checkpoint(vec!["b.rs".into()]);

    let mut raw = Driver::of(&t);
    raw.batch(INJECT_FAULTS_PG);
    let dump = |raw: &mut Driver| {
        [
            "SELECT * FROM workflow_states ORDER BY task_id",
            "SELECT * FROM state_transitions ORDER BY id",
            "SELECT * FROM checkpoints ORDER BY id",
            "SELECT * FROM configurations ORDER BY scope, key",
        ]
        .map(|sql| raw.query(sql, &[]))
    };
    let before = dump(&mut raw);
    let mut failures = 0;
    for at in 1..100 {
        raw.execute("UPDATE fault_injection SET at = ?1, seen = 0", &[Raw::Int(at)]);
        let saved = db.write(|tx| {
            states.save_in(tx, machine.persisted())?;
            config.set_in(tx, "model", &Scope::Global, &json!("haiku"))?;
            config.set_in(tx, "last_task", &Scope::Global, &json!("task-full"))?;
            Ok::<_, PError>(())
        });
        match saved {
            Err(e) => {
                assert_eq!(e.sqlstate(), Some("53100"), "row {at}: {e}");
                assert!(e.to_string().contains("No space left on device"), "{e}");
                assert!(dump(&mut raw) == before, "row {at}: half-written after {e}");
                failures += 1;
            }
            Ok(()) => break,
        }
    }
    let written = raw.count("SELECT seen FROM fault_injection", &[]);
    assert_eq!(failures, written, "a failure at each of the {written} row writes");
    assert!(written >= 6, "{written}");
    let stored = states.load_state(&"task-full".into()).unwrap().unwrap();
    assert_eq!(&stored, machine.persisted());
    assert_eq!(config.get("model", None).unwrap().unwrap().value, "haiku");
}
