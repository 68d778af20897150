//! `demo`: one realistic orchestration through the real stores, on the chosen database.
//!
//! A task goes through the default graph: analysis, an architect whose design needs approval,
//! a coder with a checkpoint, a tester whose first run fails and is fixed, then completion.
//! Every transition is saved with its audit entry in one transaction; every agent run is an
//! invocation of the task's trace; the fix leaves two lessons.
//!
//! Multi-step work is one transaction or is marked failed: the trace starts in the transaction
//! that saves the task's first state, so neither is stored without the other, and a later step
//! that fails (a full disk…) marks the trace completed with success = false. If even that fails,
//! the error says so, and the trace is left running for `aigentflow traces recover`.

use aigentflow_audit::ChainHead;
use aigentflow_audit::{AuditEntry, AuditLog, Category};
use aigentflow_core_states::{
    Event, PersistedState, ProjectId, StateContext, StateMachine, TaskId,
};
use aigentflow_lessons::{Category as LessonCategory, LessonsStore, NewLesson, SearchOptions};
use aigentflow_persistence::{Database, SqliteStateStore};
use aigentflow_tracker::{ExecutionTracker, NewInvocation, Outcome, TokenUsage, Trace, TraceId};
use serde_json::json;

use crate::out::say;
use crate::{Ctx, Done};

struct Demo {
    db: Database,
    states: SqliteStateStore,
    audit: AuditLog,
    tracker: ExecutionTracker,
    machine: StateMachine,
    trace: TraceId,
    audit_entries: u64,
    invocations: u64,
    tokens: TokenUsage,
    print: bool,
}

/// What a finished demo wrote.
struct Summary {
    project: ProjectId,
    task: TaskId,
    persisted: PersistedState,
    trace: Trace,
    head: Option<ChainHead>,
    audit_entries: u64,
    invocations: u64,
    tokens: TokenUsage,
    lessons_found: usize,
}

impl Demo {
    /// Starts the task: applies START, then starts the trace and saves the first state with its
    /// audit entry in one transaction, so a trace is never stored without its task.
    fn begin(
        db: &Database,
        project: &ProjectId,
        task: &TaskId,
        prompt: &str,
        print: bool,
    ) -> anyhow::Result<Self> {
        let mut machine =
            StateMachine::new(StateContext::new(project.clone(), task.clone(), prompt));
        let entry = Self::apply(&mut machine, Event::Start)?;
        let states = SqliteStateStore::new(db.clone());
        let audit = AuditLog::new(db.clone());
        let tracker = ExecutionTracker::new(db.clone());
        let trace = db.write(|tx| -> anyhow::Result<Trace> {
            let trace = tracker.start_trace_in(tx, project, task, prompt)?;
            states.save_in(tx, machine.persisted())?;
            audit.log_in(tx, &entry.0)?;
            Ok(trace)
        })?;
        let demo = Self {
            db: db.clone(),
            states,
            audit,
            tracker,
            machine,
            trace: trace.id,
            audit_entries: 1,
            invocations: 0,
            tokens: TokenUsage::default(),
            print,
        };
        demo.said(&entry.1);
        Ok(demo)
    }

    /// Applies an event to `machine`: the audit entry of its transition, and the line to print.
    fn apply(machine: &mut StateMachine, event: Event) -> anyhow::Result<(AuditEntry, String)> {
        machine.apply(event, None)?;
        let Some(t) = machine.history().last().cloned() else {
            anyhow::bail!("the machine recorded no transition");
        };
        let entry = AuditEntry {
            project_id: Some(machine.context().project_id.clone()),
            task_id: Some(machine.context().task_id.clone()),
            agent: machine.context().current_agent.clone(),
            details: Some(
                json!({"from": t.from.as_str(), "event": t.event.as_str(), "to": t.to.as_str()}),
            ),
            ..AuditEntry::new("state_transition", Category::State)
        };
        let line =
            format!("  {:<18} --{:<22}--> {}", t.from.as_str(), t.event.as_str(), t.to.as_str());
        Ok((entry, line))
    }

    fn said(&self, line: &str) {
        if self.print {
            say!("{line}");
        }
    }

    /// Applies an event, then saves the state and its audit entry in one transaction.
    fn step(&mut self, event: Event) -> anyhow::Result<()> {
        let (entry, line) = Self::apply(&mut self.machine, event)?;
        self.db.write(|tx| -> anyhow::Result<()> {
            self.states.save_in(tx, self.machine.persisted())?;
            self.audit.log_in(tx, &entry)?;
            Ok(())
        })?;
        self.audit_entries += 1;
        self.said(&line);
        Ok(())
    }

