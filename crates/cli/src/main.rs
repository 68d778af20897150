//! `aigentflow`: the operator's command over an aigentflow database.
// A binary exports nothing: the workspace's `unnameable_types` guards the libraries' APIs.
#![allow(unnameable_types)]

mod approvals;
mod args;
mod audit;
mod config;
mod db;
mod demo;
mod lessons;
mod out;
mod tail;
mod tasks;
mod traces;
mod workflow;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use aigentflow_persistence::output::OwnFiles;
use aigentflow_persistence::{Access, Database, Location, Options, DB_ENV, DEFAULT_PATH};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::prelude::*;

use crate::out::Out;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error: a value outside its domain (an empty name, a number out of range, a date outside
     years 0000 to 9999 or in a leap second…), an unknown id, a missing, unreadable, locked or
     full database…
  2  usage error: an unknown command or flag, a missing value, a value of the wrong kind (not a
     number, not one of the listed words)
  3  a check found problems (`audit verify`, `db check`)
A closed stdout (`… | head -1`) does not stop a command: it finishes its work, prints nothing
more, and ends with its own exit code; any other failure to write stdout (a full disk) is exit
code 1 once the work is done.
On 1 and 2, one line on stderr says what, with secrets redacted. A write past the file size
limit (`ulimit -f`) is such an error too, not a kill by SIGXFSZ. Ctrl-C or SIGTERM before a
command has finished removes the file it was writing (its temporary file, or the new file it
already put in place, e.g. a copy being verified), then ends the command by that signal
(`audit tail --follow` ends with 0). A file it replaced is not brought back.

If stdout or stderr is one of the database's own files (`2<>app.db`, `>> app.db-wal`), the
command does nothing and exits 1; its error line goes to the other stream if that one is not the
database, else nowhere.

The database is --db PATH, else $AIGENTFLOW_DB (if set and not empty), else
orchestrator-data/aigentflow.db: a SQLite file, or a postgres:// URL; `:memory:`, an empty
path, a directory and a device, FIFO or socket are refused.

Output for people is sanitised: control characters (newlines and tabs in a value too), DEL, C1
controls and bidirectional overrides in any value or error are shown escaped, as \\u{1b}.
--json and exports print values as stored (JSON escapes control characters itself).
Colours only on a terminal: NO_COLOR turns them off, CLICOLOR_FORCE=1 keeps them on in a pipe.";

/// The heading under which `--help` lists the options every command takes.
const GLOBAL: &str = "Global options";

/// The aigentflow orchestrator's persistence: inspect and maintain its database from a shell.
#[derive(Debug, Parser)]
#[command(name = "aigentflow", version, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// The database [default: $AIGENTFLOW_DB if set and not empty, else
    /// orchestrator-data/aigentflow.db]: a SQLite file's path (`:memory:`, an empty path, a
    /// directory and a device, FIFO or socket are refused), or a PostgreSQL database's
    /// `postgres://` or `postgresql://` URL.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::OsStringValueParser::new(),
            PathBuf::from
        ),
        help_heading = GLOBAL
    )]
    db: Option<PathBuf>,
    /// How long to wait for another process's lock on the database before giving up (SQLite's
    /// write lock; on PostgreSQL any row, table or advisory lock a write needs, at least 1 ms):
    /// 0 to 3600 seconds, fractions allowed.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value = "30",
        value_parser = args::seconds,
        allow_negative_numbers = true,
        help_heading = GLOBAL
    )]
    lock_timeout: Duration,
    /// Print JSON on stdout instead of tables, for scripts.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// Log what the library does on stderr (-v info, also writes that waited long on another
    /// writer; -vv debug).
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
    /// A new database is refused while a `-wal` or `-journal` is at its name (a crashed
    /// database's last writes, which SQLite would discard or apply to the new file).
    Init,
    /// Path, schema, every migration set (core and each program's own) with its version, size,
    /// rows per table, tasks per state, traces per status, audit chain head.
    Status,
    /// Drive a demo orchestration through the real stores and print what it wrote.
    Demo,
    /// Workflow tasks: their states, histories and checkpoints.
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// The append-only, hash-chained audit log.
    #[command(subcommand)]
    Audit(Box<audit::AuditCommand>),
    /// Lessons learned, with full-text search.
    #[command(subcommand)]
    Lessons(lessons::LessonsCommand),
    /// Execution traces, agent invocations, metrics and crash recovery.
    #[command(subcommand)]
    Traces(traces::TracesCommand),
    /// Approval requests waiting for a person, and their decisions.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Workflow definitions: versioned files, loaded into the database, shown as pictures.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
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
    /// How long an open or a transaction waits for another process's lock.
    pub lock_timeout: Duration,
}

