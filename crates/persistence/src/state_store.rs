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

use serde_json::Value;

use crate::bind::{Clean, Param, Row};
use crate::db::{Backend, Database, Tx};
use crate::error::{Error, Result};
use crate::redact::redact_text;

const UPSERT_STATE: &str = "
    INSERT INTO workflow_states (task_id, project_id, state, context, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?5)
    ON CONFLICT(task_id) DO UPDATE SET
        project_id = excluded.project_id, state = excluded.state,
        context = excluded.context, updated_at = excluded.updated_at
    WHERE project_id IS NOT excluded.project_id OR state IS NOT excluded.state
        OR context IS NOT excluded.context";
/// [`UPSERT_STATE`] in PostgreSQL's dialect.
const UPSERT_STATE_PG: &str = "
    INSERT INTO workflow_states (task_id, project_id, state, context, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?5)
    ON CONFLICT(task_id) DO UPDATE SET
        project_id = excluded.project_id, state = excluded.state,
        context = excluded.context, updated_at = excluded.updated_at
    WHERE workflow_states.project_id IS DISTINCT FROM excluded.project_id
        OR workflow_states.state IS DISTINCT FROM excluded.state
        OR workflow_states.context IS DISTINCT FROM excluded.context";
/// On PostgreSQL, saves of one task take turns: a lock on the task's id (held to the end of the
/// transaction) also covers a task not stored yet, which a row lock could not. A load inside a
/// write transaction takes it too, so a load-modify-save in one `write` is one turn. SQLite's
/// single writer does this by itself.
const LOCK_TASK_PG: &str = "SELECT pg_advisory_xact_lock(hashtextextended(?1, 0))";
/// The last stored transition, and the lowest stored number (both one probe of the index).
const LAST_TRANSITION: &str = "
    SELECT seq, from_state, to_state, event, metadata, created_at,
        (SELECT MIN(seq) FROM state_transitions WHERE task_id = ?1)
    FROM state_transitions WHERE task_id = ?1 ORDER BY seq DESC LIMIT 1";
const ALL_TRANSITIONS: &str = "
    SELECT seq, from_state, to_state, event, metadata, created_at FROM state_transitions
    WHERE task_id = ?1 ORDER BY seq";
