//! Waiting for jobs to end without polling.
//!
//! The scripts that end a job (`ack`, `fail`, `cancel`, `reap`) publish its id on the queue's
//! `done` channel (`ended` in `src/lua/lib/common.lua`). A broker feeds what it hears on those
//! channels into a [`DoneWaiters`] registry, which wakes the waiters of each id. Redis hears it
//! on one pub/sub connection per broker (`redis/done_feed.rs`); memory:// delivers what its
//! scripts published after each call.
//!
//! A waiter registers *before* it reads the job's state, so an ending between the read and the
//! wait is not missed. A notification can still be lost (the pub/sub connection dropped): the
//! feed then wakes every waiter so each reads the state again, and callers bound each wait.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

/// Past this many registered ids, registering first drops waiters nobody waits for any more.
const PRUNE_ABOVE: usize = 4096;

/// The waiters of one channel, by job id.
type ById = HashMap<String, Vec<oneshot::Sender<()>>>;

/// Waiters for job endings, by channel and job id; and listeners that hear every message
/// published on a channel, whole (a consumer hearing of cancel requests, see `cancel.lua`, which
/// publishes one id per message; an event reader, see `tell` in `lib/common.lua`).
#[derive(Default)]
pub(crate) struct DoneWaiters {
    by_channel: Mutex<HashMap<String, ById>>,
    listeners: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<String>>>>,
}

impl DoneWaiters {
    /// A receiver that fires when `id` is published on `channel` (or errs when the feed was
    /// lost and the state must be read again).
    pub(crate) fn register(&self, channel: &str, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut map = lock(&self.by_channel);
        let total: usize = map.values().map(HashMap::len).sum();
        if total > PRUNE_ABOVE {
            for ids in map.values_mut() {
                ids.retain(|_, senders| {
                    senders.retain(|s| !s.is_closed());
                    !senders.is_empty()
                });
            }
        }
        map.entry(channel.to_owned())
            .or_default()
            .entry(id.to_owned())
            .or_default()
            .push(tx);
        rx
    }

    /// A receiver of every message published on `channel` from now on. It ends (yields `None`)
    /// when notifications may have been lost; listen again then.
    pub(crate) fn listen(&self, channel: &str) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut map = lock(&self.listeners);
        let senders = map.entry(channel.to_owned()).or_default();
        senders.retain(|s| !s.is_closed());
        senders.push(tx);
        rx
    }

    /// Every channel waited or listened on so far (to subscribe again after a reconnect).
    pub(crate) fn channels(&self) -> Vec<String> {
        let mut all: Vec<String> = lock(&self.by_channel).keys().cloned().collect();
        all.extend(lock(&self.listeners).keys().cloned());
        all.sort();
        all.dedup();
        all
    }

    /// Pass `message` published on `channel` to its listeners, and wake the waiters of every id
    /// in it (space separated).
    pub(crate) fn fire(&self, channel: &[u8], message: &[u8]) {
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        if let Some(senders) = lock(&self.listeners).get_mut(channel) {
            senders.retain(|s| !s.is_closed());
            let text = String::from_utf8_lossy(message);
            for tx in senders.iter() {
                let _ = tx.send(text.clone().into_owned());
            }
        }
        let mut map = lock(&self.by_channel);
        let Some(ids) = map.get_mut(channel) else {
            return;
        };
        for id in message.split(|b| *b == b' ') {
            let Ok(id) = std::str::from_utf8(id) else {
                continue;
            };
            for tx in ids.remove(id).unwrap_or_default() {
                let _ = tx.send(());
            }
        }
    }

    /// Wake every waiter without a verdict (their receivers err): notifications may have been
    /// lost, so each reads the job's state again.
    pub(crate) fn lost(&self) {
        for ids in lock(&self.by_channel).values_mut() {
            ids.clear();
        }
        // Listeners end; they listen again (which subscribes again).
        for senders in lock(&self.listeners).values_mut() {
            senders.clear();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain inserts and removals: a panic while holding the lock leaves nothing half done.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_only_the_ids_published_on_their_channel() {
        let w = DoneWaiters::default();
        let mut a = w.register("c1", "a");
        let mut b = w.register("c1", "b");
        let mut other = w.register("c2", "a");
        w.fire(b"c1", b"a x");
        assert!(a.try_recv().is_ok());
        assert!(b.try_recv().is_err()); // still waiting
        assert!(other.try_recv().is_err());
        w.lost();
        assert!(matches!(
            b.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(w.channels().len(), 2);
    }

    #[test]
    fn listeners_hear_every_message_of_their_channel_until_lost() {
        let w = DoneWaiters::default();
        let mut l = w.listen("cancel");
        w.fire(b"cancel", b"a b");
        w.fire(b"other", b"c");
        w.fire(b"cancel", b"d");
        assert_eq!(l.try_recv().unwrap(), "a b");
        assert_eq!(l.try_recv().unwrap(), "d");
        assert!(l.try_recv().is_err());
        assert!(w.channels().contains(&"cancel".to_owned()));
        w.lost();
        assert!(matches!(
            l.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
