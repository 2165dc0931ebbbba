//! The operator commands' connection: one server, or a Redis Cluster seen as one server.
//!
//! On a cluster the commands keep using single-server names: each command's keys are renamed
//! to their cluster names on the way out ([`crate::slots::cluster_name`]), SCAN walks every
//! primary in turn and names what it finds as on one server ([`crate::slots::single_name`]),
//! and a pipeline, whose commands may belong to any slot, is sent as concurrent single
//! commands. So `stats`, listings, `purge-expired`, `backup` and `restore` read and write the
//! same names on both, and a backup of one restores into the other.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisResult, Value};

use crate::slots::{cluster_name, single_name};

/// Commands sent at once per pipeline on a cluster (each its own request on the cluster
/// connection, which multiplexes them per node).
const IN_FLIGHT: usize = 64;

/// Where the operator commands go.
#[derive(Clone)]
pub enum AdminConn {
    Single(MultiplexedConnection),
    Cluster(ClusterAdmin),
}

/// A cluster, for the operator commands: the cluster connection (slots followed through
/// MOVED/ASK) and the primaries as they were when the command started, for SCAN.
#[derive(Clone)]
pub struct ClusterAdmin {
    conn: ClusterConnection,
    primaries: Vec<(String, u16)>,
}

/// A SCAN cursor on a cluster: the primary's index in its top byte, that primary's own cursor
/// below (Redis cursors stay far below 2^56).
const NODE_SHIFT: u32 = 56;

impl AdminConn {
    /// The cluster's primaries, read from `CLUSTER SLOTS` (the view the client routes by).
    pub async fn cluster(mut conn: ClusterConnection) -> RedisResult<Self> {
        let slots: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await?;
        let mut primaries = Vec::new();
        for range in slots {
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(node)) = parts.get(2) else {
                continue;
            };
            let host: String = node
                .first()
                .map_or(Ok(String::new()), redis::from_redis_value_ref)?;
            let port: u16 = node.get(1).map_or(Ok(0), redis::from_redis_value_ref)?;
            if !primaries.contains(&(host.clone(), port)) {
                primaries.push((host, port));
            }
        }
        primaries.sort();
        Ok(Self::Cluster(ClusterAdmin { conn, primaries }))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A Lua prelude that defines `N(key)`, the name of a key a script builds itself: the
    /// key as given on one server, its cluster name on a cluster.
    pub fn naming(&self) -> String {
        match self {
            Self::Single(_) => "local function N(k) return k end\n".into(),
            Self::Cluster(_) => format!(
                "{}\nlocal function N(k) return cluster_name(k) end\n",
                crate::slots::lua_cluster_name()
            ),
        }
    }

    /// One page of keys matching `pattern` from `cursor` (0 to start): the next cursor (0 at
    /// the end) and the keys, named as on one server. On a cluster the walk goes through each
    /// primary in turn.
    pub async fn scan(
        &mut self,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut scan = redis::cmd("SCAN");
        match self {
            Self::Single(conn) => {
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                scan.query_async(conn).await
            }
            Self::Cluster(cluster) => {
                let node = (cursor >> NODE_SHIFT) as usize;
                let Some((host, port)) = cluster.primaries.get(node).cloned() else {
                    return Ok((0, Vec::new()));
                };
                scan.arg(cursor & ((1 << NODE_SHIFT) - 1))
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                let answer = cluster
                    .conn
                    .route_command(
                        scan,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
                    )
                    .await?;
                let (next, keys): (u64, Vec<String>) = redis::from_redis_value(answer)?;
                let next = if next != 0 {
                    ((node as u64) << NODE_SHIFT) | next
                } else if node + 1 < cluster.primaries.len() {
                    ((node + 1) as u64) << NODE_SHIFT
                } else {
                    0
                };
                Ok((next, keys.iter().map(|k| single_name(k)).collect()))
            }
        }
    }

    /// How many keys the store holds (every primary's, on a cluster).
    pub async fn dbsize(&mut self) -> RedisResult<u64> {
        match self {
            Self::Single(conn) => redis::cmd("DBSIZE").query_async(conn).await,
            Self::Cluster(cluster) => {
                let mut total = 0;
                for (host, port) in cluster.primaries.clone() {
                    let n = cluster
                        .conn
                        .route_command(
                            redis::cmd("DBSIZE"),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host,
                                port,
                            }),
                        )
                        .await?;
                    total += redis::from_redis_value::<u64>(n)?;
                }
                Ok(total)
            }
        }
    }
}

/// `cmd` with its keys renamed to their cluster names. The keys are where each command the
/// operator commands use has them: EVAL/EVALSHA after the key count, every argument of the
/// multi-key commands, none for server commands, else the first argument.
fn on_cluster(cmd: &Cmd) -> Cmd {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(d) => Some(d),
            _ => None,
        })
        .collect();
    let Some((name, rest)) = args.split_first() else {
        return cmd.clone();
    };
    let upper = String::from_utf8_lossy(name).to_ascii_uppercase();
    let keys = match upper.as_str() {
        "EVAL" | "EVALSHA" => {
            let n = rest
                .get(1)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            2..2 + n
        }
        "MGET" | "EXISTS" | "DEL" | "UNLINK" | "TOUCH" => 0..rest.len(),
        "SCRIPT" | "PING" | "INFO" | "DBSIZE" | "CLUSTER" | "WAIT" | "SCAN" | "PUBLISH" => 0..0,
        _ => 0..1,
    };
    let mut out = redis::cmd(&upper);
    for (i, arg) in rest.iter().enumerate() {
        match std::str::from_utf8(arg) {
            Ok(key) if keys.contains(&i) => out.arg(cluster_name(key)),
            _ => out.arg(*arg),
        };
    }
    out
}

impl ClusterAdmin {
    async fn one(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.conn.req_packed_command(&on_cluster(cmd)).await
    }

    /// A pipeline's commands, each sent on its own (they may be of any slot), `IN_FLIGHT` at
    /// a time, answered in order.
    async fn each(&mut self, pipeline: &redis::Pipeline) -> RedisResult<Vec<Value>> {
        use futures_util::StreamExt;
        let conn = self.conn.clone();
        let answers: Vec<RedisResult<Value>> =
            futures_util::stream::iter(pipeline.cmd_iter().map(on_cluster))
                .map(|cmd| {
                    let mut conn = conn.clone();
                    async move { conn.req_packed_command(&cmd).await }
                })
                .buffered(IN_FLIGHT)
                .collect()
                .await;
        // As on one server, a pipeline with a failed command fails whole.
        answers.into_iter().collect()
    }
}

impl ConnectionLike for AdminConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> BoxFuture<'a, RedisResult<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(cluster) => cluster.one(cmd).boxed(),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> BoxFuture<'a, RedisResult<Vec<Value>>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => async move {
                let answers = cluster.each(pipeline).await?;
                Ok(answers.into_iter().skip(offset).take(count).collect())
            }
            .boxed(),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}
