//! `lessons …`: add, show, search, update, apply, delete, top, rebuild.

use aigentflow_core_states::ProjectId;
use aigentflow_lessons::{
    Category, Highlight, Lesson, LessonId, LessonUpdate, LessonsStore, NewLesson, QueryMode,
    SearchOptions,
};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::out::{cell, opt, say, table};
use crate::{args, Ctx, Done};

#[derive(Debug, Subcommand)]
pub enum LessonsCommand {
    /// Record a lesson; prints its id.
    Add {
        /// What kind of lesson: bug, pattern, preference, security or performance.
        #[arg(long, value_parser = parse_category)]
        category: Category,
        /// A short title (searched first; not empty).
        #[arg(long, value_parser = args::name)]
        title: String,
        /// What was learned, in a sentence or two (not empty).
        #[arg(long, value_parser = args::name)]
        summary: String,
        #[command(flatten)]
        fields: NewFields,
    },
    /// One lesson in full.
    Show {
        /// The lesson's id.
        #[arg(value_parser = args::id::<LessonId>)]
        id: LessonId,
    },
    /// Search by words (any order, stemmed: "hooks" finds "hook"), best match first.
    Search {
        /// Words to find; none lists the lessons by confidence.
        query: Vec<String>,
        /// Read the query as FTS5 syntax (AND, OR, NOT, "phrases", prefix*, title:word), at most
        /// 1024 characters (typed words past them are left out; raw syntax is refused), not
        /// starting with * (which FTS5 reads as a request for an internal value). SQLite
        /// only: on a PostgreSQL database it is refused (search by words there).
        #[arg(long)]
        raw: bool,
        /// Only lessons of this category.
        #[arg(long, value_parser = parse_category)]
        category: Option<Category>,
        /// A project's search also sees the global lessons (not empty).
        #[arg(long, value_parser = args::id::<ProjectId>)]
        project: Option<ProjectId>,
        /// Lessons carrying every one of these tags (comma-separated; none empty).
        #[arg(long, value_parser = args::tags)]
        tags: Vec<args::Tags>,
        /// At most this many lessons: any whole number from 0.
        #[arg(long, default_value_t = 20, value_parser = args::count, allow_negative_numbers = true)]
        limit: u64,
        /// Skip this many lessons first: any whole number from 0.
        #[arg(long, value_parser = args::count, allow_negative_numbers = true)]
        offset: Option<u64>,
    },
    /// Change the given fields of a lesson; the others stay as they are.
    Update {
        /// The lesson's id.
        #[arg(value_parser = args::id::<LessonId>)]
        id: LessonId,
        /// A new category.
        #[arg(long, value_parser = parse_category)]
        category: Option<Category>,
        /// A new title (not empty).
        #[arg(long, value_parser = args::name)]
        title: Option<String>,
        /// A new summary (not empty).
        #[arg(long, value_parser = args::name)]
        summary: Option<String>,
        /// A new full story (not empty).
        #[arg(long, value_parser = args::name)]
        details: Option<String>,
        /// New tags, replacing the old ones (comma-separated; none empty).
        #[arg(long, value_parser = args::tags)]
        tags: Option<Vec<args::Tags>>,
        /// A new source agent (not empty).
        #[arg(long, value_parser = args::name)]
        source_agent: Option<String>,
        /// A new source file (not empty).
        #[arg(long, value_parser = args::name)]
        source_file: Option<String>,
        /// A new confidence, from 0 to 1 (left out: unchanged).
        #[arg(long, value_parser = args::confidence, allow_negative_numbers = true)]
        confidence: Option<f64>,
        /// Move the lesson to this project (not empty; --global makes it global).
        #[arg(long, value_parser = args::id::<ProjectId>, conflicts_with = "global")]
        project: Option<ProjectId>,
        /// Make the lesson global: remove its project.
        #[arg(long)]
        global: bool,
    },
    /// Count one more application of a lesson.
    Apply {
        /// The lesson's id.
        #[arg(value_parser = args::id::<LessonId>)]
        id: LessonId,
    },
    /// Delete a lesson.
    Delete {
        /// The lesson's id.
        #[arg(value_parser = args::id::<LessonId>)]
        id: LessonId,
    },
    /// The most applied lessons.
    Top {
        /// How many lessons: any whole number from 0.
        #[arg(long, default_value_t = 10, value_parser = args::count, allow_negative_numbers = true)]
        limit: u64,
    },
    /// Rebuild the search index from the lessons (repairs what `aigentflow db check` reports; on
    /// PostgreSQL, works out again the search words a changed text search configuration left
    /// stale).
    Rebuild,
}

/// The optional fields of a new lesson.
#[derive(Debug, Args)]
pub struct NewFields {
    /// The full story: context, what failed, what fixed it (not empty).
    #[arg(long, value_parser = args::name)]
    details: Option<String>,
    /// Comma-separated, e.g. --tags react,testing (none empty; the text is redacted whole
    /// before it is split, so a secret holding a comma goes whole).
    #[arg(long, value_parser = args::tags)]
    tags: Option<Vec<args::Tags>>,
    /// The agent the lesson came from (not empty).
    #[arg(long, value_parser = args::name)]
    source_agent: Option<String>,
    /// The file the lesson is about (not empty).
    #[arg(long, value_parser = args::name)]
    source_file: Option<String>,
    /// From 0 to 1 (left out: 1).
    #[arg(long, value_parser = args::confidence, allow_negative_numbers = true)]
    confidence: Option<f64>,
    /// The project (not empty; left out: a global lesson).
    #[arg(long, value_parser = args::id::<ProjectId>)]
    project: Option<ProjectId>,
}

