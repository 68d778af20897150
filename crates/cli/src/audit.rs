//! `audit …`: append, query, summarise, export, follow (`tail.rs`) and verify the audit log.

use std::path::PathBuf;

use aigentflow_audit::{
    Actor, AuditEntry, AuditLog, AuditQuery, Category, ChainHead, Changes, ExportFormat,
    ExportOptions, Outcome, Severity, Target,
};
use aigentflow_core_states::{ProjectId, TaskId};
use aigentflow_persistence::Output;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::out::{cell, opt, say, table, when};
use crate::{args, Ctx, Done};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Append an entry (for scripts and hooks); prints its id.
    Log {
        /// What happened, e.g. "file_written" (not empty; redacted before it is written).
        #[arg(long, value_parser = args::name)]
        action: String,
        /// What the entry is about: state, file, agent, security, user, or one of the audit
        /// event categories authentication, authorization, orchestration, agent_execution,
        /// file_operation, git_operation, external_call, user_action, system_event,
        /// security_event, compliance_event, error_event. Other text is kept as it is.
        #[arg(long, value_parser = parse_category)]
        category: Category,
        /// The project the entry belongs to (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
        /// The task the entry belongs to (not empty).
        #[arg(long, value_parser = args::id::<TaskId>)]
        task: Option<TaskId>,
        /// The agent that acted (not empty).
        #[arg(long, value_parser = args::name)]
        agent: Option<String>,
        /// A JSON value (redacted before it is written). Text that is not JSON, or a number
        /// JSON would store rounded (past 64 bits, more digits than a double holds: write it
        /// as a string), is refused without being repeated.
        #[arg(long)]
        details: Option<String>,
        /// The user on whose behalf it happened (not empty).
        #[arg(long, value_parser = args::name)]
        user: Option<String>,
        /// The address the request came from (not empty).
        #[arg(long, value_parser = args::name)]
        ip: Option<String>,
        #[command(flatten)]
        event: EventArgs,
    },
    /// Entries matching the filters, newest first.
    Query {
        #[command(flatten)]
        filters: Filters,
        /// At most this many entries: any whole number from 0 (past 2^63 - 1 it means all).
        #[arg(long, default_value_t = 50, value_parser = args::count, allow_negative_numbers = true)]
        limit: u64,
        /// Skip this many entries first: any whole number from 0 (past the entries there
        /// are, none is left).
        #[arg(long, value_parser = args::count, allow_negative_numbers = true)]
        offset: Option<u64>,
    },
    /// Statistics of the entries matching the filters (e.g. a window with --start and --end):
    /// how many, per category, severity, outcome and day (UTC), the actors with the most
    /// entries, and the error rate (entries whose outcome is failure or that carry an error).
    /// An entry without an actor counts for its agent, or else its user.
    Stats {
        #[command(flatten)]
        filters: Filters,
        /// How many actors to list.
        #[arg(long, default_value_t = 10, value_parser = args::count, allow_negative_numbers = true)]
        top: u64,
    },
    /// Entries of a project per category.
    Summary {
        /// The project to count (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: ProjectId,
    },
    /// Stream the entries matching the filters, oldest first, as CSV, JSON or JSON Lines.
    Export {
        /// CSV (RFC 4180, with a header row), one JSON array, or JSON Lines.
        #[arg(long, value_enum)]
        format: Format,
        #[command(flatten)]
        filters: Filters,
        /// At most this many entries.
        #[arg(long, value_parser = args::count, allow_negative_numbers = true)]
        limit: Option<u64>,
        /// Skip this many entries first.
        #[arg(long, value_parser = args::count, allow_negative_numbers = true)]
        offset: Option<u64>,
        /// Write to FILE instead of stdout; `-` (stdout) or a pipe is written straight through,
        /// as a FIFO, terminal or device is. Any other FILE must be new: it is written beside
        /// itself and put in place only once complete, with mode 0600 (an existing file is
        /// refused, never replaced). The database's own files are refused by any name. Temporary files a killed run left in
        /// that folder are removed (with a note), unless a process still has them open or
        /// locked.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Keep CSV cells that start with = + - @ as they are (by default they get a leading ').
        #[arg(long)]
        no_formula_guard: bool,
    },
    /// Walk the hash chain; exits 3 naming every bad row if anything was changed: rows without a
    /// hash (written around the log), edited, inserted, deleted or moved rows, and values not in
    /// their stored form. On SQLite the pages of the log's table and its indexes are checked
    /// first (SQLite's integrity check of that table alone, read-only): damage there is a
    /// finding too.
    Verify {
        /// A head printed earlier by `aigentflow audit head`, to catch truncation or a rewrite:
        /// the log must hold as many rows, its row `last_id` the head's hash, and as many rows
        /// up to it as the head counts. A file `audit head` could not have printed (an unknown
        /// field, 0 rows, an id below 1, a hash that is not 64 lower-case hex digits) is refused.
        #[arg(long, value_name = "FILE")]
        head: Option<PathBuf>,
        /// Also write a JSON report an auditor can keep (range, rows checked, head, findings,
        /// when, tool version) to FILE (`-` for stdout), by the output rule: an existing file
        /// is refused. Written whatever the chain's state; the exit code still says it.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Sign the report with the Ed25519 secret key in KEYFILE (made by `audit keygen`):
        /// kept elsewhere, a signed report pins the head, which an unkeyed chain rewritten whole
        /// by someone with the file would not match. A key file that other users can read or
        /// write (any group or other permission bit) is refused: fix it with `chmod 600`.
        #[arg(long, value_name = "KEYFILE")]
        sign: Option<PathBuf>,
    },
    /// Check a signed verification report: that PUBFILE's key signed it and it was not changed
    /// since, then that the database's log still reaches the report's head (it was neither
    /// truncated nor rewritten since). Exit code 3 if any check fails or the report records a
    /// broken chain; the findings it records, found again, are told apart from changes since.
    CheckReport {
        /// The report written by `audit verify --report FILE --sign KEYFILE`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The public key file written by `audit keygen` (KEYFILE.pub).
        #[arg(long, value_name = "PUBFILE")]
        pubkey: PathBuf,
        /// Check only the report's signature, not the database.
        #[arg(long)]
        signature_only: bool,
    },
    /// Make an Ed25519 key pair for signing verification reports: the secret key in KEYFILE
    /// (mode 0600) and the public key in KEYFILE.pub, both new regular files (existing ones, a
    /// device, a pipe or stdout are refused, and then neither is made). Keep the secret key away
    /// from the database's machine.
    Keygen {
        /// Where the secret key goes; the public key goes beside it with `.pub` added.
        #[arg(value_name = "KEYFILE")]
        keyfile: PathBuf,
    },
    /// Print the entries after a cursor, oldest first, one per line, and with --follow every
    /// later entry as it commits, from any process: the last 10 by default, like `tail`.
    ///
    /// A line is id, time (UTC), category, action, project, task and agent (`-` for none),
    /// or with --json one JSON object (JSON Lines) with the fields of `audit query --json`.
    /// Nothing is skipped or printed twice: ids become visible in the order they were given.
    /// --follow waits without spinning (PostgreSQL: LISTEN/NOTIFY; SQLite: the file's change
    /// counter, looked at every 200 ms) and reads again at least every 2 s; it ends with exit
    /// code 0 on Ctrl-C or SIGTERM (whole lines printed) or when stdout's reader goes away
    /// (`… | head -3`). Opens the database read-only: it never writes.
    Tail {
        /// Print the entries whose id is greater than ID (0 is before the first): a poller passes
        /// the last id it printed. Without it, the last --limit entries.
        #[arg(long, value_name = "ID", value_parser = args::cursor, allow_negative_numbers = true)]
        after: Option<i64>,
        /// How many entries to print before following (with --after the first ones after ID,
        /// else the last ones): 1 to 1000.
        #[arg(long, default_value_t = 10, value_parser = page_limit, allow_negative_numbers = true)]
        limit: u64,
        /// Keep printing every later entry as it commits, until Ctrl-C, SIGTERM or a closed
        /// stdout.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the current end of the chain as JSON, to keep somewhere else (`null` for an empty
    /// log); `audit verify --head FILE` takes it back.
    Head,
}

