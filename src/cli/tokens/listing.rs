//! What the store holds, for the operator: tokens listed by user or client (or the index
//! entries of expired ones), one token's record, revocation by jti, user or client, and the
//! purge of expired index entries and orphans.

use redis::AsyncCommands;

use super::now;
use crate::audit::{Events, Kind, outcome};
use crate::cli::admin::{Admin, RowWriter, redis_failed, relative};
use crate::cli::progress::Progress;
use crate::cli::{Cli, CliError, CliResult};
use crate::store::{TokenRecord, keys};

fn record_json(record: &TokenRecord, ttl_ms: Option<i64>) -> serde_json::Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    if let (Some(ttl), Some(map)) = (ttl_ms, v.as_object_mut()) {
        map.insert("ttl_seconds".into(), (ttl / 1000).into());
    }
    v
}

/// The live token records of an index (`oauth:user_tokens:…`/`oauth:client_tokens:…`), by
/// expiry.
async fn indexed_records(admin: &mut Admin, index: &str) -> CliResult<Vec<TokenRecord>> {
    let jtis: Vec<String> = admin
        .zset(index)
        .await?
        .into_iter()
        .map(|(j, _)| j)
        .collect();
    records_at(admin, jtis.iter().map(|j| keys::token(j)).collect()).await
}

/// The records behind `jtis` (MGET), those still live.
async fn records_of(admin: &mut Admin, jtis: &[String]) -> CliResult<Vec<TokenRecord>> {
    records_at(admin, jtis.iter().map(|j| keys::token(j)).collect()).await
}

/// The token records stored under `keys` (MGET; gone or unreadable ones left out), by expiry.
async fn records_at(admin: &mut Admin, keys: Vec<String>) -> CliResult<Vec<TokenRecord>> {
    let mut records: Vec<TokenRecord> = admin
        .values(&keys)
        .await?
        .into_iter()
        .flatten()
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect();
    records.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then(a.jti.cmp(&b.jti)));
    Ok(records)
}

