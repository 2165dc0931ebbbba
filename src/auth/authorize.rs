//! `GET /authorize` (OAuth 2.1 §4.1.1 with PKCE S256, RFC 8707 `resource`, RFC 9207 `iss`) and
//! the consent step (`GET/POST /consent`) that comes before the upstream login.
//!
//! Errors before the client and its redirect URI are known show an error page, never a
//! redirect (an open redirector otherwise). Later errors go back to the client with `state`
//! and `iss`. A valid request answers 307 (as the original gateway did): to the consent page,
//! or straight to the upstream login when this browser's user already consented.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::client_auth::load_client;
use super::consent::{self, ConsentRecord, ConsentRequest};
use super::pages::csp_origin;
use super::params::{CodeChallenge, Resource};
use super::ratelimit::Limited;
use super::session::{
    Step, bind_browser, csrf_ok, form_page, other_browser_page, same_browser, session_user,
};
use super::{AuthState, OAuthError};
use crate::audit::{Events, Kind};
use crate::policy::OOB_REDIRECT;
use crate::policy::Scope;
use crate::records::{ClientRecord, PendingAuthorization};
use crate::token::random_token;

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

/// The scope a request asks for: as sent (every token one we support); without `scope`, the
/// client's registered `scope` if it has one, else `DEFAULT_SCOPE`: never everything. The
/// user's entitlements cut it further once they have signed in, whichever way it was asked.
pub fn resolve_scope(
    state: &AuthState,
    requested: Option<&str>,
    client: &ClientRecord,
) -> Result<String, String> {
    let supported = &state.settings.scopes_supported;
    let requested = Scope::parse(requested.unwrap_or(""));
    if let Some(bad) = requested.first_not(|s| supported.iter().any(|x| x == s)) {
        return Err(format!("scope {bad:?} is not supported"));
    }
    if !requested.is_empty() {
        return Ok(requested.to_string());
    }
    let registered = client
        .scope
        .as_deref()
        .map(|s| Scope::parse(s).filter(|s| supported.iter().any(|x| x == s)))
        .filter(|s| !s.is_empty());
    Ok(match registered {
        Some(own) => own.to_string(),
        None => state.settings.default_scope.clone(),
    })
}

