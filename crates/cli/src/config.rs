//! `config …`: configuration values, global or per project.

use aigentflow_core_states::ProjectId;
use aigentflow_persistence::{ConfigEntry, ConfigStore, Scope};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::out::{say, table, when};
use crate::{args, Ctx, Done};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The value of KEY (a project's own value, else the global one).
    Get {
        /// The key, e.g. max_retries (not empty).
        #[arg(value_parser = args::name)]
        key: String,
        /// Look in this project first, then globally (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
    },
    /// Set KEY to VALUE (JSON if it parses as JSON, else a string), globally or for a project.
    Set {
        /// The key, e.g. max_retries (not empty).
        #[arg(value_parser = args::name)]
        key: String,
        /// The value: JSON such as 3, -1, true or {"a":1}, else taken as a string (so is a
        /// number JSON would store rounded, e.g. one past 64 bits). It may start with `-`.
        #[arg(allow_negative_numbers = true)]
        value: String,
        /// Set it for this project only (it then overrides the global value there; not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
    },
    /// Remove KEY from a scope.
    Unset {
        /// The key to remove (not empty).
        #[arg(value_parser = args::name)]
        key: String,
        /// Remove this project's own value (the global one then applies again; not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
    },
    /// Every value that applies (to a project, with its overrides).
    List {
        /// The values that apply to this project: its own, and the global ones it does not
        /// override (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
    },
}

fn scope(project: Option<ProjectId>) -> Scope {
    project.map_or(Scope::Global, Scope::Project)
}

pub fn run(ctx: &Ctx, command: ConfigCommand) -> anyhow::Result<Done> {
    let print_entries = |entries: &[ConfigEntry]| {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![e.key.clone(), e.scope.to_string(), e.value.to_string(), when(e.updated_at)]
            })
            .collect();
        table(&["KEY", "SCOPE", "VALUE", "UPDATED"], &rows);
    };
    match command {
        ConfigCommand::Get { key, project } => {
            let store = ConfigStore::new(ctx.read()?);
            let entry = store
                .get(&key, project.as_ref())?
                .ok_or_else(|| anyhow::anyhow!("no configuration value \"{key}\""))?;
            ctx.out.emit(&entry, || say!("{}", entry.value))?;
        }
        ConfigCommand::Set { key, value, project } => {
            let store = ConfigStore::new(ctx.write()?);
            // Text that is not JSON, or whose numbers JSON would store rounded, is kept as text.
            let value = args::exact_json(&value).unwrap_or(Value::String(value));
            let entry = store.set(&key, &scope(project), &value)?;
            ctx.out.emit(&entry, || print_entries(std::slice::from_ref(&entry)))?;
        }
        ConfigCommand::Unset { key, project } => {
            let store = ConfigStore::new(ctx.write()?);
            let scope = scope(project);
            if !store.delete(&key, &scope)? {
                anyhow::bail!("no configuration value \"{key}\" in scope {scope}");
            }
            ctx.out.emit(&json!({"removed": key, "scope": scope.to_string()}), || {
                say!("removed {key} from {scope}")
            })?;
        }
        ConfigCommand::List { project } => {
            let store = ConfigStore::new(ctx.read()?);
            let entries = store.list(project.as_ref())?;
            ctx.out.emit(&entries, || print_entries(&entries))?;
        }
    }
    Ok(Done::Ok)
}
