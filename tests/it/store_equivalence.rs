//! The two stores are one contract: every store operation, run in the same order against the
//! Redis store and the in-memory store, answers the same, leaves the same keys with the same
//! values, indexes and lifetimes, and writes the same audit events.

use std::collections::BTreeMap;
use std::time::Duration;

use mcp_oauth_gateway::audit::{Actor, Event, Events, Kind, outcome};
use mcp_oauth_gateway::clock::{Clock, SystemClock};
use mcp_oauth_gateway::store::memory::Dumped;
use mcp_oauth_gateway::store::{
    AttemptLimit, Change, GrantResult, MemoryStore, NewClientWrite, OnceWrite, RedisStore, Store,
};
use redis::AsyncCommands;

use crate::support::audit::trail;
use crate::support::helpers::{RedisServer, grant_write, store_code};

fn event(kind: Kind, n: u32) -> Event {
    Event::new(kind, Actor::Operator("contract".into()))
        .user("alice")
        .client("c1")
        .detail("n", n)
}

/// Every operation once or more, in an order that exercises each outcome; the answers in a
/// comparable form.
async fn script(store: &dyn Store) -> Vec<String> {
    let now = SystemClock.now_unix();
    let mut answers = Vec::new();
    let mut say = |what: &str, answer: String| answers.push(format!("{what}: {answer}"));

    // Tokens: recorded, revoked, revoked again.
    let mut token = grant_write("t1", "c1", "f0", "r0", None).token;
    token.family_id = None;
    store
        .put_token(&token, now, &Events::one(event(Kind::TokenMinted, 1)))
        .await
        .unwrap();
    for _ in 0..2 {
        let revoked = Events::none().on(outcome::REVOKED, event(Kind::TokenRevoked, 2));
        say(
            "revoke t1",
            format!("{:?}", store.revoke_token("t1", &revoked).await.unwrap()),
        );
    }
    // A token for a one-time assertion: written once, then refused (nothing written).
    let mut once_token = grant_write("t2", "c1", "f0", "r0", None).token;
    once_token.family_id = None;
    for _ in 0..2 {
        let events = Events::none()
            .on(outcome::WRITTEN, event(Kind::TokenIssued, 5))
            .on(outcome::REUSED, event(Kind::AssertionReplayed, 6));
        let once = OnceWrite {
            record: &once_token,
            key: "oauth:assertion_jti:j1",
            ttl: Duration::from_secs(300),
        };
        say(
            "token for assertion j1",
            format!(
                "{}",
                store.put_token_once(&once, now, &events).await.unwrap()
            ),
        );
    }
    // A client, its unused budget, an eviction spared or done.
    for (id, address) in [("c1", "a1"), ("c2", "a1"), ("c3", "a2")] {
        let written = store
            .put_new_client(&NewClientWrite {
                client_id: id,
                json: r#"{"client_id":"x"}"#,
                unused_lifetime: Duration::from_secs(600),
                address: Some(address),
                budget: 10,
                budget_per_address: 1,
                now_ms: SystemClock.now_millis(),
                events: Events::one(event(Kind::ClientRegistered, 3)),
            })
            .await
            .unwrap();
        say(&format!("new client {id}"), format!("{written:?}"));
        for evicted in &written.evicted {
            let dropped = Events::none().on(outcome::REVOKED, event(Kind::ClientEvicted, 4));
            let gone = store
                .drop_unused_client(evicted, Duration::from_secs(600), &dropped)
                .await
                .unwrap();
            say(&format!("drop {evicted}"), format!("{gone}"));
        }
    }
    // A code, its redemption, a replayed redemption, a rotation, a reuse.
    let login = Events::one(event(Kind::Login, 5));
    store_code(store, "k1", "c2", 300, &login).await;
    let mut redeem = grant_write("a1", "c2", "F1", "s1", None);
    redeem.redeem_code = Some("oauth:code:k1".into());
    redeem.result = Some(GrantResult {
        key: "oauth:grant_result:k1".into(),
        sealed: "sealed".into(),
        ttl: Duration::from_secs(10),
    });
    redeem.events = Events::none()
        .on(outcome::ISSUED, event(Kind::TokenIssued, 6))
        .on(outcome::REUSED, event(Kind::RefreshReuseDetected, 7));
    say(
        "redeem",
        format!("{:?}", store.issue_grant(&redeem, now).await.unwrap()),
    );
    say(
        "retry",
        format!("{:?}", store.issue_grant(&redeem, now).await.unwrap()),
    );
    let mut again = redeem.clone();
    again.result = None;
    again.family_id = "F2".into();
    say(
        "replay",
        format!("{:?}", store.issue_grant(&again, now).await.unwrap()),
    );
    for (jti, refresh, from) in [("a2", "s2", "s1"), ("a3", "s3", "s2"), ("a4", "s4", "s1")] {
        let mut rotate = grant_write(jti, "c2", "F1", refresh, Some(from));
        rotate.events = redeem.events.clone();
        say(
            &format!("rotate {from}"),
            format!("{:?}", store.issue_grant(&rotate, now).await.unwrap()),
        );
    }
    // Consent, a family revoked (twice), a client deleted with what it has.
    store
        .put_consent(
            "Alice",
            "c3",
            "{}",
            Duration::from_secs(600),
            now,
            &Events::one(event(Kind::ConsentGranted, 8)),
        )
        .await
        .unwrap();
    store
        .issue_grant(&grant_write("b1", "c3", "F3", "u1", None), now)
        .await
        .unwrap();
    for _ in 0..2 {
        let revoked = Events::none().on(outcome::REVOKED, event(Kind::TokenRevoked, 9));
        let n = store
            .revoke_family("F3", Duration::from_secs(600), &revoked)
            .await
            .unwrap();
        say("revoke F3", n.to_string());
    }
    store
        .issue_grant(&grant_write("b2", "c3", "F4", "u2", None), now)
        .await
        .unwrap();
    let deleted = Events::none().on(outcome::DONE, event(Kind::ClientDeleted, 10));
    let step = store
        .delete_client_step("c3", Duration::from_secs(600), 1_000, &deleted)
        .await
        .unwrap();
    say("delete c3", format!("{step:?}"));
    // Attempts until locked, then held.
    let limit = AttemptLimit {
        max: 2,
        window: Duration::from_secs(60),
        lockout: Duration::from_secs(120),
    };
    let counters = ["oauth:mfa_fail:user:alice".to_string()];
    let locks = ["oauth:mfa_lock:user:alice".to_string()];
    for _ in 0..4 {
        let locked = Events::none().on(outcome::LOCKED, event(Kind::MfaLocked, 11));
        let attempt = store
            .reserve_attempt(&counters, &locks, &limit, &locked)
            .await
            .unwrap();
        say(
            "attempt",
            format!(
                "{}",
                matches!(attempt, mcp_oauth_gateway::store::Attempt::Allowed { .. })
            ),
        );
    }
    // One-key changes, plain writes, counters, usage.
    for change in [
        Change::SetIfAbsent {
            key: "oauth:mfa:alice",
            value: "m1",
            ttl: None,
        },
        Change::SetIfAbsent {
            key: "oauth:mfa:alice",
            value: "m2",
            ttl: None,
        },
        Change::Set {
            key: "oauth:x",
            value: "1",
            ttl: Some(Duration::from_secs(60)),
        },
        Change::Delete { key: "oauth:x" },
        Change::Delete { key: "oauth:x" },
    ] {
        let changed = Events::none().on(outcome::CHANGED, event(Kind::MfaEnrolled, 12));
        say(
            "change",
            format!("{}", store.change(&change, &changed).await.unwrap()),
        );
    }
    store
        .append_events(&Events::one(event(Kind::Backup, 13)))
        .await
        .unwrap();
    store
        .put("oauth:p", "v", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    say(
        "put_if_absent",
        format!(
            "{}",
            store.put_if_absent("oauth:p", "w", None).await.unwrap()
        ),
    );
    say(
        "take",
        format!("{:?}", store.take("oauth:p").await.unwrap()),
    );
    for _ in 0..2 {
        let n = store.incr_within("oauth:n", Duration::from_secs(60));
        say("incr", n.await.unwrap().to_string());
    }
    store
        .add_usage(
            "2026120705",
            &[("[\"alice\"]".into(), 3), ("[\"bob\"]".into(), 1)],
        )
        .await
        .unwrap();
    store
        .add_usage("2026120705", &[("[\"alice\"]".into(), 2)])
        .await
        .unwrap();
    answers
}

/// Two runs a moment apart: times (Unix seconds, or ms) may differ by up to 2 s.
fn close(a: i64, b: i64) -> bool {
    let slack = if a.abs() > 100_000_000_000 { 2_000 } else { 2 };
    a == b || (a.abs() > 1_000_000_000 && a.abs_diff(b) <= slack)
}

/// The same JSON (Lua's cjson and serde_json order members differently), times close.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_json(v, w))
        }
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => close(x, y),
            _ => x == y,
        },
        _ => a == b,
    }
}

