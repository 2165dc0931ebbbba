//! Authorization-server metadata (RFC 8414), also served at the OpenID-configuration path
//! some clients try first, and the JWKS (RFC 7517) that resource servers verify with. The
//! grants it names: the authorization code and refresh token, `client_credentials` (for
//! clients the operator creates), and the JWT bearer grant with the ID-JAG profile when
//! trusted issuers are configured.

use actix_web::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

use super::AuthState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/.well-known/oauth-authorization-server",
        web::get().to(metadata),
    )
    .route("/.well-known/openid-configuration", web::get().to(metadata))
    .route("/jwks", web::get().to(jwks))
    .route("/.well-known/jwks.json", web::get().to(jwks));
}

pub fn document(state: &AuthState) -> serde_json::Value {
    let cimd = state.documents.enabled();
    // private_key_jwt: metadata-document clients, and clients the operator created with keys.
    let auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "none",
        "private_key_jwt",
    ];
    let issuers = &state.settings.trusted_issuers;
    let mut grant_types = vec!["authorization_code", "refresh_token", "client_credentials"];
    if !issuers.is_empty() {
        grant_types.push(super::client_metadata::JWT_BEARER);
    }
    let mut doc = serde_json::json!({
        "issuer": state.settings.issuer,
        "authorization_endpoint": state.endpoint("/authorize"),
        "token_endpoint": state.endpoint("/token"),
        "registration_endpoint": state.endpoint("/register"),
        "revocation_endpoint": state.endpoint("/revoke"),
        "introspection_endpoint": state.endpoint("/introspect"),
        "jwks_uri": state.endpoint("/jwks"),
        "scopes_supported": state.settings.scopes_supported,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": crate::token::dpop::ALGORITHMS,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": cimd,
        "service_documentation": "https://github.com/modelcontextprotocol",
    });
    let algs = super::assertion::SIGNING_ALGS;
    doc["token_endpoint_auth_signing_alg_values_supported"] = algs.into();
    doc["revocation_endpoint_auth_signing_alg_values_supported"] = algs.into();
    doc["introspection_endpoint_auth_signing_alg_values_supported"] = algs.into();
    if issuers
        .iter()
        .any(|t| t.kind == crate::config::IssuerKind::IdJag)
    {
        // draft-ietf-oauth-identity-assertion-authz-grant, "Authorization Server Metadata".
        doc["authorization_grant_profiles_supported"] =
            serde_json::json!(["urn:ietf:params:oauth:grant-profile:id-jag"]);
    }
    doc
}

async fn metadata(state: web::Data<AuthState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .insert_header((ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(document(&state).to_string())
}

async fn jwks(state: web::Data<AuthState>) -> HttpResponse {
    let body = serde_json::to_string(&state.settings.keys.jwks())
        .unwrap_or_else(|_| "{\"keys\":[]}".into());
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .insert_header((ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(body)
}
