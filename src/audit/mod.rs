//! Decision records: the schema, the sink that writes them without ever
//! dropping one, and the review helpers behind `credgate logs`.
//!
//! Every request the listener parses is wrapped in a [`RecordGuard`], which
//! emits exactly one [`DecisionRecord`] into the [`AuditSink`] when it goes
//! out of scope. The sink queues records for a single writer thread; if it
//! cannot write, [`AuditSink::healthy`] turns false and the proxy refuses
//! new requests (`Reason::AuditUnavailable`) rather than serve them
//! unrecorded.

mod destination;
mod guard;
mod record;
pub mod review;
mod sink;
pub mod tail;
mod writer;

pub use guard::RecordGuard;
pub use record::{
    format_timestamp, method_name, new_record_id, ApprovalInfo, CacheOutcome, CredentialInfo,
    DecisionRecord, Event, UpstreamInfo, Verdict, VerdictParseError, WebSocketInfo,
};
pub use sink::{AuditSink, MAX_BACKLOG};

/// Where the decision log lives when the configuration does not say.
pub const DEFAULT_AUDIT_PATH: &str = ".credgate/decisions.jsonl";
