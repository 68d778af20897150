//! The worker process of the multi-process reliability tests (RELIABILITY.md R1, R2, R3, R14),
//! and of concurrent audit appends on either backend.
//!
//! ```text
//! aigentflow-worker open DB                       open (and migrate) DB, print the schema version
//! aigentflow-worker save DB NAME THREADS N SHARED  THREADS threads: each drives its own task
//!                                                  NAME-tK through N transitions, saving after
//!                                                  each, and advances the task SHARED one step
//!                                                  per round in a read-modify-write transaction
//! aigentflow-worker race DB NAME THREADS N TASK  THREADS threads each get N saves of TASK
//!                                                  accepted, each save loading TASK, stepping it
//!                                                  and saving it in separate transactions, again
//!                                                  when refused as stale or diverging; prints
//!                                                  `ok ` and the accepted saves' ids (NAME-tK-I,
//!                                                  in each transition's metadata as `by`)
//! aigentflow-worker run DB TASK                   save TASK with a checkpoint, start a trace of it,
//!                                                  print `trace ID`, then heartbeat until killed
//! aigentflow-worker crash DB TASK                  forever: advance TASK one step and log an audit
//!                                                  entry in one transaction, print `acked N`
//!                                                  after each commit (until killed)
//! aigentflow-worker recover DB                    print `ready`, wait for a line on stdin, run one
//!                                                  recovery pass, print `found ID` for each run it
//!                                                  marked crashed, try to resume every crashed run
//!                                                  and print `resumed ID` for each it won, print
//!                                                  `done`, then wait for stdin to close (so its
//!                                                  runs keep a live owner until then)
//! aigentflow-worker audit DB NAME THREADS N        THREADS threads each append N audit entries
//!                                                  (actions NAME-tK-I), in turns one alone, two
//!                                                  in a batch, and two with a save of the
//!                                                  thread's task NAME-tK in one transaction
//! ```
//!
//! DB is a SQLite file's path or a `postgres://` URL (`Database::open` picks the backend).
//!
//! Prints `ok …` and exits 0, or prints the first error on stderr and exits 1.

use std::process::ExitCode;
use std::thread;

use std::io::Write;

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::persistence::{Database, SqliteStateStore};
use aigentflow::states::{Event, StateContext, StateMachine, StateStore, TaskId, WorkflowState};
use aigentflow::tracker::{Error as TrackerError, ExecutionTracker, RecoveryOptions};

/// The event that moves a task one step around the default graph's agent loop.
fn next_event(state: &WorkflowState) -> Event {
    match state {
        WorkflowState::Idle => Event::Start,
        WorkflowState::Analyzing => Event::AnalysisComplete,
        WorkflowState::Orchestrating => Event::SpawnAgent,
        WorkflowState::AgentWorking => Event::AgentDone,
        _ => Event::RouteNext,
    }
}

fn new_task(project: &str, task: &str) -> StateMachine {
    let mut ctx = StateContext::new(project.into(), task.into(), "worker task");
    ctx.agent_queue.push("coder".into());
    StateMachine::new(ctx)
}

fn step(machine: &mut StateMachine) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let event = next_event(machine.state());
    machine.apply(event, Some(serde_json::json!({"pid": std::process::id()})))?;
    Ok(())
}

