//! Every Redis key asyncq uses is built here and nowhere else.
//!
//! A queue is stored in partitions; every key of one partition shares the hash tag
//! `{queue#partition}` (`asyncq:{orders#0}:ready`), so each Lua script touches a single cluster
//! slot, and the partitions of one queue can live on different Cluster nodes. Only partition 0
//! exists today; partitioned queues (Redis Cluster) add more without changing the schema. Job
//! hashes (`asyncq:{q#0}:job:<id>`) and idempotency keys (`asyncq:{q#0}:key:<key>`) are built
//! inside the scripts from [`QueueKeys::prefix`], which therefore must stay in sync with the
//! helpers below.
//!
//! Keys that belong to no queue (the queue registry, the worker registry and the epoch marker)
//! share the hash tag `{global}`: on a Cluster they live together in one slot, so one pipeline
//! can touch them all, and they are never touched by a queue's scripts (which stay in their
//! partition's slot). The epoch marker therefore vouches for the node that owns `{global}`.

use crate::errors::{Error, Result};

/// Global set of every queue name ever enqueued to (never touched inside scripts).
pub const QUEUES: &str = "asyncq:{global}:queues";
/// Global ZSET worker id → last seen (broker ms).
pub const WORKERS: &str = "asyncq:{global}:workers";
/// A random value written once (no expiry): a new value means Redis lost its data.
pub const EPOCH: &str = "asyncq:{global}:epoch";

/// Last part of a queue's wake list key (memory:// tells wake lists from other lists by it).
pub const WAKE: &str = "wake";

/// True for the key of a queue's wake list.
pub fn is_wake(key: &[u8]) -> bool {
    key.strip_suffix(WAKE.as_bytes())
        .is_some_and(|rest| rest.ends_with(b"}:"))
}

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}`, when not empty) or else of the whole key, modulo [`SLOTS`].
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(bytes) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// Longest queue name accepted, in bytes.
pub const MAX_QUEUE_NAME: usize = 200;

/// Key of one worker's JSON info string (expires with the worker's TTL).
pub fn worker(id: &str) -> String {
    format!("asyncq:{{global}}:worker:{id}")
}

/// Reject names that would break the key schema: `{`/`}` would change the hash tag, and `#`
/// separates a partitioned queue's name from a partition number (`orders#3`).
pub fn validate_queue(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_QUEUE_NAME
        || name.contains(['{', '}', '#'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(Error::Payload(format!(
            "invalid queue name {name:?}: must be 1..={MAX_QUEUE_NAME} bytes without '{{', '}}', '#' or control characters"
        )));
    }
    Ok(())
}

/// Most partitions one queue may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// The keys of one partition of a queue. Build with [`QueueKeys::new`] (partition 0) or
/// [`QueueKeys::partition`], which validate the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    prefix: String,
}

impl QueueKeys {
    /// Keys for `queue`: a queue name (partition 0, the only one of an unpartitioned queue), or
    /// `name#p`, partition `p` of a partitioned queue (so `orders` and `orders#0` are one
    /// partition). An error if the name is not usable.
    pub fn new(queue: &str) -> Result<Self> {
        match queue.split_once('#') {
            None => Self::partition(queue, 0),
            Some((name, p)) => {
                let p = p
                    .parse::<u32>()
                    .ok()
                    // One spelling per partition: `orders#03` would be another queue string
                    // for the keys of `orders#3`.
                    .filter(|n| *n < MAX_PARTITIONS && n.to_string() == p)
                    .ok_or_else(|| {
                        Error::Payload(format!(
                            "invalid queue {queue:?}: after '#' comes a partition number below {MAX_PARTITIONS}"
                        ))
                    })?;
                Self::partition(name, p)
            }
        }
    }

    /// Keys for partition `p` of `queue`. Names hold no `#` or `}`, so the tags `{name#p}`
    /// of two (queue, partition) pairs never collide.
    pub fn partition(queue: &str, p: u32) -> Result<Self> {
        validate_queue(queue)?;
        Ok(QueueKeys {
            prefix: format!("asyncq:{{{queue}#{p}}}:"),
        })
    }

    /// `asyncq:{q#0}:` — scripts append `job:<id>` / `key:<key>` to it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// ZSET of ready jobs, score = (MAX_PRIORITY - priority) * 2^40 + seq.
    pub fn ready(&self) -> String {
        self.key("ready")
    }

    /// ZSET of delayed jobs and retries, score = due ms.
    pub fn scheduled(&self) -> String {
        self.key("scheduled")
    }

    /// ZSET of leased jobs, score = lease deadline ms.
    pub fn active(&self) -> String {
        self.key("active")
    }

    /// ZSET of dead-lettered jobs, score = time of death ms.
    pub fn dead(&self) -> String {
        self.key("dead")
    }

    /// Counter feeding the FIFO part of ready scores.
    pub fn seq(&self) -> String {
        self.key("seq")
    }

    /// LIST holding at most one element; `wait` blocks on it.
    pub fn wake(&self) -> String {
        self.key(WAKE)
    }

    /// STRING that exists while the queue is paused (see `pause.lua`); value: since when (ms).
    pub fn paused(&self) -> String {
        self.key("paused")
    }

    /// HASH of lifetime counters `succeeded` and `failed`.
    pub fn stats(&self) -> String {
        self.key("stats")
    }

