//! The audit event of the steps built on CP0 (aigentflow's step 04d): its fields, filters and
//! statistics, and the versioned row encoding that hashes them.

use std::collections::BTreeMap;
use std::path::Path;

use aigentflow::audit::{
    Actor, AuditEntry, AuditLog, AuditQuery, AuditRecord, Category, ExportFormat, Finding, Outcome,
    Severity, Target, EXPORT_COLUMNS,
};
use aigentflow::persistence::audit_chain::{hashed_timestamp, row_hash, EventFields, HashedFields};
use aigentflow::persistence::Backend;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::json;

use crate::audit::{around, entry, export_string, fresh, read_csv, scalar, tamper};
use crate::support::*;

// ---- the step's scenarios -------------------------------------------------------------------

on_both! {
/// The step's own tests: an agent_execution event is logged and read back with every field;
/// secrets in details, changes and the error are redacted; five events keep the chain intact.
fn the_audit_event_scenarios_of_step_04d_pass(t) {
    let log = AuditLog::new(t.db().clone());
    let id = log
        .log(
            &AuditEntry {
                session_id: Some("session-1".into()),
                workflow_id: Some("workflow-1".into()),
                correlation_id: Some("request-7".into()),
                ..entry("p", "agent_start", Category::AgentExecution)
            }
            .severity(Severity::Info)
            .outcome(Outcome::Success)
            .actor(Actor::agent("test-agent"))
            .target(Target::new("task", "task-1")),
        )
        .unwrap();
    let rows = log.query(&AuditQuery::default()).unwrap();
    let r = &rows[0];
    assert_eq!((r.id, r.category.as_str(), r.hash_version), (id, "agent_execution", 2));
    assert_eq!(r.event.severity(), Some(Severity::Info));
    assert_eq!(r.event.outcome(), Some(Outcome::Success));
    assert_eq!(
        r.event.cells()[2..9],
        [
            Some("agent"),
            Some("test-agent"),
            Some("task"),
            Some("task-1"),
            Some("session-1"),
            Some("workflow-1"),
            Some("request-7")
        ]
    );

    log.log(
        &AuditEntry {
            details: Some(json!({"password": "secret123", "apiKey": "sk-123456789012345678901234"})),
            ..entry("p", "config_change", Category::SystemEvent)
        }
        .actor(Actor::system("test"))
        .changes(Some(json!({"password": "secret123"})), Some(json!({"token": "hunter2hunter2"})))
        .error("connect to postgres://admin:secret123@db/x failed with password=secret123"),
    )
    .unwrap();
    let stored = crate::audit::stored_bytes(t);
    assert!(contains(&stored, "config_change") && contains(&stored, "[REDACTED]"));
    for secret in ["secret123", "sk-123456789012345678901234", "hunter2hunter2"] {
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is stored: {}", String::from_utf8_lossy(&stored)
        );
    }

    for i in 0..5 {
        log.log(
            &entry("p", &format!("action_{i}"), Category::SystemEvent)
                .severity(Severity::Info)
                .outcome(Outcome::Success)
                .actor(Actor::system("test")),
        )
        .unwrap();
    }
    let v = log.verify(None).unwrap();
    assert_eq!((v.rows, v.finding), (7, None));
    // Unknown categories are kept as they are, and found by their text.
    log.log(&entry("p", "custom", Category::parse("billing_event"))).unwrap();
    let q = AuditQuery { category: Some(Category::parse("billing_event")), ..Default::default() };
    assert_eq!(log.query(&q).unwrap()[0].category, "billing_event");
}
}

