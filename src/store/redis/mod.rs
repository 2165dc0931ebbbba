//! The production store on Redis: a multiplexed `ConnectionManager` for commands (one socket,
//! pipelined, reconnecting), a dedicated connection per revocation subscription.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

mod cluster;
mod confirm;
mod connect;
mod feed;
mod route;
mod scripts;
pub(crate) mod stream;

pub use connect::{SENTINEL_POLL, client_for, cluster_client, primary_client};
use connect::{Target, unavailable};
use scripts::Scripts;
use scripts::{grant_args, grant_outcome};

use super::keys;
use super::{
    Attempt, AttemptLimit, Change, DeleteStep, GrantOutcome, GrantWrite, GroupRead, NewClient,
    NewClientWrite, OnceWrite, RevocationStream, Store, StoreError, StoreResult, TokenRecord, Ttl,
    seconds_until,
};
use crate::audit::{self, Events};

/// How long one command may take before the store counts as unavailable (the services and
/// the CLI alike). Every state change is safe to retry after it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1_000);
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// The revocation subscription is PINGed this often …
pub const FEED_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1_000);
/// … and counts as lost when a PING goes unanswered this long: a connection black-holed by
/// the network (no FIN, no RST) is noticed within interval + timeout, not after the TCP
/// timeout, and verify stops trusting its cache.
pub const FEED_HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(2_000);

pub struct RedisStore {
    target: Target,
    scripts: Scripts,
    /// The steps of the operations built for Redis Cluster so far.
    cluster_scripts: cluster::ClusterScripts,
    /// Replicas a grant or revocation must reach before it is answered (Sentinel only).
    wait_replicas: u32,
    /// How much of the audit trail is kept (and whether it is written at all).
    audit: audit::Bounds,
    sink: audit::Sink,
    /// The `WAIT`s concurrent writes share (confirm.rs).
    waits: confirm::Waits,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

impl RedisStore {
    /// The same store with other audit bounds (tests of trimming, benches with it off).
    pub fn with_audit(mut self, bounds: audit::Bounds) -> Self {
        self.audit = bounds;
        self
    }

    /// Appends the audit block the scripts' `audit` reads (scripts.rs) to an invocation.
    fn audit_args(&self, invocation: &mut redis::ScriptInvocation<'_>, events: &Events) {
        let planned = if self.audit.enabled {
            events.planned()
        } else {
            &[]
        };
        let on_cluster = matches!(self.target, Target::Cluster(_));
        for p in planned {
            let e = &p.event;
            invocation.arg(p.when.as_str()).arg(&e.kind);
            if on_cluster {
                // The index streams by their cluster names (the scripts need not hash them).
                let index = |who: Option<&str>, key: fn(&str) -> String| {
                    who.map_or(String::new(), |w| cluster::name(&key(w)))
                };
                invocation
                    .arg(index(e.user.as_deref(), keys::audit_user))
                    .arg(index(e.client_id.as_deref(), keys::audit_client));
            } else {
                invocation
                    .arg(e.user.as_deref().unwrap_or(""))
                    .arg(e.client_id.as_deref().unwrap_or(""));
            }
            invocation.arg(e.to_json());
        }
        invocation
            .arg(planned.len())
            .arg(self.events_per_stream())
            .arg(self.audit.retention.as_millis().max(1) as u64);
    }

    /// How many events one trail stream keeps: all of `AUDIT_MAX_EVENTS` on one server; on a
    /// cluster, whose trail is a stream per bucket, its share (at least `audit::MIN_PER_BUCKET`).
    fn events_per_stream(&self) -> u64 {
        let max = self.audit.max_events.max(1);
        match self.target {
            Target::Cluster(_) => (max / crate::slots::BUCKETS as u64).max(audit::MIN_PER_BUCKET),
            _ => max,
        }
    }

    /// Runs a script with the audit block of `events` appended; its reply. On a cluster a
    /// step answers `{FOLLOW, reply}` (scripts.rs): the index entries it could not write in
    /// its own slot are written here, each in its own, before the reply is read.
    async fn audited<T: redis::FromRedisValue, C: redis::aio::ConnectionLike>(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        events: &Events,
        conn: &mut C,
    ) -> StoreResult<T> {
        self.audit_args(invocation, events);
        if !matches!(self.target, Target::Cluster(_)) {
            return invocation.invoke_async(conn).await.map_err(unavailable);
        }
        let answer: redis::Value = invocation.invoke_async(conn).await.map_err(unavailable)?;
        let (follow, reply) = cluster::step_reply(answer);
        cluster::index_elsewhere(conn, &follow, self.audit.retention).await;
        redis::from_redis_value(reply).map_err(|e| StoreError::Unavailable(format!("Redis: {e}")))
    }

