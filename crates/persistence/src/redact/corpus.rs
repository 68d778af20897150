//! The corpus of secret shapes, as test data for every crate: `tests/fixtures/secret-shapes.txt`
//! (one template per line) expanded with a seeded PRNG into concrete [`Sample`]s, each embedded
//! in several [`Context`]s. Templates keep real-looking keys out of the repository.
//!
//! ```
//! use aigentflow_persistence::redact::{corpus, redact_text};
//!
//! let samples = corpus::samples(7).unwrap();
//! let mut stored = Vec::new();
//! for sample in &samples {
//!     stored.extend_from_slice(redact_text(&sample.text).as_bytes());
//! }
//! assert!(corpus::leaks(&samples, &stored).is_empty());
//! // Unredacted, every needle of every sample is found.
//! let raw: String = samples.iter().map(|s| s.text.as_str()).collect();
//! let needles: usize = samples.iter().map(|s| s.needles().len()).sum();
//! assert_eq!(corpus::leaks(&samples, raw.as_bytes()).len(), needles);
//! ```

use std::ops::Range;

use regex::bytes::RegexBuilder;
use serde_json::{json, Map, Value};

/// The templates, one shape per line (see the file's header for the syntax).
pub const TEMPLATES: &str = include_str!("../../../../tests/fixtures/secret-shapes.txt");

/// The shortest piece of a secret that [`Sample::needles`] looks for.
pub const MIN_NEEDLE: usize = 8;

/// A template the corpus cannot expand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret-shapes.txt line {line}: {message}")]
pub struct TemplateError {
    /// The 1-based line of the template.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// One template expanded: the text of the shape and where its secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The name on the template's line, e.g. `github-pat`.
    pub name: String,
    /// The expansion, e.g. `ghp_…` or `password: … … … …`.
    pub text: String,
    /// Where the secret is in `text`: all of it for a key shape, the `[[ ]]` part otherwise.
    pub secret: Range<usize>,
    /// Whether the whole expansion is the secret (no `[[ ]]`): a key shape, which is also
    /// embedded after `_` and glued to a word.
    pub key_shape: bool,
    /// Whether the shape runs to the end of its text (`{end}`): nothing after it survives.
    pub to_end: bool,
}

/// How a sample embeds its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Context {
    /// In a sentence: `found … in the log`.
    Prose,
    /// On a line of its own between two others.
    Line,
    /// Right after `_`: `ENV_KEY_…` (key shapes only).
    AfterUnderscore,
    /// Glued to the end of a word: `id…` (key shapes only).
    InWord,
    /// JSON text; the shape inside a string value.
    JsonValue,
    /// JSON text; the shape as an object key.
    JsonKey,
    /// JSON text; the shape in a string nested in arrays and objects.
    JsonNested,
    /// JSON text; the shape between escaped quotes inside a string value.
    JsonEscapedQuotes,
}

impl Context {
    /// Every context.
    pub const ALL: [Context; 8] = [
        Context::Prose,
        Context::Line,
        Context::AfterUnderscore,
        Context::InWord,
        Context::JsonValue,
        Context::JsonKey,
        Context::JsonNested,
        Context::JsonEscapedQuotes,
    ];

    /// Whether [`Sample::text`] is JSON text in this context.
    pub fn is_json(self) -> bool {
        matches!(
            self,
            Context::JsonValue
                | Context::JsonKey
                | Context::JsonNested
                | Context::JsonEscapedQuotes
        )
    }
}

/// A secret in a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The shape's name, e.g. `github-pat`.
    pub name: String,
    /// How the shape is embedded.
    pub context: Context,
    /// The part that must never survive.
    pub secret: String,
    /// The text to redact (JSON text when [`Context::is_json`]).
    pub text: String,
    /// Parts of `text` around the secret that redaction must keep (as text, and as JSON for
    /// JSON contexts), e.g. `found ` and ` in the log`.
    pub kept: Vec<String>,
}

impl Sample {
    /// The text parsed as JSON, for JSON contexts.
    pub fn json(&self) -> Option<Value> {
        self.context.is_json().then(|| serde_json::from_str(&self.text).ok()).flatten()
    }

