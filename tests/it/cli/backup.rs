//! `backup` and `restore`.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::support::gateway::Gateway;
use crate::support::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_flush_restore_gives_back_identical_keys_values_and_ttls() {
    let (gw, a, _, _, _) = populated().await;
    let _ = gw.code_for(&a, &[]).await; // a short-lived code among the keys
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.json");
    let before = redis_state(&gw).await;
    assert!(before.len() > 10, "{before:?}");
    ok(&cli(
        &gw,
        dir.path(),
        &["backup", "--out", file.to_str().unwrap()],
    ));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut conn = gw.redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    let dry = ok(&cli(
        &gw,
        dir.path(),
        &["restore", "--dry-run", file.to_str().unwrap()],
    ));
    assert!(dry.contains("would restore"), "{dry}");
    assert!(redis_state(&gw).await.is_empty(), "dry run changes nothing");

    for _ in 0..2 {
        // Twice: restore is idempotent.
        ok(&cli(&gw, dir.path(), &["restore", file.to_str().unwrap()]));
        let after = redis_state(&gw).await;
        assert_eq!(after.len(), before.len());
        for ((k1, v1, t1), (k2, v2, t2)) in before.iter().zip(after.iter()) {
            assert_eq!(k1, k2);
            assert_eq!(v1, v2, "{k1}");
            if *t1 < 0 {
                assert_eq!(t2, t1, "{k1} stays persistent");
            } else {
                assert!((t1 - t2).abs() <= 2_000, "{k1}: ttl {t1} ms vs {t2} ms");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_revocations_never_brings_a_revoked_grant_back() {
    let gw = Gateway::start(&[]).await;
    let store = gw.redis.store();
    let n = 6_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let store = store.clone();
            async move {
                store
                    .issue_grant(
                        &grant_write(
                            &format!("j{i}"),
                            "bulk",
                            &format!("f{i}"),
                            &format!("r{i}"),
                            None,
                        ),
                        mcp_oauth_gateway::clock::Clock::now_unix(
                            &mcp_oauth_gateway::clock::SystemClock,
                        ),
                    )
                    .await
                    .unwrap()
            }
        }))
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    let mut backup = Command::new(bin("mcp-gateway"))
        .args(["backup", "--out", file.to_str().unwrap()])
        .env_clear()
        .env("JWT_ALGORITHM", "RS256")
        .env("JWT_PRIVATE_KEY_B64", rsa_key_b64())
        .env("BASE_DOMAIN", "example.com")
        .env("ISSUER_URL", &gw.issuer)
        .env("REDIS_URL", gw.redis.url())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Revoke while it runs, alternating access tokens alone and whole families, from both
    // ends of the keyspace; count only what was revoked before the backup stopped listening.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let (mut tokens, mut families) = (Vec::new(), Vec::new());
    let mut i = 0;
    let status = loop {
        if let Some(status) = backup.try_wait().unwrap() {
            break status;
        }
        let k = if i % 2 == 0 { i } else { n - i };
        if i % 4 < 2 {
            store.revoke_token(&format!("j{k}")).await.unwrap();
            tokens.push((format!("j{k}"), now_ms()));
        } else {
            store
                .revoke_family(&format!("f{k}"), Duration::from_secs(600))
                .await
                .unwrap();
            families.push((k, now_ms()));
        }
        i += 1;
        assert!(i < n - 1, "the backup ends");
    };
    assert!(status.success());
    assert!(i > 4, "revocations happened while the backup ran ({i})");
    let text = std::fs::read_to_string(&file).unwrap();
    let trailer: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let heard_until = trailer["heard_until_ms"].as_i64().unwrap();
    tokens.retain(|(_, at)| *at < heard_until);
    families.retain(|(_, at)| *at < heard_until);
    assert!(tokens.len() > 1 && families.len() > 1, "{i} revocations");
    let mut conn = gw.redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let out = ok(&cli(&gw, dir.path(), &["restore", file.to_str().unwrap()]));
    assert!(out.contains("restored"), "{out}");
    for (jti, _) in &tokens {
        assert!(!store.token_is_live(jti).await.unwrap(), "{jti} came back");
    }
    for (k, _) in &families {
        assert!(!store.token_is_live(&format!("j{k}")).await.unwrap());
        assert_eq!(
            store.get(&format!("oauth:refresh:r{k}")).await.unwrap(),
            None,
            "the refresh token of revoked family f{k} came back"
        );
    }
    // What was not revoked is back, indexed.
    let untouched = n / 2 + 1;
    assert!(store.token_is_live(&format!("j{untouched}")).await.unwrap());
    let indexed = store
        .indexed_tokens(
            "oauth:client_tokens:bulk",
            mcp_oauth_gateway::clock::Clock::now_unix(&mcp_oauth_gateway::clock::SystemClock),
        )
        .await
        .unwrap();
    assert!(indexed.contains(&format!("j{untouched}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_short_or_corrupt_backup_is_refused_and_changes_nothing() {
    let (gw, _, _, _, _) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    ok(&cli(
        &gw,
        dir.path(),
        &["backup", "--out", file.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("\"version\":2"), "{}", lines[0]);
    assert!(lines.last().unwrap().contains("\"end\""));
    let before = redis_state(&gw).await;
    let mut conn = gw.redis.conn().await;
    // Cut short: no last line.
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let refused = cli(&gw, dir.path(), &["restore", cut.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("incomplete"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(redis_state(&gw).await.is_empty(), "nothing was written");
    // A bad line in the middle: refused before anything is written.
    let bad = dir.path().join("bad.jsonl");
    let mut mangled: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    mangled[lines.len() - 2] = "{\"key\": 3}".into();
    std::fs::write(&bad, mangled.join("\n") + "\n").unwrap();
    let refused = cli(&gw, dir.path(), &["restore", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(redis_state(&gw).await.is_empty(), "nothing was written");
    // The whole file restores what was there.
    ok(&cli(&gw, dir.path(), &["restore", file.to_str().unwrap()]));
    assert_eq!(redis_state(&gw).await.len(), before.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_index_is_backed_up_in_pages_and_restored_whole() {
    let gw = Gateway::start(&[]).await;
    let store = gw.redis.store();
    let now = mcp_oauth_gateway::clock::Clock::now_unix(&mcp_oauth_gateway::clock::SystemClock);
    for chunk in (0..2_500).collect::<Vec<_>>().chunks(500) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let store = store.clone();
            async move {
                let mut record = grant_write(&format!("big{i}"), "bulk", "f", "r", None).token;
                record.family_id = None;
                store.put_token(&record, now).await.unwrap();
            }
        }))
        .await;
    }
    let before = redis_state(&gw).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    ok(&cli(
        &gw,
        dir.path(),
        &["backup", "--out", file.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    let pages = text
        .lines()
        .filter(|l| l.contains("\"key\":\"oauth:client_tokens:bulk\""))
        .count();
    assert_eq!(pages, 3, "2,500 members in pages of 1,000");
    let mut conn = gw.redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let out = ok(&cli(&gw, dir.path(), &["restore", file.to_str().unwrap()]));
    assert!(
        out.contains(&format!("restored {} keys", before.len())),
        "{out}"
    );
    let after = redis_state(&gw).await;
    assert_eq!(after.len(), before.len());
    for ((k1, v1, _), (k2, v2, _)) in before.iter().zip(after.iter()) {
        assert_eq!(k1, k2);
        assert_eq!(v1, v2, "{k1}");
    }
}
