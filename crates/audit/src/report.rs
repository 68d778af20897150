//! A verification report an auditor can keep: what `verify` found (range, rows checked, head,
//! findings, when, which tool, which database), optionally signed with an Ed25519 key.
//!
//! An unkeyed hash chain proves only that rows were not changed one at a time: someone with the
//! file can rewrite the whole log and recompute every hash. A signed report kept elsewhere pins
//! the head the log had when it was checked; [`check`] tells a report edited since (or signed by
//! another key) from a genuine one, and `AuditLog::verify` with the report's head tells a log
//! rewritten since.
//!
//! The signature covers the report's canonical bytes: the report without its `signature`,
//! serialised as compact JSON in its fields' fixed order. Reading a report refuses unknown
//! fields, so nothing can be added to a signed report either.

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use crate::chain::{ChainHead, Finding, Verification};

/// The key types of this module's signatures, so that a caller names them without depending on
/// the crate that implements them.
pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// The report format's name and version.
pub const FORMAT: &str = "aigentflow-audit-verification/1";

/// The signature algorithm reports are signed with.
pub const ALGORITHM: &str = "ed25519";

/// Largest report or key file read (a report lists at most 1000 findings).
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// What went wrong with a report or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The text is not a report of this format.
    #[error("not an audit verification report: {0}")]
    NotAReport(String),
    /// A key file does not hold a key.
    #[error("not an Ed25519 {what} key: {reason}")]
    BadKey { what: &'static str, reason: String },
    /// The report carries no signature.
    #[error("the report is not signed")]
    Unsigned,
    /// The report was signed by another key than the one given.
    #[error(
        "the report was signed by another key ({found:.16}…), not the one given ({given:.16}…)"
    )]
    OtherKey { found: String, given: String },
    /// The signature does not match the report: it was edited after it was signed.
    #[error("the signature does not match the report: it was changed after it was signed")]
    BadSignature,
}

/// The rows a report covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// The first row's id.
    pub first_id: i64,
    /// The last row's id.
    pub last_id: i64,
}

/// What a verification found, as a report says it (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`FORMAT`].
    pub format: String,
    /// The tool and its version (`aigentflow 0.1.0`).
    pub tool: String,
    /// The database checked, as people read it (no password).
    pub database: String,
    /// When it was checked (RFC 3339, UTC).
    pub checked_at: String,
    /// The ids of the first and last rows; None for an empty log.
    pub range: Option<Range>,
    /// Rows checked.
    pub rows_checked: u64,
    /// The head of the chain when checked; None for an empty log.
    pub head: Option<ChainHead>,
    /// Whether the chain was intact.
    pub ok: bool,
    /// How many problems were found in all.
    pub findings_total: u64,
    /// The problems found (at most 1000), each with its `kind` and the row it names, and its
    /// sentence.
    pub findings: Vec<ReportFinding>,
}

/// One finding as a report writes it: a struct, so that reading a report refuses a field given
/// twice (a JSON map would keep the last one where the signed bytes had another) or unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportFinding {
    /// What was found (`edited`, `missing`…).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<i64>,
    /// The finding as a sentence.
    pub text: String,
}

impl ReportFinding {
    /// `f` as a report writes it: its fields where the report has them, else kind `other`
    /// with its sentence alone.
    pub fn of(f: &Finding) -> Self {
        let mut value = serde_json::to_value(f).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("text".into(), f.to_string().into());
        }
        serde_json::from_value(value).unwrap_or_else(|_| Self {
            kind: "other".into(),
            id: None,
            before_id: None,
            column: None,
            expected_rows: None,
            found_rows: None,
            last_id: None,
            text: f.to_string(),
        })
    }

    /// Whether both name the same problem: the same kind and rows (the sentence alone for kind
    /// `other`, whose rows are only in it). The sentence may read otherwise in another version
    /// of the tool.
    fn same_as(&self, other: &Self) -> bool {
        if self.kind == "other" {
            return other.kind == "other" && self.text == other.text;
        }
        Self { text: String::new(), ..self.clone() }
            == Self { text: String::new(), ..other.clone() }
    }
}

