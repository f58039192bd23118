//! How the Redis broker reaches its server: the one interface every deployment shape implements.
//!
//! The broker never dials by itself. It asks its [`Topology`] for the shared connection that
//! serves a key (commands, scripts and pipelines, all keys of one call in one slot), for the
//! name of the node that owns a key (blocking waits are grouped per node, so a worker holds one
//! blocking connection per node, not one per queue), and for a fresh dedicated connection to a
//! node (for `BLPOP`, which would stall a multiplexed connection).
//!
//! [`SingleNode`] is one primary reached through one watched multiplexed connection (see
//! [`super::super::watchdog`]), where its [`Endpoint`] says: a fixed server for `redis://`, or
//! the primary the sentinels name for `redis+sentinel://` ([`SentinelEndpoint`]), followed
//! through failovers. Redis Cluster is the other implementation, in [`super::cluster`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{AsyncConnectionConfig, Client, Cmd, ConnectionAddr, Pipeline, TlsMode};
use ::redis::{RedisFuture, RedisResult, Value};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::lock;
use crate::broker::watchdog::{
    manager_config, spawn_watchdog, Endpoint, Fixed, Watched, CONNECT_TIMEOUT,
};
use crate::errors::{Error, Result};

/// The shared connection a [`Topology`] hands out: one watched primary, or a whole cluster
/// (which routes each request by its key's slot and follows `MOVED`/`ASK` by itself).
#[derive(Clone)]
pub(crate) enum Shared {
    One(Watched),
    Cluster(ClusterConnection, CancellationToken),
}

impl Shared {
    /// Cancelled once the connection is found silent or its server stopped being the primary
    /// (see [`Watched::dead_signal`]); a cluster connection heals by itself and never raises it.
    pub(crate) fn dead_signal(&self) -> CancellationToken {
        match self {
            Shared::One(w) => w.dead_signal(),
            Shared::Cluster(_, never) => never.clone(),
        }
    }
}

impl ConnectionLike for Shared {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Shared::One(w) => w.req_packed_command(cmd),
            Shared::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Shared::One(w) => w.req_packed_commands(pipeline, offset, count),
            Shared::Cluster(c, _) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Shared::One(w) => w.get_db(),
            Shared::Cluster(c, _) => c.get_db(),
        }
    }
}

/// One way of reaching Redis. Keys passed in are any key of the call: every key of one call
/// shares a hash tag (see `keys.rs`), so one key decides where the whole call goes.
#[async_trait]
pub(crate) trait Topology: Send + Sync {
    /// The shared connection serving `key`: cheap to clone, reconnects by itself, and fails
    /// requests at once when found silent.
    fn shared(&self, key: &str) -> Shared;
    /// Name of the node that owns `key`; blocking waits on keys of one node share a connection.
    fn node_of(&self, key: &str) -> String;
    /// A new connection to `node` for blocking commands (no response timeout).
    async fn dial_blocking(&self, node: &str) -> Result<MultiplexedConnection>;
    /// A new pub/sub connection that hears what scripts publish (job-end notifications).
    async fn pubsub(&self) -> Result<PubSub>;
    /// Run a command that is about one node rather than a key (`CLIENT UNBLOCK` of a blocked
    /// connection there, `INFO`) on `node`, a name [`Topology::node_of`] gave.
    async fn on_node(&self, node: &str, cmd: &Cmd) -> Result<Value>;
    /// A request to `node` failed in a way that says the topology changed (`MOVED`, a node
    /// gone): look again soon.
    fn stale(&self) {}
}

/// One Redis (or Valkey) primary: a fixed server, or the one the sentinels name.
pub(crate) struct SingleNode {
    /// The shared connection; the watchdog replaces it when it goes silent or its server stops
    /// being the primary. Dedicated connections are dialed from its client.
    con: Arc<Mutex<Watched>>,
}

/// The name [`SingleNode`] gives its one node.
const NODE: &str = "0";

