//! Step 04 "ExecutionTracker" twins, plus metrics windows, legacy rows (R4), crash recovery
//! with a real child killed by SIGKILL (R14), and writers killed mid-flight (R1).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use aigentflow::audit::AuditLog;
use aigentflow::persistence::{Database, ManualClock, Options, SqliteStateStore};
use aigentflow::states::{StateStore, TaskId};
use aigentflow::tracker::owner::{probe, Probe};
use aigentflow::tracker::{
    Error, ExecutionTracker, InvocationUpdate, NewInvocation, Outcome, RecoveryOptions, TokenUsage,
    TraceId, TraceStatus,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

use crate::support::*;

fn tracker() -> ExecutionTracker {
    ExecutionTracker::new(Database::open_in_memory().unwrap())
}

fn clocked(now: DateTime<Utc>) -> (ExecutionTracker, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now, Duration::zero()));
    let db = Database::open_in_memory_with(Options { clock: clock.clone(), ..Options::default() })
        .unwrap();
    (ExecutionTracker::new(db), clock)
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

// ---- the seed's ExecutionTracker scenarios ------------------------------------------------

#[test]
fn execution_traces_are_recorded() {
    let (tracker, clock) = clocked(noon());
    let trace = tracker.start_trace(&"project-1".into(), &"task-1".into(), "Test prompt").unwrap();
    assert_eq!(trace.prompt, "Test prompt");
    assert_eq!(trace.status, TraceStatus::Running);
    assert_eq!(trace.owner.as_ref().unwrap().pid, std::process::id());
    clock.advance(Duration::milliseconds(1500));
    let usage = TokenUsage { input_tokens: 100, output_tokens: 200, total_tokens: 300 };
    let done = tracker.complete_trace(&trace.id, true, Some(&usage), None).unwrap();
    assert_eq!(done.duration_ms, Some(1500));
    let got = tracker.get_trace(&trace.id).unwrap().unwrap();
    assert_eq!(got.success, Some(true));
    assert_eq!(got.token_usage.unwrap().total_tokens, 300);
    assert_eq!(got.status, TraceStatus::Completed);
    assert_eq!(got.completed_at, Some(noon() + Duration::milliseconds(1500)));
    let again = tracker.complete_trace(&trace.id, false, None, None).unwrap_err();
    assert!(matches!(again, Error::WrongStatus { .. }), "{again}");
    let unknown = tracker.complete_trace(&"nope".into(), true, None, None).unwrap_err();
    assert!(matches!(unknown, Error::UnknownTrace { .. }), "{unknown}");
    assert_eq!(tracker.get_trace(&"nope".into()).unwrap(), None);
}

