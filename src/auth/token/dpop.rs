//! DPoP at the token endpoint (RFC 9449 §5): a request's proof is checked before its grant,
//! its `jti` spent once in the store, and its key kept in the request's extensions, where the
//! binding of the tokens to issue finds it ([`super::binding`]).

use std::time::Duration;

use actix_web::{HttpMessage, HttpRequest};

use super::binding::DpopKey;
use crate::auth::{AuthState, OAuthError};
use crate::store::keys;
use crate::token::dpop::{Expected, Proof, check};
use crate::token::sha256_b64url;

/// The request's `DPoP` header, checked: `None` when it has none. A proof that fails any
/// check, a second `DPoP` header, or a `jti` seen before is `invalid_dpop_proof`.
pub(super) async fn proof(
    state: &AuthState,
    req: &HttpRequest,
) -> Result<Option<Proof>, OAuthError> {
    let mut values = req.headers().get_all("dpop");
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_dpop_proof("more than one DPoP header"));
    }
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_dpop_proof("the DPoP header is not text"))?;
    let window = state.settings.dpop_iat_window;
    let url = state.endpoint("/token");
    let now = state.now();
    let proof = check(
        value,
        &Expected {
            method: req.method().as_str(),
            url: &url,
            now,
            window: window.as_secs() as i64,
            access_token: None,
        },
    )
    .map_err(|e| OAuthError::invalid_dpop_proof(e.0))?;
    if let Some(nonces) = &state.dpop_nonces
        && !proof
            .nonce
            .as_deref()
            .is_some_and(|n| nonces.accepts(n, now))
    {
        return Err(OAuthError::use_dpop_nonce(nonces.issue(now)));
    }
    // Single use (§11.1): remembered until its iat is out of the window.
    let key = keys::dpop_jti(&sha256_b64url(
        format!("{}\n{}", proof.jkt, proof.jti).as_bytes(),
    ));
    let ttl = Duration::from_secs((proof.iat - now + 1).max(0) as u64) + window;
    if !state.store.put_if_absent(&key, "1", Some(ttl)).await? {
        return Err(OAuthError::invalid_dpop_proof(
            "this DPoP proof was used before",
        ));
    }
    req.extensions_mut().insert(DpopKey(proof.jkt.clone()));
    Ok(Some(proof))
}