/// The audit event's fields of `audit log`.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// How serious: debug, info, warning, error or critical.
    #[arg(long, value_parser = parse_closed::<Severity>)]
    severity: Option<Severity>,
    /// How it ended: success, failure, partial, denied, blocked or pending.
    #[arg(long, value_parser = parse_closed::<Outcome>)]
    outcome: Option<Outcome>,
    /// Who acted: its kind, e.g. user, agent, system or external (with --actor-id).
    #[arg(long, value_parser = args::name, requires = "actor_id")]
    actor_type: Option<String>,
    /// Who acted: its id (with --actor-type).
    #[arg(long, value_parser = args::name, requires = "actor_type")]
    actor_id: Option<String>,
    /// What was acted on: its kind, e.g. file, task or config (with --target-id).
    #[arg(long, value_parser = args::name, requires = "target_id")]
    target_type: Option<String>,
    /// What was acted on: its id, e.g. a path (with --target-type).
    #[arg(long, value_parser = args::name, requires = "target_type")]
    target_id: Option<String>,
    /// The session the entry belongs to (not empty).
    #[arg(long, value_parser = args::name)]
    session: Option<String>,
    /// The workflow run the entry belongs to (not empty).
    #[arg(long, value_parser = args::name)]
    workflow: Option<String>,
    /// The id that ties the entries of one request together (not empty).
    #[arg(long, value_parser = args::name)]
    correlation: Option<String>,
    /// The value before the change, as JSON (redacted before it is written; text that is not
    /// JSON, or holds a number JSON would store rounded, is refused without being repeated).
    #[arg(long, value_name = "JSON")]
    before: Option<String>,
    /// The value after the change, as JSON (as --before).
    #[arg(long, value_name = "JSON")]
    after: Option<String>,
    /// What went wrong (not empty; redacted before it is written).
    #[arg(long, value_parser = args::name)]
    error: Option<String>,
}

