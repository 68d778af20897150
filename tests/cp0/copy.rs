//! Issue 13 item 3: `db copy` moves a whole database between backends, every row equal, the
//! audit chain verifying on the destination, refusing a destination that holds rows, and
//! leaving the destination as it was when it fails.

use aigentflow::audit::{AuditEntry, AuditLog, Category};
use aigentflow::persistence::{Cell, Database, Error as PError, SqliteStateStore, TABLES};
use aigentflow::states::{Event, StateContext, StateMachine, StateStore};

use crate::inspect::{stored_bytes, Driver, Raw};
use crate::support::*;

/// Every row of every table, each cell as text with its kind, in primary-key order.
fn dump(db: &Database) -> Vec<(String, Vec<Vec<String>>)> {
    let order = |table: &str| match table {
        "checkpoints" => "task_id, seq, id",
        "configurations" => "key, scope",
        "schema_versions" => "version",
        "workflow_states" | "task_workflows" => "task_id",
        "workflow_definitions" => "name, version",
        _ => "id",
    };
    db.read(|tx| {
        let mut out = Vec::new();
        for table in TABLES {
            // Generated columns are the destination's own (search vectors exist on one backend).
            let columns = match table {
                "agent_invocations" => "id, trace_id, agent, task_fragment, started_at, completed_at, outcome, quality_score, token_usage, output_summary, error, total_tokens",
                "lessons" => "id, project_id, category, title, summary, details, tags, source_agent, source_file, confidence, application_count, created_at, updated_at",
                _ => "*",
            };
            let sql = format!("SELECT {columns} FROM {table} ORDER BY {}", order(table));
            let mut stmt = tx.prepare(&sql)?;
            let mut rows = stmt.query(&[])?;
            let mut cells = Vec::new();
            while let Some(r) = rows.next()? {
                let mut row = Vec::new();
                let mut i = 0;
                while let Ok(cell) = r.cell(i) {
                    row.push(match cell {
                        Cell::Null => "null".to_owned(),
                        Cell::Integer(n) => format!("int {n}"),
                        Cell::Real(f) => format!("real {f}"),
                        Cell::Text(t) => format!("text {t}"),
                        Cell::Blob(b) => format!("blob {b:?}"),
                    });
                    i += 1;
                }
                cells.push(row);
            }
            out.push((table.to_owned(), cells));
        }
        Ok::<_, PError>(out)
    })
    .unwrap()
}

/// Asserts two dumps are equal, naming the first table and row that differ.
fn assert_same(
    got: &[(String, Vec<Vec<String>>)],
    want: &[(String, Vec<Vec<String>>)],
    what: &str,
) {
    for ((table, rows), (_, expected)) in got.iter().zip(want) {
        assert_eq!(rows.len(), expected.len(), "{what}: rows of {table}");
        for (i, (row, exp)) in rows.iter().zip(expected).enumerate() {
            for (j, (a, b)) in row.iter().zip(exp).enumerate() {
                if a != b {
                    let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
                    let near = |t: &str| {
                        t.get(at.saturating_sub(60)..(at + 60).min(t.len())).unwrap_or(t).to_owned()
                    };
                    panic!(
                        "{what}: {table} row {i} column {j} differs at byte {at}: {:?} vs {:?}",
                        near(a),
                        near(b)
                    );
                }
            }
            assert_eq!(row.len(), exp.len(), "{what}: {table} row {i}");
        }
    }
    assert_eq!(got.len(), want.len());
}

/// The legacy fixture, migrated, with more written by the stores on top.
fn populated() -> (tempfile::TempDir, Database) {
    let (dir, path) = legacy_copy();
    let db = open(&path);
    let store = SqliteStateStore::new(db.clone());
    let audit = AuditLog::new(db.clone());
    for task in 0..5 {
        let mut m = StateMachine::new(StateContext::new(
            "p".into(),
            format!("t{task}").as_str().into(),
            "go",
        ));
        m.apply(Event::Start, None).unwrap();
        m.create_checkpoint(vec![]);
        store.save_state(m.persisted()).unwrap();
        let mut entry = AuditEntry::new("saved", Category::State);
        entry.task_id = Some(format!("t{task}").as_str().into());
        entry.details = Some(serde_json::json!({"note": "line\nbreak, \"quotes\" and ünïcode"}));
        audit.log(&entry).unwrap();
    }
    // Workflow definitions, and tasks bound to them.
    let workflows = aigentflow::workflows::Workflows::new(db.clone());
    workflows
        .load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"))
        .unwrap();
    for task in 5..7 {
        let context = StateContext::new("p".into(), format!("t{task}").as_str().into(), "go");
        workflows.start("aigentflow-default", None, context).unwrap();
    }
    (dir, db)
}

