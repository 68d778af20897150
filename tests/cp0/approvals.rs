//! Issue 14 item 3: durable approvals. A request survives a restart with its deadline and the
//! time it has left, and expires into the task's APPROVAL_TIMEOUT; a request, a decision and an
//! expiry are each written in one transaction with the task's transition and its audit entry,
//! so a failure in the middle leaves nothing; of two reviewers deciding at once one wins; no
//! secret given to a request or a decision is stored; and whatever happens, the task's state
//! and its request's status agree. Every scenario runs on both backends.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use aigentflow::approvals::{
    Approval, ApprovalFilter, ApprovalId, Approvals, Decision, Error, NewApproval, Status,
    Unreadable,
};
use aigentflow::audit::{AuditLog, AuditQuery, AuditRecord};
use aigentflow::persistence::redact::corpus::{self, Sample};
use aigentflow::persistence::{Backend, Database, Options, SqliteStateStore};
use aigentflow::states::{
    Event, ManualClock, PersistedState, StateContext, StateMachine, StateStore, TaskId,
    WorkflowState,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::inspect::{stored_bytes, Driver, Raw};
use crate::support::*;

/// When every scenario's clock starts.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap()
}

/// A clock that moves only when told to.
fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start(), TimeDelta::zero()))
}

/// A handle on `t`'s database whose "now" is `clock`, as a process (or a restarted one) opens it.
fn open_at(t: &TestDb, clock: &Arc<ManualClock>) -> Database {
    let options = Options { clock: clock.clone(), ..Options::default() };
    Database::open_with(t.location(), options).unwrap()
}

/// Saves `task` at AGENT_COMPLETE, its reviewer's output needing approval: where a request
/// starts from.
fn waiting_for_review(db: &Database, task: &str) {
    let mut m = StateMachine::new(StateContext::new("project-1".into(), task.into(), "Ship it"))
        .with_clock(db.clock().clone());
    m.apply(Event::Start, None).unwrap();
    m.apply(Event::AnalysisComplete, None).unwrap();
    m.context_mut().agent_queue.push("reviewer".into());
    m.apply(Event::SpawnAgent, None).unwrap();
    needs_approval(&mut m);
    SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
}

/// The reviewer agent is done and its output needs a person's approval.
fn needs_approval(m: &mut StateMachine) {
    m.apply(Event::AgentDone, None).unwrap();
    let ctx = m.context_mut();
    ctx.current_agent = Some("reviewer".into());
    ctx.agent_outputs.entry("reviewer".into()).or_default().routing_hints.needs_approval = true;
}

fn load(db: &Database, task: &str) -> PersistedState {
    SqliteStateStore::new(db.clone()).load_state(&task.into()).unwrap().unwrap()
}

/// Applies `events` to the stored task and saves it (the orchestrator moving it on).
fn drive(db: &Database, task: &str, events: &[Event]) {
    let mut m = StateMachine::from_persisted(load(db, task)).with_clock(db.clock().clone());
    for event in events {
        if *event == Event::AgentDone {
            needs_approval(&mut m);
        } else {
            m.apply(event.clone(), None).unwrap();
        }
    }
    SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
}

fn request(task: &str, deadline: Option<DateTime<Utc>>) -> NewApproval {
    NewApproval {
        payload: json!({"design": "OAuth + server-side sessions", "files": ["src/login.rs"]}),
        deadline,
        ..NewApproval::new(task.into(), "design", "architect")
    }
}

fn audit_of(db: &Database, task: &str) -> Vec<AuditRecord> {
    let q = AuditQuery { task_id: Some(task.into()), ..AuditQuery::default() };
    let mut rows = AuditLog::new(db.clone()).query(&q).unwrap();
    rows.reverse();
    rows
}

fn chain_verifies(db: &Database) {
    let v = AuditLog::new(db.clone()).verify(None).unwrap();
    assert_eq!(v.finding, None, "the audit chain verifies");
}

/// What a failed operation must leave as it was, read around the stores: every request, every
/// task's row, the transitions and the audit log.
fn snapshot(t: &TestDb) -> Vec<Vec<Vec<Option<String>>>> {
    let mut raw = Driver::of(t);
    [
        "SELECT * FROM approval_requests ORDER BY id",
        "SELECT task_id, state, context, updated_at FROM workflow_states ORDER BY task_id",
        "SELECT task_id, seq, event FROM state_transitions ORDER BY task_id, seq",
        "SELECT id, action, row_hash FROM audit_logs ORDER BY id",
    ]
    .iter()
    .map(|sql| raw.query(sql, &[]))
    .collect()
}

