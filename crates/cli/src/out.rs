//! Output: JSON for scripts, aligned tables for people, colour only on a terminal without NO_COLOR.
//!
//! Every line for people passes one of two choke points: [`write_line`] (stdout, through
//! `say!`) and [`eprint_line`] (stderr: errors, notes, logs). Both show every character that a
//! terminal would obey rather than print ([`is_unsafe`]) escaped as text, whatever field it comes
//! from, so no id, name, prompt, path or error can move the cursor, recolour, retitle the
//! window or reorder the line. The CLI's own colours ([`Out::paint`], [`Out::mark`],
//! [`Out::highlight`]) are not escape codes until then: they are marks that carry a nonce drawn
//! at random when the process starts, which no stored or typed text can know, and only
//! `write_line` turns them into SGR codes, after everything else is escaped. JSON (`--json`)
//! is printed as serde writes it ([`write_json`]): control characters are escaped by JSON itself.

use std::io::{IsTerminal, Write};
use std::sync::LazyLock;

use serde::Serialize;

/// Prints one line for people on stdout, sanitised (see the module doc). A failed write never
/// stops the command (see [`write_stdout`]): the lines after it are dropped, and the command
/// ends as one whose output failed once its work is done.
macro_rules! say {
    () => { $crate::out::write_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::out::write_line(format_args!($($arg)*)) };
}
pub(crate) use say;

/// Writes `args` as one sanitised line on stdout, turning the CLI's colour marks into SGR codes.
/// The line goes through the redaction policy first, as an error line does: a value the
/// command echoes (a reviewer, a scope, a source, a problem with a file) shows as it would be
/// stored, whichever field it came from.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    // Nothing is written after a failed write: nor formatted, nor redacted.
    if STDOUT_FAILED.get().is_some() {
        return;
    }
    let line = args.to_string();
    let text = render(&aigentflow_persistence::redact::redact_text(&line), true);
    write_stdout(&text);
}

