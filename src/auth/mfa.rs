//! The TOTP step of the login (`/mfa`), between the upstream login and our code: a user with
//! no second factor enrols (QR code and key, confirmed with a first code, then one-time
//! recovery codes shown once); an enrolled user enters a code or a recovery code. Failures are
//! counted per user and per client address; past `MFA_MAX_FAILURES` within
//! `MFA_FAILURE_WINDOW` both are locked out for `MFA_LOCKOUT`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::authorize::{PendingAuthorization, csrf_cookie, csrf_ok};
use super::callback::issue_code;
use super::{AuthState, PENDING_LIFETIME, UpstreamUser, totp};
use crate::store::{Attempt, keys};
use crate::token::random_token;

/// A login waiting for its second factor, under `oauth:state:mfa:{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MfaPending {
    authorization: PendingAuthorization,
    user: UpstreamUser,
    csrf: String,
    /// During enrolment: the new secret, sealed.
    #[serde(default)]
    new_secret: Option<String>,
    /// Enrolment confirmed; the recovery codes have been shown.
    #[serde(default)]
    enrolled: bool,
}

/// An enrolled second factor, under `oauth:mfa:{user}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaRecord {
    pub provider: String,
    /// The TOTP secret, sealed (AES-256-GCM).
    pub secret: String,
    pub enrolled_at: i64,
}

pub fn recovery_key(user: &str, hash: &str) -> String {
    format!("oauth:mfa_recovery:{}:{hash}", user.to_ascii_lowercase())
}

pub fn lock_key(kind: &str, who: &str) -> String {
    format!("oauth:mfa_lock:{kind}:{}", who.to_ascii_lowercase())
}

fn failure_key(kind: &str, who: &str) -> String {
    format!("oauth:mfa_fail:{kind}:{}", who.to_ascii_lowercase())
}

fn used_key(user: &str, step: i64) -> String {
    format!("oauth:mfa_used:{}:{step}", user.to_ascii_lowercase())
}

fn pending_key(id: &str) -> String {
    keys::state(&format!("mfa:{id}"))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mfa", web::get().to(page))
        .route("/mfa", web::post().to(submit))
        .route("/mfa/continue", web::post().to(finish_enrolment));
}

/// After the upstream login: park the login and send the browser to the TOTP step.
pub async fn begin(
    state: &AuthState,
    authorization: PendingAuthorization,
    user: UpstreamUser,
) -> HttpResponse {
    let id = random_token();
    let pending = MfaPending {
        authorization,
        user,
        csrf: random_token(),
        new_secret: None,
        enrolled: false,
    };
    if let Err(e) = save(state, &id, &pending).await {
        return state.pages.error_page(e.0, "temporarily_unavailable", &e.1);
    }
    HttpResponse::SeeOther()
        .insert_header((LOCATION, state.endpoint(&format!("/mfa?session={id}"))))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish()
}

async fn save(
    state: &AuthState,
    id: &str,
    pending: &MfaPending,
) -> Result<(), (StatusCode, String)> {
    let json = serde_json::to_string(pending)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state
        .store
        .put_for_client(
            &pending_key(id),
            &json,
            PENDING_LIFETIME,
            &pending.authorization.client_id,
            state.now(),
        )
        .await
        .map_err(|_| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage is unavailable".to_string(),
            )
        })
}

async fn load(state: &AuthState, id: &str) -> Option<MfaPending> {
    let json = state.store.get(&pending_key(id)).await.ok()??;
    serde_json::from_str(&json).ok()
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
    if !pending.authorization.same_browser(req) {
        return Err(super::authorize::other_browser_page(state, "mfa"));
    }
    Ok((id.to_string(), pending))
}

pub async fn enrolment(state: &AuthState, user: &str) -> Option<MfaRecord> {
    let json = state.store.get(&keys::mfa(user)).await.ok()??;
    serde_json::from_str(&json).ok()
}

/// Seconds left on a lockout of this user or address, if any.
async fn locked(state: &AuthState, user: &str, ip: &str) -> Option<u64> {
    for key in [lock_key("user", user), lock_key("ip", ip)] {
        if let Ok(crate::store::Ttl::Expires(left)) = state.store.ttl(&key).await {
            return Some(left.as_secs().max(1));
        }
    }
    None
}

fn locked_page(state: &AuthState, seconds: u64) -> HttpResponse {
    let minutes = seconds.div_ceil(60);
    let mut page = state.pages.error_page(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        &format!(
            "Too many wrong codes. Sign-in is locked for {minutes} more minute(s); try again later."
        ),
    );
    if let Ok(v) = seconds.to_string().parse() {
        page.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, v);
    }
    page
}

/// Reserves one attempt for the user and the address before any code is looked at: past
/// `MFA_MAX_FAILURES` within the window both are locked out, and of N guesses sent at once
/// only the first ones up to the limit are ever evaluated. `Ok(count)` is this attempt's number.
async fn reserve_attempt(state: &AuthState, user: &str, ip: &str) -> Result<u64, HttpResponse> {
    let mfa = &state.settings.mfa;
    let counters = [failure_key("user", user), failure_key("ip", ip)];
    let locks = [lock_key("user", user), lock_key("ip", ip)];
    match state
        .store
        .reserve_attempt(
            &counters,
            &locks,
            u64::from(mfa.max_failures),
            mfa.failure_window,
            mfa.lockout,
        )
        .await
    {
        Ok(Attempt::Allowed { count }) => Ok(count),
        Ok(Attempt::Locked(left)) => Err(locked_page(state, left.as_secs().max(1))),
        Err(_) => Err(state.pages.error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "storage is unavailable; try again",
        )),
    }
}

