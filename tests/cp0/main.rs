//! Cross-crate scenarios through the façade: the seed's CP0 test scenarios, one module per area.
#![allow(clippy::unwrap_used)]
// These tests inspect and tamper with what the stores wrote, as someone with file access would,
// through the driver's connection (which bypasses the redaction policy on purpose).
#![allow(clippy::disallowed_methods)]

mod approvals;
mod async_use;
mod audit;
mod audit_appends;
mod audit_events;
mod bundle;
mod checklist;
mod copy;
mod corrupt_rows;
mod drivers;
mod extension;
mod faults;
mod feeds;
mod ids;
mod inspect;
mod lessons;
mod locks;
mod persistence;
mod pg_database;
mod pg_support;
mod secrets;
mod spans;
mod standalone;
mod states;
mod support;
mod tracker;
mod workflows;