impl SingleNode {
    /// Connect to the server `url` names. Returns the topology and a first blocking connection,
    /// dialed plainly before anything else: the connection manager retries with backoff, which
    /// would turn a wrong password or a down server into a long hang instead of a prompt error.
    pub(crate) async fn connect(url: &str) -> Result<(SingleNode, MultiplexedConnection)> {
        let endpoint: Arc<dyn Endpoint> = if is_sentinel_url(url) {
            Arc::new(SentinelEndpoint::parse(url)?)
        } else {
            Arc::new(Fixed(client_for(url)?))
        };
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.client()).await {
            Ok(found) => found?,
            Err(_) => return Err(Error::Unavailable("no sentinel answered in time".into())),
        };
        let first = dial(&client).await?;
        let con = client
            .get_connection_manager_with_config(manager_config())
            .await?;
        let con = Arc::new(Mutex::new(Watched::new(con, client)));
        spawn_watchdog(endpoint, Arc::downgrade(&con));
        Ok((SingleNode { con }, first))
    }

    fn client(&self) -> Client {
        lock(&self.con).client().clone()
    }
}

/// Check a Redis URL's shape without connecting (a sentinel URL is parsed in full).
pub(crate) fn check_url(url: &str) -> Result<()> {
    if is_sentinel_url(url) {
        SentinelEndpoint::parse(url)?;
    }
    if super::cluster::is_cluster_url(url) {
        super::cluster::parse(url)?;
    }
    Ok(())
}

/// Whether `url` names a primary through its sentinels.
pub(crate) fn is_sentinel_url(url: &str) -> bool {
    [
        "redis+sentinel://",
        "valkey+sentinel://",
        "rediss+sentinel://",
        "valkeys+sentinel://",
    ]
    .iter()
    .any(|p| url.starts_with(p))
}

/// The primary of one service, as the sentinels name it:
/// `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`, with the sentinels'
/// own credentials, when they need any, as `?sentinel_username=...&sentinel_password=...`.
/// The credentials before `@` and the db are the primary's (and its replicas').
/// `rediss+sentinel://` speaks TLS to the sentinels and to the servers they name, with the
/// same `tls_ca`, `tls_cert` and `tls_key` files for both (one authority for a deployment).
pub(crate) struct SentinelEndpoint {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// A connection to one sentinel for the watchdog's question; dropped after an error.
    asker: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    service: String,
}

/// How long the watchdog waits for a sentinel to name the primary before it lets the question
/// go for this round (a sentinel that does not answer is no evidence of a failover).
const ASK_TIMEOUT: Duration = Duration::from_millis(1000);

