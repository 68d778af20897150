//! Reading a bundle: every line checked before anything is written, each problem a typed error
//! naming its line ([`read_bundle`]).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read};

use aigentflow_audit::StoredEvent;
use aigentflow_core_states::time;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::export::audit_hash;
use crate::record::{
    signed_message, Header, Record, SignatureRecord, TaskBundle, FORMAT, OLDEST_VERSION, VERSION,
};
use aigentflow_audit::report::{self, VerifyingKey};
use sha2::{Digest, Sha256};

/// The longest line a bundle may hold, in bytes (its newline aside).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// A bundle read whole and checked: its header and each task's records.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub header: Header,
    /// In the header's order.
    pub tasks: Vec<TaskBundle>,
    /// The public key (hex) whose signature covers every byte of the bundle, if it was signed
    /// (`tasks export --sign`). Anyone can sign with a key of their own: the signature says who
    /// made the bundle only once [`Bundle::check_signer`] holds it against a key one trusts.
    pub signed_by: Option<String>,
}

impl Bundle {
    /// Checks that `key` signed the bundle: [`Error::Unsigned`] if no key did,
    /// [`Error::OtherSigner`] if another one did.
    pub fn check_signer(&self, key: &VerifyingKey) -> Result<()> {
        let given = report::public_key_hex(key);
        match &self.signed_by {
            None => Err(Error::Unsigned),
            Some(found) if *found != given => {
                Err(Error::OtherSigner { found: found.clone(), given })
            }
            Some(_) => Ok(()),
        }
    }
}

/// Reads and checks a whole bundle. Each of these is an [`Error::Invalid`] naming its line: a
/// line that is not JSON, a value holding a NUL character (U+0000), a header of another format
/// or version, an unknown record kind or field, a record of a task the header does not name or
/// before its task's record (an invocation before its trace), a task's transitions or
/// checkpoints not numbered 1, 2, 3, … in order or its audit rows not in id order, an id given
/// twice (a task, a checkpoint, an approval, a trace, an audit row), an empty id, a timestamp not
/// in the stored form or outside years 0000 to 9999, JSON columns that are not JSON, an approval
/// whose status and decision disagree or a second pending one, an audit row whose hash does not
/// follow from its fields, an end record whose count is wrong or a line after it. A line longer
/// than [`MAX_LINE_BYTES`] is [`Error::LineTooLong`]; a bundle without its end record, or that
/// ends in a line without a newline that is not a whole end record or signature, is
/// [`Error::Truncated`] (a signature line cut short is [`Error::Invalid`], naming it).
pub fn read_bundle(input: &mut dyn BufRead) -> Result<Bundle> {
    let mut reader = Reader::default();
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| Error::Io { what: "cannot read the bundle", source })?;
        if n == 0 {
            break;
        }
        line += 1;
        let newline = buf.last() == Some(&b'\n');
        if !newline {
            if buf.len() > MAX_LINE_BYTES {
                return Err(Error::LineTooLong { line, max: MAX_LINE_BYTES });
            }
            reader.last_line_whole(line, &buf)?;
        }
        // A signature signs every byte before its line.
        if !reader.ended {
            reader.digest.update(&buf);
        }
        if newline {
            buf.pop();
        }
        reader.line(line, &buf)?;
    }
    reader.finish(line)
}

