//! Sharing an execution (issue 15 item 4): `tasks export` writes a task's whole story as a
//! JSON Lines bundle, `tasks import` loads it into another database in one transaction. Every
//! scenario runs on both backends (`on_both!`); the move between backends has its own test.

use std::sync::Arc;

use aigentflow::approvals::{Approvals, NewApproval};
use aigentflow::audit::{report, AuditEntry, AuditLog, AuditRecord, Category};
use aigentflow::bundle::{
    self, AuditRowRecord, Error, Header, Outcome, Record, TaskBundle, TaskRecord, TraceRecord,
};
use aigentflow::persistence::redact::corpus::{self, Sample};
use aigentflow::persistence::{Backend, Database, Options, SqliteStateStore};
use aigentflow::states::{Event, ManualClock, StateContext, StateMachine, StateStore, TaskId};
use aigentflow::tracker::{
    ExecutionTracker as Tracker, NewInvocation, Outcome as InvocationOutcome, TokenUsage,
};
use chrono::{TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use crate::inspect::{stored_bytes, Driver, Raw};
use crate::support::*;

/// A fresh database of `t`'s backend: where a bundle goes.
fn another(t: &TestDb) -> TestDb {
    match t.backend() {
        Backend::Sqlite => TestDb::sqlite(),
        Backend::Postgres => TestDb::postgres().unwrap(),
    }
}

/// A handle whose clock starts at a fixed instant and moves 1.5 s per reading, so every row's
/// time is distinct and has milliseconds.
fn open_clocked(location: &str) -> Database {
    let start = Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(start, TimeDelta::milliseconds(1500)));
    Database::open_with(location, Options { clock, ..Options::default() }).unwrap()
}

/// A task with history, checkpoints, a decided and a pending approval, two traces with
/// invocations, and audit entries of its own (the approvals' and some logged directly).
fn populate(db: &Database, task: &str) {
    let mut m = StateMachine::new(StateContext::new("project-1".into(), task.into(), "Ship it"))
        .with_clock(db.clock().clone());
    m.apply(Event::Start, Some(json!({"by": "tester"}))).unwrap();
    m.apply(Event::AnalysisComplete, None).unwrap();
    m.create_checkpoint(vec!["plan.md".into()]);
    m.context_mut().agent_queue.push("reviewer".into());
    m.apply(Event::SpawnAgent, None).unwrap();
    m.create_checkpoint(vec!["src/lib.rs".into(), "notes: 1.5".into()]);
    m.apply(Event::AgentDone, None).unwrap();
    let ctx = m.context_mut();
    ctx.current_agent = Some("reviewer".into());
    ctx.agent_outputs.entry("reviewer".into()).or_default().routing_hints.needs_approval = true;
    SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
    let approvals = Approvals::new(db.clone());
    let first = approvals
        .request(&NewApproval {
            payload: json!({"design": "OAuth", "files": ["src/login.rs"]}),
            ..NewApproval::new(task.into(), "design", "architect")
        })
        .unwrap();
    approvals.approve(&first, "alice", Some("fine")).unwrap();
    let log = AuditLog::new(db.clone());
    log.log(&AuditEntry {
        project_id: Some("project-1".into()),
        task_id: Some(task.into()),
        agent: Some("coder".into()),
        details: Some(json!({"file": "src/lib.rs", "lines": [1, 2, 3], "ratio": 0.25})),
        user_id: Some("u-1".into()),
        ip_address: Some("10.0.0.1".into()),
        ..AuditEntry::new("file written", Category::File)
    })
    .unwrap();
    let tracker = Tracker::new(db.clone());
    for (n, prompt) in ["build the login", "fix the tests"].into_iter().enumerate() {
        let trace = tracker.start_trace(&"project-1".into(), &task.into(), prompt).unwrap();
        for agent in ["coder", "tester"] {
            let started = db.clock().now();
            tracker
                .record_invocation(&NewInvocation {
                    task_fragment: Some(format!("part {n}")),
                    completed_at: Some(started + TimeDelta::milliseconds(1234)),
                    outcome: Some(InvocationOutcome::Success),
                    quality_score: Some(0.1 + n as f64 / 3.0),
                    token_usage: Some(TokenUsage::new(100, 23)),
                    output_summary: Some("done".into()),
                    ..NewInvocation::new(trace.id.clone(), agent, started)
                })
                .unwrap();
        }
        if n == 0 {
            tracker
                .complete_trace(
                    &trace.id,
                    true,
                    Some(&TokenUsage::new(5, 6)),
                    Some(&json!({"k": 1})),
                )
                .unwrap();
        }
    }
    log.log(&AuditEntry { task_id: Some(task.into()), ..AuditEntry::new("note", Category::User) })
        .unwrap();
}

/// The source a bundle of `db` names in its header: the file's absolute path, or the URL
/// without its password.
fn bundle_source(db: &Database) -> String {
    match db.path() {
        Some(path) => std::fs::canonicalize(path).unwrap().to_string_lossy().into_owned(),
        None => db.location().to_string_lossy().into_owned(),
    }
}

fn export(db: &Database, tasks: &[&str]) -> Vec<u8> {
    let ids: Vec<TaskId> = tasks.iter().map(|t| (*t).into()).collect();
    let mut out = Vec::new();
    bundle::export(db, &ids, &mut out).unwrap();
    out
}

fn import(db: &Database, bytes: &[u8]) -> bundle::Result<bundle::ImportReport> {
    bundle::import(db, &mut &bytes[..])
}

fn task_of(db: &Database, task: &str) -> TaskBundle {
    db.read(|tx| bundle::read_task(tx, task)).unwrap().unwrap()
}

/// Every table's rows (the PostgreSQL sequences aside: a rolled-back insert still moves one).
fn dump(db: &TestDb) -> std::collections::BTreeMap<String, Vec<Vec<Option<String>>>> {
    let mut d = Driver::of(db).dump();
    d.remove("(sequences)");
    d
}

fn audit_rows(db: &Database, task: &str) -> Vec<AuditRecord> {
    let q = aigentflow::audit::AuditQuery { task_id: Some(task.into()), ..Default::default() };
    let mut rows = AuditLog::new(db.clone()).query(&q).unwrap();
    rows.sort_by_key(|r| r.id);
    rows
}

fn verifies(db: &Database) {
    let v = AuditLog::new(db.clone()).verify(None).unwrap();
    assert_eq!(v.findings, vec![], "audit verify passes");
}

