//! The aigentflow workflow state machine, without I/O.
//!
//! A task moves through [`WorkflowState`]s when [`Event`]s are applied. Which event is allowed
//! where is data: a [`TransitionTable`] of [`Rule`]s (from-states, event, target, optional named
//! [`Guard`] over the [`StateContext`]). [`TransitionTable::default`] is the aigentflow
//! hub-and-spoke graph. A [`StateMachine`] applies events to one task, records every
//! [`StateTransition`], creates and restores [`Checkpoint`]s and tells observers about each.
//!
//! Persistence is behind the [`StateStore`] trait; [`InMemoryStateStore`] is the reference
//! implementation, the SQLite one lives in `aigentflow-persistence`.
//!
//! Architecture invariant: this crate knows nothing of SQLite, files or the network.

mod clock;
mod closed;
mod context;
mod error;
mod ids;
mod machine;
mod names;
mod store;
mod table;
pub mod time;
mod workflow;

pub use clock::{Clock, ManualClock, SystemClock};
pub use closed::UnknownVariant;
pub use context::{AgentOutput, Checkpoint, RoutingHints, StateContext, StateTransition};
pub use error::{Error, Result};
pub use ids::{CheckpointId, ProjectId, TaskId};
pub use machine::{MachineEvent, StateMachine};
pub use names::{Event, UnknownName, WorkflowState};
pub use store::{InMemoryStateStore, PersistedState, StateStore};
pub use table::{FromStates, Guard, Rule, Target, TransitionTable};
pub use workflow::{Format, WorkflowDefinition, DEFAULT_WORKFLOW_YAML};
