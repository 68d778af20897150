//! A program that builds on the stores: its own migration sets beside the core schema, and its
//! own statements in the transactions the stores write in (issue 14). Every scenario runs on
//! both backends.

use std::sync::{Arc, Barrier};

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::chrono::{DateTime, TimeZone, Utc};
use aigentflow::persistence::{
    Access, AppMigration, Backend, Cell, Database, Error, MigrationSet, Options, Param, SetVersion,
    SqliteStateStore, Tx,
};
use aigentflow::serde_json::{json, Value};
use aigentflow::states::{Event, StateContext, StateMachine};
use aigentflow::{ProjectId, TaskId};
use aigentflow_testkit::EmptyDb;
use proptest::prelude::*;

use crate::inspect::{Driver, Raw};
use crate::support::*;

/// Migration `v` of a test set: a table per version, named after the set.
fn step(set: &str, v: u32) -> AppMigration {
    AppMigration::owned(
        v,
        format!("step {v}"),
        format!("CREATE TABLE {set}_t{v} (id INTEGER PRIMARY KEY, body TEXT)"),
        format!("CREATE TABLE {set}_t{v} (id BIGINT PRIMARY KEY, body TEXT)"),
    )
}

/// The set `name` at versions 1 to `latest`.
fn set(name: &str, latest: u32) -> MigrationSet {
    MigrationSet::new(name, (1..=latest).map(|v| step(name, v))).unwrap()
}

fn open_with(location: &str, sets: &[MigrationSet]) -> Result<Database, Error> {
    let mut builder = Database::builder(location);
    for s in sets {
        builder = builder.migrations(s.clone())?;
    }
    builder.open()
}

fn versions(db: &Database) -> Vec<(String, i64)> {
    db.migration_sets()
        .unwrap()
        .into_iter()
        .map(|SetVersion { name, version }| (name, version))
        .collect()
}

fn core_version(backend: Backend) -> i64 {
    *migration_versions(backend).last().unwrap()
}

