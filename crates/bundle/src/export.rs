//! Reading a task's rows ([`read_task`], also what an import compares with) and writing a
//! bundle ([`export`]). All the crate's SELECTs live here.

use std::io::Write;

use aigentflow_audit::chain::{row_hash, HashedFields};
use aigentflow_audit::report::{self, SigningKey};
use aigentflow_audit::StoredEvent;
use aigentflow_core_states::{time, TaskId};
use aigentflow_persistence::audit_chain::{hashed_timestamp, EventFields, Origin};
use aigentflow_persistence::{Database, Param, Row, Tx};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::record::{
    signed_message, ApprovalRecord, AuditRowRecord, CheckpointRecord, DefinitionRecord, EndRecord,
    Header, InvocationRecord, OriginRecord, Record, SignatureRecord, TaskBundle, TaskRecord,
    TraceRecord, TransitionRecord, FORMAT, VERSION,
};

const TASK: &str = "SELECT task_id, project_id, state, context, created_at, updated_at
    FROM workflow_states WHERE task_id = ?1";
const TRANSITIONS: &str = "SELECT task_id, seq, from_state, to_state, event, metadata, created_at
    FROM state_transitions WHERE task_id = ?1 ORDER BY seq, id";
const CHECKPOINTS: &str = "SELECT id, task_id, seq, state, context, artifacts, created_at
    FROM checkpoints WHERE task_id = ?1 ORDER BY seq, created_at, id";
const APPROVALS: &str = "SELECT id, task_id, kind, payload, requested_by, requested_at, deadline,
        status, reviewer, comment, decided_at
    FROM approval_requests WHERE task_id = ?1 ORDER BY requested_at, id";
const TRACES: &str = "SELECT id, project_id, task_id, prompt, started_at, completed_at, success,
        duration_ms, token_usage, metadata, status, owner_pid, owner_started_at, owner_host,
        heartbeat_at, recovery_attempts
    FROM execution_traces WHERE task_id = ?1 ORDER BY feed_seq, id";
const INVOCATIONS: &str =
    "SELECT trace_id, agent, task_fragment, started_at, completed_at, outcome,
        quality_score, token_usage, output_summary, error
    FROM agent_invocations WHERE trace_id = ?1 ORDER BY id";
const AUDIT: &str = "SELECT id, timestamp, project_id, task_id, agent, action, category, details,
        user_id, ip_address, prev_hash, row_hash, origin_id, origin_hash, origin_source,
        severity, outcome, actor_type, actor_id, target_type, target_id, session_id, workflow_id,
        correlation_id, changes_before, changes_after, error, hash_version
    FROM audit_logs WHERE task_id = ?1 ORDER BY id";

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    /// The tasks, in the order they were written.
    pub tasks: Vec<String>,
    /// Records written between the header and the end record.
    pub records: u64,
}

/// Writes a bundle of `tasks` (each once, in the order given) to `out`, read in one snapshot of
/// `db`: the header, every task's records, the end record. A task that is not there is
/// [`Error::TaskNotFound`]; an audit row of a task whose hash does not follow from its fields,
/// or that carries none, is [`Error::NotExportable`] (`audit verify` names it).
pub fn export(db: &Database, tasks: &[TaskId], out: &mut dyn Write) -> Result<ExportReport> {
    export_signed(db, tasks, out, None)
}

