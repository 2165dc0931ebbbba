//! The end of the upstream login: `GET /callback` (GitHub sends the user back here) or the
//! development login form (`/dev/login`, `mcp-gateway dev` only). Both finish in
//! [`complete_login`]: the allow-list, then a single-use authorization code bound to the
//! client, its redirect URI, the PKCE challenge, the resource and the user.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::authorize::{client_redirect, load_pending, redirect_error};
use super::github::UpstreamError;
use super::login::complete_login;
use super::session::{csrf_cookie, csrf_ok, other_browser_page, same_browser};
use super::{AuthState, OAuthError, Upstream, UpstreamUser};
use crate::records::PendingAuthorization;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/callback", web::get().to(callback))
        .route("/dev/login", web::get().to(dev_login_page))
        .route("/dev/login", web::post().to(dev_login));
}

/// Where an unknown or expired `state` lands (the original gateway's behaviour).
fn error_redirect(state: &AuthState, error: &str, description: &str) -> HttpResponse {
    state.metrics.error("callback", error);
    let location = client_redirect(
        state,
        &state.endpoint("/error"),
        &[("error", error), ("error_description", description)],
    );
    HttpResponse::Found()
        .insert_header((LOCATION, location))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let Upstream::Github(github) = &state.upstream else {
        return error_redirect(
            &state,
            "invalid_request",
            "this gateway does not use GitHub",
        );
    };
    let Some(id) = query.state.as_deref() else {
        return error_redirect(&state, "invalid_state", "the login came back without state");
    };
    // Single use: whatever happens next, this state is gone.
    let pending = match PendingAuthorization::take(state.store.as_ref(), id).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %e, "callback cannot read pending authorization");
            return error_redirect(&state, "temporarily_unavailable", "try again shortly");
        }
    };
    let Some(pending) = pending.filter(|p| p.approved) else {
        return error_redirect(
            &state,
            "invalid_state",
            "this login is unknown, was already used, or has expired",
        );
    };
    // The GitHub URL carries our state: whoever it was sent to must not finish a login that
    // another browser approved (the state is spent either way).
    if !same_browser(&req, &pending) {
        return other_browser_page(&state, "callback");
    }
    let client_state = pending.state.as_deref();
    if query.error.is_some() {
        return redirect_error(
            &state,
            &pending.redirect_uri,
            client_state,
            "access_denied",
            "the login was cancelled at GitHub",
        );
    }
    let Some(code) = query.code.as_deref() else {
        return redirect_error(
            &state,
            &pending.redirect_uri,
            client_state,
            "access_denied",
            "GitHub sent no code",
        );
    };
    match github.login(code, &state.endpoint("/callback")).await {
        Ok(user) => complete_login(&state, &req, pending, user).await,
        Err(UpstreamError::Refused(why)) => {
            tracing::info!(reason = %why, "GitHub login refused");
            state.metrics.upstream_failures.inc();
            redirect_error(
                &state,
                &pending.redirect_uri,
                client_state,
                "access_denied",
                "the GitHub login failed",
            )
        }
        Err(UpstreamError::Unavailable(why)) => {
            tracing::warn!(reason = %why, "GitHub unavailable");
            state.metrics.upstream_failures.inc();
            redirect_error(
                &state,
                &pending.redirect_uri,
                client_state,
                "temporarily_unavailable",
                "GitHub could not be reached",
            )
        }
    }
}

#[derive(Deserialize)]
struct DevLoginQuery {
    state: Option<String>,
}

/// The approved login a development-login request continues, or the page to answer with.
async fn dev_pending(
    state: &AuthState,
    id: Option<&str>,
) -> Result<(String, PendingAuthorization), HttpResponse> {
    if !matches!(state.upstream, Upstream::DevLogin) {
        return Err(HttpResponse::NotFound().finish());
    }
    let Some(id) = id else {
        return Err(state.pages.error(&OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no login in progress",
        )));
    };
    match load_pending(state, id).await {
        Ok(Some(p)) if p.approved => Ok((id.to_string(), p)),
        _ => Err(state.pages.error(&OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "this login is unknown or has expired",
        ))),
    }
}

async fn dev_login_page(
    req: HttpRequest,
    query: web::Query<DevLoginQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let (id, pending) = match dev_pending(&state, query.state.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    if !same_browser(&req, &pending) {
        return other_browser_page(&state, "dev_login");
    }
    let id = id.as_str();
    let html = state.pages.render(
        "dev_login.html",
        minijinja::context! { state => id, csrf_token => pending.csrf, suggested => "" },
    );
    // The form ends in a redirect to the client (or to /mfa): CSP form-action must allow it.
    let target = client_redirect(&state, &pending.redirect_uri, &[]);
    let origins: Vec<String> = super::pages::csp_origin(&target).into_iter().collect();
    let mut response = state.pages.respond(StatusCode::OK, html, &origins);
    let _ = response.add_cookie(&csrf_cookie(&state, &pending.csrf, "/dev/login"));
    response
}

#[derive(Deserialize)]
struct DevLoginForm {
    state: Option<String>,
    csrf_token: Option<String>,
    login: Option<String>,
}

async fn dev_login(
    req: HttpRequest,
    form: web::Form<DevLoginForm>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let (id, pending) = match dev_pending(&state, form.state.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let id = id.as_str();
    if !same_browser(&req, &pending) {
        return other_browser_page(&state, "dev_login");
    }
    if !csrf_ok(&req, &pending, form.csrf_token.as_deref()) {
        return state.pages.error(&OAuthError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "the login form could not be verified (CSRF)",
        ));
    }
    let login = form.login.as_deref().unwrap_or("").trim();
    let valid = !login.is_empty()
        && login.len() <= 39
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return state.pages.error(&OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a GitHub user name has 1 to 39 letters, digits or dashes",
        ));
    }
    // Single use, as the GitHub state is.
    match PendingAuthorization::discard(state.store.as_ref(), id).await {
        Ok(true) => {}
        _ => {
            return state.pages.error(&OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_state",
                "this login was already used",
            ));
        }
    }
    let user = UpstreamUser {
        id: format!("dev-{}", login.to_ascii_lowercase()),
        login: login.to_string(),
        name: None,
        email: None,
    };
    complete_login(&state, &req, pending, user).await
}
