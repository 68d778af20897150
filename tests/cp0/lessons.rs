//! Step 04 "LessonsStore" twins, plus decision 8 and RELIABILITY.md R5 (hostile queries),
//! R6 (index consistency against a naive scan) and R4 (legacy lessons are searchable).

use std::collections::BTreeSet;

use aigentflow::lessons::{
    Category, Error, Highlight, IndexHealth, LessonUpdate, LessonsStore, NewLesson, QueryMode,
    SearchOptions,
};
use aigentflow::persistence::Database;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::*;

fn store() -> LessonsStore {
    LessonsStore::new(Database::open_in_memory().unwrap())
}

fn titles(store: &LessonsStore, options: &SearchOptions) -> Vec<String> {
    store.search(options).unwrap().into_iter().map(|h| h.lesson.title).collect()
}

// ---- the seed's LessonsStore scenarios ----------------------------------------------------

#[test]
fn lessons_are_created_and_retrieved() {
    let store = store();
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
    assert_eq!(store.get(&"no-such-lesson".into()).unwrap(), None);
}

#[test]
fn lessons_are_searched_by_text_and_category() {
    let store = store();
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

#[test]
fn applications_are_recorded() {
    let store = store();
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

// ---- decision 8: search that never breaks -------------------------------------------------

#[test]
fn search_stems_words_and_matches_them_in_any_order() {
    let store = store();
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

#[test]
fn what_a_person_types_gives_results_or_an_empty_list_never_an_error() {
    let store = store();
    store
        .create(&NewLesson::new(
            Category::Pattern,
            "multi-agent hand-off",
            "don't share state; c++ and C# agents talk AND listen",
        ))
        .unwrap();
    store.create(&NewLesson::new(Category::Bug, "Unrelated", "nothing here")).unwrap();
    let found = |q: &str| titles(&store, &SearchOptions::text(q));
    assert_eq!(found("multi-agent"), ["multi-agent hand-off"]);
    assert_eq!(found("don't"), ["multi-agent hand-off"]);
    assert_eq!(found("c++"), ["multi-agent hand-off"]);
    assert_eq!(found("AND"), ["multi-agent hand-off"]);
    assert_eq!(found("NOT listen"), Vec::<String>::new(), "NOT is a word, not an operator");
    assert_eq!(found("agent*"), ["multi-agent hand-off"]);
    assert_eq!(found("title:multi"), Vec::<String>::new(), "column filters are plain text");
    // No words at all: the filtered list, without text matching.
    for q in ["", "   ", "\"", "+ - * ( ) : ^", "\"\"\"\""] {
        assert_eq!(found(q).len(), 2, "{q:?}");
    }
}

#[test]
fn raw_mode_passes_fts5_syntax_and_types_bad_syntax() {
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
}

#[test]
fn ranking_is_bm25_then_confidence_then_applications() {
    let store = store();
    let mk = |title: &str, summary: &str, confidence: f64| {
        store
            .create(&NewLesson {
                confidence: Some(confidence),
                ..NewLesson::new(Category::Pattern, title, summary)
            })
            .unwrap()
    };
    // A title match outranks a details-only match even at lower confidence.
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

#[test]
fn a_projects_search_sees_its_own_and_global_lessons() {
    let store = store();
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
}

#[test]
fn tags_match_exactly_and_all_given_tags_are_required() {
    let store = store();
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
    assert_eq!(tagged(&["%"]), BTreeSet::new());
}

#[test]
fn a_hit_can_carry_a_highlighted_snippet() {
    let store = store();
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
}

#[test]
fn update_moves_updated_at_and_the_index_follows() {
    let store = store();
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
    assert_eq!(moved.project_id.as_deref(), Some("p1"));
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

#[test]
fn bad_input_is_a_typed_error_and_writes_nothing() {
    let store = store();
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

#[test]
fn delete_removes_a_lesson_from_search() {
    let store = store();
    let lesson = store.create(&NewLesson::new(Category::Bug, "gone soon", "text")).unwrap();
    assert!(store.delete(&lesson.id).unwrap());
    assert!(!store.delete(&lesson.id).unwrap());
    assert!(titles(&store, &SearchOptions::text("gone")).is_empty());
    assert!(matches!(store.check().unwrap(), IndexHealth::Ok { lessons: 0 }));
}

#[test]
fn check_finds_an_index_damaged_around_the_store_and_rebuild_repairs_it() {
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

#[test]
fn lesson_text_is_redacted_before_it_is_written() {
    let (_dir, path) = temp_db();
    let store = LessonsStore::new(open(&path));
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
    let bytes = file_bytes(&path);
    for secret in [key, "hunter2secret", "abcdef123456", "AKIAIOSFODNN7EXAMPLE"] {
        assert!(!contains(&bytes, secret), "{secret} reached the file");
    }
}

#[test]
fn legacy_lessons_are_searchable_after_adoption() {
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
    ]);
    prop_oneof![
        any::<String>(),
        "[\"'*^():+\\-{}\\[\\] ANDORNT]{0,40}",
        prop::collection::vec(pieces, 0..12).prop_map(|v| v.join(" ")),
        prop::collection::vec(prop::sample::select(vec!["x", "\"", "AND", "é"]), 0..4000)
            .prop_map(|v| v.concat()),
    ]
}

#[test]
fn r5_hostile_queries_never_panic_or_fail_and_raw_mode_types_its_errors() {
    let store = store();
    store
        .create(&NewLesson::new(Category::Pattern, "multi-agent hook", "don't c++ Zürich 日本"))
        .unwrap();
    let mut runner = TestRunner::new(Config { cases: 3000, ..Config::default() });
    runner
        .run(&hostile(), |q| {
            let words = store.search(&SearchOptions::text(q.clone()));
            prop_assert!(words.is_ok(), "{q:?}: {:?}", words.err());
            let raw = SearchOptions { mode: QueryMode::Raw, ..SearchOptions::text(q.clone()) };
            match store.search(&raw) {
                Ok(_) | Err(Error::BadQuery { .. }) => {}
                Err(e) => prop_assert!(false, "{q:?}: raw mode gave {e:?}"),
            }
            Ok(())
        })
        .unwrap();
}

// ---- R6: the index never drifts ----------------------------------------------------------

/// Words whose porter stems are all different, so "matches" is "contains the word".
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

#[test]
fn r6_random_changes_keep_the_index_equal_to_a_naive_scan() {
    let mut runner = TestRunner::new(Config { cases: 48, ..Config::default() });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            let store = store();
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
