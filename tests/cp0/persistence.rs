//! Step 04 "Database initialization" and "SQLiteStateStore" twins, plus RELIABILITY.md R2, R3,
//! R4 (state part), R10 (state part), R11 (database part), R12 and R13.
//!
//! Every scenario that is not about one backend runs on both (`on_both!`: `NAME::sqlite` and
//! `NAME::postgres`); what it checks of the stored rows it reads around the stores, through the
//! backend's driver (`inspect`). Scenarios about SQLite's file (bytes, WAL, pragmas, the legacy
//! fixture, refinery's SQLite migrations) end in `_on_sqlite`.

use std::collections::BTreeSet;
use std::sync::Arc;

use aigentflow::persistence::{
    migrate, Access, Backend, ConfigStore, Database, Error, ManualClock, Options, Scope,
    SqliteStateStore,
};
use aigentflow::states::{
    Event, PersistedState, ProjectId, StateContext, StateMachine, StateStore, StateTransition,
    TaskId, WorkflowState,
};
use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use crate::inspect::{stored_bytes, Driver, Raw};
use crate::support::*;

fn state(
    task: &str,
    project: &str,
    state: WorkflowState,
    history: Vec<StateTransition>,
) -> PersistedState {
    let mut context = StateContext::new(project.into(), task.into(), "Test prompt");
    context.metadata.insert("k".into(), json!("v"));
    PersistedState { task_id: task.into(), project_id: project.into(), state, context, history }
}

fn start() -> StateTransition {
    StateTransition {
        from: WorkflowState::Idle,
        to: WorkflowState::Analyzing,
        event: Event::Start,
        timestamp: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
        metadata: None,
    }
}

fn machine(task: &str) -> StateMachine {
    let mut ctx = StateContext::new("project-1".into(), task.into(), "Build it");
    ctx.agent_queue.push("coder".into());
    StateMachine::new(ctx)
}

fn drive(m: &mut StateMachine, steps: usize) {
    for _ in 0..steps {
        let event = match m.state() {
            WorkflowState::Idle => Event::Start,
            WorkflowState::Analyzing => Event::AnalysisComplete,
            WorkflowState::Orchestrating => Event::SpawnAgent,
            WorkflowState::AgentWorking => Event::AgentDone,
            _ => Event::RouteNext,
        };
        m.apply(event, Some(json!({"n": m.history().len()}))).unwrap();
    }
}

// ---- Database initialization -------------------------------------------------------------

on_both! {
fn database_creates_schema_on_first_run(t) {
    let names = Driver::of(t).tables();
    for table in [
        "workflow_states",
        "state_transitions",
        "checkpoints",
        "audit_logs",
        "lessons",
        "execution_traces",
        "agent_invocations",
        "configurations",
        "schema_versions",
        "refinery_schema_history",
    ] {
        assert!(names.contains(table), "missing table {table} in {names:?}");
    }
    if t.backend() == Backend::Sqlite {
        assert!(names.contains("lessons_fts"), "{names:?}");
    }
}
}

#[test]
fn database_file_and_folder_are_created_on_first_run_on_sqlite() {
    let (_dir, path) = temp_db();
    assert!(!path.parent().unwrap().exists());
    open(&path);
    assert!(path.exists(), "the file and its folder are created");
    assert!(Driver::Sqlite(raw(&path)).tables().contains("workflow_states"));
    let in_memory = Database::open_in_memory().unwrap();
    assert_eq!(in_memory.schema_version().unwrap().migration, migrate::latest_version());
}

on_both! {
fn schema_version_is_recorded(t) {
    let version = t.db().schema_version().unwrap();
    assert_eq!(version.seed.as_deref(), Some("1.0.0"));
    let files = migration_versions(t.backend());
    assert_eq!(Some(&version.latest), files.last());
    assert_eq!(version.migration, version.latest);
    let history = Driver::of(t).query(
        "SELECT COUNT(*), COUNT(DISTINCT version), MAX(version) FROM refinery_schema_history",
        &[],
    );
    let (count, latest) = (Some(files.len().to_string()), Some(version.latest.to_string()));
    assert_eq!(history, [[count.clone(), count, latest]], "one row per migration");
}
}

#[test]
fn database_uses_wal_foreign_keys_and_the_durability_option_on_sqlite() {
    let (_dir, path) = temp_db();
    for (durability, expected) in [
        (aigentflow::persistence::Durability::Normal, 1),
        (aigentflow::persistence::Durability::Full, 2),
    ] {
        let db = Database::open_with(&path, Options { durability, ..Options::default() }).unwrap();
        let (mode, fk, sync): (String, i64, i64) = db
            .read(|tx| {
                let c = tx.sqlite().unwrap();
                Ok::<_, Error>((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap(),
                    c.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap(),
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap(),
                ))
            })
            .unwrap();
        assert_eq!((mode.as_str(), fk, sync), ("wal", 1, expected));
    }
}

// ---- SQLiteStateStore ----------------------------------------------------------------------

on_both! {
fn state_store_saves_and_loads_state(t) {
    let store = SqliteStateStore::new(t.db().clone());
    let saved = state("task-1", "project-1", WorkflowState::Analyzing, vec![start()]);
    store.save_state(&saved).unwrap();
    let loaded = store.load_state(&"task-1".into()).unwrap().unwrap();
    assert_eq!(loaded.state, WorkflowState::Analyzing);
    assert_eq!(loaded.context.prompt, "Test prompt");
    assert_eq!(loaded.history.len(), 1);
    assert_eq!(loaded, saved);
}
}

on_both! {
fn state_store_lists_states_by_project(t) {
    let store = SqliteStateStore::new(t.db().clone());
    store.save_state(&state("task-1", "project-1", WorkflowState::Idle, vec![])).unwrap();
    store
        .save_state(&state("task-2", "project-1", WorkflowState::Analyzing, vec![start()]))
        .unwrap();
    store.save_state(&state("task-3", "project-2", WorkflowState::Idle, vec![])).unwrap();
    let states = store.list_states(&"project-1".into()).unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(states[1].history, vec![start()]);
    assert!(store.list_states(&"nobody".into()).unwrap().is_empty());
    assert_eq!(
        store.count_by_state().unwrap(),
        [(WorkflowState::Analyzing, 1), (WorkflowState::Idle, 2)]
    );
    let summaries = store.summaries(Some(&"project-1".into()), None).unwrap();
    let mut ids: Vec<_> = summaries.iter().map(|s| s.task_id.as_str().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["task-1", "task-2"]);
    let analyzing = store.summaries(None, Some(&WorkflowState::Analyzing)).unwrap();
    assert_eq!(analyzing.len(), 1);
    assert_eq!((analyzing[0].task_id.as_str(), analyzing[0].transitions), ("task-2", 1));
    assert_eq!(store.summaries(None, None).unwrap().len(), 3);
    // Both filters at once, each combination more times than PostgreSQL plans a statement for
    // its values before it may settle on one plan for any.
    for _ in 0..7 {
        let idle_1 = store.summaries(Some(&"project-1".into()), Some(&WorkflowState::Idle)).unwrap();
        assert_eq!(idle_1.iter().map(|s| s.task_id.as_str()).collect::<Vec<_>>(), ["task-1"]);
        let idle_2 = store.summaries(Some(&"project-2".into()), Some(&WorkflowState::Idle)).unwrap();
        assert_eq!(idle_2.iter().map(|s| s.task_id.as_str()).collect::<Vec<_>>(), ["task-3"]);
        assert!(store
            .summaries(Some(&"project-2".into()), Some(&WorkflowState::Analyzing))
            .unwrap()
            .is_empty());
    }
}
}

