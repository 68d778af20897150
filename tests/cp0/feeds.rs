//! Reading only what is new (issue 14): pollers read the audit log and the trace feed by
//! cursor, a page at a time, and a watch wakes a follower when another process commits. Pages
//! cover every row once, in order, from any cursor and with any page sizes; a follower that
//! reads while threads and processes write sees every id once, in order (on PostgreSQL too,
//! where a number taken at INSERT could become visible after a larger one); the trace feed's
//! numbers only grow, are never reused or changed, and number the traces already there when
//! the feed is added. Scenarios run on both backends (`on_both!`) unless named for one.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigentflow::audit::{AuditEntry, AuditLog, AuditQuery, Category};
use aigentflow::persistence::{Backend, Database, Watched};
use aigentflow::states::{ProjectId, TaskId};
use aigentflow::tracker::{ExecutionTracker, NewInvocation, TraceCursor, TraceId};
use proptest::prelude::*;

use crate::support::*;

/// The most one page returns, on both stores.
const AUDIT_MAX: u64 = aigentflow::audit::MAX_PAGE;
const TRACE_MAX: u64 = aigentflow::tracker::MAX_PAGE;

/// How long a scenario waits for something that should come at once (a wake-up, a row) before
/// it fails: generous, so a loaded machine never fails it, and never a measure of speed.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `sql` on `t`'s database around the stores (a SQLite connection to the file, or a
/// PostgreSQL session of the tables' owner); the refusal's message if it is refused.
fn around(t: &TestDb, sql: &str) -> Result<(), String> {
    match t.backend() {
        Backend::Sqlite => {
            raw(Path::new(t.location())).execute_batch(sql).map_err(|e| e.to_string())
        }
        Backend::Postgres => postgres::Client::connect(t.location(), postgres::NoTls)
            .unwrap()
            .batch_execute(sql)
            .map_err(|e| pg_error(&e)),
    }
}

/// Every id of the log, in id order, read by cursor in the largest pages.
fn all_ids(log: &AuditLog) -> Vec<i64> {
    let (mut cursor, mut ids) = (0, Vec::new());
    loop {
        let page = log.since(cursor, AUDIT_MAX).unwrap();
        let Some(last) = page.last() else { return ids };
        cursor = last.id;
        ids.extend(page.iter().map(|r| r.id));
    }
}

/// Every trace of the feed, in feed order, read by cursor in the largest pages.
fn all_traces(tracker: &ExecutionTracker) -> Vec<TraceId> {
    let (mut cursor, mut ids) = (TraceCursor::START, Vec::new());
    loop {
        let page = tracker.traces_since(cursor, TRACE_MAX).unwrap();
        if page.traces.is_empty() {
            assert_eq!(page.next, cursor, "an empty page keeps the cursor");
            return ids;
        }
        cursor = page.next;
        ids.extend(page.traces.into_iter().map(|t| t.id));
    }
}

fn start(tracker: &ExecutionTracker, task: &str) -> TraceId {
    tracker.start_trace(&ProjectId::new("p"), &TaskId::new(task), "prompt").unwrap().id
}

/// Asserts that a follower saw `all` exactly, naming what it skipped, repeated or reordered
/// rather than printing both lists.
fn assert_saw_all<T: Ord + Clone + std::fmt::Debug>(seen: &[T], all: &[T]) {
    let have: BTreeSet<&T> = seen.iter().collect();
    let skipped: Vec<&T> = all.iter().filter(|x| !have.contains(x)).collect();
    assert!(
        skipped.is_empty(),
        "the follower skipped {} of {}: {skipped:?}",
        skipped.len(),
        all.len()
    );
    assert_eq!(seen.len(), have.len(), "the follower saw some twice");
    let first_wrong = seen.iter().zip(all).position(|(a, b)| a != b);
    assert_eq!(first_wrong, None, "the follower's order differs from the log's");
    assert_eq!(seen.len(), all.len(), "the follower saw rows the log does not hold");
}

/// A page size drawn from a seed, for followers that vary theirs (1 to 7).
fn next_size(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    1 + (*seed >> 33) % 7
}

