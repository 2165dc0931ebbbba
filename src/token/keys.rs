//! Signing and verification keys, key ids and the JWKS document (RFC 7517, RFC 7638).
//!
//! One key signs; any number verify, so a key rotates without logging anyone out: the old key
//! stays in `JWT_VERIFICATION_KEYS_B64` until its last token expires. Each key is bound to one
//! algorithm, and a token is checked only with the algorithm of the key its `kid` names, which
//! is what stops algorithm confusion (an HS256 token "signed" with an RSA public key).

use std::fmt;

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::Serialize;

use super::sha256_b64url;

/// The algorithms the gateway signs with (`JWT_ALGORITHM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    Rs256,
    Es256,
    EdDsa,
    Hs256,
}

impl SigningAlgorithm {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_uppercase().as_str() {
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            "EDDSA" | "ED25519" => Ok(Self::EdDsa),
            "HS256" => Ok(Self::Hs256),
            _ => Err(format!(
                "{value:?} is not supported (RS256, ES256, EdDSA or HS256)"
            )),
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
            Self::Hs256 => Algorithm::HS256,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Minimum HMAC secret length: RFC 7518 §3.2 wants a key at least as long as the hash.
pub const MIN_HMAC_SECRET: usize = 32;

/// One key: its id, its algorithm, the decoding half, and the signing half when private.
pub struct KeyMaterial {
    kid: String,
    alg: SigningAlgorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// Public JWK (never for HMAC keys).
    public_jwk: Option<Jwk>,
    validation: Validation,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private", &self.encoding.is_some())
            .finish()
    }
}

impl KeyMaterial {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlgorithm {
        self.alg
    }

    pub(crate) fn encoding(&self) -> Option<&EncodingKey> {
        self.encoding.as_ref()
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Signature-only validation for this key's algorithm; time and audience are checked by
    /// [`super::validate`] against the injected clock.
    pub(crate) fn validation(&self) -> &Validation {
        &self.validation
    }

    /// An HS256 key from `GATEWAY_JWT_SECRET`.
    pub fn hmac_secret(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_HMAC_SECRET {
            return Err(format!(
                "must be at least {MIN_HMAC_SECRET} bytes (mcp-gateway generate-jwt-secret makes one)"
            ));
        }
        // The kid must not reveal the secret: a keyed, domain-separated hash of it.
        let mut input = b"mcp-gateway hs256 kid\0".to_vec();
        input.extend_from_slice(secret);
        let kid = format!("hs-{}", &sha256_b64url(&input)[..16]);
        Ok(Self::assemble(
            kid,
            SigningAlgorithm::Hs256,
            Some(EncodingKey::from_secret(secret)),
            DecodingKey::from_secret(secret),
            None,
        ))
    }

    /// A private key PEM (PKCS#8, or PKCS#1 for RSA) for `alg`.
    pub fn private_pem(alg: SigningAlgorithm, pem: &[u8]) -> Result<Self, String> {
        let encoding = match alg {
            SigningAlgorithm::Rs256 => EncodingKey::from_rsa_pem(pem),
            SigningAlgorithm::Es256 => EncodingKey::from_ec_pem(pem),
            SigningAlgorithm::EdDsa => EncodingKey::from_ed_pem(pem),
            SigningAlgorithm::Hs256 => {
                return Err("HS256 uses GATEWAY_JWT_SECRET, not a PEM key".into());
            }
        }
        .map_err(|e| format!("not a {alg} private key PEM: {e}"))?;
        let jwk = Jwk::from_encoding_key(&encoding, alg.jwt())
            .map_err(|e| format!("not a usable {alg} private key: {e}"))?;
        Self::from_public_jwk(alg, Some(encoding), jwk)
    }

    /// A public key PEM (`BEGIN PUBLIC KEY`) for `alg`: verification only.
    pub fn public_pem(alg: SigningAlgorithm, pem: &[u8]) -> Result<Self, String> {
        let decoding = match alg {
            SigningAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
            SigningAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
            SigningAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem),
            SigningAlgorithm::Hs256 => return Err("HS256 keys are secrets, not PEM".into()),
        }
        .map_err(|e| format!("not a {alg} public key PEM: {e}"))?;
        let jwk = Jwk::from_decoding_key(&decoding, Some(alg.jwt()))
            .map_err(|e| format!("not a usable {alg} public key: {e}"))?;
        Self::from_public_jwk(alg, None, jwk)
    }

    /// A PEM of any supported kind, private or public; the algorithm follows from the key.
    pub fn any_pem(pem: &[u8]) -> Result<Self, String> {
        let algs = [
            SigningAlgorithm::Rs256,
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
        ];
        for alg in algs {
            if let Ok(key) = Self::private_pem(alg, pem) {
                return Ok(key);
            }
        }
        for alg in algs {
            if let Ok(key) = Self::public_pem(alg, pem) {
                return Ok(key);
            }
        }
        Err("not an RSA, P-256 or Ed25519 key in PEM form".into())
    }

