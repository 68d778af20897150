//! Lessons learned by aigentflow agents, searchable by words (decision 8): with SQLite FTS5, or
//! with PostgreSQL's full-text search on a server database (decision 13).
//!
//! * [`LessonsStore::create`], [`get`](LessonsStore::get), [`update`](LessonsStore::update),
//!   [`record_application`](LessonsStore::record_application), [`delete`](LessonsStore::delete),
//!   [`by_category`](LessonsStore::by_category), [`most_applied`](LessonsStore::most_applied):
//!   the same on both backends.
//! * [`LessonsStore::search`]: what a person types is redacted, then split into
//!   [`query::pieces`] (at most [`query::MAX_QUERY_CHARS`] characters of them), and the statement
//!   makes every piece a quoted phrase, so quotes, punctuation and `AND`/`OR`/`NOT`/`NEAR` are
//!   plain text and the pieces match in any order. SQLite: an FTS5 query, ranked by bm25 (title
//!   4, summary 2, details 1). PostgreSQL: the text of `websearch_to_tsquery('english', …)`
//!   against the generated, weighted `search_vector` column, ranked by `ts_rank_cd` with the
//!   same 4 : 2 : 1 weights. Then confidence, then applications, then id.
//!   Filters (category, project, exact tags) and paging are the same on both.
//!   [`QueryMode::Raw`] passes FTS5 syntax through and turns bad syntax into
//!   [`Error::BadQuery`]; it has no PostgreSQL counterpart and is [`Error::Unsupported`] there.
//! * Where PostgreSQL finds other lessons than FTS5 for the same words: its `english`
//!   configuration drops stopwords (a query of stopwords alone finds nothing), stems with
//!   Snowball rather than Porter, keeps hyphenated words, URLs, paths and versions whole, folds
//!   no diacritics, and lets a phrase run from the end of the title into the summary. Scores
//!   are on different scales (bm25 is negative, the negated `ts_rank_cd` too; neither means
//!   anything across searches), and `ts_rank_cd` has no term saturation: four mentions in the
//!   details weigh one in the title.
//! * [`SearchOptions::highlight`]: a snippet made the same way on both backends, in time linear
//!   in the lessons (the databases' own snippet functions are quadratic in a lesson's matches):
//!   the window of at most `tokens` tokens (runs of letters and digits) with the most distinct
//!   words of the query, from the column that has the most (title, summary, details: the first
//!   on a tie), every word of the query marked wherever it is; see the `snippet` module.
//! * The index: on SQLite `lessons_fts` (porter stemming) is kept in step by triggers, and
//!   [`LessonsStore::check`] compares it with a fresh one, [`LessonsStore::rebuild`] repairs an
//!   index damaged by writes made around the store. On PostgreSQL it is a generated column:
//!   `check` finds lessons whose stored words the current text search configuration would no
//!   longer give, and `rebuild` works them out again.
//! * Title, summary, details, tags and source file pass through the redactor.
//!
//! Architecture invariant: no driver type (rusqlite, postgres) appears in this crate's public API
//! or its error: the crate does not depend on either driver (the façade's test
//! `drivers::no_crate_but_persistence_and_the_bench_depends_on_a_database_driver` holds this), and tells the database's errors it
//! types (a damaged FTS5 index, raw syntax FTS5 cannot parse) by the persistence error's
//! predicates (`is_corrupt`, `is_statement_error`, `db_message`). Its SQL lives in `store.rs`
//! (both backends, and SQLite's FTS5) and `pg.rs` (PostgreSQL's search).

mod error;
mod model;
mod pg;
pub mod query;
mod snippet;
mod store;

pub use error::{Error, Result};
pub use model::{
    Category, Highlight, IndexHealth, Lesson, LessonId, LessonUpdate, NewLesson, QueryMode,
    SearchHit, SearchOptions,
};
pub use store::LessonsStore;
