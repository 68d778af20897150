//! `aigentflow`: the operator's command over an aigentflow database.

mod audit;
mod config;
mod db;
mod demo;
mod lessons;
mod out;
mod tasks;
mod traces;

use std::path::PathBuf;
use std::process::ExitCode;

use aigentflow_persistence::{Access, Database, Options};
use clap::{ArgAction, Parser, Subcommand};

use crate::out::Out;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (bad input, unknown id, unreadable or missing database…); one line on stderr says what
  2  usage error (unknown command or flag)
  3  a check found problems (`audit verify`, `db check`)

The database is --db PATH, else $AIGENTFLOW_DB, else orchestrator-data/aigentflow.db.
Set NO_COLOR to turn colours off.";

/// The heading under which `--help` lists the options every command takes.
const GLOBAL: &str = "Global options";

/// The aigentflow orchestrator's persistence: inspect and maintain its database from a shell.
#[derive(Debug, Parser)]
#[command(name = "aigentflow", version, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// The database file.
    #[arg(long, global = true, value_name = "PATH", env = "AIGENTFLOW_DB", help_heading = GLOBAL)]
    db: Option<PathBuf>,
    /// Print JSON on stdout instead of tables, for scripts.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// Log what the library does on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = GLOBAL)]
    verbose: u8,
    /// Print only results and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database, or migrate it to this build's schema; print its path and version.
    Init,
    /// Path, schema, size, rows per table, tasks per state, traces per status, audit chain head.
    Status,
    /// Drive a demo orchestration through the real stores and print what it wrote.
    Demo,
    /// Workflow tasks: their states, histories and checkpoints.
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// The append-only, hash-chained audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Lessons learned, with full-text search.
    #[command(subcommand)]
    Lessons(lessons::LessonsCommand),
    /// Execution traces, agent invocations, metrics and crash recovery.
    #[command(subcommand)]
    Traces(traces::TracesCommand),
    /// Configuration values, global or per project.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Integrity checks, backups and migrations of the database file.
    #[command(subcommand)]
    Db(db::DbCommand),
}

/// A command's outcome: success, or problems found by a check.
#[derive(Debug)]
pub enum Done {
    Ok,
    Problems,
}

/// Where the database is and how to open it.
#[derive(Debug)]
pub struct Ctx {
    pub path: PathBuf,
    pub out: Out,
}

impl Ctx {
    /// Opens the database for a read command: read-only, so nothing is written, sealed, migrated
    /// or created; a missing, empty or outdated database is an error that says what to do.
    pub fn read(&self) -> anyhow::Result<Database> {
        self.open(Access::ReadOnly)
    }

    /// Opens an existing database for a command that writes (migrating it if needed).
    pub fn write(&self) -> anyhow::Result<Database> {
        self.open(Access::ReadWrite)
    }

    /// Opens the database, creating it if missing: `init` and `demo` only.
    pub fn create(&self) -> anyhow::Result<Database> {
        self.open(Access::Create)
    }

    fn open(&self, access: Access) -> anyhow::Result<Database> {
        let options = Options { access, ..Options::default() };
        match Database::open_with(&self.path, options) {
            Err(aigentflow_persistence::Error::Missing { path }) => anyhow::bail!(
                "no database at {}; create one with `aigentflow init` or `aigentflow demo` (or pass --db PATH)",
                path.display()
            ),
            other => Ok(other?),
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Done> {
    let ctx = Ctx {
        path: cli.db.clone().unwrap_or_else(Database::default_path),
        out: Out::new(cli.json, cli.quiet),
    };
    match cli.command {
        Command::Init => db::init(&ctx),
        Command::Status => db::status(&ctx),
        Command::Demo => demo::run(&ctx),
        Command::Tasks(c) => tasks::run(&ctx, c),
        Command::Audit(c) => audit::run(&ctx, c),
        Command::Lessons(c) => lessons::run(&ctx, c),
        Command::Traces(c) => traces::run(&ctx, c),
        Command::Config(c) => config::run(&ctx, c),
        Command::Db(c) => db::run(&ctx, c),
    }
}

/// The error and its causes on one line, leaving out a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message.replace('\n', " ")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing_subscriber::filter::LevelFilter::ERROR,
        (_, 0) => tracing_subscriber::filter::LevelFilter::WARN,
        (_, 1) => tracing_subscriber::filter::LevelFilter::INFO,
        _ => tracing_subscriber::filter::LevelFilter::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(out::color_on_stderr())
        .without_time()
        .init();
    match run(cli) {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::Problems) => ExitCode::from(3),
        Err(e) => {
            let closed_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if closed_pipe {
                return ExitCode::SUCCESS;
            }
            let message = one_line(&e);
            eprintln!("aigentflow: error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and every option of every command, at every level, says what it is for.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() {
                missing.push(format!("{path} (command)"));
            }
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "aigentflow", &mut missing);
        assert!(missing.is_empty(), "no help for:\n{}", missing.join("\n"));
    }
}
