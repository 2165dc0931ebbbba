//! The embedded store for `mcp-gateway dev` and tests: the Redis store's behaviour (TTLs,
//! atomic take, indexes, pub/sub) in one process, with nothing to install.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

mod audit;
mod locked;

use super::keys;
use super::{
    Attempt, AttemptLimit, Change, DeleteStep, GrantOutcome, GrantWrite, GroupRead, NewClient,
    NewClientWrite, OnceWrite, RevocationStream, Store, StoreError, StoreResult, TokenRecord, Ttl,
    seconds_until,
};
use crate::audit::{Events, outcome};

enum Value {
    Text(String),
    /// A sorted set: member → score.
    Index(HashMap<String, i64>),
}

struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// A key's value as [`MemoryStore::dump`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dumped {
    Text(String),
    /// A sorted set: member → score.
    Index(std::collections::BTreeMap<String, i64>),
}

pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    /// The audit trail; written while `entries` is held, so a reader never sees a change
    /// without its event.
    trail: Mutex<audit::Trail>,
    bounds: crate::audit::Bounds,
    sink: crate::audit::Sink,
    revocations: broadcast::Sender<String>,
    /// How far tests have moved this store's clock ahead ([`MemoryStore::advance`]), in ms.
    ahead_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        let (revocations, _) = broadcast::channel(1024);
        Self {
            entries: Mutex::new(HashMap::new()),
            trail: Mutex::default(),
            bounds: crate::audit::Bounds::default(),
            sink: crate::audit::Sink::default(),
            revocations,
            ahead_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same store with these audit bounds and sink (`mcp-gateway dev` passes the
    /// settings').
    pub fn with_audit(mut self, bounds: crate::audit::Bounds, sink: crate::audit::Sink) -> Self {
        self.bounds = bounds;
        self.sink = sink;
        self
    }

    /// Every audit event kept, oldest first.
    pub fn audit_events(&self) -> Vec<crate::audit::Stored> {
        self.trail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events()
    }

    /// Every live key with its value (a text, or an index's members and scores) and its
    /// remaining TTL in ms: what the contract tests compare with the Redis store's keyspace.
    pub fn dump(&self) -> std::collections::BTreeMap<String, (Dumped, Option<u64>)> {
        self.with(|map, now| {
            map.iter()
                .filter(|(_, e)| e.live(now))
                .map(|(k, e)| {
                    let value = match &e.value {
                        Value::Text(s) => Dumped::Text(s.clone()),
                        Value::Index(members) => {
                            Dumped::Index(members.iter().map(|(m, s)| (m.clone(), *s)).collect())
                        }
                    };
                    let ttl = e
                        .expires_at
                        .map(|t| t.saturating_duration_since(now).as_millis() as u64);
                    (k.clone(), (value, ttl))
                })
                .collect()
        })
    }

    /// verify's usage counts of one hour (`YYYYMMDDHH`).
    pub fn usage(&self, hour: &str) -> HashMap<String, u64> {
        self.trail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .usage(hour)
    }

    fn now_ms(&self) -> i64 {
        use crate::clock::Clock;
        crate::clock::SystemClock.now_millis()
            + self.ahead_ms.load(std::sync::atomic::Ordering::SeqCst) as i64
    }

    /// Appends the events of `outcome`; called while the change's `entries` lock is held.
    fn audit(&self, events: &Events, outcome: &str, n: Option<i64>) {
        if events.is_empty() || !self.bounds.enabled {
            return;
        }
        self.trail.lock().unwrap_or_else(|p| p.into_inner()).append(
            &self.bounds,
            events,
            outcome,
            n,
            self.now_ms(),
        );
        self.sink.written(events.emitted(outcome));
    }

    /// Moves this store's clock forward: TTLs run out as if `by` had passed (tests of expiry
    /// without sleeping). Only the store's own expiry moves; callers pass their `now`.
    pub fn advance(&self, by: Duration) {
        self.ahead_ms.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    fn now(&self) -> Instant {
        Instant::now()
            + Duration::from_millis(self.ahead_ms.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Runs `f` on the map after dropping expired entries it touches.
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> T) -> T {
        let now = self.now();
        // A poisoned lock means a panic mid-update in a test; the map itself is still sound.
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4_096 && map.len().is_power_of_two() {
            map.retain(|_, e| e.live(now));
        }
        f(&mut map, now)
    }

    fn text(map: &mut HashMap<String, Entry>, key: &str, now: Instant) -> Option<String> {
        match map.get(key) {
            Some(e) if !e.live(now) => {
                map.remove(key);
                None
            }
            Some(Entry {
                value: Value::Text(s),
                ..
            }) => Some(s.clone()),
            _ => None,
        }
    }

    fn deadline(ttl: Option<Duration>, now: Instant) -> Option<Instant> {
        ttl.map(|d| now + d.max(Duration::from_millis(1)))
    }

    fn publish(&self, jtis: Vec<String>) {
        for jti in jtis {
            // No receivers is not an error: nobody is listening yet.
            let _ = self.revocations.send(jti);
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn put_token(
        &self,
        record: &TokenRecord,
        now_unix: i64,
        events: &Events,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(|map, now| {
            Self::put_token_locked(map, record, json, now, now_unix);
            self.audit(events, outcome::WRITTEN, None);
        });
        Ok(())
    }

    async fn put_token_once(
        &self,
        once: &OnceWrite<'_>,
        now_unix: i64,
        events: &Events,
    ) -> StoreResult<bool> {
        let json =
            serde_json::to_string(once.record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let marker = Change::SetIfAbsent {
            key: once.key,
            value: "1",
            ttl: Some(once.ttl.max(Duration::from_millis(1))),
        };
        Ok(self.with(|map, now| {
            let spent = !Self::change_locked(map, &marker, now);
            if !spent {
                Self::put_token_locked(map, once.record, json, now, now_unix);
            }
            let outcome = if spent {
                outcome::REUSED
            } else {
                outcome::WRITTEN
            };
            self.audit(events, outcome, None);
            !spent
        }))
    }

    async fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>> {
        let raw = self.with(|map, now| Self::text(map, &keys::token(jti), now));
        raw.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn token_is_live(&self, jti: &str) -> StoreResult<bool> {
        Ok(self.with(|map, now| Self::text(map, &keys::token(jti), now).is_some()))
    }

    async fn revoke_token(&self, jti: &str, events: &Events) -> StoreResult<bool> {
        let existed = self.with(|map, now| {
            let existed = Self::revoke_token_locked(map, jti, now);
            self.audit(events, outcome::of_revocation(existed), None);
            existed
        });
        self.publish(vec![jti.to_string()]);
        Ok(existed)
    }

    async fn indexed_tokens(&self, index_key: &str, now_unix: i64) -> StoreResult<Vec<String>> {
        Ok(self.with(|map, now| match map.get(index_key) {
            Some(e) if e.live(now) => match &e.value {
                Value::Index(members) => {
                    let mut live: Vec<(&String, &i64)> = members
                        .iter()
                        .filter(|(_, exp)| **exp >= now_unix)
                        .collect();
                    live.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)));
                    live.into_iter().map(|(m, _)| m.clone()).collect()
                }
                Value::Text(_) => Vec::new(),
            },
            _ => Vec::new(),
        }))
    }

    async fn subscribe_revocations(&self) -> StoreResult<RevocationStream> {
        // A lagging receiver has missed messages: end the stream, as a dropped Redis
        // subscription would, so the subscriber clears what it cached.
        Ok(BroadcastStream::new(self.revocations.subscribe())
            .take_while(|item| std::future::ready(item.is_ok()))
            .filter_map(|item| std::future::ready(item.ok()))
            .boxed())
    }

    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()> {
        let set = Change::Set { key, value, ttl };
        self.with(|map, now| Self::change_locked(map, &set, now));
        Ok(())
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        let set = Change::SetIfAbsent { key, value, ttl };
        Ok(self.with(|map, now| Self::change_locked(map, &set, now)))
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.with(|map, now| Self::text(map, key, now)))
    }

    async fn take(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.with(|map, now| {
            let value = Self::text(map, key, now);
            if value.is_some() {
                map.remove(key);
            }
            value
        }))
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let delete = Change::Delete { key };
        Ok(self.with(|map, now| Self::change_locked(map, &delete, now)))
    }

    async fn ttl(&self, key: &str) -> StoreResult<Ttl> {
        Ok(self.with(|map, now| match map.get(key) {
            Some(e) if e.live(now) => match e.expires_at {
                None => Ttl::Persistent,
                Some(t) => Ttl::Expires(t - now),
            },
            _ => Ttl::Missing,
        }))
    }

    async fn issue_grant(&self, grant: &GrantWrite, now_unix: i64) -> StoreResult<GrantOutcome> {
        let token_json =
            serde_json::to_string(&grant.token).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let refresh_ttl = Duration::from_secs(seconds_until(grant.refresh_expires_at, now_unix));
        let mut published = Vec::new();
        let mut reuse_revoked = None;
        let result = self.with(|map, now| {
            let result = Self::issue_locked(
                map,
                grant,
                token_json,
                refresh_ttl,
                now,
                now_unix,
                &mut published,
                &mut reuse_revoked,
            );
            let kind = match &result {
                GrantOutcome::Issued => outcome::ISSUED,
                GrantOutcome::Reused => outcome::REUSED,
                GrantOutcome::Missing => outcome::MISSING,
                GrantOutcome::CodeReused { .. } => "code_reused",
                GrantOutcome::FamilyRevoked => "revoked",
                GrantOutcome::Replayed(_) => "replayed",
            };
            self.audit(&grant.events, kind, reuse_revoked);
            result
        });
        self.publish(published);
        Ok(result)
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        tombstone_ttl: Duration,
        events: &Events,
    ) -> StoreResult<usize> {
        let mut published = Vec::new();
        let n = self.with(|map, now| {
            let n = Self::revoke_family_locked(map, family_id, tombstone_ttl, now, &mut published);
            self.audit(events, outcome::of_family(n), Some(n as i64));
            n
        });
        self.publish(published);
        Ok(n)
    }

    async fn put_consent(
        &self,
        user: &str,
        client_id: &str,
        json: &str,
        ttl: Duration,
        now_unix: i64,
        events: &Events,
    ) -> StoreResult<()> {
        let ttl = ttl.max(Duration::from_secs(1));
        let score = now_unix + ttl.as_secs() as i64;
        let index = (
            keys::client_consents(client_id),
            user.to_ascii_lowercase(),
            score,
        );
        let record = (keys::consent(user, client_id), json, ttl);
        self.with(|map, now| {
            Self::put_indexed(map, (&record.0, record.1, record.2), index, now_unix, now);
            self.audit(events, outcome::WRITTEN, None);
        });
        Ok(())
    }

    async fn put_for_client(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        client_id: &str,
        now_unix: i64,
        events: &Events,
    ) -> StoreResult<()> {
        let ttl = ttl.max(Duration::from_millis(1));
        let score = now_unix + ttl.as_secs_f64().ceil() as i64;
        let index = (keys::client_pending(client_id), key.to_string(), score);
        self.with(|map, now| {
            Self::put_indexed(map, (key, value, ttl), index, now_unix, now);
            self.audit(events, outcome::WRITTEN, None);
        });
        Ok(())
    }

    async fn put_new_client(&self, client: &NewClientWrite<'_>) -> StoreResult<NewClient> {
        Ok(self.with(|map, now| {
            self.audit(&client.events, outcome::WRITTEN, None);
            let lifetime = client.unused_lifetime;
            let deadline = now + lifetime.max(Duration::from_millis(1));
            map.insert(
                keys::client(client.client_id),
                Entry {
                    value: Value::Text(client.json.to_string()),
                    expires_at: Some(deadline),
                },
            );
            let oldest_kept = client.now_ms - lifetime.as_millis() as i64;
            let global = keys::UNUSED_CLIENTS.to_string();
            let local = client.address.map(keys::unused_clients_from);
            for set in std::iter::once(&global).chain(local.as_ref()) {
                Self::index_add(
                    map,
                    set.clone(),
                    client.client_id,
                    client.now_ms,
                    Some(oldest_kept),
                    deadline,
                    now,
                );
            }
            // The oldest `over` members of `set`, taken off it.
            fn pop_oldest(map: &mut HashMap<String, Entry>, set: &str, budget: u64) -> Vec<String> {
                let Some(Entry {
                    value: Value::Index(members),
                    ..
                }) = map.get(set)
                else {
                    return Vec::new();
                };
                let over = (members.len() as u64).saturating_sub(budget.max(1)) as usize;
                let mut by_age: Vec<(i64, String)> =
                    members.iter().map(|(m, at)| (*at, m.clone())).collect();
                by_age.sort();
                let popped: Vec<String> = by_age.into_iter().take(over).map(|(_, m)| m).collect();
                for m in &popped {
                    MemoryStore::index_remove(map, set, m);
                }
                popped
            }
            let mut evicted = Vec::new();
            if let Some(local) = &local {
                for id in pop_oldest(map, local, client.budget_per_address) {
                    Self::index_remove(map, &global, &id);
                    evicted.push(id);
                }
            }
            evicted.extend(pop_oldest(map, &global, client.budget));
            let unused = match map.get(&global) {
                Some(Entry {
                    value: Value::Index(members),
                    ..
                }) => members.len() as u64,
                _ => 0,
            };
            NewClient { unused, evicted }
        }))
    }

    async fn drop_unused_client(
        &self,
        client_id: &str,
        unused_lifetime: Duration,
        events: &Events,
    ) -> StoreResult<bool> {
        Ok(self.with(|map, now| {
            let key = keys::client(client_id);
            let unused = map.get(&key).is_some_and(|e| {
                e.live(now)
                    && e.expires_at
                        .is_some_and(|t| t.saturating_duration_since(now) <= unused_lifetime)
            });
            if unused {
                map.remove(&key);
            }
            self.audit(events, outcome::of_drop(unused), None);
            unused
        }))
    }

    /// In memory nothing else waits on the map for long: one step does it all.
    async fn delete_client_step(
        &self,
        client_id: &str,
        tombstone_ttl: Duration,
        _budget: usize,
        events: &Events,
    ) -> StoreResult<DeleteStep> {
        let mut published = Vec::new();
        let revoked = self.with(|map, now| {
            map.remove(&keys::client(client_id));
            let families_key = keys::client_families(client_id);
            for family in Self::index_members(map, &families_key, now) {
                Self::revoke_family_locked(map, &family, tombstone_ttl, now, &mut published);
            }
            map.remove(&families_key);
            let tokens_key = keys::client_tokens(client_id);
            let mut revoked = 0;
            for jti in Self::index_members(map, &tokens_key, now) {
                if Self::revoke_token_locked(map, &jti, now) {
                    revoked += 1;
                }
                published.push(jti);
            }
            map.remove(&tokens_key);
            let consents_key = keys::client_consents(client_id);
            for user in Self::index_members(map, &consents_key, now) {
                map.remove(&keys::consent(&user, client_id));
            }
            map.remove(&consents_key);
            let pending_key = keys::client_pending(client_id);
            for key in Self::index_members(map, &pending_key, now) {
                map.remove(&key);
            }
            map.remove(&pending_key);
            self.audit(events, outcome::DONE, Some(revoked as i64));
            revoked
        });
        self.publish(published);
        Ok(DeleteStep {
            revoked,
            remaining: 0,
        })
    }

    async fn reserve_attempt(
        &self,
        counters: &[String],
        locks: &[String],
        limit: &AttemptLimit,
        events: &Events,
    ) -> StoreResult<Attempt> {
        let AttemptLimit {
            max,
            window,
            lockout,
        } = *limit;
        Ok(self.with(|map, now| {
            for lock in locks {
                if let Some(entry) = map.get(lock).filter(|e| e.live(now)) {
                    self.audit(events, outcome::HELD, None);
                    return Attempt::Locked(entry.expires_at.map_or(lockout, |t| t - now));
                }
            }
            let mut highest = 0;
            for key in counters {
                let n = Self::text(map, key, now)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                let expires_at = match map.get(key) {
                    Some(entry) if n > 1 => entry.expires_at,
                    _ => Self::deadline(Some(window), now),
                };
                map.insert(
                    key.clone(),
                    Entry {
                        value: Value::Text(n.to_string()),
                        expires_at,
                    },
                );
                highest = highest.max(n);
            }
            if highest > max {
                for lock in locks {
                    map.insert(
                        lock.clone(),
                        Entry {
                            value: Value::Text("1".into()),
                            expires_at: Self::deadline(Some(lockout), now),
                        },
                    );
                }
                for key in counters {
                    map.remove(key);
                }
                self.audit(events, outcome::LOCKED, None);
                return Attempt::Locked(lockout);
            }
            self.audit(events, outcome::ALLOWED, None);
            Attempt::Allowed { count: highest }
        }))
    }

    async fn change(&self, change: &Change<'_>, events: &Events) -> StoreResult<bool> {
        Ok(self.with(|map, now| {
            let changed = Self::change_locked(map, change, now);
            self.audit(events, outcome::of_change(changed), None);
            changed
        }))
    }

    async fn append_events(&self, events: &Events) -> StoreResult<()> {
        self.audit(events, outcome::WRITTEN, None);
        Ok(())
    }

    async fn add_usage(&self, hour: &str, counts: &[(String, u64)]) -> StoreResult<()> {
        self.trail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_usage(hour, counts);
        Ok(())
    }

    async fn audit_deliveries(
        &self,
        read: &GroupRead<'_>,
    ) -> StoreResult<Vec<crate::audit::Stored>> {
        Ok(self
            .trail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deliveries(read, self.now()))
    }

    async fn audit_ack(&self, group: &str, ids: &[String]) -> StoreResult<()> {
        self.trail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ack(group, ids);
        Ok(())
    }

    async fn audit_backlog(&self, group: &str) -> StoreResult<u64> {
        Ok(self
            .trail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .backlog(group))
    }

    fn audit_sink(&self) -> &crate::audit::Sink {
        &self.sink
    }

    async fn incr_within(&self, key: &str, window: Duration) -> StoreResult<u64> {
        Ok(self.with(|map, now| {
            let current = Self::text(map, key, now).and_then(|v| v.parse::<u64>().ok());
            match current {
                Some(n) => {
                    if let Some(entry) = map.get_mut(key) {
                        entry.value = Value::Text((n + 1).to_string());
                    }
                    n + 1
                }
                None => {
                    map.insert(
                        key.to_string(),
                        Entry {
                            value: Value::Text("1".into()),
                            expires_at: Self::deadline(Some(window), now),
                        },
                    );
                    1
                }
            }
        }))
    }
}