impl Ctx {
    /// The path as JSON text (JSON holds no bytes that are not UTF-8: those show as U+FFFD),
    /// the same text serde writes for any other path.
    pub fn path_text(&self) -> String {
        match Location::parse(&self.path) {
            Ok(Location::Server(url)) => aigentflow_persistence::display_url(&url),
            Ok(Location::File(path)) => path.to_string_lossy().into_owned(),
            Err(_) => self.path.to_string_lossy().into_owned(),
        }
    }

    /// The database as people read it: the path, or a server URL without its password.
    pub fn shown(&self) -> String {
        match Location::parse(&self.path) {
            Ok(location) => location.shown(),
            Err(_) => self.path.display().to_string(),
        }
    }

    /// Opens the database for a read command: read-only, so nothing is written, sealed, migrated
    /// or created; a missing, empty or outdated database is an error that says what to do.
    pub fn read(&self) -> anyhow::Result<Database> {
        self.open(Access::ReadOnly)
    }

    /// Opens the database read-only at whatever schema it is at, to copy it whole (`db backup`,
    /// which an operator runs before `db migrate`).
    pub fn snapshot(&self) -> anyhow::Result<Database> {
        self.open(Access::Snapshot)
    }

    /// Opens an existing database for a command that writes (migrating it if needed).
    pub fn write(&self) -> anyhow::Result<Database> {
        self.open(Access::ReadWrite)
    }

    /// Opens the database, creating it if missing: `init` and `demo` only.
    pub fn create(&self) -> anyhow::Result<Database> {
        self.open(Access::Create)
    }

    /// [`create`](Self::create), refusing a file path that is a symlink when it opens it.
    pub fn create_at_no_link(&self) -> anyhow::Result<Database> {
        self.open_with(Access::Create, false)
    }

    /// Whether the database is a PostgreSQL server's, named by URL.
    fn is_server(&self) -> bool {
        self.path.to_str().is_some_and(aigentflow_persistence::is_postgres_url)
    }

    fn open(&self, access: Access) -> anyhow::Result<Database> {
        self.open_with(access, true)
    }

    fn open_with(&self, access: Access, follow_link: bool) -> anyhow::Result<Database> {
        let options =
            Options { access, busy_timeout: self.lock_timeout, follow_link, ..Options::default() };
        match Database::open_with(&self.path, options) {
            Err(aigentflow_persistence::Error::Missing { path }) => anyhow::bail!(
                "no database at {}; create one with `aigentflow init` or `aigentflow demo` (or pass --db PATH)",
                path.display()
            ),
            // A server's database is made by its administrator (`createdb`) and starts with no
            // tables: to the command that is a database not created yet, as a missing file is.
            Err(aigentflow_persistence::Error::Outdated { path, found: 0, .. })
                if self.is_server() =>
            {
                anyhow::bail!(
                    "database {} holds no aigentflow tables yet; create them with `aigentflow init` or `aigentflow demo`",
                    path.display()
                )
            }
            other => Ok(other?),
        }
    }
}

