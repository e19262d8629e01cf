//! Reviewing the decision log.
