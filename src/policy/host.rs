//! Host names: one canonical spelling per destination, and the patterns
//! rules match them with.
//!
//! A rule and a request must agree on how a host is written, or a deny rule
//! can be sidestepped by spelling the same host differently (`EVIL.example`,
//! `evil.example.`, `ｅｖｉｌ.example`, `127.1`, `[::ffff:7f00:1]`). Every
//! host goes through [`normalize_host`] before it is compared.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::AsciiDenyList;

use super::target::write_host;
use super::TargetError;

/// Input longer than this is refused before any parsing, to bound the work.
const MAX_RAW_HOST: usize = 1024;
/// DNS limits on a name without its trailing dot.
const MAX_HOST: usize = 253;
const MAX_LABEL: usize = 63;

/// Returns the one canonical spelling of `raw`.
///
/// Lowercases, strips one trailing dot, converts Unicode labels to punycode
/// A-labels (UTS #46), turns `[::1]` or `::1` into `::1` and an IPv4-mapped
/// IPv6 address into its IPv4 form, so each destination has one spelling.
/// Refuses empty or over-long names, characters other than letters, digits,
/// hyphens and dots, empty labels, and numeric names that resolvers would
/// read as IPv4 but that are not a plain dotted quad (`127.1`, `0x7f.0.0.1`).
pub fn normalize_host(raw: &str) -> Result<String, TargetError> {
    if raw.is_empty() {
        return Err(TargetError::EmptyHost);
    }
    if raw.len() > MAX_RAW_HOST {
        return Err(TargetError::HostTooLong);
    }
    if is_canonical(raw.as_bytes()) {
        return Ok(raw.to_owned());
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(TargetError::InvalidIpLiteral)?;
        return normalize_ipv6(inner);
    }
    if raw.contains(':') {
        return normalize_ipv6(raw);
    }
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() {
        return Err(TargetError::EmptyHost);
    }
    // ASCII outside LDH is refused before IDNA sees it, so the error names the
    // real problem and no mapping can turn it into something acceptable.
    if name
        .bytes()
        .any(|b| b.is_ascii() && !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return Err(TargetError::InvalidHostChar);
    }
    let ascii = if name.is_ascii() && !has_punycode_label(name) {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_cow(name.as_bytes(), AsciiDenyList::STD3)
            .map_err(|_| TargetError::InvalidIdn)?
            .into_owned()
    };
    check_ldh(&ascii)?;
    if last_label_is_numeric(&ascii) {
        // Resolvers accept `127.1`, `0x7f.1` and `2130706433` as IPv4; only
        // the dotted-quad form is let through, in its canonical spelling.
        let addr = ascii
            .parse::<Ipv4Addr>()
            .map_err(|_| TargetError::AmbiguousNumericHost)?;
        // Usually the name already is the canonical spelling; then it is
        // kept rather than formatted anew.
        if is_canonical_dotted_quad(&ascii) {
            return Ok(ascii);
        }
        return Ok(addr.to_string());
    }
    Ok(ascii)
}

/// Whether `raw` already is what [`normalize_host`] would return, checked in
/// one pass: the usual request names a host the way it is meant to be
/// written. True for lowercase LDH labels of DNS lengths with no punycode
/// label and a last label that is not numeric, and for a dotted quad in its
/// canonical spelling; anything else takes the full path.
fn is_canonical(raw: &[u8]) -> bool {
    if raw.len() > MAX_HOST {
        return false;
    }
    let mut labels = 0;
    let mut quad = true; // every label so far is a canonical IPv4 octet
    let mut last: &[u8] = &[];
    for label in raw.split(|b| *b == b'.') {
        if label.is_empty() || label.len() > MAX_LABEL || label.starts_with(b"xn--") {
            return false;
        }
        let mut digits = true;
        for &b in label {
            if b.is_ascii_digit() {
                continue;
            }
            if !(b.is_ascii_lowercase() || b == b'-') {
                return false;
            }
            digits = false;
        }
        quad &= digits
            && label.len() <= 3
            && (label.len() == 1 || label[0] != b'0')
            && label.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')) <= 255;
        labels += 1;
        last = label;
    }
    let numeric = last.iter().all(u8::is_ascii_digit)
        || last
            .strip_prefix(b"0x")
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
    if numeric {
        quad && labels == 4
    } else {
        true
    }
}

