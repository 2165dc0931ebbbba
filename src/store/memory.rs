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
use super::{RevocationStream, Store, StoreError, StoreResult, TokenRecord, Ttl, seconds_until};

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
        }
    }

    /// Runs `f` on the map after dropping expired entries it touches.
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> T) -> T {
        let now = Instant::now();
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
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn put_token(&self, record: &TokenRecord, now_unix: i64) -> StoreResult<()> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ttl = Duration::from_secs(seconds_until(record.expires_at, now_unix));
        self.with(|map, now| {
            let deadline = now + ttl;
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
                let entry = map
                    .entry(index)
                    .and_modify(|e| {
                        if !e.live(now) || !matches!(e.value, Value::Index(_)) {
                            *e = Entry {
                                value: Value::Index(HashMap::new()),
                                expires_at: None,
                            };
                        }
                    })
                    .or_insert_with(|| Entry {
                        value: Value::Index(HashMap::new()),
                        expires_at: None,
                    });
                if let Value::Index(members) = &mut entry.value {
                    members.retain(|_, exp| *exp >= now_unix);
                    members.insert(record.jti.clone(), record.expires_at);
                }
                entry.expires_at = Some(entry.expires_at.map_or(deadline, |t| t.max(deadline)));
            }
        });
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
        let existed = self.with(|map, now| {
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
        });
        // No receivers is not an error: nobody is listening yet.
        let _ = self.revocations.send(jti.to_string());
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
}
