//! The store on Redis Cluster (issue #30, in progress): the connection, key names mapped to
//! their cluster names ([`crate::slots::cluster_name`]), and the operations built so far
//! as ordered single-slot steps (docs/design/redis-cluster.md §2.3). What is not built yet
//! answers [`StoreError::Unavailable`] naming itself, so nothing runs across slots by accident.
//!
//! The steps keep one invariant: an index entry is written before the record it points to, and
//! removed after the record is gone. A crash between steps leaves at most an index entry whose
//! record is absent, which every reader already passes over.

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use std::time::Duration;

use super::RedisStore;
use super::scripts::{grant_args, grant_outcome};
use super::unavailable;
use crate::audit::{self, Events};
use crate::slots::cluster_name;
use crate::store::keys;
use crate::store::{
    Attempt, AttemptLimit, GrantOutcome, GrantWrite, StoreError, StoreResult, TokenRecord,
    seconds_until,
};

/// A key's name on the cluster.
pub(super) fn name(key: &str) -> String {
    cluster_name(key)
}

/// What an operation not yet built for the cluster answers.
pub(super) fn not_yet(operation: &str) -> StoreError {
    StoreError::Unavailable(format!("{operation} is not supported on Redis Cluster yet"))
}

/// After a write to `key` that must survive a failover: `WAIT` on the primary that holds the
/// key's slot (the write went over the same connection).
pub(super) async fn replicated(
    conn: &mut ClusterConnection,
    key: &str,
    replicas: u32,
) -> StoreResult<()> {
    if replicas == 0 {
        return Ok(());
    }
    let mut wait = redis::cmd("WAIT");
    wait.arg(replicas)
        .arg(super::REPLICA_WAIT.as_millis() as u64);
    let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
    let acked = conn
        .route_command(
            wait,
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
        )
        .await
        .map_err(unavailable)?;
    let acked: i64 = redis::from_redis_value(acked)
        .map_err(|e| StoreError::Unavailable(format!("WAIT answered {e}")))?;
    if acked < i64::from(replicas) {
        return Err(StoreError::Unavailable(format!(
            "written, but on {acked} of {replicas} replicas of its shard"
        )));
    }
    Ok(())
}

// KEYS: indexes of one slot (sorted sets of members by expiry). ARGV: now, then member, ttl and
// expiry for each index. The index half of PUT_TOKEN, and a grant's client indexes in one step.
const INDEX_ADD: &str = r#"
for i = 1, #KEYS do
  local member, ttl, exp = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[1])
  redis.call('ZADD', KEYS[i], exp, member)
  if redis.call('TTL', KEYS[i]) < tonumber(ttl) then redis.call('EXPIRE', KEYS[i], ttl) end
end
return 1
"#;

// KEYS: token, its tombstone (one slot: the jti's bucket), and its user's index when that is in
// the same slot. ARGV: record JSON, ttl, jti, exp, now, audit block. The record half of
// PUT_TOKEN: written only when the jti was not revoked meanwhile.
const TOKEN_HOME: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
put_token(ARGV[3], ARGV[1], ARGV[2], ARGV[4], ARGV[5], {KEYS[3]})
audit('written')
return 1
"#;

// KEYS: token, its tombstone. ARGV: jti, fallback tombstone ttl, channel, audit block. The
// record half of
// REVOKE_TOKEN: the tombstone (as long as the token would have lived), the record gone, the
// revocation published (the cluster bus carries it to every node); its user and client, for
// the index steps after it.
const REVOKE_HOME: &str = r#"
local v = redis.call('GET', KEYS[1])
local left = redis.call('TTL', KEYS[1])
if left < 1 then left = tonumber(ARGV[2]) end
redis.call('SET', KEYS[2], '1', 'EX', left)
local user, client = '', ''
if v then
  redis.call('DEL', KEYS[1])
  local ok, r = pcall(cjson.decode, v)
  if ok and type(r) == 'table' then
    if type(r.username) == 'string' then user = string.lower(r.username) end
    if type(r.client_id) == 'string' then client = r.client_id end
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
if v then
  audit('revoked')
  return {1, user, client}
end
audit('missing')
return {0, user, client}
"#;