/// The database path from --db, else $AIGENTFLOW_DB (unset when empty), else the default; a
/// path that names no file (empty, `:memory:`) is refused, naming where it came from.
fn database_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let (path, source) = match flag {
        Some(path) => (path, "--db"),
        None => match std::env::var_os(DB_ENV).filter(|v| !v.is_empty()) {
            Some(path) => (PathBuf::from(path), "$AIGENTFLOW_DB"),
            None => return Ok(PathBuf::from(DEFAULT_PATH)),
        },
    };
    if path.as_os_str().is_empty() {
        anyhow::bail!("{source} is empty; give the path of a database file");
    }
    let file = match Location::parse(&path) {
        Ok(Location::File(file)) => file,
        Ok(Location::Server(_)) => return Ok(path),
        Err(e) => anyhow::bail!("{source}: {e}"),
    };
    if file.as_os_str() == ":memory:" {
        anyhow::bail!(
            "{source} is :memory:, a database that would vanish when the command ends; give the path of a database file"
        );
    }
    Ok(file)
}

/// The database paths the command line may name, read before clap parses it (clap prints help
/// and usage errors itself): the value of every `--db` before a `--`, else what
/// [`database_path`] would take without the flag.
fn database_paths_before_parsing(args: &[OsString]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            break;
        } else if bytes == b"--db" {
            paths.extend(rest.next().map(PathBuf::from));
        } else if let Some(value) = bytes.strip_prefix(b"--db=") {
            paths.push(PathBuf::from(OsStr::from_bytes(value)));
        }
    }
    if paths.is_empty() {
        paths.extend(database_path(None).ok());
    }
    // The files they name (`sqlite:PATH` is PATH); a server has no file to guard.
    paths
        .into_iter()
        .filter_map(|p| match Location::parse(&p) {
            Ok(Location::File(file)) => Some(file),
            Ok(Location::Server(_)) => None,
            Err(_) => Some(p),
        })
        .collect()
}

