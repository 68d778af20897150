//! No driver type (rusqlite, postgres, r2d2, refinery) in this crate's public API or its error
//! (issue 13): the stores and an orchestrator see [`Error`], [`Tx`], [`Param`] and [`Row`] only,
//! whichever backend runs. The one deliberate exception is the escape hatch, [`Tx::sqlite`] and
//! [`Tx::postgres`], which `clippy.toml` forbids outside tests that play an attacker.
//!
//! Held three ways: the compiler checks every field of every variant of [`Error`] and the
//! conversions and binding traits of the public types; a scan of this crate's source checks
//! every public signature, field, re-export and trait implementation.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use aigentflow_core_states::TaskId;

use crate::error::{Error, NotWritable, SafeText};
use crate::{Database, Param, Row, Tx};

/// A type no driver defines: only these may be a field of [`Error`].
trait Neutral {}
impl Neutral for PathBuf {}
impl Neutral for SafeText {}
impl Neutral for String {}
impl Neutral for &'static str {}
impl Neutral for i32 {}
impl Neutral for i64 {}
impl Neutral for u64 {}
impl Neutral for usize {}
impl Neutral for Duration {}
impl Neutral for TaskId {}
impl Neutral for NotWritable {}
impl Neutral for std::io::Error {}
impl Neutral for serde_json::Error {}
impl<T: Neutral> Neutral for Option<T> {}

fn n(field: &impl Neutral) {
    let _ = field;
}

/// Every field of every variant, each required to be [`Neutral`]. The match is exhaustive, so
/// a new variant does not compile until it is added here, and a field of a driver's type (a
/// `rusqlite::Error`, a boxed `refinery_core::Error`…) does not compile at all.
fn fields(e: &Error) {
    match e {
        Error::CreateDir { path, source } | Error::Inaccessible { path, source } => {
            n(path);
            n(source);
        }
        Error::Output { path, action, source } => {
            n(path);
            n(action);
            n(source);
        }
        Error::Missing { path }
        | Error::IsADirectory { path }
        | Error::NotAFile { path, .. }
        | Error::Empty { path }
        | Error::Blank { path }
        | Error::ReadOnly { path }
        | Error::Unusable { path }
        | Error::Nested { path }
        | Error::NotADatabase { path }
        | Error::OutputExists { path }
        | Error::OutputChanged { path }
        | Error::DiskFull { path } => n(path),
        Error::NotAigentflow { path, tables: text }
        | Error::Migrate { path, reason: text }
        | Error::Backup { path, reason: text }
        | Error::Copy { path, reason: text }
        | Error::OutputPath { path, reason: text } => {
            n(path);
            n(text);
        }
        Error::Outdated { path, found, latest: other }
        | Error::NewerSchema { path, found, supported: other } => {
            n(path);
            n(found);
            n(other);
        }
        Error::NewerSet { path, set, found, supported: other }
        | Error::OutdatedSet { path, set, found, latest: other } => {
            n(path);
            n(set);
            n(found);
            n(other);
        }
        Error::Aborted { path, first } => {
            n(path);
            n(first);
        }
        Error::PendingChanges { path, side } => {
            n(path);
            n(side);
        }
        Error::UnfinishedTransaction { path } => n(path),
        Error::PoolTimeout { path, waited } | Error::Locked { path, waited } => {
            n(path);
            n(waited);
        }
        Error::Open { path, code, message } => {
            n(path);
            n(code);
            n(message);
        }
        Error::NotFound { what, id } => {
            n(what);
            n(id);
        }
        Error::NotStored { table, given, stored } => {
            n(table);
            n(given);
            n(stored);
        }
        Error::CorruptRow { table, column, id, reason } => {
            n(table);
            n(column);
            n(id);
            n(reason);
        }
        Error::SchemaMismatch { table, column, location } => {
            n(table);
            n(column);
            n(location);
        }
        Error::Uncopyable { table, column, row } | Error::SealedSecret { table, column, row } => {
            n(table);
            n(column);
            n(row);
        }
        Error::InvalidInput { what, reason } => {
            n(what);
            n(reason);
        }
        Error::StaleSave { task_id, what, stored, given } => {
            n(task_id);
            n(what);
            n(stored);
            n(given);
        }
        Error::HistoryConflict { task_id, seq, detail }
        | Error::CheckpointConflict { task_id, seq, detail } => {
            n(task_id);
            n(seq);
            n(detail);
        }
        Error::OwnFile { path, file } | Error::ForeignJournal { path, journal: file } => {
            n(path);
            n(file);
        }
        Error::Thread(source) => n(source),
        Error::FileSizeLimit { path, limit } | Error::FileSizeLimitBelowShm { path, limit } => {
            n(path);
            n(limit);
        }
        Error::NotWritable { path, why } => {
            n(path);
            n(why);
        }
        Error::CannotOpen { path, why: text } | Error::Io { path, reason: text } => {
            n(path);
            n(text);
        }
        Error::Sqlite { code, message } => {
            n(code);
            n(message);
        }
        Error::OutcomeUnknown { path, reason } => {
            n(path);
            n(reason);
        }
        Error::Connect { url, reason } => {
            n(url);
            n(reason);
        }
        Error::Postgres { code, message } => {
            n(code);
            n(message);
        }
        Error::ColumnType { index, expected, found } => {
            n(index);
            n(expected);
            n(found);
        }
        Error::NotEmpty { location, table, rows } => {
            n(location);
            n(table);
            n(rows);
        }
        Error::Unsupported { what, backend } => {
            n(what);
            n(backend);
        }
        Error::Json(source) => n(source),
    }
}

