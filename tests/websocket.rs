//! WebSocket through credgate: the upgrade is admitted, injected and
//! recorded like any request; frames are relayed with the credential
//! scrubbed from what the upstream sends and secrets refused in what the
//! agent sends; a bad handshake or a bad frame closes the socket.

mod support;

use std::time::Duration;

use credgate::reason::Reason;
use support::ws::setup::*;
use support::ws::upstream::*;
use support::ws::*;
use support::*;

#[tokio::test]
async fn frames_are_relayed_with_the_credential_injected_and_scrubbed() {
    let s = setup(Answer::Echo, "api").await;
    let (mut wire, head, key) = open(&s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(header(&head, "upgrade"), Some("websocket"));
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some(&*accept_for(&key))
    );
    assert_eq!(header(&head, "sec-websocket-extensions"), None);

    // The upstream echoes the Authorization it received, split inside the
    // credential across two writes: the agent gets it masked, unmasked
    // frames, and neither half ever shows.
    let first = wire.frame().await.unwrap();
    assert!(
        !first.masked && first.opcode == TEXT && !first.fin,
        "{first:?}"
    );
    let mut text = first.payload.clone();
    loop {
        let next = wire.frame().await.unwrap();
        assert!(!next.masked && next.opcode == CONTINUATION, "{next:?}");
        text.extend_from_slice(&next.payload);
        if next.fin {
            break;
        }
    }
    let masked = format!("auth=Bearer {}", "*".repeat(s.secret.len()));
    assert_eq!(String::from_utf8_lossy(&text), masked);
    let (front, back) = s.secret.split_at(s.secret.len() - s.secret.len() / 2);
    let seen = String::from_utf8_lossy(&wire.seen).into_owned();
    assert!(!seen.contains(front) && !seen.contains(back), "{seen}");

    // Agent to upstream: a fragmented text message, a binary one, a ping.
    wire.send(&client_frame(false, TEXT, b"hel")).await;
    wire.send(&client_frame(true, CONTINUATION, b"lo")).await;
    assert_eq!(wire.message().await, Some((TEXT, b"hello".to_vec())));
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i % 256) as u8).collect();
    wire.send(&client_frame(true, BINARY, &binary)).await;
    assert_eq!(wire.message().await, Some((BINARY, binary.clone())));
    wire.send(&client_frame(true, PING, b"are you there")).await;
    assert_eq!(
        wire.message().await,
        Some((PONG, b"are you there".to_vec()))
    );
    wire.send(&client_frame(true, CLOSE, &1000u16.to_be_bytes()))
        .await;
    let close = wire.frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1000));
    assert!(wire.closes().await, "the socket closes after the handshake");

    // What the upstream received: the injected credential, the handshake
    // without any extension, and each message masked, reassembled.
    let heads = s.upstream.heads();
    let up = &heads[0];
    assert_eq!(
        header(up, "authorization"),
        Some(&*format!("Bearer {}", s.secret))
    );
    assert_eq!(header(up, "upgrade"), Some("websocket"));
    assert_eq!(header(up, "connection"), Some("upgrade"));
    assert_eq!(header(up, "sec-websocket-version"), Some("13"));
    assert_eq!(header(up, "sec-websocket-key"), Some(&*key));
    assert_eq!(header(up, "sec-websocket-extensions"), None, "{up}");
    assert!(!up.contains("agent-own-value"), "{up}");
    let frames = s.upstream.frames();
    assert!(frames.iter().all(|f| f.masked), "{frames:?}");
    let payloads: Vec<&[u8]> = frames.iter().map(|f| &f.payload[..]).collect();
    assert_eq!(payloads[0], b"hello");
    assert_eq!(payloads[1], &binary[..]);
    assert_eq!(payloads[2], b"are you there");

    let records = s
        .env
        .wait_for_record(|r| r.websocket.is_some_and(|w| w.close_code.is_some()))
        .await;
    let record = request_record(&records);
    assert_eq!(record.reason, Some(Reason::Allowed), "{record:?}");
    assert_eq!(record.rule.as_deref(), Some("api[0]"));
    assert_eq!(record.upstream.and_then(|u| u.status), Some(101));
    assert!(record.scrubbed >= 1, "{record:?}");
    let ws = record.websocket.unwrap();
    assert_eq!(ws.frames_in, 5, "{ws:?}");
    assert_eq!(ws.bytes_in, (5 + 70_000 + 13 + 2) as u64, "{ws:?}");
    assert!(ws.frames_out >= 5, "{ws:?}");
    assert_eq!(ws.close_code, Some(1000));
    assert!(!s.env.log_text().await.contains(&s.secret));
}

