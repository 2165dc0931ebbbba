//! The upstream login, for whichever providers are configured ([`super::upstream`]): the
//! chooser (`GET /login`, when there are several), the start at a provider (`GET
//! /login/{provider}`), and its end at `GET /callback/{provider}` (GitHub's at `GET
//! /callback`, where GitHub OAuth apps are registered). All finish in [`complete_login`]: the
//! allow-list, then a single-use authorization code bound to the client, its redirect URI, the
//! PKCE challenge, the resource and the user.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AuthState;
use super::authorize::{approved_login, client_redirect, redirect_error};
use super::login::{SignedIn, complete_login};
use super::session::{Step, other_browser_page, same_browser};
use super::upstream::UpstreamError;
use crate::audit::{Actor, Events, Kind};
use crate::records::PendingAuthorization;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/callback", web::get().to(github_callback))
        .route("/callback/{provider}", web::get().to(callback))
        .route("/login", web::get().to(chooser))
        .route("/login/{provider}", web::get().to(start))
        .configure(super::upstream::dev::routes);
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

/// The client's answer when the upstream refused the login or could not be reached; a
/// refusal is recorded (`login_refused`, by the upstream).
async fn upstream_failed(
    state: &AuthState,
    req: &HttpRequest,
    pending: &PendingAuthorization,
    provider: &str,
    error: UpstreamError,
) -> HttpResponse {
    state.metrics.upstream_failures.inc();
    if let UpstreamError::Refused(why) | UpstreamError::NotAdmitted(why) = &error {
        let refused = state
            .event(
                Kind::LoginRefused,
                Actor::Upstream(provider.to_string()),
                req,
            )
            .upstream(provider)
            .client(&pending.client_id)
            .scope(&pending.scope)
            .refused(why.as_str());
        state.record(Events::one(refused)).await;
    }
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

/// `GET /callback`: GitHub sends users back here (where GitHub OAuth apps are registered).
async fn github_callback(Step(req, query, state): Step<web::Query<CallbackQuery>>) -> HttpResponse {
    finish(&req, &query, &state, "/callback").await
}

/// `GET /callback/{provider}`: a provider sends the user back here.
async fn callback(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<CallbackQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    finish(&req, &query, &state, &format!("/callback/{path}")).await
}

/// The end of a login at the provider whose callback is `callback_path`: the code exchanged
/// for who signed in, then [`complete_login`].
async fn finish(
    req: &HttpRequest,
    query: &CallbackQuery,
    state: &AuthState,
    callback_path: &str,
) -> HttpResponse {
    let Some(provider) = state
        .upstream
        .all()
        .find(|p| p.callback_path() == callback_path)
    else {
        return error_redirect(
            state,
            "invalid_request",
            "this gateway does not sign users in that way",
        );
    };
    let display = provider.display_name();
    let (id, pending, code) = match returning(req, query, state, &display).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    // RFC 9207: a code that another issuer sent here (a mix-up) is never exchanged.
    if let (Some(iss), Some(expected)) = (query.iss.as_deref(), provider.issuer())
        && iss != expected
    {
        let why = format!("the callback names issuer {iss:?}");
        return upstream_failed(state, req, &pending, &display, UpstreamError::Refused(why)).await;
    }
    match provider.exchange(&code, &state.settings.issuer, &id).await {
        Ok(login) => {
            let signed_in = SignedIn {
                user: login.user,
                method: provider.amr(),
                upstream: Some(login.session),
            };
            complete_login(state, req, pending, signed_in).await
        }
        Err(e) => upstream_failed(state, req, &pending, &display, e).await,
    }
}

#[derive(Deserialize)]
struct StartQuery {
    state: Option<String>,
}

/// `GET /login?state=…`: the chooser, when several providers are configured (in `UPSTREAM`'s
/// order).
async fn chooser(Step(req, query, state): Step<web::Query<StartQuery>>) -> HttpResponse {
    let (id, _) = match approved_login(&req, &state, query.state.as_deref(), "login").await {
        Ok(found) => found,
        Err(page) => return page,
    };
    if state.upstream.only().is_some() {
        return HttpResponse::NotFound().finish();
    }
    let providers: Vec<minijinja::Value> = state
        .upstream
        .all()
        .map(|p| minijinja::context! { name => p.display_name(), path => p.name() })
        .collect();
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
    let (id, pending) = match approved_login(&req, &state, query.state.as_deref(), "login").await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(provider) = state.upstream.get(path.as_str()) else {
        return HttpResponse::NotFound().finish();
    };
    match provider.authorize_url(&state.settings.issuer, &id).await {
        Ok(location) => HttpResponse::Found()
            .insert_header((LOCATION, location))
            .insert_header((CACHE_CONTROL, "no-store"))
            .finish(),
        Err(e) => upstream_failed(&state, &req, &pending, &provider.display_name(), e).await,
    }
}
