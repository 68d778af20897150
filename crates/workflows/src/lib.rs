//! Workflow definitions of aigentflow: versioned files in the repository, cached in the
//! database, and tasks bound to the definition they started under.
//!
//! * [`read_file`] / [`read_dir`]: definitions from `workflows/*.yaml` (or `.yml`, `.json`),
//!   each checked whole ([`WorkflowDefinition::parse`]); an error names the file, and the line
//!   and column or the rule.
//! * [`Workflows`]: the definitions of one database. [`Workflows::load`] stores each
//!   (name, version) once with the digest of its canonical form; a definition whose content
//!   changed without a new version is refused ([`Error::Changed`]). The files are the source:
//!   deleting the database and loading them again gives the same rows.
//! * [`Workflows::start`] saves a new task bound to a definition (the latest version unless
//!   one is named); [`Workflows::machine`] loads a task with the table it started under, so a
//!   newer version loaded later never changes how an older task moves. A task no definition
//!   was recorded for (started through the state store directly) moves by the compiled-in
//!   default table.
//! * [`render`]: the graph as Mermaid or Graphviz dot, and the path a task took over it.

pub mod render;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aigentflow_core_states::{
    Format, PersistedState, StateContext, StateMachine, TaskId, WorkflowDefinition,
};
use aigentflow_persistence::{Database, Param, SqliteStateStore, Tx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What can go wrong with workflow definitions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database.
    #[error(transparent)]
    Persistence(#[from] aigentflow_persistence::Error),
    /// A definition's text is not a valid definition.
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: aigentflow_core_states::Error },
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A definition holds text the redaction policy removes (a secret, or what looks like one).
    #[error("workflow {name}@{version} holds text the redaction policy removes (a secret, or what looks like one); take it out of the file")]
    HoldsSecret { name: String, version: u32 },
    /// A workflow file is larger than [`MAX_FILE`].
    #[error("{path} is larger than a workflow file may be ({max} bytes)")]
    TooLarge { path: PathBuf, max: u64 },
    /// An entry of a folder is named like a workflow file but is not a regular file.
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    /// A folder holds no workflow file.
    #[error("{path} holds no workflow file (*.yaml, *.yml, *.json)")]
    NoFiles { path: PathBuf },
    /// Two files define the same name and version.
    #[error("{first} and {second} both define {name}@{version}")]
    Duplicate { name: String, version: u32, first: PathBuf, second: PathBuf },
    /// The database holds this name and version with other content: a changed definition needs
    /// a new version.
    #[error("{name}@{version} is already loaded with other content (digest {stored:.12} here, {given:.12} given); give the changed definition a new version")]
    Changed { name: String, version: u32, stored: String, given: String },
    /// No definition of this name (and version) is loaded.
    #[error("no workflow {name}{} is loaded; load it with `aigentflow workflow load DIR`", version.map(|v| format!("@{v}")).unwrap_or_default())]
    NotLoaded { name: String, version: Option<u32> },
    /// The task is not stored.
    #[error("task {task_id} not found")]
    UnknownTask { task_id: String },
    /// A task of this id is already stored.
    #[error("task {task_id} already exists")]
    TaskExists { task_id: String },
    /// A stored definition cannot be read back (edited around the store).
    #[error("stored workflow {name}@{version} is unreadable: {reason}")]
    Corrupt { name: String, version: i64, reason: String },
    /// The state machine refused a transition of a task.
    #[error(transparent)]
    States(aigentflow_core_states::Error),
}

/// The largest workflow file read: a definition is a page of rules, not megabytes.
pub const MAX_FILE: u64 = 1024 * 1024;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A definition's name and version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct WorkflowRef {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
}

impl std::fmt::Display for WorkflowRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl WorkflowRef {
    /// Reads `NAME` or `NAME@VERSION`.
    pub fn parse_spec(spec: &str) -> Option<(String, Option<u32>)> {
        match spec.split_once('@') {
            Some((name, version)) if !name.is_empty() => {
                Some((name.to_owned(), Some(version.parse().ok().filter(|v| *v > 0)?)))
            }
            Some(_) => None,
            None if !spec.is_empty() => Some((spec.to_owned(), None)),
            None => None,
        }
    }
}

/// A definition as the database holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredWorkflow {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// SHA-256 of its canonical JSON, in hex.
    pub content_hash: String,
    /// When it was first loaded.
    pub loaded_at: DateTime<Utc>,
    /// How many tasks started under it.
    pub tasks: u64,
}

