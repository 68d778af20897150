//! RELIABILITY R10 and R16 through the library: every sample of the secret corpus
//! (`tests/fixtures/secret-shapes.txt`, in every context it comes in) is written through every
//! field of every store — ids, names, free text, JSON keys and values, config keys and scopes —
//! and none of it is in the raw bytes of the database, its WAL, a backup, an export, or the
//! message of an error that refused it.
//!
//! The state store and the configuration (this library's own stores) are checked on both
//! backends: on SQLite in the bytes of the file and its WAL, on PostgreSQL in every cell of every
//! table. The file, WAL, backup and export check of every store runs on SQLite.

use aigentflow::audit::{
    Actor, AuditEntry, AuditLog, AuditQuery, Category, ExportFormat, ExportOptions, Target,
};
use aigentflow::lessons::{
    Category as LessonCategory, LessonId, LessonUpdate, LessonsStore, NewLesson,
};
use aigentflow::persistence::redact::corpus::{self, Sample};
use aigentflow::persistence::{ConfigStore, Database, Error, Scope, SqliteStateStore};
use aigentflow::states::{Event, ProjectId, StateContext, StateMachine, StateStore, TaskId};
use aigentflow::tracker::{
    ExecutionTracker, FinishedSpan, InvocationUpdate, LlmCall, NewDecision, NewInvocation, NewSpan,
    SpanEnd, SpanId, SpanKind, SpanStatus, TraceId,
};
use serde_json::{json, Value};

use crate::inspect::stored_bytes;
use crate::support::*;

/// The corpus, expanded with a fixed seed so a failure names a sample that can be found again.
fn samples() -> Vec<Sample> {
    corpus::samples(0x5ec2e7).unwrap()
}

/// The sample as a JSON value: its own JSON for a JSON context, else an object that holds it
/// as a key, as a value and nested.
fn as_json(s: &Sample) -> Value {
    s.json().unwrap_or_else(|| {
        let mut map = serde_json::Map::new();
        map.insert(s.text.clone(), json!({"value": s.text, "list": [s.text]}));
        Value::Object(map)
    })
}

/// Writes `s` (the `i`-th sample) through every field of the state store and the
/// configuration; returns the task's machine as saved.
fn write_library(db: &Database, i: usize, s: &Sample) -> StateMachine {
    let text = s.text.as_str();
    let value = as_json(s);
    // State store: ids, prompt, context metadata (keys and values), transition metadata,
    // checkpoint context and artifacts.
    let project = ProjectId::new(format!("p{i}-{text}"));
    let task = TaskId::new(format!("t{i}-{text}"));
    let mut context = StateContext::new(project.clone(), task.clone(), text);
    context.metadata.insert(text.to_owned(), value.clone());
    context.agent_queue.push(text.to_owned());
    let mut m = StateMachine::new(context);
    m.apply(Event::Start, Some(value.clone())).unwrap();
    m.create_checkpoint(vec![text.to_owned()]);
    m.apply(Event::AnalysisComplete, Some(json!({"note": text}))).unwrap();
    let states = SqliteStateStore::new(db.clone());
    states.save_state(m.persisted()).unwrap();

    // Configuration: the key, the scope, the value; and a secret-named key with a plain value.
    let config = ConfigStore::new(db.clone());
    let scope = Scope::Project(ProjectId::new(format!("c{i}-{text}")));
    config.set(&format!("k{i}-{text}"), &scope, &value).unwrap();
    config.set(&format!("k{i}"), &Scope::Global, &Value::from(text)).unwrap();
    config.set(&format!("{i}_api_key"), &Scope::Global, &Value::from(s.secret.as_str())).unwrap();
    m
}

