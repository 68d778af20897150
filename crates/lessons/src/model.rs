use aigentflow_core_states::{string_id, time, ProjectId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

string_id!(
    /// The id of a lesson.
    LessonId
);

aigentflow_core_states::closed_enum! {
    /// What a lesson is about.
    pub enum Category as "lesson category" {
        Bug = "bug",
        Pattern = "pattern",
        Preference = "preference",
        Security = "security",
        Performance = "performance",
    }
}

/// A lesson to create. `confidence` defaults to 1.0; no project means a global lesson.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewLesson {
    pub project_id: Option<ProjectId>,
    pub category: Category,
    pub title: String,
    pub summary: String,
    pub details: Option<String>,
    pub tags: Vec<String>,
    pub source_agent: Option<String>,
    pub source_file: Option<String>,
    pub confidence: Option<f64>,
}

impl NewLesson {
    /// A global lesson with a category, a title and a summary; the other fields are set directly.
    pub fn new(category: Category, title: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            project_id: None,
            category,
            title: title.into(),
            summary: summary.into(),
            details: None,
            tags: Vec::new(),
            source_agent: None,
            source_file: None,
            confidence: None,
        }
    }
}

/// A stored lesson.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lesson {
    pub id: LessonId,
    pub project_id: Option<ProjectId>,
    /// The stored text (one of [`Category`] for lessons this store wrote).
    pub category: String,
    pub title: String,
    pub summary: String,
    pub details: Option<String>,
    pub tags: Vec<String>,
    pub source_agent: Option<String>,
    pub source_file: Option<String>,
    pub confidence: f64,
    pub application_count: u64,
    #[serde(with = "time::serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time::serde_millis")]
    pub updated_at: DateTime<Utc>,
}

/// Changes to a lesson: `None` leaves a field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LessonUpdate {
    pub project_id: Option<Option<ProjectId>>,
    pub category: Option<Category>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub details: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub source_agent: Option<Option<String>>,
    pub source_file: Option<Option<String>>,
    pub confidence: Option<f64>,
}

/// How the query text of a search is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueryMode {
    /// Text a person typed: every word is plain text, whatever it contains.
    #[default]
    Words,
    /// FTS5 query syntax, passed through; bad syntax is [`Error::BadQuery`], and so is a query
    /// that starts with `*` (FTS5's request for an internal value, not a search). SQLite only: on
    /// PostgreSQL a raw search is [`Error::Unsupported`] (see the crate documentation).
    ///
    /// [`Error::BadQuery`]: crate::Error::BadQuery
    /// [`Error::Unsupported`]: crate::Error::Unsupported
    Raw,
}

/// The markers of a highlighted snippet: what it is made of is in the crate documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Highlight {
    /// Written before every matched token.
    pub open: String,
    /// Written after every matched token.
    pub close: String,
    /// Written at an end where the snippet was cut from a longer text.
    pub ellipsis: String,
    /// The most tokens (runs of letters and digits) the snippet shows (1 to 64).
    pub tokens: u8,
}

impl Default for Highlight {
    fn default() -> Self {
        Self { open: "[".into(), close: "]".into(), ellipsis: "…".into(), tokens: 16 }
    }
}

/// A search. With no query text (or one with no words), the filtered lessons are listed by
/// confidence, then applications.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    pub query: Option<String>,
    pub mode: QueryMode,
    pub category: Option<Category>,
    /// A project's search also sees the global lessons.
    pub project_id: Option<ProjectId>,
    /// Every tag given must be among the lesson's tags (exact match).
    pub tags: Vec<String>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    /// Adds a highlighted snippet to each text match.
    pub highlight: Option<Highlight>,
}

impl SearchOptions {
    /// A search for what a person typed.
    pub fn text(query: impl Into<String>) -> Self {
        Self { query: Some(query.into()), ..Self::default() }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub lesson: Lesson,
    /// Relevance of a text match, lower is better: FTS5's bm25 on SQLite, the negated
    /// `ts_rank_cd` on PostgreSQL. The two scales differ; compare scores of one search only.
    pub score: Option<f64>,
    /// The best-matching window of the lesson's text with the words of the query marked, when
    /// asked for ([`SearchOptions::highlight`]) by a search with query text.
    pub snippet: Option<String>,
}

/// Whether the search index says what the lessons table says: on SQLite, the FTS5 index against
/// a fresh one; on PostgreSQL, each lesson's stored search words against what its text gives
/// now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum IndexHealth {
    /// The index matches the lessons table.
    Ok { lessons: u64 },
    /// The index differs from the table (`reason` says where); [`crate::LessonsStore::rebuild`]
    /// repairs it.
    Damaged { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_of_categories_snapshot() {
        insta::assert_json_snapshot!(Category::ALL);
    }
}
