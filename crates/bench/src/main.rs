//! `aigentflow-bench`: the workloads of BENCHMARKS.md, through the public API, each on a fresh
//! database with default options — a file in a temp dir, or with `--db postgres://…` a database
//! made for it on that server (and dropped afterwards), there beside a bare baseline doing the
//! same work with the `postgres` crate directly ([`bare`]). Prints one JSON object per workload.
//!
//! Run in release mode: `cargo run --release -p aigentflow-bench -- [--quick] [--only W1,W6] [--scale F] [--db URL]`.
//! `BENCH_TRACE=1` also prints W1's save cost per block of 100 saves on stderr.

mod bare;
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aigentflow_audit::{
    Actor, AuditEntry, AuditLog, AuditQuery, Category, ExportFormat, ExportOptions,
    Outcome as AuditOutcome, Severity, Target as AuditTarget,
};
use aigentflow_core_states::{
    Event, FromStates, ProjectId, Rule, StateContext, StateMachine, StateStore, Target, TaskId,
    TransitionTable, WorkflowState,
};
use aigentflow_lessons::{Category as LessonCategory, LessonsStore, NewLesson, SearchOptions};
use aigentflow_persistence::{Database, SqliteStateStore};
use aigentflow_tracker::{
    CostGroup, CostQuery, ExecutionTracker, FinishedSpan, LlmCall, Money, NewInvocation, NewSpan,
    Outcome, SpanEnd, SpanId, SpanKind, SpanStatus, TokenUsage,
};
use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Map, Value};

use crate::bare::{
    Bare, BareAudit, BareChain, BareExport, BareLessons, BareListing, BareSpans, BareStates,
    BareTracker, RollupTotal,
};
use crate::server::{FreshDatabase, Server};

/// Runs the BENCHMARKS.md workloads and prints one JSON line per workload.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// One tenth of the full sizes (query counts at least 100).
    #[arg(long)]
    quick: bool,
    /// Only these workloads, comma-separated (e.g. W1,W6).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Multiply every size by this factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Run on this PostgreSQL server instead of SQLite files: a postgres:// or postgresql://
    /// URL of a superuser or of a role that may create databases. Each workload gets a fresh
    /// database there (dropped when it ends, on an error or on Ctrl-C too) and runs beside a
    /// bare baseline on a fresh database of its own, doing the same work with the `postgres`
    /// crate directly; each line then also holds `baseline_*` figures and their `ratio_*`.
    #[arg(long, value_name = "URL")]
    db: Option<String>,
}

/// Where the workloads' databases are made.
enum Where {
    /// Files in this temp dir.
    Sqlite(tempfile::TempDir),
    /// Databases on this server.
    Postgres(Server),
}

struct Bench {
    factor: f64,
    target: Where,
}

/// Where a workload's fresh database is: its path or URL, and on PostgreSQL the guard that
/// drops it.
struct Place {
    location: String,
    pg: Option<FreshDatabase>,
}

impl Place {
    /// Vacuums and analyses a PostgreSQL database once its rows are loaded, as autovacuum would
    /// on a server left alone, so that neither side's figures hang on when it runs.
    fn settle(&self) -> Result<()> {
        match &self.pg {
            Some(pg) => bare::settle(&mut pg.connect()?),
            None => Ok(()),
        }
    }
}

impl Bench {
    /// A size scaled by --quick and --scale, at least `min`.
    fn n(&self, full: usize, min: usize) -> usize {
        ((full as f64 * self.factor).round() as usize).max(min)
    }

    fn backend(&self) -> &'static str {
        match self.target {
            Where::Sqlite(_) => "sqlite",
            Where::Postgres(_) => "postgres",
        }
    }

    /// A fresh database for the project's side of a workload, opened (and so migrated).
    fn fresh_db(&self, label: &str) -> Result<(Place, Database)> {
        let place = match &self.target {
            Where::Sqlite(dir) => Place {
                location: dir.path().join(format!("{label}.db")).display().to_string(),
                pg: None,
            },
            Where::Postgres(server) => {
                let pg = server.fresh(label)?;
                Place { location: pg.url().to_owned(), pg: Some(pg) }
            }
        };
        let db = Database::open(&place.location).with_context(|| {
            format!("open {}", aigentflow_persistence::display_url(&place.location))
        })?;
        Ok((place, db))
    }

    /// A fresh database with the schema for the bare baseline of a workload, on PostgreSQL.
    fn bare(&self, label: &str) -> Result<Option<Bare>> {
        match &self.target {
            Where::Sqlite(_) => Ok(None),
            Where::Postgres(server) => Bare::fresh(server, label).map(Some),
        }
    }

    /// [`bare`](Self::bare) on the project's schema as it migrates it (on PostgreSQL only).
    fn bare_migrated(&self, label: &str) -> Result<Option<Bare>> {
        match &self.target {
            Where::Sqlite(_) => Ok(None),
            Where::Postgres(server) => Bare::fresh_migrated(server, label).map(Some),
        }
    }

    /// Whether the run was interrupted (see [`Server::interrupted`]).
    fn interrupted(&self) -> bool {
        matches!(&self.target, Where::Postgres(server) if server.interrupted())
    }

    /// Emits a workload's line.
    fn emit(&self, workload: &str, n: usize, seconds: f64, extra: Value) {
        emit(workload, self.backend(), n, seconds, extra);
    }
}

/// The word list the workloads draw their text from, built into the binary.
const BENCH_WORDS: &str = include_str!("../data/bench-words.txt");

/// Text from [`BENCH_WORDS`], drawn with a seeded PRNG so runs repeat.
struct Words {
    words: Vec<String>,
    state: u64,
}

