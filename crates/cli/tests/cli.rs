//! The built `aigentflow` binary, run as an operator would: every command on a temp database,
//! `--json` parsed back, exit codes, error lines, exports read by a CSV reader, and a backup
//! taken while another process writes.
//!
//! Every test that is not about one backend runs on both (`on_both!`: `NAME::sqlite` on a
//! SQLite file, `NAME::postgres` on a fresh PostgreSQL database when `AIGENTFLOW_PG_URL` is
//! set), the command given the file's path or the server's URL as `--db`. Tests about SQLite's
//! file (its bytes, a file size limit, files that are not databases) end in `_on_sqlite`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aigentflow_audit::{AuditEntry, AuditLog, Category};
use aigentflow_persistence::Backend;
use aigentflow_testkit::{names_in, on_both, Driver, EmptyDb, Raw};
use aigentflow_tracker::ExecutionTracker;
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

fn output(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cmd(db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aigentflow"));
    c.arg("--db").arg(db).env_remove("AIGENTFLOW_DB").env("NO_COLOR", "1");
    c
}

fn run(db: &Path, args: &[&str]) -> Run {
    output(cmd(db).args(args).output().unwrap())
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aigentflow.db");
    (dir, path)
}

/// A temp database made by `aigentflow init` (only init and demo create one).
fn init_db() -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = temp_db();
    run(&path, &["init"]).ok();
    (dir, path)
}

/// The database of `t` as `--db` takes it: the file's path or the server's URL.
fn at(t: &EmptyDb) -> &Path {
    Path::new(t.location())
}

/// `t`'s database made by `aigentflow init`.
fn init(t: &EmptyDb) -> &Path {
    run(at(t), &["init"]).ok();
    at(t)
}

/// `t`'s database filled by `aigentflow demo`, and the demo's report.
fn demo(t: &EmptyDb) -> (&Path, Value) {
    let report = run(at(t), &["--json", "demo"]).ok().json();
    (at(t), report)
}

/// Whether nothing was created where `t` points: no file (SQLite), no table (PostgreSQL).
fn nothing_at(t: &EmptyDb) -> bool {
    match t.backend() {
        Backend::Sqlite => !at(t).exists(),
        Backend::Postgres => Driver::of(t).tables().is_empty(),
    }
}

/// Runs `sql` around the command on `location`'s database, with the audit log's append-only
/// triggers out of the way, as someone with the file (SQLite) or the tables' owner
/// (PostgreSQL, inside the tampering transaction only) can.
fn tamper(backend: Backend, location: &str, sql: &str) {
    let sql = match backend {
        Backend::Sqlite => format!(
            "DROP TRIGGER IF EXISTS audit_logs_no_update;
             DROP TRIGGER IF EXISTS audit_logs_no_delete;
             {sql}"
        ),
        Backend::Postgres => format!(
            "BEGIN; ALTER TABLE audit_logs DISABLE TRIGGER USER;
             {sql};
             ALTER TABLE audit_logs ENABLE TRIGGER USER; COMMIT;"
        ),
    };
    Driver::connect(backend, location).batch(&sql);
}

/// One line on stderr naming what went wrong, no panic, no backtrace.
fn assert_error_line(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(needle), "stderr lacks {needle:?}: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "one line: {}", r.stderr);
}

on_both! {
fn help_explains_every_level_and_the_exit_codes(t: EmptyDb) {
    let db = at(t);
    let top = run(db, &["--help"]).ok();
    assert!(top.stdout.contains("Exit codes"));
    for cmd in ["init", "status", "demo", "tasks", "audit", "lessons", "traces", "config", "db"] {
        assert!(top.stdout.contains(cmd), "{cmd} missing from --help");
    }
    for args in [
        &["tasks", "--help"][..],
        &["audit", "export", "--help"],
        &["lessons", "search", "--help"],
        &["traces", "recover", "--help"],
        &["db", "backup", "--help"],
        &["config", "set", "--help"],
    ] {
        let r = run(db, args).ok();
        assert!(r.stdout.contains("Usage:"), "{args:?}");
    }
    assert!(nothing_at(t), "help creates nothing");
}
}

on_both! {
/// A missing file, or a server database with no tables yet: a read says to run `init`.
fn a_read_command_on_a_missing_database_says_how_to_create_it_and_creates_nothing(t: EmptyDb) {
    let db = at(t);
    for args in [&["status"][..], &["tasks", "list"], &["audit", "query"], &["db", "check"]] {
        let r = run(db, args);
        assert_error_line(&r, 1, "aigentflow init");
    }
    assert!(nothing_at(t));
    let init = run(db, &["--json", "init"]).ok().json();
    assert_eq!(init["migration"], init["latest"]);
    assert!(!nothing_at(t));
    run(db, &["status"]).ok();
}
}

on_both! {
fn the_demo_writes_a_whole_orchestration_that_every_command_can_inspect(t: EmptyDb) {
    let (db, report) = demo(t);
    assert_eq!(report["final_state"], "COMPLETED");
    let task = report["task"].as_str().unwrap();
    let trace = report["trace"].as_str().unwrap();
    assert_eq!(report["transitions"], 20);
    assert!(report["audit_entries"].as_u64().unwrap() > 20);

    let status = run(db, &["--json", "status"]).ok().json();
    assert_eq!(status["rows"]["workflow_states"], 1);
    assert_eq!(status["rows"]["lessons"], 2);
    assert_eq!(status["tasks_per_state"]["COMPLETED"], 1);
    assert_eq!(status["traces_per_status"]["completed"], 1);
    assert_eq!(status["audit_head"]["rows"], report["audit_entries"]);

    let tasks = run(db, &["--json", "tasks", "list", "--state", "completed"]).ok().json();
    assert_eq!(tasks[0]["task_id"], task);
    let shown = run(db, &["--json", "tasks", "show", task]).ok().json();
    assert_eq!(shown["history"].as_array().unwrap().len(), 20);
    assert_eq!(shown["context"]["checkpoints"].as_array().unwrap().len(), 1);
    assert!(run(db, &["tasks", "show", task]).ok().stdout.contains("TESTS_FAILED"));
    assert_eq!(run(db, &["--json", "tasks", "resumable"]).ok().json(), Value::Array(vec![]));

    let t = run(db, &["--json", "traces", "show", trace]).ok().json();
    assert_eq!(t["trace"]["status"], "completed");
    assert_eq!(t["invocations"].as_array().unwrap().len(), 6);
    let listed = run(db, &["--json", "traces", "list", "--project", "demo-project"]).ok().json();
    assert_eq!(listed[0]["id"], trace);
    let m =
        run(db, &["--json", "traces", "metrics", "--agent", "tester", "--days", "1"]).ok().json();
    assert_eq!(m["total_invocations"], 2);
    assert_eq!(m["failures"], 1);

    let audit =
        run(db, &["--json", "audit", "query", "--task", task, "--category", "user"]).ok().json();
    assert_eq!(audit[0]["action"], "design_approved");
    let summary =
        run(db, &["--json", "audit", "summary", "--project", "demo-project"]).ok().json();
    assert_eq!(summary[0]["category"], "state");

    let found = run(db, &["--json", "lessons", "search", "login"]).ok().json();
    assert_eq!(found[0]["lesson"]["title"], "Session expiry off by 1000");
    assert!(found[0]["snippet"].as_str().unwrap().contains("[login]"));
    let check = run(db, &["--json", "db", "check"]).ok().json();
    assert_eq!(check["ok"], true);
    // Human output of the same commands.
    for args in [&["status"][..], &["lessons", "top"], &["traces", "list"], &["audit", "query"]] {
        assert!(!run(db, args).ok().stdout.is_empty(), "{args:?}");
    }
    // A second demo adds a second task.
    run(db, &["-q", "demo"]).ok();
    assert_eq!(run(db, &["--json", "tasks", "list"]).ok().json().as_array().unwrap().len(), 2);
}
}

/// Runs `aigentflow --db DB ARGS…` with stdout `out` (a pipe whose reader is gone, `/dev/full`).
fn run_with_stdout(db: &Path, args: &[&str], out: impl Into<Stdio>) -> Run {
    output(
        cmd(db)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped())
            .output()
            .unwrap(),
    )
}

/// A pipe whose reader has closed: every write to it fails with a broken pipe.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

on_both! {
/// A command whose stdout fails before its first line (a pipe whose reader has gone, as in
/// `aigentflow demo | head -1`, or `/dev/full`) still does all of its work: the demo's run ends
/// completed and successful with its task COMPLETED (not a trace left running and a task stuck
/// in ANALYZING), its chain intact; a copy lands whole. A closed pipe is exit code 0 and
/// silent; another failed write is one line and exit code 1, once the work is done.
fn a_command_whose_stdout_fails_still_finishes_its_work(t: EmptyDb) {
    let db = at(t);
    let dir = tempfile::tempdir().unwrap();
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    for (i, closed) in [true, false].into_iter().enumerate() {
        let r = if closed {
            run_with_stdout(db, &["demo"], closed_pipe())
        } else {
            run_with_stdout(db, &["demo"], full())
        };
        if closed {
            assert_eq!((r.code, r.stderr.as_str()), (0, ""), "closed pipe");
        } else {
            assert_error_line(&r, 1, "cannot write the output");
        }
        let traces = run(db, &["--json", "traces", "list"]).ok().json();
        let traces = traces.as_array().unwrap();
        assert_eq!(traces.len(), i + 1, "{traces:?}");
        for trace in traces {
            assert_eq!(trace["status"], "completed", "{trace}");
            assert_eq!(trace["success"], true, "{trace}");
        }
        let tasks = run(db, &["--json", "tasks", "list"]).ok().json();
        let tasks = tasks.as_array().unwrap();
        assert_eq!(tasks.len(), i + 1, "{tasks:?}");
        assert!(tasks.iter().all(|task| task["state"] == "COMPLETED"), "{tasks:?}");
        assert_eq!(run(db, &["--json", "audit", "verify"]).ok().json()["finding"], Value::Null);
        // The rule holds for every command that writes: a copy prints after its work.
        let copy = dir.path().join(format!("copy-{i}.db"));
        let copy_text = copy.to_str().unwrap();
        let args = ["db", "copy", db.to_str().unwrap(), copy_text];
        let r = if closed {
            run_with_stdout(db, &args, closed_pipe())
        } else {
            run_with_stdout(db, &args, full())
        };
        assert_eq!(r.code, if closed { 0 } else { 1 }, "{}", r.stderr);
        let rows = |db: &Path| run(db, &["--json", "status"]).ok().json()["rows"].clone();
        assert_eq!(rows(&copy), rows(db));
    }
}
}

