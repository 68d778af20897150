//! Step 04 "AuditLogger" and "Data integrity" twins, plus RELIABILITY.md R7–R10 and R12 for the
//! audit log, and the sealing of legacy rows (R4).

use std::sync::Arc;

use aigentflow::audit::{
    AuditEntry, AuditLog, AuditQuery, Category, ExportFormat, ExportOptions, Finding,
};
use aigentflow::persistence::{Database, ManualClock, Options};
use chrono::{Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::support::*;

fn memory_log() -> AuditLog {
    AuditLog::new(Database::open_in_memory().unwrap())
}

fn entry(project: &str, action: &str, category: Category) -> AuditEntry {
    AuditEntry { project_id: Some(project.into()), ..AuditEntry::new(action, category) }
}

fn clocked(start: chrono::DateTime<Utc>, step: Duration) -> Database {
    let clock = Arc::new(ManualClock::new(start, step));
    Database::open_in_memory_with(Options { clock, ..Options::default() }).unwrap()
}

fn export_string(log: &AuditLog, format: ExportFormat, query: AuditQuery) -> String {
    let mut out = Vec::new();
    let options = ExportOptions { query, ..ExportOptions::new(format) };
    log.export(&mut out, &options, |_| {}).unwrap();
    String::from_utf8(out).unwrap()
}

// ---- the seed's AuditLogger scenarios -----------------------------------------------------

#[test]
fn audit_logs_entries() {
    let log = memory_log();
    let id = log
        .log(&AuditEntry {
            details: Some(json!({"from": "IDLE", "to": "ANALYZING"})),
            ..entry("project-1", "state_transition", Category::State)
        })
        .unwrap();
    assert!(id > 0);
    let rows = log.query(&AuditQuery::default()).unwrap();
    assert_eq!(rows[0].details, Some(json!({"from": "IDLE", "to": "ANALYZING"})));
}

#[test]
fn audit_queries_by_project_and_category() {
    let log = memory_log();
    log.log(&entry("project-1", "file_write", Category::File)).unwrap();
    log.log(&entry("project-1", "agent_invoke", Category::Agent)).unwrap();
    log.log(&AuditEntry {
        agent: Some("coder".into()),
        ..entry("project-2", "x", Category::Agent)
    })
    .unwrap();
    let q = |q: AuditQuery| log.query(&q).unwrap();
    assert_eq!(
        q(AuditQuery { project_id: Some("project-1".into()), ..Default::default() }).len(),
        2
    );
    assert_eq!(q(AuditQuery { category: Some(Category::File), ..Default::default() }).len(), 1);
    assert_eq!(q(AuditQuery { agent: Some("coder".into()), ..Default::default() }).len(), 1);
    let page = q(AuditQuery { limit: Some(2), offset: Some(1), ..Default::default() });
    assert_eq!(
        page.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["agent_invoke", "file_write"]
    );
    let agents = AuditQuery { category: Some(Category::Agent), ..Default::default() };
    assert_eq!(log.count(&agents).unwrap(), 2);
    assert_eq!(log.count(&AuditQuery { limit: Some(1), ..agents }).unwrap(), 2, "filters only");
}

#[test]
fn audit_summary_counts_per_category() {
    let log = memory_log();
    for (a, c) in [("a1", Category::State), ("a2", Category::State), ("a3", Category::Agent)] {
        log.log(&entry("project-1", a, c)).unwrap();
    }
    let summary = log.summary("project-1").unwrap();
    assert_eq!(summary.len(), 2);
    assert_eq!((summary[0].category.as_str(), summary[0].count), ("state", 2));
}

#[test]
fn audit_exports_json_and_csv() {
    let log = memory_log();
    log.log(&entry("project-1", "test", Category::State)).unwrap();
    let only = AuditQuery { project_id: Some("project-1".into()), ..Default::default() };
    let json: Value =
        serde_json::from_str(&export_string(&log, ExportFormat::Json, only.clone())).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    let csv = export_string(&log, ExportFormat::Csv, only);
    assert!(csv.contains("timestamp") && csv.contains("test"));
}

#[test]
fn invalid_entries_are_typed_errors_and_write_nothing() {
    let log = memory_log();
    assert!(log.log(&AuditEntry { action: "x".into(), ..Default::default() }).is_err());
    assert!(log.log(&AuditEntry::new("  ", Category::User)).is_err());
    assert!("nonsense".parse::<Category>().is_err());
    assert!("xml".parse::<ExportFormat>().is_err());
    let bad_date = AuditQuery { start: Some("last tuesday".into()), ..Default::default() };
    assert!(log.query(&bad_date).unwrap_err().to_string().contains("last tuesday"));
    assert!(log.query(&AuditQuery::default()).unwrap().is_empty());
}

// ---- Data integrity / R10 -----------------------------------------------------------------

#[test]
fn audit_does_not_persist_secrets() {
    let (_dir, path) = temp_db();
    let ant = format!("sk-ant-api03-{}", "Qq1Ww2Ee3Rr4Tt5Yy6Uu7");
    let aws = format!("AKIA{}", "QQQQ2222WWWW3333");
    let ghp = format!("ghp_{}", "a".repeat(36));
    let log = AuditLog::new(open(&path));
    log.log(&AuditEntry {
        details: Some(json!({"setting": "api_key", "value": "***REDACTED***"})),
        ..AuditEntry::new("config_update", Category::User)
    })
    .unwrap();
    log.log(&AuditEntry {
        details: Some(
            json!({"api_key": "plain-secret-value", "env": format!("AWS={aws}"), "list": [ghp]}),
        ),
        ..AuditEntry::new(format!("called with {ant}"), Category::Security)
    })
    .unwrap();
    let all = serde_json::to_string(&log.query(&AuditQuery::default()).unwrap()).unwrap();
    assert!(!all.contains("sk-ant-") && !all.contains("AKIA"), "{all}");
    let bytes = file_bytes(&path);
    let exports: Vec<String> = [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl]
        .into_iter()
        .map(|f| export_string(&log, f, AuditQuery::default()))
        .collect();
    for secret in [ant.as_str(), aws.as_str(), ghp.as_str(), "plain-secret-value"] {
        assert!(!contains(&bytes, secret), "{secret} reached the database file");
        for e in &exports {
            assert!(!e.contains(secret), "{secret} reached an export");
        }
    }
    assert!(log.verify(None).unwrap().is_ok());
}

// ---- R8: append-only ----------------------------------------------------------------------

#[test]
fn update_and_delete_on_audit_logs_are_refused_by_the_database() {
    let (_dir, path) = temp_db();
    let log = AuditLog::new(open(&path));
    log.log(&entry("p", "a", Category::State)).unwrap();
    let conn = raw(&path);
    for sql in [
        "UPDATE audit_logs SET action = 'forged'",
        "UPDATE audit_logs SET row_hash = NULL",
        "DELETE FROM audit_logs",
        "INSERT OR REPLACE INTO audit_logs (id, action, category) VALUES (1, 'x', 'user')",
    ] {
        let err = conn.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(log.query(&AuditQuery::default()).unwrap()[0].action, "a");
}

// ---- R7: tamper evidence ------------------------------------------------------------------

fn tampered(sql: &str) -> aigentflow::audit::Verification {
    let (_dir, path) = temp_db();
    let log = AuditLog::new(open(&path));
    for i in 1..=6 {
        log.log(&AuditEntry {
            details: Some(json!({"i": i})),
            ..entry("p", &format!("a{i}"), Category::Agent)
        })
        .unwrap();
    }
    let conn = raw(&path);
    conn.execute_batch("DROP TRIGGER audit_logs_no_update; DROP TRIGGER audit_logs_no_delete;")
        .unwrap();
    conn.execute_batch(sql).unwrap();
    log.verify(None).unwrap()
}

#[test]
fn verify_passes_an_untouched_log() {
    let log = memory_log();
    for i in 0..50 {
        log.log(&entry("p", &format!("a{i}"), Category::File)).unwrap();
    }
    let v = log.verify(None).unwrap();
    assert!(v.is_ok(), "{:?}", v.finding);
    assert_eq!(v.rows, 50);
    assert_eq!(log.verify(v.head.as_ref()).unwrap().finding, None);
}

#[test]
fn verify_names_the_first_edited_row_whatever_field_changed() {
    // Every hashed field after the id: the export's columns between the id and the two hashes.
    for column in &aigentflow::audit::EXPORT_COLUMNS[1..10] {
        let v = tampered(&format!("UPDATE audit_logs SET {column} = 'x' WHERE id = 3"));
        assert_eq!(v.finding, Some(Finding::Edited { id: 3 }), "{column}");
        // Bytes that are not text are reported like any other edit, not as a read error.
        let v = tampered(&format!(
            "UPDATE audit_logs SET {column} = CAST(x'78ff' AS TEXT) WHERE id = 3"
        ));
        assert_eq!(v.finding, Some(Finding::Edited { id: 3 }), "{column} not UTF-8");
    }
    let v = tampered("UPDATE audit_logs SET row_hash = CAST(x'ff' AS TEXT) WHERE id = 4");
    assert!(v.finding.is_some_and(|f| f.to_string().contains("row ")), "not UTF-8 hash");
    let v = tampered("UPDATE audit_logs SET row_hash = 'ff' WHERE id = 4");
    assert!(
        matches!(
            v.finding,
            Some(Finding::Edited { id: 4 }) | Some(Finding::Missing { before_id: 5 })
        ),
        "{:?}",
        v.finding
    );
}

#[test]
fn verify_reports_deleted_inserted_reordered_rows() {
    assert_eq!(
        tampered("DELETE FROM audit_logs WHERE id = 3").finding,
        Some(Finding::Missing { before_id: 4 })
    );
    assert_eq!(
        tampered("DELETE FROM audit_logs WHERE id = 1").finding,
        Some(Finding::Missing { before_id: 2 })
    );
    // a row inserted with a correctly computed hash still breaks the link of the next row
    let v = tampered(
        "INSERT INTO audit_logs (id, timestamp, action, category, prev_hash, row_hash)
         SELECT 35, timestamp, 'forged', 'user', row_hash, row_hash FROM audit_logs WHERE id = 3;
         UPDATE audit_logs SET id = id + 100 WHERE id > 3 AND id < 35;
         UPDATE audit_logs SET id = id - 100 + 1 WHERE id > 100;
         UPDATE audit_logs SET id = 4 WHERE id = 35;",
    );
    assert!(
        matches!(v.finding, Some(Finding::Edited { id: 4 } | Finding::Inserted { .. })),
        "{:?}",
        v.finding
    );
    let v = tampered("INSERT INTO audit_logs (id, timestamp, action, category) VALUES (100, '2026-01-01 00:00:00.000', 'x', 'user')");
    assert_eq!(v.finding, Some(Finding::Unsealed { id: 100 }));
    let v = tampered(
        "UPDATE audit_logs SET id = 100 WHERE id = 2; UPDATE audit_logs SET id = 2 WHERE id = 3; UPDATE audit_logs SET id = 3 WHERE id = 100;",
    );
    assert!(v.finding.is_some(), "a swap of two rows is found");
    assert_eq!(v.finding, Some(Finding::Reordered { id: 2 }));
}

#[test]
fn verify_against_a_kept_head_catches_truncation_and_rewrite() {
    let (_dir, path) = temp_db();
    let log = AuditLog::new(open(&path));
    for i in 0..5 {
        log.log(&entry("p", &format!("a{i}"), Category::State)).unwrap();
    }
    let head = log.head().unwrap().unwrap();
    assert_eq!((head.rows, head.last_id), (5, 5));
    let conn = raw(&path);
    conn.execute_batch("DROP TRIGGER audit_logs_no_delete; DELETE FROM audit_logs WHERE id >= 4;")
        .unwrap();
    assert!(log.verify(None).unwrap().is_ok(), "the shortened chain is consistent on its own");
    let v = log.verify(Some(&head)).unwrap();
    assert_eq!(v.finding, Some(Finding::Truncated { expected_rows: 5, found_rows: 3 }));
    assert!(v.finding.unwrap().to_string().contains("truncated"));
}

// ---- R9: CSV / JSON round trips -----------------------------------------------------------

fn nasty_values() -> Vec<&'static str> {
    vec![
        "plain",
        "comma, inside",
        "quote \" inside",
        "line\nbreak",
        "crlf\r\nbreak",
        "tab\there",
        "unicode ✓ 日本語 עברית 😀",
        "=SUM(A1:A2)",
        "+1",
        "-2",
        "@cmd",
        "\tlead tab",
        "",
    ]
}

fn nasty_log() -> AuditLog {
    let log = memory_log();
    for (i, v) in nasty_values().into_iter().enumerate() {
        let action = if v.is_empty() { format!("empty-{i}") } else { v.to_owned() };
        log.log(&AuditEntry {
            agent: Some(v.to_owned()),
            user_id: Some(v.to_owned()),
            details: Some(json!({"v": v, "nested": {"k": [v]}})),
            ..entry("p,\"1\"", &action, Category::User)
        })
        .unwrap();
    }
    log
}

/// The cells a CSV export should hold for `r`, formula guard on or off.
fn csv_cells(r: &aigentflow::audit::AuditRecord, neutralize: bool) -> Vec<String> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let cells = [
        r.id.to_string(),
        aigentflow::states::time::to_rfc3339(r.timestamp),
        text(&r.project_id),
        text(&r.task_id),
        text(&r.agent),
        r.action.clone(),
        r.category.clone(),
        text(&r.details_text),
        text(&r.user_id),
        text(&r.ip_address),
        text(&r.prev_hash),
        text(&r.row_hash),
    ];
    let guard = |s: String| {
        if neutralize && s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s
        }
    };
    cells.into_iter().map(guard).collect()
}