impl Words {
    fn load(seed: u64) -> Result<Self> {
        let words: Vec<String> = BENCH_WORDS.split_whitespace().map(str::to_owned).collect();
        anyhow::ensure!(!words.is_empty(), "crates/bench/data/bench-words.txt holds no words");
        Ok(Self { words, state: seed.max(1) })
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn word(&mut self) -> String {
        let i = self.below(self.words.len());
        self.words[i].clone()
    }

    fn sentence(&mut self, min: usize, max: usize) -> String {
        let n = min + self.below(max - min + 1);
        (0..n).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }
}

/// An audit entry of W2/W3: a small JSON object; every 20th with commas, quotes, newlines, unicode.
fn audit_entry(words: &mut Words, i: usize) -> AuditEntry {
    // The five categories the stores write.
    let categories = &Category::KNOWN[..5];
    let mut details = json!({"seq": i, "file": format!("src/{}.rs", words.word()), "bytes": words.below(100_000)});
    let mut action = format!("{}_{}", words.word(), words.word());
    if i.is_multiple_of(20) {
        details["note"] =
            json!(format!("a, \"quoted\" {}\nline two ✓ 日本語 😀", words.sentence(2, 5)));
        action = format!("{action}, \"x\"\n✓");
    }
    AuditEntry {
        project_id: Some("bench-project".into()),
        task_id: Some(format!("task-{}", i % 500).into()),
        agent: Some(words.word()),
        details: Some(details),
        user_id: Some("bench@example.com".into()),
        ..AuditEntry::new(action, categories[i % categories.len()].clone())
    }
}

/// W2's entry with every field of the audit event filled as well.
fn full_audit_entry(words: &mut Words, entry: &AuditEntry, i: usize) -> AuditEntry {
    let severities = Severity::ALL;
    let outcomes = AuditOutcome::ALL;
    AuditEntry {
        session_id: Some(format!("session-{}", i % 50)),
        workflow_id: Some(format!("workflow-{}", i % 500)),
        correlation_id: Some(format!("request-{i}")),
        ..entry
            .clone()
            .severity(severities[i % severities.len()])
            .outcome(outcomes[i % outcomes.len()])
            .actor(Actor::agent(words.word()))
            .target(AuditTarget::new("file", format!("src/{}.rs", words.word())))
            .changes(Some(json!({"lines": i % 300})), Some(json!({"lines": i % 300 + 7})))
            .error(format!("{} failed: {}", words.word(), words.sentence(2, 4)))
    }
}

/// W2: N entries each in its own transaction, then N more in batches of 100. On PostgreSQL the
/// bare baseline appends the same entries in turns of 1,000 with the project's. Beside them, on
/// a database of its own, the same entries with every field of the audit event filled too,
/// one per transaction, in turns with the plain ones: `full_us_per_op` and its `full_ratio`.
/// On PostgreSQL, also beside the chain's own statements sent bare on the project's schema
/// ([`BareChain`]): `chained_baseline_*` and `ratio_to_chained_*`, the project's share.
fn w2(b: &Bench) -> Result<()> {
    let n = b.n(100_000, 1000);
    let (_place, db) = b.fresh_db("w2")?;
    let (_full_place, full_db) = b.fresh_db("w2_full")?;
    let mut bare = b.bare("w2_bare")?.map(BareAudit::new).transpose()?;
    let mut chained = b.bare_migrated("w2_chained")?.map(BareChain::new).transpose()?;
    let log = AuditLog::new(db);
    let full_log = AuditLog::new(full_db);
    let mut words = Words::load(2)?;
    let entries: Vec<AuditEntry> = (0..n).map(|i| audit_entry(&mut words, i)).collect();
    reset_peak_rss();
    let (mut single, mut base_single, mut full, mut chained_single) = (0.0, 0.0, 0.0, 0.0);
    for (n, turn) in entries.chunks(1000).enumerate() {
        // Made a turn at a time (and not timed), so the peak memory is W2's as before.
        let full_turn: Vec<AuditEntry> = turn
            .iter()
            .enumerate()
            .map(|(i, e)| full_audit_entry(&mut words, e, n * 1000 + i))
            .collect();
        let t = Instant::now();
        for e in turn {
            log.log(e)?;
        }
        single += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for e in &full_turn {
            full_log.log(e)?;
        }
        full += t.elapsed().as_secs_f64();
        if let Some(bare) = &mut bare {
            let t = Instant::now();
            for e in turn {
                bare.log(e)?;
            }
            base_single += t.elapsed().as_secs_f64();
        }
        if let Some(chained) = &mut chained {
            let t = Instant::now();
            for e in turn {
                chained.log(e)?;
            }
            chained_single += t.elapsed().as_secs_f64();
        }
    }
    let (mut batch, mut base_batch, mut chained_batch) = (0.0, 0.0, 0.0);
    for turn in entries.chunks(1000) {
        let t = Instant::now();
        for chunk in turn.chunks(100) {
            log.log_batch(chunk)?;
        }
        batch += t.elapsed().as_secs_f64();
        if let Some(bare) = &mut bare {
            let t = Instant::now();
            for chunk in turn.chunks(100) {
                bare.log_batch(chunk)?;
            }
            base_batch += t.elapsed().as_secs_f64();
        }
        if let Some(chained) = &mut chained {
            let t = Instant::now();
            for chunk in turn.chunks(100) {
                chained.log_batch(chunk)?;
            }
            chained_batch += t.elapsed().as_secs_f64();
        }
    }
    let per_op = |s: f64| round(s * 1e6 / n as f64, 2);
    let mut extra = json!({
        "us_per_op": per_op(single),
        "batch_us_per_op": per_op(batch),
        "full_us_per_op": per_op(full),
        "full_ratio": round(full / single, 2),
    });
    if bare.is_some() {
        extra["baseline_us_per_op"] = json!(per_op(base_single));
        extra["baseline_batch_us_per_op"] = json!(per_op(base_batch));
        ratios(&mut extra, &["us_per_op", "batch_us_per_op"]);
    }
    if chained.is_some() {
        extra["chained_baseline_us_per_op"] = json!(per_op(chained_single));
        extra["chained_baseline_batch_us_per_op"] = json!(per_op(chained_batch));
        extra["ratio_to_chained_us_per_op"] = json!(round(single / chained_single, 2));
        extra["ratio_to_chained_batch_us_per_op"] = json!(round(batch / chained_batch, 2));
    }
    b.emit("W2", n, single, extra);
    Ok(())
}

/// Counts bytes and throws them away.
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn current_rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// One export of W3 to a byte-counting sink: its time, the bytes written and the memory it took
/// (the peak over the resident memory before it, and the peak itself).
struct Measured {
    seconds: f64,
    bytes: u64,
    growth_mb: f64,
    peak_mb: f64,
}

/// Runs `export` into a byte-counting sink, measuring it.
fn measure(export: impl FnOnce(&mut CountingSink) -> Result<()>) -> Result<Measured> {
    let mut sink = CountingSink(0);
    let before = current_rss_mb();
    reset_peak_rss();
    let t = Instant::now();
    export(&mut sink)?;
    let seconds = t.elapsed().as_secs_f64();
    let peak_mb = peak_rss_mb();
    Ok(Measured { seconds, bytes: sink.0, growth_mb: (peak_mb - before).max(0.0), peak_mb })
}

/// The project's export of `project`'s rows in `format`, checked to hold `n` rows.
fn export(log: &AuditLog, format: ExportFormat, n: usize) -> Result<Measured> {
    let query = AuditQuery { project_id: Some(W3_PROJECT.into()), ..AuditQuery::default() };
    let options = ExportOptions { query, ..ExportOptions::new(format) };
    measure(|sink| {
        let report = log.export(sink, &options, |_| {})?;
        anyhow::ensure!(report.rows == n as u64, "exported {} of {n} rows", report.rows);
        Ok(())
    })
}

/// The project of W3's rows (every audit entry of the bench has it).
const W3_PROJECT: &str = "bench-project";

/// W3: N rows of one project exported as CSV, JSON and JSON Lines to a byte-counting sink; the
/// memory of the exports is also measured when a quarter of the rows is written, to show it
/// flat in the row count. On PostgreSQL each export alternates with the bare baseline's: CSV
/// with `COPY (SELECT …) TO STDOUT (FORMAT csv)` read through the driver, JSON and JSON Lines
/// with the same rows read through a portal and written as the same JSON objects.
fn w3(b: &Bench) -> Result<()> {
    let n = b.n(200_000, 1000);
    let small = n / 4;
    let (place, db) = b.fresh_db("w3")?;
    let mut bare = b.bare("w3_bare")?.map(BareExport::new);
    let mut words = Words::load(3)?;
    let mut db = db;
    let mut small_growth: f64 = 0.0;
    let mut small_peak: f64 = 0.0;
    for (from, to) in [(0, small), (small, n)] {
        let writer = AuditLog::new(db.clone());
        let mut batch = Vec::with_capacity(1000);
        for i in from..to {
            batch.push(audit_entry(&mut words, i));
            if batch.len() == 1000 || i + 1 == to {
                writer.log_batch(&batch)?;
                if let Some(bare) = &mut bare {
                    bare.add(&batch)?;
                    bare.load()?;
                }
                batch.clear();
            }
        }
        drop(batch);
        // The log was written earlier: close it, so that no checkpoint of the writes runs
        // during the exports, and open it again.
        drop(writer);
        db.close()?;
        if let Some(bare) = &mut bare {
            bare.bare.settle()?;
        }
        place.settle()?;
        db = Database::open(&place.location)?;
        if to == small {
            let reader = AuditLog::new(db.clone());
            for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
                let m = export(&reader, format, small)?;
                small_growth = small_growth.max(m.growth_mb);
                small_peak = small_peak.max(m.peak_mb);
            }
        }
    }
    let log = AuditLog::new(db);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
        ours.push(export(&log, format, n)?);
        if let Some(bare) = &mut bare {
            theirs.push(measure(|sink| {
                match format {
                    ExportFormat::Csv => {
                        bare.csv(W3_PROJECT, sink)?;
                    }
                    _ => {
                        let lines = format == ExportFormat::Jsonl;
                        let rows = bare.json(W3_PROJECT, lines, sink)?;
                        anyhow::ensure!(rows == n as u64, "bare: exported {rows} of {n} rows");
                    }
                }
                Ok(())
            })?);
        }
    }
    let growth = |m: &[Measured]| m.iter().map(|m| m.growth_mb).fold(0.0, f64::max);
    let peak = |m: &[Measured]| m.iter().map(|m| m.peak_mb).fold(0.0, f64::max);
    let mut extra = json!({
        "csv_seconds": round(ours[0].seconds, 4),
        "json_seconds": round(ours[1].seconds, 4),
        "jsonl_seconds": round(ours[2].seconds, 4),
        "csv_bytes": ours[0].bytes,
        "peak_rss_mb": round(peak(&ours), 1),
        "rss_growth_mb": round(growth(&ours), 2),
        "small_n": small,
        "small_peak_rss_mb": round(small_peak, 1),
        "small_rss_growth_mb": round(small_growth, 2),
    });
    if let [csv, json, jsonl] = &theirs[..] {
        extra["baseline_csv_seconds"] = json!(round(csv.seconds, 4));
        extra["baseline_json_seconds"] = json!(round(json.seconds, 4));
        extra["baseline_jsonl_seconds"] = json!(round(jsonl.seconds, 4));
        extra["baseline_csv_bytes"] = json!(csv.bytes);
        extra["baseline_peak_rss_mb"] = json!(round(peak(&theirs), 1));
        extra["baseline_rss_growth_mb"] = json!(round(growth(&theirs), 2));
        ratios(&mut extra, &["csv_seconds", "json_seconds", "jsonl_seconds"]);
    }
    b.emit("W3", n, ours.iter().map(|m| m.seconds).sum(), extra);
    Ok(())
}

