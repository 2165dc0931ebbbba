//! Client ID Metadata Documents against a real HTTPS host the test runs
//! ([`DocumentHost`], its CA trusted through `CIMD_TEST_LOOPBACK_CA`): a public client logs in
//! with its document and nothing stored for it; lying, oversized and redirecting documents
//! are refused with RFC 6749 errors (and at /authorize with our error page, never a
//! redirect); the cache follows the host's headers, serves a stale copy while the host fails
//! and collapses concurrent fetches; a ChatGPT-shaped `private_key_jwt` client with a
//! `jwks_uri`; and without the test switch the SSRF guard refuses loopback, private and
//! link-local hosts without connecting.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::document_host::*;
use crate::support::gateway::*;
use crate::support::helpers::*;

/// A code exchange by the document client `client_id`, with a code that was never issued:
/// whether the client itself is accepted is what the answer tells.
async fn redeem_as_document(gw: &Gateway, client_id: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "x"),
        ("code_verifier", "y"),
    ];
    gw.token(&document_client(client_id), &form).await
}

/// `resp` is `invalid_client` (401) and its description names `why` (`case` says which).
async fn assert_invalid_client_for(resp: reqwest::Response, why: &str, case: &str) {
    let body = assert_oauth_error(resp, 401, "invalid_client").await;
    let description = body["error_description"].as_str().unwrap_or("");
    assert!(description.contains(why), "{case}: {description}");
}

/// A change made to a good document (the second argument: another document's URL).
type Change = fn(&mut Value, &str);

