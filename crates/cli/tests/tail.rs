//! `aigentflow audit tail`, run as an operator or a poller would, on a SQLite file and (when
//! `AIGENTFLOW_PG_URL` names a server) on a PostgreSQL database of its own: pages by cursor
//! cover every entry once, in order; `--follow` prints an entry that another process appends
//! after it started, ends with exit code 0 and whole lines on SIGINT or SIGTERM, and ends
//! quietly when its reader goes away; a tail never writes.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use aigentflow_audit::{AuditEntry, AuditLog, Category};
use aigentflow_persistence::Database;
use proptest::prelude::*;
use serde_json::Value;

/// How long a test waits for what should come at once (a line, an exit) before it fails:
/// generous, never a measure of speed.
const DEADLINE: Duration = Duration::from_secs(30);

/// The server the PostgreSQL runs use, and whether a missing one fails the test.
const PG_URL_VAR: &str = "AIGENTFLOW_PG_URL";
const PG_REQUIRE_VAR: &str = "AIGENTFLOW_REQUIRE_PG";

/// A fresh database for one run: a SQLite file in a temp dir, or a database of its own on the
/// server of `AIGENTFLOW_PG_URL`, dropped (with any connection still open) when this drops.
struct TestDb {
    location: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aigentflow.db");
        let db = Self { location: path.display().to_string(), _dir: Some(dir), pg: None };
        db.open().close().unwrap();
        db
    }

    /// A database made with `CREATE DATABASE` under a unique name on the server.
    fn postgres(admin_url: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!(
            "aigentflow_tail_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos % 1_000_000_000
        );
        let mut admin = postgres::Client::connect(admin_url, postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
        let db = Self {
            location: with_database(admin_url, &name),
            _dir: None,
            pg: Some((admin_url.to_owned(), name)),
        };
        db.open();
        db
    }

    fn open(&self) -> Database {
        Database::open(&self.location).unwrap()
    }

    fn log(&self) -> AuditLog {
        AuditLog::new(self.open())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = &self.pg {
            let dropped =
                postgres::Client::connect(admin_url, postgres::NoTls).and_then(|mut c| {
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                });
            if let Err(e) = dropped {
                eprintln!("could not drop the test database {name}: {e}");
            }
        }
    }
}

/// `url` naming the database `name` instead of its own (its path replaced; a `dbname`
/// parameter, which would win over the path, left out).
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let hosts_from = rest.find('@').map_or(0, |at| at + 1);
    let path_from = rest[hosts_from..].find(['/', '?']).map_or(rest.len(), |i| hosts_from + i);
    let query = rest[path_from..].split_once('?').map_or("", |(_, q)| q);
    let kept: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && !p.starts_with("dbname=")).collect();
    let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    format!("{scheme}://{}/{name}{query}", &rest[..path_from])
}

/// A fresh database on each backend there is: SQLite always, PostgreSQL when
/// `AIGENTFLOW_PG_URL` is set (and required when `AIGENTFLOW_REQUIRE_PG` is).
fn backends() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    match std::env::var(PG_URL_VAR).ok().filter(|u| !u.is_empty()) {
        Some(url) => dbs.push(TestDb::postgres(&url)),
        None if std::env::var(PG_REQUIRE_VAR).is_ok_and(|r| !r.is_empty()) => {
            panic!("{PG_REQUIRE_VAR} is set but {PG_URL_VAR} is not")
        }
        None => eprintln!("PostgreSQL runs skipped ({PG_URL_VAR} is not set)"),
    }
    dbs
}

