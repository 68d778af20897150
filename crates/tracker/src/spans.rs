//! Spans of a trace (issue 16): nested units of work (agent, tool, LLM call, workflow step),
//! LLM usage with an exact cost, the decisions agents took, and cost rollups. All of their SQL.
//!
//! One source per figure: token and cost rollups read LLM spans only. The agent span that
//! mirrors each agent invocation (written with it, in its transaction, and by the migration for
//! invocations recorded before) carries the invocation's own token report for reading, but is
//! never added to a rollup, so usage recorded on an LLM span below it is never counted twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use aigentflow_core_states::{string_id, time, ProjectId};
use aigentflow_persistence::{Clean, ConfigStore, Param, Row, Tx};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::model::{opt_time, Invocation, InvocationId, Outcome, TraceId};
use crate::money::Money;
use crate::store::ExecutionTracker;

string_id!(
    /// The id of a span.
    SpanId
);

/// What a span is. An open set: kind text this version does not know (written by a later
/// one) reads back as [`SpanKind::Unknown`] with its own text, never as another kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpanKind {
    /// An agent's run.
    Agent,
    /// A tool call.
    Tool,
    /// A call to a language model: the kind that carries model, tokens and cost.
    Llm,
    /// A workflow step.
    Workflow,
    /// Anything else.
    Other,
    /// Kind text this version does not know, kept as it was read.
    Unknown(UnknownKind),
}

/// Span kind text outside the known kinds; built only by [`SpanKind::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnknownKind(String);

impl SpanKind {
    /// The known kinds, in declaration order.
    pub const KNOWN: [SpanKind; 5] =
        [SpanKind::Agent, SpanKind::Tool, SpanKind::Llm, SpanKind::Workflow, SpanKind::Other];

    /// The stored text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Agent => "agent",
            Self::Tool => "tool",
            Self::Llm => "llm",
            Self::Workflow => "workflow",
            Self::Other => "other",
            Self::Unknown(UnknownKind(text)) => text,
        }
    }

    /// Parses stored text; text outside the known kinds becomes [`SpanKind::Unknown`].
    pub fn parse(text: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|k| k.as_str() == text)
            .unwrap_or_else(|| Self::Unknown(UnknownKind(text.to_owned())))
    }
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SpanKind {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Self::parse(text))
    }
}

impl Serialize for SpanKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

aigentflow_core_states::closed_enum! {
    /// Where a span stands.
    pub enum SpanStatus as "span status" {
        /// Started, not ended.
        Running = "running",
        /// Ended well.
        Ok = "ok",
        /// Ended with an error.
        Error = "error",
    }
}

/// A span to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSpan {
    pub trace_id: TraceId,
    /// A span of the same trace, or None for a top-level span.
    pub parent_id: Option<SpanId>,
    pub kind: SpanKind,
    pub name: String,
    /// None: the database clock's now.
    pub started_at: Option<DateTime<Utc>>,
    /// None: the parent's session, if any.
    pub session_id: Option<String>,
    /// Any JSON (redacted before it is stored).
    pub attributes: Option<Value>,
}

impl NewSpan {
    /// A top-level span of `kind` named `name` in a trace, starting now; other fields set
    /// directly.
    pub fn new(trace_id: TraceId, kind: SpanKind, name: impl Into<String>) -> Self {
        Self {
            trace_id,
            parent_id: None,
            kind,
            name: name.into(),
            started_at: None,
            session_id: None,
            attributes: None,
        }
    }

    /// The same span below `parent`.
    pub fn under(mut self, parent: &SpanId) -> Self {
        self.parent_id = Some(parent.clone());
        self
    }
}

/// How a span ends.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEnd {
    /// [`SpanStatus::Ok`] or [`SpanStatus::Error`].
    pub status: SpanStatus,
    /// None: the database clock's now. Not before the span's start.
    pub ended_at: Option<DateTime<Utc>>,
    /// Merged into the span's attributes (top-level keys of two objects), else replacing them.
    pub attributes: Option<Value>,
}

/// What one language-model call used ([`ExecutionTracker::record_llm`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LlmCall {
    pub model: String,
    pub provider: String,
    /// From 0.
    pub input_tokens: i64,
    /// From 0.
    pub output_tokens: i64,
    /// Exact, with its currency.
    pub cost: Option<Money>,
    /// From 0.
    pub latency_ms: Option<i64>,
}

/// A span that has ended, recorded whole in a batch ([`ExecutionTracker::record_spans`]): what
/// [`ExecutionTracker::start_span`], [`ExecutionTracker::record_llm`] and
/// [`ExecutionTracker::end_span`] record one after another, in one value.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedSpan {
    /// Chosen by the caller when the span started (e.g. [`SpanId::random`]), so that spans of
    /// one batch can name each other as parents. Not empty, not a stored span's, and not of the
    /// form `invocation-…` (the agent spans mirrored from invocations).
    pub id: SpanId,
    /// How it started. The parent is a stored span or another span of the batch, before or
    /// after this one.
    pub start: NewSpan,
    /// How it ended.
    pub end: SpanEnd,
    /// What the call used, for an LLM span.
    pub llm: Option<LlmCall>,
}

impl FinishedSpan {
    /// A span `id` that started as `start` and ended as `end`, without LLM usage.
    pub fn new(id: SpanId, start: NewSpan, end: SpanEnd) -> Self {
        Self { id, start, end, llm: None }
    }

    /// The same span with what its call used.
    pub fn with_llm(mut self, call: LlmCall) -> Self {
        self.llm = Some(call);
        self
    }
}

/// A stored span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    pub id: SpanId,
    pub trace_id: TraceId,
    pub parent_id: Option<SpanId>,
    pub kind: SpanKind,
    pub name: String,
    pub status: SpanStatus,
    #[serde(with = "time::serde_millis")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_time")]
    pub ended_at: Option<DateTime<Utc>>,
    pub attributes: Option<Value>,
    /// The trace's project (None only for a span mirrored from an invocation whose trace is
    /// missing).
    pub project_id: Option<ProjectId>,
    pub session_id: Option<String>,
    /// The agent this span runs under: an agent span's name, inherited below it.
    pub agent: Option<String>,
    /// What the call used, once [`ExecutionTracker::record_llm`] recorded it.
    pub llm: Option<LlmCall>,
    /// The agent invocation this agent span mirrors, if it mirrors one.
    pub invocation_id: Option<InvocationId>,
}