/// A file size limit below the 32 KiB of SQLite's shared-memory file stops every command, a
/// read too, before anything grows: the one line says so (not that the database cannot grow),
/// for reads and writes, at limits from 1 KiB to just under 32 KiB. At a limit above it, reads
/// work.
#[test]
fn a_file_size_limit_below_the_shared_memory_file_is_named_as_such_on_sqlite() {
    let (dir, base) = init_db();
    let limited = |db: &Path, kib: u64, args: &[&str]| {
        output(
            Command::new("bash")
                .arg("-c")
                .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_aigentflow"))
                .arg("--db")
                .arg(db)
                .args(args)
                .env_remove("AIGENTFLOW_DB")
                .output()
                .unwrap(),
        )
    };
    for kib in [1, 8, 16, 31] {
        for args in [&["status"][..], &["audit", "verify"], &["config", "set", "k", "v"]] {
            let db = dir.path().join(format!("limited-{kib}.db"));
            std::fs::copy(&base, &db).unwrap();
            let r = limited(&db, kib, args);
            assert_error_line(&r, 1, "shared-memory file");
            assert!(!r.stderr.contains("cannot grow"), "{kib} KiB {args:?}: {}", r.stderr);
            for side in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{side}", db.display()));
            }
            std::fs::remove_file(&db).unwrap();
        }
    }
    let db = dir.path().join("roomy.db");
    std::fs::copy(&base, &db).unwrap();
    let r = limited(&db, 64, &["status"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// `demo` with a file-size limit (a disk that fills up), for limits from the initialised
/// database's size up to one the demo fits in: a failure is exit code 1 and one line; after it
/// no trace is stored without its task, none is left running unless the error says so, and
/// `PRAGMA integrity_check` is ok.
#[test]
fn a_demo_on_a_disk_that_fills_up_fails_with_one_line_and_no_trace_without_its_task_on_sqlite() {
    let (dir, base) = init_db();
    let start_kib = std::fs::metadata(&base).unwrap().len() / 1024;
    let mut failures = 0;
    for kib in (start_kib..start_kib + 8192).step_by(24) {
        let db = dir.path().join(format!("limited-{kib}.db"));
        std::fs::copy(&base, &db).unwrap();
        // SIGXFSZ ignored: a write past the limit fails with EFBIG, as on a full disk.
        let limited = Command::new("bash")
            .arg("-c")
            .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_aigentflow"))
            .args(["--db", db.to_str().unwrap(), "-q", "demo"])
            .env_remove("AIGENTFLOW_DB")
            .output()
            .unwrap();
        let r = output(limited);
        if r.code == 0 {
            break;
        }
        failures += 1;
        assert_error_line(&r, 1, "error");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(check, "ok", "{kib} KiB: {}", r.stderr);
        let orphans = count(
            "SELECT count(*) FROM execution_traces t WHERE NOT EXISTS
                 (SELECT 1 FROM workflow_states w WHERE w.task_id = t.task_id)",
        );
        assert_eq!(orphans, 0, "{kib} KiB: a trace without its task: {}", r.stderr);
        let running = count("SELECT count(*) FROM execution_traces WHERE status = 'running'");
        let left = i64::from(r.stderr.contains("left for `aigentflow traces recover`"));
        assert_eq!(running, left, "{kib} KiB: {}", r.stderr);
        if r.stderr.contains("marked failed") && left == 0 {
            let failed = count("SELECT count(*) FROM execution_traces WHERE success = 0");
            assert_eq!(failed, 1, "{kib} KiB: {}", r.stderr);
        }
    }
    assert!(failures > 0, "the smallest limit must stop the demo");
}

on_both! {
fn audit_log_verify_and_a_kept_head_catch_tampering_with_exit_code_3(t: EmptyDb) {
    let (dir, db) = (t.dir(), init(t));
    for i in 0..5 {
        let details = format!("{{\"n\": {i}}}");
        let r = run(
            db,
            &[
                "--json",
                "audit",
                "log",
                "--action",
                "deploy",
                "--category",
                "user",
                "--project",
                "p",
                "--details",
                &details,
            ],
        )
        .ok();
        assert_eq!(r.json()["id"], i + 1);
    }
    let head = run(db, &["audit", "head"]).ok();
    let head_file = dir.join("head.json");
    std::fs::write(&head_file, &head.stdout).unwrap();
    let ok = run(db, &["audit", "verify", "--head", head_file.to_str().unwrap()]).ok();
    assert!(ok.stdout.contains("intact: 5 rows"), "{}", ok.stdout);

    tamper(t.backend(), t.location(), "UPDATE audit_logs SET action = 'rollback' WHERE id = 3");
    let bad = run(db, &["audit", "verify"]);
    assert_eq!(bad.code, 3, "{}{}", bad.stdout, bad.stderr);
    assert!(bad.stdout.contains("row 3"), "{}", bad.stdout);
    let json = run(db, &["--json", "audit", "verify"]);
    assert_eq!(json.code, 3);
    assert_eq!(json.json()["finding"]["id"], 3);
    let check = run(db, &["db", "check"]);
    assert_eq!(check.code, 3);
    assert!(check.stdout.contains("✗ audit chain"), "{}", check.stdout);

    let r = run(db, &["audit", "verify", "--head", dir.join("none.json").to_str().unwrap()]);
    assert_error_line(&r, 1, "none.json");
    // A head file is read up to a bound, not whole; an endless device is no file at all.
    let huge = dir.join("huge.json");
    std::fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
    let r = run(db, &["audit", "verify", "--head", huge.to_str().unwrap()]);
    assert_error_line(&r, 1, "larger than a head");
    let r = run(db, &["audit", "verify", "--head", "/dev/zero"]);
    assert_error_line(&r, 1, "a device, not a regular file");
}
}

on_both! {
/// `audit verify --head FILE` takes back what `audit head` prints and nothing else: a count of
/// rows the log does not hold up to the head's row is a finding (exit code 3) even when the
/// hash matches; a file `audit head` could not have printed (an unknown field, no rows, an id
/// below 1, a hash that is not a SHA-256) is refused with one line naming the file and why.
fn verify_holds_a_kept_head_to_its_count_and_refuses_a_head_audit_head_could_not_print(t: EmptyDb) {
    let (db, _) = demo(t);
    let dir = tempfile::tempdir().unwrap();
    let head = run(db, &["audit", "head"]).ok().json();
    let (rows, last_id) = (head["rows"].as_u64().unwrap(), head["last_id"].as_i64().unwrap());
    assert!(rows > 2, "the demo logs a few rows: {head}");
    let hash = head["hash"].as_str().unwrap().to_owned();
    let verify = |i: usize, text: &str| {
        let file = dir.path().join(format!("head-{i}.json"));
        std::fs::write(&file, text).unwrap();
        run(db, &["audit", "verify", "--head", file.to_str().unwrap()])
    };
    for (i, text) in [head.to_string(), "null".to_owned()].iter().enumerate() {
        assert!(verify(i, text).ok().stdout.contains("intact"), "{text}");
    }
    for (i, counted) in [1, 2, rows - 1].into_iter().enumerate() {
        let text = serde_json::json!({"rows": counted, "last_id": last_id, "hash": hash}).to_string();
        let r = verify(10 + i, &text);
        assert_eq!(r.code, 3, "{text}: {}{}", r.stdout, r.stderr);
        let says = format!("the head counts {counted} rows up to row {last_id}, the log holds {rows}");
        assert!(r.stdout.contains(&says), "{text}: {}", r.stdout);
    }
    let refused: Vec<(String, &str)> = vec![
        (format!(r#"{{"rows":{rows},"last_id":{last_id},"hash":"{hash}","signed":true}}"#), "unknown field `signed`"),
        (format!(r#"{{"rows":{rows},"last_id":{last_id},"hash":"{hash}","rows":1}}"#), "duplicate field `rows`"),
        (r#"{"rows":0,"last_id":0,"hash":""}"#.to_owned(), "a head with 0 rows names no row"),
        (format!(r#"{{"rows":0,"last_id":{last_id},"hash":"{hash}"}}"#), "a head with 0 rows names no row"),
        (format!(r#"{{"rows":{rows},"last_id":0,"hash":"{hash}"}}"#), "its last_id 0 is not an id the log gives"),
        (format!(r#"{{"rows":{rows},"last_id":{last_id},"hash":""}}"#), "its hash \"\" is not 64 lower-case hex digits"),
        (format!(r#"{{"rows":{rows},"last_id":{last_id},"hash":"{}"}}"#, hash.to_uppercase()), "is not 64 lower-case hex digits"),
        (format!(r#"{{"rows":{rows},"last_id":{last_id},"hash":"{hash}0"}}"#), "is not 64 lower-case hex digits"),
    ];
    for (i, (text, says)) in refused.iter().enumerate() {
        let r = verify(20 + i, text);
        assert_error_line(&r, 1, says);
        assert!(r.stderr.contains(&format!("head-{}.json", 20 + i)), "{}", r.stderr);
        assert!(!r.stderr.contains("rewritten"), "{text}: {}", r.stderr);
    }
}
}

on_both! {
/// A signed report of a chain already broken when it was checked: `check-report` says the
/// report records a broken chain, which the log still shows (exit code 3), not that the log
/// changed since; once the log breaks further, it names the new finding. Checked at three
/// stages, each broken another way (a field edited, a row's hash rewritten, a row written
/// around the log), with appends in between.
fn check_report_tells_a_chain_broken_before_the_report_from_one_changed_since(t: EmptyDb) {
    let db = init(t);
    let append = |n: usize| {
        for i in 0..n {
            run(db, &["audit", "log", "--action", &format!("a{i}"), "--category", "user"]).ok();
        }
    };
    append(6);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    run(db, &["audit", "keygen", key.to_str().unwrap()]).ok();
    let public = format!("{}.pub", key.display());
    let sign = |name: &str| {
        let report = dir.path().join(name);
        let r = run(db, &["audit", "verify", "--report", report.to_str().unwrap(), "--sign", key.to_str().unwrap()]);
        assert_eq!(r.code, 3, "{name}: {}{}", r.stdout, r.stderr);
        report
    };
    let problem = |report: &Path| {
        let r = run(db, &["--json", "audit", "check-report", report.to_str().unwrap(), "--pubkey", &public]);
        assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
        assert_eq!((r.json()["signature"].as_bool(), r.json()["log_checked"].as_bool()), (Some(true), Some(true)));
        r.json()["problem"].as_str().unwrap().to_owned()
    };
    let unchanged = |report: &Path, findings: &str| {
        let p = problem(report);
        assert_eq!(p, format!("the report records a broken chain ({findings}), which the log still shows: nothing new since"));
    };
    let changed = |report: &Path, says: &str| {
        let p = problem(report);
        assert!(p.starts_with("the log no longer matches the report: ") && p.contains(says), "{p}");
    };
    let tampered = |sql: &str| tamper(t.backend(), t.location(), sql);
    tampered("UPDATE audit_logs SET action = 'rollback' WHERE id = 3");
    let first = sign("first.json");
    unchanged(&first, "1 finding");
    append(2);
    unchanged(&first, "1 finding");
    tampered("UPDATE audit_logs SET row_hash = 'ff' WHERE id = 5");
    changed(&first, "row 5 was edited");
    let second = sign("second.json");
    unchanged(&second, "2 findings");
    Driver::connect(t.backend(), t.location()).batch(
        "INSERT INTO audit_logs (id, timestamp, action, category) VALUES (100, '2026-01-01 00:00:00.000', 'forged', 'user')",
    );
    changed(&second, "row 100 has no hash");
    changed(&first, "row 5 was edited: its fields do not match its hash (and 1 more)");
    let third = sign("third.json");
    unchanged(&third, "3 findings");
    // The human form says the same.
    let r = run(db, &["audit", "check-report", third.to_str().unwrap(), "--pubkey", &public]);
    assert!(r.stdout.contains("which the log still shows"), "{}", r.stdout);
    assert!(!r.stdout.contains("no longer matches"), "{}", r.stdout);
}
}

on_both! {
/// A report of a log with more broken rows than a verification lists (1000): a row broken past
/// them, or the log cut short, since the report is a change (the findings about the whole log
/// are listed past the bound, and a count that grew says so), not "nothing new".
fn check_report_of_more_findings_than_listed_still_sees_a_change(t) {
    let db = Path::new(t.location());
    let log = AuditLog::new(t.db().clone());
    let batch: Vec<AuditEntry> =
        (0..100).map(|i| AuditEntry::new(format!("row {i}"), Category::User)).collect();
    for _ in 0..11 {
        log.log_batch(&batch).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    run(db, &["audit", "keygen", key.to_str().unwrap()]).ok();
    let public = format!("{}.pub", key.display());
    let problem = |report: &Path| {
        let r = run(db, &["--json", "audit", "check-report", report.to_str().unwrap(), "--pubkey", &public]);
        assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
        r.json()["problem"].as_str().unwrap().to_owned()
    };
    tamper(t.backend(), t.location(), "UPDATE audit_logs SET action = 'x' WHERE id <= 1005");
    for (n, (sql, says)) in [
        ("UPDATE audit_logs SET action = 'y' WHERE id = 1050", "1006 findings now, 1005 when it was checked"),
        ("DELETE FROM audit_logs WHERE id > 1090", "the log was truncated: 1090 rows"),
    ]
    .into_iter()
    .enumerate()
    {
        let report = dir.path().join(format!("report-{n}.json"));
        let r = run(db, &["audit", "verify", "--report", report.to_str().unwrap(), "--sign", key.to_str().unwrap()]);
        assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
        assert!(problem(&report).ends_with("which the log still shows: nothing new since"));
        tamper(t.backend(), t.location(), sql);
        let p = problem(&report);
        assert!(p.starts_with("the log no longer matches the report: ") && p.contains(says), "{sql}: {p}");
    }
}
}

on_both! {
fn an_exported_csv_piped_into_a_csv_reader_reads_back_every_row(t: EmptyDb) {
    let (dir, (db, _)) = (t.dir(), demo(t));
    let nasty = r#"{"note": "a, \"quoted\"\nline two ✓ 日本語", "formula": "=1+1"}"#;
    run(
        db,
        &[
            "audit",
            "log",
            "--action",
            "=cmd|' /C calc'!A0",
            "--category",
            "security",
            "--details",
            nasty,
        ],
    )
    .ok();
    let total = run(db, &["--json", "status"]).ok().json()["rows"]["audit_logs"].as_u64().unwrap();

    let out = cmd(db)
        .args(["audit", "export", "--format", "csv"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len() as u64, total);
    let last = records.last().unwrap();
    assert_eq!(&last[5], "'=cmd|' /C calc'!A0", "formula guard applied");
    let details: Value = serde_json::from_str(&last[7]).unwrap();
    assert_eq!(details["note"], "a, \"quoted\"\nline two ✓ 日本語");

    let file = dir.join("audit.jsonl");
    let r = run(
        db,
        &[
            "--json",
            "audit",
            "export",
            "--format",
            "jsonl",
            "--category",
            "security",
            "-o",
            file.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(r.json()["rows"], 1);
    let text = std::fs::read_to_string(&file).unwrap();
    let row: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(row["details"]["formula"], "=1+1");
    assert!(!dir.join("audit.jsonl.partial").exists());

    let r = run(db, &["audit", "export", "--format", "xml"]);
    assert_eq!(r.code, 2);
    let r = run(db, &["audit", "query", "--start", "last tuesday"]);
    assert_error_line(&r, 1, "last tuesday");
    let r = run(db, &["audit", "log", "--action", "x", "--category", "user", "--details", "{bad"]);
    assert_error_line(&r, 1, "--details is not JSON");
}
}

on_both! {
/// A number JSON would store rounded (an integer past 64 bits, a decimal with more digits than
/// a double holds) is refused in the audit's JSON flags, nothing written, and kept as text by
/// `config set`, where text that is not JSON is kept as text too.
fn json_numbers_are_stored_as_written_or_refused(t: EmptyDb) {
    let db = init(t);
    let rounded = ["123456789012345678901234567890", "-9223372036854775809", "3.14159265358979323846264"];
    for flag in ["--details", "--before", "--after"] {
        for n in rounded {
            for text in [format!(r#"{{"n":{n}}}"#), format!("[1,[{n}]]")] {
                let r = run(db, &["audit", "log", "--action", "x", "--category", "user", flag, &text]);
                assert_error_line(&r, 1, &format!("{flag} holds a number at character"));
                assert!(!r.stderr.contains(n.trim_start_matches('-')), "{}", r.stderr);
            }
        }
    }
    assert_eq!(run(db, &["--json", "audit", "query"]).ok().json().as_array().unwrap().len(), 0);
    let r = run(db, &["--json", "audit", "log", "--action", "x", "--category", "user", "--details", r#"{"n":18446744073709551615,"f":0.1}"#]);
    let id = r.ok().json()["id"].as_i64().unwrap();
    let row = &run(db, &["--json", "audit", "query"]).ok().json()[0];
    assert_eq!((row["id"].as_i64(), row["details"].to_string()), (Some(id), r#"{"n":18446744073709551615,"f":0.1}"#.to_owned()));
    for n in rounded.iter().chain(&["1e400"]) {
        run(db, &["config", "set", "big", n]).ok();
        assert_eq!(run(db, &["--json", "config", "get", "big"]).ok().json()["value"], Value::String(n.to_string()));
    }
    run(db, &["config", "set", "big", "18446744073709551615"]).ok();
    assert_eq!(run(db, &["--json", "config", "get", "big"]).ok().json()["value"], serde_json::json!(18446744073709551615u64));
    run(db, &["config", "set", "retries", "-1"]).ok();
    assert_eq!(run(db, &["--json", "config", "get", "retries"]).ok().json()["value"], serde_json::json!(-1));
}
}

on_both! {
/// The audit event from the shell: `audit log` with every event flag, the filters of `audit
/// query`, and `audit stats` over a window, in text and JSON.
fn audit_events_are_logged_filtered_and_counted_from_the_shell(t: EmptyDb) {
    let db = init(t);
    let log = |extra: &[&str]| {
        let mut args = vec!["--json", "audit", "log", "--action", "deploy", "--category"];
        args.extend(extra);
        run(db, &args).ok().json()["id"].as_i64().unwrap()
    };
    log(&[
        "git_operation", "--severity", "error", "--outcome", "failure", "--actor-type", "agent",
        "--actor-id", "builder", "--target-type", "repo", "--target-id", "main", "--session", "s1",
        "--workflow", "w1", "--correlation", "c1", "--before", r#"{"sha": "a1"}"#, "--after",
        r#"{"sha": "b2", "token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}"#, "--error",
        "push rejected",
    ]);
    log(&["git_operation", "--severity", "info", "--outcome", "success", "--actor-type", "agent", "--actor-id", "builder"]);
    log(&["user_action", "--severity", "warning", "--user", "alice"]);
    let ids = |filters: &[&str]| -> Vec<i64> {
        let mut args = vec!["--json", "audit", "query"];
        args.extend(filters);
        let rows = run(db, &args).ok().json();
        rows.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect()
    };
    assert_eq!(ids(&["--min-severity", "warning"]), [3, 1]);
    assert_eq!(ids(&["--outcome", "failure"]), [1]);
    assert_eq!(ids(&["--actor-id", "builder", "--category", "git_operation"]), [2, 1]);
    assert_eq!(ids(&["--target-type", "repo", "--target-id", "main"]), [1]);
    assert_eq!(ids(&["--session", "s1", "--workflow", "w1", "--correlation", "c1"]), [1]);
    assert_eq!(ids(&["--has-error"]), [1]);
    assert_eq!(ids(&["--has-changes"]), [1]);
    assert_eq!(ids(&["--action", "deploy", "--user", "alice"]), [3]);
    let row = &run(db, &["--json", "audit", "query", "--has-error"]).ok().json()[0];
    assert_eq!(row["changes_before"], r#"{"sha":"a1"}"#);
    assert!(row["changes_after"].as_str().unwrap().contains("[REDACTED]"), "{row}");
    assert_eq!((row["actor_type"].as_str(), row["hash_version"].as_i64()), (Some("agent"), Some(2)));

    let stats = run(db, &["--json", "audit", "stats", "--start", "2000-01-01"]).ok().json();
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["errors"], 1);
    assert_eq!(stats["by_category"][0], serde_json::json!({"key": "git_operation", "count": 2}));
    assert_eq!(stats["top_actors"][0], serde_json::json!({"type": "agent", "id": "builder", "count": 2}));
    assert_eq!(stats["top_actors"][1], serde_json::json!({"type": "user", "id": "alice", "count": 1}));
    let text = run(db, &["audit", "stats", "--category", "git_operation"]).ok().stdout;
    assert!(text.starts_with("2 entries, 1 with errors (50.0%)"), "{text}");
    assert!(text.contains("builder"), "{text}");

    let r = run(db, &["audit", "log", "--action", "x", "--category", "user", "--severity", "loud"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("debug, info, warning, error, critical"), "{}", r.stderr);
    let r = run(db, &["audit", "log", "--action", "x", "--category", "user", "--actor-type", "agent"]);
    assert_eq!(r.code, 2, "an actor needs its id: {}", r.stderr);
    let r = run(db, &["audit", "log", "--action", "x", "--category", "user", "--after", "{bad"]);
    assert_error_line(&r, 1, "--after is not JSON");
}
}

on_both! {
fn lessons_are_managed_and_searched_from_the_shell(t: EmptyDb) {
    let db = init(t);
    let add = |title: &str, tags: &str| {
        run(
            db,
            &[
                "--json",
                "lessons",
                "add",
                "--category",
                "pattern",
                "--title",
                title,
                "--summary",
                "use custom hooks for shared logic",
                "--tags",
                tags,
                "--confidence",
                "0.7",
            ],
        )
        .ok()
        .json()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let hooks = add("React hooks", "react,testing");
    let other = add("Other", "sql");
    let found = run(db, &["--json", "lessons", "search", "hook", "--tags", "react"]).ok().json();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["lesson"]["id"], hooks.as_str());
    for q in ["multi-agent", "don't", "c++", "\"", "AND"] {
        run(db, &["lessons", "search", q]).ok();
    }
    let updated =
        run(db, &["--json", "lessons", "update", &hooks, "--title", "Hooks, revised"]).ok().json();
    assert_eq!(updated["title"], "Hooks, revised");
    assert_eq!(
        run(db, &["--json", "lessons", "apply", &hooks]).ok().json()["application_count"],
        1
    );
    assert_eq!(
        run(db, &["--json", "lessons", "top", "--limit", "1"]).ok().json()[0]["id"],
        hooks.as_str()
    );
    assert!(run(db, &["lessons", "show", &hooks]).ok().stdout.contains("Hooks, revised"));
    run(db, &["lessons", "delete", &other]).ok();
    assert_error_line(&run(db, &["lessons", "delete", &other]), 1, "not found");
    assert_error_line(&run(db, &["lessons", "show", "nope"]), 1, "lesson nope not found");
    // FTS5 syntax is SQLite's: on PostgreSQL raw mode is refused as not available.
    let refused = match t.backend() {
        Backend::Sqlite => "bad search query",
        Backend::Postgres => "not available on PostgreSQL",
    };
    assert_error_line(&run(db, &["lessons", "search", "--raw", "\"open"]), 1, refused);
    let leading_star = match t.backend() {
        Backend::Sqlite => "a raw query cannot start with *",
        Backend::Postgres => refused,
    };
    for query in ["*", "*reads", "* open"] {
        assert_error_line(&run(db, &["lessons", "search", "--raw", query]), 1, leading_star);
    }
    let r = run(
        db,
        &[
            "lessons",
            "add",
            "--category",
            "pattern",
            "--title",
            "t",
            "--summary",
            "s",
            "--confidence",
            "2",
        ],
    );
    assert_error_line(&r, 1, "confidence");
    assert_eq!(
        run(db, &["lessons", "add", "--category", "idea", "--title", "t", "--summary", "s"]).code,
        2
    );
    let rebuilt = run(db, &["--json", "lessons", "rebuild"]).ok().json();
    assert_eq!(rebuilt["lessons"], 1);
}
}

on_both! {
fn traces_recover_lists_a_run_whose_owner_is_gone(t) {
    let db = Path::new(t.location());
    let tracker = ExecutionTracker::new(t.db().clone());
    let trace = tracker.start_trace(&"p".into(), &"t-1".into(), "work").unwrap();
    Driver::of(t).execute(
        "UPDATE execution_traces SET owner_pid = 2147483646 WHERE id = ?1",
        &[Raw::text(trace.id.as_str())],
    );
    let report = run(db, &["--json", "traces", "recover"]).ok().json();
    assert_eq!(report["crashed"][0]["trace"]["id"], trace.id.as_str());
    assert_eq!(report["crashed"][0]["trace"]["status"], "crashed");
    let human = run(db, &["traces", "recover"]).ok();
    assert!(human.stdout.contains(trace.id.as_str()), "{}", human.stdout);
    assert_error_line(&run(db, &["traces", "show", "nope"]), 1, "trace nope not found");
}
}

on_both! {
fn config_values_are_set_read_listed_and_unset(t: EmptyDb) {
    let db = init(t);
    run(db, &["config", "set", "max_retries", "3"]).ok();
    run(db, &["config", "set", "model", "opus", "--project", "p1"]).ok();
    assert_eq!(run(db, &["config", "get", "max_retries"]).ok().stdout.trim(), "3");
    assert_eq!(
        run(db, &["--json", "config", "get", "model", "--project", "p1"]).ok().json()["value"],
        "opus"
    );
    assert_eq!(
        run(db, &["--json", "config", "list", "--project", "p1"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    run(db, &["config", "set", "api_key", "sk-ant-api03-abcdefghijklmnopqrstuvwx"]).ok();
    assert_eq!(run(db, &["config", "get", "api_key"]).ok().stdout.trim(), "\"[REDACTED]\"");
    run(db, &["config", "unset", "model", "--project", "p1"]).ok();
    assert_error_line(
        &run(db, &["config", "get", "model", "--project", "p1"]),
        1,
        "no configuration value",
    );
    assert_error_line(&run(db, &["config", "unset", "model"]), 1, "no configuration value");
}
}

on_both! {
/// On PostgreSQL the backup is a SQLite file of one snapshot of the server's database.
fn a_backup_taken_while_another_process_writes_is_complete_and_consistent(t) {
    let (dir, db) = (t.dir(), Path::new(t.location()));
    let log = AuditLog::new(t.db().clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<AuditEntry> = (0..50)
                    .map(|i| AuditEntry::new(format!("write {i}"), Category::File))
                    .collect();
                log.log_batch(&batch).unwrap();
                n += 50;
            }
            n
        })
    };
    while log.head().unwrap().is_none_or(|h| h.rows < 500) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let dest = dir.join("backup").join("copy.db");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let r = run(db, &["--json", "db", "backup", dest.to_str().unwrap()]).ok();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(r.json()["pages"].as_u64().unwrap() > 0);
    let check = run(&dest, &["--json", "db", "check"]).ok().json();
    assert_eq!(check["ok"], true, "{check}");
    let rows = run(&dest, &["--json", "audit", "verify"]).ok().json()["rows"].as_u64().unwrap();
    assert!(rows >= 500 && rows <= written, "a snapshot: {rows} of {written}");
    assert_eq!(rows % 50, 0, "whole transactions only");
    assert_error_line(&run(db, &["db", "backup", dest.to_str().unwrap()]), 1, "already exists");
    let nowhere = dir.join("missing").join("copy.db");
    assert_error_line(&run(db, &["db", "backup", nowhere.to_str().unwrap()]), 1, "does not exist");
}
}

#[test]
fn bad_files_and_legacy_files_get_clear_answers_on_sqlite() {
    let (dir, db) = temp_db();
    std::fs::write(&db, b"this is not a database, just text that is long enough to fill a header")
        .unwrap();
    assert_error_line(&run(&db, &["status"]), 1, "is not a SQLite database");
    assert_error_line(&run(dir.path(), &["status"]), 1, "is a directory");
    let unwritable = dir.path().join("not-a-dir");
    std::fs::write(&unwritable, b"x").unwrap();
    let r = run(&unwritable.join("aigentflow.db"), &["init"]);
    assert_error_line(&r, 1, "cannot create the database folder");
    let legacy = dir.path().join("legacy.db");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/legacy-aigentflow.db");
    std::fs::copy(&fixture, &legacy).unwrap();
    let latest =
        run(&dir.path().join("fresh.db"), &["--json", "init"]).ok().json()["latest"].as_i64();
    let r = run(&legacy, &["--json", "db", "migrate"]).ok().json();
    assert_eq!((r["from"].as_i64(), r["to"].as_i64()), (Some(0), latest));
    let again = run(&legacy, &["db", "migrate"]).ok();
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);
    let check = run(&legacy, &["db", "check"]).ok();
    assert!(check.stdout.contains("✓ audit chain"), "{}", check.stdout);
    assert!(check.stdout.contains("✓ lessons index"), "{}", check.stdout);
}

/// Bytes no test can guess, the same on every run: a linear congruential generator from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// `db check` on a file damaged in any way (truncated at several sizes, its header zeroed,
/// random bytes over its pages, text that is no database) finds a problem: exit code 3, every
/// check saying why it could not run (or what it found), no error line, and the file left byte
/// for byte as it was, with nothing written beside it. A missing file is an error (exit 1), and
/// no database is created for the check; so is an empty file, which is no database yet (`init`
/// makes one of it), not a damaged one.
#[test]
fn db_check_on_a_damaged_file_finds_a_problem_and_writes_nothing_on_sqlite() {
    let (dir, db) = temp_db();
    run(&db, &["-q", "demo"]).ok();
    run(&db, &["-q", "demo"]).ok();
    let whole = std::fs::read(&db).unwrap();
    assert!(!side_exists(&db, "-wal"), "the demo left its -wal");
    let len = whole.len();
    let page = 4096;
    assert!(len > 8 * page, "{len} bytes");
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [50, 100, page, page + 1, 2 * page, len / 2, len * 3 / 4, len - page, len - 1] {
        damaged.push((format!("truncated at {cut} bytes"), whole[..cut].to_vec()));
    }
    for (what, from, to) in [
        ("magic zeroed", 0, 16),
        ("header zeroed", 0, 100),
        ("first page zeroed", 0, page),
        ("second page zeroed", page, 2 * page),
    ] {
        let mut bytes = whole.clone();
        bytes[from..to].fill(0);
        damaged.push((what.to_owned(), bytes));
    }
    // Over the start of a page: its b-tree header and cell pointers.
    let pages = len / page;
    for (i, at) in [1, 2, pages / 3, pages / 2, pages - 1].map(|p| p * page).into_iter().enumerate()
    {
        let mut bytes = whole.clone();
        let end = (at + 512).min(len);
        bytes[at..end].copy_from_slice(&noise(i as u64, end - at));
        damaged.push((format!("random bytes at {at}"), bytes));
    }
    damaged.push(("random bytes".to_owned(), noise(99, len)));
    damaged.push(("text".to_owned(), b"not a database, only text that is long enough".repeat(100)));
    for (what, bytes) in damaged {
        let case = tempfile::tempdir().unwrap();
        let path = case.path().join("t.db");
        std::fs::write(&path, &bytes).unwrap();
        let before = names_in(case.path());
        for json in [false, true] {
            let args: &[&str] = if json { &["--json", "db", "check"] } else { &["db", "check"] };
            let r = run(&path, args);
            assert_eq!(r.code, 3, "{what}: stdout: {}\nstderr: {}", r.stdout, r.stderr);
            assert_eq!(r.stderr, "", "{what}");
            if json {
                let report = r.json();
                assert_eq!(report["ok"], false, "{what}");
                assert_eq!(report["checks"].as_array().unwrap().len(), 5, "{what}: {report}");
            } else {
                assert!(r.stdout.contains('✗'), "{what}: {}", r.stdout);
            }
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: the file was written");
            // SQLite's shared-memory index and an empty -wal, which a read of a WAL database
            // makes, are all that may appear; nothing is written into the -wal.
            let made: Vec<String> =
                names_in(case.path()).into_iter().filter(|n| !before.contains(n)).collect();
            assert!(made.iter().all(|n| n == "t.db-wal" || n == "t.db-shm"), "{what}: {made:?}");
            let wal = case.path().join("t.db-wal");
            assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "{what}");
        }
    }
    let missing = dir.path().join("missing.db");
    assert_error_line(&run(&missing, &["db", "check"]), 1, "no database at");
    assert!(!missing.exists());
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert_error_line(&run(&empty, &["db", "check"]), 1, "is an empty file");
    assert_eq!(std::fs::read(&empty).unwrap(), b"");
}

fn side_exists(db: &Path, suffix: &str) -> bool {
    let mut p = db.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p).exists()
}

/// A SQLite varint at the start of `b`: its value and its length in bytes.
fn varint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(8) {
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    ((v << 8) | u64::from(b[8]), 9)
}

/// Byte offsets in a SQLite file of `page` (numbered from 1), of size `size`.
fn page_at(page: u64, size: usize) -> usize {
    usize::try_from(page - 1).unwrap() * size
}

/// The offset in the file of the first cell of b-tree page `page` (not page 1).
fn first_cell(file: &[u8], page: u64, size: usize) -> usize {
    let start = page_at(page, size);
    let header = if matches!(file[start], 0x02 | 0x05) { 12 } else { 8 };
    let ptr = u16::from_be_bytes([file[start + header], file[start + header + 1]]);
    start + usize::from(ptr)
}

/// `audit verify` finds the log's table or index damaged, however the pages are damaged in ways
/// a read of every row in order does not notice: the table's root page (a fragment count that
/// does not add up; a key that puts its rows out of order, so a lookup by id misses them), a
/// leaf page (a free-space list that points off the page), an index (an entry naming another
/// row, so the index no longer finds every row). Each is a finding that fails verification
/// (exit code 3) naming the damage; the file is not written.
#[test]
fn audit_verify_finds_a_damaged_table_or_index_of_the_log_on_sqlite() {
    use aigentflow_persistence::Database;
    let (dir, db) = temp_db();
    run(&db, &["init"]).ok();
    {
        let opened = Database::open(&db).unwrap();
        let log = AuditLog::new(opened.clone());
        for i in 0..600 {
            let entry = AuditEntry {
                project_id: Some(format!("project-{}", i % 7).into()),
                details: Some(serde_json::json!({"n": i, "text": "x".repeat(200)})),
                ..AuditEntry::new("appended", Category::User)
            };
            log.log(&entry).unwrap();
        }
        opened.close().unwrap();
    }
    assert_eq!(run(&db, &["--json", "audit", "verify"]).ok().json()["rows"], 600);
    let (size, roots) = {
        let mut driver = Driver::connect(Backend::Sqlite, db.to_str().unwrap());
        let size = driver.count("PRAGMA page_size", &[]);
        let roots = driver.query(
            "SELECT name, rootpage FROM sqlite_master WHERE tbl_name = 'audit_logs' AND rootpage > 0",
            &[],
        );
        (usize::try_from(size).unwrap(), roots)
    };
    let root_of = |name: &str| -> u64 {
        let row = roots.iter().find(|r| r[0].as_deref() == Some(name)).unwrap();
        row[1].as_deref().unwrap().parse().unwrap()
    };
    let pristine = std::fs::read(&db).unwrap();
    let table = root_of("audit_logs");
    let index = root_of("idx_audit_logs_project");
    let root = page_at(table, size);
    assert_eq!(pristine[root], 0x05, "the table's root is an interior page");
    // The leaf under the root's first cell.
    let child = {
        let cell = first_cell(&pristine, table, size);
        u64::from(u32::from_be_bytes(pristine[cell..cell + 4].try_into().unwrap()))
    };
    let leaf = page_at(child, size);
    assert_eq!(pristine[leaf], 0x0d, "a leaf of the table");
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("root page: fragment count", Box::new(move |f: &mut Vec<u8>| f[root + 7] = 0x3f)),
        (
            "root page: a key out of order",
            Box::new(move |f: &mut Vec<u8>| {
                let cell = first_cell(f, table, size) + 4;
                let (_, len) = varint(&f[cell..]);
                // The same length, value 0: every row under it is now above its key.
                f[cell..cell + len - 1].fill(0x80);
                f[cell + len - 1] = 0;
            }),
        ),
        (
            "leaf page: free list off the page",
            Box::new(move |f: &mut Vec<u8>| {
                let off = u16::try_from(size - 2).unwrap().to_be_bytes();
                f[leaf + 1..leaf + 3].copy_from_slice(&off);
            }),
        ),
        (
            "index: an entry naming another row",
            Box::new(move |f: &mut Vec<u8>| {
                let mut cell = first_cell(f, index, size);
                if f[page_at(index, size)] == 0x02 {
                    cell += 4;
                }
                let (payload, len) = varint(&f[cell..]);
                // The last byte of the key is the row's id.
                f[cell + len + usize::try_from(payload).unwrap() - 1] ^= 0x01;
            }),
        ),
    ];
    for (what, damage) in cases {
        let copy = dir.path().join("damaged.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", copy.display()));
        }
        let mut bytes = pristine.clone();
        damage(&mut bytes);
        assert_ne!(bytes, pristine, "{what}");
        std::fs::write(&copy, &bytes).unwrap();
        let r = run(&copy, &["audit", "verify"]);
        assert_eq!(r.code, 3, "{what}: stdout: {}\nstderr: {}", r.stdout, r.stderr);
        let said = "the log's table or an index of it is damaged (SQLite's integrity check";
        assert!(r.stdout.contains(said), "{what}: {}", r.stdout);
        let json = run(&copy, &["--json", "audit", "verify"]);
        assert_eq!(json.code, 3, "{what}: {}", json.stderr);
        assert_eq!(json.json()["finding"]["kind"], "damaged", "{what}: {}", json.stdout);
        assert_eq!(std::fs::read(&copy).unwrap(), bytes, "{what}: verify wrote the file");
    }
}

/// Another writer holding the lock an append takes: SQLite's write lock, or (PostgreSQL) the
/// audit log's head row, which every append locks. Released by [`Driver::batch`]`("COMMIT")`.
fn hold_the_append_lock(backend: Backend, location: &str) -> Driver {
    let mut holder = Driver::connect(backend, location);
    holder.batch(match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN; SELECT * FROM audit_head FOR UPDATE",
    });
    holder
}

on_both! {
fn a_write_that_waits_on_another_writer_succeeds_and_is_logged_as_slow(t: EmptyDb) {
    let db = init(t);
    let mut conn = hold_the_append_lock(t.backend(), t.location());
    let child = cmd(db)
        .args(["-v", "audit", "log", "--action", "waited", "--category", "user"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    conn.batch("COMMIT");
    let r = output(child.wait_with_output().unwrap()).ok();
    assert_eq!(r.stdout.trim(), "1");
    assert!(r.stderr.contains("slow transaction"), "{}", r.stderr);
    // Without -v a slow transaction is not reported: an error stays one line.
    let mut conn = hold_the_append_lock(t.backend(), t.location());
    let child = cmd(db)
        .args(["audit", "log", "--action", "waited", "--category", "user"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    conn.batch("COMMIT");
    assert_eq!(output(child.wait_with_output().unwrap()).ok().stderr, "");
    assert!(run(db, &["-q", "audit", "log", "--action", "quick", "--category", "user"])
        .ok()
        .stderr
        .is_empty());
}
}

on_both! {
fn db_copy_copies_a_database_into_a_new_file_and_refuses_one_with_rows(t: EmptyDb) {
    let (dir, (src, _)) = (t.dir(), demo(t));
    let dest = dir.join("copy.db");
    let r =
        run(src, &["--json", "db", "copy", src.to_str().unwrap(), dest.to_str().unwrap()]).ok();
    let report = r.json();
    assert_eq!(report["audit_chain_ok"], true, "{report}");
    let rows = report["rows"].as_u64().unwrap();
    assert!(rows > 10, "{report}");
    // The copy holds what the source holds, table by table.
    let counts = |db: &Path| run(db, &["--json", "status"]).ok().json()["rows"].clone();
    assert_eq!(counts(&dest), counts(src));
    run(&dest, &["audit", "verify"]).ok();
    // Again into the same destination: refused, naming the table, and the copy is unchanged.
    let before = std::fs::read(&dest).unwrap();
    let again = run(src, &["db", "copy", src.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_error_line(&again, 1, "is not empty");
    assert!(again.stderr.contains("workflow_states"), "{}", again.stderr);
    assert_eq!(std::fs::read(&dest).unwrap(), before);
    // A source that is not there is not created.
    let missing = dir.join("missing.db");
    let r =
        run(src, &["db", "copy", missing.to_str().unwrap(), dir.join("x.db").to_str().unwrap()]);
    assert_error_line(&r, 1, "no database at");
    assert!(!missing.exists());
}
}

#[test]
fn a_database_is_named_by_path_or_sqlite_url_and_another_backends_url_is_refused() {
    // `sqlite:PATH` and `sqlite://PATH` are the file at PATH, through --db, $AIGENTFLOW_DB and
    // db copy's locations alike; a URL of a backend this build lacks is one line naming its
    // scheme, and nothing is created (no folder named `mysql:`).
    let (dir, path) = init_db();
    let id = |r: &Run| r.json()["schema_version"].clone();
    let plain = run(&path, &["--json", "status"]).ok();
    for spelled in [format!("sqlite:{}", path.display()), format!("sqlite://{}", path.display())] {
        let by_flag = run(Path::new(&spelled), &["--json", "status"]).ok();
        assert_eq!(id(&by_flag), id(&plain), "{spelled}");
        assert_eq!(by_flag.json()["path"], plain.json()["path"], "{spelled}");
        let by_env = output(
            Command::new(env!("CARGO_BIN_EXE_aigentflow"))
                .args(["--json", "status"])
                .env("AIGENTFLOW_DB", &spelled)
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
        .ok();
        assert_eq!(by_env.json()["path"], plain.json()["path"], "{spelled}");
    }
    let copy = dir.path().join("copy.db");
    run(
        &path,
        &[
            "db",
            "copy",
            &format!("sqlite:{}", path.display()),
            &format!("sqlite://{}", copy.display()),
        ],
    )
    .ok();
    assert!(copy.is_file());
    for url in ["mysql://u@h/db", "http://h/x.db", "file:///tmp/x.db", "postgre://h/db"] {
        let scheme = url.split_once(':').unwrap().0;
        let inside = tempfile::tempdir().unwrap();
        for args in [vec!["status"], vec!["init"], vec!["demo"]] {
            let r = output(
                cmd(Path::new(url)).args(&args).current_dir(inside.path()).output().unwrap(),
            );
            assert_error_line(&r, 1, &format!("{scheme}://"));
            assert!(r.stderr.contains("--db"), "{}", r.stderr);
        }
        let r = output(
            cmd(&path)
                .args(["db", "copy", url, "out.db"])
                .current_dir(inside.path())
                .output()
                .unwrap(),
        );
        assert_error_line(&r, 1, &format!("{scheme}://"));
        assert_eq!(std::fs::read_dir(inside.path()).unwrap().count(), 0, "{url}: nothing created");
    }
}

on_both! {
/// `status` lists every migration set the database records, the core first, then each
/// program's own by name, whether or not this program knows them; `--json` gives the same.
fn status_lists_every_migration_set_and_its_version(t: EmptyDb) {
    use aigentflow_persistence::{AppMigration, Database, MigrationSet};
    let step = |set: &str, v: u32| {
        AppMigration::owned(
            v,
            format!("step {v}"),
            format!("CREATE TABLE {set}_{v} (x INTEGER)"),
            format!("CREATE TABLE {set}_{v} (x BIGINT)"),
        )
    };
    let set = |name: &str, latest: u32| {
        MigrationSet::new(name, (1..=latest).map(|v| step(name, v))).unwrap()
    };
    let status = run(init(t), &["--json", "status"]).ok().json();
    let core = status["migration"].as_i64().unwrap();
    assert_eq!(status["migration_sets"], serde_json::json!([{ "name": "core", "version": core }]));
    Database::builder(t.location())
        .migrations(set("orchestrator", 2))
        .unwrap()
        .migrations(set("billing", 1))
        .unwrap()
        .open()
        .unwrap();
    let status = run(at(t), &["--json", "status"]).ok().json();
    assert_eq!(
        status["migration_sets"],
        serde_json::json!([
            { "name": "core", "version": core },
            { "name": "billing", "version": 1 },
            { "name": "orchestrator", "version": 2 },
        ])
    );
    let text = run(at(t), &["status"]).ok().stdout;
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("MIGRATION SET"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let core = core.to_string();
    assert_eq!(rows, [vec!["core", core.as_str()], vec!["billing", "1"], vec!["orchestrator", "2"]], "{text}");
}
}

on_both! {
/// `workflow check` names each problem with its file and place (exit 3); `workflow load` loads a
/// folder once (again: unchanged) and refuses a changed definition without a new version;
/// `list` and `show` read them back, `show --format mermaid|dot` draws every edge of the graph
/// (counted back), `--format yaml` gives the definition back; `tasks show --format mermaid`
/// draws the path a task took.
fn workflow_files_are_checked_loaded_listed_and_shown_from_the_shell(t: EmptyDb) {
    use aigentflow_core_states::{Format, WorkflowDefinition};
    use aigentflow_workflows::render;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    let default_file = repo.join("aigentflow-default.yaml");
    let dir = tempfile::tempdir().unwrap();
    let good = default_file.to_str().unwrap();
    let bad = [
        ("unknown.yaml", "name: w\nversion: 1\nrules: []\ncolour: red\n", "line 4"),
        ("lower.yaml", "name: w\nversion: 1\nrules:\n  - from: [A]\n    event: go\n    to: B\n", "line 4"),
        ("closed.json", "{\"name\": \"w\", \"version\": 1, \"closed\": [\"A\"],\n \"rules\": [{\"from\": [\"A\"], \"event\": \"GO\", \"to\": \"B\"}]}", "rule 0 (GO) starts from closed state A"),
    ];
    let mut args = vec!["workflow".to_owned(), "check".to_owned(), good.to_owned()];
    for (name, text, _) in &bad {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        args.push(path.to_str().unwrap().to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(at(t), &args);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(lines[0].starts_with("ok") && lines[0].contains("aigentflow-default@1"), "{}", r.stdout);
    for (line, (name, _, place)) in lines[1..].iter().zip(&bad) {
        assert!(line.starts_with("problem") && line.contains(name) && line.contains(place), "{line}");
    }
    assert!(nothing_at(t), "check needs no database");
    // Load, load again, list.
    init(t);
    let loaded = run(at(t), &["--json", "workflow", "load", repo.to_str().unwrap()]).ok().json();
    assert_eq!(loaded[0]["loaded"], "new");
    let again = run(at(t), &["--json", "workflow", "load", repo.to_str().unwrap()]).ok().json();
    assert_eq!(again[0]["loaded"], "unchanged");
    let list = run(at(t), &["--json", "workflow", "list"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["content_hash"].as_str().unwrap().len(), 64);
    // A changed definition without a new version.
    let changed = dir.path().join("changed");
    std::fs::create_dir(&changed).unwrap();
    let text = std::fs::read_to_string(&default_file).unwrap();
    std::fs::write(changed.join("d.yaml"), text.replace("to: ORCHESTRATING\n", "to: PLANNING\n")).unwrap();
    let r = run(at(t), &["workflow", "load", changed.to_str().unwrap()]);
    assert_error_line(&r, 1, "aigentflow-default@1 is already loaded with other content");
    assert_eq!(run(at(t), &["--json", "workflow", "list"]).ok().json(), list);
    // Pictures, counted back.
    let default = WorkflowDefinition::default_workflow();
    let edges = render::expected_edges(default);
    let mermaid = run(at(t), &["workflow", "show", "aigentflow-default", "--format", "mermaid"]).ok().stdout;
    assert!(mermaid.contains("flowchart LR"), "{mermaid}");
    assert_eq!(mermaid.lines().filter(|l| l.contains(" -->|")).count(), edges, "{mermaid}");
    let dot = run(at(t), &["workflow", "show", "aigentflow-default@1", "--format", "dot"]).ok().stdout;
    assert_eq!(dot.lines().filter(|l| l.contains(" -> ")).count(), edges, "{dot}");
    let yaml = run(at(t), &["workflow", "show", "aigentflow-default", "--format", "yaml"]).ok().stdout;
    assert_eq!(&WorkflowDefinition::parse(&yaml, Format::Yaml).unwrap(), default);
    let shown = run(at(t), &["--json", "workflow", "show", "aigentflow-default"]).ok().json();
    assert_eq!(shown["rules"].as_array().unwrap().len(), default.table.rules().len());
    for spec in ["nope", "aigentflow-default@2"] {
        assert_error_line(&run(at(t), &["workflow", "show", spec]), 1, "is loaded; load it with");
    }
    assert_error_line(&run(at(t), &["workflow", "show", " "]), 1, "it is empty");
    for spec in ["@1", "x@0", "x@y"] {
        assert_error_line(&run(at(t), &["workflow", "show", spec]), 1, "is not NAME or NAME@VERSION");
    }
    // The path a task took.
    let (_, report) = demo(t);
    let task = report["task"].as_str().unwrap();
    let path = run(at(t), &["tasks", "show", task, "--format", "mermaid"]).ok().stdout;
    assert!(path.matches("linkStyle").count() >= 5, "{path}");
    assert!(path.lines().filter(|l| l.contains("-->|") || l.contains("-.->|")).count() >= edges, "{path}");
    assert!(path.contains(" x1\"|"), "{path}");
    let text = run(at(t), &["tasks", "show", task]).ok().stdout;
    assert!(text.contains("workflow aigentflow-default@1"), "{text}");
}
}

on_both! {
/// `db copy` of a database that holds application migration sets is refused in one line naming
/// them, before anything is made where the copy would go.
fn db_copy_refuses_a_source_holding_sets_and_makes_no_destination(t: EmptyDb) {
    use aigentflow_persistence::{AppMigration, Database, MigrationSet};
    let set = MigrationSet::new("billing", [AppMigration::new(1, "t", "CREATE TABLE billing_t (x INTEGER)")]).unwrap();
    Database::builder(t.location()).migrations(set).unwrap().open().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy.db");
    let r = output(cmd(at(t)).args(["db", "copy", t.location(), dest.to_str().unwrap()]).output().unwrap());
    assert_error_line(&r, 1, "billing at version 1");
    assert!(!dest.exists(), "nothing made at {}", dest.display());
}
}

on_both! {
/// `audit keygen` makes a key pair (new files, the secret one readable by its owner only);
/// `audit verify --report FILE --sign KEYFILE` writes a signed report that `audit check-report`
/// accepts; any edit of the report, another key or no signature is refused with exit code 3; and
/// a log replaced whole by another valid chain (which `audit verify` alone cannot tell) no
/// longer matches the signed head.
fn a_signed_verification_report_checks_and_catches_an_edit_or_a_rewritten_log(t: EmptyDb) {
    use std::os::unix::fs::PermissionsExt;
    let (db, _) = demo(t);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    let public = dir.path().join("audit.key.pub");
    run(db, &["audit", "keygen", key.to_str().unwrap()]).ok();
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_error_line(&run(db, &["audit", "keygen", key.to_str().unwrap()]), 1, "already exists");
    let report = dir.path().join("report.json");
    let r = run(db, &["audit", "verify", "--report", report.to_str().unwrap(), "--sign", key.to_str().unwrap()]).ok();
    assert!(r.stdout.contains("intact"), "{}", r.stdout);
    let check = |file: &Path, db: &Path| run(db, &["--json", "audit", "check-report", file.to_str().unwrap(), "--pubkey", public.to_str().unwrap()]);
    let good = check(&report, db).ok().json();
    assert_eq!((good["signature"].as_bool(), good["log_checked"].as_bool()), (Some(true), Some(true)));
    // The log goes on: it still reaches the signed head.
    run(db, &["audit", "log", "--action", "later", "--category", "user"]).ok();
    check(&report, db).ok();
    // Every edit of the report is refused.
    let text = std::fs::read_to_string(&report).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let edits: Vec<fn(&mut Value)> = vec![
        |v| v["rows_checked"] = 1.into(),
        |v| v["ok"] = false.into(),
        |v| v["head"]["hash"] = "0".repeat(64).into(),
        |v| v["head"]["last_id"] = 1.into(),
        |v| v["database"] = "elsewhere".into(),
        |v| v["checked_at"] = "2020-01-01T00:00:00.000Z".into(),
        |v| v["findings"] = serde_json::json!([{"kind": "edited", "id": 1}]),
        |v| {
            v.as_object_mut().unwrap().remove("signature");
        },
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut edited = value.clone();
        edit(&mut edited);
        let file = dir.path().join(format!("edited-{i}.json"));
        std::fs::write(&file, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
        let r = check(&file, db);
        assert_eq!(r.code, 3, "edit {i}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(r.json()["signature"], false, "edit {i}");
    }
    // Another key's public half does not check it.
    let other = dir.path().join("other.key");
    run(db, &["audit", "keygen", other.to_str().unwrap()]).ok();
    let r = run(db, &["audit", "check-report", report.to_str().unwrap(), "--pubkey", &format!("{}.pub", other.display())]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    // A log replaced whole by another valid chain: verify alone passes, the report does not.
    let elsewhere = match t.backend() { Backend::Sqlite => EmptyDb::sqlite(), Backend::Postgres => EmptyDb::postgres().unwrap() };
    let (replaced, _) = demo(&elsewhere);
    run(replaced, &["audit", "verify"]).ok();
    let r = check(&report, replaced);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.json()["problem"].as_str().unwrap().contains("row"), "{}", r.stdout);
    // Bad inputs are one line each, and write nothing.
    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let second = dir.path().join("second.json");
    let r = run(db, &["audit", "verify", "--report", second.to_str().unwrap(), "--sign", dir.path().join("bad.key").to_str().unwrap()]);
    assert_error_line(&r, 1, "not an Ed25519 secret key");
    assert!(!second.exists());
    assert_error_line(&run(db, &["audit", "verify", "--report", report.to_str().unwrap()]), 1, "already exists");
    // A file that is no report, or a report whose form an edit broke, fails the check.
    for text in ["{}".to_owned(), format!("\u{feff}{text}"), text.replacen("\"rows_checked\": ", "\"rows_checked\": 1, \"rows_checked\": ", 1), format!("{text} trailing")] {
        std::fs::write(&second, &text).unwrap();
        let r = check(&second, db);
        assert_eq!(r.code, 3, "{text}: {}\n{}", r.stdout, r.stderr);
    }
    // A key file made where the database keeps its own files is refused.
    if let Some(path) = t.path() {
        let wal = format!("{}-wal", path.display());
        let _ = std::fs::remove_file(&wal);
        let r = run(db, &["audit", "keygen", &wal]);
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert!(!Path::new(&wal).exists() || std::fs::read(&wal).unwrap().is_empty() || !String::from_utf8_lossy(&std::fs::read(&wal).unwrap()).contains("aigentflow-ed25519"));
    }
}
}

/// A signing key that other users can read (and so sign a report of a rewritten log, or a
/// bundle, with) or change is refused for every group and other permission bit, alone and
/// together, in one line naming the fix; no report or bundle is written. The owner's own bits are the owner's business.
#[test]
fn a_signing_key_other_users_can_read_or_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = EmptyDb::sqlite();
    let db = at(&t);
    run(db, &["init"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    run(db, &["audit", "keygen", key.to_str().unwrap()]).ok();
    let report = dir.path().join("report.json");
    let sign = |mode: u32| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let _ = std::fs::remove_file(&report);
        run(
            db,
            &[
                "audit",
                "verify",
                "--report",
                report.to_str().unwrap(),
                "--sign",
                key.to_str().unwrap(),
            ],
        )
    };
    let bundle = dir.path().join("bundle.jsonl");
    let sign_bundle = |mode: u32| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let (out, key) = (bundle.to_str().unwrap(), key.to_str().unwrap());
        run(db, &["tasks", "export", "any-task", "-o", out, "--sign", key])
    };
    let exposed = [0o040, 0o004, 0o020, 0o002, 0o010, 0o001, 0o044, 0o066, 0o077];
    for bits in exposed {
        for owner in [0o600, 0o400] {
            let mode = owner | bits;
            for (r, written) in [(sign(mode), &report), (sign_bundle(mode), &bundle)] {
                assert_error_line(&r, 1, "chmod 600");
                assert!(r.stderr.contains(&format!("{mode:04o}")), "{mode:o}: {}", r.stderr);
                assert!(!written.exists(), "{mode:o}: {} was written", written.display());
            }
        }
    }
    for mode in [0o600, 0o400, 0o700] {
        let r = sign(mode).ok();
        assert!(r.stdout.contains("intact"), "{mode:o}: {}", r.stdout);
        assert!(report.exists(), "{mode:o}");
    }
}

on_both! {
/// `tasks export` writes the demo's task as a bundle file (a new one, as `audit export`
/// does) and `tasks import` loads it into another database of the same backend:
/// `audit verify` passes on both sides, `tasks show` prints the same task, a second import says
/// "already present" and changes nothing, and a damaged bundle is one error line naming its
/// line, exit code 1, nothing written.
fn tasks_export_and_import_share_an_execution(t: EmptyDb) {
    let (src, report) = demo(t);
    let task = report["task"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("task.jsonl");
    let file_arg = file.to_str().unwrap();
    let exported = run(src, &["--json", "tasks", "export", task, "-o", file_arg]).ok().json();
    assert_eq!(exported["tasks"], serde_json::json!([task]));
    let bundle = std::fs::read_to_string(&file).unwrap();
    assert!(bundle.starts_with("{\"format\":\"aigentflow-bundle\""), "{bundle}");
    // stdout too, byte for byte but the header's time.
    let piped = run(src, &["tasks", "export", task, "-o", "-"]).ok().stdout;
    assert_eq!(piped.lines().skip(1).collect::<Vec<_>>(), bundle.lines().skip(1).collect::<Vec<_>>());

    let other = match t.backend() {
        Backend::Sqlite => EmptyDb::sqlite(),
        Backend::Postgres => EmptyDb::postgres().unwrap(),
    };
    let dst = init(&other);
    let imported = run(dst, &["--json", "tasks", "import", file_arg]).ok().json();
    assert_eq!(imported["tasks"][0]["outcome"], "imported", "{imported}");
    assert!(imported["audit_appended"].as_u64().unwrap() > 0, "{imported}");
    for db in [src, dst] {
        run(db, &["audit", "verify"]).ok();
    }
    let shown = |db: &Path| run(db, &["--json", "tasks", "show", task]).ok().json();
    assert_eq!(shown(src), shown(dst));
    let again = run(dst, &["tasks", "import", file_arg]).ok();
    assert!(again.stdout.contains(&format!("task {task} already present")), "{}", again.stdout);
    assert!(again.stdout.contains("0 appended"), "{}", again.stdout);

    let damaged = dir.path().join("damaged.jsonl");
    let mut lines: Vec<&str> = bundle.lines().collect();
    lines.remove(2);
    std::fs::write(&damaged, lines.join("\n") + "\n").unwrap();
    let third = match t.backend() {
        Backend::Sqlite => EmptyDb::sqlite(),
        Backend::Postgres => EmptyDb::postgres().unwrap(),
    };
    let third_db = init(&third);
    let r = run(third_db, &["tasks", "import", damaged.to_str().unwrap()]);
    assert_error_line(&r, 1, "bundle line");
    let listed = run(third_db, &["--json", "tasks", "list"]).ok().json();
    assert_eq!(listed, serde_json::json!([]), "nothing written");

    // Signed: `--pubkey` takes the signer's bundle only. An unsigned one, one signed by
    // another key and one changed since it was signed are each one error line, nothing written.
    let key = dir.path().join("export.key");
    let stranger = dir.path().join("stranger.key");
    for k in [&key, &stranger] {
        run(src, &["audit", "keygen", k.to_str().unwrap()]).ok();
    }
    let signed = dir.path().join("signed.jsonl");
    let (signed_arg, key_arg) = (signed.to_str().unwrap(), key.to_str().unwrap());
    let r = run(src, &["--json", "tasks", "export", task, "-o", signed_arg, "--sign", key_arg]);
    assert_eq!(r.ok().json()["signed"], true);
    let changed = dir.path().join("changed.jsonl");
    let text = std::fs::read_to_string(&signed).unwrap();
    std::fs::write(&changed, text.replacen("\"kind\":\"task\"", "\"kind\": \"task\"", 1)).unwrap();
    let public = |k: &Path| format!("{}.pub", k.display());
    for (bundle_file, trusted, problem) in [
        (&file, public(&key), "not signed"),
        (&signed, public(&stranger), "signed by another key"),
        (&changed, public(&key), "changed after it was signed"),
    ] {
        let r = run(third_db, &["tasks", "import", bundle_file.to_str().unwrap(), "--pubkey", &trusted]);
        assert_error_line(&r, 1, problem);
        let listed = run(third_db, &["--json", "tasks", "list"]).ok().json();
        assert_eq!(listed, serde_json::json!([]), "{problem}: nothing written");
    }
    let r = run(third_db, &["tasks", "import", signed_arg, "--pubkey", &public(&key)]).ok();
    assert!(r.stdout.contains(&format!("imported task {task}")), "{}", r.stdout);
    assert!(r.stdout.contains("signed by the key given"), "{}", r.stdout);
    run(third_db, &["audit", "verify"]).ok();
}
}

on_both! {
fn traces_cost_prints_spend_per_day_and_against_the_project_budget(t) {
    use aigentflow_tracker::{LlmCall, Money, NewSpan, SpanKind};
    let db = Path::new(t.location());
    let tracker = ExecutionTracker::new(t.db().clone());
    let trace = tracker.start_trace(&"p1".into(), &"t-1".into(), "work").unwrap();
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap().and_hms_opt(9, 0, 0).unwrap().and_utc();
    for (d, model, amount) in [(1, "m-a", "0.1"), (1, "m-a", "0.2"), (2, "m-b", "1.25"), (40, "m-a", "9")] {
        let started_at = Some(day(1) + chrono::TimeDelta::days(i64::from(d) - 1));
        let span = tracker.start_span(&NewSpan { started_at, ..NewSpan::new(trace.id.clone(), SpanKind::Llm, "c") }).unwrap();
        let call = LlmCall {
            model: model.into(),
            provider: "prov".into(),
            input_tokens: 10,
            output_tokens: 5,
            cost: Some(Money::parse(amount, "USD").unwrap()),
            latency_ms: None,
        };
        tracker.record_llm(&span.id, &call).unwrap();
    }
    run(db, &["config", "set", "budget.monthly", r#"{"amount": "1.50", "currency": "USD"}"#, "--project", "p1"]).ok();
    let out = run(db, &["--json", "traces", "cost", "--project", "p1", "--month", "2026-11"]).ok().json();
    let rows: Vec<(String, String, String)> = out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["day"].as_str().unwrap().into(), r["key"].as_str().unwrap().into(), r["cost"]["amount"].as_str().unwrap().into()))
        .collect();
    let want = [("2026-11-01", "m-a", "0.30"), ("2026-11-02", "m-b", "1.25")];
    assert_eq!(rows, want.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())));
    assert_eq!(out["budget"]["spent"][0]["amount"], "1.55");
    assert_eq!(out["budget"]["over_budget"], true);
    let human = run(db, &["traces", "cost", "--by", "provider", "--since", "2026-11-02", "--until", "2026-12-31"]).ok();
    assert!(human.stdout.contains("prov") && !human.stdout.contains("0.30 USD"), "{}", human.stdout);
    assert!(human.stdout.contains("1.25 USD") && human.stdout.contains("9.00 USD"), "{}", human.stdout);
    let human = run(db, &["traces", "cost", "--project", "p1", "--month", "2026-11"]).ok();
    assert!(human.stdout.contains("budget 1.50 USD: over budget"), "{}", human.stdout);
    assert_eq!(run(db, &["traces", "cost", "--by", "colour"]).code, 2);
    assert_eq!(run(db, &["traces", "cost", "--month", "2026-13"]).code, 2);
    assert_eq!(run(db, &["traces", "cost", "--month", "2026-11", "--since", "2026-11-01"]).code, 2);
}
}

on_both! {
/// A trigger planted on the schema's tables to drop rows as they are written (`RAISE(IGNORE)`
/// on SQLite, a BEFORE trigger returning NULL on PostgreSQL) loses no entry silently: every
/// append it drops fails naming what happened, alone or in a batch, and the entries it lets
/// through are stored. `db check` names every trigger of the schema dropped, changed or
/// disabled, and every trigger added to its tables, one at a time, and exits 3; with each
/// put back it is clean again. On PostgreSQL a trigger is also changed when the function it
/// calls is replaced or given another setting, or when it is made anew to fire on another
/// event or never.
fn a_trigger_that_is_not_the_schemas_is_named_and_drops_no_entry_silently(t) {
    let db = Path::new(t.location());
    run(db, &["demo"]).ok();
    let check = |needle: &str| {
        let r = run(db, &["db", "check"]);
        assert_eq!(r.code, 3, "{needle}: {}{}", r.stdout, r.stderr);
        let line = r.stdout.lines().find(|l| l.contains("schema")).unwrap_or_default();
        assert!(line.contains(needle), "{needle}: {}", r.stdout);
    };
    let clean = || {
        let r = run(db, &["--json", "db", "check"]).ok().json();
        assert_eq!(r["ok"], true, "{r}");
    };
    clean();
    let mut raw = Driver::of(t);
    let sqlite = t.backend() == Backend::Sqlite;
    // Planted: entries of category security never reach the table.
    if sqlite {
        raw.batch(
            "CREATE TRIGGER zz_hide BEFORE INSERT ON audit_logs WHEN NEW.category = 'security'
             BEGIN SELECT RAISE(IGNORE); END",
        );
    } else {
        raw.batch(
            "CREATE FUNCTION zz_hide() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN IF NEW.category = 'security' THEN RETURN NULL; END IF; RETURN NEW; END $$;
             CREATE TRIGGER zz_hide BEFORE INSERT ON audit_logs FOR EACH ROW
                 EXECUTE FUNCTION zz_hide()",
        );
    }
    let rows = || run(db, &["--json", "audit", "verify"]).ok().json()["rows"].as_u64().unwrap();
    let before = rows();
    let dropped = run(db, &["audit", "log", "--action", "login_failed", "--category", "security"]);
    assert_eq!(dropped.code, 1, "{}{}", dropped.stdout, dropped.stderr);
    assert!(dropped.stderr.contains("drops rows silently"), "{}", dropped.stderr);
    let log = AuditLog::new(t.db().clone());
    for batch in [1, 2, 150] {
        let entries: Vec<AuditEntry> = (0..batch)
            .map(|i| {
                let category = if i == batch / 2 { Category::Security } else { Category::User };
                AuditEntry::new(format!("batch {batch} entry {i}"), category)
            })
            .collect();
        let e = log.log_batch(&entries).unwrap_err().to_string();
        assert!(e.contains("drops rows silently"), "batch of {batch}: {e}");
    }
    assert_eq!(rows(), before, "a batch with a dropped entry stores none of it");
    run(db, &["audit", "log", "--action", "ok", "--category", "user"]).ok();
    assert_eq!(rows(), before + 1);
    check("trigger zz_hide on audit_logs is not the schema's");
    raw.batch(if sqlite {
        "DROP TRIGGER zz_hide"
    } else {
        "DROP TRIGGER zz_hide ON audit_logs; DROP FUNCTION zz_hide()"
    });
    clean();
    // Each of the schema's triggers, dropped (and on PostgreSQL also disabled), then put back.
    let triggers = if sqlite {
        raw.query("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'", &[])
    } else {
        raw.query(
            "SELECT t.tgname::text, c.relname::text, pg_get_triggerdef(t.oid)
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE NOT t.tgisinternal AND c.relnamespace = quote_ident(current_schema())::regnamespace",
            &[],
        )
    };
    assert!(triggers.len() >= 10, "{triggers:?}");
    for trigger in &triggers {
        let [Some(name), Some(table), Some(sql)] = &trigger[..] else { panic!("{trigger:?}") };
        if sqlite {
            raw.batch(&format!("DROP TRIGGER {name}"));
            check(&format!("trigger {name} on {table} is missing"));
            // The same name, its body changed (`SELECT 1;` before its END).
            let end = sql.rfind("END").unwrap();
            raw.batch(&format!("{}SELECT 1; {}", &sql[..end], &sql[end..]));
            check(&format!("trigger {name} on {table} was changed"));
            raw.batch(&format!("DROP TRIGGER {name}"));
        } else {
            raw.batch(&format!("ALTER TABLE {table} DISABLE TRIGGER {name}"));
            check(&format!("trigger {name} on {table} is disabled"));
            raw.batch(&format!("ALTER TABLE {table} ENABLE REPLICA TRIGGER {name}"));
            check(&format!("trigger {name} on {table} fires only in replica sessions"));
            raw.batch(&format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}"));
            check(&format!("trigger {name} on {table} was changed"));
            raw.batch(&format!("ALTER TABLE {table} ENABLE TRIGGER {name}"));
            // The function it calls, replaced by one that lets every change through, then
            // given a setting, each under the same name.
            let function = raw.query(
                "SELECT p.proname::text, pg_get_functiondef(p.oid) FROM pg_trigger t
                 JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgname = $1",
                &[Raw::text(name.as_str())],
            );
            let [Some(function), Some(definition)] = &function[0][..] else { panic!("{function:?}") };
            for change in [
                format!("CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN COALESCE(NEW, OLD); END $$"),
                format!("ALTER FUNCTION {function}() SET search_path = pg_temp"),
                format!("ALTER FUNCTION {function}() SECURITY DEFINER"),
            ] {
                raw.batch(&change);
                check(&format!("trigger {name} on {table} was changed"));
                raw.batch(definition);
                raw.batch(&format!("ALTER FUNCTION {function}() RESET ALL; ALTER FUNCTION {function}() SECURITY INVOKER"));
                clean();
            }
            // The trigger itself made anew: on another event, or never firing.
            let other_event = sql.replacen(" ON ", if sql.contains(" INSERT ") { " OR DELETE ON " } else { " OR INSERT ON " }, 1);
            let never = sql.replacen(" EXECUTE FUNCTION", " WHEN (false) EXECUTE FUNCTION", 1);
            for remade in [other_event, never] {
                if sql.contains("TRUNCATE") && remade.contains("WHEN") {
                    continue; // TRUNCATE triggers take no WHEN
                }
                assert_ne!(&remade, sql);
                raw.batch(&format!("DROP TRIGGER {name} ON {table}; {remade}"));
                check(&format!("trigger {name} on {table} was changed"));
                raw.batch(&format!("DROP TRIGGER {name} ON {table}; {sql}"));
                clean();
            }
            raw.batch(&format!("DROP TRIGGER {name} ON {table}"));
            check(&format!("trigger {name} on {table} is missing"));
        }
        raw.batch(sql);
        clean();
    }
    if !sqlite {
        // What stops every trigger or rewrites a write before one fires: sessions in replica
        // mode (set on the database, so every new session has it), a rule, a view in a table's
        // place.
        let name = raw.query("SELECT current_database()::text", &[])[0][0].clone().unwrap();
        raw.batch(&format!("ALTER DATABASE \"{name}\" SET session_replication_role = replica"));
        check("session_replication_role = replica");
        raw.batch(&format!("ALTER DATABASE \"{name}\" RESET session_replication_role"));
        clean();
        for (rule, on) in [("zz_keep", "DELETE"), ("zz_drop", "INSERT"), ("zz_swap", "UPDATE")] {
            raw.batch(&format!("CREATE RULE {rule} AS ON {on} TO audit_logs DO INSTEAD NOTHING"));
            check(&format!("rule {rule} on audit_logs is not the schema's"));
            raw.batch(&format!("DROP RULE {rule} ON audit_logs"));
            clean();
        }
        raw.batch("ALTER TABLE lessons RENAME TO lessons_kept; CREATE VIEW lessons AS SELECT * FROM lessons_kept");
        check("lessons is a view, not the schema's table");
        raw.batch("DROP VIEW lessons; ALTER TABLE lessons_kept RENAME TO lessons");
        clean();
    }
}
}

/// A team on a shared server keeps its tables in a schema of its own (PostgreSQL 15 no longer
/// lets every role create in `public`): with `search_path` naming it (a name that needs quotes
/// too), the tour works, a second opening finds the migrations applied, `db check` is clean and
/// `public` holds nothing.
#[test]
fn a_database_in_a_schema_of_its_own_works_as_in_public_on_postgres() {
    let Some(t) = EmptyDb::postgres() else { return };
    for schema in ["team_a", "Team B2"] {
        let mut raw = Driver::of(&t);
        raw.batch(&format!("CREATE SCHEMA \"{schema}\""));
        let separator = if t.location().contains('?') { '&' } else { '?' };
        let path = format!("\"{schema}\"").replace('"', "%22").replace(' ', "%5C%20");
        let url = format!("{}{separator}options=-c%20search_path%3D{path}", t.location());
        let db = Path::new(&url);
        run(db, &["demo"]).ok();
        run(db, &["audit", "log", "--action", "again", "--category", "user"]).ok();
        assert!(run(db, &["db", "migrate"]).ok().stdout.contains("up to date"));
        run(db, &["audit", "verify"]).ok();
        let check = run(db, &["db", "check"]);
        assert_eq!(check.code, 0, "{schema}: {}{}", check.stdout, check.stderr);
        let mut tables = |name: &str| {
            raw.query(
                "SELECT count(*)::text FROM pg_tables WHERE schemaname = $1",
                &[Raw::text(name)],
            )[0][0]
                .clone()
                .unwrap()
        };
        assert_eq!(tables("public"), "0", "{schema}");
        assert_ne!(tables(schema), "0", "{schema}");
    }
}

on_both! {
/// What `audit verify` finds in a source, a copy would not show: rows deleted from the log's
/// end leave a count of appended ids that a copy cannot carry, so the copy verified clean. A
/// copy of a log that does not verify is refused in one line, whatever was done to it (the
/// last row deleted, a row in the middle deleted, a row's action edited), and nothing is made,
/// into a new file or into an empty PostgreSQL database alike.
fn a_copy_of_a_log_that_does_not_verify_is_refused(t: EmptyDb) {
    let db = Path::new(t.location());
    run(db, &["demo"]).ok();
    let mut raw = Driver::of(t);
    let sqlite = t.backend() == Backend::Sqlite;
    let around = |raw: &mut Driver, trigger: &str, sql: &str| {
        if sqlite {
            let kept = raw.query("SELECT sql FROM sqlite_master WHERE name = ?1", &[Raw::text(trigger)]);
            let create = kept[0][0].clone().unwrap();
            raw.batch(&format!("DROP TRIGGER {trigger}; {sql}; {create}"));
        } else {
            raw.batch(&format!(
                "ALTER TABLE audit_logs DISABLE TRIGGER {trigger}; {sql}; ALTER TABLE audit_logs ENABLE TRIGGER {trigger}"
            ));
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let tampering = [
        ("audit_logs_no_delete", "DELETE FROM audit_logs WHERE id = (SELECT MAX(id) FROM audit_logs)"),
        ("audit_logs_no_delete", "DELETE FROM audit_logs WHERE id = 5"),
        ("audit_logs_no_update", "UPDATE audit_logs SET action = 'nothing happened' WHERE id = 3"),
    ];
    for (i, (trigger, sql)) in tampering.iter().enumerate() {
        around(&mut raw, trigger, sql);
        assert_eq!(run(db, &["audit", "verify"]).code, 3, "{sql}");
        let dest = dir.path().join(format!("copy{i}.db"));
        let r = run(db, &["db", "copy", t.location(), dest.to_str().unwrap()]);
        assert_error_line(&r, 1, "does not verify");
        assert!(!dest.exists(), "{sql}: a copy was made");
        if let Some(server) = EmptyDb::postgres() {
            let r = run(db, &["db", "copy", t.location(), server.location()]);
            assert_error_line(&r, 1, "does not verify");
            // Nothing was copied there (the schema may have been made: the check runs in the
            // snapshot the copy reads).
            let status = run(Path::new(server.location()), &["--json", "status"]);
            if status.code == 0 {
                let rows = &status.json()["rows"];
                assert_eq!(rows["audit_logs"], 0, "{sql}: {rows}");
                assert_eq!(rows["workflow_states"], 0, "{sql}: {rows}");
            } else {
                assert_error_line(&status, 1, "holds no aigentflow tables");
            }
        }
    }
}
}
