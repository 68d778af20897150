//! Step 04 "ExecutionTracker" twins, plus metrics windows, legacy rows (R4), crash recovery
//! with a real child killed by SIGKILL (R14), recoveries racing, and writers killed mid-flight
//! (R1). Scenarios run on SQLite and on PostgreSQL (`on_both!`) unless named for one backend.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;

use aigentflow::audit::AuditLog;
use aigentflow::persistence::{Backend, Database, ManualClock, Options, SqliteStateStore};
use aigentflow::states::{time, StateStore, TaskId};
use aigentflow::tracker::owner::{probe, Probe};
use aigentflow::tracker::{
    AgentMetrics, Error, ExecutionTracker, InvocationId, InvocationUpdate, NewInvocation, Outcome,
    RecoveryOptions, TokenUsage, TraceId, TraceStatus,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::json;

use crate::inspect::Driver;
use crate::support::*;

/// A tracker on `t`'s database whose clock stands at `now` until moved.
fn clocked(t: &TestDb, now: DateTime<Utc>) -> (ExecutionTracker, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now, Duration::zero()));
    (ExecutionTracker::new(open_clocked(t, &clock)), clock)
}

fn open_clocked(t: &TestDb, clock: &Arc<ManualClock>) -> Database {
    Database::open_with(t.location(), Options { clock: clock.clone(), ..Options::default() })
        .unwrap()
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

/// Runs `sql` on `t`'s database around the stores, as an operator (or attacker) with access to
/// the database could: a SQLite connection to the file, or a PostgreSQL session.
fn tamper(t: &TestDb, sql: &str) {
    match t.backend() {
        Backend::Postgres => {
            let mut client = postgres::Client::connect(t.location(), postgres::NoTls).unwrap();
            client.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)));
        }
        _ => raw(Path::new(t.location())).execute_batch(sql).unwrap(),
    }
}

/// Everything the database holds of the tracker's tables, as bytes: the SQLite file with its
/// WAL, or every row of the two tables as PostgreSQL prints them.
fn stored_bytes(t: &TestDb) -> Vec<u8> {
    match t.backend() {
        Backend::Postgres => {
            let mut client = postgres::Client::connect(t.location(), postgres::NoTls).unwrap();
            let rows = client
                .query(
                    "SELECT r::text FROM execution_traces r
                     UNION ALL SELECT r::text FROM agent_invocations r",
                    &[],
                )
                .unwrap();
            rows.iter().flat_map(|r| r.get::<_, String>(0).into_bytes()).collect()
        }
        _ => file_bytes(Path::new(t.location())),
    }
}

/// Moves a trace's last heartbeat `by` into the past, as time passing without one would.
fn age(t: &TestDb, tracker: &ExecutionTracker, id: &TraceId, by: Duration) {
    let beat = tracker.get_trace(id).unwrap().unwrap().heartbeat_at.unwrap();
    let aged = time::to_db(beat - by);
    tamper(t, &format!("UPDATE execution_traces SET heartbeat_at = '{aged}' WHERE id = '{id}'"));
}

// ---- the seed's ExecutionTracker scenarios ------------------------------------------------

on_both! {
fn execution_traces_are_recorded(t) {
    let (tracker, clock) = clocked(t, noon());
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
}

on_both! {
fn agent_invocations_are_recorded_updated_and_listed_in_order(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
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
        tracker.update_invocation(InvocationId::new(9999), &InvocationUpdate::default()),
        Err(Error::UnknownInvocation { id }) if id == InvocationId::new(9999)
    ));
    assert_eq!(tracker.invocations(&trace.id).unwrap().len(), 2, "nothing half-written");
}
}

on_both! {
fn recent_traces_are_a_projects_newest_first(t) {
    let (tracker, clock) = clocked(t, noon());
    let a = tracker.start_trace(&"project-1".into(), &"task-1".into(), "Test 1").unwrap();
    clock.advance(Duration::seconds(1));
    let b = tracker.start_trace(&"project-1".into(), &"task-2".into(), "Test 2").unwrap();
    tracker.start_trace(&"project-2".into(), &"task-3".into(), "Test 3").unwrap();
    let recent = tracker.recent_traces(Some(&"project-1".into()), 20).unwrap();
    assert_eq!(recent.iter().map(|t| &t.id).collect::<Vec<_>>(), [&b.id, &a.id]);
    assert_eq!(tracker.recent_traces(Some(&"project-1".into()), 1).unwrap().len(), 1);
    assert_eq!(tracker.recent_traces(None, 20).unwrap().len(), 3);
}
}

