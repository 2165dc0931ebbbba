//! The production store on Redis: a multiplexed `ConnectionManager` for commands (one socket,
//! pipelined, reconnecting), a dedicated connection per revocation subscription.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::keys;
use super::{
    Attempt, DeleteStep, GrantOutcome, GrantWrite, NewClient, NewClientWrite, RevocationStream,
    Store, StoreError, StoreResult, TokenRecord, Ttl, seconds_until,
};

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

/// Functions every script shares. Key prefixes are substituted from [`keys`] when the
/// scripts are built, so Lua and Rust name keys identically.
const PRELUDE: &str = r#"
local T, U, C, R, F, FR, CF, CL, CO, CH, UF, CC, GR, TR =
  '{TOKEN}', '{USER_TOKENS}', '{CLIENT_TOKENS}', '{REFRESH}', '{FAMILY}', '{FAMILY_REVOKED}',
  '{CLIENT_FAMILIES}', '{CLIENT}', '{CONSENT}', '{CHANNEL}', '{USER_FAMILIES}', '{CLIENT_CONSENTS}',
  '{GRANT_RESULT}', '{TOKEN_REVOKED}'

local function decode(v)
  local ok, r = pcall(cjson.decode, v)
  if ok and type(r) == 'table' then return r end
  return nil
end

-- The token's key and its user and client indexes are the caller's KEYS[1..3].
local function put_token(jti, json, ttl, exp, now)
  redis.call('SET', KEYS[1], json, 'EX', ttl)
  for _, idx in ipairs({KEYS[2], KEYS[3]}) do
    redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. now)
    redis.call('ZADD', idx, exp, jti)
    if redis.call('TTL', idx) < tonumber(ttl) then redis.call('EXPIRE', idx, ttl) end
  end
end

-- A tombstone lives as long as the token would have: a restore never writes it back.
local function revoke_jti(jti)
  local v = redis.call('GET', T .. jti)
  local left = redis.call('TTL', T .. jti)
  if left < 1 then left = {TOMBSTONE_FALLBACK} end
  redis.call('SET', TR .. jti, '1', 'EX', left)
  if v then
    redis.call('DEL', T .. jti)
    local r = decode(v)
    if r then
      if type(r.username) == 'string' then redis.call('ZREM', U .. string.lower(r.username), jti) end
      if type(r.client_id) == 'string' then redis.call('ZREM', C .. r.client_id, jti) end
    end
  end
  redis.call('PUBLISH', CH, jti)
  if v then return 1 else return 0 end
end

local function revoke_family(fid, tombstone_ttl)
  local members = redis.call('ZRANGE', F .. fid, 0, -1)
  for _, m in ipairs(members) do
    local kind, id = string.sub(m, 1, 2), string.sub(m, 3)
    if kind == 't:' then revoke_jti(id) elseif kind == 'r:' then redis.call('DEL', R .. id) end
  end
  redis.call('DEL', F .. fid)
  redis.call('SET', FR .. fid, '1', 'EX', tombstone_ttl)
  redis.call('PUBLISH', CH, '{FAMILY_MESSAGE}' .. fid)
  return #members
end
"#;

