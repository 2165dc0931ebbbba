//! Reaching Redis: one server (TLS and ACL as the URL and `REDIS_*` files say) or the
//! primary the sentinels name, followed through failovers.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::store::{StoreError, StoreResult};

/// Where commands go: one server, the primary the sentinels name right now, or a cluster.
pub(super) enum Target {
    Fixed(Box<Primary>),
    Sentinel(Arc<Follower>),
    /// Redis Cluster (#30: the operations built so far; the others answer unavailable).
    Cluster(Arc<ClusterLink>),
}

/// The primary as last named by the sentinels, replaced when they elect another.
pub(super) struct Follower {
    pub(super) current: std::sync::RwLock<Option<Primary>>,
    /// Bumped at each change of primary: subscriptions to the old one end, so their
    /// subscribers resubscribe (and verify clears its cache, as on any feed loss).
    pub(super) epoch: tokio::sync::watch::Sender<u64>,
}

#[derive(Clone)]
pub(super) struct Primary {
    pub(super) addr: (String, u16),
    pub(super) client: redis::Client,
    pub(super) conn: ConnectionManager,
}

/// How often the sentinels are asked who the primary is: a failover is followed within this
/// much of the election.
pub const SENTINEL_POLL: Duration = Duration::from_millis(500);

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The Redis client for the settings: `rediss://` with the system's roots, or with
/// `REDIS_CA_FILE` and a client certificate when configured; ACL users come in the URL.
pub fn client_for(settings: &crate::config::Settings) -> redis::RedisResult<redis::Client> {
    client_with_url(settings, settings.redis_url.expose())
}

/// A client for the primary as of now: REDIS_URL's server, or the one the sentinels name (for
/// the operator commands, which run for moments, not through failovers).
pub async fn primary_client(settings: &crate::config::Settings) -> StoreResult<redis::Client> {
    if let Some(cluster) = &settings.redis_cluster {
        // Any node that answers: what the operator commands need of one node is its pub/sub
        // (a PUBLISH anywhere in a cluster reaches every node).
        for client in node_clients(settings, cluster)? {
            let answered =
                tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
                    .await;
            if matches!(answered, Ok(Ok(_))) {
                return Ok(client);
            }
        }
        return Err(StoreError::Unavailable(
            "no node of REDIS_CLUSTER_NODES answers".into(),
        ));
    }
    match &settings.redis_sentinel {
        None => client_for(settings).map_err(unavailable),
        Some(sentinel) => {
            let mut conns = vec![None; sentinel.sentinels.len()];
            let (host, port) = ask_sentinels(sentinel, &mut conns)
                .await
                .map_err(StoreError::Unavailable)?;
            client_at(settings, &host, port)
        }
    }
}

pub(super) fn client_with_url(
    settings: &crate::config::Settings,
    url: &str,
) -> redis::RedisResult<redis::Client> {
    let tls = &settings.redis_tls;
    if tls.is_empty() {
        return redis::Client::open(url);
    }
    redis::Client::build_with_tls(url, certificates(tls))
}

/// The TLS material of the settings, as the redis crate takes it.
fn certificates(tls: &crate::config::RedisTls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.expose().clone(),
            }),
        root_cert: tls.ca.clone(),
    }
}

/// A Redis Cluster client for `REDIS_CLUSTER_NODES`: each seed node with REDIS_URL's scheme,
/// user and password; TLS material and timeouts as for one server. The client learns the slot
/// map from any seed, follows MOVED and ASK, and refreshes the map after a failover.
pub fn cluster_client(
    settings: &crate::config::Settings,
    cluster: &crate::config::RedisCluster,
) -> StoreResult<redis::cluster::ClusterClient> {
    let nodes = each_node(cluster, |host, port| node_url(settings, host, port))?;
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(2);
    let tls = &settings.redis_tls;
    if !tls.is_empty() {
        builder = builder.certs(certificates(tls));
    }
    builder.build().map_err(unavailable)
}

/// A client for each node of REDIS_CLUSTER_NODES (TLS and ACL as for one server).
pub(super) fn node_clients(
    settings: &crate::config::Settings,
    cluster: &crate::config::RedisCluster,
) -> StoreResult<Vec<redis::Client>> {
    each_node(cluster, |host, port| client_at(settings, host, port))
}

/// `make` for each listed node's host and port.
fn each_node<T>(
    cluster: &crate::config::RedisCluster,
    make: impl Fn(&str, u16) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    cluster
        .nodes
        .iter()
        .map(|node| {
            let (host, port) = node
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| StoreError::Unavailable(format!("{node:?} is not host:port")))?;
            make(host, port)
        })
        .collect()
}

/// REDIS_URL with its host and port replaced (scheme, user, password and database kept).
fn node_url(settings: &crate::config::Settings, host: &str, port: u16) -> StoreResult<String> {
    let mut url = url::Url::parse(settings.redis_url.expose())
        .map_err(|e| StoreError::Unavailable(format!("REDIS_URL: {e}")))?;
    url.set_host(Some(host))
        .and_then(|_| {
            url.set_port(Some(port))
                .map_err(|_| url::ParseError::InvalidPort)
        })
        .map_err(|e| StoreError::Unavailable(format!("node {host}:{port}: {e}")))?;
    Ok(url.into())
}

