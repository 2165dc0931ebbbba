//! The TOTP second factor over HTTP: enrolment, verification, replay, recovery codes,
//! lockout, and verify refusing tokens without it.

use std::time::Duration;

use mcp_oauth_gateway::auth::totp;
use mcp_oauth_gateway::clock::{Clock, SystemClock};
use redis::AsyncCommands;
use serde_json::Value;

use crate::support::gateway::{
    Gateway, REDIRECT, approve_consent, browser, hidden, location, pkce, query,
};
use crate::support::helpers::*;
use crate::support::jwt_claims;

pub fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = alphabet.iter().position(|a| *a == c).expect("base32") as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    out
}

/// The TOTP secret the enrolment page shows for manual entry.
pub fn enrolment_secret(html: &str) -> Vec<u8> {
    let shown = html
        .split("<p class=\"mono\"><strong>")
        .nth(1)
        .expect("the enrolment page shows the key")
        .split("</strong>")
        .next()
        .unwrap();
    base32_decode(shown)
}

pub fn code_now(secret: &[u8], offset_steps: i64) -> String {
    let step = totp::step_of(SystemClock.now_unix()) + offset_steps;
    totp::code_at_step(secret, step as u64, 6)
}

/// authorize → consent → GitHub → callback, which now stops at the TOTP step.
pub async fn to_mfa(gw: &Gateway, client: &Value) -> (reqwest::Client, String, String) {
    let (verifier, challenge) = pkce();
    let b = browser();
    let resp = approve_consent(&b, &gw.issuer, &gw.authorize_url(client, &challenge, &[])).await;
    let resp = b.get(location(&resp)).send().await.unwrap();
    let resp = b.get(location(&resp)).send().await.unwrap();
    assert_eq!(
        resp.status(),
        303,
        "the callback stops at the second factor"
    );
    let mfa = location(&resp);
    assert!(mfa.starts_with(&gw.url("/mfa?session=")), "{mfa}");
    (b, mfa, verifier)
}

/// [`to_mfa`], then the second-factor page: the browser, the page's HTML and the PKCE
/// verifier.
pub async fn mfa_page(gw: &Gateway, client: &Value) -> (reqwest::Client, String, String) {
    let (b, mfa_url, verifier) = to_mfa(gw, client).await;
    let html = body_text(b.get(&mfa_url)).await;
    (b, html, verifier)
}

/// A gateway that requires the second factor and locks a user out for five minutes after three
/// wrong codes, and a client of it.
pub async fn lockout_gateway() -> (Gateway, Value) {
    mfa_gateway(&[("MFA_MAX_FAILURES", "3"), ("MFA_LOCKOUT", "300")]).await
}

/// A gateway that requires the second factor (`extra` settings besides), and a client of it.
pub async fn mfa_gateway(extra: &[(&str, &str)]) -> (Gateway, Value) {
    let mut env = vec![("TOKEN_MFA_REQUIRED", "true")];
    env.extend_from_slice(extra);
    let gw = Gateway::start(&env).await;
    let client = gw.client("none").await;
    (gw, client)
}

/// The enrolment on its page `html`: a wrong code refused, the right one accepted, the ten
/// recovery codes shown, the login completed with `otp`. The secret, the codes and the tokens.
pub async fn enrol(
    gw: &Gateway,
    client: &Value,
    b: &reqwest::Client,
    html: &str,
    verifier: &str,
) -> (Vec<u8>, Vec<String>, Value) {
    let secret = enrolment_secret(html);
    let resp = post_code(gw, b, html, "code", "000000").await;
    assert_eq!(resp.status(), 400);
    let html = resp.text().await.unwrap();
    assert!(html.contains("not right"));
    let resp = post_code(gw, b, &html, "code", &code_now(&secret, 0)).await;
    assert_eq!(resp.status(), 200);
    let recovery_page = resp.text().await.unwrap();
    let codes = recovery_codes(&recovery_page);
    assert_eq!(codes.len(), 10);
    let resp = continue_after_codes(gw, b, &recovery_page).await;
    let tokens = redeem(gw, client, resp, verifier).await;
    let claims = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["amr"], serde_json::json!(["github", "otp"]));
    (secret, codes, tokens)
}

/// The recovery codes the enrolment shows once.
pub fn recovery_codes(page: &str) -> Vec<String> {
    page.split("<li>")
        .skip(1)
        .map(|s| s.split("</li>").next().unwrap().to_string())
        .collect()
}

