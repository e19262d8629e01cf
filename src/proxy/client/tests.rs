use std::sync::Mutex as StdMutex;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::proxy::address::AddressPolicy;
use crate::proxy::upstream::SystemResolver;

const WAITS: Waits = Waits {
    first_byte: Duration::from_secs(10),
    idle: Duration::from_secs(10),
};

/// What a scripted upstream does with the next request on a connection.
#[derive(Clone)]
enum Act {
    /// Reads a request, writes these bytes.
    Answer(&'static [u8]),
    /// Reads a request, writes these bytes, closes.
    AnswerClose(&'static [u8]),
    /// Reads a request and closes without answering.
    Drop,
    /// Reads a request head only, writes these bytes, and reads no more.
    AnswerBeforeBody(&'static [u8]),
}

/// Serves connection `i` with `script[i]` (the last script repeats);
/// returns the address and every request received, by connection.
async fn upstream(script: Vec<Vec<Act>>) -> (String, Arc<StdMutex<Vec<(usize, String)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for i in 0..32 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let acts = script[i.min(script.len() - 1)].clone();
            let log = log.clone();
            tokio::spawn(async move {
                for act in acts {
                    if let Act::AnswerBeforeBody(bytes) = act {
                        let head = read_head_only(&mut stream).await.unwrap();
                        log.lock().unwrap().push((i, head));
                        stream.write_all(bytes).await.unwrap();
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    log.lock().unwrap().push((i, request));
                    match act {
                        Act::Answer(bytes) => stream.write_all(bytes).await.unwrap(),
                        Act::AnswerClose(bytes) => {
                            stream.write_all(bytes).await.unwrap();
                            return;
                        }
                        Act::Drop | Act::AnswerBeforeBody(_) => return,
                    }
                }
                // Keep the connection open until the client closes it.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    (addr, seen)
}

/// Reads one request head.
async fn read_head_only(stream: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        data.push(byte[0]);
    }
    Some(String::from_utf8(data).unwrap())
}

/// Reads one request head and its Content-Length body.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let head = read_head_only(stream).await?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(head + &String::from_utf8(body).unwrap())
}

fn client() -> Client {
    let tls = crate::tls::upstream_client_config(None, &crate::provider::ProcessEnv).unwrap();
    Client::new(GuardedConnector::new(
        Arc::new(SystemResolver),
        AddressPolicy::LoopbackOnly,
        tls,
        Duration::from_secs(5),
    ))
}

fn request(method: Method, addr: &str, path: &str) -> request::Parts {
    let (mut parts, ()) = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(())
        .unwrap()
        .into_parts();
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_str(addr).unwrap());
    parts
}

async fn get(client: &Client, addr: &str) -> Result<(Response<()>, Bytes), SendError> {
    let response = client
        .send(
            &request(Method::GET, addr, "/"),
            &mut Outgoing::Whole(Bytes::new()),
            WAITS,
        )
        .await?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| SendError::Broken(e.to_string()))?;
    Ok((Response::from_parts(parts, ()), body.to_bytes()))
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

#[tokio::test]
async fn a_length_framed_response_is_read_and_its_connection_reused() {
    let (addr, seen) = upstream(vec![vec![Act::Answer(OK), Act::Answer(OK)]]).await;
    let client = client();
    for _ in 0..2 {
        let (response, body) = get(&client, &addr).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(&body[..], b"hello");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [0, 0]);
    assert_eq!(client.pool.idle_count(), 1);
}

#[tokio::test]
async fn a_chunked_body_is_decoded_and_its_well_formed_trailers_come_after_it() {
    let (addr, seen) = upstream(vec![vec![
        Act::Answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: secret \r\n\
              bad name: x\r\n  folded\r\ngrpc-status: 0\r\n\r\n",
        ),
        Act::Answer(OK),
    ]])
    .await;
    let client = client();
    let response = client
        .send(
            &request(Method::GET, &addr, "/"),
            &mut Outgoing::Whole(Bytes::new()),
            WAITS,
        )
        .await
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(&collected.to_bytes()[..], b"hello world");
    // The malformed and folded lines are dropped, the rest kept in order.
    let names: Vec<_> = trailers.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-trailer", "grpc-status"]);
    assert_eq!(trailers["x-trailer"], "secret");
    // The connection went back to the pool after the trailer section.
    let (_, body) = get(&client, &addr).await.unwrap();
    assert_eq!(&body[..], b"hello");
    assert!(seen.lock().unwrap().iter().all(|(c, _)| *c == 0));
}

#[tokio::test]
async fn ambiguous_or_unreadable_framing_is_refused() {
    let cases: [&'static [u8]; 6] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
    ];
    for case in cases {
        let (addr, _) = upstream(vec![vec![Act::Answer(case)]]).await;
        let err = get(&client(), &addr).await.unwrap_err();
        assert!(
            matches!(err, SendError::Broken(_)),
            "{}: {err}",
            String::from_utf8_lossy(case)
        );
    }
}

#[tokio::test]
async fn identical_repeated_lengths_are_one_length() {
    let (addr, _) = upstream(vec![vec![Act::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\nhello",
    )]])
    .await;
    let (_, body) = get(&client(), &addr).await.unwrap();
    assert_eq!(&body[..], b"hello");
}

#[tokio::test]
async fn broken_chunked_framing_fails_the_body() {
    let cases: [&'static [u8]; 3] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    ];
    for case in cases {
        let (addr, _) = upstream(vec![vec![Act::Answer(case)]]).await;
        let client = client();
        assert!(get(&client, &addr).await.is_err());
        assert_eq!(client.pool.idle_count(), 0);
    }
}

#[tokio::test]
async fn a_body_delimited_by_close_is_read_to_the_end_and_not_reused() {
    let (addr, seen) = upstream(vec![
        vec![Act::AnswerClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")],
        vec![Act::Answer(OK)],
    ])
    .await;
    let client = client();
    let (_, body) = get(&client, &addr).await.unwrap();
    assert_eq!(&body[..], b"until the end");
    assert_eq!(client.pool.idle_count(), 0);
    let (_, body) = get(&client, &addr).await.unwrap();
    assert_eq!(&body[..], b"hello");
    let conns: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, [0, 1]);
}

#[tokio::test]
async fn a_length_cut_short_is_an_error_not_a_short_body() {
    let (addr, _) = upstream(vec![vec![Act::AnswerClose(
        b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nhello",
    )]])
    .await;
    assert!(get(&client(), &addr).await.is_err());
}

/// A GET to `addr` whose early hints go to the returned queue.
fn with_hints(addr: &str, path: &str) -> (request::Parts, crate::proxy::interim::InterimQueue) {
    let (sink, queue) = crate::proxy::interim::channel();
    let mut parts = request(Method::GET, addr, path);
    parts.extensions.insert(EarlyHints::new(sink, Vec::new()));
    (parts, queue)
}

#[tokio::test]
async fn interim_responses_are_skipped_and_early_hints_offered() {
    let (addr, _) = upstream(vec![vec![Act::Answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    )]])
    .await;
    // Without a place for them, they are consumed.
    let (response, body) = get(&client(), &addr).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&body[..], b"hello");

