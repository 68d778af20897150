//! [`Approvals`]: requests, decisions and expiries, each in one transaction with the task's
//! transition and its audit entry. All the crate's SQL lives here.
//!
//! Every write first loads the task through the state store inside the write transaction: on
//! SQLite the one writer serialises it, on PostgreSQL the load takes the task's lock (held to
//! the end of the transaction). So the requests and decisions of one task take turns, and each
//! reads the request's status only once it holds that turn: of two reviewers deciding at once,
//! the second finds the request decided. The conditional `UPDATE … WHERE status = 'pending'`
//! that records a decision is a second guard, and one pending request per task a third (a
//! partial unique index). Lock order is always the task, then the request's row.

use std::sync::Arc;

use aigentflow_audit::{AuditEntry, AuditLog, Category};
use aigentflow_core_states::{
    time, Clock, Event, PersistedState, StateMachine, StateTransition, TaskId, TransitionTable,
    WorkflowState,
};
use aigentflow_persistence::{Database, Error as PError, Param, Row, SqliteStateStore, Tx};
use chrono::{DateTime, Datelike, Utc};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::{
    Approval, ApprovalFilter, ApprovalId, Decision, Expiry, Listing, NewApproval, Status,
    Unreadable,
};

const TABLE: &str = "approval_requests";
/// The columns [`read`] maps, the task's project joined in.
const SELECT: &str = "SELECT a.id, a.task_id, w.project_id, a.kind, a.payload, a.requested_by,
        a.requested_at, a.deadline, a.status, a.reviewer, a.comment, a.decided_at
    FROM approval_requests a JOIN workflow_states w ON w.task_id = a.task_id";
const INSERT: &str = "INSERT INTO approval_requests
    (id, task_id, kind, payload, requested_by, requested_at, deadline, status)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')";
const TASK_OF: &str = "SELECT task_id FROM approval_requests WHERE id = ?1";
const PENDING_OF_TASK: &str =
    "SELECT id FROM approval_requests WHERE task_id = ?1 AND status = 'pending'";
const STATUS_OF: &str = "SELECT status FROM approval_requests WHERE id = ?1";
/// Records how a request ended; changes nothing unless it is still pending.
const CLOSE: &str = "UPDATE approval_requests SET status = ?2, reviewer = ?3, comment = ?4,
        decided_at = ?5
    WHERE id = ?1 AND status = 'pending'";
/// Pending requests whose deadline may be reached at `?1`: those whose stored deadline is at
/// or before it (the partial index on pending deadlines), and those whose deadline is not in
/// the stored form `YYYY-MM-DD HH:MM:SS.SSS` (a cell written around the store, in another
/// spelling or time zone, whose text does not sort as its time). Each is then judged by the
/// time its deadline reads as ([`Approval::is_due`]), never by its text.
const DUE: &str = "SELECT id FROM approval_requests
    WHERE status = 'pending' AND deadline IS NOT NULL AND (deadline <= ?1
        OR typeof(deadline) <> 'text' OR deadline NOT GLOB
            '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]')
    ORDER BY deadline, id";
/// [`DUE`] on PostgreSQL, whose column holds only text.
const DUE_PG: &str = "SELECT id FROM approval_requests
    WHERE status = 'pending' AND deadline IS NOT NULL AND (deadline <= ?1
        OR deadline !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}$')
    ORDER BY deadline, id";
/// Newest first.
const NEWEST_FIRST: &str = "ORDER BY a.requested_at DESC, a.id";
/// Soonest deadline first, requests without one last.
const SOONEST_DEADLINE: &str = "ORDER BY a.deadline IS NULL, a.deadline, a.requested_at, a.id";

/// The audit actions of the store.
const REQUESTED: &str = "approval_requested";
const EXPIRED: &str = "approval_expired";

/// The approval requests of one database.
#[derive(Debug, Clone)]
pub struct Approvals {
    db: Database,
    states: SqliteStateStore,
    audit: AuditLog,
    table: Arc<TransitionTable>,
}

