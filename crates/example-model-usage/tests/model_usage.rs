//! The example extension, run on both backends: its set migrates, one write stores the
//! transition, the audit entry and its own row, and reading gives back what went in.
#![allow(clippy::unwrap_used)]

use aigentflow::audit::{AuditLog, AuditQuery};
use aigentflow::persistence::{Database, SqliteStateStore};
use aigentflow::serde_json::json;
use aigentflow::states::{Event, StateStore, WorkflowState};
use aigentflow::TaskId;
use aigentflow_example_model_usage::{open, Call, ModelUsage, SET};
use aigentflow_testkit::{on_both, EmptyDb};
use sha2::{Digest, Sha256};

fn call<'a>(request_id: &'a str, note: Option<&'a str>) -> Call<'a> {
    Call {
        request_id,
        model: "claude-sonnet",
        prompt: "summarise the design",
        input_tokens: 1200,
        output_tokens: 300,
        cost_usd: 0.0081,
        details: json!({ "stop_reason": "end_turn", "api_key": "sk-live-0123456789abcdef" }),
        note,
    }
}

/// The task's audit actions, newest first.
fn audit_actions(db: &Database, task: &TaskId) -> Vec<String> {
    let query = AuditQuery { task_id: Some(task.clone()), ..AuditQuery::default() };
    AuditLog::new(db.clone()).query(&query).unwrap().into_iter().map(|r| r.action).collect()
}

on_both! {
/// The extension's set migrates at open (listed beside the core); a step writes the task's
/// transition, its audit entry and the usage row in one transaction, read back field by field
/// (the request id kept as given, the note and the details redacted); a step whose row the
/// table refuses leaves the task, the audit log and the table as they were.
fn the_extension_writes_its_row_with_the_transition_and_the_audit_entry(t: EmptyDb) {
    let db = open(t.location()).unwrap();
    let sets = db.migration_sets().unwrap();
    assert_eq!(sets.last().map(|s| (s.name.as_str(), s.version)), Some((SET, 2)));
    let usage = ModelUsage::new(db.clone());
    let task = TaskId::new("task-1");
    assert_eq!(usage.start_task("p", task.as_str(), "prompt").unwrap(), WorkflowState::Analyzing);
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let request_id = format!("req-{key}");
    let note = format!("billed to {key}");
    let state = usage.record_step(&task, Event::AnalysisComplete, &call(&request_id, Some(&note))).unwrap();
    assert_eq!(state, WorkflowState::Orchestrating);
    let rows = usage.usage_of(&task).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.request_id, request_id, "opted out of redaction by name: kept as given");
    assert_eq!((row.model.as_str(), row.input_tokens, row.output_tokens), ("claude-sonnet", 1200, 300));
    assert_eq!(row.cost_usd, 0.0081);
    assert_eq!(row.prompt_sha256, Sha256::digest(b"summarise the design").to_vec());
    assert!(!row.note.as_deref().unwrap().contains(&key), "{row:?}");
    assert_eq!(row.details["stop_reason"], "end_turn");
    assert!(!row.details.to_string().contains("sk-live"), "{row:?}");
    assert!((db.now() - row.recorded_at).num_seconds().abs() < 3600, "{row:?}");
    assert_eq!(audit_actions(&db, &task), ["model_call", "task_started"]);
    // A row the table refuses (negative tokens; then a request id seen before): nothing of the
    // step is written.
    let states = SqliteStateStore::new(db.clone());
    let stored = states.load_state(&task).unwrap().unwrap();
    for bad in [
        Call { input_tokens: -1, ..call("req-2", None) },
        call(&request_id, None),
    ] {
        usage.record_step(&task, Event::Error, &bad).unwrap_err();
        assert_eq!(states.load_state(&task).unwrap().unwrap(), stored);
        assert_eq!(audit_actions(&db, &task), ["model_call", "task_started"]);
        assert_eq!(usage.usage_of(&task).unwrap().len(), 1);
    }
    // A restart finds it all, and opening again applies nothing.
    drop(db);
    let again = open(t.location()).unwrap();
    assert_eq!(ModelUsage::new(again.clone()).usage_of(&task).unwrap(), rows);
    assert_eq!(again.migration_sets().unwrap(), sets);
}
}

on_both! {
/// The example's program runs on a database named on its command line, twice (the second run
/// applies nothing and adds a second task), and says what it wrote.
fn the_example_program_runs_on_either_backend(t: EmptyDb) {
    for run in 1..=2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aigentflow-example-model-usage"))
            .arg(t.location())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "run {run}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("is now ORCHESTRATING"), "{stdout}");
        assert!(stdout.contains("migration set model_usage at version 2"), "{stdout}");
    }
    let db = Database::open(t.location()).unwrap();
    let per_state = SqliteStateStore::new(db).count_by_state().unwrap();
    assert_eq!(per_state, [(WorkflowState::Orchestrating, 2)]);
}
}
