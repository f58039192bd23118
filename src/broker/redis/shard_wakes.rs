//! Wake-ups on a Redis Cluster: one waiter per node, not per slot.
//!
//! On one server the engine waits on the wake lists of every queue in one `BLPOP`. A cluster
//! refuses a `BLPOP` over keys of several slots, and each partition of a queue has a slot of
//! its own, so that would take a blocking connection per partition. Instead the scripts also
//! `SPUBLISH` a note on the wake list's shard channel (same name, same slot) when they put a
//! token in (see `push_wake` in `lib/common.lua`), and a process subscribes to those channels
//! over one connection per node: a dedicated cluster connection in RESP3, whose pushes land
//! in [`Heard`]. The token itself stays where it was: hearing a note, a waiter takes the token
//! with `LPOP`, so among several idle workers exactly one is woken, as with `BLPOP`.
//!
//! Nothing is missed between an empty fetch and the wait: a channel's subscription is
//! confirmed before its list is read, and every call reads the lists of its queues once before
//! it waits for notes. Notes can still be lost (a connection replaced, a slot moved to another
//! node, which ends its subscriptions): a call never waits longer than [`MAX_WAIT`], and the
//! next one reads every list again and subscribes again whatever the server dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use super::lock;
use crate::broker::watchdog::CONNECT_TIMEOUT;
use crate::errors::{Error, Result};

/// Longest single wait: bounds what a lost note costs.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(1500);
/// Longest wait for an `SSUBSCRIBE` (or an `LPOP` round) to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the push connection heard, shared with the task that reads its pushes.
#[derive(Default)]
struct Heard {
    state: Mutex<HeardState>,
    /// Signalled on every note, and whenever subscriptions were lost.
    changed: Notify,
}

#[derive(Default)]
struct HeardState {
    /// Channels the server confirmed and has not dropped since.
    subscribed: HashSet<String>,
    /// Channels with a note not yet looked at.
    noted: HashSet<String>,
}

pub(crate) struct ShardWakes {
    client: ClusterClient,
    con: OnceCell<ClusterConnection>,
    heard: Arc<Heard>,
    /// Pushes, until the connection is made and a task takes the receiver.
    pushes: Mutex<Option<mpsc::UnboundedReceiver<PushInfo>>>,
}

impl ShardWakes {
    /// `client` must speak RESP3 and send its pushes to `pushes`; nothing connects until the
    /// first wait.
    pub(super) fn new(client: ClusterClient, pushes: mpsc::UnboundedReceiver<PushInfo>) -> Self {
        ShardWakes {
            client,
            con: OnceCell::new(),
            heard: Arc::default(),
            pushes: Mutex::new(Some(pushes)),
        }
    }

    async fn con(&self) -> Result<ClusterConnection> {
        let con = self
            .con
            .get_or_try_init(|| async {
                let con = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_connection())
                    .await
                    .map_err(|_| Error::Unavailable("no cluster node answered in time".into()))??;
                if let Some(rx) = lock(&self.pushes).take() {
                    tokio::spawn(listen(rx, Arc::downgrade(&self.heard)));
                }
                Ok::<_, Error>(con)
            })
            .await?;
        Ok(con.clone())
    }

    /// Block until one of the wake lists `wakes` yields a token, `interrupt` fires, or
    /// `timeout` (at most [`MAX_WAIT`]) passes. Returns the indexes of the lists that
    /// yielded one. A zero timeout only takes tokens already there.
    pub(super) async fn wait_any(
        &self,
        wakes: &[String],
        timeout: Duration,
        interrupt: &CancellationToken,
    ) -> Result<Vec<usize>> {
        let mut con = self.con().await?;
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        let mut first = true;
        loop {
            let changed = self.heard.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Subscribe first, then read: a token put in after the read comes with a note.
            let missing: Vec<usize> = {
                let st = lock(&self.heard.state);
                (0..wakes.len())
                    .filter(|&i| !st.subscribed.contains(&wakes[i]))
                    .collect()
            };
            for &i in &missing {
                self.subscribe(&mut con, &wakes[i]).await?;
            }
            let look: Vec<usize> = {
                let mut st = lock(&self.heard.state);
                (0..wakes.len())
                    .filter(|&i| st.noted.remove(&wakes[i]) || first || missing.contains(&i))
                    .collect()
            };
            first = false;
            if !look.is_empty() {
                let woken = take_tokens(&con, wakes, &look).await?;
                if !woken.is_empty() || timeout.is_zero() {
                    return Ok(woken);
                }
            } else if timeout.is_zero() {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = changed => {}
                _ = interrupt.cancelled() => return Ok(Vec::new()),
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    async fn subscribe(&self, con: &mut ClusterConnection, channel: &str) -> Result<()> {
        match tokio::time::timeout(ANSWER_TIMEOUT, con.ssubscribe(channel)).await {
            Ok(Ok(())) => {
                lock(&self.heard.state)
                    .subscribed
                    .insert(channel.to_owned());
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::Unavailable(format!(
                "SSUBSCRIBE {channel} was not answered in time"
            ))),
        }
    }
}

/// `LPOP` the lists `look` (indexes into `wakes`) at once; the indexes that gave a token.
async fn take_tokens(
    con: &ClusterConnection,
    wakes: &[String],
    look: &[usize],
) -> Result<Vec<usize>> {
    let pops = look.iter().map(|&i| {
        let mut con = con.clone();
        let key = wakes[i].clone();
        async move {
            let got: Option<String> = ::redis::cmd("LPOP").arg(&key).query_async(&mut con).await?;
            Ok::<_, Error>(got.map(|_| i))
        }
    });
    let popped = tokio::time::timeout(ANSWER_TIMEOUT, futures::future::join_all(pops))
        .await
        .map_err(|_| Error::Unavailable("LPOP of wake lists was not answered in time".into()))?;
    let mut woken = Vec::new();
    for got in popped {
        woken.extend(got?);
    }
    Ok(woken)
}

/// Read the push connection's pushes into `heard` until it is dropped.
async fn listen(mut rx: mpsc::UnboundedReceiver<PushInfo>, heard: std::sync::Weak<Heard>) {
    while let Some(push) = rx.recv().await {
        let Some(heard) = heard.upgrade() else {
            return;
        };
        let channel = match push.data.first() {
            Some(Value::BulkString(c)) => Some(String::from_utf8_lossy(c).into_owned()),
            Some(Value::SimpleString(c)) => Some(c.clone()),
            _ => None,
        };
        let mut st = lock(&heard.state);
        match (push.kind, channel) {
            (PushKind::SMessage, Some(c)) => {
                st.noted.insert(c);
            }
            (PushKind::SSubscribe, Some(c)) => {
                st.subscribed.insert(c);
                continue; // nothing for a waiter to do
            }
            // The server dropped the subscription (its slot moved away): the next look
            // subscribes again, on the slot's new node, and reads the list.
            (PushKind::SUnsubscribe, Some(c)) => {
                st.subscribed.remove(&c);
                st.noted.insert(c);
            }
            (PushKind::Disconnection, _) => st.subscribed.clear(),
            _ => continue,
        }
        drop(st);
        heard.changed.notify_waiters();
    }
}