/// What loading a definition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loaded {
    /// It was new, and is stored now.
    New,
    /// The same content was stored already.
    Unchanged,
}

/// The digest that tells a definition's content: SHA-256 of its canonical JSON, in hex.
pub fn content_hash(definition: &WorkflowDefinition) -> String {
    hex::encode(Sha256::digest(definition.to_canonical_json().as_bytes()))
}

/// Reads and checks the definition in the file at `path` (YAML unless it ends in `.json`).
pub fn read_file(path: &Path) -> Result<WorkflowDefinition> {
    use std::io::Read;
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut text = String::new();
    aigentflow_persistence::open_input(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
        .map_err(io)?;
    if text.len() as u64 > MAX_FILE {
        return Err(Error::TooLarge { path: path.to_path_buf(), max: MAX_FILE });
    }
    // A byte order mark is not part of the definition.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let format = Format::of_path(path).unwrap_or(Format::Yaml);
    WorkflowDefinition::parse(text, format)
        .map_err(|source| Error::Invalid { path: path.to_path_buf(), source })
}

/// Every workflow file of `dir` (`*.yaml`, `*.yml`, `*.json`, not below it), in name order, each
/// read and checked: the first problem is returned, naming its file. Two files of one name and
/// version are [`Error::Duplicate`].
pub fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, WorkflowDefinition)>> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if Format::of_path(&path).is_some() {
            // A dangling link, a folder or a pipe named like a workflow file is told, not
            // skipped: a definition the team expects would be missing without a word.
            if !path.is_file() {
                return Err(Error::NotAFile { path });
            }
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(Error::NoFiles { path: dir.to_path_buf() });
    }
    paths.sort();
    let mut out: Vec<(PathBuf, WorkflowDefinition)> = Vec::with_capacity(paths.len());
    for path in paths {
        let definition = read_file(&path)?;
        if let Some((first, _)) =
            out.iter().find(|(_, d)| d.name == definition.name && d.version == definition.version)
        {
            return Err(Error::Duplicate {
                name: definition.name,
                version: definition.version,
                first: first.clone(),
                second: path,
            });
        }
        out.push((path, definition));
    }
    Ok(out)
}

const INSERT: &str =
    "INSERT INTO workflow_definitions (name, version, content_hash, definition, loaded_at)
    VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name, version) DO NOTHING";
const HASH_OF: &str =
    "SELECT content_hash, definition FROM workflow_definitions WHERE name = ?1 AND version = ?2";
const DEFINITION_OF: &str = "SELECT version, definition, content_hash FROM workflow_definitions
    WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY version DESC LIMIT 1";
const DEFINITION_OF_PG: &str = "SELECT version, definition, content_hash FROM workflow_definitions
    WHERE name = ?1 AND (?2::BIGINT IS NULL OR version = ?2::BIGINT) ORDER BY version DESC LIMIT 1";
const LIST: &str = "SELECT d.name, d.version, d.content_hash, d.loaded_at,
        (SELECT COUNT(*) FROM task_workflows t
          WHERE t.workflow_name = d.name AND t.workflow_version = d.version)
    FROM workflow_definitions d ORDER BY d.name, d.version";
const BIND: &str =
    "INSERT INTO task_workflows (task_id, workflow_name, workflow_version) VALUES (?1, ?2, ?3)";
const BOUND_TO: &str =
    "SELECT workflow_name, workflow_version FROM task_workflows WHERE task_id = ?1";

/// The workflow definitions of one database, and the tasks started under them.
#[derive(Debug, Clone)]
pub struct Workflows {
    db: Database,
    states: SqliteStateStore,
}

impl Workflows {
    /// The definitions of `db`.
    pub fn new(db: Database) -> Self {
        Self { states: SqliteStateStore::new(db.clone()), db }
    }

    /// Stores `definition` unless the same content is stored already; the same name and version
    /// with other content is [`Error::Changed`].
    pub fn load(&self, definition: &WorkflowDefinition) -> Result<Loaded> {
        self.db.write(|tx| self.load_in(tx, definition))
    }

