//! The end-to-end steps several tests share, run against a [`Stack`]: the unauthenticated
//! challenge through the proxy, an MCP SDK login and tool call, the node and CLI scripts, and the
//! small JSON readers their answers need.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::procs::*;
use super::stack::Stack;
use crate::support::helpers::*;

pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub fn b(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

pub fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(-1)
}

/// An MCP `initialize` request, as a client's first message.
pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

/// Without a token, the proxy answers with verify's RFC 9728 challenge, and the metadata it
/// points to is served through the proxy without a token.
pub async fn assert_unauthenticated_challenge(stack: &Stack) {
    let proxy = stack.proxy.name();
    let res = http()
        .post(&stack.mcp_url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INITIALIZE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{proxy} answers: {e}"));
    let status = res.status();
    let challenge = header(&res, "www-authenticate");
    let body = res.text().await.unwrap_or_default();
    assert_eq!(
        status,
        401,
        "{proxy}: unauthenticated POST /mcp: {body}{}",
        stack.logs()
    );
    let prm_url = format!(
        "http://localhost:{}/.well-known/oauth-protected-resource/mcp",
        stack.proxy_port
    );
    assert!(
        challenge.contains(&format!("resource_metadata=\"{prm_url}\"")),
        "{proxy}: WWW-Authenticate: {challenge}"
    );
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{proxy}: the 401 body is not JSON ({e}): {body}"));
    assert_eq!(s(&json, "/error"), "invalid_request", "{proxy}: {json}");
    let prm: Value = http()
        .get(&prm_url)
        .send()
        .await
        .expect("PRM")
        .json()
        .await
        .expect("PRM JSON");
    assert_eq!(s(&prm, "/resource"), stack.mcp_url, "{proxy}: {prm}");
    assert_eq!(
        s(&prm, "/authorization_servers/0"),
        stack.issuer,
        "{proxy}: {prm}"
    );
    // RFC 8414 metadata on the MCP host too, for clients that look there.
    let asm = http()
        .get(format!(
            "http://localhost:{}/.well-known/oauth-authorization-server",
            stack.proxy_port
        ))
        .send()
        .await
        .expect("AS metadata");
    assert_eq!(asm.status(), 200, "{proxy}: AS metadata on the MCP host");
}

pub use super::header;

/// The MCP TypeScript SDK client (`e2e/mcp-client-flow.mjs`) logs in through the stack's proxy
/// and calls a tool; refresh rotation and reuse detection work through it too.
pub async fn assert_sdk_login_and_tool_call(stack: &Stack) {
    assert_sdk_login_and_tool_call_as(stack, None).await;
}

/// [`assert_sdk_login_and_tool_call`], the client identified by the Client ID Metadata
/// Document at `metadata_url` when given; returns the flow's report.
pub async fn assert_sdk_login_and_tool_call_as(stack: &Stack, metadata_url: Option<&str>) -> Value {
    let proxy = stack.proxy.name();
    let (flow, stderr) = run_sdk_flow(stack, metadata_url, 90).await;
    let failed = format!("{proxy}: the MCP client flow failed");
    let mut checks = Checks::of(stack, &flow, &stderr, &failed);
    checks.check(n(&flow, "/first_status") == 401, "first MCP request: 401");
    checks.check(
        s(&flow, "/first_www_authenticate").contains("resource_metadata="),
        "first 401 names resource_metadata",
    );
    checks.check(
        !s(&flow, "/client_id").is_empty(),
        "a client_id was registered",
    );
    checks.check(
        s(&flow, "/issuer") == stack.issuer,
        "metadata issuer = ISSUER_URL",
    );
    checks.authorization_request();
    checks.browser_hops(|step| n(step, "/status"));
    checks.check(
        s(&flow, "/callback/iss") == stack.issuer,
        "the redirect to the client carries iss = issuer (RFC 9207)",
    );
    checks.check(
        s(&flow, "/token/jwt_header/typ") == "at+jwt",
        "access token typ at+jwt",
    );
    let aud = flow
        .pointer("/token/claims/aud")
        .cloned()
        .unwrap_or_default();
    let aud_ok = aud.as_str() == Some(stack.mcp_url.as_str())
        || aud
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(&stack.mcp_url)));
    checks.check(aud_ok, "aud names the MCP resource");
    let claims = [
        ("/token/claims/iss", stack.issuer.as_str(), "iss = issuer"),
        ("/token/claims/sub", "1001", "sub = GitHub id"),
        ("/token/claims/username", "alice", "username = GitHub login"),
        (
            "/token/claims/email",
            "alice@example.com",
            "email = the primary verified address (not the first one listed)",
        ),
    ];
    for (pointer, expected, what) in claims {
        checks.check(s(&flow, pointer) == expected, what);
    }
    checks.check(
        flow.pointer("/tools")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|x| x == "echo")),
        "tools/list includes echo",
    );
    checks.check(
        s(&flow, "/tool_result").contains("hi"),
        "the echo tool answered",
    );
    checks.check(
        s(&flow, "/tool_result_after_refresh").contains("hi"),
        "the refreshed access token works through the proxy",
    );
    for (pointer, what) in [
        ("/callback/state_matches", "state round-trips"),
        ("/refresh_rotated", "refresh rotates the refresh token"),
        ("/access_token_changed", "refresh issues a new access token"),
        (
            "/retry_same_successor",
            "a retry of the rotated-out refresh token gets the same successor",
        ),
        (
            "/old_refresh_refused",
            "once the successor was used, the rotated-out refresh token is refused with 400 invalid_grant",
        ),
        (
            "/family_refresh_refused",
            "reuse revokes the family: the current refresh token is refused too",
        ),
        (
            "/family_access_revoked",
            "reuse revokes the family: its access token gets 401 at verify within 5 s",
        ),
        (
            "/code_reuse_refused",
            "the authorization code cannot be redeemed again (400 invalid_grant)",
        ),
    ] {
        checks.check(b(&flow, pointer), what);
    }
    checks.finish(&format!("{proxy}: end-to-end"));
    flow
}

