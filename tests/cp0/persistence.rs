//! Step 04 "Database initialization" and "SQLiteStateStore" twins, plus RELIABILITY.md R2, R3,
//! R4 (state part), R10 (state part), R11 (database part), R12 and R13.

use std::collections::BTreeSet;
use std::sync::Arc;

use aigentflow::persistence::{
    migrate, Access, ConfigStore, Database, Error, ManualClock, Options, Scope, SqliteStateStore,
};
use aigentflow::states::{
    Event, PersistedState, ProjectId, StateContext, StateMachine, StateStore, StateTransition,
    TaskId, WorkflowState,
};
use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

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

fn tables(db: &Database) -> BTreeSet<String> {
    db.read(|tx| {
        let mut stmt =
            tx.sqlite().unwrap().prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let names = stmt.query_map([], |r| r.get(0))?.collect::<Result<BTreeSet<String>, _>>()?;
        Ok::<_, Error>(names)
    })
    .unwrap()
}

// ---- Database initialization -------------------------------------------------------------

#[test]
fn database_creates_schema_on_first_run() {
    let (_dir, path) = temp_db();
    assert!(!path.parent().unwrap().exists());
    let db = open(&path);
    assert!(path.exists(), "the file and its folder are created");
    let names = tables(&db);
    for t in [
        "workflow_states",
        "state_transitions",
        "checkpoints",
        "audit_logs",
        "lessons",
        "lessons_fts",
        "execution_traces",
        "agent_invocations",
        "configurations",
        "schema_versions",
    ] {
        assert!(names.contains(t), "missing table {t}");
    }
    let in_memory = Database::open_in_memory().unwrap();
    assert!(tables(&in_memory).contains("workflow_states"));
}

#[test]
fn schema_version_is_recorded() {
    let db = Database::open_in_memory().unwrap();
    let version = db.schema_version().unwrap();
    assert_eq!(version.seed.as_deref(), Some("1.0.0"));
    assert_eq!(version.migration, migrate::latest_version());
    assert_eq!(version.latest, version.migration);
}