const INSERT_TRANSITION: &str = "
    INSERT INTO state_transitions (task_id, seq, from_state, to_state, event, metadata, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const LAST_CHECKPOINT: &str = "
    SELECT seq, id, state, created_at, (SELECT MIN(seq) FROM checkpoints WHERE task_id = ?1)
    FROM checkpoints WHERE task_id = ?1 ORDER BY seq DESC LIMIT 1";
/// On PostgreSQL, [`LOCK_TASK_PG`] and then [`LAST_TRANSITION`] and [`LAST_CHECKPOINT`] side by
/// side in one row (columns 0–6 the transition's, NULL when none is stored, 7–11 the
/// checkpoint's), in one round trip: a function (migration V10) whose read, after the lock,
/// takes a snapshot of its own, so it sees every save committed before the lock was had.
const LOCK_AND_LAST_PG: &str = "SELECT * FROM aigentflow_lock_task(?1)";
/// On PostgreSQL, the task's row written ([`UPSERT_STATE_PG`], ?1–?5) and its first new
/// transition inserted (?6–?11) in one statement, one round trip where they take two (the
/// transition's foreign key is checked at the end of the statement, when the row is there).
const SAVE_WITH_TRANSITION_PG: &str = "
    WITH saved AS (
        INSERT INTO workflow_states (task_id, project_id, state, context, created_at, updated_at)
        VALUES (?1, ?2, ?3, ?4, ?5, ?5)
        ON CONFLICT(task_id) DO UPDATE SET
            project_id = excluded.project_id, state = excluded.state,
            context = excluded.context, updated_at = excluded.updated_at
        WHERE workflow_states.project_id IS DISTINCT FROM excluded.project_id
            OR workflow_states.state IS DISTINCT FROM excluded.state
            OR workflow_states.context IS DISTINCT FROM excluded.context
        RETURNING 1)
    INSERT INTO state_transitions (task_id, seq, from_state, to_state, event, metadata, created_at)
    VALUES (?1, ?6, ?7, ?8, ?9, ?10, ?11)";
const ALL_CHECKPOINTS: &str =
    "SELECT seq, id, state, created_at FROM checkpoints WHERE task_id = ?1 ORDER BY seq";
const INSERT_CHECKPOINT: &str = "
    INSERT INTO checkpoints (id, task_id, seq, state, context, artifacts, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// A summary line per task, newest first; [`SqliteStateStore::summaries`] adds a WHERE of the filters
/// given. Only those are bound: `(?1 IS NULL OR project_id = ?1)` would let PostgreSQL settle
/// on a plan for any value after five runs, one that cannot use the project's index.
const SUMMARIES: &str = "
    SELECT w.task_id, w.project_id, w.state, w.created_at, w.updated_at,
        (SELECT COUNT(*) FROM state_transitions t WHERE t.task_id = w.task_id),
        (SELECT COUNT(*) FROM checkpoints c WHERE c.task_id = w.task_id)
    FROM workflow_states w";

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
    /// Appends the transitions and checkpoints that follow the stored ones, in O(new) work: the
    /// caller's history must contain the stored one, which is checked where it can diverge — the
    /// last stored transition and the last stored checkpoint, every field as stored (event,
    /// states, time to the millisecond, redacted metadata; id, state and time of a checkpoint).
    /// A state whose history or checkpoints are shorter than the stored ones is a
    /// [`Error::StaleSave`]; one that disagrees is a [`Error::HistoryConflict`] or
    /// [`Error::CheckpointConflict`] naming the first differing entry. In every such case nothing
    /// is written. Saving the same state twice changes nothing.
    pub fn save_in(&self, tx: &Tx<'_>, state: &PersistedState) -> Result<()> {
        let context = clean_context(state)?;
        self.save_clean(tx, state, &context)
    }

    /// [`save_in`](Self::save_in) with the context already checked and redacted.
    fn save_clean(&self, tx: &Tx<'_>, state: &PersistedState, context: &Clean<'_>) -> Result<()> {
        let task = state.task_id.as_str();
        let (last_transition, last_checkpoint) = last_stored(tx, task)?;
        let stored_transitions = check_transitions(tx, state, last_transition)?;
        let stored_checkpoints = check_checkpoints(tx, state, last_checkpoint)?;
        let row = [
            Param::text(task),
            Param::text(state.project_id.as_str()),
            Param::text(state.state.as_str()),
            Param::clean(context),
            Param::time(tx.now()),
        ];
        match (tx.backend(), state.history.get(stored_transitions)) {
            (Backend::Postgres, Some(first_new)) => {
                let [task, project, state_name, context, now] = row;
                tx.execute(
                    SAVE_WITH_TRANSITION_PG,
                    &[
                        task,
                        project,
                        state_name,
                        context,
                        now,
                        Param::int(stored_transitions as i64 + 1),
                        Param::text(first_new.from.as_str()),
                        Param::text(first_new.to.as_str()),
                        Param::text(first_new.event.as_str()),
                        first_new.metadata.as_ref().map_or(Ok(Param::NULL), Param::json)?,
                        Param::time(first_new.timestamp),
                    ],
                )?;
                self.append(tx, state, stored_transitions + 1, stored_checkpoints)
            }
            _ => {
                tx.execute(tx.dialect(UPSERT_STATE, UPSERT_STATE_PG), &row)?;
                self.append(tx, state, stored_transitions, stored_checkpoints)
            }
        }
    }

    /// Inserts the transitions and checkpoints that follow the stored ones.
    fn append(
        &self,
        tx: &Tx<'_>,
        state: &PersistedState,
        stored_transitions: usize,
        stored_checkpoints: usize,
    ) -> Result<()> {
        let task = state.task_id.as_str();
        let mut insert = tx.prepare(INSERT_TRANSITION)?;
        for (i, t) in state.history.iter().enumerate().skip(stored_transitions) {
            insert.execute(&[
                Param::text(task),
                Param::int(i as i64 + 1),
                Param::text(t.from.as_str()),
                Param::text(t.to.as_str()),
                Param::text(t.event.as_str()),
                t.metadata.as_ref().map_or(Ok(Param::NULL), Param::json)?,
                Param::time(t.timestamp),
            ])?;
        }
        let mut insert = tx.prepare(INSERT_CHECKPOINT)?;
        for (i, c) in state.context.checkpoints.iter().enumerate().skip(stored_checkpoints) {
            let mut cp_context = c.context.clone();
            cp_context.remove("checkpoints");
            insert.execute(&[
                Param::text(c.id.as_str()),
                Param::text(task),
                Param::int(i as i64 + 1),
                Param::text(c.state.as_str()),
                Param::json(&Value::Object(cp_context))?,
                Param::json(&serde_json::to_value(&c.artifacts)?)?,
                Param::time(c.timestamp),
            ])?;
        }
        Ok(())
    }

    /// Loads inside a caller's transaction.
    ///
    /// Inside a write transaction, loading a task holds back every other save of it until the
    /// transaction ends, so the state a closure loads, changes and saves in one
    /// [`Database::write`] cannot be changed by another writer in between: SQLite runs one
    /// write transaction at a time; PostgreSQL takes the task's lock (a transaction that loads
    /// several tasks another one loads in the opposite order may then be ended by the server's
    /// deadlock detection, an error for which [`Error::is_busy`] is true).
    pub fn load_in(&self, tx: &Tx<'_>, task_id: &TaskId) -> Result<Option<PersistedState>> {
        if tx.backend() == Backend::Postgres && tx.is_write() {
            tx.query_row(LOCK_TASK_PG, &[Param::text(task_id.as_str())], |_| Ok(()))?;
        }
        let sql = format!("SELECT {STATE_COLUMNS} FROM workflow_states WHERE task_id = ?1");
        let Some(row) = tx.query_row(&sql, &[Param::text(task_id.as_str())], read_state_row)?
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
        let mut stmt = tx.prepare(&transitions)?;
        let mut rows = stmt.query(&[Param::text(task_id.as_str())])?;
        while let Some(ref r) = rows.next()? {
            state.history.push(read_transition(r)?.1);
        }
        let mut stmt = tx.prepare(&checkpoints)?;
        let mut rows = stmt.query(&[Param::text(task_id.as_str())])?;
        while let Some(ref r) = rows.next()? {
            state.context.checkpoints.push(read_checkpoint(r)?.1);
        }
        Ok(Some(state))
    }

    /// Lists a project's tasks in three queries, whatever their number.
    pub fn list_in(&self, tx: &Tx<'_>, project_id: &ProjectId) -> Result<Vec<PersistedState>> {
        let p = || Param::text(project_id.as_str());
        let sql = format!(
            "SELECT {STATE_COLUMNS} FROM workflow_states WHERE project_id = ?1 ORDER BY created_at, task_id"
        );
        let mut states = Vec::new();
        let mut index = Placed::default();
        let mut stmt = tx.prepare(&sql)?;
        let mut rows = stmt.query(&[p()])?;
        while let Some(ref r) = rows.next()? {
            let state = read_state_row(r)?.into_state()?;
            index.tasks.insert(state.task_id.as_str().to_owned(), states.len());
            states.push(state);
        }
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS} FROM state_transitions t
             JOIN workflow_states w ON w.task_id = t.task_id
             WHERE w.project_id = ?1 ORDER BY t.task_id, t.seq, t.id"
        );
        let mut stmt = tx.prepare(&sql)?;
        let mut rows = stmt.query(&[p()])?;
        while let Some(ref r) = rows.next()? {
            let (task, t) = read_transition(r)?;
            if let Some(i) = index.find(task) {
                states[i].history.push(t);
            }
        }
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c
             JOIN workflow_states w ON w.task_id = c.task_id
             WHERE w.project_id = ?1 ORDER BY c.task_id, c.seq, c.created_at"
        );
        let mut stmt = tx.prepare(&sql)?;
        let mut rows = stmt.query(&[p()])?;
        while let Some(ref r) = rows.next()? {
            let (task, c) = read_checkpoint(r)?;
            if let Some(i) = index.find(task) {
                states[i].context.checkpoints.push(c);
            }
        }
        Ok(states)
    }

    /// Deletes a task with its transitions and checkpoints, inside a caller's transaction. On
    /// PostgreSQL it takes its turn with the task's saves, as [`load_in`](Self::load_in) does.
    pub fn delete_in(&self, tx: &Tx<'_>, task_id: &TaskId) -> Result<bool> {
        let t = [Param::text(task_id.as_str())];
        if tx.backend() == Backend::Postgres {
            tx.query_row(LOCK_TASK_PG, &t, |_| Ok(()))?;
        }
        tx.execute("DELETE FROM checkpoints WHERE task_id = ?1", &t)?;
        tx.execute("DELETE FROM state_transitions WHERE task_id = ?1", &t)?;
        Ok(tx.execute("DELETE FROM workflow_states WHERE task_id = ?1", &t)? > 0)
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
            let mut stmt = tx.prepare(
                "SELECT state, COUNT(*) FROM workflow_states GROUP BY state ORDER BY state",
            )?;
            let rows = stmt.query_map(&[], |r| {
                Ok((WorkflowState::parse(&r.get::<String>(0)?), r.get::<i64>(1)? as u64))
            })?;
            Ok(rows)
        })
    }

    /// A summary line per task, newest first, optionally of one project and/or in one state.
    pub fn summaries(
        &self,
        project_id: Option<&ProjectId>,
        state: Option<&WorkflowState>,
    ) -> Result<Vec<TaskSummary>> {
        let mut filters = Vec::new();
        let mut values = Vec::new();
        if let Some(project) = project_id {
            values.push(Param::text(project.as_str()));
            filters.push(format!("w.project_id = ?{}", values.len()));
        }
        if let Some(state) = state {
            values.push(Param::text(state.as_str()));
            filters.push(format!("w.state = ?{}", values.len()));
        }
        let clause = if filters.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filters.join(" AND "))
        };
        let sql = format!("{SUMMARIES}{clause} ORDER BY w.updated_at DESC, w.task_id");
        self.db.read(|tx| {
            let mut stmt = tx.prepare(&sql)?;
            let mut rows = stmt.query(&values)?;
            let mut out = Vec::new();
            while let Some(ref r) = rows.next()? {
                let task_id: String = r.get(0)?;
                out.push(TaskSummary {
                    project_id: ProjectId::new(r.get::<String>(1)?),
                    state: WorkflowState::parse(&r.get::<String>(2)?),
                    created_at: Error::read_time(
                        "workflow_states",
                        "created_at",
                        &task_id,
                        &r.get::<String>(3)?,
                    )?,
                    updated_at: Error::read_time(
                        "workflow_states",
                        "updated_at",
                        &task_id,
                        &r.get::<String>(4)?,
                    )?,
                    transitions: r.get::<i64>(5)? as u64,
                    checkpoints: r.get::<i64>(6)? as u64,
                    task_id: TaskId::new(task_id),
                });
            }
            Ok(out)
        })
    }
}

