//! The three proxies we ship a configuration for (`traefik/`, `caddy/Caddyfile`,
//! `nginx/mcp-gateway.conf`), each run as shipped in front of the real services
//! (`e2e_stack.rs`), and each held to the same behaviour:
//!
//! - without a token: 401 with verify's RFC 9728 challenge and JSON body; metadata without a
//!   token; a bad token: 401 `invalid_token` with its challenge and JSON body
//! - the MCP TypeScript SDK logs in and calls a tool (for Traefik: `e2e.rs`)
//! - a token without a route's scope: 403 with the `insufficient_scope` challenge and JSON body,
//!   whatever `X-Forwarded-Uri` the client sends; with the scope it passes
//! - verify decides on the proxy's own view of the request: a client's `X-Forwarded-Host`,
//!   `-Proto`, `-For`, `-Tls-Client-Cert`, `Forwarded` or absolute request line never make a
//!   token valid where it is not (each case first shown to be accepted by verify when the
//!   header is really the proxy's)
//! - the backend (a header echo) sees the identity verify vouched for and nothing the client
//!   forged: no spoofed identity or forwarding headers, no alias spellings (`X_User_Id`), not
//!   the client's token; requests that skip the auth step (metadata paths with `..`, the
//!   internal auth location) never reach it
//! - when verify cannot decide (Redis down): 503 with `Retry-After`, never a 401
//!
//! Verify runs with `REQUIRED_SCOPES=/admin=mcp:admin` and a second resource host,
//! `victim.test`, for tokens of another resource. Tokens are minted with the CLI.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::e2e_flows::*;
use crate::support::helpers::*;
use crate::support::procs::*;
use crate::support::stack::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_traefik_refuses_spoofed_headers_and_missing_scopes() {
    proxy_suite(Proxy::Traefik, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_caddy_forward_auth_login_scopes_and_spoofing() {
    proxy_suite(Proxy::Caddy, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_nginx_auth_request_login_scopes_and_spoofing() {
    proxy_suite(Proxy::Nginx, true).await;
}

/// A header a client forges, on every request of the spoofing checks; none of these values
/// may reach verify's decision or the backend.
const SPOOFED: &[(&str, &str)] = &[
    ("X-User-Id", "spoof-admin"),
    ("x-user-id", "spoof-admin-2"),
    ("X-User-Name", "spoof-admin"),
    ("X-User-Email", "spoof@evil.test"),
    ("X-Auth-Client-Id", "spoof-client"),
    ("X-Auth-Scope", "spoof mcp:admin"),
    ("X-Auth-Subject-Type", "client"),
    ("X-Auth-Token", "spoof-token"),
    ("X-User-Groups", "admins"),
    ("X-Upstream-Token", "spoof-upstream-token"),
    ("X_User_Id", "spoof-admin"),
    ("X-User_Name", "spoof-admin"),
    ("X_Auth_Token", "spoof-token"),
    ("X-Forwarded-For", "203.0.113.66"),
    ("X-Forwarded-Host", "spoof.test"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "6666"),
    ("X-Forwarded-Uri", "/spoof"),
    ("X-Forwarded-Method", "SPOOF"),
    ("X-Forwarded-Prefix", "/spoof"),
    ("X-Forwarded-Server", "spoof"),
    ("X-Forwarded-Ssl", "spoof"),
    ("X-Forwarded-Scheme", "spoof"),
    ("X-Forwarded-Tls-Client-Cert", "spoof"),
    ("X-Forwarded-Tls-Client-Cert-Info", "spoof"),
    ("X-Real-Ip", "203.0.113.66"),
    ("Forwarded", "for=203.0.113.66;host=spoof.test;proto=https"),
];

async fn proxy_suite(proxy: Proxy, sdk_flow: bool) {
    if !e2e_enabled(&[proxy.bin()]) {
        return;
    }
    let mut stack = Stack::builder(proxy)
        .verify_env("RESOURCE_HOSTS", "localhost, victim.test")
        .verify_env("REQUIRED_SCOPES", "/admin=mcp:admin")
        // What clients are told to ask for stays `mcp` (the authorization server's scopes).
        .verify_env("SCOPES_SUPPORTED", "mcp")
        .verify_env("DPOP_NONCE", "true")
        .start()
        .await;
    let name = proxy.name();

    assert_unauthenticated_challenge(&stack).await;
    // The services' metrics are for Prometheus, not published through the proxy.
    let metrics = request(&format!("{}/metrics", stack.issuer), None, &[]).await;
    assert_eq!(
        metrics.status, 404,
        "{name}: /metrics must not be public on the auth host"
    );
    if sdk_flow {
        assert_sdk_login_and_tool_call(&stack).await;
    }

    // The same proxy configuration in front of a header echo, to see what reaches a backend.
    let echo = stack.start_header_echo().await;
    let port = stack.add_proxy(proxy, &echo).await;
    let base = format!("http://localhost:{port}");
    let resource = format!("{base}/mcp");
    let verify = stack.verify_urls[0].clone();
    let mut failures: Vec<String> = Vec::new();

    // A bad token: 401 invalid_token, challenge and JSON body (nginx rebuilds the body).
    let res = request(&resource, Some("not.a.jwt"), &[]).await;
    expect_refusal(&mut failures, "bad token", &res, 401, "invalid_token", port);

    // Identity and forwarding headers from the client never reach the backend.
    let token = stack.mint(&["--scope", "mcp", "--resource", &resource]);
    let res = request(&resource, Some(&token), SPOOFED).await;
    match echoed(&res) {
        None => failures.push(format!(
            "spoofed headers: expected 200 from the backend, got {} {}",
            res.status, res.body
        )),
        Some(seen) => check_backend_headers(&mut failures, &seen, port),
    }
    failures.extend(dpop_through_proxy(&stack, &resource).await);

    // A client that names verify's identity headers as hop-by-hop (`Connection`) must not make
    // the proxy drop them before the backend: the call would arrive unattributed.
    let res = request(
        &resource,
        Some(&token),
        &[(
            "Connection",
            "close, X-User-Id, X-User-Name, X-Auth-Scope, X-Auth-Client-Id, X-User-Email, X-Auth-Denied-Tools",
        )],
    )
    .await;
    match echoed(&res) {
        None => failures.push(format!(
            "Connection naming the identity headers: expected 200 from the backend, got {} {}",
            res.status, res.body
        )),
        Some(seen) => {
            for (name, want) in [
                ("x-user-id", "1001"),
                ("x-user-name", "alice"),
                ("x-auth-scope", "mcp"),
                ("x-auth-client-id", "e2e-cli"),
            ] {
                let got = s(&seen, &format!("/headers/{name}"));
                expect(
                    &mut failures,
                    got == want,
                    format!("Connection: {name}: the backend got {got:?}, expected {want:?}"),
                );
            }
        }
    }

    // X-Forwarded-Host / Forwarded / absolute request line: a token of another resource.
    let other = stack.mint(&["--scope", "mcp", "--resource", "http://victim.test/mcp"]);
    expect_control(
        &mut failures,
        &verify,
        &other,
        &[
            ("X-Forwarded-Host", "victim.test"),
            ("X-Forwarded-Proto", "http"),
        ],
        "the victim.test token for victim.test",
    )
    .await;
    let res = request(
        &resource,
        Some(&other),
        &[
            ("X-Forwarded-Host", "victim.test"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Port", "80"),
            ("Forwarded", "host=victim.test;proto=http"),
        ],
    )
    .await;
    expect_refusal(
        &mut failures,
        "X-Forwarded-Host: victim.test with a victim.test token",
        &res,
        401,
        "invalid_token",
        port,
    );
    let raw = raw_http(
        port,
        format!(
            "GET {resource} HTTP/1.1\r\nHost: victim.test\r\nAuthorization: Bearer {other}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    expect(
        &mut failures,
        raw.starts_with("HTTP/1.1 401"),
        format!(
            "absolute request line for localhost, Host: victim.test: expected 401, got {}",
            first_line(&raw)
        ),
    );
    let raw = raw_http(
        port,
        format!(
            "GET http://victim.test/mcp HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Bearer {other}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    expect(
        &mut failures,
        !raw.contains("raw_headers"),
        format!(
            "absolute request line for victim.test reached the backend: {}",
            first_line(&raw)
        ),
    );

    // X-Forwarded-Proto: a token for https://localhost:P/mcp over http.
    let https = stack.mint(&[
        "--scope",
        "mcp",
        "--resource",
        &format!("https://localhost:{port}/mcp"),
    ]);
    let host = format!("localhost:{port}");
    expect_control(
        &mut failures,
        &verify,
        &https,
        &[
            ("X-Forwarded-Host", host.as_str()),
            ("X-Forwarded-Proto", "https"),
        ],
        "the https token for https",
    )
    .await;
    let res = request(&resource, Some(&https), &[("X-Forwarded-Proto", "https")]).await;
    expect_refusal(
        &mut failures,
        "X-Forwarded-Proto: https over http",
        &res,
        401,
        "invalid_token",
        port,
    );

    // X-Forwarded-For: a token bound to another client address.
    let bound = stack.mint(&[
        "--scope",
        "mcp",
        "--resource",
        &resource,
        "--bind-ip",
        "203.0.113.7",
    ]);
    expect_control(
        &mut failures,
        &verify,
        &bound,
        &[
            ("X-Forwarded-Host", host.as_str()),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
        "the IP-bound token from its address",
    )
    .await;
    let res = request(
        &resource,
        Some(&bound),
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Real-Ip", "203.0.113.7"),
            ("Forwarded", "for=203.0.113.7"),
        ],
    )
    .await;
    expect_refusal(
        &mut failures,
        "X-Forwarded-For: the bound address, from 127.0.0.1",
        &res,
        401,
        "invalid_token",
        port,
    );
    // ... while the proxy does tell verify the real address.
    let loopback = stack.mint(&[
        "--scope",
        "mcp",
        "--resource",
        &resource,
        "--bind-ip",
        "127.0.0.1",
    ]);
    let res = request(&resource, Some(&loopback), &[]).await;
    expect(
        &mut failures,
        echoed(&res).is_some(),
        format!(
            "a token bound to 127.0.0.1 from 127.0.0.1: expected 200, got {} {}",
            res.status, res.body
        ),
    );
    // From another address (127.0.0.2 is loopback too): verify believes the proxy's
    // X-Forwarded-For (the proxy is in TRUSTED_PROXIES), not its own TCP peer.
    let elsewhere = stack.mint(&[
        "--scope",
        "mcp",
        "--resource",
        &resource,
        "--bind-ip",
        "127.0.0.2",
    ]);
    let res = request_from("127.0.0.2", &resource, Some(&elsewhere), &[]).await;
    expect(
        &mut failures,
        echoed(&res).is_some(),
        format!(
            "a token bound to 127.0.0.2 from 127.0.0.2: expected 200, got {} {}",
            res.status, res.body
        ),
    );
    let res = request_from("127.0.0.2", &resource, Some(&loopback), &[]).await;
    expect_refusal(
        &mut failures,
        "a token bound to 127.0.0.1, from 127.0.0.2",
        &res,
        401,
        "invalid_token",
        port,
    );

    // X-Forwarded-Tls-Client-Cert: a certificate-bound token (RFC 8705), no TLS at all.
    let der = b"e2e: not a certificate, but verify hashes whatever it is given";
    let cert = base64::engine::general_purpose::STANDARD.encode(der);
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der));
    let cert_bound = stack.mint(&[
        "--scope",
        "mcp",
        "--resource",
        &resource,
        "--bind-cert-thumbprint",
        &thumbprint,
    ]);
    expect_control(
        &mut failures,
        &verify,
        &cert_bound,
        &[
            ("X-Forwarded-Host", host.as_str()),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Tls-Client-Cert", cert.as_str()),
        ],
        "the certificate-bound token with its certificate",
    )
    .await;
    let res = request(
        &resource,
        Some(&cert_bound),
        &[("X-Forwarded-Tls-Client-Cert", cert.as_str())],
    )
    .await;
    expect_refusal(
        &mut failures,
        "X-Forwarded-Tls-Client-Cert from the client",
        &res,
        401,
        "invalid_token",
        port,
    );

    // Scopes: /admin needs mcp:admin, whatever X-Forwarded-Uri the client claims.
    let admin = format!("{base}/admin");
    let res = request(&admin, Some(&token), &[]).await;
    expect_refusal(
        &mut failures,
        "/admin without mcp:admin",
        &res,
        403,
        "insufficient_scope",
        port,
    );
    expect(
        &mut failures,
        res.www_authenticate.contains("scope=\"mcp:admin\""),
        format!(
            "the 403 challenge names the scope: {}",
            res.www_authenticate
        ),
    );
    let res = request(&admin, Some(&token), &[("X-Forwarded-Uri", "/mcp")]).await;
    expect_refusal(
        &mut failures,
        "/admin with X-Forwarded-Uri: /mcp",
        &res,
        403,
        "insufficient_scope",
        port,
    );
    let with_scope = stack.mint(&["--scope", "mcp mcp:admin", "--resource", &resource]);
    let res = request(&admin, Some(&with_scope), &[]).await;
    match echoed(&res) {
        Some(seen) => expect(
            &mut failures,
            s(&seen, "/headers/x-auth-scope") == "mcp mcp:admin",
            format!("/admin with mcp:admin: X-Auth-Scope {seen}"),
        ),
        None => failures.push(format!(
            "/admin with mcp:admin: expected 200, got {} {}",
            res.status, res.body
        )),
    }

    // Paths that skip the auth step must not lead to the backend.
    for path in [
        "/.well-known/oauth-protected-resource/../../mcp",
        "/.well-known/oauth-protected-resource/%2e%2e/%2e%2e/mcp",
        "/.well-known/oauth-authorization-server/../../mcp",
        "/.well-known/openid-configuration/../mcp",
        "/.mcp-gateway/verify",
        "//mcp",
    ] {
        let raw = raw_http(
            port,
            format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        expect(
            &mut failures,
            !raw.contains("raw_headers"),
            format!(
                "GET {path} without a token reached the backend: {}",
                first_line(&raw)
            ),
        );
    }

    // Redis down, a token verify has not seen: 503 with Retry-After, never a 401.
    let fresh = stack.mint(&["--scope", "mcp", "--resource", &resource]);
    stack.redis.stop().await;
    expect_unavailable(
        &mut failures,
        "Redis down",
        &request(&resource, Some(&fresh), &[]).await,
    );

    // verify itself down: the proxy answers as verify would when it cannot decide (503 with
    // Retry-After and the JSON error), not with a bare 500 or 502.
    stack.stop_verify();
    expect_unavailable(
        &mut failures,
        "verify down",
        &request(&resource, Some(&fresh), &[]).await,
    );

    assert!(
        failures.is_empty(),
        "{name}: {} check(s) failed:\n  - {}\n{}",
        failures.len(),
        failures.join("\n  - "),
        stack.logs()
    );
}

/// 503 with Retry-After and the JSON `temporarily_unavailable`: what MCP clients retry on.
fn expect_unavailable(failures: &mut Vec<String>, when: &str, res: &Answer) {
    expect(
        failures,
        res.status == 503
            && res.retry_after.parse::<u64>().is_ok()
            && json_error(res) == "temporarily_unavailable",
        format!(
            "{when}: expected 503 with Retry-After and a JSON body, got {} Retry-After {:?} {}",
            res.status, res.retry_after, res.body
        ),
    );
}

fn expect(failures: &mut Vec<String>, ok: bool, what: String) {
    if !ok {
        failures.push(what);
    }
}

/// A refusal as MCP clients need it: the status, the RFC 6750 challenge with its error and the
/// metadata URL, and a JSON body with the same error.
fn expect_refusal(
    failures: &mut Vec<String>,
    what: &str,
    res: &Answer,
    status: u16,
    error: &str,
    port: u16,
) {
    let metadata = format!(
        "resource_metadata=\"http://localhost:{port}/.well-known/oauth-protected-resource/mcp\""
    );
    let ok = res.status == status
        && res.www_authenticate.contains(&format!("error=\"{error}\""))
        && res.www_authenticate.contains(&metadata)
        && res.www_authenticate_count == 1
        && json_error(res) == error;
    expect(
        failures,
        ok,
        format!(
            "{what}: expected {status} {error} with one challenge naming the metadata and a JSON body; \
             got {} WWW-Authenticate ×{} {:?} body {}",
            res.status, res.www_authenticate_count, res.www_authenticate, res.body
        ),
    );
}

struct Answer {
    status: u16,
    www_authenticate: String,
    www_authenticate_count: usize,
    retry_after: String,
    body: String,
}

/// The `error` of a JSON error body that also has an `error_description`; "" otherwise.
fn json_error(res: &Answer) -> String {
    serde_json::from_str::<Value>(&res.body)
        .ok()
        .filter(|v| !s(v, "/error_description").is_empty())
        .map(|v| s(&v, "/error").to_string())
        .unwrap_or_default()
}

/// The backend's echo, when the request reached it.
fn echoed(res: &Answer) -> Option<Value> {
    if res.status != 200 {
        return None;
    }
    serde_json::from_str::<Value>(&res.body)
        .ok()
        .filter(|v| v.get("raw_headers").is_some())
}

/// An MCP request (POST initialize) through the proxy.
async fn request(url: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    send(http(), url, token, headers).await
}

/// `request` from the loopback address `local` instead of 127.0.0.1.
async fn request_from(
    local: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let client = reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().ok())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    send(client, url, token, headers).await
}

async fn send(
    client: reqwest::Client,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INITIALIZE);
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let www: Vec<String> = res
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_string())
        .collect();
    Answer {
        status: res.status().as_u16(),
        www_authenticate: www.first().cloned().unwrap_or_default(),
        www_authenticate_count: www.len(),
        retry_after: header(&res, "retry-after"),
        body: res.text().await.unwrap_or_default(),
    }
}

/// `/verify` called directly, as a proxy would with these forwarding headers.
/// The control of a bypass check: verify itself, asked directly with `headers`, accepts
/// `token` (200); `what` says for what.
async fn expect_control(
    failures: &mut Vec<String>,
    verify: &str,
    token: &str,
    headers: &[(&str, &str)],
    what: &str,
) {
    let direct = verify_directly(verify, token, headers).await;
    expect(
        failures,
        direct == 200,
        format!("control: verify accepts {what} ({direct})"),
    );
}

async fn verify_directly(verify: &str, token: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = http()
        .get(format!("{verify}/verify"))
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Forwarded-Uri", "/mcp")
        .header("X-Forwarded-Method", "POST");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("verify answers").status().as_u16()
}

/// What the header echo saw, held against what verify vouched for: alice (GitHub id 1001),
/// client `e2e-cli`, scope `mcp`, no e-mail (the token has none), no token forwarded.
fn check_backend_headers(failures: &mut Vec<String>, seen: &Value, port: u16) {
    let headers = seen.get("headers").cloned().unwrap_or_default();
    let raw: Vec<(String, String)> = seen
        .get("raw_headers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| (s(p, "/0").to_string(), s(p, "/1").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let got = |name: &str| s(&headers, &format!("/{name}")).to_string();
    for (name, want) in [
        ("x-user-id", "1001"),
        ("x-user-name", "alice"),
        ("x-auth-client-id", "e2e-cli"),
        ("x-auth-scope", "mcp"),
        ("x-auth-subject-type", "user"),
    ] {
        expect(
            failures,
            got(name) == want,
            format!(
                "backend {name}: {:?}, expected {want:?} (from verify)",
                got(name)
            ),
        );
    }
    for name in [
        "x-user-email",
        "x-auth-token",
        "x-user-groups",
        "x-upstream-token",
        "authorization",
    ] {
        expect(
            failures,
            headers.get(name).is_none(),
            format!("backend received {name}: {:?}", got(name)),
        );
    }
    for (name, value) in &raw {
        let lower = value.to_ascii_lowercase();
        expect(
            failures,
            !lower.contains("spoof") && !lower.contains("203.0.113.66"),
            format!("a forged header reached the backend: {name}: {value}"),
        );
        expect(
            failures,
            !name.contains('_'),
            format!("a header with an underscore reached the backend: {name}: {value}"),
        );
    }
    let count = raw
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-user-id"))
        .count();
    expect(
        failures,
        count == 1,
        format!("backend received X-User-Id {count} times"),
    );
    for (name, want) in [
        ("x-forwarded-proto", "http".to_string()),
        ("x-forwarded-host", format!("localhost:{port}")),
    ] {
        let value = got(name);
        expect(
            failures,
            value.is_empty() || value == want,
            format!("backend {name}: {value:?}, expected the proxy's own {want:?}"),
        );
    }
    expect(
        failures,
        s(seen, "/body") == INITIALIZE,
        format!(
            "the request body reached the backend intact: {:?}",
            s(seen, "/body")
        ),
    );
}

/// One HTTP/1.1 exchange over a plain socket, for request lines no HTTP client sends; the
/// whole answer (the request must say `Connection: close`).
async fn raw_http(port: u16, request: String) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut conn =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        conn.set_write_timeout(Some(Duration::from_secs(10))).ok();
        conn.write_all(request.as_bytes()).expect("send");
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("raw request")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("(no answer)")
}

/// The per-tool policy through a real Traefik with the shipped `forwardBody` configuration:
/// verify decides from the JSON-RPC body whatever headers the client sends, and the backend
/// still receives the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_traefik_forwards_the_body_for_the_tool_policy() {
    if !e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let mut stack = Stack::builder(Proxy::Traefik)
        .verify_env("TOOL_POLICY", "tools/call delete_*=mcp:admin")
        .verify_env("SCOPE_HIERARCHY", "mcp:admin > mcp")
        .verify_env("TOOL_POLICY_HEADER", "true")
        .start()
        .await;
    let echo = stack.start_header_echo().await;
    let port = stack.add_proxy(Proxy::Traefik, &echo).await;
    let resource = format!("http://localhost:{port}/mcp");
    let plain = stack.mint(&["--scope", "mcp", "--resource", &resource]);
    let admin = stack.mint(&["--scope", "mcp:admin", "--resource", &resource]);
    let call = |name: &str| {
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {"pad": "x".repeat(2000)}}}).to_string()
    };
    let post = |token: &str, body: String, headers: Vec<(&'static str, &'static str)>| {
        let mut req = http()
            .post(&resource)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap() }
    };

    let resp = post(&plain, call("echo"), vec![]).await;
    assert_eq!(resp.status(), 200, "an unruled tool passes");
    let seen: Value = resp.json().await.unwrap();
    assert!(
        seen["body"].as_str().unwrap().contains("\"echo\""),
        "the backend got the body"
    );
    assert_eq!(seen["headers"]["x-auth-denied-tools"], "delete_*");

    let resp = post(&plain, call("delete_everything"), vec![]).await;
    assert_eq!(resp.status(), 403);
    let www = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(www.contains(r#"scope="mcp:admin""#), "{www}");
    // Forged 2026 headers naming a harmless tool: the body wins, as a mismatch.
    let resp = post(
        &plain,
        call("delete_everything"),
        vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], -32020);
    // The broader scope calls it.
    let resp = post(&admin, call("delete_everything"), vec![]).await;
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["headers"]["x-auth-denied-tools"], "");
}

