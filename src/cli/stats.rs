//! `mcp-gateway stats`: what the gateway holds right now, counted from the indexes in one
//! SCAN walk of the keyspace (pages of 500 keys, a pipelined count per index): no token
//! record is read, Redis is never asked for more than a page at a time, and the CLI's memory
//! grows with the number of users and clients, not of tokens.

use std::collections::BTreeMap;

use super::admin::{print_table, redis_failed};
use super::{Cli, CliResult};
use crate::clock::{Clock, SystemClock};
use crate::store::keys;

#[derive(Default)]
struct Counts {
    clients: u64,
    families: u64,
    live_tokens: u64,
    expiring: u64,
    per_client: BTreeMap<String, u64>,
    per_user: BTreeMap<String, u64>,
    keys: u64,
}

pub async fn run(cli: &Cli) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let now = SystemClock.now_unix();
    let mut counts = Counts::default();
    let pattern = format!("{}*", keys::PREFIX);
    let mut cursor = 0;
    loop {
        let (next, page) = admin.scan_page(cursor, &pattern).await?;
        let mut pipe = redis::pipe();
        // (is a client index, name) of each index in this page, in pipeline order.
        let mut indexes = Vec::new();
        for key in &page {
            counts.keys += 1;
            if key.starts_with(keys::CLIENT_PREFIX) {
                counts.clients += 1;
            } else if key.starts_with(keys::FAMILY_PREFIX) {
                counts.families += 1;
            } else if let Some(client) = key.strip_prefix(keys::CLIENT_TOKENS_PREFIX) {
                pipe.zcount(key, now, "+inf").zcount(key, now, now + 86_400);
                indexes.push((true, client.to_string()));
            } else if let Some(user) = key.strip_prefix(keys::USER_TOKENS_PREFIX) {
                pipe.zcount(key, now, "+inf");
                indexes.push((false, user.to_string()));
            }
        }
        if !indexes.is_empty() {
            let replies: Vec<u64> = pipe
                .query_async(&mut admin.conn)
                .await
                .map_err(redis_failed)?;
            let mut replies = replies.into_iter();
            for (is_client, name) in indexes {
                let live = replies.next().unwrap_or(0);
                if is_client {
                    counts.live_tokens += live;
                    counts.expiring += replies.next().unwrap_or(0);
                    if live > 0 {
                        counts.per_client.insert(name, live);
                    }
                } else if live > 0 {
                    counts.per_user.insert(name, live);
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if cli.json {
        let v = serde_json::json!({
            "clients": counts.clients,
            "live_tokens": counts.live_tokens,
            "refresh_families": counts.families,
            "expiring_within_a_day": counts.expiring,
            "tokens_per_client": counts.per_client,
            "tokens_per_user": counts.per_user,
            "keys": counts.keys,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("clients                 {}", counts.clients);
    println!("live access tokens      {}", counts.live_tokens);
    println!("refresh families        {}", counts.families);
    println!("expiring within a day   {}", counts.expiring);
    println!("oauth:* keys            {}", counts.keys);
    println!();
    print_counts("CLIENT", &counts.per_client);
    println!();
    print_counts("USER", &counts.per_user);
    Ok(())
}

/// Live tokens per `who` (a client or a user), as a table.
fn print_counts(who: &str, counts: &BTreeMap<String, u64>) {
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(name, n)| vec![name.clone(), n.to_string()])
        .collect();
    print_table(false, &serde_json::Value::Null, &[who, "TOKENS"], &rows);
}
