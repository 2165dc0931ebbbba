//! A user's enrolled second factor, under `oauth:mfa:{user}`.

use serde::{Deserialize, Serialize};

use crate::audit::{Event, Events, outcome};
use crate::store::{Change, Store, StoreResult, keys};

/// An enrolled second factor, under `oauth:mfa:{user}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaRecord {
    pub provider: String,
    /// The TOTP secret, sealed (AES-256-GCM).
    pub secret: String,
    pub enrolled_at: i64,
}

impl MfaRecord {
    /// `user`'s second factor; an unreadable one counts as none.
    pub async fn load(store: &dyn Store, user: &str) -> StoreResult<Option<Self>> {
        super::unreadable_as_none(super::get(store, &keys::mfa(user)).await)
    }

    /// Stores it unless `user` has one already (two tabs enrolling at once: one wins, and
    /// only its `enrolled` event is written).
    pub async fn save_first(
        &self,
        store: &dyn Store,
        user: &str,
        enrolled: Event,
    ) -> StoreResult<bool> {
        store
            .change(
                &Change::SetIfAbsent {
                    key: &keys::mfa(user),
                    value: &super::encode(self)?,
                    ttl: None,
                },
                &Events::none().on(outcome::CHANGED, enrolled),
            )
            .await
    }

    /// Removes `user`'s second factor (the operator's `mfa reset`), with `reset` when there
    /// was one.
    pub async fn remove(store: &dyn Store, user: &str, reset: Event) -> StoreResult<bool> {
        store
            .change(
                &Change::Delete {
                    key: &keys::mfa(user),
                },
                &Events::none().on(outcome::CHANGED, reset),
            )
            .await
    }
}
