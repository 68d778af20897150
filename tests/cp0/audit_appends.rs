//! How the audit log appends: from several handles and transactions interleaved, one chain
//! with increasing ids on both backends; on PostgreSQL a `log` after one through the same
//! handle is one statement that commits by itself, falls back to a transaction when another
//! writer moved the head, and reads back an append whose answer the connection lost.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::persistence::{Backend, Database};

use crate::audit::{around, entry, scalar};
use crate::support::*;

/// The ids and actions of the log, in id order.
fn actions(log: &AuditLog) -> Vec<(i64, String)> {
    let mut all: Vec<_> =
        log.query(&Default::default()).unwrap().into_iter().map(|r| (r.id, r.action)).collect();
    all.sort();
    all
}

on_both! {
/// Handles of one database and of a reopened one, single appends, batches and appends inside
/// other transactions, interleaved in a fixed pseudo-random order: one chain, every entry
/// once, ids 1 to N in the order the appends were made.
fn appends_through_many_handles_interleaved_form_one_chain(t) {
    let reopened = Database::open(t.location()).unwrap();
    let logs = [
        AuditLog::new(t.db().clone()),
        AuditLog::new(t.db().clone()),
        AuditLog::new(reopened.clone()),
    ];
    let mut expected = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..90 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let log = &logs[(seed % 3) as usize];
        let action = format!("a{i}");
        match (seed >> 8) % 4 {
            0 | 1 => {
                log.log(&entry("p", &action, Category::Agent)).unwrap();
                expected.push(action);
            }
            2 => {
                let batch: Vec<AuditEntry> = (0..3)
                    .map(|k| entry("p", &format!("{action}.{k}"), Category::Agent))
                    .collect();
                log.log_batch(&batch).unwrap();
                expected.extend(batch.into_iter().map(|e| e.action));
            }
            _ => {
                let db = if seed.is_multiple_of(2) { t.db() } else { &reopened };
                db.write(|tx| log.log_in(tx, &entry("p", &action, Category::Agent))).unwrap();
                expected.push(action);
            }
        }
    }
    let stored = actions(&logs[0]);
    let ids: Vec<i64> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=expected.len() as i64).collect::<Vec<_>>());
    assert_eq!(stored.into_iter().map(|(_, a)| a).collect::<Vec<_>>(), expected);
    let v = logs[2].verify(None).unwrap();
    assert!(v.is_ok(), "{:?}", v.finding);
}
}

on_both! {
/// A row written around the log with the id the next append would take: the append steps
/// over it, and only that row is outside the chain.
fn an_append_steps_over_an_id_taken_around_the_log(t) {
    let log = AuditLog::new(t.db().clone());
    for i in 0..3 {
        log.log(&entry("p", &format!("a{i}"), Category::Agent)).unwrap();
    }
    around(
        t,
        "INSERT INTO audit_logs (id, timestamp, action, category)
         VALUES (4, '2026-01-01T00:00:00.000Z', 'forged', 'user')",
    )
    .unwrap();
    let id = log.log(&entry("p", "after", Category::Agent)).unwrap();
    assert_eq!(id, 5);
    let next = log.log(&entry("p", "next", Category::Agent)).unwrap();
    assert_eq!(next, 6);
    let v = log.verify(None).unwrap();
    assert_ne!(v.finding, None, "the forged row is outside the chain");
    assert_eq!(scalar(t.location(), "SELECT COUNT(*) FROM audit_logs"), 6);
}
}

on_both! {
/// A row written around the log with an id inside the range a batch would take: the batch
/// steps over it whole (all of it after that row, none before), for every place in the
/// range, and for a batch larger than one statement takes.
fn a_batch_steps_over_an_id_taken_around_the_log_inside_its_range(t) {
    let log = AuditLog::new(t.db().clone());
    let batch = |tag: &str, n: usize| -> Vec<AuditEntry> {
        (0..n).map(|k| entry("p", &format!("{tag}.{k}"), Category::Agent)).collect()
    };
    log.log(&entry("p", "first", Category::Agent)).unwrap();
    let mut next = 2;
    let mut forged = 0;
    for offset in 0..4 {
        // The next batch of four would take next..next+3: a row is put at next+offset.
        let at = next + offset;
        around(
            t,
            &format!(
                "INSERT INTO audit_logs (id, timestamp, action, category)
                 VALUES ({at}, '2026-01-01T00:00:00.000Z', 'forged', 'user')"
            ),
        )
        .unwrap();
        forged += 1;
        let ids = log.log_batch(&batch(&format!("b{offset}"), 4)).unwrap();
        assert_eq!(ids, ((at + 1)..=(at + 4)).collect::<Vec<_>>(), "offset {offset}");
        next = at + 5;
        // The next batch, with no row in its way, follows it.
        let ids = log.log_batch(&batch(&format!("c{offset}"), 3)).unwrap();
        assert_eq!(ids, (next..next + 3).collect::<Vec<_>>(), "offset {offset}");
        next += 3;
    }
    let ids = log.log_batch(&batch("large", 1001)).unwrap();
    assert_eq!(ids, (next..next + 1001).collect::<Vec<_>>());
    let ids = log.log_batch(&batch("after", 2)).unwrap();
    assert_eq!(ids, vec![next + 1001, next + 1002]);
    let stored = scalar(t.location(), "SELECT COUNT(*) FROM audit_logs");
    assert_eq!(stored, 1 + 4 * (4 + 3) + 1001 + 2 + forged);
    let unsealed = scalar(t.location(), "SELECT COUNT(*) FROM audit_logs WHERE row_hash IS NULL");
    assert_eq!(unsealed, forged, "only the forged rows are outside the chain");
    let v = log.verify(None).unwrap();
    assert_ne!(v.finding, None, "the forged rows are outside the chain");
}
}

