//! The audit log: who did what to the cluster, and who was refused.
//!
//! Every request that changes the cluster and every request refused (401/403) becomes an
//! [`AuditEntry`], committed through Raft like any other state, so it survives the loss
//! of any minority of controllers and is the same on every one. Entries are chained: each
//! carries the SHA-256 of the previous entry's hash and its own contents, so changing or
//! removing one entry in the middle breaks every hash after it ([`verify`]). Retention
//! keeps the newest entries and the hash just before the oldest one kept (the anchor), so
//! what is kept still verifies.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::resources::Millis;

/// How much of a request the audit log keeps (`dabba controller --audit-level`), as
/// Kubernetes' audit levels do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditLevel {
    /// Nothing is recorded.
    None,
    /// Who, what, where, when and the outcome.
    #[default]
    Metadata,
    /// Metadata and the request body (JSON only, at most [`BODY_KEPT`] bytes, with
    /// secret-looking fields redacted).
    Request,
}

impl std::str::FromStr for AuditLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<AuditLevel, String> {
        match s {
            "none" => Ok(AuditLevel::None),
            "metadata" => Ok(AuditLevel::Metadata),
            "request" => Ok(AuditLevel::Request),
            other => Err(format!(
                "`{other}` is not an audit level: none, metadata or request"
            )),
        }
    }
}

impl std::fmt::Display for AuditLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuditLevel::None => "none",
            AuditLevel::Metadata => "metadata",
            AuditLevel::Request => "request",
        })
    }
}

/// Bytes of a request body kept at [`AuditLevel::Request`].
pub const BODY_KEPT: usize = 4096;

/// The hash before the first entry of a new cluster.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its place in the log: 1 for the first entry ever (set when committed).
    #[serde(default)]
    pub seq: u64,
    /// When the request was answered, by the clock of the controller that answered.
    pub at: Millis,
    /// Whose token: its label (`admin`, `ci-deployer`), `host/NAME` for a host's own
    /// credential, or `anonymous` without a valid one.
    pub user: String,
    /// What was asked, in words: `apply`, `delete`, `scale`, `rollout`, `run`, `get`, ...
    pub verb: String,
    pub method: String,
    /// The request's path (without the query).
    pub path: String,
    /// The namespace the path names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// The client's address, as the first controller it reached saw it.
    pub source: String,
    /// Also answered to the client in `x-dabba-request-id`.
    pub request_id: String,
    /// The controller that answered.
    pub controller: u64,
    /// The request body, at [`AuditLevel::Request`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// SHA-256 (hex) of the previous entry's hash and this entry's contents (set when
    /// committed).
    #[serde(default)]
    pub hash: String,
}

impl AuditEntry {
    /// This entry's hash after the entry whose hash is `prev`: over everything but
    /// `hash` itself.
    pub fn chained(&self, prev: &str) -> String {
        let mut contents = self.clone();
        contents.hash = String::new();
        let bytes = serde_json::to_vec(&contents).expect("an entry serializes");
        let mut h = sha2::Sha256::new();
        h.update(prev.as_bytes());
        h.update(&bytes);
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }
}

/// `GET /v1/audit`: a contiguous run of the log and the hash before its first entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    pub anchor: String,
    pub entries: Vec<AuditEntry>,
}

/// Checks that `log`'s entries follow each other from its anchor, each hash matching
/// its contents; the first entry that does not, otherwise.
pub fn verify(log: &AuditLog) -> Result<(), String> {
    let mut prev = log.anchor.as_str();
    let mut seq = None;
    for e in &log.entries {
        if seq.is_some_and(|s: u64| e.seq != s + 1) {
            return Err(format!(
                "entry {} follows entry {}: entries are missing",
                e.seq,
                seq.unwrap_or(0)
            ));
        }
        if e.chained(prev) != e.hash {
            return Err(format!(
                "entry {} ({} {} by {}) does not match its hash: the log was changed",
                e.seq, e.method, e.path, e.user
            ));
        }
        prev = &e.hash;
        seq = Some(e.seq);
    }
    Ok(())
}

/// The last words of field names whose values the audit log never keeps.
pub const SECRET_WORDS: [&str; 7] = [
    "token",
    "secret",
    "password",
    "passwd",
    "key",
    "credential",
    "credentials",
];

