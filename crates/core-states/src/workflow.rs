//! Workflow definitions as files: a [`TransitionTable`] with a name, a version and a retry
//! limit, written in YAML (the seeds' format) or JSON, reviewed and shared through git.
//!
//! ```yaml
//! name: aigentflow-default        # 1 to 64 of a-z, 0-9, - and _, starting with a letter
//! version: 1                      # from 1; a changed file gets a new version
//! description: The hub-and-spoke graph
//! max_retries: 3                  # optional: the fix loop's limit for tasks started under it
//! closed: [COMPLETED, ABORTED]    # states that accept no event
//! rules:                          # tried in order
//!   - from: [IDLE]                # states, or `any_open` (every state not closed)
//!     event: START
//!     to: ANALYZING               # a state, or `checkpoint_state` (the restored checkpoint's)
//!   - from: [ORCHESTRATING]
//!     event: SPAWN_AGENT
//!     to: AGENT_WORKING
//!     guard: agents_available     # a named guard (see `Guard`)
//! ```
//!
//! Reading one checks it whole: an unknown key, a missing one, a state or event that is not
//! written in capitals, an unknown guard, and a table that breaks an invariant of
//! [`TransitionTable::check`] are each an error; YAML errors give the line and column, table
//! errors the rule's number. The compiled-in default table is read from
//! `workflows/aigentflow-default.yaml`, embedded in the build.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::{Event, WorkflowState};
use crate::table::{FromStates, Guard, Rule, Target, TransitionTable};

/// The default workflow's file, as the build embeds it.
pub const DEFAULT_WORKFLOW_YAML: &str = include_str!("../../../workflows/aigentflow-default.yaml");

/// Longest workflow name.
const MAX_NAME: usize = 64;

/// A workflow: its name and version, what it is for, the retry limit of the tasks started under
/// it, and its checked transition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowDefinition {
    /// Its name, the same for every version.
    pub name: String,
    /// Its version, from 1.
    pub version: u32,
    /// What it is for.
    pub description: Option<String>,
    /// How many fixes a task started under it may try (its context's `max_retries`); None
    /// keeps the context's default.
    pub max_retries: Option<u32>,
    /// Its rules and closed states.
    pub table: TransitionTable,
}

/// Which format a definition's text is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (`.yaml`, `.yml`).
    Yaml,
    /// JSON (`.json`).
    Json,
}

impl Format {
    /// The format a file's extension names, if any.
    pub fn of_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

impl WorkflowDefinition {
    /// Reads a definition from `text` in `format`, checked whole (see the module documentation);
    /// any problem is [`Error::InvalidWorkflow`] saying where it is.
    pub fn parse(text: &str, format: Format) -> Result<Self> {
        // A definition is shallow: deep nesting is refused before a parser spends time on it
        // (a YAML parser's time grows with the square of it).
        if let Some((line, column)) = too_deep(text) {
            return Err(invalid(
                Some((line, column)),
                format!("nested deeper than {MAX_DEPTH} brackets"),
            ));
        }
        let file: WorkflowFile = match format {
            Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| {
                let at = e.location().map(|l| (l.line(), l.column()));
                invalid(at, strip_location(&e.to_string()))
            })?,
            Format::Json => serde_json::from_str(text).map_err(|e| {
                invalid(Some((e.line(), e.column())), strip_location(&e.to_string()))
            })?,
        };
        file.into_definition()
    }

    /// The definition as a file holds it, in JSON: the canonical form the database stores and
    /// whose digest tells a changed definition (comments and layout of the file do not count).
    pub fn to_canonical_json(&self) -> String {
        // A struct of strings, numbers and lists: serialising it cannot fail.
        serde_json::to_string(&WorkflowFile::from(self)).unwrap_or_default()
    }

    /// The definition as YAML in the file format.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&WorkflowFile::from(self)).unwrap_or_default()
    }

    /// The compiled-in default: `workflows/aigentflow-default.yaml`.
    pub fn default_workflow() -> &'static WorkflowDefinition {
        &DEFAULT
    }
}

