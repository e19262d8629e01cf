//! `credgate ca`