impl StateStore for SqliteStateStore {
    type Error = Error;

    /// Saves in a transaction of its own; the context is checked and redacted before the write
    /// lock is taken.
    fn save_state(&self, state: &PersistedState) -> Result<()> {
        let context = clean_context(state)?;
        self.db.write(|tx| self.save_clean(tx, state, &context))
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

/// The context of `state` as stored: checked against the task's id, without its checkpoints,
/// through the redaction policy.
fn clean_context(state: &PersistedState) -> Result<Clean<'static>> {
    if state.context.task_id != state.task_id {
        return Err(Error::InvalidInput {
            what: "state",
            reason: format!(
                "context.taskId {} differs from taskId {}",
                state.context.task_id, state.task_id
            )
            .into(),
        });
    }
    Clean::json_owned(context_value(&state.context)?)
}

/// The context as stored (before redaction): without its checkpoints (they have their own table).
fn context_value(context: &StateContext) -> Result<Value> {
    let mut value = serde_json::to_value(context.without_checkpoints())?;
    if let Value::Object(map) = &mut value {
        map.remove("checkpoints");
    }
    Ok(value)
}

/// A stored checkpoint as a save compares it: its number, id, state and time.
type StoredCheckpoint = (i64, String, String, String);

/// The checkpoint of `r`'s columns `at`…`at + 3`.
fn read_stored_checkpoint(r: &Row<'_>, at: usize) -> Result<StoredCheckpoint> {
    Ok((r.get(at)?, r.get(at + 1)?, r.get(at + 2)?, r.get(at + 3)?))
}

#[allow(clippy::type_complexity)]
/// The task's last stored transition and checkpoint, each with the lowest stored number; on
/// PostgreSQL after taking the task's lock, in the same round trip.
fn last_stored(
    tx: &Tx<'_>,
    task: &str,
) -> Result<(Option<(StoredTransition, i64)>, Option<(StoredCheckpoint, i64)>)> {
    let key = [Param::text(task)];
    if tx.backend() == Backend::Postgres {
        let both = tx.query_row(LOCK_AND_LAST_PG, &key, |r| {
            let transition = match r.get::<Option<i64>>(0)? {
                Some(_) => Some((StoredTransition::read(r)?, r.get::<i64>(6)?)),
                None => None,
            };
            let checkpoint = match r.get::<Option<i64>>(7)? {
                Some(_) => Some((read_stored_checkpoint(r, 7)?, r.get::<i64>(11)?)),
                None => None,
            };
            Ok((transition, checkpoint))
        })?;
        return Ok(both.unwrap_or((None, None)));
    }
    let transition = tx
        .query_row(LAST_TRANSITION, &key, |r| Ok((StoredTransition::read(r)?, r.get::<i64>(6)?)))?;
    let checkpoint = tx.query_row(LAST_CHECKPOINT, &key, |r| {
        Ok((read_stored_checkpoint(r, 0)?, r.get::<i64>(4)?))
    })?;
    Ok((transition, checkpoint))
}

fn check_transitions(
    tx: &Tx<'_>,
    state: &PersistedState,
    last: Option<(StoredTransition, i64)>,
) -> Result<usize> {
    let task = state.task_id.as_str();
    let Some((last, lowest)) = last else {
        return Ok(0);
    };
    position(lowest, task, "state_transitions")?;
    let stored = last.position(task, "state_transitions")?;
    let given = state.history.len();
    if given < stored {
        return Err(Error::StaleSave {
            task_id: state.task_id.clone(),
            what: "transitions",
            stored: stored as u64,
            given: given as u64,
        });
    }
    if last.differs(&state.history[stored - 1])?.is_none() {
        return Ok(stored);
    }
    // The history diverges somewhere up to the last stored transition: find where, to say so.
    let mut stmt = tx.prepare(ALL_TRANSITIONS)?;
    let mut rows = stmt.query(&[Param::text(task)])?;
    let mut expected_seq = 1;
    while let Some(ref r) = rows.next()? {
        let row = StoredTransition::read(r)?;
        let seq = row.position(task, "state_transitions")?;
        let conflict = |detail: String| Error::HistoryConflict {
            task_id: state.task_id.clone(),
            seq: seq as u64,
            detail: detail.into(),
        };
        if seq != expected_seq {
            return Err(conflict(format!("the stored history has no transition {expected_seq}")));
        }
        if let Some(detail) = row.differs(&state.history[seq - 1])? {
            return Err(conflict(detail));
        }
        expected_seq += 1;
    }
    Err(Error::HistoryConflict {
        task_id: state.task_id.clone(),
        seq: stored as u64,
        detail: "the stored transition changed while it was compared".into(),
    })
}

/// A transition as stored, for comparing with the caller's.
struct StoredTransition {
    seq: i64,
    from: String,
    to: String,
    event: String,
    metadata: Option<String>,
    created_at: String,
}

impl StoredTransition {
    fn read(r: &Row<'_>) -> Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            from: r.get(1)?,
            to: r.get(2)?,
            event: r.get(3)?,
            metadata: r.get(4)?,
            created_at: r.get(5)?,
        })
    }

    /// The 1-based position the row claims; a stored number below 1 is a corrupt row.
    fn position(&self, task: &str, table: &'static str) -> Result<usize> {
        position(self.seq, task, table)
    }

    /// How the caller's transition differs from this stored one, if it does.
    fn differs(&self, mine: &StateTransition) -> Result<Option<String>> {
        let stamp = time::to_db(mine.timestamp);
        let detail = if !same(mine.from.as_str(), &self.from) || !same(mine.to.as_str(), &self.to) {
            format!("{} -> {} stored, {} -> {} given", self.from, self.to, mine.from, mine.to)
        } else if !same(mine.event.as_str(), &self.event) {
            format!("event {} stored, {} given", self.event, mine.event)
        } else if stamp != self.created_at {
            format!("time {} stored, {stamp} given", self.created_at)
        } else {
            let stored = self.metadata.as_deref().map(serde_json::from_str::<Value>);
            let given = mine.metadata.as_ref().map(crate::redact::redacted_json);
            match (stored, given) {
                (None, None) => return Ok(None),
                (Some(Ok(a)), Some(b)) if a == b => return Ok(None),
                _ => "its metadata differs".to_owned(),
            }
        };
        Ok(Some(detail))
    }
}

