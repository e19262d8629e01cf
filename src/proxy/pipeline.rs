//! The request pipeline: one function, read top to bottom as its phases.
//!
//! ```text
//! identify → sanitize → admit (authorize, secrets, admission phases) → destination
//!          → credential → inject → forward → scrub → record
//! ```
//!
//! The order is a security property:
//! - *identify* first, so nothing is done for an unknown caller. It runs in
//!   the connection layer ([`super::identify::identify`]) as soon as the
//!   request head is read, before the body, so an unauthenticated peer cannot
//!   make credgate buffer anything; [`handle`] receives its result;
//! - *sanitize* before *admit*, so the rule is matched on the request as it
//!   will be forwarded, and before *inject*, so stripping can never remove the
//!   credential credgate adds, and the agent's own `Authorization` can never
//!   survive next to it;
//! - *admit* ([`super::admission`], shared with `CONNECT`) before anything
//!   leaves credgate, so a denied request costs no DNS lookup, no connection
//!   and no credential fetch;
//! - *destination* before *credential*, so a refused address costs no fetch;
//! - *scrub* on everything that flows back, because an upstream may echo what
//!   it received — or what it received from another task;
//! - *record* is not a step at the end but a guard created before the first
//!   phase, whose `Drop` writes the record whatever path the request took.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{request, Method, Response, StatusCode};

use super::address::AddressPolicy;
use super::admission::{self, Ask};
use super::body::{ProxyBody, ScrubChain};
use super::client::{ResponseBody, SendError, Upgraded, Waits};
use super::decoded::{self, UpstreamSource};
use super::gateway::{Gateway, Snapshot};
use super::identify::Identity;
use super::interim::{EarlyHints, InterimSink};
use super::request_body::{
    decoded_for_scan, has_content_coding, BodyAbort, Outgoing, RequestBody, Stream, Streamed,
};
use super::respond::{deny, strip_response_hop_by_hop, Deny};
use super::target::{authority_for, resolve_target, upstream_uri, Target};
use super::trailers::{agent_takes_trailers, TrailerScrub};
use super::upstream::check_destination;
use super::websocket;
use crate::audit::{CacheOutcome, DecisionRecord, Event, RecordGuard, Verdict as RecordVerdict};
use crate::config::CredentialSpec;
use crate::credential::cache::CacheStatus;
use crate::credential::{Credential, FetchContext, RequestView};
use crate::decimal::Decimal;
use crate::decode::DecodeLimits;
use crate::inject::InjectError;
use crate::policy::{Scheme, ScopeRule, SecretAction};
use crate::reason::Reason;
use crate::sanitize::{aws_payload, BodyStreamScan, Finding, FindingLocation};
use crate::scrub::{scrub_headers_with, Scrubber};
use crate::secret::Secret;
use crate::task::Task;

/// What a connection knows about itself.
pub(crate) struct ConnContext {
    /// The agent's address.
    pub(crate) peer: SocketAddr,
    /// Set inside an intercepted CONNECT tunnel.
    pub(crate) tunnel: Option<Tunnel>,
    /// The `Proxy-Authorization` that last authenticated on this connection,
    /// and whom: a keep-alive connection presents the same one each time.
    pub(crate) authenticated: Mutex<Option<Authenticated>>,
    /// The task whose own port the connection came in on: a request without
    /// `Proxy-Authorization` runs as it.
    pub(crate) port_task: Option<Arc<Task>>,
    /// The original destination port of a transparently captured plain
    /// HTTP connection: its origin-form requests go to `Host` on this port.
    pub(crate) captured_port: Option<u16>,
    /// The record of a 407 challenge, until the next request on the
    /// connection tells what it was (see [`super::identify::refused`]).
    /// Dropped with the connection, it is emitted as the deny it was.
    pub(crate) challenge: Mutex<Option<RecordGuard>>,
}

