//! Issue 13 item 4: the stores called from an async orchestrator. They are synchronous (a
//! transaction holds a connection, and on PostgreSQL the driver runs its own small runtime), so
//! an async program calls them through `tokio::task::spawn_blocking`: the call runs on tokio's
//! blocking pool, never on a worker thread, where the PostgreSQL driver would try to start a
//! runtime inside the running one and panic. A cross-store transaction is one closure, which
//! uses `?` on every store (state, configuration, audit, tracker, lessons): their errors all
//! convert into `aigentflow::Error`, and none of them holds a driver's type.

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::lessons::{self, LessonsStore, NewLesson};
use aigentflow::persistence::{ConfigStore, Database, Scope, SqliteStateStore};
use aigentflow::states::{Event, StateContext, StateMachine, StateStore};
use aigentflow::tracker::{ExecutionTracker, NewInvocation};

use crate::inspect::Driver;

use crate::support::*;

/// One orchestrator step as an async program takes it: save the task's new transition, log its
/// audit entry, note the step in the configuration and what it taught as a lesson, and on the
/// first step start the run's trace with its first invocation: one transaction, on the
/// blocking pool.
async fn step(db: Database, task: String, n: usize) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let store = SqliteStateStore::new(db.clone());
        let audit = AuditLog::new(db.clone());
        let config = ConfigStore::new(db.clone());
        let tracker = ExecutionTracker::new(db.clone());
        let lessons = LessonsStore::new(db.clone());
        let mut m = match store.load_state(&task.as_str().into()).map_err(|e| e.to_string())? {
            Some(state) => StateMachine::from_persisted(state),
            None => StateMachine::new(StateContext::new("p".into(), task.as_str().into(), "go")),
        };
        let events = [Event::Start, Event::AnalysisComplete, Event::SpawnAgent, Event::AgentDone];
        // Past the last event the machine refuses more; the step is then only logged.
        let _ = m.apply(events[n % events.len()].clone(), None);
        db.write(|tx| {
            store.save_in(tx, m.persisted())?;
            let entry = AuditEntry {
                task_id: Some(task.as_str().into()),
                ..AuditEntry::new("step", Category::State)
            };
            audit.log_in(tx, &entry)?;
            config.set_in(tx, &format!("step.{task}"), &Scope::Global, &n.into())?;
            if n == 0 {
                let trace = tracker.start_trace_in(tx, &"p".into(), &task.as_str().into(), "go")?;
                tracker
                    .record_invocation_in(tx, &NewInvocation::new(trace.id, "planner", tx.now()))?;
            }
            let lesson =
                NewLesson::new(lessons::Category::Pattern, format!("{task} {n}"), "learned");
            lessons.create_in(tx, &lesson)?;
            Ok::<_, aigentflow::Error>(())
        })
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

on_both! {
fn stores_are_called_from_a_multi_thread_tokio_runtime_through_spawn_blocking(t) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    let location = t.location().to_owned();
    let (tasks, steps) = (8, 6);
    runtime.block_on(async move {
        // Opening connects too: it goes to the blocking pool as well.
        let db = tokio::task::spawn_blocking(move || Database::open(&location)).await.unwrap().unwrap();
        let mut handles = Vec::new();
        for task in 0..tasks {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                for n in 0..steps {
                    step(db.clone(), format!("task-{task}"), n).await?;
                    tokio::task::yield_now().await;
                }
                Ok::<_, String>(())
            }));
        }
        for handle in handles {
            handle.await.unwrap().unwrap();
        }
    });
    let audit = AuditLog::new(t.db().clone());
    assert_eq!(audit.verify(None).unwrap().finding, None);
    assert_eq!(audit.head().unwrap().map(|h| h.rows), Some((tasks * steps) as u64));
    let store = SqliteStateStore::new(t.db().clone());
    assert_eq!(store.list_states(&"p".into()).unwrap().len(), tasks);
    let mut stored = Driver::of(t);
    assert_eq!(stored.count("SELECT COUNT(*) FROM configurations", &[]), tasks as i64);
    assert_eq!(stored.count("SELECT COUNT(*) FROM execution_traces", &[]), tasks as i64);
    assert_eq!(stored.count("SELECT COUNT(*) FROM agent_invocations", &[]), tasks as i64);
    assert_eq!(stored.count("SELECT COUNT(*) FROM lessons", &[]), (tasks * steps) as i64);
}
}
