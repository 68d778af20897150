//! [`LessonsStore`]: its SQL, and the SQLite side of search, check and rebuild (the PostgreSQL
//! side is `pg.rs`).

use std::collections::HashMap;

use aigentflow_persistence::Row;
use aigentflow_persistence::{Backend, Clean, Database, Error as PError, Param, Tx};

use crate::error::{Error, Result};
use crate::model::{
    Category, IndexHealth, Lesson, LessonId, LessonUpdate, NewLesson, QueryMode, SearchHit,
    SearchOptions,
};
use crate::{query, snippet};

pub(crate) const COLUMNS: &str =
    "l.id, l.project_id, l.category, l.title, l.summary, l.details, l.tags, \
    l.source_agent, l.source_file, l.confidence, l.application_count, l.created_at, l.updated_at";

/// The lessons of one database.
#[derive(Debug, Clone)]
pub struct LessonsStore {
    db: Database,
}

impl LessonsStore {
    /// The lessons store over `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Creates a lesson (text redacted first) and returns it as stored.
    pub fn create(&self, new: &NewLesson) -> Result<Lesson> {
        self.db.write(|tx| self.create_in(tx, new))
    }

    /// Creates a lesson inside a caller's transaction.
    pub fn create_in(&self, tx: &Tx<'_>, new: &NewLesson) -> Result<Lesson> {
        let title = required("title", &new.title)?;
        let summary = required("summary", &new.summary)?;
        if let Some(p) = &new.project_id {
            required("project id", p.as_str())?;
        }
        let confidence = confidence(new.confidence.unwrap_or(1.0))?;
        let tags = tags_param(&new.tags)?;
        let id = LessonId::random();
        tx.execute(
            "INSERT INTO lessons (id, project_id, category, title, summary, details, tags,
                 source_agent, source_file, confidence, application_count, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?11)",
            &[
                Param::text(id.as_str()),
                Param::opt_text(new.project_id.as_ref().map(|p| p.as_str())),
                Param::text(new.category.as_str()),
                Param::text(title),
                Param::text(summary),
                Param::opt_text(new.details.as_deref()),
                tags,
                Param::opt_text(new.source_agent.as_deref()),
                Param::opt_text(new.source_file.as_deref()),
                Param::real(confidence),
                Param::time(tx.now()),
            ],
        )?;
        get_in(tx, id.as_str())?.ok_or_else(|| Error::NotFound { id: id.to_string().into() })
    }

    /// The lesson with this id, if any.
    pub fn get(&self, id: &LessonId) -> Result<Option<Lesson>> {
        let id = id.as_str();
        self.db.read(|tx| get_in(tx, id))
    }

    /// Changes the given fields (text redacted first); `updated_at` moves. Returns the lesson.
    /// `project_id: Some(None)` makes it global; an empty project id is
    /// [`Error::InvalidInput`], never stored.
    pub fn update(&self, id: &LessonId, update: &LessonUpdate) -> Result<Lesson> {
        let id = id.as_str();
        if let Some(Some(p)) = &update.project_id {
            required("project id", p.as_str())?;
        }
        let mut sets: Vec<&str> = Vec::new();
        let mut values = Vec::new();
        let mut set = |column: &'static str, value| {
            sets.push(column);
            values.push(value);
        };
        if let Some(p) = &update.project_id {
            set("project_id", Param::opt_text(p.as_ref().map(|p| p.as_str())));
        }
        if let Some(c) = update.category {
            set("category", Param::text(c.as_str()));
        }
        if let Some(t) = &update.title {
            set("title", Param::text(required("title", t)?));
        }
        if let Some(s) = &update.summary {
            set("summary", Param::text(required("summary", s)?));
        }
        if let Some(d) = &update.details {
            set("details", Param::opt_text(d.as_deref()));
        }
        if let Some(t) = &update.tags {
            set("tags", tags_param(t)?);
        }
        if let Some(a) = &update.source_agent {
            set("source_agent", Param::opt_text(a.as_deref()));
        }
        if let Some(f) = &update.source_file {
            set("source_file", Param::opt_text(f.as_deref()));
        }
        if let Some(c) = update.confidence {
            set("confidence", Param::real(confidence(c)?));
        }
        self.db.write(|tx| {
            let mut sql = String::from("UPDATE lessons SET updated_at = ?");
            for column in &sets {
                sql.push_str(", ");
                sql.push_str(column);
                sql.push_str(" = ?");
            }
            sql.push_str(" WHERE id = ?");
            let mut all = vec![Param::time(tx.now())];
            all.extend(values.iter().cloned());
            all.push(Param::text(id));
            let changed = tx.execute(&sql, &all)?;
            if changed == 0 {
                return Err(Error::NotFound { id: id.into() });
            }
            get_in(tx, id)?.ok_or_else(|| Error::NotFound { id: id.into() })
        })
    }

    /// Counts one more application of the lesson; returns the new count.
    pub fn record_application(&self, id: &LessonId) -> Result<u64> {
        let id = id.as_str();
        self.db.write(|tx| {
            let count: Option<i64> = tx.query_row(
                "UPDATE lessons
                 SET application_count = COALESCE(application_count, 0) + 1, updated_at = ?1
                 WHERE id = ?2 RETURNING application_count",
                &[Param::time(tx.now()), Param::text(id)],
                |r| r.get(0),
            )?;
            count.map(|c| c as u64).ok_or_else(|| Error::NotFound { id: id.into() })
        })
    }

    /// Deletes the lesson; false if there was none.
    pub fn delete(&self, id: &LessonId) -> Result<bool> {
        let id = id.as_str();
        self.db.write(|tx| {
            Ok(tx.execute("DELETE FROM lessons WHERE id = ?1", &[Param::text(id)])? > 0)
        })
    }

    /// Lessons of one category, by confidence then applications.
    pub fn by_category(&self, category: Category, limit: u64) -> Result<Vec<Lesson>> {
        let options =
            SearchOptions { category: Some(category), limit: Some(limit), ..Default::default() };
        Ok(self.search(&options)?.into_iter().map(|hit| hit.lesson).collect())
    }

    /// The most applied lessons.
    pub fn most_applied(&self, limit: u64) -> Result<Vec<Lesson>> {
        self.db.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM lessons l {} LIMIT ?1",
                tx.dialect(MOST_APPLIED_ORDER, MOST_APPLIED_ORDER_PG)
            ))?;
            let raws = stmt.query_map(&[Param::int(clamp(limit))], RawLesson::read)?;
            raws.into_iter().map(RawLesson::into_lesson).collect()
        })
    }

    /// Searches the lessons; see [`SearchOptions`] and the crate documentation.
    pub fn search(&self, options: &SearchOptions) -> Result<Vec<SearchHit>> {
        if let Some(h) = &options.highlight {
            if !(1..=64).contains(&h.tokens) {
                return Err(Error::InvalidInput {
                    what: "snippet length",
                    reason: format!("{} tokens; give 1 to 64", h.tokens).into(),
                });
            }
        }
        self.db.read(|tx| match tx.backend() {
            Backend::Sqlite => search_sqlite(tx, options),
            Backend::Postgres => crate::pg::search(tx, options),
        })
    }

    /// Checks that the search index holds exactly what the lessons table says, reading only.
    ///
    /// On SQLite a fresh index of the lessons is built in the connection's TEMP schema with the
    /// same tokenizer, and every (term, lesson, column, offset) of the stored index is compared
    /// with it both ways (FTS5's own `integrity-check` is an INSERT, which a read-only database
    /// refuses). On PostgreSQL the index is a generated column, which no write can leave out of
    /// step with its row; what can go stale is the words themselves, when the `english` text
    /// search configuration changes after they were worked out: every lesson's stored words are
    /// compared with what its text gives now.
    pub fn check(&self) -> Result<IndexHealth> {
        self.db.read(|tx| match tx.backend() {
            Backend::Sqlite => check_sqlite(tx),
            Backend::Postgres => crate::pg::check(tx),
        })
    }

    /// Rebuilds the index from the lessons table (on PostgreSQL, works out again the search
    /// words [`check`](Self::check) finds stale); returns how many lessons it holds.
    pub fn rebuild(&self) -> Result<u64> {
        self.db.write(|tx| match tx.backend() {
            Backend::Sqlite => rebuild_sqlite(tx),
            Backend::Postgres => crate::pg::rebuild(tx),
        })
    }
}

