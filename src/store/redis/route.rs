//! The store made for the settings (one server, Sentinel or a cluster), and where each command
//! goes: the connection of the mode, a key's name there, the script of the mode, `WAIT`.

use std::sync::Arc;

use redis::aio::ConnectionManager;

use super::connect::{
    ClusterLink, Follower, Primary, Target, client_for, cluster_client, follow, join, manager,
    node_clients, unavailable,
};
use super::scripts::Scripts;
use super::{REPLICA_WAIT, RedisStore, cluster};
use crate::audit;
use crate::store::{StoreError, StoreResult};

impl RedisStore {
    /// The store for the settings (TLS, ACL and Sentinel included), prepared without
    /// connecting. With Sentinel it must be called within a Tokio runtime: a task follows the
    /// primary from then on.
    pub fn connect_with(settings: &crate::config::Settings) -> StoreResult<Self> {
        let sink = audit::Sink::new(settings.audit.log, crate::clock::system());
        if let Some(cluster) = &settings.redis_cluster {
            return Self::cluster(settings, cluster, sink);
        }
        let Some(sentinel) = settings.redis_sentinel.clone() else {
            let mut store = Self::from_client(client_for(settings).map_err(unavailable)?)?;
            store.wait_replicas = 0;
            store.audit = settings.audit.bounds;
            store.sink = sink;
            return Ok(store);
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Unavailable("Sentinel needs a Tokio runtime to follow the primary".into())
        })?;
        let follower = Arc::new(Follower {
            current: std::sync::RwLock::new(None),
            epoch: tokio::sync::watch::channel(0).0,
        });
        runtime.spawn(follow(
            Arc::downgrade(&follower),
            settings.clone(),
            sentinel.clone(),
        ));
        Ok(Self {
            target: Target::Sentinel(follower),
            scripts: Scripts::new(),
            cluster_scripts: cluster::ClusterScripts::new(),
            wait_replicas: sentinel.wait_replicas,
            audit: settings.audit.bounds,
            sink,
            waits: Default::default(),
        })
    }

    /// The store on a Redis Cluster (#30, in progress): connected by a task in the background,
    /// like the Sentinel follower, so it must be called within a Tokio runtime.
    pub(super) fn cluster(
        settings: &crate::config::Settings,
        cluster: &crate::config::RedisCluster,
        sink: audit::Sink,
    ) -> StoreResult<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Unavailable("Redis Cluster needs a Tokio runtime to connect".into())
        })?;
        let client = cluster_client(settings, cluster)?;
        let seeds = node_clients(settings, cluster)?;
        let link = ClusterLink::new(seeds);
        runtime.spawn(join(Arc::downgrade(&link), client));
        Ok(Self {
            target: Target::Cluster(link),
            scripts: Scripts::new(),
            cluster_scripts: cluster::ClusterScripts::new(),
            wait_replicas: cluster.wait_replicas,
            audit: settings.audit.bounds,
            sink,
            waits: Default::default(),
        })
    }

    /// Prepares the store without connecting: services start while Redis is still coming up
    /// and report not-ready until it answers.
    pub fn connect(url: &str) -> StoreResult<Self> {
        Self::from_client(redis::Client::open(url).map_err(unavailable)?)
    }

    pub(super) fn from_client(client: redis::Client) -> StoreResult<Self> {
        let conn = manager(&client)?;
        Ok(Self {
            target: Target::Fixed(Box::new(Primary {
                addr: (String::new(), 0),
                client,
                conn,
            })),
            scripts: Scripts::new(),
            cluster_scripts: cluster::ClusterScripts::new(),
            wait_replicas: 0,
            audit: audit::Bounds::default(),
            sink: audit::Sink::default(),
            waits: Default::default(),
        })
    }

    pub(super) fn primary(&self) -> StoreResult<(redis::Client, ConnectionManager)> {
        match &self.target {
            Target::Fixed(p) => Ok((p.client.clone(), p.conn.clone())),
            Target::Sentinel(f) => f
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|p| (p.client.clone(), p.conn.clone()))
                .ok_or_else(|| {
                    StoreError::Unavailable("no sentinel has named the primary yet".into())
                }),
            Target::Cluster(_) => Err(cluster::not_yet("this operation")),
        }
    }

    /// The connection, to one server or to the cluster.
    pub(super) fn any_conn(&self) -> StoreResult<cluster::Conn> {
        match self.on_cluster() {
            Some(conn) => Ok(cluster::Conn::Cluster(conn?)),
            None => Ok(cluster::Conn::Single(self.conn()?)),
        }
    }

    /// A key's name where the store is (its cluster name on a cluster).
    pub(super) fn name(&self, key: &str) -> String {
        match self.target {
            Target::Cluster(_) => cluster::name(key),
            _ => key.to_string(),
        }
    }

    /// The script for the mode: `plain` on one server, `cluster` (the same keys, one slot,
    /// events in the bucket's stream) on a cluster.
    pub(super) fn pick<'s>(
        &self,
        plain: &'s redis::Script,
        cluster: &'s redis::Script,
    ) -> &'s redis::Script {
        match self.target {
            Target::Cluster(_) => cluster,
            _ => plain,
        }
    }

    /// For a command on one key: the connection, and the key's name there (its cluster name
    /// on a cluster).
    pub(super) fn one_key<'a>(
        &self,
        key: &'a str,
    ) -> StoreResult<(cluster::Conn, std::borrow::Cow<'a, str>)> {
        match self.on_cluster() {
            Some(conn) => Ok((cluster::Conn::Cluster(conn?), cluster::name(key).into())),
            None => Ok((cluster::Conn::Single(self.conn()?), key.into())),
        }
    }

    /// The cluster connection, in cluster mode.
    pub(super) fn on_cluster(
        &self,
    ) -> Option<StoreResult<redis::cluster_async::ClusterConnection>> {
        match &self.target {
            Target::Cluster(link) => Some(link.conn()),
            _ => None,
        }
    }

    pub(super) fn conn(&self) -> StoreResult<ConnectionManager> {
        self.primary().map(|(_, conn)| conn)
    }

    /// After a write that must survive a failover (a grant, a revocation): waits until
    /// `wait_replicas` replicas have it (Sentinel only). If they do not within a second, the
    /// write may still be lost, so the caller is told the store is unavailable: a retry is
    /// safe (grants answer a retry with the same tokens; revocations are idempotent).
    pub(super) async fn replicated(&self, conn: &mut ConnectionManager) -> StoreResult<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        // Each write its own WAIT, on the connection it was written on: with Sentinel that
        // connection follows one primary, and a WAIT on another (after a failover) would say
        // nothing about this write. (On a cluster concurrent writes share WAITs: confirm.rs.)
        let acked: i64 = redis::cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(REPLICA_WAIT.as_millis() as u64)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        if acked < i64::from(self.wait_replicas) {
            return Err(StoreError::Unavailable(format!(
                "written, but on {acked} of {} replicas after {} ms",
                self.wait_replicas,
                REPLICA_WAIT.as_millis()
            )));
        }
        Ok(())
    }

    /// [`RedisStore::replicated`] on a cluster, after a write to `key` (its cluster name):
    /// `WAIT` on the primary of its slot, shared by the writes to that slot meanwhile.
    pub(super) async fn replicated_on(
        &self,
        conn: &mut redis::cluster_async::ClusterConnection,
        key: &str,
    ) -> StoreResult<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let group = self.waits.slot(crate::slots::slot(key.as_bytes()));
        group
            .confirm(|| cluster::replicated(conn, key, self.wait_replicas))
            .await
    }
}
