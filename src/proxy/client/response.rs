//! A response body from an upstream, whichever HTTP version carried it.

use hyper::body::Incoming;

use super::*;

/// A response body from an upstream, over either version.
pub(crate) enum ResponseBody {
    /// Read from an HTTP/1.1 connection by credgate's own reader.
    H1(H1Body),
    /// A stream of an HTTP/2 connection (trailers included).
    H2(Incoming),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::H1(body) => Pin::new(body).poll_frame(cx),
            ResponseBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(io::Error::other),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::H1(body) => body.is_end_stream(),
            ResponseBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::H1(body) => body.size_hint(),
            ResponseBody::H2(body) => body.size_hint(),
        }
    }
}
