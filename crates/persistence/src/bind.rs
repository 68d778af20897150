//! The one place where values enter a statement: [`Param`], and the statement methods of [`Tx`].
//!
//! Decision 9 says every text that enters a store goes through the redaction policy. Rather than
//! trusting each store to remember each field, the stores bind values only as [`Param`]s, and a
//! `Param` holding text can only be made by the policy: [`Param::text`] and [`Param::json`]
//! redact, [`Param::clean`] takes text the policy already produced ([`Clean`]; the audit log
//! hashes that text before binding it). Numbers, timestamps and NULL carry no text of a caller.
//! Filters are bound the same way, so a query for a value finds the row it was stored in, even
//! when redaction changed that value.
//!
//! The stores reach SQL only through [`Tx::prepare`], [`Tx::execute`], [`Tx::query_row`] and
//! [`Tx::execute_batch`] (no parameters). [`Tx::conn`] is the driver's connection, an escape
//! hatch that bypasses the policy: the workspace's clippy configuration forbids it outside this
//! crate's own internals and the tests that play an attacker with file access.

use std::borrow::Cow;

use aigentflow_core_states::time;
use chrono::{DateTime, Utc};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, MappedRows, OptionalExtension, Row, Rows, ToSql};
use serde_json::Value;

use crate::db::Tx;
use crate::error::Result;
use crate::redact::{redact_json, redact_text};

/// Text the redaction policy produced, ready to be hashed and bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clean<'a>(Cow<'a, str>);

impl<'a> Clean<'a> {
    /// `text` after the redaction policy.
    pub fn text(text: &'a str) -> Self {
        Self(redact_text(text))
    }

    /// `value` after the redaction policy (keys and values), as compact JSON text.
    pub fn json(value: &Value) -> Result<Clean<'static>> {
        Self::json_owned(value.clone())
    }

    /// [`Clean::json`] of a value the caller no longer needs (no copy is made).
    pub fn json_owned(mut value: Value) -> Result<Clean<'static>> {
        redact_json(&mut value);
        Ok(Clean(Cow::Owned(serde_json::to_string(&value)?)))
    }

    /// The clean text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The clean text, owned.
    pub fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

impl std::ops::Deref for Clean<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A value bound to a statement. Text only ever arrives here through the redaction policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Param<'a>(Bound<'a>);

#[derive(Debug, Clone, PartialEq)]
enum Bound<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(Cow<'a, str>),
}

impl<'a> Param<'a> {
    /// SQL NULL.
    pub const NULL: Param<'static> = Param(Bound::Null);

    /// Text, redacted.
    pub fn text(text: &'a str) -> Self {
        Self(Bound::Text(redact_text(text)))
    }

    /// Owned text, redacted.
    pub fn text_owned(text: String) -> Param<'static> {
        Param(Bound::Text(match redact_text(&text) {
            Cow::Borrowed(_) => Cow::Owned(text),
            Cow::Owned(clean) => Cow::Owned(clean),
        }))
    }

    /// Optional text, redacted; None is NULL.
    pub fn opt_text(text: Option<&'a str>) -> Self {
        text.map_or(Param::NULL, Self::text)
    }

    /// Text the policy already produced (see [`Clean`]), bound as it is.
    pub fn clean(text: &'a Clean<'_>) -> Self {
        Self(Bound::Text(Cow::Borrowed(text.as_str())))
    }

    /// Optional clean text; None is NULL.
    pub fn opt_clean(text: Option<&'a Clean<'_>>) -> Self {
        text.map_or(Param::NULL, Self::clean)
    }

    /// A JSON value, redacted (keys and values), as compact text.
    pub fn json(value: &Value) -> Result<Param<'static>> {
        Ok(Param(Bound::Text(Cow::Owned(Clean::json(value)?.into_owned()))))
    }

    /// A hex digest this layer computed (an audit row hash): lower-case hex cannot hold a secret
    /// shape, so it is bound as it is, without the policy's scan. Anything else given here goes
    /// through the policy like any text.
    pub fn digest(hex: &'a str) -> Self {
        if hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Self(Bound::Text(Cow::Borrowed(hex)))
        } else {
            Self::text(hex)
        }
    }

    /// An integer.
    pub fn int(value: i64) -> Self {
        Self(Bound::Integer(value))
    }

    /// A real number.
    pub fn real(value: f64) -> Self {
        Self(Bound::Real(value))
    }

    /// A boolean, stored as 0 or 1.
    pub fn bool(value: bool) -> Self {
        Self(Bound::Integer(i64::from(value)))
    }

    /// An instant in the stored form (`YYYY-MM-DD HH:MM:SS.SSS` UTC).
    pub fn time(value: DateTime<Utc>) -> Param<'static> {
        Param(Bound::Text(Cow::Owned(time::to_db(value))))
    }

    /// An optional instant; None is NULL.
    pub fn opt_time(value: Option<DateTime<Utc>>) -> Param<'static> {
        value.map_or(Param::NULL, Param::time)
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match &self.0 {
            Bound::Null => ValueRef::Null,
            Bound::Integer(i) => ValueRef::Integer(*i),
            Bound::Real(r) => ValueRef::Real(*r),
            Bound::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

/// A prepared (and cached) statement of a transaction; it binds only [`Param`]s.
pub struct Stmt<'c>(CachedStatement<'c>);

