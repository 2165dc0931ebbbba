//! `GET /authorize` (OAuth 2.1 §4.1.1 with PKCE S256, RFC 8707 `resource`, RFC 9207 `iss`) and
//! the consent step (`GET/POST /consent`) that comes before the upstream login.
//!
//! Errors before the client and its redirect URI are known show an error page, never a
//! redirect (an open redirector otherwise). Later errors go back to the client with `state`
//! and `iss`. A valid request answers 307 (as the original gateway did): to the consent page,
//! or straight to the upstream login when this browser's user already consented.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::client_auth::load_client;
use super::consent::{self, ConsentRecord, ConsentRequest};
use super::pages::csp_origin;
use super::ratelimit::Limited;
use super::register::{ClientRecord, OOB_REDIRECT};
use super::{AuthState, OAuthError, PENDING_LIFETIME, Upstream};
use crate::store::keys;
use crate::token::{random_token, sha256_b64url};

pub const CSRF_COOKIE: &str = "mcp_csrf";
pub const SESSION_COOKIE: &str = "mcp_session";
/// Binds a login in progress to its browser. Over HTTPS it is a `__Host-` cookie, which a
/// sibling subdomain cannot plant.
pub const LOGIN_COOKIE: &str = "mcp_login";
pub const LOGIN_COOKIE_SECURE: &str = "__Host-mcp_login";

/// An authorization in progress, under `oauth:state:{id}`; `id` is also the `state` we send
/// upstream, taken once at the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the client named the redirect URI (then the token request must repeat it).
    pub redirect_uri_explicit: bool,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: String,
    pub resource: Option<String>,
    pub csrf: String,
    pub approved: bool,
    /// Approved without the consent page because this user consented before: the upstream
    /// login must then be that user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remembered_for: Option<String>,
    /// SHA-256 of the login cookie of the browser that approved: only that browser may finish
    /// this login (a GitHub URL forwarded to someone else must not log them in for us).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    pub created_at: i64,
}

impl PendingAuthorization {
    /// What the user approves: the scope and the resource (the issuer when none was named).
    pub fn consent_request<'a>(&'a self, issuer: &'a str) -> ConsentRequest<'a> {
        ConsentRequest {
            scope: &self.scope,
            resource: self.resource.as_deref().unwrap_or(issuer),
        }
    }

    /// Whether `req` comes from the browser that approved this login, in constant time.
    pub fn same_browser(&self, req: &HttpRequest) -> bool {
        let (Some(expected), Some(cookie)) = (self.browser.as_deref(), login_cookie_value(req))
        else {
            return false;
        };
        bool::from(
            sha256_b64url(cookie.as_bytes())
                .as_bytes()
                .ct_eq(expected.as_bytes()),
        )
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/authorize", web::get().to(authorize))
        .route("/consent", web::get().to(consent_page))
        .route("/consent", web::post().to(consent_decision));
}

/// Appends parameters to a client redirect URI; the out-of-band URI goes to `/success`.
pub fn client_redirect(state: &AuthState, redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let base = if redirect_uri == OOB_REDIRECT {
        state.endpoint("/success")
    } else {
        redirect_uri.to_string()
    };
    match url::Url::parse(&base) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params.iter().copied());
            url.to_string()
        }
        Err(_) => base,
    }
}

/// An OAuth error sent back to the client's redirect URI (RFC 6749 §4.1.2.1, RFC 9207).
pub fn redirect_error(
    state: &AuthState,
    redirect_uri: &str,
    client_state: Option<&str>,
    error: &str,
    description: &str,
) -> HttpResponse {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = client_state {
        params.push(("state", s));
    }
    params.push(("iss", &state.settings.issuer));
    state.metrics.error("authorize", error);
    HttpResponse::Found()
        .insert_header((LOCATION, client_redirect(state, redirect_uri, &params)))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish()
}