#[test]
fn database_uses_wal_foreign_keys_and_the_durability_option() {
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
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
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

#[test]
fn state_store_lists_states_by_project() {
    let store = SqliteStateStore::new(Database::open_in_memory().unwrap());
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
}

#[test]
fn state_store_deletes_state_with_its_history_and_checkpoints() {
    let (_dir, path) = temp_db();
    let store = SqliteStateStore::new(open(&path));
    let mut m = machine("task-1");
    drive(&mut m, 3);
    m.create_checkpoint(vec!["a.rs".into()]);
    store.save_state(m.persisted()).unwrap();
    assert!(store.delete_state(&"task-1".into()).unwrap());
    assert_eq!(store.load_state(&"task-1".into()).unwrap(), None);
    assert!(!store.delete_state(&"task-1".into()).unwrap(), "unknown id: false, not an error");
    let conn = raw(&path);
    for table in ["state_transitions", "checkpoints", "workflow_states"] {
        let n: i64 =
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0, "{table}");
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

#[test]
fn transitions_are_recorded_once_each_with_a_gapless_sequence() {
    let (_dir, path) = temp_db();
    let store = SqliteStateStore::new(open(&path));
    let mut m = machine("task-1");
    for _ in 0..12 {
        drive(&mut m, 1);
        store.save_state(m.persisted()).unwrap();
        store.save_state(m.persisted()).unwrap(); // a repeated save changes nothing
    }
    let conn = raw(&path);
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM state_transitions WHERE task_id = 'task-1' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    let (from, to, event, meta): (String, String, String, String) = conn
        .query_row(
            "SELECT from_state, to_state, event, metadata FROM state_transitions WHERE seq = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (from.as_str(), to.as_str(), event.as_str(), meta.as_str()),
        ("IDLE", "ANALYZING", "START", r#"{"n":0}"#)
    );
}

#[test]
fn repeated_save_does_not_touch_the_row() {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        Duration::seconds(1),
    ));
    let db = Database::open_in_memory_with(Options { clock, ..Options::default() }).unwrap();
    let store = SqliteStateStore::new(db.clone());
    let s = state("t", "p", WorkflowState::Idle, vec![]);
    store.save_state(&s).unwrap();
    let updated = |db: &Database| -> String {
        db.read(|tx| {
            Ok::<_, Error>(tx.sqlite().unwrap().query_row(
                "SELECT updated_at FROM workflow_states",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap()
    };
    let first = updated(&db);
    store.save_state(&s).unwrap();
    assert_eq!(updated(&db), first);
}

#[test]
fn stale_or_diverging_saves_are_refused_and_write_nothing() {
    let store = SqliteStateStore::new(Database::open_in_memory().unwrap());
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

/// A saved task with `n` transitions and a checkpoint every third step, and its store.
fn saved_task(n: usize) -> (SqliteStateStore, StateMachine) {
    let store = SqliteStateStore::new(Database::open_in_memory().unwrap());
    let mut m = machine("task-1");
    for i in 0..n {
        drive(&mut m, 1);
        if i % 3 == 2 {
            m.create_checkpoint(vec![format!("file-{i}")]);
        }
    }
    store.save_state(m.persisted()).unwrap();
    (store, m)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// A save whose history differs from the stored one anywhere up to the last stored
    /// transition (event, states, time to the millisecond, or metadata) is refused, naming the
    /// first differing transition, and writes nothing.
    #[test]
    fn a_diverging_history_is_refused_naming_its_first_differing_transition(
        n in 2usize..24, at in 0usize..24, field in 0u8..4, extra in 0usize..3,
    ) {
        let at = at % n;
        let (store, m) = saved_task(n);
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
        let is_conflict = matches!(&err, Error::HistoryConflict { seq, .. } if *seq == at as u64 + 1);
        proptest::prop_assert!(is_conflict, "{err}");
        proptest::prop_assert_eq!(
            store.load_state(&"task-1".into()).unwrap().unwrap(),
            m.persisted().clone()
        );
    }

    /// Checkpoints are compared too: a save whose checkpoints are fewer than the stored ones is
    /// stale, and one whose checkpoints differ is refused naming the first differing one.
    #[test]
    fn diverging_or_missing_checkpoints_are_refused_and_write_nothing(
        n in 3usize..24, at in 0usize..8, kind in 0u8..3,
    ) {
        let (store, m) = saved_task(n);
        let stored = m.persisted().context.checkpoints.len();
        let at = at % stored;
        let mut given = m.persisted().clone();
        drive_persisted(&mut given);
        let err = match kind {
            0 => {
                given.context.checkpoints.truncate(at);
                store.save_state(&given).unwrap_err()
            }
            1 => {
                for i in [at, stored - 1] {
                    given.context.checkpoints[i].id = format!("other-{i}").into();
                }
                store.save_state(&given).unwrap_err()
            }
            _ => {
                for i in [at, stored - 1] {
                    given.context.checkpoints[i].timestamp += Duration::milliseconds(1);
                }
                store.save_state(&given).unwrap_err()
            }
        };
        let named = match (&err, kind) {
            (Error::StaleSave { what: "checkpoints", given: g, .. }, 0) => *g == at as u64,
            (Error::CheckpointConflict { seq, .. }, 1 | 2) => *seq == at as u64 + 1,
            _ => false,
        };
        proptest::prop_assert!(named, "{err}");
        proptest::prop_assert_eq!(
            store.load_state(&"task-1".into()).unwrap().unwrap(),
            m.persisted().clone()
        );
    }
}

/// One more transition on a persisted state, as a later save would carry.
fn drive_persisted(state: &mut PersistedState) {
    let mut m = StateMachine::from_persisted(state.clone());
    drive(&mut m, 1);
    *state = m.persisted().clone();
}

#[test]
fn states_events_and_checkpoint_ids_that_redaction_changes_still_save_again() {
    // Stored through the redaction policy, they are compared the same way on the next save.
    let key = format!("AKIA{}", "Q7W2E3R4T5Y6U7I2");
    let store = SqliteStateStore::new(Database::open_in_memory().unwrap());
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

#[test]
fn a_corrupt_stored_sequence_number_is_a_typed_error_not_a_panic() {
    for seq in [0i64, -1, i64::MIN] {
        for table in ["state_transitions", "checkpoints"] {
            let (_dir, path) = temp_db();
            let store = SqliteStateStore::new(open(&path));
            let mut m = machine("task-1");
            drive(&mut m, 3);
            m.create_checkpoint(vec![]);
            store.save_state(m.persisted()).unwrap();
            raw(&path)
                .execute(
                    &format!(
                        "UPDATE {table} SET seq = ?1 WHERE seq = (SELECT MAX(seq) FROM {table})"
                    ),
                    [seq],
                )
                .unwrap();
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

#[test]
fn checkpoints_are_saved_and_loadable_and_kept_out_of_the_context_json() {
    let (_dir, path) = temp_db();
    let store = SqliteStateStore::new(open(&path));
    let mut m = machine("task-1");
    drive(&mut m, 3);
    let first = m.create_checkpoint(vec!["src/a.rs".into(), "docs/notes on b.md".into()]);
    store.save_state(m.persisted()).unwrap();
    drive(&mut m, 2);
    let second = m.create_checkpoint(vec![]);
    store.save_state(m.persisted()).unwrap();
    let loaded = store.load_state(&"task-1".into()).unwrap().unwrap();
    assert_eq!(loaded.context.checkpoints, vec![first.clone(), second]);
    let context: String =
        raw(&path).query_row("SELECT context FROM workflow_states", [], |r| r.get(0)).unwrap();
    assert!(!context.contains("checkpoints"), "{context}");
    // A loaded checkpoint can be restored after an error.
    let mut resumed = StateMachine::from_persisted(loaded);
    resumed.apply(Event::Error, None).unwrap();
    resumed.apply(Event::StartRecovery, None).unwrap();
    resumed.restore_checkpoint(&first.id).unwrap();
    assert_eq!(resumed.state(), &first.state);
}

#[test]
fn unknown_context_fields_survive_a_load_save_round_trip() {
    let (_dir, path) = temp_db();
    let store = SqliteStateStore::new(open(&path));
    store.save_state(&state("t", "p", WorkflowState::Idle, vec![])).unwrap();
    raw(&path)
        .execute(
            "UPDATE workflow_states SET context = json_set(context, '$.futureField', json('{\"a\":[1,2]}'), '$.metadata.other', 'x')",
            [],
        )
        .unwrap();
    let loaded = store.load_state(&"t".into()).unwrap().unwrap();
    let mut m = StateMachine::from_persisted(loaded);
    m.apply(Event::Start, None).unwrap();
    store.save_state(m.persisted()).unwrap();
    let context: String =
        raw(&path).query_row("SELECT context FROM workflow_states", [], |r| r.get(0)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&context).unwrap();
    assert_eq!(value["futureField"], json!({"a": [1, 2]}));
    assert_eq!(value["metadata"]["other"], "x");
}

#[test]
fn resumable_tasks_are_the_non_terminal_ones_with_their_latest_checkpoint() {
    let store = SqliteStateStore::new(Database::open_in_memory().unwrap());
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
}

// ---- Transactions (decision 4) ------------------------------------------------------------

#[test]
fn a_transaction_across_stores_commits_together_or_rolls_back_together() {
    let db = Database::open_in_memory().unwrap();
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

// ---- R10: secrets never reach the file (state store) --------------------------------------

#[test]
fn secrets_in_state_context_checkpoints_and_metadata_never_reach_the_file() {
    let (_dir, path) = temp_db();
    let secret_ant = format!("sk-ant-api03-{}", "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2");
    let secret_aws = format!("AKIA{}", "ZZZZ1111YYYY2222");
    let password = "correct-horse-battery-staple";
    {
        let db = open(&path);
        let store = SqliteStateStore::new(db.clone());
        let mut ctx =
            StateContext::new("p".into(), "t".into(), format!("use key {secret_ant} please"));
        ctx.metadata.insert("password".into(), json!(password));
        ctx.metadata.insert("aws".into(), json!(format!("id={secret_aws}")));
        let mut m = StateMachine::new(ctx);
        m.apply(Event::Start, Some(json!({"api_key": password, "note": secret_ant}))).unwrap();
        m.create_checkpoint(vec![format!("keys/{secret_aws}.txt")]);
        store.save_state(m.persisted()).unwrap();
        let loaded = store.load_state(&"t".into()).unwrap().unwrap();
        assert!(loaded.context.prompt.contains("[REDACTED]"));
        let bytes = file_bytes(&path);
        for s in [&secret_ant, &secret_aws, password] {
            assert!(!contains(&bytes, s), "{s} reached the database file");
        }
    }
}

// ---- R3: concurrent first open; R2: contention across processes --------------------------

#[test]
fn concurrent_first_open_migrates_exactly_once() {
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
    assert_eq!((rows, distinct), (migrate::latest_version(), migrate::latest_version()));
    let seed: i64 =
        conn.query_row("SELECT COUNT(*) FROM schema_versions", [], |r| r.get(0)).unwrap();
    assert_eq!(seed, 1);
}

#[test]
fn processes_and_threads_saving_at_once_lose_and_duplicate_nothing() {
    let (_dir, path) = temp_db();
    open(&path);
    let p = path.to_str().unwrap();
    let (processes, threads, rounds): (usize, usize, usize) = (3, 3, 30);
    let children: Vec<_> = (0..processes)
        .map(|i| {
            worker(&[
                "save",
                p,
                &format!("w{i}"),
                &threads.to_string(),
                &rounds.to_string(),
                "shared",
            ])
        })
        .collect();
    for child in children {
        expect_ok(child); // a SQLITE_BUSY reaching a caller would fail the worker
    }
    let db = open(&path);
    let store = SqliteStateStore::new(db);
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
    let conn = raw(&path);
    let gaps: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT task_id, MAX(seq) AS m, COUNT(*) AS n, COUNT(DISTINCT seq) AS d
             FROM state_transitions GROUP BY task_id) WHERE m != n OR n != d",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gaps, 0, "per-task sequences have no gaps or duplicates");
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}

// ---- R11: bad input -----------------------------------------------------------------------

#[test]
fn a_non_database_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let notes = "these are my notes, not a database\n".repeat(200);
    std::fs::write(&path, &notes).unwrap();
    let err = Database::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotADatabase { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("{} is not a SQLite database", path.display()));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), notes, "the file is untouched");
}

#[test]
fn a_database_from_a_newer_schema_is_refused() {
    let (_dir, path) = temp_db();
    open(&path);
    raw(&path)
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (99, 'future', '2030-01-01T00:00:00Z', '1')",
            [],
        )
        .unwrap();
    let err = Database::open(&path).unwrap_err();
    assert!(matches!(err, Error::NewerSchema { found: 99, .. }), "{err:?}");
    assert!(err.to_string().contains("newer than this build knows"), "{err}");
}

#[test]
fn a_missing_file_is_not_created_when_creation_is_off() {
    let (_dir, path) = temp_db();
    let err =
        Database::open_with(&path, Options { access: Access::ReadWrite, ..Options::default() })
            .unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err:?}");
    assert!(!path.exists() && !path.parent().unwrap().exists());
}

#[test]
fn an_unwritable_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let err = Database::open(blocker.join("sub").join("a.db")).unwrap_err();
    assert!(matches!(err, Error::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot create the database folder"), "{err}");
}

#[test]
fn malformed_json_in_a_legacy_row_is_a_typed_error_naming_the_row() {
    let (_dir, path) = temp_db();
    let store = SqliteStateStore::new(open(&path));
    store.save_state(&state("good", "p", WorkflowState::Idle, vec![])).unwrap();
    raw(&path)
        .execute(
            "INSERT INTO workflow_states (task_id, project_id, state, context) VALUES ('bad', 'p', 'IDLE', '{oops')",
            [],
        )
        .unwrap();
    let err = store.load_state(&"bad".into()).unwrap_err();
    assert!(
        matches!(err, Error::CorruptRow { table: "workflow_states", column: "context", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("row bad"), "{err}");
    assert!(store.load_state(&"good".into()).unwrap().is_some());
    assert_eq!(store.load_state(&TaskId::new("unknown")).unwrap(), None);
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

fn non_canonical_times(conn: &rusqlite::Connection) -> Vec<String> {
    let canonical = regex_lite(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$");
    let mut bad = Vec::new();
    for (table, column) in TIME_COLUMNS {
        let mut stmt = conn
            .prepare(&format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL"))
            .unwrap();
        for value in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            let value = value.unwrap();
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

#[test]
fn every_stored_timestamp_is_utc_with_milliseconds_in_one_form() {
    let (_dir, path) = temp_db();
    let db = open(&path);
    let mut m = machine("t");
    drive(&mut m, 4);
    m.create_checkpoint(vec![]);
    SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
    ConfigStore::new(db).set("k", &Scope::Global, &json!(1)).unwrap();
    assert_eq!(non_canonical_times(&raw(&path)), Vec::<String>::new());
    // and it compares correctly against SQLite's own datetime('now') values
    let newer: i64 = raw(&path)
        .query_row(
            "SELECT COUNT(*) FROM state_transitions WHERE created_at > datetime('now', '-1 day')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(newer, 4);
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
fn legacy_database_is_adopted_in_place_keeping_every_row() {
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
    assert_eq!(non_canonical_times(&after), Vec::<String>::new());
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
fn legacy_tasks_load_with_their_own_state_names_and_table_checkpoints() {
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
fn migrations_reach_the_latest_version_from_every_earlier_one_and_rerun_changes_nothing() {
    let latest = migrate::latest_version();
    for start in 0..=latest {
        let (_dir, path) = temp_db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if start > 0 {
            let mut conn = raw(&path);
            migrate::run_to(&mut conn, &path, start).unwrap();
            conn.execute(
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
fn the_wal_is_checkpointed_into_the_file_off_the_commit_path() {
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

#[test]
fn agents_and_metadata_under_secret_names_keep_a_context_that_loads_and_saves_again() {
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
        let store = SqliteStateStore::new(Database::open_in_memory().unwrap());
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