impl Approvals {
    /// The approvals of `db`, moving tasks by the default transition table.
    pub fn new(db: Database) -> Self {
        Self {
            states: SqliteStateStore::new(db.clone()),
            audit: AuditLog::new(db.clone()),
            db,
            table: Arc::new(TransitionTable::default()),
        }
    }

    /// Moves tasks by another transition table (it needs NEEDS_APPROVAL, APPROVE, REJECT and
    /// APPROVAL_TIMEOUT rules as the default table has them).
    pub fn with_table(mut self, table: Arc<TransitionTable>) -> Self {
        self.table = table;
        self
    }

    /// Asks for a decision on a task, in a transaction of its own: see
    /// [`request_in`](Self::request_in).
    pub fn request(&self, new: &NewApproval) -> Result<ApprovalId> {
        self.db.write(|tx| self.request_in(tx, new))
    }

    /// Asks for a decision on a task inside a caller's transaction: applies NEEDS_APPROVAL to
    /// the task as stored (AGENT_COMPLETE → AWAITING_APPROVAL; the default table's guard wants
    /// the last agent output to need approval), saves it, appends the audit entry (`State`,
    /// `approval_requested`, with the payload) and stores the pending request, stamped with
    /// the database's clock. A machine the caller holds for the task is stale afterwards: load
    /// the task again. A task has one pending request at a time ([`Error::AlreadyPending`]).
    ///
    /// Every refusal (an empty kind or requester, a deadline not after now or outside years
    /// 0000 to 9999, an unknown task, a transition the table refuses) comes before anything is
    /// written. On any error the caller must not commit the transaction.
    pub fn request_in(&self, tx: &Tx<'_>, new: &NewApproval) -> Result<ApprovalId> {
        not_empty("approval kind", &new.kind)?;
        not_empty("requester", &new.requested_by)?;
        let now = tx.now();
        let deadline = new.deadline.map(|d| check_deadline(d, now)).transpose()?;
        let task = &new.task_id;
        let state = self.load(tx, task)?;
        if let Some(id) =
            tx.query_row(PENDING_OF_TASK, &[task_param(task)], |r| r.get::<String>(0))?
        {
            return Err(Error::AlreadyPending { task_id: task.as_str().into(), id: id.into() });
        }
        let id = ApprovalId::random();
        let mut machine = self.machine(state, now);
        let t = machine
            .apply(Event::NeedsApproval, Some(json!({ "approvalId": id })))
            .map_err(|source| Error::Refused { task_id: task.as_str().into(), source })?;
        self.states.save_in(tx, machine.persisted())?;
        let details = json!({
            "approvalId": id,
            "kind": new.kind,
            "requestedBy": new.requested_by,
            "deadline": deadline.map(time::to_rfc3339),
            "payload": new.payload,
        });
        self.audit
            .log_in(tx, &entry(machine.persisted(), REQUESTED, Category::State, details, &t))?;
        tx.execute(
            INSERT,
            &[
                Param::text(id.as_str()),
                task_param(task),
                Param::text(&new.kind),
                Param::json(&new.payload)?,
                Param::text(&new.requested_by),
                Param::time(now),
                Param::opt_time(deadline),
            ],
        )?;
        Ok(id)
    }

    /// Approves a pending request in a transaction of its own: see [`decide_in`](Self::decide_in),
    /// and [`decide`](Self::decide) for a request past its deadline.
    pub fn approve(
        &self,
        id: &ApprovalId,
        reviewer: &str,
        comment: Option<&str>,
    ) -> Result<Approval> {
        self.decide(id, Decision::Approve, reviewer, comment)
    }

    /// Rejects a pending request in a transaction of its own: see [`decide_in`](Self::decide_in),
    /// and [`decide`](Self::decide) for a request past its deadline.
    pub fn reject(
        &self,
        id: &ApprovalId,
        reviewer: &str,
        comment: Option<&str>,
    ) -> Result<Approval> {
        self.decide(id, Decision::Reject, reviewer, comment)
    }