    /// Marks the trace failed after `error` stopped the demo (best effort), and says what became
    /// of it in the error.
    fn failed(&self, error: anyhow::Error) -> anyhow::Error {
        let metadata = json!({"error": format!("{error:#}")});
        match self.tracker.complete_trace(&self.trace, false, Some(&self.tokens), Some(&metadata)) {
            Ok(_) => error.context(format!("demo stopped; trace {} marked failed", self.trace)),
            Err(mark) => error.context(format!(
                "demo stopped; trace {} could not be marked failed ({mark}) and is left for `aigentflow traces recover`",
                self.trace
            )),
        }
    }

    /// Records one agent run in the trace, with its audit entry.
    fn invoke(
        &mut self,
        agent: &str,
        fragment: &str,
        outcome: Outcome,
        quality: f64,
        usage: TokenUsage,
    ) -> anyhow::Result<()> {
        let now = self.db.now();
        let invocation = NewInvocation {
            task_fragment: Some(fragment.into()),
            completed_at: Some(now),
            outcome: Some(outcome),
            quality_score: Some(quality),
            token_usage: Some(usage),
            output_summary: Some(format!("{agent}: {fragment}")),
            error: (outcome == Outcome::Failure)
                .then(|| "2 of 14 tests failed: login_redirects, session_expiry".into()),
            ..NewInvocation::new(self.trace.clone(), agent, now)
        };
        let entry = AuditEntry {
            project_id: Some(self.machine.context().project_id.clone()),
            task_id: Some(self.machine.context().task_id.clone()),
            agent: Some(agent.into()),
            details: Some(
                json!({"fragment": fragment, "outcome": outcome.as_str(), "tokens": usage.total_tokens}),
            ),
            ..AuditEntry::new("agent_invocation", Category::Agent)
        };
        self.db.write(|tx| -> anyhow::Result<()> {
            self.tracker.record_invocation_in(tx, &invocation)?;
            self.audit.log_in(tx, &entry)?;
            Ok(())
        })?;
        self.audit_entries += 1;
        self.invocations += 1;
        self.tokens.input_tokens += usage.input_tokens;
        self.tokens.output_tokens += usage.output_tokens;
        self.tokens.total_tokens += usage.total_tokens;
        Ok(())
    }

