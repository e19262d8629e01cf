//! A rule's `narrowing:` block for the `github_app` source: what an
//! installation token is limited to. Pure: validation at load, and the
//! narrowing of one request.
//!
//! ```yaml
//! narrowing: { repositories: [app, docs], permissions: { issues: read } }  # static
//! narrowing: { from_request: true, permission: issues }                    # per request
//! ```
//!
//! `from_request` takes the repository from the request path
//! (`/repos/{owner}/{repo}/…`) and the level from the method: `read` for
//! GET and HEAD, `write` otherwise. The owner is not checked here: an
//! installation belongs to one account, and GitHub refuses a repository the
//! installation cannot reach.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_yaml::Value;

use crate::credential::RequestView;
use crate::field::FieldError;

/// A permission level of a GitHub App installation token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Level {
    Read,
    Write,
    Admin,
}

impl Level {
    fn parse(text: &str) -> Option<Level> {
        match text {
            "read" => Some(Level::Read),
            "write" => Some(Level::Write),
            "admin" => Some(Level::Admin),
            _ => None,
        }
    }
}

/// What one installation token is limited to: the body of
/// `POST /app/installations/{id}/access_tokens`. Serialised, it is also the
/// cache key, so its form is canonical: repositories sorted and unique,
/// permissions in a sorted map, empty parts left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(super) struct TokenScope {
    /// Repository names (without the owner).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) repositories: Vec<String>,
    /// Permission name → level.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) permissions: BTreeMap<String, Level>,
}

/// A checked `narrowing:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    /// The same scope for every request the rule allows.
    Static(TokenScope),
    /// The request's repository, with `permission` at the method's level.
    FromRequest { permission: String },
}

/// Validates a block at load; every problem is reported, with paths
/// relative to `narrowing`.
pub(super) fn check(narrowing: &Value) -> Result<(), Vec<FieldError>> {
    parse(narrowing).map(|_| ())
}

/// The scope of one request's token, from the rule's block (already
/// checked) and the request; `None` when the rule does not narrow. The
/// error says why the request cannot be given a narrowed token.
pub(super) fn narrow(
    narrowing: Option<&Value>,
    request: &RequestView<'_>,
) -> Result<Option<TokenScope>, String> {
    let Some(narrowing) = narrowing else {
        return Ok(None);
    };
    let block = parse(narrowing).map_err(|errors| {
        let joined: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("invalid narrowing: {}", joined.join("; "))
    })?;
    match block {
        Block::Static(scope) => Ok(Some(scope)),
        Block::FromRequest { permission } => {
            let repository = repository_in(request.path).ok_or_else(|| {
                format!(
                    "the path {} names no repository (/repos/{{owner}}/{{repo}}/…), \
                     so the token cannot be narrowed to one",
                    request.path
                )
            })?;
            let level = if matches!(*request.method, http::Method::GET | http::Method::HEAD) {
                Level::Read
            } else {
                Level::Write
            };
            Ok(Some(TokenScope {
                repositories: vec![repository.to_string()],
                permissions: [(permission, level)].into(),
            }))
        }
    }
}

/// `{repo}` of `/repos/{owner}/{repo}[/…]`, when both are plain names.
fn repository_in(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/repos/")?;
    let mut segments = rest.split('/');
    let owner = segments.next()?;
    let repo = segments.next()?;
    (check_repository(owner).is_ok() && check_repository(repo).is_ok()).then_some(repo)
}

