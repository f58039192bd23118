//! Listing jobs by state for admin tools: bounded pages of a state's sorted set, then the
//! records of one page in one pipelined round trip.

use std::collections::HashMap;

use super::RedisBroker;
use crate::broker::calls;
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
        if set == JobSet::Queued {
            return calls::queued_ids(self, queue, offset, count).await;
        }
        let Some(cmd) = calls::page_cmd(queue, set, offset, count)? else {
            return Ok(Vec::new());
        };
        Ok(cmd.query_async(&mut self.con()).await?)
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
