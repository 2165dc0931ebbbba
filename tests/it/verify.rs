//! `/verify` over HTTP against a real Redis: every answer shape of DESIGN §2.

use std::time::Duration;

use base64::Engine;
use futures_util::future::join_all;
use mcp_oauth_gateway::audit::Events;
use mcp_oauth_gateway::token::{b64url, sha256_b64url};
use redis::AsyncCommands;

use crate::support::header;
use crate::support::helpers::*;

const PRM: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_gets_a_challenge_pointing_at_the_metadata() {
    let (redis, _, verify) = verify_alone(&[]).await;

    for auth in [
        None,
        Some("Basic YWxpY2U6cw=="),
        Some("Bearer"),
        Some("Bearer a b"),
    ] {
        let mut req = verify.request(None, "mcp.example.com");
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(
            header(&resp, "www-authenticate"),
            format!(r#"Bearer realm="mcp", resource_metadata="{PRM}", scope="mcp""#)
        );
        assert_eq!(header(&resp, "cache-control"), "no-store");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert!(body["error_description"].as_str().unwrap().len() > 10);
    }
    // A token in the query string is never looked at.
    let redis_store = redis.store();
    let (token, _) = mint_token(&verify.settings, &redis_store, TokenSpec::default()).await;
    let resp = verify
        .forwarded(
            reqwest::Method::GET,
            &format!("/verify?access_token={token}"),
            "https",
            "mcp.example.com",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(verify.decisions("no_token").await, 5.0);
}

/// `/verify` for `token`, asked by `method` with only the scheme (`proto`) and the host
/// (mcp.example.com) forwarded: no URI, no method header.
async fn ask_bare(
    verify: &Verify,
    method: reqwest::Method,
    proto: &str,
    token: &str,
) -> reqwest::Response {
    verify
        .forwarded(method, "/verify", proto, "mcp.example.com")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_passes_with_identity_headers() {
    let (_redis, store, verify) = verify_alone(&[]).await;
    let spec = TokenSpec {
        email: Some("alice@example.com"),
        scope: "mcp mcp:write",
        ..Default::default()
    };
    let (token, _) = verify.mint(&store, spec).await;

    // Scheme case-insensitive, several spaces allowed.
    for auth in [format!("Bearer {token}"), format!("bearer   {token}")] {
        let resp = verify
            .request(None, "mcp.example.com")
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-user-id"), "alice-id");
        assert_eq!(header(&resp, "x-user-name"), "alice");
        assert_eq!(header(&resp, "x-user-email"), "alice@example.com");
        assert_eq!(header(&resp, "x-auth-client-id"), "client-1");
        assert_eq!(header(&resp, "x-auth-scope"), "mcp mcp:write");
        assert!(resp.headers().get("x-auth-token").is_none());
        assert!(resp.text().await.unwrap().is_empty());
    }
    // Any method works (nginx and Caddy may forward the original one).
    let resp = ask_bare(&verify, reqwest::Method::POST, "https", &token).await;
    assert_eq!(resp.status(), 200);
    // The host header is matched case-insensitively and ports are part of the resource.
    assert_eq!(
        verify
            .answer(Some(&token), "MCP.Example.COM")
            .await
            .status(),
        200
    );
    assert_eq!(verify.decisions("ok").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_is_forwarded_only_when_configured() {
    let (_redis, store, verify) = verify_alone(&[("FORWARD_ACCESS_TOKEN", "true")]).await;
    let (token, _) = verify.mint(&store, TokenSpec::default()).await;
    let resp = verify.answer(Some(&token), "mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-token"), token);
}

fn assemble(header: serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(sig)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_tokens_are_refused() {
    let (redis, store, verify) = verify_alone(&[]).await;
    let settings = &verify.settings;
    let (good, _) = mint_token(settings, &store, TokenSpec::default()).await;
    let parts: Vec<&str> = good.split('.').collect();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    let kid = settings.keys.signing_key().unwrap().kid().to_string();

    let alg_none = assemble(
        serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
        &claims,
        b"",
    );
    // Alg confusion: HMAC keyed with our public key, which anyone can read from the JWKS.
    let public_jwks = serde_json::to_vec(&settings.keys.jwks()).unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.clone());
    let hs_confused = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_jwks),
    )
    .unwrap();
    let mut tampered_claims = claims.clone();
    tampered_claims["username"] = "bob".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(tampered_claims.to_string().as_bytes()),
        parts[2]
    );
    // Signed by a key we do not know.
    let other_redis = RedisServer::start().await;
    let other = settings_with_new_key(&other_redis);
    let (unknown_kid, _) = mint_token(&other, &store, TokenSpec::default()).await;
    // Our key, another issuer.
    let other_issuer = crate::support::helpers::settings(
        &base_env(&redis).with("ISSUER_URL", "https://auth.evil.com"),
    );
    let (wrong_issuer, _) = mint_token(&other_issuer, &store, TokenSpec::default()).await;
    let (expired, _) = mint_token(
        settings,
        &store,
        TokenSpec {
            lifetime: Duration::from_secs(60),
            minted_at_offset: -600,
            ..Default::default()
        },
    )
    .await;

    let cases = [
        ("alg none", alg_none, "bad_signature"),
        (
            "HS256 with the RSA public key",
            hs_confused,
            "bad_signature",
        ),
        ("tampered payload", tampered, "bad_signature"),
        ("unknown kid", unknown_kid, "unknown_kid"),
        ("wrong issuer", wrong_issuer, "wrong_issuer"),
        ("expired", expired, "expired"),
        ("garbage", "not-a-jwt".to_string(), "malformed"),
    ];
    for (name, token, reason) in cases {
        let before = verify.decisions(reason).await;
        let resp = verify.answer(Some(&token), "mcp.example.com").await;
        assert_eq!(resp.status(), 401, "{name}");
        let challenge = header(&resp, "www-authenticate");
        assert!(
            challenge
                .starts_with(r#"Bearer realm="mcp", error="invalid_token", error_description=""#),
            "{name}: {challenge}"
        );
        assert!(
            challenge.contains(&format!(r#"resource_metadata="{PRM}""#)),
            "{name}"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{name}");
        assert_eq!(
            verify.decisions(reason).await,
            before + 1.0,
            "{name} counted as {reason}"
        );
    }
    // The genuine token still works: nothing above poisoned a cache.
    assert_eq!(verify.status(&good).await, 200);
}

fn settings_with_new_key(redis: &RedisServer) -> mcp_oauth_gateway::config::Settings {
    use mcp_oauth_gateway::token::keys::{KeyMaterial, SigningAlgorithm};
    let (_, pem) = KeyMaterial::generate(SigningAlgorithm::Rs256).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    crate::support::helpers::settings(&base_env(redis).with("JWT_PRIVATE_KEY_B64", b64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_is_checked_per_resource_host() {
    let (redis, store, verify) = verify_alone(&[]).await;
    let (token, _) = verify.mint(&store, TokenSpec::default()).await;

    // Valid for mcp.example.com only.
    assert_eq!(verify.status(&token).await, 200);
    let resp = verify.answer(Some(&token), "other.example.com").await;
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "www-authenticate").contains(
        r#"resource_metadata="https://other.example.com/.well-known/oauth-protected-resource/mcp""#
    ));
    // A host that is not ours: refused, and no URL of that host is echoed back.
    let resp = verify.answer(Some(&token), "evil.com").await;
    assert_eq!(resp.status(), 401);
    assert!(!header(&resp, "www-authenticate").contains("evil.com"));
    // Plain http is another resource.
    let resp = ask_bare(&verify, reqwest::Method::GET, "http", &token).await;
    assert_eq!(resp.status(), 401);
    // The Host header is never trusted in place of X-Forwarded-Host.
    let resp = crate::support::helpers::http()
        .get(format!("{}/verify", verify.base))
        .header("Host", "mcp.example.com")
        .header("X-Forwarded-Proto", "https")
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(verify.decisions("wrong_audience").await, 4.0);

    // Tokens whose audience is only the issuer (clients that sent no `resource`).
    let issuer_only = TokenSpec {
        audience: vec![],
        ..Default::default()
    };
    let (issuer_token, _) = verify.mint(&store, issuer_only.clone()).await;
    assert_eq!(verify.status(&issuer_token).await, 401);
    let lenient = verify_on(&redis, &store, &[("ACCEPT_ISSUER_AUDIENCE", "true")]).await;
    assert_eq!(lenient.status(&issuer_token).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_is_403_with_the_needed_scope() {
    let (_redis, store, verify) =
        verify_alone(&[("REQUIRED_SCOPES", "mcp; mcp.example.com/mcp=mcp:write")]).await;
    let (reader, _) = verify.mint(&store, TokenSpec::default()).await;
    let resp = verify.answer(Some(&reader), "mcp.example.com").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        header(&resp, "www-authenticate"),
        format!(
            r#"Bearer error="insufficient_scope", error_description="the token lacks a scope this resource requires", scope="mcp mcp:write", resource_metadata="{PRM}""#
        )
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    let writer = TokenSpec {
        scope: "mcp mcp:write",
        ..Default::default()
    };
    let (writer, _) = verify.mint(&store, writer).await;
    assert_eq!(verify.status(&writer).await, 200);
    assert_eq!(verify.decisions("insufficient_scope").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_replica_within_a_second() {
    let (redis, store, a) = verify_alone(&[]).await;
    let b = Verify::start(&base_env(&redis), redis.store()).await;
    let (token, jti) = a.mint(&store, TokenSpec::default()).await;
    // Both replicas have the token cached as live.
    for _ in 0..3 {
        assert_eq!(a.status(&token).await, 200);
        assert_eq!(b.status(&token).await, 200);
    }
    assert!(store.revoke_token(&jti, &Events::none()).await.unwrap());
    for replica in [&a, &b] {
        let waited = replica
            .until_status(&token, 401, Duration::from_secs(1))
            .await
            .expect("refused within a second");
        assert!(waited < Duration::from_secs(1));
        let resp = replica.answer(Some(&token), "mcp.example.com").await;
        assert!(header(&resp, "www-authenticate").contains("revoked"));
    }
    assert!(a.metric("mcp_gateway_revocations_received_total").await >= 1.0);
    assert!(b.metric("mcp_gateway_revocations_received_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_clears_the_cache() {
    let (redis, store, verify) = verify_alone(&[]).await;
    let (token, jti) = verify.mint(&store, TokenSpec::default()).await;
    assert_eq!(verify.status(&token).await, 200);
    assert_eq!(verify.status(&token).await, 200); // now served from the liveness cache

    assert_eq!(redis.kill_pubsub_clients().await, 1);
    // Revoked while the replica was not listening: the message is missed.
    let mut conn = redis.conn().await;
    let _: () = conn.del(format!("oauth:token:{jti}")).await.unwrap();

    // The first reconnect: the counter goes past 0.
    verify.wait_feed_resubscribed(0.0).await;
    assert_eq!(verify.status(&token).await, 401);
    assert_eq!(verify.decisions("revoked").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_and_recovery_needs_no_restart() {
    let (mut redis, store, verify) = verify_alone(&[]).await;
    let (token, _) = verify.mint(&store, TokenSpec::default()).await;
    assert_eq!(verify.status(&token).await, 200);

    redis.stop().await;
    wait_for(Duration::from_secs(5), || async {
        crate::support::helpers::http()
            .get(format!("{}/ready", verify.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await
    .expect("not ready without redis");
    let resp = verify.answer(Some(&token), "mcp.example.com").await;
    assert_eq!(resp.status(), 503, "never 401 for an outage");
    assert_eq!(header(&resp, "retry-after"), "2");
    assert!(resp.headers().get("www-authenticate").is_none());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(verify.metric("mcp_gateway_redis_errors_total").await >= 1.0);

    redis.restart().await;
    verify
        .until_status(&token, 200, Duration::from_secs(10))
        .await
        .expect("serves again once redis is back");
    verify.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_failure_mode_serves_cached_positives_only() {
    let (mut redis, store, verify) = verify_alone(&[("REDIS_FAILURE_MODE", "cached")]).await;
    let (seen, _) = verify.mint(&store, TokenSpec::default()).await;
    let (unseen, _) = verify.mint(&store, TokenSpec::default()).await;
    assert_eq!(verify.status(&seen).await, 200);
    redis.stop().await;
    wait_for(Duration::from_secs(5), || async {
        verify.metric("mcp_gateway_revocation_feed_up").await == 0.0
    })
    .await
    .expect("feed noticed the outage");
    assert_eq!(verify.status(&seen).await, 200);
    assert_eq!(verify.status(&unseen).await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_make_one_redis_lookup() {
    let (redis, store, verify) = verify_alone(&[]).await;
    let (token, _) = verify.mint(&store, TokenSpec::default()).await;
    redis.reset_stats().await;

    let statuses = join_all((0..100).map(|_| verify.status(&token))).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        redis.command_calls("exists").await,
        1,
        "one EXISTS for 100 concurrent misses"
    );
    // And warm requests make none.
    for _ in 0..50 {
        assert_eq!(verify.status(&token).await, 200);
    }
    assert_eq!(redis.command_calls("exists").await, 1);
    assert_eq!(redis.command_calls("get").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_binding_uses_the_right_most_untrusted_hop() {
    let (_redis, store, verify) =
        verify_alone(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]).await;
    let spec = TokenSpec {
        bind_ip: Some("203.0.113.7".into()),
        ..Default::default()
    };
    let (token, _) = verify.mint(&store, spec).await;
    let with_xff = |xff: &'static str| verify.answer_with(&token, "X-Forwarded-For", xff);
    // The real client behind two trusted proxies.
    assert_eq!(with_xff("203.0.113.7, 10.0.0.5").await.status(), 200);
    // An attacker at 198.51.100.9 writes the victim's address in front of their own.
    let resp = with_xff("203.0.113.7, 198.51.100.9, 10.0.0.5").await;
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "www-authenticate").contains("client address"));
    assert_eq!(with_xff("203.0.113.7, 198.51.100.9").await.status(), 401);
    // No address at all cannot satisfy a binding.
    assert_eq!(verify.status(&token).await, 401);
    assert_eq!(verify.decisions("binding_mismatch").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_agent_and_certificate_bindings() {
    // The forwarded certificate is believed from the proxy (this test) only.
    let (_redis, store, verify) = verify_alone(&[("TRUSTED_PROXIES", "127.0.0.1")]).await;

    let ua_spec = TokenSpec {
        bind_ua: Some(sha256_b64url(b"claude-code/1.0")),
        ..Default::default()
    };
    let (ua_token, _) = verify.mint(&store, ua_spec).await;
    let with_ua = |ua: &'static str| verify.answer_with(&ua_token, "User-Agent", ua);
    assert_eq!(with_ua("claude-code/1.0").await.status(), 200);
    assert_eq!(with_ua("curl/8.0").await.status(), 401);

    // Traefik's passTLSClientCert: the PEM body, URL-escaped, no delimiters.
    let der: Vec<u8> = (0..600u32).map(|i| (i * 7 % 251) as u8).collect();
    let body = base64::engine::general_purpose::STANDARD.encode(&der);
    let escaped: String =
        percent_encoding::utf8_percent_encode(&body, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let thumbprint = b64url(&<sha2::Sha256 as sha2::Digest>::digest(&der));
    let cert_spec = TokenSpec {
        cert_thumbprint: Some(thumbprint),
        ..Default::default()
    };
    let (cert_token, _) = verify.mint(&store, cert_spec).await;
    let cert_header = "X-Forwarded-Tls-Client-Cert";
    let ok = verify.answer_with(&cert_token, cert_header, &escaped).await;
    assert_eq!(ok.status(), 200);
    let other_body = base64::engine::general_purpose::STANDARD.encode(b"another certificate");
    let wrong = verify
        .answer_with(&cert_token, cert_header, &other_body)
        .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(verify.status(&cert_token).await, 401);
    assert_eq!(verify.decisions("binding_mismatch").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_required_refuses_tokens_without_a_second_factor() {
    let (_redis, store, verify) = verify_alone(&[("TOKEN_MFA_REQUIRED", "true")]).await;
    let (without, _) = verify.mint(&store, TokenSpec::default()).await;
    let with_otp = TokenSpec {
        amr: vec!["github".into(), "otp".into()],
        ..Default::default()
    };
    let (with, _) = verify.mint(&store, with_otp).await;
    assert_eq!(verify.status(&without).await, 401);
    assert_eq!(verify.status(&with).await, 200);
    assert_eq!(verify.decisions("mfa_required").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_removed_from_the_allow_list_is_refused_at_once() {
    let (redis, store, before) = verify_alone(&[]).await;
    let bob = TokenSpec {
        user: "bob",
        ..Default::default()
    };
    let (token, _) = before.mint(&store, bob).await;
    assert_eq!(before.status(&token).await, 200);

    // The operator removes bob; his token has weeks to live but stops working now.
    let after = verify_on(&redis, &store, &[("ALLOWED_GITHUB_USERS", "alice")]).await;
    assert_eq!(after.status(&token).await, 401);
    assert_eq!(after.decisions("user_not_allowed").await, 1.0);
    // Names are compared trimmed and case-insensitively; an empty list allows nobody.
    let upper = verify_on(&redis, &store, &[("ALLOWED_GITHUB_USERS", " BOB ")]).await;
    assert_eq!(upper.status(&token).await, 200);
    let nobody = verify_on(&redis, &store, &[("ALLOWED_GITHUB_USERS", "")]).await;
    assert_eq!(nobody.status(&token).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_resource_metadata_in_both_forms() {
    let (_redis, _, verify) = verify_alone(&[("SCOPES_SUPPORTED", "mcp mcp:write")]).await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let resp = verify
            .forwarded(reqwest::Method::GET, path, "https", "mcp.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "resource": RESOURCE,
                "authorization_servers": [ISSUER],
                "scopes_supported": ["mcp", "mcp:write"],
                "bearer_methods_supported": ["header"],
                "resource_name": "MCP server",
                "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
                "dpop_bound_access_tokens_required": false,
            })
        );
    }
    for (path, host) in [
        (
            "/.well-known/oauth-protected-resource/other",
            "mcp.example.com",
        ),
        ("/.well-known/oauth-protected-resource", "evil.com"),
    ] {
        let resp = verify
            .forwarded(reqwest::Method::GET, path, "https", host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path} on {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let (_redis, _, verify) = verify_alone(&[]).await;
    let health = crate::support::helpers::http()
        .get(format!("{}/health", verify.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value =
        body_json(crate::support::helpers::http().get(format!("{}/ready", verify.base))).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["revocation_feed"], "subscribed");
    let _ = verify.answer(None, "mcp.example.com").await;
    let text = body_text(http().get(format!("{}/metrics", verify.base))).await;
    for name in [
        "mcp_gateway_verify_decisions_total{outcome=\"denied\",reason=\"no_token\"} 1",
        "mcp_gateway_verify_decision_duration_seconds_bucket{le=\"0.000001\"}",
        "mcp_gateway_verify_cache_requests_total{cache=\"liveness\",result=\"hit\"}",
        "mcp_gateway_redis_errors_total",
        "mcp_gateway_revocation_feed_up 1",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_never_outlive_the_token() {
    let (_redis, store, verify) = verify_alone(&[]).await;
    // Expires 2 s from now (the 30 s leeway is folded into the mint offset).
    let spec = TokenSpec {
        lifetime: Duration::from_secs(60),
        minted_at_offset: -(60 + 30 - 2),
        ..Default::default()
    };
    let (token, _) = verify.mint(&store, spec).await;
    assert_eq!(verify.status(&token).await, 200);
    verify
        .refuses_within(&token, 5, "refused once expired although cached")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_scope_rules_see_the_normalised_path() {
    let (_redis, store, verify) =
        verify_alone(&[("REQUIRED_SCOPES", "mcp; /admin=mcp:admin")]).await;
    let (token, _) = verify.mint(&store, TokenSpec::default()).await;
    let with_uri = |uri: Option<&'static str>| {
        let mut req = verify
            .forwarded(reqwest::Method::GET, "/verify", "https", "mcp.example.com")
            .header("Authorization", format!("Bearer {token}"));
        if let Some(uri) = uri {
            req = req.header("X-Forwarded-Uri", uri);
        }
        req
    };
    assert_eq!(with_uri(Some("/mcp")).send().await.unwrap().status(), 200);
    // Proxies that forward the path unnormalised must not let these past the /admin rule.
    for uri in [
        "/admin",
        "/mcp/../admin",
        "/%61dmin/x",
        "//admin",
        "/mcp/%2e%2e/admin?x=/mcp",
    ] {
        let resp = with_uri(Some(uri)).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{uri}");
        assert!(
            header(&resp, "www-authenticate").contains("scope=\"mcp mcp:admin\""),
            "{uri}"
        );
    }
    // No readable path: every rule applies (fail closed).
    assert_eq!(with_uri(None).send().await.unwrap().status(), 403);
    assert_eq!(
        with_uri(Some("/bad%zz")).send().await.unwrap().status(),
        403
    );
}
