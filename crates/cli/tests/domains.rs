//! R19, input domains: the built `aigentflow` binary given generated arguments at every
//! subcommand, found by walking `--help`. Pass marks for every run: no panic (exit code 101
//! never), exit code 0, 1, 2 or 3, exactly one line on stderr when it fails (clap's usage errors
//! included), and no character a terminal would act on in anything printed for people. Then the
//! repros of issue 12 §4 one by one, escape sequences with colour on, secrets in error lines,
//! and storage errors (lock, read-only folder and mount, full disk) as one line naming the path.
//!
//! `AIGENTFLOW_R19_CASES` sets the number of generated runs (300 by default; a fifth of that on
//! PostgreSQL, where every run connects to the server).
//!
//! Every test that is not about one backend runs on both (`on_both!`: `NAME::sqlite` on a
//! SQLite file, `NAME::postgres` on a fresh PostgreSQL database when `AIGENTFLOW_PG_URL` is
//! set); those about SQLite's file (its lock, permissions, mounts) end in `_on_sqlite`.
#![allow(clippy::unwrap_used)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;

use aigentflow_persistence::Backend;
use aigentflow_testkit::{on_both, Driver, EmptyDb, TestDb};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_aigentflow");

// ---- running the binary --------------------------------------------------------------------

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Run {
    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn out(&self) -> String {
        Self::text(&self.stdout)
    }

    fn err(&self) -> String {
        Self::text(&self.stderr)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.out(), self.err()))
    }
}

fn output(out: Output) -> Run {
    Run { code: out.status.code(), stdout: out.stdout, stderr: out.stderr }
}

/// The binary in `dir`, with no database variable, no colour setting and no backtrace setting
/// inherited from the test's environment.
fn bin(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_remove("AIGENTFLOW_DB")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    c
}

fn run_in(dir: &Path, args: &[&OsStr]) -> Run {
    output(bin(dir).args(args).output().unwrap())
}

/// `aigentflow --db DB ARGS…` in the database's folder (a server's database has none: then the
/// system's temporary folder).
fn run(db: &Path, args: &[&str]) -> Run {
    let dir = db.parent().filter(|d| d.is_dir()).map_or_else(std::env::temp_dir, Path::to_path_buf);
    let mut all: Vec<&OsStr> = vec![OsStr::new("--db"), db.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    run_in(&dir, &all)
}

fn ok(r: Run) -> Run {
    assert_eq!(r.code, Some(0), "stdout: {}\nstderr: {}", r.out(), r.err());
    r
}

/// A terminal acts on these rather than printing them: C0, DEL, C1, the bidi controls and
/// marks, and the line and paragraph separators.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// The characters of `text` a terminal would act on, line ends aside.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars().filter(|&c| c != '\n' && unsafe_char(c)).collect()
}

/// Exactly one line on stderr, with no panic and no raw control character.
fn assert_one_line(r: &Run, code: i32, needle: &str) {
    let err = r.err();
    assert_eq!(r.code, Some(code), "stdout: {}\nstderr: {err}", r.out());
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.ends_with('\n') && err.matches('\n').count() == 1, "one line: {err:?}");
    assert!(raw_controls(&err).is_empty(), "raw controls on stderr: {err:?}");
}

// ---- the command tree, from --help -----------------------------------------------------------

/// An option of a command, as its help lists it.
#[derive(Debug, Clone)]
struct Opt {
    long: String,
    /// The value name (`PATH`, `DATE`…), or None for a flag.
    value: Option<String>,
    /// Whether the usage line names it outside `[OPTIONS]`.
    required: bool,
    /// Whether every command takes it (`--db`, `--json`, `--quiet`…).
    global: bool,
}

/// A command that takes no subcommand, with what it takes.
#[derive(Debug, Clone)]
struct Leaf {
    path: Vec<String>,
    options: Vec<Opt>,
    /// Positional arguments: value name and whether it is required.
    positionals: Vec<(String, bool)>,
}

/// Every leaf command, walking `aigentflow [PATH] --help` from the top.
fn walk(dir: &Path, path: &[String], leaves: &mut Vec<Leaf>) {
    let mut args: Vec<&OsStr> = path.iter().map(OsStr::new).collect();
    args.push(OsStr::new("--help"));
    let help = ok(run_in(dir, &args)).out();
    let mut section = "";
    let (mut subcommands, mut options, mut positionals) = (Vec::new(), Vec::new(), Vec::new());
    let usage = help.lines().find(|l| l.starts_with("Usage: ")).unwrap_or_default();
    let required: Vec<&str> = usage.split_whitespace().filter(|w| w.starts_with("--")).collect();
    for line in help.lines() {
        if !line.starts_with(' ') {
            section = line.trim_end_matches(':');
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        match section {
            "Commands" if indent == 2 && *first != "help" => subcommands.push(first.to_string()),
            "Options" | "Global options" if indent <= 6 && first.starts_with('-') => {
                let Some(i) = words.iter().position(|w| w.starts_with("--")) else { continue };
                let long = words[i].trim_end_matches("...").trim_end_matches(',').to_string();
                if long == "--help" || long == "--version" {
                    continue;
                }
                let value = words
                    .get(i + 1)
                    .filter(|w| w.starts_with('<'))
                    .map(|w| w.trim_matches(|c| c == '<' || c == '>' || c == '.').to_string());
                let required = required.contains(&long.as_str());
                let global = section == "Global options";
                options.push(Opt { long, value, required, global });
            }
            "Arguments" if indent == 2 && (first.starts_with('<') || first.starts_with('[')) => {
                let name = first.trim_matches(|c| "<>[].".contains(c)).to_string();
                positionals.push((name, first.starts_with('<')));
            }
            _ => {}
        }
    }
    if subcommands.is_empty() {
        leaves.push(Leaf { path: path.to_vec(), options, positionals });
    }
    for sub in subcommands {
        let mut next = path.to_vec();
        next.push(sub);
        walk(dir, &next, leaves);
    }
}

// ---- fixtures shared by the generated runs ---------------------------------------------------

/// A folder of files that are no database of the test's (an empty database, text, a 0-byte
/// file, a folder), and every leaf command.
struct Fixture {
    dir: tempfile::TempDir,
    leaves: Vec<Leaf>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    ok(run(&dir.path().join("empty.db"), &["init"]));
    std::fs::write(dir.path().join("text.db"), b"not a database, only text, long enough").unwrap();
    std::fs::write(dir.path().join("zero.db"), b"").unwrap();
    std::fs::create_dir(dir.path().join("folder")).unwrap();
    let mut leaves = Vec::new();
    walk(dir.path(), &[], &mut leaves);
    Fixture { dir, leaves }
});

