//! `mcp-gateway backup` / `restore`: every `oauth:*` key with its type, value and remaining
//! TTL, one JSON line per key.
//!
//! **Backup** walks the keyspace from here with SCAN cursors and small pipelined batches, and
//! writes each batch as it goes: Redis is never asked for more than a page at a time (no
//! script, no long command) and the CLI's memory does not grow with the number of keys. The
//! result is a *fuzzy* snapshot: each key is read atomically (and each refresh family with all
//! its refresh records in one step, so a grant is never caught half way through a rotation:
//! it restores with exactly one usable refresh token, the newest), but keys are read over the
//! span of the backup. Two things make that restore a consistent state:
//! - the indexes (per user, per client, per family) are completed from the records on restore,
//!   so a record written while the backup ran is never left unindexed;
//! - the backup listens to the revocation channel while it runs and lists, in its last line,
//!   every token and refresh family revoked meanwhile: restore leaves those out, so a
//!   revocation is never undone by a backup that was running when it happened.
//!
//! The last line also marks the file complete (a backup cut short is refused by restore), and
//! a backup to a file is written under a temporary name and renamed at the end.
//!
//! **Restore** reads the file twice, streaming: the first pass checks every line (nothing is
//! changed if any is bad), the second writes in pipelined batches, each record in one atomic
//! step that never undoes what happened since the backup:
//! - a record is written only where none is (a live record is newer than any backup: a refresh
//!   token rotated since stays used, a re-consented scope stays);
//! - a token or refresh family revoked since the backup is never written back: every
//!   revocation leaves a tombstone (`oauth:token_revoked:{jti}`, `oauth:family_revoked:{id}`)
//!   for as long as what it revoked would have lived, and the record's step checks it; a
//!   revocation made while the restore runs either comes first (tombstone) or deletes what
//!   was written;
//! - indexes (sorted sets, a page of 1,000 members per line) are merged in, never replaced.
//!
//! TTLs are kept less the time since the backup, and running it twice gives the same state.
//! Into an empty store (the store lost everything) there are no tombstones: revocations made
//! between the backup and the loss cannot be known and are not re-applied. Backups of version
//! 1 (one JSON document) are still read.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::admin::redis_failed;
use super::{Cli, CliError, CliResult};
use crate::store::keys;

/// Keys asked for per SCAN page.
const BATCH: usize = 500;
/// Keys written per restore transaction: an index of 10,000 entries is one ZADD, so batches
/// stay small to keep each transaction to a few milliseconds of Redis time.
const RESTORE_BATCH: usize = 100;
/// Members of a sorted set read or written per command: a large index is split into several
/// short commands instead of one long one.
const ZSET_PAGE: usize = 1_000;

/// What a backup's first line says.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    pub created_at_ms: i64,
    #[serde(default)]
    pub consistency: String,
}

/// A backup of version 1: one JSON document (read for restore only).
#[derive(Debug, Deserialize)]
struct BackupV1 {
    created_at_ms: i64,
    keys: Vec<Entry>,
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

impl Entry {
    /// The members (set, list), member/score or field/value pairs (zset, hash) as text.
    fn items(&self) -> Vec<String> {
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

/// A backup's last line.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Trailer {
    /// Number of key lines before it.
    pub end: u64,
    /// Access tokens (jti) revoked while the backup ran: not restored.
    #[serde(default)]
    pub revoked_tokens: Vec<String>,
    /// Refresh families revoked while the backup ran: not restored.
    #[serde(default)]
    pub revoked_families: Vec<String>,
    /// Every revocation published before this time (Unix ms) is listed above.
    #[serde(default)]
    pub heard_until_ms: i64,
}

const CONSISTENCY: &str = "fuzzy: each key read atomically over the span of the backup, \
each refresh family with its refresh records in one step; indexes are completed from the records on restore; tokens and families revoked while the \
backup ran are listed in the last line and not restored";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn failed(what: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::Failed(format!("cannot write {what}: {e}"))
}

pub async fn backup(cli: &Cli, out: Option<&Path>) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    // Listen before reading anything: whatever is revoked from here on is in the trailer.
    let client = crate::store::redis::primary_client(&settings)
        .await
        .map_err(|e| CliError::Failed(format!("cannot reach Redis: {e}")))?;
    let mut pubsub = tokio::time::timeout(
        crate::store::redis::CONNECT_TIMEOUT * 5,
        client.get_async_pubsub(),
    )
    .await
    .map_err(|_| CliError::Failed("Redis did not answer within 5 s".into()))?
    .map_err(redis_failed)?;
    pubsub
        .subscribe(keys::REVOCATION_CHANNEL)
        .await
        .map_err(redis_failed)?;
    let mut messages = pubsub.into_on_message();
    let mut heard = Heard::default();
    let take_messages = |messages: &mut (dyn futures_util::Stream<Item = redis::Msg> + Unpin),
                         heard: &mut Heard| {
        use futures_util::FutureExt;
        while let Some(Some(msg)) = messages.next().now_or_never() {
            heard.note(&msg);
        }
    };