impl std::fmt::Debug for Stmt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stmt").field(&self.0.expanded_sql()).finish()
    }
}

impl Stmt<'_> {
    /// Runs the statement; returns how many rows it changed.
    pub fn execute(&mut self, params: &[Param<'_>]) -> Result<usize> {
        Ok(self.0.execute(rusqlite::params_from_iter(params))?)
    }

    /// The first row mapped by `f`, or None when there is none.
    pub fn query_row<T>(
        &mut self,
        params: &[Param<'_>],
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.0.query_row(rusqlite::params_from_iter(params), f).optional()?)
    }

    /// The rows, to step through one by one (constant memory).
    pub fn query<'s>(&'s mut self, params: &[Param<'_>]) -> Result<Rows<'s>> {
        Ok(self.0.query(rusqlite::params_from_iter(params))?)
    }

    /// Every row mapped by `f`.
    pub fn query_map<'s, T, F>(
        &'s mut self,
        params: &[Param<'_>],
        f: F,
    ) -> Result<MappedRows<'s, F>>
    where
        F: FnMut(&Row<'_>) -> rusqlite::Result<T>,
    {
        Ok(self.0.query_map(rusqlite::params_from_iter(params), f)?)
    }
}

impl<'a> Tx<'a> {
    /// Prepares `sql` (cached per connection).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'a>> {
        Ok(Stmt(self.connection().prepare_cached(sql)?))
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize> {
        self.prepare(sql)?.execute(params)
    }

    /// The first row of `sql` mapped by `f`, or None when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.prepare(sql)?.query_row(params, f)
    }

    /// Runs statements that take no parameters and are fixed in the program (so no caller text).
    pub fn execute_batch(&self, sql: &'static str) -> Result<()> {
        Ok(self.connection().execute_batch(sql)?)
    }

    /// The rowid of the last row this connection inserted.
    pub fn last_insert_rowid(&self) -> i64 {
        self.connection().last_insert_rowid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Database, Error};
    use serde_json::json;

    #[test]
    fn text_and_json_are_redacted_on_the_way_in_and_filters_find_what_was_stored() {
        let db = Database::open_in_memory().unwrap();
        let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
        let stored: String = db
            .write(|tx| {
                tx.execute_batch("CREATE TEMP TABLE t (a TEXT, b TEXT)")?;
                let details = json!({ key.clone(): {"password": "hunter2"} });
                tx.execute(
                    "INSERT INTO t (a, b) VALUES (?1, ?2)",
                    &[Param::text(&format!("id-{key}")), Param::json(&details)?],
                )?;
                // The same text as a filter finds the row it was stored in.
                let found = tx.query_row(
                    "SELECT a || ' ' || b FROM t WHERE a = ?1",
                    &[Param::text(&format!("id-{key}"))],
                    |r| r.get::<_, String>(0),
                )?;
                Ok::<_, Error>(found.unwrap_or_default())
            })
            .unwrap();
        assert!(!stored.contains(&key) && !stored.contains("hunter2"), "{stored}");
        assert!(stored.starts_with("id-"), "{stored}");
    }

    #[test]
    fn a_digest_binds_as_it_is_and_anything_else_goes_through_the_policy() {
        let hex = "0a1b2c3d".repeat(8);
        assert_eq!(Param::digest(&hex), Param(Bound::Text(Cow::Borrowed(hex.as_str()))));
        let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
        assert_eq!(Param::digest(&key), Param::text(&key));
        assert_ne!(Param::digest(&key), Param(Bound::Text(Cow::Borrowed(key.as_str()))));
    }
}