/// How many checkpoints are stored for the task, once the caller's checkpoints are known to
/// start with them (see [`SqliteStateStore::save_in`]).
fn check_checkpoints(
    tx: &Tx<'_>,
    state: &PersistedState,
    last: Option<(StoredCheckpoint, i64)>,
) -> Result<usize> {
    let task = state.task_id.as_str();
    let given = &state.context.checkpoints;
    let read = |r: &Row<'_>| read_stored_checkpoint(r, 0);
    let Some((last, lowest)) = last else {
        return Ok(0);
    };
    position(lowest, task, "checkpoints")?;
    let stored = position(last.0, task, "checkpoints")?;
    if given.len() < stored {
        return Err(Error::StaleSave {
            task_id: state.task_id.clone(),
            what: "checkpoints",
            stored: stored as u64,
            given: given.len() as u64,
        });
    }
    let differs = |(_, id, cp_state, created_at): &(i64, String, String, String),
                   mine: &Checkpoint| {
        let stamp = time::to_db(mine.timestamp);
        if !same(mine.id.as_str(), id) {
            Some(format!("checkpoint {id} stored, {} given", mine.id))
        } else if !same(mine.state.as_str(), cp_state) {
            Some(format!("state {cp_state} stored, {} given", mine.state))
        } else if stamp != *created_at {
            Some(format!("time {created_at} stored, {stamp} given"))
        } else {
            None
        }
    };
    if differs(&last, &given[stored - 1]).is_none() {
        return Ok(stored);
    }
    let mut stmt = tx.prepare(ALL_CHECKPOINTS)?;
    let mut rows = stmt.query(&[Param::text(task)])?;
    let mut expected_seq = 1;
    while let Some(ref r) = rows.next()? {
        let row = read(r)?;
        let seq = position(row.0, task, "checkpoints")?;
        let conflict = |detail: String| Error::CheckpointConflict {
            task_id: state.task_id.clone(),
            seq: seq as u64,
            detail: detail.into(),
        };
        if seq != expected_seq {
            return Err(conflict(format!("the stored checkpoints have no number {expected_seq}")));
        }
        if let Some(detail) = differs(&row, &given[seq - 1]) {
            return Err(conflict(detail));
        }
        expected_seq += 1;
    }
    Err(Error::CheckpointConflict {
        task_id: state.task_id.clone(),
        seq: stored as u64,
        detail: "the stored checkpoint changed while it was compared".into(),
    })
}

