//! DPoP proofs (RFC 9449): a JWT the client signs for one HTTP request with a key it keeps,
//! carrying the public half in its header. [`check`] does the checks of §4.3 that need no
//! state (typ, an asymmetric alg, a public `jwk` only, the signature, `htm`, `htu` without query
//! and fragment, `iat` in a window, `ath`); the caller remembers `jti`s and nonces, and compares
//! [`Proof::jkt`] (the key's RFC 7638 thumbprint) with the token's `cnf.jkt` (§6.1).
//!
//! Pure functions, no I/O: the time is passed in, so every refusal is unit-tested.

use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::sha256_b64url;
use crate::seal::SecretBox;
use aws_lc_rs::signature::{ParsedPublicKey, VerificationAlgorithm};
use std::collections::HashMap;
use std::sync::Arc;

/// The proof's media type (RFC 9449 §4.2).
pub const TYP: &str = "dpop+jwt";

/// The signing algorithms we accept, as `dpop_signing_alg_values_supported` lists them:
/// asymmetric only (§4.3 point 5).
pub const ALGORITHMS: &[&str] = &["ES256", "EdDSA", "RS256", "PS256"];

/// Longest proof we read: a 4096-bit RSA key in the header, with room to spare.
const MAX_PROOF_LEN: usize = 8 * 1024;

/// Longest `jti` we keep (RFC 9449 asks for at least 96 bits of randomness; 64 bytes is plenty).
const MAX_JTI_LEN: usize = 256;

/// What the request a proof must match looks like.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's method (`htm`, compared exactly).
    pub method: &'a str,
    /// The request's URL; its query and fragment are ignored (`htu`).
    pub url: &'a str,
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// How far `iat` may be from `now`, either way, in seconds.
    pub window: i64,
    /// The access token the proof comes with: `ath` must be its hash (§4.3 point 11). `None`
    /// at the token endpoint, where a proof carries no `ath`.
    pub access_token: Option<&'a str>,
}

/// A proof that passed every stateless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 SHA-256 thumbprint of the proof's key, base64url: the `cnf.jkt` it binds to.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    /// The server nonce the client echoed, if any (§8, §9).
    pub nonce: Option<String>,
}

/// Why a proof is refused: the `error_description` of `invalid_dpop_proof`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofError(pub &'static str);

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: String,
    jwk: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<Value>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Checks `proof` (the one `DPoP` header value) against `expected`.
pub fn check(proof: &str, expected: &Expected<'_>) -> Result<Proof, ProofError> {
    check_with(proof, expected, None)
}

/// [`check`], keeping the parsed keys in `keys` for the next proofs of the same key.
pub fn check_with(
    proof: &str,
    expected: &Expected<'_>,
    keys: Option<&ProofKeys>,
) -> Result<Proof, ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError("the DPoP proof is too long"));
    }
    let mut parts = proof.split('.');
    let (Some(head), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError("the DPoP proof is not a JWT"));
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = match keys {
        Some(keys) => keys.of_header(head)?,
        None => Arc::new(ProofKey::read(head)?),
    };
    // The signature over `header.payload`, verified with the jwk's key as it stands: the one
    // check per request nothing can cache, so nothing else is done twice around it.
    let signature = b64
        .decode(signature)
        .map_err(|_| ProofError("the DPoP proof's signature is not base64url"))?;
    let signed = &proof.as_bytes()[..head.len() + 1 + payload.len()];
    if !key.verifier.verifies(signed, &signature) {
        return Err(ProofError(
            "the DPoP proof's signature does not verify with its jwk",
        ));
    }
    let claims: Claims = b64
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(ProofError("the DPoP proof's claims are not JSON"))?;

    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
        .ok_or(ProofError("the DPoP proof has no jti"))?;
    if claims.htm.as_deref() != Some(expected.method) {
        return Err(ProofError(
            "the DPoP proof's htm is not this request's method",
        ));
    }
    let htu = claims.htu.ok_or(ProofError("the DPoP proof has no htu"))?;
    if !same_target(&htu, expected.url) {
        return Err(ProofError("the DPoP proof's htu is not this request's URL"));
    }
    // iat is a NumericDate: a JSON number, fractions allowed.
    let iat = claims
        .iat
        .as_ref()
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite())
        .ok_or(ProofError("the DPoP proof has no iat"))? as i64;
    if (iat - expected.now).abs() > expected.window {
        return Err(ProofError(
            "the DPoP proof's iat is outside the accepted window",
        ));
    }
    match (expected.access_token, claims.ath.as_deref()) {
        (Some(token), Some(ath)) if ath == access_token_hash(token) => {}
        (Some(_), Some(_)) => {
            return Err(ProofError(
                "the DPoP proof's ath is not this access token's hash",
            ));
        }
        (Some(_), None) => return Err(ProofError("the DPoP proof has no ath")),
        (None, _) => {}
    }
    Ok(Proof {
        jkt: key.jkt.clone(),
        jti,
        iat,
        nonce: claims.nonce,
    })
}