/// The CSV export of the whole log.
fn export_csv(log: &AuditLog, neutralize_formulas: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let options = ExportOptions { neutralize_formulas, ..ExportOptions::new(ExportFormat::Csv) };
    log.export(&mut out, &options, |_| {}).unwrap();
    out
}

/// Reads a CSV export back with the csv crate, header checked.
fn read_csv(out: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(out);
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        aigentflow::audit::EXPORT_COLUMNS
    );
    reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect()
}

#[test]
fn csv_export_reads_back_exactly_with_the_formula_guard_applied() {
    let log = nasty_log();
    let expected = log.query(&AuditQuery::default()).unwrap();
    for neutralize in [true, false] {
        let want: Vec<Vec<String>> =
            expected.iter().rev().map(|r| csv_cells(r, neutralize)).collect();
        assert_eq!(read_csv(&export_csv(&log, neutralize)), want);
        let agents = want.iter().map(|r| r[4].as_str());
        assert_eq!(
            agents.clone().filter(|a| a.starts_with('\'')).count(),
            if neutralize { 5 } else { 0 }
        );
    }
}

#[test]
fn csv_export_reads_back_with_pythons_csv_module() {
    let out = export_csv(&nasty_log(), false);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.csv");
    std::fs::write(&file, &out).unwrap();
    let script = "import csv, json, sys\nwith open(sys.argv[1], newline='', encoding='utf-8') as f:\n    rows = list(csv.reader(f))\nprint(json.dumps([r[4] for r in rows[1:]]))";
    let py =
        std::process::Command::new("python3").arg("-c").arg(script).arg(&file).output().unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let agents: Vec<String> = serde_json::from_slice(&py.stdout).unwrap();
    let expected: Vec<String> = nasty_values().into_iter().map(String::from).collect();
    assert_eq!(agents, expected);
}

