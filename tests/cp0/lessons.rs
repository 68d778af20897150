//! Step 04 "LessonsStore" twins, plus decision 8 and RELIABILITY.md R5 (hostile queries),
//! R6 (index consistency against a naive scan) and R4 (legacy lessons are searchable).
//! Every scenario runs on SQLite and on PostgreSQL (`on_both!`) unless it is about one of them:
//! FTS5 syntax and the legacy file on SQLite; stopwords, stemming, ranking and stale search
//! words on PostgreSQL (`postgres_…`).

use std::collections::BTreeSet;
use std::path::Path;

use aigentflow::lessons::{
    Category, Error, Highlight, IndexHealth, LessonUpdate, LessonsStore, NewLesson, QueryMode,
    SearchOptions,
};
use aigentflow::persistence::{Backend, Database};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::*;

fn store() -> LessonsStore {
    LessonsStore::new(Database::open_in_memory().unwrap())
}

fn titles(store: &LessonsStore, options: &SearchOptions) -> Vec<String> {
    store.search(options).unwrap().into_iter().map(|h| h.lesson.title).collect()
}

/// The id of the one lesson titled `title`.
fn titles_id(store: &LessonsStore, title: &str) -> String {
    let all = store.search(&SearchOptions::default()).unwrap();
    let mut ids = all.into_iter().filter(|h| h.lesson.title == title).map(|h| h.lesson.id);
    ids.next().unwrap().to_string()
}

/// Runs `sql` on the test's database around the stores, as someone with access to it would.
fn around(t: &TestDb, sql: &str) {
    match t.backend() {
        Backend::Sqlite => raw(Path::new(t.location())).execute_batch(sql).unwrap(),
        _ => postgres::Client::connect(t.location(), postgres::NoTls)
            .unwrap()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e))),
    }
}

/// Everything stored for the lessons, as text: the SQLite file and its WAL, or every column of
/// every PostgreSQL row (the search words of `search_vector` included).
fn stored_text(t: &TestDb) -> Vec<u8> {
    match t.backend() {
        Backend::Sqlite => file_bytes(Path::new(t.location())),
        _ => {
            let mut c = postgres::Client::connect(t.location(), postgres::NoTls).unwrap();
            let row = c
                .query_one("SELECT COALESCE(string_agg(l::text, E'\\n'), '') FROM lessons l", &[])
                .unwrap();
            row.get::<_, String>(0).into_bytes()
        }
    }
}

// ---- the seed's LessonsStore scenarios ----------------------------------------------------

on_both! {
fn lessons_are_created_and_retrieved(t) {
    let store = LessonsStore::new(t.db().clone());
    let lesson = store
        .create(&NewLesson {
            tags: vec!["typescript".into(), "safety".into()],
            ..NewLesson::new(
                Category::Bug,
                "Fix null pointer",
                "Always check for null before accessing properties",
            )
        })
        .unwrap();
    assert!(!lesson.id.as_str().is_empty());
    assert_eq!(lesson.title, "Fix null pointer");
    assert_eq!(lesson.application_count, 0);
    assert_eq!(lesson.confidence, 1.0);
    let got = store.get(&lesson.id).unwrap().unwrap();
    assert_eq!(got.summary, "Always check for null before accessing properties");
    assert_eq!(got.tags, ["typescript", "safety"]);
    assert_eq!(got, lesson);
    assert_eq!(LessonsStore::new(t.reopen()).get(&lesson.id).unwrap(), Some(lesson));
    assert_eq!(store.get(&"no-such-lesson".into()).unwrap(), None);
}
}

on_both! {
/// Words that name secrets (`token`, `password`, `auth`, `--password`…) are data in a list of
/// words: a lesson's tags keep them, and a search made of them finds the lesson. (The JSON
/// form of the redaction policy once took a list item after such a word for its secret.)
fn secret_naming_words_in_tags_and_searches_are_kept(t) {
    let store = LessonsStore::new(t.db().clone());
    let words = ["auth", "token", "expiry", "password", "reset", "api_key", "secret", "refresh"];
    for (i, pair) in words.windows(2).enumerate() {
        let tags: Vec<String> = pair.iter().map(|w| (*w).to_owned()).collect();
        let title = format!("Lesson {i} about {} {}", pair[0], pair[1]);
        let lesson = store
            .create(&NewLesson {
                tags: tags.clone(),
                ..NewLesson::new(Category::Pattern, &title, format!("how {} {} works", pair[0], pair[1]))
            })
            .unwrap();
        assert_eq!(store.get(&lesson.id).unwrap().unwrap().tags, tags, "{title}");
        let query = format!("{} {}", pair[0], pair[1]);
        let found = store.search(&SearchOptions::text(&query)).unwrap();
        assert!(found.iter().any(|l| l.lesson.id == lesson.id), "{query}: {found:?}");
    }
}
}

on_both! {
fn lessons_are_searched_by_text_and_category(t) {
    let store = LessonsStore::new(t.db().clone());
    store
        .create(&NewLesson::new(
            Category::Pattern,
            "React hooks pattern",
            "Use custom hooks for shared logic",
        ))
        .unwrap();
    store
        .create(&NewLesson::new(Category::Bug, "React state bug", "State updates are async"))
        .unwrap();
    assert_eq!(store.search(&SearchOptions::text("React")).unwrap().len(), 2);
    let bugs = SearchOptions { category: Some(Category::Bug), ..Default::default() };
    assert_eq!(titles(&store, &bugs), ["React state bug"]);
    assert_eq!(store.by_category(Category::Pattern, 20).unwrap().len(), 1);
}
}

on_both! {
fn applications_are_recorded(t) {
    let store = LessonsStore::new(t.db().clone());
    let lesson =
        store.create(&NewLesson::new(Category::Pattern, "Test pattern", "Test summary")).unwrap();
    assert_eq!(store.record_application(&lesson.id).unwrap(), 1);
    assert_eq!(store.record_application(&lesson.id).unwrap(), 2);
    assert_eq!(store.get(&lesson.id).unwrap().unwrap().application_count, 2);
    let other = store.create(&NewLesson::new(Category::Bug, "Other", "Never applied")).unwrap();
    let most: Vec<_> = store.most_applied(10).unwrap().into_iter().map(|l| l.id).collect();
    assert_eq!(most, [lesson.id, other.id]);
    assert!(matches!(store.record_application(&"nope".into()), Err(Error::NotFound { .. })));
}
}

on_both! {
/// Lessons written around the store with NULL counts and confidences (the columns allow it)
/// sort where SQLite puts NULL, last when descending, on both backends: in `most_applied`, in a
/// listing and among equal text matches.
fn null_counts_and_confidences_sort_last_on_both_backends(t) {
    around(
        t,
        "INSERT INTO lessons (id, category, title, summary, confidence, application_count,
             created_at, updated_at)
         VALUES ('0-nulls', 'bug', 'nulls', 'shared words', NULL, NULL,
             '2026-01-01 00:00:00.000', '2026-01-01 00:00:00.000')",
    );
    let store = LessonsStore::new(t.db().clone());
    let mk = |title: &str, confidence: f64| {
        store
            .create(&NewLesson {
                confidence: Some(confidence),
                ..NewLesson::new(Category::Bug, title, "shared words")
            })
            .unwrap()
    };
    let low = mk("low", 0.1);
    let high = mk("high", 0.9);
    store.record_application(&low.id).unwrap();
    store.record_application(&high.id).unwrap();
    let most: Vec<_> = store.most_applied(10).unwrap().into_iter().map(|l| l.title).collect();
    assert_eq!(most, ["high", "low", "nulls"]);
    assert_eq!(titles(&store, &SearchOptions::default()), ["high", "low", "nulls"]);
    assert_eq!(titles(&store, &SearchOptions::text("shared")), ["high", "low", "nulls"]);
    let nulls = store.get(&"0-nulls".into()).unwrap().unwrap();
    assert_eq!((nulls.confidence, nulls.application_count), (1.0, 0), "read as the defaults");
}
}