/// `value` with every string in it, keys included, through the redaction policy's text rules
/// (the JSON twin of [`write_line`]'s): what a stored value holds is already redacted and stays
/// as it is, what the command echoes is redacted as it would be stored.
fn redact_strings(value: &mut serde_json::Value) {
    use aigentflow_persistence::redact::redact_text;
    use serde_json::Value;
    match value {
        Value::String(text) => {
            if let std::borrow::Cow::Owned(clean) = redact_text(text) {
                *text = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_strings),
        Value::Object(members) => {
            let redacts_a_key =
                members.keys().any(|k| matches!(redact_text(k), std::borrow::Cow::Owned(_)));
            if redacts_a_key {
                let old = std::mem::take(members);
                for (key, member) in old {
                    members.insert(redact_text(&key).into_owned(), member);
                }
            }
            members.values_mut().for_each(redact_strings);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Writes JSON text, and a newline, on stdout. Serde escapes the C0 controls; what else a
/// terminal acts on (DEL, C1, bidirectional and line-separator characters, which can only stand
/// inside strings) is written as a JSON `\uXXXX` escape, so the text stays the same JSON value.
pub fn write_json(text: &str) {
    write_stdout(&json_for_terminal(text));
}

/// `text` (JSON) with every character [`is_unsafe`] but the structural newline as `\uXXXX`.
fn json_for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c != '\n' && is_unsafe(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How stdout failed, once a write to it has: set by the first failed write, after which
/// nothing more is written.
static STDOUT_FAILED: std::sync::OnceLock<StdoutFailed> = std::sync::OnceLock::new();

/// Writes `text` and a newline on stdout, or nothing once a write to it has failed.
///
/// A failed write never stops the command: the work it started (a demo's steps, a copy, an
/// import) is not left half-done because its reader went away. The failure is remembered
/// ([`stdout_failed`]), every later line is dropped, and `main` ends the command by it when
/// the command's work is done: a closed pipe (`… | head -1`) quietly with the command's own exit
/// code, as other Unix tools do; any other write error (a full disk) with one line on stderr,
/// said here as it happens, and exit code 1. A loop that prints without end (`audit tail
/// --follow`) asks [`stdout_failed`] to know when to stop.
fn write_stdout(text: &str) {
    if STDOUT_FAILED.get().is_some() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        let closed = e.kind() == std::io::ErrorKind::BrokenPipe;
        if STDOUT_FAILED.set(StdoutFailed { closed }).is_ok() && !closed {
            eprint_line(&format!("aigentflow: error: cannot write the output: {e}"));
        }
    }
}

/// How stdout failed, if a write to it has.
pub fn stdout_failed() -> Option<StdoutFailed> {
    STDOUT_FAILED.get().copied()
}

/// Writes one sanitised line on stderr (colour marks are dropped: stderr is never painted).
pub fn eprint_line(text: &str) {
    let mut line = render(text, false);
    line.push('\n');
    // Nothing sensible is left to do when stderr itself cannot be written.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Which of stdout and stderr is one of `own` (a database's own files), and which file.
pub fn streams_among(
    own: &aigentflow_persistence::output::OwnFiles,
) -> (Option<std::path::PathBuf>, Option<std::path::PathBuf>) {
    use std::os::fd::AsFd;
    let stdout = own.behind(std::io::stdout().as_fd()).map(std::path::Path::to_path_buf);
    let stderr = own.behind(std::io::stderr().as_fd()).map(std::path::Path::to_path_buf);
    (stdout, stderr)
}

/// Writes one sanitised line on stdout, ignoring a failure: for an error that must not go to
/// stderr (stderr is the database's own file).
pub fn print_line_on_stdout(text: &str) {
    let mut line = render(text, false);
    line.push('\n');
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// How a write to stdout failed.
#[derive(Debug, Clone, Copy)]
pub struct StdoutFailed {
    /// The reader went away (a closed pipe): not an error of the command's.
    pub closed: bool,
}

/// Whether a terminal would act on `c` rather than print it, so output shows it escaped: the C0
/// controls (newline and tab too: a field never breaks or indents a line), DEL, the C1 controls
/// U+0080 to U+009F (U+009B starts a sequence on its own) and the bidirectional embeddings,
/// overrides and isolates U+202A to U+202E and U+2066 to U+2069 and the marks U+200E, U+200F and
/// U+061C, which reorder what follows, and the line and paragraph separators U+2028 and U+2029.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Appends `c` as output shows it: itself, or escaped the way Rust writes it (`\n`, `\u{1b}`).
fn push_shown(out: &mut String, c: char) {
    if !is_unsafe(c) {
        out.push(c);
        return;
    }
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        _ => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
    }
}

/// The start of a colour mark: a private-use character and this process's nonce. A mark is the
/// start, an SGR parameter list (digits and `;`) and `m`.
static MARK: LazyLock<String> =
    LazyLock::new(|| format!("\u{E000}{}", uuid::Uuid::new_v4().simple()));

/// A colour mark for the SGR parameters `code` (`1` bold, `31` red, `0` reset…).
fn mark_for(code: &str) -> String {
    format!("{}{code}m", *MARK)
}

/// A piece of text to print: one of the CLI's colour marks, or a character.
enum Piece<'a> {
    Mark(&'a str),
    Char(char),
}

/// The marks and characters of `text`, in order. Text that looks like a mark but lacks the
/// nonce is characters.
fn pieces(text: &str) -> impl Iterator<Item = Piece<'_>> {
    let mark = MARK.as_str();
    let mut rest = text;
    std::iter::from_fn(move || {
        if let Some(after) = rest.strip_prefix(mark) {
            let len = after.find(|c: char| !(c.is_ascii_digit() || c == ';')).unwrap_or(0);
            if len > 0 && after[len..].starts_with('m') {
                rest = &after[len + 1..];
                return Some(Piece::Mark(&after[..len]));
            }
        }
        let c = rest.chars().next()?;
        rest = &rest[c.len_utf8()..];
        Some(Piece::Char(c))
    })
}

/// `text` as a terminal line: unsafe characters escaped, colour marks turned into SGR codes
/// (`sgr`) or dropped; a line left coloured is reset at its end.
pub fn render(text: &str, sgr: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open = false;
    for piece in pieces(text) {
        match piece {
            Piece::Char(c) => push_shown(&mut out, c),
            Piece::Mark(code) if sgr => {
                out.push_str("\x1b[");
                out.push_str(code);
                out.push('m');
                open = code != "0";
            }
            Piece::Mark(_) => {}
        }
    }
    if open {
        out.push_str("\x1b[0m");
    }
    out
}

/// How many characters `text` takes once rendered (marks take none).
fn width(text: &str) -> usize {
    render(text, false).chars().count()
}

/// How results are printed.
#[derive(Debug, Clone)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
    color: bool,
}

impl Out {
    /// Colour is on for a terminal (or with CLICOLOR_FORCE set and not `0`), off with NO_COLOR
    /// set and not empty, and never in JSON.
    pub fn new(json: bool, quiet: bool) -> Self {
        let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
        let color = !json
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && (std::io::stdout().is_terminal() || set("CLICOLOR_FORCE"));
        Self { json, quiet, color }
    }

    /// Prints `value` as JSON, or runs `human` to print it for a person.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        value: &T,
        human: impl FnOnce(),
    ) -> anyhow::Result<()> {
        if self.json {
            let mut value = serde_json::to_value(value)?;
            redact_strings(&mut value);
            write_json(&serde_json::to_string_pretty(&value)?);
        } else {
            human();
        }
        Ok(())
    }

    /// Whether progress goes to stderr: a terminal, and not --quiet.
    pub fn shows_progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// A spinner with a message on stderr while long work runs, when progress shows.
    pub fn spinner(&self, message: &str) -> Option<indicatif::ProgressBar> {
        if !self.shows_progress() {
            return None;
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(render(message, false));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(bar)
    }

    /// A side note for people on stderr (not with --quiet or --json), sanitised.
    pub fn note(&self, text: &str) {
        if !self.quiet && !self.json {
            eprint_line(text);
        }
    }

    /// Tells which temporary files of writers that are gone an output removed.
    pub fn note_leftovers(&self, leftovers: &[aigentflow_persistence::Leftover]) {
        for l in leftovers {
            self.note(&format!(
                "removed {}, left by an export or backup whose process {} is gone",
                l.path.display(),
                l.pid
            ));
        }
    }

    /// `text` in an SGR colour (32 green, 31 red, 1 bold…) when colour is on: as marks that only
    /// [`write_line`] turns into escape codes.
    pub fn paint(&self, code: u8, text: &str) -> String {
        if self.color {
            format!("{}{text}{}", mark_for(&code.to_string()), mark_for("0"))
        } else {
            text.to_owned()
        }
    }

    /// The mark of a check: a green tick or a red cross.
    pub fn mark(&self, ok: bool) -> String {
        if ok {
            self.paint(32, "✓")
        } else {
            self.paint(31, "✗")
        }
    }

    /// Highlight markers for search snippets: bold marks with colour, else brackets.
    pub fn highlight(&self) -> (String, String) {
        if self.color {
            (mark_for("1"), mark_for("0"))
        } else {
            ("[".into(), "]".into())
        }
    }
}

/// Prints rows under headers, each column as wide as its widest cell as rendered.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        say!("(none)");
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |cells: &[String]| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            s.push_str(cell);
            if i < last {
                s.push_str(&" ".repeat(w.saturating_sub(width(cell)) + 2));
            }
        }
        say!("{}", s.trim_end());
    };
    line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
}

