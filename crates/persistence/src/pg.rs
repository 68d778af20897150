//! The PostgreSQL backend (decision 13): a pool of connections that are replaced when found
//! dead and after a bounded lifetime, transactions at READ COMMITTED, statements prepared once per
//! connection, rows streamed through portals, and the migrations of `migrations-postgres/` run in
//! one transaction under `pg_advisory_xact_lock`, so concurrent first starts apply them once.
//!
//! A call's cost here is mostly its round trips, so none is spent twice: a transaction's BEGIN
//! is also the check of its connection, a one-row query is one exchange, a batch of rows goes in
//! one INSERT of an array per column (prepared once, whatever the batch's size), and a portal
//! hands over rows by the megabyte rather than a fixed count.
//!
//! Nothing of the driver leaves this module and `bind.rs`: the stores see [`Tx`](crate::Tx),
//! [`Stmt`](crate::Stmt), [`Row`](crate::Row) and [`Param`](crate::Param) only.

use std::cell::{Cell as StdCell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postgres::types::{ToSql, Type};
use postgres::{Client, IsolationLevel, NoTls, Statement, Transaction};
use refinery_core::traits::sync::{Migrate, Query, Transaction as RefineryTransaction};
use refinery_core::Migration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::bind::{Bound, Cell, Param};
use crate::db::Backend;
use crate::error::{Error, Result};
use crate::sets::{self, AppMigration, History, MigrationSet, Recorded};

mod embedded {
    refinery::embed_migrations!("../../migrations-postgres");
}

/// The key of the advisory lock migrations take (`aigentflow` in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x6169_6765_6e74_666c;

/// The migration history table (refinery's).
const HISTORY_TABLE: &str = "refinery_schema_history";

/// Rows a portal's first fetch asks for: a short listing comes in one round trip.
const FIRST_FETCH: i32 = 512;

/// About how many bytes of rows a portal hands over per round trip after its first fetch, so
/// memory stays flat whatever the row count while a long listing or export takes few trips.
const FETCH_BYTES: usize = 2 << 20;

/// Rows a portal is asked for per fetch at most.
const MAX_FETCH: i32 = 1 << 16;

/// Rows one INSERT of a batch ([`PgAccess::insert_rows`]) carries at most.
pub(crate) const INSERT_CHUNK: usize = 1000;

/// Idle connections older than this are closed (a server or a proxy may drop them first).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// No connection lives longer than this, so server-side memory and settings stay fresh.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Connections in the pool at most.
const MAX_CONNECTIONS: u32 = 8;

/// How many connections a transaction tries its BEGIN on: after a server restart every
/// connection of the pool may be dead, and the last try is on a fresh one.
const BEGIN_ATTEMPTS: u32 = MAX_CONNECTIONS + 1;

/// How long making a connection may take at least, whatever the busy timeout: reaching the
/// server is no wait for another writer, and a busy timeout of 0 (`--lock-timeout 0`: do not
/// wait for locks) must still connect, over a slow network or to a busy server that takes
/// several round trips to check a password.
const MIN_CONNECT_WAIT: Duration = Duration::from_secs(5);

/// The SQLSTATE of a lock wait that ran out of `lock_timeout` (`lock_not_available`).
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The longest `lock_timeout` the server takes, in milliseconds (its settings are `int`).
const MAX_LOCK_TIMEOUT_MS: u128 = i32::MAX as u128;

/// The startup option that bounds every lock wait of a connection by `wait`, the busy timeout
/// of the [`Options`](crate::Options), as SQLite's busy timeout bounds a wait for its lock: a
/// statement that waits longer for a row, table or advisory lock fails with SQLSTATE 55P03,
/// which becomes [`Error::Locked`]. Whole milliseconds rounded up, at least 1 (the server reads
/// 0 as "wait forever", SQLite as "do not wait") and at most what the server takes. Set when the
/// connection starts, so it costs no round trip; options already in the URL come after it, so
/// a `-c lock_timeout=…` there wins.
///
/// `statement_timeout` is left as the server has it: a long export or listing is work, not a
/// wait, and how long work may take is the operator's call (a role's or the URL's setting).
fn lock_timeout_option(wait: Duration) -> String {
    let ms = wait.as_nanos().div_ceil(1_000_000).clamp(1, MAX_LOCK_TIMEOUT_MS);
    format!("-c lock_timeout={ms}")
}

/// The startup options that make a statement run alone ([`PgInner::execute_alone`]) run as a
/// write transaction does (those begin with their level and access mode named): at READ
/// COMMITTED, read-write, whatever the server, the role or the URL set as default. Last in the
/// options, so they win over the URL's.
const SESSION_DEFAULTS: &str =
    r"-c default_transaction_isolation=read\ committed -c default_transaction_read_only=off";

/// Whether `e` is a lock wait that ran out of `lock_timeout`.
fn waited_out_a_lock(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code() == LOCK_NOT_AVAILABLE)
}

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

/// What the backend asked of the server: round trips (each exchange the client waits on) and
/// connections made. Tests count them to prove what a transaction costs.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    round_trips: AtomicU64,
    connections: AtomicU64,
}

impl Stats {
    fn round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Round trips so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Connections made so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Whether `e` says the connection is gone — closed, an I/O error, or the server ending the
/// session (a FATAL error, as when it terminates an idle backend) — so nothing more runs on it.
fn is_broken(e: &postgres::Error) -> bool {
    use postgres::error::Severity;
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => matches!(db.parsed_severity(), Some(Severity::Fatal | Severity::Panic)),
        None => std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>()),
    }
}

/// The statements prepared on a connection, by their text.
#[derive(Default)]
struct Prepared {
    by_sql: HashMap<String, Statement>,
}

/// A pooled connection: the client and the statements prepared on it.
pub(crate) struct PgConn {
    /// None only while dropping.
    client: Option<Client>,
    statements: Prepared,
    /// Set when an exchange found the connection gone: the pool drops it when it comes back.
    broken: bool,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn").field("broken", &self.broken).finish_non_exhaustive()
    }
}

impl PgConn {
    fn new(client: Client) -> Self {
        Self { client: Some(client), statements: Prepared::default(), broken: false }
    }

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

/// Makes the pool's connections. They are not checked when lent: a transaction's BEGIN is the
/// check (see [`PgInner::run`]).
#[derive(Debug)]
struct Manager {
    config: postgres::Config,
    /// The connection the opening made, lent before any new one is made.
    spare: Mutex<Option<PgConn>>,
    stats: Arc<Stats>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<PgConn, ConnectError> {
        if let Some(conn) = self.spare.lock().unwrap_or_else(PoisonError::into_inner).take() {
            return Ok(conn);
        }
        let client = self.config.connect(NoTls)?;
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Ok(PgConn::new(client))
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), ConnectError> {
        // Only a pool that tests connections when lending them calls this, and this one does
        // not; an empty query is the check should it ever be asked.
        match conn.client.as_mut() {
            Some(client) => {
                self.stats.round_trip();
                Ok(client.simple_query("").map(|_| ())?)
            }
            None => Ok(()),
        }
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.client.as_ref().is_none_or(Client::is_closed)
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
    stats: Arc<Stats>,
}

impl std::fmt::Debug for PgInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgInner").field("url", &self.shown).finish_non_exhaustive()
    }
}

impl PgInner {
    /// Connects to `url` and migrates the database unless `read_only` (then it must be at this
    /// build's schema); `lock_wait`, the busy timeout, bounds every wait for a lock (see
    /// [`lock_timeout_option`]) and, no shorter than [`MIN_CONNECT_WAIT`], how long a
    /// connection may take.
    pub(crate) fn open(
        url: &str,
        read_only: bool,
        migrate: bool,
        any_version: bool,
        lock_wait: Duration,
        sets: &[MigrationSet],
    ) -> Result<Self> {
        let wait = lock_wait.max(MIN_CONNECT_WAIT);
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
        let options = match config.get_options() {
            Some(theirs) => {
                format!("{} {theirs} {SESSION_DEFAULTS}", lock_timeout_option(lock_wait))
            }
            None => format!("{} {SESSION_DEFAULTS}", lock_timeout_option(lock_wait)),
        };
        config.options(&options);
        // The first connection is made here, not by the pool, so that a server that refuses it
        // is told with the server's reason at once (the pool would retry until its timeout).
        let client = connect_within(&config, wait, &shown)?;
        let stats = Arc::new(Stats::default());
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let mut first = PgConn::new(client);
        let found = applied_version(first.client()?).map_err(Error::from_postgres)?;
        let latest = latest_version();
        if !any_version {
            if found > latest {
                return Err(Error::NewerSchema { path: shown.into(), found, supported: latest });
            }
            if found < latest && (read_only || !migrate) {
                return Err(Error::Outdated { path: shown.into(), found, latest });
            }
            let at = Path::new(&shown);
            let sets_current = found < SETS_VERSION
                || sets::current(
                    &mut PgHistory(first.client()?, None),
                    sets,
                    Backend::Postgres,
                    at,
                )?;
            if found < latest || !sets_current {
                if read_only || !migrate {
                    sets::check_read_only(
                        &mut PgHistory(first.client()?, None),
                        sets,
                        Backend::Postgres,
                        at,
                    )?;
                }
                migrate_on(&mut first, &shown, sets)?;
                if !sets.is_empty() {
                    // An application's migration may change its session (SET, set_config):
                    // the pool gets a connection of its own instead of that one.
                    first = PgConn::new(connect_within(&config, wait, &shown)?);
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // The first connection is the pool's first: the pool adopts it (lending it once and
        // taking it back), so it serves the first transaction and is closed by the pool's idle
        // and lifetime bounds like any other.
        let manager = Manager {
            config: config.clone(),
            spare: Mutex::new(Some(first)),
            stats: Arc::clone(&stats),
        };
        let pool = r2d2::Pool::builder()
            .max_size(MAX_CONNECTIONS)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .idle_timeout(Some(IDLE_TIMEOUT))
            .max_lifetime(Some(MAX_LIFETIME))
            .connection_timeout(wait)
            .build_unchecked(manager);
        let inner = Self { pool, config: Box::new(config), shown, read_only, wait, stats };
        drop(inner.take()?);
        Ok(inner)
    }

    /// The URL without its password.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// What this handle asked of the server so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    fn take(&self) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool.get().map_err(|e| Error::Connect {
            url: self.shown.clone().into(),
            reason: e.to_string().into(),
        })
    }