/// Server nonces (RFC 9449 §8, §9) that need no shared state: the time each was made, sealed
/// (AES-256-GCM) under a key every auth and verify replica has, so any replica accepts what any
/// other issued, for `lifetime` seconds.
pub struct Nonces {
    sealer: SecretBox,
    lifetime: i64,
}

const NONCE_OWNER: &str = "dpop-nonce";

impl Nonces {
    pub fn new(sealer: SecretBox, lifetime: i64) -> Self {
        Self { sealer, lifetime }
    }

    /// A fresh nonce, made `now`.
    pub fn issue(&self, now: i64) -> String {
        self.sealer.seal(NONCE_OWNER, &now.to_be_bytes())
    }

    /// Whether `nonce` is one of ours made within the lifetime (a few seconds of clock skew
    /// between replicas allowed the other way).
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        self.sealer
            .open(NONCE_OWNER, nonce)
            .and_then(|plain| <[u8; 8]>::try_from(plain.as_slice()).ok())
            .map(i64::from_be_bytes)
            .is_some_and(|made| made <= now + 5 && now - made <= self.lifetime)
    }
}

/// `ath`: base64url(SHA-256(the access token's ASCII)) (§4.2).
pub fn access_token_hash(token: &str) -> String {
    sha256_b64url(token.as_bytes())
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        "RS256" => Some(Algorithm::RS256),
        "PS256" => Some(Algorithm::PS256),
        _ => None,
    }
}

/// What a proof's header says once it passed its checks (typ, an accepted alg, a public jwk
/// that fits the alg): the algorithm, the key's thumbprint, the key ready to verify with.
struct ProofKey {
    jkt: String,
    verifier: Verifier,
}

impl ProofKey {
    /// Reads and checks the header segment `head` (base64url JSON).
    fn read(head: &str) -> Result<Self, ProofError> {
        let header: Header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(ProofError("the DPoP proof's header is not JSON"))?;
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(TYP))
        {
            return Err(ProofError("the DPoP proof's typ must be dpop+jwt"));
        }
        let alg = algorithm(&header.alg).ok_or(ProofError(
            "the DPoP proof's alg is not one of dpop_signing_alg_values_supported",
        ))?;
        let jwk = header
            .jwk
            .ok_or(ProofError("the DPoP proof's header carries no jwk"))?;
        let jkt = public_thumbprint(&jwk, alg)?;
        Ok(Self {
            jkt,
            verifier: Verifier::of(&jwk, alg),
        })
    }
}

/// A public key, parsed once (an EC point validated, an Ed25519 point decoded); an RSA key is
/// checked from its components.
enum Verifier {
    Parsed(ParsedPublicKey),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        params: &'static aws_lc_rs::signature::RsaParameters,
    },
    /// The members do not make a key: no signature verifies.
    Unusable,
}

