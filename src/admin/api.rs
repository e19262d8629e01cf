//! The admin API's JSON bodies, shared by the server and the client.

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::task::{TaskSpec, TaskView};
use crate::units::parse_duration;

/// Largest accepted number of scopes in one task.
const MAX_SCOPES: usize = 64;
/// Largest accepted number of labels on one task.
const MAX_LABELS: usize = 64;
/// Longest accepted agent name, scope name or label key, in bytes.
const MAX_NAME_LEN: usize = 128;
/// Longest accepted label value, in bytes.
const MAX_LABEL_VALUE_LEN: usize = 1024;

/// `POST /v1/tasks` body. Unknown fields are refused so that a typo
/// (`"scope": [...]`) fails loudly instead of starting a task without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// Agent name; `"agent"` when absent.
    #[serde(default = "default_agent")]
    pub agent: String,
    /// Scope names to grant; at least one.
    pub scopes: Vec<String>,
    /// Lifetime such as `"15m"`; absent means the gateway's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Labels copied into every record of the task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Also open the task's own proxy port: connections to it need no
    /// `Proxy-Authorization` (see [`crate::task::TaskService::open_task_port`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_port: Option<TaskPortRequest>,
}

/// `task_port` of a [`CreateTaskRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPortRequest {
    /// Only this user's connections are the task's; absent, any local
    /// user's are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

fn default_agent() -> String {
    "agent".to_owned()
}

impl CreateTaskRequest {
    /// Checks the request's shape and turns it into a [`TaskSpec`]. Whether
    /// the scopes exist and whether the TTL is within the cap is the
    /// [`crate::task::TaskService`]'s call. `Err` holds a message for the caller.
    pub fn into_spec(self) -> Result<TaskSpec, String> {
        check_name("agent", &self.agent)?;
        if self.scopes.is_empty() {
            return Err("scopes: at least one scope is required".into());
        }
        if self.scopes.len() > MAX_SCOPES {
            return Err(format!("scopes: at most {MAX_SCOPES} scopes"));
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            check_name(&format!("scopes[{i}]"), scope)?;
        }
        if self.labels.len() > MAX_LABELS {
            return Err(format!("labels: at most {MAX_LABELS} labels"));
        }
        for (key, value) in &self.labels {
            check_name("labels", key)?;
            if value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
                return Err(format!(
                    "labels.{key}: at most {MAX_LABEL_VALUE_LEN} bytes, no control characters"
                ));
            }
        }
        let ttl = match &self.ttl {
            None => None,
            Some(text) => {
                let ttl = parse_duration(text).map_err(|e| format!("ttl: {e}"))?;
                if ttl.is_zero() {
                    return Err("ttl: must be longer than zero".into());
                }
                Some(ttl)
            }
        };
        Ok(TaskSpec {
            agent: self.agent,
            scopes: self.scopes,
            ttl,
            labels: self.labels,
        })
    }
}

/// Names end up in records, tables and terminal output: keep them short
/// and free of control characters (no log or terminal injection).
fn check_name(field: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("{field}: at most {MAX_NAME_LEN} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{field}: {name:?} must not contain whitespace or control characters"
        ));
    }
    Ok(())
}

/// `201` answer to `POST /v1/tasks`: the only response that ever carries a
/// task token.
#[derive(Debug, Serialize)]
pub struct CreatedTaskBody<'a> {
    /// The task id.
    pub id: &'a str,
    /// The task token, in clear, once.
    pub token: &'a str,
    /// Expiry, RFC 3339.
    pub expires_at: &'a str,
    /// The proxy URL with `ID:TOKEN@` userinfo, ready for `HTTPS_PROXY`.
    pub proxy_url: &'a str,
    /// `http://127.0.0.1:PORT`, the task's own port, when asked for: a
    /// proxy URL that needs no credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_port_url: Option<&'a str>,
    /// The task's view.
    pub task: &'a TaskView,
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`.
    pub error: String,
    /// What went wrong, for a person. Never contains a secret.
    pub message: String,
}

/// Characters left as they are in URL userinfo: RFC 3986 unreserved.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Puts `user:password@` into `base` (e.g. `http://127.0.0.1:8080` →
/// `http://task-1:cgt_x@127.0.0.1:8080`), percent-encoding both parts. A base
/// without a scheme is taken as `http://`.
pub fn proxy_url_with_userinfo(base: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    format!(
        "{scheme}://{}:{}@{rest}",
        utf8_percent_encode(user, USERINFO),
        utf8_percent_encode(password, USERINFO)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request(json: &str) -> Result<CreateTaskRequest, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let spec = request(r#"{"scopes": ["github-read"]}"#)
            .unwrap()
            .into_spec()
            .unwrap();
        assert_eq!(spec.agent, "agent");
        assert_eq!(spec.ttl, None);
        assert!(spec.labels.is_empty());
    }

    #[test]
    fn full_request_is_parsed() {
        let spec = request(
            r#"{"agent": "a", "scopes": ["s", "t"], "ttl": "15m", "labels": {"ticket": "T-1"}}"#,
        )
        .unwrap()
        .into_spec()
        .unwrap();
        assert_eq!(spec.agent, "a");
        assert_eq!(spec.scopes, ["s", "t"]);
        assert_eq!(spec.ttl, Some(Duration::from_secs(900)));
        assert_eq!(spec.labels["ticket"], "T-1");
    }

    #[test]
    fn unknown_fields_and_wrong_types_do_not_parse() {
        assert!(request(r#"{"scope": ["s"]}"#).is_err());
        assert!(request(r#"{"scopes": ["s"], "token": "x"}"#).is_err());
        assert!(request(r#"{"scopes": "s"}"#).is_err());
        assert!(request(r#"{"scopes": ["s"], "ttl": 900}"#).is_err());
    }

    #[test]
    fn shape_problems_are_reported_with_the_field() {
        let bad = [
            (r#"{"scopes": []}"#, "scopes"),
            (r#"{"scopes": [""]}"#, "scopes[0]"),
            (r#"{"scopes": ["a b"]}"#, "scopes[0]"),
            (r#"{"scopes": ["s"], "agent": ""}"#, "agent"),
            (r#"{"scopes": ["s"], "agent": "x\u001b[31m"}"#, "agent"),
            (r#"{"scopes": ["s"], "ttl": "15"}"#, "ttl"),
            (r#"{"scopes": ["s"], "ttl": "0s"}"#, "ttl"),
            (r#"{"scopes": ["s"], "ttl": "soon"}"#, "ttl"),
            (r#"{"scopes": ["s"], "labels": {"k": "a\nb"}}"#, "labels.k"),
        ];
        for (json, field) in bad {
            let err = request(json).unwrap().into_spec().unwrap_err();
            assert!(err.starts_with(field), "{json}: {err}");
        }
    }

    #[test]
    fn userinfo_is_inserted_and_encoded() {
        assert_eq!(
            proxy_url_with_userinfo("http://127.0.0.1:8080", "task-1", "cgt_a-b"),
            "http://task-1:cgt_a-b@127.0.0.1:8080"
        );
        assert_eq!(
            proxy_url_with_userinfo("127.0.0.1:8080", "u", "p@ss:/"),
            "http://u:p%40ss%3A%2F@127.0.0.1:8080"
        );
    }
}
