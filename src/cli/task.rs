//! `credgate task`