    /// Spawns `agent` from the queue and lets it finish.
    fn agent(&mut self, agent: &str, needs_approval: bool) -> anyhow::Result<()> {
        self.machine.context_mut().agent_queue.push(agent.into());
        self.step(Event::SpawnAgent)?;
        let ctx = self.machine.context_mut();
        ctx.agent_queue.clear();
        ctx.current_agent = Some(agent.into());
        ctx.completed_agents.push(agent.into());
        let output = ctx.agent_outputs.entry(agent.into()).or_default();
        output.routing_hints.needs_approval = needs_approval;
        self.step(Event::AgentDone)
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Done> {
    let db = ctx.create()?;
    let print = !ctx.out.json && !ctx.out.quiet;
    let task = TaskId::new(format!("demo-login-{}", uuid_suffix()));
    if print {
        say!("demo orchestration of task {task} in {}", ctx.shown());
    }
    let Summary {
        project,
        task,
        persisted,
        trace: done,
        head,
        audit_entries,
        invocations,
        tokens,
        lessons_found,
    } = orchestrate(&db, task, print)?;
    let report = json!({
        "database": ctx.path_text(),
        "project": project,
        "task": task,
        "final_state": persisted.state.as_str(),
        "transitions": persisted.history.len(),
        "checkpoints": persisted.context.checkpoints.len(),
        "audit_entries": audit_entries,
        "audit_head": head,
        "trace": done.id,
        "invocations": invocations,
        "tokens": tokens,
        "lessons_created": 2,
        "lessons_found_for_login_tests": lessons_found,
    });
    ctx.out.emit(&report, || {
        if ctx.out.quiet {
            say!("{task}");
            return;
        }
        say!();
        say!("wrote to {}:", ctx.shown());
        say!(
            "  task     {task}: {} transitions, {} checkpoint, final state {}",
            persisted.history.len(),
            persisted.context.checkpoints.len(),
            persisted.state
        );
        say!(
            "  trace    {}: {} agent invocations, {} tokens",
            done.id,
            invocations,
            tokens.total_tokens
        );
        say!(
            "  audit    {} entries; chain head {}",
            audit_entries,
            head.as_ref().map_or("-".into(), |h| format!(
                "row {} {}",
                h.last_id,
                &h.hash[..16.min(h.hash.len())]
            ))
        );
        say!("  lessons  2 created; \"login tests\" finds {lessons_found}");
        say!();
        say!("look around:");
        say!("  aigentflow tasks show {task}");
        say!("  aigentflow traces show {}", done.id);
        say!("  aigentflow audit query --task {task}");
        say!("  aigentflow lessons search login");
        say!("  aigentflow db check");
    })?;
    Ok(Done::Ok)
}

/// Runs the demo orchestration of `task` on `db`. On an error after the trace started, the
/// trace is marked failed (or the error says why it could not be).
fn orchestrate(db: &Database, task: TaskId, print: bool) -> anyhow::Result<Summary> {
    let project = ProjectId::new("demo-project");
    let prompt = "Add a login page with OAuth, \"remember me\" and rate limiting";
    let mut demo = Demo::begin(db, &project, &task, prompt, print)?;
    let finished = work(&mut demo, &project, &task).and_then(|lessons_found| {
        let metadata = json!({"model": "claude", "retries": demo.machine.context().retry_count});
        let trace =
            demo.tracker.complete_trace(&demo.trace, true, Some(&demo.tokens), Some(&metadata))?;
        Ok((lessons_found, trace))
    });
    let (lessons_found, trace) = finished.map_err(|e| demo.failed(e))?;
    Ok(Summary {
        head: demo.audit.head()?,
        persisted: demo.machine.persisted().clone(),
        project,
        task,
        trace,
        audit_entries: demo.audit_entries,
        invocations: demo.invocations,
        tokens: demo.tokens,
        lessons_found,
    })
}

/// Every step after the first: the agents, the approval, the test-and-fix loop, completion and
/// the lessons. Returns how many lessons a search for "login tests" finds.
fn work(demo: &mut Demo, project: &ProjectId, task: &TaskId) -> anyhow::Result<usize> {
    demo.invoke(
        "analyzer",
        "Break the request into work items",
        Outcome::Success,
        0.92,
        TokenUsage::new(3_200, 850),
    )?;
    demo.step(Event::AnalysisComplete)?;

    demo.agent("architect", true)?;
    demo.invoke(
        "architect",
        "Design the OAuth flow and session store",
        Outcome::Success,
        0.88,
        TokenUsage::new(6_400, 2_100),
    )?;
    demo.step(Event::NeedsApproval)?;
    let approval = AuditEntry {
        project_id: Some(project.clone()),
        task_id: Some(task.clone()),
        user_id: Some("operator@example.com".into()),
        details: Some(json!({"decision": "approved", "design": "OAuth + server-side sessions"})),
        ..AuditEntry::new("design_approved", Category::User)
    };
    demo.audit.log(&approval)?;
    demo.audit_entries += 1;
    demo.step(Event::Approve)?;
    demo.step(Event::Continue)?;

    demo.agent("coder", false)?;
    demo.invoke(
        "coder",
        "Implement login page and OAuth callback",
        Outcome::Success,
        0.81,
        TokenUsage::new(12_800, 5_300),
    )?;
    let checkpoint =
        demo.machine.create_checkpoint(vec!["src/login.rs".into(), "src/oauth.rs".into()]);
    demo.said(&format!("  checkpoint {} in {}", checkpoint.id, checkpoint.state));
    demo.step(Event::RouteNext)?;

    demo.agent("tester", false)?;
    demo.step(Event::EnterTestPhase)?;
    demo.invoke(
        "tester",
        "Run the login test suite",
        Outcome::Failure,
        0.40,
        TokenUsage::new(4_100, 900),
    )?;
    demo.step(Event::TestsFailed)?;
    demo.step(Event::StartFix)?;
    demo.machine.increment_retry();
    demo.invoke(
        "coder",
        "Fix session expiry off-by-one",
        Outcome::Success,
        0.86,
        TokenUsage::new(5_600, 1_400),
    )?;
    demo.step(Event::FixComplete)?;
    demo.invoke(
        "tester",
        "Re-run the login test suite",
        Outcome::Success,
        0.95,
        TokenUsage::new(3_900, 700),
    )?;
    demo.step(Event::AllTestsPass)?;
    demo.step(Event::TestsPassedContinue)?;
    demo.step(Event::WorkflowComplete)?;
    demo.step(Event::Finalize)?;

    let lessons = LessonsStore::new(demo.db.clone());
    let expiry = lessons.create(&NewLesson {
        project_id: Some(project.clone()),
        details: Some("Session expiry compared seconds with milliseconds; tests with a fixed clock caught it.".into()),
        tags: vec!["testing".into(), "auth".into()],
        source_agent: Some("tester".into()),
        source_file: Some("src/oauth.rs".into()),
        confidence: Some(0.9),
        ..NewLesson::new(LessonCategory::Bug, "Session expiry off by 1000", "Keep one time unit for session expiry; test login flows with a fixed clock")
    })?;
    lessons.create(&NewLesson {
        tags: vec!["workflow".into()],
        source_agent: Some("architect".into()),
        confidence: Some(0.8),
        ..NewLesson::new(
            LessonCategory::Pattern,
            "Approve auth designs before coding",
            "Designs touching authentication wait for a person's approval",
        )
    })?;
    lessons.record_application(&expiry.id)?;
    let found =
        lessons.search(&SearchOptions { limit: Some(5), ..SearchOptions::text("login tests") })?;
    Ok(found.len())
}

/// Eight hex digits that make the demo's task id new on every run.
fn uuid_suffix() -> String {
    TaskId::random().as_str().chars().filter(|c| c.is_ascii_hexdigit()).take(8).collect()
}

#[cfg(test)]
// These tests fill the disk up through the driver's connection (PRAGMA max_page_count).
#[allow(clippy::disallowed_methods)]
mod tests {
    use aigentflow_persistence::Error as PError;

    use super::*;

    fn number(db: &Database, sql: &str) -> i64 {
        db.read(|tx| {
            Ok::<_, PError>(tx.sqlite().unwrap().query_row(sql, [], |r| r.get(0)).unwrap())
        })
        .unwrap()
    }

    /// An in-memory database (one connection) with no free page left, that can grow by only
    /// `extra` pages.
    fn limited(extra: i64) -> Database {
        let db = Database::open_in_memory().unwrap();
        db.write(|tx| {
            let conn = tx.sqlite().unwrap();
            conn.execute_batch("CREATE TABLE padding(b BLOB)").unwrap();
            while conn.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0)).unwrap() > 0 {
                conn.execute("INSERT INTO padding VALUES (zeroblob(3000))", []).unwrap();
            }
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            let set = conn
                .pragma_update_and_check(None, "max_page_count", pages + extra, |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap();
            assert_eq!(set, pages + extra);
            Ok::<_, PError>(())
        })
        .unwrap();
        db
    }

    /// Whether `task` left anything in the database.
    fn stored(db: &Database, task: &TaskId) -> [i64; 3] {
        db.read(|tx| {
            let count = |sql: &str| {
                tx.sqlite().unwrap().query_row(sql, [task.as_str()], |r| r.get::<_, i64>(0))
            };
            Ok::<_, PError>([
                count("SELECT count(*) FROM workflow_states WHERE task_id = ?1").unwrap(),
                count("SELECT count(*) FROM execution_traces WHERE task_id = ?1").unwrap(),
                count("SELECT count(*) FROM audit_logs WHERE task_id = ?1").unwrap(),
            ])
        })
        .unwrap()
    }

    /// What a failed demo left behind, as its error tells it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Left {
        /// The first step failed: nothing of the run is stored.
        Nothing,
        /// A later step failed: the trace is marked failed.
        MarkedFailed,
        /// Marking failed too: the trace is left running, with its task, for `traces recover`.
        ForRecover,
    }

