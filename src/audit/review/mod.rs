//! Reviewing the decision log: reading lines into records, filtering them,
//! counting them and formatting them for a person. No I/O beyond the reader
//! a caller hands in.

mod filter;
mod human;
mod parse;
mod summary;

pub use filter::{Filter, HostPattern, Since};
pub use human::{printable, HumanFormat};
pub use parse::{parse_line, parse_records, BadLine, RecordLine, Records};
pub use summary::{Summary, SummaryRow};

/// Why a review argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// `--since` is neither a duration nor a time.
    #[error("{0:?} is neither a duration (\"10m\", \"2h\") nor a time (\"2026-11-23T14:00:00Z\")")]
    Since(String),
    /// `--host` is not a host name or `*.suffix`.
    #[error("{0:?} is not a host (\"api.github.com\") or a wildcard (\"*.github.com\")")]
    Host(String),
}
