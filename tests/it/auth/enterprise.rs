//! Enterprise-managed authorization (ID-JAG, the JWT bearer grant), machine clients
//! (`client_credentials`) and workload identity, against a stand-in enterprise IdP that signs
//! users in and exchanges their ID tokens for ID-JAGs with its own rotating keys, over real
//! HTTPS: the happy paths, what verify then tells the MCP server, and every way an assertion
//! can lie, each refused without a change to the store.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::document_host::ClientKey;
use crate::support::enterprise_idp::EnterpriseIdp;
use crate::support::gateway::*;
use crate::support::header;
use crate::support::helpers::*;
use crate::support::{jwt_claims, jwt_header};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const RESOURCE: &str = "https://mcp.example.com/mcp";

/// The gateway trusting `idp` as `kind`, with `extra` settings; every user of corp.example
/// admitted.
async fn gateway_trusting(idp: &EnterpriseIdp, kind: &str, extra: &[(&str, &str)]) -> Gateway {
    let trust = idp.trust(kind);
    let mut env: Vec<(&str, &str)> = trust.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("ALLOWED_EMAIL_DOMAINS", "corp.example"));
    env.push(("SCOPES_SUPPORTED", "mcp mcp:admin"));
    env.extend_from_slice(extra);
    Gateway::start(&env).await
}

