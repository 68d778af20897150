//! How long the redaction policy takes on typical stored text: run with
//! `cargo run --release -p aigentflow-persistence --example redact_speed`. Prints the mean time
//! per call for each kind of text; a measurement to compare builds by, not a test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aigentflow_persistence::redact::redact_text;

fn main() {
    let code = "fn session(token: Option<Token>) -> Result<Vec<u8>, Error> {\n    \
                let secret_len = token.map(|t| t.len()).unwrap_or(0);\n    \
                // the password reset flow calls this once per request\n    \
                Ok(vec![0; secret_len])\n}\n"
        .repeat(12);
    let prose = "The agent reviewed the auth middleware and the session store, wrote tests for \
                 the password reset flow and noted that token usage is high at 128000 context. "
        .repeat(16);
    let samples: [(&str, String); 9] = [
        ("id", "task-550e8400-e29b-41d4-a716-446655440000".into()),
        ("short prose", "Implement the login page with a reset link".into()),
        (
            "log line with url",
            "GET https://api.example.com/v1/items?q=a%20b&page=2 200 in 35ms".into(),
        ),
        (
            "json details",
            r#"{"agent":"reviewer","files":["src/lib.rs","src/db.rs"],"tokens":{"input":1200,"output":300},"note":"said \"ok\" twice","success":true}"#
                .into(),
        ),
        ("prose 2.5 KiB", prose),
        ("code 2.4 KiB", code),
        ("secret pair", "connect with password: correct horse battery staple".into()),
        (
            "pretty json with secret",
            "{\n  \"user\": \"bob\",\n  \"password\":\n    \"L3ssonPw!\"\n}".into(),
        ),
        ("escaped json", r#"{\"password\":\"Hunter6xDbl\",\"user\":\"bob\"}"#.into()),
    ];
    for (name, text) in &samples {
        // Warm up, then run for about half a second.
        for _ in 0..1000 {
            black_box(redact_text(black_box(text)));
        }
        let mut calls = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(500) {
            for _ in 0..100 {
                black_box(redact_text(black_box(text)));
            }
            calls += 100;
        }
        let per_call = started.elapsed().as_nanos() / u128::from(calls);
        println!("{name:>24}  {:>6} bytes  {per_call:>8} ns/call", text.len());
    }
}
