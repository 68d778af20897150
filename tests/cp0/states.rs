//! Rust twins of aigentflow step 03's state-machine scenarios, on the default graph.
//!
//! Each scenario runs on both backends (`on_both!`): the machines it drives are saved through
//! the state store and loaded back through a second handle, as a restarted process would, and
//! must come back the same (state, history, context, checkpoints, what events they allow).

use std::sync::{Arc, Mutex};

use aigentflow::persistence::SqliteStateStore;
use aigentflow::states::{
    Event, InMemoryStateStore, MachineEvent, PersistedState, StateContext, StateMachine,
    StateStore, TaskId, WorkflowState,
};

use crate::support::*;

fn new_machine() -> StateMachine {
    named_machine("task-1")
}

fn named_machine(task: &str) -> StateMachine {
    StateMachine::new(StateContext::new("project-1".into(), task.into(), "Build a login page"))
}

/// Saves `m` as it is, loads it back through another handle on the same database and checks it
/// is the same machine; returns the machine resumed from what was loaded.
fn kept(t: &TestDb, m: &StateMachine) -> StateMachine {
    SqliteStateStore::new(t.db().clone()).save_state(m.persisted()).unwrap();
    let loaded = SqliteStateStore::new(t.reopen())
        .load_state(&m.persisted().task_id)
        .unwrap()
        .unwrap_or_else(|| panic!("task {} was not stored", m.persisted().task_id));
    assert_eq!(&loaded, m.persisted());
    let resumed = StateMachine::from_persisted(loaded);
    assert_eq!(resumed.state(), m.state());
    resumed
}

/// [`kept`], and the resumed machine allows exactly what the original allows.
fn kept_on_the_default_graph(t: &TestDb, m: &StateMachine) -> StateMachine {
    let resumed = kept(t, m);
    assert_eq!(resumed.valid_events(), m.valid_events(), "{}", m.state());
    assert_eq!(
        (resumed.is_terminal(), resumed.is_awaiting_input()),
        (m.is_terminal(), m.is_awaiting_input())
    );
    resumed
}

/// Drives a new machine to AGENT_COMPLETE with the given agent's output hints.
fn at_agent_complete(
    task: &str,
    agent: &str,
    needs_approval: bool,
    complete: bool,
) -> StateMachine {
    let mut m = named_machine(task);
    m.apply(Event::Start, None).unwrap();
    m.apply(Event::AnalysisComplete, None).unwrap();
    m.context_mut().agent_queue.push(agent.into());
    m.apply(Event::SpawnAgent, None).unwrap();
    let ctx = m.context_mut();
    ctx.agent_queue.clear();
    ctx.current_agent = Some(agent.into());
    let out = ctx.agent_outputs.entry(agent.into()).or_default();
    out.routing_hints.needs_approval = needs_approval;
    out.routing_hints.is_complete = complete;
    m.apply(Event::AgentDone, None).unwrap();
    assert_eq!(m.state(), &WorkflowState::AgentComplete);
    m
}

fn at_tests_fail(task: &str) -> StateMachine {
    let mut m = at_agent_complete(task, "tester", false, false);
    m.apply(Event::EnterTestPhase, None).unwrap();
    m.apply(Event::TestsFailed, None).unwrap();
    m
}

on_both! {
fn new_machine_is_idle_with_no_history(t) {
    let m = new_machine();
    assert_eq!(m.state(), &WorkflowState::Idle);
    assert!(m.history().is_empty());
    assert!(kept_on_the_default_graph(t, &m).history().is_empty());
}
}

on_both! {
fn start_from_idle_records_one_transition(t) {
    let mut m = new_machine();
    let tr = m.apply(Event::Start, None).unwrap();
    assert_eq!(m.state(), &WorkflowState::Analyzing);
    assert_eq!(m.history().len(), 1);
    assert_eq!(
        (&tr.from, &tr.to, &tr.event),
        (&WorkflowState::Idle, &WorkflowState::Analyzing, &Event::Start)
    );
    assert_eq!(&m.history()[0], &tr);
    assert_eq!(kept_on_the_default_graph(t, &m).history(), [tr]);
}
}

on_both! {
fn event_not_in_the_table_is_rejected_and_state_unchanged(t) {
    let mut m = new_machine();
    let err = m.apply(Event::Approve, None).unwrap_err();
    assert_eq!(err.to_string(), "event APPROVE is not allowed in state IDLE");
    assert_eq!(m.state(), &WorkflowState::Idle);
    assert!(m.history().is_empty());
    let mut resumed = kept_on_the_default_graph(t, &m);
    let err = resumed.apply(Event::Approve, None).unwrap_err();
    assert_eq!(err.to_string(), "event APPROVE is not allowed in state IDLE");
}
}

