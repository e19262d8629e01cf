//! The `aws` credential source and SigV4 re-signing against a real moto
//! server in auth mode (`moto_server` from the `moto[server]` Python
//! package, see `support/moto.rs`), through the real proxy.
//!
//! credgate reaches STS through a small recording front that counts the
//! calls and keeps what was sent and answered: moto does not enforce
//! session policies, so the Policy credgate sent is asserted there, and the
//! session keys STS answered are what must never reach the agent or the log.
//!
//! moto serves plain http on 127.0.0.1, so the rules say `schemes: [http]`
//! and `allow_private: true` (credentials go in cleartext only to loopback).

mod support;

use serde_json::Value;
use support::moto::{python, Moto, StsFront};
use support::*;

/// An agent using boto3 with keys of its own (dummy ones): prints the
/// object, or `ERROR <code>` when S3 refuses.
const AGENT: &str = r#"
import boto3, sys
from botocore.config import Config
ep, key_id, secret, proxy = sys.argv[1:5]
cfg = Config(proxies={"http": proxy}, retries={"max_attempts": 1}) if proxy else Config(retries={"max_attempts": 1})
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1", config=cfg,
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
try:
    print(s3.get_object(Bucket="reports", Key="q1.txt")["Body"].read().decode())
except s3.exceptions.ClientError as e:
    print("ERROR", e.response["Error"]["Code"])
"#;

const POLICY: &str = r#"{ Version: "2012-10-17", Statement: [ { Effect: Allow, Action: ["s3:GetObject"], Resource: ["arn:aws:s3:::reports/*"] } ] }"#;

struct Setup {
    moto: Moto,
    front: StsFront,
    env: Env,
}

async fn setup() -> Setup {
    let moto = Moto::start().await;
    let front = StsFront::start(&moto).await;
    let extra = format!(
        r#"
credentials:
  s3-reports:
    aws:
      role_arn: {role_arn}
      region: us-east-1
      duration: 15m
      base: env
      sts_endpoint: http://127.0.0.1:{front}
    inject: {{ sigv4: {{ service: s3, region: us-east-1 }} }}
scopes:
  reports:
    - host: 127.0.0.1
      port: {moto}
      schemes: [http]
      methods: [GET, HEAD]
      paths: ["/reports/**"]
      credential: s3-reports
      allow_private: true
      narrowing: {{ policy: {POLICY} }}
    - host: 127.0.0.1
      port: {moto}
      schemes: [http]
      methods: [PUT]
      paths: ["/reports/uploads/*"]
      credential: s3-reports
      allow_private: true
"#,
        role_arn = moto.role_arn,
        front = front.port,
        moto = moto.port,
    );
    let env = Env::start(
        &extra,
        &[
            ("AWS_ACCESS_KEY_ID", &moto.key_id),
            ("AWS_SECRET_ACCESS_KEY", &moto.secret),
        ],
    )
    .await;
    Setup { moto, front, env }
}

/// `curl` through credgate, with `--aws-sigv4` and dummy keys of the agent's
/// own (which credgate strips and replaces with its signature).
async fn curl_get(s: &Setup, id: &str, token: &str, path: &str) -> Outcome {
    let dummy = format!("AKIADUMMY{}:{}", random_hex(4), test_secret());
    let cmd = curl([
        "-i",
        "-x",
        &s.env.proxy_url(id, token),
        "--aws-sigv4",
        "aws:amz:us-east-1:s3",
        "--user",
        &dummy,
        &format!("{}{path}", s.moto.endpoint()),
    ]);
    run_cli(cmd).await
}