on_both! {
fn state_store_deletes_state_with_its_history_and_checkpoints(t) {
    let store = SqliteStateStore::new(t.db().clone());
    let mut m = machine("task-1");
    drive(&mut m, 3);
    m.create_checkpoint(vec!["a.rs".into()]);
    store.save_state(m.persisted()).unwrap();
    let mut kept = machine("task-2");
    drive(&mut kept, 2);
    kept.create_checkpoint(vec![]);
    store.save_state(kept.persisted()).unwrap();
    assert!(store.delete_state(&"task-1".into()).unwrap());
    assert_eq!(store.load_state(&"task-1".into()).unwrap(), None);
    assert!(!store.delete_state(&"task-1".into()).unwrap(), "unknown id: false, not an error");
    let mut raw = Driver::of(t);
    for (table, left) in [("state_transitions", 2), ("checkpoints", 1), ("workflow_states", 1)] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE task_id = ?1");
        assert_eq!(raw.count(&sql, &[Raw::text("task-1")]), 0, "{table}");
        assert_eq!(raw.count(&sql, &[Raw::text("task-2")]), left, "{table} of the other task");
    }
    assert_eq!(store.load_state(&"task-2".into()).unwrap().as_ref(), Some(kept.persisted()));
}
}

on_both! {
fn state_persists_across_close_and_reopen(t) {
    let mut m = machine("task-1");
    drive(&mut m, 7);
    m.create_checkpoint(vec!["src/lib.rs".into()]);
    drive(&mut m, 2);
    {
        let db = t.reopen();
        SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
        db.close().unwrap();
    }
    let store = SqliteStateStore::new(t.reopen());
    let loaded = store.load_state(&"task-1".into()).unwrap().unwrap();
    assert_eq!(&loaded, m.persisted());
    let resumed = StateMachine::from_persisted(loaded);
    assert_eq!(resumed.state(), m.state());
}
}