    let (target, partial): (Box<dyn Write>, Option<(PathBuf, PathBuf)>) = match out {
        Some(path) => {
            let tmp = path.with_extension("partial");
            // The backup holds hashed secrets and token records: private like the env file.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file = options
                .open(&tmp)
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", tmp.display())))?;
            (Box::new(file), Some((tmp, path.to_path_buf())))
        }
        None => (Box::new(std::io::stdout().lock()), None),
    };
    let mut w = BufWriter::new(target);
    let header = Header {
        version: 2,
        created_at_ms: now_ms(),
        consistency: CONSISTENCY.into(),
    };
    w.write_all(json_line(&header).as_bytes())
        .map_err(failed("the backup"))?;

    let read_family_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(READ_FAMILY)
        .query_async(&mut admin.conn)
        .await
        .map_err(redis_failed)?;
    // Lines, which the trailer counts, and keys (a large index takes several lines).
    let (mut written, mut keys_written) = (0u64, 0u64);
    let mut last_key = String::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", keys::PREFIX))
            .arg("COUNT")
            .arg(BATCH)
            .query_async(&mut admin.conn)
            .await
            .map_err(redis_failed)?;
        for entry in read_batch(&mut admin.conn, &page, &read_family_sha).await? {
            w.write_all(json_line(&entry).as_bytes())
                .map_err(failed("the backup"))?;
            written += 1;
            if entry.key != last_key {
                keys_written += 1;
                last_key.clone_from(&entry.key);
            }
        }
        take_messages(&mut messages, &mut heard);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // A revocation published just before the last page was read may still be on its way: a
    // marker published now arrives after every one of them.
    let heard_until_ms = now_ms();
    let marker = format!("{}{}", keys::MARKER_MESSAGE, crate::token::random_token());
    let _: i64 = redis::cmd("PUBLISH")
        .arg(keys::REVOCATION_CHANNEL)
        .arg(&marker)
        .query_async(&mut admin.conn)
        .await
        .map_err(redis_failed)?;
    let wait = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(msg) = messages.next().await {
            if heard.note(&msg).as_deref() == Some(marker.as_str()) {
                return true;
            }
        }
        false
    })
    .await;
    if wait != Ok(true) {
        return Err(CliError::Failed(
            "the revocation channel did not confirm the end of the backup; run it again".into(),
        ));
    }
    let mut trailer = Trailer {
        heard_until_ms,
        end: written,
        revoked_tokens: heard.tokens.into_iter().collect(),
        revoked_families: heard.families.into_iter().collect(),
    };
    trailer.revoked_tokens.sort();
    trailer.revoked_families.sort();
    w.write_all(json_line(&trailer).as_bytes())
        .map_err(failed("the backup"))?;
    let file = w
        .into_inner()
        .map_err(|e| CliError::Failed(format!("cannot write the backup: {e}")))?;
    drop(file);
    if let Some((tmp, path)) = partial {
        std::fs::rename(&tmp, &path)
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
        eprintln!(
            "backed up {keys_written} keys to {} ({} revoked while it ran, left out)",
            path.display(),
            trailer.revoked_tokens.len() + trailer.revoked_families.len()
        );
    }
    Ok(())
}

