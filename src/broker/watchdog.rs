//! Keeps the Redis broker's shared connection honest: a connection that stays open while nothing
//! comes back (half-open TCP, a blackholed route, a NAT that forgot the flow) raises no error,
//! only response timeouts, so a watchdog pings it, declares it dead after [`SILENCE`] without a
//! reply, fails every request still waiting on it at once and swaps in a fresh one. It dials
//! where its [`Endpoint`] says, and asks the endpoint after each answered ping whether the
//! server is still the one to use (behind Sentinel, a failover moves the primary).
//!
//! Worst case from the moment a connection goes silent to a caller's retry succeeding on a new
//! one: [`PING_EVERY`] + [`SILENCE`] to notice (2 s), a dial, then the caller's own `Redial`
//! pause (at most [`REDIAL_CAP`], 0.4 s): about 2.4 s plus a dial and a round trip. When the
//! network itself is down for longer, dials are started every `Redial` pause and overlap, so one
//! starts within 0.4 s of the heal whatever [`CONNECT_TIMEOUT`] is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::redis::lock;
use crate::backoff::{Redial, REDIAL_CAP, REDIAL_FIRST};

/// Response timeout of normal commands: well above any batch script's run time, well below a
/// lease. A silent connection is cut by the watchdog long before; this is the backstop.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(4);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between the end of one watchdog ping and the start of the next.
const PING_EVERY: Duration = Duration::from_millis(500);
/// A connection with a ping outstanding that returned nothing at all (to the ping or to any
/// other request) for this long is dead. Replies to other requests count, so a slow but moving
/// connection (added latency, a long queue of replies) is not mistaken for a silent one.
// NOTE: generous next to a loopback or LAN round trip (well under 1 ms) and to 200 ms of added
// latency (a ping took 0.4 s), because a false alarm costs the replies in flight: a fetch whose
// reply is cut leaves its jobs leased until the lease expires.
const SILENCE: Duration = Duration::from_millis(1500);

/// How the connection manager redials after losing its connection: from 50 ms doubling to half
/// of [`REDIAL_CAP`] (its backoff adds a jitter of up to the delay itself, so no pause exceeds
/// the cap), a few times per command.
/// redis-rs defaults to 100 ms doubling without a cap over 6 tries, up to 3.2 s between two
/// tries: a worker then resumed up to 4.6 s after Redis came back. Few tries per command also
/// mean a command fails soon while Redis is down, and its caller (consumer loop, enqueue retry)
/// paces the next attempt with its own capped backoff.
pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_min_delay(REDIAL_FIRST)
        .set_max_delay(REDIAL_CAP / 2)
        .set_number_of_retries(2)
}

/// Where the watchdog dials: the server to use now, and whether a connection still reaches it.
/// One fixed server answers the same client forever; behind Sentinel, the answer follows the
/// primary through failovers.
#[async_trait]
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// A client for the server to use now (asking whoever knows, for a topology that moves).
    async fn client(&self) -> RedisResult<Client>;
    /// Asked after every answered ping: whether the server `current` reaches is no longer the
    /// one to use (a failover moved the primary). Then the connection is replaced like a
    /// silent one, and whatever waits on it fails at once (a write would get `READONLY`).
    async fn moved(&self, current: &Client) -> bool;
}

/// One server, always the same.
pub(crate) struct Fixed(pub(crate) Client);

#[async_trait]
impl Endpoint for Fixed {
    async fn client(&self) -> RedisResult<Client> {
        Ok(self.0.clone())
    }

    async fn moved(&self, _current: &Client) -> bool {
        false
    }
}

/// The shared connection as commands use it: the manager, the client it was made from, and
/// the signal the watchdog raises when it finds the connection silent (or moved). Cheap to
/// clone; every clone shares the signal.
#[derive(Clone)]
pub(crate) struct Watched {
    con: ConnectionManager,
    life: Arc<Life>,
}

struct Life {
    client: Client,
    dead: CancellationToken,
    born: Instant,
    /// When something last came back on this connection, in ms since `born`.
    heard_ms: AtomicU64,
}

impl Watched {
    pub(crate) fn new(con: ConnectionManager, client: Client) -> Watched {
        let life = Life {
            client,
            dead: CancellationToken::new(),
            born: Instant::now(),
            heard_ms: AtomicU64::new(0),
        };
        Watched {
            con,
            life: Arc::new(life),
        }
    }

    /// The client this connection was made from: dedicated connections to the same server
    /// (blocking waits, pub/sub) are dialed from it.
    pub(crate) fn client(&self) -> &Client {
        &self.life.client
    }

