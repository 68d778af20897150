//! Turning what a person types into an FTS5 query that cannot fail to parse.

/// The FTS5 query for text a person typed, or `None` when it holds no word to match.
///
/// Each whitespace-separated piece that holds a letter or digit becomes one quoted phrase (its
/// `"` doubled), so FTS5 reads nothing in it as syntax: `multi-agent` is the phrase "multi
/// agent", `don't` is "don t", `AND` is the word "and", `c++` is "c". Phrases are joined by
/// spaces, FTS5's implicit AND: every piece must match, in any order.
pub fn safe_match(text: &str) -> Option<String> {
    let mut out = String::new();
    for piece in text.split_whitespace().filter(|p| p.chars().any(char::is_alphanumeric)) {
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

#[cfg(test)]
mod tests {
    use super::safe_match;

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
        }
    }
}