/// The order of [`LessonsStore::most_applied`]; PostgreSQL sorts NULL highest, so it says
/// `NULLS LAST` to put them where SQLite does.
const MOST_APPLIED_ORDER: &str = "ORDER BY l.application_count DESC, l.confidence DESC, l.id";
const MOST_APPLIED_ORDER_PG: &str =
    "ORDER BY l.application_count DESC NULLS LAST, l.confidence DESC NULLS LAST, l.id";

// ---- SQLite: FTS5 -------------------------------------------------------------------------

/// The tokenizer of `lessons_fts` (`migrations/V4__lessons_stemming.sql`), which every FTS5
/// table that must read words as the index does is made with (a macro, for `concat!`: batches
/// of SQL are static text).
macro_rules! tokenize {
    () => {
        "porter unicode61 remove_diacritics 2"
    };
}

/// bm25 weights of title, summary and details: a word in the title counts most.
const RANK: &str = "bm25(lessons_fts, 4.0, 2.0, 1.0)";

/// What an FTS5 search matches: the typed pieces, bound as one JSON array that the statement
/// quotes into phrases (see [`query`]), or a raw FTS5 query, bound as it is.
enum Fts {
    Pieces(Param<'static>),
    Raw(String),
}

impl Fts {
    /// The operand of `MATCH`, reading the value bound at `at` (`?`, `?1`…): the pieces each
    /// quoted as an FTS5 string (`"` doubled), joined by blanks (FTS5's implicit AND).
    fn operand(&self, at: &str) -> String {
        match self {
            Fts::Pieces(_) => format!(
                "(SELECT group_concat('\"' || replace(p.value, '\"', '\"\"') || '\"', ' ')
                  FROM json_each({at}) AS p)"
            ),
            Fts::Raw(_) => at.to_owned(),
        }
    }

