//! `demo`: one realistic orchestration through the real stores, on the chosen database.
//!
//! A task goes through the default graph: analysis, an architect whose design needs approval,
//! a coder with a checkpoint, a tester whose first run fails and is fixed, then completion.
//! Every transition is saved with its audit entry in one transaction; every agent run is an
//! invocation of the task's trace; the fix leaves two lessons.

use aigentflow_audit::{AuditEntry, AuditLog, Category};
use aigentflow_core_states::{Event, ProjectId, StateContext, StateMachine, TaskId};
use aigentflow_lessons::{Category as LessonCategory, LessonsStore, NewLesson, SearchOptions};
use aigentflow_persistence::{Database, SqliteStateStore};
use aigentflow_tracker::{ExecutionTracker, NewInvocation, Outcome, TokenUsage, TraceId};
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

impl Demo {
    /// Applies an event, then saves the state and its audit entry in one transaction.
    fn step(&mut self, event: Event) -> anyhow::Result<()> {
        self.machine.apply(event, None)?;
        let Some(t) = self.machine.history().last().cloned() else {
            anyhow::bail!("the machine recorded no transition");
        };
        let entry = AuditEntry {
            project_id: Some(self.machine.context().project_id.clone()),
            task_id: Some(self.machine.context().task_id.clone()),
            agent: self.machine.context().current_agent.clone(),
            details: Some(
                json!({"from": t.from.as_str(), "event": t.event.as_str(), "to": t.to.as_str()}),
            ),
            ..AuditEntry::new("state_transition", Category::State)
        };
        self.db.write(|tx| -> anyhow::Result<()> {
            self.states.save_in(tx, self.machine.persisted())?;
            self.audit.log_in(tx, &entry)?;
            Ok(())
        })?;
        self.audit_entries += 1;
        if self.print {
            say!("  {:<18} --{:<22}--> {}", t.from.as_str(), t.event.as_str(), t.to.as_str());
        }
        Ok(())
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
    let project = ProjectId::new("demo-project");
    let suffix = uuid_suffix();
    let task = TaskId::new(format!("demo-login-{suffix}"));
    let prompt = "Add a login page with OAuth, \"remember me\" and rate limiting";
    let tracker = ExecutionTracker::new(db.clone());
    let trace = tracker.start_trace(&project, &task, prompt)?;
    let print = !ctx.out.json && !ctx.out.quiet;
    if print {
        say!("demo orchestration of task {task} in {}", ctx.path.display());
    }
    let mut demo = Demo {
        states: SqliteStateStore::new(db.clone()),
        audit: AuditLog::new(db.clone()),
        tracker,
        machine: StateMachine::new(StateContext::new(project.clone(), task.clone(), prompt)),
        trace: trace.id.clone(),
        db: db.clone(),
        audit_entries: 0,
        invocations: 0,
        tokens: TokenUsage::default(),
        print,
    };

    demo.step(Event::Start)?;
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
    if print {
        say!("  checkpoint {} in {}", checkpoint.id, checkpoint.state);
    }
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

    let lessons = LessonsStore::new(db.clone());
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

    let metadata = json!({"model": "claude", "retries": demo.machine.context().retry_count});
    let done = demo.tracker.complete_trace(&trace.id, true, Some(&demo.tokens), Some(&metadata))?;
    let head = demo.audit.head()?;
    let persisted = demo.machine.persisted();
    let report = json!({
        "database": ctx.path_text(),
        "project": project,
        "task": task,
        "final_state": persisted.state.as_str(),
        "transitions": persisted.history.len(),
        "checkpoints": persisted.context.checkpoints.len(),
        "audit_entries": demo.audit_entries,
        "audit_head": head,
        "trace": done.id,
        "invocations": demo.invocations,
        "tokens": demo.tokens,
        "lessons_created": 2,
        "lessons_found_for_login_tests": found.len(),
    });
    ctx.out.emit(&report, || {
        if ctx.out.quiet {
            say!("{task}");
            return;
        }
        say!();
        say!("wrote to {}:", ctx.path.display());
        say!(
            "  task     {task}: {} transitions, {} checkpoint, final state {}",
            persisted.history.len(),
            persisted.context.checkpoints.len(),
            persisted.state
        );
        say!(
            "  trace    {}: {} agent invocations, {} tokens",
            done.id,
            demo.invocations,
            demo.tokens.total_tokens
        );
        say!(
            "  audit    {} entries; chain head {}",
            demo.audit_entries,
            head.as_ref().map_or("-".into(), |h| format!(
                "row {} {}",
                h.last_id,
                &h.hash[..16.min(h.hash.len())]
            ))
        );
        say!("  lessons  2 created; \"login tests\" finds {}", found.len());
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

/// Eight hex digits that make the demo's task id new on every run.
fn uuid_suffix() -> String {
    TaskId::random().as_str().chars().filter(|c| c.is_ascii_hexdigit()).take(8).collect()
}
