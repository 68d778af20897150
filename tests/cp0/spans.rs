//! Issue 16 item 3: spans of a trace, LLM usage with an exact cost, decisions, invocations as
//! agent spans, cost rollups and a monthly budget. Scenarios run on SQLite and on PostgreSQL
//! (`on_both!`) unless named for one backend.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use aigentflow::persistence::{Backend, ConfigStore, Database, ManualClock, Options, Scope};
use aigentflow::states::ProjectId;
use aigentflow::tracker::{
    CostGroup, CostQuery, CostRow, Error, ExecutionTracker, FinishedSpan, InvocationUpdate,
    LlmCall, Money, NewDecision, NewInvocation, NewSpan, Outcome, Span, SpanEnd, SpanId, SpanKind,
    SpanNode, SpanQuery, SpanStatus, TokenUsage, TraceId,
};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::support::*;

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

/// A tracker on `t`'s database whose clock stands at `now` until moved.
fn clocked(t: &TestDb, now: DateTime<Utc>) -> (ExecutionTracker, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now, Duration::zero()));
    let db =
        Database::open_with(t.location(), Options { clock: clock.clone(), ..Options::default() })
            .unwrap();
    (ExecutionTracker::new(db), clock)
}

/// Runs `sql` on `t`'s database around the stores.
fn tamper(t: &TestDb, sql: &str) {
    match t.backend() {
        Backend::Postgres => {
            let mut client = postgres::Client::connect(t.location(), postgres::NoTls).unwrap();
            client.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)));
        }
        _ => raw(Path::new(t.location())).execute_batch(sql).unwrap(),
    }
}

fn llm(model: &str, provider: &str, input: i64, output: i64, cost: Option<&str>) -> LlmCall {
    LlmCall {
        model: model.into(),
        provider: provider.into(),
        input_tokens: input,
        output_tokens: output,
        cost: cost.map(|c| Money::parse(c, "USD").unwrap()),
        latency_ms: Some(120),
    }
}

fn ok_at(t: DateTime<Utc>) -> SpanEnd {
    SpanEnd { status: SpanStatus::Ok, ended_at: Some(t), attributes: None }
}

/// Every span and decision the database holds, as the tracker reads them.
fn everything(tracker: &ExecutionTracker) -> (Vec<Span>, Vec<Vec<SpanNode>>) {
    let spans = tracker.spans(&SpanQuery::default()).unwrap();
    let traces: std::collections::BTreeSet<TraceId> =
        spans.iter().map(|s| s.trace_id.clone()).collect();
    let trees = traces.iter().map(|t| tracker.span_tree(t).unwrap()).collect();
    (spans, trees)
}

on_both! {
fn spans_nest_in_a_trace_and_read_back_as_a_tree_with_their_decisions(t) {
    let (tracker, clock) = clocked(t, noon());
    let trace = tracker.start_trace(&"p1".into(), &"t1".into(), "build it").unwrap();
    let flow = tracker
        .start_span(&NewSpan {
            session_id: Some("s1".into()),
            attributes: Some(json!({"step": 1})),
            ..NewSpan::new(trace.id.clone(), SpanKind::Workflow, "plan")
        })
        .unwrap();
    clock.advance(Duration::milliseconds(10));
    let agent = tracker
        .start_span(&NewSpan::new(trace.id.clone(), SpanKind::Agent, "coder").under(&flow.id))
        .unwrap();
    assert_eq!((agent.session_id.as_deref(), agent.agent.as_deref()), (Some("s1"), Some("coder")));
    assert_eq!(agent.project_id, Some(ProjectId::new("p1")));
    clock.advance(Duration::milliseconds(10));
    let call = tracker
        .start_span(&NewSpan::new(trace.id.clone(), SpanKind::Llm, "complete").under(&agent.id))
        .unwrap();
    let used = llm("claude-x", "anthropic", 1200, 300, Some("0.0123"));
    let call = tracker.record_llm(&call.id, &used).unwrap();
    assert_eq!(call.llm.as_ref(), Some(&used));
    assert_eq!(call.agent.as_deref(), Some("coder"), "the agent is inherited below its span");
    clock.advance(Duration::milliseconds(5));
    let tool = tracker
        .start_span(&NewSpan::new(trace.id.clone(), SpanKind::parse("retrieval"), "search").under(&agent.id))
        .unwrap();
    let decision = tracker
        .decide(&agent.id, &NewDecision {
            agent: "coder".into(),
            kind: "model".into(),
            options: json!(["small", "large"]),
            choice: "large".into(),
            rationale: Some("the diff is long".into()),
        })
        .unwrap();
    clock.advance(Duration::milliseconds(25));
    for id in [&call.id, &tool.id, &agent.id] {
        tracker.end_span(id, &SpanEnd { status: SpanStatus::Ok, ended_at: None, attributes: None }).unwrap();
    }
    let flow_end = SpanEnd { status: SpanStatus::Error, ended_at: None, attributes: Some(json!({"why": "late"})) };
    let flow = tracker.end_span(&flow.id, &flow_end).unwrap();
    assert_eq!(flow.attributes, Some(json!({"step": 1, "why": "late"})), "end attributes merge");
    assert_eq!(flow.ended_at, Some(noon() + Duration::milliseconds(50)));

    let tree = tracker.span_tree(&trace.id).unwrap();
    assert_eq!(tree.len(), 1);
    assert_eq!((tree[0].span.id.clone(), tree[0].span.status), (flow.id.clone(), SpanStatus::Error));
    let below = &tree[0].children;
    assert_eq!(below.len(), 1);
    assert_eq!(below[0].span.id, agent.id);
    assert_eq!(below[0].decisions, vec![decision]);
    let leaves: Vec<(&SpanId, String)> =
        below[0].children.iter().map(|n| (&n.span.id, n.span.kind.to_string())).collect();
    assert_eq!(leaves, vec![(&call.id, "llm".to_owned()), (&tool.id, "retrieval".to_owned())]);
    assert_eq!(below[0].children[1].span.kind, SpanKind::parse("retrieval"), "unknown kind text is kept");
    assert_eq!(tracker.get_span(&call.id).unwrap(), Some(below[0].children[0].span.clone()));
}
}

