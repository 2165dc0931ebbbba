//! DPoP at the resource (RFC 9449 §7.1): the proof that comes with a DPoP-bound token is
//! checked against the original request as the proxy forwarded it (`X-Forwarded-Method`,
//! `X-Forwarded-Proto`/`-Host`/`-Uri`) and the token (`ath`, `cnf.jkt`), and its `jti` is
//! remembered by this replica until the proof's `iat` leaves the window (§11.1). Nothing is
//! shared between replicas: a proof replayed to another replica within its window passes
//! there once (it names the same method, URL and token, so it can only repeat that request).
//!
//! The token's own checks stay cached; the proof's signature is the one check that cannot be.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::http::header::HeaderMap;
use sha2::{Digest, Sha256};

use super::error::Denial;
use super::metrics::Reason;
use super::request::{Target, X_FORWARDED_URI};
use crate::forwarded::X_FORWARDED_METHOD;
use crate::token::dpop::{Expected, Nonces, ProofKeys, check_with};

const SHARDS: usize = 16;

/// What [`ProofReplays::first_use`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    First,
    Replayed,
    /// No room: every remembered proof is still in its window.
    Full,
}

/// The `jti`s of the proofs this replica accepted, each until its `iat` leaves the window,
/// bounded: when a shard is full of proofs still in their window, new proofs are refused
/// (failing closed) and counted, rather than forgetting one that could then be replayed.
pub struct ProofReplays {
    shards: Vec<Mutex<HashMap<u128, i64>>>,
    per_shard: usize,
}

impl ProofReplays {
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Records the proof `jti` of key `jkt` until `forget_at`.
    pub fn first_use(&self, jkt: &str, jti: &str, forget_at: i64, now: i64) -> Use {
        let digest = Sha256::new()
            .chain_update(jkt.as_bytes())
            .chain_update([0u8])
            .chain_update(jti.as_bytes())
            .finalize();
        let id = u128::from_le_bytes(digest[..16].try_into().unwrap_or_default());
        let shard = &self.shards[(id as usize) % SHARDS];
        let mut seen = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = seen.get(&id)
            && *until >= now
        {
            return Use::Replayed;
        }
        if seen.len() >= self.per_shard {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= self.per_shard {
                return Use::Full;
            }
        }
        seen.insert(id, forget_at);
        Use::First
    }

    /// How many proofs are remembered now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What verify checks DPoP proofs with: the window, the replays it remembers, the nonces.
pub struct Dpop {
    pub replays: ProofReplays,
    /// The proof keys seen, parsed once (10,000 at most).
    keys: ProofKeys,
    nonces: Option<Nonces>,
    window: i64,
}

impl Dpop {
    pub fn new(settings: &crate::config::Settings) -> Self {
        Self {
            replays: ProofReplays::new(settings.dpop_replay_capacity),
            keys: ProofKeys::new(10_000),
            nonces: settings.dpop_nonces(),
            window: settings.dpop_iat_window.as_secs() as i64,
        }
    }

    /// Checks the request's one `DPoP` header for `token`, bound to `jkt`, against the
    /// original request (`target`) at `now`; records its `jti`.
    pub fn check(
        &self,
        headers: &HeaderMap,
        token: &str,
        jkt: &str,
        target: &Target<'_>,
        now: i64,
    ) -> Result<(), Denial> {
        let window = self.window;
        let mut values = headers.get_all("dpop");
        let proof = values
            .next()
            .ok_or(refused("a DPoP-bound token needs a DPoP proof header"))?;
        if values.next().is_some() {
            return Err(refused("more than one DPoP header"));
        }
        let proof = proof
            .to_str()
            .map_err(|_| refused("the DPoP header is not text"))?;
        let method = headers
            .get(X_FORWARDED_METHOD)
            .and_then(|m| m.to_str().ok())
            .ok_or(refused("the proxy did not say the request's method"))?;
        let uri = headers
            .get(X_FORWARDED_URI)
            .and_then(|u| u.to_str().ok())
            .filter(|u| u.starts_with('/'))
            .unwrap_or("/");
        let url = format!("{}://{}{}", target.proto, target.host, uri);
        let proof = check_with(
            proof,
            &Expected {
                method,
                url: &url,
                now,
                window,
                access_token: Some(token),
            },
            Some(&self.keys),
        )
        .map_err(|e| refused(e.0))?;
        if proof.jkt != jkt {
            return Err(refused(
                "the DPoP proof is signed by another key than the token is bound to",
            ));
        }
        if let Some(nonces) = &self.nonces
            && !proof
                .nonce
                .as_deref()
                .is_some_and(|n| nonces.accepts(n, now))
        {
            let mut denial = Denial::new(
                Reason::UseDpopNonce,
                "the DPoP proof must carry the server nonce given in DPoP-Nonce",
            );
            denial.dpop_nonce = Some(nonces.issue(now));
            return Err(denial);
        }
        match self
            .replays
            .first_use(&proof.jkt, &proof.jti, proof.iat + window, now)
        {
            Use::First => Ok(()),
            Use::Replayed => Err(refused("this DPoP proof was used before")),
            Use::Full => Err(refused(
                "too many DPoP proofs in the window to remember another; retry",
            )),
        }
    }
}

fn refused(description: &'static str) -> Denial {
    Denial::new(Reason::InvalidDpopProof, description)
}

#[cfg(test)]
mod tests {
    use super::{ProofReplays, Use};

    #[test]
    fn a_jti_is_accepted_once_until_its_window_ends_and_memory_is_bounded() {
        let replays = ProofReplays::new(32);
        assert_eq!(replays.first_use("k", "a", 100, 10), Use::First);
        assert_eq!(replays.first_use("k", "a", 100, 50), Use::Replayed);
        // Another key's proof with the same jti is another proof.
        assert_eq!(replays.first_use("k2", "a", 100, 50), Use::First);
        // Past its window it can be forgotten: the proof's iat no longer passes anyway.
        assert_eq!(replays.first_use("k", "a", 300, 101), Use::First);
        let full = (0..10_000)
            .map(|i| replays.first_use("k", &i.to_string(), 1_000, 200))
            .filter(|u| *u == Use::Full)
            .count();
        assert!(full > 0, "the bound was never reached");
        assert!(replays.len() <= 32 + 16, "{} remembered", replays.len());
        // Once they are out of their window there is room again.
        assert_eq!(replays.first_use("k", "late", 2_000, 1_001), Use::First);
    }
}
