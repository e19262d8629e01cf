//! `credgate logs`
