//! The `exec` source: run a command that prints a credential.
//!
//! The command is an argv (no shell) run with an empty environment apart from
//! `PATH`, `HOME` and three variables naming who asks (`CREDGATE_TASK_ID`,
//! `CREDGATE_AGENT`, `CREDGATE_CREDENTIAL`), so a script can mint a token per
//! task without inheriting credgate's own secrets. stdin is closed, stdout is
//! bounded and parsed by [`exec_output`](crate::credential::exec_output), and
//! stderr is read only to be counted: it may echo secrets, so it is never
//! forwarded or logged.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

use crate::credential::spec::SourceSpec;
use crate::credential::{exec_output, Credential, CredentialError, CredentialSource, FetchContext};
use crate::field::FieldError;
use crate::provider::Provider;

/// The most a command may print on stdout; a credential document is far smaller.
pub const MAX_STDOUT_BYTES: usize = 64 * 1024;

/// `PATH` for the command when credgate's own environment has none.
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Runs a command per fetch and parses what it prints.
pub struct ExecSource {
    credential: String,
    program: String,
    args: Vec<String>,
    timeout: Duration,
    path: String,
    home: Option<String>,
}

impl ExecSource {
    /// A source for credential `credential` running `program` with `args`,
    /// killed after `timeout`. `PATH` and `HOME` for the command are taken
    /// from `env` now, at configuration time.
    pub fn new(
        credential: &str,
        program: String,
        args: Vec<String>,
        timeout: Duration,
        env: &dyn Provider,
    ) -> ExecSource {
        ExecSource {
            credential: credential.to_string(),
            program,
            args,
            timeout,
            path: command_path(env),
            home: env.var("HOME"),
        }
    }

    async fn run(&self, ctx: &FetchContext) -> Result<Credential, CredentialError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", &self.path)
            .env("CREDGATE_TASK_ID", &ctx.task_id)
            .env("CREDGATE_AGENT", &ctx.agent)
            .env("CREDGATE_CREDENTIAL", &self.credential)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out or abandoned fetch must not leave the command running.
            .kill_on_drop(true);
        if let Some(home) = &self.home {
            command.env("HOME", home);
        }
        let mut child = command
            .spawn()
            .map_err(|error| CredentialError::ExecSpawn {
                credential: self.credential.clone(),
                program: self.program.clone(),
                error: Arc::new(error),
            })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(self.io_error(std::io::Error::other("output pipes were not created")));
        };
        let exchange = async {
            tokio::try_join!(
                self.read_stdout(stdout),
                async { count_bytes(stderr).await.map_err(|e| self.io_error(e)) },
                async { child.wait().await.map_err(|e| self.io_error(e)) },
            )
        };
        let (stdout, stderr_bytes, status) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CredentialError::ExecTimeout {
            credential: self.credential.clone(),
            timeout: self.timeout,
        })??;
        if !status.success() {
            return Err(CredentialError::ExecFailed {
                credential: self.credential.clone(),
                status: describe_status(status),
                stderr_bytes,
            });
        }
        let (value, expires_at) =
            exec_output::parse(&stdout, SystemTime::now()).map_err(|problem| {
                CredentialError::ExecOutput {
                    credential: self.credential.clone(),
                    problem,
                }
            })?;
        Ok(Credential {
            name: self.credential.clone(),
            id: crate::credential::new_credential_id(),
            source: "exec",
            value,
            expires_at,
            standing: false,
            renewed: None,
        })
    }

    /// Reads stdout into a buffer allocated once at its bound, so no partial
    /// copy of the credential is left behind in freed memory.
    async fn read_stdout(
        &self,
        mut pipe: impl AsyncRead + Unpin,
    ) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
        let mut buf = Zeroizing::new(vec![0u8; MAX_STDOUT_BYTES + 1]);
        let mut filled = 0;
        loop {
            let n = pipe
                .read(&mut buf[filled..])
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                break;
            }
            filled += n;
            if filled > MAX_STDOUT_BYTES {
                return Err(CredentialError::ExecOutputTooLarge {
                    credential: self.credential.clone(),
                    limit: MAX_STDOUT_BYTES,
                });
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    fn io_error(&self, error: std::io::Error) -> CredentialError {
        CredentialError::ExecIo {
            credential: self.credential.clone(),
            error: Arc::new(error),
        }
    }
}

impl CredentialSource for ExecSource {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn fetch<'a>(
        &'a self,
        ctx: &'a FetchContext,
    ) -> crate::BoxFuture<'a, Result<Credential, CredentialError>> {
        Box::pin(self.run(ctx))
    }
}

