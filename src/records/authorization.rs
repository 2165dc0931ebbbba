//! A login on its way: the authorization in progress (consent, then the upstream login), the
//! login waiting for its second factor, and the authorization code it ends in.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{CODE_LIFETIME, ConsentRequest, PENDING_LIFETIME, UpstreamUser};
use crate::audit::Events;
use crate::store::{Store, StoreResult, keys};
use crate::token::sha256_b64url;

/// An authorization in progress, under `oauth:state:{id}`; `id` is also the `state` we send
/// upstream, taken once at the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the client named the redirect URI (then the token request must repeat it).
    pub redirect_uri_explicit: bool,
    pub state: Option<String>,
    pub code_challenge: String,
    /// What the client asked for (and the user approves on the consent page).
    pub scope: String,
    /// What the signed-in user gets of it (their entitlements), set when the upstream login
    /// is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_scope: Option<String>,
    pub resource: Option<String>,
    pub csrf: String,
    pub approved: bool,
    /// Approved without the consent page because this user consented before: the upstream
    /// login must then be that user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remembered_for: Option<String>,
    /// SHA-256 of the login cookie of the browser that approved: only that browser may finish
    /// this login (a GitHub URL forwarded to someone else must not log them in for us).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    pub created_at: i64,
}

impl PendingAuthorization {
    /// What the user approves: the scope and the resource (the issuer when none was named).
    pub fn consent_request<'a>(&'a self, issuer: &'a str) -> ConsentRequest<'a> {
        ConsentRequest {
            scope: &self.scope,
            resource: self.resource.as_deref().unwrap_or(issuer),
        }
    }

    /// Whether `cookie` is the login cookie of the browser that approved this login, in
    /// constant time.
    pub fn browser_matches(&self, cookie: Option<&str>) -> bool {
        let (Some(expected), Some(cookie)) = (self.browser.as_deref(), cookie) else {
            return false;
        };
        bool::from(
            sha256_b64url(cookie.as_bytes())
                .as_bytes()
                .ct_eq(expected.as_bytes()),
        )
    }
}

impl PendingAuthorization {
    /// Stores it for what is left of [`PENDING_LIFETIME`] since it was created, indexed under
    /// its client, with `events` (`authorization_started` the first time); `None` when that
    /// time is up.
    pub async fn save(
        &self,
        store: &dyn Store,
        id: &str,
        now: i64,
        events: &Events,
    ) -> StoreResult<Option<()>> {
        let elapsed = (now - self.created_at).max(0) as u64;
        let remaining = PENDING_LIFETIME.saturating_sub(Duration::from_secs(elapsed));
        if remaining.is_zero() {
            return Ok(None);
        }
        store
            .put_for_client(
                &keys::state(id),
                &super::encode(self)?,
                remaining,
                &self.client_id,
                now,
                events,
            )
            .await
            .map(Some)
    }

    /// The authorization in progress under `id`; an unreadable one counts as none.
    pub async fn load(store: &dyn Store, id: &str) -> StoreResult<Option<Self>> {
        super::unreadable_as_none(super::get(store, &keys::state(id)).await)
    }

    /// Read and deleted in one step: of two callbacks with one `state`, one gets it. An
    /// unreadable one counts as none (and is gone too).
    pub async fn take(store: &dyn Store, id: &str) -> StoreResult<Option<Self>> {
        super::unreadable_as_none(super::take(store, &keys::state(id)).await)
    }

    /// Deletes it (the user declined, or it is spent).
    pub async fn discard(store: &dyn Store, id: &str) -> StoreResult<bool> {
        store.take(&keys::state(id)).await.map(|v| v.is_some())
    }
}

/// A login waiting for its second factor, under `oauth:state:mfa:{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaPending {
    pub authorization: PendingAuthorization,
    pub user: UpstreamUser,
    /// How the user signed in upstream (`github`, `oidc`, `dev`): the first `amr` entry.
    #[serde(default = "github_method")]
    pub method: String,
    /// The sealed [`super::UpstreamSession`], when one is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub csrf: String,
    /// During enrolment: the new secret, sealed.
    pub new_secret: Option<String>,
    /// Enrolment confirmed; the recovery codes have been shown.
    #[serde(default)]
    pub enrolled: bool,
}

impl MfaPending {
    fn key(id: &str) -> String {
        keys::state(&format!("mfa:{id}"))
    }

    /// Stores it for [`PENDING_LIFETIME`], indexed under the client.
    pub async fn save(&self, store: &dyn Store, id: &str, now: i64) -> StoreResult<()> {
        store
            .put_for_client(
                &Self::key(id),
                &super::encode(self)?,
                PENDING_LIFETIME,
                &self.authorization.client_id,
                now,
                &Events::none(),
            )
            .await
    }

    pub async fn load(store: &dyn Store, id: &str) -> StoreResult<Option<Self>> {
        super::get(store, &Self::key(id)).await
    }

    /// Read and deleted in one step: one code per second factor.
    pub async fn take(store: &dyn Store, id: &str) -> StoreResult<Option<Self>> {
        super::take(store, &Self::key(id)).await
    }
}

/// An issued authorization code, under `oauth:code:{sha256(code)}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_explicit: bool,
    pub code_challenge: String,
    pub scope: String,
    pub resource: Option<String>,
    pub user: UpstreamUser,
    pub amr: Vec<String>,
    pub issued_at: i64,
    /// The sealed [`super::UpstreamSession`] (sealed to the user id), when one is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

fn github_method() -> String {
    "github".to_string()
}

impl CodeRecord {
    /// Stores the code (under its SHA-256, never in the clear) for [`CODE_LIFETIME`], indexed
    /// under its client, with `events` (the `login` that issued it).
    pub async fn save(
        &self,
        store: &dyn Store,
        code: &str,
        now: i64,
        events: &Events,
    ) -> StoreResult<()> {
        store
            .put_for_client(
                &keys::code(&crate::slots::placed_hash(code)),
                &super::encode(self)?,
                CODE_LIFETIME,
                &self.client_id,
                now,
                events,
            )
            .await
    }
}

/// What the grant script leaves under a code's key when it redeems it (keeping the code's
/// TTL), so a second redemption can revoke what the first issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemedCode {
    pub redeemed: bool,
    pub family_id: String,
}

impl RedeemedCode {
    /// The JSON fields the store's scripts write (`ISSUE_GRANT`).
    pub const STORE_FIELDS: &'static [&'static str] = &["redeemed", "family_id"];
}

/// A code's key holds the code until it is redeemed, then the marker.
#[derive(Debug, Clone)]
pub enum StoredCode {
    Unredeemed(Box<CodeRecord>),
    Redeemed(RedeemedCode),
}

impl StoredCode {
    /// What is stored under `code_key` (`oauth:code:{sha256(code)}`).
    pub async fn load(store: &dyn Store, code_key: &str) -> StoreResult<Option<Self>> {
        let Some(value) = super::get::<serde_json::Value>(store, code_key).await? else {
            return Ok(None);
        };
        if value.get("redeemed").and_then(|r| r.as_bool()) == Some(true) {
            let marker = RedeemedCode {
                redeemed: true,
                family_id: value["family_id"].as_str().unwrap_or("").to_string(),
            };
            return Ok(Some(Self::Redeemed(marker)));
        }
        serde_json::from_value(value)
            .map(|r| Some(Self::Unredeemed(Box::new(r))))
            .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))
    }
}
