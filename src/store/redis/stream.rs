//! The audit trail's stream as the webhook consumer groups read it (`XREADGROUP`,
//! `XAUTOCLAIM`, `XACK`, `XINFO GROUPS`), and stream replies parsed into events.

use redis::aio::ConnectionManager;

use super::unavailable;
use crate::audit;
use crate::store::{GroupRead, StoreResult, keys};

/// What [`crate::store::Store::audit_deliveries`] reads for a consumer.
pub(super) async fn deliveries(
    conn: &mut ConnectionManager,
    read: &GroupRead<'_>,
) -> StoreResult<Vec<audit::Stored>> {
    let own = match group_read(conn, read, "0").await {
        Err(e) if e.code() == Some("NOGROUP") => {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(keys::AUDIT)
                .arg(read.group)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(conn)
                .await;
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(unavailable(e)),
                _ => Vec::new(),
            }
        }
        other => other.map_err(unavailable)?,
    };
    let mut found = delivered_or_lost(conn, read.group, own).await?;
    if found.is_empty() {
        let claimed: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(keys::AUDIT)
            .arg(read.group)
            .arg(read.consumer)
            .arg(read.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(read.count)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        let (entries, deleted) = autoclaimed(claimed);
        ack(conn, read.group, &deleted).await?;
        found = delivered_or_lost(conn, read.group, entries).await?;
    }
    if found.is_empty() {
        let fresh = group_read(conn, read, ">").await.map_err(unavailable)?;
        found = delivered_or_lost(conn, read.group, fresh).await?;
    }
    Ok(found)
}

/// Entries `group` has not acknowledged or not read yet.
pub(super) async fn backlog(conn: &mut ConnectionManager, group: &str) -> StoreResult<u64> {
    let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(keys::AUDIT)
        .query_async(conn)
        .await;
    let groups = match groups {
        // No trail yet: nothing is behind.
        Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => return Ok(0),
        other => other.map_err(unavailable)?,
    };
    for info in groups {
        let fields = fields_of(info);
        if fields.get("name").map(String::as_str) == Some(group) {
            let number = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
            return Ok(number("pending").unwrap_or(0) + number("lag").unwrap_or(0));
        }
    }
    Ok(0)
}

/// Splits entries a group read into those still in the trail and those it has trimmed
/// (read as entries without fields), which are acknowledged: there is nothing left to send.
async fn delivered_or_lost(
    conn: &mut ConnectionManager,
    group: &str,
    entries: Vec<(String, Option<audit::Stored>)>,
) -> StoreResult<Vec<audit::Stored>> {
    let mut lost = Vec::new();
    let mut kept = Vec::new();
    for (id, stored) in entries {
        match stored {
            Some(stored) => kept.push(stored),
            None => lost.push(id),
        }
    }
    if !lost.is_empty() {
        tracing::warn!(
            lost = lost.len(),
            "audit events trimmed before a webhook delivered them"
        );
        ack(conn, group, &lost).await?;
    }
    Ok(kept)
}

/// `XREADGROUP … STREAMS oauth:audit {from}`: `0` re-reads the consumer's pending entries,
/// `>` reads new ones.
async fn group_read(
    conn: &mut ConnectionManager,
    read: &GroupRead<'_>,
    from: &str,
) -> redis::RedisResult<Vec<(String, Option<audit::Stored>)>> {
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(read.group)
        .arg(read.consumer)
        .arg("COUNT")
        .arg(read.count)
        .arg("STREAMS")
        .arg(keys::AUDIT)
        .arg(from)
        .query_async(conn)
        .await?;
    // [[stream, [entry …]]], or nil when nothing is new.
    let streams = match reply {
        redis::Value::Array(streams) => streams,
        redis::Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| redis::Value::Array(vec![k, v]))
            .collect(),
        _ => Vec::new(),
    };
    Ok(streams
        .into_iter()
        .filter_map(|s| match s {
            redis::Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
            _ => None,
        })
        .flat_map(entries_of)
        .collect())
}

pub(super) async fn ack(
    conn: &mut ConnectionManager,
    group: &str,
    ids: &[String],
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: i64 = redis::cmd("XACK")
        .arg(keys::AUDIT)
        .arg(group)
        .arg(ids)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// `XAUTOCLAIM`'s answer: [next cursor, entries, deleted ids].
fn autoclaimed(reply: redis::Value) -> (Vec<(String, Option<audit::Stored>)>, Vec<String>) {
    let redis::Value::Array(mut parts) = reply else {
        return (Vec::new(), Vec::new());
    };
    let deleted = if parts.len() >= 3 {
        match parts.remove(2) {
            redis::Value::Array(ids) => ids.into_iter().filter_map(text).collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let entries = if parts.len() >= 2 {
        entries_of(parts.remove(1))
    } else {
        Vec::new()
    };
    (entries, deleted)
}

/// Stream entries (`[[id, [field, value, …]] …]`) as events; an entry the trail trimmed
/// (no fields) is `None`.
pub(crate) fn entries_of(value: redis::Value) -> Vec<(String, Option<audit::Stored>)> {
    let redis::Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let redis::Value::Array(mut parts) = entry else {
                return None;
            };
            if parts.is_empty() {
                return None;
            }
            let fields = if parts.len() > 1 {
                parts.remove(1)
            } else {
                redis::Value::Nil
            };
            let id = text(parts.remove(0))?;
            let stored = audit::Stored::from_fields(&id, &flat_fields(fields));
            Some((id, stored))
        })
        .collect()
}

/// A flat `[k, v, k, v …]` reply (or a RESP3 map) as text pairs.
fn flat_fields(value: redis::Value) -> Vec<(String, String)> {
    match value {
        redis::Value::Array(items) => {
            let mut items = items.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                if let (Some(k), Some(v)) = (text(k), text(v)) {
                    out.push((k, v));
                }
            }
            out
        }
        redis::Value::Map(pairs) => pairs
            .into_iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => Vec::new(),
    }
}

fn fields_of(value: redis::Value) -> std::collections::HashMap<String, String> {
    flat_fields(value).into_iter().collect()
}

fn text(value: redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        redis::Value::SimpleString(s) => Some(s),
        redis::Value::Int(n) => Some(n.to_string()),
        redis::Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}
