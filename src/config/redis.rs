//! How to reach Redis beyond `REDIS_URL`: TLS material, Sentinel and Redis Cluster.

use super::{ConfigError, Raw, Secret};

/// TLS to Redis beyond the system's roots: a CA to trust (managed Redis often uses its own) and
/// a client certificate where the provider requires one. Read at startup, so a missing file
/// stops the service before it binds a port.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// PEM of the CA that signs the server's certificate (`REDIS_CA_FILE`).
    pub ca: Option<Vec<u8>>,
    /// PEM certificate and key of this client (`REDIS_CLIENT_CERT_FILE`, `REDIS_CLIENT_KEY_FILE`).
    pub client: Option<(Vec<u8>, Secret<Vec<u8>>)>,
}

impl RedisTls {
    pub(super) fn load(raw: &Raw) -> Result<Self, ConfigError> {
        let read = |var: &str| -> Result<Option<Vec<u8>>, ConfigError> {
            raw.get(var)
                .map(|path| {
                    std::fs::read(path)
                        .map_err(|e| ConfigError::new(var, format!("cannot read {path:?}: {e}")))
                })
                .transpose()
        };
        let ca = read("REDIS_CA_FILE")?;
        let client = match (
            read("REDIS_CLIENT_CERT_FILE")?,
            read("REDIS_CLIENT_KEY_FILE")?,
        ) {
            (Some(cert), Some(key)) => Some((cert, Secret::new(key))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "REDIS_CLIENT_KEY_FILE",
                    "is required with REDIS_CLIENT_CERT_FILE",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "REDIS_CLIENT_CERT_FILE",
                    "is required with REDIS_CLIENT_KEY_FILE",
                ));
            }
        };
        Ok(Self { ca, client })
    }

    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }
}

/// Redis behind Sentinel (`REDIS_SENTINELS`): the primary is asked of the sentinels and
/// followed when they elect another; REDIS_URL then gives only the scheme, user, password and
/// database (its host is not used).
#[derive(Debug, Clone)]
pub struct RedisSentinel {
    /// `host:port` of each sentinel.
    pub sentinels: Vec<String>,
    /// The monitored primary's name (`REDIS_SENTINEL_MASTER`, default `mymaster`).
    pub master: String,
    /// The sentinels' own password (`REDIS_SENTINEL_PASSWORD`), when they require one.
    pub password: Option<Secret<String>>,
    /// Replicas a grant or revocation must reach before it is answered (`REDIS_WAIT_REPLICAS`,
    /// default 1), so a failover never loses one that a client was told about.
    pub wait_replicas: u32,
}

impl RedisSentinel {
    pub(super) fn load(raw: &Raw) -> Result<Option<Self>, ConfigError> {
        let Some(list) = raw.get("REDIS_SENTINELS").filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        Ok(Some(Self {
            sentinels: host_ports("REDIS_SENTINELS", list)?,
            master: raw
                .get("REDIS_SENTINEL_MASTER")
                .unwrap_or("mymaster")
                .to_string(),
            password: raw
                .get("REDIS_SENTINEL_PASSWORD")
                .map(|p| Secret::new(p.to_string())),
            wait_replicas: raw.number_u32("REDIS_WAIT_REPLICAS", 1)?,
        }))
    }
}

/// Redis Cluster (`REDIS_CLUSTER_NODES`): the nodes to learn the cluster's shape from (any of
/// them will do; the client finds the rest and follows MOVED/ASK). REDIS_URL then gives only the
/// scheme, user and password (its host is not used; a cluster has no databases but 0).
#[derive(Debug, Clone)]
pub struct RedisCluster {
    /// `host:port` of each seed node.
    pub nodes: Vec<String>,
    /// Replicas a grant or revocation must reach before it is answered (`REDIS_WAIT_REPLICAS`,
    /// default 1), as with Sentinel.
    pub wait_replicas: u32,
}

impl RedisCluster {
    pub(super) fn load(raw: &Raw) -> Result<Option<Self>, ConfigError> {
        let Some(list) = raw
            .get("REDIS_CLUSTER_NODES")
            .filter(|v| !v.trim().is_empty())
        else {
            return Ok(None);
        };
        if raw
            .get("REDIS_SENTINELS")
            .is_some_and(|v| !v.trim().is_empty())
        {
            return Err(ConfigError::new(
                "REDIS_CLUSTER_NODES",
                "cannot be combined with REDIS_SENTINELS (a cluster fails over by itself)",
            ));
        }
        Ok(Some(Self {
            nodes: host_ports("REDIS_CLUSTER_NODES", list)?,
            wait_replicas: raw.number_u32("REDIS_WAIT_REPLICAS", 1)?,
        }))
    }
}

/// A comma-separated list of `host:port`, each checked.
fn host_ports(var: &str, list: &str) -> Result<Vec<String>, ConfigError> {
    let mut items = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let ok = item
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(ConfigError::new(var, format!("{item:?} is not host:port")));
        }
        items.push(item.to_string());
    }
    Ok(items)
}
