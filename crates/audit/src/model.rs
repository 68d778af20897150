use aigentflow_core_states::{time, ProjectId, TaskId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

aigentflow_core_states::open_enum! {
    /// What an audit entry is about: an open set. The first five are what this project's stores
    /// write; the twelve after them are the categories of the orchestrator's audit events.
    /// Other text is kept as it is ([`Category::Other`]), so an entry of a category this build
    /// does not know is logged, read and filtered like any other.
    Category {
        /// A workflow state change.
        State = "state",
        /// A file read or written.
        File = "file",
        /// An agent's action.
        Agent = "agent",
        /// Something security-relevant.
        Security = "security",
        /// A person's action.
        User = "user",
        /// Login, logout, token refresh.
        Authentication = "authentication",
        /// Permission checks.
        Authorization = "authorization",
        /// Workflow execution.
        Orchestration = "orchestration",
        /// Agent operations.
        AgentExecution = "agent_execution",
        /// A file read, written or deleted.
        FileOperation = "file_operation",
        /// Git commands.
        GitOperation = "git_operation",
        /// Calls to tools and APIs outside (MCP, HTTP).
        ExternalCall = "external_call",
        /// A person's interaction.
        UserAction = "user_action",
        /// The system's lifecycle.
        SystemEvent = "system_event",
        /// Something security-relevant.
        SecurityEvent = "security_event",
        /// A compliance check.
        ComplianceEvent = "compliance_event",
        /// An error or failure.
        ErrorEvent = "error_event",
    }
}

aigentflow_core_states::closed_enum! {
    /// How serious an audit entry is, least first: `Severity::Warning > Severity::Info`.
    pub enum Severity as "severity" {
        Debug = "debug",
        Info = "info",
        Warning = "warning",
        Error = "error",
        Critical = "critical",
    }
}

aigentflow_core_states::closed_enum! {
    /// How what an audit entry records ended.
    pub enum Outcome as "outcome" {
        Success = "success",
        Failure = "failure",
        /// Done in part.
        Partial = "partial",
        /// Refused by a permission check or a person.
        Denied = "denied",
        /// Stopped by a guard or a policy before it ran.
        Blocked = "blocked",
        /// Not decided yet.
        Pending = "pending",
    }
}

/// Who acted: a kind (`user`, `agent`, `system`, `external`, or another) and an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl Actor {
    /// An actor of any kind.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self { kind: kind.into(), id: id.into() }
    }

    /// A person.
    pub fn user(id: impl Into<String>) -> Self {
        Self::new("user", id)
    }

    /// An agent.
    pub fn agent(id: impl Into<String>) -> Self {
        Self::new("agent", id)
    }

    /// The system itself (e.g. `orchestrator`).
    pub fn system(id: impl Into<String>) -> Self {
        Self::new("system", id)
    }
}

/// What was acted on: a kind (`file`, `task`, `config`…) and an id (a path, a task id…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl Target {
    /// A target of any kind.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self { kind: kind.into(), id: id.into() }
    }
}

/// What an action changed: the value before and after (either may be absent).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Changes {
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// An entry to log.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuditEntry {
    pub project_id: Option<ProjectId>,
    pub task_id: Option<TaskId>,
    pub agent: Option<String>,
    pub action: String,
    pub category: Option<Category>,
    pub details: Option<Value>,
    pub user_id: Option<String>,
    pub ip_address: Option<String>,
    pub severity: Option<Severity>,
    pub outcome: Option<Outcome>,
    pub actor: Option<Actor>,
    pub target: Option<Target>,
    pub session_id: Option<String>,
    pub workflow_id: Option<String>,
    /// Ties together the entries of one request across agents and processes.
    pub correlation_id: Option<String>,
    pub changes: Option<Changes>,
    /// What went wrong, as text.
    pub error: Option<String>,
}

impl AuditEntry {
    /// An entry with an action and a category; the other fields are set directly or with the
    /// builder methods below.
    pub fn new(action: impl Into<String>, category: Category) -> Self {
        Self { action: action.into(), category: Some(category), ..Self::default() }
    }

    /// With a severity.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }

    /// With an outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// With the actor who acted.
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// With what was acted on.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// With what the action changed.
    pub fn changes(mut self, before: Option<Value>, after: Option<Value>) -> Self {
        self.changes = Some(Changes { before, after });
        self
    }

