//! asyncq's Rust core: module wiring only.

pub mod broker;
pub mod errors;