/// Writes `s` (the `i`-th sample) through every field of every store.
fn write_everywhere(db: &Database, i: usize, s: &Sample) {
    let text = s.text.as_str();
    let value = as_json(s);
    let m = write_library(db, i, s);
    let states = SqliteStateStore::new(db.clone());
    let (project, task) = (m.persisted().project_id.clone(), m.persisted().task_id.clone());

    // Audit: every field, in one transaction with the state, as the orchestrator writes them.
    let audit = AuditLog::new(db.clone());
    let entry = AuditEntry {
        project_id: Some(project.clone()),
        task_id: Some(task.clone()),
        agent: Some(text.to_owned()),
        details: Some(value.clone()),
        user_id: Some(text.to_owned()),
        ip_address: Some(text.to_owned()),
        ..AuditEntry::new(text, Category::Security)
    };
    db.write(|tx| {
        states.save_in(tx, m.persisted())?;
        audit.log_in(tx, &entry).map(|_| ())
    })
    .unwrap();

    // Lessons: every field, then an update of every field.
    let lessons = LessonsStore::new(db.clone());
    let lesson = lessons
        .create(&NewLesson {
            project_id: Some(project.clone()),
            details: Some(text.to_owned()),
            tags: vec![text.to_owned()],
            source_agent: Some(text.to_owned()),
            source_file: Some(text.to_owned()),
            ..NewLesson::new(LessonCategory::Security, text, text)
        })
        .unwrap();
    lessons
        .update(
            &lesson.id,
            &LessonUpdate {
                title: Some(format!("{text} again")),
                summary: Some(format!("again {text}")),
                details: Some(Some(format!("details {text}"))),
                tags: Some(vec![format!("tag {text}")]),
                source_agent: Some(Some(format!("agent {text}"))),
                source_file: Some(Some(format!("file {text}"))),
                project_id: Some(Some(ProjectId::new(format!("q{i}-{text}")))),
                ..Default::default()
            },
        )
        .unwrap();

    // Tracker: trace, invocation, its update, completion with metadata.
    let tracker = ExecutionTracker::new(db.clone());
    let trace = tracker.start_trace(&project, &task, text).unwrap();
    let invocation = tracker
        .record_invocation(&NewInvocation {
            task_fragment: Some(text.to_owned()),
            output_summary: Some(text.to_owned()),
            error: Some(text.to_owned()),
            ..NewInvocation::new(trace.id.clone(), text, db.now())
        })
        .unwrap();
    tracker
        .update_invocation(
            invocation,
            &InvocationUpdate {
                output_summary: Some(format!("summary {text}")),
                error: Some(format!("error {text}")),
                ..Default::default()
            },
        )
        .unwrap();
    tracker.complete_trace(&trace.id, false, None, Some(&value)).unwrap();

    // Spans: name, session, attributes (at start and end), LLM model and provider, decision.
    let span = tracker
        .start_span(&NewSpan {
            session_id: Some(text.to_owned()),
            attributes: Some(value.clone()),
            ..NewSpan::new(trace.id.clone(), SpanKind::Llm, text)
        })
        .unwrap();
    let call = LlmCall {
        model: text.to_owned(),
        provider: text.to_owned(),
        input_tokens: 1,
        output_tokens: 1,
        cost: None,
        latency_ms: None,
    };
    tracker.record_llm(&span.id, &call).unwrap();
    let decision = NewDecision {
        agent: text.to_owned(),
        kind: text.to_owned(),
        options: value.clone(),
        choice: text.to_owned(),
        rationale: Some(text.to_owned()),
    };
    tracker.decide(&span.id, &decision).unwrap();
    let end =
        SpanEnd { status: SpanStatus::Error, ended_at: None, attributes: Some(value.clone()) };
    tracker.end_span(&span.id, &end).unwrap();

    // A batch of finished spans: the same fields, the ids too, a parent later in the batch.
    let parent = SpanId::new(format!("batch-{i}-{text}"));
    let start = |kind: SpanKind| NewSpan {
        session_id: Some(text.to_owned()),
        attributes: Some(value.clone()),
        ..NewSpan::new(trace.id.clone(), kind, text)
    };
    let child = SpanId::new(format!("batch-{i}-child-{text}"));
    let batch = [
        FinishedSpan::new(child, start(SpanKind::Llm).under(&parent), end.clone()).with_llm(call),
        FinishedSpan::new(parent, start(SpanKind::Agent), end),
    ];
    assert_eq!(tracker.record_spans(&batch).unwrap(), 2);
}