fn command(db: &TestDb) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aigentflow"));
    c.arg("--db").arg(&db.location).env_remove("AIGENTFLOW_DB").env("NO_COLOR", "1");
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(db: &TestDb, args: &[&str]) -> Run {
    let out = command(db).args(args).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The JSON Lines of a successful run.
fn json_lines(r: &Run) -> Vec<Value> {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn ids(lines: &[Value]) -> Vec<i64> {
    lines.iter().map(|v| v["id"].as_i64().unwrap()).collect()
}

/// Appends `n` entries in this process; returns their ids.
fn append(db: &TestDb, prefix: &str, n: usize) -> Vec<i64> {
    let entries: Vec<AuditEntry> = (0..n)
        .map(|i| AuditEntry {
            project_id: Some("p".into()),
            ..AuditEntry::new(format!("{prefix}-{i}"), Category::Agent)
        })
        .collect();
    db.log().log_batch(&entries).unwrap()
}

/// A `tail --follow` child, its stdout read on a thread of its own into whole lines. A line
/// still unfinished when stdout ends is sent as `Err` (a half line).
struct Follower {
    child: Child,
    lines: Receiver<Result<String, String>>,
}

impl Follower {
    /// Starts `--json audit tail --follow ARGS`. With `keep`, the reading thread stops after
    /// that many lines and closes its end of the pipe, as `head -n KEEP` does.
    fn start(db: &TestDb, args: &[&str], keep: Option<usize>) -> Self {
        let mut child = command(db)
            .args(["--json", "audit", "tail", "--follow"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut pending, mut sent) = (Vec::new(), 0);
            let mut buf = [0u8; 4096];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    if !pending.is_empty() {
                        let _ = send.send(Err(String::from_utf8_lossy(&pending).into_owned()));
                    }
                    return;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line[..end]).into_owned();
                    sent += 1;
                    if send.send(Ok(text)).is_err() || keep == Some(sent) {
                        return; // dropping `stdout` closes the pipe's reading end
                    }
                }
            }
        });
        Self { child, lines }
    }

    /// The next line's entry id, waiting at most the deadline.
    fn next_id(&self) -> i64 {
        let line = self
            .lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no line within {DEADLINE:?}: {e}"))
            .unwrap_or_else(|half| panic!("a half line: {half:?}"));
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        value["id"].as_i64().unwrap()
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    /// Waits for the child to end (at most the deadline, else it is killed and the test fails);
    /// returns its exit code, its stderr, and the lines it printed that were not read yet.
    fn end(self) -> (Option<i32>, String, Vec<Result<String, String>>) {
        let Self { mut child, lines } = self;
        let mut stderr = child.stderr.take().unwrap();
        let (send, ended) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = send.send(child.wait());
        });
        let status = ended.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("the follower did not end within {DEADLINE:?}");
        });
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        (status.unwrap().code(), text, lines.try_iter().collect())
    }
}

