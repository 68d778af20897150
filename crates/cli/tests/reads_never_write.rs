//! RELIABILITY R17: every read command and `verify` leaves the database as it was: on a
//! database in use, on one this user cannot write, on an older schema (a clear message naming
//! `aigentflow db migrate`) and on a 0-byte file. Run as an operator would, through the binary.
//!
//! The scenarios that are not about SQLite's file run on both backends (`on_both!`). "As it
//! was" is the file's bytes (and its WAL's) on SQLite; on PostgreSQL, whose files are the
//! server's, every row of every table (the audit head's included) and where every sequence
//! stands, read back through the `postgres` crate. "A user who cannot write" is one the file's
//! permissions stop (SQLite), or a role granted nothing but SELECT (PostgreSQL), so that any
//! write a read command tried would fail it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use aigentflow_persistence::Backend;
use aigentflow_testkit::{on_both, url_as, Driver, EmptyDb};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The command as the current user, or (when that is root, whom permissions do not stop) as
/// the unprivileged `nobody`, so a read-only copy is really read-only to it.
fn command(unprivileged: bool) -> Command {
    let bin = env!("CARGO_BIN_EXE_aigentflow");
    let mut c = if unprivileged && is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.env_remove("AIGENTFLOW_DB").env("NO_COLOR", "1");
    c
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn run_as(db: &Path, args: &[&str], unprivileged: bool) -> Run {
    let out = command(unprivileged).arg("--db").arg(db).args(args).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(db: &Path, args: &[&str]) -> Run {
    run_as(db, args, false)
}

/// The bytes of the database file and of its WAL (empty when there is none).
fn bytes(db: &Path) -> (Vec<u8>, Vec<u8>) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    (std::fs::read(db).unwrap(), std::fs::read(wal).unwrap_or_default())
}

/// A database written by `aigentflow demo`, with the ids of its task, trace and a lesson.
fn demo(dir: &Path) -> (PathBuf, Value, String) {
    demo_at(&dir.join("aigentflow.db"))
}

/// `demo` at `db`, a path or a URL.
fn demo_at(db: &Path) -> (PathBuf, Value, String) {
    let db = db.to_path_buf();
    let r = run(&db, &["--json", "demo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let lessons: Value =
        serde_json::from_str(&run(&db, &["--json", "lessons", "top"]).stdout).unwrap();
    let lesson = lessons[0]["id"].as_str().unwrap().to_owned();
    (db, report, lesson)
}

/// Every read command of the CLI, with arguments that find something in the demo database.
fn read_commands(report: &Value, lesson: &str, backup: &Path) -> Vec<Vec<String>> {
    let task = report["task"].as_str().unwrap();
    let trace = report["trace"].as_str().unwrap();
    let backup = backup.to_str().unwrap();
    [
        vec!["status"],
        vec!["tasks", "list"],
        vec!["tasks", "show", task],
        vec!["tasks", "show", task, "--format", "mermaid"],
        vec!["tasks", "resumable"],
        vec!["workflow", "list"],
        vec!["tasks", "export", task, "-o", "-"],
        vec!["audit", "query", "--limit", "5"],
        vec!["audit", "summary", "--project", "demo-project"],
        vec!["audit", "export", "--format", "csv"],
        vec!["audit", "export", "--format", "json"],
        vec!["audit", "export", "--format", "jsonl"],
        vec!["audit", "verify"],
        vec!["audit", "head"],
        vec!["lessons", "show", lesson],
        vec!["lessons", "search", "login"],
        vec!["lessons", "top"],
        vec!["traces", "list"],
        vec!["traces", "show", trace],
        vec!["traces", "metrics", "--agent", "coder"],
        vec!["config", "list"],
        vec!["db", "check"],
        vec!["db", "backup", backup],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_owned).collect())
    .collect()
}

/// What a change of the database would show: the bytes of the SQLite file and its WAL, or
/// every row and sequence of the PostgreSQL database.
#[derive(Debug, PartialEq)]
enum Seen {
    Bytes((Vec<u8>, Vec<u8>)),
    Rows(BTreeMap<String, Vec<Vec<Option<String>>>>),
}

fn seen(backend: Backend, location: &Path) -> Seen {
    match backend {
        Backend::Sqlite => Seen::Bytes(bytes(location)),
        Backend::Postgres => {
            Seen::Rows(Driver::connect(backend, location.to_str().unwrap()).dump())
        }
    }
}

on_both! {
fn r17_every_read_command_leaves_the_database_as_it_was(t: EmptyDb) {
    let (db, report, lesson) = demo_at(Path::new(t.location()));
    run(&db, &["config", "set", "max_retries", "3"]);
    let before = seen(t.backend(), &db);
    for args in read_commands(&report, &lesson, &t.dir().join("backup.db")) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&db, &args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(seen(t.backend(), &db) == before, "{args:?} changed the database");
    }
}
}

/// The database of a test as a user who may read it but not write it reaches it.
enum Reader {
    /// A copy in a folder of its own, both read-only, run as `nobody` when this is root.
    Copy { copy: PathBuf, folder: PathBuf },
    /// The same database through a role that may connect and SELECT, and nothing else; the
    /// role is dropped with this.
    Role { url: String, name: String, admin: String },
}

impl Reader {
    fn of(t: &EmptyDb, db: &Path) -> Self {
        match t.backend() {
            Backend::Sqlite => {
                // No -wal or -shm beside the copy: what a backup on a read-only mount looks like.
                let folder = t.dir().join("ro");
                std::fs::create_dir(&folder).unwrap();
                let copy = folder.join("copy.db");
                std::fs::copy(db, &copy).unwrap();
                std::fs::set_permissions(t.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).unwrap();
                std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
                Self::Copy { copy, folder }
            }
            Backend::Postgres => {
                let admin = t.location().to_owned();
                let mut driver = Driver::connect(Backend::Postgres, &admin);
                let database = driver.query("SELECT current_database()", &[]).remove(0).remove(0);
                let database = database.unwrap();
                let name = format!("reader_{}", database.trim_start_matches("aigentflow_test_"));
                driver.batch(&format!(
                    "CREATE ROLE \"{name}\" LOGIN PASSWORD 'reads';
                     GRANT CONNECT ON DATABASE \"{database}\" TO \"{name}\";
                     GRANT USAGE ON SCHEMA public TO \"{name}\";
                     GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{name}\";"
                ));
                let url = url_as(&admin, &name, "reads").unwrap();
                Self::Role { url, name, admin }
            }
        }
    }

    /// The `--db` value the reader uses.
    fn db(&self) -> &Path {
        match self {
            Self::Copy { copy, .. } => copy,
            Self::Role { url, .. } => Path::new(url),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        run_as(self.db(), args, matches!(self, Self::Copy { .. }))
    }

    /// What a change would show (read by the tables' owner on PostgreSQL).
    fn seen(&self) -> Seen {
        match self {
            Self::Copy { copy, .. } => seen(Backend::Sqlite, copy),
            Self::Role { admin, .. } => seen(Backend::Postgres, Path::new(admin)),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        match self {
            Self::Copy { folder, .. } => {
                let _ = std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755));
            }
            Self::Role { name, admin, .. } => {
                Driver::connect(Backend::Postgres, admin)
                    .batch(&format!("DROP OWNED BY \"{name}\"; DROP ROLE \"{name}\""));
            }
        }
    }
}

on_both! {
/// Every read command works for a user who cannot write the database, and changes nothing;
/// a write command says why it cannot write, on one line.
fn r17_a_copy_this_user_cannot_write_is_read_verified_and_checked(t: EmptyDb) {
    let (db, report, lesson) = demo_at(Path::new(t.location()));
    let reader = Reader::of(t, &db);
    let out = tempfile::tempdir().unwrap();
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = reader.seen();
    for args in read_commands(&report, &lesson, &out.path().join("backup.db")) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = reader.run(&args);
        assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
    }
    assert!(reader.seen() == before, "a read changed the database");
    if let Reader::Copy { folder, .. } = &reader {
        let entries: Vec<_> =
            std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, ["copy.db"], "nothing was created beside the copy");
    }
    // A write command says why it cannot write, on one line.
    let r = reader.run(&["config", "set", "k", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
}
}

#[test]
fn r17_an_older_schema_is_named_with_db_migrate_and_left_as_it_was_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy.db");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/legacy-aigentflow.db");
    std::fs::copy(fixture, &legacy).unwrap();
    let before = bytes(&legacy);
    for args in [
        &["status"][..],
        &["tasks", "list"],
        &["audit", "query"],
        &["audit", "verify"],
        &["audit", "head"],
        &["lessons", "search", "x"],
        &["traces", "list"],
        &["config", "list"],
        &["db", "check"],
    ] {
        let r = run(&legacy, args);
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("aigentflow db migrate"), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert_eq!(bytes(&legacy), before, "{args:?} changed the file");
    }
    // A backup is what an operator takes before migrating: it copies the file as it is.
    let backup = dir.path().join("before-migrate.db");
    let r = run(&legacy, &["db", "backup", backup.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(bytes(&legacy), before);
    assert_eq!(run(&legacy, &["db", "migrate"]).code, 0);
    assert_eq!(run(&legacy, &["status"]).code, 0);
    assert_eq!(run(&backup, &["db", "migrate"]).code, 0, "the backup is the legacy database");
}

#[test]
fn r17_a_zero_byte_file_stays_zero_bytes_and_is_named_empty_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    for args in [
        &["status"][..],
        &["audit", "verify"],
        &["audit", "log", "--action", "x", "--category", "user"],
        &["config", "set", "k", "1"],
        &["db", "check"],
        &["db", "migrate"],
    ] {
        let r = run(&empty, args);
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("empty file"), "{args:?}: {}", r.stderr);
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "{args:?} wrote to it");
    }
    let entries: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["empty.db"], "nothing was created beside it");
    // `init` is how an empty file becomes a database.
    assert_eq!(run(&empty, &["init"]).code, 0);
    assert_eq!(run(&empty, &["audit", "verify"]).code, 0);
}

