//! What the operator commands share: a direct Redis connection for inspection (SCAN, types,
//! TTLs), and output as aligned tables for people or JSON (`--json`) for scripts.
//! Changes that other services must hear about (revocations) go through the `Store`'s
//! atomic scripts instead, so every verify replica is told.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::CliError;

/// Keys asked for per SCAN call, members per index page, keys per pipelined batch.
pub const SCAN_PAGE: usize = 500;

pub struct Admin {
    pub conn: MultiplexedConnection,
}

impl Admin {
    pub async fn connect(settings: &crate::config::Settings) -> Result<Self, CliError> {
        let client = crate::store::redis::primary_client(settings)
            .await
            .map_err(|e| CliError::Failed(format!("cannot reach Redis: {e}")))?;
        // The services' timeouts: a stalled Redis is an error here too, never a hang.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(crate::store::redis::RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(crate::store::redis::CONNECT_TIMEOUT));
        let conn = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| CliError::Failed("Redis did not answer within 5 s".into()))?
        .map_err(|e| CliError::Failed(format!("cannot reach Redis: {e}")))?;
        Ok(Self { conn })
    }

    /// The next page of keys matching `pattern` from `cursor` (start with 0): `(next cursor,
    /// keys)`, where a next cursor of 0 means the walk is over. For keyspace-wide work, page by
    /// page: Redis answers each page in well under a millisecond and memory stays constant.
    pub async fn scan_page(
        &mut self,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>), CliError> {
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .query_async(&mut self.conn)
            .await
            .map_err(redis_failed)
    }

    /// Members of a sorted set with their scores, ranks `start..start + SCAN_PAGE`: a large
    /// index read in pages.
    pub async fn zset_page(
        &mut self,
        key: &str,
        start: isize,
    ) -> Result<Vec<(String, f64)>, CliError> {
        self.conn
            .zrange_withscores(key, start, start + SCAN_PAGE as isize - 1)
            .await
            .map_err(redis_failed)
    }

    /// Every key matching `pattern`, via SCAN (never KEYS: it would block a live server), for
    /// patterns that match few keys.
    pub async fn scan(&mut self, pattern: &str) -> Result<Vec<String>, CliError> {
        let mut keys = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, page) = self.scan_page(cursor, pattern).await?;
            keys.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// String values of `keys`, in order (MGET in batches).
    pub async fn values(&mut self, keys: &[String]) -> Result<Vec<Option<String>>, CliError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<String>> = self.conn.mget(chunk).await.map_err(redis_failed)?;
            out.extend(values);
        }
        Ok(out)
    }

    /// `(member, score)` of a sorted set.
    pub async fn zset(&mut self, key: &str) -> Result<Vec<(String, f64)>, CliError> {
        self.conn
            .zrange_withscores(key, 0, -1)
            .await
            .map_err(redis_failed)
    }

    /// Remaining TTL in milliseconds; -1 persistent, -2 missing.
    pub async fn pttl(&mut self, key: &str) -> Result<i64, CliError> {
        self.conn.pttl(key).await.map_err(redis_failed)
    }
}

pub fn redis_failed(e: redis::RedisError) -> CliError {
    CliError::Failed(format!("Redis: {e}"))
}

/// Prints rows as an aligned table (people) or the JSON value (scripts).
pub fn print_table(json: bool, value: &serde_json::Value, headers: &[&str], rows: &[Vec<String>]) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// "in 29d 23h", "in 4m", "expired 2h ago".
pub fn relative(seconds_from_now: i64) -> String {
    let s = seconds_from_now.unsigned_abs();
    let text = if s >= 86_400 {
        format!("{}d {}h", s / 86_400, (s % 86_400) / 3_600)
    } else if s >= 3_600 {
        format!("{}h {}m", s / 3_600, (s % 3_600) / 60)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    };
    if seconds_from_now >= 0 {
        format!("in {text}")
    } else {
        format!("expired {text} ago")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_times() {
        assert_eq!(super::relative(90_000), "in 1d 1h");
        assert_eq!(super::relative(125), "in 2m");
        assert_eq!(super::relative(-7_300), "expired 2h 1m ago");
    }
}
