//! Execution traces, agent invocations, per-agent metrics and crash recovery (decision 10).
//!
//! * [`ExecutionTracker::start_trace`] records a run with its owner (this process's id, its
//!   start time and the host, see [`Owner`]); [`heartbeat`](ExecutionTracker::heartbeat) keeps
//!   it visibly alive; [`complete_trace`](ExecutionTracker::complete_trace) measures its duration.
//! * [`record_invocation`](ExecutionTracker::record_invocation) /
//!   [`update_invocation`](ExecutionTracker::update_invocation) /
//!   [`invocations`](ExecutionTracker::invocations): what each agent did, with token usage in the
//!   TypeScript version's JSON keys (`inputTokens`, `outputTokens`, `totalTokens`).
//! * [`agent_metrics`](ExecutionTracker::agent_metrics) reads one range of a covering index on
//!   (agent, started_at, outcome, quality_score, total_tokens).
//! * [`recover`](ExecutionTracker::recover) finds running traces whose owner is gone, marks them
//!   crashed and returns them with their task's latest checkpoint; [`resume`](ExecutionTracker::resume)
//!   claims one for this process. A live owner is never taken for dead: a process that exists
//!   but is not ours (EPERM) is alive, and a pid reused by a newer process is told apart by its
//!   start time. Owners this host cannot probe (another host, unknown) are judged by heartbeat.
//! * The same on SQLite and PostgreSQL. Where they differ: leases follow the injected clock on
//!   SQLite and the server's clock on PostgreSQL (heartbeats record it too), and on PostgreSQL a
//!   recovery pass locks the running traces it judges and skips those another pass holds, so
//!   passes of several hosts at once mark each dead run once.
//! * [`traces_since`](ExecutionTracker::traces_since) reads the trace feed by [`TraceCursor`],
//!   a page at a time: the traces started since a poller last looked, in an order that only
//!   grows and in which they become visible on both backends (the `feed_seq` the schema gives
//!   each trace from a locked counter), so a cursor never skips one.
//! * Spans ([`start_span`](ExecutionTracker::start_span), [`end_span`](ExecutionTracker::end_span),
//!   [`record_llm`](ExecutionTracker::record_llm), [`decide`](ExecutionTracker::decide), each
//!   with an `_in(tx, …)` form): a trace's nested units of work, LLM usage with an exact
//!   [`Money`] cost, the decisions taken; read as a tree ([`span_tree`](ExecutionTracker::span_tree)),
//!   by project, session, status, kind and time ([`spans`](ExecutionTracker::spans)), and added
//!   up per day and model, provider, project or agent ([`cost_rollup`](ExecutionTracker::cost_rollup))
//!   against a monthly budget ([`budget_report`](ExecutionTracker::budget_report)). Every agent
//!   invocation is also its agent span, written in the same transaction; rollups read LLM
//!   spans only, so no usage counts twice. [`record_spans`](ExecutionTracker::record_spans)
//!   writes a batch of [`FinishedSpan`]s in a few statements, each stored as the one-at-a-time
//!   calls would store it; a bad one is [`Error::InBatch`] (its index) and nothing is written.
//! * Prompts, metadata, summaries, fragments, errors, span names, attributes and decisions
//!   pass through the redactor.
//!
//! Architecture invariant: this crate depends on no database driver, so no driver type appears
//! in its public API or its error (the façade's test
//! `drivers::no_crate_but_persistence_and_the_bench_depends_on_a_database_driver` holds this); its SQL, with a PostgreSQL text beside each statement whose dialects
//! differ, lives in `store.rs`.

mod error;
mod model;
mod money;
pub mod owner;
mod spans;
mod store;

pub use error::{Error, Result};
pub use model::{
    AgentMetrics, Invocation, InvocationId, InvocationUpdate, NewInvocation, Outcome, RecoveredRun,
    RecoveryOptions, RecoveryReport, TokenUsage, Trace, TraceCursor, TraceId, TracePage,
    TraceStatus,
};
pub use money::Money;
pub use owner::Owner;
pub use spans::{
    month_range, BudgetReport, CostGroup, CostQuery, CostRow, Decision, FinishedSpan, LlmCall,
    NewDecision, NewSpan, Span, SpanEnd, SpanId, SpanKind, SpanNode, SpanQuery, SpanStatus,
    UnknownKind, BUDGET_KEY,
};
pub use store::{mirror_invocation_in, ExecutionTracker, MAX_PAGE};
