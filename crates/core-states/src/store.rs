//! The persistence boundary of the state machine.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::context::{StateContext, StateTransition};
use crate::ids::{ProjectId, TaskId};
use crate::names::WorkflowState;

/// Everything a store keeps of one task: state, context (with its checkpoints) and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedState {
    pub task_id: TaskId,
    pub project_id: ProjectId,
    pub state: WorkflowState,
    pub context: StateContext,
    pub history: Vec<StateTransition>,
}

impl PersistedState {
    /// The state the history leads to (its last `to`), or None for an empty history.
    pub fn folded_state(&self) -> Option<&WorkflowState> {
        self.history.last().map(|t| &t.to)
    }
}

/// Where task states are kept. Saving appends only what is new; loading gives back what was saved.
pub trait StateStore {
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Saves a task's state, its new transitions and its new checkpoints.
    fn save_state(&self, state: &PersistedState) -> Result<(), Self::Error>;
    /// Loads a task, or None if the store has no such task.
    fn load_state(&self, task_id: &TaskId) -> Result<Option<PersistedState>, Self::Error>;
    /// Every task of a project.
    fn list_states(&self, project_id: &ProjectId) -> Result<Vec<PersistedState>, Self::Error>;
    /// Deletes a task with its history and checkpoints; true if it existed.
    fn delete_state(&self, task_id: &TaskId) -> Result<bool, Self::Error>;
}

/// A [`StateStore`] in memory: for tests and for callers that need no durability.
#[derive(Debug, Default)]
pub struct InMemoryStateStore {
    tasks: Mutex<BTreeMap<TaskId, PersistedState>>,
}

impl InMemoryStateStore {
    fn tasks(&self) -> std::sync::MutexGuard<'_, BTreeMap<TaskId, PersistedState>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for InMemoryStateStore {
    type Error = std::convert::Infallible;

    fn save_state(&self, state: &PersistedState) -> Result<(), Self::Error> {
        self.tasks().insert(state.task_id.clone(), state.clone());
        Ok(())
    }

    fn load_state(&self, task_id: &TaskId) -> Result<Option<PersistedState>, Self::Error> {
        Ok(self.tasks().get(task_id).cloned())
    }

    fn list_states(&self, project_id: &ProjectId) -> Result<Vec<PersistedState>, Self::Error> {
        Ok(self.tasks().values().filter(|s| &s.project_id == project_id).cloned().collect())
    }

    fn delete_state(&self, task_id: &TaskId) -> Result<bool, Self::Error> {
        Ok(self.tasks().remove(task_id).is_some())
    }
}