/// A flag's JSON value; the text is not repeated in the error, as it may hold a secret.
fn json_arg(flag: &str, text: Option<String>) -> anyhow::Result<Option<serde_json::Value>> {
    text.map(|t| args::exact_json(&t).map_err(|why| anyhow::anyhow!("{flag} {why}"))).transpose()
}

impl EventArgs {
    /// The fields into `entry`.
    fn fill(self, entry: AuditEntry) -> anyhow::Result<AuditEntry> {
        let before = json_arg("--before", self.before)?;
        let after = json_arg("--after", self.after)?;
        let pair = |kind: Option<String>, id: Option<String>| kind.zip(id);
        Ok(AuditEntry {
            severity: self.severity,
            outcome: self.outcome,
            actor: pair(self.actor_type, self.actor_id).map(|(k, id)| Actor::new(k, id)),
            target: pair(self.target_type, self.target_id).map(|(k, id)| Target::new(k, id)),
            session_id: self.session,
            workflow_id: self.workflow,
            correlation_id: self.correlation,
            changes: (before.is_some() || after.is_some()).then_some(Changes { before, after }),
            error: self.error,
            ..entry
        })
    }
}

/// Filters shared by query, stats and export.
#[derive(Debug, Args)]
pub struct Filters {
    /// Only this project's entries (not empty).
    #[arg(long, value_parser = args::id::<ProjectId>)]
    project: Option<ProjectId>,
    /// Only this task's entries (not empty).
    #[arg(long, value_parser = args::id::<TaskId>)]
    task: Option<TaskId>,
    /// Only this category (any text; see `audit log --help` for the known ones).
    #[arg(long, value_parser = parse_category)]
    category: Option<Category>,
    /// Only this agent's entries (not empty).
    #[arg(long, value_parser = args::name)]
    agent: Option<String>,
    /// Only entries of this action (not empty).
    #[arg(long, value_parser = args::name)]
    action: Option<String>,
    /// Only entries of this user (not empty).
    #[arg(long, value_parser = args::name)]
    user: Option<String>,
    /// Only entries of at least this severity: debug, info, warning, error or critical
    /// (warning also selects error and critical).
    #[arg(long, value_parser = parse_closed::<Severity>)]
    min_severity: Option<Severity>,
    /// Only entries with this outcome: success, failure, partial, denied, blocked or pending.
    #[arg(long, value_parser = parse_closed::<Outcome>)]
    outcome: Option<Outcome>,
    /// Only entries whose actor is of this kind (e.g. agent).
    #[arg(long, value_parser = args::name)]
    actor_type: Option<String>,
    /// Only entries of this actor id.
    #[arg(long, value_parser = args::name)]
    actor_id: Option<String>,
    /// Only entries whose target is of this kind (e.g. file).
    #[arg(long, value_parser = args::name)]
    target_type: Option<String>,
    /// Only entries of this target id.
    #[arg(long, value_parser = args::name)]
    target_id: Option<String>,
    /// Only entries of this session.
    #[arg(long, value_parser = args::name)]
    session: Option<String>,
    /// Only entries of this workflow run.
    #[arg(long, value_parser = args::name)]
    workflow: Option<String>,
    /// Only entries of this correlation id.
    #[arg(long, value_parser = args::name)]
    correlation: Option<String>,
    /// Only entries that carry an error.
    #[arg(long)]
    has_error: bool,
    /// Only entries that record changes (a value before or after).
    #[arg(long)]
    has_changes: bool,
    /// From this date (from its midnight, UTC) or timestamp on, inclusive: e.g. 2026-11-01,
    /// 2026-1-5 or 2026-11-01T09:00:00Z; years 0000 to 9999, not in a leap second.
    #[arg(long, value_name = "DATE", value_parser = args::date)]
    start: Option<String>,
    /// Up to this date (the whole day, UTC, 9999-12-31 included) or timestamp, inclusive;
    /// years 0000 to 9999, not in a leap second.
    #[arg(long, value_name = "DATE", value_parser = args::date)]
    end: Option<String>,
}

