//! An orchestrator extension built on aigentflow's stores, as a program that imports them would
//! write one: it keeps what each model call of a task cost in a table of its own, in the same
//! database, on either backend.
//!
//! * Its table comes from its own migration set, `model_usage` ([`migration_set`]), applied
//!   when the database opens ([`open`]), beside the core schema and under the same lock.
//! * [`ModelUsage::record_step`] writes, in one transaction, the task's transition (state
//!   store), its audit entry (audit log) and the extension's row (its own statement, through
//!   the neutral API): all three commit or none does.
//! * Its statement binds every kind of value the neutral API has: text (redacted), text kept
//!   as it is by name ([`Param::unredacted`]), integers, reals, bytes, JSON, a timestamp and
//!   NULL; and reads them back as the types they went in as.

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::chrono::{DateTime, Utc};
use aigentflow::persistence::{AppMigration, Database, MigrationSet, Param, Row, SqliteStateStore};
use aigentflow::serde_json::{json, Value};
use aigentflow::states::{Event, StateContext, StateMachine, WorkflowState};
use aigentflow::{ProjectId, TaskId};
use sha2::{Digest, Sha256};

pub use aigentflow::{Error, Result};

/// The extension's migrations: the table differs per backend (types), the index does not.
pub const MIGRATIONS: &[AppMigration] = &[
    AppMigration::per_backend(
        1,
        "model usage",
        include_str!("../migrations/sqlite/V1__model_usage.sql"),
        include_str!("../migrations/postgres/V1__model_usage.sql"),
    ),
    AppMigration::new(2, "usage by task", include_str!("../migrations/V2__usage_by_task.sql")),
];

/// The name its migration set goes by in the database (`aigentflow status` lists it).
pub const SET: &str = "model_usage";

const INSERT: &str = "INSERT INTO model_usage (request_id, task_id, model, input_tokens,
        output_tokens, cost_usd, prompt_sha256, details, note, recorded_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const SELECT: &str = "SELECT request_id, task_id, model, input_tokens, output_tokens, cost_usd,
        prompt_sha256, details, note, recorded_at
    FROM model_usage WHERE task_id = ?1 ORDER BY recorded_at, request_id";

/// The extension's migration set.
pub fn migration_set() -> Result<MigrationSet> {
    Ok(MigrationSet::embedded(SET, MIGRATIONS)?)
}

/// Opens the database at `location` (a path, `sqlite:PATH` or a `postgres://` URL) with the
/// extension's migration set, creating and migrating what is missing.
pub fn open(location: &str) -> Result<Database> {
    Ok(Database::builder(location).migrations(migration_set()?)?.open()?)
}

/// One model call of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// The provider's id of the request: kept byte for byte (it is matched against the
    /// provider's invoice), so bound without redaction, by name.
    pub request_id: String,
    /// The task it was made for.
    pub task_id: TaskId,
    /// The model.
    pub model: String,
    /// Tokens in.
    pub input_tokens: i64,
    /// Tokens out.
    pub output_tokens: i64,
    /// What it cost, in US dollars.
    pub cost_usd: f64,
    /// SHA-256 of the prompt (the prompt itself is not kept).
    pub prompt_sha256: Vec<u8>,
    /// Anything else the provider said, as JSON (redacted on the way in).
    pub details: Value,
    /// A note, if any (redacted on the way in).
    pub note: Option<String>,
    /// When it was recorded, by the database's clock.
    pub recorded_at: DateTime<Utc>,
}

/// A model call to record with a task's next step.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The provider's request id.
    pub request_id: &'a str,
    /// The model.
    pub model: &'a str,
    /// The prompt sent (only its digest is stored).
    pub prompt: &'a str,
    /// Tokens in.
    pub input_tokens: i64,
    /// Tokens out.
    pub output_tokens: i64,
    /// What it cost, in US dollars.
    pub cost_usd: f64,
    /// Anything else the provider said.
    pub details: Value,
    /// A note.
    pub note: Option<&'a str>,
}