on_both! {
/// The done-when of the item: a request with a deadline is reloaded by a restarted process with
/// that deadline and the time it has left; once the deadline passes, `expire_due` turns it into
/// the task's APPROVAL_TIMEOUT (AWAITING_APPROVAL → REJECTED) with its audit entry, once, and
/// the chain verifies. A request without a deadline never expires.
fn an_approval_survives_a_restart_with_its_deadline_and_expires_into_the_tasks_timeout_event(t) {
    let clock = clock();
    let db = open_at(t, &clock);
    waiting_for_review(&db, "task-1");
    waiting_for_review(&db, "task-2");
    let deadline = start() + TimeDelta::hours(1);
    let approvals = Approvals::new(db.clone());
    let id = approvals.request(&request("task-1", Some(deadline))).unwrap();
    let forever = approvals.request(&request("task-2", None)).unwrap();
    let state = load(&db, "task-1");
    assert_eq!(state.state, WorkflowState::AwaitingApproval);
    let asked = state.history.last().unwrap();
    assert_eq!((&asked.event, asked.timestamp), (&Event::NeedsApproval, start()));
    assert_eq!(asked.metadata, Some(json!({"approvalId": id})));
    let requested = &audit_of(&db, "task-1")[0];
    assert_eq!(
        (requested.action.as_str(), requested.category.as_str()),
        ("approval_requested", "state")
    );
    let details = requested.details.clone().unwrap();
    assert_eq!(details["approvalId"], json!(id));
    assert_eq!(details["deadline"], json!("2026-11-22T10:00:00.000Z"));
    assert_eq!(details["payload"]["design"], json!("OAuth + server-side sessions"));
    drop(approvals);
    db.close().unwrap();

    // The process is gone; another starts 20 minutes later and reloads what waits.
    clock.advance(TimeDelta::minutes(20));
    let db = open_at(t, &clock);
    let approvals = Approvals::new(db.clone());
    let pending = approvals.pending().unwrap().approvals;
    let ids: Vec<&ApprovalId> = pending.iter().map(|a| &a.id).collect();
    assert_eq!(ids, [&id, &forever], "soonest deadline first, none last");
    let reloaded = &pending[0];
    assert_eq!(reloaded.deadline, Some(deadline));
    assert_eq!(reloaded.time_left(db.now()), Some(TimeDelta::minutes(40)));
    assert_eq!(reloaded.requested_at, start());
    assert_eq!((reloaded.kind.as_str(), reloaded.requested_by.as_str()), ("design", "architect"));
    assert_eq!(reloaded.payload, request("task-1", None).payload);
    assert_eq!(reloaded.status, Status::Pending);
    assert_eq!(pending[1].time_left(db.now()), None);
    assert_eq!(approvals.get(&id).unwrap().as_ref(), Some(reloaded));

    // Not yet: a minute before the deadline nothing expires.
    clock.advance(TimeDelta::minutes(39));
    assert_eq!(approvals.expire_due(db.now()).unwrap().expired, Vec::<ApprovalId>::new());
    assert_eq!(load(&db, "task-1").state, WorkflowState::AwaitingApproval);

    // Past it: the task's timeout event.
    clock.advance(TimeDelta::minutes(1) + TimeDelta::seconds(1));
    let now = db.now();
    assert_eq!(approvals.expire_due(now).unwrap().expired, std::slice::from_ref(&id));
    let state = load(&db, "task-1");
    assert_eq!(state.state, WorkflowState::Rejected);
    let timeout = state.history.last().unwrap();
    assert_eq!(
        (&timeout.from, &timeout.event, &timeout.to, timeout.timestamp),
        (&WorkflowState::AwaitingApproval, &Event::ApprovalTimeout, &WorkflowState::Rejected, now)
    );
    let expired = approvals.get(&id).unwrap().unwrap();
    assert_eq!(
        (expired.status, expired.decided_at, &expired.reviewer),
        (Status::Expired, Some(now), &None)
    );
    assert_eq!(expired.time_left(now), None);
    let entries = audit_of(&db, "task-1");
    let last = entries.last().unwrap();
    assert_eq!((last.action.as_str(), last.category.as_str()), ("approval_expired", "state"));
    let details = last.details.clone().unwrap();
    assert_eq!(
        (&details["event"], &details["to"]),
        (&json!("APPROVAL_TIMEOUT"), &json!("REJECTED"))
    );
    chain_verifies(&db);

    // Once: a second pass, or a far later one, expires nothing more; the request without a
    // deadline still waits, and a decision on the expired one is refused.
    let rows = snapshot(t);
    assert!(approvals.expire_due(now).unwrap().expired.is_empty());
    assert!(approvals.expire_due(now + TimeDelta::days(3650)).unwrap().expired.is_empty());
    assert_eq!(snapshot(t), rows);
    let waiting: Vec<ApprovalId> = approvals.pending().unwrap().approvals.into_iter().map(|a| a.id).collect();
    assert_eq!(waiting, [forever]);
    let err = approvals.approve(&id, "alice", None).unwrap_err();
    assert!(matches!(err, Error::NotPending { status: Status::Expired, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("approval {id} is expired, not pending: a request is decided once")
    );
    assert_eq!(snapshot(t), rows);
}
}

on_both! {
/// APPROVE and REJECT: the decision (status, reviewer, comment, time), the task's transition
/// and the audit entry (`user`, the reviewer as its user) are written together, and the task
/// goes on from there; a second decision, an unknown id and a decision on an expired request
/// are typed errors naming the request.
fn approve_and_reject_write_the_decision_the_transition_and_the_audit_entry_together(t) {
    let clock = clock();
    let db = open_at(t, &clock);
    let approvals = Approvals::new(db.clone());
    for (task, approve, comment, event, decided) in [
        ("task-a", true, Some("looks good"), Event::Approve, WorkflowState::Approved),
        ("task-r", false, None, Event::Reject, WorkflowState::Rejected),
    ] {
        waiting_for_review(&db, task);
        let id = approvals.request(&request(task, Some(start() + TimeDelta::days(1)))).unwrap();
        clock.advance(TimeDelta::minutes(5));
        let now = db.now();
        let done = if approve {
            approvals.approve(&id, "alice", comment).unwrap()
        } else {
            approvals.reject(&id, "alice", comment).unwrap()
        };
        let status = if approve { Status::Approved } else { Status::Rejected };
        assert_eq!(done.status, status);
        assert_eq!(
            (done.reviewer.as_deref(), done.comment.as_deref(), done.decided_at),
            (Some("alice"), comment, Some(now))
        );
        assert_eq!(approvals.get(&id).unwrap(), Some(done.clone()));
        let state = load(&db, task);
        assert_eq!(state.state, decided);
        let t_last = state.history.last().unwrap();
        assert_eq!((&t_last.event, t_last.timestamp), (&event, now));
        assert_eq!(t_last.metadata, Some(json!({"approvalId": id, "reviewer": "alice"})));
        let entry = audit_of(&db, task).pop().unwrap();
        assert_eq!(entry.action, format!("approval_{status}"));
        assert_eq!((entry.category.as_str(), entry.user_id.as_deref()), ("user", Some("alice")));
        let details = entry.details.unwrap();
        assert_eq!(
            (&details["comment"], &details["event"]),
            (&json!(comment), &json!(event.as_str()))
        );

        // Decided once.
        let rows = snapshot(t);
        for err in [
            approvals.approve(&id, "bob", None).unwrap_err(),
            approvals.reject(&id, "bob", Some("no")).unwrap_err(),
        ] {
            assert!(matches!(&err, Error::NotPending { status: s, .. } if *s == status), "{err}");
        }
        assert!(approvals.expire_due(now + TimeDelta::days(2)).unwrap().expired.is_empty());
        assert_eq!(snapshot(t), rows);

        // The task goes on, and may wait on a new request.
        drive(&db, task, &[Event::Continue, Event::SpawnAgent, Event::AgentDone]);
        let again = approvals.request(&request(task, None)).unwrap();
        assert_ne!(again, id);
        let filter = ApprovalFilter { task_id: Some(task.into()), ..ApprovalFilter::default() };
        let listed: Vec<(ApprovalId, Status)> =
            approvals.list(&filter).unwrap().approvals.into_iter().map(|a| (a.id, a.status)).collect();
        assert_eq!(listed, [(again, Status::Pending), (id, status)], "newest first");
    }
    let unknown = ApprovalId::new("no-such-approval");
    let err = approvals.approve(&unknown, "alice", None).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.to_string(), "approval no-such-approval not found");
    assert_eq!(approvals.get(&unknown).unwrap(), None);
    chain_verifies(&db);
}
}

on_both! {
/// Bad requests and decisions are typed errors, each refused before anything is written: an
/// unknown task, a task not at AGENT_COMPLETE or whose output needs no approval, a second
/// pending request for a task, a deadline not after now or outside years 0000 to 9999, an
/// empty kind, requester or reviewer, a decision on a task that left AWAITING_APPROVAL.
fn bad_requests_and_decisions_are_typed_errors_that_write_nothing(t) {
    let clock = clock();
    let db = open_at(t, &clock);
    let approvals = Approvals::new(db.clone());
    waiting_for_review(&db, "ready");
    SqliteStateStore::new(db.clone())
        .save_state(
            StateMachine::new(StateContext::new("p".into(), "idle".into(), "x")).persisted(),
        )
        .unwrap();
    let rows = snapshot(t);
    let mut no_output = request("ready", None);
    no_output.task_id = "idle".into();
    let far = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + TimeDelta::seconds(2);
    let yesterday = start() - TimeDelta::days(1);
    let cases: Vec<(NewApproval, &str)> = vec![
        (
            request("ghost", None),
            "task ghost not found; save its state before requesting an approval",
        ),
        (no_output, "task idle: event NEEDS_APPROVAL is not allowed in state IDLE"),
        (
            request("ready", Some(start())),
            "invalid deadline 2026-11-22T09:00:00.000Z: it is not after the request's time \
             2026-11-22T09:00:00.000Z",
        ),
        (
            request("ready", Some(yesterday)),
            "invalid deadline 2026-11-21T09:00:00.000Z: it is not after",
        ),
        (
            request("ready", Some(far)),
            "invalid deadline +10000-01-01T00:00:01.000Z: outside years 0000 to 9999",
        ),
        (
            NewApproval { kind: " ".into(), ..request("ready", None) },
            "invalid approval kind: it is empty",
        ),
        (
            NewApproval { requested_by: String::new(), ..request("ready", None) },
            "invalid requester: it is empty",
        ),
    ];
    for (new, message) in cases {
        let err = approvals.request(&new).unwrap_err();
        assert!(err.to_string().starts_with(message), "{err} is not {message}");
        assert_eq!(snapshot(t), rows, "{message} wrote something");
    }
    // A guard that does not hold: the output needs no approval.
    drive(&db, "ready", &[]);
    let mut m = StateMachine::from_persisted(load(&db, "ready"));
    m.context_mut().agent_outputs.clear();
    SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
    let rows = snapshot(t);
    let err = approvals.request(&request("ready", None)).unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("guard output_needs_approval does not hold"), "{err}");
    assert_eq!(snapshot(t), rows);

    waiting_for_review(&db, "busy");
    let id = approvals.request(&request("busy", Some(start() + TimeDelta::hours(1)))).unwrap();
    let rows = snapshot(t);
    let err = approvals.request(&request("busy", None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("task busy already waits on approval {id}; decide that one first")
    );
    let err = approvals.approve(&id, "  ", None).unwrap_err();
    assert_eq!(err.to_string(), "invalid reviewer: it is empty");
    assert_eq!(snapshot(t), rows);

    // The orchestrator aborts the task while it waits: nothing is left to decide, and the
    // expiry closes the request without a transition, saying so in its audit entry.
    drive(&db, "busy", &[Event::Abort]);
    let rows = snapshot(t);
    let err = approvals.reject(&id, "alice", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "approval {id} cannot be decided: task busy is in state ABORTED, \
             no longer AWAITING_APPROVAL"
        )
    );
    assert_eq!(snapshot(t), rows);
    clock.advance(TimeDelta::hours(2));
    assert_eq!(approvals.expire_due(db.now()).unwrap().expired, std::slice::from_ref(&id));
    let state = load(&db, "busy");
    assert_eq!(
        (state.state, state.history.last().map(|t| t.event.clone())),
        (WorkflowState::Aborted, Some(Event::Abort))
    );
    assert_eq!(approvals.get(&id).unwrap().unwrap().status, Status::Expired);
    let details = audit_of(&db, "busy").pop().unwrap().details.unwrap();
    assert_eq!((&details["transition"], &details["taskState"]), (&Value::Null, &json!("ABORTED")));
    chain_verifies(&db);
}
}