/// Resets the peak-RSS high-water mark, so the next reading covers only what follows.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A memory figure of /proc/self/status (`VmHWM`, `VmRSS`) in MB, or 0 when /proc is not there.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Peak resident memory since the last reset, in MB.
fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

fn emit(workload: &str, backend: &str, n: usize, seconds: f64, extra: Value) {
    let mut line = Map::new();
    line.insert("workload".into(), json!(workload));
    line.insert("backend".into(), json!(backend));
    line.insert("n".into(), json!(n));
    line.insert("seconds".into(), json!(round(seconds, 4)));
    line.insert(
        "ops_per_s".into(),
        json!(round(if seconds > 0.0 { n as f64 / seconds } else { 0.0 }, 1)),
    );
    line.insert("peak_rss_mb".into(), json!(round(peak_rss_mb(), 1)));
    if let Value::Object(extra) = extra {
        line.extend(extra);
    }
    println!("{}", Value::Object(line));
}

/// Adds `ratio_<key>` = `<key>` / `baseline_<key>` for each key both sides measured.
fn ratios(extra: &mut Value, keys: &[&str]) {
    for key in keys {
        let ours = extra.get(*key).and_then(Value::as_f64);
        let theirs = extra.get(format!("baseline_{key}")).and_then(Value::as_f64);
        if let (Some(ours), Some(theirs)) = (ours, theirs.filter(|t| *t > 0.0)) {
            extra[format!("ratio_{key}")] = json!(round(ours / theirs, 2));
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// W0: open + migrate a fresh database; reopen the up-to-date one (median of 20 each). On
/// PostgreSQL each run gets a fresh database (made untimed), and the bare baseline connects and
/// runs the schema in one transaction, then connects and reads the schema version.
fn w0(b: &Bench) -> Result<()> {
    let started = Instant::now();
    let mut fresh = Vec::new();
    let mut reopen = Vec::new();
    let mut base_fresh = Vec::new();
    let mut base_reopen = Vec::new();
    let runs = match &b.target {
        Where::Sqlite(dir) => {
            let runs = 20;
            for i in 0..runs {
                let path = dir.path().join(format!("w0-{i}.db"));
                let t = Instant::now();
                Database::open(&path)?.close()?;
                fresh.push(ms(t.elapsed()));
                let t = Instant::now();
                Database::open(&path)?.close()?;
                reopen.push(ms(t.elapsed()));
            }
            runs
        }
        Where::Postgres(server) => {
            let runs = b.n(20, 5);
            for _ in 0..runs {
                let ours = server.fresh("w0")?;
                let t = Instant::now();
                Database::open(ours.url())?.close()?;
                fresh.push(ms(t.elapsed()));
                let t = Instant::now();
                Database::open(ours.url())?.close()?;
                reopen.push(ms(t.elapsed()));
                let theirs = server.fresh("w0_bare")?;
                let t = Instant::now();
                bare::fresh_open(&theirs)?;
                base_fresh.push(ms(t.elapsed()));
                let t = Instant::now();
                bare::reopen(&theirs)?;
                base_reopen.push(ms(t.elapsed()));
            }
            runs
        }
    };
    let mut extra =
        json!({"fresh_open_ms": round(median(fresh), 3), "reopen_ms": round(median(reopen), 3)});
    if !base_fresh.is_empty() {
        extra["baseline_fresh_open_ms"] = json!(round(median(base_fresh), 3));
        extra["baseline_reopen_ms"] = json!(round(median(base_reopen), 3));
        ratios(&mut extra, &["fresh_open_ms", "reopen_ms"]);
    }
    b.emit("W0", runs, started.elapsed().as_secs_f64(), extra);
    Ok(())
}

/// The phase loop of W1 as a table: the default graph's entry plus the legacy phase states.
fn phase_table() -> Result<TransitionTable> {
    use WorkflowState as S;
    let rule = |from: S, event: &str, to: S| Rule {
        from: FromStates::States(vec![from]),
        event: Event::parse(event),
        to: Target::State(to),
        guard: None,
    };
    Ok(TransitionTable::new(
        vec![
            rule(S::Idle, "START", S::Analyzing),
            rule(S::Analyzing, "ANALYSIS_COMPLETE", S::Orchestrating),
            rule(S::Orchestrating, "DESIGN", S::Designing),
            rule(S::Designing, "BUILD", S::Building),
            rule(S::Building, "TEST", S::Testing),
            rule(S::Testing, "REVIEW", S::Reviewing),
            rule(S::Reviewing, "ROUTE_NEXT", S::Orchestrating),
        ],
        [S::Completed, S::Aborted],
    )?)
}

fn phase_event(state: &WorkflowState) -> Event {
    Event::parse(match state {
        WorkflowState::Idle => "START",
        WorkflowState::Analyzing => "ANALYSIS_COMPLETE",
        WorkflowState::Orchestrating => "DESIGN",
        WorkflowState::Designing => "BUILD",
        WorkflowState::Building => "TEST",
        WorkflowState::Testing => "REVIEW",
        _ => "ROUTE_NEXT",
    })
}

/// The mean of the first and of the last `min(100, n/2)` of `xs`.
fn first_last(xs: &[f64]) -> (f64, f64) {
    let window = 100.min(xs.len() / 2).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    (mean(&xs[..window.min(xs.len())]), mean(&xs[xs.len().saturating_sub(window)..]))
}

/// W1: one task through N transitions, a checkpoint every 10th, the whole state saved after each.
/// On PostgreSQL the bare baseline saves the same state after each of the project's saves: one
/// transaction inserting the new transition (and checkpoint) rows and updating the task's row.
fn w1(b: &Bench) -> Result<()> {
    let n = b.n(2000, 200);
    let (_place, db) = b.fresh_db("w1")?;
    let mut bare = b.bare("w1_bare")?.map(BareStates::new).transpose()?;
    let store = SqliteStateStore::new(db);
    let table = Arc::new(phase_table()?);
    let mut m =
        StateMachine::new(StateContext::new("bench".into(), "w1-task".into(), "benchmark task"))
            .with_table(table);
    reset_peak_rss();
    let started = Instant::now();
    let mut save_ms = Vec::with_capacity(n);
    let mut base_ms = Vec::with_capacity(n);
    for i in 0..n {
        let event = phase_event(m.state());
        m.apply(event, Some(json!({"step": i, "agent": "builder"})))?;
        if i % 10 == 9 {
            m.create_checkpoint(vec![format!("src/file-{i}.rs")]);
        }
        let t = Instant::now();
        store.save_state(m.persisted())?;
        save_ms.push(ms(t.elapsed()));
        if let Some(bare) = &mut bare {
            let t = Instant::now();
            bare.save(m.persisted())?;
            base_ms.push(ms(t.elapsed()));
        }
    }
    let seconds = started.elapsed().as_secs_f64() - base_ms.iter().sum::<f64>() / 1000.0;
    if std::env::var_os("BENCH_TRACE").is_some() {
        for (k, block) in save_ms.chunks(100).enumerate() {
            eprintln!(
                "W1 saves {:>5}..: {:.4} ms",
                k * 100,
                block.iter().sum::<f64>() / block.len() as f64
            );
        }
    }
    let (first, last) = first_last(&save_ms);
    let mut extra = json!({
        "ms_per_save": round(save_ms.iter().sum::<f64>() / n as f64, 4),
        "first100_ms_per_save": round(first, 4),
        "last100_ms_per_save": round(last, 4),
        "growth_last_over_first": round(last / first, 3),
    });
    if !base_ms.is_empty() {
        let (first, last) = first_last(&base_ms);
        extra["baseline_ms_per_save"] = json!(round(base_ms.iter().sum::<f64>() / n as f64, 4));
        extra["baseline_growth_last_over_first"] = json!(round(last / first, 3));
        ratios(&mut extra, &["ms_per_save"]);
    }
    b.emit("W1", n, seconds, extra);
    Ok(())
}

/// W6: T tasks of one project, each with 10 transitions and 2 checkpoints; list them (median of 3).
/// On PostgreSQL the bare baseline loads the same rows, reads them with the store's three
/// queries in one read-only snapshot and builds them into the same states (checked equal);
/// the rows read alone are measured beside it. Each of its runs follows one of the project's.
fn w6(b: &Bench) -> Result<()> {
    let tasks = b.n(5000, 100);
    let (place, db) = b.fresh_db("w6")?;
    let mut bare = b.bare("w6_bare")?.map(BareListing::new);
    let store = SqliteStateStore::new(db.clone());
    let table = Arc::new(phase_table()?);
    for chunk in (0..tasks).collect::<Vec<_>>().chunks(250) {
        let mut states = Vec::with_capacity(chunk.len());
        for &t in chunk {
            let ctx = StateContext::new(
                "w6-project".into(),
                format!("task-{t:05}").into(),
                "listed task",
            );
            let mut m = StateMachine::new(ctx).with_table(Arc::clone(&table));
            for i in 0..10 {
                let event = phase_event(m.state());
                m.apply(event, Some(json!({"step": i})))?;
                if i == 4 || i == 9 {
                    m.create_checkpoint(vec![format!("out/{t}-{i}.txt")]);
                }
            }
            states.push(m.persisted().clone());
        }
        db.write(|tx| {
            for state in &states {
                store.save_in(tx, state)?;
            }
            Ok::<_, aigentflow_persistence::Error>(())
        })?;
        if let Some(bare) = &mut bare {
            for state in &states {
                bare.add(state, db.now())?;
            }
            bare.load()?;
        }
    }
    if let Some(bare) = &mut bare {
        bare.bare.settle()?;
    }
    place.settle()?;
    reset_peak_rss();
    let mut runs = Vec::new();
    let mut base_runs = Vec::new();
    let mut built_runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let listed = store.list_states(&"w6-project".into())?;
        runs.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(listed.len() == tasks, "listed {} of {tasks} tasks", listed.len());
        if let Some(bare) = &mut bare {
            let t = Instant::now();
            let read = bare.list("w6-project")?;
            base_runs.push(t.elapsed().as_secs_f64());
            let expected = (tasks, tasks * 10, tasks * 2);
            let got = (read.states, read.transitions, read.checkpoints);
            anyhow::ensure!(got == expected, "bare: listed {got:?} of {expected:?} rows");
            let t = Instant::now();
            let built = bare.build("w6-project")?;
            built_runs.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(built == listed, "bare: built states that differ from the store's");
        }
    }
    let mut extra = json!({});
    if !base_runs.is_empty() {
        // The goal's baseline is the least work that gives the same result, the states, as
        // the SQLite limit of BENCHMARKS.md also builds them; beside it, the rows only read.
        extra["baseline_seconds"] = json!(round(median(built_runs), 4));
        extra["bare_rows_seconds"] = json!(round(median(base_runs.clone()), 4));
        extra["seconds"] = json!(round(median(runs.clone()), 4));
        ratios(&mut extra, &["seconds"]);
        extra["ratio_to_bare_rows"] =
            json!(round(median(runs.clone()) / median(base_runs).max(1e-9), 2));
    }
    b.emit("W6", tasks, median(runs), extra);
    Ok(())
}

/// The `p`-th percentile of sorted `xs` (0 when empty).
fn percentile(xs: &[f64], p: usize) -> f64 {
    xs.get((xs.len() * p / 100).min(xs.len().saturating_sub(1))).copied().unwrap_or(0.0)
}

/// W4: N lessons (titles 3–8 words, summaries 10–30, details 0–60, 0–3 tags), then Q one-word
/// searches, limit 20, in rank order. On PostgreSQL the bare baseline loads the same lessons
/// and runs each search after the project's: the tsvector query ranked by `ts_rank_cd`.
fn w4(b: &Bench) -> Result<()> {
    let n = b.n(50_000, 1000);
    let queries = b.n(1000, 100);
    let (place, db) = b.fresh_db("w4")?;
    let mut bare = b.bare("w4_bare")?.map(BareLessons::new);
    let store = LessonsStore::new(db.clone());
    let mut words = Words::load(4)?;
    let tags = ["testing", "api", "docs", "ci", "sql", "perf", "react", "security"];
    for chunk_start in (0..n).step_by(1000) {
        let lessons: Vec<NewLesson> = (chunk_start..(chunk_start + 1000).min(n))
            .map(|i| {
                let details = words.below(61);
                NewLesson {
                    details: (details > 0).then(|| words.sentence(details, details)),
                    tags: (0..words.below(4))
                        .map(|_| tags[words.below(tags.len())].into())
                        .collect(),
                    confidence: Some(words.below(101) as f64 / 100.0),
                    ..NewLesson::new(
                        LessonCategory::ALL[i % LessonCategory::ALL.len()],
                        words.sentence(3, 8),
                        words.sentence(10, 30),
                    )
                }
            })
            .collect();
        db.write(|tx| -> Result<()> {
            for lesson in &lessons {
                store.create_in(tx, lesson)?;
            }
            Ok(())
        })?;
        if let Some(bare) = &mut bare {
            bare.add(&lessons, db.now())?;
            bare.load()?;
        }
    }
    if let Some(bare) = &mut bare {
        bare.bare.settle()?;
    }
    place.settle()?;
    let terms: Vec<String> = (0..queries).map(|_| words.word()).collect();
    reset_peak_rss();
    let started = Instant::now();
    let mut times = Vec::with_capacity(queries);
    let mut base_times = Vec::with_capacity(queries);
    let mut hits = 0;
    let mut base_hits = 0;
    for term in &terms {
        let t = Instant::now();
        hits +=
            store.search(&SearchOptions { limit: Some(20), ..SearchOptions::text(term) })?.len();
        times.push(ms(t.elapsed()));
        if let Some(bare) = &mut bare {
            let t = Instant::now();
            base_hits += bare.search(term, 20)?;
            base_times.push(ms(t.elapsed()));
        }
    }
    let seconds = started.elapsed().as_secs_f64() - base_times.iter().sum::<f64>() / 1000.0;
    times.sort_by(|a, b| a.total_cmp(b));
    let mut extra = json!({
        "lessons": n,
        "p50_ms": round(median(times.clone()), 3),
        "p99_ms": round(percentile(&times, 99), 3),
        "hits": hits,
    });
    if !base_times.is_empty() {
        base_times.sort_by(|a, b| a.total_cmp(b));
        extra["baseline_p50_ms"] = json!(round(median(base_times.clone()), 3));
        extra["baseline_p99_ms"] = json!(round(percentile(&base_times, 99), 3));
        extra["baseline_hits"] = json!(base_hits);
        ratios(&mut extra, &["p50_ms", "p99_ms"]);
    }
    b.emit("W4", queries, seconds, extra);
    Ok(())
}

/// W5: N agent invocations (20 agents over 30 days, outcomes mixed, ~70% with token usage),
/// then Q metrics calls for a 7-day window. On PostgreSQL the bare baseline loads the same
/// invocations and runs each call after the project's: one aggregate statement.
fn w5(b: &Bench) -> Result<()> {
    let n = b.n(500_000, 10_000);
    let calls = b.n(100, 100);
    let (place, db) = b.fresh_db("w5")?;
    let mut bare = b.bare("w5_bare")?.map(BareTracker::new);
    let tracker = ExecutionTracker::new(db.clone());
    let mut words = Words::load(5)?;
    let agents: Vec<String> = (0..20).map(|i| format!("agent-{i:02}")).collect();
    let now = db.now();
    let per_trace = 500;
    for chunk_start in (0..n).step_by(10_000) {
        db.write(|tx| -> Result<()> {
            let mut trace = None;
            for i in chunk_start..(chunk_start + 10_000).min(n) {
                if i % per_trace == 0 || trace.is_none() {
                    let project = ProjectId::new("bench-project");
                    let task = TaskId::new(format!("task-{}", i / per_trace));
                    trace = Some(tracker.start_trace_in(tx, &project, &task, "bench")?.id);
                    if let Some(bare) = &mut bare {
                        let id = format!("trace-{}", i / per_trace);
                        bare.add_trace(&id, project.as_str(), task.as_str(), now);
                    }
                }
                let Some(trace_id) = trace.clone() else { unreachable!() };
                let started =
                    now - chrono::Duration::milliseconds(words.below(30 * 86_400_000) as i64);
                let invocation = NewInvocation {
                    outcome: Some(Outcome::ALL[words.below(Outcome::ALL.len())]),
                    quality_score: (words.below(10) < 8).then(|| words.below(101) as f64 / 100.0),
                    token_usage: (words.below(10) < 7).then(|| {
                        TokenUsage::new(words.below(20_000) as u64, words.below(5_000) as u64)
                    }),
                    ..NewInvocation::new(
                        trace_id,
                        agents[words.below(agents.len())].clone(),
                        started,
                    )
                };
                tracker.record_invocation_in(tx, &invocation)?;
                if let Some(bare) = &mut bare {
                    bare.add_invocation(&format!("trace-{}", i / per_trace), &invocation)?;
                }
            }
            Ok(())
        })?;
        if let Some(bare) = &mut bare {
            bare.load()?;
        }
    }
    if let Some(bare) = &mut bare {
        bare.bare.settle()?;
    }
    place.settle()?;
    reset_peak_rss();
    let started = Instant::now();
    let mut times = Vec::with_capacity(calls);
    let mut base_times = Vec::with_capacity(calls);
    let mut counted = 0;
    let mut base_counted = 0;
    for i in 0..calls {
        let agent = &agents[i % agents.len()];
        let t = Instant::now();
        counted += tracker.agent_metrics(agent, 7)?.total_invocations;
        times.push(ms(t.elapsed()));
        if let Some(bare) = &mut bare {
            let t = Instant::now();
            base_counted += bare.metrics(agent, 7)?.total;
            base_times.push(ms(t.elapsed()));
        }
    }
    let base_seconds = base_times.iter().sum::<f64>() / 1000.0;
    let seconds = started.elapsed().as_secs_f64() - base_seconds;
    times.sort_by(|a, b| a.total_cmp(b));
    let mut extra = json!({
        "invocations": n,
        "ms_per_call": round(times.iter().sum::<f64>() / calls as f64, 3),
        "p50_ms": round(median(times.clone()), 3),
        "p99_ms": round(percentile(&times, 99), 3),
        "counted": counted,
    });
    if !base_times.is_empty() {
        base_times.sort_by(|a, b| a.total_cmp(b));
        extra["baseline_ms_per_call"] = json!(round(base_seconds * 1000.0 / calls as f64, 3));
        extra["baseline_p50_ms"] = json!(round(median(base_times.clone()), 3));
        extra["baseline_p99_ms"] = json!(round(percentile(&base_times, 99), 3));
        extra["baseline_counted"] = json!(base_counted);
        ratios(&mut extra, &["ms_per_call", "p50_ms", "p99_ms"]);
    }
    b.emit("W5", calls, seconds, extra);
    Ok(())
}

/// One writer of W7: its own task, saved with one new transition and one audit entry per call
/// in one transaction (every 10th call also an invocation); returns each call's time in ms.
fn w7_writer(db: &Database, writer: usize, calls: usize) -> Result<Vec<f64>> {
    let store = SqliteStateStore::new(db.clone());
    let log = AuditLog::new(db.clone());
    let tracker = ExecutionTracker::new(db.clone());
    let project = ProjectId::new("w7-project");
    let task = TaskId::new(format!("w7-task-{writer}"));
    let trace = tracker.start_trace(&project, &task, "bench")?.id;
    let mut m = StateMachine::new(StateContext::new(project, task.clone(), "a written task"))
        .with_table(Arc::new(phase_table()?));
    let mut words = Words::load(70 + writer as u64)?;
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls {
        let event = phase_event(m.state());
        m.apply(event, Some(json!({"step": i})))?;
        let entry = AuditEntry { task_id: Some(task.clone()), ..audit_entry(&mut words, i) };
        let invocation = (i % 10 == 0).then(|| NewInvocation {
            outcome: Some(Outcome::Success),
            ..NewInvocation::new(trace.clone(), format!("agent-{writer}"), db.now())
        });
        let t = Instant::now();
        db.write(|tx| -> Result<()> {
            store.save_in(tx, m.persisted())?;
            log.log_in(tx, &entry)?;
            if let Some(invocation) = &invocation {
                tracker.record_invocation_in(tx, invocation)?;
            }
            Ok(())
        })?;
        times.push(ms(t.elapsed()));
    }
    Ok(times)
}

/// W7, threads only: N calls by 8 writer threads at once, each on its own task, against the
/// same mix by one thread alone (the baseline, in the same run, before and after). The
/// BENCHMARKS.md variant with 4 processes is not run.
fn w7(b: &Bench) -> Result<()> {
    let threads = 8;
    let calls = b.n(4000, 400);
    let (_place, db) = b.fresh_db("w7")?;
    let per_thread = calls / threads;
    let total = per_thread * threads;
    reset_peak_rss();
    let alone = |writer: usize| -> Result<f64> {
        let t = Instant::now();
        w7_writer(&db, writer, total / 2)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let before = alone(100)?;
    let started = Instant::now();
    let mut times = std::thread::scope(|scope| -> Result<Vec<f64>> {
        let writers: Vec<_> = (0..threads)
            .map(|w| {
                let db = &db;
                scope.spawn(move || w7_writer(db, w, per_thread))
            })
            .collect();
        let mut all = Vec::with_capacity(total);
        for writer in writers {
            let times = writer.join().map_err(|_| anyhow::anyhow!("a writer thread panicked"))?;
            all.extend(times?);
        }
        Ok(all)
    })?;
    let grouped = started.elapsed().as_secs_f64();
    let after = alone(101)?;
    times.sort_by(|a, b| a.total_cmp(b));
    let mut extra = json!({
        "threads": threads,
        "commits_per_s": round(total as f64 / grouped, 1),
        "p50_ms": round(median(times.clone()), 3),
        "p99_ms": round(percentile(&times, 99), 3),
        "baseline_commits_per_s": round(total as f64 / (before + after), 1),
    });
    ratios(&mut extra, &["commits_per_s"]);
    b.emit("W7", total, grouped, extra);
    Ok(())
}

/// W8's models: name, provider, and price per million input and output tokens in USD.
const W8_MODELS: [(&str, &str, i64, i64); 6] = [
    ("claude-opus", "anthropic", 15, 75),
    ("claude-sonnet", "anthropic", 3, 15),
    ("claude-haiku", "anthropic", 1, 5),
    ("gpt-large", "openai", 5, 15),
    ("gpt-mini", "openai", 1, 4),
    ("local-coder", "local", 0, 0),
];

/// Spans per batch in W8.
const W8_BATCH: usize = 1000;

/// W8's batch `k` of finished LLM spans, all top-level in `trace`: a random id, started over
/// the 30 days before `now`, 0.2 to 20 s long, tokens in and out, an exact cost from the
/// model's price, the latency, and small attributes at the end.
fn w8_batch(
    words: &mut Words,
    trace: &aigentflow_tracker::TraceId,
    k: usize,
    len: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<FinishedSpan>> {
    let reasons = ["stop", "length", "tool_use"];
    (0..len)
        .map(|_| {
            let (model, provider, input_price, output_price) =
                W8_MODELS[words.below(W8_MODELS.len())];
            let started = now - chrono::Duration::milliseconds(words.below(30 * 86_400_000) as i64);
            let latency = 200 + words.below(19_800) as i64;
            let (input, output) = (words.below(20_000) as i64, words.below(4_000) as i64);
            // A price per million tokens is that many thousandths of a nano-unit per token.
            let nanos = input * input_price * 1000 + output * output_price * 1000;
            let start = NewSpan {
                started_at: Some(started),
                session_id: Some(format!("session-{k}")),
                ..NewSpan::new(trace.clone(), SpanKind::Llm, words.word())
            };
            let end = SpanEnd {
                status: if words.below(50) == 0 { SpanStatus::Error } else { SpanStatus::Ok },
                ended_at: Some(started + chrono::Duration::milliseconds(latency)),
                attributes: Some(json!({
                    "finish_reason": reasons[words.below(reasons.len())],
                    "temperature": words.below(11) as f64 / 10.0,
                })),
            };
            let id = SpanId::new(format!("{:016x}{:016x}", words.next(), words.next()));
            Ok(FinishedSpan::new(id, start, end).with_llm(LlmCall {
                model: model.to_owned(),
                provider: provider.to_owned(),
                input_tokens: input,
                output_tokens: output,
                cost: Some(Money::from_nanos(nanos, "USD")?),
                latency_ms: Some(latency),
            }))
        })
        .collect()
}

/// W8: N finished LLM spans (6 models of 3 providers, over 30 days, tokens and an exact cost
/// each) recorded through `record_spans` in batches of 1,000, one trace per batch; then the
/// cost rollup by model per day over them, 8 times, the median of the last 3 (a statement's
/// plan on PostgreSQL settles after 5 runs). Beside each, in the same run and on
/// the same backend, the bare baseline ([`BareSpans`]): the same rows in a transaction of their
/// own per batch, and one `GROUP BY` query.
fn w8(b: &Bench) -> Result<()> {
    let n = b.n(1_000_000, 10_000);
    let (place, db) = b.fresh_db("w8")?;
    let mut bare = match &b.target {
        Where::Sqlite(dir) => BareSpans::sqlite(&dir.path().join("w8_bare.db"))?,
        Where::Postgres(server) => BareSpans::postgres(server, "w8_bare")?,
    };
    let tracker = ExecutionTracker::new(db.clone());
    let mut words = Words::load(8)?;
    let project = ProjectId::new("w8-project");
    let batches = n.div_ceil(W8_BATCH);
    let traces = db.write(|tx| -> Result<Vec<_>> {
        (0..batches)
            .map(|k| {
                let task = TaskId::new(format!("w8-task-{k}"));
                Ok(tracker.start_trace_in(tx, &project, &task, "bench")?.id)
            })
            .collect()
    })?;
    let now = db.now();
    reset_peak_rss();
    let (mut ours, mut theirs) = (0.0, 0.0);
    for (k, trace) in traces.iter().enumerate() {
        let len = W8_BATCH.min(n - k * W8_BATCH);
        let spans = w8_batch(&mut words, trace, k, len, now)?;
        let t = Instant::now();
        let recorded = tracker.record_spans(&spans)?;
        ours += t.elapsed().as_secs_f64();
        anyhow::ensure!(recorded == len, "recorded {recorded} of {len} spans");
        let t = Instant::now();
        bare.record(&spans, project.as_str())?;
        theirs += t.elapsed().as_secs_f64();
        bare.checkpoint()?;
    }
    bare.settle()?;
    place.settle()?;
    let query = CostQuery { project: None, by: CostGroup::Model, since: None, until: None };
    let (mut runs, mut base_runs) = (Vec::new(), Vec::new());
    for run in 0..8 {
        let t = Instant::now();
        let rows = tracker.cost_rollup(&query)?;
        let ours_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let total = bare.rollup()?;
        // The last three count: PostgreSQL settles the plan of a statement run five times.
        if run >= 5 {
            runs.push(ours_s);
            base_runs.push(t.elapsed().as_secs_f64());
        }
        let mut ours = RollupTotal::default();
        for r in &rows {
            ours.add(
                r.calls as i64,
                r.input_tokens,
                r.output_tokens,
                r.cost.as_ref().map(Money::nanos),
            );
        }
        anyhow::ensure!(ours == total, "the rollups differ: ours {ours:?}, bare {total:?}");
        anyhow::ensure!(total.calls == n as i64, "the rollup counted {} of {n} spans", total.calls);
    }
    let mut extra = json!({
        "batch": W8_BATCH,
        "spans_per_s": round(n as f64 / ours, 1),
        "record_s": round(ours, 4),
        "rollup_s": round(median(runs), 4),
        "rollup_rows": bare.rollup()?.rows,
        "baseline_spans_per_s": round(n as f64 / theirs, 1),
        "baseline_record_s": round(theirs, 4),
        "baseline_rollup_s": round(median(base_runs), 4),
    });
    ratios(&mut extra, &["record_s", "rollup_s"]);
    b.emit("W8", n, ours, extra);
    Ok(())
}

type Workload = fn(&Bench) -> Result<()>;

fn main() -> Result<()> {
    let args = Args::parse();
    let factor = args.scale * if args.quick { 0.1 } else { 1.0 };
    let target = match &args.db {
        None => Where::Sqlite(tempfile::tempdir()?),
        Some(url) if aigentflow_persistence::is_postgres_url(url) => {
            let server = Server::connect(url)?;
            server.drop_all_on_interrupt()?;
            eprintln!(
                "aigentflow-bench: PostgreSQL {} at {}: a fresh database per workload and per baseline",
                server.version()?,
                server.shown()
            );
            Where::Postgres(server)
        }
        Some(other) => anyhow::bail!(
            "--db takes a postgres:// or postgresql:// URL, not \"{}\" (without --db each workload runs on a fresh SQLite file in a temp dir)",
            aigentflow_persistence::display_url(other)
        ),
    };
    let bench = Bench { factor, target };
    let workloads: [(&str, Workload); 9] = [
        ("W0", w0),
        ("W1", w1),
        ("W2", w2),
        ("W3", w3),
        ("W4", w4),
        ("W5", w5),
        ("W6", w6),
        ("W7", w7),
        ("W8", w8),
    ];
    let only: Vec<String> = args.only.iter().map(|w| w.trim().to_uppercase()).collect();
    if let Some(unknown) = only.iter().find(|w| !workloads.iter().any(|(name, _)| name == w)) {
        anyhow::bail!("unknown workload {unknown}; known: W0, W1, W2, W3, W4, W5, W6, W7, W8");
    }
    // A workload that fails says so on its line and the others still run.
    let mut failed = Vec::new();
    for (name, run) in workloads {
        if only.is_empty() || only.iter().any(|w| w == name) {
            if let Err(e) = run(&bench) {
                if bench.interrupted() {
                    // Its databases were dropped under it; the interrupt handler ends the run.
                    loop {
                        std::thread::park();
                    }
                }
                let error = format!("{e:#}");
                eprintln!("workload {name}: {error}");
                println!(
                    "{}",
                    json!({"workload": name, "backend": bench.backend(), "error": error})
                );
                failed.push(name);
            }
        }
    }
    anyhow::ensure!(failed.is_empty(), "workloads that failed: {}", failed.join(", "));
    Ok(())
}