#[test]
fn agent_invocations_are_recorded_updated_and_listed_in_order() {
    let tracker = tracker();
    let trace = tracker.start_trace(&"project-1".into(), &"task-1".into(), "Test").unwrap();
    let later = Utc::now();
    let earlier = later - Duration::seconds(5);
    let second = tracker
        .record_invocation(&NewInvocation {
            task_fragment: Some("Create plan".into()),
            ..NewInvocation::new(trace.id.clone(), "planner", later)
        })
        .unwrap();
    let first = tracker
        .record_invocation(&NewInvocation::new(trace.id.clone(), "architect", earlier))
        .unwrap();
    let updated = tracker
        .update_invocation(
            second,
            &InvocationUpdate {
                completed_at: Some(later + Duration::seconds(2)),
                outcome: Some(Outcome::Success),
                quality_score: Some(0.9),
                token_usage: Some(TokenUsage::new(10, 5)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(updated.outcome.as_deref(), Some("success"));
    assert_eq!(updated.token_usage.unwrap().total_tokens, 15);
    let listed = tracker.invocations(&trace.id).unwrap();
    assert_eq!(listed.iter().map(|i| i.id).collect::<Vec<_>>(), [first, second]);
    assert_eq!(listed[1].task_fragment.as_deref(), Some("Create plan"));
    assert_eq!(listed[1].quality_score, Some(0.9));

    let orphan = NewInvocation::new("no-such-trace".into(), "planner", later);
    assert!(matches!(tracker.record_invocation(&orphan), Err(Error::UnknownTrace { .. })));
    let bad = NewInvocation {
        quality_score: Some(1.2),
        ..NewInvocation::new(trace.id.clone(), "x", later)
    };
    assert!(matches!(tracker.record_invocation(&bad), Err(Error::InvalidInput { .. })));
    assert!(matches!(
        tracker.update_invocation(9999, &InvocationUpdate::default()),
        Err(Error::UnknownInvocation { id: 9999 })
    ));
    assert_eq!(tracker.invocations(&trace.id).unwrap().len(), 2, "nothing half-written");
}

#[test]
fn recent_traces_are_a_projects_newest_first() {
    let (tracker, clock) = clocked(noon());
    let a = tracker.start_trace(&"project-1".into(), &"task-1".into(), "Test 1").unwrap();
    clock.advance(Duration::seconds(1));
    let b = tracker.start_trace(&"project-1".into(), &"task-2".into(), "Test 2").unwrap();
    tracker.start_trace(&"project-2".into(), &"task-3".into(), "Test 3").unwrap();
    let recent = tracker.recent_traces(Some("project-1"), 20).unwrap();
    assert_eq!(recent.iter().map(|t| &t.id).collect::<Vec<_>>(), [&b.id, &a.id]);
    assert_eq!(tracker.recent_traces(Some("project-1"), 1).unwrap().len(), 1);
    assert_eq!(tracker.recent_traces(None, 20).unwrap().len(), 3);
}

#[test]
fn agent_metrics_are_calculated() {
    let tracker = tracker();
    let trace = tracker.start_trace(&"project-1".into(), &"task-1".into(), "Test").unwrap();
    let now = Utc::now();
    let record = |outcome, quality_score, token_usage| {
        tracker
            .record_invocation(&NewInvocation {
                outcome: Some(outcome),
                quality_score,
                token_usage,
                ..NewInvocation::new(trace.id.clone(), "builder", now)
            })
            .unwrap();
    };
    record(Outcome::Success, Some(0.9), Some(TokenUsage::new(100, 200)));
    record(Outcome::Success, Some(0.8), None);
    record(Outcome::Failure, None, Some(TokenUsage::new(50, 50)));
    let m = tracker.agent_metrics("builder", 30).unwrap();
    assert_eq!(m.total_invocations, 3);
    assert!((m.success_rate - 2.0 / 3.0).abs() < 1e-9);
    assert!((m.failure_rate - 1.0 / 3.0).abs() < 1e-9);
    assert!((m.avg_quality_score.unwrap() - 0.85).abs() < 1e-9);
    assert_eq!(m.avg_tokens_per_invocation, Some(200.0), "averaged over rows with usage");
    let none = tracker.agent_metrics("nobody", 30).unwrap();
    assert_eq!((none.total_invocations, none.success_rate), (0, 0.0));
    assert_eq!(none.avg_quality_score, None);
}

#[test]
fn a_metrics_window_includes_its_boundary_instant_and_nothing_before() {
    let (tracker, _clock) = clocked(noon());
    let trace = tracker.start_trace(&"p".into(), &"t".into(), "window").unwrap();
    let boundary = noon() - Duration::days(7);
    for (offset_ms, outcome) in
        [(-1, Outcome::Failure), (0, Outcome::Success), (1, Outcome::Partial)]
    {
        tracker
            .record_invocation(&NewInvocation {
                outcome: Some(outcome),
                ..NewInvocation::new(
                    trace.id.clone(),
                    "coder",
                    boundary + Duration::milliseconds(offset_ms),
                )
            })
            .unwrap();
    }
    let week = tracker.agent_metrics("coder", 7).unwrap();
    assert_eq!(week.since, boundary);
    assert_eq!((week.total_invocations, week.successes, week.failures), (2, 1, 0));
    assert_eq!(tracker.agent_metrics("coder", 8).unwrap().total_invocations, 3);
    assert_eq!(tracker.agent_metrics("coder", 0).unwrap().total_invocations, 0);
}

#[test]
fn legacy_traces_and_invocations_count_in_metrics_after_adoption() {
    let (_dir, path) = legacy_copy();
    // Expected figures, computed from the TypeScript version's rows before adoption.
    type Row = (String, Option<String>, Option<f64>, Option<String>);
    let rows: Vec<Row> = {
        let conn = raw(&path);
        let mut stmt = conn
            .prepare("SELECT agent, outcome, quality_score, token_usage FROM agent_invocations")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let tracker = ExecutionTracker::new(open(&path));
    let agents: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert!(agents.len() > 1);
    for agent in agents {
        let mine: Vec<_> = rows.iter().filter(|r| r.0 == agent).collect();
        let count = |o: &str| mine.iter().filter(|r| r.1.as_deref() == Some(o)).count() as f64;
        let scores: Vec<f64> = mine.iter().filter_map(|r| r.2).collect();
        let tokens: Vec<f64> = mine
            .iter()
            .filter_map(|r| r.3.as_deref())
            .map(|u| {
                serde_json::from_str::<serde_json::Value>(u).unwrap()["totalTokens"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        let m = tracker.agent_metrics(agent, 3650).unwrap();
        assert_eq!(m.total_invocations as usize, mine.len(), "{agent}");
        assert!((m.success_rate - count("success") / mine.len() as f64).abs() < 1e-9, "{agent}");
        assert!((m.failure_rate - count("failure") / mine.len() as f64).abs() < 1e-9, "{agent}");
        let avg = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-6,
            (a, b) => a == b,
        };
        assert!(close(m.avg_quality_score, avg(&scores)), "{agent}");
        assert!(close(m.avg_tokens_per_invocation, avg(&tokens)), "{agent}");
    }
    let traces = tracker.recent_traces(None, 100).unwrap();
    assert_eq!(traces.len(), 30);
    assert!(traces.iter().any(|t| t.status == TraceStatus::Running && t.owner.is_none()));
    let listed: usize = traces.iter().map(|t| tracker.invocations(&t.id).unwrap().len()).sum();
    assert_eq!(listed, rows.len(), "every legacy invocation is listed under its trace");
}

#[test]
fn trace_text_is_redacted_before_it_is_written() {
    let (_dir, path) = temp_db();
    let tracker = ExecutionTracker::new(open(&path));
    let key = "sk-ant-api03-abcdefghijklmnopqrstuvwx";
    let trace = tracker.start_trace(&"p".into(), &"t".into(), &format!("use {key}")).unwrap();
    let id = tracker
        .record_invocation(&NewInvocation {
            task_fragment: Some("password=hunter2secret".into()),
            error: Some("Authorization: Bearer abcdefghijklmnop1234".into()),
            output_summary: Some("ghp_abcdefghijklmnopqrstuvwxyz0123456789".into()),
            ..NewInvocation::new(trace.id.clone(), "coder", Utc::now())
        })
        .unwrap();
    tracker
        .update_invocation(
            id,
            &InvocationUpdate { error: Some(format!("again {key}")), ..Default::default() },
        )
        .unwrap();
    let metadata = json!({"api_key": "plain-value-123", "nested": {"note": key}});
    tracker.complete_trace(&trace.id, true, None, Some(&metadata)).unwrap();
    let bytes = file_bytes(&path);
    for secret in
        [key, "hunter2secret", "abcdefghijklmnop1234", "ghp_abcdefghij", "plain-value-123"]
    {
        assert!(!contains(&bytes, secret), "{secret} reached the file");
    }
}

// ---- R14: crash recovery -------------------------------------------------------------------

/// Starts the worker that saves TASK with a checkpoint, starts its trace and heartbeats.
fn owner_process(path: &Path, task: &str) -> (Child, TraceId) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigentflow-worker"))
        .args(["run", path.to_str().unwrap(), task])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let id = line.trim().strip_prefix("trace ").unwrap_or_else(|| panic!("worker said {line:?}"));
    (child, TraceId::new(id))
}

fn kill9(child: &mut Child) {
    let status = Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait().unwrap();
}

#[test]
fn r14_a_run_whose_owner_was_killed_is_found_marked_and_resumable_from_its_checkpoint() {
    let (_dir, path) = temp_db();
    let (mut child, id) = owner_process(&path, "task-r14");
    let tracker = ExecutionTracker::new(open(&path));
    let options = RecoveryOptions::default();

    let report = tracker.recover(&options).unwrap();
    assert!(report.crashed.is_empty(), "a live owner is never taken for dead");
    assert_eq!(report.alive, 1);

    kill9(&mut child);
    let report = tracker.recover(&options).unwrap();
    assert_eq!(report.crashed.len(), 1);
    let run = &report.crashed[0];
    assert_eq!(run.trace.id, id);
    assert_eq!((run.trace.status, run.trace.recovery_attempts), (TraceStatus::Crashed, 1));
    assert!(run.reason.contains("is gone"), "{}", run.reason);
    let stored =
        SqliteStateStore::new(open(&path)).load_state(&TaskId::new("task-r14")).unwrap().unwrap();
    let task = run.task.as_ref().expect("the task is found");
    assert_eq!(task.state, stored.state);
    assert_eq!(task.latest_checkpoint.as_ref(), stored.context.checkpoints.last());
    assert!(task.latest_checkpoint.is_some());

    // Still offered until someone resumes it; resuming is a claim only one caller wins.
    assert_eq!(tracker.recover(&options).unwrap().crashed.len(), 1);
    let resumed = tracker.resume(&id).unwrap();
    assert_eq!(resumed.status, TraceStatus::Running);
    assert_eq!(resumed.owner.unwrap().pid, std::process::id());
    assert!(matches!(tracker.resume(&id), Err(Error::WrongStatus { .. })));
    tracker.heartbeat(&id).unwrap();
    let report = tracker.recover(&options).unwrap();
    assert!(report.crashed.is_empty());
    assert_eq!(report.alive, 1);
}

#[test]
fn live_owners_are_never_taken_for_dead_and_reused_pids_are_told_apart() {
    let (_dir, path) = temp_db();
    let tracker = ExecutionTracker::new(open(&path));
    let conn = raw(&path);
    let start = |task: &str| tracker.start_trace(&"p".into(), &task.into(), "x").unwrap().id;
    let mine = start("mine");
    // pid 1 runs for as long as the machine does; record its real start time.
    let init = start("init");
    let Probe::Running { started_at, .. } = probe(1) else { panic!("pid 1 is not running") };
    conn.execute(
        "UPDATE execution_traces SET owner_pid = 1, owner_started_at = ?1 WHERE id = ?2",
        rusqlite::params![started_at.map(aigentflow::states::time::to_db), init.as_str()],
    )
    .unwrap();
    // This test's own pid, but recorded as started an hour earlier: a reused pid.
    let reused = start("reused");
    let earlier = Utc::now() - Duration::hours(1);
    conn.execute(
        "UPDATE execution_traces SET owner_started_at = ?1 WHERE id = ?2",
        rusqlite::params![aigentflow::states::time::to_db(earlier), reused.as_str()],
    )
    .unwrap();
    let report = tracker.recover(&RecoveryOptions::default()).unwrap();
    let crashed: Vec<_> = report.crashed.iter().map(|r| r.trace.id.clone()).collect();
    assert_eq!(crashed, [reused]);
    assert_eq!(report.alive, 2);
    let alive = [mine, init];
    for id in &alive {
        assert_eq!(tracker.get_trace(id).unwrap().unwrap().status, TraceStatus::Running);
    }
}

#[test]
fn owners_this_host_cannot_probe_are_judged_by_heartbeat_and_the_cap_abandons_one_run_only() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(noon(), Duration::zero()));
    let db =
        Database::open_with(&path, Options { clock: clock.clone(), ..Options::default() }).unwrap();
    let tracker = ExecutionTracker::new(db);
    let conn = raw(&path);
    let start = |task: &str| tracker.start_trace(&"p".into(), &task.into(), "x").unwrap().id;
    let elsewhere = start("elsewhere");
    let unowned = start("unowned");
    let poisoned = start("poisoned");
    let corrupt = start("corrupt");
    conn.execute_batch(&format!(
        "UPDATE execution_traces SET owner_host = 'another-host' WHERE id = '{elsewhere}';
         UPDATE execution_traces SET owner_pid = NULL, owner_host = NULL WHERE id = '{unowned}';
         UPDATE execution_traces SET owner_pid = 2147483646, recovery_attempts = 3 WHERE id = '{poisoned}';
         UPDATE execution_traces SET owner_pid = 2147483646 WHERE id = '{corrupt}';
         INSERT INTO workflow_states (task_id, project_id, state, context) VALUES ('corrupt', 'p', 'BUILDING', '{{}}');
         INSERT INTO checkpoints (id, task_id, state, context, artifacts, seq)
             VALUES ('cp-1', 'corrupt', 'BUILDING', '{{not json', '[]', 1);"
    ))
    .unwrap();
    let options = RecoveryOptions { lease: Duration::minutes(5), max_attempts: 3 };
    clock.advance(Duration::minutes(4));
    let report = tracker.recover(&options).unwrap();
    assert_eq!(report.abandoned.iter().map(|t| &t.id).collect::<Vec<_>>(), [&poisoned]);
    let crashed: Vec<_> = report.crashed.iter().map(|r| r.trace.id.clone()).collect();
    assert_eq!(
        crashed,
        std::slice::from_ref(&corrupt),
        "the cap gives up on one run, the rest go on"
    );
    assert!(report.crashed[0].task.is_none());
    let problem = report.crashed[0].problem.as_deref().unwrap_or("");
    assert!(problem.contains("checkpoints.context"), "{problem}");
    assert_eq!(report.alive, 2, "heartbeats younger than the lease");
    assert_eq!(tracker.get_trace(&poisoned).unwrap().unwrap().status, TraceStatus::Abandoned);

    // The other host keeps beating; the unowned run does not.
    tracker.heartbeat(&elsewhere).unwrap();
    clock.advance(Duration::minutes(2));
    let report = tracker.recover(&options).unwrap();
    let crashed: std::collections::BTreeSet<_> =
        report.crashed.iter().map(|r| r.trace.id.clone()).collect();
    assert_eq!(crashed, [unowned.clone(), corrupt].into());
    let run = report.crashed.iter().find(|r| r.trace.id == unowned).unwrap();
    assert!(run.reason.contains("unknown owner"), "{}", run.reason);
    let beat = tracker.heartbeat(&unowned).unwrap_err();
    assert!(matches!(beat, Error::WrongStatus { .. }), "a crashed run's owner learns it: {beat}");
}

#[test]
fn the_legacy_runs_left_unfinished_are_recovered_by_lease() {
    let (_dir, path) = legacy_copy();
    let tracker = ExecutionTracker::new(open(&path));
    let running = tracker
        .recent_traces(None, 100)
        .unwrap()
        .into_iter()
        .filter(|t| t.status == TraceStatus::Running)
        .count();
    assert!(running >= 1);
    let report = tracker.recover(&RecoveryOptions::default()).unwrap();
    assert_eq!(report.crashed.len(), running);
    assert!(report.crashed.iter().all(|r| r.problem.is_none()));
}

// ---- R1: writers killed mid-flight ---------------------------------------------------------

#[test]
fn r1_writers_killed_at_random_points_lose_no_acknowledged_commit() {
    let (_dir, path) = temp_db();
    let rounds: usize =
        std::env::var("AIGENTFLOW_R1_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let mut acked_total = 0;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aigentflow-worker"))
            .args(["crash", path.to_str().unwrap(), "task-r1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let stop_after = 5 + (seed % 60) as usize;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..stop_after {
            let line = lines.next().unwrap().unwrap();
            acked_total = line.strip_prefix("acked ").unwrap().parse().unwrap();
        }
        kill9(&mut child);

        let conn = raw(&path);
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "round {round}");
        let db = open(&path);
        let state =
            SqliteStateStore::new(db.clone()).load_state(&TaskId::new("task-r1")).unwrap().unwrap();
        assert!(
            state.history.len() >= acked_total,
            "round {round}: an acknowledged commit was lost"
        );
        assert_eq!(Some(&state.state), state.folded_state(), "round {round}");
        let audit = AuditLog::new(db);
        let verification = audit.verify(None).unwrap();
        assert_eq!(verification.finding, None, "round {round}");
        assert_eq!(
            verification.rows as usize,
            state.history.len(),
            "one audit entry per transition"
        );
    }
}