on_both! {
/// A set is applied at open, after the core schema, each of its versions once: a first open
/// makes its tables and records it; a program with a newer version of the set applies only
/// what the database lacks; opening without the set, or again with it, changes nothing.
/// Several handles opening a fresh database with the set at once apply each version once.
fn an_application_set_migrates_at_open_once_and_records_its_own_history(t: EmptyDb) {
    let loc = t.location();
    let openers = 4;
    let barrier = Arc::new(Barrier::new(openers));
    let handles: Vec<_> = (0..openers)
        .map(|_| {
            let (loc, barrier) = (loc.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                open_with(&loc, &[set("orchestrator", 2)]).map(drop)
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let core = core_version(t.backend());
    let db = open_with(loc, &[set("orchestrator", 2)]).unwrap();
    assert_eq!(versions(&db), [("core".to_owned(), core), ("orchestrator".to_owned(), 2)]);
    let mut raw = Driver::of(t);
    let tables = raw.tables();
    assert!(tables.contains("orchestrator_t1") && tables.contains("orchestrator_t2"), "{tables:?}");
    let history = "SELECT set_name, version FROM aigentflow_migration_sets ORDER BY version";
    assert_eq!(raw.query(history, &[]).len(), 2);
    // A later program adds version 3: only it is applied.
    let before = raw.dump();
    let db = open_with(loc, &[set("orchestrator", 3)]).unwrap();
    assert_eq!(versions(&db).last().unwrap(), &("orchestrator".to_owned(), 3));
    let after = raw.dump();
    assert_eq!(after["orchestrator_t1"], before["orchestrator_t1"]);
    assert!(raw.tables().contains("orchestrator_t3"));
    assert_eq!(raw.query(history, &[]).len(), 3);
    // Opening without the set, or with it again, writes nothing.
    let before = raw.dump();
    drop(Database::open(loc).unwrap());
    drop(open_with(loc, &[set("orchestrator", 3)]).unwrap());
    assert_eq!(raw.dump(), before);
}
}

on_both! {
/// A database that holds a set at a newer version than the program's is refused, by every
/// kind of opening, with one message naming the set and both versions; nothing is written.
fn a_newer_set_in_the_database_is_refused_naming_it_and_both_versions(t: EmptyDb) {
    let loc = t.location();
    drop(open_with(loc, &[set("orchestrator", 3)]).unwrap());
    let mut raw = Driver::of(t);
    let before = raw.dump();
    for older in 1..=2 {
        for access in [Access::Create, Access::ReadWrite, Access::ReadOnly] {
            let e = Database::builder(loc)
                .options(Options { access, ..Options::default() })
                .migrations(set("orchestrator", older))
                .unwrap()
                .open()
                .unwrap_err();
            let Error::NewerSet { set, found, supported, .. } = &e else { panic!("{e:?}") };
            assert_eq!((set.to_string().as_str(), *found, *supported), ("orchestrator", 3, i64::from(older)));
            let text = e.to_string();
            for needle in ["orchestrator", "version 3", &format!("program's {older}")] {
                assert!(text.contains(needle), "{text}");
            }
            assert!(!text.contains('\n'), "{text}");
        }
    }
    assert_eq!(raw.dump(), before);
}
}

on_both! {
/// A set the program does not name is another program's: it is left as it is (its tables,
/// rows and history), whoever opens the database, and listed by `migration_sets`.
fn an_unknown_set_is_left_alone(t: EmptyDb) {
    let loc = t.location();
    let a = open_with(loc, &[set("billing", 2)]).unwrap();
    a.write(|tx| tx.execute("INSERT INTO billing_t1 (id, body) VALUES (1, 'kept')", &[])).unwrap();
    let mut raw = Driver::of(t);
    let billing = |raw: &mut Driver| {
        let mut d = raw.dump();
        d.retain(|table, _| table.starts_with("billing_"));
        d
    };
    let kept = billing(&mut raw);
    for sets in [vec![], vec![set("orchestrator", 1)], vec![set("orchestrator", 2), set("flags", 1)]] {
        let db = open_with(loc, &sets).unwrap();
        assert_eq!(billing(&mut raw), kept);
        let listed = versions(&db);
        assert!(listed.contains(&("billing".to_owned(), 2)), "{listed:?}");
        for s in &sets {
            assert!(listed.contains(&(s.name().to_owned(), i64::from(s.latest()))), "{listed:?}");
        }
    }
    let history = raw.query("SELECT version FROM aigentflow_migration_sets WHERE set_name = 'billing'", &[]);
    assert_eq!(history.len(), 2);
}
}

on_both! {
/// An applied migration whose text changed since, or that the program no longer has, is
/// refused naming the set and the version, and nothing is applied.
fn an_edited_or_missing_applied_migration_is_refused_naming_it(t: EmptyDb) {
    let loc = t.location();
    drop(open_with(loc, &[set("orchestrator", 2)]).unwrap());
    let mut raw = Driver::of(t);
    let before = raw.dump();
    let edited = MigrationSet::new("orchestrator", [
        step("orchestrator", 1),
        AppMigration::owned(2, "step 2".into(), "CREATE TABLE other (x INTEGER)".into(), "CREATE TABLE other (x BIGINT)".into()),
        step("orchestrator", 3),
    ]).unwrap();
    let renamed = MigrationSet::new("orchestrator", [
        AppMigration::owned(1, "renamed".into(), step("orchestrator", 1).sql(Backend::Sqlite).into(), step("orchestrator", 1).sql(Backend::Postgres).into()),
        step("orchestrator", 2),
    ]).unwrap();
    let missing = MigrationSet::new("orchestrator", [step("orchestrator", 2), step("orchestrator", 3)]).unwrap();
    for (bad, version) in [(edited, "version 2"), (renamed, "version 1"), (missing, "version 1")] {
        let e = open_with(loc, &[bad]).unwrap_err();
        assert!(matches!(e, Error::Migrate { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("orchestrator") && text.contains(version), "{text}");
    }
    assert_eq!(raw.dump(), before);
}
}

on_both! {
/// A set migration that fails rolls back the whole opening's transaction: on a fresh database
/// the core schema too, so the next opening starts from nothing; on a migrated one the sets
/// applied before it in the same opening. The error names the set and the version.
fn a_failing_set_migration_applies_nothing_of_the_opening(t: EmptyDb) {
    let loc = t.location();
    let broken = |name: &str| {
        MigrationSet::new(name, [
            step(name, 1),
            AppMigration::new(2, "broken", "CREATE TABLE nowhere.x (y INTEGER)"),
        ])
        .unwrap()
    };
    let e = open_with(loc, &[set("good", 1), broken("orchestrator")]).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Migrate { .. }) && text.contains("orchestrator") && text.contains("version 2"), "{text}");
    let mut raw = Driver::of(t);
    let tables = raw.tables();
    assert!(!tables.iter().any(|t| t.starts_with("good_") || t.starts_with("orchestrator_") || t == "workflow_states"), "{tables:?}");
    // On a migrated database: the good set's new version is not kept either.
    drop(open_with(loc, &[set("good", 1)]).unwrap());
    let before = raw.dump();
    open_with(loc, &[set("good", 2), broken("orchestrator")]).unwrap_err();
    assert_eq!(raw.dump(), before);
}
}

on_both! {
/// A read-only handle cannot migrate: a set it would have to apply is refused naming the set
/// and both versions, and nothing is written; a set that is current opens.
fn a_read_only_opening_refuses_a_set_it_would_have_to_migrate(t: EmptyDb) {
    let loc = t.location();
    drop(open_with(loc, &[set("orchestrator", 1)]).unwrap());
    let mut raw = Driver::of(t);
    let before = raw.dump();
    let read_only = |sets: &[MigrationSet]| {
        let mut b = Database::builder(loc).options(Options { access: Access::ReadOnly, ..Options::default() });
        for s in sets {
            b = b.migrations(s.clone()).unwrap();
        }
        b.open()
    };
    for sets in [vec![set("orchestrator", 2)], vec![set("orchestrator", 1), set("flags", 1)]] {
        let e = read_only(&sets).unwrap_err();
        assert!(matches!(e, Error::OutdatedSet { .. }), "{e:?}");
        assert!(e.to_string().contains("older than this program's"), "{e}");
    }
    read_only(&[set("orchestrator", 1)]).unwrap();
    assert_eq!(raw.dump(), before);
}
}

/// The application table of the statement tests: one column per kind of value.
fn values_set() -> MigrationSet {
    MigrationSet::new(
        "app",
        [AppMigration::per_backend(
            1,
            "values",
            "CREATE TABLE app_values (id INTEGER PRIMARY KEY, n INTEGER, re REAL, t TEXT, raw TEXT,
            b BLOB, j TEXT, at TEXT, flag INTEGER, positive INTEGER CHECK (positive > 0),
            task_id TEXT REFERENCES workflow_states (task_id))",
            "CREATE TABLE app_values (id BIGINT PRIMARY KEY, n BIGINT, re DOUBLE PRECISION, t TEXT,
            raw TEXT, b BYTEA, j TEXT, at TEXT, flag BOOLEAN, positive BIGINT CHECK (positive > 0),
            task_id TEXT REFERENCES workflow_states (task_id))",
        )],
    )
    .unwrap()
}

/// One row of `app_values` as the program gave it.
#[derive(Debug, Clone, PartialEq)]
struct Values {
    n: Option<i64>,
    r: Option<f64>,
    t: Option<String>,
    raw: Option<String>,
    b: Option<Vec<u8>>,
    j: Option<Value>,
    at: Option<DateTime<Utc>>,
    flag: Option<bool>,
}

fn values() -> impl Strategy<Value = Values> {
    (
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
        // Words: text the redaction policy leaves as it is (its own tests cover what it changes).
        proptest::option::of("[a-z ]{0,24}"),
        // Kept byte for byte, whatever it holds.
        proptest::option::of("[ -~]{0,40}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        proptest::option::of(prop_oneof![
            Just(json!(null)),
            any::<i64>().prop_map(|n| json!({ "n": n, "list": [n, "x"] })),
            "[a-z]{0,12}".prop_map(|s| json!({ "s": s })),
        ]),
        proptest::option::of(0i64..253_402_300_799_999),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(n, r, t, raw, b, j, at, flag)| Values {
            n,
            r,
            t,
            raw,
            b,
            j,
            at: at.map(|ms| Utc.timestamp_millis_opt(ms).unwrap()),
            flag,
        })
}

