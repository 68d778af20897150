//! Transition rules as data.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::context::StateContext;
use crate::error::{Error, Result};
use crate::names::{Event, WorkflowState};

/// Which states a rule applies from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromStates {
    /// Every state the table does not close.
    AnyOpen,
    /// These states.
    States(Vec<WorkflowState>),
}

impl FromStates {
    fn contains(&self, state: &WorkflowState) -> bool {
        match self {
            Self::AnyOpen => true,
            Self::States(states) => states.contains(state),
        }
    }
}

/// Where a rule leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// This state.
    State(WorkflowState),
    /// The state of the checkpoint being restored.
    CheckpointState,
}

/// A named predicate over the context that must hold for a rule to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// Agents are queued, or the last output suggests a next agent.
    AgentsAvailable,
    /// The last output is neither complete nor needs approval.
    RouteOnward,
    /// The last output needs approval.
    OutputNeedsApproval,
    /// The last output is complete.
    OutputComplete,
    /// The current agent is the tester.
    CurrentAgentIsTester,
    /// `retry_count < max_retries`.
    RetriesRemain,
    /// `retry_count >= max_retries`.
    RetriesExhausted,
    /// The agent queue is empty.
    AgentQueueEmpty,
}

impl Guard {
    /// The guard's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentsAvailable => "agents_available",
            Self::RouteOnward => "route_onward",
            Self::OutputNeedsApproval => "output_needs_approval",
            Self::OutputComplete => "output_complete",
            Self::CurrentAgentIsTester => "current_agent_is_tester",
            Self::RetriesRemain => "retries_remain",
            Self::RetriesExhausted => "retries_exhausted",
            Self::AgentQueueEmpty => "agent_queue_empty",
        }
    }

    /// Whether the guard holds for this context.
    pub fn holds(self, ctx: &StateContext) -> bool {
        let hints = ctx.last_output().map(|o| &o.routing_hints);
        match self {
            Self::AgentsAvailable => {
                !ctx.agent_queue.is_empty() || hints.is_some_and(|h| !h.suggest_next.is_empty())
            }
            Self::RouteOnward => !hints.is_some_and(|h| h.is_complete || h.needs_approval),
            Self::OutputNeedsApproval => hints.is_some_and(|h| h.needs_approval),
            Self::OutputComplete => hints.is_some_and(|h| h.is_complete),
            Self::CurrentAgentIsTester => ctx.current_agent.as_deref() == Some("tester"),
            Self::RetriesRemain => ctx.retry_count < ctx.max_retries,
            Self::RetriesExhausted => ctx.retry_count >= ctx.max_retries,
            Self::AgentQueueEmpty => ctx.agent_queue.is_empty(),
        }
    }
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the table: in one of `from`, `event` leads to `to` if `guard` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub from: FromStates,
    pub event: Event,
    pub to: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
}

/// The transition rules of a workflow, and the states that accept no event at all.
///
/// Reading one (serde) runs [`Self::check`]: a table that breaks a rule is a deserialisation
/// error naming the rule, never a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedTable")]
pub struct TransitionTable {
    rules: Vec<Rule>,
    closed: BTreeSet<WorkflowState>,
}

/// A transition table as written, before [`TransitionTable::check`].
#[derive(Deserialize)]
struct UncheckedTable {
    rules: Vec<Rule>,
    closed: BTreeSet<WorkflowState>,
}

impl TryFrom<UncheckedTable> for TransitionTable {
    type Error = Error;

    fn try_from(table: UncheckedTable) -> Result<Self> {
        Self::new(table.rules, table.closed)
    }
}

