//! Interim responses: a `103 Early Hints` from the upstream reaches the agent
//! before the final response, so it can start fetching what the hints link.
//!
//! A 103 carries header fields like a response does, so its fields are
//! filtered and scrubbed like response headers: hop-by-hop fields (and any
//! `Connection` names) go, and every credential in play and the task's token
//! are masked, in all their encoded forms, by the scrubbers the final
//! response's headers go through. It is no response of its own: the decision
//! record stays the one for the final response.
//!
//! Only a 103 passes. A `100 Continue` answers credgate's own request (the
//! agent's `Expect` is answered by credgate, hop by hop), and `102
//! Processing` tells the agent nothing it can act on; both are consumed.
//! The upstream client bounds them all: more than [`MAX_INTERIM`] interim
//! responses before the final one end the exchange with a 502.
//!
//! Interim responses need both sides to carry them: an HTTP/1.1 upstream
//! (credgate's own client reads every head) and an HTTP/1.1 agent (credgate's
//! own codec writes them; never to an HTTP/1.0 agent, RFC 9110 §15.2). The
//! HTTP/2 client and server credgate uses (hyper's) neither hand over nor
//! send interim responses, so over HTTP/2 they are consumed.

use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use tokio::sync::mpsc;

use super::respond::strip_response_hop_by_hop;
use crate::scrub::{scrub_headers_with, Scrubber};

/// The most interim (1xx) responses one exchange may have before its final
/// response; the upstream client refuses more.
pub(crate) const MAX_INTERIM: usize = 8;

/// Where an agent's connection takes the early hints of one request. The
/// connection layer puts it in the request's extensions when the agent can
/// read them; the pipeline turns it into [`EarlyHints`].
#[derive(Clone)]
pub(crate) struct InterimSink(mpsc::Sender<HeaderMap>);

/// The cleaned early hints of one request, in the order they came, for the
/// agent's connection to write.
pub(crate) struct InterimQueue(mpsc::Receiver<HeaderMap>);

/// A sink for one request's early hints and the queue they come out of.
pub(crate) fn channel() -> (InterimSink, InterimQueue) {
    // Room for every interim response an exchange may have: passing one
    // never waits and never drops.
    let (tx, rx) = mpsc::channel(MAX_INTERIM);
    (InterimSink(tx), InterimQueue(rx))
}

impl InterimQueue {
    /// The next early hints' headers; `None` once the request is done with
    /// its sink.
    pub(crate) async fn next(&mut self) -> Option<HeaderMap> {
        self.0.recv().await
    }

    /// Early hints already passed and not yet taken.
    pub(crate) fn ready(&mut self) -> Option<HeaderMap> {
        self.0.try_recv().ok()
    }
}

/// Passes a request's early hints on to its agent, cleaned. Carried in the
/// extensions of the request credgate sends upstream, for the client that
/// reads the interim responses.
#[derive(Clone)]
pub(crate) struct EarlyHints {
    sink: InterimSink,
    scrubbers: Arc<[Arc<Scrubber>]>,
}

impl EarlyHints {
    /// Cleans with `scrubbers` (those of the final response's headers) and
    /// passes to `sink`.
    pub(crate) fn new(sink: InterimSink, scrubbers: Vec<Arc<Scrubber>>) -> Self {
        EarlyHints {
            sink,
            scrubbers: scrubbers.into(),
        }
    }

    /// Takes an interim response from the upstream: a 103 goes on to the
    /// agent cleaned, anything else is dropped. Never waits.
    pub(crate) fn offer(&self, response: Response<()>) {
        if response.status() != StatusCode::EARLY_HINTS {
            return;
        }
        let mut headers = response.into_parts().0.headers;
        clean(&self.scrubbers, &mut headers);
        // The queue holds as many as the client lets through, so this fails
        // only for an agent that has gone away, which needs no hints.
        let _ = self.sink.0.try_send(headers);
    }
}

/// Filters `headers` like response headers, then masks every secret in
/// them; returns how many occurrences were masked.
fn clean(scrubbers: &[Arc<Scrubber>], headers: &mut HeaderMap) -> usize {
    strip_response_hop_by_hop(headers);
    // An interim response has no body to frame.
    headers.remove(header::CONTENT_LENGTH);
    scrub_headers_with(scrubbers.iter().map(|s| &**s), headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use http::HeaderValue;

    const SECRET: &str = "test-secret-early-hints-0123456789";

    fn hints() -> (EarlyHints, InterimQueue) {
        let (sink, queue) = channel();
        let scrubber = Arc::new(Scrubber::new([SECRET.as_bytes()]));
        (EarlyHints::new(sink, vec![scrubber]), queue)
    }

    fn interim(status: u16, headers: &[(&'static str, String)]) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response
                .headers_mut()
                .append(*name, HeaderValue::from_str(value).unwrap());
        }
        response
    }

    #[test]
    fn early_hints_pass_filtered_and_scrubbed() {
        let (hints, mut queue) = hints();
        let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET);
        hints.offer(interim(
            103,
            &[
                ("link", "</style.css>; rel=preload; as=style".into()),
                ("x-echo", format!("Bearer {SECRET}")),
                ("x-echo-b64", encoded.clone()),
                ("connection", "x-hop".into()),
                ("x-hop", "1".into()),
                ("content-length", "0".into()),
            ],
        ));
        let headers = queue.ready().expect("a 103 passes");
        let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["link", "x-echo", "x-echo-b64"]);
        assert_eq!(headers["link"], "</style.css>; rel=preload; as=style");
        let echo = headers["x-echo"].to_str().unwrap();
        assert!(
            echo.starts_with("Bearer ") && !echo.contains(SECRET),
            "{echo}"
        );
        assert_ne!(headers["x-echo-b64"].to_str().unwrap(), encoded);
        assert!(queue.ready().is_none());
    }

    #[test]
    fn other_interim_responses_are_consumed() {
        let (hints, mut queue) = hints();
        for status in [100, 102, 199] {
            hints.offer(interim(status, &[("link", "</a.js>; rel=preload".into())]));
        }
        assert!(queue.ready().is_none());
    }

    #[test]
    fn an_agent_gone_leaves_the_hints_nowhere_to_go() {
        let (hints, queue) = hints();
        drop(queue);
        // Dropped without a word: the request goes on for its record.
        hints.offer(interim(103, &[("link", "</a.js>; rel=preload".into())]));
    }
}
