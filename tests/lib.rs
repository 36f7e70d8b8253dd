//! End-to-end tests live in `e2e/`; this library holds what they share with the
//! benchmark.

pub mod history;
pub mod webhook_verify;