    /// Records a decision in a transaction of its own: see [`decide_in`](Self::decide_in).
    ///
    /// A request found past its deadline is refused ([`Error::Expired`]) and, in the same
    /// transaction, expired as [`expire_due`](Self::expire_due) would have expired it at that
    /// instant (APPROVAL_TIMEOUT, its audit entry, the status `expired`): the late decision
    /// changes nothing the next expiry pass would not, and the request no longer lists as
    /// pending. If that expiry cannot be written, its error is returned and nothing is.
    pub fn decide(
        &self,
        id: &ApprovalId,
        decision: Decision,
        reviewer: &str,
        comment: Option<&str>,
    ) -> Result<Approval> {
        self.db.write(|tx| {
            let now = tx.now();
            match self.decide_at(tx, id, decision, reviewer, comment, now) {
                Err(expired @ Error::Expired { .. }) => {
                    self.expire_in(tx, id, now)?;
                    Ok(Err(expired))
                }
                decided => decided.map(Ok),
            }
        })?
    }

    /// Records a reviewer's decision inside a caller's transaction: applies APPROVE or REJECT
    /// to the task, saves it, appends the audit entry (`User`, `approval_approved` or
    /// `approval_rejected`, the reviewer as its user) and records the decision, stamped with
    /// the database's clock. Returns the request as decided.
    ///
    /// Refused before anything is written: an empty reviewer, an unknown id
    /// ([`Error::NotFound`]), a request no longer pending ([`Error::NotPending`]: of two
    /// reviewers deciding at once, one wins), a request past its deadline ([`Error::Expired`]:
    /// due by the database's clock as [`Approval::is_due`] reads it, what the expiry pass
    /// expires; here it stays pending for that pass, as nothing is written), a task no longer in
    /// AWAITING_APPROVAL ([`Error::TaskMoved`]), a row that cannot be read (its corrupt-row
    /// error: whether its deadline has passed cannot be told). On any error the caller must not
    /// commit the transaction.
    pub fn decide_in(
        &self,
        tx: &Tx<'_>,
        id: &ApprovalId,
        decision: Decision,
        reviewer: &str,
        comment: Option<&str>,
    ) -> Result<Approval> {
        self.decide_at(tx, id, decision, reviewer, comment, tx.now())
    }