on_both! {
fn transitions_are_recorded_once_each_with_a_gapless_sequence(t) {
    let store = SqliteStateStore::new(t.db().clone());
    let mut m = machine("task-1");
    for _ in 0..12 {
        drive(&mut m, 1);
        store.save_state(m.persisted()).unwrap();
        store.save_state(m.persisted()).unwrap(); // a repeated save changes nothing
    }
    let mut raw = Driver::of(t);
    let seqs = raw.query("SELECT seq FROM state_transitions WHERE task_id = 'task-1' ORDER BY id", &[]);
    let expected: Vec<_> = (1..=12).map(|i: i64| vec![Some(i.to_string())]).collect();
    assert_eq!(seqs, expected);
    let first = raw.query(
        "SELECT from_state, to_state, event, metadata FROM state_transitions WHERE seq = 1",
        &[],
    );
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(first, [[text("IDLE"), text("ANALYZING"), text("START"), text(r#"{"n":0}"#)]]);
}
}

on_both! {
fn repeated_save_does_not_touch_the_row(t) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        Duration::seconds(1),
    ));
    let db = Database::open_with(t.location(), Options { clock, ..Options::default() }).unwrap();
    let store = SqliteStateStore::new(db.clone());
    let s = state("t", "p", WorkflowState::Idle, vec![]);
    store.save_state(&s).unwrap();
    let updated = || Driver::of(t).query("SELECT updated_at FROM workflow_states", &[]);
    let first = updated();
    assert_eq!(first.len(), 1);
    store.save_state(&s).unwrap();
    assert_eq!(updated(), first);
}
}

on_both! {
fn stale_or_diverging_saves_are_refused_and_write_nothing(t) {
    let store = SqliteStateStore::new(t.db().clone());
    let mut m = machine("task-1");
    drive(&mut m, 2);
    let stale = m.persisted().clone();
    drive(&mut m, 2);
    store.save_state(m.persisted()).unwrap();
    let err = store.save_state(&stale).unwrap_err();
    assert!(matches!(err, Error::StaleSave { stored: 4, given: 2, .. }), "{err}");
    let mut diverged = m.persisted().clone();
    diverged.history[3].event = Event::Abort;
    diverged.history[3].to = WorkflowState::Aborted;
    diverged.state = WorkflowState::Aborted;
    let err = store.save_state(&diverged).unwrap_err();
    assert!(matches!(err, Error::HistoryConflict { seq: 4, .. }), "{err}");
    assert_eq!(store.load_state(&"task-1".into()).unwrap().unwrap(), *m.persisted());
}
}

/// A task of `db` saved with `n` transitions and a checkpoint every third step, and its store.
fn saved_task(db: &Database, task: &str, n: usize) -> (SqliteStateStore, StateMachine) {
    let store = SqliteStateStore::new(db.clone());
    let mut m = machine(task);
    for i in 0..n {
        drive(&mut m, 1);
        if i % 3 == 2 {
            m.create_checkpoint(vec![format!("file-{i}")]);
        }
    }
    store.save_state(m.persisted()).unwrap();
    (store, m)
}

/// A task id of its own for each case of a property checked on one database.
fn next_task() -> String {
    static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("task-{}", CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

on_both! {
/// A save whose history differs from the stored one anywhere up to the last stored transition
/// (event, states, time to the millisecond, or metadata) is refused, naming the first differing
/// transition, and writes nothing.
fn a_diverging_history_is_refused_naming_its_first_differing_transition(t) {
    let cases = (2usize..24, 0usize..24, 0u8..4, 0usize..3);
    check(48, cases, |(n, at, field, extra)| {
        let at = at % n;
        let task = next_task();
        let (store, m) = saved_task(t.db(), &task, n);
        let mut given = m.persisted().clone();
        for _ in 0..extra {
            drive_persisted(&mut given);
        }
        for i in [at, n - 1] {
            let t = &mut given.history[i];
            match field {
                0 => t.event = Event::parse("SOMETHING_ELSE"),
                1 => t.to = WorkflowState::parse("ELSEWHERE"),
                2 => t.timestamp += Duration::milliseconds(1),
                _ => t.metadata = Some(json!({"changed": i})),
            }
        }
        let err = store.save_state(&given).unwrap_err();
        let is_conflict =
            matches!(&err, Error::HistoryConflict { seq, .. } if *seq == at as u64 + 1);
        prop_assert!(is_conflict, "{err}");
        prop_assert_eq!(
            store.load_state(&task.as_str().into()).unwrap().unwrap(),
            m.persisted().clone()
        );
        Ok(())
    });
}
}

on_both! {
/// Checkpoints are compared too: a save whose checkpoints are fewer than the stored ones is
/// stale, and one whose checkpoints differ is refused naming the first differing one.
fn diverging_or_missing_checkpoints_are_refused_and_write_nothing(t) {
    check(48, (3usize..24, 0usize..8, 0u8..3), |(n, at, kind)| {
        let task = next_task();
        let (store, m) = saved_task(t.db(), &task, n);
        let stored = m.persisted().context.checkpoints.len();
        let at = at % stored;
        let mut given = m.persisted().clone();
        drive_persisted(&mut given);
        match kind {
            0 => given.context.checkpoints.truncate(at),
            1 => {
                for i in [at, stored - 1] {
                    given.context.checkpoints[i].id = format!("other-{task}-{i}").into();
                }
            }
            _ => {
                for i in [at, stored - 1] {
                    given.context.checkpoints[i].timestamp += Duration::milliseconds(1);
                }
            }
        }
        let err = store.save_state(&given).unwrap_err();
        let named = match (&err, kind) {
            (Error::StaleSave { what: "checkpoints", given: g, .. }, 0) => *g == at as u64,
            (Error::CheckpointConflict { seq, .. }, 1 | 2) => *seq == at as u64 + 1,
            _ => false,
        };
        prop_assert!(named, "{err}");
        prop_assert_eq!(
            store.load_state(&task.as_str().into()).unwrap().unwrap(),
            m.persisted().clone()
        );
        Ok(())
    });
}
}

/// One more transition on a persisted state, as a later save would carry.
fn drive_persisted(state: &mut PersistedState) {
    let mut m = StateMachine::from_persisted(state.clone());
    drive(&mut m, 1);
    *state = m.persisted().clone();
}

on_both! {
fn states_events_and_checkpoint_ids_that_redaction_changes_still_save_again(t) {
    // Stored through the redaction policy, they are compared the same way on the next save.
    let key = format!("AKIA{}", "Q7W2E3R4T5Y6U7I2");
    let store = SqliteStateStore::new(t.db().clone());
    let odd = |i: i64| StateTransition {
        from: WorkflowState::parse(&format!("STAGE_{key}_{i}")),
        to: WorkflowState::parse(&format!("STAGE_{key}_{}", i + 1)),
        event: Event::parse(&format!("GO_{key}")),
        timestamp: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap() + Duration::seconds(i),
        metadata: Some(json!({"password": "hunter2", key.clone(): i})),
    };
    let mut s = state("t", "p", WorkflowState::parse(&format!("STAGE_{key}_1")), vec![odd(0)]);
    s.context.checkpoints.push(aigentflow::states::Checkpoint {
        id: format!("cp-{key}").into(),
        state: WorkflowState::parse(&format!("STAGE_{key}_1")),
        timestamp: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
        context: serde_json::Map::new(),
        artifacts: vec![],
    });
    for i in 1..4 {
        store.save_state(&s).unwrap();
        s.history.push(odd(i));
    }
    store.save_state(&s).unwrap();
    assert_eq!(store.load_state(&"t".into()).unwrap().unwrap().history.len(), 4);
}
}

on_both! {
/// A stored sequence number below 1, written around the store, makes the next save an error
/// naming the table and the column, not a panic or an overflow.
fn a_corrupt_stored_sequence_number_is_a_typed_error_not_a_panic(t) {
    let store = SqliteStateStore::new(t.db().clone());
    let mut raw = Driver::of(t);
    for seq in [0i64, -1, i64::MIN] {
        for table in ["state_transitions", "checkpoints"] {
            let task = format!("task-{table}{seq}");
            let mut m = machine(&task);
            drive(&mut m, 3);
            m.create_checkpoint(vec![]);
            store.save_state(m.persisted()).unwrap();
            let tampered = raw.execute(
                &format!(
                    "UPDATE {table} SET seq = ?1 WHERE task_id = ?2
                     AND seq = (SELECT MAX(seq) FROM {table} WHERE task_id = ?2)"
                ),
                &[Raw::Int(seq), Raw::text(&task)],
            );
            assert_eq!(tampered, 1);
            drive(&mut m, 1);
            let err = store.save_state(m.persisted()).unwrap_err();
            assert!(
                matches!(err, Error::CorruptRow { table: t, column: "seq", .. } if t == table),
                "{table} seq {seq}: {err}"
            );
            assert!(err.to_string().contains("numbers start at 1"), "{err}");
        }
    }
}
}

on_both! {
fn checkpoints_are_saved_and_loadable_and_kept_out_of_the_context_json(t) {
    let store = SqliteStateStore::new(t.db().clone());
    let mut m = machine("task-1");
    drive(&mut m, 3);
    let first = m.create_checkpoint(vec!["src/a.rs".into(), "docs/notes on b.md".into()]);
    store.save_state(m.persisted()).unwrap();
    drive(&mut m, 2);
    let second = m.create_checkpoint(vec![]);
    store.save_state(m.persisted()).unwrap();
    let loaded = store.load_state(&"task-1".into()).unwrap().unwrap();
    assert_eq!(loaded.context.checkpoints, vec![first.clone(), second]);
    let context = Driver::of(t).query("SELECT context FROM workflow_states", &[]);
    let context = context[0][0].as_deref().unwrap();
    assert!(!context.contains("checkpoints"), "{context}");
    // A loaded checkpoint can be restored after an error.
    let mut resumed = StateMachine::from_persisted(loaded);
    resumed.apply(Event::Error, None).unwrap();
    resumed.apply(Event::StartRecovery, None).unwrap();
    resumed.restore_checkpoint(&first.id).unwrap();
    assert_eq!(resumed.state(), &first.state);
}
}

on_both! {
fn unknown_context_fields_survive_a_load_save_round_trip(t) {
    let store = SqliteStateStore::new(t.db().clone());
    store.save_state(&state("t", "p", WorkflowState::Idle, vec![])).unwrap();
    let mut raw = Driver::of(t);
    raw.batch(match t.backend() {
        Backend::Sqlite => {
            "UPDATE workflow_states SET context = json_set(context,
                '$.futureField', json('{\"a\":[1,2]}'), '$.metadata.other', 'x')"
        }
        Backend::Postgres => {
            "UPDATE workflow_states SET context = jsonb_set(jsonb_set(context::jsonb,
                '{futureField}', '{\"a\":[1,2]}'), '{metadata,other}', '\"x\"')::text"
        }
    });
    let loaded = store.load_state(&"t".into()).unwrap().unwrap();
    let mut m = StateMachine::from_persisted(loaded);
    m.apply(Event::Start, None).unwrap();
    store.save_state(m.persisted()).unwrap();
    let context = raw.query("SELECT context FROM workflow_states", &[]);
    let value: serde_json::Value = serde_json::from_str(context[0][0].as_deref().unwrap()).unwrap();
    assert_eq!(value["futureField"], json!({"a": [1, 2]}));
    assert_eq!(value["metadata"]["other"], "x");
    assert_eq!(value["metadata"]["k"], "v");
}
}

on_both! {
fn resumable_tasks_are_the_non_terminal_ones_with_their_latest_checkpoint(t) {
    let store = SqliteStateStore::new(t.db().clone());
    let mut running = machine("running");
    drive(&mut running, 3);
    running.create_checkpoint(vec![]);
    drive(&mut running, 1);
    let latest = running.create_checkpoint(vec!["x".into()]);
    store.save_state(running.persisted()).unwrap();
    let mut aborted = machine("aborted");
    aborted.apply(Event::Abort, None).unwrap();
    store.save_state(aborted.persisted()).unwrap();
    store.save_state(machine("fresh").persisted()).unwrap();
    let resumable = store.resumable(Some(&"project-1".into())).unwrap();
    let ids: BTreeSet<_> = resumable.iter().map(|r| r.task_id.as_str().to_owned()).collect();
    assert_eq!(ids, ["fresh".to_owned(), "running".to_owned()].into());
    let r = resumable.iter().find(|r| r.task_id.as_str() == "running").unwrap();
    assert_eq!(r.latest_checkpoint.as_ref(), Some(&latest));
    assert!(resumable
        .iter()
        .find(|r| r.task_id.as_str() == "fresh")
        .unwrap()
        .latest_checkpoint
        .is_none());
    assert_eq!(store.resumable(None).unwrap().len(), 2);
    let one = t.db().read(|tx| store.task_in(tx, &"aborted".into())).unwrap().unwrap();
    assert_eq!((one.state, one.latest_checkpoint), (WorkflowState::Aborted, None));
}
}

