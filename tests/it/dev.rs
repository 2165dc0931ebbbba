//! `mcp-gateway dev`, run as a newcomer runs it: one process, embedded store, development
//! login, loopback only.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::dev_gateway::{DevGateway, dev_login, echo_upstream};
use crate::support::helpers::*;
use crate::support::procs::sigterm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_a_complete_gateway_on_loopback() {
    let (dev, stdout) = DevGateway::spawn(&[]);
    let banner = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.starts_with("Press Ctrl-C"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await
    .unwrap();
    let issuer = dev.issuer.clone();
    let verify = dev.verify.clone();
    assert!(banner.contains(&issuer), "{banner}");
    assert!(banner.contains(&format!("{verify}/verify")), "{banner}");
    // Without --upstream the banner says how to put an MCP server behind it.
    assert!(banner.contains("--upstream"), "{banner}");

    // Verify's challenge points at the metadata, which names the issuer.
    let for_localhost = |path: &str| {
        forwarded_for(
            http().get(format!("{verify}{path}")),
            "http",
            "localhost:3000",
        )
    };
    let resp = for_localhost("/verify").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains(
        "resource_metadata=\"http://localhost:3000/.well-known/oauth-protected-resource/mcp\""
    ));
    let prm = body_json(for_localhost("/.well-known/oauth-protected-resource/mcp")).await;
    assert_eq!(prm["authorization_servers"], json!([issuer]));

    // Register, authorize, consent, development login, token.
    let (_, access) = dev_login(&issuer, "http://localhost:3000/mcp", "newcomer").await;
    let access = access.as_str();
    let resp = for_localhost("/verify")
        .header("Authorization", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-user-name"], "newcomer");
    drop(dev);
}

#[test]
fn dev_mode_refuses_to_listen_beyond_loopback() {
    let out = Command::new(bin("mcp-gateway"))
        .args(["dev", "--listen", "0.0.0.0:0"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// `mcp-gateway dev --upstream URL`: one command from an MCP server to a protected URL. The
/// proxy's origin serves the metadata naming itself as the resource; without a token the
/// answer is verify's challenge; with one, the MCP server gets the identity headers verify
/// vouches for (never the client's own, nor its Authorization), and a streamed answer arrives
/// chunk by chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_upstream_puts_an_mcp_server_behind_the_gateway() {
    let (upstream, next_chunk, _echo) = echo_upstream().await;
    let (dev, mcp_port) = DevGateway::start_upstream(&upstream).await;
    let origin = format!("http://127.0.0.1:{mcp_port}");
    let mcp = format!("{origin}/mcp");
    let issuer = dev.issuer.clone();

    let resp = http().post(&mcp).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let prm_url = format!("{origin}/.well-known/oauth-protected-resource/mcp");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{prm_url}\"")),
        "{challenge}"
    );
    let prm: Value = body_json(http().get(&prm_url)).await;
    assert_eq!(prm["resource"], mcp.as_str());
    assert_eq!(prm["authorization_servers"], json!([issuer]));
    let asm: Value =
        body_json(http().get(format!("{origin}/.well-known/oauth-authorization-server"))).await;
    assert_eq!(asm["issuer"], issuer.as_str());

    // A login for the proxy's resource, as an MCP client does it.
    let (client_id, access) = dev_login(&issuer, &mcp, "alice").await;
    let (client_id, access) = (client_id.as_str(), access.as_str());

    let forged = [
        ("X-User-Id", "admin"),
        ("x_user_name", "root"),
        ("X-Auth-Scope", "everything"),
    ];
    let seen = post_tools_list(&format!("{mcp}?x=1"), access, &forged).await;
    let headers = &seen["headers"];
    assert_eq!(seen["path"], "/mcp?x=1", "{seen}");
    assert_eq!(headers["x-user-id"], "dev-alice", "{seen}");
    assert_eq!(headers["x-user-name"], "alice", "{seen}");
    assert_eq!(headers["x-auth-client-id"], client_id, "{seen}");
    assert_eq!(headers["x-auth-scope"], "mcp", "{seen}");
    assert!(headers.get("authorization").is_none(), "{seen}");
    assert!(headers.get("x_user_name").is_none(), "{seen}");

    // Streamed: the first event is through before the MCP server sends the last.
    let mut stream = http()
        .get(format!("{mcp}/stream"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("the first event arrives while the MCP server holds the rest")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    next_chunk.send(()).unwrap();
    let rest = stream.text().await.unwrap();
    assert_eq!(rest, "data: last\n\n");
    drop(dev);
}

/// The dev proxy tells verify where a request went from its own listener and the request line:
/// a client's `Host`, `Forwarded` or `X-Forwarded-*` naming another resource of the same
/// gateway never make that resource's token valid here, nor reach the MCP server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_upstream_ignores_forwarding_headers_from_the_client() {
    let (upstream, _next, _echo) = echo_upstream().await;
    let (dev, mcp_port) = DevGateway::start_upstream(&upstream).await;
    let mcp = format!("http://127.0.0.1:{mcp_port}/mcp");
    // A token for another MCP server this gateway guards.
    let elsewhere = "http://127.0.0.1:9/mcp";
    let (_, other) = dev_login(&dev.issuer, elsewhere, "alice").await;
    let forged = [
        ("X-Forwarded-Host", "127.0.0.1:9"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Port", "9"),
        ("Forwarded", "host=127.0.0.1:9;proto=http"),
        ("X-Forwarded-For", "203.0.113.66"),
    ];
    let mut req = http().post(&mcp).bearer_auth(&other).body("{}");
    for (k, v) in forged {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);
    let mut req = http()
        .post(&mcp)
        .bearer_auth(&other)
        .header("Host", "127.0.0.1:9")
        .body("{}");
    for (k, v) in forged {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);
    // This resource's token passes, and the MCP server sees the proxy's view only.
    let (_, access) = dev_login(&dev.issuer, &mcp, "alice").await;
    let mut req = http().post(&mcp).bearer_auth(&access).body("{}");
    for (k, v) in forged {
        req = req.header(k, v);
    }
    let seen: Value = body_json(req).await;
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-forwarded-host"],
        format!("127.0.0.1:{mcp_port}"),
        "{seen}"
    );
    assert!(headers.get("forwarded").is_none(), "{seen}");
    assert!(headers.get("x-forwarded-port").is_none(), "{seen}");
    assert!(!seen.to_string().contains("203.0.113.66"), "{seen}");
    drop(dev);
}

/// `e2e/dev-proxy-flow.mjs` against the MCP URL `mcp`: it logs in after a 401 for that resource
/// and calls echo through the proxy. Returns its report.
async fn dev_proxy_flow(mcp: &str) -> Value {
    use crate::support::e2e_flows::{run_e2e_script, s};
    let (flow, stderr) =
        run_e2e_script("dev-proxy-flow.mjs", &[mcp], Duration::from_secs(90)).await;
    assert_eq!(flow["ok"], true, "{flow:#}\n{stderr}");
    assert_eq!(flow["first_status"], 401, "{flow:#}");
    assert_eq!(flow["resource"], mcp, "{flow:#}");
    assert!(s(&flow, "/echo").contains("through dev"), "{flow:#}");
    flow
}

/// The first run a newcomer makes, with real clients: server-everything behind
/// `mcp-gateway dev --upstream`, the MCP TypeScript SDK, mcp-remote and the Python SDK pointed
/// at the printed URL, logging in through the development login; a long-running tool's
/// progress notifications arrive while it runs (the proxy streams, never buffers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_real_clients_reach_an_mcp_server_through_dev_upstream() {
    use crate::support::e2e_flows::*;
    use crate::support::procs::*;

    if !e2e_enabled(&[python_mcp()]) {
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let (_server, upstream) = start_server_everything(logs.path()).await;
    let (dev, mcp_port) = DevGateway::start_upstream(&upstream).await;
    let mcp = format!("http://127.0.0.1:{mcp_port}/mcp");

    let flow = dev_proxy_flow(&mcp).await;
    let progress: Vec<i64> = flow["progress"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let done = n(&flow, "/result_ms");
    assert_eq!(progress.len(), 3, "{flow:#}");
    // Buffered, every notification would arrive with the result; streamed, the first comes
    // about two steps (2 s) before it.
    assert!(
        progress[0] + 1_000 < done,
        "progress {progress:?}, result at {done} ms"
    );

    let (flow, stderr) = run_e2e_script(
        "mcp-remote-flow.mjs",
        &[&mcp, &dev.issuer],
        Duration::from_secs(90),
    )
    .await;
    assert!(b(&flow, "/ok"), "mcp-remote: {flow:#}\n{stderr}");
    let (flow, stderr) =
        run_e2e_script("mcp-python-flow.py", &[&mcp], Duration::from_secs(90)).await;
    assert!(b(&flow, "/ok"), "python: {flow:#}\n{stderr}");
    assert!(s(&flow, "/tool_result").contains("hi (python)"), "{flow:#}");
}

/// The by-hand path the README gives for a local run: `scripts/traefik-local` (the shipped
/// traefik/dynamic.yml, unchanged) in front of `mcp-gateway dev` and server-everything; the
/// MCP TypeScript SDK connects to the URL it prints and logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_scripts_traefik_local_fronts_dev_mode_without_edits() {
    use crate::support::dev_gateway::ChildGuard;
    use crate::support::e2e_flows::*;
    use crate::support::procs::*;

    if !e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let (_server, upstream) = start_server_everything(logs.path()).await;
    let dev = DevGateway::start(&[]).await;
    let port = free_port();
    let log = std::fs::File::create(logs.path().join("traefik.log")).unwrap();
    let _traefik = ChildGuard(
        Command::new(repo().join("scripts/traefik-local"))
            .arg(upstream.trim_end_matches("/mcp"))
            .env("TRAEFIK", Proxy::Traefik.bin())
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTH_URL", &dev.issuer)
            .env("VERIFY_URL", &dev.verify)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("scripts/traefik-local starts"),
    );
    let mcp = format!("http://127.0.0.1:{port}/mcp");
    let prm = format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp");
    wait_serving(&prm, Duration::from_secs(20))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "Traefik did not serve {prm}:\n{}",
                std::fs::read_to_string(logs.path().join("traefik.log")).unwrap_or_default()
            )
        });
    let flow = dev_proxy_flow(&mcp).await;
    assert_eq!(
        flow["progress"].as_array().map(Vec::len),
        Some(3),
        "{flow:#}"
    );
}

/// Ctrl-C or SIGTERM stops `mcp-gateway dev --upstream` whole, its MCP proxy included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_upstream_stops_on_sigterm() {
    let (upstream, _next, _echo) = echo_upstream().await;
    let (mut dev, mcp_port) = DevGateway::start_upstream(&upstream).await;
    let prm = format!("http://127.0.0.1:{mcp_port}/.well-known/oauth-protected-resource/mcp");
    wait_serving(&prm, Duration::from_secs(10))
        .await
        .expect("the proxy is up");
    let child = dev.process();
    sigterm(child.id());
    let stopped = wait_for(Duration::from_secs(15), || {
        let exited = child.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    if stopped.is_err() {
        let _ = child.kill();
        panic!("mcp-gateway dev --upstream did not stop on SIGTERM");
    }
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", mcp_port)).is_ok(),
        "the proxy's port is free"
    );
}
