//! Keeps the Redis broker's shared connection honest: a connection that stays open while nothing
//! comes back (half-open TCP, blackholed route) raises no error, only response timeouts, so a
//! watchdog pings it and swaps in a fresh one when the ping goes unanswered.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Value};

use super::redis::lock;
use crate::backoff::{REDIAL_CAP, REDIAL_FIRST};

/// Response timeout of normal commands: well above any batch script's run time, well below a
/// lease, so a command stuck on a dead connection fails (and is retried) before leases expire.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(4);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the watchdog pings the shared connection, and how long a ping may take.
const WATCHDOG_EVERY: Duration = Duration::from_secs(1);
const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Ping the shared connection every [`WATCHDOG_EVERY`]; when a ping is not answered within
/// [`WATCHDOG_TIMEOUT`] the connection is open but silent (or the server is gone): dial a fresh
/// manager and swap it in. Requests already waiting on the old one fail by their response
/// timeout and are retried by their callers on the new one. Ends when the broker is dropped.
pub(crate) fn spawn_watchdog(client: Client, slot: Weak<Mutex<ConnectionManager>>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCHDOG_EVERY).await;
            let Some(current) = slot.upgrade() else {
                return;
            };
            let mut con = lock(&current).clone();
            drop(current);
            let cmd = ::redis::cmd("PING");
            let ping = cmd.query_async::<Value>(&mut con);
            if matches!(
                tokio::time::timeout(WATCHDOG_TIMEOUT, ping).await,
                Ok(Ok(_))
            ) {
                continue;
            }
            let dial = client.get_connection_manager_with_config(manager_config());
            if let Ok(Ok(fresh)) = tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
                match slot.upgrade() {
                    Some(current) => *lock(&current) = fresh,
                    None => return,
                }
            }
        }
    });
}
