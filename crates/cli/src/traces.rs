//! `traces …`: runs, agent invocations, metrics, crash recovery and LLM cost.

use aigentflow_core_states::time::Bound;
use aigentflow_core_states::ProjectId;
use aigentflow_tracker::{
    month_range, CostGroup, CostQuery, ExecutionTracker, RecoveryOptions, TraceId,
};
use chrono::{Datelike, NaiveDate};
use clap::Subcommand;
use serde_json::json;

use crate::out::{cell, opt, say, table, when};
use crate::{args, Ctx, Done};

#[derive(Debug, Subcommand)]
pub enum TracesCommand {
    /// Recent traces, newest first.
    List {
        /// Only this project's traces (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
        /// At most this many traces: any whole number from 0.
        #[arg(long, default_value_t = 20, value_parser = args::count, allow_negative_numbers = true)]
        limit: u64,
    },
    /// A trace with its agent invocations.
    Show {
        /// The trace's id.
        #[arg(value_parser = args::id::<TraceId>)]
        id: TraceId,
    },
    /// How an agent did over the last N days.
    Metrics {
        /// The agent's name, as recorded with its invocations (not empty).
        #[arg(long, value_parser = args::name)]
        agent: String,
        /// How many days back from now the window reaches: 0 to 700000 (the window may not
        /// start before year 0000).
        #[arg(long, default_value_t = 30, value_parser = args::days, allow_negative_numbers = true)]
        days: u32,
    },
    /// Find runs whose owner process is gone, mark them crashed, and list them with the
    /// checkpoint to resume from. On PostgreSQL, recoveries run at once on several hosts mark
    /// each dead run once.
    Recover {
        /// Owners this host cannot probe (another host, unknown) count as gone after this many
        /// minutes without a heartbeat, by the database server's clock on PostgreSQL (this
        /// machine's on SQLite): 0 to 4294967295.
        #[arg(long, default_value_t = 5, value_parser = args::count32, allow_negative_numbers = true)]
        lease_minutes: u32,
        /// Give up on a run found dead more often than this: 0 to 4294967295.
        #[arg(long, default_value_t = 3, value_parser = args::count32, allow_negative_numbers = true)]
        max_attempts: u32,
    },
    /// Tokens and exact cost of LLM spans per UTC day and model, provider, project or agent,
    /// one line per currency; with --project, the project's spend over a month against its
    /// monthly budget (configuration `budget.monthly` of scope `project:P`, e.g.
    /// `{"amount": "50.00", "currency": "USD"}`). Only LLM spans count: an agent
    /// invocation's own token report is never added again.
    Cost {
        /// Only this project's spans, and show its budget (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
        /// What each line adds up, beside the day: model, provider, project or agent.
        #[arg(long, value_name = "GROUP", default_value = "model", value_parser = parse_group)]
        by: CostGroup,
        /// Spans started from this date (from its midnight, UTC) or timestamp on, inclusive;
        /// years 0000 to 9999, not in a leap second.
        #[arg(long, value_name = "DATE", value_parser = args::date, conflicts_with = "month")]
        since: Option<String>,
        /// Spans started up to this date (the whole day, UTC) or timestamp, inclusive; years
        /// 0000 to 9999, not in a leap second.
        #[arg(long, value_name = "DATE", value_parser = args::date, conflicts_with = "month")]
        until: Option<String>,
        /// One calendar month, UTC (`YYYY-MM`): the range, and the month of the budget (the
        /// current month without it).
        #[arg(long, value_name = "MONTH", value_parser = parse_month)]
        month: Option<NaiveDate>,
    },
}

fn parse_group(text: &str) -> Result<CostGroup, String> {
    text.parse().map_err(|e: aigentflow_core_states::UnknownVariant| e.to_string())
}

/// `YYYY-MM` as the month's first day.
fn parse_month(text: &str) -> Result<NaiveDate, args::Refused> {
    NaiveDate::parse_from_str(&format!("{}-01", text.trim()), "%Y-%m-%d")
        .ok()
        .filter(|_| text.trim().len() == 7)
        .ok_or_else(|| args::Refused::Shape(format!("\"{text}\" is not a month like 2026-11")))
}

/// A bound typed on the command line (checked by [`args::date`] already).
fn bound(text: &str) -> anyhow::Result<Bound> {
    Ok(Bound::parse(text)?)
}