    /// The value the operand reads.
    fn param(&self) -> Param<'_> {
        match self {
            Fts::Pieces(pieces) => pieces.clone(),
            Fts::Raw(query) => Param::text(query),
        }
    }
}

/// [`LessonsStore::search`] on SQLite.
fn search_sqlite(tx: &Tx<'_>, options: &SearchOptions) -> Result<Vec<SearchHit>> {
    let query = options.query.as_deref().unwrap_or("");
    let fts = match options.mode {
        QueryMode::Words => query::pieces_param(query)?.map(Fts::Pieces),
        QueryMode::Raw => {
            // Raw syntax cannot be cut short as typed text is: a longer query is refused (FTS5's
            // time grows with the square of its terms: 8,000 took 4 s, 20,000 over 20 s).
            let chars = query.chars().count();
            if chars > query::MAX_QUERY_CHARS {
                return Err(Error::InvalidInput {
                    what: "raw search query",
                    reason: format!(
                        "{chars} characters; a raw query takes at most {}",
                        query::MAX_QUERY_CHARS
                    )
                    .into(),
                });
            }
            // FTS5 takes a query whose first character is `*` as a request for one of its
            // internal values, not a search: `*reads` or `*id` would list every lesson, and
            // anything else is FTS5's "unknown special query", which says nothing of the syntax.
            if query.starts_with('*') {
                return Err(Error::BadQuery {
                    query: query.into(),
                    reason: "a raw query cannot start with * (FTS5 reads that as a request for \
                             an internal value, not a search); * ends a prefix, as in auth*"
                        .into(),
                });
            }
            (!query.trim().is_empty()).then(|| Fts::Raw(query.to_owned()))
        }
    };
    let raw = options.mode == QueryMode::Raw;
    (|| -> Result<Vec<SearchHit>> {
        // An unfiltered page ranks on the index alone; only its candidates meet their
        // lessons. Any other search is one statement.
        let (sql, values, scores) = match (&fts, options.limit) {
            (Some(m), Some(limit)) if !filtered(options) => {
                let k = usize::try_from(options.offset.unwrap_or(0).saturating_add(limit))
                    .unwrap_or(usize::MAX);
                let (sql, values, scores) = page(best_matches(tx, m, k)?, options);
                (sql, values, Some(scores))
            }
            _ => {
                let (sql, values) = select(options, fts.as_ref());
                (sql, values, None)
            }
        };
        let mut stmt = tx.prepare(&sql)?;
        let rows = stmt.query_map(&values, |r| {
            Ok((RawLesson::read(r)?, r.get::<Option<f64>>(13)?, r.get::<i64>(14)?))
        })?;
        let snippets = match (&fts, &options.highlight) {
            (Some(m), Some(h)) => {
                let asked = match m {
                    Fts::Pieces(pieces) => pieces.clone(),
                    Fts::Raw(raw) => Param::json(&serde_json::Value::from(query::raw_words(raw)))?,
                };
                let texts = rows.iter().map(|(raw, ..)| raw.texts());
                Some(snippet::snippets(texts, h, |words| matching_words(tx, asked, words))?)
            }
            _ => None,
        };
        let mut snippets = snippets.map(Vec::into_iter);
        let mut hits = Vec::with_capacity(rows.len());
        for (raw, score, rowid) in rows {
            let score = scores.as_ref().map_or(score, |s| s.get(&rowid).copied());
            let snippet = snippets.as_mut().and_then(Iterator::next);
            hits.push(SearchHit { lesson: raw.into_lesson()?, score, snippet });
        }
        Ok(hits)
    })()
    .map_err(|e| if raw { bad_query(e, query) } else { e })
}