impl Verifier {
    /// The key of `jwk` (whose members [`public_thumbprint`] has checked) for `alg`.
    fn of(jwk: &Map<String, Value>, alg: Algorithm) -> Self {
        use aws_lc_rs::signature as sig;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let member = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|v| b64.decode(v).ok())
        };
        let parsed = |algorithm: &'static dyn VerificationAlgorithm, bytes: &[u8]| {
            ParsedPublicKey::new(algorithm, bytes).map_or(Self::Unusable, Self::Parsed)
        };
        match alg {
            Algorithm::ES256 => match (member("x"), member("y")) {
                (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    parsed(&sig::ECDSA_P256_SHA256_FIXED, &point)
                }
                _ => Self::Unusable,
            },
            Algorithm::EdDSA => member("x").map_or(Self::Unusable, |x| parsed(&sig::ED25519, &x)),
            Algorithm::RS256 | Algorithm::PS256 => match (member("n"), member("e")) {
                (Some(n), Some(e)) => Self::Rsa {
                    n,
                    e,
                    params: if alg == Algorithm::RS256 {
                        &sig::RSA_PKCS1_2048_8192_SHA256
                    } else {
                        &sig::RSA_PSS_2048_8192_SHA256
                    },
                },
                _ => Self::Unusable,
            },
            _ => Self::Unusable,
        }
    }

    /// Whether `signature` is this key's signature of `signed`.
    fn verifies(&self, signed: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Parsed(key) => key.verify_sig(signed, signature).is_ok(),
            Self::Rsa { n, e, params } => aws_lc_rs::signature::RsaPublicKeyComponents { n, e }
                .verify(params, signed, signature)
                .is_ok(),
            Self::Unusable => false,
        }
    }
}

/// The headers of the proofs seen, checked, with their keys parsed (at most `capacity`, then
/// started afresh): a client signs every proof with the same header, so its next proof needs
/// no JSON, thumbprint or key parsing. A header is a pure function of its bytes; the signature,
/// which covers them, is checked every time.
pub struct ProofKeys {
    keys: std::sync::RwLock<HashMap<String, Arc<ProofKey>>>,
    capacity: usize,
}

impl ProofKeys {
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: std::sync::RwLock::default(),
            capacity,
        }
    }

    /// The key the header segment `head` names, read and checked the first time.
    fn of_header(&self, head: &str) -> Result<Arc<ProofKey>, ProofError> {
        if let Some(key) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(head)
        {
            return Ok(key.clone());
        }
        let key = Arc::new(ProofKey::read(head)?);
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= self.capacity {
            keys.clear();
        }
        keys.insert(head.to_string(), key.clone());
        Ok(key)
    }
}

/// The RFC 7638 thumbprint of `jwk`, once it is known to be a public key of the family `alg`
/// needs (§4.3 point 7: a private key in the header is refused).
fn public_thumbprint(jwk: &Map<String, Value>, alg: Algorithm) -> Result<String, ProofError> {
    const PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    if PRIVATE.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError("the DPoP proof's jwk holds a private key"));
    }
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kty = text("kty").unwrap_or("");
    // The required members only, in lexicographic order, no whitespace (RFC 7638 §3.2).
    let members: &[&str] = match (kty, alg, text("crv")) {
        ("EC", Algorithm::ES256, Some("P-256")) => &["crv", "kty", "x", "y"],
        ("OKP", Algorithm::EdDSA, Some("Ed25519")) => &["crv", "kty", "x"],
        ("RSA", Algorithm::RS256 | Algorithm::PS256, _) => &["e", "kty", "n"],
        _ => return Err(ProofError("the DPoP proof's jwk does not fit its alg")),
    };
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = text(name).ok_or(ProofError("the DPoP proof's jwk lacks a member"))?;
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&Value::from(*name).to_string());
        canonical.push(':');
        canonical.push_str(&Value::from(value).to_string());
    }
    canonical.push('}');
    Ok(sha256_b64url(canonical.as_bytes()))
}