    /// Pub/sub channel on which the scripts that end jobs publish their ids (not a key).
    pub fn done(&self) -> String {
        self.key("done")
    }

    /// Pub/sub channel on which `cancel.lua` publishes the id of a running job whose
    /// cancellation was requested, so its worker hears of it at once (not a key).
    pub fn cancels(&self) -> String {
        self.key("cancel")
    }

    /// Pub/sub channel of the queue's events: state changes while the queue is watched, and
    /// progress reports (see `tell` in `src/lua/lib/common.lua`; not a key).
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// ZSET limiter instance -> ms when it may start a waiting group (see lib/common.lua).
    pub fn limdue(&self) -> String {
        self.key("limdue")
    }

    /// HASH of limiter settings per family, declared and overridden (see `limits.lua`).
    pub fn limits(&self) -> String {
        self.key("limits")
    }

    /// HASH counting grouped jobs: 'jobs' waiting in group sets, 'ready' groups in ready
    /// (see "Groups and limiters" in lib/common.lua).
    pub fn gstat(&self) -> String {
        self.key("gstat")
    }

    /// STRING that lives while someone reads the queue's events (see `watch.lua`).
    pub fn watch(&self) -> String {
        self.key("watch")
    }

    /// STRING naming the worker that reaps this partition now; expires (see `reap.lua`).
    pub fn reaping(&self) -> String {
        self.key("reaping")
    }

    /// HASH of one job.
    pub fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }

    /// STRING idempotency key → job id.
    pub fn idem(&self, key: &str) -> String {
        self.key(&format!("key:{key}"))
    }

    /// LIST of deliveries from this queue's flow members to members of other queues, waiting
    /// for the relay (see `relay.lua`).
    pub fn outbox(&self) -> String {
        self.key("outbox")
    }

    /// STRING naming the relay that works on the outbox now; expires (see `relay.lua`).
    pub fn relaying(&self) -> String {
        self.key("relaying")
    }

    /// SET of the names of the periodic schedules whose jobs go to this queue.
    pub fn crons(&self) -> String {
        self.key("crons")
    }

    /// HASH of one periodic schedule (definition and fire state; see `fire.lua`).
    pub fn cron(&self, name: &str) -> String {
        self.key(&format!("cron:{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_named_queue_hash_number() {
        let k = |q: &str| QueueKeys::new(q).map(|k| k.prefix().to_owned());
        assert_eq!(k("orders").ok().as_deref(), Some("asyncq:{orders#0}:"));
        assert_eq!(k("orders#0").ok(), k("orders").ok());
        assert_eq!(k("orders#7").ok().as_deref(), Some("asyncq:{orders#7}:"));
        for bad in [
            "orders#",
            "orders#x",
            "orders#07",
            "orders#-1",
            "orders#1#2",
            "orders#1024",
        ] {
            assert!(k(bad).is_err(), "{bad}");
        }
        assert!(validate_queue("a#1").is_err());
    }

    #[test]
    fn slots_are_the_ones_redis_cluster_computes() {
        // CLUSTER KEYSLOT answers, and redis-rs' own routing agrees.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(slot("foo{}{bar}"), slot("bar")); // an empty tag: the whole key counts
        for key in ["asyncq:{orders#0}:ready", "asyncq:{global}:queues", "x", ""] {
            let ours = redis::cluster_routing::Slot::new(slot(key));
            assert_eq!(
                ours,
                Some(redis::cluster_routing::Slot::for_key(key)),
                "{key}"
            );
        }
        let k = QueueKeys::partition("orders", 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(slot(&k.ready()), slot(&k.wake()));
    }

    #[test]
    fn keys_share_the_queue_hash_tag() {
        let k = QueueKeys::new("emails").unwrap();
        assert_eq!(k.ready(), "asyncq:{emails#0}:ready");
        assert_eq!(k.job("42"), "asyncq:{emails#0}:job:42");
        assert_eq!(k.idem("x"), "asyncq:{emails#0}:key:x");
        assert_eq!(
            QueueKeys::partition("emails", 3).unwrap().wake(),
            "asyncq:{emails#3}:wake"
        );
        for key in [
            k.scheduled(),
            k.active(),
            k.dead(),
            k.seq(),
            k.wake(),
            k.stats(),
            k.reaping(),
        ] {
            assert!(key.starts_with(k.prefix()), "{key}");
        }
    }

    #[test]
    fn global_keys_share_one_slot_apart_from_queues() {
        for key in [QUEUES, WORKERS, EPOCH, &worker("w1")] {
            assert!(key.starts_with("asyncq:{global}:"), "{key}");
        }
        // A queue named `global` still has a tag of its own.
        assert_eq!(
            QueueKeys::new("global").unwrap().prefix(),
            "asyncq:{global#0}:"
        );
    }

    #[test]
    fn wake_lists_are_told_from_other_lists() {
        let k = QueueKeys::new("wake").unwrap();
        assert!(is_wake(k.wake().as_bytes()));
        assert!(!is_wake(k.outbox().as_bytes()));
        assert!(!is_wake(k.job("wake").as_bytes()));
    }

    #[test]
    fn bad_queue_names_are_refused() {
        for name in ["", "a{b", "a}b", "a\nb", &"x".repeat(MAX_QUEUE_NAME + 1)] {
            assert!(QueueKeys::new(name).is_err(), "{name:?}");
        }
        assert!(QueueKeys::new("default").is_ok());
    }
}
