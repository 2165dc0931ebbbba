//! The operator commands on a Redis Cluster (#30): `stats`, `tokens list`, `purge-expired`,
//! `backup`, `restore` and `clients delete --complete` work on a cluster as on one server, and
//! a backup moves between the two both ways (the migration path); `audit`, `trace` and
//! `audit --follow` read a cluster's trail, a stream per bucket, as one.

use std::collections::BTreeMap;

use mcp_oauth_gateway::audit::{Actor, Event, Kind};

use super::*;
use crate::support::redis_cluster::RedisCluster;

/// `mcp-gateway` with `gw`'s settings, but on `cluster` instead of `gw`'s Redis.
fn on_cluster(gw: &Gateway, cluster: &RedisCluster, dir: &Path, args: &[&str]) -> Output {
    cli_command(gw, args)
        .current_dir(dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ALLOWED_GITHUB_USERS", "alice,bob")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("REDIS_CLUSTER_NODES", cluster.nodes_setting())
        .output()
        .expect("mcp-gateway runs")
}

/// A backup's entries by key: (type, members or value, sorted), TTLs left out.
fn entries(file: &Path) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in std::fs::read_to_string(file).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let (Some(key), Some(kind)) = (v["key"].as_str(), v["type"].as_str()) else {
            continue; // the header and the trailer
        };
        let items: Vec<String> = match &v["value"] {
            Value::Array(items) => items.iter().map(|i| i.to_string()).collect(),
            other => vec![other.to_string()],
        };
        let entry = out
            .entry(key.to_string())
            .or_insert_with(|| (kind.to_string(), Vec::new()));
        entry.1.extend(items);
        entry.1.sort();
    }
    out
}

