//! The decision record: one JSON line per request and per task/credential
//! lifecycle event.
//!
//! Field names are a public contract: reviewers filter the log with `jq`, so
//! every field is always present (`null` or empty when it does not apply or
//! is not known), except `message`, which is left out when there is none. Nothing in a record is ever a secret value:
//! credentials appear by id and fingerprint only, paths never carry the query.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::credential::secret::random_bytes;
use crate::reason::Reason;

/// What a record is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// One request the listener parsed (also CONNECT and blind tunnels).
    #[default]
    #[serde(rename = "request")]
    Request,
    /// A task was created.
    #[serde(rename = "task.start")]
    TaskStart,
    /// A task ended (on request, on expiry or at shutdown).
    #[serde(rename = "task.end")]
    TaskEnd,
    /// A credential was obtained from its source for a task.
    #[serde(rename = "credential.issue")]
    CredentialIssue,
    /// A credential was revoked at its source (or dropped, when the source
    /// cannot revoke).
    #[serde(rename = "credential.revoke")]
    CredentialRevoke,
}

impl Event {
    /// The name used in the `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Request => "request",
            Event::TaskStart => "task.start",
            Event::TaskEnd => "task.end",
            Event::CredentialIssue => "credential.issue",
            Event::CredentialRevoke => "credential.revoke",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a request as the record states it. Kept here rather than
/// borrowed from the policy module so the log format does not change when
/// the policy's own decision type grows (e.g. "approval required" is a deny
/// in the log, with its reason saying why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The request was forwarded.
    Allow,
    /// The request was refused; `reason` says why.
    Deny,
}

impl Verdict {
    /// `"allow"` or `"deny"`, as in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned when a word is neither `allow` nor `deny`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a decision (expected \"allow\" or \"deny\")")]
pub struct VerdictParseError(String);

impl FromStr for Verdict {
    type Err = VerdictParseError;

    /// Accepts `allow` / `deny` in any case, for the command line.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("allow") {
            Ok(Verdict::Allow)
        } else if text.eq_ignore_ascii_case("deny") {
            Ok(Verdict::Deny)
        } else {
            Err(VerdictParseError(text.to_string()))
        }
    }
}

/// Whether the credential came from the cache or was fetched for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// A still-valid credential was reused.
    Hit,
    /// The source was asked for a new credential.
    Miss,
}

/// Which credential was used, identified without revealing it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    /// The kind of source (`github_app`, `oauth2_client_credentials`, `static`, …).
    #[serde(default)]
    pub source: String,
    /// The credential's name in the configuration.
    #[serde(default)]
    pub name: String,
    /// The stable id of this issued credential (correlates issue/use/revoke).
    #[serde(default)]
    pub id: String,
    /// `sha256:` + 12 hex digits of the value; never the value.
    #[serde(default)]
    pub fingerprint: String,
    /// When the credential expires (RFC 3339), if it does.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Cache hit or miss; absent on lifecycle events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheOutcome>,
    /// `true` for a long-lived credential that credgate cannot scope or
    /// revoke (a documented exception worth flagging in review).
    #[serde(default)]
    pub standing: bool,
}

/// What the upstream did with a forwarded request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamInfo {
    /// The response status, when a response head arrived.
    #[serde(default)]
    pub status: Option<u16>,
    /// Milliseconds from sending the request to the response head.
    #[serde(default)]
    pub ms: Option<u64>,
}

/// One line of the decision log. See the module documentation for which
/// fields may be absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DecisionRecord {
    /// When the request started: RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// Unique per record: 16 lowercase hex digits.
    pub id: String,
    /// What the record is about.
    pub event: Event,
    /// The task id, once identified.
    #[serde(default)]
    pub task: Option<String>,
    /// The agent name the task was created for.
    #[serde(default)]
    pub agent: Option<String>,
    /// The task's labels (ticket, env, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The request method.
    #[serde(default)]
    pub method: Option<String>,
    /// `http` or `https` (the scheme the agent used).
    #[serde(default)]
    pub scheme: Option<String>,
    /// The destination host, normalised.
    #[serde(default)]
    pub host: Option<String>,
    /// The destination port.
    #[serde(default)]
    pub port: Option<u16>,
    /// The normalised path only, never the query string.
    #[serde(default)]
    pub path: Option<String>,
    /// Allow or deny.
    #[serde(default)]
    pub decision: Option<Verdict>,
    /// The rule that decided, as `scope[index]` or the rule's name.
    #[serde(default)]
    pub rule: Option<String>,
    /// Why the request ended the way it did.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// A sentence a reviewer can act on. Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Header names removed from the agent's request.
    #[serde(default)]
    pub stripped: Vec<String>,
    /// Ids of the secret-detection rules that matched the agent's request.
    #[serde(default)]
    pub findings: Vec<String>,
    /// The credential injected (or issued/revoked, on lifecycle events).
    #[serde(default)]
    pub credential: Option<CredentialInfo>,
    /// What the upstream answered, when the request was forwarded.
    #[serde(default)]
    pub upstream: Option<UpstreamInfo>,
    /// `true` when bytes were tunnelled blindly, without inspection or injection.
    #[serde(default)]
    pub tunnel: bool,
    /// Bytes received from the agent (request body, or tunnel bytes).
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes sent back to the agent.
    #[serde(default)]
    pub bytes_out: u64,
    /// How many credential occurrences were scrubbed from the response.
    #[serde(default)]
    pub scrubbed: u64,
    /// Wall time from the start of the request to the record.
    #[serde(default)]
    pub duration_ms: u64,
}

