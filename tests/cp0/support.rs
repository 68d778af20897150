//! Helpers shared by the scenario modules.

use std::path::{Path, PathBuf};

use aigentflow::persistence::Database;

/// A fresh temp dir and a database path inside it (the file does not exist yet).
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("aigentflow.db");
    (dir, path)
}

/// A copy of the TypeScript version's database in a temp dir (the fixture is never opened in place).
pub fn legacy_copy() -> (tempfile::TempDir, PathBuf) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-aigentflow.db");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.db");
    std::fs::copy(&fixture, &path).unwrap_or_else(|e| panic!("copy {}: {e}", fixture.display()));
    (dir, path)
}

/// A raw SQLite connection to inspect what the stores wrote.
pub fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// Every string in the database file and its WAL, as bytes.
pub fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if let Ok(more) = std::fs::read(wal) {
        bytes.extend(more);
    }
    bytes
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Opens the database at `path`, panicking with the error's message.
pub fn open(path: &Path) -> Database {
    Database::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Runs the worker binary and returns its output.
pub fn worker(args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_aigentflow-worker"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a worker and asserts it succeeded.
pub fn expect_ok(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "worker failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