/// Four decimal labels without leading zeros: how `Ipv4Addr` writes itself.
fn is_canonical_dotted_quad(name: &str) -> bool {
    let mut labels = 0;
    for label in name.split('.') {
        labels += 1;
        let canonical = match label.as_bytes() {
            [] => false,
            [b'0', _, ..] => false,
            digits => digits.len() <= 3 && digits.iter().all(u8::is_ascii_digit),
        };
        if !canonical {
            return false;
        }
    }
    labels == 4
}

fn normalize_ipv6(text: &str) -> Result<String, TargetError> {
    let addr: Ipv6Addr = text.parse().map_err(|_| TargetError::InvalidIpLiteral)?;
    // `::ffff:a.b.c.d` reaches the same machine as `a.b.c.d`; one spelling
    // means a rule written for either form covers both.
    Ok(match addr.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => addr.to_string(),
    })
}

fn has_punycode_label(name: &str) -> bool {
    name.split('.')
        .any(|label| label.len() >= 4 && label[..4].eq_ignore_ascii_case("xn--"))
}

/// Checks the final ASCII form: LDH only, no empty labels, DNS lengths.
fn check_ldh(name: &str) -> Result<(), TargetError> {
    if name.is_empty() {
        return Err(TargetError::EmptyHost);
    }
    if name.len() > MAX_HOST {
        return Err(TargetError::HostTooLong);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(TargetError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(TargetError::HostTooLong);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(TargetError::InvalidHostChar);
        }
    }
    Ok(())
}

/// The WHATWG URL rule: a name whose last label is decimal or `0x` hex is an
/// IPv4 address, whatever else it looks like.
fn last_label_is_numeric(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or_default();
    if let Some(hex) = last.strip_prefix("0x") {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())
}

/// The host part of a rule: one exact host, or every subdomain of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this normalised host (a name or a canonical IP literal).
    Exact(Box<str>),
    /// `*.example.com`: one or more labels in front of `.example.com`. Holds
    /// the suffix with its leading dot; the apex itself does not match.
    Subdomains(Box<str>),
}

impl HostPattern {
    /// Compiles the `host` field of a rule. The error is a message for the
    /// operator, to be attached to the field path by the caller.
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        if let Some(base) = raw.strip_prefix("*.") {
            if base.contains('*') {
                return Err(wildcard_message());
            }
            let base = normalize_host(base).map_err(|e| format!("{raw:?}: {e}"))?;
            if base.parse::<IpAddr>().is_ok() {
                return Err(format!(
                    "{raw:?}: a wildcard applies to domain names, not IP addresses"
                ));
            }
            return Ok(HostPattern::Subdomains(format!(".{base}").into()));
        }
        if raw.contains('*') {
            return Err(wildcard_message());
        }
        normalize_host(raw)
            .map(|host| HostPattern::Exact(host.into()))
            .map_err(|e| format!("{raw:?}: {e}"))
    }

    /// `true` when `host` (normalised) is covered by this pattern.
    ///
    /// Tolerates a caller that forgot to lowercase or to drop a trailing dot,
    /// because an exact deny must not lose to a wildcard allow over spelling.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        match self {
            HostPattern::Exact(exact) => host.eq_ignore_ascii_case(exact.as_bytes()),
            HostPattern::Subdomains(suffix) => {
                let suffix = suffix.as_bytes();
                if host.len() <= suffix.len() {
                    return false;
                }
                let (prefix, tail) = host.split_at(host.len() - suffix.len());
                tail.eq_ignore_ascii_case(suffix) && !prefix.ends_with(b".")
            }
        }
    }

    /// The host when the pattern names exactly one, for indexing.
    pub fn exact(&self) -> Option<&str> {
        match self {
            HostPattern::Exact(host) => Some(host),
            HostPattern::Subdomains(_) => None,
        }
    }
}