/// Whether the caller's text is what was stored: the same, or the same once redacted (states,
/// events and ids are stored through the redaction policy like every text).
fn same(mine: &str, stored: &str) -> bool {
    mine == stored || redact_text(mine) == stored
}

/// A stored per-task sequence number as a 1-based position; below 1 is a corrupt row.
fn position(seq: i64, task: &str, table: &'static str) -> Result<usize> {
    usize::try_from(seq).ok().filter(|&n| n >= 1).ok_or_else(|| Error::CorruptRow {
        table,
        column: "seq",
        id: task.into(),
        reason: format!("sequence number {seq}; numbers start at 1").into(),
    })
}

fn parse_json(
    table: &'static str,
    column: &'static str,
    id: impl ToString,
    text: &str,
) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::corrupt_json(table, column, id, &e))
}

/// Where each listed task sits in the listing. Rows come ordered by task, so a task is looked
/// up once per run of its rows.
#[derive(Default)]
struct Placed {
    tasks: HashMap<String, usize>,
    /// The task last looked up, and where it sits.
    last: Option<(String, Option<usize>)>,
}

impl Placed {
    fn find(&mut self, task: &str) -> Option<usize> {
        match &mut self.last {
            Some((last, at)) if last == task => *at,
            last => {
                let at = self.tasks.get(task).copied();
                *last = Some((task.to_owned(), at));
                at
            }
        }
    }
}