/// A span with its decisions and the spans below it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanNode {
    pub span: Span,
    pub decisions: Vec<Decision>,
    pub children: Vec<SpanNode>,
}

/// A decision to record on a span.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    pub agent: String,
    /// What was decided (e.g. `route`, `retry`, `model`).
    pub kind: String,
    /// The options weighed (any JSON, redacted).
    pub options: Value,
    pub choice: String,
    pub rationale: Option<String>,
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub id: i64,
    pub span_id: SpanId,
    pub agent: String,
    pub kind: String,
    pub options: Value,
    pub choice: String,
    pub rationale: Option<String>,
    #[serde(with = "time::serde_millis")]
    pub decided_at: DateTime<Utc>,
}

/// Which spans [`ExecutionTracker::spans`] returns; None fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanQuery {
    pub project: Option<ProjectId>,
    pub session: Option<String>,
    pub status: Option<SpanStatus>,
    pub kind: Option<SpanKind>,
    /// Spans started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Spans started before this instant.
    pub until: Option<DateTime<Utc>>,
    /// At most this many (None: all), oldest first.
    pub limit: Option<u64>,
}

aigentflow_core_states::closed_enum! {
    /// What a cost rollup groups by, beside the day.
    pub enum CostGroup as "cost grouping" {
        Model = "model",
        Provider = "provider",
        Project = "project",
        Agent = "agent",
    }
}

impl CostGroup {
    fn column(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Provider => "provider",
            Self::Project => "project_id",
            Self::Agent => "agent",
        }
    }
}

/// Which LLM spans a rollup adds up.
#[derive(Debug, Clone, PartialEq)]
pub struct CostQuery {
    pub project: Option<ProjectId>,
    pub by: CostGroup,
    /// Spans started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Spans started before this instant.
    pub until: Option<DateTime<Utc>>,
}

/// Usage and exact cost of one day, one group and one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostRow {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The model, provider, project or agent (None: spans that have none).
    pub key: Option<String>,
    /// LLM spans added up.
    pub calls: u64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// The exact sum in one currency; None for spans recorded without a cost.
    pub cost: Option<Money>,
}

/// A project's spend over one month against its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetReport {
    pub project: ProjectId,
    /// `YYYY-MM`.
    pub month: String,
    /// The `budget.monthly` configuration in effect for the project, if any.
    pub budget: Option<Money>,
    /// The month's exact spend, one amount per currency, by currency.
    pub spent: Vec<Money>,
    /// The budget less the spend in its currency (None without a budget or when over it).
    pub remaining: Option<Money>,
    /// Whether the spend in the budget's currency is above the budget.
    pub over_budget: bool,
}

/// The configuration key of a project's monthly budget: `{"amount": "50.00", "currency": "USD"}`.
pub const BUDGET_KEY: &str = "budget.monthly";

const SPAN_COLUMNS: &str = "id, trace_id, parent_id, kind, name, status, started_at, ended_at, \
    attributes, project_id, session_id, agent, model, provider, input_tokens, output_tokens, \
    cost_nanos, currency, latency_ms, invocation_id";
const DECISION_COLUMNS: &str = "id, span_id, agent, kind, options, choice, rationale, decided_at";

const INSERT_SPAN: &str = "INSERT INTO spans (id, trace_id, parent_id, kind, name, status,
        started_at, attributes, project_id, session_id, agent)
    VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9, ?10)";

/// A finished span's row ([`ExecutionTracker::record_spans_in`]), its columns in the order of
/// [`FINISHED_FIELDS`].
const INSERT_FINISHED: &str = "INSERT INTO spans (id, trace_id, parent_id, kind, name, status,
        started_at, ended_at, attributes, project_id, session_id, agent, model, provider,
        input_tokens, output_tokens, cost_nanos, currency, latency_ms)";

/// What each column of [`INSERT_FINISHED`] holds, as an error names it.
const FINISHED_FIELDS: [&str; 19] = [
    "span id",
    "trace",
    "parent span",
    "span kind",
    "span name",
    "span status",
    "start time",
    "end time",
    "attributes",
    "project",
    "session",
    "agent",
    "model",
    "provider",
    "input tokens",
    "output tokens",
    "cost",
    "currency",
    "latency",
];

/// The stored spans among some ids; `{ids}` is `?1, …, ?N`, N a power of two up to
/// [`MAX_ID_LOOKUP`] (the last id repeated), so that a connection prepares few texts.
const SPANS_BY_ID: &str = "SELECT id, trace_id, session_id, agent FROM spans WHERE id IN ({ids})";

/// Ids one [`SPANS_BY_ID`] looks up at most.
const MAX_ID_LOOKUP: usize = 512;

/// The ids of the agent spans mirrored from invocations start so (`invocation-42`).
const INVOCATION_SPAN_PREFIX: &str = "invocation-";

/// Writes the agent span of an invocation, or brings it in step with the invocation.
const MIRROR_INVOCATION: &str = "INSERT INTO spans (id, trace_id, parent_id, kind, name, status,
        started_at, ended_at, attributes, project_id, agent, input_tokens, output_tokens,
        invocation_id)
    VALUES (?1, ?2, NULL, 'agent', ?3, ?4, ?5, ?6, ?7,
        (SELECT project_id FROM execution_traces WHERE id = ?2), ?3, ?8, ?9, ?10)
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, ended_at = excluded.ended_at,
        attributes = excluded.attributes, input_tokens = excluded.input_tokens,
        output_tokens = excluded.output_tokens";

/// Day, group, currency and sums of LLM spans; `{filters}` is ` AND project_id = ?` and the
/// like for the filters given, none other. Sorted in Rust (NULLs sort apart on the two).
///
/// No `(?1 IS NULL OR project_id = ?1)` for a filter left out: PostgreSQL plans a statement it
/// has run five times once for any value of its parameters, and that plan, not knowing the
/// filters are off, sorts a million spans on disk where the plan without them hashes — the
/// rollup then took 2.0 s instead of 0.97 (`EXPLAIN ANALYZE` with `force_generic_plan`).
const ROLLUP: &str = "SELECT substr(started_at, 1, 10), {key}, currency, COUNT(*),
        COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), SUM(cost_nanos)
    FROM spans
    WHERE kind = 'llm'{filters}
    GROUP BY 1, 2, 3";
