//! Following the decision log.