on_both! {
fn bad_span_input_is_refused_by_name_and_writes_nothing(t) {
    let (tracker, _clock) = clocked(t, noon());
    let a = tracker.start_trace(&"p1".into(), &"t1".into(), "a").unwrap();
    let b = tracker.start_trace(&"p1".into(), &"t2".into(), "b").unwrap();
    let in_b = tracker.start_span(&NewSpan::new(b.id.clone(), SpanKind::Agent, "x")).unwrap();
    let call = tracker.start_span(&NewSpan::new(a.id.clone(), SpanKind::Llm, "c")).unwrap();
    let tool = tracker.start_span(&NewSpan::new(a.id.clone(), SpanKind::Tool, "t")).unwrap();
    let ended = tracker.start_span(&NewSpan::new(a.id.clone(), SpanKind::Tool, "e")).unwrap();
    tracker.end_span(&ended.id, &ok_at(noon())).unwrap();
    let before = everything(&tracker);
    let nope = SpanId::new("no-such-span");
    let decision = NewDecision {
        agent: "a".into(), kind: "k".into(), options: json!({}), choice: "c".into(), rationale: None,
    };
    let cases: Vec<(&str, Error)> = vec![
        ("parent span", tracker.start_span(&NewSpan::new(a.id.clone(), SpanKind::Tool, "t").under(&in_b.id)).unwrap_err()),
        ("no-such-span", tracker.start_span(&NewSpan::new(a.id.clone(), SpanKind::Tool, "t").under(&nope)).unwrap_err()),
        ("no-such-trace", tracker.start_span(&NewSpan::new("no-such-trace".into(), SpanKind::Tool, "t")).unwrap_err()),
        ("span name", tracker.start_span(&NewSpan::new(a.id.clone(), SpanKind::Tool, " ")).unwrap_err()),
        ("end time", tracker.end_span(&tool.id, &ok_at(noon() - Duration::milliseconds(1))).unwrap_err()),
        ("span status", tracker.end_span(&tool.id, &SpanEnd { status: SpanStatus::Running, ended_at: None, attributes: None }).unwrap_err()),
        ("already ended", tracker.end_span(&ended.id, &ok_at(noon())).unwrap_err()),
        ("no-such-span", tracker.end_span(&nope, &ok_at(noon())).unwrap_err()),
        ("input tokens", tracker.record_llm(&call.id, &llm("m", "p", -1, 0, None)).unwrap_err()),
        ("output tokens", tracker.record_llm(&call.id, &llm("m", "p", 0, i64::MIN, None)).unwrap_err()),
        ("latency", tracker.record_llm(&call.id, &LlmCall { latency_ms: Some(-5), ..llm("m", "p", 0, 0, None) }).unwrap_err()),
        ("model", tracker.record_llm(&call.id, &llm("", "p", 0, 0, None)).unwrap_err()),
        ("span kind", tracker.record_llm(&tool.id, &llm("m", "p", 0, 0, None)).unwrap_err()),
        ("no-such-span", tracker.record_llm(&nope, &llm("m", "p", 0, 0, None)).unwrap_err()),
        ("no-such-span", tracker.decide(&nope, &decision).unwrap_err()),
        ("choice", tracker.decide(&tool.id, &NewDecision { choice: "".into(), ..decision.clone() }).unwrap_err()),
        ("1.2.3", Money::parse("1.2.3", "USD").unwrap_err()),
        ("-0.5", Money::parse("-0.5", "USD").unwrap_err()),
        ("1e-3", Money::parse("1e-3", "USD").unwrap_err()),
    ];
    for (named, err) in cases {
        let message = err.to_string();
        assert!(message.contains(named), "{named}: {message}");
        assert!(message.starts_with(|c: char| !c.is_uppercase()) && !message.ends_with('.'), "{message}");
        assert!(
            matches!(err, Error::InvalidInput { .. } | Error::UnknownSpan { .. } | Error::UnknownTrace { .. }),
            "{named}: {err:?}"
        );
    }
    assert_eq!(everything(&tracker), before, "a refused call writes nothing");
}
}

on_both! {
fn spans_are_found_by_project_session_status_kind_and_time(t) {
    let (tracker, clock) = clocked(t, noon());
    let p1 = tracker.start_trace(&"p1".into(), &"t1".into(), "a").unwrap();
    let p2 = tracker.start_trace(&"p2".into(), &"t2".into(), "b").unwrap();
    let mut all = Vec::new();
    for i in 0..12i64 {
        let trace = if i % 2 == 0 { &p1 } else { &p2 };
        let kind = if i % 3 == 0 { SpanKind::Llm } else { SpanKind::Tool };
        let span = tracker
            .start_span(&NewSpan {
                session_id: Some(format!("s{}", i % 3)),
                started_at: Some(noon() + Duration::hours(i)),
                ..NewSpan::new(trace.id.clone(), kind, format!("span {i}"))
            })
            .unwrap();
        let span = if i % 4 == 0 {
            tracker.end_span(&span.id, &SpanEnd { status: SpanStatus::Error, ended_at: Some(noon() + Duration::hours(i)), attributes: None }).unwrap()
        } else {
            span
        };
        all.push(span);
    }
    clock.advance(Duration::hours(20));
    let names = |q: SpanQuery| -> Vec<String> {
        tracker.spans(&q).unwrap().into_iter().map(|s| s.name).collect()
    };
    let expect = |keep: &dyn Fn(&Span) -> bool| -> Vec<String> {
        all.iter().filter(|s| keep(s)).map(|s| s.name.clone()).collect()
    };
    let since = noon() + Duration::hours(3);
    let until = noon() + Duration::hours(9);
    assert_eq!(names(SpanQuery::default()), expect(&|_| true));
    assert_eq!(names(SpanQuery { project: Some("p2".into()), ..Default::default() }), expect(&|s| s.trace_id == p2.id));
    assert_eq!(names(SpanQuery { session: Some("s1".into()), ..Default::default() }), expect(&|s| s.session_id.as_deref() == Some("s1")));
    assert_eq!(names(SpanQuery { status: Some(SpanStatus::Error), ..Default::default() }), expect(&|s| s.status == SpanStatus::Error));
    assert_eq!(names(SpanQuery { kind: Some(SpanKind::Llm), ..Default::default() }), expect(&|s| s.kind == SpanKind::Llm));
    assert_eq!(
        names(SpanQuery { since: Some(since), until: Some(until), project: Some("p1".into()), ..Default::default() }),
        expect(&|s| s.started_at >= since && s.started_at < until && s.trace_id == p1.id)
    );
    assert_eq!(names(SpanQuery { limit: Some(2), status: Some(SpanStatus::Running), ..Default::default() }).len(), 2);
}
}

