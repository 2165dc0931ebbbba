//! One contract, two stores: every test runs against Redis and against the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use mcp_oauth_gateway::clock::{Clock, SystemClock};
use mcp_oauth_gateway::store::{MemoryStore, Store, TokenRecord, Ttl};

use crate::helpers::RedisServer;

/// Runs `body` against a fresh Redis-backed store and a fresh in-memory store.
macro_rules! contract {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            use super::*;

            async fn check($store: Arc<dyn Store>) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let server = RedisServer::start().await;
                check(server.store()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                check(Arc::new(MemoryStore::new())).await;
            }
        }
    };
}

fn record(jti: &str, user: &str, client: &str, expires_in: i64) -> TokenRecord {
    let now = SystemClock.now_unix();
    TokenRecord {
        jti: jti.into(),
        user_id: format!("{user}-id"),
        username: user.into(),
        client_id: client.into(),
        scope: "mcp".into(),
        audience: vec!["https://mcp.example.com/mcp".into()],
        issued_at: now,
        expires_at: now + expires_in,
        family_id: None,
    }
}

contract!(values_with_ttl_expire, |store| {
    store.ping().await.unwrap();
    store
        .put("oauth:test:a", "1", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    store.put("oauth:test:b", "2", None).await.unwrap();
    assert_eq!(
        store.get("oauth:test:a").await.unwrap().as_deref(),
        Some("1")
    );
    match store.ttl("oauth:test:a").await.unwrap() {
        Ttl::Expires(d) => assert!(d <= Duration::from_millis(300) && d > Duration::ZERO),
        other => panic!("expected a TTL, got {other:?}"),
    }
    assert_eq!(store.ttl("oauth:test:b").await.unwrap(), Ttl::Persistent);
    assert_eq!(store.ttl("oauth:test:none").await.unwrap(), Ttl::Missing);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get("oauth:test:a").await.unwrap(), None);
    assert_eq!(store.ttl("oauth:test:a").await.unwrap(), Ttl::Missing);
    assert!(store.delete("oauth:test:b").await.unwrap());
    assert!(!store.delete("oauth:test:b").await.unwrap());
});

contract!(put_if_absent_sets_once, |store| {
    assert!(
        store
            .put_if_absent("oauth:test:x", "first", Some(Duration::from_secs(5)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if_absent("oauth:test:x", "second", None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("oauth:test:x").await.unwrap().as_deref(),
        Some("first")
    );
});

contract!(take_is_atomic_under_concurrency, |store| {
    store
        .put("oauth:code:abc", "payload", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let takers = join_all((0..50).map(|_| {
        let store = store.clone();
        async move { store.take("oauth:code:abc").await.unwrap() }
    }))
    .await;
    let winners: Vec<_> = takers.into_iter().flatten().collect();
    assert_eq!(winners, vec!["payload".to_string()]);
    assert_eq!(store.get("oauth:code:abc").await.unwrap(), None);
});

contract!(tokens_are_recorded_indexed_and_revoked, |store| {
    let now = SystemClock.now_unix();
    store
        .put_token(&record("j1", "Alice", "c1", 600), now)
        .await
        .unwrap();
    store
        .put_token(&record("j2", "alice", "c2", 1200), now)
        .await
        .unwrap();
    store
        .put_token(&record("j3", "bob", "c1", 600), now)
        .await
        .unwrap();
    assert!(store.token_is_live("j1").await.unwrap());
    assert_eq!(store.token("j1").await.unwrap().unwrap().client_id, "c1");
    match store.ttl("oauth:token:j1").await.unwrap() {
        Ttl::Expires(d) => assert!(d > Duration::from_secs(590) && d <= Duration::from_secs(600)),
        other => panic!("token record without TTL: {other:?}"),
    }
    // The index lives as long as its longest-lived member.
    match store.ttl("oauth:user_tokens:alice").await.unwrap() {
        Ttl::Expires(d) => assert!(d > Duration::from_secs(1190)),
        other => panic!("index without TTL: {other:?}"),
    }
    let alice = store
        .indexed_tokens("oauth:user_tokens:alice", now)
        .await
        .unwrap();
    assert_eq!(alice, vec!["j1".to_string(), "j2".to_string()]);
    let c1 = store
        .indexed_tokens("oauth:client_tokens:c1", now)
        .await
        .unwrap();
    assert_eq!(c1.len(), 2);

    assert!(store.revoke_token("j1").await.unwrap());
    assert!(!store.token_is_live("j1").await.unwrap());
    assert_eq!(store.token("j1").await.unwrap(), None);
    assert!(!store.revoke_token("j1").await.unwrap());
    let alice = store
        .indexed_tokens("oauth:user_tokens:alice", now)
        .await
        .unwrap();
    assert_eq!(alice, vec!["j2".to_string()]);
    let c1 = store
        .indexed_tokens("oauth:client_tokens:c1", now)
        .await
        .unwrap();
    assert_eq!(c1, vec!["j3".to_string()]);
});

contract!(expired_tokens_leave_the_index, |store| {
    let now = SystemClock.now_unix();
    store
        .put_token(&record("old", "carol", "c9", 1), now)
        .await
        .unwrap();
    store
        .put_token(&record("new", "carol", "c9", 600), now)
        .await
        .unwrap();
    let later = now + 5;
    let live = store
        .indexed_tokens("oauth:user_tokens:carol", later)
        .await
        .unwrap();
    assert_eq!(live, vec!["new".to_string()]);
});

contract!(revocations_are_published, |store| {
    let mut feed = store.subscribe_revocations().await.unwrap();
    let now = SystemClock.now_unix();
    store
        .put_token(&record("j9", "dave", "c1", 600), now)
        .await
        .unwrap();
    store.revoke_token("j9").await.unwrap();
    // Revoking what does not exist is still announced: a replica may hold it cached.
    store.revoke_token("never-issued").await.unwrap();
    let got: Vec<String> =
        tokio::time::timeout(Duration::from_secs(2), feed.by_ref().take(2).collect())
            .await
            .expect("messages arrive");
    assert_eq!(got, vec!["j9".to_string(), "never-issued".to_string()]);
});