// ---- decision 8: search that never breaks -------------------------------------------------

on_both! {
fn search_stems_words_and_matches_them_in_any_order(t) {
    let store = LessonsStore::new(t.db().clone());
    store.create(&NewLesson::new(Category::Pattern, "One hook", "shared logic in React")).unwrap();
    store
        .create(&NewLesson::new(Category::Pattern, "Caching", "cached queries are faster"))
        .unwrap();
    assert_eq!(titles(&store, &SearchOptions::text("hooks")), ["One hook"]);
    assert_eq!(titles(&store, &SearchOptions::text("HOOKING")), ["One hook"]);
    assert_eq!(titles(&store, &SearchOptions::text("react   logic")), ["One hook"]);
    assert_eq!(titles(&store, &SearchOptions::text("logic react hook")), ["One hook"]);
    assert_eq!(titles(&store, &SearchOptions::text("react cache")), Vec::<String>::new());
    assert_eq!(titles(&store, &SearchOptions::text("query")), ["Caching"]);
}
}

on_both! {
/// The same typed text on both backends: results or an empty list, never an error. Where they
/// differ is stopwords: PostgreSQL's `english` configuration drops "don", "t", "and", "not",
/// which FTS5 indexes like any word.
fn what_a_person_types_gives_results_or_an_empty_list_never_an_error(t) {
    let store = LessonsStore::new(t.db().clone());
    store
        .create(&NewLesson::new(
            Category::Pattern,
            "multi-agent hand-off",
            "don't share state; c++ and C# agents talk AND listen",
        ))
        .unwrap();
    store.create(&NewLesson::new(Category::Bug, "Unrelated", "nothing here")).unwrap();
    let found = |q: &str| titles(&store, &SearchOptions::text(q));
    let hand_off = vec!["multi-agent hand-off".to_owned()];
    let none = Vec::<String>::new();
    let sqlite = t.backend() == Backend::Sqlite;
    assert_eq!(found("multi-agent"), hand_off);
    assert_eq!(found("c++"), hand_off);
    assert_eq!(found("agent*"), hand_off);
    assert_eq!(found("multi\0agent"), hand_off, "NUL separates words, as any symbol does");
    assert_eq!(found("title:multi"), none, "column filters are plain text");
    // Stopwords: words on SQLite; on PostgreSQL a query of stopwords alone matches nothing, and
    // a stopword beside other words is left out.
    assert_eq!(&found("don't"), if sqlite { &hand_off } else { &none });
    assert_eq!(&found("AND"), if sqlite { &hand_off } else { &none });
    assert_eq!(&found("NOT listen"), if sqlite { &none } else { &hand_off }, "NOT is no operator");
    // No words at all: the filtered list, without text matching.
    for q in ["", "   ", "\"", "+ - * ( ) : ^", "\"\"\"\""] {
        assert_eq!(found(q).len(), 2, "{q:?}");
    }
}
}