    /// Checks what a failed demo of `task` left in `db`; `expected` is in the error line.
    fn after_failure(db: &Database, task: &TaskId, e: &anyhow::Error, expected: &str) -> Left {
        let line = format!("{e:#}");
        assert!(!line.contains('\n') && line.contains(expected), "{task}: {line}");
        let orphans = number(
            db,
            "SELECT count(*) FROM execution_traces t WHERE NOT EXISTS
                 (SELECT 1 FROM workflow_states w WHERE w.task_id = t.task_id)",
        );
        assert_eq!(orphans, 0, "a trace without its task: {task}: {line}");
        let running = number(db, "SELECT count(*) FROM execution_traces WHERE status = 'running'");
        let failed = number(
            db,
            "SELECT count(*) FROM execution_traces WHERE status = 'completed' AND success = 0",
        );
        let check: String = db
            .read(|tx| {
                Ok::<_, PError>(
                    tx.sqlite()
                        .unwrap()
                        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                        .unwrap(),
                )
            })
            .unwrap();
        assert_eq!(check, "ok", "{task}: {line}");
        if line.contains("could not be marked failed") {
            assert_eq!((running, failed), (1, 0), "{task}: {line}");
            assert!(line.contains("traces recover"), "{task}: {line}");
            Left::ForRecover
        } else if line.contains("marked failed") {
            assert_eq!((running, failed), (0, 1), "{task}: {line}");
            Left::MarkedFailed
        } else {
            assert_eq!(stored(db, task), [0, 0, 0], "nothing of the run: {task}: {line}");
            assert_eq!((running, failed), (0, 0), "{task}: {line}");
            Left::Nothing
        }
    }

