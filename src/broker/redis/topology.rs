//! How the Redis broker reaches its server: the one interface every deployment shape implements.
//!
//! The broker never dials by itself. It asks its [`Topology`] for the shared connection that
//! serves a key (commands, scripts and pipelines, all keys of one call in one slot), for the
//! name of the node that owns a key (blocking waits are grouped per node, so a worker holds one
//! blocking connection per node, not one per queue), and for a fresh dedicated connection to a
//! node (for `BLPOP`, which would stall a multiplexed connection).
//!
//! [`SingleNode`] is the only shape today: one server, one watched multiplexed connection (see
//! [`super::super::watchdog`]). Sentinel (ask the sentinels for the primary, follow failovers)
//! and Cluster (route by slot, follow `MOVED`/`ASK`) are further implementations of this trait,
//! through redis-rs' own `sentinel` and `cluster-async` clients; nothing above this module
//! changes when they come.

use std::sync::{Arc, Mutex};

use ::redis::aio::{MultiplexedConnection, PubSub};
use ::redis::{AsyncConnectionConfig, Client};
use async_trait::async_trait;

use super::lock;
use crate::broker::watchdog::{manager_config, spawn_watchdog, Watched, CONNECT_TIMEOUT};
use crate::errors::{Error, Result};

/// One way of reaching Redis. Keys passed in are any key of the call: every key of one call
/// shares a hash tag (see `keys.rs`), so one key decides where the whole call goes.
#[async_trait]
pub(crate) trait Topology: Send + Sync {
    /// The shared connection serving `key`: cheap to clone, reconnects by itself, and fails
    /// requests at once when found silent.
    fn shared(&self, key: &str) -> Watched;
    /// Name of the node that owns `key`; blocking waits on keys of one node share a connection.
    fn node_of(&self, key: &str) -> String;
    /// A new connection to `node` for blocking commands (no response timeout).
    async fn dial_blocking(&self, node: &str) -> Result<MultiplexedConnection>;
    /// A new pub/sub connection that hears what scripts publish (job-end notifications).
    async fn pubsub(&self) -> Result<PubSub>;
}

/// One Redis (or Valkey) server.
pub(crate) struct SingleNode {
    client: Client,
    /// The shared connection; the watchdog replaces it when it goes silent.
    con: Arc<Mutex<Watched>>,
}

/// The name [`SingleNode`] gives its one node.
const NODE: &str = "0";

impl SingleNode {
    /// Connect to the server `url` names. Returns the topology and a first blocking connection,
    /// dialed plainly before anything else: the connection manager retries with backoff, which
    /// would turn a wrong password or a down server into a long hang instead of a prompt error.
    pub(crate) async fn connect(url: &str) -> Result<(SingleNode, MultiplexedConnection)> {
        let client = client_for(url)?;
        let first = dial(&client).await?;
        let con = client
            .get_connection_manager_with_config(manager_config())
            .await?;
        let con = Arc::new(Mutex::new(Watched::new(con)));
        spawn_watchdog(client.clone(), Arc::downgrade(&con));
        Ok((SingleNode { client, con }, first))
    }
}

/// The TLS files a URL may name in its query, as paths: `tls_ca` (the authority that signed
/// the server's certificate, when it is not one the system trusts), and `tls_cert` with
/// `tls_key` (a client certificate, when the server asks for one).
const TLS_PARAMS: [&str; 3] = ["tls_ca", "tls_cert", "tls_key"];

/// A client for `url`, with the TLS files its query names read and handed to rustls.
/// `rediss://host:6380/0?tls_ca=/etc/asyncq/ca.pem&tls_cert=/etc/asyncq/client.pem&tls_key=...`
pub(crate) fn client_for(url: &str) -> Result<Client> {
    // rustls needs a process-wide crypto provider; redis-rs enables none. Installing fails
    // only when one is installed already (by the application), which is as good.
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let bad = |why: String| Error::BadUrl(format!("{url:?}: {why}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut files: [Option<Vec<u8>>; 3] = [None, None, None];
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match TLS_PARAMS.iter().position(|p| *p == name) {
            Some(i) => {
                let read = std::fs::read(value);
                files[i] =
                    Some(read.map_err(|e| bad(format!("cannot read {name} {value:?}: {e}")))?);
            }
            None => rest.push(pair),
        }
    }
    let plain = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let [ca, cert, key] = files;
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Client::open(plain).map_err(|e| bad(e.to_string()));
    }
    if !(base.starts_with("rediss://") || base.starts_with("valkeys://")) {
        return Err(bad(
            "tls_ca, tls_cert and tls_key need a rediss:// or valkeys:// URL".into(),
        ));
    }
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(::redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        (None, None) => None,
        _ => return Err(bad("tls_cert and tls_key go together".into())),
    };
    let certs = ::redis::TlsCertificates {
        client_tls,
        root_cert: ca,
    };
    Client::build_with_tls(plain, certs).map_err(|e| bad(e.to_string()))
}

async fn dial(client: &Client) -> Result<MultiplexedConnection> {
    // No response timeout: BLPOP legitimately stays silent for its whole timeout.
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(CONNECT_TIMEOUT));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

#[async_trait]
impl Topology for SingleNode {
    fn shared(&self, _key: &str) -> Watched {
        lock(&self.con).clone()
    }

    fn node_of(&self, _key: &str) -> String {
        NODE.to_owned()
    }

    async fn dial_blocking(&self, _node: &str) -> Result<MultiplexedConnection> {
        dial(&self.client).await
    }

    async fn pubsub(&self) -> Result<PubSub> {
        let dial = self.client.get_async_pubsub();
        match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(res) => Ok(res?),
            Err(_) => Err(Error::Unavailable("pub/sub connection timed out".into())),
        }
    }
}