/// A `Proxy-Authorization` value as presented, and the task it proved.
pub(crate) struct Authenticated {
    /// The header value, kept like a secret (it carries the task token).
    pub(crate) header: Secret,
    /// The task it authenticated.
    pub(crate) task: Arc<Task>,
    /// The task token it carried.
    pub(crate) token: Arc<Secret>,
}

/// An intercepted tunnel: the task authenticated on CONNECT and its target.
pub(crate) struct Tunnel {
    /// The task that opened the tunnel.
    pub(crate) task: Arc<Task>,
    /// The task token presented on CONNECT (scrubbed from responses).
    pub(crate) token: Option<Arc<Secret>>,
    /// Normalised CONNECT host.
    pub(crate) host: String,
    /// CONNECT port.
    pub(crate) port: u16,
}

impl ConnContext {
    /// A plain-proxy connection; `port_task` when it came in on that
    /// task's own port.
    pub(crate) fn plain(peer: SocketAddr, port_task: Option<Arc<Task>>) -> Self {
        ConnContext {
            peer,
            tunnel: None,
            authenticated: Mutex::new(None),
            port_task,
            captured_port: None,
            challenge: Mutex::new(None),
        }
    }

    /// A connection inside an intercepted tunnel.
    pub(crate) fn tunnel(peer: SocketAddr, tunnel: Tunnel) -> Self {
        ConnContext {
            peer,
            tunnel: Some(tunnel),
            authenticated: Mutex::new(None),
            port_task: None,
            captured_port: None,
            challenge: Mutex::new(None),
        }
    }