async fn authorize_status(gw: &Gateway, client_id: &str) -> (u16, String, String) {
    let (_, challenge) = pkce();
    let url = gw.authorize_url(&document_client(client_id), &challenge, &[]);
    let resp = browser().get(&url).send().await.unwrap();
    let status = resp.status().as_u16();
    let location = crate::support::header(&resp, "location");
    (status, location, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_public_client_logs_in_and_refreshes_with_its_metadata_document() {
    let host = DocumentHost::start().await;
    let id = host.publish("/oauth/client.json", &[CALLBACK], "max-age=3600");
    let gw = host.gateway(&[]).await;
    let client = document_client(&id);

    // The consent page names the document's host, and warns: the only redirect is localhost.
    let (_, challenge) = pkce();
    let url = gw.authorize_url(&client, &challenge, &[]);
    let b = browser();
    let resp = b.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 307);
    let page = b.get(location(&resp)).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("published by"), "{html}");
    assert!(
        html.contains("<strong class=\"mono\"><bdi>localhost</bdi></strong>"),
        "{html}"
    );
    assert!(html.contains("sends you back only to"), "{html}");

    // The loopback redirect of the document matches on any port (RFC 8252 §7.3).
    let tokens = gw.tokens(&client).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");
    let claims = crate::support::jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["client_id"], id);
    let refreshed = gw.refresh_of(&client, &tokens).await;
    assert_eq!(refreshed.status(), 200);
    // Nothing was registered: the document is the registration.
    assert!(
        !redis_keys(&gw.redis, "oauth:client:*")
            .await
            .iter()
            .any(|k| k.contains("https"))
    );
    // One fetch served the whole login (cached for its max-age).
    assert_eq!(host.hits("/oauth/client.json"), 1);

    // An unregistered redirect_uri: our error page, never a redirect to it.
    let mut bad = url::Url::parse(&gw.authorize_url(&client, &challenge, &[])).unwrap();
    let pairs: Vec<(String, String)> = bad
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "redirect_uri" {
                "https://evil.example/cb".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    bad.query_pairs_mut().clear().extend_pairs(pairs);
    let resp = browser().get(bad.as_str()).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());

    // A metadata-document client is not managed through RFC 7592.
    let resp = http()
        .get(gw.url(&format!("/register/{}", urlencode(&id))))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn redis_keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn documents_that_lie_or_misbehave_are_refused_and_change_nothing() {
    let host = DocumentHost::start().await;
    let gw = host.gateway(&[("CIMD_FETCH_TIMEOUT", "1")]).await;
    let good = |path: &str| public_document(&host.url(path), &[CALLBACK]);
    let mut cases: Vec<(&str, Route, &str)> = Vec::new();
    // A good document changed in one way, and what the refusal names.
    let changed: [(&str, Change, &str); 8] = [
        (
            "/wrong-id.json",
            |doc, other| doc["client_id"] = json!(other),
            "exactly its URL",
        ),
        (
            "/no-name.json",
            |doc, _| drop(doc.as_object_mut().unwrap().remove("client_name")),
            "client_name",
        ),
        (
            "/no-redirects.json",
            |doc, _| drop(doc.as_object_mut().unwrap().remove("redirect_uris")),
            "redirect_uris",
        ),
        (
            "/secret.json",
            |doc, _| doc["client_secret"] = json!("s3cret"),
            "client_secret",
        ),
        (
            "/basic.json",
            |doc, _| doc["token_endpoint_auth_method"] = json!("client_secret_basic"),
            "token_endpoint_auth_method",
        ),
        (
            "/http-redirect.json",
            |doc, _| doc["redirect_uris"] = json!(["http://evil.example/cb"]),
            "plain http",
        ),
        (
            "/big.json",
            |doc, _| doc["padding"] = json!("x".repeat(6000)),
            "bytes",
        ),
        (
            "/private.json",
            |doc, _| doc["token_endpoint_auth_method"] = json!("private_key_jwt"),
            "jwks",
        ),
    ];
    let other = host.url("/other.json");
    for (path, change, why) in changed {
        let mut doc = good(path);
        change(&mut doc, &other);
        cases.push((path, Route::json(&doc, "max-age=60"), why));
    }
    let mut big_chunked = good("/big-chunked.json");
    big_chunked["padding"] = json!("x".repeat(6000));
    cases.push((
        "/big-chunked.json",
        Route::json(&big_chunked, "max-age=60").chunked(),
        "over 5120 bytes",
    ));
    cases.push((
        "/moved.json",
        Route::redirect(&host.url("/wrong-id.json")),
        "redirects are not followed",
    ));
    cases.push(("/gone.json", Route::status(404), "404"));
    let mut not_json = Route::status(200);
    not_json.body = b"<html>hello</html>".to_vec();
    cases.push(("/not-json.json", not_json, "not JSON"));

    for (path, route, why) in cases {
        host.set(path, route);
        let id = host.url(path);
        // /authorize: our error page, no redirect anywhere.
        let (status, location, page) = authorize_status(&gw, &id).await;
        assert_eq!(status, 400, "{path}: {page}");
        assert!(location.is_empty(), "{path} redirected to {location}");
        assert!(page.contains("invalid_client"), "{path}: {page}");
        // /token: RFC 6749 JSON.
        let resp = redeem_as_document(&gw, &id).await;
        assert_invalid_client_for(resp, why, path).await;
    }
    // A host that drips its answer past the fetch timeout: a passing fault, so a retryable
    // answer (our page saying to retry; 503 at /token), never `invalid_client`.
    host.set(
        "/slow.json",
        Route::json(&good("/slow.json"), "max-age=60").delayed(Duration::from_secs(3)),
    );
    let id = host.url("/slow.json");
    let (status, location, page) = authorize_status(&gw, &id).await;
    assert_eq!(status, 503, "{page}");
    assert!(location.is_empty());
    assert!(
        page.contains("timed out") && page.contains("retry"),
        "{page}"
    );
    let resp = redeem_as_document(&gw, &id).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    // URLs that cannot be document ids are refused before any fetch.
    for id in [
        host.url("/a/../oauth/client.json"),
        format!("https://localhost:{}/", host.port),
        format!("https://localhost:{}/c.json#frag", host.port),
    ] {
        let (status, _, page) = authorize_status(&gw, &id).await;
        assert_eq!(status, 400, "{id}: {page}");
    }
    assert_eq!(host.hits("/a/../oauth/client.json") + host.hits("/"), 0);
    assert!(redis_keys(&gw.redis, "oauth:client:*").await.is_empty());
}

#[tokio::test]
async fn the_cache_follows_the_host_serves_stale_on_failure_and_fetches_once_for_many() {
    let host = DocumentHost::start().await;
    let gw = host
        .gateway(&[("CIMD_MIN_AGE", "1"), ("CIMD_STALE_IF_ERROR", "60")])
        .await;
    let path = "/slow.json";
    let (id, document) = host.serve_document(path, "max-age=1");
    host.set(path, document.delayed(Duration::from_millis(300)));
    // 20 logins start at once: one fetch answers them all.
    let pages = futures_util::future::join_all((0..20).map(|_| authorize_status(&gw, &id))).await;
    assert!(pages.iter().all(|(status, ..)| *status == 307), "{pages:?}");
    assert_eq!(host.hits(path), 1);

    // Past max-age the host fails: the cached copy still serves (and the metric says so).
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    host.set(path, Route::status(503));
    let (status, ..) = authorize_status(&gw, &id).await;
    assert_eq!(status, 307);
    assert_eq!(host.hits(path), 2);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("mcp_gateway_cimd_fetches_total{result=\"stale\"} 1"),
        "{metrics}"
    );
    // The host's own answer, 404, ends the client at once.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    host.set(path, Route::status(404));
    let (status, ..) = authorize_status(&gw, &id).await;
    assert_eq!(status, 400);
    // And a document served again is used again.
    host.serve_document(path, "max-age=600");
    let (status, ..) = authorize_status(&gw, &id).await;
    assert_eq!(status, 307);
}

