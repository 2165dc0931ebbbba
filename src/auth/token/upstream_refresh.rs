//! The refresh grant's visit to the identity provider: one upstream refresh per presented
//! refresh token under a store lock, the provider's answer kept (sealed) until our grant is
//! written, and only the provider's refusal ending the grant.

use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use super::Retry;
use crate::audit::{Actor, Kind};
use crate::auth::upstream::UpstreamError;
use crate::auth::{AuthState, OAuthError, UpstreamUser};
use crate::records::{ClientRecord, RefreshRecord, UpstreamSession};
use crate::store::keys;
use crate::token::random_token;

/// What refreshing the grant's upstream session gave: who the user is now and the session to
/// keep, or the answer a duplicate of this request already got.
pub(super) enum Upstreamed {
    Session(UpstreamUser, Option<String>),
    Answered(HttpResponse),
}

/// The upstream session of a refresh grant, refreshed at the provider when it gave a refresh
/// token (so a user disabled there loses access now), and who the user is there now. Only the
/// provider's refusal (`invalid_grant`, or a user it no longer admits) ends the grant; an
/// outage, a 429 or a timeout is a retryable 503 that leaves it as it was.
///
/// One upstream call per presented refresh token, however many times the request is sent: a
/// provider that rotates refresh tokens strictly refuses the old one at once, and that refusal
/// must never be mistaken for the user's. The call is made under a lock in the store (the
/// request is refused with 503 when the store cannot take it, before the provider is asked);
/// concurrent and retried requests wait for the holder's answer; the provider's answer is kept
/// (sealed) before our grant is written, so a retry after our own store write failed uses it
/// instead of presenting the rotated token again.
pub(super) async fn refresh_upstream(
    state: &AuthState,
    req: &HttpRequest,
    record: &RefreshRecord,
    hash: &str,
    retry: &Retry,
    client: &ClientRecord,
) -> Result<Upstreamed, OAuthError> {
    let sealer = &state.upstream_box;
    let Some(sealed) = record.upstream.as_deref() else {
        return Ok(Upstreamed::Session(record.user.clone(), None));
    };
    // A session we can no longer open (UPSTREAM_TOKEN_KEY, or the signing key it derives
    // from, changed) must not skip the upstream's say: the user signs in again.
    let Some(session) = UpstreamSession::open(sealer, &record.user.id, sealed) else {
        tracing::warn!(login = %record.user.login, "the grant's upstream session cannot be opened (UPSTREAM_TOKEN_KEY changed?): sign-in required");
        return Err(OAuthError::invalid_grant(
            "the identity provider's session can no longer be read; sign in again",
        ));
    };
    let provider = state
        .upstream
        .get(&session.provider)
        .filter(|p| p.refreshes());
    let (Some(provider), Some(_)) = (provider, session.refresh_token.as_ref()) else {
        return Ok(Upstreamed::Session(
            record.user.clone(),
            Some(session.seal(sealer, &record.user.id)),
        ));
    };
    let kept = KeptAnswer::new(hash);
    let lock_ttl = (provider.timeout() * 3).max(std::time::Duration::from_secs(10));
    let deadline = std::time::Instant::now() + lock_ttl + std::time::Duration::from_secs(5);
    let lock_key = keys::refresh_lock(hash);
    let owner = random_token();
    loop {
        // The provider answered an earlier try of this request: use that answer.
        if let Some((user, upstream)) = kept.read(state).await {
            return Ok(Upstreamed::Session(user, Some(upstream)));
        }
        if state
            .store
            .put_if_absent(&lock_key, &owner, Some(lock_ttl))
            .await?
        {
            break;
        }
        // Another request for this refresh token is asking the provider: its answer is ours.
        if let Some(sealed) = state.store.get(&retry.key).await?
            && let Some(answer) = retry.open(&sealed, &client.client_id)
        {
            return Ok(Upstreamed::Answered(answer));
        }
        if std::time::Instant::now() > deadline {
            return Err(OAuthError::temporarily_unavailable(
                "another request is refreshing this grant; retry shortly",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let outcome = provider.refresh(&session, &record.user).await;
    let result = match outcome {
        Ok(login) => {
            let upstream = login.session.seal(sealer, &login.user.id);
            kept.write(state, &login.user, &upstream).await;
            Ok(Upstreamed::Session(login.user, Some(upstream)))
        }
        Err(UpstreamError::Refused(why) | UpstreamError::NotAdmitted(why)) => {
            tracing::info!(login = %record.user.login, reason = %why, "the upstream refused the refresh: grant ended");
            state.metrics.upstream_failures.inc();
            let revoked = state
                .event(
                    Kind::TokenRevoked,
                    Actor::Upstream(session.provider.clone()),
                    req,
                )
                .user(&record.user.login)
                .user_id(&record.user.id)
                .upstream(&session.provider)
                .client(&client.client_id)
                .family(&record.family_id)
                .reason(why.as_str());
            state.revoke_grant(&record.family_id, revoked).await?;
            crate::auth::refusal_recorded(req);
            Err(OAuthError::invalid_grant(
                "the identity provider no longer accepts this session; sign in again",
            ))
        }
        Err(UpstreamError::Unavailable(why)) => {
            tracing::warn!(reason = %why, "the upstream cannot be reached for a refresh");
            state.metrics.upstream_failures.inc();
            Err(OAuthError::temporarily_unavailable(
                "the identity provider cannot be reached; retry shortly",
            ))
        }
        Err(UpstreamError::Throttled { why, retry_after }) => {
            tracing::warn!(reason = %why, retry_after, "the upstream asks us to slow down");
            state.metrics.upstream_failures.inc();
            let mut e = OAuthError::temporarily_unavailable(
                "the identity provider is busy; retry after the time it asked for",
            );
            e.retry_after = Some(retry_after.unwrap_or(5).clamp(1, 3_600));
            Err(e)
        }
    };
    // Whoever waits goes on: with the kept answer, or asking the provider itself.
    let _ = state.store.delete(&lock_key).await;
    result
}

/// The provider's answer to the refresh of one of our refresh tokens, kept (sealed) until our
/// grant is written: in the store, and in this process when the store cannot take it.
struct KeptAnswer {
    key: String,
    /// The seal's owner: the presented token's hash (only its holder reaches this code).
    owner: String,
}

#[derive(Serialize, serde::Deserialize)]
struct KeptSession {
    user: UpstreamUser,
    /// The upstream session, sealed to the user as the refresh record keeps it.
    upstream: String,
}

impl KeptAnswer {
    /// How long an answer is kept for a retry.
    const TTL: std::time::Duration = std::time::Duration::from_secs(600);

    fn new(hash: &str) -> Self {
        Self {
            key: keys::upstream_answer(hash),
            owner: format!("upstream answer\0{hash}"),
        }
    }

    async fn read(&self, state: &AuthState) -> Option<(UpstreamUser, String)> {
        let sealed = match state.store.get(&self.key).await {
            Ok(Some(sealed)) => Some(sealed),
            _ => state.upstream_answers.get(&self.key),
        }?;
        let json = state.upstream_box.open(&self.owner, &sealed)?;
        let kept: KeptSession = serde_json::from_slice(&json).ok()?;
        Some((kept.user, kept.upstream))
    }

    async fn write(&self, state: &AuthState, user: &UpstreamUser, upstream: &str) {
        let json = serde_json::to_vec(&KeptSession {
            user: user.clone(),
            upstream: upstream.to_string(),
        })
        .unwrap_or_default();
        let sealed = state.upstream_box.seal(&self.owner, &json);
        if let Err(e) = state.store.put(&self.key, &sealed, Some(Self::TTL)).await {
            // The provider has rotated: losing its new token would sign the user out at the
            // next refresh. Kept here for a retry that reaches this replica.
            tracing::warn!(error = %e, "cannot keep the provider's refresh answer in the store; kept in memory");
            state.upstream_answers.insert(self.key.clone(), sealed);
        }
    }
}