/// A fresh empty database of each backend there is.
fn empties() -> Vec<TestDb> {
    let mut all = vec![TestDb::sqlite()];
    all.extend(TestDb::postgres());
    all
}

#[test]
fn db_copy_moves_every_row_between_backends_and_the_chain_verifies_on_each() {
    let (_dir, source) = populated();
    let original = dump(&source);
    assert!(original.iter().map(|(_, rows)| rows.len()).sum::<usize>() > 900);
    for first in empties() {
        let report = source.copy_into(first.db(), |_, _, _| {}).unwrap();
        assert_same(&dump(first.db()), &original, &format!("into {:?}", first.backend()));
        assert_eq!(report.rows as usize, original.iter().map(|(_, r)| r.len()).sum::<usize>());
        assert_eq!(AuditLog::new(first.db().clone()).verify(None).unwrap().finding, None);
        // And back out again, into each backend.
        for second in empties() {
            first.db().copy_into(second.db(), |_, _, _| {}).unwrap();
            let what = format!("{:?} -> {:?}", first.backend(), second.backend());
            assert_same(&dump(second.db()), &original, &what);
        }
        // The destination goes on: the chain continues from the copied head, new ids follow
        // the copied ones.
        let audit = AuditLog::new(first.db().clone());
        let before = audit.head().unwrap().unwrap();
        let id = audit.log(&AuditEntry::new("after the copy", Category::User)).unwrap();
        assert_eq!(id, before.last_id + 1);
        assert_eq!(audit.verify(None).unwrap().finding, None);
        let store = SqliteStateStore::new(first.db().clone());
        let mut m = StateMachine::from_persisted(store.load_state(&"t0".into()).unwrap().unwrap());
        m.apply(Event::AnalysisComplete, None).unwrap();
        store.save_state(m.persisted()).unwrap();
        assert_eq!(store.load_state(&"t0".into()).unwrap().unwrap().history.len(), 2);
    }
}

#[test]
fn db_copy_refuses_a_destination_with_rows_and_leaves_it_as_it_was() {
    let (_dir, source) = populated();
    for dest in empties() {
        let mut entry = AuditEntry::new("already here", Category::User);
        entry.agent = Some("someone".into());
        AuditLog::new(dest.db().clone()).log(&entry).unwrap();
        let before = dump(dest.db());
        let err = source.copy_into(dest.db(), |_, _, _| {}).unwrap_err();
        assert!(matches!(err, PError::NotEmpty { table: "audit_logs", rows: 1, .. }), "{err}");
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(dump(dest.db()), before);
    }
}

#[test]
fn a_copy_that_fails_part_way_leaves_the_destination_empty_on_sqlite_sources() {
    // A cell written around the stores that no store can hold (bytes that are not text), in the
    // last table copied: everything before it was written, and must all be rolled back.
    let (_dir, path) = legacy_copy();
    let source = open(&path);
    raw(&path)
        .execute(
            "INSERT INTO configurations (key, value, scope, updated_at) VALUES ('k', X'FF00', 'global', '2026-01-01 00:00:00.000')",
            [],
        )
        .unwrap();
    for dest in empties() {
        let before = dump(dest.db());
        let err = source.copy_into(dest.db(), |_, _, _| {}).unwrap_err();
        assert!(
            matches!(&err, PError::Uncopyable { table: "configurations", column, row: 1 }
                if column.as_str() == "value"),
            "{err}"
        );
        assert_eq!(dump(dest.db()), before, "nothing of the copy is left");
    }
}

