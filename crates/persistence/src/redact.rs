//! The shared redaction policy (decision 9): every store passes text and JSON through it before
//! writing, so no secret reaches the disk whatever field it arrives in.
//!
//! Text goes through two passes.
//!
//! 1. **Key shapes**, found anywhere in a token, also glued to the word before them
//!    (`AWS_KEY_AKIA…`, `token_ghp_…`, `x_sk-ant-…`): AWS access key ids, GitHub, GitLab, Slack
//!    (tokens and webhook URLs), Stripe, Google (API keys, OAuth client secrets and access
//!    tokens), OpenAI, Anthropic, Hugging Face, npm, PyPI, SendGrid and age keys, JWTs, PEM
//!    private keys of every kind and PGP private key blocks (the whole block, to the end of the
//!    text when its END line is missing), the user and password of a URL
//!    (`scheme://user:password@host` keeps `scheme://` and `@host`), and the credential after
//!    `Basic` / `Bearer`. The reference is gitleaks' common rules. Two prefixes are also
//!    ordinary text (`sk-` in `task-…`, `sk_test_` in `task_test_…`): glued to a letter or digit
//!    they count only when what follows mixes upper case, lower case and digits, as generated
//!    keys do; after anything else (`_`, `-`, a space, a quote) they always count. A
//!    `Basic`/`Bearer` credential must look like one (see below).
//! 2. **Values under secret-like names**: `api_key`, `password`, `passwd`, `pwd`, `passphrase`,
//!    `secret`, `token`, `auth`, `authorization`, `credential(s)`, `private_key`, `secret_key`,
//!    `access_key`, `cookie`, `session`, `session_id`, `session_key`, with any prefix
//!    (`DB_PASSWORD`, `client_secret`, `x-api-key`, `--password`) but nothing after the name
//!    (`password_hash`, `max_tokens` and `author` are not secret names). What is replaced
//!    depends on how the value is written:
//!    * quoted (`"…"`, `'…'`, `` `…` ``, or `\"…\"` inside JSON text): everything up to the
//!      closing quote, honouring backslash escapes;
//!    * `name=value` (no space around the sign): one token, up to white space, or to a `,` `;`
//!      `&` that another `key=` follows (`password=a&user=b`);
//!    * `name: value`, `name = value` (space around the sign): everything to the end of the line
//!      (`password: correct horse battery staple`), but not past the closing quote when the
//!      whole pair sits in a quoted string (`-H 'Authorization: Basic …'`), nor past a space,
//!      `,`, `;` or `&` that another `key:` / `key=` follows (`password: a b user: c`), nor a
//!      closing bracket or quote the value did not open (`{password: x}`). Cookies are all
//!      secret, so a `cookie` value is not cut at the next `key=`;
//!    * `name value` or `name is value` (no sign): only when the one-token value looks like a
//!      credential — at least 6 characters with a letter, and a digit, a symbol (other than
//!      `-` `.` `_` `'` and brackets), an upper-case letter right after a lower-case one, or at
//!      least 24 characters. So `password hunter2` loses `hunter2`, while `password reset
//!      flow`, `token usage`, `secret sauce`, `token 128000` and `credentials task_test` are
//!      prose and stay. A quoted value without a sign counts when it looks like a credential
//!      or holds several words (`password is "correct horse"`).
//!
//!    A value written with a sign or in quotes is a secret whatever it looks like, except
//!    `null`, `true` and `false`.
//!
//! JSON: every string is redacted as text, and so is every object key (a key holding a key
//! shape becomes `[REDACTED]`). Keys without secrets keep their names; a redacted key that
//! would take a name already in its object gets the first free `#2`, `#3`… after it
//! (`[REDACTED]`, `[REDACTED]#2`), so no value is lost.
//! Every value under a secret-named key is replaced whatever its type, except `null` and
//! booleans ([`is_secret_key`]; token *counts* such as `totalTokens` are not secret).
//!
//! The policy is idempotent — redacting redacted text or JSON changes nothing — because the
//! stores hash what they write and may pass it through the policy again. Everything runs on the
//! `regex` crate (linear time), and text with nothing that could start a secret costs one scan.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

