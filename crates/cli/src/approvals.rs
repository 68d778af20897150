//! `approvals …`: requests waiting for a person's decision, and the decisions.

use aigentflow_approvals::{Approval, ApprovalFilter, ApprovalId, Approvals, Status, Unreadable};
use chrono::{DateTime, TimeDelta, Utc};
use clap::Subcommand;
use serde::Serialize;

use crate::out::{cell, opt, say, table, when};
use crate::{args, Ctx, Done};

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Requests, newest first. A pending request past its deadline shows as "expired (not yet
    /// applied)" until `approvals expire` (or the orchestrator) applies it; listing writes
    /// nothing. A request whose row cannot be read (a value written around the store) is
    /// skipped, and named on stderr in a warning line; the others are listed.
    List {
        /// Only requests still pending.
        #[arg(long)]
        pending: bool,
        /// Only this task's requests (not empty).
        #[arg(long, value_parser = args::name)]
        task: Option<String>,
    },
    /// A request: its task, kind, payload, requester, deadline and decision.
    Show {
        /// The request's id (not empty).
        #[arg(value_parser = args::id::<ApprovalId>)]
        id: ApprovalId,
    },
    /// Approve a pending request: its task goes AWAITING_APPROVAL → APPROVED, with the
    /// decision and its audit entry in one transaction. A request past its deadline (by this
    /// machine's clock) is refused, exit code 1, and expired as `approvals expire` would.
    Approve {
        /// The request's id (not empty).
        #[arg(value_parser = args::id::<ApprovalId>)]
        id: ApprovalId,
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Reject a pending request: its task goes AWAITING_APPROVAL → REJECTED, with the decision
    /// and its audit entry in one transaction. A request past its deadline (by this machine's
    /// clock) is refused, exit code 1, and expired as `approvals expire` would.
    Reject {
        /// The request's id (not empty).
        #[arg(value_parser = args::id::<ApprovalId>)]
        id: ApprovalId,
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Expire every pending request whose deadline has passed (by this machine's clock): each
    /// task gets APPROVAL_TIMEOUT (→ REJECTED). Safe to run while the orchestrator or another
    /// `approvals expire` runs: each request is expired once. A request whose row (or its
    /// task's) cannot be read is left pending and named on stderr in a warning line (and under
    /// `unreadable` with --json); every other one is expired all the same.
    Expire,
}

/// Who decides, and why.
#[derive(Debug, clap::Args)]
pub struct DecisionArgs {
    /// Who decides (not empty; recorded with the decision and as the audit entry's user).
    #[arg(long, value_parser = args::name)]
    reviewer: String,
    /// Why (not empty; redacted before it is written).
    #[arg(long, value_parser = args::name)]
    comment: Option<String>,
}

/// A request as listed: as stored, and whether its deadline has passed while it still waits.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    approval: &'a Approval,
    /// Pending with its deadline passed: `approvals expire` will expire it.
    overdue: bool,
}

pub fn run(ctx: &Ctx, command: ApprovalsCommand) -> anyhow::Result<Done> {
    let db = match command {
        ApprovalsCommand::List { .. } | ApprovalsCommand::Show { .. } => ctx.read()?,
        _ => ctx.write()?,
    };
    let now = db.now();
    let approvals = Approvals::new(db);
    match command {
        ApprovalsCommand::List { pending, task } => {
            let filter = ApprovalFilter {
                task_id: task.map(Into::into),
                status: pending.then_some(Status::Pending),
            };
            let listing = approvals.list(&filter)?;
            warn_unreadable(&listing.unreadable);
            let found = listing.approvals;
            let listed: Vec<Listed<'_>> =
                found.iter().map(|a| Listed { approval: a, overdue: a.is_due(now) }).collect();
            ctx.out.emit(&listed, || {
                let rows: Vec<Vec<String>> = found
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.to_string(),
                            a.task_id.to_string(),
                            cell(&a.kind, 20),
                            status(a, now),
                            cell(&a.requested_by, 20),
                            when(a.requested_at),
                            deadline(a, now),
                            opt(a.reviewer.as_deref().map(|r| cell(r, 20))),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "TASK",
                        "KIND",
                        "STATUS",
                        "REQUESTED BY",
                        "REQUESTED",
                        "DEADLINE",
                        "REVIEWER",
                    ],
                    &rows,
                );
            })?;
        }
        ApprovalsCommand::Show { id } => {
            let a = approvals.get(&id)?.ok_or_else(|| {
                anyhow::anyhow!("approval {id} not found (see `aigentflow approvals list`)")
            })?;
            ctx.out.emit(&Listed { approval: &a, overdue: a.is_due(now) }, || {
                say!("approval     {}", a.id);
                say!("task         {} (project {})", a.task_id, a.project_id);
                say!("kind         {}", cell(&a.kind, 100));
                say!("status       {}", status(&a, now));
                say!("requested    {} by {}", when(a.requested_at), cell(&a.requested_by, 60));
                say!("deadline     {}", deadline(&a, now));
                say!("reviewer     {}", opt(a.reviewer.as_deref()));
                say!("comment      {}", opt(a.comment.as_deref()));
                say!("decided      {}", opt(a.decided_at.map(when)));
                say!("payload      {}", cell(&a.payload.to_string(), 400));
            })?;
        }
        ApprovalsCommand::Approve { id, decision } => {
            decide(ctx, &approvals, &id, &decision, true)?
        }
        ApprovalsCommand::Reject { id, decision } => {
            decide(ctx, &approvals, &id, &decision, false)?
        }
        ApprovalsCommand::Expire => {
            let report = approvals.expire_due(now)?;
            warn_unreadable(&report.unreadable);
            ctx.out.emit(&report, || {
                for id in &report.expired {
                    say!("expired {id}");
                }
                say!("{} expired", report.expired.len());
            })?;
        }
    }
    Ok(Done::Ok)
}

