//! One contract, two stores: every test runs against Redis and against the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use mcp_oauth_gateway::audit::Events;
use mcp_oauth_gateway::clock::{Clock, SystemClock};
use mcp_oauth_gateway::store::{GrantOutcome, GrantResult, GrantWrite, MemoryStore, Store, Ttl};

use crate::support::helpers::{RedisServer, grant_write, store_code, token_record};

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

/// Records a token for `user` at `client` that lives `expires_in` seconds.
async fn put_token(
    store: &dyn Store,
    jti: &str,
    user: &str,
    client: &str,
    expires_in: i64,
    now: i64,
) {
    let record = token_record(jti, user, client, expires_in);
    store
        .put_token(&record, now, &Events::none())
        .await
        .unwrap();
}

async fn issue(store: &dyn Store, write: &GrantWrite, now: i64) -> GrantOutcome {
    store.issue_grant(write, now).await.unwrap()
}

async fn indexed(store: &dyn Store, index: &str, now: i64) -> Vec<String> {
    store.indexed_tokens(index, now).await.unwrap()
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
    put_token(&*store, "j1", "Alice", "c1", 600, now).await;
    put_token(&*store, "j2", "alice", "c2", 1200, now).await;
    put_token(&*store, "j3", "bob", "c1", 600, now).await;
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
    let alice = indexed(&*store, "oauth:user_tokens:alice", now).await;
    assert_eq!(alice, vec!["j1".to_string(), "j2".to_string()]);
    let c1 = indexed(&*store, "oauth:client_tokens:c1", now).await;
    assert_eq!(c1.len(), 2);

    assert!(store.revoke_token("j1", &Events::none()).await.unwrap());
    assert!(!store.token_is_live("j1").await.unwrap());
    assert_eq!(store.token("j1").await.unwrap(), None);
    assert!(!store.revoke_token("j1", &Events::none()).await.unwrap());
    let alice = indexed(&*store, "oauth:user_tokens:alice", now).await;
    assert_eq!(alice, vec!["j2".to_string()]);
    let c1 = indexed(&*store, "oauth:client_tokens:c1", now).await;
    assert_eq!(c1, vec!["j3".to_string()]);
});

contract!(expired_tokens_leave_the_index, |store| {
    let now = SystemClock.now_unix();
    put_token(&*store, "old", "carol", "c9", 1, now).await;
    put_token(&*store, "new", "carol", "c9", 600, now).await;
    let later = now + 5;
    let live = indexed(&*store, "oauth:user_tokens:carol", later).await;
    assert_eq!(live, vec!["new".to_string()]);
});

contract!(revocations_are_published, |store| {
    let mut feed = store.subscribe_revocations().await.unwrap();
    let now = SystemClock.now_unix();
    put_token(&*store, "j9", "dave", "c1", 600, now).await;
    store.revoke_token("j9", &Events::none()).await.unwrap();
    // Revoking what does not exist is still announced: a replica may hold it cached.
    store
        .revoke_token("never-issued", &Events::none())
        .await
        .unwrap();
    let got: Vec<String> =
        tokio::time::timeout(Duration::from_secs(2), feed.by_ref().take(2).collect())
            .await
            .expect("messages arrive");
    assert_eq!(got, vec!["j9".to_string(), "never-issued".to_string()]);
});