/// The database the generated runs mostly work on, filled by `aigentflow demo`: its `--db`
/// value (a path or a URL), and the ids that exist in it (task, trace, lessons).
struct Demo {
    db: OsString,
    ids: Vec<String>,
}

impl Demo {
    fn at(t: &EmptyDb) -> Self {
        let db = Path::new(t.location());
        let report = ok(run(db, &["--json", "demo"])).json();
        let mut ids = vec![
            report["task"].as_str().unwrap().to_owned(),
            report["trace"].as_str().unwrap().to_owned(),
        ];
        let lessons = ok(run(db, &["--json", "lessons", "search"])).json();
        ids.extend(
            lessons
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["lesson"]["id"].as_str().unwrap().to_owned()),
        );
        Self { db: db.as_os_str().to_owned(), ids }
    }
}

// ---- generated arguments ---------------------------------------------------------------------

/// Text a careless operator, a hurried script or an attacker might pass.
fn nasty_text() -> impl Strategy<Value = OsString> {
    let fixed: Vec<OsString> = [
        "",
        " ",
        "\t",
        ":memory:",
        "\u{1b}[31mred\u{1b}[0m",
        "\u{1b}]0;title\u{7}",
        "\u{9b}2J",
        "a\nb",
        "a\rb",
        "\u{7f}\u{0}\u{8}",
        "\u{202e}evil\u{2066}",
        "\u{E000}00000000000000000000000000000000031m",
        "{\"password\": \"hunter2\"",
        "{\"a\": [1, \"\u{1b}[1m\"]}",
        "null",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        "-",
        "--",
        "-1",
        "%s%n",
        "'; DROP TABLE audit_logs; --",
        "*",
        "\"unbalanced",
        "title:word OR",
        "user",
        "bug",
        "BUILDING",
        "x,y,,z",
    ]
    .iter()
    .map(OsString::from)
    .chain([OsString::from("x".repeat(20_000)), OsString::from("é".repeat(3000))])
    .collect();
    prop_oneof![
        4 => proptest::sample::select(fixed),
        2 => any::<String>().prop_map(OsString::from),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(OsString::from_vec),
    ]
}

fn number() -> impl Strategy<Value = OsString> {
    let fixed: Vec<&str> = vec![
        "0",
        "1",
        "3",
        "30",
        "700000",
        "700001",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "-9223372036854775809",
        "0.5",
        "1.5",
        "1e309",
        "NaN",
        "inf",
        "3600",
        "0.05",
    ];
    prop_oneof![
        4 => proptest::sample::select(fixed).prop_map(OsString::from),
        1 => any::<i64>().prop_map(|n| OsString::from(n.to_string())),
        1 => any::<u64>().prop_map(|n| OsString::from(n.to_string())),
    ]
}

fn date() -> impl Strategy<Value = OsString> {
    let fixed: Vec<&str> = vec![
        "9999-12-31",
        "9999-12-30",
        "0000-01-01",
        "+10000-01-01",
        "-0001-01-01",
        "2026-1-5",
        "2026-02-30",
        "2026-11-01T09:00:00Z",
        "9999-12-31T23:59:59-05:00",
        "2026-11-01 09:00",
        "yesterday",
    ];
    proptest::sample::select(fixed).prop_map(OsString::from)
}