on_both! {
fn approval_approve_and_reject_then_continue(t) {
    for (decision, decided) in [
        (Event::Approve, WorkflowState::Approved),
        (Event::Reject, WorkflowState::Rejected),
        (Event::ApprovalTimeout, WorkflowState::Rejected),
    ] {
        let mut m = at_agent_complete(&format!("task-{decision}"), "reviewer", true, false);
        m.apply(Event::NeedsApproval, None).unwrap();
        assert_eq!(m.state(), &WorkflowState::AwaitingApproval);
        assert!(m.is_awaiting_input());
        // A restarted process finds the task waiting, and the decision goes on from there.
        let mut m = kept_on_the_default_graph(t, &m);
        assert!(m.is_awaiting_input());
        m.apply(decision, None).unwrap();
        assert_eq!(m.state(), &decided);
        m.apply(Event::Continue, None).unwrap();
        assert_eq!(m.state(), &WorkflowState::Orchestrating);
        kept_on_the_default_graph(t, &m);
    }
}
}

on_both! {
fn retry_limit_allows_fix_while_retries_remain_and_escalates_at_the_limit(t) {
    let mut m = at_tests_fail("task-1");
    assert!(!m.can_apply(&Event::MaxRetriesExceeded));
    for round in 1..=3 {
        assert!(m.can_apply(&Event::StartFix), "retry {round} should be allowed");
        m.apply(Event::StartFix, None).unwrap();
        m.increment_retry();
        m.apply(Event::FixComplete, None).unwrap();
        m.apply(Event::TestsFailed, None).unwrap();
        // The retry count is stored: a resumed machine has as many retries left.
        m = kept_on_the_default_graph(t, &m);
    }
    assert_eq!(m.context().retry_count, 3);
    let err = m.apply(Event::StartFix, None).unwrap_err();
    assert!(err.to_string().contains("retries_remain"), "{err}");
    assert_eq!(m.state(), &WorkflowState::TestsFail);
    m.apply(Event::MaxRetriesExceeded, None).unwrap();
    assert_eq!(m.state(), &WorkflowState::Escalated);
    assert!(m.is_terminal() && m.is_awaiting_input());
    m.reset_retries();
    assert_eq!(m.context().retry_count, 0);
    assert_eq!(kept_on_the_default_graph(t, &m).context().retry_count, 0);
}
}

on_both! {
fn checkpoint_records_current_state_and_artifacts(t) {
    let mut m = new_machine();
    m.apply(Event::Start, None).unwrap();
    let cp = m.create_checkpoint(vec!["src/login.rs".into(), "docs/design.md".into()]);
    assert_eq!(cp.state, WorkflowState::Analyzing);
    assert_eq!(cp.artifacts, ["src/login.rs", "docs/design.md"]);
    assert_eq!(cp.context["prompt"], "Build a login page");
    assert_eq!(m.context().checkpoints, std::slice::from_ref(&cp));
    assert_eq!(kept_on_the_default_graph(t, &m).context().checkpoints, [cp]);
}
}

on_both! {
fn error_then_recovery_restores_the_checkpoint_state(t) {
    let mut m = at_agent_complete("task-1", "coder", false, false);
    m.apply(Event::RouteNext, None).unwrap();
    m.context_mut().metadata.insert("phase".into(), "before".into());
    let cp = m.create_checkpoint(vec!["src/lib.rs".into()]);
    m.context_mut().metadata.insert("phase".into(), "after".into());
    m.apply(Event::Error, Some(serde_json::json!({"error": "agent crashed"}))).unwrap();
    // The process dies here: another one loads the task and recovers it.
    let mut m = kept_on_the_default_graph(t, &m);
    m.apply(Event::StartRecovery, None).unwrap();
    let tr = m.restore_checkpoint(&cp.id).unwrap();
    assert_eq!(tr.event, Event::RestoreCheckpoint);
    assert_eq!((&tr.from, &tr.to), (&WorkflowState::Recovering, &WorkflowState::Orchestrating));
    assert_eq!(m.state(), &WorkflowState::Orchestrating);
    assert_eq!(m.context().metadata["phase"], "before");
    assert_eq!(m.context().checkpoints.len(), 1);
    kept_on_the_default_graph(t, &m);
}
}

on_both! {
fn error_and_abort_work_from_every_non_terminal_state(t) {
    for state in WorkflowState::KNOWN {
        for (event, target) in
            [(Event::Error, WorkflowState::Error), (Event::Abort, WorkflowState::Aborted)]
        {
            let task = format!("t-{state}-{event}");
            let mut m = StateMachine::from_persisted(PersistedState {
                task_id: task.as_str().into(),
                project_id: "p".into(),
                state: state.clone(),
                context: StateContext::new("p".into(), task.as_str().into(), ""),
                history: vec![],
            });
            let closed = matches!(state, WorkflowState::Completed | WorkflowState::Aborted);
            match m.apply(event.clone(), None) {
                Ok(tr) => {
                    assert!(!closed, "{event} must be refused in closed {state}");
                    assert_eq!(tr.to, target);
                }
                Err(e) => {
                    assert!(closed, "{event} refused in open {state}: {e}");
                    assert_eq!(m.state(), state);
                }
            }
            kept_on_the_default_graph(t, &m);
        }
    }
}
}

