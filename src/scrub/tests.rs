//! The scrubber against the forms a credential takes in a response.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use http::{HeaderMap, HeaderValue};

use super::*;

const SECRET: &[u8] = b"test-secret-gh0+/Zq=";
const TOKEN: &[u8] = b"test-secret-task-token";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn scrubbed(scrubber: &Scrubber, text: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = text.to_vec();
    let count = scrubber.scrub_in_place(&mut buf);
    (buf, count)
}

/// Percent-encoding as RFC 3986 prescribes: everything but unreserved bytes.
fn percent(secret: &[u8], upper: bool) -> Vec<u8> {
    let mut out = String::new();
    for &b in secret {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out.into_bytes()
}

/// `secret` in every form the scrubber promises to catch.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut bearer = b"Authorization: Bearer ".to_vec();
    bearer.extend_from_slice(secret);
    let json = String::from_utf8(secret.to_vec())
        .unwrap()
        .replace('/', "\\/");
    vec![
        secret.to_vec(),
        STANDARD.encode(&bearer).into_bytes(),
        URL_SAFE.encode(&bearer[1..]).into_bytes(),
        URL_SAFE_NO_PAD.encode(&bearer[2..]).into_bytes(),
        STANDARD.encode(secret).into_bytes(),
        percent(secret, true),
        percent(secret, false),
        json.into_bytes(),
    ]
}

/// A response body carrying both secrets in every supported form, with
/// ordinary text between them.
fn body_with_every_form() -> Vec<u8> {
    let mut body = Vec::new();
    for secret in [SECRET, TOKEN] {
        for form in forms(secret) {
            body.extend_from_slice(b" {\"k\": \"");
            body.extend_from_slice(&form);
            body.extend_from_slice(b"\"} plain text between ");
        }
    }
    body
}

#[test]
fn each_form_is_masked() {
    let scrubber = Scrubber::new([SECRET, TOKEN]);
    for secret in [SECRET, TOKEN] {
        for (i, form) in forms(secret).into_iter().enumerate() {
            let (out, count) = scrubbed(&scrubber, &form);
            assert!(count >= 1, "form {i}");
            assert!(out.iter().filter(|b| **b == b'*').count() >= secret.len() - 2);
        }
    }
}

#[test]
fn every_form_in_the_body_is_masked_and_the_length_kept() {
    let scrubber = Scrubber::new([SECRET, TOKEN]);
    let body = body_with_every_form();
    let (out, count) = scrubbed(&scrubber, &body);
    assert_eq!(out.len(), body.len());
    assert!(count >= 16, "{count}");
    for secret in [SECRET, TOKEN] {
        for needle in variants::all(secret) {
            assert!(!contains(&out, &needle));
        }
    }
    assert!(contains(&out, b"plain text between"));
}

#[test]
fn base64_of_a_header_line_is_masked_at_every_offset() {
    let scrubber = Scrubber::new([SECRET]);
    for pad in 0..6 {
        let mut line = vec![b'x'; pad];
        line.extend_from_slice(b"Authorization: Bearer ");
        line.extend_from_slice(SECRET);
        line.extend_from_slice(b"\r\n");
        for encoded in [STANDARD.encode(&line), URL_SAFE_NO_PAD.encode(&line)] {
            let (out, count) = scrubbed(&scrubber, encoded.as_bytes());
            assert_eq!(count, 1, "{pad}");
            // Only a few edge characters (a few bits) of the secret survive.
            let stars = out.iter().filter(|b| **b == b'*').count();
            assert!(stars + 2 >= SECRET.len() * 4 / 3, "{pad}: {stars}");
        }
    }
}

#[test]
fn short_secrets_are_matched_raw_only() {
    let scrubber = Scrubber::new([b"pw1234".as_slice()]);
    let (out, count) = scrubbed(&scrubber, b"pw1234 cHcxMjM0 pw%31234");
    assert_eq!(count, 1);
    assert_eq!(out, b"****** cHcxMjM0 pw%31234");
}

#[test]
fn an_empty_scrubber_changes_nothing() {
    let scrubber = Scrubber::new(std::iter::empty());
    assert!(scrubber.is_empty());
    assert_eq!(scrubber.max_needle_len(), 0);
    assert_eq!(scrubbed(&scrubber, b"anything"), (b"anything".to_vec(), 0));
    let scrubber = Scrubber::new([b"".as_slice()]);
    assert!(scrubber.is_empty());
    let mut stream = Arc::new(scrubber).stream();
    assert_eq!(&stream.push(Bytes::from_static(b"abc")).0[..], b"abc");
}

