//! Output: JSON for scripts, aligned tables for people, colour only on a terminal without NO_COLOR.

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// Prints one line on stdout. A closed pipe (`aigentflow … | head`) ends the process quietly
/// with success, as other Unix tools do; any other write error ends it with exit code 1.
macro_rules! say {
    () => { $crate::out::write_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::out::write_line(format_args!($($arg)*)) };
}
pub(crate) use say;

pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        exit_on_write_error(&e);
    }
}

/// Ends the process after a failed write to stdout: quietly for a closed pipe.
pub fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("aigentflow: error: cannot write the output: {e}");
    std::process::exit(1);
}

/// How results are printed.
#[derive(Debug)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
    color: bool,
}

/// Whether stderr takes colour.
pub fn color_on_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

impl Out {
    pub fn new(json: bool, quiet: bool) -> Self {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stdout().is_terminal();
        Self { json, quiet, color }
    }

    /// Prints `value` as JSON, or runs `human` to print it for a person.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        value: &T,
        human: impl FnOnce(),
    ) -> anyhow::Result<()> {
        if self.json {
            say!("{}", serde_json::to_string_pretty(value)?);
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
        let bar = indicatif::ProgressBar::new_spinner().with_message(message.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(bar)
    }

    /// A side note for people on stderr (not with --quiet or --json).
    pub fn note(&self, text: &str) {
        if !self.quiet && !self.json {
            eprintln!("{text}");
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

    /// `text` in an ANSI colour (32 green, 31 red, 1 bold…) when colour is on.
    pub fn paint(&self, code: u8, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
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

    /// Highlight markers for search snippets.
    pub fn highlight(&self) -> (String, String) {
        if self.color {
            ("\x1b[1m".into(), "\x1b[0m".into())
        } else {
            ("[".into(), "]".into())
        }
    }
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        say!("(none)");
        return;
    }
    let width = |cell: &str| strip_ansi(cell).chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            s.push_str(cell);
            if i < last {
                s.push_str(&" ".repeat(w - width(cell) + 2));
            }
        }
        say!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Text cut to `max` characters on one line, for a table cell.
pub fn cell(text: &str, max: usize) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// An optional value as a cell (`-` for none).
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// An instant as people read it.
pub fn when(ts: chrono::DateTime<chrono::Utc>) -> String {
    ts.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