/// Makes every audit append of the approvals store fail, around the stores (a trigger).
fn inject_audit_failure(t: &TestDb) {
    Driver::of(t).batch(match t.backend() {
        Backend::Sqlite => {
            "CREATE TRIGGER inject_audit_failure BEFORE INSERT ON audit_logs
             WHEN NEW.action LIKE 'approval%'
             BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END;"
        }
        Backend::Postgres => {
            "CREATE OR REPLACE FUNCTION inject_audit_failure() RETURNS trigger LANGUAGE plpgsql
                AS $$ BEGIN RAISE EXCEPTION 'injected audit failure'; END $$;
             CREATE TRIGGER inject_audit_failure BEFORE INSERT ON audit_logs FOR EACH ROW
                WHEN (NEW.action LIKE 'approval%') EXECUTE FUNCTION inject_audit_failure();"
        }
    });
}

fn heal_audit(t: &TestDb) {
    Driver::of(t).batch(match t.backend() {
        Backend::Sqlite => "DROP TRIGGER inject_audit_failure;",
        Backend::Postgres => "DROP TRIGGER inject_audit_failure ON audit_logs;",
    });
}

on_both! {
/// A request, a decision and an expiry are one transaction each: when the audit entry cannot
/// be written, after the task's transition was, neither the transition nor the request's row
/// is left, and the chain still verifies.
fn an_audit_failure_in_the_middle_of_a_request_decision_or_expiry_leaves_nothing_written(t) {
    let clock = clock();
    let db = open_at(t, &clock);
    let approvals = Approvals::new(db.clone());
    waiting_for_review(&db, "task-1");
    waiting_for_review(&db, "task-2");
    let deadline = Some(start() + TimeDelta::minutes(10));

    inject_audit_failure(t);
    let rows = snapshot(t);
    let err = approvals.request(&request("task-1", deadline)).unwrap_err();
    assert!(err.to_string().contains("injected audit failure"), "{err}");
    assert_eq!(snapshot(t), rows, "a failed request wrote something");
    assert_eq!(load(&db, "task-1").state, WorkflowState::AgentComplete);
    heal_audit(t);

    // The first waits for ever, so that it can still be approved once the second is due.
    let first = approvals.request(&request("task-1", None)).unwrap();
    let second = approvals.request(&request("task-2", deadline)).unwrap();
    inject_audit_failure(t);
    let rows = snapshot(t);
    for err in [
        approvals.approve(&first, "alice", Some("fine")).unwrap_err(),
        approvals.reject(&second, "alice", None).unwrap_err(),
    ] {
        assert!(err.to_string().contains("injected audit failure"), "{err}");
    }
    assert_eq!(snapshot(t), rows, "a failed decision wrote something");
    clock.advance(TimeDelta::minutes(11));
    let err = approvals.expire_due(db.now()).unwrap_err();
    assert!(err.to_string().contains("injected audit failure"), "{err}");
    assert_eq!(snapshot(t), rows, "a failed expiry wrote something");
    // A late decision, whose expiry cannot be written: nothing is.
    let err = approvals.approve(&second, "alice", None).unwrap_err();
    assert!(err.to_string().contains("injected audit failure"), "{err}");
    assert_eq!(snapshot(t), rows, "a late decision's failed expiry wrote something");
    assert_eq!(approvals.pending().unwrap().approvals.len(), 2);
    heal_audit(t);

    // Healed, the same calls go through.
    assert_eq!(approvals.approve(&first, "alice", None).unwrap().status, Status::Approved);
    assert_eq!(approvals.expire_due(db.now()).unwrap().expired, [second]);
    assert_eq!(load(&db, "task-2").state, WorkflowState::Rejected);
    chain_verifies(&db);
}
}