    /// Runs `f` in a transaction: READ COMMITTED for writes (each store takes the row locks it
    /// needs), a read-only REPEATABLE READ snapshot for reads.
    ///
    /// The transaction's BEGIN (one statement with its isolation level and access mode) is the
    /// check of the connection it runs on: a connection the server or a proxy ended while it
    /// sat in the pool (during a long LLM call, a server restart) fails it before anything of
    /// the transaction ran, so it is dropped and the transaction begins on another — a fresh
    /// one once the pool has none left. A failure after BEGIN is the transaction's and is
    /// returned: by then `f` may have seen results, and only it could start over.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn run<T, E: From<Error>>(
        &self,
        write: bool,
        f: impl FnOnce(&PgTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.run_noting(write, &StdCell::new(false), f)
    }

    /// As [`run`](Self::run), setting `gave_up` when a statement of the transaction waited out
    /// `lock_timeout` (its error is [`Error::Locked`], naming this database and the time since
    /// the transaction started, as on SQLite).
    pub(crate) fn run_noting<T, E: From<Error>>(
        &self,
        write: bool,
        gave_up: &StdCell<bool>,
        f: impl FnOnce(&PgTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        if write && self.read_only {
            return Err(Error::ReadOnly { path: self.shown.clone().into() }.into());
        }
        let started = Instant::now();
        let (isolation, read_only) = if write {
            (IsolationLevel::ReadCommitted, false)
        } else {
            (IsolationLevel::RepeatableRead, true)
        };
        let mut conn = self.take()?;
        let mut attempt = 1;
        loop {
            if attempt > 1 {
                // The dead one goes back to the pool, which drops it.
                conn = self.take()?;
            }
            let PgConn { client, statements, broken } = &mut *conn;
            let client = client.as_mut().ok_or_else(PgConn::closed)?;
            self.stats.round_trip();
            let begun =
                client.build_transaction().isolation_level(isolation).read_only(read_only).start();
            let tx = match begun {
                Ok(tx) => tx,
                Err(e) if is_broken(&e) && attempt < BEGIN_ATTEMPTS => {
                    tracing::debug!(url = %self.shown, error = %e, "replacing a dead connection");
                    *broken = true;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    *broken |= is_broken(&e);
                    return Err(Error::from_postgres(e).into());
                }
            };
            let cell = PgTx {
                tx: RefCell::new(tx),
                statements: RefCell::new(statements),
                broken: StdCell::from_mut(broken),
                stats: &self.stats,
                lent: StdCell::new(false),
                waits: Waits { shown: &self.shown, started, gave_up },
            };
            return match f(&cell) {
                Ok(value) => cell.finish(true).map(|()| value).map_err(E::from),
                Err(e) => {
                    // The transaction's error is the one to report, whatever the rollback says.
                    let _ = cell.finish(false);
                    Err(e)
                }
            };
        }
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
    /// Runs one statement as a transaction of its own: sent without BEGIN and COMMIT, it
    /// commits by itself, in one round trip once it is prepared on the connection.
    ///
    /// A connection found gone before the statement was sent (while preparing it) is dropped
    /// and the statement tried on another, as a transaction's BEGIN is. Found gone after it was
    /// sent, the outcome is [`Error::OutcomeUnknown`]: the server may have committed it.
    pub(crate) fn execute_alone(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        self.execute_alone_values(sql, &as_sql(params))
    }

    /// [`execute_alone`](Self::execute_alone) of `sql` taking `params`, then `rows` as one
    /// array per column (see [`Database::execute_alone_rows`](crate::Database::execute_alone_rows)).
    pub(crate) fn execute_alone_rows(
        &self,
        sql: &str,
        params: &[Param<'_>],
        rows: &[&[Param<'_>]],
    ) -> Result<u64> {
        let width = rows.first().map_or(0, |row| row.len());
        if let Some(row) = rows.iter().find(|row| row.len() != width) {
            return Err(Error::InvalidInput {
                what: "rows",
                reason: format!("a row has {} values, the first {width}", row.len()).into(),
            });
        }
        let columns: Vec<Vec<&Bound<'_>>> =
            (0..width).map(|c| rows.iter().map(|row| row[c].bound()).collect()).collect();
        let mut values = as_sql(params);
        values.extend(columns.iter().map(|c| c as &(dyn ToSql + Sync)));
        self.execute_alone_values(sql, &values)
    }

    fn execute_alone_values(&self, sql: &str, values: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        if self.read_only {
            return Err(Error::ReadOnly { path: self.shown.clone().into() });
        }
        let gave_up = StdCell::new(false);
        let waits = Waits { shown: &self.shown, started: Instant::now(), gave_up: &gave_up };
        let mut attempt = 1;
        loop {
            let mut conn = self.take()?;
            let PgConn { client, statements, broken } = &mut *conn;
            let client = client.as_mut().ok_or_else(PgConn::closed)?;
            let stmt = match statements.by_sql.get(sql) {
                Some(stmt) => stmt.clone(),
                None => {
                    self.stats.round_trip();
                    match client.prepare(&dollar_params(sql)) {
                        Ok(stmt) => {
                            statements.by_sql.insert(sql.to_owned(), stmt.clone());
                            stmt
                        }
                        Err(e) if is_broken(&e) && attempt < BEGIN_ATTEMPTS => {
                            *broken = true;
                            attempt += 1;
                            continue;
                        }
                        Err(e) => {
                            *broken |= is_broken(&e);
                            return Err(waits.error(e));
                        }
                    }
                }
            };
            self.stats.round_trip();
            return client.execute(&stmt, values).map_err(|e| {
                if is_broken(&e) {
                    *broken = true;
                    return Error::OutcomeUnknown {
                        path: self.shown.clone().into(),
                        reason: e.to_string().into(),
                    };
                }
                waits.error(e)
            });
        }
    }

    /// A [`Listener`] on `channel` (a fixed name: it is written into the statement).
    pub(crate) fn listen(&self, channel: &'static str) -> Result<Listener> {
        let mut listener = Listener {
            conn: PgConn { client: None, statements: Prepared::default(), broken: false },
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
                self.conn = PgConn { client: None, statements: Prepared::default(), broken: false };
                self.connect()?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(Error::from_postgres(e)),
        }
    }
}

/// What a transaction's lock waits that run out are told with.
struct Waits<'c> {
    /// The database, as [`Error::Locked`] names it (without its password).
    shown: &'c str,
    /// When the transaction started (waiting for a pooled connection included).
    started: Instant,
    /// Set when a lock wait ran out.
    gave_up: &'c StdCell<bool>,
}

impl Waits<'_> {
    /// `e` as this crate's error: a lock wait past `lock_timeout` (SQLSTATE 55P03) is
    /// [`Error::Locked`], as a wait past SQLite's busy timeout is; any other as it is.
    fn error(&self, e: postgres::Error) -> Error {
        if waited_out_a_lock(&e) {
            self.gave_up.set(true);
            return Error::locked(std::path::Path::new(self.shown), self.started.elapsed());
        }
        Error::from_postgres(e)
    }
}

/// A PostgreSQL transaction as a [`Tx`](crate::Tx) holds it.
pub(crate) struct PgTx<'c> {
    tx: RefCell<Transaction<'c>>,
    statements: RefCell<&'c mut Prepared>,
    /// The connection's flag: set when an exchange finds the connection gone.
    broken: &'c StdCell<bool>,
    stats: &'c Stats,
    /// Whether the escape hatch lent the driver's transaction: what failed through it is not
    /// seen by this crate, so the transaction is checked before it commits.
    lent: StdCell<bool>,
    waits: Waits<'c>,
}

impl std::fmt::Debug for PgTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgTx")
    }
}

impl<'c> PgTx<'c> {
    /// The driver's transaction, to run a statement on; an error, not a panic, while
    /// [`Tx::text_rows`](crate::Tx::text_rows) hands over the rows of a COPY (the connection
    /// streams them, and no other statement can run until they end).
    fn tx_mut(&self) -> Result<std::cell::RefMut<'_, Transaction<'c>>> {
        self.tx.try_borrow_mut().map_err(|_| Error::InvalidInput {
            what: "statement",
            reason: "no statement can run on PostgreSQL while Tx::text_rows hands over rows (the connection is streaming them): read what the rows need first, or after".into(),
        })
    }

    /// `e` as this crate's error; a connection it shows gone is marked so the pool drops it.
    fn fail(&self, e: postgres::Error) -> Error {
        if is_broken(&e) {
            self.broken.set(true);
        }
        self.waits.error(e)
    }