    /// [`decide_in`](Self::decide_in) judged and stamped at `now`.
    fn decide_at(
        &self,
        tx: &Tx<'_>,
        id: &ApprovalId,
        decision: Decision,
        reviewer: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Approval> {
        not_empty("reviewer", reviewer)?;
        let not_found = || Error::NotFound { id: id.as_str().into() };
        let task = self.task_of(tx, id)?.ok_or_else(not_found)?;
        // The task's turn first, then the request as the previous turn left it.
        let state = self.load(tx, &task)?;
        let approval = self.get_in(tx, id)?.ok_or_else(not_found)?;
        if !approval.is_pending() {
            return Err(Error::NotPending { id: id.as_str().into(), status: approval.status });
        }
        // Before the task's state: a request past its deadline is the expiry's, whatever its
        // task did meanwhile (the expiry closes it either way).
        if let Some(deadline) = approval.deadline.filter(|_| approval.is_due(now)) {
            return Err(Error::Expired { id: id.as_str().into(), deadline });
        }
        if state.state != WorkflowState::AwaitingApproval {
            return Err(Error::TaskMoved {
                id: id.as_str().into(),
                task_id: task.as_str().into(),
                state: state.state,
            });
        }
        let event = match decision {
            Decision::Approve => Event::Approve,
            Decision::Reject => Event::Reject,
        };
        let mut machine = self.machine(state, now);
        let t = machine
            .apply(event, Some(json!({ "approvalId": id, "reviewer": reviewer })))
            .map_err(|source| Error::Refused { task_id: task.as_str().into(), source })?;
        self.states.save_in(tx, machine.persisted())?;
        let status = decision.status();
        let details = json!({
            "approvalId": id,
            "kind": approval.kind,
            "decision": status,
            "comment": comment,
        });
        let action = format!("approval_{status}");
        let mut audit = entry(machine.persisted(), &action, Category::User, details, &t);
        audit.user_id = Some(reviewer.to_owned());
        self.audit.log_in(tx, &audit)?;
        self.close(tx, id, status, Some(reviewer), comment, now)?;
        self.get_in(tx, id)?.ok_or_else(not_found)
    }

    /// Expires every pending request whose deadline is `now` or earlier, each in a transaction
    /// of its own: the task gets APPROVAL_TIMEOUT (AWAITING_APPROVAL → REJECTED), the audit log
    /// an entry (`State`, `approval_expired`), the request the status `expired` with `now` as
    /// its time. A request whose task already left AWAITING_APPROVAL by another event (an
    /// abort) is expired without a transition, which its audit entry says. Returns the ids this
    /// call expired.
    ///
    /// Idempotent, and safe to run in several processes at once: each request is expired by
    /// one of them, the others skip it, as they skip one a reviewer decided meanwhile.
    ///
    /// A request it cannot read (its row or its task's holds a value written around the store)
    /// is left pending and named in [`Expiry::unreadable`]; every other one is judged all the
    /// same. Any other failure (the database, the audit log) ends the pass with its error, the
    /// requests expired before it staying expired.
    pub fn expire_due(&self, now: DateTime<Utc>) -> Result<Expiry> {
        let now = time::millis(now);
        let due = self.db.read(|tx| {
            tx.prepare(tx.dialect(DUE, DUE_PG))?
                .query_map(&[Param::time(now)], |r| Ok(ApprovalId::new(r.get::<String>(0)?)))
        })?;
        let mut report = Expiry::default();
        for id in due {
            match skip_unreadable(&id, self.db.write(|tx| self.expire_in(tx, &id, now)))? {
                Ok(true) => report.expired.push(id),
                Ok(false) => {}
                Err(skipped) => report.unreadable.push(skipped),
            }
        }
        if !report.expired.is_empty() {
            tracing::info!(
                expired = report.expired.len(),
                "expired approval requests past their deadline"
            );
        }
        Ok(report)
    }

    /// Expires one request if it is still pending and due at `now`; whether it did.
    fn expire_in(&self, tx: &Tx<'_>, id: &ApprovalId, now: DateTime<Utc>) -> Result<bool> {
        let Some(task) = self.task_of(tx, id)? else { return Ok(false) };
        let state = self.load(tx, &task)?;
        let Some(approval) = self.get_in(tx, id)? else { return Ok(false) };
        if !approval.is_due(now) {
            return Ok(false);
        }
        let mut details = json!({
            "approvalId": id,
            "kind": approval.kind,
            "deadline": approval.deadline.map(time::to_rfc3339),
        });
        let audit = if state.state == WorkflowState::AwaitingApproval {
            let mut machine = self.machine(state, now);
            let t = machine
                .apply(Event::ApprovalTimeout, Some(json!({ "approvalId": id })))
                .map_err(|source| Error::Refused { task_id: task.as_str().into(), source })?;
            self.states.save_in(tx, machine.persisted())?;
            entry(machine.persisted(), EXPIRED, Category::State, details, &t)
        } else {
            details["transition"] = Value::Null;
            details["taskState"] = Value::from(state.state.as_str());
            AuditEntry {
                project_id: Some(state.project_id.clone()),
                task_id: Some(state.task_id.clone()),
                details: Some(details),
                ..AuditEntry::new(EXPIRED, Category::State)
            }
        };
        self.audit.log_in(tx, &audit)?;
        self.close(tx, id, Status::Expired, None, None, now)?;
        Ok(true)
    }

    /// One request, or None.
    pub fn get(&self, id: &ApprovalId) -> Result<Option<Approval>> {
        self.db.read(|tx| self.get_in(tx, id))
    }

    /// One request inside a caller's transaction, or None.
    pub fn get_in(&self, tx: &Tx<'_>, id: &ApprovalId) -> Result<Option<Approval>> {
        let sql = format!("{SELECT} WHERE a.id = ?1");
        Ok(tx.query_row(&sql, &[Param::text(id.as_str())], read)?)
    }

    /// The requests matching `filter`, newest first; those that cannot be read are skipped and
    /// named in [`Listing::unreadable`].
    pub fn list(&self, filter: &ApprovalFilter) -> Result<Listing> {
        self.db.read(|tx| select(tx, filter, NEWEST_FIRST))
    }

    /// Every pending request, soonest deadline first (those without one last): what a
    /// restarted orchestrator reloads, each with its [`Approval::time_left`]. Those that cannot
    /// be read are skipped and named in [`Listing::unreadable`].
    pub fn pending(&self) -> Result<Listing> {
        let filter = ApprovalFilter { status: Some(Status::Pending), ..ApprovalFilter::default() };
        self.db.read(|tx| select(tx, &filter, SOONEST_DEADLINE))
    }

    /// The task's stored state, loaded inside the write transaction (on PostgreSQL this takes
    /// the task's turn until the transaction ends).
    fn load(&self, tx: &Tx<'_>, task: &TaskId) -> Result<PersistedState> {
        self.states
            .load_in(tx, task)?
            .ok_or_else(|| Error::UnknownTask { task_id: task.as_str().into() })
    }

    /// The task a request belongs to.
    fn task_of(&self, tx: &Tx<'_>, id: &ApprovalId) -> Result<Option<TaskId>> {
        Ok(tx.query_row(TASK_OF, &[Param::text(id.as_str())], |r| {
            Ok(TaskId::new(r.get::<String>(0)?))
        })?)
    }

    /// A machine over the stored state whose transitions are stamped `now`, the time the
    /// request or decision records too.
    fn machine(&self, state: PersistedState, now: DateTime<Utc>) -> StateMachine {
        StateMachine::from_persisted(state)
            .with_table(self.table.clone())
            .with_clock(Arc::new(At(now)))
    }

    /// Records how a pending request ended; [`Error::NotPending`] if it no longer is.
    fn close(
        &self,
        tx: &Tx<'_>,
        id: &ApprovalId,
        status: Status,
        reviewer: Option<&str>,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let changed = tx.execute(
            CLOSE,
            &[
                Param::text(id.as_str()),
                Param::text(status.as_str()),
                Param::opt_text(reviewer),
                Param::opt_text(comment),
                Param::time(now),
            ],
        )?;
        if changed == 1 {
            return Ok(());
        }
        let stored =
            tx.query_row(STATUS_OF, &[Param::text(id.as_str())], |r| r.get::<String>(0))?;
        match stored.and_then(|s| s.parse::<Status>().ok()) {
            Some(status) => Err(Error::NotPending { id: id.as_str().into(), status }),
            None => Err(Error::NotFound { id: id.as_str().into() }),
        }
    }
}

/// A clock stopped at one instant: the transition of a request or decision is stamped with the
/// time the store records for it.
#[derive(Debug)]
struct At(DateTime<Utc>);

impl Clock for At {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

fn task_param(task: &TaskId) -> Param<'_> {
    Param::text(task.as_str())
}

fn not_empty(what: &'static str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::InvalidInput { what, reason: "it is empty".into() });
    }
    Ok(())
}