impl Filters {
    fn query(self, limit: Option<u64>, offset: Option<u64>) -> AuditQuery {
        AuditQuery {
            project_id: self.project,
            task_id: self.task,
            category: self.category,
            agent: self.agent,
            action: self.action,
            user_id: self.user,
            min_severity: self.min_severity,
            outcome: self.outcome,
            actor_type: self.actor_type,
            actor_id: self.actor_id,
            target_type: self.target_type,
            target_id: self.target_id,
            session_id: self.session,
            workflow_id: self.workflow,
            correlation_id: self.correlation,
            has_error: self.has_error.then_some(true),
            has_changes: self.has_changes.then_some(true),
            start: self.start,
            end: self.end,
            limit,
            offset,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Json,
    Jsonl,
}

/// A page of `audit tail`: 1 to [`MAX_PAGE`](aigentflow_audit::MAX_PAGE) entries.
fn page_limit(text: &str) -> Result<u64, args::Refused> {
    args::page(text, aigentflow_audit::MAX_PAGE)
}

/// A category: any text that is not blank (the set is open).
fn parse_category(text: &str) -> Result<Category, args::Refused> {
    args::name(text).map(|t| Category::parse(&t))
}

/// One of a closed set's names, or an error listing them.
fn parse_closed<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = aigentflow_core_states::UnknownVariant>,
{
    text.parse().map_err(|e: aigentflow_core_states::UnknownVariant| e.to_string())
}

/// A bar of rows written out of the rows to export, on stderr when it is a terminal.
fn progress_bar(
    ctx: &Ctx,
    log: &AuditLog,
    query: &AuditQuery,
) -> anyhow::Result<Option<ProgressBar>> {
    if !ctx.out.shows_progress() {
        return Ok(None);
    }
    let matching = log.count(query)?.saturating_sub(query.offset.unwrap_or(0));
    let total = query.limit.map_or(matching, |l| l.min(matching));
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} rows {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    Ok(Some(bar))
}

pub fn run(ctx: &Ctx, command: AuditCommand) -> anyhow::Result<Done> {
    match command {
        AuditCommand::Log { action, category, project, task, agent, details, user, ip, event } => {
            // The text is not repeated: a value that fails to parse may still hold a secret.
            let details = json_arg("--details", details)?;
            let log = AuditLog::new(ctx.write()?);
            let entry = event.fill(AuditEntry {
                project_id: project,
                task_id: task,
                agent,
                details,
                user_id: user,
                ip_address: ip,
                ..AuditEntry::new(action, category)
            })?;
            let id = log.log(&entry)?;
            ctx.out.emit(&json!({"id": id}), || say!("{id}"))?;
        }
        AuditCommand::Query { filters, limit, offset } => {
            let log = AuditLog::new(ctx.read()?);
            let rows = log.query(&filters.query(Some(limit), offset))?;
            ctx.out.emit(&rows, || {
                let rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            when(r.timestamp),
                            r.category.clone(),
                            cell(&r.action, 40),
                            opt(r.project_id.as_ref()),
                            opt(r.task_id.as_ref()),
                            opt(r.agent.as_deref()),
                        ]
                    })
                    .collect();
                table(&["ID", "AT", "CATEGORY", "ACTION", "PROJECT", "TASK", "AGENT"], &rows);
            })?;
        }
        AuditCommand::Stats { filters, top } => {
            let log = AuditLog::new(ctx.read()?);
            let stats = log.stats(&filters.query(None, None), top)?;
            ctx.out.emit(&stats, || {
                say!(
                    "{} entries, {} with errors ({:.1}%)",
                    stats.total,
                    stats.errors,
                    stats.error_rate * 100.0
                );
                for (title, counts) in [
                    ("CATEGORY", &stats.by_category),
                    ("SEVERITY", &stats.by_severity),
                    ("OUTCOME", &stats.by_outcome),
                    ("DAY", &stats.per_day),
                ] {
                    if counts.is_empty() {
                        continue;
                    }
                    say!("");
                    let rows: Vec<Vec<String>> = counts
                        .iter()
                        .map(|c| vec![cell(&c.key, 40), c.count.to_string()])
                        .collect();
                    table(&[title, "ENTRIES"], &rows);
                }
                if !stats.top_actors.is_empty() {
                    say!("");
                    let rows: Vec<Vec<String>> = stats
                        .top_actors
                        .iter()
                        .map(|a| vec![cell(&a.kind, 20), cell(&a.id, 40), a.count.to_string()])
                        .collect();
                    table(&["ACTOR TYPE", "ACTOR", "ENTRIES"], &rows);
                }
            })?;
        }
        AuditCommand::Summary { project } => {
            let log = AuditLog::new(ctx.read()?);
            let counts = log.summary(&project)?;
            ctx.out.emit(&counts, || {
                let rows: Vec<Vec<String>> =
                    counts.iter().map(|c| vec![c.category.clone(), c.count.to_string()]).collect();
                table(&["CATEGORY", "ENTRIES"], &rows);
            })?;
        }
        AuditCommand::Export { format, filters, limit, offset, output, no_formula_guard } => {
            let db = ctx.read()?;
            let log = AuditLog::new(db.clone());
            let options = ExportOptions {
                format: match format {
                    Format::Csv => ExportFormat::Csv,
                    Format::Json => ExportFormat::Json,
                    Format::Jsonl => ExportFormat::Jsonl,
                },
                query: filters.query(limit, offset),
                neutralize_formulas: !no_formula_guard,
            };
            // Every file written follows the one output rule: never the database's own files,
            // a new regular file put in place only once complete (an existing one is refused,
            // never replaced), a pipe or device straight through.
            let path = output.unwrap_or_else(|| PathBuf::from(Output::STDOUT));
            let mut out = Output::open_new(&path, Some(&db))?;
            ctx.out.note_leftovers(out.leftovers());
            let bar = if out.is_stdout() { None } else { progress_bar(ctx, &log, &options.query)? };
            // A closed pipe surfaces as an error here and ends quietly in main. Returning early
            // drops `out`, which removes its temporary file.
            let result = log.export(&mut out, &options, |n| {
                if let Some(bar) = &bar {
                    bar.set_position(n);
                }
            });
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let report = result?;
            let to_stdout = out.is_stdout();
            out.commit()?;
            // Nothing else goes where the export went.
            if !to_stdout {
                ctx.out.emit(
                    &json!({"file": path.to_string_lossy(), "rows": report.rows, "chain_head": report.chain_head}),
                    || say!("exported {} rows to {}", report.rows, path.display()),
                )?;
            }
        }
        AuditCommand::CheckReport { file, pubkey, signature_only } => {
            return check_report(ctx, &file, &pubkey, signature_only);
        }
        AuditCommand::Keygen { keyfile } => return keygen(ctx, &keyfile),
        AuditCommand::Verify { head, report, sign } => {
            // Every head `audit head` prints is accepted back: `null` is the head of an empty
            // log, which any log extends. A head it could not have printed (an unknown field,
            // no rows, an id below 1, a hash that is not a SHA-256) is refused before the log
            // is read: held against the log, it would pass or fail for the wrong reason.
            let expected: Option<ChainHead> = head
                .map(|path| -> anyhow::Result<Option<ChainHead>> {
                    let text = read_small(&path)?;
                    ChainHead::parse(&text).with_context(|| format!("{}", path.display()))
                })
                .transpose()?
                .flatten();
            if sign.is_some() && report.is_none() {
                anyhow::bail!("--sign signs the report: give --report FILE too");
            }
            // The key is read before anything is checked or written: a bad key file is told at once.
            let key = sign.map(|path| read_signing_key(&path)).transpose()?;
            let db = ctx.read()?;
            let log = AuditLog::new(db.clone());
            let v = log.verify(expected.as_ref())?;
            if let Some(path) = &report {
                let first = log.since(0, 1)?.first().map(|e| e.id);
                let made = aigentflow_audit::report::Report::new(
                    &v,
                    first,
                    &ctx.shown(),
                    concat!("aigentflow ", env!("CARGO_PKG_VERSION")),
                    chrono::Utc::now(),
                );
                let signed = match &key {
                    Some(key) => made.sign(key),
                    None => made.unsigned(),
                };
                let mut out = Output::open_new(path, Some(&db))?;
                let to_stdout = out.is_stdout();
                serde_json::to_writer_pretty(&mut out, &signed)?;
                std::io::Write::write_all(&mut out, b"\n")?;
                out.commit()?;
                if to_stdout {
                    return Ok(if v.is_ok() { Done::Ok } else { Done::Problems });
                }
                ctx.out.note(&format!(
                    "wrote the {} report to {}",
                    if key.is_some() { "signed" } else { "unsigned" },
                    path.display()
                ));
            }
            ctx.out.emit(&v, || {
                if v.findings.is_empty() {
                    say!("{} audit chain intact: {} rows", ctx.out.mark(true), v.rows);
                    return;
                }
                say!(
                    "{} audit chain broken: {} finding{} in {} rows",
                    ctx.out.mark(false),
                    v.findings_total,
                    if v.findings_total == 1 { "" } else { "s" },
                    v.rows
                );
                for f in &v.findings {
                    say!("  {f}");
                }
                let unlisted = v.findings_total.saturating_sub(v.findings.len() as u64);
                if unlisted > 0 {
                    say!("  … and {unlisted} more");
                }
            })?;
            if let Some(f) = &v.finding {
                if ctx.out.json {
                    crate::out::eprint_line(&format!("aigentflow: audit chain broken: {f}"));
                }
                return Ok(Done::Problems);
            }
        }
        AuditCommand::Tail { after, limit, follow } => {
            return crate::tail::run(ctx, after, limit, follow);
        }
        AuditCommand::Head => {
            let log = AuditLog::new(ctx.read()?);
            let head = log.head()?;
            // JSON whatever the mode: `audit verify --head FILE` reads it back.
            crate::out::write_json(&serde_json::to_string(&head)?);
        }
    }
    Ok(Done::Ok)
}