/// The messages of the errors of the state store and the configuration that refuse input
/// carrying `s`.
fn library_refusals(db: &Database, s: &Sample) -> Vec<String> {
    let text = s.text.as_str();
    let config = ConfigStore::new(db.clone());
    let mut odd = StateContext::new("p".into(), "t".into(), "x");
    odd.task_id = TaskId::new(text);
    let state = aigentflow::states::PersistedState {
        task_id: "t".into(),
        project_id: "p".into(),
        state: aigentflow::states::WorkflowState::Idle,
        context: odd,
        history: Vec::new(),
    };
    let errors: [Error; 3] = [
        config.set_json("k", &Scope::Global, &format!("{{ not json {text}")).unwrap_err(),
        Scope::parse(text).unwrap_err(),
        SqliteStateStore::new(db.clone()).save_state(&state).unwrap_err(),
    ];
    errors.iter().map(ToString::to_string).collect()
}

/// The messages of the errors that refuse input carrying `s`.
fn refusals(db: &Database, s: &Sample) -> Vec<String> {
    let text = s.text.as_str();
    let mut messages = library_refusals(db, s);
    let mut push = |e: &dyn std::fmt::Display| messages.push(e.to_string());
    push(
        &LessonsStore::new(db.clone())
            .update(&LessonId::new(text), &LessonUpdate::default())
            .unwrap_err(),
    );
    let tracker = ExecutionTracker::new(db.clone());
    push(&tracker.heartbeat(&TraceId::new(text)).unwrap_err());
    let end = SpanEnd { status: SpanStatus::Ok, ended_at: None, attributes: None };
    let trace = tracker.start_trace(&"p".into(), &"t".into(), "refusals").unwrap().id;
    let span = |id: &str, trace: &TraceId, parent: Option<&str>| {
        let mut start = NewSpan::new(trace.clone(), SpanKind::Tool, text);
        start.parent_id = parent.map(SpanId::new);
        FinishedSpan::new(SpanId::new(id), start, end.clone())
    };
    // An unknown trace, an unknown parent, an id twice in the batch.
    let batches = [
        vec![span(text, &TraceId::new(text), None)],
        vec![span("x", &trace, Some(text))],
        vec![span(text, &trace, None), span(text, &trace, None)],
    ];
    for batch in &batches {
        push(&tracker.record_spans(batch).unwrap_err());
    }
    let query = AuditQuery { start: Some(text.to_owned()), ..AuditQuery::default() };
    push(&AuditLog::new(db.clone()).query(&query).unwrap_err());
    messages
}

/// Asserts that no sample leaked into `bytes`, naming the first that did.
fn assert_clean(what: &str, samples: &[Sample], bytes: &[u8]) {
    if let Some((s, needle)) = corpus::leaks(samples, bytes).first() {
        panic!("{what} holds {needle:?} of sample {} ({:?}): {:?}", s.name, s.context, s.text);
    }
}

#[test]
fn r16_no_corpus_secret_from_any_field_of_any_store_reaches_db_wal_backup_export_or_error_on_sqlite(
) {
    let samples = samples();
    assert!(samples.len() >= 100, "the corpus is the test: {} samples", samples.len());
    let (dir, path) = temp_db();
    let db = open(&path);
    for (i, s) in samples.iter().enumerate() {
        write_everywhere(&db, i, s);
    }
    // The WAL holds the latest pages until a checkpoint: both files are read as they are.
    assert_clean("the database and its WAL", &samples, &file_bytes(&path));

    let backup = dir.path().join("backup.db");
    db.backup_to(&backup).unwrap();
    assert_clean("the backup", &samples, &std::fs::read(&backup).unwrap());

    let audit = AuditLog::new(db.clone());
    for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
        let mut out = Vec::new();
        audit.export(&mut out, &ExportOptions::new(format), |_| {}).unwrap();
        assert_clean(&format!("the {format:?} export"), &samples, &out);
    }
    for s in &samples {
        for message in refusals(&db, s) {
            assert_clean("an error message", std::slice::from_ref(s), message.as_bytes());
        }
    }
    db.close().unwrap();
    assert_clean("the database after its last close", &samples, &file_bytes(&path));
}

