//! S3 uploads from the real AWS SDK (boto3) and the real AWS CLI through
//! credgate, into a real moto in signature-checking mode, with the SDKs'
//! default checksums on.
//!
//! Over https the SDKs frame `PutObject` and `UploadPart` bodies as
//! `aws-chunked` with a checksum trailer; over plain http they put the
//! checksum in a header. Either way the object moto stores, read back
//! directly (not through credgate), must be the file byte for byte, with
//! the checksum of the file computed here by zlib, awscrt or hashlib.
//! Small bodies whose framing or checksum is wrong are refused with 400
//! before credgate asks STS for anything, so moto never sees them.
//!
//! Uploads past the first MiB stream to https, far past a small
//! `sanitize.max_buffered_body`: signed unhashed, re-framed with their
//! checksum as trailer. One that fails its framing or checksum, or carries
//! a secret, is stopped before its end: moto never stores it.

mod support;

use serde_json::{json, Value};
use support::moto::{python, Moto, MotoTls, StsFront, SETUP_ACTIONS};
use support::*;

/// Uploads each job of a JSON list with boto3 through the proxy (with
/// dummy keys of the agent's own, which credgate replaces with its
/// signature); prints one result per job: `ok`, or the error.
const UPLOAD: &str = r#"
import boto3, json, sys
from botocore.config import Config
from boto3.s3.transfer import TransferConfig
ep, proxy, verify, jobs = sys.argv[1], sys.argv[2], sys.argv[3] or None, json.loads(sys.argv[4])
cfg = Config(proxies={"http": proxy, "https": proxy}, retries={"max_attempts": 1},
             s3={"addressing_style": "path"})
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1", config=cfg, verify=verify,
                  aws_access_key_id="AKIADUMMYAGENTKEY000", aws_secret_access_key="test-secret-agent-key")
# Checksums only where an operation requires one: a plain body, no aws-chunked.
plain = boto3.client("s3", endpoint_url=ep, region_name="us-east-1", verify=verify,
                     config=cfg.merge(Config(request_checksum_calculation="when_required")),
                     aws_access_key_id="AKIADUMMYAGENTKEY000", aws_secret_access_key="test-secret-agent-key")
mib = 1024 * 1024
out = []
for job in jobs:
    extra = {"ChecksumAlgorithm": job["algorithm"]} if job["algorithm"] else {}
    try:
        if job["how"] == "put_object":
            with open(job["path"], "rb") as f:
                s3.put_object(Bucket="reports", Key=job["key"], Body=f, **extra)
        elif job["how"] == "put_object_plain":
            with open(job["path"], "rb") as f:
                plain.put_object(Bucket="reports", Key=job["key"], Body=f)
        elif job["how"] == "upload_file":
            s3.upload_file(job["path"], "reports", job["key"], ExtraArgs=extra)
        elif job["how"] in ("multipart", "multipart-full-object"):
            if job["how"] == "multipart-full-object":
                # The whole object's CRC32, which CompleteMultipartUpload carries.
                import base64, zlib
                crc = zlib.crc32(open(job["path"], "rb").read()).to_bytes(4, "big")
                extra = {"ChecksumCRC32": base64.b64encode(crc).decode()}
            s3.upload_file(job["path"], "reports", job["key"], ExtraArgs=extra,
                           Config=TransferConfig(multipart_threshold=5 * mib, multipart_chunksize=5 * mib,
                                                 use_threads=False))
        out.append("ok")
    except Exception as e:
        out.append("ERROR %s %s" % (type(e).__name__, e))
print(json.dumps(out))
"#;

/// Reads each key back directly from moto (as the role, with credgate's own
/// IAM user, not through credgate) and compares it with its local file.
/// Prints, per key, whether the bytes are the same, the checksums moto
/// stored, and those of the file computed here.
const READBACK: &str = r#"
import base64, boto3, hashlib, json, sys, zlib
from awscrt import checksums
from awscrt.checksums import XXHash
ep, verify, role_arn, key_id, secret, jobs = sys.argv[1], sys.argv[2] or None, sys.argv[3], sys.argv[4], sys.argv[5], json.loads(sys.argv[6])
kw = dict(endpoint_url=ep, region_name="us-east-1", verify=verify)
sts = boto3.client("sts", aws_access_key_id=key_id, aws_secret_access_key=secret, **kw)
c = sts.assume_role(RoleArn=role_arn, RoleSessionName="readback")["Credentials"]
s3 = boto3.client("s3", aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
                  aws_session_token=c["SessionToken"], **kw)
def xxhash(new, data):
    h = new()
    h.update(data)
    return h.finalize()
def expected(alg, data):
    d = {"CRC32": lambda: zlib.crc32(data).to_bytes(4, "big"),
         "CRC32C": lambda: checksums.crc32c(data).to_bytes(4, "big"),
         "CRC64NVME": lambda: checksums.crc64nvme(data).to_bytes(8, "big"),
         "SHA1": lambda: hashlib.sha1(data).digest(),
         "SHA256": lambda: hashlib.sha256(data).digest(),
         "SHA512": lambda: hashlib.sha512(data).digest(),
         "XXHASH64": lambda: xxhash(XXHash.new_xxhash64, data),
         "XXHASH3": lambda: xxhash(XXHash.new_xxhash3_64, data),
         "XXHASH128": lambda: xxhash(XXHash.new_xxhash3_128, data)}[alg]()
    return base64.b64encode(d).decode()
