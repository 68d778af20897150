//! `tasks …`: workflow states, histories and checkpoints.

use aigentflow_core_states::{ProjectId, TaskId, WorkflowState};
use aigentflow_persistence::SqliteStateStore;
use aigentflow_workflows::{render, Workflows};
use clap::Subcommand;

use crate::out::{cell, opt, say, table, when};
use crate::{args, Ctx, Done};

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// One line per task, most recently updated first.
    List {
        /// Only this project's tasks (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
        /// Only tasks in this state (e.g. BUILDING; not empty).
        #[arg(long, value_parser = args::name)]
        state: Option<String>,
    },
    /// A task's state, prompt, workflow, history and checkpoints; or, with `--format mermaid`,
    /// the path it took over its workflow's graph (the edges it took highlighted, with how many
    /// times each, so a test/fix loop shows its count).
    Show {
        /// The task id (not empty).
        #[arg(value_parser = args::id::<TaskId>)]
        task: TaskId,
        /// text: the task; mermaid: its path over its workflow's graph.
        #[arg(long, value_enum, default_value = "text")]
        format: ShowFormat,
    },
    /// Tasks that can be resumed (not completed, aborted or escalated), with their latest checkpoint.
    Resumable {
        /// Only this project's tasks (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
    },
}

/// How `tasks show` prints a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    Text,
    Mermaid,
}

pub fn run(ctx: &Ctx, command: TasksCommand) -> anyhow::Result<Done> {
    let db = ctx.read()?;
    let store = SqliteStateStore::new(db.clone());
    match command {
        TasksCommand::List { project, state } => {
            let state = state.map(|s| WorkflowState::parse(&s.to_uppercase()));
            if let Some(s) = state.as_ref().filter(|s| !s.is_known()) {
                ctx.out.note(&format!(
                    "note: {s} is not a state of the workflow graph (a legacy database may still hold it)"
                ));
            }
            let tasks = store.summaries(project.as_ref(), state.as_ref())?;
            ctx.out.emit(&tasks, || {
                let rows: Vec<Vec<String>> = tasks
                    .iter()
                    .map(|t| {
                        vec![
                            t.task_id.to_string(),
                            t.project_id.to_string(),
                            t.state.to_string(),
                            t.transitions.to_string(),
                            t.checkpoints.to_string(),
                            when(t.updated_at),
                        ]
                    })
                    .collect();
                table(
                    &["TASK", "PROJECT", "STATE", "TRANSITIONS", "CHECKPOINTS", "UPDATED"],
                    &rows,
                );
            })?;
        }
        TasksCommand::Show { task, format } => {
            let workflows = Workflows::new(db);
            let (state, definition) = match workflows.load_task(&task) {
                Err(aigentflow_workflows::Error::UnknownTask { .. }) => {
                    anyhow::bail!("task {task} not found (see `aigentflow tasks list`)")
                }
                other => other?,
            };
            if format == ShowFormat::Mermaid {
                crate::workflow::lines(&render::task_mermaid(&definition, &state.history));
                return Ok(Done::Ok);
            }
            let bound = workflows.definition_of(&task)?;
            ctx.out.emit(&state, || {
                say!("task     {}", state.task_id);
                say!("project  {}", state.project_id);
                say!("state    {}", state.state);
                match &bound {
                    Some(w) => say!("workflow {w}"),
                    None => {
                        say!("workflow {}@{} (compiled in)", definition.name, definition.version)
                    }
                }
                say!("prompt   {}", cell(&state.context.prompt, 100));
                say!("retries  {} of {}", state.context.retry_count, state.context.max_retries);
                say!();
                let rows: Vec<Vec<String>> = state
                    .history
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        vec![
                            (i + 1).to_string(),
                            when(t.timestamp),
                            t.from.to_string(),
                            t.event.to_string(),
                            t.to.to_string(),
                        ]
                    })
                    .collect();
                table(&["#", "AT", "FROM", "EVENT", "TO"], &rows);
                say!();
                let rows: Vec<Vec<String>> = state
                    .context
                    .checkpoints
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_string(),
                            when(c.timestamp),
                            c.state.to_string(),
                            c.artifacts.join(", "),
                        ]
                    })
                    .collect();
                table(&["CHECKPOINT", "AT", "STATE", "ARTIFACTS"], &rows);
            })?;
        }
        TasksCommand::Resumable { project } => {
            let tasks = store.resumable(project.as_ref())?;
            ctx.out.emit(&tasks, || {
                let rows: Vec<Vec<String>> = tasks
                    .iter()
                    .map(|t| {
                        vec![
                            t.task_id.to_string(),
                            t.project_id.to_string(),
                            t.state.to_string(),
                            opt(t
                                .latest_checkpoint
                                .as_ref()
                                .map(|c| format!("{} ({})", c.id, c.state))),
                            when(t.updated_at),
                        ]
                    })
                    .collect();
                table(&["TASK", "PROJECT", "STATE", "LATEST CHECKPOINT", "UPDATED"], &rows);
            })?;
        }
    }
    Ok(Done::Ok)
}