/// The TEMP tables of [`matching_words`]: FTS5 with the index's tokenizer, and its terms.
const DROP_SNIPPET_TABLES: &str = "
    DROP TABLE IF EXISTS temp.lessons_snippet_terms;
    DROP TABLE IF EXISTS temp.lessons_snippet_words;";

/// Which of `words` (the distinct words of a search's snippets, see [`snippet`]) FTS5 reads as
/// words of the query (`asked`: a JSON array of its text): the ids of those that give a term
/// (a porter stem of `lessons_fts`'s tokenizer) the query's text gives too. Both are written to
/// an FTS5 table in the connection's TEMP schema, one row per word, and their terms compared
/// through `fts5vocab` (only which row holds a term matters: `detail=none`). Time linear in the
/// words, where FTS5's `highlight()` of a column is quadratic in its matches. The TEMP tables go
/// whatever happened.
fn matching_words(tx: &Tx<'_>, asked: Param<'_>, words: &[&str]) -> Result<Vec<usize>> {
    tx.execute_batch(DROP_SNIPPET_TABLES)?;
    let found = (|| -> Result<Vec<i64>> {
        tx.execute_batch(concat!(
            "CREATE VIRTUAL TABLE temp.lessons_snippet_words
                 USING fts5(word, detail=none, columnsize=0, tokenize='",
            tokenize!(),
            "');
             CREATE VIRTUAL TABLE temp.lessons_snippet_terms
                 USING fts5vocab(temp, lessons_snippet_words, instance);"
        ))?;
        let insert = "INSERT INTO temp.lessons_snippet_words(rowid, word)";
        tx.execute(&format!("{insert} SELECT -1 - key, value FROM json_each(?1)"), &[asked])?;
        let words = Param::json(&serde_json::Value::from(words))?;
        tx.execute(&format!("{insert} SELECT 1 + key, value FROM json_each(?1)"), &[words])?;
        let mut stmt = tx.prepare(
            "SELECT DISTINCT w.doc - 1 FROM temp.lessons_snippet_terms w
             WHERE w.doc > 0 AND w.term IN
                 (SELECT q.term FROM temp.lessons_snippet_terms q WHERE q.doc < 0)",
        )?;
        Ok(stmt.query_map(&[], |r| r.get::<i64>(0))?)
    })();
    tx.execute_batch(DROP_SNIPPET_TABLES)?;
    Ok(found?.into_iter().filter_map(|id| usize::try_from(id).ok()).collect())
}

/// [`LessonsStore::check`] on SQLite.
fn check_sqlite(tx: &Tx<'_>) -> Result<IndexHealth> {
    let outcome = compare_index(tx);
    // The TEMP objects go whatever happened; they never touch the database file.
    tx.execute_batch(DROP_CHECK_TABLES)?;
    match outcome {
        Ok(None) => {
            let n: i64 =
                tx.query_row("SELECT COUNT(*) FROM lessons", &[], |r| r.get(0))?.unwrap_or(0);
            Ok(IndexHealth::Ok { lessons: n as u64 })
        }
        Ok(Some(reason)) => Ok(IndexHealth::Damaged { reason }),
        Err(e) if e.is_corrupt() => Ok(IndexHealth::Damaged { reason: e.to_string() }),
        Err(e) => Err(e.into()),
    }
}

/// [`LessonsStore::rebuild`] on SQLite: FTS5's rebuild.
fn rebuild_sqlite(tx: &Tx<'_>) -> Result<u64> {
    tx.execute_batch("INSERT INTO lessons_fts(lessons_fts) VALUES ('rebuild')")?;
    let n: i64 = tx.query_row("SELECT COUNT(*) FROM lessons", &[], |r| r.get(0))?.unwrap_or(0);
    tracing::info!(lessons = n, "rebuilt the lessons search index");
    Ok(n as u64)
}

/// The TEMP tables of [`compare_index`].
const DROP_CHECK_TABLES: &str = "
    DROP TABLE IF EXISTS temp.lessons_check_stored;
    DROP TABLE IF EXISTS temp.lessons_check_fresh_vocab;
    DROP TABLE IF EXISTS temp.lessons_check_fresh;";

/// Compares the stored index with a fresh one of the lessons table (see [`LessonsStore::check`]);
/// None when they agree, else what differs.
fn compare_index(tx: &Tx<'_>) -> aigentflow_persistence::Result<Option<String>> {
    tx.execute_batch(DROP_CHECK_TABLES)?;
    tx.execute_batch(concat!(
        "CREATE VIRTUAL TABLE temp.lessons_check_fresh USING fts5(
             title, summary, details, tokenize='",
        tokenize!(),
        "');
         INSERT INTO temp.lessons_check_fresh(rowid, title, summary, details)
             SELECT rowid, title, summary, details FROM main.lessons;
         CREATE VIRTUAL TABLE temp.lessons_check_stored
             USING fts5vocab(main, lessons_fts, instance);
         CREATE VIRTUAL TABLE temp.lessons_check_fresh_vocab
             USING fts5vocab(temp, lessons_check_fresh, instance);"
    ))?;
    let differs = |one: &str, other: &str| {
        tx.query_row(
            &format!(
                "SELECT term, doc FROM (
                     SELECT term, doc, col, offset FROM temp.{one}
                     EXCEPT SELECT term, doc, col, offset FROM temp.{other})
                 ORDER BY doc, term LIMIT 1"
            ),
            &[],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )
    };
    if let Some((term, doc)) = differs("lessons_check_stored", "lessons_check_fresh_vocab")? {
        return Ok(Some(format!(
            "the index holds \"{term}\" for row {doc}, which the lessons table does not say"
        )));
    }
    if let Some((term, doc)) = differs("lessons_check_fresh_vocab", "lessons_check_stored")? {
        return Ok(Some(format!("the index lacks \"{term}\" of the lesson at row {doc}")));
    }
    Ok(None)
}