impl Report {
    /// The findings of `v`, a verification of the log now against this report's head, that the
    /// report does not record: what changed in the log since it was checked. A report of a
    /// broken chain records that chain's findings; finding them again is no change.
    ///
    /// Where the report lists only the first [`MAX_FINDINGS`](crate::chain::MAX_FINDINGS) of
    /// more, a finding it does not list is new only if it comes before the last one listed (in
    /// row order), names a row after the report's head, or is held against the report's own
    /// head (truncated, rewritten, another count); any other may be one it counted.
    pub fn new_findings<'v>(&self, v: &'v Verification) -> Vec<&'v Finding> {
        let listed_all = self.findings_total <= self.findings.len() as u64;
        let last_listed = self.findings.iter().filter_map(ReportFinding::row).max();
        let head = self.head.as_ref().map(|h| h.last_id);
        v.findings
            .iter()
            .filter(|f| {
                let given = ReportFinding::of(f);
                if self.findings.iter().any(|r| r.same_as(&given)) {
                    return false;
                }
                match (listed_all, f, given.row()) {
                    (true, _, _) => true,
                    (
                        false,
                        Finding::Truncated { .. }
                        | Finding::HeadMismatch { .. }
                        | Finding::HeadCount { .. },
                        _,
                    ) => true,
                    (false, _, Some(row)) => {
                        last_listed.is_some_and(|l| row < l) || head.is_some_and(|h| row > h)
                    }
                    (false, _, None) => false,
                }
            })
            .collect()
    }
}

impl ReportFinding {
    /// The row a finding names, if it names one.
    fn row(&self) -> Option<i64> {
        self.id.or(self.before_id)
    }
}

/// A report's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// [`ALGORITHM`].
    pub algorithm: String,
    /// The public key that checks it, in hex.
    pub public_key: String,
    /// The signature of the report's canonical bytes, in hex.
    pub value: String,
}

/// A report as written to a file: the report, and its signature if it was signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReport {
    /// The report.
    #[serde(flatten)]
    pub report: Report,
    /// Its signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl Report {
    /// The report of `v`, a verification of the log of `database` whose first row is
    /// `first_id`, made by `tool` at `checked_at`.
    pub fn new(
        v: &Verification,
        first_id: Option<i64>,
        database: &str,
        tool: &str,
        checked_at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let findings = v.findings.iter().map(ReportFinding::of).collect();
        Self {
            format: FORMAT.to_owned(),
            tool: tool.to_owned(),
            database: database.to_owned(),
            checked_at: aigentflow_core_states::time::to_rfc3339(checked_at),
            range: match (first_id, &v.head) {
                (Some(first_id), Some(head)) => Some(Range { first_id, last_id: head.last_id }),
                _ => None,
            },
            rows_checked: v.rows,
            head: v.head.clone(),
            ok: v.is_ok(),
            findings_total: v.findings_total,
            findings,
        }
    }

    /// The bytes a signature covers: the report as compact JSON, fields in their fixed order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The report signed with `key`.
    pub fn sign(self, key: &SigningKey) -> SignedReport {
        let value = sign_bytes(key, &self.canonical_bytes());
        SignedReport {
            report: self,
            signature: Some(Signature {
                algorithm: ALGORITHM.to_owned(),
                public_key: public_key_hex(&key.verifying_key()),
                value,
            }),
        }
    }

    /// The report, unsigned.
    pub fn unsigned(self) -> SignedReport {
        SignedReport { report: self, signature: None }
    }
}

/// Reads a report file's text (not yet checked: see [`check`]).
pub fn parse(text: &str) -> Result<SignedReport, ReportError> {
    let report: SignedReport =
        serde_json::from_str(text).map_err(|e| ReportError::NotAReport(e.to_string()))?;
    if report.report.format != FORMAT {
        return Err(ReportError::NotAReport(format!(
            "its format is {:?}, not {FORMAT}",
            report.report.format
        )));
    }
    Ok(report)
}

/// Checks that `text` is a report signed by `key` and unchanged since; returns the report.
pub fn check(text: &str, key: &VerifyingKey) -> Result<Report, ReportError> {
    let signed = parse(text)?;
    let signature = signed.signature.ok_or(ReportError::Unsigned)?;
    if signature.algorithm != ALGORITHM {
        return Err(ReportError::NotAReport(format!(
            "its signature is {:?}, not {ALGORITHM}",
            signature.algorithm
        )));
    }
    let given = public_key_hex(key);
    if !signature.public_key.eq_ignore_ascii_case(&given) {
        return Err(ReportError::OtherKey { found: signature.public_key, given });
    }
    verify_bytes(key, &signed.report.canonical_bytes(), &signature.value)?;
    Ok(signed.report)
}

/// `key`'s Ed25519 signature of `message`, as 128 hex digits.
pub fn sign_bytes(key: &SigningKey, message: &[u8]) -> String {
    hex::encode(key.sign(message).to_bytes())
}

/// Checks that `signature` (128 hex digits) is `key`'s signature of `message`:
/// [`ReportError::BadSignature`] if it is not, or is not a signature at all.
pub fn verify_bytes(
    key: &VerifyingKey,
    message: &[u8],
    signature: &str,
) -> Result<(), ReportError> {
    let bytes: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ReportError::BadSignature)?;
    key.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes))
        .map_err(|_| ReportError::BadSignature)
}

