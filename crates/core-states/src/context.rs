use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{CheckpointId, ProjectId, TaskId};
use crate::names::{Event, WorkflowState};

/// The working memory of one task, in the JSON form the TypeScript version wrote (camelCase).
///
/// Fields this version does not know are kept in `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateContext {
    pub project_id: ProjectId,
    pub task_id: TaskId,
    #[serde(default)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_analysis: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_agent: Option<String>,
    #[serde(default)]
    pub agent_queue: Vec<String>,
    #[serde(default)]
    pub completed_agents: Vec<String>,
    #[serde(default)]
    pub agent_outputs: BTreeMap<String, AgentOutput>,
    #[serde(default)]
    pub active_agents: Vec<String>,
    #[serde(default = "default_max_concurrent_agents")]
    pub max_concurrent_agents: u32,
    /// The last error, as the writer gave it (a message or an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    #[serde(default)]
    pub retry_count: u32,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Checkpoints, oldest first. A store keeps them in their own table, not inside the context.
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Fields written by another version, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_max_concurrent_agents() -> u32 {
    15
}

fn default_max_retries() -> u32 {
    3
}

impl StateContext {
    /// A fresh context for a task.
    pub fn new(project_id: ProjectId, task_id: TaskId, prompt: impl Into<String>) -> Self {
        Self {
            project_id,
            task_id,
            prompt: prompt.into(),
            task_analysis: None,
            current_agent: None,
            agent_queue: Vec::new(),
            completed_agents: Vec::new(),
            agent_outputs: BTreeMap::new(),
            active_agents: Vec::new(),
            max_concurrent_agents: default_max_concurrent_agents(),
            error: None,
            retry_count: 0,
            max_retries: default_max_retries(),
            checkpoints: Vec::new(),
            metadata: Map::new(),
            extra: Map::new(),
        }
    }

    /// A copy without the checkpoints, in time independent of how many there are.
    pub fn without_checkpoints(&self) -> Self {
        Self {
            project_id: self.project_id.clone(),
            task_id: self.task_id.clone(),
            prompt: self.prompt.clone(),
            task_analysis: self.task_analysis.clone(),
            current_agent: self.current_agent.clone(),
            agent_queue: self.agent_queue.clone(),
            completed_agents: self.completed_agents.clone(),
            agent_outputs: self.agent_outputs.clone(),
            active_agents: self.active_agents.clone(),
            max_concurrent_agents: self.max_concurrent_agents,
            error: self.error.clone(),
            retry_count: self.retry_count,
            max_retries: self.max_retries,
            checkpoints: Vec::new(),
            metadata: self.metadata.clone(),
            extra: self.extra.clone(),
        }
    }

    /// The output that decides the route out of AGENT_COMPLETE: the current agent's, else the
    /// last completed agent's.
    pub fn last_output(&self) -> Option<&AgentOutput> {
        self.current_agent
            .as_ref()
            .and_then(|agent| self.agent_outputs.get(agent))
            .or_else(|| self.completed_agents.last().and_then(|a| self.agent_outputs.get(a)))
    }
}

/// What an agent produced, as far as routing is concerned; the rest of the output is kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentOutput {
    #[serde(default)]
    pub routing_hints: RoutingHints,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Hints an agent gives the orchestrator about what should happen next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingHints {
    #[serde(default)]
    pub suggest_next: Vec<String>,
    #[serde(default)]
    pub needs_approval: bool,
    #[serde(default)]
    pub needs_user_input: bool,
    #[serde(default)]
    pub has_failures: bool,
    #[serde(default)]
    pub is_complete: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A point a task can be restored to: its state, a partial context and the artifacts (paths) it had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub id: CheckpointId,
    pub state: WorkflowState,
    #[serde(with = "crate::time::serde_millis")]
    pub timestamp: DateTime<Utc>,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default)]
    pub artifacts: Vec<String>,
}

/// One recorded move of a task from a state to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateTransition {
    pub from: WorkflowState,
    pub to: WorkflowState,
    pub event: Event,
    #[serde(with = "crate::time::serde_millis")]
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl StateTransition {
    /// Whether two records describe the same move (timestamps and metadata aside).
    pub fn same_move(&self, other: &StateTransition) -> bool {
        self.from == other.from && self.to == other.to && self.event == other.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_context_loads_and_keeps_unknown_fields() {
        let json = r#"{"projectId":"p","taskId":"t","prompt":"x","retryCount":2,"maxRetries":3,
            "checkpoints":[],"metadata":{"lastEvent":"DESIGN"},"phase":"build","agentOutputs":
            {"coder":{"routingHints":{"isComplete":true,"confidence":0.5},"files":["a.rs"]}}}"#;
        let ctx: StateContext = serde_json::from_str(json).expect("legacy context loads");
        assert_eq!(ctx.retry_count, 2);
        assert_eq!(ctx.max_concurrent_agents, 15);
        assert_eq!(ctx.extra.get("phase"), Some(&Value::from("build")));
        let out = &ctx.agent_outputs["coder"];
        assert!(out.routing_hints.is_complete);
        let back = serde_json::to_value(&ctx).expect("serialises");
        assert_eq!(back["phase"], "build");
        assert_eq!(back["agentOutputs"]["coder"]["files"][0], "a.rs");
        assert_eq!(back["agentOutputs"]["coder"]["routingHints"]["confidence"], 0.5);
        assert_eq!(back["metadata"]["lastEvent"], "DESIGN");
    }

    #[test]
    fn without_checkpoints_keeps_everything_else() {
        let mut ctx = StateContext::new("p".into(), "t".into(), "do it");
        ctx.extra.insert("x".into(), Value::from(1));
        ctx.checkpoints.push(Checkpoint {
            id: "c".into(),
            state: WorkflowState::Idle,
            timestamp: DateTime::UNIX_EPOCH,
            context: Map::new(),
            artifacts: vec![],
        });
        let mut expected = ctx.clone();
        expected.checkpoints.clear();
        assert_eq!(ctx.without_checkpoints(), expected);
    }
}