fn wildcard_message() -> String {
    "\"*\" is only allowed as the whole first label, as in \"*.example.com\"".to_string()
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => {
                let mut out = String::with_capacity(host.len() + 2);
                write_host(&mut out, host);
                f.write_str(&out)
            }
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> String {
        normalize_host(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    #[test]
    fn the_canonical_shortcut_agrees_with_the_full_path() {
        for raw in ["127.0.0.1", "api.github.com", "a-b.example", "0.0.0.0", "x"] {
            assert!(is_canonical(raw.as_bytes()), "{raw:?}");
            assert_eq!(norm(raw), raw);
        }
        for raw in [
            "API.github.com",
            "example.",
            "127.1",
            "127.0.0.01",
            "256.0.0.1",
            "1.2.3.4.5",
            "a.0x1f",
            "a.0x",
            "xn--nxasmq6b.example",
            "a..b",
            "[::1]",
            "::1",
            "a_b.example",
        ] {
            assert!(!is_canonical(raw.as_bytes()), "{raw:?}");
        }
        // Whatever the shortcut takes, the full path returns unchanged.
        let alphabet = b"ab0129.-xnA:";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut taken = 0;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 16) as usize;
            let raw: String = (0..len)
                .map(|i| alphabet[((seed >> (4 + 3 * i)) % alphabet.len() as u64) as usize] as char)
                .collect();
            if is_canonical(raw.as_bytes()) {
                taken += 1;
                assert_eq!(normalize_host(&raw).as_deref(), Ok(raw.as_str()));
            }
        }
        assert!(taken > 1000, "the shortcut took {taken} names");
    }

    #[test]
    fn dotted_quads_come_back_as_ipv4addr_writes_them() {
        for raw in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.200",
            "255.255.255.255",
            "1.20.255.0",
        ] {
            let addr: Ipv4Addr = raw.parse().unwrap();
            assert_eq!(norm(raw), addr.to_string());
            assert!(is_canonical_dotted_quad(raw), "{raw}");
        }
        for raw in ["01.2.3.4", "1.2.3", "1.2.3.4.5", "1..3.4", "1.2.3.1000", ""] {
            assert!(!is_canonical_dotted_quad(raw), "{raw}");
        }
    }

    #[test]
    fn case_and_one_trailing_dot() {
        assert_eq!(norm("API.GitHub.COM"), "api.github.com");
        assert_eq!(norm("api.github.com."), "api.github.com");
        assert_eq!(
            normalize_host("api.github.com.."),
            Err(TargetError::EmptyLabel)
        );
        assert_eq!(normalize_host("."), Err(TargetError::EmptyHost));
        assert_eq!(normalize_host(""), Err(TargetError::EmptyHost));
    }

    #[test]
    fn idna_labels_become_punycode() {
        assert_eq!(norm("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(norm("BÜCHER.example"), "xn--bcher-kva.example");
        assert_eq!(norm("XN--BCHER-KVA.example"), "xn--bcher-kva.example");
        // Full-width letters and the ideographic full stop map to ASCII.
        assert_eq!(norm("ｅｖｉｌ。example"), "evil.example");
        assert_eq!(
            normalize_host("xn--a.example"),
            Err(TargetError::InvalidIdn)
        );
    }

    #[test]
    fn refuses_malformed_names() {
        for bad in [
            "a..b",
            ".a",
            "a b",
            "a_b.example",
            "a/b",
            "a%2eb",
            "a@b",
            "*.example.com",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(normalize_host("a b"), Err(TargetError::InvalidHostChar));
        let long_label = format!("{}.example", "a".repeat(64));
        assert_eq!(normalize_host(&long_label), Err(TargetError::HostTooLong));
        let long_name = ["abcdefghi"; 26].join(".");
        assert_eq!(normalize_host(&long_name), Err(TargetError::HostTooLong));
        assert!(normalize_host(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn ip_literals_have_one_spelling() {
        assert_eq!(norm("[::1]"), "::1");
        assert_eq!(norm("::1"), "::1");
        assert_eq!(norm("[0:0:0:0:0:0:0:1]"), "::1");
        assert_eq!(norm("[2001:DB8::A]"), "2001:db8::a");
        assert_eq!(norm("[::ffff:127.0.0.1]"), "127.0.0.1");
        assert_eq!(norm("[::ffff:7f00:1]"), "127.0.0.1");
        assert_eq!(norm("127.0.0.1"), "127.0.0.1");
        assert_eq!(norm("127.0.0.1."), "127.0.0.1");
        assert_eq!(normalize_host("[::1"), Err(TargetError::InvalidIpLiteral));
        assert_eq!(
            normalize_host("[fe80::1%25eth0]"),
            Err(TargetError::InvalidIpLiteral)
        );
        assert_eq!(
            normalize_host("example.com:443"),
            Err(TargetError::InvalidIpLiteral)
        );
        assert_eq!(
            normalize_host("[1.2.3.4]"),
            Err(TargetError::InvalidIpLiteral)
        );
    }

    #[test]
    fn numeric_shorthands_are_refused() {
        for bad in [
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "127.0.0.0x1",
            "0177.0.0.1",
            "127.0.0.01",
            "1.2.3.4.5",
            "foo.123",
        ] {
            assert_eq!(
                normalize_host(bad),
                Err(TargetError::AmbiguousNumericHost),
                "{bad:?}"
            );
        }
        // Numeric labels are fine anywhere but last.
        assert_eq!(norm("1.2.3.example"), "1.2.3.example");
        assert_eq!(norm("0x7f.example"), "0x7f.example");
        assert_eq!(norm("１２７.０.０.１"), "127.0.0.1");
    }

    #[test]
    fn normalisation_is_idempotent() {
        for raw in [
            "Bücher.Example.",
            "[::ffff:10.0.0.1]",
            "[2001:db8::1]",
            "a-b.c",
        ] {
            let once = norm(raw);
            assert_eq!(norm(&once), once);
        }
    }

    fn pattern(raw: &str) -> HostPattern {
        HostPattern::parse(raw).unwrap()
    }

    #[test]
    fn wildcard_matches_subdomains_not_apex() {
        let p = pattern("*.example.com");
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(p.matches("evil.com.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("example.com.evil.com"));
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches(".example.com"));
        assert!(!p.matches("a..example.com"));
        assert_eq!(p.to_string(), "*.example.com");
        assert_eq!(p.exact(), None);
    }

    #[test]
    fn exact_matches_only_itself_whatever_the_spelling() {
        let p = pattern("API.github.com.");
        assert_eq!(p.exact(), Some("api.github.com"));
        assert!(p.matches("api.github.com"));
        assert!(p.matches("API.GITHUB.COM"));
        assert!(p.matches("api.github.com."));
        assert!(!p.matches("api.github.com.evil"));
        assert!(!p.matches("xapi.github.com"));
        assert!(pattern("bücher.example").matches("xn--bcher-kva.example"));
    }

    #[test]
    fn ip_patterns() {
        let p = pattern("[::ffff:169.254.169.254]");
        assert_eq!(p.exact(), Some("169.254.169.254"));
        assert!(p.matches(&norm("169.254.169.254")));
        let v6 = pattern("[2001:db8::1]");
        assert_eq!(v6.to_string(), "[2001:db8::1]");
        assert!(v6.matches(&norm("[2001:0db8:0::1]")));
    }

    #[test]
    fn bad_patterns_are_explained() {
        for bad in [
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "**.example.com",
            "*.*.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = HostPattern::parse("*.10.0.0.1").unwrap_err();
        assert!(err.contains("IP"), "{err}");
        let err = HostPattern::parse("a.*.com").unwrap_err();
        assert!(err.contains("first label"), "{err}");
    }
}
