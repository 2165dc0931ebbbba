//! The store's layout, written once: which record each `oauth:*` key holds, the index entries
//! each record implies (so it can be found without a scan: by user, by client, by family) and
//! the tombstones that say it was revoked. Each record type declares its own ([`Indexed`]);
//! the store's scripts keep the same entries as they write, and backup, restore and the
//! operator commands read them from here, never from key strings or untyped JSON of their own.

use serde::Deserialize;
use serde::de::DeserializeOwned;

#[cfg(doc)]
use super::{CodeRecord, MfaPending, PendingAuthorization, RefreshRecord};
#[cfg(doc)]
use crate::store::TokenRecord;
use crate::store::admin::{Entry, Layout};
use crate::store::keys;

/// One entry of a sorted-set index: the index key, the member, and its score (an expiry in
/// Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub index: String,
    pub member: String,
    pub score: i64,
}

impl IndexEntry {
    fn new(index: String, member: impl Into<String>, score: i64) -> Self {
        Self {
            index,
            member: member.into(),
            score,
        }
    }
}

/// A record that is indexed: where it is found from, and what revoking it leaves. Each is read
/// through the fields that place it (a view of the record: the store's scripts write the same
/// fields), so a record with fields this version does not know is still placed.
pub trait Indexed: DeserializeOwned {
    /// The index entries of the record stored under `key` (which names it: a `jti`, a hash);
    /// `expires_at` is the key's own expiry (Unix seconds), for records that keep none.
    fn indexes(&self, key: &str, expires_at: i64) -> Vec<IndexEntry>;

    /// The tombstones whose presence means the record was revoked and must not come back.
    fn tombstones(&self, _key: &str) -> Vec<String> {
        Vec::new()
    }
}

/// A [`TokenRecord`] (`oauth:token:{jti}`), by the fields that place it.
#[derive(Deserialize)]
struct TokenPlace {
    username: String,
    client_id: String,
    expires_at: i64,
    family_id: Option<String>,
}

impl Indexed for TokenPlace {
    fn indexes(&self, key: &str, _expires_at: i64) -> Vec<IndexEntry> {
        let jti = key.strip_prefix(keys::TOKEN_PREFIX).unwrap_or(key);
        let mut out = vec![
            IndexEntry::new(keys::user_tokens(&self.username), jti, self.expires_at),
            IndexEntry::new(keys::client_tokens(&self.client_id), jti, self.expires_at),
        ];
        if let Some(fid) = &self.family_id {
            out.push(IndexEntry::new(
                keys::family(fid),
                keys::family_token_member(jti),
                self.expires_at,
            ));
        }
        out
    }

    fn tombstones(&self, key: &str) -> Vec<String> {
        let jti = key.strip_prefix(keys::TOKEN_PREFIX).unwrap_or(key);
        let mut out = vec![keys::token_revoked(jti)];
        if let Some(fid) = &self.family_id {
            out.push(keys::family_revoked(fid));
        }
        out
    }
}

/// A [`RefreshRecord`] (`oauth:refresh:{hash}`), by the fields that place it.
#[derive(Deserialize)]
struct RefreshPlace {
    family_id: String,
    client_id: String,
    user: Login,
    expires_at: i64,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

impl Indexed for RefreshPlace {
    fn indexes(&self, key: &str, _expires_at: i64) -> Vec<IndexEntry> {
        let hash = key.strip_prefix(keys::REFRESH_PREFIX).unwrap_or(key);
        let fid = &self.family_id;
        vec![
            IndexEntry::new(
                keys::family(fid),
                keys::family_refresh_member(hash),
                self.expires_at,
            ),
            IndexEntry::new(keys::client_families(&self.client_id), fid, self.expires_at),
            IndexEntry::new(keys::user_families(&self.user.login), fid, self.expires_at),
        ]
    }