#[tokio::test]
async fn a_chatgpt_shaped_client_authenticates_with_private_key_jwt_from_its_jwks_uri() {
    let host = DocumentHost::start().await;
    let key = ClientKey::generate("key-1");
    host.set(
        "/jwks.json",
        Route::json(&json!({"keys": [key.jwk()]}), "max-age=3600"),
    );
    let id = host.url("/oauth/abc123/client.json");
    let document = json!({
        "client_id": id,
        "client_name": "ChatGPT",
        "redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect", REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": host.url("/jwks.json"),
    });
    host.set(
        "/oauth/abc123/client.json",
        Route::json(&document, "max-age=3600"),
    );
    // CIMD_MIN_AGE also bounds how often an unknown kid refetches the jwks_uri.
    let gw = host.gateway(&[("CIMD_MIN_AGE", "1")]).await;
    let token_endpoint = gw.url("/token");
    let client = json!({"client_id": id, "token_endpoint_auth_method": "private_key_jwt"});
    let (code, verifier) = gw.code_for(&client, &[]).await;

    let exchange = |assertion: String| {
        let form = vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".into(), code.clone()),
            ("code_verifier".into(), verifier.clone()),
            ("redirect_uri".into(), REDIRECT.into()),
            ("client_id".into(), id.clone()),
            (
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            ("client_assertion".into(), assertion),
        ];
        http().post(gw.url("/token")).form(&form).send()
    };
    // Without an assertion, with a wrong audience, or signed by a key the document does not
    // publish: invalid_client, and the code is still good.
    let no_assertion = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &verifier),
                ("client_id", &id),
            ],
        )
        .await;
    assert_oauth_error(no_assertion, 401, "invalid_client").await;
    let wrong_aud = exchange(key.assertion(&id, "https://elsewhere.example/token", json!({})))
        .await
        .unwrap();
    assert_invalid_client_for(wrong_aud, "aud", "a wrong audience").await;
    let stranger = ClientKey::generate("key-1");
    let forged = exchange(stranger.assertion(&id, &token_endpoint, json!({})))
        .await
        .unwrap();
    assert_oauth_error(forged, 401, "invalid_client").await;
    let other_client =
        exchange(key.assertion("https://other.example/c.json", &token_endpoint, json!({})))
            .await
            .unwrap();
    assert_oauth_error(other_client, 401, "invalid_client").await;

    // The real assertion: tokens. The same assertion again: its jti was used.
    let assertion = key.assertion(&id, &token_endpoint, json!({}));
    let ok = exchange(assertion.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    let tokens: Value = ok.json().await.unwrap();
    let replay = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", id.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ],
        )
        .await;
    assert_invalid_client_for(replay, "jti", "a replayed assertion").await;

    // The client rotates its key: a new kid is fetched from the jwks_uri, and refresh works
    // with the issuer as audience (RFC 7523bis), client_id left to the assertion.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let rotated = ClientKey::generate("key-2");
    host.set(
        "/jwks.json",
        Route::json(&json!({"keys": [rotated.jwk()]}), "max-age=3600"),
    );
    let refreshed = http()
        .post(gw.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            (
                "client_assertion",
                rotated.assertion(&id, &gw.issuer, json!({})).as_str(),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        refreshed.status(),
        200,
        "{} (jwks fetched {} times)",
        refreshed.text().await.unwrap(),
        host.hits("/jwks.json")
    );
    assert_eq!(host.hits("/jwks.json"), 2);
}

