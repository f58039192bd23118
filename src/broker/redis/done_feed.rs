//! The Redis side of job-end notifications (see [`crate::broker::done`]): one pub/sub connection
//! per broker, subscribed to the `done` channel of every queue someone waits on, feeding what it
//! hears into a [`DoneWaiters`].
//!
//! A channel is subscribed the first time a result is awaited on its queue, and the subscription
//! is confirmed before [`DoneFeed::watch`] returns, so the waiter's next read of the job state
//! cannot miss its ending. When the connection drops, every waiter is woken to read the state
//! again, and a new connection subscribes all channels again (with `Redial` backoff).
//! The connection is also replaced when the watchdog gives up on the shared connection (found
//! silent, or its server no longer the primary after a Sentinel failover): a pub/sub connection
//! to a demoted or unreachable primary would hear nothing more. Otherwise a silent connection
//! is not detected here: callers bound each wait (1 s) and read the state again, so a lost
//! notification costs at most that.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::lock;
use super::topology::Topology;
use crate::backoff::Redial;
use crate::broker::done::DoneWaiters;
use crate::broker::keys;
use crate::errors::{Error, Result};

/// Longest wait for a `SUBSCRIBE` to be confirmed: past it the caller is told to fall back and
/// the connection is replaced.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

type Request = (String, oneshot::Sender<bool>);

pub(crate) struct DoneFeed {
    waiters: Arc<DoneWaiters>,
    /// Channels the live connection has confirmed.
    subscribed: Arc<Mutex<HashSet<String>>>,
    /// Subscribe requests to the feed task (which ends when this is dropped).
    requests: mpsc::UnboundedSender<Request>,
}

impl DoneFeed {
    pub(crate) fn start(topo: Arc<dyn Topology>) -> DoneFeed {
        let waiters = Arc::new(DoneWaiters::default());
        let subscribed = Arc::new(Mutex::new(HashSet::new()));
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(topo, waiters.clone(), subscribed.clone(), rx));
        DoneFeed {
            waiters,
            subscribed,
            requests,
        }
    }

    /// Register a waiter for `id` ending, with `channel` subscribed and confirmed.
    pub(crate) async fn watch(&self, channel: &str, id: &str) -> Result<oneshot::Receiver<()>> {
        let rx = self.waiters.register(channel, id);
        self.subscribe(channel).await?;
        Ok(rx)
    }

    /// Every message published on `channel` from the moment this returns (see
    /// [`DoneWaiters::listen`]); the receiver ends when the connection dropped.
    pub(crate) async fn listen(&self, channel: &str) -> Result<mpsc::UnboundedReceiver<String>> {
        let rx = self.waiters.listen(channel);
        self.subscribe(channel).await?;
        Ok(rx)
    }

    /// Make sure the live connection is subscribed to `channel`.
    async fn subscribe(&self, channel: &str) -> Result<()> {
        if lock(&self.subscribed).contains(channel) {
            return Ok(());
        }
        let (ack, confirmed) = oneshot::channel();
        let _ = self.requests.send((channel.to_owned(), ack));
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, confirmed).await {
            Ok(Ok(true)) => Ok(()),
            _ => Err(Error::Unavailable(
                "the result notification feed is not connected".into(),
            )),
        }
    }
}

async fn run(
    topo: Arc<dyn Topology>,
    waiters: Arc<DoneWaiters>,
    subscribed: Arc<Mutex<HashSet<String>>>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let mut backoff = Redial::new();
    let mut pending: Option<Request> = None;
    loop {
        if waiters.channels().is_empty() {
            // Connect only once someone waits for a result: a worker that never awaits one
            // holds no pub/sub connection. The request is handled like any other below.
            let Some(first) = requests.recv().await else {
                return;
            };
            pending = Some(first); // its channel is registered: subscribed with the rest
        }
        // The shared connection's fate stands for the server's: once the watchdog gives up on
        // it, this connection is replaced too, after the shared one (so it reaches the server
        // the fresh shared connection does).
        let dead = topo.shared(keys::QUEUES).dead_signal();
        if dead.is_cancelled() {
            tokio::time::sleep(backoff.next_pause()).await;
            continue;
        }
        let Ok(pubsub) = topo.pubsub().await else {
            // Refuse what is asked meanwhile (callers fall back), then try again.
            if let Some((_, ack)) = pending.take() {
                let _ = ack.send(false);
            }
            while let Ok((_, ack)) = requests.try_recv() {
                let _ = ack.send(false);
            }
            tokio::time::sleep(backoff.next_pause()).await;
            continue;
        };
        let (mut sink, mut stream) = pubsub.split();
        let channels = waiters.channels();
        if !channels.is_empty() {
            let all = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channels)).await;
            if !matches!(all, Ok(Ok(()))) {
                tokio::time::sleep(backoff.next_pause()).await;
                continue;
            }
        }
        *lock(&subscribed) = channels.into_iter().collect();
        // No need to wake anyone here: waiters from before the connection dropped were woken
        // when it dropped, and those since have not read the state yet (their watch waits for
        // a confirmed subscription, as this one does).
        if let Some((_, ack)) = pending.take() {
            let _ = ack.send(true);
        }
        backoff.reset();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        waiters.fire(msg.get_channel_name().as_bytes(), msg.get_payload_bytes());
                    }
                    None => break, // the connection dropped
                },
                _ = dead.cancelled() => break,
                req = requests.recv() => {
                    let Some((channel, ack)) = req else { return };
                    // A connection that does not confirm in time is replaced.
                    let one = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channel));
                    let ok = matches!(one.await, Ok(Ok(())));
                    if ok {
                        lock(&subscribed).insert(channel);
                    }
                    let _ = ack.send(ok);
                    if !ok {
                        break;
                    }
                }
            }
        }
        lock(&subscribed).clear();
        waiters.lost();
    }
}
