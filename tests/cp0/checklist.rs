//! `scripts/cp0-checklist.sh`, the gate of `just test-cp0`: a column per backend for each item,
//! green only when every mapped test ran and passed on each backend it applies to, and failing
//! on a test that failed or did not run. Fed saved `cargo test` output (`--from-log`).

use std::path::Path;
use std::process::Command;

/// The output of every kind of test the checklist meets: both variants of `on_both!` tests
/// (passing, one failing, one missing), plain tests, and PostgreSQL-only ones.
const LOG: &str = "\
running 7 tests
test m::both::sqlite ... ok
test m::both::postgres ... ok
test m::plain_on_sqlite ... ok
test m::only_on_postgres ... ok
test m::pg_fails::sqlite ... ok
test m::pg_fails::postgres ... FAILED
test m::half::sqlite ... ok
test result: FAILED. 6 passed; 1 failed
";

const CHECKLIST: &str = "\
# a comment
[Group]
Both pass | m::both
Plain sqlite | m::plain_on_sqlite
PG only | m::only_on_postgres
Mixed | m::both, m::plain_on_sqlite, m::only_on_postgres
PG fails | m::pg_fails
Not run | m::absent
Half run | m::half
Not built |
";

/// Runs the script on `log` and `checklist`, with or without a server URL; its exit status and
/// stdout.
fn gate(log: &str, checklist: &str, pg_url: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (log_path, list_path) = (dir.path().join("test.log"), dir.path().join("list.txt"));
    std::fs::write(&log_path, log).unwrap();
    std::fs::write(&list_path, checklist).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cp0-checklist.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg("--from-log").arg(&log_path).arg(&list_path);
    cmd.current_dir(dir.path()).env_remove("AIGENTFLOW_PG_URL");
    if let Some(url) = pg_url {
        cmd.env("AIGENTFLOW_PG_URL", url);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.success(), stdout)
}

fn assert_lines(out: &str, expected: &[&str]) {
    for line in expected {
        assert!(out.lines().any(|l| l == *line), "no line {line:?} in\n{out}");
    }
}

#[test]
fn the_checklist_has_a_column_per_backend_and_fails_on_what_failed_or_did_not_run() {
    let (passed, out) = gate(LOG, CHECKLIST, Some("postgres://postgres@127.0.0.1:1/postgres"));
    assert!(!passed, "{out}");
    assert_lines(
        &out,
        &[
            "Group",
            "    SQLite      PostgreSQL",
            "  ✓ ✓ 1         ✓ 1         Both pass",
            "  ✓ ✓ 1         –           Plain sqlite",
            "  ✓ –           ✓ 1         PG only",
            "  ✓ ✓ 2         ✓ 2         Mixed",
            "  ✗ ✓ 1         ✗ 1/1       PG fails",
            "      failed: m::pg_fails::postgres",
            "  ✗ ✗ 1/1       –           Not run",
            "      did not run: m::absent",
            "  ✗ ✓ 1         ✗ 1/1       Half run",
            "      did not run: m::half::postgres",
            "  ○ –           –           Not built  (not built yet)",
        ],
    );
    assert!(!out.contains("PostgreSQL column not run"), "{out}");

    let passing: String = CHECKLIST.lines().take(6).map(|l| format!("{l}\n")).collect();
    let (passed, out) = gate(LOG, &passing, Some("postgres://postgres@127.0.0.1:1/postgres"));
    assert!(passed, "{out}");
    assert!(out.ends_with("CP0 validation passed\n"), "{out}");
}

#[test]
fn without_a_server_url_the_postgresql_column_says_not_run_and_fails_nothing_itself() {
    let (passed, out) = gate(LOG, CHECKLIST, None);
    assert!(!passed, "{out}");
    assert_lines(
        &out,
        &[
            "  ✓ ✓ 1         not run     Both pass",
            "  ✓ ✓ 1         –           Plain sqlite",
            "  ○ –           not run     PG only",
            "  ✓ ✓ 2         not run     Mixed",
            "  ✗ ✓ 1         ✗ 1/1       PG fails",
            "  ✗ ✓ 1         ✗ 1/1       Half run",
            "      did not run: m::half::postgres",
        ],
    );
    assert!(out.contains("\nPostgreSQL column not run: AIGENTFLOW_PG_URL is not set"), "{out}");

    let passing: String = CHECKLIST.lines().take(6).map(|l| format!("{l}\n")).collect();
    let (passed, out) = gate(LOG, &passing, None);
    assert!(passed, "{out}");
    assert!(out.contains("PostgreSQL column not run"), "{out}");
}

/// `LOG` as cargo-nextest's JUnit file holds it: one test case per test, named as `cargo test`
/// prints it, a failure as a child element; a doc test beside them passed.
const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="8" failures="1" errors="0" uuid="0" timestamp="2026-11-27T10:00:00Z" time="1.0">
    <testsuite name="aigentflow::cp0" tests="7" disabled="0" errors="0" failures="1">
        <testcase name="m::both::sqlite" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
        </testcase>
        <testcase name="m::both::postgres" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
        </testcase>
        <testcase name="m::plain_on_sqlite" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
        </testcase>
        <testcase name="m::only_on_postgres" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
        </testcase>
        <testcase name="m::pg_fails::sqlite" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
        </testcase>
        <testcase name="m::pg_fails::postgres" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
            <failure type="test failure with exit code 101">thread 'm::pg_fails::postgres' panicked</failure>
            <system-out></system-out>
            <system-err>thread 'm::pg_fails::postgres' panicked at tests/cp0/m.rs:1:1</system-err>
        </testcase>
        <testcase name="m::half::sqlite" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
        </testcase>
    </testsuite>
    <testsuite name="aigentflow-audit" tests="1" disabled="0" errors="0" failures="0">
        <testcase name="tests::unmapped" classname="aigentflow-audit" timestamp="2026-11-27T10:00:00Z" time="0.1">
        </testcase>
    </testsuite>
</testsuites>
"#;

/// The checklist part of the script's output: what it prints before it repeats why a run failed.
fn checklist_part(out: &str) -> &str {
    out.split("\nWhy the run failed").next().unwrap()
}

#[test]
fn a_nextest_junit_file_gives_the_checklist_a_cargo_test_log_gives() {
    for pg_url in [Some("postgres://postgres@127.0.0.1:1/postgres"), None] {
        let (passed, from_junit) = gate(JUNIT, CHECKLIST, pg_url);
        let (_, from_log) = gate(LOG, CHECKLIST, pg_url);
        assert!(!passed, "{from_junit}");
        assert_eq!(checklist_part(&from_junit), checklist_part(&from_log));
        assert_lines(&from_junit, &["      failed: m::pg_fails::postgres"]);

        let passing: String = CHECKLIST.lines().take(6).map(|l| format!("{l}\n")).collect();
        let (passed, out) = gate(JUNIT, &passing, pg_url);
        assert!(passed, "{out}");
    }
    // An error element (a test that crashed or timed out) fails the test as a failure does.
    let crashed = JUNIT.replace(
        r#"<testcase name="m::both::sqlite" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
        </testcase>"#,
        r#"<testcase name="m::both::sqlite" classname="aigentflow::cp0" timestamp="2026-11-27T10:00:00Z" time="0.1">
            <error type="test abort with signal 11">SIGSEGV</error>
        </testcase>"#,
    );
    assert_ne!(crashed, JUNIT);
    let (passed, out) = gate(&crashed, CHECKLIST, None);
    assert!(!passed, "{out}");
    assert_lines(&out, &["      failed: m::both::sqlite"]);
}
