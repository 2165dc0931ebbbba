//! The binding of the tokens a grant issues (`TOKEN_BIND_IP`, `TOKEN_BIND_USER_AGENT`,
//! `TOKEN_BIND_CLIENT_CERT`, RFC 8705's certificate thumbprint): what the grant is bound to
//! already must match this request; what the settings bind is bound for the first time. A
//! DPoP proof (RFC 9449) binds the access token to its key, and a public client's refresh
//! token too.

use actix_web::http::header::USER_AGENT;
use actix_web::{HttpMessage, HttpRequest};

use crate::auth::{AuthState, OAuthError};
use crate::records::Binding;
use crate::token::sha256_b64url;

/// The binding of the tokens to issue: what the grant is bound to already, which this request
/// must match (`invalid_grant` otherwise: a stolen refresh token is useless elsewhere), plus
/// what the settings bind for the first time. A client whose address changes must log in
/// again while `TOKEN_BIND_IP` is on.
pub(super) fn binding_for(
    state: &AuthState,
    req: &HttpRequest,
    bound: &Binding,
) -> Result<Binding, BindingRefused> {
    let bind = state.settings.bind;
    let ip = state.client_ip(req).map(|ip| ip.to_string());
    let ua = || {
        let ua = req
            .headers()
            .get(USER_AGENT)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        sha256_b64url(ua)
    };
    let cert = state
        .client_address
        .client_cert(req.headers(), req.peer_addr().map(|a| a.ip()));
    let mismatch = |what: &'static str| {
        tracing::warn!(what, "refresh token presented by another client: refused");
        Err(BindingRefused::Mismatch(what))
    };
    if bound.ip.is_some() && bound.ip != ip {
        return mismatch("address");
    }
    if let Some(was) = &bound.ua
        && *was != ua()
    {
        return mismatch("user agent");
    }
    if bound.cert.is_some() && bound.cert != cert {
        return mismatch("certificate");
    }
    let jkt = req.extensions().get::<DpopKey>().map(|k| k.0.clone());
    if bound.jkt.is_some() && bound.jkt != jkt {
        return mismatch("DPoP key");
    }
    let ip = match (&bound.ip, bind.ip) {
        (Some(was), _) => Some(was.clone()),
        (None, true) => Some(ip.ok_or_else(|| {
            BindingRefused::Unknown(OAuthError::invalid_request("the client address is unknown"))
        })?),
        (None, false) => None,
    };
    let ua = bound.ua.clone().or_else(|| bind.user_agent.then(ua));
    let cert = match (&bound.cert, bind.client_cert) {
        (Some(was), _) => Some(was.clone()),
        (None, true) => Some(cert.ok_or_else(|| {
            BindingRefused::Unknown(OAuthError::invalid_request(
                "a TLS client certificate is required",
            ))
        })?),
        (None, false) => None,
    };
    Ok(Binding { ip, ua, cert, jkt })
}

/// The thumbprint of the key of the request's verified DPoP proof, kept in its extensions by
/// the token endpoint once the proof passed.
#[derive(Debug, Clone)]
pub(crate) struct DpopKey(pub String);

/// Why a request's binding was refused: it is not the client the grant is bound to (a stolen
/// refresh token, a `binding_mismatch`), or what a new binding needs is unknown.
pub(super) enum BindingRefused {
    Mismatch(&'static str),
    Unknown(OAuthError),
}
