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
//! [`Tx::execute_batch`] (no parameters). [`Tx::sqlite`] is the driver's connection, an escape
//! hatch that bypasses the policy: the workspace's clippy configuration forbids it outside the
//! tests that play an attacker with file access.

use std::borrow::Cow;

use aigentflow_core_states::time;
use chrono::{DateTime, Utc};
use postgres::types::Type as PgType;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::ToSql;
use serde_json::Value;

use crate::db::{Backend, Conn, Tx};
use crate::error::{Error, Result, SqliteResult};
use crate::redact::{redact_json, redact_text};

/// Why PostgreSQL cannot take a text ([`Param::refusal`]): its text type cannot hold U+0000.
const NUL_ON_PG: &str = "text holding a NUL character (U+0000) cannot be stored on PostgreSQL";

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
        check_json_depth(value)?;
        Ok(Self::json_checked(value.clone()))
    }

    /// [`Clean::json`] of a value the caller no longer needs (no copy is made). A value nested
    /// deeper than [`MAX_JSON_DEPTH`] is refused: no reader of the stores could take it back.
    pub fn json_owned(value: Value) -> Result<Clean<'static>> {
        check_json_depth(&value)?;
        Ok(Self::json_checked(value))
    }

    /// [`Clean::json_owned`] of a value whose depth is checked. Writing a `Value` as text
    /// cannot fail (its keys are strings).
    fn json_checked(mut value: Value) -> Clean<'static> {
        redact_json(&mut value);
        Clean(Cow::Owned(value.to_string()))
    }

    /// JSON text (a stored JSON column's) after the policy's JSON form, as [`Clean::json`]
    /// treats a value: keys and values redacted, nesting past [`MAX_JSON_DEPTH`] refused. Text
    /// with nothing to redact keeps its bytes (as another version wrote them); text with
    /// something redacted is written back compact. Text that is not JSON goes through the text
    /// policy. Never the text policy over JSON text: a replacement can end a string of the
    /// JSON early and leave text no reader takes.
    pub fn json_text(text: &'a str) -> Result<Clean<'a>> {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Ok(Self::text(text));
        };
        check_json_depth(&value)?;
        let mut redacted = value.clone();
        redact_json(&mut redacted);
        if redacted == value {
            return Ok(Clean(Cow::Borrowed(text)));
        }
        Ok(Clean(Cow::Owned(redacted.to_string())))
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

/// The deepest nesting of arrays and objects a JSON value that enters a store may have. A reader
/// with serde_json's default limit takes 127 levels; an export puts a value inside up to two
/// more (a row object in a JSON array), and this leaves room for a reader's own wrapping too.
pub const MAX_JSON_DEPTH: usize = 100;

/// Refuses a value nested deeper than [`MAX_JSON_DEPTH`] ([`Error::InvalidInput`] saying how
/// deep): the one check every JSON value that enters a store passes.
pub fn check_json_depth(value: &Value) -> Result<()> {
    let depth = json_depth(value);
    if depth > MAX_JSON_DEPTH {
        return Err(Error::InvalidInput {
            what: "JSON value",
            reason: format!(
                "nested {depth} levels deep; a store reads back at most {MAX_JSON_DEPTH}"
            )
            .into(),
        });
    }
    Ok(())
}

/// How deeply `value` nests arrays and objects (a scalar is 0, `[]` is 1), without recursion.
fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => continue,
        }
        deepest = deepest.max(depth + 1);
    }
    deepest
}

/// A value bound to a statement. Text only ever arrives here through the redaction policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Param<'a>(Bound<'a>);

