//! Listing jobs by state for admin tools: bounded pages of a state's sorted set, then the
//! records of one page in one pipelined round trip.

use std::collections::HashMap;

use super::RedisBroker;
use crate::broker::keys::QueueKeys;
use crate::broker::scripts::parse_job;
use crate::broker::{JobInfo, JobSet};
use crate::errors::Result;

impl RedisBroker {
    /// `ZRANGE key offset offset+count-1`: one page by position, never the whole set.
    pub(super) async fn list_ids(
        &self,
        queue: &str,
        set: JobSet,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>> {
        let k = QueueKeys::new(queue)?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let key = match set {
            JobSet::Queued => k.ready(),
            JobSet::Scheduled => k.scheduled(),
            JobSet::Running => k.active(),
            JobSet::Dead => k.dead(),
        };
        let ids = ::redis::cmd("ZRANGE")
            .arg(key)
            .arg(offset)
            .arg(offset.saturating_add(count - 1))
            .query_async(&mut self.con())
            .await?;
        Ok(ids)
    }

    /// One `HGETALL` per id, pipelined.
    pub(super) async fn records(
        &self,
        queue: &str,
        ids: &[String],
    ) -> Result<Vec<Option<JobInfo>>> {
        let k = QueueKeys::new(queue)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.hgetall(k.job(id));
        }
        let hashes: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(&mut self.con()).await?;
        ids.iter()
            .zip(hashes)
            .map(|(id, hash)| parse_job(queue, id, hash))
            .collect()
    }
}
