//! Loading a bundle into a database in one transaction ([`import`]). All the crate's writes
//! live here.

use std::collections::HashSet;
use std::io::BufRead;

use aigentflow_audit::{AuditLog, ImportedEntry, ImportedOrigin};
use aigentflow_core_states::{time, TaskId};
use aigentflow_persistence::{Backend, Clean, Database, Param, SqliteStateStore, Tx};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::export::read_task;
use crate::parse::{read_bundle, Bundle};
use crate::record::{
    ApprovalRecord, AuditRowRecord, CheckpointRecord, InvocationRecord, TaskBundle, TaskRecord,
    TraceRecord, TransitionRecord,
};

/// The task's advisory lock on PostgreSQL, the one the state store takes to save it (held to the
/// end of the transaction), so an import and a save of the same task take turns.
const LOCK_TASK_PG: &str = "SELECT pg_advisory_xact_lock(hashtextextended(?1, 0))";
const INSERT_TASK: &str = "INSERT INTO workflow_states
    (task_id, project_id, state, context, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const INSERT_TRANSITION: &str = "INSERT INTO state_transitions
    (task_id, seq, from_state, to_state, event, metadata, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const INSERT_CHECKPOINT: &str = "INSERT INTO checkpoints
    (id, task_id, seq, state, context, artifacts, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const INSERT_APPROVAL: &str = "INSERT INTO approval_requests
    (id, task_id, kind, payload, requested_by, requested_at, deadline, status, reviewer, comment,
     decided_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
/// `feed_seq` is left out: the trace takes the next place in this database's feed.
const INSERT_TRACE: &str = "INSERT INTO execution_traces
    (id, project_id, task_id, prompt, started_at, completed_at, success, duration_ms, token_usage,
     metadata, status, owner_pid, owner_started_at, owner_host, heartbeat_at, recovery_attempts)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
const INSERT_INVOCATION: &str = "INSERT INTO agent_invocations
    (trace_id, agent, task_fragment, started_at, completed_at, outcome, quality_score, token_usage,
     output_summary, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id";
const BIND_WORKFLOW: &str =
    "INSERT INTO task_workflows (task_id, workflow_name, workflow_version) VALUES (?1, ?2, ?3)";
/// Which task holds a checkpoint, an approval or a trace id here.
const CHECKPOINT_OWNER: &str = "SELECT task_id FROM checkpoints WHERE id = ?1";
const APPROVAL_OWNER: &str = "SELECT task_id FROM approval_requests WHERE id = ?1";
const TRACE_OWNER: &str = "SELECT task_id FROM execution_traces WHERE id = ?1";
/// The hashes a task's audit rows carry here: their own, and where imported the original's.
const AUDIT_ROOTS: &str = "SELECT row_hash, origin_hash FROM audit_logs WHERE task_id = ?1";

/// What happened to one task of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written.
    Imported,
    /// Already here with the same content: nothing written.
    AlreadyPresent,
}

/// One task of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskOutcome {
    pub task_id: String,
    pub outcome: Outcome,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The bundle's source, as its header gives it.
    pub source: String,
    pub tasks: Vec<TaskOutcome>,
    /// Audit entries appended to this database's chain.
    pub audit_appended: u64,
    /// Audit entries already here (imported before, or written here first): not appended.
    pub audit_already_present: u64,
    /// The key whose signature covers the bundle ([`Bundle::signed_by`]), if it was signed.
    pub signed_by: Option<String>,
}

/// Reads a whole bundle ([`read_bundle`]: every line checked first) and imports it
/// ([`import_bundle`]).
pub fn import(db: &Database, input: &mut dyn BufRead) -> Result<ImportReport> {
    let bundle = read_bundle(input)?;
    import_bundle(db, &bundle)
}

/// Imports a checked bundle in one write transaction: all of it, or nothing.
///
/// Every text goes through the redaction policy on its way in, as any write does. A task not
/// here is written with its ids (task, checkpoints, approvals, traces; transitions and
/// invocations are numbered by this database, in the bundle's order, and keep their `seq`); an
/// id taken here by another task's row is [`Error::IdTaken`]. A task already here is compared
/// with the bundle (redacted the same way): equal is [`Outcome::AlreadyPresent`] and nothing of
/// it is written, different is [`Error::Conflict`]. Each audit entry is appended to this
/// database's chain (a new id, new hashes, its own timestamp) with its provenance: where it was
/// first written (its id, its hash, that database's location), which for an entry that was
/// itself imported is its own provenance. An entry whose original hash is already here, as a
/// row's hash or provenance, is not appended again, so importing a bundle twice, or back into
/// the database it came from, adds nothing.
pub fn import_bundle(db: &Database, bundle: &Bundle) -> Result<ImportReport> {
    let log = AuditLog::new(db.clone());
    let states = SqliteStateStore::new(db.clone());
    // This database as a bundle exported from it names its source.
    let this_db = crate::export::source(db);
    db.write(|tx| {
        let mut report = ImportReport {
            source: bundle.header.source.clone(),
            tasks: Vec::with_capacity(bundle.tasks.len()),
            audit_appended: 0,
            audit_already_present: 0,
            signed_by: bundle.signed_by.clone(),
        };
        let mut entries = Vec::new();
        let mut given_origins = imported_origins(tx)?;
        for given in &bundle.tasks {
            let task = clean_task(given)?;
            let id = task.task.task_id.as_str();
            if tx.backend() == Backend::Postgres {
                tx.query_row(LOCK_TASK_PG, &[Param::text(id)], |_| Ok(()))?;
            }
            let outcome = match read_task(tx, id)? {
                Some(here) => {
                    if let Some(what) = difference(&here, &task) {
                        return Err(Error::Conflict { task: id.into(), what });
                    }
                    Outcome::AlreadyPresent
                }
                None => {
                    ids_free(tx, &task)?;
                    insert(tx, &task)?;
                    // What is written is what the state store reads back: a task it could not
                    // load (a context that is not an object, a checkpoint's artifacts that are
                    // not a list) is refused, and the transaction takes everything back.
                    states.load_in(tx, &TaskId::new(id)).map_err(|e| Error::Unreadable {
                        task: id.into(),
                        reason: e.to_string().into(),
                    })?;
                    Outcome::Imported
                }
            };
            report.tasks.push(TaskOutcome { task_id: id.to_owned(), outcome });
            let mut roots = HashSet::new();
            let mut stmt = tx.prepare(AUDIT_ROOTS)?;
            let mut rows = stmt.query(&[Param::text(id)])?;
            while let Some(r) = rows.next()? {
                roots.extend(r.get::<Option<String>>(0)?);
                roots.extend(r.get::<Option<String>>(1)?);
            }
            for row in &given.audit {
                let origin = origin(row, &bundle.header.source);
                check_origin(tx, &this_db, &mut given_origins, &origin)?;
                if roots.insert(origin.hash.clone()) {
                    entries.push(imported(row, origin)?);
                } else {
                    report.audit_already_present += 1;
                }
            }
        }
        report.audit_appended = log.append_imported_in(tx, &entries)?.len() as u64;
        Ok(report)
    })
}

/// Refuses an audit row whose origin this database knows with another hash: a row of this very
/// database (`here`, as an export of it names it), or one `given` holds: the origins imported
/// here before ([`imported_origins`]) and those of this import's rows so far. Keyless hashes cannot tell a
/// bundle forged whole from a genuine one, but a row claiming to be one this database holds, or
/// has imported, must be that row. A source is the same however its path is spelled
/// ([`same_source`]).
fn check_origin(
    tx: &Tx<'_>,
    here: &str,
    given: &mut Origins,
    origin: &ImportedOrigin,
) -> Result<()> {
    let mut known: Vec<String> = Vec::new();
    if same_source(&origin.source, here) {
        known.extend(
            tx.query_row(
                "SELECT row_hash FROM audit_logs WHERE id = ?1 AND origin_id IS NULL",
                &[Param::int(origin.id)],
                |r| r.get::<Option<String>>(0),
            )?
            .flatten(),
        );
    }
    known.extend(
        given
            .get(&origin.id)
            .into_iter()
            .flatten()
            .filter(|(source, _)| same_source(source, &origin.source))
            .map(|(_, hash)| hash.clone()),
    );
    if let Some(other) = known.iter().find(|k| **k != origin.hash) {
        return Err(Error::OriginDiffers {
            id: origin.id,
            source_db: origin.source.as_str().into(),
            known: other.chars().take(12).collect::<String>().into(),
            given: origin.hash.chars().take(12).collect::<String>().into(),
        });
    }
    given.entry(origin.id).or_default().push((origin.source.clone(), origin.hash.clone()));
    Ok(())
}

/// Origins by id: (source, hash) of each.
type Origins = std::collections::HashMap<i64, Vec<(String, String)>>;

/// Every origin imported into this database before: one scan per import, whatever the bundle.
fn imported_origins(tx: &Tx<'_>) -> Result<Origins> {
    let mut out = Origins::new();
    let mut stmt = tx.prepare(
        "SELECT origin_id, origin_source, origin_hash FROM audit_logs WHERE origin_id IS NOT NULL",
    )?;
    let mut rows = stmt.query(&[])?;
    while let Some(r) = rows.next()? {
        let (id, source, hash) =
            (r.get::<Option<i64>>(0)?, r.get::<Option<String>>(1)?, r.get::<Option<String>>(2)?);
        if let (Some(id), Some(source), Some(hash)) = (id, source, hash) {
            out.entry(id).or_default().push((source, hash));
        }
    }
    Ok(out)
}

/// Whether two sources name one database: equal as written, or two paths to one file (the same
/// file here, or the same path once `.`, `..` and repeated separators are read).
fn same_source(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Component, Path, PathBuf};
    if a == b {
        return true;
    }
    let (pa, pb) = (Path::new(a), Path::new(b));
    if !pa.is_absolute() || !pb.is_absolute() {
        return false;
    }
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(pa), std::fs::metadata(pb)) {
        return ma.dev() == mb.dev() && ma.ino() == mb.ino();
    }
    let lexical = |p: &Path| {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    };
    lexical(pa) == lexical(pb)
}

/// Where an audit row was first written: its own provenance if it was imported, else itself in
/// the bundle's source.
fn origin(row: &AuditRowRecord, source: &str) -> ImportedOrigin {
    match &row.origin {
        Some(o) => ImportedOrigin { id: o.id, hash: o.hash.clone(), source: o.source.clone() },
        None => {
            ImportedOrigin { id: row.id, hash: row.row_hash.clone(), source: source.to_owned() }
        }
    }
}

fn imported(row: &AuditRowRecord, origin: ImportedOrigin) -> Result<ImportedEntry> {
    Ok(ImportedEntry {
        timestamp: stamp(&row.timestamp)?,
        project_id: row.project_id.clone(),
        task_id: Some(row.task_id.clone()),
        agent: row.agent.clone(),
        action: row.action.clone(),
        category: row.category.clone(),
        details: row.details.clone(),
        user_id: row.user_id.clone(),
        ip_address: row.ip_address.clone(),
        event: row.event.as_deref().cloned().unwrap_or_default(),
        origin,
    })
}

/// A stored timestamp the bundle's reader checked.
fn stamp(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    time::parse_stored(text).ok_or_else(|| {
        aigentflow_persistence::Error::InvalidInput {
            what: "timestamp",
            reason: format!("{text:?} is not in the stored form").into(),
        }
        .into()
    })
}

fn opt_stamp(text: &Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    text.as_deref().map(stamp).transpose()
}

/// The first part of a task that differs between what is here and the bundle, if any.
fn difference(here: &TaskBundle, given: &TaskBundle) -> Option<&'static str> {
    if here.task != given.task {
        Some("state")
    } else if here.transitions != given.transitions {
        Some("history")
    } else if here.checkpoints != given.checkpoints {
        Some("checkpoints")
    } else if here.approvals != given.approvals {
        Some("approvals")
    } else if here.traces != given.traces {
        Some("traces or invocations")
    } else if here.definition.as_ref().map(|d| (&d.name, d.version))
        != given.definition.as_ref().map(|d| (&d.name, d.version))
    {
        Some("workflow definition")
    } else {
        None
    }
}

