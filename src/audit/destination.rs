//! Where the writer thread puts batches: the decision log file, or memory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// A byte sink the writer thread owns. Writes may be partial; the writer
/// keeps track of how far it got so nothing is written twice.
pub(crate) trait Destination: Send {
    /// Writes some prefix of `buf`, returning its length.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Pushes what was written to the operating system.
    fn flush(&mut self) -> io::Result<()>;
    /// Opens the destination again: at `path` when given (and from then on),
    /// else at the same place (after log rotation, or to recover from a
    /// stale handle).
    fn reopen(&mut self, path: Option<&Path>) -> io::Result<()>;
    /// What to call the destination in an operator's error message.
    fn name(&self) -> String;
}

/// The decision log on disk, opened for appending.
pub(crate) struct FileDestination {
    path: PathBuf,
    file: File,
}

impl FileDestination {
    /// Opens `path` for appending, creating it (mode 0600) and its parent
    /// directories (mode 0700) when missing. An existing file keeps the
    /// permissions the operator gave it.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Ok(FileDestination {
            path: path.to_path_buf(),
            file: open_append(path)?,
        })
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(parent)?;
    }
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

impl Destination for FileDestination {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn reopen(&mut self, path: Option<&Path>) -> io::Result<()> {
        let path = path.unwrap_or(&self.path).to_path_buf();
        // The old handle stays in place until the new one is open, so a
        // failed reopen leaves the destination as it was.
        self.file = open_append(&path)?;
        self.path = path;
        Ok(())
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// An in-memory log, shared with the sink so it can read it back.
pub(crate) struct MemoryDestination(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Destination for MemoryDestination {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn reopen(&mut self, _path: Option<&Path>) -> io::Result<()> {
        Ok(())
    }

    fn name(&self) -> String {
        "the in-memory decision log".to_string()
    }
}
