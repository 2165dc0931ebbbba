//! What a user approved for a client, under `oauth:consent:{user}:{client}` (indexed per client
//! in `oauth:client_consents:{client}`, so deleting a client finds its consents without
//! scanning the keyspace). A returning browser skips the consent page only when the request
//! asks for nothing beyond a stored consent: a client approved for `mcp` on one server does not
//! silently get `mcp:admin`, or another server.

use serde::{Deserialize, Serialize};

use super::{AuthState, CONSENT_LIFETIME, OAuthError};

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
    pub fn new_scopes<'a>(&self, request: ConsentRequest<'a>) -> Vec<&'a str> {
        request
            .scope
            .split(' ')
            .filter(|s| !s.is_empty() && !self.scopes.iter().any(|c| c == s))
            .collect()
    }

    pub fn covers_resource(&self, resource: &str) -> bool {
        self.resources.iter().any(|r| r == resource)
    }

    /// Whether `request` is a subset of what was approved.
    pub fn covers(&self, request: ConsentRequest<'_>) -> bool {
        self.new_scopes(request).is_empty() && self.covers_resource(request.resource)
    }

    /// This consent widened by `request` (a user approved it just now).
    fn merged(mut self, request: ConsentRequest<'_>, now: i64) -> Self {
        for scope in request.scope.split(' ').filter(|s| !s.is_empty()) {
            if !self.scopes.iter().any(|c| c == scope) {
                self.scopes.push(scope.to_string());
            }
        }
        if !self.covers_resource(request.resource) {
            self.resources.push(request.resource.to_string());
        }
        self.at = now;
        self
    }
}

/// The consent `user` gave `client_id`, if any. Records of the original gateway
/// (`{"scope", "at"}`, no resources) cover no resource, so the page is shown once more.
pub async fn load(
    state: &AuthState,
    user: &str,
    client_id: &str,
) -> Result<Option<ConsentRecord>, OAuthError> {
    let key = crate::store::keys::consent(user, client_id);
    Ok(state
        .store
        .get(&key)
        .await?
        .and_then(|json| serde_json::from_str(&json).ok()))
}

/// Records that `user` approved `request` for `client_id`, added to what they approved before.
/// Two logins that race here can at worst lose one side's addition: the page is then shown
/// again, never skipped for something unapproved.
pub async fn record(
    state: &AuthState,
    user: &str,
    client_id: &str,
    request: ConsentRequest<'_>,
) -> Result<(), OAuthError> {
    let merged = load(state, user, client_id)
        .await?
        .unwrap_or_default()
        .merged(request, state.now());
    let json =
        serde_json::to_string(&merged).map_err(|e| OAuthError::server_error(e.to_string()))?;
    state
        .store
        .put_consent(user, client_id, &json, CONSENT_LIFETIME, state.now())
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