contract!(codes_redeem_once_and_remember_the_family, |store| {
    let now = SystemClock.now_unix();
    store
        .put(
            "oauth:code:h1",
            r#"{"client_id":"c1"}"#,
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let results = join_all((0..20).map(|i| {
        let store = store.clone();
        async move {
            let mut write = grant_write(
                &format!("j{i}"),
                "c1",
                &format!("fam{i}"),
                &format!("r{i}"),
                None,
            );
            write.redeem_code = Some("oauth:code:h1".into());
            issue(&*store, &write, now).await
        }
    }))
    .await;
    let issued: Vec<usize> = (0..20)
        .filter(|i| results[*i] == GrantOutcome::Issued)
        .collect();
    assert_eq!(issued.len(), 1, "{results:?}");
    let winner = format!("fam{}", issued[0]);
    let reused: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            GrantOutcome::CodeReused { family_id } => Some(family_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reused.len(), 19);
    assert!(
        reused.iter().all(|f| *f == winner),
        "all name the winner's family"
    );
    // Only the winner's tokens exist.
    for i in 0..20 {
        assert_eq!(
            store.token_is_live(&format!("j{i}")).await.unwrap(),
            i == issued[0]
        );
    }
    // The marker keeps the code's TTL.
    assert!(matches!(
        store.ttl("oauth:code:h1").await.unwrap(),
        Ttl::Expires(_)
    ));
    let mut missing = grant_write("jx", "c1", "fx", "rx", None);
    missing.redeem_code = Some("oauth:code:none".into());
    assert_eq!(issue(&*store, &missing, now).await, GrantOutcome::Missing);
});

contract!(
    a_grant_retried_within_its_window_replays_its_answer,
    |store| {
        let now = SystemClock.now_unix();
        let kept = |sealed: &str| GrantResult {
            key: "oauth:grant_result:p1".into(),
            sealed: sealed.into(),
            ttl: Duration::from_millis(700),
        };
        let mut first = grant_write("g1", "c1", "G", "s1", None);
        first.result = Some(kept("answer-1"));
        assert_eq!(issue(&*store, &first, now).await, GrantOutcome::Issued);
        // The same request again (its answer was lost): nothing new, the same answer.
        let mut again = grant_write("g2", "c1", "G", "s2", None);
        again.result = Some(kept("answer-2"));
        assert_eq!(
            issue(&*store, &again, now).await,
            GrantOutcome::Replayed("answer-1".into())
        );
        assert!(!store.token_is_live("g2").await.unwrap());
        assert_eq!(store.get("oauth:refresh:s2").await.unwrap(), None);
        // Rotating s1 with a successor that names it; using the successor ends s1's window.
        let mut rotate = grant_write("g3", "c1", "G", "s3", Some("s1"));
        rotate.refresh_json = serde_json::json!({"family_id": "G", "client_id": "c1", "used": false, "rotated_from": "p1"}).to_string();
        rotate.result = Some(GrantResult {
            key: "oauth:grant_result:s1".into(),
            sealed: "answer-3".into(),
            ttl: Duration::from_secs(60),
        });
        assert_eq!(issue(&*store, &rotate, now).await, GrantOutcome::Issued);
        let mut next = grant_write("g4", "c1", "G", "s4", Some("s3"));
        next.result = Some(GrantResult {
            key: "oauth:grant_result:s3".into(),
            sealed: "answer-4".into(),
            ttl: Duration::from_secs(60),
        });
        assert_eq!(issue(&*store, &next, now).await, GrantOutcome::Issued);
        assert_eq!(store.get("oauth:grant_result:p1").await.unwrap(), None);
        // Past its window an answer is gone.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(store.get("oauth:grant_result:p1").await.unwrap(), None);
    }
);

contract!(refresh_rotation_and_reuse_revokes_the_family, |store| {
    let now = SystemClock.now_unix();
    let mut feed = store.subscribe_revocations().await.unwrap();
    let rotate = |jti, family, refresh, from| grant_write(jti, "c1", family, refresh, from);
    assert_eq!(
        issue(&*store, &rotate("a1", "F", "r1", None), now).await,
        GrantOutcome::Issued
    );
    assert!(store.token_is_live("a1").await.unwrap());
    assert!(store.get("oauth:refresh:r1").await.unwrap().is_some());
    assert_eq!(
        issue(&*store, &rotate("a2", "F", "r2", Some("r1")), now).await,
        GrantOutcome::Issued
    );
    let r1: serde_json::Value =
        serde_json::from_str(&store.get("oauth:refresh:r1").await.unwrap().unwrap()).unwrap();
    assert_eq!(r1["used"], true);
    // r1 again: reuse. Everything in the family dies, the rotated-in tokens included.
    assert_eq!(
        issue(&*store, &rotate("a3", "F", "r3", Some("r1")), now).await,
        GrantOutcome::Reused
    );
    for jti in ["a1", "a2", "a3"] {
        assert!(!store.token_is_live(jti).await.unwrap(), "{jti}");
    }
    assert_eq!(store.get("oauth:refresh:r2").await.unwrap(), None);
    assert_eq!(
        issue(&*store, &rotate("a4", "F", "r4", Some("r2")), now).await,
        GrantOutcome::FamilyRevoked
    );
    assert_eq!(
        issue(&*store, &rotate("a5", "G", "r5", Some("nope")), now).await,
        GrantOutcome::Missing
    );
    let heard: Vec<String> =
        tokio::time::timeout(Duration::from_secs(2), feed.by_ref().take(2).collect())
            .await
            .expect("revocations published");
    let mut heard = heard;
    heard.sort();
    assert_eq!(heard, vec!["a1".to_string(), "a2".to_string()]);
});

contract!(concurrent_rotations_issue_exactly_once, |store| {
    let now = SystemClock.now_unix();
    issue(&*store, &grant_write("b0", "c1", "H", "s0", None), now).await;
    let outcomes = join_all((0..50).map(|i| {
        let store = store.clone();
        async move {
            issue(
                &*store,
                &grant_write(
                    &format!("b{}", i + 1),
                    "c1",
                    "H",
                    &format!("s{}", i + 1),
                    Some("s0"),
                ),
                now,
            )
            .await
        }
    }))
    .await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == GrantOutcome::Issued)
            .count(),
        1,
        "{outcomes:?}"
    );
});