#[test]
fn a_secret_overlapping_itself_is_masked_entirely() {
    let scrubber = Scrubber::new([b"ab12ab12ab".as_slice()]);
    let (out, count) = scrubbed(&scrubber, b"<ab12ab12ab12ab>");
    assert_eq!(out, b"<**************>");
    assert_eq!(count, 2);
}

#[test]
fn a_long_run_of_a_self_overlapping_secret_is_masked() {
    let scrubber = Scrubber::new([b"aaaaaaaa".as_slice()]);
    let mut text = vec![b'a'; 10_000];
    text.push(b'b');
    let (out, count) = scrubbed(&scrubber, &text);
    assert_eq!(count, 10_000 - 8 + 1);
    assert!(out[..10_000].iter().all(|b| *b == b'*'));
    assert_eq!(out[10_000], b'b');
}

#[test]
fn overlapping_and_nested_secrets_are_masked_entirely() {
    let scrubber = Scrubber::new([
        b"test-secret-one-SHARED".as_slice(),
        b"SHARED-two-secret".as_slice(),
        b"inner-secret".as_slice(),
        b"outer-inner-secret-x".as_slice(),
    ]);
    let (out, _) = scrubbed(&scrubber, b"[test-secret-one-SHARED-two-secret]");
    assert_eq!(out, b"[*********************************]");
    let (out, count) = scrubbed(&scrubber, b"[outer-inner-secret-x]");
    assert_eq!(out, b"[********************]");
    assert_eq!(count, 2);
}

#[test]
fn a_large_secret_uses_the_compact_matcher_and_still_masks() {
    let key: Vec<u8> = (0..3000u32)
        .map(|i| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\n"
                [(i * 7 % 65) as usize]
        })
        .collect();
    let scrubber = Scrubber::new([key.as_slice()]);
    let mut body = b"{\"key\":\"".to_vec();
    body.extend_from_slice(&STANDARD.encode(&key).into_bytes());
    body.extend_from_slice(b"\"}");
    let (out, count) = scrubbed(&scrubber, &body);
    assert_eq!(count, 1);
    assert!(out.starts_with(b"{\"key\":\"**"));
}

#[test]
fn header_values_are_scrubbed_and_names_kept() {
    let scrubber = Scrubber::new([TOKEN]);
    let mut headers = HeaderMap::new();
    let mut echoed = HeaderValue::from_str("Bearer test-secret-task-token").unwrap();
    echoed.set_sensitive(true);
    headers.insert("x-echo", echoed);
    headers.insert(
        "location",
        HeaderValue::from_static("/cb?t=test-secret-task-token"),
    );
    headers.insert("x-plain", HeaderValue::from_static("fine"));
    assert_eq!(scrubber.scrub_headers(&mut headers), 2);
    assert_eq!(headers["x-echo"], "Bearer **********************");
    assert!(headers["x-echo"].is_sensitive());
    assert_eq!(headers["location"], "/cb?t=**********************");
    assert_eq!(headers["x-plain"], "fine");
}

#[test]
fn a_secret_split_across_two_headers_is_not_a_match() {
    // The one-pass pre-check joins names and values; what it finds across a
    // join must not be masked or counted.
    let scrubber = Scrubber::new([b"test-secret-abcdef".as_slice()]);
    let mut headers = HeaderMap::new();
    headers.insert("x-a", HeaderValue::from_static("test-secret"));
    headers.insert("x-b", HeaderValue::from_static("-abcdef"));
    headers.insert("test-secret-abcdef-name", HeaderValue::from_static("v"));
    assert_eq!(scrubber.scrub_headers(&mut headers), 1);
    assert_eq!(headers.len(), 2, "the header named by the secret goes");
    assert_eq!(headers["x-a"], "test-secret");
    assert_eq!(headers["x-b"], "-abcdef");
}