#[doc(hidden)]
pub mod corpus;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The names whose values are secrets, `_` standing for an optional separator (`api_key` also
/// matches `apikey`, `api-key`, `API Key`, `apiKey`).
const SECRET_NAMES: [&str; 18] = [
    "api_key",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "private_key",
    "secret_key",
    "access_key",
    "cookie",
    "session",
    "session_id",
    "session_key",
];

/// Names a JSON key may also start with to be secret (`passwordHash`, `secretValue`).
const SECRET_NAME_PREFIXES: [&str; 2] = ["password", "secret"];

/// Key shapes. Each alternative is a named group; [`judge_shape`] decides what to replace.
const SHAPES_PATTERN: &str = concat!(
    // PEM private keys of every kind and PGP private key blocks, with or without END.
    r"(?P<pem>-----BEGIN[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----(?s:.*?)",
    r"(?:-----END[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----|\z))",
    // Slack webhooks: the whole URL.
    r"|(?P<webhook>(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,})",
    // URL credentials: the user and password between `://` and `@`.
    r"|://(?P<userinfo>[^\s/?#@\[\]:]*:[^\s/?#@\[\]]+)@",
    // Prefixes found anywhere.
    r"|(?P<anywhere>",
    r"sk-ant-[a-z]{2,8}[0-9]{2}-[A-Za-z0-9_-]{20,}",
    r"|(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}",
    r"|gh[pousr]_[A-Za-z0-9]{30,}",
    r"|github_pat_[A-Za-z0-9_]{20,}",
    r"|gl(?:pat|ptt|dt|rt|cbt|ffct|ft|imt|agent|oas|soat)-[A-Za-z0-9_-]{20,}",
    r"|GR1348941[A-Za-z0-9_-]{20,}",
    r"|xox[abposre]-[A-Za-z0-9-]{10,}",
    r"|xapp-[0-9]-[A-Za-z0-9-]{10,}",
    r"|AIza[A-Za-z0-9_-]{35}",
    r"|GOCSPX-[A-Za-z0-9_-]{20,}",
    r"|ya29\.[A-Za-z0-9_-]{20,}",
    r"|hf_[A-Za-z0-9]{30,}",
    r"|api_org_[A-Za-z0-9]{30,}",
    r"|npm_[A-Za-z0-9]{30,}",
    r"|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{40,}",
    r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*",
    r"|AGE-SECRET-KEY-1[A-Z0-9]{58}",
    r")",
    // Prefixes that are also ordinary text: OpenAI (`sk-`, `sk-proj-`…) and Stripe.
    // Bounded, so that looking again inside a rejected one stays linear.
    r"|(?P<generic>sk-[A-Za-z0-9_-]{20,300}|[sr]k_(?:live|test|prod)_[A-Za-z0-9]{20,300})",
    // The credential after an HTTP authentication scheme.
    r"|(?i-u:basic|bearer)[ \t]+(?P<credential>[A-Za-z0-9._~+/=-]{8,})",
);

/// A secret-like name, its closing quote if it is quoted, and what separates it from its value.
fn names_pattern() -> String {
    let names: Vec<String> = SECRET_NAMES.iter().map(|n| n.replace('_', "[ _.-]?")).collect();
    format!(
        r#"(?i-u)(?P<name>[A-Za-z0-9_.-]*?(?:{}))(?P<close>\\?["'`])?(?P<sep>[ \t]*(?::=|=>|[:=])[ \t]*|[ \t]+(?:(?:is|was)[ \t]+)?)"#,
        names.join("|")
    )
}

static SHAPES: LazyLock<Regex> = LazyLock::new(|| compile(SHAPES_PATTERN));
static NAMES: LazyLock<Regex> = LazyLock::new(|| compile(&names_pattern()));
/// Either of the two: one scan that most text, holding no secret, stops at.
static GATE: LazyLock<Regex> =
    LazyLock::new(|| compile(&format!("(?:{SHAPES_PATTERN})|(?:{})", names_pattern())));

fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("redaction pattern is valid: {e}"))
}

/// Scrubs secrets out of free text. Text without secrets comes back borrowed and unchanged.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    if !GATE.is_match(text) {
        return Cow::Borrowed(text);
    }
    let shaped = redact_shapes(text);
    match redact_names(&shaped) {
        Cow::Borrowed(_) => shaped,
        Cow::Owned(clean) => Cow::Owned(clean),
    }
}

/// Scrubs secrets out of a JSON value, in place: strings, object keys, and every value under a
/// secret-named key.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = redact_text(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => redact_object(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A redacted copy of a JSON value.
pub fn redacted_json(value: &Value) -> Value {
    let mut copy = value.clone();
    redact_json(&mut copy);
    copy
}

/// Whether a JSON key names a secret: `api_key`, `apiKey`, `password`, `clientSecret`,
/// `accessToken`, `Authorization`, `private_key`, `pwd`, `sessionId`… but not a count such as
/// `totalTokens` or `max_tokens`. Case and separators do not matter; the name must end the key
/// (`password_hash` is not secret), except that a key starting with `password` or `secret` is.
pub fn is_secret_key(key: &str) -> bool {
    // The key's ASCII letters and digits, lower-cased: the first few and the last few are
    // enough, and keep this free of allocation (it runs for every key of every JSON object).
    const KEEP: usize = 16;
    let (mut head, mut tail) = ([0u8; KEEP], [0u8; KEEP]);
    let mut len = 0;
    for b in key.bytes().filter(u8::is_ascii_alphanumeric).map(|b| b.to_ascii_lowercase()) {
        if len < KEEP {
            head[len] = b;
        }
        tail.copy_within(1.., 0);
        tail[KEEP - 1] = b;
        len += 1;
    }
    let head = &head[..len.min(KEEP)];
    let tail = &tail[KEEP - len.min(KEEP)..];
    static NAMES: LazyLock<Vec<Vec<u8>>> =
        LazyLock::new(|| SECRET_NAMES.iter().map(|n| n.replace('_', "").into_bytes()).collect());
    NAMES.iter().any(|name| tail.ends_with(name))
        || SECRET_NAME_PREFIXES.iter().any(|p| head.starts_with(p.as_bytes()))
}

fn redact_object(map: &mut Map<String, Value>) {
    if map.keys().all(|k| matches!(redact_text(k), Cow::Borrowed(_))) {
        for (key, value) in map.iter_mut() {
            redact_entry(is_secret_key(key), value);
        }
        return;
    }
    let renamed: Vec<Option<String>> = map
        .keys()
        .map(|k| match redact_text(k) {
            Cow::Owned(clean) => Some(clean),
            Cow::Borrowed(_) => None,
        })
        .collect();
    // Keys without secrets keep their names; a redacted key takes the first free name of
    // `[REDACTED]`, `[REDACTED]#2`, `[REDACTED]#3`… so that no value is lost.
    let mut taken: HashSet<String> =
        map.keys().zip(&renamed).filter(|(_, r)| r.is_none()).map(|(k, _)| k.clone()).collect();
    let old = std::mem::take(map);
    for ((key, mut value), clean) in old.into_iter().zip(renamed) {
        let secret = is_secret_key(&key) || clean.as_deref().is_some_and(is_secret_key);
        redact_entry(secret, &mut value);
        let name = match clean {
            None => key,
            Some(clean) => {
                let mut name = clean.clone();
                let mut n = 2;
                while taken.contains(&name) {
                    name = format!("{clean}#{n}");
                    n += 1;
                }
                taken.insert(name.clone());
                name
            }
        };
        map.insert(name, value);
    }
}