/// No checkpoint, approval or trace id of the task is taken here.
fn ids_free(tx: &Tx<'_>, task: &TaskBundle) -> Result<()> {
    let ids = task
        .checkpoints
        .iter()
        .map(|c| ("checkpoint", CHECKPOINT_OWNER, &c.id))
        .chain(task.approvals.iter().map(|a| ("approval", APPROVAL_OWNER, &a.id)))
        .chain(task.traces.iter().map(|(t, _)| ("trace", TRACE_OWNER, &t.id)));
    for (what, sql, id) in ids {
        if tx.query_row(sql, &[Param::text(id)], |_| Ok(()))?.is_some() {
            return Err(Error::IdTaken {
                what,
                id: id.as_str().into(),
                task: task.task.task_id.as_str().into(),
            });
        }
    }
    Ok(())
}

fn insert(tx: &Tx<'_>, b: &TaskBundle) -> Result<()> {
    // The definition first (the task's binding refers to it): loaded, or found loaded with the
    // same content; the same name and version with other content is refused.
    let definition = b
        .definition
        .as_ref()
        .map(|d| {
            aigentflow_core_states::WorkflowDefinition::parse(
                &d.definition,
                aigentflow_core_states::Format::Json,
            )
            .map_err(|e| Error::Invalid {
                line: 0,
                reason: format!("definition of task {}: {e}", d.task_id).into(),
            })
        })
        .transpose()?;
    if let Some(d) = &definition {
        aigentflow_workflows::Workflows::new(tx.database().clone()).load_in(tx, d)?;
    }
    let t = &b.task;
    tx.execute(
        INSERT_TASK,
        &[
            Param::text(&t.task_id),
            Param::text(&t.project_id),
            Param::text(&t.state),
            json_param(&t.context)?,
            Param::time(stamp(&t.created_at)?),
            Param::time(stamp(&t.updated_at)?),
        ],
    )?;
    if let Some(d) = &definition {
        tx.execute(
            BIND_WORKFLOW,
            &[Param::text(&t.task_id), Param::text(&d.name), Param::int(i64::from(d.version))],
        )?;
    }
    for r in &b.transitions {
        tx.execute(
            INSERT_TRANSITION,
            &[
                Param::text(&r.task_id),
                opt_int(r.seq),
                Param::text(&r.from_state),
                Param::text(&r.to_state),
                Param::text(&r.event),
                opt_json_param(&r.metadata)?,
                Param::time(stamp(&r.created_at)?),
            ],
        )?;
    }
    for r in &b.checkpoints {
        tx.execute(
            INSERT_CHECKPOINT,
            &[
                Param::text(&r.id),
                Param::text(&r.task_id),
                opt_int(r.seq),
                Param::text(&r.state),
                json_param(&r.context)?,
                json_param(&r.artifacts)?,
                Param::time(stamp(&r.created_at)?),
            ],
        )?;
    }
    for r in &b.approvals {
        tx.execute(
            INSERT_APPROVAL,
            &[
                Param::text(&r.id),
                Param::text(&r.task_id),
                Param::text(&r.approval_kind),
                json_param(&r.payload)?,
                Param::text(&r.requested_by),
                Param::time(stamp(&r.requested_at)?),
                Param::opt_time(opt_stamp(&r.deadline)?),
                Param::text(&r.status),
                Param::opt_text(r.reviewer.as_deref()),
                Param::opt_text(r.comment.as_deref()),
                Param::opt_time(opt_stamp(&r.decided_at)?),
            ],
        )?;
    }
    for (r, invocations) in &b.traces {
        tx.execute(
            INSERT_TRACE,
            &[
                Param::text(&r.id),
                Param::text(&r.project_id),
                Param::text(&r.task_id),
                Param::text(&r.prompt),
                Param::time(stamp(&r.started_at)?),
                Param::opt_time(opt_stamp(&r.completed_at)?),
                opt_int(r.success),
                opt_int(r.duration_ms),
                opt_json_param(&r.token_usage)?,
                opt_json_param(&r.metadata)?,
                Param::text(&r.status),
                opt_int(r.owner_pid),
                Param::opt_time(opt_stamp(&r.owner_started_at)?),
                Param::opt_text(r.owner_host.as_deref()),
                Param::opt_time(opt_stamp(&r.heartbeat_at)?),
                Param::int(r.recovery_attempts),
            ],
        )?;
        for i in invocations {
            let id = tx.query_row(
                INSERT_INVOCATION,
                &[
                    Param::text(&i.trace_id),
                    Param::text(&i.agent),
                    Param::opt_text(i.task_fragment.as_deref()),
                    Param::time(stamp(&i.started_at)?),
                    Param::opt_time(opt_stamp(&i.completed_at)?),
                    Param::opt_text(i.outcome.as_deref()),
                    i.quality_score.map_or(Param::NULL, Param::real),
                    opt_json_param(&i.token_usage)?,
                    Param::opt_text(i.output_summary.as_deref()),
                    Param::opt_text(i.error.as_deref()),
                ],
                |r| r.get::<i64>(0),
            )?;
            // Every invocation is also its agent span, here as where it was recorded.
            if let Some(id) = id {
                aigentflow_tracker::mirror_invocation_in(
                    tx,
                    aigentflow_tracker::InvocationId::new(id),
                )?;
            }
        }
    }
    Ok(())
}

