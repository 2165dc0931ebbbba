//! Persistent state behind both services: the [`Store`] trait, its Redis implementation
//! (production) and its in-memory implementation (`mcp-gateway dev`, tests), with one set of
//! key names ([`keys`]) and the same behaviour: TTLs on every key, atomic take, pub/sub
//! revocations. Every operation is one atomic Redis command or script (DESIGN §5).

pub mod admin;
pub mod keys;
pub mod lanes;
pub mod memory;
pub mod redis;

pub mod trail;

use std::time::Duration;

use async_trait::async_trait;

use crate::audit::Events;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use redis::RedisStore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be asked (down, timed out, refused): verify answers 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back.
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `oauth:token:{jti}`: an issued access token. Its existence is the allow-list entry that
/// verify checks; revocation deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub jti: String,
    /// GitHub user id (`sub`).
    pub user_id: String,
    /// GitHub login; indexes `oauth:user_tokens:{username}`.
    pub username: String,
    pub client_id: String,
    pub scope: String,
    pub audience: Vec<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    /// Refresh family the token came from, when it came from a refresh flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_id: Option<String>,
    /// The upstream's access token for the MCP server (`FORWARD_UPSTREAM_TOKEN`), sealed to
    /// this `jti`: verify opens it; revoking the token deletes it with the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// How it was obtained (`authorization_code`, `refresh_token`, `mint`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The address the client asked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

/// Tokens to record for one grant: an access token and a refresh token in a family,
/// optionally rotating an earlier refresh token of that family.
#[derive(Debug, Clone)]
pub struct GrantWrite {
    pub token: TokenRecord,
    pub refresh_hash: String,
    pub refresh_json: String,
    pub refresh_expires_at: i64,
    pub family_id: String,
    /// Hash of the refresh token being rotated (refresh grant), marked used atomically.
    pub rotate_from: Option<String>,
    /// Key of the authorization code this grant redeems (`oauth:code:…`), marked redeemed into
    /// `family_id` in the same step.
    pub redeem_code: Option<String>,
    /// What this grant answered, kept so a retry of the same request (a client that lost the
    /// response, a store timeout) gets the same tokens instead of a reuse verdict.
    pub result: Option<GrantResult>,
    /// `CLIENT_LIFETIME`: a registration that expires is renewed for this long by each grant,
    /// so an active client never expires (one registered never to expire stays so).
    pub renew_client: Option<Duration>,
    /// A hash of the address the client registered from
    /// ([`crate::records::ClientRecord::registered_from`]): its first grant takes it off that
    /// address's unused list too.
    pub registered_from: Option<String>,
    /// The grant's events: `token_issued`/`token_refreshed` on [`crate::audit::outcome::ISSUED`],
    /// `refresh_reuse_detected` on [`crate::audit::outcome::REUSED`].
    pub events: Events,
}

/// A grant's answer, sealed with a key only the presenter of the credential can derive,
/// under `oauth:grant_result:{sha256(credential)}` for `ttl`.
#[derive(Debug, Clone)]
pub struct GrantResult {
    pub key: String,
    pub sealed: String,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantOutcome {
    Issued,
    /// The code or refresh token does not exist (expired, revoked, never issued).
    Missing,
    /// The refresh token was already used: the whole family has been revoked.
    Reused,
    /// The code was already redeemed, into this family (its tokens must be revoked).
    CodeReused {
        family_id: String,
    },
    /// The family was revoked (code reuse, client deletion): nothing issued.
    FamilyRevoked,
    /// The same credential was presented moments ago: nothing issued, here is its answer.
    Replayed(String),
}

impl TokenRecord {
    /// The allow-list record of a freshly minted token.
    pub fn for_claims(claims: &crate::token::AccessClaims, family_id: Option<String>) -> Self {
        Self {
            jti: claims.jti.clone(),
            user_id: claims.sub.clone(),
            username: claims.username.clone(),
            client_id: claims.client_id.clone(),
            scope: claims.scope.clone(),
            audience: claims.aud.iter().map(str::to_string).collect(),
            issued_at: claims.iat,
            expires_at: claims.exp,
            family_id,
            upstream: None,
            grant: None,
            client_ip: None,
        }
    }
}

/// What reserving a guarded attempt (a TOTP code, say) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted; `count` is the highest counter now (1 for a first attempt in the window).
    Allowed { count: u64 },
    /// Locked out for this long: the attempt must not be evaluated.
    Locked(Duration),
}