async fn authorize(
    Step(req, query, state): Step<web::Query<Vec<(String, String)>>>,
) -> HttpResponse {
    if let Err(e) = state
        .limits
        .check(Limited::Authorize, state.client_network(&req))
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
                .error(&OAuthError::invalid_request(message.to_string()));
        }
    }
    let page_error = |error: &'static str, description: &str| {
        state.metrics.error("authorize", error);
        state.pages.error(&OAuthError::new(
            StatusCode::BAD_REQUEST,
            error,
            description,
        ))
    };

    let Some(client_id) = params.get("client_id").copied().filter(|c| !c.is_empty()) else {
        return page_error("invalid_request", "client_id is missing");
    };
    let client = match load_client(&state, client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => return page_error("invalid_client", "unknown client_id"),
        // A metadata document that cannot be used: why, on our page (never a redirect).
        Err(e) if e.code == "invalid_client" => {
            return page_error("invalid_client", &e.description);
        }
        Err(e) => return state.pages.error(&e),
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
            Err(e) => return state.pages.error(&e),
        },
        None => None,
    };
    let client_state = params.get("state").copied();
    let fail = |error: &'static str, description: &str| {
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
    let challenge = match CodeChallenge::parse(
        params.get("code_challenge").copied(),
        params.get("code_challenge_method").copied(),
    ) {
        Ok(c) => c,
        Err(e) => return fail("invalid_request", e),
    };
    let scope = match resolve_scope(&state, params.get("scope").copied(), &client) {
        Ok(s) => s,
        Err(e) => return fail("invalid_scope", &e),
    };
    let resource = match params.get("resource") {
        Some(r) => match Resource::parse(&state.settings, r).map(Resource::into_string) {
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
    let id = crate::slots::Bucket::of_client(&client.client_id).mint_id(&random_token());
    let mut pending = PendingAuthorization {
        client_id: client.client_id.clone(),
        redirect_uri,
        redirect_uri_explicit: explicit,
        state: client_state.map(str::to_string),
        code_challenge: challenge.into_string(),
        scope,
        granted_scope: None,
        resource,
        csrf: random_token(),
        approved: remembered,
        remembered_for: session_user.filter(|_| remembered),
        browser: None,
        created_at: state.now(),
    };
    let login_cookie = remembered.then(|| bind_browser(&state, &req, &mut pending));
    let started = state
        .client_event(Kind::AuthorizationStarted, &pending.client_id, &req)
        .scope(&pending.scope)
        .resource(pending.resource.as_deref().unwrap_or(""))
        .detail("consent_remembered", remembered);
    if let Err(e) = save_pending(&state, &id, &pending, &Events::one(started)).await {
        return state.pages.error(&e);
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

pub async fn save_pending(
    state: &AuthState,
    id: &str,
    pending: &PendingAuthorization,
    events: &Events,
) -> Result<(), OAuthError> {
    match pending
        .save(state.store.as_ref(), id, state.now(), events)
        .await?
    {
        Some(()) => Ok(()),
        None => Err(OAuthError::invalid_request(
            "the authorization request has expired",
        )),
    }
}

pub async fn load_pending(
    state: &AuthState,
    id: &str,
) -> Result<Option<PendingAuthorization>, OAuthError> {
    Ok(PendingAuthorization::load(state.store.as_ref(), id).await?)
}

/// The approved login of this browser that `state` names, or the page to answer with.
/// `step` names the refusal in the error metrics.
pub async fn approved_login(
    req: &HttpRequest,
    state: &AuthState,
    id: Option<&str>,
    step: &str,
) -> Result<(String, PendingAuthorization), HttpResponse> {
    let unknown = || {
        state.pages.error(&OAuthError::invalid_state(
            "this login is unknown or has expired; start again from your application",
        ))
    };
    let Some(id) = id else {
        return Err(unknown());
    };
    match load_pending(state, id).await {
        Ok(Some(p)) if p.approved => {
            if !same_browser(req, &p) {
                return Err(other_browser_page(state, step));
            }
            Ok((id.to_string(), p))
        }
        Ok(_) => Err(unknown()),
        Err(e) => Err(state.pages.error(&e)),
    }
}

/// Where the user signs in upstream; `id` travels as the upstream `state`: straight to the
/// only provider when that needs no I/O, else our own step (`/login/{provider}`, or the
/// chooser when there are several).
pub fn upstream_login_url(state: &AuthState, id: &str) -> String {
    let issuer = &state.settings.issuer;
    match state.upstream.only() {
        Some(provider) => provider
            .direct_url(issuer, id)
            .unwrap_or_else(|| state.endpoint(&format!("/login/{}?state={id}", provider.name()))),
        None => state.endpoint(&format!("/login?state={id}")),
    }
}

async fn consent_page(Step(req, query, state): Step<web::Query<ConsentForm>>) -> HttpResponse {
    let Some(id) = query.request.as_deref() else {
        return state
            .pages
            .error(&OAuthError::invalid_request("no authorization request"));
    };
    let pending = match load_pending(&state, id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return state.pages.error(&OAuthError::invalid_request(
                "this authorization request is unknown or has expired",
            ));
        }
        Err(e) => return state.pages.error(&e),
    };
    let client = match load_client(&state, &pending.client_id).await {
        Ok(Some(c)) => c,
        _ => {
            return state.pages.error(&OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                "the client no longer exists",
            ));
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
    let new_scopes: Vec<String> = previous
        .as_ref()
        .map(|c| c.new_scopes(request))
        .unwrap_or_default();
    let new_resource = previous
        .as_ref()
        .is_some_and(|c| !c.covers_resource(request.resource));
    // A metadata-document client is who its host says: the host is what the user can judge
    // (the name is the document's own claim).
    let document_host = super::cimd::is_document_id(&client.client_id)
        .then(|| url::Url::parse(&client.client_id).ok())
        .flatten()
        .and_then(|u| u.host_str().map(str::to_string));
    let localhost_only = document_host.is_some()
        && client
            .redirect_uris
            .iter()
            .all(|uri| url::Url::parse(uri).is_ok_and(|u| crate::policy::is_loopback(&u)));
    // Scopes some grant restricts: the page says who may hold them, and that they are left out
    // for anyone else (the signed-in account is known only after the upstream login).
    let settings = &state.settings;
    let restricted: Vec<minijinja::Value> = crate::policy::Scope::parse(&pending.scope)
        .iter()
        .filter_map(|scope| {
            let who = settings
                .entitlements
                .restricted_to(&settings.scope_hierarchy, scope)?;
            Some(minijinja::context! { scope => scope, who => who })
        })
        .collect();
    let html = state.pages.render(
        "consent.html",
        minijinja::context! {
            restricted => restricted,
            document_host => document_host,
            document_url => client.client_id,
            localhost_only => localhost_only,
            client_name => client.display_name(),
            client_uri => client.client_uri,
            resource_name => state.settings.resource_name,
            resource => resource,
            scope => pending.scope,
            previously_approved => previous.is_some(),
            new_scopes => new_scopes,
            new_resource => new_resource,
            redirect_host => redirect_host,
            upstream_name => state.upstream.display_name(),
            request_id => id,
            csrf_token => pending.csrf,
        },
    );
    let mut targets: Vec<String> = Vec::new();
    if let Some(o) = csp_origin(&upstream_login_url(&state, id)) {
        targets.push(o);
    }
    // The approval may go on through /login/{provider} to the provider: form-action covers
    // every redirect of the submission, so the provider's origin must be named too.
    if let Some(provider) = state.upstream.only() {
        targets.extend(provider.form_origins().await);
    }
    if let Some(o) = csp_origin(&client_redirect(&state, &pending.redirect_uri, &[])) {
        targets.push(o);
    }
    form_page(
        &state,
        StatusCode::OK,
        html,
        &targets,
        &pending.csrf,
        "/consent",
    )
}

/// The consent page's query (`request`) and its form (with the CSRF token and the decision).
#[derive(Deserialize)]
struct ConsentForm {
    request: Option<String>,
    csrf_token: Option<String>,
    decision: Option<String>,
}

async fn consent_decision(Step(req, form, state): Step<web::Form<ConsentForm>>) -> HttpResponse {
    let forbidden = |description: &str| {
        state.metrics.error("consent", "access_denied");
        state.pages.error(&OAuthError::access_denied(description))
    };
    let Some(id) = form.request.as_deref() else {
        return forbidden("no authorization request");
    };
    let mut pending = match load_pending(&state, id).await {
        Ok(Some(p)) => p,
        Ok(None) => return forbidden("this authorization request is unknown or has expired"),
        Err(e) => return state.pages.error(&e),
    };
    if !csrf_ok(&req, &pending, form.csrf_token.as_deref()) {
        return forbidden("the consent form could not be verified (CSRF); start the sign-in again");
    }
    if form.decision.as_deref() != Some("approve") {
        let _ = PendingAuthorization::discard(state.store.as_ref(), id).await;
        let denied = state
            .client_event(Kind::ConsentDenied, &pending.client_id, &req)
            .scope(&pending.scope)
            .resource(pending.resource.as_deref().unwrap_or(""))
            .refused("the user denied access");
        state.record(Events::one(denied)).await;
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
    if let Err(e) = save_pending(&state, id, &pending, &Events::none()).await {
        return state.pages.error(&e);
    }
    let mut response = HttpResponse::SeeOther()
        .insert_header((LOCATION, upstream_login_url(&state, id)))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish();
    let _ = response.add_cookie(&cookie);
    response
}
