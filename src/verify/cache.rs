//! The two verify caches (DESIGN §2 steps 2–3).
//!
//! * [`TokenCache`]: token string → verified claims and pre-built identity headers. An entry
//!   never outlives the token's `exp`; a hit costs one hash and no signature check.
//! * [`LivenessCache`]: `jti` → whether the allow-list entry exists, with a short TTL and
//!   single-flight loading, so N concurrent misses for one token make one store call.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::clock::SharedClock;
use crate::store::{Store, StoreError};
use crate::token::AccessClaims;

pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const X_USER_NAME: HeaderName = HeaderName::from_static("x-user-name");
pub const X_USER_EMAIL: HeaderName = HeaderName::from_static("x-user-email");
pub const X_USER_GROUPS: HeaderName = HeaderName::from_static("x-user-groups");
pub const X_AUTH_CLIENT_ID: HeaderName = HeaderName::from_static("x-auth-client-id");
pub const X_AUTH_SCOPE: HeaderName = HeaderName::from_static("x-auth-scope");
pub const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");
/// `user`, `client` (a client acting as itself) or `workload`.
pub const X_AUTH_SUBJECT_TYPE: HeaderName = HeaderName::from_static("x-auth-subject-type");

/// A token whose signature, type, issuer and lifetime have been checked, reduced to what a
/// decision and the identity headers need. Compact on purpose (about 150 bytes): 100,000 of
/// them must fit in a few tens of MiB, so what tokens share comes from one [`Interner`]
/// allocation: the audience list, and the identity headers of a (user, client, scope).
#[derive(Debug)]
pub struct VerifiedToken {
    pub exp: i64,
    pub jti: Box<str>,
    pub aud: Arc<[Arc<str>]>,
    identity: Arc<Identity>,
    /// `X-Auth-Token`, when `FORWARD_ACCESS_TOKEN` is on.
    token: Option<Box<HeaderValue>>,
    /// Bindings, when the token has any (most have none).
    bindings: Option<Box<Bindings>>,
    pub has_otp: bool,
    /// `FORWARD_UPSTREAM_TOKEN`: the upstream access token (sensitive header) and when it
    /// expires, once read; `Some((None, _))` = the grant has none.
    upstream: std::sync::OnceLock<Box<(Option<HeaderValue>, Option<i64>)>>,
    /// Liveness confirmed under this epoch of the revocation feed …
    stamp_epoch: AtomicU64,
    /// … when this many revocations had been heard …
    stamp_revocations: AtomicU64,
    /// … and good until this service-clock millisecond (the store answer's TTL end).
    stamp_until_ms: AtomicU64,
}

/// The identity headers of a 200, built once per (user, client, scope, e-mail) and shared by
/// every token that carries them. User, client and scope are read back from them.
#[derive(Debug)]
struct Identity {
    user_id: HeaderValue,
    user_name: HeaderValue,
    email: Option<HeaderValue>,
    /// The `groups` claim, comma-separated (group names with a comma or a control character
    /// never reach a token).
    groups: Option<HeaderValue>,
    group_list: Box<[String]>,
    client_id: HeaderValue,
    scope: HeaderValue,
    subject_type: HeaderValue,
    kind: crate::token::SubjectType,
}

#[derive(Debug, Default)]
struct Bindings {
    /// The `bind_ip` claim parsed; `Some(None)` when it is present but unreadable, which no
    /// client address can match.
    ip: Option<Option<IpAddr>>,
    /// base64url(SHA-256(User-Agent)).
    ua: Option<Box<str>>,
    /// RFC 8705 `x5t#S256`.
    cert: Option<Box<str>>,
    /// RFC 9449 `jkt`: the DPoP key's thumbprint.
    jkt: Option<Box<str>>,
}

/// What a token's liveness stamp says about it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Live, and nothing was revoked since: no lookup at all.
    Live,
    /// Live when stamped, but revocations were heard since: only a revocation of this `jti`
    /// can matter (ask [`LivenessCache::revoked_recently`]).
    Recheck,
    /// No usable answer (expired, never stamped, or the feed was interrupted since).
    Stale,
}

