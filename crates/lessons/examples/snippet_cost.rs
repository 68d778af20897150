//! What a highlighted search costs on a lesson whose details repeat one matched word: the
//! measurement behind the linear snippet (run in release mode, on a database made for it, as it
//! writes a lesson there and deletes it after).
//!
//! `cargo run --release -p aigentflow-lessons --example snippet_cost -- LOCATION [WORDS] [RUNS]
//! [distinct]` where LOCATION is a SQLite file or a `postgres://` URL; prints the median
//! milliseconds of a search with and without a snippet. With `distinct`, the details are WORDS
//! different words (`login1 login2 …`) and one `login`: the most words a snippet asks the
//! backend about.

use std::time::Instant;

use aigentflow_lessons::{Category, Highlight, LessonsStore, NewLesson, SearchOptions};
use aigentflow_persistence::Database;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let location = args.next().ok_or("give a SQLite file or a postgres:// URL")?;
    let words: usize = args.next().map_or(Ok(17_000), |n| n.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |n| n.parse())?;
    let distinct = args.next().as_deref() == Some("distinct");
    let details = if distinct {
        (0..words).map(|i| format!("login{i} ")).collect::<String>() + "login"
    } else {
        "login ".repeat(words)
    };
    let store = LessonsStore::new(Database::open(&location)?);
    let lesson = store.create(&NewLesson {
        details: Some(details.clone()),
        ..NewLesson::new(Category::Bug, "Sessions", "What a sign-in does")
    })?;
    let plain = SearchOptions::text("login");
    let marked = SearchOptions { highlight: Some(Highlight::default()), ..plain.clone() };
    let median = |options: &SearchOptions| -> Result<f64, Box<dyn std::error::Error>> {
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let hits = store.search(options)?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(hits.len(), 1, "the one lesson is found");
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    };
    let without = median(&plain)?;
    let with = median(&marked)?;
    store.delete(&lesson.id)?;
    println!(
        "{} words={words} distinct={distinct} details_bytes={} runs={runs} search_ms={without:.1} \
         snippet_search_ms={with:.1}",
        store_backend(&location),
        details.len()
    );
    Ok(())
}

fn store_backend(location: &str) -> &'static str {
    if location.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}
