//! DPoP (RFC 9449) over HTTP: the authorization server binds what it issues to the proof's
//! key, verify checks every proof against the original request and the token, and each attack
//! on either side is refused and changes nothing.

use serde_json::{Value, json};

use crate::support::dpop::{DpopKey, ath, now};
use crate::support::gateway::{Gateway, REDIRECT, assert_oauth_error};
use crate::support::helpers::*;
use crate::support::{header, jwt_claims};

const MCP_URL: &str = "https://mcp.example.com/mcp";

/// A code exchange for `client` that carries `proof` (when given) as its `DPoP` header.
async fn redeem_with(gw: &Gateway, client: &Value, proofs: &[&str]) -> reqwest::Response {
    let (code, verifier) = gw.code_for(client, &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let headers: Vec<(&str, &str)> = proofs.iter().map(|p| ("DPoP", *p)).collect();
    gw.as_client_with("/token", client, &form, &headers).await
}

/// A login of `client` whose code exchange carries a proof of `key`: the token answer.
async fn dpop_login(gw: &Gateway, client: &Value, key: &DpopKey) -> Value {
    let proof = key.proof("POST", &gw.url("/token"), None, json!({}));
    json_body(redeem_with(gw, client, &[&proof]).await).await
}

/// A refresh with `proof` that must succeed: the new tokens.
async fn refreshed_with(gw: &Gateway, client: &Value, refresh_token: &str, proof: &str) -> Value {
    let resp = refresh_with(gw, client, refresh_token, Some(proof)).await;
    assert_eq!(resp.status(), 200);
    json_body(resp).await
}

/// The `cnf.jkt` of a token answer's access token.
fn bound_key(tokens: &Value) -> Value {
    jwt_claims(tokens["access_token"].as_str().unwrap())["cnf"]["jkt"].clone()
}

async fn refresh_with(
    gw: &Gateway,
    client: &Value,
    refresh_token: &str,
    proof: Option<&str>,
) -> reqwest::Response {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    let headers: Vec<(&str, &str)> = proof.iter().map(|p| ("DPoP", *p)).collect();
    gw.as_client_with("/token", client, &form, &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_server_binds_tokens_to_the_proof_key() {
    let gw = Gateway::start(&[]).await;
    let meta = body_json(http().get(gw.url("/.well-known/oauth-authorization-server"))).await;
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "RS256", "PS256"])
    );
    let token_url = gw.url("/token");
    let client = gw.client("none").await;
    let key = DpopKey::generate();

    let tokens = dpop_login(&gw, &client, &key).await;
    assert_eq!(tokens["token_type"], "DPoP", "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(bound_key(&tokens), key.jkt());
    let refresh = tokens["refresh_token"].as_str().unwrap();
    // Introspection says how the token is to be presented (RFC 9449 §6.2).
    let info = json_body(
        gw.as_client("/introspect", &client, &[("token", access)])
            .await,
    )
    .await;
    assert_eq!(info["token_type"], "DPoP", "{info}");
    assert_eq!(info["cnf"]["jkt"], key.jkt());

    // A public client's refresh token is bound to the key (§5): not without a proof, not with
    // another key's, and a proof for another URL or method is no proof at all.
    let thief = DpopKey::generate();
    let stolen = [
        refresh_with(&gw, &client, refresh, None).await,
        refresh_with(
            &gw,
            &client,
            refresh,
            Some(&thief.proof("POST", &token_url, None, json!({}))),
        )
        .await,
    ];
    for resp in stolen {
        assert_oauth_error(resp, 400, "invalid_grant").await;
    }
    for (change, what) in [
        (json!({"htu": gw.url("/revoke")}), "htu"),
        (json!({"htm": "GET"}), "htm"),
        (json!({"iat": now() - 400}), "iat"),
        (json!({"jti": null}), "jti"),
    ] {
        let proof = key.proof("POST", &token_url, None, change);
        let body = assert_oauth_error(
            refresh_with(&gw, &client, refresh, Some(&proof)).await,
            400,
            "invalid_dpop_proof",
        )
        .await;
        assert!(
            body["error_description"].as_str().unwrap().contains(what),
            "{what}: {body}"
        );
    }
    // The right key refreshes, and its proof is spent.
    let proof = key.proof("POST", &token_url, None, json!({}));
    let refreshed = refreshed_with(&gw, &client, refresh, &proof).await;
    assert_eq!(refreshed["token_type"], "DPoP");
    assert_eq!(bound_key(&refreshed), key.jkt());
    let again = refresh_with(
        &gw,
        &client,
        refreshed["refresh_token"].as_str().unwrap(),
        Some(&proof),
    )
    .await;
    let body = assert_oauth_error(again, 400, "invalid_dpop_proof").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("used before")
    );

    // Two DPoP headers are no proof.
    let (a, b) = (
        key.proof("POST", &token_url, None, json!({})),
        key.proof("POST", &token_url, None, json!({})),
    );
    assert_oauth_error(
        redeem_with(&gw, &client, &[&a, &b]).await,
        400,
        "invalid_dpop_proof",
    )
    .await;

    // Without a proof the same client gets a bearer token, unless it registered that it
    // always sends one.
    let bearer = json_body(redeem_with(&gw, &client, &[]).await).await;
    assert_eq!(bearer["token_type"], "Bearer");
    assert!(jwt_claims(bearer["access_token"].as_str().unwrap())["cnf"].is_null());
    let strict = json_body(
        gw.register(
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
            "dpop_bound_access_tokens": true}),
        )
        .await,
    )
    .await;
    assert_eq!(strict["dpop_bound_access_tokens"], true);
    assert_oauth_error(
        redeem_with(&gw, &strict, &[]).await,
        400,
        "invalid_dpop_proof",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_clients_refresh_token_is_not_bound_to_its_proof_key() {
    let gw = Gateway::start(&[]).await;
    let token_url = gw.url("/token");
    let client = gw.client("client_secret_basic").await;
    let key = DpopKey::generate();
    let tokens = dpop_login(&gw, &client, &key).await;
    assert_eq!(tokens["token_type"], "DPoP");
    // Its own authentication holds the refresh token (§5): a new key binds the new token.
    let other = DpopKey::generate();
    let proof = other.proof("POST", &token_url, None, json!({}));
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let refreshed = refreshed_with(&gw, &client, refresh, &proof).await;
    assert_eq!(bound_key(&refreshed), other.jkt());
}

/// `/verify` as Traefik asks it for `POST https://mcp.example.com/mcp`, with the token as
/// `scheme` and these `DPoP` headers.
async fn ask(verify: &Verify, scheme: &str, token: &str, proofs: &[&str]) -> reqwest::Response {
    let mut req = verify
        .request(None, "mcp.example.com")
        .header("Authorization", format!("{scheme} {token}"));
    for proof in proofs {
        req = req.header("DPoP", *proof);
    }
    req.send().await.unwrap()
}

/// A 401 with the DPoP challenge and `error`.
fn assert_dpop_refusal(resp: &reqwest::Response, error: &str, case: &str) {
    assert_eq!(resp.status(), 401, "{case}");
    let challenges: Vec<String> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        challenges[0].starts_with("DPoP algs=\"ES256 EdDSA RS256 PS256\"")
            && challenges[0].contains(&format!("error=\"{error}\"")),
        "{case}: {challenges:?}"
    );
    assert!(
        challenges
            .iter()
            .any(|c| c.starts_with("Bearer ") && c.contains("resource_metadata")),
        "{case}: {challenges:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_accepts_a_valid_proof_and_refuses_every_malformed_one() {
    let (_redis, store, verify) = verify_alone(&[]).await;
    let key = DpopKey::generate();
    let spec = TokenSpec::dpop(key.jkt());
    let (token, _) = verify.mint(&store, spec).await;
    let (other_token, _) = verify.mint(&store, TokenSpec::dpop(key.jkt())).await;
    let proof = |change: Value| key.proof("POST", MCP_URL, Some(&token), change);

    let ok = ask(&verify, "DPoP", &token, &[&proof(json!({}))]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-user-name"), "alice");
    // The scheme's case, and a query the proof leaves out (§4.3: htu without query).
    let with_query = verify
        .request(None, "mcp.example.com")
        .header("X-Forwarded-Uri", "/mcp?session=1")
        .header("Authorization", format!("dpop {token}"))
        .header("DPoP", proof(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(with_query.status(), 200);

    // The token stolen and presented as a bearer token (a downgrade).
    let resp = verify.answer(Some(&token), "mcp.example.com").await;
    assert_dpop_refusal(&resp, "invalid_token", "bearer downgrade");

    let thief = DpopKey::generate();
    let mut private = key.key.jwk();
    private["d"] = json!("c2VjcmV0");
    let none = {
        let b64 = |v: &Value| mcp_oauth_gateway::token::b64url(v.to_string().as_bytes());
        let claims =
            json!({"jti": "n", "htm": "POST", "htu": MCP_URL, "iat": now(), "ath": ath(&token)});
        format!(
            "{}.{}.",
            b64(&json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.key.jwk()})),
            b64(&claims)
        )
    };
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(key.key.jwk()).unwrap());
        let claims =
            json!({"jti": "h", "htm": "POST", "htu": MCP_URL, "iat": now(), "ath": ath(&token)});
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap()
    };
    let replayed = proof(json!({}));
    assert_eq!(
        ask(&verify, "DPoP", &token, &[&replayed]).await.status(),
        200
    );
    let cases: Vec<(&str, String)> = vec![
        ("no proof", String::new()),
        (
            "another URL",
            proof(json!({"htu": "https://mcp.example.com/other"})),
        ),
        (
            "another host",
            proof(json!({"htu": "https://evil.example.com/mcp"})),
        ),
        ("another method", proof(json!({"htm": "GET"}))),
        (
            "another token",
            key.proof("POST", MCP_URL, Some(&other_token), json!({})),
        ),
        (
            "another key",
            thief.proof("POST", MCP_URL, Some(&token), json!({})),
        ),
        ("iat too old", proof(json!({"iat": now() - 301}))),
        ("iat ahead", proof(json!({"iat": now() + 301}))),
        ("no ath", proof(json!({"ath": null}))),
        ("no jti", proof(json!({"jti": null}))),
        ("alg none", none),
        ("HS256", hs256),
        (
            "private key in jwk",
            key.signed_raw(
                &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}),
                &jwt_claims(&proof(json!({}))),
            ),
        ),
        ("replayed", replayed),
    ];
    for (case, proof) in &cases {
        let proofs: Vec<&str> = if proof.is_empty() {
            vec![]
        } else {
            vec![proof.as_str()]
        };
        let resp = ask(&verify, "DPoP", &token, &proofs).await;
        assert_dpop_refusal(&resp, "invalid_dpop_proof", case);
    }
    // A second DPoP header, even beside a valid proof.
    let (a, b) = (proof(json!({})), proof(json!({})));
    let resp = ask(&verify, "DPoP", &token, &[&a, &b]).await;
    assert_dpop_refusal(&resp, "invalid_dpop_proof", "two DPoP headers");
    // The thief's own valid proof for a token bound to no key.
    let (unbound, _) = verify.mint(&store, TokenSpec::default()).await;
    let own = thief.proof("POST", MCP_URL, Some(&unbound), json!({}));
    let resp = ask(&verify, "DPoP", &unbound, &[&own]).await;
    assert_dpop_refusal(&resp, "invalid_dpop_proof", "an unbound token under DPoP");
    assert_eq!(
        verify.status(&unbound).await,
        200,
        "as a bearer token it works"
    );
    assert_eq!(
        verify.decisions("invalid_dpop_proof").await,
        (cases.len() + 2) as f64
    );
    assert_eq!(verify.decisions("dpop_required").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tighter_iat_window_is_honoured_and_a_wider_one_refused() {
    let (redis, store, verify) = verify_alone(&[("DPOP_IAT_WINDOW", "30s")]).await;
    let key = DpopKey::generate();
    let spec = TokenSpec::dpop(key.jkt());
    let (token, _) = verify.mint(&store, spec).await;
    let at = |offset: i64| {
        key.proof(
            "POST",
            MCP_URL,
            Some(&token),
            json!({"iat": now() + offset}),
        )
    };
    assert_eq!(
        ask(&verify, "DPoP", &token, &[&at(-20)]).await.status(),
        200
    );
    assert_eq!(ask(&verify, "DPoP", &token, &[&at(20)]).await.status(), 200);
    assert_eq!(
        ask(&verify, "DPoP", &token, &[&at(-40)]).await.status(),
        401
    );
    assert_eq!(ask(&verify, "DPoP", &token, &[&at(40)]).await.status(), 401);
    let wide = base_env(&redis).with("DPOP_IAT_WINDOW", "10m");
    let err = mcp_oauth_gateway::config::Settings::load(&wide).unwrap_err();
    assert_eq!(err.var, "DPOP_IAT_WINDOW");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_server_nonces_a_proof_needs_a_current_one_from_any_replica() {
    // Auth and verify seal nonces with a key derived from the signing key they share.
    let gw = Gateway::start(&[("DPOP_NONCE", "true"), ("DPOP_IAT_WINDOW", "3s")]).await;
    let token_url = gw.url("/token");
    let client = gw.client("none").await;
    let key = DpopKey::generate();

    // The authorization server answers the first proof with use_dpop_nonce (§8).
    let first = redeem_with(
        &gw,
        &client,
        &[&key.proof("POST", &token_url, None, json!({}))],
    )
    .await;
    let nonce = header(&first, "dpop-nonce");
    assert!(!nonce.is_empty());
    assert_oauth_error(first, 400, "use_dpop_nonce").await;
    let with_nonce = key.proof("POST", &token_url, None, json!({"nonce": nonce}));
    let tokens = json_body(redeem_with(&gw, &client, &[&with_nonce]).await).await;
    assert_eq!(tokens["token_type"], "DPoP", "{tokens}");
    let token = tokens["access_token"].as_str().unwrap();

    // verify asks for its own (§9) and takes one auth made too: no state is shared.
    let verify = &gw.verify;
    let resp = ask(
        verify,
        "DPoP",
        token,
        &[&key.proof("POST", MCP_URL, Some(token), json!({}))],
    )
    .await;
    assert_dpop_refusal(&resp, "use_dpop_nonce", "no nonce at verify");
    let verify_nonce = header(&resp, "dpop-nonce");
    for nonce in [&verify_nonce, &nonce] {
        let proof = key.proof("POST", MCP_URL, Some(token), json!({"nonce": nonce}));
        assert_eq!(ask(verify, "DPoP", token, &[&proof]).await.status(), 200);
    }
    // A nonce that is not ours, or one past its lifetime.
    let forged = key.proof("POST", MCP_URL, Some(token), json!({"nonce": "AAAA"}));
    let resp = ask(verify, "DPoP", token, &[&forged]).await;
    assert_dpop_refusal(&resp, "use_dpop_nonce", "a forged nonce");
    tokio::time::sleep(std::time::Duration::from_millis(4_100)).await;
    let stale = key.proof("POST", MCP_URL, Some(token), json!({"nonce": verify_nonce}));
    let resp = ask(verify, "DPoP", token, &[&stale]).await;
    assert_dpop_refusal(&resp, "use_dpop_nonce", "an expired nonce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_key_combines_with_the_other_bindings() {
    let (_redis, store, verify) = verify_alone(&[]).await;
    let key = DpopKey::generate();
    let spec = TokenSpec {
        bind_ua: Some(mcp_oauth_gateway::token::sha256_b64url(b"claude-code/1.0")),
        ..TokenSpec::dpop(key.jkt())
    };
    let (token, _) = verify.mint(&store, spec).await;
    let send = |agent: &'static str| {
        let proof = key.proof("POST", MCP_URL, Some(&token), json!({}));
        verify
            .request(None, "mcp.example.com")
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof)
            .header("User-Agent", agent)
            .send()
    };
    assert_eq!(send("claude-code/1.0").await.unwrap().status(), 200);
    // The right key from another agent: each binding is checked.
    assert_eq!(send("curl/8.0").await.unwrap().status(), 401);
    assert_eq!(verify.decisions("binding_mismatch").await, 1.0);
}
