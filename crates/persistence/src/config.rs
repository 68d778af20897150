//! Configuration values (JSON) by key and scope: `global` or one project, where a project's
//! value overrides the global one for that project. Values pass through the redactor.

use std::fmt;

use aigentflow_core_states::{time, ProjectId};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::bind::{Clean, Param};
use crate::db::{Database, Tx};
use crate::error::{Error, Result};
use crate::redact::redact_json;

/// Where a configuration value applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everywhere, unless a project overrides it.
    Global,
    /// One project.
    Project(ProjectId),
}

impl Scope {
    /// The stored form: `global` or `project:{id}`.
    pub fn as_stored(&self) -> String {
        match self {
            Self::Global => "global".into(),
            Self::Project(p) => format!("project:{p}"),
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "global" => Ok(Self::Global),
            _ => match text.strip_prefix("project:") {
                Some(p) if !p.is_empty() => Ok(Self::Project(ProjectId::new(p))),
                _ => Err(Error::InvalidInput {
                    what: "scope",
                    reason: format!("\"{text}\" is neither `global` nor `project:ID`").into(),
                }),
            },
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_stored())
    }
}

/// One stored configuration value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigEntry {
    pub key: String,
    #[serde(serialize_with = "serialize_scope")]
    pub scope: Scope,
    pub value: Value,
    #[serde(with = "time::serde_millis")]
    pub updated_at: DateTime<Utc>,
}

fn serialize_scope<S: serde::Serializer>(scope: &Scope, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&scope.as_stored())
}

/// The configuration store of one database.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    db: Database,
}

impl ConfigStore {
    /// A configuration store over `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The value in effect for `key`: the project's if `project` has one, else the global one.
    pub fn get(&self, key: &str, project: Option<&ProjectId>) -> Result<Option<ConfigEntry>> {
        let project_scope = project.map(|p| Scope::Project(p.clone()).as_stored());
        self.db.read(|tx| {
            tx.query_row(
                "SELECT key, scope, value, updated_at FROM configurations
                 WHERE key = ?1 AND (scope = 'global' OR scope = ?2)
                 ORDER BY scope = 'global' LIMIT 1",
                &[Param::text(key), Param::opt_text(project_scope.as_deref())],
                row_parts,
            )?
            .map(entry)
            .transpose()
        })
    }

    /// Sets `key` in `scope` to `value`. The entry goes through the redaction policy as the JSON
    /// object `{key: value}`, so a secret-named key (`api_key`, `password`…) keeps no value, and
    /// a key or scope holding a key shape is redacted too.
    pub fn set(&self, key: &str, scope: &Scope, value: &Value) -> Result<ConfigEntry> {
        self.db.write(|tx| self.set_in(tx, key, scope, value))
    }

    /// Sets a value inside a caller's transaction.
    pub fn set_in(
        &self,
        tx: &Tx<'_>,
        key: &str,
        scope: &Scope,
        value: &Value,
    ) -> Result<ConfigEntry> {
        if key.trim().is_empty() {
            return Err(Error::InvalidInput { what: "configuration key", reason: "empty".into() });
        }
        let mut entry = serde_json::Map::new();
        entry.insert(key.to_owned(), value.clone());
        let mut entry = Value::Object(entry);
        redact_json(&mut entry);
        let Value::Object(entry) = entry else { unreachable!("an object stays an object") };
        let Some((key, value)) = entry.into_iter().next() else {
            unreachable!("the object has one entry")
        };
        let now = tx.now();
        let scope = Scope::parse(&Clean::text(&scope.as_stored()))?;
        tx.execute(
            "INSERT INTO configurations (key, value, scope, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(scope, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            &[
                Param::text(&key),
                Param::json(&value)?,
                Param::text(&scope.as_stored()),
                Param::time(now),
            ],
        )?;
        Ok(ConfigEntry { key, scope, value, updated_at: now })
    }

    /// Sets `key` from JSON text; text that is not JSON is an [`Error::InvalidInput`].
    pub fn set_json(&self, key: &str, scope: &Scope, json: &str) -> Result<ConfigEntry> {
        let value: Value = serde_json::from_str(json).map_err(|e| Error::InvalidInput {
            what: "configuration value",
            reason: format!("not JSON ({e}): \"{json}\"").into(),
        })?;
        self.set(key, scope, &value)
    }

    /// Deletes `key` in `scope`; true if it was there.
    pub fn delete(&self, key: &str, scope: &Scope) -> Result<bool> {
        self.db.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM configurations WHERE key = ?1 AND scope = ?2",
                &[Param::text(key), Param::text(&scope.as_stored())],
            )? > 0)
        })
    }

    /// Every value in effect: the global ones, and for a project its own overriding them; by key.
    pub fn list(&self, project: Option<&ProjectId>) -> Result<Vec<ConfigEntry>> {
        let project_scope = project.map(|p| Scope::Project(p.clone()).as_stored());
        self.db.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT key, scope, value, updated_at FROM configurations
                 WHERE scope = 'global' OR scope = ?1 ORDER BY key, scope = 'global'",
            )?;
            let rows = stmt.query_map(&[Param::opt_text(project_scope.as_deref())], row_parts)?;
            let mut out: Vec<ConfigEntry> = Vec::new();
            for row in rows {
                let e = entry(row)?;
                if out.last().is_none_or(|last| last.key != e.key) {
                    out.push(e);
                }
            }
            Ok(out)
        })
    }
}