/// [`ROLLUP`] in PostgreSQL's dialect: sums of BIGINT are NUMERIC there.
const ROLLUP_PG: &str = "SELECT substr(started_at, 1, 10), {key}, currency, COUNT(*),
        COALESCE(SUM(input_tokens), 0)::BIGINT, COALESCE(SUM(output_tokens), 0)::BIGINT,
        SUM(cost_nanos)::BIGINT
    FROM spans
    WHERE kind = 'llm'{filters}
    GROUP BY 1, 2, 3";

impl ExecutionTracker {
    /// Starts a span (name and attributes redacted); returns it.
    pub fn start_span(&self, new: &NewSpan) -> Result<Span> {
        self.db().write(|tx| self.start_span_in(tx, new))
    }

    /// Starts a span inside a caller's transaction. The trace must exist, and a parent must be
    /// a span of the same trace; the span inherits the parent's session (unless given) and
    /// agent (an agent span is its own agent).
    pub fn start_span_in(&self, tx: &Tx<'_>, new: &NewSpan) -> Result<Span> {
        check_name(new)?;
        let project: Option<String> = tx
            .query_row(
                "SELECT project_id FROM execution_traces WHERE id = ?1",
                &[Param::text(new.trace_id.as_str())],
                |r| r.get(0),
            )?
            .ok_or_else(|| Error::UnknownTrace { id: new.trace_id.to_string().into() })?;
        let (mut session, mut agent) = (new.session_id.clone(), None);
        if let Some(parent) = &new.parent_id {
            let p = get_span_in(tx, parent)?
                .ok_or_else(|| Error::UnknownSpan { id: parent.to_string().into() })?;
            if p.trace_id != new.trace_id {
                return Err(other_trace(parent, &p.trace_id, &new.trace_id));
            }
            if session.is_none() {
                session = p.session_id;
            }
            agent = p.agent;
        }
        if new.kind == SpanKind::Agent {
            agent = Some(new.name.clone());
        }
        let attributes = new.attributes.as_ref().map(Param::json).transpose()?;
        let id = SpanId::random();
        tx.execute(
            INSERT_SPAN,
            &[
                Param::text(id.as_str()),
                Param::text(new.trace_id.as_str()),
                Param::opt_text(new.parent_id.as_ref().map(SpanId::as_str)),
                Param::text(new.kind.as_str()),
                Param::text(&new.name),
                Param::time(new.started_at.unwrap_or_else(|| tx.now())),
                attributes.unwrap_or(Param::NULL),
                Param::opt_text(project.as_deref()),
                Param::opt_text(session.as_deref()),
                Param::opt_text(agent.as_deref()),
            ],
        )?;
        get_span_in(tx, &id)?.ok_or_else(|| Error::UnknownSpan { id: id.to_string().into() })
    }

    /// Ends a running span; returns it.
    pub fn end_span(&self, id: &SpanId, end: &SpanEnd) -> Result<Span> {
        self.db().write(|tx| self.end_span_in(tx, id, end))
    }

    /// Ends a running span inside a caller's transaction. The status is `ok` or `error`; the
    /// end is not before the start; a span ends once.
    pub fn end_span_in(&self, tx: &Tx<'_>, id: &SpanId, end: &SpanEnd) -> Result<Span> {
        check_end_status(end)?;
        let span =
            get_span_in(tx, id)?.ok_or_else(|| Error::UnknownSpan { id: id.to_string().into() })?;
        if span.status != SpanStatus::Running {
            return Err(Error::InvalidInput {
                what: "span",
                reason: format!("span {id} has already ended ({})", span.status).into(),
            });
        }
        let ended = ended_at(tx, id, span.started_at, end)?;
        let attributes = merged_attributes(span.attributes.as_ref(), end.attributes.as_ref());
        let attributes = attributes.as_ref().map(Param::json).transpose()?;
        tx.execute(
            "UPDATE spans SET status = ?1, ended_at = ?2, attributes = ?3 WHERE id = ?4",
            &[
                Param::text(end.status.as_str()),
                Param::time(ended),
                attributes.unwrap_or(Param::NULL),
                Param::text(id.as_str()),
            ],
        )?;
        get_span_in(tx, id)?.ok_or_else(|| Error::UnknownSpan { id: id.to_string().into() })
    }

    /// Records what an LLM span's call used; returns the span.
    pub fn record_llm(&self, id: &SpanId, call: &LlmCall) -> Result<Span> {
        self.db().write(|tx| self.record_llm_in(tx, id, call))
    }

    /// Records what an LLM span's call used inside a caller's transaction. The span is of kind
    /// `llm`; counts and latency are from 0; model and provider are not empty.
    pub fn record_llm_in(&self, tx: &Tx<'_>, id: &SpanId, call: &LlmCall) -> Result<Span> {
        check_llm(call)?;
        let span =
            get_span_in(tx, id)?.ok_or_else(|| Error::UnknownSpan { id: id.to_string().into() })?;
        check_llm_kind(id, &span.kind)?;
        tx.execute(
            "UPDATE spans SET model = ?1, provider = ?2, input_tokens = ?3, output_tokens = ?4,
                 cost_nanos = ?5, currency = ?6, latency_ms = ?7
             WHERE id = ?8",
            &[
                Param::text(&call.model),
                Param::text(&call.provider),
                Param::int(call.input_tokens),
                Param::int(call.output_tokens),
                call.cost.as_ref().map_or(Param::NULL, |c| Param::int(c.nanos())),
                Param::opt_text(call.cost.as_ref().map(Money::currency)),
                call.latency_ms.map_or(Param::NULL, Param::int),
                Param::text(id.as_str()),
            ],
        )?;
        get_span_in(tx, id)?.ok_or_else(|| Error::UnknownSpan { id: id.to_string().into() })
    }

    /// Records spans that have ended, in one transaction; returns how many. Nothing is written
    /// when one is refused ([`Error::InBatch`] names it). See
    /// [`record_spans_in`](Self::record_spans_in).
    pub fn record_spans(&self, spans: &[FinishedSpan]) -> Result<usize> {
        self.db().write(|tx| self.record_spans_in(tx, spans))
    }