fn parse_category(text: &str) -> Result<Category, String> {
    text.parse().map_err(|e: aigentflow_core_states::UnknownVariant| e.to_string())
}

fn print_lesson(l: &Lesson) {
    say!("id          {}", l.id);
    say!("title       {}", l.title);
    say!("category    {}", l.category);
    say!("project     {}", opt(l.project_id.as_ref()));
    say!("summary     {}", l.summary);
    if let Some(d) = &l.details {
        // The story keeps its lines, each indented under the first (and each sanitised).
        for (i, line) in d.lines().enumerate() {
            say!("{}{line}", if i == 0 { "details     " } else { "            " });
        }
    }
    say!("tags        {}", if l.tags.is_empty() { "-".into() } else { l.tags.join(", ") });
    say!("source      {} {}", opt(l.source_agent.as_deref()), opt(l.source_file.as_deref()));
    say!("confidence  {}", l.confidence);
    say!("applied     {}", l.application_count);
}

fn rows(lessons: &[(&Lesson, Option<String>)]) -> Vec<Vec<String>> {
    lessons
        .iter()
        .map(|(l, snippet)| {
            vec![
                l.id.to_string(),
                l.category.clone(),
                format!("{:.2}", l.confidence),
                l.application_count.to_string(),
                cell(&l.title, 50),
                snippet.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

pub fn run(ctx: &Ctx, command: LessonsCommand) -> anyhow::Result<Done> {
    match command {
        LessonsCommand::Add { category, title, summary, fields } => {
            let store = LessonsStore::new(ctx.write()?);
            let lesson = store.create(&NewLesson {
                project_id: fields.project,
                category,
                title,
                summary,
                details: fields.details,
                tags: fields.tags.map(args::all_tags).unwrap_or_default(),
                source_agent: fields.source_agent,
                source_file: fields.source_file,
                confidence: fields.confidence,
            })?;
            ctx.out.emit(&lesson, || say!("{}", lesson.id))?;
        }
        LessonsCommand::Show { id } => {
            let store = LessonsStore::new(ctx.read()?);
            let lesson = store.get(&id)?.ok_or_else(|| anyhow::anyhow!("lesson {id} not found"))?;
            ctx.out.emit(&lesson, || print_lesson(&lesson))?;
        }
        LessonsCommand::Search { query, raw, category, project, tags, limit, offset } => {
            let store = LessonsStore::new(ctx.read()?);
            let (open, close) = ctx.out.highlight();
            let options = SearchOptions {
                query: (!query.is_empty()).then(|| query.join(" ")),
                mode: if raw { QueryMode::Raw } else { QueryMode::Words },
                category,
                project_id: project,
                tags: args::all_tags(tags),
                limit: Some(limit),
                offset,
                highlight: Some(Highlight { open, close, ..Highlight::default() }),
            };
            let hits = store.search(&options)?;
            ctx.out.emit(&hits, || {
                let listed: Vec<_> = hits
                    .iter()
                    .map(|h| (&h.lesson, h.snippet.as_deref().map(|s| cell(s, 80))))
                    .collect();
                table(&["ID", "CATEGORY", "CONF", "APPLIED", "TITLE", "MATCH"], &rows(&listed));
            })?;
        }
        LessonsCommand::Update {
            id,
            category,
            title,
            summary,
            details,
            tags,
            source_agent,
            source_file,
            confidence,
            project,
            global,
        } => {
            let store = LessonsStore::new(ctx.write()?);
            let project_id = match (project, global) {
                (Some(p), _) => Some(Some(p)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let lesson = store.update(
                &id,
                &LessonUpdate {
                    project_id,
                    category,
                    title,
                    summary,
                    details: details.map(Some),
                    tags: tags.map(args::all_tags),
                    source_agent: source_agent.map(Some),
                    source_file: source_file.map(Some),
                    confidence,
                },
            )?;
            ctx.out.emit(&lesson, || print_lesson(&lesson))?;
        }
        LessonsCommand::Apply { id } => {
            let store = LessonsStore::new(ctx.write()?);
            let count = store.record_application(&id)?;
            ctx.out.emit(&json!({"id": id, "application_count": count}), || {
                say!("lesson {id} applied {count} times")
            })?;
        }
        LessonsCommand::Delete { id } => {
            let store = LessonsStore::new(ctx.write()?);
            if !store.delete(&id)? {
                anyhow::bail!("lesson {id} not found");
            }
            ctx.out.emit(&json!({"deleted": id}), || say!("deleted lesson {id}"))?;
        }
        LessonsCommand::Top { limit } => {
            let store = LessonsStore::new(ctx.read()?);
            let lessons = store.most_applied(limit)?;
            ctx.out.emit(&lessons, || {
                let listed: Vec<_> = lessons.iter().map(|l| (l, None)).collect();
                table(&["ID", "CATEGORY", "CONF", "APPLIED", "TITLE", ""], &rows(&listed));
            })?;
        }
        LessonsCommand::Rebuild => {
            let store = LessonsStore::new(ctx.write()?);
            let n = store.rebuild()?;
            ctx.out
                .emit(&json!({"lessons": n}), || say!("rebuilt the search index of {n} lessons"))?;
        }
    }
    Ok(Done::Ok)
}