/// A path inside the fixture's folder, the demo database (`db`, a path or a URL), or a name
/// that is no path at all.
fn path(base: PathBuf, db: OsString) -> impl Strategy<Value = OsString> {
    let names: Vec<OsString> = [
        "empty.db",
        "text.db",
        "zero.db",
        "folder",
        "missing.db",
        "folder/new.db",
        "text.db/under-a-file.db",
        "out.csv",
        "\u{1b}[31m.db",
        "a\nb.db",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    prop_oneof![
        6 => proptest::sample::select(names).prop_map(move |n| base.join(n).into_os_string()),
        1 => Just(db),
        1 => Just(OsString::from("")),
        1 => Just(OsString::from(":memory:")),
    ]
}

/// A value for an option or argument, by the name its help gives the value: one it takes
/// (an existing id of `demo`, a plain word, a number in range, a real date, a path in the
/// fixture's folder or the demo database) or, `nasty` times in (`nasty` + 4), one from the
/// generators above.
fn value_for(name: &str, demo: &Demo, base: &Path, nasty: u32) -> BoxedStrategy<OsString> {
    let valid: &[&str] = match name {
        "CATEGORY" => &["state", "file", "agent", "security", "user", "bug", "pattern"],
        "FORMAT" => &["csv", "json", "jsonl"],
        "DATE" => &["2026-1-5", "9999-12-31", "0000-01-01", "2026-11-01T09:00:00Z"],
        "LIMIT" | "OFFSET" | "DAYS" | "LEASE_MINUTES" | "MAX_ATTEMPTS" | "SECONDS" => {
            &["0", "1", "3", "30"]
        }
        "CONFIDENCE" => &["0", "0.5", "1"],
        _ => &["demo-project", "coder", "tester", "login", "max_retries", "3", "{\"a\":1}"],
    };
    let mut valid: Vec<OsString> = valid.iter().map(OsString::from).collect();
    if !matches!(name, "CATEGORY" | "FORMAT" | "DATE" | "CONFIDENCE") {
        valid.extend(demo.ids.iter().map(OsString::from));
    }
    let wild = match name {
        "PATH" | "FILE" | "DEST" | "SRC" => {
            let path = path(base.to_path_buf(), demo.db.clone());
            return prop_oneof![8 => path, nasty => nasty_text()].boxed();
        }
        "DATE" => prop_oneof![3 => date(), 1 => nasty_text()].boxed(),
        "LIMIT" | "OFFSET" | "DAYS" | "LEASE_MINUTES" | "MAX_ATTEMPTS" | "SECONDS"
        | "CONFIDENCE" => prop_oneof![4 => number(), 1 => nasty_text()].boxed(),
        _ => nasty_text().boxed(),
    };
    prop_oneof![4 => proptest::sample::select(valid), nasty => wild].boxed()
}

/// One generated command line and its environment.
#[derive(Debug, Clone)]
struct Case {
    /// The subcommand, e.g. `["audit", "query"]`.
    path: Vec<String>,
    args: Vec<OsString>,
    env_db: Option<OsString>,
    force_color: bool,
}

/// A command line at any leaf, mostly on the `demo` database.
fn case(demo: Demo) -> impl Strategy<Value = Case> {
    let fixture = &*FIXTURE;
    let base = fixture.dir.path().to_path_buf();
    let leaves = fixture.leaves.clone();
    let db = demo.db.clone();
    (
        proptest::sample::select(leaves),
        prop_oneof![3 => Just(db.clone()), 1 => path(base.clone(), db.clone())],
        proptest::option::weighted(0.15, path(base.clone(), db)),
        proptest::bool::weighted(0.8),
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.05),
        // Half the runs are careful (values nearly always in their domain, required options
        // given), so that most commands get past parsing; the other half are careless.
        proptest::bool::ANY,
    )
        .prop_flat_map(move |(leaf, db, env_db, with_db, force_color, stray, careful)| {
            let nasty = if careful { 1 } else { 6 };
            let value_for = |name: &str| value_for(name, &demo, &base, nasty);
            let options: Vec<BoxedStrategy<Vec<OsString>>> = leaf
                .options
                .iter()
                // A follower runs until it is stopped (tail.rs tests it).
                .filter(|o| o.long != "--db" && o.long != "--follow")
                .map(|o| {
                    let flag = OsString::from(&o.long);
                    let strategy = match &o.value {
                        None => Just(vec![flag]).boxed(),
                        Some(v) => {
                            value_for(v).prop_map(move |value| vec![flag.clone(), value]).boxed()
                        }
                    };
                    let keep = match (careful, o.required, o.global) {
                        (true, true, _) => 0.999,
                        (_, _, true) => 0.15,
                        _ => 0.4,
                    };
                    proptest::option::weighted(keep, strategy)
                        .prop_map(Option::unwrap_or_default)
                        .boxed()
                })
                .collect();
            let positionals: Vec<BoxedStrategy<Vec<OsString>>> = leaf
                .positionals
                .iter()
                .map(|(name, required)| {
                    let value = value_for(name).prop_map(|v| vec![v]);
                    let keep = if *required { 0.95 } else { 0.5 };
                    proptest::option::weighted(keep, value)
                        .prop_map(Option::unwrap_or_default)
                        .boxed()
                })
                .collect();
            let path = leaf.path.clone();
            (options, positionals).prop_map(move |(options, positionals)| {
                let mut args: Vec<OsString> = path.iter().map(OsString::from).collect();
                if with_db {
                    args.extend([OsString::from("--db"), db.clone()]);
                }
                args.extend(options.into_iter().flatten());
                args.extend(positionals.into_iter().flatten());
                if stray {
                    args.push(OsString::from("--no-such-flag"));
                }
                // An argument cannot hold a NUL byte: the OS takes C strings.
                let args = args.into_iter().map(without_nul).collect();
                let env_db = env_db.clone().map(without_nul);
                Case { path: path.clone(), args, env_db, force_color }
            })
        })
}

fn without_nul(text: OsString) -> OsString {
    OsString::from_vec(text.into_vec().into_iter().filter(|&b| b != 0).collect())
}

/// The pass marks of one run.
fn check(case: &Case, r: &Run) -> Result<(), TestCaseError> {
    let shown = || format!("{case:?}\nstdout: {}\nstderr: {}", r.out(), r.err());
    let code =
        r.code.ok_or_else(|| TestCaseError::fail(format!("killed by a signal: {}", shown())))?;
    prop_assert!(code != 101 && !r.err().contains("panicked"), "panic: {}", shown());
    prop_assert!((0..=3).contains(&code), "exit code {code}: {}", shown());
    let err = r.err();
    if code == 1 || code == 2 {
        prop_assert_eq!(err.matches('\n').count(), 1, "one line on stderr: {}", shown());
        prop_assert!(err.starts_with("aigentflow: error: "), "{}", shown());
    }
    prop_assert!(raw_controls(&err).is_empty(), "raw controls on stderr: {}", shown());
    let has = |flag: &str| case.args.iter().any(|a| a == flag);
    let path: Vec<&str> = case.path.iter().map(String::as_str).collect();
    // An export on stdout is a CSV or JSON file, and a backup to `-` a database file: bytes
    // written as they are, escape bytes included.
    let data_format = (path == ["audit", "export"] && !has("-o") && !has("--output"))
        || (path == ["db", "backup"] && has("-"));
    let json = has("--json") || path == ["audit", "head"];
    let out = r.out();
    if data_format {
        // Written byte for byte (see above).
    } else if json {
        // serde escapes every C0 control in JSON strings; JSON is printed as serde writes it.
        let c0: Vec<char> = out.chars().filter(|&c| c != '\n' && c < ' ').collect();
        prop_assert!(c0.is_empty(), "raw C0 in JSON: {}", shown());
        if code == 0 {
            prop_assert!(serde_json::from_str::<Value>(&out).is_ok(), "not JSON: {}", shown());
        }
    } else {
        let plain = strip_own_colours(&out)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", shown())))?;
        if !case.force_color {
            prop_assert_eq!(&plain, &out, "colour without a terminal: {}", shown());
        }
        prop_assert!(raw_controls(&plain).is_empty(), "raw controls on stdout: {}", shown());
    }
    Ok(())
}