on_both! {
/// Bad input is a typed error naming the field, and nothing is written: any blank text (an
/// actor, a target, an id, an error, a category, a project, a task, an agent, a user, an
/// address), which an export could not tell from none.
fn a_blank_event_field_is_refused_by_name_and_writes_nothing(t) {
    let log = AuditLog::new(t.db().clone());
    let base = || entry("p", "a", Category::UserAction);
    let cases: Vec<(AuditEntry, &str)> = vec![
        (base().actor(Actor::new(" ", "x")), "actor type"),
        (base().actor(Actor::new("user", "")), "actor id"),
        (base().target(Target::new("", "x")), "target type"),
        (base().target(Target::new("file", "\t")), "target id"),
        (AuditEntry { session_id: Some("".into()), ..base() }, "session id"),
        (AuditEntry { workflow_id: Some(" ".into()), ..base() }, "workflow id"),
        (AuditEntry { correlation_id: Some("\n".into()), ..base() }, "correlation id"),
        (base().error(" "), "error"),
        (AuditEntry { project_id: Some("".into()), ..base() }, "project id"),
        (AuditEntry { task_id: Some(" ".into()), ..base() }, "task id"),
        (AuditEntry { agent: Some("".into()), ..base() }, "agent"),
        (AuditEntry { user_id: Some("\t".into()), ..base() }, "user id"),
        (AuditEntry { ip_address: Some("".into()), ..base() }, "ip address"),
        (AuditEntry::new("a", Category::parse(" ")), "category"),
    ];
    for (bad, field) in cases {
        let err = log.log_batch(&[base(), bad]).unwrap_err();
        assert!(err.to_string().contains(&format!("the {field} is empty")), "{field}: {err}");
    }
    assert!(log.query(&AuditQuery::default()).unwrap().is_empty());
}
}

// ---- filters and statistics against a naive computation -------------------------------------

/// An entry whose every field is drawn from a few values, so that filters find several rows.
fn any_entry() -> impl Strategy<Value = AuditEntry> {
    let pick = |values: &'static [&'static str]| {
        prop::option::of(prop::sample::select(values).prop_map(String::from))
    };
    let severity = prop::option::of(prop::sample::select(Severity::ALL.to_vec()));
    let outcome = prop::option::of(prop::sample::select(Outcome::ALL.to_vec()));
    let category = prop::sample::select(vec![
        Category::AgentExecution,
        Category::FileOperation,
        Category::ErrorEvent,
        Category::State,
        Category::parse("custom_event"),
    ]);
    (
        (category, pick(&["plan", "write", "fail"]), pick(&["agent-a", "agent-b"])),
        (severity, outcome, pick(&["user", "agent", "system"]), pick(&["u1", "a1", "s1"])),
        (pick(&["file", "task"]), pick(&["f1", "t1"]), pick(&["s1", "s2"]), pick(&["w1"])),
        (pick(&["c1", "c2"]), pick(&["boom", "timeout"]), any::<(bool, bool)>(), pick(&["alice"])),
    )
        .prop_map(
            |(
                (category, action, agent),
                (sev, out, akind, aid),
                (tkind, tid, session, workflow),
                (correlation, error, (before, after), user),
            )| {
                AuditEntry {
                    agent,
                    user_id: user,
                    severity: sev,
                    outcome: out,
                    actor: akind.zip(aid).map(|(k, i)| Actor::new(k, i)),
                    target: tkind.zip(tid).map(|(k, i)| Target::new(k, i)),
                    session_id: session,
                    workflow_id: workflow,
                    correlation_id: correlation,
                    error,
                    changes: (before || after).then(|| aigentflow::audit::Changes {
                        before: before.then(|| json!({"v": 1})),
                        after: after.then(|| json!({"v": 2})),
                    }),
                    ..AuditEntry::new(action.unwrap_or_else(|| "noop".into()), category)
                }
            },
        )
}