/// The limit [`Store::reserve_attempt`] applies: `max` attempts per `window`, then locked
/// for `lockout` (writing the events of [`crate::audit::outcome::LOCKED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimit {
    pub max: u64,
    pub window: Duration,
    pub lockout: Duration,
}

/// Remaining lifetime of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Missing,
    Persistent,
    Expires(Duration),
}

/// The one-time credential a token is issued for ([`Store::put_token_once`]).
#[derive(Debug, Clone, Copy)]
pub struct OnceWrite<'a> {
    /// The token.
    pub record: &'a TokenRecord,
    /// The credential's marker (`oauth:assertion_jti:…`).
    pub key: &'a str,
    /// How long it stays used: until it could no longer pass.
    pub ttl: Duration,
}

/// Revoked `jti`s as they are published. The stream ends when the subscription is lost;
/// the subscriber must then assume it missed messages.
pub type RevocationStream = BoxStream<'static, String>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reachability (`/ready`).
    async fn ping(&self) -> StoreResult<()>;

    /// Records an issued token and indexes it by user and client; the record lives until the
    /// token expires. `now` is Unix seconds.
    async fn put_token(&self, record: &TokenRecord, now: i64, events: &Events) -> StoreResult<()>;

    /// [`Store::put_token`] for a credential that may be used once (an assertion's `jti`):
    /// when `once.key` is absent, `once.record` is recorded and `once.key` set for `once.ttl`
    /// (events of [`crate::audit::outcome::WRITTEN`]) and `true` returned; when it is there,
    /// nothing is written (events of [`crate::audit::outcome::REUSED`]) and `false` returned.
    async fn put_token_once(
        &self,
        once: &OnceWrite<'_>,
        now: i64,
        events: &Events,
    ) -> StoreResult<bool>;

    async fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>>;

    /// Whether the allow-list entry exists: the one question verify asks on a cache miss.
    async fn token_is_live(&self, jti: &str) -> StoreResult<bool>;

    /// Deletes the record and its index entries and publishes the revocation, atomically.
    /// Returns whether a live record existed (the events of
    /// [`crate::audit::outcome::REVOKED`] are written only then).
    async fn revoke_token(&self, jti: &str, events: &Events) -> StoreResult<bool>;

    /// Live `jti`s indexed under `index_key` (`oauth:user_tokens:…`/`oauth:client_tokens:…`).
    async fn indexed_tokens(&self, index_key: &str, now: i64) -> StoreResult<Vec<String>>;

    async fn subscribe_revocations(&self) -> StoreResult<RevocationStream>;

    /// Sets `key` (overwriting), with a TTL or none.
    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()>;

    /// Sets `key` only if it does not exist; returns whether it was set.
    async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<bool>;

    async fn get(&self, key: &str) -> StoreResult<Option<String>>;

    /// Reads and deletes in one step (GETDEL): of N concurrent takers exactly one gets it.
    async fn take(&self, key: &str) -> StoreResult<Option<String>>;

    async fn delete(&self, key: &str) -> StoreResult<bool>;

    async fn ttl(&self, key: &str) -> StoreResult<Ttl>;

    /// Increments a counter, starting its `window` when it is created; returns the new count.
    async fn incr_within(&self, key: &str, window: Duration) -> StoreResult<u64>;

    /// Counts one attempt on every key of `counters` (each starting its `window` when created)
    /// unless a key of `locks` exists; when a counter passes `max`, sets every lock for
    /// `lockout`, clears the counters and refuses. One atomic step, so N concurrent attempts
    /// count N, and none past `max` is evaluated.
    async fn reserve_attempt(
        &self,
        counters: &[String],
        locks: &[String],
        limit: &AttemptLimit,
        events: &Events,
    ) -> StoreResult<Attempt>;

    /// Records a grant's tokens, in one atomic step that is safe to retry: an answer still kept
    /// under `result.key` is returned instead (`Replayed`); with `redeem_code`, only if that
    /// code is unredeemed (leaving a marker with its TTL that names the family, so a second
    /// redemption can revoke what the first issued); with `rotate_from`, only if that refresh
    /// token is unused (marking it used, ending its predecessor's retry window, and revoking
    /// the whole family if it was used before).
    async fn issue_grant(&self, grant: &GrantWrite, now: i64) -> StoreResult<GrantOutcome>;

    /// Revokes every access and refresh token of a family (publishing each jti) and leaves a
    /// tombstone for `tombstone_ttl`. Returns how many members were removed (the events of
    /// [`crate::audit::outcome::REVOKED`] are written only when there were some).
    async fn revoke_family(
        &self,
        family_id: &str,
        tombstone_ttl: Duration,
        events: &Events,
    ) -> StoreResult<usize>;

    /// Stores `user`'s consent to `client_id` and indexes it under the client (so deleting the
    /// client finds it), atomically.
    async fn put_consent(
        &self,
        user: &str,
        client_id: &str,
        json: &str,
        ttl: Duration,
        now: i64,
        events: &Events,
    ) -> StoreResult<()>;

    /// Sets `key` for `ttl` and indexes it under `client_id` (`oauth:client_pending:…`), in one
    /// step: the codes and pending logins of a client that is deleted go with it.
    async fn put_for_client(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        client_id: &str,
        now: i64,
        events: &Events,
    ) -> StoreResult<()>;

    /// Stores a new registration, not yet used for a token: for `unused_lifetime`, listed in
    /// `keys::UNUSED_CLIENTS` and in its address's list (scored by `now_ms`). Past the address's
    /// budget its oldest unused are taken off both lists, then past the global budget the
    /// oldest of all; they are returned, and the caller deletes each with
    /// [`Store::drop_unused_client`] (which spares one used in the meantime). A registration's
    /// first grant takes it off the lists and gives it its full lifetime
    /// ([`GrantWrite::renew_client`]).
    async fn put_new_client(&self, client: &NewClientWrite<'_>) -> StoreResult<NewClient>;

    /// Deletes a registration evicted from the unused list, unless a grant renewed it since;
    /// returns whether it was deleted. Safe to repeat.
    async fn drop_unused_client(
        &self,
        client_id: &str,
        unused_lifetime: Duration,
        events: &Events,
    ) -> StoreResult<bool>;

    /// One bounded step of deleting a client: revokes up to about `budget` of what was issued to
    /// it (refresh families, access tokens, consents, codes and pending logins, through the
    /// client's indexes) and, once nothing is left, deletes the registration itself (writing
    /// the events of [`crate::audit::outcome::DONE`], with the step's count). Each step
    /// is atomic and short (Redis is never blocked for long); repeating a step after a timeout
    /// continues where the last one stopped, and the registration stays until the end, so an
    /// interrupted delete can always be finished by the same request.
    async fn delete_client_step(
        &self,
        client_id: &str,
        tombstone_ttl: Duration,
        budget: usize,
        events: &Events,
    ) -> StoreResult<DeleteStep>;

    /// Deletes a client registration and everything issued to it: access tokens, refresh
    /// families, consents, codes and pending logins, in bounded steps. Returns how many access
    /// tokens outside refresh families it revoked. `event` is written with the last step,
    /// told how many were revoked before it (`detail.revoked_before`).
    async fn delete_client(
        &self,
        client_id: &str,
        tombstone_ttl: Duration,
        event: Option<crate::audit::Event>,
    ) -> StoreResult<usize> {
        let mut revoked = 0;
        loop {
            let events = event.clone().map_or_else(Events::none, |e| {
                Events::none().on(
                    crate::audit::outcome::DONE,
                    e.detail("revoked_before", revoked),
                )
            });
            let step = self
                .delete_client_step(client_id, tombstone_ttl, DELETE_STEP_BUDGET, &events)
                .await?;
            revoked += step.revoked;
            if step.remaining == 0 {
                return Ok(revoked);
            }
        }
    }

    /// Sets or deletes one key with its events, which are written only when the key changed
    /// ([`crate::audit::outcome::CHANGED`]): a second factor enrolled, a key rotated. Returns
    /// whether it changed.
    async fn change(&self, change: &Change<'_>, events: &Events) -> StoreResult<bool>;

    /// Appends events that go with no other change: refusals, the operator's reports.
    async fn append_events(&self, events: &Events) -> StoreResult<()>;

    /// Adds verify's usage counts of one UTC hour (`YYYYMMDDHH`), one pipelined write; the
    /// counts live as long as the audit trail.
    async fn add_usage(&self, hour: &str, counts: &[(String, u64)]) -> StoreResult<()>;

    /// The webhook side of the trail (a consumer group per receiver): the consumer's own
    /// pending entries first, else those another consumer left unacknowledged for
    /// `claim_idle`, else new ones; never waits. Creates the group at the end of the trail
    /// when it does not exist (a new receiver does not get the whole history). Entries the
    /// trail has trimmed before they were delivered are acknowledged and left out.
    async fn audit_deliveries(
        &self,
        read: &GroupRead<'_>,
    ) -> StoreResult<Vec<crate::audit::Stored>>;

    /// Marks entries delivered.
    async fn audit_ack(&self, group: &str, ids: &[String]) -> StoreResult<()>;

    /// Entries of the trail a group has not delivered yet (pending and not yet read).
    async fn audit_backlog(&self, group: &str) -> StoreResult<u64>;

    /// Where the events this store writes are reported (counter, `LOG_AUDIT`).
    fn audit_sink(&self) -> &crate::audit::Sink;
}

/// A one-key change for [`Store::change`].
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Set {
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    },
    /// Set only if the key does not exist.
    SetIfAbsent {
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    },
    Delete {
        key: &'a str,
    },
}

