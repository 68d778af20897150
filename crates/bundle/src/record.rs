//! The bundle's lines: a [`Header`], then one [`Record`] per line, then [`Record::End`]. Every
//! field is the stored column's value as it is stored (timestamps in the stored form
//! `YYYY-MM-DD HH:MM:SS.SSS` UTC, JSON columns as their text), so an import writes back exactly
//! what was read and a round trip is equal field by field.

use aigentflow_audit::StoredEvent;
use serde::{Deserialize, Serialize};

/// What the header's `format` says.
pub const FORMAT: &str = "aigentflow-bundle";
/// The version of the format this build writes. Version 2 added the audit event's fields and
/// the row encoding's version to audit rows; a version 1 bundle (whose rows have neither) is
/// read too.
pub const VERSION: u32 = 2;
/// The oldest version this build reads.
pub const OLDEST_VERSION: u32 = 1;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format's version: [`VERSION`].
    pub version: u32,
    /// The program that wrote it and its version (`aigentflow 0.1.0`).
    pub tool: String,
    /// Where the tasks were: a file path, or a server's URL without its password. Imported audit
    /// entries keep it as their `origin_source`.
    pub source: String,
    /// When the export ran (stored form, UTC).
    pub exported_at: String,
    /// The tasks the bundle holds, in the order their records come. No record may belong to
    /// another task.
    pub tasks: Vec<String>,
}

/// One line after the header. `kind` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A task's row of `workflow_states`: the first record of its task.
    Task(TaskRecord),
    /// A row of `state_transitions` (after its task).
    Transition(TransitionRecord),
    /// A row of `checkpoints` (after its task).
    Checkpoint(CheckpointRecord),
    /// A row of `approval_requests` (after its task).
    Approval(ApprovalRecord),
    /// A row of `execution_traces` of the task (after its task).
    Trace(TraceRecord),
    /// A row of `agent_invocations` (after its trace).
    Invocation(InvocationRecord),
    /// A row of `audit_logs` whose task is the task (after its task), with its chain hashes.
    Audit(AuditRowRecord),
    /// The workflow definition the task started under (after its task).
    Definition(DefinitionRecord),
    /// The last record: how many records came between the header and it.
    End(EndRecord),
    /// Of a signed bundle, the line after the end record, its last: the exporter's signature
    /// of every byte before it.
    Signature(SignatureRecord),
}

impl Record {
    /// The `kind` of the record, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Task(_) => "task",
            Self::Transition(_) => "transition",
            Self::Checkpoint(_) => "checkpoint",
            Self::Approval(_) => "approval",
            Self::Trace(_) => "trace",
            Self::Invocation(_) => "invocation",
            Self::Audit(_) => "audit",
            Self::Definition(_) => "definition",
            Self::End(_) => "end",
            Self::Signature(_) => "signature",
        }
    }
}

/// A row of `workflow_states`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRecord {
    pub task_id: String,
    pub project_id: String,
    pub state: String,
    /// The stored context (JSON text).
    pub context: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A row of `state_transitions`. Its row number is the database's own: an import numbers it
/// anew; `seq` (its place in the task's history) is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRecord {
    pub task_id: String,
    pub seq: Option<i64>,
    pub from_state: String,
    pub to_state: String,
    pub event: String,
    /// JSON text.
    pub metadata: Option<String>,
    pub created_at: String,
}

/// A row of `checkpoints`; its id is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRecord {
    pub id: String,
    pub task_id: String,
    pub seq: Option<i64>,
    pub state: String,
    /// JSON text.
    pub context: String,
    /// JSON text.
    pub artifacts: String,
    pub created_at: String,
}

/// A row of `approval_requests`; its id is kept. (`approval_kind` is the column `kind`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRecord {
    pub id: String,
    pub task_id: String,
    pub approval_kind: String,
    /// JSON text.
    pub payload: String,
    pub requested_by: String,
    pub requested_at: String,
    pub deadline: Option<String>,
    /// `pending`, `approved`, `rejected` or `expired`; `decided_at` is set exactly when it is
    /// not `pending`.
    pub status: String,
    pub reviewer: Option<String>,
    pub comment: Option<String>,
    pub decided_at: Option<String>,
}

