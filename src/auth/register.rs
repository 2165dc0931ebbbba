//! Dynamic client registration (RFC 7591) and management (RFC 7592).
//!
//! The metadata is validated by [`super::client_metadata`] (redirect URIs by
//! [`crate::policy::redirect`]). Client secrets and registration access tokens are stored only
//! as SHA-256 hashes.

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use subtle::ConstantTimeEq;

use super::client_metadata::{ClientMetadata, validate};
use super::error::{json_response, track};
use super::ratelimit::Limited;
use super::{AuthState, OAuthError};
use crate::audit::Kind;
use crate::records::ClientRecord;
use crate::token::{random_token, sha256_b64url};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/register", web::post().to(register))
        .route("/register/{client_id}", web::get().to(read))
        .route("/register/{client_id}", web::put().to(update))
        .route("/register/{client_id}", web::delete().to(delete));
}

/// The client's metadata as RFC 7591 §3.2.1 returns it.
fn client_json(
    state: &AuthState,
    record: &ClientRecord,
    secret: Option<&str>,
    registration_token: Option<&str>,
) -> serde_json::Value {
    let mut body = serde_json::to_value(record).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.remove("client_secret_hash");
        map.remove("registration_token_hash");
        map.remove("registered_from");
        if let Some(secret) = secret {
            map.insert("client_secret".into(), secret.into());
        }
        if let Some(token) = registration_token {
            map.insert("registration_access_token".into(), token.into());
        }
        map.insert(
            "registration_client_uri".into(),
            state
                .endpoint(&format!("/register/{}", record.client_id))
                .into(),
        );
    }
    body
}

fn parse_metadata(req: &HttpRequest, body: &[u8]) -> Result<ClientMetadata, OAuthError> {
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Err(OAuthError::invalid_client_metadata(
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| OAuthError::invalid_client_metadata(format!("invalid client metadata: {e}")))
}

async fn register(req: HttpRequest, body: web::Bytes, state: web::Data<AuthState>) -> HttpResponse {
    let result = async {
        state.limits.check(Limited::Register, state.client_network(&req))?;
        let metadata = validate(parse_metadata(&req, &body)?, &state.settings.scopes_supported)?;
        let now = state.now();
        let public = metadata.is_public();
        let secret = (!public).then(random_token);
        let registration_token = random_token();
        let lifetime = state.settings.client_lifetime;
        let mut record = metadata.into_record(crate::token::random_id(16));
        record.client_secret_hash = secret.as_deref().map(|s| sha256_b64url(s.as_bytes()));
        record.registration_token_hash = sha256_b64url(registration_token.as_bytes());
        record.client_id_issued_at = now;
        record.client_secret_expires_at = lifetime.map_or(0, |d| now + d.as_secs() as i64);
        record.registered_from = state
            .client_network(&req)
            .map(|ip| sha256_b64url(ip.to_string().as_bytes())[..16].to_string());
        let registered = state
            .client_event(Kind::ClientRegistered, &record.client_id, &req)
            .detail("client_name", record.client_name.clone().unwrap_or_default())
            .detail(
                "token_endpoint_auth_method",
                record.token_endpoint_auth_method.as_str(),
            )
            .detail("redirect_uris", record.redirect_uris.clone());
        let (unused, evicted) = record
            .save_new(
                state.store.as_ref(),
                &state.settings.rate_limits,
                lifetime,
                state.clock.now_millis(),
                registered,
            )
            .await?;
        state.metrics.registrations.inc();
        state.metrics.unused_clients.set(unused as i64);
        state.metrics.unused_clients_evicted.inc_by(evicted as u64);
        tracing::info!(client_id = %record.client_id, name = ?record.client_name, "client registered");
        Ok(json_response(
            StatusCode::CREATED,
            client_json(&state, &record, secret.as_deref(), Some(&registration_token)),
        ))
    }
    .await;
    track(&state, "register", result)
}

/// RFC 7592 §2: 401 without a token, then 404 for an unknown client, then 403 for a wrong token.
async fn authorized_client(
    req: &HttpRequest,
    state: &AuthState,
    client_id: &str,
) -> Result<ClientRecord, OAuthError> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(OAuthError::registration_token_missing)?;
    // A metadata-document client is managed by its document, not here.
    if super::cimd::is_document_id(client_id) {
        return Err(OAuthError::unknown_client());
    }
    let client = super::client_auth::load_client(state, client_id)
        .await?
        .ok_or_else(OAuthError::unknown_client)?;
    let presented = sha256_b64url(token.as_bytes());
    if !bool::from(
        presented
            .as_bytes()
            .ct_eq(client.registration_token_hash.as_bytes()),
    ) {
        return Err(OAuthError::registration_token_wrong());
    }
    Ok(client)
}

async fn read(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let result = async {
        let mut client = authorized_client(&req, &state, &path).await?;
        // The lifetime slides with use: report when the registration expires now.
        if client.client_secret_expires_at != 0
            && let crate::store::Ttl::Expires(left) =
                ClientRecord::remaining(state.store.as_ref(), &client.client_id).await?
        {
            client.client_secret_expires_at = state.now() + left.as_secs() as i64;
        }
        Ok(json_response(
            StatusCode::OK,
            client_json(&state, &client, None, None),
        ))
    }
    .await;
    track(&state, "register", result)
}

async fn update(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let result = async {
        let mut client = authorized_client(&req, &state, &path).await?;
        let metadata = parse_metadata(&req, &body)?;
        if metadata.client_id.as_deref() != Some(client.client_id.as_str()) {
            return Err(OAuthError::invalid_client_metadata(
                "client_id in the body must be this client's id",
            ));
        }
        let was_public = client.client_secret_hash.is_none();
        let metadata = validate(metadata, &state.settings.scopes_supported)?;
        if metadata.is_public() != was_public {
            return Err(OAuthError::invalid_client_metadata(
                "a client cannot switch between public and confidential; register a new one",
            ));
        }
        metadata.apply(&mut client);
        // An update keeps the registration's remaining (sliding) lifetime.
        let ttl = match ClientRecord::remaining(state.store.as_ref(), &client.client_id).await? {
            crate::store::Ttl::Expires(left) => Some(left.max(std::time::Duration::from_secs(1))),
            _ => None,
        };
        client.save(state.store.as_ref(), ttl).await?;
        Ok(json_response(
            StatusCode::OK,
            client_json(&state, &client, None, None),
        ))
    }
    .await;
    track(&state, "register", result)
}

async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let result = async {
        let client = authorized_client(&req, &state, &path).await?;
        let deleted = state
            .client_event(Kind::ClientDeleted, &client.client_id, &req)
            .reason("deleted by its client (RFC 7592)");
        let revoked = state
            .store
            .delete_client(
                &client.client_id,
                state.settings.refresh_token_lifetime,
                Some(deleted),
            )
            .await?;
        tracing::info!(client_id = %client.client_id, revoked, "client deleted with everything issued to it");
        Ok(HttpResponse::NoContent()
            .insert_header((CACHE_CONTROL, "no-store"))
            .finish())
    }
    .await;
    track(&state, "register", result)
}