/// Refuses to run when stdout or stderr is one of the database's own files (`aigentflow …
/// 2<>app.db`, `>> app.db-wal`), found by device and inode as the output rule finds them:
/// anything written there, an error line included, would overwrite the database. Nothing is
/// done; the error goes to whichever of the two is not the database, or nowhere.
fn refuse_streams_on_the_database(paths: &[PathBuf]) -> Result<(), ExitCode> {
    for path in paths.iter().filter(|p| !p.as_os_str().is_empty()) {
        let (stdout, stderr) = out::streams_among(&OwnFiles::of(path));
        let (stream, file) = match (&stdout, &stderr) {
            (None, None) => continue,
            (Some(file), None) => ("stdout", file),
            (None, Some(file)) => ("stderr", file),
            (Some(file), Some(_)) => ("stdout and stderr", file),
        };
        let message = format!(
            "{stream} is the database's own file {}; nothing was done, since anything written there would overwrite the database: send it elsewhere",
            file.display()
        );
        match (stdout, stderr) {
            (_, None) => print_error(&message),
            (None, Some(_)) => print_error_on_stdout(&message),
            (Some(_), Some(_)) => {}
        }
        return Err(ExitCode::FAILURE);
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<Done> {
    let ctx = Ctx {
        path: database_path(cli.db)?,
        out: Out::new(cli.json, cli.quiet),
        lock_timeout: cli.lock_timeout,
    };
    match cli.command {
        Command::Init => db::init(&ctx),
        Command::Status => db::status(&ctx),
        Command::Demo => demo::run(&ctx),
        Command::Tasks(c) => tasks::run(&ctx, c),
        Command::Audit(c) => audit::run(&ctx, *c),
        Command::Lessons(c) => lessons::run(&ctx, c),
        Command::Traces(c) => traces::run(&ctx, c),
        Command::Approvals(c) => approvals::run(&ctx, c),
        Command::Workflow(command) => workflow::run(&ctx, command),
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
    message
}

/// Prints an error as the one line `aigentflow: error: …` on stderr: secrets redacted by the
/// stores' policy, then every unsafe character escaped (so a line break in a value stays on
/// the line).
fn print_error(message: &str) {
    let redacted = aigentflow_persistence::redact::redact_text(message);
    out::eprint_line(&format!("aigentflow: error: {redacted}"));
}

/// [`print_error`] on stdout, for when stderr is the database's own file.
fn print_error_on_stdout(message: &str) {
    let redacted = aigentflow_persistence::redact::redact_text(message);
    out::print_line_on_stdout(&format!("aigentflow: error: {redacted}"));
}

/// What clap refused, on one line: its message, its notes, and (for a usage error) the usage
/// of the command. The message is redacted as clap wrote it, lines and all, before its lines
/// are joined: a value spread over lines is read as written, not as the joined line.
fn usage_line(e: &clap::Error, with_usage: bool) -> String {
    let rendered = e.render().to_string();
    let text = aigentflow_persistence::redact::redact_text(&rendered);
    let mut parts = Vec::new();
    let mut usage = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u);
        } else if !line.starts_with("For more information") {
            parts.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let mut message = String::new();
    for part in parts {
        if !message.is_empty() {
            // "…were not provided:" reads on into its list.
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(part);
    }
    if let Some(usage) = usage.filter(|_| with_usage) {
        message.push_str(&format!("; usage: {usage} (more with --help)"));
    }
    message
}

/// The command tree, with a missing subcommand reported as an error (one line) rather than by
/// printing the whole help on stderr.
fn command_tree(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    let mut cmd = cmd.arg_required_else_help(false);
    for name in names {
        cmd = cmd.mut_subcommand(name, command_tree);
    }
    cmd
}

/// Parses the command line. Help and version are printed on stdout with exit code 0; a value
/// outside its domain ([`args`]) is one line on stderr and exit code 1; anything else clap
/// refuses is one line with the command's usage and exit code 2.
fn parse() -> Result<Cli, ExitCode> {
    let parsed = command_tree(Cli::command())
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    match parsed {
        Ok(cli) => Ok(cli),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            // A closed pipe (`aigentflow --help | head -1`) is not an error.
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) if args::is_out_of_domain(&e) => {
            print_error(&usage_line(&e, false));
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            print_error(&usage_line(&e, true));
            Err(ExitCode::from(2))
        }
    }
}

/// A log event, written as one sanitised line on stderr when tracing is done with it.
#[derive(Debug, Default)]
struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let text = String::from_utf8_lossy(&self.0);
            out::eprint_line(text.strip_suffix('\n').unwrap_or(&text));
        }
    }
}

/// On Ctrl-C or SIGTERM, removes the temporary files of the outputs not yet committed (an
/// export, a backup, a copy into a new file: `output::remove_unfinished`), and the new files
/// the command put in place before it finished (`output::hold_placed`), then ends by the
/// signal as it would have (a shell running it in a loop or script sees the signal, and stops
/// too). Without it the process dies where it stands and leaves them for the next output in
/// their folder to find.
fn remove_outputs_on_interrupt() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else { return };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let held = aigentflow_persistence::output::remove_unfinished();
            // The command finished just before the signal: its exit code follows at once.
            if held.command_finished() {
                return;
            }
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    });
}

