//! The lessons SQL of PostgreSQL: search over the generated, weighted `lessons.search_vector`
//! (`migrations-postgres/V1__schema.sql`), and its check and rebuild.
//!
//! Typed text reaches the server only as its redacted [`query::pieces`], bound as one JSON array
//! that the statement makes into the text of `websearch_to_tsquery('english', …)`: one quoted
//! phrase per piece, which that function reads without ever failing. Raw FTS5 syntax has no
//! counterpart here: `to_tsquery` would take operators from what a person types and fail on bad
//! syntax, and `websearch_to_tsquery` reads FTS5's operators otherwise (`NOT` and `AND` are
//! stopwords, `title:` and `*` are dropped, `-` negates), so the same raw query would quietly
//! find other lessons. A raw search is [`Error::Unsupported`].

use aigentflow_persistence::{Backend, Param, Tx};

use crate::error::{Error, Result};
use crate::model::{IndexHealth, QueryMode, SearchHit, SearchOptions};
use crate::store::{clamp, RawLesson, COLUMNS};
use crate::{query, snippet};

/// The relevance of a match, lower is better as bm25 is: `ts_rank_cd` with the weights of
/// D, C, B and A (details C, summary B, title A), 4 : 2 : 1 for title, summary and details as
/// the SQLite store's `bm25(lessons_fts, 4.0, 2.0, 1.0)`, negated.
const SCORE: &str =
    "-ts_rank_cd('{0.1, 0.25, 0.5, 1.0}', l.search_vector, q.q)::DOUBLE PRECISION AS score";

/// The order of every search, as the SQLite store's: relevance, then confidence, then
/// applications, then id. `NULLS LAST`: SQLite sorts NULL lowest, so last when descending.
const ORDER: &str = " ORDER BY score, l.confidence DESC NULLS LAST, \
    l.application_count DESC NULLS LAST, l.id LIMIT ? OFFSET ?";

/// A JSON string with any escapes, as PostgreSQL's `json` type takes it (no raw control
/// character; `\u0000` and unpaired surrogates are fine there, not in `jsonb` or decoded).
macro_rules! json_string {
    () => {
        r#""(?:[^"\\\u0001-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*""#
    };
}

/// A `tags` text that is a JSON array of strings (blanks allowed): only such a text is cast to
/// `json`, so a malformed one (written around the store) is skipped as SQLite's `json_valid`
/// skips it, never an error. (SQLite also looks into arrays holding other values than strings;
/// reading such a lesson is a corrupt-row error there anyway.)
const TAGS_ARRAY: &str = concat!(
    r"^[ \t\n\r]*\[[ \t\n\r]*(?:",
    json_string!(),
    r"(?:[ \t\n\r]*,[ \t\n\r]*",
    json_string!(),
    r")*)?[ \t\n\r]*\][ \t\n\r]*$"
);

/// A JSON string PostgreSQL can decode to text: no `\u0000` and no unpaired surrogate.
const DECODABLE: &str = concat!(
    r#"^"(?:[^"\\\u0001-\u001f]|\\(?:["\\/bfnrt]|u(?:"#,
    r"0(?:[1-9a-fA-F][0-9a-fA-F]{2}|0[1-9a-fA-F][0-9a-fA-F]|00[1-9a-fA-F])",
    r"|[1-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}",
    r#"|[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})))*"$"#
);

