//! Typed ids on the read side, through the façade alone: every store written with typed ids
//! (`ProjectId`, `TaskId`, `TraceId`, `LessonId`, `InvocationId`), read back as the same types,
//! filtered by them, and serialised as the plain text (or number) they were before. An id is
//! text that goes through the redaction policy like any other, so what comes back is the id as
//! stored: the redacted form of what was written.
//!
//! This module names the layer only through `aigentflow::…`
//! (`this_module_reaches_the_stores_through_the_facade_alone`): the façade re-exports every type
//! a store's signature needs, `chrono` and `serde_json` included.

use std::sync::atomic::{AtomicUsize, Ordering};

use aigentflow::audit::{AuditEntry, AuditLog, AuditQuery, Category, ExportFormat, ExportOptions};
use aigentflow::lessons::{Category as LessonCategory, LessonsStore, NewLesson, SearchOptions};
use aigentflow::persistence::redact::{corpus, redact_text};
use aigentflow::persistence::{ConfigStore, Scope, SqliteStateStore};
use aigentflow::serde_json::{json, Value};
use aigentflow::states::{Clock, Event, StateContext, StateMachine, StateStore, SystemClock};
use aigentflow::tracker::{
    ExecutionTracker, InvocationUpdate, NewInvocation, Outcome, TraceStatus,
};
use aigentflow::{InvocationId, LessonId, ProjectId, TaskId, TraceId};
use proptest::prelude::*;

use crate::support::*;

/// Id text: open-ended text that is not blank and holds no NUL (which every store refuses in an
/// id, or PostgreSQL in any text), or a sample of the secret corpus in one of its contexts.
fn id_text() -> impl Strategy<Value = String> {
    let secrets: Vec<String> = corpus::samples(0x1d5)
        .unwrap()
        .into_iter()
        .map(|s| s.text)
        .filter(|t| !t.contains('\0') && !t.trim().is_empty())
        .collect();
    prop_oneof![
        3 => "[^\\x00\\s][^\\x00]{0,23}",
        1 => prop::sample::select(secrets),
    ]
}

/// The id as the stores keep it: its text through the redaction policy.
fn stored<T: From<String>>(id: &str) -> T {
    T::from(redact_text(id).into_owned())
}