pub fn run(ctx: &Ctx, command: TracesCommand) -> anyhow::Result<Done> {
    let tracker = ExecutionTracker::new(match command {
        TracesCommand::Recover { .. } => ctx.write()?,
        _ => ctx.read()?,
    });
    match command {
        TracesCommand::List { project, limit } => {
            let traces = tracker.recent_traces(project.as_ref(), limit)?;
            ctx.out.emit(&traces, || {
                let rows: Vec<Vec<String>> = traces
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.project_id.to_string(),
                            t.task_id.to_string(),
                            t.status.to_string(),
                            when(t.started_at),
                            opt(t.duration_ms.map(|d| format!("{d} ms"))),
                            opt(t.token_usage.map(|u| u.total_tokens)),
                            cell(&t.prompt, 40),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "TRACE", "PROJECT", "TASK", "STATUS", "STARTED", "DURATION", "TOKENS",
                        "PROMPT",
                    ],
                    &rows,
                );
            })?;
        }
        TracesCommand::Show { id } => {
            let trace =
                tracker.get_trace(&id)?.ok_or_else(|| anyhow::anyhow!("trace {id} not found"))?;
            let invocations = tracker.invocations(&id)?;
            ctx.out.emit(&json!({"trace": trace, "invocations": invocations}), || {
                say!("trace     {}", trace.id);
                say!("task      {} (project {})", trace.task_id, trace.project_id);
                say!("status    {}", trace.status);
                say!("prompt    {}", cell(&trace.prompt, 100));
                say!("started   {}", when(trace.started_at));
                say!("completed {}", opt(trace.completed_at.map(when)));
                say!("success   {}", opt(trace.success));
                if let Some(o) = &trace.owner {
                    say!("owner     pid {} on {}", o.pid, o.host);
                }
                say!();
                let rows: Vec<Vec<String>> = invocations
                    .iter()
                    .map(|i| {
                        vec![
                            i.id.to_string(),
                            i.agent.clone(),
                            when(i.started_at),
                            opt(i.outcome.as_deref()),
                            opt(i.quality_score),
                            opt(i.token_usage.map(|u| u.total_tokens)),
                            cell(
                                i.error.as_deref().or(i.output_summary.as_deref()).unwrap_or(""),
                                50,
                            ),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "AGENT", "STARTED", "OUTCOME", "QUALITY", "TOKENS", "SUMMARY / ERROR"],
                    &rows,
                );
            })?;
        }
        TracesCommand::Metrics { agent, days } => {
            let m = tracker.agent_metrics(&agent, days)?;
            ctx.out.emit(&m, || {
                say!("agent         {} (since {})", m.agent, when(m.since));
                say!("invocations   {}", m.total_invocations);
                say!("success rate  {:.1}%", m.success_rate * 100.0);
                say!("failure rate  {:.1}%", m.failure_rate * 100.0);
                say!("avg quality   {}", opt(m.avg_quality_score.map(|q| format!("{q:.2}"))));
                say!(
                    "avg tokens    {}",
                    opt(m.avg_tokens_per_invocation.map(|t| format!("{t:.0}")))
                );
            })?;
        }
        TracesCommand::Recover { lease_minutes, max_attempts } => {
            let lease = chrono::TimeDelta::minutes(i64::from(lease_minutes));
            let options = RecoveryOptions { lease, max_attempts };
            let report = tracker.recover(&options)?;
            ctx.out.emit(&report, || {
                let rows: Vec<Vec<String>> = report
                    .crashed
                    .iter()
                    .map(|r| {
                        vec![
                            r.trace.id.to_string(),
                            r.trace.task_id.to_string(),
                            r.trace.recovery_attempts.to_string(),
                            match (&r.task, &r.problem) {
                                (_, Some(p)) => format!("unreadable: {}", cell(p, 60)),
                                (Some(t), None) => format!(
                                    "{} / {}",
                                    t.state,
                                    opt(t.latest_checkpoint.as_ref().map(|c| c.id.to_string()))
                                ),
                                (None, None) => "no stored task".into(),
                            },
                            cell(&r.reason, 60),
                        ]
                    })
                    .collect();
                table(&["TRACE", "TASK", "ATTEMPTS", "STATE / CHECKPOINT", "WHY"], &rows);
                for t in &report.abandoned {
                    say!(
                        "abandoned {} (task {}) after {} attempts",
                        t.id,
                        t.task_id,
                        t.recovery_attempts
                    );
                }
                say!("{} running with a live owner", report.alive);
                if report.skipped > 0 {
                    say!(
                        "{} running held by another recovery pass or a heartbeat, or started meanwhile: not judged by this pass",
                        report.skipped
                    );
                }
            })?;
        }
        TracesCommand::Cost { project, by, since, until, month } => {
            let (since, until) = match month {
                Some(m) => {
                    let (first, next) = month_range(m)?;
                    (Some(first), Some(next))
                }
                None => (
                    since.as_deref().map(bound).transpose()?.map(|b| b.first()),
                    until
                        .as_deref()
                        .map(bound)
                        .transpose()?
                        .map(|b| b.last() + chrono::TimeDelta::milliseconds(1)),
                ),
            };
            let rows =
                tracker.cost_rollup(&CostQuery { project: project.clone(), by, since, until })?;
            let budget = match &project {
                Some(p) => {
                    let now = tracker_now(ctx)?;
                    let m = month.unwrap_or_else(|| now.with_day(1).unwrap_or(now));
                    Some(tracker.budget_report(p, m)?)
                }
                None => None,
            };
            ctx.out.emit(&json!({"by": by, "rows": rows, "budget": budget}), || {
                let rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.day.clone(),
                            opt(r.key.as_deref()),
                            r.calls.to_string(),
                            r.input_tokens.to_string(),
                            r.output_tokens.to_string(),
                            opt(r.cost.as_ref().map(|c| c.to_string())),
                        ]
                    })
                    .collect();
                let group = by.as_str().to_uppercase();
                table(&["DAY", &group, "CALLS", "INPUT", "OUTPUT", "COST"], &rows);
                if let Some(b) = &budget {
                    let spent: Vec<String> = b.spent.iter().map(|m| m.to_string()).collect();
                    let spent =
                        if spent.is_empty() { "nothing".to_owned() } else { spent.join(", ") };
                    say!("project {} in {}: spent {spent}", b.project, b.month);
                    match (&b.budget, &b.remaining) {
                        (None, _) => say!(
                            "no monthly budget (config budget.monthly, scope project:{})",
                            b.project
                        ),
                        (Some(total), Some(left)) => say!("budget {total}: {left} left"),
                        (Some(total), None) => say!("budget {total}: over budget"),
                    }
                }
            })?;
        }
    }
    Ok(Done::Ok)
}

/// The database clock's date today (UTC).
fn tracker_now(ctx: &Ctx) -> anyhow::Result<NaiveDate> {
    Ok(ctx.read()?.now().date_naive())
}