/// What has been read so far.
#[derive(Default)]
struct Reader {
    header: Option<Header>,
    /// The tasks the header names.
    named: HashSet<String>,
    tasks: Vec<TaskBundle>,
    /// Task id → its place in `tasks`.
    task_at: HashMap<String, usize>,
    /// Trace id → (its task's place, its place among the task's traces).
    trace_at: HashMap<String, (usize, usize)>,
    /// Checkpoint, approval and audit ids already given, by kind.
    ids: HashSet<(&'static str, String)>,
    pending: HashSet<String>,
    records: u64,
    ended: bool,
    /// Of every byte up to the end record's newline.
    digest: Sha256,
    /// The public key of a signature found valid (the line after the end record).
    signed_by: Option<String>,
}

fn invalid(line: u64, reason: impl Into<String>) -> Error {
    Error::Invalid { line, reason: reason.into().into() }
}

/// Whether any string of `value`, a key included, holds a NUL character.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A stored timestamp, or an error naming the field.
fn stored_time(line: u64, field: &str, text: &str) -> Result<()> {
    match time::parse_stored(text) {
        Some(_) => Ok(()),
        None => Err(invalid(
            line,
            format!(
                "{field} {text:?} is not a timestamp in the stored form YYYY-MM-DD HH:MM:SS.SSS (years 0000 to 9999)"
            ),
        )),
    }
}

fn opt_time(line: u64, field: &str, text: &Option<String>) -> Result<()> {
    text.as_deref().map_or(Ok(()), |t| stored_time(line, field, t))
}

/// Text that is JSON as the stores take it: parsed whole, and nested no deeper than a store
/// takes (skipping it unread would take any depth).
fn json_text(line: u64, field: &str, text: &str) -> Result<()> {
    let value = serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| invalid(line, format!("{field} is not JSON text ({e})")))?;
    aigentflow_persistence::check_json_depth(&value)
        .map_err(|e| invalid(line, format!("{field}: {e}")))
}

/// A stored token usage, read as the tracker reads it back.
fn usage_text(line: u64, field: &str, text: &Option<String>) -> Result<()> {
    match text {
        Some(text) => serde_json::from_str::<aigentflow_tracker::TokenUsage>(text)
            .map(|_| ())
            .map_err(|e| invalid(line, format!("{field} is not a token usage ({e})"))),
        None => Ok(()),
    }
}

fn not_empty(line: u64, field: &str, text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(invalid(line, format!("{field} is empty")));
    }
    Ok(())
}

/// A task's transitions, and its checkpoints, come with `seq` 1, 2, 3, … in that order, as the
/// state store numbers them: `given` is the number of those already read.
fn in_order(line: u64, kind: &str, task: &str, seq: Option<i64>, given: usize) -> Result<()> {
    let expected = given as i64 + 1;
    if seq != Some(expected) {
        let seq = seq.map_or_else(|| "none".to_owned(), |n| n.to_string());
        return Err(invalid(
            line,
            format!(
                "{kind} seq {seq} of task {task} is out of order: {expected} comes next (a task's {kind}s are numbered 1, 2, 3, … in order)"
            ),
        ));
    }
    Ok(())
}

fn hex64(line: u64, field: &str, text: &str) -> Result<()> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(invalid(line, format!("{field} {text:?} is not 64 lower-case hex digits")));
    }
    Ok(())
}