struct StateRow {
    task_id: String,
    project_id: String,
    state: String,
    context: String,
}

fn read_state_row(r: &Row<'_>) -> Result<StateRow> {
    let task_id: String = r.get(0)?;
    let cell = |i, column| r.get_in(i, "workflow_states", column, &task_id);
    Ok(StateRow {
        project_id: cell(1, "project_id")?,
        state: cell(2, "state")?,
        context: cell(3, "context")?,
        task_id: task_id.clone(),
    })
}

impl StateRow {
    fn into_state(self) -> Result<PersistedState> {
        let context = self.context()?;
        Ok(PersistedState {
            task_id: TaskId::new(self.task_id),
            project_id: ProjectId::new(self.project_id),
            state: WorkflowState::parse(&self.state),
            context,
            history: Vec::new(),
        })
    }

    /// The stored context without its checkpoint copies (written by the TypeScript version,
    /// superseded by the checkpoints table), with the row's ids where a hand-made one lacks
    /// them.
    fn context(&self) -> Result<StateContext> {
        // A context with its ids parses straight into its type; one without them, or with
        // checkpoint copies of another shape, is read as JSON first.
        if let Ok(mut context) = serde_json::from_str::<StateContext>(&self.context) {
            context.checkpoints.clear();
            return Ok(context);
        }
        self.context_as_json()
    }