/// [`export`], signed with `key` when one is given: after the end record, a
/// [`SignatureRecord`] of every byte written before it. An import that is given the key's
/// public half refuses the bundle if any byte was changed, or it was signed by another key or
/// not at all.
pub fn export_signed(
    db: &Database,
    tasks: &[TaskId],
    out: &mut dyn Write,
    key: Option<&SigningKey>,
) -> Result<ExportReport> {
    let mut names: Vec<String> = Vec::with_capacity(tasks.len());
    for task in tasks {
        if !names.iter().any(|n| n == task.as_str()) {
            names.push(task.as_str().to_owned());
        }
    }
    db.read(|tx| {
        let mut bundles = Vec::with_capacity(names.len());
        for name in &names {
            let bundle = read_task(tx, name)?
                .ok_or_else(|| Error::TaskNotFound { task: name.as_str().into() })?;
            check_audit(&bundle)?;
            bundles.push(bundle);
        }
        let header = Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            tool: format!("aigentflow {}", env!("CARGO_PKG_VERSION")),
            source: source(db),
            exported_at: time::to_db(tx.now()),
            tasks: names.clone(),
        };
        let mut lines = Lines { out, records: 0, digest: Sha256::new() };
        lines.line(&header)?;
        for b in bundles {
            lines.record(Record::Task(b.task))?;
            if let Some(d) = b.definition {
                lines.record(Record::Definition(d))?;
            }
            for r in b.transitions {
                lines.record(Record::Transition(r))?;
            }
            for r in b.checkpoints {
                lines.record(Record::Checkpoint(r))?;
            }
            for r in b.approvals {
                lines.record(Record::Approval(r))?;
            }
            for (trace, invocations) in b.traces {
                lines.record(Record::Trace(trace))?;
                for r in invocations {
                    lines.record(Record::Invocation(r))?;
                }
            }
            for r in b.audit {
                lines.record(Record::Audit(r))?;
            }
        }
        let records = lines.records;
        lines.line(&Record::End(EndRecord { records }))?;
        if let Some(key) = key {
            let sha256 = hex::encode(lines.digest.clone().finalize());
            let value = report::sign_bytes(key, &signed_message(&sha256));
            lines.line(&Record::Signature(SignatureRecord {
                algorithm: report::ALGORITHM.to_owned(),
                public_key: report::public_key_hex(&key.verifying_key()),
                sha256,
                value,
            }))?;
        }
        lines
            .out
            .flush()
            .map_err(|source| Error::Io { what: "cannot write the bundle", source })?;
        Ok(ExportReport { tasks: names.clone(), records })
    })
}

/// Where the tasks are, as the header names it: a file's absolute path (what the path that
/// opened it resolves to), or the server's URL without its password.
pub(crate) fn source(db: &Database) -> String {
    match db.path().and_then(|p| std::fs::canonicalize(p).ok()) {
        Some(path) => path.to_string_lossy().into_owned(),
        None => db.location().to_string_lossy().into_owned(),
    }
}

/// The bundle's output, one JSON value per line.
struct Lines<'o> {
    out: &'o mut dyn Write,
    records: u64,
    /// Of every byte written.
    digest: Sha256,
}

