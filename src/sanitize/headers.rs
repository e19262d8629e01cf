//! Which request headers never leave credgate: hop-by-hop headers, whatever
//! `Connection` names, and the configured secret-bearing headers.

use http::header::{self, HeaderMap, HeaderName};

use crate::field::FieldError;

/// The secret-bearing headers stripped when `strip_headers` is not given.
///
/// - `authorization`, `proxy-authorization`, `cookie`: the standard carriers.
/// - `x-api-key` (Anthropic, AWS API Gateway, many SaaS), `api-key` (Azure
///   OpenAI), `x-auth-token` (OpenStack and others).
/// - `x-amz-*`: AWS SigV4 signing headers and `x-amz-security-token`; a
///   request credgate signs is re-signed from scratch anyway.
/// - `x-goog-api-key` (Google APIs), `ocp-apim-subscription-key` (Azure API
///   Management), `private-token` and `job-token` (GitLab), `x-vault-token`
///   (Vault/OpenBao), `x-access-token`, `x-functions-key` (Azure Functions),
///   `dd-api-key` and `dd-application-key` (Datadog).
pub(crate) const DEFAULT_STRIP: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
    "x-amz-*",
    "api-key",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
    "private-token",
    "job-token",
    "x-vault-token",
    "x-access-token",
    "x-functions-key",
    "dd-api-key",
    "dd-application-key",
];

/// Headers that describe one connection and must not be forwarded
/// (RFC 9110 §7.6.1), plus the proxy's own authentication headers.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Headers that make an upstream act on another method or path than the one
/// the rule matched (method-override middleware, IIS/Symfony URL rewriting).
/// Always removed: a rule that allows `POST /upload` must not become a
/// `DELETE` or another path behind the proxy's back.
const REINTERPRETING: [HeaderName; 5] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// The compiled strip list: exact names and `prefix*` wildcards.
#[derive(Debug, Clone)]
pub(crate) struct StripList {
    /// A few dozen names at most: a scan compares fewer bytes than hashing
    /// every header name of every request would.
    exact: Vec<HeaderName>,
    prefixes: Vec<Box<str>>,
    /// Every name removed by exact match (the list, [`HOP_BY_HOP`],
    /// [`REINTERPRETING`]), by length and first byte: most names of a
    /// request match none, and are let through without a comparison.
    exact_shapes: Shapes,
}

impl Default for StripList {
    fn default() -> StripList {
        let mut exact_shapes = Shapes::default();
        for name in HOP_BY_HOP.iter().chain(&REINTERPRETING) {
            exact_shapes.insert(name);
        }
        StripList {
            exact: Vec::new(),
            prefixes: Vec::new(),
            exact_shapes,
        }
    }
}

/// A set of (length, first byte) pairs, as 256 bits: may say yes for a name
/// that is not in it, never no for one that is.
#[derive(Debug, Clone, Copy, Default)]
struct Shapes([u64; 4]);

impl Shapes {
    fn bit(name: &HeaderName) -> usize {
        let name = name.as_str().as_bytes();
        let first = name.first().copied().unwrap_or(0);
        (name.len().wrapping_mul(31) ^ usize::from(first)) & 255
    }