fn insert(tx: &Tx<'_>, id: i64, v: &Values) -> aigentflow::persistence::Result<usize> {
    tx.execute(
        "INSERT INTO app_values (id, n, re, t, raw, b, j, at, flag) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        &[
            Param::int(id),
            v.n.map_or(Param::NULL, Param::int),
            v.r.map_or(Param::NULL, Param::real),
            Param::opt_text(v.t.as_deref()),
            v.raw.as_deref().map_or(Param::NULL, |raw| Param::unredacted("app_values.raw", raw)),
            v.b.as_deref().map_or(Param::NULL, Param::blob),
            v.j.as_ref().map_or(Ok(Param::NULL), Param::json)?,
            Param::opt_time(v.at),
            v.flag.map_or(Param::NULL, Param::bool),
        ],
    )
}

fn select(tx: &Tx<'_>, id: i64) -> aigentflow::persistence::Result<Option<Values>> {
    tx.query_row(
        "SELECT n, re, t, raw, b, j, at, flag FROM app_values WHERE id = ?1",
        &[Param::int(id)],
        |r| {
            Ok(Values {
                n: r.get(0)?,
                r: r.get(1)?,
                t: r.get(2)?,
                raw: r.get(3)?,
                b: r.get(4)?,
                j: r.get(5)?,
                at: r.get(6)?,
                flag: r.get(7)?,
            })
        },
    )
}

