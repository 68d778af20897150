//! Fresh databases on a PostgreSQL server, one per workload and side (this project, bare
//! baseline): made with `CREATE DATABASE` under a unique name, dropped with
//! `DROP DATABASE … WITH (FORCE)` when their guard drops — at the end of the workload, on an
//! error, on a panic — and, when the run is interrupted (SIGINT, SIGTERM, SIGHUP), by a thread
//! that drops every one still there before the process exits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use postgres::{Client, NoTls};

/// The server of `--db`: its URL, and the fresh databases made on it that are not dropped yet.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The URL given (its own database is where `CREATE DATABASE` and `DROP DATABASE` run).
    admin_url: String,
    /// The URL without its password, for messages.
    shown: String,
    /// Names of the databases made and not dropped yet. Held while one is created, so that an
    /// interrupt drops a database whose creation was under way too.
    live: Mutex<Vec<String>>,
    counter: AtomicU64,
    /// Set by the interrupt handler before it drops the databases.
    interrupted: AtomicBool,
}

impl Server {
    /// Connects to the server of `url` and checks that its role may create databases.
    pub fn connect(url: &str) -> Result<Self> {
        let shown = aigentflow_persistence::display_url(url);
        let mut client = Client::connect(url, NoTls)
            .map_err(|e| anyhow::anyhow!("connect to {shown}: {}", pg_error(&e)))?;
        let row = client
            .query_one(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .map_err(|e| anyhow::anyhow!("read the role of {shown}: {}", pg_error(&e)))?;
        anyhow::ensure!(
            row.get::<_, bool>(0),
            "the role of {shown} may not create databases; give a superuser's URL or one with CREATEDB"
        );
        let shared = Shared {
            admin_url: url.to_owned(),
            shown,
            live: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
            interrupted: AtomicBool::new(false),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shared.shown
    }

    /// The server's version, as `SHOW server_version` gives it.
    pub fn version(&self) -> Result<String> {
        let mut client = self.admin()?;
        let row = client.query_one("SHOW server_version", &[])?;
        Ok(row.get(0))
    }

    /// A fresh, empty database named after `label` (lower-case letters, digits, `_`).
    pub fn fresh(&self, label: &str) -> Result<FreshDatabase> {
        let name = unique_name(label, self.shared.counter.fetch_add(1, Ordering::Relaxed));
        let url = with_dbname(&self.shared.admin_url, &name);
        let mut admin = self.admin()?;
        let mut live = self.shared.live();
        live.push(name.clone());
        // The guard exists before the database does: whatever happens next, it drops what
        // was made (once the list is released: its drop takes the list too).
        let guard = FreshDatabase { name, url, shared: Arc::clone(&self.shared) };
        let created = admin.batch_execute(&format!("CREATE DATABASE {}", quote_ident(&guard.name)));
        drop(live);
        created.map_err(|e| {
            anyhow::anyhow!("create database {} on {}: {}", guard.name, self.shown(), pg_error(&e))
        })?;
        Ok(guard)
    }

    /// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, drops every fresh database still on
    /// the server and ends the process with 128 + the signal's number.
    pub fn drop_all_on_interrupt(&self) -> Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .context("install the interrupt handler")?;
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("bench-interrupt".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    shared.interrupted.store(true, Ordering::SeqCst);
                    let names = std::mem::take(&mut *shared.live());
                    for name in &names {
                        if let Err(e) = shared.drop_database(name) {
                            eprintln!("{e:#}");
                        }
                    }
                    eprintln!("interrupted: dropped {} fresh database(s)", names.len());
                    std::process::exit(128 + signal);
                }
            })
            .context("start the interrupt handler's thread")?;
        Ok(())
    }

    /// Whether the run was interrupted: the workload's connections are being closed under it,
    /// and the interrupt handler ends the process once the databases are dropped.
    pub fn interrupted(&self) -> bool {
        self.shared.interrupted.load(Ordering::SeqCst)
    }

    fn admin(&self) -> Result<Client> {
        self.shared.admin()
    }
}

