//! Configuration errors that name the field they are about.

use std::fmt;

/// One problem with one field of the configuration, e.g.
/// `scopes.github-read[0].paths[1]: "**/x" must start with "/"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path to the field, with `[i]` for list items.
    pub path: String,
    /// What is wrong, in words an operator can act on. Never a secret value.
    pub message: String,
}

impl FieldError {
    /// An error about the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error, seen from one level up: `prefix` + `.` + path.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = join_path(prefix, &self.path);
        self
    }
}

/// Joins a parent path and a child path (`a` + `b` = `a.b`, `a` + `[0]` = `a[0]`).
pub fn join_path(prefix: &str, child: &str) -> String {
    if prefix.is_empty() {
        child.to_string()
    } else if child.is_empty() {
        prefix.to_string()
    } else if child.starts_with('[') {
        format!("{prefix}{child}")
    } else {
        format!("{prefix}.{child}")
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
