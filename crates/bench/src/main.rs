//! `aigentflow-bench`: the workloads of BENCHMARKS.md, through the public API, each on a fresh
//! file database in a temp dir with default options. Prints one JSON object per workload.
//!
//! Run in release mode: `cargo run --release -p aigentflow-bench -- [--quick] [--only W1,W6] [--scale F]`.
//! `BENCH_TRACE=1` also prints W1's save cost per block of 100 saves on stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigentflow_audit::{AuditEntry, AuditLog, AuditQuery, Category, ExportFormat, ExportOptions};
use aigentflow_core_states::{
    Event, FromStates, ProjectId, Rule, StateContext, StateMachine, StateStore, Target, TaskId,
    TransitionTable, WorkflowState,
};
use aigentflow_lessons::{Category as LessonCategory, LessonsStore, NewLesson, SearchOptions};
use aigentflow_persistence::{Database, SqliteStateStore};
use aigentflow_tracker::{ExecutionTracker, NewInvocation, Outcome, TokenUsage};
use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Map, Value};

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
}

struct Bench {
    factor: f64,
    dir: tempfile::TempDir,
}

impl Bench {
    /// A size scaled by --quick and --scale, at least `min`.
    fn n(&self, full: usize, min: usize) -> usize {
        ((full as f64 * self.factor).round() as usize).max(min)
    }

    fn fresh_db(&self, name: &str) -> Result<(Database, PathBuf)> {
        let path = self.dir.path().join(format!("{name}.db"));
        Ok((Database::open(&path).with_context(|| format!("open {}", path.display()))?, path))
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
    let categories = Category::ALL;
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
        ..AuditEntry::new(action, categories[i % categories.len()])
    }
}

/// W2: N entries each in its own transaction, then N more in batches of 100.
fn w2(b: &Bench) -> Result<()> {
    let n = b.n(100_000, 1000);
    let (db, _) = b.fresh_db("w2")?;
    let log = AuditLog::new(db);
    let mut words = Words::load(2)?;
    let entries: Vec<AuditEntry> = (0..n).map(|i| audit_entry(&mut words, i)).collect();
    reset_peak_rss();
    let started = Instant::now();
    for e in &entries {
        log.log(e)?;
    }
    let single = started.elapsed().as_secs_f64();
    let t = Instant::now();
    for chunk in entries.chunks(100) {
        log.log_batch(chunk)?;
    }
    let batch = t.elapsed().as_secs_f64();
    emit(
        "W2",
        n,
        single,
        json!({"us_per_op": round(single * 1e6 / n as f64, 2), "batch_us_per_op": round(batch * 1e6 / n as f64, 2)}),
    );
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

/// W3: N rows of one project exported as CSV, JSON and JSON Lines to a byte-counting sink.
fn w3(b: &Bench) -> Result<()> {
    let n = b.n(200_000, 1000);
    let (db, path) = b.fresh_db("w3")?;
    let log = AuditLog::new(db.clone());
    let mut words = Words::load(3)?;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        batch.push(audit_entry(&mut words, i));
        if batch.len() == 1000 || i + 1 == n {
            log.log_batch(&batch)?;
            batch.clear();
        }
    }
    drop(batch);
    // The log was written earlier: close it, so that no checkpoint of the writes above runs
    // during the exports, and open it again.
    drop(log);
    db.close()?;
    let log = AuditLog::new(Database::open(&path)?);
    let query = AuditQuery { project_id: Some("bench-project".into()), ..AuditQuery::default() };
    let before = current_rss_mb();
    reset_peak_rss();
    let mut seconds = Vec::new();
    let mut csv_bytes = 0;
    for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
        let mut sink = CountingSink(0);
        let options = ExportOptions { query: query.clone(), ..ExportOptions::new(format) };
        let t = Instant::now();
        let report = log.export(&mut sink, &options, |_| {})?;
        seconds.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(report.rows == n as u64, "exported {} of {n} rows", report.rows);
        if format == ExportFormat::Csv {
            csv_bytes = sink.0;
        }
    }
    emit(
        "W3",
        n,
        seconds.iter().sum(),
        json!({
            "csv_seconds": round(seconds[0], 4),
            "json_seconds": round(seconds[1], 4),
            "jsonl_seconds": round(seconds[2], 4),
            "csv_bytes": csv_bytes,
            "rss_growth_mb": round((peak_rss_mb() - before).max(0.0), 2),
        }),
    );
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

