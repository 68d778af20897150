//! The PostgreSQL backend (decision 13): a pool of connections that are checked before use and
//! replaced after a bounded lifetime, transactions at READ COMMITTED, statements prepared once per
//! connection, rows streamed through portals, and the migrations of `migrations-postgres/` run in
//! one transaction under `pg_advisory_xact_lock`, so concurrent first starts apply them once.
//!
//! Nothing of the driver leaves this module and `bind.rs`: the stores see [`Tx`](crate::Tx),
//! [`Stmt`](crate::Stmt), [`Row`](crate::Row) and [`Param`](crate::Param) only.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, NoTls, Statement, Transaction};
use refinery_core::traits::sync::{Migrate, Query, Transaction as RefineryTransaction};
use refinery_core::Migration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::bind::{Cell, Param};
use crate::error::{Error, Result};

mod embedded {
    refinery::embed_migrations!("../../migrations-postgres");
}

/// The key of the advisory lock migrations take (`aigentflow` in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x6169_6765_6e74_666c;

/// The migration history table (refinery's).
const HISTORY_TABLE: &str = "refinery_schema_history";

/// Rows fetched from a portal per round trip while streaming.
const PORTAL_BATCH: i32 = 512;

/// Idle connections older than this are closed (a server or a proxy may drop them first).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// No connection lives longer than this, so server-side memory and settings stay fresh.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Connections in the pool at most.
const MAX_CONNECTIONS: u32 = 8;

/// Whether `url` names a PostgreSQL database.
pub fn is_url(url: &str) -> bool {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `url` with its password shown as `***`, for messages, logs and [`Database::location`]. The
/// URL is split where the driver splits it: everything before its first `@` is the credentials
/// (so a password holding `/`, `?`, `:` or `#` is hidden whole), and a query parameter is the
/// password when its name, `%XX` escapes decoded, is `password` in any case.
///
/// [`Database::location`]: crate::Database::location
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let mut out = format!("{scheme}://");
    let after = match rest.split_once('@') {
        Some((credentials, after)) => {
            match credentials.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(credentials),
            }
            out.push('@');
            after
        }
        None => rest,
    };
    match after.split_once('?') {
        Some((hosts_and_path, query)) => {
            out.push_str(hosts_and_path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if percent_decoded(k).eq_ignore_ascii_case("password") => {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(after),
    }
    out
}

/// `text` with its `%XX` escapes decoded (bytes that are not UTF-8 replaced).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a connection could not be made, in one line: the server's own message when it refused
/// (the driver's `Display` says only "db error"), else the driver's with its cause.
#[derive(Debug)]
pub(crate) struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl From<postgres::Error> for ConnectError {
    fn from(e: postgres::Error) -> Self {
        let text = match (e.as_db_error(), std::error::Error::source(&e)) {
            (Some(db), _) => {
                let mut text = db.message().to_owned();
                for (label, part) in [("", db.detail()), ("hint: ", db.hint())] {
                    if let Some(part) = part {
                        text.push_str(&format!("; {label}{part}"));
                    }
                }
                text
            }
            (None, Some(cause)) => format!("{e}: {cause}"),
            (None, None) => e.to_string(),
        };
        Self(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// A pooled connection: the client and the statements prepared on it.
pub(crate) struct PgConn {
    /// None only while dropping.
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl PgConn {
    fn client(&mut self) -> Result<&mut Client> {
        self.client.as_mut().ok_or_else(Self::closed)
    }

    fn closed() -> Error {
        Error::Postgres { code: None, message: "the connection is closed".into() }
    }
}

impl Drop for PgConn {
    /// The driver closes a connection by running its own runtime for a moment, which panics on
    /// a thread of a running tokio runtime — and a panic in a destructor aborts. A program's last
    /// handle may well drop inside an async task, so there the client is closed on a thread of
    /// its own.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some(client) = self.client.take() {
            let closer = std::thread::Builder::new()
                .name("aigentflow-pg-close".into())
                .spawn(move || drop(client));
            if let Err(e) = closer {
                // The client went with the closure that could not run: it was dropped here.
                tracing::warn!(error = %e, "cannot start a thread to close a PostgreSQL connection");
            }
        }
    }
}

/// A connection made from `config` on a thread of its own and waited for at most `wait`: the
/// driver's connect timeout covers only the TCP connection, not a server that accepts and never
/// answers. A refusal is [`Error::Connect`] with the server's reason.
fn connect_within(config: &postgres::Config, wait: Duration, shown: &str) -> Result<Client> {
    let connect_err =
        |reason: String| Error::Connect { url: shown.to_owned().into(), reason: reason.into() };
    let (sender, receiver) = std::sync::mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("aigentflow-pg-connect".into())
        .spawn(move || {
            let made = config.connect(NoTls).map_err(|e| ConnectError::from(e).to_string());
            // The opener may have stopped waiting; the connection then closes here.
            let _ = sender.send(made);
        })
        .map_err(|e| connect_err(format!("cannot start a thread to connect: {e}")))?;
    match receiver.recv_timeout(wait) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(reason)) => Err(connect_err(reason)),
        Err(_) => Err(connect_err(format!(
            "timed out: the server did not answer within {} ms",
            wait.as_millis()
        ))),
    }
}

/// Makes and checks the pool's connections.
#[derive(Debug)]
struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<PgConn, ConnectError> {
        let client = self.config.connect(NoTls)?;
        Ok(PgConn { client: Some(client), statements: HashMap::new() })
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), ConnectError> {
        // A connection the server or a proxy dropped while idle fails here and is replaced.
        match conn.client.as_mut() {
            Some(client) => Ok(client.simple_query("").map(|_| ())?),
            None => Ok(()),
        }
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.as_ref().is_none_or(Client::is_closed)
    }
}

/// The PostgreSQL side of a [`Database`](crate::Database).
pub(crate) struct PgInner {
    pool: r2d2::Pool<Manager>,
    /// What the pool's connections are made from, for a connection of its own ([`Listener`])
    /// (boxed: it is large, and a handle is mostly not a listener).
    config: Box<postgres::Config>,
    /// The URL without its password.
    shown: String,
    read_only: bool,
    /// How long a connection may take.
    wait: Duration,
}

impl std::fmt::Debug for PgInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgInner").field("url", &self.shown).finish_non_exhaustive()
    }
}

