//! Rust twins of aigentflow step 03's state-machine scenarios, on the default graph.

use std::sync::{Arc, Mutex};

use aigentflow::states::{
    Event, InMemoryStateStore, MachineEvent, StateContext, StateMachine, StateStore, TaskId,
    WorkflowState,
};

fn new_machine() -> StateMachine {
    StateMachine::new(StateContext::new("project-1".into(), "task-1".into(), "Build a login page"))
}

/// Drives a new machine to AGENT_COMPLETE with the given agent's output hints.
fn at_agent_complete(agent: &str, needs_approval: bool, complete: bool) -> StateMachine {
    let mut m = new_machine();
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

fn at_tests_fail() -> StateMachine {
    let mut m = at_agent_complete("tester", false, false);
    m.apply(Event::EnterTestPhase, None).unwrap();
    m.apply(Event::TestsFailed, None).unwrap();
    m
}

#[test]
fn new_machine_is_idle_with_no_history() {
    let m = new_machine();
    assert_eq!(m.state(), &WorkflowState::Idle);
    assert!(m.history().is_empty());
}

#[test]
fn start_from_idle_records_one_transition() {
    let mut m = new_machine();
    let t = m.apply(Event::Start, None).unwrap();
    assert_eq!(m.state(), &WorkflowState::Analyzing);
    assert_eq!(m.history().len(), 1);
    assert_eq!(
        (&t.from, &t.to, &t.event),
        (&WorkflowState::Idle, &WorkflowState::Analyzing, &Event::Start)
    );
    assert_eq!(&m.history()[0], &t);
}

#[test]
fn event_not_in_the_table_is_rejected_and_state_unchanged() {
    let mut m = new_machine();
    let err = m.apply(Event::Approve, None).unwrap_err();
    assert_eq!(err.to_string(), "event APPROVE is not allowed in state IDLE");
    assert_eq!(m.state(), &WorkflowState::Idle);
    assert!(m.history().is_empty());
}

#[test]
fn approval_approve_and_reject_then_continue() {
    for (decision, decided) in
        [(Event::Approve, WorkflowState::Approved), (Event::Reject, WorkflowState::Rejected)]
    {
        let mut m = at_agent_complete("reviewer", true, false);
        m.apply(Event::NeedsApproval, None).unwrap();
        assert_eq!(m.state(), &WorkflowState::AwaitingApproval);
        assert!(m.is_awaiting_input());
        m.apply(decision, None).unwrap();
        assert_eq!(m.state(), &decided);
        m.apply(Event::Continue, None).unwrap();
        assert_eq!(m.state(), &WorkflowState::Orchestrating);
    }
}

#[test]
fn retry_limit_allows_fix_while_retries_remain_and_escalates_at_the_limit() {
    let mut m = at_tests_fail();
    assert!(!m.can_apply(&Event::MaxRetriesExceeded));
    for round in 1..=3 {
        assert!(m.can_apply(&Event::StartFix), "retry {round} should be allowed");
        m.apply(Event::StartFix, None).unwrap();
        m.increment_retry();
        m.apply(Event::FixComplete, None).unwrap();
        m.apply(Event::TestsFailed, None).unwrap();
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
}

#[test]
fn checkpoint_records_current_state_and_artifacts() {
    let mut m = new_machine();
    m.apply(Event::Start, None).unwrap();
    let cp = m.create_checkpoint(vec!["src/login.rs".into(), "docs/design.md".into()]);
    assert_eq!(cp.state, WorkflowState::Analyzing);
    assert_eq!(cp.artifacts, ["src/login.rs", "docs/design.md"]);
    assert_eq!(cp.context["prompt"], "Build a login page");
    assert_eq!(m.context().checkpoints, [cp]);
}

#[test]
fn error_then_recovery_restores_the_checkpoint_state() {
    let mut m = at_agent_complete("coder", false, false);
    m.apply(Event::RouteNext, None).unwrap();
    m.context_mut().metadata.insert("phase".into(), "before".into());
    let cp = m.create_checkpoint(vec!["src/lib.rs".into()]);
    m.context_mut().metadata.insert("phase".into(), "after".into());
    m.apply(Event::Error, Some(serde_json::json!({"error": "agent crashed"}))).unwrap();
    m.apply(Event::StartRecovery, None).unwrap();
    let t = m.restore_checkpoint(&cp.id).unwrap();
    assert_eq!(t.event, Event::RestoreCheckpoint);
    assert_eq!((&t.from, &t.to), (&WorkflowState::Recovering, &WorkflowState::Orchestrating));
    assert_eq!(m.state(), &WorkflowState::Orchestrating);
    assert_eq!(m.context().metadata["phase"], "before");
    assert_eq!(m.context().checkpoints.len(), 1);
}

#[test]
fn error_and_abort_work_from_every_non_terminal_state() {
    for state in WorkflowState::KNOWN {
        for (event, target) in
            [(Event::Error, WorkflowState::Error), (Event::Abort, WorkflowState::Aborted)]
        {
            let mut m = StateMachine::from_persisted(aigentflow::states::PersistedState {
                task_id: "t".into(),
                project_id: "p".into(),
                state: state.clone(),
                context: StateContext::new("p".into(), "t".into(), ""),
                history: vec![],
            });
            let closed = matches!(state, WorkflowState::Completed | WorkflowState::Aborted);
            match m.apply(event.clone(), None) {
                Ok(t) => {
                    assert!(!closed, "{event} must be refused in closed {state}");
                    assert_eq!(t.to, target);
                }
                Err(e) => {
                    assert!(closed, "{event} refused in open {state}: {e}");
                    assert_eq!(m.state(), state);
                }
            }
        }
    }
}

#[test]
fn every_transition_is_persisted_and_a_new_machine_loads_it() {
    let store = InMemoryStateStore::default();
    let mut m = new_machine();
    for event in [Event::Start, Event::AnalysisComplete] {
        m.apply(event, None).unwrap();
        store.save_state(m.persisted()).unwrap();
        let saved = store.load_state(&TaskId::new("task-1")).unwrap().unwrap();
        assert_eq!(&saved.state, m.state());
        assert_eq!(saved.context.prompt, "Build a login page");
    }
    let loaded = store.load_state(&TaskId::new("task-1")).unwrap().unwrap();
    let resumed = StateMachine::from_persisted(loaded);
    assert_eq!(resumed.state(), &WorkflowState::Orchestrating);
    assert_eq!(resumed.history(), m.history());
}

#[test]
fn abort_is_terminal_and_closed() {
    let mut m = new_machine();
    m.apply(Event::Start, None).unwrap();
    assert!(!m.is_terminal());
    m.apply(Event::Abort, None).unwrap();
    assert!(m.is_terminal());
    assert!(!m.is_awaiting_input());
    assert!(m.valid_events().is_empty());
    assert!(m.apply(Event::Error, None).is_err());
}

#[test]
fn completed_accepts_no_event_not_even_error() {
    let mut m = at_agent_complete("coder", false, true);
    m.apply(Event::AllComplete, None).unwrap();
    m.apply(Event::Finalize, None).unwrap();
    assert_eq!(m.state(), &WorkflowState::Completed);
    assert!(m.is_terminal());
    let err = m.apply(Event::Error, None).unwrap_err();
    assert_eq!(err.to_string(), "event ERROR is not allowed in state COMPLETED");
}

#[test]
fn observers_receive_each_transition_state_and_checkpoint() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut m = new_machine();
    let sink = Arc::clone(&seen);
    m.observe(move |event| {
        let line = match event {
            MachineEvent::Transition(t) => format!("transition {} {}->{}", t.event, t.from, t.to),
            MachineEvent::StateEntered(s) => format!("entered {s}"),
            MachineEvent::CheckpointCreated(c) => format!("checkpoint {}", c.state),
        };
        sink.lock().unwrap().push(line);
    });
    m.apply(Event::Start, None).unwrap();
    m.create_checkpoint(vec![]);
    let _ = m.apply(Event::Approve, None);
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
}

#[test]
fn legacy_phase_states_load_and_can_be_driven_by_a_table_that_uses_them() {
    use aigentflow::states::{FromStates, Rule, Target, TransitionTable};
    let table = TransitionTable::new(
        vec![Rule {
            from: FromStates::States(vec![WorkflowState::Designing]),
            event: Event::parse("DESIGN_APPROVED"),
            to: Target::State(WorkflowState::Building),
            guard: None,
        }],
        [],
    )
    .unwrap();
    let mut m = StateMachine::from_persisted(aigentflow::states::PersistedState {
        task_id: "t".into(),
        project_id: "p".into(),
        state: WorkflowState::parse("DESIGNING"),
        context: StateContext::new("p".into(), "t".into(), ""),
        history: vec![],
    })
    .with_table(Arc::new(table));
    m.apply(Event::parse("DESIGN_APPROVED"), None).unwrap();
    assert_eq!(m.state().as_str(), "BUILDING");
}
