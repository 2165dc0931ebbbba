//! A DPoP client's key (RFC 9449): proofs for a request, and the key's thumbprint.

use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use super::document_host::ClientKey;

pub struct DpopKey {
    pub key: ClientKey,
}

impl DpopKey {
    pub fn generate() -> Self {
        Self {
            key: ClientKey::generate("dpop"),
        }
    }

    /// RFC 7638 thumbprint of the public key: what `cnf.jkt` holds.
    pub fn jkt(&self) -> String {
        let jwk = self.key.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
            jwk["x"], jwk["y"]
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(canonical.as_bytes()))
    }

    /// A fresh proof for `method` on `url`, for `token` (`ath`) when given; `change` edits the
    /// claims (a member set to null is removed).
    pub fn proof(&self, method: &str, url: &str, token: Option<&str>, change: Value) -> String {
        let mut claims = json!({
            "jti": uuid_like(),
            "htm": method,
            "htu": url,
            "iat": now(),
        });
        if let Some(token) = token {
            claims["ath"] = json!(ath(token));
        }
        for (name, value) in change.as_object().into_iter().flatten() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        self.signed(&claims, self.key.jwk())
    }

    /// `claims` signed as a proof whose header carries `jwk`.
    pub fn signed(&self, claims: &Value, jwk: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(jwk).unwrap());
        self.key.sign(header, claims)
    }
}

impl DpopKey {
    /// `claims` under a header written exactly as given (jsonwebtoken's `Jwk` would drop a
    /// private member), signed ES256 with this key.
    pub fn signed_raw(&self, header: &Value, claims: &Value) -> String {
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b64(header), b64(claims));
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key.pem().as_bytes()).unwrap();
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        format!("{input}.{signature}")
    }
}

/// `ath`: base64url(SHA-256(token)).
pub fn ath(token: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().to_string()
}