impl SentinelEndpoint {
    pub(crate) fn parse(url: &str) -> Result<SentinelEndpoint> {
        let bad = |why: &str| {
            Error::BadUrl(format!(
                "{url:?}: {why} (expected redis+sentinel://[user:password@]host:port[,host:port...]/service[/db])"
            ))
        };
        let (scheme, _) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = scheme.starts_with("rediss") || scheme.starts_with("valkeys");
        let (url_left, certs) = split_tls(url)?;
        if certs.is_some() && !tls {
            return Err(bad(
                "tls_ca, tls_cert and tls_key need rediss+sentinel:// or valkeys+sentinel://",
            ));
        }
        let (_, rest) = url_left.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut addrs = Vec::new();
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            let (name, port) = host.rsplit_once(':').unwrap_or((host, "26379"));
            let port: u16 = port
                .parse()
                .map_err(|_| bad(&format!("bad sentinel port in {host:?}")))?;
            if name.is_empty() {
                return Err(bad(&format!("no host in {host:?}")));
            }
            addrs.push(if tls {
                ConnectionAddr::TcpTls {
                    host: name.to_owned(),
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(name.to_owned(), port)
            });
        }
        if addrs.is_empty() {
            return Err(bad("no sentinel address"));
        }
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let service = parts
            .next()
            .map(percent_decode)
            .ok_or_else(|| bad("no service (master) name"))?;
        let db: i64 = match parts.next() {
            Some(db) => db.parse().map_err(|_| bad(&format!("bad db {db:?}")))?,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(bad("too many path parts"));
        }
        install_tls_provider();
        let mut builder = SentinelClientBuilder::new(addrs, &service, SentinelServerType::Master)?
            .set_client_to_redis_db(db);
        if tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certs) = certs {
                builder = builder
                    .set_client_to_sentinel_certificates(certs.clone())
                    .set_client_to_redis_certificates(certs);
            }
        }
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (percent_decode(u), Some(percent_decode(p))),
                None => (percent_decode(userinfo), None),
            };
            if !user.is_empty() {
                builder = builder.set_client_to_redis_username(user);
            }
            if let Some(password) = password {
                builder = builder.set_client_to_redis_password(password);
            }
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            builder = match name {
                "sentinel_username" => builder.set_client_to_sentinel_username(value),
                "sentinel_password" => builder.set_client_to_sentinel_password(value),
                _ => return Err(bad(&format!("unknown option {name:?}"))),
            };
        }
        Ok(SentinelEndpoint {
            sentinels: tokio::sync::Mutex::new(builder.build()?),
            asker: tokio::sync::Mutex::new(None),
            service,
        })
    }

    /// The primary's address as one sentinel names it now; `None` when no sentinel answered.
    async fn named_primary(&self) -> Option<(String, u16)> {
        let mut asker = self.asker.lock().await;
        if asker.is_none() {
            let found = async {
                let client = self
                    .sentinels
                    .lock()
                    .await
                    .async_get_sentinel_client()
                    .await?;
                client
                    .get_multiplexed_async_connection_with_config(&short_config())
                    .await
            };
            *asker = tokio::time::timeout(ASK_TIMEOUT, found).await.ok()?.ok();
        }
        let con = asker.as_mut()?;
        let mut cmd = ::redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(&self.service);
        let ask = cmd.query_async::<Option<(String, u16)>>(con);
        match tokio::time::timeout(ASK_TIMEOUT, ask).await {
            Ok(Ok(addr)) => addr,
            _ => {
                *asker = None; // ask another sentinel next time
                None
            }
        }
    }
}

#[async_trait]
impl Endpoint for SentinelEndpoint {
    /// Ask the sentinels for the primary; redis-rs checks that the server it names answers
    /// `ROLE` as a master before handing out its client.
    async fn client(&self) -> RedisResult<Client> {
        self.sentinels.lock().await.async_get_client().await
    }

    async fn moved(&self, current: &Client) -> bool {
        let Some((host, port)) = self.named_primary().await else {
            return false;
        };
        match current.get_connection_info().addr() {
            ConnectionAddr::Tcp(h, p)
            | ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => *h != host || *p != port,
            _ => false, // a unix socket: sentinels name TCP addresses only
        }
    }
}

/// Connection settings for a short question (a sentinel's answer): prompt timeouts both ways.
fn short_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_response_timeout(Some(ASK_TIMEOUT))
        .set_connection_timeout(Some(ASK_TIMEOUT))
}

/// `%xx` escapes of a URL part decoded (credentials may hold `@`, `:` or `/` that way).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The TLS files a URL may name in its query, as paths: `tls_ca` (the authority that signed
/// the server's certificate, when it is not one the system trusts), and `tls_cert` with
/// `tls_key` (a client certificate, when the server asks for one).
const TLS_PARAMS: [&str; 3] = ["tls_ca", "tls_cert", "tls_key"];

/// A client for `url`, with the TLS files its query names read and handed to rustls.
/// `rediss://host:6380/0?tls_ca=/etc/asyncq/ca.pem&tls_cert=/etc/asyncq/client.pem&tls_key=...`
pub(crate) fn client_for(url: &str) -> Result<Client> {
    let (plain, certs) = split_tls(url)?;
    client_with(&plain, certs)
}