impl PgInner {
    /// Connects to `url` and migrates the database unless `read_only` (then it must be at this
    /// build's schema); `wait` bounds how long a connection may take.
    pub(crate) fn open(
        url: &str,
        read_only: bool,
        migrate: bool,
        any_version: bool,
        wait: Duration,
    ) -> Result<Self> {
        let shown = display_url(url);
        let config: postgres::Config =
            url.parse().map_err(|e: postgres::Error| Error::InvalidInput {
                what: "database URL",
                reason: format!("\"{shown}\" is not a PostgreSQL URL: {e}").into(),
            })?;
        let mut config = config;
        if config.get_application_name().is_none() {
            config.application_name("aigentflow");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(wait);
        }
        let manager = Manager { config };
        // The first connection is made here, not by the pool, so that a server that refuses it
        // is told with the server's reason at once (the pool would retry until its timeout).
        let client = connect_within(&manager.config, wait, &shown)?;
        let mut first = PgConn { client: Some(client), statements: HashMap::new() };
        let config = Box::new(manager.config.clone());
        let pool = r2d2::Pool::builder()
            .max_size(MAX_CONNECTIONS)
            .min_idle(Some(0))
            .test_on_check_out(true)
            .idle_timeout(Some(IDLE_TIMEOUT))
            .max_lifetime(Some(MAX_LIFETIME))
            .connection_timeout(wait)
            .build_unchecked(manager);
        let inner = Self { pool, config, shown, read_only, wait };
        let conn = &mut first;
        let found = applied_version(conn.client()?).map_err(|e| inner.error(e))?;
        let latest = latest_version();
        if any_version {
            return Ok(inner);
        }
        if found > latest {
            return Err(Error::NewerSchema {
                path: inner.shown.clone().into(),
                found,
                supported: latest,
            });
        }
        if found < latest {
            if read_only || !migrate {
                return Err(Error::Outdated { path: inner.shown.clone().into(), found, latest });
            }
            inner.migrate(conn)?;
        }
        Ok(inner)
    }

