//! The TOTP step of the login (`/mfa`), between the upstream login and our code: a user with
//! no second factor enrols (QR code and key, confirmed with a first code, then one-time
//! recovery codes shown once); an enrolled user enters a code or a recovery code. Failures are
//! counted per user and per client address; past `MFA_MAX_FAILURES` within
//! `MFA_FAILURE_WINDOW` both are locked out for `MFA_LOCKOUT`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::login::issue_code;
use super::session::{Step, csrf_ok, form_page, other_browser_page, same_browser};
use super::{AuthState, OAuthError, totp};
use crate::audit::{Actor, Event, Events, Kind, outcome};
use crate::records::{MfaPending, MfaRecord};
use crate::store::{Attempt, AttemptLimit, Change, keys};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mfa", web::get().to(page))
        .route("/mfa", web::post().to(submit))
        .route("/mfa/continue", web::post().to(finish_enrolment));
}

async fn save(state: &AuthState, id: &str, pending: &MfaPending) -> Result<(), OAuthError> {
    pending
        .save(state.store.as_ref(), id, state.now())
        .await
        .map_err(|_| OAuthError::temporarily_unavailable("storage is unavailable"))
}

async fn load(state: &AuthState, id: &str) -> Option<MfaPending> {
    MfaPending::load(state.store.as_ref(), id).await.ok()?
}

/// The login waiting under the form's or link's `session`, or the page to answer with. Only
/// the browser that approved the login may continue it.
async fn pending_for(
    state: &AuthState,
    req: &HttpRequest,
    session: Option<&str>,
) -> Result<(String, MfaPending), HttpResponse> {
    let id = session.ok_or_else(|| expired(state))?;
    let pending = load(state, id).await.ok_or_else(|| expired(state))?;
    if !same_browser(req, &pending.authorization) {
        return Err(other_browser_page(state, "mfa"));
    }
    Ok((id.to_string(), pending))
}

/// A posted form's login: [`pending_for`], and the form's CSRF token must be the login's.
async fn posted(
    state: &AuthState,
    req: &HttpRequest,
    session: &Option<String>,
    csrf_token: &Option<String>,
) -> Result<(String, MfaPending), HttpResponse> {
    let (id, pending) = pending_for(state, req, session.as_deref()).await?;
    if !mfa_csrf_ok(req, &pending, csrf_token.as_deref()) {
        let refused = OAuthError::access_denied("the form could not be verified (CSRF)");
        return Err(state.pages.error(&refused));
    }
    Ok((id, pending))
}

pub async fn enrolment(state: &AuthState, user: &str) -> Option<MfaRecord> {
    MfaRecord::load(state.store.as_ref(), user).await.ok()?
}

/// Seconds left on a lockout of this user or address, if any.
async fn locked(state: &AuthState, user: &str, ip: &str) -> Option<u64> {
    for key in [keys::mfa_lock("user", user), keys::mfa_lock("ip", ip)] {
        if let Ok(crate::store::Ttl::Expires(left)) = state.store.ttl(&key).await {
            return Some(left.as_secs().max(1));
        }
    }
    None
}

fn locked_page(state: &AuthState, seconds: u64) -> HttpResponse {
    let minutes = seconds.div_ceil(60);
    let mut page = state.pages.error(&OAuthError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!(
            "Too many wrong codes. Sign-in is locked for {minutes} more minute(s); try again later."
        ),
    ));
    if let Ok(v) = seconds.to_string().parse() {
        page.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, v);
    }
    page
}