impl Lines<'_> {
    fn line(&mut self, value: &impl Serialize) -> Result<()> {
        let mut text = serde_json::to_vec(value).map_err(|e| Error::Io {
            what: "cannot encode a bundle line",
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        self.digest.update(&text);
        self.out
            .write_all(&text)
            .map_err(|source| Error::Io { what: "cannot write the bundle", source })
    }

    fn record(&mut self, record: Record) -> Result<()> {
        self.records += 1;
        self.line(&record)
    }
}

/// Every audit row of the bundle carries a hash that follows from its fields and previous hash.
fn check_audit(bundle: &TaskBundle) -> Result<()> {
    for row in &bundle.audit {
        if audit_hash(row) != row.row_hash {
            return Err(Error::NotExportable {
                task: bundle.task.task_id.as_str().into(),
                reason: format!(
                    "audit row {} does not match its hash (see `aigentflow audit verify`)",
                    row.id
                )
                .into(),
            });
        }
    }
    Ok(())
}

/// The row hash an audit record's fields give after its `prev_hash`
/// ([`AuditRowRecord::computed_hash`]).
pub(crate) fn audit_hash(row: &AuditRowRecord) -> String {
    let timestamp = hashed_timestamp(row.timestamp.as_bytes());
    let origin_id = row.origin.as_ref().map(|o| o.id.to_string());
    fn b(t: &Option<String>) -> Option<&[u8]> {
        t.as_deref().map(str::as_bytes)
    }
    let fields = HashedFields {
        id: row.id,
        timestamp: &timestamp,
        project_id: b(&row.project_id),
        task_id: Some(row.task_id.as_bytes()),
        agent: b(&row.agent),
        action: row.action.as_bytes(),
        category: row.category.as_bytes(),
        details: b(&row.details),
        user_id: b(&row.user_id),
        ip_address: b(&row.ip_address),
        event: row.hash_version.map(|_| match &row.event {
            Some(event) => EventFields::from_cells(event.cells().map(|c| c.map(str::as_bytes))),
            None => EventFields::default(),
        }),
        origin: row.origin.as_ref().and_then(|o| {
            Origin::of(
                origin_id.as_deref().map(str::as_bytes),
                Some(o.hash.as_bytes()),
                Some(o.source.as_bytes()),
            )
        }),
    };
    row_hash(&row.prev_hash, &fields)
}

/// The definition a task started under, with its stored content.
const DEFINITION: &str = "SELECT d.name, d.version, d.content_hash, d.definition
    FROM task_workflows t
    JOIN workflow_definitions d ON d.name = t.workflow_name AND d.version = t.workflow_version
    WHERE t.task_id = ?1";

/// A task's rows as a bundle holds them, read in `tx`; None if the task is not there.
pub fn read_task(tx: &Tx<'_>, task: &str) -> Result<Option<TaskBundle>> {
    let id = [Param::text(task)];
    let Some(task_row) = tx.query_row(TASK, &id, |r| {
        Ok(TaskRecord {
            task_id: r.get(0)?,
            project_id: r.get(1)?,
            state: r.get(2)?,
            context: r.get(3)?,
            created_at: r.get(4)?,
            updated_at: r.get(5)?,
        })
    })?
    else {
        return Ok(None);
    };
    let transitions = tx.prepare(TRANSITIONS)?.query_map(&id, |r| {
        Ok(TransitionRecord {
            task_id: r.get(0)?,
            seq: r.get(1)?,
            from_state: r.get(2)?,
            to_state: r.get(3)?,
            event: r.get(4)?,
            metadata: r.get(5)?,
            created_at: r.get(6)?,
        })
    })?;
    let checkpoints = tx.prepare(CHECKPOINTS)?.query_map(&id, |r| {
        Ok(CheckpointRecord {
            id: r.get(0)?,
            task_id: r.get(1)?,
            seq: r.get(2)?,
            state: r.get(3)?,
            context: r.get(4)?,
            artifacts: r.get(5)?,
            created_at: r.get(6)?,
        })
    })?;
    let approvals = tx.prepare(APPROVALS)?.query_map(&id, |r| {
        Ok(ApprovalRecord {
            id: r.get(0)?,
            task_id: r.get(1)?,
            approval_kind: r.get(2)?,
            payload: r.get(3)?,
            requested_by: r.get(4)?,
            requested_at: r.get(5)?,
            deadline: r.get(6)?,
            status: r.get(7)?,
            reviewer: r.get(8)?,
            comment: r.get(9)?,
            decided_at: r.get(10)?,
        })
    })?;
    let trace_rows = tx.prepare(TRACES)?.query_map(&id, read_trace)?;
    let mut traces = Vec::with_capacity(trace_rows.len());
    let mut invocations = tx.prepare(INVOCATIONS)?;
    for trace in trace_rows {
        let of_trace = invocations.query_map(&[Param::text(&trace.id)], |r| {
            Ok(InvocationRecord {
                trace_id: r.get(0)?,
                agent: r.get(1)?,
                task_fragment: r.get(2)?,
                started_at: r.get(3)?,
                completed_at: r.get(4)?,
                outcome: r.get(5)?,
                quality_score: r.get(6)?,
                token_usage: r.get(7)?,
                output_summary: r.get(8)?,
                error: r.get(9)?,
            })
        })?;
        traces.push((trace, of_trace));
    }
    let audit = tx.prepare(AUDIT)?.query_map(&id, read_audit)?;
    let audit = audit.into_iter().collect::<Result<Vec<_>>>()?;
    let definition = tx.query_row(DEFINITION, &id, |r| {
        Ok(DefinitionRecord {
            task_id: task.to_owned(),
            name: r.get(0)?,
            version: r.get(1)?,
            content_hash: r.get(2)?,
            definition: r.get(3)?,
        })
    })?;
    Ok(Some(TaskBundle {
        task: task_row,
        transitions,
        checkpoints,
        approvals,
        traces,
        audit,
        definition,
    }))
}

fn read_trace(r: &Row<'_>) -> aigentflow_persistence::Result<TraceRecord> {
    Ok(TraceRecord {
        id: r.get(0)?,
        project_id: r.get(1)?,
        task_id: r.get(2)?,
        prompt: r.get(3)?,
        started_at: r.get(4)?,
        completed_at: r.get(5)?,
        success: r.get(6)?,
        duration_ms: r.get(7)?,
        token_usage: r.get(8)?,
        metadata: r.get(9)?,
        status: r.get(10)?,
        owner_pid: r.get(11)?,
        owner_started_at: r.get(12)?,
        owner_host: r.get(13)?,
        heartbeat_at: r.get(14)?,
        recovery_attempts: r.get(15)?,
    })
}

/// An audit row; one without hashes, or with partial provenance (both written around the
/// log), is [`Error::NotExportable`].
fn read_audit(r: &Row<'_>) -> aigentflow_persistence::Result<Result<AuditRowRecord>> {
    let id: i64 = r.get(0)?;
    let task_id: String = r.get(3)?;
    let refuse = |what: &str| {
        Err(Error::NotExportable {
            task: task_id.as_str().into(),
            reason: format!("audit row {id} {what}: written around the audit log (see `aigentflow audit verify`)").into(),
        })
    };
    let (prev_hash, row_hash): (Option<String>, Option<String>) = (r.get(10)?, r.get(11)?);
    let (Some(prev_hash), Some(row_hash)) = (prev_hash, row_hash) else {
        return Ok(refuse("has no hash"));
    };
    let origin = match (
        r.get::<Option<i64>>(12)?,
        r.get::<Option<String>>(13)?,
        r.get::<Option<String>>(14)?,
    ) {
        (None, None, None) => None,
        (Some(id), Some(hash), Some(source)) => Some(OriginRecord { id, hash, source }),
        _ => return Ok(refuse("has a partial provenance")),
    };
    let mut cells: [Option<String>; 12] = Default::default();
    for (i, cell) in cells.iter_mut().enumerate() {
        *cell = r.get(15 + i)?;
    }
    let event = StoredEvent::from_cells(cells);
    let hash_version: Option<i64> = r.get(27)?;
    let event = match hash_version {
        None if event != StoredEvent::default() => {
            return Ok(refuse("holds audit event fields its hash does not cover"))
        }
        None => None,
        Some(2) => (event != StoredEvent::default()).then(|| Box::new(event)),
        Some(other) => return Ok(refuse(&format!("has an unknown hash version {other}"))),
    };
    Ok(Ok(AuditRowRecord {
        id,
        timestamp: r.get(1)?,
        project_id: r.get(2)?,
        task_id: task_id.clone(),
        agent: r.get(4)?,
        action: r.get(5)?,
        category: r.get(6)?,
        details: r.get(7)?,
        user_id: r.get(8)?,
        ip_address: r.get(9)?,
        prev_hash,
        row_hash,
        origin,
        event,
        hash_version,
    }))
}