on_both! {
fn every_invocation_is_also_its_agent_span_in_the_same_transaction(t) {
    let (tracker, clock) = clocked(t, noon());
    let trace = tracker.start_trace(&"p1".into(), &"t1".into(), "a").unwrap();
    let id = tracker
        .record_invocation(&NewInvocation {
            token_usage: Some(TokenUsage::new(10, 20)),
            task_fragment: Some("fragment".into()),
            ..NewInvocation::new(trace.id.clone(), "coder", noon())
        })
        .unwrap();
    let spans = tracker.spans(&SpanQuery { kind: Some(SpanKind::Agent), ..Default::default() }).unwrap();
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!((span.invocation_id, span.name.as_str(), span.status), (Some(id), "coder", SpanStatus::Running));
    assert_eq!((span.trace_id.clone(), span.started_at, span.agent.as_deref()), (trace.id.clone(), noon(), Some("coder")));
    assert_eq!(span.attributes.as_ref().unwrap()["taskFragment"], json!("fragment"));
    clock.advance(Duration::seconds(2));
    tracker
        .update_invocation(id, &InvocationUpdate {
            completed_at: Some(noon() + Duration::seconds(2)),
            outcome: Some(Outcome::Failure),
            quality_score: Some(0.25),
            output_summary: Some("it broke".into()),
            ..Default::default()
        })
        .unwrap();
    let span = tracker.get_span(&span.id).unwrap().unwrap();
    assert_eq!((span.status, span.ended_at), (SpanStatus::Error, Some(noon() + Duration::seconds(2))));
    let attributes = span.attributes.unwrap();
    assert_eq!((attributes["outcome"].clone(), attributes["qualityScore"].clone()), (json!("failure"), json!(0.25)));
    assert_eq!(attributes["outputSummary"], json!("it broke"));
    assert_eq!(attributes["tokenUsage"]["totalTokens"], json!(30));
    assert_eq!(tracker.spans(&SpanQuery::default()).unwrap().len(), 1, "updating writes no second span");

    // A transaction that records an invocation and then fails leaves neither behind.
    let failed: Result<(), Error> = t.db().write(|tx| {
        tracker.record_invocation_in(tx, &NewInvocation::new(trace.id.clone(), "tester", noon()))?;
        Err(Error::InvalidInput { what: "test", reason: "roll back".into() })
    });
    assert!(failed.is_err());
    assert_eq!(tracker.invocations(&trace.id).unwrap().len(), 1);
    assert_eq!(tracker.spans(&SpanQuery::default()).unwrap().len(), 1);
    // Agent spans are not usage: no rollup counts the invocation's tokens.
    let rollup = tracker.cost_rollup(&CostQuery { project: None, by: CostGroup::Agent, since: None, until: None }).unwrap();
    assert_eq!(rollup, Vec::<CostRow>::new());
}
}

#[test]
fn invocations_recorded_before_spans_become_agent_spans_on_sqlite() {
    let (_dir, path) = legacy_copy();
    type Legacy = (i64, String, String, String, Option<String>, Option<String>);
    let rows: Vec<Legacy> = {
        let conn = raw(&path);
        let mut stmt = conn
            .prepare("SELECT id, trace_id, agent, started_at, completed_at, outcome FROM agent_invocations ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    assert!(!rows.is_empty());
    let tracker = ExecutionTracker::new(open(&path));
    let spans =
        tracker.spans(&SpanQuery { kind: Some(SpanKind::Agent), ..Default::default() }).unwrap();
    assert_eq!(spans.len(), rows.len(), "one agent span per invocation, none lost, none twice");
    let by_invocation: BTreeMap<i64, &Span> =
        spans.iter().map(|s| (s.invocation_id.unwrap().get(), s)).collect();
    for (id, trace, agent, _started, completed, outcome) in &rows {
        let span = by_invocation[id];
        assert_eq!((span.trace_id.as_str(), span.name.as_str()), (trace.as_str(), agent.as_str()));
        let invocation = tracker
            .invocations(&span.trace_id)
            .unwrap()
            .into_iter()
            .find(|i| i.id.get() == *id)
            .unwrap();
        assert_eq!(span.started_at, invocation.started_at, "{id}");
        assert_eq!(span.ended_at, invocation.completed_at, "{id}: {completed:?}");
        let status = match (outcome.as_deref(), completed) {
            (None, None) => SpanStatus::Running,
            (None, Some(_)) | (Some("success" | "partial"), _) => SpanStatus::Ok,
            _ => SpanStatus::Error,
        };
        assert_eq!(span.status, status, "{id}");
        let attributes = span.attributes.as_ref().unwrap();
        assert_eq!(attributes["outcome"], json!(invocation.outcome), "{id}");
        assert_eq!(attributes["qualityScore"], json!(invocation.quality_score), "{id}");
        assert_eq!(attributes["outputSummary"], json!(invocation.output_summary), "{id}");
    }
}

#[test]
fn invocations_recorded_before_spans_become_agent_spans_on_postgres() {
    let Some(pg) = pg_database() else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations-postgres");
    let mut client = postgres::Client::connect(pg.url(), postgres::NoTls).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name[1..].split("__").next().unwrap().parse::<i64>().unwrap()
    });
    let (before, spans): (Vec<_>, Vec<_>) = files.into_iter().partition(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name[1..].split("__").next().unwrap().parse::<i64>().unwrap() < 7
    });
    for file in before {
        client
            .batch_execute(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {}", file.display(), pg_error(&e)));
    }
    client
        .batch_execute(
            "INSERT INTO execution_traces (id, project_id, task_id, prompt, started_at)
                 VALUES ('tr1', 'p1', 't1', 'x', '2026-01-01 00:00:00.000');
             INSERT INTO agent_invocations (trace_id, agent, started_at, completed_at, outcome, quality_score, token_usage, output_summary)
             VALUES ('tr1', 'coder', '2026-01-01 00:00:01.000', '2026-01-01 00:00:02.000', 'success', 0.5, '{\"inputTokens\":3,\"outputTokens\":4,\"totalTokens\":7}', 'done'),
                    ('tr1', 'tester', '2026-01-01 00:00:03.000', NULL, NULL, NULL, 'not json', NULL),
                    ('tr1', 'tester', '2026-01-01 00:00:04.000', '2026-01-01 00:00:05.000', 'escalated', NULL, NULL, NULL),
                    ('tr1', 'critic', '2026-01-01 00:00:06.000', NULL, 'partial', NULL, NULL, NULL);",
        )
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    for file in spans {
        client
            .batch_execute(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {}", file.display(), pg_error(&e)));
    }
    let rows = client
        .query(
            "SELECT invocation_id, trace_id, name, status, started_at, ended_at, project_id,
                 input_tokens, output_tokens, attributes
             FROM spans ORDER BY invocation_id",
            &[],
        )
        .unwrap();
    type Got = (
        i64,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        serde_json::Value,
    );
    let got: Vec<Got> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
                serde_json::from_str(r.get::<_, &str>(9)).unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), 4, "every invocation: {got:?}");
    assert_eq!(
        (got[0].2.as_str(), got[0].3.as_str(), got[0].6.as_deref(), got[0].7, got[0].8),
        ("coder", "ok", Some("p1"), Some(3), Some(4))
    );
    assert_eq!(
        (got[0].4.as_str(), got[0].5.as_deref()),
        ("2026-01-01 00:00:01.000", Some("2026-01-01 00:00:02.000"))
    );
    assert_eq!(got[0].9["qualityScore"], json!(0.5));
    assert_eq!(got[0].9["tokenUsage"]["totalTokens"], json!(7));
    assert_eq!(got[0].9["outputSummary"], json!("done"));
    assert_eq!((got[1].3.as_str(), got[1].7), ("running", None));
    assert_eq!(got[1].9["tokenUsage"], json!("not json"), "text that is not JSON is kept as text");
    assert_eq!(got[2].3, "error");
    assert_eq!((got[3].2.as_str(), got[3].3.as_str()), ("critic", "ok"));
}