out = {}
for job in jobs:
    try:
        got = s3.get_object(Bucket="reports", Key=job["key"], ChecksumMode="ENABLED")
    except s3.exceptions.NoSuchKey:
        out[job["key"]] = "absent"
        continue
    body = got["Body"].read()
    data = open(job["path"], "rb").read()
    stored = {k[len("Checksum"):]: v for k, v in got.items() if k.startswith("Checksum") and k != "ChecksumType"}
    out[job["key"]] = {"same": body == data, "len": len(body), "stored": stored,
                       "expected": {a: expected(a, data) for a in stored}}
print(json.dumps(out))
"#;

/// The SDK's choices of checksum algorithm, besides its default (CRC32).
/// credgate checks the first six itself; the XXH family it carries for S3.
const ALGORITHMS: [&str; 9] = [
    "CRC32",
    "CRC32C",
    "CRC64NVME",
    "SHA1",
    "SHA256",
    "SHA512",
    "XXHASH64",
    "XXHASH3",
    "XXHASH128",
];

struct Setup {
    moto: Moto,
    front: StsFront,
    env: Env,
    files: TempDir,
    _tls: Option<MotoTls>,
}

/// moto (on https with `tls`), its STS front, and credgate with a scope
/// that may write under `reports/uploads/` with the role's session.
async fn setup(tls: bool) -> Setup {
    setup_with(tls, "").await
}

