//! Metadata (RFC 8414), dynamic registration (RFC 7591) and client management (RFC 7592), and
//! CORS for browser-based clients.

use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::gateway::*;
use crate::support::header;
use crate::support::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_advertises_what_is_really_supported() {
    let gw = Gateway::start(&[]).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let doc: Value = body_json(http().get(gw.url(path))).await;
        assert_eq!(doc["issuer"], gw.issuer);
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        // client_credentials for the clients the operator creates; no JWT bearer grant
        // without a trusted issuer.
        assert_eq!(
            doc["grant_types_supported"],
            json!(["authorization_code", "refresh_token", "client_credentials"])
        );
        assert!(doc.get("authorization_grant_profiles_supported").is_none());
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!([
                "client_secret_basic",
                "client_secret_post",
                "none",
                "private_key_jwt"
            ])
        );
        // Client ID Metadata Documents: the hosted clients' way in, with the assertion
        // algorithms a private_key_jwt client may sign with.
        assert_eq!(doc["client_id_metadata_document_supported"], true);
        assert_eq!(
            doc["token_endpoint_auth_signing_alg_values_supported"],
            json!(["RS256", "ES256", "EdDSA"])
        );
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
        for endpoint in [
            "authorization_endpoint",
            "token_endpoint",
            "registration_endpoint",
            "revocation_endpoint",
            "introspection_endpoint",
            "jwks_uri",
        ] {
            assert!(
                doc[endpoint].as_str().unwrap().starts_with(&gw.issuer),
                "{endpoint}"
            );
        }
    }
    let jwks: Value = body_json(http().get(gw.url("/jwks"))).await;
    let key = &jwks["keys"][0];
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].is_string() && key.get("d").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_validates_redirect_uris_and_is_rate_limited() {
    let gw = Gateway::start(&[("RATE_LIMIT_REGISTER", "8")]).await;
    for bad in [
        "http://localhost.evil.com/cb",
        "http://example.com/cb",
        "javascript:alert(1)",
        "https://x.example/cb#f",
    ] {
        let resp = gw.register(json!({"redirect_uris": [bad]})).await;
        assert_oauth_error(resp, 400, "invalid_redirect_uri").await;
    }
    let resp = gw
        .register(
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}),
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_client_metadata").await;
    let resp = http()
        .post(gw.url("/register"))
        .body("redirect_uris=x")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_oauth_error(resp, 400, "invalid_client_metadata").await;
    let ok: Value = json_body(
        gw.register(json!({"redirect_uris": ["http://[::1]:4000/cb", "com.example.app:/cb"]}))
            .await,
    )
    .await;
    assert_eq!(ok["token_endpoint_auth_method"], "client_secret_basic");
    assert!(ok["client_id_issued_at"].is_i64());
    assert!(ok["client_secret_expires_at"].as_i64().unwrap() > 0);
    // The eighth request of this minute is still served; the ninth is refused.
    let resp = gw.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(resp.status(), 201);
    let resp = gw.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "60");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_management_follows_rfc_7592() {
    let gw = Gateway::start(&[("CLIENT_LIFETIME", "0")]).await;
    let client = gw.client("none").await;
    assert_eq!(client["client_secret_expires_at"], 0);
    let uri = client["registration_client_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let token = client["registration_access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // 401 without a token, then 404 for an unknown client, then 403 for a wrong token.
    let resp = http().get(&uri).send().await.unwrap();
    assert_eq!(header(&resp, "www-authenticate"), "Bearer realm=\"auth\"");
    assert_eq!(resp.status(), 401);
    let resp = http()
        .get(gw.url("/register/unknown"))
        .bearer_auth("whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http()
        .get(&uri)
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let read: Value = body_json(http().get(&uri).bearer_auth(&token)).await;
    assert_eq!(read["client_id"], client["client_id"]);
    assert!(read.get("registration_access_token").is_none());
    let updated: Value = body_json(http()
        .put(&uri)
        .bearer_auth(&token)
        .json(&json!({"client_id": client["client_id"], "redirect_uris": [REDIRECT, "http://localhost:5000/cb"], "token_endpoint_auth_method": "none", "client_name": "Renamed"}))).await;
    assert_eq!(updated["client_name"], "Renamed");
    assert_eq!(updated["redirect_uris"].as_array().unwrap().len(), 2);

    // DELETE removes the client and everything issued to it.
    let tokens = gw.tokens(&client).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(gw.verify.status(&access).await, 200);
    let resp = http()
        .delete(&uri)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    gw.verify
        .refuses_within(&access, 1, "access token revoked with its client")
        .await;
    let mut conn = gw.redis.conn().await;
    let keys: Vec<String> = conn.keys("oauth:*").await.unwrap();
    let id = client["client_id"].as_str().unwrap();
    let left: Vec<&String> = keys
        .iter()
        // The client's audit history stays (until AUDIT_RETENTION): it is what tells what
        // happened to it.
        .filter(|k| !mcp_oauth_gateway::store::keys::is_trail(k))
        .filter(|k| {
            k.contains(id) || k.starts_with("oauth:token:") || k.starts_with("oauth:refresh:")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let resp = gw.refresh_of(&client, &tokens).await;
    assert_oauth_error(resp, 401, "invalid_client").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_clients_get_cors_on_machine_endpoints_only() {
    let gw = Gateway::start(&[]).await;
    let preflight = http()
        .request(reqwest::Method::OPTIONS, gw.url("/token"))
        .header("Origin", "http://localhost:6274")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
    let meta = http()
        .get(gw.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&meta, "access-control-allow-origin"), "*");
    let resp = gw
        .register(json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .await;
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    // The consent page carries a CSRF token: it must never be readable cross-origin.
    let client: Value = resp.json().await.unwrap();
    let (_, challenge) = pkce();
    let b = browser();
    let consent = location(&gw.authorize(&b, &client, &challenge, &[]).await);
    let page = b.get(&consent).send().await.unwrap();
    assert!(page.headers().get("access-control-allow-origin").is_none());
}