fn main() -> ExitCode {
    // A write past `ulimit -f` raises SIGXFSZ, whose default action kills the process without a
    // word and leaves its temporary files. With a handler the write fails with EFBIG instead,
    // and the error path runs: one line, the temporary file removed, exit code 1. (A handler,
    // unlike ignoring the signal, is not inherited by programs this one starts.)
    let _ =
        signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::new(AtomicBool::new(false)));
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Err(code) = refuse_streams_on_the_database(&database_paths_before_parsing(&args)) {
        return code;
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // `audit tail` ends on a signal in its own way, with exit code 0.
    if !matches!(&cli.command, Command::Audit(c) if matches!(**c, audit::AuditCommand::Tail { .. }))
    {
        remove_outputs_on_interrupt();
        // Until the command has finished, a signal removes the new files it already put in
        // place too (a copy being verified): an interrupted command leaves no output.
        aigentflow_persistence::output::hold_placed();
    }
    if let Ok(path) = database_path(cli.db.clone()) {
        if let Err(code) = refuse_streams_on_the_database(&[path]) {
            return code;
        }
    }
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing_subscriber::filter::LevelFilter::ERROR,
        (_, 0) => tracing_subscriber::filter::LevelFilter::WARN,
        (_, 1) => tracing_subscriber::filter::LevelFilter::INFO,
        _ => tracing_subscriber::filter::LevelFilter::DEBUG,
    };
    // Log lines are sanitised like every other line, so they carry no colour codes of their own.
    // A slow transaction of this command is a diagnostic (-v): by default an error stays the one
    // line on stderr, and a run that waited on a busy machine prints nothing extra.
    let slow_shown = cli.verbose > 0;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(LogLine::default)
        .with_ansi(false)
        .without_time()
        .with_filter(level)
        .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
            slow_shown || meta.target() != aigentflow_persistence::SLOW_TARGET
        }));
    tracing_subscriber::registry().with(layer).init();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    aigentflow_persistence::output::release_placed();
    let ran = ran.unwrap_or_else(|payload| std::panic::resume_unwind(payload));
    // A failed write to stdout did not stop the command (see `out::write_stdout`): it ends by
    // it now that its work is done. A closed pipe keeps the command's own exit code; any other
    // failure, said on stderr when it happened, is exit code 1.
    let code = match ran {
        Ok(Done::Ok) => 0,
        Ok(Done::Problems) => 3,
        Err(e) => {
            // A stream written straight to stdout (an export to `-`) whose reader went away: a
            // read cut short by its reader, not an error.
            let closed_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if closed_pipe {
                0
            } else {
                print_error(&one_line(&e));
                1
            }
        }
    };
    match out::stdout_failed() {
        Some(failed) if !failed.closed => ExitCode::FAILURE,
        _ => ExitCode::from(code),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Nothing prints around the sanitising choke points: no module but `out.rs` uses the print
    /// macros or stderr. (Exports write their CSV or JSON to stdout as data, byte for byte.)
    #[test]
    fn no_module_prints_around_the_sanitising_choke_points() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        for entry in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.file_name().is_some_and(|n| n == "out.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
            // Written with a '#' that is taken out, so that this very line does not match.
            let bypass = ["print#!(", "print#ln!(", "eprint#!(", "eprint#ln!(", "io::std#err("]
                .map(|m| m.replace('#', ""));
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if bypass.iter().any(|m| code.contains(m.as_str())) {
                    offenders.push(format!("{}:{}: {line}", path.display(), i + 1));
                }
            }
        }
        assert!(offenders.is_empty(), "print through out.rs instead:\n{}", offenders.join("\n"));
    }

    /// Every `--db` the command line holds, in both spellings and anywhere before `--`, is a
    /// path whose files stdout and stderr are checked against before clap prints anything.
    #[test]
    fn every_db_flag_on_the_command_line_is_found_before_parsing() {
        let paths = |args: &[&str]| {
            let args: Vec<std::ffi::OsString> =
                std::iter::once("aigentflow").chain(args.iter().copied()).map(Into::into).collect();
            super::database_paths_before_parsing(&args)
        };
        let p = |names: &[&str]| names.iter().map(std::path::PathBuf::from).collect::<Vec<_>>();
        assert_eq!(paths(&["--db", "a.db", "status"]), p(&["a.db"]));
        assert_eq!(paths(&["status", "--db=b.db"]), p(&["b.db"]));
        assert_eq!(
            paths(&["--db", "a.db", "audit", "export", "--db", "c d.db"]),
            p(&["a.db", "c d.db"])
        );
        assert_eq!(paths(&["--db", "--help"]), p(&["--help"]));
        assert_eq!(paths(&["--db=", "init"]), p(&[""]));
        // After `--` a `--db` is a positional value, not the flag.
        let default = paths(&[]);
        assert_eq!(paths(&["db", "backup", "--", "--db", "x.db"]), default);
        assert_eq!(paths(&["--json", "status"]), default);
    }

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
