//! Redis Cluster as a [`Topology`]: `redis+cluster://[user:password@]host:port[,host:port...]/`
//! names seed nodes (`rediss+cluster://` for TLS, with `?tls_ca=&tls_cert=&tls_key=` as for
//! `rediss://`); redis-rs' `cluster-async` connection routes every request by its key's
//! slot and follows `MOVED`, `ASK` and failovers by itself (it also reloads a script a node
//! lacks: our calls fall back from `EVALSHA` to `EVAL` on `NOSCRIPT`, on whichever node).
//!
//! What it does not do is what this module adds: a map of slots to primaries, read with
//! `CLUSTER SLOTS` at start, every [`REFRESH_EVERY`] and soon after a caller reports it stale,
//! so blocking waits (`BLPOP`, which needs a connection of its own to the node that owns the
//! key) and node commands (`CLIENT UNBLOCK`) go to the right node. Every key of one call shares
//! a hash tag (see `keys.rs`), so one key decides where the call goes.
//!
//! Node names from [`Topology::node_of`] are `host:port#slot`: a command on several keys must
//! keep to one slot. Waits for work do not block at all here: they listen to sharded pub/sub,
//! one connection per node for every queue and partition there (see [`super::shard_wakes`]).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSub};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, ProtocolVersion, TlsCertificates, TlsMode, Value,
};
use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::lock;
use super::shard_wakes::ShardWakes;
use super::topology::{client_with, dial, split_tls, Shared, Topology};
use crate::broker::keys;
use crate::broker::watchdog::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::errors::{Error, Result};

/// How often the slot map is read again when nothing reports it stale.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Least time between two reads of the slot map (reports of staleness come in bursts).
const REFRESH_GAP: Duration = Duration::from_millis(200);

/// Whether `url` names a Redis Cluster.
pub(crate) fn is_cluster_url(url: &str) -> bool {
    [
        "redis+cluster://",
        "valkey+cluster://",
        "rediss+cluster://",
        "valkeys+cluster://",
    ]
    .iter()
    .any(|p| url.starts_with(p))
}

/// Ranges of slots and the primary (`host:port`) that serves each, sorted by first slot.
type SlotMap = Vec<(u16, u16, String)>;

pub(crate) struct ClusterNodes {
    con: ClusterConnection,
    /// The seed nodes, for the wake-up connection (see [`ClusterNodes::shard_wakes`]).
    seeds: Vec<ConnectionInfo>,
    /// How the seed URL reaches a node (scheme, credentials, TLS files): every node is
    /// dialed the same way.
    dial: NodeUrl,
    slots: Arc<Mutex<SlotMap>>,
    stale: Arc<Notify>,
    /// Never cancelled: the cluster connection heals itself (see [`Shared::dead_signal`]).
    never: CancellationToken,
    /// Dropped with the topology, which ends the refresher.
    _alive: Arc<()>,
}

/// A node's URL, `<scheme>://<userinfo>host:port/0<query>`, as the seed URL would name it.
struct NodeUrl {
    scheme: &'static str,
    userinfo: String,
    /// The URL's TLS files, read once (every node's connections use them).
    certs: Option<TlsCertificates>,
}

impl NodeUrl {
    fn client(&self, addr: &str) -> Result<Client> {
        let NodeUrl {
            scheme,
            userinfo,
            certs,
        } = self;
        client_with(&format!("{scheme}://{userinfo}{addr}/0"), certs.clone())
    }
}

