//! The trail's promises: no grant without its event and no event without its grant (the event
//! is written by the change's own script), a bounded size, and never a credential in it, in
//! the JSON log or in a webhook body.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;

use crate::support::audit::*;
use crate::support::dev_gateway::DevGateway;
use crate::support::gateway::*;
use crate::support::helpers::*;
use crate::support::jwt_claims;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_the_store_refuses_leaves_no_event_and_its_retry_leaves_one() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let before = trail(&gw.redis).await.len();
    gw.redis.set_maxmemory("1").await;
    let resp = gw.redeem(&client, &code, &verifier).await;
    gw.redis.set_maxmemory("0").await;
    assert_eq!(resp.status(), 503, "a store failure is retryable");
    let events = trail(&gw.redis).await;
    assert_eq!(events.len(), before, "nothing was written, no event either");
    let mut conn = gw.redis.conn().await;
    let tokens: Vec<String> = conn.keys("oauth:token:*").await.unwrap();
    assert!(tokens.is_empty());
    // The retry issues once, and records once; a second retry is answered from the kept
    // answer and records nothing more.
    let resp = gw.redeem(&client, &code, &verifier).await;
    assert_eq!(resp.status(), 200);
    let again = gw.redeem(&client, &code, &verifier).await;
    assert_eq!(again.status(), 200);
    let events = trail(&gw.redis).await;
    assert_eq!(of_kind(&events, "token_issued").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_has_its_event_and_every_event_its_grant_across_restarts() {
    let mut gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let mut refresh_tokens = Vec::new();
    for round in 0..6 {
        let tokens = gw.tokens(&client).await;
        refresh_tokens.push(tokens["refresh_token"].as_str().unwrap().to_string());
        if round % 2 == 1 {
            // Redis goes down between two steps and comes back with what it saved.
            gw.redis.stop().await;
            let resp = gw.refresh(&client, &refresh_tokens[round]).await;
            assert_eq!(resp.status(), 503);
            gw.redis.restart().await;
        }
        let resp = gw.refresh(&client, &refresh_tokens[round]).await;
        assert_eq!(resp.status(), 200);
    }
    let events = trail(&gw.redis).await;
    let mut conn = gw.redis.conn().await;
    let live: Vec<String> = conn.keys("oauth:token:*").await.unwrap();
    let issued: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.event.kind.as_str(), "token_issued" | "token_refreshed"))
        .filter_map(|e| e.event.jti.as_deref())
        .collect();
    assert_eq!(issued.len(), 12, "six grants, six refreshes");
    for key in &live {
        let jti = key.trim_start_matches("oauth:token:");
        assert_eq!(
            issued.iter().filter(|j| **j == jti).count(),
            1,
            "{jti} has exactly one event"
        );
    }
    for jti in &issued {
        assert!(live.contains(&format!("oauth:token:{jti}")), "{jti} exists");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_is_bounded_by_length_and_age_as_it_is_written() {
    use mcp_oauth_gateway::audit::{Actor, Bounds, Event, Events, Kind};
    use mcp_oauth_gateway::store::{RedisStore, Store};
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(&redis.url())
        .unwrap()
        .with_audit(Bounds {
            enabled: true,
            max_events: 100,
            retention: Duration::from_secs(3600),
        });
    redis.reset_stats().await;
    for i in 0..1_000 {
        let event = Event::new(Kind::Purge, Actor::Operator("t".into())).detail("i", i);
        store.append_events(&Events::one(event)).await.unwrap();
    }
    let mut conn = redis.conn().await;
    let len: u64 = conn.xlen("oauth:audit").await.unwrap();
    assert!(
        (100..300).contains(&len),
        "about the cap (whole nodes): {len}"
    );
    assert_eq!(redis.command_calls("scan").await, 0, "no walk");
    // By age: a retention of 60 s trims what is older (moved back in time by hand).
    let old = RedisStore::connect(&redis.url())
        .unwrap()
        .with_audit(Bounds {
            enabled: true,
            max_events: 1_000_000,
            retention: Duration::from_secs(60),
        });
    let _: () = redis::cmd("DEL")
        .arg("oauth:audit")
        .query_async(&mut conn)
        .await
        .unwrap();
    let hour_ago =
        mcp_oauth_gateway::clock::Clock::now_millis(&mcp_oauth_gateway::clock::SystemClock)
            - 3_600_000;
    for i in 0..300 {
        let _: String = redis::cmd("XADD")
            .arg("oauth:audit")
            .arg(format!("{}-{i}", hour_ago))
            .arg("t")
            .arg("purge")
            .arg("e")
            .arg("{}")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let event = Event::new(Kind::Purge, Actor::Operator("t".into()));
    old.append_events(&Events::one(event)).await.unwrap();
    let len: u64 = conn.xlen("oauth:audit").await.unwrap();
    assert!(len < 300, "the hour-old entries went (whole nodes): {len}");
}

/// Every credential a real login produces, to search for by value.
fn secrets_of(
    client: &Value,
    tokens: &[&Value],
    codes: &[String],
    github: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for field in ["client_secret", "registration_access_token"] {
        if let Some(s) = client[field].as_str() {
            out.push(s.to_string());
        }
    }
    for t in tokens {
        for field in ["access_token", "refresh_token"] {
            if let Some(s) = t[field].as_str() {
                out.push(s.to_string());
                // Its signature part alone is as secret.
                if let Some(sig) = s.rsplit('.').next() {
                    out.push(sig.to_string());
                }
            }
        }
    }
    out.extend(codes.iter().cloned());
    out.extend(github.iter().cloned());
    out.retain(|s| s.len() >= 16);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_appears_in_the_trail_or_a_webhook() {
    let mut receiver = Receiver::start().await;
    let mut env = hooked(&receiver);
    env.extend([
        ("AUDIT_WEBHOOK_MIN_LEVEL", "info".to_string()),
        ("TOKEN_BIND_IP", "true".to_string()),
        ("TRUSTED_PROXIES", "127.0.0.1".to_string()),
    ]);
    let gw = gateway_with(&env).await;
    let client = gw.client("client_secret_basic").await;
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let tokens: Value = gw
        .redeem(&client, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let refreshed = gw.refreshed(&client, &tokens).await;
    // Refusals that carry credentials: a wrong secret, a replayed code, a revoked token at
    // verify, a refresh token from another address.
    let mut impostor = client.clone();
    impostor["client_secret"] = "not-the-secret-at-all".into();
    let wrong = gw.refresh(&impostor, "x").await;
    assert_eq!(wrong.status(), 401);
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(gw.verify.status(access).await, 200);
    gw.revoked_at_verify(&client, access).await;
    let refresh = refreshed["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let from_elsewhere = [("x-forwarded-for", "203.0.113.9")];
    let stolen = gw
        .as_client_with("/token", &client, &form, &from_elsewhere)
        .await;
    assert_eq!(stolen.status(), 400);
    // Last: a replayed code ends the grant.
    gw.redeem_at(&client, &code, Some(&verifier), "http://127.0.0.1:9/other")
        .await;
    until_recorded(&gw.redis, "access_refused", Duration::from_secs(5)).await;
    let received = receiver.until(8, Duration::from_secs(10)).await;
    receiver.down().await;

    let secrets = secrets_of(
        &client,
        &[&tokens, &refreshed],
        &[code, verifier],
        &gw.github.issued_tokens(),
    );
    assert!(secrets.len() >= 8, "{secrets:?}");
    // Everything the trail holds, raw: the stream, its indexes, the usage counts.
    let mut conn = gw.redis.conn().await;
    let mut dump = String::new();
    let keys: Vec<String> = conn.keys("oauth:audit*").await.unwrap();
    for key in &keys {
        let entries: redis::Value = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        dump.push_str(&format!("{entries:?}"));
    }
    let usage: Vec<String> = conn.keys("oauth:usage:*").await.unwrap();
    for key in &usage {
        let counts: std::collections::HashMap<String, u64> = conn.hgetall(key).await.unwrap();
        dump.push_str(&format!("{counts:?}"));
    }
    assert!(
        dump.contains("binding_mismatch") && dump.contains("code_replayed"),
        "{dump}"
    );
    let bodies: String = received.iter().map(|r| r.body.clone()).collect();
    assert!(!bodies.is_empty());
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "the trail holds a credential"
        );
        assert!(
            !bodies.contains(secret.as_str()),
            "a webhook body holds a credential"
        );
    }
    assert!(!dump.contains(SECRET) && !bodies.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_audit_prints_every_event_as_a_json_line_without_credentials() {
    let (dev, stdout) = DevGateway::spawn(&[("LOG_AUDIT", "true")]);
    let lines = Arc::new(Mutex::new(String::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_serving(&format!("{}/ready", dev.verify), Duration::from_secs(10))
        .await
        .unwrap();
    let resource = format!("{}/mcp", dev.verify.replace("127.0.0.1", "localhost"));
    let (client_id, access) =
        crate::support::dev_gateway::dev_login(&dev.issuer, &resource, "alice").await;
    let jti = jwt_claims(&access)["jti"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let printed = loop {
        let printed = lines.lock().unwrap().clone();
        if printed.contains("\"token_issued\"") || std::time::Instant::now() > deadline {
            break printed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events: Vec<Value> = printed
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["audit"] == true)
        .collect();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for expected in [
        "client_registered",
        "authorization_started",
        "login",
        "token_issued",
    ] {
        assert!(types.contains(&expected), "{types:?}");
    }
    let issued = events.iter().find(|e| e["type"] == "token_issued").unwrap();
    assert_eq!(issued["jti"], jti.as_str());
    assert_eq!(issued["client_id"], client_id.as_str());
    assert!(issued["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        !printed.contains(&access),
        "the access token is never printed"
    );
    assert!(!printed.contains(access.rsplit('.').next().unwrap()));
}