    fn insert(&mut self, name: &HeaderName) {
        let bit = Shapes::bit(name);
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn may_contain(&self, name: &HeaderName) -> bool {
        let bit = Shapes::bit(name);
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }
}

impl StripList {
    /// Compiles `strip` (the default list when `None`) plus `also`. Error
    /// paths are `strip_headers[i]` / `also_strip_headers[i]`.
    pub(crate) fn compile(
        strip: Option<&[String]>,
        also: &[String],
    ) -> Result<StripList, Vec<FieldError>> {
        let mut list = StripList::default();
        let mut errors = Vec::new();
        let base: Vec<(String, &str)> = match strip {
            Some(given) => given
                .iter()
                .enumerate()
                .map(|(i, entry)| (format!("strip_headers[{i}]"), entry.as_str()))
                .collect(),
            None => DEFAULT_STRIP
                .iter()
                .map(|entry| (String::new(), *entry))
                .collect(),
        };
        let added = also
            .iter()
            .enumerate()
            .map(|(i, entry)| (format!("also_strip_headers[{i}]"), entry.as_str()));
        for (path, entry) in base.into_iter().chain(added) {
            if let Err(message) = list.add(entry) {
                errors.push(FieldError::new(path, message));
            }
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    fn add(&mut self, entry: &str) -> Result<(), String> {
        let entry = entry.trim().to_ascii_lowercase();
        let (name, wildcard) = match entry.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (entry.as_str(), false),
        };
        if entry.is_empty() {
            return Err("is empty; name a header such as \"x-api-key\"".into());
        }
        if wildcard && name.is_empty() {
            return Err("\"*\" would strip every header; use a prefix such as \"x-amz-*\"".into());
        }
        if name.contains('*') {
            return Err(format!(
                "{entry:?}: '*' is only allowed at the end, as a prefix wildcard"
            ));
        }
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{entry:?} is not a valid header name"))?;
        if wildcard {
            if !self.prefixes.iter().any(|p| **p == *name) {
                self.prefixes.push(name.into());
            }
        } else if !self.exact.contains(&parsed) {
            self.exact_shapes.insert(&parsed);
            self.exact.push(parsed);
        }
        Ok(())
    }

    fn matches_prefix(&self, name: &HeaderName) -> bool {
        self.prefixes
            .iter()
            .any(|prefix| name.as_str().starts_with(&**prefix))
    }

    /// Removes hop-by-hop headers, every header a `Connection` header names,
    /// and every listed header. Returns the removed names, sorted, unique.
    pub(crate) fn strip(&self, headers: &mut HeaderMap) -> Vec<String> {
        // One pass over the names present: most requests carry a handful of
        // headers and few of them go, so asking the map about every name
        // that might be doomed costs more than looking at what is there.
        let has_connection = headers.contains_key(header::CONNECTION);
        let mut doomed: Vec<String> = headers
            .keys()
            .filter(|name| {
                (self.exact_shapes.may_contain(name)
                    && (HOP_BY_HOP.contains(name)
                        || REINTERPRETING.contains(name)
                        || self.exact.contains(name)))
                    || self.matches_prefix(name)
                    || (has_connection && named_by_connection(headers, name))
            })
            .map(|name| name.as_str().to_owned())
            .collect();
        doomed.sort_unstable();
        for name in &doomed {
            headers.remove(name.as_str());
        }
        doomed
    }
}

/// Whether a `Connection` header lists `name` (header names are
/// case-insensitive; `name` is already lowercase).
fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|option| {
            option
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_str().as_bytes())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_and_url_override_headers_are_always_removed() {
        let list = StripList::compile(Some(&[]), &[]).unwrap();
        let mut headers = HeaderMap::new();
        for name in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x-rewrite-url",
        ] {
            headers.insert(HeaderName::from_static(name), "DELETE".parse().unwrap());
        }
        headers.insert("accept", "*/*".parse().unwrap());
        let removed = list.strip(&mut headers);
        assert_eq!(removed.len(), 5, "{removed:?}");
        assert_eq!(headers.len(), 1);
    }
    use http::HeaderValue;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn default_list_strips_the_usual_carriers_and_keeps_the_rest() {
        let list = StripList::compile(None, &[]).unwrap();
        let mut headers = map(&[
            ("Authorization", "Bearer test-secret-1"),
            ("Cookie", "session=test-secret-2"),
            ("X-Amz-Security-Token", "test-secret-3"),
            ("x-amz-date", "20240101T000000Z"),
            ("X-Goog-Api-Key", "test-secret-4"),
            ("Accept", "application/json"),
            ("User-Agent", "agent/1.0"),
        ]);
        let removed = list.strip(&mut headers);
        assert_eq!(
            removed,
            strings(&[
                "authorization",
                "cookie",
                "x-amz-date",
                "x-amz-security-token",
                "x-goog-api-key"
            ])
        );
        assert_eq!(headers.len(), 2);
        assert!(headers.contains_key("accept") && headers.contains_key("user-agent"));
    }

