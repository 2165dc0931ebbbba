//! The end of every login, whichever way the user signed in (GitHub's `/callback`, the
//! development login, or the TOTP step after either): the allow-list and the account pin, the
//! second factor when it is required, then our single-use authorization code bound to the
//! client, its redirect URI, the PKCE challenge, the resource and the user.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpRequest, HttpResponse};

use super::authorize::{client_redirect, redirect_error};
use super::session::session_cookie;
use super::{AuthState, OAuthError, UpstreamUser};
use crate::audit::{Actor, Event, Events, Kind};
use crate::policy::Scope;
use crate::records::{CodeRecord, MfaPending, PendingAuthorization};
use crate::token::random_token;

/// Who the upstream vouched for, how, and their sealed upstream session when one is kept.
pub struct SignedIn {
    pub user: UpstreamUser,
    /// `github`, `oidc` or `dev`: the first `amr` entry.
    pub method: &'static str,
    pub upstream: Option<crate::records::UpstreamSession>,
}

/// The user is known: check the allow-list, issue our code, send the browser to the client.
pub async fn complete_login(
    state: &AuthState,
    req: &HttpRequest,
    pending: PendingAuthorization,
    signed_in: SignedIn,
) -> HttpResponse {
    let SignedIn {
        user,
        method,
        upstream,
    } = signed_in;
    // Kept only when something needs it: an MCP server that gets it, or our refresh that
    // refreshes the upstream session.
    let keep = state.settings.upstream_token.enabled()
        || (upstream.as_ref().is_some_and(|s| {
            s.refresh_token.is_some()
                && state
                    .upstream
                    .get(&s.provider)
                    .is_some_and(|p| p.refreshes())
        }));
    let upstream = upstream
        .filter(|_| keep)
        .map(|s| s.seal(&state.upstream_box, &user.id));
    // An error the client hears about at its redirect URI.
    let to_client = |error: &str, description: &str| {
        redirect_error(
            state,
            &pending.redirect_uri,
            pending.state.as_deref(),
            error,
            description,
        )
    };
    // Consent was skipped for the user this browser remembered: another account that signs in
    // upstream has approved nothing.
    if let Some(remembered) = &pending.remembered_for
        && !remembered.eq_ignore_ascii_case(&user.login)
    {
        tracing::info!(login = %user.login, "remembered consent belongs to another account");
        let refused = login_refused(state, req, &pending, &user, method)
            .refused("another account than the one that approved this client")
            .detail("remembered_for", remembered.as_str());
        state.record(Events::one(refused)).await;
        return to_client(
            "access_denied",
            "a different account signed in than the one that approved this client; start again",
        );
    }
    // Not configured = nobody: a forgotten setting must not open the gateway to everyone.
    if !state.settings.admission.admits(&user.identity()) {
        tracing::info!(login = %user.login, "login refused: no ALLOWED_* list admits this user");
        let refused =
            login_refused(state, req, &pending, &user, method).refused("user_not_allowed");
        state.record(Events::one(refused)).await;
        let who = user.email.as_deref().unwrap_or(&user.login).to_string();
        return not_admitted(state, &pending, &who);
    }
    match super::identity::pin_login(state, &user).await {
        Ok(true) => {}
        Ok(false) => {
            let refused = login_refused(state, req, &pending, &user, method)
                .refused("the name belongs to another account");
            state.record(Events::one(refused)).await;
            return refusal(
                state,
                &pending,
                &format!(
                    "The name {} belongs to another account on this gateway (one account per \
                     person, whichever provider it signs in with). Ask its operator.",
                    user.login
                ),
                "this account name belongs to another account",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e.description, "cannot record the login's account id");
            return to_client("temporarily_unavailable", "storage is unavailable");
        }
    }
    let mut pending = pending;
    match entitled_scope(state, &pending, &user).await {
        Ok(granted) => pending.granted_scope = Some(granted),
        Err((page, refused)) => {
            let refused = login_refused(state, req, &pending, &user, method)
                .refused("not_entitled")
                .detail("scopes", refused);
            state.record(Events::one(refused)).await;
            return page;
        }
    }
    if state.settings.mfa_required {
        return begin_second_factor(state, pending, user, method, upstream).await;
    }
    issue_code(
        state,
        req,
        pending,
        user,
        vec![method.to_string()],
        upstream,
    )
    .await
}

/// `login_refused` for `user` at the end of `pending`'s login.
fn login_refused(
    state: &AuthState,
    req: &HttpRequest,
    pending: &PendingAuthorization,
    user: &UpstreamUser,
    method: &str,
) -> Event {
    state
        .event(Kind::LoginRefused, Actor::User(user.login.clone()), req)
        .user(&user.login)
        .user_id(&user.id)
        .upstream(method)
        .client(&pending.client_id)
        .scope(&pending.scope)
}