fn parse(narrowing: &Value) -> Result<Block, Vec<FieldError>> {
    let Some(map) = narrowing.as_mapping() else {
        return Err(vec![FieldError::new(
            "",
            "must be a mapping: { repositories: [...], permissions: {...} } \
             or { from_request: true, permission: NAME }",
        )]);
    };
    let mut errors = Vec::new();
    let mut repositories = None;
    let mut permissions = None;
    let mut permission = None;
    for (key, value) in map {
        match key.as_str() {
            Some("repositories") => repositories = parse_repositories(value, &mut errors),
            Some("permissions") => permissions = parse_permissions(value, &mut errors),
            Some("from_request") => match value.as_bool() {
                Some(true) => {}
                _ => errors.push(FieldError::new(
                    "from_request",
                    "must be true (leave it out for a static narrowing)",
                )),
            },
            Some("permission") => match value.as_str() {
                Some(name) => match check_permission_name(name) {
                    Ok(()) => permission = Some(name.to_string()),
                    Err(message) => errors.push(FieldError::new("permission", message)),
                },
                None => errors.push(FieldError::new(
                    "permission",
                    "must be a permission name, e.g. issues",
                )),
            },
            _ => errors.push(FieldError::new(
                "",
                format!(
                    "unknown field {}: expected repositories, permissions, from_request, permission",
                    serde_yaml::to_string(key).unwrap_or_default().trim()
                ),
            )),
        }
    }
    let block = if map.contains_key("from_request") {
        for field in ["repositories", "permissions"] {
            if map.contains_key(field) {
                errors.push(FieldError::new(
                    field,
                    "cannot be combined with from_request, which derives it from the request",
                ));
            }
        }
        if !map.contains_key("permission") {
            errors.push(FieldError::new(
                "permission",
                "from_request needs the permission the request's method is granted on (e.g. issues)",
            ));
        }
        permission.map(|permission| Block::FromRequest { permission })
    } else {
        if map.contains_key("permission") {
            errors.push(FieldError::new(
                "permission",
                "only with from_request: true; a static narrowing uses permissions: { NAME: LEVEL }",
            ));
        }
        if !map.contains_key("repositories") && !map.contains_key("permissions") {
            errors.push(FieldError::new(
                "",
                "narrows nothing: give repositories, permissions, or from_request",
            ));
        }
        Some(Block::Static(TokenScope {
            repositories: repositories.unwrap_or_default(),
            permissions: permissions.unwrap_or_default(),
        }))
    };
    match block {
        Some(block) if errors.is_empty() => Ok(block),
        _ => Err(errors),
    }
}