    /// Takes the record of the challenge held for this connection, if any.
    pub(crate) fn take_challenge(&self) -> Option<RecordGuard> {
        self.challenge
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// A fresh request record. Until a phase says otherwise, it says the agent
/// went away: that is what it means if the request never gets further.
pub(crate) fn new_record(gw: &Gateway) -> RecordGuard {
    let mut record = DecisionRecord::request(SystemTime::now());
    record.decision = Some(RecordVerdict::Deny);
    // Until the pipeline learns better, the agent went away (the guard
    // writes the sentence for it, if no other is set by then).
    record.reason = Some(Reason::ClientDisconnected);
    RecordGuard::new(gw.audit.clone(), record)
}

/// Where the request goes, named in its record as soon as its head is
/// read: a request refused before the pipeline runs (no task, a body too
/// large) still says where it was going. [`handle`] takes the result.
pub(crate) fn target_of(
    conn: &ConnContext,
    parts: &request::Parts,
    rec: &mut RecordGuard,
) -> Result<Target, Deny> {
    let target = resolve_target(conn, parts)?;
    rec.target(
        target.scheme.as_str(),
        &target.host,
        target.port,
        Some(&target.path),
    );
    Ok(target)
}

/// Runs one admitted request through every phase and returns the response
/// for the agent. Never fails: every failure becomes a denial with a reason,
/// recorded in `rec`, which is written when the response body is done (or
/// dropped).
pub(crate) async fn handle(
    gw: &Gateway,
    who: Identity,
    target: Result<Target, Deny>,
    mut parts: request::Parts,
    body: RequestBody,
    mut rec: RecordGuard,
) -> Response<ProxyBody> {
    let snapshot = gw.snapshot();
    rec.received(body.received());
    rec.task(&who.task.id, &who.task.agent, &who.task.labels);
    let target = match target {
        Ok(t) => t,
        Err(d) => return deny(rec, d),
    };
    // A WebSocket upgrade is noted before sanitizing strips `Upgrade`.
    let has_body = !matches!(&body, RequestBody::Full(whole) if whole.is_empty());
    match websocket::offer(&parts, has_body) {
        Ok(Some(offer)) => {
            parts.extensions.insert(offer);
        }
        Ok(None) => {}
        Err(d) => return deny(rec, d),
    }
    let head_request = parts.method == Method::HEAD;
    // Judged before sanitize strips `TE`.
    let takes_trailers = agent_takes_trailers(&parts);
    // Ending the task cuts a request still in flight (waiting for a
    // credential or for the upstream), not only its later responses.
    let outcome = tokio::select! {
        outcome = run_phases(gw, &snapshot, &who, target, &mut parts, body, &mut rec) => outcome,
        () = who.task.wait_ended() => Err(Deny::new(
            Reason::TaskEnded,
            "the task ended while the request was in flight",
        )),
    };
    match outcome {
        Ok(upstream) if upstream.response.extensions().get::<Upgraded>().is_some() => {
            let (started, idle) = (upstream.started, upstream.idle);
            websocket::respond(gw, snapshot, &who, upstream.response, started, idle, rec)
        }
        Ok(upstream) => {
            let asked = Asked {
                head_request,
                takes_trailers,
            };
            respond(gw, &snapshot, &who, upstream, asked, rec).await
        }
        Err(d) => deny(rec, d),
    }
}

/// What the agent's request says about the response it can take.
struct Asked {
    /// A `HEAD`: no body.
    head_request: bool,
    /// Trailers can be sent to it (see [`agent_takes_trailers`]).
    takes_trailers: bool,
}

/// An upstream response, waiting to be scrubbed.
struct Upstream {
    response: Response<ResponseBody>,
    started: Instant,
    /// The longest its body may pause: the rule's, or `upstream.idle_timeout`.
    idle: std::time::Duration,
}

/// sanitize → admit → destination → credential → inject → forward.
async fn run_phases(
    gw: &Gateway,
    snapshot: &Snapshot,
    who: &Identity,
    mut target: Target,
    parts: &mut request::Parts,
    body: RequestBody,
    rec: &mut RecordGuard,
) -> Result<Upstream, Deny> {
    let task = &who.task;
    let config = &snapshot.config;
    let limits = &config.sanitizer;

    // sanitize: first the body as the upstream will read it: an AWS SDK's
    // aws-chunked upload is decoded to its payload and its declared
    // checksums are checked. That reads `x-amz-*` headers, so it runs before
    // the strip removes them, and the scan below then reads the payload,
    // where chunk framing cannot split a secret. A streamed S3 upload (a
    // `PUT` with S3's `x-amz-content-sha256`, over https) is decoded as it
    // flows, its checksums checked at its end (see `aws_payload::streamed`);
    // any other streamed body such headers describe is held whole, and so
    // is a compressed one, which the scan reads decoded.
    let payload_error = |e: aws_payload::PayloadError| Deny::new(e.reason(), e.to_string());
    let mut body = match body {
        RequestBody::Streamed(mut streamed) if aws_payload::describes_body(&parts.headers) => {
            let streams = if may_stream_to_s3(parts, &target) {
                aws_payload::read_streamed(
                    &mut parts.headers,
                    &parts.method,
                    target.query.as_deref(),
                    streamed.length(),
                )
                .map_err(payload_error)?
            } else {
                None
            };
            match streams {
                Some(aws) => {
                    streamed.decode_with(aws).map_err(payload_error)?;
                    RequestBody::Streamed(streamed)
                }
                None => {
                    let what = "a body in AWS framing or with an AWS checksum";
                    RequestBody::Full(spool(streamed, limits.max_buffered_body(), what, rec).await?)
                }
            }
        }
        RequestBody::Streamed(streamed) if has_content_coding(&parts.headers) => {
            let what = "a compressed body (decoded to be scanned)";
            RequestBody::Full(spool(streamed, limits.max_buffered_body(), what, rec).await?)
        }
        body => body,
    };
    let mut aws_payload = match &mut body {
        RequestBody::Full(whole) => {
            let (payload, aws) = aws_payload::read(
                &mut parts.headers,
                std::mem::take(whole),
                &parts.method,
                target.query.as_deref(),
            )
            .map_err(payload_error)?;
            *whole = payload;
            aws
        }
        RequestBody::Streamed(_) => {
            aws_payload::take_expect(&mut parts.headers).map_err(payload_error)?;
            aws_payload::AwsPayload::default()
        }
    };
    // Then strip what must never be forwarded, and look for secrets in what is left.
    let stripped = config.sanitizer.strip_headers(&mut parts.headers);
    parts.headers.remove(header::HOST);
    let path_and_query = target.path_and_query();
    let mut findings: Vec<Finding> = config.sanitizer.scan_target(&path_and_query);
    findings.extend(config.sanitizer.scan_headers(&parts.headers));
    // The body as far as it has arrived: all of a small one, the first part
    // of a streamed one (the rest is scanned as it flows, after admit).
    let first = match &body {
        RequestBody::Full(whole) => whole,
        RequestBody::Streamed(streamed) => streamed.first(),
    };
    // A compressed body is read as the upstream will: decoded.
    let decoded = decoded_for_scan(
        &parts.headers,
        first,
        limits.max_buffered_body(),
        config.upstream.max_decode_ratio,
    )
    .map_err(abort_deny)?;
    let compressed = decoded.is_some();
    findings.extend(
        config
            .sanitizer
            .scan_body(decoded.as_deref().unwrap_or(first)),
    );
    rec.sanitized(stripped, finding_ids(&findings));
    if !findings.is_empty() {
        // What a rule that strips secrets would forward: the target without
        // them. That is what admit judges (and the record names), so the
        // rule that allows a request is the rule for what is sent.
        let redacted = config.sanitizer.redact_target(&path_and_query);
        let (path, query) = match redacted.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (redacted, None),
        };
        target.path = path;
        target.query = query;
        rec.path(&target.path);
    }

    // admit: authorize, the secret check, the gateway's admission phases.
    let offer = parts.extensions.get::<websocket::Offer>().cloned();
    let mut asked = target.for_policy(&parts.method);
    asked.websocket = offer.is_some();
    let ask = Ask::Request(asked);
    let seen = admission::Seen {
        findings: &findings,
        headers: Some(&parts.headers),
        body_size: match &body {
            RequestBody::Full(whole) => Some(whole.len() as u64),
            RequestBody::Streamed(streamed) => streamed.length(),
        },
    };
    let admitted = admission::admit(gw, snapshot, task, ask, &seen, rec).await?;
    let rule = admitted.rule();
    if !findings.is_empty() {
        // The rule strips secrets: from the headers and the body too.
        let removed = config.sanitizer.redact_headers(&mut parts.headers);
        rec.also_stripped(removed);
        if findings.iter().any(|f| f.location == FindingLocation::Body) {
            if compressed {
                // Masking the secret would mean sending the body decoded.
                return Err(Deny::new(
                    Reason::SecretInRequest,
                    "the compressed request body carries what looks like a secret, which cannot be stripped from it; credgate injects credentials itself, send none",
                ));
            }
            match &mut body {
                RequestBody::Full(whole) => {
                    let mut owned = whole.to_vec();
                    config.sanitizer.redact_body(&mut owned);
                    *whole = Bytes::from(owned);
                    aws_payload.body_changed(&mut parts.headers, whole);
                }
                RequestBody::Streamed(streamed) => {
                    let mut owned = streamed.first().to_vec();
                    config.sanitizer.redact_body(&mut owned);
                    streamed.set_first(Bytes::from(owned));
                    for name in ["content-md5", "content-digest", "repr-digest", "digest"] {
                        parts.headers.remove(name);
                    }
                }
            }
        }
    }
    let (upstream_tls, address_policy) = route(rule, &target)?;

    // destination: the host's addresses are checked against what the rule
    // may reach before anything is fetched or sent (the client checks again
    // the address it dials), so a refused address costs no credential.
    check_destination(
        gw.resolver.as_ref(),
        &target.host,
        target.port,
        address_policy,
    )
    .await
    .map_err(|e| Deny::new(e.reason(), e.to_string()))?;

    // credential
    let credential = match &rule.credential {
        None => None,
        Some(name) => Some(
            fetch_credential(gw, snapshot, task, rule, name, &target, &parts.method, rec).await?,
        ),
    };

    // inject
    let authority = authority_for(&target.host, target.port, upstream_tls);
    parts.uri = upstream_uri(&parts.uri, &target, upstream_tls, authority)
        .ok_or_else(|| Deny::new(Reason::BadRequest, "the request target cannot be forwarded"))?;
    parts.version = http::Version::HTTP_11;
    // Which HTTP version the client may speak to the upstream (ALPN decides
    // within it).
    parts.extensions.insert(rule.upstream_http);
    if let Some(authority) = parts.uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
    }
    // Bodies must come back scannable: ask for no content coding.
    parts.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let strip = rule.on_secret == SecretAction::Strip;
    // S3 takes a payload it cannot hash first (over TLS, which protects
    // it), so a streamed upload to it goes on streaming; a signature of any
    // other service covers the payload's hash, so the body is held whole,
    // scanned to its end first. S3 takes no chunked transfer coding: a body
    // of unknown length is held whole too, and sent with its length.
    let unhashed = match (&credential, &body) {
        (Some((spec, _)), RequestBody::Streamed(streamed)) => {
            spec.injection.signs_s3(&target.host)
                && upstream_tls
                && parts.method == Method::PUT
                && (streamed.aws().is_some() || streamed.length().is_some())
        }
        _ => false,
    };
    if let (Some((spec, _)), RequestBody::Streamed(_), false) = (&credential, &body, unhashed) {
        if spec.injection.reads_body() {
            let RequestBody::Streamed(streamed) = body else {
                unreachable!("matched above")
            };
            let what = "a body signed with SigV4 (other than an S3 upload over https)";
            let (whole, declared) =
                collect(streamed, strip, limits, what, &mut parts.headers, rec).await?;
            if let Some(declared) = declared {
                aws_payload = declared;
            }
            body = RequestBody::Full(whole);
        }
    }
    let whole: &[u8] = match &body {
        RequestBody::Full(whole) => whole,
        RequestBody::Streamed(_) => &[],
    };
    let mut reframe = None;
    if let Some((spec, cred)) = &credential {
        // A range of a response that reflects the credential would carry a
        // piece of it too short to recognise; with a credential in play the
        // whole representation comes back, scrubbed.
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
        let applied = match &body {
            RequestBody::Streamed(streamed) if unhashed => {
                spec.injection
                    .apply_streamed(cred, parts, |headers| match streamed.aws() {
                        Some(aws) => {
                            let (payload_hash, framing) = aws.unsigned_framing(headers, strip);
                            reframe = framing;
                            payload_hash
                        }
                        None => "UNSIGNED-PAYLOAD",
                    })
            }
            _ => spec
                .injection
                .apply_with_body(cred, parts, whole, &aws_payload),
        };
        applied.map_err(|e| match e {
            InjectError::Payload(e) => Deny::new(e.reason(), e.to_string()),
            e => Deny::new(
                e.reason(),
                format!("credential {} could not be injected: {e}", spec.name),
            ),
        })?;
    }