    let (parts, mut queue) = with_hints(&addr, "/");
    let response = client()
        .send(&parts, &mut Outgoing::Whole(Bytes::new()), WAITS)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let hints = queue.ready().expect("the 103 is offered");
    assert_eq!(hints["link"], "</a>");
    assert!(queue.ready().is_none(), "only the 103");
}

#[tokio::test]
async fn more_interim_responses_than_the_bound_are_an_upstream_fault() {
    const NINE: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </1>\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </2>\r\n\r\n\
HTTP/1.1 103 Early Hints\r\nlink: </3>\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </4>\r\n\r\n\
HTTP/1.1 103 Early Hints\r\nlink: </5>\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </6>\r\n\r\n\
HTTP/1.1 103 Early Hints\r\nlink: </7>\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </8>\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    let (addr, _) = upstream(vec![vec![Act::Answer(NINE)]]).await;
    let (parts, mut queue) = with_hints(&addr, "/");
    let sent = client()
        .send(&parts, &mut Outgoing::Whole(Bytes::new()), WAITS)
        .await;
    let Err(SendError::Broken(message)) = sent else {
        panic!("refused as broken");
    };
    assert!(message.contains("more than 8 interim"), "{message}");
    // The eight before the fault were passed.
    let mut passed = 0;
    while queue.ready().is_some() {
        passed += 1;
    }
    assert_eq!(passed, MAX_INTERIM);
}