#[test]
fn a_path_is_a_file_never_a_sqlite_uri() {
    // The bundled SQLite reads a name that starts with `file:` as a URI: `file::memory:` would be
    // a database in memory (nothing kept), `file:/x/real.db` the real database behind a decoy.
    let dir = tempfile::tempdir().unwrap();
    let in_dir = |args: &[&str]| {
        let out = command(false).current_dir(dir.path()).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(in_dir(&["--db", "file::memory:", "demo"]).0, Some(0));
    assert!(dir.path().join("file::memory:").is_file(), "the demo is kept in a file of that name");
    assert_eq!(in_dir(&["--db", "file::memory:", "audit", "verify"]).0, Some(0));

    let real = dir.path().join("real.db");
    assert_eq!(run(&real, &["demo"]).code, 0);
    let before = bytes(&real);
    // A decoy at the relative path `file:<absolute path of real.db>`.
    let decoy = dir.path().join(format!("file:{}", real.display()));
    std::fs::create_dir_all(decoy.parent().unwrap()).unwrap();
    std::fs::write(&decoy, b"decoy").unwrap();
    let uri = format!("file:{}", real.display());
    for args in [
        &["--db", &uri, "audit", "export", "--format", "csv", "-o", real.to_str().unwrap()][..],
        &["--db", &uri, "db", "backup", real.to_str().unwrap()],
        &["--db", &format!("{uri}?mode=rwc"), "config", "set", "k", "1"],
    ] {
        let (code, stderr) = in_dir(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
    }
    assert_eq!(bytes(&real), before, "the real database is untouched");
    assert_eq!(std::fs::read(&decoy).unwrap(), b"decoy");
}

#[test]
fn a_read_only_copy_with_changes_still_in_its_wal_is_refused_not_read_stale_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = demo(dir.path());
    // A writer that has not checkpointed: the last rows are in the -wal only.
    let writer = rusqlite::Connection::open(&db).unwrap();
    writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    writer
        .execute_batch(
            "INSERT INTO configurations (key, value, scope) VALUES ('only-in-wal', '1', 'global')",
        )
        .unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let copy = ro.join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::copy(format!("{}-wal", db.display()), format!("{}-wal", copy.display())).unwrap();
    drop(writer);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = bytes(&copy);
    for args in [&["config", "list"][..], &["audit", "verify"], &["status"], &["db", "check"]] {
        let r = run_as(&copy, args, true);
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("-wal holds changes"), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    }
    assert_eq!(bytes(&copy), before);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Where SQLite can apply them, the changes are read.
    let r = run(&copy, &["config", "get", "only-in-wal"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "1"), "{}", r.stderr);
}

#[test]
fn a_sqlite_file_of_something_else_is_never_turned_into_an_aigentflow_database() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("places.sqlite");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT); INSERT INTO moz_places (url) VALUES ('https://example.org')").unwrap();
    drop(conn);
    let blank = dir.path().join("blank.db");
    let conn = rusqlite::Connection::open(&blank).unwrap();
    conn.execute_batch("PRAGMA user_version = 1").unwrap();
    drop(conn);
    for (file, needle) in [(&foreign, "not an aigentflow database"), (&blank, "no tables")] {
        let before = bytes(file);
        for args in [
            &["status"][..],
            &["init"],
            &["demo"],
            &["config", "set", "k", "v"],
            &["audit", "log", "--action", "a", "--category", "user"],
            &["lessons", "rebuild"],
            &["db", "migrate"],
            &["db", "backup", dir.path().join("b.db").to_str().unwrap()],
        ] {
            if file == &blank && matches!(args[0], "init" | "demo") {
                continue;
            }
            let r = run(file, args);
            assert_eq!(r.code, 1, "{args:?} on {}: {}{}", file.display(), r.stdout, r.stderr);
            assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
            assert!(bytes(file) == before, "{args:?} changed {}", file.display());
        }
    }
    // `init` is how a SQLite file with no tables becomes an aigentflow database.
    assert_eq!(run(&blank, &["init"]).code, 0);
    assert_eq!(run(&blank, &["audit", "verify"]).code, 0);
}