// ---- both backends -------------------------------------------------------------------------

fn get_in(tx: &Tx<'_>, id: &str) -> Result<Option<Lesson>> {
    let raw = tx.query_row(
        &format!("SELECT {COLUMNS} FROM lessons l WHERE l.id = ?1"),
        &[Param::text(id)],
        RawLesson::read,
    )?;
    raw.map(RawLesson::into_lesson).transpose()
}

/// The SELECT of a search and its bound values. Columns: the lesson, then the bm25 score and
/// the rowid.
///
/// Whether a search narrows the lessons by more than its text.
fn filtered(o: &SearchOptions) -> bool {
    o.category.is_some() || o.project_id.is_some() || !o.tags.is_empty()
}

/// The best `k` matches of an FTS5 query as (rowid, bm25 score), best first, with every match
/// that ties the k-th: bm25 is worked out once per match, and the cut is exact whatever the ties.
fn best_matches(tx: &Tx<'_>, fts: &Fts, k: usize) -> Result<Vec<(i64, f64)>> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = tx.prepare(&format!(
        "SELECT rowid, {RANK} FROM lessons_fts WHERE lessons_fts MATCH {}",
        fts.operand("?1")
    ))?;
    let mut scored =
        stmt.query_map(&[fts.param()], |r| Ok((r.get::<i64>(0)?, r.get::<f64>(1)?)))?;
    if scored.len() > k {
        let cut = scored.select_nth_unstable_by(k - 1, |a, b| a.1.total_cmp(&b.1)).1 .1;
        scored.retain(|&(_, score)| score <= cut);
    }
    scored.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(scored)
}