/// Lists without holding the list: with `--user`/`--client`, that index page by page (by
/// expiry); otherwise every token record, SCAN page by page (in no particular order).
pub(super) async fn list(
    cli: &Cli,
    user: Option<&str>,
    client: Option<&str>,
    expired: bool,
) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let index = match (user, client) {
        (Some(u), _) => Some(keys::user_tokens(u)),
        (None, Some(c)) => Some(keys::client_tokens(c)),
        _ => None,
    };
    let now = now();
    if expired {
        return list_expired(cli, &mut admin, index, now).await;
    }
    let mut out = RowWriter::new(
        cli.json,
        &[
            "JTI",
            "USER",
            "CLIENT",
            "SCOPE",
            "EXPIRES",
            "LAST REFRESH",
            "ADDRESS",
        ],
        &[22, 12, 22, 12, 10, 12],
    );
    let emit = |out: &mut RowWriter, records: Vec<TokenRecord>| -> CliResult {
        for r in records {
            if let (Some(u), Some(c)) = (user, client)
                && !(r.username.eq_ignore_ascii_case(u) && r.client_id == c)
            {
                continue;
            }
            let expires = relative(r.expires_at - now);
            // A refreshed grant's newest token was issued by its last refresh.
            let refreshed = match r.grant.as_deref() {
                // In the past, even when it was this second.
                Some("refresh_token") => relative((r.issued_at - now).min(-1)),
                _ => "-".to_string(),
            };
            let address = r.client_ip.as_deref().unwrap_or("-");
            out.row(
                &record_json(&r, None),
                &[
                    &r.jti,
                    &r.username,
                    &r.client_id,
                    &r.scope,
                    &expires,
                    &refreshed,
                    address,
                ],
            )?;
        }
        Ok(())
    };
    match index {
        Some(index) => {
            let mut start = 0;
            loop {
                let page = admin.zset_page(&index, start).await?;
                let jtis: Vec<String> = page
                    .iter()
                    .filter(|(_, exp)| *exp as i64 >= now)
                    .map(|(j, _)| j.clone())
                    .collect();
                emit(&mut out, records_of(&mut admin, &jtis).await?)?;
                if page.len() < crate::cli::admin::SCAN_PAGE {
                    break;
                }
                start += page.len() as isize;
            }
        }
        None => {
            let pattern = format!("{}*", keys::TOKEN_PREFIX);
            let mut cursor = 0;
            loop {
                let (next, page) = admin.scan_page(cursor, &pattern).await?;
                emit(&mut out, records_at(&mut admin, page).await?)?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    out.finish()
}

/// What remains of expired tokens: their index entries (until `purge-expired`).
async fn list_expired(cli: &Cli, admin: &mut Admin, index: Option<String>, now: i64) -> CliResult {
    let mut out = RowWriter::new(cli.json, &["JTI", "USER", "EXPIRED"], &[22, 12]);
    let mut indexes: Vec<String> = match index {
        Some(i) => vec![i],
        None => Vec::new(),
    };
    let all = indexes.is_empty();
    let mut cursor = 0;
    loop {
        if all {
            let pattern = format!("{}*", keys::USER_TOKENS_PREFIX);
            let (next, page) = admin.scan_page(cursor, &pattern).await?;
            indexes = page;
            cursor = next;
        }
        for idx in indexes.drain(..) {
            let user = idx
                .strip_prefix(keys::USER_TOKENS_PREFIX)
                .unwrap_or("")
                .to_string();
            let expired: Vec<(String, f64)> = admin
                .conn
                .zrangebyscore_withscores(&idx, "-inf", format!("({now}"))
                .await
                .map_err(redis_failed)?;
            for (jti, exp) in expired {
                let v = serde_json::json!({"jti": jti, "index": idx, "expires_at": exp as i64});
                out.row(&v, &[&jti, &user, &relative(exp as i64 - now)])?;
            }
        }
        if !all || cursor == 0 {
            break;
        }
    }
    out.finish()
}

pub(super) async fn show(cli: &Cli, jti: &str) -> CliResult {
    let settings = cli.settings()?;
    let store = cli.store(&settings).await?;
    let failed = |e: crate::store::StoreError| CliError::Failed(format!("Redis: {e}"));
    let record = store
        .token(jti)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| CliError::Failed(format!("no live token with jti {jti}")))?;
    let ttl = match store.ttl(&keys::token(jti)).await.map_err(failed)? {
        crate::store::Ttl::Expires(left) => left.as_millis() as i64,
        crate::store::Ttl::Persistent => -1,
        crate::store::Ttl::Missing => -2,
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&record_json(&record, Some(ttl))).unwrap_or_default()
        );
    } else {
        let now = now();
        println!("jti        {}", record.jti);
        println!("user       {} (id {})", record.username, record.user_id);
        println!("client     {}", record.client_id);
        println!("scope      {}", record.scope);
        println!("audience   {}", record.audience.join(" "));
        println!(
            "issued     {}",
            relative(record.issued_at - now)
                .replace("in ", "")
                .replace("expired ", "")
        );
        println!("expires    {}", relative(record.expires_at - now));
        if let Some(f) = &record.family_id {
            println!("family     {f}");
        }
    }
    Ok(())
}

pub(super) async fn revoke(cli: &Cli, jti: &str) -> CliResult {
    let settings = cli.settings()?;
    let store = cli.store(&settings).await?;
    let record = store.token(jti).await.ok().flatten();
    let existed = store
        .revoke_token(jti, &revoked_by(cli, record.as_ref(), jti))
        .await
        .map_err(|e| CliError::Failed(format!("cannot revoke: {e}")))?;
    if existed {
        println!("revoked {jti}");
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "no live token with jti {jti} (already revoked or expired); revocation published anyway"
        )))
    }
}

/// `token_revoked` by the operator, written only when there was something to revoke.
fn revoked_by(cli: &Cli, record: Option<&TokenRecord>, jti: &str) -> Events {
    let mut event = cli.event(Kind::TokenRevoked).jti(jti);
    if let Some(r) = record {
        event = event
            .user(&r.username)
            .user_id(&r.user_id)
            .client(&r.client_id);
    }
    Events::none().on(outcome::REVOKED, event)
}

/// The user and client a refresh family belongs to, from one of its refresh records.
async fn family_owner(
    admin: &mut Admin,
    store: &dyn crate::store::Store,
    family: &str,
) -> Option<(String, String)> {
    let members = admin.zset(&keys::family(family)).await.ok()?;
    for (member, _) in members {
        if let Some(hash) = member.strip_prefix("r:")
            && let Ok(Some(record)) = crate::records::RefreshRecord::load(store, hash).await
        {
            return Some((record.user.login, record.client_id));
        }
    }
    None
}

