//! The two verify caches (DESIGN §2 steps 2–3).
//!
//! * [`TokenCache`]: token string → verified claims and pre-built identity headers. An entry
//!   never outlives the token's `exp`; a hit costs one hash and no signature check.
//! * [`LivenessCache`]: `jti` → whether the allow-list entry exists, with a short TTL and
//!   single-flight loading, so N concurrent misses for one token make one store call.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use moka::Expiry;

use crate::clock::SharedClock;
use crate::store::{Store, StoreError};
use crate::token::AccessClaims;

pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const X_USER_NAME: HeaderName = HeaderName::from_static("x-user-name");
pub const X_USER_EMAIL: HeaderName = HeaderName::from_static("x-user-email");
pub const X_AUTH_CLIENT_ID: HeaderName = HeaderName::from_static("x-auth-client-id");
pub const X_AUTH_SCOPE: HeaderName = HeaderName::from_static("x-auth-scope");
pub const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// Every identity header verify may send; the proxy must copy (and so overwrite) all of them.
pub const IDENTITY_HEADERS: [&str; 6] = [
    "X-User-Id",
    "X-User-Name",
    "X-User-Email",
    "X-Auth-Client-Id",
    "X-Auth-Scope",
    "X-Auth-Token",
];

/// A token whose signature, type, issuer and lifetime have been checked, with everything the
/// hot path needs already computed.
#[derive(Debug)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    /// The `bind_ip` claim parsed; `Some(None)` when it is present but unreadable, which no
    /// client address can match.
    pub bind_ip: Option<Option<IpAddr>>,
    pub has_otp: bool,
    pub identity_headers: Vec<(HeaderName, HeaderValue)>,
    /// Liveness confirmed under this epoch of the revocation feed …
    stamp_epoch: AtomicU64,
    /// … and good until this service-clock millisecond (the store answer's TTL end).
    stamp_until_ms: AtomicU64,
}

impl VerifiedToken {
    pub fn new(claims: AccessClaims, token: &str, forward_token: bool) -> Self {
        let mut identity_headers = vec![
            (X_USER_ID, header_value(&claims.sub)),
            (X_USER_NAME, header_value(&claims.username)),
        ];
        if let Some(email) = claims.email.as_deref().filter(|e| !e.is_empty()) {
            identity_headers.push((X_USER_EMAIL, header_value(email)));
        }
        identity_headers.push((X_AUTH_CLIENT_ID, header_value(&claims.client_id)));
        identity_headers.push((X_AUTH_SCOPE, header_value(&claims.scope)));
        if forward_token {
            identity_headers.push((X_AUTH_TOKEN, header_value(token)));
        }
        Self {
            bind_ip: claims.bind_ip.as_deref().map(|ip| ip.parse().ok()),
            has_otp: claims.has_amr("otp"),
            claims,
            identity_headers,
            stamp_epoch: AtomicU64::new(u64::MAX),
            stamp_until_ms: AtomicU64::new(0),
        }
    }

    /// The hot path's liveness answer: known live under `epoch` until a later millisecond.
    /// Any revocation message or feed interruption moves the epoch on, so a stamp never
    /// outlives information the feed may have carried.
    pub fn live_by_stamp(&self, epoch: u64, now_ms: u64) -> bool {
        self.stamp_epoch.load(Ordering::Acquire) == epoch
            && self.stamp_until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub fn stamp_live(&self, epoch: u64, until_ms: u64) {
        self.stamp_until_ms.store(until_ms, Ordering::Relaxed);
        self.stamp_epoch.store(epoch, Ordering::Release);
    }
}

/// Header values from claim text: control characters cannot travel in a header and are
/// replaced, so a crafted name can never split or inject headers.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        HeaderValue::from_bytes(clean.as_bytes()).unwrap_or(HeaderValue::from_static(""))
    })
}

/// Entries live until the token's `exp` plus the validation leeway, by the service clock.
struct UntilExpiry {
    clock: SharedClock,
    leeway: i64,
}

impl Expiry<String, Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<VerifiedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let remaining = value
            .claims
            .exp
            .saturating_add(self.leeway)
            .saturating_sub(self.clock.now_unix());
        Some(Duration::from_secs(u64::try_from(remaining).unwrap_or(0)))
    }
}

/// Entries each worker thread keeps in front of the shared cache.
const FRONT_CAPACITY: usize = 4096;

type FrontMap = std::collections::HashMap<(u64, u64), (Box<str>, Arc<VerifiedToken>)>;

thread_local! {
    /// Per worker thread, keyed by (cache instance, token hash): a hit touches no shared
    /// memory at all. Safe to keep: a verified token only ever becomes invalid by `exp`, which
    /// every request checks, and revocation is decided by the liveness stamp, not here.
    static FRONT: std::cell::RefCell<FrontMap> = std::cell::RefCell::new(FrontMap::new());
}

static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Token string → verified token: a per-thread front over a shared, bounded moka cache whose
/// entries expire with the token. Disabled (every lookup misses) when capacity is 0.
pub struct TokenCache {
    id: u64,
    hasher: foldhash::fast::RandomState,
    inner: Option<moka::sync::Cache<String, Arc<VerifiedToken>, foldhash::fast::RandomState>>,
}