/// A row of `execution_traces`; its id is kept. Its place in the trace feed (`feed_seq`) is the
/// database's own: an import gives it the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord {
    pub id: String,
    pub project_id: String,
    pub task_id: String,
    pub prompt: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub success: Option<i64>,
    pub duration_ms: Option<i64>,
    /// JSON text.
    pub token_usage: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
    pub status: String,
    pub owner_pid: Option<i64>,
    pub owner_started_at: Option<String>,
    pub owner_host: Option<String>,
    pub heartbeat_at: Option<String>,
    pub recovery_attempts: i64,
}

/// A row of `agent_invocations`. Its row number is the database's own: an import numbers it
/// anew, in the order the bundle gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvocationRecord {
    pub trace_id: String,
    pub agent: String,
    pub task_fragment: Option<String>,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub outcome: Option<String>,
    pub quality_score: Option<f64>,
    /// JSON text.
    pub token_usage: Option<String>,
    pub output_summary: Option<String>,
    pub error: Option<String>,
}

/// A row of `audit_logs` as the source's chain holds it: every field the row hash covers, both
/// hashes, and the row's own provenance if it was itself imported. The import checks that the
/// hash follows from the fields, then appends the entry to the destination's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRowRecord {
    pub id: i64,
    pub timestamp: String,
    pub project_id: Option<String>,
    pub task_id: String,
    pub agent: Option<String>,
    pub action: String,
    pub category: String,
    /// The stored details (JSON text).
    pub details: Option<String>,
    pub user_id: Option<String>,
    pub ip_address: Option<String>,
    pub prev_hash: String,
    pub row_hash: String,
    /// Where the row came from, if it was imported into the source.
    pub origin: Option<OriginRecord>,
    /// The audit event's fields as stored; absent when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Box<StoredEvent>>,
    /// The row encoding its hash covers; absent for version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_version: Option<i64>,
}

impl AuditRowRecord {
    /// The hash the chain gives these fields after `prev_hash`: equal to `row_hash` for a row
    /// as the source's log wrote it.
    pub fn computed_hash(&self) -> String {
        crate::export::audit_hash(self)
    }
}

/// An audit row's provenance: its id and hash in the database it was first written to, and
/// that database's location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginRecord {
    pub id: i64,
    pub hash: String,
    pub source: String,
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndRecord {
    /// How many records came between the header and this line.
    pub records: u64,
}

/// A signed bundle's last line: an Ed25519 signature of [`signed_message`] of the SHA-256 of
/// every byte before this line (the header, the records and the end record, each with its
/// newline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key: 32 bytes in lower-case hex, as `audit keygen`'s `.pub` file
    /// holds it after its tag.
    pub public_key: String,
    /// The SHA-256 of the bytes before this line, in lower-case hex.
    pub sha256: String,
    /// The signature, 64 bytes in hex.
    pub value: String,
}

/// What a bundle's signature signs: the format's name and the digest of its bytes, so that the
/// signature cannot be taken for one of another kind of document (a verification report).
pub fn signed_message(sha256: &str) -> Vec<u8> {
    format!("{FORMAT} signature of sha256:{sha256}").into_bytes()
}

/// The workflow definition a task started under (`task_workflows` and its row of
/// `workflow_definitions`): the definition as stored (canonical JSON) and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionRecord {
    pub task_id: String,
    pub name: String,
    pub version: i64,
    pub content_hash: String,
    pub definition: String,
}

/// One task's records, grouped.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskBundle {
    pub task: TaskRecord,
    pub transitions: Vec<TransitionRecord>,
    pub checkpoints: Vec<CheckpointRecord>,
    pub approvals: Vec<ApprovalRecord>,
    /// Each trace with its invocations.
    pub traces: Vec<(TraceRecord, Vec<InvocationRecord>)>,
    pub audit: Vec<AuditRowRecord>,
    /// The workflow definition it started under, if one was recorded.
    pub definition: Option<DefinitionRecord>,
}