/// `mcp-gateway clients create … --json` on `redis`: the client as printed (with its
/// secret).
fn create_client(redis: &RedisServer, args: &[&str]) -> Value {
    let source = base_env(redis).with("SCOPES_SUPPORTED", "mcp mcp:admin");
    let mut all = vec!["--json", "clients", "create"];
    all.extend_from_slice(args);
    let out = run_cli_with(&source, &all);
    assert_success(&out, "clients create");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An `--id-jag` client made by the operator, known to the IdP as the client it exchanges for.
fn id_jag_client(gw: &Gateway, idp: &EnterpriseIdp, name: &str) -> Value {
    let client = create_client(&gw.redis, &["--name", name, "--id-jag"]);
    idp.map_client(client["client_id"].as_str().unwrap());
    client
}

/// The audit trail, each event as JSON.
async fn trail(gw: &Gateway) -> Vec<Value> {
    crate::support::audit::trail(&gw.redis)
        .await
        .iter()
        .map(|s| serde_json::to_value(&s.event).unwrap())
        .collect()
}

/// `POST /token` with the JWT bearer grant, authenticated as `client` (Basic), with `more`.
async fn present(
    gw: &Gateway,
    client: &Value,
    assertion: &str,
    more: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![("grant_type", JWT_BEARER), ("assertion", assertion)];
    form.extend_from_slice(more);
    gw.token(client, &form).await
}

/// Every oauth:* key and its value (TTLs aside: they tick).
async fn state_of(gw: &Gateway) -> BTreeMap<String, String> {
    gw.redis
        .keyspace()
        .await
        .into_iter()
        .map(|(k, (v, _))| (k, format!("{v:?}")))
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_users_id_jag_buys_an_access_token_and_no_refresh_token() {
    let idp = EnterpriseIdp::start().await;
    let gw = gateway_trusting(&idp, "id-jag", &[]).await;
    let meta: Value =
        body_json(http().get(gw.url("/.well-known/oauth-authorization-server"))).await;
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER)),
        "{meta}"
    );
    assert_eq!(
        meta["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    let client = id_jag_client(&gw, &idp, "Claude for Work");
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_basic");

    // Dana signs in at her company's IdP; the client exchanges that for an ID-JAG for us.
    let (id_token, sub) = idp.sign_in("dana", &["eng"], &["mcp", "mcp:admin"]);
    let jag = idp
        .exchange(&id_token, &gw.issuer, RESOURCE, Some("mcp"))
        .await
        .unwrap();
    assert_eq!(jwt_header(&jag)["typ"], "oauth-id-jag+jwt");
    let resp = present(&gw, &client, &jag, &[("resource", RESOURCE)]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "cache-control"), "no-store");
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp");
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let claims = jwt_claims(access);
    let user_id = format!("{}#{sub}", idp.issuer);
    assert_eq!(claims["sub"], user_id.as_str());
    assert_eq!(claims["username"], "dana");
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["client_id"], client["client_id"]);
    assert!(
        claims.get("subject_type").is_none(),
        "a user is the default: {claims}"
    );
    assert_eq!(claims["amr"], json!(["id-jag", "mfa"]));

    // verify tells the MCP server who called.
    let resp = gw.verify.answer(Some(access), "mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-user-id"), user_id);
    assert_eq!(header(&resp, "x-auth-subject-type"), "user");
    assert_eq!(header(&resp, "x-user-email"), "dana@corp.example");

    // One use: the same ID-JAG again is refused, and nothing more is issued.
    let before = state_of(&gw).await;
    let again = present(&gw, &client, &jag, &[("resource", RESOURCE)]).await;
    assert_oauth_error(again, 400, "invalid_grant").await;
    assert_eq!(state_of(&gw).await, before);
    let trail = trail(&gw).await;
    let kinds: Vec<&str> = trail.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"assertion_replayed"), "{kinds:?}");
    let issued = trail.iter().find(|e| e["type"] == "token_issued").unwrap();
    assert_eq!(issued["grant"], JWT_BEARER);
    assert_eq!(issued["detail"]["issuer"], idp.issuer.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_jag_presented_at_once_many_times_buys_one_token() {
    let idp = EnterpriseIdp::start().await;
    let gw = gateway_trusting(&idp, "id-jag", &[]).await;
    let client = id_jag_client(&gw, &idp, "c");
    let (id_token, _) = idp.sign_in("erin", &[], &["mcp"]);
    let jag = idp
        .exchange(&id_token, &gw.issuer, RESOURCE, None)
        .await
        .unwrap();
    let answers =
        futures_util::future::join_all((0..12).map(|_| present(&gw, &client, &jag, &[]))).await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        answers.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    let tokens = state_of(&gw)
        .await
        .into_keys()
        .filter(|k| k.starts_with("oauth:token:"))
        .count();
    assert_eq!(tokens, 1);
}

/// A forgery: what it is, the assertion, and the request's other parameters.
type Lie<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lying_id_jag_is_refused_with_invalid_grant_and_changes_nothing() {
    let idp = EnterpriseIdp::start().await;
    let stranger = EnterpriseIdp::start().await;
    let gw = gateway_trusting(
        &idp,
        "id-jag",
        &[("SCOPE_GRANTS", "mcp:admin=email:boss@corp.example")],
    )
    .await;
    let client = id_jag_client(&gw, &idp, "c");
    // The alien: another IdP's users may not be the subject of this gateway's ID-JAGs.
    stranger.map_client(client["client_id"].as_str().unwrap());
    let iss = gw.issuer.clone();
    let t = now();
    let rogue = ClientKey::generate("idp-key-1");
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("oauth-id-jag+jwt".into());
        header.kid = Some("idp-key-1".into());
        let claims = jwt_claims(&idp.id_jag("00udana", &iss, RESOURCE, json!({})));
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap()
    };
    let none = {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = jwt_claims(&idp.id_jag("00udana", &iss, RESOURCE, json!({})));
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "oauth-id-jag+jwt"})),
            b64(claims)
        )
    };
    let unknown_key = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("oauth-id-jag+jwt".into());
        rogue.sign(
            header,
            &jwt_claims(&idp.id_jag("00udana", &iss, RESOURCE, json!({}))),
        )
    };
    let spent = idp.id_jag("00udana", &iss, RESOURCE, json!({"jti": "once"}));
    assert_eq!(present(&gw, &client, &spent, &[]).await.status(), 200);
    let lies: Vec<Lie> = vec![
        (
            "an untrusted issuer",
            stranger.id_jag("00udana", &iss, RESOURCE, json!({})),
            vec![],
        ),
        ("a key the issuer never published", unknown_key, vec![]),
        ("alg none", none, vec![]),
        ("an HMAC signature", hs256, vec![]),
        (
            "another audience",
            idp.id_jag("00udana", "https://other.example", RESOURCE, json!({})),
            vec![],
        ),
        (
            "two audiences",
            idp.id_jag(
                "00udana",
                &iss,
                RESOURCE,
                json!({"aud": [iss, "https://other.example"]}),
            ),
            vec![],
        ),
        (
            "another client's client_id",
            idp.id_jag(
                "00udana",
                &iss,
                RESOURCE,
                json!({"client_id": "someone-else"}),
            ),
            vec![],
        ),
        (
            "a replayed jti",
            idp.id_jag("00udana", &iss, RESOURCE, json!({"jti": "once"})),
            vec![],
        ),
        (
            "expired",
            idp.id_jag(
                "00udana",
                &iss,
                RESOURCE,
                json!({"iat": t - 900, "exp": t - 300}),
            ),
            vec![],
        ),
        (
            "issued in the future",
            idp.id_jag(
                "00udana",
                &iss,
                RESOURCE,
                json!({"iat": t + 900, "exp": t + 1200}),
            ),
            vec![],
        ),
        (
            "a resource we do not serve",
            idp.id_jag("00udana", &iss, "https://evil.example.org/mcp", json!({})),
            vec![],
        ),
        (
            "a resource other than the one asked",
            idp.id_jag("00udana", &iss, RESOURCE, json!({})),
            vec![("resource", "https://api.example.com/mcp")],
        ),
        (
            "scopes beyond the ID-JAG's",
            idp.id_jag("00udana", &iss, RESOURCE, json!({"scope": "mcp"})),
            vec![("scope", "mcp:admin")],
        ),
        (
            "scopes beyond the user's entitlement",
            idp.id_jag("00udana", &iss, RESOURCE, json!({"scope": "mcp:admin"})),
            vec![],
        ),
        (
            "a user no allow-list admits",
            idp.id_jag(
                "00umallory",
                &iss,
                RESOURCE,
                json!({"email": "mallory@elsewhere.example"}),
            ),
            vec![],
        ),
        (
            "no jti",
            idp.id_jag("00udana", &iss, RESOURCE, json!({"jti": null})),
            vec![],
        ),
        (
            "a workload token (typ JWT) of an ID-JAG issuer",
            idp.workload_jwt("prod", "api", &iss, json!({})),
            vec![],
        ),
    ];
    for (lie, assertion, more) in &lies {
        let before = state_of(&gw).await;
        let resp = present(&gw, &client, assertion, more).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{lie}: {body}"
        );
        assert_eq!(state_of(&gw).await, before, "{lie} changed the store");
    }
    let trail = trail(&gw).await;
    assert!(
        trail
            .iter()
            .any(|e| e["type"] == "assertion_refused" && e["level"] == "warning"),
        "{trail:?}"
    );

    // A client registered without the grant, or authenticating wrongly, never gets that far.
    let registered = gw
        .register(json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let valid = idp.id_jag("00udana", &iss, RESOURCE, json!({}));
    assert_oauth_error(
        present(&gw, &registered, &valid, &[]).await,
        400,
        "unauthorized_client",
    )
    .await;
    let mut wrong = client.clone();
    wrong["client_secret"] = json!("not-the-secret");
    assert_oauth_error(
        present(&gw, &wrong, &valid, &[]).await,
        401,
        "invalid_client",
    )
    .await;
    // And an ID-JAG is never a client's own assertion.
    let resp = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", valid.as_str()),
                ("client_id", client["client_id"].as_str().unwrap()),
            ],
        )
        .await;
    assert_oauth_error(resp, 401, "invalid_client").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_idp_key_is_fetched_once_and_scopes_are_narrowed_to_entitlements() {
    let idp = EnterpriseIdp::start().await;
    // Key sets are cached as metadata documents are; an unknown kid refetches at most every
    // CIMD_MIN_AGE (when under 30 s).
    let gw = gateway_trusting(
        &idp,
        "id-jag",
        &[
            ("SCOPE_GRANTS", "mcp:admin=group:admins"),
            ("CIMD_MIN_AGE", "1s"),
        ],
    )
    .await;
    let client = id_jag_client(&gw, &idp, "c");
    let (id_token, _) = idp.sign_in("fay", &["eng"], &["mcp", "mcp:admin"]);
    let jag = idp
        .exchange(&id_token, &gw.issuer, RESOURCE, None)
        .await
        .unwrap();
    let tokens: Value = json_body(present(&gw, &client, &jag, &[]).await).await;
    // The IdP allowed both; fay is not in admins here: mcp:admin is left out.
    assert_eq!(tokens["scope"], "mcp", "{tokens}");
    let fetched = idp.jwks_fetches();
    assert_eq!(fetched, 1);

    idp.rotate();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let jag = idp
        .exchange(&id_token, &gw.issuer, RESOURCE, None)
        .await
        .unwrap();
    assert_eq!(jwt_header(&jag)["kid"], "idp-key-2");
    let resp = present(&gw, &client, &jag, &[]).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(idp.jwks_fetches(), 2, "an unknown kid refetches once");
    // An unknown kid again right away is not worth another fetch.
    let rogue = ClientKey::generate("idp-key-9");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("oauth-id-jag+jwt".into());
    let forged = rogue.sign(
        header,
        &jwt_claims(&idp.id_jag("00ufay", &gw.issuer, RESOURCE, json!({}))),
    );
    assert_oauth_error(
        present(&gw, &client, &forged, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_eq!(idp.jwks_fetches(), 2, "refetches are rate-limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_is_admitted_by_its_issuers_rules_alone() {
    let idp = EnterpriseIdp::start().await;
    let gw = gateway_trusting(
        &idp,
        "workload",
        &[
            ("TRUSTED_ISSUER_SUBJECT", "system:serviceaccount:prod:*"),
            (
                "TRUSTED_ISSUER_REQUIRED_CLAIMS",
                r#"{"kubernetes.io.namespace": "prod"}"#,
            ),
            ("TRUSTED_ISSUER_SCOPES", "mcp"),
        ],
    )
    .await;
    let iss = gw.issuer.clone();
    let token_endpoint = gw.url("/token");
    let grant = |assertion: &str| {
        let form = vec![
            ("grant_type", JWT_BEARER.to_string()),
            ("assertion", assertion.to_string()),
            ("resource", RESOURCE.to_string()),
        ];
        let url = gw.url("/token");
        async move { http().post(url).form(&form).send().await.unwrap() }
    };
    let jwt = idp.workload_jwt("prod", "reporter", &iss, json!({}));
    let resp = grant(&jwt).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let tokens: Value = resp.json().await.unwrap();
    assert!(tokens.get("refresh_token").is_none());
    assert_eq!(tokens["scope"], "mcp");
    let access = tokens["access_token"].as_str().unwrap();
    let id = format!("{}#system:serviceaccount:prod:reporter", idp.issuer);
    assert_eq!(jwt_claims(access)["sub"], id.as_str());
    assert_eq!(jwt_claims(access)["subject_type"], "workload");
    let resp = gw.verify.answer(Some(access), "mcp.example.com").await;
    assert_eq!(
        resp.status(),
        200,
        "no ALLOWED_* list names a workload: its issuer's rules did"
    );
    assert_eq!(header(&resp, "x-user-id"), id);
    assert_eq!(header(&resp, "x-auth-subject-type"), "workload");
    // The token endpoint is an audience a workload may name too.
    let jwt = idp.workload_jwt("prod", "reporter", &token_endpoint, json!({}));
    assert_eq!(grant(&jwt).await.status(), 200);

    for (lie, jwt) in [
        (
            "a subject outside the glob",
            idp.workload_jwt("dev", "reporter", &iss, json!({})),
        ),
        (
            "a required claim that does not hold",
            idp.workload_jwt(
                "prod",
                "reporter",
                &iss,
                json!({"kubernetes.io": {"namespace": "dev"}}),
            ),
        ),
        (
            "an ID-JAG presented as a workload token",
            idp.id_jag("00udana", &iss, RESOURCE, json!({})),
        ),
        (
            "another audience",
            idp.workload_jwt("prod", "reporter", "https://other.example", json!({})),
        ),
        (
            "expired",
            idp.workload_jwt("prod", "reporter", &iss, json!({"exp": now() - 120})),
        ),
    ] {
        let before = state_of(&gw).await;
        assert_oauth_error(grant(&jwt).await, 400, "invalid_grant").await;
        assert_eq!(state_of(&gw).await, before, "{lie} changed the store");
    }
    // A workload's JWT is spent once, too.
    let jwt = idp.workload_jwt("prod", "indexer", &iss, json!({}));
    assert_eq!(grant(&jwt).await.status(), 200);
    assert_oauth_error(grant(&jwt).await, 400, "invalid_grant").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_client_calls_as_itself_and_only_the_operator_creates_one() {
    let gw = Gateway::start(&[("SCOPES_SUPPORTED", "mcp mcp:admin")]).await;
    let bot = create_client(
        &gw.redis,
        &[
            "--name",
            "Nightly report",
            "--client-credentials",
            "--scope",
            "mcp mcp:admin",
        ],
    );
    let id = bot["client_id"].as_str().unwrap().to_string();
    assert!(
        bot["client_secret"].as_str().is_some_and(|s| s.len() >= 32),
        "{bot}"
    );
    assert!(bot.get("client_secret_hash").is_none());
    let stored: String = {
        use redis::AsyncCommands;
        gw.redis
            .conn()
            .await
            .get(format!("oauth:client:{id}"))
            .await
            .unwrap()
    };
    assert!(
        !stored.contains(bot["client_secret"].as_str().unwrap()),
        "stored hashed only"
    );

    let resp = gw
        .token(
            &bot,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "mcp"),
                ("resource", RESOURCE),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert_eq!(tokens["scope"], "mcp");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let claims = jwt_claims(&access);
    assert_eq!(claims["sub"], format!("client:{id}"));
    assert_eq!(claims["subject_type"], "client");
    let resp = gw.verify.answer(Some(&access), "mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-user-id"), format!("client:{id}"));
    assert_eq!(header(&resp, "x-auth-subject-type"), "client");
    assert_eq!(header(&resp, "x-auth-client-id"), id);
    // Without a scope: its own.
    let tokens: Value = json_body(
        gw.token(&bot, &[("grant_type", "client_credentials")])
            .await,
    )
    .await;
    assert_eq!(tokens["scope"], "mcp mcp:admin");
    // Beyond its own: nothing to give.
    assert_oauth_error(
        gw.token(
            &bot,
            &[("grant_type", "client_credentials"), ("scope", "mcp:nope")],
        )
        .await,
        400,
        "invalid_scope",
    )
    .await;
    let mut wrong = bot.clone();
    wrong["client_secret"] = json!("guess");
    assert_oauth_error(
        gw.token(&wrong, &[("grant_type", "client_credentials")])
            .await,
        401,
        "invalid_client",
    )
    .await;

    // Dynamic registration never makes one, and a registered client may not use the grant.
    let refused = gw
        .register(
            json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"],
                         "token_endpoint_auth_method": "client_secret_basic"}),
        )
        .await;
    assert_oauth_error(refused, 400, "invalid_client_metadata").await;
    let registered = gw.client("client_secret_basic").await;
    assert_oauth_error(
        gw.token(&registered, &[("grant_type", "client_credentials")])
            .await,
        400,
        "unauthorized_client",
    )
    .await;

    // Deleting the client with everything it holds: verify refuses its token.
    let source = base_env(&gw.redis).with("ISSUER_URL", gw.issuer.as_str());
    assert_success(
        &run_cli_with(&source, &["clients", "delete", "--complete", &id]),
        "delete",
    );
    gw.verify
        .until_status(&access, 401, std::time::Duration::from_secs(2))
        .await
        .expect("verify refuses the deleted client's token");
    assert_oauth_error(
        gw.token(&bot, &[("grant_type", "client_credentials")])
            .await,
        401,
        "invalid_client",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_and_tool_rules_name_a_machine_client_by_its_id() {
    let redis = RedisServer::start().await;
    let a = create_client(
        &redis,
        &[
            "--name",
            "a",
            "--client-credentials",
            "--scope",
            "mcp mcp:admin",
        ],
    );
    let b = create_client(
        &redis,
        &[
            "--name",
            "b",
            "--client-credentials",
            "--scope",
            "mcp mcp:admin",
        ],
    );
    let a_id = a["client_id"].as_str().unwrap();
    // A gateway whose grants and tool rules name client a.
    let grants = format!("mcp:admin=client:{a_id}");
    let policy = format!("tools/call deploy=mcp @client:{a_id}");
    let gw = Gateway::start_on(
        redis,
        &[
            ("SCOPES_SUPPORTED", "mcp mcp:admin"),
            ("SCOPE_GRANTS", grants.as_str()),
            ("TOOL_POLICY", policy.as_str()),
            ("TOOL_POLICY_TRUST_HEADERS", "true"),
        ],
    )
    .await;
    let scope_of = |client: &Value| {
        let client = client.clone();
        let gw = &gw;
        async move {
            json_body(
                gw.token(
                    &client,
                    &[
                        ("grant_type", "client_credentials"),
                        ("scope", "mcp mcp:admin"),
                        ("resource", RESOURCE),
                    ],
                )
                .await,
            )
            .await
        }
    };
    let (ta, tb) = (scope_of(&a).await, scope_of(&b).await);
    assert_eq!(ta["scope"], "mcp mcp:admin");
    assert_eq!(tb["scope"], "mcp", "b is not entitled to mcp:admin");
    let call = |token: String| {
        let verify = &gw.verify;
        async move {
            let resp = verify
                .request(Some(&token), "mcp.example.com")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "deploy")
                .send()
                .await
                .unwrap();
            resp.status()
        }
    };
    assert_eq!(
        call(ta["access_token"].as_str().unwrap().to_string()).await,
        200
    );
    assert_eq!(
        call(tb["access_token"].as_str().unwrap().to_string()).await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_client_with_keys_authenticates_with_private_key_jwt() {
    let gw = Gateway::start(&[]).await;
    let key = ClientKey::generate("bot-1");
    let (_dir, jwks) = temp_file("jwks.json", json!({"keys": [key.jwk()]}).to_string());
    let bot = create_client(
        &gw.redis,
        &[
            "--name",
            "keyed",
            "--client-credentials",
            "--jwks",
            jwks.to_str().unwrap(),
        ],
    );
    assert_eq!(bot["token_endpoint_auth_method"], "private_key_jwt");
    assert!(bot.get("client_secret").is_none());
    let id = bot["client_id"].as_str().unwrap();
    let assertion = key.assertion(id, &gw.issuer, json!({}));
    let form = [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
    ];
    let resp = gw.post_form("/token", &form).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    // Its jti once only.
    assert_oauth_error(gw.post_form("/token", &form).await, 401, "invalid_client").await;
    // A key it did not register.
    let other = ClientKey::generate("bot-1");
    let forged = other.assertion(id, &gw.issuer, json!({}));
    let form = [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", forged.as_str()),
    ];
    assert_oauth_error(gw.post_form("/token", &form).await, 401, "invalid_client").await;
}
