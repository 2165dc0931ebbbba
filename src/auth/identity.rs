//! Which upstream account a login name belongs to. GitHub logins can be renamed and then
//! registered by someone else; the numeric id (`sub`) cannot. At the first login of a name we
//! record name → id under `oauth:login_id:{login}`; a later login with that name and another
//! id is refused, so a re-registered name inherits neither an allow-list entry nor the
//! previous owner's second factor (both are looked up by name).

use std::time::Duration;

use super::{AuthState, OAuthError, UpstreamUser};
use crate::store::keys;

/// How long a name stays pinned to its account after its last login.
pub const LOGIN_PIN_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86_400);

/// Pins `user.login` to `user.id` (first login) or checks the pin; `Ok(false)` = the name
/// belongs to another account.
pub async fn pin_login(state: &AuthState, user: &UpstreamUser) -> Result<bool, OAuthError> {
    let key = keys::login_id(&user.login);
    let store = &state.store;
    if store
        .put_if_absent(&key, &user.id, Some(LOGIN_PIN_LIFETIME))
        .await?
    {
        return Ok(true);
    }
    match store.get(&key).await? {
        Some(id) if id == user.id => {
            store.put(&key, &user.id, Some(LOGIN_PIN_LIFETIME)).await?;
            Ok(true)
        }
        Some(id) => {
            tracing::warn!(
                login = %user.login,
                pinned_id = %id,
                presented_id = %user.id,
                "login refused: this name belonged to another upstream account"
            );
            Ok(false)
        }
        // Expired between the two calls: pin it now.
        None => Ok(store
            .put_if_absent(&key, &user.id, Some(LOGIN_PIN_LIFETIME))
            .await?),
    }
}
