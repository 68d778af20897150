//! The PostgreSQL database handle (decision 13) in what only a server has: concurrent first
//! migration by processes and threads, read-only transactions and handles, URLs that carry a
//! password, a server that refuses, is not there or drops idle connections. Each test needs
//! `AIGENTFLOW_PG_URL` for its server (skipped without it, unless `AIGENTFLOW_REQUIRE_PG` is set),
//! except those that stand in for a server with a listener of their own on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigentflow::persistence::{
    Access, Backend, ConfigStore, Database, Error, Options, Scope, SqliteStateStore,
};
use aigentflow::states::{Event, StateContext, StateMachine, StateStore};
use proptest::prelude::*;
use serde_json::json;

use crate::inspect::Driver;
use crate::support::*;

fn read_only() -> Options {
    Options { access: Access::ReadOnly, ..Options::default() }
}

/// A task saved two steps in, with a checkpoint and agents to spawn.
fn saved(db: &Database, task: &str) -> StateMachine {
    let mut context = StateContext::new("p".into(), task.into(), "build it");
    context.agent_queue = vec!["coder".into(); 8];
    let mut m = StateMachine::new(context);
    m.apply(Event::Start, None).unwrap();
    m.create_checkpoint(vec!["plan.md".into()]);
    m.apply(Event::AnalysisComplete, None).unwrap();
    SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
    m
}

// ---- R3: concurrent first migration ---------------------------------------------------------

/// Processes and threads (each with a handle of its own) open one fresh database at once: every
/// opener succeeds and finds the latest schema, each migration is recorded once (one applied it
/// under the migration lock, the others waited and found nothing to do), and opening again
/// changes nothing.
#[test]
fn concurrent_first_migration_applies_each_version_once_on_postgres() {
    let Some(pg) = pg_database() else { return };
    let url = pg.url().to_owned();
    let (processes, threads) = (4, 4);
    let children: Vec<_> = (0..processes).map(|_| worker(&["open", &url])).collect();
    let versions: Vec<i64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let db = Database::open(&url).unwrap_or_else(|e| panic!("open: {e}"));
                    db.schema_version().unwrap().migration
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let db = Database::open(&url).unwrap();
    let latest = db.schema_version().unwrap().latest;
    assert_eq!(versions, vec![latest; threads]);
    for child in children {
        assert_eq!(expect_ok(child).trim(), format!("ok {latest}"));
    }
    let mut raw = Driver::connect(Backend::Postgres, &url);
    let history = "SELECT version, name, checksum FROM refinery_schema_history ORDER BY version";
    let rows = raw.query(history, &[]);
    let files = migration_versions(Backend::Postgres);
    assert_eq!(rows.len(), files.len(), "one history row per migration: {rows:?}");
    assert_eq!(raw.count("SELECT COUNT(*) FROM schema_versions", &[]), 1);
    let tables = raw.tables();
    db.close().unwrap();
    Database::open(&url).unwrap().close().unwrap();
    assert_eq!(raw.query(history, &[]), rows, "a second open changes nothing");
    assert_eq!(raw.tables(), tables);
}

// ---- R17 on PostgreSQL: reads never write ---------------------------------------------------

/// Reads run in a read-only snapshot the server enforces (a statement that writes fails there),
/// writes at READ COMMITTED, as the stores' locks assume.
#[test]
fn reads_run_read_only_and_writes_at_read_committed_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let settings = "SELECT current_setting('transaction_isolation'),
        current_setting('transaction_read_only')";
    let get = |tx: &aigentflow::persistence::Tx<'_>| {
        tx.query_row(settings, &[], |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)))
    };
    let text = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
    assert_eq!(t.db().write(get).unwrap(), text("read committed", "off"));
    assert_eq!(t.db().read(get).unwrap(), text("repeatable read", "on"));
    let err = t
        .db()
        .read(|tx| tx.execute("INSERT INTO configurations (key, value) VALUES ('k', '1')", &[]))
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("25006"), "{err}");
    assert_eq!(Driver::of(&t).count("SELECT COUNT(*) FROM configurations", &[]), 0);
}