/// A tool rule behind the proxies that send verify no body (Caddy's `forward_auth`, nginx's
/// `auth_request`), in front of an MCP server of the 2025 era that never compares
/// `Mcp-Method`/`Mcp-Name` with its body (server-everything): a lying header never reaches the
/// forbidden tool. verify refuses every MCP POST it cannot read (TOOL_POLICY_TRUST_HEADERS is
/// off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_lying_mcp_method_never_reaches_a_forbidden_tool_behind_header_only_proxies() {
    for proxy in [Proxy::Caddy, Proxy::Nginx] {
        if !e2e_enabled(&[proxy.bin()]) {
            return;
        }
        let stack = Stack::builder(proxy)
            .verify_env("TOOL_POLICY", "tools/call get-env=mcp:admin")
            .start()
            .await;
        let token = stack.mint(&["--scope", "mcp", "--resource", &stack.mcp_url]);
        let name = proxy.name();
        let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get-env","arguments":{}}}"#;
        for headers in [
            vec![("Mcp-Method", "tools/list")],
            vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")],
            vec![],
        ] {
            let mut req = http()
                .post(&stack.mcp_url)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .header("Accept", "application/json, text/event-stream")
                .body(call);
            for (k, v) in &headers {
                req = req.header(*k, *v);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(status, 403, "{name} {headers:?}: {body}\n{}", stack.logs());
            assert!(
                !body.contains("PATH"),
                "{name}: the environment leaked: {body}"
            );
        }
    }
}