/// A query of one to three filters from the same few values.
fn any_query() -> impl Strategy<Value = AuditQuery> {
    let pick = |values: &'static [&'static str]| {
        prop::option::weighted(0.3, prop::sample::select(values).prop_map(String::from))
    };
    (
        (
            prop::option::weighted(
                0.3,
                prop::sample::select(vec![
                    Category::AgentExecution,
                    Category::ErrorEvent,
                    Category::parse("custom_event"),
                ]),
            ),
            pick(&["plan", "fail"]),
            pick(&["alice"]),
            prop::option::weighted(0.3, prop::sample::select(Severity::ALL.to_vec())),
            prop::option::weighted(0.3, prop::sample::select(Outcome::ALL.to_vec())),
        ),
        (pick(&["user", "agent"]), pick(&["u1", "a1"]), pick(&["file"]), pick(&["t1"])),
        (pick(&["s1"]), pick(&["w1"]), pick(&["c2"])),
        (prop::option::weighted(0.2, any::<bool>()), prop::option::weighted(0.2, any::<bool>())),
    )
        .prop_map(
            |(
                (category, action, user, min_severity, outcome),
                (actor_type, actor_id, target_type, target_id),
                (session_id, workflow_id, correlation_id),
                (has_error, has_changes),
            )| AuditQuery {
                category,
                action,
                user_id: user,
                min_severity,
                outcome,
                actor_type,
                actor_id,
                target_type,
                target_id,
                session_id,
                workflow_id,
                correlation_id,
                has_error,
                has_changes,
                ..AuditQuery::default()
            },
        )
}

/// Whether `r` matches `q`, computed field by field over the record.
fn matches(r: &AuditRecord, q: &AuditQuery) -> bool {
    let e = &r.event;
    let eq =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
    q.category.as_ref().is_none_or(|c| r.category == c.as_str())
        && eq(&q.action, Some(&r.action))
        && eq(&q.user_id, r.user_id.as_deref())
        && q.min_severity.is_none_or(|min| e.severity().is_some_and(|s| s >= min))
        && q.outcome.is_none_or(|o| e.outcome() == Some(o))
        && eq(&q.actor_type, e.actor_type.as_deref())
        && eq(&q.actor_id, e.actor_id.as_deref())
        && eq(&q.target_type, e.target_type.as_deref())
        && eq(&q.target_id, e.target_id.as_deref())
        && eq(&q.session_id, e.session_id.as_deref())
        && eq(&q.workflow_id, e.workflow_id.as_deref())
        && eq(&q.correlation_id, e.correlation_id.as_deref())
        && q.has_error.is_none_or(|w| e.error.is_some() == w)
        && q.has_changes
            .is_none_or(|w| (e.changes_before.is_some() || e.changes_after.is_some()) == w)
}

