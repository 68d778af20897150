//! The pool never wedges: panicking closures, nested calls, lost connections and `close()` with
//! live clones, on in-memory and file databases. Every test runs under [`within`], so a wedge
//! fails the test instead of hanging the run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// How long a test may run before it counts as wedged.
const WEDGED: Duration = Duration::from_secs(60);

/// Runs `f` on a thread of its own and fails the test if it does not finish within [`WEDGED`].
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, recv) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = send.send(f());
    });
    match recv.recv_timeout(WEDGED) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("wedged: no answer within {WEDGED:?}"),
    }
}

/// The payload of the panics these tests cause on purpose; the hook keeps them off stderr.
struct Deliberate;

fn deliberate_panic() -> ! {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Deliberate>() {
                previous(info);
            }
        }));
    });
    std::panic::panic_any(Deliberate)
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS pool_probe(n INTEGER NOT NULL)";

/// A database of each kind with the probe table; the temp dir lives as long as the database.
fn databases() -> Vec<(&'static str, Database, Option<tempfile::TempDir>)> {
    let memory = Database::open_in_memory().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = Database::open(dir.path().join("pool.db")).unwrap();
    let all = vec![("memory", memory, None), ("file", file, Some(dir))];
    for (_, db, _) in &all {
        db.write(|tx| tx.connection_for("a test").unwrap().execute_batch(CREATE).or_error())
            .unwrap();
    }
    all
}

fn count(db: &Database) -> i64 {
    db.read(|tx| {
        tx.connection_for("a test")
            .unwrap()
            .query_row("SELECT count(*) FROM pool_probe", [], |r| r.get(0))
            .or_error()
    })
    .unwrap()
}

fn insert(tx: &Tx<'_>) {
    tx.connection_for("a test")
        .unwrap()
        .execute("INSERT INTO pool_probe(n) VALUES (1)", [])
        .unwrap();
}

/// Where in the closure the panic strikes.
#[derive(Debug, Clone, Copy)]
enum Panic {
    /// Before any SQL.
    AtOnce,
    /// After writing a row.
    AfterInsert,
    /// While a query's rows are being stepped.
    MidQuery,
    /// Inside a savepoint the closure opened itself.
    InSavepoint,
    /// After the closure's own SQL committed and began a new transaction.
    AfterOwnBegin,
}

/// One call on the pool.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A write that commits one row.
    Commit,
    /// A write that writes a row, then returns an error.
    Fail,
    /// A write that panics.
    PanicInWrite(Panic),
    /// A read that panics.
    PanicInRead(Panic),
}

fn panic_in(tx: &Tx<'_>, how: Panic, writable: bool) -> ! {
    match how {
        Panic::AtOnce => {}
        Panic::AfterInsert if writable => insert(tx),
        Panic::AfterInsert => {
            let _ = tx.connection_for("a test").unwrap().query_row(
                "SELECT count(*) FROM pool_probe",
                [],
                |r| r.get::<_, i64>(0),
            );
        }
        Panic::MidQuery => {
            let mut stmt = tx
                .connection_for("a test")
                .unwrap()
                .prepare("SELECT n FROM pool_probe UNION ALL SELECT 1")
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            let _ = rows.next().unwrap();
            deliberate_panic();
        }
        Panic::InSavepoint => {
            tx.connection_for("a test").unwrap().execute_batch("SAVEPOINT inner_work").unwrap();
            if writable {
                insert(tx);
            }
        }
        Panic::AfterOwnBegin => {
            // The closure's own transaction control: what the pool gets back is then a
            // different transaction from the one it began.
            if tx.connection_for("a test").unwrap().execute_batch("COMMIT; BEGIN").is_ok()
                && writable
            {
                insert(tx);
            }
        }
    }
    deliberate_panic()
}