fn alike(a: &Dumped, b: &Dumped) -> bool {
    match (a, b) {
        (Dumped::Text(x), Dumped::Text(y)) => {
            match (serde_json::from_str(x), serde_json::from_str(y)) {
                (Ok(x), Ok(y)) => same_json(&x, &y),
                _ => x == y,
            }
        }
        (Dumped::Index(x), Dumped::Index(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(m, s)| y.get(m).is_some_and(|t| close(*s, *t)))
        }
        _ => false,
    }
}

/// The Redis keyspace as [`MemoryStore::dump`] shows the memory store's.
async fn redis_dump(server: &RedisServer) -> BTreeMap<String, (Dumped, Option<u64>)> {
    server
        .keyspace()
        .await
        .into_iter()
        .map(|(key, (value, ttl))| (key, (value, (ttl >= 0).then_some(ttl as u64))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_answer_alike_and_end_in_the_same_state() {
    let server = RedisServer::start().await;
    let redis = RedisStore::connect(&server.url()).unwrap();
    let memory = MemoryStore::new();
    let from_redis = script(&redis).await;
    let from_memory = script(&memory).await;
    assert_eq!(from_redis, from_memory, "the same answers, step by step");

    let (redis_keys, memory_keys) = (redis_dump(&server).await, memory.dump());
    assert_eq!(
        redis_keys.keys().collect::<Vec<_>>(),
        memory_keys.keys().collect::<Vec<_>>(),
        "the same keys"
    );
    for (key, (value, ttl)) in &redis_keys {
        let (mine, my_ttl) = &memory_keys[key];
        assert!(alike(value, mine), "{key}: {value:?} vs {mine:?}");
        match (ttl, my_ttl) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(a.abs_diff(*b) <= 2_000, "{key}: {a} ms vs {b} ms"),
            _ => panic!("{key}: one expires, the other does not ({ttl:?} vs {my_ttl:?})"),
        }
    }
    // The same events, in the same order.
    let redis_events: Vec<_> = trail(&server).await.into_iter().map(|s| s.event).collect();
    let memory_events: Vec<_> = memory.audit_events().into_iter().map(|s| s.event).collect();
    assert_eq!(redis_events, memory_events);
    assert!(redis_events.len() >= 12, "{redis_events:?}");
    // And the same usage.
    let mut conn = server.conn().await;
    let usage: std::collections::HashMap<String, u64> =
        conn.hgetall("oauth:usage:2026120705").await.unwrap();
    assert_eq!(usage, memory.usage("2026120705"));
}