/// Reserves one attempt for the user and the address before any code is looked at: past
/// `MFA_MAX_FAILURES` within the window both are locked out, and of N guesses sent at once
/// only the first ones up to the limit are ever evaluated. `Ok(count)` is this attempt's number.
async fn reserve_attempt(
    state: &AuthState,
    req: &HttpRequest,
    user: &str,
    ip: &str,
) -> Result<u64, HttpResponse> {
    let mfa = &state.settings.mfa;
    let counters = [keys::mfa_fail("user", user), keys::mfa_fail("ip", ip)];
    let locks = [keys::mfa_lock("user", user), keys::mfa_lock("ip", ip)];
    let limit = AttemptLimit {
        max: u64::from(mfa.max_failures),
        window: mfa.failure_window,
        lockout: mfa.lockout,
    };
    let locked = Events::none().on(outcome::LOCKED, locked_event(state, req, user, ip));
    match state
        .store
        .reserve_attempt(&counters, &locks, &limit, &locked)
        .await
    {
        Ok(Attempt::Allowed { count }) => Ok(count),
        Ok(Attempt::Locked(left)) => Err(locked_page(state, left.as_secs().max(1))),
        Err(_) => Err(state.pages.error(&OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "storage is unavailable; try again",
        ))),
    }
}

/// `mfa_locked`: the user and the address (its network) are locked out.
fn locked_event(state: &AuthState, req: &HttpRequest, user: &str, ip: &str) -> Event {
    state
        .event(Kind::MfaLocked, Actor::System("mfa".into()), req)
        .user(user)
        .refused("too many wrong second-factor codes")
        .detail("network", ip)
        .detail("lockout_seconds", state.settings.mfa.lockout.as_secs())
}

/// A wrong code: counted already by its reservation; the last one allowed locks both out
/// (the user's lock written with its events).
async fn record_failure(
    state: &AuthState,
    req: &HttpRequest,
    failure: Failure<'_>,
    attempt: u64,
) -> bool {
    let Failure { user, ip, reason } = failure;
    state.metrics.mfa_failures.inc();
    let mfa = &state.settings.mfa;
    let failed = state
        .event(Kind::MfaFailed, Actor::User(user.to_string()), req)
        .user(user)
        .refused(reason)
        .detail("attempt", attempt);
    if attempt < u64::from(mfa.max_failures) {
        state.record(Events::one(failed)).await;
        return false;
    }
    state.metrics.mfa_lockouts.inc();
    tracing::warn!(login = %user, "second factor locked out after repeated failures");
    let events = Events::one(failed).and(locked_event(state, req, user, ip));
    let _ = state
        .store
        .change(
            &Change::Set {
                key: &keys::mfa_lock("user", user),
                value: "1",
                ttl: Some(mfa.lockout),
            },
            &events,
        )
        .await;
    let _ = state
        .store
        .put(&keys::mfa_lock("ip", ip), "1", Some(mfa.lockout))
        .await;
    for (kind, who) in [("user", user), ("ip", ip)] {
        let _ = state.store.delete(&keys::mfa_fail(kind, who)).await;
    }
    true
}

/// Whose code was wrong, from where, and why.
struct Failure<'a> {
    user: &'a str,
    ip: &'a str,
    reason: &'a str,
}

/// A success wipes the slate for this user and address.
async fn clear_failures(state: &AuthState, user: &str, ip: &str) {
    for (kind, who) in [("user", user), ("ip", ip)] {
        let _ = state.store.delete(&keys::mfa_fail(kind, who)).await;
    }
}