// KEYS: token, user index, client index. ARGV: jti, record JSON, ttl, exp, now.
const PUT_TOKEN: &str = r#"
put_token(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
"#;

// KEYS: token (its index entries are found from its record). ARGV: jti.
const REVOKE_TOKEN: &str = r#"
return revoke_jti(ARGV[1])
"#;

// KEYS: token, user index, client index, new refresh token, family, family tombstone,
//       client's families, user's families, registration, unused registrations, those of its
//       address (or the previous again), then (when ARGV says so) the code, the kept result
//       and the rotated refresh token, in that order.
// ARGV: jti, token JSON, token ttl, token exp, username, client_id, now,
//       refresh hash, refresh JSON, refresh ttl, family id, rotate-from hash or '', tombstone ttl,
//       code key or '', result key or '', sealed result, result ttl ms, client lifetime ms or ''.
const ISSUE_GRANT: &str = r#"
local fid, rotate_from, code_key, result_key = ARGV[11], ARGV[12], ARGV[14], ARGV[15]
if redis.call('EXISTS', KEYS[6]) == 1 then return {'revoked', ''} end
if result_key ~= '' then
  local prior = redis.call('GET', result_key)
  if prior then return {'replayed', prior} end
end
if code_key ~= '' then
  local v = redis.call('GET', code_key)
  if not v then return {'missing', ''} end
  local r = decode(v)
  if r and r.redeemed then return {'code_reused', r.family_id or ''} end
  redis.call('SET', code_key, cjson.encode({redeemed = true, family_id = fid}), 'KEEPTTL')
end
if rotate_from ~= '' then
  local v = redis.call('GET', R .. rotate_from)
  if not v then return {'missing', ''} end
  local r = decode(v)
  if not r then return {'missing', ''} end
  if r.used then
    revoke_family(r.family_id or fid, ARGV[13])
    return {'reused', ''}
  end
  r.used = true
  redis.call('SET', R .. rotate_from, cjson.encode(r), 'KEEPTTL')
  -- Its successor is in use: the predecessor's retry window ends here.
  if type(r.rotated_from) == 'string' then redis.call('DEL', GR .. r.rotated_from) end
end
put_token(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[7])
redis.call('SET', KEYS[4], ARGV[9], 'EX', ARGV[10])
local refresh_exp = tonumber(ARGV[7]) + tonumber(ARGV[10])
redis.call('ZADD', KEYS[5], ARGV[4], 't:' .. ARGV[1])
redis.call('ZADD', KEYS[5], refresh_exp, 'r:' .. ARGV[8])
if redis.call('TTL', KEYS[5]) < tonumber(ARGV[10]) then redis.call('EXPIRE', KEYS[5], ARGV[10]) end
for _, idx in ipairs({KEYS[7], KEYS[8]}) do
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. ARGV[7])
  redis.call('ZADD', idx, refresh_exp, fid)
  if redis.call('TTL', idx) < tonumber(ARGV[10]) then redis.call('EXPIRE', idx, ARGV[10]) end
end
if result_key ~= '' then redis.call('SET', result_key, ARGV[16], 'PX', ARGV[17]) end
-- An active client never expires: each grant renews a registration that has a lifetime.
-- Its first grant takes it off the unused list, from its short unused lifetime to the full
-- one (or none).
local first = redis.call('ZREM', KEYS[10], ARGV[6]) == 1
redis.call('ZREM', KEYS[11], ARGV[6])
if redis.call('PTTL', KEYS[9]) > 0 then
  if ARGV[18] ~= '' then
    redis.call('PEXPIRE', KEYS[9], ARGV[18])
  elseif first then
    redis.call('PERSIST', KEYS[9])
  end
end
return {'issued', ''}
"#;

