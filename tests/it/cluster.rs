//! Redis Cluster (issue #30, in progress): a real three-primary cluster started by the test;
//! the settings, the cluster client the store will use, and the bucket tags' placement.

use mcp_oauth_gateway::audit::{Actor, Event, Events, Kind, outcome};
use mcp_oauth_gateway::clock::{Clock, SystemClock};
use mcp_oauth_gateway::config::{ConfigSource, Settings};
use mcp_oauth_gateway::slots::{BUCKETS, Bucket, cluster_name, lua_cluster_name, slot};
use mcp_oauth_gateway::store::redis::cluster_client;
use mcp_oauth_gateway::store::{
    Change, GrantOutcome, NewClientWrite, OnceWrite, RedisStore, Store, keys,
};

use crate::support::helpers::{
    RedisServer, TokenSpec, Verify, grant_write, rsa_key_b64, token_record,
};
use crate::support::redis_cluster::RedisCluster;

fn env(extra: &[(&str, &str)]) -> ConfigSource {
    let mut source = ConfigSource::from_pairs([
        ("JWT_ALGORITHM", "RS256".to_string()),
        ("JWT_PRIVATE_KEY_B64", rsa_key_b64().to_string()),
        ("BASE_DOMAIN", "example.com".to_string()),
        ("ALLOWED_GITHUB_USERS", "alice".to_string()),
        // Its host is not used: the nodes are listed apart.
        ("REDIS_URL", "redis://127.0.0.1:1".to_string()),
    ]);
    for (k, v) in extra {
        source = source.with(*k, *v);
    }
    source
}

