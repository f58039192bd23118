//! Redis broker (placeholder until implemented).
use std::sync::Arc;

use crate::errors::Result;

pub struct RedisBroker;

impl RedisBroker {
    pub async fn open(_url: &str) -> Result<Arc<dyn super::Broker>> {
        unimplemented!("redis broker")
    }
}
