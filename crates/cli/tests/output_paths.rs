//! Every file the built `aigentflow` writes follows the one output rule (DESIGN.md decision 14,
//! RELIABILITY R15): the database's own files are refused by any name; a regular file is
//! replaced whole or not at all; pipes, FIFOs, devices and stdout are written straight through;
//! concurrent writers never mix; leftovers of killed writers are cleaned up and noted.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aigentflow_audit::{AuditEntry, AuditLog, Category};
use aigentflow_persistence::Database;
use serde_json::Value;

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap()
    }
}

fn cmd(db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aigentflow"));
    c.arg("--db").arg(db).env_remove("AIGENTFLOW_DB").env("NO_COLOR", "1");
    c
}

fn finish(out: std::process::Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run<S: AsRef<std::ffi::OsStr>>(db: &Path, args: &[S]) -> Run {
    finish(cmd(db).args(args).stdin(Stdio::null()).output().unwrap())
}

/// A temp database filled by `aigentflow demo`.
fn demo_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    run(&path, &["demo"]).ok();
    (dir, path)
}

/// One line on stderr naming what went wrong, exit code 1.
fn assert_refused(r: &Run, needle: &str) {
    assert_eq!(r.code, 1, "stderr: {}", r.stderr);
    assert!(r.stderr.contains(needle), "stderr lacks {needle:?}: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "one line: {}", r.stderr);
}

fn side(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// Names in `dir` that look like the temporary files of an output.
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".aigentflow-") && n.contains(".partial"))
        .collect()
}