// ---- cost -----------------------------------------------------------------------------------

/// One generated LLM span: project, model, provider, agent, day offset, minute, tokens, cost.
type Gen = (usize, usize, usize, Option<usize>, i64, i64, i64, i64, Option<(i64, usize)>);

fn gen_span() -> impl Strategy<Value = Gen> {
    (
        0..2usize,
        0..3usize,
        0..2usize,
        proptest::option::of(0..2usize),
        0..4i64,
        0..1440i64,
        0..1_000_000i64,
        0..1_000_000i64,
        proptest::option::of((0..5_000_000_000i64, 0..2usize)),
    )
        .prop_map(|(p, m, v, a, d, min, i, o, c)| (p, m, v, a, d, min, i, o, c))
}

const PROJECTS: [&str; 2] = ["alpha", "beta"];
const MODELS: [&str; 3] = ["m-small", "m-large", "m-vision"];
const PROVIDERS: [&str; 2] = ["anthropic", "local"];
const AGENTS: [&str; 2] = ["coder", "tester"];
const CURRENCIES: [&str; 2] = ["EUR", "USD"];

fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 30, 0, 0, 0).unwrap()
}

/// Writes the generated spans (and an agent span with tokens from an invocation beside each
/// agent, which must not count) in one transaction.
fn write_generated(tracker: &ExecutionTracker, db: &Database, spans: &[Gen]) {
    db.write(|tx| {
        let mut traces = Vec::new();
        for project in PROJECTS {
            let trace = tracker.start_trace_in(tx, &project.into(), &"task".into(), "p")?;
            let mut agents = Vec::new();
            for agent in AGENTS {
                tracker.record_invocation_in(
                    tx,
                    &NewInvocation {
                        token_usage: Some(TokenUsage::new(7, 7)),
                        ..NewInvocation::new(trace.id.clone(), agent, day0())
                    },
                )?;
                let span = tracker.start_span_in(
                    tx,
                    &NewSpan {
                        started_at: Some(day0()),
                        ..NewSpan::new(trace.id.clone(), SpanKind::Agent, agent)
                    },
                )?;
                agents.push(span.id);
            }
            traces.push((trace.id, agents));
        }
        for (p, m, v, a, d, min, input, output, cost) in spans {
            let (trace, agents) = &traces[*p];
            let mut new = NewSpan {
                started_at: Some(day0() + Duration::days(*d) + Duration::minutes(*min)),
                ..NewSpan::new(trace.clone(), SpanKind::Llm, "call")
            };
            new.parent_id = a.map(|a| agents[a].clone());
            let span = tracker.start_span_in(tx, &new)?;
            let cost = cost.map(|(n, c)| Money::from_nanos(n, CURRENCIES[c]).unwrap());
            tracker.record_llm_in(
                tx,
                &span.id,
                &LlmCall {
                    model: MODELS[*m].into(),
                    provider: PROVIDERS[*v].into(),
                    input_tokens: *input,
                    output_tokens: *output,
                    cost,
                    latency_ms: None,
                },
            )?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Day, group and currency of a rollup row.
type RowKey = (String, Option<String>, Option<String>);

/// The rollup computed naively from the generated spans.
fn naive(spans: &[Gen], q: &CostQuery) -> Vec<CostRow> {
    let mut sums: BTreeMap<RowKey, (u64, i64, i64, i64)> = BTreeMap::new();
    for (p, m, v, a, d, min, input, output, cost) in spans {
        let at = day0() + Duration::days(*d) + Duration::minutes(*min);
        if q.project.as_ref().is_some_and(|x| x.as_str() != PROJECTS[*p])
            || q.since.is_some_and(|s| at < s)
            || q.until.is_some_and(|u| at >= u)
        {
            continue;
        }
        let key = match q.by {
            CostGroup::Model => Some(MODELS[*m].to_owned()),
            CostGroup::Provider => Some(PROVIDERS[*v].to_owned()),
            CostGroup::Project => Some(PROJECTS[*p].to_owned()),
            CostGroup::Agent => a.map(|a| AGENTS[a].to_owned()),
        };
        let currency = cost.map(|(_, c)| CURRENCIES[c].to_owned());
        let e = sums.entry((at.format("%Y-%m-%d").to_string(), key, currency)).or_default();
        e.0 += 1;
        e.1 += input;
        e.2 += output;
        e.3 += cost.map_or(0, |(n, _)| n);
    }
    sums.into_iter()
        .map(|((day, key, currency), (calls, input, output, nanos))| CostRow {
            day,
            key,
            calls,
            input_tokens: input,
            output_tokens: output,
            cost: currency.map(|c| Money::from_nanos(nanos, &c).unwrap()),
        })
        .collect()
}

on_both! {
/// A time bound is compared, not stored: one outside years 0000 to 9999 (the end of a range
/// that takes in 9999-12-31, a month after 9999-12) holds for every span or for none, as the
/// instant does, instead of failing; the spans at the first and last storable instants count
/// on the right side of every bound, in a query and in a rollup.
fn a_time_bound_beyond_the_storable_years_holds_for_every_span_or_none(t) {
    let (tracker, _) = clocked(t, noon());
    let trace = tracker.start_trace(&"p1".into(), &"t1".into(), "a").unwrap();
    let first = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap();
    let last = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + Duration::microseconds(999_999);
    let starts = [first, noon(), last];
    for (i, at) in starts.iter().enumerate() {
        tracker
            .start_span(&NewSpan { started_at: Some(*at), ..NewSpan::new(trace.id.clone(), SpanKind::Llm, format!("span {i}")) })
            .unwrap();
    }
    let before = first - Duration::days(400);
    let after = last + Duration::days(400);
    let bounds = [None, Some(before), Some(first), Some(noon()), Some(last), Some(last + Duration::microseconds(1)), Some(after)];
    for since in bounds {
        for until in bounds {
            let expect: Vec<String> = starts
                .iter()
                .enumerate()
                .filter(|(_, at)| since.is_none_or(|s| **at >= s) && until.is_none_or(|u| **at < u))
                .map(|(i, _)| format!("span {i}"))
                .collect();
            let found: Vec<String> = tracker.spans(&SpanQuery { since, until, ..Default::default() }).unwrap().into_iter().map(|s| s.name).collect();
            assert_eq!(found, expect, "since {since:?} until {until:?}");
            let rows = tracker.cost_rollup(&CostQuery { project: None, by: CostGroup::Project, since, until }).unwrap();
            let calls: u64 = rows.iter().map(|r| r.calls).sum();
            assert_eq!(calls, expect.len() as u64, "rollup since {since:?} until {until:?}");
        }
    }
    // The month after which no month can be stored: its budget report is of the span in it.
    let december = NaiveDate::from_ymd_opt(9999, 12, 1).unwrap();
    tracker.budget_report(&"p1".into(), december).unwrap();
}
}

on_both! {
fn cost_rollups_equal_a_naive_sum_over_random_spans(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
    let window = proptest::option::of(0..6 * 24i64);
    let strategy = (
        proptest::collection::vec(gen_span(), 0..40),
        proptest::option::of(0..2usize),
        window.clone(),
        window,
    );
    let mut runner = TestRunner::new(Config { cases: 24, ..Config::default() });
    runner
        .run(&strategy, |(spans, project, since, until)| {
            tamper(t, "DELETE FROM span_decisions; DELETE FROM spans; DELETE FROM agent_invocations;");
            write_generated(&tracker, t.db(), &spans);
            for by in CostGroup::ALL {
                let q = CostQuery {
                    project: project.map(|p| ProjectId::new(PROJECTS[p])),
                    by,
                    since: since.map(|h| day0() + Duration::hours(h)),
                    until: until.map(|h| day0() + Duration::hours(h)),
                };
                prop_assert_eq!(tracker.cost_rollup(&q).unwrap(), naive(&spans, &q), "{:?}", q);
            }
            Ok(())
        })
        .unwrap();
}
}

/// A rollup without filters binds no parameter, so the plan PostgreSQL keeps for it once it
/// has run five times is the plan for no filter (a parameter standing for "no filter" got a
/// plan for any value, which sorted every span on disk: twice as slow). Read from the session's
/// prepared statements: no plan made per call, one plan reused.
#[test]
fn a_rollup_without_filters_keeps_the_plan_for_no_filter_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let tracker = ExecutionTracker::new(t.db().clone());
    for by in CostGroup::ALL {
        let q = CostQuery { project: None, by, since: None, until: None };
        for _ in 0..8 {
            tracker.cost_rollup(&q).unwrap();
        }
    }
    let plans = t
        .db()
        .read(|tx| {
            tx.query_row(
                "SELECT COUNT(*), COALESCE(SUM(custom_plans), 0)::BIGINT,
                     COALESCE(SUM(generic_plans), 0)::BIGINT
                 FROM pg_prepared_statements
                 WHERE statement LIKE '%FROM spans%' AND statement LIKE '%GROUP BY 1, 2, 3%'
                     AND statement NOT LIKE '%pg_prepared_statements%'",
                &[],
                |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
            )
        })
        .unwrap();
    assert_eq!(plans, Some((4, 0, 32)), "statements, plans made per call, plans reused");
}

on_both! {
fn a_month_of_spend_is_exact_against_the_project_budget_in_config(t) {
    let (tracker, _clock) = clocked(t, noon());
    let trace = tracker.start_trace(&"p1".into(), &"t1".into(), "a").unwrap();
    let other = tracker.start_trace(&"p2".into(), &"t2".into(), "b").unwrap();
    let month = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    // Ten calls of 0.1 USD (no binary fraction adds them to exactly 1), one in December, one of
    // another project, one in EUR.
    let at = |d: i64| Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::days(d));
    let mut calls: Vec<(&TraceId, Option<DateTime<Utc>>, &str, &str)> =
        (0..10).map(|i| (&trace.id, at(i), "0.1", "USD")).collect();
    calls.push((&trace.id, at(30), "5", "USD"));
    calls.push((&other.id, at(2), "7", "USD"));
    calls.push((&trace.id, at(3), "0.000000001", "EUR"));
    for (trace, started_at, amount, currency) in calls {
        let span = tracker.start_span(&NewSpan { started_at, ..NewSpan::new(trace.clone(), SpanKind::Llm, "c") }).unwrap();
        let cost = Some(Money::parse(amount, currency).unwrap());
        tracker.record_llm(&span.id, &LlmCall { cost, ..llm("m", "p", 1, 1, None) }).unwrap();
    }
    let report = tracker.budget_report(&"p1".into(), month).unwrap();
    assert_eq!(report.budget, None);
    let spent: Vec<String> = report.spent.iter().map(Money::to_string).collect();
    assert_eq!(spent, ["0.000000001 EUR", "1.00 USD"]);

    let config = ConfigStore::new(t.db().clone());
    let scope = Scope::Project("p1".into());
    config.set("budget.monthly", &scope, &json!({"amount": "0.95", "currency": "USD"})).unwrap();
    let report = tracker.budget_report(&"p1".into(), month).unwrap();
    assert_eq!((report.budget.unwrap().to_string(), report.over_budget, report.remaining), ("0.95 USD".to_owned(), true, None));
    config.set("budget.monthly", &scope, &json!({"amount": "50.00", "currency": "USD"})).unwrap();
    let report = tracker.budget_report(&"p1".into(), month).unwrap();
    assert_eq!((report.over_budget, report.remaining.unwrap().to_string()), (false, "49.00 USD".to_owned()));
    assert_eq!(report.month, "2026-11");
    for bad in [json!({"amount": 50.0, "currency": "USD"}), json!({"amount": "fifty", "currency": "USD"}), json!("50")] {
        config.set("budget.monthly", &scope, &bad).unwrap();
        let err = tracker.budget_report(&"p1".into(), month).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { what: "budget" | "cost", .. }), "{bad}: {err}");
    }
}
}