    /// Records spans that have ended inside a caller's transaction, for a caller that buffers
    /// spans and writes them in batches; returns how many. Each is stored as
    /// [`start_span_in`](Self::start_span_in), [`record_llm_in`](Self::record_llm_in) and
    /// [`end_span_in`](Self::end_span_in) run one after another would store it — the same
    /// checks, the same session and agent inherited from the parent, every text through the
    /// redaction policy — and a parent may be another span of the batch, before or after it.
    ///
    /// Few statements whatever the batch's size: one read per trace named, one per
    /// [`MAX_ID_LOOKUP`] spans for the ids and parents already stored, and the rows through
    /// [`Tx::insert_rows`] (multi-row INSERTs on PostgreSQL). Every span is checked before
    /// anything is written: the first refused is an [`Error::InBatch`] with its index and the
    /// error its own recording would give, naming the field (a value binding would refuse — a
    /// time outside years 0000 to 9999, text holding U+0000 on PostgreSQL — included).
    pub fn record_spans_in(&self, tx: &Tx<'_>, spans: &[FinishedSpan]) -> Result<usize> {
        if spans.is_empty() {
            return Ok(0);
        }
        // Ids and parents as stored (after the policy), and the first span of each id.
        let ids: Vec<Clean<'_>> = spans.iter().map(|s| Clean::text(s.id.as_str())).collect();
        let parents: Vec<Option<Clean<'_>>> = spans
            .iter()
            .map(|s| s.start.parent_id.as_ref().map(|p| Clean::text(p.as_str())))
            .collect();
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(spans.len());
        for (i, id) in ids.iter().enumerate() {
            first.entry(id.as_str()).or_insert(i);
        }
        // The stored spans among the batch's ids (refused) and the parents outside it.
        let mut wanted: Vec<&Clean<'_>> = ids.iter().collect();
        let mut outside: HashSet<&str> = HashSet::new();
        for p in parents.iter().flatten() {
            if !first.contains_key(p.as_str()) && outside.insert(p.as_str()) {
                wanted.push(p);
            }
        }
        let stored = stored_spans(tx, &wanted)?;
        let mut traces: HashMap<&str, Option<BatchTrace<'_>>> = HashMap::new();
        for span in spans {
            let trace = span.start.trace_id.as_str();
            if !traces.contains_key(trace) {
                let project = tx.query_row(
                    "SELECT project_id FROM execution_traces WHERE id = ?1",
                    &[Param::text(trace)],
                    |r| r.get::<Option<String>>(0),
                )?;
                let known = project.map(|project| BatchTrace { id: Clean::text(trace), project });
                traces.insert(trace, known);
            }
        }
        let parent_of: Vec<Parent<'_>> = parents
            .iter()
            .map(|p| match p {
                None => Parent::None,
                Some(p) => match (first.get(p.as_str()), stored.get(p.as_str())) {
                    (Some(&j), _) => Parent::InBatch(j),
                    (None, Some(s)) => Parent::Stored(s),
                    (None, None) => Parent::Missing,
                },
            })
            .collect();
        let inherits = inheritance(spans, &parent_of);
        let batch = Batch { spans, ids: &ids, first: &first, stored: &stored, traces: &traces };
        let mut rows = Vec::with_capacity(spans.len());
        for (i, span) in spans.iter().enumerate() {
            let row = batch
                .row(tx, i, span, &parents[i], parent_of[i], inherits[i])
                .map_err(|error| Error::InBatch { index: i, error: Box::new(error) })?;
            rows.push(row);
        }
        Ok(tx.insert_rows(INSERT_FINISHED, &rows)?)
    }

    /// Records a decision on a span (texts and options redacted); returns it.
    pub fn decide(&self, span: &SpanId, decision: &NewDecision) -> Result<Decision> {
        self.db().write(|tx| self.decide_in(tx, span, decision))
    }

    /// Records a decision on a span inside a caller's transaction.
    pub fn decide_in(&self, tx: &Tx<'_>, span: &SpanId, d: &NewDecision) -> Result<Decision> {
        for (what, text) in
            [("decision agent", &d.agent), ("decision kind", &d.kind), ("choice", &d.choice)]
        {
            if text.trim().is_empty() {
                return Err(Error::InvalidInput { what, reason: "it is empty".into() });
            }
        }
        if get_span_in(tx, span)?.is_none() {
            return Err(Error::UnknownSpan { id: span.to_string().into() });
        }
        let options = Param::json(&d.options)?;
        let raw = tx.query_row(
            &format!(
                "INSERT INTO span_decisions (span_id, agent, kind, options, choice, rationale,
                     decided_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING {DECISION_COLUMNS}"
            ),
            &[
                Param::text(span.as_str()),
                Param::text(&d.agent),
                Param::text(&d.kind),
                options,
                Param::text(&d.choice),
                Param::opt_text(d.rationale.as_deref()),
                Param::time(tx.now()),
            ],
            RawDecision::read,
        )?;
        raw.ok_or_else(|| Error::UnknownSpan { id: span.to_string().into() })?.into_decision()
    }

    /// The span with this id, if any.
    pub fn get_span(&self, id: &SpanId) -> Result<Option<Span>> {
        self.db().read(|tx| get_span_in(tx, id))
    }