static DEFAULT: LazyLock<WorkflowDefinition> = LazyLock::new(|| {
    match WorkflowDefinition::parse(DEFAULT_WORKFLOW_YAML, Format::Yaml) {
        Ok(definition) => definition,
        // The file is part of the source: its test (`the_default_file_is_the_compiled_in_table`)
        // fails the build's tests before this can be reached.
        Err(e) => unreachable!("workflows/aigentflow-default.yaml is invalid: {e}"),
    }
});

impl Default for TransitionTable {
    /// The aigentflow hub-and-spoke graph (DESIGN.md, "The default workflow graph"), read from
    /// `workflows/aigentflow-default.yaml`.
    fn default() -> Self {
        DEFAULT.table.clone()
    }
}

/// Deepest bracket nesting (`[` and `{`) a definition's text may have.
const MAX_DEPTH: usize = 32;

/// Where `text` first nests brackets deeper than [`MAX_DEPTH`] (line and column from 1),
/// counting outside quoted strings and comments.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    for c in text.chars() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
            comment = false;
            continue;
        }
        if comment {
            continue;
        }
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some((line, column));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    None
}

fn invalid(at: Option<(usize, usize)>, reason: String) -> Error {
    Error::InvalidWorkflow { line: at.map(|a| a.0), column: at.map(|a| a.1), reason: told(reason) }
}

/// A parser's message as the problem tells it, without repeating the file: a string value it
/// quotes is told by its length (`invalid type: string "…", expected …` quotes the whole text
/// of a file that is a single string, such as another file reached through a link), and so is
/// a key or name it quotes (`unknown field `…``) longer than [`MAX_QUOTED`] characters. Nothing
/// is cut in the middle: a secret there is shown whole, for the redaction of error lines to
/// find, or not at all.
fn told(reason: String) -> String {
    const OPEN: &str = "string \"";
    let reason = match (reason.find(OPEN), reason.rfind("\", expected")) {
        (Some(at), Some(end)) if end >= at + OPEN.len() => {
            let n = reason[at + OPEN.len()..end].chars().count();
            format!("{}a string of {n} characters{}", &reason[..at], &reason[end + 1..])
        }
        _ => reason,
    };
    let mut parts = reason.split('`');
    let mut out = parts.next().unwrap_or_default().to_owned();
    let mut replaced = false;
    for (i, part) in parts.enumerate() {
        let n = part.chars().count();
        if i % 2 == 0 && n > MAX_QUOTED {
            out.push_str(&format!("of {n} characters"));
            replaced = true;
        } else {
            // The quote that closed a replaced key goes with it.
            if !std::mem::take(&mut replaced) {
                out.push('`');
            }
            out.push_str(part);
        }
    }
    out
}

/// The longest a key or name a problem quotes is shown.
const MAX_QUOTED: usize = 64;

/// A parser's message without the " at line L column C" it ends with (the error says where).
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// A definition as the file writes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowFile {
    name: Name,
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_retries: Option<u32>,
    #[serde(default)]
    closed: BTreeSet<StateName>,
    rules: Vec<FileRule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    from: FileFrom,
    event: EventName,
    to: FileTo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guard: Option<Guard>,
}

