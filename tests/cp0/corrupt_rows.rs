//! RELIABILITY.md R20, corrupt rows: a stored value that cannot be read is a `CorruptRow` error
//! naming the table, the column and the row, never a default shown as if it were stored (a 1970
//! timestamp, a count of 0, u32::MAX attempts).
//!
//! The state store's and the configuration's rows are corrupted on both backends, through the
//! backend's own driver (rusqlite on the file, the `postgres` crate on the server).

use aigentflow::audit::{AuditEntry, AuditLog, AuditQuery, Category};
use aigentflow::lessons::{self, LessonsStore, NewLesson};
use aigentflow::persistence::{ConfigStore, Database, Error as PError, Scope, SqliteStateStore};
use aigentflow::states::{Event, StateContext, StateMachine, StateStore};
use aigentflow::tracker::{self, ExecutionTracker};
use proptest::prelude::*;

use crate::inspect::{Driver, Raw};
use crate::support::*;

/// The table, column and row a `CorruptRow` names, or a failure naming what came instead.
fn corrupt_at(err: &PError) -> (&'static str, &'static str, String) {
    match err {
        PError::CorruptRow { table, column, id, .. } => (table, column, id.as_str().to_owned()),
        other => panic!("expected a corrupt-row error, got {other:?}"),
    }
}

