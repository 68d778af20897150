//! RELIABILITY.md R20, corrupt rows: a stored value that cannot be read is a `CorruptRow` error
//! naming the table, the column and the row, never a default shown as if it were stored (a 1970
//! timestamp, a count of 0, u32::MAX attempts).

use aigentflow::audit::{AuditEntry, AuditLog, AuditQuery, Category};
use aigentflow::lessons::{self, LessonsStore, NewLesson};
use aigentflow::persistence::{Database, Error as PError};
use aigentflow::tracker::{self, ExecutionTracker};
use proptest::prelude::*;

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
                )?;
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
            )?;
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
            )?;
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
        tx.sqlite().unwrap().execute("UPDATE lessons SET application_count = NULL", [])?;
        tx.sqlite()
            .unwrap()
            .execute("UPDATE execution_traces SET recovery_attempts = ?1", [u32::MAX])?;
        tx.sqlite().unwrap().execute(
            "INSERT INTO audit_logs(timestamp, action, category)
             VALUES ('2026-11-21T05:40:17.895+10:00', 'odd', 'user')",
            [],
        )?;
        Ok::<_, PError>(())
    })
    .unwrap();
    assert_eq!(store.get(&lesson.id).unwrap().unwrap().application_count, 0, "NULL is the default");
    assert_eq!(tracker.get_trace(&trace.id).unwrap().unwrap().recovery_attempts, u32::MAX);
    let records = AuditLog::new(db).query(&AuditQuery::default()).unwrap();
    assert_eq!(records[0].timestamp.to_rfc3339(), "2026-11-20T19:40:17.895+00:00");
}
