//! A refresh grant's refresh token, under `oauth:refresh:{sha256(token)}`. The grant script
//! writes it, marks it `used` when it is rotated and reads `family_id` and `rotated_from`.

use serde::{Deserialize, Serialize};

use super::UpstreamUser;
use crate::store::{Store, StoreResult, keys};

/// A refresh token, under `oauth:refresh:{sha256(token)}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family_id: String,
    pub client_id: String,
    pub user: UpstreamUser,
    pub scope: String,
    pub resource: Option<String>,
    pub amr: Vec<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    #[serde(default)]
    pub used: bool,
    /// What the grant's tokens are bound to (RFC 8705 §4 for the certificate): kept from the
    /// first token on, so a refresh token presented from elsewhere yields nothing.
    #[serde(default, skip_serializing_if = "Binding::is_empty")]
    pub binding: Binding,
    /// Hash of the refresh token this one replaced: its retry window ends when this one is
    /// first used (the store reads this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<String>,
    /// The sealed [`super::UpstreamSession`] (sealed to the user id), when one is kept: our
    /// refresh refreshes it upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// The client properties a grant is bound to (each only when that binding was on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// SHA-256 of the User-Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ua: Option<String>,
    /// RFC 8705 `x5t#S256` of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// RFC 9449: the thumbprint of the client's DPoP key. On a refresh token only for public
    /// clients (§5: a confidential client's refresh token is held by its authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

impl Binding {
    pub fn is_empty(&self) -> bool {
        self.ip.is_none() && self.ua.is_none() && self.cert.is_none() && self.jkt.is_none()
    }
}

impl RefreshRecord {
    /// The JSON fields the store's scripts read or write (`ISSUE_GRANT`, `revoke_family`).
    pub const STORE_FIELDS: &'static [&'static str] = &["used", "family_id", "rotated_from"];

    /// The refresh token whose SHA-256 is `hash`.
    pub async fn load(store: &dyn Store, hash: &str) -> StoreResult<Option<Self>> {
        super::get(store, &keys::refresh(hash)).await
    }
}