/// What a [`Param`] holds. The drivers' binding traits are implemented for this private type,
/// not for `Param`, so no driver's trait shows in the crate's API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bound<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
    /// A value neither backend can store as given: binding it is an error saying why, the
    /// same on both (SQLite would store NaN as NULL; a time outside years 0000 to 9999 would be
    /// text that no reader takes back).
    Refused(&'static str),
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

    /// Clean text bound as it is, taking it over (an owned one binds as `Param<'static>`).
    pub fn from_clean(text: Clean<'a>) -> Self {
        Self(Bound::Text(text.0))
    }

    /// Optional clean text; None is NULL.
    pub fn opt_clean(text: Option<&'a Clean<'_>>) -> Self {
        text.map_or(Param::NULL, Self::clean)
    }

    /// A JSON value, redacted (keys and values), as compact text.
    pub fn json(value: &Value) -> Result<Param<'static>> {
        Ok(Param(Bound::Text(Cow::Owned(Clean::json(value)?.into_owned()))))
    }

    /// A hex digest this layer computed (an audit row hash), borrowed or owned: lower-case hex
    /// cannot hold a secret shape, so it is bound as it is, without the policy's scan. Anything
    /// else given here goes through the policy like any text.
    pub fn digest(hex: impl Into<Cow<'a, str>>) -> Self {
        let hex = hex.into();
        if hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Self(Bound::Text(hex));
        }
        match hex {
            Cow::Borrowed(text) => Self::text(text),
            Cow::Owned(text) => Self(Bound::Text(Cow::Owned(redact_text(&text).into_owned()))),
        }
    }

    /// Text read from a store of this layer, to be written to another as it is (`db copy`):
    /// the policy applied when it entered the first store (a legacy row is copied as the older
    /// version wrote it), and a copy must keep every row equal, audit hashes included.
    pub(crate) fn verbatim(text: String) -> Param<'static> {
        Param(Bound::Text(Cow::Owned(text)))
    }

    /// Text bound as it is, without the redaction policy: the one opt-out, for a value the
    /// caller knows holds no secret and must keep byte for byte (a digest, an id of its own
    /// making). `field` names what is exempted (`"model_usage.request_id"`), so every opt-out
    /// can be found by reading the program, and is logged at debug level when bound.
    pub fn unredacted(field: &'static str, text: &'a str) -> Self {
        tracing::debug!(field, "text bound without redaction");
        Self(Bound::Text(Cow::Borrowed(text)))
    }

    /// Bytes, bound as they are (SQLite BLOB, PostgreSQL BYTEA). The redaction policy reads
    /// text, so put text in [`Param::text`], not here.
    pub fn blob(bytes: &'a [u8]) -> Self {
        Self(Bound::Blob(Cow::Borrowed(bytes)))
    }

    /// An integer.
    pub fn int(value: i64) -> Self {
        Self(Bound::Integer(value))
    }

    /// A real number. NaN is refused when bound (SQLite would store it as NULL, PostgreSQL
    /// as NaN: the backends would disagree); infinities are stored on both.
    pub fn real(value: f64) -> Self {
        if value.is_nan() {
            return Self(Bound::Refused("NaN (not a number) cannot be stored; store NULL instead"));
        }
        Self(Bound::Real(value))
    }

    /// A boolean, stored as 0 or 1.
    pub fn bool(value: bool) -> Self {
        Self(Bound::Integer(i64::from(value)))
    }

    /// An instant in the stored form (`YYYY-MM-DD HH:MM:SS.SSS` UTC). One outside years 0000
    /// to 9999, or in a leap second, has no stored form that reads back and sorts: it is
    /// refused when bound.
    pub fn time(value: DateTime<Utc>) -> Param<'static> {
        use chrono::{Datelike, Timelike};
        if !(0..=9999).contains(&value.year()) || value.nanosecond() >= 1_000_000_000 {
            return Param(Bound::Refused(
                "a time outside years 0000 to 9999, or in a leap second, cannot be stored",
            ));
        }
        Param(Bound::Text(Cow::Owned(time::to_db(value))))
    }

    /// An instant a stored time is compared with (`started_at < ?`), which unlike a stored one
    /// may lie outside years 0000 to 9999: there it is a text that every stored time sorts
    /// after (before year 0000) or before (after year 9999), so that the comparison holds for
    /// every row or for none, as it does for the instant. Stored times start with a digit; a
    /// leap second (which none is) is refused as [`time`](Self::time) refuses it.
    pub fn time_bound(value: DateTime<Utc>) -> Param<'static> {
        use chrono::Datelike;
        match value.year() {
            ..0 => Param::text(""),
            10000.. => Param::text("~"),
            _ => Param::time(value),
        }
    }

    /// An optional instant; None is NULL.
    pub fn opt_time(value: Option<DateTime<Utc>>) -> Param<'static> {
        value.map_or(Param::NULL, Param::time)
    }

    /// Why binding this value on `backend` fails, if it does: a value neither backend stores
    /// (NaN, a time outside years 0000 to 9999), or text holding U+0000 on PostgreSQL. The
    /// same rule binding applies, asked before a statement runs, so that a store writing many
    /// rows at once can name the row and field of the value it would refuse.
    pub fn refusal(&self, backend: Backend) -> Option<&'static str> {
        match &self.0 {
            Bound::Refused(why) => Some(why),
            Bound::Text(t) if backend == Backend::Postgres && t.contains('\0') => Some(NUL_ON_PG),
            _ => None,
        }
    }

    /// The value, as the drivers bind it.
    pub(crate) fn bound(&self) -> &Bound<'a> {
        &self.0
    }
}

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Bound::Null => ValueRef::Null,
            Bound::Integer(i) => ValueRef::Integer(*i),
            Bound::Real(r) => ValueRef::Real(*r),
            Bound::Text(t) => ValueRef::Text(t.as_bytes()),
            Bound::Blob(b) => ValueRef::Blob(b),
            Bound::Refused(why) => {
                return Err(rusqlite::Error::ToSqlConversionFailure((*why).into()))
            }
        }))
    }
}