#[test]
fn cluster_nodes_are_checked_and_exclude_sentinel() {
    let ok = Settings::load(&env(&[("REDIS_CLUSTER_NODES", "a:7000, b:7001")])).unwrap();
    let cluster = ok.redis_cluster.expect("cluster settings");
    assert_eq!(cluster.nodes, ["a:7000", "b:7001"]);
    assert_eq!(cluster.wait_replicas, 1);
    for (extra, var) in [
        (
            vec![("REDIS_CLUSTER_NODES", "a:7000,b")],
            "REDIS_CLUSTER_NODES",
        ),
        (
            vec![("REDIS_CLUSTER_NODES", "a:70000")],
            "REDIS_CLUSTER_NODES",
        ),
        (
            vec![
                ("REDIS_CLUSTER_NODES", "a:7000"),
                ("REDIS_SENTINELS", "s:26379"),
            ],
            "REDIS_CLUSTER_NODES",
        ),
    ] {
        let err = Settings::load(&env(&extra)).expect_err("refused");
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_client_reaches_every_slot_and_bucket_tags_spread_over_the_primaries() {
    let cluster = RedisCluster::start().await;
    assert_eq!(cluster.primaries().len(), 3);
    let settings =
        Settings::load(&env(&[("REDIS_CLUSTER_NODES", &cluster.nodes_setting())])).unwrap();
    let client = cluster_client(&settings, settings.redis_cluster.as_ref().unwrap()).unwrap();
    let mut conn = client
        .get_async_connection()
        .await
        .expect("cluster connection");

    // One key per bucket, written and read through the one client: each lands on the primary
    // owning its slot (MOVED followed), and our slot is the cluster's.
    for b in 0..BUCKETS {
        let bucket = Bucket::new(b as u8);
        let key = format!("oauth:token:{{{}}}:{}", bucket.tag(), bucket.mint_id("x"));
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(b)
            .query_async(&mut conn)
            .await
            .unwrap();
        let back: usize = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(back, b);
        if b % 37 == 0 {
            let theirs = cluster.cli(cluster.ports[0], &["CLUSTER", "KEYSLOT", &key]);
            assert_eq!(theirs.trim(), slot(key.as_bytes()).to_string(), "{key}");
        }
    }
    // Each primary holds a third of the buckets (within one).
    for primary in cluster.primaries() {
        let keys: usize = cluster.cli(primary, &["DBSIZE"]).trim().parse().unwrap();
        assert!(
            (84..=87).contains(&keys),
            "primary {primary}: {keys} buckets"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_scripts_compute_the_same_buckets_as_rust() {
    let redis = RedisServer::start().await;
    let mut conn = redis.conn().await;
    let script = redis::Script::new(&format!(
        "local kind, text = ARGV[1], ARGV[2] return {}",
        Bucket::LUA_HASHED
    ));
    let texts = [
        "alice",
        "Bob",
        "c-123",
        "203.0.113.7",
        "",
        "ünïcode",
        "a:b{c}",
    ];
    for text in texts {
        for (kind, rust) in [
            ("u", Bucket::of_user(&text.to_ascii_lowercase())),
            ("c", Bucket::of_client(text)),
            ("i", Bucket::of_address(text)),
        ] {
            let text = if kind == "u" {
                text.to_ascii_lowercase()
            } else {
                text.to_string()
            };
            let lua: usize = script
                .arg(kind)
                .arg(&text)
                .invoke_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(lua, rust.index(), "{kind} {text:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_scripts_name_keys_in_a_cluster_as_rust_does() {
    let redis = RedisServer::start().await;
    let mut conn = redis.conn().await;
    let script = redis::Script::new(&format!(
        "{}\nlocal out = {{}}\nfor i, key in ipairs(ARGV) do out[i] = cluster_name(key) end\nreturn out",
        lua_cluster_name()
    ));
    let alice = Bucket::of_user("alice");
    let keys: Vec<String> = [
        format!("oauth:token:{}", alice.mint_id("Q2")),
        "oauth:token:Q2xvdWRzQXJlTm90".to_string(),
        format!("oauth:token_revoked:{}", alice.mint_id("Q2")),
        "oauth:user_tokens:alice".to_string(),
        "oauth:user_tokens:Alice".to_string(),
        "oauth:client_tokens:c-1".to_string(),
        "oauth:client:c-1".to_string(),
        "oauth:client_pending:c-1".to_string(),
        "oauth:consent:alice:c-1".to_string(),
        format!("oauth:state:{}", Bucket::of_client("c-1").mint_id("s")),
        format!("oauth:state:mfa:{}", Bucket::of_client("c-1").mint_id("m")),
        "oauth:code:9f86d081884c7d65".to_string(),
        format!("oauth:refresh:{}", alice.mint_id("h")),
        "oauth:family:legacyfamily".to_string(),
        "oauth:mfa_recovery:alice:h4sh".to_string(),
        "oauth:mfa_lock:user:Alice".to_string(),
        "oauth:mfa_fail:ip:203.0.113.7".to_string(),
        "oauth:mfa:alice".to_string(),
        "oauth:unused_clients".to_string(),
        "oauth:unused_clients:a1b2".to_string(),
        "oauth:audit_user:alice".to_string(),
        "oauth:dpop_jti:x".to_string(),
        "oauth:usage:2026120716".to_string(),
        "oauth:user_tokens:{x}".to_string(),
    ]
    .to_vec();
    let mut invocation = script.prepare_invoke();
    for key in &keys {
        invocation.arg(key);
    }
    let lua: Vec<String> = invocation.invoke_async(&mut conn).await.unwrap();
    let rust: Vec<String> = keys.iter().map(|k| cluster_name(k)).collect();
    assert_eq!(lua, rust);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_recorded_found_and_revoked_on_a_cluster_in_single_slot_steps() {
    let cluster = RedisCluster::start().await;
    // Writes wait for the shard's replica (REDIS_WAIT_REPLICAS defaults to 1 on a cluster).
    let store = cluster_store(&cluster).await;
    let mut feed = store.subscribe_revocations().await.unwrap();
    let now = SystemClock.now_unix();
    // Twelve users over the buckets (so over the primaries), two clients.
    let users: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
    let mut jtis = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let jti = Bucket::of_user(user).mint_id(&format!("jti{i}"));
        let client = if i % 2 == 0 { "c-even" } else { "c-odd" };
        store
            .put_token(&token_record(&jti, user, client, 600), now, &Events::none())
            .await
            .unwrap();
        jtis.push(jti);
    }
    let holding: Vec<usize> = cluster
        .primaries()
        .into_iter()
        .map(|p| cluster.cli(p, &["DBSIZE"]).trim().parse().unwrap())
        .collect();
    assert!(
        holding.iter().filter(|n| **n > 0).count() >= 2,
        "{holding:?}"
    );
    for (i, (jti, user)) in jtis.iter().zip(&users).enumerate() {
        assert!(store.token_is_live(jti).await.unwrap());
        assert_eq!(store.token(jti).await.unwrap().unwrap().username, *user);
        let theirs = store
            .indexed_tokens(&keys::user_tokens(user), now)
            .await
            .unwrap();
        assert_eq!(theirs, vec![jti.clone()]);
        let client = if i % 2 == 0 { "c-even" } else { "c-odd" };
        let clients = store
            .indexed_tokens(&keys::client_tokens(client), now)
            .await
            .unwrap();
        assert!(clients.contains(jti));
    }

    // A revocation: the record and its index entries go, every node's subscribers hear it, and
    // its event is written with it, in the stream of the jti's bucket.
    let gone = &jtis[3];
    let revoked = Event::new(Kind::TokenRevoked, Actor::Operator("test".into())).user(&users[3]);
    let events = Events::none().on(outcome::REVOKED, revoked);
    assert!(store.revoke_token(gone, &events).await.unwrap());
    let stream = format!("oauth:audit:{{{}}}", Bucket::of_id(gone).tag());
    let primary = cluster.ports[0];
    assert_eq!(
        cluster.cli(primary, &["XLEN", &stream]).trim(),
        "1",
        "{stream}"
    );
    let heard = tokio::time::timeout(std::time::Duration::from_secs(2), {
        use futures_util::StreamExt;
        feed.next()
    })
    .await
    .expect("the revocation is published")
    .unwrap();
    assert_eq!(&heard, gone);
    assert!(!store.token_is_live(gone).await.unwrap());
    let theirs = store
        .indexed_tokens(&keys::user_tokens(&users[3]), now)
        .await
        .unwrap();
    assert!(theirs.is_empty());
    let odd = store
        .indexed_tokens(&keys::client_tokens("c-odd"), now)
        .await
        .unwrap();
    assert!(!odd.contains(gone) && odd.len() == 5, "{odd:?}");
    assert!(!store.revoke_token(gone, &Events::none()).await.unwrap());
    // A revoked jti is never written back (a retried write after its revocation).
    let again = store
        .put_token(
            &token_record(gone, &users[3], "c-odd", 600),
            now,
            &Events::none(),
        )
        .await;
    assert!(again.is_err());
    assert!(!store.token_is_live(gone).await.unwrap());

    // A token spent with an assertion: once (the marker is named in the token's bucket).
    let erin = Bucket::of_user("erin");
    let marker = keys::assertion_jti(&erin.mint_id("h4sh"));
    for (jti, first) in [(erin.mint_id("o1"), true), (erin.mint_id("o2"), false)] {
        let once = OnceWrite {
            record: &token_record(&jti, "erin", "c-m2m", 600),
            key: &marker,
            ttl: std::time::Duration::from_secs(60),
        };
        assert_eq!(
            store
                .put_token_once(&once, now, &Events::none())
                .await
                .unwrap(),
            first
        );
        assert_eq!(store.token_is_live(&jti).await.unwrap(), first);
    }

    // Second-factor attempts: a user's and an address's counters and locks, other slots;
    // three allowed, the fourth locks both, then both hold.
    let counters = [
        keys::mfa_fail("user", "erin"),
        keys::mfa_fail("ip", "203.0.113.7"),
    ];
    let locks = [
        keys::mfa_lock("user", "erin"),
        keys::mfa_lock("ip", "203.0.113.7"),
    ];
    let limit = mcp_oauth_gateway::store::AttemptLimit {
        max: 3,
        window: std::time::Duration::from_secs(60),
        lockout: std::time::Duration::from_secs(120),
    };
    use mcp_oauth_gateway::store::Attempt;
    for n in 1..=3 {
        let attempt = store
            .reserve_attempt(&counters, &locks, &limit, &Events::none())
            .await
            .unwrap();
        assert_eq!(attempt, Attempt::Allowed { count: n });
    }
    for _ in 0..2 {
        let attempt = store
            .reserve_attempt(&counters, &locks, &limit, &Events::none())
            .await
            .unwrap();
        assert!(matches!(attempt, Attempt::Locked(_)), "{attempt:?}");
    }
    for lock in &locks {
        assert!(matches!(
            store.ttl(lock).await.unwrap(),
            mcp_oauth_gateway::store::Ttl::Expires(_)
        ));
    }

    // Single keys of any family, on their bucket's slot.
    let ttl = Some(std::time::Duration::from_secs(60));
    let state = format!("oauth:state:{}", Bucket::of_client("c-odd").mint_id("s"));
    for key in [state.as_str(), "oauth:login_id:alice", "oauth:dpop_jti:x"] {
        assert!(store.put_if_absent(key, "1", ttl).await.unwrap());
        assert!(!store.put_if_absent(key, "2", ttl).await.unwrap());
        assert_eq!(store.get(key).await.unwrap().as_deref(), Some("1"));
        assert!(matches!(
            store.ttl(key).await.unwrap(),
            mcp_oauth_gateway::store::Ttl::Expires(_)
        ));
        assert_eq!(store.take(key).await.unwrap().as_deref(), Some("1"));
        assert_eq!(store.get(key).await.unwrap(), None);
    }
    store.put("oauth:mfa:alice", "{}", None).await.unwrap();
    assert!(store.delete("oauth:mfa:alice").await.unwrap());
    let window = std::time::Duration::from_secs(60);
    assert_eq!(
        store
            .incr_within("oauth:mfa_fail:user:alice", window)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .incr_within("oauth:mfa_fail:user:alice", window)
            .await
            .unwrap(),
        2
    );
    let tagged = cluster_name("oauth:mfa_fail:user:alice");
    assert_eq!(
        cluster.cli(cluster.ports[0], &["GET", &tagged]).trim(),
        "2",
        "{tagged}"
    );
    // An index lives as long as its longest entry: a longer token lengthens it, a shorter
    // one leaves it.
    let ttl_of = |key: &str| {
        let name = cluster_name(key);
        let port = cluster.primary_of(&name);
        cluster
            .cli(port, &["TTL", &name])
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let client_index = keys::client_tokens("c-even");
    assert!((590..=600).contains(&ttl_of(&client_index)));
    let long = Bucket::of_user("user0").mint_id("long");
    store
        .put_token(
            &token_record(&long, "user0", "c-even", 3_600),
            now,
            &Events::none(),
        )
        .await
        .unwrap();
    assert!((3_590..=3_600).contains(&ttl_of(&client_index)));
    let short = Bucket::of_user("user0").mint_id("short");
    store
        .put_token(
            &token_record(&short, "user0", "c-even", 60),
            now,
            &Events::none(),
        )
        .await
        .unwrap();
    assert!((3_590..=3_600).contains(&ttl_of(&client_index)));
    assert!((3_590..=3_600).contains(&ttl_of(&keys::user_tokens("user0"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_runs_on_a_cluster_and_hears_its_revocations() {
    let cluster = RedisCluster::start().await;
    let source = env(&[
        ("REDIS_CLUSTER_NODES", &cluster.nodes_setting()),
        ("LISTEN_ADDR", "127.0.0.1:0"),
    ]);
    let settings = Settings::load(&source).unwrap();
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(RedisStore::connect_with(&settings).unwrap());
    let verify = Verify::start(&source, store.clone()).await;
    verify.wait_ready().await;
    let (token, jti) = verify.mint(&store, TokenSpec::default()).await;
    assert_eq!(verify.status(&token).await, 200);
    assert_eq!(verify.status(&token).await, 200, "cached");
    // Refusals are counted and recorded on the cluster too (a token of nobody's).
    assert_eq!(verify.status("not.a.token").await, 401);
    // Revoked from elsewhere: the cached token is refused once the cluster bus carries it.
    store.revoke_token(&jti, &Events::none()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while verify.status(&token).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation never reached verify"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A store on a fresh cluster, once it answers.
pub(crate) async fn cluster_store(cluster: &RedisCluster) -> RedisStore {
    let settings =
        Settings::load(&env(&[("REDIS_CLUSTER_NODES", &cluster.nodes_setting())])).unwrap();
    let store = RedisStore::connect_with(&settings).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store never reached the cluster"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store
}

/// The gateway (auth and verify) with its store on `cluster` (`extra` settings besides), and
/// that store.
pub(crate) async fn gateway_on(
    cluster: &RedisCluster,
    extra: &[(&str, &str)],
) -> (crate::support::gateway::Gateway, std::sync::Arc<dyn Store>) {
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(cluster_store(cluster).await);
    let nodes = cluster.nodes_setting();
    let mut env = vec![("REDIS_CLUSTER_NODES", nodes.as_str())];
    env.extend_from_slice(extra);
    let unused = RedisServer::start().await;
    let gw = crate::support::gateway::Gateway::start_with_store(unused, store.clone(), &env).await;
    (gw, store)
}

/// Two rotations of `tokens`, then its first refresh token again (past its retry window):
/// refused, and the family dies at verify too.
pub(crate) async fn reuse_kills_the_family(
    gw: &crate::support::gateway::Gateway,
    client: &serde_json::Value,
    tokens: &serde_json::Value,
) {
    let second = gw.refreshed(client, tokens).await;
    let third = gw.refreshed(client, &second).await;
    assert_eq!(gw.verify.status_of(&third).await, 200);
    let reuse = gw.refresh_of(client, tokens).await;
    assert_eq!(reuse.status(), 400);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while gw.verify.status_of(&third).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the family's revocation never reached verify"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_redeem_rotate_and_die_of_reuse_on_a_cluster() {
    use futures_util::StreamExt;
    let cluster = RedisCluster::start().await;
    let store = cluster_store(&cluster).await;
    let mut feed = store.subscribe_revocations().await.unwrap();
    let now = SystemClock.now_unix();
    // Ids as auth mints them: the family, its tokens, refresh tokens and code in erin's bucket
    // (grant_write's user), the client elsewhere.
    let erin = Bucket::of_user("erin");
    let id = |s: &str| erin.mint_id(s);
    let (client, family) = ("c-far", id("F"));
    let code_key = keys::code(&id("code"));
    store
        .put(
            &code_key,
            r#"{"client_id":"c-far"}"#,
            Some(std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let mut first = grant_write(&id("a1"), client, &family, &id("r1"), None);
    first.redeem_code = Some(code_key.clone());
    assert_eq!(
        store.issue_grant(&first, now).await.unwrap(),
        GrantOutcome::Issued
    );
    assert!(store.token_is_live(&id("a1")).await.unwrap());
    let marker = store.get(&code_key).await.unwrap().unwrap();
    assert!(marker.contains("redeemed"), "{marker}");
    // The code again: its family is named, nothing new.
    let mut again = grant_write(&id("a9"), client, &id("G"), &id("r9"), None);
    again.redeem_code = Some(code_key.clone());
    assert_eq!(
        store.issue_grant(&again, now).await.unwrap(),
        GrantOutcome::CodeReused {
            family_id: family.clone()
        }
    );
    assert!(!store.token_is_live(&id("a9")).await.unwrap());
    // The client's indexes (another slot) were written before the home step.
    let theirs = store
        .indexed_tokens(&keys::client_tokens(client), now)
        .await
        .unwrap();
    assert!(theirs.contains(&id("a1")), "{theirs:?}");

    // A rotation, then the first refresh token again: reuse kills the family.
    let rotate = grant_write(&id("a2"), client, &family, &id("r2"), Some(&id("r1")));
    assert_eq!(
        store.issue_grant(&rotate, now).await.unwrap(),
        GrantOutcome::Issued
    );
    let reuse = grant_write(&id("a3"), client, &family, &id("r3"), Some(&id("r1")));
    assert_eq!(
        store.issue_grant(&reuse, now).await.unwrap(),
        GrantOutcome::Reused
    );
    for jti in ["a1", "a2", "a3"] {
        assert!(!store.token_is_live(&id(jti)).await.unwrap(), "{jti}");
    }
    let mut heard: Vec<String> = Vec::new();
    while heard.len() < 2 {
        let next = tokio::time::timeout(std::time::Duration::from_secs(2), feed.next())
            .await
            .expect("revocations are published")
            .unwrap();
        heard.push(next);
    }
    heard.sort();
    let mut expected = vec![id("a1"), id("a2")];
    expected.sort();
    assert_eq!(heard, expected);
    let late = grant_write(&id("a4"), client, &family, &id("r4"), Some(&id("r2")));
    assert_eq!(
        store.issue_grant(&late, now).await.unwrap(),
        GrantOutcome::FamilyRevoked
    );
    assert!(
        store
            .get(&keys::refresh(&id("r2")))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_consents_pending_keys_and_changes_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let store = cluster_store(&cluster).await;
    let now = SystemClock.now_unix();
    let minute = std::time::Duration::from_secs(60);
    // Registrations: the unused lists (their own slot) and the registration (the client's),
    // the oldest past the budget evicted.
    for (i, id) in ["c-1", "c-2", "c-3"].iter().enumerate() {
        let registered = store
            .put_new_client(&NewClientWrite {
                client_id: id,
                json: "{}",
                unused_lifetime: minute,
                address: Some("a1b2"),
                budget: 10,
                budget_per_address: 2,
                now_ms: now * 1000 + i as i64,
                events: Events::none(),
            })
            .await
            .unwrap();
        if i == 2 {
            assert_eq!(registered.evicted, vec!["c-1".to_string()]);
        }
    }
    assert!(store.get(&keys::client("c-3")).await.unwrap().is_some());
    assert!(
        store
            .drop_unused_client("c-2", minute, &Events::none())
            .await
            .unwrap()
    );
    assert!(store.get(&keys::client("c-2")).await.unwrap().is_none());

    // A consent (the client's slot, with its index) and a pending key in the user's bucket,
    // indexed under the client by its cluster name.
    store
        .put_consent("Erin", "c-3", "{}", minute, now, &Events::none())
        .await
        .unwrap();
    assert!(
        store
            .get(&keys::consent("erin", "c-3"))
            .await
            .unwrap()
            .is_some()
    );
    let code = keys::code(&Bucket::of_user("erin").mint_id("h"));
    store
        .put_for_client(
            &code,
            r#"{"client_id":"c-3"}"#,
            minute,
            "c-3",
            now,
            &Events::none(),
        )
        .await
        .unwrap();
    assert!(store.get(&code).await.unwrap().is_some());
    let pending = cluster.cli(
        cluster.ports[0],
        &[
            "ZRANGE",
            &cluster_name(&keys::client_pending("c-3")),
            "0",
            "-1",
        ],
    );
    // The index holds the single-server name, as on one server (a backup restores anywhere).
    assert_eq!(pending.trim(), code);

    // Audited changes of a client's and a user's keys.
    let set = Change::Set {
        key: &keys::client("c-3"),
        value: r#"{"v":2}"#,
        ttl: None,
    };
    assert!(store.change(&set, &Events::none()).await.unwrap());
    let once = Change::SetIfAbsent {
        key: &keys::mfa("erin"),
        value: "{}",
        ttl: None,
    };
    assert!(store.change(&once, &Events::none()).await.unwrap());
    assert!(!store.change(&once, &Events::none()).await.unwrap());
    let gone = Change::Delete {
        key: &keys::mfa("erin"),
    };
    assert!(store.change(&gone, &Events::none()).await.unwrap());
    assert_eq!(
        store.get(&keys::client("c-3")).await.unwrap().as_deref(),
        Some(r#"{"v":2}"#)
    );

    // Deleting the client, in steps of 2: its tokens (in their users' buckets, other slots),
    // its family, its consent and its code go, and the registration last.
    let users = ["erin", "frank", "grace", "heidi", "ivan"];
    for user in users {
        let jti = Bucket::of_user(user).mint_id(&format!("t-{user}"));
        store
            .put_token(&token_record(&jti, user, "c-3", 600), now, &Events::none())
            .await
            .unwrap();
    }
    let erin = Bucket::of_user("erin");
    let family = erin.mint_id("F");
    let grant = grant_write(&erin.mint_id("a"), "c-3", &family, &erin.mint_id("r"), None);
    assert_eq!(
        store.issue_grant(&grant, now).await.unwrap(),
        GrantOutcome::Issued
    );
    let mut steps = 0;
    let mut revoked = 0;
    loop {
        let step = store
            .delete_client_step("c-3", minute, 2, &Events::none())
            .await
            .unwrap();
        steps += 1;
        revoked += step.revoked;
        // The registration stays until the very end, so an interrupted delete can finish.
        let registered = store.get(&keys::client("c-3")).await.unwrap().is_some();
        assert_eq!(registered, step.remaining > 0, "step {steps}: {step:?}");
        if step.remaining == 0 {
            break;
        }
        assert!(steps < 20, "the deletion does not end");
    }
    assert!(
        steps >= 4,
        "a budget of 2 takes several steps, took {steps}"
    );
    assert_eq!(revoked, users.len());
    for user in users {
        let theirs = store
            .indexed_tokens(&keys::user_tokens(user), now)
            .await
            .unwrap();
        for jti in theirs {
            assert!(!store.token_is_live(&jti).await.unwrap(), "{user}: {jti}");
        }
    }
    assert!(!store.token_is_live(&grant.token.jti).await.unwrap());
    assert!(
        store
            .get(&keys::refresh(&grant.refresh_hash))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get(&keys::consent("erin", "c-3"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get(&code).await.unwrap().is_none());
    for index in [
        keys::client_families("c-3"),
        keys::client_tokens("c-3"),
        keys::client_consents("c-3"),
        keys::client_pending("c-3"),
    ] {
        assert!(
            store.indexed_tokens(&index, 0).await.unwrap().is_empty(),
            "{index}"
        );
    }
    // Deleting it again finds nothing and ends at once.
    let again = store
        .delete_client_step("c-3", minute, 2, &Events::none())
        .await
        .unwrap();
    assert_eq!((again.revoked, again.remaining), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_refreshes_and_a_revocation_through_the_gateway_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let (gw, _) = gateway_on(&cluster, &[]).await;
    // Registration, authorize, consent, GitHub, callback, code, token: all on the cluster.
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    assert_eq!(gw.verify.status_of(&tokens).await, 200);
    let access = tokens["access_token"].as_str().unwrap();
    let jti = crate::support::jwt_claims(access)["jti"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(Bucket::embedded(&jti), Some(Bucket::of_user("alice")));
    // Two rotations, then the first refresh token again: the family dies, at verify too.
    reuse_kills_the_family(&gw, &client, &tokens).await;
    // A new login, revoked at /revoke.
    let fresh = gw.tokens(&client).await;
    let access = fresh["access_token"].as_str().unwrap();
    assert_eq!(gw.revoke(&client, access).await.status(), 200);
    gw.revoked_at_verify(&client, access).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_confirmed_writes_shares_its_waits() {
    // 300 tokens of one user at once (one slot), each confirmed on the shard's replica
    // (REDIS_WAIT_REPLICAS defaults to 1): one WAIT per write would queue them past the
    // response timeout on the one connection to that primary; shared WAITs confirm them all.
    let cluster = RedisCluster::start().await;
    let store = std::sync::Arc::new(cluster_store(&cluster).await);
    let now = SystemClock.now_unix();
    let erin = Bucket::of_user("erin");
    let primary = cluster.primary_of(erin.tag());
    cluster.cli(primary, &["CONFIG", "RESETSTAT"]);
    let writes = (0..300).map(|i| {
        let store = store.clone();
        let jti = erin.mint_id(&format!("burst{i}"));
        async move {
            store
                .put_token(
                    &token_record(&jti, "erin", "c-burst", 600),
                    now,
                    &Events::none(),
                )
                .await
                .map(|()| jti)
        }
    });
    let written = futures_util::future::join_all(writes).await;
    let failed: Vec<_> = written.iter().filter_map(|w| w.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 300 failed: {:?}",
        failed.len(),
        failed.first()
    );
    for jti in written.into_iter().flatten() {
        assert!(store.token_is_live(&jti).await.unwrap(), "{jti}");
    }
    let stats = cluster.cli(primary, &["INFO", "commandstats"]);
    let waits: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        (1..100).contains(&waits),
        "300 writes at once were confirmed by {waits} WAITs (one each would be 300)"
    );
}