/// A handle opened read-only refuses every write of every library store with
/// `Error::ReadOnly`, before reaching the server, and reads what is there; nothing changes.
#[test]
fn a_read_only_handle_refuses_every_write_and_changes_nothing_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let mut m = saved(t.db(), "task-1");
    ConfigStore::new(t.db().clone()).set("k", &Scope::Global, &json!(1)).unwrap();
    let before = Driver::of(&t).every_cell();

    let db = Database::open_with(t.location(), read_only()).unwrap();
    assert!(db.is_read_only());
    let states = SqliteStateStore::new(db.clone());
    let config = ConfigStore::new(db.clone());
    assert_eq!(states.load_state(&"task-1".into()).unwrap().as_ref(), Some(m.persisted()));
    assert_eq!(config.get("k", None).unwrap().unwrap().value, json!(1));
    m.apply(Event::SpawnAgent, None).unwrap();
    let refusals = [
        states.save_state(m.persisted()).unwrap_err(),
        states.delete_state(&"task-1".into()).unwrap_err(),
        config.set("k", &Scope::Global, &json!(2)).unwrap_err(),
        config.delete("k", &Scope::Global).unwrap_err(),
        db.write(|tx| tx.execute("DELETE FROM configurations", &[]).map(|_| ())).unwrap_err(),
    ];
    for err in &refusals {
        assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("database {} is open read-only", t.location()));
    }
    assert_eq!(Driver::of(&t).every_cell(), before, "a read-only handle changed the database");
}

/// A read-only opening never migrates or creates: a database at an older schema (here, one
/// whose history lacks a migration) is `Error::Outdated` naming `db migrate`, and a fresh empty
/// database stays empty. Opening for writing migrates the empty one.
#[test]
fn read_only_opens_refuse_an_outdated_schema_and_create_nothing_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    saved(t.db(), "task-1");
    let latest = t.db().schema_version().unwrap().latest;
    let mut raw = Driver::of(&t);
    raw.batch(&format!("DELETE FROM refinery_schema_history WHERE version = {latest}"));
    let before = raw.every_cell();
    let err = Database::open_with(t.location(), read_only()).unwrap_err();
    let files = migration_versions(Backend::Postgres);
    let previous = files[files.len() - 2];
    assert!(matches!(err, Error::Outdated { found, .. } if found == previous), "{err:?}");
    assert!(err.to_string().contains("aigentflow db migrate"), "{err}");
    assert_eq!(raw.every_cell(), before, "refusing changed the database");

    let Some(empty) = pg_database() else { return };
    let err = Database::open_with(empty.url(), read_only()).unwrap_err();
    assert!(matches!(err, Error::Outdated { found: 0, .. }), "{err:?}");
    let mut raw = Driver::connect(Backend::Postgres, empty.url());
    assert!(raw.tables().is_empty(), "a read-only open created {:?}", raw.tables());
    let snapshot = Options { access: Access::Snapshot, ..Options::default() };
    Database::open_with(empty.url(), snapshot).unwrap();
    assert!(raw.tables().is_empty(), "a snapshot open created {:?}", raw.tables());
    Database::open_with(empty.url(), Options::default()).unwrap();
    assert!(raw.tables().contains("workflow_states"));
}

// ---- URLs with a password -------------------------------------------------------------------

/// `url` with `password` set as its password (percent-encoded), whatever it held before.
fn with_password(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let hosts = &rest[rest.find('@').map_or(0, |at| at + 1)..];
    format!("{scheme}://{}:{}@{hosts}", encode(user), encode(password))
}

/// Every byte but the unreserved ones as `%XX`.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asserts `text` holds neither `password` nor its encoded form.
fn assert_hidden(what: &str, text: &str, password: &str) {
    for form in [password.to_owned(), encode(password)] {
        assert!(!text.contains(&form), "{what} shows the password {form:?}: {text}");
    }
}

/// A password in the URL (the server trusts this test's connections, so any password opens):
/// `location()` and every message that names the database (a refused write, an outdated schema,
/// a database the server does not have) show the URL with `***` instead.
#[test]
fn a_password_in_the_url_never_shows_in_the_location_or_an_error_on_postgres() {
    let Some(pg) = pg_database() else { return };
    let password = "Pa55-w0rd_kept/out?@:%";
    let url = with_password(pg.url(), "postgres", password);
    let db = Database::open(&url).unwrap();
    let shown = db.location().display().to_string();
    assert_hidden("location()", &shown, password);
    assert!(shown.contains(":***@"), "{shown}");
    assert_eq!(shown, without_password(&url));

    let ro = Database::open_with(&url, read_only()).unwrap();
    let err = ro.write(|tx| tx.execute("DELETE FROM configurations", &[])).unwrap_err();
    assert_hidden("a read-only refusal", &err.to_string(), password);
    assert!(err.to_string().contains(&shown), "{err}");

    let mut raw = Driver::connect(Backend::Postgres, pg.url());
    raw.batch("DELETE FROM refinery_schema_history");
    let err = Database::open_with(&url, read_only()).unwrap_err();
    assert!(matches!(err, Error::Outdated { .. }), "{err:?}");
    assert_hidden("an outdated schema", &err.to_string(), password);

    let missing = database_url(&url, &format!("{}_missing", pg.name())).unwrap();
    let options = Options { busy_timeout: Duration::from_secs(2), ..Options::default() };
    let err = Database::open_with(&missing, options).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_hidden("a missing database", &err.to_string(), password);
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
}

