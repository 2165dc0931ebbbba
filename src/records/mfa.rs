//! A user's enrolled second factor, under `oauth:mfa:{user}`.

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreResult, keys};

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

    /// Stores it unless `user` has one already (two tabs enrolling at once: one wins).
    pub async fn save_first(&self, store: &dyn Store, user: &str) -> StoreResult<bool> {
        store
            .put_if_absent(&keys::mfa(user), &super::encode(self)?, None)
            .await
    }
}