/// A public key as signatures name it: its 32 bytes in lower-case hex.
pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// A public key from [`public_key_hex`]'s form.
pub fn public_key_from_hex(text: &str) -> Result<VerifyingKey, ReportError> {
    let bad = |reason: String| ReportError::BadKey { what: "public", reason };
    let bytes: [u8; 32] = hex::decode(text)
        .map_err(|_| bad("not 64 hex digits".into()))?
        .try_into()
        .map_err(|_| bad("not 32 bytes (64 hex digits)".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

/// A new signing key from the system's random source.
pub fn generate_key() -> std::io::Result<SigningKey> {
    let mut seed = [0u8; 32];
    let mut filled = 0;
    while filled < seed.len() {
        filled +=
            rustix::rand::getrandom(&mut seed[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(SigningKey::from_bytes(&seed))
}

/// What starts a secret key file's line: a public key file is never taken for one.
const SECRET_TAG: &str = "aigentflow-ed25519-secret";
/// What starts a public key file's line.
const PUBLIC_TAG: &str = "aigentflow-ed25519-public";

/// The text of a secret key file: its kind, then the key's 32 bytes in hex, on one line.
pub fn secret_key_text(key: &SigningKey) -> String {
    format!("{SECRET_TAG} {}\n", hex::encode(key.to_bytes()))
}

/// The text of a public key file: its kind, then the key's 32 bytes in hex, on one line.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_TAG} {}\n", public_key_hex(key))
}

fn key_bytes(text: &str, what: &'static str) -> Result<[u8; 32], ReportError> {
    let bad = |reason: String| ReportError::BadKey { what, reason };
    let (tag, other) = match what {
        "secret" => (SECRET_TAG, PUBLIC_TAG),
        _ => (PUBLIC_TAG, SECRET_TAG),
    };
    let text = text.trim();
    let hex_text = match text.split_once(' ') {
        Some((t, rest)) if t == tag => rest,
        Some((t, _)) if t == other => {
            return Err(bad(format!(
                "this is a {} key file",
                if what == "secret" { "public" } else { "secret" }
            )))
        }
        _ => return Err(bad(format!("a key file's line starts with {tag}"))),
    };
    let bytes = hex::decode(hex_text).map_err(|_| bad("not 64 hex digits".into()))?;
    bytes.try_into().map_err(|_| bad("not 32 bytes (64 hex digits)".into()))
}

/// A secret key from its file's text.
pub fn read_secret_key(text: &str) -> Result<SigningKey, ReportError> {
    Ok(SigningKey::from_bytes(&key_bytes(text, "secret")?))
}

/// A public key from its file's text.
pub fn read_public_key(text: &str) -> Result<VerifyingKey, ReportError> {
    VerifyingKey::from_bytes(&key_bytes(text, "public")?)
        .map_err(|e| ReportError::BadKey { what: "public", reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let v = Verification {
            rows: 3,
            head: Some(ChainHead { rows: 3, last_id: 3, hash: "ab".repeat(32) }),
            finding: None,
            findings: vec![],
            findings_total: 0,
        };
        Report::new(&v, Some(1), "db", "aigentflow 0.1.0", chrono::DateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_signed_report_checks_and_any_edit_or_other_key_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let text = serde_json::to_string_pretty(&report().sign(&key)).unwrap();
        assert_eq!(check(&text, &key.verifying_key()).unwrap(), report());
        // Every field edited, one at a time, breaks the signature.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for field in ["tool", "database", "checked_at", "rows_checked", "ok", "findings_total"] {
            let mut edited = value.clone();
            edited[field] = match &edited[field] {
                serde_json::Value::Bool(b) => (!b).into(),
                serde_json::Value::Number(n) => (n.as_u64().unwrap() + 1).into(),
                other => format!("{}x", other.as_str().unwrap()).into(),
            };
            let e = check(&edited.to_string(), &key.verifying_key()).unwrap_err();
            assert!(matches!(e, ReportError::BadSignature), "{field}: {e}");
        }
        let mut edited = value.clone();
        edited["head"]["hash"] = "cd".repeat(32).into();
        assert!(matches!(
            check(&edited.to_string(), &key.verifying_key()),
            Err(ReportError::BadSignature)
        ));
        let mut added = value.clone();
        added["extra"] = 1.into();
        assert!(matches!(
            check(&added.to_string(), &key.verifying_key()),
            Err(ReportError::NotAReport(_))
        ));
        let other = SigningKey::from_bytes(&[8; 32]);
        assert!(matches!(check(&text, &other.verifying_key()), Err(ReportError::OtherKey { .. })));
        // Re-signed by another key with the key field swapped: still not the given key's.
        let forged = serde_json::to_string(&report().sign(&other)).unwrap();
        assert!(check(&forged, &key.verifying_key()).is_err());
        // A finding given a field twice would read as one thing and check as another.
        let mut broken = report();
        broken.ok = false;
        broken.findings = vec![ReportFinding {
            kind: "edited".into(),
            id: Some(3),
            before_id: None,
            column: None,
            expected_rows: None,
            found_rows: None,
            last_id: None,
            text: "row 3 was edited".into(),
        }];
        let signed = serde_json::to_string(&broken.sign(&key)).unwrap();
        let forged = signed.replacen(
            "{\"kind\":\"edited\"",
            "{\"kind\":\"none\",\"id\":9,\"text\":\"nothing\",\"kind\":\"edited\"",
            1,
        );
        assert_ne!(forged, signed);
        assert!(matches!(check(&forged, &key.verifying_key()), Err(ReportError::NotAReport(_))));
        let unsigned = serde_json::to_string(&report().unsigned()).unwrap();
        assert!(matches!(check(&unsigned, &key.verifying_key()), Err(ReportError::Unsigned)));
    }

    /// A report of `findings` (of `total` in all) whose head is row `last_id`.
    fn broken(findings: &[Finding], total: u64, last_id: i64) -> Report {
        let v = Verification {
            rows: last_id as u64,
            head: Some(ChainHead { rows: last_id as u64, last_id, hash: "ab".repeat(32) }),
            finding: findings.first().cloned(),
            findings: findings.to_vec(),
            findings_total: total,
        };
        Report::new(&v, Some(1), "db", "aigentflow 0.1.0", chrono::DateTime::UNIX_EPOCH)
    }

    /// The findings of a verification finding `now` that `report` does not record.
    fn unrecorded(report: &Report, now: &[Finding]) -> Vec<Finding> {
        let v = Verification {
            rows: 0,
            head: None,
            finding: now.first().cloned(),
            findings: now.to_vec(),
            findings_total: now.len() as u64,
        };
        report.new_findings(&v).into_iter().cloned().collect()
    }

    #[test]
    fn only_findings_a_report_does_not_record_are_new() {
        use Finding::*;
        let tail = TailMissing { after_id: 6, through_id: 8 };
        let truncated = Truncated { expected_rows: 9, found_rows: 8 };
        let edited = |id| Edited { id };
        let report = broken(&[edited(3), Unsealed { id: 5 }, tail.clone()], 3, 9);
        assert_eq!(unrecorded(&report, &[]), Vec::<Finding>::new());
        assert_eq!(
            unrecorded(&report, &[edited(3), Unsealed { id: 5 }, tail.clone()]),
            Vec::<Finding>::new()
        );
        assert_eq!(unrecorded(&report, &[edited(3)]), Vec::<Finding>::new());
        for fresh in [
            edited(4),
            edited(5),
            Missing { before_id: 3 },
            TailMissing { after_id: 6, through_id: 9 },
            truncated.clone(),
            HeadMismatch { last_id: 9 },
            HeadCount { last_id: 9, expected_rows: 9, found_rows: 8 },
        ] {
            let now = [edited(3), fresh.clone(), Unsealed { id: 5 }];
            assert_eq!(unrecorded(&report, &now), vec![fresh.clone()], "{fresh}");
        }
        // A report that lists the first of more: an unlisted finding among the listed rows,
        // after its head or against its head is new; one past the list may be one it counted.
        let listed: Vec<Finding> = (1..=1000).map(|id| edited(id * 2)).collect();
        let report = broken(&listed, 1500, 3000);
        let mut now = listed.clone();
        now.extend([edited(2001), tail.clone()]);
        assert_eq!(unrecorded(&report, &now), Vec::<Finding>::new());
        for fresh in [edited(7), edited(3001), truncated, Missing { before_id: 1999 }] {
            let mut now = listed.clone();
            now.push(fresh.clone());
            assert_eq!(unrecorded(&report, &now), vec![fresh.clone()], "{fresh}");
        }
    }

    #[test]
    fn keys_read_back_from_their_files_and_bad_ones_are_refused() {
        let key = generate_key().unwrap();
        assert_ne!(key.to_bytes(), generate_key().unwrap().to_bytes());
        let secret = read_secret_key(&secret_key_text(&key)).unwrap();
        assert_eq!(secret.to_bytes(), key.to_bytes());
        let public = read_public_key(&public_key_text(&key.verifying_key())).unwrap();
        assert_eq!(public, key.verifying_key());
        // A public key file is not a secret one, nor the other way round.
        assert!(read_secret_key(&public_key_text(&key.verifying_key())).is_err());
        assert!(read_public_key(&secret_key_text(&key)).is_err());
        assert!(read_secret_key(&hex::encode(key.to_bytes())).is_err());
        for bad in ["", "zz", &"ab".repeat(31), &"ab".repeat(33), "-----BEGIN KEY-----"] {
            assert!(read_secret_key(bad).is_err(), "{bad}");
            assert!(read_public_key(bad).is_err(), "{bad}");
        }
    }
}