/// `body` as kept at [`AuditLevel::Request`]: JSON with the values of secret-looking
/// fields (whose name ends in one of [`SECRET_WORDS`]) replaced, cut to [`BODY_KEPT`]
/// bytes;
/// `None` for a body that is empty or not JSON (a component upload).
pub fn kept_body(body: &[u8]) -> Option<String> {
    kept_body_as(body, false)
}

/// [`kept_body`] of a request about secrets: every string in it is replaced, so what
/// is kept is which keys were set or removed, never a value.
pub fn kept_secret_body(body: &[u8]) -> Option<String> {
    kept_body_as(body, true)
}

fn kept_body_as(body: &[u8], all_secret: bool) -> Option<String> {
    fn redact(v: &mut serde_json::Value, all: bool) {
        match v {
            serde_json::Value::String(_) if all => {
                *v = serde_json::Value::String("[redacted]".into());
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    // By the last word of the name: `api_key`, `db_password`, `token`
                    // — not `key_value_buckets`.
                    let k = k.to_ascii_lowercase();
                    let last = k.rsplit(['_', '-', '.']).next().unwrap_or("");
                    if SECRET_WORDS.contains(&last) && !v.is_null() {
                        *v = serde_json::Value::String("[redacted]".into());
                    } else {
                        redact(v, all);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, all)),
            _ => {}
        }
    }
    if body.is_empty() {
        return None;
    }
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    redact(&mut v, all_secret);
    let mut text = v.to_string();
    if text.len() > BODY_KEPT {
        let cut = (0..=BODY_KEPT)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64, user: &str) -> AuditEntry {
        AuditEntry {
            seq: n,
            at: 1_000 + n,
            user: user.into(),
            verb: "scale".into(),
            method: "POST".into(),
            path: "/v1/apps/shop/pay/scale".into(),
            namespace: Some("shop".into()),
            status: 200,
            source: "127.0.0.1:5000".into(),
            request_id: format!("r{n}"),
            controller: 1,
            body: None,
            hash: String::new(),
        }
    }

    fn log(n: u64) -> AuditLog {
        let mut prev = GENESIS.to_string();
        let entries = (1..=n)
            .map(|i| {
                let mut e = entry(i, "ci");
                e.hash = e.chained(&prev);
                prev = e.hash.clone();
                e
            })
            .collect();
        AuditLog {
            anchor: GENESIS.into(),
            entries,
        }
    }

    #[test]
    fn a_chained_log_verifies_and_any_change_breaks_it() {
        let good = log(5);
        verify(&good).unwrap();
        // Changing who did it.
        let mut changed = good.clone();
        changed.entries[2].user = "someone-else".into();
        assert!(verify(&changed).unwrap_err().contains("entry 3"));
        // Removing an entry.
        let mut removed = good.clone();
        removed.entries.remove(1);
        assert!(verify(&removed).unwrap_err().contains("missing"));
        // Rewriting an entry and its hash: every later one breaks.
        let mut rewritten = good.clone();
        rewritten.entries[1].status = 403;
        rewritten.entries[1].hash = rewritten.entries[1].chained(&rewritten.entries[0].hash);
        assert!(verify(&rewritten).unwrap_err().contains("entry 3"));
        // A tail of the log verifies from the hash before it.
        let tail = AuditLog {
            anchor: good.entries[1].hash.clone(),
            entries: good.entries[2..].to_vec(),
        };
        verify(&tail).unwrap();
    }

    #[test]
    fn request_bodies_are_kept_redacted_and_cut() {
        let kept = kept_body(
            br#"{"role":"admin","label":"x","token":"s3cret","nested":[{"api_key":"k"}],"config":{"db-password":"pw","max_amount":"9"},"key_value_buckets":["ledger"]}"#,
        )
        .unwrap();
        for secret in ["s3cret", "\"k\"", "\"pw\""] {
            assert!(!kept.contains(secret), "{secret} in {kept}");
        }
        for as_is in ["admin", "ledger", "\"9\""] {
            assert!(kept.contains(as_is), "{as_is} not in {kept}");
        }
        assert_eq!(kept_body(b""), None);
        assert_eq!(kept_body(b"\x00asm"), None, "not JSON: a component");
        let long = format!("{{\"label\":\"{}\"}}", "é".repeat(5000));
        let kept = kept_body(long.as_bytes()).unwrap();
        assert!(kept.len() <= BODY_KEPT + '…'.len_utf8(), "{}", kept.len());
    }
}

/// `PUT /v1/audit/retention`: how long entries are kept (`None`: the newest 10,000,
/// whatever their age).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRetention {
    pub max_age_ms: Option<u64>,
}
