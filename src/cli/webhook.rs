//! `credgate webhook`: `credgate inject`'s mutation as a Kubernetes mutating
//! admission webhook. It serves AdmissionReview v1 over TLS at `/mutate`
//! (and `/healthz` for the kubelet), answering each review with the
//! JSONPatch that adds credgate to the pod, or a denial with the reason.
//! Which pods it sees is the MutatingWebhookConfiguration's choice
//! (`examples/kubernetes/webhook/`: opt-in by a namespace or pod label).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use super::inject::InjectFlags;
use crate::kube::inject::InjectOptions;
use crate::kube::review;

/// The largest AdmissionReview read (the API server's own request limit
/// is 3 MiB).
const MAX_REVIEW: usize = 4 * 1024 * 1024;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must complete within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `credgate webhook`
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Where to serve (the Service's targetPort).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// The serving certificate (PEM, its chain after it), for the name
    /// the API server dials: SERVICE.NAMESPACE.svc.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: PathBuf,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: PathBuf,
    #[command(flatten)]
    pub options: InjectFlags,
}

/// Runs `credgate webhook` until SIGTERM or SIGINT.
pub async fn run(args: &WebhookArgs) -> anyhow::Result<i32> {
    let options = Arc::new(args.options.to_options()?);
    let tls = server_tls(&args.tls_cert, &args.tls_key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    eprintln!("credgate webhook: serving AdmissionReview v1 on https://{local}/mutate");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let options = Arc::clone(&options);
                tokio::spawn(async move {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let options = Arc::clone(&options);
                        async move { Ok::<_, Infallible>(handle(req, &options).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        }
    }
    Ok(0)
}

/// The serving TLS configuration, HTTP/1.1 only.
fn server_tls(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the certificate and the key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `POST /mutate` gets an AdmissionReview back, whatever its body was;
/// `GET /healthz` says the webhook is up.
async fn handle(req: Request<Incoming>, options: &InjectOptions) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, kind: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (&Method::POST, "/mutate") => {
            // Answered as a review either way, so the API server shows why.
            let answer = match Limited::new(req.into_body(), MAX_REVIEW).collect().await {
                Ok(body) => review::answer(&body.to_bytes(), options),
                Err(e) => review::unreadable(&format!("{e} (at most {MAX_REVIEW} bytes)")),
            };
            let body = serde_json::to_vec(&answer).expect("JSON serialises");
            respond(StatusCode::OK, "application/json", body)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"credgate webhook serves POST /mutate and GET /healthz\n".to_vec(),
        ),
    }
}