    fn tombstones(&self, _key: &str) -> Vec<String> {
        vec![keys::family_revoked(&self.family_id)]
    }
}

/// A [`CodeRecord`] or [`PendingAuthorization`] (`oauth:code:…`, `oauth:state:…`), or an
/// [`MfaPending`] (its authorization's client), by the client it belongs to: indexed under
/// it (deleting the client finds it), scored by its own expiry.
#[derive(Deserialize)]
struct PendingPlace {
    client_id: Option<String>,
    authorization: Option<Box<PendingPlace>>,
}

impl PendingPlace {
    fn client(&self) -> Option<&str> {
        self.client_id
            .as_deref()
            .or_else(|| self.authorization.as_ref().and_then(|a| a.client()))
    }
}

impl Indexed for PendingPlace {
    fn indexes(&self, key: &str, expires_at: i64) -> Vec<IndexEntry> {
        self.client()
            .map(|client| {
                vec![IndexEntry::new(
                    keys::client_pending(client),
                    key,
                    expires_at,
                )]
            })
            .unwrap_or_default()
    }
}

/// A consent, `oauth:consent:{user}:{client}`, is indexed under its client by user.
fn consent_indexes(key: &str, expires_at: i64) -> Vec<IndexEntry> {
    key.strip_prefix(keys::CONSENT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .map(|(user, client)| {
            vec![IndexEntry::new(
                keys::client_consents(client),
                user,
                expires_at,
            )]
        })
        .unwrap_or_default()
}

/// The sorted sets that index records (merged on restore, never replaced).
pub fn is_index(key: &str) -> bool {
    [
        keys::USER_TOKENS_PREFIX,
        keys::CLIENT_TOKENS_PREFIX,
        keys::FAMILY_PREFIX,
        keys::CLIENT_FAMILIES_PREFIX,
        keys::USER_FAMILIES_PREFIX,
        keys::CLIENT_CONSENTS_PREFIX,
        keys::CLIENT_PENDING_PREFIX,
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

fn decoded<T: Indexed>(json: &str) -> Option<T> {
    serde_json::from_str(json).ok()
}

/// The index entries of whatever record is stored under `key` as `json` (none for a key that
/// holds no indexed record, or a value that is not one).
pub fn implied_indexes(key: &str, json: &str, expires_at: i64) -> Vec<IndexEntry> {
    if key.starts_with(keys::TOKEN_PREFIX) {
        decoded::<TokenPlace>(json).map(|r| r.indexes(key, expires_at))
    } else if key.starts_with(keys::REFRESH_PREFIX) {
        decoded::<RefreshPlace>(json).map(|r| r.indexes(key, expires_at))
    } else if key.starts_with(keys::CONSENT_PREFIX) {
        Some(consent_indexes(key, expires_at))
    } else if key.starts_with(keys::CODE_PREFIX) || key.starts_with(keys::STATE_PREFIX) {
        decoded::<PendingPlace>(json).map(|r| r.indexes(key, expires_at))
    } else {
        None
    }
    .unwrap_or_default()
}

/// The tombstones that forbid writing back what is stored under `key` (`json` for a record,
/// `None` for an index): a token's own and its family's, a refresh record's and a family's.
pub fn tombstones(key: &str, json: Option<&str>) -> Vec<String> {
    if let Some(fid) = key.strip_prefix(keys::FAMILY_PREFIX) {
        return vec![keys::family_revoked(fid)];
    }
    let Some(json) = json else {
        return Vec::new();
    };
    if key.starts_with(keys::TOKEN_PREFIX) {
        decoded::<TokenPlace>(json).map(|r| r.tombstones(key))
    } else if key.starts_with(keys::REFRESH_PREFIX) {
        decoded::<RefreshPlace>(json).map(|r| r.tombstones(key))
    } else {
        None
    }
    .unwrap_or_default()
}

/// What a record stored under `key` belongs to, for leaving out what was revoked: its token
/// (`jti`) and its refresh family.
pub fn revocation_subjects(key: &str, json: Option<&str>) -> (Option<String>, Option<String>) {
    if let Some(jti) = key.strip_prefix(keys::TOKEN_PREFIX) {
        let family = json
            .and_then(decoded::<TokenPlace>)
            .and_then(|r| r.family_id);
        return (Some(jti.to_string()), family);
    }
    if let Some(fid) = key.strip_prefix(keys::FAMILY_PREFIX) {
        return (None, Some(fid.to_string()));
    }
    if key.starts_with(keys::REFRESH_PREFIX) {
        return (
            None,
            json.and_then(decoded::<RefreshPlace>).map(|r| r.family_id),
        );
    }
    (None, None)
}

/// The layout, as keyspace-wide work needs it ([`crate::store::admin`]).
pub struct Rules;

impl Layout for Rules {
    fn tombstones(&self, entry: &Entry) -> Vec<String> {
        tombstones(&entry.key, entry.value.as_str())
    }

    fn indexes(&self, entry: &Entry, created_at_ms: i64) -> Vec<(String, String, i64)> {
        let Some(json) = entry.value.as_str() else {
            return Vec::new();
        };
        let expires_at = (created_at_ms + entry.ttl_ms.max(0)) / 1000;
        implied_indexes(&entry.key, json, expires_at)
            .into_iter()
            .map(|e| (e.index, e.member, e.score))
            .collect()
    }

    /// Token indexes and the grant indexes expire by score; a family is left whole (its
    /// members are kept for reuse detection until the family itself expires).
    fn expires_by_score(&self, key: &str) -> bool {
        [
            keys::USER_TOKENS_PREFIX,
            keys::CLIENT_TOKENS_PREFIX,
            keys::CLIENT_FAMILIES_PREFIX,
            keys::USER_FAMILIES_PREFIX,
            keys::CLIENT_PENDING_PREFIX,
        ]
        .iter()
        .any(|p| key.starts_with(p))
    }

    fn indexes_records(&self, key: &str) -> bool {
        [
            keys::USER_TOKENS_PREFIX,
            keys::CLIENT_TOKENS_PREFIX,
            keys::FAMILY_PREFIX,
        ]
        .iter()
        .any(|p| key.starts_with(p))
    }

    /// Token indexes name `jti`s; a family names its tokens (`t:`) and refresh tokens (`r:`).
    fn member_record(&self, index: &str, member: &str) -> Option<String> {
        if index.starts_with(keys::USER_TOKENS_PREFIX)
            || index.starts_with(keys::CLIENT_TOKENS_PREFIX)
        {
            return Some(keys::token(member));
        }
        if index.starts_with(keys::FAMILY_PREFIX) {
            return match (member.strip_prefix("t:"), member.strip_prefix("r:")) {
                (Some(jti), _) => Some(keys::token(jti)),
                (_, Some(hash)) => Some(keys::refresh(hash)),
                _ => None,
            };
        }
        None
    }
}