/// A page of JSON Lines from `--after` with `--limit`, and the entries `audit query --json`
/// gives for the same ids: the same objects. Plain lines are sanitised. Without `--after`, the
/// last `--limit` entries; after the last entry, nothing.
#[test]
fn tail_prints_a_page_after_the_cursor_with_the_fields_of_query_and_exits() {
    for db in backends() {
        append(&db, "a", 24);
        db.log().log(&AuditEntry::new("red \u{1b}[31m\nline", Category::User)).unwrap();
        let page =
            json_lines(&run(&db, &["--json", "audit", "tail", "--after", "3", "--limit", "5"]));
        assert_eq!(ids(&page), [4, 5, 6, 7, 8]);
        let query: Vec<Value> = {
            let r = run(&db, &["--json", "audit", "query", "--limit", "100"]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            serde_json::from_str(&r.stdout).unwrap()
        };
        for entry in &page {
            let same = query.iter().find(|q| q["id"] == entry["id"]).unwrap();
            assert_eq!(entry, same, "the fields of `audit query --json`");
        }
        let last = json_lines(&run(&db, &["--json", "audit", "tail"]));
        assert_eq!(ids(&last), (16..=25).collect::<Vec<_>>(), "the last 10 by default");
        let plain = run(&db, &["audit", "tail", "--limit", "2"]);
        assert_eq!(plain.code, 0, "{}", plain.stderr);
        let lines: Vec<&str> = plain.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", plain.stdout);
        assert!(lines[0].starts_with("24  ") && lines[1].starts_with("25  "), "{lines:?}");
        assert!(lines[1].contains("red \\u{1b}[31m\\nline"), "{lines:?}");
        assert!(!plain.stdout.contains('\u{1b}'), "{:?}", plain.stdout);
        let none = run(&db, &["audit", "tail", "--after", "25"]);
        assert_eq!((none.code, none.stdout.as_str()), (0, ""), "{}", none.stderr);
    }
}

/// A poller that passes the last id it printed, with any page sizes, prints every entry exactly
/// once, in id order, and then nothing.
#[test]
fn polling_tail_by_cursor_with_any_page_sizes_prints_every_entry_once_in_order() {
    for db in backends() {
        let all = append(&db, "p", 23);
        let config = ProptestConfig { cases: 6, failure_persistence: None, ..Default::default() };
        proptest!(config, |(sizes in proptest::collection::vec(1u64..=9, 1..5))| {
            let (mut cursor, mut seen) = (0i64, Vec::new());
            for k in 0.. {
                let limit = sizes[k % sizes.len()].to_string();
                let after = cursor.to_string();
                let page = ids(&json_lines(&run(
                    &db,
                    &["--json", "audit", "tail", "--after", &after, "--limit", &limit],
                )));
                prop_assert!(page.len() <= sizes[k % sizes.len()] as usize);
                let Some(&last) = page.last() else { break };
                cursor = last;
                seen.extend(page);
            }
            prop_assert_eq!(&seen, &all);
        });
    }
}

/// A cursor or page size outside its domain is one error line and exit code 1 naming it; one
/// that is not a number is a usage error, exit code 2.
#[test]
fn tail_refuses_cursors_and_page_sizes_outside_their_domain() {
    let db = TestDb::sqlite();
    for (args, code, needle) in [
        (&["--after", "-1"][..], 1, "-1"),
        (&["--after", "9223372036854775808"][..], 1, "9223372036854775808"),
        (&["--limit", "0"][..], 1, "between 1 and 1000"),
        (&["--limit", "1001"][..], 1, "between 1 and 1000"),
        (&["--limit", "x"][..], 2, "--limit"),
        (&["--after", "1.5"][..], 2, "--after"),
    ] {
        let r = run(&db, &[&["audit", "tail"][..], args].concat());
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(r.stdout.is_empty());
    }
}

/// `audit tail --follow` prints the entries already there, then an entry that another process
/// (this test) appends after it started, and ends on SIGINT or SIGTERM with exit code 0, every
/// line it printed whole, nothing on stderr.
#[test]
fn tail_follow_prints_an_entry_another_process_appends_and_ends_cleanly_on_sigint_or_sigterm() {
    for db in backends() {
        for signal in ["INT", "TERM"] {
            let before = append(&db, &format!("before-{signal}"), 2);
            let after = (before[0] - 1).to_string();
            let follower = Follower::start(&db, &["--after", &after], None);
            assert_eq!([follower.next_id(), follower.next_id()], [before[0], before[1]]);
            // The follower has read the log once and now waits: what comes next is new to it.
            let later = append(&db, &format!("later-{signal}"), 1);
            assert_eq!(follower.next_id(), later[0], "the entry another process appended");
            follower.signal(signal);
            let (code, stderr, rest) = follower.end();
            assert_eq!(code, Some(0), "SIG{signal}: {stderr}");
            assert_eq!(stderr, "", "SIG{signal}");
            assert!(rest.is_empty(), "SIG{signal}: printed after the last entry: {rest:?}");
        }
    }
}

/// `aigentflow audit tail --follow | head -2`: once the reader has gone, the follower ends by
/// itself with exit code 0 and nothing on stderr, though nothing new comes that would fail to
/// be written with a broken pipe.
#[test]
fn tail_follow_ends_quietly_when_its_reader_goes_away() {
    for db in backends() {
        // Only what it reads: had the follower more to write, the write would fail with a
        // broken pipe, and this would not test that it notices the reader going by itself.
        append(&db, "x", 2);
        let follower = Follower::start(&db, &["--after", "0"], Some(2));
        assert_eq!([follower.next_id(), follower.next_id()], [1, 2]);
        let (code, stderr, _) = follower.end();
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stderr, "");
    }
}

/// The bytes of a SQLite database file and its WAL.
fn file_bytes(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    (std::fs::read(path).unwrap(), std::fs::read(wal).unwrap_or_default())
}

/// A tail, following or not, opens the database read-only: the file and its WAL are unchanged.
#[test]
fn tail_never_writes_on_sqlite() {
    let db = TestDb::sqlite();
    append(&db, "w", 3);
    let path = PathBuf::from(&db.location);
    let before = file_bytes(&path);
    assert_eq!(run(&db, &["audit", "tail"]).code, 0);
    let follower = Follower::start(&db, &["--after", "2"], None);
    assert_eq!(follower.next_id(), 3);
    follower.signal("INT");
    let (code, stderr, _) = follower.end();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(file_bytes(&path) == before, "a tail changed the database's files");
}
