//! The decision record: one JSON line per request and per task/credential
//! lifecycle event.
//!
//! Field names are a public contract: reviewers filter the log with `jq`, so
//! every field is always present (`null` or empty when it does not apply or
//! is not known), except `message`, which is left out when there is none. Nothing in a record is ever a secret value:
//! credentials appear by id and fingerprint only, paths never carry the query.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::decimal::Decimal;
use crate::reason::Reason;
use crate::secret::random_bytes;

mod json;

pub(crate) use json::SharedJson;

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
    /// A request needed a person's approval, and a pending approval was made.
    #[serde(rename = "approval.request")]
    ApprovalRequest,
    /// An approval was granted (by every approver it needs).
    #[serde(rename = "approval.grant")]
    ApprovalGrant,
    /// An approval was denied.
    #[serde(rename = "approval.deny")]
    ApprovalDeny,
    /// A pending approval was not answered in time, or its task ended.
    #[serde(rename = "approval.expire")]
    ApprovalExpire,
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
            Event::ApprovalRequest => "approval.request",
            Event::ApprovalGrant => "approval.grant",
            Event::ApprovalDeny => "approval.deny",
            Event::ApprovalExpire => "approval.expire",
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
///
/// `challenge` is the one outcome that is neither: a request without
/// `Proxy-Authorization` that was answered with a 407 and followed, on the
/// same connection, by one that authenticated. That is how libcurl (git,
/// `curl --proxy-anyauth`) and Java find out which scheme a proxy wants, so
/// it is no refusal a reviewer has to look at. A missing token that is not
/// followed up that way stays a deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The request was forwarded.
    Allow,
    /// The request was refused; `reason` says why.
    Deny,
    /// A request without credentials answered with a 407 that the client
    /// followed with an authenticated request on the same connection.
    Challenge,
}

impl Verdict {
    /// `"allow"`, `"deny"` or `"challenge"`, as in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Challenge => "challenge",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned when a word is not `allow`, `deny` or `challenge`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a decision (expected \"allow\", \"deny\" or \"challenge\")")]
pub struct VerdictParseError(String);

impl FromStr for Verdict {
    type Err = VerdictParseError;

    /// Accepts `allow` / `deny` / `challenge` in any case, for the command line.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Verdict::Allow, Verdict::Deny, Verdict::Challenge]
            .into_iter()
            .find(|v| text.eq_ignore_ascii_case(v.as_str()))
            .ok_or_else(|| VerdictParseError(text.to_string()))
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

/// What a WebSocket relayed, on the record of the upgrade that opened it
/// (written when the socket closes). "In" is from the agent, "out" is to
/// the agent, as for `bytes_in`/`bytes_out`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSocketInfo {
    /// Frames received from the agent.
    #[serde(default)]
    pub frames_in: u64,
    /// Frames sent to the agent.
    #[serde(default)]
    pub frames_out: u64,
    /// Payload bytes received from the agent.
    #[serde(default)]
    pub bytes_in: u64,
    /// Payload bytes sent to the agent.
    #[serde(default)]
    pub bytes_out: u64,
    /// The close code the socket ended with (sent or relayed by credgate),
    /// when there was a closing handshake.
    #[serde(default)]
    pub close_code: Option<u16>,
}

/// The approval a request needed, or an approval event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalInfo {
    /// `apr-` and 32 hex digits.
    pub id: String,
    /// `pending`, `granted`, `denied` or `expired`.
    pub state: String,
    /// Who approved it (a denial names its approver here too).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// What the grant covers: `request`, `task` or a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
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
    /// The task's labels (ticket, env, …), shared with the task.
    #[serde(default)]
    pub labels: Arc<BTreeMap<String, String>>,
    /// The request method (borrowed for the standard ones).
    #[serde(default)]
    pub method: Option<Cow<'static, str>>,
    /// `http` or `https` (the scheme the agent used).
    #[serde(default)]
    pub scheme: Option<Cow<'static, str>>,
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
    /// The rule that decided, as `scope[index]` or the rule's name (shared
    /// with the rule).
    #[serde(default)]
    pub rule: Option<Arc<str>>,
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
    pub credential: Option<Arc<CredentialInfo>>,
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
    /// Set when the request switched to WebSocket: what the socket relayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketInfo>,
    /// The approval the request needed, or the approval event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalInfo>,
    /// Wall time from the start of the request to the record.
    #[serde(default)]
    pub duration_ms: u64,
}