/// Every token in an index, with the refresh grants they came from.
pub(super) async fn revoke_all(cli: &Cli, index: &str, what: &str, name: &str) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let store = cli.store(&settings).await?;
    let records = indexed_records(&mut admin, index).await?;
    let mut families: Vec<String> = records.iter().filter_map(|r| r.family_id.clone()).collect();
    // Through the family index too: a grant whose access tokens expired or were revoked
    // alone still has a live refresh token.
    let family_index = match what {
        "client" => keys::client_families(name),
        _ => keys::user_families(name),
    };
    families.extend(admin.zset(&family_index).await?.into_iter().map(|(f, _)| f));
    families.sort();
    families.dedup();
    // Told what was done when Redis stops answering half-way; revoking again is safe.
    let failed = |e: crate::store::StoreError, grants: usize, revoked: usize| {
        CliError::Failed(format!(
            "cannot finish revoking {what} {name}: {e}; {grants} refresh grants and {revoked} access tokens were revoked before that: run the command again to finish"
        ))
    };
    let progress = Progress::new(
        cli,
        Some((families.len() + records.len()) as u64),
        &format!("revoking {what} {name}"),
    );
    let mut grants = 0;
    for family in &families {
        progress.inc(1);
        let mut event = cli
            .event(Kind::TokenRevoked)
            .family(family)
            .reason(format!("every token of {what} {name}"));
        // Whose grant it is, so the user's and the client's trails both show it.
        if let Some((user, client)) = family_owner(&mut admin, store.as_ref(), family).await {
            event = event.user(&user).client(&client);
        }
        event = match what {
            "client" => event.client(name),
            _ => event.user(name),
        };
        let members = store
            .revoke_family(
                family,
                settings.refresh_token_lifetime,
                &Events::none().on(outcome::REVOKED, event),
            )
            .await
            .map_err(|e| failed(e, grants, 0))?;
        if members > 0 {
            grants += 1;
        }
    }
    let mut revoked = 0;
    for record in &records {
        progress.inc(1);
        // Already gone if its family was revoked above; the call still announces it.
        store
            .revoke_token(&record.jti, &revoked_by(cli, Some(record), &record.jti))
            .await
            .map_err(|e| failed(e, grants, revoked))?;
        revoked += 1;
    }
    progress.finish();
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"revoked_tokens": revoked, "revoked_refresh_families": grants})
        );
    } else {
        println!("revoked {revoked} access tokens and {grants} refresh grants of {what} {name}");
    }
    Ok(())
}

/// One SCAN walk of the keyspace; for each page, the expired entries of its indexes removed
/// (one pipelined ZREMRANGEBYSCORE each) and their orphans found with pipelined EXISTS, so no
/// step asks Redis for more than a page. Safe to interrupt and run again.
pub(super) async fn purge_expired(cli: &Cli) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let now = now();
    let pattern = format!("{}*", keys::PREFIX);
    let mut purged = crate::store::admin::Purged::default();
    let mut cursor = 0;
    // Told what was done when Redis stops answering half-way; purging again is safe.
    let partial = |e: crate::store::StoreError, purged: &crate::store::admin::Purged| {
        CliError::Failed(format!(
            "{e}; {} expired index entries and {} orphans were removed before that: run the command again to finish",
            purged.expired, purged.orphans
        ))
    };
    let progress = Progress::new(cli, Some(admin.dbsize().await?), "purging");
    loop {
        let (next, page) = admin
            .scan_page(cursor, &pattern)
            .await
            .map_err(|e| partial(e, &purged))?;
        progress.inc(page.len() as u64);
        let mut step = purged;
        admin
            .purge_page(&page, now, &crate::records::layout::Rules, &mut step)
            .await
            .map_err(|e| partial(e, &step))?;
        purged = step;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    progress.finish();
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"expired_index_entries": purged.expired, "orphans": purged.orphans, "empty_families": purged.empty_families})
        );
    } else {
        println!(
            "removed {} expired index entries and {} orphans; {} refresh families emptied",
            purged.expired, purged.orphans, purged.empty_families
        );
    }
    let recorded = cli
        .event(Kind::Purge)
        .detail("expired_index_entries", purged.expired)
        .detail("orphans", purged.orphans)
        .detail("empty_families", purged.empty_families);
    cli.record(&settings, recorded).await;
    Ok(())
}