// ---- batches --------------------------------------------------------------------------------

/// Where a generated span's parent is: none, one of the stored spans, or an earlier generated
/// span (an index, taken below the span's own).
#[derive(Debug, Clone)]
enum GenParent {
    Top,
    Stored(usize),
    Earlier(proptest::sample::Index),
}

/// One generated finished span, generated parents first.
#[derive(Debug, Clone)]
struct GenFinished {
    trace: usize,
    parent: GenParent,
    kind: usize,
    name: usize,
    session: Option<usize>,
    /// None: the clock's now (noon); else this many microseconds before noon.
    start_us: Option<i64>,
    /// None: the clock's now; else this many microseconds after the start.
    end_after_us: Option<i64>,
    error: bool,
    start_attributes: Option<serde_json::Value>,
    end_attributes: Option<serde_json::Value>,
    llm: Option<GenUsage>,
}

/// Generated LLM usage: model, provider, tokens in and out, cost (nanos, currency), latency.
type GenUsage = (usize, usize, i64, i64, Option<(i64, usize)>, Option<i64>);

fn batch_kinds() -> [SpanKind; 6] {
    [
        SpanKind::Agent,
        SpanKind::Tool,
        SpanKind::Llm,
        SpanKind::Workflow,
        SpanKind::Other,
        SpanKind::parse("retrieval"),
    ]
}