#[test]
fn json_and_jsonl_exports_parse_back_equal() {
    let log = nasty_log();
    let expected = log.query(&AuditQuery::default()).unwrap();
    let json: Vec<Value> =
        serde_json::from_str(&export_string(&log, ExportFormat::Json, AuditQuery::default()))
            .unwrap();
    let jsonl: Vec<Value> = export_string(&log, ExportFormat::Jsonl, AuditQuery::default())
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json, jsonl);
    for (row, want) in json.iter().zip(expected.iter().rev()) {
        assert_eq!(row["id"], want.id);
        assert_eq!(row["agent"], json!(want.agent));
        assert_eq!(row["details"], json!(want.details));
        assert_eq!(row["row_hash"], json!(want.row_hash));
    }
    assert_eq!(
        export_string(&memory_log(), ExportFormat::Json, AuditQuery::default()).trim(),
        "[]"
    );
}

#[test]
fn any_cell_text_reads_back_from_csv_exactly() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let text = || {
        prop_oneof![
            "[a-zA-Z0-9_.:-]{0,24}",
            "[ ,\"\r\n\t=+@'a-z-]{0,24}",
            "[=+@-][a-z0-9 ]{0,8}",
            any::<String>(),
        ]
    };
    let entry = (text(), text(), text(), text(), text(), text());
    let mut runner = TestRunner::new(Config { cases: 64, ..Config::default() });
    runner
        .run(&prop::collection::vec(entry, 1..6), |entries| {
            let log = memory_log();
            for (project, task, agent, action, user, note) in entries {
                let nonempty = |s: String| Some(s).filter(|s| !s.is_empty());
                log.log(&AuditEntry {
                    project_id: nonempty(project).map(Into::into),
                    task_id: nonempty(task).map(Into::into),
                    agent: nonempty(agent),
                    user_id: nonempty(user),
                    details: Some(json!({ "note": note })),
                    ..AuditEntry::new(format!("a{action}"), Category::File)
                })
                .unwrap();
            }
            let expected = log.query(&AuditQuery::default()).unwrap();
            for neutralize in [true, false] {
                let want: Vec<Vec<String>> =
                    expected.iter().rev().map(|r| csv_cells(r, neutralize)).collect();
                prop_assert_eq!(read_csv(&export_csv(&log, neutralize)), want);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn exports_span_many_blocks_and_cells_larger_than_a_block() {
    let log = memory_log();
    let big = "a \"quoted\", long\nline ".repeat(10_000); // ~200 KB, beyond one 64 KiB block
    let entries: Vec<AuditEntry> = (0..3000)
        .map(|i| AuditEntry {
            task_id: Some(format!("task-{}", i % 7).into()),
            details: Some(json!({ "i": i, "pad": "x".repeat(300) })),
            ..entry("p", &if i == 1500 { big.clone() } else { format!("act-{i}") }, Category::Agent)
        })
        .collect();
    log.log_batch(&entries).unwrap();
    let expected = log.query(&AuditQuery::default()).unwrap();
    for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let report = log.export(&mut out, &ExportOptions::new(format), |n| seen.push(n)).unwrap();
        assert_eq!(report.rows, 3000);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress goes forward");
        assert_eq!(seen.last(), Some(&3000));
        let ids: Vec<i64> = match format {
            ExportFormat::Csv => {
                let rows = read_csv(&out);
                assert_eq!(rows[1500], csv_cells(&expected[3000 - 1 - 1500], true));
                rows.iter().map(|r| r[0].parse().unwrap()).collect()
            }
            ExportFormat::Json => {
                let rows: Vec<Value> = serde_json::from_slice(&out).unwrap();
                assert_eq!(rows[1500]["action"], json!(big));
                rows.iter().map(|r| r["id"].as_i64().unwrap()).collect()
            }
            ExportFormat::Jsonl => String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_i64().unwrap())
                .collect(),
        };
        let want: Vec<i64> = expected.iter().rev().map(|r| r.id).collect();
        assert_eq!(ids, want, "{format:?}");
    }
}

/// Accepts `room` bytes, then fails every write.
struct FailingWriter {
    room: usize,
}

impl std::io::Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_writer_ends_the_export_with_its_error() {
    let log = memory_log();
    let entries: Vec<AuditEntry> = (0..2000)
        .map(|i| entry("p", &format!("act-{i}-{}", "y".repeat(100)), Category::File))
        .collect();
    log.log_batch(&entries).unwrap();
    for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
        for room in [0, 100_000] {
            let err = log
                .export(&mut FailingWriter { room }, &ExportOptions::new(format), |_| {})
                .unwrap_err();
            assert!(
                matches!(err, aigentflow::audit::Error::Write(_)),
                "{format:?} after {room} bytes: {err}"
            );
            assert!(err.to_string().contains("disk full"), "{err}");
        }
    }
}

