//! Highlighted snippets ([`crate::SearchOptions::highlight`]), the same on both backends and in
//! time linear in the length of the lessons they are cut from.
//!
//! The databases' own snippet functions are quadratic in the matches inside one lesson: FTS5's
//! `snippet()` scores a window at every match against every other match, PostgreSQL's
//! `ts_headline` looks for covers from every match, and even FTS5's `highlight()` (every match
//! marked, no window) appends to its output by copying it whole (a 100 KB lesson of one matched
//! word took seconds to search, and anyone who can write a lesson could slow every search that
//! finds it). So the work is split:
//!
//! 1. Each column (title, summary, details) is split here into [`tokens`], runs of letters and
//!    digits; the distinct words of a search's hits are gathered, lower-cased ([`Vocabulary`]).
//! 2. The backend says, once per search, which of those words are words of the query by its own
//!    reading: on SQLite the same FTS5 term (porter stem), on PostgreSQL the same lexeme of the
//!    `english` configuration (stopwords never). A word matches wherever it is: the words of a
//!    phrase (`multi-agent`) match one by one, as PostgreSQL's `HighlightAll` marks them.
//! 3. Per column, [`best_window`] finds the window of at most `tokens` tokens with the most
//!    distinct matched words; the column whose window has the most is shown (the first on a tie:
//!    title, summary, details), its matched tokens wrapped in the markers and `ellipsis` at each
//!    end the window cut from the text ([`render`]).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::error::Result;
use crate::model::Highlight;

/// The byte ranges of the tokens of `text`: its maximal runs of letters and digits
/// ([`char::is_alphanumeric`]), as FTS5's `unicode61` reads words; all else separates them.
pub(crate) fn tokens(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (at, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(at),
            (false, Some(s)) => {
                out.push(s..at);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..text.len());
    }
    out
}

/// The distinct words (lower-cased tokens) of the texts of one search, each with an id: its
/// index in [`Vocabulary::words`], which is what the backend is asked about.
#[derive(Debug, Default)]
pub(crate) struct Vocabulary {
    ids: HashMap<String, usize>,
}

impl Vocabulary {
    fn id(&mut self, token: &str) -> usize {
        let next = self.ids.len();
        *self.ids.entry(token.to_lowercase()).or_insert(next)
    }

    /// The words by id.
    pub(crate) fn words(&self) -> Vec<&str> {
        let mut words = vec![""; self.ids.len()];
        for (word, &id) in &self.ids {
            words[id] = word;
        }
        words
    }
}

/// One column of a hit: its text, its tokens and the word id of each.
#[derive(Debug)]
struct Column<'a> {
    text: &'a str,
    tokens: Vec<Range<usize>>,
    words: Vec<usize>,
}

impl<'a> Column<'a> {
    fn new(text: &'a str, vocabulary: &mut Vocabulary) -> Self {
        let tokens = tokens(text);
        let words = tokens.iter().map(|t| vocabulary.id(&text[t.clone()])).collect();
        Self { text, tokens, words }
    }
}

/// The snippet of each hit, given its columns (title, summary, details; `None` for a column
/// without text) and `matching`, the backend's answer: the ids of the words of
/// [`Vocabulary::words`] that are words of the query.
pub(crate) fn snippets<'a>(
    hits: impl IntoIterator<Item = [Option<&'a str>; 3]>,
    h: &Highlight,
    matching: impl FnOnce(&[&str]) -> Result<Vec<usize>>,
) -> Result<Vec<String>> {
    let mut vocabulary = Vocabulary::default();
    let hits: Vec<Vec<Column<'a>>> = hits
        .into_iter()
        .map(|columns| {
            columns.into_iter().flatten().map(|t| Column::new(t, &mut vocabulary)).collect()
        })
        .collect();
    let words = vocabulary.words();
    let mut matched = vec![false; words.len()];
    if !words.is_empty() {
        for id in matching(&words)? {
            if let Some(m) = matched.get_mut(id) {
                *m = true;
            }
        }
    }
    Ok(hits.iter().map(|columns| snippet(columns, &matched, h)).collect())
}