// KEYS: registration, unused registrations, those of its address (or the first again).
// ARGV: client id, JSON, unused lifetime ms, budget, budget per address, now ms. Returns the
// number unused and the ids taken off past the budgets (the address's oldest first).
const PUT_NEW_CLIENT: &str = r#"
local lifetime, now = tonumber(ARGV[3]), tonumber(ARGV[6])
redis.call('SET', KEYS[1], ARGV[2], 'PX', lifetime)
local evicted = {}
for _, set in ipairs({KEYS[2], KEYS[3]}) do
  redis.call('ZADD', set, now, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', set, '-inf', '(' .. (now - lifetime))
  if redis.call('PTTL', set) < lifetime then redis.call('PEXPIRE', set, lifetime) end
end
if KEYS[3] ~= KEYS[2] then
  local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
  if over > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[3], over)
    for i = 1, #popped, 2 do
      redis.call('ZREM', KEYS[2], popped[i])
      evicted[#evicted + 1] = popped[i]
    end
  end
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #popped, 2 do evicted[#evicted + 1] = popped[i] end
end
return {redis.call('ZCARD', KEYS[2]), evicted}
"#;

// KEYS: registration. ARGV: unused lifetime ms. Deletes it only while it still has no more
// than its unused lifetime: a first grant renewed it past that, or made it permanent.
const DROP_UNUSED_CLIENT: &str = r#"
local left = redis.call('PTTL', KEYS[1])
if left > 0 and left <= tonumber(ARGV[1]) then return redis.call('DEL', KEYS[1]) end
return 0
"#;

// KEYS: consent, client's consent index. ARGV: JSON, ttl, user (lower-case), now.
const PUT_CONSENT: &str = r#"
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + ttl, ARGV[3])
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
"#;

// KEYS: counter. ARGV: window in ms.
const INCR_WITHIN: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#;

// KEYS: counters, then locks. ARGV: number of counters, max, window ms, lockout ms.
const RESERVE_ATTEMPT: &str = r#"
local nc, max, lockout = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
for i = nc + 1, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  if left > 0 then return {'locked', left} end
  if left == -1 then return {'locked', lockout} end
end
local n = 0
for i = 1, nc do
  local c = redis.call('INCR', KEYS[i])
  if c == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  if c > n then n = c end
end
if n > max then
  for i = nc + 1, #KEYS do redis.call('SET', KEYS[i], '1', 'PX', lockout) end
  for i = 1, nc do redis.call('DEL', KEYS[i]) end
  return {'locked', lockout}
end
return {'allowed', n}
"#;

// KEYS: family, its tombstone (its members are found from the family). ARGV: family id,
// tombstone ttl.
const REVOKE_FAMILY: &str = r#"
return revoke_family(ARGV[1], ARGV[2])
"#;

// KEYS: registration, its families, its tokens, its consents, its pending keys.
// ARGV: client id, tombstone ttl, budget. Pops what it revokes from the client's indexes, so a
// repeated step goes on where the last stopped; the registration goes in the step that finds
// nothing left.
const DELETE_CLIENT_STEP: &str = r#"
local cid, ttl, budget = ARGV[1], ARGV[2], tonumber(ARGV[3])
local revoked = 0
while budget > 0 do
  local f = redis.call('ZPOPMIN', KEYS[2])
  if #f == 0 then break end
  budget = budget - 1 - revoke_family(f[1], ttl)
end
while budget > 0 do
  local page = redis.call('ZPOPMIN', KEYS[3], math.min(budget, 100))
  if #page == 0 then break end
  for i = 1, #page, 2 do revoked = revoked + revoke_jti(page[i]) end
  budget = budget - #page / 2
end
while budget > 0 do
  local page = redis.call('ZPOPMIN', KEYS[4], math.min(budget, 100))
  if #page == 0 then break end
  for i = 1, #page, 2 do redis.call('DEL', CO .. page[i] .. ':' .. cid) end
  budget = budget - #page / 2
end
while budget > 0 do
  local page = redis.call('ZPOPMIN', KEYS[5], math.min(budget, 100))
  if #page == 0 then break end
  for i = 1, #page, 2 do redis.call('DEL', page[i]) end
  budget = budget - #page / 2
end
local left = 0
for i = 2, 5 do left = left + redis.call('ZCARD', KEYS[i]) end
if left == 0 then redis.call('DEL', KEYS[1]) end
return {revoked, left}
"#;

// KEYS: the key, the client's pending index. ARGV: value, ttl ms, now (s).
const PUT_FOR_CLIENT: &str = r#"
local ttl_ms, now = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl_ms)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
redis.call('ZADD', KEYS[2], now + math.ceil(ttl_ms / 1000), KEYS[1])
if redis.call('PTTL', KEYS[2]) < ttl_ms then redis.call('PEXPIRE', KEYS[2], ttl_ms) end
return 1
"#;