/// A request method as a record holds it: the standard methods without a
/// copy, any other as its own string.
pub fn method_name(method: &str) -> Cow<'static, str> {
    Cow::Borrowed(match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        other => return Cow::Owned(other.to_owned()),
    })
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
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut out[0..4], u64::from(year));
    put_digits(&mut out[5..7], u64::from(month));
    put_digits(&mut out[8..10], u64::from(day));
    put_digits(&mut out[11..13], of_day / 3600);
    put_digits(&mut out[14..16], of_day / 60 % 60);
    put_digits(&mut out[17..19], of_day % 60);
    put_digits(&mut out[20..23], u64::from(millis));
    std::str::from_utf8(&out)
        .expect("only ASCII digits and punctuation were written")
        .to_owned()
}

/// Writes `value` as decimal digits filling `out`, zero-padded on the left.
fn put_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + u64::from(month <= 2)) as u32;
    (year, month, day)
}

/// How many record ids one refill of the thread's random buffer yields.
const IDS_PER_REFILL: usize = 64;

thread_local! {
    /// Random bytes from the CSPRNG, handed out eight at a time: one call
    /// into the generator per [`IDS_PER_REFILL`] records instead of one per
    /// record. Ids are public (they are in the log), so the buffer needs no
    /// zeroizing; each byte is used once.
    static ID_BYTES: std::cell::RefCell<([u8; 8 * IDS_PER_REFILL], usize)> =
        const { std::cell::RefCell::new(([0; 8 * IDS_PER_REFILL], 8 * IDS_PER_REFILL)) };
}