/// The page of `best` (see [`best_matches`]): its lessons in rank order, equal scores ordered by
/// confidence, applications and id as every search orders them; and the score of each rowid.
fn page(
    best: Vec<(i64, f64)>,
    o: &SearchOptions,
) -> (String, Vec<Param<'static>>, HashMap<i64, f64>) {
    // Each candidate as [rowid, rank], equal scores sharing a rank.
    let mut ranked = Vec::with_capacity(best.len());
    let mut rank = 0;
    for (i, &(rowid, score)) in best.iter().enumerate() {
        if i > 0 && score != best[i - 1].1 {
            rank = i;
        }
        ranked.push(format!("[{rowid},{rank}]"));
    }
    let sql = format!(
        "SELECT {COLUMNS}, NULL, l.rowid FROM json_each(?1) c
         CROSS JOIN lessons l ON l.rowid = c.value ->> 0
         ORDER BY c.value ->> 1, l.confidence DESC, l.application_count DESC, l.id
         LIMIT ?2 OFFSET ?3"
    );
    let values = vec![
        Param::text_owned(format!("[{}]", ranked.join(","))),
        Param::int(o.limit.map_or(-1, clamp)),
        Param::int(o.offset.map_or(0, clamp)),
    ];
    (sql, values, best.into_iter().collect())
}

/// Any search but an unfiltered page of a text search (see [`best_matches`]), as one statement:
/// every match joined to its lesson, the filters applied, in the order every search uses.
fn select<'a>(o: &'a SearchOptions, fts: Option<&'a Fts>) -> (String, Vec<Param<'a>>) {
    let mut values = Vec::new();
    let limit = o.limit.map_or(-1, clamp);
    let offset = o.offset.map_or(0, clamp);
    let mut sql = match fts {
        Some(m) => {
            values.push(m.param());
            format!(
                "SELECT {COLUMNS}, {RANK} AS score, l.rowid
                 FROM lessons_fts CROSS JOIN lessons l ON l.rowid = lessons_fts.rowid
                 WHERE lessons_fts MATCH {}",
                m.operand("?")
            )
        }
        None => format!("SELECT {COLUMNS}, NULL AS score, l.rowid FROM lessons l WHERE 1 = 1"),
    };
    if let Some(c) = o.category {
        sql.push_str(" AND l.category = ?");
        values.push(Param::text(c.as_str()));
    }
    if let Some(p) = &o.project_id {
        sql.push_str(" AND (l.project_id = ? OR l.project_id IS NULL)");
        values.push(Param::text(p.as_str()));
    }
    for tag in &o.tags {
        sql.push_str(
            " AND json_valid(l.tags) AND EXISTS
                (SELECT 1 FROM json_each(l.tags) t WHERE t.type = 'text' AND t.value = ?)",
        );
        values.push(Param::text(tag));
    }
    sql.push_str(
        " ORDER BY score, l.confidence DESC, l.application_count DESC, l.id LIMIT ? OFFSET ?",
    );
    values.push(Param::int(limit));
    values.push(Param::int(offset));
    (sql, values)
}

pub(crate) fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A raw-mode query's SQL error as [`Error::BadQuery`] with SQLite's message; other errors
/// unchanged. (SQLite only: FTS5 reports bad syntax as SQLite's generic error.)
fn bad_query(e: Error, query: &str) -> Error {
    if let Error::Persistence(p) = &e {
        if let (true, Some(reason)) = (p.is_statement_error(), p.db_message()) {
            return Error::BadQuery { query: query.into(), reason: reason.into() };
        }
    }
    e
}

fn required<'a>(what: &'static str, text: &'a str) -> Result<&'a str> {
    if text.trim().is_empty() {
        return Err(Error::InvalidInput { what, reason: "it is empty".into() });
    }
    Ok(text)
}

fn confidence(c: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&c) {
        return Err(Error::InvalidInput {
            what: "confidence",
            reason: format!("{c} is not between 0 and 1").into(),
        });
    }
    Ok(c)
}

/// Tags as stored: a JSON array of distinct, trimmed, redacted strings; none is NULL.
fn tags_param(tags: &[String]) -> Result<Param<'static>> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = Clean::text(required("tag", tag)?.trim()).into_owned();
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.is_empty() {
        return Ok(Param::NULL);
    }
    Ok(Param::json(&serde_json::Value::from(out))?)
}

/// A row as stored.
pub(crate) struct RawLesson {
    pub(crate) id: String,
    project_id: Option<String>,
    category: String,
    title: String,
    summary: String,
    details: Option<String>,
    tags: Option<String>,
    source_agent: Option<String>,
    source_file: Option<String>,
    confidence: Option<f64>,
    application_count: Option<i64>,
    created_at: String,
    updated_at: String,
}

