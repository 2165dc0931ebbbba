//! verify under faults: revocations racing liveness loads, a black-holed revocation feed,
//! SIGTERM under load. Every fault is real (a Redis connection killed, a TCP proxy that stops
//! forwarding, a signal to the release binary); the one stand-in is a store wrapper that holds a
//! liveness answer until the test lets it go, to drive one interleaving exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use mcp_oauth_gateway::audit::{Events, Sink, Stored};
use mcp_oauth_gateway::store::{
    Attempt, AttemptLimit, Change, DeleteStep, GrantOutcome, GrantWrite, GroupRead, NewClient,
    NewClientWrite, OnceWrite, RevocationStream, Store, StoreResult, TokenRecord, Ttl,
};
use tokio::sync::Notify;

use crate::support::helpers::*;
use crate::support::procs::sigterm;

/// The real store, except that `token_is_live` — once `hold` is set — reads its answer and
/// then waits for `release` before returning it: the Redis reply is "in flight".
struct GatedStore {
    inner: Arc<dyn Store>,
    hold: AtomicBool,
    arrived: Notify,
    release: Notify,
}

/// `impl Store for $ty`: `$own` as written, every method listed after it handed to
/// `self.inner` unchanged. The list is the whole `Store` trait less `$own`: a method the trait
/// gains fails to compile here until it is listed.
macro_rules! store_passing_to_inner {
    ($ty:ty { $($own:tt)* } $(fn $name:ident(&self $(, $arg:ident: $arg_ty:ty)*) -> $ret:ty;)*) => {
        #[async_trait]
        impl Store for $ty {
            $($own)*
            $(async fn $name(&self $(, $arg: $arg_ty)*) -> $ret {
                self.inner.$name($($arg),*).await
            })*
        }
    };
}