    fn from_public_jwk(
        alg: SigningAlgorithm,
        encoding: Option<EncodingKey>,
        mut jwk: Jwk,
    ) -> Result<Self, String> {
        if alg == SigningAlgorithm::Es256 {
            let p256 = matches!(
                &jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p)
                    if p.curve == jsonwebtoken::jwk::EllipticCurve::P256
            );
            if !p256 {
                return Err("ES256 needs a P-256 key".into());
            }
        }
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| format!("cannot compute the key thumbprint: {e}"))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match alg {
            SigningAlgorithm::Rs256 => KeyAlgorithm::RS256,
            SigningAlgorithm::Es256 => KeyAlgorithm::ES256,
            SigningAlgorithm::EdDsa => KeyAlgorithm::EdDSA,
            SigningAlgorithm::Hs256 => KeyAlgorithm::HS256,
        });
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| format!("cannot build the public key: {e}"))?;
        Ok(Self::assemble(kid, alg, encoding, decoding, Some(jwk)))
    }

    fn assemble(
        kid: String,
        alg: SigningAlgorithm,
        encoding: Option<EncodingKey>,
        decoding: DecodingKey,
        public_jwk: Option<Jwk>,
    ) -> Self {
        let mut validation = Validation::new(alg.jwt());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Self {
            kid,
            alg,
            encoding,
            decoding,
            public_jwk,
            validation,
        }
    }

    /// A new random key for `alg`, with its private PEM (or the secret, for HS256).
    pub fn generate(alg: SigningAlgorithm) -> Result<(Self, String), String> {
        use aws_lc_rs::encoding::AsDer;
        let (label, der): (&str, Vec<u8>) = match alg {
            SigningAlgorithm::Rs256 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| "RSA key generation failed")?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der =
                    pair.as_der().map_err(|_| "RSA key serialisation failed")?;
                ("PRIVATE KEY", der.as_ref().to_vec())
            }
            SigningAlgorithm::Es256 => {
                let curve = &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(curve)
                    .map_err(|_| "P-256 key generation failed")?;
                ("PRIVATE KEY", pkcs8(pair.to_pkcs8v1(), "P-256")?)
            }
            SigningAlgorithm::EdDsa => {
                let pair = aws_lc_rs::signature::Ed25519KeyPair::generate()
                    .map_err(|_| "Ed25519 key generation failed")?;
                ("PRIVATE KEY", pkcs8(pair.to_pkcs8v1(), "Ed25519")?)
            }
            SigningAlgorithm::Hs256 => {
                let secret = generate_secret();
                let key = Self::hmac_secret(secret.as_bytes())?;
                return Ok((key, secret));
            }
        };
        let text = pem::encode(&pem::Pem::new(label, der));
        let key = Self::private_pem(alg, text.as_bytes())?;
        Ok((key, text))
    }
}

/// A new key's PKCS#8 document, or why `kind`'s could not be serialised.
fn pkcs8<D: AsRef<[u8]>, E>(document: Result<D, E>, kind: &str) -> Result<Vec<u8>, String> {
    document
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| format!("{kind} key serialisation failed"))
}

/// 64 characters of URL-safe random text (384 bits): `GATEWAY_JWT_SECRET`.
/// A private key for signing our own client assertions (`private_key_jwt`, RFC 7523) in a PEM
/// file, and the algorithm it signs with: RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA).
pub fn assertion_key(pem: &[u8]) -> Option<(EncodingKey, Algorithm)> {
    if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
        return Some((k, Algorithm::RS256));
    }
    if let Ok(k) = EncodingKey::from_ec_pem(pem) {
        return Some((k, Algorithm::ES256));
    }
    EncodingKey::from_ed_pem(pem)
        .ok()
        .map(|k| (k, Algorithm::EdDSA))
}

pub fn generate_secret() -> String {
    let bytes: [u8; 48] = rand::random();
    super::b64url(&bytes)
}

/// The keys a service knows: at most one signing key, any number of verification keys.
pub struct KeySet {
    signing: Option<usize>,
    keys: Vec<KeyMaterial>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("signing", &self.signing_key().map(|k| k.kid()))
            .field("keys", &self.keys)
            .finish()
    }
}

/// The public JWKS document (RFC 7517 §5).
#[derive(Debug, Serialize)]
pub struct Jwks<'a> {
    pub keys: Vec<&'a Jwk>,
}

impl KeySet {
    pub fn new(signing: Option<KeyMaterial>, others: Vec<KeyMaterial>) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(others.len() + 1);
        let signing = signing.map(|k| {
            keys.push(k);
            0
        });
        for key in others {
            if keys.iter().any(|k| k.kid == key.kid) {
                continue;
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no key configured".into());
        }
        Ok(Self { signing, keys })
    }

    pub fn signing_key(&self) -> Option<&KeyMaterial> {
        self.signing.map(|i| &self.keys[i])
    }

    pub fn by_kid(&self, kid: &str) -> Option<&KeyMaterial> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// For tokens without `kid` (the original gateway's): usable only when exactly one key of
    /// that algorithm is configured, so the choice is never a guess.
    pub fn sole_key_for(&self, alg: Algorithm) -> Option<&KeyMaterial> {
        let mut it = self.keys.iter().filter(|k| k.alg.jwt() == alg);
        match (it.next(), it.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &KeyMaterial> {
        self.keys.iter()
    }

    pub fn jwks(&self) -> Jwks<'_> {
        Jwks {
            keys: self
                .keys
                .iter()
                .filter_map(|k| k.public_jwk.as_ref())
                .collect(),
        }
    }
}