on_both! {
/// Two reviewers deciding one request at once, from two handles (separate connections, as two
/// processes have): exactly one wins, the other is told the request is no longer pending, and
/// the task has one decision in its history and its audit log. Two expiry passes at once
/// expire every due request once between them.
fn two_reviewers_deciding_at_once_one_wins_and_two_expiry_passes_expire_each_request_once(t) {
    let clock = clock();
    let db = open_at(t, &clock);
    let approvals = Approvals::new(db.clone());
    let handles = [open_at(t, &clock), open_at(t, &clock)];
    for round in 0..6 {
        let task = format!("race-{round}");
        waiting_for_review(&db, &task);
        let id = approvals.request(&request(&task, None)).unwrap();
        let barrier = Barrier::new(2);
        let results: Vec<Result<Approval, Error>> = std::thread::scope(|scope| {
            let runs: Vec<_> = handles
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let (barrier, id) = (&barrier, &id);
                    scope.spawn(move || {
                        let mine = Approvals::new(h.clone());
                        barrier.wait();
                        if (i + round) % 2 == 0 {
                            mine.approve(id, &format!("reviewer-{i}"), None)
                        } else {
                            mine.reject(id, &format!("reviewer-{i}"), None)
                        }
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let won: Vec<&Approval> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(
            matches!(lost, Error::NotPending { status, .. } if *status == won[0].status),
            "{lost}"
        );
        let state = load(&db, &task);
        let decisions = state
            .history
            .iter()
            .filter(|t| matches!(t.event, Event::Approve | Event::Reject))
            .count();
        assert_eq!(decisions, 1);
        let audited = audit_of(&db, &task).iter().filter(|e| e.category == "user").count();
        assert_eq!(audited, 1);
        assert_eq!(approvals.get(&id).unwrap().unwrap(), *won[0]);
    }

    let mut due = BTreeSet::new();
    for i in 0..8 {
        let task = format!("due-{i}");
        waiting_for_review(&db, &task);
        let deadline = db.now() + TimeDelta::minutes(1 + i);
        due.insert(approvals.request(&request(&task, Some(deadline))).unwrap());
    }
    clock.advance(TimeDelta::hours(1));
    let now = db.now();
    let barrier = Barrier::new(2);
    let passes: Vec<Vec<ApprovalId>> = std::thread::scope(|scope| {
        let runs: Vec<_> = handles
            .iter()
            .map(|h| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mine = Approvals::new(h.clone());
                    barrier.wait();
                    mine.expire_due(now).unwrap().expired
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut all: Vec<ApprovalId> = passes.concat();
    all.sort();
    let expected: Vec<ApprovalId> = due.into_iter().collect();
    assert_eq!(all, expected, "each due request expired by exactly one pass: {passes:?}");
    for i in 0..8 {
        let history = load(&db, &format!("due-{i}")).history;
        let timeouts = history.iter().filter(|t| t.event == Event::ApprovalTimeout).count();
        assert_eq!(timeouts, 1);
    }
    chain_verifies(&db);
}
}

/// The corpus, expanded with a fixed seed.
fn samples() -> Vec<Sample> {
    corpus::samples(0xa99_20e).unwrap()
}

on_both! {
/// R16 for approvals: every sample of the secret corpus given as a request's kind, payload
/// (keys and values) and requester, and a decision's reviewer and comment, is in none of the
/// stored rows (the SQLite file and its WAL; every cell on PostgreSQL) nor in the message of an
/// error naming it; a listing by the task finds the request all the same.
fn no_secret_given_to_a_request_or_a_decision_is_stored_or_shown(t) {
    let samples = samples();
    assert!(samples.len() >= 100, "the corpus is the test: {} samples", samples.len());
    let db = t.db();
    let approvals = Approvals::new(db.clone());
    for (i, s) in samples.iter().enumerate() {
        let text = s.text.as_str();
        let task = format!("task-{i}");
        waiting_for_review(db, &task);
        let payload = s.json().unwrap_or_else(|| {
            let mut map = serde_json::Map::new();
            map.insert(text.to_owned(), json!({"value": text, "list": [text]}));
            Value::Object(map)
        });
        let new = NewApproval {
            payload,
            deadline: Some(db.now() + TimeDelta::days(1)),
            ..NewApproval::new(task.as_str().into(), format!("kind {text}"), format!("by {text}"))
        };
        let id = approvals.request(&new).unwrap();
        let comment = format!("comment {text}");
        if i % 2 == 0 {
            approvals.approve(&id, text, Some(&comment)).unwrap();
        } else {
            approvals.reject(&id, &format!("reviewer {text}"), Some(&comment)).unwrap();
        }
        let filter =
            ApprovalFilter { task_id: Some(task.as_str().into()), ..ApprovalFilter::default() };
        assert_eq!(approvals.list(&filter).unwrap().approvals.len(), 1, "{}", s.name);
        for err in [
            approvals.approve(&ApprovalId::new(text), "alice", None).unwrap_err(),
            approvals.request(&NewApproval::new(TaskId::new(text), "k", "r")).unwrap_err(),
            approvals.approve(&id, text, Some(text)).unwrap_err(),
        ] {
            let message = err.to_string();
            if let Some(needle) = s.leaked_in(message.as_bytes()) {
                panic!("an error message holds {needle:?} of sample {}: {message}", s.name);
            }
        }
    }
    let stored = stored_bytes(t);
    assert!(contains(&stored, "[REDACTED]"), "the stored text was read");
    if let Some((s, needle)) = corpus::leaks(&samples, &stored).first() {
        panic!(
            "the database holds {needle:?} of sample {} ({:?}): {:?}",
            s.name, s.context, s.text
        );
    }
    chain_verifies(db);
}
}

on_both! {
/// Deleting a task deletes its requests (its transitions and checkpoints go with it too), and
/// `db copy` moves the requests with their tasks, every field kept.
fn a_tasks_requests_go_with_it_when_it_is_deleted_and_move_with_db_copy(t) {
    let db = t.db();
    let approvals = Approvals::new(db.clone());
    for task in ["kept", "gone"] {
        waiting_for_review(db, task);
        approvals.request(&request(task, Some(db.now() + TimeDelta::hours(1)))).unwrap();
    }
    let kept = approvals.pending().unwrap().approvals.into_iter().find(|a| a.task_id.as_str() == "kept");
    approvals.approve(&kept.clone().unwrap().id, "alice", Some("ok")).unwrap();
    assert!(SqliteStateStore::new(db.clone()).delete_state(&"gone".into()).unwrap());
    let left = approvals.list(&ApprovalFilter::default()).unwrap().approvals;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].task_id.as_str(), "kept");

    let copy = TestDb::sqlite();
    db.copy_into(copy.db(), |_, _, _| {}).unwrap();
    assert_eq!(Approvals::new(copy.db().clone()).list(&ApprovalFilter::default()).unwrap().approvals, left);
}
}

/// One step of the property below, on task `task % TASKS` of the case.
#[derive(Debug, Clone)]
enum Step {
    /// A request with a deadline this many minutes ahead (None: no deadline).
    Request(usize, Option<i64>),
    Approve(usize),
    Reject(usize),
    /// The clock moves this many minutes.
    Advance(i64),
    Expire,
    /// The orchestrator moves a decided task on to its next review (CONTINUE, SPAWN_AGENT,
    /// AGENT_DONE), where it may be asked again.
    Continue(usize),
    /// The process restarts: a new handle and store.
    Restart,
}

const TASKS: usize = 3;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..TASKS, proptest::option::of(1i64..90)).prop_map(|(t, d)| Step::Request(t, d)),
        2 => (0..TASKS).prop_map(Step::Approve),
        2 => (0..TASKS).prop_map(Step::Reject),
        2 => (1i64..60).prop_map(Step::Advance),
        2 => Just(Step::Expire),
        2 => (0..TASKS).prop_map(Step::Continue),
        1 => Just(Step::Restart),
    ]
}

/// What the property expects of one task: its state, and its latest request.
#[derive(Debug, Clone)]
struct Expected {
    state: WorkflowState,
    latest: Option<(ApprovalId, Status, Option<DateTime<Utc>>)>,
}

on_both! {
/// Whatever sequence of requests, approvals, rejections, clock moves, expiry passes, tasks
/// moving on and restarts: every call either does what a simple model says or is refused and
/// changes nothing, and after each step every task's state agrees with its latest request
/// (pending ⇔ AWAITING_APPROVAL; approved, rejected, expired ⇔ the APPROVE, REJECT or
/// APPROVAL_TIMEOUT that ended in its state), with one pending request at most.
fn random_requests_decisions_and_expiries_keep_each_task_and_its_request_in_step(t) {
    // Every reading a millisecond later: a task's requests never share an instant.
    let clock = Arc::new(ManualClock::new(start(), TimeDelta::milliseconds(1)));
    let cases = AtomicUsize::new(0);
    check(24, proptest::collection::vec(step(), 1..40), |steps| {
        let case = cases.fetch_add(1, Ordering::SeqCst);
        let name = |i: usize| format!("case-{case}-task-{i}");
        let mut db = open_at(t, &clock);
        let mut approvals = Approvals::new(db.clone());
        let mut model: Vec<Expected> = (0..TASKS)
            .map(|i| {
                waiting_for_review(&db, &name(i));
                Expected { state: WorkflowState::AgentComplete, latest: None }
            })
            .collect();
        for step in steps {
            match step {
                Step::Request(i, minutes) => {
                    let deadline = minutes.map(|m| db.now() + TimeDelta::minutes(m));
                    let result = approvals.request(&request(&name(i), deadline));
                    if model[i].state == WorkflowState::AgentComplete {
                        let id = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model[i] = Expected {
                            state: WorkflowState::AwaitingApproval,
                            latest: Some((id, Status::Pending, deadline)),
                        };
                    } else {
                        prop_assert!(
                            matches!(
                                result,
                                Err(Error::AlreadyPending { .. } | Error::Refused { .. })
                            ),
                            "{result:?}"
                        );
                    }
                }
                Step::Approve(i) | Step::Reject(i) => {
                    let Some((id, status, deadline)) = model[i].latest.clone() else { continue };
                    let approve = matches!(step, Step::Approve(_));
                    // The store reads its clock after this: a deadline passed now has passed
                    // for it too (and one not passed yet is minutes away, not a tick).
                    let late = status == Status::Pending && deadline.is_some_and(|d| d <= db.now());
                    let result = if approve {
                        approvals.approve(&id, "alice", Some("why not"))
                    } else {
                        approvals.reject(&id, "alice", None)
                    };
                    if late {
                        // Past its deadline: refused, and expired as the expiry pass would.
                        let refused = matches!(
                            &result,
                            Err(Error::Expired { deadline: d, .. }) if Some(*d) == deadline
                        );
                        prop_assert!(refused, "{result:?}");
                        model[i] = Expected {
                            state: WorkflowState::Rejected,
                            latest: Some((id, Status::Expired, deadline)),
                        };
                    } else if status == Status::Pending {
                        let done = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let (status, state) = if approve {
                            (Status::Approved, WorkflowState::Approved)
                        } else {
                            (Status::Rejected, WorkflowState::Rejected)
                        };
                        prop_assert_eq!(done.status, status);
                        model[i] = Expected { state, latest: Some((id, status, deadline)) };
                    } else {
                        let refused = matches!(
                            &result,
                            Err(Error::NotPending { status: s, .. }) if *s == status
                        );
                        prop_assert!(refused, "{result:?}");
                    }
                }
                Step::Advance(minutes) => clock.advance(TimeDelta::minutes(minutes)),
                Step::Expire => {
                    let now = db.now();
                    // Requests of earlier cases (on the same database) expire too: only this
                    // case's are compared.
                    let mut expired: Vec<ApprovalId> = approvals
                        .expire_due(now)
                        .unwrap().expired
                        .into_iter()
                        .filter(|id| {
                            model
                                .iter()
                                .any(|m| matches!(&m.latest, Some((mine, ..)) if mine == id))
                        })
                        .collect();
                    expired.sort();
                    let mut expected = Vec::new();
                    for m in &mut model {
                        if let Some((id, status @ Status::Pending, Some(deadline))) = &mut m.latest
                        {
                            if *deadline <= now {
                                expected.push(id.clone());
                                *status = Status::Expired;
                                m.state = WorkflowState::Rejected;
                            }
                        }
                    }
                    expected.sort();
                    prop_assert_eq!(expired, expected);
                }
                Step::Continue(i) => {
                    if matches!(model[i].state, WorkflowState::Approved | WorkflowState::Rejected) {
                        drive(
                            &db,
                            &name(i),
                            &[Event::Continue, Event::SpawnAgent, Event::AgentDone],
                        );
                        model[i].state = WorkflowState::AgentComplete;
                    }
                }
                Step::Restart => {
                    db = open_at(t, &clock);
                    approvals = Approvals::new(db.clone());
                }
            }
            for (i, m) in model.iter().enumerate() {
                let task = name(i);
                let state = load(&db, &task);
                prop_assert_eq!(&state.state, &m.state, "{}", task);
                let filter = ApprovalFilter {
                    task_id: Some(task.as_str().into()),
                    ..ApprovalFilter::default()
                };
                let requests = approvals.list(&filter).unwrap().approvals;
                let pending = requests.iter().filter(|a| a.is_pending()).count();
                prop_assert_eq!(pending == 1, state.state == WorkflowState::AwaitingApproval);
                prop_assert!(pending <= 1);
                let latest = requests.first().map(|a| (a.id.clone(), a.status, a.deadline));
                prop_assert_eq!(&latest, &m.latest);
                if let (Some((_, status, _)), Some(last)) = (&m.latest, state.history.last()) {
                    let ended_by = match status {
                        Status::Pending => Event::NeedsApproval,
                        Status::Approved => Event::Approve,
                        Status::Rejected => Event::Reject,
                        Status::Expired => Event::ApprovalTimeout,
                    };
                    if state.state != WorkflowState::AgentComplete {
                        prop_assert_eq!(&last.event, &ended_by);
                    }
                }
            }
        }
        Ok(())
    });
    chain_verifies(t.db());
}
}

on_both! {
/// A deadline written around the store in another spelling or time zone (`T` between date and
/// time, `Z`, an offset, no milliseconds) expires when the time it names has passed, and not
/// before, whatever its text sorts as against the stored form.
fn a_deadline_in_any_spelling_expires_by_the_time_it_names(t) {
    let clock = clock();
    let db = open_at(t, &clock);
    let approvals = Approvals::new(db.clone());
    // At 10:00 UTC: due are those naming 09:30 (or 10:00), not those naming 10:30.
    let spellings = [
        ("2026-11-22T09:30:00Z", true),
        ("2026-11-22T09:30:00.000Z", true),
        ("2026-11-22T10:00:00Z", true),
        ("2026-11-22 11:30:00+02:00", true),
        ("2026-11-22T11:30:00+02:00", true),
        ("2026-11-22T09:30:00", true),
        ("2026-11-22 09:30", true),
        ("2026-11-22T10:30:00Z", false),
        ("2026-11-22T12:30:00+02:00", false),
        ("2026-11-22 12:30:00+02:00", false),
        ("2026-11-22 10:30:00.000", false),
        ("2026-11-22T10:30", false),
    ];
    let mut ids = Vec::new();
    for (i, (spelling, _)) in spellings.iter().enumerate() {
        let task = format!("task-{i}");
        waiting_for_review(&db, &task);
        let id = approvals.request(&request(&task, Some(start() + TimeDelta::hours(3)))).unwrap();
        crate::audit::around(
            t,
            &format!("UPDATE approval_requests SET deadline = '{spelling}' WHERE id = '{id}'"),
        )
        .unwrap();
        ids.push(id);
    }
    clock.advance(TimeDelta::hours(1));
    let mut expired = approvals.expire_due(db.now()).unwrap().expired;
    expired.sort();
    let mut due: Vec<ApprovalId> = ids
        .iter()
        .zip(&spellings)
        .filter(|(_, (_, due))| *due)
        .map(|(id, _)| id.clone())
        .collect();
    due.sort();
    assert_eq!(expired, due);
    for (i, (spelling, due)) in spellings.iter().enumerate() {
        let state = load(&db, &format!("task-{i}")).state;
        let expected =
            if *due { WorkflowState::Rejected } else { WorkflowState::AwaitingApproval };
        assert_eq!(state, expected, "{spelling}");
    }
    // Half an hour on, the rest have passed too.
    clock.advance(TimeDelta::minutes(31));
    assert_eq!(approvals.expire_due(db.now()).unwrap().expired.len(), spellings.len() - due.len());
    assert!(approvals.pending().unwrap().approvals.is_empty());
    chain_verifies(&db);
}
}

/// One late decision of the property below: the deadline as written around the store (None: as
/// the store wrote it, an hour after the request), how long after the request the decision
/// comes, approve or reject, and whether the task was aborted meanwhile.
struct Late {
    spelling: Option<fn(DateTime<Utc>) -> String>,
    after: TimeDelta,
    approve: bool,
    aborted: bool,
    refused: bool,
}

/// What a request and its task look like once ended, ids left out: what the expiry pass makes
/// of one is compared with what a refused late decision makes of another.
fn ending(db: &Database, task: &str, id: &ApprovalId) -> (Value, Value, Value) {
    let a = Approvals::new(db.clone()).get(id).unwrap().unwrap();
    let request = json!([a.status, a.decided_at, a.reviewer, a.comment, a.deadline]);
    let state = load(db, task);
    let last = state.history.last().unwrap();
    let transition = json!([state.state, last.from, last.event, last.to, last.timestamp]);
    let entry = audit_of(db, task).pop().unwrap();
    let mut details = entry.details.unwrap();
    details["approvalId"] = Value::Null;
    (request, transition, json!([entry.action, entry.category, entry.user_id, details]))
}

on_both! {
/// A decision on a request past its deadline (at it, a millisecond or a year after it, its
/// deadline written in another spelling or time zone, its task aborted meanwhile; approve or
/// reject) is refused with `Expired` naming the deadline, judged by the database's clock as the
/// expiry pass judges; and the request ends exactly as the expiry pass ends a twin request at
/// that instant. Up to the deadline a decision goes through; `decide_in` in a caller's
/// transaction refuses without writing anything; a deadline that cannot be read is refused as
/// the corrupt row it is, nothing written.
fn a_decision_past_the_deadline_is_refused_and_the_request_expires_as_the_expiry_pass_would(t) {
    let clock = clock();
    let db = open_at(t, &clock);
    let approvals = Approvals::new(db.clone());
    let zoned = |d: DateTime<Utc>| {
        let east = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
        (d + TimeDelta::minutes(30)).with_timezone(&east).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    };
    let later_z =
        |d: DateTime<Utc>| (d + TimeDelta::hours(2)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ms = TimeDelta::milliseconds;
    let hour = TimeDelta::hours(1);
    let cases = [
        Late { spelling: None, after: hour, approve: true, aborted: false, refused: true },
        Late { spelling: None, after: hour + ms(1), approve: false, aborted: false, refused: true },
        Late { spelling: None, after: TimeDelta::days(365), approve: true, aborted: false, refused: true },
        Late { spelling: Some(zoned), after: TimeDelta::minutes(31), approve: true, aborted: false, refused: true },
        Late { spelling: None, after: TimeDelta::hours(2), approve: false, aborted: true, refused: true },
        Late { spelling: None, after: hour - ms(1), approve: true, aborted: false, refused: false },
        Late { spelling: Some(later_z), after: TimeDelta::minutes(90), approve: false, aborted: false, refused: false },
    ];
    for (n, case) in cases.iter().enumerate() {
        let (task, twin) = (format!("late-{n}"), format!("twin-{n}"));
        let mut ids = Vec::new();
        for task in [&task, &twin] {
            waiting_for_review(&db, task);
            let id = approvals.request(&request(task, Some(db.now() + hour))).unwrap();
            if let Some(spelling) = case.spelling {
                let text = spelling(db.now());
                crate::audit::around(
                    t,
                    &format!("UPDATE approval_requests SET deadline = '{text}' WHERE id = '{id}'"),
                )
                .unwrap();
            }
            if case.aborted {
                drive(&db, task, &[Event::Abort]);
            }
            ids.push(id);
        }
        let deadline = approvals.get(&ids[0]).unwrap().unwrap().deadline.unwrap();
        clock.advance(case.after);
        let now = db.now();
        let result = if case.approve {
            approvals.approve(&ids[0], "alice", Some("late"))
        } else {
            approvals.reject(&ids[0], "alice", None)
        };
        if !case.refused {
            let done = result.unwrap();
            let status = if case.approve { Status::Approved } else { Status::Rejected };
            assert_eq!((done.status, done.decided_at), (status, Some(now)), "case {n}");
            approvals.approve(&ids[1], "alice", None).unwrap();
            continue;
        }
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::Expired { id, deadline: d } if id.as_str() == ids[0].as_str() && *d == deadline),
            "case {n}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "approval {} expired at {}: a request past its deadline cannot be decided",
                ids[0],
                aigentflow::states::time::to_rfc3339(deadline)
            )
        );
        // Expired already, as the pass expires the twin at the same instant: nothing else is due.
        assert_eq!(approvals.expire_due(now).unwrap().expired, std::slice::from_ref(&ids[1]));
        assert_eq!(ending(&db, &task, &ids[0]), ending(&db, &twin, &ids[1]), "case {n}");
        let ended = approvals.get(&ids[0]).unwrap().unwrap();
        assert_eq!((ended.status, ended.decided_at), (Status::Expired, Some(now)));
        let expected = if case.aborted { WorkflowState::Aborted } else { WorkflowState::Rejected };
        assert_eq!(load(&db, &task).state, expected, "case {n}");
    }

    // In a caller's transaction the refusal writes nothing: the pass expires it later.
    waiting_for_review(&db, "in-tx");
    let id = approvals.request(&request("in-tx", Some(db.now() + hour))).unwrap();
    clock.advance(hour);
    let rows = snapshot(t);
    for decision in [Decision::Approve, Decision::Reject] {
        let err = db
            .write(|tx| approvals.decide_in(tx, &id, decision, "alice", None))
            .unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
    }
    assert_eq!(snapshot(t), rows, "a refused decide_in wrote something");
    assert_eq!(approvals.expire_due(db.now()).unwrap().expired, [id]);

    // A deadline that cannot be read cannot be judged: refused as a corrupt row.
    waiting_for_review(&db, "unreadable");
    let id = approvals.request(&request("unreadable", Some(db.now() + hour))).unwrap();
    for text in ["soon", "2026-02-30 10:00:00.000", "2026-11-22 24:00:00.000"] {
        crate::audit::around(
            t,
            &format!("UPDATE approval_requests SET deadline = '{text}' WHERE id = '{id}'"),
        )
        .unwrap();
        let rows = snapshot(t);
        for err in [
            approvals.approve(&id, "alice", None).unwrap_err(),
            approvals.reject(&id, "alice", None).unwrap_err(),
        ] {
            assert!(
                err.to_string()
                    .starts_with(&format!("unreadable approval_requests.deadline in row {id}")),
                "{text}: {err}"
            );
        }
        assert_eq!(snapshot(t), rows, "{text}: a refused decision wrote something");
    }
    chain_verifies(&db);
}
}

