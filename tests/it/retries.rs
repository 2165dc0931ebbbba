//! A store call that times out while Redis still executes it must not leave the client with
//! a wrong answer: the retry the 503 asks for gets the outcome of the first execution. Redis
//! is stalled for real, with `DEBUG SLEEP` and `CLIENT PAUSE` (3 s), longer than the
//! services' one-second response timeout.

use std::time::Duration;

use serde_json::Value;

use crate::support::gateway::{Gateway, REDIRECT, manage_client};

/// Stalls Redis for `seconds` from another connection, in the background.
fn stall(gw: &Gateway, command: &'static str, arg: &'static str) -> tokio::task::JoinHandle<()> {
    let url = gw.redis.url();
    tokio::spawn(async move {
        let client = redis::Client::open(url).unwrap();
        // Waits out the whole stall (the default response timeout is shorter).
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap();
        let mut cmd = redis::cmd(command);
        match command {
            "CLIENT" => cmd.arg("PAUSE").arg(arg).arg("WRITE"),
            _ => cmd.arg("SLEEP").arg(arg),
        };
        let _: redis::RedisResult<redis::Value> = cmd.query_async(&mut conn).await;
    })
}

/// Retries while the answer is 503 (the store reconnecting after the stall), as a client
/// following Retry-After would; at most 10 s.
async fn until_answered<F, Fut>(mut send: F) -> reqwest::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = send().await;
        if resp.status() != 503 || std::time::Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn refresh(gw: &Gateway, client: &Value, token: &str) -> reqwest::Response {
    gw.token(
        client,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_timed_out_is_retried_into_the_same_successor() {
    for (command, arg) in [("DEBUG", "3"), ("CLIENT", "3000")] {
        let (gw, client, tokens) = Gateway::with_login(&[]).await;
        let presented = tokens["refresh_token"].as_str().unwrap();

        let stalled = stall(&gw, command, arg);
        // Under a loaded test run, give the stall time to begin; the request then has 2 s to
        // reach Redis inside it (3 s stall, 1 s timeout).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resp = refresh(&gw, &client, presented).await;
        assert_eq!(resp.status(), 503, "{command}: the store timed out");
        assert!(resp.headers().contains_key("retry-after"));
        stalled.await.unwrap();

        // Redis ran the rotation after all; the retry (as soon as the store answers again, as
        // Retry-After asks) gets its outcome, not a reuse verdict.
        let resp = until_answered(|| refresh(&gw, &client, presented)).await;
        assert_eq!(resp.status(), 200, "{command}: the retry succeeds");
        let successor: Value = resp.json().await.unwrap();
        let access = successor["access_token"].as_str().unwrap();
        assert_eq!(gw.verify.status(access).await, 200, "{command}: recorded");
        let again: Value = refresh(&gw, &client, presented).await.json().await.unwrap();
        assert_eq!(
            again, successor,
            "{command}: one successor, however often retried"
        );
        let next = refresh(&gw, &client, successor["refresh_token"].as_str().unwrap()).await;
        assert_eq!(next.status(), 200, "{command}: the grant lives on");
        assert_eq!(
            gw.verify.status_of(&tokens).await,
            200,
            "{command}: no family revoked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_redemption_that_timed_out_is_retried_into_the_same_tokens() {
    for (command, arg) in [("CLIENT", "3000"), ("DEBUG", "3")] {
        let gw = Gateway::start(&[]).await;
        let client = gw.client("none").await;
        let (code, verifier) = gw.code_for(&client, &[]).await;
        let stalled = stall(&gw, command, arg);
        // Under a loaded test run, give the stall time to begin; the request then has 2 s to
        // reach Redis inside it (3 s stall, 1 s timeout).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resp = gw.redeem(&client, &code, &verifier).await;
        assert_eq!(resp.status(), 503, "{command}: the store timed out");
        stalled.await.unwrap();
        let resp = until_answered(|| gw.redeem(&client, &code, &verifier)).await;
        assert_eq!(resp.status(), 200, "{command}: the retry succeeds");
        let tokens: Value = resp.json().await.unwrap();
        assert_eq!(gw.verify.status_of(&tokens).await, 200);
        // Another client, or the same client without the verifier, cannot read the answer.
        let (wrong, _) = crate::support::gateway::pkce();
        let resp = gw
            .token(
                &client,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("code_verifier", &wrong),
                    ("redirect_uri", REDIRECT),
                ],
            )
            .await;
        assert_eq!(
            resp.status(),
            400,
            "{command}: a replay without the verifier"
        );
    }
}

/// A registration's lifetime slides with use: refreshing keeps an active client alive past its
/// original `CLIENT_LIFETIME`, while one left unused still expires (no sign-out at day 90).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_client_outlives_its_registration_lifetime() {
    let gw = Gateway::start(&[("CLIENT_LIFETIME", "4")]).await;
    let active = gw.client("none").await;
    let idle = gw.client("none").await;
    let mut tokens = gw.tokens(&active).await;
    let registered_until = active["client_secret_expires_at"].as_i64().unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let resp = refresh(&gw, &active, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(resp.status(), 200, "refreshing renews the registration");
        tokens = resp.json().await.unwrap();
    }
    // 5 s later: past the 4 s lifetime, the active client is still registered ...
    let read = manage_client(reqwest::Method::GET, &active).await;
    assert_eq!(read.status(), 200);
    let record: Value = read.json().await.unwrap();
    assert!(record["client_secret_expires_at"].as_i64().unwrap() > registered_until);
    // ... and the idle one is gone.
    let resp = manage_client(reqwest::Method::GET, &idle).await;
    assert_eq!(resp.status(), 404, "an unused registration still expires");
}
