//! The keyspace of `memory://`: Redis' data types with key expiry, and nothing of asyncq.
//!
//! Time is frozen per script run (as Redis does for expiry while a script runs): the broker
//! sets the clock with [`Db::set_clock`], which also drops every key whose time is up, so
//! memory stays bounded by what is still alive and no command ever sees an expired key.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// A member's score, ordered as Redis orders sorted sets (by score, then by member).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: member → score, plus the members in (score, member) order.
#[derive(Debug, Default)]
pub(super) struct ZSet {
    scores: HashMap<Vec<u8>, f64>,
    order: BTreeSet<(Score, Vec<u8>)>,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Set a member's score; true when the member is new.
    pub fn insert(&mut self, member: &[u8], score: f64) -> bool {
        // -0.0 and 0.0 are one score in Redis.
        let score = if score == 0.0 { 0.0 } else { score };
        let old = self.scores.insert(member.to_vec(), score);
        if let Some(old) = old {
            self.order.remove(&(Score(old), member.to_vec()));
        }
        self.order.insert((Score(score), member.to_vec()));
        old.is_none()
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(old) => self.order.remove(&(Score(old), member.to_vec())),
            None => false,
        }
    }

    /// Members with their scores, lowest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> {
        self.order.iter().map(|(s, m)| (m.as_slice(), s.0))
    }

    pub fn pop_min(&mut self) -> Option<(Vec<u8>, f64)> {
        let (score, member) = self.order.pop_first()?;
        self.scores.remove(&member);
        Some((member, score.0))
    }
}

/// The value of one key.
#[derive(Debug)]
pub(super) enum Data {
    Str(Vec<u8>),
    Hash(HashMap<Vec<u8>, Vec<u8>>),
    List(VecDeque<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    ZSet(ZSet),
}

impl Data {
    /// Redis drops a collection key when its last element goes.
    fn is_empty(&self) -> bool {
        match self {
            Data::Str(_) => false,
            Data::Hash(h) => h.is_empty(),
            Data::List(l) => l.is_empty(),
            Data::Set(s) => s.is_empty(),
            Data::ZSet(z) => z.len() == 0,
        }
    }

    /// The name `TYPE` answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::Str(_) => "string",
            Data::Hash(_) => "hash",
            Data::List(_) => "list",
            Data::Set(_) => "set",
            Data::ZSet(_) => "zset",
        }
    }
}

#[derive(Debug)]
struct Entry {
    data: Data,
    /// Unix ms at which the key disappears.
    expires_ms: Option<u64>,
}

/// The error Redis gives for a command on a key of another type.
pub(super) const WRONGTYPE: &str =
    "WRONGTYPE Operation against a key holding the wrong kind of value";

/// All keys of one `memory://` broker.
#[derive(Debug, Default)]
pub(super) struct Db {
    keys: HashMap<Vec<u8>, Entry>,
    /// (expires_ms, key) of every key with a TTL.
    expiring: BTreeSet<(u64, Vec<u8>)>,
    /// The frozen clock, in unix microseconds.
    now_us: u64,
    /// Lists pushed to since the broker last looked (it wakes their waiters).
    pushed: BTreeSet<Vec<u8>>,
    /// (channel, message) published since the broker last looked (it delivers them).
    published: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Typed access to one key: `None` when absent, `WRONGTYPE` when of another type.
macro_rules! typed {
    ($get:ident, $get_mut:ident, $variant:ident, $ty:ty) => {
        pub fn $get(&self, key: &[u8]) -> Result<Option<&$ty>, String> {
            match self.keys.get(key).map(|e| &e.data) {
                None => Ok(None),
                Some(Data::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(WRONGTYPE.into()),
            }
        }

        /// Created empty when absent; call [`Db::tidy`] after removing elements.
        pub fn $get_mut(&mut self, key: &[u8]) -> Result<&mut $ty, String> {
            let entry = self.keys.entry(key.to_vec()).or_insert_with(|| Entry {
                data: Data::$variant(Default::default()),
                expires_ms: None,
            });
            match &mut entry.data {
                Data::$variant(v) => Ok(v),
                _ => Err(WRONGTYPE.into()),
            }
        }
    };
}

impl Db {
    typed!(hash, hash_mut, Hash, HashMap<Vec<u8>, Vec<u8>>);
    typed!(list, list_mut, List, VecDeque<Vec<u8>>);
    typed!(set, set_mut, Set, BTreeSet<Vec<u8>>);
    typed!(zset, zset_mut, ZSet, ZSet);

    /// Freeze the clock at `now_us` and drop every key that has expired by then.
    pub fn set_clock(&mut self, now_us: u64) {
        self.now_us = now_us;
        let now = self.now_ms();
        while let Some((at, key)) = self.expiring.first().cloned() {
            if at > now {
                break;
            }
            self.remove(&key);
        }
    }

    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    pub fn get(&self, key: &[u8]) -> Option<&Data> {
        self.keys.get(key).map(|e| &e.data)
    }

    pub fn exists(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key)
    }

    /// Write `data` under `key`, replacing any value of any type and dropping its TTL.
    pub fn put(&mut self, key: &[u8], data: Data) {
        self.remove(key);
        self.keys.insert(
            key.to_vec(),
            Entry {
                data,
                expires_ms: None,
            },
        );
    }

    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.keys.remove(key) {
            Some(entry) => {
                if let Some(at) = entry.expires_ms {
                    self.expiring.remove(&(at, key.to_vec()));
                }
                true
            }
            None => false,
        }
    }

    /// Drop `key` if a removal left its collection empty, as Redis does.
    pub fn tidy(&mut self, key: &[u8]) {
        if self.keys.get(key).is_some_and(|e| e.data.is_empty()) {
            self.remove(key);
        }
    }

    /// Remaining time to live in ms: `None` when the key is absent, `Some(None)` without TTL.
    pub fn ttl_ms(&self, key: &[u8]) -> Option<Option<u64>> {
        let entry = self.keys.get(key)?;
        Some(entry.expires_ms.map(|at| at.saturating_sub(self.now_ms())))
    }

    /// Set (`Some`) or clear (`None`) the expiry of an existing key; false when it is absent.
    /// An expiry that is already due deletes the key at once.
    pub fn set_expiry(&mut self, key: &[u8], expires_ms: Option<u64>) -> bool {
        if expires_ms.is_some_and(|at| at <= self.now_ms()) {
            return self.remove(key);
        }
        let Some(entry) = self.keys.get_mut(key) else {
            return false;
        };
        if let Some(old) = entry.expires_ms {
            self.expiring.remove(&(old, key.to_vec()));
        }
        entry.expires_ms = expires_ms;
        if let Some(at) = expires_ms {
            self.expiring.insert((at, key.to_vec()));
        }
        true
    }

    /// Note a push to the list `key`, so the broker wakes whoever waits on it.
    pub fn mark_pushed(&mut self, key: &[u8]) {
        self.pushed.insert(key.to_vec());
    }

    /// Record a `PUBLISH` for the broker to deliver after the call.
    pub fn publish(&mut self, channel: &[u8], message: &[u8]) {
        self.published.push((channel.to_vec(), message.to_vec()));
    }

    /// What was published since the last call, in order.
    pub fn take_published(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.published)
    }

    /// The lists pushed to since the last call.
    pub fn take_pushed(&mut self) -> BTreeSet<Vec<u8>> {
        std::mem::take(&mut self.pushed)
    }
}