/// On PostgreSQL, a `log` after one through the same handle costs one round trip; after
/// another handle appended, it meets the moved head and appends in a transaction.
#[test]
fn a_log_after_one_through_the_same_handle_is_one_round_trip_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let log = AuditLog::new(t.db().clone());
    let other = AuditLog::new(t.db().clone());
    let trips = |f: &dyn Fn()| {
        let before = t.db().round_trips().unwrap();
        f();
        t.db().round_trips().unwrap() - before
    };
    // The first append reads the head in a transaction; the second prepares its statement.
    log.log(&entry("p", "first", Category::Agent)).unwrap();
    log.log(&entry("p", "second", Category::Agent)).unwrap();
    for i in 0..5 {
        let n = trips(&|| {
            log.log(&entry("p", &format!("alone{i}"), Category::Agent)).unwrap();
        });
        assert_eq!(n, 1, "append {i}");
    }
    other.log(&entry("p", "moved", Category::Agent)).unwrap();
    let n = trips(&|| {
        log.log(&entry("p", "after the move", Category::Agent)).unwrap();
    });
    assert!(n > 1, "the moved head sends the append into a transaction ({n} round trips)");
    let again = trips(&|| {
        log.log(&entry("p", "again", Category::Agent)).unwrap();
    });
    assert_eq!(again, 1, "the handle appended last: alone again");
    // Batches go alike: one statement after the handle's last append (the first one also
    // prepares it), a transaction after another handle's or when too large for one.
    let batch = |tag: &str, n: usize| -> Vec<AuditEntry> {
        (0..n).map(|k| entry("p", &format!("{tag}.{k}"), Category::Agent)).collect()
    };
    assert_eq!(trips(&|| drop(log.log_batch(&batch("prepares", 3)).unwrap())), 2);
    for (i, n) in [2, 5, 1000, 7].into_iter().enumerate() {
        let n = trips(&|| drop(log.log_batch(&batch(&format!("batch{i}"), n)).unwrap()));
        assert_eq!(n, 1, "batch {i}");
    }
    other.log(&entry("p", "moved again", Category::Agent)).unwrap();
    let n = trips(&|| drop(log.log_batch(&batch("after the move", 4)).unwrap()));
    assert!(n > 1, "the moved head sends the batch into a transaction ({n} round trips)");
    let n = trips(&|| drop(log.log_batch(&batch("too large", 1001)).unwrap()));
    assert!(n > 1, "a batch larger than one statement takes is a transaction ({n})");
    assert_eq!(trips(&|| drop(log.log_batch(&batch("alone", 2)).unwrap())), 1);
    let v = log.verify(None).unwrap();
    assert!(v.is_ok(), "{:?}", v.finding);
    assert_eq!(v.rows, 10 + 3 + 2 + 5 + 1000 + 7 + 1 + 4 + 1001 + 2);
}

/// What the proxy does to the next message a client sends.
const PASS: u8 = 0;
/// Closes the connection instead of passing the message on: the server never sees it.
const DROP_REQUEST: u8 = 1;
/// Passes the message on, then closes the connection instead of passing the answer back: the
/// server ran the statement, and the client never hears of it.
const DROP_ANSWER: u8 = 2;

/// Passes the message on, then closes the client's side only, as a network failure would: the
/// server keeps the statement (waiting for a lock, say) and is not told.
const CUT_CLIENT: u8 = 3;

/// A TCP proxy in front of the server whose next exchange can be cut (see [`DROP_REQUEST`],
/// [`DROP_ANSWER`], [`CUT_CLIENT`]); the mode goes back to [`PASS`] once it has cut one.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
}

