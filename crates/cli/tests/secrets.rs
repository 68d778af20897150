//! RELIABILITY R16 through the built binary: the secret corpus (`tests/fixtures/secret-shapes.txt`)
//! given in every field an operator can type — audit entries, lessons, configuration keys, values
//! and projects — and in inputs the command refuses. None of it is in what the database holds,
//! a backup, an export, or anything the command prints.
//!
//! It runs on both backends (`on_both!`). What the database holds is the raw bytes of the file
//! and its WAL on SQLite; on PostgreSQL, whose files are the server's, every cell of every table
//! as text, read back through the `postgres` crate.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

use aigentflow_persistence::redact::corpus::{self, Context, Sample};
use aigentflow_testkit::{on_both, stored_bytes, EmptyDb};

fn run(db: &Path, args: &[OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aigentflow"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("AIGENTFLOW_DB")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn args(items: &[&str]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

/// Each shape twice: in prose, and as JSON (alternately a value, a key, nested, between escaped
/// quotes) for the fields that take JSON. One pair per shape keeps the run to a few hundred
/// processes; the library test writes every sample of every context.
fn pairs() -> Vec<(Sample, Sample)> {
    let all = corpus::samples(0xc11).unwrap();
    let json =
        [Context::JsonValue, Context::JsonKey, Context::JsonNested, Context::JsonEscapedQuotes];
    let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    names.dedup();
    let mut out = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let of = |wanted: &dyn Fn(Context) -> bool| {
            all.iter().find(|s| s.name == name && wanted(s.context)).cloned()
        };
        let text = of(&|c| c == Context::Prose).or_else(|| of(&|c| !c.is_json()));
        let as_json = of(&|c| c == json[i % json.len()]).or_else(|| of(&Context::is_json));
        if let (Some(text), Some(as_json)) = (text, as_json) {
            out.push((text, as_json));
        }
    }
    out
}

/// A workflow file (JSON) in `dir` with `text` where a problem is found: as an unknown key, or
/// as the workflow's name.
fn workflow_file(dir: &Path, i: usize, text: &str) -> String {
    let body = if i.is_multiple_of(2) {
        serde_json::json!({ text: 1 })
    } else {
        serde_json::json!({ "name": text, "version": 1, "states": [], "transitions": [] })
    };
    let path = dir.join(format!("wf{i}.json"));
    std::fs::write(&path, body.to_string()).unwrap();
    path.display().to_string()
}

fn assert_clean(what: &str, samples: &[Sample], bytes: &[u8]) {
    if let Some((s, needle)) = corpus::leaks(samples, bytes).first() {
        panic!("{what} holds {needle:?} of sample {} ({:?}): {:?}", s.name, s.context, s.text);
    }
}

on_both! {
fn r16_no_corpus_secret_typed_into_any_field_reaches_the_disk_or_the_terminal(t: EmptyDb) {
    let pairs = pairs();
    assert!(pairs.len() >= 50, "{} shapes", pairs.len());
    let samples: Vec<Sample> = pairs.iter().flat_map(|(p, j)| [p.clone(), j.clone()]).collect();
    let (dir, db) = (t.dir(), Path::new(t.location()));
    assert!(run(db, &args(&["init"])).status.success());
    let mut printed = Vec::new();
    for (i, (prose, json)) in pairs.iter().enumerate() {
        let text = prose.text.as_str();
        let project = format!("p{i}-{text}");
        // Every shape goes through every field of `audit log` and `lessons add`; the other
        // commands take two shapes in six each, by turns (a process per command is what costs:
        // the library's test writes every sample into every field of every store).
        let every = [
            args(&[
                "audit",
                "log",
                "--action",
                text,
                "--category",
                "security",
                "--project",
                &project,
                "--task",
                text,
                "--agent",
                text,
                "--details",
                &json.text,
                "--user",
                text,
                "--ip",
                text,
            ]),
            args(&[
                "lessons",
                "add",
                "--category",
                "security",
                "--title",
                text,
                "--summary",
                text,
                "--details",
                text,
                "--tags",
                text,
                "--source-agent",
                text,
                "--source-file",
                text,
                "--project",
                &project,
            ]),
        ];
        let by_turns = [
            args(&["config", "set", &format!("k{i}-{text}"), &json.text, "--project", &project]),
            args(&["config", "set", &format!("{i}_password"), text]),
            // What the command echoes back (the key and scope it removed, a file's problems),
            // in one form or the other by turns.
            if i.is_multiple_of(2) {
                args(&["config", "unset", &format!("k{i}-{text}"), "--project", &project])
            } else {
                args(&["config", "unset", "--", text])
            },
            if i % 4 < 2 {
                args(&["workflow", "check", &workflow_file(dir, i, text)])
            } else {
                args(&["--json", "workflow", "check", &workflow_file(dir, i, text)])
            },
            // Inputs the command refuses: their error lines must not echo the secret either.
            args(&[
                "audit",
                "log",
                "--action",
                "a",
                "--category",
                "user",
                "--details",
                &format!("{{ {}", json.text),
            ]),
            [
                args(&["audit", "query", "--start", text]),
                args(&["lessons", "show", text]),
                args(&["config", "get", text]),
                args(&["tasks", "show", text]),
            ][i / 6 % 4]
                .clone(),
        ];
        let commands = every.into_iter().chain([by_turns[i % 6].clone(), by_turns[(i + 3) % 6].clone()]);
        for command in commands {
            let out = run(db, &command);
            assert_ne!(out.status.code(), Some(101), "{command:?} panicked");
            printed.extend(out.stdout);
            printed.extend(out.stderr);
        }
    }
    assert_clean("what the command printed", &samples, &printed);
    assert_clean("what the database holds", &samples, &stored_bytes(t));

    // Exports and a backup carry what the database holds, and nothing more.
    let backup = dir.join("backup.db");
    assert!(run(db, &[OsString::from("db"), OsString::from("backup"), backup.clone().into()])
        .status
        .success());
    assert_clean("the backup", &samples, &std::fs::read(&backup).unwrap());
    for format in ["csv", "json", "jsonl"] {
        let file = dir.join(format!("audit.{format}"));
        let out = run(
            db,
            &[
                "audit".into(),
                "export".into(),
                "--format".into(),
                format.into(),
                "-o".into(),
                file.clone().into(),
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_clean(&format!("the {format} export"), &samples, &std::fs::read(&file).unwrap());
    }
    for listing in [
        &["--json", "lessons", "search"][..],
        &["--json", "config", "list"],
        &["--json", "audit", "query", "--limit", "100000"],
    ] {
        let out = run(db, &args(listing));
        assert!(out.status.success(), "{listing:?}");
        assert_clean(&format!("{listing:?}"), &samples, &out.stdout);
    }
}
}