/// Whether `htu` names `url`, query and fragment aside, after RFC 3986 §6.2.2–6.2.3
/// normalisation (scheme and host case, default port, dot segments, an empty path as `/`).
fn same_target(htu: &str, url: &str) -> bool {
    if htu == url {
        return true;
    }
    let normal = |s: &str| {
        let mut u = url::Url::parse(s).ok()?;
        if !matches!(u.scheme(), "https" | "http") || u.cannot_be_a_base() {
            return None;
        }
        u.set_query(None);
        u.set_fragment(None);
        Some(u)
    };
    match (normal(htu), normal(url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header as JwtHeader};
    use serde_json::json;

    /// An ES256 key pair: the PKCS#8 PEM and its public JWK.
    fn es256() -> (EncodingKey, Value) {
        let key = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .unwrap();
        let pkcs8 = key.to_pkcs8v1().unwrap();
        let public = aws_lc_rs::signature::KeyPair::public_key(&key)
            .as_ref()
            .to_vec();
        // Uncompressed point: 0x04 || x || y.
        let jwk = json!({"kty": "EC", "crv": "P-256",
            "x": super::super::b64url(&public[1..33]), "y": super::super::b64url(&public[33..65])});
        (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
    }

    fn sign(key: &EncodingKey, alg: Algorithm, header_jwk: Value, claims: Value) -> String {
        let mut header = JwtHeader::new(alg);
        header.typ = Some(TYP.into());
        header.jwk = Some(serde_json::from_value(header_jwk).unwrap());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    /// A proof whose header is written as given (jsonwebtoken's `Jwk` would drop a private
    /// member), signed ES256.
    fn sign_raw(key: &EncodingKey, header: Value, claims: &Value) -> String {
        let b64 = |v: &Value| super::super::b64url(v.to_string().as_bytes());
        let input = format!("{}.{}", b64(&header), b64(claims));
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), key, Algorithm::ES256).unwrap();
        format!("{input}.{signature}")
    }

    const NOW: i64 = 1_800_000_000;
    const URL: &str = "https://mcp.example.com/mcp";

    fn expected(token: Option<&'static str>) -> Expected<'static> {
        Expected {
            method: "POST",
            url: URL,
            now: NOW,
            window: 300,
            access_token: token,
        }
    }

    fn claims(token: Option<&str>) -> Value {
        let mut c = json!({"jti": "j-1", "htm": "POST", "htu": URL, "iat": NOW});
        if let Some(t) = token {
            c["ath"] = json!(access_token_hash(t));
        }
        c
    }

    #[test]
    fn a_valid_proof_gives_its_key_thumbprint() {
        let (key, jwk) = es256();
        let proof = sign(&key, Algorithm::ES256, jwk.clone(), claims(Some("tok")));
        let ok = check(&proof, &expected(Some("tok"))).unwrap();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(ok.jkt, sha256_b64url(canonical.as_bytes()));
        assert_eq!(ok.jti, "j-1");
        // At the token endpoint no ath is asked for.
        let proof = sign(&key, Algorithm::ES256, jwk, claims(None));
        assert!(check(&proof, &expected(None)).is_ok());
    }

    #[test]
    fn an_eddsa_proof_passes_and_its_key_must_be_ed25519() {
        use aws_lc_rs::signature::KeyPair;
        let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519",
            "x": super::super::b64url(pair.public_key().as_ref())});
        let key = EncodingKey::from_ed_der(pkcs8.as_ref());
        let proof = sign(&key, Algorithm::EdDSA, jwk.clone(), claims(Some("tok")));
        assert!(check(&proof, &expected(Some("tok"))).is_ok());
        // A key of another family never fits the alg named.
        let (_, ec) = es256();
        assert!(public_thumbprint(ec.as_object().unwrap(), Algorithm::EdDSA).is_err());
        assert!(public_thumbprint(jwk.as_object().unwrap(), Algorithm::ES256).is_err());
    }

    #[test]
    fn nonces_open_on_any_replica_with_the_key_until_they_expire() {
        let nonces = Nonces::new(SecretBox::new([7; 32]), 300);
        let nonce = nonces.issue(NOW);
        let replica = Nonces::new(SecretBox::new([7; 32]), 300);
        assert!(replica.accepts(&nonce, NOW + 300));
        assert!(!replica.accepts(&nonce, NOW + 301));
        assert!(!replica.accepts(&nonce, NOW - 60), "made in the future");
        assert!(!Nonces::new(SecretBox::new([8; 32]), 300).accepts(&nonce, NOW));
        assert!(!replica.accepts("not-a-nonce", NOW));
    }

    #[test]
    fn rs256_and_ps256_proofs_pass() {
        use super::super::keys::{KeyMaterial, KeySet, SigningAlgorithm};
        let (material, pem) = KeyMaterial::generate(SigningAlgorithm::Rs256).unwrap();
        let set = KeySet::new(Some(material), vec![]).unwrap();
        let public = serde_json::to_value(set.jwks()).unwrap()["keys"][0].clone();
        let jwk = json!({"kty": "RSA", "n": public["n"], "e": public["e"]});
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let proof = sign(&key, alg, jwk.clone(), claims(Some("tok")));
            assert!(check(&proof, &expected(Some("tok"))).is_ok(), "{alg:?}");
        }
        // A signature by another RSA key does not verify.
        let (_, other) = KeyMaterial::generate(SigningAlgorithm::Rs256).unwrap();
        let other = EncodingKey::from_rsa_pem(other.as_bytes()).unwrap();
        let proof = sign(&other, Algorithm::RS256, jwk, claims(Some("tok")));
        assert!(check(&proof, &expected(Some("tok"))).is_err());
    }

    #[test]
    fn parsed_keys_are_kept_and_every_signature_is_still_checked() {
        let keys = ProofKeys::new(1);
        let (key, jwk) = es256();
        let (other, other_jwk) = es256();
        for _ in 0..2 {
            let proof = sign(&key, Algorithm::ES256, jwk.clone(), claims(Some("tok")));
            assert!(check_with(&proof, &expected(Some("tok")), Some(&keys)).is_ok());
        }
        // The cached key does not vouch for a signature by another key under its jwk.
        let forged = sign(&other, Algorithm::ES256, jwk.clone(), claims(Some("tok")));
        assert!(check_with(&forged, &expected(Some("tok")), Some(&keys)).is_err());
        // A second key in a cache of one: it starts afresh and both still pass.
        let proof = sign(&other, Algorithm::ES256, other_jwk, claims(Some("tok")));
        assert!(check_with(&proof, &expected(Some("tok")), Some(&keys)).is_ok());
        let proof = sign(&key, Algorithm::ES256, jwk.clone(), claims(Some("tok")));
        assert!(check_with(&proof, &expected(Some("tok")), Some(&keys)).is_ok());
        // A header that fails its checks is refused every time, never kept.
        let keys = ProofKeys::new(10);
        let mut header = serde_json::json!({"typ": "JWT", "alg": "ES256", "jwk": jwk});
        let wrong_typ = sign_raw(&key, header.clone(), &claims(Some("tok")));
        for _ in 0..2 {
            assert_eq!(
                check_with(&wrong_typ, &expected(Some("tok")), Some(&keys)),
                Err(ProofError("the DPoP proof's typ must be dpop+jwt"))
            );
        }
        header["typ"] = "dpop+jwt".into();
        let right = sign_raw(&key, header, &claims(Some("tok")));
        assert!(check_with(&right, &expected(Some("tok")), Some(&keys)).is_ok());
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        let jkt = public_thumbprint(jwk.as_object().unwrap(), Algorithm::RS256).unwrap();
        assert_eq!(jkt, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn every_malformed_proof_is_refused() {
        let (key, jwk) = es256();
        let token = Some("tok");
        let good = claims(token);
        let with = |name: &str, value: Value| {
            let mut c = good.clone();
            c[name] = value;
            sign(&key, Algorithm::ES256, jwk.clone(), c)
        };
        let without = |name: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(name);
            sign(&key, Algorithm::ES256, jwk.clone(), c)
        };
        let mut private = jwk.clone();
        private["d"] = json!("c2VjcmV0");
        let (other_key, _) = es256();
        let mut cases = vec![
            ("not a JWT", "abc.def".to_string()),
            ("htm", with("htm", json!("GET"))),
            ("htm case", with("htm", json!("post"))),
            (
                "htu host",
                with("htu", json!("https://evil.example.com/mcp")),
            ),
            (
                "htu path",
                with("htu", json!("https://mcp.example.com/other")),
            ),
            (
                "htu scheme",
                with("htu", json!("http://mcp.example.com/mcp")),
            ),
            ("iat past", with("iat", json!(NOW - 301))),
            ("iat future", with("iat", json!(NOW + 301))),
            ("iat text", with("iat", json!("1800000000"))),
            ("ath other", with("ath", json!(access_token_hash("other")))),
            ("no ath", without("ath")),
            ("no jti", without("jti")),
            ("no htu", without("htu")),
            ("no iat", without("iat")),
            (
                "private jwk",
                sign_raw(
                    &key,
                    json!({"typ": TYP, "alg": "ES256", "jwk": private}),
                    &good,
                ),
            ),
            (
                "other key",
                sign(&other_key, Algorithm::ES256, jwk.clone(), good.clone()),
            ),
        ];
        // HS256 with the public key's bytes as the secret, and alg none.
        let hs = {
            let mut header = JwtHeader::new(Algorithm::HS256);
            header.typ = Some(TYP.into());
            header.jwk = Some(serde_json::from_value(jwk.clone()).unwrap());
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(b"k")).unwrap()
        };
        cases.push(("HS256", hs));
        let b64 = |v: &Value| super::super::b64url(v.to_string().as_bytes());
        let none = format!(
            "{}.{}.",
            b64(&json!({"typ": TYP, "alg": "none", "jwk": jwk})),
            b64(&good)
        );
        cases.push(("alg none", none));
        let wrong_typ = {
            let mut header = JwtHeader::new(Algorithm::ES256);
            header.typ = Some("JWT".into());
            header.jwk = Some(serde_json::from_value(jwk.clone()).unwrap());
            jsonwebtoken::encode(&header, &good, &key).unwrap()
        };
        cases.push(("typ JWT", wrong_typ));
        let no_jwk = {
            let mut header = JwtHeader::new(Algorithm::ES256);
            header.typ = Some(TYP.into());
            jsonwebtoken::encode(&header, &good, &key).unwrap()
        };
        cases.push(("no jwk", no_jwk));
        for (name, proof) in cases {
            assert!(
                check(&proof, &expected(token)).is_err(),
                "{name} was accepted"
            );
        }
    }

    #[test]
    fn htu_is_compared_after_normalisation_without_query_or_fragment() {
        for same in [
            "https://MCP.example.com/mcp",
            "https://mcp.example.com:443/mcp",
            "https://mcp.example.com/a/../mcp",
            "https://mcp.example.com/mcp?x=1#f",
        ] {
            assert!(same_target(same, URL), "{same}");
        }
        assert!(same_target("https://a.example", "https://a.example/"));
        for other in [
            "https://mcp.example.com:8443/mcp",
            "https://mcp.example.com/mcp/",
            "file:///mcp",
            "not a url",
        ] {
            assert!(!same_target(other, URL), "{other}");
        }
    }
}
