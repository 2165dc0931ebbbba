//! The tokens saved in the env file (`mcp-gateway login` writes them): when they expire, and
//! whether the keys, the allow-list, Redis and a live `/verify` still accept them.

use base64::Engine;

use super::{SAVED_TOKENS, now};
use crate::cli::admin::{print_table, relative};
use crate::cli::{Cli, CliError, CliResult, envfile};
use crate::token::{ValidationPolicy, validate};

/// The claims of a token, read without checking it (for display and revocation only).
pub fn unverified_claims(token: &str) -> CliResult<serde_json::Value> {
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or_else(|| CliError::Failed("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| CliError::Failed("JWT payload is not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| CliError::Failed("JWT payload is not JSON".into()))
}

/// The `jti` of a token, read without checking the signature: revoking is always safe, and
/// an operator must be able to revoke a token signed by a key that is gone.
pub(super) fn jti_of(token: &str) -> CliResult<String> {
    unverified_claims(token)?
        .get("jti")
        .and_then(|j| j.as_str())
        .filter(|j| !j.is_empty())
        .map(str::to_string)
        .ok_or_else(|| CliError::Failed("--token has no jti".into()))
}

fn saved_tokens(cli: &Cli) -> CliResult<Vec<(String, String)>> {
    let path = cli.env_file_to_write();
    let pairs = envfile::read(&path)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    Ok(pairs
        .into_iter()
        .filter(|(k, v)| SAVED_TOKENS.contains(&k.as_str()) && !v.is_empty())
        .collect())
}

pub(super) fn check_expiry(cli: &Cli) -> CliResult {
    let now = now();
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let mut any_expired = false;
    for (var, token) in saved_tokens(cli)? {
        let claims = unverified_claims(&token)?;
        let exp = claims["exp"].as_i64().unwrap_or(0);
        any_expired |= exp <= now;
        rows.push(vec![
            var.clone(),
            claims["username"].as_str().unwrap_or("?").to_string(),
            claims["client_id"].as_str().unwrap_or("?").to_string(),
            relative(exp - now),
        ]);
        items.push(serde_json::json!({"variable": var, "user": claims["username"], "client_id": claims["client_id"], "expires_at": exp, "expired": exp <= now}));
    }
    if rows.is_empty() {
        return Err(CliError::Failed(format!(
            "no saved tokens ({}) in {}",
            SAVED_TOKENS.join(", "),
            cli.env_file_to_write().display()
        )));
    }
    print_table(
        cli.json,
        &serde_json::Value::Array(items),
        &["VARIABLE", "USER", "CLIENT", "EXPIRES"],
        &rows,
    );
    if any_expired {
        return Err(CliError::Failed(
            "a saved token has expired: run `mcp-gateway refresh`".into(),
        ));
    }
    Ok(())
}

pub(super) async fn validate_saved(cli: &Cli, verify_url: Option<&str>) -> CliResult {
    let settings = cli.settings()?;
    let store = cli.store(&settings).await?;
    let policy = ValidationPolicy::new(settings.issuer.clone());
    let http = reqwest::Client::new();
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let mut all_ok = true;
    for (var, token) in saved_tokens(cli)? {
        let (verdict, live) = match validate(&token, &settings.keys, &policy, now()) {
            Err(e) => (format!("invalid: {e}"), false),
            Ok(claims) => {
                let allowed = !settings.admission.is_configured()
                    || settings.admission.admits(&crate::policy::Identity::new(
                        &claims.sub,
                        &claims.username,
                        claims.email.as_deref(),
                        &claims.groups,
                    ));
                let live = store.token_is_live(&claims.jti).await.unwrap_or(false);
                match (allowed, live) {
                    (false, _) => (format!("user {} is not allowed", claims.username), false),
                    (true, false) => ("revoked or unknown to Redis".to_string(), false),
                    (true, true) => ("valid".to_string(), true),
                }
            }
        };
        let mut remote = String::from("-");
        if let Some(url) = verify_url {
            let claims = unverified_claims(&token).unwrap_or_default();
            let aud = match &claims["aud"] {
                serde_json::Value::Array(a) => {
                    a.first().and_then(|v| v.as_str()).unwrap_or("").to_string()
                }
                v => v.as_str().unwrap_or("").to_string(),
            };
            let target = url::Url::parse(&aud).ok();
            let mut req = http
                .get(format!("{}/verify", url.trim_end_matches('/')))
                .bearer_auth(&token);
            if let Some(t) = &target {
                let host = match t.port() {
                    Some(p) => format!("{}:{p}", t.host_str().unwrap_or("")),
                    None => t.host_str().unwrap_or("").to_string(),
                };
                req = req
                    .header("X-Forwarded-Proto", t.scheme())
                    .header("X-Forwarded-Host", host)
                    .header("X-Forwarded-Uri", t.path());
            }
            remote = match req.send().await {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => format!("error: {e}"),
            };
            all_ok &= remote == "200";
        }
        all_ok &= live;
        rows.push(vec![var.clone(), verdict.clone(), remote.clone()]);
        items
            .push(serde_json::json!({"variable": var, "result": verdict, "verify_status": remote}));
    }
    if rows.is_empty() {
        return Err(CliError::Failed("no saved tokens in the env file".into()));
    }
    print_table(
        cli.json,
        &serde_json::Value::Array(items),
        &["VARIABLE", "RESULT", "VERIFY"],
        &rows,
    );
    if all_ok {
        Ok(())
    } else {
        Err(CliError::Failed("some saved tokens are not valid".into()))
    }
}
