//! A real headless Chromium logs in through the gateway's pages with the second factor on:
//! consent, development login, TOTP enrolment, recovery codes, and a second login with a
//! code (e2e/browser/login.mjs, playwright-core driving Debian's Chromium). Each page is
//! screenshotted at phone width; `docs/screenshots/` holds a committed set for the README.

use std::process::Command;

use crate::support::dev_gateway::DevGateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_enrols_and_logs_in_with_a_second_factor() {
    // The same switch as the other end-to-end tests.
    if std::env::var("MCP_GATEWAY_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("MCP_GATEWAY_SKIP_E2E=1: browser test skipped");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/e2e/browser/login.mjs");
    assert!(
        std::path::Path::new(&format!("{root}/e2e/browser/node_modules/playwright-core")).exists(),
        "playwright-core is missing: run scripts/browser-deps"
    );
    let dev = DevGateway::start(&[("TOKEN_MFA_REQUIRED", "true")]).await;
    let issuer = dev.issuer.clone();
    let shots = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let shots = shots.path().to_path_buf();
        move || {
            Command::new("node")
                .arg(&script)
                .arg(&issuer)
                .arg(&shots)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["ok"], true);
    assert_eq!(result["recovery_codes"], 10);
    assert_eq!(result["first_amr"], serde_json::json!(["github", "otp"]));
    assert_eq!(result["second_amr"], serde_json::json!(["github", "otp"]));
    assert_eq!(result["error_page_escaped"], true);
    for step in result["steps"].as_array().unwrap() {
        let png =
            std::fs::read(shots.path().join(format!("{}.png", step.as_str().unwrap()))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{step} is a PNG");
    }
    assert_eq!(result["steps"].as_array().unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_logs_in_through_an_oidc_provider_and_sees_a_refusal() {
    use crate::support::gateway::Gateway;
    use crate::support::oidc_provider::OidcProvider;
    if std::env::var("MCP_GATEWAY_SKIP_E2E").is_ok_and(|v| v == "1") {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/e2e/browser/oidc-login.mjs");
    let provider = OidcProvider::start(&[]).await;
    let env = provider.gateway_env();
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend([
        ("ALLOWED_GITHUB_USERS", "<unset>"),
        ("ALLOWED_EMAIL_DOMAINS", "example.com"),
    ]);
    let gw = Gateway::start(&pairs).await;
    provider.register(&gw.issuer, serde_json::json!({})).await;
    let (issuer, base) = (gw.issuer.clone(), provider.base.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .arg(&issuer)
            .arg(&base)
            .arg("carol")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["sub"], format!("{}#alice", provider.issuer));
    assert_eq!(result["amr"], serde_json::json!(["oidc"]));
    assert_eq!(result["refusal_names_why"], true);
    assert_eq!(result["csp_violations"], serde_json::json!([]));
}
