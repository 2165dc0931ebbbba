//! Reading the audit trail and verify's usage counts, for the operator: page by page, so a
//! reader's memory stays constant however long the trail is and Redis answers each page in
//! well under a millisecond. A user's or a client's events are read through their index
//! streams (the same ids as `oauth:audit`), never by walking everyone's.

use super::admin::Admin;
use super::lanes::{At, LANES, events_at, lane_of_stream, lane_stream};
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

impl Window {
    /// The window as stream ids: its oldest and its newest end.
    fn bounds(&self) -> (String, String) {
        let oldest = self.since_ms.map_or("-".to_string(), |ms| ms.to_string());
        let newest = self
            .until_ms
            .map_or("+".to_string(), |ms| format!("{ms}-18446744073709551615"));
        (oldest, newest)
    }

    /// `XREVRANGE` (newest first) or `XRANGE` of `key` within the window, after `cursor` (an
    /// id, excluded) when there is one, `count` entries at most.
    fn range(
        &self,
        key: &str,
        cursor: Option<&str>,
        count: usize,
        newest_first: bool,
    ) -> redis::Cmd {
        let (oldest, newest) = self.bounds();
        let (command, first, last) = match (newest_first, cursor) {
            (true, Some(c)) => ("XREVRANGE", format!("({c}"), oldest),
            (true, None) => ("XREVRANGE", newest, oldest),
            (false, Some(c)) => ("XRANGE", format!("({c}"), newest),
            (false, None) => ("XRANGE", oldest, newest),
        };
        let mut cmd = redis::cmd(command);
        cmd.arg(key).arg(first).arg(last).arg("COUNT").arg(count);
        cmd
    }
}

/// One page of events and where the next page starts (none at the end).
pub struct Page {
    pub events: Vec<Stored>,
    pub next: Option<String>,
    /// Where the entries read end, whether or not the page is full: what `audit --follow`
    /// goes on from.
    pub last: Option<String>,
}

