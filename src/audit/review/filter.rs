//! Which records a review shows: `--task`, `--decision`, `--host`, `--since`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use super::ReviewError;
use crate::audit::record::{DecisionRecord, Verdict};
use crate::units::parse_duration;

/// `--since`: a duration back from now, or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Records newer than now minus this.
    Ago(Duration),
    /// Records at or after this time.
    At(SystemTime),
}

impl Since {
    /// The earliest record time that passes, evaluated against `now`.
    pub fn cutoff(self, now: SystemTime) -> SystemTime {
        match self {
            Since::Ago(ago) => now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH),
            Since::At(at) => at,
        }
    }
}

impl FromStr for Since {
    type Err = ReviewError;

    /// `10m`, `1h30m`; or `2026-11-23T14:00:00Z`, `…+02:00`, `2026-11-23`
    /// (a time without an offset is UTC, like the times the log shows).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let b = text.as_bytes();
        let looks_like_date = b.len() >= 10 && b[4] == b'-' && b[7] == b'-';
        if looks_like_date {
            parse_time(text)
                .map(Since::At)
                .ok_or_else(|| ReviewError::Since(text.to_string()))
        } else {
            parse_duration(text)
                .map(Since::Ago)
                .map_err(|_| ReviewError::Since(text.to_string()))
        }
    }
}

/// RFC 3339 with `Z`, a numeric offset or none (UTC); or a bare date.
fn parse_time(text: &str) -> Option<SystemTime> {
    if text.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")).ok();
    }
    let b = text.as_bytes();
    let n = b.len();
    let has_offset = n > 19 && matches!(b[n - 6], b'+' | b'-') && b[n - 3] == b':';
    if !has_offset {
        return humantime::parse_rfc3339_weak(text).ok();
    }
    let hours: u64 = text.get(n - 5..n - 3)?.parse().ok()?;
    let minutes: u64 = text.get(n - 2..)?.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339_weak(&text[..n - 6]).ok()?;
    let offset = Duration::from_secs(hours * 3600 + minutes * 60);
    // A time east of UTC (`+02:00`) is that much earlier in UTC.
    if b[n - 6] == b'+' {
        local.checked_sub(offset)
    } else {
        local.checked_add(offset)
    }
}

/// `--host`: one host, or every subdomain of a suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host (lowercase, no trailing dot).
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: any name ending in it,
    /// but not `example.com` itself.
    Subdomains(String),
}

impl FromStr for HostPattern {
    type Err = ReviewError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let refuse = || ReviewError::Host(text.to_string());
        let (pattern, name) = match host.strip_prefix("*.") {
            Some(rest) => (HostPattern::Subdomains(format!(".{rest}")), rest),
            None => (HostPattern::Exact(host.clone()), host.as_str()),
        };
        if name.is_empty() || name.contains('*') || name.contains(char::is_whitespace) {
            return Err(refuse());
        }
        Ok(pattern)
    }
}

