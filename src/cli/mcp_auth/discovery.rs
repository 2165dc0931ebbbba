//! Steps 2 and 3 of the flow: the protected resource's metadata (RFC 9728: the challenge's
//! URL, else path-inserted, else root) and the authorization server's (RFC 8414 with path
//! insertion, then OpenID Connect discovery), with the `issuer` checked exactly.

use std::time::Duration;

use serde_json::{Value, json};

use super::fail;
use crate::cli::CliResult;

/// The HTTP client of the CLI's OAuth flows: no redirects followed, bounded.
pub fn http_client() -> CliResult<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("mcp-gateway-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(e.to_string()))
}

pub(super) async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = http.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// RFC 9728 §3.1: `/.well-known/oauth-protected-resource` inserted before the path.
pub(super) fn inserted(origin: &url::Url, well_known: &str, path: &str) -> String {
    let path = path.trim_end_matches('/');
    format!(
        "{}{well_known}{path}",
        origin.origin().ascii_serialization()
    )
}

/// The protected-resource metadata: from the challenge, else path-inserted, else root.
pub(super) async fn resource_metadata(
    http: &reqwest::Client,
    server: &url::Url,
    from_challenge: Option<&str>,
) -> Option<Value> {
    let mut candidates = Vec::new();
    if let Some(url) = from_challenge {
        candidates.push(url.to_string());
    }
    candidates.push(inserted(
        server,
        "/.well-known/oauth-protected-resource",
        server.path(),
    ));
    candidates.push(inserted(
        server,
        "/.well-known/oauth-protected-resource",
        "",
    ));
    for url in candidates {
        if let Some(meta) = get_json(http, &url).await {
            return Some(meta);
        }
    }
    None
}

/// Whether the metadata's `resource` names the server the client connects to: the same
/// origin, and the server's path at or below it (RFC 9728 §3.3; MCP canonical server URI).
pub(super) fn resource_matches(resource: &str, server: &url::Url) -> bool {
    let Ok(r) = url::Url::parse(resource) else {
        return false;
    };
    if r.origin() != server.origin() || r.fragment().is_some() {
        return false;
    }
    let rp = r.path().trim_end_matches('/');
    let sp = server.path().trim_end_matches('/');
    sp == rp || sp.starts_with(&format!("{rp}/"))
}

/// RFC 8414 §3 with path insertion, then OpenID Connect discovery inserted and appended; the
/// metadata's issuer must be `issuer` exactly.
pub async fn server_metadata(http: &reqwest::Client, issuer: &str) -> CliResult<Value> {
    let url = url::Url::parse(issuer).map_err(|e| fail(format!("issuer {issuer}: {e}")))?;
    let path = url.path().trim_end_matches('/').to_string();
    let mut candidates = vec![
        inserted(&url, "/.well-known/oauth-authorization-server", &path),
        inserted(&url, "/.well-known/openid-configuration", &path),
    ];
    if !path.is_empty() {
        candidates.push(format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ));
    }
    for candidate in candidates {
        if let Some(meta) = get_json(http, &candidate).await {
            let found = meta["issuer"].as_str().unwrap_or("");
            if found != issuer {
                return Err(fail(format!(
                    "the authorization server metadata at {candidate} names issuer {found:?}, not {issuer:?}: refusing"
                )));
            }
            return Ok(meta);
        }
    }
    Err(fail(format!(
        "no authorization server metadata for {issuer}"
    )))
}

/// The MCP 2025-03-26 fallback: the server's origin is the authorization server, with the
/// default endpoints when it publishes no metadata either.
pub(super) fn legacy_metadata(server: &url::Url) -> Value {
    let origin = server.origin().ascii_serialization();
    json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}/authorize"),
        "token_endpoint": format!("{origin}/token"),
        "registration_endpoint": format!("{origin}/register"),
    })
}

pub(super) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