#[test]
fn a_copy_refuses_a_column_one_side_lacks_naming_it_and_copies_nothing() {
    // The columns come from each database's schema: a column only the source has would be
    // data left behind, one only the destination has a value the source cannot give. Each
    // table, either side, each backend as the destination.
    let (_dir, path) = legacy_copy();
    let source = open(&path);
    for table in [
        "workflow_states",
        "state_transitions",
        "checkpoints",
        "audit_logs",
        "lessons",
        "execution_traces",
        "agent_invocations",
        "configurations",
    ] {
        for dest in empties() {
            let before = dump(dest.db());
            // Only on the source.
            let extra = format!("only_in_source_{table}");
            raw(&path)
                .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {extra} TEXT"))
                .unwrap();
            let err = source.copy_into(dest.db(), |_, _, _| {}).unwrap_err();
            match &err {
                PError::SchemaMismatch { table: t, column, location } => {
                    assert_eq!((*t, column.as_str()), (table, extra.as_str()), "{err}");
                    assert_eq!(location, dest.db().location(), "{err}");
                }
                _ => panic!("{table} into {:?}: {err}", dest.backend()),
            }
            assert!(err.to_string().contains(&extra), "{err}");
            assert_eq!(dump(dest.db()), before, "{table}: nothing copied");
            raw(&path).execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {extra}")).unwrap();
            // Only on the destination.
            let extra = format!("only_in_dest_{table}");
            Driver::of(&dest).batch(&format!("ALTER TABLE {table} ADD COLUMN {extra} TEXT"));
            let err = source.copy_into(dest.db(), |_, _, _| {}).unwrap_err();
            match &err {
                PError::SchemaMismatch { table: t, column, location } => {
                    assert_eq!((*t, column.as_str()), (table, extra.as_str()), "{err}");
                    assert_eq!(location, &path, "{err}");
                }
                _ => panic!("{table} into {:?}: {err}", dest.backend()),
            }
            Driver::of(&dest).batch(&format!("ALTER TABLE {table} DROP COLUMN {extra}"));
            assert_eq!(dump(dest.db()), before, "{table}: nothing copied");
        }
    }
    // Generated columns are each side's own and never count: the copy goes through.
    for dest in empties() {
        source.copy_into(dest.db(), |_, _, _| {}).unwrap();
    }
}