fn script(body: &str) -> redis::Script {
    let prelude = PRELUDE
        .replace("{TOKEN}", keys::TOKEN_PREFIX)
        .replace("{USER_TOKENS}", keys::USER_TOKENS_PREFIX)
        .replace("{CLIENT_TOKENS}", keys::CLIENT_TOKENS_PREFIX)
        .replace("{REFRESH}", keys::REFRESH_PREFIX)
        .replace("{FAMILY_REVOKED}", keys::FAMILY_REVOKED_PREFIX)
        .replace("{FAMILY}", keys::FAMILY_PREFIX)
        .replace("{CLIENT_FAMILIES}", keys::CLIENT_FAMILIES_PREFIX)
        .replace("{USER_FAMILIES}", keys::USER_FAMILIES_PREFIX)
        .replace("{CLIENT_CONSENTS}", keys::CLIENT_CONSENTS_PREFIX)
        .replace("{GRANT_RESULT}", keys::GRANT_RESULT_PREFIX)
        .replace("{TOKEN_REVOKED}", keys::TOKEN_REVOKED_PREFIX)
        .replace(
            "{TOMBSTONE_FALLBACK}",
            &keys::TOKEN_TOMBSTONE_FALLBACK_SECS.to_string(),
        )
        .replace("{CLIENT}", keys::CLIENT_PREFIX)
        .replace("{CONSENT}", keys::CONSENT_PREFIX)
        .replace("{CHANNEL}", keys::REVOCATION_CHANNEL)
        .replace("{FAMILY_MESSAGE}", keys::FAMILY_REVOCATION_MESSAGE);
    redis::Script::new(&format!("{prelude}\n{body}"))
}

struct Scripts {
    put_token: redis::Script,
    revoke_token: redis::Script,
    issue_grant: redis::Script,
    revoke_family: redis::Script,
    delete_client_step: redis::Script,
    put_new_client: redis::Script,
    drop_unused_client: redis::Script,
    put_for_client: redis::Script,
    put_consent: redis::Script,
    incr_within: redis::Script,
    reserve_attempt: redis::Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            put_token: script(PUT_TOKEN),
            revoke_token: script(REVOKE_TOKEN),
            issue_grant: script(ISSUE_GRANT),
            revoke_family: script(REVOKE_FAMILY),
            delete_client_step: script(DELETE_CLIENT_STEP),
            put_new_client: script(PUT_NEW_CLIENT),
            drop_unused_client: script(DROP_UNUSED_CLIENT),
            put_for_client: redis::Script::new(PUT_FOR_CLIENT),
            put_consent: redis::Script::new(PUT_CONSENT),
            incr_within: redis::Script::new(INCR_WITHIN),
            reserve_attempt: redis::Script::new(RESERVE_ATTEMPT),
        }
    }
}

pub struct RedisStore {
    target: Target,
    scripts: Scripts,
    /// Replicas a grant or revocation must reach before it is answered (Sentinel only).
    wait_replicas: u32,
}

/// Where commands go: one server, or the primary the sentinels name right now.
enum Target {
    Fixed(Box<Primary>),
    Sentinel(Arc<Follower>),
}

/// The primary as last named by the sentinels, replaced when they elect another.
struct Follower {
    current: std::sync::RwLock<Option<Primary>>,
    /// Bumped at each change of primary: subscriptions to the old one end, so their
    /// subscribers resubscribe (and verify clears its cache, as on any feed loss).
    epoch: tokio::sync::watch::Sender<u64>,
}

#[derive(Clone)]
struct Primary {
    addr: (String, u16),
    client: redis::Client,
    conn: ConnectionManager,
}

/// How often the sentinels are asked who the primary is: a failover is followed within this
/// much of the election.
pub const SENTINEL_POLL: Duration = Duration::from_millis(500);

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The Redis client for the settings: `rediss://` with the system's roots, or with
/// `REDIS_CA_FILE` and a client certificate when configured; ACL users come in the URL.
pub fn client_for(settings: &crate::config::Settings) -> redis::RedisResult<redis::Client> {
    client_with_url(settings, settings.redis_url.expose())
}

/// A client for the primary as of now: REDIS_URL's server, or the one the sentinels name (for
/// the operator commands, which run for moments, not through failovers).
pub async fn primary_client(settings: &crate::config::Settings) -> StoreResult<redis::Client> {
    match &settings.redis_sentinel {
        None => client_for(settings).map_err(unavailable),
        Some(sentinel) => {
            let mut conns = vec![None; sentinel.sentinels.len()];
            let (host, port) = ask_sentinels(sentinel, &mut conns)
                .await
                .map_err(StoreError::Unavailable)?;
            client_at(settings, &host, port)
        }
    }
}

