//! `login` and `refresh` against `mcp-gateway dev`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::support::dev_gateway::{ChildGuard, DevGateway, consent_and_dev_login};
use crate::support::gateway::{browser, location};
use crate::support::helpers::*;

/// The browser part of a login printed by the CLI, against `mcp-gateway dev`; the final
/// redirect goes to the CLI's loopback listener.
async fn drive_dev_login(authorize_url: &str, issuer: &str) {
    let resp = consent_and_dev_login(&browser(), issuer, authorize_url, "alice").await;
    assert_eq!(resp.status(), 302);
    let back = http().get(location(&resp)).send().await.unwrap();
    assert_eq!(back.status(), 200, "the CLI's loopback listener answered");
}

/// Runs a login-style command, reading the URL it prints and driving the browser step.
async fn login_with(dir: &Path, args: &[&str], issuer: &str) {
    let mut child = ChildGuard(
        Command::new(bin("mcp-gateway"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("ISSUER_URL", issuer)
            .env("JWT_ALGORITHM", "HS256")
            .env("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef-cli")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining stdout after the URL: the CLI still reports what it saved.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("http") {
                let _ = tx.send(line);
            }
        }
    });
    let url = tokio::task::spawn_blocking(move || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("an authorization URL")
    })
    .await
    .unwrap();
    drive_dev_login(&url, issuer).await;
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// [`saved_env`], in which each of `vars` must be saved, not empty.
fn saved_env_with(
    dir: &std::path::Path,
    vars: &[&str],
) -> std::collections::HashMap<String, String> {
    let saved = saved_env(dir);
    for var in vars {
        assert!(
            saved.get(*var).is_some_and(|v| !v.is_empty()),
            "{var} saved"
        );
    }
    saved
}

/// `mcp-gateway` with `args` in `dir`, with nothing from the environment (the env file there
/// is what it reads).
fn run_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("mcp-gateway"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .output()
        .unwrap()
}

/// What the CLI saved in the env file in `dir`.
fn saved_env(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
    mcp_oauth_gateway::cli::envfile::read(&dir.join(".env"))
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_and_github_token_complete_against_dev_mode() {
    // An MCP server behind the gateway (dev mode's proxy): login probes it, discovers,
    // registers, authorizes and then uses the token on it.
    let (upstream, _next, _echo) = crate::support::dev_gateway::echo_upstream().await;
    let (dev, mcp_port) = DevGateway::start_upstream(&upstream).await;
    let (issuer, verify) = (dev.issuer.clone(), dev.verify.clone());
    let dir = tempfile::tempdir().unwrap();
    login_with(
        dir.path(),
        &[
            "login",
            "--server-url",
            &format!("http://127.0.0.1:{mcp_port}/mcp"),
        ],
        &issuer,
    )
    .await;
    let saved = saved_env_with(
        dir.path(),
        &[
            "MCP_CLIENT_ACCESS_TOKEN",
            "MCP_CLIENT_REFRESH_TOKEN",
            "MCP_CLIENT_ID",
            "MCP_CLIENT_AUTH_METHOD",
            "MCP_CLIENT_REGISTRATION_TOKEN",
            "MCP_CLIENT_REGISTRATION_URI",
        ],
    );
    // A CLI is a public client where the server takes them.
    assert_eq!(saved["MCP_CLIENT_AUTH_METHOD"], "none");
    let check = |token: String| {
        let verify = verify.clone();
        async move {
            http()
                .get(format!("{verify}/verify"))
                .header("X-Forwarded-Proto", "http")
                .header("X-Forwarded-Host", format!("127.0.0.1:{mcp_port}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(check(saved["MCP_CLIENT_ACCESS_TOKEN"].clone()).await, 200);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path().join(".env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // refresh --force rotates and saves.
    ok(&run_in(dir.path(), &["refresh", "--force"]));
    let after = saved_env(dir.path());
    assert_ne!(
        after["MCP_CLIENT_REFRESH_TOKEN"],
        saved["MCP_CLIENT_REFRESH_TOKEN"]
    );
    assert_eq!(check(after["MCP_CLIENT_ACCESS_TOKEN"].clone()).await, 200);
    assert!(ok(&run_in(dir.path(), &["refresh"])).contains("not refreshed"));

    login_with(dir.path(), &["github-token", "--issuer", &issuer], &issuer).await;
    let gateway = saved_env_with(
        dir.path(),
        &[
            "GATEWAY_OAUTH_ACCESS_TOKEN",
            "GATEWAY_OAUTH_REFRESH_TOKEN",
            "GATEWAY_OAUTH_CLIENT_ID",
            "GATEWAY_OAUTH_CLIENT_SECRET",
        ],
    );
    assert_eq!(
        gateway["MCP_CLIENT_ID"], after["MCP_CLIENT_ID"],
        "other lines kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_dpop_binds_the_tokens_to_a_saved_key_through_dev_mode() {
    // Dev mode's proxy hands verify the DPoP proof as Traefik would: the probe's MCP requests
    // with the bound token pass only with it.
    let (upstream, _next, _echo) = crate::support::dev_gateway::echo_upstream().await;
    let (dev, mcp_port) = DevGateway::start_upstream(&upstream).await;
    let (issuer, verify) = (dev.issuer.clone(), dev.verify.clone());
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://127.0.0.1:{mcp_port}/mcp");
    login_with(
        dir.path(),
        &["login", "--server-url", &server, "--dpop"],
        &issuer,
    )
    .await;
    let saved = saved_env_with(
        dir.path(),
        &["MCP_CLIENT_ACCESS_TOKEN", "MCP_CLIENT_DPOP_KEY"],
    );
    let jkt = |token: &str| crate::support::jwt_claims(token)["cnf"]["jkt"].clone();
    let bound = jkt(&saved["MCP_CLIENT_ACCESS_TOKEN"]);
    assert!(bound.is_string(), "a DPoP-bound token");
    // Stolen, as a bearer token, it opens nothing.
    let as_bearer = http()
        .get(format!("{verify}/verify"))
        .header("X-Forwarded-Proto", "http")
        .header("X-Forwarded-Host", format!("127.0.0.1:{mcp_port}"))
        .header("X-Forwarded-Uri", "/mcp")
        .header("X-Forwarded-Method", "POST")
        .bearer_auth(&saved["MCP_CLIENT_ACCESS_TOKEN"])
        .send()
        .await
        .unwrap();
    assert_eq!(as_bearer.status(), 401);

    // refresh proves the saved key (the public client's refresh token is bound to it) …
    ok(&run_in(dir.path(), &["refresh", "--force"]));
    let after = saved_env(dir.path());
    assert_ne!(
        after["MCP_CLIENT_ACCESS_TOKEN"],
        saved["MCP_CLIENT_ACCESS_TOKEN"]
    );
    assert_eq!(jkt(&after["MCP_CLIENT_ACCESS_TOKEN"]), bound);
    // … and without the key the refresh token is worth nothing.
    mcp_oauth_gateway::cli::envfile::update(
        &dir.path().join(".env"),
        &[("MCP_CLIENT_DPOP_KEY", "")],
    )
    .unwrap();
    let out = run_in(dir.path(), &["refresh", "--force"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_grant"));
}
