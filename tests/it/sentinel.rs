//! Redis behind Sentinel: a real primary, two replicas and three `redis-server --sentinel`
//! processes on loopback. The primary is killed while verify serves cached tokens and cache
//! misses; the store follows the primary the sentinels elect.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_oauth_gateway::audit::Events;
use mcp_oauth_gateway::clock::{Clock, SystemClock};
use mcp_oauth_gateway::config::ConfigSource;
use mcp_oauth_gateway::store::{GrantOutcome, RedisStore, Store};

use crate::support::dev_gateway::ChildGuard;
use crate::support::failover::{Load, judged, settled};
use crate::support::helpers::*;

/// A redis-server (data node or sentinel), killed on drop.
struct Node {
    _child: ChildGuard,
    port: u16,
}

fn spawn(dir: &Path, name: &str, args: &[String]) -> Node {
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args[i + 1].parse().ok())
        .expect("a --port");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("redis-server runs");
    Node {
        _child: ChildGuard(child),
        port,
    }
}

async fn conn(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_multiplexed_async_connection()
        .await
}

async fn query<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> Option<T> {
    let mut c = conn(port).await.ok()?;
    cmd.query_async(&mut c).await.ok()
}

fn data_node(dir: &Path, name: &str, replica_of: Option<u16>) -> Node {
    let port = free_port();
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        sub.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(primary) = replica_of {
        args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ]);
    }
    spawn(dir, name, &args)
}

fn sentinel(dir: &Path, name: &str, primary: u16) -> Node {
    let port = free_port();
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 3000\n\
             sentinel parallel-syncs mymaster 2\n",
            dir.display()
        ),
    )
    .unwrap();
    spawn(
        dir,
        name,
        &[
            conf.to_str().unwrap().to_string(),
            "--sentinel".into(),
            "--port".into(),
            port.to_string(),
        ],
    )
}

/// The port of the primary the sentinel names.
async fn named_primary(sentinel: u16) -> Option<u16> {
    let addr: Option<(String, u16)> = query(
        sentinel,
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster"),
    )
    .await?;
    addr.map(|(_, port)| port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_cached_tokens_and_loses_no_grant_or_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let mut primary = Some(data_node(dir.path(), "primary", None));
    let primary_port = primary.as_ref().unwrap().port;
    let _replicas: Vec<Node> = (1..=2)
        .map(|i| data_node(dir.path(), &format!("replica{i}"), Some(primary_port)))
        .collect();
    let sentinels: Vec<Node> = (1..=3)
        .map(|i| sentinel(dir.path(), &format!("sentinel{i}"), primary_port))
        .collect();
    // Every sentinel sees both replicas and the other two sentinels.
    wait_for(Duration::from_secs(20), || async {
        let mut ready = true;
        for s in &sentinels {
            let replicas: Option<Vec<redis::Value>> = query(
                s.port,
                redis::cmd("SENTINEL").arg("replicas").arg("mymaster"),
            )
            .await;
            let peers: Option<Vec<redis::Value>> = query(
                s.port,
                redis::cmd("SENTINEL").arg("sentinels").arg("mymaster"),
            )
            .await;
            ready &= replicas.is_some_and(|r| r.len() == 2) && peers.is_some_and(|p| p.len() == 2);
        }
        ready
    })
    .await
    .expect("the sentinels found the replicas and each other");
    // Writes wait for a replica: both must be in sync first.
    wait_for(Duration::from_secs(20), || async {
        let info: Option<String> = query(primary_port, redis::cmd("INFO").arg("replication")).await;
        info.is_some_and(|i| i.matches("state=online").count() == 2)
    })
    .await
    .expect("both replicas in sync");

    let list: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let env = ConfigSource::from_pairs([
        ("JWT_ALGORITHM", "RS256".to_string()),
        ("JWT_PRIVATE_KEY_B64", rsa_key_b64().to_string()),
        ("BASE_DOMAIN", "example.com".to_string()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_string()),
        ("ALLOWED_GITHUB_USERS", "alice".to_string()),
        // Its host is not used: the sentinels name the primary.
        ("REDIS_URL", "redis://127.0.0.1:1".to_string()),
        ("REDIS_SENTINELS", list.join(",")),
        ("REDIS_FAILURE_MODE", "cached".to_string()),
    ]);
    let settings = settings(&env);
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect_with(&settings).unwrap());
    settled("first contact", || store.ping()).await;
    let verify = Verify::start(&env, store.clone()).await;
    verify.wait_ready().await;

    // Before the failover: a cached token, fresh tokens for cache misses (each recorded on
    // a replica too: writes wait for one), a grant rotated once and a code redeemed once.
    let (cached, cached_jti) = mint_token(&settings, &store, TokenSpec::default()).await;
    assert_eq!(verify.status(&cached).await, 200);
    let mut fresh = Vec::new();
    for _ in 0..300 {
        fresh.push(mint_token(&settings, &store, TokenSpec::default()).await.0);
    }
    let now = SystemClock.now_unix();
    assert_eq!(
        store
            .issue_grant(&grant_write("g1", "c1", "fam", "r1", None), now)
            .await
            .unwrap(),
        GrantOutcome::Issued
    );
    assert_eq!(
        store
            .issue_grant(&grant_write("g2", "c1", "fam", "r2", Some("r1")), now)
            .await
            .unwrap(),
        GrantOutcome::Issued
    );
    store_code(store.as_ref(), "c1", "c1", 600, &Events::none()).await;
    let mut redeem = grant_write("g3", "c1", "fam2", "r3", None);
    redeem.redeem_code = Some("oauth:code:c1".into());
    assert_eq!(
        store.issue_grant(&redeem, now).await.unwrap(),
        GrantOutcome::Issued
    );

    // Load while the primary dies: the cached token and a new token every time.
    let load = Load::start(&verify, &cached, fresh);
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.take(); // SIGKILL
    let killed = Instant::now();
    let mut elected = None;
    while elected.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no sentinel elected a new primary"
        );
        if named_primary(sentinels[0].port)
            .await
            .is_some_and(|p| p != primary_port)
        {
            elected = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elected = elected.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let seen = load.stop().await;
    judged(&seen, killed, elected, "sentinel failover");

    // A revocation made now, on the new primary, reaches verify. (A retry after a write
    // that was not yet confirmed by a replica finds the token gone: revoking is idempotent.)
    let none = Events::none();
    settled("revoke", || store.revoke_token(&cached_jti, &none)).await;
    verify
        .refuses_within(&cached, 3, "a revocation after the failover is heard")
        .await;

    // What was done before the failover stays done: r1 was rotated, so presenting it again is
    // reuse (never a second rotation), and the code was redeemed.
    let now = SystemClock.now_unix();
    let rotation = grant_write("g4", "c1", "fam", "r4", Some("r1"));
    let again = settled("rotate", || store.issue_grant(&rotation, now)).await;
    assert_eq!(again, GrantOutcome::Reused);
    let mut twice = grant_write("g5", "c1", "fam3", "r5", None);
    twice.redeem_code = Some("oauth:code:c1".into());
    let again = settled("redeem", || store.issue_grant(&twice, now)).await;
    assert!(
        matches!(again, GrantOutcome::CodeReused { .. }),
        "{again:?}"
    );

    // The operator CLI follows the sentinels too: it finds the new primary and its data.
    let out = run_cli_with(&env, &["--json", "stats"]);
    assert_success(&out, "mcp-gateway stats through the sentinels");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stats["live_tokens"].as_u64().unwrap() >= 300, "{stats}");
}