/// `scope` as requested, checked against what we support; empty = everything supported.
pub fn resolve_scope(
    state: &AuthState,
    requested: Option<&str>,
    client: &ClientRecord,
) -> Result<String, String> {
    let supported = &state.settings.scopes_supported;
    let requested: Vec<&str> = requested
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if requested.is_empty() {
        return Ok(client.scope.clone().unwrap_or_else(|| supported.join(" ")));
    }
    if let Some(bad) = requested
        .iter()
        .find(|s| !supported.iter().any(|x| x == *s))
    {
        return Err(format!("scope {bad:?} is not supported"));
    }
    let mut unique: Vec<&str> = Vec::new();
    for s in requested {
        if !unique.contains(&s) {
            unique.push(s);
        }
    }
    Ok(unique.join(" "))
}

/// RFC 8707: an absolute http(s) URI without fragment, naming one of our MCP resources.
/// Returns its canonical form, which becomes the token's `aud`.
pub fn resolve_resource(state: &AuthState, resource: &str) -> Result<String, String> {
    let url = url::Url::parse(resource)
        .map_err(|_| format!("resource {resource:?} is not an absolute URI"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.fragment().is_some()
        || url.query().is_some()
    {
        return Err("resource must be an http(s) URI without query or fragment".into());
    }
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    let host_port = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    if !state
        .settings
        .resource_hosts
        .iter()
        .any(|p| p.matches(&host_port))
    {
        return Err(format!(
            "{host} is not a resource this server issues tokens for"
        ));
    }
    let path = match url.path() {
        "" => "/",
        p if p.len() > 1 => p.trim_end_matches('/'),
        p => p,
    };
    if path != state.settings.resource_path {
        return Err(format!(
            "resource path {path:?} is not the MCP endpoint {:?}",
            state.settings.resource_path
        ));
    }
    Ok(format!("{}://{}{}", url.scheme(), host_port, path))
}

/// RFC 7636 §4.2: base64url of a SHA-256, 43 characters.
fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn authorize(
    req: HttpRequest,
    query: web::Query<Vec<(String, String)>>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    if let Err(e) = state
        .limits
        .check(Limited::Authorize, state.client_ip(&req))
    {
        state.metrics.error("authorize", e.code);
        return actix_web::ResponseError::error_response(&e);
    }
    let mut params: HashMap<&str, &str> = HashMap::new();
    for (key, value) in query.iter() {
        if params.insert(key.as_str(), value.as_str()).is_some() {
            let message = format!("parameter {key} appears more than once");
            return state
                .pages
                .error_page(StatusCode::BAD_REQUEST, "invalid_request", &message);
        }
    }
    let page_error = |error: &str, description: &str| {
        state.metrics.error("authorize", error);
        state
            .pages
            .error_page(StatusCode::BAD_REQUEST, error, description)
    };

    let Some(client_id) = params.get("client_id").copied().filter(|c| !c.is_empty()) else {
        return page_error("invalid_request", "client_id is missing");
    };
    let client = match load_client(&state, client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => return page_error("invalid_client", "unknown client_id"),
        Err(e) => return state.pages.error_page(e.status, e.code, &e.description),
    };
    let (redirect_uri, explicit) = match params.get("redirect_uri") {
        Some(requested) => match client.matching_redirect(requested) {
            Some(_) => (requested.to_string(), true),
            None => {
                return page_error(
                    "invalid_request",
                    "redirect_uri is not registered for this client",
                );
            }
        },
        None if client.redirect_uris.len() == 1 => (client.redirect_uris[0].clone(), false),
        None => return page_error("invalid_request", "redirect_uri is required"),
    };

    // RFC 9700 §4.11.2: anyone can register a redirect URI, so errors go back to it only when
    // this browser's user has approved the client before; otherwise we would be an open
    // redirector for whoever registered `https://evil.example/landing`.
    let session_user = session_user(&state, &req);
    let consent: Option<ConsentRecord> = match &session_user {
        Some(user) => match consent::load(&state, user, &client.client_id).await {
            Ok(found) => found,
            Err(e) => return state.pages.error_page(e.status, e.code, &e.description),
        },
        None => None,
    };
    let client_state = params.get("state").copied();
    let fail = |error: &str, description: &str| {
        if consent.is_some() {
            redirect_error(&state, &redirect_uri, client_state, error, description)
        } else {
            page_error(error, description)
        }
    };
    if params.get("response_type") != Some(&"code") {
        return fail("unsupported_response_type", "response_type must be code");
    }
    if !client.allows_grant("authorization_code") {
        return fail(
            "unauthorized_client",
            "this client may not use the authorization code grant",
        );
    }
    let Some(challenge) = params.get("code_challenge").copied() else {
        return fail(
            "invalid_request",
            "PKCE is required: send code_challenge with method S256",
        );
    };
    match params.get("code_challenge_method").copied() {
        Some("S256") => {}
        Some("plain") => {
            return fail(
                "invalid_request",
                "code_challenge_method plain is not allowed; use S256",
            );
        }
        _ => return fail("invalid_request", "code_challenge_method must be S256"),
    }
    if !valid_challenge(challenge) {
        return fail(
            "invalid_request",
            "code_challenge must be 43 base64url characters",
        );
    }
    let scope = match resolve_scope(&state, params.get("scope").copied(), &client) {
        Ok(s) => s,
        Err(e) => return fail("invalid_scope", &e),
    };
    let resource = match params.get("resource") {
        Some(r) => match resolve_resource(&state, r) {
            Ok(r) => Some(r),
            Err(e) => return fail("invalid_target", &e),
        },
        None => None,
    };

    // Consent is skipped only for what this user approved before: a wider scope or another
    // resource shows the page again.
    let request = ConsentRequest {
        scope: &scope,
        resource: resource.as_deref().unwrap_or(&state.settings.issuer),
    };
    let remembered = consent.as_ref().is_some_and(|c| c.covers(request));
    let id = random_token();
    let mut pending = PendingAuthorization {
        client_id: client.client_id.clone(),
        redirect_uri,
        redirect_uri_explicit: explicit,
        state: client_state.map(str::to_string),
        code_challenge: challenge.to_string(),
        scope,
        resource,
        csrf: random_token(),
        approved: remembered,
        remembered_for: session_user.filter(|_| remembered),
        browser: None,
        created_at: state.now(),
    };
    let login_cookie = remembered.then(|| bind_browser(&state, &req, &mut pending));
    if let Err(e) = save_pending(&state, &id, &pending).await {
        return state.pages.error_page(e.status, e.code, &e.description);
    }
    let location = if remembered {
        upstream_login_url(&state, &id)
    } else {
        state.endpoint(&format!("/consent?request={id}"))
    };
    let mut response = HttpResponse::TemporaryRedirect()
        .insert_header((LOCATION, location))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish();
    if let Some(cookie) = login_cookie {
        let _ = response.add_cookie(&cookie);
    }
    response
}

fn login_cookie_name(secure: bool) -> &'static str {
    if secure {
        LOGIN_COOKIE_SECURE
    } else {
        LOGIN_COOKIE
    }
}

/// The browser's login cookie, when it has a well-formed one.
fn login_cookie_value(req: &HttpRequest) -> Option<String> {
    [LOGIN_COOKIE_SECURE, LOGIN_COOKIE]
        .iter()
        .filter_map(|name| req.cookie(name))
        .map(|c| c.value().to_string())
        .find(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Binds `pending` to this browser (reusing its login cookie, so two sign-ins in one browser
/// both finish) and returns the cookie to set: HttpOnly, and SameSite=Lax so it comes along
/// on the top-level redirect back from the upstream login.
pub fn bind_browser(
    state: &AuthState,
    req: &HttpRequest,
    pending: &mut PendingAuthorization,
) -> Cookie<'static> {
    let value = login_cookie_value(req).unwrap_or_else(random_token);
    pending.browser = Some(sha256_b64url(value.as_bytes()));
    let secure = state.secure_cookies();
    Cookie::build(login_cookie_name(secure), value)
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::seconds(
            PENDING_LIFETIME.as_secs() as i64,
        ))
        .finish()
}

/// The page for a login step reached from a browser that did not approve it.
pub fn other_browser_page(state: &AuthState, step: &str) -> HttpResponse {
    state.metrics.error(step, "access_denied");
    tracing::warn!(
        step,
        "login step from a browser that did not start it: refused"
    );
    state.pages.error_page(
        StatusCode::FORBIDDEN,
        "access_denied",
        "this sign-in was started in another browser. If you did not start it, close this page; \
         otherwise start again from your application",
    )
}

pub async fn save_pending(
    state: &AuthState,
    id: &str,
    pending: &PendingAuthorization,
) -> Result<(), OAuthError> {
    let json =
        serde_json::to_string(pending).map_err(|e| OAuthError::server_error(e.to_string()))?;
    let elapsed = (state.now() - pending.created_at).max(0) as u64;
    let remaining = PENDING_LIFETIME.saturating_sub(Duration::from_secs(elapsed));
    if remaining.is_zero() {
        return Err(OAuthError::invalid_request(
            "the authorization request has expired",
        ));
    }
    state
        .store
        .put_for_client(
            &keys::state(id),
            &json,
            remaining,
            &pending.client_id,
            state.now(),
        )
        .await?;
    Ok(())
}

pub async fn load_pending(
    state: &AuthState,
    id: &str,
) -> Result<Option<PendingAuthorization>, OAuthError> {
    match state.store.get(&keys::state(id)).await? {
        Some(json) => Ok(serde_json::from_str(&json).ok()),
        None => Ok(None),
    }
}

/// Where the user signs in upstream; `id` travels as the upstream `state`.
pub fn upstream_login_url(state: &AuthState, id: &str) -> String {
    match &state.upstream {
        Upstream::Github(github) => github.authorize_url(&state.endpoint("/callback"), id),
        Upstream::DevLogin => state.endpoint(&format!("/dev/login?state={id}")),
    }
}

pub fn upstream_name(state: &AuthState) -> &'static str {
    match state.upstream {
        Upstream::Github(_) => "GitHub",
        Upstream::DevLogin => "the development login",
    }
}

/// Checks a form's CSRF token against the pending record and the browser's cookie, both in
/// constant time: a cross-site form cannot know the token, and a leaked link carries no cookie.
pub fn csrf_ok(req: &HttpRequest, pending: &PendingAuthorization, presented: Option<&str>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let Some(cookie) = req.cookie(CSRF_COOKIE) else {
        return false;
    };
    let expected = pending.csrf.as_bytes();
    bool::from(presented.as_bytes().ct_eq(expected))
        && bool::from(cookie.value().as_bytes().ct_eq(expected))
}

pub fn csrf_cookie(state: &AuthState, value: &str, path: &str) -> Cookie<'static> {
    Cookie::build(CSRF_COOKIE, value.to_string())
        .path(path.to_string())
        .http_only(true)
        .secure(state.secure_cookies())
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(
            PENDING_LIFETIME.as_secs() as i64,
        ))
        .finish()
}

