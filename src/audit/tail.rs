//! Following the decision log as it grows, across truncation and rotation:
//! what `credgate logs --follow` reads through.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Reads complete lines appended to a file since the last poll. A line the
/// writer has not finished yet is held back until its newline arrives.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    file: Option<File>,
    identity: Option<FileIdentity>,
    /// Bytes of the current file consumed so far.
    pos: u64,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
    /// Lines of the current file handed out so far.
    line: usize,
    buf: Box<[u8]>,
}

/// Which file a path named when it was opened: a different identity at the
/// same path means the log was rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        Some(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Elsewhere rotation is noticed only when the file shrinks.
    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> Option<Self> {
        None
    }
}

impl Tail {
    /// Follows `path` from its first byte. Nothing is opened until the first
    /// [`Tail::poll`], so the file may not exist yet.
    pub fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            file: None,
            identity: None,
            pos: 0,
            partial: Vec::new(),
            line: 0,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Whether the file has been found and opened.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Hands every complete line appended since the last call to `on_line`
    /// (1-based line number within its file, bytes without the newline).
    /// When the file was truncated it starts again from the top; when the
    /// path now names a new file, it finishes the old one first, including
    /// an unterminated last line, then reads the new one from the start.
    /// A missing file is not an error: it may be between rotation and
    /// re-creation. Errors from `on_line` stop the poll and are returned.
    pub fn poll(
        &mut self,
        mut on_line: impl FnMut(usize, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.file.is_none() && !self.open()? {
            return Ok(());
        }
        self.restart_if_truncated()?;
        self.read_available(&mut on_line)?;
        if self.rotated()? {
            if !self.partial.is_empty() {
                let rest = std::mem::take(&mut self.partial);
                self.line += 1;
                on_line(self.line, &rest)?;
            }
            self.file = None;
            if self.open()? {
                self.read_available(&mut on_line)?;
            }
        }
        Ok(())
    }

    /// Opens the path; `false` when it does not exist (yet).
    fn open(&mut self) -> io::Result<bool> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        self.identity = FileIdentity::of(&file.metadata()?);
        self.file = Some(file);
        self.pos = 0;
        self.line = 0;
        self.partial.clear();
        Ok(true)
    }

    fn restart_if_truncated(&mut self) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        if file.metadata()?.len() < self.pos {
            file.seek(SeekFrom::Start(0))?;
            self.pos = 0;
            self.line = 0;
            self.partial.clear();
        }
        Ok(())
    }

    fn read_available(
        &mut self,
        on_line: &mut impl FnMut(usize, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.pos += n as u64;
            let mut chunk = &self.buf[..n];
            while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
                self.line += 1;
                if self.partial.is_empty() {
                    on_line(self.line, &chunk[..end])?;
                } else {
                    self.partial.extend_from_slice(&chunk[..end]);
                    let line = std::mem::take(&mut self.partial);
                    on_line(self.line, &line)?;
                }
                chunk = &chunk[end + 1..];
            }
            self.partial.extend_from_slice(chunk);
        }
    }

    /// Whether the path now names another file than the one being read.
    fn rotated(&self) -> io::Result<bool> {
        let Some(current) = self.identity else {
            return Ok(false);
        };
        match std::fs::metadata(&self.path) {
            Ok(meta) => Ok(FileIdentity::of(&meta) != Some(current)),
            // Moved away and not re-created yet: keep reading the old file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::new_record_id;
    use std::fs::OpenOptions;
    use std::io::Write;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("credgate-tail-test-{}", new_record_id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn append(&self, name: &str, text: &str) {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.0.join(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn poll(tail: &mut Tail) -> Vec<(usize, String)> {
        let mut lines = Vec::new();
        tail.poll(|n, l| {
            lines.push((n, String::from_utf8(l.to_vec()).unwrap()));
            Ok(())
        })
        .unwrap();
        lines
    }

    fn owned(lines: &[(usize, &str)]) -> Vec<(usize, String)> {
        lines.iter().map(|(n, s)| (*n, s.to_string())).collect()
    }

    #[test]
    fn waits_for_the_file_then_reads_appended_complete_lines() {
        let dir = Scratch::new();
        let mut tail = Tail::new(&dir.0.join("log"));
        assert!(poll(&mut tail).is_empty());
        assert!(!tail.is_open());
        dir.append("log", "one\ntw");
        assert_eq!(poll(&mut tail), owned(&[(1, "one")]));
        assert!(poll(&mut tail).is_empty(), "half a line is held back");
        dir.append("log", "o\nthree\n");
        assert_eq!(poll(&mut tail), owned(&[(2, "two"), (3, "three")]));
    }

    #[test]
    fn long_lines_across_read_buffers_come_out_whole() {
        let dir = Scratch::new();
        let long = "x".repeat(200_000);
        dir.append("log", &format!("{long}\nshort\n"));
        let mut tail = Tail::new(&dir.0.join("log"));
        let lines = poll(&mut tail);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].1.len(), 200_000);
        assert_eq!(lines[1], (2, "short".to_string()));
    }

    #[test]
    fn truncation_starts_again_from_the_top() {
        let dir = Scratch::new();
        dir.append("log", "one\ntwo\n");
        let mut tail = Tail::new(&dir.0.join("log"));
        assert_eq!(poll(&mut tail).len(), 2);
        std::fs::write(dir.0.join("log"), "new\n").unwrap();
        assert_eq!(poll(&mut tail), owned(&[(1, "new")]));
    }

    #[cfg(unix)]
    #[test]
    fn rotation_finishes_the_old_file_then_follows_the_new_one() {
        let dir = Scratch::new();
        dir.append("log", "one\n");
        let mut tail = Tail::new(&dir.0.join("log"));
        assert_eq!(poll(&mut tail), owned(&[(1, "one")]));
        // Written to the old file before the writer reopened, cut short.
        dir.append("log", "two\ncut");
        std::fs::rename(dir.0.join("log"), dir.0.join("log.1")).unwrap();
        assert_eq!(
            poll(&mut tail),
            owned(&[(2, "two")]),
            "moved away, not yet re-created"
        );
        dir.append("log", "fresh\n");
        assert_eq!(poll(&mut tail), owned(&[(3, "cut"), (1, "fresh")]));
        dir.append("log", "more\n");
        assert_eq!(poll(&mut tail), owned(&[(2, "more")]));
    }
}