fn client_with_url(
    settings: &crate::config::Settings,
    url: &str,
) -> redis::RedisResult<redis::Client> {
    let tls = &settings.redis_tls;
    if tls.is_empty() {
        return redis::Client::open(url);
    }
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: tls
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.expose().clone(),
                }),
            root_cert: tls.ca.clone(),
        },
    )
}

/// REDIS_URL with its host and port replaced by the primary's (scheme, user, password and
/// database kept).
fn client_at(
    settings: &crate::config::Settings,
    host: &str,
    port: u16,
) -> StoreResult<redis::Client> {
    let mut url = url::Url::parse(settings.redis_url.expose())
        .map_err(|e| StoreError::Unavailable(format!("REDIS_URL: {e}")))?;
    url.set_host(Some(host))
        .and_then(|_| {
            url.set_port(Some(port))
                .map_err(|_| url::ParseError::InvalidPort)
        })
        .map_err(|e| StoreError::Unavailable(format!("primary {host}:{port}: {e}")))?;
    client_with_url(settings, url.as_str()).map_err(unavailable)
}

fn manager(client: &redis::Client) -> StoreResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)
}

/// Asks the sentinels, in order, for the primary's address; the first that answers decides.
async fn ask_sentinels(
    sentinel: &crate::config::RedisSentinel,
    conns: &mut [Option<redis::aio::MultiplexedConnection>],
) -> Result<(String, u16), String> {
    let mut last = String::from("no sentinel configured");
    for (addr, slot) in sentinel.sentinels.iter().zip(conns.iter_mut()) {
        if slot.is_none() {
            let mut info = format!("redis://{addr}");
            if let Some(pw) = &sentinel.password {
                info = format!("redis://:{}@{addr}", urlencode(pw.expose()));
            }
            let opened = async {
                let client = redis::Client::open(info.as_str())?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(CONNECT_TIMEOUT))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            };
            match opened.await {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    last = format!("sentinel {addr}: {e}");
                    continue;
                }
            }
        }
        let Some(conn) = slot.as_mut() else { continue };
        let answer: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&sentinel.master)
            .query_async(conn)
            .await;
        match answer {
            Ok(Some(primary)) => return Ok(primary),
            Ok(None) => last = format!("sentinel {addr} knows no primary {:?}", sentinel.master),
            Err(e) => {
                last = format!("sentinel {addr}: {e}");
                *slot = None;
            }
        }
    }
    Err(last)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Follows the primary the sentinels name until the store is dropped.
async fn follow(
    follower: std::sync::Weak<Follower>,
    settings: crate::config::Settings,
    sentinel: crate::config::RedisSentinel,
) {
    let mut conns: Vec<Option<redis::aio::MultiplexedConnection>> =
        sentinel.sentinels.iter().map(|_| None).collect();
    let mut complained = false;
    loop {
        let answer = ask_sentinels(&sentinel, &mut conns).await;
        let Some(follower) = follower.upgrade() else {
            return;
        };
        match answer {
            Ok((host, port)) => {
                complained = false;
                let known = follower
                    .current
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|p| p.addr.clone());
                if known.as_ref() != Some(&(host.clone(), port)) {
                    match client_at(&settings, &host, port)
                        .and_then(|client| Ok((manager(&client)?, client)))
                    {
                        Ok((conn, client)) => {
                            tracing::warn!(
                                primary = %format!("{host}:{port}"),
                                previous = ?known.map(|(h, p)| format!("{h}:{p}")),
                                "following the Redis primary named by the sentinels"
                            );
                            *follower.current.write().unwrap_or_else(|p| p.into_inner()) =
                                Some(Primary {
                                    addr: (host, port),
                                    client,
                                    conn,
                                });
                            follower.epoch.send_modify(|e| *e += 1);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot use the primary the sentinels named")
                        }
                    }
                }
            }
            Err(e) if !complained => {
                complained = true;
                tracing::warn!(error = %e, "no sentinel named the Redis primary");
            }
            Err(_) => {}
        }
        drop(follower);
        tokio::time::sleep(SENTINEL_POLL).await;
    }
}

