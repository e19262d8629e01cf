//! The STS Query API: the form of an AssumeRole call and the XML answer.
//!
//! Only four fields of the answer are needed, so a small scanner reads them
//! instead of an XML library; it refuses an answer that lacks any of them.

use std::time::SystemTime;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::credential::Secret;

/// Temporary credentials from STS.
pub(super) struct StsCredentials {
    pub(super) access_key_id: String,
    pub(super) secret_access_key: Secret,
    pub(super) session_token: Secret,
    pub(super) expiration: SystemTime,
}

/// Form-urlencoding: everything but the unreserved characters is escaped
/// (so a space is `%20`, as SigV4 canonicalisation expects).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name=value&...`, values form-encoded.
pub(super) fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(n, v)| format!("{n}={}", utf8_percent_encode(v, FORM)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A RoleSessionName for the task: `credgate-` + the task id, characters
/// outside STS's `[\w+=,.@-]` replaced by `-`, at most 64 characters.
pub(super) fn session_name(task_id: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    let mut name: String = format!("credgate-{task_id}")
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .collect();
    name.truncate(64);
    name
}

/// Reads the credentials of an `AssumeRole(WithWebIdentity)Response`.
pub(super) fn parse_credentials(xml: &str) -> Result<StsCredentials, String> {
    let field =
        |name: &str| element(xml, name).ok_or_else(|| format!("the STS answer has no {name}"));
    let expiration = field("Expiration")?;
    let expiration = humantime::parse_rfc3339_weak(expiration.trim()).map_err(|_| {
        format!("the STS answer's Expiration {expiration:?} is not an RFC 3339 time")
    })?;
    Ok(StsCredentials {
        access_key_id: field("AccessKeyId")?.trim().to_string(),
        secret_access_key: Secret::new(field("SecretAccessKey")?.trim()),
        session_token: Secret::new(field("SessionToken")?.trim()),
        expiration,
    })
}

/// `Code: Message` of an STS error answer, bounded, for the deny reason.
/// STS error messages describe the request (role, policy), never a key.
pub(super) fn error_summary(xml: &str) -> String {
    let code = element(xml, "Code").unwrap_or_else(|| "no error code".into());
    let message: String = element(xml, "Message")
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    if message.is_empty() {
        code
    } else {
        format!("{code}: {message}")
    }
}

/// The unescaped text of the first `<name>...</name>` element.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(unescape(&xml[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn parses_an_assume_role_answer() {
        let xml = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <SessionToken>test-secret-token&amp;x</SessionToken>
      <SecretAccessKey>test-secret-sak</SecretAccessKey>
      <Expiration>2015-08-30T12:51:00.123Z</Expiration>
      <AccessKeyId>ASIATESTID</AccessKeyId>
    </Credentials>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn></AssumedRoleUser>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;
        let creds = parse_credentials(xml).unwrap();
        assert_eq!(creds.access_key_id, "ASIATESTID");
        assert_eq!(creds.secret_access_key.expose(), b"test-secret-sak");
        assert_eq!(creds.session_token.expose(), b"test-secret-token&x");
        assert_eq!(
            creds.expiration,
            UNIX_EPOCH + Duration::from_millis(1_440_939_060_123)
        );
        assert!(parse_credentials("<AssumeRoleResponse/>").is_err());
    }

    #[test]
    fn error_answers_are_summarised() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                   <Message>not authorized to perform sts:AssumeRole</Message></Error></ErrorResponse>";
        assert_eq!(
            error_summary(xml),
            "AccessDenied: not authorized to perform sts:AssumeRole"
        );
        assert_eq!(error_summary("garbage"), "no error code");
    }

    #[test]
    fn session_names_are_valid_for_sts() {
        assert_eq!(session_name("task-01ab"), "credgate-task-01ab");
        assert_eq!(session_name("a/b c"), "credgate-a-b-c");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form(&[("Action", "AssumeRole"), ("Policy", "{\"a\": 1}")]),
            "Action=AssumeRole&Policy=%7B%22a%22%3A%201%7D"
        );
    }
}
