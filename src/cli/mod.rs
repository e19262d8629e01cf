//! The command line: one file per subcommand.

pub mod ca;
pub mod logs;
pub mod run;
pub mod task;