    /// Commits (`commit`) or rolls back the transaction. A connection whose rollback fails is
    /// marked broken: it may still be inside the transaction.
    fn finish(self, commit: bool) -> Result<()> {
        if commit && self.lent.get() {
            // A statement that failed through the escape hatch aborted the transaction, which
            // the server would answer COMMIT for with ROLLBACK, reported by the driver as
            // success: a statement in an aborted transaction fails instead (25P02).
            self.stats.round_trip();
            let checked = self.tx.borrow_mut().batch_execute("SELECT 1");
            if let Err(e) = checked {
                let e = self.fail(e);
                let _ = self.finish(false);
                return Err(e);
            }
        }
        let Self { tx, broken, stats, waits, .. } = self;
        stats.round_trip();
        let ended = if commit { tx.into_inner().commit() } else { tx.into_inner().rollback() };
        match ended {
            // A ROLLBACK that a late cancel of a COPY interrupted (see `copy_rows`): the
            // connection is dropped, which ends the transaction the same way.
            Err(e) if !commit && e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) => {
                broken.set(true);
                Ok(())
            }
            ended => ended.map_err(|e| {
                if !commit || is_broken(&e) {
                    broken.set(true);
                }
                waits.error(e)
            }),
        }
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
    fn fetch(
        &self,
        portal: &postgres::Portal,
        rows: i32,
        into: &mut VecDeque<postgres::Row>,
    ) -> Result<usize>;
    fn batch_execute(&self, sql: &str) -> Result<()>;
    /// Runs `setup` with `settings` as its parameters (when given), then `copy` (a `COPY …
    /// TO STDOUT (FORMAT binary)`), handing each row's raw cells to `row` until it answers
    /// `false`; returns how many rows it was given.
    fn copy_rows(
        &self,
        setup: Option<(&str, &[&(dyn ToSql + Sync)])>,
        copy: &str,
        row: &mut dyn FnMut(&RawCells<'_>) -> Result<bool>,
    ) -> Result<u64>;
    fn insert_rows(&self, one_row: &str, insert: &str, rows: &[&[Param<'_>]]) -> Result<usize>;
    /// Lends the driver's transaction to `f` (the escape hatch, [`crate::Tx::postgres`]).
    fn with_transaction(&self, f: &mut dyn FnMut(&mut Transaction<'_>));
}

impl PgAccess for PgTx<'_> {
    fn with_transaction(&self, f: &mut dyn FnMut(&mut Transaction<'_>)) {
        // Not while the rows of a COPY are handed over (see `tx_mut`): `f` is not called.
        if let Ok(mut tx) = self.tx.try_borrow_mut() {
            self.lent.set(true);
            f(&mut tx);
        }
    }

    fn prepare(&self, sql: &str) -> Result<Statement> {
        if let Some(stmt) = self.statements.borrow().by_sql.get(sql) {
            return Ok(stmt.clone());
        }
        self.stats.round_trip();
        let stmt = self.tx_mut()?.prepare(&dollar_params(sql)).map_err(|e| self.fail(e))?;
        self.statements.borrow_mut().by_sql.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    fn execute(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.stats.round_trip();
        self.tx_mut()?.execute(stmt, params).map_err(|e| self.fail(e))
    }

    /// One round trip: the statement runs on the unnamed portal and its first row is kept (a
    /// statement that gives more has the server make them all; the stores' one-row queries
    /// give one).
    fn query_first(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<postgres::Row>> {
        use postgres::fallible_iterator::FallibleIterator;
        self.stats.round_trip();
        let mut tx = self.tx_mut()?;
        let mut rows = tx.query_raw(stmt, params.iter().copied()).map_err(|e| self.fail(e))?;
        let first = rows.next().map_err(|e| self.fail(e))?;
        // The rest is read here, not dropped: an error the server raises on a later row (a cast
        // that fails on the second row) ends the transaction, and would otherwise go unseen
        // until COMMIT, which the server then answers with ROLLBACK.
        // (A finished stream is not asked again: it would answer "connection closed".)
        if first.is_some() {
            while rows.next().map_err(|e| self.fail(e))?.is_some() {}
        }
        Ok(first)
    }

    fn bind(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<postgres::Portal> {
        self.stats.round_trip();
        self.tx_mut()?.bind(stmt, params).map_err(|e| self.fail(e))
    }

    /// Up to `rows` rows of `portal`, appended to `into` as they come (its room is reused from
    /// batch to batch); returns how many came.
    fn fetch(
        &self,
        portal: &postgres::Portal,
        rows: i32,
        into: &mut VecDeque<postgres::Row>,
    ) -> Result<usize> {
        self.stats.round_trip();
        // The whole batch in one call: the driver enters its runtime once per batch, where
        // stepping a raw row stream enters it once per row (a third of a listing's time).
        let batch = self.tx_mut()?.query_portal(portal, rows).map_err(|e| self.fail(e))?;
        let came = batch.len();
        into.extend(batch);
        Ok(came)
    }

    fn batch_execute(&self, sql: &str) -> Result<()> {
        self.stats.round_trip();
        self.tx_mut()?.batch_execute(sql).map_err(|e| self.fail(e))
    }

    fn copy_rows(
        &self,
        setup: Option<(&str, &[&(dyn ToSql + Sync)])>,
        copy: &str,
        row: &mut dyn FnMut(&RawCells<'_>) -> Result<bool>,
    ) -> Result<u64> {
        let mut tx = self.tx_mut()?;
        if let Some((sql, settings)) = setup {
            self.stats.round_trip();
            tx.execute(sql, settings).map_err(|e| self.fail(e))?;
        }
        self.stats.round_trip();
        let cancel = tx.cancel_token();
        let mut reader = tx.copy_out(copy).map_err(|e| self.fail(e))?;
        let read = read_binary_copy(&mut reader, row);
        if matches!(read, Ok((_, false)) | Err(CopyFailed::Caller(_))) {
            // Stopped before the end: the server would otherwise send the rest, and the
            // transaction's end would wait for all of it (`export | head` of a large log).
            // The COPY is cancelled and what is in flight read to its (now near) end. A
            // cancel that lands after the COPY ended may hit the next statement instead, so
            // the connection is not reused (see `finish` for the ROLLBACK it may hit).
            self.broken.set(true);
            if cancel.cancel_query(NoTls).is_ok() {
                use std::io::BufRead as _;
                while let Ok(n) = reader.fill_buf().map(<[u8]>::len) {
                    if n == 0 {
                        break;
                    }
                    reader.consume(n);
                }
            }
        }
        read.map(|(rows, _)| rows).map_err(|e| match e {
            CopyFailed::Server(e) => self.fail(e),
            CopyFailed::Caller(e) => e,
        })
    }

    /// The rows in INSERTs of up to [`INSERT_CHUNK`] rows, each one round trip: `insert`
    /// followed by `SELECT * FROM unnest($1::T1[], …, $N::TN[])`, one array per column, typed
    /// as `one_row`'s prepared parameters are. Its text does not depend on the row count, so
    /// it is prepared once per connection: no batch is parsed or planned again, whatever its
    /// size and width, and the server keeps one small statement for it (a multi-row `VALUES`
    /// is a statement per row count, a thousand rows of twenty columns megabytes of server
    /// memory each). One row alone is `one_row` itself.
    fn insert_rows(&self, one_row: &str, insert: &str, rows: &[&[Param<'_>]]) -> Result<usize> {
        let stmt = self.prepare(one_row)?;
        if let [row] = rows {
            let n = self.execute(&stmt, &as_sql(row))?;
            return Ok(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let types = stmt.params().to_vec();
        let width = types.len();
        if let Some(row) = rows.iter().find(|row| row.len() != width) {
            return Err(Error::InvalidInput {
                what: "rows to insert",
                reason: format!("a row has {} values for {width} columns", row.len()).into(),
            });
        }
        let stmt = self.prepare(&unnest_insert(insert, &types))?;
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let columns: Vec<Vec<&Bound<'_>>> =
                (0..width).map(|c| chunk.iter().map(|row| row[c].bound()).collect()).collect();
            let values: Vec<&(dyn ToSql + Sync)> =
                columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            let n = self.execute(&stmt, &values)?;
            inserted += usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(inserted)
    }
}

/// `insert` followed by `SELECT * FROM unnest(?1::T1[], …)`, an array of each column's type,
/// the types named with their schema (a domain outside the search path included).
fn unnest_insert(insert: &str, types: &[Type]) -> String {
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("?{}::\"{}\".\"{}\"[]", i + 1, t.schema(), t.name()))
        .collect();
    format!("{insert} SELECT * FROM unnest({})", arrays.join(", "))
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
        Ok(Rows {
            tx: self.tx,
            portal,
            buffer: VecDeque::new(),
            done: false,
            current: None,
            fetch: FIRST_FETCH,
        })
    }
}

/// Rows read from a portal, a batch at a time: [`FIRST_FETCH`] rows, then as many as fit in
/// about [`FETCH_BYTES`] at the size the rows so far took.
pub(crate) struct Rows<'s> {
    tx: &'s (dyn PgAccess + 's),
    portal: postgres::Portal,
    buffer: VecDeque<postgres::Row>,
    done: bool,
    /// The row last returned.
    current: Option<postgres::Row>,
    /// Rows the next fetch asks for.
    fetch: i32,
}

impl Rows<'_> {
    pub(crate) fn next(&mut self) -> Result<Option<&postgres::Row>> {
        if self.buffer.is_empty() && !self.done {
            let came = self.tx.fetch(&self.portal, self.fetch, &mut self.buffer)?;
            self.done = came < usize::try_from(self.fetch).unwrap_or(0);
            self.fetch = next_fetch(&self.buffer, self.fetch);
        }
        self.current = self.buffer.pop_front();
        Ok(self.current.as_ref())
    }
}

/// What a fetched row costs in memory: its bytes and the driver's bookkeeping of it (a range
/// per column, the row itself).
fn row_cost(row: &postgres::Row) -> usize {
    row.raw_size_bytes() + 24 * row.len() + 64
}

/// The rows the fetch after `batch` asks for: as many as fit in [`FETCH_BYTES`] at the size
/// `batch`'s rows took, between 1 and [`MAX_FETCH`] (`asked` again after an empty batch).
fn next_fetch(batch: &VecDeque<postgres::Row>, asked: i32) -> i32 {
    if batch.is_empty() {
        return asked;
    }
    let bytes: usize = batch.iter().map(row_cost).sum();
    let rows = FETCH_BYTES.saturating_mul(batch.len()) / bytes.max(1);
    i32::try_from(rows).unwrap_or(MAX_FETCH).clamp(1, MAX_FETCH)
}

/// Applies the migrations this build has and the database lacks on `conn` (of the database
/// `shown`), in one transaction that first takes the migration lock: of processes starting at
/// once, one applies them, the others wait and then find nothing to do.
fn migrate_on(conn: &mut PgConn, shown: &str, sets: &[MigrationSet]) -> Result<Vec<i64>> {
    let started = Instant::now();
    let mut tx = conn.client()?.transaction().map_err(Error::from_postgres)?;
    // Another process migrating for longer than the busy timeout is a lock held past it.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(|e| {
        if waited_out_a_lock(&e) {
            Error::locked(std::path::Path::new(shown), started.elapsed())
        } else {
            Error::from_postgres(e)
        }
    })?;
    let found = applied_version(&mut tx).map_err(Error::from_postgres)?;
    let latest = latest_version();
    if found > latest {
        return Err(Error::NewerSchema { path: shown.into(), found, supported: latest });
    }
    let report = embedded::migrations::runner()
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run(&mut InTransaction(&mut tx))
        .map_err(|e| Error::Migrate { path: shown.into(), reason: e.to_string().into() })?;
    sets::apply(&mut PgHistory(&mut tx, None), sets, Backend::Postgres, Path::new(shown))?;
    tx.commit().map_err(Error::from_postgres)?;
    let applied: Vec<i64> =
        report.applied_migrations().iter().map(|m| i64::from(m.version())).collect();
    tracing::info!(url = %shown, ?applied, "migrated database");
    Ok(applied)
}

/// Column `index` of `row` as a [`Cell`]. Whole numbers, reals and text are read as such (a
/// boolean as 0 or 1); any other type is an error naming it (cast it in the SQL).
pub(crate) fn cell(row: &postgres::Row, index: usize) -> Result<Cell<'_>> {
    use postgres::types::Type;
    let Some(column) = row.columns().get(index) else {
        return Err(Error::ColumnType { index, expected: "a column", found: "none" });
    };
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

/// Column `index` of `row` as the bytes the server sent, when it is a text or bytea value (text
/// comes as UTF-8, the connection's client encoding); None for NULL and other types.
pub(crate) fn stored_bytes(row: &postgres::Row, index: usize) -> Result<Option<&[u8]>> {
    /// A text or bytea value's bytes, taken as they are.
    struct Stored<'a>(&'a [u8]);
    impl<'a> postgres::types::FromSql<'a> for Stored<'a> {
        fn from_sql(
            _: &postgres::types::Type,
            raw: &'a [u8],
        ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Self(raw))
        }
        fn accepts(ty: &postgres::types::Type) -> bool {
            use postgres::types::Type;
            matches!(
                *ty,
                Type::TEXT
                    | Type::VARCHAR
                    | Type::BPCHAR
                    | Type::NAME
                    | Type::UNKNOWN
                    | Type::BYTEA
            )
        }
    }
    let accepted = row
        .columns()
        .get(index)
        .is_some_and(|c| <Stored<'_> as postgres::types::FromSql<'_>>::accepts(c.type_()));
    if !accepted {
        return Ok(None);
    }
    let stored = row.try_get::<_, Option<Stored<'_>>>(index).map_err(Error::from_postgres)?;
    Ok(stored.map(|s| s.0))
}

/// The cells of one row of a binary COPY, as the server sent them: NULL is None.
#[derive(Debug)]
pub(crate) struct RawCells<'a> {
    bytes: &'a [u8],
    cells: &'a [Option<Range<usize>>],
}

impl RawCells<'_> {
    /// How many cells the row has.
    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }

    /// Cell `i`'s bytes in the binary format of its column's type; None for NULL.
    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        self.cells.get(i).cloned().flatten().and_then(|r| self.bytes.get(r))
    }
}

