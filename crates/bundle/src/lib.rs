//! Share an execution: a task's whole story as a self-contained JSON Lines bundle
//! ([`export`], `aigentflow tasks export`), loaded into another database, of either backend, in
//! one transaction ([`import`], `aigentflow tasks import`).
//!
//! # The format (`aigentflow-bundle`, version 1)
//!
//! UTF-8 text, one JSON object per line, each line ending in a newline (a reader also takes the
//! last line without one, if it is the whole end record or signature), no line longer than
//! [`MAX_LINE_BYTES`]:
//!
//! 1. The [`Header`]: `{"format":"aigentflow-bundle","version":1,"tool":"aigentflow 0.1.0",
//!    "source":"…","exported_at":"2026-11-26 06:50:09.123","tasks":["t1",…]}`. `source` is
//!    the database's file path or server URL, never with a password.
//! 2. Records, each with a `kind`, the stored columns of one row as they are stored
//!    (timestamps in the stored form `YYYY-MM-DD HH:MM:SS.SSS` UTC, JSON columns as their
//!    text). For each task of the header, in its order:
//!    * `task`: its row of `workflow_states`; always the task's first record;
//!    * `transition` (`state_transitions`, in `seq` order), `checkpoint` (`checkpoints`),
//!      `approval` (`approval_requests`; the column `kind` is the field `approval_kind`);
//!    * `trace` (`execution_traces` of the task), each followed by its `invocation` records
//!      (`agent_invocations`);
//!    * `audit`: every row of `audit_logs` whose task is the task, in id order, with its id,
//!      `prev_hash` and `row_hash` in the source's chain, and its own `origin` if it was itself
//!      imported there;
//!    * `definition`: the workflow definition the task started under, if one was recorded
//!      (name, version, content hash, the definition's canonical JSON), right after its task.
//!      An import checks that the content gives the hash, loads the definition (or finds it
//!      loaded with the same content: other content under that version is refused) and binds
//!      the task to it, so the task goes on following the definition it ran under.
//! 3. `{"kind":"end","records":N}`: N records came before it. A bundle without it is
//!    truncated.
//! 4. Only in a signed bundle ([`export_signed`], `tasks export --sign KEYFILE`), its last line:
//!    `{"kind":"signature","algorithm":"ed25519","public_key":"…","sha256":"…","value":"…"}`,
//!    the Ed25519 signature (with a key made by `audit keygen`) of [`signed_message`] of the
//!    SHA-256 of every byte before the line. Reading checks it against the key it names;
//!    [`Bundle::check_signer`] (`tasks import --pubkey PUBFILE`) checks that the key is the one
//!    given.
//!
//! Row numbers (`state_transitions.id`, `agent_invocations.id`, `execution_traces.feed_seq`)
//! belong to a database: an import numbers those rows anew, in the bundle's order. Every text
//! id is kept.
//!
//! # Import
//!
//! Every line is read and checked before anything is written ([`read_bundle`]: a malformed
//! line, a wrong header or version, a record out of order or of a task the header does not
//! name, ids that collide, a NUL character, a timestamp out of range, an audit row whose hash
//! does not follow from its fields, a truncated file: each an error naming its line). Then one
//! write transaction does all or nothing ([`import_bundle`]): a task not in the destination is
//! written; one that is there with the same content is left alone ("already present"); one
//! that is there with other content is refused, naming it. Audit entries are appended to the
//! destination's own chain (new ids and hashes), keeping their original id, hash and source as
//! provenance (`audit_logs.origin_id`, `origin_hash`, `origin_source`, which the new hash
//! covers), so `audit verify` passes on both sides and each imported row can be matched to the
//! source's. An entry already there (by its original hash) is not appended again: a second
//! import of the same bundle changes nothing. An entry whose origin this database knows with
//! another hash (a row of its own, or one imported from that origin before) is refused
//! ([`Error::OriginDiffers`]): the hashes are keyless, so an edit that recomputes them passes
//! the line check, but not this one. A bundle forged whole, with rows this database has never
//! seen, passes every check but the signature's: an importer that holds the exporter's public
//! key asks for it ([`Bundle::check_signer`]), and then a bundle unsigned, signed by another
//! key, or changed by a single byte since it was signed is refused before anything is written.
//! Every text goes through the redaction policy on its way in.

mod error;
mod export;
mod import;
mod parse;
mod record;

pub use error::{Error, Result};
pub use export::{export, export_signed, read_task, ExportReport};
pub use import::{import, import_bundle, ImportReport, Outcome, TaskOutcome};
pub use parse::{read_bundle, Bundle, MAX_LINE_BYTES};
pub use record::{
    signed_message, ApprovalRecord, AuditRowRecord, CheckpointRecord, DefinitionRecord, EndRecord,
    Header, InvocationRecord, OriginRecord, Record, SignatureRecord, TaskBundle, TaskRecord,
    TraceRecord, TransitionRecord, FORMAT, VERSION,
};