fn export_csv(db: &Path, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["audit", "export", "--format", "csv"];
    args.extend_from_slice(extra);
    run(db, &args).ok().stdout
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn an_export_or_backup_onto_the_database_by_any_name_is_refused_and_the_database_survives() {
    let (dir, db) = demo_db();
    let rows = run(&db, &["--json", "audit", "verify"]).ok().json()["rows"].clone();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::hard_link(&db, sub.join("hard.db")).unwrap();
    std::os::unix::fs::symlink(&db, sub.join("link.db")).unwrap();
    std::os::unix::fs::symlink("../s.db", sub.join("relative-link.db")).unwrap();
    std::os::unix::fs::symlink(side(&db, "-journal"), sub.join("journal-link")).unwrap();
    let mut names = vec![
        db.clone(),
        sub.join("..").join("s.db"),
        sub.join("hard.db"),
        sub.join("link.db"),
        sub.join("relative-link.db"),
        sub.join("journal-link"),
    ];
    for suffix in ["-wal", "-shm", "-journal"] {
        names.push(side(&db, suffix));
        names.push(sub.join("..").join(format!("s.db{suffix}")));
    }
    let before = std::fs::read(&db).unwrap();
    for name in &names {
        let name = name.to_str().unwrap();
        for args in [
            vec!["audit", "export", "--format", "csv", "-o", name],
            vec!["audit", "export", "--format", "jsonl", "--output", name],
            vec!["db", "backup", name],
        ] {
            let r = run(&db, &args);
            assert_refused(&r, "the database's own file");
            assert!(r.stderr.contains(name), "names the path: {}", r.stderr);
        }
    }
    // Stdout redirected onto the database (`aigentflow … >> s.db`) is refused the same way.
    for args in [&["audit", "export", "--format", "csv"][..], &["db", "backup", "-"]] {
        let append = std::fs::OpenOptions::new().append(true).open(&db).unwrap();
        let r = finish(cmd(&db).args(args).stdout(append).output().unwrap());
        assert_refused(&r, "the database's own file");
    }
    assert_eq!(std::fs::read(&db).unwrap(), before, "database bytes unchanged");
    assert!(!side(&db, "-journal").exists());
    assert!(temps(dir.path()).is_empty() && temps(&sub).is_empty());
    let check = run(&db, &["--json", "db", "check"]).ok().json();
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(run(&db, &["--json", "audit", "verify"]).ok().json()["rows"], rows);
}

#[test]
fn two_exports_to_one_path_at_once_leave_one_complete_export_and_no_false_success() {
    let (dir, db) = demo_db();
    {
        let log = AuditLog::new(Database::open(&db).unwrap());
        let batch: Vec<AuditEntry> = (0..500)
            .map(|i| {
                AuditEntry::new(format!("bulk row {i} with some text to widen it"), Category::File)
            })
            .collect();
        for _ in 0..20 {
            log.log_batch(&batch).unwrap();
        }
    }
    // Each writer exports a different number of rows, so every output is told apart.
    let limits: Vec<String> = (1..=6).map(|i| (i * 1500).to_string()).collect();
    let expected: Vec<Vec<u8>> =
        limits.iter().map(|l| export_csv(&db, &["--limit", l.as_str()])).collect();
    let path = dir.path().join("out.csv");
    for round in ["absent", "present"] {
        let runs: Vec<Run> = std::thread::scope(|s| {
            let handles: Vec<_> = limits
                .iter()
                .map(|limit| {
                    let (db, path) = (&db, &path);
                    s.spawn(move || {
                        let p = path.to_str().unwrap();
                        run(
                            db,
                            &[
                                "--json", "audit", "export", "--format", "csv", "--limit", limit,
                                "-o", p,
                            ],
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let written = std::fs::read(&path).unwrap();
        let winner = expected.iter().position(|e| *e == written).unwrap_or_else(|| {
            panic!("{round}: the file is no single complete export ({} bytes)", written.len())
        });
        let mut reader = csv::Reader::from_reader(written.as_slice());
        assert_eq!(
            reader.records().collect::<Result<Vec<_>, _>>().unwrap().len(),
            (winner + 1) * 1500
        );
        assert_eq!(runs[winner].code, 0, "{round}: the writer of the file succeeded");
        assert_eq!(runs[winner].json()["rows"], (winner + 1) * 1500);
        for (i, r) in runs.iter().enumerate() {
            if r.code != 0 {
                assert_refused(r, "changed by another writer");
                assert_ne!(i, winner);
            }
        }
        assert!(temps(dir.path()).is_empty(), "{round}: {:?}", temps(dir.path()));
    }
}

#[test]
fn an_export_to_a_fifo_read_by_another_thread_goes_straight_through_and_the_fifo_stays() {
    let (dir, db) = demo_db();
    let expected = export_csv(&db, &[]);
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    for args in [&["-o"][..], &["--output"]] {
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let mut all = vec!["audit", "export", "--format", "csv"];
        all.extend_from_slice(args);
        all.push(fifo.to_str().unwrap());
        let r = run(&db, &all).ok();
        assert_eq!(reader.join().unwrap(), expected);
        assert!(String::from_utf8_lossy(&r.stdout).contains("exported"));
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "still a FIFO");
    }
    // A backup through the FIFO is the checked copy's bytes.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    run(&db, &["db", "backup", fifo.to_str().unwrap()]).ok();
    let copy = dir.path().join("from-fifo.db");
    std::fs::write(&copy, reader.join().unwrap()).unwrap();
    assert_eq!(run(&copy, &["--json", "db", "check"]).ok().json()["ok"], true);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn stdout_devices_and_process_substitution_are_written_straight_through() {
    let (dir, db) = demo_db();
    let expected = export_csv(&db, &[]);
    for name in ["-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"] {
        let r = run(&db, &["audit", "export", "--format", "csv", "-o", name]).ok();
        assert_eq!(r.stdout, expected, "{name}: the export alone on stdout");
    }
    // /dev/stdout redirected to a regular file: written through the descriptor, not replaced.
    let file = dir.path().join("redirected.csv");
    let out = std::fs::File::create(&file).unwrap();
    let r = finish(
        cmd(&db)
            .args(["audit", "export", "--format", "csv", "-o", "/dev/stdout"])
            .stdout(out)
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), expected);
    // /dev/null stays the null device.
    run(&db, &["audit", "export", "--format", "csv", "-o", "/dev/null"]).ok();
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    // `-o >(gzip > a.gz)`: a /dev/fd/N pipe from the shell.
    let gz = dir.path().join("a.gz");
    let script =
        r#""$0" --db "$1" audit export --format csv -o >(gzip > "$2"); rc=$?; wait $!; exit $rc"#;
    let status = Command::new("bash")
        .args(["-c", script, env!("CARGO_BIN_EXE_aigentflow")])
        .arg(&db)
        .arg(&gz)
        .env_remove("AIGENTFLOW_DB")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let unzipped = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert_eq!(unzipped.stdout, expected);
    // A backup on stdout is a database, and nothing else is printed there.
    let r = run(&db, &["db", "backup", "-"]).ok();
    let copy = dir.path().join("from-stdout.db");
    std::fs::write(&copy, &r.stdout).unwrap();
    assert_eq!(run(&copy, &["--json", "db", "check"]).ok().json()["ok"], true);
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn a_leftover_symlink_at_the_old_partial_name_does_not_redirect_the_export() {
    let (dir, db) = demo_db();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("x.csv.partial")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(".x.csv.partial")).unwrap();
    let out = dir.path().join("x.csv");
    run(&db, &["audit", "export", "--format", "csv", "-o", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read(&out).unwrap(), export_csv(&db, &[]));
    // A symlink at the final path stays a link; the file it points to gets the export.
    let link = dir.path().join("latest.csv");
    std::os::unix::fs::symlink("x.csv", &link).unwrap();
    run(&db, &["audit", "export", "--format", "jsonl", "-o", link.to_str().unwrap()]).ok();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        run(&db, &["audit", "export", "--format", "jsonl"]).stdout
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn an_export_replaces_a_file_whole_keeping_its_mode_and_creates_new_ones_0600() {
    let (dir, db) = demo_db();
    let fresh = dir.path().join("fresh.csv");
    run(&db, &["audit", "export", "--format", "csv", "-o", fresh.to_str().unwrap()]).ok();
    assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
    let shared = dir.path().join("shared.csv");
    std::fs::write(&shared, b"old").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    run(&db, &["audit", "export", "--format", "csv", "-o", shared.to_str().unwrap()]).ok();
    assert_eq!(std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(std::fs::read(&shared).unwrap(), export_csv(&db, &[]));
    let backup = dir.path().join("copy.db");
    run(&db, &["db", "backup", backup.to_str().unwrap()]).ok();
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    assert_refused(&run(&db, &["db", "backup", backup.to_str().unwrap()]), "already exists");
    let r = run(&db, &["audit", "export", "--format", "csv", "-o", dir.path().to_str().unwrap()]);
    assert_refused(&r, "is a directory");
    let missing = dir.path().join("missing").join("out.csv");
    let r = run(&db, &["audit", "export", "--format", "csv", "-o", missing.to_str().unwrap()]);
    assert_refused(&r, "does not exist");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn a_killed_writers_temp_file_is_removed_and_noted_by_the_next_run() {
    let (dir, db) = demo_db();
    // A pid no process has: a child that has exited and been reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!(".out.csv.aigentflow-{dead}-0123456789abcdef.partial");
    let journal = format!(".copy.db.aigentflow-{dead}-fedcba9876543210.partial-journal");
    let live = ".out.csv.aigentflow-1-0123456789abcdef.partial".to_owned();
    for name in [&stale, &journal, &live] {
        std::fs::write(dir.path().join(name), b"half an export").unwrap();
    }
    let out = dir.path().join("out.csv");
    let r = run(&db, &["audit", "export", "--format", "csv", "-o", out.to_str().unwrap()]).ok();
    for name in [&stale, &journal] {
        assert!(!dir.path().join(name).exists(), "{name} removed");
        assert!(r.stderr.contains(name.as_str()), "noted: {}", r.stderr);
    }
    assert!(r.stderr.contains(&format!("process {dead} is gone")), "{}", r.stderr);
    assert!(dir.path().join(&live).exists(), "a live process's file is kept");
    // The backup command cleans up the same way.
    let again = format!(".copy.db.aigentflow-{dead}-00000000000000aa.partial");
    std::fs::write(dir.path().join(&again), b"half a backup").unwrap();
    let r = run(&db, &["db", "backup", dir.path().join("copy.db").to_str().unwrap()]).ok();
    assert!(!dir.path().join(&again).exists());
    assert!(r.stderr.contains(again.as_str()), "{}", r.stderr);
}

#[test]
fn help_states_the_output_rule() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    for args in [&["audit", "export", "--help"][..], &["db", "backup", "--help"]] {
        let help = String::from_utf8(run(&db, args).ok().stdout).unwrap();
        for needle in ["0600", "straight through", "database's own files", "`-`"] {
            assert!(help.contains(needle), "{args:?} --help lacks {needle:?}: {help}");
        }
    }
}