store_passing_to_inner! {
    GatedStore {
        async fn token_is_live(&self, jti: &str) -> StoreResult<bool> {
            let answer = self.inner.token_is_live(jti).await;
            if self.hold.load(Ordering::SeqCst) {
                let released = self.release.notified();
                self.arrived.notify_one();
                released.await;
            }
            answer
        }

        fn audit_sink(&self) -> &Sink {
            self.inner.audit_sink()
        }
    }
    fn ping(&self) -> StoreResult<()>;
    fn put_token(&self, record: &TokenRecord, now: i64, events: &Events) -> StoreResult<()>;
    fn put_token_once(&self, once: &OnceWrite<'_>, now: i64, events: &Events) -> StoreResult<bool>;
    fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>>;
    fn revoke_token(&self, jti: &str, events: &Events) -> StoreResult<bool>;
    fn indexed_tokens(&self, index_key: &str, now: i64) -> StoreResult<Vec<String>>;
    fn subscribe_revocations(&self) -> StoreResult<RevocationStream>;
    fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()>;
    fn put_if_absent(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<bool>;
    fn get(&self, key: &str) -> StoreResult<Option<String>>;
    fn take(&self, key: &str) -> StoreResult<Option<String>>;
    fn delete(&self, key: &str) -> StoreResult<bool>;
    fn ttl(&self, key: &str) -> StoreResult<Ttl>;
    fn incr_within(&self, key: &str, window: Duration) -> StoreResult<u64>;
    fn reserve_attempt(&self, counters: &[String], locks: &[String], limit: &AttemptLimit, events: &Events) -> StoreResult<Attempt>;
    fn issue_grant(&self, grant: &GrantWrite, now: i64) -> StoreResult<GrantOutcome>;
    fn revoke_family(&self, family_id: &str, tombstone_ttl: Duration, events: &Events) -> StoreResult<usize>;
    fn put_consent(&self, user: &str, client_id: &str, json: &str, ttl: Duration, now: i64, events: &Events) -> StoreResult<()>;
    fn put_for_client(&self, key: &str, value: &str, ttl: Duration, client_id: &str, now: i64, events: &Events) -> StoreResult<()>;
    fn delete_client_step(&self, client_id: &str, tombstone_ttl: Duration, budget: usize, events: &Events) -> StoreResult<DeleteStep>;
    fn put_new_client(&self, client: &NewClientWrite<'_>) -> StoreResult<NewClient>;
    fn drop_unused_client(&self, client_id: &str, unused_lifetime: Duration, events: &Events) -> StoreResult<bool>;
    fn change(&self, change: &Change<'_>, events: &Events) -> StoreResult<bool>;
    fn append_events(&self, events: &Events) -> StoreResult<()>;
    fn add_usage(&self, hour: &str, counts: &[(String, u64)]) -> StoreResult<()>;
    fn audit_deliveries(&self, read: &GroupRead<'_>) -> StoreResult<Vec<Stored>>;
    fn audit_ack(&self, group: &str, ids: &[String]) -> StoreResult<()>;
    fn audit_backlog(&self, group: &str) -> StoreResult<u64>;
}

/// Cuts verify's subscription (CLIENT KILL) and waits until it is back: the liveness cache is
/// then empty and every cached token's next request loads its liveness.
async fn reconnect_feed(redis: &RedisServer, verify: &Verify) {
    let before = verify.feed_reconnects().await;
    redis.kill_pubsub_clients().await;
    verify.wait_feed_resubscribed(before).await;
}

/// Redis answers "live", the token is revoked and the feed hears it, and only then does the
/// answer reach the cache: the revocation must win, for this request and every later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_a_liveness_load_is_never_lost() {
    let redis = RedisServer::start().await;
    let store = redis.store();
    let gated = Arc::new(GatedStore {
        inner: store.clone(),
        hold: AtomicBool::new(false),
        arrived: Notify::new(),
        release: Notify::new(),
    });
    let verify = Verify::start(&base_env(&redis), gated.clone()).await;
    let (token, jti) = verify.mint(&store, TokenSpec::default()).await;
    assert_eq!(verify.status(&token).await, 200);
    reconnect_feed(&redis, &verify).await;

    gated.hold.store(true, Ordering::SeqCst);
    let arrived = gated.arrived.notified();
    let request = tokio::spawn({
        let base = verify.base.clone();
        let token = token.clone();
        async move {
            http()
                .get(format!("{base}/verify"))
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-Host", "mcp.example.com")
                .header("X-Forwarded-Uri", "/mcp")
                .header("Authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    arrived.await; // Redis said "live"; the answer is held.
    let heard = verify
        .metric("mcp_gateway_revocations_received_total")
        .await;
    assert!(store.revoke_token(&jti, &Events::none()).await.unwrap());
    wait_for(Duration::from_secs(2), || async {
        verify
            .metric("mcp_gateway_revocations_received_total")
            .await
            > heard
    })
    .await
    .expect("the feed heard the revocation");
    gated.hold.store(false, Ordering::SeqCst);
    gated.release.notify_one();
    assert_eq!(
        request.await.unwrap(),
        401,
        "the held answer lost to the revocation"
    );
    for _ in 0..5 {
        assert_eq!(verify.status(&token).await, 401);
    }
}

/// Many cached tokens, liveness cache emptied by a feed reconnect, each token requested and
/// revoked at the same moment: once the revocations are published and heard, none is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_racing_loads_under_load_lose_nothing() {
    const TOKENS: usize = 1000;
    let (redis, store, verify) = verify_alone(&[]).await;
    let mut tokens = Vec::new();
    for _ in 0..TOKENS {
        tokens.push(verify.mint(&store, TokenSpec::default()).await);
    }
    let warm = join_all(tokens.iter().map(|(t, _)| verify.status(t))).await;
    assert!(warm.iter().all(|s| *s == 200));
    reconnect_feed(&redis, &verify).await;

    let heard = verify
        .metric("mcp_gateway_revocations_received_total")
        .await;
    let races = tokens.iter().map(|(token, jti)| {
        let store = store.clone();
        let verify = &verify;
        async move {
            let none = Events::none();
            let (_, revoked) = tokio::join!(verify.status(token), store.revoke_token(jti, &none));
            assert!(revoked.unwrap());
        }
    });
    join_all(races).await;
    wait_for(Duration::from_secs(5), || async {
        verify
            .metric("mcp_gateway_revocations_received_total")
            .await
            >= heard + TOKENS as f64
    })
    .await
    .expect("every revocation heard");
    let after = join_all(tokens.iter().map(|(t, _)| verify.status(t))).await;
    let served = after.iter().filter(|s| **s == 200).count();
    assert_eq!(
        served, 0,
        "revoked tokens served 200 after their revocation"
    );
}

/// A TCP proxy in front of Redis that can black-hole every connection: bytes stop flowing in
/// both directions and nothing is closed (no FIN, no RST), as when a network path dies.
struct BlackHoleProxy {
    port: u16,
    black_hole: Arc<AtomicBool>,
}

impl BlackHoleProxy {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let black_hole = Arc::new(AtomicBool::new(false));
        let flag = black_hole.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, flag.clone()), pump(sr, cw, flag));
                });
            }
        });
        Self { port, black_hole }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    black_hole: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while black_hole.load(Ordering::SeqCst) {
            // Hold both sockets open and move nothing.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        while black_hole.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Redis traffic black-holed: the subscription looks alive to TCP, but its heartbeat goes
/// unanswered, so within the heartbeat bound verify is not ready and serves no cached token
/// (a revocation it cannot hear may have happened); once the path is back, the revoked token
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_is_noticed_within_the_heartbeat_bound() {
    use mcp_oauth_gateway::store::RedisStore;
    use mcp_oauth_gateway::store::redis::{FEED_HEARTBEAT_INTERVAL, FEED_HEARTBEAT_TIMEOUT};
    let redis = RedisServer::start().await;
    let direct = redis.store();
    let redis_port: u16 = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = BlackHoleProxy::start(redis_port).await;
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&via_proxy).unwrap());
    let verify = Verify::start(
        &base_env(&redis).with("REDIS_URL", via_proxy.as_str()),
        store,
    )
    .await;
    verify.wait_ready().await;
    let (token, jti) = mint_token(&verify.settings, &direct, TokenSpec::default()).await;
    assert_eq!(verify.status(&token).await, 200);
    assert_eq!(verify.status(&token).await, 200);

    proxy.black_hole.store(true, Ordering::SeqCst);
    let cut = std::time::Instant::now();
    // Revoked where this replica cannot hear it.
    assert!(direct.revoke_token(&jti, &Events::none()).await.unwrap());
    // The stated bound (interval + timeout, 3 s), plus slack for a loaded test machine.
    let bound = FEED_HEARTBEAT_INTERVAL + FEED_HEARTBEAT_TIMEOUT + Duration::from_millis(1500);
    let mut not_ready_after = None;
    while cut.elapsed() < bound + Duration::from_secs(2) {
        let status = verify.status(&token).await;
        if cut.elapsed() > bound {
            assert_ne!(
                status,
                200,
                "a cached token served {:?} after the cut",
                cut.elapsed()
            );
        }
        assert_ne!(status, 401, "an outage is never a 401");
        let ready = http()
            .get(format!("{}/ready", verify.base))
            .send()
            .await
            .unwrap();
        let status = ready.status();
        let body: serde_json::Value = ready.json().await.unwrap();
        if body["revocation_feed"] == "down" && not_ready_after.is_none() {
            assert_eq!(status, 503);
            not_ready_after = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noticed = not_ready_after.expect("/ready reported the feed down");
    assert!(
        noticed <= bound,
        "noticed after {noticed:?}, bound {bound:?}"
    );
    assert_eq!(verify.metric("mcp_gateway_revocation_feed_up").await, 0.0);

    proxy.black_hole.store(false, Ordering::SeqCst);
    verify
        .refuses_within(
            &token,
            15,
            "the revoked token is refused once Redis is reachable again",
        )
        .await;
}

/// Load on 32 keep-alive connections, SIGTERM to the release binary, load going on until the
/// process is gone: every request that was sent gets an answer (no EOF, no reset; a connection
/// refused or never established is the client's cue to go elsewhere, nothing was sent), `/ready`
/// turns 503 at once, responses tell the clients to close, and the process exits cleanly after
/// the drain period.
async fn sigterm_under_load_loses_no_request(
    binary: &str,
    env: &[(&str, String)],
    path: &str,
    transport: Transport,
) {
    use std::process::Command;
    let port = free_port();
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let made = mcp_oauth_gateway::tls::generate(certs.path(), &["127.0.0.1".to_string()]).unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&made.ca_cert).unwrap()).unwrap();
    let mut child = Command::new(bin(binary))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .envs(
            (transport == Transport::H2Tls)
                .then(|| {
                    [
                        ("VERIFY_TLS_CERT", made.cert.cert.display().to_string()),
                        ("VERIFY_TLS_KEY", made.cert.key.display().to_string()),
                        ("VERIFY_TLS_LISTEN_ADDR", format!("127.0.0.1:{tls_port}")),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        .env("SHUTDOWN_DRAIN", "3")
        .env("LOG_FORMAT", "text")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_serving(&format!("{base}/ready"), Duration::from_secs(10))
        .await
        .expect("service ready");
    let load_base = match transport {
        Transport::H2Tls => format!("https://127.0.0.1:{tls_port}"),
        _ => base.clone(),
    };

    let signalled = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (signalled, stop) = (signalled.clone(), stop.clone());
            let url = format!("{load_base}{path}");
            let ca = ca.clone();
            tokio::spawn(async move {
                // One connection per worker, kept alive between requests (HTTP/1.1), or every
                // request a stream on it (HTTP/2).
                let build = move || {
                    match transport {
                        Transport::Http1 => reqwest::Client::builder(),
                        Transport::H2c => reqwest::Client::builder().http2_prior_knowledge(),
                        Transport::H2Tls => reqwest::Client::builder()
                            .add_root_certificate(ca.clone())
                            .https_only(true),
                    }
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap()
                };
                let mut client = build();
                let mut tally = Tally::default();
                while !stop.load(Ordering::SeqCst) {
                    let after_signal = signalled.load(Ordering::SeqCst);
                    match client
                        .get(&url)
                        .header("X-Forwarded-Proto", "https")
                        .header("X-Forwarded-Host", "mcp.example.com")
                        .send()
                        .await
                    {
                        Ok(resp) => {
                            tally.answered += 1;
                            if after_signal {
                                tally.after_signal += 1;
                                if resp
                                    .headers()
                                    .get("connection")
                                    .is_some_and(|v| v == "close")
                                {
                                    tally.closing += 1;
                                }
                            }
                            if resp.version() == reqwest::Version::HTTP_2 {
                                tally.h2 += 1;
                            }
                            if let Err(e) = resp.bytes().await {
                                tally.lost.push(format!("body: {e:?}"));
                            }
                        }
                        // Refused or never connected: nothing was sent, the client goes
                        // elsewhere (here: tries again until the process is gone).
                        Err(e) if e.is_connect() => {
                            tally.refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        // HTTP/2 GOAWAY (RFC 9113 §6.8): the request was not processed and is
                        // retried on a new connection, as Go's client (Traefik) does.
                        Err(e) if format!("{e:?}").contains("GoAway(b\"\", NO_ERROR, Remote)") => {
                            tally.went_away += 1;
                            client = build();
                        }
                        Err(e) => tally.lost.push(format!("{e:?}")),
                    }
                }
                tally
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(child.id());
    signalled.store(true, Ordering::SeqCst);
    let ready = wait_for(Duration::from_secs(1), || async {
        http()
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(ready.is_ok(), "/ready 503 right after SIGTERM");
    let signalled_at = std::time::Instant::now();
    // The load goes on through the end of the drain and the stop.
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let stopped_after = signalled_at.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = Tally::default();
    for worker in workers {
        let tally = worker.await.unwrap();
        total.answered += tally.answered;
        total.after_signal += tally.after_signal;
        total.closing += tally.closing;
        total.refused += tally.refused;
        total.h2 += tally.h2;
        total.went_away += tally.went_away;
        total.lost.extend(tally.lost);
    }
    if transport == Transport::Http1 {
        assert_eq!(total.h2, 0);
    } else {
        assert_eq!(total.h2, total.answered, "every answer over HTTP/2");
        // Told to go away when the drain ends, the clients leave their connections and
        // verify stops at once (a connection kept open would hold it up to 30 s).
        assert!(
            stopped_after < Duration::from_millis(5500),
            "verify stopped {stopped_after:?} after SIGTERM (drain 3 s)"
        );
    }
    assert!(
        total.lost.is_empty(),
        "{} requests without an answer (of {} answered, {} refused): {:?}",
        total.lost.len(),
        total.answered,
        total.refused,
        total.lost
    );
    assert!(
        total.answered > 100,
        "load ran: {} requests",
        total.answered
    );
    assert!(
        total.after_signal > 100,
        "requests still answered during the drain: {}",
        total.after_signal
    );
    if transport == Transport::Http1 {
        assert!(
            total.closing > 0,
            "responses during the drain say Connection: close"
        );
    }
    assert!(total.refused > 0, "the load went on past the stop");
    assert!(status.success(), "clean exit after the drain: {status:?}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Http1,
    /// Cleartext HTTP/2 with prior knowledge on the plain listener.
    H2c,
    /// HTTP/2 by ALPN on the TLS listener.
    H2Tls,
}

/// What one load worker saw.
#[derive(Default)]
struct Tally {
    h2: u32,
    went_away: u32,
    answered: u32,
    after_signal: u32,
    closing: u32,
    refused: u32,
    lost: Vec<String>,
}

fn service_env(redis: &RedisServer) -> Vec<(&'static str, String)> {
    vec![
        ("JWT_ALGORITHM", "RS256".into()),
        ("JWT_PRIVATE_KEY_B64", rsa_key_b64().into()),
        ("BASE_DOMAIN", "example.com".into()),
        ("REDIS_URL", redis.url()),
        ("ALLOWED_GITHUB_USERS", "alice".into()),
        ("GITHUB_CLIENT_ID", "id".into()),
        ("GITHUB_CLIENT_SECRET", "secret".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_drains_on_sigterm_without_losing_a_request() {
    let redis = RedisServer::start().await;
    sigterm_under_load_loses_no_request(
        "mcp-gateway-verify",
        &service_env(&redis),
        "/verify",
        Transport::Http1,
    )
    .await;
}

/// HTTP/2 connections are told to go away (GOAWAY) when the drain starts: the clients move
/// their next requests to new connections and nothing in flight is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_drains_http2_connections_on_sigterm_without_losing_a_request() {
    let redis = RedisServer::start().await;
    for transport in [Transport::H2c, Transport::H2Tls] {
        sigterm_under_load_loses_no_request(
            "mcp-gateway-verify",
            &service_env(&redis),
            "/verify",
            transport,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_drains_on_sigterm_without_losing_a_request() {
    let redis = RedisServer::start().await;
    sigterm_under_load_loses_no_request(
        "mcp-gateway-auth",
        &service_env(&redis),
        "/.well-known/oauth-authorization-server",
        Transport::Http1,
    )
    .await;
}
