//! Webhooks against a real HTTP receiver: signed, at least once, once per event across
//! replicas, nothing lost while the receiver or a replica is down.

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::Duration;

use mcp_oauth_gateway::auth::{AuthServer, AuthState, Upstreams};
use serde_json::Value;

use crate::support::audit::*;
use crate::support::gateway::*;
use crate::support::helpers::*;

/// A grant whose rotated refresh token is then reused: one `refresh_reuse_detected`.
async fn reuse(gw: &Gateway, client: &Value) {
    let tokens = gw.tokens(client).await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let second: Value = gw.refresh(client, first).await.json().await.unwrap();
    let third = gw
        .refresh(client, second["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(third.status(), 200);
    assert_eq!(gw.refresh(client, first).await.status(), 400);
}

/// `n` events, every one delivered, none twice.
fn assert_each_once(received: &[Received], n: usize) {
    let ids: HashSet<&str> = received
        .iter()
        .map(|r| r.header("x-gateway-event-id").unwrap())
        .collect();
    assert_eq!(ids.len(), n, "every event: {received:?}");
    assert_eq!(received.len(), n, "none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_reach_the_receiver_signed_and_info_stays_home() {
    let receiver = Receiver::start().await;
    let gw = gateway_with(&hooked(&receiver)).await;
    let client = gw.client("none").await;
    reuse(&gw, &client).await;
    let received = receiver.settled(1, Duration::from_secs(10)).await;
    assert_eq!(
        received.len(),
        1,
        "only the warning (critical) event: {received:?}"
    );
    let hook = &received[0];
    assert!(
        signature_holds(SECRET, hook),
        "the receiver checks the signature"
    );
    assert!(!signature_holds("another-secret-of-32-characters!!", hook));
    assert_eq!(
        hook.header("x-gateway-event-type"),
        Some("refresh_reuse_detected")
    );
    assert_eq!(hook.header("content-type"), Some("application/json"));
    let body = hook.json();
    assert_eq!(body["type"], "refresh_reuse_detected");
    assert_eq!(body["level"], "critical");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["client_id"], client["client_id"]);
    assert_eq!(body["issuer"], gw.issuer.as_str());
    assert_eq!(body["id"], hook.header("x-gateway-event-id").unwrap());
    // A body changed on the way no longer verifies.
    let mut forged = hook.clone();
    forged.body = forged.body.replace("alice", "mallory");
    assert!(!signature_holds(SECRET, &forged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_every_event_once() {
    let mut receiver = Receiver::start().await;
    let gw = gateway_with(&hooked(&receiver)).await;
    let client = gw.client("none").await;
    receiver.down().await;
    for _ in 0..4 {
        reuse(&gw, &client).await;
    }
    // Behind, and it says so.
    let behind = wait_for(Duration::from_secs(20), || async {
        gw.metrics().await.lines().any(|l| {
            l.starts_with("mcp_gateway_audit_webhook_backlog{receiver=\"0\"}") && !l.ends_with(" 0")
        })
    })
    .await;
    assert!(behind.is_ok(), "{}", gw.metrics().await);
    assert!(
        gw.metrics()
            .await
            .contains("mcp_gateway_audit_webhook_deliveries_total{result=\"failed\"}")
    );
    receiver.up().await;
    let received = receiver.settled(4, Duration::from_secs(40)).await;
    assert_each_once(&received, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_event_once_and_a_stopped_one_loses_nothing() {
    let mut receiver = Receiver::start().await;
    let env = hooked(&receiver);
    let gw = gateway_with(&env).await;
    // A second authorization server on the same Redis, as a second replica.
    let mut source = base_env(&gw.redis)
        .with("ISSUER_URL", gw.issuer.as_str())
        .with("ALLOWED_GITHUB_USERS", "alice");
    for (k, v) in gw.github.env() {
        source = source.with(k, v);
    }
    for (k, v) in &env {
        source = source.with(*k, v.as_str());
    }
    let settings = settings(&source);
    let upstream = Upstreams::from_settings(&settings).unwrap();
    let clock = mcp_oauth_gateway::clock::system();
    let state = AuthState::new(settings, gw.redis.store(), clock, upstream).unwrap();
    let second =
        AuthServer::from_listener(TcpListener::bind("127.0.0.1:0").unwrap(), state).unwrap();
    let running = tokio::spawn(second.run_until_stopped());
    let client = gw.client("none").await;
    for _ in 0..6 {
        reuse(&gw, &client).await;
    }
    let received = receiver.settled(6, Duration::from_secs(20)).await;
    assert_each_once(&received, 6);
    // The receiver goes down; both replicas read and fail; the second stops for good. What
    // it had read is taken over by the first once idle, and delivered when the receiver is
    // back.
    receiver.down().await;
    for _ in 0..4 {
        reuse(&gw, &client).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.abort();
    receiver.up().await;
    let received = receiver.settled(10, Duration::from_secs(40)).await;
    assert_each_once(&received, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_events_of_every_bucket_reach_the_receiver_once() {
    use crate::support::redis_cluster::RedisCluster;
    let cluster = RedisCluster::start().await;
    let mut receiver = Receiver::start().await;
    let env = hooked(&receiver);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (gw, _) = crate::cluster::gateway_on(&cluster, &env).await;
    // The receiver's consumer group is created on every bucket's stream in its first round;
    // as on one server, it sends what is written from then on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Reuse by two users: their events are in their buckets' streams, on any primary.
    let a = gw.client("none").await;
    reuse(&gw, &a).await;
    gw.github.sign_in_as("bob");
    let b = gw.client("none").await;
    reuse(&gw, &b).await;
    let received = receiver.settled(2, Duration::from_secs(20)).await;
    assert_each_once(&received, 2);
    // Down, then up: what was written meanwhile comes once, the old ones not again.
    receiver.down().await;
    reuse(&gw, &b).await;
    gw.github.sign_in_as("alice");
    reuse(&gw, &a).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.up().await;
    let received = receiver.settled(4, Duration::from_secs(40)).await;
    assert_each_once(&received, 4);
    let users: HashSet<String> = received
        .iter()
        .map(|r| r.json()["user"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(users.len(), 2, "{users:?}");
    for hook in &received {
        let id = hook.header("x-gateway-event-id").unwrap();
        assert!(
            id.contains('@'),
            "a cluster event id names its bucket: {id}"
        );
        assert_eq!(hook.json()["id"], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_receivers_get_text() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&[
        ("AUDIT_WEBHOOK_URL", &receiver.url()),
        ("AUDIT_WEBHOOK_FORMAT", "slack"),
        ("AUDIT_WEBHOOK_MIN_LEVEL", "critical"),
    ])
    .await;
    let client = gw.client("none").await;
    reuse(&gw, &client).await;
    let received = receiver.until(1, Duration::from_secs(10)).await;
    let text = received[0].json()["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with("[critical] refresh_reuse_detected — user alice"),
        "{text}"
    );
    assert!(
        received[0].header("x-gateway-signature").is_none(),
        "no secret, no signature"
    );
}

#[test]
fn webhook_settings_are_checked() {
    use mcp_oauth_gateway::config::{ConfigSource, Settings};
    let base = || {
        ConfigSource::from_pairs([
            ("JWT_ALGORITHM", "HS256"),
            (
                "GATEWAY_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-test",
            ),
            ("BASE_DOMAIN", "example.com"),
        ])
    };
    let refused = |source: ConfigSource, var: &str| {
        let e = Settings::load(&source).expect_err(var);
        assert_eq!(e.var, var, "{e}");
        assert!(
            !e.to_string().contains("hooks.example"),
            "the URL is not echoed: {e}"
        );
    };
    refused(
        base().with("AUDIT_WEBHOOK_URL", "https://hooks.example/x"),
        "AUDIT_WEBHOOK_SECRET",
    );
    refused(
        base()
            .with("AUDIT_WEBHOOK_URL", "https://hooks.example/x")
            .with("AUDIT_WEBHOOK_SECRET", "short"),
        "AUDIT_WEBHOOK_SECRET",
    );
    refused(
        base().with("AUDIT_WEBHOOK_URL", "ftp://hooks.example/x"),
        "AUDIT_WEBHOOK_URL",
    );
    refused(
        base().with("AUDIT_WEBHOOK_MIN_LEVEL", "loud"),
        "AUDIT_WEBHOOK_MIN_LEVEL",
    );
    refused(
        base().with("AUDIT_WEBHOOK_FORMAT", "xml"),
        "AUDIT_WEBHOOK_FORMAT",
    );
    refused(base().with("AUDIT_RETENTION", "10s"), "AUDIT_RETENTION");
    refused(base().with("AUDIT_MAX_EVENTS", "10"), "AUDIT_MAX_EVENTS");
    refused(
        base()
            .with("AUDIT_WEBHOOK_CLAIM_IDLE", "5")
            .with("AUDIT_WEBHOOK_TIMEOUT", "10"),
        "AUDIT_WEBHOOK_CLAIM_IDLE",
    );
    let ok = Settings::load(
        &base()
            .with(
                "AUDIT_WEBHOOK_URL",
                "https://a.example/x, https://b.example/y",
            )
            .with("AUDIT_WEBHOOK_FORMAT", "slack"),
    )
    .unwrap();
    assert_eq!(ok.audit.webhooks.len(), 2);
    assert!(
        !format!("{:?}", ok.audit).contains("a.example"),
        "URLs stay out of Debug"
    );
}