contract!(deleting_a_client_removes_everything_issued_to_it, |store| {
    let now = SystemClock.now_unix();
    store.put("oauth:client:c7", "{}", None).await.unwrap();
    // Consents are indexed per client, so deleting one finds them without a keyspace scan.
    for client in ["c7", "c8"] {
        store
            .put_consent(
                "Erin",
                client,
                "{}",
                Duration::from_secs(600),
                now,
                &Events::none(),
            )
            .await
            .unwrap();
    }
    issue(&*store, &grant_write("d1", "c7", "K", "t1", None), now).await;
    put_token(&*store, "d2", "erin", "c7", 600, now).await;
    put_token(&*store, "d3", "erin", "c8", 600, now).await;
    store
        .delete_client("c7", Duration::from_secs(60), None)
        .await
        .unwrap();
    assert_eq!(store.get("oauth:client:c7").await.unwrap(), None);
    assert_eq!(store.get("oauth:consent:erin:c7").await.unwrap(), None);
    assert!(store.get("oauth:consent:erin:c8").await.unwrap().is_some());
    assert_eq!(
        store.ttl("oauth:client_consents:c7").await.unwrap(),
        Ttl::Missing
    );
    assert!(matches!(
        store.ttl("oauth:client_consents:c8").await.unwrap(),
        Ttl::Expires(_)
    ));
    assert!(!store.token_is_live("d1").await.unwrap());
    assert!(!store.token_is_live("d2").await.unwrap());
    assert!(store.token_is_live("d3").await.unwrap());
    assert_eq!(store.get("oauth:refresh:t1").await.unwrap(), None);
    assert!(
        indexed(&*store, "oauth:client_tokens:c7", now)
            .await
            .is_empty()
    );
});

contract!(
    deleting_a_client_goes_in_bounded_steps_and_can_be_resumed,
    |store| {
        let now = SystemClock.now_unix();
        store.put("oauth:client:c9", "{}", None).await.unwrap();
        for i in 0..25 {
            put_token(&*store, &format!("s{i}"), "erin", "c9", 600, now).await;
        }
        store_code(store.as_ref(), "pending-c9", "c9", 60, &Events::none()).await;
        let mut feed = store.subscribe_revocations().await.unwrap();
        let (mut revoked, mut steps) = (0, 0);
        loop {
            let step = store
                .delete_client_step("c9", Duration::from_secs(60), 10, &Events::none())
                .await
                .unwrap();
            revoked += step.revoked;
            steps += 1;
            if step.remaining == 0 {
                break;
            }
            // Until the last step the registration stays, so an interrupted delete can be finished
            // by the same request (DELETE /register/{id} authenticates against it).
            assert!(store.get("oauth:client:c9").await.unwrap().is_some());
            assert!(steps < 10, "a step always makes progress");
        }
        assert_eq!(revoked, 25);
        assert_eq!(store.get("oauth:client:c9").await.unwrap(), None);
        assert_eq!(store.get("oauth:code:pending-c9").await.unwrap(), None);
        assert_eq!(
            store.ttl("oauth:client_pending:c9").await.unwrap(),
            Ttl::Missing
        );
        for i in 0..25 {
            assert!(!store.token_is_live(&format!("s{i}")).await.unwrap());
        }
        let mut heard = 0;
        while heard < 25 {
            tokio::time::timeout(Duration::from_secs(2), feed.next())
                .await
                .expect("every revocation is published")
                .unwrap();
            heard += 1;
        }
        // Done is done: another step finds nothing and changes nothing.
        let again = store
            .delete_client_step("c9", Duration::from_secs(60), 10, &Events::none())
            .await
            .unwrap();
        assert_eq!((again.revoked, again.remaining), (0, 0));
    }
);

