//! What an agent's environment needs to go through credgate: the proxy
//! and CA variables that `credgate run` sets for its command and
//! `credgate inject` sets in a pod's containers.

/// The environment that points an agent at credgate.
///
/// `proxy_url` is the task's own port or carries `ID:TOKEN@`; both spellings of the proxy variables
/// are set because tools disagree on which they read. `NO_PROXY` is set
/// empty so an inherited bypass list cannot send traffic around credgate
/// (such traffic would carry no credential anyway, but would escape the
/// record). The CA variables cover OpenSSL-based tools, Python requests,
/// curl, Node, git, the AWS SDKs, and npm, pnpm and yarn (an npm `cafile`,
/// which Debian's `/etc/npmrc` sets, overrides `NODE_EXTRA_CA_CERTS`; the
/// variable overrides the file).
pub fn agent_env(task_id: &str, proxy_url: &str, ca: &str) -> Vec<(String, String)> {
    let mut env = Vec::with_capacity(16);
    let mut set = |name: &str, value: &str| env.push((name.to_owned(), value.to_owned()));
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        set(name, proxy_url);
    }
    set("NO_PROXY", "");
    set("no_proxy", "");
    // Node 24+ honours the proxy variables only when asked to.
    set("NODE_USE_ENV_PROXY", "1");
    for name in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "AWS_CA_BUNDLE",
        "npm_config_cafile",
        "YARN_CAFILE",
    ] {
        set(name, ca);
    }
    set("CREDGATE_TASK_ID", task_id);
    env
}