// ISSUE_GRANT's home step, in the family's bucket (its code, refresh tokens, tokens and user
// indexes are there): ISSUE_GRANT without the client's keys, which are steps of their own.
// KEYS: token, user index, new refresh token, family, family tombstone, user's families, then
//       (when ARGV says so) the code, the kept result and the rotated refresh token.
// ARGV: as ISSUE_GRANT (the code and result keys by their cluster names), audit block.
const ISSUE_HOME: &str = r#"
local TK, UI, RK, FK, FT, UF = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
{GRANT_HOME}
return done('issued', '')
"#;

// A grant's last step, in the client's slot: an active client never expires (ISSUE_GRANT's
// tail). KEYS: the registration. ARGV: its lifetime in ms or '', '1' when this was its first
// grant.
const RENEW_CLIENT: &str = r#"
if redis.call('PTTL', KEYS[1]) > 0 then
  if ARGV[1] ~= '' then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
  elseif ARGV[2] == '1' then
    redis.call('PERSIST', KEYS[1])
  end
end
return 1
"#;

// KEYS: a client's pending index. ARGV: the pending key's single-server name, ttl ms, now (s).
// The index half of PUT_FOR_CLIENT (deleting the client DELs each member's cluster name).
const PENDING_ADD: &str = r#"
local ttl_ms, now = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZADD', KEYS[1], now + math.ceil(ttl_ms / 1000), ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl_ms then redis.call('PEXPIRE', KEYS[1], ttl_ms) end
return 1
"#;

// KEYS: a client's registration and its four indexes (families, tokens, consents, pending),
// one slot. ARGV: how many tokens this step revoked, audit block. The last half of a client
// deletion step, after what the indexes named is gone and its entries removed: the
// registration goes once all four are empty (`done`), else the step is reported (`step`).
const DELETE_CLIENT_END: &str = r#"
local left = 0
for i = 2, 5 do left = left + redis.call('ZCARD', KEYS[i]) end
local revoked = tonumber(ARGV[1])
if left == 0 then
  redis.call('DEL', KEYS[1])
  audit('done', revoked)
else
  audit('step', revoked)
end
return left
"#;

// KEYS: a key. ARGV: value, ttl ms, audit block. The record half of PUT_FOR_CLIENT and
// PUT_NEW_CLIENT, with its event.
const SET_AUDITED: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
audit('written')
return 1
"#;

// KEYS: unused registrations, those of its address (or the first again), one slot ({g}).
// ARGV: as PUT_NEW_CLIENT (client id, JSON (unused), unused lifetime ms, budget, budget per
// address, now ms). The list half of
// PUT_NEW_CLIENT: the new registration listed, the oldest past the budgets evicted.
const UNUSED_ADD: &str = r#"
local LIST, LIST_FROM = KEYS[1], KEYS[2]
{UNUSED_LISTS}
return {redis.call('ZCARD', LIST), evicted}
"#;

// KEYS: token, its user index, the once marker (one slot: the token's bucket). ARGV: jti,
// record JSON, ttl, exp, now, marker ttl ms, audit block. PUT_TOKEN_ONCE's home step: the
// marker first (a replay writes nothing), then the token and its user index.
const ONCE_HOME: &str = r#"
if not first_use(KEYS[3], ARGV[6]) then return 0 end
put_token(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], {KEYS[2]})
audit('written')
return 1
"#;

// KEYS: a counter and its lock (one slot: a user's, or an address's). ARGV: window ms. The
// per-slot half of RESERVE_ATTEMPT: locked (how long), or the counter counted.
const LOCK_OR_COUNT: &str = r#"
local left = redis.call('PTTL', KEYS[2])
if left == -1 then return {'locked', -1} end
if left > 0 then return {'locked', left} end
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {'count', c}
"#;

// KEYS: a counter and its lock. ARGV: lockout ms. Locks and forgets the count, in one step (a
// concurrent attempt sees the count or the lock, never neither).
const LOCK: &str = r#"
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"#;

// KEYS: a bucket's audit stream. ARGV: the outcome, audit block. Writes the events planned for
// that outcome (a step that decided it elsewhere).
const AUDIT_AS: &str = r#"
audit(ARGV[1])
return 1
"#;

