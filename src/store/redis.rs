//! The production store on Redis: a multiplexed `ConnectionManager` for commands (one socket,
//! pipelined, reconnecting), a dedicated connection per revocation subscription.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::keys;
use super::{RevocationStream, Store, StoreError, StoreResult, TokenRecord, Ttl, seconds_until};

/// How long one command may take before the store counts as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1_000);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);

// KEYS: token, user index, client index. ARGV: record JSON, ttl, exp, jti, now.
const PUT_TOKEN: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 2, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[5])
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[4])
  if redis.call('TTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  end
end
return 1
"#;

// KEYS: token. ARGV: jti, user index prefix, client index prefix, channel.
const REVOKE_TOKEN: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  local ok, r = pcall(cjson.decode, v)
  if ok and type(r) == 'table' then
    if type(r.username) == 'string' then
      redis.call('ZREM', ARGV[2] .. string.lower(r.username), ARGV[1])
    end
    if type(r.client_id) == 'string' then
      redis.call('ZREM', ARGV[3] .. r.client_id, ARGV[1])
    end
  end
end
redis.call('PUBLISH', ARGV[4], ARGV[1])
if v then return 1 else return 0 end
"#;

pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    put_token: redis::Script,
    revoke_token: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Prepares the store without connecting: services start while Redis is still coming up
    /// and report not-ready until it answers.
    pub fn connect(url: &str) -> StoreResult<Self> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(Self {
            client,
            conn,
            put_token: redis::Script::new(PUT_TOKEN),
            revoke_token: redis::Script::new(REVOKE_TOKEN),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_token(&self, record: &TokenRecord, now: i64) -> StoreResult<()> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ttl = seconds_until(record.expires_at, now);
        let _: i64 = self
            .put_token
            .key(keys::token(&record.jti))
            .key(keys::user_tokens(&record.username))
            .key(keys::client_tokens(&record.client_id))
            .arg(json)
            .arg(ttl)
            .arg(record.expires_at)
            .arg(&record.jti)
            .arg(now)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>> {
        let raw: Option<String> = self
            .conn()
            .get(keys::token(jti))
            .await
            .map_err(unavailable)?;
        raw.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn token_is_live(&self, jti: &str) -> StoreResult<bool> {
        self.conn()
            .exists(keys::token(jti))
            .await
            .map_err(unavailable)
    }

    async fn revoke_token(&self, jti: &str) -> StoreResult<bool> {
        let existed: i64 = self
            .revoke_token
            .key(keys::token(jti))
            .arg(jti)
            .arg(keys::USER_TOKENS_PREFIX)
            .arg(keys::CLIENT_TOKENS_PREFIX)
            .arg(keys::REVOCATION_CHANNEL)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(existed == 1)
    }

    async fn indexed_tokens(&self, index_key: &str, now: i64) -> StoreResult<Vec<String>> {
        self.conn()
            .zrangebyscore(index_key, now, "+inf")
            .await
            .map_err(unavailable)
    }

    async fn subscribe_revocations(&self) -> StoreResult<RevocationStream> {
        let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| StoreError::Unavailable("timed out connecting for pub/sub".into()))?
            .map_err(unavailable)?;
        pubsub
            .subscribe(keys::REVOCATION_CHANNEL)
            .await
            .map_err(unavailable)?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| async move { msg.get_payload::<String>().ok() })
            .boxed())
    }

    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let _: () = cmd
            .query_async(&mut self.conn())
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
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(reply.is_some())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        self.conn().get(key).await.map_err(unavailable)
    }

    async fn take(&self, key: &str) -> StoreResult<Option<String>> {
        self.conn().get_del(key).await.map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let n: i64 = self.conn().del(key).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn ttl(&self, key: &str) -> StoreResult<Ttl> {
        let ms: i64 = self.conn().pttl(key).await.map_err(unavailable)?;
        Ok(match ms {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(Duration::from_millis(ms.max(0) as u64)),
        })
    }
}
