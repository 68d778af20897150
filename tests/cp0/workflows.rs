//! Workflow definitions as versioned files (issue 15): loaded into the database once per
//! (name, version), tasks bound to the definition they started under, the files the source of
//! truth. Every scenario runs on both backends.

use std::path::{Path, PathBuf};

use aigentflow::persistence::Database;
use aigentflow::states::{
    Event, Format, ProjectId, StateContext, TaskId, TransitionTable, WorkflowDefinition,
    WorkflowState,
};
use aigentflow::workflows::{self, content_hash, Loaded, WorkflowRef, Workflows};
use proptest::prelude::*;

use crate::inspect::{Driver, Raw};
use crate::support::*;

/// The repository's workflow files.
fn repo_workflows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

/// The default workflow's file with `version` and ANALYSIS_COMPLETE leading to `to`.
fn variant(version: u32, to: &str) -> String {
    let text = std::fs::read_to_string(repo_workflows().join("aigentflow-default.yaml")).unwrap();
    let text = text.replace("version: 1\n", &format!("version: {version}\n"));
    let rule = "    event: ANALYSIS_COMPLETE\n    to: ORCHESTRATING\n";
    assert!(text.contains(rule));
    text.replace(rule, &format!("    event: ANALYSIS_COMPLETE\n    to: {to}\n"))
}

fn context(task: &str) -> StateContext {
    StateContext::new(ProjectId::new("p"), TaskId::new(task), "prompt")
}

fn listed(w: &Workflows) -> Vec<(String, u32, String)> {
    w.list().unwrap().into_iter().map(|s| (s.name, s.version, s.content_hash)).collect()
}

on_both! {
/// The Done-when scenario: the repository's `workflows/` is loaded, a task runs under v1, a v2
/// that changes a rule is loaded, and the old task still follows v1 while a new one follows v2,
/// after a restart too. Each task records the definition it started under.
fn a_task_follows_the_definition_it_started_under_after_a_newer_one_is_loaded(t) {
    let w = Workflows::new(t.db().clone());
    let loaded = w.load_dir(&repo_workflows()).unwrap();
    assert!(loaded.iter().any(|(_, r, l)| r.name == "aigentflow-default" && r.version == 1 && *l == Loaded::New), "{loaded:?}");
    let old = w.start("aigentflow-default", None, context("old")).unwrap();
    assert_eq!(old.table(), &TransitionTable::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_workflows().join("aigentflow-default.yaml"), dir.path().join("v1.yaml")).unwrap();
    std::fs::write(dir.path().join("v2.yaml"), variant(2, "PLANNING")).unwrap();
    let loaded = w.load_dir(dir.path()).unwrap();
    let states: Vec<_> = loaded.iter().map(|(_, r, l)| (r.version, *l)).collect();
    assert_eq!(states, [(1, Loaded::Unchanged), (2, Loaded::New)]);
    w.start("aigentflow-default", None, context("new")).unwrap();
    let pinned = w.start("aigentflow-default", Some(1), context("pinned")).unwrap();
    assert_eq!(pinned.table(), &TransitionTable::default());
    for (task, version) in [("old", 1), ("new", 2), ("pinned", 1)] {
        let r = w.definition_of(&TaskId::new(task)).unwrap();
        assert_eq!(r, Some(WorkflowRef { name: "aigentflow-default".into(), version }));
    }
    for (task, expected) in [("old", WorkflowState::Analyzing), ("new", WorkflowState::Analyzing)] {
        let m = w.apply(&TaskId::new(task), Event::Start, None).unwrap();
        assert_eq!(m.state(), &expected);
    }
    let after = |w: &Workflows, task: &str| {
        w.apply(&TaskId::new(task), Event::AnalysisComplete, None).unwrap().state().clone()
    };
    assert_eq!(after(&w, "old"), WorkflowState::Orchestrating);
    assert_eq!(after(&w, "new"), WorkflowState::Planning);
    // A restart: the tasks still move by their own definitions.
    let again = Workflows::new(t.reopen());
    assert_eq!(again.machine(&TaskId::new("old")).unwrap().table(), &TransitionTable::default());
    assert_ne!(again.machine(&TaskId::new("new")).unwrap().table(), &TransitionTable::default());
    let counts: Vec<(u32, u64)> = again.list().unwrap().into_iter().map(|s| (s.version, s.tasks)).collect();
    assert_eq!(counts, [(1, 2), (2, 1)]);
    // A task started without a definition moves by the compiled-in table.
    let store = aigentflow::persistence::SqliteStateStore::new(t.db().clone());
    let plain = aigentflow::states::StateMachine::new(context("plain"));
    aigentflow::states::StateStore::save_state(&store, plain.persisted()).unwrap();
    assert_eq!(again.definition_of(&TaskId::new("plain")).unwrap(), None);
    assert_eq!(again.machine(&TaskId::new("plain")).unwrap().table(), &TransitionTable::default());
}
}

