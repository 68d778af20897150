//! What the store takes and gives: [`NewApproval`], [`Approval`], [`Status`], [`ApprovalFilter`],
//! and what a listing or an expiry pass reports: [`Listing`], [`Expiry`], [`Unreadable`].

use aigentflow_core_states::{time, ProjectId, TaskId};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;

aigentflow_core_states::string_id!(
    /// The id of an approval request (a UUID for the requests this store makes).
    ApprovalId
);

aigentflow_core_states::closed_enum! {
    /// Where a request is: waiting, or how it ended.
    pub enum Status as "approval status" {
        /// Waiting for a reviewer; its task is in AWAITING_APPROVAL.
        Pending = "pending",
        /// A reviewer approved it (the task's APPROVE).
        Approved = "approved",
        /// A reviewer rejected it (the task's REJECT).
        Rejected = "rejected",
        /// Its deadline passed with no decision (the task's APPROVAL_TIMEOUT).
        Expired = "expired",
    }
}

aigentflow_core_states::closed_enum! {
    /// What a reviewer decides.
    pub enum Decision as "decision" {
        /// The task goes on: APPROVE, AWAITING_APPROVAL → APPROVED.
        Approve = "approve",
        /// The task is turned back: REJECT, AWAITING_APPROVAL → REJECTED.
        Reject = "reject",
    }
}

impl Decision {
    /// The status a request ends in.
    pub fn status(self) -> Status {
        match self {
            Self::Approve => Status::Approved,
            Self::Reject => Status::Rejected,
        }
    }
}

/// A request to make: what is to be approved, for which task, by whom, until when.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    /// The task waiting for the decision: stored, in AGENT_COMPLETE, its last agent output
    /// needing approval (the NEEDS_APPROVAL rule of the default table).
    pub task_id: TaskId,
    /// What kind of decision this is (e.g. `design`, `deploy`; not empty).
    pub kind: String,
    /// What the reviewer decides on (JSON; redacted before it is stored).
    pub payload: Value,
    /// Who asks: an agent, the orchestrator, a person (not empty).
    pub requested_by: String,
    /// When the request expires with no decision: `None` waits for ever. Must be later than
    /// the request, inside years 0000 to 9999; kept to the millisecond.
    pub deadline: Option<DateTime<Utc>>,
}

impl NewApproval {
    /// A request with a JSON `null` payload and no deadline; the other fields are set directly.
    pub fn new(task_id: TaskId, kind: impl Into<String>, requested_by: impl Into<String>) -> Self {
        Self {
            task_id,
            kind: kind.into(),
            payload: Value::Null,
            requested_by: requested_by.into(),
            deadline: None,
        }
    }
}

/// A stored request, with its decision once made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub task_id: TaskId,
    /// The task's project.
    pub project_id: ProjectId,
    pub kind: String,
    /// The payload as stored (redacted).
    pub payload: Value,
    pub requested_by: String,
    #[serde(with = "time::serde_millis")]
    pub requested_at: DateTime<Utc>,
    /// None: no deadline.
    #[serde(serialize_with = "opt_millis")]
    pub deadline: Option<DateTime<Utc>>,
    pub status: Status,
    /// Who decided (None while pending, and for an expiry).
    pub reviewer: Option<String>,
    /// The reviewer's comment, if any.
    pub comment: Option<String>,
    /// When it was decided or expired (None while pending).
    #[serde(serialize_with = "opt_millis")]
    pub decided_at: Option<DateTime<Utc>>,
}

impl Approval {
    /// Whether it still waits for a decision.
    pub fn is_pending(&self) -> bool {
        self.status == Status::Pending
    }

    /// How long a pending request has left at `now` (zero once its deadline is reached); None
    /// for a request with no deadline or no longer pending. What a restarted orchestrator arms
    /// its timers with.
    pub fn time_left(&self, now: DateTime<Utc>) -> Option<TimeDelta> {
        let deadline = self.deadline.filter(|_| self.is_pending())?;
        Some((deadline - now).max(TimeDelta::zero()))
    }

    /// Whether it is pending with its deadline reached at `now`: what
    /// [`Approvals::expire_due`](crate::Approvals::expire_due) expires.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.is_pending() && self.deadline.is_some_and(|d| d <= now)
    }
}

/// Which requests a listing returns; every field left `None` is no filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalFilter {
    /// Only this task's requests.
    pub task_id: Option<TaskId>,
    /// Only requests with this status.
    pub status: Option<Status>,
}

/// A request a listing or an expiry pass could not read (a value written around the store: JSON
/// that does not parse, a time that does not read, a cell of another kind), skipped so that one
/// such row does not hide every other request or keep every other one from expiring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// The request's id.
    pub id: ApprovalId,
    /// Why it cannot be read: the corrupt-row error naming the table, the column and the row
    /// (the request's, or its task's).
    pub problem: String,
}

/// What a listing read: the requests, and those it skipped as unreadable. Reading one of those
/// alone ([`Approvals::get`](crate::Approvals::get)) is the corrupt-row error itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Listing {
    /// The requests read, in the listing's order.
    pub approvals: Vec<Approval>,
    /// The rows skipped, in the listing's order.
    pub unreadable: Vec<Unreadable>,
}

/// What an expiry pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expiry {
    /// The requests this pass expired.
    pub expired: Vec<ApprovalId>,
    /// The pending requests it had to judge (past their deadline, or with a deadline not in the
    /// stored form) but could not read, the request's row or its task's: left pending, for a
    /// person to repair; every readable one was judged all the same.
    pub unreadable: Vec<Unreadable>,
}

fn opt_millis<S: serde::Serializer>(ts: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => time::serde_millis::serialize(ts, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_decisions_keep_their_stored_text() {
        let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(statuses, ["pending", "approved", "rejected", "expired"]);
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert_eq!(Decision::Approve.status(), Status::Approved);
        assert_eq!(Decision::Reject.status(), Status::Rejected);
        assert!("done".parse::<Status>().is_err());
    }

    #[test]
    fn time_left_counts_down_to_zero_and_only_while_pending() {
        let at = |s: i64| DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
        let mut a = Approval {
            id: ApprovalId::new("a"),
            task_id: TaskId::new("t"),
            project_id: ProjectId::new("p"),
            kind: "design".into(),
            payload: Value::Null,
            requested_by: "architect".into(),
            requested_at: at(0),
            deadline: Some(at(60)),
            status: Status::Pending,
            reviewer: None,
            comment: None,
            decided_at: None,
        };
        assert_eq!(a.time_left(at(0)), Some(TimeDelta::seconds(60)));
        assert_eq!(a.time_left(at(59)), Some(TimeDelta::seconds(1)));
        assert!(!a.is_due(at(59)));
        assert_eq!(a.time_left(at(60)), Some(TimeDelta::zero()));
        assert!(a.is_due(at(60)));
        assert_eq!(a.time_left(at(3600)), Some(TimeDelta::zero()));
        a.status = Status::Approved;
        assert_eq!(a.time_left(at(0)), None);
        assert!(!a.is_due(at(3600)));
        a.status = Status::Pending;
        a.deadline = None;
        assert_eq!(a.time_left(at(0)), None);
        assert!(!a.is_due(at(i64::from(u32::MAX))));
    }
}