/// The deadline as stored (to the millisecond), once it is after `now` and inside the years the
/// stored form holds.
fn check_deadline(deadline: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let deadline = time::millis(deadline);
    let bad = |reason: String| Error::BadDeadline { deadline: time::to_rfc3339(deadline), reason };
    if !(time::MIN_YEAR..=time::MAX_YEAR).contains(&deadline.year()) {
        return Err(bad(format!(
            "outside years {:04} to {}, which a stored time holds",
            time::MIN_YEAR,
            time::MAX_YEAR
        )));
    }
    if deadline <= now {
        return Err(bad(format!("it is not after the request's time {}", time::to_rfc3339(now))));
    }
    Ok(deadline)
}

/// The audit entry of a transition the store made.
fn entry(
    state: &PersistedState,
    action: &str,
    category: Category,
    mut details: Value,
    t: &StateTransition,
) -> AuditEntry {
    details["from"] = Value::from(t.from.as_str());
    details["event"] = Value::from(t.event.as_str());
    details["to"] = Value::from(t.to.as_str());
    AuditEntry {
        project_id: Some(state.project_id.clone()),
        task_id: Some(state.task_id.clone()),
        details: Some(details),
        ..AuditEntry::new(action, category)
    }
}

/// `result` as a request that was read, or as one skipped for a value it cannot read (a
/// corrupt-row error, of the request's row or its task's); any other error stays one.
fn skip_unreadable<T, E: Into<Error>>(
    id: &ApprovalId,
    result: Result<T, E>,
) -> Result<Result<T, Unreadable>> {
    match result.map_err(Into::into) {
        Ok(value) => Ok(Ok(value)),
        Err(e @ Error::Persistence(PError::CorruptRow { .. })) => {
            Ok(Err(Unreadable { id: id.clone(), problem: e.to_string() }))
        }
        Err(e) => Err(e),
    }
}