#[test]
fn several_scrubbers_over_headers_mask_what_each_would_in_turn() {
    let credential = Scrubber::new([b"test-secret-cred-0001".as_slice()]);
    // A needle that only exists once the first scrubber has masked: the
    // shared search over the joined headers must not stand in for the
    // second scrubber after the first one changed them.
    let masked_form = format!("k={}", "*".repeat(21));
    let after_mask = Scrubber::new([masked_form.as_bytes()]);
    let token = Scrubber::new([TOKEN]);
    let headers = || {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-echo",
            HeaderValue::from_static("k=test-secret-cred-0001"),
        );
        headers.insert(
            "location",
            HeaderValue::from_static("/cb?t=test-secret-task-token"),
        );
        headers.insert("x-plain", HeaderValue::from_static("fine"));
        headers
    };
    for order in [
        [&credential, &after_mask, &token],
        [&token, &credential, &after_mask],
        [&after_mask, &token, &credential],
    ] {
        let mut together = headers();
        let count = scrub_headers_with(order, &mut together);
        let mut in_turn = headers();
        let expected: usize = order.iter().map(|s| s.scrub_headers(&mut in_turn)).sum();
        assert_eq!(count, expected);
        assert_eq!(together, in_turn);
    }
    let mut all = headers();
    assert_eq!(
        scrub_headers_with([&credential, &after_mask, &token], &mut all),
        3
    );
    assert_eq!(all["x-echo"], "*".repeat(23).as_str());
    assert_eq!(all["location"], "/cb?t=**********************");
    assert_eq!(all["x-plain"], "fine");
    let mut none = headers();
    let empty = Scrubber::new(std::iter::empty::<&[u8]>());
    assert_eq!(scrub_headers_with([&empty, &empty], &mut none), 0);
    assert_eq!(none, headers());
}

#[test]
fn prefilter_choice_does_not_change_what_is_masked() {
    // All lowercase and digits: searched without a prefilter. With an
    // uppercase letter or '_': with one. Both mask the same forms.
    let plain = b"test-secret-lowercase-0123".as_slice();
    let mixed = b"test-secret-Mixed_Case-0123".as_slice();
    assert!(!prefilter_pays(&variants::all(plain)));
    assert!(prefilter_pays(&variants::all(mixed)));
    for secret in [plain, mixed] {
        let scrubber = Arc::new(Scrubber::new([secret]));
        let b64 = STANDARD.encode(secret);
        let body = format!(
            "a={} b={} c={}",
            String::from_utf8_lossy(secret),
            b64,
            String::from_utf8_lossy(secret)
        );
        let (out, count) = scrubbed(&scrubber, body.as_bytes());
        assert_eq!(count, 3, "{body}");
        assert!(!contains(&out, secret) && !contains(&out, b64.as_bytes()));
        let mut stream = scrubber.stream();
        let mut streamed = Vec::new();
        for chunk in body.as_bytes().chunks(5) {
            streamed.extend_from_slice(&stream.push(Bytes::copy_from_slice(chunk)).0);
        }
        streamed.extend_from_slice(&stream.finish().0);
        assert_eq!(streamed, out);
        let mut headers = HeaderMap::new();
        headers.insert("x-echo", HeaderValue::from_str(&body).unwrap());
        assert_eq!(scrubber.scrub_headers(&mut headers), 3);
        assert_eq!(headers["x-echo"].as_bytes(), out.as_slice());
    }
}

#[test]
fn debug_output_shows_no_secret() {
    let scrubber = Arc::new(Scrubber::new([TOKEN]));
    let mut stream = scrubber.stream();
    stream.push(Bytes::from_static(b"xx test-secret-ta"));
    let text = format!("{scrubber:?} {stream:?}");
    assert!(!text.contains("secret"), "{text}");
}

/// xorshift64*: deterministic, dependency-free randomness for chunking.
struct Chunker(u64);

impl Chunker {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % bound
    }
}

fn stream_through(scrubber: &Arc<Scrubber>, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut stream = scrubber.stream();
    let (mut out, mut count) = (Vec::new(), 0);
    for chunk in chunks {
        let (bytes, n) = stream.push(Bytes::copy_from_slice(chunk));
        out.extend_from_slice(&bytes);
        count += n;
    }
    let (tail, n) = stream.finish();
    out.extend_from_slice(&tail);
    (out, count + n)
}

/// Like [`stream_through`], with the last chunk marked as the end of the body.
fn stream_through_ending(scrubber: &Arc<Scrubber>, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut stream = scrubber.stream();
    let (mut out, mut count) = (Vec::new(), 0);
    let Some((last, rest)) = chunks.split_last() else {
        return (out, 0);
    };
    for chunk in rest {
        let (bytes, n) = stream.push(Bytes::copy_from_slice(chunk));
        out.extend_from_slice(&bytes);
        count += n;
    }
    let (bytes, n) = stream.push_last(Bytes::copy_from_slice(last));
    out.extend_from_slice(&bytes);
    (out, count + n)
}

