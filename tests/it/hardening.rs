//! Attacks on the surfaces of the second wave, each performed over HTTP and each checked to
//! change nothing: bidirectional controls in client names, resource-URI spellings past a tool
//! rule, addresses of one IPv6 /64 past the per-address limits, a forwarded client
//! certificate from a peer that is not a trusted proxy, and a code redemption that differs from
//! the one whose answer is kept.

use serde_json::{Value, json};

use crate::support::gateway::*;
use crate::support::helpers::*;

/// A client reaching the services from `local` (a loopback address).
fn from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().ok())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_bidirectional_controls_are_refused_and_names_are_isolated() {
    let gw = Gateway::start(&[]).await;
    for control in [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
    ] {
        let resp = gw
            .register(public_client(
                REDIRECT,
                json!({"client_name": format!("Claude {control}nimda")}),
            ))
            .await;
        assert_oauth_error(resp, 400, "invalid_client_metadata").await;
    }
    let mut conn = gw.redis.conn().await;
    let clients: Vec<String> = redis::AsyncCommands::keys(&mut conn, "oauth:client:*")
        .await
        .unwrap();
    assert!(clients.is_empty(), "{clients:?}");
    // What is shown is isolated from the text around it.
    let resp = gw
        .register(public_client(REDIRECT, json!({"client_name": "عميل"})))
        .await;
    let client: Value = resp.json().await.unwrap();
    let b = browser();
    let page = gw.consent_page(&b, &client, &[]).await;
    assert!(page.contains("<strong><bdi>عميل</bdi></strong>"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_protected_resource_meets_its_rule() {
    let redis = RedisServer::start().await;
    let env = base_env(&redis).with(
        "TOOL_POLICY",
        "resources/read file:///secret/*=mcp:admin; resources/read https://docs.example/private/*=mcp:admin",
    );
    let verify = Verify::start(&env, redis.store()).await;
    let mint = |scope: &'static str| {
        let verify = &verify;
        let redis = &redis;
        async move {
            let spec = TokenSpec {
                scope,
                ..Default::default()
            };
            mint_token(&verify.settings, &redis.store(), spec).await.0
        }
    };
    let plain = mint("mcp").await;
    let admin = mint("mcp:admin").await;
    let read = |token: String, uri: &'static str| {
        let verify = &verify;
        async move {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}});
            verify
                .request(Some(&token), "mcp.example.com")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for uri in [
        "file:///secret/key",
        "file:///public/../secret/key",
        "file:///public/./../secret/./key",
        "file:///public%2F..%2Fsecret/key",
        "FILE://LOCALHOST/secret/key",
        "file://localhost/secret/key",
        "file:////secret/key",
        "file:///secret//key",
        "file:///%73ecret/key",
        "file:///SECRET/key",
        "file:///secret\\key",
        "HTTPS://Docs.Example:443/private/../private/a",
        "https://docs.example./private/a",
        // Unreadable: every rule of the method applies.
        "file:///secret/%zz",
        "file:///ünïcode",
        "no scheme at all",
    ] {
        assert_eq!(read(plain.clone(), uri).await, 403, "{uri}");
        assert_eq!(read(admin.clone(), uri).await, 200, "{uri}");
    }
    for uri in [
        "file:///public/readme",
        "file:///secret/../public/readme",
        "https://docs.example/public/a",
    ] {
        assert_eq!(read(plain.clone(), uri).await, 200, "{uri}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_addresses_of_one_ipv6_64_count_as_one() {
    let gw = Gateway::start(&[
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("RATE_LIMIT_REGISTER", "10"),
        ("UNUSED_CLIENT_BUDGET_PER_ADDRESS", "8"),
        ("RATE_LIMIT_CLIENT_FAILURES", "5"),
    ])
    .await;
    let register = |address: String| {
        let gw = &gw;
        async move {
            http()
                .post(gw.url("/register"))
                .header("X-Forwarded-For", address)
                .json(&json!({
                    "redirect_uris": [REDIRECT],
                    "token_endpoint_auth_method": "client_secret_post",
                }))
                .send()
                .await
                .unwrap()
        }
    };
    // Twelve addresses of one /64: ten registrations, then 429.
    let mut statuses = Vec::new();
    let mut registered = Vec::new();
    for i in 1..=12 {
        let resp = register(format!("2001:db8:7:1::{i:x}")).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 201 {
            registered.push(resp.json::<Value>().await.unwrap());
        }
    }
    assert_eq!(&statuses[..10], &[201; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429, 429], "{statuses:?}");
    // Another /64 is another network.
    assert_eq!(register("2001:db8:7:2::1".into()).await.status(), 201);
    // Of the ten never used, the network keeps its budget of eight.
    let mut conn = gw.redis.conn().await;
    let mut kept = 0;
    for client in &registered {
        let key = format!("oauth:client:{}", client["client_id"].as_str().unwrap());
        let exists: bool = redis::AsyncCommands::exists(&mut conn, &key).await.unwrap();
        kept += usize::from(exists);
    }
    assert_eq!(kept, 8, "the /64's own oldest are evicted past its budget");

    // Failed /token requests of one client from across the /64 stop at the limit.
    let client = &registered[9];
    let mut statuses = Vec::new();
    for i in 1..=8 {
        let resp = http()
            .post(gw.url("/token"))
            .header("X-Forwarded-For", format!("2001:db8:7:1:{i:x}::9"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "guess"),
                ("client_id", client["client_id"].as_str().unwrap()),
                ("client_secret", "wrong"),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_certificate_counts_only_from_a_trusted_proxy() {
    // 127.0.0.2 is the proxy; 127.0.0.1 reaches the services directly.
    let der = b"the victim's certificate, which is no secret";
    let cert = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
    let gw = Gateway::start(&[
        ("TRUSTED_PROXIES", "127.0.0.2"),
        ("TOKEN_BIND_CERT", "true"),
    ])
    .await;
    let client = gw.client("client_secret_post").await;
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let token_request = |local: &str, form: Vec<(&'static str, String)>, with_cert: bool| {
        let mut req = from(local).post(gw.url("/token")).form(&form);
        if with_cert {
            req = req.header("X-Forwarded-Tls-Client-Cert", cert.clone());
        }
        async move { req.send().await.unwrap() }
    };
    let creds = |mut form: Vec<(&'static str, String)>| {
        form.push(("client_id", client["client_id"].as_str().unwrap().into()));
        form.push((
            "client_secret",
            client["client_secret"].as_str().unwrap().into(),
        ));
        form
    };
    // Without the proxy, there is no certificate to bind to.
    let resp = token_request(
        "127.0.0.1",
        creds(vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("code_verifier", verifier.clone()),
            ("redirect_uri", REDIRECT.into()),
        ]),
        true,
    )
    .await;
    assert_oauth_error(resp, 400, "invalid_request").await;
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let resp = token_request(
        "127.0.0.2",
        creds(vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", REDIRECT.into()),
        ]),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    // A stolen refresh token with the victim's (public) certificate, straight to auth.
    let refresh_form = || {
        creds(vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh.clone()),
        ])
    };
    let resp = token_request("127.0.0.1", refresh_form(), true).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    // The owner, through the proxy, still refreshes.
    let resp = token_request("127.0.0.2", refresh_form(), true).await;
    assert_eq!(resp.status(), 200);

    // verify: the same header from a peer that is not the proxy proves nothing.
    let access = tokens["access_token"].as_str().unwrap();
    let ask = |local: &str| {
        from(local)
            .get(format!("{}/verify", gw.verify.base))
            .header("Authorization", format!("Bearer {access}"))
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "mcp.example.com")
            .header("X-Forwarded-Uri", "/mcp")
            .header("X-Forwarded-Tls-Client-Cert", cert.clone())
            .send()
    };
    assert_eq!(ask("127.0.0.1").await.unwrap().status(), 401);
    assert_eq!(ask("127.0.0.2").await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_identical_code_exchange_gets_the_kept_answer() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    for different in [
        ("resource", "https://other.example.com/mcp"),
        ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
    ] {
        let (code, verifier) = gw.code_for(&client, &[]).await;
        let first: Value = json_body(gw.redeem(&client, &code, &verifier).await).await;
        let access = first["access_token"].as_str().unwrap().to_string();
        // The identical request, within CODE_RETRY_GRACE: the same answer.
        let again: Value = json_body(gw.redeem(&client, &code, &verifier).await).await;
        assert_eq!(again, first);
        // Any other second use of the code is a replay: refused, and what it issued revoked.
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", REDIRECT),
        ];
        form.retain(|(k, _)| *k != different.0);
        form.push(different);
        let resp = gw.token(&client, &form).await;
        assert_oauth_error(resp, 400, "invalid_grant").await;
        gw.verify
            .refuses_within(&access, 1, "the replayed code's tokens are revoked")
            .await;
    }
}
