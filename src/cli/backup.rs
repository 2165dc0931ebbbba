//! `mcp-gateway backup` / `restore`: every `oauth:*` key with its type, value and remaining
//! TTL, as JSON. The backup is read by one Lua script, so it is a consistent snapshot even
//! while the gateway runs; restore is idempotent (each key replaced whole, in a
//! transaction) and keeps TTLs, less the time elapsed since the backup.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::admin::redis_failed;
use super::{Cli, CliError, CliResult};
use crate::clock::{Clock, SystemClock};

const SNAPSHOT: &str = r#"
local out = {}
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', 'oauth:*', 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local t = redis.call('TYPE', key)['ok']
    local v
    if t == 'string' then v = redis.call('GET', key)
    elseif t == 'zset' then v = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    elseif t == 'set' then v = redis.call('SMEMBERS', key)
    elseif t == 'hash' then v = redis.call('HGETALL', key)
    elseif t == 'list' then v = redis.call('LRANGE', key, 0, -1)
    end
    if v then
      table.insert(out, {key = key, type = t, ttl_ms = redis.call('PTTL', key), value = v})
    end
  end
until cursor == '0'
return cjson.encode(out)
"#;

#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    pub version: u32,
    pub created_at_ms: i64,
    pub keys: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Remaining TTL when backed up; -1 = no expiry.
    pub ttl_ms: i64,
    /// string: the text; zset: [member, score, …]; set/list: members; hash: [field, value, …].
    pub value: serde_json::Value,
}

fn now_ms() -> i64 {
    SystemClock.now_unix() * 1000
}

pub async fn backup(cli: &Cli, out: Option<&Path>) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let created_at_ms = now_ms();
    let json: String = redis::Script::new(SNAPSHOT)
        .invoke_async(&mut admin.conn)
        .await
        .map_err(redis_failed)?;
    // cjson writes an empty table as {}.
    let keys: Vec<Entry> = if json == "{}" {
        Vec::new()
    } else {
        serde_json::from_str(&json)
            .map_err(|e| CliError::Failed(format!("unreadable snapshot: {e}")))?
    };
    let backup = Backup {
        version: 1,
        created_at_ms,
        keys,
    };
    let text =
        serde_json::to_string_pretty(&backup).map_err(|e| CliError::Failed(e.to_string()))?;
    match out {
        Some(path) => {
            // The backup holds hashed secrets and token records: private like the env file.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            use std::io::Write;
            options
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("backed up {} keys to {}", backup.keys.len(), path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

pub async fn restore(cli: &Cli, file: &Path, dry_run: bool) -> CliResult {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", file.display())))?;
    let backup: Backup = serde_json::from_str(&text)
        .map_err(|e| CliError::Failed(format!("{} is not a backup: {e}", file.display())))?;
    if backup.version != 1 {
        return Err(CliError::Failed(format!(
            "unsupported backup version {}",
            backup.version
        )));
    }
    let elapsed = (now_ms() - backup.created_at_ms).max(0);
    let settings = cli.settings()?;
    let mut admin = if dry_run {
        None
    } else {
        Some(cli.admin(&settings).await?)
    };
    let (mut restored, mut expired) = (0, 0);
    for entry in &backup.keys {
        if !entry.key.starts_with("oauth:") {
            return Err(CliError::Failed(format!(
                "refusing key outside oauth:*: {}",
                entry.key
            )));
        }
        let ttl = if entry.ttl_ms < 0 {
            None
        } else {
            Some(entry.ttl_ms - elapsed)
        };
        if ttl.is_some_and(|t| t <= 0) {
            expired += 1;
            continue;
        }
        restored += 1;
        let Some(admin) = admin.as_mut() else {
            println!(
                "would restore {} ({}, ttl {})",
                entry.key,
                entry.kind,
                ttl.map_or("none".into(), |t| format!("{}s", t / 1000))
            );
            continue;
        };
        let mut pipe = redis::pipe();
        pipe.atomic().del(&entry.key).ignore();
        let items: Vec<String> = match &entry.value {
            serde_json::Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
            _ => Vec::new(),
        };
        match entry.kind.as_str() {
            "string" => {
                let v = entry
                    .value
                    .as_str()
                    .ok_or_else(|| CliError::Failed(format!("{}: bad string value", entry.key)))?;
                pipe.set(&entry.key, v).ignore();
            }
            "zset" => {
                let pairs: Vec<(f64, String)> = items
                    .chunks(2)
                    .filter_map(|c| Some((c.get(1)?.parse().ok()?, c[0].clone())))
                    .collect();
                if !pairs.is_empty() {
                    pipe.zadd_multiple(&entry.key, &pairs).ignore();
                }
            }
            "set" if !items.is_empty() => {
                pipe.sadd(&entry.key, &items).ignore();
            }
            "list" if !items.is_empty() => {
                pipe.rpush(&entry.key, &items).ignore();
            }
            "hash" if !items.is_empty() => {
                let pairs: Vec<(String, String)> = items
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect();
                pipe.hset_multiple(&entry.key, &pairs).ignore();
            }
            "set" | "list" | "hash" => {}
            other => {
                return Err(CliError::Failed(format!(
                    "{}: unsupported type {other}",
                    entry.key
                )));
            }
        }
        if let Some(ms) = ttl {
            pipe.pexpire(&entry.key, ms).ignore();
        }
        let _: () = pipe
            .query_async(&mut admin.conn)
            .await
            .map_err(redis_failed)?;
    }
    let verb = if dry_run { "would restore" } else { "restored" };
    println!("{verb} {restored} keys; skipped {expired} that have expired since the backup");
    Ok(())
}