/// 16 lowercase hex digits from the CSPRNG: unique enough that two records
/// never share an id, unguessable so ids cannot be forged into a log.
pub fn new_record_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 8] = ID_BYTES.with_borrow_mut(|(buf, used)| {
        if *used == buf.len() {
            *buf = random_bytes::<{ 8 * IDS_PER_REFILL }>();
            *used = 0;
        }
        let mut next = [0u8; 8];
        next.copy_from_slice(&buf[*used..*used + 8]);
        *used += 8;
        next
    });
    let mut id = [0u8; 16];
    for (i, byte) in bytes.iter().enumerate() {
        id[2 * i] = HEX[usize::from(byte >> 4)];
        id[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
    }
    std::str::from_utf8(&id)
        .expect("only hex digits were written")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::json::json_str;
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
    fn timestamp_agrees_with_humantime_across_the_calendar() {
        // Leap days, century rules, month and year ends, the far future.
        let mut ms: u64 = 0;
        let mut step: u64 = 1;
        while ms <= 253_402_300_799_999 {
            let t = at(ms);
            assert_eq!(
                format_timestamp(t),
                humantime::format_rfc3339_millis(t).to_string(),
                "{ms}"
            );
            ms += step;
            step = step * 3 / 2 + 86_399_999;
        }
        for day in [
            "2000-02-29T23:59:59.999Z",
            "2100-03-01T00:00:00.000Z",
            "2024-12-31T12:00:00.500Z",
            "1999-12-31T23:59:59.001Z",
        ] {
            let t = humantime::parse_rfc3339(day).unwrap();
            assert_eq!(format_timestamp(t), day);
        }
    }

    #[test]
    fn ids_stay_distinct_across_refills_and_threads() {
        let mut ids: std::collections::HashSet<String> =
            (0..IDS_PER_REFILL * 5).map(|_| new_record_id()).collect();
        let other = std::thread::spawn(|| {
            (0..IDS_PER_REFILL * 2)
                .map(|_| new_record_id())
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        ids.extend(other);
        assert_eq!(ids.len(), IDS_PER_REFILL * 7);
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
        Arc::make_mut(&mut r.labels).insert("ticket".into(), "OPS-1".into());
        r.decision = Some(Verdict::Deny);
        r.reason = Some(Reason::NoMatchingRule);
        r.stripped = vec!["authorization".into()];
        r.credential = Some(Arc::new(CredentialInfo {
            source: "github_app".into(),
            name: "github".into(),
            id: "cred-1".into(),
            fingerprint: "sha256:0123456789ab".into(),
            expires_at: Some("2026-11-23T15:05:01.000Z".into()),
            cache: Some(CacheOutcome::Hit),
            standing: false,
        }));
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

    /// The hand-written encoder must produce serde_json's bytes exactly.
    fn assert_same_json(r: &DecisionRecord) {
        let mut line = Vec::new();
        r.write_json_line(&mut line, &mut SharedJson::default());
        let mut expected = serde_json::to_vec(r).unwrap();
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8(line).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn every_byte_at_every_offset_is_escaped_as_serde_json_does() {
        // The word-at-a-time check must see each byte wherever it falls.
        for byte in 0u8..0x80 {
            for at in 0..19 {
                let mut text = "a".repeat(19);
                text.replace_range(at..=at, char::from(byte).encode_utf8(&mut [0; 4]));
                let mut out = Vec::new();
                json_str(&mut out, &text);
                assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{byte:#x} at {at}");
            }
        }
    }

    #[test]
    fn json_line_is_what_serde_json_writes() {
        assert_same_json(&DecisionRecord::request(at(0)));
        assert_same_json(&DecisionRecord::default());
        let awkward: String = (0u8..0x80).map(char::from).collect::<String>()
            + "\u{7f}é\u{2028}\u{1F600}</script>\\\"";
        for event in [
            Event::Request,
            Event::TaskStart,
            Event::TaskEnd,
            Event::CredentialIssue,
            Event::CredentialRevoke,
        ] {
            let mut r = DecisionRecord::event(event, at(1_795_442_701_123));
            r.task = Some("task-3f2a".into());
            r.agent = Some(awkward.clone());
            Arc::make_mut(&mut r.labels).insert("ticket".into(), "OPS-1".into());
            Arc::make_mut(&mut r.labels).insert(awkward.clone(), awkward.clone());
            Arc::make_mut(&mut r.labels).insert(String::new(), String::new());
            r.method = Some("GET".into());
            r.scheme = Some("https".into());
            r.host = Some("api.example.com".into());
            r.port = Some(u16::MAX);
            r.path = Some(awkward.clone());
            r.decision = Some(Verdict::Allow);
            r.rule = Some("scope[0]".into());
            r.reason = Some(Reason::UpstreamTlsFailed);
            r.message = Some(awkward.clone());
            r.stripped = vec!["authorization".into(), awkward.clone()];
            r.findings = vec!["aws-key".into()];
            r.tunnel = true;
            r.bytes_in = u64::MAX;
            r.bytes_out = 10;
            r.scrubbed = 1;
            r.duration_ms = 1234;
            assert_same_json(&r);
            r.websocket = Some(WebSocketInfo {
                frames_in: 3,
                frames_out: u64::MAX,
                bytes_in: 0,
                bytes_out: 17,
                close_code: Some(1000),
            });
            assert_same_json(&r);
            r.websocket = Some(WebSocketInfo::default());
            assert_same_json(&r);
            for grant in [None, Some(awkward.clone())] {
                r.approval = Some(ApprovalInfo {
                    id: "apr-0123".into(),
                    state: "granted".into(),
                    approvers: vec!["alice".into(), awkward.clone()],
                    grant,
                });
                assert_same_json(&r);
            }
            r.approval = Some(ApprovalInfo::default());
            assert_same_json(&r);
            for cache in [None, Some(CacheOutcome::Hit), Some(CacheOutcome::Miss)] {
                r.credential = Some(Arc::new(CredentialInfo {
                    source: "github_app".into(),
                    name: awkward.clone(),
                    id: "cred-1".into(),
                    fingerprint: "sha256:0123456789ab".into(),
                    expires_at: cache.map(|_| "2026-11-23T15:05:01.000Z".into()),
                    cache,
                    standing: cache.is_none(),
                }));
                r.upstream = Some(UpstreamInfo {
                    status: cache.map(|_| 200),
                    ms: Some(0),
                });
                r.decision = Some(Verdict::Deny);
                assert_same_json(&r);
            }
            r.message = None;
            r.credential = Some(Arc::new(CredentialInfo::default()));
            r.upstream = Some(UpstreamInfo::default());
            assert_same_json(&r);
        }
    }

    #[test]
    fn a_method_keeps_its_name_whether_standard_or_not() {
        for (name, standard) in [
            ("GET", true),
            ("POST", true),
            ("CONNECT", true),
            ("get", false),
            ("PROPFIND", false),
        ] {
            let method = http::Method::from_bytes(name.as_bytes()).unwrap();
            let recorded = method_name(method.as_str());
            assert_eq!(recorded, name);
            assert_eq!(matches!(recorded, Cow::Borrowed(_)), standard, "{name}");
        }
    }

    #[test]
    fn records_written_in_turn_reuse_only_what_they_share() {
        fn credential(name: &str, cache: Option<CacheOutcome>) -> Arc<CredentialInfo> {
            Arc::new(CredentialInfo {
                source: "static".into(),
                name: name.into(),
                id: format!("cred-{name}"),
                fingerprint: "sha256:0123456789ab".into(),
                expires_at: None,
                cache,
                standing: false,
            })
        }
        fn labels(value: &str) -> Arc<BTreeMap<String, String>> {
            Arc::new(BTreeMap::from([("ticket".to_string(), value.to_string())]))
        }
        let hit = credential("github", Some(CacheOutcome::Hit));
        let ops1 = labels("OPS-1");
        let mut records = Vec::new();
        for (labels, credential) in [
            (Arc::clone(&ops1), Some(Arc::clone(&hit))),
            (Arc::clone(&ops1), Some(Arc::clone(&hit))),
            // Equal contents behind another Arc, then other contents.
            (
                labels("OPS-1"),
                Some(credential("github", Some(CacheOutcome::Hit))),
            ),
            (
                labels("OPS-2"),
                Some(credential("github", Some(CacheOutcome::Miss))),
            ),
            (Arc::default(), None),
            (Arc::clone(&ops1), Some(Arc::clone(&hit))),
        ] {
            let mut r = DecisionRecord::request(at(1_795_442_701_123));
            r.labels = labels;
            r.credential = credential;
            records.push(r);
        }
        // Values that live only as long as their record: each is freed before
        // the next is made, so a new one may land at the same address.
        for n in 0..8 {
            let mut r = DecisionRecord::request(at(1_795_442_701_123));
            r.labels = labels(&format!("OPS-{n}"));
            r.credential = Some(credential(&format!("c{n}"), None));
            records.push(r);
        }
        let mut shared = SharedJson::default();
        for r in records {
            let mut line = Vec::new();
            r.write_json_line(&mut line, &mut shared);
            let mut expected = serde_json::to_vec(&r).unwrap();
            expected.push(b'\n');
            drop(r);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
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
    fn a_challenge_is_written_and_read_as_its_own_decision() {
        for v in [Verdict::Allow, Verdict::Deny, Verdict::Challenge] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
        }
    }

    #[test]
    fn verdict_parses_case_insensitively_and_rejects_others() {
        assert_eq!("DENY".parse::<Verdict>().unwrap(), Verdict::Deny);
        assert_eq!("allow".parse::<Verdict>().unwrap(), Verdict::Allow);
        assert_eq!("Challenge".parse::<Verdict>().unwrap(), Verdict::Challenge);
        assert!("approve"
            .parse::<Verdict>()
            .unwrap_err()
            .to_string()
            .contains("approve"));
    }
}