/// `text` without the SGR codes the CLI paints (green, red, bold, reset); any other escape
/// sequence is an error.
fn strip_own_colours(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\u{1b}') {
        out.push_str(&rest[..at]);
        let seq = &rest[at..];
        let own = ["\u{1b}[32m", "\u{1b}[31m", "\u{1b}[1m", "\u{1b}[0m"]
            .into_iter()
            .find(|code| seq.starts_with(code))
            .ok_or_else(|| {
                format!("an escape sequence the CLI did not paint: {:?}", &seq[..seq.len().min(12)])
            })?;
        rest = &seq[own.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How many generated runs: `AIGENTFLOW_R19_CASES` (300 by default) on SQLite, a fifth of it on
/// PostgreSQL (each run connects to the server; the commands' code is the same).
fn cases(backend: Backend) -> u32 {
    let cases =
        std::env::var("AIGENTFLOW_R19_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    match backend {
        Backend::Sqlite => cases,
        Backend::Postgres => cases.div_ceil(5),
    }
}

on_both! {
/// Generated arguments at every subcommand: no panic, exit code 0 to 3, one line on stderr on
/// error, nothing on stdout or stderr that a terminal would act on.
fn generated_arguments_at_every_subcommand_never_panic_and_fail_in_one_clean_line(t: EmptyDb) {
    let fixture = &*FIXTURE;
    let names: Vec<String> = fixture.leaves.iter().map(|l| l.path.join(" ")).collect();
    for expected in
        ["init", "audit query", "lessons update", "traces metrics", "config set", "db backup"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} not found in {names:?}");
    }
    assert!(names.len() >= 30, "{names:?}");
    let config =
        Config { cases: cases(t.backend()), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let codes = std::cell::RefCell::new(std::collections::BTreeMap::<i32, u32>::new());
    let result = runner.run(&case(Demo::at(t)), |case| {
        let mut cmd = bin(fixture.dir.path());
        cmd.args(&case.args);
        if let Some(db) = &case.env_db {
            cmd.env("AIGENTFLOW_DB", db);
        }
        if case.force_color {
            cmd.env("CLICOLOR_FORCE", "1");
        }
        let r = output(cmd.output().map_err(|e| TestCaseError::fail(e.to_string()))?);
        *codes.borrow_mut().entry(r.code.unwrap_or(-1)).or_default() += 1;
        check(&case, &r)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // How deep the runs went: a run refused at parsing never reaches a store.
    eprintln!("runs per exit code: {:?}", codes.borrow());
}
}

// ---- the repros of issue 12 §4 ---------------------------------------------------------------

/// A database whose audit entries are stamped at the given instants (the CLI stamps with the
/// system clock, so the library writes them).
fn audit_at(path: &str, stamps: &[&str]) {
    use aigentflow_audit::{AuditEntry, AuditLog, Category};
    use aigentflow_persistence::{time, Database, ManualClock, Options};
    for stamp in stamps {
        let start = time::parse(stamp).unwrap();
        let clock = std::sync::Arc::new(ManualClock::new(start, chrono::TimeDelta::zero()));
        let db = Database::open_with(path, Options { clock, ..Options::default() }).unwrap();
        AuditLog::new(db.clone()).log(&AuditEntry::new(*stamp, Category::User)).unwrap();
        db.close().unwrap();
    }
}

on_both! {
/// Date bounds at the ends of years 0000 to 9999 and in any spelling, and any u64 offset or
/// limit, give the right rows; a year the stored form cannot hold is one line, exit code 1.
fn audit_query_bounds_give_the_right_rows_or_one_line(t: EmptyDb) {
    let db = Path::new(t.location());
    audit_at(
        t.location(),
        &[
            "0000-01-01 00:00:00.000",
            "2026-01-05 10:00:00.000",
            "2026-01-05 23:59:59.999",
            "2026-01-06 00:00:00.000",
            "9999-12-31 23:59:59.999",
        ],
    );
    let actions = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--json", "audit", "query"];
        all.extend(args);
        let rows = ok(run(db, &all)).json();
        rows.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_owned()).collect()
    };
    let n = |args: &[&str]| actions(args).len();
    assert_eq!(n(&["--end", "9999-12-31"]), 5, "the last day of 9999 is a whole day");
    assert_eq!(n(&["--end", "9999-12-30"]), 4);
    assert_eq!(n(&["--start", "9999-12-31"]), 1);
    assert_eq!(n(&["--start", "0000-01-01", "--end", "0000-1-1"]), 1);
    for day in ["2026-1-5", "2026-01-5", "2026-1-05", "2026-01-05", " 2026-1-5 "] {
        assert_eq!(n(&["--start", day, "--end", day]), 2, "{day:?} is the whole day");
        assert_eq!(n(&["--end", day]), 3, "{day:?}");
    }
    assert_eq!(n(&["--end", "2026-01-05T10:00:00Z"]), 2, "an instant is an instant");
    for offset in ["9223372036854775807", "9223372036854775808", "18446744073709551615"] {
        assert_eq!(n(&["--offset", offset]), 0, "offset {offset} skips every row");
    }
    for limit in ["9223372036854775808", "18446744073709551615"] {
        assert_eq!(n(&["--limit", limit]), 5, "limit {limit} is no limit");
    }
    assert_eq!(actions(&["--limit", "1", "--offset", "1"]), ["2026-01-06 00:00:00.000"]);
    for (flag, value) in [
        ("--start", "+10000-01-01"),
        ("--end", "+10000-01-01"),
        ("--start", "-0001-12-31"),
        ("--end", "9999-12-31T23:00:00-05:00"),
        ("--start", "2026-02-30"),
        ("--end", ""),
    ] {
        // `--end=VALUE`: a value starting with '-' is otherwise taken for a flag.
        let r = run(db, &["audit", "query", &format!("{flag}={value}")]);
        assert_one_line(&r, 1, flag);
        assert!(r.stdout.is_empty());
    }
}
}

on_both! {
/// A time in a leap second (`23:59:60`, which no stored time is in) given to any time flag of
/// any command (every option whose value `--help` names DATE) is refused at the argument: one
/// line naming the flag and the leap second, exit code 1 as for any date outside its domain,
/// nothing printed, nothing stored, never a database error.
fn a_leap_second_is_refused_at_every_time_flag(t: EmptyDb) {
    let fixture = &*FIXTURE;
    let db = Path::new(t.location());
    ok(run(db, &["init"]));
    let before = Driver::of(t).dump();
    let mut flags = std::collections::BTreeSet::new();
    for leaf in &fixture.leaves {
        for opt in leaf.options.iter().filter(|o| o.value.as_deref() == Some("DATE")) {
            for leap in ["2026-12-31T23:59:60Z", "2016-12-31 23:59:60.5", "2017-01-01T00:59:60+01:00"]
            {
                let mut args: Vec<&str> = leaf.path.iter().map(String::as_str).collect();
                args.push(&opt.long);
                args.push(leap);
                let r = run(db, &args);
                assert_one_line(&r, 1, &opt.long);
                assert!(r.err().contains("leap second"), "{args:?}: {}", r.err());
                assert!(!r.err().contains("database"), "{args:?}: {}", r.err());
                assert!(r.stdout.is_empty(), "{args:?}: {}", r.out());
            }
            flags.insert(format!("{} {}", leaf.path.join(" "), opt.long));
        }
    }
    for flag in [
        "audit query --start",
        "audit query --end",
        "audit export --start",
        "audit export --end",
        "audit stats --start",
        "audit stats --end",
        "traces cost --since",
        "traces cost --until",
    ] {
        assert!(flags.contains(flag), "{flag} not found among {flags:?}");
    }
    assert_eq!(Driver::of(t).dump(), before, "nothing stored");
}
}

on_both! {
/// The widest windows of --days either answer or are one line; nothing panics.
fn traces_metrics_days_out_of_range_is_one_line_not_a_panic(t: EmptyDb) {
    let db = Path::new(t.location());
    ok(run(db, &["init"]));
    for days in ["0", "1", "700000"] {
        ok(run(db, &["traces", "metrics", "--agent", "coder", "--days", days]));
    }
    // A whole number outside the domain (negative, or any size past it) is exit 1; anything
    // that is not a whole number is a usage error, exit 2.
    for days in ["700001", "4294967295", "18446744073709551615", "18446744073709551616", "-1"] {
        let r = run(db, &["traces", "metrics", "--agent", "coder", "--days", days]);
        assert_one_line(&r, 1, "--days");
    }
    for days in ["x", "1.5", "1e3"] {
        let r = run(db, &["traces", "metrics", "--agent", "coder", "--days", days]);
        assert_one_line(&r, 2, "");
    }
}
}

/// `:memory:` and an empty path are refused from --db and from $AIGENTFLOW_DB, in one line
/// naming where it came from; an empty variable counts as unset.
#[test]
fn a_database_path_that_names_no_file_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = ["audit", "log", "--action", "kept?", "--category", "user"];
    for (flag, env, needle) in [
        (Some(":memory:"), None, "--db is :memory:"),
        (Some(""), None, "--db is empty"),
        (None, Some(":memory:"), "$AIGENTFLOW_DB is :memory:"),
        (Some(":memory:"), Some("elsewhere.db"), "--db is :memory:"),
    ] {
        for command in [&log[..], &["init"], &["status"], &["demo"]] {
            let mut cmd = bin(dir.path());
            if let Some(flag) = flag {
                cmd.args(["--db", flag]);
            }
            if let Some(env) = env {
                cmd.env("AIGENTFLOW_DB", env);
            }
            let r = output(cmd.args(command).output().unwrap());
            assert_one_line(&r, 1, needle);
            assert!(r.stdout.is_empty(), "{command:?}: {}", r.out());
        }
    }
    let r = output(bin(dir.path()).env("AIGENTFLOW_DB", "").arg("status").output().unwrap());
    assert_one_line(&r, 1, "no database at orchestrator-data/aigentflow.db");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created");
}

on_both! {
/// The one rule for names and ids: at every option and argument that names something, an empty
/// or blank value is one line, exit code 1, and nothing is stored.
fn an_empty_name_or_id_is_refused_at_every_option_and_argument(t: EmptyDb) {
    let fixture = &*FIXTURE;
    // Values whose domain is not a name: paths, dates, numbers, words from a list, JSON, the
    // search words and a configuration value (where "" is a value).
    let not_names = [
        "PATH",
        "FILE",
        "KEYFILE",
        "PUBFILE",
        "DIR",
        "DEST",
        "SRC",
        "DATE",
        "LIMIT",
        "OFFSET",
        "DAYS",
        "LEASE_MINUTES",
        "MAX_ATTEMPTS",
        "SECONDS",
        "CONFIDENCE",
        "CATEGORY",
        "SEVERITY",
        "MIN_SEVERITY",
        "OUTCOME",
        "TOP",
        "JSON",
        "FORMAT",
        "GROUP",
        "MONTH",
        "DETAILS",
        "QUERY",
        "VALUE",
    ];
    let db = Path::new(t.location());
    ok(run(db, &["init"]));
    let before = Driver::of(t).dump();
    let mut checked = 0;
    for leaf in &fixture.leaves {
        let mut slots: Vec<(Option<&str>, &str)> = leaf
            .options
            .iter()
            .filter_map(|o| Some((Some(o.long.as_str()), o.value.as_deref()?)))
            .collect();
        slots.extend(leaf.positionals.iter().map(|(name, _)| (None, name.as_str())));
        for (flag, value_name) in slots {
            if not_names.contains(&value_name) {
                continue;
            }
            for blank in ["", "  ", "\t"] {
                let mut args: Vec<&str> = leaf.path.iter().map(String::as_str).collect();
                args.extend(flag);
                args.push(blank);
                let r = run(db, &args);
                assert_one_line(&r, 1, "it is empty");
                checked += 1;
            }
        }
    }
    assert!(checked >= 3 * 40, "{checked} slots");
    assert_eq!(Driver::of(t).dump(), before, "nothing stored");
    let rows = ok(run(db, &["--json", "audit", "query"])).json();
    assert_eq!(rows.as_array().unwrap().len(), 0, "nothing stored");
}
}

on_both! {
/// `lessons update --project ""` is refused and keeps the project; `--global` clears it; the
/// help of update promises no default it does not apply.
fn lessons_update_refuses_an_empty_project_and_clears_it_with_global(t: EmptyDb) {
    let db = Path::new(t.location());
    ok(run(db, &["init"]));
    let add = ["lessons", "add", "--category", "bug", "--title", "t", "--summary", "s"];
    let id = ok(run(db, &[&add[..], &["--project", "p"]].concat())).out().trim().to_owned();
    let project = || ok(run(db, &["--json", "lessons", "show", &id])).json()["project_id"].clone();
    assert_one_line(&run(db, &["lessons", "update", &id, "--project", ""]), 1, "--project");
    assert_eq!(project(), "p");
    ok(run(db, &["lessons", "update", &id, "--confidence", "0.5"]));
    assert_eq!(project(), "p", "an update without --project keeps it");
    let shown = ok(run(db, &["--json", "lessons", "show", &id])).json();
    assert_eq!(shown["confidence"], 0.5, "and no default confidence is applied");
    ok(run(db, &["lessons", "update", &id, "--global"]));
    assert_eq!(project(), Value::Null);
    assert_one_line(
        &run(db, &["lessons", "update", &id, "--project", "q", "--global"]),
        2,
        "--global",
    );
    let update_help = ok(run(db, &["lessons", "update", "--help"])).out();
    assert!(
        !update_help.contains("default 1") && !update_help.contains("left out: 1"),
        "{update_help}"
    );
    assert!(update_help.contains("--global"), "{update_help}");
    let add_help = ok(run(db, &["lessons", "add", "--help"])).out();
    assert!(add_help.contains("left out: 1"), "{add_help}");
}
}

// ---- terminal safety ---------------------------------------------------------------------------

/// What a hostile value holds: CSI and OSC sequences, a one-byte CSI, bidi overrides, line
/// breaks, and a forged colour mark without the process's nonce.
const PAYLOAD: &str = "pay\u{1b}[31mRED\u{1b}]0;title\u{7}\u{9b}2J\u{202e}RTL\u{2066}\r\nline\t\u{7f}\u{E000}0123456789abcdef0123456789abcdef31mload";

/// The payload in every field of every store that a command prints.
fn hostile_db(db: &aigentflow_persistence::Database) {
    use aigentflow_audit::{AuditEntry, AuditLog, Category};
    use aigentflow_core_states::{Event, StateContext, StateMachine, StateStore};
    use aigentflow_lessons::{Category as Kind, LessonsStore, NewLesson};
    use aigentflow_persistence::{ConfigStore, Scope, SqliteStateStore};
    use aigentflow_tracker::{ExecutionTracker, NewInvocation};
    let p = PAYLOAD;
    let mut machine = StateMachine::new(StateContext::new(p.into(), p.into(), p));
    machine.apply(Event::Start, None).unwrap();
    SqliteStateStore::new(db.clone()).save_state(machine.persisted()).unwrap();
    let entry = AuditEntry {
        project_id: Some(p.into()),
        task_id: Some(p.into()),
        agent: Some(p.into()),
        user_id: Some(p.into()),
        ip_address: Some(p.into()),
        details: Some(serde_json::json!({ p: p })),
        ..AuditEntry::new(p, Category::User)
    };
    AuditLog::new(db.clone()).log(&entry).unwrap();
    let lesson = NewLesson {
        project_id: Some(p.into()),
        details: Some(p.into()),
        tags: vec![p.into()],
        source_agent: Some(p.into()),
        source_file: Some(p.into()),
        ..NewLesson::new(Kind::Bug, p, p)
    };
    LessonsStore::new(db.clone()).create(&lesson).unwrap();
    ConfigStore::new(db.clone()).set(p, &Scope::Global, &serde_json::json!(p)).unwrap();
    let tracker = ExecutionTracker::new(db.clone());
    let trace = tracker.start_trace(&p.into(), &p.into(), p).unwrap();
    let invocation = NewInvocation {
        task_fragment: Some(p.into()),
        output_summary: Some(p.into()),
        error: Some(p.into()),
        ..NewInvocation::new(trace.id.clone(), p, db.now())
    };
    tracker.record_invocation(&invocation).unwrap();
}

on_both! {
/// With colour forced on, every read command prints the hostile values escaped: the only
/// escape sequences on stdout are the CLI's own colours, a forged mark stays text, and error
/// lines that quote a value escape it too.
fn stored_escape_sequences_are_shown_escaped_even_with_colour_on(t: TestDb) {
    let (dir, db) = (t.dir(), Path::new(t.location()));
    hostile_db(t.db());
    let trace =
        ok(run(db, &["--json", "traces", "list"])).json()[0]["id"].as_str().unwrap().to_owned();
    let lesson =
        ok(run(db, &["--json", "lessons", "top"])).json()[0]["id"].as_str().unwrap().to_owned();
    let coloured = |args: &[&str]| {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--db"), db.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        output(bin(dir).env("CLICOLOR_FORCE", "1").args(all).output().unwrap())
    };
    let mut painted = false;
    for args in [
        &["status"][..],
        &["tasks", "list"],
        &["tasks", "show", PAYLOAD],
        &["tasks", "resumable"],
        &["audit", "query"],
        &["audit", "summary", "--project", PAYLOAD],
        &["audit", "verify"],
        &["lessons", "search", "line"],
        &["lessons", "search"],
        &["lessons", "show", &lesson],
        &["lessons", "top"],
        &["traces", "list"],
        &["traces", "show", &trace],
        &["traces", "metrics", "--agent", PAYLOAD],
        &["config", "list"],
        &["config", "get", PAYLOAD],
        &["db", "check"],
        &["tasks", "list", "--state", PAYLOAD],
    ] {
        let r = ok(coloured(args));
        let out = r.out();
        let plain = strip_own_colours(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}"));
        assert!(raw_controls(&plain).is_empty(), "{args:?}: {out:?}");
        assert!(raw_controls(&r.err()).is_empty(), "{args:?}: {:?}", r.err());
        assert!(!plain.contains("\u{202e}") && !plain.contains('\u{9b}'), "{args:?}");
        // Escaped by the CLI (a state name upper-cased), or (a configuration value is printed
        // as JSON text) by JSON.
        let quoted = ["pay\\u{1b}[31mRED", "pay\\u001b[31mRED", "PAY\\u{1b}[31MRED"]
            .iter()
            .any(|shown| out.contains(shown) || r.err().contains(shown));
        assert!(
            quoted || ["status", "audit", "db"].contains(&args[0]),
            "{args:?} shows no payload: {out}"
        );
        painted |= out != plain;
        let may_paint =
            matches!(args, ["db", ..] | ["audit", "verify"] | ["lessons", "search", ..]);
        if !may_paint {
            assert_eq!(out, plain, "{args:?} paints no colour, whatever the data holds");
        }
    }
    assert!(painted, "colour was on");
    // JSON is for programs: the same values come out of --json as stored, in valid JSON.
    let rows = ok(coloured(&["--json", "audit", "query"])).json();
    assert_eq!(rows[0]["action"], PAYLOAD);
    assert_eq!(rows[0]["details"][PAYLOAD], PAYLOAD);
    assert_eq!(ok(coloured(&["--json", "lessons", "top"])).json()[0]["title"], PAYLOAD);
    for args in [&["tasks", "show", "\u{1b}[2Jgone"][..], &["lessons", "show", "\u{9b}6n"]] {
        let r = coloured(args);
        assert_one_line(&r, 1, "not found");
        assert!(r.err().contains("\\u{"), "{:?}", r.err());
    }
}
}

on_both! {
/// An error line never repeats a secret from the input: the text of a bad --details is not
/// quoted at all, and what is quoted (clap's invalid values, unknown ids) is redacted.
fn error_lines_never_echo_a_secret_from_the_input(t: EmptyDb) {
    let db = Path::new(t.location());
    ok(run(db, &["init"]));
    let anthropic = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    let github = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let log = ["audit", "log", "--action", "a", "--category", "user", "--details"];
    for (args, secret) in [
        ([&log[..], &["{\"password\": \"hunter2\""]].concat(), "hunter2"),
        ([&log[..], &[format!("{{\"key\": \"{anthropic}").as_str()]].concat(), anthropic),
        ([&log[..], &["password=hunter2 and more"]].concat(), "hunter2"),
        (vec!["audit", "log", "--action", "a", "--category", "user", "--severity", anthropic], anthropic),
        (vec!["audit", "query", "--outcome", anthropic], anthropic),
        (vec!["audit", "log", "--action", "a", "--category", "user", "--before", &format!("{{\"k\": \"{anthropic}")], anthropic),
        (vec!["tasks", "show", github], github),
        (vec!["lessons", "show", aws], aws),
        (vec!["traces", "show", anthropic], anthropic),
        (vec!["config", "get", "password=hunter2"], "hunter2"),
        (vec!["audit", "query", "--start", github], github),
    ] {
        let r = run(db, &args);
        assert!(r.code == Some(1) || r.code == Some(2), "{args:?}: {}", r.err());
        assert_eq!(r.err().matches('\n').count(), 1, "{args:?}: {}", r.err());
        assert!(!r.err().contains(secret), "{args:?} echoed the secret: {}", r.err());
    }
}
}

// ---- storage errors -----------------------------------------------------------------------------

on_both! {
/// A lock held past --lock-timeout is one line naming the database and the wait (the slow
/// transaction warning, a second line, is not printed for a write that gave up). The holder
/// blocks writes and lets reads through: SQLite's write lock, or on PostgreSQL the tables the
/// commands write locked in EXCLUSIVE mode (the server then ends its session should a write
/// wait without end, and the test fails rather than hangs).
fn a_lock_held_past_the_timeout_is_one_line_naming_the_database(t: EmptyDb) {
    let db = Path::new(t.location());
    ok(run(db, &["init"]));
    let mut holder = Driver::of(t);
    holder.batch(match t.backend() {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => {
            "SET idle_in_transaction_session_timeout = '60s';
             BEGIN; LOCK TABLE audit_head, configurations, lessons IN EXCLUSIVE MODE"
        }
    });
    for command in [
        &["audit", "log", "--action", "a", "--category", "user"][..],
        &["config", "set", "k", "1"],
        &["lessons", "add", "--category", "bug", "--title", "t", "--summary", "s"],
    ] {
        let r = run(db, &[&["--lock-timeout", "0.8"][..], command].concat());
        let expected = format!("database {} is locked by another process (waited ", db.display());
        assert_one_line(&r, 1, &expected);
        // The wait as measured: at least the timeout (shown to a tenth), more on a busy machine.
        let line = r.err().to_owned();
        let waited = line.split("(waited ").nth(1).and_then(|w| w.split(" s)").next());
        let waited: f64 =
            waited.and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("{}", r.err()));
        assert!(waited >= 0.8, "{}", r.err());
        assert!(!r.err().contains("slow transaction"), "{}", r.err());
    }
    ok(run(db, &["--json", "audit", "query"]));
    holder.batch("COMMIT");
    ok(run(db, &["--lock-timeout", "0", "audit", "log", "--action", "a", "--category", "user"]));
}
}

