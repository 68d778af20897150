//! What the stores wrote, read and tampered with around them, through the backend's own driver
//! (rusqlite on the SQLite file, the `postgres` crate on the server), as someone with access to
//! the database would: nothing here goes through `Database`, `Param` or the redaction policy.
//!
//! SQL is written once with SQLite's `?N` parameters; on PostgreSQL they become `$N`.

use std::collections::{BTreeMap, BTreeSet};

use aigentflow_persistence::Backend;

use crate::fixture::Fresh;
use crate::pg::{pg_error, without_password};

/// A value bound to a statement run around the stores.
#[derive(Debug, Clone)]
pub enum Raw {
    Int(i64),
    Text(String),
}

impl Raw {
    pub fn text(s: impl Into<String>) -> Self {
        Self::Text(s.into())
    }
}

/// A connection to `location` through its backend's driver.
#[allow(missing_debug_implementations)] // the `postgres` client has no `Debug`
pub enum Driver {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Driver {
    /// Connects to the database of `t`.
    pub fn of(t: &impl Fresh) -> Self {
        Self::connect(t.backend(), t.location())
    }

    /// Connects to the database at `location` (a path or a URL).
    pub fn connect(backend: Backend, location: &str) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(rusqlite::Connection::open(location).unwrap()),
            Backend::Postgres => {
                Self::Postgres(postgres::Client::connect(location, postgres::NoTls).unwrap_or_else(
                    |e| panic!("connect to {}: {}", without_password(location), pg_error(&e)),
                ))
            }
        }
    }

    /// Runs `sql`; how many rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Raw]) -> u64 {
        match self {
            Self::Sqlite(c) => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(sqlite_value).collect();
                c.execute(sql, rusqlite::params_from_iter(values))
                    .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
            }
            Self::Postgres(c) => {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref() as _).collect();
                c.execute(&dollar(sql), &refs).unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)))
            }
        }
    }

    /// Runs several statements without parameters.
    pub fn batch(&mut self, sql: &str) {
        match self {
            Self::Sqlite(c) => c.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}")),
            Self::Postgres(c) => {
                c.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)))
            }
        }
    }

    /// The rows of `sql`, every cell as text (NULL as None; numbers as Rust prints them).
    pub fn query(&mut self, sql: &str, params: &[Raw]) -> Vec<Vec<Option<String>>> {
        match self {
            Self::Sqlite(c) => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(sqlite_value).collect();
                let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let width = stmt.column_count();
                stmt.query_map(rusqlite::params_from_iter(values), |r| {
                    (0..width)
                        .map(|i| r.get::<_, rusqlite::types::Value>(i).map(sqlite_text))
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Self::Postgres(c) => {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref() as _).collect();
                let rows = c
                    .query(&dollar(sql), &refs)
                    .unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)));
                rows.iter().map(|r| (0..r.len()).map(|i| pg_text(r, i)).collect()).collect()
            }
        }
    }

    /// The first cell of the first row of `sql`, as a number.
    pub fn count(&mut self, sql: &str, params: &[Raw]) -> i64 {
        let rows = self.query(sql, params);
        let cell = rows.first().and_then(|r| r.first()).cloned().flatten();
        cell.unwrap_or_else(|| panic!("{sql}: no value")).parse().unwrap()
    }

    /// The tables of the database (the schema's, not the driver's own catalogue).
    pub fn tables(&mut self) -> BTreeSet<String> {
        let sql = match self {
            Self::Sqlite(_) => "SELECT name FROM sqlite_master WHERE type = 'table'",
            Self::Postgres(_) => {
                "SELECT table_name FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            }
        };
        self.query(sql, &[]).into_iter().filter_map(|r| r.into_iter().next().flatten()).collect()
    }

    /// Every row of every table, each table's rows in order, and on PostgreSQL where each
    /// sequence of the schema stands (a write rolled back still moves one): what any change
    /// would show, to compare before and after. A row is its cells as text on SQLite, the row
    /// as the server writes it as text on PostgreSQL.
    pub fn dump(&mut self) -> BTreeMap<String, Vec<Vec<Option<String>>>> {
        let mut out = BTreeMap::new();
        for table in self.tables() {
            let sql = match self {
                Self::Sqlite(_) => format!("SELECT * FROM \"{table}\""),
                Self::Postgres(_) => format!("SELECT r::text FROM \"{table}\" r"),
            };
            let mut rows = self.query(&sql, &[]);
            rows.sort();
            out.insert(table, rows);
        }
        if let Self::Postgres(_) = self {
            let sql = "SELECT sequencename::text, last_value FROM pg_sequences
                       WHERE schemaname = current_schema() ORDER BY 1";
            out.insert("(sequences)".to_owned(), self.query(sql, &[]));
        }
        out
    }

    /// Every cell of every table of the database, as text: what anyone reading it can see.
    pub fn every_cell(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for table in self.tables() {
            let columns: Vec<String> = match self {
                Self::Sqlite(c) => {
                    let stmt = c.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
                    stmt.column_names().map(str::to_owned).collect()
                }
                Self::Postgres(c) => c
                    .query(
                        "SELECT column_name::text FROM information_schema.columns
                         WHERE table_schema = current_schema() AND table_name = $1",
                        &[&table],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            };
            for column in columns {
                let cast = match self {
                    Self::Sqlite(_) => format!("CAST(\"{column}\" AS TEXT)"),
                    Self::Postgres(_) => format!("\"{column}\"::text"),
                };
                for row in self.query(&format!("SELECT {cast} FROM \"{table}\""), &[]) {
                    for cell in row.into_iter().flatten() {
                        out.extend_from_slice(cell.as_bytes());
                        out.push(b'\n');
                    }
                }
            }
        }
        out
    }
}

/// Everything of the database someone with access to it can read: on SQLite the bytes of the
/// file and its WAL (free pages and old versions of rows included), on PostgreSQL every cell of
/// every table as text.
pub fn stored_bytes(t: &impl Fresh) -> Vec<u8> {
    match t.backend() {
        Backend::Sqlite => crate::file_bytes(std::path::Path::new(t.location())),
        Backend::Postgres => Driver::of(t).every_cell(),
    }
}

fn sqlite_value(p: &Raw) -> rusqlite::types::Value {
    match p {
        Raw::Int(i) => rusqlite::types::Value::Integer(*i),
        Raw::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

fn sqlite_text(v: rusqlite::types::Value) -> Option<String> {
    use rusqlite::types::Value;
    match v {
        Value::Null => None,
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(f) => Some(f.to_string()),
        Value::Text(s) => Some(s),
        Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn pg_params(params: &[Raw]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match p {
                Raw::Int(i) => Box::new(*i),
                Raw::Text(s) => Box::new(s.clone()),
            }
        })
        .collect()
}

fn pg_text(row: &postgres::Row, i: usize) -> Option<String> {
    use postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    match ty {
        Type::INT8 => row.get::<_, Option<i64>>(i).map(|v| v.to_string()),
        Type::INT4 => row.get::<_, Option<i32>>(i).map(|v| v.to_string()),
        Type::INT2 => row.get::<_, Option<i16>>(i).map(|v| v.to_string()),
        Type::FLOAT8 => row.get::<_, Option<f64>>(i).map(|v| v.to_string()),
        Type::BOOL => row.get::<_, Option<bool>>(i).map(|v| i64::from(v).to_string()),
        _ => row.get::<_, Option<String>>(i),
    }
}

/// `sql` with `?N` written as `$N` (the SQL of these tests has no `?` elsewhere).
fn dollar(sql: &str) -> String {
    sql.replace('?', "$")
}
