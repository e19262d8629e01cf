//! The command line: one file per subcommand.

pub mod approvals;
pub mod ca;
pub mod check;
pub mod demo;
pub mod explain;
pub mod init;
pub mod inject;
pub mod logs;
pub mod run;
pub mod serve;
pub mod task;
pub mod webhook;