/// Names and sessions, some holding secrets the policy replaces.
fn batch_texts() -> [String; 5] {
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    [
        "coder".to_owned(),
        "complete".to_owned(),
        format!("call with {key}"),
        "password: hunter2".to_owned(),
        "s-1".to_owned(),
    ]
}

fn gen_json() -> impl Strategy<Value = serde_json::Value> {
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let leaf = prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        proptest::sample::select(vec![
            "plain".to_owned(),
            format!("key {key}"),
            "token=abc123XYZ".to_owned()
        ])
        .prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    let keys = proptest::sample::select(vec![
        "a".to_owned(),
        "b".to_owned(),
        "password".to_owned(),
        key.clone(),
        format!("{key}x"),
    ]);
    prop_oneof![
        3 => proptest::collection::btree_map(keys, leaf.clone(), 0..4)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        1 => leaf.clone(),
        1 => proptest::collection::vec(leaf, 0..3).prop_map(serde_json::Value::from),
    ]
}

fn gen_finished() -> impl Strategy<Value = GenFinished> {
    let parent = prop_oneof![
        Just(GenParent::Top),
        (0..2usize).prop_map(GenParent::Stored),
        any::<proptest::sample::Index>().prop_map(GenParent::Earlier),
    ];
    let llm = (
        0..3usize,
        0..2usize,
        0..1_000_000i64,
        0..1_000_000i64,
        proptest::option::of((0..5_000_000_000i64, 0..2usize)),
        proptest::option::of(0..10_000i64),
    );
    (
        (0..2usize, parent, 0..6usize, 0..4usize, proptest::option::of(2..5usize)),
        (
            proptest::option::of(0..90_000_000i64),
            proptest::option::of(0..5_000_000i64),
            any::<bool>(),
        ),
        (
            proptest::option::of(gen_json()),
            proptest::option::of(gen_json()),
            proptest::option::of(llm),
        ),
    )
        .prop_map(
            |(
                (trace, parent, kind, name, session),
                (start_us, end_after_us, error),
                (start_attributes, end_attributes, llm),
            )| {
                GenFinished {
                    trace,
                    parent,
                    kind,
                    name,
                    session,
                    start_us,
                    end_after_us,
                    error,
                    start_attributes,
                    end_attributes,
                    llm,
                }
            },
        )
}

/// The generated spans with each one's trace made its parent's (a stored span `k` is in
/// trace `k`), and an order to give them in as a batch.
fn gen_batch() -> impl Strategy<Value = (Vec<GenFinished>, Vec<usize>)> {
    proptest::collection::vec(gen_finished(), 0..24).prop_flat_map(|mut spans| {
        for k in 0..spans.len() {
            spans[k].trace = match &spans[k].parent {
                GenParent::Top => spans[k].trace,
                GenParent::Stored(s) => *s,
                GenParent::Earlier(_) if k == 0 => spans[k].trace,
                GenParent::Earlier(j) => spans[j.index(k)].trace,
            };
        }
        let order: Vec<usize> = (0..spans.len()).collect();
        (Just(spans), Just(order).prop_shuffle())
    })
}

/// The traces and the spans stored before the batch (span `k` in trace `k`: an agent span with
/// a session, a workflow span without).
fn stored_before(tracker: &ExecutionTracker, traces: &[TraceId]) -> Vec<SpanId> {
    let agent = NewSpan {
        session_id: Some("s-stored".into()),
        ..NewSpan::new(traces[0].clone(), SpanKind::Agent, "planner")
    };
    let flow = NewSpan::new(traces[1].clone(), SpanKind::Workflow, "flow");
    [agent, flow].iter().map(|n| tracker.start_span(n).unwrap().id).collect()
}