on_both! {
fn every_transition_is_persisted_and_a_new_machine_loads_it(t) {
    // The in-memory reference store, and the database's through a new handle after each save.
    let memory = InMemoryStateStore::default();
    let database = SqliteStateStore::new(t.db().clone());
    let mut m = new_machine();
    for event in [Event::Start, Event::AnalysisComplete] {
        m.apply(event, None).unwrap();
        memory.save_state(m.persisted()).unwrap();
        database.save_state(m.persisted()).unwrap();
        let saved = [
            memory.load_state(&TaskId::new("task-1")).unwrap().unwrap(),
            SqliteStateStore::new(t.reopen()).load_state(&TaskId::new("task-1")).unwrap().unwrap(),
        ];
        for saved in saved {
            assert_eq!(&saved.state, m.state());
            assert_eq!(saved.context.prompt, "Build a login page");
        }
    }
    let loaded = [
        memory.load_state(&TaskId::new("task-1")).unwrap().unwrap(),
        SqliteStateStore::new(t.reopen()).load_state(&TaskId::new("task-1")).unwrap().unwrap(),
    ];
    for loaded in loaded {
        let resumed = StateMachine::from_persisted(loaded);
        assert_eq!(resumed.state(), &WorkflowState::Orchestrating);
        assert_eq!(resumed.history(), m.history());
    }
}
}

on_both! {
fn abort_is_terminal_and_closed(t) {
    let mut m = new_machine();
    m.apply(Event::Start, None).unwrap();
    assert!(!m.is_terminal());
    m.apply(Event::Abort, None).unwrap();
    for m in [kept_on_the_default_graph(t, &m), m] {
        let mut m = m;
        assert!(m.is_terminal());
        assert!(!m.is_awaiting_input());
        assert!(m.valid_events().is_empty());
        assert!(m.apply(Event::Error, None).is_err());
    }
}
}

on_both! {
fn completed_accepts_no_event_not_even_error(t) {
    let mut m = at_agent_complete("task-1", "coder", false, true);
    m.apply(Event::AllComplete, None).unwrap();
    m.apply(Event::Finalize, None).unwrap();
    assert_eq!(m.state(), &WorkflowState::Completed);
    for m in [kept_on_the_default_graph(t, &m), m] {
        let mut m = m;
        assert!(m.is_terminal());
        let err = m.apply(Event::Error, None).unwrap_err();
        assert_eq!(err.to_string(), "event ERROR is not allowed in state COMPLETED");
    }
}
}

on_both! {
fn observers_receive_each_transition_state_and_checkpoint(t) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let observe = |m: &mut StateMachine| {
        let sink = Arc::clone(&seen);
        m.observe(move |event| {
            let line = match event {
                MachineEvent::Transition(t) => {
                    format!("transition {} {}->{}", t.event, t.from, t.to)
                }
                MachineEvent::StateEntered(s) => format!("entered {s}"),
                MachineEvent::CheckpointCreated(c) => format!("checkpoint {}", c.state),
            };
            sink.lock().unwrap().push(line);
        });
    };
    let mut m = new_machine();
    observe(&mut m);
    m.apply(Event::Start, None).unwrap();
    m.create_checkpoint(vec![]);
    let _ = m.apply(Event::Approve, None);
    // A machine resumed from the store tells its own observers as the first one did.
    let mut m = kept_on_the_default_graph(t, &m);
    observe(&mut m);
    m.apply(Event::AnalysisComplete, None).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "transition START IDLE->ANALYZING",
            "entered ANALYZING",
            "checkpoint ANALYZING",
            "transition ANALYSIS_COMPLETE ANALYZING->ORCHESTRATING",
            "entered ORCHESTRATING",
        ]
    );
    kept_on_the_default_graph(t, &m);
}
}

on_both! {
fn legacy_phase_states_load_and_can_be_driven_by_a_table_that_uses_them(t) {
    use aigentflow::states::{FromStates, Rule, Target, TransitionTable};
    let table = Arc::new(
        TransitionTable::new(
            vec![Rule {
                from: FromStates::States(vec![WorkflowState::Designing]),
                event: Event::parse("DESIGN_APPROVED"),
                to: Target::State(WorkflowState::Building),
                guard: None,
            }],
            [],
        )
        .unwrap(),
    );
    let stored = PersistedState {
        task_id: "t".into(),
        project_id: "p".into(),
        state: WorkflowState::parse("DESIGNING"),
        context: StateContext::new("p".into(), "t".into(), ""),
        history: vec![],
    };
    SqliteStateStore::new(t.db().clone()).save_state(&stored).unwrap();
    let loaded = SqliteStateStore::new(t.reopen()).load_state(&"t".into()).unwrap().unwrap();
    assert_eq!(loaded, stored);
    let mut m = StateMachine::from_persisted(loaded).with_table(Arc::clone(&table));
    m.apply(Event::parse("DESIGN_APPROVED"), None).unwrap();
    assert_eq!(m.state().as_str(), "BUILDING");
    let resumed = kept(t, &m).with_table(table);
    assert_eq!(resumed.state().as_str(), "BUILDING");
    assert_eq!(resumed.history(), m.history());
}
}
