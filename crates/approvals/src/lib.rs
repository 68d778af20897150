//! Durable approvals of aigentflow: a task waiting at AWAITING_APPROVAL, the request it waits
//! on, and the decision or expiry that ends it, kept in the database so they outlive the
//! process that asked.
//!
//! * [`Approvals::request`] stores a request (task, kind, JSON payload, requester, optional
//!   deadline) and moves the task AGENT_COMPLETE → AWAITING_APPROVAL (NEEDS_APPROVAL).
//! * [`Approvals::approve`] / [`Approvals::reject`] record a reviewer's decision (reviewer,
//!   comment, time) and move the task to APPROVED or REJECTED; a request is decided once, and
//!   of two reviewers deciding at once one wins ([`Error::NotPending`] for the other). A request
//!   past its deadline is not decided ([`Error::Expired`]): it is expired instead, as
//!   [`Approvals::expire_due`] would have.
//! * [`Approvals::pending`] reloads the pending requests after a restart, each with its
//!   deadline and [`Approval::time_left`]; [`Approvals::expire_due`] turns every request past
//!   its deadline into the task's APPROVAL_TIMEOUT (AWAITING_APPROVAL → REJECTED).
//! * A listing and an expiry pass skip a request they cannot read and name it
//!   ([`Listing::unreadable`], [`Expiry::unreadable`]): one corrupt row hides no other.
//! * Each of these writes the request or decision, the task's transition (through the state
//!   store) and its audit entry (through the audit log) in one transaction; the `*_in`
//!   variants join a caller's transaction.
//! * Kind, payload, requester, reviewer and comment pass the redaction policy like every text.
//!
//! The crate sits above the state store and the audit log (`persistence ← audit ← approvals`),
//! depends on no database driver, and runs the same on SQLite and PostgreSQL. Its table,
//! `approval_requests`, comes with the migrations (SQLite V9, PostgreSQL V3).

mod error;
mod model;
mod store;

pub use error::{Error, Result};
pub use model::{
    Approval, ApprovalFilter, ApprovalId, Decision, Expiry, Listing, NewApproval, Status,
    Unreadable,
};
pub use store::Approvals;
