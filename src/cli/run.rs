//! `credgate run`