impl TokenCache {
    pub fn new(capacity: u64, clock: SharedClock, leeway: i64) -> Self {
        let inner = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry { clock, leeway })
                // Keys are ~700-byte tokens: SipHash would cost more than the rest of a hit.
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        Self {
            id: NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            hasher: foldhash::fast::RandomState::default(),
            inner,
        }
    }

    fn front_key(&self, token: &str) -> (u64, u64) {
        use std::hash::BuildHasher;
        (self.id, self.hasher.hash_one(token))
    }

    pub fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        let shared = self.inner.as_ref()?;
        let key = self.front_key(token);
        let front = FRONT.with(|f| {
            f.borrow()
                .get(&key)
                .filter(|(t, _)| &**t == token)
                .map(|(_, v)| v.clone())
        });
        if front.is_some() {
            return front;
        }
        let found = shared.get(token)?;
        self.remember(key, token, found.clone());
        Some(found)
    }

    pub fn insert(&self, token: &str, verified: Arc<VerifiedToken>) {
        if let Some(cache) = &self.inner {
            cache.insert(token.to_string(), verified.clone());
            self.remember(self.front_key(token), token, verified);
        }
    }

    fn remember(&self, key: (u64, u64), token: &str, verified: Arc<VerifiedToken>) {
        FRONT.with(|f| {
            let mut front = f.borrow_mut();
            if front.len() >= FRONT_CAPACITY {
                front.clear();
            }
            front.insert(key, (token.into(), verified));
        });
    }
}

/// A liveness answer and the service-clock millisecond it was read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub live: bool,
    pub read_at_ms: u64,
}

/// `jti` → live or revoked, backed by the store's allow-list.
///
/// A load races the revocation feed: Redis may answer "live" just before the token is revoked,
/// and the feed's "revoked" may then land before the load's answer is stored, which would
/// overwrite it. So every revocation heard is also kept in `revoked` (for longer than a
/// liveness answer lives), and no answer read from the cache or a load counts as live for a
/// `jti` in it. A load that spans a feed interruption (`generation` moved: messages may have
/// been missed) is not trusted either and is read again.
pub struct LivenessCache {
    inner: Option<moka::future::Cache<String, Liveness>>,
    revoked: Option<moka::sync::Cache<String, ()>>,
    generation: AtomicU64,
}

impl LivenessCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let inner = (capacity > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        // Only needs to outlive any load in flight and any live answer cached before the
        // revocation: twice the liveness TTL, plus the store's response timeout.
        let revoked = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity.max(10_000))
                .time_to_live(ttl * 2 + Duration::from_secs(2))
                .build()
        });
        Self {
            inner,
            revoked,
            generation: AtomicU64::new(0),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn revoked_recently(&self, jti: &str) -> bool {
        self.revoked.as_ref().is_some_and(|r| r.contains_key(jti))
    }

    /// The cached answer; a revocation heard since it was stored wins.
    pub async fn get(&self, jti: &str) -> Option<Liveness> {
        let mut hit = self.inner.as_ref()?.get(jti).await?;
        if hit.live && self.revoked_recently(jti) {
            hit.live = false;
        }
        Some(hit)
    }

    /// The cached answer, or one store lookup shared by every concurrent caller for `jti`.
    /// The answer counts only if no revocation of `jti` and no feed interruption happened
    /// while it was being read.
    pub async fn get_or_load(
        &self,
        jti: &str,
        store: &Arc<dyn Store>,
        now_ms: u64,
    ) -> Result<Liveness, StoreError> {
        let load = || async move {
            store.token_is_live(jti).await.map(|live| Liveness {
                live,
                read_at_ms: now_ms,
            })
        };
        let Some(cache) = &self.inner else {
            return load().await;
        };
        for _ in 0..2 {
            let generation = self.generation.load(Ordering::Acquire);
            let mut answer = cache
                .try_get_with_by_ref(jti, load())
                .await
                .map_err(|e| (*e).clone())?;
            if answer.live && self.revoked_recently(jti) {
                // The feed's verdict may have been overwritten by this load: restore it.
                answer.live = false;
                cache.insert(jti.to_string(), answer).await;
                return Ok(answer);
            }
            if self.generation.load(Ordering::Acquire) == generation {
                return Ok(answer);
            }
            cache.invalidate(jti).await;
        }
        // The feed keeps dropping: ask the store directly, caching nothing.
        let answer = load().await?;
        Ok(Liveness {
            live: answer.live && !self.revoked_recently(jti),
            ..answer
        })
    }

    /// A revocation heard on the feed: known dead from now on, without asking the store.
    pub async fn mark_revoked(&self, jti: String, now_ms: u64) {
        if let Some(revoked) = &self.revoked {
            revoked.insert(jti.clone(), ());
        }
        if let Some(cache) = &self.inner {
            let dead = Liveness {
                live: false,
                read_at_ms: now_ms,
            };
            cache.insert(jti, dead).await;
        }
    }

    /// Forget every answer (the feed was lost or re-established: revocations may have been
    /// missed); loads in flight across this are read again.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.inner {
            cache.invalidate_all();
        }
    }
}