    /// [`Workflows::load`] inside a caller's transaction.
    pub fn load_in(&self, tx: &Tx<'_>, definition: &WorkflowDefinition) -> Result<Loaded> {
        let hash = content_hash(definition);
        let version = i64::from(definition.version);
        let canonical = definition.to_canonical_json();
        // The stored text goes through the redaction policy like every text; a definition the
        // policy would change could not give its digest back, and secrets have no place in a
        // file the team shares, so it is refused before anything is written.
        if aigentflow_persistence::Clean::text(&canonical).as_str() != canonical {
            return Err(Error::HoldsSecret {
                name: definition.name.clone(),
                version: definition.version,
            });
        }
        // Inserted unless there: of loads racing on PostgreSQL, one inserts and the others
        // compare with what it stored.
        let inserted = tx.execute(
            INSERT,
            &[
                Param::text(&definition.name),
                Param::int(version),
                Param::digest(&hash),
                Param::text(&canonical),
                Param::time(tx.now()),
            ],
        )?;
        if inserted == 1 {
            return Ok(Loaded::New);
        }
        let stored =
            tx.query_row(HASH_OF, &[Param::text(&definition.name), Param::int(version)], |r| {
                Ok((r.get::<String>(0)?, r.get::<String>(1)?))
            })?;
        let corrupt = |reason: &str| Error::Corrupt {
            name: definition.name.clone(),
            version,
            reason: reason.to_owned(),
        };
        match stored {
            // The digest alone is not trusted: the stored text must be the definition's too.
            Some((stored, text)) if stored == hash && text == canonical => Ok(Loaded::Unchanged),
            Some((stored, _)) if stored == hash => {
                Err(corrupt("its stored text is not the definition its digest names"))
            }
            Some((stored, _)) => Err(Error::Changed {
                name: definition.name.clone(),
                version: definition.version,
                stored,
                given: hash,
            }),
            None => Err(corrupt("it was neither stored nor found")),
        }
    }

    /// Loads every definition of `dir` ([`read_dir`]) in one transaction: all of them or, on
    /// any problem, none.
    pub fn load_dir(&self, dir: &Path) -> Result<Vec<(PathBuf, WorkflowRef, Loaded)>> {
        let files = read_dir(dir)?;
        self.db.write(|tx| {
            files
                .into_iter()
                .map(|(path, d)| {
                    let loaded = self.load_in(tx, &d)?;
                    Ok((path, WorkflowRef { name: d.name, version: d.version }, loaded))
                })
                .collect()
        })
    }

    /// Every stored definition, by name and version, with how many tasks started under it.
    pub fn list(&self) -> Result<Vec<StoredWorkflow>> {
        Ok(self.db.read(|tx| {
            tx.prepare(LIST)?.query_map(&[], |r| {
                let version = r.get::<i64>(1)?;
                Ok(StoredWorkflow {
                    name: r.get(0)?,
                    version: u32::try_from(version).unwrap_or(0),
                    content_hash: r.get(2)?,
                    loaded_at: r.get(3)?,
                    tasks: r.get(4)?,
                })
            })
        })?)
    }

    /// The definition `name` at `version`, or its latest version; None when not loaded.
    pub fn get(&self, name: &str, version: Option<u32>) -> Result<Option<WorkflowDefinition>> {
        self.db.read(|tx| self.get_in(tx, name, version))
    }