/// A client for `plain` (a URL without TLS files), with `certs` when given: they need a
/// `rediss://` or `valkeys://` URL.
pub(crate) fn client_with(plain: &str, certs: Option<::redis::TlsCertificates>) -> Result<Client> {
    install_tls_provider();
    let bad = |why: String| Error::BadUrl(format!("{plain:?}: {why}"));
    let Some(certs) = certs else {
        return Client::open(plain).map_err(|e| bad(e.to_string()));
    };
    if !(plain.starts_with("rediss://") || plain.starts_with("valkeys://")) {
        return Err(bad(
            "tls_ca, tls_cert and tls_key need a rediss:// or valkeys:// URL".into(),
        ));
    }
    Client::build_with_tls(plain, certs).map_err(|e| bad(e.to_string()))
}

/// rustls needs a process-wide crypto provider; redis-rs enables none. Installing fails only
/// when one is installed already (by the application), which is as good.
fn install_tls_provider() {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `url` without the TLS files its query names, and those files, read (None when it names
/// none).
pub(crate) fn split_tls(url: &str) -> Result<(String, Option<::redis::TlsCertificates>)> {
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
        return Ok((plain, None));
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
    Ok((plain, Some(certs)))
}

/// A dedicated connection from `client`, for blocking commands and single writers.
pub(super) async fn dial(client: &Client) -> Result<MultiplexedConnection> {
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
    fn shared(&self, _key: &str) -> Shared {
        Shared::One(lock(&self.con).clone())
    }

    fn node_of(&self, _key: &str) -> String {
        NODE.to_owned()
    }

    async fn dial_blocking(&self, _node: &str) -> Result<MultiplexedConnection> {
        dial(&self.client()).await
    }

    async fn pubsub(&self) -> Result<PubSub> {
        let client = self.client();
        let dial = client.get_async_pubsub();
        match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(res) => Ok(res?),
            Err(_) => Err(Error::Unavailable("pub/sub connection timed out".into())),
        }
    }

    async fn on_node(&self, _node: &str, cmd: &Cmd) -> Result<Value> {
        Ok(cmd.query_async(&mut self.shared("")).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_sentinel_url_are_percent_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aw%2Frd"), "p@ss:w/rd");
        assert_eq!(percent_decode("plain"), "plain");
        // A lone or malformed escape is kept as written.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn a_sentinel_url_names_hosts_a_service_and_a_db() {
        let ok = SentinelEndpoint::parse(
            "redis+sentinel://u:p%40w@127.0.0.1:26379,127.0.0.1:26380/svc%2Fa/3?sentinel_password=x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.service, "svc/a");
        // The default sentinel port, when a host names none.
        assert!(SentinelEndpoint::parse("redis+sentinel://localhost/svc").is_ok());
        // TLS to the sentinels (and to the servers they name), with the system's authorities.
        assert!(
            SentinelEndpoint::parse("rediss+sentinel://h:1,h:2/svc?sentinel_password=x").is_ok()
        );
        for (url, why) in [
            ("redis+sentinel://h:1", "no service"),
            ("redis+sentinel://h:1/svc/0/1", "too many path parts"),
            ("redis+sentinel://:1/svc", "no host"),
            ("redis+sentinel://h:1/svc?password=x", "unknown option"),
            (
                "redis+sentinel://h:1/svc?tls_ca=/dev/null",
                "need rediss+sentinel://",
            ),
            (
                "rediss+sentinel://h:1/svc?tls_ca=/no/such/ca.pem",
                "cannot read tls_ca",
            ),
            (
                "rediss+sentinel://h:1/svc?tls_cert=/dev/null",
                "go together",
            ),
        ] {
            let err = SentinelEndpoint::parse(url).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(why)),
                "{url}: {err:?}"
            );
        }
    }
}