/// The `PATH` a command runs with: credgate's own, or a conventional default.
pub fn command_path(env: &dyn Provider) -> String {
    env.var("PATH").unwrap_or_else(|| FALLBACK_PATH.to_string())
}

/// The `exec` source as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExec {
    /// The argv: program first, then its arguments. No shell is involved.
    pub command: Vec<String>,
    /// How long the command may run (`10s` when absent).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The `exec` source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    credential: String,
    program: String,
    args: Vec<String>,
    timeout: Duration,
}

impl SourceSpec for ExecSpec {
    fn kind(&self) -> &'static str {
        "exec"
    }

    /// `PATH` and `HOME` for the command are taken from `provider` now.
    fn build(&self, provider: &dyn Provider) -> Result<Arc<dyn CredentialSource>, Vec<FieldError>> {
        Ok(Arc::new(ExecSource::new(
            &self.credential,
            self.program.clone(),
            self.args.clone(),
            self.timeout,
            provider,
        )))
    }
}

/// Validates `exec`: an argv without NUL bytes whose program is an
/// executable file (given as a path, or found on the `PATH` the command
/// will run with), and the timeout. Every problem is reported, each with a
/// path relative to `exec`.
pub fn validate(
    name: &str,
    raw: &RawExec,
    env: &dyn Provider,
) -> Result<ExecSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    let timeout = crate::credential::source_timeout(raw.timeout.as_deref(), &mut errors);
    for (i, arg) in raw.command.iter().enumerate() {
        if arg.contains('\0') {
            errors.push(FieldError::new(
                format!("command[{i}]"),
                "contains a NUL byte",
            ));
        }
    }
    match raw.command.split_first() {
        None => errors.push(FieldError::new(
            "command",
            "needs at least the program to run",
        )),
        Some((program, _)) if program.is_empty() => errors.push(FieldError::new(
            "command[0]",
            "the program must not be empty",
        )),
        Some((program, _)) => {
            if let Err(message) = check_program(program, env) {
                errors.push(FieldError::new("command[0]", message));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (program, args) = raw.command.split_first().expect("checked above");
    Ok(ExecSpec {
        credential: name.to_string(),
        program: program.clone(),
        args: args.to_vec(),
        timeout,
    })
}

/// A program given as a path must be an executable file; a bare name must be
/// one on the `PATH` the command will run with.
fn check_program(program: &str, env: &dyn Provider) -> Result<(), String> {
    if program.contains('/') {
        return check_executable(Path::new(program), env);
    }
    let found = command_path(env)
        .split(':')
        .filter(|dir| !dir.is_empty())
        .any(|dir| check_executable(&Path::new(dir).join(program), env).is_ok());
    if found {
        Ok(())
    } else {
        Err(format!(
            "{program} is not an executable on PATH; give its full path"
        ))
    }
}

fn check_executable(path: &Path, env: &dyn Provider) -> Result<(), String> {
    let meta = env
        .metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file {
        return Err(format!("{} is not a file", path.display()));
    }
    if !meta.executable {
        return Err(format!("{} is not executable", path.display()));
    }
    Ok(())
}

/// Drains a stream, keeping only how many bytes went by.
async fn count_bytes(mut pipe: impl AsyncRead + Unpin) -> std::io::Result<u64> {
    let mut scratch = [0u8; 1024];
    let mut total = 0u64;
    loop {
        match pipe.read(&mut scratch).await? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("was terminated ({status})"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::credential::CredentialValue;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// A temporary directory holding one script, removed on drop.
    pub(crate) struct Script {
        dir: PathBuf,
        pub(crate) path: PathBuf,
    }

    impl Script {
        /// Writes `body` as a `/bin/sh` script. Tests run it as an argument of
        /// `/bin/sh` rather than executing it, which avoids ETXTBSY races with
        /// other tests forking while the file is still open for writing.
        pub(crate) fn new(body: &str) -> Script {
            let dir = std::env::temp_dir().join(format!(
                "credgate-test-{}",
                crate::credential::new_credential_id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("mint.sh");
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            Script { dir, path }
        }
    }

    impl Drop for Script {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub(crate) fn env() -> BTreeMap<String, String> {
        [
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("HOME".to_string(), "/nonexistent-home".to_string()),
        ]
        .into()
    }

    fn source(script: &Path, timeout: Duration) -> ExecSource {
        let args = vec![script.display().to_string()];
        ExecSource::new("reports", "/bin/sh".into(), args, timeout, &env())
    }

    fn ctx() -> FetchContext {
        FetchContext {
            task_id: "task-1".into(),
            agent: "agent-x".into(),
            labels: BTreeMap::new(),
            task_expires_at: SystemTime::now() + Duration::from_secs(900),
            narrowing: Default::default(),
        }
    }

    fn token(cred: &Credential) -> String {
        match &cred.value {
            CredentialValue::Token(t) => t.expose_str().unwrap().to_string(),
            CredentialValue::Aws { .. } => panic!("expected a token"),
        }
    }

    async fn fetch(body: &str) -> Result<Credential, CredentialError> {
        let script = Script::new(body);
        source(&script.path, Duration::from_secs(5))
            .fetch(&ctx())
            .await
    }

    #[tokio::test]
    async fn mints_per_task_from_the_environment() {
        let cred = fetch(
            r#"printf '{"token":"test-secret-%s-%s-%s","expires_in":60}' "$CREDGATE_TASK_ID" "$CREDGATE_AGENT" "$CREDGATE_CREDENTIAL""#,
        )
        .await
        .unwrap();
        assert_eq!(token(&cred), "test-secret-task-1-agent-x-reports");
        let left = cred
            .expires_at
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(
            left > Duration::from_secs(55) && left <= Duration::from_secs(60),
            "{left:?}"
        );
        assert!(!cred.standing);
        assert_eq!(cred.source, "exec");
        assert!(
            cred.id.starts_with("cred-") && cred.id.len() == 17,
            "{}",
            cred.id
        );
    }

    #[tokio::test]
    async fn environment_is_cleared_except_the_documented_variables() {
        let cred = fetch(
            r#"names=$(env | cut -d= -f1 | sort | tr '\n' ' ')
printf '{"token":"test-secret %s|%s|%s"}' "$names" "$PATH" "$HOME""#,
        )
        .await
        .unwrap();
        let seen = token(&cred);
        for expected in [
            "CREDGATE_TASK_ID",
            "CREDGATE_AGENT",
            "CREDGATE_CREDENTIAL",
            "PATH",
            "HOME",
        ] {
            assert!(seen.contains(expected), "{seen}");
        }
        assert!(seen.ends_with("|/usr/bin:/bin|/nonexistent-home"), "{seen}");
        // `cargo test` exports CARGO_* to the test process: none may leak through.
        assert!(!seen.contains("CARGO"), "{seen}");
    }

    #[tokio::test]
    async fn ids_differ_per_issue() {
        let body = r#"echo '{"token":"test-secret-same"}'"#;
        let (a, b) = (fetch(body).await.unwrap(), fetch(body).await.unwrap());
        assert_ne!(a.id, b.id);
    }

    #[tokio::test]
    async fn stdin_is_closed() {
        let cred = fetch(
            r#"if read line; then echo '{"token":"test-secret-stdin-open"}'; else echo '{"token":"test-secret-stdin-closed"}'; fi"#,
        )
        .await
        .unwrap();
        assert_eq!(token(&cred), "test-secret-stdin-closed");
    }

    #[tokio::test]
    async fn failure_reports_status_and_stderr_size_but_never_output() {
        let err = fetch(
            r#"echo test-secret-in-stderr >&2
echo '{"token":"test-secret-in-stdout"}'
exit 3"#,
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                CredentialError::ExecFailed {
                    stderr_bytes: 22,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            text.contains("status 3") && text.contains("reports"),
            "{text}"
        );
        assert!(
            !text.contains("test-secret") && !format!("{err:?}").contains("test-secret"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn bad_output_is_refused() {
        let err = fetch("echo test-secret-plain-text").await.unwrap_err();
        assert!(matches!(err, CredentialError::ExecOutput { .. }), "{err:?}");
        assert!(!err.to_string().contains("test-secret"), "{err}");
        let err = fetch(r#"echo '{"token":"test-secret-x","expires_in":0}'"#)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CredentialError::ExecOutput {
                    problem: exec_output::ExecOutputError::AlreadyExpired,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oversized_output_is_refused() {
        let err = fetch("head -c 70000 /dev/zero").await.unwrap_err();
        assert!(
            matches!(err, CredentialError::ExecOutputTooLarge { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn slow_command_times_out() {
        let script = Script::new("exec sleep 5");
        let started = std::time::Instant::now();
        let err = source(&script.path, Duration::from_millis(200))
            .fetch(&ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(err, CredentialError::ExecTimeout { .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let source = ExecSource::new(
            "reports",
            "/nonexistent/credgate-mint".into(),
            vec![],
            Duration::from_secs(1),
            &env(),
        );
        let err = source.fetch(&ctx()).await.unwrap_err();
        assert!(matches!(err, CredentialError::ExecSpawn { .. }), "{err:?}");
    }
}
