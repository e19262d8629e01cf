//! Setting a query parameter to a credential, replacing what the agent sent.

use http::uri::{PathAndQuery, Uri};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

/// RFC 3986 unreserved characters stay as they are; everything else is encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `uri` with every `param` removed from its query and `param=<token>` appended;
/// `None` when the result is not a valid URI.
pub fn with_param(uri: &Uri, param: &str, token: &[u8]) -> Option<Uri> {
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    let query = uri.query().unwrap_or("");
    let mut out =
        String::with_capacity(path.len() + query.len() + param.len() + token.len() * 3 + 3);
    out.push_str(path);
    out.push('?');
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        // Decoded and case-folded, so `API%5Fkey` cannot smuggle a second value
        // past an upstream that decodes or ignores case.
        if names_match(name, param) {
            continue;
        }
        out.push_str(pair);
        out.push('&');
    }
    out.push_str(param);
    out.push('=');
    out.extend(percent_encode(token, QUERY_VALUE));
    let out = Zeroizing::new(out);
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(out.as_str()).ok()?);
    Uri::from_parts(parts).ok()
}

/// Whether query name `raw` (as sent) decodes to `param`, ignoring ASCII case.
fn names_match(raw: &str, param: &str) -> bool {
    let mut decoded = percent_decode_str(raw);
    param
        .bytes()
        .all(|p| decoded.next().is_some_and(|b| b.eq_ignore_ascii_case(&p)))
        && decoded.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(uri: &str, token: &[u8]) -> String {
        with_param(&uri.parse().unwrap(), "api_key", token)
            .unwrap()
            .to_string()
    }

    #[test]
    fn appends_to_a_uri_without_query() {
        assert_eq!(
            set("/v1/reports", b"test-secret-1"),
            "/v1/reports?api_key=test-secret-1"
        );
        assert_eq!(
            set("https://api.example/v1", b"test-secret-1"),
            "https://api.example/v1?api_key=test-secret-1"
        );
        assert_eq!(
            set("http://api.example", b"t"),
            "http://api.example/?api_key=t"
        );
    }

    #[test]
    fn removes_every_spelling_the_agent_sent_and_keeps_the_rest() {
        assert_eq!(
            set(
                "/r?a=1&api_key=agent1&API_KEY=agent2&api%5Fkey=agent3&api_key&&b=2&api_keys=3",
                b"test-secret-2"
            ),
            "/r?a=1&b=2&api_keys=3&api_key=test-secret-2"
        );
    }

    #[test]
    fn encodes_the_token() {
        assert_eq!(
            set("/r", b"test secret&x=1+2/=#\xff"),
            "/r?api_key=test%20secret%26x%3D1%2B2%2F%3D%23%FF"
        );
    }

    #[test]
    fn name_matching() {
        assert!(names_match("api_key", "api_key"));
        assert!(names_match("Api%5fKey", "api_key"));
        assert!(!names_match("api_key2", "api_key"));
        assert!(!names_match("api_ke", "api_key"));
        assert!(!names_match("", "api_key"));
    }
}
