//! The aigentflow audit log: append-only, hash-chained, redacted, exported as CSV, JSON or JSON Lines.
//!
//! * [`AuditLog::log`] appends an entry (action and details redacted first); [`AuditLog::log_in`]
//!   does it inside a caller's transaction, e.g. with the state transition it records.
//! * The database refuses UPDATE and DELETE on `audit_logs` (SQLite: triggers of migrations V3
//!   and V7; PostgreSQL: row triggers and a TRUNCATE trigger of its schema).
//! * On PostgreSQL an append locks the chain's head row (`audit_head`) until its transaction
//!   ends, so appends from many processes form one chain with increasing, gapless ids.
//! * Every row carries `prev_hash` and `row_hash` = SHA-256 of the previous hash and the row's
//!   fields, canonically encoded ([`chain`]); [`AuditLog::verify`] names the first bad row, and
//!   checks against a [`ChainHead`] kept elsewhere to catch truncation or a full rewrite.
//! * [`AuditLog::query`], [`AuditLog::summary`] and streaming [`AuditLog::export`].
//! * [`AuditLog::since`] reads by cursor, a page at a time, what a poller has not seen yet;
//!   [`AuditLog::latest`] the last entries, where a follower starts. Ids become visible in
//!   order on both backends, so a cursor never skips one.
//!
//! Architecture invariant: no driver type (rusqlite, postgres) appears in this crate's public
//! API or its error: the crate does not depend on either driver, so the compiler holds this
//! (and the façade's test
//! `drivers::no_crate_but_persistence_and_the_bench_depends_on_a_database_driver` keeps it so). Its SQL lives in
//! `store.rs` and `export.rs`.

pub mod chain;
mod error;
mod export;
mod model;
pub mod report;
mod store;

pub use chain::{ChainHead, Finding, HeadError, Verification};
pub use error::{Error, Result};
pub use export::{ExportFormat, ExportOptions, ExportReport, EXPORT_COLUMNS};
pub use model::{
    Actor, ActorCount, AuditEntry, AuditOrigin, AuditQuery, AuditRecord, AuditStats, Category,
    CategoryCount, Changes, Count, ImportedEntry, ImportedOrigin, Outcome, Severity, StoredEvent,
    Target,
};
pub use store::{AuditLog, MAX_PAGE};
