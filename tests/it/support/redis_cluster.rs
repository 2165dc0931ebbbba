//! A real Redis Cluster for one test: three primaries and three replicas of `redis-server
//! --cluster-enabled yes` on loopback, joined by `redis-cli --cluster create`, every node
//! killed on drop. Ports stay ≤ 55535: each node's cluster bus listens on its port + 10000.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcp_oauth_gateway::slots::{Bucket, slot};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

/// A loopback port, and the one 10,000 above it, both free now (tiny race until the node binds
/// them; a node that cannot bind exits and the start is retried).
fn free_port_pair() -> u16 {
    loop {
        let port = free_below(45_535);
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn free_below(limit: u16) -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(20_000..limit);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed (apt-get install redis-server)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A write on `primary` (a key of one of its own slots) that its replica acknowledges within
/// a second, on one connection.
fn acknowledged(primary: u16) -> bool {
    use std::io::Write;
    let nodes = cli(primary, &["CLUSTER", "NODES"]);
    let Some(own) = nodes.lines().find(|l| l.contains("myself")) else {
        return false;
    };
    // Its slot ranges (`0-5460`), from the ninth field on.
    let ranges: Vec<(u16, u16)> = own
        .split(' ')
        .skip(8)
        .filter_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    let Some(tag) = (0..=255u8).map(|b| Bucket::new(b).tag()).find(|t| {
        ranges
            .iter()
            .any(|(a, b)| (*a..=*b).contains(&slot(t.as_bytes())))
    }) else {
        return false;
    };
    let Ok(mut child) = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &primary.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = writeln!(stdin, "SET {{{tag}}}:harness-probe 1\nWAIT 1 1000");
    }
    child
        .wait_with_output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).lines().last() == Some("1"))
}

impl RedisCluster {
    /// Three primaries with a replica each, every slot assigned, `cluster_state:ok` on every
    /// node.
    pub async fn start() -> Self {
        for _ in 0..3 {
            if let Some(cluster) = Self::try_start().await {
                return cluster;
            }
        }
        panic!("a Redis Cluster did not come up in three tries");
    }

    async fn try_start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..6).map(|_| free_port_pair()).collect();
        let mut cluster = RedisCluster {
            ports: ports.clone(),
            children: Vec::new(),
            _dir: dir,
        };
        for port in &ports {
            let child = cluster.spawn(*port);
            cluster.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &ports {
            while cli(*port, &["PING"]).trim() != "PONG" {
                if Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        if !created.success() {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        // Every node sees every slot served, and three primaries each with its replica in sync.
        while !ports.iter().all(|p| {
            let info = cli(*p, &["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
        }) || cluster.primaries().len() != 3
            || !cluster
                .primaries()
                .iter()
                .all(|p| cli(*p, &["INFO", "replication"]).contains("state=online"))
        {
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And each replica acknowledges writes (WAIT answers 1), as the store's WAIT expects.
        for primary in cluster.primaries() {
            while !acknowledged(primary) {
                if Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Some(cluster)
    }

    /// `REDIS_CLUSTER_NODES` for this cluster: every node, as an operator lists them.
    pub fn nodes_setting(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The primaries' ports, as the cluster sees them now.
    pub fn primaries(&self) -> Vec<u16> {
        let nodes = self.nodes();
        nodes
            .lines()
            .filter(|line| line.split(' ').nth(2).is_some_and(|f| f.contains("master")))
            .filter_map(|line| {
                let addr = line.split(' ').nth(1)?;
                addr.split(['@', ','])
                    .next()?
                    .rsplit_once(':')?
                    .1
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// `CLUSTER NODES` as the first node that answers sees it.
    fn nodes(&self) -> String {
        self.ports
            .iter()
            .map(|p| cli(*p, &["CLUSTER", "NODES"]))
            .find(|out| out.contains("myself"))
            .unwrap_or_default()
    }

    /// A node of this cluster on `port`, its files in its own directory (a restart finds its
    /// `nodes.conf` there and rejoins).
    fn spawn(&self, port: u16) -> Child {
        let node_dir = self._dir.path().join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("node dir");
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .args(["--dir", node_dir.to_str().expect("utf-8 temp path")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)")
    }

    /// The index of the node on `port`.
    fn at(&self, port: u16) -> usize {
        self.ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of this cluster")
    }

    /// Starts the node on `port` again after [`RedisCluster::kill`]: it rejoins, as a replica
    /// of the primary that took its slots.
    pub fn restart(&mut self, port: u16) {
        let at = self.at(port);
        self.children[at] = self.spawn(port);
    }

    /// SIGKILLs the node on `port` (a primary dies; its replica is promoted after the node
    /// timeout, 2 s).
    pub fn kill(&mut self, port: u16) {
        let at = self.at(port);
        let _ = self.children[at].kill();
        let _ = self.children[at].wait();
    }

    /// The primary that serves `key`'s slot now.
    pub fn primary_of(&self, key: &str) -> u16 {
        let wanted = slot(key.as_bytes());
        let nodes = self.nodes();
        nodes
            .lines()
            .filter(|line| line.split(' ').nth(2).is_some_and(|f| f.contains("master")))
            .find(|line| {
                line.split(' ').skip(8).any(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&wanted))
                })
            })
            .and_then(|line| line.split(' ').nth(1)?.split(['@', ',']).next()?.rsplit_once(':')?.1.parse().ok())
            .expect("every slot is served")
    }

    /// How many slots the primary on `port` serves now.
    pub fn slot_count(&self, port: u16) -> usize {
        let nodes = self.nodes();
        let needle = format!(":{port}@");
        nodes
            .lines()
            .find(|line| line.split(' ').nth(1).is_some_and(|a| a.contains(&needle)))
            .map(|line| {
                line.split(' ')
                    .skip(8)
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?)
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// `redis-cli` against one node (`-c`: following MOVED), for the test's own inspection.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        cli(port, &all)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
