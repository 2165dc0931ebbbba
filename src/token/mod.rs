//! Access tokens: claims (RFC 9068), keys and JWKS (RFC 7517/7638), mint and validate, and
//! the DPoP proofs that come with sender-constrained ones (RFC 9449).
//!
//! Pure functions and values, no I/O: the clock is passed in as a number of seconds, so every
//! rejection is unit-tested without waiting.

pub mod claims;
pub mod dpop;
pub mod keys;
pub mod mint;
pub mod validate;

pub use claims::{AccessClaims, Audience, Confirmation, SubjectType};
pub use keys::{KeyMaterial, KeySet, SigningAlgorithm, assertion_key};
pub use mint::{MintRequest, MintedToken, mint};
pub use validate::{TokenError, ValidationPolicy, validate};

use base64::Engine;
use sha2::{Digest, Sha256};

/// base64url without padding, as JOSE writes binary values.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url(SHA-256(data)): thumbprints, User-Agent hashes, stored secret hashes.
pub fn sha256_b64url(data: &[u8]) -> String {
    b64url(&Sha256::digest(data))
}

/// A random identifier of `bytes` random bytes, base64url, never starting with `-` or `_`
/// (so it can never be mistaken for a command-line flag): jti, client_id.
pub fn random_id(bytes: usize) -> String {
    loop {
        let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
        let id = b64url(&raw);
        if id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return id;
        }
    }
}

/// A fresh 256-bit random value, base64url: refresh tokens, codes, registration tokens, client
/// secrets. Like [`random_id`] it never starts with `-` or `_`, so a secret handed to the CLI
/// (`--client-secret S`) is never read as a flag.
pub fn random_token() -> String {
    random_id(32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_tokens_never_look_like_a_flag() {
        for _ in 0..2_000 {
            let t = super::random_token();
            assert_eq!(t.len(), 43);
            assert!(t.starts_with(|c: char| c.is_ascii_alphanumeric()), "{t}");
        }
    }
}