/// One warning line on stderr per request a listing or an expiry pass skipped, whatever the
/// output mode: in --json the listing's array has no room for them, and a request missing
/// without a word would read as no request at all.
fn warn_unreadable(skipped: &[Unreadable]) {
    for s in skipped {
        let line = format!("skipped approval {}: {}", s.id, s.problem);
        let redacted = aigentflow_persistence::redact::redact_text(&line);
        crate::out::eprint_line(&format!("aigentflow: warning: {redacted}"));
    }
}

/// Approves or rejects a request, and says so.
fn decide(
    ctx: &Ctx,
    approvals: &Approvals,
    id: &ApprovalId,
    decision: &DecisionArgs,
    approve: bool,
) -> anyhow::Result<()> {
    let comment = decision.comment.as_deref();
    let a = if approve {
        approvals.approve(id, &decision.reviewer, comment)?
    } else {
        approvals.reject(id, &decision.reviewer, comment)?
    };
    ctx.out.emit(&a, || {
        let to = if approve { "APPROVED" } else { "REJECTED" };
        say!(
            "{} {} by {}: task {} is {to}",
            a.status,
            a.id,
            cell(&decision.reviewer, 60),
            a.task_id
        );
    })
}

/// The status as people read it: a pending request past its deadline says it is expired but
/// not applied yet.
fn status(a: &Approval, now: DateTime<Utc>) -> String {
    if a.is_due(now) {
        "expired (not yet applied)".into()
    } else {
        a.status.to_string()
    }
}

/// The deadline, with the time left while the request waits.
fn deadline(a: &Approval, now: DateTime<Utc>) -> String {
    match (a.deadline, a.time_left(now)) {
        (None, _) => "-".into(),
        (Some(d), Some(left)) if left > TimeDelta::zero() => {
            format!("{} ({} left)", when(d), span(left))
        }
        (Some(d), _) => when(d),
    }
}

/// A duration as people read it: days, hours and minutes, or seconds under a minute.
fn span(d: TimeDelta) -> String {
    let (days, hours, minutes) = (d.num_days(), d.num_hours() % 24, d.num_minutes() % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{}s", d.num_seconds().max(1)),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_in_the_largest_units_that_matter() {
        for (seconds, shown) in [
            (0, "1s"),
            (1, "1s"),
            (59, "59s"),
            (60, "1m"),
            (3599, "59m"),
            (3600, "1h 0m"),
            (3600 + 61, "1h 1m"),
            (86_400, "1d 0h"),
            (86_400 * 400 + 7200 + 59, "400d 2h"),
        ] {
            assert_eq!(span(TimeDelta::seconds(seconds)), shown, "{seconds}");
        }
    }
}