    /// Cancelled once the watchdog has found this connection silent: whatever still waits on
    /// it (including connections dialed alongside it) should give up.
    pub(crate) fn dead_signal(&self) -> CancellationToken {
        self.life.dead.clone()
    }

    /// Run one request, failing it at once when the connection is (or is found) dead.
    async fn guard<T>(
        life: &Life,
        request: impl std::future::Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        if life.dead.is_cancelled() {
            // Nothing is sent: a refusal, so producers know the request never ran.
            return Err(not_sent());
        }
        let res = tokio::select! {
            res = request => res,
            _ = life.dead.cancelled() => {
                return Err(silent(std::io::ErrorKind::TimedOut, "the reply was lost"));
            }
        };
        if !matches!(&res, Err(e) if e.is_io_error()) {
            life.heard();
        }
        res
    }
}

impl Life {
    fn heard(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.heard_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn heard_at(&self) -> Instant {
        self.born + Duration::from_millis(self.heard_ms.load(Ordering::Relaxed))
    }
}

/// The error for a request not made because the connection was found silent.
pub(crate) fn not_sent() -> RedisError {
    silent(std::io::ErrorKind::ConnectionRefused, "not sent")
}

fn silent(kind: std::io::ErrorKind, what: &str) -> RedisError {
    let msg = format!(
        "{what}: the connection to Redis went silent (nothing back for {:.1}s) and is being replaced",
        SILENCE.as_secs_f64()
    );
    std::io::Error::new(kind, msg).into()
}

impl ConnectionLike for Watched {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Watched { con, life } = self;
        Self::guard(life, con.send_packed_command(cmd)).boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Watched { con, life } = self;
        Self::guard(life, con.send_packed_commands(pipeline, offset, count)).boxed()
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }
}

/// Shared connections replaced in this process (silent, or their server no longer the
/// primary): `asyncq_reconnects_total`.
pub static REPLACED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Ping the shared connection every [`PING_EVERY`]; when it stays silent for [`SILENCE`] (or the
/// ping fails with an I/O error), or `endpoint` says its server is no longer the one to use,
/// fail everything waiting on it and dial until a fresh one is up, then swap it in. Ends when
/// the broker is dropped.
pub(crate) fn spawn_watchdog(endpoint: Arc<dyn Endpoint>, slot: Weak<Mutex<Watched>>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PING_EVERY).await;
            let Some(current) = slot.upgrade() else {
                return;
            };
            let mut watched = lock(&current).clone();
            drop(current);
            if answers(&mut watched).await && !endpoint.moved(watched.client()).await {
                continue;
            }
            watched.life.dead.cancel();
            let Some(fresh) = redial(endpoint.as_ref(), &slot).await else {
                return;
            };
            match slot.upgrade() {
                Some(current) => *lock(&current) = fresh,
                None => return,
            }
            REPLACED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

/// Whether the connection answers a ping, or at least keeps returning replies to other requests
/// while the ping waits its turn. A server error reply is an answer.
async fn answers(watched: &mut Watched) -> bool {
    let life = watched.life.clone();
    let sent = Instant::now();
    let cmd = ::redis::cmd("PING");
    let ping = cmd.query_async::<Value>(&mut watched.con);
    tokio::pin!(ping);
    loop {
        let quiet_since = life.heard_at().max(sent);
        match tokio::time::timeout_at(quiet_since + SILENCE, &mut ping).await {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) => return !e.is_io_error(),
            Err(_) if life.heard_at() > quiet_since => continue,
            Err(_) => return false,
        }
    }
}

/// Dial until a new manager is up. A new attempt starts after every `Redial` pause (≤ 0.4 s)
/// without waiting for the previous one to fail, since a dial into a silent network only fails
/// after [`CONNECT_TIMEOUT`]; the first to succeed wins and the others are dropped. `None` when
/// the broker was dropped meanwhile.
async fn redial(endpoint: &dyn Endpoint, slot: &Weak<Mutex<Watched>>) -> Option<Watched> {
    let mut dials = FuturesUnordered::new();
    let mut pause = Redial::new();
    loop {
        if slot.strong_count() == 0 {
            return None;
        }
        let dial = async {
            let client = endpoint.client().await?;
            let con = client
                .get_connection_manager_with_config(manager_config())
                .await?;
            Ok::<_, RedisError>(Watched::new(con, client))
        };
        dials.push(tokio::time::timeout(CONNECT_TIMEOUT, dial));
        let next = tokio::time::sleep(pause.next_pause());
        tokio::pin!(next);
        loop {
            tokio::select! {
                _ = &mut next => break,
                Some(done) = dials.next() => {
                    if let Ok(Ok(fresh)) = done {
                        return Some(fresh);
                    }
                }
            }
        }
    }
}
