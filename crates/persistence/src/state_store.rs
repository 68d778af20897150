//! [`SqliteStateStore`]: the [`StateStore`] on SQLite. All its SQL lives in this module.
//!
//! A save costs O(new transitions + new checkpoints): the per-task sequence numbers say what is
//! stored (one index probe each), and only what follows is inserted. Checkpoints live in their
//! table only, not again inside the context JSON. Listing a project is three queries.

use std::collections::HashMap;

use aigentflow_core_states::{
    time, Checkpoint, Event, PersistedState, ProjectId, StateContext, StateStore, StateTransition,
    TaskId, WorkflowState,
};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use serde_json::Value;

use crate::db::{Database, Tx};
use crate::error::{Error, Result};
use crate::redact::{redact_json, redacted_json};

const UPSERT_STATE: &str = "
    INSERT INTO workflow_states (task_id, project_id, state, context, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?5)
    ON CONFLICT(task_id) DO UPDATE SET
        project_id = excluded.project_id, state = excluded.state,
        context = excluded.context, updated_at = excluded.updated_at
    WHERE project_id IS NOT excluded.project_id OR state IS NOT excluded.state
        OR context IS NOT excluded.context";
const LAST_TRANSITION: &str = "
    SELECT seq, from_state, to_state, event FROM state_transitions
    WHERE task_id = ?1 ORDER BY seq DESC LIMIT 1";
const INSERT_TRANSITION: &str = "
    INSERT INTO state_transitions (task_id, seq, from_state, to_state, event, metadata, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const LAST_CHECKPOINT_SEQ: &str = "SELECT MAX(seq) FROM checkpoints WHERE task_id = ?1";
const INSERT_CHECKPOINT: &str = "
    INSERT INTO checkpoints (id, task_id, seq, state, context, artifacts, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const STATE_COLUMNS: &str = "task_id, project_id, state, context, created_at, updated_at";
const TRANSITION_COLUMNS: &str =
    "t.task_id, t.id, t.from_state, t.to_state, t.event, t.metadata, t.created_at";
const CHECKPOINT_COLUMNS: &str = "c.task_id, c.id, c.state, c.context, c.artifacts, c.created_at";

/// A task that can be resumed: not terminal, with its latest checkpoint if it has one.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ResumableTask {
    pub task_id: TaskId,
    pub project_id: ProjectId,
    pub state: WorkflowState,
    #[serde(with = "time::serde_millis")]
    pub updated_at: DateTime<Utc>,
    pub latest_checkpoint: Option<Checkpoint>,
}

/// One line of a task listing, without history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskSummary {
    pub task_id: TaskId,
    pub project_id: ProjectId,
    pub state: WorkflowState,
    pub transitions: u64,
    pub checkpoints: u64,
    #[serde(with = "time::serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time::serde_millis")]
    pub updated_at: DateTime<Utc>,
}

/// The task states of one database.
#[derive(Debug, Clone)]
pub struct SqliteStateStore {
    db: Database,
}

