//! Huddle's integration tests as one test crate, one module per topic.
//!
//! The other topics still live in their own crates under `tests/` until
//! they move here; meanwhile the shared harness is included by path.

#[path = "../common/mod.rs"]
mod common;

mod store_conformance;
