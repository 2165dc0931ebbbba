//! Token revocation (RFC 7009) and introspection (RFC 7662). Both authenticate the client and
//! act only on that client's own tokens; revocation always answers 200 so it reveals nothing,
//! and introspection answers `active: false` for anything not live.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};

use super::client_auth::{authenticate, parse_form};
use super::error::track;
use super::{AuthState, OAuthError};
use crate::audit::{Event, Events, Kind, outcome};
use crate::records::{ClientRecord, RefreshRecord};
use crate::token::{AccessClaims, ValidationPolicy, validate};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/revoke", web::post().to(revoke))
        .route("/introspect", web::post().to(introspect));
}

/// What a presented token is, if it is one of ours.
enum Known {
    Access(AccessClaims),
    Refresh(RefreshRecord),
    Unknown,
}

async fn identify(state: &AuthState, token: &str) -> Result<Known, OAuthError> {
    if token.matches('.').count() == 2 {
        let policy = ValidationPolicy::new(state.settings.issuer.clone());
        if let Ok(claims) = validate(token, &state.settings.keys, &policy, state.now()) {
            return Ok(Known::Access(claims));
        }
        return Ok(Known::Unknown);
    }
    let hash = crate::slots::placed_hash(token);
    Ok(
        match crate::records::unreadable_as_none(
            RefreshRecord::load(state.store.as_ref(), &hash).await,
        )? {
            Some(record) => Known::Refresh(record),
            None => Known::Unknown,
        },
    )
}

/// The client that authenticated, and the `token` it presents (required, RFC 7009 §2.1, RFC
/// 7662 §2.1).
async fn presented_token(
    state: &AuthState,
    req: &HttpRequest,
    body: &web::Bytes,
) -> Result<(ClientRecord, String), OAuthError> {
    let form = parse_form(req, body)?;
    let client = authenticate(state, req, &form).await?;
    let token = form
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    Ok((client, token.to_string()))
}

fn owned(client: &ClientRecord, client_id: &str) -> bool {
    client.client_id == client_id
}

/// `token_revoked` by the client itself (RFC 7009).
fn revoked_by(state: &AuthState, req: &HttpRequest, client: &ClientRecord) -> Event {
    state
        .client_event(Kind::TokenRevoked, &client.client_id, req)
        .reason("revoked by its client (RFC 7009)")
}

async fn revoke(req: HttpRequest, body: web::Bytes, state: web::Data<AuthState>) -> HttpResponse {
    let result = async {
        let (client, token) = presented_token(&state, &req, &body).await?;
        match identify(&state, &token).await? {
            Known::Access(claims) if owned(&client, &claims.client_id) => {
                let revoked = revoked_by(&state, &req, &client)
                    .user(&claims.username)
                    .user_id(&claims.sub)
                    .jti(&claims.jti);
                state
                    .store
                    .revoke_token(&claims.jti, &Events::none().on(outcome::REVOKED, revoked))
                    .await?;
                tracing::info!(client_id = %client.client_id, "access token revoked");
            }
            Known::Refresh(record) if owned(&client, &record.client_id) => {
                // Revoking a refresh token ends the grant: its access tokens go too.
                let revoked = revoked_by(&state, &req, &client)
                    .user(&record.user.login)
                    .user_id(&record.user.id)
                    .family(&record.family_id);
                state.revoke_grant(&record.family_id, revoked).await?;
                tracing::info!(client_id = %client.client_id, "refresh token revoked with its family");
            }
            _ => {}
        }
        Ok(HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .finish())
    }
    .await;
    track(&state, "revoke", result)
}

async fn introspect(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let result = async {
        let (client, token) = presented_token(&state, &req, &body).await?;
        let answer = match identify(&state, &token).await? {
            Known::Access(claims)
                if owned(&client, &claims.client_id)
                    && state.store.token_is_live(&claims.jti).await? =>
            {
                let dpop = claims.cnf.as_ref().is_some_and(|c| c.jkt.is_some());
                let mut answer = serde_json::json!({
                    "active": true,
                    "token_type": if dpop { "DPoP" } else { "Bearer" },
                    "scope": claims.scope,
                    "client_id": claims.client_id,
                    "username": claims.username,
                    "sub": claims.sub,
                    "aud": claims.aud,
                    "iss": claims.iss,
                    "exp": claims.exp,
                    "iat": claims.iat,
                    "jti": claims.jti,
                });
                // RFC 9449 §6.2 / RFC 7800: the confirmation the resource must check.
                if let Some(cnf) = &claims.cnf {
                    answer["cnf"] = serde_json::to_value(cnf).unwrap_or_default();
                }
                answer
            }
            Known::Refresh(record)
                if owned(&client, &record.client_id)
                    && !record.used
                    && record.expires_at > state.now() =>
            {
                serde_json::json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "scope": record.scope,
                    "client_id": record.client_id,
                    "username": record.user.login,
                    "sub": record.user.id,
                    "exp": record.expires_at,
                    "iat": record.issued_at,
                })
            }
            _ => serde_json::json!({"active": false}),
        };
        Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((CACHE_CONTROL, "no-store"))
            .body(answer.to_string()))
    }
    .await;
    track(&state, "introspect", result)
}
