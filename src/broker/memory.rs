//! In-process broker for `memory://` (placeholder until implemented).
use std::sync::Arc;

pub struct MemoryBroker;

impl MemoryBroker {
    pub fn named(_url: &str) -> Arc<dyn super::Broker> {
        unimplemented!("memory broker")
    }
}