/// What a webhook consumer asks of [`Store::audit_deliveries`].
#[derive(Debug, Clone, Copy)]
pub struct GroupRead<'a> {
    pub group: &'a str,
    pub consumer: &'a str,
    pub count: usize,
    /// Entries another consumer read and left unacknowledged this long are taken over (that
    /// consumer is gone: a replica stopped mid-delivery).
    pub claim_idle: Duration,
}

/// How much one [`Store::delete_client_step`] removes: about 30 µs of Redis time each, so a
/// step holds Redis for some 6 ms (`bench/store-scale.sh` measures the longest stall).
pub const DELETE_STEP_BUDGET: usize = 200;

/// What one step of deleting a client did and what is left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteStep {
    /// Access tokens outside refresh families revoked by this step.
    pub revoked: usize,
    /// Entries still indexed under the client; 0 when the registration is gone too.
    pub remaining: usize,
}

/// A new registration for [`Store::put_new_client`].
#[derive(Debug, Clone)]
pub struct NewClientWrite<'a> {
    pub client_id: &'a str,
    pub json: &'a str,
    pub unused_lifetime: Duration,
    /// The hash of the address it registered from, when known.
    pub address: Option<&'a str>,
    pub budget: u64,
    pub budget_per_address: u64,
    pub now_ms: i64,
    /// `client_registered`.
    pub events: Events,
}

/// What [`Store::put_new_client`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClient {
    /// Unused registrations now listed.
    pub unused: u64,
    /// Registrations taken off the list past the budget, to be deleted.
    pub evicted: Vec<String>,
}

/// TTL in whole seconds for a record that expires at `expires_at`, at least one second.
pub(crate) fn seconds_until(expires_at: i64, now: i64) -> u64 {
    u64::try_from(expires_at.saturating_sub(now))
        .unwrap_or(0)
        .max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_until_is_at_least_one() {
        assert_eq!(super::seconds_until(100, 40), 60);
        assert_eq!(super::seconds_until(100, 100), 1);
        assert_eq!(super::seconds_until(100, 200), 1);
    }
}