/// Every field of the task is equal on both sides, and each audit row of the destination is
/// the source's with its provenance (the source's id, hash and location).
fn assert_same_task(src: &Database, dst: &Database, task: &str) {
    let source = bundle_source(src);
    let (a, b) = (task_of(src, task), task_of(dst, task));
    assert_eq!(a.task, b.task, "state");
    assert_eq!(a.transitions, b.transitions, "history");
    assert_eq!(a.checkpoints, b.checkpoints, "checkpoints");
    assert_eq!(a.approvals, b.approvals, "approvals");
    assert_eq!(a.traces, b.traces, "traces and invocations");
    // Every invocation is also its agent span, on both sides.
    let agent_spans = |db: &Database| {
        db.read(|tx| {
            tx.query_row(
                "SELECT (SELECT COUNT(*) FROM agent_invocations i JOIN execution_traces t ON t.id = i.trace_id WHERE t.task_id = ?1),
                        (SELECT COUNT(*) FROM spans s JOIN execution_traces t ON t.id = s.trace_id WHERE t.task_id = ?1 AND s.kind = 'agent')",
                &[aigentflow::persistence::Param::text(task)],
                |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?)),
            )
        })
        .unwrap()
        .unwrap()
    };
    let (invocations, spans) = agent_spans(dst);
    assert!(invocations > 0, "the task has invocations");
    assert_eq!((invocations, spans), agent_spans(src), "invocations and their agent spans");
    assert_eq!(invocations, spans, "every imported invocation is its agent span");
    let (from, to) = (audit_rows(src, task), audit_rows(dst, task));
    assert_eq!(from.len(), to.len(), "audit rows");
    for (f, t) in from.iter().zip(&to) {
        assert_eq!(
            (&f.timestamp, &f.project_id, &f.task_id, &f.agent, &f.action, &f.category),
            (&t.timestamp, &t.project_id, &t.task_id, &t.agent, &t.action, &t.category)
        );
        assert_eq!(
            (&f.details_text, &f.user_id, &f.ip_address),
            (&t.details_text, &t.user_id, &t.ip_address)
        );
        let origin = f.origin.clone().unwrap_or(aigentflow::audit::AuditOrigin {
            id: Some(f.id),
            hash: f.row_hash.clone(),
            source: Some(source.clone()),
        });
        assert_eq!(t.origin.as_ref(), Some(&origin), "provenance of audit row {}", t.id);
    }
}

on_both! {
/// Export then import into an empty database: every field of the state, history, checkpoints,
/// approvals, traces and invocations is equal, every audit row comes with its provenance,
/// `audit verify` passes on both sides; a second import, and an import of the destination's
/// export back into the source, change nothing and say so.
fn export_import_round_trip_is_equal_field_by_field_and_idempotent(t) {
    let src = open_clocked(t.location());
    populate(&src, "task-a");
    populate(&src, "task-b");
    populate(&src, "task-other");
    let bytes = export(&src, &["task-a", "task-b", "task-a"]);
    let text = String::from_utf8(bytes.clone()).unwrap();
    let header: Header = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header.tasks, ["task-a", "task-b"]);
    assert_eq!(header.source, bundle_source(&src));
    assert!(!text.contains("task-other"), "only the named tasks");
    let dst_db = another(t);
    let dst = open_clocked(dst_db.location());
    populate(&dst, "task-here");
    let report = import(&dst, &bytes).unwrap();
    assert_eq!(report.tasks.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::Imported; 2]);
    assert_eq!(report.audit_appended, 2 * audit_rows(&src, "task-a").len() as u64);
    for task in ["task-a", "task-b"] {
        assert_same_task(&src, &dst, task);
        // The state store reads it back as the source's.
        let store = |db: &Database| SqliteStateStore::new(db.clone()).load_state(&task.into()).unwrap();
        assert_eq!(store(&src), store(&dst));
    }
    verifies(&src);
    verifies(&dst);

    let before = dump(&dst_db);
    let again = import(&dst, &bytes).unwrap();
    assert_eq!(again.tasks.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::AlreadyPresent; 2]);
    assert_eq!((again.audit_appended, again.audit_already_present), (0, report.audit_appended));
    assert_eq!(dump(&dst_db), before, "a second import writes nothing");

    // Back into the source: the rows started there, so nothing is new.
    let back = export(&dst, &["task-a", "task-b"]);
    let before = dump(t);
    let report = import(&src, &back).unwrap();
    assert_eq!(report.tasks.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::AlreadyPresent; 2]);
    assert_eq!(report.audit_appended, 0);
    assert_eq!(dump(t), before);

    // A third database gets the rows with their first provenance, not the second database's.
    let third_db = another(t);
    let third = open_clocked(third_db.location());
    import(&third, &back).unwrap();
    assert_same_task(&src, &third, "task-a");
    verifies(&third);
}
}

/// Export from SQLite, import into PostgreSQL, export from there and import into a new SQLite
/// file: every field equal at each step, the audit chain of each verifying.
#[test]
fn bundle_moves_from_sqlite_to_postgres_and_back_equal_field_by_field() {
    let Some(pg) = TestDb::postgres() else { return };
    let lite = TestDb::sqlite();
    let src = open_clocked(lite.location());
    populate(&src, "task-x");
    let to_pg = open_clocked(pg.location());
    import(&to_pg, &export(&src, &["task-x"])).unwrap();
    assert_same_task(&src, &to_pg, "task-x");
    verifies(&to_pg);
    let back_db = TestDb::sqlite();
    let back = open_clocked(back_db.location());
    import(&back, &export(&to_pg, &["task-x"])).unwrap();
    assert_same_task(&src, &back, "task-x");
    verifies(&back);
    // And into the source itself: already there.
    let report = import(&src, &export(&to_pg, &["task-x"])).unwrap();
    assert_eq!((report.tasks[0].outcome, report.audit_appended), (Outcome::AlreadyPresent, 0));
}

on_both! {
/// A task that is in the destination with other content is refused, naming it, and nothing of
/// the bundle is written (the other task included); so is a trace id taken by another task.
fn a_conflicting_task_or_a_taken_id_is_refused_and_nothing_is_written(t) {
    let src = open_clocked(t.location());
    populate(&src, "task-new");
    populate(&src, "task-both");
    let bytes = export(&src, &["task-new", "task-both"]);
    let dst_db = another(t);
    let dst = open_clocked(dst_db.location());
    // Same id, other content (another clock, so other times).
    populate(&dst, "task-both");
    let before = dump(&dst_db);
    let err = import(&dst, &bytes).unwrap_err();
    assert!(matches!(&err, Error::Conflict { task, .. } if task.as_str() == "task-both"), "{err}");
    assert!(err.to_string().contains("task task-both already exists"), "{err}");
    assert_eq!(dump(&dst_db), before, "nothing written");

    // A trace id of the bundle taken by another task here.
    let other_db = another(t);
    let other = open_clocked(other_db.location());
    let trace = task_of(&src, "task-new").traces[0].0.id.clone();
    Driver::of(&other_db).execute(
        "INSERT INTO execution_traces (id, project_id, task_id, prompt) VALUES (?1, 'p', 'someone', 'x')",
        &[Raw::text(trace.clone())],
    );
    let before = dump(&other_db);
    let err = import(&other, &bytes).unwrap_err();
    assert!(matches!(&err, Error::IdTaken { what: "trace", id, .. } if id.as_str() == trace), "{err}");
    assert_eq!(dump(&other_db), before, "nothing written");
}
}