/// Without `CIMD_TEST_LOOPBACK_CA` (as deployed): documents on loopback, private, link-local
/// (cloud metadata) and IPv4-in-IPv6 addresses are refused before any connection, and the
/// switch itself is refused unless the issuer is a loopback URL.
#[tokio::test]
async fn without_the_test_switch_the_ssrf_guard_refuses_internal_addresses() {
    let host = DocumentHost::start().await;
    let id = host.publish("/client.json", &[CALLBACK], "max-age=60");
    let gw = Gateway::start(&[]).await;
    let port = host.port;
    for (client_id, why) in [
        (id.clone(), "loopback"),
        (format!("https://127.0.0.1:{port}/client.json"), "loopback"),
        (format!("https://[::1]:{port}/client.json"), "loopback"),
        (
            format!("https://[::ffff:7f00:1]:{port}/client.json"),
            "loopback",
        ),
        ("https://10.1.2.3/client.json".to_string(), "private"),
        ("https://192.168.0.10/client.json".to_string(), "private"),
        (
            "https://169.254.169.254/latest/meta-data".to_string(),
            "link-local",
        ),
        ("https://100.64.0.1/client.json".to_string(), "CGNAT"),
        (
            "https://[fd00:ec2::254]/client.json".to_string(),
            "unique-local",
        ),
    ] {
        let resp = redeem_as_document(&gw, &client_id).await;
        assert_invalid_client_for(resp, why, &client_id).await;
        let (status, location, _) = authorize_status(&gw, &client_id).await;
        assert_eq!(status, 400);
        assert!(location.is_empty());
    }
    assert_eq!(
        host.hits("/client.json"),
        0,
        "no connection reached the host"
    );

    // The switch needs a loopback issuer: a deployed gateway cannot turn it on.
    let ca = host.ca_file.to_string_lossy().to_string();
    let source = base_env(&gw.redis)
        .with("ISSUER_URL", "https://auth.example.com")
        .with("CIMD_TEST_LOOPBACK_CA", ca.as_str());
    let err = mcp_oauth_gateway::config::Settings::load(&source).unwrap_err();
    assert!(err.to_string().contains("CIMD_TEST_LOOPBACK_CA"), "{err}");

    // Operators can turn documents off, or allow only some hosts.
    let off = Gateway::start(&[("CIMD_ENABLED", "false")]).await;
    let doc: Value =
        body_json(http().get(off.url("/.well-known/oauth-authorization-server"))).await;
    assert_eq!(doc["client_id_metadata_document_supported"], false);
    let (status, ..) = authorize_status(&off, &id).await;
    assert_eq!(status, 400);
    let ca = host.ca_file.to_string_lossy().to_string();
    let only = Gateway::start(&[
        ("CIMD_TEST_LOOPBACK_CA", ca.as_str()),
        ("CIMD_ALLOWED_HOSTS", "claude.ai, *.vscode.dev"),
    ])
    .await;
    let (status, _, page) = authorize_status(&only, &id).await;
    assert_eq!(status, 400);
    assert!(page.contains("not accepted here"), "{page}");
    let denied = Gateway::start(&[
        ("CIMD_TEST_LOOPBACK_CA", ca.as_str()),
        ("CIMD_DENIED_HOSTS", "localhost"),
    ])
    .await;
    let (status, ..) = authorize_status(&denied, &id).await;
    assert_eq!(status, 400);
    assert_eq!(host.hits("/client.json"), 0);
}

/// The host lists compare hosts in one canonical form: a trailing dot, upper case, a
/// percent-escape or the Unicode spelling of a name never steps around a deny or allow list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_denied_host_gets_past_the_list() {
    let host = DocumentHost::start().await;
    let ca = host.ca_file.to_string_lossy().to_string();
    let port = host.port;
    for denied in ["localhost", "LocalHost.", "*.localhost, localhost.."] {
        let gw = Gateway::start(&[
            ("CIMD_TEST_LOOPBACK_CA", ca.as_str()),
            ("CIMD_DENIED_HOSTS", denied),
        ])
        .await;
        for spelling in [
            format!("https://localhost:{port}/c.json"),
            format!("https://localhost.:{port}/c.json"),
            format!("https://LOCALHOST.:{port}/c.json"),
            format!("https://%6Cocalhost:{port}/c.json"),
        ] {
            let doc = public_document(&spelling, &[CALLBACK]);
            host.set("/c.json", Route::json(&doc, "max-age=60"));
            let (status, _, page) = authorize_status(&gw, &spelling).await;
            assert_eq!(status, 400, "{denied}: {spelling}");
            assert!(
                page.contains("not accepted here") || page.contains("invalid_client"),
                "{page}"
            );
        }
    }
    assert_eq!(
        host.hits("/c.json"),
        0,
        "nothing was fetched from a denied host"
    );
    // An allow-list written with a trailing dot or in Unicode allows the host as it is.
    let gw = Gateway::start(&[
        ("CIMD_TEST_LOOPBACK_CA", ca.as_str()),
        ("CIMD_ALLOWED_HOSTS", "LOCALHOST., bücher.example"),
    ])
    .await;
    let id = host.publish("/ok.json", &[CALLBACK], "max-age=60");
    let (status, ..) = authorize_status(&gw, &id).await;
    assert_eq!(status, 307);
}

/// A document whose name carries bidirectional controls is refused like a registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_name_that_reads_otherwise_is_refused() {
    let host = DocumentHost::start().await;
    let gw = host.gateway(&[]).await;
    let id = host.url("/rlo.json");
    let mut doc = public_document(&id, &[CALLBACK]);
    doc["client_name"] = json!("Claude \u{202E}tnelav\u{202C}");
    host.set("/rlo.json", Route::json(&doc, "max-age=60"));
    let (status, _, page) = authorize_status(&gw, &id).await;
    assert_eq!(status, 400);
    assert!(page.contains("bidirectional"), "{page}");
}