/// `any_open`, or a list of states.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged, expecting = "a list of states, or any_open")]
enum FileFrom {
    AnyOpen(AnyOpen),
    States(Vec<StateName>),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AnyOpen {
    AnyOpen,
}

/// A state, or `checkpoint_state`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged, expecting = "a state in capitals, or checkpoint_state")]
enum FileTo {
    Checkpoint(CheckpointState),
    State(StateName),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CheckpointState {
    CheckpointState,
}

/// Text that must be a name in capitals (`AGENT_WORKING`): what states and events are written as.
fn capitals(text: &str) -> bool {
    text.len() <= MAX_NAME
        && text.starts_with(|c: char| c.is_ascii_uppercase())
        && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

macro_rules! checked_text {
    ($(#[$meta:meta])* $name:ident, $expecting:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        struct $name(String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                if ($check)(text.as_str()) {
                    Ok(Self(text))
                } else {
                    Err(serde::de::Error::custom(format!("{text:?} is not {}", $expecting)))
                }
            }
        }
    };
}

checked_text!(
    /// A state's name.
    StateName,
    "a state name in capitals (A-Z, 0-9, _)",
    capitals
);
checked_text!(
    /// An event's name.
    EventName,
    "an event name in capitals (A-Z, 0-9, _)",
    capitals
);
checked_text!(
    /// A workflow's name.
    Name,
    "a workflow name (1 to 64 of a-z, 0-9, - and _, starting with a letter)",
    |t: &str| t.len() <= MAX_NAME
        && t.starts_with(|c: char| c.is_ascii_lowercase())
        && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
);

impl WorkflowFile {
    fn into_definition(self) -> Result<WorkflowDefinition> {
        if self.version == 0 {
            return Err(invalid(None, "version must be 1 or more".to_owned()));
        }
        let rules = self
            .rules
            .into_iter()
            .map(|r| Rule {
                from: match r.from {
                    FileFrom::AnyOpen(_) => FromStates::AnyOpen,
                    FileFrom::States(states) => FromStates::States(
                        states.iter().map(|s| WorkflowState::parse(&s.0)).collect(),
                    ),
                },
                event: Event::parse(&r.event.0),
                to: match r.to {
                    FileTo::Checkpoint(_) => Target::CheckpointState,
                    FileTo::State(s) => Target::State(WorkflowState::parse(&s.0)),
                },
                guard: r.guard,
            })
            .collect();
        let closed = self.closed.iter().map(|s| WorkflowState::parse(&s.0));
        let table = TransitionTable::new(rules, closed).map_err(|e| match e {
            Error::InvalidTable(why) => invalid(None, why),
            other => other,
        })?;
        Ok(WorkflowDefinition {
            name: self.name.0,
            version: self.version,
            description: self.description,
            max_retries: self.max_retries,
            table,
        })
    }
}

impl From<&WorkflowDefinition> for WorkflowFile {
    fn from(d: &WorkflowDefinition) -> Self {
        let state = |s: &WorkflowState| StateName(s.as_str().to_owned());
        Self {
            name: Name(d.name.clone()),
            version: d.version,
            description: d.description.clone(),
            max_retries: d.max_retries,
            closed: d.table.closed().map(state).collect(),
            rules: d
                .table
                .rules()
                .iter()
                .map(|r| FileRule {
                    from: match &r.from {
                        FromStates::AnyOpen => FileFrom::AnyOpen(AnyOpen::AnyOpen),
                        FromStates::States(states) => {
                            FileFrom::States(states.iter().map(state).collect())
                        }
                    },
                    event: EventName(r.event.as_str().to_owned()),
                    to: match &r.to {
                        Target::CheckpointState => {
                            FileTo::Checkpoint(CheckpointState::CheckpointState)
                        }
                        Target::State(s) => FileTo::State(state(s)),
                    },
                    guard: r.guard,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(rules: &str) -> String {
        format!("name: w\nversion: 1\nclosed: [DONE]\nrules:\n{rules}")
    }

    #[test]
    fn the_default_file_is_the_compiled_in_table() {
        let parsed = WorkflowDefinition::parse(DEFAULT_WORKFLOW_YAML, Format::Yaml).unwrap();
        assert_eq!((parsed.name.as_str(), parsed.version), ("aigentflow-default", 1));
        assert_eq!(&parsed, WorkflowDefinition::default_workflow());
        assert_eq!(parsed.table, TransitionTable::default());
        // The file on disk is the one embedded.
        let on_disk = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../workflows/aigentflow-default.yaml"
        ))
        .unwrap();
        assert_eq!(on_disk, DEFAULT_WORKFLOW_YAML);
    }

    #[test]
    fn a_definition_reads_back_from_its_yaml_and_its_json() {
        let d = WorkflowDefinition::default_workflow();
        assert_eq!(&WorkflowDefinition::parse(&d.to_yaml(), Format::Yaml).unwrap(), d);
        assert_eq!(&WorkflowDefinition::parse(&d.to_canonical_json(), Format::Json).unwrap(), d);
    }

    /// A problem never repeats the file: a file that is one long string (another file reached
    /// through a link, `/etc/passwd`), a long value where a name or a number goes, a long
    /// unknown key, in YAML and in JSON, gives a message of bounded length that quotes none of
    /// it beyond its start.
    #[test]
    fn a_problem_tells_no_more_than_a_bounded_excerpt_of_the_file() {
        let long =
            "root:$6$saltsalt$0123456789abcdefABCDEF0123456789:19000:0:99999:7:::".repeat(40);
        let cases = [
            (long.clone(), Format::Yaml),
            (format!("\"{long}\""), Format::Yaml),
            (format!("\"{long}\""), Format::Json),
            (format!("name: w\nversion: \"{long}\"\nrules: []\n"), Format::Yaml),
            (format!("{{\"name\": \"w\", \"version\": \"{long}\", \"rules\": []}}"), Format::Json),
            (format!("name: w\nversion: 1\nrules: []\n{long}x: 1\n"), Format::Yaml),
            (
                format!("{{\"name\": \"w\", \"version\": 1, \"rules\": [], \"{long}\": 1}}"),
                Format::Json,
            ),
        ];
        for (text, format) in cases {
            let e = WorkflowDefinition::parse(&text, format).unwrap_err();
            let message = e.to_string();
            assert!(message.chars().count() <= 200, "{format:?}: {message}");
            assert!(!message.contains(&long[..200]), "{format:?}: {message}");
            assert_eq!(message.matches('`').count() % 2, 0, "{format:?}: {message}");
        }
    }

    /// Each kind of mistake is refused, saying where: YAML and JSON problems by line and column,
    /// table problems by rule.
    #[test]
    fn every_kind_of_mistake_is_refused_saying_where() {
        let cases: &[(String, &str, Option<usize>)] = &[
            (yaml("  - from: [A]\n    event: GO\n    to: B\n    colour: red\n"), "unknown field `colour`", Some(8)),
            (yaml("  - from: [A]\n    event: GO\n"), "missing field `to`", Some(5)),
            (yaml("  - from: [a]\n    event: GO\n    to: B\n"), "a list of states, or any_open", Some(5)),
            (yaml("  - from: any\n    event: GO\n    to: B\n"), "a list of states, or any_open", Some(5)),
            (yaml("  - from: [A]\n    event: go\n    to: B\n"), "rules[0]: \"go\" is not an event name", Some(5)),
            (yaml("  - from: [A]\n    event: GO\n    to: b\n"), "rules[0]: a state in capitals", Some(5)),
            (yaml("  - from: [A]\n    event: GO\n    to: B\n    guard: sometimes\n"), "unknown variant `sometimes`", Some(8)),
            (yaml("  - from: [DONE]\n    event: GO\n    to: B\n"), "rule 0 (GO) starts from closed state DONE", None),
            (yaml("  - from: [A]\n    event: GO\n    to: B\n  - from: [A]\n    event: GO\n    to: C\n"), "rules 0 and 1 both apply GO", None),
            (yaml("  - from: []\n    event: GO\n    to: B\n"), "starts from no state", None),
            ("name: W\nversion: 1\nrules: []\n".to_owned(), "is not a workflow name", Some(1)),
            ("name: w\nversion: 0\nrules: []\n".to_owned(), "version must be 1 or more", None),
            ("name: w\nversion: -1\nrules: []\n".to_owned(), "version: invalid type: integer `-1`", Some(2)),
            ("name: w\nrules: []\n".to_owned(), "missing field `version`", None),
            ("name: w\nversion: 1\nrules: [\n".to_owned(), "", Some(4)),
            ("- just\n- a list\n".to_owned(), "", Some(1)),
        ];
        for (text, needle, line) in cases {
            let e = WorkflowDefinition::parse(text, Format::Yaml).unwrap_err();
            let Error::InvalidWorkflow { line: at, reason, .. } = &e else {
                panic!("{text}: {e:?}")
            };
            assert!(reason.contains(needle), "{text}: {reason}");
            if let Some(line) = line {
                assert_eq!(at, &Some(*line), "{text}: {e}");
            }
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        for format in [Format::Yaml, Format::Json] {
            let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
            let e = WorkflowDefinition::parse(&deep, format).unwrap_err();
            assert!(e.to_string().contains("nested deeper than 32"), "{e}");
        }
        let e = WorkflowDefinition::parse(
            "{\"name\": \"w\",\n \"version\": 1, \"bogus\": 1}",
            Format::Json,
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidWorkflow { line: Some(2), .. }), "{e:?}");
    }
}