on_both! {
/// A file whose content changed without a new version is refused, naming the definition, and a
/// folder holding it loads nothing, not even its other new files; a change of comments or
/// layout alone is the same content. A new version of the change loads.
fn a_changed_definition_without_a_new_version_is_refused_and_loads_nothing(t) {
    let w = Workflows::new(t.db().clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("default.yaml");
    std::fs::write(&file, variant(1, "ORCHESTRATING")).unwrap();
    w.load_dir(dir.path()).unwrap();
    let before = listed(&w);
    // Comments and layout: unchanged.
    let relaid = format!("# reviewed\n{}\n\n", variant(1, "ORCHESTRATING").replace("rules:\n", "rules:   # tried in order\n"));
    std::fs::write(&file, relaid).unwrap();
    assert_eq!(w.load_dir(dir.path()).unwrap()[0].2, Loaded::Unchanged);
    // Each kind of change, with a new file beside it.
    std::fs::write(dir.path().join("other.yaml"), variant(1, "ORCHESTRATING").replace("name: aigentflow-default", "name: other")).unwrap();
    let changes = [
        variant(1, "PLANNING"),
        variant(1, "ORCHESTRATING").replace("closed: [COMPLETED, ABORTED]", "closed: [COMPLETED]"),
        variant(1, "ORCHESTRATING").replace("description: ", "description: Edited. "),
        variant(1, "ORCHESTRATING").replace("version: 1\n", "version: 1\nmax_retries: 9\n"),
        variant(1, "ORCHESTRATING").replace("    guard: retries_remain\n", ""),
    ];
    for changed in changes {
        std::fs::write(&file, &changed).unwrap();
        let e = w.load_dir(dir.path()).unwrap_err();
        assert!(matches!(e, workflows::Error::Changed { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("aigentflow-default@1") && text.contains("new version"), "{text}");
        assert_eq!(listed(&w), before);
    }
    std::fs::write(&file, variant(2, "PLANNING")).unwrap();
    w.load_dir(dir.path()).unwrap();
    assert_eq!(listed(&w).len(), before.len() + 2);
}
}

on_both! {
/// The files are the source: a database deleted and loaded again from them holds the same
/// definitions (names, versions, digests), loading twice changes nothing, and a stored
/// definition reads back equal to its file, for random valid definitions too.
fn a_database_loaded_again_from_the_files_holds_the_same_definitions(t) {
    let first = Workflows::new(t.db().clone());
    first.load_dir(&repo_workflows()).unwrap();
    let again: Vec<_> = first.load_dir(&repo_workflows()).unwrap().into_iter().map(|(_, _, l)| l).collect();
    assert!(again.iter().all(|l| *l == Loaded::Unchanged));
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Workflows::new(Database::open(fresh_dir.path().join("fresh.db")).unwrap());
    fresh.load_dir(&repo_workflows()).unwrap();
    assert_eq!(listed(&first), listed(&fresh));
    let default = first.get("aigentflow-default", None).unwrap().unwrap();
    assert_eq!(&default, WorkflowDefinition::default_workflow());
    assert_eq!(content_hash(&default), listed(&first)[0].2);
    let next = std::cell::Cell::new(100u32);
    proptest!(ProptestConfig::with_cases(24), |(d in definitions())| {
        let mut d = d;
        d.version = next.get();
        next.set(d.version + 1);
        let yaml = d.to_yaml();
        prop_assert_eq!(&WorkflowDefinition::parse(&yaml, Format::Yaml).unwrap(), &d);
        prop_assert_eq!(first.load(&d).unwrap(), Loaded::New);
        prop_assert_eq!(first.load(&d).unwrap(), Loaded::Unchanged);
        prop_assert_eq!(first.get(&d.name, Some(d.version)).unwrap(), Some(d));
    });
}
}

/// Random definitions that pass the table's check: rules over a few states and events, some
/// guarded, some from any open state, some to the restored checkpoint.
fn definitions() -> impl Strategy<Value = WorkflowDefinition> {
    use aigentflow::states::{FromStates, Guard, Rule, Target};
    let state = prop::sample::select(vec!["IDLE", "A", "B", "C", "DONE"]);
    let event = prop::sample::select(vec!["GO", "BACK", "FAIL", "FINISH"]);
    let guard =
        prop::option::of(prop::sample::select(vec![Guard::RetriesRemain, Guard::AgentQueueEmpty]));
    let rule = (
        prop::option::of(prop::collection::btree_set(state.clone(), 1..3)),
        event,
        prop::option::of(state),
        guard,
    )
        .prop_map(|(from, event, to, guard)| Rule {
            from: from.map_or(FromStates::AnyOpen, |s| {
                FromStates::States(s.into_iter().map(WorkflowState::parse).collect())
            }),
            event: Event::parse(event),
            to: to.map_or(Target::CheckpointState, |s| Target::State(WorkflowState::parse(s))),
            guard,
        });
    (prop::collection::vec(rule, 0..8), prop::option::of(0u32..10), prop::bool::ANY)
        .prop_filter_map("breaks the table's check", |(rules, max_retries, described)| {
            let table = TransitionTable::new(rules, [WorkflowState::parse("DONE")]).ok()?;
            Some(WorkflowDefinition {
                name: "random".into(),
                version: 1,
                description: described.then(|| "a random: graph # with 'quotes'".to_owned()),
                max_retries,
                table,
            })
        })
}

/// A folder with nothing to load, two files of one name and version, or a file that is not a
/// definition is refused naming the folder or the files, and loads nothing.
#[test]
fn bad_workflow_folders_are_refused_naming_the_file_and_load_nothing() {
    let db = Database::open_in_memory().unwrap();
    let w = Workflows::new(db);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a workflow").unwrap();
    let e = w.load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, workflows::Error::NoFiles { .. }), "{e:?}");
    std::fs::write(dir.path().join("a.yaml"), variant(1, "ORCHESTRATING")).unwrap();
    std::fs::write(dir.path().join("b.yml"), variant(1, "PLANNING")).unwrap();
    let e = w.load_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("a.yaml") && e.to_string().contains("b.yml"), "{e}");
    std::fs::remove_file(dir.path().join("b.yml")).unwrap();
    std::fs::write(
        dir.path().join("c.json"),
        "{\"name\": \"c\", \"version\": 1, \"rules\": [], \"extra\": 1}",
    )
    .unwrap();
    let e = w.load_dir(dir.path()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("c.json") && text.contains("line 1") && text.contains("extra"), "{text}");
    assert!(w.list().unwrap().is_empty());
    let e = w.load_dir(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(e, workflows::Error::Io { .. }), "{e:?}");
}

