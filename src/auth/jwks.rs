//! Which of a JWK Set's keys may have signed a JWT: the asymmetric algorithms we accept, and
//! the key that fits an `alg` and `kid` (type, curve, its own `alg` and `use`). Shared by the
//! client assertions of `private_key_jwt` ([`super::assertion`]) and the OpenID provider's
//! `id_token`s ([`super::upstream::oidc`]) and the trusted issuers' assertions
//! ([`super::trusted`]); a symmetric key never fits. [`decode`] verifies with them, fetching the
//! set again once when no key fits.

use std::future::Future;
use std::sync::Arc;

use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;

/// The algorithms an `id_token` may be signed with: asymmetric only.
const ALGORITHMS: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

pub fn algorithm_name(alg: Algorithm) -> Option<&'static str> {
    ALGORITHMS.iter().find(|(_, a)| *a == alg).map(|(n, _)| *n)
}

/// Whether `jwk` can verify `alg`: its key type and curve, and its own `alg` when it names one.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(p) => matches!(
            (&p.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::OctetKeyPair(p) => {
            matches!(p.curve, EllipticCurve::Ed25519) && alg == Algorithm::EdDSA
        }
        // A symmetric key is never a provider's signing key.
        _ => false,
    };
    let named = jwk
        .common
        .key_algorithm
        .is_none_or(|k| format!("{k:?}") == algorithm_name(alg).unwrap_or(""));
    let for_signing = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|u| matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature));
    family && named && for_signing
}

/// The keys of `set` that may have signed with `alg` and `kid`.
pub fn candidates<'a>(set: &'a JwkSet, alg: Algorithm, kid: Option<&str>) -> Vec<&'a Jwk> {
    set.keys
        .iter()
        .filter(|k| fits(k, alg))
        .filter(|k| kid.is_none_or(|kid| k.common.key_id.as_deref() == Some(kid)))
        .collect()
}

/// Why no key verified a JWT.
#[derive(Debug)]
pub enum Unverified {
    /// No key of the set fits its `alg` and `kid`, even after fetching the set again.
    NoKey,
    /// Keys fit, none verified it: the error of the last one tried.
    Invalid(Option<JwtError>),
}

impl Unverified {
    /// What the last key tried found wrong, when a key was tried.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Unverified::Invalid(Some(e)) => Some(e.kind()),
            _ => None,
        }
    }
}

/// Verifies `token` against the keys `fetch` gives (`fetch(true)` fetches them again, once,
/// when none fits: the signer may have rotated) and decodes its claims; `Err(e)` only when
/// fetching failed.
pub async fn decode<T, E, F, Fut>(
    token: &str,
    alg: Algorithm,
    kid: Option<&str>,
    validation: &Validation,
    fetch: F,
) -> Result<Result<T, Unverified>, E>
where
    T: DeserializeOwned,
    F: Fn(bool) -> Fut,
    Fut: Future<Output = Result<Arc<JwkSet>, E>>,
{
    let mut keys = fetch(false).await?;
    if candidates(&keys, alg, kid).is_empty() {
        keys = fetch(true).await?;
    }
    let found = candidates(&keys, alg, kid);
    if found.is_empty() {
        return Ok(Err(Unverified::NoKey));
    }
    let mut last = None;
    for jwk in found {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<T>(token, &key, validation) {
            Ok(data) => return Ok(Ok(data.claims)),
            Err(e) => last = Some(e),
        }
    }
    Ok(Err(Unverified::Invalid(last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_mismatched_keys_never_fit() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            {"kty": "EC", "crv": "P-256", "kid": "e",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}))
        .unwrap();
        assert!(candidates(&set, Algorithm::HS256, Some("h")).is_empty());
        assert!(candidates(&set, Algorithm::RS256, Some("e")).is_empty());
        assert_eq!(candidates(&set, Algorithm::ES256, Some("e")).len(), 1);
        assert!(algorithm_name(Algorithm::HS256).is_none());
    }
}