    /// Makes every write after the first `budget` rows (audit entries, lessons, the trace's
    /// completion) fail, as a disk that fills up at that step would. Marking the trace failed
    /// fails too only if `marking_fails`.
    fn fail_after(db: &Database, budget: i64, marking_fails: bool) {
        db.write(|tx| {
            let conn = tx.sqlite().unwrap();
            conn.execute("CREATE TEMP TABLE budget(rows_left INTEGER NOT NULL)", []).unwrap();
            conn.execute("INSERT INTO budget VALUES (?1)", [budget]).unwrap();
            let completion = if marking_fails { "1" } else { "NEW.success = 1" };
            // A trace's completion (or marking) is the update of its outcome; the update that
            // numbers a new trace in the feed is part of starting it.
            for (table, op, event, when) in [
                ("audit_logs", "insert", "INSERT", "1"),
                ("lessons", "insert", "INSERT", "1"),
                ("lessons", "update", "UPDATE", "1"),
                ("execution_traces", "completion", "UPDATE OF success", completion),
            ] {
                conn.execute_batch(&format!(
                    "CREATE TEMP TRIGGER spend_{table}_{op} BEFORE {event} ON main.{table}
                     WHEN {when} BEGIN
                         SELECT RAISE(ABORT, 'injected: disk full') FROM budget WHERE rows_left <= 0;
                         UPDATE budget SET rows_left = rows_left - 1;
                     END"
                )).unwrap();
            }
            Ok::<_, PError>(())
        })
        .unwrap();
    }

    /// The demo fails at each of its steps in turn (from the first, which starts the trace, to
    /// the last, which completes it): every time one line, no trace without its task, integrity
    /// ok, and the trace marked failed, or nothing stored, or (when marking fails too) the trace
    /// left for `traces recover`.
    #[test]
    fn a_demo_that_fails_at_any_step_leaves_no_trace_running_without_its_task() {
        for (marking_fails, then) in [(false, Left::MarkedFailed), (true, Left::ForRecover)] {
            let mut seen = Vec::new();
            for budget in 0.. {
                assert!(budget < 1_000, "the demo never finished");
                let db = Database::open_in_memory().unwrap();
                fail_after(&db, budget, marking_fails);
                let task = TaskId::new(format!("demo-{budget}"));
                match orchestrate(&db, task.clone(), false) {
                    Ok(_) => break,
                    Err(e) => seen.push(after_failure(&db, &task, &e, "injected: disk full")),
                }
            }
            // Every audit entry, lesson and the completion is one step: the demo has over 30.
            assert!(seen.len() > 30, "{seen:?}");
            assert_eq!(seen[0], Left::Nothing, "{seen:?}");
            assert!(seen[1..].iter().all(|left| *left == then), "{seen:?}");
        }
    }

    /// Demos run one after another on databases that fill up (SQLite's page limit), so the space
    /// runs out at different steps; each failure leaves what `after_failure` checks.
    #[test]
    fn a_demo_on_a_database_that_fills_up_fails_cleanly() {
        let mut seen = Vec::new();
        for extra in 0..12 {
            let db = limited(extra);
            for run in 0.. {
                assert!(run < 500, "{extra} extra pages never filled up");
                let task = TaskId::new(format!("demo-{extra}-{run}"));
                if let Err(e) = orchestrate(&db, task.clone(), false) {
                    seen.push(after_failure(&db, &task, &e, "the disk is full"));
                    break;
                }
            }
        }
        assert!(seen.contains(&Left::MarkedFailed), "{seen:?}");
    }
}