/// Fails to compile when `$ty` implements `$trait`: two implementations of `Ambiguous` then
/// apply, and naming `check` is ambiguous.
macro_rules! assert_not_impl {
    ($ty:ty, $($trait:tt)+) => {{
        trait Ambiguous<A> {
            fn check() {}
        }
        impl<T: ?Sized> Ambiguous<()> for T {}
        impl<T: ?Sized + $($trait)+> Ambiguous<u8> for T {}
        let _ = <$ty as Ambiguous<_>>::check;
    }};
}

/// Errors of every kind the drivers raise, from real operations on both sides of the crate: a
/// file that is not a database, a statement SQLite refuses, a value of another type, a busy
/// in-memory database, a failed migration's words…; none of them carries a driver's type or
/// shows one in its `Debug`.
#[test]
fn every_field_of_every_error_variant_is_a_type_of_no_driver() {
    let dir = tempfile::tempdir().unwrap();
    let not_db = dir.path().join("not.db");
    std::fs::write(&not_db, vec![b'x'; 4096]).unwrap();
    let db = Database::open_in_memory().unwrap();
    let errors = [
        Database::open(&not_db).unwrap_err(),
        db.read(|tx| tx.execute("SELECT * FROM no_such_table", &[])).unwrap_err(),
        db.read(|tx| tx.query_row("SELECT 'x'", &[], |r| r.get::<i64>(0))).unwrap_err(),
        db.read(|tx| tx.query_row("SELECT 1", &[], |r| r.get::<i64>(7))).unwrap_err(),
        db.read(|tx| tx.execute("SELECT ?1", &[Param::int(1), Param::int(2)])).unwrap_err(),
        db.read(|_| db.read(|_| Ok::<_, Error>(()))).unwrap_err(),
    ];
    for e in &errors {
        fields(e);
        let shown = format!("{e:?}");
        for driver in ["SqliteFailure", "ErrorCode", "extended_code", "rusqlite", "refinery"] {
            assert!(!shown.contains(driver), "{driver} in {shown}");
        }
    }
    assert!(errors.iter().any(|e| matches!(e, Error::Sqlite { code: Some(_), .. })));
    assert!(errors.iter().any(|e| matches!(e, Error::Sqlite { code: None, .. })));
}