    /// [`StateRow::context`] read as JSON first: the way for every context, the straight parse
    /// only a shortcut that must give the same.
    fn context_as_json(&self) -> Result<StateContext> {
        let mut value = parse_json("workflow_states", "context", &self.task_id, &self.context)?;
        let Value::Object(map) = &mut value else {
            return Err(Error::CorruptRow {
                table: "workflow_states",
                column: "context",
                id: self.task_id.as_str().into(),
                reason: "not a JSON object".into(),
            });
        };
        map.remove("checkpoints");
        map.entry("projectId").or_insert_with(|| Value::from(self.project_id.as_str()));
        map.entry("taskId").or_insert_with(|| Value::from(self.task_id.as_str()));
        serde_json::from_value(value)
            .map_err(|e| Error::corrupt_json("workflow_states", "context", &self.task_id, &e))
    }
}

fn read_transition<'r>(r: &Row<'r>) -> Result<(&'r str, StateTransition)> {
    let task = r.text(0)?;
    let id: i64 = r.get(1)?;
    let metadata = r
        .text_or_null(5)?
        .map(|m| parse_json("state_transitions", "metadata", id, m))
        .transpose()?;
    let transition = StateTransition {
        from: WorkflowState::parse(r.text(2)?),
        to: WorkflowState::parse(r.text(3)?),
        event: Event::parse(r.text(4)?),
        timestamp: Error::read_time("state_transitions", "created_at", id, r.text(6)?)?,
        metadata,
    };
    Ok((task, transition))
}

fn read_checkpoint<'r>(r: &Row<'r>) -> Result<(&'r str, Checkpoint)> {
    read_checkpoint_at(r, 0)
}