/// A step's answer, `{FOLLOW, reply}`: the index entries it left to its caller (key, type,
/// stream, id, four strings each) and its own reply (nil when the step returned nothing).
pub(super) fn step_reply(answer: redis::Value) -> (Vec<String>, redis::Value) {
    let redis::Value::Array(mut parts) = answer else {
        return (Vec::new(), answer);
    };
    let reply = if parts.len() > 1 {
        parts.remove(1)
    } else {
        redis::Value::Nil
    };
    let follow = parts
        .into_iter()
        .next()
        .and_then(|f| redis::from_redis_value::<Vec<String>>(f).ok())
        .unwrap_or_default();
    (follow, reply)
}

/// Writes the index entries a step could not write in its slot: each in its own index's slot,
/// naming its event (the bucket's stream and the id there). Best effort, like every index
/// entry: one that fails leaves the event in the trail, only harder to find by user or client.
pub(super) async fn index_elsewhere<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    follow: &[String],
    retention: std::time::Duration,
) {
    for entry in follow.chunks_exact(4) {
        let [key, kind, stream, id] = entry else {
            continue;
        };
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(key)
            .arg("MAXLEN")
            .arg("~")
            .arg(audit::INDEX_MAX_EVENTS)
            .arg("*")
            .arg("t")
            .arg(kind)
            .arg("s")
            .arg(stream)
            .arg("i")
            .arg(id)
            .ignore()
            .cmd("PEXPIRE")
            .arg(key)
            .arg(retention.as_millis().max(1) as u64)
            .ignore();
        if let Err(e) = pipe.query_async::<()>(conn).await {
            tracing::warn!(error = %e, index = %key, "an audit index entry was not written");
        }
    }
}

/// The scripts of the cluster steps.
pub(super) struct ClusterScripts {
    /// Scripts whose keys share one slot under their cluster names, as they are, with the
    /// audit trail in their bucket's stream.
    pub(super) put_consent: redis::Script,
    pub(super) revoke_family: redis::Script,
    pub(super) drop_unused_client: redis::Script,
    pub(super) change: redis::Script,
    pub(super) issue_home: redis::Script,
    pub(super) once_home: redis::Script,
    pub(super) lock_or_count: redis::Script,
    pub(super) lock: redis::Script,
    pub(super) audit_as: redis::Script,
    pub(super) pending_add: redis::Script,
    pub(super) set_audited: redis::Script,
    pub(super) unused_add: redis::Script,
    pub(super) delete_client_end: redis::Script,
    renew_client: redis::Script,
    append_events: redis::Script,
    index_add: redis::Script,
    token_home: redis::Script,
    revoke_home: redis::Script,
}

impl ClusterScripts {
    pub(super) fn new() -> Self {
        use super::scripts::{
            CHANGE, DROP_UNUSED_CLIENT, PUT_CONSENT, REVOKE_FAMILY, cluster_script,
        };
        Self {
            put_consent: cluster_script(PUT_CONSENT),
            revoke_family: cluster_script(REVOKE_FAMILY),
            drop_unused_client: cluster_script(DROP_UNUSED_CLIENT),
            change: cluster_script(CHANGE),
            once_home: cluster_script(ONCE_HOME),
            lock_or_count: redis::Script::new(LOCK_OR_COUNT),
            lock: redis::Script::new(LOCK),
            audit_as: cluster_script(AUDIT_AS),
            issue_home: cluster_script(
                &ISSUE_HOME.replace("{GRANT_HOME}", super::scripts::GRANT_HOME),
            ),
            pending_add: redis::Script::new(PENDING_ADD),
            delete_client_end: cluster_script(DELETE_CLIENT_END),
            set_audited: cluster_script(SET_AUDITED),
            unused_add: redis::Script::new(
                &UNUSED_ADD.replace("{UNUSED_LISTS}", super::scripts::UNUSED_LISTS),
            ),
            renew_client: redis::Script::new(RENEW_CLIENT),
            append_events: super::scripts::cluster_script("audit('written')\nreturn 1"),
            index_add: redis::Script::new(INDEX_ADD),
            token_home: super::scripts::cluster_script(TOKEN_HOME),
            revoke_home: super::scripts::cluster_script(REVOKE_HOME),
        }
    }