// ---- Configuration --------------------------------------------------------------------------

on_both! {
fn configuration_values_are_scoped_listed_deleted_and_redacted(t) {
    let config = ConfigStore::new(t.db().clone());
    let p1 = ProjectId::new("p1");
    config.set("model", &Scope::Global, &json!("opus")).unwrap();
    config.set("model", &Scope::Project(p1.clone()), &json!("haiku")).unwrap();
    config.set("limits", &Scope::Global, &json!({"tokens": 1000, "ratio": 0.5})).unwrap();
    let e = config.set("llm", &Scope::Global, &json!({"api_key": "abc", "model": "m"})).unwrap();
    assert_eq!(e.value, json!({"api_key": "[REDACTED]", "model": "m"}));
    assert_eq!(config.get("model", None).unwrap().unwrap().value, "opus");
    assert_eq!(config.get("model", Some(&p1)).unwrap().unwrap().value, "haiku");
    assert_eq!(config.get("model", Some(&"p2".into())).unwrap().unwrap().value, "opus");
    assert_eq!(config.get("llm", None).unwrap().unwrap().value["api_key"], "[REDACTED]");
    assert_eq!(config.get("limits", None).unwrap().unwrap().value["ratio"], 0.5);
    let listed: Vec<_> = config
        .list(Some(&p1))
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.scope.as_stored()))
        .collect();
    let expected = [("limits", "global"), ("llm", "global"), ("model", "project:p1")];
    assert_eq!(listed, expected.map(|(k, s)| (k.to_owned(), s.to_owned())));
    let err = config.set_json("k", &Scope::Global, "{not json").unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(matches!(config.set(" ", &Scope::Global, &json!(1)), Err(Error::InvalidInput { .. })));
    assert!(config.delete("model", &Scope::Project(p1.clone())).unwrap());
    assert!(!config.delete("model", &Scope::Project(p1.clone())).unwrap());
    assert_eq!(config.get("model", Some(&p1)).unwrap().unwrap().value, "opus");
    assert_eq!(config.get("missing", None).unwrap(), None);
    assert_eq!(Driver::of(t).count("SELECT COUNT(*) FROM configurations", &[]), 3);
}
}

// ---- Transactions (decision 4) ------------------------------------------------------------

on_both! {
fn a_transaction_across_stores_commits_together_or_rolls_back_together(t) {
    let db = t.db();
    let states = SqliteStateStore::new(db.clone());
    let config = ConfigStore::new(db.clone());
    let mut m = machine("task-1");
    drive(&mut m, 1);
    let failed: Result<(), Error> = db.write(|tx| {
        states.save_in(tx, m.persisted())?;
        config.set_in(tx, "last_task", &Scope::Global, &json!("task-1"))?;
        Err(Error::InvalidInput { what: "test", reason: "the audit write failed".into() })
    });
    assert!(failed.is_err());
    assert_eq!(states.load_state(&"task-1".into()).unwrap(), None);
    assert_eq!(config.get("last_task", None).unwrap(), None);

    db.write(|tx| {
        states.save_in(tx, m.persisted())?;
        config.set_in(tx, "last_task", &Scope::Global, &json!("task-1"))?;
        Ok::<_, Error>(())
    })
    .unwrap();
    assert!(states.load_state(&"task-1".into()).unwrap().is_some());
    assert_eq!(config.get("last_task", None).unwrap().unwrap().value, "task-1");
}
}

// ---- R10: secrets never reach the database (state store) ---------------------------------

on_both! {
/// What the database holds, read around the stores: on SQLite the bytes of the file and its
/// WAL, on PostgreSQL every cell of every table.
fn secrets_in_state_context_checkpoints_and_metadata_never_reach_the_database(t) {
    let secret_ant = format!("sk-ant-api03-{}", "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2");
    let secret_aws = format!("AKIA{}", "ZZZZ1111YYYY2222");
    let password = "correct-horse-battery-staple";
    let store = SqliteStateStore::new(t.db().clone());
    let mut ctx = StateContext::new("p".into(), "t".into(), format!("use key {secret_ant} please"));
    ctx.metadata.insert("password".into(), json!(password));
    ctx.metadata.insert("aws".into(), json!(format!("id={secret_aws}")));
    let mut m = StateMachine::new(ctx);
    m.apply(Event::Start, Some(json!({"api_key": password, "note": secret_ant}))).unwrap();
    m.create_checkpoint(vec![format!("keys/{secret_aws}.txt")]);
    store.save_state(m.persisted()).unwrap();
    let loaded = store.load_state(&"t".into()).unwrap().unwrap();
    assert!(loaded.context.prompt.contains("[REDACTED]"));
    let bytes = stored_bytes(t);
    assert!(contains(&bytes, "[REDACTED]"), "the stored text was read");
    for s in [&secret_ant, &secret_aws, password] {
        assert!(!contains(&bytes, s), "{s} reached the database");
    }
}
}

// ---- R3: concurrent first open; R2: contention across processes --------------------------

#[test]
fn concurrent_first_open_migrates_exactly_once_on_sqlite() {
    let (_dir, path) = temp_db();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let p = path.to_str().unwrap();
    let children: Vec<_> = (0..4).map(|_| worker(&["open", p])).collect();
    for child in children {
        assert_eq!(expect_ok(child).trim(), format!("ok {}", migrate::latest_version()));
    }
    let conn = raw(&path);
    let (rows, distinct): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT version) FROM refinery_schema_history",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let files = migration_versions(Backend::Sqlite).len() as i64;
    assert_eq!((rows, distinct), (files, files));
    let seed: i64 =
        conn.query_row("SELECT COUNT(*) FROM schema_versions", [], |r| r.get(0)).unwrap();
    assert_eq!(seed, 1);
}

on_both! {
/// Processes and threads save their own tasks and advance one shared task in read-modify-write
/// transactions (load and save in one `write`), all at once: no save fails, none is lost or
/// applied twice, and every task's sequence numbers run from 1 without a gap.
fn processes_and_threads_saving_at_once_lose_and_duplicate_nothing(t) {
    let (processes, threads, rounds): (usize, usize, usize) = (3, 3, 30);
    let children: Vec<_> = (0..processes)
        .map(|i| {
            worker(&[
                "save",
                t.location(),
                &format!("w{i}"),
                &threads.to_string(),
                &rounds.to_string(),
                "shared",
            ])
        })
        .collect();
    for child in children {
        expect_ok(child); // a SQLITE_BUSY or a refused save reaching a caller fails the worker
    }
    let store = SqliteStateStore::new(t.reopen());
    let tasks = store.list_states(&"stress".into()).unwrap();
    assert_eq!(tasks.len(), processes * threads + 1);
    for task in &tasks {
        assert_eq!(task.folded_state(), Some(&task.state), "{}", task.task_id);
        for pair in task.history.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "{}", task.task_id);
        }
        let expected = if task.task_id.as_str() == "shared" {
            processes * threads * rounds.div_ceil(3)
        } else {
            rounds
        };
        assert_eq!(task.history.len(), expected, "{}", task.task_id);
    }
    let mut raw = Driver::of(t);
    let gaps = raw.count(
        "SELECT COUNT(*) FROM (SELECT task_id, MAX(seq) AS m, COUNT(*) AS n, COUNT(DISTINCT seq) AS d
         FROM state_transitions GROUP BY task_id) AS per_task WHERE m != n OR n != d",
        &[],
    );
    assert_eq!(gaps, 0, "per-task sequences have no gaps or duplicates");
    if t.backend() == Backend::Sqlite {
        assert_eq!(raw.query("PRAGMA integrity_check", &[]), [[Some("ok".to_owned())]]);
    }
}
}

