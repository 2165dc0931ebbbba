//! The embedded store for `mcp-gateway dev` and tests: the Redis store's behaviour (TTLs,
//! atomic take, indexes, pub/sub) in one process, with nothing to install.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use super::keys;
use super::{
    Attempt, DeleteStep, GrantOutcome, GrantWrite, NewClient, NewClientWrite, RevocationStream,
    Store, StoreError, StoreResult, TokenRecord, Ttl, seconds_until,
};

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

pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
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
            revocations,
            ahead_ms: std::sync::atomic::AtomicU64::new(0),
        }
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

    /// ZADD with the index living at least until `deadline`; prunes members expired by `prune_before`.
    fn index_add(
        map: &mut HashMap<String, Entry>,
        index: String,
        member: &str,
        score: i64,
        prune_before: Option<i64>,
        deadline: Instant,
        now: Instant,
    ) {
        let entry = map.entry(index).or_insert_with(|| Entry {
            value: Value::Index(HashMap::new()),
            expires_at: None,
        });
        if !entry.live(now) || !matches!(entry.value, Value::Index(_)) {
            *entry = Entry {
                value: Value::Index(HashMap::new()),
                expires_at: None,
            };
        }
        if let Value::Index(members) = &mut entry.value {
            if let Some(cutoff) = prune_before {
                members.retain(|_, exp| *exp >= cutoff);
            }
            members.insert(member.to_string(), score);
        }
        entry.expires_at = Some(entry.expires_at.map_or(deadline, |t| t.max(deadline)));
    }

    fn index_members(map: &mut HashMap<String, Entry>, index: &str, now: Instant) -> Vec<String> {
        match map.get(index) {
            Some(e) if e.live(now) => match &e.value {
                Value::Index(members) => members.keys().cloned().collect(),
                Value::Text(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn put_token_locked(
        map: &mut HashMap<String, Entry>,
        record: &TokenRecord,
        json: String,
        now: Instant,
        now_unix: i64,
    ) {
        let deadline = now + Duration::from_secs(seconds_until(record.expires_at, now_unix));
        map.insert(
            keys::token(&record.jti),
            Entry {
                value: Value::Text(json),
                expires_at: Some(deadline),
            },
        );
        for index in [
            keys::user_tokens(&record.username),
            keys::client_tokens(&record.client_id),
        ] {
            Self::index_add(
                map,
                index,
                &record.jti,
                record.expires_at,
                Some(now_unix),
                deadline,
                now,
            );
        }
    }

    /// Deletes a token record and its index entries; the caller publishes `jti`.
    fn revoke_token_locked(map: &mut HashMap<String, Entry>, jti: &str, now: Instant) -> bool {
        // The tombstone lives as long as the token would have (a restore never writes it back).
        let left = map
            .get(&keys::token(jti))
            .filter(|e| e.live(now))
            .and_then(|e| e.expires_at)
            .map(|at| at.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(keys::TOKEN_TOMBSTONE_FALLBACK_SECS));
        map.insert(
            keys::token_revoked(jti),
            Entry {
                value: Value::Text("1".into()),
                expires_at: Some(now + left),
            },
        );
        let Some(json) = Self::text(map, &keys::token(jti), now) else {
            return false;
        };
        map.remove(&keys::token(jti));
        if let Ok(record) = serde_json::from_str::<TokenRecord>(&json) {
            for index in [
                keys::user_tokens(&record.username),
                keys::client_tokens(&record.client_id),
            ] {
                if let Some(Entry {
                    value: Value::Index(members),
                    ..
                }) = map.get_mut(&index)
                {
                    members.remove(jti);
                }
            }
        }
        true
    }

    fn revoke_family_locked(
        map: &mut HashMap<String, Entry>,
        family_id: &str,
        tombstone_ttl: Duration,
        now: Instant,
        published: &mut Vec<String>,
    ) -> usize {
        let members = Self::index_members(map, &keys::family(family_id), now);
        for member in &members {
            if let Some(jti) = member.strip_prefix("t:") {
                Self::revoke_token_locked(map, jti, now);
                published.push(jti.to_string());
            } else if let Some(hash) = member.strip_prefix("r:") {
                map.remove(&keys::refresh(hash));
            }
        }
        map.remove(&keys::family(family_id));
        map.insert(
            keys::family_revoked(family_id),
            Entry {
                value: Value::Text("1".into()),
                expires_at: Some(now + tombstone_ttl.max(Duration::from_secs(1))),
            },
        );
        members.len()
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

    async fn put_token(&self, record: &TokenRecord, now_unix: i64) -> StoreResult<()> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(|map, now| Self::put_token_locked(map, record, json, now, now_unix));
        Ok(())
    }

    async fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>> {
        let raw = self.with(|map, now| Self::text(map, &keys::token(jti), now));
        raw.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn token_is_live(&self, jti: &str) -> StoreResult<bool> {
        Ok(self.with(|map, now| Self::text(map, &keys::token(jti), now).is_some()))
    }

    async fn revoke_token(&self, jti: &str) -> StoreResult<bool> {
        let existed = self.with(|map, now| Self::revoke_token_locked(map, jti, now));
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
        self.with(|map, now| {
            map.insert(
                key.to_string(),
                Entry {
                    value: Value::Text(value.to_string()),
                    expires_at: Self::deadline(ttl, now),
                },
            );
        });
        Ok(())
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        Ok(self.with(|map, now| {
            if map.get(key).is_some_and(|e| e.live(now)) {
                return false;
            }
            map.insert(
                key.to_string(),
                Entry {
                    value: Value::Text(value.to_string()),
                    expires_at: Self::deadline(ttl, now),
                },
            );
            true
        }))
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
        Ok(self.with(|map, now| map.remove(key).is_some_and(|e| e.live(now))))
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
        let outcome = self.with(|map, now| {
            if Self::text(map, &keys::family_revoked(&grant.family_id), now).is_some() {
                return GrantOutcome::FamilyRevoked;
            }
            if let Some(result) = &grant.result
                && let Some(prior) = Self::text(map, &result.key, now)
            {
                return GrantOutcome::Replayed(prior);
            }
            if let Some(code_key) = &grant.redeem_code {
                let Some(value) = Self::text(map, code_key, now) else {
                    return GrantOutcome::Missing;
                };
                if let Ok(marker) = serde_json::from_str::<serde_json::Value>(&value)
                    && marker.get("redeemed").and_then(|r| r.as_bool()) == Some(true)
                {
                    let family_id = marker["family_id"].as_str().unwrap_or("").to_string();
                    return GrantOutcome::CodeReused { family_id };
                }
                let marker =
                    serde_json::json!({"redeemed": true, "family_id": grant.family_id}).to_string();
                if let Some(entry) = map.get_mut(code_key) {
                    entry.value = Value::Text(marker);
                }
            }
            if let Some(old) = &grant.rotate_from {
                let key = keys::refresh(old);
                let Some(json) = Self::text(map, &key, now) else {
                    return GrantOutcome::Missing;
                };
                let Ok(mut record) = serde_json::from_str::<serde_json::Value>(&json) else {
                    return GrantOutcome::Missing;
                };
                if record.get("used").and_then(|u| u.as_bool()) == Some(true) {
                    let family = record["family_id"]
                        .as_str()
                        .unwrap_or(&grant.family_id)
                        .to_string();
                    Self::revoke_family_locked(map, &family, refresh_ttl, now, &mut published);
                    return GrantOutcome::Reused;
                }
                record["used"] = true.into();
                if let Some(entry) = map.get_mut(&key) {
                    entry.value = Value::Text(record.to_string());
                }
                if let Some(predecessor) = record.get("rotated_from").and_then(|p| p.as_str()) {
                    map.remove(&keys::grant_result(predecessor));
                }
            }
            Self::put_token_locked(map, &grant.token, token_json, now, now_unix);
            let refresh_deadline = now + refresh_ttl;
            map.insert(
                keys::refresh(&grant.refresh_hash),
                Entry {
                    value: Value::Text(grant.refresh_json.clone()),
                    expires_at: Some(refresh_deadline),
                },
            );
            let refresh_exp = now_unix + refresh_ttl.as_secs() as i64;
            let family = keys::family(&grant.family_id);
            Self::index_add(
                map,
                family.clone(),
                &keys::family_token_member(&grant.token.jti),
                grant.token.expires_at,
                None,
                refresh_deadline,
                now,
            );
            Self::index_add(
                map,
                family,
                &keys::family_refresh_member(&grant.refresh_hash),
                refresh_exp,
                None,
                refresh_deadline,
                now,
            );
            for index in [
                keys::client_families(&grant.token.client_id),
                keys::user_families(&grant.token.username),
            ] {
                Self::index_add(
                    map,
                    index,
                    &grant.family_id,
                    refresh_exp,
                    Some(now_unix),
                    refresh_deadline,
                    now,
                );
            }
            let mut first = false;
            let local = grant
                .registered_from
                .as_deref()
                .map(keys::unused_clients_from);
            for (i, set) in std::iter::once(keys::UNUSED_CLIENTS.to_string())
                .chain(local)
                .enumerate()
            {
                if let Some(Entry {
                    value: Value::Index(members),
                    ..
                }) = map.get_mut(&set)
                {
                    let removed = members.remove(&grant.token.client_id).is_some();
                    first |= i == 0 && removed;
                }
            }
            if let Some(client) = map.get_mut(&keys::client(&grant.token.client_id))
                && client.expires_at.is_some_and(|t| t > now)
            {
                match grant.renew_client {
                    Some(lifetime) => client.expires_at = Some(now + lifetime),
                    None if first => client.expires_at = None,
                    None => {}
                }
            }
            if let Some(result) = &grant.result {
                map.insert(
                    result.key.clone(),
                    Entry {
                        value: Value::Text(result.sealed.clone()),
                        expires_at: Self::deadline(Some(result.ttl), now),
                    },
                );
            }
            GrantOutcome::Issued
        });
        self.publish(published);
        Ok(outcome)
    }

    async fn revoke_family(&self, family_id: &str, tombstone_ttl: Duration) -> StoreResult<usize> {
        let mut published = Vec::new();
        let n = self.with(|map, now| {
            Self::revoke_family_locked(map, family_id, tombstone_ttl, now, &mut published)
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
    ) -> StoreResult<()> {
        self.with(|map, now| {
            let deadline = now + ttl.max(Duration::from_secs(1));
            map.insert(
                keys::consent(user, client_id),
                Entry {
                    value: Value::Text(json.to_string()),
                    expires_at: Some(deadline),
                },
            );
            Self::index_add(
                map,
                keys::client_consents(client_id),
                &user.to_ascii_lowercase(),
                now_unix + ttl.as_secs() as i64,
                Some(now_unix),
                deadline,
                now,
            );
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
    ) -> StoreResult<()> {
        self.with(|map, now| {
            let deadline = now + ttl.max(Duration::from_millis(1));
            map.insert(
                key.to_string(),
                Entry {
                    value: Value::Text(value.to_string()),
                    expires_at: Some(deadline),
                },
            );
            let expiry = now_unix + ttl.as_secs_f64().ceil() as i64;
            Self::index_add(
                map,
                keys::client_pending(client_id),
                key,
                expiry,
                Some(now_unix),
                deadline,
                now,
            );
        });
        Ok(())
    }

    async fn put_new_client(&self, client: &NewClientWrite<'_>) -> StoreResult<NewClient> {
        Ok(self.with(|map, now| {
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
                }) = map.get_mut(set)
                else {
                    return Vec::new();
                };
                let over = (members.len() as u64).saturating_sub(budget.max(1)) as usize;
                let mut by_age: Vec<(i64, String)> =
                    members.iter().map(|(m, at)| (*at, m.clone())).collect();
                by_age.sort();
                let popped: Vec<String> = by_age.into_iter().take(over).map(|(_, m)| m).collect();
                for m in &popped {
                    members.remove(m);
                }
                popped
            }
            let mut evicted = Vec::new();
            if let Some(local) = &local {
                for id in pop_oldest(map, local, client.budget_per_address) {
                    if let Some(Entry {
                        value: Value::Index(members),
                        ..
                    }) = map.get_mut(&global)
                    {
                        members.remove(&id);
                    }
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
            unused
        }))
    }

    /// In memory nothing else waits on the map for long: one step does it all.
    async fn delete_client_step(
        &self,
        client_id: &str,
        tombstone_ttl: Duration,
        _budget: usize,
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
        max: u64,
        window: Duration,
        lockout: Duration,
    ) -> StoreResult<Attempt> {
        Ok(self.with(|map, now| {
            for lock in locks {
                if let Some(entry) = map.get(lock).filter(|e| e.live(now)) {
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
                return Attempt::Locked(lockout);
            }
            Attempt::Allowed { count: highest }
        }))
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