/// [`setup`], with `more` added to credgate's configuration.
async fn setup_with(tls: bool, more: &str) -> Setup {
    let tls = tls.then(MotoTls::generate);
    let moto = Moto::start_with(SETUP_ACTIONS, tls.as_ref()).await;
    let front = StsFront::start(&moto).await;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Multipart parts are 5 MiB at least, past the first MiB credgate reads
    // before the pipeline runs: to https they stream (re-signed unhashed),
    // to http they are held whole within sanitize.max_buffered_body.
    let extra = format!(
        r#"
credentials:
  s3:
    aws:
      role_arn: {role_arn}
      region: us-east-1
      duration: 15m
      base: env
      sts_endpoint: http://127.0.0.1:{front}
    inject: {{ sigv4: {{ service: s3, region: us-east-1 }} }}
  sqs:
    aws:
      role_arn: {role_arn}
      region: us-east-1
      duration: 15m
      base: env
      sts_endpoint: http://127.0.0.1:{front}
    inject: {{ sigv4: {{ service: sqs, region: us-east-1 }} }}
scopes:
  uploads:
    - host: 127.0.0.1
      port: {moto}
      schemes: [{scheme}]
      methods: [PUT, POST, GET, HEAD]
      paths: ["/reports/uploads/**"]
      credential: s3
      allow_private: true
  uploads-strip:
    - host: 127.0.0.1
      port: {moto}
      schemes: [{scheme}]
      methods: [PUT]
      paths: ["/reports/uploads/**"]
      credential: s3
      allow_private: true
      on_secret: strip
  queues:
    - host: 127.0.0.1
      port: {moto}
      schemes: [{scheme}]
      methods: [POST]
      paths: ["/"]
      credential: sqs
      allow_private: true
{more}
"#,
        role_arn = moto.role_arn,
        front = front.port,
        moto = moto.port,
    );
    let vars = [
        ("AWS_ACCESS_KEY_ID", moto.key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", moto.secret.as_str()),
    ];
    let env = match &tls {
        Some(tls) => Env::start_trusting(tls.authority(), &extra, &vars).await,
        None => Env::start(&extra, &vars).await,
    };
    Setup {
        moto,
        front,
        env,
        files: TempDir::new(),
        _tls: tls,
    }
}

impl Setup {
    /// A file of `len` pseudo-random bytes named `name`; its path.
    fn file(&self, name: &str, len: usize) -> String {
        let path = self.files.path().join(name);
        std::fs::write(&path, noise(len)).unwrap();
        path.display().to_string()
    }

    /// What boto3 (through credgate) verifies the upstream with: credgate's
    /// CA for https, nothing for http.
    fn agent_verify(&self) -> String {
        if self.moto.ca_cert.is_some() {
            self.env.ca_cert.display().to_string()
        } else {
            String::new()
        }
    }

    async fn upload(&self, jobs: &Value) -> Vec<String> {
        let (id, token) = self.env.start_task(&["uploads"]);
        let proxy = self.env.proxy_url(&id, &token);
        let out = python(&[
            UPLOAD,
            &self.moto.endpoint(),
            &proxy,
            &self.agent_verify(),
            &jobs.to_string(),
        ])
        .await;
        out.expect_code(0);
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|_| panic!("{}", out.all()))
    }

    async fn read_back(&self, jobs: &Value) -> Value {
        let out = python(&[
            READBACK,
            &self.moto.endpoint(),
            &self.moto.verify(),
            &self.moto.role_arn,
            &self.moto.key_id,
            &self.moto.secret,
            &jobs.to_string(),
        ])
        .await;
        out.expect_code(0);
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|_| panic!("{}", out.all()))
    }

    /// `aws s3 cp` of the file at `path` to `uploads/{name}` through
    /// credgate, as the task `id`, with the checksum `algorithm` (the CLI's
    /// default when empty).
    async fn aws_cp(&self, id: &str, token: &str, path: &str, name: &str, algorithm: &str) {
        let mut cmd = std::process::Command::new("aws");
        cmd.args(["s3", "cp", path, &format!("s3://reports/uploads/{name}")])
            .args(["--endpoint-url", &self.moto.endpoint()])
            .args(["--region", "us-east-1"])
            .arg("--ca-bundle")
            .arg(&self.env.ca_cert);
        if !algorithm.is_empty() {
            cmd.args(["--checksum-algorithm", algorithm]);
        }
        let no_file = |name: &str| self.files.path().join(name);
        clean_env(&mut cmd)
            .env("HTTPS_PROXY", self.env.proxy_url(id, token))
            .env("AWS_ACCESS_KEY_ID", "AKIADUMMYAGENTKEY000")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret-agent-key")
            .env("AWS_CONFIG_FILE", no_file("no-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", no_file("no-credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let out = run_cli(cmd).await;
        out.expect_code(0);
        assert!(out.stdout.contains("upload:"), "{}", out.all());
    }

    /// Every job's PUT came to credgate framed as aws-chunked (more bytes
    /// than its file), or not (exactly its file): so the test exercises the
    /// framing it means to.
    async fn assert_framed(&self, jobs: &Value, framed: bool) {
        let records = puts(&self.env).await;
        for job in jobs.as_array().unwrap() {
            let path = format!("/reports/{}", job["key"].as_str().unwrap());
            let len = std::fs::metadata(job["path"].as_str().unwrap())
                .unwrap()
                .len();
            let r = records
                .iter()
                .find(|r| r.path.as_deref() == Some(path.as_str()))
                .unwrap_or_else(|| panic!("no record of {path}"));
            assert_eq!(r.bytes_in > len, framed, "{path}: {len} bytes, {r:?}");
        }
    }

    /// Every job's object is its file, with exactly the checksum `algorithm`
    /// of the job (CRC32, the SDKs' default, when it names none), and that
    /// checksum is the file's.
    async fn assert_stored(&self, jobs: &Value) {
        let stored = self.read_back(jobs).await;
        for job in jobs.as_array().unwrap() {
            let key = job["key"].as_str().unwrap();
            let got = &stored[key];
            assert_eq!(got["same"], true, "{key}: {got}");
            let algorithm = match job["algorithm"].as_str().unwrap() {
                "" => "CRC32",
                a => a,
            };
            let sums = got["stored"].as_object().unwrap();
            assert_eq!(sums.keys().collect::<Vec<_>>(), [algorithm], "{key}: {got}");
            assert_eq!(got["stored"], got["expected"], "{key}: {got}");
        }
    }
}

/// The records of the PUT requests (not of the CONNECTs that carried them).
async fn puts(env: &Env) -> Vec<credgate::audit::DecisionRecord> {
    let mut records = env.request_records().await;
    records.retain(|r| r.method.as_deref() == Some("PUT"));
    records
}

fn job(how: &str, key: &str, path: &str, algorithm: &str) -> Value {
    json!({"how": how, "key": format!("uploads/{key}"), "path": path, "algorithm": algorithm})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_uploads_over_https_are_stored_byte_for_byte_with_their_checksums() {
    let s = setup(true).await;
    let small = s.file("small.txt", 12);
    let one_chunk = s.file("200k.bin", 200 << 10);
    let chunks = s.file("2.5m.bin", (5 << 20) / 2);
    let empty = s.file("empty.txt", 0);
    let mut jobs = vec![
        job("put_object", "small.txt", &small, ""),
        job("upload_file", "small-file.txt", &small, ""),
        job("put_object", "200k.bin", &one_chunk, ""),
        job("upload_file", "200k-file.bin", &one_chunk, ""),
        // More than one aws-chunked chunk (botocore's are 1 MiB).
        job("put_object", "2.5m.bin", &chunks, ""),
        job("put_object", "empty.txt", &empty, ""),
    ];
    for algorithm in ALGORITHMS {
        jobs.push(job(
            "put_object",
            &format!("200k-{algorithm}.bin"),
            &one_chunk,
            algorithm,
        ));
        jobs.push(job(
            "upload_file",
            &format!("small-{algorithm}.txt"),
            &small,
            algorithm,
        ));
    }
    let jobs = Value::Array(jobs);
    let results = s.upload(&jobs).await;
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    s.assert_framed(&jobs, true).await;
    s.assert_stored(&jobs).await;

    // Every upload went out as one allowed, 200-answered request.
    let records = puts(&s.env).await;
    assert_eq!(records.len(), jobs.as_array().unwrap().len(), "{records:?}");
    for r in records {
        assert_eq!(
            r.upstream.as_ref().and_then(|u| u.status),
            Some(200),
            "{r:?}"
        );
    }
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_uploads_a_20_mib_file_in_parts_and_in_one_piece() {
    let s = setup(true).await;
    let big = s.file("20m.bin", 20 << 20);
    // upload_file's defaults split it into 8 MiB parts; put_object sends it
    // whole, past the first MiB credgate reads before the pipeline runs.
    let jobs = Value::Array(vec![
        job("upload_file", "20m-parts.bin", &big, ""),
        job("put_object", "20m-whole.bin", &big, ""),
    ]);
    let results = s.upload(&jobs).await;
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    let stored = s.read_back(&jobs).await;
    for key in ["uploads/20m-parts.bin", "uploads/20m-whole.bin"] {
        assert_eq!(stored[key]["same"], true, "{key}: {}", stored[key]);
    }
    // The object in parts has a checksum of its parts' checksums.
    let whole = &stored["uploads/20m-whole.bin"];
    assert_eq!(whole["stored"], whole["expected"], "{whole}");
    let records = puts(&s.env).await;
    // Three parts and one whole object, each signed by credgate and
    // accepted by moto's signature check.
    assert_eq!(records.len(), 4, "{records:?}");
    for r in &records {
        assert_eq!(
            r.upstream.as_ref().and_then(|u| u.status),
            Some(200),
            "{r:?}"
        );
    }
    let whole = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/reports/uploads/20m-whole.bin"))
        .unwrap();
    assert!(whole.bytes_in > 20 << 20, "{whole:?}");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_s3_cp_over_https_stores_the_file() {
    let s = setup(true).await;
    let (id, token) = s.env.start_task(&["uploads"]);
    let small = s.file("cli-small.txt", 12);
    let one_chunk = s.file("cli-200k.bin", 200 << 10);
    let mut uploads = vec![
        ("cli-small.txt".to_string(), &small, ""),
        ("cli-200k.bin".to_string(), &one_chunk, ""),
    ];
    for algorithm in ALGORITHMS {
        uploads.push((format!("cli-{algorithm}.bin"), &one_chunk, algorithm));
    }
    let mut jobs = Vec::new();
    for (name, path, algorithm) in uploads {
        s.aws_cp(&id, &token, path, &name, algorithm).await;
        jobs.push(job("cli", &name, path, algorithm));
    }
    let jobs = Value::Array(jobs);
    s.assert_framed(&jobs, true).await;
    s.assert_stored(&jobs).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_stores_every_part() {
    let s = setup(true).await;
    // Three parts: 5 MiB, 5 MiB and 1 MiB, each an aws-chunked UploadPart.
    let big = s.file("11m.bin", 11 << 20);
    for (how, algorithm) in [
        ("multipart", ""),
        ("multipart", "SHA256"),
        ("multipart-full-object", ""),
    ] {
        let key = format!("11m-{how}-{algorithm}.bin");
        let jobs = json!([job(how, &key, &big, algorithm)]);
        let results = s.upload(&jobs).await;
        assert_eq!(results, ["ok"], "{how} {algorithm}");
        let stored = s.read_back(&jobs).await;
        let got = &stored[format!("uploads/{key}")];
        assert_eq!(got["same"], true, "{got}");
        assert_eq!(got["len"], 11 << 20);
    }
    // Three UploadPart requests for each upload.
    assert_eq!(puts(&s.env).await.len(), 9);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_uploads_over_http_carry_the_header_checksum() {
    let s = setup(false).await;
    let small = s.file("small.txt", 12);
    let one = s.file("200k.bin", 200 << 10);
    let mut jobs = vec![
        job("put_object", "http-small.txt", &small, ""),
        job("put_object", "http-200k.bin", &one, ""),
    ];
    for algorithm in ALGORITHMS {
        jobs.push(job(
            "put_object",
            &format!("http-{algorithm}.bin"),
            &one,
            algorithm,
        ));
    }
    let jobs = Value::Array(jobs);
    let results = s.upload(&jobs).await;
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    // Over http the SDK sends the checksum in a header, the body as it is.
    s.assert_framed(&jobs, false).await;
    s.assert_stored(&jobs).await;
    s.env.stop().await;
}

/// A PUT with an aws-chunked `body` and `headers` through credgate by curl;
/// the status and the body of the answer.
async fn put_framed(s: &Setup, key: &str, headers: &[String], body: &[u8]) -> (u16, Value) {
    let (id, token) = s.env.start_task(&["uploads"]);
    let path = s.files.path().join(format!("{key}.body"));
    std::fs::write(&path, body).unwrap();
    let mut cmd = curl_via(
        &s.env.proxy_url(&id, &token),
        &s.env.ca_cert,
        &format!("{}/reports/uploads/{key}", s.moto.endpoint()),
    );
    cmd.args(["-X", "PUT", "--data-binary"])
        .arg(format!("@{}", path.display()));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = run_cli(cmd).await;
    out.expect_code(0);
    let (status, body) = curl_status(&out);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The headers of an SDK's aws-chunked upload of `len` bytes, CRC32 trailer
/// (with a content type, or curl sends a form type, which moto would parse
/// the body as).
fn chunked_headers(len: usize) -> Vec<String> {
    vec![
        "Content-Encoding: aws-chunked".into(),
        "Content-Type: application/octet-stream".into(),
        "x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER".into(),
        format!("x-amz-decoded-content-length: {len}"),
        "x-amz-trailer: x-amz-checksum-crc32".into(),
        "x-amz-sdk-checksum-algorithm: CRC32".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_aws_chunked_bodies_are_refused_and_moto_receives_nothing() {
    let s = setup(true).await;
    let content = b"hello, moto\n";
    // zlib's CRC-32 of `content`, base64.
    let crc = "UFGeNw==";
    let good = format!("c\r\nhello, moto\n\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n");
    let cases: Vec<(&str, Vec<String>, String, &str)> = vec![
        (
            "bad-size",
            chunked_headers(12),
            good.replacen("c\r\n", "z\r\n", 1),
            "payload_malformed",
        ),
        (
            "short-size",
            chunked_headers(12),
            good.replacen("c\r\n", "b\r\n", 1),
            "payload_malformed",
        ),
        (
            "bad-trailer",
            chunked_headers(12),
            good.replacen("x-amz-checksum-crc32:", "x-amz-checksum-crc32 ", 1),
            "payload_malformed",
        ),
        (
            "unannounced-trailer",
            chunked_headers(12),
            good.replacen("x-amz-checksum-crc32", "x-amz-checksum-sha1", 1),
            "payload_malformed",
        ),
        (
            "no-trailer",
            chunked_headers(12),
            "c\r\nhello, moto\n\r\n0\r\n\r\n".into(),
            "payload_malformed",
        ),
        (
            "wrong-length",
            chunked_headers(13),
            good.clone(),
            "payload_malformed",
        ),
        (
            "wrong-checksum",
            chunked_headers(12),
            good.replacen(crc, "AAAAAA==", 1),
            "payload_checksum_mismatch",
        ),
        (
            "unknown-streaming",
            {
                let mut h = chunked_headers(12);
                h[2] = "x-amz-content-sha256: STREAMING-AWS4-FUTURE-PAYLOAD".into();
                h
            },
            good.clone(),
            "payload_unsupported",
        ),
    ];
    for (key, headers, body, reason) in &cases {
        let (status, answer) = put_framed(&s, key, headers, body.as_bytes()).await;
        assert_eq!(status, 400, "{key}: {answer}");
        assert_eq!(answer["error"], *reason, "{key}: {answer}");
    }
    // Refused before credgate asked STS for a session: nothing can have
    // been signed, let alone sent.
    assert!(s.front.calls().is_empty(), "{:?}", s.front.calls());
    let records = puts(&s.env).await;
    assert_eq!(records.len(), cases.len(), "{records:?}");
    for r in &records {
        assert!(r.upstream.is_none(), "{r:?}");
        assert!(r.credential.is_none(), "{r:?}");
    }

    // A coding credgate does not know, on a request it would sign: refused
    // after the credential is fetched, before anything is sent.
    let mut headers = chunked_headers(12);
    headers[0] = "Content-Encoding: aws-chunked, x-future".into();
    let (status, answer) = put_framed(&s, "unknown-coding", &headers, good.as_bytes()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "payload_unsupported", "{answer}");

    // The good body goes through, so the refusals above were the framing's.
    let (status, answer) = put_framed(&s, "good", &chunked_headers(12), good.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");

    let mut keys: Vec<Value> = cases
        .iter()
        .map(|(key, ..)| json!({"key": format!("uploads/{key}"), "path": ""}))
        .collect();
    keys.push(json!({"key": "uploads/unknown-coding", "path": ""}));
    let stored = s.read_back(&Value::Array(keys.clone())).await;
    for key in &keys {
        assert_eq!(stored[key["key"].as_str().unwrap()], "absent", "{stored}");
    }
    let content_file = s.files.path().join("good.content");
    std::fs::write(&content_file, content).unwrap();
    let good_job = json!([{"key": "uploads/good", "path": content_file.display().to_string(), "algorithm": ""}]);
    s.assert_stored(&good_job).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_split_across_chunks_is_found_in_the_payload() {
    let s = setup(true).await;
    let key_id = format!("AKIA{}", random_hex(8).to_uppercase());
    let (head, tail) = key_id.split_at(9);
    let payload = format!("key={key_id}\n");
    let crc = {
        let out = python(&[
            "import base64,sys,zlib; print(base64.b64encode(zlib.crc32(sys.argv[1].encode()).to_bytes(4,'big')).decode())",
            &payload,
        ])
        .await;
        out.stdout.trim().to_string()
    };
    let first = format!("key={head}");
    let second = format!("{tail}\n");
    let body = format!(
        "{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n",
        first.len(),
        second.len()
    );
    assert!(!body.contains(&key_id));
    let (status, answer) = put_framed(
        &s,
        "split-secret",
        &chunked_headers(payload.len()),
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "secret_in_request", "{answer}");
    let records = puts(&s.env).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].findings, ["aws_access_key_id"], "{records:?}");
    assert!(s.front.calls().is_empty());
    s.env.stop().await;
}

/// credgate's bound on what it holds whole, far below the uploads below: an
/// upload past it streams (over https), or is refused with 413.
const SMALL_BOUND: &str = "sanitize: { max_buffered_body: 4MiB }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_far_past_max_buffered_body_stream_through() {
    let s = setup_with(true, SMALL_BOUND).await;
    let big = s.file("24m.bin", 24 << 20);
    let jobs = Value::Array(vec![
        // aws-chunked with the SDK's CRC32 trailer, re-framed with it.
        job("put_object", "24m-crc32.bin", &big, ""),
        job("put_object", "24m-sha256.bin", &big, "SHA256"),
        // No checksum: a plain body, signed UNSIGNED-PAYLOAD as it came.
        job("put_object_plain", "24m-plain.bin", &big, ""),
    ]);
    let results = s.upload(&jobs).await;
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    let stored = s.read_back(&jobs).await;
    for key in [
        "uploads/24m-crc32.bin",
        "uploads/24m-sha256.bin",
        "uploads/24m-plain.bin",
    ] {
        assert_eq!(stored[key]["same"], true, "{key}: {}", stored[key]);
        assert_eq!(stored[key]["len"], 24 << 20, "{key}");
    }
    // The checksum the SDK sent in its trailer is the one stored.
    s.assert_stored(&json!([jobs[0], jobs[1]])).await;
    let records = puts(&s.env).await;
    assert_eq!(records.len(), 3, "{records:?}");
    for r in &records {
        assert_eq!(
            r.upstream.as_ref().and_then(|u| u.status),
            Some(200),
            "{r:?}"
        );
        assert!(r.bytes_in >= 24 << 20, "{r:?}");
    }
    let plain = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/reports/uploads/24m-plain.bin"))
        .unwrap();
    assert_eq!(plain.bytes_in, 24 << 20, "sent plain: {plain:?}");
    // A client that sends no AWS header at all (credgate signs for it).
    let data = std::fs::read(&big).unwrap();
    let bare = ["Content-Type: application/octet-stream".to_string()];
    let (status, answer) = put_streamed(&s, "24m-bare.bin", &bare, &data).await;
    assert_eq!(status, 200, "{answer}");
    let stored = s
        .read_back(&json!([job("cli", "24m-bare.bin", &big, "")]))
        .await;
    assert_eq!(stored["uploads/24m-bare.bin"]["same"], true, "{stored}");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_with_parts_past_max_buffered_body_streams_every_part() {
    let s = setup_with(true, SMALL_BOUND).await;
    // 8 MiB parts (upload_file's default), twice the bound; with the SDK's
    // default checksum and with SHA-256 (each part must carry its own).
    let big = s.file("20m.bin", 20 << 20);
    let jobs = Value::Array(vec![
        job("upload_file", "20m-parts.bin", &big, ""),
        job("upload_file", "20m-parts-sha256.bin", &big, "SHA256"),
    ]);
    let results = s.upload(&jobs).await;
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    // And `aws s3 cp`, in the CLI's 8 MiB parts.
    let (id, token) = s.env.start_task(&["uploads"]);
    s.aws_cp(&id, &token, &big, "20m-cli.bin", "").await;
    let jobs = Value::Array(vec![
        jobs[0].clone(),
        jobs[1].clone(),
        job("cli", "20m-cli.bin", &big, ""),
    ]);
    let stored = s.read_back(&jobs).await;
    for key in [
        "uploads/20m-parts.bin",
        "uploads/20m-parts-sha256.bin",
        "uploads/20m-cli.bin",
    ] {
        assert_eq!(stored[key]["same"], true, "{key}: {}", stored[key]);
    }
    // Three UploadPart requests each (8, 8 and 4 MiB).
    let records = puts(&s.env).await;
    assert_eq!(records.len(), 9, "{records:?}");
    for r in &records {
        assert_eq!(
            r.upstream.as_ref().and_then(|u| u.status),
            Some(200),
            "{r:?}"
        );
    }
    s.env.stop().await;
}

/// An aws-chunked body of `payload` in 64 KiB chunks, with `trailer` as
/// its CRC32 trailer.
fn framed(payload: &[u8], trailer: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 4096);
    for chunk in payload.chunks(64 << 10) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{trailer}\r\n\r\n").as_bytes());
    body
}

/// A PUT of a large `body` to `uploads/{key}` with `headers`; see
/// [`send_raw`].
async fn put_streamed(s: &Setup, key: &str, headers: &[String], body: &[u8]) -> (u16, Value) {
    put_streamed_as(s, "uploads", key, headers, body).await
}

/// [`put_streamed`] as a task of `scope`.
async fn put_streamed_as(
    s: &Setup,
    scope: &str,
    key: &str,
    headers: &[String],
    body: &[u8],
) -> (u16, Value) {
    let path = format!("/reports/uploads/{key}");
    let (status, answer) = send_raw(s, scope, "PUT", &path, headers, body).await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

/// A request with a large `body` and `headers` as a task of `scope`,
/// through a tunnel of its own, the body written in pieces while the
/// answer is read: credgate may answer (and close) before the body is all
/// sent, which a client like curl may report as a failed send instead of
/// the answer. The status and the body of the answer.
async fn send_raw(
    s: &Setup,
    scope: &str,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let (id, token) = s.env.start_task(&[scope]);
    let target = format!("127.0.0.1:{}", s.moto.port);
    let mut tls = tunnel(&s.env, &proxy_auth(&id, &token), &target, "127.0.0.1")
        .await
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nContent-Length: {}\r\n{}\r\n\r\n",
        body.len(),
        headers.join("\r\n")
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let body = body.to_vec();
    let send = tokio::spawn(async move {
        for piece in body.chunks(64 << 10) {
            if writer.write_all(piece).await.is_err() {
                return writer;
            }
        }
        // A TLS writer may still hold the last records when the socket was
        // full: only a flush sends them.
        let _ = writer.flush().await;
        writer
    });
    // The answer comes once the body is through (or stopped), which on a
    // loaded machine can take a while; the connection closes after it.
    let answer = read_until_quiet(&mut reader, std::time::Duration::from_secs(180)).await;
    drop(send.await);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_string())
}

/// zlib's CRC-32 of `data`, base64, as the SDKs send it.
async fn crc32(s: &Setup, data: &[u8]) -> String {
    let path = s.files.path().join("crc.input");
    std::fs::write(&path, data).unwrap();
    let out = python(&[
        "import base64,sys,zlib; print(base64.b64encode(zlib.crc32(open(sys.argv[1],'rb').read()).to_bytes(4,'big')).decode())",
        &path.display().to_string(),
    ])
    .await;
    out.expect_code(0);
    out.stdout.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_upload_that_fails_its_checks_at_the_end_is_never_stored() {
    let s = setup_with(true, SMALL_BOUND).await;
    let payload = noise(6 << 20);
    let crc = crc32(&s, &payload).await;
    let good = framed(&payload, &crc);
    let wrong_crc = if crc == "AAAAAA==" {
        "AQAAAA=="
    } else {
        "AAAAAA=="
    };
    // A chunk in the middle one byte shorter than its size says.
    let mut bad_chunk = good.clone();
    let middle = (3 << 20) / (64 << 10) * ((64 << 10) + 9);
    assert_eq!(&bad_chunk[middle..middle + 7], b"10000\r\n");
    bad_chunk[middle..middle + 5].copy_from_slice(b"0ffff");
    let cases = [
        (
            "streamed-wrong-checksum",
            framed(&payload, wrong_crc),
            "payload_checksum_mismatch",
        ),
        ("streamed-bad-chunk", bad_chunk, "payload_malformed"),
    ];
    for (key, body, reason) in &cases {
        let (status, answer) = put_streamed(&s, key, &chunked_headers(payload.len()), body).await;
        assert_eq!(status, 400, "{key}: {answer}");
        assert_eq!(answer["error"], *reason, "{key}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("incomplete request"),
            "{key}: {answer}"
        );
    }
    // The same body with its right checksum is stored: the refusals were
    // the checksum's and the chunk's.
    let (status, answer) =
        put_streamed(&s, "streamed-good", &chunked_headers(payload.len()), &good).await;
    assert_eq!(status, 200, "{answer}");
    let good_file = s.files.path().join("streamed-good.content");
    std::fs::write(&good_file, &payload).unwrap();
    let keys = json!([
        {"key": "uploads/streamed-wrong-checksum", "path": ""},
        {"key": "uploads/streamed-bad-chunk", "path": ""},
        {"key": "uploads/streamed-good", "path": good_file.display().to_string(), "algorithm": ""},
    ]);
    let stored = s.read_back(&keys).await;
    assert_eq!(
        stored["uploads/streamed-wrong-checksum"], "absent",
        "{stored}"
    );
    assert_eq!(stored["uploads/streamed-bad-chunk"], "absent", "{stored}");
    assert_eq!(stored["uploads/streamed-good"]["same"], true, "{stored}");
    // The records say why, and that the upstream was reached (the upload
    // streamed) without answering.
    let records = puts(&s.env).await;
    for (key, _, reason) in &cases {
        let path = format!("/reports/uploads/{key}");
        let r = records
            .iter()
            .find(|r| r.path.as_deref() == Some(path.as_str()))
            .unwrap();
        assert_eq!(r.reason.map(|r| r.as_str()), Some(*reason), "{r:?}");
        assert!(
            r.upstream.as_ref().and_then(|u| u.status).is_none(),
            "{r:?}"
        );
    }
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_the_middle_of_a_streamed_upload_stops_it_before_it_is_stored() {
    let s = setup_with(true, SMALL_BOUND).await;
    let key_id = format!("AKIA{}", random_hex(8).to_uppercase());
    let mut payload = noise(8 << 20);
    // Across a chunk boundary of the framing, 5 MiB in, set apart from the
    // noise around it.
    let at = (5 << 20) - 7;
    payload[at - 1] = b' ';
    payload[at..at + key_id.len()].copy_from_slice(key_id.as_bytes());
    payload[at + key_id.len()] = b' ';
    let crc = crc32(&s, &payload).await;
    let body = framed(&payload, &crc);
    let headers = chunked_headers(payload.len());
    let (status, answer) = put_streamed(&s, "streamed-secret", &headers, &body).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "secret_in_request", "{answer}");
    // A plain body (no framing, signed unhashed) the same way.
    let headers = [
        "Content-Type: application/octet-stream".to_string(),
        "x-amz-content-sha256: UNSIGNED-PAYLOAD".to_string(),
    ];
    let (status, answer) = put_streamed(&s, "plain-secret", &headers, &payload).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "secret_in_request", "{answer}");
    let stored = s
        .read_back(&json!([
            {"key": "uploads/streamed-secret", "path": ""},
            {"key": "uploads/plain-secret", "path": ""},
        ]))
        .await;
    assert_eq!(stored["uploads/streamed-secret"], "absent", "{stored}");
    assert_eq!(stored["uploads/plain-secret"], "absent", "{stored}");
    let records = puts(&s.env).await;
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert_eq!(r.findings, ["aws_access_key_id"], "{r:?}");
        assert!(r.bytes_in < 8 << 20, "stopped before the end: {r:?}");
    }
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_stripping_rule_a_streamed_upload_is_stored_masked_with_the_checksum_of_that() {
    let s = setup_with(true, SMALL_BOUND).await;
    let key_id = format!("AKIA{}", random_hex(8).to_uppercase());
    let mut payload = noise(6 << 20);
    let at = 4 << 20;
    payload[at - 1] = b' ';
    payload[at..at + key_id.len()].copy_from_slice(key_id.as_bytes());
    payload[at + key_id.len()] = b' ';
    let crc = crc32(&s, &payload).await;
    let body = framed(&payload, &crc);
    let headers = chunked_headers(payload.len());
    let (status, answer) =
        put_streamed_as(&s, "uploads-strip", "streamed-masked", &headers, &body).await;
    assert_eq!(status, 200, "{answer}");
    // Stored with the secret masked in place, and with the CRC32 of what
    // was stored (not the agent's, which S3 would refuse).
    let mut masked = payload.clone();
    masked[at..at + key_id.len()].fill(b'*');
    let masked_file = s.files.path().join("streamed-masked.content");
    std::fs::write(&masked_file, &masked).unwrap();
    let path = masked_file.display().to_string();
    s.assert_stored(&json!([job("cli", "streamed-masked", &path, "")]))
        .await;
    let records = puts(&s.env).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].findings, ["aws_access_key_id"], "{records:?}");
    assert_eq!(
        records[0].upstream.as_ref().and_then(|u| u.status),
        Some(200)
    );
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_an_upload_past_max_buffered_body_is_refused_with_413() {
    // To plain http S3 would take the payload unprotected: it is held whole
    // to be signed, and refused past the bound.
    let s = setup_with(false, SMALL_BOUND).await;
    let big = s.file("6m.bin", 6 << 20);
    let jobs = json!([job("put_object", "http-6m.bin", &big, "")]);
    let results = s.upload(&jobs).await;
    assert!(results[0].starts_with("ERROR"), "{results:?}");
    let records = puts(&s.env).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0].reason.map(|r| r.as_str()),
        Some("body_too_large"),
        "{records:?}"
    );
    assert!(
        records[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("max_buffered_body"),
        "{records:?}"
    );
    assert!(s.front.calls().is_empty(), "refused before any credential");
    s.env.stop().await;
}

/// A `POST /` as a task of the scope `queues` (SQS, signed by the
/// payload's hash); the status and the answer's body.
async fn post_to_sqs(s: &Setup, body: &[u8]) -> (u16, String) {
    let headers = ["Content-Type: application/x-www-form-urlencoded".to_string()];
    send_raw(s, "queues", "POST", "/", &headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_for_another_service_is_held_whole_scanned_hashed_and_bounded() {
    let s = setup_with(true, SMALL_BOUND).await;
    // Past the first MiB, within the bound: held whole and signed by its
    // SHA-256, which moto checks (it then refuses the action, which the
    // role's policy does not grant: the signature was good).
    let form = |pad: usize, tail: &str| {
        let mut body = b"Action=ListQueues&Version=2012-11-05&Pad=".to_vec();
        body.resize(body.len() + pad, b'a');
        body.extend_from_slice(tail.as_bytes());
        body
    };
    let (status, answer) = post_to_sqs(&s, &form(3 << 20, "")).await;
    assert!(
        !answer.contains("SignatureDoesNotMatch"),
        "{status} {answer}"
    );
    assert!(answer.contains("AccessDenied"), "{status} {answer}");
    // A secret after the first MiB is found in the held body.
    let key_id = format!("AKIA{}", random_hex(8).to_uppercase());
    let tail = format!("&Note=+{key_id}+");
    let (status, answer) = post_to_sqs(&s, &form(3 << 20, &tail)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("secret_in_request"), "{answer}");
    assert!(answer.contains("Nothing was forwarded"), "{answer}");
    // Past the bound: 413, saying which bound.
    let (status, answer) = post_to_sqs(&s, &form(6 << 20, "")).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("max_buffered_body"), "{answer}");
    let mut records = s.env.request_records().await;
    records.retain(|r| r.method.as_deref() == Some("POST"));
    let reasons: Vec<_> = records
        .iter()
        .map(|r| r.reason.map(|r| r.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            Some("allowed"),
            Some("secret_in_request"),
            Some("body_too_large")
        ],
        "{records:?}"
    );
    assert_eq!(records[1].findings, ["aws_access_key_id"], "{records:?}");
    assert!(records[1].upstream.is_none(), "{records:?}");
    assert!(records[2].upstream.is_none(), "{records:?}");
    s.env.stop().await;
}