    /// A trace's spans as a tree: its top-level spans in the order they started, each with its
    /// decisions (in the order taken) and the spans below it (in the order they started).
    pub fn span_tree(&self, trace: &TraceId) -> Result<Vec<SpanNode>> {
        self.db().read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = ?1 ORDER BY started_at, id"
            ))?;
            let spans = stmt.query_map(&[Param::text(trace.as_str())], RawSpan::read)?;
            let mut stmt = tx.prepare(
                "SELECT d.id, d.span_id, d.agent, d.kind, d.options, d.choice, d.rationale,
                     d.decided_at
                 FROM span_decisions d JOIN spans s ON s.id = d.span_id
                 WHERE s.trace_id = ?1 ORDER BY d.id",
            )?;
            let decisions = stmt.query_map(&[Param::text(trace.as_str())], RawDecision::read)?;
            let mut by_span: BTreeMap<String, Vec<Decision>> = BTreeMap::new();
            for d in decisions {
                let d = d.into_decision()?;
                by_span.entry(d.span_id.to_string()).or_default().push(d);
            }
            let spans = spans.into_iter().map(RawSpan::into_span).collect::<Result<Vec<_>>>()?;
            Ok(build_tree(spans, &mut by_span))
        })
    }

    /// Spans matching `query`, oldest first (by start, then id).
    pub fn spans(&self, query: &SpanQuery) -> Result<Vec<Span>> {
        let mut filters: Vec<&str> = Vec::new();
        let mut values = Vec::new();
        if let Some(p) = &query.project {
            filters.push("project_id = ?");
            values.push(Param::text(p.as_str()));
        }
        if let Some(s) = &query.session {
            filters.push("session_id = ?");
            values.push(Param::text(s));
        }
        if let Some(s) = query.status {
            filters.push("status = ?");
            values.push(Param::text(s.as_str()));
        }
        if let Some(k) = &query.kind {
            filters.push("kind = ?");
            values.push(Param::text_owned(k.as_str().to_owned()));
        }
        if let Some(t) = query.since {
            filters.push("started_at >= ?");
            values.push(Param::time_bound(t));
        }
        if let Some(t) = query.until {
            filters.push("started_at < ?");
            values.push(Param::time_bound(t));
        }
        let mut sql = format!("SELECT {SPAN_COLUMNS} FROM spans");
        if !filters.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&filters.join(" AND "));
        }
        sql.push_str(" ORDER BY started_at, id");
        if let Some(limit) = query.limit {
            sql.push_str(" LIMIT ?");
            values.push(Param::int(i64::try_from(limit).unwrap_or(i64::MAX)));
        }
        self.db().read(|tx| {
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt.query_map(&values, RawSpan::read)?;
            rows.into_iter().map(RawSpan::into_span).collect()
        })
    }

    /// Tokens and exact cost of LLM spans per UTC day and group (and currency), over a time
    /// range, sorted by day, group, currency. Only LLM spans count (see the module's doc).
    pub fn cost_rollup(&self, query: &CostQuery) -> Result<Vec<CostRow>> {
        let column = query.by.column();
        let (mut filters, mut values) = (String::new(), Vec::new());
        if let Some(p) = &query.project {
            filters.push_str(" AND project_id = ?");
            values.push(Param::text(p.as_str()));
        }
        if let Some(t) = query.since {
            filters.push_str(" AND started_at >= ?");
            values.push(Param::time_bound(t));
        }
        if let Some(t) = query.until {
            filters.push_str(" AND started_at < ?");
            values.push(Param::time_bound(t));
        }
        self.db().read(|tx| {
            let sql = tx
                .dialect(ROLLUP, ROLLUP_PG)
                .replace("{key}", column)
                .replace("{filters}", &filters);
            let mut stmt = tx.prepare(&sql)?;
            let raw = stmt.query_map(&values, |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<Option<String>>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<i64>(3)?,
                    r.get::<i64>(4)?,
                    r.get::<i64>(5)?,
                    r.get::<Option<i64>>(6)?,
                ))
            })?;
            let mut rows = Vec::with_capacity(raw.len());
            for (day, key, currency, calls, input, output, nanos) in raw {
                let cost = match (nanos, currency) {
                    (Some(n), Some(c)) => Some(Money::from_nanos(n, &c).map_err(|e| {
                        corrupt("cost_nanos", &day, format!("the sum of a day is not a cost: {e}"))
                    })?),
                    _ => None,
                };
                rows.push(CostRow {
                    day,
                    key,
                    calls: calls as u64,
                    input_tokens: input,
                    output_tokens: output,
                    cost,
                });
            }
            rows.sort_by(|a, b| {
                (&a.day, &a.key, a.cost.as_ref().map(Money::currency)).cmp(&(
                    &b.day,
                    &b.key,
                    b.cost.as_ref().map(Money::currency),
                ))
            });
            Ok(rows)
        })
    }

    /// The project's monthly budget: the `budget.monthly` configuration in effect for it
    /// (`{"amount": "50.00", "currency": "USD"}`, the amount as decimal text), if any.
    pub fn budget(&self, project: &ProjectId) -> Result<Option<Money>> {
        let Some(entry) = ConfigStore::new(self.db().clone()).get(BUDGET_KEY, Some(project))?
        else {
            return Ok(None);
        };
        let bad = || {
            Error::InvalidInput {
            what: "budget",
            reason: format!(
                "{BUDGET_KEY} of project {project} is {}, not {{\"amount\": \"50.00\", \"currency\": \"USD\"}} with the amount as decimal text",
                entry.value
            )
            .into(),
        }
        };
        let amount = entry.value.get("amount").and_then(Value::as_str).ok_or_else(bad)?;
        let currency = entry.value.get("currency").and_then(Value::as_str).ok_or_else(bad)?;
        Money::parse(amount, currency).map(Some)
    }

    /// A project's exact spend in the calendar month `month` (UTC) against its budget.
    pub fn budget_report(&self, project: &ProjectId, month: NaiveDate) -> Result<BudgetReport> {
        let (since, until) = month_range(month)?;
        let rows = self.cost_rollup(&CostQuery {
            project: Some(project.clone()),
            by: CostGroup::Project,
            since: Some(since),
            until: Some(until),
        })?;
        let mut spent: BTreeMap<String, i64> = BTreeMap::new();
        for cost in rows.iter().filter_map(|r| r.cost.as_ref()) {
            let sum = spent.entry(cost.currency().to_owned()).or_insert(0);
            *sum = sum.checked_add(cost.nanos()).ok_or_else(|| Error::InvalidInput {
                what: "month",
                reason: format!("the spend of {} overflows", cost.currency()).into(),
            })?;
        }
        let budget = self.budget(project)?;
        let in_budget_currency =
            budget.as_ref().and_then(|b| spent.get(b.currency()).copied()).unwrap_or(0);
        let over_budget = budget.as_ref().is_some_and(|b| in_budget_currency > b.nanos());
        let remaining = match &budget {
            Some(b) if !over_budget => {
                Some(Money::from_nanos(b.nanos() - in_budget_currency, b.currency())?)
            }
            _ => None,
        };
        let spent =
            spent.into_iter().map(|(c, n)| Money::from_nanos(n, &c)).collect::<Result<Vec<_>>>()?;
        Ok(BudgetReport {
            project: project.clone(),
            month: month.format("%Y-%m").to_string(),
            budget,
            spent,
            remaining,
            over_budget,
        })
    }
}

/// The first instant of `month`'s month and of the next one.
pub fn month_range(month: NaiveDate) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    use chrono::Datelike;
    let first = month.with_day(1);
    let next = first.and_then(|f| f.checked_add_months(chrono::Months::new(1)));
    match (first, next) {
        (Some(f), Some(n)) => {
            Ok((f.and_time(Default::default()).and_utc(), n.and_time(Default::default()).and_utc()))
        }
        _ => Err(Error::InvalidInput {
            what: "month",
            reason: format!("{} has no month after it", month.format("%Y-%m")).into(),
        }),
    }
}

