//! `backup` and `restore`.

use mcp_oauth_gateway::audit::Events;
use std::process::Stdio;
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
    backup(&gw, dir.path(), &file);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    flush(&gw).await;

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
    bulk_grants(&store, n, ["j", "f", "r"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    let mut backup = cli_command(&gw, &["backup", "--out", file.to_str().unwrap()])
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
            store
                .revoke_token(&format!("j{k}"), &Events::none())
                .await
                .unwrap();
            tokens.push((format!("j{k}"), now_ms()));
        } else {
            store
                .revoke_family(&format!("f{k}"), Duration::from_secs(600), &Events::none())
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
    flush(&gw).await;
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
    backup(&gw, dir.path(), &file);
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
    bulk_tokens(&store, "bulk", "big", 2_500, 500).await;
    let before = redis_state(&gw).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    backup(&gw, dir.path(), &file);
    let text = std::fs::read_to_string(&file).unwrap();
    let pages = text
        .lines()
        .filter(|l| l.contains("\"key\":\"oauth:client_tokens:bulk\""))
        .count();
    assert_eq!(pages, 3, "2,500 members in pages of 1,000");
    flush(&gw).await;
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

/// Backups taken while a grant is refreshed in a loop: each holds the grant's refresh family
/// whole, with exactly one unused refresh token, the newest (read apart, a rotation caught half
/// way left two usable chains or none). One of them is restored into an empty Redis, and its
/// refresh token works there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_during_refreshes_keep_each_family_whole() {
    let gw = Gateway::start(&[("REFRESH_REUSE_GRACE", "0")]).await;
    let store = gw.redis.store();
    // Other grants around it, so a backup takes a while.
    bulk_grants(&store, 3_000, ["pad", "pf", "pr"]).await;
    let client = gw.client("none").await;
    let first = gw.tokens(&client).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let latest = std::sync::Arc::new(std::sync::Mutex::new(
        first["refresh_token"].as_str().unwrap().to_string(),
    ));
    let refresher = {
        let (stop, latest) = (stop.clone(), latest.clone());
        let (url, client_id) = (
            gw.url("/token"),
            client["client_id"].as_str().unwrap().to_string(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let current = latest.lock().unwrap().clone();
                let resp = refresh_at(&url, &client_id, &current).await;
                assert_eq!(resp.status(), 200);
                let next: Value = resp.json().await.unwrap();
                *latest.lock().unwrap() = next["refresh_token"].as_str().unwrap().to_string();
                n += 1;
            }
            n
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..12 {
        let file = dir.path().join(format!("b{i}.jsonl"));
        backup(&gw, dir.path(), &file);
        files.push(file);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refreshes = refresher.await.unwrap();
    assert!(
        refreshes > 12,
        "the grant was refreshed while the backups ran ({refreshes})"
    );

    for file in &files {
        // The grant's family: the one family of this client's refresh records.
        let mut records: Vec<Value> = Vec::new();
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let entry: Value = serde_json::from_str(line).unwrap();
            if entry["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("oauth:refresh:"))
            {
                let record: Value = serde_json::from_str(entry["value"].as_str().unwrap()).unwrap();
                if record["client_id"] == client["client_id"] {
                    records.push(record);
                }
            }
        }
        assert!(
            !records.is_empty(),
            "{}: the grant is in the backup",
            file.display()
        );
        let unused: Vec<&Value> = records.iter().filter(|r| r["used"] != true).collect();
        assert_eq!(
            unused.len(),
            1,
            "{}: {} unused refresh tokens",
            file.display(),
            unused.len()
        );
        let newest = records
            .iter()
            .map(|r| r["issued_at"].as_i64().unwrap())
            .max();
        assert_eq!(
            unused[0]["issued_at"].as_i64(),
            newest,
            "the unused one is the newest"
        );
    }

    // Restored into an empty Redis, the grant refreshes with the one it kept.
    let last = files.last().unwrap();
    flush(&gw).await;
    ok(&cli(&gw, dir.path(), &["restore", last.to_str().unwrap()]));
    let mut conn = gw.redis.conn().await;
    let mut usable = 0;
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, "oauth:refresh:*")
        .await
        .unwrap();
    for key in keys {
        let value: String = redis::AsyncCommands::get(&mut conn, &key).await.unwrap();
        let record: Value = serde_json::from_str(&value).unwrap();
        if record["client_id"] == client["client_id"] && record["used"] != true {
            usable += 1;
        }
    }
    assert_eq!(usable, 1);
}

/// A restore into the live store while the gateway serves: nothing revoked since the backup
/// (before the restore, or while it runs) comes back, and a refresh token rotated since the
/// backup stays used (a restore never makes two live chains of one grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_while_the_gateway_serves_never_undoes_a_revocation() {
    let gw = Gateway::start(&[("REFRESH_REUSE_GRACE", "0")]).await;
    let store = gw.redis.store();
    let n = 3_000;
    bulk_grants(&store, n, ["j", "f", "r"]).await;
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    backup(&gw, dir.path(), &file);

    // Since the backup: revocations, and the real grant refreshed once.
    let mut tokens_revoked = Vec::new();
    let mut families_revoked = Vec::new();
    for i in 0..100 {
        store
            .revoke_token(&format!("j{i}"), &Events::none())
            .await
            .unwrap();
        tokens_revoked.push(format!("j{i}"));
    }
    for i in 100..120 {
        store
            .revoke_family(&format!("f{i}"), Duration::from_secs(600), &Events::none())
            .await
            .unwrap();
        families_revoked.push(i);
    }
    let old_refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = gw.refresh(&client, old_refresh).await;
    assert_eq!(resp.status(), 200);
    let current: Value = resp.json().await.unwrap();

    // The restore runs while revocations go on.
    let mut restore = cli_command(&gw, &["restore", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut i = 200;
    let status = loop {
        if let Some(status) = restore.try_wait().unwrap() {
            break status;
        }
        if i % 2 == 0 {
            store
                .revoke_token(&format!("j{i}"), &Events::none())
                .await
                .unwrap();
            tokens_revoked.push(format!("j{i}"));
        } else {
            store
                .revoke_family(&format!("f{i}"), Duration::from_secs(600), &Events::none())
                .await
                .unwrap();
            families_revoked.push(i);
        }
        i += 1;
        assert!(i < n, "the restore ends");
    };
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(restore.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("revoked since the backup"), "{out}");
    assert!(i > 205, "revocations happened while the restore ran ({i})");

    for jti in &tokens_revoked {
        assert!(!store.token_is_live(jti).await.unwrap(), "{jti} came back");
    }
    for k in &families_revoked {
        assert!(
            !store.token_is_live(&format!("j{k}")).await.unwrap(),
            "j{k} came back"
        );
        assert_eq!(
            store.get(&format!("oauth:refresh:r{k}")).await.unwrap(),
            None,
            "the refresh token of revoked family f{k} came back"
        );
    }
    // What was not revoked is there.
    assert!(store.token_is_live(&format!("j{}", n - 1)).await.unwrap());
    // The rotated-out refresh token stays used; the current one goes on.
    let hash = mcp_oauth_gateway::slots::placed_hash(old_refresh);
    let record: Value = serde_json::from_str(
        &store
            .get(&format!("oauth:refresh:{hash}"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["used"], true, "{record}");
    let resp = gw.refresh_of(&client, &current).await;
    assert_eq!(resp.status(), 200);
}
