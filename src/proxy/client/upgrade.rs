//! A request that asks to switch protocols (a WebSocket upgrade): sent on
//! a connection of its own, which is never pooled. A `101` hands the raw
//! connection over, with whatever the upstream sent right behind the head.

use super::*;

/// The connection a `101` switched, and the bytes already read past the
/// head. Travels in the response's extensions (which must be `Clone`, hence
/// the shared slot) and is taken out once, by [`Upgraded::take`].
#[derive(Clone)]
pub(crate) struct Upgraded(Arc<Mutex<Option<(Io, BytesMut)>>>);

impl Upgraded {
    /// The switched connection of `response`; `None` for any response
    /// that did not switch.
    pub(crate) fn take<B>(response: &mut Response<B>) -> Option<(Io, BytesMut)> {
        let slot = response.extensions_mut().remove::<Upgraded>()?;
        let taken = slot.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        taken
    }
}

impl Client {
    /// Sends `parts` (a bodiless request that asks to switch protocols,
    /// with `Connection: upgrade` added here) on a new connection. A `101`
    /// comes back with an empty body and the connection in [`Upgraded`];
    /// any other answer is an ordinary response whose connection is closed
    /// once its body is read.
    pub(crate) async fn upgrade(
        &self,
        parts: &request::Parts,
    ) -> Result<Response<ResponseBody>, SendError> {
        let to = Destination::of(&parts.uri)?;
        let mut message = encode_request(parts, &[]);
        // The encoder frames plain requests and leaves `Connection` out;
        // this one needs it to name the upgrade.
        message.bytes.truncate(message.bytes.len() - 2);
        message
            .bytes
            .extend_from_slice(b"connection: upgrade\r\n\r\n");

        let mut conn = self.connect(&to).await?;
        let sent = async {
            conn.io.write_all(&message.bytes).await?;
            conn.io.flush().await
        }
        .await;
        sent.map_err(|e| SendError::Broken(Failure::io(false, &e).message))?;
        match read_answer(&mut conn, false, true, parts.extensions.get()).await {
            Ok(Answer::Switched(response)) => {
                let buffered = std::mem::take(&mut conn.buf);
                let slot = Upgraded(Arc::new(Mutex::new(Some((conn.io, buffered)))));
                let mut response = response.map(|()| {
                    ResponseBody::H1(H1Body {
                        conn: None,
                        decode: Decode::Done,
                        reuse: false,
                        to,
                        pool: self.pool.clone(),
                        trailers: None,
                    })
                });
                response.extensions_mut().insert(slot);
                Ok(response)
            }
            Ok(Answer::Final(mut head)) => {
                // The upstream may still think an upgrade is pending.
                head.reuse = false;
                Ok(self.response(head, conn, to))
            }
            Err(f) => Err(SendError::Broken(f.message)),
        }
    }
}