/// Writes or updates the agent span that mirrors `inv` (same trace, times, agent; status from
/// the outcome; tokens; outcome, quality, summary, fragment, error and usage in attributes).
pub(crate) fn mirror_invocation(tx: &Tx<'_>, inv: &Invocation) -> Result<()> {
    let status = match (inv.outcome.as_deref(), inv.completed_at) {
        (None, None) => SpanStatus::Running,
        (None, Some(_)) => SpanStatus::Ok,
        (Some(o), _) if o == Outcome::Success.as_str() || o == Outcome::Partial.as_str() => {
            SpanStatus::Ok
        }
        (Some(_), _) => SpanStatus::Error,
    };
    let attributes = json!({
        "invocationId": inv.id,
        "outcome": inv.outcome,
        "qualityScore": inv.quality_score,
        "taskFragment": inv.task_fragment,
        "outputSummary": inv.output_summary,
        "error": inv.error,
        "tokenUsage": inv.token_usage,
    });
    let tokens = |n: Option<u64>| {
        n.map_or(Param::NULL, |n| Param::int(i64::try_from(n).unwrap_or(i64::MAX)))
    };
    tx.execute(
        MIRROR_INVOCATION,
        &[
            Param::text_owned(format!("{INVOCATION_SPAN_PREFIX}{}", inv.id)),
            Param::text(inv.trace_id.as_str()),
            Param::text(&inv.agent),
            Param::text(status.as_str()),
            Param::time(inv.started_at),
            Param::opt_time(inv.completed_at),
            Param::json(&attributes)?,
            tokens(inv.token_usage.map(|u| u.input_tokens)),
            tokens(inv.token_usage.map(|u| u.output_tokens)),
            Param::int(inv.id.get()),
        ],
    )?;
    Ok(())
}

/// A span's name is not empty.
fn check_name(new: &NewSpan) -> Result<()> {
    if new.name.trim().is_empty() {
        return Err(Error::InvalidInput { what: "span name", reason: "it is empty".into() });
    }
    Ok(())
}

/// The parent `parent` of a span of trace `trace` belongs to trace `its`.
fn other_trace(parent: &SpanId, its: &impl fmt::Display, trace: &TraceId) -> Error {
    Error::InvalidInput {
        what: "parent span",
        reason: format!("span {parent} belongs to trace {its}, not to trace {trace}").into(),
    }
}

/// A span ends as ok or error.
fn check_end_status(end: &SpanEnd) -> Result<()> {
    if end.status == SpanStatus::Running {
        return Err(Error::InvalidInput {
            what: "span status",
            reason: "a span ends as ok or error, not running".into(),
        });
    }
    Ok(())
}

/// When span `id`, started at `started` (to the millisecond), ends: `end`'s time or the
/// database clock's now, to the millisecond, and not before the start.
fn ended_at(
    tx: &Tx<'_>,
    id: &SpanId,
    started: DateTime<Utc>,
    end: &SpanEnd,
) -> Result<DateTime<Utc>> {
    let ended = time::millis(end.ended_at.unwrap_or_else(|| tx.now()));
    if ended < started {
        return Err(Error::InvalidInput {
            what: "end time",
            reason: format!(
                "{} is before span {id}'s start {}",
                time::to_rfc3339(ended),
                time::to_rfc3339(started)
            )
            .into(),
        });
    }
    Ok(ended)
}

/// A span's attributes once it ends: the end's merged into the start's (top-level keys of two
/// objects), else the end's replacing them, else the start's.
fn merged_attributes(start: Option<&Value>, end: Option<&Value>) -> Option<Value> {
    match (start, end) {
        (Some(Value::Object(old)), Some(Value::Object(new))) => {
            let mut merged: Map<String, Value> = old.clone();
            merged.extend(new.clone());
            Some(Value::Object(merged))
        }
        (old, new) => new.or(old).cloned(),
    }
}

/// Model and provider are not empty; counts and latency are from 0.
fn check_llm(call: &LlmCall) -> Result<()> {
    for (what, text) in [("model", &call.model), ("provider", &call.provider)] {
        if text.trim().is_empty() {
            return Err(Error::InvalidInput { what, reason: "it is empty".into() });
        }
    }
    for (what, n) in [
        ("input tokens", Some(call.input_tokens)),
        ("output tokens", Some(call.output_tokens)),
        ("latency", call.latency_ms),
    ] {
        if let Some(n) = n.filter(|n| *n < 0) {
            return Err(Error::InvalidInput { what, reason: format!("{n} is negative").into() });
        }
    }
    Ok(())
}

/// LLM usage goes on an llm span.
fn check_llm_kind(id: &SpanId, kind: &SpanKind) -> Result<()> {
    if *kind != SpanKind::Llm {
        return Err(Error::InvalidInput {
            what: "span kind",
            reason: format!("span {id} is a {kind} span; LLM usage goes on an llm span").into(),
        });
    }
    Ok(())
}

/// Stored JSON text as a value: text that is not JSON (written around the tracker) as a string.
fn read_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

/// A stored span a batch names: its trace, and what a span below it inherits.
struct StoredSpan {
    trace_id: String,
    session_id: Option<String>,
    agent: Option<String>,
}

/// The stored spans among `ids` (as stored), by id: one [`SPANS_BY_ID`] per
/// [`MAX_ID_LOOKUP`] ids.
fn stored_spans(tx: &Tx<'_>, ids: &[&Clean<'_>]) -> Result<HashMap<String, StoredSpan>> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(MAX_ID_LOOKUP) {
        let n = chunk.len().next_power_of_two();
        let placeholders: Vec<String> = (1..=n).map(|k| format!("?{k}")).collect();
        let sql = SPANS_BY_ID.replace("{ids}", &placeholders.join(", "));
        let values: Vec<Param<'_>> =
            (0..n).map(|k| Param::clean(chunk[k.min(chunk.len() - 1)])).collect();
        let rows = tx.prepare(&sql)?.query_map(&values, |r| {
            Ok((
                r.get::<String>(0)?,
                StoredSpan { trace_id: r.get(1)?, session_id: r.get(2)?, agent: r.get(3)? },
            ))
        })?;
        found.extend(rows);
    }
    Ok(found)
}

/// A trace a batch names: its id as stored and its project.
struct BatchTrace<'a> {
    id: Clean<'a>,
    project: Option<String>,
}

