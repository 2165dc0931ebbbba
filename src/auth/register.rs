//! Dynamic client registration (RFC 7591) and management (RFC 7592).
//!
//! Redirect URIs: `https`, loopback `http` (`localhost`, `127.0.0.1`, `[::1]` exactly; any
//! port at redemption, RFC 8252 §7.3), private-use schemes (RFC 8252 §7.1), and the
//! out-of-band `urn:ietf:wg:oauth:2.0:oob`. Client secrets and registration access tokens are
//! stored only as SHA-256 hashes.

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::error::{json_response, track};
use super::ratelimit::Limited;
use super::{AuthState, OAuthError};
use crate::policy::{Scope, is_scope_token};
use crate::records::{ClientRecord, OOB_REDIRECT, is_loopback};
use crate::token::{random_token, sha256_b64url};

const MAX_TEXT: usize = 512;
const MAX_REDIRECT_URIS: usize = 20;
const MAX_CONTACTS: usize = 10;

/// Client metadata as a client sends it.
#[derive(Debug, Default, Deserialize)]
pub struct ClientMetadata {
    pub client_id: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub scope: Option<String>,
    pub contacts: Option<Vec<String>>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
}

/// Whether `uri` may be registered as a redirect URI.
pub fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    if uri == OOB_REDIRECT {
        return Ok(());
    }
    let url = url::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URI"))?;
    if url.fragment().is_some() {
        return Err(format!("{uri:?} has a fragment"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(format!(
            "{uri:?}: plain http is allowed only for localhost, 127.0.0.1 and [::1]"
        )),
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss" => {
            Err(format!("{uri:?}: scheme not allowed"))
        }
        "https" => Err(format!("{uri:?} has no host")),
        // Private-use URI schemes of native apps (RFC 8252 §7.1).
        _ => Ok(()),
    }
}

/// Unicode's bidirectional formatting characters (embeddings, overrides, isolates, marks).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// How a registering client may authenticate at `/token`, the first the default.
const REGISTRATION_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];

/// Validated metadata, with RFC 7591 defaults applied; `scopes_supported` is what a client
/// may register.
pub fn validate(
    metadata: ClientMetadata,
    scopes_supported: &[String],
) -> Result<ValidMetadata, OAuthError> {
    validate_for(metadata, scopes_supported, REGISTRATION_AUTH_METHODS)
}

/// [`validate`] with the token endpoint auth methods allowed, the first the default.
pub fn validate_for(
    metadata: ClientMetadata,
    scopes_supported: &[String],
    auth_methods: &[&str],
) -> Result<ValidMetadata, OAuthError> {
    let redirect_uris = metadata.redirect_uris.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(OAuthError::invalid_redirect_uri(
            "redirect_uris is required",
        ));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::invalid_redirect_uri("too many redirect_uris"));
    }
    for uri in &redirect_uris {
        if uri.len() > 2048 {
            return Err(OAuthError::invalid_redirect_uri("redirect URI too long"));
        }
        validate_redirect_uri(uri).map_err(OAuthError::invalid_redirect_uri)?;
    }
    let method = metadata
        .token_endpoint_auth_method
        .unwrap_or_else(|| auth_methods.first().copied().unwrap_or("none").into());
    if !auth_methods.contains(&method.as_str()) {
        return Err(OAuthError::invalid_client_metadata(format!(
            "token_endpoint_auth_method {method:?} is not supported"
        )));
    }
    let grant_types = metadata
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    if grant_types.is_empty()
        || grant_types
            .iter()
            .any(|g| g != "authorization_code" && g != "refresh_token")
    {
        return Err(OAuthError::invalid_client_metadata(
            "grant_types may contain only authorization_code and refresh_token",
        ));
    }
    let response_types = metadata
        .response_types
        .unwrap_or_else(|| vec!["code".into()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(OAuthError::invalid_client_metadata(
            "response_types may contain only code",
        ));
    }
    if let Some(scope) = &metadata.scope
        && let Some(s) = Scope::parse(scope)
            .first_not(|s| is_scope_token(s) && scopes_supported.iter().any(|x| x == s))
    {
        return Err(OAuthError::invalid_client_metadata(format!(
            "scope {s:?} is not supported"
        )));
    }
    let text = |name: &str, value: Option<String>| -> Result<Option<String>, OAuthError> {
        match value {
            Some(v) if v.len() > MAX_TEXT || v.chars().any(char::is_control) => {
                Err(OAuthError::invalid_client_metadata(format!(
                    "{name} is too long or has control characters"
                )))
            }
            // A name that reorders the text around it could make the consent page say
            // something else than it does (U+202E turns "nimda" into "admin").
            Some(v) if v.chars().any(is_bidi_control) => Err(OAuthError::invalid_client_metadata(
                format!("{name} has bidirectional control characters"),
            )),
            other => Ok(other.filter(|v| !v.is_empty())),
        }
    };
    let web_uri = |name: &str, value: Option<String>| -> Result<Option<String>, OAuthError> {
        let value = text(name, value)?;
        if let Some(v) = &value {
            let ok = url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
            if !ok {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "{name} must be an http(s) URL"
                )));
            }
        }
        Ok(value)
    };
    Ok(ValidMetadata {
        redirect_uris,
        token_endpoint_auth_method: method,
        grant_types,
        response_types,
        client_name: text("client_name", metadata.client_name)?,
        client_uri: web_uri("client_uri", metadata.client_uri)?,
        logo_uri: web_uri("logo_uri", metadata.logo_uri)?,
        scope: text("scope", metadata.scope)?,
        contacts: {
            let contacts = metadata.contacts.unwrap_or_default();
            if contacts.len() > MAX_CONTACTS {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "contacts may list at most {MAX_CONTACTS} addresses"
                )));
            }
            contacts
                .into_iter()
                .map(|c| text("contacts", Some(c)))
                .filter_map(Result::transpose)
                .collect::<Result<Vec<_>, _>>()?
        },
        software_id: text("software_id", metadata.software_id)?,
        software_version: text("software_version", metadata.software_version)?,
    })
}