/// Timestamps no reader can take: near misses of every accepted form, and arbitrary text.
fn unreadable_timestamp() -> impl Strategy<Value = String> {
    let near_misses = prop::sample::select(vec![
        "",
        " ",
        "yesterday",
        "0",
        "1970",
        "2026-13-01 00:00:00.000",
        "2026-02-30 10:00:00.000",
        "2026-11-21 24:00:00.000",
        "2026-11-21 10:60:00.000",
        "2026-11-21T10:00:00+25:00",
        "2026/11/21 10:00:00",
        "21-11-2026",
        "2026-11-21 10:00:00.000 trailing",
        "2026-11-21 10:00:00.00x",
    ]);
    prop_oneof![
        near_misses.prop_map(str::to_owned),
        "\\PC{0,40}".prop_filter("unreadable", |s| aigentflow::states::time::parse(s).is_none()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// An audit row whose timestamp cannot be read makes the query an error naming
    /// audit_logs.timestamp and the row, instead of showing the row at 1970-01-01.
    #[test]
    fn an_unreadable_audit_timestamp_is_a_corrupt_row_error_not_1970(stamp in unreadable_timestamp()) {
        let db = Database::open_in_memory().unwrap();
        let log = AuditLog::new(db.clone());
        log.log(&AuditEntry::new("kept", Category::User)).unwrap();
        let id: i64 = db
            .write(|tx| {
                tx.sqlite().unwrap().execute(
                    "INSERT INTO audit_logs(timestamp, action, category) VALUES (?1, 'odd', 'user')",
                    [&stamp],
                ).unwrap();
                Ok::<_, PError>(tx.sqlite().unwrap().last_insert_rowid())
            })
            .unwrap();
        let err = log.query(&AuditQuery::default()).unwrap_err();
        let aigentflow::audit::Error::Persistence(err) = &err else { panic!("{err:?}") };
        prop_assert_eq!(corrupt_at(err), ("audit_logs", "timestamp", id.to_string()));
        prop_assert!(err.to_string().contains(&format!("\"{stamp}\"")), "{}", err);
    }

    /// A negative stored application count is a corrupt row, not a lesson applied 0 times.
    #[test]
    fn a_negative_application_count_is_a_corrupt_row_error(count in i64::MIN..0) {
        let db = Database::open_in_memory().unwrap();
        let store = LessonsStore::new(db.clone());
        let lesson = store.create(&NewLesson::new(lessons::Category::Pattern, "t", "s")).unwrap();
        db.write(|tx| {
            tx.sqlite().unwrap().execute(
                "UPDATE lessons SET application_count = ?1 WHERE id = ?2",
                rusqlite::params![count, lesson.id.as_str()],
            ).unwrap();
            Ok::<_, PError>(())
        })
        .unwrap();
        let err = store.get(&lesson.id).unwrap_err();
        let lessons::Error::Persistence(err) = &err else { panic!("{err:?}") };
        prop_assert_eq!(
            corrupt_at(err),
            ("lessons", "application_count", lesson.id.as_str().to_owned())
        );
    }

    /// A stored number of recovery attempts outside 0..=u32::MAX is a corrupt row, not u32::MAX.
    #[test]
    fn an_impossible_recovery_attempt_count_is_a_corrupt_row_error(
        attempts in prop_oneof![i64::MIN..0, i64::from(u32::MAX) + 1..=i64::MAX]
    ) {
        let db = Database::open_in_memory().unwrap();
        let tracker = ExecutionTracker::new(db.clone());
        let trace = tracker.start_trace(&"p".into(), &"t".into(), "prompt").unwrap();
        db.write(|tx| {
            tx.sqlite().unwrap().execute(
                "UPDATE execution_traces SET recovery_attempts = ?1 WHERE id = ?2",
                rusqlite::params![attempts, trace.id.as_str()],
            ).unwrap();
            Ok::<_, PError>(())
        })
        .unwrap();
        let err = tracker.get_trace(&trace.id).unwrap_err();
        let tracker::Error::Persistence(err) = &err else { panic!("{err:?}") };
        prop_assert_eq!(
            corrupt_at(err),
            ("execution_traces", "recovery_attempts", trace.id.as_str().to_owned())
        );
    }
}

#[test]
fn readable_edge_values_still_read_back() {
    let db = Database::open_in_memory().unwrap();
    let store = LessonsStore::new(db.clone());
    let lesson = store.create(&NewLesson::new(lessons::Category::Pattern, "t", "s")).unwrap();
    let tracker = ExecutionTracker::new(db.clone());
    let trace = tracker.start_trace(&"p".into(), &"t".into(), "prompt").unwrap();
    db.write(|tx| {
        tx.sqlite().unwrap().execute("UPDATE lessons SET application_count = NULL", []).unwrap();
        tx.sqlite()
            .unwrap()
            .execute("UPDATE execution_traces SET recovery_attempts = ?1", [u32::MAX])
            .unwrap();
        tx.sqlite()
            .unwrap()
            .execute(
                "INSERT INTO audit_logs(timestamp, action, category)
             VALUES ('2026-11-21T05:40:17.895+10:00', 'odd', 'user')",
                [],
            )
            .unwrap();
        Ok::<_, PError>(())
    })
    .unwrap();
    assert_eq!(store.get(&lesson.id).unwrap().unwrap().application_count, 0, "NULL is the default");
    assert_eq!(tracker.get_trace(&trace.id).unwrap().unwrap().recovery_attempts, u32::MAX);
    let records = AuditLog::new(db).query(&AuditQuery::default()).unwrap();
    assert_eq!(records[0].timestamp.to_rfc3339(), "2026-11-20T19:40:17.895+00:00");
}

/// Text that is not JSON at all.
fn malformed_json() -> impl Strategy<Value = String> {
    let near_misses = prop::sample::select(vec![
        "",
        " ",
        "{oops",
        "{\"a\":}",
        "[1,",
        "nul",
        "{'a':1}",
        "\"unterminated",
        "1 2",
        "{}}",
    ]);
    prop_oneof![
        near_misses.prop_map(str::to_owned),
        "\\PC{0,30}"
            .prop_filter("not JSON", |s| serde_json::from_str::<serde_json::Value>(s).is_err()),
    ]
}

/// Where a library row can be corrupted, and what a stored value there must be.
#[derive(Debug, Clone, Copy)]
enum Target {
    StateContext,
    StateCreated,
    StateUpdated,
    TransitionCreated,
    TransitionMetadata,
    CheckpointCreated,
    CheckpointContext,
    CheckpointArtifacts,
    ConfigValue,
    ConfigUpdated,
}

impl Target {
    const ALL: [Target; 10] = [
        Target::StateContext,
        Target::StateCreated,
        Target::StateUpdated,
        Target::TransitionCreated,
        Target::TransitionMetadata,
        Target::CheckpointCreated,
        Target::CheckpointContext,
        Target::CheckpointArtifacts,
        Target::ConfigValue,
        Target::ConfigUpdated,
    ];

    fn column(self) -> (&'static str, &'static str) {
        match self {
            Target::StateContext => ("workflow_states", "context"),
            Target::StateCreated => ("workflow_states", "created_at"),
            Target::StateUpdated => ("workflow_states", "updated_at"),
            Target::TransitionCreated => ("state_transitions", "created_at"),
            Target::TransitionMetadata => ("state_transitions", "metadata"),
            Target::CheckpointCreated => ("checkpoints", "created_at"),
            Target::CheckpointContext => ("checkpoints", "context"),
            Target::CheckpointArtifacts => ("checkpoints", "artifacts"),
            Target::ConfigValue => ("configurations", "value"),
            Target::ConfigUpdated => ("configurations", "updated_at"),
        }
    }

    fn is_time(self) -> bool {
        self.column().1.ends_with("_at")
    }

    /// Valid JSON the column still cannot hold (an object is required, or a list of text).
    fn wrong_shapes(self) -> &'static [&'static str] {
        match self {
            Target::StateContext | Target::CheckpointContext => &["[1]", "1", "\"x\"", "null"],
            Target::CheckpointArtifacts => &["{}", "[1]", "\"a.rs\"", "[null]"],
            _ => &[],
        }
    }
}

on_both! {
/// A state store or configuration row whose timestamp or JSON was corrupted around the stores
/// (unreadable text, or JSON of the wrong shape) makes every read of it a corrupt-row error
/// naming the table, the column and the row: loading and listing the task, its summary and its
/// resumable form, the configuration value. Nothing panics or shows a default.
fn a_corrupt_state_or_configuration_row_is_a_corrupt_row_error_naming_it(t) {
    let cases = (
        prop::sample::select(Target::ALL.to_vec()),
        unreadable_timestamp(),
        malformed_json(),
        any::<prop::sample::Index>(),
    );
    let counter = std::sync::atomic::AtomicUsize::new(0);
    check(96, cases, |(target, stamp, json, shape)| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (task, project, key) = (format!("task-{n}"), format!("project-{n}"), format!("key-{n}"));
        let value = match (target.is_time(), target.wrong_shapes()) {
            (true, _) => stamp,
            (false, shapes) if !shapes.is_empty() && shape.index(2) == 0 => {
                shapes[shape.index(shapes.len())].to_owned()
            }
            (false, _) => json,
        };
        let states = SqliteStateStore::new(t.db().clone());
        let config = ConfigStore::new(t.db().clone());
        let mut m =
            StateMachine::new(StateContext::new(project.as_str().into(), task.as_str().into(), "p"));
        m.apply(Event::Start, Some(serde_json::json!({"n": n}))).unwrap();
        let checkpoint = m.create_checkpoint(vec!["a.rs".into()]);
        states.save_state(m.persisted()).unwrap();
        config.set(&key, &Scope::Global, &serde_json::json!({"n": n})).unwrap();

        let mut raw = Driver::of(t);
        let (table, column) = target.column();
        let (filter, row_id, id) = match table {
            "configurations" => ("key = ?2", key.clone(), key.clone()),
            "state_transitions" => {
                let id = raw.query(
                    "SELECT id FROM state_transitions WHERE task_id = ?1 AND seq = 1",
                    &[Raw::text(&task)],
                );
                ("task_id = ?2", task.clone(), id[0][0].clone().unwrap())
            }
            "checkpoints" => ("task_id = ?2", task.clone(), checkpoint.id.as_str().to_owned()),
            _ => ("task_id = ?2", task.clone(), task.clone()),
        };
        let sql = format!("UPDATE {table} SET {column} = ?1 WHERE {filter}");
        prop_assert_eq!(raw.execute(&sql, &[Raw::text(&value), Raw::text(&row_id)]), 1);

        let mut errors = Vec::new();
        match target {
            Target::ConfigValue | Target::ConfigUpdated => {
                errors.push(config.get(&key, None).unwrap_err());
                errors.push(config.list(None).unwrap_err());
            }
            Target::StateCreated => {
                errors.push(states.summaries(Some(&project.as_str().into()), None).unwrap_err());
            }
            Target::StateUpdated => {
                errors.push(states.summaries(Some(&project.as_str().into()), None).unwrap_err());
                errors.push(states.resumable(Some(&project.as_str().into())).unwrap_err());
            }
            _ => {
                errors.push(states.load_state(&task.as_str().into()).unwrap_err());
                errors.push(states.list_states(&project.as_str().into()).unwrap_err());
                if matches!(target, Target::CheckpointCreated | Target::CheckpointContext
                    | Target::CheckpointArtifacts)
                {
                    errors.push(states.resumable(Some(&project.as_str().into())).unwrap_err());
                }
            }
        }
        // The row goes before anything is asserted, so no later case reads it.
        states.delete_state(&task.as_str().into()).unwrap();
        config.delete(&key, &Scope::Global).unwrap();
        for err in &errors {
            prop_assert_eq!(corrupt_at(err), (table, column, id.clone()), "{}", err);
        }
        Ok(())
    });
}
}
