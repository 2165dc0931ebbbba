//! The end of the upstream login: `GET /callback` (GitHub sends the user back here) or the
//! development login form (`/dev/login`, `mcp-gateway dev` only). Both finish in
//! [`complete_login`]: the allow-list, then a single-use authorization code bound to the
//! client, its redirect URI, the PKCE challenge, the resource and the user.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::authorize::{
    PendingAuthorization, client_redirect, csrf_cookie, csrf_ok, load_pending, other_browser_page,
    redirect_error, session_cookie,
};
use super::github::UpstreamError;
use super::{AuthState, CODE_LIFETIME, Upstream, UpstreamUser};
use crate::store::keys;
use crate::token::{random_token, sha256_b64url};

/// An issued authorization code, under `oauth:code:{sha256(code)}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_explicit: bool,
    pub code_challenge: String,
    pub scope: String,
    pub resource: Option<String>,
    pub user: UpstreamUser,
    pub amr: Vec<String>,
    pub issued_at: i64,
}

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
    let pending: Option<PendingAuthorization> = match state.store.take(&keys::state(id)).await {
        Ok(json) => json.and_then(|j| serde_json::from_str(&j).ok()),
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
    if !pending.same_browser(&req) {
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

/// The user is known: check the allow-list, issue our code, send the browser to the client.
pub async fn complete_login(
    state: &AuthState,
    _req: &HttpRequest,
    pending: PendingAuthorization,
    user: UpstreamUser,
) -> HttpResponse {
    let client_state = pending.state.as_deref();
    // Consent was skipped for the user this browser remembered: another account that signs in
    // upstream has approved nothing.
    if let Some(remembered) = &pending.remembered_for
        && !remembered.eq_ignore_ascii_case(&user.login)
    {
        tracing::info!(login = %user.login, "remembered consent belongs to another account");
        return redirect_error(
            state,
            &pending.redirect_uri,
            client_state,
            "access_denied",
            "a different account signed in than the one that approved this client; start again",
        );
    }
    // Not configured = nobody: a forgotten setting must not open the gateway to everyone.
    let allowed = state
        .settings
        .allowed_users
        .as_ref()
        .is_some_and(|list| list.allows(&user.id, &user.login));
    if !allowed {
        tracing::info!(login = %user.login, "login refused: user not in ALLOWED_GITHUB_USERS");
        return redirect_error(
            state,
            &pending.redirect_uri,
            client_state,
            "access_denied",
            "this account is not allowed to use this gateway",
        );
    }
    match super::identity::pin_login(state, &user).await {
        Ok(true) => {}
        Ok(false) => {
            return redirect_error(
                state,
                &pending.redirect_uri,
                client_state,
                "access_denied",
                "this account name belonged to another account before; ask an operator",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e.description, "cannot record the login's account id");
            return redirect_error(
                state,
                &pending.redirect_uri,
                client_state,
                "temporarily_unavailable",
                "storage is unavailable",
            );
        }
    }
    if state.settings.mfa_required {
        return super::mfa::begin(state, pending, user).await;
    }
    issue_code(state, pending, user, vec!["github".into()]).await
}

/// Issues our single-use authorization code and sends the browser back to the client.
pub async fn issue_code(
    state: &AuthState,
    pending: PendingAuthorization,
    user: UpstreamUser,
    amr: Vec<String>,
) -> HttpResponse {
    let client_state = pending.state.as_deref();
    let code = random_token();
    let record = CodeRecord {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        redirect_uri_explicit: pending.redirect_uri_explicit,
        code_challenge: pending.code_challenge.clone(),
        scope: pending.scope.clone(),
        resource: pending.resource.clone(),
        user: user.clone(),
        amr,
        issued_at: state.now(),
    };
    let stored = async {
        let json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        state
            .store
            .put_for_client(
                &keys::code(&sha256_b64url(code.as_bytes())),
                &json,
                CODE_LIFETIME,
                &record.client_id,
                state.now(),
            )
            .await
            .map_err(|e| e.to_string())?;
        super::consent::record(
            state,
            &user.login,
            &pending.client_id,
            pending.consent_request(&state.settings.issuer),
        )
        .await
        .map_err(|e| e.description)
    }
    .await;
    if let Err(e) = stored {
        tracing::warn!(error = %e, "cannot store the authorization code");
        return redirect_error(
            state,
            &pending.redirect_uri,
            client_state,
            "temporarily_unavailable",
            "storage is unavailable",
        );
    }
    state.metrics.logins.inc();
    tracing::info!(login = %user.login, client_id = %pending.client_id, "login complete, code issued");
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = client_state {
        params.push(("state", s));
    }
    params.push(("iss", &state.settings.issuer));
    let mut response = HttpResponse::Found()
        .insert_header((
            LOCATION,
            client_redirect(state, &pending.redirect_uri, &params),
        ))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish();
    let _ = response.add_cookie(&session_cookie(state, &user.login));
    response
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
        return Err(state.pages.error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no login in progress",
        ));
    };
    match load_pending(state, id).await {
        Ok(Some(p)) if p.approved => Ok((id.to_string(), p)),
        _ => Err(state.pages.error_page(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "this login is unknown or has expired",
        )),
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
    if !pending.same_browser(&req) {
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
    if !pending.same_browser(&req) {
        return other_browser_page(&state, "dev_login");
    }
    if !csrf_ok(&req, &pending, form.csrf_token.as_deref()) {
        return state.pages.error_page(
            StatusCode::FORBIDDEN,
            "access_denied",
            "the login form could not be verified (CSRF)",
        );
    }
    let login = form.login.as_deref().unwrap_or("").trim();
    let valid = !login.is_empty()
        && login.len() <= 39
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return state.pages.error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a GitHub user name has 1 to 39 letters, digits or dashes",
        );
    }
    // Single use, as the GitHub state is.
    match state.store.take(&keys::state(id)).await {
        Ok(Some(_)) => {}
        _ => {
            return state.pages.error_page(
                StatusCode::BAD_REQUEST,
                "invalid_state",
                "this login was already used",
            );
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
