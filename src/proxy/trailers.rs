//! Response trailers: fields an upstream sends after the body (gRPC's
//! `grpc-status` and `grpc-message`, checksums, timings).
//!
//! They carry values like headers do, so they are scrubbed like headers,
//! by the same scrubbers (every credential in play, the task's token). A
//! trailer never carries a name that frames, routes or authenticates the
//! message (RFC 9110 §6.5.1): those are dropped, whatever the upstream
//! says. The agent gets trailers when it can read them: always on HTTP/2,
//! on HTTP/1.1 only when it sent `TE: trailers` (they then follow the last
//! chunk); otherwise they are dropped.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use http::{request, Version};

use crate::scrub::{scrub_headers_with, Scrubber};

/// Names never forwarded as trailers: hop-by-hop and framing fields, and
/// fields whose meaning a trailer would change after the fact.
const NEVER_TRAILERS: [HeaderName; 21] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
    header::CONTENT_RANGE,
    header::HOST,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::WWW_AUTHENTICATE,
    header::SET_COOKIE,
    header::COOKIE,
    header::CACHE_CONTROL,
    header::LOCATION,
    header::EXPECT,
];

/// Whether the agent that sent `parts` reads trailers: HTTP/2 always does,
/// HTTP/1.1 when its `TE` lists `trailers`. Read before `TE` is stripped.
pub(crate) fn agent_takes_trailers(parts: &request::Parts) -> bool {
    parts.version == Version::HTTP_2
        || parts
            .headers
            .get_all(header::TE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|t| {
                t.split(|b| *b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii()
            })
            .any(|t| t.eq_ignore_ascii_case(b"trailers"))
}

/// How a response's trailers are cleaned before they go to the agent.
pub(crate) struct TrailerScrub {
    scrubbers: Vec<Arc<Scrubber>>,
}

impl TrailerScrub {
    /// Scrubs with `scrubbers`, the ones the response headers went through.
    pub(crate) fn new(scrubbers: Vec<Arc<Scrubber>>) -> Self {
        TrailerScrub { scrubbers }
    }

    /// Drops the names no trailer may carry and masks every secret in the
    /// rest; returns how many occurrences were masked.
    pub(crate) fn clean(&self, trailers: &mut HeaderMap) -> usize {
        for name in &NEVER_TRAILERS {
            trailers.remove(name);
        }
        scrub_headers_with(self.scrubbers.iter().map(|s| &**s), trailers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parts(version: Version, te: Option<&'static str>) -> request::Parts {
        let mut request = http::Request::new(());
        *request.version_mut() = version;
        if let Some(te) = te {
            request
                .headers_mut()
                .insert(header::TE, HeaderValue::from_static(te));
        }
        request.into_parts().0
    }

    #[test]
    fn an_agent_takes_trailers_on_h2_or_when_it_says_so() {
        assert!(agent_takes_trailers(&parts(Version::HTTP_2, None)));
        assert!(agent_takes_trailers(&parts(
            Version::HTTP_11,
            Some("trailers")
        )));
        assert!(agent_takes_trailers(&parts(
            Version::HTTP_11,
            Some("gzip;q=0.5, Trailers")
        )));
        assert!(!agent_takes_trailers(&parts(Version::HTTP_11, None)));
        assert!(!agent_takes_trailers(&parts(
            Version::HTTP_11,
            Some("gzip")
        )));
    }

    #[test]
    fn trailers_lose_framing_names_and_secrets() {
        let secret = "test-secret-trailer-value-0123456789";
        let scrub = TrailerScrub::new(vec![Arc::new(Scrubber::compact([secret.as_bytes()]))]);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert(
            "grpc-message",
            HeaderValue::from_str(&format!("saw Bearer {secret}")).unwrap(),
        );
        trailers.insert("content-length", HeaderValue::from_static("5"));
        trailers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        trailers.insert("set-cookie", HeaderValue::from_static("a=b"));
        assert_eq!(scrub.clean(&mut trailers), 1);
        let mut names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["grpc-message", "grpc-status"]);
        let message = trailers["grpc-message"].to_str().unwrap();
        assert!(
            message.starts_with("saw Bearer ") && !message.contains(secret),
            "{message}"
        );
    }
}
