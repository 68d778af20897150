//! `aigentflow approvals …` run as an operator would, on a SQLite file and, when
//! `AIGENTFLOW_PG_URL` names a server, on a fresh PostgreSQL database of its own: listing and
//! showing requests (an overdue one as "expired (not yet applied)", without writing), approving
//! and rejecting them, expiring those past their deadline, and every refusal as one line.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use aigentflow_approvals::{ApprovalFilter, ApprovalId, Approvals, NewApproval, Status};
use aigentflow_core_states::{
    Event, ManualClock, StateContext, StateMachine, StateStore, WorkflowState,
};
use aigentflow_persistence::{Database, Options, SqliteStateStore};
use chrono::{TimeDelta, TimeZone, Utc};
use serde_json::{json, Value};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    /// Failed with `code`, saying `needle` in one line on stderr.
    fn refused(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}: {}", self.stderr);
        assert_eq!(self.stderr.trim_end().lines().count(), 1, "one line: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
    }
}

fn output(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(db: &str, args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aigentflow"));
    c.arg("--db").arg(db).env_remove("AIGENTFLOW_DB").env("NO_COLOR", "1");
    output(c.args(args).output().unwrap())
}

/// A fresh PostgreSQL database on the server of `AIGENTFLOW_PG_URL`, dropped with the guard.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    /// None when `AIGENTFLOW_PG_URL` is not set (the PostgreSQL half is skipped, unless
    /// `AIGENTFLOW_REQUIRE_PG` is set: then it fails).
    fn new() -> Option<Self> {
        let Some(admin) = std::env::var("AIGENTFLOW_PG_URL").ok().filter(|u| !u.is_empty()) else {
            assert!(
                std::env::var_os("AIGENTFLOW_REQUIRE_PG").is_none(),
                "AIGENTFLOW_REQUIRE_PG is set but AIGENTFLOW_PG_URL is not"
            );
            eprintln!("AIGENTFLOW_PG_URL is not set: the PostgreSQL half is skipped");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("aigentflow_cli_approvals_{}_{nanos}", std::process::id());
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        // The server's URL with its database replaced: the path after the host, before a query.
        let (base, query) = admin.split_once('?').map_or((admin.as_str(), ""), |(b, q)| (b, q));
        let hosts = base.find("://").map_or(0, |i| i + 3);
        let authority_end = base[hosts..].find('/').map_or(base.len(), |i| hosts + i);
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        let url = format!("{}/{name}{query}", &base[..authority_end]);
        Some(Self { admin, name, url })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// Every backend to run on: a SQLite file in a temp dir, and a PostgreSQL database if a server
/// is given. Each location is created and migrated.
fn locations() -> (tempfile::TempDir, Vec<String>, Option<PgDb>) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![dir.path().join("aigentflow.db").display().to_string()];
    let pg = PgDb::new();
    all.extend(pg.as_ref().map(|p| p.url.clone()));
    for location in &all {
        Database::open(location).unwrap().close().unwrap();
    }
    (dir, all, pg)
}

/// Stores `task` at AGENT_COMPLETE, its output needing approval, and a request on it, made at
/// the time `db`'s clock says.
fn requested(db: &Database, task: &str, deadline: Option<chrono::DateTime<Utc>>) -> ApprovalId {
    let mut m = StateMachine::new(StateContext::new("project-1".into(), task.into(), "Ship it"))
        .with_clock(db.clock().clone());
    m.apply(Event::Start, None).unwrap();
    m.apply(Event::AnalysisComplete, None).unwrap();
    m.context_mut().agent_queue.push("reviewer".into());
    m.apply(Event::SpawnAgent, None).unwrap();
    m.apply(Event::AgentDone, None).unwrap();
    let ctx = m.context_mut();
    ctx.current_agent = Some("reviewer".into());
    ctx.agent_outputs.entry("reviewer".into()).or_default().routing_hints.needs_approval = true;
    SqliteStateStore::new(db.clone()).save_state(m.persisted()).unwrap();
    let new = NewApproval {
        payload: json!({"design": "OAuth"}),
        deadline,
        ..NewApproval::new(task.into(), "design", "architect")
    };
    Approvals::new(db.clone()).request(&new).unwrap()
}

fn state(db: &Database, task: &str) -> (WorkflowState, Option<Event>) {
    let s = SqliteStateStore::new(db.clone()).load_state(&task.into()).unwrap().unwrap();
    (s.state, s.history.last().map(|t| t.event.clone()))
}

/// Everything the approvals commands could change, read through the library.
fn everything(
    db: &Database,
) -> (Vec<aigentflow_approvals::Approval>, Vec<(WorkflowState, Option<Event>)>) {
    let approvals = Approvals::new(db.clone()).list(&ApprovalFilter::default()).unwrap().approvals;
    let states = ["due", "later", "open"].iter().map(|t| state(db, t)).collect();
    (approvals, states)
}

/// The operator's round: list (an overdue request shown as not yet applied), show, approve,
/// reject, expire; what they change is what the library then reads; a second decision, an
/// unknown id, an empty or missing reviewer are one line each.
#[test]
fn approvals_are_listed_shown_decided_and_expired_from_the_command_line() {
    let (_dir, all, _pg) = locations();
    for location in &all {
        // Requested yesterday: one due an hour after that, one a year on, one with no deadline.
        let yesterday = Utc::now() - TimeDelta::days(1);
        let clock = Arc::new(ManualClock::new(yesterday, TimeDelta::zero()));
        let past = Database::open_with(location, Options { clock, ..Options::default() }).unwrap();
        let due = requested(&past, "due", Some(yesterday + TimeDelta::hours(1)));
        let later = requested(&past, "later", Some(yesterday + TimeDelta::days(365)));
        let open = requested(&past, "open", None);
        let db = Database::open(location).unwrap();

        // Listing and showing write nothing, and say which request is overdue.
        let before = everything(&db);
        let listed = run(location, &["--json", "approvals", "list"]).ok().json();
        let overdue: Vec<(&str, bool)> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["task_id"].as_str().unwrap(), a["overdue"].as_bool().unwrap()))
            .collect();
        assert_eq!(overdue.len(), 3, "{listed}");
        for (task, late) in overdue {
            assert_eq!(late, task == "due", "{task}");
        }
        let table = run(location, &["approvals", "list"]).ok().stdout;
        let line =
            |id: &ApprovalId| table.lines().find(|l| l.contains(id.as_str())).unwrap().to_owned();
        assert!(line(&due).contains("expired (not yet applied)"), "{table}");
        assert!(line(&later).contains("pending") && line(&later).contains(" left)"), "{table}");
        assert!(line(&open).contains("pending"), "{table}");
        let one = run(location, &["--json", "approvals", "list", "--pending", "--task", "open"])
            .ok()
            .json();
        assert_eq!(one.as_array().unwrap().len(), 1);
        assert_eq!(one[0]["id"], json!(open));
        let shown = run(location, &["--json", "approvals", "show", due.as_str()]).ok().json();
        assert_eq!(
            (&shown["status"], &shown["overdue"], &shown["kind"]),
            (&json!("pending"), &json!(true), &json!("design"))
        );
        assert_eq!(shown["payload"], json!({"design": "OAuth"}));
        let shown = run(location, &["approvals", "show", later.as_str()]).ok().stdout;
        assert!(shown.contains("requested") && shown.contains("by architect"), "{shown}");
        assert_eq!(everything(&db), before, "a read command changed something");

        // Decisions.
        let approved = run(
            location,
            &[
                "--json",
                "approvals",
                "approve",
                later.as_str(),
                "--reviewer",
                "alice",
                "--comment",
                "fine",
            ],
        )
        .ok()
        .json();
        assert_eq!(
            (&approved["status"], &approved["reviewer"], &approved["comment"]),
            (&json!("approved"), &json!("alice"), &json!("fine"))
        );
        assert_eq!(state(&db, "later"), (WorkflowState::Approved, Some(Event::Approve)));
        let said =
            run(location, &["approvals", "reject", open.as_str(), "--reviewer", "bob"]).ok().stdout;
        assert!(said.contains(&format!("rejected {open} by bob: task open is REJECTED")), "{said}");
        assert_eq!(state(&db, "open"), (WorkflowState::Rejected, Some(Event::Reject)));
        run(location, &["approvals", "reject", later.as_str(), "--reviewer", "bob"])
            .refused(1, &format!("approval {later} is approved, not pending"));

        // Expiry by the system clock.
        let expired = run(location, &["--json", "approvals", "expire"]).ok().json();
        assert_eq!(expired, json!({"expired": [due], "unreadable": []}));
        assert_eq!(state(&db, "due"), (WorkflowState::Rejected, Some(Event::ApprovalTimeout)));
        let got = Approvals::new(db.clone()).get(&due).unwrap().unwrap();
        assert_eq!(got.status, Status::Expired);
        let again = run(location, &["approvals", "expire"]).ok().stdout;
        assert_eq!(again.trim(), "0 expired");

        // Refusals, one line each.
        run(location, &["approvals", "show", "nope"]).refused(1, "approval nope not found");
        run(location, &["approvals", "approve", "nope", "--reviewer", "alice"])
            .refused(1, "approval nope not found");
        run(location, &["approvals", "approve", due.as_str(), "--reviewer", " "])
            .refused(1, "--reviewer");
        run(location, &["approvals", "approve", due.as_str()]).refused(2, "--reviewer");
        run(location, &["approvals", "approve", due.as_str(), "--reviewer", "x"])
            .refused(1, "is expired, not pending");
        db.close().unwrap();
        past.close().unwrap();
    }
}