#[test]
fn a_cell_that_is_not_utf8_is_reported_unsealed_exported_as_csv_and_named_elsewhere() {
    let db = Database::open_in_memory().unwrap();
    let log = AuditLog::new(db.clone());
    let batch = || -> Vec<AuditEntry> {
        (0..2000).map(|i| entry("p", &format!("a{i}"), Category::User)).collect()
    };
    log.log_batch(&batch()).unwrap();
    db.write(|tx| {
        tx.sqlite().unwrap().execute(
            "INSERT INTO audit_logs (action, category, agent) VALUES ('odd', 'user', CAST(x'61ff62' AS TEXT))",
            [],
        )?;
        Ok::<_, aigentflow::persistence::Error>(())
    })
    .unwrap();
    // Nothing seals a row written around the log: verify names it. The log goes on: rows after
    // it, so that the JSON encoder fails while blocks are still being read.
    log.log_batch(&batch()).unwrap();
    assert_eq!(log.verify(None).unwrap().finding, Some(Finding::Unsealed { id: 2001 }));
    let named = "unreadable audit_logs.agent in row 2001: not UTF-8 text";
    let err = log.query(&AuditQuery::default()).unwrap_err();
    assert!(err.to_string().contains(named), "query: {err}");
    for format in [ExportFormat::Json, ExportFormat::Jsonl] {
        let err = log.export(&mut Vec::new(), &ExportOptions::new(format), |_| {}).unwrap_err();
        assert!(err.to_string().contains(named), "{format:?}: {err}");
    }
    let mut out = Vec::new();
    let report = log.export(&mut out, &ExportOptions::new(ExportFormat::Csv), |_| {}).unwrap();
    assert_eq!(report.rows, 4001);
    assert!(out.windows(3).any(|w| w == b"a\xffb"), "the bytes are written as stored");
}