contract!(counters_count_within_their_window, |store| {
    let window = Duration::from_millis(400);
    let counts = join_all((0..10).map(|_| {
        let store = store.clone();
        async move {
            store
                .incr_within("oauth:mfa_fail:user:x", window)
                .await
                .unwrap()
        }
    }))
    .await;
    let mut sorted = counts.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=10).collect::<Vec<u64>>(), "atomic increments");
    assert!(
        matches!(store.ttl("oauth:mfa_fail:user:x").await.unwrap(), Ttl::Expires(d) if d <= window)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store
            .incr_within("oauth:mfa_fail:user:x", window)
            .await
            .unwrap(),
        1,
        "a new window"
    );
});

contract!(
    the_fields_the_scripts_write_read_back_as_the_records,
    |store| {
        use mcp_oauth_gateway::records::{RedeemedCode, RefreshRecord};
        let now = SystemClock.now_unix();
        // A refresh record as auth writes it; the grant script marks it used when it rotates.
        let refresh = serde_json::json!({
            "family_id": "famx", "client_id": "c1",
            "user": {"id": "7", "login": "erin"},
            "scope": "mcp", "resource": null, "amr": ["github"],
            "issued_at": now, "expires_at": now + 3600,
            "rotated_from": "r0"
        })
        .to_string();
        let mut first = grant_write("t1", "c1", "famx", "rx1", None);
        first.refresh_json = refresh.clone();
        assert_eq!(issue(&*store, &first, now).await, GrantOutcome::Issued);
        let mut second = grant_write("t2", "c1", "famx", "rx2", Some("rx1"));
        second.refresh_json = refresh;
        assert_eq!(issue(&*store, &second, now).await, GrantOutcome::Issued);
        let rotated: RefreshRecord =
            serde_json::from_str(&store.get("oauth:refresh:rx1").await.unwrap().unwrap()).unwrap();
        assert!(rotated.used, "the script marks `used`");
        assert_eq!(rotated.family_id, "famx");
        assert_eq!(
            rotated.rotated_from.as_deref(),
            Some("r0"),
            "other fields kept"
        );
        assert_eq!(rotated.user.login, "erin");
        let fresh: RefreshRecord =
            serde_json::from_str(&store.get("oauth:refresh:rx2").await.unwrap().unwrap()).unwrap();
        assert!(!fresh.used);
        for field in RefreshRecord::STORE_FIELDS {
            assert!(
                serde_json::to_value(&rotated).unwrap().get(field).is_some(),
                "RefreshRecord declares {field}"
            );
        }
        // A code as the login writes it; the grant script leaves the redeemed marker.
        store_code(store.as_ref(), "cx", "c1", 60, &Events::none()).await;
        let mut redeem = grant_write("t3", "c1", "famy", "ry1", None);
        redeem.redeem_code = Some("oauth:code:cx".into());
        assert_eq!(issue(&*store, &redeem, now).await, GrantOutcome::Issued);
        let marker: RedeemedCode =
            serde_json::from_str(&store.get("oauth:code:cx").await.unwrap().unwrap()).unwrap();
        assert_eq!(
            marker,
            RedeemedCode {
                redeemed: true,
                family_id: "famy".into()
            }
        );
        assert!(
            matches!(store.ttl("oauth:code:cx").await.unwrap(), Ttl::Expires(_)),
            "the marker keeps the code's TTL"
        );
        for field in RedeemedCode::STORE_FIELDS {
            assert!(serde_json::to_value(&marker).unwrap().get(field).is_some());
        }
    }
);

#[tokio::test]
async fn the_memory_store_runs_on_a_clock_tests_move() {
    let store = MemoryStore::new();
    store
        .put("oauth:test:t", "1", Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(matches!(
        store.ttl("oauth:test:t").await.unwrap(),
        Ttl::Expires(_)
    ));
    store.advance(Duration::from_secs(599));
    assert_eq!(
        store.get("oauth:test:t").await.unwrap().as_deref(),
        Some("1")
    );
    store.advance(Duration::from_secs(2));
    assert_eq!(store.get("oauth:test:t").await.unwrap(), None);
    assert_eq!(store.ttl("oauth:test:t").await.unwrap(), Ttl::Missing);
}