    /// The URL without its password.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    fn take(&self) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool.get().map_err(|e| Error::Connect {
            url: self.shown.clone().into(),
            reason: e.to_string().into(),
        })
    }

    fn error(&self, e: postgres::Error) -> Error {
        Error::from_postgres(e)
    }

    /// Applies the migrations this build has and the database lacks, in one transaction that
    /// first takes the migration lock: of processes starting at once, one applies them, the
    /// others wait and then find nothing to do.
    fn migrate(&self, conn: &mut PgConn) -> Result<Vec<i64>> {
        let mut tx = conn.client()?.transaction().map_err(|e| self.error(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| self.error(e))?;
        let found = applied_version(&mut tx).map_err(|e| self.error(e))?;
        let latest = latest_version();
        if found > latest {
            return Err(Error::NewerSchema {
                path: self.shown.clone().into(),
                found,
                supported: latest,
            });
        }
        let report = embedded::migrations::runner()
            .set_grouped(true)
            .set_abort_divergent(true)
            .set_abort_missing(true)
            .run(&mut InTransaction(&mut tx))
            .map_err(|e| Error::Migrate {
                path: self.shown.clone().into(),
                reason: e.to_string().into(),
            })?;
        tx.commit().map_err(|e| self.error(e))?;
        let applied: Vec<i64> =
            report.applied_migrations().iter().map(|m| i64::from(m.version())).collect();
        tracing::info!(url = %self.shown, ?applied, "migrated database");
        Ok(applied)
    }

    /// Runs `f` in a transaction: READ COMMITTED for writes (each store takes the row locks it
    /// needs), a read-only REPEATABLE READ snapshot for reads.
    pub(crate) fn run<T, E: From<Error>>(
        &self,
        write: bool,
        f: impl FnOnce(&PgTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        if write && self.read_only {
            return Err(Error::ReadOnly { path: self.shown.clone().into() }.into());
        }
        let mut conn = self.take()?;
        let PgConn { client, statements } = &mut *conn;
        let client = client.as_mut().ok_or_else(PgConn::closed)?;
        let (isolation, read_only) = if write {
            (IsolationLevel::ReadCommitted, false)
        } else {
            (IsolationLevel::RepeatableRead, true)
        };
        let tx = client
            .build_transaction()
            .isolation_level(isolation)
            .read_only(read_only)
            .start()
            .map_err(|e| self.error(e))?;
        let cell = PgTx { tx: RefCell::new(tx), statements: RefCell::new(statements) };
        let value = f(&cell)?;
        cell.tx.into_inner().commit().map_err(|e| self.error(e))?;
        Ok(value)
    }
}

/// A connection of its own, outside the pool, that LISTENs on one channel: the waiting side of
/// a [`Watch`](crate::Watch) on PostgreSQL. It runs no transaction and its session is read-only.
pub(crate) struct Listener {
    conn: PgConn,
    config: Box<postgres::Config>,
    wait: Duration,
    shown: String,
    channel: &'static str,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("url", &self.shown)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl PgInner {
    /// A [`Listener`] on `channel` (a fixed name: it is written into the statement).
    pub(crate) fn listen(&self, channel: &'static str) -> Result<Listener> {
        let mut listener = Listener {
            conn: PgConn { client: None, statements: HashMap::new() },
            config: self.config.clone(),
            wait: self.wait,
            shown: self.shown.clone(),
            channel,
        };
        listener.connect()?;
        Ok(listener)
    }
}

impl Listener {
    /// (Re)connects and LISTENs: notifications sent from here on are queued for [`wait`](Self::wait).
    fn connect(&mut self) -> Result<()> {
        let mut client = connect_within(&self.config, self.wait, &self.shown)?;
        client
            .batch_execute(&format!(
                "SET default_transaction_read_only = on; LISTEN {}",
                self.channel
            ))
            .map_err(Error::from_postgres)?;
        self.conn.client = Some(client);
        Ok(())
    }

    /// Waits up to `timeout` for a notification on the channel; true when one or more came
    /// (all of them are taken), or when the connection was lost and made again (what was sent
    /// meanwhile is unknown), false when the time ran out.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<bool> {
        use postgres::fallible_iterator::FallibleIterator;
        let client = self.conn.client()?;
        let got = {
            let mut notifications = client.notifications();
            let first = notifications.timeout_iter(timeout).next();
            match first {
                // The others already here are taken too: one wake-up stands for all of them.
                Ok(Some(n)) => {
                    let mut rest = Ok(Some(n));
                    while let Ok(Some(_)) = rest {
                        rest = notifications.iter().next();
                    }
                    rest.map(|_| Some(()))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        };
        match got {
            Ok(Some(_)) => Ok(true),
            // The server ended the connection (a restart, an idle timeout, an operator): the
            // driver reports it as an error or as the end of the notifications.
            _ if client.is_closed() => {
                tracing::debug!(url = %self.shown, "the listening connection was lost; connecting again");
                // Replaced whole, so the old client is closed as `PgConn` closes one.
                self.conn = PgConn { client: None, statements: HashMap::new() };
                self.connect()?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(Error::from_postgres(e)),
        }
    }
}

/// A PostgreSQL transaction as a [`Tx`](crate::Tx) holds it.
pub(crate) struct PgTx<'c> {
    tx: RefCell<Transaction<'c>>,
    statements: RefCell<&'c mut HashMap<String, Statement>>,
}

impl std::fmt::Debug for PgTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgTx")
    }
}

