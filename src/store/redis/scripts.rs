//! The Lua scripts behind [`super::RedisStore`]: every state change is one of them, atomic,
//! touching only the keys it names or finds through an index (DESIGN §5). Key prefixes are
//! substituted from [`crate::store::keys`] when the scripts are built, so Lua and Rust name
//! keys identically.

use crate::store::{GrantOutcome, GrantWrite, StoreError, StoreResult, keys, seconds_until};

/// Functions every script shares. Key prefixes are substituted from [`keys`] when the
/// scripts are built, so Lua and Rust name keys identically.
const PRELUDE: &str = r#"
{KEY_NAMING}
local T, U, C, R, F, FR, CF, CL, CO, CH, UF, CC, GR, TR =
  '{TOKEN}', '{USER_TOKENS}', '{CLIENT_TOKENS}', '{REFRESH}', '{FAMILY}', '{FAMILY_REVOKED}',
  '{CLIENT_FAMILIES}', '{CLIENT}', '{CONSENT}', '{CHANNEL}', '{USER_FAMILIES}', '{CLIENT_CONSENTS}',
  '{GRANT_RESULT}', '{TOKEN_REVOKED}'
local AU, AUU, AUC = '{AUDIT}', '{AUDIT_USER}', '{AUDIT_CLIENT}'
-- The index entries a step could not write in its own slot (on a cluster): key, type, stream, id.
local FOLLOW = {}

local function decode(v)
  local ok, r = pcall(cjson.decode, v)
  if ok and type(r) == 'table' then return r end
  return nil
end

-- The token's key is the caller's KEYS[1]; `indexes` are the index keys it is entered in
-- (its user's and client's, or on a cluster those of the token's slot).
local function put_token(jti, json, ttl, exp, now, indexes)
  redis.call('SET', KEYS[1], json, 'EX', ttl)
  for _, idx in ipairs(indexes) do
    redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. now)
    redis.call('ZADD', idx, exp, jti)
    if redis.call('TTL', idx) < tonumber(ttl) then redis.call('EXPIRE', idx, ttl) end
  end
end

-- A tombstone lives as long as the token would have: a restore never writes it back.
local function revoke_jti(jti)
  local v = redis.call('GET', K(T .. jti))
  local left = redis.call('TTL', K(T .. jti))
  if left < 1 then left = {TOMBSTONE_FALLBACK} end
  redis.call('SET', K(TR .. jti), '1', 'EX', left)
  if v then
    redis.call('DEL', K(T .. jti))
    local r = decode(v)
    if r then
      -- Index entries go after the record; on a cluster, those of another slot are left to
      -- readers, who pass over an entry whose record is gone (pcall).
      if type(r.username) == 'string' then redis.pcall('ZREM', K(U .. string.lower(r.username)), jti) end
      if type(r.client_id) == 'string' then redis.pcall('ZREM', K(C .. r.client_id), jti) end
    end
  end
  redis.call('PUBLISH', CH, jti)
  if v then return 1 else return 0 end
end