on_both! {
/// Every kind of value the neutral API binds comes back as it went in, on either backend:
/// NULL, integers, reals, text, text kept by name, bytes, JSON, timestamps and booleans, in
/// one query and by `query_map`; a query for a missing row is None. Text and JSON given to
/// `Param::text`/`Param::json` go through the redaction policy; `Param::unredacted` keeps its
/// text byte for byte.
fn application_statements_bind_and_read_every_kind_of_value(t: EmptyDb) {
    let db = open_with(t.location(), &[values_set()]).unwrap();
    let next = std::cell::Cell::new(0);
    proptest!(ProptestConfig::with_cases(64), |(v in values())| {
        let id = next.get() + 1;
        next.set(id);
        let back = db.write(|tx| { insert(tx, id, &v)?; select(tx, id) }).unwrap();
        prop_assert_eq!(back, Some(v.clone()));
        prop_assert_eq!(db.read(|tx| select(tx, id)).unwrap(), Some(v));
    });
    assert_eq!(db.read(|tx| select(tx, -1)).unwrap(), None);
    let all = db.read(|tx| tx.prepare("SELECT id FROM app_values ORDER BY id")?.query_map(&[], |r| r.get::<i64>(0))).unwrap();
    assert_eq!(all, (1..=next.get()).collect::<Vec<_>>());
    // Redacted unless opted out by name.
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let secret = Values {
        t: Some(format!("key {key}")),
        raw: Some(format!("kept {key}")),
        j: Some(json!({ "password": "hunter2", "note": format!("key {key}") })),
        n: None, r: None, b: None, at: None, flag: None,
    };
    let back = db.write(|tx| { insert(tx, 0, &secret)?; select(tx, 0) }).unwrap().unwrap();
    assert!(!back.t.as_deref().unwrap().contains(&key), "{back:?}");
    assert_eq!(back.raw, secret.raw);
    let j = back.j.unwrap().to_string();
    assert!(!j.contains(&key) && !j.contains("hunter2"), "{j}");
    // A cell read as a type it does not hold is a typed error naming the column.
    let e = db.read(|tx| tx.query_row("SELECT t FROM app_values WHERE id = 0", &[], |r| r.get::<i64>(0))).unwrap_err();
    assert!(matches!(e, Error::ColumnType { index: 0, .. }), "{e:?}");
    let cell = db.read(|tx| tx.query_row("SELECT b FROM app_values WHERE id = 0", &[], |r| Ok(r.cell(0)? == Cell::Null))).unwrap();
    assert_eq!(cell, Some(true));
}
}

/// Starts task `task` and saves it inside `tx`.
fn save_task(tx: &Tx<'_>, task: &str) -> Result<(), aigentflow::Error> {
    let mut machine =
        StateMachine::new(StateContext::new(ProjectId::new("p"), TaskId::new(task), "prompt"));
    machine.apply(Event::Start, None)?;
    SqliteStateStore::new(tx.database().clone()).save_in(tx, machine.persisted())?;
    Ok(())
}

/// Logs the audit entry of task `task`'s start inside `tx`.
fn log_start(tx: &Tx<'_>, task: &str) -> Result<(), aigentflow::Error> {
    AuditLog::new(tx.database().clone()).log_in(
        tx,
        &AuditEntry {
            task_id: Some(TaskId::new(task)),
            ..AuditEntry::new("task_started", Category::State)
        },
    )?;
    Ok(())
}

/// Both core writes of a task's start.
fn core_writes(tx: &Tx<'_>, task: &str) -> Result<(), aigentflow::Error> {
    save_task(tx, task)?;
    log_start(tx, task)
}

/// Application statements that fail, each a different way: a duplicate key, a missing table,
/// bad SQL, a check, a foreign key.
fn failing(tx: &Tx<'_>, how: usize) -> aigentflow::persistence::Result<usize> {
    match how {
        0 => tx.execute("INSERT INTO app_values (id) VALUES (1)", &[]),
        1 => tx.execute("INSERT INTO no_such_table (id) VALUES (?1)", &[Param::int(1)]),
        2 => tx.execute("INSERT INTO app_values (id VALUES (7)", &[]),
        3 => tx.execute(
            "INSERT INTO app_values (id, positive) VALUES (?1, ?2)",
            &[Param::int(2), Param::int(0)],
        ),
        _ => tx.execute(
            "INSERT INTO app_values (id, task_id) VALUES (3, ?1)",
            &[Param::text("no such task")],
        ),
    }
}