impl Proxy {
    fn start(server: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let server = server.to_owned();
        let shared = mode.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(&server) else { return };
                let mode = shared.clone();
                let cut = Arc::new(AtomicU8::new(PASS));
                let (c2, u2, cut2) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap(), cut.clone());
                // Client to server.
                std::thread::spawn(move || {
                    let side = client.try_clone().unwrap();
                    pump(&client, &upstream, |n| {
                        if n == 0 {
                            return true;
                        }
                        match mode.swap(PASS, Ordering::SeqCst) {
                            DROP_REQUEST => false,
                            DROP_ANSWER => {
                                cut2.store(DROP_ANSWER, Ordering::SeqCst);
                                true
                            }
                            CUT_CLIENT => {
                                cut2.store(CUT_CLIENT, Ordering::SeqCst);
                                let _ = side.shutdown(Shutdown::Both);
                                true
                            }
                            _ => true,
                        }
                    });
                    // Across a network failure the server's side stays open a while.
                    if cut2.load(Ordering::SeqCst) == CUT_CLIENT {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                    }
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = upstream.shutdown(Shutdown::Both);
                });
                // Server to client.
                std::thread::spawn(move || {
                    pump(&u2, &c2, |_| cut.load(Ordering::SeqCst) != DROP_ANSWER);
                    let _ = c2.shutdown(Shutdown::Both);
                    if cut.load(Ordering::SeqCst) != CUT_CLIENT {
                        let _ = u2.shutdown(Shutdown::Both);
                    }
                });
            }
        });
        Self { port, mode }
    }

    fn cut_next(&self, how: u8) {
        self.mode.store(how, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while `pass` says so of each chunk read (before it is passed on).
fn pump(mut from: &TcpStream, mut to: &TcpStream, mut pass: impl FnMut(usize) -> bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !pass(n) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
fn through(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth_host, path) = rest.split_once('/').unwrap();
    let (auth, host) = match auth_host.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), auth_host),
    };
    (format!("{scheme}://{auth}127.0.0.1:{port}/{path}"), host.to_owned())
}

/// `t`'s database opened through a [`Proxy`], and a log on it that has appended twice (so the
/// next append is one statement, prepared on its connection).
fn behind_a_proxy(t: &TestDb) -> (Proxy, AuditLog) {
    let (_, server) = through(t.location(), 0);
    let proxy = Proxy::start(&server);
    let (url, _) = through(t.location(), proxy.port);
    let log = AuditLog::new(Database::open(&url).unwrap());
    log.log(&entry("p", "first", Category::Agent)).unwrap();
    log.log(&entry("p", "second", Category::Agent)).unwrap();
    (proxy, log)
}

/// On PostgreSQL, an append alone whose connection is lost before the server has it, or
/// after the server stored it but before its answer came: either way the entry is stored
/// once, `log` returns its id, and the chain verifies; a batch alone is stored whole once.
#[test]
fn an_append_whose_connection_is_lost_is_stored_exactly_once_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    assert_eq!(t.backend(), Backend::Postgres);
    let (proxy, log) = behind_a_proxy(&t);
    for (round, how) in
        [DROP_REQUEST, DROP_ANSWER, DROP_ANSWER, DROP_REQUEST].into_iter().enumerate()
    {
        let action = format!("cut{round}");
        proxy.cut_next(how);
        let id = log.log(&entry("p", &action, Category::Agent)).unwrap();
        let count = |sql: &str| {
            scalar(t.location(), &format!("SELECT COUNT(*) FROM audit_logs WHERE {sql}"))
        };
        assert_eq!(count(&format!("action = '{action}'")), 1, "round {round} ({how})");
        assert_eq!(
            count(&format!("action = '{action}' AND id = {id}")),
            1,
            "round {round} ({how})"
        );
        // The next one through a sound connection is one statement again.
        log.log(&entry("p", &format!("after{round}"), Category::Agent)).unwrap();
    }
    assert_eq!(scalar(t.location(), "SELECT COUNT(*) FROM audit_logs"), 10);
    // A batch alone likewise, stored whole once (its statement prepared first).
    let batch = |tag: &str| -> Vec<AuditEntry> {
        (0..3).map(|k| entry("p", &format!("{tag}.{k}"), Category::Agent)).collect()
    };
    log.log_batch(&batch("prepared")).unwrap();
    for (round, how) in [DROP_REQUEST, DROP_ANSWER, DROP_ANSWER].into_iter().enumerate() {
        let tag = format!("batchcut{round}");
        proxy.cut_next(how);
        let ids = log.log_batch(&batch(&tag)).unwrap();
        assert_eq!(ids.len(), 3);
        for (k, id) in ids.iter().enumerate() {
            let sql =
                format!("SELECT COUNT(*) FROM audit_logs WHERE action = '{tag}.{k}' AND id = {id}");
            assert_eq!(scalar(t.location(), &sql), 1, "round {round} ({how})");
        }
        let sql = format!("SELECT COUNT(*) FROM audit_logs WHERE action LIKE '{tag}.%'");
        assert_eq!(scalar(t.location(), &sql), 3, "round {round} ({how})");
        log.log_batch(&batch(&format!("batchafter{round}"))).unwrap();
    }
    assert_eq!(scalar(t.location(), "SELECT COUNT(*) FROM audit_logs"), 10 + 3 + 3 * 6);
    let v = log.verify(None).unwrap();
    assert!(v.is_ok(), "{:?}", v.finding);
}

