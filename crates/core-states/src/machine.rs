//! One task driven through a [`TransitionTable`].

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::context::{Checkpoint, StateContext, StateTransition};
use crate::error::{Error, Result};
use crate::ids::CheckpointId;
use crate::names::{Event, WorkflowState};
use crate::store::PersistedState;
use crate::table::{Target, TransitionTable};
use crate::time::millis;

/// What observers of a [`StateMachine`] are told.
#[derive(Debug, Clone, Copy)]
pub enum MachineEvent<'a> {
    /// A transition was recorded.
    Transition(&'a StateTransition),
    /// The task entered this state (right after the transition that led there).
    StateEntered(&'a WorkflowState),
    /// A checkpoint was created.
    CheckpointCreated(&'a Checkpoint),
}

type Observer = Box<dyn FnMut(MachineEvent<'_>) + Send>;

/// The workflow state machine of one task: its state, context and recorded history.
///
/// Every change is also returned to the caller, so it can be persisted and audited.
pub struct StateMachine {
    table: Arc<TransitionTable>,
    record: PersistedState,
    clock: Arc<dyn Clock>,
    observers: Vec<Observer>,
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("record", &self.record)
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// A new task in IDLE with no history, on the default table and the system clock.
    pub fn new(context: StateContext) -> Self {
        Self::from_persisted(PersistedState {
            task_id: context.task_id.clone(),
            project_id: context.project_id.clone(),
            state: WorkflowState::Idle,
            context,
            history: Vec::new(),
        })
    }

    /// Resumes a task from what a store loaded.
    pub fn from_persisted(record: PersistedState) -> Self {
        Self {
            table: Arc::new(TransitionTable::default()),
            record,
            clock: Arc::new(SystemClock),
            observers: Vec::new(),
        }
    }

    /// Uses another transition table.
    pub fn with_table(mut self, table: Arc<TransitionTable>) -> Self {
        self.table = table;
        self
    }

    /// Uses another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Registers an observer of every transition, state entered and checkpoint created.
    pub fn observe(&mut self, observer: impl FnMut(MachineEvent<'_>) + Send + 'static) {
        self.observers.push(Box::new(observer));
    }

    /// The current state.
    pub fn state(&self) -> &WorkflowState {
        &self.record.state
    }

    /// The task's context.
    pub fn context(&self) -> &StateContext {
        &self.record.context
    }

    /// The task's context, to change (agents, outputs, metadata…).
    pub fn context_mut(&mut self) -> &mut StateContext {
        &mut self.record.context
    }

    /// Every recorded transition, oldest first.
    pub fn history(&self) -> &[StateTransition] {
        &self.record.history
    }

    /// The whole record, as a store saves it.
    pub fn persisted(&self) -> &PersistedState {
        &self.record
    }

    /// The table in use.
    pub fn table(&self) -> &TransitionTable {
        &self.table
    }

    /// The run loop stops: COMPLETED, ABORTED or ESCALATED.
    pub fn is_terminal(&self) -> bool {
        self.record.state.is_terminal()
    }

    /// A person must act: AWAITING_APPROVAL or ESCALATED.
    pub fn is_awaiting_input(&self) -> bool {
        self.record.state.is_awaiting_input()
    }

    /// Whether `event` would be accepted now.
    pub fn can_apply(&self, event: &Event) -> bool {
        self.resolve(event, None).is_ok()
    }

    /// The events accepted now, in table order.
    pub fn valid_events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::new();
        for rule in self.table.rules() {
            if !events.contains(&rule.event) && self.can_apply(&rule.event) {
                events.push(rule.event.clone());
            }
        }
        events
    }

    /// Applies `event`; on success the transition is recorded, observers are told, and it is returned.
    /// On error nothing changes.
    pub fn apply(&mut self, event: Event, metadata: Option<Value>) -> Result<StateTransition> {
        let to = self.resolve(&event, None)?;
        Ok(self.record_transition(to, event, metadata))
    }

    /// Restores a checkpoint (from RECOVERING in the default table): the task returns to the
    /// checkpoint's state, recorded as RESTORE_CHECKPOINT, and the checkpoint's partial context is
    /// merged back (its checkpoints list aside).
    pub fn restore_checkpoint(&mut self, checkpoint_id: &CheckpointId) -> Result<StateTransition> {
        let checkpoint = self
            .record
            .context
            .checkpoints
            .iter()
            .find(|c| &c.id == checkpoint_id)
            .cloned()
            .ok_or_else(|| Error::UnknownCheckpoint {
                task_id: self.record.task_id.clone(),
                checkpoint_id: checkpoint_id.clone(),
            })?;
        let to = self.resolve(&Event::RestoreCheckpoint, Some(&checkpoint))?;
        let restored = merge_context(&self.record.context, &checkpoint)?;
        self.record.context = restored;
        let metadata = serde_json::json!({ "checkpointId": checkpoint.id });
        Ok(self.record_transition(to, Event::RestoreCheckpoint, Some(metadata)))
    }

    /// Records a checkpoint of the current state with these artifacts (paths), and returns it.
    pub fn create_checkpoint(&mut self, artifacts: Vec<String>) -> Checkpoint {
        let context = match serde_json::to_value(self.record.context.without_checkpoints()) {
            Ok(Value::Object(mut map)) => {
                map.remove("checkpoints");
                map
            }
            _ => serde_json::Map::new(),
        };
        let checkpoint = Checkpoint {
            id: CheckpointId::random(),
            state: self.record.state.clone(),
            timestamp: millis(self.clock.now()),
            context,
            artifacts,
        };
        self.record.context.checkpoints.push(checkpoint.clone());
        self.notify(MachineEvent::CheckpointCreated(&checkpoint));
        checkpoint
    }

    /// Counts one more retry; returns the new count.
    pub fn increment_retry(&mut self) -> u32 {
        self.record.context.retry_count += 1;
        self.record.context.retry_count
    }

    /// Sets the retry count back to zero.
    pub fn reset_retries(&mut self) {
        self.record.context.retry_count = 0;
    }

    fn resolve(&self, event: &Event, checkpoint: Option<&Checkpoint>) -> Result<WorkflowState> {
        let rule = self.table.find(&self.record.state, event, &self.record.context)?;
        match &rule.to {
            Target::State(state) => Ok(state.clone()),
            Target::CheckpointState => checkpoint
                .or_else(|| self.record.context.checkpoints.last())
                .map(|c| c.state.clone())
                .ok_or_else(|| Error::NoCheckpoint { task_id: self.record.task_id.clone() }),
        }
    }

    fn record_transition(
        &mut self,
        to: WorkflowState,
        event: Event,
        metadata: Option<Value>,
    ) -> StateTransition {
        let transition = StateTransition {
            from: std::mem::replace(&mut self.record.state, to),
            to: self.record.state.clone(),
            event,
            timestamp: millis(self.clock.now()),
            metadata,
        };
        self.record.history.push(transition.clone());
        self.notify(MachineEvent::Transition(&transition));
        let entered = self.record.state.clone();
        self.notify(MachineEvent::StateEntered(&entered));
        transition
    }

    fn notify(&mut self, event: MachineEvent<'_>) {
        for observer in &mut self.observers {
            observer(event);
        }
    }
}

fn merge_context(current: &StateContext, checkpoint: &Checkpoint) -> Result<StateContext> {
    let bad = |source| Error::BadCheckpoint { checkpoint_id: checkpoint.id.clone(), source };
    let mut merged = match serde_json::to_value(current.without_checkpoints()).map_err(bad)? {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    for (key, value) in &checkpoint.context {
        if key != "checkpoints" {
            merged.insert(key.clone(), value.clone());
        }
    }
    let mut restored: StateContext = serde_json::from_value(Value::Object(merged)).map_err(bad)?;
    restored.checkpoints = current.checkpoints.clone();
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::context::AgentOutput;
    use chrono::{Duration, TimeZone, Utc};
    use proptest::prelude::*;

    fn machine_in(state: WorkflowState, ctx: StateContext) -> StateMachine {
        let clock = ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).single().unwrap_or_default(),
            Duration::milliseconds(250),
        );
        StateMachine::from_persisted(PersistedState {
            task_id: ctx.task_id.clone(),
            project_id: ctx.project_id.clone(),
            state,
            context: ctx,
            history: vec![],
        })
        .with_clock(Arc::new(clock))
    }

    /// Contexts under which every guard is tried both ways.
    fn contexts() -> Vec<StateContext> {
        let base = StateContext::new("p".into(), "t".into(), "prompt");
        let mut queued = base.clone();
        queued.agent_queue.push("coder".into());
        let with_output = |approve: bool, complete: bool, agent: &str| {
            let mut ctx = base.clone();
            ctx.current_agent = Some(agent.into());
            let mut out = AgentOutput::default();
            out.routing_hints.needs_approval = approve;
            out.routing_hints.is_complete = complete;
            ctx.agent_outputs.insert(agent.into(), out);
            ctx
        };
        let mut exhausted = base.clone();
        exhausted.retry_count = 3;
        vec![
            base.clone(),
            queued,
            with_output(true, false, "reviewer"),
            with_output(false, true, "coder"),
            with_output(false, false, "tester"),
            exhausted,
        ]
    }

    /// DESIGN.md's table, written out independently of `TransitionTable::default`.
    fn expected(state: &WorkflowState, event: &Event, ctx: &StateContext) -> Option<WorkflowState> {
        use Event as E;
        use WorkflowState as S;
        let hints = ctx.last_output().map(|o| o.routing_hints.clone()).unwrap_or_default();
        if matches!(state, S::Completed | S::Aborted) {
            return None;
        }
        Some(match (state, event) {
            (_, E::Error) => S::Error,
            (_, E::Abort) => S::Aborted,
            (S::Idle, E::Start) => S::Analyzing,
            (S::Analyzing, E::AnalysisComplete) => S::Orchestrating,
            (S::Orchestrating, E::SpawnAgent)
                if !ctx.agent_queue.is_empty() || !hints.suggest_next.is_empty() =>
            {
                S::AgentWorking
            }
            (S::Orchestrating, E::WorkflowComplete) if ctx.agent_queue.is_empty() => S::Completing,
            (S::AgentWorking, E::AgentDone) => S::AgentComplete,
            (S::AgentComplete, E::RouteNext) if !hints.is_complete && !hints.needs_approval => {
                S::Orchestrating
            }
            (S::AgentComplete, E::NeedsApproval) if hints.needs_approval => S::AwaitingApproval,
            (S::AgentComplete, E::AllComplete) if hints.is_complete => S::Completing,
            (S::AgentComplete, E::EnterTestPhase)
                if ctx.current_agent.as_deref() == Some("tester") =>
            {
                S::Testing
            }
            (S::AwaitingApproval, E::Approve) => S::Approved,
            (S::AwaitingApproval, E::Reject) => S::Rejected,
            (S::AwaitingApproval, E::ApprovalTimeout) => S::Rejected,
            (S::Approved | S::Rejected, E::Continue) => S::Orchestrating,
            (S::Testing, E::AllTestsPass) => S::TestsPass,
            (S::Testing, E::TestsFailed) => S::TestsFail,
            (S::TestsPass, E::TestsPassedContinue) => S::Orchestrating,
            (S::TestsFail, E::StartFix) if ctx.retry_count < ctx.max_retries => S::Fixing,
            (S::TestsFail, E::MaxRetriesExceeded) if ctx.retry_count >= ctx.max_retries => {
                S::Escalated
            }
            (S::Fixing, E::FixComplete) => S::Testing,
            (S::Completing, E::Finalize) => S::Completed,
            (S::Error, E::StartRecovery) => S::Recovering,
            _ => return None,
        })
    }

    #[test]
    fn every_state_event_pair_follows_the_design_table() {
        let mut checked = 0;
        for ctx in contexts() {
            for state in WorkflowState::KNOWN {
                for event in Event::KNOWN {
                    if *event == Event::RestoreCheckpoint {
                        continue; // needs a checkpoint; covered below
                    }
                    let mut machine = machine_in(state.clone(), ctx.clone());
                    let want = expected(state, event, &ctx);
                    assert_eq!(machine.can_apply(event), want.is_some(), "{state} {event}");
                    match (machine.apply(event.clone(), None), want) {
                        (Ok(t), Some(to)) => {
                            assert_eq!((&t.from, &t.to, &t.event), (state, &to, event));
                            assert_eq!(machine.state(), &to);
                            assert_eq!(machine.history().len(), 1);
                        }
                        (Err(e), None) => {
                            let msg = e.to_string();
                            assert!(
                                msg.contains(state.as_str()) && msg.contains(event.as_str()),
                                "{msg}"
                            );
                            assert_eq!(machine.state(), state, "a refused event changes nothing");
                            assert!(machine.history().is_empty());
                        }
                        (got, want) => panic!("{state} {event}: got {got:?}, want {want:?}"),
                    }
                    checked += 1;
                }
            }
        }
        // Every state, every event but RESTORE_CHECKPOINT, under every context.
        assert_eq!(checked, 6 * 23 * 23);
    }

    #[test]
    fn restore_only_from_recovering_and_only_with_a_checkpoint() {
        let ctx = StateContext::new("p".into(), "t".into(), "x");
        let mut machine = machine_in(WorkflowState::Recovering, ctx.clone());
        assert!(matches!(
            machine.apply(Event::RestoreCheckpoint, None),
            Err(Error::NoCheckpoint { .. })
        ));
        for state in WorkflowState::KNOWN.iter().filter(|s| **s != WorkflowState::Recovering) {
            let mut machine = machine_in(state.clone(), ctx.clone());
            let cp = machine.create_checkpoint(vec![]);
            assert!(machine.restore_checkpoint(&cp.id).is_err(), "{state}");
            assert_eq!(machine.state(), state);
        }
    }

    #[test]
    fn valid_events_lists_what_can_apply() {
        let machine = machine_in(WorkflowState::TestsFail, contexts()[0].clone());
        assert_eq!(machine.valid_events(), [Event::StartFix, Event::Error, Event::Abort]);
        let machine = machine_in(WorkflowState::Completed, contexts()[0].clone());
        assert!(machine.valid_events().is_empty());
    }

    #[test]
    fn transition_and_context_snapshots() {
        let mut machine = machine_in(WorkflowState::Idle, contexts()[1].clone());
        let start = machine.apply(Event::Start, Some(serde_json::json!({"agent": "orchestrator"})));
        insta::assert_json_snapshot!("transition", start.ok());
        machine.context_mut().metadata.insert("requestedBy".into(), "ci".into());
        let mut ctx = machine.context().clone();
        ctx.checkpoints.clear();
        insta::assert_json_snapshot!("context", ctx);
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop::sample::select(Event::KNOWN.to_vec())
    }

    #[derive(Debug, Clone)]
    enum Step {
        Apply(Event),
        Checkpoint,
        Restore(usize),
        Retry,
        Queue(bool),
        Output(bool, bool),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => arb_event().prop_map(Step::Apply),
            1 => Just(Step::Checkpoint),
            1 => (0usize..4).prop_map(Step::Restore),
            1 => Just(Step::Retry),
            1 => any::<bool>().prop_map(Step::Queue),
            1 => (any::<bool>(), any::<bool>()).prop_map(|(a, c)| Step::Output(a, c)),
        ]
    }

    proptest! {
        #[test]
        fn random_sequences_never_panic_and_history_folds_to_state(steps in prop::collection::vec(arb_step(), 0..120)) {
            let mut machine = machine_in(WorkflowState::Idle, contexts()[0].clone());
            for step in steps {
                let before = machine.state().clone();
                let len = machine.history().len();
                let result = match step {
                    Step::Apply(event) => machine.apply(event, None).map(Some),
                    Step::Checkpoint => { machine.create_checkpoint(vec!["a".into()]); Ok(None) }
                    Step::Restore(i) => {
                        let id = machine.context().checkpoints.get(i).map(|c| c.id.clone());
                        match id { Some(id) => machine.restore_checkpoint(&id).map(Some), None => Ok(None) }
                    }
                    Step::Retry => { machine.increment_retry(); Ok(None) }
                    Step::Queue(q) => {
                        if q { machine.context_mut().agent_queue.push("coder".into()) } else { machine.context_mut().agent_queue.clear() }
                        Ok(None)
                    }
                    Step::Output(a, c) => {
                        let ctx = machine.context_mut();
                        ctx.current_agent = Some("coder".into());
                        let out = ctx.agent_outputs.entry("coder".into()).or_default();
                        out.routing_hints.needs_approval = a;
                        out.routing_hints.is_complete = c;
                        Ok(None)
                    }
                };
                match result {
                    Ok(Some(t)) => {
                        prop_assert_eq!(&t.from, &before);
                        prop_assert_eq!(machine.history().len(), len + 1);
                    }
                    Ok(None) => prop_assert_eq!(machine.history().len(), len),
                    Err(_) => {
                        prop_assert_eq!(machine.state(), &before);
                        prop_assert_eq!(machine.history().len(), len);
                    }
                }
                let folded = machine.persisted().folded_state().cloned().unwrap_or(WorkflowState::Idle);
                prop_assert_eq!(&folded, machine.state());
                for pair in machine.history().windows(2) {
                    prop_assert_eq!(&pair[0].to, &pair[1].from);
                }
            }
        }
    }
}