#[derive(Deserialize)]
struct ConsentQuery {
    request: Option<String>,
}

async fn consent_page(
    req: HttpRequest,
    query: web::Query<ConsentQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let Some(id) = query.request.as_deref() else {
        return state.pages.error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no authorization request",
        );
    };
    let pending = match load_pending(&state, id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return state.pages.error_page(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "this authorization request is unknown or has expired",
            );
        }
        Err(e) => return state.pages.error_page(e.status, e.code, &e.description),
    };
    let client = match load_client(&state, &pending.client_id).await {
        Ok(Some(c)) => c,
        _ => {
            return state.pages.error_page(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                "the client no longer exists",
            );
        }
    };
    let redirect_host = url::Url::parse(&pending.redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(str::to_string)
                .or_else(|| Some(format!("{}:", u.scheme())))
        })
        .unwrap_or_else(|| pending.redirect_uri.clone());
    let resource = pending
        .resource
        .clone()
        .unwrap_or_else(|| state.settings.issuer.clone());
    // A user who approved this client before sees what this request adds.
    let previous = match session_user(&state, &req) {
        Some(user) => consent::load(&state, &user, &pending.client_id)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let request = pending.consent_request(&state.settings.issuer);
    let new_scopes: Vec<&str> = previous
        .as_ref()
        .map(|c| c.new_scopes(request))
        .unwrap_or_default();
    let new_resource = previous
        .as_ref()
        .is_some_and(|c| !c.covers_resource(request.resource));
    let html = state.pages.render(
        "consent.html",
        minijinja::context! {
            client_name => client.display_name(),
            client_uri => client.client_uri,
            resource_name => state.settings.resource_name,
            resource => resource,
            scope => pending.scope,
            previously_approved => previous.is_some(),
            new_scopes => new_scopes,
            new_resource => new_resource,
            redirect_host => redirect_host,
            upstream_name => upstream_name(&state),
            request_id => id,
            csrf_token => pending.csrf,
        },
    );
    let mut targets: Vec<String> = Vec::new();
    if let Some(o) = csp_origin(&upstream_login_url(&state, id)) {
        targets.push(o);
    }
    if let Some(o) = csp_origin(&client_redirect(&state, &pending.redirect_uri, &[])) {
        targets.push(o);
    }
    let mut response = state.pages.respond(StatusCode::OK, html, &targets);
    let _ = response.add_cookie(&csrf_cookie(&state, &pending.csrf, "/consent"));
    response
}

