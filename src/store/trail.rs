//! Reading the audit trail and verify's usage counts, for the operator: page by page, so a
//! reader's memory stays constant however long the trail is and Redis answers each page in
//! well under a millisecond. A user's or a client's events are read through their index
//! streams (the same ids as `oauth:audit`), never by walking everyone's.

use super::admin::Admin;
use super::{StoreError, StoreResult, keys};
use crate::audit::Stored;

fn failed(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {e}"))
}

/// Which events to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    All,
    User(String),
    Client(String),
}

impl Source {
    fn key(&self) -> String {
        match self {
            Source::All => keys::AUDIT.to_string(),
            Source::User(u) => keys::audit_user(u),
            Source::Client(c) => keys::audit_client(c),
        }
    }
}

/// Where a page starts and ends: ids as the stream orders them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// The oldest time (ms) included.
    pub since_ms: Option<i64>,
    /// The newest time (ms) included.
    pub until_ms: Option<i64>,
}

/// One page of events and where the next page starts (none at the end).
pub struct Page {
    pub events: Vec<Stored>,
    pub next: Option<String>,
}

impl Admin {
    /// The trail is read from one stream (and its index streams); on a cluster it is written
    /// to a stream per bucket, which `audit` does not merge yet.
    fn one_trail(&self) -> StoreResult<()> {
        if self.conn.is_cluster() {
            return Err(StoreError::Unavailable(
                "reading the audit trail is not supported on Redis Cluster yet (its events are \
                 in one stream per bucket, oauth:audit:{tag}; webhooks and the log sink carry them)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Up to `count` entries of `source` within `window`, newest first (or oldest first),
    /// continuing after `cursor` (the previous page's `next`). Entries the trail has trimmed
    /// since an index named them are left out.
    pub async fn audit_page(
        &mut self,
        source: &Source,
        window: Window,
        cursor: Option<&str>,
        count: usize,
        newest_first: bool,
    ) -> StoreResult<Page> {
        self.one_trail()?;
        let oldest = window.since_ms.map_or("-".to_string(), |ms| ms.to_string());
        let newest = window
            .until_ms
            .map_or("+".to_string(), |ms| format!("{ms}-18446744073709551615"));
        let (command, first, last) = match (newest_first, cursor) {
            (true, Some(c)) => ("XREVRANGE", format!("({c}"), oldest),
            (true, None) => ("XREVRANGE", newest, oldest),
            (false, Some(c)) => ("XRANGE", format!("({c}"), newest),
            (false, None) => ("XRANGE", oldest, newest),
        };
        let reply: redis::Value = redis::cmd(command)
            .arg(source.key())
            .arg(&first)
            .arg(&last)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.conn)
            .await
            .map_err(failed)?;
        let entries = super::redis::stream::entries_of(reply);
        let next = (entries.len() >= count.max(1))
            .then(|| entries.last().map(|(id, _)| id.clone()))
            .flatten();
        let events = match source {
            Source::All => entries.into_iter().filter_map(|(_, s)| s).collect(),
            // An index entry names its event by id: fetched from the trail in one pipeline.
            _ => {
                let mut pipe = redis::pipe();
                for (id, _) in &entries {
                    pipe.cmd("XRANGE").arg(keys::AUDIT).arg(id).arg(id);
                }
                let replies: Vec<redis::Value> = if entries.is_empty() {
                    Vec::new()
                } else {
                    pipe.query_async(&mut self.conn).await.map_err(failed)?
                };
                replies
                    .into_iter()
                    .flat_map(super::redis::stream::entries_of)
                    .filter_map(|(_, s)| s)
                    .collect()
            }
        };
        Ok(Page { events, next })
    }

    /// The events of `source` newer than `after` (an id; none: from now on), oldest first:
    /// what `audit --follow` polls.
    pub async fn audit_after(
        &mut self,
        source: &Source,
        after: &str,
        count: usize,
    ) -> StoreResult<Page> {
        self.one_trail()?;
        self.audit_page(source, Window::default(), Some(after), count, false)
            .await
    }

    /// The id of the newest entry of `source` (`0-0` when it is empty).
    pub async fn audit_last_id(&mut self, source: &Source) -> StoreResult<String> {
        self.one_trail()?;
        let reply: redis::Value = redis::cmd("XREVRANGE")
            .arg(source.key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn)
            .await
            .map_err(failed)?;
        Ok(super::redis::stream::entries_of(reply)
            .into_iter()
            .next()
            .map_or("0-0".to_string(), |(id, _)| id))
    }

    /// How many entries the trail holds.
    pub async fn audit_len(&mut self) -> StoreResult<u64> {
        self.one_trail()?;
        redis::cmd("XLEN")
            .arg(keys::AUDIT)
            .query_async(&mut self.conn)
            .await
            .map_err(failed)
    }

    /// One page of an hour's usage counts (`HSCAN`): `(next cursor, (field, calls))`, where a
    /// next cursor of 0 ends the hour.
    pub async fn usage_page(
        &mut self,
        hour: &str,
        cursor: u64,
    ) -> StoreResult<(u64, Vec<(String, u64)>)> {
        let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(keys::usage(hour))
            .arg(cursor)
            .arg("COUNT")
            .arg(super::admin::SCAN_PAGE)
            .query_async(&mut self.conn)
            .await
            .map_err(failed)?;
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(field), Some(n)) = (items.next(), items.next()) {
            pairs.push((field, n.parse().unwrap_or(0)));
        }
        Ok((next, pairs))
    }
}