/// What a server says when it refuses a password, and the passwords it was given.
struct RefusingServer {
    port: u16,
    passwords: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl RefusingServer {
    /// A listener on 127.0.0.1 that answers each connection as a PostgreSQL server whose
    /// password check fails: it asks for the password in clear text, then sends the error a
    /// server sends (SQLSTATE 28P01), with a hint on a line of its own, and closes.
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let passwords = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (Arc::clone(&passwords), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    refuse(stream, &seen);
                }
            }
        });
        Self { port, passwords, stop }
    }
}

impl Drop for RefusingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One connection to [`RefusingServer`]: the password the client sent goes into `seen` before
/// the refusal is sent, so a client that has its refusal finds it there.
fn refuse(mut stream: TcpStream, seen: &Mutex<Vec<String>>) -> Option<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let read_message = |stream: &mut TcpStream, tagged: bool| -> Option<Vec<u8>> {
        if tagged {
            stream.read_exact(&mut [0u8]).ok()?;
        }
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(len)).ok()?.checked_sub(4)?];
        stream.read_exact(&mut body).ok()?;
        Some(body)
    };
    let startup = read_message(&mut stream, false)?;
    if startup.get(..4) == Some(&80_877_103i32.to_be_bytes()[..]) {
        stream.write_all(b"N").ok()?; // no TLS; the startup message comes next
        read_message(&mut stream, false)?;
    }
    let mut ask = b"R".to_vec();
    ask.extend(8i32.to_be_bytes());
    ask.extend(3i32.to_be_bytes()); // AuthenticationCleartextPassword
    stream.write_all(&ask).ok()?;
    let password = read_message(&mut stream, true)?;
    let password = String::from_utf8_lossy(password.strip_suffix(&[0]).unwrap_or(&password));
    seen.lock().unwrap().push(password.into_owned());
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28P01"),
        (b'M', "password authentication failed for user \"alice\""),
        (b'H', "check the password of the URL"),
    ] {
        fields.push(code);
        fields.extend(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut error = b"E".to_vec();
    error.extend((fields.len() as i32 + 4).to_be_bytes());
    error.extend(fields);
    stream.write_all(&error).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// A server that refuses the password: the opening is `Error::Connect`, one line that names
    /// the URL with `***` for the password and says what the server said; the password went to
    /// the server and nowhere else. Passwords of any characters, percent-encoded in the URL.
    #[test]
    fn a_refused_password_is_one_line_naming_the_url_without_it_on_postgres(
        password in "[^\u{0}]{6,24}".prop_filter("distinct", |p| p.trim().len() >= 6),
    ) {
        let server = RefusingServer::start();
        let url = format!(
            "postgres://alice:{}@127.0.0.1:{}/aigentflow",
            encode(&password),
            server.port
        );
        // The server answers at once; the default wait keeps a loaded machine from turning
        // the refusal into a timeout.
        let err = Database::open(&url).unwrap_err();
        let message = err.to_string();
        prop_assert!(matches!(err, Error::Connect { .. }), "{:?}", err);
        prop_assert!(message.contains("password authentication failed"), "{}", message);
        // The URL named without its credentials (the redaction policy of messages hides the
        // user's part that `location()` shows as `alice:***`).
        prop_assert!(message.starts_with("cannot connect to database postgres://"), "{}", message);
        prop_assert!(
            message.contains(&format!("@127.0.0.1:{}/aigentflow", server.port)),
            "{}",
            message
        );
        prop_assert!(!message.contains('\n'), "not one line: {}", message);
        assert_hidden("the refusal", &message, &password);
        assert_hidden("the refusal's Debug", &format!("{err:?}"), &password);
        let sent = server.passwords.lock().unwrap().clone();
        prop_assert!(sent.iter().all(|p| *p == password), "{:?}", sent);
        prop_assert!(!sent.is_empty());
    }

    /// Whatever characters a password holds and however the URL spells it, a database handle
    /// names the URL without it: the location shown is the URL as the driver reads it, with
    /// `***` for the password.
    #[test]
    fn the_location_of_a_url_with_a_password_never_shows_it_on_postgres(
        password in "[^\u{0}]{6,24}".prop_filter("distinct", |p| p.trim().len() >= 6),
        raw_password in any::<bool>(),
        query_password in any::<bool>(),
    ) {
        let Some(pg) = pg_database() else { return Ok(()) };
        let url = if query_password {
            let sep = if pg.url().contains('?') { '&' } else { '?' };
            format!("{}{sep}pass%77ord={}", pg.url(), encode(&password))
        } else if raw_password && !password.contains(['@', '%']) {
            with_password(pg.url(), "postgres", "x").replace(":x@", &format!(":{password}@"))
        } else {
            with_password(pg.url(), "postgres", &password)
        };
        let db = Database::open(&url).unwrap_or_else(|e| panic!("{e}"));
        let shown = db.location().display().to_string();
        assert_hidden("location()", &shown, &password);
        let config: postgres::Config = shown.parse().unwrap();
        let original: postgres::Config = url.parse().unwrap();
        prop_assert_eq!(config.get_dbname(), original.get_dbname());
        prop_assert_eq!(config.get_hosts(), original.get_hosts());
        prop_assert_eq!(config.get_user(), original.get_user());
        prop_assert_eq!(config.get_password(), Some(&b"***"[..]));
    }
}

// ---- A server that is not there, connections dropped while idle -----------------------------

/// No server at the address (a port nothing listens on), or one that accepts connections and
/// never answers: opening fails with one line naming the URL and the cause, once the busy
/// timeout is spent, instead of waiting for ever.
#[test]
fn a_server_that_is_not_there_is_one_line_not_a_hang_on_postgres() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (port, cause) in [(closed, "refused"), (silent_port, "timed out")] {
        let url = format!("postgres://bob:hunter2hunter2@127.0.0.1:{port}/aigentflow");
        let options = Options { busy_timeout: Duration::from_millis(500), ..Options::default() };
        let err = Database::open_with(&url, options).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(message.starts_with("cannot connect to database postgres://"), "{message}");
        assert!(message.contains(&format!("@127.0.0.1:{port}/aigentflow:")), "{message}");
        assert!(message.to_lowercase().contains(cause), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert_hidden("a connect error", &message, "hunter2hunter2");
    }
    drop(silent);
}

/// The pool's idle connections are killed from another session, as a server restart, a proxy
/// or an idle timeout does during a long model call: the next reads and writes still work,
/// because a transaction's BEGIN finds a dead connection before anything else is sent, and the
/// transaction begins on another one.
#[test]
fn pooled_connections_killed_while_idle_are_replaced_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let store = SqliteStateStore::new(t.db().clone());
    let mut m = saved(t.db(), "task-1");
    // Several connections in the pool: threads holding transactions at once.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| store.load_state(&"task-1".into()).unwrap());
        }
    });
    let mut admin = Driver::of(&t);
    let kill = "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
        WHERE application_name = 'aigentflow' AND datname = current_database()
        AND pid <> pg_backend_pid()";
    let step = |m: &mut StateMachine| {
        let event = match m.state() {
            aigentflow::states::WorkflowState::Orchestrating => Event::SpawnAgent,
            aigentflow::states::WorkflowState::AgentWorking => Event::AgentDone,
            _ => Event::RouteNext,
        };
        m.apply(event, None).unwrap();
    };
    for round in 0..3 {
        let killed = admin.count(kill, &[]);
        assert!(killed >= 1, "round {round}: no pooled connection to kill");
        assert_eq!(store.load_state(&"task-1".into()).unwrap().as_ref(), Some(m.persisted()));
        step(&mut m);
        store.save_state(m.persisted()).unwrap();
        admin.count(kill, &[]);
        ConfigStore::new(t.db().clone()).set("round", &Scope::Global, &json!(round)).unwrap();
        m = StateMachine::from_persisted(store.load_state(&"task-1".into()).unwrap().unwrap());
        step(&mut m);
        store.save_state(m.persisted()).unwrap();
    }
    let loaded = SqliteStateStore::new(t.reopen()).load_state(&"task-1".into()).unwrap();
    assert_eq!(loaded.as_ref(), Some(m.persisted()));
    assert_eq!(m.history().len(), 2 + 3 * 2);
}