impl Admin {
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
        if self.conn.is_cluster() {
            return match source {
                Source::All => self.merged_page(window, cursor, count, newest_first).await,
                _ => {
                    self.indexed_page(source, window, cursor, count, newest_first)
                        .await
                }
            };
        }
        let reply: redis::Value = window
            .range(&source.key(), cursor, count.max(1), newest_first)
            .query_async(&mut self.conn)
            .await
            .map_err(failed)?;
        let entries = super::redis::stream::entries_of(reply);
        let last = entries.last().map(|(id, _)| id.clone());
        let next = (entries.len() >= count.max(1))
            .then(|| last.clone())
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
        Ok(Page { events, next, last })
    }

    /// The events of `source` newer than `after` (an id; none: from now on), oldest first:
    /// what `audit --follow` polls.
    pub async fn audit_after(
        &mut self,
        source: &Source,
        after: &str,
        count: usize,
    ) -> StoreResult<Page> {
        if self.conn.is_cluster() && *source == Source::All {
            return self.lanes_after(after, count).await;
        }
        self.audit_page(source, Window::default(), Some(after), count, false)
            .await
    }

    /// The id of the newest entry of `source` (`0-0` when it is empty).
    pub async fn audit_last_id(&mut self, source: &Source) -> StoreResult<String> {
        if self.conn.is_cluster() && *source == Source::All {
            return self.lanes_now().await;
        }
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
        if self.conn.is_cluster() {
            let mut pipe = redis::pipe();
            for lane in 0..LANES {
                pipe.cmd("XLEN").arg(lane_stream(lane));
            }
            let lengths: Vec<u64> = pipe.query_async(&mut self.conn).await.map_err(failed)?;
            return Ok(lengths.iter().sum());
        }
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

// ---- The trail on a Redis Cluster (its lanes: super::lanes) ---------------------------------
//
// A page is merged from the lanes with bounded reads: a few entries from each, then more only
// from the lanes whose last entry read could still be among the page's. Events of one lane keep
// their exact order; events of two lanes are ordered by the time their primaries gave them (to
// the millisecond; within one, by lane). So `--follow` goes on from where it is in each lane
// (`lanes:` and an id per lane), never from one merged place: an event that a lane records
// late, behind one already printed from another, is printed too.

/// What has been read of one lane for a page: its entries in the page's order, where the next
/// read starts, and whether the lane has nothing more.
struct Lane {
    from: String,
    done: bool,
    read: Vec<(At, Option<Stored>)>,
}

/// The prefix of a `--follow` place on a cluster: an id per lane follows, comma-separated.
const LANES_PREFIX: &str = "lanes:";

impl Admin {
    /// Where each lane of a cluster's trail ends now (`0-0` for an empty one).
    async fn lanes_now(&mut self) -> StoreResult<String> {
        let mut pipe = redis::pipe();
        for lane in 0..LANES {
            pipe.cmd("XREVRANGE")
                .arg(lane_stream(lane))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut self.conn).await.map_err(failed)?;
        let ids: Vec<String> = replies
            .into_iter()
            .map(|reply| {
                super::redis::stream::entries_of(reply)
                    .into_iter()
                    .next()
                    .map_or("0-0".to_string(), |(id, _)| id)
            })
            .collect();
        Ok(format!("{LANES_PREFIX}{}", ids.join(",")))
    }

    /// What each lane recorded after `after` (from [`Admin::lanes_now`] or a previous call),
    /// up to `count` entries from each, merged; `last` is where each lane then is.
    async fn lanes_after(&mut self, after: &str, count: usize) -> StoreResult<Page> {
        let count = count.max(1);
        let mut ids: Vec<String> = after
            .strip_prefix(LANES_PREFIX)
            .map(|ids| ids.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        if ids.len() != LANES {
            return Err(StoreError::Unavailable(format!(
                "{after:?} is not a place in a cluster's trail"
            )));
        }
        let mut pipe = redis::pipe();
        for (lane, id) in ids.iter().enumerate() {
            pipe.cmd("XRANGE")
                .arg(lane_stream(lane))
                .arg(format!("({id}"))
                .arg("+")
                .arg("COUNT")
                .arg(count);
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut self.conn).await.map_err(failed)?;
        let mut full = false;
        let mut read: Vec<(At, Option<Stored>)> = Vec::new();
        for (lane, reply) in replies.into_iter().enumerate() {
            let entries = super::redis::stream::entries_of(reply);
            full |= entries.len() >= count;
            if let Some((id, _)) = entries.last() {
                ids[lane].clone_from(id);
            }
            read.extend(
                entries
                    .into_iter()
                    .filter_map(|(id, stored)| Some((At::new(&id, lane)?, stored))),
            );
        }
        read.sort_by_key(|(at, _)| *at);
        let events = events_at(read);
        let last = Some(format!("{LANES_PREFIX}{}", ids.join(",")));
        Ok(Page {
            events,
            next: full.then(|| last.clone()).flatten(),
            last,
        })
    }

    /// A page of a cluster's whole trail, merged from its lanes.
    async fn merged_page(
        &mut self,
        window: Window,
        cursor: Option<&str>,
        count: usize,
        newest_first: bool,
    ) -> StoreResult<Page> {
        let count = count.max(1);
        let cursor = match cursor {
            Some(text) => Some(At::parse(text).ok_or_else(|| {
                StoreError::Unavailable(format!("{text:?} is not a place in a cluster's trail"))
            })?),
            None => None,
        };
        let (oldest, newest) = window.bounds();
        let (start, end) = if newest_first {
            (newest, oldest)
        } else {
            (oldest, newest)
        };
        // `a` comes before `b` in this page's order.
        let before = |a: &At, b: &At| if newest_first { a > b } else { a < b };
        let order = |a: &At, b: &At| {
            if newest_first { b.cmp(a) } else { a.cmp(b) }
        };
        let mut lanes: Vec<Lane> = (0..LANES)
            .map(|lane| {
                let from = match cursor {
                    None => start.clone(),
                    // The cursor's own id is read again in the lanes that place it after
                    // the cursor.
                    Some(c) if before(&c, &At { lane, ..c }) => c.id(),
                    Some(c) => format!("({}", c.id()),
                };
                Lane {
                    from,
                    done: false,
                    read: Vec::new(),
                }
            })
            .collect();
        // A few entries from every lane first (twice a fair share), then more from the lanes
        // that could still hold one of the page's, twice as many each round.
        let mut batch = (2 * count / LANES).max(2);
        loop {
            let kth = {
                let mut all: Vec<At> = lanes
                    .iter()
                    .flat_map(|l| l.read.iter().map(|(at, _)| *at))
                    .collect();
                if all.len() >= count {
                    let (_, kth, _) = all.select_nth_unstable_by(count - 1, order);
                    Some(*kth)
                } else {
                    None
                }
            };
            let wanted: Vec<usize> = (0..LANES)
                .filter(|&i| {
                    let lane = &lanes[i];
                    !lane.done
                        && match (lane.read.last(), kth) {
                            (Some((last, _)), Some(kth)) => before(last, &kth),
                            _ => true,
                        }
                })
                .collect();
            if wanted.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for &i in &wanted {
                pipe.cmd(if newest_first { "XREVRANGE" } else { "XRANGE" })
                    .arg(lane_stream(i))
                    .arg(&lanes[i].from)
                    .arg(&end)
                    .arg("COUNT")
                    .arg(batch);
            }
            let replies: Vec<redis::Value> =
                pipe.query_async(&mut self.conn).await.map_err(failed)?;
            for (i, reply) in wanted.into_iter().zip(replies) {
                let entries = super::redis::stream::entries_of(reply);
                let lane = &mut lanes[i];
                lane.done = entries.len() < batch;
                if let Some((id, _)) = entries.last() {
                    lane.from = format!("({id}");
                }
                lane.read
                    .extend(entries.into_iter().filter_map(|(id, stored)| {
                        let at = At::new(&id, i)?;
                        Some((at, stored))
                    }));
            }
            batch = (batch * 2).min(count);
        }
        let mut read: Vec<(At, Option<Stored>)> =
            lanes.into_iter().flat_map(|lane| lane.read).collect();
        read.sort_by(|(a, _), (b, _)| order(a, b));
        read.truncate(count);
        let last = read.last().map(|(at, _)| at.text());
        let next = (read.len() >= count).then(|| last.clone()).flatten();
        let events = events_at(read);
        Ok(Page { events, next, last })
    }

    /// A page of a user's or a client's events on a cluster: their index stream (in their
    /// slot) names each event by its lane's stream and its id there, read in one batch.
    async fn indexed_page(
        &mut self,
        source: &Source,
        window: Window,
        cursor: Option<&str>,
        count: usize,
        newest_first: bool,
    ) -> StoreResult<Page> {
        let count = count.max(1);
        let reply: redis::Value = window
            .range(&source.key(), cursor, count, newest_first)
            .query_async(&mut self.conn)
            .await
            .map_err(failed)?;
        let entries = super::redis::stream::pointers_of(reply);
        let last = entries.last().map(|(id, _)| id.clone());
        let next = (entries.len() >= count).then(|| last.clone()).flatten();
        let named: Vec<(usize, String, String)> = entries
            .into_iter()
            .filter_map(|(_, (stream, id))| Some((lane_of_stream(&stream)?, stream, id)))
            .collect();
        let mut pipe = redis::pipe();
        for (_, stream, id) in &named {
            pipe.cmd("XRANGE").arg(stream).arg(id).arg(id);
        }
        let replies: Vec<redis::Value> = if named.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut self.conn).await.map_err(failed)?
        };
        // An event the trail has trimmed since its index named it is left out.
        let events = named
            .into_iter()
            .zip(replies)
            .filter_map(|((lane, _, id), reply)| {
                let (_, stored) = super::redis::stream::entries_of(reply).into_iter().next()?;
                let mut stored = stored?;
                stored.id = At::new(&id, lane)?.text();
                Some(stored)
            })
            .collect();
        Ok(Page { events, next, last })
    }
}