impl postgres::types::ToSql for Bound<'_> {
    fn to_sql(&self, ty: &PgType, out: &mut bytes::BytesMut) -> PgWritten {
        // The server infers each parameter's type from the statement; a value is written in the
        // form that type takes, or refused when it has none (text for a number column).
        match self {
            Bound::Null => Ok(postgres::types::IsNull::Yes),
            Bound::Integer(i) => match *ty {
                PgType::INT8 => pg(i, ty, out),
                PgType::INT4 => pg(&i32::try_from(*i)?, ty, out),
                PgType::INT2 => pg(&i16::try_from(*i)?, ty, out),
                PgType::BOOL => pg(&(*i != 0), ty, out),
                PgType::FLOAT8 => pg(&(*i as f64), ty, out),
                PgType::TEXT | PgType::VARCHAR => pg(&i.to_string().as_str(), ty, out),
                _ => Err(format!("an integer cannot be bound to a parameter of type {ty}").into()),
            },
            Bound::Real(r) => match *ty {
                PgType::FLOAT8 => pg(r, ty, out),
                PgType::FLOAT4 => pg(&(*r as f32), ty, out),
                _ => {
                    Err(format!("a real number cannot be bound to a parameter of type {ty}").into())
                }
            },
            // PostgreSQL's text cannot hold U+0000 (SQLite's can): say so rather than let the
            // server refuse the bytes without naming the value.
            Bound::Text(t) if t.contains('\0') => Err(NUL_ON_PG.into()),
            Bound::Text(t) => match *ty {
                PgType::TEXT
                | PgType::VARCHAR
                | PgType::BPCHAR
                | PgType::NAME
                | PgType::UNKNOWN => pg(&t.as_ref(), ty, out),
                _ => Err(format!("text cannot be bound to a parameter of type {ty}").into()),
            },
            Bound::Refused(why) => Err((*why).into()),
            Bound::Blob(b) => match *ty {
                PgType::BYTEA => pg(&b.as_ref(), ty, out),
                _ => Err(format!("bytes cannot be bound to a parameter of type {ty}").into()),
            },
        }
    }

    fn accepts(_: &PgType) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// The result of writing a value for PostgreSQL.
type PgWritten =
    std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>;

/// Writes `value` as a parameter of type `ty`.
fn pg<T: postgres::types::ToSql>(value: &T, ty: &PgType, out: &mut bytes::BytesMut) -> PgWritten {
    postgres::types::ToSql::to_sql(value, ty, out)
}

/// The first statement of a write transaction that failed, if any: a write whose closure goes
/// on after it and returns `Ok` is rolled back ([`Error::Aborted`]) on both backends, as
/// PostgreSQL must (it refuses every statement of a transaction after a failed one).
#[derive(Debug, Default)]
pub(crate) struct FirstFailure(std::cell::RefCell<Option<String>>);

impl FirstFailure {
    /// `result`, its error noted when it is the transaction's first.
    pub(crate) fn note<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.0.borrow_mut().get_or_insert_with(|| e.to_string());
        }
        result
    }

    /// The first failure's message.
    pub(crate) fn first(&self) -> Option<String> {
        self.0.borrow().clone()
    }
}

/// One cell of a result row, as either backend gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'r> {
    /// SQL NULL.
    Null,
    /// A whole number (also a boolean, as 0 or 1).
    Integer(i64),
    /// A real number.
    Real(f64),
    /// Text.
    Text(&'r str),
    /// Bytes that are not text (SQLite only: a cell written around the stores).
    Blob(&'r [u8]),
}

impl Cell<'_> {
    /// The kind of value, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Integer(_) => "integer",
            Cell::Real(_) => "real",
            Cell::Text(_) => "text",
            Cell::Blob(_) => "blob",
        }
    }
}