/// The snippet of one hit: the best window of its best column (see the module documentation).
fn snippet(columns: &[Column<'_>], matched: &[bool], h: &Highlight) -> String {
    let size = usize::from(h.tokens);
    let mut best: Option<(&Column<'_>, Window)> = None;
    for column in columns {
        let ids: Vec<Option<usize>> = column
            .words
            .iter()
            .map(|&w| matched.get(w).copied().unwrap_or(false).then_some(w))
            .collect();
        let window = best_window(&ids, size);
        if best.as_ref().is_none_or(|(_, b)| window.distinct > b.distinct) {
            best = Some((column, window));
        }
    }
    match best {
        Some((column, window)) => render(column, &window, matched, h),
        None => String::new(),
    }
}

/// A window over a column's tokens: `tokens` is the range of token indexes it holds, `distinct`
/// how many distinct matched words are among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) tokens: Range<usize>,
    pub(crate) distinct: usize,
}

/// The window of `size` consecutive tokens (all of them when there are no more) holding the most
/// distinct matched words, given each token's matched word (`None`: no match). Of the windows
/// that hold the most, the first is taken, then moved so that its matched tokens sit in its
/// middle (the tokens of context split evenly before the first and after the last, an odd one
/// after, as far as the text allows), which keeps every match it held. One pass, time linear in the tokens.
pub(crate) fn best_window(words: &[Option<usize>], size: usize) -> Window {
    let n = words.len();
    let size = size.max(1);
    if n <= size {
        let distinct = words.iter().flatten().collect::<HashSet<_>>().len();
        return Window { tokens: 0..n, distinct };
    }
    // How often each matched word is in the window, and how many are there at all.
    let mut counts: HashMap<usize, usize> = HashMap::new();
    let mut current = 0;
    let mut best: Option<(usize, usize)> = None;
    for end in 0..n {
        if let Some(w) = words[end] {
            let count = counts.entry(w).or_insert(0);
            *count += 1;
            current += usize::from(*count == 1);
        }
        if let Some(w) = end.checked_sub(size).and_then(|gone| words[gone]) {
            if let Some(count) = counts.get_mut(&w) {
                *count -= 1;
                current -= usize::from(*count == 0);
            }
        }
        if let Some(start) = (end + 1).checked_sub(size) {
            if best.is_none_or(|(_, most)| current > most) {
                best = Some((start, current));
            }
        }
    }
    let (start, most) = best.unwrap_or((0, 0));
    let held = &words[start..start + size];
    let start =
        match (held.iter().position(Option::is_some), held.iter().rposition(Option::is_some)) {
            (Some(first), Some(last)) => {
                let spare = size - (last - first + 1);
                (start + first).saturating_sub(spare / 2).min(n - size)
            }
            _ => start,
        };
    Window { tokens: start..start + size, distinct: most }
}

/// The text of `window` in `column`: from its first token to its last (from the start of the
/// text when it holds the first token, to its end when it holds the last), blanks at its ends
/// left out, every matched token between `h.open` and `h.close`, and `h.ellipsis` at an end
/// where tokens were left out. A column without tokens is its text, trimmed.
fn render(column: &Column<'_>, window: &Window, matched: &[bool], h: &Highlight) -> String {
    let (text, tokens) = (column.text, &column.tokens);
    let Range { start, end } = window.tokens;
    if tokens.is_empty() || start >= end {
        return text.trim().to_owned();
    }
    let from = if start == 0 { 0 } else { tokens[start].start };
    let to = if end == tokens.len() { text.len() } else { tokens[end - 1].end };
    let piece = &text[from..to];
    let from = from + (piece.len() - piece.trim_start().len());
    let to = to - (piece.len() - piece.trim_end().len());
    let mut out = String::with_capacity(to - from + h.ellipsis.len() * 2);
    if start > 0 {
        out.push_str(&h.ellipsis);
    }
    let mut at = from;
    for (token, &word) in tokens[start..end].iter().zip(&column.words[start..end]) {
        if matched.get(word).copied().unwrap_or(false) {
            out.push_str(&text[at..token.start]);
            out.push_str(&h.open);
            out.push_str(&text[token.clone()]);
            out.push_str(&h.close);
            at = token.end;
        }
    }
    out.push_str(&text[at..to]);
    if end < tokens.len() {
        out.push_str(&h.ellipsis);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `words`: one per token, `.` for an unmatched one, else the matched word (a letter).
    #[track_caller]
    fn check(words: &str, size: usize, tokens: Range<usize>, distinct: usize) {
        let ids: Vec<Option<usize>> = words
            .split_whitespace()
            .map(|w| (w != ".").then(|| usize::from(w.as_bytes()[0])))
            .collect();
        assert_eq!(best_window(&ids, size), Window { tokens, distinct }, "{words:?} in {size}");
    }

    #[test]
    fn the_window_holds_the_most_distinct_matched_words_with_them_in_its_middle() {
        check("a . . . . .", 3, 0..3, 1); // at the start: no room before it
        check(". . . . . a", 3, 3..6, 1); // at the end: no room after it
        check(". . . a . . .", 3, 2..5, 1); // in the middle: one token each side
        check(". . . . a b . . . .", 6, 2..8, 2); // two tokens of context each side
        check("a . . . b . c . . a b c", 3, 9..12, 3); // where all three are
        check("a a a . b c", 3, 2..5, 2); // distinct words, not matches, count
        check("a . . b . . . .", 4, 0..4, 2); // matches at both ends: not moved
        check(". . a . . a . .", 3, 1..4, 1); // a tie: the first
        check("a . b . a . b", 3, 0..3, 2);
    }

    #[test]
    fn a_window_as_long_as_the_text_is_all_of_it() {
        check("a . b", 10, 0..3, 2);
        check("a . b", 3, 0..3, 2);
        check("a a", 64, 0..2, 1);
        check("", 3, 0..0, 0);
        check(". . .", 5, 0..3, 0);
    }

    #[test]
    fn one_token_windows_and_texts_without_matches() {
        check(". a . b", 1, 1..2, 1);
        check("a", 1, 0..1, 1);
        check(". . . .", 2, 0..2, 0);
        check(". . . .", 1, 0..1, 0);
    }

    #[test]
    fn tokens_are_runs_of_letters_and_digits() {
        let text = "don't (stop)-me 日本 v1.2 Zürich 🦀 x";
        let got: Vec<&str> = tokens(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(got, ["don", "t", "stop", "me", "日本", "v1", "2", "Zürich", "x"]);
        assert!(tokens("").is_empty());
        assert!(tokens(" -- !? 🦀 ").is_empty());
    }

    /// The snippet of `texts` when the backend matches the words of `query` (lower-cased, as
    /// it is asked them).
    fn show(texts: [Option<&str>; 3], query: &[&str], tokens: u8) -> String {
        let h = Highlight { tokens, ..Highlight::default() };
        let out = snippets([texts], &h, |words| {
            Ok((0..words.len()).filter(|&i| query.contains(&words[i])).collect())
        });
        out.unwrap().pop().unwrap()
    }

    fn one(text: &str, query: &[&str], tokens: u8) -> String {
        show([Some(text), Some("-"), None], query, tokens)
    }

    #[test]
    fn matched_tokens_are_marked_and_cut_ends_say_so() {
        assert_eq!(
            one("Use custom hooks for shared logic", &["shared"], 16),
            "Use custom hooks for [shared] logic"
        );
        assert_eq!(one("hooks", &["hooks"], 16), "[hooks]");
        assert_eq!(one("hooks end", &["hooks"], 1), "[hooks]…");
        assert_eq!(one("start hooks", &["hooks"], 1), "…[hooks]");
        assert_eq!(one("a b c hooks d e f", &["hooks"], 3), "…c [hooks] d…");
        assert_eq!(one("Hooks, hooks and HOOKS", &["hooks"], 16), "[Hooks], [hooks] and [HOOKS]");
        assert_eq!(one("x hooks hooks", &["hooks"], 2), "…[hooks] [hooks]");
        assert_eq!(one("nothing here at all", &["hooks"], 2), "nothing here…");
    }

    #[test]
    fn text_around_the_window_stays_at_the_texts_ends_only() {
        assert_eq!(one("(hooks).", &["hooks"], 16), "([hooks]).");
        assert_eq!(one("  a hooks  ", &["hooks"], 16), "a [hooks]");
        assert_eq!(one("a, b, (hooks), c, d", &["hooks"], 1), "…[hooks]…");
        assert_eq!(one("a, b, c-hooks-d, e", &["hooks"], 3), "…c-[hooks]-d…");
        assert_eq!(one("!!!", &["hooks"], 4), "!!!");
    }

    #[test]
    fn multi_byte_text_is_cut_between_characters() {
        assert_eq!(
            one("Zürich ist schön, 日本 too", &["schön"], 16),
            "Zürich ist [schön], 日本 too"
        );
        assert_eq!(one("ÄÖÜ schön 日本 ß", &["日本"], 1), "…[日本]…");
        assert_eq!(one("🦀 Zürich 🦀", &["zürich"], 1), "🦀 [Zürich] 🦀");
        assert_eq!(one("ÉCOLE école", &["école"], 16), "[ÉCOLE] [école]");
    }

    #[test]
    fn the_column_with_the_most_distinct_matched_words_is_shown_the_first_on_a_tie() {
        let q = ["react", "hook"];
        assert_eq!(show([Some("Hooks"), Some("a hook"), None], &["hooks"], 16), "[Hooks]");
        assert_eq!(show([Some("Title"), Some("use a hook"), None], &q, 16), "use a [hook]");
        assert_eq!(
            show([Some("hook"), Some("hook hook"), Some("react and hook")], &q, 16),
            "[react] and [hook]"
        );
        assert_eq!(show([Some("no"), Some("nothing"), Some("")], &q, 16), "no");
        assert_eq!(show([Some("t"), Some("s"), Some("react")], &q, 16), "[react]");
    }

    #[test]
    fn markers_are_written_as_given() {
        let h = Highlight {
            open: "\"<,".into(),
            close: ",>\"".into(),
            ellipsis: "~".into(),
            tokens: 2,
        };
        let out = snippets([[Some("a b needle c d"), None, None]], &h, |words| {
            Ok((0..words.len()).filter(|&i| words[i] == "needle").collect())
        });
        assert_eq!(out.unwrap(), ["~\"<,needle,>\" c~"]);
    }

    /// Each distinct word is asked of the backend once, lower-cased, whatever the hits repeat.
    #[test]
    fn the_backend_is_asked_each_distinct_word_once() {
        let long = "Login login LOGIN ".repeat(1000);
        let mut asked = Vec::new();
        let h = Highlight::default();
        let out = snippets(
            [[Some("Login"), Some(long.as_str()), None], [Some("x"), Some("Login y"), None]],
            &h,
            |words| {
                asked = words.iter().map(|w| w.to_string()).collect();
                Ok((0..words.len()).filter(|&i| words[i] == "login").collect())
            },
        )
        .unwrap();
        asked.sort();
        assert_eq!(asked, ["login", "x", "y"]);
        assert_eq!(out, ["[Login]", "[Login] y"]);
    }

    /// A lesson of 100 000 matched words gives a window of `tokens` of them.
    #[test]
    fn a_long_text_gives_a_window_of_its_size() {
        let long = "login ".repeat(100_000);
        let out = one(&long, &["login"], 5);
        assert_eq!(out, "[login] [login] [login] [login] [login]…");
    }
}