    /// A grant's first steps, in the client's slot: the token and the family in the client's
    /// indexes (before the home step makes them usable).
    pub(super) async fn index_grant(
        &self,
        conn: &mut ClusterConnection,
        grant: &crate::store::GrantWrite,
        now: i64,
    ) -> StoreResult<()> {
        let token = &grant.token;
        let refresh_ttl = seconds_until(grant.refresh_expires_at, now);
        // Both in the client's slot: one step.
        let mut invocation = self.index_add.prepare_invoke();
        invocation
            .key(name(&keys::client_tokens(&token.client_id)))
            .key(name(&keys::client_families(&token.client_id)))
            .arg(now)
            .arg(&token.jti)
            .arg(seconds_until(token.expires_at, now))
            .arg(token.expires_at)
            .arg(&grant.family_id)
            .arg(refresh_ttl)
            .arg(now + refresh_ttl as i64);
        let _: i64 = invocation.invoke_async(conn).await.map_err(unavailable)?;
        Ok(())
    }

    /// A grant's last steps, once issued: off the unused-registration lists (one slot for
    /// them all), then the registration renewed in the client's slot.
    pub(super) async fn renew_client(
        &self,
        conn: &mut ClusterConnection,
        grant: &crate::store::GrantWrite,
    ) -> StoreResult<()> {
        let client = &grant.token.client_id;
        // Both lists share the global tag: one pipeline on one slot.
        let mut off = redis::pipe();
        off.zrem(name(keys::UNUSED_CLIENTS), client);
        if let Some(address) = &grant.registered_from {
            off.zrem(name(&keys::unused_clients_from(address)), client)
                .ignore();
        }
        let (first,): (i64,) = off.query_async(conn).await.map_err(unavailable)?;
        let lifetime = grant
            .renew_client
            .map_or(String::new(), |d| d.as_millis().max(1).to_string());
        let _: i64 = self
            .renew_client
            .key(name(&keys::client(client)))
            .arg(lifetime)
            .arg(if first == 1 { "1" } else { "" })
            .invoke_async(conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// APPEND_EVENTS on `stream` (a bucket's audit stream; the caller adds the audit block).
    pub(super) fn append_events(&self, stream: &str) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.append_events.prepare_invoke();
        invocation.key(stream);
        invocation
    }

    /// PUT_TOKEN's first steps: the token in its client's index, then (unless `user_too` is
    /// false: the home step writes it) in its user's.
    pub(super) async fn index_token(
        &self,
        conn: &mut ClusterConnection,
        record: &TokenRecord,
        now: i64,
        user_too: bool,
    ) -> StoreResult<()> {
        let ttl = seconds_until(record.expires_at, now);
        let user = user_too.then(|| keys::user_tokens(&record.username));
        for index in std::iter::once(keys::client_tokens(&record.client_id)).chain(user) {
            let _: i64 = self
                .index_add
                .key(name(&index))
                .arg(now)
                .arg(&record.jti)
                .arg(ttl)
                .arg(record.expires_at)
                .invoke_async(conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// PUT_TOKEN's last step, in the jti's bucket (the caller adds the audit block and runs
    /// it): the record, unless the jti was revoked meanwhile (answers 0). Also the token's
    /// cluster key, for `WAIT`.
    pub(super) fn token_home(
        &self,
        record: &TokenRecord,
        now: i64,
        with_user_index: bool,
    ) -> StoreResult<(redis::ScriptInvocation<'_>, String)> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let token = name(&keys::token(&record.jti));
        let mut invocation = self.token_home.prepare_invoke();
        invocation
            .key(&token)
            .key(name(&keys::token_revoked(&record.jti)));
        if with_user_index {
            invocation.key(name(&keys::user_tokens(&record.username)));
        }
        invocation
            .arg(json)
            .arg(seconds_until(record.expires_at, now))
            .arg(&record.jti)
            .arg(record.expires_at)
            .arg(now);
        Ok((invocation, token))
    }

    /// REVOKE_TOKEN's first step, in the jti's bucket (the caller adds the audit block and
    /// runs it): tombstone, record gone, published; answers whether it existed and its user
    /// and client. Also the token's cluster key, for `WAIT`.
    pub(super) fn revoke_home(&self, jti: &str) -> (redis::ScriptInvocation<'_>, String) {
        let token = name(&keys::token(jti));
        let mut invocation = self.revoke_home.prepare_invoke();
        invocation
            .key(&token)
            .key(name(&keys::token_revoked(jti)))
            .arg(jti)
            .arg(keys::TOKEN_TOMBSTONE_FALLBACK_SECS)
            .arg(keys::REVOCATION_CHANNEL);
        (invocation, token)
    }

    /// REVOKE_TOKEN's last steps, once the record is gone: its entries in the user's and the
    /// client's indexes.
    pub(super) async fn unindex_token(
        &self,
        conn: &mut ClusterConnection,
        jti: &str,
        user: &str,
        client: &str,
    ) -> StoreResult<()> {
        let indexes = [
            (!user.is_empty()).then(|| keys::user_tokens(user)),
            (!client.is_empty()).then(|| keys::client_tokens(client)),
        ];
        // Two slots: sent together, one round trip's wait.
        let removals = indexes.into_iter().flatten().map(|index| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("ZREM")
                    .arg(name(&index))
                    .arg(jti)
                    .query_async::<i64>(&mut conn)
                    .await
            }
        });
        futures_util::future::try_join_all(removals)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Commands of one key to one server or to the cluster, through one type.
pub(crate) enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisStore {
    /// ISSUE_GRANT on a cluster, as steps: the client's indexes first, then the home step in
    /// the family's bucket (everything that makes the grant usable, its event with it), then the
    /// registration renewed. A retry repeats them; each is idempotent.
    pub(super) async fn issue_grant_on_cluster(
        &self,
        conn: &mut redis::cluster_async::ClusterConnection,
        grant: &GrantWrite,
        now: i64,
    ) -> StoreResult<GrantOutcome> {
        let scripts = &self.cluster_scripts;
        scripts.index_grant(conn, grant, now).await?;
        let token = &grant.token;
        let result = grant.result.as_ref();
        let code_key = grant.redeem_code.as_deref().map(name);
        let result_key = result.map(|r| name(&r.key));
        let home = name(&keys::token(&token.jti));
        let mut invocation = scripts.issue_home.prepare_invoke();
        invocation
            .key(&home)
            .key(name(&keys::user_tokens(&token.username)))
            .key(name(&keys::refresh(&grant.refresh_hash)))
            .key(name(&keys::family(&grant.family_id)))
            .key(name(&keys::family_revoked(&grant.family_id)))
            .key(name(&keys::user_families(&token.username)));
        for key in [&code_key, &result_key].into_iter().flatten() {
            invocation.key(key);
        }
        if let Some(hash) = &grant.rotate_from {
            invocation.key(name(&keys::refresh(hash)));
        }
        grant_args(
            &mut invocation,
            grant,
            now,
            code_key.as_deref(),
            result_key.as_deref(),
        )?;
        invocation.arg("");
        let (kind, value): (String, String) =
            self.audited(&mut invocation, &grant.events, conn).await?;
        if matches!(kind.as_str(), "issued" | "reused") {
            self.replicated_on(conn, &home).await?;
        }
        if kind == "issued" {
            scripts.renew_client(conn, grant).await?;
        }
        self.written(&grant.events, &kind);
        Ok(grant_outcome(&kind, value))
    }

    /// RESERVE_ATTEMPT on a cluster, a step per counter and its lock (a user's, an address's:
    /// other slots): each looks at its lock and counts in one step, so of N guesses sent at
    /// once only those up to the limit are evaluated; past it, each lock is set as its count
    /// is forgotten, in one step. Unlike on one server, an attempt refused by the second lock
    /// has been counted on the first. The events go to the first counter's bucket stream.
    pub(super) async fn reserve_attempt_on_cluster(
        &self,
        conn: &mut redis::cluster_async::ClusterConnection,
        counters: &[String],
        locks: &[String],
        limit: &AttemptLimit,
        events: &Events,
    ) -> StoreResult<Attempt> {
        let scripts = &self.cluster_scripts;
        let pairs: Vec<(String, String)> = counters
            .iter()
            .zip(locks)
            .map(|(c, l)| (name(c), name(l)))
            .collect();
        let lockout = limit.lockout.as_millis().max(1) as u64;
        let mut count = 0u64;
        for (counter, lock) in &pairs {
            let (kind, n): (String, i64) = scripts
                .lock_or_count
                .key(counter)
                .key(lock)
                .arg(limit.window.as_millis().max(1) as u64)
                .invoke_async(conn)
                .await
                .map_err(unavailable)?;
            if kind == "locked" {
                let left = if n < 0 { lockout } else { n as u64 };
                self.audit_on_cluster(conn, counter, audit::outcome::HELD, events)
                    .await?;
                self.written(events, audit::outcome::HELD);
                return Ok(Attempt::Locked(Duration::from_millis(left)));
            }
            count = count.max(n.max(0) as u64);
        }
        if count <= limit.max {
            self.audit_on_cluster(conn, &pairs[0].0, audit::outcome::ALLOWED, events)
                .await?;
            self.written(events, audit::outcome::ALLOWED);
            return Ok(Attempt::Allowed { count });
        }
        for (counter, lock) in &pairs {
            let _: i64 = scripts
                .lock
                .key(counter)
                .key(lock)
                .arg(lockout)
                .invoke_async(conn)
                .await
                .map_err(unavailable)?;
        }
        self.audit_on_cluster(conn, &pairs[0].0, audit::outcome::LOCKED, events)
            .await?;
        self.written(events, audit::outcome::LOCKED);
        Ok(Attempt::Locked(limit.lockout))
    }

    /// The events of `events` planned for `outcome`, in the stream of `key`'s bucket.
    pub(super) async fn audit_on_cluster(
        &self,
        conn: &mut redis::cluster_async::ClusterConnection,
        key: &str,
        outcome: &str,
        events: &Events,
    ) -> StoreResult<()> {
        if events.is_empty() || !self.audit.enabled {
            return Ok(());
        }
        let tag = key
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or(crate::slots::GLOBAL_TAG, |(tag, _)| tag);
        let stream = format!("{}:{{{tag}}}", keys::AUDIT);
        let mut invocation = self.cluster_scripts.audit_as.prepare_invoke();
        invocation.key(stream).arg(outcome);
        let _: i64 = self.audited(&mut invocation, events, conn).await?;
        Ok(())
    }

    /// A client deletion step on a cluster: what the client's indexes name lives in other
    /// slots (families and tokens in their users' buckets, codes in their users'), so each
    /// page of an index is read, what it names revoked or deleted where it lives (each an
    /// idempotent step of its own), then the page's entries removed, and last the registration
    /// deleted in its own slot once every index is empty. A retry after a timeout finds the
    /// entries not yet removed and repeats their (idempotent) revocations.
    pub(super) async fn delete_client_on_cluster(
        &self,
        conn: &mut ClusterConnection,
        client_id: &str,
        tombstone_ttl: std::time::Duration,
        budget: usize,
        events: &Events,
    ) -> StoreResult<crate::store::DeleteStep> {
        use redis::AsyncCommands;
        let indexes = [
            keys::client_families(client_id),
            keys::client_tokens(client_id),
            keys::client_consents(client_id),
            keys::client_pending(client_id),
        ];
        let mut budget = budget.max(1);
        let mut revoked = 0usize;
        for (i, index) in indexes.iter().enumerate() {
            let index = name(index);
            while budget > 0 {
                let page: Vec<String> = conn
                    .zrange(&index, 0, budget.min(100) as isize - 1)
                    .await
                    .map_err(unavailable)?;
                if page.is_empty() {
                    break;
                }
                for member in &page {
                    budget = budget.saturating_sub(1);
                    match i {
                        0 => {
                            let n = crate::store::Store::revoke_family(
                                self,
                                member,
                                tombstone_ttl,
                                &Events::none(),
                            )
                            .await?;
                            budget = budget.saturating_sub(n);
                        }
                        1 => {
                            let gone =
                                crate::store::Store::revoke_token(self, member, &Events::none())
                                    .await?;
                            revoked += usize::from(gone);
                        }
                        2 => {
                            let _: i64 = conn
                                .del(name(&keys::consent(member, client_id)))
                                .await
                                .map_err(unavailable)?;
                        }
                        _ => {
                            let _: i64 = conn.del(name(member)).await.map_err(unavailable)?;
                        }
                    }
                }
                let _: i64 = conn.zrem(&index, &page).await.map_err(unavailable)?;
            }
        }
        let mut end = self.cluster_scripts.delete_client_end.prepare_invoke();
        end.key(name(&keys::client(client_id)));
        for index in &indexes {
            end.key(name(index));
        }
        end.arg(revoked);
        let left: i64 = self.audited(&mut end, events, conn).await?;
        self.replicated_on(conn, &name(&keys::client(client_id)))
            .await?;
        self.written(events, audit::outcome::of_step(left.max(0) as usize));
        Ok(crate::store::DeleteStep {
            revoked,
            remaining: left.max(0) as usize,
        })
    }
}
