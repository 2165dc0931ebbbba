//! Per-tool authorization at ForwardAuth: rules by JSON-RPC method and tool/resource name,
//! read from the forwarded body or the MCP 2026 `Mcp-Method`/`Mcp-Name` headers, with scope
//! hierarchies, over HTTP against the real verify service (and through a real Traefik with the
//! shipped `forwardBody` configuration in the e2e tests).

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::helpers::*;

const POLICY: &str = "tools/call delete_*=mcp:admin; tools/call deploy=mcp:write @bob; \
                      resources/read file:///secret/*=mcp:admin";
const HIERARCHY: &str = "mcp:admin > mcp:write > mcp";

/// verify with [`POLICY`], for an MCP server that refuses an `Mcp-Method`/`Mcp-Name` that
/// disagrees with its body (`TOOL_POLICY_TRUST_HEADERS`), so a request that names its call in
/// those headers alone is decided from them.
async fn policy_verify(extra: &[(&str, &str)]) -> (RedisServer, Verify) {
    let redis = RedisServer::start().await;
    let mut env = base_env(&redis)
        .with("TOOL_POLICY", POLICY)
        .with("SCOPE_HIERARCHY", HIERARCHY)
        .with("TOOL_POLICY_TRUST_HEADERS", "true");
    for (k, v) in extra {
        env = env.with(*k, *v);
    }
    let verify = Verify::start(&env, redis.store()).await;
    (redis, verify)
}

async fn token(
    verify: &Verify,
    redis: &RedisServer,
    user: &'static str,
    scope: &'static str,
) -> String {
    let spec = TokenSpec {
        user,
        scope,
        ..Default::default()
    };
    mint_token(&verify.settings, &redis.store(), spec).await.0
}

