//! Access-token validation (DESIGN §2 step 2): signature with the key `kid` names and only that
//! key's algorithm, `typ`, `iss`, `exp`/`nbf`/`iat` with leeway, `jti`. The audience depends on
//! the request and is checked by the caller.

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;

use super::claims::AccessClaims;
use super::keys::KeySet;

/// Why a token is refused. Each maps to one metric reason at verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token type is not at+jwt")]
    WrongType,
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("the token's key id is unknown")]
    UnknownKid,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no jti")]
    MissingJti,
    #[error("no signing key is configured")]
    NoSigningKey,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// What a token must match besides its signature.
#[derive(Debug, Clone)]
pub struct ValidationPolicy {
    pub issuer: String,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`, in seconds (DESIGN: at most 30).
    pub leeway: i64,
}

impl ValidationPolicy {
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            leeway: 30,
        }
    }
}

/// Validates `token` at time `now` (Unix seconds). Audience is the caller's to check.
pub fn validate(
    token: &str,
    keys: &KeySet,
    policy: &ValidationPolicy,
    now: i64,
) -> Result<AccessClaims, TokenError> {
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        Err(_) => return Err(classify_bad_header(token)),
    };
    // RFC 7515 §4.1.11: we understand no extension, so a token that names any as critical
    // must be refused, never validated as if the extension were absent.
    if has_crit(token) {
        return Err(TokenError::Malformed);
    }
    match header
        .typ
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        // `JWT` is what the original gateway wrote.
        Some("at+jwt" | "application/at+jwt" | "jwt") => {}
        _ => return Err(TokenError::WrongType),
    }
    let key = match header.kid.as_deref() {
        Some(kid) => keys.by_kid(kid).ok_or(TokenError::UnknownKid)?,
        None => keys
            .sole_key_for(header.alg)
            .ok_or(TokenError::UnknownKid)?,
    };
    // The key decides the algorithm, never the token: this is the alg-confusion guard.
    if header.alg != key.alg().jwt() {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    let data = jsonwebtoken::decode::<AccessClaims>(token, key.decoding(), key.validation())
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::AlgorithmNotAllowed
            }
            ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidToken => TokenError::Malformed,
            _ => TokenError::BadSignature,
        })?;
    let claims = data.claims;
    if claims.iss != policy.issuer {
        return Err(TokenError::WrongIssuer);
    }
    if now > claims.exp.saturating_add(policy.leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.nbf
        && nbf > now.saturating_add(policy.leeway)
    {
        return Err(TokenError::NotYetValid);
    }
    if claims.iat > now.saturating_add(policy.leeway) {
        return Err(TokenError::NotYetValid);
    }
    if claims.jti.is_empty() {
        return Err(TokenError::MissingJti);
    }
    Ok(claims)
}

/// Whether the JOSE header carries `crit` (with any value, `null` and `[]` included).
fn has_crit(token: &str) -> bool {
    let first = token.split('.').next().unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first.trim_end_matches('='))
        .ok()
        .and_then(|bytes| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok()
        })
        .is_none_or(|header| header.contains_key("crit"))
}

/// A header jsonwebtoken cannot read is either not JSON at all, or names an algorithm it does
/// not know (`none` among them): the second is an algorithm refusal, not noise.
fn classify_bad_header(token: &str) -> TokenError {
    let Some(first) = token.split('.').next() else {
        return TokenError::Malformed;
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(first.trim_end_matches('='))
    else {
        return TokenError::Malformed;
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) if v.get("alg").is_some_and(|a| a.is_string()) => TokenError::AlgorithmNotAllowed,
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::keys::{KeyMaterial, SigningAlgorithm};
    use crate::token::mint::{MintRequest, mint};
    use crate::token::{b64url, sha256_b64url};
    use std::time::Duration;

    const ISS: &str = "https://auth.example.com";
    const NOW: i64 = 1_800_000_000;

    fn keyset(alg: SigningAlgorithm) -> KeySet {
        let (key, _) = KeyMaterial::generate(alg).unwrap();
        KeySet::new(Some(key), vec![]).unwrap()
    }

    fn request() -> MintRequest {
        MintRequest {
            subject: "42".into(),
            username: "alice".into(),
            groups: Vec::new(),
            client_id: "client-1".into(),
            scope: "mcp".into(),
            audience: vec!["https://mcp.example.com/mcp".into()],
            lifetime: Duration::from_secs(3600),
            ..Default::default()
        }
    }

    fn policy() -> ValidationPolicy {
        ValidationPolicy::new(ISS)
    }

    /// [`validate`] with the default policy at `NOW`.
    fn validate_now(token: &str, keys: &KeySet) -> Result<AccessClaims, TokenError> {
        validate(token, keys, &policy(), NOW)
    }

    /// Hand-assembles a JWT from JSON parts and a raw signature.
    fn assemble(header: &serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes()),
            b64url(sig)
        )
    }

    fn claims_json(exp: i64) -> serde_json::Value {
        serde_json::json!({
            "iss": ISS, "sub": "42", "aud": "https://mcp.example.com/mcp",
            "exp": exp, "iat": NOW, "jti": "j1", "client_id": "c", "scope": "mcp", "username": "alice"
        })
    }

    #[test]
    fn every_algorithm_round_trips() {
        for alg in [
            SigningAlgorithm::Rs256,
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Hs256,
        ] {
            let keys = keyset(alg);
            let minted = mint(&keys, ISS, request(), NOW).unwrap();
            let header = jsonwebtoken::decode_header(&minted.token).unwrap();
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(
                header.kid.as_deref(),
                Some(keys.signing_key().unwrap().kid())
            );
            let claims = validate_now(&minted.token, &keys).unwrap();
            assert_eq!(claims, minted.claims, "{alg}");
            assert!(claims.aud.contains("https://mcp.example.com/mcp"));
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = keyset(SigningAlgorithm::Rs256);
        let kid = keys.signing_key().unwrap().kid().to_string();
        for alg in ["none", "None", "NONE"] {
            let token = assemble(
                &serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": kid}),
                &claims_json(NOW + 60),
                b"",
            );
            assert_eq!(
                validate_now(&token, &keys),
                Err(TokenError::AlgorithmNotAllowed)
            );
        }
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let keys = keyset(SigningAlgorithm::Rs256);
        let signing = keys.signing_key().unwrap();
        // The attacker knows the public key (it is in the JWKS) and uses its bytes as an
        // HMAC secret, naming our RSA kid.
        let public = serde_json::to_vec(&keys.jwks()).unwrap();
        let header = serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": signing.kid()});
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(signing.kid().into());
        let token = jsonwebtoken::encode(
            &h,
            &claims_json(NOW + 60),
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(header["alg"], "HS256");
        assert_eq!(
            validate_now(&token, &keys),
            Err(TokenError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn a_critical_extension_we_do_not_know_is_refused() {
        let secret = [7u8; 32];
        let keys = KeySet::new(Some(KeyMaterial::hmac_secret(&secret).unwrap()), vec![]).unwrap();
        let kid = keys.signing_key().unwrap().kid().to_string();
        let sign = |header: serde_json::Value| {
            let input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims_json(NOW + 60).to_string().as_bytes())
            );
            let tag = aws_lc_rs::hmac::sign(
                &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
                input.as_bytes(),
            );
            format!("{input}.{}", b64url(tag.as_ref()))
        };
        let plain = sign(serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}));
        assert!(validate_now(&plain, &keys).is_ok());
        for crit in [
            serde_json::json!(["exp"]),
            serde_json::json!(["b64"]),
            serde_json::json!([]),
            serde_json::Value::Null,
        ] {
            let token = sign(serde_json::json!({
                "alg": "HS256", "typ": "at+jwt", "kid": kid, "crit": crit, "b64": false, "exp": 1
            }));
            assert_eq!(
                validate_now(&token, &keys),
                Err(TokenError::Malformed),
                "crit {crit}"
            );
        }
    }

    #[test]
    fn unknown_kid_is_refused() {
        let keys = keyset(SigningAlgorithm::Rs256);
        let other = keyset(SigningAlgorithm::Rs256);
        let token = mint(&other, ISS, request(), NOW).unwrap().token;
        assert_eq!(validate_now(&token, &keys), Err(TokenError::UnknownKid));
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let keys = keyset(SigningAlgorithm::Es256);
        let token = mint(&keys, ISS, request(), NOW).unwrap().token;
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims = claims_json(NOW + 60);
        claims["username"] = "mallory".into();
        parts[1] = b64url(claims.to_string().as_bytes());
        assert_eq!(
            validate_now(&parts.join("."), &keys),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let keys = keyset(SigningAlgorithm::Rs256);
        let token = mint(&keys, "https://auth.evil.com", request(), NOW)
            .unwrap()
            .token;
        assert_eq!(validate_now(&token, &keys), Err(TokenError::WrongIssuer));
    }

    #[test]
    fn expiry_and_not_before_with_leeway() {
        let keys = keyset(SigningAlgorithm::EdDsa);
        let token = mint(&keys, ISS, request(), NOW).unwrap().token;
        assert!(validate(&token, &keys, &policy(), NOW + 3600 + 30).is_ok());
        assert_eq!(
            validate(&token, &keys, &policy(), NOW + 3600 + 31),
            Err(TokenError::Expired)
        );
        // Issued "in the future": the minting clock is ahead of ours beyond the leeway.
        assert!(validate(&token, &keys, &policy(), NOW - 30).is_ok());
        assert_eq!(
            validate(&token, &keys, &policy(), NOW - 31),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn nbf_in_the_future_is_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let key = KeyMaterial::hmac_secret(secret).unwrap();
        let kid = key.kid().to_string();
        let keys = KeySet::new(Some(key), vec![]).unwrap();
        let mut claims = claims_json(NOW + 600);
        claims["nbf"] = (NOW + 300).into();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid);
        let token =
            jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(secret))
                .unwrap();
        assert_eq!(validate_now(&token, &keys), Err(TokenError::NotYetValid));
        assert!(validate(&token, &keys, &policy(), NOW + 300).is_ok());
    }

    #[test]
    fn wrong_typ_and_garbage_are_refused() {
        let keys = keyset(SigningAlgorithm::Hs256);
        let kid = keys.signing_key().unwrap().kid().to_string();
        let token = assemble(
            &serde_json::json!({"alg": "HS256", "typ": "dpop+jwt", "kid": kid}),
            &claims_json(NOW + 60),
            b"sig",
        );
        assert_eq!(validate_now(&token, &keys), Err(TokenError::WrongType));
        for garbage in ["", "abc", "a.b.c", "....", "eyJ.eyJ.x"] {
            assert_eq!(
                validate_now(garbage, &keys),
                Err(TokenError::Malformed),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let (old, old_pem) = KeyMaterial::generate(SigningAlgorithm::Rs256).unwrap();
        let old_keys = KeySet::new(Some(old), vec![]).unwrap();
        let old_token = mint(&old_keys, ISS, request(), NOW).unwrap().token;

        let (new, _) = KeyMaterial::generate(SigningAlgorithm::Rs256).unwrap();
        let retained = KeyMaterial::any_pem(old_pem.as_bytes()).unwrap();
        let rotated = KeySet::new(Some(new), vec![retained]).unwrap();
        assert!(validate(&old_token, &rotated, &policy(), NOW).is_ok());
        let new_token = mint(&rotated, ISS, request(), NOW).unwrap().token;
        assert!(validate(&new_token, &rotated, &policy(), NOW).is_ok());
        assert_eq!(rotated.jwks().keys.len(), 2);
    }

    #[test]
    fn jwks_has_kid_alg_use_and_no_secrets() {
        for alg in [
            SigningAlgorithm::Rs256,
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
        ] {
            let keys = keyset(alg);
            let jwks = serde_json::to_value(keys.jwks()).unwrap();
            let key = &jwks["keys"][0];
            assert_eq!(key["kid"], keys.signing_key().unwrap().kid());
            assert_eq!(key["alg"], alg.as_str());
            assert_eq!(key["use"], "sig");
            assert!(key.get("d").is_none(), "private part leaked for {alg}");
        }
        let hs = keyset(SigningAlgorithm::Hs256);
        assert!(hs.jwks().keys.is_empty());
    }

    #[test]
    fn original_gateway_tokens_without_kid_use_the_sole_key() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let keys = KeySet::new(Some(KeyMaterial::hmac_secret(secret).unwrap()), vec![]).unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(
            &h,
            &claims_json(NOW + 60),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert!(validate_now(&token, &keys).is_ok());
    }

    #[test]
    fn custom_claims_never_override_registered_ones() {
        let keys = keyset(SigningAlgorithm::Hs256);
        let mut req = request();
        req.custom_claims = serde_json::json!({"sub": "evil", "team": "blue"})
            .as_object()
            .unwrap()
            .clone();
        let claims = mint(&keys, ISS, req, NOW).unwrap().claims;
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.extra["team"], "blue");
        assert_eq!(sha256_b64url(b"x").len(), 43);
    }
}
