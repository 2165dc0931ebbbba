//! `mcp-gateway dev`, run as a newcomer runs it: one process, embedded store, development
//! login, loopback only.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::{browser, hidden, location, pkce, query};
use crate::helpers::*;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_a_complete_gateway_on_loopback() {
    let (auth_port, verify_port) = (free_port(), free_port());
    let mut child = Child(
        Command::new(bin("mcp-gateway"))
            .args(["dev", "--listen", &format!("127.0.0.1:{auth_port}")])
            .args(["--verify-listen", &format!("127.0.0.1:{verify_port}")])
            .current_dir(tempfile::tempdir().unwrap().path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
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
    let issuer = format!("http://127.0.0.1:{auth_port}");
    let verify = format!("http://127.0.0.1:{verify_port}");
    assert!(banner.contains(&issuer), "{banner}");
    assert!(banner.contains(&format!("{verify}/verify")), "{banner}");
    assert!(
        banner.contains(&format!(
            "{verify}/.well-known/oauth-protected-resource/mcp"
        )),
        "{banner}"
    );

    // Verify's challenge points at the metadata, which names the issuer.
    let resp = http()
        .get(format!("{verify}/verify"))
        .header("X-Forwarded-Proto", "http")
        .header("X-Forwarded-Host", "localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains(
        "resource_metadata=\"http://localhost:3000/.well-known/oauth-protected-resource/mcp\""
    ));
    let prm: Value = http()
        .get(format!("{verify}/.well-known/oauth-protected-resource/mcp"))
        .header("X-Forwarded-Proto", "http")
        .header("X-Forwarded-Host", "localhost:3000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["authorization_servers"], json!([issuer]));

    // Register, authorize, consent, development login, token.
    let client: Value = http()
        .post(format!("{issuer}/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = client["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let b = browser();
    let mut url = url::Url::parse(&format!("{issuer}/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", "http://127.0.0.1:9/cb")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", "http://localhost:3000/mcp");
    let resp = b.get(url.as_str()).send().await.unwrap();
    assert_eq!(resp.status(), 307);
    let html = b
        .get(location(&resp))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("request", hidden(&html, "request")),
        ("csrf_token", hidden(&html, "csrf_token")),
        ("decision", "approve".to_string()),
    ];
    let resp = b
        .post(format!("{issuer}/consent"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let login_page = location(&resp);
    assert!(
        login_page.starts_with(&format!("{issuer}/dev/login")),
        "{login_page}"
    );
    let html = b
        .get(&login_page)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("state", hidden(&html, "state")),
        ("csrf_token", hidden(&html, "csrf_token")),
        ("login", "newcomer".to_string()),
    ];
    let resp = b
        .post(format!("{issuer}/dev/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let code = query(&url::Url::parse(&location(&resp)).unwrap(), "code").unwrap();
    let tokens: Value = http()
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("client_id", client_id),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().expect("an access token");
    let resp = http()
        .get(format!("{verify}/verify"))
        .header("X-Forwarded-Proto", "http")
        .header("X-Forwarded-Host", "localhost:3000")
        .header("Authorization", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-user-name"], "newcomer");
    drop(child);
    tokio::time::sleep(Duration::from_millis(50)).await;
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