impl DecisionRecord {
    /// A request record started at `now`, with a fresh id; the pipeline
    /// fills the rest as it learns it.
    pub fn request(now: SystemTime) -> Self {
        DecisionRecord::event(Event::Request, now)
    }

    /// A record of `event` at `now`, with a fresh id.
    pub fn event(event: Event, now: SystemTime) -> Self {
        DecisionRecord {
            ts: format_timestamp(now),
            id: new_record_id(),
            event,
            ..DecisionRecord::default()
        }
    }
}

/// `now` as RFC 3339 UTC with milliseconds (`2026-11-23T14:05:01.123Z`).
///
/// Clamped to the range the format can express, so a wildly wrong system
/// clock yields an odd timestamp rather than a panic on the request path.
pub fn format_timestamp(now: SystemTime) -> String {
    // 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
    const LATEST: Duration = Duration::from_millis(253_402_300_799_999);
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(LATEST);
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

/// 16 lowercase hex digits from the CSPRNG: unique enough that two records
/// never share an id, unguessable so ids cannot be forged into a log.
pub fn new_record_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(16);
    for byte in random_bytes::<8>() {
        id.push(HEX[usize::from(byte >> 4)] as char);
        id.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_millis() {
        assert_eq!(
            format_timestamp(at(1_795_442_701_123)),
            "2026-11-23T14:05:01.123Z"
        );
        assert_eq!(format_timestamp(at(0)), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn timestamp_of_an_absurd_clock_does_not_panic() {
        assert_eq!(
            format_timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(format_timestamp(far), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn ids_are_16_lowercase_hex_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_record_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 16);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
    }

    #[test]
    fn constructors_fill_ts_id_and_event() {
        let r = DecisionRecord::request(at(1_795_442_701_123));
        assert_eq!(r.event, Event::Request);
        assert_eq!(r.ts, "2026-11-23T14:05:01.123Z");
        assert_eq!(r.id.len(), 16);
        let e = DecisionRecord::event(Event::CredentialRevoke, at(0));
        assert_eq!(e.event, Event::CredentialRevoke);
        assert_ne!(r.id, e.id);
    }

    #[test]
    fn field_names_are_stable_and_applicable_fields_present() {
        let r = DecisionRecord::request(at(0));
        let v = serde_json::to_value(&r).unwrap();
        let obj = v.as_object().unwrap();
        for key in [
            "ts",
            "id",
            "event",
            "task",
            "agent",
            "method",
            "scheme",
            "host",
            "port",
            "path",
            "decision",
            "rule",
            "reason",
            "labels",
            "stripped",
            "findings",
            "credential",
            "upstream",
            "tunnel",
            "bytes_in",
            "bytes_out",
            "scrubbed",
            "duration_ms",
        ] {
            assert!(obj.contains_key(key), "missing {key}: {v}");
        }
        assert!(
            !obj.contains_key("message"),
            "an absent message is left out: {v}"
        );
        assert_eq!(obj["event"], "request");
    }

    #[test]
    fn full_record_round_trips_with_documented_spellings() {
        let mut r = DecisionRecord::event(Event::TaskStart, at(0));
        r.task = Some("task-3f2a".into());
        r.labels.insert("ticket".into(), "OPS-1".into());
        r.decision = Some(Verdict::Deny);
        r.reason = Some(Reason::NoMatchingRule);
        r.stripped = vec!["authorization".into()];
        r.credential = Some(CredentialInfo {
            source: "github_app".into(),
            name: "github".into(),
            id: "cred-1".into(),
            fingerprint: "sha256:0123456789ab".into(),
            expires_at: Some("2026-11-23T15:05:01.000Z".into()),
            cache: Some(CacheOutcome::Hit),
            standing: false,
        });
        r.upstream = Some(UpstreamInfo {
            status: Some(200),
            ms: Some(12),
        });
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""event":"task.start""#), "{line}");
        assert!(line.contains(r#""decision":"deny""#), "{line}");
        assert!(line.contains(r#""reason":"no_matching_rule""#), "{line}");
        assert!(line.contains(r#""cache":"hit""#), "{line}");
        assert!(!line.contains('\n'));
        let back: DecisionRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn every_event_name_parses_back() {
        for e in [
            Event::Request,
            Event::TaskStart,
            Event::TaskEnd,
            Event::CredentialIssue,
            Event::CredentialRevoke,
        ] {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        }
    }

    #[test]
    fn minimal_line_parses_but_identity_is_required() {
        let r: DecisionRecord = serde_json::from_str(
            r#"{"ts":"1970-01-01T00:00:00.000Z","id":"00","event":"request"}"#,
        )
        .unwrap();
        assert_eq!(r.decision, None);
        assert!(serde_json::from_str::<DecisionRecord>(r#"{"host":"x"}"#).is_err());
        assert!(serde_json::from_str::<DecisionRecord>(
            r#"{"ts":"x","id":"1","event":"request","decision":"maybe"}"#
        )
        .is_err());
    }

    #[test]
    fn verdict_parses_case_insensitively_and_rejects_others() {
        assert_eq!("DENY".parse::<Verdict>().unwrap(), Verdict::Deny);
        assert_eq!("allow".parse::<Verdict>().unwrap(), Verdict::Allow);
        assert!("approve"
            .parse::<Verdict>()
            .unwrap_err()
            .to_string()
            .contains("approve"));
    }
}