#[test]
fn random_chunkings_give_the_one_shot_result() {
    let scrubber = Arc::new(Scrubber::new([SECRET, TOKEN, b"ab12ab12ab".as_slice()]));
    let mut body = body_with_every_form();
    body.extend_from_slice(b" ab12ab12ab12ab12ab end");
    let (expected, expected_count) = scrubbed(&scrubber, &body);
    let mut rng = Chunker(0x5EED_CAFE_F00D_0001);
    for round in 0..300 {
        let max_chunk = [1, 2, 3, 7, 16, 64, 512][round % 7];
        let mut chunks = Vec::new();
        let mut rest = body.as_slice();
        while !rest.is_empty() {
            let take = (1 + rng.next(max_chunk)).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            chunks.push(chunk);
            rest = tail;
        }
        for (out, count) in [
            stream_through(&scrubber, &chunks),
            stream_through_ending(&scrubber, &chunks),
        ] {
            assert_eq!(out.len(), body.len(), "round {round}");
            assert!(
                out == expected,
                "round {round}: output differs from one-shot"
            );
            assert_eq!(count, expected_count, "round {round}");
        }
    }
    // A body that arrives whole is scrubbed in one pass.
    assert_eq!(
        stream_through_ending(&scrubber, &[&body]),
        (expected, expected_count)
    );
    let clean = Bytes::from_static(b"nothing to mask here");
    let (out, count) = scrubber.stream().push_last(clean.clone());
    assert_eq!((out, count), (clean, 0));
}

#[test]
fn a_secret_split_at_any_byte_is_masked() {
    let scrubber = Arc::new(Scrubber::new([TOKEN]));
    let body = b"before test-secret-task-token after";
    for split in 0..=body.len() {
        let (head, tail) = body.split_at(split);
        for (out, count) in [
            stream_through(&scrubber, &[head, tail]),
            stream_through_ending(&scrubber, &[head, tail]),
        ] {
            assert_eq!(out, b"before ********************** after", "split {split}");
            assert_eq!(count, 1);
        }
    }
}

#[test]
fn the_stream_holds_back_only_what_could_begin_a_secret() {
    let scrubber = Arc::new(Scrubber::new([b"0123456789".as_slice()]));
    let mut stream = scrubber.stream();
    // Nothing here can begin a form of the secret: all of it goes at once.
    let (first, _) = stream.push(Bytes::from_static(&[b'a'; 100]));
    assert_eq!(first.len(), 100);
    let event = b"data: {\"delta\":\"hello\"}\n\n";
    let (out, _) = stream.push(Bytes::copy_from_slice(event));
    assert_eq!(&out[..], event);
    assert_eq!(stream.held(), 0);
    // A tail that could begin it waits, exactly that long, and no longer
    // than the longest form minus one.
    let (out, _) = stream.push(Bytes::from_static(b"data: 0123"));
    assert_eq!(&out[..], b"data: ");
    assert_eq!(stream.held(), 4);
    let (second, _) = stream.push(Bytes::new());
    assert!(second.is_empty());
    // The rest arrives: the whole secret is masked, the text after it goes.
    let (out, count) = stream.push(Bytes::from_static(b"456789\n\n"));
    assert_eq!(&out[..], b"**********\n\n");
    assert_eq!(count, 1);
    // A tail that turns out not to be the secret goes with the next chunk.
    let (out, _) = stream.push(Bytes::from_static(b"012x"));
    assert_eq!(&out[..], b"012x");
    let (out, _) = stream.push(Bytes::from_static(b"01"));
    assert!(out.is_empty());
    let (tail, _) = stream.finish();
    assert_eq!(&tail[..], b"01");
}