    #[test]
    fn every_listed_name_goes_and_a_name_of_the_same_shape_stays() {
        let list = StripList::compile(None, &strings(&["x-team-key"])).unwrap();
        let fixed: Vec<HeaderName> = HOP_BY_HOP.iter().chain(&REINTERPRETING).cloned().collect();
        let exact = DEFAULT_STRIP
            .iter()
            .copied()
            .filter(|name| !name.ends_with('*'))
            .chain(fixed.iter().map(HeaderName::as_str))
            .chain(["x-team-key"]);
        for name in exact {
            // Same length and first byte, on no list.
            let twin = format!("{}{}", &name[..1], "q".repeat(name.len() - 1));
            let mut headers = map(&[(name, "test-secret"), (&twin, "kept")]);
            assert_eq!(list.strip(&mut headers), strings(&[name]), "{name}");
            assert!(headers.contains_key(twin.as_str()), "{twin}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go_too() {
        let list = StripList::compile(Some(&[]), &[]).unwrap();
        let mut headers = map(&[
            ("Connection", "keep-alive, X-Smuggled ,x-other"),
            ("Connection", "X-Third"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic dGVzdC1zZWNyZXQ="),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("x-smuggled", "1"),
            ("X-Other", "2"),
            ("x-third", "3"),
            ("x-kept", "4"),
        ]);
        let removed = list.strip(&mut headers);
        assert_eq!(
            removed,
            strings(&[
                "connection",
                "keep-alive",
                "proxy-authorization",
                "proxy-connection",
                "te",
                "upgrade",
                "x-other",
                "x-smuggled",
                "x-third"
            ])
        );
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    #[test]
    fn connection_options_match_names_case_insensitively_and_only_whole() {
        let list = StripList::compile(Some(&[]), &[]).unwrap();
        let mut headers = map(&[
            ("Connection", "X-UPPER,, x-part , bad name, x-é"),
            ("x-upper", "1"),
            ("x-part", "2"),
            ("x-partial", "3"),
            ("x-pa", "4"),
        ]);
        let removed = list.strip(&mut headers);
        assert_eq!(removed, strings(&["connection", "x-part", "x-upper"]));
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn every_value_of_a_repeated_header_is_removed() {
        let list = StripList::compile(None, &[]).unwrap();
        let mut headers = map(&[("cookie", "a=test-secret"), ("cookie", "b=test-secret")]);
        assert_eq!(list.strip(&mut headers), strings(&["cookie"]));
        assert!(headers.is_empty());
    }

    #[test]
    fn a_given_list_replaces_the_default_and_also_adds() {
        let list = StripList::compile(
            Some(&strings(&["X-Team-Key", "x-corp-*"])),
            &strings(&["x-my-secret"]),
        )
        .unwrap();
        let mut headers = map(&[
            ("authorization", "Bearer kept-because-not-listed"),
            ("x-team-key", "test-secret"),
            ("x-corp-anything", "test-secret"),
            ("x-my-secret", "test-secret"),
            ("x-corporate", "kept"),
        ]);
        let removed = list.strip(&mut headers);
        assert_eq!(
            removed,
            strings(&["x-corp-anything", "x-my-secret", "x-team-key"])
        );
        assert!(headers.contains_key("authorization") && headers.contains_key("x-corporate"));
    }

    #[test]
    fn every_bad_entry_is_reported_with_its_path() {
        let errors = StripList::compile(
            Some(&strings(&["ok", "", "*", "x-*-y", "bad name"])),
            &strings(&["fine", "x(y"]),
        )
        .unwrap_err();
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "strip_headers[1]",
                "strip_headers[2]",
                "strip_headers[3]",
                "strip_headers[4]",
                "also_strip_headers[1]"
            ]
        );
    }
}