-- The audit block is ARGV's tail: per event its condition ('*' or an outcome), type, user,
-- client (on a cluster: their index streams' names) and JSON, then the number of events, the length cap and the retention in ms. The
-- events whose condition is `outcome` (or '*') are appended with the change, `n` (a count the
-- script found) beside them; the trail is trimmed by length and age on the way, by whole
-- stream nodes (never a walk). The per-user and per-client index streams hold the same ids.
local function audit(outcome, n)
  local m = tonumber(ARGV[#ARGV - 2])
  if not m or m == 0 then return end
  local cap, keep = ARGV[#ARGV - 1], tonumber(ARGV[#ARGV])
  local first = #ARGV - 2 - 5 * m
  local trimmed = false
  for i = 0, m - 1 do
    local at = first + 5 * i
    if ARGV[at] == '*' or ARGV[at] == outcome then
      local id
      if n then
        id = redis.call('XADD', AU, 'MAXLEN', '~', cap, '*', 't', ARGV[at + 1], 'e', ARGV[at + 4], 'n', string.format('%d', n))
      else
        id = redis.call('XADD', AU, 'MAXLEN', '~', cap, '*', 't', ARGV[at + 1], 'e', ARGV[at + 4])
      end
      if not trimmed then
        local now = redis.call('TIME')
        local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
        redis.call('XTRIM', AU, 'MINID', '~', string.format('%.0f', now_ms - keep))
        trimmed = true
      end
      for j, index in ipairs({AUU, AUC}) do
        local who = ARGV[at + 1 + j]
        if who ~= '' then
          -- An index is a convenience: its failure never undoes the change or its event. On
          -- a cluster the caller passes the index's cluster name rather than the login or id.
          local key = who
          if not ON_CLUSTER then
            key = index .. who
            redis.pcall('XADD', key, 'MAXLEN', '~', {AUDIT_INDEX_CAP}, id, 't', ARGV[at + 1])
            redis.pcall('PEXPIRE', key, keep)
          elseif string.match(key, '{[^}]*}') == string.match(AU, '{[^}]*}') then
            -- On a cluster an entry names its event: the bucket's stream and the id there.
            redis.pcall('XADD', key, 'MAXLEN', '~', {AUDIT_INDEX_CAP}, '*', 't', ARGV[at + 1], 's', AU, 'i', id)
            redis.pcall('PEXPIRE', key, keep)
          else
            -- In another slot: the caller writes it after the script (FOLLOW is returned).
            for _, v in ipairs({key, ARGV[at + 1], AU, id}) do FOLLOW[#FOLLOW + 1] = v end
          end
        end
      end
    end
  end
end

-- Sets the once marker `key` for `ttl_ms`; false (and the `reused` events) when it was set.
local function first_use(key, ttl_ms)
  if redis.call('SET', key, '1', 'PX', ttl_ms, 'NX') == false then
    audit('reused')
    return false
  end
  return true
end

local function revoke_family(fid, tombstone_ttl)
  local members = redis.call('ZRANGE', K(F .. fid), 0, -1)
  for _, m in ipairs(members) do
    local kind, id = string.sub(m, 1, 2), string.sub(m, 3)
    if kind == 't:' then revoke_jti(id) elseif kind == 'r:' then redis.call('DEL', K(R .. id)) end
  end
  redis.call('DEL', K(F .. fid))
  redis.call('SET', K(FR .. fid), '1', 'EX', tombstone_ttl)
  redis.call('PUBLISH', CH, '{FAMILY_MESSAGE}' .. fid)
  return #members
end
"#;

// KEYS: token, user index, client index. ARGV: jti, record JSON, ttl, exp, now, audit block.
const PUT_TOKEN: &str = r#"
put_token(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], {KEYS[2], KEYS[3]})
audit('written')
return 1
"#;

// KEYS: token, user index, client index, once marker. ARGV: jti, record JSON, ttl, exp, now,
//       marker ttl ms, audit block.
const PUT_TOKEN_ONCE: &str = r#"
if not first_use(KEYS[4], ARGV[6]) then return 0 end
put_token(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], {KEYS[2], KEYS[3]})
audit('written')
return 1
"#;

// KEYS: token (its index entries are found from its record). ARGV: jti, audit block.
const REVOKE_TOKEN: &str = r#"
local r = revoke_jti(ARGV[1])
if r == 1 then audit('revoked') else audit('missing') end
return r
"#;

// KEYS: token, user index, client index, new refresh token, family, family tombstone,
//       client's families, user's families, registration, unused registrations, those of its
//       address (or the previous again), then (when ARGV says so) the code, the kept result
//       and the rotated refresh token, in that order.
// ARGV: jti, token JSON, token ttl, token exp, username, client_id, now,
//       refresh hash, refresh JSON, refresh ttl, family id, rotate-from hash or '', tombstone ttl,
//       code key or '', result key or '', sealed result, result ttl ms, client lifetime ms or '',
//       audit block.
const ISSUE_GRANT: &str = r#"
local TK, UI, RK, FK, FT, UF = KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6], KEYS[8]
{GRANT_HOME}
-- The client's indexes, and an active client never expires: each grant renews a registration
-- that has a lifetime. Its first grant takes it off the unused list, from its short unused
-- lifetime to the full one (or none).
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
if redis.call('TTL', KEYS[3]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[7])
redis.call('ZADD', KEYS[7], refresh_exp, fid)
if redis.call('TTL', KEYS[7]) < tonumber(ARGV[10]) then redis.call('EXPIRE', KEYS[7], ARGV[10]) end
local first = redis.call('ZREM', KEYS[10], ARGV[6]) == 1
redis.call('ZREM', KEYS[11], ARGV[6])
if redis.call('PTTL', KEYS[9]) > 0 then
  if ARGV[18] ~= '' then
    redis.call('PEXPIRE', KEYS[9], ARGV[18])
  elseif first then
    redis.call('PERSIST', KEYS[9])
  end
end
return done('issued', '')
"#;

/// A grant's home: the checks (family revoked, a kept answer, the code, the rotated refresh
/// token) and what makes the grant usable (the token and its user index, the refresh token,
/// the family and the user's families, the kept answer). ISSUE_GRANT runs it with the client's
/// part after it; on a cluster it is a step of its own. Reads `TK, UI, RK, FK, FT, UF` (the
/// token, user index, refresh, family, tombstone and user's families keys); leaves `fid` and
/// `refresh_exp` set.
pub(super) const GRANT_HOME: &str = r#"
local fid, rotate_from, code_key, result_key = ARGV[11], ARGV[12], ARGV[14], ARGV[15]
local function done(kind, value, n)
  audit(kind, n)
  return {kind, value}
end
if redis.call('EXISTS', FT) == 1 then return done('revoked', '') end
if result_key ~= '' then
  local prior = redis.call('GET', result_key)
  if prior then return done('replayed', prior) end
end
if code_key ~= '' then
  local v = redis.call('GET', code_key)
  if not v then return done('missing', '') end
  local r = decode(v)
  if r and r.redeemed then return done('code_reused', r.family_id or '') end
  redis.call('SET', code_key, cjson.encode({redeemed = true, family_id = fid}), 'KEEPTTL')
end
if rotate_from ~= '' then
  local v = redis.call('GET', K(R .. rotate_from))
  if not v then return done('missing', '') end
  local r = decode(v)
  if not r then return done('missing', '') end
  if r.used then
    return done('reused', '', revoke_family(r.family_id or fid, ARGV[13]))
  end
  r.used = true
  redis.call('SET', K(R .. rotate_from), cjson.encode(r), 'KEEPTTL')
  -- Its successor is in use: the predecessor's retry window ends here.
  if type(r.rotated_from) == 'string' then redis.call('DEL', K(GR .. r.rotated_from)) end
end
redis.call('SET', TK, ARGV[2], 'EX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', UI, '-inf', '(' .. ARGV[7])
redis.call('ZADD', UI, ARGV[4], ARGV[1])
if redis.call('TTL', UI) < tonumber(ARGV[3]) then redis.call('EXPIRE', UI, ARGV[3]) end
redis.call('SET', RK, ARGV[9], 'EX', ARGV[10])
local refresh_exp = tonumber(ARGV[7]) + tonumber(ARGV[10])
redis.call('ZADD', FK, ARGV[4], 't:' .. ARGV[1])
redis.call('ZADD', FK, refresh_exp, 'r:' .. ARGV[8])
if redis.call('TTL', FK) < tonumber(ARGV[10]) then redis.call('EXPIRE', FK, ARGV[10]) end
redis.call('ZREMRANGEBYSCORE', UF, '-inf', '(' .. ARGV[7])
redis.call('ZADD', UF, refresh_exp, fid)
if redis.call('TTL', UF) < tonumber(ARGV[10]) then redis.call('EXPIRE', UF, ARGV[10]) end
if result_key ~= '' then redis.call('SET', result_key, ARGV[16], 'PX', ARGV[17]) end
"#;

// KEYS: registration, unused registrations, those of its address (or the first again).
// ARGV: client id, JSON, unused lifetime ms, budget, budget per address, now ms, audit
// block. Returns the
// number unused and the ids taken off past the budgets (the address's oldest first).
const PUT_NEW_CLIENT: &str = r#"
local LIST, LIST_FROM = KEYS[2], KEYS[3]
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
{UNUSED_LISTS}
audit('written')
return {redis.call('ZCARD', LIST), evicted}
"#;

/// A new registration (ARGV[1]) listed as unused in `LIST` and `LIST_FROM` (its address's, or
/// `LIST` again) at ARGV[6] (ms), for ARGV[3] ms; the oldest past the budgets (ARGV[4], and
/// ARGV[5] per address) evicted into `evicted`. PUT_NEW_CLIENT runs it with the registration;
/// on a cluster it is a step of its own.
pub(super) const UNUSED_LISTS: &str = r#"
local lifetime, now = tonumber(ARGV[3]), tonumber(ARGV[6])
local evicted = {}
for _, set in ipairs({LIST, LIST_FROM}) do
  redis.call('ZADD', set, now, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', set, '-inf', '(' .. (now - lifetime))
  if redis.call('PTTL', set) < lifetime then redis.call('PEXPIRE', set, lifetime) end
end
if LIST_FROM ~= LIST then
  local over = redis.call('ZCARD', LIST_FROM) - tonumber(ARGV[5])
  if over > 0 then
    local popped = redis.call('ZPOPMIN', LIST_FROM, over)
    for i = 1, #popped, 2 do
      redis.call('ZREM', LIST, popped[i])
      evicted[#evicted + 1] = popped[i]
    end
  end
end
local over = redis.call('ZCARD', LIST) - tonumber(ARGV[4])
if over > 0 then
  local popped = redis.call('ZPOPMIN', LIST, over)
  for i = 1, #popped, 2 do evicted[#evicted + 1] = popped[i] end
end
"#;

// KEYS: registration. ARGV: unused lifetime ms, audit block. Deletes it only while it still
// has no more than its unused lifetime: a first grant renewed it past that, or made it
// permanent.
pub(super) const DROP_UNUSED_CLIENT: &str = r#"
local left = redis.call('PTTL', KEYS[1])
if left > 0 and left <= tonumber(ARGV[1]) and redis.call('DEL', KEYS[1]) == 1 then
  audit('revoked')
  return 1
end
audit('kept')
return 0
"#;

// KEYS: consent, client's consent index. ARGV: JSON, ttl, user (lower-case), now, audit block.
pub(super) const PUT_CONSENT: &str = r#"
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + ttl, ARGV[3])
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
audit('written')
return 1
"#;

// KEYS: counter. ARGV: window in ms.
const INCR_WITHIN: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#;

// KEYS: counters, then locks. ARGV: number of counters, max, window ms, lockout ms, audit
// block. The attempt that locks says `locking`.
const RESERVE_ATTEMPT: &str = r#"
local nc, max, lockout = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
for i = nc + 1, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  if left == -1 then left = lockout end
  if left > 0 then
    audit('held')
    return {'locked', left}
  end
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
  audit('locked')
  return {'locking', lockout}
end
audit('allowed')
return {'allowed', n}
"#;

// KEYS: family, its tombstone (its members are found from the family). ARGV: family id,
// tombstone ttl, audit block.
pub(super) const REVOKE_FAMILY: &str = r#"
local n = revoke_family(ARGV[1], ARGV[2])
if n > 0 then audit('revoked', n) else audit('empty', 0) end
return n
"#;

// KEYS: registration, its families, its tokens, its consents, its pending keys.
// ARGV: client id, tombstone ttl, budget, audit block. Pops what it revokes from the client's
// indexes, so a
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
  for i = 1, #page, 2 do redis.call('DEL', K(CO .. page[i] .. ':' .. cid)) end
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
if left == 0 then
  redis.call('DEL', KEYS[1])
  audit('done', revoked)
else
  audit('step', revoked)
end
return {revoked, left}
"#;

// KEYS: the key, the client's pending index. ARGV: value, ttl ms, now (s), audit block.
const PUT_FOR_CLIENT: &str = r#"
local ttl_ms, now = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl_ms)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
redis.call('ZADD', KEYS[2], now + math.ceil(ttl_ms / 1000), KEYS[1])
if redis.call('PTTL', KEYS[2]) < ttl_ms then redis.call('PEXPIRE', KEYS[2], ttl_ms) end
audit('written')
return 1
"#;

// KEYS: the key. ARGV: `set`, `set_nx` or `del`, the value, ttl ms or '', audit block. The
// events of `changed` are written only when the key was set or deleted.
pub(super) const CHANGE: &str = r#"
local changed
if ARGV[1] == 'del' then
  changed = redis.call('DEL', KEYS[1]) == 1
else
  local args = {'SET', KEYS[1], ARGV[2]}
  if ARGV[3] ~= '' then args[#args + 1] = 'PX'; args[#args + 1] = ARGV[3] end
  if ARGV[1] == 'set_nx' then args[#args + 1] = 'NX' end
  changed = redis.call(unpack(args)) ~= false
end
if changed then audit('changed') else audit('unchanged') end
if changed then return 1 else return 0 end
"#;

// KEYS: none (the trail's streams are named by the prelude). ARGV: audit block. Events that
// change nothing else: refusals, operator reports.
const APPEND_EVENTS: &str = r#"
audit('written')
return 1
"#;

fn script(body: &str) -> redis::Script {
    redis::Script::new(&with_prelude(body, PLAIN_NAMES))
}

/// How the prelude's functions name the keys they build: as given (one server), or as the
/// cluster does (`crate::slots::cluster_name`).
const PLAIN_NAMES: &str = "local ON_CLUSTER = false\nlocal function K(k) return k end";

/// A script of a step on Redis Cluster: the prelude, with the audit trail written to the stream
/// of the bucket whose tag the step's first key carries (one stream per bucket, §2.4 of
/// docs/design/redis-cluster.md); the per-user and per-client index streams are written only
/// where they share that slot (their writes are `pcall`s: elsewhere they are skipped).
pub(super) fn cluster_script(body: &str) -> redis::Script {
    let bucket_stream = format!(
        "AU = '{}:{{' .. string.match(KEYS[1], '{{([^}}]*)}}') .. '}}'",
        keys::AUDIT
    );
    let naming = format!(
        "{}\nlocal ON_CLUSTER = true\nlocal function K(k) return cluster_name(k) end",
        crate::slots::lua_cluster_name()
    );
    // The body runs as a function so that every step answers `{FOLLOW, its reply}` (see
    // `RedisStore::step_reply`).
    redis::Script::new(&with_prelude(
        &format!(
            "{bucket_stream}\nlocal function step()\n{body}\nend\nlocal reply = step()\nreturn {{FOLLOW, reply}}"
        ),
        &naming,
    ))
}

fn with_prelude(body: &str, naming: &str) -> String {
    let fallback = keys::TOKEN_TOMBSTONE_FALLBACK_SECS.to_string();
    let index_cap = crate::audit::INDEX_MAX_EVENTS.to_string();
    let prelude = PRELUDE
        .replace("{KEY_NAMING}", naming)
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
        .replace("{TOMBSTONE_FALLBACK}", &fallback)
        .replace("{CLIENT}", keys::CLIENT_PREFIX)
        .replace("{AUDIT}", keys::AUDIT)
        .replace("{AUDIT_USER}", keys::AUDIT_USER_PREFIX)
        .replace("{AUDIT_CLIENT}", keys::AUDIT_CLIENT_PREFIX)
        .replace("{AUDIT_INDEX_CAP}", &index_cap)
        .replace("{CONSENT}", keys::CONSENT_PREFIX)
        .replace("{CHANNEL}", keys::REVOCATION_CHANNEL)
        .replace("{FAMILY_MESSAGE}", keys::FAMILY_REVOCATION_MESSAGE);
    format!("{prelude}\n{body}")
}

pub(super) struct Scripts {
    pub(super) put_token: redis::Script,
    pub(super) put_token_once: redis::Script,
    pub(super) revoke_token: redis::Script,
    pub(super) issue_grant: redis::Script,
    pub(super) revoke_family: redis::Script,
    pub(super) delete_client_step: redis::Script,
    pub(super) put_new_client: redis::Script,
    pub(super) drop_unused_client: redis::Script,
    pub(super) put_for_client: redis::Script,
    pub(super) put_consent: redis::Script,
    pub(super) incr_within: redis::Script,
    pub(super) reserve_attempt: redis::Script,
    pub(super) change: redis::Script,
    pub(super) append_events: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            put_token: script(PUT_TOKEN),
            put_token_once: script(PUT_TOKEN_ONCE),
            revoke_token: script(REVOKE_TOKEN),
            issue_grant: script(&ISSUE_GRANT.replace("{GRANT_HOME}", GRANT_HOME)),
            revoke_family: script(REVOKE_FAMILY),
            delete_client_step: script(DELETE_CLIENT_STEP),
            put_new_client: script(&PUT_NEW_CLIENT.replace("{UNUSED_LISTS}", UNUSED_LISTS)),
            drop_unused_client: script(DROP_UNUSED_CLIENT),
            put_for_client: script(PUT_FOR_CLIENT),
            put_consent: script(PUT_CONSENT),
            incr_within: redis::Script::new(INCR_WITHIN),
            reserve_attempt: script(RESERVE_ATTEMPT),
            change: script(CHANGE),
            append_events: script(APPEND_EVENTS),
        }
    }
}

/// ISSUE_GRANT's arguments but the last (the client's lifetime): the token, the refresh
/// token and family, the rotation, the code and kept-result keys as named where the script
/// runs, the kept result.
pub(super) fn grant_args(
    invocation: &mut redis::ScriptInvocation<'_>,
    grant: &GrantWrite,
    now: i64,
    code_key: Option<&str>,
    result_key: Option<&str>,
) -> StoreResult<()> {
    let token = &grant.token;
    let token_json =
        serde_json::to_string(token).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let refresh_ttl = seconds_until(grant.refresh_expires_at, now);
    let result = grant.result.as_ref();
    invocation
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
        .arg(code_key.unwrap_or(""))
        .arg(result_key.unwrap_or(""))
        .arg(result.map_or("", |r| r.sealed.as_str()))
        .arg(result.map_or(1, |r| r.ttl.as_millis().max(1) as u64));
    Ok(())
}

/// What an ISSUE_GRANT script answered.
pub(super) fn grant_outcome(kind: &str, value: String) -> GrantOutcome {
    match kind {
        "issued" => GrantOutcome::Issued,
        "replayed" => GrantOutcome::Replayed(value),
        "reused" => GrantOutcome::Reused,
        "code_reused" => GrantOutcome::CodeReused { family_id: value },
        "revoked" => GrantOutcome::FamilyRevoked,
        _ => GrantOutcome::Missing,
    }
}