    /// With what went wrong.
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

/// The audit event's fields of a stored row, as stored (text; the changes as their JSON text).
/// Every field is None on a row written before they existed, and where the entry did not say it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredEvent {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub actor_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub actor_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workflow_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub changes_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub changes_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

impl StoredEvent {
    /// The fields in the order of [`EventFields::COLUMNS`](aigentflow_persistence::audit_chain::EventFields::COLUMNS).
    pub fn cells(&self) -> [Option<&str>; 12] {
        [
            self.severity.as_deref(),
            self.outcome.as_deref(),
            self.actor_type.as_deref(),
            self.actor_id.as_deref(),
            self.target_type.as_deref(),
            self.target_id.as_deref(),
            self.session_id.as_deref(),
            self.workflow_id.as_deref(),
            self.correlation_id.as_deref(),
            self.changes_before.as_deref(),
            self.changes_after.as_deref(),
            self.error.as_deref(),
        ]
    }

    /// The fields of cells given in that order.
    pub fn from_cells(c: [Option<String>; 12]) -> Self {
        let [severity, outcome, actor_type, actor_id, target_type, target_id, session_id, workflow_id, correlation_id, changes_before, changes_after, error] =
            c;
        Self {
            severity,
            outcome,
            actor_type,
            actor_id,
            target_type,
            target_id,
            session_id,
            workflow_id,
            correlation_id,
            changes_before,
            changes_after,
            error,
        }
    }

    /// What is wrong with these fields as an entry's, if anything: the rule every row the log
    /// appends keeps, so that an imported event (from a bundle anyone can edit) holds nothing an
    /// [`AuditEntry`] could not say. The severity and the outcome are names this build knows,
    /// an actor or a target has both its type and its id or neither, no text is blank, and the
    /// changes are JSON text. The message names the field (and the value, where it is a name).
    pub fn problem(&self) -> Option<String> {
        if let Some(s) = &self.severity {
            if let Err(e) = s.parse::<Severity>() {
                return Some(format!("the {} {e}", e.what));
            }
        }
        if let Some(o) = &self.outcome {
            if let Err(e) = o.parse::<Outcome>() {
                return Some(format!("the {} {e}", e.what));
            }
        }
        for (kind, id, what) in [
            (&self.actor_type, &self.actor_id, "actor"),
            (&self.target_type, &self.target_id, "target"),
        ] {
            if kind.is_some() != id.is_some() {
                let (has, lacks) = if kind.is_some() { ("type", "id") } else { ("id", "type") };
                return Some(format!("the {what} has a {has} but no {lacks}"));
            }
        }
        // Named as `AuditLog::log` names the same mistakes: the column, in words.
        let columns = aigentflow_persistence::audit_chain::EventFields::COLUMNS;
        for (column, cell) in columns.into_iter().zip(self.cells()) {
            let Some(text) = cell else { continue };
            let name = column.replace('_', " ");
            if text.trim().is_empty() {
                return Some(format!("the {name} is empty"));
            }
            // changes_before and changes_after are stored as JSON text.
            if column.starts_with("changes_")
                && serde_json::from_str::<serde::de::IgnoredAny>(text).is_err()
            {
                return Some(format!("the {name} is not JSON text"));
            }
        }
        None
    }

    /// The severity, if it is one this build knows.
    pub fn severity(&self) -> Option<Severity> {
        self.severity.as_deref().and_then(|s| s.parse().ok())
    }

    /// The outcome, if it is one this build knows.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.as_deref().and_then(|s| s.parse().ok())
    }
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(with = "time::serde_millis")]
    pub timestamp: DateTime<Utc>,
    pub project_id: Option<ProjectId>,
    pub task_id: Option<TaskId>,
    pub agent: Option<String>,
    pub action: String,
    /// The stored text (one of [`Category`] for rows this layer wrote).
    pub category: String,
    /// The details as stored (JSON text).
    #[serde(skip)]
    pub details_text: Option<String>,
    /// The details, parsed (`null` for none, a string for text that is not JSON).
    pub details: Option<Value>,
    pub user_id: Option<String>,
    pub ip_address: Option<String>,
    pub prev_hash: Option<String>,
    pub row_hash: Option<String>,
    /// Where the row came from, for a row imported from another database's bundle (`aigentflow
    /// tasks import`); absent for every other row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<AuditOrigin>,
    /// The audit event's fields, as stored.
    #[serde(flatten)]
    pub event: StoredEvent,
    /// The row encoding its hash covers: 1 for rows written before the audit event's fields
    /// existed, 2 since.
    pub hash_version: i64,
}