on_both! {
/// A failing application statement rolls back the core writes of its transaction: the task's
/// state, its transition and its audit entry are not stored, whether the statement runs before,
/// between or after them, whichever way it fails, and whether the closure returns its error or
/// swallows it and goes on (then the write is `Error::Aborted`, naming the failure; on
/// PostgreSQL the next statement after a failed one fails itself).
fn a_failing_application_statement_rolls_back_the_core_writes(t: EmptyDb) {
    let db = open_with(t.location(), &[values_set()]).unwrap();
    db.write(|tx| tx.execute("INSERT INTO app_values (id) VALUES (1)", &[])).unwrap();
    let mut raw = Driver::of(t);
    // What a rolled-back write leaves: the rows as they were (a PostgreSQL sequence moves).
    let rows = |raw: &mut Driver| {
        let mut d = raw.dump();
        d.remove("(sequences)");
        d
    };
    let before = rows(&mut raw);
    assert_eq!(before["app_values"].len(), 1);
    assert!(before["app_values"][0][0].is_some(), "{before:?}");
    for how in 0..5 {
        for at in 0..3 {
            for swallow in [false, true] {
                let task = format!("task-{how}-{at}-{swallow}");
                let result = db.write(|tx| {
                    let app = |tx: &Tx<'_>| -> Result<(), aigentflow::Error> {
                        match failing(tx, how) {
                            Err(_) if swallow => Ok(()),
                            r => r.map(drop).map_err(Into::into),
                        }
                    };
                    if at == 0 { app(tx)?; }
                    save_task(tx, &task)?;
                    if at == 1 { app(tx)?; }
                    log_start(tx, &task)?;
                    if at == 2 { app(tx)?; }
                    Ok::<_, aigentflow::Error>(())
                });
                let e = result.expect_err(&task);
                if swallow && (at == 2 || t.backend() == Backend::Sqlite) {
                    let aigentflow::Error::Persistence(Error::Aborted { first, .. }) = &e else {
                        panic!("{task}: {e:?}")
                    };
                    assert!(!first.to_string().is_empty());
                }
                assert!(!e.to_string().contains('\n'), "{e}");
                assert_eq!(rows(&mut raw), before, "{task}: {e}");
            }
        }
    }
    // And the same transaction commits all of it when the statement succeeds.
    db.write(|tx| {
        core_writes(tx, "ok")?;
        tx.execute("INSERT INTO app_values (id, task_id) VALUES (9, ?1)", &[Param::text("ok")])?;
        Ok::<_, aigentflow::Error>(())
    })
    .unwrap();
    assert_eq!(raw.count("SELECT COUNT(*) FROM app_values WHERE task_id = 'ok'", &[]), 1);
    assert_eq!(raw.count("SELECT COUNT(*) FROM audit_logs", &[]), 1);
}
}

on_both! {
/// The escape hatch reaches the backend's driver inside the same transaction: what it writes
/// commits with the stores' writes, and is rolled back with them.
fn the_escape_hatch_reaches_the_driver_in_the_same_transaction(t: EmptyDb) {
    let db = open_with(t.location(), &[values_set()]).unwrap();
    let hatch = |tx: &Tx<'_>, id: i64| -> Result<(), aigentflow::Error> {
        match tx.backend() {
            Backend::Sqlite => {
                tx.sqlite().unwrap().execute("INSERT INTO app_values (id) VALUES (?1)", [id]).unwrap();
            }
            Backend::Postgres => {
                let n = tx.postgres(|pg| pg.execute("INSERT INTO app_values (id) VALUES ($1)", &[&id])).unwrap().unwrap();
                assert_eq!(n, 1);
            }
        }
        assert!(tx.sqlite().is_some() == (tx.backend() == Backend::Sqlite));
        assert!(tx.postgres(|_| ()).is_some() == (tx.backend() == Backend::Postgres));
        Ok(())
    };
    db.write(|tx| { core_writes(tx, "a")?; hatch(tx, 1) }).unwrap();
    let failed: Result<(), aigentflow::Error> = db.write(|tx| {
        core_writes(tx, "b")?;
        hatch(tx, 2)?;
        Err(aigentflow::Error::Persistence(Error::NotFound { what: "thing", id: "x".into() }))
    });
    failed.unwrap_err();
    let mut raw = Driver::of(t);
    assert_eq!(raw.count("SELECT COUNT(*) FROM app_values", &[]), 1);
    assert_eq!(raw.count("SELECT COUNT(*) FROM workflow_states", &[]), 1);
}
}

/// Sets named outside the rules, and builders given the same set twice, are refused before
/// anything is opened.
#[test]
fn a_builder_refuses_a_set_added_twice_and_opens_nothing() {
    let t = EmptyDb::sqlite();
    let e = Database::builder(t.location())
        .migrations(set("orchestrator", 1))
        .unwrap()
        .migrations(set("orchestrator", 2))
        .unwrap_err();
    assert!(e.to_string().contains("orchestrator"), "{e}");
    assert!(!std::path::Path::new(t.location()).exists());
    let mem =
        Database::builder_in_memory().migrations(set("orchestrator", 2)).unwrap().open().unwrap();
    assert_eq!(versions(&mem).last().unwrap(), &("orchestrator".to_owned(), 2));
}

on_both! {
/// `db copy` copies the core tables only: a source holding application sets is refused naming
/// them (their tables would be left behind), and the destination is left empty; a destination
/// holding sets is not empty.
fn a_copy_refuses_a_database_holding_application_sets(t: EmptyDb) {
    let src = open_with(t.location(), &[set("billing", 2), set("flags", 1)]).unwrap();
    let dest_path = t.dir().join("copy.db");
    let dest = Database::open(dest_path.to_str().unwrap()).unwrap();
    let e = src.copy_into(&dest, |_, _, _| {}).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("billing at version 2") && text.contains("flags at version 1"), "{text}");
    let rows = dest.table_counts().unwrap();
    assert!(rows.iter().all(|(table, n)| *n == 0 || *table == "schema_versions"), "{rows:?}");
    // The other way: a plain source into a destination holding a set.
    let plain = Database::open(t.dir().join("plain.db").to_str().unwrap()).unwrap();
    let e = plain.copy_into(&src, |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("aigentflow_migration_sets"), "{e}");
}
}