impl RedisStore {
    /// The store for the settings (TLS, ACL and Sentinel included), prepared without
    /// connecting. With Sentinel it must be called within a Tokio runtime: a task follows the
    /// primary from then on.
    pub fn connect_with(settings: &crate::config::Settings) -> StoreResult<Self> {
        let Some(sentinel) = settings.redis_sentinel.clone() else {
            let mut store = Self::from_client(client_for(settings).map_err(unavailable)?)?;
            store.wait_replicas = 0;
            return Ok(store);
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Unavailable("Sentinel needs a Tokio runtime to follow the primary".into())
        })?;
        let follower = Arc::new(Follower {
            current: std::sync::RwLock::new(None),
            epoch: tokio::sync::watch::channel(0).0,
        });
        runtime.spawn(follow(
            Arc::downgrade(&follower),
            settings.clone(),
            sentinel.clone(),
        ));
        Ok(Self {
            target: Target::Sentinel(follower),
            scripts: Scripts::new(),
            wait_replicas: sentinel.wait_replicas,
        })
    }

    /// Prepares the store without connecting: services start while Redis is still coming up
    /// and report not-ready until it answers.
    pub fn connect(url: &str) -> StoreResult<Self> {
        Self::from_client(redis::Client::open(url).map_err(unavailable)?)
    }

    fn from_client(client: redis::Client) -> StoreResult<Self> {
        let conn = manager(&client)?;
        Ok(Self {
            target: Target::Fixed(Box::new(Primary {
                addr: (String::new(), 0),
                client,
                conn,
            })),
            scripts: Scripts::new(),
            wait_replicas: 0,
        })
    }

    fn primary(&self) -> StoreResult<(redis::Client, ConnectionManager)> {
        match &self.target {
            Target::Fixed(p) => Ok((p.client.clone(), p.conn.clone())),
            Target::Sentinel(f) => f
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|p| (p.client.clone(), p.conn.clone()))
                .ok_or_else(|| {
                    StoreError::Unavailable("no sentinel has named the primary yet".into())
                }),
        }
    }

    fn conn(&self) -> StoreResult<ConnectionManager> {
        self.primary().map(|(_, conn)| conn)
    }

    /// After a write that must survive a failover (a grant, a revocation): waits until
    /// `wait_replicas` replicas have it (Sentinel only). If they do not within a second, the
    /// write may still be lost, so the caller is told the store is unavailable: a retry is
    /// safe (grants answer a retry with the same tokens; revocations are idempotent).
    async fn replicated(&self, conn: &mut ConnectionManager) -> StoreResult<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let acked: i64 = redis::cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(REPLICA_WAIT.as_millis() as u64)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        if acked < i64::from(self.wait_replicas) {
            return Err(StoreError::Unavailable(format!(
                "written, but on {acked} of {} replicas after {} ms",
                self.wait_replicas,
                REPLICA_WAIT.as_millis()
            )));
        }
        Ok(())
    }
}