#[tokio::test]
async fn a_close_the_upstream_starts_is_relayed_and_answered() {
    let s = setup(Answer::Echo, "api").await;
    let mut wire = open_switched(&s).await;
    wire.send(&client_frame(true, TEXT, b"bye")).await;
    let close = wire.frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1000), "{close:?}");
    assert_eq!(&close.payload[2..], b"done");
    wire.send(&client_frame(true, CLOSE, &1000u16.to_be_bytes()))
        .await;
    assert!(wire.closes().await);
    assert!(s.upstream.got(|f| f.close_code() == Some(1000)).await);
    let records = s
        .env
        .wait_for_record(|r| r.websocket.is_some_and(|w| w.close_code == Some(1000)))
        .await;
    let record = request_record(&records);
    assert_eq!(record.reason, Some(Reason::Allowed), "{record:?}");
    // One close frame each way: credgate added none of its own.
    let closes = s
        .upstream
        .frames()
        .iter()
        .filter(|f| f.opcode == CLOSE)
        .count();
    assert_eq!(closes, 1);
}

#[tokio::test]
async fn a_secret_from_the_agent_closes_with_1008_and_goes_nowhere() {
    let s = setup(Answer::Echo, "api").await;
    let mut wire = open_switched(&s).await;
    wire.send(&client_frame(true, TEXT, b"fine")).await;
    assert_eq!(wire.message().await, Some((TEXT, b"fine".to_vec())));
    let leaked = format!("ghp_{}", &random_hex(24)[..36]);
    let (a, b) = leaked.split_at(10);
    wire.send(&client_frame(false, TEXT, format!("token {a}").as_bytes()))
        .await;
    wire.send(&client_frame(true, CONTINUATION, b.as_bytes()))
        .await;
    let close = wire.frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1008), "{close:?}");
    assert!(wire.closes().await);
    let frames = s.upstream.frames();
    assert!(
        frames
            .iter()
            .all(|f| !String::from_utf8_lossy(&f.payload).contains(a)),
        "{frames:?}"
    );
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::SecretInRequest))
        .await;
    let record = request_record(&records);
    assert_eq!(record.reason, Some(Reason::SecretInRequest), "{record:?}");
    assert_eq!(record.findings, ["github_token"]);
    assert_eq!(record.websocket.unwrap().close_code, Some(1008));
    assert!(!s.env.log_text().await.contains(&leaked));
}

#[tokio::test]
async fn an_unmasked_agent_frame_closes_with_1002() {
    let s = setup(Answer::Echo, "api").await;
    let mut wire = open_switched(&s).await;
    wire.send(&frame(true, TEXT, b"not masked", None)).await;
    let close = wire.frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    assert!(wire.closes().await);
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::BadRequest))
        .await;
    let record = request_record(&records);
    let message = record.message.as_deref().unwrap_or_default();
    assert!(message.contains("unmasked"), "{record:?}");
    // The upstream was told too, and never got the frame.
    assert!(s.upstream.got(|f| f.close_code() == Some(1002)).await);
    let frames = s.upstream.frames();
    assert!(
        frames.iter().all(|f| f.payload != b"not masked"),
        "{frames:?}"
    );
}