/// On PostgreSQL, an append alone sent while another transaction holds the chain's head, whose
/// connection is then lost: the server keeps the statement waiting for the lock and runs it
/// later. The append goes on in a transaction that, once it holds the lock, finds the entry
/// stored by that statement, or appends it and so makes that statement find the head moved:
/// the entry is stored once, whichever runs first.
#[test]
fn an_append_left_waiting_on_the_server_is_stored_once_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let (proxy, log) = behind_a_proxy(&t);
    for (round, rollback) in [true, false, true].into_iter().enumerate() {
        // Another session holds the head's lock: a transaction that then rolls back (a
        // caller's write whose state save failed) or one that appends and commits.
        let mut holder = postgres::Client::connect(t.location(), postgres::NoTls).unwrap();
        let mut htx = holder.transaction().unwrap();
        htx.query("SELECT * FROM audit_head FOR UPDATE", &[]).unwrap();
        let action = format!("waiting{round}");
        proxy.cut_next(CUT_CLIENT);
        let appender = {
            let (log, action) = (log.clone(), action.clone());
            std::thread::spawn(move || log.log(&entry("p", &action, Category::Agent)))
        };
        std::thread::sleep(std::time::Duration::from_millis(700));
        if rollback {
            htx.rollback().unwrap();
        } else {
            let other = AuditLog::new(Database::open(t.location()).unwrap());
            htx.commit().unwrap();
            other.log(&entry("p", "other", Category::Agent)).unwrap();
        }
        let id = appender.join().unwrap().unwrap();
        // The statement left on the server has run (or failed its check) by now.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let count = |sql: &str| {
            scalar(t.location(), &format!("SELECT COUNT(*) FROM audit_logs WHERE {sql}"))
        };
        assert_eq!(count(&format!("action = '{action}'")), 1, "round {round}");
        assert_eq!(count(&format!("action = '{action}' AND id = {id}")), 1, "round {round}");
    }
    let v = log.verify(None).unwrap();
    assert!(v.is_ok(), "{:?}", v.finding);
}

/// On PostgreSQL, a database whose default transactions are REPEATABLE READ or read-only (a
/// server, role or database setting): an append alone still runs as this layer's writes do,
/// at READ COMMITTED and read-write, so it falls back when another append moved the head
/// while it waited, and costs one round trip otherwise.
#[test]
fn an_append_alone_runs_as_writes_do_whatever_the_database_defaults_on_postgres() {
    for setting in
        ["default_transaction_isolation = 'repeatable read'", "default_transaction_read_only = on"]
    {
        let Some(t) = TestDb::postgres() else { return };
        let name = t.location().rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
        let mut owner = postgres::Client::connect(t.location(), postgres::NoTls).unwrap();
        owner.batch_execute(&format!("ALTER DATABASE \"{name}\" SET {setting}")).unwrap();
        let db = Database::open(t.location()).unwrap();
        let (a, b) = (AuditLog::new(db.clone()), AuditLog::new(db.clone()));
        a.log(&entry("p", "a1", Category::Agent)).unwrap();
        a.log(&entry("p", "a2", Category::Agent)).unwrap();
        let before = db.round_trips().unwrap();
        a.log(&entry("p", "a3", Category::Agent)).unwrap();
        assert_eq!(db.round_trips().unwrap() - before, 1, "{setting}");
        // Another handle appends and holds the head while `a` waits for it.
        let writer = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write(|tx| {
                    let id = b.log_in(tx, &entry("p", "b", Category::Agent))?;
                    std::thread::sleep(std::time::Duration::from_millis(700));
                    Ok::<_, aigentflow::audit::Error>(id)
                })
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        a.log(&entry("p", "a4", Category::Agent)).unwrap_or_else(|e| panic!("{setting}: {e}"));
        writer.join().unwrap().unwrap();
        let v = a.verify(None).unwrap();
        assert!(v.is_ok(), "{setting}: {:?}", v.finding);
        assert_eq!(v.rows, 5, "{setting}");
    }
}
