//! Which of a JWK Set's keys may have signed a JWT: the asymmetric algorithms we accept, and
//! the key that fits an `alg` and `kid` (type, curve, its own `alg` and `use`). Shared by the
//! client assertions of `private_key_jwt` ([`super::assertion`]) and the OpenID provider's
//! `id_token`s ([`super::upstream::oidc`]); a symmetric key never fits.

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};

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