/// The requests matching `filter` in `order`; each filter is in the SQL only when given. A row
/// that cannot be read is skipped and named, so one such row hides no other.
fn select(tx: &Tx<'_>, filter: &ApprovalFilter, order: &str) -> Result<Listing> {
    let mut clause = String::new();
    let mut values = Vec::new();
    for (column, value) in [
        ("a.task_id", filter.task_id.as_ref().map(TaskId::as_str)),
        ("a.status", filter.status.map(Status::as_str)),
    ] {
        if let Some(v) = value {
            clause.push_str(if clause.is_empty() { " WHERE " } else { " AND " });
            clause.push_str(&format!("{column} = ?{}", values.len() + 1));
            values.push(Param::text(v));
        }
    }
    let sql = format!("{SELECT}{clause} {order}");
    let rows = tx.prepare(&sql)?.query_map(&values, |r| {
        let id = ApprovalId::new(r.get::<String>(0)?);
        let approval = read(r);
        Ok((id, approval))
    })?;
    let mut listing = Listing::default();
    for (id, approval) in rows {
        match skip_unreadable(&id, approval)? {
            Ok(a) => listing.approvals.push(a),
            Err(skipped) => listing.unreadable.push(skipped),
        }
    }
    Ok(listing)
}

/// One row of [`SELECT`]. Every value it cannot take (a cell of another kind, JSON or a time
/// that does not read) is a corrupt-row error naming its column and row.
fn read(r: &Row<'_>) -> aigentflow_persistence::Result<Approval> {
    let id: String = r.get(0)?;
    let corrupt = |column: &'static str, reason: String| PError::CorruptRow {
        table: TABLE,
        column,
        id: id.as_str().into(),
        reason: reason.into(),
    };
    let task_id: String = r.get_in(1, TABLE, "task_id", &id)?;
    let text = |i: usize, column: &'static str| r.get_in::<String>(i, TABLE, column, &id);
    let opt_text =
        |i: usize, column: &'static str| r.get_in::<Option<String>>(i, TABLE, column, &id);
    let payload = serde_json::from_str(&text(4, "payload")?)
        .map_err(|e| PError::corrupt_json(TABLE, "payload", &id, &e))?;
    let status =
        text(8, "status")?.parse::<Status>().map_err(|e| corrupt("status", e.to_string()))?;
    let time = |column: &'static str, i: usize| -> aigentflow_persistence::Result<_> {
        opt_text(i, column)?.map(|t| PError::read_time(TABLE, column, &id, &t)).transpose()
    };
    let requested_at =
        time("requested_at", 6)?.ok_or_else(|| corrupt("requested_at", "empty".into()))?;
    Ok(Approval {
        project_id: r.get_in::<String>(2, "workflow_states", "project_id", &task_id)?.into(),
        task_id: TaskId::new(task_id),
        kind: text(3, "kind")?,
        payload,
        requested_by: text(5, "requested_by")?,
        requested_at,
        deadline: time("deadline", 7)?,
        status,
        reviewer: opt_text(9, "reviewer")?,
        comment: opt_text(10, "comment")?,
        decided_at: time("decided_at", 11)?,
        id: ApprovalId::new(id),
    })
}