/// Two `stats --json` that count the same clients, tokens and families.
fn same_counts(a: &Value, b: &Value) {
    for field in [
        "clients",
        "live_tokens",
        "refresh_families",
        "tokens_per_client",
    ] {
        assert_eq!(a[field], b[field], "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_run_on_a_cluster_and_a_backup_moves_between_one_server_and_a_cluster() {
    let (gw, a, _b, _alice, _bob) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.json");
    backup(&gw, dir.path(), &single);
    let stats_single = json(&cli(&gw, dir.path(), &["--json", "stats"]));
    let cluster = RedisCluster::start().await;
    let run = |args: &[&str]| on_cluster(&gw, &cluster, dir.path(), args);

    // One server → cluster: every key back, under the same single-server names, and the
    // same counts.
    let restored = ok(&run(&["restore", single.to_str().unwrap()]));
    assert!(restored.contains("restored"), "{restored}");
    let from_cluster = dir.path().join("cluster.json");
    ok(&run(&["backup", "--out", from_cluster.to_str().unwrap()]));
    let (before, after) = (entries(&single), entries(&from_cluster));
    assert!(before.len() > 10, "{before:?}");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same keys on the cluster"
    );
    assert_eq!(before, after, "the same values on the cluster");
    let stats_cluster = json(&run(&["--json", "stats"]));
    same_counts(&stats_cluster, &stats_single);
    assert!(stats_cluster["live_tokens"].as_u64().unwrap() >= 2);
    let listed = ok(&run(&["tokens", "list", "--json", "--user", "alice"]));
    assert!(listed.lines().count() >= 1, "{listed}");
    assert!(listed.contains("\"alice\""), "{listed}");
    ok(&run(&["tokens", "purge-expired"]));

    // A restore into the cluster again changes nothing (restore is idempotent there too).
    ok(&run(&["restore", single.to_str().unwrap()]));
    let again = dir.path().join("again.json");
    ok(&run(&["backup", "--out", again.to_str().unwrap()]));
    assert_eq!(entries(&again), after);

    // Deleting a client completely on the cluster: its tokens, grants and registration go.
    let id = a["client_id"].as_str().unwrap();
    ok(&run(&["clients", "delete", "--complete", id]));
    let stats_deleted = json(&run(&["--json", "stats"]));
    assert_eq!(
        stats_deleted["clients"].as_u64().unwrap() + 1,
        stats_cluster["clients"].as_u64().unwrap()
    );
    assert!(
        stats_deleted["tokens_per_client"].get(id).is_none(),
        "{stats_deleted}"
    );

    // Cluster → one server: the cluster's backup restores into an empty Redis, same keys.
    let deleted = dir.path().join("deleted.json");
    ok(&run(&["backup", "--out", deleted.to_str().unwrap()]));
    flush(&gw).await;
    ok(&cli(
        &gw,
        dir.path(),
        &["restore", deleted.to_str().unwrap()],
    ));
    let back = dir.path().join("back.json");
    backup(&gw, dir.path(), &back);
    assert_eq!(entries(&back), entries(&deleted));
    let stats_back = json(&cli(&gw, dir.path(), &["--json", "stats"]));
    same_counts(&stats_back, &stats_deleted);

    // The operator's own commands are in the cluster's trail, read like one server's.
    let restores = ok(&run(&["audit", "--json", "--type", "restore"]));
    assert!(restores.lines().count() >= 2, "{restores}");
}

/// Every line of a `--json` listing.
fn events(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reads_a_clusters_trail_merged_from_its_buckets_by_user_and_by_client() {
    let cluster = RedisCluster::start().await;
    let (gw, store) = crate::cluster::gateway_on(&cluster, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| on_cluster(&gw, &cluster, dir.path(), args);

    // Events of two users and two clients, written in the buckets of their steps: a
    // registration in its client's, a token in its user's (the client's index elsewhere).
    let a = gw.client("none").await;
    let alice = gw.tokens(&a).await;
    let b = gw.client("none").await;
    gw.github.sign_in_as("bob");
    let bob = gw.tokens(&b).await;
    let _ = gw.refreshed(&b, &bob).await;
    let access = alice["access_token"].as_str().unwrap();
    assert_eq!(gw.revoke(&a, access).await.status(), 200);

    let all = events(&ok(&run(&["audit", "--json"])));
    let kinds: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in [
        "client_registered",
        "token_issued",
        "token_refreshed",
        "token_revoked",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    // One trail, newest first, each event once, with an id that names its bucket.
    let times: Vec<&str> = all.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let mut ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| id.contains('@')), "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "no event twice");

    // A client's and a user's events through their index streams: the same events as the
    // whole trail holds for them, those written in another bucket's stream included.
    for (flag, field, who) in [
        ("--client", "client_id", b["client_id"].as_str().unwrap()),
        ("--client", "client_id", a["client_id"].as_str().unwrap()),
        ("--user", "user", "alice"),
        ("--user", "user", "bob"),
    ] {
        let theirs = events(&ok(&run(&["audit", "--json", flag, who])));
        let expected: Vec<&Value> = all.iter().filter(|e| e[field] == who).collect();
        assert!(!expected.is_empty(), "{who}");
        assert_eq!(
            theirs.iter().map(|e| &e["id"]).collect::<Vec<_>>(),
            expected.iter().map(|e| &e["id"]).collect::<Vec<_>>(),
            "{flag} {who}"
        );
    }
    // Windows: nothing is older than an hour; everything is newer.
    assert!(ok(&run(&["audit", "--json", "--until", "1h"])).is_empty());
    assert_eq!(
        events(&ok(&run(&["audit", "--json", "--since", "1h"]))).len(),
        all.len()
    );
    let issued = events(&ok(&run(&[
        "audit",
        "--json",
        "--client",
        b["client_id"].as_str().unwrap(),
        "--type",
        "token_issued",
    ])));
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["user"], "bob");
    // A client's story, oldest first.
    let story = ok(&run(&[
        "trace",
        "--client",
        b["client_id"].as_str().unwrap(),
    ]));
    let registered = story.find("client_registered").expect("registered");
    let refreshed = story.find("token_refreshed").expect("refreshed");
    assert!(registered < refreshed, "{story}");

    // Pages: 1,234 events of as many users (every bucket) come back newest first, each once.
    // (Nothing is written meanwhile, so the whole trail is the purges and the events above.)
    for i in 0..1_234 {
        let event = Event::new(Kind::Purge, Actor::Operator("t".into()))
            .user(&format!("u{i}"))
            .detail("i", i);
        store.append_events(&Events::one(event)).await.unwrap();
    }
    let purges = events(&ok(&run(&["audit", "--json", "--type", "purge"])));
    in_time_order(&purges, true);
    let mut order: Vec<i64> = purges
        .iter()
        .map(|e| e["detail"]["i"].as_i64().unwrap())
        .collect();
    order.sort();
    assert_eq!(
        order,
        (0..1_234).collect::<Vec<_>>(),
        "every page, each event once"
    );
    let file = dir.path().join("trail.jsonl");
    let said = ok(&run(&["audit", "--out", file.to_str().unwrap()]));
    let total = all.len() + 1_234;
    assert!(
        said.contains(&format!("exported {total} events")),
        "{said} (expected {total})"
    );
    let limited = events(&ok(&run(&["audit", "--json", "--limit", "7"])));
    assert_eq!(limited, purges[..7].to_vec());
}

/// The millisecond of an event, from its id (`ms-seq@bucket`).
fn millis(event: &Value) -> u64 {
    let id = event["id"].as_str().unwrap();
    id.split('-').next().unwrap().parse().unwrap()
}

/// `events` (detail `i`: the order they were written in) are listed as a cluster's trail
/// orders them: by time, newest first (`newest_first`) or oldest first, and the write order
/// agrees with it (only events of one millisecond in two buckets may be listed either way).
fn in_time_order(events: &[Value], newest_first: bool) {
    let listed: Vec<u64> = events.iter().map(millis).collect();
    assert!(
        listed.windows(2).all(|w| if newest_first {
            w[0] >= w[1]
        } else {
            w[0] <= w[1]
        }),
        "{listed:?}"
    );
    let mut written: Vec<(i64, u64)> = events
        .iter()
        .map(|e| (e["detail"]["i"].as_i64().unwrap(), millis(e)))
        .collect();
    written.sort();
    assert!(written.windows(2).all(|w| w[0].1 <= w[1].1), "{written:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_follow_on_a_cluster_prints_events_of_any_bucket_as_they_come() {
    let cluster = RedisCluster::start().await;
    let (gw, store) = crate::cluster::gateway_on(&cluster, &[]).await;
    let mut child = cli_command(&gw, &["audit", "--json", "--follow", "--type", "purge"])
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("REDIS_CLUSTER_NODES", cluster.nodes_setting())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut rx = stdout_lines(&mut child);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    // Events of 40 users, so in most buckets' streams, each printed once, in order.
    for i in 0..40 {
        let event = Event::new(Kind::Purge, Actor::Operator("t".into()))
            .user(&format!("f{i}"))
            .detail("i", i);
        store.append_events(&Events::one(event)).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("followed within a poll")
            .unwrap();
        seen.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    // Nothing more comes: each event was printed once.
    let more = tokio::time::timeout(std::time::Duration::from_millis(1_500), rx.recv()).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(more.is_err(), "{more:?}");
    in_time_order(&seen, false);
    let mut order: Vec<i64> = seen
        .iter()
        .map(|e| e["detail"]["i"].as_i64().unwrap())
        .collect();
    order.sort();
    assert_eq!(order, (0..40).collect::<Vec<_>>());
}