/// A copy of `db` (with `-journal`) taken while a writer was in the middle of a transaction in
/// rollback-journal mode: the file holds some of the transaction's pages, the hot journal the
/// pages they replaced. What a writer that crashed mid-write leaves.
fn with_hot_journal(db: &Path, copy: &Path) {
    let writer = rusqlite::Connection::open(db).unwrap();
    writer.pragma_update(None, "journal_mode", "DELETE").unwrap();
    writer.pragma_update(None, "cache_size", 1).unwrap();
    writer.execute_batch("BEGIN").unwrap();
    for i in 0..300 {
        writer
            .execute(
                "INSERT INTO configurations (key, value, scope) VALUES (?1, ?2, 'global')",
                (format!("unfinished-{i}"), "x".repeat(500)),
            )
            .unwrap();
    }
    std::fs::copy(db, copy).unwrap();
    std::fs::copy(format!("{}-journal", db.display()), format!("{}-journal", copy.display()))
        .unwrap();
    writer.execute_batch("ROLLBACK").unwrap();
}

/// A hot journal (a writer stopped mid-transaction) keeps every read command from reading, in
/// one line that names the unfinished transaction and the command that rolls it back, not the
/// folder (which can be written); the file and its journal stay as they were. Where the folder
/// cannot be written, the folder is named. `db migrate` rolls it back and says so; the
/// transaction's rows are gone and the log verifies.
#[test]
fn a_hot_journal_is_named_as_an_unfinished_transaction_and_rolled_back_by_a_write_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (db, report, lesson) = demo(dir.path());
    let copy = dir.path().join("crashed.db");
    with_hot_journal(&db, &copy);
    let journal = PathBuf::from(format!("{}-journal", copy.display()));
    let files = || (std::fs::read(&copy).unwrap(), std::fs::read(&journal).unwrap());
    let before = files();
    let backup = dir.path().join("backup.db");
    for args in read_commands(&report, &lesson, &backup) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&copy, &args);
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("a writer left unfinished"), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("aigentflow db migrate"), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("folder"), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert_eq!(files(), before, "{args:?} changed the file or its journal");
    }
    assert!(!backup.exists());
    // In a folder this user cannot write, nothing could roll it back: the folder is the cause.
    if is_root() {
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let locked = ro.join("crashed.db");
        with_hot_journal(&db, &locked);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let r = run_as(&locked, &["status"], true);
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("-journal holds changes"), "{}", r.stderr);
        assert!(r.stderr.contains("folder"), "{}", r.stderr);
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let r = run(&copy, &["--json", "db", "migrate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let migrated: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(migrated["rolled_back"], true, "{migrated}");
    assert!(migrated["from"].is_null(), "{migrated}");
    assert!(!journal.exists(), "the journal was rolled back");
    let r = run(&copy, &["--json", "config", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("unfinished-"), "{}", r.stdout);
    assert_eq!(run(&copy, &["audit", "verify"]).code, 0);
    let r = run(&copy, &["db", "migrate"]);
    assert!(r.stdout.contains("up to date"), "{}", r.stdout);
}