/// Generated span `k` as the tracker takes it, with the id `id`; the stored spans and the
/// generated ones before it (at least) are named by `stored` and `earlier`.
fn finished(
    g: &GenFinished,
    k: usize,
    id: &SpanId,
    traces: &[TraceId],
    stored: &[SpanId],
    earlier: &[SpanId],
) -> FinishedSpan {
    let texts = batch_texts();
    let kind = batch_kinds()[g.kind].clone();
    let started_at = g.start_us.map(|us| noon() - Duration::microseconds(us));
    let mut start = NewSpan {
        session_id: g.session.map(|s| texts[s].clone()),
        started_at,
        attributes: g.start_attributes.clone(),
        ..NewSpan::new(traces[g.trace].clone(), kind.clone(), texts[g.name].clone())
    };
    start.parent_id = match &g.parent {
        GenParent::Top => None,
        GenParent::Stored(s) => Some(stored[*s].clone()),
        GenParent::Earlier(_) if k == 0 => None,
        GenParent::Earlier(j) => Some(earlier[j.index(k)].clone()),
    };
    let end = SpanEnd {
        status: if g.error { SpanStatus::Error } else { SpanStatus::Ok },
        ended_at: g
            .end_after_us
            .map(|us| started_at.unwrap_or_else(noon) + Duration::microseconds(us)),
        attributes: g.end_attributes.clone(),
    };
    let llm =
        g.llm.filter(|_| kind == SpanKind::Llm).map(|(m, v, input, output, cost, latency_ms)| {
            LlmCall {
                model: MODELS[m].into(),
                provider: PROVIDERS[v].into(),
                input_tokens: input,
                output_tokens: output,
                cost: cost.map(|(n, c)| Money::from_nanos(n, CURRENCIES[c]).unwrap()),
                latency_ms,
            }
        });
    FinishedSpan { id: id.clone(), start, end, llm }
}

/// Every stored span, its id and parent renamed by `rename`, sorted by id; and every rollup.
fn read_back(
    tracker: &ExecutionTracker,
    rename: &BTreeMap<SpanId, SpanId>,
) -> (Vec<Span>, Vec<Vec<CostRow>>) {
    let mut spans = tracker.spans(&SpanQuery::default()).unwrap();
    for span in &mut spans {
        span.id = rename.get(&span.id).cloned().unwrap_or_else(|| span.id.clone());
        span.parent_id =
            span.parent_id.as_ref().map(|p| rename.get(p).cloned().unwrap_or_else(|| p.clone()));
    }
    spans.sort_by(|a, b| a.id.cmp(&b.id));
    let rollups = CostGroup::ALL
        .into_iter()
        .flat_map(|by| {
            [None, Some(ProjectId::new("p1"))].map(|project| CostQuery {
                project,
                by,
                since: None,
                until: None,
            })
        })
        .map(|q| tracker.cost_rollup(&q).unwrap())
        .collect();
    (spans, rollups)
}

on_both! {
/// Spans recorded in a batch (in any order, parents after their children too) read back, and
/// add up in every rollup, exactly as the same spans recorded one at a time: inherited session
/// and agent, redacted texts and attributes, end attributes merged, times to the millisecond.
fn a_batch_of_finished_spans_is_stored_as_recording_them_one_at_a_time(t) {
    let (tracker, _clock) = clocked(t, noon());
    let traces: Vec<TraceId> = ["p1", "p2"]
        .iter()
        .map(|p| tracker.start_trace(&(*p).into(), &"t".into(), "x").unwrap().id)
        .collect();
    let mut runner = TestRunner::new(Config { cases: 32, ..Config::default() });
    runner
        .run(&gen_batch(), |(gens, order)| {
            let ids: Vec<SpanId> = (0..gens.len()).map(|k| SpanId::new(format!("batch-{k:02}"))).collect();
            // One at a time, parents first: start, usage, end.
            tamper(t, "DELETE FROM span_decisions; DELETE FROM spans;");
            let stored = stored_before(&tracker, &traces);
            let mut rename: BTreeMap<SpanId, SpanId> = BTreeMap::new();
            for (k, s) in stored.iter().enumerate() {
                rename.insert(s.clone(), SpanId::new(format!("stored-{k}")));
            }
            let mut written: Vec<SpanId> = Vec::new();
            for (k, g) in gens.iter().enumerate() {
                let f = finished(g, k, &ids[k], &traces, &stored, &written);
                let span = tracker.start_span(&f.start).unwrap();
                if let Some(call) = &f.llm {
                    tracker.record_llm(&span.id, call).unwrap();
                }
                tracker.end_span(&span.id, &f.end).unwrap();
                rename.insert(span.id.clone(), ids[k].clone());
                written.push(span.id);
            }
            let one_at_a_time = read_back(&tracker, &rename);
            prop_assert_eq!(one_at_a_time.0.len(), gens.len() + 2);

            // The same spans in one batch, in the shuffled order.
            tamper(t, "DELETE FROM span_decisions; DELETE FROM spans;");
            let stored = stored_before(&tracker, &traces);
            let mut rename: BTreeMap<SpanId, SpanId> = BTreeMap::new();
            for (k, s) in stored.iter().enumerate() {
                rename.insert(s.clone(), SpanId::new(format!("stored-{k}")));
            }
            let batch: Vec<FinishedSpan> = order.iter().map(|&k| finished(&gens[k], k, &ids[k], &traces, &stored, &ids)).collect();
            prop_assert_eq!(tracker.record_spans(&batch).unwrap(), gens.len());
            let batched = read_back(&tracker, &rename);
            prop_assert_eq!(batched, one_at_a_time);
            Ok(())
        })
        .unwrap();
}
}

/// A good batch of five spans for the refusal tests: an LLM span and a tool span below an agent
/// span of the batch that comes after them (itself below a stored span of trace `a`), a
/// workflow span in trace `b`, and a top-level LLM span in trace `a`.
fn good_batch(a: &TraceId, b: &TraceId, stored_a: &SpanId) -> Vec<FinishedSpan> {
    let id = |k: usize| SpanId::new(format!("batch-{k}"));
    let at = |ms: i64| Some(noon() - Duration::milliseconds(ms));
    let ok = |started: i64| SpanEnd {
        status: SpanStatus::Ok,
        ended_at: at(started - 5),
        attributes: None,
    };
    let span = |trace: &TraceId, kind: SpanKind, name: &str, started: i64| NewSpan {
        started_at: at(started),
        ..NewSpan::new(trace.clone(), kind, name)
    };
    vec![
        FinishedSpan::new(id(0), span(a, SpanKind::Llm, "complete", 90).under(&id(1)), ok(90))
            .with_llm(llm("m-small", "anthropic", 10, 20, Some("0.25"))),
        FinishedSpan::new(id(1), span(a, SpanKind::Agent, "coder", 100).under(stored_a), ok(100)),
        FinishedSpan::new(id(2), span(a, SpanKind::Tool, "search", 80).under(&id(1)), ok(80)),
        FinishedSpan::new(id(3), span(b, SpanKind::Workflow, "flow", 70), ok(70)),
        FinishedSpan::new(id(4), span(a, SpanKind::Llm, "complete", 60), ok(60))
            .with_llm(llm("m-large", "local", 1, 2, None)),
    ]
}

