//! The upstream login: the chooser (`GET /login`, when GitHub and an OpenID provider are both
//! configured), the start at a provider (`GET /login/{github|oidc}`), and its end: `GET
//! /callback` (GitHub), `GET /callback/oidc` (the OpenID provider) or the development login
//! form (`/dev/login`, `mcp-gateway dev` only). All finish in [`complete_login`]: the
//! allow-list, then a single-use authorization code bound to the client, its redirect URI, the
//! PKCE challenge, the resource and the user.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::authorize::{client_redirect, load_pending, redirect_error};
use super::github::UpstreamError;
use super::login::{SignedIn, complete_login};
use super::session::{csrf_cookie, csrf_ok, other_browser_page, same_browser};
use super::{AuthState, OAuthError, Upstream, UpstreamUser};
use crate::records::PendingAuthorization;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/callback", web::get().to(callback))
        .route(OIDC_CALLBACK, web::get().to(oidc_callback))
        .route("/login", web::get().to(chooser))
        .route("/login/{provider}", web::get().to(start))
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
    /// RFC 9207: who sent the user back (OpenID providers that support it).
    iss: Option<String>,
}

/// The front half of every upstream callback: the state is spent, must be an approved login
/// of this browser, and the provider must have sent a code.
async fn returning(
    req: &HttpRequest,
    query: &CallbackQuery,
    state: &AuthState,
    provider: &str,
) -> Result<(String, PendingAuthorization, String), HttpResponse> {
    let Some(id) = query.state.as_deref() else {
        return Err(error_redirect(
            state,
            "invalid_state",
            "the login came back without state",
        ));
    };
    // Single use: whatever happens next, this state is gone.
    let pending = match PendingAuthorization::take(state.store.as_ref(), id).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %e, "callback cannot read pending authorization");
            return Err(error_redirect(
                state,
                "temporarily_unavailable",
                "try again shortly",
            ));
        }
    };
    let Some(pending) = pending.filter(|p| p.approved) else {
        return Err(error_redirect(
            state,
            "invalid_state",
            "this login is unknown, was already used, or has expired",
        ));
    };
    // The provider's URL carries our state: whoever it was sent to must not finish a login
    // that another browser approved (the state is spent either way).
    if !same_browser(req, &pending) {
        return Err(other_browser_page(state, "callback"));
    }
    let client_state = pending.state.as_deref();
    if query.error.is_some() {
        return Err(redirect_error(
            state,
            &pending.redirect_uri,
            client_state,
            "access_denied",
            &format!("the login was cancelled at {provider}"),
        ));
    }
    let Some(code) = query.code.clone() else {
        return Err(redirect_error(
            state,
            &pending.redirect_uri,
            client_state,
            "access_denied",
            &format!("{provider} sent no code"),
        ));
    };
    Ok((id.to_string(), pending, code))
}

/// The client's answer when the upstream refused the login or could not be reached.
fn upstream_failed(
    state: &AuthState,
    pending: &PendingAuthorization,
    provider: &str,
    error: UpstreamError,
) -> HttpResponse {
    state.metrics.upstream_failures.inc();
    let (code, description) = match error {
        UpstreamError::Refused(why) => {
            tracing::info!(provider, reason = %why, "upstream login refused");
            ("access_denied", format!("the {provider} login failed"))
        }
        UpstreamError::Unavailable(why) | UpstreamError::Throttled { why, .. } => {
            tracing::warn!(provider, reason = %why, "upstream unavailable");
            (
                "temporarily_unavailable",
                format!("{provider} could not be reached"),
            )
        }
        UpstreamError::NotAdmitted(why) => {
            tracing::info!(provider, reason = %why, "login refused: the account is not admitted");
            return super::login::not_admitted(state, pending, &format!("this {provider} account"));
        }
    };
    redirect_error(
        state,
        &pending.redirect_uri,
        pending.state.as_deref(),
        code,
        &description,
    )
}

async fn callback(
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let Some(github) = state.upstream.github() else {
        return error_redirect(
            &state,
            "invalid_request",
            "this gateway does not use GitHub",
        );
    };
    let (_, pending, code) = match returning(&req, &query, &state, "GitHub").await {
        Ok(found) => found,
        Err(page) => return page,
    };
    match github.login(&code, &state.endpoint("/callback")).await {
        Ok((user, session)) => {
            let signed_in = SignedIn {
                user,
                method: "github",
                upstream: Some(session),
            };
            complete_login(&state, &req, pending, signed_in).await
        }
        Err(e) => upstream_failed(&state, &pending, "GitHub", e),
    }
}