impl TransitionTable {
    /// A table from rules; `closed` states accept no event. Checked with [`Self::check`].
    pub fn new(rules: Vec<Rule>, closed: impl IntoIterator<Item = WorkflowState>) -> Result<Self> {
        let table = Self { rules, closed: closed.into_iter().collect() };
        table.check()?;
        Ok(table)
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The states that accept no event.
    pub fn closed(&self) -> impl Iterator<Item = &WorkflowState> {
        self.closed.iter()
    }

    /// Whether `state` accepts no event.
    pub fn is_closed(&self, state: &WorkflowState) -> bool {
        self.closed.contains(state)
    }

    /// Finds the rule that applies `event` in `state` with this context.
    pub fn find(&self, state: &WorkflowState, event: &Event, ctx: &StateContext) -> Result<&Rule> {
        let not_allowed = || Error::NotAllowed { state: state.clone(), event: event.clone() };
        if self.is_closed(state) {
            return Err(not_allowed());
        }
        let mut refused_by = None;
        for rule in self.rules.iter().filter(|r| &r.event == event && r.from.contains(state)) {
            match rule.guard {
                Some(guard) if !guard.holds(ctx) => {
                    refused_by.get_or_insert(guard);
                }
                _ => return Ok(rule),
            }
        }
        Err(match refused_by {
            Some(guard) => Error::GuardFailed { state: state.clone(), event: event.clone(), guard },
            None => not_allowed(),
        })
    }

    /// Checks the table: no rule may start from a closed state, nor lead from RESTORE-less
    /// rules to nowhere, and no two unguarded rules may compete for the same (state, event).
    pub fn check(&self) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidTable(why));
        for (i, rule) in self.rules.iter().enumerate() {
            if let FromStates::States(states) = &rule.from {
                if states.is_empty() {
                    return invalid(format!("rule {i} ({}) starts from no state", rule.event));
                }
                if let Some(closed) = states.iter().find(|s| self.closed.contains(s)) {
                    return invalid(format!(
                        "rule {i} ({}) starts from closed state {closed}",
                        rule.event
                    ));
                }
            }
            if rule.guard.is_some() {
                continue;
            }
            for (j, other) in self.rules.iter().enumerate().skip(i + 1) {
                // The cheap tests first: most pairs differ in their event.
                if other.guard.is_some() || other.event != rule.event {
                    continue;
                }
                let overlap = match (&rule.from, &other.from) {
                    (FromStates::AnyOpen, _) | (_, FromStates::AnyOpen) => true,
                    (FromStates::States(a), FromStates::States(b)) => {
                        a.iter().any(|s| b.contains(s))
                    }
                };
                if other.guard.is_none() && other.event == rule.event && overlap {
                    return invalid(format!(
                        "rules {i} and {j} both apply {} unguarded from the same state",
                        rule.event
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
fn rule(from: &[WorkflowState], event: Event, to: WorkflowState, guard: Option<Guard>) -> Rule {
    Rule { from: FromStates::States(from.to_vec()), event, to: Target::State(to), guard }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_passes_its_own_check() {
        assert_eq!(TransitionTable::default().check().ok(), Some(()));
    }

    #[test]
    fn check_refuses_rules_from_closed_states_and_competing_rules() {
        let from_closed = TransitionTable::new(
            vec![rule(&[WorkflowState::Completed], Event::Error, WorkflowState::Error, None)],
            [WorkflowState::Completed],
        );
        assert!(matches!(from_closed, Err(Error::InvalidTable(_))));
        let competing = TransitionTable::new(
            vec![
                rule(&[WorkflowState::Idle], Event::Start, WorkflowState::Analyzing, None),
                rule(&[WorkflowState::Idle], Event::Start, WorkflowState::Planning, None),
            ],
            [],
        );
        assert!(matches!(competing, Err(Error::InvalidTable(_))));
    }

    #[test]
    fn table_serialises_and_reads_back() {
        let table = TransitionTable::default();
        let json = serde_json::to_string(&table).unwrap_or_default();
        let back: TransitionTable = serde_json::from_str(&json).expect("table reads back");
        assert_eq!(back, table);
    }

    /// A table built around `check`, as a hand-edited file could hold it.
    fn unchecked(rules: Vec<Rule>, closed: BTreeSet<WorkflowState>) -> TransitionTable {
        TransitionTable { rules, closed }
    }

    /// One change to the default table that breaks an invariant.
    #[derive(Debug, Clone)]
    enum Breakage {
        /// Rule `i` also starts from closed state `c`.
        FromClosed(usize, usize),
        /// Rule `i` starts from no state.
        FromNothing(usize),
        /// An unguarded copy of rule `i`, leading elsewhere, is added at position `at`.
        Competing(usize, usize),
        /// A state some rule starts from is closed.
        CloseUsedState(usize),
    }

    fn breakage() -> impl proptest::strategy::Strategy<Value = Breakage> {
        use proptest::prelude::*;
        let n = TransitionTable::default().rules.len();
        prop_oneof![
            (0..n, 0..2usize).prop_map(|(i, c)| Breakage::FromClosed(i, c)),
            (0..n).prop_map(Breakage::FromNothing),
            (0..n, 0..=n).prop_map(|(i, at)| Breakage::Competing(i, at)),
            (0..n).prop_map(Breakage::CloseUsedState),
        ]
    }

    fn broken(breakage: &Breakage) -> TransitionTable {
        let TransitionTable { mut rules, mut closed } = TransitionTable::default();
        match *breakage {
            Breakage::FromClosed(i, c) => {
                let state = closed.iter().nth(c % closed.len()).cloned().unwrap();
                match &mut rules[i].from {
                    FromStates::States(states) => states.push(state),
                    any @ FromStates::AnyOpen => *any = FromStates::States(vec![state]),
                }
            }
            Breakage::FromNothing(i) => rules[i].from = FromStates::States(Vec::new()),
            Breakage::Competing(i, at) => {
                let mut copy = rules[i].clone();
                copy.guard = None;
                copy.to = Target::State(WorkflowState::Planning);
                rules[i].guard = None;
                rules.insert(at, copy);
            }
            Breakage::CloseUsedState(i) => {
                let state = match &rules[i].from {
                    FromStates::States(states) => states[0].clone(),
                    FromStates::AnyOpen => WorkflowState::Idle,
                };
                closed.insert(state);
            }
        }
        unchecked(rules, closed)
    }

    proptest::proptest! {
        /// Whatever invariant a stored table breaks, reading it is an error that says which rule
        /// and why (the message of `check`), never a table that loads silently.
        #[test]
        fn a_table_that_breaks_an_invariant_does_not_deserialise(breakage in breakage()) {
            let table = broken(&breakage);
            let why = table.check().expect_err("the breakage breaks an invariant").to_string();
            proptest::prop_assert!(why.contains("rule"), "{why}");
            let json = serde_json::to_string(&table).unwrap();
            let read = serde_json::from_str::<TransitionTable>(&json);
            let err = read.expect_err("an invalid table must not load").to_string();
            proptest::prop_assert!(err.contains(&why), "{err} does not say {why}");
        }
    }

    #[test]
    fn invalid_tables_from_text_name_the_rule_they_break() {
        let cases = [
            (
                r#"{"rules":[{"from":{"states":["COMPLETED"]},"event":"ERROR","to":{"state":"ERROR"}}],"closed":["COMPLETED"]}"#,
                "rule 0 (ERROR) starts from closed state COMPLETED",
            ),
            (
                r#"{"rules":[{"from":{"states":[]},"event":"START","to":{"state":"ANALYZING"}}],"closed":[]}"#,
                "rule 0 (START) starts from no state",
            ),
            (
                r#"{"rules":[{"from":"any_open","event":"ABORT","to":{"state":"ABORTED"}},{"from":{"states":["IDLE"]},"event":"ABORT","to":{"state":"ERROR"}}],"closed":[]}"#,
                "rules 0 and 1 both apply ABORT unguarded from the same state",
            ),
        ];
        for (json, why) in cases {
            let err = serde_json::from_str::<TransitionTable>(json).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid transition table: {why}")), "{err}");
        }
        let valid = r#"{"rules":[{"from":{"states":["IDLE"]},"event":"START","to":{"state":"ANALYZING"}}],"closed":["COMPLETED"]}"#;
        assert!(serde_json::from_str::<TransitionTable>(valid).is_ok());
    }

    #[test]
    fn default_table_snapshot() {
        insta::assert_json_snapshot!(TransitionTable::default());
    }
}