on_both! {
/// Every check of the one-at-a-time path, and those only a batch needs (ids, circles), refuses
/// a bad span of a batch by its index and the field at fault, before anything is written: the
/// stored spans stay as they were, and a caller's transaction goes on.
fn a_bad_span_in_a_batch_is_refused_by_index_and_field_and_nothing_is_written(t) {
    let (tracker, _clock) = clocked(t, noon());
    let a = tracker.start_trace(&"p1".into(), &"t1".into(), "a").unwrap().id;
    let b = tracker.start_trace(&"p2".into(), &"t2".into(), "b").unwrap().id;
    let stored_a = tracker.start_span(&NewSpan::new(a.clone(), SpanKind::Agent, "planner")).unwrap().id;
    let stored_b = tracker.start_span(&NewSpan::new(b.clone(), SpanKind::Tool, "x")).unwrap().id;
    let before = everything(&tracker);
    let far = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + Duration::seconds(5);
    type Spoil = Box<dyn Fn(&mut Vec<FinishedSpan>)>;
    let (sa, sb) = (stored_a.clone(), stored_b.clone());
    let mut cases: Vec<(usize, &str, Spoil)> = vec![
        (2, "span name", Box::new(|s| s[2].start.name = String::new())),
        (2, "span name", Box::new(|s| s[2].start.name = " \n\t".into())),
        (3, "trace no-such-trace not found", Box::new(|s| s[3].start.trace_id = "no-such-trace".into())),
        (2, "span no-such-span not found", Box::new(|s| s[2].start.parent_id = Some("no-such-span".into()))),
        (4, "parent span", Box::new(move |s| s[4].start.parent_id = Some(sb.clone()))),
        (3, "parent span", Box::new(|s| s[3].start.parent_id = Some("batch-1".into()))),
        (4, "parent span", Box::new(|s| s[4].start.parent_id = Some("batch-4".into()))),
        (0, "parent span", Box::new(|s| s[1].start.parent_id = Some("batch-2".into()))),
        (3, "span id", Box::new(|s| s[3].id = "batch-1".into())),
        (4, "span id", Box::new(move |s| s[4].id = sa.clone())),
        (4, "span id", Box::new(|s| s[4].id = SpanId::new(""))),
        (4, "span id", Box::new(|s| s[4].id = "invocation-1".into())),
        (2, "span kind", Box::new(|s| s[2].llm = Some(llm("m", "p", 1, 1, None)))),
        (0, "input tokens", Box::new(|s| s[0].llm.as_mut().unwrap().input_tokens = -1)),
        (0, "output tokens", Box::new(|s| s[0].llm.as_mut().unwrap().output_tokens = i64::MIN)),
        (0, "latency", Box::new(|s| s[0].llm.as_mut().unwrap().latency_ms = Some(-5))),
        (4, "model", Box::new(|s| s[4].llm.as_mut().unwrap().model = String::new())),
        (4, "provider", Box::new(|s| s[4].llm.as_mut().unwrap().provider = " ".into())),
        (3, "span status", Box::new(|s| s[3].end.status = SpanStatus::Running)),
        (4, "end time", Box::new(|s| s[4].end.ended_at = Some(noon() - Duration::milliseconds(61)))),
        (3, "end time", Box::new(|s| s[3].start.started_at = None)),
        (4, "start time", Box::new(move |s| { s[4].start.started_at = Some(far); s[4].end.ended_at = Some(far); })),
        (4, "end time", Box::new(move |s| s[4].end.ended_at = Some(far))),
    ];
    if t.backend() == Backend::Postgres {
        cases.push((2, "span name", Box::new(|s| s[2].start.name = "a\0b".into())));
        cases.push((3, "session", Box::new(|s| s[3].start.session_id = Some("s\0".into()))));
        cases.push((0, "model", Box::new(|s| s[0].llm.as_mut().unwrap().model = "m\0".into())));
    }
    for (index, named, spoil) in &cases {
        let mut batch = good_batch(&a, &b, &stored_a);
        spoil(&mut batch);
        let err = tracker.record_spans(&batch).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(&format!("span {index} of the batch: ")), "{named}: {message}");
        assert!(message.contains(named) && !message.ends_with('.'), "{named}: {message}");
        let Error::InBatch { index: at, error } = err else { panic!("{named}: {message}") };
        assert_eq!(at, *index, "{message}");
        assert!(
            matches!(*error, Error::InvalidInput { .. } | Error::UnknownSpan { .. } | Error::UnknownTrace { .. }),
            "{named}: {error:?}"
        );
        assert_eq!(everything(&tracker), before, "{named}: a refused batch writes nothing");
    }

    // Refused inside a caller's transaction before any statement wrote: the transaction goes on.
    let mut bad = good_batch(&a, &b, &stored_a);
    bad[4].start.name = String::new();
    let kept = t.db().write(|tx| {
        assert!(matches!(tracker.record_spans_in(tx, &bad), Err(Error::InBatch { index: 4, .. })));
        tracker.start_span_in(tx, &NewSpan::new(a.clone(), SpanKind::Tool, "after"))
    }).unwrap();
    assert_eq!(tracker.get_span(&kept.id).unwrap().map(|s| s.name), Some("after".to_owned()));

    // The good batch itself is taken whole; an empty one writes nothing.
    assert_eq!(tracker.record_spans(&[]).unwrap(), 0);
    assert_eq!(tracker.record_spans(&good_batch(&a, &b, &stored_a)).unwrap(), 5);
    let coder = tracker.get_span(&"batch-0".into()).unwrap().unwrap();
    assert_eq!((coder.agent.as_deref(), coder.parent_id), (Some("coder"), Some("batch-1".into())));
    assert_eq!(tracker.spans(&SpanQuery::default()).unwrap().len(), before.0.len() + 6);
}
}