#[test]
fn a_project_export_is_the_same_whether_the_project_holds_most_rows_or_few() {
    let log = memory_log();
    let entries: Vec<AuditEntry> = (0..400)
        .map(|i| {
            entry(if i % 25 == 7 { "small" } else { "big" }, &format!("a{i}"), Category::State)
        })
        .collect();
    log.log_batch(&entries).unwrap();
    for project in ["big", "small", "none"] {
        let query = AuditQuery { project_id: Some(project.into()), ..AuditQuery::default() };
        let want: Vec<i64> = log.query(&query).unwrap().iter().rev().map(|r| r.id).collect();
        let rows: Vec<Value> =
            serde_json::from_str(&export_string(&log, ExportFormat::Json, query)).unwrap();
        let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, want, "{project}");
        assert!(rows.iter().all(|r| r["project_id"] == project));
    }
}

// ---- R12: time ----------------------------------------------------------------------------

#[test]
fn date_filters_include_the_boundary_day() {
    let start = Utc.with_ymd_and_hms(2026, 11, 20, 23, 0, 0).unwrap();
    let log = AuditLog::new(clocked(start, Duration::hours(1)));
    for i in 0..4 {
        log.log(&entry("p", &format!("h{i}"), Category::State)).unwrap(); // 20th 23:00, 21st 00:00, 01:00, 02:00
    }
    let q = |start: Option<&str>, end: Option<&str>| {
        log.query(&AuditQuery {
            start: start.map(Into::into),
            end: end.map(Into::into),
            ..Default::default()
        })
        .unwrap()
        .len()
    };
    assert_eq!(q(Some("2026-11-21"), Some("2026-11-21")), 3, "the whole end day is included");
    assert_eq!(q(None, Some("2026-11-20")), 1);
    assert_eq!(q(Some("2026-11-21T01:00:00Z"), None), 2, "start is inclusive");
    assert_eq!(q(None, Some("2026-11-21 01:00:00")), 3, "an instant end is inclusive");
    let rows = log.query(&AuditQuery::default()).unwrap();
    assert_eq!(serde_json::to_value(&rows[0]).unwrap()["timestamp"], "2026-11-21T02:00:00.000Z");
}

