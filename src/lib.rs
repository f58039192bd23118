//! asyncq's Rust core: module wiring only.

pub mod backoff;
pub mod broker;
pub mod codec;
pub mod errors;