    // forward: a streamed body is scanned piece by piece as it goes; a
    // finding stops it before the secret does.
    let mut outgoing = match body {
        RequestBody::Full(whole) => Outgoing::Whole(whole),
        RequestBody::Streamed(streamed) => Outgoing::stream(
            streamed,
            BodyStreamScan::new(strip),
            limits.max_body(),
            reframe,
        ),
    };
    // Early hints are cleaned like the final response's headers, by the
    // same scrubbers: taken now, the credential just fetched is among them.
    if let Some(sink) = parts.extensions.remove::<InterimSink>() {
        let hints = EarlyHints::new(sink, response_scrubbers(gw, who));
        parts.extensions.insert(hints);
    }
    let client = snapshot.upstreams.client(address_policy);
    let waits = Waits {
        first_byte: config.upstream.first_byte_timeout,
        idle: config.upstream.idle_timeout,
    };
    let started = Instant::now();
    let sent = match &offer {
        Some(offer) => {
            let strip_secrets = rule.on_secret == SecretAction::Strip;
            let upgrade = websocket::forward(client, parts, offer, strip_secrets);
            tokio::time::timeout(waits.first_byte, upgrade)
                .await
                .unwrap_or(Err(SendError::FirstByteTimeout))
        }
        None => client.send(parts, &mut outgoing, waits).await,
    };
    if let Some(received) = outgoing.streamed_in() {
        rec.received(received);
    }
    rec.found_in_body(outgoing.findings().into_iter().map(|f| f.rule.to_string()));
    let response = sent.map_err(|e| match e {
        SendError::FirstByteTimeout => Deny::new(
            Reason::UpstreamTimeout,
            format!(
                "{} did not answer within upstream.first_byte_timeout",
                target.host
            ),
        ),
        e => classify_upstream_error(e),
    })?;
    let idle = rule.idle_timeout.unwrap_or(config.upstream.idle_timeout);
    Ok(Upstream {
        response,
        started,
        idle,
    })
}