on_both! {
/// From any cursor, any sequence of page sizes walks the rest of the log: each page holds at
/// most its limit, ids strictly increase, together they are every entry after the cursor once,
/// and the page after the last is empty. `latest(n)` is the last n entries in id order, and a
/// page's records are the records a query returns.
fn audit_pages_by_cursor_cover_every_entry_once_in_order(t) {
    let log = AuditLog::new(t.db().clone());
    for (b, n) in [1usize, 3, 7, 1, 12, 5, 20, 2].into_iter().enumerate() {
        let batch: Vec<AuditEntry> =
            (0..n).map(|i| AuditEntry::new(format!("b{b}-{i}"), Category::User)).collect();
        log.log_batch(&batch).unwrap();
    }
    let all = all_ids(&log);
    assert_eq!(all, (1..=51).collect::<Vec<i64>>());
    let mut queried = log.query(&AuditQuery { limit: Some(100), ..AuditQuery::default() }).unwrap();
    queried.sort_by_key(|r| r.id);
    assert_eq!(log.since(0, AUDIT_MAX).unwrap(), queried, "pages hold the records a query does");
    check(64, (proptest::collection::vec(1u64..=12, 1..8), 0usize..=51), |(sizes, start)| {
        let mut cursor = if start == 0 { 0 } else { all[start - 1] };
        let mut seen = Vec::new();
        for k in 0.. {
            let limit = sizes[k % sizes.len()];
            let page = log.since(cursor, limit).unwrap();
            prop_assert!(page.len() as u64 <= limit, "{} > {limit}", page.len());
            if page.is_empty() {
                break;
            }
            for r in &page {
                prop_assert!(r.id > cursor, "{} after {cursor}", r.id);
                cursor = r.id;
                seen.push(r.id);
            }
        }
        prop_assert_eq!(&seen[..], &all[start..]);
        let latest: Vec<i64> = log.latest(sizes[0]).unwrap().iter().map(|r| r.id).collect();
        let n = (sizes[0] as usize).min(all.len());
        prop_assert_eq!(&latest[..], &all[all.len() - n..]);
        Ok(())
    });
    assert!(log.since(51, 1).unwrap().is_empty());
    assert!(log.since(i64::MAX, AUDIT_MAX).unwrap().is_empty());
}
}

on_both! {
/// The trace feed in pages: from any cursor and with any page sizes, every trace after it
/// once, in the order the traces were started; an empty page keeps the cursor. A trace that
/// changes later (completed) is not fed again; `traces_end` is where only new traces follow.
fn trace_pages_by_cursor_cover_every_trace_once_in_start_order(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
    let started: Vec<TraceId> = (0..30).map(|i| start(&tracker, &format!("task-{i}"))).collect();
    assert_eq!(all_traces(&tracker), started);
    check(64, (proptest::collection::vec(1u64..=9, 1..8), 0usize..=30), |(sizes, from)| {
        let mut cursor = TraceCursor::START;
        if from > 0 {
            cursor = tracker.traces_since(cursor, from as u64).unwrap().next;
        }
        let mut seen = Vec::new();
        for k in 0.. {
            let limit = sizes[k % sizes.len()];
            let page = tracker.traces_since(cursor, limit).unwrap();
            prop_assert!(page.traces.len() as u64 <= limit);
            if page.traces.is_empty() {
                prop_assert_eq!(page.next, cursor);
                break;
            }
            prop_assert!(page.next > cursor, "{} after {}", page.next, cursor);
            cursor = page.next;
            seen.extend(page.traces.into_iter().map(|t| t.id));
        }
        prop_assert_eq!(&seen[..], &started[from..]);
        Ok(())
    });
    let end = tracker.traces_end().unwrap();
    assert!(tracker.traces_since(end, TRACE_MAX).unwrap().traces.is_empty());
    tracker.complete_trace(&started[3], true, None, None).unwrap();
    assert!(tracker.traces_since(end, TRACE_MAX).unwrap().traces.is_empty(), "not fed again");
    let later = start(&tracker, "later");
    let page = tracker.traces_since(end, TRACE_MAX).unwrap();
    assert_eq!(page.traces.iter().map(|t| &t.id).collect::<Vec<_>>(), [&later]);
    assert_eq!(page.next, tracker.traces_end().unwrap());
    // A cursor kept as text or JSON reads back as the same place.
    let kept: TraceCursor = page.next.to_string().parse().unwrap();
    let json: TraceCursor = serde_json::from_value(serde_json::to_value(end).unwrap()).unwrap();
    assert_eq!((kept, json), (page.next, end));
}
}