    /// [`Workflows::get`] inside a caller's transaction.
    pub fn get_in(
        &self,
        tx: &Tx<'_>,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<WorkflowDefinition>> {
        let found = tx.query_row(
            tx.dialect(DEFINITION_OF, DEFINITION_OF_PG),
            &[Param::text(name), version.map_or(Param::NULL, |v| Param::int(i64::from(v)))],
            |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?, r.get::<String>(2)?)),
        )?;
        let Some((version, json, stored_hash)) = found else { return Ok(None) };
        let corrupt = |reason: String| Error::Corrupt { name: name.to_owned(), version, reason };
        let definition =
            WorkflowDefinition::parse(&json, Format::Json).map_err(|e| corrupt(e.to_string()))?;
        if definition.name != name || i64::from(definition.version) != version {
            return Err(corrupt(format!(
                "its text names {}@{}",
                definition.name, definition.version
            )));
        }
        // A row rewritten around the store (deleted and inserted again with the old digest)
        // is not taken for the definition that was loaded.
        if content_hash(&definition) != stored_hash {
            return Err(corrupt("its text does not give its digest".to_owned()));
        }
        Ok(Some(definition))
    }

    /// Saves a new task (IDLE) bound to `name` at `version` (its latest version if None), with
    /// the definition's retry limit, in one transaction; returns its machine, which moves by
    /// the definition's table.
    pub fn start(
        &self,
        name: &str,
        version: Option<u32>,
        context: StateContext,
    ) -> Result<StateMachine> {
        self.db.write(|tx| self.start_in(tx, name, version, context))
    }

    /// [`Workflows::start`] inside a caller's transaction.
    pub fn start_in(
        &self,
        tx: &Tx<'_>,
        name: &str,
        version: Option<u32>,
        mut context: StateContext,
    ) -> Result<StateMachine> {
        let definition = self
            .get_in(tx, name, version)?
            .ok_or_else(|| Error::NotLoaded { name: name.to_owned(), version })?;
        if self.states.load_in(tx, &context.task_id)?.is_some() {
            return Err(Error::TaskExists { task_id: context.task_id.as_str().to_owned() });
        }
        if let Some(max) = definition.max_retries {
            context.max_retries = max;
        }
        let machine = StateMachine::new(context)
            .with_table(Arc::new(definition.table))
            .with_clock(tx.database().clock().clone());
        self.states.save_in(tx, machine.persisted())?;
        tx.execute(
            BIND,
            &[
                Param::text(machine.persisted().task_id.as_str()),
                Param::text(&definition.name),
                Param::int(i64::from(definition.version)),
            ],
        )?;
        Ok(machine)
    }

    /// The definition `task` started under; None for a task started without one (it moves by
    /// the compiled-in default table).
    pub fn definition_of(&self, task: &TaskId) -> Result<Option<WorkflowRef>> {
        self.db.read(|tx| self.definition_of_in(tx, task))
    }

    /// [`Workflows::definition_of`] inside a caller's transaction.
    pub fn definition_of_in(&self, tx: &Tx<'_>, task: &TaskId) -> Result<Option<WorkflowRef>> {
        let found = tx.query_row(BOUND_TO, &[Param::text(task.as_str())], |r| {
            Ok((r.get::<String>(0)?, r.get::<u32>(1)?))
        })?;
        Ok(found.map(|(name, version)| WorkflowRef { name, version }))
    }

    /// The task as stored, with the definition it started under (the compiled-in default for a
    /// task started without one).
    pub fn load_task(&self, task: &TaskId) -> Result<(PersistedState, WorkflowDefinition)> {
        self.db.read(|tx| self.load_task_in(tx, task))
    }

    /// [`Workflows::load_task`] inside a caller's transaction (in a write on PostgreSQL, the
    /// load takes the task's lock, as the state store's does).
    pub fn load_task_in(
        &self,
        tx: &Tx<'_>,
        task: &TaskId,
    ) -> Result<(PersistedState, WorkflowDefinition)> {
        let state = self
            .states
            .load_in(tx, task)?
            .ok_or_else(|| Error::UnknownTask { task_id: task.as_str().to_owned() })?;
        let definition = match self.definition_of_in(tx, task)? {
            Some(r) => self
                .get_in(tx, &r.name, Some(r.version))?
                .ok_or(Error::NotLoaded { name: r.name, version: Some(r.version) })?,
            None => WorkflowDefinition::default_workflow().clone(),
        };
        Ok((state, definition))
    }

    /// The task's machine, moving by the definition it started under.
    pub fn machine(&self, task: &TaskId) -> Result<StateMachine> {
        let (state, definition) = self.load_task(task)?;
        Ok(StateMachine::from_persisted(state)
            .with_table(Arc::new(definition.table))
            .with_clock(self.db.clock().clone()))
    }

    /// Applies `event` to the task as stored, by its definition's table, and saves it, in one
    /// transaction; returns the machine after it.
    pub fn apply(
        &self,
        task: &TaskId,
        event: aigentflow_core_states::Event,
        metadata: Option<serde_json::Value>,
    ) -> Result<StateMachine> {
        self.db.write(|tx| {
            let (state, definition) = self.load_task_in(tx, task)?;
            let mut machine = StateMachine::from_persisted(state)
                .with_table(Arc::new(definition.table))
                .with_clock(tx.database().clock().clone());
            machine.apply(event, metadata).map_err(Error::States)?;
            self.states.save_in(tx, machine.persisted())?;
            Ok(machine)
        })
    }
}
