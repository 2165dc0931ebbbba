//! The CLI as a DPoP client (RFC 9449): an ES256 key it keeps beside the saved tokens
//! (`MCP_CLIENT_DPOP_KEY`), a fresh proof for every token request and MCP request, and the
//! server nonces it is given (§8, §9), remembered per origin.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::signature::{self, KeyPair};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::fail;
use crate::cli::CliResult;
use crate::clock::{Clock, SystemClock};
use crate::token::dpop::access_token_hash;
use crate::token::{b64url, random_token, sha256_b64url};

pub struct DpopSigner {
    pkcs8: Vec<u8>,
    key: EncodingKey,
    jwk: Value,
    /// The last `DPoP-Nonce` each origin gave.
    nonces: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for DpopSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DpopSigner({})", self.jkt())
    }
}

impl DpopSigner {
    /// A new ES256 key.
    pub fn generate() -> CliResult<Self> {
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(|_| fail("cannot make a DPoP key"))?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec())
    }

    /// The key saved by [`DpopSigner::saved`].
    pub fn from_saved(text: &str) -> CliResult<Self> {
        let pkcs8 = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| fail("MCP_CLIENT_DPOP_KEY is not base64"))?;
        Self::from_pkcs8(pkcs8)
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> CliResult<Self> {
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
        )
        .map_err(|_| fail("the DPoP key is not an ES256 PKCS#8 key"))?;
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65])});
        Ok(Self {
            key: EncodingKey::from_ec_der(&pkcs8),
            pkcs8,
            jwk,
            nonces: Mutex::default(),
        })
    }

    /// The private key as saved in the env file (base64 PKCS#8).
    pub fn saved(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.pkcs8)
    }

    /// RFC 7638 thumbprint: the `cnf.jkt` of the tokens bound to this key.
    pub fn jkt(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
            self.jwk["x"], self.jwk["y"]
        );
        sha256_b64url(canonical.as_bytes())
    }

    /// A fresh proof for `method url` (its query and fragment left out), for `access_token`
    /// (`ath`) when one goes with it, with the nonce `url`'s origin last gave.
    pub fn proof(&self, method: &str, url: &str, access_token: Option<&str>) -> String {
        let mut htu = url::Url::parse(url).ok();
        if let Some(u) = htu.as_mut() {
            u.set_query(None);
            u.set_fragment(None);
        }
        let htu = htu.map_or_else(|| url.to_string(), |u| u.to_string());
        let mut claims = json!({
            "jti": random_token(),
            "htm": method,
            "htu": htu,
            "iat": SystemClock.now_unix(),
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(access_token_hash(token));
        }
        if let Some(nonce) = self.lock().get(&origin(url)) {
            claims["nonce"] = json!(nonce);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(crate::token::dpop::TYP.into());
        header.jwk = serde_json::from_value(self.jwk.clone()).ok();
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap_or_default()
    }

    /// Remembers the `DPoP-Nonce` of an answer from `url`; whether it is a new one (a request
    /// refused with `use_dpop_nonce` is then worth sending again).
    pub fn observe(&self, url: &str, headers: &reqwest::header::HeaderMap) -> bool {
        let Some(nonce) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let previous = self.lock().insert(origin(url), nonce.to_string());
        previous.as_deref() != Some(nonce)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.nonces.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn origin(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_string(), |u| u.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::dpop::{Expected, check};

    #[test]
    fn its_proofs_pass_the_servers_check_and_carry_the_nonce_given() {
        let signer = DpopSigner::generate().unwrap();
        let again = DpopSigner::from_saved(&signer.saved()).unwrap();
        assert_eq!(again.jkt(), signer.jkt());
        let url = "https://mcp.example.com/mcp?x=1";
        let proof = signer.proof("POST", url, Some("tok"));
        let expected = Expected {
            method: "POST",
            url: "https://mcp.example.com/mcp",
            now: SystemClock.now_unix(),
            window: 60,
            access_token: Some("tok"),
        };
        let ok = check(&proof, &expected).unwrap();
        assert_eq!(ok.jkt, signer.jkt());
        assert_eq!(ok.nonce, None);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("dpop-nonce", "n-1".parse().unwrap());
        assert!(signer.observe(url, &headers));
        assert!(
            !signer.observe(url, &headers),
            "the same nonce again is not news"
        );
        let ok = check(&signer.proof("POST", url, Some("tok")), &expected).unwrap();
        assert_eq!(ok.nonce.as_deref(), Some("n-1"));
        // Another origin has its own nonce.
        let other = signer.proof("POST", "https://auth.example.com/token", None);
        assert!(!other.is_empty());
    }
}
