//! Lines of the log into records, without giving up on a bad line.

use std::io::BufRead;

use crate::audit::record::DecisionRecord;

/// A line of the log that holds a record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordLine {
    /// 1-based line number in its file.
    pub number: usize,
    /// The line as written (without the newline), for `--json`.
    pub raw: String,
    /// The parsed record.
    pub record: DecisionRecord,
}

/// A line that is not a record: reported, then skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in its file.
    pub number: usize,
    /// What is wrong with it.
    pub error: String,
}

/// Parses one line. `None` for a blank line (the writer leaves one after a
/// line it had to cut short).
pub fn parse_line(number: usize, line: &[u8]) -> Option<Result<RecordLine, BadLine>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let bad = |error: String| BadLine { number, error };
    let parsed = std::str::from_utf8(line)
        .map_err(|e| bad(format!("not UTF-8 ({e})")))
        .and_then(|text| {
            serde_json::from_str(text)
                .map(|record| RecordLine {
                    number,
                    raw: text.to_string(),
                    record,
                })
                .map_err(|e| bad(e.to_string()))
        });
    Some(parsed)
}

/// The records of a log, in order; see [`parse_records`].
#[derive(Debug)]
pub struct Records<R> {
    reader: R,
    buf: Vec<u8>,
    number: usize,
    failed: bool,
}

/// Reads `reader` line by line. Lines that are not records come out as
/// [`BadLine`]s so the caller can report and skip them; a read error ends
/// the iteration after one last [`BadLine`].
pub fn parse_records<R: BufRead>(reader: R) -> Records<R> {
    Records {
        reader,
        buf: Vec::new(),
        number: 0,
        failed: false,
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<RecordLine, BadLine>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            self.buf.clear();
            self.number += 1;
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {
                    if let Some(parsed) = parse_line(self.number, &self.buf) {
                        return Some(parsed);
                    }
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(BadLine {
                        number: self.number,
                        error: format!("read error: {e}"),
                    }));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, BufReader, Read};

    const GOOD: &str = r#"{"ts":"2026-11-23T14:05:01.123Z","id":"0123456789abcdef","event":"request","host":"api.github.com"}"#;

    #[test]
    fn good_bad_and_blank_lines_are_told_apart_with_line_numbers() {
        let log = format!("{GOOD}\nnot json\n\n{{\"ts\":1}}\r\n{GOOD}\r\n{GOOD}");
        let items: Vec<_> = parse_records(log.as_bytes()).collect();
        assert_eq!(items.len(), 5, "blank line skipped: {items:?}");
        let good: Vec<usize> = items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .map(|l| l.number)
            .collect();
        assert_eq!(good, [1, 5, 6]);
        let bad: Vec<usize> = items
            .iter()
            .filter_map(|i| i.as_ref().err())
            .map(|b| b.number)
            .collect();
        assert_eq!(bad, [2, 4]);
        let first = items[0].as_ref().unwrap();
        assert_eq!(first.raw, GOOD, "raw line kept verbatim, without newline");
        assert_eq!(first.record.host.as_deref(), Some("api.github.com"));
        assert_eq!(items[3].as_ref().unwrap().raw, GOOD, "CRLF stripped");
    }

    #[test]
    fn a_cut_line_glued_to_nothing_is_one_bad_line() {
        let cut = &GOOD[..20];
        let log = format!("{cut}\n{GOOD}\n");
        let items: Vec<_> = parse_records(log.as_bytes()).collect();
        assert!(items[0].is_err());
        assert!(items[1].is_ok());
    }

    #[test]
    fn invalid_utf8_is_a_bad_line_not_the_end() {
        let mut log = b"\xff\xfe garbage\n".to_vec();
        log.extend_from_slice(GOOD.as_bytes());
        let items: Vec<_> = parse_records(&log[..]).collect();
        assert!(items[0].as_ref().unwrap_err().error.contains("UTF-8"));
        assert!(items[1].is_ok());
    }

    struct FailingReader;

    impl Read for FailingReader {
        fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("test: device gone"))
        }
    }

    #[test]
    fn a_read_error_is_reported_once_and_ends_the_iteration() {
        let items: Vec<_> = parse_records(BufReader::new(FailingReader)).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].as_ref().unwrap_err().error.contains("device gone"));
    }
}