/// Every wanted tag (`?`: a JSON array of them) is an element of the lesson's tags, compared as
/// SQLite's `json_each` compares them, by decoded value: the element's JSON text equals the
/// tag's (the store writes the one form `serde_json` writes), or both decode to the same text.
/// Decoding is asked only of strings PostgreSQL can decode, so a tag holding NUL, which the store
/// writes as `\u0000`, is found by its JSON text and never an error.
const TAGS_FILTER: &str = "
    AND CASE WHEN l.tags ~ '{TAGS_ARRAY}' THEN NOT EXISTS (
        SELECT 1 FROM json_array_elements(?::TEXT::json) AS w(j)
        WHERE NOT EXISTS (
            SELECT 1 FROM json_array_elements(l.tags::json) AS e(j)
            WHERE e.j::TEXT = w.j::TEXT
               OR CASE WHEN e.j::TEXT ~ '{DECODABLE}' AND w.j::TEXT ~ '{DECODABLE}'
                       THEN e.j #>> '{}' = w.j #>> '{}' ELSE FALSE END))
    ELSE FALSE END";

/// The text for `websearch_to_tsquery` of the pieces bound at `at` (a JSON array, see
/// [`query::pieces_param`]): each piece a quoted phrase (its `"` a blank, which would end the
/// phrase), the phrases joined by blanks: every one must match.
fn phrases(at: &str) -> String {
    format!(
        "(SELECT string_agg('\"' || translate(p.value, '\"', ' ') || '\"', ' ')
          FROM json_array_elements_text({at}::TEXT::json) AS p(value))"
    )
}

/// Which of the words bound at `?1` (a JSON array) are words of the query whose pieces are
/// bound at `?2`: the (0-based) index of each word whose lexemes in the `english` configuration
/// share one with the lexemes of the pieces' text (stopwords give none). One `to_tsvector` per
/// word, time linear in the words, where `ts_headline` is quadratic in a text's matches.
const MATCHING_WORDS: &str = "
    SELECT w.n - 1 FROM json_array_elements_text(?1::TEXT::json) WITH ORDINALITY AS w(word, n)
    WHERE tsvector_to_array(to_tsvector('english', w.word)) && (
        SELECT tsvector_to_array(to_tsvector('english', COALESCE(string_agg(p.value, ' '), '')))
        FROM json_array_elements_text(?2::TEXT::json) AS p(value))";

/// What the generated column `lessons.search_vector` holds, worked out again from the text: the
/// expression of `migrations-postgres/V1__schema.sql`, word for word.
const FRESH_VECTOR: &str = "(setweight(to_tsvector('english'::regconfig, l.title), 'A')
        || setweight(to_tsvector('english'::regconfig, l.summary), 'B')
        || setweight(to_tsvector('english'::regconfig, coalesce(l.details, '')), 'C'))";

/// Searches the lessons (see [`crate::LessonsStore::search`]).
pub(crate) fn search(tx: &Tx<'_>, o: &SearchOptions) -> Result<Vec<SearchHit>> {
    if o.mode == QueryMode::Raw {
        return Err(Error::Unsupported {
            what: "raw FTS5 query syntax",
            backend: Backend::Postgres.name(),
            instead: "search by words instead",
        });
    }
    let pieces = match o.query.as_deref() {
        Some(q) => query::pieces_param(q)?,
        None => None,
    };
    let mut values = Vec::new();
    let mut sql = match &pieces {
        Some(p) => {
            values.push(p.clone());
            format!(
                "SELECT {COLUMNS}, {SCORE} FROM lessons l
                 CROSS JOIN websearch_to_tsquery('english', {}) AS q(q)
                 WHERE l.search_vector @@ q.q",
                phrases("?")
            )
        }
        None => {
            format!("SELECT {COLUMNS}, NULL::DOUBLE PRECISION AS score FROM lessons l WHERE TRUE")
        }
    };
    if let Some(c) = o.category {
        sql.push_str(" AND l.category = ?");
        values.push(Param::text(c.as_str()));
    }
    if let Some(p) = &o.project_id {
        sql.push_str(" AND (l.project_id = ? OR l.project_id IS NULL)");
        // A project id with NUL names no stored project: only the global lessons remain.
        let p = p.as_str();
        values.push(if p.contains('\0') { Param::NULL } else { Param::text(p) });
    }
    if !o.tags.is_empty() {
        // CASE, not AND: only a text the pattern accepts is ever cast or decoded.
        sql.push_str(
            &TAGS_FILTER.replace("{TAGS_ARRAY}", TAGS_ARRAY).replace("{DECODABLE}", DECODABLE),
        );
        values.push(Param::json(&serde_json::Value::from(o.tags.clone()))?);
    }
    sql.push_str(ORDER);
    values.push(o.limit.map_or(Param::NULL, |n| Param::int(clamp(n))));
    values.push(Param::int(o.offset.map_or(0, clamp)));
    let mut stmt = tx.prepare(&sql)?;
    let rows = stmt.query_map(&values, |r| Ok((RawLesson::read(r)?, r.get::<Option<f64>>(13)?)))?;
    let snippets = match (&pieces, &o.highlight) {
        (Some(pieces), Some(h)) => {
            let texts = rows.iter().map(|(raw, _)| raw.texts());
            Some(snippet::snippets(texts, h, |words| matching_words(tx, pieces, words))?)
        }
        _ => None,
    };
    let mut snippets = snippets.map(Vec::into_iter);
    let mut hits = Vec::with_capacity(rows.len());
    for (raw, score) in rows {
        let snippet = snippets.as_mut().and_then(Iterator::next);
        hits.push(SearchHit { lesson: raw.into_lesson()?, score, snippet });
    }
    Ok(hits)
}