on_both! {
/// A stored definition is taken only if its text gives its digest: a row deleted and inserted
/// again around the store with the old digest and another rule is refused when read, loaded or
/// used to move a task, naming it; loads racing from several threads store it once.
fn a_definition_rewritten_around_the_store_is_refused_and_racing_loads_store_it_once(t) {
    let w = Workflows::new(t.db().clone());
    let d = WorkflowDefinition::parse(&variant(3, "ORCHESTRATING"), Format::Yaml).unwrap();
    let loads: Vec<_> = (0..4)
        .map(|_| {
            let (db, d) = (t.reopen(), d.clone());
            std::thread::spawn(move || Workflows::new(db).load(&d).unwrap())
        })
        .collect();
    let outcomes: Vec<Loaded> = loads.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|l| **l == Loaded::New).count(), 1, "{outcomes:?}");
    let mut raw = Driver::of(t);
    let rows = raw.query("SELECT content_hash, definition, loaded_at FROM workflow_definitions WHERE version = 3", &[]);
    let (hash, text, at) = (rows[0][0].clone().unwrap(), rows[0][1].clone().unwrap(), rows[0][2].clone().unwrap());
    let evil = text.replace("\"ORCHESTRATING\"", "\"EVIL\"");
    assert_ne!(evil, text);
    raw.execute("DELETE FROM workflow_definitions WHERE version = 3", &[]);
    raw.execute("INSERT INTO workflow_definitions (name, version, content_hash, definition, loaded_at) VALUES ('aigentflow-default', 3, ?1, ?2, ?3)", &[Raw::text(hash), Raw::text(evil), Raw::text(at)]);
    let e = w.get("aigentflow-default", Some(3)).unwrap_err();
    assert!(matches!(e, workflows::Error::Corrupt { .. }) && e.to_string().contains("aigentflow-default@3"), "{e}");
    let e = w.load(&d).unwrap_err();
    assert!(matches!(e, workflows::Error::Corrupt { .. }), "{e:?}");
    let e = w.start("aigentflow-default", Some(3), context("t")).unwrap_err();
    assert!(matches!(e, workflows::Error::Corrupt { .. }), "{e:?}");
}
}