/// One task's bundle built record by record, for hand-edited bundles.
fn hand_made(task: &str, context: &str, prompt: &str, details: &str) -> Vec<String> {
    let header = Header {
        format: bundle::FORMAT.into(),
        version: bundle::VERSION,
        tool: "test".into(),
        // A source of its own per task: each hand-made bundle is another database's row 7.
        source: format!("/elsewhere/{task}/aigentflow.db"),
        exported_at: "2026-11-20 08:00:00.000".into(),
        tasks: vec![task.into()],
    };
    let at = "2026-11-20 08:00:00.000".to_owned();
    let mut audit = AuditRowRecord {
        id: 7,
        timestamp: at.clone(),
        project_id: Some("p".into()),
        task_id: task.into(),
        agent: None,
        action: "noted".into(),
        category: "user".into(),
        details: Some(details.into()),
        user_id: None,
        ip_address: None,
        prev_hash: "0".repeat(64),
        row_hash: String::new(),
        origin: None,
        event: None,
        hash_version: None,
    };
    audit.row_hash = audit.computed_hash();
    let records = [
        Record::Task(TaskRecord {
            task_id: task.into(),
            project_id: "p".into(),
            state: "ANALYZING".into(),
            context: context.into(),
            created_at: at.clone(),
            updated_at: at.clone(),
        }),
        Record::Trace(TraceRecord {
            id: format!("trace-{task}"),
            project_id: "p".into(),
            task_id: task.into(),
            prompt: prompt.into(),
            started_at: at.clone(),
            completed_at: None,
            success: None,
            duration_ms: None,
            token_usage: None,
            metadata: None,
            status: "completed".into(),
            owner_pid: None,
            owner_started_at: None,
            owner_host: None,
            heartbeat_at: None,
            recovery_attempts: 0,
        }),
        Record::Audit(audit),
        Record::End(bundle::EndRecord { records: 3 }),
    ];
    std::iter::once(serde_json::to_string(&header).unwrap())
        .chain(records.iter().map(|r| serde_json::to_string(r).unwrap()))
        .collect()
}

fn joined(lines: &[String]) -> Vec<u8> {
    let mut text = lines.join("\n");
    text.push('\n');
    text.into_bytes()
}

on_both! {
/// A bundle edited by hand to hold secrets (every sample of the secret corpus, in a task's
/// context, a trace's prompt and an audit entry's details with its hash recomputed) puts none
/// of them in the destination: everything imported goes through the redaction policy.
fn secrets_in_an_edited_bundle_are_redacted_on_import(t) {
    let samples: Vec<Sample> = corpus::samples(0xb0_d1e).unwrap();
    assert!(samples.len() >= 100, "the corpus is the test: {} samples", samples.len());
    for (i, s) in samples.iter().enumerate() {
        let as_json = s.json().unwrap_or_else(|| json!(s.text));
        let context = json!({"prompt": "x", "notes": as_json}).to_string();
        let lines = hand_made(&format!("s-{i}"), &context, &s.text, &as_json.to_string());
        import(t.db(), &joined(&lines)).unwrap_or_else(|e| panic!("sample {i}: {e}"));
    }
    let stored = stored_bytes(t);
    assert!(contains(&stored, "[REDACTED]"), "the stored text was read");
    if let Some((s, needle)) = corpus::leaks(&samples, &stored).first() {
        panic!("the database holds {needle:?} of sample {} ({:?}): {:?}", s.name, s.context, s.text);
    }
    verifies(t.db());
}
}

/// A line of `lines` (0 is the header) edited as JSON by `edit`.
/// An audit record's `row_hash` recomputed from its fields, as a forger would (the formula is
/// public).
fn rehash(record: &mut serde_json::Value) {
    let mut fields = record.clone();
    fields.as_object_mut().unwrap().remove("kind");
    let row: bundle::AuditRowRecord = serde_json::from_value(fields).unwrap();
    record["row_hash"] = json!(row.computed_hash());
}

fn edit_line(lines: &mut [String], n: usize, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&lines[n]).unwrap();
    edit(&mut v);
    lines[n] = v.to_string();
}