#[test]
fn a_final_answer_is_found_behind_interim_heads_which_stay_for_the_reader() {
    let interim = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n";
    let mut buf = BytesMut::from(&interim[..]);
    assert!(!final_answer(&buf), "only an interim head so far");
    buf.extend_from_slice(b"HTTP/1.1 413 Payload Too Large\r\ncontent-");
    assert!(!final_answer(&buf), "the final head is not complete");
    buf.extend_from_slice(b"length: 0\r\n\r\n");
    assert!(final_answer(&buf));
    assert!(buf.starts_with(interim), "nothing is taken off");
    // Past the bound, the reader has something to refuse.
    let many = BytesMut::from(&interim.repeat(MAX_INTERIM + 1)[..]);
    assert!(final_answer(&many));
    assert!(!final_answer(&BytesMut::from(
        &interim.repeat(MAX_INTERIM)[..]
    )));
}

#[tokio::test]
async fn a_head_response_has_no_body_whatever_its_length_says() {
    let (addr, seen) = upstream(vec![vec![
        Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
        Act::Answer(OK),
    ]])
    .await;
    let client = client();
    let response = client
        .send(
            &request(Method::HEAD, &addr, "/"),
            &mut Outgoing::Whole(Bytes::new()),
            WAITS,
        )
        .await
        .unwrap();
    assert!(response.body().is_end_stream());
    drop(response);
    let (_, body) = get(&client, &addr).await.unwrap();
    assert_eq!(&body[..], b"hello");
    assert!(seen.lock().unwrap().iter().all(|(c, _)| *c == 0));
}

#[tokio::test]
async fn a_closed_idle_connection_is_not_used() {
    let (addr, seen) = upstream(vec![vec![Act::AnswerClose(OK)], vec![Act::Answer(OK)]]).await;
    let client = client();
    get(&client, &addr).await.unwrap();
    // Let the close arrive before the next checkout.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let post = request(Method::POST, &addr, "/");
    let response = client
        .send(&post, &mut Outgoing::Whole(Bytes::from_static(b"x")), WAITS)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let conns: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, [0, 1]);
}

#[tokio::test]
async fn only_idempotent_requests_are_sent_again_when_a_reused_connection_drops_them() {
    let script = vec![vec![Act::Answer(OK), Act::Drop], vec![Act::Answer(OK)]];
    let (addr, seen) = upstream(script.clone()).await;
    let client = client();
    get(&client, &addr).await.unwrap();
    let (_, body) = get(&client, &addr).await.unwrap();
    assert_eq!(&body[..], b"hello");
    let conns: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, [0, 0, 1]);

    let (addr, seen) = upstream(script).await;
    get(&client, &addr).await.unwrap();
    let post = request(Method::POST, &addr, "/");
    let Err(err) = client
        .send(&post, &mut Outgoing::Whole(Bytes::from_static(b"x")), WAITS)
        .await
    else {
        panic!("a dropped POST must not be sent again");
    };
    assert!(matches!(err, SendError::Broken(_)), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 2, "the POST was not sent twice");
}

