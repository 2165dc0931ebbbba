//! What the authorization server stores, one type per record, each with its key (from
//! [`crate::store::keys`]) and its load/save/take against the [`Store`]. Handlers and the
//! operator CLI both go through these: no key strings or ad-hoc JSON elsewhere.
//!
//! | record | key | written by |
//! |---|---|---|
//! | [`ClientRecord`] | `oauth:client:{client_id}` | `/register` |
//! | [`PendingAuthorization`] | `oauth:state:{id}` (indexed per client) | `/authorize`, consent |
//! | [`MfaPending`] | `oauth:state:mfa:{id}` (indexed per client) | the upstream login, `/mfa` |
//! | [`CodeRecord`], then [`RedeemedCode`] | `oauth:code:{sha256(code)}` (indexed per client) | the login; the grant script |
//! | [`RefreshRecord`] | `oauth:refresh:{sha256(token)}` | the grant script |
//! | [`ConsentRecord`] | `oauth:consent:{user}:{client}` (indexed per client) | consent |
//! | [`MfaRecord`] | `oauth:mfa:{user}` | TOTP enrolment |
//!
//! The store's scripts (Lua in [`crate::store::redis`], the same steps in
//! [`crate::store::memory`]) read and write a few JSON fields themselves; each type that has
//! such fields names them in `STORE_FIELDS`, and `tests/it/store_contract.rs` checks that
//! both stores leave records these types read back.

mod authorization;
mod client;
mod consent;
mod grant;
pub mod layout;
mod mfa;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use authorization::{CodeRecord, MfaPending, PendingAuthorization, RedeemedCode, StoredCode};
pub use client::ClientRecord;
pub use consent::{ConsentRecord, ConsentRequest};
pub use grant::{Binding, RefreshRecord};
pub use mfa::MfaRecord;

use crate::store::{Store, StoreError, StoreResult};

/// Authorization codes live at most this long (OAuth 2.1 recommends ≤ 10 minutes).
pub const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// A pending authorization (consent, then the upstream login) must finish within this.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(300);
/// How long a consent given for (user, client) is remembered.
pub const CONSENT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// The identity the upstream vouched for; what our tokens say about the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UpstreamUser {
    /// Our `sub`: GitHub's numeric user id as text, or `{issuer}#{subject}` for an OpenID
    /// provider (stable, and never the same as another provider's).
    pub id: String,
    pub login: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only an address the upstream verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The groups the upstream names (OpenID providers' `groups` claim or its configured name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl UpstreamUser {
    /// What the allow-lists are asked about.
    pub fn identity(&self) -> crate::policy::Identity<'_> {
        crate::policy::Identity::new(&self.id, &self.login, self.email.as_deref(), &self.groups)
    }
}

/// What the upstream gave for a user's session: its access token (for MCP servers that act as
/// the user, `FORWARD_UPSTREAM_TOKEN`) and refresh token (our refresh refreshes it). Stored
/// only sealed (AES-256-GCM, [`crate::seal::SecretBox`]) inside the code and refresh
/// records; the access token alone, sealed to its `jti`, in the access token's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UpstreamSession {
    /// `github` or `oidc`.
    pub provider: String,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the access token expires (unix seconds), when the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl UpstreamSession {
    /// `expires_in` as a token answer carries it (a number, or a string for some providers).
    pub fn new(
        provider: &str,
        access_token: String,
        refresh_token: Option<String>,
        expires_in: Option<serde_json::Value>,
    ) -> Self {
        let expires_in = expires_in.and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        let now = crate::clock::Clock::now_unix(&crate::clock::SystemClock);
        Self {
            provider: provider.to_string(),
            access_token,
            refresh_token: refresh_token.filter(|t| !t.is_empty()),
            expires_at: expires_in.filter(|s| *s > 0).map(|s| now + s),
        }
    }

    /// Sealed for storage, bound to `owner` (the user id, or a token's `jti`).
    pub fn seal(&self, sealer: &crate::seal::SecretBox, owner: &str) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        sealer.seal(owner, &json)
    }

    pub fn open(sealer: &crate::seal::SecretBox, owner: &str, sealed: &str) -> Option<Self> {
        serde_json::from_slice(&sealer.open(owner, sealed)?).ok()
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The record under `key`; an unreadable one is [`StoreError::Corrupt`].
pub(crate) async fn get<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> StoreResult<Option<T>> {
    store.get(key).await?.map(|json| decode(&json)).transpose()
}

/// The record under `key`, read and deleted in one step.
pub(crate) async fn take<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> StoreResult<Option<T>> {
    store.take(key).await?.map(|json| decode(&json)).transpose()
}

/// `result`, with an unreadable record counted as none (for records a client can simply
/// start again, such as a pending login).
pub fn unreadable_as_none<T>(result: StoreResult<Option<T>>) -> StoreResult<Option<T>> {
    match result {
        Err(StoreError::Corrupt(_)) => Ok(None),
        other => other,
    }
}