on_both! {
/// Each kind of hostile bundle is a typed error naming its line, and nothing is written.
fn hostile_bundles_are_typed_errors_naming_their_line_and_write_nothing(t) {
    let good = hand_made("task-h", r#"{"prompt":"x"}"#, "p", r#"{"a":1}"#);
    // Lines: 1 header, 2 task, 3 trace, 4 audit, 5 end.
    type Edit = Box<dyn Fn(&mut Vec<String>) -> Vec<u8>>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("malformed line", Box::new(|l| { l[2] = "{\"kind\": \"trace\",".into(); joined(l) }), "line 3: not a JSON value"),
        ("not a bundle", Box::new(|l| { edit_line(l, 0, |v| v["format"] = json!("csv")); joined(l) }), "line 1: not an aigentflow-bundle header"),
        ("wrong version", Box::new(|l| { edit_line(l, 0, |v| v["version"] = json!(3)); joined(l) }), "line 1: format version 3"),
        ("version 0", Box::new(|l| { edit_line(l, 0, |v| v["version"] = json!(0)); joined(l) }), "line 1: format version 0"),
        ("event fields a version 1 hash does not cover", Box::new(|l| { edit_line(l, 3, |v| v["event"] = json!({"outcome": "success"})); joined(l) }), "line 4: audit row 7: event fields on a row whose hash (version 1) does not cover them"),
        ("unknown hash version", Box::new(|l| { edit_line(l, 3, |v| v["hash_version"] = json!(3)); joined(l) }), "line 4: audit row 7: hash_version 3 is not 2"),
        ("version 2 claimed for a version 1 hash", Box::new(|l| { edit_line(l, 3, |v| v["hash_version"] = json!(2)); joined(l) }), "line 4: audit row 7: its row_hash does not follow"),
        ("unknown event field", Box::new(|l| { edit_line(l, 3, |v| { v["hash_version"] = json!(2); v["event"] = json!({"mood": "calm"}) }); joined(l) }), "line 4: not a bundle record"),
        ("unknown field", Box::new(|l| { edit_line(l, 1, |v| v["extra"] = json!(1)); joined(l) }), "line 2: not a bundle record"),
        ("definition without its fields", Box::new(|l| { l.insert(2, r#"{"kind":"definition","name":"w","version":1}"#.into()); joined(l) }), "line 3: not a bundle record (missing field"),
        ("out of order", Box::new(|l| { l.swap(1, 2); joined(l) }), "line 2: trace record of task task-h before its task record"),
        ("invocation before its trace", Box::new(|l| { l.insert(2, json!({"kind":"invocation","trace_id":"trace-task-h","agent":"a","task_fragment":null,"started_at":"2026-11-20 08:00:00.000","completed_at":null,"outcome":null,"quality_score":null,"token_usage":null,"output_summary":null,"error":null}).to_string()); joined(l) }), "line 3: invocation of trace"),
        ("history out of order", Box::new(|l| { l.insert(2, json!({"kind":"transition","task_id":"task-h","seq":2,"from_state":"IDLE","to_state":"ANALYZING","event":"START","metadata":null,"created_at":"2026-11-20 08:00:00.000"}).to_string()); edit_line(l, 5, |v| v["records"] = json!(4)); joined(l) }), "line 3: transition seq 2 of task task-h is out of order: 1 comes next"),
        ("task not in header", Box::new(|l| { edit_line(l, 2, |v| v["task_id"] = json!("task-z")); joined(l) }), "line 3: trace record of task \"task-z\", which the header does not name"),
        ("truncated: no end", Box::new(|l| { l.pop(); joined(l) }), "ends after line 4 without its end record"),
        ("truncated mid-line", Box::new(|l| { let mut b = joined(l); b.truncate(b.len() - 10); b }), "ends after line 5 without its end record"),
        ("wrong count", Box::new(|l| { edit_line(l, 4, |v| v["records"] = json!(2)); joined(l) }), "line 5: the end record counts 2"),
        ("a line after the end", Box::new(|l| { l.push("{}".into()); joined(l) }), "line 6: a line after the end record"),
        ("ids that collide", Box::new(|l| { let t = l[2].clone(); l.insert(3, t); edit_line(l, 5, |v| v["records"] = json!(4)); joined(l) }), "line 4: trace trace-task-h appears twice"),
        ("NUL character", Box::new(|l| { edit_line(l, 2, |v| v["prompt"] = json!("a\u{0}b")); joined(l) }), "line 3: a value holds a NUL character"),
        ("timestamp out of range", Box::new(|l| { edit_line(l, 1, |v| v["created_at"] = json!("10000-01-01 00:00:00.000")); joined(l) }), "line 2: created_at \"10000-01-01 00:00:00.000\" is not a timestamp"),
        ("impossible date", Box::new(|l| { edit_line(l, 2, |v| v["started_at"] = json!("2026-02-30 00:00:00.000")); joined(l) }), "line 3: started_at"),
        ("edited audit row", Box::new(|l| { edit_line(l, 3, |v| v["action"] = json!("forged")); joined(l) }), "line 4: audit row 7: its row_hash does not follow"),
        ("context not JSON", Box::new(|l| { edit_line(l, 1, |v| v["context"] = json!("{oops")); joined(l) }), "line 2: context is not JSON text"),
        ("empty file", Box::new(|_| Vec::new()), "ends after line 0"),
        ("huge line", Box::new(|l| { let mut b = joined(&l[..1]); b.extend(std::iter::repeat_n(b' ', bundle::MAX_LINE_BYTES + 1)); b }), "line 2 is longer than"),
    ];
    populate(&open_clocked(t.location()), "task-here");
    let before = dump(t);
    for (name, edit, expected) in cases {
        let mut lines = good.clone();
        let bytes = edit(&mut lines);
        let err = import(t.db(), &bytes).unwrap_err();
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert!(
            matches!(err, Error::Invalid { .. } | Error::Truncated { .. } | Error::LineTooLong { .. }),
            "{name}: {err:?}"
        );
        assert_eq!(dump(t), before, "{name}: nothing written");
    }
    // The good bundle itself imports.
    import(t.db(), &joined(&good)).unwrap();
}
}

on_both! {
/// A bundle the stores could not read back (a context nested past the readers' limit or not an
/// object, a token usage that is not one) is refused whole: nothing is written, and every task
/// that is written can be loaded. Nesting up to the limit imports and loads.
fn a_bundle_the_store_could_not_read_back_is_refused_and_writes_nothing(t) {
    // Built as text: a value this deep would overflow the stack of a recursive walk.
    let nested = |depth: usize, object: bool| {
        let (open, close) = if object { (r#"{"k":"#, "}") } else { ("[", "]") };
        format!("{}\"leaf\"{}", open.repeat(depth), close.repeat(depth))
    };
    populate(&open_clocked(t.location()), "task-here");
    // (what, the JSON text, the field it goes in, whether the store can read it back)
    let mut cases: Vec<(String, String, &str, bool)> = Vec::new();
    for depth in [98, 99, 100, 126, 127, 128, 3000] {
        for object in [false, true] {
            let deep = nested(depth, object);
            // In a context (inside its object: one level more), and as a trace's metadata.
            let context = format!(r#"{{"prompt":"x","deep":{deep}}}"#);
            let readable = depth < aigentflow::persistence::MAX_JSON_DEPTH;
            cases.push((format!("context at {}", depth + 1), context, "context", readable));
        }
    }
    for not_object in ["[1, 2]", "\"text\"", "null", "42", "[]"] {
        cases.push((format!("context {not_object}"), not_object.into(), "context", false));
    }
    // A trace's token usage, which the tracker reads back as one.
    for (usage, readable) in [
        (r#"{"inputTokens":1,"outputTokens":2,"totalTokens":3}"#, true),
        ("{oops", false),
        ("42", false),
        (r#"{"inputTokens":"many"}"#, false),
    ] {
        cases.push((format!("token usage {usage}"), usage.into(), "token_usage", readable));
    }
    for (i, (name, text, field, readable)) in cases.into_iter().enumerate() {
        let task = format!("task-d{i}");
        let mut lines = hand_made(&task, r#"{"prompt":"x"}"#, "p", r#"{"a":1}"#);
        match field {
            "context" => edit_line(&mut lines, 1, |v| v["context"] = json!(text)),
            _ => edit_line(&mut lines, 2, |v| v["token_usage"] = json!(text)),
        }
        let before = dump(t);
        match import(t.db(), &joined(&lines)) {
            Ok(_) => {
                assert!(readable, "{name}: imported");
                let store = SqliteStateStore::new(t.db().clone());
                assert!(store.load_state(&task.as_str().into()).unwrap().is_some(), "{name}");
                // And its trace, token usage included, as the tracker reads it.
                let trace = Tracker::new(t.db().clone())
                    .get_trace(&format!("trace-{task}").as_str().into())
                    .unwrap()
                    .unwrap();
                assert_eq!(trace.token_usage.is_some(), field == "token_usage", "{name}");
            }
            Err(e) => {
                assert!(!readable, "{name}: {e}");
                assert!(matches!(e, Error::Invalid { .. } | Error::Unreadable { .. }), "{name}: {e:?}");
                assert_eq!(dump(t), before, "{name}: nothing written");
            }
        }
    }
}
}

on_both! {
/// A bundle whose only change is its final newline dropped (as an editor or a shell's `$(…)`
/// does) is whole: signed, it still reads as its signer's and imports; unsigned, it imports. A
/// bundle cut anywhere else is refused saying what is missing: the end record, or the
/// signature line cut off after it.
fn a_bundle_without_its_final_newline_is_whole_and_one_cut_short_says_where(t) {
    let src_db = another(t);
    let src = open_clocked(src_db.location());
    populate(&src, "task-n");
    let key = report::generate_key().unwrap();
    let trusted = key.verifying_key();
    let signed = export_signed(&src, &["task-n"], &key);
    let unsigned = export(&src, &["task-n"]);
    let lines = signed.iter().filter(|b| **b == b'\n').count() as u64;
    let no_newline = |b: &[u8]| b[..b.len() - 1].to_vec();
    let parsed = signed_by(&no_newline(&signed), &trusted).expect("signed, without the newline");
    assert_eq!(parsed, signed_by(&signed, &trusted).unwrap());
    assert_eq!(
        bundle::read_bundle(&mut &no_newline(&unsigned)[..]).unwrap(),
        bundle::read_bundle(&mut &unsigned[..]).unwrap()
    );
    // Its signature cut off with the end record's newline: a whole bundle, unsigned.
    let end_newline = signed[..signed.len() - 1].iter().rposition(|b| *b == b'\n').unwrap();
    let signature_len = signed.len() - 2 - end_newline;
    let end_only = &signed[..end_newline];
    assert!(matches!(signed_by(end_only, &trusted), Err(Error::Unsigned)));
    // Cut inside the signature line: its line is named, not a missing end record.
    for cut in [1, 10, signature_len / 2, signature_len - 1] {
        let bytes = &signed[..signed.len() - cut - 1];
        let err = bundle::read_bundle(&mut &bytes[..]).unwrap_err();
        assert!(
            err.to_string().contains(&format!("line {lines}: the line after the end record is cut off")),
            "cut {cut}: {err}"
        );
    }
    // Cut inside the end record or before it: the end record is missing.
    for cut in [1, 10] {
        let bytes = &signed[..end_newline - cut];
        let err = bundle::read_bundle(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, Error::Truncated { line } if line == lines - 1), "cut {cut}: {err}");
        assert!(err.to_string().contains("without its end record"), "{err}");
    }
    // Nothing after a signature without its newline: a line after it is no longer the last.
    let mut added = no_newline(&signed);
    added.extend(b"\n{}\n");
    assert!(bundle::read_bundle(&mut &added[..]).is_err());
    let report = import(t.db(), &no_newline(&signed)).unwrap();
    assert_eq!(report.signed_by.as_deref(), Some(&*report::public_key_hex(&trusted)));
    assert_same_task(&src, t.db(), "task-n");
}
}

/// A mutation of a bundle's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
    SetByte(usize, u8),
    InsertLine(usize, String),
    /// A text field of the record on that line given another value (the bundle stays valid).
    EditField(usize, String),
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines.pop();
    for m in mutations {
        let n = lines.len().max(1);
        match m {
            Mutation::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::SwapLines(i, j) if !lines.is_empty() => lines.swap(i % n, j % n),
            Mutation::EditField(i, text) if !lines.is_empty() => {
                let at = i % n;
                if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&lines[at]) {
                    let (field, value) = match v["kind"].as_str() {
                        Some("task") => ("context", json!({"edited": text}).to_string()),
                        Some("trace") => ("prompt", text.clone()),
                        Some("invocation") => ("output_summary", text.clone()),
                        Some("approval") => ("comment", text.clone()),
                        _ => continue,
                    };
                    v[field] = json!(value);
                    lines[at] = v.to_string().into_bytes();
                }
            }
            Mutation::InsertLine(i, text) => {
                lines.insert(i % (n + 1).min(lines.len() + 1), text.clone().into_bytes())
            }
            _ => {}
        }
    }
    let mut out = lines.join(&b'\n');
    out.push(b'\n');
    for m in mutations {
        match m {
            Mutation::Truncate(k) => out.truncate(k % (out.len() + 1)),
            Mutation::SetByte(i, b) if !out.is_empty() => {
                let at = i % out.len();
                out[at] = *b;
            }
            _ => {}
        }
    }
    out
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let line = prop_oneof![
        Just("{}".to_owned()),
        Just(r#"{"kind":"end","records":0}"#.to_owned()),
        Just(r#"{"kind":"task","task_id":"task-p"}"#.to_owned()),
        "\\PC{0,40}",
    ];
    prop_oneof![
        4 => (any::<usize>(), "[a-z ]{1,20}").prop_map(|(i, s)| Mutation::EditField(i, s)),
        1 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::SwapLines(i, j)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => (any::<usize>(), line).prop_map(|(i, s)| Mutation::InsertLine(i, s)),
    ]
}

on_both! {
/// Random mutations of a real bundle never panic, and either import whole (every task of the
/// bundle then reads back as the bundle has it, its audit entries all present) or fail and
/// write nothing. Edited fields keep a bundle valid: its first import writes it, later ones
/// with other edits conflict.
fn mutated_bundles_import_whole_or_write_nothing(t) {
    let src_db = another(t);
    let src = open_clocked(src_db.location());
    populate(&src, "task-p");
    populate(&src, "task-q");
    let bytes = export(&src, &["task-p", "task-q"]);
    let cases = if t.backend() == Backend::Postgres { 32 } else { 128 };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&proptest::collection::vec(mutation(), 0..4), |mutations| {
            let mutated = mutate(&bytes, &mutations);
            let before = dump(t);
            match import(t.db(), &mutated) {
                Ok(_) => {
                    let parsed = bundle::read_bundle(&mut &mutated[..]).unwrap();
                    for given in &parsed.tasks {
                        let here = task_of(t.db(), &given.task.task_id);
                        prop_assert_eq!(&here.task, &given.task);
                        prop_assert_eq!(&here.transitions, &given.transitions);
                        prop_assert_eq!(&here.checkpoints, &given.checkpoints);
                        let sorted = |a: &[bundle::ApprovalRecord]| {
                            let mut a = a.to_vec();
                            a.sort_by(|x, y| x.id.cmp(&y.id));
                            a
                        };
                        prop_assert_eq!(sorted(&here.approvals), sorted(&given.approvals));
                        prop_assert_eq!(&here.traces, &given.traces);
                        let roots: Vec<String> = audit_rows(t.db(), &given.task.task_id)
                            .into_iter()
                            .filter_map(|r| r.origin.and_then(|o| o.hash))
                            .collect();
                        for row in &given.audit {
                            prop_assert!(roots.contains(&row.row_hash), "audit row {} imported", row.id);
                        }
                    }
                }
                Err(_) => prop_assert_eq!(dump(t), before, "{:?}", mutations),
            }
            Ok(())
        })
        .unwrap();
    verifies(t.db());
}
}

/// The default workflow with `version` and ANALYSIS_COMPLETE leading to `to`.
fn workflow_variant(version: u32, to: &str) -> aigentflow::states::WorkflowDefinition {
    let mut d = aigentflow::states::WorkflowDefinition::default_workflow().clone();
    d.version = version;
    let yaml = d.to_yaml().replace(
        "event: ANALYSIS_COMPLETE\n  to: ORCHESTRATING",
        &format!("event: ANALYSIS_COMPLETE\n  to: {to}"),
    );
    aigentflow::states::WorkflowDefinition::parse(&yaml, aigentflow::states::Format::Yaml).unwrap()
}

on_both! {
/// A task started under a workflow definition carries it in its bundle: the destination loads
/// the definition (or finds it loaded with the same content), binds the task to it, and the task
/// goes on following it there; a destination holding that name and version with other content
/// refuses the bundle and keeps nothing; a definition record edited so its content no longer
/// gives its hash is refused naming its line.
fn a_task_moves_with_the_workflow_definition_it_started_under(t) {
    use aigentflow::workflows::{WorkflowRef, Workflows};
    let src = Workflows::new(t.db().clone());
    let custom = workflow_variant(7, "PLANNING");
    assert_ne!(custom.table, aigentflow::states::TransitionTable::default());
    src.load(&custom).unwrap();
    src.start("aigentflow-default", Some(7), StateContext::new("p".into(), "bound".into(), "go")).unwrap();
    src.apply(&TaskId::new("bound"), Event::Start, None).unwrap();
    let bytes = export(t.db(), &["bound"]);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.lines().nth(2).unwrap().contains("\"kind\":\"definition\""), "{text}");
    let dst = another(t);
    import(dst.db(), &bytes).unwrap();
    let there = Workflows::new(dst.db().clone());
    assert_eq!(there.definition_of(&TaskId::new("bound")).unwrap(), Some(WorkflowRef { name: "aigentflow-default".into(), version: 7 }));
    assert_eq!(there.get("aigentflow-default", Some(7)).unwrap(), Some(custom.clone()));
    // Again (before it moves on there): already present, nothing changes.
    let before = dump(&dst);
    import(dst.db(), &bytes).unwrap();
    assert_eq!(dump(&dst), before);
    let moved = there.apply(&TaskId::new("bound"), Event::AnalysisComplete, None).unwrap();
    assert_eq!(moved.state().as_str(), "PLANNING");
    // A destination with other content under aigentflow-default@7.
    let third = another(t);
    Workflows::new(third.db().clone()).load(&workflow_variant(7, "DESIGNING")).unwrap();
    let before = dump(&third);
    let e = import(third.db(), &bytes).unwrap_err();
    assert!(e.to_string().contains("aigentflow-default@7"), "{e}");
    assert_eq!(dump(&third), before);
    // The definition edited in the bundle.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    edit_line(&mut lines, 2, |v| {
        let d = v["definition"].as_str().unwrap().replace("PLANNING", "DESIGNING");
        v["definition"] = json!(d);
    });
    let e = import(third.db(), &joined(&lines)).unwrap_err();
    assert!(e.to_string().contains("line 3") && e.to_string().contains("content_hash"), "{e}");
}
}

/// The audit row of a [`hand_made`] bundle (line 4) given `event` as version 2, its hash
/// recomputed as someone editing the bundle would.
fn with_event(lines: &mut [String], event: &aigentflow::audit::StoredEvent) {
    let mut record: Record = serde_json::from_str(&lines[3]).unwrap();
    let Record::Audit(row) = &mut record else { panic!("line 4 is the audit row") };
    row.event = Some(Box::new(event.clone()));
    row.hash_version = Some(2);
    row.row_hash = row.computed_hash();
    lines[3] = serde_json::to_string(&record).unwrap();
}

/// An event every field of which an `AuditEntry` could hold.
fn valid_event() -> impl Strategy<Value = aigentflow::audit::StoredEvent> {
    use aigentflow::audit::{Outcome as EventOutcome, Severity};
    let text = || proptest::option::of("[a-z0-9_./-]{1,8}( [a-z]{1,4})?");
    let pair = || proptest::option::of(("[a-z]{1,6}", "[a-z0-9./-]{1,8}"));
    let json = || {
        proptest::option::of(prop_oneof![
            Just("null".to_owned()),
            "[a-z]{0,6}".prop_map(|s| json!({ "k": s }).to_string()),
            any::<i32>().prop_map(|n| n.to_string()),
        ])
    };
    (
        proptest::option::of(proptest::sample::select(Severity::ALL.to_vec())),
        proptest::option::of(proptest::sample::select(EventOutcome::ALL.to_vec())),
        (pair(), pair()),
        (text(), text(), text(), text()),
        (json(), json()),
    )
        .prop_map(
            |(
                severity,
                outcome,
                (actor, target),
                (session, workflow, correlation, error),
                (before, after),
            )| {
                aigentflow::audit::StoredEvent {
                    severity: severity.map(|s| s.as_str().to_owned()),
                    outcome: outcome.map(|o| o.as_str().to_owned()),
                    actor_type: actor.as_ref().map(|a| a.0.clone()),
                    actor_id: actor.map(|a| a.1),
                    target_type: target.as_ref().map(|t| t.0.clone()),
                    target_id: target.map(|t| t.1),
                    session_id: session,
                    workflow_id: workflow,
                    correlation_id: correlation,
                    changes_before: before,
                    changes_after: after,
                    error,
                }
            },
        )
}

/// One thing an `AuditEntry` could not hold, put into an event, with the words its refusal
/// says.
fn spoiled(
    event: aigentflow::audit::StoredEvent,
) -> impl Strategy<Value = (aigentflow::audit::StoredEvent, String)> {
    let blank = "[ \t\r\n]{0,3}";
    let not_a_name = "[A-Za-z_ -]{0,9}".prop_filter("a known name", |s| {
        s.parse::<aigentflow::audit::Severity>().is_err()
            && s.parse::<aigentflow::audit::Outcome>().is_err()
    });
    let not_json = "[a-z{}\\[\\]\":, ]{1,8}".prop_filter("JSON text or blank", |s| {
        !s.trim().is_empty() && serde_json::from_str::<serde_json::Value>(s).is_err()
    });
    let names = [
        "actor type",
        "actor id",
        "target type",
        "target id",
        "session id",
        "workflow id",
        "correlation id",
        "error",
    ];
    prop_oneof![
        (0usize..8, blank).prop_map({
            let event = event.clone();
            move |(at, text)| {
                let mut e = event.clone();
                // Both halves of an actor or a target are set, so that only the blank is wrong.
                let slot: &mut Option<String> = match at {
                    0 | 1 => {
                        e.actor_type.get_or_insert("agent".into());
                        e.actor_id.get_or_insert("a".into());
                        if at == 0 {
                            &mut e.actor_type
                        } else {
                            &mut e.actor_id
                        }
                    }
                    2 | 3 => {
                        e.target_type.get_or_insert("file".into());
                        e.target_id.get_or_insert("f".into());
                        if at == 2 {
                            &mut e.target_type
                        } else {
                            &mut e.target_id
                        }
                    }
                    4 => &mut e.session_id,
                    5 => &mut e.workflow_id,
                    6 => &mut e.correlation_id,
                    _ => &mut e.error,
                };
                *slot = Some(text);
                (e, format!("the {} is empty", names[at]))
            }
        }),
        (any::<bool>(), not_a_name).prop_map({
            let event = event.clone();
            move |(severity, text)| {
                let mut e = event.clone();
                let what = if severity { "severity" } else { "outcome" };
                *(if severity { &mut e.severity } else { &mut e.outcome }) = Some(text.clone());
                (e, format!("the {what} \"{text}\" is not one of"))
            }
        }),
        (0usize..4).prop_map({
            let event = event.clone();
            move |half| {
                let mut e = event.clone();
                let (what, has, lacks) = match half {
                    0 => {
                        e.actor_type = Some("agent".into());
                        e.actor_id = None;
                        ("actor", "type", "id")
                    }
                    1 => {
                        e.actor_type = None;
                        e.actor_id = Some("a".into());
                        ("actor", "id", "type")
                    }
                    2 => {
                        e.target_type = Some("file".into());
                        e.target_id = None;
                        ("target", "type", "id")
                    }
                    _ => {
                        e.target_type = None;
                        e.target_id = Some("f".into());
                        ("target", "id", "type")
                    }
                };
                (e, format!("the {what} has a {has} but no {lacks}"))
            }
        }),
        (any::<bool>(), not_json).prop_map(move |(before, text)| {
            let mut e = event.clone();
            *(if before { &mut e.changes_before } else { &mut e.changes_after }) = Some(text);
            (e, format!("the changes {} is not JSON text", if before { "before" } else { "after" }))
        }),
    ]
}

on_both! {
/// An imported audit row holds only what an `AuditEntry` could: a bundle edited to give an
/// event a blank field, a severity or outcome this build does not know, an actor or target
/// with half of itself, or changes that are not JSON (its hash recomputed) is refused naming
/// its line and the field, and nothing is written; so is the same event given to
/// `append_imported_in` directly. Events an entry could hold import, and verify.
fn an_imported_event_holds_only_what_an_entry_could_or_is_refused(t) {
    populate(&open_clocked(t.location()), "task-here");
    let before = dump(t);
    let good = hand_made("task-e", r#"{"prompt":"x"}"#, "p", r#"{"a":1}"#);
    check(64, valid_event().prop_flat_map(spoiled), |(event, says)| {
        let mut lines = good.clone();
        with_event(&mut lines, &event);
        let err = import(t.db(), &joined(&lines)).unwrap_err();
        let expected = format!("line 4: audit row 7: {says}");
        prop_assert!(err.to_string().contains(&expected), "{err} / {expected}");
        prop_assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
        prop_assert_eq!(&dump(t), &before, "nothing written");
        let entry = aigentflow::audit::ImportedEntry {
            timestamp: Utc::now(),
            project_id: Some("p".into()),
            task_id: Some("task-e".into()),
            agent: None,
            action: "noted".into(),
            category: "user".into(),
            details: None,
            user_id: None,
            ip_address: None,
            event: event.clone(),
            origin: aigentflow::audit::ImportedOrigin { id: 7, hash: "ab".repeat(32), source: "/x.db".into() },
        };
        let log = AuditLog::new(t.db().clone());
        let err = t.db().write(|tx| log.append_imported_in(tx, std::slice::from_ref(&entry))).unwrap_err();
        prop_assert!(matches!(err, aigentflow::audit::Error::InvalidInput { .. }), "{err:?}");
        prop_assert!(err.to_string().contains(&says), "{err}");
        prop_assert_eq!(&dump(t), &before, "nothing written");
        Ok(())
    });
    let n = std::sync::atomic::AtomicUsize::new(0);
    check(24, valid_event(), |event| {
        let task = format!("task-v{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut lines = hand_made(&task, r#"{"prompt":"x"}"#, "p", r#"{"a":1}"#);
        with_event(&mut lines, &event);
        import(t.db(), &joined(&lines)).unwrap();
        let rows = audit_rows(t.db(), &task);
        prop_assert_eq!(&rows[0].event, &event);
        Ok(())
    });
    verifies(t.db());
}
}

on_both! {
/// A bundle's audit row whose fields were edited and whose hash was recomputed (the formula is
/// public) cannot pass for a row this database knows: imported back into its source, or into a
/// database that imported the genuine row before, each edited field is refused naming the row,
/// and nothing is written. (A bundle forged whole, of rows nobody here knows, cannot be told
/// from a genuine one without a signature.)
fn an_audit_row_edited_with_its_hash_recomputed_is_refused_where_its_origin_is_known(t) {
    let src = t.db();
    populate(src, "task-f");
    let genuine = export(src, &["task-f"]);
    let elsewhere = another(t);
    import(elsewhere.db(), &genuine).unwrap();
    let text = String::from_utf8(genuine.clone()).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let audit_line = lines.iter().position(|l| l.contains("\"kind\":\"audit\"")).unwrap();
    let edits: [(&str, serde_json::Value); 4] = [
        ("action", json!("nothing happened")),
        ("details", json!("{\"approved\":\"everything\"}")),
        ("user_id", json!("ciso@example.com")),
        ("prev_hash", json!("f".repeat(64))),
    ];
    for (field, value) in edits {
        let mut forged = lines.clone();
        edit_line(&mut forged, audit_line, |v| {
            v[field] = value.clone();
            rehash(v);
        });
        let forged = joined(&forged);
        bundle::read_bundle(&mut &forged[..]).expect("the forgery is well formed");
        for dest in [t, &elsewhere] {
            let before = dump(dest);
            let err = import(dest.db(), &forged).unwrap_err();
            assert!(matches!(err, bundle::Error::OriginDiffers { .. }), "{field}: {err}");
            assert!(err.to_string().contains("the bundle was edited"), "{err}");
            assert_eq!(dump(dest), before, "{field}: nothing written");
        }
    }
    // The source spelled another way (a `.` or `..` step, a doubled separator; for a file,
    // the same file by another path) is the same source.
    let header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let source_text = header["source"].as_str().unwrap().to_owned();
    if source_text.starts_with('/') {
        let path = std::path::Path::new(&source_text);
        let (dir, name) = (path.parent().unwrap(), path.file_name().unwrap().to_str().unwrap());
        let dir_name = dir.file_name().unwrap().to_str().unwrap();
        let spellings = [
            format!("{}/./{name}", dir.display()),
            format!("{}//{name}", dir.display()),
            format!("{}/../{dir_name}/{name}", dir.display()),
        ];
        for spelled in spellings {
            let mut forged = lines.clone();
            edit_line(&mut forged, 0, |v| v["source"] = json!(spelled));
            edit_line(&mut forged, audit_line, |v| {
                v["action"] = json!("nothing happened");
                rehash(v);
            });
            let err = import(src, &joined(&forged)).unwrap_err();
            assert!(matches!(err, bundle::Error::OriginDiffers { .. }), "{spelled}: {err}");
        }
    }
    // Two rows of one bundle claiming one origin with two hashes: the second is refused.
    let fresh = another(t);
    let mut twice = lines.clone();
    let mut copy: serde_json::Value = serde_json::from_str(&lines[audit_line]).unwrap();
    copy["action"] = json!("said twice");
    rehash(&mut copy);
    copy["id"] = lines[audit_line].parse::<serde_json::Value>().unwrap()["id"].clone();
    twice.insert(audit_line + 1, copy.to_string());
    if let Some(end) = twice.iter().position(|l| l.contains("\"kind\":\"end\"")) {
        edit_line(&mut twice, end, |v| v["records"] = json!(v["records"].as_u64().unwrap() + 1));
    }
    match bundle::read_bundle(&mut &joined(&twice)[..]) {
        // The line check may refuse the repeated id itself; if it passes, the import must.
        Err(_) => {}
        Ok(_) => {
            let err = import(fresh.db(), &joined(&twice)).unwrap_err();
            assert!(matches!(err, bundle::Error::OriginDiffers { .. }), "{err}");
        }
    }
    // The genuine bundle still finds everything already present on both sides.
    for dest in [t, &elsewhere] {
        let report = import(dest.db(), &genuine).unwrap();
        assert_eq!(report.audit_appended, 0);
        verifies(dest.db());
    }
}
}

/// A bundle of `tasks` signed with `key`.
fn export_signed(db: &Database, tasks: &[&str], key: &report::SigningKey) -> Vec<u8> {
    let ids: Vec<TaskId> = tasks.iter().map(|t| (*t).into()).collect();
    let mut out = Vec::new();
    bundle::export_signed(db, &ids, &mut out, Some(key)).unwrap();
    out
}

/// `bytes` signed anew with `key`, as a forger would: its signature line, if any, replaced.
fn signed_anew(bytes: &[u8], key: &report::SigningKey) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let end = text.find("{\"kind\":\"signature\"").unwrap_or(text.len());
    let body = &text.as_bytes()[..end];
    let sha256 = hex::encode(Sha256::digest(body));
    let signature = bundle::Record::Signature(bundle::SignatureRecord {
        algorithm: "ed25519".into(),
        public_key: report::public_key_hex(&key.verifying_key()),
        value: report::sign_bytes(key, &bundle::signed_message(&sha256)),
        sha256,
    });
    let mut out = body.to_vec();
    out.extend(serde_json::to_vec(&signature).unwrap());
    out.push(b'\n');
    out
}

/// Whether `bytes` reads as a bundle that `key` signed.
fn signed_by(bytes: &[u8], key: &report::VerifyingKey) -> bundle::Result<bundle::Bundle> {
    let parsed = bundle::read_bundle(&mut &bytes[..])?;
    parsed.check_signer(key)?;
    Ok(parsed)
}

on_both! {
/// A bundle signed at export reads and imports as its signer's; every change to it is refused
/// under that key: any one byte of any line changed (three places in each line, the signature's
/// own line too), any line removed, two neighbouring lines swapped, a line added after the
/// signature, the signature moved before the end record. A bundle edited and signed anew by
/// another key (a forger's) is `OtherSigner`, one whose signature was cut off is `Unsigned`;
/// both read as well-formed bundles, which is all an unsigned bundle can show.
fn a_signed_bundle_is_refused_after_any_change_or_under_another_key(t) {
    let src_db = another(t);
    let src = open_clocked(src_db.location());
    populate(&src, "task-s");
    let (key, forger) = (report::generate_key().unwrap(), report::generate_key().unwrap());
    let trusted = key.verifying_key();
    let genuine = export_signed(&src, &["task-s"], &key);
    let parsed = signed_by(&genuine, &trusted).expect("the genuine bundle is its signer's");
    assert_eq!(parsed.signed_by.as_deref(), Some(&*report::public_key_hex(&trusted)));
    // The lines of the unsigned export (the header's time aside), and the signature last.
    let unsigned = export(&src, &["task-s"]);
    let lines: Vec<&[u8]> = genuine.split_inclusive(|b| *b == b'\n').collect();
    let unsigned_lines: Vec<&[u8]> = unsigned.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines[1..lines.len() - 1], unsigned_lines[1..], "a signature only adds its line");
    assert!(lines[lines.len() - 1].starts_with(b"{\"kind\":\"signature\""));
    let glue = |lines: &[&[u8]]| lines.concat();
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        for place in [1, line.len() / 2, line.len() - 2] {
            let mut changed = lines.iter().map(|l| l.to_vec()).collect::<Vec<_>>();
            let b = &mut changed[n][place];
            *b = if b.is_ascii_digit() { b'0' + (*b - b'0' + 1) % 10 } else if *b == b'a' { b'b' } else { b'a' };
            variants.push((format!("line {} byte {place}", n + 1), changed.concat()));
        }
        let mut removed = lines.clone();
        removed.remove(n);
        variants.push((format!("line {} removed", n + 1), glue(&removed)));
        if n + 1 < lines.len() {
            let mut swapped = lines.clone();
            swapped.swap(n, n + 1);
            variants.push((format!("lines {} and {} swapped", n + 1, n + 2), glue(&swapped)));
        }
    }
    let last = lines.len() - 1;
    let mut added = lines.clone();
    added.push(b"{\"kind\":\"end\",\"records\":0}\n");
    variants.push(("a line after the signature".into(), glue(&added)));
    let mut twice = lines.clone();
    twice.push(lines[last]);
    variants.push(("the signature twice".into(), glue(&twice)));
    let mut early = lines.clone();
    early.swap(last - 1, last);
    variants.push(("the signature before the end".into(), glue(&early)));
    // The signature line itself only as written: its hex in upper case, blanks, a carriage
    // return, an escaped character.
    let signature = String::from_utf8(lines[last].to_vec()).unwrap();
    let key_hex = report::public_key_hex(&trusted);
    for (what, respelled) in [
        ("upper-case hex", signature.replace(&key_hex, &key_hex.to_uppercase())),
        ("a blank", signature.replacen("{", "{ ", 1)),
        ("a carriage return", signature.replace('\n', "\r\n")),
        ("an escape", signature.replacen("ed25519", "\\u0065d25519", 1)),
    ] {
        let mut changed = lines.clone();
        changed[last] = respelled.as_bytes();
        variants.push((format!("the signature line with {what}"), glue(&changed)));
    }
    for (what, bytes) in &variants {
        assert!(bytes != &genuine, "{what}: a change");
        assert!(signed_by(bytes, &trusted).is_err(), "{what}: passed as the signer's");
    }
    // Forged whole: a row edited, the bundle signed again by another key.
    let text = String::from_utf8(genuine[..genuine.len() - lines[last].len()].to_vec()).unwrap();
    let mut edited: Vec<String> = text.lines().map(str::to_owned).collect();
    let row = edited.iter().position(|l| l.contains("\"file written\"")).unwrap();
    edit_line(&mut edited, row, |v| {
        v["action"] = json!("nothing written");
        rehash(v);
    });
    let forged = signed_anew(&joined(&edited), &forger);
    assert!(bundle::read_bundle(&mut &forged[..]).is_ok(), "a forgery is well formed");
    let err = signed_by(&forged, &trusted).unwrap_err();
    assert!(matches!(err, bundle::Error::OtherSigner { .. }), "{err}");
    let cut = &genuine[..genuine.len() - lines[last].len()];
    let err = signed_by(cut, &trusted).unwrap_err();
    assert!(matches!(err, bundle::Error::Unsigned), "{err}");
    // The genuine bundle imports, and says whose it is.
    let report = import(t.db(), &genuine).unwrap();
    assert_eq!(report.signed_by, parsed.signed_by);
    assert_same_task(&src, t.db(), "task-s");
    verifies(t.db());
}
}