impl RawLesson {
    /// The searched columns: title, summary, details.
    pub(crate) fn texts(&self) -> [Option<&str>; 3] {
        [Some(&self.title), Some(&self.summary), self.details.as_deref()]
    }

    pub(crate) fn read(r: &Row<'_>) -> aigentflow_persistence::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            project_id: r.get(1)?,
            category: r.get(2)?,
            title: r.get(3)?,
            summary: r.get(4)?,
            details: r.get(5)?,
            tags: r.get(6)?,
            source_agent: r.get(7)?,
            source_file: r.get(8)?,
            confidence: r.get(9)?,
            application_count: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
        })
    }

    pub(crate) fn into_lesson(self) -> Result<Lesson> {
        let corrupt = |column: &'static str, reason: String| {
            Error::from(aigentflow_persistence::Error::CorruptRow {
                table: "lessons",
                column,
                id: self.id.clone().into(),
                reason: reason.into(),
            })
        };
        let tags = match self.tags.as_deref() {
            None | Some("") => Vec::new(),
            Some(text) => serde_json::from_str::<Vec<String>>(text)
                .map_err(|e| corrupt("tags", format!("not a JSON array of strings: {e}")))?,
        };
        let stamp = |column, text: &str| PError::read_time("lessons", column, &self.id, text);
        // NULL is the column's default (never applied); a negative count is no count at all.
        let application_count = match self.application_count {
            None => 0,
            Some(n) => u64::try_from(n).map_err(|_| {
                corrupt("application_count", format!("{n} is not a count of applications"))
            })?,
        };
        Ok(Lesson {
            created_at: stamp("created_at", &self.created_at)?,
            updated_at: stamp("updated_at", &self.updated_at)?,
            id: LessonId::new(self.id),
            project_id: self.project_id.map(aigentflow_core_states::ProjectId::new),
            category: self.category,
            title: self.title,
            summary: self.summary,
            details: self.details,
            tags,
            source_agent: self.source_agent,
            source_file: self.source_file,
            confidence: self.confidence.unwrap_or(1.0),
            application_count,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::Category;

    /// The typed pieces become FTS5 strings in the statement, after binding: each quoted, its
    /// `"` doubled, joined by blanks; a redaction of the typed text cannot unbalance them.
    #[test]
    fn pieces_become_quoted_phrases() {
        let db = Database::open_in_memory().unwrap();
        let operand = |typed: &str| -> String {
            let fts = Fts::Pieces(query::pieces_param(typed).unwrap().unwrap());
            db.read(|tx| {
                tx.query_row(&format!("SELECT {}", fts.operand("?1")), &[fts.param()], |r| {
                    r.get::<String>(0)
                })
            })
            .unwrap()
            .unwrap()
        };
        assert_eq!(operand("React hooks"), r#""React" "hooks""#);
        assert_eq!(operand(r#"say "hi""#), r#""say" """hi""""#);
        assert_eq!(operand("NEAR(a b) OR c*"), r#""NEAR(a" "b)" "OR" "c*""#);
        assert_eq!(operand(r#"token: "abc" x"#), r#""token:" """[REDACTED]""" "x""#);
    }

    /// An empty or blank project id is refused on create and update, and the lesson keeps its
    /// project; making a lesson global is `Some(None)`.
    #[test]
    fn an_empty_project_id_is_refused_and_global_is_said_with_none() {
        let store = LessonsStore::new(Database::open_in_memory().unwrap());
        let new = |project: Option<&str>| NewLesson {
            project_id: project.map(Into::into),
            ..NewLesson::new(Category::Bug, "title", "summary")
        };
        for blank in ["", " ", "\t\n"] {
            let err = store.create(&new(Some(blank))).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { what: "project id", .. }),
                "{blank:?}: {err}"
            );
        }
        let lesson = store.create(&new(Some("p"))).unwrap();
        for blank in ["", "  "] {
            let update =
                LessonUpdate { project_id: Some(Some(blank.into())), ..Default::default() };
            let err = store.update(&lesson.id, &update).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { what: "project id", .. }),
                "{blank:?}: {err}"
            );
        }
        assert_eq!(store.get(&lesson.id).unwrap().unwrap().project_id, Some("p".into()));
        let global = LessonUpdate { project_id: Some(None), ..Default::default() };
        assert_eq!(store.update(&lesson.id, &global).unwrap().project_id, None);
    }
}
