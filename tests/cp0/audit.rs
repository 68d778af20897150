//! Step 04 "AuditLogger" and "Data integrity" twins, plus RELIABILITY.md R7–R10 and R12 for the
//! audit log, and the sealing of legacy rows (R4). Scenarios run on both backends (`on_both!`);
//! tampering goes around the log as someone with file access (SQLite) or the tables' owner
//! (PostgreSQL) would.

use std::path::Path;
use std::sync::Arc;

use aigentflow::audit::{
    Actor, AuditEntry, AuditLog, AuditQuery, Category, ExportFormat, ExportOptions, Finding,
    Outcome, Severity, Target,
};
use aigentflow::persistence::{Backend, Database, ManualClock, Options};
use chrono::{Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::support::*;

pub(crate) fn entry(project: &str, action: &str, category: Category) -> AuditEntry {
    AuditEntry { project_id: Some(project.into()), ..AuditEntry::new(action, category) }
}

/// `t`'s database opened again with a clock that starts at `start` and moves `step` per reading.
pub(crate) fn clocked_on(t: &TestDb, start: chrono::DateTime<Utc>, step: Duration) -> Database {
    let clock = Arc::new(ManualClock::new(start, step));
    Database::open_with(t.location(), Options { clock, ..Options::default() }).unwrap()
}

/// A fresh database of `t`'s backend, for a scenario that needs several.
pub(crate) fn fresh(t: &TestDb) -> TestDb {
    match t.backend() {
        Backend::Sqlite => TestDb::sqlite(),
        Backend::Postgres => TestDb::postgres().expect("a PostgreSQL variant runs with a server"),
    }
}

/// A connection of the PostgreSQL tables' owner (the role of the test URL), around the stores.
fn pg_client(location: &str) -> postgres::Client {
    postgres::Client::connect(location, postgres::NoTls).unwrap()
}

/// Runs `sql` on `t`'s database around the stores, as someone with file access (SQLite) or the
/// tables' owner (PostgreSQL) would; the refusal's message if it is refused.
pub(crate) fn around(t: &TestDb, sql: &str) -> Result<(), String> {
    match t.backend() {
        Backend::Sqlite => {
            raw(Path::new(t.location())).execute_batch(sql).map_err(|e| e.to_string())
        }
        Backend::Postgres => pg_client(t.location()).batch_execute(sql).map_err(|e| pg_error(&e)),
    }
}

/// Runs `sql` with the log's append-only triggers out of the way: on SQLite they are dropped (as
/// the file's owner can), on PostgreSQL disabled inside the tampering transaction only (as the
/// tables' owner can), so no other session ever sees them off.
pub(crate) fn tamper(t: &TestDb, sql: &str) {
    let sql = match t.backend() {
        Backend::Sqlite => format!(
            "DROP TRIGGER IF EXISTS audit_logs_no_update;
             DROP TRIGGER IF EXISTS audit_logs_no_delete;
             {sql}"
        ),
        Backend::Postgres => format!(
            "BEGIN; ALTER TABLE audit_logs DISABLE TRIGGER USER;
             {sql};
             ALTER TABLE audit_logs ENABLE TRIGGER USER; COMMIT;"
        ),
    };
    around(t, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A whole number `sql` reads from `location`'s database around the stores.
pub(crate) fn scalar(location: &str, sql: &str) -> i64 {
    if pg_url(location) {
        pg_client(location).query_one(sql, &[]).unwrap().get(0)
    } else {
        raw(Path::new(location)).query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

fn pg_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

fn unsealed(location: &str) -> i64 {
    scalar(location, "SELECT COUNT(*) FROM audit_logs WHERE row_hash IS NULL")
}

/// What the database holds: the SQLite file and its WAL as bytes; on PostgreSQL, whose files are
/// the server's, every row of the audit tables as the server gives it back as text.
pub(crate) fn stored_bytes(t: &TestDb) -> Vec<u8> {
    match t.backend() {
        Backend::Sqlite => file_bytes(Path::new(t.location())),
        Backend::Postgres => {
            let mut client = pg_client(t.location());
            let mut out = Vec::new();
            for sql in ["SELECT r::text FROM audit_logs r", "SELECT h::text FROM audit_head h"] {
                for row in client.query(sql, &[]).unwrap() {
                    out.extend_from_slice(row.get::<_, &str>(0).as_bytes());
                    out.push(b'\n');
                }
            }
            out
        }
    }
}

pub(crate) fn export_string(log: &AuditLog, format: ExportFormat, query: AuditQuery) -> String {
    let mut out = Vec::new();
    let options = ExportOptions { query, ..ExportOptions::new(format) };
    log.export(&mut out, &options, |_| {}).unwrap();
    String::from_utf8(out).unwrap()
}

// ---- the seed's AuditLogger scenarios -----------------------------------------------------

on_both! {
fn audit_logs_entries(t) {
    let log = AuditLog::new(t.db().clone());
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
}

on_both! {
fn audit_queries_by_project_and_category(t) {
    let log = AuditLog::new(t.db().clone());
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
}

on_both! {
fn audit_summary_counts_per_category(t) {
    let log = AuditLog::new(t.db().clone());
    for (a, c) in [("a1", Category::State), ("a2", Category::State), ("a3", Category::Agent)] {
        log.log(&entry("project-1", a, c)).unwrap();
    }
    let summary = log.summary(&"project-1".into()).unwrap();
    assert_eq!(summary.len(), 2);
    assert_eq!((summary[0].category.as_str(), summary[0].count), ("state", 2));
}
}

on_both! {
fn audit_exports_json_and_csv(t) {
    let log = AuditLog::new(t.db().clone());
    log.log(&entry("project-1", "test", Category::State)).unwrap();
    let only = AuditQuery { project_id: Some("project-1".into()), ..Default::default() };
    let json: Value =
        serde_json::from_str(&export_string(&log, ExportFormat::Json, only.clone())).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    let csv = export_string(&log, ExportFormat::Csv, only);
    assert!(csv.contains("timestamp") && csv.contains("test"));
}
}

on_both! {
fn invalid_entries_are_typed_errors_and_write_nothing(t) {
    let log = AuditLog::new(t.db().clone());
    assert!(log.log(&AuditEntry { action: "x".into(), ..Default::default() }).is_err());
    assert!(log.log(&AuditEntry::new("  ", Category::User)).is_err());
    for blank in ["", "  ", "\t\n"] {
        let err = log.log(&AuditEntry::new("x", Category::parse(blank))).unwrap_err();
        assert!(err.to_string().contains("category is empty"), "{err}");
    }
    // The set is open: a category this build does not know is kept as it is.
    assert_eq!(Category::parse("nonsense").as_str(), "nonsense");
    assert!(!Category::parse("nonsense").is_known());
    assert!("xml".parse::<ExportFormat>().is_err());
    let bad_date = AuditQuery { start: Some("last tuesday".into()), ..Default::default() };
    assert!(log.query(&bad_date).unwrap_err().to_string().contains("last tuesday"));
    assert!(log.query(&AuditQuery::default()).unwrap().is_empty());
}
}

// ---- Data integrity / R10 -----------------------------------------------------------------

on_both! {
fn audit_does_not_persist_secrets(t) {
    let ant = format!("sk-ant-api03-{}", "Qq1Ww2Ee3Rr4Tt5Yy6Uu7");
    let aws = format!("AKIA{}", "QQQQ2222WWWW3333");
    let ghp = format!("ghp_{}", "a".repeat(36));
    let log = AuditLog::new(t.db().clone());
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
    let bytes = stored_bytes(t);
    assert!(contains(&bytes, "config_update"), "the stored rows are read");
    let exports: Vec<String> = [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl]
        .into_iter()
        .map(|f| export_string(&log, f, AuditQuery::default()))
        .collect();
    for secret in [ant.as_str(), aws.as_str(), ghp.as_str(), "plain-secret-value"] {
        assert!(!contains(&bytes, secret), "{secret} reached the database");
        for e in &exports {
            assert!(!e.contains(secret), "{secret} reached an export");
        }
    }
    assert!(log.verify(None).unwrap().is_ok());
}
}

on_both! {
/// A NUL character (U+0000) in a text field: SQLite stores it; PostgreSQL text cannot hold one,
/// so there the entry is an error naming the field and nothing of its batch is written. In the
/// details it is JSON's escape `\u0000`, stored on both. A filter holding one finds the rows
/// that hold it: on PostgreSQL there are none.
fn a_nul_character_is_stored_on_sqlite_and_refused_naming_its_field_on_postgres(t) {
    let log = AuditLog::new(t.db().clone());
    log.log(&entry("p", "first", Category::User)).unwrap();
    let nul = "a\0b";
    let base = || AuditEntry::new("x", Category::User);
    let cases = [
        ("project_id", AuditEntry { project_id: Some(nul.into()), ..base() }),
        ("task_id", AuditEntry { task_id: Some(nul.into()), ..base() }),
        ("agent", AuditEntry { agent: Some(nul.into()), ..base() }),
        ("action", AuditEntry::new(nul, Category::User)),
        ("user_id", AuditEntry { user_id: Some(nul.into()), ..base() }),
        ("ip_address", AuditEntry { ip_address: Some(nul.into()), ..base() }),
    ];
    for (field, bad) in &cases {
        let result = log.log_batch(&[entry("p", "before", Category::User), bad.clone()]);
        match t.backend() {
            Backend::Sqlite => assert_eq!(result.unwrap().len(), 2, "{field}"),
            Backend::Postgres => {
                let err = result.unwrap_err();
                assert!(matches!(err, aigentflow::audit::Error::InvalidInput { .. }), "{err}");
                let named = format!("its {field} holds a NUL character (U+0000)");
                assert!(err.to_string().contains(&named), "{field}: {err}");
            }
        }
    }
    let details = AuditEntry { details: Some(json!({ "k": nul })), ..base() };
    log.log(&details).unwrap();
    let stored = log.query(&AuditQuery::default()).unwrap();
    assert_eq!(stored[0].details, Some(json!({ "k": nul })));
    let (written, holding) = match t.backend() {
        Backend::Sqlite => (2 + 2 * cases.len(), 1),
        Backend::Postgres => (2, 0),
    };
    assert_eq!(stored.len(), written);
    for q in [
        AuditQuery { project_id: Some(nul.into()), ..AuditQuery::default() },
        AuditQuery { task_id: Some(nul.into()), ..AuditQuery::default() },
        AuditQuery { agent: Some(nul.into()), ..AuditQuery::default() },
    ] {
        assert_eq!(log.query(&q).unwrap().len(), holding, "{q:?}");
        assert_eq!(log.count(&q).unwrap(), holding as u64, "{q:?}");
        let exported = export_string(&log, ExportFormat::Jsonl, q.clone());
        assert_eq!(exported.lines().count(), holding, "{q:?}");
    }
    assert_eq!(log.summary(&nul.into()).unwrap().len(), holding);
    let v = log.verify(None).unwrap();
    assert_eq!((v.rows, v.finding), (written as u64, None));
}
}

on_both! {
/// Ids end at i64::MAX: a row written around the log just below it leaves room for one more
/// entry; past it an append is an error naming the id, and a batch that would cross it writes
/// nothing.
fn an_append_past_the_largest_id_is_an_error_and_writes_nothing(t) {
    let log = AuditLog::new(t.db().clone());
    log.log(&entry("p", "first", Category::User)).unwrap();
    around(
        t,
        &format!(
            "INSERT INTO audit_logs (id, timestamp, action, category)
             VALUES ({}, '2026-01-01 00:00:00.000', 'near the end', 'user')",
            i64::MAX - 1
        ),
    )
    .unwrap();
    let pair = [entry("p", "a", Category::User), entry("p", "b", Category::User)];
    let full = format!("the audit log is full: no id follows {}", i64::MAX);
    let err = log.log_batch(&pair).unwrap_err();
    assert!(matches!(err, aigentflow::audit::Error::Full { last_id: i64::MAX }), "{err}");
    assert!(err.to_string().starts_with(&full), "{err}");
    assert_eq!(log.count(&AuditQuery::default()).unwrap(), 2);
    assert_eq!(log.log(&pair[0]).unwrap(), i64::MAX);
    let err = log.log(&pair[1]).unwrap_err();
    assert!(err.to_string().starts_with(&full), "{err}");
    let v = log.verify(None).unwrap();
    assert_eq!((v.rows, v.findings), (3, vec![Finding::Unsealed { id: i64::MAX - 1 }]));
}
}

// ---- R8: append-only ----------------------------------------------------------------------

on_both! {
fn update_and_delete_on_audit_logs_are_refused_by_the_database(t) {
    let log = AuditLog::new(t.db().clone());
    log.log(&entry("p", "a", Category::State)).unwrap();
    let mut refused = vec![
        "UPDATE audit_logs SET action = 'forged'",
        "UPDATE audit_logs SET row_hash = NULL",
        "DELETE FROM audit_logs",
    ];
    refused.extend(match t.backend() {
        Backend::Sqlite => {
            vec!["INSERT OR REPLACE INTO audit_logs (id, action, category) VALUES (1, 'x', 'user')"]
        }
        // Row triggers do not fire on TRUNCATE: a statement trigger refuses it.
        Backend::Postgres => vec![
            "TRUNCATE audit_logs",
            "INSERT INTO audit_logs (id, action, category) VALUES (1, 'x', 'user')
             ON CONFLICT (id) DO UPDATE SET action = 'forged'",
        ],
    });
    for sql in refused {
        let err = around(t, sql).unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(log.query(&AuditQuery::default()).unwrap()[0].action, "a");
    assert!(log.verify(None).unwrap().is_ok());
}
}

/// The triggers bind the tables' owner too: the role that ran the migrations (a superuser here)
/// is refused like any other, and only dropping or disabling the triggers gets around them.
#[test]
fn the_tables_owner_is_refused_every_change_of_the_log_and_its_head_on_postgres() {
    let Some(t) = TestDb::postgres() else { return };
    let log = AuditLog::new(t.db().clone());
    log.log_batch(&[entry("p", "a", Category::State), entry("p", "b", Category::State)]).unwrap();
    let mut client = pg_client(t.location());
    let owner: bool = client
        .query_one(
            "SELECT pg_get_userbyid(relowner) = current_user FROM pg_class
             WHERE relname = 'audit_logs' AND relnamespace = 'public'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(owner, "the test connects as the tables' owner");
    for (sql, refusal) in [
        ("UPDATE audit_logs SET action = 'forged' WHERE id = 2", "append-only: UPDATE refused"),
        ("UPDATE audit_logs SET prev_hash = NULL, row_hash = NULL", "append-only: UPDATE refused"),
        ("DELETE FROM audit_logs WHERE id = 2", "append-only: DELETE refused"),
        ("TRUNCATE audit_logs", "append-only: TRUNCATE refused"),
        ("TRUNCATE audit_logs, audit_head", "TRUNCATE refused"),
        ("DELETE FROM audit_head", "DELETE refused"),
        ("TRUNCATE audit_head", "TRUNCATE refused"),
        (
            "INSERT INTO audit_head (singleton, id, row_hash) VALUES (TRUE, 0, NULL)",
            "audit_head_pkey",
        ),
        (
            "UPDATE audit_head SET id = 1, row_hash = (SELECT row_hash FROM audit_logs WHERE id = 1)",
            "only moves forward",
        ),
        (
            "UPDATE audit_head SET id = 3, row_hash = (SELECT row_hash FROM audit_logs WHERE id = 2)",
            "must name a row",
        ),
        ("UPDATE audit_head SET row_hash = 'ff'", "must name a row"),
    ] {
        let err = client.batch_execute(sql).unwrap_err();
        let message = pg_error(&err);
        assert!(message.contains(refusal), "{sql}: {message}");
    }
    let head = log.head().unwrap().unwrap();
    assert_eq!((head.rows, head.last_id), (2, 2));
    assert_eq!(log.verify(Some(&head)).unwrap().finding, None);
}

/// A role of its own on the test server, dropped with everything granted to it when this drops.
struct PgRole {
    name: String,
    database_url: String,
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let dropped =
            postgres::Client::connect(&self.database_url, postgres::NoTls).and_then(|mut c| {
                c.batch_execute(&format!("DROP OWNED BY {0}; DROP ROLE {0}", self.name))
            });
        if let Err(e) = dropped {
            eprintln!("could not drop the test role {}: {}", self.name, pg_error(&e));
        }
    }
}

/// The deployment the README advises: the application connects as a role that does not own the
/// tables, with only the privileges the audit log needs. It appends, reads, exports and
/// verifies; it cannot change a row, nor take the triggers out of the way as the owner can.
#[test]
fn a_role_that_does_not_own_the_tables_uses_the_log_and_cannot_get_around_its_triggers_on_postgres()
{
    let Some(t) = TestDb::postgres() else { return };
    AuditLog::new(t.db().clone()).log(&entry("p", "by the owner", Category::User)).unwrap();
    let name = format!("aigentflow_app_{}_{}", std::process::id(), Utc::now().timestamp_micros());
    let role = PgRole { name: name.clone(), database_url: t.location().to_owned() };
    around(
        &t,
        &format!(
            "CREATE ROLE {name} LOGIN;
             GRANT SELECT ON refinery_schema_history TO {name};
             GRANT SELECT, INSERT ON audit_logs TO {name};
             GRANT SELECT, UPDATE ON audit_head TO {name};"
        ),
    )
    .unwrap();
    let as_app = t.location().replacen("postgres://postgres@", &format!("postgres://{name}@"), 1);
    assert_ne!(as_app, t.location(), "the test URL names the user postgres");
    let log = AuditLog::new(Database::open(&as_app).unwrap());
    let ids = log.log_batch(&[entry("p", "a", Category::User), entry("p", "b", Category::User)]);
    assert_eq!(ids.unwrap(), [2, 3]);
    assert_eq!(log.query(&AuditQuery::default()).unwrap().len(), 3);
    assert_eq!(export_string(&log, ExportFormat::Csv, AuditQuery::default()).lines().count(), 4);
    assert_eq!(log.verify(log.head().unwrap().as_ref()).unwrap().finding, None);
    let mut app = pg_client(&as_app);
    for (sql, refusal) in [
        ("UPDATE audit_logs SET action = 'forged'", "permission denied"),
        ("DELETE FROM audit_logs", "permission denied"),
        ("TRUNCATE audit_logs", "permission denied"),
        ("ALTER TABLE audit_logs DISABLE TRIGGER USER", "must be owner"),
        ("DROP TRIGGER audit_logs_no_update ON audit_logs", "must be owner"),
        ("SET session_replication_role = replica", "permission denied"),
        (
            "UPDATE audit_head SET id = 1, row_hash = (SELECT row_hash FROM audit_logs WHERE id = 1)",
            "only moves forward",
        ),
    ] {
        let message = pg_error(&app.batch_execute(sql).unwrap_err());
        assert!(message.contains(refusal), "{sql}: {message}");
    }
    drop(app);
    drop(log);
    drop(role);
}

// ---- R7: tamper evidence ------------------------------------------------------------------

/// A fresh log of `t`'s backend with six rows, tampered with by `sql` (see [`tamper`]), verified.
fn tampered(t: &TestDb, sql: &str) -> aigentflow::audit::Verification {
    let t = fresh(t);
    let log = AuditLog::new(t.db().clone());
    for i in 1..=6 {
        log.log(&AuditEntry {
            details: Some(json!({"i": i})),
            ..entry("p", &format!("a{i}"), Category::Agent)
        })
        .unwrap();
    }
    tamper(&t, sql);
    log.verify(None).unwrap()
}

on_both! {
fn verify_passes_an_untouched_log(t) {
    let log = AuditLog::new(t.db().clone());
    for i in 0..50 {
        log.log(&entry("p", &format!("a{i}"), Category::File)).unwrap();
    }
    let v = log.verify(None).unwrap();
    assert!(v.is_ok(), "{:?}", v.finding);
    assert_eq!(v.rows, 50);
    assert_eq!(log.verify(v.head.as_ref()).unwrap().finding, None);
}
}

on_both! {
fn verify_names_the_first_edited_row_whatever_field_changed(t) {
    // Every hashed field after the id: the export's columns between the id and the two hashes.
    for column in &aigentflow::audit::EXPORT_COLUMNS[1..10] {
        let v = tampered(t, &format!("UPDATE audit_logs SET {column} = 'x' WHERE id = 3"));
        assert_eq!(v.finding, Some(Finding::Edited { id: 3 }), "{column}");
    }
    let v = tampered(t, "UPDATE audit_logs SET row_hash = 'ff' WHERE id = 4");
    assert!(
        matches!(
            v.finding,
            Some(Finding::Edited { id: 4 }) | Some(Finding::Missing { before_id: 5 })
        ),
        "{:?}",
        v.finding
    );
}
}

on_both! {
/// A row whose stored hash alone is rewritten (its fields as they were) is that row's edit: the
/// next row still links to the hash the row's fields give, so it is not named as following
/// missing rows. Whatever the new hash (short, another row's, the genesis, upper case, a
/// hash of other content) and wherever the row (first, middle, last).
fn a_rewritten_row_hash_is_named_as_that_rows_edit_alone(t) {
    let other = "ab".repeat(32);
    for id in [1, 3, 6] {
        for new_hash in [
            "'ff'".to_owned(),
            format!("'{other}'"),
            format!("'{}'", "0".repeat(64)),
            "upper(row_hash)".to_owned(),
            format!("(SELECT row_hash FROM audit_logs WHERE id = {})", if id == 1 { 2 } else { 1 }),
        ] {
            let v = tampered(t, &format!("UPDATE audit_logs SET row_hash = {new_hash} WHERE id = {id}"));
            assert_eq!(v.findings, [Finding::Edited { id }], "row {id} set to {new_hash}");
        }
    }
    // A link broken for another reason is still named: row 4's link rewritten with row 3's hash.
    let v = tampered(t, "UPDATE audit_logs SET row_hash = 'ff' WHERE id = 3; UPDATE audit_logs SET prev_hash = 'ee' WHERE id = 4");
    assert_eq!(v.findings, [Finding::Edited { id: 3 }, Finding::Missing { before_id: 4 }]);
}
}

/// Bytes that are not text (which a PostgreSQL TEXT column cannot hold) are reported like any
/// other edit, not as a read error.
#[test]
fn verify_names_an_edit_to_bytes_that_are_not_utf8_on_sqlite() {
    let t = TestDb::sqlite();
    for column in &aigentflow::audit::EXPORT_COLUMNS[1..10] {
        let v = tampered(
            &t,
            &format!("UPDATE audit_logs SET {column} = CAST(x'78ff' AS TEXT) WHERE id = 3"),
        );
        assert_eq!(v.finding, Some(Finding::Edited { id: 3 }), "{column} not UTF-8");
    }
    let v = tampered(&t, "UPDATE audit_logs SET row_hash = CAST(x'ff' AS TEXT) WHERE id = 4");
    assert!(v.finding.is_some_and(|f| f.to_string().contains("row ")), "not UTF-8 hash");
}

on_both! {
fn verify_reports_deleted_inserted_reordered_rows(t) {
    assert_eq!(
        tampered(t, "DELETE FROM audit_logs WHERE id = 3").finding,
        Some(Finding::Missing { before_id: 4 })
    );
    assert_eq!(
        tampered(t, "DELETE FROM audit_logs WHERE id = 1").finding,
        Some(Finding::Missing { before_id: 2 })
    );
    // a row inserted with a correctly computed hash still breaks the link of the next row
    let v = tampered(
        t,
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
    let v = tampered(
        t,
        "INSERT INTO audit_logs (id, timestamp, action, category)
         VALUES (100, '2026-01-01 00:00:00.000', 'x', 'user')",
    );
    assert_eq!(v.finding, Some(Finding::Unsealed { id: 100 }));
    let v = tampered(
        t,
        "UPDATE audit_logs SET id = 100 WHERE id = 2; UPDATE audit_logs SET id = 2 WHERE id = 3;
         UPDATE audit_logs SET id = 3 WHERE id = 100;",
    );
    assert!(v.finding.is_some(), "a swap of two rows is found");
    assert_eq!(v.finding, Some(Finding::Reordered { id: 2 }));
}
}

on_both! {
fn verify_against_a_kept_head_catches_truncation_and_rewrite(t) {
    let log = AuditLog::new(t.db().clone());
    for i in 0..5 {
        log.log(&entry("p", &format!("a{i}"), Category::State)).unwrap();
    }
    let head = log.head().unwrap().unwrap();
    assert_eq!((head.rows, head.last_id), (5, 5));
    tamper(t, "DELETE FROM audit_logs WHERE id >= 4");
    // The shortened chain is consistent on its own, but the log's own count of appended ids
    // (sqlite_sequence, audit_head) still says 5.
    let alone = log.verify(None).unwrap();
    assert_eq!(alone.findings, vec![Finding::TailMissing { after_id: 3, through_id: 5 }]);
    assert!(alone.findings[0].to_string().contains("deleted from the end"));
    let v = log.verify(Some(&head)).unwrap();
    let truncated = Finding::Truncated { expected_rows: 5, found_rows: 3 };
    assert!(v.findings.contains(&truncated), "{:?}", v.findings);
    assert!(truncated.to_string().contains("truncated"));
}
}

on_both! {
/// A kept head's count of rows is held against the rows the log holds up to its last row (and
/// the rows without a hash right after it, which `audit head` counts too): a head whose hash
/// matches but whose count does not is named, whether it counts fewer or more rows.
fn a_kept_heads_count_of_rows_is_held_against_the_log(t) {
    use aigentflow::audit::ChainHead;
    let log = AuditLog::new(t.db().clone());
    let mut heads = Vec::new();
    for i in 1..=6 {
        log.log(&entry("p", &format!("a{i}"), Category::State)).unwrap();
        heads.push(log.head().unwrap().unwrap());
    }
    let with_rows = |h: &ChainHead, rows: u64| ChainHead { rows, ..h.clone() };
    let count = |h: &ChainHead, rows: u64| Finding::HeadCount {
        last_id: h.last_id,
        expected_rows: rows,
        found_rows: h.last_id as u64,
    };
    for h in &heads {
        assert_eq!(log.verify(Some(h)).unwrap().findings, Vec::<Finding>::new(), "head at row {}", h.last_id);
        for rows in [1, h.rows - 1, h.rows + 1, 6]
            .into_iter()
            .filter(|&r| r != h.rows && (1..=6).contains(&r))
        {
            let v = log.verify(Some(&with_rows(h, rows))).unwrap();
            assert_eq!(v.findings, [count(h, rows)], "head at row {} counting {rows}", h.last_id);
            assert!(v.findings[0].to_string().contains(&format!("counts {rows} rows up to row")));
        }
    }
    // More rows than the log holds is a truncation, as before.
    let v = log.verify(Some(&with_rows(&heads[5], 7))).unwrap();
    assert_eq!(v.findings, [Finding::Truncated { expected_rows: 7, found_rows: 6 }]);
    // A row written around the log after the last: the head printed now counts it, and
    // verifies against the log but for that row; so does the head from before it.
    around(
        t,
        "INSERT INTO audit_logs (id, timestamp, action, category)
         VALUES (7, '2026-01-01 00:00:00.000', 'forged', 'user')",
    )
    .unwrap();
    let now = log.head().unwrap().unwrap();
    assert_eq!((now.rows, now.last_id), (7, 6));
    for h in [&now, &heads[5], &heads[2]] {
        let v = log.verify(Some(h)).unwrap();
        assert_eq!(v.findings, [Finding::Unsealed { id: 7 }], "head at row {}", h.last_id);
    }
    let v = log.verify(Some(&with_rows(&heads[2], 4))).unwrap();
    assert_eq!(v.findings, [Finding::Unsealed { id: 7 }, count(&heads[2], 4)]);
}
}

on_both! {
/// The log's own count of the ids it appended (`sqlite_sequence` on SQLite, `audit_head` on
/// PostgreSQL), set around the log to every value that hides or shows a deletion: past the
/// last row is rows deleted from the end (also after real deletions), below the last sealed row
/// (or gone, on SQLite) is a count set back, and the count equal to the last row is clean.
fn the_logs_count_of_appended_ids_set_around_it_is_named_by_verify(t) {
    let set = |t: &TestDb, n: i64| match t.backend() {
        Backend::Sqlite if n < 0 => {
            around(t, "DELETE FROM sqlite_sequence WHERE name = 'audit_logs'").unwrap()
        }
        Backend::Sqlite => around(
            t,
            &format!("UPDATE sqlite_sequence SET seq = {n} WHERE name = 'audit_logs'"),
        )
        .unwrap(),
        Backend::Postgres => around(
            t,
            &format!(
                "BEGIN; ALTER TABLE audit_head DISABLE TRIGGER USER;
                 UPDATE audit_head SET id = {n}, row_hash = CASE WHEN {n} = 0 THEN NULL ELSE 'x' END;
                 ALTER TABLE audit_head ENABLE TRIGGER USER; COMMIT;"
            ),
        )
        .unwrap(),
    };
    let sqlite = t.backend() == Backend::Sqlite;
    // (deleted from the end, the count set to, the finding).
    let mut cases: Vec<(i64, i64, Option<Finding>)> = vec![
        (0, 6, None),
        (0, 7, Some(Finding::TailMissing { after_id: 6, through_id: 7 })),
        (0, 1000, Some(Finding::TailMissing { after_id: 6, through_id: 1000 })),
        (0, 5, Some(Finding::CounterSetBack { counter: 5, last_id: 6 })),
        (0, 1, Some(Finding::CounterSetBack { counter: 1, last_id: 6 })),
        (0, 0, Some(Finding::CounterSetBack { counter: 0, last_id: 6 })),
        (2, 6, Some(Finding::TailMissing { after_id: 4, through_id: 6 })),
        (2, 4, None),
        (2, 3, Some(Finding::CounterSetBack { counter: 3, last_id: 4 })),
    ];
    if sqlite {
        cases.push((0, -1, Some(Finding::CounterSetBack { counter: 0, last_id: 6 })));
    }
    for (deleted, count, finding) in cases {
        let t = fresh(t);
        let log = AuditLog::new(t.db().clone());
        for i in 1..=6 {
            log.log(&entry("p", &format!("a{i}"), Category::Agent)).unwrap();
        }
        if deleted > 0 {
            tamper(&t, &format!("DELETE FROM audit_logs WHERE id > {}", 6 - deleted));
        }
        set(&t, count);
        let v = log.verify(None).unwrap();
        let case = format!("{deleted} deleted, count set to {count}");
        assert_eq!(v.findings, finding.clone().into_iter().collect::<Vec<_>>(), "{case}");
        if let Some(f) = finding {
            assert!(!f.to_string().is_empty());
        }
    }
}
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

/// A log on `db` holding every value of [`nasty_values`] in several fields.
fn nasty_log(db: &Database) -> AuditLog {
    let log = AuditLog::new(db.clone());
    for (i, v) in nasty_values().into_iter().enumerate() {
        let action = if v.is_empty() { format!("empty-{i}") } else { v.to_owned() };
        // A blank text is refused (an export could not tell it from none): the empty value
        // goes in as none.
        let given = Some(v.to_owned()).filter(|v| !v.trim().is_empty());
        log.log(&AuditEntry {
            agent: given.clone(),
            user_id: given,
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
    let id = |v: Option<&str>| v.unwrap_or_default().to_owned();
    let cells = [
        r.id.to_string(),
        aigentflow::states::time::to_rfc3339(r.timestamp),
        id(r.project_id.as_ref().map(|p| p.as_str())),
        id(r.task_id.as_ref().map(|t| t.as_str())),
        text(&r.agent),
        r.action.clone(),
        r.category.clone(),
        text(&r.details_text),
        text(&r.user_id),
        text(&r.ip_address),
        text(&r.prev_hash),
        text(&r.row_hash),
        r.origin.as_ref().and_then(|o| o.id).map(|n| n.to_string()).unwrap_or_default(),
        text(&r.origin.as_ref().and_then(|o| o.hash.clone())),
        text(&r.origin.as_ref().and_then(|o| o.source.clone())),
    ]
    .into_iter()
    .chain(r.event.cells().map(|c| c.unwrap_or_default().to_owned()))
    .chain([r.hash_version.to_string()]);
    let guard = |s: String| {
        if neutralize && s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s
        }
    };
    cells.map(guard).collect()
}

/// The CSV export of the whole log.
fn export_csv(log: &AuditLog, neutralize_formulas: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let options = ExportOptions { neutralize_formulas, ..ExportOptions::new(ExportFormat::Csv) };
    log.export(&mut out, &options, |_| {}).unwrap();
    out
}

/// Reads a CSV export back with the csv crate, header checked.
pub(crate) fn read_csv(out: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(out);
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        aigentflow::audit::EXPORT_COLUMNS
    );
    reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect()
}

on_both! {
fn csv_export_reads_back_exactly_with_the_formula_guard_applied(t) {
    let log = nasty_log(t.db());
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
}

on_both! {
fn csv_export_reads_back_with_pythons_csv_module(t) {
    let out = export_csv(&nasty_log(t.db()), false);
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
}

on_both! {
fn json_and_jsonl_exports_parse_back_equal(t) {
    let log = nasty_log(t.db());
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
    let other = fresh(t);
    let empty = AuditLog::new(other.db().clone());
    assert_eq!(export_string(&empty, ExportFormat::Json, AuditQuery::default()).trim(), "[]");
}
}

on_both! {
fn any_cell_text_reads_back_from_csv_exactly(t) {
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
    // One log for every case: each case's rows join those of the cases before it, and the
    // whole log must read back.
    let log = AuditLog::new(t.db().clone());
    runner
        .run(&prop::collection::vec(entry, 1..6), |entries| {
            for (project, task, agent, action, user, note) in entries {
                // A PostgreSQL TEXT value holds no NUL (U+0000): the server refuses it. (In the
                // details it is the JSON escape `\u0000`, which any text holds.)
                let storable = |s: String| match t.backend() {
                    Backend::Sqlite => s,
                    Backend::Postgres => s.replace('\0', ""),
                };
                let (project, task, agent, action, user) = (
                    storable(project),
                    storable(task),
                    storable(agent),
                    storable(action),
                    storable(user),
                );
                let nonempty = |s: String| Some(s).filter(|s| !s.trim().is_empty());
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
}

on_both! {
fn exports_span_many_blocks_and_cells_larger_than_a_block(t) {
    let log = AuditLog::new(t.db().clone());
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
}

/// Collects an export; at its first write, while the export's transaction is open, another
/// thread appends `extra` entries (actions `TAG-I`) and commits them.
struct AppendingWriter {
    log: AuditLog,
    extra: usize,
    tag: String,
    out: Vec<u8>,
}

impl std::io::Write for AppendingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.extra > 0 {
            let (log, extra) = (self.log.clone(), std::mem::take(&mut self.extra));
            let entries: Vec<AuditEntry> = (0..extra)
                .map(|i| entry("p", &format!("{}-{i}", self.tag), Category::User))
                .collect();
            std::thread::spawn(move || log.log_batch(&entries).unwrap()).join().unwrap();
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

on_both! {
/// An export reads one snapshot: rows committed while it runs are not in it, and the chain head
/// it reports is the one of the rows it wrote, whatever was appended since.
fn an_export_and_its_chain_head_come_from_one_snapshot_while_appends_go_on(t) {
    let log = AuditLog::new(t.db().clone());
    let entries: Vec<AuditEntry> = (0..2000)
        .map(|i| AuditEntry {
            details: Some(json!({ "i": i, "pad": "x".repeat(100) })),
            ..entry("p", &format!("before-{i}"), Category::State)
        })
        .collect();
    log.log_batch(&entries).unwrap();
    let head = log.head().unwrap();
    for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
        let before = log.count(&AuditQuery::default()).unwrap();
        let tag = format!("during-{format:?}");
        let mut writer =
            AppendingWriter { log: log.clone(), extra: 3, tag: tag.clone(), out: Vec::new() };
        let report = log.export(&mut writer, &ExportOptions::new(format), |_| {}).unwrap();
        assert_eq!(log.count(&AuditQuery::default()).unwrap(), before + 3, "appended meanwhile");
        assert_eq!(report.rows, before, "{format:?}: only the rows of the snapshot");
        let last_id = log.query(&AuditQuery { limit: Some(1), ..AuditQuery::default() });
        assert!(last_id.unwrap()[0].id > before as i64);
        let text = String::from_utf8(writer.out).unwrap();
        assert!(!text.contains(&tag), "{format:?}: a row appended meanwhile was exported");
        let chain_head = report.chain_head.unwrap();
        assert_eq!((chain_head.rows, chain_head.last_id), (before, before as i64), "{format:?}");
        if before == 2000 {
            assert_eq!(Some(chain_head), head);
        }
    }
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

on_both! {
fn a_failing_writer_ends_the_export_with_its_error(t) {
    let log = AuditLog::new(t.db().clone());
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
}

#[test]
fn a_cell_that_is_not_utf8_is_reported_unsealed_exported_as_csv_and_named_elsewhere_on_sqlite() {
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
        ).unwrap();
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

on_both! {
fn a_project_export_is_the_same_whether_the_project_holds_most_rows_or_few(t) {
    let log = AuditLog::new(t.db().clone());
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
}

// ---- R12: time ----------------------------------------------------------------------------

on_both! {
fn date_filters_include_the_boundary_day(t) {
    let start = Utc.with_ymd_and_hms(2026, 11, 20, 23, 0, 0).unwrap();
    let log = AuditLog::new(clocked_on(t, start, Duration::hours(1)));
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
}

// ---- R4: legacy rows are sealed -----------------------------------------------------------

#[test]
fn legacy_audit_rows_are_sealed_into_the_chain_on_adoption_on_sqlite() {
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

on_both! {
fn threads_appending_at_once_keep_one_linear_chain(t) {
    let log = AuditLog::new(t.db().clone());
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
    let ids: Vec<i64> = log.query(&AuditQuery::default()).unwrap().iter().map(|r| r.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=100).collect::<Vec<i64>>(), "ids are 1 to 100, none skipped");
}
}

on_both! {
/// Processes (the worker binary, given the database's path or URL) and threads of this one
/// append at once, alone, in batches and beside state saves: one chain that verifies, its ids
/// 1 to N with none skipped, every entry once.
fn processes_and_threads_appending_at_once_keep_one_gapless_chain(t) {
    const PROCESSES: usize = 3;
    const THREADS: usize = 3;
    const EACH: usize = 20;
    let children: Vec<_> = (0..PROCESSES)
        .map(|p| {
            let (threads, each) = (THREADS.to_string(), EACH.to_string());
            worker(&["audit", t.location(), &format!("w{p}"), &threads, &each])
        })
        .collect();
    let log = AuditLog::new(t.db().clone());
    let local: Vec<_> = (0..2)
        .map(|k| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    log.log(&entry("p", &format!("here-t{k}-{i}"), Category::Agent)).unwrap();
                }
            })
        })
        .collect();
    for child in children {
        expect_ok(child);
    }
    for thread in local {
        thread.join().unwrap();
    }
    let total = (PROCESSES * THREADS + 2) * EACH;
    let v = log.verify(None).unwrap();
    assert_eq!((v.rows, v.finding, v.findings_total), (total as u64, None, 0));
    let records = log.query(&AuditQuery::default()).unwrap();
    let mut ids: Vec<i64> = records.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=total as i64).collect::<Vec<_>>(), "ids are gapless");
    let mut actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    actions.sort_unstable();
    let mut want: Vec<String> = (0..PROCESSES)
        .flat_map(|p| (0..THREADS).map(move |k| format!("w{p}-t{k}")))
        .chain((0..2).map(|k| format!("here-t{k}")))
        .flat_map(|name| (0..EACH).map(move |i| format!("{name}-{i}")))
        .collect();
    want.sort_unstable();
    assert_eq!(actions, want, "every entry once");
    let head = log.head().unwrap().unwrap();
    assert_eq!((head.rows, head.last_id), (total as u64, total as i64));
    assert_eq!(Some(head), v.head);
}
}

/// A clock the test sets: every reading gives the instant last set, on every handle sharing it.
#[derive(Debug, Default)]
struct SetClock(std::sync::atomic::AtomicI64);

impl SetClock {
    fn set(&self, at: chrono::DateTime<Utc>) {
        self.0.store(at.timestamp_millis(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl aigentflow::persistence::Clock for SetClock {
    fn now(&self) -> chrono::DateTime<Utc> {
        let ms = self.0.load(std::sync::atomic::Ordering::SeqCst);
        Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
    }
}

/// One step of the cross-backend property: append entries (one alone, or a batch) at an instant,
/// or read.
#[derive(Debug, Clone)]
enum Step {
    Append { at: i64, entries: Vec<AuditEntry> },
    Read(Box<AuditQuery>),
}

/// The same random sequence of appends and queries on SQLite and on PostgreSQL gives the same
/// records, counts, summaries, exports (every format), heads and verifications: ids, hashes,
/// order (text in byte order on both), filters, limits and offsets (any u64) included.
#[test]
fn random_entries_and_queries_give_the_same_results_on_sqlite_and_postgres() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let Some(pg) = TestDb::postgres() else { return };
    let sqlite = TestDb::sqlite();
    let clock = Arc::new(SetClock::default());
    let open = |t: &TestDb| {
        let options = Options { clock: clock.clone(), ..Options::default() };
        AuditLog::new(Database::open_with(t.location(), options).unwrap())
    };
    let (on_sqlite, on_pg) = (open(&sqlite), open(&pg));
    // Values that differ in case, accents and byte order, so ordering and filters are tried.
    let pick = |values: &'static [&'static str]| {
        prop::option::of(prop::sample::select(values).prop_map(String::from))
    };
    let projects: &'static [&'static str] = &["p1", "p2", "P1", "p-é", "p\u{1F600}", "Z"];
    let agents: &'static [&'static str] = &["coder", "Coder", "tester", "é", "z"];
    let tasks: &'static [&'static str] = &["t1", "t2", "T1"];
    // Filters also try a value no entry holds, and one with a NUL, which no PostgreSQL text can.
    let filter = |values: &'static [&'static str]| {
        prop::option::of(prop_oneof![
            8 => prop::sample::select(values).prop_map(String::from),
            1 => Just("none".to_owned()),
            1 => prop::sample::select(values).prop_map(|v| format!("{v}\0")),
        ])
    };
    // Text without NUL, which a PostgreSQL TEXT value cannot hold.
    let text = || "[^\\x00]{0,16}";
    let entry = (
        pick(projects),
        pick(tasks),
        pick(agents),
        "[^\\x00]{0,12}[a-z]",
        prop::sample::select(Category::KNOWN.to_vec()),
        prop::option::of(text().prop_map(|note| json!({ "note": note, "n": [1, 2.5] }))),
        prop::option::of(text()),
        prop::option::of("[0-9.:a-f]{0,12}"),
    )
        .prop_map(|(project, task, agent, action, category, details, user, ip)| AuditEntry {
            project_id: project.map(Into::into),
            task_id: task.map(Into::into),
            agent,
            details,
            // A blank text is refused; it goes in as none.
            user_id: user.filter(|u: &String| !u.trim().is_empty()),
            ip_address: ip.filter(|i: &String| !i.trim().is_empty()),
            ..AuditEntry::new(action, category)
        });
    // Instants over a few days, repeated and out of order at times; bounds as dates or instants.
    // The first and last instants of the stored domain (years 0000 and 9999) now and then.
    let base = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap().timestamp_millis();
    let first = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap().timestamp_millis();
    let last = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap().timestamp_millis() + 999;
    let at = prop_oneof![
        8 => (0i64..4 * 86_400_000).prop_map(move |ms| base + ms / 3_600_000 * 3_600_000),
        1 => Just(first),
        1 => Just(last),
    ];
    let bound = prop::option::of(prop_oneof![
        4 => (1u32..6).prop_map(|d| format!("2026-03-0{d}")),
        4 => (1u32..6, 0u32..24).prop_map(|(d, h)| format!("2026-03-0{d}T{h:02}:00:00Z")),
        1 => prop::sample::select(vec!["0000-01-01", "9999-12-31", "9999-12-31T23:59:59.999Z"])
            .prop_map(String::from),
    ]);
    let count = prop::option::of(prop_oneof![0u64..8, (i64::MAX as u64 - 1)..=u64::MAX]);
    let category = prop::option::of(prop::sample::select(Category::KNOWN.to_vec()));
    let query = (
        filter(projects),
        filter(tasks),
        category,
        filter(agents),
        bound.clone(),
        bound,
        count.clone(),
        count,
    )
        .prop_map(|(project_id, task_id, category, agent, start, end, limit, offset)| AuditQuery {
            project_id: project_id.map(Into::into),
            task_id: task_id.map(Into::into),
            category,
            agent,
            start,
            end,
            limit,
            offset,
            ..AuditQuery::default()
        });
    let step = prop_oneof![
        (at.clone(), entry.clone()).prop_map(|(at, e)| Step::Append { at, entries: vec![e] }),
        (at, prop::collection::vec(entry, 1..5))
            .prop_map(|(at, entries)| Step::Append { at, entries }),
        query.prop_map(|q| Step::Read(Box::new(q))),
    ];
    let mut runner = TestRunner::new(Config { cases: 64, ..Config::default() });
    // Both logs live through every case: each case's steps go on from the state the ones before
    // left, the same on both.
    runner
        .run(&prop::collection::vec(step, 1..8), |steps| {
            for step in steps {
                match step {
                    Step::Append { at, entries } => {
                        clock.set(Utc.timestamp_millis_opt(at).unwrap());
                        let ids = if entries.len() == 1 {
                            (
                                vec![on_sqlite.log(&entries[0]).unwrap()],
                                vec![on_pg.log(&entries[0]).unwrap()],
                            )
                        } else {
                            (
                                on_sqlite.log_batch(&entries).unwrap(),
                                on_pg.log_batch(&entries).unwrap(),
                            )
                        };
                        prop_assert_eq!(ids.0, ids.1);
                    }
                    Step::Read(q) => {
                        prop_assert_eq!(
                            on_sqlite.query(&q).unwrap(),
                            on_pg.query(&q).unwrap(),
                            "{:?}",
                            q
                        );
                        prop_assert_eq!(on_sqlite.count(&q).unwrap(), on_pg.count(&q).unwrap());
                        let project = q.project_id.clone().unwrap_or_else(|| "".into());
                        prop_assert_eq!(
                            on_sqlite.summary(&project).unwrap(),
                            on_pg.summary(&project).unwrap()
                        );
                        for format in [ExportFormat::Csv, ExportFormat::Json, ExportFormat::Jsonl] {
                            prop_assert_eq!(
                                export_string(&on_sqlite, format, (*q).clone()),
                                export_string(&on_pg, format, (*q).clone()),
                                "{:?} {:?}",
                                format,
                                q
                            );
                        }
                    }
                }
            }
            prop_assert_eq!(on_sqlite.head().unwrap(), on_pg.head().unwrap());
            let v = on_pg.verify(None).unwrap();
            prop_assert!(v.is_ok(), "{:?}", v.finding);
            prop_assert_eq!(on_sqlite.verify(None).unwrap(), v);
            Ok(())
        })
        .unwrap();
    // The rows themselves, as each backend stores them, are equal too.
    let all = AuditQuery::default();
    assert_eq!(on_sqlite.query(&all).unwrap(), on_pg.query(&all).unwrap());
    assert!(on_pg.count(&all).unwrap() > 0);
}

// ---- snapshots of each export format ------------------------------------------------------

on_both! {
fn export_format_snapshots(t) {
    let db = clocked_on(
        t,
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
    log.log(
        &entry("project-1", "config_change", Category::SystemEvent)
            .severity(Severity::Warning)
            .outcome(Outcome::Failure)
            .actor(Actor::agent("planner"))
            .target(Target::new("config", "budget.monthly"))
            .changes(Some(json!({"limit": 10})), Some(json!({"limit": 20})))
            .error("quota exceeded"),
    )
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
}

#[test]
fn exports_agree_with_queries_on_legacy_rows_and_rows_written_around_the_log_on_sqlite() {
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

/// Every way this layer reads or opens a log (at a path or URL), as a process with no bad intent
/// would run them.
fn read_and_open_every_way(location: &str) {
    let log = AuditLog::new(Database::open(location).unwrap());
    log.query(&AuditQuery::default()).unwrap();
    log.head().unwrap();
    log.summary(&"p".into()).unwrap();
    export_string(&log, ExportFormat::Csv, AuditQuery::default());
    log.verify(None).unwrap();
    // A write through the log appends after the last sealed row and seals nothing else.
    log.log(&entry("p", "after the tampering", Category::User)).unwrap();
    let read_only = AuditLog::new(Database::open_read_only(location).unwrap());
    read_only.query(&AuditQuery::default()).unwrap();
    read_only.verify(None).unwrap();
}

#[test]
fn r18_tampering_is_named_by_verify_and_nothing_a_read_or_write_does_seals_it_on_sqlite() {
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
        read_and_open_every_way(path.to_str().unwrap());
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

/// R18 on PostgreSQL: a row the tables' owner writes around the log (it has no hash, or its hash
/// with its timestamp in another form of the same instant), or rows whose hashes or timestamps
/// the owner rewrites with the triggers disabled or bypassed, are named by `verify`, and nothing
/// the log does afterwards (reads, exports, read-only opens, appends) seals them.
#[test]
fn r18_tampering_is_named_by_verify_and_nothing_a_read_or_write_does_seals_it_on_postgres() {
    use aigentflow::persistence::audit_chain::{hashed_timestamp, row_hash, HashedFields};
    let Some(first) = TestDb::postgres() else { return };
    // The rows are stamped 2026-11-25 05:40:17.895 UTC; each form below is that same instant.
    let stamp =
        Utc.with_ymd_and_hms(2026, 11, 25, 5, 40, 17).unwrap() + Duration::milliseconds(895);
    // A row 31 after the 30 the log wrote, linked to row 30 (`head`) with its right hash.
    let forged_31 = |head: &str, timestamp: &str| {
        let hashed = hashed_timestamp(timestamp.as_bytes());
        let fields = HashedFields {
            id: 31,
            timestamp: &hashed,
            project_id: Some(b"p"),
            task_id: None,
            agent: None,
            action: b"forged",
            category: b"user",
            details: None,
            user_id: None,
            ip_address: None,
            origin: None,
            event: None,
        };
        let hash = row_hash(head, &fields);
        format!(
            "INSERT INTO audit_logs
                 (id, timestamp, project_id, action, category, prev_hash, row_hash)
             VALUES (31, '{timestamp}', 'p', 'forged', 'user', '{head}', '{hash}')"
        )
    };
    type Case = (Box<dyn Fn(&str) -> String>, bool, Finding);
    // (the SQL given row 30's hash, whether it needs the triggers out of the way, the finding)
    let cases: Vec<Case> = vec![
        (
            Box::new(|_| {
                "INSERT INTO audit_logs (id, timestamp, action, category)
                 VALUES (31, '2026-11-25 05:40:17.895', 'forged', 'user')"
                    .into()
            }),
            false,
            Finding::Unsealed { id: 31 },
        ),
        (
            Box::new(|_| {
                "INSERT INTO audit_logs (id, timestamp, action, category, user_id)
                 VALUES (1000, '2026-11-25 05:40:17.895', 'forged', 'security', 'root')"
                    .into()
            }),
            false,
            Finding::Unsealed { id: 1000 },
        ),
        (
            Box::new(move |head| forged_31(head, "2026-11-25T05:40:17.895Z")),
            false,
            Finding::NotCanonical { id: 31, column: "timestamp" },
        ),
        (
            Box::new(move |head| forged_31(head, "2026-11-25T15:40:17.895+10:00")),
            false,
            Finding::NotCanonical { id: 31, column: "timestamp" },
        ),
        (
            Box::new(|_| {
                "UPDATE audit_logs SET prev_hash = NULL, row_hash = NULL WHERE id BETWEEN 15 AND 20;
                 UPDATE audit_logs SET action = 'rewritten' WHERE id = 15"
                    .into()
            }),
            true,
            Finding::Unsealed { id: 15 },
        ),
        (
            Box::new(|_| {
                "UPDATE audit_logs SET prev_hash = NULL, row_hash = NULL WHERE id = 30".into()
            }),
            true,
            Finding::Unsealed { id: 30 },
        ),
        (
            Box::new(|_| {
                "UPDATE audit_logs SET timestamp = '2026-11-25T05:40:17.895Z' WHERE id = 7".into()
            }),
            true,
            Finding::NotCanonical { id: 7, column: "timestamp" },
        ),
        (
            Box::new(|_| {
                "UPDATE audit_logs SET timestamp = '2026-11-25 01:40:17.895-04:00' WHERE id = 1"
                    .into()
            }),
            true,
            Finding::NotCanonical { id: 1, column: "timestamp" },
        ),
        // A superuser skips every ordinary trigger for its session without altering the table.
        (
            Box::new(|_| {
                "SET session_replication_role = replica;
                 UPDATE audit_logs SET timestamp = '2026-11-25 05:40:17.895000' WHERE id = 12;
                 DELETE FROM audit_logs WHERE id = 20"
                    .into()
            }),
            false,
            Finding::NotCanonical { id: 12, column: "timestamp" },
        ),
    ];
    for (n, (sql, needs_triggers_off, finding)) in cases.into_iter().enumerate() {
        let fresh_db;
        let t = if n == 0 {
            &first
        } else {
            fresh_db = fresh(&first);
            &fresh_db
        };
        let log = AuditLog::new(clocked_on(t, stamp, Duration::zero()));
        log.log_batch(
            &(0..30).map(|i| entry("p", &format!("a{i}"), Category::User)).collect::<Vec<_>>(),
        )
        .unwrap();
        let sql = sql(&log.head().unwrap().unwrap().hash);
        if needs_triggers_off {
            tamper(t, &sql);
        } else {
            around(t, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let unsealed_before = unsealed(t.location());
        assert_eq!(log.verify(None).unwrap().finding, Some(finding.clone()), "{sql}");
        read_and_open_every_way(t.location());
        assert_eq!(unsealed(t.location()), unsealed_before, "nothing sealed the tampering: {sql}");
        let v = AuditLog::new(t.reopen()).verify(None).unwrap();
        assert_eq!(v.finding, Some(finding), "{sql}");
    }
}

on_both! {
fn every_head_audit_head_gives_is_accepted_back_by_verify(t) {
    let log = AuditLog::new(t.db().clone());
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
}

on_both! {
fn verify_names_every_tampered_row_not_only_the_first(t) {
    let log = AuditLog::new(t.db().clone());
    log.log_batch(
        &(0..40).map(|i| entry("p", &format!("a{i}"), Category::User)).collect::<Vec<_>>(),
    )
    .unwrap();
    around(
        t,
        "INSERT INTO audit_logs (id, timestamp, action, category)
         VALUES (1000, '2026-01-01 00:00:00.000', 'forged', 'user')",
    )
    .unwrap();
    // On SQLite the edit of row 30 stores the same bytes as a BLOB; a PostgreSQL column holds
    // only text, so there it stores other text. Both are an edit.
    let row_30 = match t.backend() {
        Backend::Sqlite => "UPDATE audit_logs SET user_id = CAST('x' AS BLOB) WHERE id = 30",
        Backend::Postgres => "UPDATE audit_logs SET user_id = 'x' WHERE id = 30",
    };
    tamper(
        t,
        &format!(
            "UPDATE audit_logs SET prev_hash = NULL, row_hash = NULL WHERE id = 5;
             UPDATE audit_logs SET action = 'edited' WHERE id = 12;
             UPDATE audit_logs SET timestamp = replace(timestamp, ' ', 'T') || 'Z' WHERE id = 20;
             {row_30};"
        ),
    );
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
}

on_both! {
fn an_unsealed_row_cannot_be_sealed_through_sql_even_with_its_right_hash(t) {
    use aigentflow::persistence::audit_chain::{hashed_timestamp, row_hash, HashedFields};
    let log = AuditLog::new(t.db().clone());
    log.log(&entry("p", "real", Category::User)).unwrap();
    let prev = log.head().unwrap().unwrap().hash;
    around(
        t,
        "INSERT INTO audit_logs (id, timestamp, action, category)
         VALUES (2, '2026-01-01 00:00:00.000', 'forged', 'user')",
    )
    .unwrap();
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
        origin: None,
        event: None,
    };
    let hash = row_hash(&prev, &fields);
    let err = around(
        t,
        &format!("UPDATE audit_logs SET prev_hash = '{prev}', row_hash = '{hash}' WHERE id = 2"),
    )
    .unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    assert_eq!(log.verify(None).unwrap().finding, Some(Finding::Unsealed { id: 2 }));
    // Nor does the log seal it: the next append links around it.
    assert_eq!(log.log(&entry("p", "next", Category::User)).unwrap(), 3);
    let v = log.verify(None).unwrap();
    assert_eq!((v.findings, v.rows), (vec![Finding::Unsealed { id: 2 }], 3));
    assert_eq!(unsealed(t.location()), 1);
}
}

on_both! {
/// Rows deleted where no link breaks are named too: the last rows followed by a legitimate
/// append (which links to the row before them), and rows after one whose hashes were removed
/// (whose next link is not judged), for every count and place, with appends after or not. Ids
/// are gapless, so a missing id is a deleted row.
fn verify_names_rows_deleted_where_no_link_breaks(t) {
    // (rows whose hashes are removed, rows deleted, appends after), on a log of 8 rows.
    let cases: &[(&[i64], (i64, i64), usize)] = &[
        (&[], (8, 8), 1),
        (&[], (7, 8), 1),
        (&[], (6, 8), 3),
        (&[], (8, 8), 0),
        (&[3], (4, 4), 0),
        (&[3], (4, 6), 0),
        (&[3], (4, 8), 0),
        (&[3], (4, 8), 2),
        (&[5, 6], (7, 7), 1),
        (&[1], (2, 5), 0),
        (&[], (1, 3), 0),
        (&[8], (8, 8), 1),
    ];
    for &(unsealed, (from, to), appends) in cases {
        let t = fresh(t);
        let log = AuditLog::new(t.db().clone());
        for i in 1..=8 {
            log.log(&entry("p", &format!("a{i}"), Category::Agent)).unwrap();
        }
        let mut sql = format!("DELETE FROM audit_logs WHERE id BETWEEN {from} AND {to};");
        for id in unsealed {
            sql.push_str(&format!(
                "UPDATE audit_logs SET prev_hash = NULL, row_hash = NULL WHERE id = {id};"
            ));
        }
        tamper(&t, &sql);
        // A fresh handle, as the next process appends.
        let next = AuditLog::new(Database::open(t.location()).unwrap());
        for i in 0..appends {
            next.log(&entry("p", &format!("after{i}"), Category::Agent)).unwrap();
        }
        let v = next.verify(None).unwrap();
        let case = format!("unsealed {unsealed:?}, deleted {from}..={to}, {appends} appends");
        let after_gap = if to < 8 { Some(to + 1) } else if appends > 0 { None } else { Some(0) };
        match after_gap {
            // Deleted at the very end and nothing after: no id is missing between rows, and
            // the log's own count of appended ids goes past the last.
            Some(0) => {
                assert!(
                    v.findings.iter().all(|f| !matches!(f, Finding::Missing { .. })),
                    "{case}: {:?}",
                    v.findings
                );
                let tail = Finding::TailMissing { after_id: from - 1, through_id: 8 };
                assert!(v.findings.contains(&tail), "{case}: {:?}", v.findings);
            }
            Some(before_id) => assert!(
                v.findings.contains(&Finding::Missing { before_id }),
                "{case}: {:?}",
                v.findings
            ),
            None => assert!(
                v.findings.iter().any(|f| matches!(f, Finding::Missing { before_id } if *before_id > to)),
                "{case}: {:?}",
                v.findings
            ),
        }
        for id in unsealed.iter().filter(|id| !(from..=to).contains(*id)) {
            assert!(v.findings.contains(&Finding::Unsealed { id: *id }), "{case}: {:?}", v.findings);
        }
        assert!(!v.is_ok(), "{case}");
    }
}
}