/// Holds a streamed body whole (within `limit`), counting it as received.
async fn spool(
    streamed: Streamed,
    limit: usize,
    what: &str,
    rec: &mut RecordGuard,
) -> Result<Bytes, Deny> {
    let whole = streamed.spool(limit, what).await.map_err(abort_deny)?;
    rec.received(whole.len() as u64);
    Ok(whole)
}

/// Holds a streamed body whole after all (within `max_buffered_body`),
/// read as it would be sent: decoded from its AWS framing, scanned to its
/// end (under a stripping rule, secrets masked). Counts it as received and
/// notes its findings; comes back with what its AWS framing declared
/// (checked, and with the checksum of the body as masked), if any.
async fn collect(
    streamed: Streamed,
    strip: bool,
    limits: &crate::sanitize::Sanitizer,
    what: &str,
    headers: &mut http::HeaderMap,
    rec: &mut RecordGuard,
) -> Result<(Bytes, Option<aws_payload::AwsPayload>), Deny> {
    let scan = BodyStreamScan::new(strip);
    let mut stream = Stream::new(streamed, scan, limits.max_body(), None);
    let collected = stream.collect(limits.max_buffered_body(), what).await;
    rec.received(stream.received());
    rec.found_in_body(stream.findings().into_iter().map(|f| f.rule.to_string()));
    let whole = collected.map_err(abort_deny)?;
    let mut declared = stream.declared();
    if stream.masked() {
        // A secret was masked: what the agent declared about its body no
        // longer holds (its digests go, its checksum is of what is sent).
        let mut changed = declared.take().unwrap_or_default();
        changed.body_changed(headers, &whole);
        declared = Some(changed);
    }
    Ok((whole, declared))
}