fn parse_repositories(value: &Value, errors: &mut Vec<FieldError>) -> Option<Vec<String>> {
    let Some(list) = value.as_sequence() else {
        errors.push(FieldError::new(
            "repositories",
            "must be a list of repository names (without the owner)",
        ));
        return None;
    };
    if list.is_empty() {
        errors.push(FieldError::new(
            "repositories",
            "must name at least one repository (leave it out for every repository of the installation)",
        ));
        return None;
    }
    let mut names = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("repositories[{i}]");
        match item.as_str().map(|name| (name, check_repository(name))) {
            Some((name, Ok(()))) => names.push(name.to_string()),
            Some((_, Err(message))) => errors.push(FieldError::new(path, message)),
            None => errors.push(FieldError::new(path, "must be a repository name")),
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

fn parse_permissions(
    value: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<BTreeMap<String, Level>> {
    let Some(map) = value.as_mapping() else {
        errors.push(FieldError::new(
            "permissions",
            "must map permission names to read, write or admin, e.g. { issues: read }",
        ));
        return None;
    };
    if map.is_empty() {
        errors.push(FieldError::new(
            "permissions",
            "must name at least one permission (leave it out for the installation's permissions)",
        ));
        return None;
    }
    let mut permissions = BTreeMap::new();
    for (key, level) in map {
        let Some(name) = key.as_str() else {
            errors.push(FieldError::new(
                "permissions",
                "permission names must be text",
            ));
            continue;
        };
        let path = format!("permissions.{name}");
        if let Err(message) = check_permission_name(name) {
            errors.push(FieldError::new(path, message));
            continue;
        }
        match level.as_str().and_then(Level::parse) {
            Some(level) => {
                permissions.insert(name.to_string(), level);
            }
            None => errors.push(FieldError::new(path, "must be read, write or admin")),
        }
    }
    Some(permissions)
}

/// GitHub repository names: letters, digits, `-`, `_`, `.`; at most 100.
fn check_repository(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty()
        || name.len() > 100
        || name == "."
        || name == ".."
        || !name.chars().all(plain)
    {
        return Err(format!(
            "{name:?} is not a repository name (letters, digits, '-', '_', '.'; no owner)"
        ));
    }
    Ok(())
}

/// GitHub permission names: `issues`, `pull_requests`, `contents`, ...
fn check_permission_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a GitHub permission name (lowercase and '_', e.g. pull_requests)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    fn paths(text: &str) -> Vec<String> {
        check(&yaml(text))
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    fn request<'a>(method: &'a http::Method, path: &'a str) -> RequestView<'a> {
        RequestView {
            method,
            host: "api.github.com",
            path,
        }
    }

    #[test]
    fn static_blocks_are_canonical() {
        let get = http::Method::GET;
        let block = yaml(
            "{ repositories: [docs, app, docs], permissions: { issues: read, contents: write } }",
        );
        check(&block).unwrap();
        let scope = narrow(Some(&block), &request(&get, "/")).unwrap().unwrap();
        assert_eq!(scope.repositories, ["app", "docs"]);
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            r#"{"repositories":["app","docs"],"permissions":{"contents":"write","issues":"read"}}"#
        );
        let only = yaml("{ permissions: { issues: admin } }");
        let scope = narrow(Some(&only), &request(&get, "/")).unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            r#"{"permissions":{"issues":"admin"}}"#
        );
        assert_eq!(narrow(None, &request(&get, "/")).unwrap(), None);
    }

    #[test]
    fn from_request_takes_the_repository_and_the_methods_level() {
        let block = yaml("{ from_request: true, permission: issues }");
        check(&block).unwrap();
        let post = http::Method::POST;
        let head = http::Method::HEAD;
        let scope = narrow(Some(&block), &request(&post, "/repos/acme/app/issues/1"))
            .unwrap()
            .unwrap();
        assert_eq!(scope.repositories, ["app"]);
        assert_eq!(scope.permissions["issues"], Level::Write);
        let scope = narrow(Some(&block), &request(&head, "/repos/acme/docs"))
            .unwrap()
            .unwrap();
        assert_eq!(scope.repositories, ["docs"]);
        assert_eq!(scope.permissions["issues"], Level::Read);
        for path in [
            "/user",
            "/repos/acme",
            "/repos/acme/",
            "/repos//app/issues",
            "/repos/acme/..",
            "/repos/acme/a%2Fb/issues",
            "/repositories/1/issues",
        ] {
            let err = narrow(Some(&block), &request(&post, path)).unwrap_err();
            assert!(err.contains("names no repository"), "{path}: {err}");
        }
    }

    #[test]
    fn bad_blocks_name_every_field() {
        assert_eq!(paths("[app]"), [""]);
        assert_eq!(paths("{}"), [""]);
        assert_eq!(paths("{ repos: [app] }"), ["", ""]);
        assert_eq!(
            paths("{ repositories: [app, 'a/b', 3], permissions: { issues: owner, Bad: read } }"),
            [
                "repositories[1]",
                "repositories[2]",
                "permissions.issues",
                "permissions.Bad"
            ]
        );
        assert_eq!(paths("{ repositories: [] }"), ["repositories"]);
        assert_eq!(paths("{ permissions: {} }"), ["permissions"]);
        assert_eq!(paths("{ from_request: true }"), ["permission"]);
        assert_eq!(
            paths("{ from_request: yes, permission: issues }"),
            ["from_request"]
        );
        assert_eq!(
            paths("{ from_request: true, permission: issues, repositories: [app] }"),
            ["repositories"]
        );
        assert_eq!(
            paths("{ permission: issues, repositories: [app] }"),
            ["permission"]
        );
    }
}
