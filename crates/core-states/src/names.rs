//! States and events: enums whose stored text is one `as_str`/`FromStr` pair.
//!
//! Both are *open*: text written by another version (a legacy state such as `FAILED`, an event
//! such as `DESIGN_APPROVED`) loads as `Other` and shows with its own text. It is never mapped
//! silently to another variant and is never a reason for a load to fail.

/// Text outside the known names, kept as it was read. Built only by parsing, so it never holds
/// the text of a known variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnknownName(String);

impl UnknownName {
    /// Text outside a known set, for [`open_enum!`](crate::open_enum) only: its `parse` calls
    /// this after matching every known name, which keeps the promise above.
    #[doc(hidden)]
    pub fn __after_known_names(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The text as it was read.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Declares an open enum with its stored text: `KNOWN`, `as_str`, `parse`, `is_known`,
/// `Display`, an infallible `FromStr` and serde as that text. Text outside the known names
/// parses to `Other`, kept as it was.
///
/// ```
/// aigentflow_core_states::open_enum! {
///     /// A colour.
///     Colour { Red = "red", Blue = "blue", }
/// }
/// assert_eq!(Colour::parse("red"), Colour::Red);
/// assert_eq!(Colour::parse("teal").as_str(), "teal");
/// assert!(!Colour::parse("teal").is_known());
/// ```
#[macro_export]
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A name this version does not know, kept with its own text.
            Other($crate::UnknownName),
        }

        impl $name {
            /// Every known variant, in declaration order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The stored text.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(name) => name.as_str(),
                }
            }

            /// Parses stored text; text outside the known names becomes `Other`.
            pub fn parse(text: &str) -> Self {
                match text {
                    $( $text => Self::$variant, )+
                    other => Self::Other($crate::UnknownName::__after_known_names(other)),
                }
            }

            /// Whether this is one of the known variants.
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Ok(Self::parse(text))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow::<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok(Self::parse(&text))
            }
        }
    };
}

open_enum! {
    /// Where a task is in the workflow. Stored as its upper-case name.
    WorkflowState {
        /// Created, not started.
        Idle = "IDLE",
        /// The task is being analysed.
        Analyzing = "ANALYZING",
        /// The hub: the orchestrator decides what runs next.
        Orchestrating = "ORCHESTRATING",
        /// An agent is running.
        AgentWorking = "AGENT_WORKING",
        /// An agent finished; its output decides the route.
        AgentComplete = "AGENT_COMPLETE",
        /// Waiting for a person to approve or reject.
        AwaitingApproval = "AWAITING_APPROVAL",
        /// A person approved.
        Approved = "APPROVED",
        /// A person rejected.
        Rejected = "REJECTED",
        /// Tests are running.
        Testing = "TESTING",
        /// Tests passed.
        TestsPass = "TESTS_PASS",
        /// Tests failed.
        TestsFail = "TESTS_FAIL",
        /// A fix is being made after failed tests.
        Fixing = "FIXING",
        /// Retries ran out; a person must decide.
        Escalated = "ESCALATED",
        /// Wrapping up.
        Completing = "COMPLETING",
        /// Done. Accepts no event.
        Completed = "COMPLETED",
        /// Something went wrong; recovery may follow.
        Error = "ERROR",
        /// Stopped for good. Accepts no event.
        Aborted = "ABORTED",
        /// Recovering from an error towards a checkpoint.
        Recovering = "RECOVERING",
        /// Phase state of the shipped TypeScript orchestrator.
        Planning = "PLANNING",
        /// Phase state of the shipped TypeScript orchestrator.
        Architecting = "ARCHITECTING",
        /// Phase state of the shipped TypeScript orchestrator.
        Designing = "DESIGNING",
        /// Phase state of the shipped TypeScript orchestrator.
        Building = "BUILDING",
        /// Phase state of the shipped TypeScript orchestrator.
        Reviewing = "REVIEWING",
    }
}

impl WorkflowState {
    /// The run loop stops here: COMPLETED, ABORTED and ESCALATED.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Aborted | Self::Escalated)
    }

    /// A person must act: AWAITING_APPROVAL and ESCALATED.
    pub fn is_awaiting_input(&self) -> bool {
        matches!(self, Self::AwaitingApproval | Self::Escalated)
    }

    /// One of the phase states older data may hold (PLANNING … REVIEWING).
    pub fn is_legacy_phase(&self) -> bool {
        matches!(
            self,
            Self::Planning
                | Self::Architecting
                | Self::Designing
                | Self::Building
                | Self::Reviewing
        )
    }
}

