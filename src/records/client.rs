//! A registered client (RFC 7591), under `oauth:client:{client_id}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{Actor, Event, Events, Kind, outcome};
use crate::policy::redirect_matches;
use crate::store::{Store, StoreResult, Ttl, keys};

/// A registered client as stored under `oauth:client:{client_id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_hash: Option<String>,
    pub registration_token_hash: String,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    pub client_id_issued_at: i64,
    /// 0 = never (RFC 7591 §3.2.1).
    pub client_secret_expires_at: i64,
    /// The public keys a client the operator created signs its `private_key_jwt` assertions
    /// with: a JWK set, or where it is served (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// A hash of the address it registered from (its list of unused registrations), until
    /// nothing needs it; never shown to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_from: Option<String>,
    /// RFC 9449 §5.2: the client said every token request of its carries a DPoP proof; one
    /// without is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dpop_bound_access_tokens: bool,
}

impl ClientRecord {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The registered redirect URI `requested` matches: exactly, or for loopback `http` URIs
    /// with any port (RFC 8252 §7.3).
    pub fn matching_redirect(&self, requested: &str) -> Option<&str> {
        self.redirect_uris
            .iter()
            .find(|registered| redirect_matches(registered, requested))
            .map(String::as_str)
    }

    pub fn display_name(&self) -> &str {
        self.client_name.as_deref().unwrap_or(&self.client_id)
    }
}

impl ClientRecord {
    pub async fn load(store: &dyn Store, client_id: &str) -> StoreResult<Option<Self>> {
        super::get(store, &keys::client(client_id)).await
    }

    /// Stores the registration for `lifetime` (none: it never expires).
    pub async fn save(&self, store: &dyn Store, lifetime: Option<Duration>) -> StoreResult<()> {
        store
            .put(
                &keys::client(&self.client_id),
                &super::encode(self)?,
                lifetime,
            )
            .await
    }

    /// Stores a new registration, not yet used: for `settings`' unused lifetime (or the
    /// client lifetime, when shorter), within the budget of unused registrations; deletes the
    /// oldest unused ones the budget evicts (each with its `client_evicted` event). Returns how
    /// many unused ones are stored and how many were evicted. `registered` is written with it.
    pub async fn save_new(
        &self,
        store: &dyn Store,
        limits: &crate::config::RateLimitSettings,
        client_lifetime: Option<Duration>,
        now_ms: i64,
        registered: Event,
    ) -> StoreResult<(u64, usize)> {
        let unused_lifetime = client_lifetime.map_or(limits.unused_client_lifetime, |l| {
            l.min(limits.unused_client_lifetime)
        });
        let outcome = store
            .put_new_client(&crate::store::NewClientWrite {
                client_id: &self.client_id,
                json: &super::encode(self)?,
                unused_lifetime,
                address: self.registered_from.as_deref(),
                budget: limits.unused_client_budget,
                budget_per_address: limits.unused_client_budget_per_address,
                now_ms,
                events: Events::one(registered),
            })
            .await?;
        // Each is its own step: one lost here still expires with its unused lifetime.
        for evicted in &outcome.evicted {
            let event = Event::new(
                Kind::ClientEvicted,
                Actor::System("unused_client_budget".into()),
            )
            .client(evicted)
            .reason("unused_client_budget");
            store
                .drop_unused_client(
                    evicted,
                    unused_lifetime,
                    &Events::none().on(outcome::REVOKED, event),
                )
                .await?;
        }
        Ok((outcome.unused, outcome.evicted.len()))
    }

    /// Stores a client the operator created: it never expires and no budget evicts it.
    /// `created` is written with it; an id already taken changes nothing (an error).
    pub async fn create(&self, store: &dyn Store, created: Event) -> StoreResult<()> {
        let json = super::encode(self)?;
        let stored = store
            .change(
                &crate::store::Change::SetIfAbsent {
                    key: &keys::client(&self.client_id),
                    value: &json,
                    ttl: None,
                },
                &Events::none().on(outcome::CHANGED, created),
            )
            .await?;
        if !stored {
            return Err(crate::store::StoreError::Corrupt(format!(
                "client id {} is taken",
                self.client_id
            )));
        }
        Ok(())
    }

    /// How long the registration has left (it slides: each grant renews it).
    pub async fn remaining(store: &dyn Store, client_id: &str) -> StoreResult<Ttl> {
        store.ttl(&keys::client(client_id)).await
    }

    /// Deletes the registration only; what was issued to it stays valid until it expires.
    /// Returns whether there was one (`deleted` is written only then).
    pub async fn delete(store: &dyn Store, client_id: &str, deleted: Event) -> StoreResult<bool> {
        store
            .change(
                &crate::store::Change::Delete {
                    key: &keys::client(client_id),
                },
                &Events::none().on(outcome::CHANGED, deleted),
            )
            .await
    }
}