/// A wrong code: counted already by its reservation; the last one allowed locks both out.
async fn record_failure(state: &AuthState, user: &str, ip: &str, attempt: u64) -> bool {
    state.metrics.mfa_failures.inc();
    let mfa = &state.settings.mfa;
    if attempt < u64::from(mfa.max_failures) {
        return false;
    }
    state.metrics.mfa_lockouts.inc();
    tracing::warn!(login = %user, "second factor locked out after repeated failures");
    for (kind, who) in [("user", user), ("ip", ip)] {
        let _ = state
            .store
            .put(&lock_key(kind, who), "1", Some(mfa.lockout))
            .await;
        let _ = state.store.delete(&failure_key(kind, who)).await;
    }
    true
}

/// A success wipes the slate for this user and address.
async fn clear_failures(state: &AuthState, user: &str, ip: &str) {
    for (kind, who) in [("user", user), ("ip", ip)] {
        let _ = state.store.delete(&failure_key(kind, who)).await;
    }
}

fn client_ip(state: &AuthState, req: &HttpRequest) -> String {
    state
        .client_ip(req)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn expired(state: &AuthState) -> HttpResponse {
    state.pages.error_page(
        StatusCode::BAD_REQUEST,
        "invalid_state",
        "this sign-in is unknown or has expired; start again from your application",
    )
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
                    return state.pages.error_page(e.0, "temporarily_unavailable", &e.1);
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
    let mut response = state
        .pages
        .respond(status, html, &client_origin(state, pending));
    let _ = response.add_cookie(&csrf_cookie(state, &pending.csrf, "/mfa"));
    response
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

async fn page(
    req: HttpRequest,
    query: web::Query<PageQuery>,
    state: web::Data<AuthState>,
) -> HttpResponse {
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

async fn submit(
    req: HttpRequest,
    form: web::Form<CodeForm>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let (id, mut pending) = match pending_for(&state, &req, form.session.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let id = id.as_str();
    if !mfa_csrf_ok(&req, &pending, form.csrf_token.as_deref()) {
        return state.pages.error_page(
            StatusCode::FORBIDDEN,
            "access_denied",
            "the form could not be verified (CSRF)",
        );
    }
    let login = pending.user.login.clone();
    let ip = client_ip(&state, &req);
    let attempt = match reserve_attempt(&state, &login, &ip).await {
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
                        .put_if_absent(&used_key(&login, step), "1", Some(Duration::from_secs(120)))
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
                .take(&recovery_key(&login, &totp::recovery_hash(recovery)))
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
                                &used_key(&login, step),
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
            let _ = state.store.take(&pending_key(id)).await;
            issue_code(
                &state,
                pending.authorization,
                pending.user,
                vec!["github".into(), "otp".into()],
            )
            .await
        }
        Err(message) => {
            if record_failure(&state, &login, &ip, attempt).await {
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

fn mfa_csrf_ok(req: &HttpRequest, pending: &MfaPending, presented: Option<&str>) -> bool {
    let mut probe = pending.authorization.clone();
    probe.csrf = pending.csrf.clone();
    csrf_ok(req, &probe, presented)
}

/// The first code matched: store the factor, show the recovery codes once.
async fn confirm_enrolment(
    state: &AuthState,
    _req: &HttpRequest,
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
    let Ok(json) = serde_json::to_string(&record) else {
        return expired(state);
    };
    // Only one enrolment wins if two tabs race.
    match state
        .store
        .put_if_absent(&keys::mfa(&login), &json, None)
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
            return state.pages.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "storage is unavailable",
            );
        }
    }
    let codes: Vec<String> = (0..totp::RECOVERY_CODES)
        .map(|_| totp::recovery_code())
        .collect();
    for code in &codes {
        let _ = state
            .store
            .put(&recovery_key(&login, &totp::recovery_hash(code)), "1", None)
            .await;
    }
    pending.enrolled = true;
    pending.new_secret = None;
    if let Err(e) = save(state, id, pending).await {
        return state.pages.error_page(e.0, "temporarily_unavailable", &e.1);
    }
    tracing::info!(login = %login, "second factor enrolled");
    let html = state.pages.render(
        "mfa_recovery.html",
        minijinja::context! { codes => codes, session => id, csrf_token => pending.csrf },
    );
    let mut response = state
        .pages
        .respond(StatusCode::OK, html, &client_origin(state, pending));
    let _ = response.add_cookie(&csrf_cookie(state, &pending.csrf, "/mfa"));
    response
}

#[derive(Deserialize)]
struct ContinueForm {
    session: Option<String>,
    csrf_token: Option<String>,
}

async fn finish_enrolment(
    req: HttpRequest,
    form: web::Form<ContinueForm>,
    state: web::Data<AuthState>,
) -> HttpResponse {
    let (id, pending) = match pending_for(&state, &req, form.session.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let id = id.as_str();
    if !mfa_csrf_ok(&req, &pending, form.csrf_token.as_deref()) {
        return state.pages.error_page(
            StatusCode::FORBIDDEN,
            "access_denied",
            "the form could not be verified (CSRF)",
        );
    }
    if !pending.enrolled {
        return expired(&state);
    }
    match state.store.take(&pending_key(id)).await {
        Ok(Some(_)) => {
            issue_code(
                &state,
                pending.authorization,
                pending.user,
                vec!["github".into(), "otp".into()],
            )
            .await
        }
        _ => expired(&state),
    }
}