fn save(
    db_path: &str,
    name: &str,
    threads: usize,
    n: usize,
    shared: &str,
) -> Result<String, String> {
    let db = Database::open(db_path).map_err(|e| e.to_string())?;
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let db = db.clone();
            let task = format!("{name}-t{k}");
            let shared = TaskId::new(shared);
            thread::spawn(move || -> Result<(), String> {
                let store = SqliteStateStore::new(db.clone());
                let mut own = new_task("stress", &task);
                for round in 0..n {
                    step(&mut own).map_err(|e| e.to_string())?;
                    store.save_state(own.persisted()).map_err(|e| format!("{task}: {e}"))?;
                    if round % 3 == 0 {
                        db.write(|tx| {
                            let mut machine = match store.load_in(tx, &shared)? {
                                Some(state) => StateMachine::from_persisted(state),
                                None => new_task("stress", shared.as_str()),
                            };
                            step(&mut machine).map_err(|e| {
                                aigentflow::persistence::Error::InvalidInput {
                                    what: "event",
                                    reason: e.to_string().into(),
                                }
                            })?;
                            store.save_in(tx, machine.persisted())
                        })
                        .map_err(|e| format!("shared task: {e}"))?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "a worker thread panicked".to_string())??;
    }
    Ok(format!("ok {name}"))
}

/// THREADS threads each saving TASK N times optimistically (see the module's usage).
fn race(db_path: &str, name: &str, threads: usize, n: usize, task: &str) -> Result<String, String> {
    use aigentflow::persistence::Error;
    let db = Database::open(db_path).map_err(|e| e.to_string())?;
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let store = SqliteStateStore::new(db.clone());
            let task = TaskId::new(task);
            let name = format!("{name}-t{k}");
            thread::spawn(move || -> Result<Vec<String>, String> {
                let mut accepted = Vec::new();
                let mut attempt = 0;
                while accepted.len() < n {
                    attempt += 1;
                    let by = format!("{name}-{attempt}");
                    let mut machine = match store.load_state(&task).map_err(|e| e.to_string())? {
                        Some(state) => StateMachine::from_persisted(state),
                        None => new_task("race", task.as_str()),
                    };
                    let event = next_event(machine.state());
                    machine
                        .apply(event, Some(serde_json::json!({"by": by})))
                        .map_err(|e| e.to_string())?;
                    match store.save_state(machine.persisted()) {
                        Ok(()) => accepted.push(by),
                        Err(
                            Error::StaleSave { .. }
                            | Error::HistoryConflict { .. }
                            | Error::CheckpointConflict { .. },
                        ) => {}
                        Err(e) => return Err(format!("{by}: {e}")),
                    }
                }
                Ok(accepted)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for handle in handles {
        accepted.extend(handle.join().map_err(|_| "a worker thread panicked".to_string())??);
    }
    Ok(format!("ok {}", accepted.join(",")))
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// THREADS threads each append N entries, alone, in batches and beside a state save, at once.
fn audit(db_path: &str, name: &str, threads: usize, n: usize) -> Result<String, Failure> {
    let db = Database::open(db_path)?;
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let db = db.clone();
            let name = format!("{name}-t{k}");
            thread::spawn(move || -> Result<(), Failure> {
                let log = AuditLog::new(db.clone());
                let store = SqliteStateStore::new(db.clone());
                let mut task = new_task("audit", &name);
                let entry = |i: usize| AuditEntry {
                    task_id: Some(name.as_str().into()),
                    details: Some(serde_json::json!({"i": i, "pid": std::process::id()})),
                    ..AuditEntry::new(format!("{name}-{i}"), Category::Agent)
                };
                let (mut i, mut turn) = (0, 0);
                while i < n {
                    let take = (1 + usize::from(turn % 3 != 0)).min(n - i);
                    let entries: Vec<AuditEntry> = (i..i + take).map(entry).collect();
                    match turn % 3 {
                        0 => {
                            log.log(&entries[0])?;
                        }
                        1 => {
                            log.log_batch(&entries)?;
                        }
                        _ => {
                            step(&mut task)?;
                            db.write(|tx| -> Result<(), Failure> {
                                store.save_in(tx, task.persisted())?;
                                log.log_all_in(tx, &entries)?;
                                Ok(())
                            })?;
                        }
                    }
                    i += take;
                    turn += 1;
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "a worker thread panicked")??;
    }
    Ok(format!("ok {name}"))
}

/// The task as stored, or a new one.
fn load_or_new(store: &SqliteStateStore, task: &str) -> Result<StateMachine, Failure> {
    Ok(match store.load_state(&TaskId::new(task))? {
        Some(state) => StateMachine::from_persisted(state),
        None => new_task("crash", task),
    })
}

fn announce(line: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Saves TASK two steps in with a checkpoint, starts a trace, then heartbeats until killed.
fn run(db_path: &str, task: &str) -> Result<String, Failure> {
    let db = Database::open(db_path)?;
    let store = SqliteStateStore::new(db.clone());
    let mut machine = load_or_new(&store, task)?;
    step(&mut machine)?;
    machine.create_checkpoint(vec!["plan.md".into()]);
    step(&mut machine)?;
    store.save_state(machine.persisted())?;
    let tracker = ExecutionTracker::new(db);
    let trace = tracker.start_trace(&"crash".into(), &task.into(), "work until killed")?;
    announce(&format!("trace {}", trace.id))?;
    loop {
        tracker.heartbeat(&trace.id)?;
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Advances TASK and logs an audit entry in one transaction per step, acknowledging each commit.
fn crash(db_path: &str, task: &str) -> Result<String, Failure> {
    let db = Database::open(db_path)?;
    let store = SqliteStateStore::new(db.clone());
    let audit = AuditLog::new(db.clone());
    let mut machine = load_or_new(&store, task)?;
    loop {
        step(&mut machine)?;
        let n = machine.history().len();
        db.write(|tx| -> Result<(), Failure> {
            store.save_in(tx, machine.persisted())?;
            let entry = AuditEntry {
                task_id: Some(task.into()),
                details: Some(serde_json::json!({"transition": n})),
                ..AuditEntry::new("transition", Category::State)
            };
            audit.log_in(tx, &entry)?;
            Ok(())
        })?;
        announce(&format!("acked {n}"))?;
    }
}

/// What `RecoveredRun::reason` says of a run an earlier pass marked.
const MARKED_EARLIER: &str = "marked crashed earlier";

/// One recovery pass started on cue, then a claim on every crashed run it offers.
fn recover(db_path: &str) -> Result<String, Failure> {
    let db = Database::open(db_path)?;
    let tracker = ExecutionTracker::new(db);
    announce("ready")?;
    let mut cue = String::new();
    std::io::stdin().read_line(&mut cue)?;
    let report = tracker.recover(&RecoveryOptions::default())?;
    for run in report.crashed.iter().filter(|r| r.reason != MARKED_EARLIER) {
        announce(&format!("found {}", run.trace.id))?;
    }
    for run in &report.crashed {
        match tracker.resume(&run.trace.id) {
            Ok(trace) => announce(&format!("resumed {}", trace.id))?,
            // Another process claimed it first.
            Err(TrackerError::WrongStatus { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    announce("done")?;
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    Ok("ok recover".into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["open", db] => Database::open(db)
            .and_then(|db| db.schema_version())
            .map(|v| format!("ok {}", v.migration))
            .map_err(|e| e.to_string()),
        ["save", db, name, threads, n, shared] => match (threads.parse(), n.parse()) {
            (Ok(threads), Ok(n)) => save(db, name, threads, n, shared),
            _ => Err(format!("THREADS and N must be numbers, got {threads} {n}")),
        },
        ["race", db, name, threads, n, task] => match (threads.parse(), n.parse()) {
            (Ok(threads), Ok(n)) => race(db, name, threads, n, task),
            _ => Err(format!("THREADS and N must be numbers, got {threads} {n}")),
        },
        ["run", db, task] => run(db, task).map_err(|e| e.to_string()),
        ["crash", db, task] => crash(db, task).map_err(|e| e.to_string()),
        ["recover", db] => recover(db).map_err(|e| e.to_string()),
        ["audit", db, name, threads, n] => match (threads.parse(), n.parse()) {
            (Ok(threads), Ok(n)) => audit(db, name, threads, n).map_err(|e| e.to_string()),
            _ => Err(format!("THREADS and N must be numbers, got {threads} {n}")),
        },
        _ => Err("usage: aigentflow-worker open DB | save DB NAME THREADS N SHARED | race DB NAME THREADS N TASK | run DB TASK | crash DB TASK | audit DB NAME THREADS N | recover DB".into()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aigentflow-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