/// "Continue" on the recovery codes' page: the login goes on to the client.
pub async fn continue_after_codes(
    gw: &Gateway,
    b: &reqwest::Client,
    page: &str,
) -> reqwest::Response {
    let form = [
        ("session", hidden(page, "session")),
        ("csrf_token", hidden(page, "csrf_token")),
    ];
    b.post(gw.url("/mfa/continue"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

pub async fn post_code(
    gw: &Gateway,
    b: &reqwest::Client,
    page: &str,
    field: &str,
    value: &str,
) -> reqwest::Response {
    let form = [
        ("session", hidden(page, "session")),
        ("csrf_token", hidden(page, "csrf_token")),
        (field, value.to_string()),
    ];
    b.post(gw.url("/mfa")).form(&form).send().await.unwrap()
}

/// The code the second factor's answer redirects with, exchanged: the token answer.
pub async fn redeem(
    gw: &Gateway,
    client: &Value,
    resp: reqwest::Response,
    verifier: &str,
) -> Value {
    assert_eq!(resp.status(), 302);
    let to = url::Url::parse(&location(&resp)).unwrap();
    assert!(to.as_str().starts_with(REDIRECT));
    let code = query(&to, "code").expect("a code after the second factor");
    let resp = gw.redeem(client, &code, verifier).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_then_verification_with_codes_and_recovery_codes() {
    let (gw, client) = mfa_gateway(&[]).await;

    // First login: enrol.
    let (b, mfa_url, verifier) = to_mfa(&gw, &client).await;
    let page = get_ok(&b, &mfa_url).await;
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<svg"), "QR code inline");
    let (secret, codes, tokens) = enrol(&gw, &client, &b, &html, &verifier).await;
    assert_eq!(secret.len(), 20);

    // At rest: the secret is sealed, the recovery codes hashed.
    let mut conn = gw.redis.conn().await;
    let stored: String = conn.get("oauth:mfa:alice").await.unwrap();
    assert!(!stored.contains(&totp::base32(&secret)));
    let keys: Vec<String> = conn.keys("oauth:mfa_recovery:alice:*").await.unwrap();
    assert_eq!(keys.len(), 10);
    assert!(
        !keys
            .iter()
            .any(|k| codes.iter().any(|c| k.contains(c.as_str())))
    );

    // Refresh keeps amr.
    let resp = gw.refresh_of(&client, &tokens).await;
    let refreshed: Value = resp.json().await.unwrap();
    assert_eq!(
        jwt_claims(refreshed["access_token"].as_str().unwrap())["amr"],
        serde_json::json!(["github", "otp"])
    );

    // Second login: verify; the code just used is refused (same window), the next one works.
    let (b, html, verifier) = mfa_page(&gw, &client).await;
    assert!(html.contains("Two-factor sign-in") && !html.contains("<svg"));
    let used = code_now(&secret, 0);
    let resp = post_code(&gw, &b, &html, "code", &used).await;
    assert_eq!(resp.status(), 400);
    let html = resp.text().await.unwrap();
    assert!(html.contains("already used"), "replay refused");
    let resp = post_code(&gw, &b, &html, "code", &code_now(&secret, 1)).await;
    redeem(&gw, &client, resp, &verifier).await;

    // Third login: a recovery code works once.
    let (b, html, verifier) = mfa_page(&gw, &client).await;
    let resp = post_code(&gw, &b, &html, "recovery_code", &codes[0].to_uppercase()).await;
    redeem(&gw, &client, resp, &verifier).await;
    let (b, html, _) = mfa_page(&gw, &client).await;
    let resp = post_code(&gw, &b, &html, "recovery_code", &codes[0]).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_user_out() {
    let (gw, client) = lockout_gateway().await;
    let (b, mfa_url, _) = to_mfa(&gw, &client).await;
    let mut html = body_text(b.get(&mfa_url)).await;
    for attempt in 1..=3 {
        let resp = post_code(&gw, &b, &html, "code", "123456").await;
        if attempt < 3 {
            assert_eq!(resp.status(), 400);
            html = resp.text().await.unwrap();
        } else {
            assert_eq!(resp.status(), 429, "locked after the third failure");
            assert!(resp.text().await.unwrap().contains("locked"));
        }
    }
    // Locked even with the right code, and on a fresh login from the same address.
    let resp = b.get(&mfa_url).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let metrics = gw.metrics().await;
    assert!(metrics.contains("mcp_gateway_mfa_failures_total 3"));
    assert!(metrics.contains("mcp_gateway_mfa_lockouts_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_tokens_without_the_second_factor_and_the_cli_resets_it() {
    let (gw, _, tokens) = Gateway::with_login(&[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(gw.verify.status(access).await, 200);
    // Switching MFA on makes earlier tokens stop working at verify.
    let strict = Verify::start(
        &base_env(&gw.redis)
            .with("ISSUER_URL", gw.issuer.as_str())
            .with("TOKEN_MFA_REQUIRED", "true"),
        gw.redis.store(),
    )
    .await;
    assert_eq!(strict.status(access).await, 401);
    assert_eq!(strict.decisions("mfa_required").await, 1.0);

    // mfa status / reset.
    let mut conn = gw.redis.conn().await;
    let _: () = conn
        .set(
            "oauth:mfa:alice",
            r#"{"provider":"totp","secret":"x","enrolled_at":1}"#,
        )
        .await
        .unwrap();
    let _: () = conn.set("oauth:mfa_recovery:alice:abc", "1").await.unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin("mcp-gateway"))
            .args(args)
            .env_clear()
            .env("JWT_ALGORITHM", "RS256")
            .env("JWT_PRIVATE_KEY_B64", rsa_key_b64())
            .env("REDIS_URL", gw.redis.url())
            .output()
            .unwrap()
    };
    let out = run(&["--json", "mfa", "status", "alice"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["enrolled"], true);
    assert_eq!(status["recovery_codes_left"], 1);
    assert!(run(&["mfa", "reset", "alice"]).status.success());
    let left: Vec<String> = conn.keys("oauth:mfa*").await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(run(&["mfa", "reset", "alice"]).status.code(), Some(1));
    tokio::time::sleep(Duration::from_millis(10)).await;
}