/// The seed nodes of a cluster URL, each as a connection info carrying the URL's credentials
/// (and TLS files), and how to reach any other node the same way.
fn parse_nodes(url: &str) -> Result<(Vec<ConnectionInfo>, NodeUrl)> {
    let bad = |why: String| {
        Error::BadUrl(format!(
            "{url:?}: {why} (expected redis+cluster://[user:password@]host:port[,host:port...]/)"
        ))
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("no scheme".into()))?;
    let tls = scheme.starts_with("rediss") || scheme.starts_with("valkeys");
    let (rest, query) = match rest.split_once('?') {
        Some((rest, q)) => (rest, format!("?{q}")),
        None => (rest, String::new()),
    };
    for pair in query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        if !tls || !["tls_ca", "tls_cert", "tls_key"].contains(&name) {
            return Err(bad(format!(
                "option {name:?} is not supported on cluster URLs (only tls_ca, tls_cert and tls_key, with rediss+cluster://)"
            )));
        }
    }
    let (_, certs) = split_tls(url)?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(path, "" | "0") {
        return Err(bad(format!(
            "a cluster has only db 0, the URL names {path:?}"
        )));
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let node = NodeUrl {
        scheme: if tls { "rediss" } else { "redis" },
        userinfo,
        certs,
    };
    let mut seeds = Vec::new();
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        if !host.contains(':') {
            return Err(bad(format!("{host:?} names no port")));
        }
        let client = node
            .client(host)
            .map_err(|e| bad(format!("{host:?}: {e}")))?;
        seeds.push(client.get_connection_info().clone());
    }
    if seeds.is_empty() {
        return Err(bad("no seed node".into()));
    }
    Ok((seeds, node))
}

/// Check a cluster URL's shape (and read its TLS files) without connecting.
pub(crate) fn parse(url: &str) -> Result<()> {
    parse_nodes(url).map(|_| ())
}

impl ClusterNodes {
    /// Connect through the seed nodes `url` names and read the slot map. Returns the topology
    /// and a first blocking connection (to the node of the global keys).
    pub(crate) async fn connect(url: &str) -> Result<(ClusterNodes, MultiplexedConnection)> {
        let (seeds, dial) = parse_nodes(url)?;
        let seed = seeds[0].clone();
        let client = builder(&seeds, &dial).build()?;
        let con = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection()).await {
            Ok(con) => con?,
            Err(_) => {
                return Err(Error::Unavailable(
                    "no cluster node answered in time".into(),
                ))
            }
        };
        let seed_host = match seed.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let slots = Arc::new(Mutex::new(read_slots(&mut con.clone(), &seed_host).await?));
        let stale = Arc::new(Notify::new());
        let alive = Arc::new(());
        spawn_refresher(
            con.clone(),
            seed_host,
            Arc::downgrade(&slots),
            stale.clone(),
            Arc::downgrade(&alive),
        );
        let nodes = ClusterNodes {
            con,
            seeds,
            dial,
            slots,
            stale,
            never: CancellationToken::new(),
            _alive: alive,
        };
        let first = nodes.dial_blocking(&nodes.node_of(keys::QUEUES)).await?;
        Ok((nodes, first))
    }

    /// Wake-ups over sharded pub/sub, on a cluster connection of their own (RESP3, which
    /// carries the pushes); it connects at the first wait.
    pub(crate) fn shard_wakes(&self) -> Result<ShardWakes> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = builder(&self.seeds, &self.dial)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx)
            .build()?;
        Ok(ShardWakes::new(client, rx))
    }

    /// The primary (`host:port`) serving `slot`, as last read.
    fn primary_of(&self, slot: u16) -> Result<String> {
        let map = lock(&self.slots);
        let at = map.partition_point(|(first, _, _)| *first <= slot);
        match at.checked_sub(1).map(|i| &map[i]) {
            Some((_, last, addr)) if slot <= *last => Ok(addr.clone()),
            _ => {
                drop(map);
                self.stale();
                Err(Error::Unavailable(format!(
                    "no cluster node serves slot {slot} yet"
                )))
            }
        }
    }

    /// A client for the node `host:port`, reached as the seed URL reaches its nodes.
    fn client_for(&self, addr: &str) -> Result<Client> {
        let (host, port) = split_addr(addr)?;
        self.dial.client(&format!("{host}:{port}"))
    }
}

