//! The shared redactor (decision 9): every store passes text and JSON through it before writing.
//!
//! It replaces known key shapes (Anthropic, OpenAI, AWS access key ids, GitHub, Slack, JWTs,
//! PEM private keys, bearer tokens), values written as `password=…` / `"api_key": "…"` in text,
//! and in JSON every value under a secret-named key (`api_key`, `password`, `secret`, `token`,
//! `authorization`, …; token *counts* such as `totalTokens` are not secrets).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

static SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
        r"|\bsk-ant-[A-Za-z0-9_\-]{8,}",
        r"|\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
        r"|\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}",
        r"|\bgithub_pat_[A-Za-z0-9_]{20,}",
        r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}",
        r"|\bxapp-[0-9]-[A-Za-z0-9\-]{10,}",
        r"|\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}",
        r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/=\-]{8,}",
    ))
    .unwrap_or_else(|e| unreachable!("redaction pattern is valid: {e}"))
});

static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?i)(?P<key>["']?\b[a-z0-9_\-]*(?:api[_\-]?key|password|passwd|secret|token|authorization|private[_\-]?key|access[_\-]?key)["']?)"#,
        r#"(?P<sep>\s*[:=]\s*)"#,
        r#"(?P<value>\[REDACTED\]|"[^"\n]*"|'[^'\n]*'|[^\s,;&"'}\]]+)"#,
    ))
    .unwrap_or_else(|e| unreachable!("redaction pattern is valid: {e}"))
});

/// Scrubs secrets out of free text.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let shapes = SHAPES.replace_all(text, REDACTED);
    if !KEY_VALUE.is_match(&shapes) {
        return shapes;
    }
    let replaced = KEY_VALUE.replace_all(&shapes, |caps: &regex::Captures<'_>| {
        let value = &caps["value"];
        let quote = if value.starts_with('"') {
            "\""
        } else if value.starts_with('\'') {
            "'"
        } else {
            ""
        };
        format!("{}{}{quote}{REDACTED}{quote}", &caps["key"], &caps["sep"])
    });
    Cow::Owned(replaced.into_owned())
}

/// Scrubs secrets out of a JSON value, in place.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = redact_text(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) && !matches!(v, Value::Null | Value::Bool(_)) {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
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
/// `accessToken`, `Authorization`, `private_key`… but not a count such as `totalTokens`.
pub fn is_secret_key(key: &str) -> bool {
    let normalized: String =
        key.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    const SUFFIXES: [&str; 12] = [
        "apikey",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "authorization",
        "privatekey",
        "accesskey",
        "secretkey",
        "credentials",
        "cookie",
    ];
    SUFFIXES.iter().any(|s| normalized.ends_with(s))
        || normalized.starts_with("secret")
        || normalized.starts_with("password")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Secrets of every known shape, as test data (assembled so no real-looking key sits in the source).
    pub(crate) fn secrets() -> Vec<String> {
        let tail = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6";
        vec![
            format!("sk-ant-api03-{tail}"),
            format!("sk-proj-{tail}"),
            format!("sk-{tail}"),
            format!("AKIA{}", "IOSFODNN7EXAMPLE"),
            format!("ghp_{tail}{}", "ABCD"),
            format!("github_pat_11{tail}"),
            format!("xoxb-1234567890-{tail}"),
            format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{tail}"),
            format!("-----BEGIN RSA PRIVATE KEY-----\nMIIE{tail}\n-----END RSA PRIVATE KEY-----"),
        ]
    }

    #[test]
    fn known_shapes_are_replaced_in_text() {
        for secret in secrets() {
            let text = format!("config: {secret}, next");
            let clean = redact_text(&text);
            assert!(!clean.contains(&secret), "{secret} survived: {clean}");
            assert!(clean.contains(REDACTED), "{clean}");
            assert!(clean.ends_with(", next") || clean.contains("next"), "{clean}");
        }
    }

    #[test]
    fn key_value_pairs_in_text_lose_their_value() {
        fn check(input: &str, expected: &str) {
            assert_eq!(redact_text(input), expected, "{input}");
        }
        check("password=hunter2 user=bob", "password=[REDACTED] user=bob");
        check("login with api_key: abc123xyz", "login with api_key: [REDACTED]");
        check(
            r#"{"client_secret": "s3cr3t", "a": 1}"#,
            r#"{"client_secret": "[REDACTED]", "a": 1}"#,
        );
        check("Authorization: Bearer abcdefghijkl", "Authorization: [REDACTED]");
        check("token=[REDACTED]", "token=[REDACTED]");
        check("the token usage is high", "the token usage is high");
        check("nothing to see", "nothing to see");
    }

    #[test]
    fn secret_named_keys_are_redacted_in_json_but_token_counts_stay() {
        let mut value = json!({
            "api_key": "plain-value", "apiKey": 42, "nested": {"Password": "x", "list": [{"token": "t"}]},
            "totalTokens": 300, "inputTokens": 10, "note": format!("key {}", secrets()[0]),
            "enabled": true, "secret": null, "setting": "api_key"
        });
        redact_json(&mut value);
        assert_eq!(value["api_key"], REDACTED);
        assert_eq!(value["apiKey"], REDACTED);
        assert_eq!(value["nested"]["Password"], REDACTED);
        assert_eq!(value["nested"]["list"][0]["token"], REDACTED);
        assert_eq!(value["totalTokens"], 300);
        assert_eq!(value["inputTokens"], 10);
        assert_eq!(value["note"], format!("key {REDACTED}"));
        assert_eq!(value["enabled"], true);
        assert_eq!(value["secret"], Value::Null);
        assert_eq!(value["setting"], "api_key");
    }

    proptest! {
        #[test]
        fn a_secret_never_survives_whatever_surrounds_it(
            before in "[ -~\\n]{0,40}", after in "[ -~\\n]{0,40}", which in 0usize..9,
        ) {
            let secret = &secrets()[which];
            let text = format!("{before} {secret} {after}");
            let clean = redact_text(&text);
            prop_assert!(!clean.contains(secret.as_str()));
            let mut json = json!({"free": text, "list": [text]});
            redact_json(&mut json);
            prop_assert!(!json.to_string().contains(secret.as_str()));
        }

        #[test]
        fn text_without_secrets_is_unchanged(text in "[a-z .,]{0,80}") {
            prop_assert_eq!(redact_text(&text), text.as_str());
        }
    }
}