/// A statement that fails inside a write, its error swallowed.
type Swallowed = Box<dyn Fn(&Tx<'_>)>;

/// The app table of the consistency tests: a key, and a value some rows cannot be cast from.
fn kv_set() -> MigrationSet {
    MigrationSet::new(
        "kv",
        [AppMigration::per_backend(
            1,
            "kv",
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);
             CREATE TABLE kv_rollback (k TEXT UNIQUE ON CONFLICT ROLLBACK);
             CREATE TABLE kv_raise (k TEXT);
             CREATE TRIGGER kv_raise_no_x BEFORE INSERT ON kv_raise WHEN NEW.k = 'x'
             BEGIN SELECT RAISE(ROLLBACK, 'no x'); END;",
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)",
        )],
    )
    .unwrap()
}

on_both! {
/// A write reports success exactly when what it wrote is stored: whichever way a statement in
/// it fails and is swallowed (a later row of a one-row query failing, a failure through the
/// escape hatch, on SQLite a constraint or trigger that rolls the transaction back), the write
/// either commits all it did and says so, or stores nothing and returns an error.
fn a_write_reports_success_exactly_when_its_rows_are_stored(t: EmptyDb) {
    let db = open_with(t.location(), &[kv_set()]).unwrap();
    db.write(|tx| {
        tx.execute("INSERT INTO kv (k, v) VALUES ('a', '10'), ('b', 'ten')", &[])
    })
    .unwrap();
    let mut raw = Driver::of(t);
    let mut ways: Vec<(&str, Swallowed)> = vec![
        ("a cast failing on a later row", Box::new(|tx: &Tx<'_>| {
            let _ = tx.query_row(
                tx.dialect("SELECT CAST(v AS INTEGER) FROM kv ORDER BY k", "SELECT v::BIGINT FROM kv ORDER BY k"),
                &[],
                |r| r.get::<i64>(0),
            );
        })),
        ("a failure through the escape hatch", Box::new(|tx: &Tx<'_>| match tx.backend() {
            Backend::Sqlite => {
                let _ = tx.sqlite().unwrap().execute("INSERT INTO kv (k) VALUES ('a')", []);
            }
            Backend::Postgres => {
                let _ = tx.postgres(|pg| pg.execute("INSERT INTO kv (k) VALUES ('a')", &[]).is_ok());
            }
        })),
    ];
    if t.backend() == Backend::Sqlite {
        ways.push(("ON CONFLICT ROLLBACK", Box::new(|tx: &Tx<'_>| {
            let _ = tx.execute("INSERT INTO kv_rollback (k) VALUES ('x'), ('x')", &[]);
        })));
        ways.push(("RAISE(ROLLBACK)", Box::new(|tx: &Tx<'_>| {
            let _ = tx.execute("INSERT INTO kv_raise (k) VALUES ('x')", &[]);
        })));
    }
    for (i, (how, fail)) in ways.iter().enumerate() {
        for after in [false, true] {
            let task = format!("task-{i}-{after}");
            let result = db.write(|tx| {
                core_writes(tx, &task)?;
                tx.execute("INSERT INTO kv (k, v) VALUES (?1, 'mine')", &[Param::text(&task)])?;
                fail(tx);
                if after {
                    // More work after the swallowed failure.
                    log_start(tx, &format!("{task}-after"))?;
                }
                Ok::<_, aigentflow::Error>(())
            });
            let stored = raw.count("SELECT COUNT(*) FROM kv WHERE k = ?1", &[Raw::text(&task)]);
            let audited = raw.count("SELECT COUNT(*) FROM audit_logs WHERE task_id = ?1", &[Raw::text(&task)]);
            assert_eq!(stored, audited, "{how}: the app row and the core writes go together");
            assert_eq!(result.is_ok(), stored == 1, "{how}, after: {after}: {result:?}, stored {stored}");
        }
    }
}
}