fn redact_entry(secret_name: bool, value: &mut Value) {
    if secret_name && !matches!(value, Value::Null | Value::Bool(_)) {
        if value.as_str() != Some(REDACTED) {
            *value = Value::String(REDACTED.to_owned());
        }
    } else {
        redact_json(value);
    }
}

/// Builds the output of a pass: the text with some ranges replaced by [`REDACTED`].
struct Rewriter<'a> {
    text: &'a str,
    out: String,
    copied: usize,
    changed: bool,
}

impl<'a> Rewriter<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, out: String::new(), copied: 0, changed: false }
    }

    /// Replaces `range` (at or after everything replaced so far), unless it already reads
    /// [`REDACTED`].
    fn replace(&mut self, range: Range<usize>) {
        if &self.text[range.clone()] == REDACTED {
            return;
        }
        self.out.push_str(&self.text[self.copied..range.start]);
        self.out.push_str(REDACTED);
        self.copied = range.end;
        self.changed = true;
    }

    fn finish(mut self) -> Cow<'a, str> {
        if !self.changed {
            return Cow::Borrowed(self.text);
        }
        self.out.push_str(&self.text[self.copied..]);
        Cow::Owned(self.out)
    }
}

/// Pass 1: key shapes.
fn redact_shapes(text: &str) -> Cow<'_, str> {
    let mut rewriter = Rewriter::new(text);
    let mut at = 0;
    while at < text.len() {
        let Some(found) = SHAPES.find_at(text, at) else { break };
        match judge_shape(text, found.range()) {
            Some(range) => {
                rewriter.replace(range);
                at = found.end().max(next_char(text, found.start()));
            }
            // Not a secret here: look again from the next character, so a shape that starts
            // inside what was looked at is still found.
            None => at = next_char(text, found.start()),
        }
    }
    rewriter.finish()
}

/// What part of a shape match is the secret, if it is one. The alternatives of [`SHAPES`]
/// start differently, so the first characters tell which one matched; only an Anthropic key
/// and a generic `sk-` key share a prefix, and for those the capture groups decide.
fn judge_shape(text: &str, whole: Range<usize>) -> Option<Range<usize>> {
    let s = &text[whole.clone()];
    let starts_with = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    if s.starts_with("://") {
        return Some(whole.start + 3..whole.end - 1);
    }
    let scheme = if starts_with("basic") {
        5
    } else if starts_with("bearer") {
        6
    } else {
        0
    };
    if scheme > 0 {
        let credential = s[scheme..].trim_start_matches([' ', '\t']);
        let glued = glued_to_word(text, whole.start);
        return (!glued && looks_like_credential(credential))
            .then(|| whole.end - credential.len()..whole.end);
    }
    let generic = if s.starts_with("sk-ant-") {
        SHAPES.captures_at(text, whole.start).is_some_and(|c| c.name("generic").is_some())
    } else {
        ["sk-", "sk_", "rk_"].iter().any(|p| s.starts_with(p))
    };
    if generic {
        // What follows the prefix words (`sk-proj-`, `sk_live_`…).
        let tail = GENERIC_PREFIXES.iter().find_map(|p| s.strip_prefix(p)).unwrap_or(s);
        let random = tail.bytes().any(|b| b.is_ascii_uppercase())
            && tail.bytes().any(|b| b.is_ascii_lowercase())
            && tail.bytes().any(|b| b.is_ascii_digit());
        if !random && glued_to_word(text, whole.start) {
            return None;
        }
        // The pattern's tail is bounded; a longer key goes to its end all the same.
        let stripe = s.as_bytes().get(2) == Some(&b'_');
        let rest = text[whole.end..]
            .bytes()
            .take_while(|&b| b.is_ascii_alphanumeric() || (!stripe && matches!(b, b'_' | b'-')))
            .count();
        return Some(whole.start..whole.end + rest);
    }
    Some(whole)
}

/// The prefix words of generic keys, longest first.
const GENERIC_PREFIXES: [&str; 10] = [
    "sk-proj-",
    "sk-svcacct-",
    "sk-admin-",
    "sk_live_",
    "sk_test_",
    "sk_prod_",
    "rk_live_",
    "rk_test_",
    "rk_prod_",
    "sk-",
];

/// Whether the character before `at` continues a word: a letter or digit, or the `]` that
/// ends [`REDACTED`] (so that redacting twice finds nothing new).
fn glued_to_word(text: &str, at: usize) -> bool {
    text[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == ']')
}

fn next_char(text: &str, at: usize) -> usize {
    text[at..].chars().next().map_or(text.len(), |c| at + c.len_utf8())
}

/// Whether a value written without a separator (`password hunter2`) or after `Basic`/`Bearer`
/// looks like a credential rather than a word of prose: at least 6 characters including a
/// letter, and a digit, a symbol (other than `-` `.` `_` `'` and brackets, which identifiers
/// and prose use), an upper-case letter right after a lower-case one, or at least 24
/// characters.
fn looks_like_credential(value: &str) -> bool {
    let mut count = 0;
    let (mut letter, mut digit, mut symbol, mut camel) = (false, false, false, false);
    let mut previous_lower = false;
    for c in value.chars() {
        count += 1;
        letter |= c.is_alphabetic();
        digit |= c.is_ascii_digit();
        symbol |= !c.is_alphanumeric()
            && !c.is_whitespace()
            && !matches!(c, '-' | '.' | '_' | '\'' | '(' | ')' | '[' | ']' | '{' | '}');
        camel |= previous_lower && c.is_uppercase();
        previous_lower = c.is_lowercase();
    }
    count >= 6 && letter && (digit || symbol || camel || count >= 24)
}