impl VerifiedToken {
    pub fn new(claims: AccessClaims, token: &str, forward_token: bool, strings: &Interner) -> Self {
        // Our own second factor, or one the enterprise IdP vouched for (an ID-JAG's amr).
        let has_otp = claims.has_amr("otp") || claims.has_amr("mfa");
        let bindings = (claims.bind_ip.is_some()
            || claims.bind_ua.is_some()
            || claims.cnf.is_some())
        .then(|| {
            Box::new(Bindings {
                ip: claims.bind_ip.as_deref().map(|ip| ip.parse().ok()),
                ua: claims.bind_ua.clone().map(String::into_boxed_str),
                cert: claims
                    .cnf
                    .as_ref()
                    .and_then(|c| c.x5t_s256.clone())
                    .map(String::into_boxed_str),
                jkt: claims
                    .cnf
                    .as_ref()
                    .and_then(|c| c.jkt.clone())
                    .map(String::into_boxed_str),
            })
        });
        Self {
            exp: claims.exp,
            aud: strings.audience(&claims.aud),
            identity: strings.identity(&claims),
            token: forward_token.then(|| Box::new(header_value(token))),
            bindings,
            has_otp,
            upstream: std::sync::OnceLock::new(),
            jti: claims.jti.into_boxed_str(),
            stamp_epoch: AtomicU64::new(u64::MAX),
            stamp_revocations: AtomicU64::new(0),
            stamp_until_ms: AtomicU64::new(0),
        }
    }

    /// `sub`, as its header carries it.
    pub fn user_id(&self) -> &str {
        self.identity.user_id.to_str().unwrap_or("")
    }

    /// `username`, as its header carries it.
    pub fn username(&self) -> &str {
        self.identity.user_name.to_str().unwrap_or("")
    }

