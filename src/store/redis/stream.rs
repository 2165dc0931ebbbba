//! The audit trail's stream as the webhook consumer groups read it (`XREADGROUP`,
//! `XAUTOCLAIM`, `XACK`, `XINFO GROUPS`), and stream replies parsed into events.

use redis::aio::ConnectionLike;

use super::unavailable;
use crate::audit;
use crate::store::lanes::{At, LANES, events_at, lane_stream};
use crate::store::{GroupRead, StoreResult};

/// What [`crate::store::Store::audit_deliveries`] reads for a consumer.
pub(super) async fn deliveries<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    read: &GroupRead<'_>,
) -> StoreResult<Vec<audit::Stored>> {
    let own = match group_read(conn, stream, read, "0").await {
        Err(e) if e.code() == Some("NOGROUP") => {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
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
    let mut found = delivered_or_lost(conn, stream, read.group, own).await?;
    if found.is_empty() {
        let claimed: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
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
        ack(conn, stream, read.group, &deleted).await?;
        found = delivered_or_lost(conn, stream, read.group, entries).await?;
    }
    if found.is_empty() {
        let fresh = group_read(conn, stream, read, ">")
            .await
            .map_err(unavailable)?;
        found = delivered_or_lost(conn, stream, read.group, fresh).await?;
    }
    Ok(found)
}

/// [`deliveries`] on a cluster: the same consumer group on every lane of the trail
/// (crate::store::lanes), read concurrently, merged in the trail's order, ids as `ms-seq@lane`.
/// A lane that cannot be read now (its primary failing over) is read on a later round.
pub(super) async fn lane_deliveries<C: ConnectionLike + Clone + Send>(
    conn: C,
    read: &GroupRead<'_>,
) -> StoreResult<Vec<audit::Stored>> {
    use futures_util::StreamExt;
    let rounds: Vec<StoreResult<Vec<(At, audit::Stored)>>> = futures_util::stream::iter(0..LANES)
        .map(|lane| {
            let mut conn = conn.clone();
            async move {
                let found = deliveries(&mut conn, &lane_stream(lane), read).await?;
                Ok(found
                    .into_iter()
                    .filter_map(|stored| Some((At::new(&stored.id, lane)?, stored)))
                    .collect())
            }
        })
        .buffer_unordered(LANES_IN_FLIGHT)
        .collect()
        .await;
    let mut found = Vec::new();
    let mut failure = None;
    for round in rounds {
        match round {
            Ok(lane) => found.extend(lane),
            Err(e) => failure = Some(e),
        }
    }
    if let (true, Some(e)) = (found.is_empty(), failure) {
        return Err(e);
    }
    found.sort_by_key(|(at, _)| *at);
    Ok(events_at(
        found
            .into_iter()
            .map(|(at, stored)| (at, Some(stored)))
            .collect(),
    ))
}

/// [`ack`] on a cluster: each id (`ms-seq@lane`) acknowledged in its lane.
pub(super) async fn lane_ack<C: ConnectionLike>(
    conn: &mut C,
    group: &str,
    ids: &[String],
) -> StoreResult<()> {
    let mut by_lane: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for at in ids.iter().filter_map(|id| At::parse(id)) {
        by_lane.entry(at.lane).or_default().push(at.id());
    }
    for (lane, ids) in by_lane {
        ack(conn, &lane_stream(lane), group, &ids).await?;
    }
    Ok(())
}

/// [`backlog`] on a cluster: every lane's, read concurrently.
pub(super) async fn lane_backlog<C: ConnectionLike + Clone + Send>(
    conn: C,
    group: &str,
) -> StoreResult<u64> {
    use futures_util::StreamExt;
    let lanes: Vec<StoreResult<u64>> = futures_util::stream::iter(0..LANES)
        .map(|lane| {
            let mut conn = conn.clone();
            async move { backlog(&mut conn, &lane_stream(lane), group).await }
        })
        .buffer_unordered(LANES_IN_FLIGHT)
        .collect()
        .await;
    lanes.into_iter().sum()
}

/// Lanes read at once by [`lane_deliveries`].
const LANES_IN_FLIGHT: usize = 32;

/// Entries `group` has not acknowledged or not read yet.
pub(super) async fn backlog<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> StoreResult<u64> {
    let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
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
async fn delivered_or_lost<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
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
        ack(conn, stream, group, &lost).await?;
    }
    Ok(kept)
}

/// `XREADGROUP … STREAMS {stream} {from}`: `0` re-reads the consumer's pending entries,
/// `>` reads new ones.
async fn group_read<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
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
        .arg(stream)
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

pub(super) async fn ack<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
    ids: &[String],
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: i64 = redis::cmd("XACK")
        .arg(stream)
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
    id_and_fields(value)
        .map(|(id, fields)| {
            let stored = audit::Stored::from_fields(&id, &flat_fields(fields));
            (id, stored)
        })
        .collect()
}

/// The entries of an index stream on a cluster: each entry's id and the event it names (the
/// stream of the event's lane and its id there, fields `s` and `i`).
pub(crate) fn pointers_of(value: redis::Value) -> Vec<(String, (String, String))> {
    id_and_fields(value)
        .filter_map(|(id, fields)| {
            let mut fields = fields_of(fields);
            Some((id, (fields.remove("s")?, fields.remove("i")?)))
        })
        .collect()
}

/// A stream reply's entries as (id, fields), the fields nil for an entry without any.
fn id_and_fields(value: redis::Value) -> impl Iterator<Item = (String, redis::Value)> {
    let entries = match value {
        redis::Value::Array(entries) => entries,
        _ => Vec::new(),
    };
    entries.into_iter().filter_map(|entry| {
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
        Some((text(parts.remove(0))?, fields))
    })
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