/// The two ways a request could slip past its rules, from the command line: approving or
/// rejecting a request past its deadline is one line naming when it expired, exit code 1, and
/// the request is then expired as `approvals expire` would have made it (whatever spelling
/// its deadline has); a request whose payload or time was written around the store as something
/// unreadable is skipped by `approvals list` and `approvals expire`, each naming its row in a
/// warning line on stderr, while every other request is listed and every other overdue one
/// expired.
#[test]
fn a_late_decision_is_refused_and_an_unreadable_request_hides_no_other() {
    let (_dir, all, _pg) = locations();
    for location in &all {
        let yesterday = Utc::now() - TimeDelta::days(1);
        let clock = Arc::new(ManualClock::new(yesterday, TimeDelta::zero()));
        let past = Database::open_with(location, Options { clock, ..Options::default() }).unwrap();
        let hour = Some(yesterday + TimeDelta::hours(1));
        let late: Vec<ApprovalId> =
            ["late-a", "late-b", "late-c"].iter().map(|t| requested(&past, t, hour)).collect();
        let due = requested(&past, "due", hour);
        let broken: Vec<ApprovalId> =
            ["broken-a", "broken-b"].iter().map(|t| requested(&past, t, hour)).collect();
        let open = requested(&past, "open", None);
        let mut raw = aigentflow_testkit::Driver::connect(past.backend(), location);
        // Another spelling of a deadline past, as the tester wrote it.
        raw.execute(
            "UPDATE approval_requests SET deadline = '2020-01-01 00:00:00' WHERE id = ?1",
            &[aigentflow_testkit::Raw::text(late[2].as_str())],
        );
        for (id, set) in [(&broken[0], "payload = '{\"a\":'"), (&broken[1], "requested_at = 'x'")] {
            raw.execute(
                &format!("UPDATE approval_requests SET {set} WHERE id = ?1"),
                &[aigentflow_testkit::Raw::text(id.as_str())],
            );
        }
        let db = Database::open(location).unwrap();

        for (id, verb) in late.iter().zip(["approve", "reject", "approve"]) {
            let r = run(location, &["approvals", verb, id.as_str(), "--reviewer", "bob"]);
            r.refused(1, &format!("approval {id} expired at "));
            assert!(r.stdout.is_empty(), "{verb} said {}", r.stdout);
            let got = Approvals::new(db.clone()).get(id).unwrap().unwrap();
            assert_eq!((got.status, got.reviewer), (Status::Expired, None), "{verb}");
        }
        assert_eq!(state(&db, "late-a"), (WorkflowState::Rejected, Some(Event::ApprovalTimeout)));

        let warned = |r: &Run| {
            for id in &broken {
                let line = r.stderr.lines().find(|l| l.contains(&format!("skipped approval {id}")));
                let line = line.unwrap_or_else(|| panic!("{id} not named: {}", r.stderr));
                assert!(line.starts_with("aigentflow: warning: "), "{line}");
                assert!(line.contains("unreadable approval_requests."), "{line}");
            }
            assert_eq!(r.stderr.lines().count(), broken.len(), "{}", r.stderr);
            assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        };
        let listed = run(location, &["--json", "approvals", "list"]).ok();
        warned(&listed);
        let ids: Vec<Value> =
            listed.json().as_array().unwrap().iter().map(|a| a["id"].clone()).collect();
        for id in late.iter().chain([&due, &open]) {
            assert!(ids.contains(&json!(id)), "{id} not listed: {ids:?}");
        }
        assert_eq!(ids.len(), 5);
        let table = run(location, &["approvals", "list"]).ok();
        warned(&table);
        assert!(table.stdout.contains(open.as_str()), "{}", table.stdout);

        let expired = run(location, &["--json", "approvals", "expire"]).ok();
        warned(&expired);
        let report = expired.json();
        assert_eq!(report["expired"], json!([due]));
        let skipped: Vec<&str> = report["unreadable"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(skipped.len(), 2, "{report}");
        assert_eq!(state(&db, "due"), (WorkflowState::Rejected, Some(Event::ApprovalTimeout)));
        let again = run(location, &["approvals", "expire"]).ok();
        warned(&again);
        assert_eq!(again.stdout.trim(), "0 expired");
        db.close().unwrap();
        past.close().unwrap();
    }
}

/// `approvals list` and `show` open read-only: the SQLite file's bytes are the same after
/// them, an overdue request included, and a secret given as a reviewer or comment never shows
/// in what the commands print.
#[test]
fn approvals_reads_leave_the_file_as_it_was_and_print_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aigentflow.db");
    let location = path.display().to_string();
    let yesterday = Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(yesterday, TimeDelta::zero()));
    let past = Database::open_with(&location, Options { clock, ..Options::default() }).unwrap();
    let due = requested(&past, "due", Some(yesterday + TimeDelta::hours(1)));
    let decided = requested(&past, "later", None);
    let echoed = requested(&past, "echoed", None);
    past.close().unwrap();
    let token = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
    // The line that confirms a decision names the reviewer as stored.
    let reviewer = format!("alice password={token}");
    let said = run(
        &location,
        &["approvals", "reject", echoed.as_str(), "--reviewer", &reviewer, "--comment", "no"],
    )
    .ok();
    assert!(!said.stdout.contains(token) && !said.stderr.contains(token), "{}", said.stdout);
    let said = run(
        &location,
        &[
            "--json",
            "approvals",
            "approve",
            decided.as_str(),
            "--reviewer",
            token,
            "--comment",
            &format!("password={token}"),
        ],
    )
    .ok();
    assert!(!said.stdout.contains(token) && !said.stderr.contains(token), "{}", said.stdout);
    // The file and its WAL (a reader may make the -shm index, which holds no data).
    let files = |p: &Path| -> Vec<Vec<u8>> {
        ["", "-wal"]
            .iter()
            .map(|side| std::fs::read(format!("{}{side}", p.display())).unwrap_or_default())
            .collect()
    };
    let bytes = files(&path);
    for args in [
        &["approvals", "list"][..],
        &["--json", "approvals", "list", "--pending"],
        &["approvals", "list", "--task", "due"],
        &["approvals", "show", due.as_str()],
        &["--json", "approvals", "show", decided.as_str()],
    ] {
        let r = run(&location, args).ok();
        assert!(!r.stdout.contains(token), "{args:?} printed the secret: {}", r.stdout);
        assert!(files(&path) == bytes, "{args:?} changed the database");
    }
    let listed = run(&location, &["--json", "approvals", "list", "--task", "due"]).ok().json();
    assert_eq!(listed[0]["overdue"], json!(true));
    for file in files(&path) {
        assert!(file.windows(token.len()).all(|w| w != token.as_bytes()), "the secret was stored");
    }
}