/// A folder entry named like a workflow file that is not a regular file (a dangling link, a
/// folder) is refused naming it, not skipped; a file larger than a workflow file may be, or one
/// starting with a byte order mark, is read as such.
#[test]
fn folder_entries_that_are_not_files_are_named_and_a_bom_is_read_through() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), format!("\u{feff}{}", variant(1, "ORCHESTRATING")))
        .unwrap();
    let d = workflows::read_file(&dir.path().join("a.yaml")).unwrap();
    assert_eq!(d.version, 1);
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("b.yaml")).unwrap();
    let e = workflows::read_dir(dir.path()).unwrap_err();
    assert!(
        matches!(e, workflows::Error::NotAFile { .. }) && e.to_string().contains("b.yaml"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("c.yml")).unwrap();
    assert!(matches!(
        workflows::read_dir(dir.path()).unwrap_err(),
        workflows::Error::NotAFile { .. }
    ));
    let big = dir.path().join("big.json");
    std::fs::write(&big, " ".repeat(workflows::MAX_FILE as usize + 1)).unwrap();
    assert!(matches!(workflows::read_file(&big).unwrap_err(), workflows::Error::TooLarge { .. }));
}

on_both! {
/// A definition holding what the redaction policy removes (a key in its description, a
/// password-like word) is refused before anything is written, naming it: stored redacted, it
/// could never give its digest back. Each family of the secret corpus is tried.
fn a_definition_holding_a_secret_is_refused_and_nothing_is_stored(t) {
    let w = Workflows::new(t.db().clone());
    let mut tried = 0;
    for sample in aigentflow::persistence::redact::corpus::samples(0x3f_10).unwrap().into_iter().step_by(7).take(40) {
        let mut d = WorkflowDefinition::default_workflow().clone();
        d.version = 50 + tried;
        d.description = Some(format!("notes: {}", sample.text));
        if aigentflow::persistence::Clean::text(&d.to_canonical_json()).as_str() == d.to_canonical_json() {
            continue;
        }
        let e = w.load(&d).unwrap_err();
        assert!(matches!(e, workflows::Error::HoldsSecret { .. }), "{e:?}");
        assert!(e.to_string().contains(&format!("aigentflow-default@{}", d.version)), "{e}");
        tried += 1;
    }
    assert!(tried > 5, "{tried}");
    assert!(w.list().unwrap().is_empty());
}
}