on_both! {
/// Every store takes typed ids and gives them back typed: the state store's summaries and
/// resumable tasks, configuration scopes, audit records, lessons and search filters, traces and
/// invocations. A filter by a typed id finds exactly that id's rows (a project's lesson search
/// adds the global ones), whatever text the id holds, secrets included; the records carry the
/// stored id, and their JSON (and an export's) holds it as a plain string.
fn typed_ids_are_written_read_back_and_filtered_by_in_every_store(t) {
    let db = t.db();
    let states = SqliteStateStore::new(db.clone());
    let config = ConfigStore::new(db.clone());
    let audit = AuditLog::new(db.clone());
    let lessons = LessonsStore::new(db.clone());
    let tracker = ExecutionTracker::new(db.clone());
    let case = AtomicUsize::new(0);
    check(24, (id_text(), id_text(), id_text()), |(p, q, task)| {
        // Rows of their own for each case: the counter makes every id new.
        let n = case.fetch_add(1, Ordering::Relaxed);
        let (p, q) = (format!("p{n} {p}"), format!("q{n} {q}"));
        let (task, other_task) = (format!("t{n} {task}"), format!("u{n} {task}"));
        let (project, other) = (ProjectId::from(p.as_str()), ProjectId::from(q.as_str()));
        let task_id = TaskId::from(task.as_str());
        let other_task_id = TaskId::from(other_task.as_str());
        let (stored_project, stored_task): (ProjectId, TaskId) = (stored(&p), stored(&task));

        // State store.
        for (project, task) in [(&project, &task_id), (&other, &other_task_id)] {
            let context = StateContext::new(project.clone(), task.clone(), "typed");
            let mut m = StateMachine::new(context);
            m.apply(Event::Start, None).unwrap();
            states.save_state(m.persisted()).unwrap();
        }
        let summaries = states.summaries(Some(&project), None).unwrap();
        prop_assert_eq!(summaries.len(), 1);
        prop_assert_eq!(&summaries[0].project_id, &stored_project);
        prop_assert_eq!(&summaries[0].task_id, &stored_task);
        let resumable = states.resumable(Some(&project)).unwrap();
        prop_assert_eq!(resumable.iter().map(|r| &r.task_id).collect::<Vec<_>>(), [&stored_task]);
        let loaded = states.load_state(&task_id).unwrap().unwrap();
        prop_assert_eq!((&loaded.project_id, &loaded.task_id), (&stored_project, &stored_task));

        // Configuration: a project's scope.
        let scope = Scope::Project(project.clone());
        config.set("typed-ids", &scope, &json!(n)).unwrap();
        let entry = config.get("typed-ids", Some(&project)).unwrap().unwrap();
        prop_assert_eq!(&entry.value, &json!(n));
        prop_assert_eq!(entry.scope, Scope::parse(&redact_text(&scope.as_stored())).unwrap());
        prop_assert!(config.get("typed-ids", Some(&other)).unwrap().is_none());

        // Audit log: two entries of the project's task, one of the other's.
        let entry = |project: &ProjectId, task: &TaskId| AuditEntry {
            project_id: Some(project.clone()),
            task_id: Some(task.clone()),
            ..AuditEntry::new("typed", Category::State)
        };
        let own = entry(&project, &task_id);
        audit.log_batch(&[own.clone(), own, entry(&other, &other_task_id)]).unwrap();
        let by_project = AuditQuery { project_id: Some(project.clone()), ..AuditQuery::default() };
        let records = audit.query(&by_project).unwrap();
        prop_assert_eq!(records.len(), 2);
        for r in &records {
            prop_assert_eq!(r.project_id.as_ref(), Some(&stored_project));
            prop_assert_eq!(r.task_id.as_ref(), Some(&stored_task));
            let json = aigentflow::serde_json::to_value(r).unwrap();
            prop_assert_eq!(&json["project_id"], &Value::from(stored_project.as_str()));
            prop_assert_eq!(&json["task_id"], &Value::from(stored_task.as_str()));
        }
        let by_task = AuditQuery { task_id: Some(other_task_id.clone()), ..AuditQuery::default() };
        let records = audit.query(&by_task).unwrap();
        prop_assert_eq!(records.len(), 1);
        prop_assert_eq!(records[0].project_id.as_ref(), Some(&stored::<ProjectId>(&q)));
        prop_assert_eq!(audit.count(&by_project).unwrap(), 2);
        let summary = audit.summary(&project).unwrap();
        prop_assert_eq!((summary.len(), summary[0].count), (1, 2));
        let mut exported = Vec::new();
        let options =
            ExportOptions { query: by_project.clone(), ..ExportOptions::new(ExportFormat::Jsonl) };
        audit.export(&mut exported, &options, |_| {}).unwrap();
        for line in String::from_utf8(exported).unwrap().lines() {
            let row: Value = aigentflow::serde_json::from_str(line).unwrap();
            prop_assert_eq!(&row["project_id"], &Value::from(stored_project.as_str()));
        }

        // Lessons: the project's, the other project's and a global one, tagged with the case.
        let tag = format!("case-{n}");
        let lesson = |project: Option<&ProjectId>| NewLesson {
            project_id: project.cloned(),
            tags: vec![tag.clone()],
            ..NewLesson::new(LessonCategory::Pattern, "typed ids", "read back typed")
        };
        let own = lessons.create(&lesson(Some(&project))).unwrap();
        lessons.create(&lesson(Some(&other))).unwrap();
        let global = lessons.create(&lesson(None)).unwrap();
        let got = lessons.get(&own.id).unwrap().unwrap();
        prop_assert_eq!(got.project_id.as_ref(), Some(&stored_project));
        let json = aigentflow::serde_json::to_value(&got).unwrap();
        prop_assert_eq!(&json["project_id"], &Value::from(stored_project.as_str()));
        prop_assert_eq!(&json["id"], &Value::from(own.id.as_str()));
        for query in [None, Some("typed")] {
            let search = SearchOptions {
                query: query.map(String::from),
                project_id: Some(project.clone()),
                tags: vec![tag.clone()],
                ..SearchOptions::default()
            };
            let mut found: Vec<(LessonId, Option<ProjectId>)> = lessons
                .search(&search)
                .unwrap()
                .into_iter()
                .map(|h| (h.lesson.id, h.lesson.project_id))
                .collect();
            found.sort();
            let mut want =
                vec![(own.id.clone(), Some(stored_project.clone())), (global.id.clone(), None)];
            want.sort();
            prop_assert_eq!(found, want, "{:?}", query);
        }

        // Tracker: a trace per project, an invocation recorded, updated and listed.
        let trace = tracker.start_trace(&project, &task_id, "typed").unwrap();
        tracker.start_trace(&other, &other_task_id, "typed").unwrap();
        prop_assert_eq!((&trace.project_id, &trace.task_id), (&stored_project, &stored_task));
        let recent = tracker.recent_traces(Some(&project), 10).unwrap();
        prop_assert_eq!(recent.iter().map(|t| &t.id).collect::<Vec<_>>(), [&trace.id]);
        let again = tracker.get_trace(&trace.id).unwrap().unwrap();
        prop_assert_eq!((&again.project_id, &again.task_id), (&stored_project, &stored_task));
        let json = aigentflow::serde_json::to_value(&again).unwrap();
        prop_assert_eq!(&json["project_id"], &Value::from(stored_project.as_str()));
        prop_assert_eq!(&json["task_id"], &Value::from(stored_task.as_str()));
        let started: aigentflow::chrono::DateTime<aigentflow::chrono::Utc> = SystemClock.now();
        let invocation: InvocationId = tracker
            .record_invocation(&NewInvocation::new(trace.id.clone(), "coder", started))
            .unwrap();
        let update =
            InvocationUpdate { outcome: Some(Outcome::Success), ..InvocationUpdate::default() };
        let updated = tracker.update_invocation(invocation, &update).unwrap();
        prop_assert_eq!((updated.id, &updated.trace_id), (invocation, &trace.id));
        let listed = tracker.invocations(&trace.id).unwrap();
        prop_assert_eq!(listed.iter().map(|i| i.id).collect::<Vec<_>>(), [invocation]);
        let json = aigentflow::serde_json::to_value(&listed[0]).unwrap();
        prop_assert_eq!(&json["id"], &Value::from(invocation.get()));
        prop_assert_eq!(&json["trace_id"], &Value::from(trace.id.as_str()));
        let done = tracker.complete_trace(&trace.id, true, None, None).unwrap();
        prop_assert_eq!((done.id, done.status), (trace.id.clone(), TraceStatus::Completed));
        let unknown: TraceId = "no-such-trace".into();
        prop_assert!(tracker.get_trace(&unknown).unwrap().is_none());
        Ok(())
    });
}
}

/// The scenario above reaches every store through the façade: no `use` of this module names a
/// crate of the layer (or chrono, or serde_json) but through `aigentflow::`.
#[test]
fn this_module_reaches_the_stores_through_the_facade_alone() {
    let source = include_str!("ids.rs");
    let underscore_crate = concat!("aigentflow", "_");
    assert!(!source.contains(underscore_crate), "a workspace crate named directly");
    for line in source.lines().map(str::trim_start).filter(|l| l.starts_with("use ")) {
        let root = line["use ".len()..].split("::").next().unwrap_or_default();
        assert!(
            ["aigentflow", "std", "proptest", "crate"].contains(&root),
            "not through the façade: {line}"
        );
    }
}
