//! What a user approved for a client, under `oauth:consent:{user}:{client}` (indexed per client
//! in `oauth:client_consents:{client}`, so deleting a client finds its consents without
//! scanning the keyspace). A returning browser skips the consent page only when the request
//! asks for nothing beyond a stored consent: a client approved for `mcp` on one server does not
//! silently get `mcp:admin`, or another server.

use super::{AuthState, CONSENT_LIFETIME, OAuthError};
use crate::audit::{Event, Events};
pub use crate::records::{ConsentRecord, ConsentRequest};

/// The consent `user` gave `client_id`, if any. Records of the original gateway
/// (`{"scope", "at"}`, no resources) cover no resource, so the page is shown once more.
pub async fn load(
    state: &AuthState,
    user: &str,
    client_id: &str,
) -> Result<Option<ConsentRecord>, OAuthError> {
    Ok(ConsentRecord::load(state.store.as_ref(), user, client_id).await?)
}

/// Records that `user` approved `request` for `client_id`, added to what they approved before;
/// `granted` is written with it when it widens what was approved. Two logins that race here
/// can at worst lose one side's addition: the page is then shown again, never skipped for
/// something unapproved.
pub async fn record(
    state: &AuthState,
    user: &str,
    client_id: &str,
    request: ConsentRequest<'_>,
    granted: Event,
) -> Result<(), OAuthError> {
    let previous = load(state, user, client_id).await?.unwrap_or_default();
    let events = if previous.covers(request) {
        Events::none()
    } else {
        Events::one(granted)
    };
    let merged = previous.merged(request, state.now());
    merged
        .save(
            state.store.as_ref(),
            user,
            client_id,
            CONSENT_LIFETIME,
            state.now(),
            &events,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(scope: &'a str, resource: &'a str) -> ConsentRequest<'a> {
        ConsentRequest { scope, resource }
    }

    #[test]
    fn only_a_subset_is_covered() {
        let consent = ConsentRecord::default().merged(request("mcp", "https://a/mcp"), 1);
        assert!(consent.covers(request("mcp", "https://a/mcp")));
        assert!(!consent.covers(request("mcp mcp:admin", "https://a/mcp")));
        assert_eq!(
            consent.new_scopes(request("mcp mcp:admin", "https://a/mcp")),
            vec!["mcp:admin"]
        );
        assert!(!consent.covers(request("mcp", "https://b/mcp")));
        let wider = consent.merged(request("mcp:admin", "https://b/mcp"), 2);
        assert!(wider.covers(request("mcp mcp:admin", "https://a/mcp")));
        assert!(wider.covers(request("mcp", "https://b/mcp")));
        let legacy: ConsentRecord = serde_json::from_str(r#"{"scope":"mcp","at":5}"#).unwrap();
        assert!(!legacy.covers(request("mcp", "https://a/mcp")));
    }
}