// ---- R4: legacy rows are sealed -----------------------------------------------------------

#[test]
fn legacy_audit_rows_are_sealed_into_the_chain_on_adoption() {
    let (_dir, path) = legacy_copy();
    let log = AuditLog::new(open(&path));
    let v = log.verify(None).unwrap();
    assert!(v.is_ok(), "{:?}", v.finding);
    assert_eq!(v.rows, 500);
    let id = log.log(&entry("proj-webshop", "after adoption", Category::User)).unwrap();
    assert_eq!(id, 501);
    let again = AuditLog::new(open(&path)).verify(None).unwrap();
    assert_eq!((again.rows, again.finding), (501, None));
    let rows = log
        .query(&AuditQuery { project_id: Some("proj-webshop".into()), ..Default::default() })
        .unwrap();
    assert!(rows.iter().any(|r| r.action.contains('\t')), "legacy text kept as it was");
}

#[test]
fn threads_appending_at_once_keep_one_linear_chain() {
    let (_dir, path) = temp_db();
    let log = AuditLog::new(open(&path));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    log.log(&entry("p", &format!("t{t}-{i}"), Category::Agent)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let v = log.verify(None).unwrap();
    assert_eq!((v.rows, v.finding), (100, None));
}

// ---- snapshots of each export format ------------------------------------------------------

#[test]
fn export_format_snapshots() {
    let db = clocked(
        Utc.with_ymd_and_hms(2026, 11, 22, 8, 30, 0).unwrap(),
        Duration::milliseconds(1500),
    );
    let log = AuditLog::new(db);
    log.log(&AuditEntry {
        task_id: Some("task-1".into()),
        agent: Some("orchestrator".into()),
        details: Some(json!({"from": "IDLE", "to": "ANALYZING"})),
        ..entry("project-1", "state_transition", Category::State)
    })
    .unwrap();
    log.log(&AuditEntry {
        user_id: Some("alice@example.com".into()),
        ip_address: Some("192.0.2.10".into()),
        details: Some(json!({"path": "src/a, \"b\".rs", "note": "=1+1"})),
        ..entry("project-1", "file_write", Category::File)
    })
    .unwrap();
    insta::assert_snapshot!(
        "export_csv",
        export_string(&log, ExportFormat::Csv, AuditQuery::default())
    );
    insta::assert_snapshot!(
        "export_json",
        export_string(&log, ExportFormat::Json, AuditQuery::default())
    );
    insta::assert_snapshot!(
        "export_jsonl",
        export_string(&log, ExportFormat::Jsonl, AuditQuery::default())
    );
}

#[test]
fn exports_agree_with_queries_on_legacy_rows_and_rows_written_around_the_log() {
    let (_dir, path) = legacy_copy();
    AuditLog::new(open(&path));
    raw(&path)
        .execute_batch(
            "INSERT INTO audit_logs (timestamp, action, category, details)
             VALUES ('2026-11-21T20:52:30Z', 'odd row', 'user', 'not json {');",
        )
        .unwrap();
    let log = AuditLog::new(open(&path));
    assert_eq!(log.verify(None).unwrap().finding, Some(Finding::Unsealed { id: 501 }));
    let expected = log.query(&AuditQuery::default()).unwrap();
    let exported: Vec<Value> =
        serde_json::from_str(&export_string(&log, ExportFormat::Json, AuditQuery::default()))
            .unwrap();
    assert_eq!(exported.len(), 501);
    for (row, want) in exported.iter().zip(expected.iter().rev()) {
        let want = serde_json::to_value(want).unwrap();
        for field in ["id", "timestamp", "action", "details", "project_id", "row_hash"] {
            assert_eq!(row[field], want[field], "row {} field {field}", want["id"]);
        }
    }
    let odd = exported.last().unwrap();
    assert_eq!(
        (odd["timestamp"].as_str(), odd["details"].as_str()),
        (Some("2026-11-21T20:52:30.000Z"), Some("not json {"))
    );
    let csv = export_string(&log, ExportFormat::Csv, AuditQuery::default());
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let last = reader.records().last().unwrap().unwrap();
    assert_eq!((&last[1], &last[7]), ("2026-11-21T20:52:30.000Z", "not json {"));
}

// ---- R18: tampering is never sealed over, and reading never writes ------------------------

/// Every way this layer reads or opens a log, as a process with no bad intent would run them.
fn read_and_open_every_way(path: &std::path::Path) {
    let log = AuditLog::new(open(path));
    log.query(&AuditQuery::default()).unwrap();
    log.head().unwrap();
    log.summary("p").unwrap();
    export_string(&log, ExportFormat::Csv, AuditQuery::default());
    log.verify(None).unwrap();
    // A write through the log appends after the last sealed row and seals nothing else.
    log.log(&entry("p", "after the tampering", Category::User)).unwrap();
    let read_only = AuditLog::new(Database::open_read_only(path).unwrap());
    read_only.query(&AuditQuery::default()).unwrap();
    read_only.verify(None).unwrap();
}

#[test]
fn r18_tampering_is_named_by_verify_and_nothing_a_read_or_write_does_seals_it() {
    let forged_at_end =
        "INSERT INTO audit_logs (timestamp, action, category) VALUES ('2026-11-25 05:40:17.895', 'forged', 'user')";
    let forged_with_id =
        "INSERT INTO audit_logs (id, timestamp, action, category, user_id) VALUES (1000, '2026-11-25 05:40:17.895', 'forged', 'security', 'root')";
    let nulled = |from: i64, to: i64| {
        format!(
            "DROP TRIGGER audit_logs_no_update;
             UPDATE audit_logs SET prev_hash = NULL, row_hash = NULL WHERE id BETWEEN {from} AND {to};
             UPDATE audit_logs SET action = 'rewritten' WHERE id = {from};
             CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
             WHEN old.row_hash IS NOT NULL OR new.row_hash IS NULL
             BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only: UPDATE refused'); END;"
        )
    };
    let restamped = |id: i64, form: &str| {
        format!(
            "DROP TRIGGER audit_logs_no_update;
             UPDATE audit_logs SET timestamp = '{form}' WHERE id = {id};"
        )
    };
    let retyped = |id: i64, column: &str| {
        format!(
            "DROP TRIGGER audit_logs_no_update;
             UPDATE audit_logs SET {column} = CAST({column} AS BLOB) WHERE id = {id};"
        )
    };
    // The rows are stamped 2026-11-25 05:40:17.895 UTC; each form below is that same instant.
    let cases: Vec<(String, Finding)> = vec![
        (forged_at_end.to_owned(), Finding::Unsealed { id: 31 }),
        (forged_with_id.to_owned(), Finding::Unsealed { id: 1000 }),
        (nulled(15, 20), Finding::Unsealed { id: 15 }),
        (nulled(1, 1), Finding::Unsealed { id: 1 }),
        (nulled(30, 30), Finding::Unsealed { id: 30 }),
        (
            restamped(7, "2026-11-25T05:40:17.895Z"),
            Finding::NotCanonical { id: 7, column: "timestamp" },
        ),
        (
            restamped(7, "2026-11-25T15:40:17.895+10:00"),
            Finding::NotCanonical { id: 7, column: "timestamp" },
        ),
        (
            restamped(1, "2026-11-25 05:40:17.895000"),
            Finding::NotCanonical { id: 1, column: "timestamp" },
        ),
        (
            restamped(30, "2026-11-25 01:40:17.895-04:00"),
            Finding::NotCanonical { id: 30, column: "timestamp" },
        ),
        // The same bytes stored as a BLOB hash the same, but no filter finds them.
        (retyped(9, "project_id"), Finding::NotCanonical { id: 9, column: "project_id" }),
        (retyped(9, "category"), Finding::NotCanonical { id: 9, column: "category" }),
        (retyped(2, "timestamp"), Finding::NotCanonical { id: 2, column: "timestamp" }),
        (retyped(4, "action"), Finding::NotCanonical { id: 4, column: "action" }),
    ];
    let stamp =
        Utc.with_ymd_and_hms(2026, 11, 25, 5, 40, 17).unwrap() + Duration::milliseconds(895);
    for (sql, finding) in cases {
        let (_dir, path) = temp_db();
        let clock = Arc::new(ManualClock::new(stamp, Duration::zero()));
        let db = Database::open_with(&path, Options { clock, ..Options::default() }).unwrap();
        AuditLog::new(db.clone())
            .log_batch(
                &(0..30).map(|i| entry("p", &format!("a{i}"), Category::User)).collect::<Vec<_>>(),
            )
            .unwrap();
        db.close().unwrap();
        raw(&path).execute_batch(&sql).unwrap();
        let unsealed_before: i64 = raw(&path)
            .query_row("SELECT COUNT(*) FROM audit_logs WHERE row_hash IS NULL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            AuditLog::new(open(&path)).verify(None).unwrap().finding,
            Some(finding.clone()),
            "{sql}"
        );
        read_and_open_every_way(&path);
        let unsealed_after: i64 = raw(&path)
            .query_row("SELECT COUNT(*) FROM audit_logs WHERE row_hash IS NULL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(unsealed_after, unsealed_before, "nothing sealed the tampering: {sql}");
        assert_eq!(
            AuditLog::new(open(&path)).verify(None).unwrap().finding,
            Some(finding),
            "{sql}"
        );
    }
}

#[test]
fn every_head_audit_head_gives_is_accepted_back_by_verify() {
    let log = memory_log();
    // The empty log's head is None (`null` on the command line) and any log extends it.
    assert_eq!(log.head().unwrap(), None);
    for n in 1..=5 {
        log.log(&entry("p", &format!("a{n}"), Category::State)).unwrap();
        let head = log.head().unwrap();
        let text = serde_json::to_string(&head).unwrap();
        let back: Option<aigentflow::audit::ChainHead> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, head);
        assert!(log.verify(back.as_ref()).unwrap().is_ok());
    }
}

#[test]
fn verify_names_every_tampered_row_not_only_the_first() {
    let (_dir, path) = temp_db();
    let log = AuditLog::new(open(&path));
    log.log_batch(
        &(0..40).map(|i| entry("p", &format!("a{i}"), Category::User)).collect::<Vec<_>>(),
    )
    .unwrap();
    raw(&path)
        .execute_batch(
            "INSERT INTO audit_logs (id, timestamp, action, category) VALUES (1000, '2026-01-01 00:00:00.000', 'forged', 'user');
             DROP TRIGGER audit_logs_no_update;
             UPDATE audit_logs SET prev_hash = NULL, row_hash = NULL WHERE id = 5;
             UPDATE audit_logs SET action = 'edited' WHERE id = 12;
             UPDATE audit_logs SET timestamp = replace(timestamp, ' ', 'T') || 'Z' WHERE id = 20;
             UPDATE audit_logs SET user_id = CAST('x' AS BLOB) WHERE id = 30;",
        )
        .unwrap();
    // A row appended after them links around the unsealed ones, and verifies.
    log.log(&entry("p", "after", Category::User)).unwrap();
    let v = log.verify(None).unwrap();
    assert_eq!(
        v.findings,
        [
            Finding::Unsealed { id: 5 },
            Finding::Edited { id: 12 },
            Finding::NotCanonical { id: 20, column: "timestamp" },
            Finding::Edited { id: 30 },
            Finding::Unsealed { id: 1000 },
        ]
    );
    assert_eq!((v.findings_total, v.finding.clone()), (5, Some(Finding::Unsealed { id: 5 })));
}

#[test]
fn an_unsealed_row_cannot_be_sealed_through_sql_even_with_its_right_hash() {
    use aigentflow::persistence::audit_chain::{hashed_timestamp, row_hash, HashedFields};
    let (_dir, path) = temp_db();
    let log = AuditLog::new(open(&path));
    log.log(&entry("p", "real", Category::User)).unwrap();
    let db = raw(&path);
    db.execute_batch(
        "INSERT INTO audit_logs (id, timestamp, action, category) VALUES (2, '2026-01-01 00:00:00.000', 'forged', 'user')",
    )
    .unwrap();
    let prev: String =
        db.query_row("SELECT row_hash FROM audit_logs WHERE id = 1", [], |r| r.get(0)).unwrap();
    let stamp = hashed_timestamp(b"2026-01-01 00:00:00.000");
    let fields = HashedFields {
        id: 2,
        timestamp: &stamp,
        project_id: None,
        task_id: None,
        agent: None,
        action: b"forged",
        category: b"user",
        details: None,
        user_id: None,
        ip_address: None,
    };
    let hash = row_hash(&prev, &fields);
    let err = db
        .execute("UPDATE audit_logs SET prev_hash = ?1, row_hash = ?2 WHERE id = 2", [&prev, &hash])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(log.verify(None).unwrap().finding, Some(Finding::Unsealed { id: 2 }));
}