on_both! {
/// Processes and threads advance one task optimistically, each loading it, stepping and saving
/// in separate transactions, retrying when its save is refused. Every refusal is a stale or
/// diverging save (never a lost or merged one); every accepted save is stored exactly once, in
/// sequence.
fn racing_saves_of_one_task_keep_every_accepted_one_and_refuse_the_stale(t) {
    let (processes, threads, saves): (usize, usize, usize) = (3, 3, 8);
    let children: Vec<_> = (0..processes)
        .map(|i| {
            let name = format!("r{i}");
            worker(&["race", t.location(), &name, &threads.to_string(), &saves.to_string(), "raced"])
        })
        .collect();
    let mut accepted = BTreeSet::new();
    for child in children {
        let out = expect_ok(child);
        let ids = out.trim().strip_prefix("ok ").unwrap_or_else(|| panic!("{out}"));
        for id in ids.split(',') {
            assert!(accepted.insert(id.to_owned()), "{id} accepted twice");
        }
    }
    assert_eq!(accepted.len(), processes * threads * saves);
    let task = SqliteStateStore::new(t.reopen()).load_state(&"raced".into()).unwrap().unwrap();
    let stored: Vec<String> = task
        .history
        .iter()
        .map(|h| h.metadata.as_ref().unwrap()["by"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored.len(), accepted.len(), "one transition per accepted save");
    assert_eq!(stored.iter().cloned().collect::<BTreeSet<_>>(), accepted);
    for pair in task.history.windows(2) {
        assert_eq!(pair[0].to, pair[1].from);
    }
    let seqs = Driver::of(t).query(
        "SELECT seq FROM state_transitions WHERE task_id = 'raced' ORDER BY seq",
        &[],
    );
    let expected: Vec<_> = (1..=stored.len() as i64).map(|i| vec![Some(i.to_string())]).collect();
    assert_eq!(seqs, expected);
}
}

on_both! {
/// A task deleted again and again while threads save it: every delete and every save either
/// goes through or (a save only) is refused as stale, never fails otherwise, and no transition
/// or checkpoint outlives its task.
fn deleting_a_task_while_others_save_it_fails_nothing_and_leaves_no_orphans(t) {
    let (savers, saves, deletes) = (3, 20, 40);
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for k in 0..savers {
            let (store, done) = (SqliteStateStore::new(t.reopen()), &done);
            scope.spawn(move || {
                let mut accepted = 0;
                while accepted < saves {
                    let mut m = match store.load_state(&"doomed".into()).unwrap() {
                        Some(state) => StateMachine::from_persisted(state),
                        None => machine("doomed"),
                    };
                    drive(&mut m, 1);
                    m.create_checkpoint(vec![format!("saver-{k}")]);
                    match store.save_state(m.persisted()) {
                        Ok(()) => accepted += 1,
                        Err(Error::StaleSave { .. } | Error::HistoryConflict { .. }) => {}
                        Err(Error::CheckpointConflict { .. }) => {}
                        Err(e) => panic!("saver {k}: {e}"),
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let store = SqliteStateStore::new(t.reopen());
        scope.spawn(move || {
            for _ in 0..deletes {
                store.delete_state(&"doomed".into()).unwrap();
            }
        });
    });
    assert_eq!(done.into_inner(), savers);
    let mut raw = Driver::of(t);
    for table in ["state_transitions", "checkpoints"] {
        let orphans = raw.count(
            &format!("SELECT COUNT(*) FROM {table} WHERE task_id NOT IN (SELECT task_id FROM workflow_states)"),
            &[],
        );
        assert_eq!(orphans, 0, "{table}");
    }
    if let Some(task) = SqliteStateStore::new(t.reopen()).load_state(&"doomed".into()).unwrap() {
        assert_eq!(task.folded_state(), Some(&task.state));
        let seqs = raw.count(
            "SELECT COUNT(*) FROM state_transitions WHERE task_id = 'doomed' AND seq BETWEEN 1 AND ?1",
            &[Raw::Int(task.history.len() as i64)],
        );
        assert_eq!(seqs, task.history.len() as i64);
    }
}
}

// ---- R11: bad input -----------------------------------------------------------------------

#[test]
fn a_non_database_file_is_a_clear_error_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let notes = "these are my notes, not a database\n".repeat(200);
    std::fs::write(&path, &notes).unwrap();
    let err = Database::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotADatabase { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("{} is not a SQLite database", path.display()));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), notes, "the file is untouched");
}

on_both! {
fn a_database_from_a_newer_schema_is_refused(t) {
    let before = Driver::of(t).every_cell();
    Driver::of(t).execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES (99, 'future', '2030-01-01T00:00:00Z', '1')",
        &[],
    );
    for access in [Access::Create, Access::ReadWrite, Access::ReadOnly] {
        let options = Options { access, ..Options::default() };
        let err = Database::open_with(t.location(), options).unwrap_err();
        assert!(matches!(err, Error::NewerSchema { found: 99, .. }), "{access:?}: {err:?}");
        assert!(err.to_string().contains("newer than this build knows"), "{err}");
    }
    let mut after = Driver::of(t);
    after.execute("DELETE FROM refinery_schema_history WHERE version = 99", &[]);
    assert_eq!(after.every_cell(), before, "refusing changed nothing");
}
}

#[test]
fn a_missing_file_is_not_created_when_creation_is_off_on_sqlite() {
    let (_dir, path) = temp_db();
    let err =
        Database::open_with(&path, Options { access: Access::ReadWrite, ..Options::default() })
            .unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err:?}");
    assert!(!path.exists() && !path.parent().unwrap().exists());
}

/// A path that names a device, a FIFO or a socket (or a link to one) is refused before SQLite
/// opens it, whatever the access: it is not read or written, and no side file (`-journal`,
/// `-wal`, `-shm`) is made beside its name.
#[test]
fn a_device_fifo_or_socket_is_not_a_database_file_and_gets_no_side_files_on_sqlite() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let socket = dir.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let to_null = dir.path().join("to-null");
    symlink("/dev/null", &to_null).unwrap();
    let to_fifo = dir.path().join("to-fifo");
    symlink(&fifo, &to_fifo).unwrap();
    let listing = || {
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    };
    let before = listing();
    let side_of_null = ["-journal", "-wal", "-shm"]
        .map(|s| std::path::Path::new(&format!("/dev/null{s}")).exists());
    let cases = [
        (std::path::PathBuf::from("/dev/null"), "device"),
        (std::path::PathBuf::from("/dev/zero"), "device"),
        (to_null, "device"),
        (fifo, "FIFO"),
        (to_fifo, "FIFO"),
        (socket, "socket"),
    ];
    for (path, kind) in &cases {
        for access in [Access::Create, Access::ReadWrite, Access::ReadOnly] {
            let err =
                Database::open_with(path, Options { access, ..Options::default() }).unwrap_err();
            assert!(matches!(err, Error::NotAFile { .. }), "{path:?} {access:?}: {err:?}");
            let text = err.to_string();
            assert!(text.contains(kind) && text.contains("not a database file"), "{text}");
        }
    }
    assert_eq!(listing(), before);
    assert_eq!(
        ["-journal", "-wal", "-shm"]
            .map(|s| std::path::Path::new(&format!("/dev/null{s}")).exists()),
        side_of_null
    );
}

