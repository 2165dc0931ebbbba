//! The development login of `mcp-gateway dev` (loopback only): a form where any GitHub-shaped
//! name signs in, with no upstream at all. Its users are `dev-{login}` and their tokens say
//! `amr: ["github"]`, as GitHub's would (it stands in for GitHub).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use async_trait::async_trait;
use serde::Deserialize;

use super::{Login, Provider, UpstreamError};
use crate::auth::authorize::{approved_login, client_redirect};
use crate::auth::login::{SignedIn, complete_login};
use crate::auth::session::{Step, csrf_ok, form_page};
use crate::auth::{AuthState, OAuthError};
use crate::records::{PendingAuthorization, UpstreamUser};

/// Its name in `Upstreams`.
pub const NAME: &str = "dev";

/// The development login.
pub struct DevLogin;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dev/login", web::get().to(page))
        .route("/dev/login", web::post().to(submit));
}

#[async_trait]
impl Provider for DevLogin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn display_name(&self) -> String {
        "the development login".into()
    }

    fn amr(&self) -> &'static str {
        "github"
    }

    fn direct_url(&self, issuer: &str, state: &str) -> Option<String> {
        Some(format!("{issuer}/dev/login?state={state}"))
    }

    async fn authorize_url(&self, issuer: &str, state: &str) -> Result<String, UpstreamError> {
        Ok(format!("{issuer}/dev/login?state={state}"))
    }

    /// The form signs in by itself (`submit`); nothing comes back from elsewhere.
    async fn exchange(
        &self,
        _code: &str,
        _issuer: &str,
        _state: &str,
    ) -> Result<Login, UpstreamError> {
        Err(UpstreamError::Refused(
            "the development login has no callback".into(),
        ))
    }
}

#[derive(Deserialize)]
struct DevLoginQuery {
    state: Option<String>,
}

/// The approved login of this browser a development-login request continues, or the page to
/// answer with.
async fn dev_pending(
    state: &AuthState,
    req: &HttpRequest,
    id: Option<&str>,
) -> Result<(String, PendingAuthorization), HttpResponse> {
    if !state.upstream.is_dev() {
        return Err(HttpResponse::NotFound().finish());
    }
    approved_login(req, state, id, "dev_login").await
}

async fn page(Step(req, query, state): Step<web::Query<DevLoginQuery>>) -> HttpResponse {
    let (id, pending) = match dev_pending(&state, &req, query.state.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let id = id.as_str();
    let html = state.pages.render(
        "dev_login.html",
        minijinja::context! { state => id, csrf_token => pending.csrf, suggested => "" },
    );
    // The form ends in a redirect to the client (or to /mfa): CSP form-action must allow it.
    let target = client_redirect(&state, &pending.redirect_uri, &[]);
    let origins: Vec<String> = crate::auth::pages::csp_origin(&target)
        .into_iter()
        .collect();
    form_page(
        &state,
        StatusCode::OK,
        html,
        &origins,
        &pending.csrf,
        "/dev/login",
    )
}

#[derive(Deserialize)]
struct DevLoginForm {
    state: Option<String>,
    csrf_token: Option<String>,
    login: Option<String>,
}

/// `POST /dev/login`: the name typed in logs in (after the CSRF and same-browser checks).
async fn submit(Step(req, form, state): Step<web::Form<DevLoginForm>>) -> HttpResponse {
    let (id, pending) = match dev_pending(&state, &req, form.state.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let id = id.as_str();
    if !csrf_ok(&req, &pending, form.csrf_token.as_deref()) {
        return state.pages.error(&OAuthError::access_denied(
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
        return state.pages.error(&OAuthError::invalid_request(
            "a GitHub user name has 1 to 39 letters, digits or dashes",
        ));
    }
    // Single use, as the GitHub state is.
    match PendingAuthorization::discard(state.store.as_ref(), id).await {
        Ok(true) => {}
        _ => {
            return state
                .pages
                .error(&OAuthError::invalid_state("this login was already used"));
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
        method: DevLogin.amr(),
        upstream: None,
    };
    complete_login(&state, &req, pending, signed_in).await
}