fn read_checkpoint_at<'r>(r: &Row<'r>, at: usize) -> Result<(&'r str, Checkpoint)> {
    let task = r.text(at)?;
    let id: String = r.get(at + 1)?;
    let context = match parse_json("checkpoints", "context", &id, r.text(at + 3)?)? {
        Value::Object(map) => map,
        _ => {
            return Err(Error::CorruptRow {
                table: "checkpoints",
                column: "context",
                id: id.into(),
                reason: "not a JSON object".into(),
            })
        }
    };
    let artifacts: Vec<String> = serde_json::from_str(r.text(at + 4)?)
        .map_err(|e| Error::corrupt_json("checkpoints", "artifacts", &id, &e))?;
    let checkpoint = Checkpoint {
        state: WorkflowState::parse(r.text(at + 2)?),
        timestamp: Error::read_time("checkpoints", "created_at", &id, r.text(at + 5)?)?,
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
    let mut stmt = tx.prepare(&sql)?;
    let values: Vec<Param<'_>> = values.into_iter().map(Param::text).collect();
    let mut rows = stmt.query(&values)?;
    let mut out = Vec::new();
    while let Some(ref r) = rows.next()? {
        let task_id: String = r.get(0)?;
        let latest_checkpoint = match r.get::<Option<String>>(5)? {
            Some(_) => Some(read_checkpoint_at(r, 4)?.1),
            None => None,
        };
        out.push(ResumableTask {
            project_id: ProjectId::new(r.get::<String>(1)?),
            state: WorkflowState::parse(&r.get::<String>(2)?),
            updated_at: Error::read_time(
                "workflow_states",
                "updated_at",
                &task_id,
                &r.get::<String>(3)?,
            )?,
            task_id: TaskId::new(task_id),
            latest_checkpoint,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever a stored context holds, parsing it straight into its type gives what reading
    /// it as JSON first gives, or falls back to that way: with or without its ids, with
    /// checkpoint copies of any shape, repeated keys, unknown fields, and text that is no
    /// context at all.
    #[test]
    fn a_context_parsed_straight_is_the_one_read_as_json_first() {
        let checkpoint = r#"{"id":"c1","state":"PLANNING","timestamp":"2026-01-01T00:00:00.000Z","context":{"a":1},"artifacts":["x"]}"#;
        let ids = [r#""projectId":"p","taskId":"t""#, r#""taskId":"t""#, r#""projectId":"q""#, ""];
        let bodies = [
            String::new(),
            r#""prompt":"hi é "q"","retryCount":2,"maxRetries":5"#.to_owned(),
            format!(r#""checkpoints":[{checkpoint}]"#),
            r#""checkpoints":[{"id":1}]"#.to_owned(),
            r#""checkpoints":"none""#.to_owned(),
            r#""prompt":"first","prompt":"second""#.to_owned(),
            r#""extraField":{"z":1,"a":[1,2]},"extraField":7"#.to_owned(),
            r#""metadata":{"k":"v"},"agentOutputs":{}"#.to_owned(),
            r#""maxRetries":-1"#.to_owned(),
            r#""error":"boom","currentAgent":null"#.to_owned(),
        ];
        let mut texts = vec!["[]".to_owned(), "null".to_owned(), "{".to_owned(), "7".to_owned()];
        for id in ids {
            for body in &bodies {
                let sep = if id.is_empty() || body.is_empty() { "" } else { "," };
                texts.push(format!("{{{id}{sep}{body}}}"));
                texts.push(format!("{{{body}{sep}{id}}}"));
            }
        }
        for text in texts {
            let row = StateRow {
                task_id: "t".into(),
                project_id: "p".into(),
                state: "PLANNING".into(),
                context: text.clone(),
            };
            match (row.context(), row.context_as_json()) {
                (Ok(straight), Ok(as_json)) => assert_eq!(straight, as_json, "{text}"),
                (Err(straight), Err(as_json)) => {
                    assert_eq!(straight.to_string(), as_json.to_string(), "{text}")
                }
                (straight, as_json) => panic!("{text}: {straight:?} but {as_json:?}"),
            }
        }
    }
}
