//! The embedded store's multi-key changes, on the locked map: what the Redis scripts do, step
//! for step (a token with its indexes, a revocation with its tombstone, a family, a grant).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Entry, MemoryStore, Value};
use crate::store::keys;
use crate::store::{Change, GrantOutcome, GrantWrite, TokenRecord, seconds_until};

impl MemoryStore {
    /// A record for its TTL and its entry in an index (member, score): a consent under its
    /// client, a code or a pending login under its client. Index members that expired by
    /// `score`'s clock (Unix seconds) are pruned on the way.
    pub(super) fn put_indexed(
        map: &mut HashMap<String, Entry>,
        (key, value, ttl): (&str, &str, Duration),
        (index, member, score): (String, String, i64),
        now_unix: i64,
        now: Instant,
    ) {
        let deadline = now + ttl;
        map.insert(
            key.to_string(),
            Entry {
                value: Value::Text(value.to_string()),
                expires_at: Some(deadline),
            },
        );
        Self::index_add(map, index, &member, score, Some(now_unix), deadline, now);
    }

    /// SET (NX) or DEL of one key; whether it changed.
    pub(super) fn change_locked(
        map: &mut HashMap<String, Entry>,
        change: &Change<'_>,
        now: Instant,
    ) -> bool {
        let (key, value, ttl, only_if_absent) = match *change {
            Change::Delete { key } => return map.remove(key).is_some_and(|e| e.live(now)),
            Change::Set { key, value, ttl } => (key, value, ttl, false),
            Change::SetIfAbsent { key, value, ttl } => (key, value, ttl, true),
        };
        if only_if_absent && map.get(key).is_some_and(|e| e.live(now)) {
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
    }

    /// ZADD with the index living at least until `deadline`; prunes members expired by `prune_before`.
    pub(super) fn index_add(
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

    /// ZREM: takes `member` off `index`, and the index itself when that was its last member
    /// (as Redis does). Returns whether it was there.
    pub(super) fn index_remove(
        map: &mut HashMap<String, Entry>,
        index: &str,
        member: &str,
    ) -> bool {
        let Some(Entry {
            value: Value::Index(members),
            ..
        }) = map.get_mut(index)
        else {
            return false;
        };
        let removed = members.remove(member).is_some();
        if members.is_empty() {
            map.remove(index);
        }
        removed
    }

    pub(super) fn index_members(
        map: &mut HashMap<String, Entry>,
        index: &str,
        now: Instant,
    ) -> Vec<String> {
        match map.get(index) {
            Some(e) if e.live(now) => match &e.value {
                Value::Index(members) => members.keys().cloned().collect(),
                Value::Text(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    pub(super) fn put_token_locked(
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
    pub(super) fn revoke_token_locked(
        map: &mut HashMap<String, Entry>,
        jti: &str,
        now: Instant,
    ) -> bool {
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
                Self::index_remove(map, &index, jti);
            }
        }
        true
    }

    pub(super) fn revoke_family_locked(
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

    /// [`Store::issue_grant`] on the locked map: the same checks and writes as the script.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn issue_locked(
        map: &mut HashMap<String, Entry>,
        grant: &GrantWrite,
        token_json: String,
        refresh_ttl: Duration,
        now: Instant,
        now_unix: i64,
        published: &mut Vec<String>,
        reuse_revoked: &mut Option<i64>,
    ) -> GrantOutcome {
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
                *reuse_revoked =
                    Some(
                        Self::revoke_family_locked(map, &family, refresh_ttl, now, published)
                            as i64,
                    );
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
            let removed = Self::index_remove(map, &set, &grant.token.client_id);
            first |= i == 0 && removed;
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
    }
}
