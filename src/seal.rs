//! Sealing and key derivation, for everything the gateway keeps secret at rest or signs for a
//! browser: TOTP secrets, upstream sessions and tokens, kept token answers, session cookies.
//!
//! One derivation, HKDF-SHA256 (RFC 5869), names each key by its purpose (`label`) and derives
//! it from a secret the operator configured (the signing key, `MFA_ENCRYPTION_KEY`, …) or from
//! another derived key. One box, AES-256-GCM with a random nonce and an owner (a user, a
//! token's `jti`) as associated data, so a sealed value cannot be moved to another owner.
//!
//! Keys were derived as SHA-256(label, NUL, secret) before; a [`Derived`] key still opens what
//! was sealed (or verifies what was signed) with its old form, so nothing sealed before this
//! derivation is lost: no migration step is needed, and data is sealed anew with the HKDF key
//! as it is written again.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine;

/// HKDF-SHA256 of `secret` for `label` (no salt; the label is the `info`), 32 bytes.
pub fn derive_key(label: &str, secret: &[u8]) -> [u8; 32] {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut out = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, &[])
        .extract(secret)
        .expand(&[label.as_bytes()], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA256 expands to 32 bytes");
    out
}

/// The derivation before [`derive_key`]: SHA-256 of label, NUL and secret.
fn legacy_key(label: &str, secret: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::new()
        .chain_update(label.as_bytes())
        .chain_update(b"\0")
        .chain_update(secret)
        .finalize()
        .into()
}

/// A derived key with its pre-HKDF form, which still opens and verifies what it sealed and
/// signed. Derive children from it to keep the chain (a child's old form is the old form's
/// child).
#[derive(Clone)]
pub struct Derived {
    key: [u8; 32],
    legacy: [u8; 32],
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived([redacted])")
    }
}

impl Derived {
    /// The key for `label` from a secret of the operator's.
    pub fn root(label: &str, secret: &[u8]) -> Self {
        Self {
            key: derive_key(label, secret),
            legacy: legacy_key(label, secret),
        }
    }

    /// The key for `label` from this one.
    pub fn child(&self, label: &str) -> Self {
        Self {
            key: derive_key(label, &self.key),
            legacy: legacy_key(label, &self.legacy),
        }
    }

    pub fn key(&self) -> [u8; 32] {
        self.key
    }

    /// A box that seals with this key and opens with it or its old form.
    pub fn sealer(&self) -> SecretBox {
        SecretBox {
            key: self.key,
            legacy: Some(self.legacy),
        }
    }

    /// HMAC-SHA256 of `data` with this key.
    pub fn mac(&self, data: &[u8]) -> hmac::Tag {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.key), data)
    }

    /// Whether `tag` is `data`'s HMAC under this key or its old form (constant time each).
    pub fn verify_mac(&self, data: &[u8], tag: &[u8]) -> bool {
        [self.key, self.legacy]
            .iter()
            .any(|k| hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, k), data, tag).is_ok())
    }
}

/// AES-256-GCM with a random nonce and the owner (lower-cased) as associated data. Seals with
/// its key; opens with it, or with the old form of a [`Derived`] key.
#[derive(Clone)]
pub struct SecretBox {
    key: [u8; 32],
    legacy: Option<[u8; 32]>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

impl SecretBox {
    /// A box for a key the operator gave (`MFA_ENCRYPTION_KEY`, `UPSTREAM_TOKEN_KEY`).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key, legacy: None }
    }

    fn aead(key: &[u8; 32]) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES key"))
    }

    pub fn seal(&self, owner: &str, secret: &[u8]) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut data = secret.to_vec();
        Self::aead(&self.key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(owner.to_ascii_lowercase().as_bytes()),
                &mut data,
            )
            .expect("AES-GCM sealing cannot fail for small inputs");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub fn open(&self, owner: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let aad = owner.to_ascii_lowercase();
        std::iter::once(&self.key)
            .chain(self.legacy.as_ref())
            .find_map(|key| {
                let mut data = rest.to_vec();
                let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
                let plain = Self::aead(key)
                    .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data)
                    .ok()?;
                Some(plain.to_vec())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_owner_and_key() {
        let sealer = SecretBox::new([7u8; 32]);
        let sealed = sealer.seal("Alice", b"JBSWY3DPEHPK3PXP");
        assert_eq!(sealer.open("alice", &sealed).unwrap(), b"JBSWY3DPEHPK3PXP");
        assert_eq!(sealer.open("bob", &sealed), None);
        assert_eq!(SecretBox::new([8u8; 32]).open("alice", &sealed), None);
        assert_eq!(sealer.open("alice", "not base64!"), None);
    }

    /// What the gateway sealed before HKDF (keys as SHA-256 of label, NUL, secret, chained
    /// for the TOTP key) still opens, and new values are sealed with the HKDF key.
    #[test]
    fn values_sealed_with_the_old_derivation_still_open() {
        let signing = b"-----BEGIN PRIVATE KEY----- the signing key";
        let cookie = Derived::root("mcp-gateway session cookie", signing);
        let totp = cookie.child("mcp-gateway totp secrets");
        let old_cookie = legacy_key("mcp-gateway session cookie", signing);
        let old_totp = SecretBox::new(legacy_key("mcp-gateway totp secrets", &old_cookie));
        let sealed_before = old_totp.seal("alice", b"a TOTP secret");
        assert_eq!(
            totp.sealer().open("alice", &sealed_before).unwrap(),
            b"a TOTP secret"
        );
        let sealed_now = totp.sealer().seal("alice", b"a TOTP secret");
        assert_eq!(
            old_totp.open("alice", &sealed_now),
            None,
            "sealed anew with HKDF"
        );
        assert_eq!(
            SecretBox::new(totp.key())
                .open("alice", &sealed_now)
                .unwrap(),
            b"a TOTP secret"
        );
        // A cookie signed before verifies; a forged one does not.
        let old_tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &old_cookie), b"alice.1");
        assert!(cookie.verify_mac(b"alice.1", old_tag.as_ref()));
        assert!(cookie.verify_mac(b"alice.1", cookie.mac(b"alice.1").as_ref()));
        assert!(!cookie.verify_mac(b"alice.2", old_tag.as_ref()));
    }

    #[test]
    fn derivation_is_rfc_5869_hkdf_sha256() {
        // RFC 5869 A.3 (no salt, no info) gives 42 bytes; the first 32 are ours with info "".
        let ikm = [0x0bu8; 22];
        let okm = derive_key("", &ikm);
        assert_eq!(
            hex::encode(okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        );
        assert_ne!(derive_key("a", b"k"), derive_key("b", b"k"));
    }
}
