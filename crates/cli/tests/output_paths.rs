//! Every file the built `aigentflow` writes follows the one output rule (DESIGN.md decision 14,
//! RELIABILITY R15): the database's own files are refused by any name; a regular file is
//! replaced whole or not at all; pipes, FIFOs, devices and stdout are written straight through;
//! concurrent writers never mix; leftovers of killed writers are cleaned up and noted.
//!
//! The rule for the files written is the same whatever the database: those tests run on both
//! backends (`on_both!`; a backup of a PostgreSQL database is a SQLite file, staged in TMPDIR
//! for a pipe). The database's own files exist only on SQLite: the tests about them end in
//! `_on_sqlite`.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aigentflow_audit::{AuditEntry, AuditLog, Category};
use aigentflow_persistence::{Backend, Database};
use aigentflow_testkit::{names_in, on_both, EmptyDb, TestDb};
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

/// `t`'s database filled by `aigentflow demo`, as `--db` takes it (a path or a URL), and the
/// test's folder for the files it writes.
fn demo(t: &EmptyDb) -> (&Path, &Path) {
    let db = Path::new(t.location());
    run(db, &["demo"]).ok();
    (t.dir(), db)
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
    names_in(dir)
        .into_iter()
        .filter(|n| n.contains(".aigentflow-") && n.contains(".partial"))
        .collect()
}

fn export_csv(db: &Path, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["audit", "export", "--format", "csv"];
    args.extend_from_slice(extra);
    run(db, &args).ok().stdout
}