    /// What must not appear anywhere once the secret is redacted: every run of at least
    /// [`MIN_NEEDLE`] characters of `[A-Za-z0-9+/=_-]` in the secret (these read the same in
    /// JSON, CSV and SQL text), or the whole secret when it has none.
    pub fn needles(&self) -> Vec<&str> {
        let pieces: Vec<&str> = self
            .secret
            .split(|c: char| {
                !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-'))
            })
            .filter(|p| p.len() >= MIN_NEEDLE)
            .collect();
        if pieces.is_empty() && !self.secret.is_empty() {
            vec![self.secret.as_str()]
        } else {
            pieces
        }
    }

    /// The first needle found in `haystack` (e.g. the raw bytes of a database file), if any.
    pub fn leaked_in(&self, haystack: &[u8]) -> Option<&str> {
        self.needles().into_iter().find(|needle| {
            let needle = needle.as_bytes();
            haystack.windows(needle.len()).any(|w| w == needle)
        })
    }
}

/// The samples whose secrets are in `haystack` (e.g. the raw bytes of a database file), each
/// with the needle found: one scan for the whole corpus, however large the haystack. Empty
/// exactly when no needle of any sample is there.
pub fn leaks<'s>(samples: &'s [Sample], haystack: &[u8]) -> Vec<(&'s Sample, &'s str)> {
    let needles: Vec<(&Sample, &str)> =
        samples.iter().flat_map(|s| s.needles().into_iter().map(move |n| (s, n))).collect();
    let mut unique: Vec<&str> = needles.iter().map(|(_, n)| *n).collect();
    unique.sort_unstable();
    unique.dedup();
    let pattern = unique.iter().map(|n| regex::escape(n)).collect::<Vec<_>>().join("|");
    let found: Vec<&[u8]> = match RegexBuilder::new(&pattern).size_limit(1 << 30).build() {
        Ok(re) => re.find_iter(haystack).map(|m| m.as_bytes()).collect(),
        // Too large to compile: look for each needle on its own.
        Err(_) => unique
            .iter()
            .map(|n| n.as_bytes())
            .filter(|n| haystack.windows(n.len()).any(|w| w == *n))
            .collect(),
    };
    needles.into_iter().filter(|(_, n)| found.contains(&n.as_bytes())).collect()
}

/// Every template expanded once with the PRNG seeded by `seed`.
pub fn shapes(seed: u64) -> Result<Vec<Shape>, TemplateError> {
    let mut rng = Rng(seed);
    let mut shapes = Vec::new();
    for (index, line) in TEMPLATES.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim_end();
        if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let err = |message: String| TemplateError { line: line_no, message };
        let (name, template) = line
            .split_once([' ', '\t'])
            .map(|(n, t)| (n, t.trim_start()))
            .filter(|(_, t)| !t.is_empty())
            .ok_or_else(|| err("expected a name and a template".into()))?;
        shapes.push(expand(name, template, &mut rng).map_err(err)?);
    }
    Ok(shapes)
}

/// Every template expanded with the PRNG seeded by `seed`, each in every context that fits it.
pub fn samples(seed: u64) -> Result<Vec<Sample>, TemplateError> {
    let mut samples = Vec::new();
    for shape in shapes(seed)? {
        for context in Context::ALL {
            if let Some(sample) = embed(&shape, context) {
                samples.push(sample);
            }
        }
    }
    Ok(samples)
}

fn embed(shape: &Shape, context: Context) -> Option<Sample> {
    let s = shape.text.as_str();
    let strings = |v: &[&str]| -> Vec<String> { v.iter().map(|s| (*s).to_owned()).collect() };
    let json_text = |v: Value| v.to_string();
    let ok: &[&str] = if shape.to_end { &[] } else { &["kept"] };
    let (text, kept) = match context {
        Context::Prose if !shape.to_end && shape.key_shape => {
            (format!("found {s} in the log"), strings(&["found ", " in the log"]))
        }
        Context::Line if !shape.to_end => {
            (format!("first line\n{s}\nlast line"), strings(&["first line\n", "\nlast line"]))
        }
        Context::Line => (format!("first line\n{s}"), strings(&["first line\n"])),
        Context::AfterUnderscore if shape.key_shape => {
            (format!("ENV_KEY_{s}"), strings(&["ENV_KEY_"]))
        }
        Context::InWord if shape.key_shape => (format!("id{s}"), strings(&["id"])),
        Context::JsonValue => (json_text(json!({"note": s, "ok": "kept"})), strings(ok)),
        Context::JsonKey => {
            let mut object = Map::new();
            object.insert(s.to_owned(), json!(1));
            object.insert("ok".into(), json!("kept"));
            (json_text(Value::Object(object)), strings(ok))
        }
        Context::JsonNested => {
            (json_text(json!({"a": [{"b": {"c": [s]}}], "ok": "kept"})), strings(ok))
        }
        Context::JsonEscapedQuotes if !shape.to_end => (
            json_text(json!({"note": format!("said \"{s}\" twice"), "ok": "kept"})),
            strings(&["said ", " twice", "kept"]),
        ),
        _ => return None,
    };
    Some(Sample {
        name: shape.name.clone(),
        context,
        secret: shape.text[shape.secret.clone()].to_owned(),
        text,
        kept,
    })
}