on_both! {
/// A negative cursor, a page of 0 or of more than the documented maximum are typed errors that
/// name the value; the maximum itself is a page.
fn bad_cursors_and_page_sizes_are_typed_errors_naming_the_value(t) {
    let log = AuditLog::new(t.db().clone());
    let tracker = ExecutionTracker::new(t.db().clone());
    log.log(&AuditEntry::new("a", Category::User)).unwrap();
    start(&tracker, "t");
    for (after, limit, named) in [
        (-1, 10, "-1"),
        (i64::MIN, 10, "-9223372036854775808"),
        (0, 0, "0"),
        (0, AUDIT_MAX + 1, "1001"),
        (0, u64::MAX, "18446744073709551615"),
    ] {
        let err = log.since(after, limit).unwrap_err();
        assert!(matches!(err, aigentflow::audit::Error::InvalidInput { .. }), "{err:?}");
        assert!(err.to_string().contains(named), "{err}");
    }
    for limit in [0, AUDIT_MAX + 1] {
        let err = log.latest(limit).unwrap_err();
        assert!(matches!(err, aigentflow::audit::Error::InvalidInput { .. }), "{err:?}");
    }
    for limit in [0, TRACE_MAX + 1, u64::MAX] {
        let err = tracker.traces_since(TraceCursor::START, limit).unwrap_err();
        assert!(matches!(err, aigentflow::tracker::Error::InvalidInput { .. }), "{err:?}");
        assert!(err.to_string().contains(&limit.to_string()), "{err}");
    }
    for text in ["-1", "x", "", "1.5", "99999999999999999999"] {
        let err = text.parse::<TraceCursor>().unwrap_err();
        assert!(matches!(err, aigentflow::tracker::Error::InvalidInput { .. }), "{text:?}: {err:?}");
    }
    assert!(serde_json::from_str::<TraceCursor>("-3").is_err());
    assert_eq!(log.since(0, AUDIT_MAX).unwrap().len(), 1);
    assert_eq!(log.latest(AUDIT_MAX).unwrap().len(), 1);
    assert_eq!(tracker.traces_since(TraceCursor::START, TRACE_MAX).unwrap().traces.len(), 1);
}
}