/// Why reading a COPY stopped.
enum CopyFailed {
    Server(postgres::Error),
    Caller(Error),
}

/// What starts the binary COPY format: its signature, then a flags word and the length of a
/// header extension.
const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Reads a `COPY … TO STDOUT (FORMAT binary)` stream (the server's documented format: a
/// header; per row a 16-bit cell count, then per cell a 32-bit length, -1 for NULL, and that
/// many bytes; a count of -1 ends it), handing each row to `row` until it answers `false`.
/// A row may span the driver's messages: what is not yet a whole row waits for the next.
fn read_binary_copy(
    reader: &mut impl std::io::BufRead,
    row: &mut dyn FnMut(&RawCells<'_>) -> Result<bool>,
) -> std::result::Result<(u64, bool), CopyFailed> {
    // What came and is not yet a whole row (the driver hands over a message at a time, a row
    // per message as the server sends them, so this is most often empty and rows are read in
    // place).
    let mut pending: Vec<u8> = Vec::new();
    let mut reading = CopyReading { header: true, rows: 0, cells: Vec::new() };
    loop {
        let chunk = reader.fill_buf().map_err(copy_read_error)?;
        if chunk.is_empty() {
            return Err(malformed("it ended inside a row"));
        }
        let n = chunk.len();
        let step = if pending.is_empty() {
            let step = reading.rows_in(chunk, row)?;
            if let Step::More(used) = step {
                pending.extend_from_slice(&chunk[used..]);
            }
            step
        } else {
            pending.extend_from_slice(chunk);
            let step = reading.rows_in(&pending, row)?;
            if let Step::More(used) = step {
                pending.drain(..used);
            }
            step
        };
        reader.consume(n);
        match step {
            Step::More(_) => {}
            Step::Stopped => return Ok((reading.rows, false)),
            Step::Ended(trailing) => {
                // Nothing follows the trailer but the end of the stream.
                let mut after = trailing;
                loop {
                    let n = reader.fill_buf().map_err(copy_read_error)?.len();
                    if n == 0 {
                        break;
                    }
                    after += n;
                    reader.consume(n);
                }
                if after > 0 {
                    return Err(malformed("bytes follow its trailer"));
                }
                return Ok((reading.rows, true));
            }
        }
    }
}

/// What [`CopyReading::rows_in`] did with the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// It read whole rows (and the header) up to here; the rest waits for more.
    More(usize),
    /// The reader of the rows asked for no more.
    Stopped,
    /// The trailer came, and this many bytes after it.
    Ended(usize),
}

/// The state of a binary COPY being read.
struct CopyReading {
    header: bool,
    rows: u64,
    cells: Vec<Option<Range<usize>>>,
}

impl CopyReading {
    /// Reads the header, if it is still to come, and every whole row at the start of `data`.
    fn rows_in(
        &mut self,
        data: &[u8],
        row: &mut dyn FnMut(&RawCells<'_>) -> Result<bool>,
    ) -> std::result::Result<Step, CopyFailed> {
        let mut at = 0;
        if self.header {
            let Some(ext) = data.get(15..19) else { return Ok(Step::More(0)) };
            if &data[..COPY_SIGNATURE.len()] != COPY_SIGNATURE {
                return Err(malformed("no signature"));
            }
            // Bit 16 says each row carries an OID, and bits 0 to 15 are reserved for changes a
            // reader must not read past (bits 17 to 31 may be ignored, says the format).
            let flags = u32::from_be_bytes([data[11], data[12], data[13], data[14]]);
            if flags & 0x0001_ffff != 0 {
                return Err(malformed("flags it does not know"));
            }
            let ext = i32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
            let ext = usize::try_from(ext).map_err(|_| malformed("a negative header length"))?;
            if data.len() < 19 + ext {
                return Ok(Step::More(0));
            }
            at = 19 + ext;
            self.header = false;
        }
        loop {
            let Some(count) = data.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
                return Ok(Step::More(at));
            };
            if count == -1 {
                return Ok(Step::Ended(data.len() - at - 2));
            }
            let count = usize::try_from(count).map_err(|_| malformed("a negative cell count"))?;
            self.cells.clear();
            let mut i = at + 2;
            for _ in 0..count {
                let Some(len) =
                    data.get(i..i + 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                else {
                    return Ok(Step::More(at));
                };
                i += 4;
                if len < 0 {
                    self.cells.push(None);
                    continue;
                }
                let len = usize::try_from(len).map_err(|_| malformed("a cell length"))?;
                if data.len() < i + len {
                    return Ok(Step::More(at));
                }
                self.cells.push(Some(i..i + len));
                i += len;
            }
            self.rows += 1;
            if !row(&RawCells { bytes: data, cells: &self.cells }).map_err(CopyFailed::Caller)? {
                return Ok(Step::Stopped);
            }
            at = i;
        }
    }
}

/// The error for a binary COPY stream that does not follow the format.
fn malformed(why: &str) -> CopyFailed {
    CopyFailed::Caller(Error::InvalidInput {
        what: "COPY stream",
        reason: format!("the server's binary COPY is malformed: {why}").into(),
    })
}

/// A read of the COPY stream that failed: the server's error when it is one.
fn copy_read_error(e: std::io::Error) -> CopyFailed {
    match e.into_inner().map(|inner| inner.downcast::<postgres::Error>()) {
        Some(Ok(pg)) => CopyFailed::Server(*pg),
        Some(Err(other)) => CopyFailed::Caller(Error::InvalidInput {
            what: "COPY stream",
            reason: other.to_string().into(),
        }),
        None => CopyFailed::Caller(Error::InvalidInput {
            what: "COPY stream",
            reason: "the read failed".into(),
        }),
    }
}

/// How [`Tx::text_rows`](crate::Tx::text_rows) runs `sql` (prepared as `stmt`) with
/// `params` as a COPY: the statement that puts the parameters in settings of the transaction,
/// their values (bound to it as text), and the COPY, each parameter written as its setting
/// read back and cast to the parameter's type (NULL as a typed NULL). None when a parameter is
/// not text or a whole number of a column of that type.
pub(crate) fn copy_of(
    sql: &str,
    stmt: &Statement,
    params: &[Param<'_>],
) -> Option<(String, Vec<String>, String)> {
    use postgres::types::Type;
    let types = stmt.params();
    if types.len() != params.len() {
        return None;
    }
    let mut settings = Vec::new();
    let mut exprs = Vec::with_capacity(params.len());
    for (param, ty) in params.iter().zip(types) {
        let (cast, text) = match *ty {
            Type::TEXT => ("text", true),
            Type::VARCHAR => ("varchar", true),
            Type::INT8 => ("int8", false),
            Type::INT4 => ("int4", false),
            Type::INT2 => ("int2", false),
            _ => return None,
        };
        let value = match param.bound() {
            Bound::Null => {
                exprs.push(format!("NULL::{cast}"));
                continue;
            }
            Bound::Text(t) if text => t.to_string(),
            Bound::Integer(n) if !text => n.to_string(),
            _ => return None,
        };
        settings.push(value);
        exprs.push(format!("current_setting('aigentflow.copy_{}')::{cast}", settings.len()));
    }
    let mut known = true;
    let query = params_written(sql, |n| match n.checked_sub(1).and_then(|k| exprs.get(k)) {
        Some(e) => format!("({e})"),
        None => {
            known = false;
            String::new()
        }
    });
    if !known {
        return None;
    }
    let setup = (1..=settings.len())
        .map(|k| format!("set_config('aigentflow.copy_{k}', ${k}, true)"))
        .collect::<Vec<_>>()
        .join(", ");
    Some((format!("SELECT {setup}"), settings, format!("COPY ({query}) TO STDOUT (FORMAT binary)")))
}

/// Appends a cell of a binary COPY (`raw`, of type `ty`) as the text [`Row::append_bytes`]
/// gives for the same cell read through a query: text and bytea as stored, whole numbers and
/// booleans (0, 1) in decimal, reals as Rust writes them.
///
/// [`Row::append_bytes`]: crate::Row::append_bytes
pub(crate) fn append_copied(
    ty: &postgres::types::Type,
    raw: &[u8],
    index: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    use postgres::types::{FromSql, Type};
    use std::io::Write as _;
    let read = |e| Error::ColumnType { index, expected: "a cell of its type", found: e };
    match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::BYTEA => {
            out.extend_from_slice(raw);
        }
        Type::INT8 => drop(write!(out, "{}", i64::from_sql(ty, raw).map_err(|_| read("bigint"))?)),
        Type::INT4 => drop(write!(out, "{}", i32::from_sql(ty, raw).map_err(|_| read("integer"))?)),
        Type::INT2 => {
            drop(write!(out, "{}", i16::from_sql(ty, raw).map_err(|_| read("smallint"))?))
        }
        Type::BOOL => drop(write!(
            out,
            "{}",
            i64::from(bool::from_sql(ty, raw).map_err(|_| read("boolean"))?)
        )),
        Type::FLOAT8 => drop(write!(out, "{}", f64::from_sql(ty, raw).map_err(|_| read("real"))?)),
        Type::FLOAT4 => {
            drop(write!(out, "{}", f64::from(f32::from_sql(ty, raw).map_err(|_| read("real"))?)))
        }
        _ => {
            return Err(Error::ColumnType {
                index,
                expected: "bigint, double precision, boolean or text",
                found: "another type",
            })
        }
    }
    Ok(())
}

/// `sql` with SQLite's `?N` (and bare `?`) parameters written as PostgreSQL's `$N`, outside
/// string literals, quoted identifiers and comments.
pub(crate) fn dollar_params(sql: &str) -> String {
    params_written(sql, |n| format!("${n}"))
}

/// `sql` with each of SQLite's `?N` (and bare `?`) parameters, outside string literals, quoted
/// identifiers and comments, written as `write(N)`.
pub(crate) fn params_written(sql: &str, mut write: impl FnMut(usize) -> String) -> String {
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
                let n = if digits.is_empty() {
                    next_bare += 1;
                    next_bare - 1
                } else {
                    digits.parse().unwrap_or(usize::MAX)
                };
                out.push_str(&write(n));
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

/// Whether the table named by the statement's first parameter is in the schema this connection
/// makes its tables in (`current_schema()`, the first schema of its `search_path` that exists:
/// `public`, or a schema of the role's own, as PostgreSQL 15 recommends), where the migrations
/// made the schema's tables. False when no schema of the path exists.
pub(crate) const TABLE_EXISTS: &str = "SELECT CASE WHEN current_schema() IS NULL THEN FALSE
     ELSE to_regclass(format('%I.%I', current_schema(), $1::text)) IS NOT NULL END";

/// The newest migration applied to the database of `tx`, a PostgreSQL transaction.
pub(crate) fn applied_in(tx: &crate::Tx<'_>) -> Result<i64> {
    let found =
        tx.query_row(TABLE_EXISTS, &[crate::Param::text(HISTORY_TABLE)], |r| r.get::<bool>(0))?;
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
    let row = client.query_one(TABLE_EXISTS, &[&HISTORY_TABLE])?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row =
        client.query_one(&format!("SELECT MAX(version)::BIGINT FROM {HISTORY_TABLE}"), &[])?;
    Ok(row.get::<_, Option<i64>>(0).unwrap_or(0))
}

/// The migration that adds the history of application migration sets (V4).
const SETS_VERSION: i64 = 4;

/// The sets' history on a PostgreSQL client (inside the opening's transaction when it writes).
struct PgHistory<'a, C: postgres::GenericClient>(&'a mut C, Option<i64>);

impl<C: postgres::GenericClient> History for PgHistory<'_, C> {
    fn recorded(&mut self) -> Result<Vec<Recorded>> {
        let exists =
            self.0.query_one(TABLE_EXISTS, &[&sets::HISTORY]).map_err(Error::from_postgres)?;
        if !exists.get::<_, bool>(0) {
            return Ok(Vec::new());
        }
        let rows = self.0.query(sets::SELECT_HISTORY, &[]).map_err(Error::from_postgres)?;
        rows.iter()
            .map(|r| {
                Ok(sets::parse_row(
                    r.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                ))
            })
            .collect::<std::result::Result<Vec<_>, postgres::Error>>()
            .map_err(Error::from_postgres)
    }

    fn same_transaction(&mut self) -> Result<bool> {
        // The transaction's id, assigned on first asking: after a COMMIT in a migration's SQL
        // the statements that follow run in transactions of their own, with other ids.
        let now: i64 = self
            .0
            .query_one("SELECT txid_current()", &[])
            .and_then(|r| r.try_get(0))
            .map_err(Error::from_postgres)?;
        Ok(*self.1.get_or_insert(now) == now)
    }

    /// Run by the server as one `EXECUTE` in a `DO` block, which refuses transaction control
    /// (SQLSTATE 0A000) before anything of the SQL ran: a statement sent as it is would
    /// commit what came before it and run what follows outside the opening's transaction.
    /// The server splits the statements itself, dollar quotes and function bodies included.
    fn apply(&mut self, sql: &str) -> Result<()> {
        let tag = |kind: &str| {
            (0u32..)
                .map(|n| format!("$aigentflow_{kind}_{n}$"))
                .find(|tag| !sql.contains(tag.as_str()))
                .unwrap_or_default()
        };
        let (body, text) = (tag("migration"), tag("sql"));
        let block = format!("DO {body} BEGIN EXECUTE {text}{sql}{text}; END {body}");
        self.0.batch_execute(&block).map_err(|e| {
            let control = e.as_db_error().is_some_and(|db| {
                db.code().code() == "0A000" && db.message().contains("transaction commands")
            });
            if control {
                // The word for the message: the first statement that starts with one.
                let word = sql.split(';').find_map(crate::bind::transaction_control);
                sets::transaction_control_refused(word.unwrap_or("a statement of"))
            } else {
                Error::from_postgres(e)
            }
        })
    }

    fn record(&mut self, set: &str, m: &AppMigration, checksum: &str) -> Result<()> {
        let now = aigentflow_core_states::time::to_db(chrono::Utc::now());
        self.0
            .execute(
                &dollar_params(sets::INSERT_HISTORY),
                &[&set, &i64::from(m.version()), &m.name(), &checksum, &now],
            )
            .map(drop)
            .map_err(Error::from_postgres)
    }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Barrier;

    /// Rows in the binary COPY format, as the server writes them.
    fn binary_copy(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = COPY_SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&3i32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for row in rows {
            out.extend_from_slice(&i16::try_from(row.len()).unwrap().to_be_bytes());
            for cell in row {
                match cell {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        out.extend_from_slice(&i32::try_from(bytes.len()).unwrap().to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// A reader that hands out `stream` in pieces of the given sizes, as the driver hands out
    /// the server's messages.
    struct Pieces {
        stream: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        next: usize,
    }

    impl std::io::Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let piece = self.fill()?;
            let n = piece.len().min(out.len());
            out[..n].copy_from_slice(&piece[..n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Pieces {
        fn fill(&mut self) -> std::io::Result<&[u8]> {
            let size =
                self.sizes.get(self.next % self.sizes.len().max(1)).copied().unwrap_or(1).max(1);
            let end = (self.at + size).min(self.stream.len());
            Ok(&self.stream[self.at..end])
        }
    }

    impl std::io::BufRead for Pieces {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            self.fill()
        }
        fn consume(&mut self, n: usize) {
            self.at += n;
            self.next += 1;
        }
    }

    fn read_all(
        stream: Vec<u8>,
        sizes: Vec<usize>,
        stop_after: Option<u64>,
    ) -> std::result::Result<Vec<Vec<Option<Vec<u8>>>>, String> {
        let mut got = Vec::new();
        let read = read_binary_copy(&mut Pieces { stream, at: 0, sizes, next: 0 }, &mut |raw| {
            got.push((0..raw.len()).map(|i| raw.get(i).map(<[u8]>::to_vec)).collect());
            Ok(stop_after.is_none_or(|n| (got.len() as u64) < n))
        });
        match read {
            Ok((n, whole)) => {
                assert_eq!(n, got.len() as u64);
                assert_eq!(whole, stop_after.is_none_or(|s| n < s));
                Ok(got)
            }
            Err(CopyFailed::Caller(e)) => Err(e.to_string()),
            Err(CopyFailed::Server(e)) => Err(e.to_string()),
        }
    }

    proptest! {
        /// Whatever pieces the stream comes in (a row across messages, many rows in one), every
        /// row is read whole and equal, NULL apart from empty; a stream cut anywhere before its
        /// end is an error naming it, never a panic or a short read taken for the whole; a
        /// reader that stops is given no more rows.
        #[test]
        fn a_binary_copy_is_read_row_by_row_whatever_its_pieces(
            rows in prop::collection::vec(
                prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..40)), 0..6),
                0..20,
            ),
            sizes in prop::collection::vec(1usize..64, 1..8),
            cut in any::<prop::sample::Index>(),
            stop in 1u64..5,
        ) {
            let stream = binary_copy(&rows);
            prop_assert_eq!(read_all(stream.clone(), sizes.clone(), None), Ok(rows.clone()));
            let at = cut.index(stream.len());
            let cut_short = read_all(stream[..at].to_vec(), sizes.clone(), None);
            prop_assert!(cut_short.as_ref().is_err_and(|e| e.contains("malformed")), "{:?}", cut_short);
            let stopped = read_all(stream.clone(), sizes.clone(), Some(stop)).unwrap();
            prop_assert_eq!(stopped.len(), rows.len().min(usize::try_from(stop).unwrap()));
            // Bytes after the trailer, and flags this reader does not know, are refused.
            let mut longer = stream.clone();
            longer.push(0);
            prop_assert!(read_all(longer, sizes.clone(), None).is_err_and(|e| e.contains("trailer")));
            let mut flagged = stream;
            flagged[13] = 1;
            prop_assert!(read_all(flagged, sizes, None).is_err_and(|e| e.contains("flags")));
        }
    }

    /// A fresh database on the server of `AIGENTFLOW_PG_URL`, dropped with the guard.
    pub(crate) struct Fresh {
        admin: String,
        name: String,
        pub(crate) url: String,
    }

    impl Drop for Fresh {
        fn drop(&mut self) {
            let dropped = postgres::Client::connect(&self.admin, NoTls).and_then(|mut admin| {
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            });
            if let Err(e) = dropped {
                eprintln!("drop the test database {}: {e}", self.name);
            }
        }
    }

    /// A fresh database, or None (after a line on stderr) when `AIGENTFLOW_PG_URL` is not set;
    /// with `AIGENTFLOW_REQUIRE_PG` set a missing URL fails the test instead.
    pub(crate) fn fresh() -> Option<Fresh> {
        let admin = match std::env::var("AIGENTFLOW_PG_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                let required =
                    std::env::var_os("AIGENTFLOW_REQUIRE_PG").is_some_and(|r| !r.is_empty());
                assert!(!required, "AIGENTFLOW_REQUIRE_PG is set but AIGENTFLOW_PG_URL is not");
                eprintln!("skipped: AIGENTFLOW_PG_URL is not set");
                return None;
            }
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "aigentflow_pgunit_{}_{}_{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        postgres::Client::connect(&admin, NoTls)
            .and_then(|mut c| c.batch_execute(&format!("CREATE DATABASE {name}")))
            .unwrap_or_else(|e| panic!("create {name}: {}", ConnectError::from(e)));
        let separator = match admin.rfind('?') {
            None => "?",
            Some(at) if at + 1 == admin.len() || admin.ends_with('&') => "",
            Some(_) => "&",
        };
        let url = format!("{admin}{separator}dbname={name}");
        Some(Fresh { admin, name, url })
    }

    impl Fresh {
        fn open(&self) -> PgInner {
            PgInner::open(&self.url, false, true, false, Duration::from_secs(30), &[]).unwrap()
        }

        /// A plain connection to the database, outside the pool.
        fn admin(&self) -> postgres::Client {
            postgres::Client::connect(&self.url, NoTls).unwrap()
        }

        /// Terminates the backends of `pids` and waits until they are gone.
        fn kill(&self, pids: &[i32]) {
            let mut admin = self.admin();
            for pid in pids {
                admin.execute("SELECT pg_terminate_backend($1)", &[pid]).unwrap();
            }
            let alive = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY($1)";
            for _ in 0..1000 {
                if admin.query_one(alive, &[&pids]).unwrap().get::<_, i64>(0) == 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("backends {pids:?} still alive after being terminated");
        }

        /// The backends of this database's pool (its connections, idle or not).
        fn pooled_pids(&self) -> Vec<i32> {
            self.admin()
                .query(
                    "SELECT pid FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name = 'aigentflow'",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        }
    }

    /// The round trips `f` costs on `db`, and its value.
    fn counted<T>(db: &PgInner, f: impl FnOnce() -> T) -> (u64, T) {
        let before = db.stats().round_trips();
        let value = f();
        (db.stats().round_trips() - before, value)
    }

    fn write<T>(db: &PgInner, f: impl FnOnce(&PgTx<'_>) -> Result<T>) -> Result<T> {
        db.run(true, f)
    }

    fn int(r: &postgres::Row, i: usize) -> i64 {
        match cell(r, i).unwrap() {
            Cell::Integer(n) => n,
            other => panic!("column {i}: {other:?}"),
        }
    }

    /// A transaction is its BEGIN, its statements and its COMMIT, one round trip each: no check
    /// of the connection before it, a one-row query in one exchange, a statement prepared once
    /// per connection. The connection the opening made serves the first transaction.
    #[test]
    fn a_transaction_costs_begin_its_statements_and_commit_on_postgres() {
        let Some(fresh) = fresh() else { return };
        let db = fresh.open();
        assert_eq!(db.stats().connections(), 1);
        let (trips, ()) = counted(&db, || {
            write(&db, |tx| tx.batch_execute("CREATE TABLE t (k BIGINT, v TEXT)")).unwrap()
        });
        assert_eq!(trips, 3, "BEGIN, the statement, COMMIT");
        assert_eq!(db.stats().connections(), 1, "the opening's connection served it");
        let insert = "INSERT INTO t (k, v) VALUES (?1, ?2)";
        let add = |k: i64| {
            write(&db, |tx| Stmt::prepare(tx, insert)?.execute(&[Param::int(k), Param::text("x")]))
        };
        assert_eq!(counted(&db, || add(1).unwrap()), (4, 1), "prepared once");
        assert_eq!(counted(&db, || add(2).unwrap()), (3, 1), "then taken from the cache");
        let get = "SELECT k FROM t WHERE k = ?1";
        let read = |k: i64| {
            db.run(false, |tx| {
                Ok::<_, Error>(
                    Stmt::prepare(tx, get)?.query_first(&[Param::int(k)])?.map(|r| int(&r, 0)),
                )
            })
        };
        assert_eq!(counted(&db, || read(2).unwrap()), (4, Some(2)));
        assert_eq!(counted(&db, || read(3).unwrap()), (3, None), "a one-row query is one exchange");
        // A query that gives several rows keeps its first, and the next exchange is clean.
        let (trips, first) = counted(&db, || {
            db.run(false, |tx| {
                let first = Stmt::prepare(tx, "SELECT k FROM t ORDER BY k")?.query_first(&[])?;
                let again = Stmt::prepare(tx, get)?.query_first(&[Param::int(1)])?;
                Ok::<_, Error>((first.map(|r| int(&r, 0)), again.map(|r| int(&r, 0))))
            })
            .unwrap()
        });
        assert_eq!((trips, first), (5, (Some(1), Some(1))));
        assert_eq!(db.stats().connections(), 1);
    }

    /// Connections the server ended while they sat idle in the pool (as a restart, a proxy or
    /// an idle timeout does during a long LLM call) never fail a transaction: its BEGIN finds
    /// each dead one and it begins on another, a fresh one once none is left. The closure runs
    /// once, on a live connection.
    #[test]
    fn connections_killed_while_idle_give_way_to_a_working_transaction_on_postgres() {
        let Some(fresh) = fresh() else { return };
        let db = fresh.open();
        write(&db, |tx| tx.batch_execute("CREATE TABLE t (k BIGINT)")).unwrap();
        for pooled in [1, 3, MAX_CONNECTIONS as usize] {
            // `pooled` transactions at once leave that many connections in the pool.
            let together = Barrier::new(pooled);
            std::thread::scope(|scope| {
                for _ in 0..pooled {
                    scope.spawn(|| {
                        db.run(false, |_| {
                            together.wait();
                            Ok::<_, Error>(())
                        })
                        .unwrap()
                    });
                }
            });
            let pids = fresh.pooled_pids();
            assert_eq!(pids.len(), pooled);
            fresh.kill(&pids);
            let made = db.stats().connections();
            let mut runs = 0;
            let pid = write(&db, |tx| {
                runs += 1;
                Stmt::prepare(tx, "INSERT INTO t (k) VALUES (?1)")?.execute(&[Param::int(1)])?;
                Ok(Stmt::prepare(tx, "SELECT pg_backend_pid()::BIGINT")?
                    .query_first(&[])?
                    .map(|r| int(&r, 0)))
            })
            .unwrap();
            assert_eq!(runs, 1);
            assert!(pid.is_some_and(|pid| !pids.contains(&(pid as i32))), "{pid:?} in {pids:?}");
            assert_eq!(db.stats().connections(), made + 1, "one fresh connection");
            assert_eq!(fresh.pooled_pids().len(), 1, "the dead ones were dropped");
        }
        let rows = fresh.admin().query_one("SELECT COUNT(*) FROM t", &[]).unwrap().get::<_, i64>(0);
        assert_eq!(rows, 3);
    }

    /// A connection lost after the transaction began fails the transaction, which is not run
    /// again (its closure may have acted on what it read); nothing of it is committed, and the
    /// next transaction runs on a fresh connection.
    #[test]
    fn a_connection_lost_inside_a_transaction_fails_it_without_running_it_again_on_postgres() {
        let Some(fresh) = fresh() else { return };
        let db = fresh.open();
        write(&db, |tx| tx.batch_execute("CREATE TABLE t (k BIGINT)")).unwrap();
        let mut runs = 0;
        let err = write(&db, |tx| {
            runs += 1;
            Stmt::prepare(tx, "INSERT INTO t (k) VALUES (?1)")?.execute(&[Param::int(1)])?;
            let pid = Stmt::prepare(tx, "SELECT pg_backend_pid()")?.query_first(&[])?;
            fresh.kill(&[pid.map(|r| int(&r, 0) as i32).unwrap_or_default()]);
            Stmt::prepare(tx, "INSERT INTO t (k) VALUES (?1)")?.execute(&[Param::int(2)])
        })
        .unwrap_err();
        assert_eq!(runs, 1);
        assert!(matches!(err, Error::Postgres { .. }), "{err:?}");
        let made = db.stats().connections();
        let read = db.run(false, |tx| {
            Ok::<_, Error>(
                Stmt::prepare(tx, "SELECT COUNT(*) FROM t")?.query_first(&[])?.map(|r| int(&r, 0)),
            )
        });
        assert_eq!(read.unwrap(), Some(0));
        assert_eq!(db.stats().connections(), made + 1);
    }

    /// A portal hands over rows by the megabyte: a long listing of small rows takes a few round
    /// trips (batches of 512 rows would take dozens), and after its first fetch a listing of
    /// large rows never holds much more than [`FETCH_BYTES`] at once, so memory stays flat
    /// whatever the row count. Every row comes, in order.
    #[test]
    fn portals_hand_over_rows_by_the_megabyte_on_postgres() {
        let Some(fresh) = fresh() else { return };
        let db = fresh.open();
        for (count, width, most_fetches) in [(30_000, 40, 5), (3_000, 16_384, 40)] {
            let sql = format!(
                "SELECT g::BIGINT, repeat('x', {width}) FROM generate_series(1, {count}) g"
            );
            let (fetches, largest) = db
                .run(false, |tx| {
                    let mut stmt = Stmt::prepare(tx, &sql)?;
                    let mut rows = stmt.query(&[])?;
                    let (mut seen, mut fetches, mut largest) = (0, 0, 0);
                    loop {
                        let fetching = rows.buffer.is_empty() && !rows.done;
                        let Some(row) = rows.next()? else { break };
                        let (id, cost) = (int(row, 0), row_cost(row));
                        seen += 1;
                        assert_eq!(id, seen);
                        if fetching {
                            fetches += 1;
                            if fetches > 1 {
                                largest = largest.max((rows.buffer.len() + 1) * cost);
                            }
                        }
                    }
                    assert_eq!(seen, count);
                    Ok::<_, Error>((fetches, largest))
                })
                .unwrap();
            assert!(fetches <= most_fetches, "{count} rows of {width} bytes: {fetches} fetches");
            assert!(largest <= FETCH_BYTES + width + 200, "a batch of {largest} bytes");
        }
    }

    /// A batch of rows is one statement prepared once per connection, whatever the batch's size
    /// (one round trip per thousand rows, nothing parsed or planned again, nothing more kept on
    /// the server per size), and every row is stored as given, in order.
    #[test]
    fn a_batch_of_any_size_is_one_statement_prepared_once_on_postgres() {
        let Some(fresh) = fresh() else { return };
        let db = fresh.open();
        write(&db, |tx| tx.batch_execute("CREATE TABLE t (n BIGINT, a TEXT, b TEXT, c BIGINT)"))
            .unwrap();
        let kept = |db: &PgInner| {
            write(db, |tx| {
                let stmt = tx.prepare("SELECT COUNT(*) FROM pg_prepared_statements")?;
                let count = tx.query_first(&stmt, &[])?.map(|r| int(&r, 0));
                Ok(count.unwrap_or(0))
            })
            .unwrap()
        };
        let mut next = 0;
        let mut batch = |size: i64| {
            let texts: Vec<String> = (next..next + size).map(|n| format!("row {n}")).collect();
            let rows: Vec<[Param<'_>; 4]> = (next..next + size)
                .zip(&texts)
                .map(|(n, t)| [Param::int(n), Param::text(t), Param::NULL, Param::int(-n)])
                .collect();
            next += size;
            let rows: Vec<&[Param<'_>]> = rows.iter().map(|r| &r[..]).collect();
            let one_row = "INSERT INTO t (n, a, b, c) VALUES (?1, ?2, ?3, ?4)";
            let (trips, inserted) = counted(&db, || {
                write(&db, |tx| tx.insert_rows(one_row, "INSERT INTO t (n, a, b, c)", &rows))
                    .unwrap()
            });
            assert_eq!(inserted, rows.len());
            trips - 2
        };
        assert_eq!(batch(1000), 3, "the one-row statement's types, the batch's statement, run");
        let prepared = kept(&db);
        for size in [999, 2, 996, 1000, 997] {
            assert_eq!(batch(size), 1, "{size} rows: prepared already");
        }
        assert_eq!(batch(2500), 3, "1000, 1000 and 500 rows");
        assert_eq!(batch(1), 1, "one row alone: the one-row statement");
        assert_eq!(kept(&db), prepared, "no statement per batch size");
        let mut admin = fresh.admin();
        let stored = "SELECT COUNT(*), COUNT(DISTINCT n), MIN(n), MAX(n), SUM(c) FROM t";
        let row = admin.query_one(stored, &[]).unwrap();
        let total = 1000 + 999 + 2 + 996 + 1000 + 997 + 2500 + 1;
        assert_eq!(row.get::<_, i64>(0), total);
        assert_eq!(row.get::<_, i64>(1), total);
        assert_eq!((row.get::<_, i64>(2), row.get::<_, i64>(3)), (0, total - 1));
        let in_order = "SELECT bool_and(a = 'row ' || n AND b IS NULL AND c = -n) FROM t";
        assert!(admin.query_one(in_order, &[]).unwrap().get::<_, bool>(0));
    }

    /// A state save costs its BEGIN, the task's lock with one read of the last stored
    /// transition and checkpoint, one statement for the task's row with its first new
    /// transition, one per further new row, and its COMMIT; every save is stored as given.
    #[test]
    fn a_state_save_costs_four_round_trips_and_one_per_further_row_on_postgres() {
        use aigentflow_core_states::{Event, StateContext, StateMachine, StateStore};
        let Some(fresh) = fresh() else { return };
        let db = crate::Database::open(&fresh.url).unwrap();
        let stats = db.pg_stats().unwrap();
        let states = crate::SqliteStateStore::new(db.clone());
        let mut context = StateContext::new("p".into(), "t".into(), "go");
        context.agent_queue.push("coder".into());
        let mut machine = StateMachine::new(context);
        let save = |machine: &StateMachine| {
            let before = stats.round_trips();
            states.save_state(machine.persisted()).unwrap();
            stats.round_trips() - before
        };
        // The first saves prepare their statements once on the connection: counted after.
        save(&machine);
        machine.apply(Event::Start, None).unwrap();
        save(&machine);
        assert_eq!(save(&machine), 4, "nothing new: the task's row only");
        machine.apply(Event::AnalysisComplete, None).unwrap();
        assert_eq!(save(&machine), 4, "one transition with the task's row");
        machine.apply(Event::SpawnAgent, None).unwrap();
        machine.create_checkpoint(vec!["a".into()]);
        save(&machine);
        machine.apply(Event::AgentDone, None).unwrap();
        machine.create_checkpoint(vec!["b".into()]);
        assert_eq!(save(&machine), 5, "a transition and a checkpoint");
        assert_eq!(states.load_state(&"t".into()).unwrap().as_ref(), Some(machine.persisted()));
    }

    proptest! {
        /// Every busy timeout becomes a `lock_timeout` the server takes that waits at least as
        /// long (whole milliseconds rounded up), up to the server's largest; none becomes 0,
        /// which the server would read as "wait forever".
        #[test]
        fn every_busy_timeout_is_a_lock_timeout_of_at_least_as_long_that_is_never_zero(
            secs in prop_oneof![0u64..4, 0u64..=u64::MAX],
            nanos in prop_oneof![0u32..3, 999_999_990u32..1_000_000_000, 0u32..1_000_000_000],
        ) {
            let wait = Duration::new(secs, nanos);
            let option = lock_timeout_option(wait);
            let ms: u128 = option
                .strip_prefix("-c lock_timeout=")
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| panic!("{option}"));
            prop_assert!((1..=MAX_LOCK_TIMEOUT_MS).contains(&ms), "{}", option);
            prop_assert!(ms >= wait.as_millis().min(MAX_LOCK_TIMEOUT_MS), "{} for {:?}", option, wait);
            prop_assert!(ms <= wait.as_millis() + 1 || ms == 1, "{} for {:?}", option, wait);
        }
    }

    /// Every connection of the pool waits for a lock as long as the busy timeout says, set when
    /// it starts; options the URL gives are kept, and a `lock_timeout` among them wins.
    #[test]
    fn connections_wait_for_locks_as_long_as_the_busy_timeout_and_keep_the_urls_options_on_postgres(
    ) {
        let Some(fresh) = fresh() else { return };
        let show = |db: &PgInner, setting: &str| {
            db.run(false, |tx| {
                let row = Stmt::prepare(tx, &format!("SHOW {setting}"))?.query_first(&[])?;
                Ok::<_, Error>(row.map(|r| r.get::<_, String>(0)))
            })
            .unwrap()
            .unwrap_or_default()
        };
        for (wait, shown) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(1), "1ms"),
            (Duration::ZERO, "1ms"),
            (Duration::from_secs(30), "30s"),
        ] {
            let db = PgInner::open(&fresh.url, false, true, false, wait, &[]).unwrap();
            // Several connections at once: each made by the pool has it, not only the first.
            let together = Barrier::new(3);
            let seen: Vec<String> = std::thread::scope(|scope| {
                let seen: Vec<_> = (0..3)
                    .map(|_| {
                        scope.spawn(|| {
                            db.run(false, |tx| {
                                together.wait();
                                let row =
                                    Stmt::prepare(tx, "SHOW lock_timeout")?.query_first(&[])?;
                                Ok::<_, Error>(row.map(|r| r.get::<_, String>(0)))
                            })
                            .unwrap()
                            .unwrap_or_default()
                        })
                    })
                    .collect();
                seen.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(seen, [shown; 3], "a busy timeout of {wait:?}");
            assert_eq!(show(&db, "statement_timeout"), "0", "statements are not bounded");
        }
        let with = |options: &str| {
            format!("{}&options={}", fresh.url, options.replace(" ", "%20").replace("=", "%3D"))
        };
        let db = PgInner::open(
            &with("-c search_path=public,pg_catalog"),
            false,
            true,
            false,
            Duration::from_millis(700),
            &[],
        )
        .unwrap();
        assert_eq!(show(&db, "lock_timeout"), "700ms");
        assert_eq!(show(&db, "search_path"), "public,pg_catalog");
        let db = PgInner::open(
            &with("-c lock_timeout=5s"),
            false,
            true,
            false,
            Duration::from_millis(700),
            &[],
        )
        .unwrap();
        assert_eq!(show(&db, "lock_timeout"), "5s", "the URL's own setting wins");
    }

    /// A statement that waits for a lock past the busy timeout fails the transaction with
    /// [`Error::Locked`] naming the database without its password and the wait, and nothing
    /// of the transaction is kept; with the lock released the same transaction goes through.
    /// The migration lock of a first start is waited for the same way.
    #[test]
    fn a_lock_wait_past_the_busy_timeout_is_locked_naming_the_database_on_postgres() {
        let Some(fresh) = fresh() else { return };
        let wait = Duration::from_millis(200);
        // The database is migrated later, by an opening that waits on the migration lock.
        let mut holder = fresh.admin();
        // Should waits not be bounded, the server ends the holder's session once it has been
        // idle in its transaction that long, and the waiting call then succeeds: the test fails
        // rather than hangs.
        holder.batch_execute("SET idle_in_transaction_session_timeout = '60s'").unwrap();
        holder.batch_execute("BEGIN").unwrap();
        holder.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).unwrap();
        let err = PgInner::open(&fresh.url, false, true, false, wait, &[]).unwrap_err();
        let Error::Locked { path, waited } = &err else { panic!("{err:?}") };
        assert_eq!(path.to_str(), Some(display_url(&fresh.url).as_str()));
        assert!(*waited >= wait, "{waited:?}");
        assert_eq!(applied_version(&mut fresh.admin()).unwrap(), 0, "nothing migrated");
        holder.batch_execute("COMMIT").unwrap();
        let db = PgInner::open(&fresh.url, false, true, false, wait, &[]).unwrap();
        write(&db, |tx| tx.batch_execute("CREATE TABLE t (k BIGINT PRIMARY KEY, v TEXT)")).unwrap();
        write(&db, |tx| tx.batch_execute("INSERT INTO t VALUES (1, 'held')")).unwrap();
        let update = |db: &PgInner, gave_up: &StdCell<bool>| {
            db.run_noting(true, gave_up, |tx| {
                Stmt::prepare(tx, "INSERT INTO t VALUES (2, 'first')")?.execute(&[])?;
                Stmt::prepare(tx, "UPDATE t SET v = 'changed' WHERE k = 1")?.execute(&[])
            })
        };
        holder.batch_execute("BEGIN; SELECT * FROM t WHERE k = 1 FOR UPDATE").unwrap();
        let gave_up = StdCell::new(false);
        let err = update(&db, &gave_up).unwrap_err();
        let Error::Locked { path, waited } = &err else { panic!("{err:?}") };
        assert_eq!(path.to_str(), Some(db.shown()));
        assert!(*waited >= wait, "{waited:?}");
        assert!(gave_up.get());
        assert!(err.is_busy());
        let rows =
            |c: &mut Client| c.query_one("SELECT COUNT(*) FROM t", &[]).unwrap().get::<_, i64>(0);
        assert_eq!(rows(&mut holder), 1, "the insert before the wait was rolled back");
        holder.batch_execute("COMMIT").unwrap();
        let gave_up = StdCell::new(false);
        assert_eq!(update(&db, &gave_up).unwrap(), 1);
        assert!(!gave_up.get());
        assert_eq!(rows(&mut holder), 2);
    }

    /// A statement run alone with rows stores what the one-row INSERT stores per row (numbers,
    /// NULLs, any text, secrets redacted alike), all of them or, when one fails, none, in one
    /// round trip once prepared.
    #[test]
    fn a_statement_alone_with_rows_writes_all_of_them_or_none_in_one_round_trip_on_postgres() {
        let Some(fresh) = fresh() else { return };
        let db = fresh.open();
        write(&db, |tx| {
            tx.batch_execute(
                "CREATE TABLE one (k BIGINT, n BIGINT PRIMARY KEY, t TEXT, s SMALLINT);
                 CREATE TABLE many (k BIGINT, n BIGINT PRIMARY KEY, t TEXT, s SMALLINT)",
            )
        })
        .unwrap();
        let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
        let texts: Vec<Option<String>> = (0..1000)
            .map(|i| match i % 4 {
                0 => None,
                1 => Some(format!("aws_key={key} row {i}")),
                2 => Some("ünïcode \\ 'quoted' \"double\" \t tab".repeat(i % 7)),
                _ => Some(String::new()),
            })
            .collect();
        let rows: Vec<[Param<'_>; 3]> = (0..1000)
            .map(|i| {
                [
                    Param::int(i as i64 * 7 - 3000),
                    texts[i].as_deref().map_or(Param::NULL, Param::text),
                    if i % 5 == 0 { Param::NULL } else { Param::int(i as i64 % 300) },
                ]
            })
            .collect();
        write(&db, |tx| {
            let mut one =
                Stmt::prepare(tx, "INSERT INTO one (k, n, t, s) VALUES (42, ?1, ?2, ?3)")?;
            for row in &rows {
                one.execute(row)?;
            }
            Ok(())
        })
        .unwrap();
        let sql = "INSERT INTO many (k, n, t, s)
            SELECT ?1, u.* FROM unnest(?2::bigint[], ?3::text[], ?4::smallint[]) AS u";
        let rows_of = |from: usize, to: usize| -> Vec<&[Param<'_>]> {
            rows[from..to].iter().map(|r| &r[..]).collect()
        };
        let (trips, n) =
            counted(&db, || db.execute_alone_rows(sql, &[Param::int(42)], &rows_of(0, 600)));
        assert_eq!(n.unwrap(), 600);
        assert_eq!(trips, 2, "prepared, then sent");
        // One row already stored among the next ones: none of them is.
        let clash: Vec<&[Param<'_>]> =
            rows_of(600, 1000).into_iter().chain(rows_of(10, 11)).collect();
        let failed = db.execute_alone_rows(sql, &[Param::int(42)], &clash).unwrap_err();
        assert!(failed.to_string().contains("duplicate key"), "{failed}");
        let (trips, n) =
            counted(&db, || db.execute_alone_rows(sql, &[Param::int(42)], &rows_of(600, 1000)));
        assert_eq!(n.unwrap(), 400);
        assert_eq!(trips, 1);
        let mut admin = fresh.admin();
        let mut dump = |table: &str| -> Vec<String> {
            admin
                .query(
                    &format!("SELECT format('%s|%s|%s|%s', k, n, t, s) FROM {table} ORDER BY n"),
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        let (one, many) = (dump("one"), dump("many"));
        assert_eq!(one.len(), 1000);
        assert_eq!(one, many);
        assert!(one.iter().all(|row| !row.contains(&key)), "a key was stored");
        // Through the façade: no rows, or more than one statement takes, are refused.
        let database = crate::Database::open(&fresh.url).unwrap();
        for n in [0, 1001] {
            let rows: Vec<[Param<'_>; 3]> =
                (0..n).map(|i| [Param::int(5000 + i), Param::NULL, Param::NULL]).collect();
            let refused = database.execute_alone_rows(sql, &[Param::int(42)], &rows).unwrap_err();
            assert!(
                matches!(refused, Error::InvalidInput { what: "rows", .. }),
                "{n}: {refused:?}"
            );
        }
        assert_eq!(dump("many").len(), 1000);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

        /// `insert_rows` stores what the one-row INSERT run once per row stores — numbers, NULLs,
        /// text of any kind, secrets redacted alike — in one round trip per thousand rows.
        #[test]
        fn inserting_rows_is_the_one_row_insert_per_row_in_a_round_trip_per_thousand_on_postgres(
            rows in prop::collection::vec(
                (any::<i64>(), prop::option::of("[^\u{0}]{0,40}"), prop::option::of(any::<f64>())),
                1..2600,
            ),
            secret_every in 1usize..50,
        ) {
            let Some(fresh) = fresh() else { return Ok(()) };
            let db = fresh.open();
            write(&db, |tx| {
                tx.batch_execute(
                    "CREATE TABLE one (n BIGINT, k BIGINT, t TEXT, f DOUBLE PRECISION);
                     CREATE TABLE many (n BIGINT, k BIGINT, t TEXT, f DOUBLE PRECISION)",
                )
            })
            .unwrap();
            let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
            let texts: Vec<Option<String>> = rows
                .iter()
                .enumerate()
                .map(|(i, (_, t, _))| match t {
                    Some(t) if i % secret_every == 0 => Some(format!("{t} aws_key={key}")),
                    t => t.clone(),
                })
                .collect();
            let params = |i: usize| {
                let (k, _, f) = &rows[i];
                [
                    Param::int(i as i64),
                    Param::int(*k),
                    texts[i].as_deref().map_or(Param::NULL, Param::text),
                    f.filter(|f| f.is_finite()).map_or(Param::NULL, Param::real),
                ]
            };
            let all: Vec<[Param<'_>; 4]> = (0..rows.len()).map(params).collect();
            write(&db, |tx| {
                let mut one = Stmt::prepare(tx, "INSERT INTO one (n, k, t, f) VALUES (?1, ?2, ?3, ?4)")?;
                for row in &all {
                    one.execute(row)?;
                }
                Ok(())
            })
            .unwrap();
            let (trips, inserted) = counted(&db, || {
                let all: Vec<&[Param<'_>]> = all.iter().map(|r| &r[..]).collect();
                let one_row = "INSERT INTO many (n, k, t, f) VALUES (?1, ?2, ?3, ?4)";
                write(&db, |tx| tx.insert_rows(one_row, "INSERT INTO many (n, k, t, f)", &all))
                    .unwrap()
            });
            prop_assert_eq!(inserted, rows.len());
            // BEGIN, the one-row statement's preparation (for the types), the batch statement's
            // preparation (more than one row), a round trip per chunk, COMMIT.
            let chunks = all.chunks(INSERT_CHUNK).count();
            prop_assert_eq!(trips, (3 + chunks + usize::from(all.len() > 1)) as u64);
            let mut admin = fresh.admin();
            let mut dump = |table: &str| -> Vec<String> {
                admin
                    .query(&format!("SELECT format('%s|%s|%s|%s', n, k, t, f) FROM {table} ORDER BY n"), &[])
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            };
            let (one, many) = (dump("one"), dump("many"));
            prop_assert_eq!(&one, &many);
            prop_assert!(one.iter().all(|row| !row.contains(&key)), "a key was stored");
        }
    }
}
