//! Test harness: real `redis-server` processes, the real verify service, token minting.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use mcp_oauth_gateway::audit::Events;
use mcp_oauth_gateway::clock::{self, Clock};
use mcp_oauth_gateway::config::{ConfigSource, Settings};
use mcp_oauth_gateway::store::{RedisStore, Store, TokenRecord};
use mcp_oauth_gateway::token::keys::{KeyMaterial, SigningAlgorithm};
use mcp_oauth_gateway::token::{MintRequest, mint};
use mcp_oauth_gateway::verify::VerifyServer;

pub const RESOURCE: &str = "https://mcp.example.com/mcp";
pub const ISSUER: &str = "https://auth.example.com";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A private `redis-server` on a free loopback port, killed on drop. Data survives
/// [`RedisServer::stop`] + [`RedisServer::restart`] (saved to its own folder on shutdown).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        server.spawn_on(true).await;
        server
    }

    /// Starts redis-server on `self.port`. With `may_move`, a port someone took meanwhile (a
    /// client's ephemeral port, under a loaded test run) is given up for a fresh one.
    async fn spawn_on(&mut self, may_move: bool) {
        for _ in 0..5 {
            let mut child = Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                // DEBUG SLEEP stalls Redis in the timeout tests.
                .args(["--enable-debug-command", "local"])
                .args(["--dir", self.dir.path().to_str().expect("utf-8 temp path")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "redis-server must be installed (see README: apt-get install redis-server)",
                );
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(mut conn) = self.try_connection().await {
                    // Ours, not another test's server that holds the port: its dir is ours.
                    let dir: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("dir")
                        .query_async(&mut conn)
                        .await;
                    let ours = self.dir.path().canonicalize().ok();
                    match dir {
                        Ok(found)
                            if found.get(1).map(std::path::PathBuf::from).as_ref()
                                == ours.as_ref() =>
                        {
                            self.child = Some(child);
                            return;
                        }
                        Ok(_) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                        Err(_) => {}
                    }
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: most likely the port was taken
                }
                assert!(Instant::now() < deadline, "redis-server did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                may_move,
                "redis-server could not restart on port {}",
                self.port
            );
            self.port = free_port();
        }
        panic!("redis-server did not start on five ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn try_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// A plain connection for the test's own inspection of Redis.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.try_connection().await.expect("connect to test redis")
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(RedisStore::connect(&self.url()).expect("redis store"))
    }

    /// Saves the data set and stops the server.
    pub async fn stop(&mut self) {
        let mut conn = self.conn().await;
        let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query_async(&mut conn)
            .await;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the saved data.
    pub async fn restart(&mut self) {
        self.spawn_on(false).await;
    }

    /// Calls of one command since the last `CONFIG RESETSTAT` (INFO commandstats).
    pub async fn command_calls(&self, command: &str) -> u64 {
        let mut conn = self.conn().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .expect("INFO");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Kills every pub/sub connection (`CLIENT KILL TYPE pubsub`): verify's revocation feed.
    /// Returns how many were killed.
    pub async fn kill_pubsub_clients(&self) -> i64 {
        let mut conn = self.conn().await;
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Every oauth:* string and sorted set, with its value and TTL in ms (-1: none); not the
    /// audit trail.
    pub async fn keyspace(
        &self,
    ) -> std::collections::BTreeMap<String, (mcp_oauth_gateway::store::memory::Dumped, i64)> {
        use mcp_oauth_gateway::store::memory::Dumped;
        use redis::AsyncCommands;
        let mut conn = self.conn().await;
        let keys: Vec<String> = conn.keys("oauth:*").await.unwrap();
        let mut out = std::collections::BTreeMap::new();
        for key in keys {
            if mcp_oauth_gateway::store::keys::is_trail(&key) {
                continue;
            }
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let value = match kind.as_str() {
                "string" => Dumped::Text(conn.get(&key).await.unwrap()),
                "zset" => {
                    let members: Vec<(String, f64)> =
                        conn.zrange_withscores(&key, 0, -1).await.unwrap();
                    Dumped::Index(members.into_iter().map(|(m, s)| (m, s as i64)).collect())
                }
                other => panic!("unexpected type {other} for {key}"),
            };
            let ttl: i64 = conn.pttl(&key).await.unwrap();
            out.insert(key, (value, ttl));
        }
        out
    }

    /// `CONFIG SET maxmemory`: `"1"` makes every write fail (OOM), `"0"` lifts the limit.
    pub async fn set_maxmemory(&self, bytes: &str) {
        let mut conn = self.conn().await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    pub async fn reset_stats(&self) {
        let mut conn = self.conn().await;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .expect("CONFIG RESETSTAT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One RSA key per test run (generation is the slow part), as `JWT_PRIVATE_KEY_B64`.
pub fn rsa_key_b64() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let (_, pem) = KeyMaterial::generate(SigningAlgorithm::Rs256).expect("RSA key");
        base64::engine::general_purpose::STANDARD.encode(pem)
    })
}

/// The environment every verify test starts from; tests add or replace variables.
pub fn base_env(redis: &RedisServer) -> ConfigSource {
    ConfigSource::from_pairs([
        ("JWT_ALGORITHM", "RS256"),
        ("JWT_PRIVATE_KEY_B64", rsa_key_b64()),
        ("BASE_DOMAIN", "example.com"),
        ("REDIS_URL", redis.url().as_str()),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("ALLOWED_GITHUB_USERS", "alice, bob"),
    ])
}

/// Verify alone on a private Redis, with [`base_env`] and `extra` settings on top: the Redis,
/// its store (shared with verify) and verify.
pub async fn verify_alone(extra: &[(&str, &str)]) -> (RedisServer, Arc<dyn Store>, Verify) {
    let redis = RedisServer::start().await;
    let store = redis.store();
    let verify = verify_on(&redis, &store, extra).await;
    (redis, store, verify)
}

/// Another verify on `redis` (through `store`), with [`base_env`] and `extra` settings on top.
pub async fn verify_on(
    redis: &RedisServer,
    store: &Arc<dyn Store>,
    extra: &[(&str, &str)],
) -> Verify {
    let mut source = base_env(redis);
    for (k, v) in extra {
        source = source.with(*k, *v);
    }
    Verify::start(&source, store.clone()).await
}

pub fn settings(source: &ConfigSource) -> Settings {
    Settings::load(source).expect("test settings are valid")
}

/// A running verify service.
pub struct Verify {
    pub base: String,
    pub settings: Settings,
}

impl Verify {
    pub async fn start(source: &ConfigSource, store: Arc<dyn Store>) -> Self {
        let settings = settings(source);
        let server =
            VerifyServer::build(settings.clone(), store, clock::system()).expect("verify binds");
        let base = format!("http://{}", server.addr());
        tokio::spawn(server.run_until_stopped());
        let verify = Verify { base, settings };
        verify.wait_ready().await;
        verify
    }

    pub async fn wait_ready(&self) {
        let ready = format!("{}/ready", self.base);
        wait_serving(&ready, Duration::from_secs(10))
            .await
            .expect("verify became ready");
    }

    /// [`mint_token`] with this verify's key, recorded in `store`: the token and its jti.
    pub async fn mint(&self, store: &Arc<dyn Store>, spec: TokenSpec) -> (String, String) {
        mint_token(&self.settings, store, spec).await
    }

    /// `method` on verify's `path` as a proxy forwards a request for `{proto}://{host}`
    /// ([`forwarded_for`]), nothing else set.
    pub fn forwarded(
        &self,
        method: reqwest::Method,
        path: &str,
        proto: &str,
        host: &str,
    ) -> reqwest::RequestBuilder {
        forwarded_for(
            http().request(method, format!("{}{path}", self.base)),
            proto,
            host,
        )
    }

    /// `/verify` as Traefik calls it for a request to `https://{host}/mcp`.
    pub fn request(&self, token: Option<&str>, host: &str) -> reqwest::RequestBuilder {
        let mut req = http()
            .get(format!("{}/verify", self.base))
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", host)
            .header("X-Forwarded-Uri", "/mcp")
            .header("X-Forwarded-Method", "POST");
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        req
    }

    /// [`Verify::request`], sent: the answer.
    pub async fn answer(&self, token: Option<&str>, host: &str) -> reqwest::Response {
        self.request(token, host)
            .send()
            .await
            .expect("verify answers")
    }

    /// [`Verify::answer`] for `token` on mcp.example.com, with the header `name: value` besides.
    pub async fn answer_with(&self, token: &str, name: &str, value: &str) -> reqwest::Response {
        self.request(Some(token), "mcp.example.com")
            .header(name, value)
            .send()
            .await
            .expect("verify answers")
    }

    pub async fn status(&self, token: &str) -> u16 {
        self.request(Some(token), "mcp.example.com")
            .send()
            .await
            .expect("verify answers")
            .status()
            .as_u16()
    }

    /// Polls until verify answers `status` for `token` (revocation reaches it
    /// asynchronously); `Err` with the time waited when it does not within `limit`.
    pub async fn until_status(
        &self,
        token: &str,
        status: u16,
        limit: Duration,
    ) -> Result<Duration, Duration> {
        wait_for(limit, || async { self.status(token).await == status }).await
    }

    /// How often the revocation feed has reconnected so far.
    pub async fn feed_reconnects(&self) -> f64 {
        self.metric("mcp_gateway_revocation_feed_reconnects_total")
            .await
    }

    /// Waits (5 s at most) until the revocation feed has reconnected since it counted `before`
    /// reconnects, and is up.
    pub async fn wait_feed_resubscribed(&self, before: f64) {
        wait_for(Duration::from_secs(5), || async {
            self.feed_reconnects().await > before
                && self.metric("mcp_gateway_revocation_feed_up").await == 1.0
        })
        .await
        .expect("feed resubscribed");
    }

    /// Waits up to `seconds` for verify to refuse `token` (401), as a revocation reaches it;
    /// fails the test saying `why` when it does not.
    pub async fn refuses_within(&self, token: &str, seconds: u64, why: &str) {
        self.until_status(token, 401, Duration::from_secs(seconds))
            .await
            .expect(why);
    }

    /// [`Verify::status`] of the access token in a token answer.
    pub async fn status_of(&self, tokens: &serde_json::Value) -> u16 {
        self.status(tokens["access_token"].as_str().unwrap()).await
    }

    pub async fn metric(&self, line_prefix: &str) -> f64 {
        metric_at(&self.base, line_prefix).await
    }

    pub async fn decisions(&self, reason: &str) -> f64 {
        let outcome = match reason {
            "ok" => "allowed",
            "store_unavailable" => "unavailable",
            _ => "denied",
        };
        self.metric(&format!(
            "mcp_gateway_verify_decisions_total{{outcome=\"{outcome}\",reason=\"{reason}\"}}"
        ))
        .await
    }
}

/// The value of the first line of `{base}/metrics` that starts with `line_prefix` (0 when none
/// does).
pub async fn metric_at(base: &str, line_prefix: &str) -> f64 {
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn http() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client")
        })
        .clone()
}

/// `GET url` from `client`, which must answer 200.
pub async fn get_ok(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp
}

/// Sends `req` and reads the answer's body as text, whatever its status.
pub async fn body_text(req: reqwest::RequestBuilder) -> String {
    req.send().await.unwrap().text().await.unwrap()
}

/// A public client's refresh-token grant (`grant_type=refresh_token`) at `token_url`: the
/// answer.
pub async fn refresh_at(
    token_url: &str,
    client_id: &str,
    refresh_token: &str,
) -> reqwest::Response {
    http()
        .post(token_url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap()
}

/// `req` as a proxy forwards a request for `{proto}://{host}`: `X-Forwarded-Proto` and
/// `X-Forwarded-Host` set.
pub fn forwarded_for(
    req: reqwest::RequestBuilder,
    proto: &str,
    host: &str,
) -> reqwest::RequestBuilder {
    req.header("X-Forwarded-Proto", proto)
        .header("X-Forwarded-Host", host)
}

/// A `tools/list` POST to the MCP server at `url` with `token` and `headers` besides; the
/// answer as JSON (a header-echo server's report of what it received).
pub async fn post_tools_list(
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    let mut req = http().post(url).bearer_auth(token);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    body_json(req.body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)).await
}

/// An answer's body as JSON, whatever its status.
pub async fn json_body(resp: reqwest::Response) -> serde_json::Value {
    resp.json().await.unwrap()
}

/// Sends `req` and reads the answer's body as JSON, whatever its status.
pub async fn body_json(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// Polls `GET url` until it answers 200; `Err` with the time waited when it does not within
/// `limit`.
pub async fn wait_serving(url: &str, limit: Duration) -> Result<Duration, Duration> {
    wait_for(limit, || async {
        http()
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
}

/// Polls `check` until it holds; `Err` with the time waited when it never does.
pub async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> Result<Duration, Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a test token says; defaults to alice on the standard resource.
#[derive(Clone)]
pub struct TokenSpec {
    pub user: &'static str,
    pub audience: Vec<String>,
    pub scope: &'static str,
    pub email: Option<&'static str>,
    pub amr: Vec<String>,
    pub bind_ip: Option<String>,
    pub bind_ua: Option<String>,
    pub cert_thumbprint: Option<String>,
    pub dpop_jkt: Option<String>,
    pub lifetime: Duration,
    /// Seconds to shift the minting clock (negative: minted in the past).
    pub minted_at_offset: i64,
}

impl TokenSpec {
    /// `user`'s token, otherwise the default.
    pub fn user(user: &'static str) -> Self {
        Self {
            user,
            ..Self::default()
        }
    }

    /// alice's token bound to the DPoP key with thumbprint `jkt`.
    pub fn dpop(jkt: String) -> Self {
        Self {
            dpop_jkt: Some(jkt),
            ..Self::default()
        }
    }
}

impl Default for TokenSpec {
    fn default() -> Self {
        Self {
            user: "alice",
            audience: vec![RESOURCE.to_string()],
            scope: "mcp",
            email: None,
            amr: vec!["github".into()],
            bind_ip: None,
            bind_ua: None,
            cert_thumbprint: None,
            dpop_jkt: None,
            lifetime: Duration::from_secs(3600),
            minted_at_offset: 0,
        }
    }
}

/// Mints a token with the settings' key and records it in the store, as the CLI does.
/// Returns the token and its jti.
pub async fn mint_token(
    settings: &Settings,
    store: &Arc<dyn Store>,
    spec: TokenSpec,
) -> (String, String) {
    let now = clock::SystemClock.now_unix() + spec.minted_at_offset;
    let minted = mint(
        &settings.keys,
        &settings.issuer,
        MintRequest {
            subject: format!("{}-id", spec.user),
            username: spec.user.into(),
            email: spec.email.map(str::to_string),
            name: None,
            groups: Vec::new(),
            client_id: "client-1".into(),
            scope: spec.scope.into(),
            audience: spec.audience.clone(),
            lifetime: spec.lifetime,
            amr: spec.amr.clone(),
            cert_thumbprint: spec.cert_thumbprint.clone(),
            dpop_jkt: spec.dpop_jkt.clone(),
            bind_ip: spec.bind_ip.clone(),
            bind_ua: spec.bind_ua.clone(),
            custom_claims: Default::default(),
            subject_type: Default::default(),
        },
        now,
    )
    .expect("mint");
    let c = &minted.claims;
    // A write a store could not confirm (Sentinel: not yet on a replica) is retried, as
    // every caller of the store does.
    let mut attempts = 0;
    loop {
        let written = store
            .put_token(
                &TokenRecord::for_claims(c, None),
                clock::SystemClock.now_unix(),
                &Events::none(),
            )
            .await;
        match written {
            Ok(()) => break,
            Err(e) if attempts < 5 => {
                attempts += 1;
                eprintln!("recording the token failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("record token: {e}"),
        }
    }
    (minted.token, c.jti.clone())
}

/// A file `name` holding `contents` in a new temporary directory (removed when the first of
/// the pair is dropped): the directory and the file's path.
pub fn temp_file(name: &str, contents: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("temp file");
    (dir, path)
}

/// Path of a binary of this package, built by cargo for the integration tests.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "mcp-gateway" => PathBuf::from(env!("CARGO_BIN_EXE_mcp-gateway")),
        "mcp-gateway-verify" => PathBuf::from(env!("CARGO_BIN_EXE_mcp-gateway-verify")),
        "mcp-gateway-auth" => PathBuf::from(env!("CARGO_BIN_EXE_mcp-gateway-auth")),
        other => panic!("unknown binary {other}"),
    }
}

/// `mcp-gateway` with `args` and only the settings of `source` in its environment.
pub fn run_cli_with(source: &ConfigSource, args: &[&str]) -> std::process::Output {
    let mut cli = Command::new(bin("mcp-gateway"));
    cli.args(args).env_clear();
    for (k, v) in &source.env {
        cli.env(k, v);
    }
    cli.output().unwrap()
}

/// The command succeeded; else the test fails saying `what` and the command's stderr.
pub fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A grant for erin as the grant script receives it: access token `jti` in `family` and
/// refresh token `refresh` (its SHA-256 stands in for the hash), for `client`, optionally
/// rotating the refresh token `rotate_from`.
pub fn grant_write(
    jti: &str,
    client: &str,
    family: &str,
    refresh: &str,
    rotate_from: Option<&str>,
) -> mcp_oauth_gateway::store::GrantWrite {
    let now = clock::SystemClock.now_unix();
    mcp_oauth_gateway::store::GrantWrite {
        token: TokenRecord {
            jti: jti.into(),
            user_id: "7".into(),
            username: "erin".into(),
            client_id: client.into(),
            scope: "mcp".into(),
            audience: vec![],
            issued_at: now,
            expires_at: now + 600,
            family_id: Some(family.into()),
            upstream: None,
            grant: None,
            client_ip: None,
        },
        refresh_hash: refresh.into(),
        refresh_json: serde_json::json!({"family_id": family, "client_id": client, "used": false,
            "user": {"login": "erin"}, "expires_at": now + 3600})
        .to_string(),
        refresh_expires_at: now + 3600,
        family_id: family.into(),
        rotate_from: rotate_from.map(str::to_string),
        redeem_code: None,
        result: None,
        renew_client: None,
        registered_from: None,
        events: Events::none(),
    }
}

/// A code's record for `client` under `oauth:code:{code}` for `ttl_secs`, indexed under the
/// client (`put_for_client`), with `events`.
pub async fn store_code(
    store: &dyn Store,
    code: &str,
    client: &str,
    ttl_secs: u64,
    events: &Events,
) {
    let record = serde_json::json!({ "client_id": client }).to_string();
    let (key, ttl) = (format!("oauth:code:{code}"), Duration::from_secs(ttl_secs));
    let now = clock::SystemClock.now_unix();
    store
        .put_for_client(&key, &record, ttl, client, now, events)
        .await
        .unwrap();
}

/// A token record of `user` for `client`, issued now, expiring in `expires_in` seconds.
pub fn token_record(jti: &str, user: &str, client: &str, expires_in: i64) -> TokenRecord {
    let now = clock::SystemClock.now_unix();
    TokenRecord {
        jti: jti.into(),
        user_id: format!("{user}-id"),
        username: user.into(),
        client_id: client.into(),
        scope: "mcp".into(),
        audience: vec!["https://mcp.example.com/mcp".into()],
        issued_at: now,
        expires_at: now + expires_in,
        family_id: None,
        upstream: None,
        grant: None,
        client_ip: None,
    }
}

/// The lines `child` prints on its stdout (piped), as they come.
pub fn stdout_lines(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}