/// Through Traefik (the body reaches verify), a body the MCP server would decode otherwise
/// than verify reads it is refused: UTF-7 (`+AGc-et-env` is `get-env` to an Express server)
/// and compressed bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_body_in_another_charset_or_encoding_is_refused_through_traefik() {
    if !e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let stack = Stack::builder(Proxy::Traefik)
        .verify_env("TOOL_POLICY", "tools/call get-env=mcp:admin")
        .start()
        .await;
    let token = stack.mint(&["--scope", "mcp", "--resource", &stack.mcp_url]);
    let utf7 = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"+AGc-et-env","arguments":{}}}"#;
    let member = r#"{"jsonrpc":"2.0","id":2,"+AG0-ethod":"tools/call","method":"tools/list","params":{"name":"get-env"}}"#;
    for (content_type, encoding, body) in [
        ("application/json; charset=utf-7", None, utf7),
        ("application/json; charset=UTF-7", None, member),
        ("application/json; charset=utf-16", None, utf7),
        ("application/json", Some("gzip"), utf7),
        ("application/json", Some("deflate"), utf7),
        ("application/json", Some("br"), utf7),
    ] {
        let mut req = http()
            .post(&stack.mcp_url)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", content_type)
            .header("Accept", "application/json, text/event-stream")
            .body(body);
        if let Some(encoding) = encoding {
            req = req.header("Content-Encoding", encoding);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(
            status,
            400,
            "{content_type} {encoding:?}: {text}\n{}",
            stack.logs()
        );
        let answer: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(answer["error"]["code"], -32700, "verify's refusal: {text}");
    }
}