/// What the user gets of what the client asked: the requested scopes ∩ the user's
/// entitlements. A login never fails because a client asked for too much; it ends on our 403
/// page only when nothing asked for may be granted, or when the request is a step-up (it asks
/// for scopes beyond what this user approved for this client before) and every scope it adds
/// is one the user may not hold: granting the rest again would send the client round the same
/// loop.
async fn entitled_scope(
    state: &AuthState,
    pending: &PendingAuthorization,
    user: &UpstreamUser,
) -> Result<String, (HttpResponse, String)> {
    let settings = &state.settings;
    let requested = Scope::parse(&pending.scope);
    let narrowed =
        settings
            .entitlements
            .narrow(&settings.scope_hierarchy, &requested, &user.identity());
    if narrowed.withheld.is_empty() {
        return Ok(narrowed.granted.to_string());
    }
    let previous = super::consent::load(state, &user.login, &pending.client_id)
        .await
        .ok()
        .flatten();
    let added = previous.map(|p| requested.beyond(&p.scopes));
    let futile_step_up = added.as_ref().is_some_and(|added| {
        !added.is_empty() && added.iter().all(|s| narrowed.withheld.contains(s))
    });
    if narrowed.granted.is_empty() || futile_step_up {
        let refused = match added.filter(|_| futile_step_up) {
            Some(added) => added,
            None => narrowed.withheld.clone(),
        };
        tracing::info!(login = %user.login, client_id = %pending.client_id, scopes = %refused.join(" "), "login refused: the user is not entitled to the scopes asked for");
        let page = refusal(
            state,
            pending,
            &format!(
                "{} is not entitled to {}. Ask the gateway's operator for access.",
                user.login,
                refused.join(" ")
            ),
            "the account is not entitled to the requested scope",
        );
        return Err((page, refused.join(" ")));
    }
    tracing::info!(login = %user.login, client_id = %pending.client_id, withheld = %narrowed.withheld.join(" "), "scopes left out: the user is not entitled to them");
    Ok(narrowed.granted.to_string())
}

/// The allow-lists said no: our page, so the person learns why; its link still tells the
/// client (`access_denied` to its redirect URI).
pub fn not_admitted(state: &AuthState, pending: &PendingAuthorization, who: &str) -> HttpResponse {
    refusal(
        state,
        pending,
        &format!(
            "{who} is not allowed to use this gateway. Ask its operator to add your account, e-mail domain or group."
        ),
        "this account is not allowed to use this gateway",
    )
}

/// Our 403 page saying `message`, with a link back that tells the client `access_denied`
/// (`description`).
pub fn refusal(
    state: &AuthState,
    pending: &PendingAuthorization,
    message: &str,
    description: &str,
) -> HttpResponse {
    state.metrics.error("callback", "access_denied");
    let client_state = pending.state.as_deref();
    let mut params = vec![
        ("error", "access_denied"),
        ("error_description", description),
    ];
    if let Some(s) = client_state {
        params.push(("state", s));
    }
    params.push(("iss", &state.settings.issuer));
    let back = client_redirect(state, &pending.redirect_uri, &params);
    state
        .pages
        .refusal(&OAuthError::access_denied(message), &back)
}

/// Issues our single-use authorization code and sends the browser back to the client; the
/// code is stored with the `login` event (and `entitlement_narrowed` when the user got less
/// than asked), the consent with `consent_granted` when it widened.
pub async fn issue_code(
    state: &AuthState,
    req: &HttpRequest,
    pending: PendingAuthorization,
    user: UpstreamUser,
    amr: Vec<String>,
    upstream: Option<String>,
) -> HttpResponse {
    let client_state = pending.state.as_deref();
    // In its user's bucket, as the family it is redeemed into.
    let code = crate::slots::Bucket::of_user(&user.login).mint_id(&random_token());
    let record = CodeRecord {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        redirect_uri_explicit: pending.redirect_uri_explicit,
        code_challenge: pending.code_challenge.clone(),
        scope: pending
            .granted_scope
            .clone()
            .unwrap_or_else(|| pending.scope.clone()),
        resource: pending.resource.clone(),
        user: user.clone(),
        amr,
        issued_at: state.now(),
        upstream,
    };
    let by_user = |kind| {
        state
            .event(kind, Actor::User(user.login.clone()), req)
            .user(&user.login)
            .user_id(&user.id)
            .upstream(record.amr.first().map_or("", String::as_str))
            .client(&pending.client_id)
            .resource(pending.resource.as_deref().unwrap_or(""))
    };
    let mut events = Events::one(
        by_user(Kind::Login)
            .scope(&record.scope)
            .detail("amr", record.amr.join(" ")),
    );
    if record.scope != pending.scope {
        events = events.and(
            by_user(Kind::EntitlementNarrowed)
                .scope(&record.scope)
                .detail("requested", pending.scope.as_str()),
        );
    }
    let granted = by_user(Kind::ConsentGranted).scope(&pending.scope);
    let stored = async {
        record
            .save(state.store.as_ref(), &code, state.now(), &events)
            .await
            .map_err(|e| e.to_string())?;
        super::consent::record(
            state,
            &user.login,
            &pending.client_id,
            pending.consent_request(&state.settings.issuer),
            granted,
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

/// After the upstream login: park the login and send the browser to the TOTP step.
pub async fn begin_second_factor(
    state: &AuthState,
    authorization: PendingAuthorization,
    user: UpstreamUser,
    method: &str,
    upstream: Option<String>,
) -> HttpResponse {
    let id = crate::slots::Bucket::of_client(&authorization.client_id).mint_id(&random_token());
    let pending = MfaPending {
        authorization,
        user,
        method: method.to_string(),
        upstream,
        csrf: random_token(),
        new_secret: None,
        enrolled: false,
    };
    if pending
        .save(state.store.as_ref(), &id, state.now())
        .await
        .is_err()
    {
        return state.pages.error(&OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "storage is unavailable",
        ));
    }
    HttpResponse::SeeOther()
        .insert_header((LOCATION, state.endpoint(&format!("/mfa?session={id}"))))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish()
}