/// No public type converts from a driver's error or binds as a driver's parameter: such an
/// implementation is public whatever its module, and names the driver in the crate's API.
#[test]
fn no_public_type_converts_from_or_binds_as_a_driver_type() {
    assert_not_impl!(Error, From<rusqlite::Error>);
    assert_not_impl!(Error, From<postgres::Error>);
    assert_not_impl!(Error, From<r2d2::Error>);
    assert_not_impl!(Error, From<refinery_core::Error>);
    assert_not_impl!(Error, From<Box<refinery_core::Error>>);
    assert_not_impl!(Param<'static>, rusqlite::ToSql);
    assert_not_impl!(Param<'static>, postgres::types::ToSql);
    assert_not_impl!(Row<'static>, rusqlite::types::FromSql);
    assert_not_impl!(Tx<'static>, std::ops::Deref);
}

// ---- The scan of public signatures --------------------------------------------------------

/// The crates whose types stay inside this crate, as a path names them (`rusqlite::Error`).
const DRIVERS: [&str; 8] = [
    "rusqlite",
    "libsqlite3_sys",
    "postgres",
    "postgres_types",
    "tokio_postgres",
    "r2d2",
    "refinery",
    "refinery_core",
];

/// The public items allowed to name a driver type: the escape hatch, one per backend, by file
/// and signature.
const ALLOWED: [(&str, &str); 2] = [
    ("db.rs", "pub fn sqlite(&self) -> Option<&'a Connection>"),
    ("db.rs", "pub fn postgres<T>(&self, f: impl FnOnce(&mut postgres::Transaction<'_>) -> T) -> Option<T>"),
];

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `text` without comments, string literals and char literals (lifetimes stay), so that what
/// is left is code; line breaks stay.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        let prev = if i == 0 { ' ' } else { chars[i - 1] };
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && at(i + 1) == 'r'))
            && !is_ident(prev)
            && matches!(at(i + 1 + usize::from(c == 'b')), '#' | '"')
        {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + 1 + usize::from(c == 'b');
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A char literal ('x', '\n', '\'', '\u{7b}'); a lifetime ('a) has no closing quote.
            i += if at(i + 1) == '\\' { 3 } else { 1 };
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The index just past the bracket that closes the one at `open`.
fn matching(code: &[char], open: usize) -> usize {
    let mut depth = 0;
    for (i, &c) in code.iter().enumerate().skip(open) {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// The index just past the item starting at `start`: its `;`, or the block its first `{`
/// opens, whichever comes first (brackets before them are skipped whole).
fn item_end(code: &[char], start: usize) -> usize {
    let mut i = start;
    while i < code.len() {
        match code[i] {
            ';' => return i + 1,
            '{' => return matching(code, i),
            '(' | '[' => i = matching(code, i),
            _ => i += 1,
        }
    }
    code.len()
}

/// The index of the `{` or `;` that ends the signature starting at `start` (brackets before
/// it are skipped whole): a function's signature without its body.
fn signature_end(code: &[char], start: usize) -> usize {
    let mut i = start;
    while i < code.len() {
        match code[i] {
            ';' | '{' => return i,
            '(' | '[' => i = matching(code, i),
            _ => i += 1,
        }
    }
    code.len()
}

/// `code` without the items marked `#[cfg(test)]` (test modules and helpers).
fn without_tests(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    while let Some(start) = chars.windows(marker.len()).position(|w| w == marker.as_slice()) {
        let mut i = start + marker.len();
        // Further attributes of the same item.
        loop {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if chars.get(i) == Some(&'#') {
                i = matching(&chars, i + 1);
            } else {
                break;
            }
        }
        let end = item_end(&chars, i);
        chars.drain(start..end);
    }
    chars.into_iter().collect()
}

/// The words of `text` with where each starts.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (is_ident(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

/// The type and trait names a file imports from a driver (`use rusqlite::{Connection, …}`).
fn imported(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, word) in words(code) {
        if word != "use" {
            continue;
        }
        let rest = code[i + 3..].trim_start().trim_start_matches("::");
        if !DRIVERS.iter().any(|d| rest.starts_with(&format!("{d}::"))) {
            continue;
        }
        let statement = &rest[..rest.find(';').unwrap_or(rest.len())];
        for (_, name) in words(statement) {
            if name.starts_with(char::is_uppercase) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The driver type `text` names, if any: a path through a driver crate, or a name the file
/// imported from one (a name reached through another path, `crate::Row`, is another type).
fn names_driver(text: &str, imported: &[String]) -> Option<String> {
    for (i, word) in words(text) {
        let after = &text[i + word.len()..];
        let before = text[..i].trim_end();
        if DRIVERS.contains(&word) && after.trim_start().starts_with("::") {
            return Some(word.to_owned());
        }
        if imported.iter().any(|n| n == word) && !before.ends_with("::") {
            return Some(word.to_owned());
        }
    }
    None
}

/// The public items of `code` (tests removed): each `pub` item's signature (a struct's, enum's
/// or trait's with its body, a field's with its type, a re-export), and each trait
/// implementation for one of `public_types`, as text.
fn public_signatures(code: &str, public_types: &[String]) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let text = |from: usize, to: usize| -> String {
        chars[from..to.min(chars.len())].iter().collect::<String>()
    };
    let mut out = Vec::new();
    let mut offset_to_index = Vec::with_capacity(code.len() + 1);
    for (index, c) in code.chars().enumerate() {
        for _ in 0..c.len_utf8() {
            offset_to_index.push(index);
        }
    }
    offset_to_index.push(chars.len());
    let found = words(code);
    for (k, &(offset, word)) in found.iter().enumerate() {
        let start = offset_to_index[offset];
        let next = |m: usize| found.get(k + m).map(|&(_, w)| w).unwrap_or("");
        let after = code[offset + word.len()..].trim_start();
        match word {
            "pub" if !after.starts_with('(') => {
                let kind = match next(1) {
                    "const" | "unsafe" | "async" | "extern" if next(2) == "fn" => "fn",
                    other => other,
                };
                let end = match kind {
                    "mod" => continue,
                    "fn" => signature_end(&chars, start),
                    "struct" | "enum" | "union" | "trait" | "use" | "type" | "const" | "static" => {
                        item_end(&chars, start)
                    }
                    // A field: up to the comma or the end of its struct or variant.
                    _ => {
                        let mut i = start;
                        let mut angle = 0i32;
                        while i < chars.len() {
                            match chars[i] {
                                '<' => angle += 1,
                                '>' if chars.get(i.wrapping_sub(1)) != Some(&'-') => angle -= 1,
                                ',' if angle == 0 => break,
                                '}' | ')' => break,
                                '(' | '[' | '{' => {
                                    i = matching(&chars, i);
                                    continue;
                                }
                                _ => {}
                            }
                            i += 1;
                        }
                        i
                    }
                };
                out.push(text(start, end));
            }
            "impl" => {
                let line_start = code[..offset].rfind('\n').map_or(0, |n| n + 1);
                let lead = code[line_start..offset].trim();
                if !(lead.is_empty() || lead == "unsafe") {
                    continue; // `impl Trait` in argument or return position.
                }
                let open = (start..chars.len()).find(|&i| chars[i] == '{').unwrap_or(chars.len());
                let header = text(start, open);
                let Some(for_at) = header.rfind(" for ") else { continue };
                let self_type = words(&header[for_at + 5..])
                    .into_iter()
                    .map(|(_, w)| w)
                    .find(|w| !matches!(*w, "dyn" | "mut" | "crate" | "super" | "self"))
                    .unwrap_or("");
                if public_types.iter().any(|t| t == self_type) {
                    out.push(header);
                }
            }
            _ => {}
        }
    }
    out
}

/// The names of the `pub` structs, enums, unions and traits of `code`.
fn public_types(code: &str) -> Vec<String> {
    let found = words(code);
    let mut out = Vec::new();
    for (k, &(offset, word)) in found.iter().enumerate() {
        let after = code[offset + word.len()..].trim_start();
        if word == "pub" && !after.starts_with('(') {
            if let (Some((_, kind)), Some((_, name))) = (found.get(k + 1), found.get(k + 2)) {
                if matches!(*kind, "struct" | "enum" | "union" | "trait") {
                    out.push((*name).to_owned());
                }
            }
        }
    }
    out
}

/// Every public signature of the given sources (name, text) that names a driver type, but the
/// allowed ones: "file: signature (the driver's name)".
fn driver_types_in_public(sources: &[(String, String)]) -> Vec<String> {
    let code: Vec<(String, String)> = sources
        .iter()
        .map(|(name, text)| (name.clone(), without_tests(&code_only(text))))
        .collect();
    let types: Vec<String> = code.iter().flat_map(|(_, c)| public_types(c)).collect();
    let mut found = Vec::new();
    for (name, code) in &code {
        let imported = imported(code);
        for signature in public_signatures(code, &types) {
            let flat = signature.split_whitespace().collect::<Vec<_>>().join(" ");
            if ALLOWED.iter().any(|(file, allowed)| name == file && flat.starts_with(allowed)) {
                continue;
            }
            if let Some(driver) = names_driver(&flat, &imported) {
                let shown: String = flat.chars().take(160).collect();
                found.push(format!("{name}: {driver} in `{shown}`"));
            }
        }
    }
    found
}

/// This crate's sources but this file, by name relative to `src/`.
fn crate_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("no_driver_types.rs")
            {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

/// No public function, field, variant, re-export, alias or trait implementation of this crate
/// names a driver type, but the escape hatch ([`Tx::sqlite`], [`Tx::postgres`]): what the
/// stores and the CLI see is backend-neutral.
#[test]
fn no_public_signature_names_a_driver_type_but_the_escape_hatch() {
    let sources = crate_sources();
    assert!(sources.len() > 10 && sources.iter().any(|(n, _)| n == "error.rs"), "{sources:?}");
    let found = driver_types_in_public(&sources);
    assert!(found.is_empty(), "driver types in the public API:\n{}", found.join("\n"));
    // The scan sees the crate: the escape hatch is there, and found without its allowance.
    let db = &sources.iter().find(|(n, _)| n == "db.rs").unwrap().1;
    let renamed = vec![("other.rs".to_owned(), db.clone())];
    let hatch = driver_types_in_public(&renamed);
    assert_eq!(hatch.len(), 2, "{hatch:?}");
    assert!(hatch.iter().any(|h| h.contains("pub fn sqlite(&self)")), "{hatch:?}");
    assert!(hatch.iter().any(|h| h.contains("pub fn postgres<T>(&self")), "{hatch:?}");
}

/// The scan finds a driver type in every kind of public item and every way of naming it, and
/// nothing in private items, tests, comments, strings or another type of the same name.
#[test]
fn the_scan_finds_driver_types_in_every_kind_of_public_item_and_nothing_else() {
    let flagged = [
        "use rusqlite::Connection;\npub fn f(c: &Connection) {}",
        "pub fn f() -> rusqlite::Result<()> { Ok(()) }",
        "pub enum E { A(rusqlite::Error), B { x: u8 } }",
        "pub enum E {\n    A {\n        path: PathBuf,\n        source: Box<refinery_core::Error>,\n    },\n}",
        "pub(crate) struct S { pub conn: postgres::Client }",
        "pub use rusqlite::Connection;",
        "pub use ::postgres::Client as Pg;",
        "pub struct P;\nimpl From<rusqlite::Error> for P {\n    fn from(_: rusqlite::Error) -> Self { P }\n}",
        "use postgres::types::ToSql;\npub struct P<'a>(&'a str);\nimpl<'a> ToSql for P<'a> {}",
        "pub type R = refinery_core::Error;",
        "pub fn f(\n    a: u8,\n    b: &r2d2::Pool<M>,\n) -> u8 {\n    a\n}",
        "pub fn brace() -> char { '{' }\npub fn g(c: &rusqlite::Connection) {}",
        "pub fn s() -> &'static str { \"}\" }\npub fn g<'a>(c: &'a rusqlite::Connection) {}",
        "pub struct S;\nimpl S {\n    pub const fn f(_: rusqlite::OpenFlags) {}\n}",
        "pub trait T { fn f(&self) -> postgres::Row; }",
        "pub struct Wrap(pub rusqlite::Connection);",
        "#[cfg(test)]\nmod tests {}\npub fn f(_: libsqlite3_sys::Error) {}",
    ];
    for source in flagged {
        let found = driver_types_in_public(&[("a.rs".into(), source.into())]);
        assert!(!found.is_empty(), "not found in:\n{source}");
    }
    let clean = [
        "use rusqlite::Connection;\npub(crate) fn f(c: &Connection) {}",
        "use rusqlite::Row;\npub fn cell(r: &crate::Row<'_>) -> u8 { 0 }",
        "pub struct P;\nstruct Private;\nimpl rusqlite::ToSql for Private {}",
        "pub fn f() { let x = \"rusqlite::Connection\"; } // rusqlite::Error",
        "/// Not [`rusqlite::Error`].\npub fn f() -> Result<(), crate::Error> { Ok(()) }",
        "pub const S: &str = r#\"postgres::Client\"#;\npub const C: char = '\\'';",
        "#[cfg(test)]\nmod tests {\n    pub fn f(c: rusqlite::Connection) {}\n}",
        "#[cfg(test)]\n#[allow(dead_code)]\npub fn helper(c: &rusqlite::Connection) {}",
        "pub fn dialect<'s>(&self, sqlite: &'s str, postgres: &'s str) -> &'s str { postgres }",
        "fn private(c: rusqlite::Connection) -> postgres::Row { todo() }",
        "pub fn f(c: &Tx<'_>) { let _ = c.sqlite().map(rusqlite::Connection::is_autocommit); }",
        "pub(crate) fn from_postgres(e: postgres::Error) -> Self { Self }",
        "pub fn f(r: impl rusqlite_free::Thing) {}",
    ];
    for source in clean {
        let found = driver_types_in_public(&[("a.rs".into(), source.into())]);
        assert!(found.is_empty(), "{found:?} in:\n{source}");
    }
}