    /// Runs a script whose events are written whatever it finds.
    async fn write(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        events: &Events,
    ) -> StoreResult<()> {
        let _: i64 = self
            .audited(invocation, events, &mut self.any_conn()?)
            .await?;
        self.written(events, audit::outcome::WRITTEN);
        Ok(())
    }

    /// Reports what an operation that ended in `outcome` wrote.
    fn written(&self, events: &Events, outcome: &str) {
        if self.audit.enabled && !events.is_empty() {
            self.sink.written(events.emitted(outcome));
        }
    }
}

/// How long a write waits for its replicas (`WAIT`), shorter than the response timeout.
pub const REPLICA_WAIT: Duration = Duration::from_millis(500);

/// A script that records a token: its keys (the token, its user and client indexes) and its
/// first arguments (jti, record JSON, ttl, exp, now) set.
fn token_invocation<'a>(
    script: &'a redis::Script,
    record: &TokenRecord,
    now: i64,
) -> StoreResult<redis::ScriptInvocation<'a>> {
    let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut invocation = script.prepare_invoke();
    invocation
        .key(keys::token(&record.jti))
        .key(keys::user_tokens(&record.username))
        .key(keys::client_tokens(&record.client_id))
        .arg(&record.jti)
        .arg(json)
        .arg(seconds_until(record.expires_at, now))
        .arg(record.expires_at)
        .arg(now);
    Ok(invocation)
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        if let Some(conn) = self.on_cluster() {
            let _: String = redis::cmd("PING")
                .query_async(&mut conn?)
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_token(&self, record: &TokenRecord, now: i64, events: &Events) -> StoreResult<()> {
        if let Some(conn) = self.on_cluster() {
            let mut conn = conn?;
            let scripts = &self.cluster_scripts;
            // A jti minted for its user shares the user's slot: the user's index is then
            // written in the home step, else in a step of its own before it.
            let together = crate::slots::Bucket::of_id(&record.jti)
                == crate::slots::Bucket::of_user(&record.username);
            scripts
                .index_token(&mut conn, record, now, !together)
                .await?;
            let (mut home, token) = scripts.token_home(record, now, together)?;
            let written: i64 = self.audited(&mut home, events, &mut conn).await?;
            self.replicated_on(&mut conn, &token).await?;
            if written == 0 {
                return Err(StoreError::Unavailable(
                    "this token was revoked while it was written".into(),
                ));
            }
            self.written(events, audit::outcome::WRITTEN);
            return Ok(());
        }
        let mut conn = self.conn()?;
        let mut invocation = token_invocation(&self.scripts.put_token, record, now)?;
        let _: i64 = self.audited(&mut invocation, events, &mut conn).await?;
        self.replicated(&mut conn).await?;
        self.written(events, audit::outcome::WRITTEN);
        Ok(())
    }

    async fn put_token_once(
        &self,
        once: &OnceWrite<'_>,
        now: i64,
        events: &Events,
    ) -> StoreResult<bool> {
        if let Some(conn) = self.on_cluster() {
            // The client's index first, then the marker, the token and its user index in the
            // token's bucket (the marker is named in it).
            let mut conn = conn?;
            let record = once.record;
            self.cluster_scripts
                .index_token(&mut conn, record, now, false)
                .await?;
            let json =
                serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let token = cluster::name(&keys::token(&record.jti));
            let mut invocation = self.cluster_scripts.once_home.prepare_invoke();
            invocation
                .key(&token)
                .key(cluster::name(&keys::user_tokens(&record.username)))
                .key(cluster::name(once.key))
                .arg(&record.jti)
                .arg(json)
                .arg(seconds_until(record.expires_at, now))
                .arg(record.expires_at)
                .arg(now)
                .arg(once.ttl.as_millis().max(1) as u64);
            let written: i64 = self.audited(&mut invocation, events, &mut conn).await?;
            if written == 0 {
                self.written(events, audit::outcome::REUSED);
                return Ok(false);
            }
            self.replicated_on(&mut conn, &token).await?;
            self.written(events, audit::outcome::WRITTEN);
            return Ok(true);
        }
        let mut conn = self.conn()?;
        let mut invocation = token_invocation(&self.scripts.put_token_once, once.record, now)?;
        invocation
            .key(once.key)
            .arg(once.ttl.as_millis().max(1) as u64);
        let written: i64 = self.audited(&mut invocation, events, &mut conn).await?;
        if written == 0 {
            self.written(events, audit::outcome::REUSED);
            return Ok(false);
        }
        self.replicated(&mut conn).await?;
        self.written(events, audit::outcome::WRITTEN);
        Ok(true)
    }

    async fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>> {
        let raw: Option<String> = match self.on_cluster() {
            Some(conn) => conn?
                .get(cluster::name(&keys::token(jti)))
                .await
                .map_err(unavailable)?,
            None => self
                .conn()?
                .get(keys::token(jti))
                .await
                .map_err(unavailable)?,
        };
        raw.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn token_is_live(&self, jti: &str) -> StoreResult<bool> {
        if let Some(conn) = self.on_cluster() {
            return conn?
                .exists(cluster::name(&keys::token(jti)))
                .await
                .map_err(unavailable);
        }
        self.conn()?
            .exists(keys::token(jti))
            .await
            .map_err(unavailable)
    }

    async fn revoke_token(&self, jti: &str, events: &Events) -> StoreResult<bool> {
        if let Some(conn) = self.on_cluster() {
            let mut conn = conn?;
            let scripts = &self.cluster_scripts;
            let (mut home, token) = scripts.revoke_home(jti);
            let found: (i64, String, String) = self.audited(&mut home, events, &mut conn).await?;
            self.replicated_on(&mut conn, &token).await?;
            scripts
                .unindex_token(&mut conn, jti, &found.1, &found.2)
                .await?;
            let existed = found.0 == 1;
            self.written(events, audit::outcome::of_revocation(existed));
            return Ok(existed);
        }
        let mut conn = self.conn()?;
        let mut invocation = self.scripts.revoke_token.prepare_invoke();
        invocation.key(keys::token(jti)).arg(jti);
        let existed: i64 = self.audited(&mut invocation, events, &mut conn).await?;
        self.replicated(&mut conn).await?;
        let existed = existed == 1;
        self.written(events, audit::outcome::of_revocation(existed));
        Ok(existed)
    }

    async fn indexed_tokens(&self, index_key: &str, now: i64) -> StoreResult<Vec<String>> {
        if let Some(conn) = self.on_cluster() {
            return conn?
                .zrangebyscore(cluster::name(index_key), now, "+inf")
                .await
                .map_err(unavailable);
        }
        self.conn()?
            .zrangebyscore(index_key, now, "+inf")
            .await
            .map_err(unavailable)
    }

    async fn subscribe_revocations(&self) -> StoreResult<RevocationStream> {
        feed::subscribe(self).await
    }

    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()> {
        let (mut conn, key) = self.one_key(key)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(&*key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let _: () = cmd.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        let (mut conn, key) = self.one_key(key)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(&*key).arg(value).arg("NX");
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let reply: Option<String> = cmd.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(reply.is_some())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        let (mut conn, key) = self.one_key(key)?;
        conn.get(&*key).await.map_err(unavailable)
    }

    async fn take(&self, key: &str) -> StoreResult<Option<String>> {
        let (mut conn, key) = self.one_key(key)?;
        conn.get_del(&*key).await.map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let (mut conn, key) = self.one_key(key)?;
        let n: i64 = conn.del(&*key).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn ttl(&self, key: &str) -> StoreResult<Ttl> {
        let (mut conn, key) = self.one_key(key)?;
        let ms: i64 = conn.pttl(&*key).await.map_err(unavailable)?;
        Ok(match ms {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    async fn issue_grant(&self, grant: &GrantWrite, now: i64) -> StoreResult<GrantOutcome> {
        if let Some(conn) = self.on_cluster() {
            return self.issue_grant_on_cluster(&mut conn?, grant, now).await;
        }
        let mut conn = self.conn()?;
        let token = &grant.token;
        let result = grant.result.as_ref();
        let mut invocation = self.scripts.issue_grant.prepare_invoke();
        invocation
            .key(keys::token(&token.jti))
            .key(keys::user_tokens(&token.username))
            .key(keys::client_tokens(&token.client_id))
            .key(keys::refresh(&grant.refresh_hash))
            .key(keys::family(&grant.family_id))
            .key(keys::family_revoked(&grant.family_id))
            .key(keys::client_families(&token.client_id))
            .key(keys::user_families(&token.username))
            .key(keys::client(&token.client_id))
            .key(keys::UNUSED_CLIENTS)
            .key(
                grant
                    .registered_from
                    .as_deref()
                    .map_or(keys::UNUSED_CLIENTS.to_string(), keys::unused_clients_from),
            );
        for key in [&grant.redeem_code, &result.map(|r| r.key.clone())]
            .into_iter()
            .flatten()
        {
            invocation.key(key);
        }
        if let Some(hash) = &grant.rotate_from {
            invocation.key(keys::refresh(hash));
        }
        grant_args(
            &mut invocation,
            grant,
            now,
            grant.redeem_code.as_deref(),
            result.map(|r| r.key.as_str()),
        )?;
        invocation.arg(
            grant
                .renew_client
                .map_or(String::new(), |d| d.as_millis().max(1).to_string()),
        );
        let (kind, value): (String, String) = self
            .audited(&mut invocation, &grant.events, &mut conn)
            .await?;
        // A grant issued, or a family revoked for reuse: neither may be lost in a failover.
        if matches!(kind.as_str(), "issued" | "reused") {
            self.replicated(&mut conn).await?;
        }
        self.written(&grant.events, &kind);
        Ok(grant_outcome(&kind, value))
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        tombstone_ttl: Duration,
        events: &Events,
    ) -> StoreResult<usize> {
        let script = self.pick(
            &self.scripts.revoke_family,
            &self.cluster_scripts.revoke_family,
        );
        let mut invocation = script.prepare_invoke();
        let family = self.name(&keys::family(family_id));
        invocation
            .key(&family)
            .key(self.name(&keys::family_revoked(family_id)))
            .arg(family_id)
            .arg(tombstone_ttl.as_secs().max(1));
        let n: i64 = match self.any_conn()? {
            cluster::Conn::Cluster(mut conn) => {
                let n = self.audited(&mut invocation, events, &mut conn).await?;
                self.replicated_on(&mut conn, &family).await?;
                n
            }
            cluster::Conn::Single(mut conn) => {
                let n = self.audited(&mut invocation, events, &mut conn).await?;
                self.replicated(&mut conn).await?;
                n
            }
        };
        self.written(events, audit::outcome::of_family(n.max(0) as usize));
        Ok(n.max(0) as usize)
    }

    async fn put_consent(
        &self,
        user: &str,
        client_id: &str,
        json: &str,
        ttl: Duration,
        now: i64,
        events: &Events,
    ) -> StoreResult<()> {
        let script = self.pick(&self.scripts.put_consent, &self.cluster_scripts.put_consent);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.name(&keys::consent(user, client_id)))
            .key(self.name(&keys::client_consents(client_id)))
            .arg(json)
            .arg(ttl.as_secs().max(1))
            .arg(user.to_ascii_lowercase())
            .arg(now);
        self.write(&mut invocation, events).await
    }

    async fn put_for_client(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        client_id: &str,
        now: i64,
        events: &Events,
    ) -> StoreResult<()> {
        if let Some(conn) = self.on_cluster() {
            // The client's index first (another slot), then the key with its event.
            // The index holds the key's single-server name, as on one server (so a backup
            // restores anywhere); deleting the client DELs each under its cluster name.
            let (mut conn, logical, key) = (conn?, key, cluster::name(key));
            let ttl_ms = ttl.as_millis().max(1) as u64;
            let _: i64 = self
                .cluster_scripts
                .pending_add
                .key(cluster::name(&keys::client_pending(client_id)))
                .arg(logical)
                .arg(ttl_ms)
                .arg(now)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let mut invocation = self.cluster_scripts.set_audited.prepare_invoke();
            invocation.key(&key).arg(value).arg(ttl_ms);
            let _: i64 = self.audited(&mut invocation, events, &mut conn).await?;
            self.written(events, audit::outcome::WRITTEN);
            return Ok(());
        }
        let mut invocation = self.scripts.put_for_client.prepare_invoke();
        invocation
            .key(key)
            .key(keys::client_pending(client_id))
            .arg(value)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(now);
        self.write(&mut invocation, events).await
    }

    async fn put_new_client(&self, client: &NewClientWrite<'_>) -> StoreResult<NewClient> {
        if let Some(conn) = self.on_cluster() {
            // The unused lists first (their own slot), then the registration with its event.
            let mut conn = conn?;
            let lists = [
                cluster::name(keys::UNUSED_CLIENTS),
                cluster::name(
                    &client
                        .address
                        .map_or(keys::UNUSED_CLIENTS.to_string(), keys::unused_clients_from),
                ),
            ];
            let lifetime = client.unused_lifetime.as_millis().max(1) as u64;
            let (unused, evicted): (u64, Vec<String>) = self
                .cluster_scripts
                .unused_add
                .key(&lists[0])
                .key(&lists[1])
                .arg(client.client_id)
                .arg("")
                .arg(lifetime)
                .arg(client.budget.max(1))
                .arg(client.budget_per_address.max(1))
                .arg(client.now_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let mut invocation = self.cluster_scripts.set_audited.prepare_invoke();
            invocation
                .key(cluster::name(&keys::client(client.client_id)))
                .arg(client.json)
                .arg(lifetime);
            let _: i64 = self
                .audited(&mut invocation, &client.events, &mut conn)
                .await?;
            self.written(&client.events, audit::outcome::WRITTEN);
            return Ok(NewClient { unused, evicted });
        }
        let mut invocation = self.scripts.put_new_client.prepare_invoke();
        invocation
            .key(keys::client(client.client_id))
            .key(keys::UNUSED_CLIENTS)
            .key(
                client
                    .address
                    .map_or(keys::UNUSED_CLIENTS.to_string(), keys::unused_clients_from),
            )
            .arg(client.client_id)
            .arg(client.json)
            .arg(client.unused_lifetime.as_millis().max(1) as u64)
            .arg(client.budget.max(1))
            .arg(client.budget_per_address.max(1))
            .arg(client.now_ms);
        let (unused, evicted): (u64, Vec<String>) = self
            .audited(&mut invocation, &client.events, &mut self.conn()?)
            .await?;
        self.written(&client.events, audit::outcome::WRITTEN);
        Ok(NewClient { unused, evicted })
    }

    async fn drop_unused_client(
        &self,
        client_id: &str,
        unused_lifetime: Duration,
        events: &Events,
    ) -> StoreResult<bool> {
        let script = self.pick(
            &self.scripts.drop_unused_client,
            &self.cluster_scripts.drop_unused_client,
        );
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.name(&keys::client(client_id)))
            .arg(unused_lifetime.as_millis().max(1) as u64);
        let n: i64 = self
            .audited(&mut invocation, events, &mut self.any_conn()?)
            .await?;
        self.written(events, audit::outcome::of_drop(n == 1));
        Ok(n == 1)
    }

    async fn delete_client_step(
        &self,
        client_id: &str,
        tombstone_ttl: Duration,
        budget: usize,
        events: &Events,
    ) -> StoreResult<DeleteStep> {
        if let Some(conn) = self.on_cluster() {
            return self
                .delete_client_on_cluster(&mut conn?, client_id, tombstone_ttl, budget, events)
                .await;
        }
        let mut conn = self.conn()?;
        let mut invocation = self.scripts.delete_client_step.prepare_invoke();
        // The registration, then the indexes of what was issued to it.
        for key in [
            keys::client(client_id),
            keys::client_families(client_id),
            keys::client_tokens(client_id),
            keys::client_consents(client_id),
            keys::client_pending(client_id),
        ] {
            invocation.key(key);
        }
        invocation
            .arg(client_id)
            .arg(tombstone_ttl.as_secs().max(1))
            .arg(budget.max(1));
        let (revoked, remaining): (i64, i64) =
            self.audited(&mut invocation, events, &mut conn).await?;
        self.replicated(&mut conn).await?;
        self.written(events, audit::outcome::of_step(remaining.max(0) as usize));
        Ok(DeleteStep {
            revoked: revoked.max(0) as usize,
            remaining: remaining.max(0) as usize,
        })
    }

    async fn reserve_attempt(
        &self,
        counters: &[String],
        locks: &[String],
        limit: &AttemptLimit,
        events: &Events,
    ) -> StoreResult<Attempt> {
        if let Some(conn) = self.on_cluster() {
            return self
                .reserve_attempt_on_cluster(&mut conn?, counters, locks, limit, events)
                .await;
        }
        let mut invocation = self.scripts.reserve_attempt.prepare_invoke();
        for key in counters.iter().chain(locks) {
            invocation.key(key);
        }
        invocation
            .arg(counters.len())
            .arg(limit.max)
            .arg(limit.window.as_millis().max(1) as u64)
            .arg(limit.lockout.as_millis().max(1) as u64);
        let (kind, n): (String, i64) = self
            .audited(&mut invocation, events, &mut self.conn()?)
            .await?;
        let n = n.max(0) as u64;
        Ok(match kind.as_str() {
            "allowed" => {
                self.written(events, audit::outcome::ALLOWED);
                Attempt::Allowed { count: n }
            }
            "locking" => {
                self.written(events, audit::outcome::LOCKED);
                Attempt::Locked(Duration::from_millis(n))
            }
            _ => {
                self.written(events, audit::outcome::HELD);
                Attempt::Locked(Duration::from_millis(n))
            }
        })
    }

    async fn change(&self, change: &Change<'_>, events: &Events) -> StoreResult<bool> {
        let mut invocation = self
            .pick(&self.scripts.change, &self.cluster_scripts.change)
            .prepare_invoke();
        let ms =
            |ttl: Option<Duration>| ttl.map_or(String::new(), |t| t.as_millis().max(1).to_string());
        match *change {
            Change::Set { key, value, ttl } => invocation
                .key(self.name(key))
                .arg("set")
                .arg(value)
                .arg(ms(ttl)),
            Change::SetIfAbsent { key, value, ttl } => invocation
                .key(self.name(key))
                .arg("set_nx")
                .arg(value)
                .arg(ms(ttl)),
            Change::Delete { key } => invocation.key(self.name(key)).arg("del").arg("").arg(""),
        };
        let n: i64 = self
            .audited(&mut invocation, events, &mut self.any_conn()?)
            .await?;
        self.written(events, audit::outcome::of_change(n == 1));
        Ok(n == 1)
    }

    async fn append_events(&self, events: &Events) -> StoreResult<()> {
        if events.is_empty() || !self.audit.enabled {
            return Ok(());
        }
        if let Some(conn) = self.on_cluster() {
            // Events that change nothing else go to the stream of their user's bucket (else
            // their client's), the one their user's other events are in.
            let mut conn = conn?;
            let first = events.planned().first().map(|p| &p.event);
            let bucket = match first {
                Some(e) if e.user.is_some() => {
                    crate::slots::Bucket::of_user(e.user.as_deref().unwrap_or_default())
                }
                Some(e) => {
                    crate::slots::Bucket::of_client(e.client_id.as_deref().unwrap_or_default())
                }
                None => crate::slots::Bucket::new(0),
            };
            let stream = keys::audit_bucket(bucket);
            let mut invocation = self.cluster_scripts.append_events(&stream);
            let _: i64 = self.audited(&mut invocation, events, &mut conn).await?;
            self.written(events, audit::outcome::WRITTEN);
            return Ok(());
        }
        let mut invocation = self.scripts.append_events.prepare_invoke();
        self.write(&mut invocation, events).await
    }

    async fn add_usage(&self, hour: &str, counts: &[(String, u64)]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let key = keys::usage(hour);
        let mut pipe = redis::pipe();
        for (field, n) in counts {
            pipe.hincr(&key, field, *n).ignore();
        }
        pipe.pexpire(&key, self.audit.retention.as_millis().max(1) as i64)
            .ignore();
        // One key: on a cluster the pipeline goes to its one slot.
        let () = match self.on_cluster() {
            Some(conn) => pipe.query_async(&mut conn?).await,
            None => pipe.query_async(&mut self.conn()?).await,
        }
        .map_err(unavailable)?;
        Ok(())
    }

    async fn audit_deliveries(&self, read: &GroupRead<'_>) -> StoreResult<Vec<audit::Stored>> {
        if let Some(conn) = self.on_cluster() {
            return stream::lane_deliveries(conn?, read).await;
        }
        stream::deliveries(&mut self.conn()?, keys::AUDIT, read).await
    }

    async fn audit_ack(&self, group: &str, ids: &[String]) -> StoreResult<()> {
        if let Some(conn) = self.on_cluster() {
            return stream::lane_ack(&mut conn?, group, ids).await;
        }
        stream::ack(&mut self.conn()?, keys::AUDIT, group, ids).await
    }

    async fn audit_backlog(&self, group: &str) -> StoreResult<u64> {
        if let Some(conn) = self.on_cluster() {
            return stream::lane_backlog(conn?, group).await;
        }
        stream::backlog(&mut self.conn()?, keys::AUDIT, group).await
    }

    fn audit_sink(&self) -> &audit::Sink {
        &self.sink
    }

    async fn incr_within(&self, key: &str, window: Duration) -> StoreResult<u64> {
        let (mut conn, key) = self.one_key(key)?;
        let n: i64 = self
            .scripts
            .incr_within
            .key(&*key)
            .arg(window.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(n.max(0) as u64)
    }
}