/// How a name is separated from its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    /// `name value`, `name is value`.
    Bare,
    /// `name=value`, `name:value`.
    Compact,
    /// `name = value`, `name: value`.
    Spaced,
}

/// Pass 2: values under secret-like names.
fn redact_names(text: &str) -> Cow<'_, str> {
    let mut rewriter = Rewriter::new(text);
    let mut at = 0;
    while at < text.len() {
        let Some(found) = NAMES.find_at(text, at) else { break };
        let pair = NamePair::parse(found.as_str());
        let name = found.start()..found.start() + pair.name_len;
        // A pair that itself sits in a quoted string ends with that string.
        let enclosing = match (pair.quoted, &text.as_bytes()[..name.start]) {
            (false, [.., b'\\', q]) if is_quote(char::from(*q)) => Some((*q, true)),
            (false, [.., q]) if is_quote(char::from(*q)) => Some((*q, false)),
            _ => None,
        };
        let cookie = text[name.clone()].to_ascii_lowercase().ends_with("cookie");
        match value_range(text, found.end(), pair.sep, enclosing, cookie) {
            Some(range) => {
                at = range.end.max(name.end);
                rewriter.replace(range);
            }
            None => at = name.end,
        }
    }
    rewriter.finish()
}

/// A match of [`NAMES`] taken apart: it reads `name`, maybe a closing quote, then a separator.
/// The parts are told from the end, as the name holds no quote, `:`, `=` or blank after its
/// last word, and no secret name ends in `is` or `was` (cheaper than capture groups, which cost
/// more than the rest of the pass on prose that mentions tokens and passwords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NamePair {
    name_len: usize,
    quoted: bool,
    sep: Sep,
}

impl NamePair {
    fn parse(pair: &str) -> Self {
        let b = pair.as_bytes();
        let blank = |c: &u8| *c == b' ' || *c == b'\t';
        let trailing_blanks = |end: usize| b[..end].iter().rev().take_while(|c| blank(c)).count();
        let after = trailing_blanks(b.len());
        let mut end = b.len() - after;
        let sep = match b[..end] {
            [.., b':', b'='] | [.., b'=', b'>'] => Some(2),
            [.., b':' | b'='] => Some(1),
            _ => None,
        };
        let sep = match sep {
            Some(op) => {
                end -= op;
                let before = trailing_blanks(end);
                end -= before;
                if before + after > 0 {
                    Sep::Spaced
                } else {
                    Sep::Compact
                }
            }
            None => {
                for word in [&b"is"[..], b"was"] {
                    let head = &b[..end];
                    if head.len() > word.len()
                        && head[head.len() - word.len()..].eq_ignore_ascii_case(word)
                        && blank(&head[head.len() - word.len() - 1])
                    {
                        end -= word.len();
                        end -= trailing_blanks(end);
                        break;
                    }
                }
                Sep::Bare
            }
        };
        let quoted = end > 0 && is_quote(char::from(b[end - 1]));
        if quoted {
            end -= 1;
            if end > 0 && b[end - 1] == b'\\' {
                end -= 1;
            }
        }
        Self { name_len: end, quoted, sep }
    }
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '\'' | '`')
}

/// The value that starts at `start`, as the range to replace, or `None` when there is nothing
/// to redact there.
fn value_range(
    text: &str,
    start: usize,
    kind: Sep,
    enclosing: Option<(u8, bool)>,
    cookie: bool,
) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let rest = &bytes[start..];
    let (quote, escaped) = match rest {
        [b'\\', q, ..] if is_quote(char::from(*q)) => (*q, true),
        [q, ..] if is_quote(char::from(*q)) => (*q, false),
        _ => (0, false),
    };
    if quote != 0 {
        let open = start + if escaped { 2 } else { 1 };
        let close = closing_quote(bytes, open, quote, escaped);
        let range = open..close;
        let inner = &text[range.clone()];
        // Without a sign, a quoted credential or pass phrase (several words) counts.
        let phrase = inner.trim().contains([' ', '\t']);
        if inner.is_empty() || (kind == Sep::Bare && !looks_like_credential(inner) && !phrase) {
            return None;
        }
        return Some(range);
    }
    // One scan: to the end of the line, the quote that closes the string the pair sits in, or
    // the first delimiter the syntax gives.
    let mut end = bytes.len();
    let mut backslashes = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if b == b'\n' || b == b'\r' {
            end = i;
            break;
        }
        if let Some((quote, escaped)) = enclosing {
            if b == quote && closes(backslashes, escaped) {
                end = if escaped { i - 1 } else { i };
                break;
            }
        }
        let space = b == b' ' || b == b'\t';
        let delimiter = space || matches!(b, b',' | b';' | b'&');
        if (space && kind != Sep::Spaced) || (delimiter && !cookie && key_follows(bytes, i + 1)) {
            end = i;
            break;
        }
        backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
    }
    let mut value = trim_unopened(&text[start..end]);
    if kind == Sep::Bare {
        value = value.trim_end_matches(['.', ',', ';', ':', '!', '?']);
        value = trim_unopened(value);
        if !looks_like_credential(value) {
            return None;
        }
    }
    if value.is_empty() || ["null", "true", "false"].iter().any(|w| value.eq_ignore_ascii_case(w)) {
        return None;
    }
    Some(start..start + value.len())
}

