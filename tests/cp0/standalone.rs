//! The repository stands alone: a clone of it passes its tests with nothing beside it. Every
//! fixture lives inside it (`tests/fixtures/`, `crates/bench/data/`), git keeps them, and no
//! source, test, script or document reaches outside the repository for one. Its `rust-version`
//! is true: no locked dependency needs a newer Rust (clippy's `incompatible_msrv` holds our own
//! code to it).

use std::collections::HashSet;
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

/// A Rust version as (major, minor, patch): "1.92" and "1.92.0" are equal.
fn rust(version: &str) -> (u64, u64, u64) {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap());
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

#[test]
fn rust_version_is_at_least_what_every_locked_dependency_declares() {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: HashSet<&str> =
        meta["workspace_members"].as_array().unwrap().iter().filter_map(|m| m.as_str()).collect();
    let packages = meta["packages"].as_array().unwrap();
    let (ours, theirs): (Vec<_>, Vec<_>) =
        packages.iter().partition(|p| members.contains(p["id"].as_str().unwrap()));
    let declared: HashSet<&str> = ours.iter().filter_map(|p| p["rust_version"].as_str()).collect();
    assert_eq!(declared.len(), 1, "every crate takes the workspace's rust-version: {declared:?}");
    assert_eq!(ours.len(), members.len(), "{declared:?}");
    let ours = declared.into_iter().next().unwrap();
    let needs: Vec<(&str, &str)> = theirs
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, p["rust_version"].as_str()?)))
        .collect();
    assert!(needs.len() > 20, "the lock's dependencies declare versions: {}", needs.len());
    let newer: Vec<String> = needs
        .iter()
        .filter(|(_, version)| rust(version) > rust(ours))
        .map(|(name, version)| format!("{name} needs {version}"))
        .collect();
    assert!(newer.is_empty(), "rust-version {ours} is older than: {}", newer.join(", "));
}
