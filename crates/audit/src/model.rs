use aigentflow_core_states::{time, ProjectId, TaskId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

aigentflow_core_states::closed_enum! {
    /// What an audit entry is about.
    pub enum Category as "category" {
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
    }
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
}

impl AuditEntry {
    /// An entry with an action and a category; the other fields are set directly.
    pub fn new(action: impl Into<String>, category: Category) -> Self {
        Self { action: action.into(), category: Some(category), ..Self::default() }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_of_categories_snapshot() {
        insta::assert_json_snapshot!(Category::ALL);
    }
}