/// The position of the quote that closes a string opened just before `from` ([`closes`]), or
/// the end of the line when the string is not closed.
fn closing_quote(bytes: &[u8], from: usize, quote: u8, escaped: bool) -> usize {
    let mut backslashes = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        if b == quote && closes(backslashes, escaped) {
            return if escaped { i - 1 } else { i };
        }
        if b == b'\n' || b == b'\r' {
            return i;
        }
        backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
    }
    bytes.len()
}

/// Whether a quote after `backslashes` backslashes closes its string: an unescaped one, or for a
/// `\"…\"` string inside JSON text a `\"` whose backslash run is 1 modulo 4 (3 is an escaped
/// quote inside it).
fn closes(backslashes: usize, escaped: bool) -> bool {
    if escaped {
        backslashes % 4 == 1
    } else {
        backslashes.is_multiple_of(2)
    }
}

/// Whether another `key=` / `key:` pair starts at `at`, after blanks. The key may be quoted
/// (`"key":`, `\"key\":` in JSON text, the same quote on both sides); a `:` that starts `://`
/// is a URL.
fn key_follows(bytes: &[u8], mut at: usize) -> bool {
    let blanks = |at: &mut usize| {
        while bytes.get(*at).is_some_and(|&b| b == b' ' || b == b'\t') {
            *at += 1;
        }
    };
    let quote = |at: usize| -> &[u8] {
        match &bytes[at.min(bytes.len())..] {
            [b'\\', q, ..] if is_quote(char::from(*q)) => &bytes[at..at + 2],
            [q, ..] if is_quote(char::from(*q)) => &bytes[at..at + 1],
            _ => &[],
        }
    };
    blanks(&mut at);
    let open = quote(at);
    at += open.len();
    if !bytes.get(at).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_') {
        return false;
    }
    while bytes
        .get(at)
        .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        at += 1;
    }
    if !open.is_empty() {
        if !bytes[at..].starts_with(open) {
            return false;
        }
        at += open.len();
    }
    blanks(&mut at);
    match bytes.get(at) {
        Some(b'=') => true,
        Some(b':') => !bytes[at + 1..].starts_with(b"//"),
        _ => false,
    }
}