/// Whether this process runs as root (who may write any file whatever its mode).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

/// The binary as an unprivileged user: `setpriv` when root, the binary itself otherwise; None
/// when root has no `setpriv`.
fn unprivileged(dir: &Path) -> Option<Command> {
    if !is_root() {
        return Some(bin(dir));
    }
    let works = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    works.then(|| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .current_dir(dir)
            .env_remove("AIGENTFLOW_DB")
            .env_remove("RUST_BACKTRACE");
        c
    })
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A write to a database in a read-only folder, or to a read-only file, is one line naming the
/// path and what to change; reading works. Run as an unprivileged user (root is not held back
/// by permissions); where none can be had the mapping is covered by persistence's
/// `the_cause_of_a_refused_write_is_told_from_what_access_answers`, and this says so.
#[test]
fn a_read_only_folder_or_file_is_one_line_saying_what_to_change_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let Some(_) = unprivileged(dir.path()) else {
        eprintln!(
            "note: root without setpriv: read-only folders are covered by the mapping test only"
        );
        return;
    };
    let log = ["audit", "log", "--action", "a", "--category", "user"];
    for (case, folder_mode, file_mode, needle) in [
        ("folder", 0o555, 0o666, "is read-only, and SQLite keeps its -wal and -shm files there"),
        ("file", 0o777, 0o444, "the file is read-only"),
    ] {
        let folder = dir.path().join(case);
        std::fs::create_dir(&folder).unwrap();
        let db = folder.join("a.db");
        ok(run(&db, &["init"]));
        chmod(&db, file_mode);
        chmod(&folder, folder_mode);
        let as_user = |args: &[&str]| {
            let mut cmd = unprivileged(dir.path()).unwrap();
            output(cmd.arg("--db").arg(&db).args(args).output().unwrap())
        };
        let r = as_user(&log);
        assert_one_line(&r, 1, &format!("database {} cannot be written: ", db.display()));
        assert!(r.err().contains(needle), "{case}: {}", r.err());
        ok(as_user(&["status"]));
        chmod(&folder, 0o755);
    }
}