fn rpc(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

/// `/verify` as Traefik calls it with `forwardBody`: the POST's body, on a GET.
async fn ask(
    verify: &Verify,
    token: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = verify
        .request(Some(token), "mcp.example.com")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_allowed_and_refused_by_rule_with_every_needed_scope_named() {
    let (redis, verify) = policy_verify(&[("REQUIRED_SCOPES", "mcp")]).await;
    let alice = token(&verify, &redis, "alice", "mcp").await;

    // Session methods and unruled tools pass for any valid token.
    for body in [
        rpc("initialize", json!({"protocolVersion": "2025-11-25"})),
        rpc("tools/list", json!({})),
        rpc(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "hi"}}),
        ),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    ] {
        assert_eq!(
            ask(&verify, &alice, &body, &[]).await.status(),
            200,
            "{body}"
        );
    }
    // A protected tool: 403 naming every scope the call needs (the route's and the tool's).
    let delete = rpc(
        "tools/call",
        json!({"name": "delete_file", "arguments": {}}),
    );
    let resp = ask(&verify, &alice, &delete, &[]).await;
    assert_eq!(resp.status(), 403);
    let www = challenge(&resp);
    assert!(www.contains(r#"error="insufficient_scope""#), "{www}");
    assert!(www.contains(r#"scope="mcp mcp:admin""#), "{www}");
    assert!(www.contains("resource_metadata="), "{www}");
    // The same call by header only (a 2026 client behind a header-only proxy).
    let resp = ask(
        &verify,
        &alice,
        "",
        &[("Mcp-Method", "tools/call"), ("Mcp-Name", "delete_file")],
    )
    .await;
    assert_eq!(resp.status(), 403);
    // Resources by URI.
    let secret = rpc("resources/read", json!({"uri": "file:///secret/key"}));
    assert_eq!(ask(&verify, &alice, &secret, &[]).await.status(), 403);
    let public = rpc("resources/read", json!({"uri": "file:///public/readme"}));
    assert_eq!(ask(&verify, &alice, &public, &[]).await.status(), 200);

    // Hierarchy: mcp:admin implies mcp:write and mcp, in tool rules and the path rule alike.
    let admin = token(&verify, &redis, "alice", "mcp:admin").await;
    assert_eq!(ask(&verify, &admin, &delete, &[]).await.status(), 200);
    assert_eq!(ask(&verify, &admin, &secret, &[]).await.status(), 200);
    // A user-restricted tool: scope is not enough, and no step-up can help.
    let deploy = rpc("tools/call", json!({"name": "deploy"}));
    let resp = ask(&verify, &admin, &deploy, &[]).await;
    assert_eq!(resp.status(), 403);
    assert!(!challenge(&resp).contains("insufficient_scope"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "access_denied");
    let bob = token(&verify, &redis, "bob", "mcp:write").await;
    assert_eq!(ask(&verify, &bob, &deploy, &[]).await.status(), 200);
    assert_eq!(verify.decisions("tool_not_allowed").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_headers_body_tricks_and_omissions_never_skip_a_rule() {
    let (redis, verify) = policy_verify(&[]).await;
    let alice = token(&verify, &redis, "alice", "mcp").await;
    let delete = rpc("tools/call", json!({"name": "delete_file"}));
    // The header says a harmless tool, the body calls the protected one: HeaderMismatch.
    let resp = ask(
        &verify,
        &alice,
        &delete,
        &[("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32020, "{body}");
    let resp = ask(&verify, &alice, &delete, &[("Mcp-Method", "ping")]).await;
    assert_eq!(resp.status(), 400);
    // Nothing says what is called: refused, with a reason.
    let resp = ask(&verify, &alice, "", &[]).await;
    assert_eq!(resp.status(), 403);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("does not say which tool")
    );
    let resp = ask(&verify, &alice, "", &[("Mcp-Method", "tools/call")]).await;
    assert_eq!(resp.status(), 403);
    // Body tricks.
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0064elete_file"}}"#
            .to_string(),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"DELETE_FILE"}}"#
            .to_string(),
        r#"{"jsonrpc":"2.0","id":1,"method":"TOOLS/CALL","params":{"name":"delete_file"}}"#
            .to_string(),
        format!("[{}, {delete}]", rpc("tools/list", json!({}))),
        format!("  \n{delete}\n"),
    ] {
        assert_eq!(
            ask(&verify, &alice, &body, &[]).await.status(),
            403,
            "{body}"
        );
    }
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_file"]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file"}"#,
        "[]",
    ] {
        assert_eq!(
            ask(&verify, &alice, body, &[]).await.status(),
            400,
            "{body}"
        );
    }
    // Not a JSON-RPC message (the SSE stream, a session's DELETE): no tool rule applies.
    let resp = verify
        .forwarded(reqwest::Method::GET, "/verify", "https", "mcp.example.com")
        .header("X-Forwarded-Uri", "/mcp")
        .header("X-Forwarded-Method", "GET")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_server_can_be_told_which_tools_the_token_may_not_call() {
    let (redis, verify) = policy_verify(&[("TOOL_POLICY_HEADER", "true")]).await;
    let alice = token(&verify, &redis, "alice", "mcp").await;
    let resp = ask(&verify, &alice, &rpc("tools/list", json!({})), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-denied-tools"], "delete_*,deploy");
    let admin = token(&verify, &redis, "bob", "mcp:admin").await;
    let resp = ask(&verify, &admin, &rpc("tools/list", json!({})), &[]).await;
    assert_eq!(resp.headers()["x-auth-denied-tools"], "");
}

#[test]
fn a_bad_rule_stops_startup_naming_it_and_toml_tables_are_rules_too() {
    use mcp_oauth_gateway::config::{ConfigSource, Settings};
    for (var, value) in [
        ("TOOL_POLICY", "tools/call delete_*"),
        ("TOOL_POLICY", "tools/call x=not\"scope"),
        ("SCOPE_HIERARCHY", "a > b; b > a"),
        ("TOOL_POLICY_MISSING_NAME", "maybe"),
    ] {
        let source = ConfigSource::from_pairs([
            ("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("JWT_ALGORITHM", "HS256"),
            (var, value),
        ]);
        let err = Settings::load(&source).unwrap_err();
        assert_eq!(err.var, var, "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        r#"
gateway_jwt_secret = "0123456789abcdef0123456789abcdef"
jwt_algorithm = "HS256"
scope_hierarchy = "mcp:admin > mcp"

[[tool_policy]]
method = "tools/call"
name = "delete_*"
scopes = ["mcp:admin"]

[[tool_policy]]
method = "prompts/get"
users = ["alice", "id:583231"]
"#,
    )
    .unwrap();
    let mut source = ConfigSource::from_pairs::<&str, &str>([]);
    source.file = Some(file.clone());
    let settings = Settings::load(&source).unwrap();
    assert_eq!(settings.tool_policy.rules.len(), 2);
    assert!(settings.scopes_supported.contains(&"mcp:admin".to_string()));
    std::fs::write(
        &file,
        "[[tool_policy]]\nmethod = \"tools/call\"\nscopes = [\"x\"]\nscope = \"typo\"\n",
    )
    .unwrap();
    assert_eq!(Settings::load(&source).unwrap_err().var, "TOOL_POLICY");
}

#[test]
fn check_config_shows_the_policy() {
    let out = std::process::Command::new(bin("mcp-gateway-verify"))
        .arg("--check-config")
        .env_clear()
        .env("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("JWT_ALGORITHM", "HS256")
        .env("TOOL_POLICY", POLICY)
        .env("SCOPE_HIERARCHY", HIERARCHY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("tool policy (3 rules)"), "{text}");
    assert!(
        text.contains("tools/call delete_* needs [mcp:admin]"),
        "{text}"
    );
    assert!(text.contains("mcp:admin ⊇ mcp, mcp:write"), "{text}");
}

/// One spelling of `name` in JSON: each character as itself, in another case, or as a
/// `\uXXXX` escape.
fn spell(name: &str, choices: &[u8]) -> String {
    let mut out = String::new();
    for (c, how) in name.chars().zip(choices.iter().cycle()) {
        match how % 3 {
            0 => out.push(c),
            1 => out.push(c.to_ascii_uppercase()),
            _ => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// No variation of case, escaping or JSON shape lets a protected tool through.
    #[test]
    fn a_protected_tool_is_protected_in_any_json_spelling(
        choices in proptest::collection::vec(any::<u8>(), 1..20),
        suffix in "[a-z_*?]{0,8}",
        batch_before in 0usize..3,
        extra in proptest::collection::vec(("[a-z]{1,6}", "[ -~]{0,10}"), 0..3),
        spaces in " {0,3}",
    ) {
        use mcp_oauth_gateway::policy::{Call, ToolPolicy};
        use mcp_oauth_gateway::verify::mcp::calls;
        let policy = ToolPolicy::parse(POLICY, "github").unwrap();
        let name = format!("{}{}", spell("delete_", &choices), suffix);
        let mut members: Vec<String> = extra
            .iter()
            .filter(|(k, _)| k != "name" && k != "uri")
            .map(|(k, v)| format!("{k:?}:{}", serde_json::to_string(v).unwrap()))
            .collect();
        members.push(format!("\"name\":{spaces}\"{name}\""));
        let call = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"{}\",\"params\":{{{}}}}}",
            spell("tools/call", &choices[..1]),
            members.join(",")
        );
        let harmless = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let body = if batch_before == 0 {
            call
        } else {
            format!("[{}{call}]", format!("{harmless},").repeat(batch_before))
        };
        let headers = actix_web::http::header::HeaderMap::new();
        match calls(&headers, body.as_bytes()) {
            // Unreadable: refused with 400 before any rule.
            Err(_) => {}
            Ok(None) => prop_assert!(false, "a body with a call read as no call: {}", body),
            Ok(Some(found)) => {
                let needs_admin = found.iter().any(|c| {
                    policy
                        .requirement(Some(Call { method: &c.method, name: c.name.as_deref() }))
                        .scopes
                        .contains(&"mcp:admin")
                });
                prop_assert!(needs_admin, "{} slipped through as {:?}", body, found);
            }
        }
    }
}