/// Where the parent of a span of a batch is.
#[derive(Clone, Copy)]
enum Parent<'a> {
    /// A top-level span.
    None,
    /// The span of the batch at this index.
    InBatch(usize),
    Stored(&'a StoredSpan),
    /// Neither in the batch nor stored.
    Missing,
}

/// What a span of a batch inherits from its parent, worked out over the batch.
#[derive(Clone, Copy)]
enum Inherits<'a> {
    Pending,
    /// On the path being walked up.
    Walking,
    /// Its session and agent.
    Known {
        session: Option<&'a str>,
        agent: Option<&'a str>,
    },
    /// Its parents in the batch go round in a circle (or lead into one).
    Circular,
}

/// Each span's session (its own, else its parent's) and agent (its name for an agent span,
/// else its parent's), walking up parents in the batch to a stored or top-level span; each
/// span is walked once.
fn inheritance<'a>(spans: &'a [FinishedSpan], parents: &[Parent<'a>]) -> Vec<Inherits<'a>> {
    let mut state = vec![Inherits::Pending; spans.len()];
    let mut path = Vec::new();
    for i in 0..spans.len() {
        let mut at = i;
        // What the parent of the last span on the path passes down; None: a circle.
        let mut above = loop {
            match state[at] {
                Inherits::Known { session, agent } => break Some((session, agent)),
                Inherits::Walking | Inherits::Circular => break None,
                Inherits::Pending => {
                    state[at] = Inherits::Walking;
                    path.push(at);
                    match parents[at] {
                        Parent::InBatch(j) => at = j,
                        Parent::Stored(p) => {
                            break Some((p.session_id.as_deref(), p.agent.as_deref()))
                        }
                        Parent::None | Parent::Missing => break Some((None, None)),
                    }
                }
            }
        };
        while let Some(k) = path.pop() {
            state[k] = match above {
                None => Inherits::Circular,
                Some((session, agent)) => {
                    let new = &spans[k].start;
                    let session = new.session_id.as_deref().or(session);
                    let agent =
                        if new.kind == SpanKind::Agent { Some(new.name.as_str()) } else { agent };
                    above = Some((session, agent));
                    Inherits::Known { session, agent }
                }
            };
        }
    }
    state
}

/// What a batch's rows are made from, beyond each span.
struct Batch<'b, 'a> {
    spans: &'a [FinishedSpan],
    ids: &'b [Clean<'a>],
    first: &'b HashMap<&'b str, usize>,
    stored: &'b HashMap<String, StoredSpan>,
    traces: &'b HashMap<&'a str, Option<BatchTrace<'a>>>,
}

impl<'b, 'a: 'b> Batch<'b, 'a> {
    /// Span `i`'s row, once every check its one-at-a-time recording makes has passed.
    fn row(
        &self,
        tx: &Tx<'_>,
        i: usize,
        span: &'a FinishedSpan,
        parent: &'b Option<Clean<'a>>,
        parent_of: Parent<'_>,
        inherits: Inherits<'b>,
    ) -> Result<[Param<'b>; 19]> {
        let (new, end) = (&span.start, &span.end);
        let id = &self.ids[i];
        if span.id.as_str().trim().is_empty() {
            return Err(Error::InvalidInput { what: "span id", reason: "it is empty".into() });
        }
        let refuse_id =
            |reason: String| Error::InvalidInput { what: "span id", reason: reason.into() };
        if span.id.as_str().starts_with(INVOCATION_SPAN_PREFIX) {
            return Err(refuse_id(format!(
                "{} is the form of the agent span of an invocation ({INVOCATION_SPAN_PREFIX}…)",
                span.id
            )));
        }
        match self.first.get(id.as_str()) {
            Some(&j) if j != i => {
                return Err(refuse_id(format!("span {} is also span {j} of the batch", span.id)))
            }
            _ => {}
        }
        if self.stored.contains_key(id.as_str()) {
            return Err(refuse_id(format!("span {} is already stored", span.id)));
        }
        check_name(new)?;
        let trace = self
            .traces
            .get(new.trace_id.as_str())
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::UnknownTrace { id: new.trace_id.to_string().into() })?;
        if let Some(parent_id) = &new.parent_id {
            match parent_of {
                Parent::Missing | Parent::None => {
                    return Err(Error::UnknownSpan { id: parent_id.to_string().into() })
                }
                Parent::InBatch(j) => {
                    let theirs = &self.spans[j].start.trace_id;
                    if *theirs != new.trace_id {
                        return Err(other_trace(parent_id, theirs, &new.trace_id));
                    }
                }
                Parent::Stored(p) => {
                    if p.trace_id != trace.id.as_str() {
                        return Err(other_trace(parent_id, &p.trace_id, &new.trace_id));
                    }
                }
            }
        }
        let Inherits::Known { session, agent } = inherits else {
            return Err(Error::InvalidInput {
                what: "parent span",
                reason: format!(
                    "the parents of span {} in the batch go round in a circle",
                    span.id
                )
                .into(),
            });
        };
        if let Some(call) = &span.llm {
            check_llm(call)?;
            check_llm_kind(&span.id, &new.kind)?;
        }
        check_end_status(end)?;
        let started = new.started_at.unwrap_or_else(|| tx.now());
        let ended = ended_at(tx, &span.id, time::millis(started), end)?;
        // The start's attributes as the span's start stores them and its end reads them back.
        let stored_start =
            new.attributes.as_ref().map(|a| Clean::json(a).map(|c| read_json(&c))).transpose()?;
        let attributes = merged_attributes(stored_start.as_ref(), end.attributes.as_ref());
        let call = span.llm.as_ref();
        let cost = call.and_then(|c| c.cost.as_ref());
        let row = [
            Param::clean(id),
            Param::clean(&trace.id),
            Param::opt_clean(parent.as_ref()),
            Param::text(new.kind.as_str()),
            Param::text(&new.name),
            Param::text(end.status.as_str()),
            Param::time(started),
            Param::time(ended),
            attributes.as_ref().map(Param::json).transpose()?.unwrap_or(Param::NULL),
            Param::opt_text(trace.project.as_deref()),
            Param::opt_text(session),
            Param::opt_text(agent),
            Param::opt_text(call.map(|c| c.model.as_str())),
            Param::opt_text(call.map(|c| c.provider.as_str())),
            call.map_or(Param::NULL, |c| Param::int(c.input_tokens)),
            call.map_or(Param::NULL, |c| Param::int(c.output_tokens)),
            cost.map_or(Param::NULL, |c| Param::int(c.nanos())),
            Param::opt_text(cost.map(Money::currency)),
            call.and_then(|c| c.latency_ms).map_or(Param::NULL, Param::int),
        ];
        let backend = tx.backend();
        if let Some((k, why)) =
            row.iter().enumerate().find_map(|(k, p)| p.refusal(backend).map(|why| (k, why)))
        {
            return Err(Error::InvalidInput { what: FINISHED_FIELDS[k], reason: why.into() });
        }
        Ok(row)
    }
}