/// A type a cell can be read as.
pub trait FromCell: Sized {
    /// The name of the type, for messages.
    const EXPECTED: &'static str;
    /// The value of `cell`, or None when the cell holds another kind of value.
    fn from_cell(cell: Cell<'_>) -> Option<Self>;
}

impl FromCell for i64 {
    const EXPECTED: &'static str = "integer";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Integer(i) => Some(i),
            _ => None,
        }
    }
}

impl FromCell for u64 {
    const EXPECTED: &'static str = "integer from 0";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        i64::from_cell(cell).and_then(|i| u64::try_from(i).ok())
    }
}

impl FromCell for u32 {
    const EXPECTED: &'static str = "integer from 0 to 4294967295";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        i64::from_cell(cell).and_then(|i| u32::try_from(i).ok())
    }
}

impl FromCell for i32 {
    const EXPECTED: &'static str = "32-bit integer";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        i64::from_cell(cell).and_then(|i| i32::try_from(i).ok())
    }
}

impl FromCell for f64 {
    const EXPECTED: &'static str = "real";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Real(r) => Some(r),
            Cell::Integer(i) => Some(i as f64),
            _ => None,
        }
    }
}

impl FromCell for bool {
    const EXPECTED: &'static str = "boolean (0 or 1)";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Integer(i) => Some(i != 0),
            _ => None,
        }
    }
}

impl FromCell for String {
    const EXPECTED: &'static str = "text";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Text(t) => Some(t.to_owned()),
            _ => None,
        }
    }
}

impl FromCell for Vec<u8> {
    const EXPECTED: &'static str = "bytes";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Blob(b) => Some(b.to_vec()),
            _ => None,
        }
    }
}

impl FromCell for DateTime<Utc> {
    const EXPECTED: &'static str = "time in the stored form (YYYY-MM-DD HH:MM:SS.SSS)";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Text(t) => time::parse_stored(t),
            _ => None,
        }
    }
}

impl FromCell for Value {
    const EXPECTED: &'static str = "JSON text";
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Text(t) => serde_json::from_str(t).ok(),
            _ => None,
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Null => Some(None),
            cell => T::from_cell(cell).map(Some),
        }
    }
}

/// A row of a result, on either backend.
#[derive(Debug)]
pub struct Row<'r>(RowRef<'r>);

#[derive(Debug)]
enum RowRef<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl<'r> Row<'r> {
    /// Column `index` (from 0) read as `T`; a cell of another kind is [`Error::ColumnType`].
    pub fn get<T: FromCell>(&self, index: usize) -> Result<T> {
        let cell = self.cell(index)?;
        T::from_cell(cell).ok_or_else(|| Error::ColumnType {
            index,
            expected: T::EXPECTED,
            found: cell.kind(),
        })
    }

    /// Column `index` of a row of `table` (whose id is `id`) read as `T`: a cell of another
    /// kind is [`Error::CorruptRow`] naming the table, column and row, as a value that does not
    /// parse is, so that a reader that skips unreadable rows skips this one too.
    pub fn get_in<T: FromCell>(
        &self,
        index: usize,
        table: &'static str,
        column: &'static str,
        id: &str,
    ) -> Result<T> {
        self.get(index).map_err(|e| match e {
            Error::ColumnType { expected, found, .. } => Error::CorruptRow {
                table,
                column,
                id: id.into(),
                reason: format!("holds {found}, not {expected}").into(),
            },
            e => e,
        })
    }

