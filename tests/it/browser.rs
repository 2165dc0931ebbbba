//! A real headless Chromium logs in through the gateway's pages with the second factor on:
//! consent, development login, TOTP enrolment, recovery codes, and a second login with a
//! code (e2e/browser/login.mjs, playwright-core driving Debian's Chromium). Each page is
//! screenshotted at phone width; `docs/screenshots/` holds a committed set for the README.

use std::process::Command;

use crate::support::dev_gateway::DevGateway;

/// Whether the browser tests run (the same switch as the other end-to-end tests).
fn enabled() -> bool {
    if std::env::var("MCP_GATEWAY_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("MCP_GATEWAY_SKIP_E2E=1: browser test skipped");
        return false;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(&format!("{root}/e2e/browser/node_modules/playwright-core")).exists(),
        "playwright-core is missing: run scripts/browser-deps"
    );
    true
}

/// Runs `e2e/browser/{script}` with `args`; its last stdout line, as JSON, once it succeeded.
async fn run_browser(script: &str, args: Vec<String>) -> serde_json::Value {
    let script = format!("{}/e2e/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .args(&args)
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
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_enrols_and_logs_in_with_a_second_factor() {
    if !enabled() {
        return;
    }
    let dev = DevGateway::start(&[("TOKEN_MFA_REQUIRED", "true")]).await;
    let shots = tempfile::tempdir().unwrap();
    let result = run_browser(
        "login.mjs",
        vec![dev.issuer.clone(), shots.path().display().to_string()],
    )
    .await;
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
    if !enabled() {
        return;
    }
    let provider = OidcProvider::start(&[]).await;
    let env = provider.gateway_env();
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend([
        ("ALLOWED_GITHUB_USERS", "<unset>"),
        ("ALLOWED_EMAIL_DOMAINS", "example.com"),
    ]);
    let gw = Gateway::start(&pairs).await;
    provider.register(&gw.issuer, serde_json::json!({})).await;
    let result = run_browser(
        "oidc-login.mjs",
        vec![gw.issuer.clone(), provider.base.clone(), "carol".into()],
    )
    .await;
    assert_eq!(result["sub"], format!("{}#alice", provider.issuer));
    assert_eq!(result["amr"], serde_json::json!(["oidc"]));
    assert_eq!(result["refusal_names_why"], true);
    assert_eq!(result["csp_violations"], serde_json::json!([]));
}