    /// What the allow-lists are asked about at verify.
    pub fn who(&self) -> crate::policy::Identity<'_> {
        let id = &*self.identity;
        crate::policy::Identity::of_subject(
            self.user_id(),
            self.username(),
            id.email.as_ref().and_then(|e| e.to_str().ok()),
            &id.group_list,
            id.kind,
        )
    }

    /// A user, a client acting as itself, or a workload.
    pub fn subject_type(&self) -> crate::token::SubjectType {
        self.identity.kind
    }

    pub fn client_id(&self) -> &str {
        self.identity.client_id.to_str().unwrap_or("")
    }

    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.identity
            .scope
            .to_str()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }

    pub fn bind_ip(&self) -> Option<Option<IpAddr>> {
        self.bindings.as_ref().and_then(|b| b.ip)
    }

    pub fn bind_ua(&self) -> Option<&str> {
        self.bindings.as_ref().and_then(|b| b.ua.as_deref())
    }

    pub fn cert_thumbprint(&self) -> Option<&str> {
        self.bindings.as_ref().and_then(|b| b.cert.as_deref())
    }

    /// The thumbprint of the DPoP key the token is bound to (`cnf.jkt`).
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.bindings.as_ref().and_then(|b| b.jkt.as_deref())
    }

    /// The upstream token's header value, once [`Self::set_upstream_token`] ran.
    pub fn upstream_token(&self) -> Option<&HeaderValue> {
        self.upstream.get().and_then(|b| b.0.as_ref())
    }

    /// `None`: not read yet; `Some(expiry)` once read.
    pub fn upstream_token_state(&self) -> Option<Option<i64>> {
        self.upstream.get().map(|b| b.1)
    }

    /// Keeps the upstream token read for this token (the first reader wins); its expiry.
    pub fn set_upstream_token(&self, token: Option<(&str, Option<i64>)>) -> Option<i64> {
        let (value, at) = match token {
            Some((text, at)) => (
                HeaderValue::from_str(text).ok().map(|mut v| {
                    v.set_sensitive(true);
                    v
                }),
                at,
            ),
            None => (None, None),
        };
        self.upstream.get_or_init(|| Box::new((value, at))).1
    }

    /// The identity headers of a 200, in order.
    pub fn identity_headers(&self) -> impl Iterator<Item = (HeaderName, &HeaderValue)> {
        let id = &*self.identity;
        [
            (X_USER_ID, Some(&id.user_id)),
            (X_USER_NAME, Some(&id.user_name)),
            (X_USER_EMAIL, id.email.as_ref()),
            (X_USER_GROUPS, id.groups.as_ref()),
            (X_AUTH_CLIENT_ID, Some(&id.client_id)),
            (X_AUTH_SCOPE, Some(&id.scope)),
            (X_AUTH_SUBJECT_TYPE, Some(&id.subject_type)),
            (X_AUTH_TOKEN, self.token.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    }

    /// The hot path's liveness answer: known live under feed `epoch` until a later millisecond,
    /// and, when no revocation was heard since (`revocations` unchanged), without any lookup.
    /// A feed interruption moves the epoch on, so a stamp never outlives information the feed
    /// may have carried.
    pub fn stamp(&self, epoch: u64, revocations: u64, now_ms: u64) -> Stamp {
        if self.stamp_epoch.load(Ordering::Acquire) != epoch
            || self.stamp_until_ms.load(Ordering::Relaxed) <= now_ms
        {
            return Stamp::Stale;
        }
        if self.stamp_revocations.load(Ordering::Relaxed) == revocations {
            Stamp::Live
        } else {
            Stamp::Recheck
        }
    }

    /// `revocations` counts the revocations heard before the store was asked.
    pub fn stamp_live(&self, epoch: u64, revocations: u64, until_ms: u64) {
        self.stamp_until_ms.store(until_ms, Ordering::Relaxed);
        self.stamp_revocations.store(revocations, Ordering::Relaxed);
        self.stamp_epoch.store(epoch, Ordering::Release);
    }

    /// None of the revocations heard up to `revocations` named this token.
    pub fn restamp(&self, revocations: u64) {
        self.stamp_revocations
            .fetch_max(revocations, Ordering::Relaxed);
    }

    /// Whether the store said "live" less than a liveness TTL ago, whatever the feed did
    /// since (`REDIS_FAILURE_MODE=cached` serves such tokens through an outage).
    pub fn recently_live(&self, now_ms: u64) -> bool {
        self.stamp_until_ms.load(Ordering::Relaxed) > now_ms
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

/// Shares what recurs across tokens: audience lists and identity headers, one allocation
/// each, referenced by every cached token that carries it. Bounded: past `MAX_INTERNED`
/// distinct values new ones are simply not shared. Used on cache misses only.
#[derive(Default)]
pub struct Interner {
    audiences: std::sync::Mutex<std::collections::HashMap<Vec<String>, AudienceList>>,
    identities: std::sync::Mutex<std::collections::HashMap<IdentityKey, Arc<Identity>>>,
}

type IdentityKey = (
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    crate::token::SubjectType,
);
type AudienceList = Arc<[Arc<str>]>;

const MAX_INTERNED: usize = 65_536;

impl Interner {
    fn audience(&self, aud: &crate::token::Audience) -> Arc<[Arc<str>]> {
        let list: Vec<String> = aud.iter().map(str::to_string).collect();
        let mut map = self.audiences.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = map.get(&list) {
            return shared.clone();
        }
        let shared: Arc<[Arc<str>]> = list.iter().map(|a| Arc::from(a.as_str())).collect();
        if map.len() < MAX_INTERNED {
            map.insert(list, shared.clone());
        }
        shared
    }

    fn identity(&self, claims: &AccessClaims) -> Arc<Identity> {
        let email = claims.email.clone().filter(|e| !e.is_empty());
        let key: IdentityKey = (
            claims.sub.clone(),
            claims.username.clone(),
            email,
            claims.client_id.clone(),
            claims.scope.clone(),
            // A group with surrounding white space is another group than its trimmed name, but
            // a server splitting this header on commas would read it as that name: it is left
            // out of the header (the policy still sees it as it is).
            claims
                .groups
                .iter()
                .filter(|g| g.trim() == g.as_str())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(","),
            claims.subject_type,
        );
        let mut map = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = map.get(&key) {
            return shared.clone();
        }
        let shared = Arc::new(Identity {
            user_id: header_value(&key.0),
            user_name: header_value(&key.1),
            email: key.2.as_deref().map(header_value),
            groups: (!key.5.is_empty()).then(|| header_value(&key.5)),
            group_list: claims.groups.clone().into_boxed_slice(),
            client_id: header_value(&key.3),
            scope: header_value(&key.4),
            subject_type: HeaderValue::from_static(key.6.as_str()),
            kind: key.6,
        });
        if map.len() < MAX_INTERNED {
            map.insert(key, shared.clone());
        }
        shared
    }
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interner")
    }
}

/// The shared cache's key: SHA-256 of the token. Collision-resistant, so a crafted token can
/// never be taken for a cached one, and 32 bytes instead of the token's ~700.
type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Entries each worker thread keeps in front of the shared cache.
const FRONT_CAPACITY: usize = 1024;

type FrontMap = std::collections::HashMap<(u64, u64), (Box<str>, Arc<VerifiedToken>)>;

thread_local! {
    /// Per worker thread, keyed by (cache instance, token hash) and checked against the whole
    /// token: a hit touches no shared memory and computes no digest. Safe to keep: a verified
    /// token only ever becomes invalid by `exp`, which every request checks, and revocation is
    /// decided by the liveness stamp, not here.
    static FRONT: std::cell::RefCell<FrontMap> = std::cell::RefCell::new(FrontMap::new());
}

static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Token → verified token: a per-thread front over a shared, bounded map keyed by the token's
/// digest. An entry never serves past the token's `exp` (plus the validation leeway).
/// Disabled (every lookup misses) when capacity is 0.
pub struct TokenCache {
    id: u64,
    hasher: foldhash::fast::RandomState,
    shared: Option<SharedTokens>,
    /// Strings shared by the cached tokens.
    pub strings: Interner,
}

impl TokenCache {
    pub fn new(capacity: u64, clock: SharedClock, leeway: i64) -> Self {
        Self {
            id: NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            hasher: foldhash::fast::RandomState::default(),
            shared: (capacity > 0).then(|| SharedTokens::new(capacity, clock, leeway)),
            strings: Interner::default(),
        }
    }

    fn front_key(&self, token: &str) -> (u64, u64) {
        use std::hash::BuildHasher;
        (self.id, self.hasher.hash_one(token))
    }

    pub fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        let shared = self.shared.as_ref()?;
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
        let found = shared.get(&digest(token))?;
        self.remember(key, token, found.clone());
        Some(found)
    }

    pub fn insert(&self, token: &str, verified: Arc<VerifiedToken>) {
        if let Some(shared) = &self.shared {
            shared.insert(digest(token), verified.clone());
            self.remember(self.front_key(token), token, verified);
        }
    }

    /// Tokens in the shared map (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.shared.as_ref().map_or(0, SharedTokens::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// The shared map: shards of a plain hash map (about 90 bytes an entry, where a general cache
/// spends several hundred) plus each shard's keys in insertion order. A full shard evicts
/// expired entries and then the oldest. Reads take a shard's read lock, and only on a miss
/// of the per-thread front.
struct SharedTokens {
    shards: Box<[std::sync::RwLock<Shard>]>,
    per_shard: usize,
    clock: SharedClock,
    leeway: i64,
}

#[derive(Default)]
struct Shard {
    map: std::collections::HashMap<TokenDigest, Arc<VerifiedToken>, foldhash::fast::RandomState>,
    order: std::collections::VecDeque<TokenDigest>,
}

const SHARDS: usize = 64;

impl SharedTokens {
    fn new(capacity: u64, clock: SharedClock, leeway: i64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        let shards = if capacity < SHARDS * 16 { 1 } else { SHARDS };
        Self {
            shards: (0..shards).map(|_| Default::default()).collect(),
            per_shard: capacity.div_ceil(shards).max(1),
            clock,
            leeway,
        }
    }

    fn shard(&self, key: &TokenDigest) -> &std::sync::RwLock<Shard> {
        // The digest is uniformly distributed: its first byte picks the shard.
        &self.shards[usize::from(key[0]) % self.shards.len()]
    }

    fn expired(&self, token: &VerifiedToken, now: i64) -> bool {
        token.exp.saturating_add(self.leeway) < now
    }

    fn get(&self, key: &TokenDigest) -> Option<Arc<VerifiedToken>> {
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        let found = shard.map.get(key)?;
        (!self.expired(found, self.clock.now_unix())).then(|| found.clone())
    }

    fn insert(&self, key: TokenDigest, token: Arc<VerifiedToken>) {
        let now = self.clock.now_unix();
        let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = shard.map.get_mut(&key) {
            *existing = token;
            return;
        }
        while shard.map.len() >= self.per_shard {
            let Some(oldest) = shard.order.pop_front() else {
                break;
            };
            shard.map.remove(&oldest);
        }
        // Expired entries at the front go too (tokens mostly expire in insertion order).
        while let Some(front) = shard.order.front().copied() {
            match shard.map.get(&front) {
                Some(t) if !self.expired(t, now) => break,
                _ => {
                    shard.order.pop_front();
                    shard.map.remove(&front);
                }
            }
        }
        shard.map.insert(key, token);
        shard.order.push_back(key);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
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
    /// Revocations heard so far; a token stamped at an older count checks `revoked` once.
    revocations: AtomicU64,
}

/// Answers kept per `jti` besides the stamps on the tokens themselves: only for loads in
/// flight (single-flight) and tokens requested again soon under another stamp, so a few.
const LIVENESS_ANSWERS: u64 = 10_000;
/// Revocations remembered (for longer than any stamp lives). Past this many within that
/// time, the oldest are forgotten, and `feed_epoch` moves on so every stamp is re-read.
const REVOCATIONS_REMEMBERED: u64 = 100_000;

impl LivenessCache {
    /// `feed_epoch` is the verify state's epoch; it moves on if revocations are ever evicted
    /// before they could have stopped mattering.
    pub fn new(capacity: u64, ttl: Duration, feed_epoch: Arc<AtomicU64>) -> Self {
        let inner = (capacity > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(capacity.min(LIVENESS_ANSWERS))
                .time_to_live(ttl)
                .build()
        });
        // Only needs to outlive any load in flight and any live stamp made before the
        // revocation: twice the liveness TTL, plus the store's response timeout.
        let revoked = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(REVOCATIONS_REMEMBERED)
                .time_to_live(ttl * 2 + Duration::from_secs(2))
                .eviction_listener(move |_, _, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        feed_epoch.fetch_add(1, Ordering::AcqRel);
                    }
                })
                .build()
        });
        Self {
            inner,
            revoked,
            generation: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
        }
    }

    /// How many revocations were heard so far.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn revoked_recently(&self, jti: &str) -> bool {
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
        // After the insert: whoever sees the new count finds the jti in `revoked`.
        self.revocations.fetch_add(1, Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn verified(jti: &str, exp: i64, strings: &Interner) -> Arc<VerifiedToken> {
        let claims: AccessClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://auth.example.com", "sub": "42", "aud": "https://mcp.example.com/mcp",
            "exp": exp, "jti": jti, "client_id": "c", "scope": "mcp", "username": "alice"
        }))
        .unwrap();
        Arc::new(VerifiedToken::new(claims, "t", false, strings))
    }

    #[test]
    fn the_shared_map_is_bounded_and_never_serves_an_expired_token() {
        let clock = ManualClock::new(1_000);
        let cache = TokenCache::new(3, Arc::new(clock.clone()), 30);
        for i in 0..4 {
            let token = format!("token-{i}");
            cache.insert(&token, verified(&format!("j{i}"), 2_000, &cache.strings));
        }
        assert_eq!(cache.len(), 3, "the oldest was evicted");
        let shared = cache.shared.as_ref().unwrap();
        assert!(shared.get(&digest("token-0")).is_none());
        assert_eq!(&*shared.get(&digest("token-3")).unwrap().jti, "j3");
        clock.set(2_031);
        assert!(
            shared.get(&digest("token-3")).is_none(),
            "past exp + leeway"
        );
        // Identity headers and audiences are shared, not copied per token.
        let a = verified("a", 2_000, &cache.strings);
        let b = verified("b", 2_000, &cache.strings);
        assert!(Arc::ptr_eq(&a.identity, &b.identity));
        assert!(Arc::ptr_eq(&a.aud, &b.aud));
        assert_eq!(a.username(), "alice");
        assert_eq!(a.scopes().collect::<Vec<_>>(), ["mcp"]);
    }
}