/// A refresh family read in one step: its members with their scores and its TTL, and every
/// refresh record it names with its value and TTL. Read apart, a family could be caught half
/// way through a rotation (two unused refresh tokens, or none); read whole it has exactly one,
/// the newest. KEYS: the family. ARGV: the refresh-record prefix.
const READ_FAMILY: &str = r#"
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local ttl = redis.call('PTTL', KEYS[1])
local records = {}
for i = 1, #members, 2 do
  local m = members[i]
  if string.sub(m, 1, 2) == 'r:' then
    local k = ARGV[1] .. string.sub(m, 3)
    local v = redis.call('GET', k)
    if v then
      records[#records + 1] = k
      records[#records + 1] = v
      records[#records + 1] = redis.call('PTTL', k)
    end
  end
end
return {members, ttl, records}
"#;

/// What the revocation channel said while a backup ran.
#[derive(Default)]
struct Heard {
    tokens: HashSet<String>,
    families: HashSet<String>,
}

impl Heard {
    /// Notes a revocation; returns a marker's text (markers revoke nothing).
    fn note(&mut self, msg: &redis::Msg) -> Option<String> {
        let payload = msg.get_payload::<String>().ok()?;
        if payload.starts_with(keys::MARKER_MESSAGE) {
            return Some(payload);
        }
        match payload.strip_prefix(keys::FAMILY_REVOCATION_MESSAGE) {
            Some(family) => self.families.insert(family.to_string()),
            None => self.tokens.insert(payload),
        };
        None
    }
}

/// One page of keys with type, value and TTL: two pipelined round trips, and one more for the
/// page's refresh families, each read whole ([`READ_FAMILY`]; refresh records are written with
/// their family, never on their own). A key that vanished between SCAN and read is skipped.
async fn read_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    page: &[String],
    read_family_sha: &str,
) -> CliResult<Vec<Entry>> {
    let (families, page): (Vec<&String>, Vec<&String>) = page
        .iter()
        .filter(|k| !k.starts_with(keys::REFRESH_PREFIX))
        .partition(|k| k.starts_with(keys::FAMILY_PREFIX));
    let mut out = read_families(conn, &families, read_family_sha).await?;
    if page.is_empty() {
        return Ok(out);
    }
    let mut types = redis::pipe();
    for key in &page {
        types.cmd("TYPE").arg(*key);
    }
    let kinds: Vec<String> = types.query_async(conn).await.map_err(redis_failed)?;
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
    let values: Vec<redis::Value> = reads.query_async(conn).await.map_err(redis_failed)?;
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
                                .await
                                .map_err(redis_failed)?;
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
    conn: &mut redis::aio::MultiplexedConnection,
    families: &[&String],
    sha: &str,
) -> CliResult<Vec<Entry>> {
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
    let answers: Vec<(Vec<String>, i64, Vec<redis::Value>)> =
        calls.query_async(conn).await.map_err(redis_failed)?;
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

/// One JSON line.
fn json_line<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string(value).unwrap_or_default();
    s.push('\n');
    s
}

/// The entries of a backup file, streamed, with its creation time and trailer.
enum Source {
    /// Version 2: the header is read; lines follow.
    Lines {
        created_at_ms: i64,
        lines: std::io::Lines<BufReader<std::fs::File>>,
    },
    /// Version 1: the whole document, read at once.
    Whole(BackupV1),
}

fn unreadable(file: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Failed(format!("{} is not a backup: {e}", file.display()))
}

fn open(file: &Path) -> CliResult<Source> {
    let f = std::fs::File::open(file)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", file.display())))?;
    let mut reader = BufReader::new(f);
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .map_err(|e| unreadable(file, e))?;
    if let Ok(header) = serde_json::from_str::<Header>(&first) {
        if header.version != 2 {
            return Err(CliError::Failed(format!(
                "unsupported backup version {}",
                header.version
            )));
        }
        return Ok(Source::Lines {
            created_at_ms: header.created_at_ms,
            lines: reader.lines(),
        });
    }
    let text = std::fs::read_to_string(file).map_err(|e| unreadable(file, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| unreadable(file, e))?;
    if value["version"] != 1 {
        return Err(CliError::Failed(format!(
            "unsupported backup version {}",
            value["version"]
        )));
    }
    Ok(Source::Whole(
        serde_json::from_value(value).map_err(|e| unreadable(file, e))?,
    ))
}

/// The entries of a backup, one at a time; after the last, [`Entries::finish`] gives the
/// trailer (an error if the file was cut short).
struct Entries<'a> {
    file: &'a Path,
    created_at_ms: i64,
    inner: EntriesInner,
    seen: u64,
    trailer: Option<Trailer>,
}

enum EntriesInner {
    Lines(std::io::Lines<BufReader<std::fs::File>>),
    Whole(std::vec::IntoIter<Entry>),
}

impl<'a> Entries<'a> {
    fn open(file: &'a Path) -> CliResult<Self> {
        let (created_at_ms, inner) = match open(file)? {
            Source::Whole(b) => (b.created_at_ms, EntriesInner::Whole(b.keys.into_iter())),
            Source::Lines {
                created_at_ms,
                lines,
            } => (created_at_ms, EntriesInner::Lines(lines)),
        };
        Ok(Self {
            file,
            created_at_ms,
            inner,
            seen: 0,
            trailer: None,
        })
    }

    fn next_entry(&mut self) -> CliResult<Option<Entry>> {
        let lines = match &mut self.inner {
            EntriesInner::Whole(entries) => {
                let next = entries.next();
                if next.is_none() {
                    self.trailer.get_or_insert_with(|| Trailer {
                        end: self.seen,
                        ..Trailer::default()
                    });
                } else {
                    self.seen += 1;
                }
                return Ok(next);
            }
            EntriesInner::Lines(lines) => lines,
        };
        if self.trailer.is_some() {
            return Ok(None);
        }
        let Some(line) = lines.next() else {
            return Err(CliError::Failed(format!(
                "{} is incomplete: it has no last line (the backup was cut short)",
                self.file.display()
            )));
        };
        let line_no = self.seen + 2;
        let file = self.file;
        let at = |e: serde_json::Error| {
            CliError::Failed(format!("{} line {line_no}: {e}", file.display()))
        };
        let line = line.map_err(|e| unreadable(file, e))?;
        let value: serde_json::Value = serde_json::from_str(&line).map_err(at)?;
        if value.get("end").is_some() {
            let trailer: Trailer = serde_json::from_value(value).map_err(at)?;
            if trailer.end != self.seen {
                return Err(CliError::Failed(format!(
                    "{}: the last line counts {} keys but {} precede it",
                    file.display(),
                    trailer.end,
                    self.seen
                )));
            }
            self.trailer = Some(trailer);
            return Ok(None);
        }
        self.seen += 1;
        serde_json::from_value(value).map(Some).map_err(at)
    }

    fn finish(self) -> CliResult<Trailer> {
        self.trailer
            .ok_or_else(|| CliError::Failed(format!("{} is incomplete", self.file.display())))
    }
}

/// What a restore leaves out: tokens and families revoked while the backup ran.
struct Revoked {
    tokens: HashSet<String>,
    families: HashSet<String>,
}

impl Revoked {
    /// Whether `entry` is a record of something revoked during the backup.
    fn covers(&self, entry: &Entry) -> bool {
        if let Some(jti) = entry.key.strip_prefix(keys::TOKEN_PREFIX) {
            return self.tokens.contains(jti);
        }
        if let Some(fid) = entry.key.strip_prefix(keys::FAMILY_PREFIX) {
            return self.families.contains(fid);
        }
        if entry.key.starts_with(keys::REFRESH_PREFIX) {
            return record_field(entry, "family_id").is_some_and(|f| self.families.contains(&f));
        }
        false
    }
}

fn record_field(entry: &Entry, field: &str) -> Option<String> {
    let text = entry.value.as_str()?;
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get(field)?.as_str().map(str::to_string)
}

/// The index entries a record implies: `(index key, member, score)`. Restoring them with the
/// record (ZADD NX) makes a fuzzy backup restore consistent: no record is left unindexed.
/// `created_at_ms`: when the backup began. An index score computed from a TTL read later is at
/// most the true one, so merging the index's own line (`GT`) always restores it exactly.
fn implied_index_entries(entry: &Entry, created_at_ms: i64) -> Vec<(String, String, i64)> {
    let Some(text) = entry.value.as_str() else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let s = |f: &str| v.get(f).and_then(|x| x.as_str()).map(str::to_string);
    let exp = v.get("expires_at").and_then(|x| x.as_i64()).unwrap_or(0);
    let mut out = Vec::new();
    if let Some(jti) = entry.key.strip_prefix(keys::TOKEN_PREFIX) {
        if let (Some(user), Some(client)) = (s("username"), s("client_id")) {
            out.push((keys::user_tokens(&user), jti.to_string(), exp));
            out.push((keys::client_tokens(&client), jti.to_string(), exp));
        }
        if let Some(fid) = s("family_id") {
            out.push((keys::family(&fid), keys::family_token_member(jti), exp));
        }
    } else if let Some(hash) = entry.key.strip_prefix(keys::REFRESH_PREFIX) {
        let user = v["user"]["login"].as_str().map(str::to_string);
        if let (Some(fid), Some(client)) = (s("family_id"), s("client_id")) {
            out.push((keys::family(&fid), keys::family_refresh_member(hash), exp));
            out.push((keys::client_families(&client), fid.clone(), exp));
            if let Some(user) = user {
                out.push((keys::user_families(&user), fid, exp));
            }
        }
    } else if let Some(rest) = entry.key.strip_prefix(keys::CONSENT_PREFIX) {
        if let Some((user, client)) = rest.split_once(':') {
            let expires = (created_at_ms + entry.ttl_ms.max(0)) / 1000;
            out.push((keys::client_consents(client), user.to_string(), expires));
        }
    } else if entry.key.starts_with(keys::CODE_PREFIX) || entry.key.starts_with(keys::STATE_PREFIX)
    {
        let client =
            s("client_id").or_else(|| v["authorization"]["client_id"].as_str().map(str::to_string));
        if let Some(client) = client {
            let expires = (created_at_ms + entry.ttl_ms.max(0)) / 1000 + 1;
            out.push((keys::client_pending(&client), entry.key.clone(), expires));
        }
    }
    out
}

/// Checks that an entry can be restored (its type and value), without writing anything.
fn check_entry(entry: &Entry) -> CliResult {
    match entry.kind.as_str() {
        "string" if entry.value.as_str().is_some() => Ok(()),
        "string" => Err(CliError::Failed(format!("{}: bad string value", entry.key))),
        "zset" | "set" | "list" | "hash" => Ok(()),
        other => Err(CliError::Failed(format!(
            "{}: unsupported type {other}",
            entry.key
        ))),
    }
}

/// The tombstones that forbid writing `entry` back: the token's, or its refresh family's. A
/// revocation made after the backup (or while the restore runs) leaves one, and the record
/// is then never restored.
fn tombstones(entry: &Entry) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(jti) = entry.key.strip_prefix(keys::TOKEN_PREFIX) {
        out.push(keys::token_revoked(jti));
    }
    if let Some(fid) = entry.key.strip_prefix(keys::FAMILY_PREFIX) {
        out.push(keys::family_revoked(fid));
    } else if let Some(fid) = record_field(entry, "family_id") {
        out.push(keys::family_revoked(&fid));
    }
    out
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
struct Restored {
    written: u64,
    /// A live record was there already (newer than the backup): left as it is.
    kept: u64,
    /// Revoked since the backup (a tombstone stands): not written back.
    revoked: u64,
}

pub async fn restore(cli: &Cli, file: &Path, dry_run: bool) -> CliResult {
    // First pass: every line is read and checked before anything is written.
    let mut check = Entries::open(file)?;
    while let Some(entry) = check.next_entry()? {
        if !entry.key.starts_with(keys::PREFIX) {
            return Err(CliError::Failed(format!(
                "refusing key outside {}*: {}",
                keys::PREFIX,
                entry.key
            )));
        }
        check_entry(&entry)?;
    }
    let trailer = check.finish()?;
    let revoked = Revoked {
        tokens: trailer.revoked_tokens.into_iter().collect(),
        families: trailer.revoked_families.into_iter().collect(),
    };
    let settings = cli.settings()?;
    let mut admin = if dry_run {
        None
    } else {
        Some(cli.admin(&settings).await?)
    };
    let scripts = match admin.as_mut() {
        Some(admin) => Some(RestoreScripts::load(&mut admin.conn).await?),
        None => None,
    };
    let mut tally = Restored::default();
    // Second pass: written in batches as it is read, each record in one atomic step.
    let mut entries = Entries::open(file)?;
    let created_at_ms = entries.created_at_ms;
    let elapsed = (now_ms() - created_at_ms).max(0);
    let (mut restored, mut expired, mut left_out) = (0u64, 0u64, 0u64);
    let mut last_key: Option<String> = None;
    let mut batch: Vec<(Entry, Option<i64>)> = Vec::with_capacity(RESTORE_BATCH);
    loop {
        let next = entries.next_entry()?;
        let done = next.is_none();
        if let Some(entry) = next {
            let ttl = (entry.ttl_ms >= 0).then(|| entry.ttl_ms - elapsed);
            if ttl.is_some_and(|t| t <= 0) {
                expired += 1;
            } else if revoked.covers(&entry) {
                left_out += 1;
            } else {
                // A large index spans several consecutive lines: one key.
                if last_key.as_deref() != Some(entry.key.as_str()) {
                    restored += 1;
                    last_key = Some(entry.key.clone());
                }
                if admin.is_none() {
                    println!(
                        "would restore {} ({}, ttl {})",
                        entry.key,
                        entry.kind,
                        ttl.map_or("none".into(), |t| format!("{}s", t / 1000))
                    );
                } else {
                    batch.push((entry, ttl));
                }
            }
        }
        if let (Some(admin), Some(scripts)) = (admin.as_mut(), scripts.as_ref())
            && (batch.len() >= RESTORE_BATCH || (done && !batch.is_empty()))
        {
            write_batch(&mut admin.conn, &batch, scripts, created_at_ms, &mut tally).await.map_err(|e| {
                CliError::Failed(format!(
                    "{e}; {} keys were restored before this (restore is idempotent: run it again)",
                    restored - batch.len() as u64
                ))
            })?;
            batch.clear();
        }
        if done {
            break;
        }
    }
    if dry_run {
        println!(
            "would restore {restored} keys; skipped {expired} that have expired since the backup and {left_out} revoked while it ran"
        );
    } else {
        println!(
            "restored {restored} keys: {} written, {} left as they are (newer in the store), {} revoked since the backup (not written back); skipped {expired} that have expired since the backup and {left_out} revoked while it ran",
            tally.written, tally.kept, tally.revoked
        );
    }
    Ok(())
}

/// One batch of entries, pipelined: each record written by [`RESTORE_RECORD`] (only where no
/// tombstone and no live record stands), each index page merged by [`RESTORE_MEMBERS`].
async fn write_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    batch: &[(Entry, Option<i64>)],
    shas: &RestoreScripts,
    created_at_ms: i64,
    tally: &mut Restored,
) -> CliResult {
    if batch.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (entry, ttl) in batch {
        let ttl_ms = ttl.unwrap_or(-1);
        let stones = tombstones(entry);
        match entry.kind.as_str() {
            "string" => {
                let implied = implied_index_entries(entry, created_at_ms);
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(&shas.record)
                    .arg(1 + stones.len() + implied.len())
                    .arg(&entry.key)
                    .arg(&stones);
                for (index, _, _) in &implied {
                    cmd.arg(index);
                }
                cmd.arg(entry.value.as_str().unwrap_or_default())
                    .arg(ttl_ms)
                    .arg(stones.len());
                for (_, member, score) in &implied {
                    cmd.arg(member).arg(score);
                }
            }
            "zset" => {
                let items = entry.items();
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(&shas.members)
                    .arg(1 + stones.len())
                    .arg(&entry.key)
                    .arg(&stones)
                    .arg(ttl_ms);
                for pair in items.chunks(2) {
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
            _ => continue,
        }
    }
    let answers: Vec<redis::Value> = pipe.query_async(conn).await.map_err(redis_failed)?;
    for answer in answers {
        match redis::from_redis_value_ref::<String>(&answer).as_deref() {
            Ok("kept") => tally.kept += 1,
            Ok("revoked") => tally.revoked += 1,
            _ => tally.written += 1,
        }
    }
    Ok(())
}

/// The restore scripts' SHA1s, loaded once.
struct RestoreScripts {
    record: String,
    members: String,
}

impl RestoreScripts {
    async fn load(conn: &mut redis::aio::MultiplexedConnection) -> CliResult<Self> {
        let load = |body: &'static str| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(body);
            cmd
        };
        Ok(Self {
            record: load(RESTORE_RECORD)
                .query_async(conn)
                .await
                .map_err(redis_failed)?,
            members: load(RESTORE_MEMBERS)
                .query_async(conn)
                .await
                .map_err(redis_failed)?,
        })
    }
}
