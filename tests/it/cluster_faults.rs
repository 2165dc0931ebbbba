//! Redis Cluster under faults (issue #30): a primary SIGKILLed while verify serves cached
//! tokens and cache misses and auth's grants and revocations go on. The cluster promotes the
//! replica; nothing acknowledged before the kill is lost, and no token gets a wrong 401.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_oauth_gateway::audit::Events;
use mcp_oauth_gateway::clock::{Clock, SystemClock};
use mcp_oauth_gateway::config::{ConfigSource, Settings};
use mcp_oauth_gateway::slots::{Bucket, cluster_name};
use mcp_oauth_gateway::store::{GrantOutcome, RedisStore, Store, StoreError, keys};

use crate::support::failover::{Load, judged, settled};
use crate::support::helpers::{
    TokenSpec, Verify, grant_write, mint_token, rsa_key_b64, store_code,
};
use crate::support::redis_cluster::RedisCluster;

/// Users whose tokens land on every primary (their buckets spread over the slots).
const USERS: [&str; 8] = [
    "erin", "alice", "bob", "carol", "dave", "frank", "grace", "heidi",
];

/// verify and a store on `cluster`, `users` allowed, once both answer.
async fn served(cluster: &RedisCluster, users: &[&str]) -> (Settings, Arc<dyn Store>, Verify) {
    let env = ConfigSource::from_pairs([
        ("JWT_ALGORITHM", "RS256".to_string()),
        ("JWT_PRIVATE_KEY_B64", rsa_key_b64().to_string()),
        ("BASE_DOMAIN", "example.com".to_string()),
        ("ALLOWED_GITHUB_USERS", users.join(",")),
        ("LISTEN_ADDR", "127.0.0.1:0".to_string()),
        ("REDIS_URL", "redis://127.0.0.1:1".to_string()),
        ("REDIS_CLUSTER_NODES", cluster.nodes_setting()),
        ("REDIS_FAILURE_MODE", "cached".to_string()),
    ]);
    let settings = Settings::load(&env).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect_with(&settings).unwrap());
    settled("first contact", || store.ping()).await;
    let verify = Verify::start(&env, store.clone()).await;
    verify.wait_ready().await;
    (settings, store, verify)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_loses_no_grant_or_revocation_and_answers_no_wrong_401() {
    let mut cluster = RedisCluster::start().await;
    let (settings, store, verify) = served(&cluster, &USERS).await;

    // erin's shard is the one that dies: her grants, her code and a token of hers revoked.
    let erin = Bucket::of_user("erin");
    let id = |s: &str| erin.mint_id(s);
    let victim = cluster.primary_of(&cluster_name(&keys::token(&id("probe"))));
    let (cached, _) = mint_token(&settings, &store, TokenSpec::default()).await;
    assert_eq!(verify.status(&cached).await, 200);
    let mut fresh = Vec::new();
    for i in 0..240 {
        let spec = TokenSpec::user(USERS[i % USERS.len()]);
        fresh.push(mint_token(&settings, &store, spec).await.0);
    }
    let (revoked, revoked_jti) = mint_token(&settings, &store, TokenSpec::user("erin")).await;
    assert_eq!(verify.status(&revoked).await, 200);
    store
        .revoke_token(&revoked_jti, &Events::none())
        .await
        .unwrap();
    verify
        .refuses_within(&revoked, 3, "a revocation before the kill is heard")
        .await;
    let now = SystemClock.now_unix();
    let (family, code_family) = (id("fam"), id("fam2"));
    for grant in [
        grant_write(&id("g1"), "c1", &family, &id("r1"), None),
        grant_write(&id("g2"), "c1", &family, &id("r2"), Some(&id("r1"))),
    ] {
        assert_eq!(
            store.issue_grant(&grant, now).await.unwrap(),
            GrantOutcome::Issued
        );
    }
    let code = id("code");
    store_code(store.as_ref(), &code, "c1", 600, &Events::none()).await;
    let mut redeem = grant_write(&id("g3"), "c1", &code_family, &id("r3"), None);
    redeem.redeem_code = Some(keys::code(&code));
    assert_eq!(
        store.issue_grant(&redeem, now).await.unwrap(),
        GrantOutcome::Issued
    );

    // Load while the primary dies: the cached token, and a cache miss each round (a third of
    // them on the dying shard).
    let load = Load::start(&verify, &cached, fresh);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(victim);
    let killed = Instant::now();
    // The replica takes over after the node timeout (2 s) and an election.
    let mut promoted = None;
    while promoted.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no replica took over the killed primary's slots"
        );
        let now_serving = cluster.primary_of(&cluster_name(&keys::token(&id("probe"))));
        if now_serving != victim {
            promoted = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = promoted.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let seen = load.stop().await;
    judged(&seen, killed, promoted, "cluster failover");

    // What was done before the kill stays done: the revoked token stays revoked, r1 was
    // rotated (presenting it again is reuse: the family dies, no token is issued), the code
    // was redeemed. The promoted primary has no replica until the killed node rejoins as one,
    // so until then its grants and revocations answer 503 (REDIS_WAIT_REPLICAS=1: none is
    // confirmed that a second failure could lose), and a retry after that gives the same answer
    // or, for a reuse whose family the first attempt already revoked, FamilyRevoked.
    assert!(!settled("liveness", || store.token_is_live(&revoked_jti)).await);
    let now = SystemClock.now_unix();
    let rotation = grant_write(&id("g4"), "c1", &family, &id("r4"), Some(&id("r1")));
    let lonely = store.issue_grant(&rotation, now).await;
    assert!(
        matches!(
            lonely,
            Err(StoreError::Unavailable(_)) | Ok(GrantOutcome::Reused)
        ),
        "a shard without a replica: {lonely:?}"
    );
    cluster.restart(victim);
    let again = settled("rotate", || store.issue_grant(&rotation, now)).await;
    assert!(
        matches!(again, GrantOutcome::Reused | GrantOutcome::FamilyRevoked),
        "{again:?}"
    );
    assert!(!store.token_is_live(&id("g4")).await.unwrap());
    assert!(!store.token_is_live(&id("g2")).await.unwrap());
    let mut twice = grant_write(&id("g5"), "c1", &id("fam3"), &id("r5"), None);
    twice.redeem_code = Some(keys::code(&code));
    let again = settled("redeem", || store.issue_grant(&twice, now)).await;
    assert!(
        matches!(again, GrantOutcome::CodeReused { .. }),
        "{again:?}"
    );

    // Once the killed node is back as the promoted primary's replica, that shard confirms
    // writes again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = cluster.cli(victim, &["INFO", "replication"]);
        if info.contains("role:slave") && info.contains("master_link_status:up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed node never rejoined: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A revocation made now, on the promoted primary, reaches verify (its subscription moved
    // to a live node if it was on the dead one).
    let none = Events::none();
    let (after, after_jti) = mint_token(&settings, &store, TokenSpec::user("erin")).await;
    assert_eq!(verify.status(&after).await, 200);
    settled("revoke", || store.revoke_token(&after_jti, &none)).await;
    verify
        .refuses_within(&after, 5, "a revocation after the failover is heard")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_migrated_under_load_lose_no_grant_or_revocation_and_answer_no_wrong_401() {
    let cluster = RedisCluster::start().await;
    // Every slot of erin's primary moves to another primary while logins, cache misses and
    // revocations go on in them: erin's grants, and the tokens of users on that primary.
    let erin = Bucket::of_user("erin");
    let source = cluster.primary_of(erin.tag());
    let slots = cluster.slot_count(source);
    let target = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != source)
        .unwrap();
    let users: Vec<&'static str> = (0..400)
        .map(|i| &*Box::leak(format!("user{i}").into_boxed_str()))
        .filter(|u| cluster.primary_of(Bucket::of_user(u).tag()) == source)
        .take(6)
        .collect();
    assert!(users.len() >= 3, "users on the moving primary: {users:?}");
    let (settings, store, verify) = served(&cluster, &users).await;
    // Tokens for cache misses (each checked once) and others to revoke.
    let mut fresh = Vec::new();
    for i in 0..260 {
        let spec = TokenSpec::user(users[i % users.len()]);
        fresh.push(mint_token(&settings, &store, spec).await);
    }
    let victims = fresh.split_off(200);

    let ids = |who: &str| {
        let id = cluster
            .cli(who.parse().unwrap(), &["CLUSTER", "MYID"])
            .trim()
            .to_string();
        assert!(!id.is_empty());
        id
    };
    let (from, to) = (ids(&source.to_string()), ids(&target.to_string()));
    let seed = format!("127.0.0.1:{source}");
    let reshard = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &seed])
            .args(["--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("redis-cli --cluster reshard")
    });

    // While the slots move: every fresh token checked at verify (a cache miss), a grant
    // issued and a token revoked per round.
    let (mut issued, mut revoked, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    let mut round = 0;
    while !reshard.is_finished() || round < 20 {
        if let Some((token, _)) = fresh.get(round) {
            answers.push(verify.status(token).await);
        }
        let now = SystemClock.now_unix();
        let grant = grant_write(
            &erin.mint_id(&format!("g{round}")),
            "c1",
            &erin.mint_id(&format!("f{round}")),
            &erin.mint_id(&format!("r{round}")),
            None,
        );
        match store.issue_grant(&grant, now).await {
            Ok(GrantOutcome::Issued) => issued.push(grant),
            Ok(other) => panic!("a new grant answered {other:?}"),
            Err(StoreError::Unavailable(why)) => eprintln!("grant during migration: {why}"),
            Err(e) => panic!("{e}"),
        }
        if let Some((_, jti)) = victims.get(round)
            && store.revoke_token(jti, &Events::none()).await.is_ok()
        {
            revoked.push(jti.clone());
        }
        round += 1;
        assert!(round < 20_000, "the migration never ended");
    }
    let status = reshard.await.unwrap();
    assert!(status.success(), "redis-cli --cluster reshard failed");
    assert_eq!(cluster.primary_of(erin.tag()), target);
    assert_eq!(cluster.slot_count(source), 0);
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 503),
        "a cache miss during the migration gets 200 or 503, never 401: {answers:?}"
    );
    eprintln!(
        "reshard: {round} rounds, {} grants issued, {} revocations, {} misses answered 503",
        issued.len(),
        revoked.len(),
        answers.iter().filter(|s| **s == 503).count()
    );
    assert!(!issued.is_empty());
    // Every grant acknowledged during the migration is there after it, on the new primary.
    for grant in &issued {
        assert!(
            settled("liveness", || store.token_is_live(&grant.token.jti)).await,
            "{} was issued during the migration and is lost",
            grant.token.jti
        );
    }
    // Every revocation acknowledged during it stays.
    for jti in &revoked {
        assert!(
            !settled("liveness", || store.token_is_live(jti)).await,
            "{jti}"
        );
    }
}
