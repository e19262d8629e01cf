//! WebSocket (RFC 6455) through credgate, over HTTP/1.1 only.
//!
//! The upgrade is an ordinary request: identified, sanitised, authorised
//! (only by a rule with `websocket: true`), given its credential and
//! recorded like any other. What is particular to it:
//!
//! - [`offer`] recognises the upgrade before sanitizing, which strips
//!   `Upgrade` and `Connection` as hop-by-hop; [`forward`] puts back exactly
//!   the handshake credgate understands (`Upgrade: websocket`,
//!   `Connection: upgrade`, the key, version 13, the subprotocols) and never
//!   offers an extension: `permessage-deflate` would hide payloads from the
//!   scrubber and the secret detector.
//! - Only a `101` with `Upgrade: websocket`, the right `Sec-WebSocket-Accept`,
//!   no extension and no subprotocol that was not offered switches; any other
//!   `101` is a 502, any other status an ordinary response.
//! - Then [`relay`] relays frames both ways with credgate's own codec
//!   ([`frame`]): upstream payloads are scrubbed, the agent's messages are
//!   screened by the request-side secret detector, and the upgrade's record
//!   stays open until the socket closes, carrying what it relayed.
//!
//! Any other `Upgrade` (`h2c`, …) is stripped as before. WebSocket over an
//! agent-side HTTP/2 connection (RFC 8441 extended CONNECT) is not supported.

mod drain;
mod frame;
mod message;
mod relay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode, Version};

use super::body::ProxyBody;
use super::client::{Client, ResponseBody, SendError, Upgraded};
use super::gateway::{Gateway, Snapshot};
use super::identify::Identity;
use super::respond::{deny, strip_response_hop_by_hop, Deny};
use crate::audit::RecordGuard;
use crate::reason::Reason;
use crate::scrub::scrub_headers_with;

pub(crate) use relay::Switch;

/// Appended to the key before hashing, for `Sec-WebSocket-Accept` (§1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const SEC_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
const SEC_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
const SEC_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");
const SEC_EXTENSIONS: HeaderName = HeaderName::from_static("sec-websocket-extensions");

/// A valid WebSocket upgrade request, noted in the request's extensions
/// before sanitizing removes what made it one.
#[derive(Debug, Clone)]
pub(crate) struct Offer {
    /// The agent's `Sec-WebSocket-Key` (16 bytes, base64), forwarded as is
    /// so that the upstream's accept is the one the agent expects.
    key: HeaderValue,
}

/// What a checked `101` agreed to, for the relay.
#[derive(Debug, Clone)]
struct Negotiated {
    /// The rule strips secrets instead of refusing them.
    strip_secrets: bool,
}

/// `Ok(Some)` for a valid WebSocket upgrade, `Ok(None)` for a request that
/// does not ask for one (another `Upgrade` value is stripped later, as a
/// hop-by-hop header), and a 400 for an upgrade that is not valid.
pub(crate) fn offer(parts: &request::Parts, has_body: bool) -> Result<Option<Offer>, Deny> {
    let headers = &parts.headers;
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Ok(None);
    }
    let refuse = |why: &str| {
        Err(Deny::new(
            Reason::BadRequest,
            format!("invalid WebSocket upgrade: {why}"),
        ))
    };
    if parts.version != Version::HTTP_11 {
        return refuse("it needs HTTP/1.1 (WebSocket over HTTP/2 is not supported)");
    }
    if parts.method != Method::GET {
        return refuse("it must be a GET");
    }
    if has_body {
        return refuse("it cannot carry a body");
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return refuse("Connection must name upgrade");
    }
    let mut versions = headers.get_all(SEC_VERSION).iter();
    if versions.next().map(HeaderValue::as_bytes) != Some(b"13") || versions.next().is_some() {
        return refuse("Sec-WebSocket-Version must be 13");
    }
    let mut keys = headers.get_all(SEC_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if key_is_valid(key.as_bytes()) => key.clone(),
        _ => return refuse("Sec-WebSocket-Key must be one base64-encoded 16-byte value"),
    };
    Ok(Some(Offer { key }))
}

fn key_is_valid(key: &[u8]) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|raw| raw.len() == 16)
}