on_both! {
/// Transaction control is the Database's: a statement of the neutral API that would begin, end
/// or split the transaction is refused (written any way: case, blanks, comments first), and
/// the write stores nothing; text that merely holds those words runs.
fn transaction_control_through_the_neutral_api_is_refused(t: EmptyDb) {
    let db = open_with(t.location(), &[kv_set()]).unwrap();
    let mut raw = Driver::of(t);
    let before = raw.count("SELECT COUNT(*) FROM audit_logs", &[]);
    for sql in ["COMMIT", "commit", "  -- note\n ROLLBACK", "/* x */ BEGIN", "savepoint s", "RELEASE s",
                "END", "end transaction", "START TRANSACTION", "Abort", "\n\tCommit;"] {
        let e = db.write(|tx| {
            core_writes(tx, "t")?;
            tx.execute(sql, &[])?;
            Ok::<_, aigentflow::Error>(())
        }).unwrap_err();
        assert!(e.to_string().contains("transaction control"), "{sql:?}: {e}");
        assert_eq!(raw.count("SELECT COUNT(*) FROM audit_logs", &[]), before, "{sql:?}");
    }
    db.write(|tx| {
        tx.execute("INSERT INTO kv (k, v) VALUES ('commit', 'END') -- rollback", &[])?;
        tx.execute("/* begin */ UPDATE kv SET v = 'savepoint' WHERE k = 'commit'", &[])?;
        tx.query_row("SELECT 1 -- commit", &[], |r| r.get::<i64>(0))
    }).unwrap();
    assert_eq!(raw.count("SELECT COUNT(*) FROM kv WHERE v = 'savepoint'", &[]), 1);
}
}

on_both! {
/// A set migration whose SQL holds transaction control (COMMIT, ROLLBACK, a file wrapped in
/// BEGIN…COMMIT, a savepoint), in any case, after comments, anywhere in the file, is refused
/// naming the set and the version and saying why, and nothing of it stays: no table it made
/// before or after the control statement, no history row. A trigger whose body is written
/// BEGIN … END (SQLite) or a function body in dollar quotes holding the words is no control.
fn a_set_migration_that_ends_the_transaction_is_refused_naming_it_and_leaves_nothing(t: EmptyDb) {
    let controls = [
        "COMMIT;", "commit;", "END;", "END TRANSACTION;", "ROLLBACK;", "  -- note\n ROLLBACK;",
        "/* x */ COMMIT;", "SAVEPOINT s;", "SAVEPOINT s; RELEASE s;", "BEGIN;", "START TRANSACTION;",
        "ABORT;",
    ];
    let mut i = 0;
    for control in controls {
        // ABORT and START TRANSACTION are PostgreSQL's; END TRANSACTION and a bare BEGIN both.
        if t.backend() == Backend::Sqlite && matches!(control, "ABORT;" | "START TRANSACTION;") {
            continue;
        }
        for sql in [
            format!("CREATE TABLE ended_a{i} (x INTEGER); {control} CREATE TABLE ended_b{i} (x INTEGER);"),
            format!("{control} CREATE TABLE ended_a{i} (x INTEGER);"),
            format!("CREATE TABLE ended_a{i} (x INTEGER); INSERT INTO ended_a{i} VALUES (1); {control}"),
        ] {
            i += 1;
            let migration = AppMigration::owned(1, "ends".into(), sql.clone(), sql.clone());
            let set = MigrationSet::new(&format!("ends{i}"), [migration]).unwrap();
            let e = open_with(t.location(), &[set]).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(&format!("ends{i}")) && text.contains("version 1"), "{sql}: {text}");
            assert!(text.contains("transaction control"), "{sql}: {text}");
            assert!(matches!(e, Error::Migrate { .. }), "{sql}: {e:?}");
            let mut raw = Driver::of(t);
            let tables: Vec<String> = raw.tables().into_iter().filter(|n| n.starts_with("ended_")).collect();
            assert_eq!(tables, Vec::<String>::new(), "{sql}");
        }
    }
    let mut raw = Driver::of(t);
    if raw.tables().contains("aigentflow_migration_sets") {
        let history = raw.count("SELECT COUNT(*) FROM aigentflow_migration_sets WHERE set_name LIKE 'ends%'", &[]);
        assert_eq!(history, 0);
    }
    // The words inside a body are not statements of the migration.
    let body = match t.backend() {
        Backend::Sqlite => "CREATE TABLE kept (x INTEGER); CREATE TABLE kept_log (x INTEGER);
            CREATE TRIGGER kept_t AFTER INSERT ON kept BEGIN INSERT INTO kept_log VALUES (NEW.x); END;
            INSERT INTO kept VALUES (1);",
        Backend::Postgres => "CREATE TABLE kept (x INTEGER); CREATE TABLE kept_log (x INTEGER);
            CREATE FUNCTION kept_f() RETURNS trigger AS $$ BEGIN INSERT INTO kept_log VALUES (NEW.x); RETURN NEW; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER kept_t AFTER INSERT ON kept FOR EACH ROW EXECUTE FUNCTION kept_f();
            INSERT INTO kept VALUES (1); -- COMMIT; in a comment
            SELECT 'ROLLBACK; in a string';",
    };
    let set = MigrationSet::new("bodies", [AppMigration::new(1, "bodies", body)]).unwrap();
    drop(open_with(t.location(), &[set]).unwrap());
    assert_eq!(Driver::of(t).count("SELECT COUNT(*) FROM kept_log", &[]), 1);
}
}