#[tokio::test]
async fn under_a_stripping_rule_a_secret_is_masked_in_place() {
    let s = setup(Answer::Echo, "stripping").await;
    let mut wire = open_switched(&s).await;
    let leaked = format!("ghp_{}", &random_hex(24)[..36]);
    wire.send(&client_frame(
        true,
        TEXT,
        format!("token {leaked}").as_bytes(),
    ))
    .await;
    let (_, echoed) = wire.message().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&echoed),
        format!("token {}", "*".repeat(leaked.len()))
    );
    let frames = s.upstream.frames();
    assert!(
        frames
            .iter()
            .all(|f| !String::from_utf8_lossy(&f.payload).contains(&leaked)),
        "{frames:?}"
    );
    wire.send(&client_frame(true, CLOSE, &1000u16.to_be_bytes()))
        .await;
    assert!(wire.closes().await);
    let records = s
        .env
        .wait_for_record(|r| r.websocket.is_some_and(|w| w.close_code == Some(1000)))
        .await;
    let record = request_record(&records);
    assert_eq!(record.findings, ["github_token"], "{record:?}");
    assert_eq!(record.reason, Some(Reason::Allowed));
}

#[tokio::test]
async fn a_masked_frame_from_the_upstream_closes_both_sides_with_1002() {
    let s = setup(Answer::MaskedFrame, "api").await;
    let (mut wire, head, _) = open(&s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let close = wire.frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    assert!(wire.closes().await);
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::UpstreamError))
        .await;
    let record = request_record(&records);
    let message = record.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("masked frame from the server"),
        "{record:?}"
    );
    assert!(
        s.upstream.got(|f| f.close_code() == Some(1002)).await,
        "{:?}",
        s.upstream.frames()
    );
}

#[tokio::test]
async fn an_idle_socket_is_closed_after_the_idle_timeout() {
    let s = setup_idle(Answer::Echo, "api", Some("1s")).await;
    let mut wire = open_switched(&s).await;
    let started = std::time::Instant::now();
    let close = wire.frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(wire.closes().await);
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::UpstreamTimeout))
        .await;
    let record = request_record(&records);
    assert_eq!(record.reason, Some(Reason::UpstreamTimeout), "{record:?}");
}

#[tokio::test]
async fn a_rule_with_its_own_idle_timeout_keeps_a_quiet_socket_open() {
    let s = setup_idle(Answer::Echo, "patient", Some("1s")).await;
    let mut wire = open_switched(&s).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    wire.send(&client_frame(true, TEXT, b"still here")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (opcode, payload) = wire.message().await.expect("the socket is still open");
        assert_ne!(opcode, CLOSE, "closed by the global idle limit");
        if payload == b"still here" {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
    }
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009_from_its_header() {
    let s = setup(Answer::Echo, "api").await;
    let mut wire = open_switched(&s).await;
    // A binary frame announcing 17 MiB: refused before its payload comes.
    let mut head = vec![0x82u8, 0x80 | 127];
    head.extend_from_slice(&(17u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    wire.send(&head).await;
    let close = wire.frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1009), "{close:?}");
    assert!(wire.closes().await);
    assert!(
        s.upstream.got(|f| f.close_code() == Some(1009)).await,
        "{:?}",
        s.upstream.frames()
    );
}

#[tokio::test]
async fn ending_the_task_closes_the_socket() {
    let s = setup(Answer::Echo, "api").await;
    let mut wire = open_switched(&s).await;
    s.env.end_task(&s.task).await;
    let close = wire.frame().await.expect("a close frame");
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    assert!(wire.closes().await, "the socket outlived its task");
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::TaskEnded))
        .await;
    let record = request_record(&records);
    assert_eq!(record.reason, Some(Reason::TaskEnded), "{record:?}");
    assert!(record.websocket.is_some());
}

#[tokio::test]
async fn a_switch_without_the_right_accept_is_a_502() {
    let s = setup(Answer::WrongAccept, "api").await;
    let (_, head, _) = open(&s).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let records = s.env.wait_for_record(|r| r.path.is_some()).await;
    let record = request_record(&records);
    assert_eq!(record.reason, Some(Reason::UpstreamError));
    let message = record.message.as_deref().unwrap_or_default();
    assert!(message.contains("Sec-WebSocket-Accept"), "{message}");
    assert!(record.websocket.is_none());
}

#[tokio::test]
async fn an_extension_that_was_not_offered_is_a_502() {
    let s = setup(Answer::Deflate, "api").await;
    let (_, head, _) = open(&s).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let records = s.env.wait_for_record(|r| r.path.is_some()).await;
    let message = request_record(&records).message.clone().unwrap_or_default();
    assert!(message.contains("permessage-deflate"), "{message}");
    // And credgate offered none.
    let heads = s.upstream.heads();
    assert_eq!(header(&heads[0], "sec-websocket-extensions"), None);
}

