//! `tasks …`: workflow states, histories and checkpoints; a task's execution exported as a
//! bundle and imported into another database.

use std::io::BufRead;
use std::path::PathBuf;

use aigentflow_bundle::Outcome;
use aigentflow_core_states::{ProjectId, TaskId, WorkflowState};
use aigentflow_persistence::{Output, SqliteStateStore};
use aigentflow_workflows::{render, Workflows};
use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

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
    /// Write tasks' whole executions as one JSON Lines bundle, for `tasks import` into another
    /// database (SQLite or PostgreSQL): each task's state, history, checkpoints, approval
    /// requests, traces with their agent invocations, and its audit entries with their chain
    /// hashes. Read in one snapshot; the database is opened read-only.
    Export {
        /// The tasks to export (each once, in this order; not empty).
        #[arg(required = true, value_parser = args::id::<TaskId>)]
        tasks: Vec<TaskId>,
        /// Write to FILE; `-` (stdout) or a pipe is written straight through, as a FIFO,
        /// terminal or device is. Any other FILE must be new: it is written beside itself and
        /// put in place only once complete, with mode 0600 (an existing file is refused, never
        /// replaced). The database's own files are refused by any name.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Sign the bundle with the Ed25519 secret key in KEYFILE (made by `audit keygen`): a
        /// last line signs every byte before it, so that `tasks import --pubkey KEYFILE.pub`
        /// refuses a bundle changed since or made by anyone else. A key file that other users
        /// can read or write is refused: fix it with `chmod 600`.
        #[arg(long, value_name = "KEYFILE")]
        sign: Option<PathBuf>,
    },
    /// Load a bundle written by `tasks export` into this database, in one transaction: all of
    /// it or nothing.
    ///
    /// Every line is checked first; a malformed or truncated bundle, or an audit row whose hash
    /// does not follow from its fields, is refused naming its line, and so is an audit row that
    /// claims to be a row this database holds or imported before but differs from it. A
    /// signed bundle's signature is checked against the key it names; only with --pubkey is
    /// that key held against one you trust: without it, whoever can write a bundle can make
    /// one up whole. Ids are kept (transitions and invocations are numbered by this database). A
    /// task already here with the same content is left as it is ("already present"); one here
    /// with other content is refused, naming it. Audit entries are appended to this database's
    /// chain with their original id, hash and source as provenance, so `audit verify` passes
    /// here and each row can be matched to the source's; an entry already here is not added
    /// again, so a second import changes nothing. Every text is redacted on its way in.
    Import {
        /// The bundle (`-` is stdin).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Import only a bundle signed by the key in PUBFILE (the `.pub` file `audit keygen`
        /// made beside the exporter's KEYFILE): an unsigned bundle, one signed by another key
        /// or changed since it was signed is refused, and nothing is written.
        #[arg(long, value_name = "PUBFILE")]
        pubkey: Option<PathBuf>,
    },
}

/// How `tasks show` prints a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    Text,
    Mermaid,
}

pub fn run(ctx: &Ctx, command: TasksCommand) -> anyhow::Result<Done> {
    let command = match command {
        TasksCommand::Export { tasks, output, sign } => {
            return export(ctx, &tasks, &output, sign.as_deref())
        }
        TasksCommand::Import { file, pubkey } => return import(ctx, &file, pubkey.as_deref()),
        other => other,
    };
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
                crate::workflow::lines(&render::task_mermaid(
                    &definition,
                    &state.history,
                    &state.state,
                ));
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
        TasksCommand::Export { .. } | TasksCommand::Import { .. } => {}
    }
    Ok(Done::Ok)
}

/// `tasks export`: the bundle through the one output rule, as `audit export` writes.
fn export(
    ctx: &Ctx,
    tasks: &[TaskId],
    path: &std::path::Path,
    sign: Option<&std::path::Path>,
) -> anyhow::Result<Done> {
    // The key first: a key refused leaves no file behind.
    let key = sign.map(crate::audit::read_signing_key).transpose()?;
    let db = ctx.read()?;
    let mut out = Output::open_new(path, Some(&db))?;
    ctx.out.note_leftovers(out.leftovers());
    // Returning early drops `out`, which removes its temporary file.
    let report = aigentflow_bundle::export_signed(&db, tasks, &mut out, key.as_ref())?;
    let to_stdout = out.is_stdout();
    out.commit()?;
    // Nothing else goes where the bundle went.
    if !to_stdout {
        ctx.out.emit(
            &json!({"file": path.to_string_lossy(), "tasks": report.tasks, "records": report.records, "signed": key.is_some()}),
            || {
                say!(
                    "exported {} task(s), {} records, to {}{}",
                    report.tasks.len(),
                    report.records,
                    path.display(),
                    if key.is_some() { ", signed" } else { "" }
                )
            },
        )?;
    }
    Ok(Done::Ok)
}

/// `tasks import`: the whole bundle read and checked, then written in one transaction.
fn import(
    ctx: &Ctx,
    path: &std::path::Path,
    pubkey: Option<&std::path::Path>,
) -> anyhow::Result<Done> {
    let trusted = pubkey.map(crate::audit::read_public_key).transpose()?;
    let mut input: Box<dyn BufRead> = if path.as_os_str() == Output::STDOUT {
        Box::new(std::io::stdin().lock())
    } else {
        let file = aigentflow_persistence::open_input(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let bundle = aigentflow_bundle::read_bundle(&mut input)
        .with_context(|| format!("cannot import {}", path.display()))?;
    if let Some(key) = &trusted {
        bundle.check_signer(key).with_context(|| format!("cannot import {}", path.display()))?;
    }
    let db = ctx.write()?;
    let report = aigentflow_bundle::import_bundle(&db, &bundle)?;
    ctx.out.emit(&report, || {
        for t in &report.tasks {
            match t.outcome {
                Outcome::Imported => say!("imported task {}", t.task_id),
                Outcome::AlreadyPresent => say!("task {} already present", t.task_id),
            }
        }
        say!(
            "audit entries: {} appended, {} already present (from {})",
            report.audit_appended,
            report.audit_already_present,
            report.source
        );
        match (&report.signed_by, &trusted) {
            (Some(_), Some(_)) => say!("signed by the key given"),
            (Some(key), None) => {
                say!("signed by key {:.16}… (not held against a key: see --pubkey)", key)
            }
            (None, _) => say!("unsigned"),
        }
    })?;
    Ok(Done::Ok)
}