/// `value` without trailing blanks and closing brackets or quotes that it did not open.
fn trim_unopened(value: &str) -> &str {
    let bytes = value.as_bytes();
    let count = |b: u8| bytes.iter().filter(|&&x| x == b).count();
    let opened = [count(b'('), count(b'['), count(b'{')];
    let mut closed = [count(b')'), count(b']'), count(b'}')];
    let mut quotes = [count(b'"'), count(b'\''), count(b'`')];
    let mut end = bytes.len();
    while end > 0 {
        let b = bytes[end - 1];
        let strip = match b {
            b' ' | b'\t' => true,
            b')' | b']' | b'}' => {
                let k = usize::from(b != b')') + usize::from(b == b'}');
                let unopened = closed[k] > opened[k];
                if unopened {
                    closed[k] -= 1;
                }
                unopened
            }
            b'"' | b'\'' | b'`' => {
                let k = usize::from(b != b'"') + usize::from(b == b'`');
                let odd = quotes[k] % 2 == 1;
                if odd {
                    quotes[k] -= 1;
                }
                odd
            }
            _ => false,
        };
        if !strip {
            break;
        }
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Builds key shapes at run time, so no real-looking key sits in the source.
    fn key(prefix: &str, tail: &str, len: usize) -> String {
        format!("{prefix}{}", tail.repeat(len).chars().take(len).collect::<String>())
    }

    fn check(input: &str, expected: &str) {
        let once = redact_text(input);
        assert_eq!(once, expected, "input: {input:?}");
        assert_eq!(redact_text(&once), once, "not idempotent on {input:?}");
    }

    #[test]
    fn every_corpus_sample_is_redacted_as_text_and_as_json() {
        for seed in 0..16 {
            let samples = corpus::samples(seed).unwrap();
            for sample in &samples {
                let clean = redact_text(&sample.text);
                assert_eq!(sample.leaked_in(clean.as_bytes()), None, "{sample:#?}\n{clean}");
                assert!(clean.contains(REDACTED), "{sample:#?}");
                for kept in &sample.kept {
                    assert!(clean.contains(kept.as_str()), "lost {kept:?}: {sample:#?}\n{clean}");
                }
                assert_eq!(redact_text(&clean), clean, "not idempotent: {sample:#?}");
                if let Some(mut value) = sample.json() {
                    redact_json(&mut value);
                    let stored = value.to_string();
                    assert_eq!(sample.leaked_in(stored.as_bytes()), None, "{sample:#?}\n{stored}");
                    for kept in &sample.kept {
                        assert!(stored.contains(kept.as_str()), "lost {kept:?}: {stored}");
                    }
                    assert_eq!(redacted_json(&value), value, "not idempotent: {sample:#?}");
                }
            }
        }
    }

    #[test]
    fn the_corpus_covers_every_family_in_every_context() {
        let shapes = corpus::shapes(1).unwrap();
        let names: HashSet<&str> = shapes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), shapes.len(), "shape names are unique");
        for family in [
            "aws-access-key-id",
            "aws-secret-access-key",
            "github-pat",
            "github-fine-grained-pat",
            "gitlab-pat",
            "gitlab-runner-registration",
            "slack-bot-token",
            "slack-webhook",
            "stripe-secret-live",
            "google-api-key",
            "google-oauth-client-secret",
            "google-oauth-access-token",
            "openai-legacy",
            "openai-project",
            "anthropic-api-key",
            "huggingface-token",
            "npm-token",
            "pypi-upload-token",
            "sendgrid-api-key",
            "jwt",
            "pem-rsa",
            "pem-ec",
            "pem-dsa",
            "pem-openssh",
            "pem-encrypted",
            "pem-pkcs8",
            "pgp-private-key-block",
            "pem-rsa-no-end",
            "pgp-private-key-block-no-end",
            "url-credentials-https",
            "http-basic-header",
            "http-bearer-header",
            "password-words",
            "password-bare",
            "pwd-assignment",
            "password-json-escaped",
        ] {
            assert!(names.contains(family), "{family} is missing from the corpus");
        }
        let samples = corpus::samples(1).unwrap();
        for context in corpus::Context::ALL {
            assert!(samples.iter().any(|s| s.context == context), "{context:?}");
        }
        // Seeds give different secrets; one seed always gives the same ones.
        assert_ne!(corpus::shapes(2).unwrap(), shapes);
        assert_eq!(corpus::shapes(1).unwrap(), shapes);
    }

    #[test]
    fn the_repros_of_partial_redaction_are_fully_redacted() {
        let aws = key("AKIA", "Q7W2E3R4T5Y6U7I2", 16);
        let ghp = key("ghp_", "aB3dE5gH7jK9mN1pQ", 36);
        let ant = key("sk-ant-api03-", "xY7_zW-3vU", 40);
        check("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: [REDACTED]");
        check("password: correct horse battery staple", "password: [REDACTED]");
        check("password hunter2", "password [REDACTED]");
        check("pwd=s3cr3t-value", "pwd=[REDACTED]");
        check(
            "clone https://user:pw@host/repo.git now",
            "clone https://[REDACTED]@host/repo.git now",
        );
        check(&format!("AWS_KEY_{aws}"), "AWS_KEY_[REDACTED]");
        check(&format!("token_{ghp}"), "token_[REDACTED]");
        check(&format!("x_{ant}"), "x_[REDACTED]");
        check(&format!("id{aws}"), "id[REDACTED]");
        check(
            r#"{"password": "a\"b c", "user": "bob"}"#,
            r#"{"password": "[REDACTED]", "user": "bob"}"#,
        );
        check(
            "key:\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----\nafter",
            "key:\n[REDACTED]\nafter",
        );
        check(&format!(r#"{{"{aws}":1}}"#), r#"{"[REDACTED]":1}"#);
    }

    #[test]
    fn values_end_where_their_syntax_ends() {
        // Quoted values, to the closing quote, escapes honoured.
        check(
            r#"{"client_secret": "s3cr3t", "a": 1}"#,
            r#"{"client_secret": "[REDACTED]", "a": 1}"#,
        );
        check(r#"password='two words' next"#, "password='[REDACTED]' next");
        check(r#"{\"password\": \"a\\\"b c\"} tail"#, r#"{\"password\": \"[REDACTED]\"} tail"#);
        check(r#"DB_PASSWORD="a b" ok"#, r#"DB_PASSWORD="[REDACTED]" ok"#);
        // `name=value`: one token, or up to a `&`/`,`/`;` that another key follows.
        check("password=hunter2 user=bob", "password=[REDACTED] user=bob");
        check("set password=hunter2 and restart", "set password=[REDACTED] and restart");
        check(
            "login?user=bob&password=x1y2&next=home",
            "login?user=bob&password=[REDACTED]&next=home",
        );
        check("api_key=abc,region=eu", "api_key=[REDACTED],region=eu");
        check("pwd=a&b", "pwd=[REDACTED]");
        // `name: value`: to the end of the line, a following key, a closing quote or bracket.
        check("login with api_key: abc123xyz", "login with api_key: [REDACTED]");
        check("password: a b user: c", "password: [REDACTED] user: c");
        check("password: correct horse\nnext line", "password: [REDACTED]\nnext line");
        check("{password: hunter2, user: bob}", "{password: [REDACTED], user: bob}");
        check("(secret = two words)", "(secret = [REDACTED])");
        check(
            "curl -H 'Authorization: Basic dXNlcjpwYXNz' https://api.example.com",
            "curl -H 'Authorization: [REDACTED]' https://api.example.com",
        );
        check("Authorization: Bearer abcdefghijkl", "Authorization: [REDACTED]");
        check("Cookie: sid=1; csrf=2", "Cookie: [REDACTED]");
        check("token: abc https://x.example.com/y", "token: [REDACTED]");
        // No separator: only what looks like a credential.
        check("the password is hunter2.", "the password is [REDACTED].");
        check("--password Tr0ub4dor&3 --user bob", "--password [REDACTED] --user bob");
        check("auth token abc123def next", "auth token [REDACTED] next");
        check(r#"my password is "correct horse" ok"#, r#"my password is "[REDACTED]" ok"#);
        check(r#"the password "reset" page"#, r#"the password "reset" page"#);
        // Scheme words outside a secret name.
        check("sent Bearer abc.def-123_x to the proxy", "sent Bearer [REDACTED] to the proxy");
        check("sent Basic dXNlcjpwYXNzd29yZA== to", "sent Basic [REDACTED] to");
        // Already redacted stays as it is.
        check("token=[REDACTED]", "token=[REDACTED]");
        check("password: [REDACTED] user: c", "password: [REDACTED] user: c");
        check("{password: null}", "{password: null}");
    }

    #[test]
    fn prose_with_secret_words_is_unchanged() {
        for prose in [
            "the token usage is high",
            "the password reset flow needs review",
            "that is the secret sauce",
            "a token 128000 context window",
            "basic understanding of bearer instruments",
            "author: Bob",
            "max_tokens=4096 totalTokens: 300",
            "session ended at 10:42",
            "the auth middleware and the session store",
            "password_hash=abc",
            "the password is reset daily",
            "enter your password (twice), then the api key.",
            "task-orchestrator-service-v2-deployment-manager",
            "task_test_persistence_roundtrip_with_checkpoints",
            "task-550e8400-e29b-41d4-a716-446655440000",
            "see https://example.com/docs and git@github.com:org/repo.git",
            "risk-assessment-framework-for-everyone",
            "nothing to see",
        ] {
            check(prose, prose);
        }
    }

    #[test]
    fn generic_prefixes_glued_to_a_word_need_a_random_tail() {
        let random = key("sk-", "Ab3Cd5Ef7Gh9Jk1Lm", 40);
        check(&format!("id{random}"), "id[REDACTED]");
        let lower = key("sk-", "abcdefghij", 30);
        check(&format!("ta{lower}"), &format!("ta{lower}"));
        check(&format!("x_{lower}"), "x_[REDACTED]");
        check(&format!("ref {lower}"), "ref [REDACTED]");
        let stripe = key("sk_live_", "51Ab3Cd5Ef7Gh9", 40);
        check(&format!("STRIPE{stripe}"), "STRIPE[REDACTED]");
        // A key longer than any known one goes whole.
        check(&format!("{} next", key("sk-proj-", "Ab3Cd5Ef7Gh9", 900)), "[REDACTED] next");
        check(&format!("x{} next", key("rk_test_", "Ab3Cd5Ef7Gh9", 900)), "x[REDACTED] next");
    }

    #[test]
    fn private_key_blocks_go_whole_with_or_without_end() {
        for kind in ["RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED ", "", "PGP "] {
            let block = if kind == "PGP " { " BLOCK" } else { "" };
            let begin = format!("-----BEGIN {kind}PRIVATE KEY{block}-----");
            let end = format!("-----END {kind}PRIVATE KEY{block}-----");
            let body = "MIIEpAIBAAKCAQEA\nq1w2e3r4t5y6u7i8";
            check(&format!("a\n{begin}\n{body}\n{end}\nb"), "a\n[REDACTED]\nb");
            check(&format!("a\n{begin}\n{body}\nand the rest"), "a\n[REDACTED]");
        }
    }

    #[test]
    fn secret_named_keys_are_redacted_in_json_but_token_counts_stay() {
        let mut value = json!({
            "api_key": "plain-value", "apiKey": 42, "nested": {"Password": "x", "list": [{"token": "t"}]},
            "totalTokens": 300, "inputTokens": 10, "maxTokens": 5, "max_tokens": 6,
            "note": format!("key {}", key("ghp_", "aB3dE5gH7j", 36)),
            "enabled": true, "secret": null, "setting": "api_key", "pwd": "p",
            "session": {"id": 3}, "auth": true, "author": "bob", "clientSecret": ["a"],
            "credentials": {"user": "u"}, "passwordHash": "h", "sessionId": "s",
        });
        redact_json(&mut value);
        for k in [
            "api_key",
            "apiKey",
            "pwd",
            "session",
            "clientSecret",
            "credentials",
            "passwordHash",
            "sessionId",
        ] {
            assert_eq!(value[k], REDACTED, "{k}");
        }
        assert_eq!(value["nested"]["Password"], REDACTED);
        assert_eq!(value["nested"]["list"][0]["token"], REDACTED);
        assert_eq!(value["totalTokens"], 300);
        assert_eq!(value["inputTokens"], 10);
        assert_eq!(value["maxTokens"], 5);
        assert_eq!(value["max_tokens"], 6);
        assert_eq!(value["note"], format!("key {REDACTED}"));
        assert_eq!(value["enabled"], true);
        assert_eq!(value["auth"], true);
        assert_eq!(value["secret"], Value::Null);
        assert_eq!(value["setting"], "api_key");
        assert_eq!(value["author"], "bob");
    }

    #[test]
    fn redacted_json_keys_never_collide() {
        let (a, b) = (key("AKIA", "Q7W2E3R4", 16), key("ASIA", "Z9X8C7V6", 16));
        let mut value: Value = serde_json::from_str(&format!(
            r#"{{"{a}": 1, "[REDACTED]": 2, "{b}": 3, "name": {{"x_{a}": "v"}}, "[REDACTED]#2": 4}}"#
        ))
        .unwrap();
        redact_json(&mut value);
        assert_eq!(
            value.to_string(),
            r##"{"[REDACTED]#3":1,"[REDACTED]":2,"[REDACTED]#4":3,"name":{"x_[REDACTED]":"v"},"[REDACTED]#2":4}"##
        );
        assert_eq!(redacted_json(&value), value);
        assert!(is_secret_key("x-api-key") && is_secret_key("AWS_SECRET_ACCESS_KEY"));
        assert!(!is_secret_key("token_count") && !is_secret_key("authorId"));
    }

    #[test]
    fn secret_key_names_are_matched_whole_whatever_the_key_length() {
        for name in SECRET_NAMES {
            for key in [
                name.to_owned(),
                name.to_uppercase(),
                format!("a_very_long_prefix_before_the_{name}"),
                name.split('_').map(|p| p[..1].to_uppercase() + &p[1..]).collect::<String>(),
            ] {
                assert!(is_secret_key(&key), "{key}");
                assert!(!is_secret_key(&format!("my_{key}_count")), "my_{key}_count");
            }
        }
        assert!(is_secret_key("passwordResetTokenExpiryInSecondsForUsers"));
        assert!(!is_secret_key("") && !is_secret_key("_") && !is_secret_key("totalTokens"));
    }

    /// What the capture groups of [`NAMES`] say about a match, to check [`NamePair::parse`].
    fn pair_by_captures(text: &str, at: usize) -> Option<(Range<usize>, NamePair)> {
        let caps = NAMES.captures_at(text, at)?;
        let (whole, name, sep) = (caps.get(0)?, caps.name("name")?, caps.name("sep")?.as_str());
        let sep = if !sep.contains([':', '=']) {
            Sep::Bare
        } else if sep.contains([' ', '\t']) {
            Sep::Spaced
        } else {
            Sep::Compact
        };
        let quoted = caps.name("close").is_some();
        Some((whole.range(), NamePair { name_len: name.len(), quoted, sep }))
    }

    /// Pieces that make up text likely to confuse the policy: names, separators, quotes,
    /// escapes, brackets, shapes, scheme words and redacted values.
    fn fragment() -> impl Strategy<Value = String> {
        let samples = corpus::samples(3).unwrap();
        let pieces: Vec<String> = samples.iter().map(|s| s.text.clone()).collect();
        let fixed = [
            "password",
            "token",
            "Authorization",
            "pwd",
            "api_key",
            "cookie",
            "session",
            "secret",
            ": ",
            "=",
            " ",
            " = ",
            " is ",
            ":",
            "\"",
            "'",
            "`",
            "\\\"",
            "\\",
            ",",
            ";",
            "&",
            "\n",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            "[REDACTED]",
            "Bearer ",
            "Basic ",
            "://",
            "@",
            "sk-",
            "AKIA",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----",
            "-----END RSA PRIVATE KEY-----",
            "=>",
            ":=",
            " was ",
            "\t",
            " IS ",
            "api key",
            "x-api-key",
            "hunter2",
            "abc123XYZ",
            "user",
            "x_",
            "é",
            "日本",
        ];
        prop_oneof![
            prop::sample::select(pieces),
            prop::sample::select(fixed.map(String::from).to_vec()),
            "[ -~]{0,12}",
            "\\PC{0,4}",
        ]
    }

    fn confusing_text() -> impl Strategy<Value = String> {
        prop::collection::vec(fragment(), 0..12).prop_map(|v| v.concat())
    }

    fn confusing_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            confusing_text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((confusing_text(), inner), 0..4)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// Prose built from words that name secrets but carry no value.
    fn prose() -> impl Strategy<Value = String> {
        let words = [
            "the",
            "password",
            "reset",
            "flow",
            "token",
            "usage",
            "secret",
            "sauce",
            "session",
            "ended",
            "auth",
            "middleware",
            "basic",
            "Bearer",
            "instruments",
            "api",
            "key",
            "rotation",
            "cookie",
            "banner",
            "is",
            "was",
            "credentials",
            "expired",
            "private",
            "access",
            "task-orchestrator",
            "128000",
            "2024-01-01",
            "review",
            "agent",
            "wrote",
            "tests",
            "and",
            "of",
            "Password",
            "Token",
            "TOKEN",
            "risk-assessment",
            "task_test",
        ];
        let punct = ["", "", "", ".", ",", "!", "?", " (see notes)", ";"];
        prop::collection::vec(
            (prop::sample::select(words.to_vec()), prop::sample::select(punct.to_vec())),
            0..16,
        )
        .prop_map(|v| v.into_iter().map(|(w, p)| format!("{w}{p}")).collect::<Vec<_>>().join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn redacting_text_twice_changes_nothing(text in confusing_text()) {
            let once = redact_text(&text);
            prop_assert_eq!(redact_text(&once), once.clone(), "input {:?}", text);
        }

        #[test]
        fn redacting_any_text_never_panics_and_is_idempotent(text in any::<String>()) {
            let once = redact_text(&text);
            prop_assert_eq!(redact_text(&once), once.clone());
        }

        #[test]
        fn redacting_json_twice_changes_nothing(value in confusing_json()) {
            let once = redacted_json(&value);
            prop_assert_eq!(redacted_json(&once), once);
        }

        #[test]
        fn a_secret_never_survives_whatever_surrounds_it(
            before in "[ -~\\n]{0,40}", after in "[ -~\\n]{0,40}", which in any::<prop::sample::Index>(),
            seed in 0u64..1000,
        ) {
            let shapes = corpus::shapes(seed).unwrap();
            let shape = which.get(&shapes);
            // A value written to the end of its line ends with the line.
            let text = format!("{before} {} \n{after}", shape.text);
            let secret = &shape.text[shape.secret.clone()];
            let sample = corpus::Sample {
                name: shape.name.clone(), context: corpus::Context::Line, secret: secret.into(),
                text: text.clone(), kept: vec![],
            };
            let clean = redact_text(&text);
            prop_assert_eq!(sample.leaked_in(clean.as_bytes()), None, "{}", clean);
            let json = redacted_json(&json!({"free": text, "list": [text], text.clone(): 1}));
            prop_assert_eq!(sample.leaked_in(json.to_string().as_bytes()), None);
        }

        #[test]
        fn name_pairs_are_taken_apart_as_the_capture_groups_do(text in confusing_text()) {
            let mut at = 0;
            while let Some((whole, by_captures)) = pair_by_captures(&text, at) {
                prop_assert_eq!(NamePair::parse(&text[whole.clone()]), by_captures, "{:?}", &text[whole.clone()]);
                at = whole.start + by_captures.name_len;
            }
        }

        #[test]
        fn text_without_secrets_is_unchanged(text in "[a-z .,]{0,80}") {
            prop_assert_eq!(redact_text(&text), text.as_str());
        }

        #[test]
        fn prose_naming_secrets_is_unchanged(text in prose()) {
            prop_assert_eq!(redact_text(&text), text.as_str());
            let value = json!({"note": text, "list": [text]});
            prop_assert_eq!(redacted_json(&value), value);
        }
    }
}
