//! The browser side of a login: the CSRF cookie of the consent and TOTP forms, the login
//! cookie that binds a login in progress to the browser that approved it, and the signed
//! session cookie that lets a returning user skip consent.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use subtle::ConstantTimeEq;

use super::{AuthState, CONSENT_LIFETIME, OAuthError, PENDING_LIFETIME};
use crate::records::PendingAuthorization;
use crate::token::{random_token, sha256_b64url};

pub const CSRF_COOKIE: &str = "mcp_csrf";
pub const SESSION_COOKIE: &str = "mcp_session";
/// Binds a login in progress to its browser. Over HTTPS it is a `__Host-` cookie, which a
/// sibling subdomain cannot plant.
pub const LOGIN_COOKIE: &str = "mcp_login";
pub const LOGIN_COOKIE_SECURE: &str = "__Host-mcp_login";

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

/// Whether `req` comes from the browser that approved `pending`, in constant time.
pub fn same_browser(req: &HttpRequest, pending: &PendingAuthorization) -> bool {
    pending.browser_matches(login_cookie_value(req).as_deref())
}

/// The page for a login step reached from a browser that did not approve it.
pub fn other_browser_page(state: &AuthState, step: &str) -> HttpResponse {
    state.metrics.error(step, "access_denied");
    tracing::warn!(
        step,
        "login step from a browser that did not start it: refused"
    );
    state.pages.error(&OAuthError::access_denied(
        "this sign-in was started in another browser. If you did not start it, close this page; \
         otherwise start again from your application",
    ))
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

/// A cookie scripts cannot read (`HttpOnly`), `Secure` when our pages are served over HTTPS, for
/// `path` and `lifetime`.
fn private_cookie(
    state: &AuthState,
    name: &'static str,
    value: String,
    path: &str,
    same_site: SameSite,
    lifetime: std::time::Duration,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path(path.to_string())
        .http_only(true)
        .secure(state.secure_cookies())
        .same_site(same_site)
        .max_age(actix_web::cookie::time::Duration::seconds(
            lifetime.as_secs() as i64,
        ))
        .finish()
}

/// A page holding a form that posts to `path`: CSP `form-action` allowing `targets` (where the
/// submission may redirect), and the form's CSRF cookie (`csrf`) for `path`.
pub fn form_page(
    state: &AuthState,
    status: actix_web::http::StatusCode,
    html: String,
    targets: &[String],
    csrf: &str,
    path: &str,
) -> HttpResponse {
    let mut response = state.pages.respond(status, html, targets);
    let _ = response.add_cookie(&csrf_cookie(state, csrf, path));
    response
}

pub fn csrf_cookie(state: &AuthState, value: &str, path: &str) -> Cookie<'static> {
    let value = value.to_string();
    private_cookie(
        state,
        CSRF_COOKIE,
        value,
        path,
        SameSite::Strict,
        PENDING_LIFETIME,
    )
}

/// The browser-session cookie: `login.expiry.hmac`, proving this browser completed a login.
pub fn session_cookie(state: &AuthState, login: &str) -> Cookie<'static> {
    let expires = state.now() + CONSENT_LIFETIME.as_secs() as i64;
    let payload = format!("{}.{expires}", crate::token::b64url(login.as_bytes()));
    let tag = state.cookie_key.mac(payload.as_bytes());
    let value = format!("{payload}.{}", crate::token::b64url(tag.as_ref()));
    private_cookie(
        state,
        SESSION_COOKIE,
        value,
        "/",
        SameSite::Lax,
        CONSENT_LIFETIME,
    )
}

pub fn session_user(state: &AuthState, req: &HttpRequest) -> Option<String> {
    use base64::Engine;
    let cookie = req.cookie(SESSION_COOKIE)?;
    let (payload, tag) = cookie.value().rsplit_once('.')?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tag)
        .ok()?;
    if !state.cookie_key.verify_mac(payload.as_bytes(), &tag) {
        return None;
    }
    let (login, expires) = payload.split_once('.')?;
    if expires.parse::<i64>().ok()? < state.now() {
        return None;
    }
    let login = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(login)
        .ok()?;
    String::from_utf8(login).ok()
}

/// What a browser step's handler works from: the request, its input (a `web::Query` or
/// `web::Form`) and the server's state, extracted in that order, so that a handler reads
/// `async fn page(Step(req, query, state): Step<web::Query<Q>>)`.
pub struct Step<T>(pub HttpRequest, pub T, pub web::Data<AuthState>);

impl<T: FromRequest + 'static> FromRequest for Step<T> {
    type Error = actix_web::Error;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let input = T::from_request(req, payload);
        let state = web::Data::<AuthState>::extract(req);
        let req = req.clone();
        Box::pin(async move {
            let input = input.await.map_err(Into::into)?;
            Ok(Step(req, input, state.await?))
        })
    }
}
