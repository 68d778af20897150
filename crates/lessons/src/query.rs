//! Turning what a person types into a text query that cannot fail to parse: an FTS5 query on
//! SQLite, a `websearch_to_tsquery` text on PostgreSQL, from the same pieces.

/// Typed text is read up to this many characters of its pieces (see [`pieces`]); the rest is
/// left out. It bounds what a query costs: PostgreSQL refuses a query of some ten thousand words
/// (its parser runs out of stack, and `ts_rank_cd` asks for memory quadratic in the words).
pub const MAX_QUERY_CHARS: usize = 1024;

/// The pieces of typed text a search matches, in order: every whitespace-separated piece that
/// holds a letter or digit, as many as fit whole in [`MAX_QUERY_CHARS`] characters (a first
/// piece longer than that is cut there).
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

fn has_word(piece: &str) -> bool {
    piece.chars().any(char::is_alphanumeric)
}

/// The FTS5 query for text a person typed, or `None` when it holds no word to match.
///
/// Each of its [`pieces`] becomes one quoted phrase (its `"` doubled), so FTS5 reads nothing in
/// it as syntax: `multi-agent` is the phrase "multi agent", `don't` is "don t", `AND` is the word
/// "and", `c++` is "c". Phrases are joined by spaces, FTS5's implicit AND: every piece must
/// match, in any order.
pub fn safe_match(text: &str) -> Option<String> {
    let mut out = String::new();
    for piece in pieces(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push('"');
        for c in piece.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    }
    (!out.is_empty()).then_some(out)
}

/// How the phrases of a PostgreSQL query are joined: every one must match, or any one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Every phrase (the search).
    All,
    /// Any phrase (choosing and marking a snippet).
    Any,
}

/// The text for PostgreSQL's `websearch_to_tsquery('english', …)` for text a person typed, or
/// `None` when it holds no word to match.
///
/// Each of its [`pieces`] becomes one quoted phrase, as [`safe_match`] makes for FTS5. Inside
/// quotes `websearch_to_tsquery` reads `or` and `-` as words and never escapes a character, and a
/// `"` would end the phrase: so every `"` of a piece becomes a blank (a `"` separates words in
/// the lesson's text too), as does NUL, which PostgreSQL text cannot hold. Phrases are joined by
/// a blank (every one must match) or by `or` (any one). The function never fails on its input,
/// so no typed text is ever an error.
pub fn websearch(text: &str, join: Join) -> Option<String> {
    let mut out = String::new();
    for piece in pieces(text) {
        if !out.is_empty() {
            out.push_str(match join {
                Join::All => " ",
                Join::Any => " or ",
            });
        }
        out.push('"');
        out.extend(piece.chars().map(|c| if matches!(c, '"' | '\0') { ' ' } else { c }));
        out.push('"');
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pieces_become_quoted_phrases() {
        assert_eq!(safe_match("React hooks").as_deref(), Some(r#""React" "hooks""#));
        assert_eq!(safe_match(r#"say "hi""#).as_deref(), Some(r#""say" """hi""""#));
        assert_eq!(safe_match("NEAR(a b) OR c*").as_deref(), Some(r#""NEAR(a" "b)" "OR" "c*""#));
    }

    #[test]
    fn no_words_means_no_text_match() {
        for text in ["", "   ", "\"", "+-*/ ( ) ^ : \"\" '", "\t\n"] {
            assert_eq!(safe_match(text), None, "{text:?}");
            assert_eq!(websearch(text, Join::All), None, "{text:?}");
        }
    }

    #[test]
    fn websearch_pieces_are_quoted_phrases_with_no_quote_or_nul_inside() {
        let all = |t| websearch(t, Join::All);
        assert_eq!(all("React hooks").as_deref(), Some(r#""React" "hooks""#));
        assert_eq!(all(r#"say "hi""#).as_deref(), Some(r#""say" " hi ""#));
        assert_eq!(all("a\0b -x or").as_deref(), Some(r#""a b" "-x" "or""#));
        assert_eq!(all(r"c:\dir\ don't").as_deref(), Some(r#""c:\dir\" "don't""#));
        assert_eq!(websearch("x y", Join::Any).as_deref(), Some(r#""x" or "y""#));
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

    proptest! {
        /// Whatever is typed: at most the bound of characters, every piece a whole phrase of
        /// the query with no `"` or NUL inside, and the same pieces on both backends.
        #[test]
        fn any_text_gives_bounded_pieces_and_balanced_phrases(text in any::<String>()) {
            let pieces = pieces(&text);
            let chars: usize = pieces.iter().map(|p| p.chars().count()).sum();
            prop_assert!(chars <= MAX_QUERY_CHARS);
            prop_assert!(pieces.iter().all(|p| has_word(p) && !p.contains(char::is_whitespace)));
            if let Some(web) = websearch(&text, Join::All) {
                prop_assert!(!web.contains('\0'));
                prop_assert_eq!(web.matches('"').count(), 2 * pieces.len());
            }
            prop_assert_eq!(safe_match(&text).is_some(), !pieces.is_empty());
        }
    }
}