#[test]
fn the_open_prefix_is_the_longest_suffix_that_begins_a_form() {
    let short = b"abcdefgh".as_slice();
    let long = b"abcdefgh-and-more".as_slice();
    let scrubber = Scrubber::new([short, long]);
    assert_eq!(scrubber.open_prefix_len(b""), 0);
    assert_eq!(scrubber.open_prefix_len(b"xyz"), 0);
    assert_eq!(scrubber.open_prefix_len(b"xyz a"), 1);
    assert_eq!(scrubber.open_prefix_len(b"xyz abcd"), 4);
    // A whole form that also begins a longer one still waits.
    assert_eq!(scrubber.open_prefix_len(b"xyz abcdefgh"), 8);
    assert_eq!(scrubber.open_prefix_len(b"xyz abcdefgh-and-mor"), 16);
    // The whole longest form begins nothing longer.
    assert_eq!(scrubber.open_prefix_len(b"abcdefgh-and-more"), 0);
    // Encoded forms count too: base64 of the secret begins "YWJj".
    assert_eq!(scrubber.open_prefix_len(b"token=YWJj"), 4);
    // Bounded by the longest form minus one, however long the input.
    let max = scrubber.max_needle_len();
    let mut rng = Chunker(0x0DDB_A11C_AFE0_0002);
    let alphabet = b"abcdefgh-YWJjZGVmZ2g=%6162";
    for _ in 0..2000 {
        let len = rng.next(3 * max);
        let hay: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.next(alphabet.len())])
            .collect();
        let open = scrubber.open_prefix_len(&hay);
        assert!(open < max, "{open} >= {max}");
    }
}

#[test]
fn the_hold_back_never_exceeds_the_longest_form() {
    let scrubber = Arc::new(Scrubber::new([SECRET, TOKEN]));
    let body = body_with_every_form();
    let mut rng = Chunker(0x5EED_0000_0000_0003);
    let mut stream = scrubber.stream();
    let mut rest = body.as_slice();
    while !rest.is_empty() {
        let take = (1 + rng.next(9)).min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        stream.push(Bytes::copy_from_slice(chunk));
        assert!(stream.held() < scrubber.max_needle_len());
        rest = tail;
    }
}

/// Every occurrence of every needle in `hay`, by brute force: the union of
/// the spans and the count, as [`Scrubber::find_all`] reports them.
fn brute_force(scrubber: &Scrubber, hay: &[u8]) -> (Vec<std::ops::Range<usize>>, usize) {
    let mut masked = vec![false; hay.len()];
    let mut count = 0;
    for at in 0..hay.len() {
        for needle in &scrubber.sorted {
            if hay[at..].starts_with(needle) {
                count += 1;
                masked[at..at + needle.len()].fill(true);
            }
        }
    }
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, _) in masked.iter().enumerate().filter(|(_, m)| **m) {
        match spans.last_mut() {
            Some(last) if last.end == i => last.end = i + 1,
            _ => spans.push(i..i + 1),
        }
    }
    (spans, count)
}

#[test]
fn the_sampled_search_finds_every_occurrence_the_automaton_would() {
    let long = Scrubber::new([SECRET, TOKEN]);
    let compact = Scrubber::compact([TOKEN]);
    // A 5-byte secret's only needle is itself: too short to sample.
    let short = Scrubber::new([SECRET, b"k3y-5".as_slice()]);
    assert!(long.sampler.is_some() && compact.sampler.is_some());
    assert!(short.sampler.is_none());
    let mut rng = Chunker(0x5EED_0000_5A3B_1E01);
    for scrubber in [&long, &compact, &short] {
        let planted: Vec<&[u8]> = scrubber.sorted.iter().map(|n| n.as_slice()).collect();
        for round in 0..200 {
            // Random bytes, or random base64-alphabet text (the needles' own
            // alphabet), with needles (whole, cut short, overlapping each
            // other, or at the very edges) planted at random offsets.
            let len = 1 + rng.next(3000);
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_%";
            let mut hay: Vec<u8> = (0..len)
                .map(|_| match round % 2 {
                    0 => rng.next(256) as u8,
                    _ => alphabet[rng.next(alphabet.len())],
                })
                .collect();
            for _ in 0..rng.next(6) {
                let needle = planted[rng.next(planted.len())];
                let cut = if rng.next(4) == 0 {
                    rng.next(needle.len())
                } else {
                    needle.len()
                };
                let at = match rng.next(5) {
                    0 => 0,
                    1 => hay.len().saturating_sub(cut),
                    _ => rng.next(hay.len()),
                };
                let end = (at + cut).min(hay.len());
                hay[at..end].copy_from_slice(&needle[..end - at]);
            }
            assert_eq!(
                scrubber.find_all(&hay, 0),
                brute_force(scrubber, &hay),
                "round {round}"
            );
            assert_eq!(
                scrubber.is_match(&hay),
                !brute_force(scrubber, &hay).0.is_empty()
            );
        }
    }
}