impl Reader {
    fn line(&mut self, line: u64, bytes: &[u8]) -> Result<()> {
        if self.signed_by.is_some() {
            return Err(invalid(line, "a line after the signature"));
        }
        if self.ended {
            return match serde_json::from_slice::<Record>(bytes) {
                Ok(Record::Signature(signature)) => {
                    // Only as the exporter writes it (lower-case hex, no blanks): the line is not
                    // signed, so no other spelling of it (case, blanks, escapes, a carriage
                    // return) is taken.
                    let canonical = SignatureRecord {
                        public_key: signature.public_key.to_ascii_lowercase(),
                        sha256: signature.sha256.to_ascii_lowercase(),
                        value: signature.value.to_ascii_lowercase(),
                        ..signature.clone()
                    };
                    let written = serde_json::to_vec(&Record::Signature(canonical))
                        .map_err(|e| invalid(line, e.to_string()))?;
                    if written != bytes {
                        return Err(invalid(
                            line,
                            "the signature line is not as `tasks export --sign` writes it",
                        ));
                    }
                    self.signature(line, signature)
                }
                _ => Err(invalid(line, "a line after the end record")),
            };
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid(line, format!("not a JSON value ({e})")))?;
        if holds_nul(&value) {
            return Err(invalid(line, "a value holds a NUL character (U+0000)"));
        }
        let Some(header) = &self.header else {
            let header = self.header_line(line, value)?;
            self.named = header.tasks.iter().cloned().collect();
            self.header = Some(header);
            return Ok(());
        };
        let record: Record = serde_json::from_value(value)
            .map_err(|e| invalid(line, format!("not a bundle record ({e})")))?;
        if let Record::End(end) = &record {
            if end.records != self.records {
                return Err(invalid(
                    line,
                    format!(
                        "the end record counts {} records, the bundle holds {}",
                        end.records, self.records
                    ),
                ));
            }
            if let Some(missing) = header.tasks.iter().find(|t| !self.task_at.contains_key(*t)) {
                return Err(invalid(
                    line,
                    format!("task {missing} is named in the header but has no task record"),
                ));
            }
            self.ended = true;
            return Ok(());
        }
        self.records += 1;
        let kind = record.kind();
        let task_of = |reader: &Self, task: &str| reader.task_of(line, kind, task);
        match record {
            Record::Task(t) => {
                not_empty(line, "task_id", &t.task_id)?;
                if !self.named.contains(&t.task_id) {
                    return Err(invalid(
                        line,
                        format!("task {:?} is not named in the header", t.task_id),
                    ));
                }
                if self.task_at.contains_key(&t.task_id) {
                    return Err(invalid(line, format!("task {} appears twice", t.task_id)));
                }
                not_empty(line, "project_id", &t.project_id)?;
                json_text(line, "context", &t.context)?;
                stored_time(line, "created_at", &t.created_at)?;
                stored_time(line, "updated_at", &t.updated_at)?;
                self.task_at.insert(t.task_id.clone(), self.tasks.len());
                self.tasks.push(TaskBundle {
                    task: t,
                    transitions: Vec::new(),
                    checkpoints: Vec::new(),
                    approvals: Vec::new(),
                    traces: Vec::new(),
                    audit: Vec::new(),
                    definition: None,
                });
            }
            Record::Definition(d) => {
                let at = task_of(self, &d.task_id)?;
                let task = &self.tasks[at];
                if task.definition.is_some() {
                    return Err(invalid(line, format!("task {} has two definitions", d.task_id)));
                }
                if !(task.transitions.is_empty()
                    && task.checkpoints.is_empty()
                    && task.approvals.is_empty()
                    && task.traces.is_empty()
                    && task.audit.is_empty())
                {
                    return Err(invalid(
                        line,
                        format!(
                            "the definition of task {} comes after its other records",
                            d.task_id
                        ),
                    ));
                }
                hex64(line, "content_hash", &d.content_hash)?;
                let parsed = aigentflow_core_states::WorkflowDefinition::parse(
                    &d.definition,
                    aigentflow_core_states::Format::Json,
                )
                .map_err(|e| invalid(line, format!("definition: {e}")))?;
                if parsed.name != d.name || i64::from(parsed.version) != d.version {
                    return Err(invalid(
                        line,
                        format!(
                            "the definition is {}@{}, the record says {}@{}",
                            parsed.name, parsed.version, d.name, d.version
                        ),
                    ));
                }
                if aigentflow_workflows::content_hash(&parsed) != d.content_hash {
                    return Err(invalid(line, "the definition does not give its content_hash"));
                }
                self.tasks[at].definition = Some(d);
            }
            Record::Transition(r) => {
                let at = task_of(self, &r.task_id)?;
                in_order(line, "transition", &r.task_id, r.seq, self.tasks[at].transitions.len())?;
                stored_time(line, "created_at", &r.created_at)?;
                self.tasks[at].transitions.push(r);
            }
            Record::Checkpoint(r) => {
                let at = task_of(self, &r.task_id)?;
                self.id(line, "checkpoint", &r.id)?;
                in_order(line, "checkpoint", &r.task_id, r.seq, self.tasks[at].checkpoints.len())?;
                json_text(line, "context", &r.context)?;
                json_text(line, "artifacts", &r.artifacts)?;
                stored_time(line, "created_at", &r.created_at)?;
                self.tasks[at].checkpoints.push(r);
            }
            Record::Approval(r) => {
                let at = task_of(self, &r.task_id)?;
                self.id(line, "approval", &r.id)?;
                json_text(line, "payload", &r.payload)?;
                stored_time(line, "requested_at", &r.requested_at)?;
                opt_time(line, "deadline", &r.deadline)?;
                opt_time(line, "decided_at", &r.decided_at)?;
                if !["pending", "approved", "rejected", "expired"].contains(&r.status.as_str()) {
                    return Err(invalid(
                        line,
                        format!("approval status {:?} is unknown", r.status),
                    ));
                }
                if (r.status == "pending") != r.decided_at.is_none() {
                    return Err(invalid(
                        line,
                        "an approval has decided_at exactly when its status is not pending",
                    ));
                }
                if r.status == "pending" && !self.pending.insert(r.task_id.clone()) {
                    return Err(invalid(
                        line,
                        format!("a second pending approval of task {}", r.task_id),
                    ));
                }
                self.tasks[at].approvals.push(r);
            }
            Record::Trace(r) => {
                let at = task_of(self, &r.task_id)?;
                self.id(line, "trace", &r.id)?;
                not_empty(line, "project_id", &r.project_id)?;
                not_empty(line, "status", &r.status)?;
                usage_text(line, "token_usage", &r.token_usage)?;
                stored_time(line, "started_at", &r.started_at)?;
                opt_time(line, "completed_at", &r.completed_at)?;
                opt_time(line, "owner_started_at", &r.owner_started_at)?;
                opt_time(line, "heartbeat_at", &r.heartbeat_at)?;
                let traces = &mut self.tasks[at].traces;
                self.trace_at.insert(r.id.clone(), (at, traces.len()));
                traces.push((r, Vec::new()));
            }
            Record::Invocation(r) => {
                let Some(&(task, trace)) = self.trace_at.get(&r.trace_id) else {
                    return Err(invalid(
                        line,
                        format!("invocation of trace {:?} before its trace record (out of order), or of a trace the bundle does not hold", r.trace_id),
                    ));
                };
                not_empty(line, "agent", &r.agent)?;
                usage_text(line, "token_usage", &r.token_usage)?;
                stored_time(line, "started_at", &r.started_at)?;
                opt_time(line, "completed_at", &r.completed_at)?;
                self.tasks[task].traces[trace].1.push(r);
            }
            Record::Audit(r) => {
                let at = task_of(self, &r.task_id)?;
                not_empty(line, "action", &r.action)?;
                not_empty(line, "category", &r.category)?;
                stored_time(line, "timestamp", &r.timestamp)?;
                hex64(line, "prev_hash", &r.prev_hash)?;
                hex64(line, "row_hash", &r.row_hash)?;
                if let Some(o) = &r.origin {
                    hex64(line, "origin hash", &o.hash)?;
                    not_empty(line, "origin source", &o.source)?;
                }
                match (r.hash_version, &r.event) {
                    (None | Some(2), None) | (Some(2), Some(_)) => {}
                    (None, Some(_)) => {
                        return Err(invalid(
                            line,
                            format!("audit row {}: event fields on a row whose hash (version 1) does not cover them", r.id),
                        ))
                    }
                    (Some(other), _) => {
                        return Err(invalid(
                            line,
                            format!("audit row {}: hash_version {other} is not 2 (this build reads 1, written as no hash_version, and 2)", r.id),
                        ))
                    }
                }
                if let Some(problem) = r.event.as_deref().and_then(StoredEvent::problem) {
                    return Err(invalid(line, format!("audit row {}: {problem}", r.id)));
                }
                if audit_hash(&r) != r.row_hash {
                    return Err(invalid(
                        line,
                        format!(
                            "audit row {}: its row_hash does not follow from its fields (edited)",
                            r.id
                        ),
                    ));
                }
                if let Some(last) = self.tasks[at].audit.last().filter(|last| last.id >= r.id) {
                    return Err(invalid(
                        line,
                        format!(
                            "audit row {} of task {} after row {} (out of order): a task's audit rows come in id order",
                            r.id, r.task_id, last.id
                        ),
                    ));
                }
                let root = r.origin.as_ref().map_or(&r.row_hash, |o| &o.hash);
                self.id(line, "audit row", root)?;
                self.tasks[at].audit.push(r);
            }
            Record::End(_) => {}
            Record::Signature(_) => {
                return Err(invalid(line, "a signature comes only after the end record"));
            }
        }
        Ok(())
    }

