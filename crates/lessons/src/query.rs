//! Turning what a person types into pieces a text query is made of, so that no typed text is
//! query syntax and no search fails on what it is given.
//!
//! The typed text passes the redaction policy first (decision 9: a query for the text a caller
//! holds finds the lesson redaction changed), then splits into [`pieces`]. The pieces are bound
//! as one JSON array, and the statement itself quotes each as a phrase: on SQLite an FTS5 string
//! (`"…"`, its `"` doubled), on PostgreSQL a quoted phrase of `websearch_to_tsquery` (its `"`
//! made a blank, as that function would end the phrase there; inside quotes it reads `or` and
//! `-` as words and escapes nothing). The quoting is done by SQL after the values are bound
//! because every bound text passes the redaction policy again: a query string built here would
//! be redacted as a whole, and a redaction spanning its quotes (`token: "abc"`) would unbalance
//! them; a piece changed here (a `"` made a blank) could be redacted anew.

use aigentflow_persistence::{Clean, Param};

use crate::error::Result;

/// Typed text is read up to this many characters of its pieces (see [`pieces`]); the rest is
/// left out. It bounds what a query costs: PostgreSQL refuses a query of some ten thousand words
/// (its parser runs out of stack, and `ts_rank_cd` asks for memory quadratic in the words).
pub const MAX_QUERY_CHARS: usize = 1024;

/// The pieces of typed text a search matches, in order: every whitespace-separated piece that
/// holds a letter or digit, as many as fit whole in [`MAX_QUERY_CHARS`] characters (a first
/// piece longer than that is cut there). Each becomes one phrase of the query, and every phrase
/// must match, in any order: `multi-agent` is the phrase "multi agent" on SQLite, `AND` is the
/// word "and", `c++` is "c".
pub fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut left = MAX_QUERY_CHARS;
    for piece in text.split_whitespace().filter(|p| has_word(p)) {
        let chars = piece.chars().count();
        if chars <= left {
            out.push(piece);
            left -= chars;
        } else {
            if out.is_empty() {
                let cut = piece.char_indices().nth(left).map_or(piece, |(at, _)| &piece[..at]);
                if has_word(cut) {
                    out.push(cut);
                }
            }
            break;
        }
    }
    out
}

/// The words of a raw FTS5 query that a snippet marks (see [`crate::Highlight`]): its
/// [`pieces`] but FTS5's operators (`AND`, `OR`, `NOT`, `NEAR`, which FTS5 reads only in
/// capitals). The rest of its syntax is read as the blanks between words, so a prefix `auth*`
/// marks the word `auth` alone, and a column name before `:` is marked where it is a word.
pub(crate) fn raw_words(query: &str) -> Vec<&str> {
    pieces(query)
        .into_iter()
        .filter(|p| !matches!(*p, "AND" | "OR" | "NOT" | "NEAR"))
        .map(|p| p.strip_prefix("NEAR(").unwrap_or(p))
        .collect()
}

fn has_word(piece: &str) -> bool {
    piece.chars().any(char::is_alphanumeric)
}

/// The [`pieces`] of `text` after the redaction policy, as the JSON array the statements quote,
/// or `None` when there is no piece. A NUL becomes U+0001 first, a separator of words on both
/// backends as NUL is: PostgreSQL text cannot hold NUL, and FTS5 reads a query only up to it.
pub(crate) fn pieces_param(text: &str) -> Result<Option<Param<'static>>> {
    let text = text.replace('\0', "\u{1}");
    let clean = Clean::text(&text);
    let pieces = pieces(clean.as_str());
    if pieces.is_empty() {
        return Ok(None);
    }
    Ok(Some(Param::json(&serde_json::Value::from(pieces))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pieces_are_the_words_between_blanks() {
        assert_eq!(pieces("React hooks"), ["React", "hooks"]);
        assert_eq!(pieces("say \"hi\"\tc++  AND"), ["say", "\"hi\"", "c++", "AND"]);
        assert_eq!(pieces("NEAR(a b) OR c*"), ["NEAR(a", "b)", "OR", "c*"]);
    }

    #[test]
    fn no_words_means_no_text_match() {
        for text in ["", "   ", "\"", "+-*/ ( ) ^ : \"\" '", "\t\n"] {
            assert!(pieces(text).is_empty(), "{text:?}");
            assert_eq!(pieces_param(text).unwrap(), None, "{text:?}");
        }
    }

    /// A long query keeps the first pieces that fit whole; a first piece too long is cut.
    #[test]
    fn typed_text_is_read_up_to_the_bound() {
        let long = "word ".repeat(MAX_QUERY_CHARS);
        assert_eq!(pieces(&long).len(), MAX_QUERY_CHARS / 4);
        let one = "x".repeat(MAX_QUERY_CHARS + 10);
        assert_eq!(pieces(&one), [&one[..MAX_QUERY_CHARS]]);
        let crossing = format!("{} ab c", "y".repeat(MAX_QUERY_CHARS - 1));
        assert_eq!(pieces(&crossing).len(), 1, "a piece that does not fit ends the query");
        let symbols = format!("{} !!a", "!".repeat(MAX_QUERY_CHARS + 1));
        assert_eq!(pieces(&symbols), ["!!a"], "pieces without words take no room");
        let cut_short = format!("{}a", "!".repeat(MAX_QUERY_CHARS));
        assert!(pieces(&cut_short).is_empty(), "a cut piece with no word is left out");
    }

    /// The pieces are those of the redacted text: a secret typed into a search is searched for
    /// as the lessons store it, and its redaction cannot take a quote with it.
    #[test]
    fn pieces_are_taken_from_the_redacted_text() {
        let key = "sk-ant-api03-abcdefghijklmnopqrstuvwx";
        let param = pieces_param(&format!("leaked {key} token: \"abc\" x")).unwrap();
        let bound = format!("{:?}", param.unwrap());
        assert!(!bound.contains(key) && !bound.contains("abc"), "{bound}");
        assert!(bound.contains("leaked") && bound.contains("[REDACTED]"), "{bound}");
        let nul = format!("{:?}", pieces_param("say \"hi\"\0there").unwrap());
        assert!(nul.contains(r#"[\"say\",\"\\\"hi\\\"\\u0001there\"]"#), "{nul}");
    }

    #[test]
    fn raw_words_are_the_pieces_but_the_operators() {
        assert_eq!(raw_words("auth* AND NOT x OR \"a b\""), ["auth*", "x", "\"a", "b\""]);
        assert_eq!(
            raw_words("NEAR(hook state, 3) near and"),
            ["hook", "state,", "3)", "near", "and"]
        );
        assert!(raw_words("AND OR NOT NEAR").is_empty());
    }

    proptest! {
        /// Whatever is typed: at most the bound of characters, each piece a word between
        /// blanks, and a piece to match exactly when the text has a word.
        #[test]
        fn any_text_gives_bounded_pieces(text in any::<String>()) {
            let pieces = pieces(&text);
            let chars: usize = pieces.iter().map(|p| p.chars().count()).sum();
            prop_assert!(chars <= MAX_QUERY_CHARS);
            prop_assert!(pieces.iter().all(|p| has_word(p) && !p.contains(char::is_whitespace)));
            // No piece: no word, or a first word-piece with no word in its first characters.
            if let (true, Some(first)) =
                (pieces.is_empty(), text.split_whitespace().find(|p| has_word(p)))
            {
                prop_assert!(!first.chars().take(MAX_QUERY_CHARS).any(char::is_alphanumeric));
            }
        }
    }
}