#[test]
fn raw_mode_passes_fts5_syntax_and_types_bad_syntax_on_sqlite() {
    let store = store();
    store.create(&NewLesson::new(Category::Pattern, "React hooks", "custom hooks")).unwrap();
    store.create(&NewLesson::new(Category::Bug, "State bug", "async updates")).unwrap();
    let raw = |q: &str| SearchOptions { mode: QueryMode::Raw, ..SearchOptions::text(q) };
    assert_eq!(store.search(&raw("hook OR async")).unwrap().len(), 2);
    assert_eq!(titles(&store, &raw("title:stat*")), ["State bug"]);
    assert_eq!(titles(&store, &raw("hook NOT state")), ["React hooks"]);
    for bad in ["\"unterminated", "AND", "(hook", "nocolumn:hook", "hook OR"] {
        match store.search(&raw(bad)) {
            Err(e @ Error::BadQuery { .. }) => assert!(e.to_string().contains(bad), "{e}"),
            other => panic!("{bad:?}: expected BadQuery, got {other:?}"),
        }
    }
    // A leading `*` is FTS5's request for an internal value, not a search: refused saying so,
    // whether FTS5 would fail (`*`, `*hook`) or list every lesson (`*reads`, `*id`).
    for bad in ["*", "*hook", "* hook", "*reads", "*id", "*  reads", "**"] {
        match store.search(&raw(bad)) {
            Err(e @ Error::BadQuery { .. }) => {
                let text = e.to_string();
                assert!(text.contains("a raw query cannot start with *"), "{bad:?}: {text}");
                assert!(!text.contains("special query"), "{bad:?}: {text}");
            }
            other => panic!("{bad:?}: expected BadQuery, got {other:?}"),
        }
    }
    // A raw query's snippet marks the words of the query one by one, as a typed one does, not
    // its operators.
    let marked = |q: &str| {
        let o = SearchOptions { highlight: Some(Highlight::default()), ..raw(q) };
        let hits = store.search(&o).unwrap();
        hits.into_iter().map(|h| h.snippet.unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(marked("\"custom hooks\""), ["[custom] [hooks]"]);
    assert_eq!(marked("state NOT hooks"), ["[State] bug"]);
    // Elsewhere `*` keeps its meaning: a prefix.
    assert_eq!(titles(&store, &raw("hook*")), ["React hooks"]);
    assert_eq!(titles(&store, &raw("async OR stat*")), ["State bug"]);
    // A raw query is bounded as typed text is, and refused past the bound (FTS5's time grows
    // with the square of its terms), however its length is made up.
    let max = aigentflow::lessons::query::MAX_QUERY_CHARS;
    let at_most = format!("{}hook", "hook OR ".repeat((max - 4) / 8));
    assert!(at_most.chars().count() <= max);
    assert_eq!(store.search(&raw(&at_most)).unwrap().len(), 1);
    for long in
        ["hook OR ".repeat(max / 8 + 1), "ö".repeat(max + 1), format!("{} hook", " ".repeat(max))]
    {
        match store.search(&raw(&long)) {
            Err(e @ Error::InvalidInput { .. }) => {
                assert!(e.to_string().contains(&format!("at most {max}")), "{e}")
            }
            other => panic!("{} chars: expected InvalidInput, got {other:?}", long.chars().count()),
        }
    }
}

/// A snippet's words are matched in the connection's TEMP schema, which a database opened
/// read-only still writes: its searches keep their snippets.
#[test]
fn a_read_only_database_gives_snippets_on_sqlite() {
    let (_dir, path) = temp_db();
    LessonsStore::new(open(&path))
        .create(&NewLesson::new(Category::Pattern, "Hooks", "custom hooks"))
        .unwrap();
    let store = LessonsStore::new(Database::open_read_only(&path).unwrap());
    let o = SearchOptions { highlight: Some(Highlight::default()), ..SearchOptions::text("hook") };
    assert_eq!(store.search(&o).unwrap()[0].snippet.as_deref(), Some("[Hooks]"));
}

/// Raw FTS5 syntax has no PostgreSQL counterpart: any raw search there is one typed error
/// saying so, whatever the text (valid FTS5, bad FTS5, none), and reads nothing.
#[test]
fn postgres_raw_mode_is_a_typed_unsupported_error() {
    let Some(t) = TestDb::postgres() else { return };
    let store = LessonsStore::new(t.db().clone());
    store.create(&NewLesson::new(Category::Pattern, "React hooks", "custom hooks")).unwrap();
    for q in ["hook OR async", "title:stat*", "\"unterminated", "", "hook"] {
        let raw = SearchOptions { mode: QueryMode::Raw, ..SearchOptions::text(q) };
        match store.search(&raw) {
            Err(e @ Error::Unsupported { backend: "PostgreSQL", .. }) => assert_eq!(
                e.to_string(),
                "raw FTS5 query syntax is not available on PostgreSQL; search by words instead"
            ),
            other => panic!("{q:?}: expected Unsupported, got {other:?}"),
        }
    }
    assert_eq!(titles(&store, &SearchOptions::text("hook")), ["React hooks"]);
}

on_both! {
fn ranking_is_relevance_then_confidence_then_applications(t) {
    let store = LessonsStore::new(t.db().clone());
    let mk = |title: &str, summary: &str, confidence: f64| {
        store
            .create(&NewLesson {
                confidence: Some(confidence),
                ..NewLesson::new(Category::Pattern, title, summary)
            })
            .unwrap()
    };
    // A title match outranks a summary-only match even at lower confidence.
    mk("retry budget", "spend it wisely", 0.2);
    let low = mk("timeouts", "a retry needs a deadline", 0.5);
    let high = mk("deadlines", "a retry needs a deadline", 0.9);
    let applied = mk("budgets", "a retry needs a deadline", 0.5);
    store.record_application(&applied.id).unwrap();
    let hits = store.search(&SearchOptions::text("retry")).unwrap();
    let order: Vec<_> = hits.iter().map(|h| h.lesson.title.as_str()).collect();
    assert_eq!(order, ["retry budget", "deadlines", "budgets", "timeouts"]);
    assert!(hits.windows(2).all(|w| w[0].score <= w[1].score));
    assert_eq!(hits[3].lesson.id, low.id);
    assert_eq!(hits[1].lesson.id, high.id);
    // Without text: confidence, then applications.
    let listed = titles(&store, &SearchOptions::default());
    assert_eq!(listed, ["deadlines", "budgets", "timeouts", "retry budget"]);
    let page = SearchOptions { limit: Some(2), offset: Some(1), ..SearchOptions::text("retry") };
    assert_eq!(titles(&store, &page), ["deadlines", "budgets"]);
}
}

/// PostgreSQL ranks by `ts_rank_cd` with the bm25 weights of the SQLite store: a word in the
/// title outranks one in the summary, which outranks one in the details, whatever the
/// confidence; scores are lower for better matches, as bm25's are.
#[test]
fn postgres_a_title_match_outranks_a_summary_match_outranks_a_details_match() {
    let Some(t) = TestDb::postgres() else { return };
    let store = LessonsStore::new(t.db().clone());
    let mk = |title: &str, summary: &str, details: Option<&str>, confidence: f64| {
        store
            .create(&NewLesson {
                details: details.map(Into::into),
                confidence: Some(confidence),
                ..NewLesson::new(Category::Pattern, title, summary)
            })
            .unwrap();
    };
    mk("cache invalidation", "hard problem", None, 0.1);
    mk("stale reads", "the cache lies", None, 0.5);
    mk("naming things", "also hard", Some("a cache key is a name"), 1.0);
    mk("unrelated", "nothing", Some("nothing at all"), 1.0);
    let hits = store.search(&SearchOptions::text("caches")).unwrap();
    let order: Vec<_> = hits.iter().map(|h| h.lesson.title.as_str()).collect();
    assert_eq!(order, ["cache invalidation", "stale reads", "naming things"]);
    let scores: Vec<f64> = hits.iter().map(|h| h.score.unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] < w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| *s < 0.0), "{scores:?}");
    // 1.0 : 0.5 : 0.25, the weights of A, B and C.
    assert!((scores[0] / scores[1] - 2.0).abs() < 1e-6, "{scores:?}");
    assert!((scores[1] / scores[2] - 2.0).abs() < 1e-6, "{scores:?}");
}

/// The `english` stemmer: inflected forms find each other both ways.
#[test]
fn postgres_search_stems_words_so_tests_finds_testing() {
    let Some(t) = TestDb::postgres() else { return };
    let store = LessonsStore::new(t.db().clone());
    store.create(&NewLesson::new(Category::Pattern, "Testing first", "write them early")).unwrap();
    store.create(&NewLesson::new(Category::Bug, "Flaky runs", "retried connections")).unwrap();
    let found = |q: &str| titles(&store, &SearchOptions::text(q));
    assert_eq!(found("tests"), ["Testing first"]);
    assert_eq!(found("tested"), ["Testing first"]);
    assert_eq!(found("running"), ["Flaky runs"]);
    assert_eq!(found("connection retry"), ["Flaky runs"]);
    assert_eq!(found("flakiness"), ["Flaky runs"]);
    assert_eq!(found("testament"), Vec::<String>::new(), "not the same stem");
}

/// A query of stopwords alone is a clear empty list, not an error and not every lesson; a
/// stopword beside other words is left out of the match.
#[test]
fn postgres_a_query_of_stopwords_alone_is_an_empty_list() {
    let Some(t) = TestDb::postgres() else { return };
    let store = LessonsStore::new(t.db().clone());
    store
        .create(&NewLesson::new(
            Category::Pattern,
            "The hooks and the state",
            "it is not what it was",
        ))
        .unwrap();
    for q in
        ["the", "THE", "and", "not", "don't", "a an the of", "\"the\" and", "it is what it was"]
    {
        let hits = store.search(&SearchOptions::text(q));
        assert!(matches!(&hits, Ok(h) if h.is_empty()), "{q:?}: {hits:?}");
    }
    assert_eq!(titles(&store, &SearchOptions::text("the hooks")), ["The hooks and the state"]);
    assert_eq!(store.search(&SearchOptions::text("")).unwrap().len(), 1, "no words lists all");
}

on_both! {
fn a_projects_search_sees_its_own_and_global_lessons(t) {
    let store = LessonsStore::new(t.db().clone());
    let mk = |project: Option<&str>, title: &str| {
        store
            .create(&NewLesson {
                project_id: project.map(Into::into),
                ..NewLesson::new(Category::Pattern, title, "shared text")
            })
            .unwrap();
    };
    mk(None, "global");
    mk(Some("p1"), "mine");
    mk(Some("p2"), "theirs");
    let in_p1 = SearchOptions { project_id: Some("p1".into()), ..SearchOptions::text("shared") };
    let got: BTreeSet<_> = titles(&store, &in_p1).into_iter().collect();
    assert_eq!(got, BTreeSet::from(["global".to_owned(), "mine".to_owned()]));
    assert_eq!(titles(&store, &SearchOptions::text("shared")).len(), 3);
    // A project no lesson can have (PostgreSQL text holds no NUL) sees the global lessons only.
    let nul = SearchOptions { project_id: Some("p\0".into()), ..Default::default() };
    assert_eq!(titles(&store, &nul), ["global"]);
}
}