    /// The line after the end record: a signature of every byte before it, by the key it
    /// names. Any byte changed since, or a signature not made by that key, is refused. Whether
    /// that key is one the reader trusts is [`Bundle::check_signer`]'s to say.
    fn signature(&mut self, line: u64, signature: SignatureRecord) -> Result<()> {
        if signature.algorithm != report::ALGORITHM {
            return Err(invalid(
                line,
                format!("the signature is {:?}, not {}", signature.algorithm, report::ALGORITHM),
            ));
        }
        let key = report::public_key_from_hex(&signature.public_key)
            .map_err(|e| invalid(line, format!("the signature's key: {e}")))?;
        let sha256 = hex::encode(self.digest.clone().finalize());
        if !signature.sha256.eq_ignore_ascii_case(&sha256) {
            return Err(invalid(
                line,
                "the bundle is not what was signed: its bytes were changed after it was signed",
            ));
        }
        report::verify_bytes(&key, &signed_message(&sha256), &signature.value).map_err(|_| {
            invalid(
                line,
                "the signature does not match the bundle: it was changed after it was signed",
            )
        })?;
        self.signed_by = Some(report::public_key_hex(&key));
        Ok(())
    }

    fn header_line(&self, line: u64, value: Value) -> Result<Header> {
        if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(invalid(
                line,
                format!("not an {FORMAT} header (its format must be {FORMAT:?})"),
            ));
        }
        let header: Header = serde_json::from_value(value)
            .map_err(|e| invalid(line, format!("not a bundle header ({e})")))?;
        if !(OLDEST_VERSION..=VERSION).contains(&header.version) {
            return Err(invalid(
                line,
                format!(
                    "format version {} is not read by this build (it reads {OLDEST_VERSION} to {VERSION})",
                    header.version
                ),
            ));
        }
        not_empty(line, "source", &header.source)?;
        stored_time(line, "exported_at", &header.exported_at)?;
        if header.tasks.is_empty() {
            return Err(invalid(line, "the header names no task"));
        }
        let mut seen = HashSet::new();
        for task in &header.tasks {
            not_empty(line, "a task id", task)?;
            if !seen.insert(task) {
                return Err(invalid(line, format!("the header names task {task} twice")));
            }
        }
        Ok(header)
    }

    /// The place of the task a record belongs to, which must be named and already read.
    fn task_of(&self, line: u64, kind: &str, task: &str) -> Result<usize> {
        if !self.named.contains(task) {
            return Err(invalid(
                line,
                format!("{kind} record of task {task:?}, which the header does not name"),
            ));
        }
        self.task_at.get(task).copied().ok_or_else(|| {
            invalid(
                line,
                format!("{kind} record of task {task} before its task record (out of order)"),
            )
        })
    }

    /// An id of `kind` not given before.
    fn id(&mut self, line: u64, kind: &'static str, id: &str) -> Result<()> {
        not_empty(line, &format!("{kind} id"), id)?;
        if !self.ids.insert((kind, id.to_owned())) {
            return Err(invalid(line, format!("{kind} {id} appears twice")));
        }
        Ok(())
    }

    /// Whether `bytes`, the file's last line, which lacks its newline, may end the bundle: only
    /// a whole end record (or, after it, a whole signature line) may, as an editor or a copy
    /// that drops a file's final newline leaves it. Nothing is lost: the end record counts the
    /// records before it, and a signature covers the bytes before its own line (the end
    /// record's newline included), while its line is held to the exact bytes the exporter
    /// writes and nothing can follow it. Any other line without a newline was cut off.
    fn last_line_whole(&self, line: u64, bytes: &[u8]) -> Result<()> {
        match serde_json::from_slice::<Record>(bytes) {
            Ok(Record::End(_)) if !self.ended => Ok(()),
            Ok(Record::Signature(_)) if self.ended => Ok(()),
            _ if self.ended => Err(invalid(
                line,
                "the line after the end record is cut off (no newline, not a whole signature): the file is truncated",
            )),
            _ => Err(Error::Truncated { line }),
        }
    }

    fn finish(self, lines: u64) -> Result<Bundle> {
        match (self.header, self.ended) {
            (Some(header), true) => {
                Ok(Bundle { header, tasks: self.tasks, signed_by: self.signed_by })
            }
            _ => Err(Error::Truncated { line: lines }),
        }
    }
}
