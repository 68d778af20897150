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