/// `base64(SHA-1(key + GUID))`: what a server must answer a key with.
pub(crate) fn accept_for(key: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// forward, for an upgrade: the sanitised, injected request goes out with
/// the handshake headers put back and no extension offered. A `101` that
/// does not complete the handshake is refused as a broken exchange (502);
/// a valid one comes back with its connection in [`Upgraded`].
pub(crate) async fn forward(
    client: &Client,
    parts: &mut request::Parts,
    offer: &Offer,
    strip_secrets: bool,
) -> Result<Response<ResponseBody>, SendError> {
    let headers = &mut parts.headers;
    // No extension is offered: a compressed payload could not be scrubbed
    // or screened. Nothing else the agent sent as Sec-WebSocket-* but the
    // subprotocols (sanitised like any header) goes either.
    let others: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("sec-websocket-") && **name != SEC_PROTOCOL)
        .cloned()
        .collect();
    for name in others {
        headers.remove(name);
    }
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_KEY, offer.key.clone());
    headers.insert(SEC_VERSION, HeaderValue::from_static("13"));
    let offered = tokens(headers, &SEC_PROTOCOL);
    let mut response = client.upgrade(parts).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        check_switch(response.headers(), offer, &offered)
            .map_err(|why| SendError::Broken(format!("the upstream switched protocols {why}")))?;
        response
            .extensions_mut()
            .insert(Negotiated { strip_secrets });
    }
    Ok(response)
}

/// Whether a `101` completes the handshake credgate offered.
fn check_switch(headers: &HeaderMap, offer: &Offer, offered: &[String]) -> Result<(), String> {
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Err("without Upgrade: websocket".into());
    }
    let expected = accept_for(offer.key.as_bytes());
    let mut accepts = headers.get_all(SEC_ACCEPT).iter();
    match (accepts.next(), accepts.next()) {
        (Some(accept), None) if accept.as_bytes() == expected.as_bytes() => {}
        _ => return Err("without a valid Sec-WebSocket-Accept".into()),
    }
    if let Some(extension) = tokens(headers, &SEC_EXTENSIONS).first() {
        let name = extension.split(';').next().unwrap_or_default().trim();
        return Err(format!(
            "with the extension {name:?}, which credgate did not offer"
        ));
    }
    let chosen = tokens(headers, &SEC_PROTOCOL);
    match chosen.as_slice() {
        [] => Ok(()),
        [one] if offered.iter().any(|p| p == one) => Ok(()),
        _ => Err("to a subprotocol the agent did not offer".into()),
    }
}

/// scrub, for a switched upgrade: the agent gets the upstream's `101`
/// (scrubbed, with the handshake headers credgate vouches for), and the
/// response carries the relay, which the connection layer runs. The record
/// travels with it and is written when the socket closes.
pub(crate) fn respond(
    gw: &Gateway,
    snapshot: Arc<Snapshot>,
    who: &Identity,
    mut response: Response<ResponseBody>,
    started: Instant,
    idle: Duration,
    mut rec: RecordGuard,
) -> Response<ProxyBody> {
    let elapsed = started.elapsed().as_millis() as u64;
    rec.upstream(StatusCode::SWITCHING_PROTOCOLS.as_u16(), elapsed);
    let upgraded = Upgraded::take(&mut response);
    let negotiated = response.extensions().get::<Negotiated>().cloned();
    let (Some((upstream, buffered)), Some(negotiated)) = (upgraded, negotiated) else {
        let d = Deny::new(Reason::Internal, "a switched connection went missing");
        return deny(rec, d);
    };
    let (mut parts, _) = response.into_parts();
    strip_response_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    let token = who
        .token
        .as_ref()
        .map(|token| who.task.token_scrubber(token));
    let credentials = gw.credential_scrubber();
    let scrubbers = std::iter::once(&*credentials).chain(token.as_deref());
    let masked = scrub_headers_with(scrubbers, &mut parts.headers);

    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"upgrade: websocket\r\nconnection: Upgrade\r\n\r\n");

    rec.allow(Some("switched to WebSocket".into()));
    rec.sent(0, masked as u64);
    let switch = Switch {
        head,
        upstream,
        upstream_buf: buffered,
        snapshot,
        token,
        strip_secrets: negotiated.strip_secrets,
        idle,
        task: who.task.clone(),
        rec,
    };
    let mut out = Response::new(ProxyBody::websocket(Box::new(switch)));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    out
}

/// The comma-separated tokens of every `name` header, trimmed, empty ones left out.
fn tokens(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether a `name` header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests;