on_both! {
fn tags_match_exactly_and_all_given_tags_are_required(t) {
    let store = LessonsStore::new(t.db().clone());
    let mk = |title: &str, tags: &[&str]| {
        store
            .create(&NewLesson {
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..NewLesson::new(Category::Pattern, title, "text")
            })
            .unwrap();
    };
    mk("api only", &["api"]);
    mk("apis", &["apis", "rapid"]);
    mk("api and sql", &["sql", "api"]);
    mk("quoted", &["\"api\""]);
    mk("escapes", &["back\\slash", "tab\there", "ünï 🦀", "nul\0inside"]);
    mk("none", &[]);
    let tagged = |tags: &[&str]| {
        let o = SearchOptions {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        titles(&store, &o).into_iter().collect::<BTreeSet<_>>()
    };
    assert_eq!(tagged(&["api"]), BTreeSet::from(["api only".into(), "api and sql".into()]));
    assert_eq!(tagged(&["api", "sql"]), BTreeSet::from(["api and sql".into()]));
    assert_eq!(tagged(&["\"api\""]), BTreeSet::from(["quoted".into()]));
    assert_eq!(tagged(&["back\\slash", "ünï 🦀"]), BTreeSet::from(["escapes".into()]));
    assert_eq!(tagged(&["tab\there"]), BTreeSet::from(["escapes".into()]));
    assert_eq!(tagged(&["%"]), BTreeSet::new());
    assert_eq!(tagged(&["a\0pi"]), BTreeSet::new());
    assert_eq!(tagged(&["nul\0inside", "api"]), BTreeSet::new());
    assert_eq!(tagged(&["nul\0inside"]), BTreeSet::from(["escapes".into()]), "a tag with NUL");
}
}

on_both! {
/// Tags text written around the store that is not a JSON array of strings the database can
/// read (not JSON, cut short, an object, empty) is skipped by a tag search, never an error; JSON
/// written another way (blanks, `\u` escapes, NUL escaped) is read as SQLite's `json_each`
/// reads it.
fn a_tag_search_skips_tags_written_around_the_store_that_are_not_json(t) {
    let store = LessonsStore::new(t.db().clone());
    store
        .create(&NewLesson { tags: vec!["a".into()], ..NewLesson::new(Category::Bug, "kept", "s") })
        .unwrap();
    for (id, tags) in [
        ("bad-1", "not json"),
        ("bad-2", "[\"a\","),
        ("bad-3", "{\"a\": 1}"),
        ("nul", "[\"\\u0000\", \"a\"]"),
        ("bad-6", ""),
        ("spaced", " [ \"b\" ,\n\t\"a\" ] "),
        ("escaped", "[\"\\u0061\", \"\\ud83e\\udd80\"]"),
    ] {
        around(
            t,
            &format!(
                "INSERT INTO lessons (id, category, title, summary, tags, created_at, updated_at)
                 VALUES ('{id}', 'bug', '{id}', 's', '{tags}',
                     '2026-01-01 00:00:00.000', '2026-01-01 00:00:00.000')"
            ),
        );
    }
    let tagged = |tags: &[&str]| {
        let o = SearchOptions {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        titles(&store, &o).into_iter().collect::<BTreeSet<_>>()
    };
    let want: BTreeSet<String> = ["kept", "spaced", "escaped", "nul"].map(String::from).into();
    assert_eq!(tagged(&["a"]), want);
    assert_eq!(tagged(&["\0"]), BTreeSet::from(["nul".to_owned()]));
    assert_eq!(tagged(&["🦀"]), BTreeSet::from(["escaped".to_owned()]));
    assert_eq!(tagged(&["a", "b"]), BTreeSet::from(["spaced".to_owned()]));
    // JSON either backend reads, with an unpaired surrogate no string can hold: the lesson is
    // found, and reading it is the same typed error on both.
    around(
        t,
        "INSERT INTO lessons (id, category, title, summary, tags, created_at, updated_at)
         VALUES ('surrogate', 'bug', 'surrogate', 's', '[\"\\ud800\", \"a\"]',
             '2026-01-01 00:00:00.000', '2026-01-01 00:00:00.000')",
    );
    let o = SearchOptions { tags: vec!["a".into()], ..Default::default() };
    let err = store.search(&o).unwrap_err();
    assert!(
        err.to_string().starts_with("unreadable lessons.tags in row surrogate: "),
        "{err}"
    );
}
}

on_both! {
fn a_hit_can_carry_a_highlighted_snippet(t) {
    let store = LessonsStore::new(t.db().clone());
    store
        .create(&NewLesson::new(Category::Pattern, "Hooks", "Use custom hooks for shared logic"))
        .unwrap();
    let o = SearchOptions { highlight: Some(Highlight::default()), ..SearchOptions::text("hook") };
    let hit = &store.search(&o).unwrap()[0];
    assert_eq!(hit.snippet.as_deref(), Some("[Hooks]"));
    let o = SearchOptions {
        highlight: Some(Highlight {
            open: "<b>".into(),
            close: "</b>".into(),
            ..Highlight::default()
        }),
        ..SearchOptions::text("shared")
    };
    let hit = &store.search(&o).unwrap()[0];
    assert_eq!(hit.snippet.as_deref(), Some("Use custom hooks for <b>shared</b> logic"));
    assert_eq!(store.search(&SearchOptions::text("hook")).unwrap()[0].snippet, None);
    // A fragment cut from a longer text says so at each cut end; markers holding quotes and
    // commas are markers, not options.
    let words: Vec<String> = (0..40).map(|i| format!("filler{i}")).collect();
    let details = format!("{} needle {}", words[..20].join(" "), words[20..].join(" "));
    store
        .create(&NewLesson {
            details: Some(details),
            ..NewLesson::new(Category::Bug, "Long one", "nothing to see")
        })
        .unwrap();
    let h =
        Highlight { open: "\"<,".into(), close: ",>\"".into(), ellipsis: "~".into(), tokens: 6 };
    let o = SearchOptions { highlight: Some(h), ..SearchOptions::text("needle") };
    let snippet = store.search(&o).unwrap()[0].snippet.clone().unwrap();
    assert!(snippet.starts_with('~') && snippet.ends_with('~'), "{snippet}");
    assert!(snippet.contains("\"<,needle,>\""), "{snippet}");
    assert!(snippet.split_whitespace().count() <= 6, "{snippet}");
}
}

on_both! {
/// A snippet marks every token whose word the backend reads as a word of the query, wherever
/// it is (a phrase's words one by one), in the window of the column with the most distinct
/// matched words (the first on a tie), with the matches in the window's middle.
fn a_snippet_marks_the_query_words_in_the_best_window_of_the_best_column(t) {
    let store = LessonsStore::new(t.db().clone());
    let snippet = |q: &str, tokens: u8| {
        let h = Highlight { tokens, ..Highlight::default() };
        let hits = store.search(&SearchOptions { highlight: Some(h), ..SearchOptions::text(q) });
        hits.unwrap().into_iter().map(|h| h.snippet.unwrap()).collect::<Vec<_>>()
    };
    store
        .create(&NewLesson {
            details: Some("The react hook reads the cache; one hook per route; React renders".into()),
            ..NewLesson::new(Category::Pattern, "Hooks", "react and hooks")
        })
        .unwrap();
    assert_eq!(snippet("react hook", 16), ["[react] and [hooks]"], "two words beat one");
    assert_eq!(
        snippet("route cache", 16),
        ["The react hook reads the [cache]; one hook per [route]; React renders"],
        "the only column with a match, whole"
    );
    assert_eq!(snippet("route cache", 3), ["…the [cache]; one…"], "no window holds both");
    assert_eq!(snippet("renders", 3), ["…route; React [renders]"], "the end of the text");
    store
        .create(&NewLesson::new(Category::Pattern, "Agents", "multi-agent runs; an agent alone; multi"))
        .unwrap();
    assert_eq!(snippet("multi-agent", 16), ["[multi]-[agent] runs; an [agent] alone; [multi]"]);
}
}

on_both! {
/// A lesson of 100 KB of matched words gives a snippet of `tokens` of them, the window around
/// the rarer word when the query has two, and the title when it holds as many distinct matched
/// words (its cost, linear in the lesson, is measured by the lessons crate's `snippet_cost`
/// example, not here).
fn a_snippet_of_a_large_lesson_is_a_window_of_its_tokens(t) {
    let store = LessonsStore::new(t.db().clone());
    let half = "login ".repeat(8_500);
    store
        .create(&NewLesson {
            details: Some(format!("{half}session {half}")),
            ..NewLesson::new(Category::Security, "Login state", "what it keeps")
        })
        .unwrap();
    let h = Highlight { tokens: 8, ..Highlight::default() };
    let search = |q: &str| {
        let o = SearchOptions { highlight: Some(h.clone()), ..SearchOptions::text(q) };
        store.search(&o).unwrap()[0].snippet.clone().unwrap()
    };
    assert_eq!(search("login"), "[Login] state", "one word in each: the first column");
    assert_eq!(search("login session"), format!("…{}[session]…", "[login] ".repeat(7)));
    assert_eq!(search("session"), "…login login login [session] login login login login…");
}
}

on_both! {
fn update_moves_updated_at_and_the_index_follows(t) {
    let store = LessonsStore::new(t.db().clone());
    let lesson = store
        .create(&NewLesson {
            details: Some("old details".into()),
            ..NewLesson::new(Category::Bug, "alpha", "first words")
        })
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let updated = store
        .update(
            &lesson.id,
            &LessonUpdate {
                title: Some("beta".into()),
                details: Some(None),
                tags: Some(vec!["x".into()]),
                confidence: Some(0.5),
                category: Some(Category::Security),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(updated.updated_at > lesson.updated_at);
    assert_eq!(updated.created_at, lesson.created_at);
    assert_eq!((updated.title.as_str(), updated.details.as_deref()), ("beta", None));
    assert_eq!((updated.category.as_str(), updated.confidence), ("security", 0.5));
    assert_eq!(updated.summary, "first words");
    assert!(titles(&store, &SearchOptions::text("alpha")).is_empty());
    assert!(titles(&store, &SearchOptions::text("details")).is_empty());
    assert_eq!(titles(&store, &SearchOptions::text("beta")), ["beta"]);
    assert!(matches!(store.check().unwrap(), IndexHealth::Ok { lessons: 1 }));
    // The remaining fields, then clearing the optional ones.
    let moved = store
        .update(
            &lesson.id,
            &LessonUpdate {
                project_id: Some(Some("p1".into())),
                summary: Some("second words".into()),
                source_agent: Some(Some("reviewer".into())),
                source_file: Some(Some("src/a.rs".into())),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(moved.project_id, Some("p1".into()));
    assert_eq!(moved.summary, "second words");
    assert_eq!(
        (moved.source_agent.as_deref(), moved.source_file.as_deref()),
        (Some("reviewer"), Some("src/a.rs"))
    );
    assert_eq!(titles(&store, &SearchOptions::text("second")), ["beta"]);
    let cleared = store
        .update(
            &lesson.id,
            &LessonUpdate {
                project_id: Some(None),
                source_agent: Some(None),
                source_file: Some(None),
                tags: Some(vec![]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((cleared.project_id, cleared.source_agent, cleared.source_file), (None, None, None));
    assert!(cleared.tags.is_empty());
    assert!(matches!(
        store.update(&"missing".into(), &LessonUpdate::default()),
        Err(Error::NotFound { .. })
    ));
}
}

on_both! {
fn bad_input_is_a_typed_error_and_writes_nothing(t) {
    let store = LessonsStore::new(t.db().clone());
    let bad = [
        NewLesson::new(Category::Bug, "  ", "summary"),
        NewLesson::new(Category::Bug, "title", ""),
        NewLesson { confidence: Some(1.5), ..NewLesson::new(Category::Bug, "t", "s") },
        NewLesson { confidence: Some(f64::NAN), ..NewLesson::new(Category::Bug, "t", "s") },
        NewLesson { tags: vec![" ".into()], ..NewLesson::new(Category::Bug, "t", "s") },
    ];
    for new in &bad {
        let err = store.create(new).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
    assert!("bugs".parse::<Category>().is_err());
    let lesson = store.create(&NewLesson::new(Category::Bug, "t", "s")).unwrap();
    let err = store
        .update(
            &lesson.id,
            &LessonUpdate {
                title: Some("changed".into()),
                confidence: Some(-0.1),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(store.get(&lesson.id).unwrap().unwrap().title, "t");
    assert_eq!(store.search(&SearchOptions::default()).unwrap().len(), 1);
}
}

on_both! {
fn delete_removes_a_lesson_from_search(t) {
    let store = LessonsStore::new(t.db().clone());
    let lesson = store.create(&NewLesson::new(Category::Bug, "gone soon", "text")).unwrap();
    assert!(store.delete(&lesson.id).unwrap());
    assert!(!store.delete(&lesson.id).unwrap());
    assert!(titles(&store, &SearchOptions::text("gone")).is_empty());
    assert!(matches!(store.check().unwrap(), IndexHealth::Ok { lessons: 0 }));
}
}

#[test]
fn check_finds_an_index_damaged_around_the_store_and_rebuild_repairs_it_on_sqlite() {
    let (_dir, path) = temp_db();
    let store = LessonsStore::new(open(&path));
    store.create(&NewLesson::new(Category::Bug, "kept", "real lesson")).unwrap();
    assert!(matches!(store.check().unwrap(), IndexHealth::Ok { lessons: 1 }));
    // An out-of-band write: an index entry with no lesson behind it.
    raw(&path)
        .execute(
            "INSERT INTO lessons_fts(rowid, title, summary, details) VALUES (999, 'ghost', 'x', NULL)",
            [],
        )
        .unwrap();
    assert!(matches!(store.check().unwrap(), IndexHealth::Damaged { .. }));
    assert_eq!(store.rebuild().unwrap(), 1);
    assert!(matches!(store.check().unwrap(), IndexHealth::Ok { lessons: 1 }));
    assert_eq!(titles(&store, &SearchOptions::text("kept")), ["kept"]);
    assert!(titles(&store, &SearchOptions::text("ghost")).is_empty());
}

/// The SQLite errors the lessons store gives a type of its own keep it, now that the crate
/// sees no driver and tells them by the persistence error's predicates: shadow tables of the
/// FTS5 index damaged around the store (SQLite says the index is malformed) are `Damaged`
/// from `check`, which `rebuild` repairs; raw FTS5 syntax SQLite cannot parse is `BadQuery`
/// with SQLite's own message; a write waiting out another process's lock is `Locked`, busy.
#[test]
fn damaged_index_bad_raw_syntax_and_a_held_lock_keep_their_typed_errors_on_sqlite() {
    use aigentflow::persistence::{Access, Error as PError, Options};
    let (_dir, path) = temp_db();
    let store = LessonsStore::new(open(&path));
    for i in 0..30 {
        let summary = format!("summary {i} of words that fill the index");
        store.create(&NewLesson::new(Category::Bug, format!("lesson {i}"), summary)).unwrap();
    }
    assert!(matches!(store.check().unwrap(), IndexHealth::Ok { lessons: 30 }));
    for damage in [
        "UPDATE lessons_fts_data SET block = x'ffffffffffff' WHERE id > 10",
        "UPDATE lessons_fts_data SET block = zeroblob(3) WHERE id > 10",
        "DELETE FROM lessons_fts_data WHERE id > 10",
    ] {
        raw(&path).execute_batch(damage).unwrap();
        match store.check().unwrap() {
            IndexHealth::Damaged { reason } => {
                assert_eq!(reason, "database error: database disk image is malformed", "{damage}")
            }
            other => panic!("{damage}: {other:?}"),
        }
        assert_eq!(store.rebuild().unwrap(), 30, "{damage}");
        assert!(matches!(store.check().unwrap(), IndexHealth::Ok { lessons: 30 }), "{damage}");
    }

    let raw_query = |q: &str| SearchOptions { mode: QueryMode::Raw, ..SearchOptions::text(q) };
    for (bad, says) in [
        ("AND", "fts5: syntax error near \"AND\""),
        ("\"unterminated", "unterminated string"),
        ("(lesson", "fts5: syntax error near \"\""),
        ("nocolumn:lesson", "no such column: nocolumn"),
    ] {
        match store.search(&raw_query(bad)) {
            Err(Error::BadQuery { query, reason }) => {
                assert_eq!(query.as_str(), bad);
                assert_eq!(reason.as_str(), says, "{bad}");
            }
            other => panic!("{bad:?}: expected BadQuery, got {other:?}"),
        }
    }

    let holder = raw(&path);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let busy_timeout = std::time::Duration::from_millis(100);
    let options = Options { busy_timeout, access: Access::ReadWrite, ..Options::default() };
    let waiting = LessonsStore::new(Database::open_with(&path, options).unwrap());
    match waiting.create(&NewLesson::new(Category::Bug, "late", "waits")) {
        Err(Error::Persistence(e @ PError::Locked { .. })) => assert!(e.is_busy(), "{e}"),
        other => panic!("expected Locked, got {other:?}"),
    }
    holder.execute_batch("ROLLBACK").unwrap();
    waiting.create(&NewLesson::new(Category::Bug, "late", "waits")).unwrap();
}

/// PostgreSQL's index is a generated column no write can leave behind its row, but its words
/// go stale when the `english` configuration changes after they were worked out (here: a
/// superuser stops stemming in this test's own database). `check` names the lessons, search
/// misses them, `rebuild` works their words out again.
#[test]
fn postgres_check_finds_stale_search_words_and_rebuild_repairs_them() {
    let Some(t) = TestDb::postgres() else { return };
    let store = LessonsStore::new(t.db().clone());
    let hooks = store.create(&NewLesson::new(Category::Bug, "React hooks", "in effects")).unwrap();
    store.create(&NewLesson::new(Category::Bug, "Caching", "stale reads")).unwrap();
    store.create(&NewLesson::new(Category::Bug, "plain", "x")).unwrap();
    assert_eq!(store.check().unwrap(), IndexHealth::Ok { lessons: 3 });
    assert_eq!(store.rebuild().unwrap(), 3, "nothing stale: nothing to do");
    around(&t, "ALTER TEXT SEARCH CONFIGURATION english ALTER MAPPING FOR asciiword WITH simple");
    let IndexHealth::Damaged { reason } = store.check().unwrap() else { panic!("not damaged") };
    let first = std::cmp::min(hooks.id.to_string(), titles_id(&store, "Caching"));
    assert_eq!(
        reason,
        format!(
            "the stored search words of 2 lessons differ from what the text gives now (first: \
             lesson {first}): the text search configuration changed since they were worked out"
        )
    );
    assert_eq!(titles(&store, &SearchOptions::text("hooks")), Vec::<String>::new());
    let before = store.get(&hooks.id).unwrap().unwrap();
    assert_eq!(store.rebuild().unwrap(), 3);
    assert_eq!(store.check().unwrap(), IndexHealth::Ok { lessons: 3 });
    assert_eq!(titles(&store, &SearchOptions::text("hooks")), ["React hooks"]);
    assert_eq!(store.get(&hooks.id).unwrap().unwrap(), before, "the lesson itself is unchanged");
}

on_both! {
fn lesson_text_is_redacted_before_it_is_written(t) {
    let store = LessonsStore::new(t.db().clone());
    let key = "sk-ant-api03-abcdefghijklmnopqrstuvwx";
    let lesson = store
        .create(&NewLesson {
            details: Some(format!("password=hunter2secret and {key}")),
            tags: vec!["AKIAIOSFODNN7EXAMPLE".into()],
            ..NewLesson::new(Category::Security, format!("leaked {key}"), "token: abcdef123456")
        })
        .unwrap();
    assert!(!lesson.title.contains(key));
    store
        .update(
            &lesson.id,
            &LessonUpdate { summary: Some(format!("again {key}")), ..Default::default() },
        )
        .unwrap();
    let stored = stored_text(t);
    assert!(contains(&stored, "leaked"), "the dump holds the lesson");
    // The search words too: "abcdefghijklmnopqrstuvwx" would be a word of the key.
    let secrets =
        [key, "hunter2secret", "abcdef123456", "AKIAIOSFODNN7EXAMPLE", "abcdefghijklmnopqrstuvwx"];
    for secret in secrets {
        assert!(!contains(&stored, secret), "{secret} was stored");
    }
}
}

#[test]
fn legacy_lessons_are_searchable_after_adoption_on_sqlite() {
    let (_dir, path) = legacy_copy();
    let store = LessonsStore::new(open(&path));
    assert!(matches!(store.check().unwrap(), IndexHealth::Ok { lessons: 40 }));
    // The title match ranks first; another lesson has both words in its details.
    assert_eq!(titles(&store, &SearchOptions::text("react state"))[0], "React state bug");
    let quoted = titles(&store, &SearchOptions::text("quote"));
    assert_eq!(quoted, ["Quote \"identifiers\", not strings", "CSV needs quoting"], "stemmed");
    assert_eq!(titles(&store, &SearchOptions::text("zurich")), ["Unicode in paths: Zürich/日本"]);
    let csv = SearchOptions { tags: vec!["docs".into()], ..SearchOptions::text("csv quoting") };
    assert_eq!(titles(&store, &csv), ["CSV needs quoting"]);
    let all = store.search(&SearchOptions::default()).unwrap();
    assert_eq!(all.len(), 40);
}

// ---- R5: thousands of hostile strings -----------------------------------------------------

fn hostile() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "AND",
        "OR",
        "NOT",
        "NEAR",
        "NEAR(",
        ")",
        "(",
        "\"",
        "'",
        "*",
        "^",
        ":",
        "title:",
        "{title summary}:",
        "-",
        "+",
        "multi-agent",
        "don't",
        "c++",
        "hook",
        "Zürich",
        "日本",
        "\u{0}",
        "ho\u{0}ok",
        "\u{301}",
        "\u{202e}",
        "🦀",
        "\\",
        "%",
        "_",
        ";",
        "--",
        "/*",
        "NEAR/3",
        "\t",
        "\n",
        // PostgreSQL's tsquery and websearch syntax, its parser's tokens, and casing.
        "&",
        "|",
        "!",
        "<->",
        "<2>",
        ":*",
        ":A",
        "'a':*",
        "\\'",
        "or",
        "-x",
        "<b>",
        "</b>",
        "http://x.org/p?q=(1)",
        "foo@bar.com",
        "/usr/lib",
        "1.2.3",
        "-5",
        "İ",
        "ǅ",
        "\u{fffd}",
        "\u{10ffff}",
    ]);
    prop_oneof![
        any::<String>(),
        "[\"'*^():+\\-{}\\[\\] ANDORNT]{0,40}",
        prop::collection::vec(pieces, 0..12).prop_map(|v| v.join(" ")),
        prop::collection::vec(prop::sample::select(vec!["x", "\"", "AND", "é"]), 0..4000)
            .prop_map(|v| v.concat()),
    ]
}

on_both! {
/// Search never errors for any typed string, on either backend, snippets included; raw mode
/// is a typed error where it fails (bad FTS5 syntax on SQLite, any raw search on PostgreSQL).
fn r5_hostile_queries_never_panic_or_fail_and_raw_mode_types_its_errors(t) {
    let store = LessonsStore::new(t.db().clone());
    store
        .create(&NewLesson {
            details: Some("http://x.org/p?q=(1) foo@bar.com /usr/lib 1.2.3 -5 <b>bold</b>".into()),
            ..NewLesson::new(Category::Pattern, "multi-agent hook", "don't c++ Zürich 日本")
        })
        .unwrap();
    let sqlite = t.backend() == Backend::Sqlite;
    let mut runner = TestRunner::new(Config { cases: 3000, ..Config::default() });
    runner
        .run(&hostile(), |q| {
            let words = SearchOptions {
                highlight: Some(Highlight::default()),
                ..SearchOptions::text(q.clone())
            };
            let words = store.search(&words);
            prop_assert!(words.is_ok(), "{q:?}: {:?}", words.err());
            let raw = SearchOptions { mode: QueryMode::Raw, ..SearchOptions::text(q.clone()) };
            let long = q.chars().count() > aigentflow::lessons::query::MAX_QUERY_CHARS;
            match store.search(&raw) {
                Ok(_) | Err(Error::BadQuery { .. }) if sqlite && !long => {}
                Err(Error::InvalidInput { what: "raw search query", .. }) if sqlite && long => {}
                Err(Error::Unsupported { .. }) if !sqlite => {}
                other => prop_assert!(false, "{q:?}: raw mode gave {other:?}"),
            }
            Ok(())
        })
        .unwrap();
}
}

on_both! {
/// Typed text of any length is read up to its first `MAX_QUERY_CHARS` characters of pieces:
/// a pasted page of 100 000 words searches by its beginning, on both backends, where
/// PostgreSQL would otherwise run out of stack parsing it.
fn a_typed_query_of_any_length_is_read_up_to_its_bound(t) {
    use aigentflow::lessons::query::MAX_QUERY_CHARS;
    let store = LessonsStore::new(t.db().clone());
    store.create(&NewLesson::new(Category::Pattern, "hook", "react")).unwrap();
    store.create(&NewLesson::new(Category::Pattern, "other", "react")).unwrap();
    let found = |q: &str| titles(&store, &SearchOptions::text(q));
    let head = "hook ".repeat(MAX_QUERY_CHARS / 4);
    for tail in ["react ".repeat(100_000), "nothing ".repeat(100_000), "x".repeat(1_000_000)] {
        assert_eq!(found(&format!("{head}{tail}")), ["hook"], "only the first pieces count");
    }
    assert_eq!(found(&"react ".repeat(100_000)).len(), 2);
    let one_long_piece = "react-".repeat(50_000);
    assert!(store.search(&SearchOptions::text(one_long_piece)).is_ok());
}
}

on_both! {
/// Typed text passes the redaction policy before it becomes a query, and the query's quoting is
/// added after: a secret typed into a search (`token: abc`, a key in any context of the corpus)
/// is never an error, and finds the lesson that stored the same text redacted.
fn a_secret_typed_into_a_search_finds_its_lesson_and_is_never_an_error(t) {
    use aigentflow::persistence::redact::corpus;
    let store = LessonsStore::new(t.db().clone());
    let sqlite = t.backend() == Backend::Sqlite;
    let mut samples: Vec<String> =
        corpus::samples(0x1e55).unwrap().into_iter().map(|s| s.text).collect();
    samples.extend(
        ["token: \"abc\" x", "token: abc", "password: \"x", "Authorization: Bearer abc\" x"]
            .map(String::from),
    );
    samples.retain(|text| text.split_whitespace().any(|p| p.chars().any(char::is_alphanumeric)));
    for (i, text) in samples.iter().enumerate() {
        let title = format!("sample{i}");
        store
            .create(&NewLesson {
                details: Some(text.clone()),
                ..NewLesson::new(Category::Security, title, "corpus")
            })
            .unwrap();
    }
    for (i, text) in samples.iter().enumerate() {
        let hits = store.search(&SearchOptions::text(text));
        let hits = hits.unwrap_or_else(|e| panic!("{text:?}: {e}"));
        // PostgreSQL reads `<tag attr="…">` as markup and indexes no word in it (README).
        if sqlite || !text.contains('<') {
            let title = format!("sample{i}");
            assert!(hits.iter().any(|h| h.lesson.title == title), "{text:?} did not find {title}");
        }
    }
}
}

/// What a person types reaches PostgreSQL as plain text: quotes, `&|!():*`, backslashes,
/// markup, NUL and any Unicode give results or an empty list, never an error, and the
/// punctuation around a word does not stop it from matching.
#[test]
fn postgres_hostile_typed_text_never_errors_and_finds_the_words_in_it() {
    let Some(t) = TestDb::postgres() else { return };
    let store = LessonsStore::new(t.db().clone());
    store
        .create(&NewLesson::new(Category::Pattern, "React hooks", "keep state in Zürich 日本"))
        .unwrap();
    let found = |q: &str| {
        let o = SearchOptions { highlight: Some(Highlight::default()), ..SearchOptions::text(q) };
        match store.search(&o) {
            Ok(hits) => hits.into_iter().map(|h| h.lesson.title).collect::<Vec<_>>(),
            Err(e) => panic!("{q:?}: {e}"),
        }
    };
    for q in [
        "'hooks'",
        "hooks!",
        "!hooks",
        "(hooks)",
        "hooks:*",
        "hooks&&",
        "|hooks|",
        "\"hooks\"",
        "\\hooks\\",
        "hooks\\",
        "hooks>",
        "hooks:A",
        "hooks'",
        "-hooks",
        "hooks or",
        "日本",
    ] {
        assert_eq!(found(q), ["React hooks"], "{q:?}");
    }
    for q in [
        "'",
        "''",
        "\\",
        "\\'",
        "'\\",
        "&",
        "|",
        "!",
        "()",
        "(",
        ")",
        ":",
        "*",
        ":*",
        "<->",
        "!(hooks & state)",
        "hooks <-> state",
        "hooks<2>state",
        "'a':* & !b",
        "\\\"",
        "\"\\",
        "hoo\0ks",
        "\0",
        "\u{202e}hooks",
        "\u{301}",
        "🦀",
        "\u{10ffff}",
        "<b>x</b>",
        "a'b\\c\"d&e|f!g(h)i:j*k",
        "<hooks>",
        "http://x.org/p?q=(1)",
        "C:\\Users\\hooks",
    ] {
        found(q);
    }
}

// ---- R6: the index never drifts ----------------------------------------------------------

/// Words whose stems are all different (Porter's and Snowball's) and no stopword, so "matches"
/// is "contains the word" on both backends.
const VOCAB: [&str; 10] =
    ["react", "hook", "cache", "index", "query", "token", "merge", "panic", "route", "shard"];

#[derive(Debug, Clone)]
enum Op {
    Create { title: Vec<usize>, summary: Vec<usize>, details: Vec<usize>, project: u8, tag: u8 },
    Update { at: usize, title: Vec<usize>, details: Vec<usize> },
    Delete { at: usize },
    Apply { at: usize },
}

fn words() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..VOCAB.len(), 1..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (words(), words(), prop::collection::vec(0..VOCAB.len(), 0..4), 0..3u8, 0..3u8)
            .prop_map(|(title, summary, details, project, tag)| Op::Create {
                title, summary, details, project, tag
            }),
        2 => (any::<usize>(), words(), prop::collection::vec(0..VOCAB.len(), 0..4))
            .prop_map(|(at, title, details)| Op::Update { at, title, details }),
        1 => any::<usize>().prop_map(|at| Op::Delete { at }),
        1 => any::<usize>().prop_map(|at| Op::Apply { at }),
    ]
}

struct Model {
    id: aigentflow::lessons::LessonId,
    text: BTreeSet<usize>,
    title: Vec<usize>,
    summary: Vec<usize>,
    details: Vec<usize>,
    project: Option<String>,
    tag: String,
}

fn text_of(ws: &[usize]) -> String {
    ws.iter().map(|&w| VOCAB[w]).collect::<Vec<_>>().join(" ")
}

on_both! {
/// Random creates, updates, deletes and applications keep every search equal to a naive scan
/// of a model, filters and pages included, and `check` finds the index sound, on both backends.
fn r6_random_changes_keep_the_index_equal_to_a_naive_scan(t) {
    let mut runner = TestRunner::new(Config { cases: 48, ..Config::default() });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            t.db().write(|tx| tx.execute("DELETE FROM lessons", &[])).unwrap();
            let store = LessonsStore::new(t.db().clone());
            let mut model: Vec<Model> = Vec::new();
            for op in ops {
                match op {
                    Op::Create { title, summary, details, project, tag } => {
                        let project = (project > 0).then(|| format!("p{project}"));
                        let tag = format!("t{tag}");
                        let lesson = store
                            .create(&NewLesson {
                                details: (!details.is_empty()).then(|| text_of(&details)),
                                project_id: project.clone().map(Into::into),
                                tags: vec![tag.clone()],
                                ..NewLesson::new(
                                    Category::Pattern,
                                    text_of(&title),
                                    text_of(&summary),
                                )
                            })
                            .unwrap();
                        let mut m = Model {
                            id: lesson.id.clone(),
                            text: BTreeSet::new(),
                            title,
                            summary,
                            details,
                            project,
                            tag,
                        };
                        m.text =
                            m.title.iter().chain(&m.summary).chain(&m.details).copied().collect();
                        model.push(m);
                    }
                    Op::Update { at, title, details } if !model.is_empty() => {
                        let n = model.len();
                        let m = &mut model[at % n];
                        let update = LessonUpdate {
                            title: Some(text_of(&title)),
                            details: Some((!details.is_empty()).then(|| text_of(&details))),
                            ..Default::default()
                        };
                        store.update(&m.id, &update).unwrap();
                        m.title = title;
                        m.details = details;
                        m.text =
                            m.title.iter().chain(&m.summary).chain(&m.details).copied().collect();
                    }
                    Op::Delete { at } if !model.is_empty() => {
                        let m = model.remove(at % model.len());
                        prop_assert!(store.delete(&m.id).unwrap());
                    }
                    Op::Apply { at } if !model.is_empty() => {
                        store.record_application(&model[at % model.len()].id).unwrap();
                    }
                    _ => {}
                }
            }
            let health = store.check().unwrap();
            prop_assert_eq!(health, IndexHealth::Ok { lessons: model.len() as u64 });
            let queries: Vec<Vec<usize>> = (0..VOCAB.len())
                .map(|w| vec![w])
                .chain([vec![0, 1], vec![2, 5, 9], vec![3, 3]])
                .collect();
            for q in &queries {
                for (project, tag) in [(None, None), (Some("p1"), None), (None, Some("t2"))] {
                    let options = SearchOptions {
                        project_id: project.map(Into::into),
                        tags: tag.into_iter().map(Into::into).collect(),
                        ..SearchOptions::text(text_of(q).to_uppercase())
                    };
                    let hits = store.search(&options).unwrap();
                    prop_assert!(hits.windows(2).all(|w| w[0].score <= w[1].score));
                    // A page is the same slice of the full order (ties at its edges included).
                    let page = SearchOptions { limit: Some(3), offset: Some(1), ..options.clone() };
                    let page: Vec<_> = store
                        .search(&page)
                        .unwrap()
                        .into_iter()
                        .map(|h| (h.lesson.id, h.score))
                        .collect();
                    let slice: Vec<_> = hits
                        .iter()
                        .skip(1)
                        .take(3)
                        .map(|h| (h.lesson.id.clone(), h.score))
                        .collect();
                    prop_assert_eq!(page, slice);
                    let got: BTreeSet<String> =
                        hits.into_iter().map(|h| h.lesson.id.to_string()).collect();
                    let want: BTreeSet<String> = model
                        .iter()
                        .filter(|m| q.iter().all(|w| m.text.contains(w)))
                        .filter(|m| {
                            project.is_none_or(|p| m.project.as_deref().is_none_or(|mp| mp == p))
                        })
                        .filter(|m| tag.is_none_or(|t| m.tag == t))
                        .map(|m| m.id.to_string())
                        .collect();
                    prop_assert_eq!(got, want, "query {:?} project {:?} tag {:?}", q, project, tag);
                }
            }
            Ok(())
        })
        .unwrap();
}
}
