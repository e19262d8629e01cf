//! The admin API on a real socket, driven by a real HTTP client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use serde_json::Value;

use super::testing::{Harness, StoreService, ADMIN_TOKEN};
use super::*;
use crate::secret::Secret;
use crate::task::{ProxyCredential, TaskState};

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn v1_requires_the_admin_token() {
    let h = Harness::start().await;
    let wrong = [
        None,
        Some("Bearer test-secret-wrong".to_owned()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN.to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for auth in &wrong {
        for (method, path) in [
            (Method::GET, "/v1/tasks"),
            (Method::POST, "/v1/tasks"),
            (Method::DELETE, "/v1/tasks/task-0000000000000000"),
            (Method::GET, "/v1/no-such-route"),
        ] {
            let body = Some(r#"{"scopes": ["ci"]}"#.to_owned());
            let (status, headers, text) = h.send(method.clone(), path, auth.as_deref(), body).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(json(&text)["error"], "unauthorized");
            assert!(headers.contains_key("www-authenticate"));
        }
    }
    assert!(h.service.store.list().is_empty(), "nothing was created");
    // The scheme is case-insensitive, like any HTTP auth scheme.
    let (status, _, _) = h
        .send(
            Method::GET,
            "/v1/tasks",
            Some(&format!("bearer {ADMIN_TOKEN}")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test]
async fn create_list_get_delete_lifecycle() {
    let h = Harness::start().await;
    let (status, body) = h
        .admin(
            Method::POST,
            "/v1/tasks",
            Some(r#"{"agent": "a", "scopes": ["github-read"], "ttl": "15m", "labels": {"ticket": "T-1"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let created = json(&body);
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(id.starts_with("task-"));
    assert!(token.starts_with("cgt_"));
    assert_eq!(
        created["proxy_url"],
        format!("http://{id}:{token}@127.0.0.1:8080")
    );
    assert_eq!(created["expires_at"], created["task"]["expires_at"]);
    assert_eq!(created["task"]["state"], "active");
    assert_eq!(created["task"]["labels"]["ticket"], "T-1");
    assert_eq!(created["task"]["agent"], "a");

    // The token handed out is the one the proxy accepts.
    let credential = ProxyCredential::Basic {
        user: id.clone(),
        password: Secret::new(token.as_str()),
    };
    let task = h
        .service
        .store
        .authenticate(&credential, SystemTime::now())
        .unwrap();
    let expires_in = task.expires_at.duration_since(task.created_at).unwrap();
    assert_eq!(expires_in, Duration::from_secs(900));

    let (status, list) = h.admin(Method::GET, "/v1/tasks", None).await;
    assert_eq!(status, StatusCode::OK);
    let views = json(&list);
    assert_eq!(views.as_array().unwrap().len(), 1);
    assert_eq!(views[0]["id"], id.as_str());

    let (status, got) = h.admin(Method::GET, &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&got)["state"], "active");

    let (status, deleted) = h
        .admin(Method::DELETE, &format!("/v1/tasks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&deleted)["state"], "ended");
    assert_eq!(json(&deleted)["end_reason"], "requested");

    let (status, after) = h.admin(Method::GET, &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&after)["state"], "ended");
    assert!(h
        .service
        .store
        .authenticate(&credential, SystemTime::now())
        .is_err());

    // Ending twice is harmless and keeps the first reason.
    let (status, again) = h
        .admin(Method::DELETE, &format!("/v1/tasks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&again)["end_reason"], "requested");

    let secret_part = &token["cgt_".len()..];
    for text in [&list, &got, &deleted, &after, &again] {
        assert!(!text.contains(secret_part), "token leaked into {text}");
        assert!(!text.contains("token"), "{text}");
    }
    h.stop().await;
}

#[tokio::test]
async fn errors_have_the_right_status_and_shape() {
    let h = Harness::start().await;
    let cases: [(Method, &str, Option<&str>, StatusCode, &str); 18] = [
        (
            Method::GET,
            "/v1/tasks/task-ffffffffffffffff",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            "/v1/tasks/task-ffffffffffffffff",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/tasks/a/b",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/approvals/apr-1/merge",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/approvals/apr-unknown",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/approvals/apr-unknown/approve",
            Some(r#"{"approver": "a"}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/approvals/apr-unknown/approve",
            Some(r#"{"reason": "no name"}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/approvals/apr-unknown/approve",
            Some(r#"{"approver": "a", "grant": "forever"}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/approvals/apr-unknown/deny",
            Some(r#"{"approver": "a"}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/approvals?state=approved",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::DELETE,
            "/v1/approvals/apr-1",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/nope",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/v1/tasks",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/v1/tasks/task-1",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/v1/tasks",
            Some(r#"{"scopes": ["ci"], "tokn": "x"}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/tasks",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/tasks",
            Some(r#"{"scopes": ["prod-admin"]}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/tasks",
            Some(r#"{"scopes": ["ci"], "ttl": "15"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, text) = h.admin(method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path}: {text}");
        let value = json(&text);
        assert_eq!(value["error"], code, "{method} {path}: {text}");
        assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, headers, _) = h
        .send(
            Method::PUT,
            "/v1/tasks",
            Some(&format!("Bearer {ADMIN_TOKEN}")),
            None,
        )
        .await;
    assert_eq!(headers["allow"], "GET, POST");

    let huge = format!(
        r#"{{"scopes": ["ci"], "agent": "{}"}}"#,
        "a".repeat(70 * 1024)
    );
    let (status, text) = h.admin(Method::POST, "/v1/tasks", Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_eq!(json(&text)["error"], "payload_too_large");
    assert!(
        h.service.store.list().is_empty(),
        "no failed request created a task"
    );
    h.stop().await;
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let h = Harness::start().await;
    let (status, _, body) = h.send(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    let (status, _, _) = h.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    *h.service.not_ready.lock().unwrap() = Some("audit log /var/log/x is not writable".into());
    let (status, _, body) = h.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json(&body)["message"],
        "audit log /var/log/x is not writable"
    );
    let (status, _, _) = h.send(Method::POST, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    h.stop().await;
}

#[tokio::test]
async fn the_admin_client_drives_the_api() {
    let h = Harness::start().await;
    let client = h.client(ADMIN_TOKEN);
    let request = CreateTaskRequest {
        agent: "claude".into(),
        scopes: vec!["ci".into()],
        ttl: Some("5m".into()),
        labels: BTreeMap::from([("ticket".into(), "T-9".into())]),
        task_port: None,
    };
    let created = client.start_task(&request).await.unwrap();
    assert!(created.token.expose_str().unwrap().starts_with("cgt_"));
    assert_eq!(created.task_port_url, None, "a port only when asked for");
    assert_eq!(created.task.state, TaskState::Active);
    assert!(!format!("{created:?}").contains(created.token.expose_str().unwrap()));

    let listed = client.list_tasks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);
    assert_eq!(client.get_task(&created.id).await.unwrap().agent, "claude");

    let ended = client.end_task(&created.id).await.unwrap();
    assert_eq!(ended.state, TaskState::Ended);

    match client.end_task("task-ffffffffffffffff").await.unwrap_err() {
        AdminClientError::Api { status, code, .. } => {
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::NOT_FOUND, "not_found")
            );
        }
        other => panic!("expected an API error, got {other}"),
    }
    let bad = CreateTaskRequest {
        scopes: vec!["nope".into()],
        ..request.clone()
    };
    assert!(matches!(
        client.start_task(&bad).await.unwrap_err(),
        AdminClientError::Api {
            status: StatusCode::BAD_REQUEST,
            ..
        }
    ));
    match h
        .client("test-secret-wrong")
        .list_tasks()
        .await
        .unwrap_err()
    {
        AdminClientError::Api { status, .. } => assert_eq!(status, StatusCode::UNAUTHORIZED),
        other => panic!("expected 401, got {other}"),
    }
    h.stop().await;
    // Once stopped, the listener is gone.
    let err = client.list_tasks().await.unwrap_err();
    assert!(matches!(err, AdminClientError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn an_empty_admin_token_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = Arc::new(StoreService::new());
    let err = serve(listener, service, Secret::new(""), std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn jwks_is_open_and_holds_public_keys_only() {
    let h = Harness::start().await;
    let (status, headers, body) = h.send(Method::GET, "/v1/jwks", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let jwks = json(&body);
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(
        key["kid"].as_str(),
        Some(crate::credential::task_jwt::signer().unwrap().kid())
    );
    assert!(key.get("d").is_none(), "private key in the JWKS: {body}");
    let (status, _, _) = h.send(Method::POST, "/v1/jwks", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    h.stop().await;
}
