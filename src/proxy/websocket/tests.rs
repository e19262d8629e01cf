use super::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn request(method: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut builder = http::Request::builder()
        .method(method)
        .uri("/chat")
        .version(Version::HTTP_11);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn upgrade_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("host", "ws.test"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", KEY),
    ]
}

#[test]
fn the_accept_is_the_rfc_example() {
    // RFC 6455 §1.3.
    assert_eq!(accept_for(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn a_valid_upgrade_is_an_offer_and_a_plain_request_is_not() {
    let valid = offer(&request("GET", &upgrade_headers()), false)
        .unwrap()
        .unwrap();
    assert_eq!(valid.key, KEY);
    assert!(offer(&request("GET", &[("host", "a")]), false)
        .unwrap()
        .is_none());
    // Another protocol is not a WebSocket offer: it is stripped as before.
    let h2c = request(
        "GET",
        &[("host", "a"), ("upgrade", "h2c"), ("connection", "upgrade")],
    );
    assert!(offer(&h2c, false).unwrap().is_none());
}

#[test]
fn an_invalid_upgrade_is_a_bad_request() {
    let without = |name: &str| -> Vec<(&'static str, &'static str)> {
        upgrade_headers()
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect()
    };
    let with = |name: &'static str, value: &'static str| {
        let mut headers = without(name);
        headers.push((name, value));
        headers
    };
    let cases = [
        request("POST", &upgrade_headers()),
        request("GET", &without("connection")),
        request("GET", &without("sec-websocket-key")),
        request("GET", &without("sec-websocket-version")),
        request("GET", &with("sec-websocket-version", "8")),
        request("GET", &with("sec-websocket-key", "c2hvcnQ=")),
        request("GET", &with("sec-websocket-key", "not base64!")),
    ];
    for parts in cases {
        assert!(offer(&parts, false).is_err(), "{:?}", parts.headers);
    }
    assert!(offer(&request("GET", &upgrade_headers()), true).is_err());
    let mut old = request("GET", &upgrade_headers());
    old.version = Version::HTTP_10;
    assert!(offer(&old, false).is_err());
}

fn switch(headers: &[(&str, &str)]) -> Result<(), String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let offer = Offer {
        key: HeaderValue::from_static(KEY),
    };
    check_switch(&map, &offer, &["chat".to_string()])
}

#[test]
fn only_a_complete_handshake_switches() {
    let accept = accept_for(KEY.as_bytes());
    let good = [("upgrade", "websocket"), ("sec-websocket-accept", &accept)];
    assert_eq!(switch(&good), Ok(()));
    let mut chat = good.to_vec();
    chat.push(("sec-websocket-protocol", "chat"));
    assert_eq!(switch(&chat), Ok(()));

    let wrong_accept = [
        ("upgrade", "websocket"),
        ("sec-websocket-accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    ];
    assert!(switch(&wrong_accept).unwrap_err().contains("Accept"));
    assert!(switch(&[("upgrade", "websocket")]).is_err());
    assert!(switch(&[("sec-websocket-accept", &accept)]).is_err());

    let mut deflate = good.to_vec();
    deflate.push((
        "sec-websocket-extensions",
        "permessage-deflate; server_no_context_takeover",
    ));
    let why = switch(&deflate).unwrap_err();
    assert!(why.contains("\"permessage-deflate\""), "{why}");

    let mut other = good.to_vec();
    other.push(("sec-websocket-protocol", "superchat"));
    assert!(switch(&other).is_err());
}