    /// Column `index` as text borrowed from the row (nothing copied); NULL is None, another
    /// kind is [`Error::ColumnType`]. For the readers of many rows, which only parse the text.
    pub fn text_or_null(&self, index: usize) -> Result<Option<&'r str>> {
        match self.cell(index)? {
            Cell::Text(t) => Ok(Some(t)),
            Cell::Null => Ok(None),
            cell => Err(Error::ColumnType { index, expected: "text", found: cell.kind() }),
        }
    }

    /// Column `index` as text borrowed from the row; NULL or another kind is
    /// [`Error::ColumnType`].
    pub fn text(&self, index: usize) -> Result<&'r str> {
        // Built only when it is one: an error made up front costs a drop on every cell read.
        match self.text_or_null(index)? {
            Some(text) => Ok(text),
            None => Err(Error::ColumnType { index, expected: "text", found: "null" }),
        }
    }

    /// Appends column `index` to `out` as bytes, and returns false (appending nothing) for NULL:
    /// text and blobs as stored, numbers in their decimal form (the text SQLite casts them to).
    /// Text is copied without being checked for UTF-8, for the readers that only copy rows
    /// (exports); [`cell`](Self::cell) checks it.
    pub fn append_bytes(&self, index: usize, out: &mut Vec<u8>) -> Result<bool> {
        use std::io::Write as _;
        let stored = match self.0 {
            RowRef::Sqlite(r) => match r.get_ref(index).or_error()? {
                ValueRef::Text(b) | ValueRef::Blob(b) => Some(b),
                _ => None,
            },
            RowRef::Postgres(r) => crate::pg::stored_bytes(r, index)?,
        };
        if let Some(bytes) = stored {
            out.extend_from_slice(bytes);
            return Ok(true);
        }
        match self.cell(index)? {
            Cell::Null => return Ok(false),
            Cell::Text(t) => out.extend_from_slice(t.as_bytes()),
            Cell::Blob(b) => out.extend_from_slice(b),
            // Writing to a Vec cannot fail: its io::Write grows the vector.
            Cell::Integer(n) => drop(write!(out, "{n}")),
            Cell::Real(f) => drop(write!(out, "{f}")),
        }
        Ok(true)
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        match self.0 {
            RowRef::Sqlite(r) => r.as_ref().column_count(),
            RowRef::Postgres(r) => r.len(),
        }
    }

    /// Whether the row has no column.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column `index` (from 0) as the backend holds it.
    pub fn cell(&self, index: usize) -> Result<Cell<'r>> {
        match self.0 {
            RowRef::Sqlite(r) => Ok(match r.get_ref(index).or_error()? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(i) => Cell::Integer(i),
                ValueRef::Real(f) => Cell::Real(f),
                ValueRef::Text(t) => match std::str::from_utf8(t) {
                    Ok(t) => Cell::Text(t),
                    Err(_) => Cell::Blob(t),
                },
                ValueRef::Blob(b) => Cell::Blob(b),
            }),
            RowRef::Postgres(r) => crate::pg::cell(r, index),
        }
    }
}

/// The rows of a query, read one at a time (memory stays flat whatever their number).
pub struct Rows<'s>(RowsInner<'s>, &'s FirstFailure);

enum RowsInner<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres(crate::pg::Rows<'s>),
}

impl std::fmt::Debug for Rows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rows")
    }
}

impl Rows<'_> {
    /// The next row; None after the last.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        let failed = self.1;
        failed.note(match &mut self.0 {
            RowsInner::Sqlite(rows) => {
                rows.next().or_error().map(|r| r.map(|r| Row(RowRef::Sqlite(r))))
            }
            RowsInner::Postgres(rows) => rows.next().map(|r| r.map(|r| Row(RowRef::Postgres(r)))),
        })
    }

    /// Every remaining row mapped by `f`.
    pub fn map_all<T>(mut self, mut f: impl FnMut(&Row<'_>) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        while let Some(row) = self.next()? {
            out.push(f(&row)?);
        }
        Ok(out)
    }
}

/// One row of [`Tx::text_rows`]: each cell as text, NULL as None.
#[derive(Debug, Clone, Copy)]
pub struct TextRow<'a>(TextRowInner<'a>);

#[derive(Debug, Clone, Copy)]
enum TextRowInner<'a> {
    /// Cells of a binary COPY, in the binary forms of their columns' types.
    Copied { raw: &'a crate::pg::RawCells<'a>, columns: &'a [postgres::Column] },
    /// A row of a query, read in place.
    Row(&'a Row<'a>),
}

impl TextRow<'_> {
    /// How many cells the row has.
    pub fn len(&self) -> usize {
        match self.0 {
            TextRowInner::Copied { raw, .. } => raw.len(),
            TextRowInner::Row(r) => r.len(),
        }
    }

    /// Whether the row has no cell.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends cell `i`'s text to `out`, as [`Row::append_bytes`] does; `false` (nothing
    /// appended) for NULL.
    pub fn append(&self, i: usize, out: &mut Vec<u8>) -> Result<bool> {
        match self.0 {
            TextRowInner::Copied { raw, columns } => {
                let Some(column) = columns.get(i).filter(|_| i < raw.len()) else {
                    return Err(Error::ColumnType {
                        index: i,
                        expected: "a column",
                        found: "none",
                    });
                };
                match raw.get(i) {
                    Some(cell) => {
                        crate::pg::append_copied(column.type_(), cell, i, out).map(|()| true)
                    }
                    None => Ok(false),
                }
            }
            TextRowInner::Row(r) => r.append_bytes(i, out),
        }
    }
}

