//! `mcp-gateway dev`, run as a newcomer runs it: one process, embedded store, development
//! login, loopback only.

use std::io::{BufRead, BufReader};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::dev_gateway::{DevGateway, consent_and_dev_login};
use crate::support::gateway::{browser, location, pkce, query};
use crate::support::helpers::*;

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
    let resp = consent_and_dev_login(&b, &issuer, url.as_str(), "newcomer").await;
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