/// The denial for a request body that stopped before it was all read.
fn abort_deny(abort: BodyAbort) -> Deny {
    Deny::new(abort.reason, abort.message)
}

/// Whether a streamed body may be an S3 upload that goes on streaming: it
/// carries S3's `x-amz-content-sha256` (which no other service reads) and
/// goes to https. Whether it does is decided when the rule's credential
/// is known; until then it is decoded and scanned as it flows.
fn may_stream_to_s3(parts: &request::Parts, target: &Target) -> bool {
    target.scheme == Scheme::Https && parts.headers.contains_key("x-amz-content-sha256")
}

/// Whether the upstream connection is TLS, and which addresses it may reach.
/// A credential never travels in cleartext except to plain loopback.
fn route(rule: &ScopeRule, target: &Target) -> Result<(bool, AddressPolicy), Deny> {
    let upstream_tls = target.scheme == Scheme::Https || rule.upstream_tls;
    let policy = if rule.allow_private {
        AddressPolicy::AllowPrivate
    } else {
        AddressPolicy::PublicOnly
    };
    if rule.credential.is_none() || upstream_tls {
        return Ok((upstream_tls, policy));
    }
    if !rule.allow_private {
        return Err(Deny::new(
            Reason::CleartextInjectionRefused,
            format!(
                "rule {} would send credential {} over cleartext http; set upstream_tls: true, or allow_private: true for a loopback upstream",
                rule.id,
                rule.credential.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok((false, AddressPolicy::LoopbackOnly))
}

/// Gets the rule's credential for the task from the cache (or its source)
/// and notes it in the record, by fingerprint.
#[allow(clippy::too_many_arguments)]
async fn fetch_credential<'s>(
    gw: &Gateway,
    snapshot: &'s Snapshot,
    task: &Task,
    rule: &ScopeRule,
    name: &str,
    target: &Target,
    method: &Method,
    rec: &mut RecordGuard,
) -> Result<(&'s CredentialSpec, Arc<Credential>), Deny> {
    let (Some(spec), Some(def)) = (
        snapshot.config.credentials.get(name),
        snapshot.sources.get(name),
    ) else {
        return Err(Deny::new(
            Reason::CredentialUnavailable,
            format!(
                "rule {} names credential {name}, which is not configured",
                rule.id
            ),
        ));
    };
    let request = RequestView {
        method,
        host: &target.host,
        path: &target.path,
    };
    let narrowing = def
        .source
        .narrow(rule.narrowing.as_deref(), &request)
        .map_err(|e| {
            Deny::new(
                e.reason(),
                format!("credential {name} cannot be narrowed for this request: {e}"),
            )
        })?;
    // The configuration generation is part of the key, so a reloaded
    // definition is fetched anew; the narrowing, so a credential narrowed
    // for one request is never used for another it does not cover.
    let key = cache_key(snapshot.generation, &narrowing.key);
    let (cred, info) = match gw.credentials.cached(def, &key, &task.id).await {
        Some(hit) => hit,
        None => {
            let ctx = FetchContext {
                task_id: task.id.clone(),
                agent: task.agent.clone(),
                labels: (*task.labels).clone(),
                task_expires_at: task.expires_at,
                narrowing,
            };
            let (cred, status) =
                gw.credentials
                    .get_or_fetch(def, &key, &ctx)
                    .await
                    .map_err(|e| {
                        Deny::new(
                            e.reason(),
                            format!("credential {name} could not be obtained: {e}"),
                        )
                    })?;
            let outcome = match status {
                CacheStatus::Hit => CacheOutcome::Hit,
                CacheStatus::Miss => {
                    record_issue(gw, task, rule, &cred, &ctx);
                    CacheOutcome::Miss
                }
            };
            let info = Arc::new(cred.record_info(Some(outcome)));
            (cred, info)
        }
    };
    rec.credential(info);
    Ok((spec, cred))
}

/// The cache key: configuration generation and narrowing.
fn cache_key(generation: u64, narrowing: &str) -> String {
    let generation = Decimal::new(generation);
    let mut key = String::with_capacity(narrowing.len() + generation.as_str().len() + 2);
    key.push('g');
    key.push_str(generation.as_str());
    key.push('|');
    key.push_str(narrowing);
    key
}

/// The request that fetched a credential writes its issue as a lifecycle
/// event of its own.
fn record_issue(
    gw: &Gateway,
    task: &Task,
    rule: &ScopeRule,
    cred: &Credential,
    ctx: &FetchContext,
) {
    let mut issued = DecisionRecord::event(Event::CredentialIssue, SystemTime::now());
    issued.task = Some(task.id.clone());
    issued.agent = Some(task.agent.clone());
    issued.labels = task.labels.clone();
    issued.rule = Some(rule.id.clone());
    issued.credential = Some(Arc::new(cred.record_info(None)));
    let lifetime = match cred
        .expires_at
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
    {
        Some(ttl) => match &cred.renewed {
            Some(what) => format!("renewed ({what}) for {}s", ttl.as_secs()),
            None => format!("issued for {}s", ttl.as_secs()),
        },
        None => "issued without expiry (standing)".to_string(),
    };
    issued.message = Some(if ctx.narrowing.value.is_null() {
        lifetime
    } else {
        format!("{lifetime}; narrowed to {}", ctx.narrowing.value)
    });
    gw.audit.emit(issued);
}

/// scrub: the response goes back with every credential in play masked.
async fn respond(
    gw: &Gateway,
    snapshot: &Snapshot,
    who: &Identity,
    upstream: Upstream,
    asked: Asked,
    mut rec: RecordGuard,
) -> Response<ProxyBody> {
    let head_request = asked.head_request;
    let (mut parts, body) = upstream.response.into_parts();
    rec.upstream(
        parts.status.as_u16(),
        upstream.started.elapsed().as_millis() as u64,
    );
    // Judged before the hop-by-hop headers go (see `decoded::codings`). A
    // coding credgate cannot decode cannot be scanned; passing it would let
    // a credential through.
    let codings = match decoded::codings(&parts.headers) {
        Ok(codings) => codings,
        Err(d) => return deny(rec, d),
    };
    strip_response_hop_by_hop(&mut parts.headers);
    let scrubbers = response_scrubbers(gw, who);
    let masked = scrub_headers_with(scrubbers.iter().map(|s| &**s), &mut parts.headers);
    let stages = scrubbers.iter().map(Scrubber::stream).collect();
    let trailer_scrub = asked.takes_trailers.then(|| TrailerScrub::new(scrubbers));
    rec.allow(None);
    rec.sent(0, masked as u64);
    let no_body = head_request
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    if no_body {
        // Nothing will be read from the body; the record is complete now.
        // The headers describe the body as the agent would get it: decoded.
        if !codings.is_empty() {
            parts.headers.remove(header::CONTENT_ENCODING);
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        drop(rec);
        return Response::from_parts(parts, ProxyBody::full(Bytes::new()));
    }
    let limits = &snapshot.config.upstream;
    let body = if codings.is_empty() {
        UpstreamSource::Identity(body)
    } else {
        // The upstream compressed although asked not to: decoded, so it can
        // be scrubbed; its first piece before the head goes out.
        let decode = DecodeLimits {
            max_decoded: limits.max_decoded_body,
            max_ratio: limits.max_decode_ratio,
        };
        // Waiting for the first piece is bounded like any wait on the body.
        let wait = limits.total_timeout.map_or(upstream.idle, |total| {
            total
                .saturating_sub(upstream.started.elapsed())
                .min(upstream.idle)
        });
        match decoded::prime(body, &codings, decode, wait, &who.task, &mut parts.headers).await {
            Ok(source) => source,
            Err(d) => return deny(rec, d),
        }
    };
    let remaining = limits
        .total_timeout
        .map(|total| total.saturating_sub(upstream.started.elapsed()));
    let chain = ScrubChain::new(stages);
    let body = ProxyBody::upstream(
        body,
        chain,
        rec,
        remaining,
        upstream.idle,
        who.task.clone(),
        trailer_scrub,
    );
    Response::from_parts(parts, body)
}

/// What everything flowing back to the agent is scrubbed with: every
/// credential held for any task (a shared upstream may echo another task's),
/// then the requesting task's token.
fn response_scrubbers(gw: &Gateway, who: &Identity) -> Vec<Arc<Scrubber>> {
    let token = who
        .token
        .as_ref()
        .map(|token| who.task.token_scrubber(token));
    std::iter::once(gw.credential_scrubber())
        .chain(token)
        .collect()
}

fn classify_upstream_error(e: SendError) -> Deny {
    match e {
        SendError::Connect(connect) => Deny::new(connect.reason(), connect.to_string()),
        SendError::Broken(what) => Deny::new(
            Reason::UpstreamError,
            format!("the upstream broke the exchange: {what}"),
        ),
        e @ (SendError::FirstByteTimeout | SendError::Stalled) => {
            Deny::new(Reason::UpstreamTimeout, e.to_string())
        }
        SendError::Body(abort) => abort_deny(abort),
    }
}

fn finding_ids(findings: &[Finding]) -> Vec<String> {
    let mut ids: Vec<String> = findings.iter().map(|f| f.rule.to_string()).collect();
    ids.sort();
    ids.dedup();
    ids
}