fn expand(name: &str, template: &str, rng: &mut Rng) -> Result<Shape, String> {
    let mut text = String::new();
    let (mut open, mut close) = (None, None);
    let mut to_end = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if to_end {
            return Err("{end} must come last".into());
        }
        if let Some(after) = rest.strip_prefix("[[") {
            if open.is_some() {
                return Err("more than one [[".into());
            }
            open = Some(text.len());
            rest = after;
        } else if let Some(after) = rest.strip_prefix("]]") {
            if open.is_none() || close.is_some() {
                return Err("]] without [[".into());
            }
            close = Some(text.len());
            rest = after;
        } else if let Some(after) = rest.strip_prefix('\\') {
            let escaped = after.chars().next();
            text.push(match escaped {
                Some('n') => '\n',
                Some('t') => '\t',
                Some('\\') => '\\',
                other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
            });
            rest = &after[1..];
        } else if let Some((generator, after)) = generator(rest) {
            match generator {
                "end" => to_end = true,
                "words" => {
                    let mut words = Vec::new();
                    for _ in 0..4 {
                        let len = 8 + rng.below(3);
                        words.push(rng.draw(len, LOWER));
                    }
                    text.push_str(&words.join(" "));
                }
                "basic" => {
                    let user = rng.draw(8, LOWER);
                    let password = rng.draw(16, ALNUM);
                    text.push_str(&base64(format!("{user}:{password}").as_bytes()));
                }
                spec => {
                    let (count, class) = spec.split_once(':').unwrap_or_default();
                    let count: usize =
                        count.parse().map_err(|_| format!("bad generator {{{spec}}}"))?;
                    let class = class_chars(class)?;
                    if class.is_empty() {
                        return Err(format!("empty class in {{{spec}}}"));
                    }
                    text.push_str(&rng.draw(count, &class));
                }
            }
            rest = after;
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let secret = match (open, close) {
        (Some(start), Some(end)) if start < end => start..end,
        (None, None) => 0..text.len(),
        _ => return Err("[[ without ]], or an empty secret".into()),
    };
    if text.is_empty() {
        return Err("empty template".into());
    }
    Ok(Shape { name: name.to_owned(), text, secret, key_shape: open.is_none(), to_end })
}

/// `{words}`, `{basic}`, `{end}` or `{N:CLASS}` at the start of `rest`; any other `{` is text.
fn generator(rest: &str) -> Option<(&str, &str)> {
    let inner = rest.strip_prefix('{')?;
    let end = inner.find('}')?;
    let spec = &inner[..end];
    let known = matches!(spec, "words" | "basic" | "end")
        || spec.split_once(':').is_some_and(|(n, class)| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !class.is_empty()
        });
    known.then(|| (spec, &inner[end + 1..]))
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// The characters of a class such as `A-Za-z0-9_-` (ranges and single characters).
fn class_chars(class: &str) -> Result<Vec<u8>, String> {
    if !class.is_ascii() {
        return Err(format!("class {class} is not ASCII"));
    }
    let b = class.as_bytes();
    let mut chars = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if i + 2 < b.len() && b[i + 1] == b'-' {
            if b[i] > b[i + 2] {
                return Err(format!("bad range in class {class}"));
            }
            chars.extend(b[i]..=b[i + 2]);
            i += 3;
        } else {
            chars.push(b[i]);
            i += 1;
        }
    }
    Ok(chars)
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SplitMix64: a small, seeded, deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn draw(&mut self, count: usize, class: &[u8]) -> String {
        (0..count).map(|_| char::from(class[self.below(class.len())])).collect()
    }
}
