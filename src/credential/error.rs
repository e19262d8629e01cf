//! Why a credential could not be obtained or revoked.

use std::sync::Arc;
use std::time::Duration;

use crate::credential::exec_output::ExecOutputError;
use crate::reason::Reason;

/// A credential failure. Every message names the credential and its source
/// kind so an operator can act on it, and never contains a value, a command's
/// output or its stderr.
///
/// `Clone` because one failed fetch is handed to every request that was
/// waiting for it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The exec command could not be started.
    #[error("credential {credential} (exec): cannot start {program}: {error}")]
    ExecSpawn {
        /// The credential's config name.
        credential: String,
        /// The program from `exec.command`.
        program: String,
        /// The operating system's reason.
        #[source]
        error: Arc<std::io::Error>,
    },
    /// The exec command ran longer than its timeout and was killed.
    #[error("credential {credential} (exec): command did not finish within {timeout:?}")]
    ExecTimeout {
        /// The credential's config name.
        credential: String,
        /// The configured `exec.timeout`.
        timeout: Duration,
    },
    /// The exec command exited unsuccessfully.
    #[error("credential {credential} (exec): command {status} ({stderr_bytes} bytes of stderr discarded)")]
    ExecFailed {
        /// The credential's config name.
        credential: String,
        /// How it ended, e.g. `exited with status 3`.
        status: String,
        /// How much it wrote to stderr; the content itself is never kept.
        stderr_bytes: u64,
    },
    /// The exec command wrote more to stdout than a credential can need.
    #[error("credential {credential} (exec): command wrote more than {limit} bytes to stdout")]
    ExecOutputTooLarge {
        /// The credential's config name.
        credential: String,
        /// The bound, in bytes.
        limit: usize,
    },
    /// Reading the exec command's output failed.
    #[error("credential {credential} (exec): reading the command's output failed: {error}")]
    ExecIo {
        /// The credential's config name.
        credential: String,
        /// The operating system's reason.
        #[source]
        error: Arc<std::io::Error>,
    },
    /// The exec command's stdout is not an acceptable credential document.
    #[error("credential {credential} (exec): {problem}")]
    ExecOutput {
        /// The credential's config name.
        credential: String,
        /// What is wrong with the document (never its content).
        #[source]
        problem: ExecOutputError,
    },
    /// The source handed out a credential that has already expired.
    #[error("credential {credential} ({source_kind}): the source returned an already expired credential")]
    Expired {
        /// The credential's config name.
        credential: String,
        /// The source kind.
        source_kind: &'static str,
    },
    /// The task ended while its credential was being fetched; the credential
    /// was revoked (where supported) instead of being used.
    #[error("credential {credential} ({source_kind}): task {task_id} ended while the credential was being fetched")]
    TaskEnded {
        /// The credential's config name.
        credential: String,
        /// The source kind.
        source_kind: &'static str,
        /// The task that ended.
        task_id: String,
    },
    /// Revocation at the source did not finish in time.
    #[error(
        "credential {credential} ({source_kind}): revocation did not finish within {timeout:?}"
    )]
    RevokeTimeout {
        /// The credential's config name.
        credential: String,
        /// The source kind.
        source_kind: &'static str,
        /// The bound given to the revocation.
        timeout: Duration,
    },
    /// Any other failure of a source, described without values.
    #[error("credential {credential} ({source_kind}): {message}")]
    Source {
        /// The credential's config name.
        credential: String,
        /// The source kind.
        source_kind: &'static str,
        /// What went wrong, in words an operator can act on.
        message: String,
    },
}

impl CredentialError {
    /// The stable reason the request is denied with: the source failed, so
    /// nothing is forwarded; a task that ended mid-fetch is reported as ended.
    pub fn reason(&self) -> Reason {
        match self {
            CredentialError::TaskEnded { .. } => Reason::TaskEnded,
            _ => Reason::CredentialUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_fail_closed_with_a_stable_reason() {
        let err = CredentialError::ExecTimeout {
            credential: "reports".into(),
            timeout: Duration::from_secs(10),
        };
        assert_eq!(err.reason(), Reason::CredentialUnavailable);
        assert!(err.to_string().contains("reports"), "{err}");
        let ended = CredentialError::TaskEnded {
            credential: "reports".into(),
            source_kind: "exec",
            task_id: "task-1".into(),
        };
        assert_eq!(ended.reason(), Reason::TaskEnded);
    }
}