/// A client builder for the cluster the seeds belong to, reached as `dial` says.
fn builder(seeds: &[ConnectionInfo], dial: &NodeUrl) -> ClusterClientBuilder {
    let mut builder = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT);
    if dial.scheme == "rediss" {
        builder = builder.tls(TlsMode::Secure);
        if let Some(certs) = dial.certs.clone() {
            builder = builder.certs(certs);
        }
    }
    builder
}

fn split_addr(addr: &str) -> Result<(String, u16)> {
    let addr = addr.split_once('#').map_or(addr, |(a, _)| a);
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::Unavailable(format!("bad node address {addr:?}")))?;
    let port = port
        .parse()
        .map_err(|_| Error::Unavailable(format!("bad node address {addr:?}")))?;
    Ok((host.to_owned(), port))
}

/// `CLUSTER SLOTS` as a sorted [`SlotMap`] of primaries. A node that does not know its own
/// address names itself `""` (or `?`): then it is the seed's host, the one we reached it by.
async fn read_slots(con: &mut ClusterConnection, seed_host: &str) -> Result<SlotMap> {
    let reply: Value = ::redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(con)
        .await?;
    let bad = || Error::Unavailable("CLUSTER SLOTS gave an unexpected reply".into());
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut map = SlotMap::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return Err(bad());
        };
        let host = match primary.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            return Err(bad());
        };
        let host = if host.is_empty() || host == "?" {
            seed_host.to_owned()
        } else {
            host
        };
        map.push((*first as u16, *last as u16, format!("{host}:{port}")));
    }
    map.sort();
    Ok(map)
}

/// Read the slot map again every [`REFRESH_EVERY`], or soon after it is reported stale; ends
/// when the topology is dropped.
fn spawn_refresher(
    mut con: ClusterConnection,
    seed_host: String,
    slots: Weak<Mutex<SlotMap>>,
    stale: Arc<Notify>,
    alive: Weak<()>,
) {
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(REFRESH_EVERY, stale.notified()).await;
            if alive.strong_count() == 0 {
                return;
            }
            if let Ok(map) = read_slots(&mut con, &seed_host).await {
                match slots.upgrade() {
                    Some(slots) => *lock(&slots) = map,
                    None => return,
                }
            }
            tokio::time::sleep(REFRESH_GAP).await;
        }
    });
}

#[async_trait]
impl Topology for ClusterNodes {
    fn shared(&self, _key: &str) -> Shared {
        Shared::Cluster(self.con.clone(), self.never.clone())
    }

    fn node_of(&self, key: &str) -> String {
        let slot = keys::slot(key);
        // An unknown owner still gets a name of its own: dialing it fails, and is retried.
        let addr = self.primary_of(slot).unwrap_or_default();
        format!("{addr}#{slot}")
    }

    async fn dial_blocking(&self, node: &str) -> Result<MultiplexedConnection> {
        let dialed = dial(&self.client_for(node)?).await;
        if dialed.is_err() {
            self.stale();
        }
        dialed
    }

    /// Scripts `PUBLISH`, which a cluster spreads to every node: any one node hears it all.
    /// The node of the global keys is asked first, then the others in turn.
    async fn pubsub(&self) -> Result<PubSub> {
        let mut addrs: Vec<String> = lock(&self.slots).iter().map(|s| s.2.clone()).collect();
        addrs.dedup();
        if let Ok(first) = self.primary_of(keys::slot(keys::QUEUES)) {
            addrs.insert(0, first);
        }
        for addr in addrs {
            let Ok(client) = self.client_for(&addr) else {
                continue;
            };
            if let Ok(Ok(pubsub)) =
                tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await
            {
                return Ok(pubsub);
            }
        }
        self.stale();
        Err(Error::Unavailable(
            "no cluster node took a pub/sub connection".into(),
        ))
    }

    async fn on_node(&self, node: &str, cmd: &Cmd) -> Result<Value> {
        let (host, port) = split_addr(node)?;
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
        Ok(self.con.clone().route_command(cmd.clone(), route).await?)
    }

    fn stale(&self) {
        self.stale.notify_one();
    }
}
