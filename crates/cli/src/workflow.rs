//! `workflow …`: workflow definitions as files, loaded into the database, shown as pictures.

use std::path::PathBuf;

use aigentflow_workflows::{read_file, render, WorkflowRef, Workflows};
use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use crate::out::{say, table, when};
use crate::{args, Ctx, Done};

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Check workflow files (YAML, or JSON by extension) without a database: each problem is
    /// printed with its file and its place in it (line and column, or the rule's number). Exit
    /// code 3 if any file has a problem.
    Check {
        /// The files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Load every workflow file of a folder (*.yaml, *.yml, *.json) into the database, in one
    /// transaction: all of them or, on any problem, none. A definition already loaded with the
    /// same content is left as it is; the same name and version with other content is refused
    /// (give the changed definition a new version).
    Load {
        /// The folder, e.g. `workflows`.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The loaded definitions: name, version, digest, when loaded, tasks started under each.
    List,
    /// One loaded definition (its latest version unless NAME@VERSION is given): its rules, or
    /// the file it came from, or a picture of its graph.
    Show {
        /// NAME or NAME@VERSION.
        #[arg(value_name = "NAME[@VERSION]", value_parser = args::name)]
        spec: String,
        /// text: the rules; yaml: the definition as a file; mermaid or dot: the graph (states as
        /// nodes, events as edges, closed states marked).
        #[arg(long, value_enum, default_value = "text")]
        format: ShowFormat,
    },
}

/// How `workflow show` prints a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Text,
    Yaml,
    Mermaid,
    Dot,
}

pub fn run(ctx: &Ctx, command: WorkflowCommand) -> anyhow::Result<Done> {
    match command {
        WorkflowCommand::Check { files } => check(ctx, &files),
        WorkflowCommand::Load { dir } => {
            // Not followed by a read that could wait: a FIFO is no folder either.
            if dir.exists() && !dir.is_dir() {
                anyhow::bail!(
                    "{} is not a folder: `workflow load` loads every workflow file of a folder \
                     (`workflow check FILE` checks one file)",
                    dir.display()
                );
            }
            let db = ctx.write()?;
            let loaded = Workflows::new(db).load_dir(&dir)?;
            let report: Vec<_> = loaded
                .iter()
                .map(|(path, r, l)| json!({"file": path.to_string_lossy(), "name": r.name, "version": r.version, "loaded": l}))
                .collect();
            ctx.out.emit(&report, || {
                for (path, r, l) in &loaded {
                    let what = match l {
                        aigentflow_workflows::Loaded::New => "loaded",
                        aigentflow_workflows::Loaded::Unchanged => "unchanged",
                    };
                    say!("{what:9} {r}  ({})", path.display());
                }
            })?;
            Ok(Done::Ok)
        }
        WorkflowCommand::List => {
            let list = Workflows::new(ctx.read()?).list()?;
            ctx.out.emit(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|w| {
                        vec![
                            w.name.clone(),
                            w.version.to_string(),
                            w.content_hash.chars().take(12).collect(),
                            when(w.loaded_at),
                            w.tasks.to_string(),
                        ]
                    })
                    .collect();
                table(&["WORKFLOW", "VERSION", "DIGEST", "LOADED", "TASKS"], &rows);
            })?;
            Ok(Done::Ok)
        }
        WorkflowCommand::Show { spec, format } => {
            let (name, version) = WorkflowRef::parse_spec(&spec).with_context(|| {
                format!("{spec:?} is not NAME or NAME@VERSION (a version from 1)")
            })?;
            let d = Workflows::new(ctx.read()?)
                .get(&name, version)?
                .ok_or(aigentflow_workflows::Error::NotLoaded { name: name.clone(), version })?;
            match format {
                ShowFormat::Mermaid => lines(&render::mermaid(&d)),
                ShowFormat::Dot => lines(&render::dot(&d)),
                ShowFormat::Yaml => lines(&d.to_yaml()),
                ShowFormat::Text => {
                    let json: serde_json::Value =
                        serde_json::from_str(&d.to_canonical_json()).unwrap_or_default();
                    ctx.out.emit(&json, || {
                        say!("workflow {}@{}", d.name, d.version);
                        if let Some(text) = &d.description {
                            say!("{text}");
                        }
                        if let Some(max) = d.max_retries {
                            say!("retries  at most {max}");
                        }
                        let closed: Vec<&str> = d.table.closed().map(|s| s.as_str()).collect();
                        say!("closed   {}", closed.join(", "));
                        say!();
                        let rows: Vec<Vec<String>> = d
                            .table
                            .rules()
                            .iter()
                            .enumerate()
                            .map(|(i, r)| {
                                vec![
                                    i.to_string(),
                                    match &r.from {
                                        aigentflow_core_states::FromStates::AnyOpen => {
                                            "any open".to_owned()
                                        }
                                        aigentflow_core_states::FromStates::States(s) => s
                                            .iter()
                                            .map(|s| s.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", "),
                                    },
                                    r.event.to_string(),
                                    match &r.to {
                                        aigentflow_core_states::Target::State(s) => s.to_string(),
                                        aigentflow_core_states::Target::CheckpointState => {
                                            "(restored checkpoint)".to_owned()
                                        }
                                    },
                                    r.guard.map(|g| g.to_string()).unwrap_or_default(),
                                ]
                            })
                            .collect();
                        table(&["RULE", "FROM", "EVENT", "TO", "GUARD"], &rows);
                    })?;
                }
            }
            Ok(Done::Ok)
        }
    }
}

/// Prints a picture or a file's text line by line.
pub fn lines(text: &str) {
    for line in text.lines() {
        say!("{line}");
    }
}

/// `workflow check`: every file, each problem on a line of its own.
fn check(ctx: &Ctx, files: &[PathBuf]) -> anyhow::Result<Done> {
    let results: Vec<(String, Result<WorkflowRef, String>)> = files
        .iter()
        .map(|path| {
            let result = read_file(path)
                .map(|d| WorkflowRef { name: d.name, version: d.version })
                .map_err(|e| e.to_string());
            (path.to_string_lossy().into_owned(), result)
        })
        .collect();
    let report: Vec<_> = results
        .iter()
        .map(|(file, r)| match r {
            Ok(w) => json!({"file": file, "ok": true, "name": w.name, "version": w.version}),
            Err(problem) => json!({"file": file, "ok": false, "problem": problem}),
        })
        .collect();
    ctx.out.emit(&report, || {
        for (file, r) in &results {
            match r {
                Ok(w) => say!("ok       {file}: {w}"),
                Err(problem) => say!("problem  {problem}"),
            }
        }
    })?;
    Ok(if results.iter().all(|(_, r)| r.is_ok()) { Done::Ok } else { Done::Problems })
}
