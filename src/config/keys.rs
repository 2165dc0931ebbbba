//! The signing key and the keys that still verify (`JWT_*`, `GATEWAY_JWT_*`): PEM or base64
//! of a PEM, a file, previous HMAC secrets during a rotation.

use base64::Engine;

use super::ConfigError;
use super::raw::Raw;
use crate::policy::split_list;
use crate::token::keys::{KeyMaterial, KeySet, SigningAlgorithm};

pub(super) fn load_keys(raw: &Raw, algorithm: SigningAlgorithm) -> Result<KeySet, ConfigError> {
    let signing = if algorithm == SigningAlgorithm::Hs256 {
        match raw.get("GATEWAY_JWT_SECRET") {
            Some(secret) => Some(
                KeyMaterial::hmac_secret(secret.as_bytes())
                    .map_err(|e| ConfigError::new("GATEWAY_JWT_SECRET", e))?,
            ),
            None => None,
        }
    } else {
        let (var, pem) = match (
            raw.get("JWT_PRIVATE_KEY_B64"),
            raw.get("JWT_PRIVATE_KEY_FILE"),
        ) {
            (Some(b64), _) => (
                "JWT_PRIVATE_KEY_B64",
                decode_pem_b64(b64).map_err(|e| ConfigError::new("JWT_PRIVATE_KEY_B64", e))?,
            ),
            (None, Some(path)) => (
                "JWT_PRIVATE_KEY_FILE",
                std::fs::read(path).map_err(|e| {
                    ConfigError::new("JWT_PRIVATE_KEY_FILE", format!("cannot read {path}: {e}"))
                })?,
            ),
            (None, None) => ("JWT_PRIVATE_KEY_B64", Vec::new()),
        };
        if pem.is_empty() {
            None
        } else {
            Some(KeyMaterial::private_pem(algorithm, &pem).map_err(|e| ConfigError::new(var, e))?)
        }
    };

    let mut verification = Vec::new();
    if let Some(list) = raw.get("JWT_VERIFICATION_KEYS_B64") {
        for (i, item) in split_list(list).enumerate() {
            let var = "JWT_VERIFICATION_KEYS_B64";
            let pem = decode_pem_b64(item)
                .map_err(|e| ConfigError::new(var, format!("key {}: {e}", i + 1)))?;
            let key = KeyMaterial::any_pem(&pem)
                .map_err(|e| ConfigError::new(var, format!("key {}: {e}", i + 1)))?;
            verification.push(key);
        }
    }
    {
        // Previous HMAC secrets, so an HS256 secret can rotate (or give way to another
        // algorithm) without logging anyone out.
        if let Some(list) = raw.get("GATEWAY_JWT_PREVIOUS_SECRETS") {
            for item in split_list(list) {
                verification.push(
                    KeyMaterial::hmac_secret(item.as_bytes())
                        .map_err(|e| ConfigError::new("GATEWAY_JWT_PREVIOUS_SECRETS", e))?,
                );
            }
        }
    }

    if signing.is_none() && verification.is_empty() {
        let (var, hint) = if algorithm == SigningAlgorithm::Hs256 {
            (
                "GATEWAY_JWT_SECRET",
                "required for HS256 (mcp-gateway generate-jwt-secret)",
            )
        } else {
            (
                "JWT_PRIVATE_KEY_B64",
                "required (or JWT_PRIVATE_KEY_FILE): generate one with `mcp-gateway keys generate`",
            )
        };
        return Err(ConfigError::new(var, hint));
    }
    KeySet::new(signing, verification).map_err(|e| ConfigError::new("JWT_VERIFICATION_KEYS_B64", e))
}

/// Accepts base64 of a PEM (the seed's form), with or without line breaks, or the PEM itself.
fn decode_pem_b64(value: &str) -> Result<Vec<u8>, String> {
    let trimmed = value.trim();
    if trimmed.starts_with("-----BEGIN") {
        return Ok(trimmed.replace("\\n", "\n").into_bytes());
    }
    let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| "not base64 of a PEM key".to_string())
}
