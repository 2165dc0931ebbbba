//! The store's admin part: what the operator commands do over the whole keyspace, from the
//! client side in small steps (SCAN pages, pipelined reads, one short script per record), so
//! Redis is never blocked: reading pages of keys with their types, values and TTLs (each refresh
//! family whole), and writing them back without undoing anything that happened since (no
//! record over a live one, nothing a tombstone names, indexes merged). Which record implies
//! which index entries and tombstones is the records' own declaration
//! ([`crate::records::layout`]), handed in as [`Layout`].

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

mod link;
pub use link::AdminConn;

use super::{StoreError, StoreResult, keys};

fn failed(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {e}"))
}

/// Keys asked for per SCAN call, members per index page, keys per pipelined batch.
pub const SCAN_PAGE: usize = 500;

/// A direct connection to the primary (or the cluster) for the operator commands: inspection
/// and keyspace-wide work, page by page.
pub struct Admin {
    pub conn: AdminConn,
}

impl Admin {
    pub async fn connect(settings: &crate::config::Settings) -> StoreResult<Self> {
        if let Some(cluster) = &settings.redis_cluster {
            let client = crate::store::redis::cluster_client(settings, cluster)?;
            let conn = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                client.get_async_connection(),
            )
            .await
            .map_err(|_| {
                StoreError::Unavailable("the Redis cluster did not answer within 5 s".into())
            })?
            .map_err(|e| StoreError::Unavailable(format!("cannot reach the Redis cluster: {e}")))?;
            let conn = AdminConn::cluster(conn).await.map_err(failed)?;
            return Ok(Self { conn });
        }
        let client = crate::store::redis::primary_client(settings)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach Redis: {e}")))?;
        // The services' timeouts: a stalled Redis is an error here too, never a hang.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(crate::store::redis::RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(crate::store::redis::CONNECT_TIMEOUT));
        let conn = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| StoreError::Unavailable("Redis did not answer within 5 s".into()))?
        .map_err(|e| StoreError::Unavailable(format!("cannot reach Redis: {e}")))?;
        Ok(Self {
            conn: AdminConn::Single(conn),
        })
    }

    /// The next page of keys matching `pattern` from `cursor` (start with 0): `(next cursor,
    /// keys)`, where a next cursor of 0 means the walk is over. For keyspace-wide work, page by
    /// page: Redis answers each page in well under a millisecond and memory stays constant.
    pub async fn scan_page(
        &mut self,
        cursor: u64,
        pattern: &str,
    ) -> StoreResult<(u64, Vec<String>)> {
        self.conn
            .scan(cursor, pattern, SCAN_PAGE)
            .await
            .map_err(failed)
    }

    /// Members of a sorted set with their scores, ranks `start..start + SCAN_PAGE`: a large
    /// index read in pages.
    pub async fn zset_page(&mut self, key: &str, start: isize) -> StoreResult<Vec<(String, f64)>> {
        self.conn
            .zrange_withscores(key, start, start + SCAN_PAGE as isize - 1)
            .await
            .map_err(failed)
    }

    /// Every key matching `pattern`, via SCAN (never KEYS: it would block a live server), for
    /// patterns that match few keys.
    pub async fn scan(&mut self, pattern: &str) -> StoreResult<Vec<String>> {
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
    pub async fn values(&mut self, keys: &[String]) -> StoreResult<Vec<Option<String>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<String>> = if self.conn.is_cluster() {
                // Keys of many slots: one GET each (sent together).
                let mut gets = redis::pipe();
                for key in chunk {
                    gets.get(key);
                }
                gets.query_async(&mut self.conn).await
            } else {
                self.conn.mget(chunk).await
            }
            .map_err(failed)?;
            out.extend(values);
        }
        Ok(out)
    }

    /// `(member, score)` of a sorted set.
    pub async fn zset(&mut self, key: &str) -> StoreResult<Vec<(String, f64)>> {
        self.conn
            .zrange_withscores(key, 0, -1)
            .await
            .map_err(failed)
    }

    /// How many keys the database holds (the total a keyspace walk's progress counts to).
    pub async fn dbsize(&mut self) -> StoreResult<u64> {
        self.conn.dbsize().await.map_err(failed)
    }

    /// Members of a sorted set.
    pub async fn zcard(&mut self, key: &str) -> StoreResult<u64> {
        self.conn.zcard(key).await.map_err(failed)
    }

    /// Remaining TTL in milliseconds; -1 persistent, -2 missing.
    pub async fn pttl(&mut self, key: &str) -> StoreResult<i64> {
        self.conn.pttl(key).await.map_err(failed)
    }
}