on_both! {
/// R16 for the audit log on either backend: every sample of the corpus through every field of
/// an entry, alone and inside a caller's transaction. None of it is in the stored rows (on
/// PostgreSQL, every row as the server gives it back), an export, or the message of an error
/// that refused it; and a query by the text as the caller holds it finds its entry.
fn r16_no_corpus_secret_from_any_audit_field_reaches_the_rows_an_export_or_an_error(t) {
    let samples = samples();
    let audit = AuditLog::new(t.db().clone());
    for (i, s) in samples.iter().enumerate() {
        let text = s.text.as_str();
        let task = format!("t{i}-{text}");
        let entry = AuditEntry {
            project_id: Some(ProjectId::new(format!("p{i}-{text}"))),
            task_id: Some(TaskId::new(task.clone())),
            agent: Some(text.to_owned()),
            details: Some(as_json(s)),
            user_id: Some(text.to_owned()),
            ip_address: Some(text.to_owned()),
            session_id: Some(text.to_owned()),
            workflow_id: Some(text.to_owned()),
            correlation_id: Some(text.to_owned()),
            error: Some(text.to_owned()),
            ..AuditEntry::new(text, Category::parse(&format!("c-{text}")))
                .actor(Actor::new(text, text))
                .target(Target::new(text, text))
                .changes(Some(as_json(s)), Some(json!([text, { "v": as_json(s) }])))
        };
        if i % 2 == 0 {
            audit.log(&entry).unwrap();
        } else {
            t.db().write(|tx| audit.log_in(tx, &entry).map(|_| ())).unwrap();
        }
        let by_task = AuditQuery { task_id: Some(task.into()), ..AuditQuery::default() };
        assert_eq!(audit.query(&by_task).unwrap().len(), 1, "{}", s.name);
        // Every new field is found again by the text it was written with.
        let by_event = AuditQuery {
            actor_id: Some(text.to_owned()),
            target_type: Some(text.to_owned()),
            correlation_id: Some(text.to_owned()),
            ..by_task
        };
        assert_eq!(audit.query(&by_event).unwrap().len(), 1, "{}", s.name);
        let refused = AuditQuery { start: Some(text.to_owned()), ..AuditQuery::default() };
        let message = audit.query(&refused).unwrap_err().to_string();
        assert_clean("an error message", std::slice::from_ref(s), message.as_bytes());
    }
    assert_clean("the stored rows", &samples, &crate::audit::stored_bytes(t));
    for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
        let mut out = Vec::new();
        audit.export(&mut out, &ExportOptions::new(format), |_| {}).unwrap();
        assert_clean(&format!("the {format:?} export"), &samples, &out);
    }
    let v = audit.verify(None).unwrap();
    assert_eq!((v.rows, v.finding), (samples.len() as u64, None));
    let stats = audit.stats(&AuditQuery::default(), 1000).unwrap();
    assert_clean("the stats", &samples, &serde_json::to_vec(&stats).unwrap());
}
}

on_both! {
/// What the database holds, read around the stores (the SQLite file and its WAL; every cell of
/// every PostgreSQL table), and the messages of the errors that refuse the input, hold none of
/// the corpus written through every field of the state store and the configuration.
fn r16_no_corpus_secret_from_any_state_or_configuration_field_reaches_the_database_or_an_error(t) {
    let samples = samples();
    assert!(samples.len() >= 100, "the corpus is the test: {} samples", samples.len());
    for (i, s) in samples.iter().enumerate() {
        write_library(t.db(), i, s);
    }
    let stored = stored_bytes(t);
    assert!(contains(&stored, "[REDACTED]"), "the stored text was read");
    assert_clean("the database", &samples, &stored);
    for s in &samples {
        for message in library_refusals(t.db(), s) {
            assert_clean("an error message", std::slice::from_ref(s), message.as_bytes());
        }
    }
}
}