/// The MCP TypeScript SDK client's whole flow (`e2e/mcp-client-flow.mjs`) against the stack's
/// MCP URL, its client the Client ID Metadata Document at `metadata_url` when given: the
/// flow's report and stderr.
pub async fn run_sdk_flow(
    stack: &Stack,
    metadata_url: Option<&str>,
    limit_secs: u64,
) -> (Value, String) {
    let mut args = vec![stack.mcp_url.as_str()];
    args.extend(metadata_url);
    stack
        .run_script("mcp-client-flow.mjs", &args, limit_secs)
        .await
}

/// The checks a test makes of a script's JSON report: each one that fails is noted, and
/// [`Checks::finish`] fails the test naming them all, with the report, the script's stderr and
/// the stack's logs.
pub struct Checks<'a> {
    stack: &'a Stack,
    flow: &'a Value,
    pretty: String,
    stderr: &'a str,
    failures: Vec<String>,
}

impl<'a> Checks<'a> {
    /// Starts checking `flow`, which must say `ok`: else the test fails at once, saying
    /// `failed`, the flow's error, the report, the script's `stderr` and the stack's logs.
    pub fn of(stack: &'a Stack, flow: &'a Value, stderr: &'a str, failed: &str) -> Self {
        let pretty = serde_json::to_string_pretty(flow).unwrap_or_default();
        assert!(
            b(flow, "/ok"),
            "{failed}: {}\n{pretty}\nstderr:\n{stderr}{}",
            s(flow, "/error"),
            stack.logs()
        );
        Checks {
            stack,
            flow,
            pretty,
            stderr,
            failures: Vec::new(),
        }
    }

    pub fn check(&mut self, ok: bool, what: &str) {
        if !ok {
            self.failures.push(what.to_string());
        }
    }

    /// The client's authorization request: PKCE S256, and the MCP URL as the resource.
    pub fn authorization_request(&mut self) {
        let method = s(self.flow, "/authorization_request/code_challenge_method");
        self.check(method == "S256", "PKCE S256 in the authorization request");
        let resource = s(self.flow, "/authorization_request/resource");
        self.check(
            resource == self.stack.mcp_url,
            "resource = the MCP URL in the authorization request",
        );
    }

    /// The browser's hops through a first login (`/browser_steps`, each read by `status`).
    pub fn browser_hops(&mut self, status: impl Fn(&Value) -> i64) {
        let statuses: Vec<i64> = (self.flow.pointer("/browser_steps"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(status).collect())
            .unwrap_or_default();
        self.check(
            statuses == [307, 200, 303, 302, 302],
            "browser hops authorize 307, consent 200, consent POST 303, GitHub 302, callback 302",
        );
    }

    /// Fails the test if any check did, saying `what` checks failed.
    pub fn finish(self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what} checks failed:\n  - {}\n{}\nstderr:\n{}{}",
            self.failures.join("\n  - "),
            self.pretty,
            self.stderr,
            self.stack.logs()
        );
    }
}