/// A file of at most [`MAX_FILE`](aigentflow_audit::report::MAX_FILE) bytes, as text.
fn read_small(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(read_small_file(path)?.1)
}

/// `--sign KEYFILE`'s key. A secret key that other users can read lets them sign a report of a
/// rewritten log, and one they can write lets them swap it: like ssh with a private key, a key
/// file with any group or other permission bit is refused, checked on the file read.
pub(crate) fn read_signing_key(
    path: &std::path::Path,
) -> anyhow::Result<aigentflow_audit::report::SigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let (meta, text) = read_small_file(path)?;
    let key = aigentflow_audit::report::read_secret_key(&text)
        .with_context(|| format!("{}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        anyhow::bail!(
            "{} is a secret key open to other users (mode {mode:04o}): \
             make it its owner's alone with `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(key)
}

/// `--pubkey PUBFILE`'s key.
pub(crate) fn read_public_key(
    path: &std::path::Path,
) -> anyhow::Result<aigentflow_audit::report::VerifyingKey> {
    aigentflow_audit::report::read_public_key(&read_small(path)?)
        .with_context(|| format!("{}", path.display()))
}

/// A small file's metadata (of the file read, not of its name) and text.
fn read_small_file(path: &std::path::Path) -> anyhow::Result<(std::fs::Metadata, String)> {
    use std::io::Read;
    let file = aigentflow_persistence::open_input(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    file.take(aigentflow_audit::report::MAX_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {} as text", path.display()))?;
    if text.len() as u64 > aigentflow_audit::report::MAX_FILE {
        anyhow::bail!(
            "{} is larger than a head, report or key file can be ({} bytes at most)",
            path.display(),
            aigentflow_audit::report::MAX_FILE
        );
    }
    Ok((meta, text))
}

/// `audit check-report`: the signature, then (unless `signature_only`) the database's log
/// against the signed head.
fn check_report(
    ctx: &Ctx,
    file: &std::path::Path,
    pubkey: &std::path::Path,
    signature_only: bool,
) -> anyhow::Result<Done> {
    use aigentflow_audit::report;
    let key = read_public_key(pubkey)?;
    let text = read_small(file)?;
    let checked = match report::check(&text, &key) {
        Ok(r) => r,
        // Whatever is wrong with the report's content is the check's finding (exit 3): an edit
        // may as well break its form as its signature.
        Err(
            e @ (report::ReportError::BadSignature
            | report::ReportError::OtherKey { .. }
            | report::ReportError::Unsigned
            | report::ReportError::NotAReport(_)),
        ) => {
            let json = json!({"file": file.to_string_lossy(), "signature": false, "problem": e.to_string()});
            ctx.out.emit(&json, || say!("{} {}: {e}", ctx.out.mark(false), file.display()))?;
            return Ok(Done::Problems);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(file.display().to_string())),
    };
    // A genuine report of a broken chain: the chain was broken when it was checked.
    let recorded = (!checked.ok).then(|| {
        format!(
            "the report records a broken chain ({} finding{})",
            checked.findings_total,
            if checked.findings_total == 1 { "" } else { "s" }
        )
    });
    let mut problem = recorded.clone();
    let mut log_checked = false;
    if !signature_only {
        let v = AuditLog::new(ctx.read()?).verify(checked.head.as_ref())?;
        log_checked = true;
        // Only what the report does not record changed since: the findings of a chain that was
        // already broken are found again, and are the report's, not the log's since.
        let new = checked.new_findings(&v);
        problem = match (new.first(), recorded) {
            (Some(f), _) => Some(format!(
                "the log no longer matches the report: {f}{}",
                match new.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            )),
            // More findings than the report counted, past the ones either lists.
            (None, _) if v.findings_total > checked.findings_total => Some(format!(
                "the log no longer matches the report: {} findings now, {} when it was checked",
                v.findings_total, checked.findings_total
            )),
            (None, Some(recorded)) => {
                Some(format!("{recorded}, which the log still shows: nothing new since"))
            }
            (None, None) => None,
        };
    }
    let json = json!({
        "file": file.to_string_lossy(),
        "signature": true,
        "report": checked,
        "log_checked": log_checked,
        "problem": problem,
    });
    ctx.out.emit(&json, || {
        say!(
            "{} signature good: {} rows checked at {}, head {}",
            ctx.out.mark(true),
            checked.rows_checked,
            checked.checked_at,
            checked
                .head
                .as_ref()
                .map_or("(empty log)".to_owned(), |h| format!("row {} {}", h.last_id, h.hash))
        );
        match (&problem, log_checked) {
            (None, true) => say!("{} the log still reaches the signed head", ctx.out.mark(true)),
            (Some(p), _) => say!("{} {p}", ctx.out.mark(false)),
            (None, false) => {}
        }
    })?;
    Ok(if problem.is_none() { Done::Ok } else { Done::Problems })
}

/// `audit keygen`: KEYFILE (secret) and KEYFILE.pub (public), both new files.
fn keygen(ctx: &Ctx, keyfile: &std::path::Path) -> anyhow::Result<Done> {
    use aigentflow_audit::report;
    if keyfile.as_os_str() == Output::STDOUT {
        anyhow::bail!("a key file needs a name (its public key goes beside it as NAME.pub)");
    }
    let mut public_path = keyfile.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    let key = report::generate_key().context("cannot read the system's random source")?;
    // Both outputs are opened (existing files refused) before either is written.
    // The database's own files are refused too: a later write could remove one.
    // Each is a new regular file: a key written to a device, a pipe or a descriptor (`/dev/null`,
    // `/dev/stdout`, a FIFO, or a link to one) would be lost or shown, and its `.pub` made
    // beside a device name. Nothing is made before both are known to be files.
    let db = ctx.read().ok();
    let new_file = |path: &std::path::Path| -> anyhow::Result<Output> {
        Output::open_new_file(path, db.as_ref()).map_err(|e| match e {
            aigentflow_persistence::Error::NotAFile { kind, .. } => anyhow::anyhow!(
                "{}: a key goes in a new file of its own, not a {kind}",
                path.display()
            ),
            e => e.into(),
        })
    };
    let mut secret = new_file(keyfile)?;
    let mut public = new_file(&public_path)?;
    std::io::Write::write_all(
        &mut public,
        report::public_key_text(&key.verifying_key()).as_bytes(),
    )?;
    std::io::Write::write_all(&mut secret, report::secret_key_text(&key).as_bytes())?;
    // The pair or neither: a secret key whose public half could not be made is removed.
    secret.commit()?;
    if let Err(e) = public.commit() {
        let _ = std::fs::remove_file(keyfile);
        return Err(e.into());
    }
    let json = json!({"secret_key": keyfile.to_string_lossy(), "public_key": public_path.to_string_lossy()});
    ctx.out.emit(&json, || {
        say!("secret key {} (keep it away from the database's machine)", keyfile.display());
        say!("public key {}", public_path.display());
    })?;
    Ok(Done::Ok)
}