/// Counts per key, most first, ties in byte order of the key.
fn ranked(keys: impl Iterator<Item = String>) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for k in keys {
        *counts.entry(k).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

on_both! {
/// Every filter, alone or with others, selects exactly the records a naive filter over every
/// record selects, and the statistics of the selection equal a naive computation over it: per
/// category, severity, outcome and day, the top actors (with the agent, else the user, standing
/// in for an entry without an actor) and the error rate.
fn filters_and_stats_equal_a_naive_computation_over_random_events(t) {
    let log = AuditLog::new(t.db().clone());
    let days = ["2026-11-20", "2026-11-21", "2026-11-23"];
    for (n, day) in days.iter().enumerate() {
        let start = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(9, 0, 0).unwrap().and_utc();
        let db = crate::audit::clocked_on(t, start, chrono::Duration::minutes(7));
        let entries: Vec<AuditEntry> = proptest::collection::vec(any_entry(), 40)
            .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
            .unwrap()
            .current()
            .into_iter()
            .skip(n * 3)
            .collect();
        AuditLog::new(db).log_batch(&entries).unwrap();
    }
    let all = log.query(&AuditQuery::default()).unwrap();
    assert!(all.len() > 100);
    check(48, (any_query(), 1u64..6), |(q, top)| {
        let want: Vec<i64> = all.iter().filter(|r| matches(r, &q)).map(|r| r.id).collect();
        let got: Vec<i64> = log.query(&q).unwrap().iter().map(|r| r.id).collect();
        prop_assert_eq!(&got, &want, "{:?}", q);
        prop_assert_eq!(log.count(&q).unwrap(), want.len() as u64);

        let chosen: Vec<&AuditRecord> = all.iter().filter(|r| matches(r, &q)).collect();
        let stats = log.stats(&q, top).unwrap();
        let pairs = |counts: &[aigentflow::audit::Count]| -> Vec<(String, u64)> {
            counts.iter().map(|c| (c.key.clone(), c.count)).collect()
        };
        prop_assert_eq!(stats.total, chosen.len() as u64);
        prop_assert_eq!(pairs(&stats.by_category), ranked(chosen.iter().map(|r| r.category.clone())));
        prop_assert_eq!(pairs(&stats.by_severity), ranked(chosen.iter().filter_map(|r| r.event.severity.clone())));
        prop_assert_eq!(pairs(&stats.by_outcome), ranked(chosen.iter().filter_map(|r| r.event.outcome.clone())));
        let mut per_day = ranked(chosen.iter().map(|r| r.timestamp.format("%Y-%m-%d").to_string()));
        per_day.sort();
        prop_assert_eq!(pairs(&stats.per_day), per_day);
        let errors = chosen
            .iter()
            .filter(|r| r.event.outcome.as_deref() == Some("failure") || r.event.error.is_some())
            .count() as u64;
        prop_assert_eq!(stats.errors, errors);
        let rate = if chosen.is_empty() { 0.0 } else { errors as f64 / chosen.len() as f64 };
        prop_assert!((stats.error_rate - rate).abs() < 1e-12);
        // The actor of each entry: its own, else its agent, else its user.
        let actor = |r: &AuditRecord| -> Option<(String, String)> {
            match (&r.event.actor_id, &r.agent, &r.user_id) {
                (Some(id), _, _) => Some((r.event.actor_type.clone().unwrap_or_default(), id.clone())),
                (None, Some(agent), _) => Some(("agent".into(), agent.clone())),
                (None, None, Some(user)) => Some(("user".into(), user.clone())),
                _ => None,
            }
        };
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for a in chosen.iter().filter_map(|r| actor(r)) {
            *counts.entry(a).or_default() += 1;
        }
        let mut top_want: Vec<_> = counts.into_iter().collect();
        top_want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top_want.truncate(top as usize);
        let top_got: Vec<_> =
            stats.top_actors.iter().map(|a| ((a.kind.clone(), a.id.clone()), a.count)).collect();
        prop_assert_eq!(top_got, top_want);
        Ok(())
    });
    // A window is a filter like any other: the middle day alone.
    let window = AuditQuery {
        start: Some("2026-11-21".into()),
        end: Some("2026-11-21".into()),
        ..AuditQuery::default()
    };
    let stats = log.stats(&window, 10).unwrap();
    assert_eq!(stats.per_day.len(), 1);
    assert_eq!(stats.per_day[0].key, "2026-11-21");
    assert_eq!(stats.total, log.count(&window).unwrap());
}
}

// ---- the versioned row encoding ---------------------------------------------------------------

/// The last row's id and hash, read around the stores.
fn last_row(t: &TestDb) -> (i64, String) {
    let id = scalar(t.location(), "SELECT COALESCE(MAX(id), 0) FROM audit_logs");
    let hash = match t.backend() {
        Backend::Sqlite => raw(Path::new(t.location()))
            .query_row("SELECT row_hash FROM audit_logs WHERE id = ?1", [id], |r| r.get(0))
            .unwrap_or_else(|_| aigentflow::audit::chain::GENESIS.to_owned()),
        Backend::Postgres => postgres::Client::connect(t.location(), postgres::NoTls)
            .unwrap()
            .query_opt("SELECT row_hash FROM audit_logs WHERE id = $1", &[&id])
            .unwrap()
            .map_or_else(|| aigentflow::audit::chain::GENESIS.to_owned(), |r| r.get(0)),
    };
    (id, hash)
}

/// Appends a row as the build before the audit event wrote it (version 1, hash_version NULL),
/// with provenance or without, linked after the last row; on PostgreSQL the head moves onto it
/// as that build's append moved it.
fn append_version_1(t: &TestDb, action: &str, with_origin: bool) {
    let (last, prev) = last_row(t);
    let id = last + 1;
    let stamp = "2026-11-01 10:00:00.000";
    let ts = hashed_timestamp(stamp.as_bytes());
    let origin_hash = "ab".repeat(32);
    let origin = with_origin.then_some(aigentflow::persistence::audit_chain::Origin {
        id: Some(b"41"),
        hash: Some(origin_hash.as_bytes()),
        source: Some(b"/elsewhere/aigentflow.db"),
    });
    let fields = HashedFields {
        id,
        timestamp: &ts,
        project_id: Some(b"p"),
        task_id: None,
        agent: Some(b"old-agent"),
        action: action.as_bytes(),
        category: b"agent",
        details: Some(br#"{"n":1}"#),
        user_id: None,
        ip_address: None,
        origin,
        event: None,
    };
    let hash = row_hash(&prev, &fields);
    let provenance = if with_origin {
        format!("41, '{origin_hash}', '/elsewhere/aigentflow.db'")
    } else {
        "NULL, NULL, NULL".into()
    };
    let mut sql = format!(
        "INSERT INTO audit_logs (id, timestamp, project_id, agent, action, category, details,
             prev_hash, row_hash, origin_id, origin_hash, origin_source)
         VALUES ({id}, '{stamp}', 'p', 'old-agent', '{action}', 'agent', '{{\"n\":1}}',
             '{prev}', '{hash}', {provenance});"
    );
    if t.backend() == Backend::Postgres {
        sql.push_str(&format!("UPDATE audit_head SET id = {id}, row_hash = '{hash}';"));
    }
    around(t, &sql).unwrap();
}

/// A log of version 1 rows (with and without provenance) followed by version 2 rows, some with
/// every event field: ids 1–3 are version 1, 4–6 version 2.
fn old_and_new(t: &TestDb) -> AuditLog {
    append_version_1(t, "old-1", false);
    append_version_1(t, "old-2", true);
    append_version_1(t, "old-3", false);
    let log = AuditLog::new(t.db().clone());
    log.log(&entry("p", "new-1", Category::State)).unwrap();
    log.log(
        &AuditEntry {
            session_id: Some("s".into()),
            workflow_id: Some("w".into()),
            correlation_id: Some("c".into()),
            ..entry("p", "new-2", Category::FileOperation)
        }
        .severity(Severity::Error)
        .outcome(Outcome::Denied)
        .actor(Actor::user("alice"))
        .target(Target::new("file", "src/main.rs"))
        .changes(Some(json!({"mode": "0644"})), Some(json!({"mode": "0600"})))
        .error("permission denied"),
    )
    .unwrap();
    log.log(&entry("p", "new-3", Category::Orchestration).outcome(Outcome::Pending)).unwrap();
    log
}

/// Every row's hash recomputed from an export's columns alone, as an auditor would: the
/// version each row names picks the encoding.
fn recompute_from_csv(csv: &[u8]) -> Vec<bool> {
    read_csv(csv)
        .iter()
        .map(|row| {
            let cell = |i: usize| (!row[i].is_empty()).then(|| row[i].as_bytes());
            let id: i64 = row[0].parse().unwrap();
            let version = &row[27];
            let event = (version == "2")
                .then(|| EventFields::from_cells(std::array::from_fn(|i| cell(15 + i))));
            let origin =
                aigentflow::persistence::audit_chain::Origin::of(cell(12), cell(13), cell(14));
            let fields = HashedFields {
                id,
                timestamp: row[1].as_bytes(),
                project_id: cell(2),
                task_id: cell(3),
                agent: cell(4),
                action: row[5].as_bytes(),
                category: row[6].as_bytes(),
                details: cell(7),
                user_id: cell(8),
                ip_address: cell(9),
                origin,
                event,
            };
            row_hash(&row[10], &fields) == row[11]
        })
        .collect()
}

on_both! {
/// A log holding rows of both encodings verifies whole, and an export carries every column an
/// auditor needs to recompute every row's hash, whichever encoding it used.
fn a_log_of_old_and_new_rows_verifies_whole_and_an_export_recomputes_every_hash(t) {
    let log = old_and_new(t);
    let v = log.verify(None).unwrap();
    assert_eq!((v.rows, v.finding), (6, None));
    let versions: Vec<i64> =
        log.since(0, 10).unwrap().iter().map(|r| r.hash_version).collect();
    assert_eq!(versions, [1, 1, 1, 2, 2, 2]);
    let csv = export_string(&log, ExportFormat::Csv, AuditQuery::default());
    let csv = csv.replace("\r\n'", "\r\n"); // no cell here starts like a formula
    assert_eq!(recompute_from_csv(csv.as_bytes()), vec![true; 6]);
}
}

#[test]
fn a_log_of_legacy_old_and_new_rows_verifies_whole_on_sqlite() {
    let (_dir, path) = legacy_copy();
    let t = TestDb::sqlite_copy_of(&path);
    let log = old_and_new(&t);
    let v = log.verify(None).unwrap();
    assert_eq!((v.rows, v.finding), (506, None));
    let versions: Vec<i64> = log.since(498, 10).unwrap().iter().map(|r| r.hash_version).collect();
    assert_eq!(versions, [1, 1, 1, 1, 1, 2, 2, 2]);
    let mut out = Vec::new();
    let options = aigentflow::audit::ExportOptions {
        neutralize_formulas: false,
        ..aigentflow::audit::ExportOptions::new(ExportFormat::Csv)
    };
    log.export(&mut out, &options, |_| {}).unwrap();
    assert!(recompute_from_csv(&out).iter().all(|ok| *ok));
}

on_both! {
/// Every column a row's encoding covers is covered: editing any of them on a version 2 row,
/// or the version itself, is named; a version 1 row given an event field its hash does not
/// cover is named too.
fn every_edit_of_an_event_field_or_of_the_version_is_named(t) {
    let mut cases: Vec<(String, Finding)> = Vec::new();
    // Row 5 is version 2 with every event field set; row 4 is version 2 with none.
    for column in EventFields::COLUMNS {
        cases.push((format!("UPDATE audit_logs SET {column} = 'x' WHERE id = 5"), Finding::Edited { id: 5 }));
        cases.push((format!("UPDATE audit_logs SET {column} = NULL WHERE id = 5"), Finding::Edited { id: 5 }));
        cases.push((format!("UPDATE audit_logs SET {column} = 'x' WHERE id = 4"), Finding::Edited { id: 4 }));
        // Row 1 is version 1: its hash does not cover the field, so the row is not canonical.
        cases.push((
            format!("UPDATE audit_logs SET {column} = 'x' WHERE id = 1"),
            Finding::NotCanonical { id: 1, column },
        ));
    }
    for column in ["origin_hash", "origin_source"] {
        cases.push((format!("UPDATE audit_logs SET {column} = 'x' WHERE id = 5"), Finding::Edited { id: 5 }));
        cases.push((format!("UPDATE audit_logs SET {column} = 'x' WHERE id = 2"), Finding::Edited { id: 2 }));
    }
    cases.push(("UPDATE audit_logs SET origin_id = 9 WHERE id = 5".into(), Finding::Edited { id: 5 }));
    cases.push(("UPDATE audit_logs SET hash_version = NULL WHERE id = 5".into(), Finding::Edited { id: 5 }));
    cases.push(("UPDATE audit_logs SET hash_version = 2 WHERE id = 1".into(), Finding::Edited { id: 1 }));
    cases.push((
        "UPDATE audit_logs SET hash_version = 3 WHERE id = 6".into(),
        Finding::NotCanonical { id: 6, column: "hash_version" },
    ));
    for (sql, finding) in cases {
        let t = fresh(t);
        let log = old_and_new(&t);
        tamper(&t, &sql);
        let v = log.verify(None).unwrap();
        assert_eq!(v.findings, vec![finding], "{sql}");
    }
}
}

/// A number column of the log (`origin_id`, `hash_version`) holding a cell of another type,
/// with the same digits, is named: the hash covers the digits, so only its type tells the edit,
/// and a bundle export or `db copy` of such a row fails where `verify` said nothing.
#[test]
fn a_number_column_stored_as_another_type_is_named_on_sqlite() {
    // Rows 1-6 of `old_and_new` (row 2 is version 1 with provenance), then row 7: version 2,
    // imported (its origin id is 8).
    let build = || {
        let t = TestDb::sqlite();
        let log = old_and_new(&t);
        let imported = aigentflow::audit::ImportedEntry {
            timestamp: chrono::Utc::now(),
            project_id: Some("p".into()),
            task_id: None,
            agent: None,
            action: "moved".into(),
            category: "user".into(),
            details: None,
            user_id: None,
            ip_address: None,
            event: aigentflow::audit::StoredEvent {
                severity: Some("info".into()),
                ..Default::default()
            },
            origin: aigentflow::audit::ImportedOrigin {
                id: 8,
                hash: "cd".repeat(32),
                source: "/elsewhere/aigentflow.db".into(),
            },
        };
        t.db().write(|tx| log.append_imported_in(tx, std::slice::from_ref(&imported))).unwrap();
        assert_eq!(log.verify(None).unwrap().finding, None);
        (t, log)
    };
    for (id, column, cast) in [
        (2, "origin_id", "CAST(origin_id AS BLOB)"),
        (7, "origin_id", "CAST(origin_id AS BLOB)"),
        (7, "origin_id", "CAST(CAST(origin_id AS TEXT) AS BLOB)"),
        (5, "hash_version", "CAST(hash_version AS BLOB)"),
        (6, "hash_version", "CAST('2' AS BLOB)"),
    ] {
        let (t, log) = build();
        let sql = format!("UPDATE audit_logs SET {column} = {cast} WHERE id = {id}");
        tamper(&t, &sql);
        let v = log.verify(None).unwrap();
        assert_eq!(v.findings, vec![Finding::NotCanonical { id, column }], "{sql}");
    }
}

/// A number column (`hash_version`, `origin_id`) written around the log with a value that is
/// not a whole number shows in JSON and JSON Lines exports as stored (a string), never as
/// another number: a JSON export once read such a `hash_version` as 1 and dropped such an
/// `origin_id`. Whole numbers stay numbers; a NULL version is 1. CSV shows each as its text.
#[test]
fn a_forged_number_cell_is_exported_as_stored_on_sqlite() {
    for (cell, expected) in [
        ("'abc'", json!("abc")),
        ("2.5", json!("2.5")),
        ("' 2'", json!(2)),
        // Past i64: SQLite keeps it as a REAL, which reads as this text.
        ("'99999999999999999999'", json!("100000000000000000000")),
        ("''", json!("")),
        ("7", json!(7)),
        ("-1", json!(-1)),
    ] {
        for column in ["hash_version", "origin_id"] {
            let t = TestDb::sqlite();
            let log = AuditLog::new(t.db().clone());
            log.log(&entry("p", "first", Category::Agent)).unwrap();
            log.log(&entry("p", "second", Category::Agent)).unwrap();
            tamper(&t, &format!("UPDATE audit_logs SET {column} = {cell} WHERE id = 2"));
            for format in [ExportFormat::Json, ExportFormat::Jsonl] {
                let text = export_string(&log, format, AuditQuery::default());
                let rows: Vec<serde_json::Value> = match format {
                    ExportFormat::Json => serde_json::from_str(&text).unwrap(),
                    _ => text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
                };
                assert_eq!(rows[1][column], expected, "{column} = {cell} ({format:?})");
                let untouched =
                    if column == "hash_version" { json!(2) } else { serde_json::Value::Null };
                assert_eq!(rows[0][column], untouched, "{column} = {cell} ({format:?})");
            }
            // CSV: the same cell as its text, a leading sign behind the formula guard.
            let text = export_string(&log, ExportFormat::Csv, AuditQuery::default());
            let rows = read_csv(text.as_bytes());
            let at = EXPORT_COLUMNS.iter().position(|c| *c == column).unwrap();
            let shown = match &expected {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let shown = if shown.starts_with('-') { format!("'{shown}") } else { shown };
            assert_eq!(rows[1][at], shown, "{column} = {cell} (Csv)");
            let untouched = if column == "hash_version" { "2" } else { "" };
            assert_eq!(rows[0][at], untouched, "{column} = {cell} (Csv)");
        }
    }
}

/// Statistics over a row written around the log whose key cell (category, severity, outcome,
/// actor, agent, user or timestamp) holds bytes that are not UTF-8 fail as a query of that row
/// fails: `CorruptRow` naming the row and the column, not a bare column type error naming
/// neither (and so does a project's summary, for the category); the same row with UTF-8 bytes
/// in a BLOB counts with its text.
#[test]
fn stats_over_a_row_that_is_not_utf8_name_the_row_and_its_column_on_sqlite() {
    let t = TestDb::sqlite();
    let log = old_and_new(&t);
    let base = log.stats(&AuditQuery::default(), 10).unwrap();
    let columns = ["category", "severity", "outcome", "actor_id", "agent", "user_id", "timestamp"];
    check(
        48,
        (
            prop::sample::select(columns.to_vec()),
            prop::collection::vec(any::<u8>(), 1..12),
            100i64..200,
        ),
        |(column, mut bytes, id)| {
            bytes.insert(bytes.len() / 2, 0xff); // never UTF-8
            let t = fresh(&t);
            let log = old_and_new(&t);
            let (actor_type, actor_id) =
                if column == "actor_id" { ("'user'", "NULL") } else { ("NULL", "NULL") };
            let mut cells: BTreeMap<&str, String> = [
                ("timestamp", "'2026-11-02 10:00:00.000'".to_owned()),
                ("project_id", "'p'".to_owned()),
                ("category", "'user'".to_owned()),
                ("action", "'forged'".to_owned()),
                ("actor_type", actor_type.to_owned()),
                ("actor_id", actor_id.to_owned()),
            ]
            .into_iter()
            .collect();
            cells.insert(column, format!("x'{}'", hex::encode(&bytes)));
            let (names, values): (Vec<&str>, Vec<String>) = cells.into_iter().unzip();
            around(
                &t,
                &format!(
                    "INSERT INTO audit_logs (id, {}) VALUES ({id}, {})",
                    names.join(", "),
                    values.join(", ")
                ),
            )
            .unwrap();
            let err = log.stats(&AuditQuery::default(), 10).unwrap_err();
            let queried = log.query(&AuditQuery::default()).unwrap_err();
            prop_assert_eq!(err.to_string(), queried.to_string());
            let text = err.to_string();
            prop_assert!(text.contains(&format!("audit_logs.{column} in row {id}:")), "{}", text);
            if column == "category" {
                prop_assert_eq!(log.summary(&"p".into()).unwrap_err().to_string(), text);
            }
            Ok(())
        },
    );
    // A BLOB of UTF-8 bytes counts with its text.
    around(&t, "INSERT INTO audit_logs (id, timestamp, action, category) VALUES (100, '2026-11-02 10:00:00.000', 'forged', CAST('state' AS BLOB))").unwrap();
    let stats = log.stats(&AuditQuery::default(), 10).unwrap();
    assert_eq!(stats.total, base.total + 1);
}