fn emit(workload: &str, n: usize, seconds: f64, extra: Value) {
    let mut line = Map::new();
    line.insert("workload".into(), json!(workload));
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

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// W0: open + migrate a fresh file; reopen the up-to-date file (median of 20 each).
fn w0(b: &Bench) -> Result<()> {
    let runs = 20;
    let started = Instant::now();
    let mut fresh = Vec::new();
    let mut reopen = Vec::new();
    for i in 0..runs {
        let path = b.dir.path().join(format!("w0-{i}.db"));
        let t = Instant::now();
        Database::open(&path)?.close()?;
        fresh.push(ms(t.elapsed()));
        let t = Instant::now();
        Database::open(&path)?.close()?;
        reopen.push(ms(t.elapsed()));
    }
    emit(
        "W0",
        runs,
        started.elapsed().as_secs_f64(),
        json!({"fresh_open_ms": round(median(fresh), 3), "reopen_ms": round(median(reopen), 3)}),
    );
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

/// W1: one task through N transitions, a checkpoint every 10th, the whole state saved after each.
fn w1(b: &Bench) -> Result<()> {
    let n = b.n(2000, 200);
    let (db, _) = b.fresh_db("w1")?;
    let store = SqliteStateStore::new(db);
    let table = Arc::new(phase_table()?);
    let mut m =
        StateMachine::new(StateContext::new("bench".into(), "w1-task".into(), "benchmark task"))
            .with_table(table);
    reset_peak_rss();
    let started = Instant::now();
    let mut save_ms = Vec::with_capacity(n);
    for i in 0..n {
        let event = phase_event(m.state());
        m.apply(event, Some(json!({"step": i, "agent": "builder"})))?;
        if i % 10 == 9 {
            m.create_checkpoint(vec![format!("src/file-{i}.rs")]);
        }
        let t = Instant::now();
        store.save_state(m.persisted())?;
        save_ms.push(ms(t.elapsed()));
    }
    let seconds = started.elapsed().as_secs_f64();
    if std::env::var_os("BENCH_TRACE").is_some() {
        for (k, block) in save_ms.chunks(100).enumerate() {
            eprintln!(
                "W1 saves {:>5}..: {:.4} ms",
                k * 100,
                block.iter().sum::<f64>() / block.len() as f64
            );
        }
    }
    let window = 100.min(n / 2);
    let first = save_ms[..window].iter().sum::<f64>() / window as f64;
    let last = save_ms[n - window..].iter().sum::<f64>() / window as f64;
    emit(
        "W1",
        n,
        seconds,
        json!({
            "first100_ms_per_save": round(first, 4),
            "last100_ms_per_save": round(last, 4),
            "growth_last_over_first": round(last / first, 3),
        }),
    );
    Ok(())
}

/// W6: T tasks of one project, each with 10 transitions and 2 checkpoints; list them (median of 3).
fn w6(b: &Bench) -> Result<()> {
    let tasks = b.n(5000, 100);
    let (db, _) = b.fresh_db("w6")?;
    let store = SqliteStateStore::new(db.clone());
    let table = Arc::new(phase_table()?);
    for chunk in (0..tasks).collect::<Vec<_>>().chunks(250) {
        db.write(|tx| {
            for &t in chunk {
                let ctx = StateContext::new(
                    "w6-project".into(),
                    format!("task-{t:05}").into(),
                    "listed task",
                );
                let mut m = StateMachine::new(ctx).with_table(Arc::clone(&table));
                for i in 0..10 {
                    let event = phase_event(m.state());
                    m.apply(event, Some(json!({"step": i}))).map_err(|e| {
                        aigentflow_persistence::Error::InvalidInput {
                            what: "event",
                            reason: e.to_string().into(),
                        }
                    })?;
                    if i == 4 || i == 9 {
                        m.create_checkpoint(vec![format!("out/{t}-{i}.txt")]);
                    }
                }
                store.save_in(tx, m.persisted())?;
            }
            Ok::<_, aigentflow_persistence::Error>(())
        })?;
    }
    reset_peak_rss();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let listed = store.list_states(&"w6-project".into())?;
        runs.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(listed.len() == tasks, "listed {} of {tasks} tasks", listed.len());
    }
    emit("W6", tasks, median(runs), json!({}));
    Ok(())
}

/// W4: N lessons (titles 3–8 words, summaries 10–30, details 0–60, 0–3 tags), then Q one-word
/// searches, limit 20, in bm25 order.
fn w4(b: &Bench) -> Result<()> {
    let n = b.n(50_000, 1000);
    let queries = b.n(1000, 100);
    let (db, _) = b.fresh_db("w4")?;
    let store = LessonsStore::new(db.clone());
    let mut words = Words::load(4)?;
    let tags = ["testing", "api", "docs", "ci", "sql", "perf", "react", "security"];
    for chunk_start in (0..n).step_by(1000) {
        db.write(|tx| -> Result<()> {
            for i in chunk_start..(chunk_start + 1000).min(n) {
                let details = words.below(61);
                let lesson = NewLesson {
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
                };
                store.create_in(tx, &lesson)?;
            }
            Ok(())
        })?;
    }
    let terms: Vec<String> = (0..queries).map(|_| words.word()).collect();
    reset_peak_rss();
    let started = Instant::now();
    let mut times = Vec::with_capacity(queries);
    let mut hits = 0;
    for term in &terms {
        let t = Instant::now();
        hits +=
            store.search(&SearchOptions { limit: Some(20), ..SearchOptions::text(term) })?.len();
        times.push(ms(t.elapsed()));
    }
    let seconds = started.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.total_cmp(b));
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    emit(
        "W4",
        queries,
        seconds,
        json!({"lessons": n, "p50_ms": round(median(times), 3), "p99_ms": round(p99, 3), "hits": hits}),
    );
    Ok(())
}