fn client_ip(state: &AuthState, req: &HttpRequest) -> String {
    state
        .client_network(req)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn expired(state: &AuthState) -> HttpResponse {
    state.pages.error(&OAuthError::invalid_state(
        "this sign-in is unknown or has expired; start again from your application",
    ))
}

/// Renders the enrolment or the verification form.
async fn render(
    state: &AuthState,
    id: &str,
    pending: &mut MfaPending,
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    let login = pending.user.login.clone();
    let html = if enrolment(state, &login).await.is_some() {
        state.pages.render(
            "mfa_verify.html",
            minijinja::context! { user => login, session => id, csrf_token => pending.csrf, error => error },
        )
    } else {
        let secret = match pending
            .new_secret
            .as_deref()
            .and_then(|s| state.mfa_box.open(&login, s))
        {
            Some(secret) => secret,
            None => {
                let secret: [u8; totp::SECRET_BYTES] = rand::random();
                pending.new_secret = Some(state.mfa_box.seal(&login, &secret));
                if let Err(e) = save(state, id, pending).await {
                    return state.pages.error(&e);
                }
                secret.to_vec()
            }
        };
        let uri = totp::provisioning_uri(&state.settings.resource_name, &login, &secret);
        let key = totp::base32(&secret);
        let grouped: Vec<String> = key
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        state.pages.render(
            "mfa_enrol.html",
            minijinja::context! {
                user => login, qr => totp::qr_svg(&uri), secret => grouped.join(" "),
                secret_raw => key, otpauth_uri => uri,
                session => id, csrf_token => pending.csrf, error => error,
            },
        )
    };
    let targets = client_origin(state, pending);
    form_page(state, status, html, &targets, &pending.csrf, "/mfa")
}

/// The form's success redirects to the client: CSP `form-action` must allow its origin.
fn client_origin(state: &AuthState, pending: &MfaPending) -> Vec<String> {
    let target = super::authorize::client_redirect(state, &pending.authorization.redirect_uri, &[]);
    super::pages::csp_origin(&target).into_iter().collect()
}

#[derive(Deserialize)]
struct PageQuery {
    session: Option<String>,
}

async fn page(Step(req, query, state): Step<web::Query<PageQuery>>) -> HttpResponse {
    let (id, mut pending) = match pending_for(&state, &req, query.session.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let id = id.as_str();
    if let Some(left) = locked(&state, &pending.user.login, &client_ip(&state, &req)).await {
        return locked_page(&state, left);
    }
    render(&state, id, &mut pending, None, StatusCode::OK).await
}

#[derive(Deserialize)]
struct CodeForm {
    session: Option<String>,
    csrf_token: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
}

async fn submit(Step(req, form, state): Step<web::Form<CodeForm>>) -> HttpResponse {
    let (id, mut pending) = match posted(&state, &req, &form.session, &form.csrf_token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let id = id.as_str();
    let login = pending.user.login.clone();
    let ip = client_ip(&state, &req);
    let attempt = match reserve_attempt(&state, &req, &login, &ip).await {
        Ok(n) => n,
        Err(page) => return page,
    };
    let now = state.now();
    let code = form
        .code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let recovery = form
        .recovery_code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());

    let outcome: Result<(), &str> = match enrolment(&state, &login).await {
        Some(record) => match (code, recovery) {
            (Some(code), _) => match state.mfa_box.open(&login, &record.secret) {
                None => Err("your second factor cannot be read; ask an operator to reset it"),
                Some(secret) => match totp::matching_step(&secret, code, now) {
                    None => Err("that code is not right"),
                    // Single use: the first to claim this step wins.
                    Some(step) => match state
                        .store
                        .put_if_absent(
                            &keys::mfa_used(&login, step),
                            "1",
                            Some(Duration::from_secs(120)),
                        )
                        .await
                    {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("that code was already used; wait for the next one"),
                        Err(_) => Err("storage is unavailable; try again"),
                    },
                },
            },
            (None, Some(recovery)) => match state
                .store
                .take(&keys::mfa_recovery(&login, &totp::recovery_hash(recovery)))
                .await
            {
                Ok(Some(_)) => Ok(()),
                _ => Err("that recovery code is not valid (each works once)"),
            },
            (None, None) => Err("enter a code"),
        },
        None => {
            let secret = pending
                .new_secret
                .as_deref()
                .and_then(|s| state.mfa_box.open(&login, s));
            match (secret, code) {
                (Some(secret), Some(code)) if totp::matching_step(&secret, code, now).is_some() => {
                    // The confirming code is spent too: it cannot log in again in its window.
                    if let Some(step) = totp::matching_step(&secret, code, now) {
                        let _ = state
                            .store
                            .put_if_absent(
                                &keys::mfa_used(&login, step),
                                "1",
                                Some(Duration::from_secs(120)),
                            )
                            .await;
                    }
                    clear_failures(&state, &login, &ip).await;
                    return confirm_enrolment(&state, &req, id, &mut pending).await;
                }
                (Some(_), _) => Err("that code is not right; check your device's clock"),
                (None, _) => Err("start the setup again"),
            }
        }
    };
    match outcome {
        Ok(()) => {
            clear_failures(&state, &login, &ip).await;
            let _ = MfaPending::take(state.store.as_ref(), id).await;
            passed(&state, &req, pending).await
        }
        Err(message) => {
            let failure = Failure {
                user: &login,
                ip: &ip,
                reason: message,
            };
            if record_failure(&state, &req, failure, attempt).await {
                return locked_page(&state, state.settings.mfa.lockout.as_secs());
            }
            render(
                &state,
                id,
                &mut pending,
                Some(message),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

/// The second factor is done: the login goes on to its code, its `amr` with `otp` added.
async fn passed(state: &AuthState, req: &HttpRequest, pending: MfaPending) -> HttpResponse {
    let amr = vec![pending.method.clone(), "otp".into()];
    let MfaPending {
        authorization,
        user,
        upstream,
        ..
    } = pending;
    issue_code(state, req, authorization, user, amr, upstream).await
}

fn mfa_csrf_ok(req: &HttpRequest, pending: &MfaPending, presented: Option<&str>) -> bool {
    let mut probe = pending.authorization.clone();
    probe.csrf = pending.csrf.clone();
    csrf_ok(req, &probe, presented)
}

/// The first code matched: store the factor, show the recovery codes once.
async fn confirm_enrolment(
    state: &AuthState,
    req: &HttpRequest,
    id: &str,
    pending: &mut MfaPending,
) -> HttpResponse {
    let login = pending.user.login.clone();
    let Some(sealed) = pending.new_secret.clone() else {
        return expired(state);
    };
    let record = MfaRecord {
        provider: "totp".into(),
        secret: sealed,
        enrolled_at: state.now(),
    };
    // Only one enrolment wins if two tabs race.
    let enrolled = state
        .event(Kind::MfaEnrolled, Actor::User(login.clone()), req)
        .user(&login)
        .client(&pending.authorization.client_id)
        .detail("provider", "totp");
    match record
        .save_first(state.store.as_ref(), &login, enrolled)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return render(
                state,
                id,
                pending,
                Some("a second factor was set up meanwhile; enter its code"),
                StatusCode::CONFLICT,
            )
            .await;
        }
        Err(_) => {
            return state.pages.error(&OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "storage is unavailable",
            ));
        }
    }
    let codes: Vec<String> = (0..totp::RECOVERY_CODES)
        .map(|_| totp::recovery_code())
        .collect();
    for code in &codes {
        let _ = state
            .store
            .put(
                &keys::mfa_recovery(&login, &totp::recovery_hash(code)),
                "1",
                None,
            )
            .await;
    }
    pending.enrolled = true;
    pending.new_secret = None;
    if let Err(e) = save(state, id, pending).await {
        return state.pages.error(&e);
    }
    tracing::info!(login = %login, "second factor enrolled");
    let html = state.pages.render(
        "mfa_recovery.html",
        minijinja::context! { codes => codes, session => id, csrf_token => pending.csrf },
    );
    let targets = client_origin(state, pending);
    form_page(state, StatusCode::OK, html, &targets, &pending.csrf, "/mfa")
}

#[derive(Deserialize)]
struct ContinueForm {
    session: Option<String>,
    csrf_token: Option<String>,
}

async fn finish_enrolment(Step(req, form, state): Step<web::Form<ContinueForm>>) -> HttpResponse {
    let (id, pending) = match posted(&state, &req, &form.session, &form.csrf_token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let id = id.as_str();
    if !pending.enrolled {
        return expired(&state);
    }
    match MfaPending::take(state.store.as_ref(), id).await {
        Ok(Some(_)) => passed(&state, &req, pending).await,
        _ => expired(&state),
    }
}
