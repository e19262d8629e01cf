//! What the configuration may learn from outside its own text: environment
//! variables and files.
//!
//! Validation and the building of live sources reach the outside world only
//! through a [`Provider`], so a test hands them a [`FakeProvider`] and the
//! configuration is checked as a value: nothing is read that the test did not
//! put there, and every call is counted.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a file is, as far as configuration cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// A regular file (after following symlinks).
    pub is_file: bool,
    /// Some execute bit is set.
    pub executable: bool,
}

/// Environment variables and files, for validation and for building sources.
pub trait Provider: Send + Sync {
    /// The value of variable `name`, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;

    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// What the file at `path` is.
    fn metadata(&self, path: &Path) -> io::Result<FileInfo>;
}

/// The real process environment and file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Provider for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn metadata(&self, path: &Path) -> io::Result<FileInfo> {
        real_metadata(path)
    }
}

/// Variables from the map, files from the real file system: what the demo
/// and tests with temporary files use, so they never touch the process's
/// own environment.
impl Provider for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn metadata(&self, path: &Path) -> io::Result<FileInfo> {
        real_metadata(path)
    }
}

fn real_metadata(path: &Path) -> io::Result<FileInfo> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let executable = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    };
    #[cfg(not(unix))]
    let executable = meta.is_file();
    Ok(FileInfo {
        is_file: meta.is_file(),
        executable,
    })
}

/// A provider that holds everything in memory and records what was asked:
/// nothing outside it exists.
#[derive(Debug, Default)]
pub struct FakeProvider {
    vars: BTreeMap<String, String>,
    files: BTreeMap<PathBuf, (Vec<u8>, bool)>,
    asked: Mutex<Vec<String>>,
}

impl FakeProvider {
    /// An empty provider: no variables, no files.
    pub fn new() -> FakeProvider {
        FakeProvider::default()
    }

    /// Sets variable `name`.
    pub fn with_var(mut self, name: &str, value: &str) -> FakeProvider {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// Adds a regular, non-executable file.
    pub fn with_file(
        mut self,
        path: impl Into<PathBuf>,
        content: impl Into<Vec<u8>>,
    ) -> FakeProvider {
        self.files.insert(path.into(), (content.into(), false));
        self
    }

    /// Adds an executable file.
    pub fn with_program(mut self, path: impl Into<PathBuf>) -> FakeProvider {
        self.files
            .insert(path.into(), (b"#!/bin/sh\n".to_vec(), true));
        self
    }

    /// Every question asked so far, in order: `var NAME`, `read PATH`,
    /// `metadata PATH`.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("not poisoned").clone()
    }

    fn note(&self, what: String) {
        self.asked.lock().expect("not poisoned").push(what);
    }
}

impl Provider for FakeProvider {
    fn var(&self, name: &str) -> Option<String> {
        self.note(format!("var {name}"));
        self.vars.get(name).cloned()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.note(format!("read {}", path.display()));
        self.files
            .get(path)
            .map(|(content, _)| content.clone())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn metadata(&self, path: &Path) -> io::Result<FileInfo> {
        self.note(format!("metadata {}", path.display()));
        self.files
            .get(path)
            .map(|(_, executable)| FileInfo {
                is_file: true,
                executable: *executable,
            })
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}