#[tokio::test]
async fn an_upgrade_needs_a_rule_that_allows_websocket() {
    let s = setup(Answer::Echo, "plain").await;
    let (_, head, _) = open(&s).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        s.upstream.heads().is_empty(),
        "nothing reached the upstream"
    );
    let records = s.env.wait_for_record(|r| r.path.is_some()).await;
    let record = request_record(&records);
    assert_eq!(record.reason, Some(Reason::NoMatchingRule));
    let message = record.message.as_deref().unwrap_or_default();
    assert!(message.contains("websocket: true"), "{message}");
}

#[tokio::test]
async fn a_plain_http_upgrade_is_forwarded_too() {
    let secret = test_secret();
    let upstream = WsUpstream::start(None, HOST, Answer::Echo).await;
    let config = format!(
        "credentials:\n  api:\n    static: {{ env: API_TOKEN }}\n\
         scopes:\n  api:\n    - host: {HOST}\n      port: {port}\n      schemes: [http]\n      credential: api\n      allow_private: true\n      websocket: true\n",
        port = upstream.port
    );
    let env = Env::start(&config, &[("API_TOKEN", &secret)]).await;
    env.resolver.map(HOST, "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    let stream = tokio::net::TcpStream::connect(env.proxy).await.unwrap();
    let mut wire = Wire::new(stream);
    let key = new_key();
    let target = format!("{HOST}:{}", upstream.port);
    let auth = format!("Proxy-Authorization: {}\r\n", proxy_auth(&id, &token));
    let request =
        upgrade(&target, &key, &auth).replacen("/chat", &format!("http://{target}/chat"), 1);
    wire.send(request.as_bytes()).await;
    let head = wire.head().await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, text) = wire.message().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&text),
        format!("auth=Bearer {}", "*".repeat(secret.len()))
    );
    wire.send(&client_frame(true, TEXT, b"plain")).await;
    assert_eq!(wire.message().await, Some((TEXT, b"plain".to_vec())));
    assert_eq!(
        header(&upstream.heads()[0], "authorization"),
        Some(&*format!("Bearer {secret}"))
    );
}

#[tokio::test]
async fn a_real_client_talks_through_credgate() {
    // Python `websockets` (>= 15 speaks through an HTTP proxy), installed by
    // tests/run.sh. It offers permessage-deflate, which credgate removes.
    let probe = std::process::Command::new("python3")
        .args(["-c", "import websockets.asyncio.client"])
        .output();
    // The client is required, never skipped.
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "python3 with websockets >= 15 is needed (tests/run.sh installs it)"
    );
    let s = setup(Answer::Echo, "api").await;
    let script = r#"
import asyncio, os, ssl, sys
from websockets.asyncio.client import connect

async def main():
    ctx = ssl.create_default_context(cafile=os.environ["CA"])
    async with connect(os.environ["URL"], proxy=os.environ["PROXY"], ssl=ctx) as ws:
        print("first:" + await ws.recv())
        await ws.send("hello from python")
        print("echo:" + await ws.recv())
        print("extensions:" + str(len(ws.protocol.extensions)))

asyncio.run(main())
"#;
    let (id, token) = s.env.start_task(&["api"]);
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", script])
        .env("CA", &s.env.ca_cert)
        .env("URL", format!("wss://{HOST}:{}/chat", s.upstream.port))
        .env("PROXY", s.env.proxy_url(&id, &token));
    let out = tokio::time::timeout(Duration::from_secs(30), run_command(cmd))
        .await
        .expect("the client finished");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let masked = format!("first:auth=Bearer {}", "*".repeat(s.secret.len()));
    assert!(stdout.contains(&masked), "{stdout}");
    assert!(stdout.contains("echo:hello from python"), "{stdout}");
    assert!(stdout.contains("extensions:0"), "{stdout}");
    assert!(!stdout.contains(&s.secret));
    let heads = s.upstream.heads();
    assert_eq!(header(&heads[0], "sec-websocket-extensions"), None);
}
