//! The repository stands alone: a clone of it passes its tests with nothing beside it. Every
//! fixture lives inside it (`tests/fixtures/`, `crates/bench/data/`), git keeps them, and no
//! source, test, script or document reaches outside the repository for one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of the repository a build, test or script reads: sources, manifests, scripts, docs.
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && name != ".git" {
                repository_files(&path, out);
            }
            continue;
        }
        let in_scripts =
            ["scripts", ".ci"].iter().any(|d| path.parent().is_some_and(|p| p.ends_with(d)));
        let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        let text_kind = matches!(ext.as_str(), "rs" | "toml" | "sh" | "py" | "md" | "yml" | "yaml");
        if text_kind || in_scripts || name == "justfile" || name == ".gitignore" {
            out.push(path);
        }
    }
}

#[test]
fn no_source_test_or_script_reads_a_fixture_from_outside_the_repository() {
    let mut files = Vec::new();
    repository_files(&root(), &mut files);
    assert!(files.len() > 50, "the scan found the repository's files: {}", files.len());
    assert!(files.iter().any(|f| f.ends_with("tests/cp0/support.rs")));
    assert!(files.iter().any(|f| f.ends_with(".ci/run")));
    // Built here so this file does not hold them.
    let outside = [format!("..{}shared", '/'), format!("/work{}shared", '/')];
    let mut found = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for (n, line) in text.lines().enumerate() {
            if outside.iter().any(|o| line.contains(o.as_str())) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "outside the repository:\n{}", found.join("\n"));
}

#[test]
fn the_legacy_fixture_is_in_the_repository_as_its_manifest_describes_it() {
    let dir = root().join("tests/fixtures");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("legacy-aigentflow.manifest.json")).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(dir.join("legacy-aigentflow.db")).unwrap();
    assert_eq!(Some(bytes.len() as u64), manifest["bytes"].as_u64());
    assert_eq!(Some(hex::encode(Sha256::digest(&bytes)).as_str()), manifest["sha256"].as_str());
}

#[test]
fn git_keeps_every_fixture() {
    let mut fixtures = Vec::new();
    for dir in ["tests/fixtures", "crates/bench/data"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            fixtures.push(entry.unwrap().path());
        }
    }
    assert!(fixtures.iter().any(|f| f.ends_with("legacy-aigentflow.db")), "{fixtures:?}");
    for fixture in fixtures {
        // Exit code 1: no ignore rule matches (`*.db` would hide the legacy database).
        let status = std::process::Command::new("git")
            .current_dir(root())
            .args(["check-ignore", "-q", "--no-index"])
            .arg(&fixture)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1), "{} is ignored by git", fixture.display());
    }
}