#[test]
fn an_unwritable_path_is_a_clear_error_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let err = Database::open(blocker.join("sub").join("a.db")).unwrap_err();
    assert!(matches!(err, Error::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot create the database folder"), "{err}");
}

on_both! {
fn malformed_json_in_a_legacy_row_is_a_typed_error_naming_the_row(t) {
    let store = SqliteStateStore::new(t.db().clone());
    store.save_state(&state("good", "p", WorkflowState::Idle, vec![])).unwrap();
    Driver::of(t).execute(
        "INSERT INTO workflow_states (task_id, project_id, state, context) VALUES ('bad', 'p', 'IDLE', '{oops')",
        &[],
    );
    let err = store.load_state(&"bad".into()).unwrap_err();
    assert!(
        matches!(err, Error::CorruptRow { table: "workflow_states", column: "context", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("row bad"), "{err}");
    assert!(store.load_state(&"good".into()).unwrap().is_some());
    assert_eq!(store.load_state(&TaskId::new("unknown")).unwrap(), None);
    let err = store.list_states(&"p".into()).unwrap_err();
    assert!(matches!(err, Error::CorruptRow { column: "context", .. }), "{err:?}");
}
}

// ---- R12: one canonical time form ---------------------------------------------------------

const TIME_COLUMNS: [(&str, &str); 13] = [
    ("workflow_states", "created_at"),
    ("workflow_states", "updated_at"),
    ("state_transitions", "created_at"),
    ("checkpoints", "created_at"),
    ("audit_logs", "timestamp"),
    ("lessons", "created_at"),
    ("lessons", "updated_at"),
    ("execution_traces", "started_at"),
    ("execution_traces", "completed_at"),
    ("agent_invocations", "started_at"),
    ("agent_invocations", "completed_at"),
    ("configurations", "updated_at"),
    ("schema_versions", "applied_at"),
];

fn non_canonical_times(raw: &mut Driver) -> Vec<String> {
    let canonical = regex_lite(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$");
    let mut bad = Vec::new();
    for (table, column) in TIME_COLUMNS {
        let sql = format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL");
        for value in raw.query(&sql, &[]).into_iter().flatten().flatten() {
            if !canonical(&value) {
                bad.push(format!("{table}.{column} = {value}"));
            }
        }
    }
    bad
}

/// `YYYY-MM-DD HH:MM:SS.SSS`, checked by hand to keep regex out of the test dependencies.
fn regex_lite(_: &str) -> impl Fn(&str) -> bool {
    |v: &str| {
        let b = v.as_bytes();
        b.len() == 23
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b' ',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                _ => c.is_ascii_digit(),
            })
    }
}

on_both! {
fn every_stored_timestamp_is_utc_with_milliseconds_in_one_form(t) {
    let db = t.db();
    let mut m = machine("t");
    drive(&mut m, 4);
    m.create_checkpoint(vec![]);
    SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
    ConfigStore::new(db.clone()).set("k", &Scope::Global, &json!(1)).unwrap();
    let mut raw = Driver::of(t);
    assert_eq!(non_canonical_times(&mut raw), Vec::<String>::new());
    // and it compares correctly against the database's own clock, in its own text form
    let a_day_ago = match t.backend() {
        Backend::Sqlite => "datetime('now', '-1 day')",
        Backend::Postgres => {
            "to_char((now() - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
        }
    };
    let sql = format!("SELECT COUNT(*) FROM state_transitions WHERE created_at > {a_day_ago}");
    assert_eq!(raw.count(&sql, &[]), 4);
}
}

// ---- R4 (state part) and R13: legacy adoption and migrations ------------------------------

fn table_rows(conn: &rusqlite::Connection, table: &str, columns: &str) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(&format!("SELECT {columns} FROM {table} ORDER BY rowid")).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                let v: rusqlite::types::Value = r.get(i)?;
                Ok(format!("{v:?}"))
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn legacy_database_is_adopted_in_place_keeping_every_row_on_sqlite() {
    let (_dir, path) = legacy_copy();
    let before = raw(&path);
    let checks = [
        ("workflow_states", "task_id, project_id, state, context"),
        ("state_transitions", "id, task_id, from_state, to_state, event, metadata"),
        ("checkpoints", "id, task_id, state, context, artifacts"),
        ("audit_logs", "id, project_id, task_id, agent, action, category, details, user_id, ip_address"),
        ("lessons", "id, project_id, category, title, summary, details, tags, source_agent, source_file, confidence, application_count"),
        ("execution_traces", "id, project_id, task_id, prompt, success, duration_ms, token_usage, metadata"),
        ("agent_invocations", "id, trace_id, agent, task_fragment, outcome, quality_score, token_usage, output_summary, error"),
    ];
    let old: Vec<_> = checks.iter().map(|(t, c)| table_rows(&before, t, c)).collect();
    let old_times: Vec<_> = TIME_COLUMNS[..11]
        .iter()
        .map(|(t, c)| table_rows(&before, t, &format!("strftime('%Y-%m-%d %H:%M:%f', {c})")))
        .collect();
    drop(before);

    let db = open(&path);
    assert_eq!(db.schema_version().unwrap().migration, migrate::latest_version());
    let after = raw(&path);
    for ((table, columns), old) in checks.iter().zip(old) {
        assert_eq!(table_rows(&after, table, columns), old, "{table} changed");
    }
    for ((table, column), old) in TIME_COLUMNS[..11].iter().zip(old_times) {
        assert_eq!(
            table_rows(&after, table, column),
            old,
            "{table}.{column} is not the same instant"
        );
    }
    assert_eq!(non_canonical_times(&mut Driver::Sqlite(raw(&path))), Vec::<String>::new());
    let found: i64 = after
        .query_row("SELECT COUNT(*) FROM lessons_fts WHERE lessons_fts MATCH 'react'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(found > 0, "legacy lessons are searchable");
    let ok: String = after.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn legacy_tasks_load_with_their_own_state_names_and_table_checkpoints_on_sqlite() {
    let (_dir, path) = legacy_copy();
    let store = SqliteStateStore::new(open(&path));
    let conn = raw(&path);
    let projects: Vec<String> = conn
        .prepare("SELECT DISTINCT project_id FROM workflow_states")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut loaded = 0;
    let mut names = BTreeSet::new();
    for project in &projects {
        for task in store.list_states(&ProjectId::new(project.as_str())).unwrap() {
            names.insert(task.state.as_str().to_owned());
            let stored_cps: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM checkpoints WHERE task_id = ?1",
                    [task.task_id.as_str()],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(task.context.checkpoints.len() as i64, stored_cps);
            assert_eq!(store.load_state(&task.task_id).unwrap().as_ref(), Some(&task));
            loaded += 1;
        }
    }
    assert_eq!(loaded, 20);
    assert!(names.contains("FAILED") && names.contains("REVIEWING"), "{names:?}");
    assert!(!WorkflowState::parse("FAILED").is_known());
}

#[test]
fn migrations_reach_the_latest_version_from_every_earlier_one_and_rerun_changes_nothing_on_sqlite()
{
    let latest = migrate::latest_version();
    for start in 0..=latest {
        let (_dir, path) = temp_db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if start > 0 {
            migrate::run_file_to(&path, start).unwrap();
            raw(&path).execute(
                "INSERT INTO workflow_states (task_id, project_id, state, context, created_at, updated_at)
                 VALUES ('old', 'p', 'IDLE', '{\"projectId\":\"p\",\"taskId\":\"old\"}', '2026-01-01T00:00:00Z', '2026-01-01 00:00:00')",
                [],
            )
            .unwrap();
        }
        let db = open(&path);
        assert_eq!(db.schema_version().unwrap().migration, latest, "from {start}");
        db.close().unwrap();
        let dump = |p: &std::path::Path| -> Vec<Vec<String>> {
            let mut rows = table_rows(&raw(p), "sqlite_master", "type, name, sql");
            rows.extend(table_rows(&raw(p), "workflow_states", "*"));
            rows.extend(table_rows(&raw(p), "refinery_schema_history", "version, name, checksum"));
            rows
        };
        let first = dump(&path);
        open(&path).close().unwrap();
        assert_eq!(dump(&path), first, "a second open changes nothing (from {start})");
        if start > 0 {
            assert!(SqliteStateStore::new(open(&path))
                .load_state(&"old".into())
                .unwrap()
                .is_some());
        }
    }
}

/// Commits never wait for a checkpoint: a background thread copies the WAL into the database
/// file. Reading the file alone (`immutable=1` ignores the WAL) shows every committed row once it
/// has run, well before the WAL reaches the size at which a commit would checkpoint itself.
#[test]
fn the_wal_is_checkpointed_into_the_file_off_the_commit_path_on_sqlite() {
    let (_dir, path) = temp_db();
    let config = ConfigStore::new(open(&path));
    for i in 0..300 {
        config.set(&format!("key-{i}"), &Scope::Global, &json!(i)).unwrap();
    }
    let uri = format!("file:{}?immutable=1", path.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let conn = rusqlite::Connection::open_with_flags(&uri, flags).unwrap();
        let in_file: i64 =
            conn.query_row("SELECT COUNT(*) FROM configurations", [], |r| r.get(0)).unwrap_or(0);
        if in_file == 300 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {in_file} of 300 rows reached the file"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(config.get("key-299", None).unwrap().is_some());
}

on_both! {
fn agents_and_metadata_under_secret_names_keep_a_context_that_loads_and_saves_again(t) {
    // An agent named `auth` or `session` is a secret-looking key: its output keeps its shape
    // (strings and numbers go, objects, arrays and flags stay), so the task still loads.
    let names = [
        "auth",
        "session",
        "token",
        "credentials",
        "password",
        "secret",
        "api_key",
        "privateKey",
        "sessionId",
        "Authorization",
        "passwd",
        "cookie",
        "accessKey",
    ];
    for (i, name) in names.into_iter().enumerate() {
        let store = SqliteStateStore::new(t.db().clone());
        let task = format!("task-{i}");
        let mut ctx = StateContext::new("p".into(), task.as_str().into(), "Build it");
        ctx.agent_queue.push(name.into());
        let output = ctx.agent_outputs.entry(name.into()).or_default();
        output.routing_hints.suggest_next = vec!["tester".into()];
        output.routing_hints.needs_approval = true;
        output.extra.insert("summary".into(), json!("done"));
        output.extra.insert("tokensUsed".into(), json!(1200));
        output.extra.insert("files".into(), json!([{"path": "a.rs", "lines": 3}]));
        ctx.metadata.insert(name.into(), json!({"nested": {"list": [1, "x", null, true]}}));
        ctx.task_analysis = Some(json!({name: {"complexity": 3}}));
        let mut m = StateMachine::new(ctx);
        drive(&mut m, 2);
        m.create_checkpoint(vec![]);
        store.save_state(m.persisted()).unwrap();

        let loaded = store.load_state(&task.as_str().into()).unwrap().unwrap_or_else(|| {
            panic!("{name}: the saved task is not found");
        });
        let out = &loaded.context.agent_outputs[name];
        assert_eq!(out.routing_hints.suggest_next, vec!["[REDACTED]".to_string()], "{name}");
        assert!(out.routing_hints.needs_approval, "{name}");
        assert_eq!(out.extra["files"], json!([{"path": "[REDACTED]", "lines": "[REDACTED]"}]));
        assert_eq!(
            loaded.context.metadata[name],
            json!({"nested": {"list": ["[REDACTED]", "[REDACTED]", null, true]}}),
            "{name}"
        );

        // The next save compares against what was stored and goes on.
        let mut m = StateMachine::from_persisted(loaded);
        drive(&mut m, 2);
        store.save_state(m.persisted()).unwrap();
        let again = store.load_state(&task.as_str().into()).unwrap().unwrap();
        assert_eq!(again.history.len(), 4, "{name}");
    }
}
}

on_both! {
/// `Param::refusal` tells beforehand, value by value, whether binding refuses a value on the
/// backend and why (NaN and times outside the stored years on both, text holding U+0000 on
/// PostgreSQL): the rule a store writing many rows at once checks to name the row at fault.
fn what_binding_refuses_is_told_beforehand_by_the_same_rule(t) {
    use aigentflow::persistence::Param;
    use chrono::NaiveDate;
    let db = t.db();
    db.write(|tx| tx.execute_batch("CREATE TABLE refusals (n BIGINT, r DOUBLE PRECISION, x TEXT)")).unwrap();
    let day = |y: i32| NaiveDate::from_ymd_opt(y, 1, 1).unwrap();
    let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap().and_utc();
    let values: Vec<(&str, Param<'static>)> = vec![
        ("n", Param::int(5)),
        ("n", Param::NULL),
        ("r", Param::real(1.5)),
        ("r", Param::real(f64::INFINITY)),
        ("r", Param::real(f64::NAN)),
        ("x", Param::time(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap())),
        ("x", Param::time(day(9999).and_hms_opt(23, 59, 59).unwrap().and_utc())),
        ("x", Param::time(day(0).and_hms_opt(0, 0, 0).unwrap().and_utc())),
        ("x", Param::time(day(10000).and_hms_opt(0, 0, 0).unwrap().and_utc())),
        ("x", Param::time(day(-1).and_hms_opt(0, 0, 0).unwrap().and_utc())),
        ("x", Param::time(leap)),
        ("x", Param::text("plain")),
        ("x", Param::text("a\0b")),
        ("x", Param::text("\0")),
    ];
    let mut refused = 0;
    for (column, value) in &values {
        let told = value.refusal(t.backend());
        let bound = db.write(|tx| tx.execute(&format!("INSERT INTO refusals ({column}) VALUES (?1)"), std::slice::from_ref(value)));
        assert_eq!(told.is_some(), bound.is_err(), "{value:?}: told {told:?}, bound {bound:?}");
        if let (Some(why), Err(e)) = (told, bound) {
            assert!(e.to_string().contains(why), "{value:?}: {e}");
            refused += 1;
        }
    }
    assert_eq!(refused, if t.backend() == Backend::Postgres { 6 } else { 4 });
}
}

on_both! {
/// `Tx::text_rows` (a binary COPY on PostgreSQL, whose parameters go in as settings of the
/// transaction) gives every row and cell a query gives, as `Row::append_bytes` writes it:
/// text of any bytes and length (quotes, backslashes, line breaks, `$1`, a cell longer than a
/// message), whole numbers to their extremes, reals, booleans, NULL in every column; and the
/// same rows for any parameters, text that looks like SQL included.
fn text_rows_are_the_rows_and_cells_a_query_gives_whatever_the_parameters(t) {
    use aigentflow::persistence::Param;
    let db = t.db();
    db.write(|tx| tx.execute_batch("CREATE TABLE probe_cells (id BIGINT PRIMARY KEY, t TEXT, n BIGINT, r DOUBLE PRECISION, b BOOLEAN)")).unwrap();
    let long = "x".repeat(70_000);
    let texts: Vec<&str> = vec![
        "", "a", "'", "''", "\\", "\\.", "$1", "?1", "O'Brien", "line\nbreak\r\n", "tab\t;", "日本",
        "\"quoted\"", "') TO STDOUT; DROP TABLE probe_cells; --", "current_setting('aigentflow.copy_1')",
        &long,
    ];
    let numbers = [0, -1, 1, i64::MIN, i64::MAX, 42];
    let reals = [0.1, -2.5e300, 1.0 / 3.0, 5e-324, 0.0];
    // A boolean: SQLite takes 0 or 1, PostgreSQL text it casts.
    let pg = t.backend() == Backend::Postgres;
    let insert = if pg {
        "INSERT INTO probe_cells (id, t, n, r, b) VALUES (?1, ?2, ?3, ?4, CAST(?5 AS TEXT)::boolean)"
    } else {
        "INSERT INTO probe_cells (id, t, n, r, b) VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    db.write(|tx| {
        for (i, text) in texts.iter().enumerate() {
            let k = i64::try_from(i).unwrap();
            let b = match (pg, k % 2 == 1) {
                (true, yes) => Param::text(if yes { "true" } else { "false" }),
                (false, yes) => Param::int(i64::from(yes)),
            };
            let (n, r) = (numbers[i % numbers.len()], reals[i % reals.len()]);
            tx.execute(insert, &[Param::int(k), Param::text(text), Param::int(n), Param::real(r), b])?;
        }
        tx.execute("INSERT INTO probe_cells (id) VALUES (?1)", &[Param::int(1000)])?;
        Ok::<(), aigentflow::persistence::Error>(())
    })
    .unwrap();
    type Rows = Vec<Vec<Option<Vec<u8>>>>;
    let cell = |append: &mut dyn FnMut(&mut Vec<u8>) -> aigentflow::persistence::Result<bool>| {
        let mut out = Vec::new();
        append(&mut out).map(|stored| stored.then_some(out))
    };
    // `setting`: the first parameter that is not NULL, as text.
    let both = |sql: &str, params: &[Param<'_>], setting: Option<&str>| -> (Rows, Rows) {
        db.read(|tx| {
            let mut copied: Rows = Vec::new();
            let n = tx.text_rows(sql, params, |r| -> aigentflow::persistence::Result<()> {
                copied.push((0..r.len()).map(|i| cell(&mut |out| r.append(i, out))).collect::<aigentflow::persistence::Result<_>>()?);
                Ok(())
            })?;
            assert_eq!(n, copied.len() as u64);
            if let Some(setting) = setting.filter(|_| pg) {
                // The rows came through COPY: the first parameter is a setting of the
                // transaction now (a query would have bound it).
                let set = tx.query_row("SELECT current_setting('aigentflow.copy_1', true)", &[], |r| r.get::<Option<String>>(0))?;
                assert_eq!(set.flatten().as_deref(), Some(setting), "{sql}: no COPY");
            }
            let mut stmt = tx.prepare(sql)?;
            let queried: Rows = stmt.query_map(params, |r| {
                (0..r.len()).map(|i| cell(&mut |out| r.append_bytes(i, out))).collect()
            })?;
            Ok::<_, aigentflow::persistence::Error>((copied, queried))
        })
        .unwrap()
    };
    let all = "SELECT id, t, n, r, b FROM probe_cells ORDER BY id";
    let (copied, queried) = both(all, &[], None);
    assert_eq!(copied.len(), texts.len() + 1);
    assert_eq!(copied, queried);
    assert!(copied.iter().any(|row| row[1].as_deref() == Some(long.as_bytes())));
    assert_eq!(copied.last().unwrap()[1..], [None, None, None, None]);
    for text in &texts {
        let (copied, queried) = both("SELECT id, t FROM probe_cells WHERE t = ?1 ORDER BY id", &[Param::text(text)], Some(text));
        assert_eq!(copied, queried, "{text:?}");
        assert_eq!(copied.len(), 1, "{text:?}");
    }
    for (low, limit, offset) in [(None, 3, 0), (Some(0), 100, 1), (Some(i64::MIN), 2, 2), (Some(i64::MAX), 5, 0)] {
        let setting = low.unwrap_or(limit).to_string();
        let low = low.map_or(Param::NULL, Param::int);
        let sql = "SELECT id, n, r FROM probe_cells WHERE (CAST(?1 AS BIGINT) IS NULL OR n >= ?1) ORDER BY id LIMIT ?2 OFFSET ?3";
        let (copied, queried) = both(sql, &[low, Param::int(limit), Param::int(offset)], Some(&setting));
        assert_eq!(copied, queried, "{sql} {limit} {offset}");
    }
    // The table is as it was: the text that looks like SQL was a value.
    assert_eq!(both(all, &[], None).0.len(), texts.len() + 1);
}
}

on_both! {
/// A `text_rows` reader that stops early (an error from its callback) gets that error back and
/// no more rows, and the database goes on working (on PostgreSQL the COPY is cancelled, not
/// read to its end); a statement run from inside the callback is an error on PostgreSQL,
/// whose connection is streaming the rows, never a panic, and runs on SQLite.
fn text_rows_stopped_early_or_used_from_inside_leave_the_database_working(t) {
    use aigentflow::persistence::Param;
    #[derive(Debug)]
    enum Stop {
        Here,
        Db(Error),
    }
    impl From<Error> for Stop {
        fn from(e: Error) -> Self {
            Stop::Db(e)
        }
    }
    let db = t.db();
    let long = "x".repeat(300);
    db.write(|tx| {
        tx.execute_batch("CREATE TABLE many_rows (id BIGINT PRIMARY KEY, t TEXT)")?;
        for i in 0..3_000 {
            tx.execute("INSERT INTO many_rows (id, t) VALUES (?1, ?2)", &[Param::int(i), Param::text(&long)])?;
        }
        Ok::<(), Error>(())
    })
    .unwrap();
    let sql = "SELECT id, t FROM many_rows ORDER BY id";
    for stop_at in [1, 2, 1_000] {
        let mut seen = 0;
        let read = db.read(|tx| {
            tx.text_rows(sql, &[], |_| {
                seen += 1;
                if seen == stop_at { Err(Stop::Here) } else { Ok(()) }
            })
        });
        match read {
            Err(Stop::Here) => {}
            Err(Stop::Db(e)) => panic!("the stop came back as the database's error: {e}"),
            Ok(n) => panic!("read {n} rows past the stop"),
        }
        assert_eq!(seen, stop_at);
    }
    let inside = db.read(|tx| {
        tx.text_rows(sql, &[], |_| tx.query_row("SELECT 1", &[], |r| r.get::<i64>(0)).map(|_| ()))
    });
    match t.backend() {
        Backend::Postgres => {
            let e = inside.unwrap_err();
            assert!(e.to_string().contains("text_rows"), "{e}");
        }
        Backend::Sqlite => assert_eq!(inside.unwrap(), 3_000),
    }
    let all = db.read(|tx| tx.text_rows(sql, &[], |_| Ok::<(), Error>(()))).unwrap();
    assert_eq!(all, 3_000);
}
}
