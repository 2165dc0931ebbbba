//! Through Traefik (the main target), more real MCP clients log in and call a tool, and verify
//! scales out: the stack of `e2e_stack.rs` with
//!
//! - `mcp-remote@0.15.1`, the stdio bridge desktop clients run (`e2e/mcp-remote-flow.mjs`:
//!   its browser is a stand-in that records the URL, and the browser step is driven headlessly);
//! - the MCP Python SDK `mcp==2.3.0` (`e2e/mcp-python-flow.py`: `OAuthClientProvider` with a
//!   redirect and a callback handler driving the same browser step);
//! - two verify replicas behind Traefik's one forwardAuth address: a token revoked with the CLI
//!   is refused by both, and through Traefik, within a second.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::e2e_flows::*;
use crate::support::helpers::*;
use crate::support::procs::*;
use crate::support::stack::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mcp_remote_logs_in_through_traefik_and_calls_a_tool() {
    let Some(stack) = Stack::start_if_enabled(&[]).await else {
        return;
    };
    let (flow, stderr) = stack
        .run_script("mcp-remote-flow.mjs", &[&stack.mcp_url, &stack.issuer], 90)
        .await;
    let mut checks = Checks::of(&stack, &flow, &stderr, "mcp-remote did not complete");
    checks.authorization_request();
    checks.check(
        s(&flow, "/callback_iss") == stack.issuer,
        "the redirect carries iss = issuer",
    );
    checks.check(
        n(&flow, "/callback_status") == 200,
        "mcp-remote's callback took the code",
    );
    checks.check(
        s(&flow, "/tool_result").contains("hi (mcp-remote)"),
        "the echo tool answered through mcp-remote",
    );
    checks.check(
        flow.pointer("/saved_files")
            .and_then(Value::as_array)
            .is_some_and(|f| {
                f.iter()
                    .any(|x| x.as_str().is_some_and(|p| p.ends_with("_tokens.json")))
            }),
        "mcp-remote saved its tokens",
    );
    checks.finish("mcp-remote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_python_mcp_sdk_logs_in_through_traefik_and_calls_a_tool() {
    let Some(stack) = Stack::start_if_enabled(&[python_mcp()]).await else {
        return;
    };
    let (flow, stderr) = stack
        .run_script("mcp-python-flow.py", &[&stack.mcp_url], 90)
        .await;
    let failed = "the Python SDK flow did not complete";
    let mut checks = Checks::of(&stack, &flow, &stderr, failed);
    checks.authorization_request();
    checks.browser_hops(|step| step.as_i64().unwrap_or(-1));
    checks.check(
        s(&flow, "/callback_iss") == stack.issuer,
        "the redirect carries iss = issuer",
    );
    checks.check(
        b(&flow, "/client_registered"),
        "the SDK registered a client",
    );
    checks.check(
        b(&flow, "/token/has_refresh_token"),
        "a refresh token was issued",
    );
    checks.check(
        s(&flow, "/tool_result").contains("hi (python)"),
        "the echo tool answered",
    );
    checks.finish("Python SDK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_cli_revocation_reaches_two_verify_replicas_behind_traefik_within_a_second() {
    if !e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let stack = Stack::builder(Proxy::Traefik)
        .verify_replicas(2)
        .start()
        .await;
    let token = stack.mint(&["--scope", "mcp", "--resource", &stack.mcp_url]);

    // Traefik's forwardAuth reaches the replicas in turn: both vouch for the token.
    for i in 0..6 {
        let status = through_traefik(&stack, &token).await;
        assert_eq!(status, 200, "request {i} through Traefik{}", stack.logs());
    }
    for url in &stack.verify_urls {
        let allowed = allowed_decisions(url).await;
        assert!(
            allowed >= 1.0,
            "replica {url} decided no request ({allowed}): the balancer did not spread them{}",
            stack.logs()
        );
    }

    let out = stack.cli(&["tokens", "revoke", "--token", &token]);
    assert!(
        out.status.success(),
        "mcp-gateway tokens revoke: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = Instant::now();

    // Each replica directly, and Traefik twice (so both replicas through it), until all refuse.
    let host = format!("localhost:{}", stack.proxy_port);
    let mut last = Vec::new();
    let elapsed = loop {
        last.clear();
        for url in &stack.verify_urls {
            let status = http()
                .get(format!("{url}/verify"))
                .header("Authorization", format!("Bearer {token}"))
                .header("X-Forwarded-Proto", "http")
                .header("X-Forwarded-Host", &host)
                .header("X-Forwarded-Uri", "/mcp")
                .send()
                .await
                .expect("verify answers")
                .status()
                .as_u16();
            last.push(format!("{url}: {status}"));
        }
        for _ in 0..2 {
            let status = through_traefik(&stack, &token).await;
            last.push(format!("traefik: {status}"));
        }
        if last.iter().all(|l| l.ends_with(": 401")) {
            break revoked.elapsed();
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the revoked token is still accepted 1 s after `tokens revoke`: {last:?}{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("revocation refused on both replicas and through Traefik after {elapsed:?}");
}

async fn through_traefik(stack: &Stack, token: &str) -> u16 {
    http()
        .post(&stack.mcp_url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INITIALIZE)
        .send()
        .await
        .expect("Traefik answers")
        .status()
        .as_u16()
}

async fn allowed_decisions(verify: &str) -> f64 {
    let allowed = "mcp_gateway_verify_decisions_total{outcome=\"allowed\",reason=\"ok\"}";
    metric_at(verify, allowed).await
}

/// The MCP TypeScript SDK 1.32.2 (no Mcp-Method/Mcp-Name headers) through the shipped Traefik
/// configuration, at a policy that protects one tool: the allowed tool works, the protected
/// one is refused with 403 naming the scope it needs, the SDK steps up through a new consent,
/// and the tool then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mcp_sdk_steps_up_for_a_protected_tool_through_traefik() {
    if !e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let stack = get_env_for_admins(Stack::builder(Proxy::Traefik))
        // What clients ask for at first stays `mcp`; the authorization server grants more.
        .verify_env("SCOPES_SUPPORTED", "mcp")
        .auth_env("SCOPES_SUPPORTED", "mcp mcp:admin")
        .start()
        .await;
    let (flow, stderr) = stack
        .run_script(
            "mcp-tool-policy.mjs",
            &[&stack.mcp_url, "echo", "get-env"],
            90,
        )
        .await;
    let context = format!("{flow:#}\n{stderr}\n{}", stack.logs());
    assert_eq!(flow["ok"], true, "{context}");
    assert_eq!(flow["allowed_ok"], true, "{context}");
    assert_eq!(flow["first_scope"], "mcp", "{context}");
    let refusal = flow["refusal"]["www_authenticate"].as_str().unwrap_or("");
    assert!(
        refusal.contains(r#"error="insufficient_scope""#),
        "{context}"
    );
    assert!(refusal.contains(r#"scope="mcp:admin""#), "{context}");
    assert_eq!(
        flow["protected_authorization_scope_0"], "mcp:admin",
        "{context}"
    );
    assert_eq!(flow["protected_ok"], true, "{context}");
    assert_eq!(flow["final_scope"], "mcp:admin", "{context}");
}

/// The policy the tool-policy tests meet: get-env is for `mcp:admin`, which includes `mcp`.
fn get_env_for_admins(stack: StackBuilder) -> StackBuilder {
    stack
        .verify_env("TOOL_POLICY", "tools/call get-env=mcp:admin")
        .verify_env("SCOPE_HIERARCHY", "mcp:admin > mcp")
}

/// `e2e/mcp-2026-client.mjs` with a token for `mcp` minted by the CLI, calling echo and then
/// get-env: its report, its stderr and the token.
async fn run_2026_client(stack: &Stack) -> (Value, String, String) {
    let token = stack.mint(&["--scope", "mcp", "--resource", &stack.mcp_url]);
    let (flow, stderr) = stack
        .run_script(
            "mcp-2026-client.mjs",
            &[&stack.mcp_url, &token, "echo", "get-env"],
            90,
        )
        .await;
    (flow, stderr, token)
}

/// The client's tools/call of `tool`, from the HTTP exchanges it logged.
fn tools_call(http: &[Value], tool: &str, context: &str) -> Value {
    http.iter()
        .find(|e| e["body_method"] == "tools/call" && e["body_name"] == tool)
        .cloned()
        .unwrap_or_else(|| panic!("a tools/call of {tool} was sent: {context}"))
}

/// The refusal names what is missing: `insufficient_scope`, `mcp:admin`.
fn assert_needs_admin(refused: &Value, context: &str) {
    let challenge = refused["www_authenticate"].as_str().unwrap_or("");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.contains(r#"scope="mcp:admin""#),
        "{context}"
    );
}

/// A client of the 2026-07-28 era (@modelcontextprotocol/client 2.4.0, version negotiation
/// on) against the policy, through Traefik (the body reaches verify) and Caddy (headers
/// only). Its discovery probe (`server/discover`, with `Mcp-Method`) passes verify like any
/// session method; server-everything speaks 2025-11-25, so the client falls back to that era
/// and sends no `Mcp-Name` on tools/call. Through Traefik the policy decides from the body:
/// the allowed tool works and the protected one is 403 insufficient_scope naming its scope.
/// Through Caddy verify gets no body, and a server of the 2025 era never compares the headers
/// with it, so every POST is refused (TOOL_POLICY_TRUST_HEADERS is off), never let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_2026_client_meets_the_tool_policy_through_traefik_and_caddy() {
    for proxy in [Proxy::Traefik, Proxy::Caddy] {
        if !e2e_enabled(&[proxy.bin()]) {
            return;
        }
        let stack = get_env_for_admins(Stack::builder(proxy)).start().await;
        let (flow, stderr, _) = run_2026_client(&stack).await;
        let context = format!("{}: {flow:#}\n{stderr}\n{}", proxy.name(), stack.logs());
        let http = flow["http"].as_array().cloned().unwrap_or_default();
        let probe = http
            .iter()
            .find(|e| e["mcp_method"] == "server/discover")
            .unwrap_or_else(|| panic!("the client probes with Mcp-Method: {context}"));
        let probe_status = probe["status"].as_u64().unwrap_or(0);
        match proxy {
            Proxy::Traefik => {
                assert!(
                    probe_status != 401 && probe_status != 403,
                    "the discovery probe is not refused by verify: {context}"
                );
                assert_eq!(flow["ok"], true, "{context}");
                assert_eq!(flow["allowed_ok"], true, "{context}");
                assert_eq!(flow["protected_ok"], false, "{context}");
                assert_eq!(
                    tools_call(&http, "echo", &context)["status"],
                    200,
                    "{context}"
                );
                let refused = tools_call(&http, "get-env", &context);
                assert_eq!(refused["status"], 403, "{context}");
                assert_needs_admin(&refused, &context);
            }
            _ => {
                // A header-only proxy: verify cannot read the call, and headers alone could
                // lie to this server, so every POST is refused, the probe with them.
                let posts: Vec<&Value> = http.iter().filter(|e| e["method"] == "POST").collect();
                assert!(!posts.is_empty(), "{context}");
                assert!(posts.iter().all(|e| e["status"] == 403), "{context}");
                assert_eq!(probe_status, 403, "{context}");
                assert_ne!(flow["allowed_ok"], true, "{context}");
            }
        }
    }
}

/// Both ends of the 2026-07-28 era: `@modelcontextprotocol/client` 2.4.0 negotiates the
/// revision with `e2e/mcp-2026-server.mjs` (`@modelcontextprotocol/server` 2.4.0), so every
/// POST carries `Mcp-Method` and each tools/call `Mcp-Name`; behind Traefik with
/// `forwardBody`, verify decides from headers and body together. A forged `Mcp-Name` is
/// refused by verify itself (400, JSON-RPC -32020) before the MCP server sees it, and so is a
/// tools/call whose headers were left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_2026_client_and_server_send_and_check_the_request_headers_through_traefik() {
    if !e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let stack = get_env_for_admins(Stack::builder(Proxy::Traefik))
        .mcp_server(McpServer::Modern)
        .start()
        .await;
    let (flow, stderr, token) = run_2026_client(&stack).await;
    let context = format!("{flow:#}\n{stderr}\n{}", stack.logs());
    assert_eq!(flow["ok"], true, "{context}");
    assert_eq!(flow["protocol_version"], "2026-07-28", "{context}");
    assert_eq!(flow["allowed_ok"], true, "{context}");
    assert_eq!(flow["protected_ok"], false, "{context}");
    let http = flow["http"].as_array().cloned().unwrap_or_default();
    let allowed = tools_call(&http, "echo", &context);
    assert_eq!(allowed["mcp_method"], "tools/call", "{context}");
    assert_eq!(allowed["mcp_name"], "echo", "{context}");
    assert_eq!(allowed["status"], 200, "{context}");
    let refused = tools_call(&http, "get-env", &context);
    assert_eq!(refused["mcp_name"], "get-env", "{context}");
    assert_eq!(refused["status"], 403, "{context}");
    assert_needs_admin(&refused, &context);

    // The same token, by hand, as a 2026 client would send it but with the header forged to
    // name the allowed tool: verify sees the body and refuses the disagreement.
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {
            "name": "get-env", "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
        }
    })
    .to_string();
    let post = |headers: &[(&str, &str)]| {
        let mut req = crate::support::helpers::http()
            .post(&stack.mcp_url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let forged = post(&[("mcp-method", "tools/call"), ("mcp-name", "echo")])
        .await
        .expect("forged request");
    assert_eq!(forged.status(), 400, "{}", stack.logs());
    let answer: Value = forged.json().await.expect("a JSON-RPC error");
    assert_eq!(answer["error"]["code"], -32020, "{answer}");
    // Headers left off: the body still names the protected tool.
    let bare = post(&[]).await.expect("request without the Mcp-* headers");
    assert_eq!(bare.status(), 403, "{}", stack.logs());
}

/// The hosted clients' way in, with real clients through Traefik: the MCP TypeScript SDK
/// (`clientMetadataUrl`), `mcp-remote --client-metadata-url` and the Python SDK
/// (`client_metadata_url`) each see `client_id_metadata_document_supported`, use the document
/// the test serves over HTTPS as their `client_id`, and register nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_clients_log_in_with_a_client_id_metadata_document_through_traefik() {
    use crate::support::document_host::{DocumentHost, Route, public_document};
    if !e2e_enabled(&[Proxy::Traefik.bin(), python_mcp()]) {
        return;
    }
    let host = DocumentHost::start().await;
    let ca = host.ca_file.to_string_lossy().to_string();
    let stack = Stack::builder(Proxy::Traefik)
        .auth_env("CIMD_TEST_LOOPBACK_CA", &ca)
        .start()
        .await;
    let publish = |path: &str, name: &str| {
        let id = host.url(path);
        let mut doc = public_document(
            &id,
            &[
                "http://127.0.0.1/oauth/callback",
                "http://localhost/oauth/callback",
            ],
        );
        doc["client_name"] = name.into();
        host.set(path, Route::json(&doc, "max-age=3600"));
        id
    };

    let sdk = publish("/sdk/client.json", "MCP TypeScript SDK");
    let flow = assert_sdk_login_and_tool_call_as(&stack, Some(&sdk)).await;
    assert_eq!(flow["client_id"], sdk.as_str(), "{flow:#}");
    assert_eq!(flow["registered"], false, "{flow:#}");

    // A client's script, which must complete: its report.
    let run_ok = |who: &'static str, script: &'static str, args: Vec<String>| {
        let stack = &stack;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (flow, stderr) = stack.run_script(script, &args, 90).await;
            assert!(
                b(&flow, "/ok"),
                "{who}: {flow:#}\n{stderr}\n{}",
                stack.logs()
            );
            flow
        }
    };
    let remote = publish("/mcp-remote/client.json", "mcp-remote");
    let args = vec![stack.mcp_url.clone(), stack.issuer.clone(), remote.clone()];
    run_ok("mcp-remote", "mcp-remote-flow.mjs", args).await;

    let python = publish("/python/client.json", "MCP Python SDK");
    let args = vec![stack.mcp_url.clone(), python.clone()];
    let flow = run_ok("python", "mcp-python-flow.py", args).await;
    assert_eq!(flow["client_id"], python.as_str(), "{flow:#}");
    assert_eq!(
        flow["authorization_request"]["client_id"],
        python.as_str(),
        "{flow:#}"
    );

    // Nothing was registered, and each document client holds tokens.
    let mut conn = stack.redis.conn().await;
    let registrations: Vec<String> = redis::AsyncCommands::keys(&mut conn, "oauth:client:*")
        .await
        .unwrap();
    assert!(registrations.is_empty(), "{registrations:?}");
    for id in [&sdk, &remote, &python] {
        let families: Vec<String> =
            redis::AsyncCommands::keys(&mut conn, format!("oauth:client_families:{id}"))
                .await
                .unwrap();
        assert_eq!(families.len(), 1, "{id} has a grant");
        assert_eq!(
            host.hits(url::Url::parse(id).unwrap().path()),
            1,
            "{id} fetched once"
        );
    }
}