#[tokio::test]
async fn an_oversized_head_is_refused() {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    while head.len() <= MAX_HEAD {
        head.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    head.extend_from_slice(b"content-length: 0\r\n\r\n");
    let (addr, _) = upstream(vec![vec![Act::Answer(head.leak())]]).await;
    assert!(matches!(
        get(&client(), &addr).await.unwrap_err(),
        SendError::Broken(_)
    ));
}

#[tokio::test]
async fn a_body_dropped_early_closes_its_connection() {
    let (addr, seen) = upstream(vec![vec![Act::Answer(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )]])
    .await;
    let client = client();
    let response = client
        .send(
            &request(Method::GET, &addr, "/"),
            &mut Outgoing::Whole(Bytes::new()),
            WAITS,
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "hello");
    drop(body);
    assert_eq!(client.pool.idle_count(), 0);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn framing_headers_are_credgates_own() {
    let (addr, seen) = upstream(vec![vec![Act::Answer(OK), Act::Answer(OK)]]).await;
    let client = client();
    let mut post = request(Method::POST, &addr, "/upload?x=1");
    post.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    post.headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    post.headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    client
        .send(
            &post,
            &mut Outgoing::Whole(Bytes::from_static(b"body!")),
            WAITS,
        )
        .await
        .unwrap();
    let empty_post = request(Method::POST, &addr, "/");
    client
        .send(&empty_post, &mut Outgoing::Whole(Bytes::new()), WAITS)
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    let first = &seen[0].1;
    assert!(
        first.starts_with("POST /upload?x=1 HTTP/1.1\r\n"),
        "{first}"
    );
    assert!(first.contains("content-length: 5\r\n"), "{first}");
    assert!(!first.contains("999") && !first.contains("chunked") && !first.contains("close"));
    assert!(first.ends_with("\r\n\r\nbody!"), "{first}");
    assert!(seen[1].1.contains("content-length: 0\r\n"), "{}", seen[1].1);
}

#[tokio::test]
async fn idle_connections_past_their_time_are_swept() {
    let (addr, _) = upstream(vec![vec![Act::Answer(OK)]]).await;
    let client = client();
    get(&client, &addr).await.unwrap();
    assert_eq!(client.pool.idle_count(), 1);
    client.sweep();
    assert_eq!(client.pool.idle_count(), 1);
    {
        let mut idle = client.pool.idle.lock().unwrap();
        for conn in idle.values_mut().flatten() {
            conn.idle_since -= IDLE_TIMEOUT;
        }
    }
    client.sweep();
    assert_eq!(client.pool.idle_count(), 0);
}

#[tokio::test]
async fn an_answer_before_the_whole_body_is_returned_and_the_connection_dropped() {
    let (addr, seen) = upstream(vec![vec![Act::AnswerBeforeBody(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!",
    )]])
    .await;
    let client = client();
    // Far more than the socket buffers take: the write would block for good.
    let body = Bytes::from(vec![b'x'; 32 * 1024 * 1024]);
    let (mut parts, mut hints) = with_hints(&addr, "/upload");
    parts.method = Method::POST;
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        client.send(&parts, &mut Outgoing::Whole(body.clone()), WAITS),
    )
    .await
    .expect("the early answer is returned, not waited past");
    let Ok(response) = sent else {
        panic!("the early answer is a response, not an error");
    };
    assert_eq!(response.status(), 413);
    // Early hints read while the body was being written still pass.
    assert_eq!(hints.ready().expect("the 103 is offered")["link"], "</a>");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"too big!");
    assert_eq!(
        client.pool.idle_count(),
        0,
        "a half-sent request's connection is not reused"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_answer_is_awaited_from_the_end_of_the_body_and_a_stalled_body_is_its_own_error() {
    let waits = Waits {
        first_byte: Duration::from_millis(300),
        idle: Duration::from_millis(300),
    };
    // Reads the request, never answers: the first-byte wait runs out.
    let (addr, seen) = upstream(vec![vec![Act::AnswerBeforeBody(b"")]]).await;
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        // Accepts and reads the request, then stays quiet.
        let (mut stream, _) = silent.accept().await.unwrap();
        let _ = read_request(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let client = client();
    let small = Bytes::from_static(b"x");
    let Err(err) = client
        .send(
            &request(Method::POST, &silent_addr, "/"),
            &mut Outgoing::Whole(small),
            waits,
        )
        .await
    else {
        panic!("an answer came");
    };
    assert!(matches!(err, SendError::FirstByteTimeout), "{err}");
    // Takes the head and stops reading: the body cannot be sent.
    let big = Bytes::from(vec![b'x'; 32 << 20]);
    let Err(err) = client
        .send(
            &request(Method::POST, &addr, "/upload"),
            &mut Outgoing::Whole(big),
            waits,
        )
        .await
    else {
        panic!("an answer came");
    };
    assert!(matches!(err, SendError::Stalled), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