/// Copies of two sources started at once into one empty destination: one copies, the other
/// finds the destination holding the first's rows and is refused, whichever backend the
/// destination is. Never both (they would merge two databases into one), tried five times.
#[test]
fn two_copies_into_one_empty_destination_at_once_never_both_land() {
    let sources: Vec<TestDb> = (0..2)
        .map(|i| {
            let t = TestDb::sqlite();
            t.db()
                .write(|tx| {
                    tx.execute(
                        "INSERT INTO configurations (key, value, scope) VALUES (?1, '1', 'global')",
                        &[aigentflow::persistence::Param::text(&format!("only-in-source-{i}"))],
                    )
                })
                .unwrap();
            t
        })
        .collect();
    for round in 0..5 {
        for dest in empties() {
            let start = std::sync::Barrier::new(2);
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = sources
                    .iter()
                    .map(|source| {
                        let (dest, start) = (&dest, &start);
                        s.spawn(move || {
                            start.wait();
                            source.db().copy_into(dest.db(), |_, _, _| {})
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let landed = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(landed, 1, "{:?} round {round}: {results:?}", dest.backend());
            for r in results.iter().filter_map(|r| r.as_ref().err()) {
                assert!(matches!(r, PError::NotEmpty { .. }), "{r}");
            }
            let keys = dest.db().read(|tx| {
                tx.prepare("SELECT key FROM configurations WHERE key LIKE 'only-in-source-%'")?
                    .query_map(&[], |r| r.get::<String>(0))
            });
            assert_eq!(keys.unwrap().len(), 1, "{:?} round {round}", dest.backend());
        }
    }
}

/// Text written around the stores (by hand, or by an older version) goes through the redaction
/// policy on its way into the copy, as into any store: corpus secrets planted in configuration
/// values, trace prompts and lesson summaries of the source are in no byte of the destination,
/// whichever backend, while the source keeps them. A row a hash seals cannot be redacted: an
/// audit row holding one stops the copy, naming it, and the destination stays empty.
#[test]
fn a_copy_redacts_what_was_written_around_the_stores_and_refuses_a_sealed_secret() {
    use aigentflow::persistence::redact::corpus;
    let (_dir, path) = legacy_copy();
    let source = TestDb::sqlite_copy_of(&path);
    let samples: Vec<corpus::Sample> =
        corpus::samples(0xc0b1).unwrap().into_iter().step_by(37).take(24).collect();
    let mut raw = Driver::of(&source);
    for (i, sample) in samples.iter().enumerate() {
        let text = Raw::text(sample.text.as_str());
        let at = Raw::Int(i as i64);
        raw.execute(
            "INSERT INTO configurations (key, value, scope) VALUES ('planted-' || ?1, ?2, 'global')",
            &[at.clone(), text.clone()],
        );
        for (table, column) in [("execution_traces", "prompt"), ("lessons", "summary")] {
            let sql = format!(
                "UPDATE {table} SET {column} = ?1 WHERE id = (SELECT id FROM {table} ORDER BY id LIMIT 1 OFFSET (?2 % (SELECT COUNT(*) FROM {table})))"
            );
            raw.execute(&sql, &[text.clone(), at.clone()]);
        }
    }
    // JSON columns: a task's context holding the samples as values and a key named only by
    // its parent, which the text policy over JSON text would miss or break.
    let parent_named = "9f86d081884c7d659a2feaa0c55ad015";
    let tasks = raw.query("SELECT task_id FROM workflow_states ORDER BY task_id", &[]);
    assert!(!tasks.is_empty());
    for (i, task) in tasks.iter().enumerate() {
        let task = task[0].clone().unwrap();
        let context = raw.query(
            "SELECT context FROM workflow_states WHERE task_id = ?1",
            &[Raw::text(task.as_str())],
        );
        let mut context: serde_json::Value =
            serde_json::from_str(context[0][0].as_deref().unwrap()).unwrap();
        let sample = &samples[i % samples.len()];
        context["planted"] =
            serde_json::json!({ "note": sample.text, "openai": { "key": parent_named } });
        raw.execute(
            "UPDATE workflow_states SET context = ?1 WHERE task_id = ?2",
            &[Raw::text(context.to_string()), Raw::text(task.as_str())],
        );
    }
    assert!(!corpus::leaks(&samples, &stored_bytes(&source)).is_empty(), "planted");
    for dest in empties() {
        source.db().copy_into(dest.db(), |_, _, _| {}).unwrap();
        let stored = stored_bytes(&dest);
        if let Some((s, needle)) = corpus::leaks(&samples, &stored).first() {
            panic!("{:?} holds {needle:?} of {} ({:?})", dest.backend(), s.name, s.context);
        }
        assert!(!String::from_utf8_lossy(&stored).contains(parent_named), "{:?}", dest.backend());
        assert_eq!(AuditLog::new(dest.db().clone()).verify(None).unwrap().finding, None);
        // Every task still loads: its JSON was redacted as JSON, never broken.
        let store = SqliteStateStore::new(dest.db().clone());
        for task in &tasks {
            let id = task[0].clone().unwrap();
            store.load_state(&id.as_str().into()).unwrap().unwrap();
        }
    }
    // An audit row written around the log with a secret in it (here one only the JSON policy
    // sees): nothing is copied.
    raw.execute(
        "INSERT INTO audit_logs (id, action, category, details) VALUES ((SELECT MAX(id) + 1 FROM audit_logs), 'noted', 'user', ?1)",
        &[Raw::text(serde_json::json!({ "openai": { "key": parent_named } }).to_string())],
    );
    for dest in empties() {
        let before = dump(dest.db());
        let err = source.db().copy_into(dest.db(), |_, _, _| {}).unwrap_err();
        assert!(matches!(err, PError::SealedSecret { table: "audit_logs", .. }), "{err}");
        assert_eq!(dump(dest.db()), before, "{:?}", dest.backend());
    }
}

/// A copy's source check runs in the snapshot the copy reads: an entry appended to the source
/// after the check (another process, while the copy runs) is not in the copy, which holds
/// exactly what the check saw, on either backend as source and as destination.
#[test]
fn the_source_check_and_the_copy_read_one_snapshot() {
    for source in empties() {
        let log = AuditLog::new(source.db().clone());
        for i in 0..5 {
            log.log(&AuditEntry::new(format!("before {i}"), Category::User)).unwrap();
        }
        for dest in empties() {
            let seen = std::cell::Cell::new(0i64);
            let other = Database::open(source.location()).unwrap();
            let check = |tx: &aigentflow::persistence::Tx<'_>| {
                let rows =
                    tx.query_row("SELECT COUNT(*) FROM audit_logs", &[], |r| r.get::<i64>(0))?;
                seen.set(rows.unwrap_or(0));
                // Another writer appends while the copy is under way.
                AuditLog::new(other.clone())
                    .log(&AuditEntry::new("after the check", Category::User))
                    .unwrap();
                Ok(())
            };
            source.db().copy_into_checked(dest.db(), &check, |_, _, _| {}).unwrap();
            let copied = AuditLog::new(dest.db().clone()).verify(None).unwrap();
            assert_eq!(copied.finding, None);
            assert_eq!(
                copied.rows as i64,
                seen.get(),
                "{:?} -> {:?}",
                source.backend(),
                dest.backend()
            );
        }
    }
}