on_both! {
fn agent_metrics_are_calculated(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
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
}

on_both! {
fn a_metrics_window_includes_its_boundary_instant_and_nothing_before(t) {
    let (tracker, _clock) = clocked(t, noon());
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
}

/// One invocation of the metrics property: how long before noon it started, its outcome, score
/// and token usage (input, output).
type Sample = (i64, Option<Outcome>, Option<f64>, Option<(u32, u32)>);

const DAY_MS: i64 = 86_400_000;

fn sample() -> impl Strategy<Value = Sample> {
    (
        prop_oneof![
            -45 * DAY_MS..DAY_MS,
            // On a window's first instant, or a millisecond either side of it.
            (0..45i64, -1..=1i64).prop_map(|(days, ms)| -days * DAY_MS + ms),
        ],
        proptest::option::of(proptest::sample::select(Outcome::ALL.to_vec())),
        proptest::option::of(prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64]),
        proptest::option::of((any::<u32>(), any::<u32>())),
    )
}

/// What `agent_metrics` must say of `samples` over `days` days before noon: the counts and
/// rates, the token average (exact integer sum over the count, as both backends compute it),
/// and the scores in the window.
fn expected_metrics(samples: &[Sample], days: u32) -> (AgentMetrics, Vec<f64>) {
    let since = noon() - Duration::days(i64::from(days));
    let inside: Vec<&Sample> =
        samples.iter().filter(|s| noon() + Duration::milliseconds(s.0) >= since).collect();
    let total = inside.len() as u64;
    let count = |o: Outcome| inside.iter().filter(|s| s.1 == Some(o)).count() as u64;
    let (successes, failures) = (count(Outcome::Success), count(Outcome::Failure));
    let rate = |n: u64| if total > 0 { n as f64 / total as f64 } else { 0.0 };
    let tokens: Vec<u64> =
        inside.iter().filter_map(|s| s.3).map(|(i, o)| u64::from(i) + u64::from(o)).collect();
    let scores: Vec<f64> = inside.iter().filter_map(|s| s.2).collect();
    let metrics = AgentMetrics {
        agent: String::new(),
        since,
        total_invocations: total,
        successes,
        failures,
        success_rate: rate(successes),
        failure_rate: rate(failures),
        avg_quality_score: None,
        avg_tokens_per_invocation: (!tokens.is_empty())
            .then(|| tokens.iter().sum::<u64>() as f64 / tokens.len() as f64),
    };
    (metrics, scores)
}

/// Records `samples` as invocations of `agent` in one transaction.
fn record_samples(
    db: &Database,
    tracker: &ExecutionTracker,
    trace: &TraceId,
    agent: &str,
    samples: &[Sample],
) {
    db.write(|tx| {
        for s in samples {
            let new = NewInvocation {
                outcome: s.1,
                quality_score: s.2,
                token_usage: s
                    .3
                    .map(|(input, output)| TokenUsage::new(input.into(), output.into())),
                ..NewInvocation::new(trace.clone(), agent, noon() + Duration::milliseconds(s.0))
            };
            tracker.record_invocation_in(tx, &new)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Over random invocations and windows, PostgreSQL's metrics equal SQLite's: counts, rates and
/// the token average to the bit; the score average to within the rounding of its sum (SQLite
/// compensates its floating-point sum, PostgreSQL adds in order), and both within that of the
/// scores' mean.
#[test]
fn postgres_agent_metrics_equal_sqlites_over_random_invocations() {
    let Some(pg) = TestDb::postgres() else { return };
    let sqlite = TestDb::sqlite();
    let clock = Arc::new(ManualClock::new(noon(), Duration::zero()));
    let dbs = [&sqlite, &pg].map(|t| open_clocked(t, &clock));
    let trackers = dbs.each_ref().map(|db| ExecutionTracker::new(db.clone()));
    let traces = trackers
        .each_ref()
        .map(|tr| tr.start_trace(&"p".into(), &"metrics".into(), "x").unwrap().id);
    let case = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(64));
    let days = prop_oneof![Just(0u32), Just(1), Just(7), Just(30), 0u32..46];
    let outcome =
        runner.run(&(proptest::collection::vec(sample(), 0..40), days), |(samples, days)| {
            case.set(case.get() + 1);
            let agent = format!("agent-{}", case.get());
            let got = [0, 1].map(|i| {
                record_samples(&dbs[i], &trackers[i], &traces[i], &agent, &samples);
                trackers[i].agent_metrics(&agent, days).unwrap()
            });
            let [on_sqlite, on_pg] = got;
            let (expected, scores) = expected_metrics(&samples, days);
            let within = (scores.len() as f64 + 1.0) * f64::EPSILON;
            let mean =
                (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= within,
                (a, b) => a == b,
            };
            prop_assert!(
                close(on_sqlite.avg_quality_score, on_pg.avg_quality_score),
                "{on_sqlite:?} {on_pg:?}"
            );
            prop_assert!(close(on_sqlite.avg_quality_score, mean), "{on_sqlite:?} {mean:?}");
            let bare = |m: &AgentMetrics| AgentMetrics {
                agent: String::new(),
                avg_quality_score: None,
                ..m.clone()
            };
            prop_assert_eq!(bare(&on_pg), bare(&on_sqlite));
            prop_assert_eq!(bare(&on_sqlite), expected);
            Ok(())
        });
    outcome.unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn legacy_traces_and_invocations_count_in_metrics_after_adoption_on_sqlite() {
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

on_both! {
fn trace_text_is_redacted_before_it_is_written(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
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
    let bytes = stored_bytes(t);
    assert!(contains(&bytes, "[REDACTED]"), "the rows were read");
    for secret in
        [key, "hunter2secret", "abcdefghijklmnop1234", "ghp_abcdefghij", "plain-value-123"]
    {
        assert!(!contains(&bytes, secret), "{secret} reached the database");
    }
}
}

// ---- R14: crash recovery -------------------------------------------------------------------

/// Starts the worker that saves TASK with a checkpoint, starts its trace and heartbeats.
fn owner_process(db: &str, task: &str) -> (Child, TraceId) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigentflow-worker"))
        .args(["run", db, task])
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

on_both! {
fn r14_a_run_whose_owner_was_killed_is_found_marked_and_resumable_from_its_checkpoint(t) {
    let (mut child, id) = owner_process(t.location(), "task-r14");
    let tracker = ExecutionTracker::new(t.db().clone());
    let options = RecoveryOptions::default();

    let report = tracker.recover(&options).unwrap();
    assert!(report.crashed.is_empty(), "a live owner is never taken for dead");
    // On PostgreSQL the owner's heartbeat may hold the row at that moment: the pass skips it
    // and says so.
    assert_eq!(report.alive + report.skipped, 1, "{report:?}");

    kill9(&mut child);
    let report = tracker.recover(&options).unwrap();
    assert_eq!(report.crashed.len(), 1);
    let run = &report.crashed[0];
    assert_eq!(run.trace.id, id);
    assert_eq!((run.trace.status, run.trace.recovery_attempts), (TraceStatus::Crashed, 1));
    assert!(run.reason.contains("is gone"), "{}", run.reason);
    let stored =
        SqliteStateStore::new(t.reopen()).load_state(&TaskId::new("task-r14")).unwrap().unwrap();
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
}

on_both! {
fn live_owners_are_never_taken_for_dead_and_reused_pids_are_told_apart(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
    let start = |task: &str| tracker.start_trace(&"p".into(), &task.into(), "x").unwrap().id;
    let mine = start("mine");
    // pid 1 runs for as long as the machine does; record its real start time.
    let init = start("init");
    let Probe::Running { started_at, .. } = probe(1) else { panic!("pid 1 is not running") };
    let init_started = started_at.map_or("NULL".into(), |s| format!("'{}'", time::to_db(s)));
    // This test's own pid, but recorded as started an hour earlier: a reused pid.
    let reused = start("reused");
    let earlier = time::to_db(Utc::now() - Duration::hours(1));
    tamper(t, &format!(
        "UPDATE execution_traces SET owner_pid = 1, owner_started_at = {init_started}
             WHERE id = '{init}';
         UPDATE execution_traces SET owner_started_at = '{earlier}' WHERE id = '{reused}';"
    ));
    let report = tracker.recover(&RecoveryOptions::default()).unwrap();
    let crashed: Vec<_> = report.crashed.iter().map(|r| r.trace.id.clone()).collect();
    assert_eq!(crashed, [reused]);
    assert_eq!(report.alive, 2);
    let alive = [mine, init];
    for id in &alive {
        assert_eq!(tracker.get_trace(id).unwrap().unwrap().status, TraceStatus::Running);
    }
}
}

on_both! {
fn owners_this_host_cannot_probe_are_judged_by_heartbeat_and_the_cap_abandons_one_run_only(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
    let start = |task: &str| tracker.start_trace(&"p".into(), &task.into(), "x").unwrap().id;
    let elsewhere = start("elsewhere");
    let unowned = start("unowned");
    let poisoned = start("poisoned");
    let corrupt = start("corrupt");
    tamper(t, &format!(
        "UPDATE execution_traces SET owner_host = 'another-host' WHERE id = '{elsewhere}';
         UPDATE execution_traces SET owner_pid = NULL, owner_host = NULL WHERE id = '{unowned}';
         UPDATE execution_traces SET owner_pid = 2147483646, recovery_attempts = 3
             WHERE id = '{poisoned}';
         UPDATE execution_traces SET owner_pid = 2147483646 WHERE id = '{corrupt}';
         INSERT INTO workflow_states (task_id, project_id, state, context)
             VALUES ('corrupt', 'p', 'BUILDING', '{{}}');
         INSERT INTO checkpoints (id, task_id, state, context, artifacts, seq)
             VALUES ('cp-1', 'corrupt', 'BUILDING', '{{not json', '[]', 1);"
    ));
    let options = RecoveryOptions { lease: Duration::minutes(5), max_attempts: 3 };
    // Four minutes pass without a heartbeat.
    for id in [&elsewhere, &unowned, &poisoned, &corrupt] {
        age(t, &tracker, id, Duration::minutes(4));
    }
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

    // The other host keeps beating; the unowned run does not. Two more minutes pass.
    tracker.heartbeat(&elsewhere).unwrap();
    for id in [&elsewhere, &unowned] {
        age(t, &tracker, id, Duration::minutes(2));
    }
    let report = tracker.recover(&options).unwrap();
    let crashed: std::collections::BTreeSet<_> =
        report.crashed.iter().map(|r| r.trace.id.clone()).collect();
    assert_eq!(crashed, [unowned.clone(), corrupt].into());
    let run = report.crashed.iter().find(|r| r.trace.id == unowned).unwrap();
    assert!(run.reason.contains("unknown owner"), "{}", run.reason);
    let beat = tracker.heartbeat(&unowned).unwrap_err();
    assert!(matches!(beat, Error::WrongStatus { .. }), "a crashed run's owner learns it: {beat}");
}
}

/// On SQLite, heartbeats record and leases follow the database's clock, which may be injected.
#[test]
fn leases_follow_the_injected_clock_on_sqlite() {
    let t = TestDb::sqlite();
    let (tracker, clock) = clocked(&t, noon());
    let id = tracker.start_trace(&"p".into(), &"elsewhere".into(), "x").unwrap().id;
    tamper(
        &t,
        &format!("UPDATE execution_traces SET owner_host = 'another-host' WHERE id = '{id}'"),
    );
    let options = RecoveryOptions { lease: Duration::minutes(5), max_attempts: 3 };
    clock.advance(Duration::minutes(4));
    tracker.heartbeat(&id).unwrap();
    let beat = tracker.get_trace(&id).unwrap().unwrap().heartbeat_at;
    assert_eq!(beat, Some(noon() + Duration::minutes(4)));
    clock.advance(Duration::minutes(5));
    assert_eq!(tracker.recover(&options).unwrap().alive, 1, "exactly the lease is not past it");
    clock.advance(Duration::milliseconds(1));
    let report = tracker.recover(&options).unwrap();
    assert_eq!(report.crashed.iter().map(|r| &r.trace.id).collect::<Vec<_>>(), [&id]);
}

/// On PostgreSQL, heartbeats record and leases follow the server's clock, never the caller's:
/// hosts whose clocks disagree (here by twenty years either way) judge every run alike.
#[test]
fn postgres_leases_are_kept_and_judged_by_the_servers_clock() {
    let Some(t) = TestDb::postgres() else { return };
    let years = Duration::days(20 * 365);
    let (behind, _) = clocked(&t, Utc::now() - years);
    let (ahead, _) = clocked(&t, Utc::now() + years);
    let by_behind = behind.start_trace(&"p".into(), &"behind".into(), "x").unwrap().id;
    let by_ahead = ahead.start_trace(&"p".into(), &"ahead".into(), "x").unwrap().id;
    // Owners on another host: judged by their leases alone.
    tamper(&t, "UPDATE execution_traces SET owner_host = 'another-host'");
    for (id, caller) in [(&by_behind, &behind), (&by_ahead, &ahead)] {
        let trace = caller.get_trace(id).unwrap().unwrap();
        let beat = trace.heartbeat_at.unwrap();
        assert!(
            (beat - trace.started_at).abs() > years / 2,
            "{id}: the server's time, not the caller's"
        );
    }
    let options = RecoveryOptions { lease: Duration::minutes(5), max_attempts: 3 };
    for caller in [&behind, &ahead] {
        let report = caller.recover(&options).unwrap();
        assert_eq!((report.alive, report.crashed.len()), (2, 0), "fresh by the server's clock");
    }
    // Ten minutes without a heartbeat by the server's clock: dead, to the caller whose own clock
    // puts that heartbeat twenty years ahead too.
    age(&t, &behind, &by_ahead, Duration::minutes(10));
    let report = behind.recover(&options).unwrap();
    assert_eq!(report.crashed.iter().map(|r| &r.trace.id).collect::<Vec<_>>(), [&by_ahead]);
    assert_eq!(report.alive, 1);
    behind.heartbeat(&by_behind).unwrap();
    let report = ahead.recover(&options).unwrap();
    assert_eq!((report.alive, report.crashed.len()), (1, 1), "the run behind keeps its lease");
    // A resumed run's lease starts at the server's time too.
    let resumed = ahead.resume(&by_ahead).unwrap();
    assert!(resumed.heartbeat_at.unwrap() < resumed.started_at, "not the caller's clock");
}

/// Two `aigentflow-worker recover` processes, cued at once, over dead runs and live ones.
type Recoverer = (Child, Lines<BufReader<ChildStdout>>);

on_both! {
fn recoveries_racing_in_two_processes_mark_and_claim_each_dead_run_once(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
    let start = |task: String| tracker.start_trace(&"race".into(), &task.into(), "x").unwrap().id;
    let dead: Vec<TraceId> = (0..48).map(|i| start(format!("dead-{i}"))).collect();
    let alive: Vec<TraceId> = (0..4).map(|i| start(format!("alive-{i}"))).collect();
    // A pid no process has: each dead run's owner probes gone on this host.
    tamper(t, "UPDATE execution_traces SET owner_pid = 2147483646 WHERE task_id LIKE 'dead-%'");
    let mut workers: Vec<Recoverer> = (0..2)
        .map(|_| {
            let mut child = worker(&["recover", t.location()]);
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            assert_eq!(lines.next().unwrap().unwrap(), "ready");
            (child, lines)
        })
        .collect();
    // Both have opened the database and wait: cue them together.
    for (child, _) in &mut workers {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut resumed: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (child, lines) in &mut workers {
        let pid = child.id();
        let mut done = false;
        for line in lines.by_ref() {
            let line = line.unwrap();
            match line.split_once(' ') {
                Some(("found", id)) => found.entry(id.into()).or_default().push(pid),
                Some(("resumed", id)) => resumed.entry(id.into()).or_default().push(pid),
                _ if line == "done" => {
                    done = true;
                    break;
                }
                _ => panic!("worker said {line:?}"),
            }
        }
        if !done {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            panic!("worker {pid} stopped before its pass was done: {stderr}");
        }
    }
    // Both workers are still running, so the runs they resumed have live owners.
    let expected: Vec<String> = {
        let mut ids: Vec<String> = dead.iter().map(ToString::to_string).collect();
        ids.sort();
        ids
    };
    let found_ids: Vec<String> = found.keys().cloned().collect();
    assert_eq!(found_ids, expected, "found: each dead run, no live one");
    for (what, by_run) in [("marked by both passes", &found), ("claimed twice", &resumed)] {
        let twice: Vec<&String> =
            by_run.iter().filter(|(_, by)| by.len() > 1).map(|r| r.0).collect();
        assert!(twice.is_empty(), "{} runs {what}, e.g. {:?}", twice.len(), twice.first());
    }
    assert_eq!(resumed.keys().cloned().collect::<Vec<_>>(), expected, "claimed: each dead run");
    for id in &dead {
        let trace = tracker.get_trace(id).unwrap().unwrap();
        assert_eq!((trace.status, trace.recovery_attempts), (TraceStatus::Running, 1), "{id}");
        assert_eq!(trace.owner.unwrap().pid, resumed[id.as_str()][0], "{id}");
    }
    for id in &alive {
        let trace = tracker.get_trace(id).unwrap().unwrap();
        assert_eq!((trace.status, trace.recovery_attempts), (TraceStatus::Running, 0), "{id}");
        assert_eq!(trace.owner.unwrap().pid, std::process::id(), "{id}");
    }
    for (mut child, lines) in workers {
        drop(child.stdin.take());
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        assert_eq!(rest, ["ok recover"]);
        expect_ok(child);
    }
}
}

#[test]
fn the_legacy_runs_left_unfinished_are_recovered_by_lease_on_sqlite() {
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

on_both! {
fn r1_writers_killed_at_random_points_lose_no_acknowledged_commit(t) {
    let rounds: usize =
        std::env::var("AIGENTFLOW_R1_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let mut acked_total = 0;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aigentflow-worker"))
            .args(["crash", t.location(), "task-r1"])
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
            let line = lines.next().unwrap_or_else(|| {
                panic!("round {round}: the worker stopped (its error is on stderr above)")
            });
            acked_total = line.unwrap().strip_prefix("acked ").unwrap().parse().unwrap();
        }
        kill9(&mut child);

        if t.backend() == Backend::Sqlite {
            let conn = raw(Path::new(t.location()));
            let check: String =
                conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
            assert_eq!(check, "ok", "round {round}");
        }
        let db = t.reopen();
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
}

#[test]
fn a_running_trace_held_by_a_heartbeat_is_reported_skipped_not_lost_on_postgres() {
    // A recovery pass skips a row another transaction holds (FOR UPDATE SKIP LOCKED): it must
    // count it as skipped, so alive + crashed + skipped covers every running trace.
    let Some(t) = TestDb::postgres() else { return };
    let tracker = ExecutionTracker::new(t.db().clone());
    let ids: Vec<TraceId> = (0..3)
        .map(|i| {
            tracker.start_trace(&"p".into(), &format!("held-{i}").as_str().into(), "x").unwrap().id
        })
        .collect();
    let mut holder = Driver::of(&t);
    for held in 0..=ids.len() {
        // Hold the first `held` rows as a heartbeat's UPDATE would, in an open transaction.
        let Driver::Postgres(client) = &mut holder else { unreachable!() };
        let mut open = client.transaction().unwrap();
        for id in &ids[..held] {
            open.execute(
                "UPDATE execution_traces SET heartbeat_at = heartbeat_at WHERE id = $1",
                &[&id.as_str()],
            )
            .unwrap();
        }
        let report = tracker.recover(&RecoveryOptions::default()).unwrap();
        assert_eq!(
            (report.alive, report.skipped),
            ((ids.len() - held) as u64, held as u64),
            "{held} held"
        );
        assert!(report.crashed.is_empty());
        open.rollback().unwrap();
    }
}