impl Shared {
    fn admin(&self) -> Result<Client> {
        Client::connect(&self.admin_url, NoTls)
            .map_err(|e| anyhow::anyhow!("connect to {}: {}", self.shown, pg_error(&e)))
    }

    /// The names of the live databases (a poisoned lock still holds them).
    fn live(&self) -> MutexGuard<'_, Vec<String>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the database `name`, closing any connection still open to it.
    fn drop_database(&self, name: &str) -> Result<()> {
        let mut admin = self.admin()?;
        let ident = quote_ident(name);
        let forced = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"));
        let dropped = match forced {
            // Before PostgreSQL 13 there is no WITH (FORCE); the workload's connections are
            // closed by then anyway.
            Err(e) if e.code() == Some(&postgres::error::SqlState::SYNTAX_ERROR) => {
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {ident}"))
            }
            other => other,
        };
        dropped.map_err(|e| {
            anyhow::anyhow!("drop the fresh database {name} on {}: {}", self.shown, pg_error(&e))
        })
    }
}

/// A database made for one workload; dropping this drops it on the server.
#[derive(Debug)]
pub struct FreshDatabase {
    name: String,
    url: String,
    shared: Arc<Shared>,
}

impl FreshDatabase {
    /// Its URL: the server's URL naming this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain connection to it.
    pub fn connect(&self) -> Result<Client> {
        Client::connect(&self.url, NoTls).map_err(|e| {
            anyhow::anyhow!("connect to {} on {}: {}", self.name, self.shared.shown, pg_error(&e))
        })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let mut live = self.shared.live();
        // Dropped already by the interrupt handler when it is no longer listed.
        let Some(at) = live.iter().position(|n| *n == self.name) else { return };
        match self.shared.drop_database(&self.name) {
            Ok(()) => {
                live.swap_remove(at);
            }
            Err(e) => eprintln!("{e:#}"),
        }
    }
}