fn issues(records: &[credgate::audit::DecisionRecord]) -> usize {
    records
        .iter()
        .filter(|r| r.event.as_str() == "credential.issue")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_boto3_read_s3_through_credgate_and_only_its_signature_is_accepted() {
    let s = setup().await;
    let dummy_id = format!("AKIADUMMY{}", random_hex(6).to_uppercase());
    let dummy_secret = test_secret();

    // The agent's own keys alone are refused by moto.
    let direct = python(&[AGENT, &s.moto.endpoint(), &dummy_id, &dummy_secret, ""]).await;
    direct.expect_code(0);
    assert_eq!(
        direct.stdout.trim(),
        "ERROR InvalidAccessKeyId",
        "{direct:?}"
    );

    let (id, token) = s.env.start_task(&["reports"]);
    let by_curl = curl_get(&s, &id, &token, "/reports/q1.txt").await;
    by_curl.expect_code(0);
    assert!(
        by_curl.stdout.starts_with("HTTP/1.1 200"),
        "{}",
        by_curl.all()
    );
    assert!(
        by_curl.stdout.ends_with(&s.moto.object),
        "{}",
        by_curl.all()
    );

    let proxy = s.env.proxy_url(&id, &token);
    let by_boto3 = python(&[AGENT, &s.moto.endpoint(), &dummy_id, &dummy_secret, &proxy]).await;
    by_boto3.expect_code(0);
    assert_eq!(by_boto3.stdout.trim(), s.moto.object, "{}", by_boto3.all());

    // One session for the task, reused for both requests.
    let calls = s.front.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.param("Action").as_deref(), Some("AssumeRole"));
    assert_eq!(call.param("RoleArn"), Some(s.moto.role_arn.clone()));
    assert_eq!(call.param("DurationSeconds").as_deref(), Some("900"));
    let session = call.param("RoleSessionName").unwrap();
    assert!(
        session.starts_with("credgate-") && session.len() <= 64,
        "{session}"
    );

    // Neither the session keys nor credgate's own keys reach the agent or the log.
    let log = s.env.log_text().await;
    let secrets = [
        call.answer_field("AccessKeyId"),
        call.answer_field("SecretAccessKey"),
        call.answer_field("SessionToken"),
        s.moto.key_id.clone(),
        s.moto.secret.clone(),
    ];
    for secret in &secrets {
        assert!(secret.len() >= 16, "{secret}");
        assert!(!by_curl.all().contains(secret.as_str()));
        assert!(!by_boto3.all().contains(secret.as_str()));
        assert!(!log.contains(secret.as_str()), "secret in the decision log");
    }
    let records = s.env.records().await;
    assert_eq!(issues(&records), 1);
    let requests: Vec<_> = records
        .iter()
        .filter(|r| r.event.as_str() == "request")
        .collect();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(
            r.upstream.as_ref().and_then(|u| u.status),
            Some(200),
            "{r:?}"
        );
        assert_eq!(r.credential.as_ref().unwrap().source, "aws");
    }

    // STS cannot end a session: the task end says so instead of claiming a revocation.
    s.env.end_task(&id).await;
    let records = s.env.records().await;
    let revoke = records
        .iter()
        .find(|r| r.event.as_str() == "credential.revoke")
        .expect("a credential.revoke record");
    assert_eq!(
        revoke.message.as_deref(),
        Some("the source has no revocation; the credential expires on its own"),
        "{revoke:?}"
    );
    assert!(revoke.credential.as_ref().unwrap().expires_at.is_some());
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outside_the_rule_is_denied_before_sts_is_called() {
    let s = setup().await;
    let (id, token) = s.env.start_task(&["reports"]);
    // Another bucket, then a write: no rule allows either.
    let other = curl_get(&s, &id, &token, "/payroll/q1.txt").await;
    other.expect_code(0);
    assert!(other.stdout.starts_with("HTTP/1.1 403"), "{}", other.all());
    let put = run_cli(curl([
        "-i",
        "-x",
        &s.env.proxy_url(&id, &token),
        "-X",
        "PUT",
        "--data-binary",
        "overwrite",
        &format!("{}/reports/q1.txt", s.moto.endpoint()),
    ]))
    .await;
    assert!(put.stdout.starts_with("HTTP/1.1 403"), "{}", put.all());
    assert!(s.front.calls().is_empty(), "{:?}", s.front.calls());
    let records = s.env.records().await;
    assert_eq!(issues(&records), 0);
    let denied = records
        .iter()
        .filter(|r| r.event.as_str() == "request" && r.upstream.is_none())
        .count();
    assert_eq!(denied, 2, "{records:?}");
    // The object is unchanged: read it through the allowed rule.
    let read = curl_get(&s, &id, &token, "/reports/q1.txt").await;
    assert!(read.stdout.ends_with(&s.moto.object), "{}", read.all());
    assert_eq!(s.front.calls().len(), 1);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_policy_of_the_narrowing_is_sent_to_sts() {
    let s = setup().await;
    let (id, token) = s.env.start_task(&["reports"]);
    let read = curl_get(&s, &id, &token, "/reports/q1.txt").await;
    assert!(read.stdout.ends_with(&s.moto.object), "{}", read.all());
    let calls = s.front.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let policy: Value = serde_json::from_str(&calls[0].param("Policy").expect("a Policy")).unwrap();
    assert_eq!(
        policy,
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": ["arn:aws:s3:::reports/*"],
            }],
        })
    );
    // A second task gets a session of its own, never the first task's.
    let (id2, token2) = s.env.start_task(&["reports"]);
    let read2 = curl_get(&s, &id2, &token2, "/reports/q1.txt").await;
    assert!(read2.stdout.ends_with(&s.moto.object), "{}", read2.all());
    let calls = s.front.calls();
    assert_eq!(calls.len(), 2);
    assert_ne!(
        calls[0].param("RoleSessionName"),
        calls[1].param("RoleSessionName")
    );
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_body_is_signed_by_its_hash_and_stored() {
    let s = setup().await;
    let (id, token) = s.env.start_task(&["reports"]);
    let content = format!("draft {}\n", random_hex(16));
    let put = run_cli(curl([
        "-i",
        "-x",
        &s.env.proxy_url(&id, &token),
        "-X",
        "PUT",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        &content,
        &format!("{}/reports/uploads/draft.txt", s.moto.endpoint()),
    ]))
    .await;
    put.expect_code(0);
    assert!(put.stdout.starts_with("HTTP/1.1 200"), "{}", put.all());
    // Read it back through credgate (the GET rule).
    let check = curl_get(&s, &id, &token, "/reports/uploads/draft.txt").await;
    check.expect_code(0);
    assert!(check.stdout.starts_with("HTTP/1.1 200"), "{}", check.all());
    assert!(check.stdout.ends_with(&content), "{}", check.all());
    let records = s.env.records().await;
    let put_record = records
        .iter()
        .find(|r| r.method.as_deref() == Some("PUT"))
        .unwrap();
    assert_eq!(
        put_record.upstream.as_ref().and_then(|u| u.status),
        Some(200)
    );
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_base_keys_come_from_the_token_file() {
    // AssumeRoleWithWebIdentity is an unsigned call; moto's signature-checking
    // mode fails it (500, it looks for an Authorization header), so this test
    // runs moto without signature checks: what it shows is that credgate
    // reads the token file and assumes the role with the keys it gets.
    let moto = Moto::start_with(1_000, None).await;
    let front = StsFront::start(&moto).await;
    let dir = TempDir::new();
    let token_file = dir.path().join("web-identity-token");
    // An IRSA-style projected token; moto accepts any token, the test checks
    // that credgate reads this file and asks for the role with it.
    // JWT-shaped, as a projected service-account token is; the signature part
    // marks it as a test value.
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let web_token = format!(
        "{}.{}.test-secret-{}",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"system:serviceaccount:agents:credgate","aud":"sts.amazonaws.com","exp":{}}}"#,
            4_102_444_800u64
        )),
        random_hex(16)
    );
    std::fs::write(&token_file, &web_token).unwrap();
    let extra = format!(
        r#"
credentials:
  s3-reports:
    aws:
      role_arn: {role_arn}
      region: us-east-1
      duration: 15m
      base: {{ web_identity: {{ role_arn: {role_arn}, token_file: {token_file:?} }} }}
      sts_endpoint: http://127.0.0.1:{front}
    inject: {{ sigv4: {{ service: s3, region: us-east-1 }} }}
scopes:
  reports:
    - host: 127.0.0.1
      port: {moto}
      schemes: [http]
      methods: [GET]
      paths: ["/reports/**"]
      credential: s3-reports
      allow_private: true
"#,
        role_arn = moto.role_arn,
        token_file = token_file.display().to_string(),
        front = front.port,
        moto = moto.port,
    );
    let env = Env::start(&extra, &[]).await;
    let s = Setup { moto, front, env };
    let (id, token) = s.env.start_task(&["reports"]);
    let got = curl_get(&s, &id, &token, "/reports/q1.txt").await;
    got.expect_code(0);
    assert!(got.stdout.starts_with("HTTP/1.1 200"), "{}", got.all());
    assert!(got.stdout.ends_with(&s.moto.object), "{}", got.all());

    let calls = s.front.calls();
    let actions: Vec<_> = calls.iter().map(|c| c.param("Action")).collect();
    assert_eq!(
        actions,
        [
            Some("AssumeRoleWithWebIdentity".to_string()),
            Some("AssumeRole".to_string())
        ],
        "{calls:?}"
    );
    assert_eq!(calls[0].param("WebIdentityToken"), Some(web_token.clone()));
    let log = s.env.log_text().await;
    assert!(!log.contains(&web_token), "web identity token in the log");
    assert!(!got.all().contains(&web_token));
    s.env.stop().await;
}