/// The extension over one database: the core stores it writes with, and its own table.
#[derive(Debug, Clone)]
pub struct ModelUsage {
    db: Database,
    states: SqliteStateStore,
    audit: AuditLog,
}

impl ModelUsage {
    /// The extension over `db`, which must have been opened with [`migration_set`].
    pub fn new(db: Database) -> Self {
        Self { states: SqliteStateStore::new(db.clone()), audit: AuditLog::new(db.clone()), db }
    }

    /// Starts a task (IDLE → ANALYZING) and saves it with its audit entry, in one transaction.
    pub fn start_task(&self, project: &str, task: &str, prompt: &str) -> Result<WorkflowState> {
        let context = StateContext::new(ProjectId::new(project), TaskId::new(task), prompt);
        let mut machine = StateMachine::new(context).with_clock(self.db.clock().clone());
        let t = machine.apply(Event::Start, None)?;
        self.db.write(|tx| {
            self.states.save_in(tx, machine.persisted())?;
            let entry = AuditEntry {
                project_id: Some(ProjectId::new(project)),
                task_id: Some(TaskId::new(task)),
                details: Some(json!({ "from": t.from.as_str(), "to": t.to.as_str() })),
                ..AuditEntry::new("task_started", Category::State)
            };
            self.audit.log_in(tx, &entry)?;
            Ok::<_, Error>(())
        })?;
        Ok(machine.state().clone())
    }

    /// Applies `event` to the task as stored and records `call` with it: the transition, its
    /// audit entry and the usage row are written in one transaction, so a usage row that
    /// cannot be stored (a negative count, a request id seen before) leaves the task where it
    /// was and the audit log without the entry.
    pub fn record_step(
        &self,
        task: &TaskId,
        event: Event,
        call: &Call<'_>,
    ) -> Result<WorkflowState> {
        self.db.write(|tx| {
            let stored = self.states.load_in(tx, task)?.ok_or_else(|| {
                aigentflow::persistence::Error::NotFound { what: "task", id: task.as_str().into() }
            })?;
            let mut machine =
                StateMachine::from_persisted(stored).with_clock(self.db.clock().clone());
            let t = machine.apply(event, Some(json!({ "model": call.model })))?;
            self.states.save_in(tx, machine.persisted())?;
            let entry = AuditEntry {
                project_id: Some(machine.persisted().project_id.clone()),
                task_id: Some(task.clone()),
                details: Some(json!({
                    "from": t.from.as_str(),
                    "event": t.event.as_str(),
                    "to": t.to.as_str(),
                    "requestId": call.request_id,
                })),
                ..AuditEntry::new("model_call", Category::Agent)
            };
            self.audit.log_in(tx, &entry)?;
            let digest = Sha256::digest(call.prompt.as_bytes());
            tx.execute(
                INSERT,
                &[
                    Param::unredacted("model_usage.request_id", call.request_id),
                    Param::text(task.as_str()),
                    Param::text(call.model),
                    Param::int(call.input_tokens),
                    Param::int(call.output_tokens),
                    Param::real(call.cost_usd),
                    Param::blob(&digest),
                    Param::json(&call.details)?,
                    Param::opt_text(call.note),
                    Param::time(tx.now()),
                ],
            )?;
            Ok(machine.state().clone())
        })
    }

    /// The task's model calls, oldest first.
    pub fn usage_of(&self, task: &TaskId) -> Result<Vec<Usage>> {
        Ok(self.db.read(|tx| tx.prepare(SELECT)?.query_map(&[Param::text(task.as_str())], read))?)
    }
}

fn read(r: &Row<'_>) -> aigentflow::persistence::Result<Usage> {
    Ok(Usage {
        request_id: r.get(0)?,
        task_id: TaskId::new(r.get::<String>(1)?),
        model: r.get(2)?,
        input_tokens: r.get(3)?,
        output_tokens: r.get(4)?,
        cost_usd: r.get(5)?,
        prompt_sha256: r.get(6)?,
        details: r.get(7)?,
        note: r.get(8)?,
        recorded_at: r.get(9)?,
    })
}
