//! moto (`moto_server` from the `moto[server]` Python package) in auth mode,
//! standing in for AWS STS and S3, and a recording front for its STS.
//!
//! moto verifies every signature once its first `no_auth_actions` requests
//! (the IAM user, role, bucket and object, created with boto3) are done.
//! It serves plain http on 127.0.0.1, or https with a certificate of a test
//! CA ([`MotoTls`]): the AWS SDKs frame uploads as aws-chunked with a
//! checksum trailer only over TLS.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use credgate::tls::CertificateAuthority;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use super::{clean_env, closed_port, poll_until, run_cli, Outcome, TempDir};

/// The unauthenticated requests [`SETUP`] makes; every later one must
/// carry a valid signature.
pub const SETUP_ACTIONS: usize = 7;

const SETUP: &str = r#"
import boto3, json, sys
ep, body, verify = sys.argv[1], sys.argv[2], sys.argv[3] or None
kw = dict(endpoint_url=ep, region_name="us-east-1", verify=verify,
          aws_access_key_id="AKIASETUP0000000000", aws_secret_access_key="setup-only")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="credgate")
key = iam.create_access_key(UserName="credgate")["AccessKey"]
iam.put_user_policy(UserName="credgate", PolicyName="assume", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
role = iam.create_role(RoleName="agent-reports", AssumeRolePolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}))["Role"]
iam.put_role_policy(RoleName="agent-reports", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
s3 = boto3.client("s3", **kw)
s3.create_bucket(Bucket="reports")
s3.put_object(Bucket="reports", Key="q1.txt", Body=body.encode())
print(json.dumps({"role_arn": role["Arn"], "key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
"#;

/// A CA of the test's own and a leaf for 127.0.0.1 and a host name that it
/// signed, as PEM files, for moto's https (and any other test server's).
pub struct MotoTls {
    pub dir: TempDir,
    /// The CA certificate (what credgate and boto3 must trust).
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
    /// The leaf certificate, for its host name and 127.0.0.1.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

impl MotoTls {
    /// A CA and a leaf for `localhost` and 127.0.0.1.
    pub fn generate() -> MotoTls {
        MotoTls::generate_for("localhost")
    }

    /// A CA and a leaf for `host` and 127.0.0.1.
    pub fn generate_for(host: &str) -> MotoTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let dir = TempDir::new();
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "moto test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec![host.to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let tls = MotoTls {
            ca_cert: dir.path().join("moto-ca.crt"),
            ca_key: dir.path().join("moto-ca.key"),
            cert: dir.path().join("moto.crt"),
            key: dir.path().join("moto.key"),
            dir,
        };
        std::fs::write(&tls.ca_cert, ca_cert.pem()).unwrap();
        write_private(&tls.ca_key, &ca_key_pem);
        std::fs::write(&tls.cert, leaf_cert.pem()).unwrap();
        write_private(&tls.key, &leaf_key.serialize_pem());
        tls
    }

    /// The CA as credgate's upstream trust (`upstream.extra_ca`).
    pub fn authority(&self) -> Arc<CertificateAuthority> {
        Arc::new(CertificateAuthority::load(&self.ca_cert, &self.ca_key).unwrap())
    }
}

/// Writes `text` to `path`, readable by its owner only.
pub fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A moto server on 127.0.0.1 in auth mode, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub role_arn: String,
    /// credgate's own IAM user: it may only assume the role.
    pub key_id: String,
    pub secret: String,
    /// The body of `reports/q1.txt`.
    pub object: String,
    /// The CA moto's certificate is signed by, when it serves https.
    pub ca_cert: Option<PathBuf>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// moto on plain http, checking every signature after the setup calls.
    pub async fn start() -> Moto {
        Moto::start_with(SETUP_ACTIONS, None).await
    }

    /// moto checking signatures only after `no_auth_actions` calls, on
    /// https with `tls`'s certificate when given.
    pub async fn start_with(no_auth_actions: usize, tls: Option<&MotoTls>) -> Moto {
        let port = closed_port().await;
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(tls) = tls {
            cmd.arg("-c").arg(&tls.cert).arg("-k").arg(&tls.key);
        }
        let child = cmd
            .env("INITIAL_NO_AUTH_ACTION_COUNT", no_auth_actions.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start moto_server (run tests/run.sh to install moto[server])");
        let mut moto = Moto {
            child,
            port,
            role_arn: String::new(),
            key_id: String::new(),
            secret: String::new(),
            object: format!("quarterly report {}", super::random_hex(8)),
            ca_cert: tls.map(|t| t.ca_cert.clone()),
        };
        // The probe closes at once: moto's https server completes each TLS
        // handshake before it serves anything else.
        let ready = poll_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(drop)
        })
        .await;
        assert!(ready.is_some(), "moto_server did not listen within 30s");
        let out = python(&[SETUP, &moto.endpoint(), &moto.object, &moto.verify()]).await;
        out.expect_code(0);
        let setup: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        moto.role_arn = setup["role_arn"].as_str().unwrap().to_string();
        moto.key_id = setup["key_id"].as_str().unwrap().to_string();
        moto.secret = setup["secret"].as_str().unwrap().to_string();
        moto
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when moto serves TLS.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// What boto3's `verify` gets: moto's CA file, or "" for plain http.
    pub fn verify(&self) -> String {
        self.ca_cert
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// `python3 -c SCRIPT ARGS…` with a clean environment.
pub async fn python(args: &[&str]) -> Outcome {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").args(args);
    clean_env(&mut cmd);
    run_cli(cmd).await
}

/// One STS call as the front saw it.
#[derive(Debug, Clone)]
pub struct StsCall {
    pub form: String,
    pub answer: String,
}

impl StsCall {
    pub fn param(&self, name: &str) -> Option<String> {
        self.form.split('&').find_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            (n == name).then(|| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }

    pub fn answer_field(&self, name: &str) -> String {
        let open = format!("<{name}>");
        let start = self.answer.find(&open).expect(name) + open.len();
        let end = start + self.answer[start..].find('<').unwrap();
        self.answer[start..end].trim().to_string()
    }
}

/// A plain-http front for moto's STS that records every call and passes
/// it on unchanged (the Host header included, since it is signed).
pub struct StsFront {
    pub port: u16,
    calls: Arc<Mutex<Vec<StsCall>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StsFront {
    /// A front for `moto`'s STS, over http or https as moto serves.
    pub async fn start(moto: &Moto) -> StsFront {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let to_moto = MotoConnector {
            port: moto.port,
            tls: moto.ca_cert.as_ref().map(|ca| trusting(ca)),
        };
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let to_moto = to_moto.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let to_moto = to_moto.clone();
                            let recorded = recorded.clone();
                            async move {
                                let (mut parts, body) = req.into_parts();
                                let body = body.collect().await?.to_bytes();
                                parts.uri = "/".parse().unwrap();
                                let forwarded =
                                    http::Request::from_parts(parts, Full::new(body.clone()));
                                let (parts, answer) = to_moto.exchange(forwarded).await;
                                recorded.lock().unwrap().push(StsCall {
                                    form: String::from_utf8_lossy(&body).into_owned(),
                                    answer: String::from_utf8_lossy(&answer).into_owned(),
                                });
                                Ok::<_, hyper::Error>(http::Response::from_parts(
                                    parts,
                                    Full::new(answer),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StsFront { port, calls, task }
    }

    pub fn calls(&self) -> Vec<StsCall> {
        self.calls.lock().unwrap().clone()
    }
}

/// A TLS connector trusting only the CA in the PEM file `ca`.
fn trusting(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(credgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One request to moto on a connection of its own, plain or TLS.
#[derive(Clone)]
struct MotoConnector {
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl MotoConnector {
    async fn exchange(&self, req: http::Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        match &self.tls {
            None => exchange_on(TokioIo::new(tcp), req).await,
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let tls = tls.connect(name, tcp).await.unwrap();
                exchange_on(TokioIo::new(tls), req).await
            }
        }
    }
}

async fn exchange_on<T>(io: T, req: http::Request<Full<Bytes>>) -> (http::response::Parts, Bytes)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}