/// Members of a sorted set read or written per command: a large index is split into several
/// short commands instead of one long one.
pub const ZSET_PAGE: usize = 1_000;

/// A key with its type, value and remaining TTL, as a backup holds it.
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

impl Entry {
    /// The members (set, list), member/score or field/value pairs (zset, hash) as text.
    pub fn items(&self) -> Vec<String> {
        match &self.value {
            serde_json::Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What the layout says that keyspace-wide work needs ([`crate::records::layout`] answers).
pub trait Layout {
    /// The tombstones whose presence forbids writing `entry` back.
    fn tombstones(&self, entry: &Entry) -> Vec<String>;
    /// The index entries (index, member, score) the record implies; `created_at_ms` is when
    /// the backup began (a record without its own expiry is scored from its TTL then).
    fn indexes(&self, entry: &Entry, created_at_ms: i64) -> Vec<(String, String, i64)>;
    /// Whether `key` is an index whose members expire by their score.
    fn expires_by_score(&self, key: &str) -> bool;
    /// Whether the members of the index `key` stand for records ([`Layout::member_record`]).
    fn indexes_records(&self, key: &str) -> bool;
    /// The record a member of the index `index` stands for (to find members whose record is
    /// gone).
    fn member_record(&self, index: &str, member: &str) -> Option<String>;
}

/// What purging a page of keys removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Purged {
    /// Index entries past their expiry.
    pub expired: u64,
    /// Index entries whose record is gone.
    pub orphans: u64,
    /// Refresh families left empty.
    pub empty_families: u64,
}

/// One SCAN page of `oauth:*` keys: the next cursor (0 at the end) and the keys.
pub async fn scan_page(
    conn: &mut AdminConn,
    cursor: u64,
    count: usize,
) -> redis::RedisResult<(u64, Vec<String>)> {
    conn.scan(cursor, &format!("{}*", keys::PREFIX), count)
        .await
}

/// A refresh family read in one step: its members with their scores and its TTL, and every
/// refresh record it names with its value and TTL. Read apart, a family could be caught half
/// way through a rotation (two unused refresh tokens, or none); read whole it has exactly one,
/// the newest. KEYS: the family. ARGV: the refresh-record prefix. Loaded after
/// [`AdminConn::naming`] (`N`: a record's name where it is; its single-server name is
/// returned). On a cluster the records share their family's slot (their ids carry its bucket).
pub const READ_FAMILY: &str = r#"
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local ttl = redis.call('PTTL', KEYS[1])
local records = {}
for i = 1, #members, 2 do
  local m = members[i]
  if string.sub(m, 1, 2) == 'r:' then
    local k = ARGV[1] .. string.sub(m, 3)
    local v = redis.call('GET', N(k))
    if v then
      records[#records + 1] = k
      records[#records + 1] = v
      records[#records + 1] = redis.call('PTTL', N(k))
    end
  end
end
return {members, ttl, records}
"#;

/// One page of keys with type, value and TTL: two pipelined round trips, and one more for the
/// page's refresh families, each read whole ([`READ_FAMILY`]; refresh records are written with
/// their family, never on their own). A key that vanished between SCAN and read is skipped.
pub async fn read_batch(
    conn: &mut AdminConn,
    page: &[String],
    read_family_sha: &str,
) -> redis::RedisResult<Vec<Entry>> {
    let (families, page): (Vec<&String>, Vec<&String>) = page
        .iter()
        .filter(|k| !k.starts_with(keys::REFRESH_PREFIX) && !keys::is_trail(k))
        .partition(|k| k.starts_with(keys::FAMILY_PREFIX));
    let mut out = read_families(conn, &families, read_family_sha).await?;
    if page.is_empty() {
        return Ok(out);
    }
    let mut types = redis::pipe();
    for key in &page {
        types.cmd("TYPE").arg(*key);
    }
    let kinds: Vec<String> = types.query_async(conn).await?;
    let mut reads = redis::pipe();
    let mut wanted = Vec::new();
    for (key, kind) in page.into_iter().zip(kinds) {
        let read = match kind.as_str() {
            "string" => reads.cmd("GET").arg(key),
            // The first page; a larger index is read on in pages below.
            "zset" => reads
                .cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(ZSET_PAGE - 1)
                .arg("WITHSCORES"),
            "set" => reads.cmd("SMEMBERS").arg(key),
            "hash" => reads.cmd("HGETALL").arg(key),
            "list" => reads.cmd("LRANGE").arg(key).arg(0).arg(-1),
            _ => continue,
        };
        read.cmd("PTTL").arg(key);
        wanted.push((key, kind));
    }
    let values: Vec<redis::Value> = reads.query_async(conn).await?;
    out.reserve(wanted.len());
    for ((key, kind), pair) in wanted.into_iter().zip(values.chunks(2)) {
        let [value, ttl] = pair else { continue };
        let ttl_ms: i64 = redis::from_redis_value_ref(ttl).unwrap_or(-2);
        if ttl_ms == -2 {
            continue;
        }
        let value = match kind.as_str() {
            "string" => match redis::from_redis_value_ref::<Option<String>>(value) {
                Ok(Some(text)) => serde_json::Value::String(text),
                _ => continue,
            },
            _ => match redis::from_redis_value_ref::<Vec<String>>(value) {
                Ok(items) if !items.is_empty() => {
                    if kind == "zset" && items.len() / 2 == ZSET_PAGE {
                        // A large index: one line per page of members (restore merges them),
                        // so neither side ever holds a whole index.
                        let mut start = ZSET_PAGE;
                        out.push(Entry {
                            key: key.clone(),
                            kind: kind.clone(),
                            ttl_ms,
                            value: items.into_iter().map(serde_json::Value::String).collect(),
                        });
                        loop {
                            let page: Vec<String> = redis::cmd("ZRANGE")
                                .arg(key)
                                .arg(start)
                                .arg(start + ZSET_PAGE - 1)
                                .arg("WITHSCORES")
                                .query_async(conn)
                                .await?;
                            let len = page.len() / 2;
                            if len > 0 {
                                out.push(Entry {
                                    key: key.clone(),
                                    kind: kind.clone(),
                                    ttl_ms,
                                    value: page
                                        .into_iter()
                                        .map(serde_json::Value::String)
                                        .collect(),
                                });
                            }
                            if len < ZSET_PAGE {
                                break;
                            }
                            start += ZSET_PAGE;
                        }
                        continue;
                    }
                    items.into_iter().map(serde_json::Value::String).collect()
                }
                _ => continue,
            },
        };
        out.push(Entry {
            key: key.clone(),
            kind,
            ttl_ms,
            value,
        });
    }
    Ok(out)
}

/// The families of a page, each read whole in one script call (pipelined together), as
/// entries: the family (a line per [`ZSET_PAGE`] members) and then its refresh records.
async fn read_families(
    conn: &mut AdminConn,
    families: &[&String],
    sha: &str,
) -> redis::RedisResult<Vec<Entry>> {
    let mut out = Vec::new();
    if families.is_empty() {
        return Ok(out);
    }
    let mut calls = redis::pipe();
    for key in families {
        calls
            .cmd("EVALSHA")
            .arg(sha)
            .arg(1)
            .arg(*key)
            .arg(keys::REFRESH_PREFIX);
    }
    let answers: Vec<(Vec<String>, i64, Vec<redis::Value>)> = calls.query_async(conn).await?;
    for (key, (members, ttl_ms, records)) in families.iter().zip(answers) {
        if ttl_ms == -2 || members.is_empty() {
            continue;
        }
        for page in members.chunks(ZSET_PAGE * 2) {
            out.push(Entry {
                key: (*key).clone(),
                kind: "zset".into(),
                ttl_ms,
                value: page
                    .iter()
                    .cloned()
                    .map(serde_json::Value::String)
                    .collect(),
            });
        }
        for record in records.chunks(3) {
            let [k, v, t] = record else { continue };
            let (Ok(k), Ok(v), Ok(t)) = (
                redis::from_redis_value_ref::<String>(k),
                redis::from_redis_value_ref::<String>(v),
                redis::from_redis_value_ref::<i64>(t),
            ) else {
                continue;
            };
            if t == -2 {
                continue;
            }
            out.push(Entry {
                key: k,
                kind: "string".into(),
                ttl_ms: t,
                value: serde_json::Value::String(v),
            });
        }
    }
    Ok(out)
}

/// KEYS: the record, its tombstones (ARGV[3] of them), then the indexes it implies.
/// ARGV: value, ttl ms (or -1), number of tombstones, then member and score per index.
/// Writes the record only when no tombstone stands and no live record is there (a live one is
/// newer than any backup), with the index entries it implies; one atomic step per record.
const RESTORE_RECORD: &str = r#"
local tombstones = tonumber(ARGV[3])
for i = 2, tombstones + 1 do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 'revoked' end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'kept' end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl) else redis.call('SET', KEYS[1], ARGV[1]) end
for i = tombstones + 2, #KEYS do
  local a = 4 + 2 * (i - tombstones - 2)
  redis.call('ZADD', KEYS[i], 'NX', ARGV[a + 1], ARGV[a])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[i], ttl, 'NX')
    redis.call('PEXPIRE', KEYS[i], ttl, 'GT')
  end
end
return 'written'
"#;

/// KEYS: a sorted set, its tombstones. ARGV: ttl ms (or -1), then member and score pairs.
/// Merges the members in (never removing any, never lowering a score: scores are expiries)
/// unless a tombstone stands.
const RESTORE_MEMBERS: &str = r#"
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 'revoked' end
end
for a = 2, #ARGV, 2 do redis.call('ZADD', KEYS[1], 'GT', ARGV[a + 1], ARGV[a]) end
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl, 'NX')
  redis.call('PEXPIRE', KEYS[1], ttl, 'GT')
end
return 'written'
"#;

/// What restoring one entry did.
#[derive(Debug, Default)]
pub struct Restored {
    pub written: u64,
    /// A live record was there already (newer than the backup): left as it is.
    pub kept: u64,
    /// Revoked since the backup (a tombstone stands): not written back.
    pub revoked: u64,
}

/// One batch of entries, pipelined: each record written by `RESTORE_RECORD` (only where no
/// tombstone and no live record stands), each index page merged by `RESTORE_MEMBERS`.
///
/// On a cluster a record's index entries and some of its tombstones live in other slots:
/// first every index entry the batch implies is merged in (each in its own slot; an entry
/// before its record, as the store writes them) and the tombstones of other slots are looked
/// at (`apart`); then each record not revoked is written with the tombstones of its own
/// slot. An entry merged for a record that is then not written is left to readers and
/// `purge-expired`, as the store leaves one after a step that did not finish.
pub async fn write_batch(
    conn: &mut AdminConn,
    batch: &[(Entry, Option<i64>)],
    shas: &RestoreScripts,
    rules: &dyn Layout,
    created_at_ms: i64,
    tally: &mut Restored,
) -> redis::RedisResult<()> {
    use crate::slots::{cluster_name, slot};
    if batch.is_empty() {
        return Ok(());
    }
    let cluster = conn.is_cluster();
    let revoked = if cluster {
        apart(conn, batch, rules, created_at_ms).await?
    } else {
        vec![false; batch.len()]
    };
    let mut pipe = redis::pipe();
    let mut sent = 0;
    for ((entry, ttl), revoked) in batch.iter().zip(revoked) {
        if revoked {
            tally.revoked += 1;
            continue;
        }
        let mut stones = rules.tombstones(entry);
        let implied = if cluster {
            let home = slot(cluster_name(&entry.key).as_bytes());
            stones.retain(|stone| slot(cluster_name(stone).as_bytes()) == home);
            Vec::new()
        } else if entry.kind == "string" {
            rules.indexes(entry, created_at_ms)
        } else {
            Vec::new()
        };
        sent += usize::from(push_restore(
            &mut pipe, shas, entry, *ttl, &stones, &implied,
        ));
    }
    if sent > 0 {
        count_restored(pipe.query_async(conn).await?, tally);
    }
    Ok(())
}

/// On a cluster, the part of restoring a batch that lies outside the records' slots: the
/// index entries each record implies, merged in, and whether a tombstone of another slot
/// stands for each entry.
async fn apart(
    conn: &mut AdminConn,
    batch: &[(Entry, Option<i64>)],
    rules: &dyn Layout,
    created_at_ms: i64,
) -> redis::RedisResult<Vec<bool>> {
    use crate::slots::{cluster_name, slot};
    let mut pipe = redis::pipe();
    let mut elsewhere: Vec<Vec<usize>> = Vec::with_capacity(batch.len());
    let mut looked = 0;
    for (entry, ttl) in batch {
        if entry.kind == "string" {
            for (index, member, score) in rules.indexes(entry, created_at_ms) {
                pipe.cmd("ZADD")
                    .arg(&index)
                    .arg("NX")
                    .arg(score)
                    .arg(member)
                    .ignore();
                if let Some(ttl) = ttl.filter(|t| *t > 0) {
                    pipe.cmd("PEXPIRE").arg(&index).arg(ttl).arg("NX").ignore();
                    pipe.cmd("PEXPIRE").arg(&index).arg(ttl).arg("GT").ignore();
                }
            }
        }
        let home = slot(cluster_name(&entry.key).as_bytes());
        let mut mine = Vec::new();
        for stone in rules.tombstones(entry) {
            if slot(cluster_name(&stone).as_bytes()) != home {
                pipe.exists(&stone);
                mine.push(looked);
                looked += 1;
            }
        }
        elsewhere.push(mine);
    }
    let standing: Vec<bool> = pipe.query_async(conn).await?;
    Ok(elsewhere
        .iter()
        .map(|mine| {
            mine.iter()
                .any(|at| standing.get(*at).copied().unwrap_or(false))
        })
        .collect())
}

/// The command that restores `entry` (`ttl`: what is left of it, none for no expiry), given
/// the tombstones that forbid it and the index entries written with it in one step: a record
/// by `RESTORE_RECORD`, an index page merged by `RESTORE_MEMBERS`, a set merged as it is.
/// Returns whether a command was added (entries of other types are left out).
fn push_restore(
    pipe: &mut redis::Pipeline,
    shas: &RestoreScripts,
    entry: &Entry,
    ttl: Option<i64>,
    stones: &[String],
    implied: &[(String, String, i64)],
) -> bool {
    let ttl_ms = ttl.unwrap_or(-1);
    match entry.kind.as_str() {
        "string" => {
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(&shas.record)
                .arg(1 + stones.len() + implied.len())
                .arg(&entry.key)
                .arg(stones);
            for (index, _, _) in implied {
                cmd.arg(index);
            }
            cmd.arg(entry.value.as_str().unwrap_or_default())
                .arg(ttl_ms)
                .arg(stones.len());
            for (_, member, score) in implied {
                cmd.arg(member).arg(score);
            }
        }
        "zset" => {
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(&shas.members)
                .arg(1 + stones.len())
                .arg(&entry.key)
                .arg(stones)
                .arg(ttl_ms);
            for pair in entry.items().chunks(2) {
                if let [member, score] = pair {
                    cmd.arg(member).arg(score);
                }
            }
        }
        // Not in the gateway's layout; merged in as they are.
        "set" => {
            pipe.sadd(&entry.key, entry.items());
            if ttl_ms > 0 {
                pipe.pexpire(&entry.key, ttl_ms).ignore();
            }
        }
        _ => return false,
    }
    true
}

/// Counts what each restoring command answered.
fn count_restored(answers: Vec<redis::Value>, tally: &mut Restored) {
    for answer in answers {
        match redis::from_redis_value_ref::<String>(&answer).as_deref() {
            Ok("kept") => tally.kept += 1,
            Ok("revoked") => tally.revoked += 1,
            _ => tally.written += 1,
        }
    }
}

/// The restore scripts' SHA1s, loaded once.
pub struct RestoreScripts {
    record: String,
    members: String,
}

impl RestoreScripts {
    pub async fn load(conn: &mut AdminConn) -> redis::RedisResult<Self> {
        let load = |body: &'static str| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(body);
            cmd
        };
        Ok(Self {
            record: load(RESTORE_RECORD).query_async(conn).await?,
            members: load(RESTORE_MEMBERS).query_async(conn).await?,
        })
    }
}

impl Admin {
    /// One page of `purge-expired`: in the indexes of `page`, the entries past their expiry
    /// and those whose record is gone are removed, a page of members at a time; each step is
    /// one short command, and running it again is safe.
    pub async fn purge_page(
        &mut self,
        page: &[String],
        now: i64,
        layout: &dyn Layout,
        purged: &mut Purged,
    ) -> StoreResult<()> {
        let expiring: Vec<&String> = page.iter().filter(|k| layout.expires_by_score(k)).collect();
        if !expiring.is_empty() {
            let mut pipe = redis::pipe();
            for key in &expiring {
                pipe.zrembyscore(*key, "-inf", format!("({now}"));
            }
            let counts: Vec<u64> = pipe.query_async(&mut self.conn).await.map_err(failed)?;
            purged.expired += counts.iter().sum::<u64>();
        }
        for key in page {
            if !layout.indexes_records(key) {
                continue;
            }
            purged.orphans += self.remove_orphans(key, layout).await?;
            if key.starts_with(keys::FAMILY_PREFIX) {
                let left: u64 = self.conn.zcard(key).await.map_err(failed)?;
                if left == 0 {
                    purged.empty_families += 1;
                }
            }
        }
        Ok(())
    }

    /// Removes the members of the sorted set `index` whose record is gone, a page of members
    /// at a time; returns how many.
    async fn remove_orphans(&mut self, index: &str, layout: &dyn Layout) -> StoreResult<u64> {
        let mut removed = 0;
        let mut start = 0;
        loop {
            let page = self.zset_page(index, start).await?;
            let members: Vec<(String, String)> = page
                .iter()
                .filter_map(|(m, _)| Some((m.clone(), layout.member_record(index, m)?)))
                .collect();
            let mut pipe = redis::pipe();
            for (_, key) in &members {
                pipe.exists(key);
            }
            let exists: Vec<bool> = if members.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut self.conn).await.map_err(failed)?
            };
            let gone: Vec<&String> = members
                .iter()
                .zip(exists)
                .filter(|(_, live)| !live)
                .map(|((m, _), _)| m)
                .collect();
            if !gone.is_empty() {
                let n: u64 = self.conn.zrem(index, &gone).await.map_err(failed)?;
                removed += n;
            }
            if page.len() < SCAN_PAGE {
                return Ok(removed);
            }
            // The removed members shifted the ranks after them.
            start += (page.len() - gone.len()) as isize;
        }
    }
}
