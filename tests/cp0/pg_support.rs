//! The PostgreSQL side of the test support: every Postgres variant of a test gets a database of its
//! own on the server `AIGENTFLOW_PG_URL` names (`scripts/pg-throwaway.sh` starts one), fresh and
//! empty, dropped when its guard goes; without the variable the variant is skipped, unless
//! `AIGENTFLOW_REQUIRE_PG` says it must run.

use std::ffi::OsString;

use postgres::{Client, Config, NoTls};
use proptest::prelude::*;

use crate::support::{
    database_url, pg_admin_url, pg_database, pg_error, without_password, PG_URL_VAR,
};

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls)
        .unwrap_or_else(|e| panic!("connect to {}: {}", without_password(url), pg_error(&e)))
}

/// How many of `names` the server still has.
fn existing(admin: &mut Client, names: &[String]) -> i64 {
    admin
        .query_one("SELECT count(*) FROM pg_database WHERE datname = ANY($1)", &[&names])
        .unwrap()
        .get(0)
}

#[test]
fn postgres_test_databases_are_fresh_separate_and_dropped() {
    let Some(first) = pg_database() else { return };
    let second = pg_database().expect("the URL was set for the first database");
    assert_ne!(first.name(), second.name());
    assert_ne!(first.url(), second.url());
    let mut admin = connect(&std::env::var(PG_URL_VAR).unwrap());
    let names = vec![first.name().to_owned(), second.name().to_owned()];
    assert_eq!(existing(&mut admin, &names), 2);

    let mut clients = Vec::new();
    for (i, db) in [&first, &second].into_iter().enumerate() {
        let mut c = connect(db.url());
        let current: String = c.query_one("SELECT current_database()", &[]).unwrap().get(0);
        assert_eq!(current, db.name(), "the URL names the new database");
        let tables: i64 = c
            .query_one(
                "SELECT count(*) FROM information_schema.tables
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(tables, 0, "{} starts empty", db.name());
        let table = format!("only_in_{i}");
        c.batch_execute(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, body TEXT NOT NULL)"
        ))
        .unwrap();
        c.execute(&format!("INSERT INTO {table} VALUES ($1, $2)"), &[&7_i64, &db.name()]).unwrap();
        let body: String =
            c.query_one(&format!("SELECT body FROM {table} WHERE id = 7"), &[]).unwrap().get(0);
        assert_eq!(body, db.name());
        clients.push(c);
    }
    // Separate: neither sees the other's table.
    for (i, c) in clients.iter_mut().enumerate() {
        let other = format!("only_in_{}", 1 - i);
        let seen: Option<String> =
            c.query_one("SELECT to_regclass($1)::text", &[&other]).unwrap().get(0);
        assert_eq!(seen, None, "database {i} sees {other}");
    }

    // Dropped with the guard, even while a connection to it is still open.
    drop(first);
    drop(second);
    assert_eq!(existing(&mut admin, &names), 0, "the guards dropped {names:?}");
    for mut c in clients {
        assert!(c.query_one("SELECT 1", &[]).is_err(), "a connection survived its database's drop");
    }
}

#[test]
fn postgres_variants_skip_without_a_url_and_fail_when_one_is_required() {
    let url = "postgres://postgres@127.0.0.1:5432/postgres";
    let os = |s: &str| Some(OsString::from(s));
    for require in [None, os("")] {
        assert_eq!(pg_admin_url(None, require.clone()), Ok(None));
        assert_eq!(pg_admin_url(os(""), require.clone()), Ok(None));
        assert_eq!(pg_admin_url(os(url), require), Ok(Some(url.to_owned())));
    }
    for require in [os("1"), os("0"), os("yes")] {
        let refused = Err("AIGENTFLOW_REQUIRE_PG is set but AIGENTFLOW_PG_URL is not".to_owned());
        assert_eq!(pg_admin_url(None, require.clone()), refused);
        assert_eq!(pg_admin_url(os(""), require.clone()), refused);
        assert_eq!(pg_admin_url(os(url), require), Ok(Some(url.to_owned())));
    }
}

/// Every byte but the unreserved ones as `%XX`.
fn encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9-]{1,8}){0,2}",
        any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("{a}.{b}.{c}.{d}")),
        any::<[u16; 3]>().prop_map(|[a, b, c]| format!("[{a:x}:{b:x}::{c:x}]")),
    ]
}

/// A query parameter the driver knows, as `key=value`; `dbname` also spelled with escapes.
fn param() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}".prop_map(|v| format!("application_name={}", encoded(&v))),
        "\\PC{0,12}".prop_map(|v| format!("options={}", encoded(&v))),
        (0u32..1000).prop_map(|v| format!("connect_timeout={v}")),
        "\\PC{1,12}".prop_map(|v| format!("dbname={}", encoded(&v))),
        "\\PC{1,12}".prop_map(|v| format!("%64bname={}", encoded(&v))),
        "\\PC{1,12}".prop_map(|v| format!("db%6E%61me={}", encoded(&v))),
        "[a-z]{1,8}".prop_map(|v| format!("host=%2Ftmp%2F{v}")),
    ]
}

prop_compose! {
    fn pg_url()(
        scheme in prop_oneof![Just("postgres://"), Just("postgresql://")],
        creds in proptest::option::of(("\\PC{0,10}", proptest::option::of("\\PC{0,10}"))),
        hosts in proptest::collection::vec((host(), proptest::option::of(1u16..)), 0..3),
        path in proptest::option::of(proptest::option::of("\\PC{0,12}")),
        params in proptest::collection::vec(param(), 0..4),
    ) -> String {
        let mut url = scheme.to_owned();
        if let Some((user, password)) = creds {
            url.push_str(&encoded(&user));
            if let Some(password) = password {
                url.push(':');
                url.push_str(&encoded(&password));
            }
            url.push('@');
        }
        let hosts: Vec<String> = hosts
            .into_iter()
            .map(|(h, port)| port.map_or(h.clone(), |p| format!("{h}:{p}")))
            .collect();
        url.push_str(&hosts.join(","));
        match path {
            None => {}
            Some(None) => url.push('/'),
            Some(Some(db)) => {
                url.push('/');
                url.push_str(&encoded(&db));
            }
        }
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        url
    }
}

fn parsed(url: &str) -> Config {
    url.parse().unwrap_or_else(|e| panic!("{url}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A test database's URL means to the driver what the server's URL means, but for the
    /// database: the same scheme, users, password, hosts, ports and parameters, whatever the
    /// server's URL holds (credentials or none, several hosts, a path or none, a `dbname`
    /// parameter however spelled). Messages show it without the password.
    #[test]
    fn postgres_test_database_urls_keep_everything_but_the_database_name(
        url in pg_url(),
        name in "[a-z_][a-z0-9_]{0,40}",
    ) {
        let original = parsed(&url);
        let rewritten = database_url(&url, &name).unwrap();
        let mut expected = original.clone();
        expected.dbname(&name);
        let got = parsed(&rewritten);
        prop_assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{} became {}", url, rewritten);
        prop_assert_eq!(got.get_password(), expected.get_password());
        prop_assert_eq!(got.get_dbname(), Some(name.as_str()));
        prop_assert_eq!(rewritten.starts_with("postgresql://"), url.starts_with("postgresql://"));
        prop_assert_eq!(database_url(&rewritten, &name).unwrap(), rewritten.clone());

        let shown = parsed(&without_password(&url));
        prop_assert_eq!(format!("{shown:?}"), format!("{original:?}"));
        let masked = original.get_password().map(|_| b"***".as_slice());
        prop_assert_eq!(shown.get_password(), masked);
    }
}