on_both! {
/// NaN and times without a stored form that reads back are refused when bound, the same way on
/// both backends, and store nothing; infinities and the ends of years 0000 to 9999 round trip.
fn values_without_a_stored_form_are_refused_alike_on_both_backends(t: EmptyDb) {
    use aigentflow::chrono::{Duration, NaiveDate};
    let db = open_with(t.location(), &[values_set()]).unwrap();
    let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_milli_opt(23, 59, 59, 1500).unwrap().and_utc();
    let max = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + Duration::milliseconds(999);
    let refused = [
        Param::real(f64::NAN),
        Param::real(-f64::NAN),
        Param::time(max + Duration::milliseconds(1)),
        Param::time(Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap() - Duration::milliseconds(1)),
        Param::time(leap),
    ];
    let mut raw = Driver::of(t);
    for (i, p) in refused.iter().enumerate() {
        let column = if i < 2 { "re" } else { "at" };
        let e = db.write(|tx| tx.execute(&format!("INSERT INTO app_values (id, {column}) VALUES (?1, ?2)"), &[Param::int(100 + i as i64), p.clone()])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("cannot be stored"), "{i}: {text}");
        assert_eq!(raw.count("SELECT COUNT(*) FROM app_values", &[]), 0);
    }
    let kept = [f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, -0.5];
    for (i, r) in kept.iter().enumerate() {
        let v = Values { r: Some(*r), at: Some(if i % 2 == 0 { max } else { Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap() }), n: None, t: None, raw: None, b: None, j: None, flag: None };
        let back = db.write(|tx| { insert(tx, i as i64, &v)?; select(tx, i as i64) }).unwrap();
        assert_eq!(back, Some(v));
    }
}
}

on_both! {
/// History rows another program (or someone with the file) wrote badly never stop this one: a
/// set named like the core is not listed as the core, rows of sets the program does not name
/// are not read as its own; a bad row of a set it does name is refused naming that set.
fn history_rows_written_around_the_sets_never_break_another_set(t: EmptyDb) {
    let loc = t.location();
    drop(open_with(loc, &[set("mine", 1)]).unwrap());
    let mut raw = Driver::of(t);
    let insert = "INSERT INTO aigentflow_migration_sets (set_name, version, name, checksum, applied_at) VALUES (?1, ?2, 'x', 'not a checksum', 'now')";
    raw.execute(insert, &[Raw::text("core"), Raw::Int(99)]);
    raw.execute(insert, &[Raw::text("other\u{1b}[31m"), Raw::Int(7)]);
    if t.backend() == Backend::Sqlite {
        raw.execute("INSERT INTO aigentflow_migration_sets (set_name, version, name, checksum, applied_at) VALUES ('junk', 'abc', 'x', 'y', 'z')", &[]);
    }
    let db = open_with(loc, &[set("mine", 2)]).unwrap();
    let listed = versions(&db);
    assert_eq!(listed.iter().filter(|(n, _)| n == "core").count(), 1, "{listed:?}");
    assert_eq!(listed[0], ("core".to_owned(), core_version(t.backend())));
    assert!(listed.contains(&("mine".to_owned(), 2)), "{listed:?}");
    // A bad row of a set the program names is that set's problem, named.
    raw.execute(insert, &[Raw::text("mine"), Raw::Int(1_000_000)]);
    let e = open_with(loc, &[set("mine", 2)]).unwrap_err();
    assert!(matches!(e, Error::NewerSet { .. }), "{e:?}");
    if t.backend() == Backend::Sqlite {
        raw.execute("DELETE FROM aigentflow_migration_sets WHERE version = 1000000", &[]);
        raw.execute("INSERT INTO aigentflow_migration_sets (set_name, version, name, checksum, applied_at) VALUES ('mine', 'two', 'x', 'y', 'z')", &[]);
        let e = open_with(loc, &[set("mine", 2)]).unwrap_err();
        assert!(e.to_string().contains("migration set mine") && e.to_string().contains("not a number"), "{e}");
        drop(open_with(loc, &[set("fresh", 1)]).unwrap());
    }
}
}

/// A set migration that changes its session (SET) leaves no trace on the connections the
/// handle then lends: the connection that migrated is not kept.
#[test]
fn a_session_setting_made_by_a_set_migration_does_not_outlive_the_opening_on_postgres() {
    let Some(t) = EmptyDb::postgres() else { return };
    let set = MigrationSet::new(
        "sessions",
        [AppMigration::new(
            1,
            "session",
            "SET application_name = 'changed by a migration'; CREATE TABLE sessions_t (x BIGINT);",
        )],
    )
    .unwrap();
    let db = open_with(t.location(), &[set]).unwrap();
    for _ in 0..3 {
        let name = db
            .read(|tx| {
                tx.query_row("SELECT current_setting('application_name')", &[], |r| {
                    r.get::<String>(0)
                })
            })
            .unwrap();
        assert_eq!(name.as_deref(), Some("aigentflow"));
    }
}