impl HostPattern {
    /// Whether the record's `host` matches, ignoring case and a trailing dot.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        match self {
            HostPattern::Exact(want) => host.eq_ignore_ascii_case(want.as_bytes()),
            HostPattern::Subdomains(suffix) => {
                let suffix = suffix.as_bytes();
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// Which records a review shows. Every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this task id.
    pub task: Option<String>,
    /// Only this decision (lifecycle events have none, so they drop out).
    pub decision: Option<Verdict>,
    /// Only these hosts (lifecycle events have none, so they drop out).
    pub host: Option<HostPattern>,
    /// Only records that started at or after this time.
    pub since: Option<SystemTime>,
    /// Only records about an approval: approval events, and requests that
    /// needed one.
    pub approvals: bool,
}

impl Filter {
    /// Whether `record` passes. A record whose `ts` cannot be read fails a
    /// `since` condition rather than slipping through it.
    pub fn matches(&self, record: &DecisionRecord) -> bool {
        if self.approvals && record.approval.is_none() {
            return false;
        }
        if let Some(task) = &self.task {
            if record.task.as_deref() != Some(task.as_str()) {
                return false;
            }
        }
        if self.decision.is_some() && record.decision != self.decision {
            return false;
        }
        if let Some(pattern) = &self.host {
            if !record.host.as_deref().is_some_and(|h| pattern.matches(h)) {
                return false;
            }
        }
        if let Some(since) = self.since {
            match humantime::parse_rfc3339_weak(&record.ts) {
                Ok(ts) if ts >= since => {}
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn rec(ts: &str, task: &str, host: &str, decision: Verdict) -> DecisionRecord {
        DecisionRecord {
            ts: ts.into(),
            task: Some(task.into()),
            host: Some(host.into()),
            decision: Some(decision),
            ..DecisionRecord::default()
        }
    }

    #[test]
    fn since_accepts_durations_times_offsets_and_dates() {
        assert_eq!(
            "10m".parse::<Since>().unwrap(),
            Since::Ago(Duration::from_secs(600))
        );
        assert_eq!(
            "2026-11-23T14:05:01.123Z".parse::<Since>().unwrap(),
            Since::At(t("2026-11-23T14:05:01.123Z"))
        );
        assert_eq!(
            "2026-11-23T16:05:01+02:00".parse::<Since>().unwrap(),
            Since::At(t("2026-11-23T14:05:01Z"))
        );
        assert_eq!(
            "2026-11-23T09:05:01-05:00".parse::<Since>().unwrap(),
            Since::At(t("2026-11-23T14:05:01Z"))
        );
        assert_eq!(
            "2026-11-23".parse::<Since>().unwrap(),
            Since::At(t("2026-11-23T00:00:00Z"))
        );
        assert_eq!(
            "2026-11-23 14:05:01".parse::<Since>().unwrap(),
            Since::At(t("2026-11-23T14:05:01Z"))
        );
    }

    #[test]
    fn since_refuses_nonsense() {
        for bad in [
            "10",
            "soon",
            "2026-13-01",
            "2026-11-23T25:00:00Z",
            "2026-11-23T14:00:00+99:00",
            "",
        ] {
            assert!(bad.parse::<Since>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn since_cutoff_counts_back_from_now_and_never_underflows() {
        let now = t("2026-11-23T14:10:00Z");
        assert_eq!(
            Since::Ago(Duration::from_secs(600)).cutoff(now),
            t("2026-11-23T14:00:00Z")
        );
        assert_eq!(Since::Ago(Duration::MAX).cutoff(now), UNIX_EPOCH);
        assert_eq!(Since::At(now).cutoff(UNIX_EPOCH), now);
    }

    #[test]
    fn host_patterns_match_exactly_or_strict_subdomains_ignoring_case() {
        let exact: HostPattern = "API.GitHub.com".parse().unwrap();
        assert!(exact.matches("api.github.com"));
        assert!(exact.matches("api.github.com."));
        assert!(!exact.matches("evil-api.github.com"));
        assert!(!exact.matches("api.github.com.evil"));

        let wild: HostPattern = "*.github.com".parse().unwrap();
        assert!(wild.matches("api.github.com"));
        assert!(wild.matches("A.B.GITHUB.COM"));
        assert!(
            !wild.matches("github.com"),
            "the suffix itself is not a subdomain"
        );
        assert!(!wild.matches("evilgithub.com"));
        assert!(!wild.matches("github.com.evil"));
        assert!(
            !wild.matches("ü.github.co"),
            "non-ASCII hosts compare bytewise without panicking"
        );
    }

    #[test]
    fn host_patterns_refuse_what_they_cannot_mean() {
        for bad in ["", "*.", "*", "api.*.com", "**.github.com", "a b"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn filter_requires_every_condition() {
        let r = rec(
            "2026-11-23T14:05:01.123Z",
            "task-a",
            "api.github.com",
            Verdict::Deny,
        );
        assert!(Filter::default().matches(&r));
        let f = Filter {
            task: Some("task-a".into()),
            decision: Some(Verdict::Deny),
            host: Some("*.github.com".parse().unwrap()),
            since: Some(t("2026-11-23T14:05:01.123Z")),
            approvals: false,
        };
        assert!(f.matches(&r), "since is inclusive");
        assert!(!f.matches(&DecisionRecord {
            task: Some("task-b".into()),
            ..r.clone()
        }));
        assert!(!f.matches(&DecisionRecord {
            decision: Some(Verdict::Allow),
            ..r.clone()
        }));
        assert!(!f.matches(&DecisionRecord {
            host: Some("gitlab.com".into()),
            ..r.clone()
        }));
        assert!(!f.matches(&DecisionRecord {
            ts: "2026-11-23T14:05:01.122Z".into(),
            ..r.clone()
        }));
        let approvals = Filter {
            approvals: true,
            ..Filter::default()
        };
        assert!(!approvals.matches(&r));
        assert!(approvals.matches(&DecisionRecord {
            approval: Some(crate::audit::ApprovalInfo::default()),
            ..r.clone()
        }));
    }

    #[test]
    fn records_lacking_a_filtered_field_do_not_slip_through() {
        let lifecycle = DecisionRecord {
            ts: "2026-11-23T14:05:01.123Z".into(),
            ..DecisionRecord::default()
        };
        assert!(!Filter {
            decision: Some(Verdict::Deny),
            ..Filter::default()
        }
        .matches(&lifecycle));
        assert!(!Filter {
            host: Some("x.com".parse().unwrap()),
            ..Filter::default()
        }
        .matches(&lifecycle));
        assert!(!Filter {
            task: Some("t".into()),
            ..Filter::default()
        }
        .matches(&lifecycle));
        let garbled = DecisionRecord {
            ts: "yesterday".into(),
            ..DecisionRecord::default()
        };
        assert!(!Filter {
            since: Some(UNIX_EPOCH),
            ..Filter::default()
        }
        .matches(&garbled));
    }
}