impl SqliteStateStore {
    /// A state store over `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Saves inside a caller's transaction (e.g. together with the audit entry of the transition).
    ///
    /// Appends the transitions and checkpoints that follow the stored ones. A state whose history
    /// is shorter than the stored one is a [`Error::StaleSave`], one whose history disagrees with
    /// it a [`Error::HistoryConflict`]; in both cases nothing is written. Saving the same state
    /// twice changes nothing.
    pub fn save_in(&self, tx: &Tx<'_>, state: &PersistedState) -> Result<()> {
        let conn = tx.conn();
        let task = state.task_id.as_str();
        let stored = conn
            .prepare_cached(LAST_TRANSITION)?
            .query_row([task], |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    WorkflowState::parse(&r.get::<_, String>(1)?),
                    WorkflowState::parse(&r.get::<_, String>(2)?),
                    Event::parse(&r.get::<_, String>(3)?),
                ))
            })
            .optional()?;
        let given = state.history.len() as u64;
        let stored_len = match stored {
            None => 0,
            Some((seq, from, to, event)) => {
                if given < seq {
                    return Err(Error::StaleSave {
                        task_id: state.task_id.clone(),
                        stored: seq,
                        given,
                    });
                }
                let mine = &state.history[(seq - 1) as usize];
                if mine.from != from || mine.to != to || mine.event != event {
                    return Err(Error::HistoryConflict { task_id: state.task_id.clone(), seq });
                }
                seq
            }
        };
        if state.context.task_id != state.task_id {
            return Err(Error::InvalidInput {
                what: "state",
                reason: format!(
                    "context.taskId {} differs from taskId {}",
                    state.context.task_id, state.task_id
                ),
            });
        }

        let context = context_json(&state.context)?;
        let now = time::to_db(tx.now());
        conn.prepare_cached(UPSERT_STATE)?.execute(params![
            task,
            state.project_id.as_str(),
            state.state.as_str(),
            context,
            now
        ])?;

        let mut insert = conn.prepare_cached(INSERT_TRANSITION)?;
        for (i, t) in state.history.iter().enumerate().skip(stored_len as usize) {
            let metadata = t.metadata.as_ref().map(json_redacted).transpose()?;
            insert.execute(params![
                task,
                i as i64 + 1,
                t.from.as_str(),
                t.to.as_str(),
                t.event.as_str(),
                metadata,
                time::to_db(t.timestamp)
            ])?;
        }

        let stored_checkpoints: Option<i64> =
            conn.prepare_cached(LAST_CHECKPOINT_SEQ)?.query_row([task], |r| r.get(0))?;
        let stored_checkpoints = stored_checkpoints.unwrap_or(0).max(0);
        let mut insert = conn.prepare_cached(INSERT_CHECKPOINT)?;
        for (i, c) in state.context.checkpoints.iter().enumerate().skip(stored_checkpoints as usize)
        {
            let mut cp_context = Value::Object(c.context.clone());
            if let Value::Object(map) = &mut cp_context {
                map.remove("checkpoints");
            }
            insert.execute(params![
                c.id.as_str(),
                task,
                i as i64 + 1,
                c.state.as_str(),
                json_redacted(&cp_context)?,
                json_redacted(&serde_json::to_value(&c.artifacts)?)?,
                time::to_db(c.timestamp)
            ])?;
        }
        Ok(())
    }

    /// Loads inside a caller's transaction.
    pub fn load_in(&self, tx: &Tx<'_>, task_id: &TaskId) -> Result<Option<PersistedState>> {
        let sql = format!("SELECT {STATE_COLUMNS} FROM workflow_states WHERE task_id = ?1");
        let Some(row) = tx
            .conn()
            .prepare_cached(&sql)?
            .query_row([task_id.as_str()], read_state_row)
            .optional()?
        else {
            return Ok(None);
        };
        let mut state = row.into_state()?;
        let transitions = format!(
            "SELECT {TRANSITION_COLUMNS} FROM state_transitions t WHERE t.task_id = ?1 ORDER BY t.seq, t.id"
        );
        let checkpoints = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c WHERE c.task_id = ?1 ORDER BY c.seq, c.created_at"
        );
        let mut stmt = tx.conn().prepare_cached(&transitions)?;
        let mut rows = stmt.query([task_id.as_str()])?;
        while let Some(r) = rows.next()? {
            state.history.push(read_transition(r)?.1);
        }
        let mut stmt = tx.conn().prepare_cached(&checkpoints)?;
        let mut rows = stmt.query([task_id.as_str()])?;
        while let Some(r) = rows.next()? {
            state.context.checkpoints.push(read_checkpoint(r)?.1);
        }
        Ok(Some(state))
    }

    /// Lists a project's tasks in three queries, whatever their number.
    pub fn list_in(&self, tx: &Tx<'_>, project_id: &ProjectId) -> Result<Vec<PersistedState>> {
        let conn = tx.conn();
        let p = project_id.as_str();
        let sql = format!(
            "SELECT {STATE_COLUMNS} FROM workflow_states WHERE project_id = ?1 ORDER BY created_at, task_id"
        );
        let mut states = Vec::new();
        let mut index = HashMap::new();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([p])?;
        while let Some(r) = rows.next()? {
            let state = read_state_row(r)?.into_state()?;
            index.insert(state.task_id.as_str().to_owned(), states.len());
            states.push(state);
        }
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS} FROM state_transitions t
             JOIN workflow_states w ON w.task_id = t.task_id
             WHERE w.project_id = ?1 ORDER BY t.task_id, t.seq, t.id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([p])?;
        while let Some(r) = rows.next()? {
            let (task, t) = read_transition(r)?;
            if let Some(&i) = index.get(&task) {
                states[i].history.push(t);
            }
        }
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c
             JOIN workflow_states w ON w.task_id = c.task_id
             WHERE w.project_id = ?1 ORDER BY c.task_id, c.seq, c.created_at"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([p])?;
        while let Some(r) = rows.next()? {
            let (task, c) = read_checkpoint(r)?;
            if let Some(&i) = index.get(&task) {
                states[i].context.checkpoints.push(c);
            }
        }
        Ok(states)
    }

    /// Deletes a task with its transitions and checkpoints, inside a caller's transaction.
    pub fn delete_in(&self, tx: &Tx<'_>, task_id: &TaskId) -> Result<bool> {
        let conn = tx.conn();
        let t = task_id.as_str();
        conn.prepare_cached("DELETE FROM checkpoints WHERE task_id = ?1")?.execute([t])?;
        conn.prepare_cached("DELETE FROM state_transitions WHERE task_id = ?1")?.execute([t])?;
        Ok(conn.prepare_cached("DELETE FROM workflow_states WHERE task_id = ?1")?.execute([t])? > 0)
    }

    /// Tasks that can be resumed (not COMPLETED, ABORTED or ESCALATED), each with its latest
    /// checkpoint; of one project, or of all.
    pub fn resumable(&self, project_id: Option<&ProjectId>) -> Result<Vec<ResumableTask>> {
        self.db.read(|tx| resumable_where(tx, project_id, None, true))
    }

    /// One task, whatever its state, with its latest checkpoint (e.g. to resume a crashed run).
    pub fn task_in(&self, tx: &Tx<'_>, task_id: &TaskId) -> Result<Option<ResumableTask>> {
        Ok(resumable_where(tx, None, Some(task_id), false)?.pop())
    }

    /// How many tasks are in each state, by state name.
    pub fn count_by_state(&self) -> Result<Vec<(WorkflowState, u64)>> {
        self.db.read(|tx| {
            let mut stmt = tx.conn().prepare_cached(
                "SELECT state, COUNT(*) FROM workflow_states GROUP BY state ORDER BY state",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((WorkflowState::parse(&r.get::<_, String>(0)?), r.get::<_, i64>(1)? as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// A summary line per task, newest first, optionally of one project and/or in one state.
    pub fn summaries(
        &self,
        project_id: Option<&ProjectId>,
        state: Option<&WorkflowState>,
    ) -> Result<Vec<TaskSummary>> {
        self.db.read(|tx| {
            let mut stmt = tx.conn().prepare_cached(
                "SELECT w.task_id, w.project_id, w.state, w.created_at, w.updated_at,
                    (SELECT COUNT(*) FROM state_transitions t WHERE t.task_id = w.task_id),
                    (SELECT COUNT(*) FROM checkpoints c WHERE c.task_id = w.task_id)
                 FROM workflow_states w
                 WHERE (?1 IS NULL OR w.project_id = ?1) AND (?2 IS NULL OR w.state = ?2)
                 ORDER BY w.updated_at DESC, w.task_id",
            )?;
            let mut rows = stmt.query(params![
                project_id.map(ProjectId::as_str),
                state.map(WorkflowState::as_str)
            ])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let task_id: String = r.get(0)?;
                out.push(TaskSummary {
                    project_id: ProjectId::new(r.get::<_, String>(1)?),
                    state: WorkflowState::parse(&r.get::<_, String>(2)?),
                    created_at: Error::read_time(
                        "workflow_states",
                        "created_at",
                        &task_id,
                        &r.get::<_, String>(3)?,
                    )?,
                    updated_at: Error::read_time(
                        "workflow_states",
                        "updated_at",
                        &task_id,
                        &r.get::<_, String>(4)?,
                    )?,
                    transitions: r.get::<_, i64>(5)? as u64,
                    checkpoints: r.get::<_, i64>(6)? as u64,
                    task_id: TaskId::new(task_id),
                });
            }
            Ok(out)
        })
    }
}

impl StateStore for SqliteStateStore {
    type Error = Error;

    fn save_state(&self, state: &PersistedState) -> Result<()> {
        self.db.write(|tx| self.save_in(tx, state))
    }

    fn load_state(&self, task_id: &TaskId) -> Result<Option<PersistedState>> {
        self.db.read(|tx| self.load_in(tx, task_id))
    }

    fn list_states(&self, project_id: &ProjectId) -> Result<Vec<PersistedState>> {
        self.db.read(|tx| self.list_in(tx, project_id))
    }

    fn delete_state(&self, task_id: &TaskId) -> Result<bool> {
        self.db.write(|tx| self.delete_in(tx, task_id))
    }
}

/// The context as stored: redacted, without its checkpoints (they have their own table).
fn context_json(context: &StateContext) -> Result<String> {
    let mut value = serde_json::to_value(context.without_checkpoints())?;
    if let Value::Object(map) = &mut value {
        map.remove("checkpoints");
    }
    redact_json(&mut value);
    Ok(serde_json::to_string(&value)?)
}

fn json_redacted(value: &Value) -> Result<String> {
    Ok(serde_json::to_string(&redacted_json(value))?)
}

fn parse_json(table: &'static str, column: &'static str, id: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::corrupt_json(table, column, id, &e))
}

struct StateRow {
    task_id: String,
    project_id: String,
    state: String,
    context: String,
}

fn read_state_row(r: &Row<'_>) -> rusqlite::Result<StateRow> {
    Ok(StateRow { task_id: r.get(0)?, project_id: r.get(1)?, state: r.get(2)?, context: r.get(3)? })
}

impl StateRow {
    fn into_state(self) -> Result<PersistedState> {
        let mut value = parse_json("workflow_states", "context", &self.task_id, &self.context)?;
        let Value::Object(map) = &mut value else {
            return Err(Error::CorruptRow {
                table: "workflow_states",
                column: "context",
                id: self.task_id,
                reason: "not a JSON object".into(),
            });
        };
        // The context's own checkpoint copies (written by the TypeScript version) are superseded
        // by the checkpoints table; ids missing from a hand-made context come from the row.
        map.remove("checkpoints");
        map.entry("projectId").or_insert_with(|| Value::from(self.project_id.as_str()));
        map.entry("taskId").or_insert_with(|| Value::from(self.task_id.as_str()));
        let context: StateContext = serde_json::from_value(value)
            .map_err(|e| Error::corrupt_json("workflow_states", "context", &self.task_id, &e))?;
        Ok(PersistedState {
            task_id: TaskId::new(self.task_id),
            project_id: ProjectId::new(self.project_id),
            state: WorkflowState::parse(&self.state),
            context,
            history: Vec::new(),
        })
    }
}

fn read_transition(r: &Row<'_>) -> Result<(String, StateTransition)> {
    let task: String = r.get(0)?;
    let id: i64 = r.get(1)?;
    let id = id.to_string();
    let metadata = r
        .get::<_, Option<String>>(5)?
        .map(|m| parse_json("state_transitions", "metadata", &id, &m))
        .transpose()?;
    let transition = StateTransition {
        from: WorkflowState::parse(&r.get::<_, String>(2)?),
        to: WorkflowState::parse(&r.get::<_, String>(3)?),
        event: Event::parse(&r.get::<_, String>(4)?),
        timestamp: Error::read_time(
            "state_transitions",
            "created_at",
            &id,
            &r.get::<_, String>(6)?,
        )?,
        metadata,
    };
    Ok((task, transition))
}

fn read_checkpoint(r: &Row<'_>) -> Result<(String, Checkpoint)> {
    read_checkpoint_at(r, 0)
}

fn read_checkpoint_at(r: &Row<'_>, at: usize) -> Result<(String, Checkpoint)> {
    let task: String = r.get(at)?;
    let id: String = r.get(at + 1)?;
    let context = match parse_json("checkpoints", "context", &id, &r.get::<_, String>(at + 3)?)? {
        Value::Object(map) => map,
        _ => {
            return Err(Error::CorruptRow {
                table: "checkpoints",
                column: "context",
                id,
                reason: "not a JSON object".into(),
            })
        }
    };
    let artifacts: Vec<String> = serde_json::from_str(&r.get::<_, String>(at + 4)?)
        .map_err(|e| Error::corrupt_json("checkpoints", "artifacts", &id, &e))?;
    let checkpoint = Checkpoint {
        state: WorkflowState::parse(&r.get::<_, String>(at + 2)?),
        timestamp: Error::read_time(
            "checkpoints",
            "created_at",
            &id,
            &r.get::<_, String>(at + 5)?,
        )?,
        context,
        artifacts,
        id: id.into(),
    };
    Ok((task, checkpoint))
}

/// Tasks with their latest checkpoint: of a project and/or one task; only open ones if asked.
fn resumable_where(
    tx: &Tx<'_>,
    project_id: Option<&ProjectId>,
    task_id: Option<&TaskId>,
    open_only: bool,
) -> Result<Vec<ResumableTask>> {
    // Each filter is in the SQL only when given, so the task lookup uses the primary key.
    let mut filter = String::from(if open_only {
        "w.state NOT IN ('COMPLETED', 'ABORTED', 'ESCALATED')"
    } else {
        "1 = 1"
    });
    let mut values = Vec::new();
    for (column, value) in [
        ("w.project_id", project_id.map(ProjectId::as_str)),
        ("w.task_id", task_id.map(TaskId::as_str)),
    ] {
        if let Some(v) = value {
            filter.push_str(&format!(" AND {column} = ?"));
            values.push(v);
        }
    }
    let sql = format!(
        "SELECT w.task_id, w.project_id, w.state, w.updated_at, {CHECKPOINT_COLUMNS}
         FROM workflow_states w
         LEFT JOIN checkpoints c ON c.task_id = w.task_id
            AND c.seq = (SELECT MAX(seq) FROM checkpoints WHERE task_id = w.task_id)
         WHERE {filter}
         ORDER BY w.updated_at DESC, w.task_id"
    );
    let mut stmt = tx.conn().prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let task_id: String = r.get(0)?;
        let latest_checkpoint = match r.get::<_, Option<String>>(5)? {
            Some(_) => Some(read_checkpoint_at(r, 4)?.1),
            None => None,
        };
        out.push(ResumableTask {
            project_id: ProjectId::new(r.get::<_, String>(1)?),
            state: WorkflowState::parse(&r.get::<_, String>(2)?),
            updated_at: Error::read_time(
                "workflow_states",
                "updated_at",
                &task_id,
                &r.get::<_, String>(3)?,
            )?,
            task_id: TaskId::new(task_id),
            latest_checkpoint,
        });
    }
    Ok(out)
}