/// The server's own message for a refusal (the driver's `Display` says only "db error"), else
/// the driver's with its cause.
pub fn pg_error(e: &postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => db.message().to_owned(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

/// `aigentflow_bench_<pid>_<counter>_<label>_<random>`: unique among this run's databases by the
/// counter, and among runs and hosts sharing a server by the pid and 32 random bits. The label
/// (lower-case letters, digits, `_`; at most 16) is cut to keep the name within 63 bytes,
/// PostgreSQL's identifier limit.
fn unique_name(label: &str, counter: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let head = format!("aigentflow_bench_{}_{counter}_", std::process::id());
    let tail = format!("_{:08x}", hasher.finish() as u32);
    let room = 63usize.saturating_sub(head.len() + tail.len()).min(16);
    let label: String = label
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(room)
        .collect();
    format!("{head}{label}{tail}")
}

/// `url` naming the database `name` instead: a `dbname` parameter appended last, which the
/// driver reads after the URL's path and any earlier parameter, so it wins over both.
pub fn with_dbname(url: &str, name: &str) -> String {
    let separator = match url.rfind('?') {
        None => "?",
        Some(at) if at + 1 == url.len() || url.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{url}{separator}dbname={name}")
}

/// A quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The driver's reading of a URL: user, hosts, ports and database.
    fn parts(url: &str) -> (Option<String>, String, String, Option<String>) {
        let config: postgres::Config = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
        (
            config.get_user().map(str::to_owned),
            format!("{:?}", config.get_hosts()),
            format!("{:?}", config.get_ports()),
            config.get_dbname().map(str::to_owned),
        )
    }

    proptest! {
        /// Whatever database, parameters and separators the server's URL has, the fresh
        /// database's URL names the fresh database and keeps the user, hosts and ports.
        #[test]
        fn fresh_url_names_the_fresh_database(
            scheme in prop::sample::select(vec!["postgres://", "postgresql://"]),
            user in prop::option::of("[a-z][a-z0-9_]{0,8}"),
            host in prop::sample::select(vec!["127.0.0.1", "localhost", "db.internal", "[::1]"]),
            port in prop::option::of(1u16..),
            path in prop::option::of("[a-zA-Z0-9_]{0,10}"),
            params in prop::collection::vec(
                prop::sample::select(vec![
                    "dbname=other", "application_name=x", "connect_timeout=5", "dbname=", "user=u2",
                ]),
                0..4,
            ),
            trailing in prop::sample::select(vec!["", "?", "&"]),
            label in "[a-z0-9_]{1,16}",
            counter in any::<u64>(),
        ) {
            let mut url = format!(
                "{scheme}{}{host}{}",
                user.as_ref().map_or(String::new(), |u| format!("{u}@")),
                port.map_or(String::new(), |p| format!(":{p}")),
            );
            if let Some(path) = &path {
                url.push('/');
                url.push_str(path);
            }
            if !params.is_empty() {
                url.push('?');
                url.push_str(&params.join("&"));
            }
            match trailing {
                "?" if !url.contains('?') => url.push('?'),
                "&" if url.contains('?') => url.push('&'),
                _ => {}
            }
            let name = unique_name(&label, counter);
            prop_assert!(name.len() <= 63, "{name} is {} bytes", name.len());
            let fresh = with_dbname(&url, &name);
            let (user0, hosts0, ports0, _) = parts(&url);
            let (user1, hosts1, ports1, db1) = parts(&fresh);
            prop_assert_eq!(db1.as_deref(), Some(name.as_str()), "{}", fresh);
            prop_assert_eq!((user0, hosts0, ports0), (user1, hosts1, ports1), "{}", fresh);
        }
    }

    #[test]
    fn names_are_unique_and_plain() {
        let names: std::collections::HashSet<String> =
            (0..1000).map(|i| unique_name("W3 Bare-\"x\"", i % 3)).collect();
        assert_eq!(names.len(), 1000);
        for name in &names {
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(name.contains("_w3barex_"), "{name}");
        }
    }

    /// Needs a server: skipped (with a line on stderr) unless AIGENTFLOW_PG_URL is set.
    fn server() -> Option<Server> {
        match std::env::var("AIGENTFLOW_PG_URL") {
            Ok(url) if !url.is_empty() => Some(Server::connect(&url).unwrap()),
            _ => {
                eprintln!("skipped: AIGENTFLOW_PG_URL is not set");
                None
            }
        }
    }

    fn exists(server: &Server, name: &str) -> bool {
        let mut admin = server.admin().unwrap();
        admin
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", &[&name])
            .unwrap()
            .get(0)
    }

    /// A fresh database is gone once its guard drops, however the workload ended: normally,
    /// with an error, or with a panic, and with its connections still open.
    #[test]
    fn fresh_databases_are_dropped_however_the_workload_ends() {
        let Some(server) = server() else { return };
        let mut seen = Vec::new();
        let mut ok = || -> Result<()> {
            let db = server.fresh("ok")?;
            seen.push(db.name().to_owned());
            let mut open = db.connect()?;
            open.batch_execute("CREATE TABLE t (x BIGINT)")?;
            assert!(exists(&server, db.name()));
            Ok(())
        };
        ok().unwrap();
        let mut failing = || -> Result<()> {
            let db = server.fresh("err")?;
            seen.push(db.name().to_owned());
            let _open = db.connect()?;
            anyhow::bail!("the workload failed")
        };
        assert!(failing().is_err());
        let panicking = std::panic::catch_unwind(|| {
            let db = server.fresh("panic").unwrap();
            let _open = db.connect().unwrap();
            std::panic::panic_any(db.name().to_owned())
        });
        let name = *panicking.unwrap_err().downcast::<String>().unwrap();
        seen.push(name);
        assert_eq!(seen.len(), 3);
        for name in &seen {
            assert!(!exists(&server, name), "{name} is still on the server");
        }
        assert!(server.shared.live().is_empty());
    }
}