open_enum! {
    /// What happens to a task. Stored as its upper-case name.
    Event {
        /// IDLE → ANALYZING.
        Start = "START",
        /// ANALYZING → ORCHESTRATING.
        AnalysisComplete = "ANALYSIS_COMPLETE",
        /// ORCHESTRATING → AGENT_WORKING.
        SpawnAgent = "SPAWN_AGENT",
        /// AGENT_WORKING → AGENT_COMPLETE.
        AgentDone = "AGENT_DONE",
        /// AGENT_COMPLETE → ORCHESTRATING.
        RouteNext = "ROUTE_NEXT",
        /// AGENT_COMPLETE → AWAITING_APPROVAL.
        NeedsApproval = "NEEDS_APPROVAL",
        /// AGENT_COMPLETE → COMPLETING.
        AllComplete = "ALL_COMPLETE",
        /// AGENT_COMPLETE → TESTING.
        EnterTestPhase = "ENTER_TEST_PHASE",
        /// AWAITING_APPROVAL → APPROVED.
        Approve = "APPROVE",
        /// AWAITING_APPROVAL → REJECTED.
        Reject = "REJECT",
        /// AWAITING_APPROVAL → REJECTED: the approval's deadline passed with no decision.
        ApprovalTimeout = "APPROVAL_TIMEOUT",
        /// APPROVED or REJECTED → ORCHESTRATING.
        Continue = "CONTINUE",
        /// TESTING → TESTS_PASS.
        AllTestsPass = "ALL_TESTS_PASS",
        /// TESTING → TESTS_FAIL.
        TestsFailed = "TESTS_FAILED",
        /// TESTS_PASS → ORCHESTRATING.
        TestsPassedContinue = "TESTS_PASSED_CONTINUE",
        /// TESTS_FAIL → FIXING, while retries remain.
        StartFix = "START_FIX",
        /// TESTS_FAIL → ESCALATED, once retries ran out.
        MaxRetriesExceeded = "MAX_RETRIES_EXCEEDED",
        /// FIXING → TESTING.
        FixComplete = "FIX_COMPLETE",
        /// ORCHESTRATING → COMPLETING, with the agent queue empty.
        WorkflowComplete = "WORKFLOW_COMPLETE",
        /// COMPLETING → COMPLETED.
        Finalize = "FINALIZE",
        /// Any non-terminal state → ERROR.
        Error = "ERROR",
        /// Any non-terminal state → ABORTED.
        Abort = "ABORT",
        /// ERROR → RECOVERING.
        StartRecovery = "START_RECOVERY",
        /// RECOVERING → the restored checkpoint's state.
        RestoreCheckpoint = "RESTORE_CHECKPOINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_text() {
        assert_eq!(WorkflowState::KNOWN.len(), 23);
        for state in WorkflowState::KNOWN {
            assert_eq!(&WorkflowState::parse(state.as_str()), state);
            assert_eq!(state.to_string(), state.as_str());
            assert!(state.is_known());
            assert_eq!(state.as_str(), state.as_str().to_uppercase());
        }
    }

    #[test]
    fn every_event_round_trips_through_its_text() {
        assert_eq!(Event::KNOWN.len(), 24);
        for event in Event::KNOWN {
            assert_eq!(&Event::parse(event.as_str()), event);
            let json = serde_json::to_string(event).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Event>(&json).ok().as_ref(), Some(event));
        }
    }

    #[test]
    fn unknown_text_is_kept_not_mapped() {
        let failed = WorkflowState::parse("FAILED");
        assert!(!failed.is_known());
        assert_eq!(failed.as_str(), "FAILED");
        assert_ne!(failed, WorkflowState::Error);
        assert!(!failed.is_terminal());
        let json = serde_json::to_string(&failed).unwrap_or_default();
        assert_eq!(json, "\"FAILED\"");
        assert_eq!(serde_json::from_str::<WorkflowState>(&json).ok(), Some(failed));
    }

    #[test]
    fn terminal_and_awaiting_input() {
        let terminal: Vec<_> =
            WorkflowState::KNOWN.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
        assert_eq!(terminal, ["ESCALATED", "COMPLETED", "ABORTED"]);
        let awaiting: Vec<_> = WorkflowState::KNOWN
            .iter()
            .filter(|s| s.is_awaiting_input())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(awaiting, ["AWAITING_APPROVAL", "ESCALATED"]);
    }

    #[test]
    fn serde_form_of_states_snapshot() {
        insta::assert_json_snapshot!(WorkflowState::KNOWN);
    }
}