/// W5: N agent invocations (20 agents over 30 days, outcomes mixed, ~70% with token usage),
/// then Q metrics calls for a 7-day window.
fn w5(b: &Bench) -> Result<()> {
    let n = b.n(500_000, 10_000);
    let calls = b.n(100, 100);
    let (db, _) = b.fresh_db("w5")?;
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
            }
            Ok(())
        })?;
    }
    reset_peak_rss();
    let started = Instant::now();
    let mut times = Vec::with_capacity(calls);
    let mut counted = 0;
    for i in 0..calls {
        let t = Instant::now();
        counted += tracker.agent_metrics(&agents[i % agents.len()], 7)?.total_invocations;
        times.push(ms(t.elapsed()));
    }
    let seconds = started.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.total_cmp(b));
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    emit(
        "W5",
        calls,
        seconds,
        json!({"invocations": n, "ms_per_call": round(seconds * 1000.0 / calls as f64, 3), "p50_ms": round(median(times), 3), "p99_ms": round(p99, 3), "counted": counted}),
    );
    Ok(())
}

type Workload = fn(&Bench) -> Result<()>;

fn main() -> Result<()> {
    let args = Args::parse();
    let factor = args.scale * if args.quick { 0.1 } else { 1.0 };
    let bench = Bench { factor, dir: tempfile::tempdir()? };
    let workloads: [(&str, Workload); 7] =
        [("W0", w0), ("W1", w1), ("W2", w2), ("W3", w3), ("W4", w4), ("W5", w5), ("W6", w6)];
    let only: Vec<String> = args.only.iter().map(|w| w.trim().to_uppercase()).collect();
    if let Some(unknown) = only.iter().find(|w| !workloads.iter().any(|(name, _)| name == w)) {
        anyhow::bail!("unknown workload {unknown}; known: W0, W1, W2, W3, W4, W5, W6");
    }
    for (name, run) in workloads {
        if only.is_empty() || only.iter().any(|w| w == name) {
            run(&bench).with_context(|| format!("workload {name}"))?;
        }
    }
    Ok(())
}