/// `GET /callback/oidc`: the OpenID provider sends the user back here.
async fn oidc_callback(
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let Some(oidc) = state.upstream.oidc() else {
        return error_redirect(
            &state,
            "invalid_request",
            "this gateway does not use an OpenID Connect provider",
        );
    };
    let name = oidc.settings().display_name.clone();
    let (id, pending, code) = match returning(&req, &query, &state, &name).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    // RFC 9207: a code that another issuer sent here (a mix-up) is never exchanged.
    if let Some(iss) = query.iss.as_deref()
        && iss != oidc.settings().issuer
    {
        let why = format!("the callback names issuer {iss:?}");
        return upstream_failed(&state, &pending, &name, UpstreamError::Refused(why));
    }
    match oidc.login(&code, &state.endpoint(OIDC_CALLBACK), &id).await {
        Ok(login) => {
            let signed_in = SignedIn {
                user: login.user,
                method: "oidc",
                upstream: Some(login.session),
            };
            complete_login(&state, &req, pending, signed_in).await
        }
        Err(e) => upstream_failed(&state, &pending, &name, e),
    }
}

/// Where the OpenID provider sends users back (register this redirect URI there).
pub const OIDC_CALLBACK: &str = "/callback/oidc";

#[derive(Deserialize)]
struct StartQuery {
    state: Option<String>,
}

/// The approved login of this browser that `state` names, or the page to answer with.
async fn approved_login(
    req: &HttpRequest,
    state: &AuthState,
    id: Option<&str>,
) -> Result<(String, PendingAuthorization), HttpResponse> {
    let unknown = || {
        state.pages.error(&OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "this login is unknown or has expired; start again from your application",
        ))
    };
    let Some(id) = id else {
        return Err(unknown());
    };
    match load_pending(state, id).await {
        Ok(Some(p)) if p.approved => {
            if !same_browser(req, &p) {
                return Err(other_browser_page(state, "login"));
            }
            Ok((id.to_string(), p))
        }
        Ok(_) => Err(unknown()),
        Err(e) => Err(state.pages.error(&e)),
    }
}

/// `GET /login?state=…`: the chooser, when both GitHub and an OpenID provider are configured.
async fn chooser(
    req: HttpRequest,
    query: web::Query<StartQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let (id, _) = match approved_login(&req, &state, query.state.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Upstream::Both {
        oidc, github_first, ..
    } = &state.upstream
    else {
        return HttpResponse::NotFound().finish();
    };
    let github = minijinja::context! { name => "GitHub", path => "github" };
    let oidc = minijinja::context! { name => oidc.settings().display_name.clone(), path => "oidc" };
    let providers = if *github_first {
        vec![github, oidc]
    } else {
        vec![oidc, github]
    };
    let html = state.pages.render(
        "choose.html",
        minijinja::context! { providers => providers, state => id },
    );
    state.pages.respond(StatusCode::OK, html, &[])
}

/// `GET /login/{provider}?state=…`: on to the provider's authorization endpoint.
async fn start(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StartQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let (id, pending) = match approved_login(&req, &state, query.state.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let target = match (
        path.as_str(),
        state.upstream.github(),
        state.upstream.oidc(),
    ) {
        ("github", Some(github), _) => Ok(github.authorize_url(&state.endpoint("/callback"), &id)),
        ("oidc", _, Some(oidc)) => {
            oidc.authorize_url(&state.endpoint(OIDC_CALLBACK), &id)
                .await
        }
        _ => return HttpResponse::NotFound().finish(),
    };
    match target {
        Ok(location) => HttpResponse::Found()
            .insert_header((LOCATION, location))
            .insert_header((CACHE_CONTROL, "no-store"))
            .finish(),
        Err(e) => upstream_failed(&state, &pending, path.as_str(), e),
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
        groups: Vec::new(),
    };
    let signed_in = SignedIn {
        user,
        method: "github",
        upstream: None,
    };
    complete_login(&state, &req, pending, signed_in).await
}