/// The provenance of an imported audit row: its id and `row_hash` in the database it was
/// exported from, and that database's location. The row's own hash covers the three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOrigin {
    /// The row's id there (None only for a row written around the log with a cell that is no
    /// number).
    pub id: Option<i64>,
    /// The row's `row_hash` there.
    pub hash: Option<String>,
    /// Where it was: a file path or a server URL without its password.
    pub source: Option<String>,
}

/// An audit row imported from another database, to append with
/// [`AuditLog::append_imported_in`](crate::AuditLog::append_imported_in): its fields as stored
/// there, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedEntry {
    /// When it was logged there; kept as it is.
    pub timestamp: DateTime<Utc>,
    pub project_id: Option<String>,
    pub task_id: Option<String>,
    pub agent: Option<String>,
    pub action: String,
    /// The stored category text.
    pub category: String,
    /// The stored details (JSON text).
    pub details: Option<String>,
    pub user_id: Option<String>,
    pub ip_address: Option<String>,
    /// The audit event's fields as stored there.
    pub event: StoredEvent,
    pub origin: ImportedOrigin,
}

/// Where an [`ImportedEntry`] came from: its id and hash there, and that database's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedOrigin {
    pub id: i64,
    pub hash: String,
    pub source: String,
}

/// Filters of a query or an export. Dates are inclusive; a bare date as `end` covers that whole day.
/// Ids are given as their types, which take text: `AuditQuery { project_id: Some("p".into()), ..
/// AuditQuery::default() }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub project_id: Option<ProjectId>,
    pub task_id: Option<TaskId>,
    pub category: Option<Category>,
    pub agent: Option<String>,
    pub action: Option<String>,
    pub user_id: Option<String>,
    /// Entries of at least this severity (`Warning` also selects errors and critical ones).
    pub min_severity: Option<Severity>,
    pub outcome: Option<Outcome>,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub session_id: Option<String>,
    pub workflow_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Only entries that carry an error (true) or that carry none (false).
    pub has_error: Option<bool>,
    /// Only entries that record changes (true) or that record none (false).
    pub has_changes: Option<bool>,
    /// From this date or instant on, read by [`aigentflow_core_states::time::Bound::parse`]
    /// (`2026-11-21`, `2026-1-5`, `2026-11-21 10:00`, RFC 3339…; years 0000 to 9999, else
    /// [`Error::InvalidInput`](crate::Error::InvalidInput)). A bare date starts at its midnight.
    pub start: Option<String>,
    /// Up to this date or instant, read like `start`. A bare date covers its whole day.
    pub end: Option<String>,
    /// At most this many entries; any u64 (past i64::MAX it is no limit).
    pub limit: Option<u64>,
    /// Skip this many entries first; any u64 (past the rows there are, nothing is left).
    pub offset: Option<u64>,
}

/// How many entries a project has in one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryCount {
    pub category: String,
    pub count: u64,
}

/// The statistics of the entries matching a query (its limit and offset aside): `aigentflow
/// audit stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditStats {
    pub total: u64,
    /// Entries per category, most first.
    pub by_category: Vec<Count>,
    /// Entries per severity, most first (`(none)` is not a key: entries without one are left
    /// out).
    pub by_severity: Vec<Count>,
    /// Entries per outcome, most first (entries without one are left out).
    pub by_outcome: Vec<Count>,
    /// Entries per day (UTC), oldest first.
    pub per_day: Vec<Count>,
    /// The actors with the most entries, most first, at most [`AuditLog::stats`]'s `top`. An
    /// entry without an actor counts for its agent (kind `agent`) or else its user (kind
    /// `user`), as entries written before actors existed name them; entries naming none are
    /// left out.
    ///
    /// [`AuditLog::stats`]: crate::AuditLog::stats
    pub top_actors: Vec<ActorCount>,
    /// Entries whose outcome is `failure` or that carry an error.
    pub errors: u64,
    /// `errors / total`, 0 for no entries.
    pub error_rate: f64,
}

/// How many entries have one value (a category, a severity, a day…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub key: String,
    pub count: u64,
}

/// How many entries one actor has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActorCount {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_of_categories_snapshot() {
        insta::assert_json_snapshot!(Category::KNOWN);
    }
}
