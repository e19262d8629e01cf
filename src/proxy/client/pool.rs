//! Idle upstream connections, pooled by destination.

use super::*;

/// Where a pooled connection goes.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Destination {
    pub(super) tls: bool,
    pub(super) host: String,
    pub(super) port: u16,
}

impl Destination {
    /// Where an absolute request URI goes (its scheme, host and port).
    pub(super) fn of(uri: &http::Uri) -> Result<Destination, ConnectError> {
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri
            .host()
            .ok_or(ConnectError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']');
        Ok(Destination {
            tls,
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        })
    }
}

/// An upstream connection and what has been read from it but not used yet.
pub(super) struct Conn {
    pub(super) io: Io,
    pub(super) buf: BytesMut,
    pub(super) idle_since: Instant,
}

impl Conn {
    pub(super) fn new(io: Io) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            idle_since: Instant::now(),
        }
    }

    /// Whether an idle connection can carry another request: not expired,
    /// and the upstream has neither closed it nor sent anything unasked.
    pub(super) fn reusable(&mut self, now: Instant) -> bool {
        if now.duration_since(self.idle_since) >= IDLE_TIMEOUT || !self.buf.is_empty() {
            return false;
        }
        // A read that would block means a quiet, open connection. Anything
        // else (end of stream, bytes, an error) means it must not be used.
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    pub(super) async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.io.read_buf(&mut self.buf).await
    }
}

/// Idle connections by destination.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) idle: Mutex<HashMap<Destination, Vec<Conn>>>,
}

impl Pool {
    pub(super) fn checkout(&self, to: &Destination) -> Option<Conn> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let list = idle.get_mut(to)?;
            let mut found = None;
            while let Some(mut conn) = list.pop() {
                if conn.reusable(now) {
                    found = Some(conn);
                    break;
                }
                stale.push(conn);
            }
            // An emptied list stays for the connection's return; the sweep
            // removes it if nothing comes back.
            found
        };
        // Closed outside the lock.
        drop(stale);
        found
    }

    pub(super) fn checkin(&self, to: Destination, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(to).or_default();
        if list.len() < MAX_IDLE_PER_DESTINATION {
            list.push(conn);
        }
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`].
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|_, list| {
                let (keep, old): (Vec<Conn>, Vec<Conn>) = list
                    .drain(..)
                    .partition(|c| now.duration_since(c.idle_since) < IDLE_TIMEOUT);
                *list = keep;
                expired.extend(old);
                !list.is_empty()
            });
        }
        drop(expired);
    }

    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.values().map(Vec::len).sum()
    }
}