/// The command started with stdin closed and its output captured.
fn spawn(db: &Path, args: &[&str]) -> std::process::Child {
    cmd(db)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `run`, with stdin closed, failing the test if the command has not ended within a minute
/// (one waiting on a FIFO nobody opens would never end).
fn run_within_a_minute(db: &Path, args: &[&str]) -> Run {
    let mut child = spawn(db, args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} still runs after a minute (waiting on a FIFO?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    finish(child.wait_with_output().unwrap())
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// A copy's destination database has files of its own (`-wal`, `-journal`…): none may be one of
/// its source's, so a source named like a side file (`y-wal`) is not given to `y` as its WAL,
/// and a destination reached through a link is refused as a link. The source stays whole.
#[test]
fn a_copy_never_makes_a_database_whose_files_are_its_sources_on_sqlite() {
    // Every spelling of a file destination: a path, and the `sqlite:` forms of it.
    let spellings = |p: &Path| {
        let p = p.to_str().unwrap().to_owned();
        vec![p.clone(), format!("sqlite:{p}"), format!("sqlite://{p}"), format!("SQLITE:{p}")]
    };
    let dir = tempfile::tempdir().unwrap();
    for name in ["y-wal", "y-journal", "y-shm"] {
        let source = dir.path().join(name);
        run(&source, &["demo"]).ok();
        let before = std::fs::read(&source).unwrap();
        let dest = dir.path().join("y");
        for dest_text in spellings(&dest) {
            let r = run(&source, &["db", "copy", source.to_str().unwrap(), &dest_text]);
            assert_refused(&r, "the database's own file");
            assert!(!dest.exists(), "{name} → {dest_text}");
            assert_eq!(std::fs::read(&source).unwrap(), before, "{name} → {dest_text}");
        }
        std::fs::remove_file(&source).unwrap();
    }
    // A link at the destination, to nothing or to a file, in every spelling.
    let (dir, db) = demo_db();
    let away = dir.path().join("away.db");
    let kept = dir.path().join("kept.txt");
    std::fs::write(&kept, b"kept").unwrap();
    for (name, to) in [("dangling.db", &away), ("to-file.db", &kept)] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(to, &link).unwrap();
        for dest_text in spellings(&link) {
            let r = run(&db, &["db", "copy", db.to_str().unwrap(), &dest_text]);
            assert_eq!(r.code, 1, "{dest_text}: {}", r.stderr);
            assert!(r.stderr.contains("symbolic link"), "{dest_text}: {}", r.stderr);
        }
    }
    assert!(!away.exists());
    assert_eq!(std::fs::read(&kept).unwrap(), b"kept");
}

/// The destination is opened without following a link, so a link planted after the check
/// (here: before an open with no check at all) fails the open instead of being followed.
#[test]
fn a_database_opened_without_following_links_refuses_one_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let away = dir.path().join("away.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&away, &link).unwrap();
    let options = aigentflow_persistence::Options { follow_link: false, ..Default::default() };
    assert!(Database::open_with(&link, options).is_err());
    assert!(!away.exists());
    // Followed by default, as a database the operator points --db at through a link.
    let db = Database::open_with(&link, aigentflow_persistence::Options::default()).unwrap();
    drop(db);
    assert!(away.exists());
}

#[test]
fn an_export_or_backup_onto_the_database_by_any_name_is_refused_and_the_database_survives_on_sqlite(
) {
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
        // The side files of the database's other names, which SQLite opening it by that name
        // would take for its own.
        names.push(side(&sub.join("hard.db"), suffix));
        names.push(side(&sub.join("link.db"), suffix));
    }
    let before = std::fs::read(&db).unwrap();
    for name in &names {
        let name = name.to_str().unwrap();
        for args in [
            vec!["audit", "export", "--format", "csv", "-o", name],
            vec!["audit", "export", "--format", "jsonl", "--output", name],
            vec!["db", "backup", name],
            vec!["db", "copy", db.to_str().unwrap(), name],
        ] {
            let r = run(&db, &args);
            assert_refused(&r, "the database's own file");
            assert!(r.stderr.contains(name), "names the path: {}", r.stderr);
        }
    }
    // Opened by another name, the first name's side files are its own too.
    for other in [sub.join("hard.db"), sub.join("link.db")] {
        for suffix in ["-wal", "-shm", "-journal"] {
            let name = side(&db, suffix);
            let name = name.to_str().unwrap();
            let r = run(&other, &["audit", "export", "--format", "csv", "-o", name]);
            assert_refused(&r, "the database's own file");
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

on_both! {
fn two_exports_to_one_path_at_once_leave_one_complete_export_and_no_false_success(t: TestDb) {
    let (dir, db) = (t.dir(), Path::new(t.location()));
    run(db, &["demo"]).ok();
    {
        let log = AuditLog::new(t.db().clone());
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
        limits.iter().map(|l| export_csv(db, &["--limit", l.as_str()])).collect();
    let path = dir.join("out.csv");
    let mut first_winner = None;
    for round in ["absent", "present"] {
        let runs: Vec<Run> = std::thread::scope(|s| {
            let handles: Vec<_> = limits
                .iter()
                .map(|limit| {
                    let path = &path;
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
        // The file is new for one writer at most: the first round's winner; the others, and
        // every writer of the second round, are refused and change nothing.
        for (i, r) in runs.iter().enumerate() {
            if round == "absent" && i == winner {
                assert_eq!(r.code, 0, "{round}: the writer of the file succeeded");
                assert_eq!(r.json()["rows"], (winner + 1) * 1500);
            } else if round == "present" {
                assert_refused(r, "already exists");
            } else {
                // Refused at the start, or when it came to put its file in place.
                let said = ["already exists", "changed by another writer"];
                assert!(r.code == 1 && said.iter().any(|s| r.stderr.contains(s)), "{}", r.stderr);
            }
        }
        if round == "present" {
            assert_eq!(Some(winner), first_winner, "the file stays the first round's");
        }
        first_winner = Some(winner);
        assert!(temps(dir).is_empty(), "{round}: {:?}", temps(dir));
    }
}
}

on_both! {
fn an_export_to_a_fifo_read_by_another_thread_goes_straight_through_and_the_fifo_stays(t: EmptyDb) {
    let (dir, db) = demo(t);
    let expected = export_csv(db, &[]);
    let fifo = dir.join("pipe");
    mkfifo(&fifo);
    for args in [&["-o"][..], &["--output"]] {
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let mut all = vec!["audit", "export", "--format", "csv"];
        all.extend_from_slice(args);
        all.push(fifo.to_str().unwrap());
        let r = run(db, &all).ok();
        assert_eq!(reader.join().unwrap(), expected);
        assert!(String::from_utf8_lossy(&r.stdout).contains("exported"));
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "still a FIFO");
    }
    // A backup through the FIFO is the checked copy's bytes.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    run(db, &["db", "backup", fifo.to_str().unwrap()]).ok();
    let copy = dir.join("from-fifo.db");
    std::fs::write(&copy, reader.join().unwrap()).unwrap();
    assert_eq!(run(&copy, &["--json", "db", "check"]).ok().json()["ok"], true);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(temps(dir).is_empty());
}
}

on_both! {
fn stdout_devices_and_process_substitution_are_written_straight_through(t: EmptyDb) {
    let (dir, db) = demo(t);
    let expected = export_csv(db, &[]);
    for name in ["-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"] {
        let r = run(db, &["audit", "export", "--format", "csv", "-o", name]).ok();
        assert_eq!(r.stdout, expected, "{name}: the export alone on stdout");
    }
    // /dev/stdout redirected to a regular file: written through the descriptor, not replaced.
    let file = dir.join("redirected.csv");
    let out = std::fs::File::create(&file).unwrap();
    let r = finish(
        cmd(db)
            .args(["audit", "export", "--format", "csv", "-o", "/dev/stdout"])
            .stdout(out)
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), expected);
    // /dev/null stays the null device.
    run(db, &["audit", "export", "--format", "csv", "-o", "/dev/null"]).ok();
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    // `-o >(gzip > a.gz)`: a /dev/fd/N pipe from the shell.
    let gz = dir.join("a.gz");
    let script =
        r#""$0" --db "$1" audit export --format csv -o >(gzip > "$2"); rc=$?; wait $!; exit $rc"#;
    let status = Command::new("bash")
        .args(["-c", script, env!("CARGO_BIN_EXE_aigentflow")])
        .arg(db)
        .arg(&gz)
        .env_remove("AIGENTFLOW_DB")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let unzipped = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert_eq!(unzipped.stdout, expected);
    // A backup on stdout is a database, and nothing else is printed there.
    let r = run(db, &["db", "backup", "-"]).ok();
    let copy = dir.join("from-stdout.db");
    std::fs::write(&copy, &r.stdout).unwrap();
    assert_eq!(run(&copy, &["--json", "db", "check"]).ok().json()["ok"], true);
    assert!(temps(dir).is_empty());
}
}

on_both! {
fn no_symlink_redirects_an_output_neither_at_the_partial_name_nor_at_the_path(t: EmptyDb) {
    let (dir, db) = demo(t);
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("x.csv.partial")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(".x.csv.partial")).unwrap();
    let out = dir.join("x.csv");
    run(db, &["audit", "export", "--format", "csv", "-o", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read(&out).unwrap(), export_csv(db, &[]));
    // A symlink at the final path is refused, whatever it leads to (a file, nothing, a file
    // in a folder that does not exist), by every command that writes a file; nothing changes.
    let before = std::fs::read(&out).unwrap();
    std::fs::create_dir(dir.join("away")).unwrap();
    let links = [
        ("latest.csv", dir.join("x.csv")),
        ("to-victim", victim.clone()),
        ("dangling", dir.join("away/new.csv")),
        ("deep", dir.join("away/no/such.csv")),
    ];
    for (name, to) in &links {
        let link = dir.join(name);
        std::os::unix::fs::symlink(to, &link).unwrap();
        let link = link.to_str().unwrap();
        for args in [
            &["audit", "export", "--format", "jsonl", "-o", link][..],
            &["audit", "verify", "--report", link],
            &["db", "backup", link],
            &["audit", "keygen", link],
        ] {
            let r = run(db, args);
            assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
            // A link into a folder that does not exist fails on the folder first.
            let why = if *name == "deep" { "does not exist" } else { "symbolic link" };
            assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
        }
        assert!(std::fs::symlink_metadata(link).unwrap().file_type().is_symlink());
    }
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(dir.join("away")).unwrap().count(), 0);
}
}

on_both! {
/// A key pair goes in two new regular files or nowhere: a key file named as a device, stdout
/// (as a path or a descriptor), or a link to a device is refused before anything is made, no
/// `.pub` appears beside it, and no key is printed.
fn a_key_pair_is_two_new_files_and_never_a_device_or_a_pipe(t: EmptyDb) {
    let (dir, db) = demo(t);
    let to_null = dir.join("to-null");
    std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
    for target in ["/dev/null", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", "/dev/stderr", to_null.to_str().unwrap()] {
        let public = format!("{target}.pub");
        let existed = Path::new(&public).exists();
        let r = run(db, &["audit", "keygen", target]);
        assert_eq!(r.code, 1, "{target}: {}", r.stderr);
        assert!(r.stderr.contains("a key goes in a new file"), "{target}: {}", r.stderr);
        assert!(!String::from_utf8_lossy(&r.stdout).contains("aigentflow-ed25519"), "{target}");
        assert!(!r.stderr.contains("aigentflow-ed25519"), "{target}");
        assert_eq!(Path::new(&public).exists(), existed, "{public}");
    }
    // A public half whose name is a link to a device: the secret key is not made either.
    let key = dir.join("k.key");
    std::os::unix::fs::symlink("/dev/null", dir.join("k.key.pub")).unwrap();
    assert_eq!(run(db, &["audit", "keygen", key.to_str().unwrap()]).code, 1);
    assert!(!key.exists());
    // A FIFO nobody reads, as the key or as its `.pub`: refused at once, not waited on.
    let fifo = dir.join("fifo.key");
    mkfifo(&fifo);
    let half = dir.join("half.key");
    mkfifo(&dir.join("half.key.pub"));
    for target in [&fifo, &half] {
        let r = run_within_a_minute(db, &["audit", "keygen", target.to_str().unwrap()]);
        assert_refused(&r, "a key goes in a new file of its own, not a FIFO");
    }
    assert!(!half.exists());
    // And the pair is made where both are new files.
    let key = dir.join("good.key");
    run(db, &["audit", "keygen", key.to_str().unwrap()]).ok();
    assert!(key.is_file() && dir.join("good.key.pub").is_file());
}
}

on_both! {
/// A file the command writes is new, whichever command writes it: every writer refuses an
/// existing regular file (empty or not, read-only, or another database), leaves it as it was,
/// and leaves no temporary file; a new file gets mode 0600.
fn no_writer_replaces_an_existing_file_and_new_ones_are_0600(t: EmptyDb) {
    let (dir, db) = demo(t);
    let task = run(db, &["--json", "tasks", "list"]).ok().json()[0]["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Each writer's arguments, PATH standing for the file it writes.
    let writers: [&[&str]; 6] = [
        &["audit", "export", "--format", "csv", "-o", "PATH"],
        &["audit", "export", "--format", "json", "-o", "PATH"],
        &["audit", "export", "--format", "jsonl", "-o", "PATH"],
        &["tasks", "export", &task, "-o", "PATH"],
        &["db", "backup", "PATH"],
        &["audit", "verify", "--report", "PATH"],
    ];
    for (w, args) in writers.iter().enumerate() {
        let writer = |p: &str| -> Vec<String> {
            args.iter().map(|a| if *a == "PATH" { p.to_owned() } else { (*a).to_owned() }).collect()
        };
        let fresh = dir.join(format!("fresh{w}.out"));
        run(db, &writer(fresh.to_str().unwrap())).ok();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
        let existing: [(&str, &[u8], u32); 4] = [
            ("old.csv", b"old", 0o644),
            ("empty.csv", b"", 0o600),
            ("readonly.csv", b"precious", 0o444),
            ("other.db", b"SQLite format 3\0", 0o644),
        ];
        for (name, bytes, mode) in existing {
            let path = dir.join(format!("{w}-{name}"));
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = run(db, &writer(path.to_str().unwrap()));
            assert_refused(&r, "already exists");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{w} {name}");
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, mode);
        }
    }
    let r = run(db, &["audit", "export", "--format", "csv", "-o", dir.to_str().unwrap()]);
    assert_refused(&r, "is a directory");
    let missing = dir.join("missing").join("out.csv");
    let r = run(db, &["audit", "export", "--format", "csv", "-o", missing.to_str().unwrap()]);
    assert_refused(&r, "does not exist");
    assert!(temps(dir).is_empty());
}
}

on_both! {
fn a_killed_writers_temp_file_is_removed_and_noted_by_the_next_run(t: EmptyDb) {
    let (dir, db) = demo(t);
    // A pid no process has: a child that has exited and been reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!(".out.csv.aigentflow-{dead}-0123456789abcdef.partial");
    let journal = format!(".copy.db.aigentflow-{dead}-fedcba9876543210.partial-journal");
    let live = ".out.csv.aigentflow-1-0123456789abcdef.partial".to_owned();
    for name in [&stale, &journal, &live] {
        std::fs::write(dir.join(name), b"half an export").unwrap();
    }
    let out = dir.join("out.csv");
    let r = run(db, &["audit", "export", "--format", "csv", "-o", out.to_str().unwrap()]).ok();
    for name in [&stale, &journal] {
        assert!(!dir.join(name).exists(), "{name} removed");
        assert!(r.stderr.contains(name.as_str()), "noted: {}", r.stderr);
    }
    assert!(r.stderr.contains(&format!("process {dead} is gone")), "{}", r.stderr);
    assert!(dir.join(&live).exists(), "a live process's file is kept");
    // The backup command cleans up the same way.
    let again = format!(".copy.db.aigentflow-{dead}-00000000000000aa.partial");
    std::fs::write(dir.join(&again), b"half a backup").unwrap();
    let r = run(db, &["db", "backup", dir.join("copy.db").to_str().unwrap()]).ok();
    assert!(!dir.join(&again).exists());
    assert!(r.stderr.contains(again.as_str()), "{}", r.stderr);
}
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
    let help = String::from_utf8(run(&db, &["db", "backup", "--help"]).ok().stdout).unwrap();
    for needle in ["TMPDIR", "full disk"] {
        assert!(help.contains(needle), "db backup --help lacks {needle:?}: {help}");
    }
    let help = String::from_utf8(run(&db, &["--help"]).ok().stdout).unwrap();
    for needle in ["ulimit -f", "2<>app.db", "database's own files", "Ctrl-C"] {
        assert!(help.contains(needle), "--help lacks {needle:?}: {help}");
    }
}

/// A pid no process has: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `aigentflow --db DB` as the unprivileged `nobody` when this is root (whom permissions do not
/// stop, and who may read every process's open files), else as this user.
fn cmd_unprivileged(db: &Path) -> Command {
    let bin = env!("CARGO_BIN_EXE_aigentflow");
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.arg("--db").arg(db).env_remove("AIGENTFLOW_DB").env("NO_COLOR", "1");
    c
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A reader that holds the database open (its -wal and -shm too, and SQLite's lock on the
/// -shm) until killed: an export blocked opening a FIFO nobody reads.
struct Holder(std::process::Child);

impl Holder {
    fn start(db: &Path, fifo: &Path) -> Self {
        if !fifo.exists() {
            mkfifo(fifo);
        }
        let child = cmd(db)
            .args(["audit", "export", "--format", "csv", "-o"])
            .arg(fifo)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let holder = Self(child);
        let shm = side(db, "-shm");
        let fd_dir = PathBuf::from(format!("/proc/{}/fd", holder.0.id()));
        let holds = || {
            std::fs::read_dir(&fd_dir).is_ok_and(|fds| {
                fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == shm))
            })
        };
        for _ in 0..1000 {
            if holds() {
                return holder;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the reader never opened {}", db.display());
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The files whose names start with `db`'s file name, in its folder.
fn database_files(db: &Path) -> Vec<String> {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    names_in(db.parent().unwrap()).into_iter().filter(|n| n.starts_with(&name)).collect()
}

/// Issue 12's repro: a database named like a leftover of a gone writer, with the side files
/// its own reader opens, and with the ones a killed reader leaves, survives every export and
/// backup written beside it (to a file, stdout, a FIFO, a device) and none is "removed".
#[test]
fn a_database_named_like_a_leftover_survives_every_output_written_beside_it_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(format!(".orders.aigentflow-{}-0123456789abcdef.partial", dead_pid()));
    run(&db, &["demo"]).ok();
    let rows = run(&db, &["--json", "audit", "verify"]).ok().json()["rows"].clone();
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let outputs = |round: &str| {
        let d = dir.path();
        let path = |n: &str| d.join(format!("{round}-{n}")).to_str().unwrap().to_owned();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let fifo = fifo.to_str().unwrap().to_owned();
        let runs = [
            vec![
                "audit".to_owned(),
                "export".into(),
                "--format".into(),
                "csv".into(),
                "-o".into(),
                path("out.csv"),
            ],
            vec![
                "audit".into(),
                "export".into(),
                "--format".into(),
                "jsonl".into(),
                "-o".into(),
                path("out.jsonl"),
            ],
            vec!["db".into(), "backup".into(), path("copy.db")],
            vec!["db".into(), "backup".into(), "-".into()],
            vec!["db".into(), "backup".into(), "/dev/null".into()],
            vec!["db".into(), "backup".into(), fifo],
        ];
        for args in runs {
            let r = run(&db, &args).ok();
            assert!(!r.stderr.contains("removed"), "{round} {args:?}: {}", r.stderr);
            assert!(db.exists(), "{round} {args:?} removed the database");
        }
        assert!(!reader.join().unwrap().is_empty());
    };
    outputs("open");
    // The side files a killed reader leaves, which no process holds.
    drop(Holder::start(&db, &dir.path().join("blocked")));
    let left = database_files(&db);
    assert_eq!(left.len(), 3, "{left:?}");
    outputs("crashed");
    for file in &left {
        assert!(dir.path().join(file).exists(), "{file} was removed");
    }
    assert_eq!(run(&db, &["--json", "audit", "verify"]).ok().json()["rows"], rows);
    assert_eq!(run(&db, &["--json", "db", "check"]).ok().json()["ok"], true);
    assert!(temps(dir.path()).iter().all(|n| n.starts_with(".orders")), "{:?}", temps(dir.path()));
}

/// Another database named like a leftover, used by a process this one cannot see into (root's,
/// seen from `nobody`): SQLite's lock on its -shm keeps it and its side files; once that
/// process is gone `nobody` still keeps them (they are root's, whatever their mode), and
/// root's next output removes them as leftovers and notes them.
#[test]
fn a_leftover_named_database_another_user_holds_open_is_kept_by_its_lock_on_sqlite() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    chmod(dir, 0o777);
    let db = dir.join("main.db");
    run(&db, &["demo"]).ok();
    chmod(&db, 0o666);
    let other = dir.join(format!(".other.db.aigentflow-{}-00000000000000ff.partial", dead_pid()));
    run(&other, &["demo"]).ok();
    chmod(&other, 0o666);
    if !is_root() {
        eprintln!("note: not root, so the holder's open files are visible and the lock is not the only sign of use here");
    }
    let holder = Holder::start(&other, &dir.join("blocked"));
    let files = database_files(&other);
    assert_eq!(files.len(), 3, "{files:?}");
    for file in &files {
        // Writable by anyone, so only its use (not a permission) keeps it.
        chmod(&dir.join(file), 0o666);
    }
    let export = |name: &str| {
        finish(
            cmd_unprivileged(&db)
                .args(["audit", "export", "--format", "csv", "-o"])
                .arg(dir.join(name))
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    };
    let r = export("out.csv").ok();
    assert!(!r.stderr.contains("removed"), "{}", r.stderr);
    assert_eq!(database_files(&other), files, "kept while in use");
    drop(holder);
    if is_root() {
        // Not the exporting user's files (root made them): kept, whatever their mode.
        let r = export("again.csv").ok();
        assert!(!r.stderr.contains("removed"), "{}", r.stderr);
        assert_eq!(database_files(&other), files, "another user's files are kept");
    }
    // Their owner's next output removes them, once nothing holds them.
    let r = finish(
        cmd(&db)
            .args(["audit", "export", "--format", "csv", "-o"])
            .arg(dir.join("third.csv"))
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for file in &files {
        assert!(!dir.join(file).exists(), "{file}");
        assert!(r.stderr.contains(file.as_str()), "noted: {}", r.stderr);
    }
}

/// How a test points a standard stream at a file.
#[derive(Debug, Clone, Copy)]
enum Streams {
    Stdout,
    Stderr,
    Both,
}

/// Every kind of command (a read, a write, an export to stdout or to stderr, a backup, an
/// error, a usage error, help, init) with stdout, stderr or both on the database's own file
/// (the database, its -wal or -shm, opened read-write or for appending): exit code 1, not a
/// byte of the database's files changed, and the error line only on the stream that is safe.
#[test]
fn stdout_or_stderr_on_the_database_is_refused_before_anything_is_written_on_sqlite() {
    let (dir, db) = demo_db();
    let commands: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["audit", "query"],
        vec!["audit", "log", "--action", "x", "--category", "user"],
        vec!["audit", "export", "--format", "csv"],
        vec!["audit", "export", "--format", "csv", "-o", "/dev/stderr"],
        vec!["db", "backup", "-"],
        vec!["tasks", "show", "no-such-task"],
        vec!["no-such-command"],
        vec!["--help"],
        vec!["init"],
    ];
    let before: Vec<Option<Vec<u8>>> =
        ["", "-wal", "-shm"].iter().map(|s| std::fs::read(side(&db, s)).ok()).collect();
    let mut cases = 0;
    for (i, args) in commands.iter().enumerate() {
        for streams in [Streams::Stdout, Streams::Stderr, Streams::Both] {
            for suffix in ["", "-wal", "-shm"] {
                let target = side(&db, suffix);
                let created = !target.exists();
                let open = || {
                    let mut o = std::fs::OpenOptions::new();
                    // `<>` (read-write, no truncation) and `>>` (append), in turn.
                    if i % 2 == 0 {
                        o.read(true).write(true).create(true);
                    } else {
                        o.append(true).create(true);
                    }
                    o.open(&target).unwrap()
                };
                let mut c = cmd(&db);
                c.args(args).stdin(Stdio::null());
                match streams {
                    Streams::Stdout => c.stdout(open()).stderr(Stdio::piped()),
                    Streams::Stderr => c.stdout(Stdio::piped()).stderr(open()),
                    Streams::Both => c.stdout(open()).stderr(open()),
                };
                let r = finish(c.output().unwrap());
                let what = format!("{args:?} with {streams:?} on {}", target.display());
                assert_eq!(
                    r.code,
                    1,
                    "{what}: {} {}",
                    r.stderr,
                    String::from_utf8_lossy(&r.stdout)
                );
                let shown = match streams {
                    Streams::Stdout => r.stderr.clone(),
                    Streams::Stderr => String::from_utf8_lossy(&r.stdout).into_owned(),
                    Streams::Both => String::new(),
                };
                if !matches!(streams, Streams::Both) {
                    assert!(shown.contains("is the database's own file"), "{what}: {shown}");
                    assert_eq!(shown.trim_end().lines().count(), 1, "{what}: {shown}");
                }
                if created {
                    assert_eq!(std::fs::read(&target).unwrap(), b"", "{what}");
                    std::fs::remove_file(&target).unwrap();
                }
                let now: Vec<Option<Vec<u8>>> =
                    ["", "-wal", "-shm"].iter().map(|s| std::fs::read(side(&db, s)).ok()).collect();
                assert!(now == before, "{what}: the database's files changed");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 90);
    assert_eq!(run(&db, &["--json", "db", "check"]).ok().json()["ok"], true);
    assert!(temps(dir.path()).is_empty());
}

/// Runs `aigentflow --db DB ARGS` in a private mount namespace (gone with the command): the
/// shell fragment `setup` first, `after` once the command is done; `$1` is `path` in both.
/// `None` when this machine allows no such namespace or mount (the caller then says so and
/// tries another way).
fn in_mount_namespace(
    setup: &str,
    after: &str,
    path: &Path,
    db: &Path,
    args: &[&str],
) -> Option<Run> {
    let script = format!(r#"dir=$1; shift; {setup} || exit 97; "$@"; rc=$?; {after}; exit $rc"#);
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(path)
        .arg(env!("CARGO_BIN_EXE_aigentflow"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("AIGENTFLOW_DB")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let r = finish(out);
    // The setup's failure (97), or unshare's own: no private namespace or mount here.
    if r.code == 97 || (r.code != 0 && r.stderr.starts_with("unshare:")) {
        eprintln!("note: no private mount here ({}); {args:?} tried another way", r.stderr.trim());
        return None;
    }
    Some(r)
}

/// `db backup` to stdout, a FIFO or /dev/null from a database in a folder this user cannot
/// write (a read-only folder for `nobody`; a read-only bind mount for root, where a private
/// mount is allowed) stages its copy in TMPDIR and leaves nothing there; when TMPDIR cannot
/// take it either, one line names both files that could not be created.
#[test]
fn a_backup_to_a_pipe_from_a_read_only_folder_is_staged_in_tmpdir_on_sqlite() {
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    let ro = root.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let db = ro.join("s.db");
    run(&db, &["demo"]).ok();
    chmod(&db, 0o644);
    chmod(&ro, 0o555);
    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chmod(&tmp, 0o777);
    let ro2 = root.path().join("ro2");
    std::fs::create_dir(&ro2).unwrap();
    chmod(&ro2, 0o555);
    let fifo = tmp.join("pipe");
    mkfifo(&fifo);
    chmod(&fifo, 0o666);
    let check_copy = |bytes: &[u8], what: &str| {
        let copy = root.path().join("copy.db");
        std::fs::write(&copy, bytes).unwrap();
        assert_eq!(run(&copy, &["--json", "db", "check"]).ok().json()["ok"], true, "{what}");
        std::fs::remove_file(&copy).unwrap();
    };
    for dest in ["-", "/dev/null", fifo.to_str().unwrap()] {
        let reader = (dest == fifo.to_str().unwrap()).then(|| {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        });
        let r = finish(
            cmd_unprivileged(&db)
                .args(["db", "backup", dest])
                .env("TMPDIR", &tmp)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
        .ok();
        match (dest, reader) {
            ("-", _) => check_copy(&r.stdout, dest),
            (_, Some(reader)) => check_copy(&reader.join().unwrap(), dest),
            _ => {}
        }
        assert!(temps(&tmp).is_empty() && temps(&ro).is_empty(), "{dest}");
    }
    let r = finish(
        cmd_unprivileged(&db)
            .args(["db", "backup", "/dev/null"])
            .env("TMPDIR", &ro2)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_refused(&r, "backup to /dev/null failed");
    for folder in [&ro, &ro2] {
        let file = format!("{}/.s.db.aigentflow-", folder.display());
        assert!(r.stderr.contains(&file), "names the file in {}: {}", folder.display(), r.stderr);
    }
    assert!(r.stderr.contains("TMPDIR"), "{}", r.stderr);
    // Root on a read-only mount: the folder cannot take a file whatever the permissions.
    if is_root() {
        chmod(&ro, 0o755);
        let setup = r#"mount --bind "$dir" "$dir" && mount -o remount,bind,ro "$dir""#;
        let env_tmp = std::env::var_os("TMPDIR");
        if let Some(r) = in_mount_namespace(setup, "true", &ro, &db, &["db", "backup", "-"]) {
            let r = r.ok();
            check_copy(&r.stdout, "read-only mount");
            let system_tmp = env_tmp.map_or_else(std::env::temp_dir, PathBuf::from);
            assert!(
                temps(&system_tmp).iter().all(|n| !n.starts_with(".s.db.")),
                "{:?}",
                temps(&system_tmp)
            );
        }
        assert!(temps(&ro).is_empty());
    }
}

/// `aigentflow --db DB ARGS…` with TMPDIR set to `tmp`.
fn run_with_tmpdir(db: &Path, tmp: &Path, args: &[&str]) -> Run {
    finish(cmd(db).args(args).env("TMPDIR", tmp).stdin(Stdio::null()).output().unwrap())
}

on_both! {
/// What a `db backup -` (or to a device) killed mid-copy leaves, a hidden full copy of the
/// database and SQLite's journal in the folder it was staged in (beside a SQLite database,
/// TMPDIR for a server's), is removed by the next backup, which says so.
fn a_killed_backups_hidden_copy_is_removed_and_noted_by_the_next_backup_to_a_pipe(t: EmptyDb) {
    let (dir, db) = demo(t);
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let staging = match t.backend() {
        Backend::Sqlite => db.parent().unwrap(),
        Backend::Postgres => &tmp,
    };
    let dead = dead_pid();
    for (i, dest) in ["-", "/dev/null"].iter().enumerate() {
        let copy = format!(".s.db.aigentflow-{dead}-00000000000000a{i}.partial");
        let journal = format!("{copy}-journal");
        std::fs::write(staging.join(&copy), b"half a copy").unwrap();
        std::fs::write(staging.join(&journal), b"journal").unwrap();
        let r = run_with_tmpdir(db, &tmp, &["db", "backup", dest]).ok();
        for name in [&copy, &journal] {
            assert!(!staging.join(name).exists(), "{dest}: {name} removed");
            assert!(r.stderr.contains(name.as_str()), "{dest}: noted: {}", r.stderr);
        }
        assert!(r.stderr.contains(&format!("process {dead} is gone")), "{}", r.stderr);
        assert!(temps(staging).is_empty(), "{:?}", temps(staging));
    }
}
}

/// A backup of a server's database to stdout, a FIFO or a device is staged in TMPDIR (it has
/// no folder of its own), checked, streamed, and leaves nothing there; a TMPDIR that cannot
/// take it is one line naming the file it tried and TMPDIR.
#[test]
fn a_backup_to_a_pipe_is_staged_in_tmpdir_and_leaves_nothing_there_on_postgres() {
    let Some(t) = EmptyDb::postgres() else { return };
    let (dir, db) = demo(&t);
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let fifo = dir.join("pipe");
    mkfifo(&fifo);
    let rows = run(db, &["--json", "status"]).ok().json()["rows"].clone();
    let check_copy = |bytes: &[u8], what: &str| {
        let copy = dir.join("copy.db");
        std::fs::write(&copy, bytes).unwrap();
        assert_eq!(run(&copy, &["--json", "db", "check"]).ok().json()["ok"], true, "{what}");
        assert_eq!(run(&copy, &["--json", "status"]).ok().json()["rows"], rows, "{what}");
        std::fs::remove_file(&copy).unwrap();
    };
    for dest in ["-", "/dev/null", fifo.to_str().unwrap()] {
        let reader = (dest == fifo.to_str().unwrap()).then(|| {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        });
        let r = run_with_tmpdir(db, &tmp, &["db", "backup", dest]).ok();
        match (dest, reader) {
            ("-", _) => check_copy(&r.stdout, dest),
            (_, Some(reader)) => check_copy(&reader.join().unwrap(), dest),
            _ => {}
        }
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{dest} left a file in TMPDIR");
    }
    let nowhere = dir.join("no-such-folder");
    let r = run_with_tmpdir(db, &nowhere, &["db", "backup", "/dev/null"]);
    assert_refused(&r, "backup to /dev/null failed");
    assert!(r.stderr.contains(&nowhere.display().to_string()), "{}", r.stderr);
    assert!(r.stderr.contains("set TMPDIR to a writable folder"), "{}", r.stderr);
    assert!(!r.stderr.contains("database's folder"), "a server's database has none: {}", r.stderr);
}

/// Fills the audit log with `rows` rows of about 300 bytes.
fn fill(db: &Database, rows: usize) {
    let log = AuditLog::new(db.clone());
    let batch: Vec<AuditEntry> = (0..rows)
        .map(|i| AuditEntry::new(format!("row {i} {}", "w".repeat(280)), Category::File))
        .collect();
    log.log_batch(&batch).unwrap();
}

on_both! {
/// Every command that writes a file, past this process's file size limit (`ulimit -f`): an
/// export to a file or to stdout, a backup to a file or to stdout, a copy into a new file (the
/// limit reached by its rows, or by its schema's migration), an append to the log. The
/// write fails (SIGXFSZ does not end the process): exit code 1, one line naming the limit, no
/// temporary file or journal left, the database intact. (The append is SQLite's case only: a
/// PostgreSQL database's files are the server's.)
fn a_write_past_the_file_size_limit_fails_in_one_line_and_leaves_no_temp_file(t: TestDb) {
    let (dir, db) = (t.dir(), Path::new(t.location()));
    run(db, &["demo"]).ok();
    fill(t.db(), 1500);
    let limit: u64 = 192 * 1024;
    if let Some(path) = t.path() {
        assert!(aigentflow_testkit::file_bytes(&path).len() as u64 > limit, "the file and its WAL");
    }
    let bin = env!("CARGO_BIN_EXE_aigentflow");
    let file = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    // One argument holds at most 128 KiB: an append of 100 KiB, under a limit of 64 KiB (the
    // -shm SQLite maps, 32 KiB, must fit).
    let big_details = format!("{{\"note\": \"{}\"}}", "d".repeat(100 * 1024));
    let mut cases: Vec<(Vec<String>, Option<String>, u64)> = vec![
        (
            vec![
                "audit".into(),
                "export".into(),
                "--format".into(),
                "csv".into(),
                "-o".into(),
                file("out.csv"),
            ],
            None,
            limit,
        ),
        (
            vec!["audit".into(), "export".into(), "--format".into(), "jsonl".into()],
            Some(file("stdout.jsonl")),
            limit,
        ),
        (vec!["db".into(), "backup".into(), file("copy.db")], None, limit),
        (vec!["db".into(), "backup".into(), "-".into()], Some(file("stdout.db")), limit),
        (vec!["db".into(), "copy".into(), t.location().into(), file("copied.db")], None, limit),
        // Reached while the new file is migrated, before any row is copied.
        (vec!["db".into(), "copy".into(), t.location().into(), file("copied.db")], None, 40 * 1024),
    ];
    if t.backend() == Backend::Sqlite {
        let append = vec![
            "audit".into(),
            "log".into(),
            "--action".into(),
            "big".into(),
            "--category".into(),
            "user".into(),
            "--details".into(),
            big_details,
        ];
        cases.push((append, None, 64 * 1024));
    }
    for (args, stdout, limit) in cases {
        let mut c = Command::new("prlimit");
        c.arg(format!("--fsize={limit}")).arg("--").arg(bin).arg("--db").arg(db).args(&args);
        c.env_remove("AIGENTFLOW_DB").env("NO_COLOR", "1").stdin(Stdio::null());
        if let Some(path) = &stdout {
            c.stdout(std::fs::File::create(path).unwrap());
        }
        let r = finish(c.output().unwrap());
        let what = &args[..2];
        assert_refused(&r, "file size limit");
        assert!(r.stderr.contains(&format!("{limit} bytes")), "{what:?}: {}", r.stderr);
        assert!(temps(dir).is_empty(), "{what:?}: {:?}", temps(dir));
        if let Some(path) = &stdout {
            std::fs::remove_file(path).unwrap();
        }
    }
    for name in ["out.csv", "copy.db", "copied.db"] {
        assert!(!dir.join(name).exists(), "{name} is left");
    }
    assert_eq!(run(db, &["--json", "db", "check"]).ok().json()["ok"], true);
    let r = run(db, &["--json", "audit", "query", "--limit", "1"]).ok();
    assert_ne!(r.json()[0]["action"], "big", "the refused append is not in the log");
}
}

on_both! {
/// A database file the command makes (a backup, a copy into a new file, `init` or `demo` at a
/// new --db) is refused while a `-wal` or `-journal` is at its name, of any kind (a stale one left by a deleted database, a
/// link, a folder): SQLite would apply it to the new file when it is next opened, which then
/// would not hold the copy (a stale WAL replaced a whole backup with the deleted database's
/// tables). Nothing is made, the file there stays as it was; `-shm` alone is harmless and
/// the copy is made.
fn a_new_database_file_never_takes_a_journal_already_at_its_name(t: TestDb) {
    let (dir, db) = (t.dir(), Path::new(t.location()));
    run(db, &["demo"]).ok();
    let dest = dir.join("new.db");
    let dest_text = dest.to_str().unwrap().to_owned();
    let spelled = format!("sqlite:{dest_text}");
    let writers: [Vec<&str>; 3] = [
        vec!["db", "backup", &dest_text],
        vec!["db", "copy", t.location(), &dest_text],
        vec!["db", "copy", t.location(), &spelled],
    ];
    let stale = b"a journal that is not the new file's".to_vec();
    for suffix in ["-wal", "-journal"] {
        let journal = side(&dest, suffix);
        let kinds: [(&str, &dyn Fn()); 4] = [
            ("a file", &|| std::fs::write(&journal, &stale).unwrap()),
            ("an empty file", &|| std::fs::write(&journal, b"").unwrap()),
            ("a dangling link", &|| {
                std::os::unix::fs::symlink(dir.join("nowhere"), &journal).unwrap()
            }),
            ("a folder", &|| std::fs::create_dir(&journal).unwrap()),
        ];
        for (kind, plant) in kinds {
            plant();
            for args in &writers {
                let r = run(db, args);
                assert_refused(&r, "is there already");
                assert!(r.stderr.contains(journal.to_str().unwrap()), "{kind}: {}", r.stderr);
                assert!(!dest.exists(), "{kind} {suffix}, {args:?}: a file was made");
                assert!(temps(dir).is_empty(), "{kind}, {args:?}: {:?}", temps(dir));
            }
            // The commands that make a database at --db (which reset a stale WAL, losing a
            // crashed database's last writes) follow the same rule.
            for args in [&["init"][..], &["demo"]] {
                let r = run(&dest, args);
                assert_refused(&r, "is there already");
                assert!(r.stderr.contains(journal.to_str().unwrap()), "{kind}: {}", r.stderr);
                assert!(!dest.exists(), "{kind} {suffix}, {args:?}: a database was made");
            }
            if kind == "a file" {
                assert_eq!(std::fs::read(&journal).unwrap(), stale, "the journal there is kept");
            }
            match std::fs::symlink_metadata(&journal).unwrap().is_dir() {
                true => std::fs::remove_dir(&journal).unwrap(),
                false => std::fs::remove_file(&journal).unwrap(),
            }
        }
    }
    // A -shm alone replays nothing: each writer makes its file.
    let rows = run(db, &["--json", "status"]).ok().json()["rows"].clone();
    std::fs::write(side(&dest, "-shm"), b"stale").unwrap();
    for args in &writers {
        run(db, args).ok();
        assert_eq!(run(&dest, &["--json", "status"]).ok().json()["rows"], rows, "{args:?}");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(side(&dest, suffix));
        }
        std::fs::write(side(&dest, "-shm"), b"stale").unwrap();
    }
}
}

on_both! {
/// A backup onto a full disk (a small tmpfs, in a private mount namespace) names the
/// destination as full, never the database, whose disk has room; nothing is left on the full
/// disk. Where no mount is allowed, the destination is filled by a file size limit instead.
fn a_backup_onto_a_full_disk_names_the_destination_not_the_database(t: TestDb) {
    let (dir, db) = (t.dir(), Path::new(t.location()));
    run(db, &["demo"]).ok();
    fill(t.db(), 1500);
    let mount = dir.join("small");
    std::fs::create_dir(&mount).unwrap();
    let listing = dir.join("listing");
    let dest = mount.join("copy.db");
    let out = mount.join("out.csv");
    let setup = r#"mount -t tmpfs -o size=128k tmpfs "$dir""#;
    let after = format!(r#"ls -A "$dir" > "{}""#, listing.display());
    let database_named = format!("database {}", db.display());
    let mut mounted = true;
    for args in [
        vec!["db", "backup", dest.to_str().unwrap()],
        vec!["audit", "export", "--format", "csv", "-o", out.to_str().unwrap()],
    ] {
        let Some(r) = in_mount_namespace(setup, &after, &mount, db, &args) else {
            mounted = false;
            break;
        };
        let target = args.last().unwrap();
        assert_refused(&r, target);
        assert!(!r.stderr.contains(&database_named), "{}", r.stderr);
        if args[0] == "db" {
            let full = format!("backup to {target} failed: the destination's disk is full");
            assert!(r.stderr.contains(&full), "{}", r.stderr);
        } else {
            assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
        }
        assert_eq!(std::fs::read_to_string(&listing).unwrap(), "", "{args:?} left files");
    }
    if !mounted {
        eprintln!("note: no tmpfs here; the destination is filled by a file size limit instead");
        let r = finish(
            Command::new("prlimit")
                .arg("--fsize=131072")
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_aigentflow"))
                .arg("--db")
                .arg(db)
                .args(["db", "backup", dest.to_str().unwrap()])
                .env_remove("AIGENTFLOW_DB")
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        );
        assert_refused(&r, &format!("backup to {} failed", dest.display()));
        assert!(!r.stderr.contains(&database_named), "{}", r.stderr);
        assert!(temps(&mount).is_empty());
    }
    assert!(!dest.exists());
    assert_eq!(run(db, &["--json", "db", "check"]).ok().json()["ok"], true);
}
}

/// A command whose stdout closes early (`… | head -1`) ends quietly with exit code 0, and the
/// database it wrote is closed on the way out: its file holds every row, with no `-wal` it
/// would need beside it (it used to exit on the spot, leaving the rows in the WAL).
#[test]
fn a_closed_stdout_ends_the_command_quietly_with_its_database_whole_on_sqlite() {
    let (dir, source) = demo_db();
    let rows = |db: &Path| run(db, &["--json", "status"]).ok().json()["rows"].clone();
    let expected = rows(&source);
    let cases: Vec<(PathBuf, Vec<String>)> = {
        let copy = dir.path().join("copy.db");
        let demo = dir.path().join("demo.db");
        vec![
            (copy.clone(), vec!["db".into(), "copy".into(), path_text(&source), path_text(&copy)]),
            (demo.clone(), vec!["--db".into(), path_text(&demo), "demo".into()]),
        ]
    };
    for (written, args, lines_read) in
        cases.into_iter().flat_map(|(w, a)| [(w.clone(), a.clone(), 0), (w, a, 1)])
    {
        let _ = std::fs::remove_file(&written);
        let _ = std::fs::remove_file(side(&written, "-wal"));
        let _ = std::fs::remove_file(side(&written, "-shm"));
        // The pipe closed before the first line, or after it (the command is mid-way then).
        let (reader, writer) = std::io::pipe().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_aigentflow"))
            .args(&args)
            .env_remove("AIGENTFLOW_DB")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(reader);
            for _ in 0..lines_read {
                let mut line = String::new();
                lines.read_line(&mut line).unwrap();
            }
        }
        let r = finish(child.wait_with_output().unwrap());
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(r.stderr.is_empty(), "{args:?}: {}", r.stderr);
        let wal = side(&written, "-wal");
        assert!(
            !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
            "{args:?}: -wal left"
        );
        // The file alone, elsewhere, holds it all.
        let alone = dir.path().join("alone.db");
        let _ = std::fs::remove_file(&alone);
        std::fs::copy(&written, &alone).unwrap();
        let got = rows(&alone);
        assert_eq!(got, rows(&written), "{args:?}");
        if args.contains(&"copy".to_owned()) {
            assert_eq!(got, expected, "{args:?}");
        }
    }
}

fn path_text(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

on_both! {
/// Every file the command reads by name is a regular file: a FIFO with no writer (which would
/// block the open forever), a device, or a folder is refused at once, in one line naming what
/// it is, for every reader: a workflow file, a head, a report, a public key, a signing key,
/// and a bundle. A bundle from a pipe comes on stdin (`-`), as before.
fn a_file_read_by_name_is_a_regular_file_and_a_fifo_is_never_waited_on(t: EmptyDb) {
    let (dir, db) = demo(t);
    let fifo = dir.join("nobody-writes");
    mkfifo(&fifo);
    let folder = dir.join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let key = dir.join("k.key");
    run(db, &["audit", "keygen", key.to_str().unwrap()]).ok();
    let report = dir.join("r.json");
    run(db, &["audit", "verify", "--report", report.to_str().unwrap()]).ok();
    let task = run(db, &["--json", "tasks", "list"]).ok().json()[0]["task_id"].as_str().unwrap().to_owned();
    let bundle = run(db, &["tasks", "export", &task, "-o", "-"]).ok().stdout;
    let (pubkey, report) = (format!("{}.pub", key.display()), report.display().to_string());
    let readers: [Vec<&str>; 6] = [
        vec!["workflow", "check", "PATH"],
        vec!["audit", "verify", "--head", "PATH"],
        vec!["audit", "check-report", "PATH", "--pubkey", &pubkey],
        vec!["audit", "check-report", &report, "--pubkey", "PATH"],
        vec!["audit", "verify", "--report", "-", "--sign", "PATH"],
        vec!["tasks", "import", "PATH"],
    ];
    for (input, what) in [(fifo.as_path(), "FIFO (named pipe)"), (Path::new("/dev/zero"), "device"), (&folder, "folder")] {
        for reader in &readers {
            let args: Vec<&str> =
                reader.iter().map(|a| if *a == "PATH" { input.to_str().unwrap() } else { a }).collect();
            let r = run_within_a_minute(db, &args);
            if args[0] == "workflow" {
                // `workflow check` reports a file's problems as its findings (exit 3).
                let said = String::from_utf8_lossy(&r.stdout);
                assert_eq!(r.code, 3, "{args:?}: {said}{}", r.stderr);
                assert!(said.contains(&format!("{what}, not a regular file")), "{args:?}: {said}");
            } else {
                assert_refused(&r, &format!("{what}, not a regular file"));
            }
        }
    }
    // `workflow load` reads a folder: anything else is named as no folder, at once.
    for input in [fifo.as_path(), Path::new("/dev/zero"), &key] {
        let r = run_within_a_minute(db, &["workflow", "load", input.to_str().unwrap()]);
        assert_refused(&r, "is not a folder");
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // From a pipe on stdin, a bundle still imports.
    let other = dir.join("other.db");
    run(&other, &["init"]).ok();
    let mut child = cmd(&other)
        .args(["tasks", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bundle).unwrap();
    let r = finish(child.wait_with_output().unwrap()).ok();
    let said = String::from_utf8_lossy(&r.stdout);
    assert!(said.contains("imported task"), "{said}");
}
}

/// Runs the command and, once a temporary file of its output is in `dir`, sends it `signal`
/// (`INT`, `TERM`); the run and the signal that ended it, `None` if it ended before a
/// temporary file was seen.
fn interrupted(db: &Path, args: &[&str], dir: &Path, signal: &str) -> Option<(Run, Option<i32>)> {
    let mut child = spawn(db, args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            finish(child.wait_with_output().unwrap());
            return None;
        }
        if !temps(dir).is_empty() {
            let sent = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(sent.success());
            let out = child.wait_with_output().unwrap();
            let by = std::os::unix::process::ExitStatusExt::signal(&out.status);
            return Some((finish(out), by));
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} made no temporary file within a minute");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A command interrupted by Ctrl-C or SIGTERM while it writes its output ends by that signal
/// (as a shell's loop or script must see it, to stop too) and leaves neither the output nor its
/// temporary file (nor a temporary database's journal): every kind of output, each signal. Each
/// command here waits for a table another session holds locked, after its temporary file is
/// made.
#[test]
fn an_output_interrupted_by_a_signal_leaves_no_file_on_postgres() {
    let Some(t) = EmptyDb::postgres() else { return };
    let (dir, db) = demo(&t);
    let task = run(db, &["--json", "tasks", "list"]).ok().json()[0]["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = dir.join("out");
    let out_arg = out.to_str().unwrap();
    let commands: [Vec<&str>; 5] = [
        vec!["audit", "export", "--format", "csv", "-o", out_arg],
        vec!["audit", "export", "--format", "jsonl", "-o", out_arg],
        vec!["tasks", "export", &task, "-o", out_arg],
        vec!["db", "backup", out_arg],
        vec!["db", "copy", t.location(), out_arg],
    ];
    let mut lock = aigentflow_testkit::Driver::of(&t);
    lock.batch("BEGIN; LOCK TABLE audit_logs, workflow_states, lessons IN ACCESS EXCLUSIVE MODE");
    for args in &commands {
        for (signal, number) in [("INT", 2), ("TERM", 15)] {
            let (r, by) = interrupted(db, args, dir, signal)
                .unwrap_or_else(|| panic!("{args:?} ended while the tables were locked"));
            assert_eq!(by, Some(number), "{args:?} {signal}: exit code {}, {}", r.code, r.stderr);
            assert!(!out.exists(), "{args:?} {signal}: the output exists");
            assert_eq!(temps(dir), Vec::<String>::new(), "{args:?} {signal}");
        }
    }
    lock.batch("ROLLBACK");
    // Left alone, each completes.
    for args in &commands {
        run(db, args).ok();
        std::fs::remove_file(&out).unwrap();
    }
}

/// A signal that comes after a command put its new file in place but before it finished (a
/// backup being checked) removes that file too, as it removes an unfinished one. Signals are
/// sent at 30 points spread over a backup's run, and past its end; whatever each hits, the
/// command either ended by the signal and left no file, or exited 0 and left the whole backup.
/// (Before, about one run in five ended by the signal with its backup in place, and running it
/// again failed on the file.)
#[test]
fn a_signal_before_a_backup_finished_leaves_no_file_and_a_finished_one_leaves_it_whole_on_sqlite() {
    let (dir, db) = demo_db();
    {
        let log = AuditLog::new(Database::open(db.to_str().unwrap()).unwrap());
        let filler = "plain filler text ".repeat(2500);
        let batch: Vec<AuditEntry> = (0..20)
            .map(|i| AuditEntry {
                details: Some(serde_json::json!({ "text": filler, "i": i })),
                ..AuditEntry::new("fill", Category::Agent)
            })
            .collect();
        for _ in 0..8 {
            log.log_batch(&batch).unwrap();
        }
    }
    let out = dir.path().join("bk.db");
    let out_arg = out.to_str().unwrap();
    let started = std::time::Instant::now();
    run(&db, &["db", "backup", out_arg]).ok();
    let whole = started.elapsed();
    std::fs::remove_file(&out).unwrap();
    for k in 0..30u32 {
        let child = spawn(&db, &["db", "backup", out_arg]);
        std::thread::sleep(whole * k / 24);
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let output = child.wait_with_output().unwrap();
        let (status, said) = (output.status, String::from_utf8_lossy(&output.stderr));
        let by = std::os::unix::process::ExitStatusExt::signal(&status);
        match (status.code(), by) {
            (Some(0), _) => {
                let check = run(&out, &["--json", "db", "check"]).ok().json();
                assert_eq!(check["ok"], true, "at {k}/24: {check}");
                for name in [out.clone(), side(&out, "-wal"), side(&out, "-shm")] {
                    let _ = std::fs::remove_file(name);
                }
            }
            (_, Some(15)) => {
                for name in [out.clone(), side(&out, "-wal"), side(&out, "-shm")] {
                    assert!(!name.exists(), "at {k}/24: ended by the signal, {name:?} left");
                }
            }
            other => panic!("at {k}/24: {other:?} {said}"),
        }
        assert_eq!(temps(dir.path()), Vec::<String>::new(), "at {k}/24");
    }
}