on_both! {
/// Processes and threads append (alone, in batches, beside state saves) while a follower reads
/// by cursor with varying page sizes: it sees every id exactly once, in increasing order, and
/// nothing else. On PostgreSQL an append takes its ids under the locked chain head and keeps
/// it until it commits, so no id becomes visible before a smaller one.
fn a_follower_by_cursor_sees_every_appended_id_once_in_order_while_others_append(t) {
    const PROCESSES: usize = 2;
    const THREADS: usize = 3;
    const EACH: usize = 30;
    let finished = Arc::new(AtomicUsize::new(0));
    let follower = {
        let (db, finished) = (t.reopen(), Arc::clone(&finished));
        std::thread::spawn(move || {
            let log = AuditLog::new(db);
            let (mut cursor, mut seen, mut seed) = (0i64, Vec::new(), 7u64);
            let deadline = Instant::now() + DEADLINE * 2;
            loop {
                let all_done = finished.load(Ordering::SeqCst) == PROCESSES + THREADS;
                let page = log.since(cursor, next_size(&mut seed)).unwrap();
                for r in &page {
                    assert!(r.id > cursor, "id {} after {cursor}: out of order", r.id);
                    cursor = r.id;
                    seen.push(r.id);
                }
                // A read that began after every writer finished saw everything.
                if page.is_empty() && all_done {
                    return seen;
                }
                assert!(Instant::now() < deadline, "the writers did not finish");
            }
        })
    };
    let children: Vec<_> = (0..PROCESSES)
        .map(|p| worker(&["audit", t.location(), &format!("w{p}"), "1", &EACH.to_string()]))
        .collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|k| {
            let (log, finished) = (AuditLog::new(t.reopen()), Arc::clone(&finished));
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let entry = |j| AuditEntry::new(format!("t{k}-{i}-{j}"), Category::Agent);
                    if i % 3 == 0 {
                        log.log_batch(&[entry(0), entry(1), entry(2)]).unwrap();
                    } else {
                        log.log(&entry(0)).unwrap();
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for child in children {
        expect_ok(child);
        finished.fetch_add(1, Ordering::SeqCst);
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let seen = follower.join().unwrap();
    let all = all_ids(&AuditLog::new(t.db().clone()));
    assert_eq!(all.len(), PROCESSES * EACH + THREADS * (EACH + 2 * EACH.div_ceil(3)));
    assert_saw_all(&seen, &all);
}
}

on_both! {
/// Threads start traces, each in a transaction that goes on writing after the trace's row
/// (invocations of it), while a follower reads the trace feed by cursor with varying page
/// sizes: it sees every trace exactly once, in feed order. On PostgreSQL a trace is numbered
/// at the end of its transaction, under the feed counter's row lock held until it commits, so
/// no number becomes visible before a smaller one (a sequence taken at INSERT would let a
/// reader pass a number whose transaction has not committed yet, and skip it for good).
fn a_follower_by_cursor_sees_every_started_trace_once_in_order_while_threads_start_them(t) {
    const THREADS: usize = 4;
    const EACH: usize = 25;
    let finished = Arc::new(AtomicUsize::new(0));
    let follower = {
        let (db, finished) = (t.reopen(), Arc::clone(&finished));
        std::thread::spawn(move || {
            let tracker = ExecutionTracker::new(db);
            let (mut cursor, mut seen, mut seed) = (TraceCursor::START, Vec::new(), 11u64);
            let deadline = Instant::now() + DEADLINE * 2;
            loop {
                let all_done = finished.load(Ordering::SeqCst) == THREADS;
                let page = tracker.traces_since(cursor, next_size(&mut seed)).unwrap();
                assert!(page.next >= cursor, "the cursor went back");
                cursor = page.next;
                let empty = page.traces.is_empty();
                seen.extend(page.traces.into_iter().map(|t| t.id));
                if empty && all_done {
                    return seen;
                }
                assert!(Instant::now() < deadline, "the writers did not finish");
            }
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|k| {
            let (db, finished) = (t.reopen(), Arc::clone(&finished));
            std::thread::spawn(move || {
                let tracker = ExecutionTracker::new(db.clone());
                let mut ids = Vec::new();
                for i in 0..EACH {
                    let id = db
                        .write(|tx| -> Result<TraceId, aigentflow::tracker::Error> {
                            let project = ProjectId::new("p");
                            let task = TaskId::new(format!("t{k}-{i}"));
                            let trace = tracker.start_trace_in(tx, &project, &task, "go")?;
                            for _ in 0..(i % 4) {
                                let call = NewInvocation::new(trace.id.clone(), "coder", tx.now());
                                tracker.record_invocation_in(tx, &call)?;
                            }
                            Ok(trace.id)
                        })
                        .unwrap();
                    ids.push(id);
                }
                finished.fetch_add(1, Ordering::SeqCst);
                ids
            })
        })
        .collect();
    let started: BTreeSet<TraceId> =
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let seen = follower.join().unwrap();
    let all = all_traces(&ExecutionTracker::new(t.db().clone()));
    assert_eq!(all.iter().cloned().collect::<BTreeSet<_>>(), started);
    assert_saw_all(&seen, &all);
}
}

on_both! {
/// The feed's numbers only grow and are the database's rule, not the store's: a trace deleted
/// at the end does not give its number back, a number never changes, a trace inserted around
/// the store is numbered too, one given a number of its own keeps it only if it follows every
/// number before it, and the counter can neither go back nor be removed.
fn the_trace_feed_never_reuses_or_changes_a_number_and_numbers_every_insert(t) {
    let tracker = ExecutionTracker::new(t.db().clone());
    let first = start(&tracker, "first");
    let before_last = tracker.traces_end().unwrap();
    let last = start(&tracker, "last");
    around(t, &format!("DELETE FROM execution_traces WHERE id = '{last}'")).unwrap();
    let next = start(&tracker, "next");
    let page = tracker.traces_since(before_last, TRACE_MAX).unwrap();
    assert_eq!(page.traces.iter().map(|t| &t.id).collect::<Vec<_>>(), [&next], "not reused");
    for sql in [
        format!("UPDATE execution_traces SET feed_seq = feed_seq + 100 WHERE id = '{first}'"),
        format!("UPDATE execution_traces SET feed_seq = NULL WHERE id = '{first}'"),
        "UPDATE trace_feed SET last_seq = 0".to_owned(),
        "DELETE FROM trace_feed".to_owned(),
        "INSERT INTO execution_traces (id, project_id, task_id, prompt, started_at, status, feed_seq)
         VALUES ('early', 'p', 't', 'x', '2026-01-01 00:00:00.000', 'running', 1)"
            .to_owned(),
    ] {
        let refused = around(t, &sql);
        assert!(refused.is_err(), "{sql} was allowed");
    }
    if t.backend() == Backend::Postgres {
        assert!(around(t, "TRUNCATE trace_feed").is_err());
    }
    let after_next = tracker.traces_end().unwrap();
    around(
        t,
        "INSERT INTO execution_traces (id, project_id, task_id, prompt, started_at, status)
         VALUES ('around', 'p', 't', 'x', '2026-01-01 00:00:00.000', 'running');
         INSERT INTO execution_traces (id, project_id, task_id, prompt, started_at, status, feed_seq)
         VALUES ('given', 'p', 't', 'x', '2026-01-01 00:00:00.000', 'running', 1000)",
    )
    .unwrap();
    let after = start(&tracker, "after");
    let page = tracker.traces_since(after_next, TRACE_MAX).unwrap();
    let ids: Vec<&str> = page.traces.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["around", "given", after.as_str()]);
    let given: TraceCursor = "1000".parse().unwrap();
    assert!(page.next > given, "the counter moved past the number given");
}
}

/// The feed numbers the traces a database holds when its migration adds the feed: on SQLite in
/// the order they were inserted, and the next trace after all of them.
#[test]
fn the_trace_feed_numbers_the_traces_already_there_in_insertion_order_on_sqlite() {
    let (_dir, path) = temp_db();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    aigentflow::persistence::migrate::run_file_to(&path, 7).unwrap();
    let conn = raw(&path);
    for (id, started) in [("c", "2026-01-03"), ("a", "2026-01-01"), ("b", "2026-01-02")] {
        conn.execute(
            "INSERT INTO execution_traces (id, project_id, task_id, prompt, started_at, status)
             VALUES (?1, 'p', 't', 'x', ?2 || ' 00:00:00.000', 'completed')",
            [id, started],
        )
        .unwrap();
    }
    drop(conn);
    let tracker = ExecutionTracker::new(open(&path));
    let new = start(&tracker, "new");
    let ids: Vec<String> = all_traces(&tracker).iter().map(|t| t.to_string()).collect();
    assert_eq!(ids, ["c", "a", "b", new.as_str()]);
}

/// On PostgreSQL, where rows have no insertion order, the traces already there are numbered in
/// the order they started (their id breaking ties), and the next trace after all of them. The
/// database is brought to the first schema by hand (its SQL and refinery's history row), as a
/// database made before the feed existed.
#[test]
fn the_trace_feed_numbers_the_traces_already_there_in_start_order_on_postgres() {
    let Some(current) = TestDb::postgres() else { return };
    let Some(old) = pg_database() else { return };
    let mut source = postgres::Client::connect(current.location(), postgres::NoTls).unwrap();
    let history =
        source.query_one("SELECT version, name, applied_on, checksum FROM refinery_schema_history WHERE version = 1", &[]).unwrap();
    let mut client = postgres::Client::connect(old.url(), postgres::NoTls).unwrap();
    client
        .batch_execute(include_str!("../../migrations-postgres/V1__schema.sql"))
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    client
        .batch_execute(
            "CREATE TABLE refinery_schema_history (version int4 PRIMARY KEY, name varchar(255),
                 applied_on varchar(255), checksum varchar(255));
             INSERT INTO execution_traces (id, project_id, task_id, prompt, started_at, status)
             VALUES ('c', 'p', 't', 'x', '2026-01-01 00:00:00.000', 'completed'),
                    ('a', 'p', 't', 'x', '2026-01-03 00:00:00.000', 'completed'),
                    ('b', 'p', 't', 'x', '2026-01-01 00:00:00.000', 'completed');",
        )
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let (version, name, on, sum): (i32, String, String, String) =
        (history.get(0), history.get(1), history.get(2), history.get(3));
    client
        .execute(
            "INSERT INTO refinery_schema_history VALUES ($1, $2, $3, $4)",
            &[&version, &name, &on, &sum],
        )
        .unwrap();
    let tracker = ExecutionTracker::new(Database::open(old.url()).unwrap());
    let new = start(&tracker, "new");
    let ids: Vec<String> = all_traces(&tracker).iter().map(|t| t.to_string()).collect();
    assert_eq!(ids, ["b", "c", "a", new.as_str()]);
}

on_both! {
/// A watch on a read-only handle wakes when another process commits: audit entries appended by
/// a worker process, a trace started by one. On PostgreSQL it is the schema's notification that
/// wakes it (a wait of the whole deadline would return false without one), on SQLite the file's
/// change counter. What woke it is then read by cursor.
fn a_watch_wakes_when_another_process_commits_and_the_cursor_reads_what_it_wrote(t) {
    let reader = Database::open_read_only(t.location()).unwrap();
    let log = AuditLog::new(reader.clone());
    let tracker = ExecutionTracker::new(reader.clone());
    let mut audit_watch = reader.watch(Watched::AuditLog).unwrap();
    let mut trace_watch = reader.watch(Watched::Traces).unwrap();
    assert!(log.since(0, AUDIT_MAX).unwrap().is_empty());
    expect_ok(worker(&["audit", t.location(), "other", "1", "3"]));
    let deadline = Instant::now() + DEADLINE;
    while log.since(0, AUDIT_MAX).unwrap().len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(audit_watch.wait(left).unwrap(), "no wake-up for the audit log");
    }
    let mut owner = worker(&["run", t.location(), "watched-task"]);
    let mut line = String::new();
    BufReader::new(owner.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let id = line.trim().strip_prefix("trace ").unwrap_or_else(|| panic!("{line}")).to_owned();
    let deadline = Instant::now() + DEADLINE;
    let fed = loop {
        let page = tracker.traces_since(TraceCursor::START, TRACE_MAX).unwrap();
        if !page.traces.is_empty() {
            break page.traces;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(trace_watch.wait(left).unwrap(), "no wake-up for the trace feed");
    };
    owner.kill().unwrap();
    owner.wait().unwrap();
    assert_eq!(fed.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(), [id]);
}
}

/// An in-memory database has no other connection to wait for: a watch is a typed error.
#[test]
fn a_watch_on_an_in_memory_database_is_unsupported_on_sqlite() {
    let err = Database::open_in_memory().unwrap().watch(Watched::AuditLog).unwrap_err();
    assert!(matches!(err, aigentflow::persistence::Error::Unsupported { .. }), "{err:?}");
}

/// A watch whose connection the server ends (a restart, an idle timeout, an operator) connects
/// again and says it woke, since what was sent meanwhile is unknown; later commits wake it again.
#[test]
fn a_watch_whose_connection_is_ended_connects_again_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let mut watch = t.db().watch(Watched::AuditLog).unwrap();
    let mut admin = postgres::Client::connect(t.location(), postgres::NoTls).unwrap();
    let ended = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND query LIKE '%LISTEN aigentflow_audit_logs%'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(ended, 1, "the watch's one connection");
    assert!(watch.wait(DEADLINE).unwrap(), "a lost connection is a wake-up");
    let log = AuditLog::new(t.reopen());
    log.log(&AuditEntry::new("after", Category::User)).unwrap();
    assert!(watch.wait(DEADLINE).unwrap(), "no wake-up after connecting again");
    assert_eq!(log.since(0, AUDIT_MAX).unwrap().len(), 1);
}

on_both! {
/// Transactions that start a trace and then append to the audit log race transactions that do
/// the two the other way round: every one commits. (On PostgreSQL each takes two row locks,
/// the chain head and the feed counter; the counter is taken last, at commit, so no two of
/// them can wait for each other.)
fn traces_and_audit_entries_written_in_either_order_at_once_never_deadlock(t) {
    const EACH: usize = 30;
    let writers: Vec<_> = (0..4)
        .map(|k| {
            let db = t.reopen();
            std::thread::spawn(move || {
                let (log, tracker) = (AuditLog::new(db.clone()), ExecutionTracker::new(db.clone()));
                for i in 0..EACH {
                    db.write(|tx| -> Result<(), aigentflow::Error> {
                        let entry = AuditEntry::new(format!("w{k}-{i}"), Category::Agent);
                        let (project, task) = (ProjectId::new("p"), TaskId::new(format!("w{k}-{i}")));
                        if k % 2 == 0 {
                            tracker.start_trace_in(tx, &project, &task, "go")?;
                            log.log_in(tx, &entry)?;
                        } else {
                            log.log_in(tx, &entry)?;
                            tracker.start_trace_in(tx, &project, &task, "go")?;
                        }
                        Ok(())
                    })
                    .unwrap_or_else(|e| panic!("writer {k}, transaction {i}: {e}"));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(all_ids(&AuditLog::new(t.db().clone())).len(), 4 * EACH);
    assert_eq!(all_traces(&ExecutionTracker::new(t.db().clone())).len(), 4 * EACH);
}
}