#[derive(Deserialize)]
struct ConsentForm {
    request: Option<String>,
    csrf_token: Option<String>,
    decision: Option<String>,
}

async fn consent_decision(
    req: HttpRequest,
    form: web::Form<ConsentForm>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let forbidden = |description: &str| {
        state.metrics.error("consent", "access_denied");
        state
            .pages
            .error_page(StatusCode::FORBIDDEN, "access_denied", description)
    };
    let Some(id) = form.request.as_deref() else {
        return forbidden("no authorization request");
    };
    let mut pending = match load_pending(&state, id).await {
        Ok(Some(p)) => p,
        Ok(None) => return forbidden("this authorization request is unknown or has expired"),
        Err(e) => return state.pages.error_page(e.status, e.code, &e.description),
    };
    if !csrf_ok(&req, &pending, form.csrf_token.as_deref()) {
        return forbidden("the consent form could not be verified (CSRF); start the sign-in again");
    }
    if form.decision.as_deref() != Some("approve") {
        let _ = state.store.take(&keys::state(id)).await;
        return redirect_error(
            &state,
            &pending.redirect_uri,
            pending.state.as_deref(),
            "access_denied",
            "the user denied access",
        );
    }
    pending.approved = true;
    let cookie = bind_browser(&state, &req, &mut pending);
    if let Err(e) = save_pending(&state, id, &pending).await {
        return state.pages.error_page(e.status, e.code, &e.description);
    }
    let mut response = HttpResponse::SeeOther()
        .insert_header((LOCATION, upstream_login_url(&state, id)))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish();
    let _ = response.add_cookie(&cookie);
    response
}