/// Runs one step; returns how many rows it committed.
fn run_step(db: &Database, step: Step) -> i64 {
    match step {
        Step::Commit => {
            db.write(|tx| {
                insert(tx);
                Ok::<_, Error>(())
            })
            .unwrap();
            1
        }
        Step::Fail => {
            let result = db.write(|tx| {
                insert(tx);
                Err::<(), _>(Error::InvalidInput { what: "probe", reason: "refused".into() })
            });
            assert!(matches!(result, Err(Error::InvalidInput { .. })), "{result:?}");
            0
        }
        Step::PanicInWrite(how) => {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                db.write(|tx| -> Result<()> { panic_in(tx, how, true) })
            }));
            assert!(caught.is_err(), "the closure panicked");
            0
        }
        Step::PanicInRead(how) => {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                db.read(|tx| -> Result<()> { panic_in(tx, how, false) })
            }));
            assert!(caught.is_err(), "the closure panicked");
            0
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    let panic = prop_oneof![
        Just(Panic::AtOnce),
        Just(Panic::AfterInsert),
        Just(Panic::MidQuery),
        Just(Panic::InSavepoint),
        Just(Panic::AfterOwnBegin),
    ];
    prop_oneof![
        Just(Step::Commit),
        Just(Step::Fail),
        panic.clone().prop_map(Step::PanicInWrite),
        panic.prop_map(Step::PanicInRead),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any sequence of commits, failed writes and panics in read and write closures leaves the
    /// pool working, on memory and file: the next calls run, and exactly the committed rows are
    /// stored (a panic writes nothing).
    #[test]
    fn panicking_closures_never_wedge_the_pool_or_half_write(steps in prop::collection::vec(step(), 1..40)) {
        within(move || {
            for (kind, db, _dir) in databases() {
                let mut committed = 0;
                for &step in &steps {
                    committed += run_step(&db, step);
                }
                assert_eq!(count(&db), committed, "{kind}: {steps:?}");
                assert_eq!(run_step(&db, Step::Commit), 1, "{kind}");
                assert_eq!(count(&db), committed + 1, "{kind}");
            }
        });
    }
}

#[test]
fn panicking_closures_from_several_threads_never_wedge_the_pool() {
    within(|| {
        for (kind, db, _dir) in databases() {
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let db = db.clone();
                    std::thread::spawn(move || {
                        let hows = [
                            Panic::AtOnce,
                            Panic::AfterInsert,
                            Panic::MidQuery,
                            Panic::InSavepoint,
                            Panic::AfterOwnBegin,
                        ];
                        let mut committed = 0;
                        for i in 0..50 {
                            let how = hows[(i + t) % hows.len()];
                            let step = match i % 4 {
                                0 => Step::PanicInWrite(how),
                                1 => Step::PanicInRead(how),
                                2 => Step::Fail,
                                _ => Step::Commit,
                            };
                            committed += run_step(&db, step);
                        }
                        committed
                    })
                })
                .collect();
            let committed: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(count(&db), committed, "{kind}");
            let check: String = db
                .read(|tx| {
                    tx.connection_for("a test")
                        .unwrap()
                        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                        .or_error()
                })
                .unwrap();
            assert_eq!(check, "ok", "{kind}");
        }
    });
}

#[test]
fn close_with_live_clones_leaves_the_clones_working() {
    within(|| {
        for (kind, db, _dir) in databases() {
            let clones: Vec<Database> = (0..3).map(|_| db.clone()).collect();
            db.write(|tx| {
                insert(tx);
                Ok::<_, Error>(())
            })
            .unwrap();
            db.close().unwrap();
            for clone in &clones {
                clone
                    .write(|tx| {
                        insert(tx);
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                assert!(count(clone) >= 2, "{kind}: the rows written before close are kept");
            }
            assert_eq!(count(&clones[0]), 4, "{kind}");
            // Closed from several threads at once: one of them closes the database, and none waits.
            let closers: Vec<_> =
                clones.into_iter().map(|c| std::thread::spawn(move || c.close())).collect();
            for closer in closers {
                closer.join().unwrap().unwrap();
            }
        }
    });
}

#[test]
fn closing_the_last_handle_of_a_file_database_keeps_every_commit() {
    within(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("close.db");
        let db = Database::open(&path).unwrap();
        db.write(|tx| tx.connection_for("a test").unwrap().execute_batch(CREATE).or_error())
            .unwrap();
        let clone = db.clone();
        for _ in 0..5 {
            clone
                .write(|tx| {
                    insert(tx);
                    Ok::<_, Error>(())
                })
                .unwrap();
        }
        db.close().unwrap();
        clone.close().unwrap();
        assert_eq!(count(&Database::open(&path).unwrap()), 5);
    });
}

#[test]
fn a_nested_call_on_an_in_memory_database_is_an_error_not_a_wait() {
    within(|| {
        let db = Database::open_in_memory().unwrap();
        let inner = db.read(|_| Ok::<_, Error>(db.write(|_| Ok::<_, Error>(()))));
        assert!(matches!(inner, Ok(Err(Error::Nested { .. }))), "{inner:?}");
        let inner = db.write(|_| Ok::<_, Error>(db.read(|_| Ok::<_, Error>(()))));
        assert!(matches!(inner, Ok(Err(Error::Nested { .. }))), "{inner:?}");
        assert!(db.read(|_| Ok::<_, Error>(())).is_ok(), "the pool works after");
    });
}

#[test]
fn a_write_inside_a_write_of_the_same_file_is_an_error_not_a_wait() {
    within(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.db");
        let db = Database::open(&path).unwrap();
        // The same handle, a clone, and a second handle on the same file: each would wait for
        // the lock its own thread holds, for the whole busy timeout.
        let other = Database::open(&path).unwrap();
        for inner_db in [db.clone(), other] {
            let inner = db.write(|_| Ok::<_, Error>(inner_db.write(|_| Ok::<_, Error>(()))));
            assert!(matches!(inner, Ok(Err(Error::Nested { .. }))), "{inner:?}");
        }
        // A read inside a write is fine (it sees the snapshot before the write), and so is a
        // write after the write, or from another thread during it.
        let inner = db.write(|_| Ok::<_, Error>(db.read(|_| Ok::<_, Error>(()))));
        assert!(matches!(inner, Ok(Ok(()))), "{inner:?}");
        assert!(db.write(|_| Ok::<_, Error>(())).is_ok());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = db.write(|_| -> Result<(), Error> { panic!("inside a write") });
        }));
        assert!(panicked.is_err());
        assert!(db.write(|_| Ok::<_, Error>(())).is_ok(), "a panic ends the write's mark too");
    });
}

