//! One waiter per broker node: blocks on the wake lists of every queue with an idle consumer in
//! one `wait_any` call, and wakes the consumers of the queue that got a token.
//!
//! Only queues someone waits on are in the call, so a token is never taken by a process whose
//! consumer of that queue is busy (it stays for an idle worker elsewhere). When a queue starts
//! or stops being waited on while a call blocks, the call is interrupted and made again with the
//! new set: the broker ends it without losing the connection or a token popped meanwhile.
//!
//! No wake-up is lost between a consumer's empty fetch and its wait: tokens stay in the wake
//! list until popped, and a consumer's interest is registered (its wake-up future armed) before
//! the call that can pop its token is made.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{lock, Counters};
use crate::backoff::Redial;
use crate::broker::Broker;

/// Longest single blocking call. Only a bound on how long a call lasts before it is made
/// again: consumers keep their own timers (idle wait, next due job) and the broker caps a
/// single `BLPOP` lower still.
const BLOCK_MS: u64 = 5_000;

struct Wanted {
    /// Consumers waiting on this queue now.
    count: usize,
    notify: Arc<Notify>,
    /// Every current waiter was woken: the queue is left out of the next call until someone
    /// waits on it again (else a queue whose consumers have not yet run would be waited on,
    /// and found ready, again and again).
    woken: bool,
}

#[derive(Default)]
struct State {
    wanted: HashMap<String, Wanted>,
    /// The queues of the call in progress and the token that interrupts it.
    armed: Option<(Vec<String>, CancellationToken)>,
}

pub(super) struct Waiter {
    broker: Arc<dyn Broker>,
    counters: Arc<Counters>,
    state: Mutex<State>,
    /// Signalled when a queue is first waited on while the loop has nothing to wait for.
    changed: Notify,
}

/// A consumer's registered interest in one queue; dropping it withdraws the interest.
pub(super) struct Want {
    waiter: Arc<Waiter>,
    queue: String,
}

impl Drop for Want {
    fn drop(&mut self) {
        self.waiter.unwant(&self.queue);
    }
}

impl Waiter {
    pub(super) fn new(broker: Arc<dyn Broker>, counters: Arc<Counters>) -> Waiter {
        Waiter {
            broker,
            counters,
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    /// Register interest in `queue`: the returned future completes when its wake list gets a
    /// token (or on a spurious wake-up). Armed before this returns, so nothing is missed.
    pub(super) fn want(self: &Arc<Self>, queue: &str) -> (Pin<Box<OwnedNotified>>, Want) {
        let mut st = lock(&self.state);
        let entry = st.wanted.entry(queue.to_owned()).or_insert_with(|| Wanted {
            count: 0,
            notify: Arc::new(Notify::new()),
            woken: false,
        });
        entry.count += 1;
        entry.woken = false;
        let mut woken = Box::pin(entry.notify.clone().notified_owned());
        woken.as_mut().enable();
        self.reconsider(&st, queue, true);
        drop(st);
        self.changed.notify_one();
        let want = Want {
            waiter: self.clone(),
            queue: queue.to_owned(),
        };
        (woken, want)
    }

    fn unwant(&self, queue: &str) {
        let mut st = lock(&self.state);
        let Some(entry) = st.wanted.get_mut(queue) else {
            return;
        };
        entry.count -= 1;
        if entry.count == 0 {
            st.wanted.remove(queue);
            // Stop holding the queue's wake list: a token for it belongs to an idle worker
            // elsewhere now.
            self.reconsider(&st, queue, false);
        }
    }

    /// Interrupt the call in progress if it does not match the set of wanted queues any more:
    /// `queue` was just added (`added`) or removed.
    fn reconsider(&self, st: &State, queue: &str, added: bool) {
        if let Some((queues, interrupt)) = &st.armed {
            let armed = queues.iter().any(|q| q == queue);
            if armed != added && !interrupt.is_cancelled() {
                interrupt.cancel();
                self.counters.interrupts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The loop: wait on every wanted queue, wake the consumers of the woken ones, repeat.
    pub(super) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Redial::new();
        loop {
            let armed = {
                let mut st = lock(&self.state);
                let waiting = st.wanted.iter().filter(|(_, w)| !w.woken);
                let mut queues: Vec<String> = waiting.map(|(q, _)| q.clone()).collect();
                queues.sort();
                let armed = (!queues.is_empty()).then(|| (queues, CancellationToken::new()));
                st.armed.clone_from(&armed);
                armed
            };
            let Some((queues, interrupt)) = armed else {
                tokio::select! {
                    _ = self.changed.notified() => continue,
                    _ = stop.cancelled() => return,
                }
            };
            if interrupt.is_cancelled() {
                continue; // the set changed between the snapshot and now: take it again
            }
            // A broker whose connection is being replaced answers with an error at once (not
            // an empty wake-up), so this loop backs off instead of spinning.
            let res = tokio::select! {
                res = self.broker.wait_any(&queues, BLOCK_MS, &interrupt) => res,
                _ = stop.cancelled() => return,
            };
            if self.deliver(res) {
                backoff.reset();
                continue;
            }
            let pause = backoff.next_pause().max(Duration::from_millis(50));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Wake the consumers a finished call concerns; false when the call failed.
    fn deliver(&self, res: crate::errors::Result<Vec<String>>) -> bool {
        let mut st = lock(&self.state);
        st.armed = None;
        match res {
            Ok(woken) => {
                for queue in woken {
                    if let Some(w) = st.wanted.get_mut(&queue) {
                        w.notify.notify_waiters();
                        w.woken = true;
                        self.counters.wakeups.fetch_add(1, Ordering::Relaxed);
                    }
                }
                true
            }
            Err(_) => {
                // Let every waiting consumer look for itself: its fetch reports the outage and
                // backs off; the waiter backs off too.
                self.counters.wait_errors.fetch_add(1, Ordering::Relaxed);
                for w in st.wanted.values_mut() {
                    w.notify.notify_waiters();
                    w.woken = true;
                }
                false
            }
        }
    }
}