/// What a statement needs of its transaction (object-safe, so a statement's lifetime can be
/// shorter than the transaction's).
pub(crate) trait PgAccess {
    fn prepare(&self, sql: &str) -> Result<Statement>;
    fn execute(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<u64>;
    fn query_first(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<postgres::Row>>;
    fn bind(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<postgres::Portal>;
    fn fetch(&self, portal: &postgres::Portal, rows: i32) -> Result<Vec<postgres::Row>>;
    fn batch_execute(&self, sql: &str) -> Result<()>;
}

impl PgAccess for PgTx<'_> {
    fn prepare(&self, sql: &str) -> Result<Statement> {
        if let Some(stmt) = self.statements.borrow().get(sql) {
            return Ok(stmt.clone());
        }
        let stmt =
            self.tx.borrow_mut().prepare(&dollar_params(sql)).map_err(Error::from_postgres)?;
        self.statements.borrow_mut().insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    fn execute(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.tx.borrow_mut().execute(stmt, params).map_err(Error::from_postgres)
    }

    fn query_first(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<postgres::Row>> {
        let portal = self.bind(stmt, params)?;
        Ok(self.fetch(&portal, 1)?.into_iter().next())
    }

    fn bind(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<postgres::Portal> {
        self.tx.borrow_mut().bind(stmt, params).map_err(Error::from_postgres)
    }

    fn fetch(&self, portal: &postgres::Portal, rows: i32) -> Result<Vec<postgres::Row>> {
        self.tx.borrow_mut().query_portal(portal, rows).map_err(Error::from_postgres)
    }

    fn batch_execute(&self, sql: &str) -> Result<()> {
        self.tx.borrow_mut().batch_execute(sql).map_err(Error::from_postgres)
    }
}

/// A prepared statement of a PostgreSQL transaction.
pub(crate) struct Stmt<'c> {
    tx: &'c (dyn PgAccess + 'c),
    stmt: Statement,
}

impl std::fmt::Debug for Stmt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stmt").field("columns", &self.stmt.columns().len()).finish()
    }
}

fn as_sql<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p.bound() as &(dyn ToSql + Sync)).collect()
}

impl<'c> Stmt<'c> {
    pub(crate) fn prepare(tx: &'c (dyn PgAccess + 'c), sql: &str) -> Result<Self> {
        Ok(Self { tx, stmt: tx.prepare(sql)? })
    }

    pub(crate) fn execute(&mut self, params: &[Param<'_>]) -> Result<usize> {
        let n = self.tx.execute(&self.stmt, &as_sql(params))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(crate) fn query_first(&mut self, params: &[Param<'_>]) -> Result<Option<postgres::Row>> {
        self.tx.query_first(&self.stmt, &as_sql(params))
    }

    pub(crate) fn query(&mut self, params: &[Param<'_>]) -> Result<Rows<'_>> {
        let portal = self.tx.bind(&self.stmt, &as_sql(params))?;
        Ok(Rows { tx: self.tx, portal, buffer: VecDeque::new(), done: false, current: None })
    }
}

/// Rows read from a portal, a batch at a time.
pub(crate) struct Rows<'s> {
    tx: &'s (dyn PgAccess + 's),
    portal: postgres::Portal,
    buffer: VecDeque<postgres::Row>,
    done: bool,
    /// The row last returned.
    current: Option<postgres::Row>,
}

impl Rows<'_> {
    pub(crate) fn next(&mut self) -> Result<Option<&postgres::Row>> {
        if self.buffer.is_empty() && !self.done {
            let batch = self.tx.fetch(&self.portal, PORTAL_BATCH)?;
            self.done = batch.len() < PORTAL_BATCH as usize;
            self.buffer.extend(batch);
        }
        self.current = self.buffer.pop_front();
        Ok(self.current.as_ref())
    }
}

/// Column `index` of `row` as a [`Cell`]. Whole numbers, reals and text are read as such (a
/// boolean as 0 or 1); any other type is an error naming it (cast it in the SQL).
pub(crate) fn cell(row: &postgres::Row, index: usize) -> Result<Cell<'_>> {
    use postgres::types::Type;
    let column = row.columns().get(index).ok_or(Error::ColumnType {
        index,
        expected: "a column",
        found: "none",
    })?;
    let get_err = Error::from_postgres;
    Ok(match *column.type_() {
        Type::INT8 => {
            row.try_get::<_, Option<i64>>(index).map_err(get_err)?.map_or(Cell::Null, Cell::Integer)
        }
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)
            .map_err(get_err)?
            .map_or(Cell::Null, |i| Cell::Integer(i64::from(i))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)
            .map_err(get_err)?
            .map_or(Cell::Null, |i| Cell::Integer(i64::from(i))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)
            .map_err(get_err)?
            .map_or(Cell::Null, |b| Cell::Integer(i64::from(b))),
        Type::FLOAT8 => {
            row.try_get::<_, Option<f64>>(index).map_err(get_err)?.map_or(Cell::Null, Cell::Real)
        }
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)
            .map_err(get_err)?
            .map_or(Cell::Null, |f| Cell::Real(f64::from(f))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            row.try_get::<_, Option<&str>>(index).map_err(get_err)?.map_or(Cell::Null, Cell::Text)
        }
        Type::BYTEA => {
            row.try_get::<_, Option<&[u8]>>(index).map_err(get_err)?.map_or(Cell::Null, Cell::Blob)
        }
        _ => {
            return Err(Error::ColumnType {
                index,
                expected: "bigint, double precision, boolean or text",
                found: "another PostgreSQL type",
            })
        }
    })
}