/// Text cut to `max` characters as shown, for a table cell: line breaks and tabs become spaces,
/// other unsafe characters are escaped (and counted as shown), colour marks count for nothing
/// and are never cut.
pub fn cell(text: &str, max: usize) -> String {
    let shown = |c: char| {
        let mut s = String::new();
        push_shown(&mut s, if matches!(c, '\n' | '\r' | '\t') { ' ' } else { c });
        s
    };
    let total: usize = pieces(text)
        .map(|p| match p {
            Piece::Mark(_) => 0,
            Piece::Char(c) => shown(c).chars().count(),
        })
        .sum();
    let budget = if total <= max { usize::MAX } else { max.saturating_sub(1) };
    let mut out = String::new();
    let mut used = 0;
    let mut open = false;
    for piece in pieces(text) {
        match piece {
            Piece::Mark(code) => {
                out.push_str(&mark_for(code));
                open = code != "0";
            }
            Piece::Char(c) => {
                let s = shown(c);
                let w = s.chars().count();
                if used + w > budget {
                    if open {
                        out.push_str(&mark_for("0"));
                    }
                    out.push('…');
                    break;
                }
                used += w;
                out.push_str(&s);
            }
        }
    }
    out
}

/// An optional value as a cell (`-` for none).
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// An instant as people read it.
pub fn when(ts: chrono::DateTime<chrono::Utc>) -> String {
    ts.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn coloured() -> Out {
        Out { json: false, quiet: false, color: true }
    }

    /// Text with the characters that matter here mixed into any other text.
    fn hostile() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            any::<char>().prop_map(String::from),
            Just("\u{1b}[31m".to_owned()),
            Just("\u{9b}".to_owned()),
            Just("\u{202e}".to_owned()),
            Just("\u{2028}\u{200f}\u{7f}".to_owned()),
            Just("\n\r\t".to_owned()),
            Just("\u{E000}".to_owned()),
            // A forged mark: the shape of the CLI's, with a nonce that is not this process's.
            Just(format!("\u{E000}{}31m", "0".repeat(32))),
        ];
        proptest::collection::vec(pieces, 0..24).prop_map(|p| p.concat())
    }

    proptest! {
        /// JSON for the terminal holds no character a terminal acts on but its own line breaks,
        /// and reads back as the same value (`audit head` output stays a head `verify` takes).
        #[test]
        fn json_for_the_terminal_is_the_same_value_with_nothing_a_terminal_acts_on(
            data in hostile(), pretty in any::<bool>(),
        ) {
            let value = serde_json::json!({"hash": data, "list": [data, 1]});
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            let text = text.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let shown = json_for_terminal(&text);
            prop_assert!(!shown.chars().any(|c| c != '\n' && is_unsafe(c)), "{:?}", shown);
            let back: serde_json::Value = serde_json::from_str(&shown)
                .map_err(|e| TestCaseError::fail(format!("{e}: {shown:?}")))?;
            prop_assert_eq!(back, value);
        }

        /// Whatever a value holds, its rendered form has no character a terminal acts on.
        #[test]
        fn rendered_data_holds_nothing_a_terminal_acts_on(data in hostile()) {
            for sgr in [true, false] {
                let shown = render(&data, sgr);
                prop_assert!(!shown.chars().any(is_unsafe), "{:?} -> {:?}", data, shown);
            }
        }

        /// The CLI's own colours around any data become exactly their SGR codes, and the data
        /// in between is escaped: no sequence can be forged or left open.
        #[test]
        fn only_the_clis_own_colours_become_escape_codes(data in hostile(), code in prop_oneof![Just(1u8), Just(31), Just(32)]) {
            let out = coloured();
            let line = format!("{data}{}{data}", out.paint(code, &data));
            let shown = render(&line, true);
            let escaped = render(&data, true);
            prop_assert_eq!(shown, format!("{escaped}\u{1b}[{code}m{escaped}\u{1b}[0m{escaped}"));
        }

        /// A cell is at most `max` characters as shown, holds no unsafe character once
        /// rendered, and keeps its colour marks whole.
        #[test]
        fn a_cell_fits_its_width_and_keeps_marks_whole(data in hostile(), max in 1usize..40) {
            let (open, close) = coloured().highlight();
            let text = format!("{data}{open}{data}{close}{data}");
            let c = cell(&text, max);
            prop_assert!(width(&c) <= max, "{:?} -> {:?}", text, c);
            let shown = render(&c, true);
            let plain = shown.replace("\u{1b}[1m", "").replace("\u{1b}[0m", "");
            prop_assert!(!plain.chars().any(is_unsafe), "{:?}", shown);
            prop_assert!(!plain.contains('\u{E000}') || data.contains('\u{E000}'), "{:?}", shown);
        }
    }

    #[test]
    fn each_unsafe_character_is_shown_the_way_rust_escapes_it() {
        for (c, shown) in [
            ('\u{1b}', "\\u{1b}"),
            ('\n', "\\n"),
            ('\r', "\\r"),
            ('\t', "\\t"),
            ('\u{0}', "\\u{0}"),
            ('\u{7f}', "\\u{7f}"),
            ('\u{9b}', "\\u{9b}"),
            ('\u{202a}', "\\u{202a}"),
            ('\u{202e}', "\\u{202e}"),
            ('\u{2066}', "\\u{2066}"),
            ('\u{2069}', "\\u{2069}"),
            ('\u{200e}', "\\u{200e}"),
            ('\u{200f}', "\\u{200f}"),
            ('\u{61c}', "\\u{61c}"),
            ('\u{2028}', "\\u{2028}"),
            ('\u{2029}', "\\u{2029}"),
        ] {
            assert_eq!(render(&c.to_string(), true), shown);
        }
        for c in ['a', 'é', '✓', '…', '\u{E000}', '\u{200b}'] {
            assert_eq!(render(&c.to_string(), true), c.to_string());
        }
    }
}