/// Registration metadata that passed [`validate`].
pub struct ValidMetadata {
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: String,
    grant_types: Vec<String>,
    response_types: Vec<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    scope: Option<String>,
    contacts: Vec<String>,
    software_id: Option<String>,
    software_version: Option<String>,
}

impl ValidMetadata {
    pub fn apply(self, record: &mut ClientRecord) {
        record.redirect_uris = self.redirect_uris;
        record.token_endpoint_auth_method = self.token_endpoint_auth_method;
        record.grant_types = self.grant_types;
        record.response_types = self.response_types;
        record.client_name = self.client_name;
        record.client_uri = self.client_uri;
        record.logo_uri = self.logo_uri;
        record.scope = self.scope;
        record.contacts = self.contacts;
        record.software_id = self.software_id;
        record.software_version = self.software_version;
    }
}

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
        let public = metadata.token_endpoint_auth_method == "none";
        let secret = (!public).then(random_token);
        let registration_token = random_token();
        let lifetime = state.settings.client_lifetime;
        let mut record = ClientRecord {
            client_id: crate::token::random_id(16),
            client_secret_hash: secret.as_deref().map(|s| sha256_b64url(s.as_bytes())),
            registration_token_hash: sha256_b64url(registration_token.as_bytes()),
            redirect_uris: Vec::new(),
            token_endpoint_auth_method: String::new(),
            grant_types: Vec::new(),
            response_types: Vec::new(),
            client_name: None,
            client_uri: None,
            logo_uri: None,
            scope: None,
            contacts: Vec::new(),
            software_id: None,
            software_version: None,
            client_id_issued_at: now,
            client_secret_expires_at: lifetime.map_or(0, |d| now + d.as_secs() as i64),
            registered_from: state
                .client_network(&req)
                .map(|ip| sha256_b64url(ip.to_string().as_bytes())[..16].to_string()),
        };
        metadata.apply(&mut record);
        let (unused, evicted) = record
            .save_new(
                state.store.as_ref(),
                &state.settings.rate_limits,
                lifetime,
                state.clock.now_millis(),
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
        if (metadata.token_endpoint_auth_method == "none") != was_public {
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
        let revoked = state
            .store
            .delete_client(&client.client_id, state.settings.refresh_token_lifetime)
            .await?;
        tracing::info!(client_id = %client.client_id, revoked, "client deleted with everything issued to it");
        Ok(HttpResponse::NoContent()
            .insert_header((CACHE_CONTROL, "no-store"))
            .finish())
    }
    .await;
    track(&state, "register", result)
}

/// Shared by the other endpoint groups.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://localhost:8080/cb",
            "http://127.0.0.1/cb",
            "http://[::1]:3000/cb",
            "com.example.app:/oauth",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            OOB_REDIRECT,
        ] {
            assert!(validate_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com/cb",
            "http://127.0.0.2/cb",
            "http://example.com/cb",
            "https://example.com/cb#frag",
            "javascript:alert(1)",
            "data:text/html,x",
            "/relative",
            "https://",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
