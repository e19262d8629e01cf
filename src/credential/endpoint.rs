//! The endpoint URL a credential source calls, checked the one way every
//! source checks it.
//!
//! A source's endpoint carries a secret across the network (a client
//! secret, a Vault token, a signed STS call, a GitHub App JWT), so it must
//! be `https://`, or plain `http://` to a loopback host only; and it names
//! no user info, since credentials go in the source's own fields.
//!
//! The order of the checks is what keeps a password out of `credgate
//! check`: user info is looked for in the raw text before the URL is parsed,
//! and no message repeats the URL, which may hold a password in a form the
//! parser did not recognise as one (`https://user:pa ss@host/`, or a
//! password with a `/` in it). The field path says which URL is meant.

use std::net::IpAddr;

use http::Uri;

/// Checks `url` as a source's endpoint: absolute, `https://` (or `http://`
/// to a loopback host), no user info, no fragment. Returns the parsed URI;
/// what a source allows beyond that (a path, a query) is its own check.
/// Error messages never contain any part of `url`.
pub(crate) fn check_endpoint(url: &str) -> Result<Uri, String> {
    let authority = url.split_once("://").map_or(url, |(_, rest)| {
        rest.split(['/', '?', '#']).next().unwrap_or("")
    });
    if authority.contains('@') {
        return Err(
            "must not carry credentials (user:password@); give them in the source's own fields"
                .into(),
        );
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| "is not a URL (expected https://host[:port][/path])".to_string())?;
    let Some(host) = uri.host() else {
        return Err("is not an absolute URL (expected https://host[:port][/path])".into());
    };
    if url.contains('#') {
        return Err("must not have a fragment".into());
    }
    // The parser takes anything after the host's ':' as a port it then
    // ignores; in `https://user:pa/ss@host/` that "port" is a password.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let port = authority.strip_prefix(host).unwrap_or(authority);
    if !port.is_empty() {
        let valid = port
            .strip_prefix(':')
            .filter(|digits| digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u16>().ok())
            .is_some_and(|port| port != 0);
        if !valid {
            return Err("has a port that is not a number from 1 to 65535".into());
        }
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback_host(host) => Ok(uri),
        Some("http") => {
            Err("is plain http: only https:// is allowed, except to a loopback host".into())
        }
        _ => Err("must be an https:// URL".into()),
    }
}

/// `localhost`, or an address in `127.0.0.0/8` or `::1` (bracketed or not).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_and_http_to_loopback_only() {
        for ok in [
            "https://idp.example/oauth2/token",
            "https://vault.internal:8200",
            "https://ghe.example/api/v3/",
            "https://sts.eu-west-1.amazonaws.com",
            "https://host/path?query=1",
            "https://host/a@b",
            "http://127.0.0.1:8200",
            "http://127.3.4.5/",
            "http://localhost:9000/token",
            "http://LOCALHOST",
            "http://[::1]:8200",
            "https://host:65535/",
            "https://[2001:db8::1]:443/",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://vault.internal:8200",
            "http://10.0.0.1/",
            "http://[::2]/",
            "ftp://host/",
            "host:8200",
            "/relative/path",
            "",
            "https://host/#fragment",
            "https://user@host/",
            "https://user:pass@host/",
            "http://user:pass@127.0.0.1/",
            "https://host with space/",
            "https://host:/",
            "https://host:0/",
            "https://host:65536/",
            "https://host:12ab/",
            "https://user:pa/ss@host/",
            "https://[::1]:x/",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    /// No message repeats any part of the URL, whatever went wrong with it.
    #[test]
    fn no_message_carries_the_url() {
        let secret = "test-secret-pw";
        for url in [
            format!("https://user:{secret}@host/"),
            format!("https://user:{secret}@host with space/"),
            format!("https://user:{secret}/x@host/"),
            format!("https://user:{secret}"),
            format!("{secret}://host/"),
            format!("http://{secret}.example/"),
            format!("https://{secret}.example/#frag"),
            format!("https://host/{secret} with space"),
            format!("user:{secret}@host"),
        ] {
            let message = check_endpoint(&url).expect_err(&url);
            assert!(!message.contains(secret), "{url}: {message}");
        }
    }
}
