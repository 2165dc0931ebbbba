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
use super::progress::Progress;
use super::{Cli, CliError, CliResult};
use crate::records::layout;
use crate::store::admin::{
    Entry, READ_FAMILY, RestoreScripts, Restored, read_batch, scan_page, write_batch,
};
use crate::store::keys;

/// Keys asked for per SCAN page.
const BATCH: usize = 500;
/// Keys written per restore transaction: an index of 10,000 entries is one ZADD, so batches
/// stay small to keep each transaction to a few milliseconds of Redis time.
const RESTORE_BATCH: usize = 100;

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
        .arg(format!("{}{READ_FAMILY}", admin.conn.naming()))
        .query_async(&mut admin.conn)
        .await
        .map_err(redis_failed)?;
    // Lines, which the trailer counts, and keys (a large index takes several lines).
    let (mut written, mut keys_written) = (0u64, 0u64);
    let mut last_key = String::new();
    let mut cursor: u64 = 0;
    let progress = Progress::new(cli, Some(admin.dbsize().await?), "backing up keys");
    loop {
        let (next, page) = scan_page(&mut admin.conn, cursor, BATCH)
            .await
            .map_err(redis_failed)?;
        progress.inc(page.len() as u64);
        let entries = read_batch(&mut admin.conn, &page, &read_family_sha)
            .await
            .map_err(redis_failed)?;
        for entry in entries {
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
    progress.finish();
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
    let recorded = cli
        .event(crate::audit::Kind::Backup)
        .detail("keys", keys_written)
        .detail(
            "revoked_meanwhile",
            trailer.revoked_tokens.len() + trailer.revoked_families.len(),
        )
        .detail(
            "file",
            out.map(|p| p.display().to_string()).unwrap_or_default(),
        );
    cli.record(&settings, recorded).await;
    Ok(())
}

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
        let (jti, family) = layout::revocation_subjects(&entry.key, entry.value.as_str());
        jti.is_some_and(|j| self.tokens.contains(&j))
            || family.is_some_and(|f| self.families.contains(&f))
    }
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

pub async fn restore(cli: &Cli, file: &Path, dry_run: bool) -> CliResult {
    // First pass: every line is read and checked before anything is written.
    let mut check = Entries::open(file)?;
    let mut lines = 0u64;
    while let Some(entry) = check.next_entry()? {
        lines += 1;
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
        Some(admin) => Some(
            RestoreScripts::load(&mut admin.conn)
                .await
                .map_err(redis_failed)?,
        ),
        None => None,
    };
    let mut tally = Restored::default();
    // Second pass: written in batches as it is read, each record in one atomic step.
    let mut entries = Entries::open(file)?;
    let created_at_ms = entries.created_at_ms;
    let elapsed = (now_ms() - created_at_ms).max(0);
    let (mut restored, mut expired, mut left_out) = (0u64, 0u64, 0u64);
    let progress = Progress::new(cli, Some(lines), "restoring entries");
    let mut last_key: Option<String> = None;
    let mut batch: Vec<(Entry, Option<i64>)> = Vec::with_capacity(RESTORE_BATCH);
    loop {
        let next = entries.next_entry()?;
        let done = next.is_none();
        if let Some(entry) = next {
            progress.inc(1);
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
            write_batch(
                &mut admin.conn,
                &batch,
                scripts,
                &layout::Rules,
                created_at_ms,
                &mut tally,
            )
            .await
            .map_err(redis_failed)
            .map_err(|e| {
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
    progress.finish();
    if dry_run {
        println!(
            "would restore {restored} keys; skipped {expired} that have expired since the backup and {left_out} revoked while it ran"
        );
    } else {
        println!(
            "restored {restored} keys: {} written, {} left as they are (newer in the store), {} revoked since the backup (not written back); skipped {expired} that have expired since the backup and {left_out} revoked while it ran",
            tally.written, tally.kept, tally.revoked
        );
        let recorded = cli
            .event(crate::audit::Kind::Restore)
            .detail("file", file.display().to_string())
            .detail("keys", restored)
            .detail("written", tally.written)
            .detail("kept", tally.kept)
            .detail("revoked_since", tally.revoked);
        cli.record(&settings, recorded).await;
    }
    Ok(())
}