/// The browser-session cookie: `login.expiry.hmac`, proving this browser completed a login.
pub fn session_cookie(state: &AuthState, login: &str) -> Cookie<'static> {
    let expires = state.now() + super::CONSENT_LIFETIME.as_secs() as i64;
    let payload = format!("{}.{expires}", crate::token::b64url(login.as_bytes()));
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &state.cookie_key),
        payload.as_bytes(),
    );
    Cookie::build(
        SESSION_COOKIE,
        format!("{payload}.{}", crate::token::b64url(tag.as_ref())),
    )
    .path("/")
    .http_only(true)
    .secure(state.secure_cookies())
    .same_site(SameSite::Lax)
    .max_age(actix_web::cookie::time::Duration::seconds(
        super::CONSENT_LIFETIME.as_secs() as i64,
    ))
    .finish()
}

pub fn session_user(state: &AuthState, req: &HttpRequest) -> Option<String> {
    use base64::Engine;
    let cookie = req.cookie(SESSION_COOKIE)?;
    let (payload, tag) = cookie.value().rsplit_once('.')?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tag)
        .ok()?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &state.cookie_key);
    aws_lc_rs::hmac::verify(&key, payload.as_bytes(), &tag).ok()?;
    let (login, expires) = payload.split_once('.')?;
    if expires.parse::<i64>().ok()? < state.now() {
        return None;
    }
    let login = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(login)
        .ok()?;
    String::from_utf8(login).ok()
}