#[test]
fn a_busy_in_memory_connection_is_a_timeout_error_not_an_endless_wait() {
    within(|| {
        let options = Options { busy_timeout: Duration::from_millis(50), ..Options::default() };
        let db = Database::open_in_memory_with(options).unwrap();
        let (holding, held) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let holder = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write(|_| {
                    holding.send(()).unwrap();
                    released.recv().unwrap();
                    Ok::<_, Error>(())
                })
            })
        };
        held.recv().unwrap();
        let waited = db.read(|_| Ok::<_, Error>(()));
        assert!(matches!(waited, Err(Error::PoolTimeout { .. })), "{waited:?}");
        assert!(waited.unwrap_err().is_busy());
        release.send(()).unwrap();
        holder.join().unwrap().unwrap();
        assert!(db.read(|_| Ok::<_, Error>(())).is_ok());
    });
}

#[test]
fn a_lost_in_memory_connection_makes_every_caller_fail_instead_of_waiting() {
    within(|| {
        let db = Database::open_in_memory().unwrap();
        // Waiters queue behind a transaction whose connection is then lost.
        let lease = db.sqlite_inner().take().unwrap();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || db.read(|_| Ok::<_, Error>(())))
            })
            .collect();
        let mut lease = lease;
        drop(lease.conn.take());
        drop(lease);
        db.sqlite_inner().put(None);
        for waiter in waiters {
            let result = waiter.join().unwrap();
            assert!(matches!(result, Err(Error::Unusable { .. })), "{result:?}");
        }
        let result = db.write(|_| Ok::<_, Error>(()));
        assert!(matches!(result, Err(Error::Unusable { .. })), "{result:?}");
        assert_eq!(
            result.unwrap_err().to_string(),
            "database :memory: is unusable: its connection was left inside a transaction that could not be rolled back"
        );
    });
}

#[test]
fn a_connection_returned_inside_a_transaction_is_rolled_back() {
    within(|| {
        for (kind, db, _dir) in databases() {
            let mut lease = db.sqlite_inner().take().unwrap();
            lease.conn().execute_batch("BEGIN; INSERT INTO pool_probe(n) VALUES (7)").unwrap();
            drop(lease);
            assert_eq!(count(&db), 0, "{kind}: the open transaction was rolled back");
            assert_eq!(run_step(&db, Step::Commit), 1, "{kind}");
            assert_eq!(count(&db), 1, "{kind}");
        }
    });
}

/// Rows bound as arrays are PostgreSQL's: on SQLite a statement alone with rows is refused, as
/// it is on both backends with no rows or more than a thousand (see the PostgreSQL test in
/// `pg.rs`), and nothing is written.
#[test]
fn a_statement_alone_with_rows_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("rows.db")).unwrap();
    db.write(|tx| tx.execute("CREATE TABLE t (n INTEGER)", &[])).unwrap();
    let sql = "INSERT INTO t (n) SELECT * FROM unnest(?1::bigint[])";
    for n in [0, 1, 3, 1000, 1001] {
        let rows: Vec<[Param<'_>; 1]> = (0..n).map(|i| [Param::int(i)]).collect();
        let refused = db.execute_alone_rows(sql, &[], &rows).unwrap_err();
        assert!(matches!(refused, Error::InvalidInput { what: "rows", .. }), "{n}: {refused:?}");
    }
    let stored: i64 =
        db.read(|tx| tx.query_row("SELECT COUNT(*) FROM t", &[], |r| r.get(0))).unwrap().unwrap();
    assert_eq!(stored, 0);
}