on_both! {
/// Filters go through the same policy as what is stored, so a query by the text a caller holds
/// finds the row redaction changed.
fn what_was_written_with_a_secret_is_found_again_by_the_same_text(t) {
    for (i, s) in samples().iter().enumerate().step_by(7) {
        write_library(t.db(), i, s);
        let task = TaskId::new(format!("t{i}-{}", s.text));
        let loaded = SqliteStateStore::new(t.db().clone()).load_state(&task).unwrap();
        assert!(loaded.is_some(), "task of sample {} ({:?})", s.name, s.context);
        let config = ConfigStore::new(t.db().clone());
        let scope = Some(ProjectId::new(format!("c{i}-{}", s.text)));
        let entry = config.get(&format!("k{i}-{}", s.text), scope.as_ref()).unwrap();
        assert!(entry.is_some(), "configuration of sample {} ({:?})", s.name, s.context);
    }
}
}

#[test]
fn what_an_audit_entry_was_written_with_is_found_again_by_the_same_text() {
    let db = Database::open_in_memory().unwrap();
    for (i, s) in samples().iter().enumerate().step_by(7) {
        write_everywhere(&db, i, s);
        let task = TaskId::new(format!("t{i}-{}", s.text));
        let by_task = AuditQuery { task_id: Some(task), ..AuditQuery::default() };
        assert_eq!(AuditLog::new(db.clone()).query(&by_task).unwrap().len(), 1, "{}", s.name);
    }
}

/// What a writer deletes or overwrites leaves no bytes in the SQLite file or its WAL: a lesson
/// deleted (its row, and its words in the search index, with and without a rebuild after), a
/// configuration value removed or replaced. A text the policy does not know as a secret is the
/// operator's to remove this way; before, its words stayed in free pages and in the index's
/// segments (in lower case) until they happened to be written over. Checked once the database
/// is closed: until its WAL starts again, the WAL holds the pages as they were.
#[test]
fn deleted_and_replaced_text_leaves_no_bytes_in_the_file_or_its_wal_on_sqlite() {
    let words = |n: usize| format!("qzxvjkwq{n} plain words ");
    for long in [false, true] {
        for rebuild in [false, true] {
            let (_dir, path) = temp_db();
            let db = open(&path);
            let text = |n: usize| if long { words(n).repeat(2000) } else { words(n) };
            let lessons = LessonsStore::new(db.clone());
            let mut ids = Vec::new();
            for n in 0..3 {
                let lesson = lessons
                    .create(&NewLesson {
                        details: Some(text(n)),
                        ..NewLesson::new(LessonCategory::Security, text(n + 10), text(n + 20))
                    })
                    .unwrap();
                ids.push(lesson.id);
            }
            let config = ConfigStore::new(db.clone());
            config.set("gone", &Scope::Global, &json!(text(30))).unwrap();
            config.set("replaced", &Scope::Global, &json!(text(31))).unwrap();
            config.set("kept", &Scope::Global, &json!("kept value")).unwrap();
            let bytes = file_bytes(&path).to_ascii_lowercase();
            assert!(bytes.windows(10).any(|w| w == b"qzxvjkwq31"), "the text is written first");

            for id in &ids {
                assert!(lessons.delete(id).unwrap());
            }
            assert!(config.delete("gone", &Scope::Global).unwrap());
            config.set("replaced", &Scope::Global, &json!("a new value")).unwrap();
            if rebuild {
                lessons.rebuild().unwrap();
            }
            // Once closed (the last close checkpoints and removes the WAL, whose frames kept
            // the pages as they were until then).
            drop((lessons, config));
            db.close().unwrap();
            for (when, bytes) in [("after closing", file_bytes(&path))] {
                let bytes = bytes.to_ascii_lowercase();
                for n in [0, 10, 20, 30, 31] {
                    let needle = format!("qzxvjkwq{n}");
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                        "{needle} {when} (long {long}, rebuild {rebuild})"
                    );
                }
                assert!(bytes.windows(10).any(|w| w == b"kept value"), "{when}");
            }
        }
    }
}