type Parts = (String, String, String, String);

fn row_parts(r: &crate::Row<'_>) -> Result<Parts> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn entry((key, scope, value, updated_at): Parts) -> Result<ConfigEntry> {
    let value = serde_json::from_str(&value)
        .map_err(|e| Error::corrupt_json("configurations", "value", &key, &e))?;
    let updated_at = time::parse(&updated_at).ok_or_else(|| Error::CorruptRow {
        table: "configurations",
        column: "updated_at",
        id: key.as_str().into(),
        reason: format!("not a timestamp: \"{updated_at}\"").into(),
    })?;
    Ok(ConfigEntry { scope: Scope::parse(&scope)?, key, value, updated_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> ConfigStore {
        ConfigStore::new(Database::open_in_memory().expect("in-memory database opens"))
    }

    #[test]
    fn project_value_overrides_global_for_that_project_only() {
        let s = store();
        let p1 = ProjectId::new("p1");
        s.set("model", &Scope::Global, &json!("opus")).unwrap();
        s.set("model", &Scope::Project(p1.clone()), &json!("haiku")).unwrap();
        assert_eq!(s.get("model", None).unwrap().unwrap().value, "opus");
        assert_eq!(s.get("model", Some(&p1)).unwrap().unwrap().value, "haiku");
        assert_eq!(s.get("model", Some(&ProjectId::new("p2"))).unwrap().unwrap().value, "opus");
        let listed = s.list(Some(&p1)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].scope, Scope::Project(p1.clone()));
        assert!(s.delete("model", &Scope::Project(p1.clone())).unwrap());
        assert!(!s.delete("model", &Scope::Project(p1.clone())).unwrap());
        assert_eq!(s.get("model", Some(&p1)).unwrap().unwrap().value, "opus");
        assert_eq!(s.get("missing", None).unwrap(), None);
    }

    #[test]
    fn invalid_json_and_empty_keys_are_typed_errors_and_write_nothing() {
        let s = store();
        let err = s.set_json("k", &Scope::Global, "{not json").unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert!(err.to_string().contains("not JSON"));
        assert!(matches!(s.set("  ", &Scope::Global, &json!(1)), Err(Error::InvalidInput { .. })));
        assert!(s.list(None).unwrap().is_empty());
        assert!(Scope::parse("project:").is_err());
        assert_eq!(Scope::parse("project:x").unwrap(), Scope::Project("x".into()));
    }

    #[test]
    fn values_are_redacted() {
        let s = store();
        let e = s.set("llm", &Scope::Global, &json!({"api_key": "abc", "model": "m"})).unwrap();
        assert_eq!(e.value, json!({"api_key": "[REDACTED]", "model": "m"}));
        assert_eq!(s.get("llm", None).unwrap().unwrap().value["api_key"], "[REDACTED]");
    }
}