/// Which of `words` (the distinct words of a search's snippets) PostgreSQL reads as words of
/// the query of `pieces` (see [`MATCHING_WORDS`]), by their ids.
fn matching_words(tx: &Tx<'_>, pieces: &Param<'_>, words: &[&str]) -> Result<Vec<usize>> {
    let words = Param::json(&serde_json::Value::from(words))?;
    let mut stmt = tx.prepare(MATCHING_WORDS)?;
    let ids = stmt.query_map(&[words, pieces.clone()], |r| r.get::<i64>(0))?;
    Ok(ids.into_iter().filter_map(|id| usize::try_from(id).ok()).collect())
}

/// Lessons whose stored search words differ from what their text gives now, and the first by id.
/// A generated column is worked out when its row is written; the words change under it when the
/// `english` text search configuration changes (its dictionaries, stopwords, or the stemmer of a
/// new PostgreSQL release after `pg_upgrade`).
fn stale(tx: &Tx<'_>) -> Result<(i64, Option<String>)> {
    let found = tx.query_row(
        &format!(
            "SELECT COUNT(*), MIN(l.id) FROM lessons l
             WHERE l.search_vector IS DISTINCT FROM {FRESH_VECTOR}"
        ),
        &[],
        |r| Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?)),
    )?;
    Ok(found.unwrap_or((0, None)))
}

/// Checks every lesson's stored search words against its text (see [`stale`]), reading only.
pub(crate) fn check(tx: &Tx<'_>) -> Result<IndexHealth> {
    match stale(tx)? {
        (0, _) => {
            let n: i64 =
                tx.query_row("SELECT COUNT(*) FROM lessons", &[], |r| r.get(0))?.unwrap_or(0);
            Ok(IndexHealth::Ok { lessons: n as u64 })
        }
        (n, first) => Ok(IndexHealth::Damaged {
            reason: format!(
                "the stored search words of {n} {} differ from what the text gives now (first: \
                 lesson {}): the text search configuration changed since they were worked out",
                if n == 1 { "lesson" } else { "lessons" },
                first.unwrap_or_default()
            ),
        }),
    }
}

/// Works the stale search words out again (rewriting a row recomputes its generated column);
/// returns how many lessons there are.
pub(crate) fn rebuild(tx: &Tx<'_>) -> Result<u64> {
    let refreshed = tx.execute(
        &format!(
            "UPDATE lessons l SET title = l.title
             WHERE l.search_vector IS DISTINCT FROM {FRESH_VECTOR}"
        ),
        &[],
    )?;
    let n: i64 = tx.query_row("SELECT COUNT(*) FROM lessons", &[], |r| r.get(0))?.unwrap_or(0);
    tracing::info!(lessons = n, refreshed, "rebuilt the lessons search words");
    Ok(n as u64)
}