fn opt_int(n: Option<i64>) -> Param<'static> {
    n.map_or(Param::NULL, Param::int)
}

/// Text as the redaction policy stores it.
fn clean(text: &str) -> String {
    Clean::text(text).into_owned()
}

fn clean_opt(text: &Option<String>) -> Option<String> {
    text.as_deref().map(clean)
}

/// A JSON column's text through the policy's JSON form ([`Clean::json_text`]), as a store
/// writes a JSON value: unchanged bytes when there is nothing to redact (so a task exported and
/// imported again is the same), and never the text policy over JSON text.
fn clean_json(text: &str) -> Result<String> {
    Ok(Clean::json_text(text)?.into_owned())
}

fn clean_json_opt(text: &Option<String>) -> Result<Option<String>> {
    text.as_deref().map(clean_json).transpose()
}

/// A JSON column's text bound by [`clean_json`]'s rule (the text is clean already: the rule
/// leaves it as it is, and no second policy runs over it).
fn json_param(text: &str) -> Result<Param<'_>> {
    Ok(Param::from_clean(Clean::json_text(text)?))
}

fn opt_json_param(text: &Option<String>) -> Result<Param<'_>> {
    text.as_deref().map_or(Ok(Param::NULL), json_param)
}

/// A task's records as they would be stored here: every text through the redaction policy (the
/// audit rows aside: the audit log redacts them as it appends them).
fn clean_task(b: &TaskBundle) -> Result<TaskBundle> {
    let t = &b.task;
    Ok(TaskBundle {
        definition: b.definition.clone(),
        task: TaskRecord {
            task_id: clean(&t.task_id),
            project_id: clean(&t.project_id),
            state: clean(&t.state),
            context: clean_json(&t.context)?,
            created_at: t.created_at.clone(),
            updated_at: t.updated_at.clone(),
        },
        transitions: b
            .transitions
            .iter()
            .map(|r| {
                Ok(TransitionRecord {
                    task_id: clean(&r.task_id),
                    seq: r.seq,
                    from_state: clean(&r.from_state),
                    to_state: clean(&r.to_state),
                    event: clean(&r.event),
                    metadata: clean_json_opt(&r.metadata)?,
                    created_at: r.created_at.clone(),
                })
            })
            .collect::<Result<_>>()?,
        checkpoints: b
            .checkpoints
            .iter()
            .map(|r| {
                Ok(CheckpointRecord {
                    id: clean(&r.id),
                    task_id: clean(&r.task_id),
                    seq: r.seq,
                    state: clean(&r.state),
                    context: clean_json(&r.context)?,
                    artifacts: clean_json(&r.artifacts)?,
                    created_at: r.created_at.clone(),
                })
            })
            .collect::<Result<_>>()?,
        approvals: b
            .approvals
            .iter()
            .map(|r| {
                Ok(ApprovalRecord {
                    id: clean(&r.id),
                    task_id: clean(&r.task_id),
                    approval_kind: clean(&r.approval_kind),
                    payload: clean_json(&r.payload)?,
                    requested_by: clean(&r.requested_by),
                    requested_at: r.requested_at.clone(),
                    deadline: r.deadline.clone(),
                    status: clean(&r.status),
                    reviewer: clean_opt(&r.reviewer),
                    comment: clean_opt(&r.comment),
                    decided_at: r.decided_at.clone(),
                })
            })
            .collect::<Result<_>>()?,
        traces: b
            .traces
            .iter()
            .map(|(r, invocations)| {
                let trace = TraceRecord {
                    id: clean(&r.id),
                    project_id: clean(&r.project_id),
                    task_id: clean(&r.task_id),
                    prompt: clean(&r.prompt),
                    started_at: r.started_at.clone(),
                    completed_at: r.completed_at.clone(),
                    success: r.success,
                    duration_ms: r.duration_ms,
                    token_usage: clean_json_opt(&r.token_usage)?,
                    metadata: clean_json_opt(&r.metadata)?,
                    status: clean(&r.status),
                    owner_pid: r.owner_pid,
                    owner_started_at: r.owner_started_at.clone(),
                    owner_host: clean_opt(&r.owner_host),
                    heartbeat_at: r.heartbeat_at.clone(),
                    recovery_attempts: r.recovery_attempts,
                };
                let invocations = invocations
                    .iter()
                    .map(|i| {
                        Ok(InvocationRecord {
                            trace_id: clean(&i.trace_id),
                            agent: clean(&i.agent),
                            task_fragment: clean_opt(&i.task_fragment),
                            started_at: i.started_at.clone(),
                            completed_at: i.completed_at.clone(),
                            outcome: clean_opt(&i.outcome),
                            quality_score: i.quality_score,
                            token_usage: clean_json_opt(&i.token_usage)?,
                            output_summary: clean_opt(&i.output_summary),
                            error: clean_opt(&i.error),
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok((trace, invocations))
            })
            .collect::<Result<_>>()?,
        audit: Vec::new(),
    })
}