/// A prepared (and cached) statement of a transaction; it binds only [`Param`]s.
pub struct Stmt<'c>(StmtInner<'c>, &'c FirstFailure);

enum StmtInner<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres(crate::pg::Stmt<'c>),
}

impl std::fmt::Debug for Stmt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            StmtInner::Sqlite(s) => f.debug_tuple("Stmt").field(&s.expanded_sql()).finish(),
            StmtInner::Postgres(s) => f.debug_tuple("Stmt").field(s).finish(),
        }
    }
}

impl Stmt<'_> {
    /// Runs the statement; returns how many rows it changed.
    pub fn execute(&mut self, params: &[Param<'_>]) -> Result<usize> {
        self.1.note(match &mut self.0 {
            StmtInner::Sqlite(s) => {
                s.execute(rusqlite::params_from_iter(params.iter().map(Param::bound))).or_error()
            }
            StmtInner::Postgres(s) => s.execute(params),
        })
    }

    /// The first row mapped by `f`, or None when there is none.
    pub fn query_row<T>(
        &mut self,
        params: &[Param<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let failed = self.1;
        match &mut self.0 {
            StmtInner::Sqlite(s) => {
                let mut rows = failed.note(
                    s.query(rusqlite::params_from_iter(params.iter().map(Param::bound))).or_error(),
                )?;
                match failed.note(rows.next().or_error())? {
                    Some(r) => f(&Row(RowRef::Sqlite(r))).map(Some),
                    None => Ok(None),
                }
            }
            StmtInner::Postgres(s) => match failed.note(s.query_first(params))? {
                Some(r) => f(&Row(RowRef::Postgres(&r))).map(Some),
                None => Ok(None),
            },
        }
    }

    /// The rows, to step through one by one (constant memory).
    pub fn query<'s>(&'s mut self, params: &[Param<'_>]) -> Result<Rows<'s>> {
        let failed = self.1;
        let rows = match &mut self.0 {
            StmtInner::Sqlite(s) => failed
                .note(
                    s.query(rusqlite::params_from_iter(params.iter().map(Param::bound))).or_error(),
                )
                .map(RowsInner::Sqlite)?,
            StmtInner::Postgres(s) => failed.note(s.query(params)).map(RowsInner::Postgres)?,
        };
        Ok(Rows(rows, failed))
    }

    /// Every row mapped by `f`.
    pub fn query_map<T>(
        &mut self,
        params: &[Param<'_>],
        f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(params)?.map_all(f)
    }
}

/// The transaction-control word `sql` starts with (after blanks and comments), if any: such a
/// statement would end or split the transaction the closure runs in, which is the
/// [`Database`](crate::Database)'s to begin and end.
pub(crate) fn transaction_control(sql: &str) -> Option<&str> {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let word = rest.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("");
    const CONTROL: [&str; 8] =
        ["BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ABORT"];
    CONTROL.iter().any(|c| c.eq_ignore_ascii_case(word)).then_some(word)
}

impl Tx<'_> {
    /// Refuses a statement this transaction cannot run: one of transaction control, and on
    /// SQLite any statement once the transaction has ended inside the closure (a constraint
    /// declared `ON CONFLICT ROLLBACK`, a trigger's `RAISE(ROLLBACK)`): what followed would run
    /// outside it, committed on its own. PostgreSQL refuses those itself.
    fn runnable(&self, sql: &str) -> Result<()> {
        if let Some(word) = transaction_control(sql) {
            return Err(Error::InvalidInput {
                what: "statement",
                reason: format!(
                    "{word} is transaction control, which Database::write and read do: return an error from the closure to roll back"
                )
                .into(),
            });
        }
        if let Conn::Sqlite(c) = self.conn() {
            if c.is_autocommit() {
                return Err(Error::Aborted {
                    path: self.database().location().to_path_buf(),
                    first: "a statement ended the transaction (ON CONFLICT ROLLBACK or RAISE(ROLLBACK)); nothing more runs in it".into(),
                });
            }
        }
        Ok(())
    }

    /// Prepares `sql` (cached per connection). It is written in SQLite's dialect with `?N`
    /// parameters, which PostgreSQL reads as `$N`; where the dialects differ, pass the text for
    /// this transaction's backend ([`Tx::dialect`]).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        let failed = self.failures();
        failed.note(self.runnable(sql))?;
        let stmt = failed.note(match self.conn() {
            Conn::Sqlite(c) => c.prepare_cached(sql).or_error().map(StmtInner::Sqlite),
            Conn::Postgres(c) => crate::pg::Stmt::prepare(c, sql).map(StmtInner::Postgres),
        })?;
        Ok(Stmt(stmt, failed))
    }

    /// Every row of `sql` (a SELECT) handed to `row` in order, each cell as the text of what
    /// it holds ([`Row::append_bytes`]: text and blobs as stored, numbers in decimal; NULL is
    /// None), in constant memory; returns how many rows `row` was given. An error from `row`
    /// stops the reading and is returned as it is.
    ///
    /// On PostgreSQL the rows come through `COPY (…) TO STDOUT (FORMAT binary)`: the server
    /// streams them as one reply, and the client takes each row's cells straight from the
    /// stream, where a query's rows come in batches, each row decoded into a row of the driver.
    /// COPY takes no parameters, so each goes in as a setting of this transaction
    /// (`set_config`, bound as a parameter is) that the statement reads back with
    /// `current_setting` cast to the parameter's type; statements whose parameters are not
    /// text or whole numbers are read as a query instead.
    pub fn text_rows<E: From<Error>>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        mut row: impl FnMut(&TextRow<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        let mut stopped: Option<E> = None;
        let mut take = |r: &TextRow<'_>| match row(r) {
            Ok(()) => true,
            Err(e) => {
                stopped = Some(e);
                false
            }
        };
        let read = self.failures().note(self.text_rows_by_backend(sql, params, &mut take));
        match (stopped, read) {
            (Some(e), _) => Err(e),
            (None, read) => read.map_err(E::from),
        }
    }

    fn text_rows_by_backend(
        &self,
        sql: &str,
        params: &[Param<'_>],
        take: &mut dyn FnMut(&TextRow<'_>) -> bool,
    ) -> Result<u64> {
        self.runnable(sql)?;
        if let Conn::Postgres(c) = self.conn() {
            let stmt = c.prepare(sql)?;
            if let Some((setup, settings, copy)) = crate::pg::copy_of(sql, &stmt, params) {
                let settings: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    settings.iter().map(|s| s as &(dyn postgres::types::ToSql + Sync)).collect();
                let setup = (!settings.is_empty()).then_some((setup.as_str(), settings.as_slice()));
                let columns = stmt.columns();
                return c.copy_rows(setup, &copy, &mut |raw| {
                    if raw.len() != columns.len() {
                        return Err(Error::ColumnType {
                            index: raw.len(),
                            expected: "a cell per column of the statement",
                            found: "another number of cells",
                        });
                    }
                    Ok(take(&TextRow(TextRowInner::Copied { raw, columns })))
                });
            }
        }
        let mut stmt = self.prepare(sql)?;
        let mut rows = stmt.query(params)?;
        let mut count = 0;
        while let Some(r) = rows.next()? {
            count += 1;
            if !take(&TextRow(TextRowInner::Row(&r))) {
                break;
            }
        }
        Ok(count)
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
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        self.prepare(sql)?.query_row(params, f)
    }

    /// Runs statements that take no parameters and are fixed in the program (so no caller text).
    pub fn execute_batch(&self, sql: &'static str) -> Result<()> {
        self.failures().note(self.runnable(sql))?;
        self.failures().note(match self.conn() {
            Conn::Sqlite(c) => c.execute_batch(sql).or_error(),
            Conn::Postgres(c) => c.batch_execute(sql),
        })
    }

    /// Inserts `rows`, in order, each one [`Param`] per column: `insert` is an INSERT's text up
    /// to its `VALUES` (`INSERT INTO t (a, b)`), without parameters. Returns the rows inserted.
    /// It does what `{insert} VALUES (?1, …, ?N)` run once per row does, as cheaply as the
    /// backend allows: SQLite runs that one-row statement per row (a statement costs no round
    /// trip there); PostgreSQL sends up to a thousand rows per round trip as one array per
    /// column to `{insert} SELECT * FROM unnest(…)`, a statement prepared once per connection
    /// whatever the batch's size. Every row is stored or the call fails: fewer rows stored
    /// than given, without an error (a trigger planted to ignore some), is
    /// [`Error::NotStored`].
    pub fn insert_rows<const N: usize>(
        &self,
        insert: &str,
        rows: &[[Param<'_>; N]],
    ) -> Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        let placeholders: Vec<String> = (1..=N).map(|i| format!("?{i}")).collect();
        let one_row = format!("{insert} VALUES ({})", placeholders.join(", "));
        self.failures().note(self.runnable(insert))?;
        let stored = self.failures().note(self.insert_each(&one_row, insert, rows))?;
        if stored != rows.len() {
            let table = insert.split_whitespace().nth(2).unwrap_or("a table");
            return self.failures().note(Err(Error::NotStored {
                table: table.into(),
                given: rows.len() as u64,
                stored: stored as u64,
            }));
        }
        Ok(stored)
    }

    fn insert_each<const N: usize>(
        &self,
        one_row: &str,
        insert: &str,
        rows: &[[Param<'_>; N]],
    ) -> Result<usize> {
        match self.conn() {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(one_row).or_error()?;
                let mut inserted = 0;
                for row in rows {
                    inserted += stmt
                        .execute(rusqlite::params_from_iter(row.iter().map(Param::bound)))
                        .or_error()?;
                }
                Ok(inserted)
            }
            Conn::Postgres(c) => {
                let rows: Vec<&[Param<'_>]> = rows.iter().map(|row| &row[..]).collect();
                c.insert_rows(one_row, insert, &rows)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Database, Error};
    use serde_json::json;

    /// The deepest nesting serde_json reads with its default recursion limit.
    const SERDE_READS: usize = 127;

    /// Every JSON value that enters a store is one its readers take back, also inside an
    /// export's row: nested up to the limit it is stored and parses again; deeper, arrays or
    /// objects, it is refused whole. The limit sits below what serde_json reads.
    #[test]
    fn json_deeper_than_the_readers_take_back_is_refused() {
        for depth in [0, 1, 2, 64, 99, 100, 101, 126, 127, 128, 129, 300] {
            for object in [false, true] {
                let mut v = json!("leaf");
                for _ in 0..depth {
                    v = if object { json!({ "k": v, "n": 1 }) } else { json!([1, v]) };
                }
                assert_eq!(json_depth(&v), depth);
                let text = serde_json::to_string(&v).unwrap();
                let readable = serde_json::from_str::<Value>(&text).is_ok();
                assert_eq!(readable, depth <= SERDE_READS, "depth {depth}");
                // A stored value exported inside a row object inside an array still reads.
                const { assert!(MAX_JSON_DEPTH + 2 <= SERDE_READS) };
                match Clean::json(&v) {
                    Ok(clean) => {
                        assert!(depth <= MAX_JSON_DEPTH, "depth {depth} taken");
                        serde_json::from_str::<Value>(&clean).unwrap();
                    }
                    Err(e) => {
                        assert!(depth > MAX_JSON_DEPTH, "depth {depth}: {e}");
                        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
                        assert!(e.to_string().contains(&format!("nested {depth} levels")), "{e}");
                    }
                }
            }
        }
    }

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
                    |r| r.get::<String>(0),
                )?;
                Ok::<_, Error>(found.unwrap_or_default())
            })
            .unwrap();
        assert!(!stored.contains(&key) && !stored.contains("hunter2"), "{stored}");
        assert!(stored.starts_with("id-"), "{stored}");
    }

    /// `insert_rows` stores what the one-row INSERT run once per row stores, text redacted
    /// alike, in order, and says how many rows it inserted.
    #[test]
    fn inserting_rows_is_the_one_row_insert_per_row_on_sqlite() {
        let db = Database::open_in_memory().unwrap();
        let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
        let texts =
            [Some(format!("token {key}")), None, Some("plain".to_owned()), Some(String::new())];
        let (one, many) = db
            .write(|tx| {
                tx.execute_batch("CREATE TEMP TABLE a (n, t); CREATE TEMP TABLE b (n, t)")?;
                let rows: Vec<[Param<'_>; 2]> = texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| [Param::int(i as i64), Param::opt_text(t.as_deref())])
                    .collect();
                for row in &rows {
                    tx.execute("INSERT INTO a (n, t) VALUES (?1, ?2)", row)?;
                }
                assert_eq!(tx.insert_rows("INSERT INTO b (n, t)", &rows)?, texts.len());
                assert_eq!(tx.insert_rows::<2>("INSERT INTO b (n, t)", &[])?, 0);
                let dump = |table: &str| {
                    tx.query_row(
                        &format!("SELECT group_concat(n || ':' || IFNULL(t, '-'), '|') FROM (SELECT * FROM {table} ORDER BY rowid)"),
                        &[],
                        |r| r.get::<String>(0),
                    )
                };
                Ok::<_, Error>((dump("a")?, dump("b")?))
            })
            .unwrap();
        assert_eq!(one, many);
        assert!(one.is_some_and(|rows| rows.starts_with("0:token ") && !rows.contains(&key)));
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
