//! The token endpoint and what it issues: client authentication, refresh rotation under
//! concurrency, revoke and introspect ownership, bindings, a Redis outage.

use futures_util::future::join_all;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::gateway::*;
use crate::support::helpers::*;
use crate::support::{header, jwt_claims};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_basic_and_post_really_work() {
    let gw = Gateway::start(&[]).await;
    for method in ["client_secret_basic", "client_secret_post"] {
        let client = gw.client(method).await;
        assert!(client["client_secret"].as_str().unwrap().len() >= 43);
        let tokens = gw.tokens(&client).await;
        assert!(tokens["access_token"].is_string(), "{method}");
        // The wrong secret: 401 invalid_client with a Basic challenge.
        let mut wrong = client.clone();
        wrong["client_secret"] = "not-the-secret".into();
        let (code, verifier) = gw.code_for(&client, &[]).await;
        let resp = gw.redeem(&wrong, &code, &verifier).await;
        assert_eq!(header(&resp, "www-authenticate"), "Basic realm=\"auth\"");
        assert_oauth_error(resp, 401, "invalid_client").await;
        // Secrets are stored hashed.
        let mut conn = gw.redis.conn().await;
        let stored: String = conn
            .get(format!(
                "oauth:client:{}",
                client["client_id"].as_str().unwrap()
            ))
            .await
            .unwrap();
        assert!(!stored.contains(client["client_secret"].as_str().unwrap()));
        assert!(!stored.contains(client["registration_access_token"].as_str().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_errors_keep_the_original_contract() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let resp = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "nobody"),
                ("code", "x"),
            ],
        )
        .await;
    assert_eq!(header(&resp, "www-authenticate"), "Basic realm=\"auth\"");
    assert_oauth_error(resp, 401, "invalid_client").await;
    let resp = gw
        .token(&client, &[("grant_type", "password"), ("username", "a")])
        .await;
    assert_oauth_error(resp, 400, "unsupported_grant_type").await;
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", "bogus"),
                ("code_verifier", &pkce().0),
            ],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    let resp = http()
        .post(gw.url("/token"))
        .json(&json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(resp, 400, "invalid_request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refreshes_yield_exactly_one_token() {
    let (gw, client, tokens) = Gateway::with_login(&[]).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let answers = join_all((0..50).map(|_| async {
        let resp = gw.refresh(&client, refresh).await;
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    }))
    .await;
    // One rotation; every duplicate gets its answer (a benign race, not a replay).
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let first = &answers[0].1;
    assert!(
        answers.iter().all(|(_, body)| body == first),
        "one successor"
    );
    let mut conn = gw.redis.conn().await;
    let live: Vec<String> = redis::AsyncCommands::keys(&mut conn, "oauth:token:*")
        .await
        .unwrap();
    assert_eq!(live.len(), 2, "the first access token and one successor");
    assert_eq!(gw.verify.status_of(first).await, 200, "no family revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_are_bound_to_their_client() {
    let (gw, client, tokens) = Gateway::with_login(&[]).await;
    let thief = gw.client("none").await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = gw.refresh(&thief, refresh).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    // The owner's token is untouched by the attempt.
    let resp = gw.refresh(&client, refresh).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_and_introspect_act_on_the_clients_own_tokens_only() {
    let gw = Gateway::start(&[]).await;
    let owner = gw.client("client_secret_post").await;
    let other = gw.client("client_secret_post").await;
    let tokens = gw.tokens(&owner).await;
    let access = tokens["access_token"].as_str().unwrap();
    let form = |client: &Value, token: &str| {
        vec![
            ("token".to_string(), token.to_string()),
            (
                "client_id".to_string(),
                client["client_id"].as_str().unwrap().to_string(),
            ),
            (
                "client_secret".to_string(),
                client["client_secret"].as_str().unwrap().to_string(),
            ),
        ]
    };
    let introspect_url = gw.url("/introspect");
    let introspect = |client: Value, token: String| {
        let body = form(&client, &token);
        let url = introspect_url.clone();
        async move {
            http()
                .post(url)
                .form(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        introspect(other.clone(), access.to_string()).await,
        json!({"active": false})
    );
    let mine = introspect(owner.clone(), access.to_string()).await;
    assert_eq!(mine["active"], true);
    assert_eq!(mine["username"], "alice");
    assert_eq!(
        introspect(
            owner.clone(),
            tokens["refresh_token"].as_str().unwrap().to_string()
        )
        .await["active"],
        true
    );

    // Another client's revocation is answered 200 and changes nothing.
    let resp = gw.post_form("/revoke", &form(&other, access)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(gw.verify.status(access).await, 200);
    // Unauthenticated revocation is refused.
    let resp = gw.post_form("/revoke", &[("token", access)]).await;
    assert_oauth_error(resp, 401, "invalid_client").await;
    // The owner's revocation reaches verify at once.
    let resp = gw.post_form("/revoke", &form(&owner, access)).await;
    assert_eq!(resp.status(), 200);
    gw.verify
        .refuses_within(access, 1, "revoked at verify")
        .await;
    assert_eq!(
        introspect(owner.clone(), access.to_string()).await["active"],
        false
    );
    // Revoking the refresh token ends the grant.
    let resp = gw
        .post_form(
            "/revoke",
            &form(&owner, tokens["refresh_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = gw.refresh_of(&owner, &tokens).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    assert_eq!(
        introspect(owner, "garbage".into()).await,
        json!({"active": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_and_custom_claims_are_written_at_issuance() {
    let gw = Gateway::start(&[
        ("TOKEN_BIND_UA", "true"),
        ("TOKEN_CUSTOM_CLAIMS", r#"{"team":"blue","sub":"evil"}"#),
    ])
    .await;
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    let claims = jwt_claims(access);
    assert_eq!(claims["team"], "blue");
    assert_ne!(claims["sub"], "evil");
    assert!(claims["bind_ua"].is_string());
    // reqwest's default client sends no User-Agent: the token is bound to "none".
    assert_eq!(gw.verify.status(access).await, 200);
    let resp = gw
        .verify
        .answer_with(access, "User-Agent", "stolen/1.0")
        .await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_503_with_retry_after_and_counted() {
    let mut gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    gw.redis.stop().await;
    let resp = gw.refresh(&client, "x").await;
    assert_eq!(header(&resp, "retry-after"), "2");
    assert_oauth_error(resp, 503, "temporarily_unavailable").await;
    let resp = gw.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_oauth_error(resp, 503, "temporarily_unavailable").await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("mcp_gateway_redis_errors_total 2"),
        "{metrics}"
    );
    let ready = http().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
}