/// Where one request of the scenario below is corrupted around the store, and what its row
/// then is to a listing and to the expiry pass.
struct Corrupt {
    /// The SET clause, on the request's row or (`task`) its task's.
    set: &'static str,
    task: bool,
    /// The table and column the corrupt-row error names.
    names: (&'static str, &'static str),
    /// Decided before it is corrupted (so not pending, and not the expiry's).
    decided: bool,
    /// A listing can still read it (the task's row is not what it reads).
    listed: bool,
    sqlite_only: bool,
}

/// A corrupted request, its task, and how it was corrupted.
type Corrupted<'c> = (ApprovalId, String, &'c Corrupt);

/// The start of the corrupt-row error naming `c`'s row: the request's, or its task's.
fn named((id, task, c): &Corrupted<'_>) -> String {
    let row = if c.task { task.to_owned() } else { id.to_string() };
    format!("unreadable {}.{} in row {row}: ", c.names.0, c.names.1)
}

/// `skipped` names exactly the `expected` requests, each by the error naming its row.
fn check_skipped(skipped: &[Unreadable], expected: &[&Corrupted<'_>], what: &str) {
    let got: BTreeSet<&ApprovalId> = skipped.iter().map(|s| &s.id).collect();
    let want: BTreeSet<&ApprovalId> = expected.iter().map(|(id, ..)| id).collect();
    assert_eq!(got, want, "{what}: {skipped:#?}");
    for corrupted in expected {
        let s = skipped.iter().find(|s| s.id == corrupted.0).unwrap();
        assert!(s.problem.starts_with(&named(corrupted)), "{what}: {}", s.problem);
    }
}

on_both! {
/// One request whose row cannot be read (JSON that does not parse, a time that does not read,
/// on SQLite a cell holding bytes; or its task's row) hides no other: a listing and the
/// pending reload show every readable request and name each unreadable one; the expiry pass
/// expires every readable overdue request, names the unreadable ones it had to judge and
/// leaves them pending (again on the next pass); reading one alone is still the corrupt-row
/// error naming it. Nothing panics.
fn an_unreadable_request_is_skipped_and_named_by_listings_and_the_expiry_pass(t) {
    let clock = clock();
    let db = open_at(t, &clock);
    let approvals = Approvals::new(db.clone());
    let ar = "approval_requests";
    let c = |set, names, decided, listed, sqlite_only| Corrupt {
        set,
        task: false,
        names,
        decided,
        listed,
        sqlite_only,
    };
    let corruptions = [
        c("payload = '{\"a\":'", (ar, "payload"), false, false, false),
        c("payload = ''", (ar, "payload"), false, false, false),
        c("payload = 'nul'", (ar, "payload"), false, false, false),
        c("requested_at = 'yesterday'", (ar, "requested_at"), false, false, false),
        c("deadline = 'soon'", (ar, "deadline"), false, false, false),
        c("deadline = '2026-02-30 10:00:00.000'", (ar, "deadline"), false, false, false),
        c("decided_at = 'never'", (ar, "decided_at"), true, false, false),
        c("payload = X'7b7d'", (ar, "payload"), false, false, true),
        c("kind = X'00ff'", (ar, "kind"), false, false, true),
        c("requested_by = X'6869'", (ar, "requested_by"), false, false, true),
        Corrupt {
            set: "context = '[1'",
            task: true,
            names: ("workflow_states", "context"),
            decided: false,
            listed: true,
            sqlite_only: false,
        },
        // A cell of another kind in the task's row, as in the request's.
        Corrupt {
            set: "context = CAST(context AS BLOB)",
            task: true,
            names: ("workflow_states", "context"),
            decided: false,
            listed: true,
            sqlite_only: true,
        },
    ];
    let hour = start() + TimeDelta::hours(1);
    let mut clean_due = BTreeSet::new();
    for (i, deadline) in [Some(hour), Some(hour), Some(start() + TimeDelta::days(1)), None]
        .into_iter()
        .enumerate()
    {
        let task = format!("clean-{i}");
        waiting_for_review(&db, &task);
        let id = approvals.request(&request(&task, deadline)).unwrap();
        if deadline == Some(hour) {
            clean_due.insert(id);
        }
    }
    let mut corrupted: Vec<Corrupted<'_>> = Vec::new();
    for (i, c) in corruptions.iter().enumerate() {
        if c.sqlite_only && t.backend() == Backend::Postgres {
            continue;
        }
        let task = format!("corrupt-{i}");
        waiting_for_review(&db, &task);
        let id = approvals.request(&request(&task, Some(hour))).unwrap();
        if c.decided {
            approvals.approve(&id, "alice", None).unwrap();
        }
        let sql = if c.task {
            format!("UPDATE workflow_states SET {} WHERE task_id = '{task}'", c.set)
        } else {
            format!("UPDATE approval_requests SET {} WHERE id = '{id}'", c.set)
        };
        crate::audit::around(t, &sql).unwrap();
        corrupted.push((id, task, c));
    }
    clock.advance(TimeDelta::hours(2));

    let unlisted: Vec<_> = corrupted.iter().filter(|(.., c)| !c.listed).collect();
    let listing = approvals.list(&ApprovalFilter::default()).unwrap();
    check_skipped(&listing.unreadable, &unlisted, "list");
    let listed: BTreeSet<&ApprovalId> = listing.approvals.iter().map(|a| &a.id).collect();
    assert_eq!(listed.len(), 4 + corrupted.len() - unlisted.len(), "every readable one listed");
    let pending = approvals.pending().unwrap();
    let waiting: Vec<_> = unlisted.iter().copied().filter(|(.., c)| !c.decided).collect();
    check_skipped(&pending.unreadable, &waiting, "pending");
    assert_eq!(pending.approvals.len(), 4 + corrupted.iter().filter(|(.., c)| c.listed).count());

    // The expiry pass: every readable overdue request expires, every unreadable one it had to
    // judge is named and left pending, on this pass and the next.
    let judged: Vec<_> = corrupted.iter().filter(|(.., c)| !c.decided).collect();
    for pass in 0..2 {
        let report = approvals.expire_due(db.now()).unwrap();
        let expired: BTreeSet<ApprovalId> = report.expired.iter().cloned().collect();
        let expected = if pass == 0 { clean_due.clone() } else { BTreeSet::new() };
        assert_eq!(expired, expected, "pass {pass}");
        check_skipped(&report.unreadable, &judged, "expire");
    }
    for i in 0..4 {
        let expected =
            if i < 2 { WorkflowState::Rejected } else { WorkflowState::AwaitingApproval };
        assert_eq!(load(&db, &format!("clean-{i}")).state, expected);
    }
    let mut raw = Driver::of(t);
    for corrupt in &corrupted {
        let (id, _, c) = corrupt;
        let status = raw.query(
            "SELECT status FROM approval_requests WHERE id = ?1",
            &[Raw::text(id.as_str())],
        );
        let expected = if c.decided { "approved" } else { "pending" };
        assert_eq!(status[0][0].as_deref(), Some(expected), "{}", c.set);
        if !c.listed {
            let err = approvals.get(id).unwrap_err();
            assert!(err.to_string().starts_with(&named(corrupt)), "{err}");
        }
    }
}
}