/// server-everything (streamable HTTP) on a free loopback port, its log in `logs`; the
/// process and its MCP URL.
pub async fn start_server_everything(logs: &Path) -> (Proc, String) {
    let port = free_port();
    let mut cmd = clean_command(&node22());
    cmd.arg(server_everything())
        .arg("streamableHttp")
        .env("PORT", port.to_string());
    let mut proc = Proc::spawn("server-everything", cmd, logs);
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_http(&mut proc, &url, None, 20).await;
    (proc, url)
}

/// An e2e script outside a [`Stack`]: Node 22 for `.mjs`, the Python SDK's venv for `.py`;
/// its last stdout line is JSON. Returns it and the script's stderr.
pub async fn run_e2e_script(script: &str, args: &[&str], limit: Duration) -> (Value, String) {
    run_e2e_script_with(script, args, &[], limit).await
}

/// [`run_e2e_script`] with more environment variables.
pub async fn run_e2e_script_with(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Value, String) {
    let program = if script.ends_with(".py") {
        python_mcp()
    } else {
        node22()
    };
    let mut cmd = clean_command(&program);
    cmd.arg(e2e_dir().join(script))
        .args(args)
        .envs(env.iter().copied())
        .env("E2E_NODE", node22());
    run_json_command(script, cmd, limit, String::new).await
}

/// Runs `cmd` in e2e/ within `limit`; its last stdout line is JSON. Returns it and the
/// command's stderr; a failure panics with its output and `context()` (the stack's logs).
pub async fn run_json_command(
    name: &str,
    mut cmd: Command,
    limit: Duration,
    context: impl FnOnce() -> String,
) -> (Value, String) {
    cmd.current_dir(e2e_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (stdout, stderr, status) = tokio::task::spawn_blocking(move || run_bounded(cmd, limit))
        .await
        .expect("script runner")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string();
    let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "{name} ({status}) printed no JSON line ({e}):\nstdout:\n{stdout}\nstderr:\n{stderr}{}",
            context()
        )
    });
    (json, stderr)
}

/// DPoP through the proxy at `resource` (an echo backend behind verify with `DPOP_NONCE`): a
/// proof without a nonce comes back 401 `use_dpop_nonce` with the `DPoP-Nonce` to use; with it,
/// the DPoP-bound token reaches the backend; the same token as a bearer token, and the same
/// proof again, come back 401 with verify's `DPoP` challenge. What went wrong, if anything.
pub async fn dpop_through_proxy(stack: &Stack, resource: &str) -> Vec<String> {
    let key = super::dpop::DpopKey::generate();
    let token = stack.mint(&[
        "--scope",
        "mcp",
        "--resource",
        resource,
        "--bind-dpop-jkt",
        &key.jkt(),
    ]);
    let send = |scheme: &str, proof: Option<&str>| {
        let mut req = http()
            .post(resource)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("Authorization", format!("{scheme} {token}"))
            .body(INITIALIZE);
        if let Some(proof) = proof {
            req = req.header("DPoP", proof);
        }
        async move {
            let res = req.send().await.expect("the proxy answers");
            let status = res.status().as_u16();
            let header = |name: &str| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let challenge = (header("www-authenticate"), header("dpop-nonce"));
            (status, challenge, res.text().await.unwrap_or_default())
        }
    };
    let mut failures = Vec::new();
    let proof = key.proof("POST", resource, Some(&token), serde_json::json!({}));
    let (status, (challenge, nonce), body) = send("DPoP", Some(&proof)).await;
    if status != 401 || !challenge.contains("use_dpop_nonce") || nonce.is_empty() {
        failures.push(format!(
            "DPoP: no nonce asked for: {status} {challenge:?} nonce {nonce:?} {body}"
        ));
    }
    let nonce = serde_json::json!({ "nonce": nonce });
    let proof = key.proof("POST", resource, Some(&token), nonce);
    let (status, _, body) = send("DPoP", Some(&proof)).await;
    if status != 200 || !body.contains("raw_headers") {
        failures.push(format!(
            "DPoP: a valid proof did not reach the backend: {status} {body}"
        ));
    }
    for (what, scheme, proof) in [
        ("the bound token as a bearer token", "Bearer", None),
        ("a used proof", "DPoP", Some(proof.as_str())),
    ] {
        let (status, (challenge, _), body) = send(scheme, proof).await;
        if status != 401 || !challenge.starts_with("DPoP algs=") {
            failures.push(format!("DPoP: {what}: {status} {challenge:?} {body}"));
        }
    }
    failures
}