/// On a file system mounted read-only, and on a full one, a write is one line naming the
/// database and what to do. Needs a mount namespace (root with `unshare`); without one this
/// says so, and persistence's `a_write_that_finds_no_room_is_disk_full_naming_the_file` and
/// the mapping test cover the classification.
#[test]
fn a_read_only_mount_or_a_full_disk_is_one_line_saying_what_to_do_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs \"$0\"", mnt.to_str().unwrap()])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("note: no mount namespace here: read-only mounts and full disks are covered by the persistence tests only");
        return;
    }
    // In a private mount namespace: a 1 MB tmpfs, a database on it, writes of 64 KiB until
    // one fails; then the mount read-only, a write and a read.
    let script = r#"
        set -u
        mount -t tmpfs -o size=1m tmpfs "$MNT" || exit 90
        "$BIN" --db "$MNT/a.db" init > /dev/null || exit 91
        i=0
        while [ $i -lt 200 ]; do
            "$BIN" --db "$MNT/a.db" audit log --action fill --category user --details "$BIG" \
                > /dev/null 2> "$OUT/full.err"
            rc=$?
            [ $rc -ne 0 ] && break
            i=$((i + 1))
        done
        echo $rc > "$OUT/full.rc"
        mount -o remount,ro "$MNT" || exit 92
        "$BIN" --db "$MNT/a.db" audit log --action x --category user > /dev/null 2> "$OUT/ro.err"
        echo $? > "$OUT/ro.rc"
        "$BIN" --db "$MNT/a.db" status > /dev/null 2> "$OUT/read.err"
        echo $? > "$OUT/read.rc"
    "#;
    let big = format!("\"{}\"", "x".repeat(64 * 1024));
    let status = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .env("MNT", &mnt)
        .env("BIN", BIN)
        .env("OUT", dir.path())
        .env("BIG", big)
        .env_remove("AIGENTFLOW_DB")
        .env_remove("RUST_BACKTRACE")
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let db = mnt.join("a.db");
    for (rc, err, needle) in [
        ("full.rc", "full.err", "cannot grow: the disk is full; free some space"),
        ("ro.rc", "ro.err", "its file system is mounted read-only"),
    ] {
        assert_eq!(read(rc).trim(), "1", "{err}: {}", read(err));
        let err = read(err);
        assert!(
            err.starts_with(&format!("aigentflow: error: database {} ", db.display())),
            "{err}"
        );
        assert!(err.contains(needle) && err.matches('\n').count() == 1, "{err}");
    }
    assert_eq!(
        read("read.rc").trim(),
        "0",
        "a read-only mount is still readable: {}",
        read("read.err")
    );
}