/// REDIS_URL with its host and port replaced by the primary's (scheme, user, password and
/// database kept).
pub(super) fn client_at(
    settings: &crate::config::Settings,
    host: &str,
    port: u16,
) -> StoreResult<redis::Client> {
    client_with_url(settings, &node_url(settings, host, port)?).map_err(unavailable)
}

pub(super) fn manager(client: &redis::Client) -> StoreResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)
}

/// Asks the sentinels, in order, for the primary's address; the first that answers decides.
pub(super) async fn ask_sentinels(
    sentinel: &crate::config::RedisSentinel,
    conns: &mut [Option<redis::aio::MultiplexedConnection>],
) -> Result<(String, u16), String> {
    let mut last = String::from("no sentinel configured");
    for (addr, slot) in sentinel.sentinels.iter().zip(conns.iter_mut()) {
        if slot.is_none() {
            let mut info = format!("redis://{addr}");
            if let Some(pw) = &sentinel.password {
                info = format!("redis://:{}@{addr}", urlencode(pw.expose()));
            }
            let opened = async {
                let client = redis::Client::open(info.as_str())?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(CONNECT_TIMEOUT))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            };
            match opened.await {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    last = format!("sentinel {addr}: {e}");
                    continue;
                }
            }
        }
        let Some(conn) = slot.as_mut() else { continue };
        let answer: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&sentinel.master)
            .query_async(conn)
            .await;
        match answer {
            Ok(Some(primary)) => return Ok(primary),
            Ok(None) => last = format!("sentinel {addr} knows no primary {:?}", sentinel.master),
            Err(e) => {
                last = format!("sentinel {addr}: {e}");
                *slot = None;
            }
        }
    }
    Err(last)
}

pub(super) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Follows the primary the sentinels name until the store is dropped.
pub(super) async fn follow(
    follower: std::sync::Weak<Follower>,
    settings: crate::config::Settings,
    sentinel: crate::config::RedisSentinel,
) {
    let mut conns: Vec<Option<redis::aio::MultiplexedConnection>> =
        sentinel.sentinels.iter().map(|_| None).collect();
    let mut complained = false;
    loop {
        let answer = ask_sentinels(&sentinel, &mut conns).await;
        let Some(follower) = follower.upgrade() else {
            return;
        };
        match answer {
            Ok((host, port)) => {
                complained = false;
                let known = follower
                    .current
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|p| p.addr.clone());
                if known.as_ref() != Some(&(host.clone(), port)) {
                    match client_at(&settings, &host, port)
                        .and_then(|client| Ok((manager(&client)?, client)))
                    {
                        Ok((conn, client)) => {
                            tracing::warn!(
                                primary = %format!("{host}:{port}"),
                                previous = ?known.map(|(h, p)| format!("{h}:{p}")),
                                "following the Redis primary named by the sentinels"
                            );
                            *follower.current.write().unwrap_or_else(|p| p.into_inner()) =
                                Some(Primary {
                                    addr: (host, port),
                                    client,
                                    conn,
                                });
                            follower.epoch.send_modify(|e| *e += 1);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot use the primary the sentinels named")
                        }
                    }
                }
            }
            Err(e) if !complained => {
                complained = true;
                tracing::warn!(error = %e, "no sentinel named the Redis primary");
            }
            Err(_) => {}
        }
        drop(follower);
        tokio::time::sleep(SENTINEL_POLL).await;
    }
}

/// The cluster connection (one multiplexed connection a node, the slot map followed through
/// MOVED/ASK and failovers), made by a task in the background so services start while the
/// cluster is still coming up, as with one server.
pub(crate) struct ClusterLink {
    pub(super) conn: std::sync::RwLock<Option<redis::cluster_async::ClusterConnection>>,
    /// The listed nodes, for the revocation subscription (PUBLISH in a cluster reaches every
    /// node): the next subscription starts at `next_seed`, moved on past a node that failed.
    pub(super) seeds: Vec<redis::Client>,
    pub(super) next_seed: std::sync::atomic::AtomicUsize,
}

impl ClusterLink {
    pub(super) fn new(seeds: Vec<redis::Client>) -> Arc<Self> {
        Arc::new(Self {
            conn: std::sync::RwLock::new(None),
            seeds,
            next_seed: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub(super) fn conn(&self) -> StoreResult<redis::cluster_async::ClusterConnection> {
        self.conn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("not connected to the cluster yet".into()))
    }
}

/// Connects to the cluster, retrying every half second until it answers; the connection then
/// reconnects by itself.
pub(super) async fn join(
    link: std::sync::Weak<ClusterLink>,
    client: redis::cluster::ClusterClient,
) {
    let mut complained = false;
    loop {
        match client.get_async_connection().await {
            Ok(conn) => {
                if let Some(link) = link.upgrade() {
                    *link.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                    tracing::info!("connected to the Redis cluster");
                }
                return;
            }
            Err(e) => {
                if !complained {
                    tracing::warn!(error = %e, "the Redis cluster does not answer yet; retrying");
                    complained = true;
                }
            }
        }
        if link.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