/// `sql` with SQLite's `?N` (and bare `?`) parameters written as PostgreSQL's `$N`, outside
/// string literals, quoted identifiers and comments.
pub(crate) fn dollar_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    let mut next_bare = 1usize;
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek().is_some_and(|&(_, d)| d == '-') => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next_bare.to_string());
                    next_bare += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The newest migration this build knows.
pub(crate) fn latest_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The newest migration applied to the database of `tx`, a PostgreSQL transaction.
pub(crate) fn applied_in(tx: &crate::Tx<'_>) -> Result<i64> {
    let found = tx.query_row(
        "SELECT to_regclass('public.refinery_schema_history') IS NOT NULL",
        &[],
        |r| r.get::<bool>(0),
    )?;
    if found != Some(true) {
        return Ok(0);
    }
    Ok(tx
        .query_row("SELECT MAX(version)::BIGINT FROM refinery_schema_history", &[], |r| {
            r.get::<Option<i64>>(0)
        })?
        .flatten()
        .unwrap_or(0))
}

/// The newest migration applied (0 for none).
fn applied_version(
    client: &mut impl postgres::GenericClient,
) -> std::result::Result<i64, postgres::Error> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("public.{HISTORY_TABLE}")])?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row =
        client.query_one(&format!("SELECT MAX(version)::BIGINT FROM {HISTORY_TABLE}"), &[])?;
    Ok(row.get::<_, Option<i64>>(0).unwrap_or(0))
}

/// A transaction refinery runs its statements in, without opening one of its own.
struct InTransaction<'a, 'c>(&'a mut Transaction<'c>);

impl RefineryTransaction for InTransaction<'_, '_> {
    type Error = postgres::Error;

    fn execute<'a, T: Iterator<Item = &'a str>>(
        &mut self,
        queries: T,
    ) -> std::result::Result<usize, Self::Error> {
        let mut count = 0;
        for query in queries {
            self.0.batch_execute(query)?;
            count += 1;
        }
        Ok(count)
    }
}

impl Query<Vec<Migration>> for InTransaction<'_, '_> {
    fn query(&mut self, query: &str) -> std::result::Result<Vec<Migration>, Self::Error> {
        let rows = self.0.query(query, &[])?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in rows {
            let version: i32 = row.try_get(0)?;
            let name: String = row.try_get(1)?;
            let applied_on: String = row.try_get(2)?;
            let checksum: String = row.try_get(3)?;
            // refinery writes both; an unreadable checksum (a history edited by hand) reads as 0,
            // which refinery then reports as a divergent migration naming its version.
            let applied_on =
                OffsetDateTime::parse(&applied_on, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let checksum = checksum.parse::<u64>().unwrap_or_default();
            applied.push(Migration::applied(version, name, applied_on, checksum));
        }
        Ok(applied)
    }
}

impl Migrate for InTransaction<'_, '_> {}
