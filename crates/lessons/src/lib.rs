//! Lessons learned by aigentflow agents, searchable with SQLite FTS5 (decision 8).
//!
//! * [`LessonsStore::create`], [`get`](LessonsStore::get), [`update`](LessonsStore::update),
//!   [`record_application`](LessonsStore::record_application), [`delete`](LessonsStore::delete),
//!   [`by_category`](LessonsStore::by_category), [`most_applied`](LessonsStore::most_applied).
//! * [`LessonsStore::search`]: what a person types is turned into a safe FTS5 query
//!   ([`query::safe_match`]): every whitespace-separated word becomes a quoted phrase, so quotes,
//!   punctuation and `AND`/`OR`/`NOT`/`NEAR` are plain text and the words match in any order.
//!   Results rank by bm25 (title weighs most), then confidence, then applications.
//!   [`QueryMode::Raw`] passes FTS5 syntax through and turns bad syntax into [`Error::BadQuery`].
//! * The index (`lessons_fts`, porter stemming) is kept in step by triggers;
//!   [`LessonsStore::check`] runs FTS5's integrity-check against the table and
//!   [`LessonsStore::rebuild`] repairs an index damaged by writes made around the store.
//! * Title, summary, details, tags and source file pass through the redactor.
//!
//! Architecture invariant: no rusqlite type appears in this crate's public API; its SQL lives in
//! `store.rs`.

mod error;
mod model;
pub mod query;
mod store;

pub use error::{Error, Result};
pub use model::{
    Category, Highlight, IndexHealth, Lesson, LessonId, LessonUpdate, NewLesson, QueryMode,
    SearchHit, SearchOptions,
};
pub use store::LessonsStore;
