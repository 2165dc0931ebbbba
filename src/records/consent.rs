//! What a user approved for a client, under `oauth:consent:{user}:{client}` (indexed per
//! client in `oauth:client_consents:{client}`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::Events;
use crate::policy::Scope;
use crate::store::{Store, StoreResult, keys};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// Every scope the user approved for this client.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Every resource (token audience) the user approved; the issuer stands for "no resource".
    #[serde(default)]
    pub resources: Vec<String>,
    /// When the consent was last given (Unix seconds).
    #[serde(default)]
    pub at: i64,
}

/// What an authorization request asks the user to approve.
#[derive(Debug, Clone, Copy)]
pub struct ConsentRequest<'a> {
    pub scope: &'a str,
    /// The resource, or the issuer when the client named none.
    pub resource: &'a str,
}

impl ConsentRecord {
    /// Scopes of `request` not covered by this consent (empty = nothing new).
    pub fn new_scopes(&self, request: ConsentRequest<'_>) -> Vec<String> {
        Scope::parse(request.scope).beyond(&self.scopes)
    }

    pub fn covers_resource(&self, resource: &str) -> bool {
        self.resources.iter().any(|r| r == resource)
    }

    /// Whether `request` is a subset of what was approved.
    pub fn covers(&self, request: ConsentRequest<'_>) -> bool {
        self.new_scopes(request).is_empty() && self.covers_resource(request.resource)
    }

    /// This consent widened by `request` (a user approved it just now).
    pub fn merged(mut self, request: ConsentRequest<'_>, now: i64) -> Self {
        let new = Scope::parse(request.scope).beyond(&self.scopes);
        self.scopes.extend(new);
        if !self.covers_resource(request.resource) {
            self.resources.push(request.resource.to_string());
        }
        self.at = now;
        self
    }
}

impl ConsentRecord {
    /// The consent `user` gave `client_id`; an unreadable one counts as none.
    pub async fn load(store: &dyn Store, user: &str, client_id: &str) -> StoreResult<Option<Self>> {
        super::unreadable_as_none(super::get(store, &keys::consent(user, client_id)).await)
    }

    /// Stores it and indexes it under the client, in one step, with `events`
    /// (`consent_granted` when it widened what was approved).
    #[allow(clippy::too_many_arguments)]
    pub async fn save(
        &self,
        store: &dyn Store,
        user: &str,
        client_id: &str,
        ttl: Duration,
        now: i64,
        events: &Events,
    ) -> StoreResult<()> {
        store
            .put_consent(user, client_id, &super::encode(self)?, ttl, now, events)
            .await
    }
}
