//! Issue 13 item 1: no driver type (rusqlite, postgres, r2d2, refinery) in a public signature or
//! error outside the persistence crate's backend code. The crates above persistence (the stores,
//! the CLI, this façade) do not depend on a driver, so the compiler refuses any driver type in
//! their code, their API and their errors; persistence's own public API is held by its
//! `no_driver_types` tests.

use std::collections::BTreeMap;

/// The driver crates, as Cargo names them.
const DRIVERS: [&str; 9] = [
    "rusqlite",
    "libsqlite3-sys",
    "postgres",
    "postgres-types",
    "tokio-postgres",
    "r2d2",
    "r2d2_postgres",
    "refinery",
    "refinery-core",
];

/// The crates that may use a driver: persistence (its backends), the bench (its bare
/// baselines talk to the server directly) and the test harness (it reads and tampers with what
/// the stores wrote as someone with access to the database would; only tests depend on it).
const MAY_USE_A_DRIVER: [&str; 3] =
    ["aigentflow-persistence", "aigentflow-bench", "aigentflow-testkit"];

/// Each workspace crate's dependencies that its own code can name (normal and build), read
/// from `cargo metadata`.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut crates = BTreeMap::new();
    for package in meta["packages"].as_array().unwrap() {
        let deps = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        crates.insert(package["name"].as_str().unwrap().to_owned(), deps);
    }
    crates
}

#[test]
fn no_crate_but_persistence_and_the_bench_depends_on_a_database_driver() {
    let crates = dependencies();
    for name in [
        "aigentflow",
        "aigentflow-core-states",
        "aigentflow-audit",
        "aigentflow-lessons",
        "aigentflow-tracker",
        "aigentflow-cli",
    ] {
        assert!(crates.contains_key(name), "{name} is a workspace crate: {crates:?}");
    }
    // The reading sees drivers where they are.
    for driver in ["rusqlite", "postgres", "r2d2", "refinery-core"] {
        assert!(crates["aigentflow-persistence"].iter().any(|d| d == driver), "{driver}");
    }
    let mut found = Vec::new();
    for (name, deps) in &crates {
        if MAY_USE_A_DRIVER.contains(&name.as_str()) {
            continue;
        }
        for dep in deps.iter().filter(|d| DRIVERS.contains(&d.as_str())) {
            found.push(format!("{name} depends on {dep}"));
        }
    }
    assert!(found.is_empty(), "driver dependencies outside persistence: {}", found.join(", "));
    // The harness reaches drivers for tests alone: nothing depends on it but as a dev-dependency.
    for (name, deps) in &crates {
        assert!(!deps.iter().any(|d| d == "aigentflow-testkit"), "{name} depends on the testkit");
    }
}
