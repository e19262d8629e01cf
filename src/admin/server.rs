//! The admin listener: accepts connections and serves HTTP/1.1 on them.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::secret::Secret;
use crate::task::TaskService;

use super::routes::{handle, AdminState};

/// A client must send its request head within this time (slow-loris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the admin API on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (up to a short grace period) and returns.
///
/// The admin token is kept only as a SHA-256 digest. Fails at once with
/// `InvalidInput` when the token is empty, since that would let anyone in.
pub async fn serve(
    listener: TcpListener,
    service: Arc<dyn TaskService>,
    admin_token: Secret,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if admin_token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the admin token is empty",
        ));
    }
    let state = Arc::new(AdminState::new(service, &admin_token));
    drop(admin_token);
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, state.clone(), closing_rx.clone()));
                    // Also when connections keep arriving (see the proxy's loop).
                    while connections.try_join_next().is_some() {}
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<AdminState>,
    mut closing: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // The guard `wait_for` returns must not live across the await below.
        _ = async { closing.wait_for(|closing| *closing).await.map(drop) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}