fn build_tree(spans: Vec<Span>, decisions: &mut BTreeMap<String, Vec<Decision>>) -> Vec<SpanNode> {
    let mut children: BTreeMap<Option<String>, Vec<Span>> = BTreeMap::new();
    let ids: std::collections::HashSet<String> = spans.iter().map(|s| s.id.to_string()).collect();
    for span in spans {
        // A parent outside the trace's spans (written around the tracker) shows at the top.
        let parent = span.parent_id.as_ref().map(SpanId::to_string).filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(span);
    }
    fn attach(
        parent: Option<String>,
        children: &mut BTreeMap<Option<String>, Vec<Span>>,
        decisions: &mut BTreeMap<String, Vec<Decision>>,
    ) -> Vec<SpanNode> {
        let spans = children.remove(&parent).unwrap_or_default();
        spans
            .into_iter()
            .map(|span| {
                let id = span.id.to_string();
                SpanNode {
                    decisions: decisions.remove(&id).unwrap_or_default(),
                    children: attach(Some(id), children, decisions),
                    span,
                }
            })
            .collect()
    }
    attach(None, &mut children, decisions)
}

fn get_span_in(tx: &Tx<'_>, id: &SpanId) -> Result<Option<Span>> {
    let raw = tx.query_row(
        &format!("SELECT {SPAN_COLUMNS} FROM spans WHERE id = ?1"),
        &[Param::text(id.as_str())],
        RawSpan::read,
    )?;
    raw.map(RawSpan::into_span).transpose()
}

fn corrupt(column: &'static str, id: &str, reason: String) -> Error {
    aigentflow_persistence::Error::CorruptRow {
        table: "spans",
        column,
        id: id.to_owned().into(),
        reason: reason.into(),
    }
    .into()
}

struct RawSpan {
    id: String,
    trace_id: String,
    parent_id: Option<String>,
    kind: String,
    name: String,
    status: String,
    started_at: String,
    ended_at: Option<String>,
    attributes: Option<String>,
    project_id: Option<String>,
    session_id: Option<String>,
    agent: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cost_nanos: Option<i64>,
    currency: Option<String>,
    latency_ms: Option<i64>,
    invocation_id: Option<i64>,
}

impl RawSpan {
    fn read(r: &Row<'_>) -> aigentflow_persistence::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            trace_id: r.get(1)?,
            parent_id: r.get(2)?,
            kind: r.get(3)?,
            name: r.get(4)?,
            status: r.get(5)?,
            started_at: r.get(6)?,
            ended_at: r.get(7)?,
            attributes: r.get(8)?,
            project_id: r.get(9)?,
            session_id: r.get(10)?,
            agent: r.get(11)?,
            model: r.get(12)?,
            provider: r.get(13)?,
            input_tokens: r.get(14)?,
            output_tokens: r.get(15)?,
            cost_nanos: r.get(16)?,
            currency: r.get(17)?,
            latency_ms: r.get(18)?,
            invocation_id: r.get(19)?,
        })
    }

    fn into_span(self) -> Result<Span> {
        let id = self.id.as_str();
        let read_time = |column, text: &str| -> Result<DateTime<Utc>> {
            Ok(aigentflow_persistence::Error::read_time("spans", column, id, text)?)
        };
        let status = self
            .status
            .parse()
            .map_err(|_| corrupt("status", id, format!("unknown status \"{}\"", self.status)))?;
        let attributes = self.attributes.as_deref().map(read_json);
        let cost = match (self.cost_nanos, &self.currency) {
            (Some(n), Some(c)) => Some(
                Money::from_nanos(n, c)
                    .map_err(|e| corrupt("cost_nanos", id, format!("not a cost: {e}")))?,
            ),
            _ => None,
        };
        let llm = match (self.model, self.provider) {
            (Some(model), Some(provider)) if self.kind == "llm" => Some(LlmCall {
                model,
                provider,
                input_tokens: self.input_tokens.unwrap_or(0),
                output_tokens: self.output_tokens.unwrap_or(0),
                cost,
                latency_ms: self.latency_ms,
            }),
            _ => None,
        };
        Ok(Span {
            started_at: read_time("started_at", &self.started_at)?,
            ended_at: self.ended_at.as_deref().map(|t| read_time("ended_at", t)).transpose()?,
            kind: SpanKind::parse(&self.kind),
            status,
            attributes,
            llm,
            parent_id: self.parent_id.map(SpanId::new),
            trace_id: TraceId::new(self.trace_id),
            name: self.name,
            project_id: self.project_id.map(ProjectId::new),
            session_id: self.session_id,
            agent: self.agent,
            invocation_id: self.invocation_id.map(InvocationId::new),
            id: SpanId::new(self.id),
        })
    }
}

struct RawDecision {
    id: i64,
    span_id: String,
    agent: String,
    kind: String,
    options: String,
    choice: String,
    rationale: Option<String>,
    decided_at: String,
}

impl RawDecision {
    fn read(r: &Row<'_>) -> aigentflow_persistence::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            span_id: r.get(1)?,
            agent: r.get(2)?,
            kind: r.get(3)?,
            options: r.get(4)?,
            choice: r.get(5)?,
            rationale: r.get(6)?,
            decided_at: r.get(7)?,
        })
    }

    fn into_decision(self) -> Result<Decision> {
        let id = self.id.to_string();
        let decided_at = aigentflow_persistence::Error::read_time(
            "span_decisions",
            "decided_at",
            &id,
            &self.decided_at,
        )?;
        Ok(Decision {
            id: self.id,
            options: serde_json::from_str(&self.options)
                .unwrap_or_else(|_| Value::from(self.options.as_str())),
            span_id: SpanId::new(self.span_id),
            agent: self.agent,
            kind: self.kind,
            choice: self.choice,
            rationale: self.rationale,
            decided_at,
        })
    }
}