/// How long a write waits for its replicas (`WAIT`), shorter than the response timeout.
pub const REPLICA_WAIT: Duration = Duration::from_millis(500);

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_token(&self, record: &TokenRecord, now: i64) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ttl = seconds_until(record.expires_at, now);
        let _: i64 = self
            .scripts
            .put_token
            .key(keys::token(&record.jti))
            .key(keys::user_tokens(&record.username))
            .key(keys::client_tokens(&record.client_id))
            .arg(&record.jti)
            .arg(json)
            .arg(ttl)
            .arg(record.expires_at)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        self.replicated(&mut conn).await?;
        Ok(())
    }

    async fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>> {
        let raw: Option<String> = self
            .conn()?
            .get(keys::token(jti))
            .await
            .map_err(unavailable)?;
        raw.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn token_is_live(&self, jti: &str) -> StoreResult<bool> {
        self.conn()?
            .exists(keys::token(jti))
            .await
            .map_err(unavailable)
    }

    async fn revoke_token(&self, jti: &str) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let existed: i64 = self
            .scripts
            .revoke_token
            .key(keys::token(jti))
            .arg(jti)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        self.replicated(&mut conn).await?;
        Ok(existed == 1)
    }

    async fn indexed_tokens(&self, index_key: &str, now: i64) -> StoreResult<Vec<String>> {
        self.conn()?
            .zrangebyscore(index_key, now, "+inf")
            .await
            .map_err(unavailable)
    }

    async fn subscribe_revocations(&self) -> StoreResult<RevocationStream> {
        // Watched from before the primary is read: a change from here on ends the stream.
        let mut moved = match &self.target {
            Target::Sentinel(f) => {
                let mut rx = f.epoch.subscribe();
                rx.borrow_and_update();
                Some(rx)
            }
            Target::Fixed(_) => None,
        };
        let mut pubsub =
            tokio::time::timeout(CONNECT_TIMEOUT, self.primary()?.0.get_async_pubsub())
                .await
                .map_err(|_| StoreError::Unavailable("timed out connecting for pub/sub".into()))?
                .map_err(unavailable)?;
        pubsub
            .subscribe(keys::REVOCATION_CHANNEL)
            .await
            .map_err(unavailable)?;
        let (mut sink, messages) = pubsub.split();
        let (mut lost, lost_signal) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FEED_HEARTBEAT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let primary_moved = async {
                    match moved.as_mut() {
                        Some(rx) => {
                            let _ = rx.changed().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    // The subscriber dropped the stream: nothing left to watch.
                    _ = lost.closed() => return,
                    _ = tick.tick() => {}
                    // Subscribed to a server that is no longer the primary: its messages
                    // stop, so the subscriber must resubscribe (and assume it missed some).
                    _ = primary_moved => {
                        tracing::warn!("the Redis primary changed: resubscribing to revocations");
                        let _ = lost.send(());
                        return;
                    }
                }
                let pong =
                    tokio::time::timeout(FEED_HEARTBEAT_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    tracing::warn!(
                        timeout_ms = FEED_HEARTBEAT_TIMEOUT.as_millis() as u64,
                        "revocation subscription did not answer its heartbeat: treating it as lost"
                    );
                    let _ = lost.send(());
                    return;
                }
            }
        });
        Ok(messages
            .filter_map(|msg| async move {
                // Family messages and markers are for backups and restores; a family's tokens
                // are announced one by one.
                msg.get_payload::<String>().ok().filter(|p| {
                    !p.starts_with(keys::FAMILY_REVOCATION_MESSAGE)
                        && !p.starts_with(keys::MARKER_MESSAGE)
                })
            })
            .take_until(lost_signal)
            .boxed())
    }

    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let _: () = cmd
            .query_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX");
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let reply: Option<String> = cmd
            .query_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(reply.is_some())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        self.conn()?.get(key).await.map_err(unavailable)
    }

    async fn take(&self, key: &str) -> StoreResult<Option<String>> {
        self.conn()?.get_del(key).await.map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let n: i64 = self.conn()?.del(key).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn ttl(&self, key: &str) -> StoreResult<Ttl> {
        let ms: i64 = self.conn()?.pttl(key).await.map_err(unavailable)?;
        Ok(match ms {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    async fn issue_grant(&self, grant: &GrantWrite, now: i64) -> StoreResult<GrantOutcome> {
        let mut conn = self.conn()?;
        let token = &grant.token;
        let token_json =
            serde_json::to_string(token).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let refresh_ttl = seconds_until(grant.refresh_expires_at, now);
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
        let (kind, value): (String, String) = invocation
            .arg(&token.jti)
            .arg(token_json)
            .arg(seconds_until(token.expires_at, now))
            .arg(token.expires_at)
            .arg(&token.username)
            .arg(&token.client_id)
            .arg(now)
            .arg(&grant.refresh_hash)
            .arg(&grant.refresh_json)
            .arg(refresh_ttl)
            .arg(&grant.family_id)
            .arg(grant.rotate_from.as_deref().unwrap_or(""))
            .arg(refresh_ttl)
            .arg(grant.redeem_code.as_deref().unwrap_or(""))
            .arg(result.map_or("", |r| r.key.as_str()))
            .arg(result.map_or("", |r| r.sealed.as_str()))
            .arg(result.map_or(1, |r| r.ttl.as_millis().max(1) as u64))
            .arg(
                grant
                    .renew_client
                    .map_or(String::new(), |d| d.as_millis().max(1).to_string()),
            )
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        // A grant issued, or a family revoked for reuse: neither may be lost in a failover.
        if matches!(kind.as_str(), "issued" | "reused") {
            self.replicated(&mut conn).await?;
        }
        Ok(match kind.as_str() {
            "issued" => GrantOutcome::Issued,
            "replayed" => GrantOutcome::Replayed(value),
            "reused" => GrantOutcome::Reused,
            "code_reused" => GrantOutcome::CodeReused { family_id: value },
            "revoked" => GrantOutcome::FamilyRevoked,
            _ => GrantOutcome::Missing,
        })
    }

    async fn revoke_family(&self, family_id: &str, tombstone_ttl: Duration) -> StoreResult<usize> {
        let mut conn = self.conn()?;
        let n: i64 = self
            .scripts
            .revoke_family
            .key(keys::family(family_id))
            .key(keys::family_revoked(family_id))
            .arg(family_id)
            .arg(tombstone_ttl.as_secs().max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        self.replicated(&mut conn).await?;
        Ok(n.max(0) as usize)
    }

    async fn put_consent(
        &self,
        user: &str,
        client_id: &str,
        json: &str,
        ttl: Duration,
        now: i64,
    ) -> StoreResult<()> {
        let _: i64 = self
            .scripts
            .put_consent
            .key(keys::consent(user, client_id))
            .key(keys::client_consents(client_id))
            .arg(json)
            .arg(ttl.as_secs().max(1))
            .arg(user.to_ascii_lowercase())
            .arg(now)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_for_client(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        client_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        let _: i64 = self
            .scripts
            .put_for_client
            .key(key)
            .key(keys::client_pending(client_id))
            .arg(value)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(now)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_new_client(&self, client: &NewClientWrite<'_>) -> StoreResult<NewClient> {
        let (unused, evicted): (u64, Vec<String>) = self
            .scripts
            .put_new_client
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
            .arg(client.now_ms)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(NewClient { unused, evicted })
    }

    async fn drop_unused_client(
        &self,
        client_id: &str,
        unused_lifetime: Duration,
    ) -> StoreResult<bool> {
        let n: i64 = self
            .scripts
            .drop_unused_client
            .key(keys::client(client_id))
            .arg(unused_lifetime.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn delete_client_step(
        &self,
        client_id: &str,
        tombstone_ttl: Duration,
        budget: usize,
    ) -> StoreResult<DeleteStep> {
        let mut conn = self.conn()?;
        let (revoked, remaining): (i64, i64) = self
            .scripts
            .delete_client_step
            .key(keys::client(client_id))
            .key(keys::client_families(client_id))
            .key(keys::client_tokens(client_id))
            .key(keys::client_consents(client_id))
            .key(keys::client_pending(client_id))
            .arg(client_id)
            .arg(tombstone_ttl.as_secs().max(1))
            .arg(budget.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        self.replicated(&mut conn).await?;
        Ok(DeleteStep {
            revoked: revoked.max(0) as usize,
            remaining: remaining.max(0) as usize,
        })
    }

    async fn reserve_attempt(
        &self,
        counters: &[String],
        locks: &[String],
        max: u64,
        window: Duration,
        lockout: Duration,
    ) -> StoreResult<Attempt> {
        let mut invocation = self.scripts.reserve_attempt.prepare_invoke();
        for key in counters.iter().chain(locks) {
            invocation.key(key);
        }
        let (kind, n): (String, i64) = invocation
            .arg(counters.len())
            .arg(max)
            .arg(window.as_millis().max(1) as u64)
            .arg(lockout.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        let n = n.max(0) as u64;
        Ok(match kind.as_str() {
            "allowed" => Attempt::Allowed { count: n },
            _ => Attempt::Locked(Duration::from_millis(n)),
        })
    }

    async fn incr_within(&self, key: &str, window: Duration) -> StoreResult<u64> {
        let n: i64 = self
            .scripts
            .incr_within
            .key(key)
            .arg(window.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(unavailable)?;
        Ok(n.max(0) as u64)
    }
}
