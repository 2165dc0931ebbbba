//! `mcp-gateway login` as an MCP client that follows the MCP authorization spec against any
//! server, not only ours:
//!
//! 1. a POST probe (`initialize`, or a stateless `tools/list` in the 2026-07-28 era); a 401's
//!    `WWW-Authenticate` gives `resource_metadata` and maybe `scope`;
//! 2. RFC 9728: that metadata URL, else the path-inserted then the root well-known URL; its
//!    `resource` must be the server URL (or a parent of it on the same origin) and is sent as is;
//! 3. RFC 8414 with path insertion, then OpenID Connect discovery (inserted, then appended);
//!    the metadata's `issuer` must be exactly the authorization server's (SEP-2352);
//! 4. the client: pre-registered (`--client-id`), a Client ID Metadata Document
//!    (`--client-metadata-url`, when the server supports them), or RFC 7591 registration with
//!    `application_type: native` and an auth method the server supports;
//! 5. PKCE S256, `state`, `resource`, the scope of the challenge (else the resource's
//!    `scopes_supported`, else none; `offline_access` added when the server offers it); the
//!    redirect's `iss` checked (RFC 9207: required when advertised, exact when present);
//! 6. the code exchange with that auth method, then the probe again with the token; a 403
//!    `insufficient_scope` steps up once more with the scopes it names (at most twice).

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

mod discovery;
pub mod dpop;
pub mod machine;
mod probe;
mod redirect;

use discovery::{get_json, legacy_metadata, strings};
pub use discovery::{http_client, server_metadata};
pub use probe::Target;
pub use probe::ToolCall;
use probe::{Probe, challenge_and_metadata, challenge_params, param, protected_resource};
pub use redirect::wait_for_redirect;

use super::{CliError, CliResult};
use crate::token::{random_token, sha256_b64url};

/// The era of MCP the probe speaks.
pub const PROTOCOL_2025: &str = "2025-11-25";
pub const PROTOCOL_2026: &str = "2026-07-28";
const STEP_UPS: usize = 2;

fn fail(message: impl Into<String>) -> CliError {
    CliError::Failed(message.into())
}

/// How the client is known to the authorization server.
#[derive(Debug, Clone, Default)]
pub struct ClientChoice {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub metadata_url: Option<String>,
    /// DPoP (RFC 9449): the key token requests prove, and bound tokens are presented with.
    pub dpop: Option<std::sync::Arc<dpop::DpopSigner>>,
}

/// How the browser step is done.
#[derive(Debug, Clone)]
pub struct Browser {
    pub open: bool,
    /// Fetch the authorization URL and follow its redirects instead of a browser (for test
    /// harnesses whose authorization server approves at once).
    pub follow: bool,
    pub port: u16,
    pub timeout: Duration,
}

/// What a login produced.
#[derive(Debug, Clone)]
pub struct Login {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub auth_method: String,
    pub token_endpoint: String,
    pub registration: Value,
    pub scope: Option<String>,
    /// The DPoP key the tokens are bound to, as saved (`MCP_CLIENT_DPOP_KEY`).
    pub dpop_key: Option<String>,
}

/// Scopes as a set, in a stable order.
fn scope_set(scope: &str) -> BTreeSet<String> {
    scope.split_whitespace().map(str::to_string).collect()
}

/// The whole flow; `target.scope` overrides the selection; `target.tool` is called once logged
/// in.
pub async fn login(
    target: &Target<'_>,
    client: &ClientChoice,
    browser: &Browser,
) -> CliResult<Login> {
    let http = http_client()?;
    let (mut probe, mut challenge) = Probe::unauthorized(&http, target).await?;
    let server = probe.server.clone();
    // The redirect's listener, the same through step-ups and a move of the server.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", browser.port))
        .await
        .map_err(|e| fail(format!("cannot listen on 127.0.0.1:{}: {e}", browser.port)))?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener
            .local_addr()
            .map_err(|e| fail(e.to_string()))?
            .port()
    );
    // A 401 for a token that worked: the resource may have moved to another authorization
    // server (SEP-2352): discover again, register there, once.
    let mut moves = 0;
    'discover: loop {
        let (params, prm) = challenge_and_metadata(&http, &server, challenge.as_deref()).await;
        let (resource, meta) = match &prm {
            Some(prm) => {
                let (resource, meta) = protected_resource(&http, &server, prm).await?;
                (Some(resource), meta)
            }
            None => {
                // MCP 2025-03-26: no resource metadata; the server's origin is the
                // authorization server, its metadata at the root (taken as it names itself,
                // as that revision did), else the default endpoints.
                let origin = server.origin().ascii_serialization();
                let root = format!("{origin}/.well-known/oauth-authorization-server");
                let meta = get_json(&http, &root)
                    .await
                    .filter(|m| m["authorization_endpoint"].is_string())
                    .unwrap_or_else(|| legacy_metadata(&server));
                (None, meta)
            }
        };
        let issuer = meta["issuer"].as_str().unwrap_or("").to_string();
        let endpoint = |name: &str| {
            meta[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| fail(format!("the authorization server metadata has no {name}")))
        };

        // The scope to ask for.
        let supported_by_as = strings(&meta["scopes_supported"]);
        let mut scope: Option<BTreeSet<String>> = match target.scope {
            Some(s) => Some(scope_set(s)),
            None => param(&params, "scope").map(|s| scope_set(&s)).or_else(|| {
                prm.as_ref()
                    .map(|p| strings(&p["scopes_supported"]))
                    .filter(|s| !s.is_empty())
                    .map(|s| s.into_iter().collect())
            }),
        };
        let wants_offline = supported_by_as.iter().any(|s| s == "offline_access");

        // Who the client is (registered anew at a new authorization server).
        let methods = strings(&meta["token_endpoint_auth_methods_supported"]);
        let (client_id, client_secret, auth_method, registration) =
            identify(&http, &meta, client, &redirect_uri, &methods).await?;

        let mut step_ups = 0;
        loop {
            if wants_offline && let Some(s) = scope.as_mut() {
                s.insert("offline_access".into());
            }
            let scope_text = scope
                .as_ref()
                .map(|s| s.iter().cloned().collect::<Vec<_>>().join(" "))
                .filter(|s| !s.is_empty());
            let AuthorizationRequest {
                url,
                verifier,
                state,
            } = AuthorizationRequest::new(
                &endpoint("authorization_endpoint")?,
                &client_id,
                &redirect_uri,
            )?
            .with("resource", resource.as_deref())
            .with("scope", scope_text.as_deref());
            let callback = if browser.follow {
                follow(&http, url.as_str(), &redirect_uri).await?
            } else {
                wait_for_redirect(&listener, url.as_str(), browser).await?
            };
            let code = check_callback(&callback, &state, &issuer, &meta)?;

            let token_endpoint = endpoint("token_endpoint")?;
            let mut form = vec![
                ("grant_type", "authorization_code".to_string()),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect_uri.clone()),
            ];
            if let Some(r) = &resource {
                form.push(("resource", r.clone()));
            }
            let tokens = token_request(
                &http,
                &token_endpoint,
                form,
                &client_id,
                client_secret.as_deref(),
                &auth_method,
                client.dpop.as_deref(),
            )
            .await?;
            let access = tokens["access_token"].as_str().unwrap_or("").to_string();
            // A server that does not do DPoP answers with a bearer token: presented as such.
            let bound = tokens["token_type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("DPoP"));
            probe.dpop = client.dpop.clone().filter(|_| bound);

            // Use it: the probe again (and the tool), with the token.
            let answer = probe.session(&http, Some(&access), target.tool).await?;
            let params = answer
                .challenge
                .as_deref()
                .map(challenge_params)
                .unwrap_or_default();
            let insufficient = answer.status == 403
                && param(&params, "error").as_deref() == Some("insufficient_scope");
            if insufficient && step_ups < STEP_UPS {
                // SEP-2350: what was asked for before, and what the challenge names.
                step_ups += 1;
                let mut wider = scope.clone().unwrap_or_default();
                wider.extend(
                    param(&params, "scope")
                        .map(|s| scope_set(&s))
                        .unwrap_or_default(),
                );
                scope = Some(wider);
                continue;
            }
            if answer.status == 401 && moves < 1 {
                moves += 1;
                challenge = answer.challenge;
                probe.session = None;
                continue 'discover;
            }
            answer.accepted(target.server_url)?;
            return Ok(Login {
                access_token: access,
                refresh_token: tokens["refresh_token"].as_str().map(str::to_string),
                client_id,
                client_secret,
                auth_method,
                token_endpoint,
                registration,
                scope: scope_text,
                dpop_key: probe.dpop.as_ref().map(|d| d.saved()),
            });
        }
    }
}

/// The client id (and secret, and auth method) to use: pre-registered, a metadata document,
/// or registered now.
async fn identify(
    http: &reqwest::Client,
    meta: &Value,
    client: &ClientChoice,
    redirect_uri: &str,
    methods: &[String],
) -> CliResult<(String, Option<String>, String, Value)> {
    if let Some(id) = &client.client_id {
        let method = match &client.client_secret {
            None => "none",
            Some(_) if methods.iter().any(|m| m == "client_secret_basic") || methods.is_empty() => {
                "client_secret_basic"
            }
            Some(_) => "client_secret_post",
        };
        return Ok((
            id.clone(),
            client.client_secret.clone(),
            method.into(),
            Value::Null,
        ));
    }
    if let Some(url) = &client.metadata_url
        && meta["client_id_metadata_document_supported"] == true
    {
        return Ok((url.clone(), None, "none".into(), Value::Null));
    }
    let endpoint = meta["registration_endpoint"].as_str().ok_or_else(|| {
        fail("the authorization server offers no registration: give --client-id (and --client-secret) of a client registered there")
    })?;
    // A CLI is a public client; a secret only where the server takes no public clients.
    let method = ["none", "client_secret_basic", "client_secret_post"]
        .into_iter()
        .find(|m| methods.is_empty() || methods.iter().any(|x| x == m))
        .unwrap_or("client_secret_basic");
    let request = http.post(endpoint).json(&json!({
        "client_name": "mcp-gateway CLI",
        "application_type": "native",
        "redirect_uris": [redirect_uri],
        "token_endpoint_auth_method": method,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }));
    let (status, registration) = json_answer(request, "registration", "registration").await?;
    let id = registration["client_id"]
        .as_str()
        .filter(|_| status.is_success())
        .ok_or_else(|| fail(format!("registration refused: {registration}")))?
        .to_string();
    let secret = registration["client_secret"].as_str().map(str::to_string);
    let method = registration["token_endpoint_auth_method"]
        .as_str()
        .unwrap_or(if secret.is_some() {
            "client_secret_basic"
        } else {
            method
        })
        .to_string();
    Ok((id, secret, method, registration))
}

/// For harnesses whose authorization server approves at once: GET the authorization URL and
/// follow its redirects until one goes to `redirect_uri`; that URL is the callback.
async fn follow(http: &reqwest::Client, start: &str, redirect_uri: &str) -> CliResult<url::Url> {
    let mut url = start.to_string();
    for _ in 0..10 {
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(format!("authorization: {}", e.without_url())))?;
        let Some(location) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
            return Err(fail(format!(
                "the authorization endpoint answered {} without a redirect (a browser is needed: drop --follow-authorization)",
                resp.status()
            )));
        };
        let next = url::Url::parse(&url)
            .and_then(|base| base.join(location))
            .map_err(|e| fail(e.to_string()))?;
        if next.as_str().starts_with(redirect_uri) {
            return Ok(next);
        }
        url = next.to_string();
    }
    Err(fail("too many redirects during authorization"))
}

/// The code from the redirect, once `state` and RFC 9207's `iss` check out.
fn check_callback(
    callback: &url::Url,
    state: &str,
    issuer: &str,
    meta: &Value,
) -> CliResult<String> {
    let get = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if get("state").as_deref() != Some(state) {
        return Err(fail("the redirect carries a wrong or no state: refusing"));
    }
    let advertised = meta["authorization_response_iss_parameter_supported"] == true;
    match get("iss") {
        Some(iss) if iss != issuer => {
            return Err(fail(format!(
                "the redirect's iss {iss:?} is not the issuer {issuer:?} (RFC 9207): refusing"
            )));
        }
        None if advertised => {
            return Err(fail(
                "the server promises iss in the redirect (RFC 9207) and sent none: refusing",
            ));
        }
        _ => {}
    }
    if let Some(error) = get("error") {
        return Err(fail(format!(
            "the login failed: {error}: {}",
            get("error_description").unwrap_or_default()
        )));
    }
    get("code").ok_or_else(|| fail("the redirect has no code"))
}

/// An authorization request (RFC 6749 §4.1.1) with PKCE S256 (RFC 7636) and a fresh `state`.
pub struct AuthorizationRequest {
    /// The authorization endpoint with the request in its query: what the browser opens.
    pub url: url::Url,
    /// The PKCE verifier, for the code exchange.
    pub verifier: String,
    /// What the redirect back must carry.
    pub state: String,
}

impl AuthorizationRequest {
    /// The request of `client_id` at `endpoint`, redirecting to `redirect_uri`.
    pub fn new(endpoint: &str, client_id: &str, redirect_uri: &str) -> CliResult<Self> {
        let verifier = format!("{}{}", random_token(), random_token());
        let state = random_token();
        let mut url = url::Url::parse(endpoint).map_err(|e| fail(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", &sha256_b64url(verifier.as_bytes()))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state);
        Ok(Self {
            url,
            verifier,
            state,
        })
    }

    /// With the parameter `name` (`resource`, RFC 8707; `scope`) when it has a `value`.
    pub fn with(mut self, name: &str, value: Option<&str>) -> Self {
        if let Some(value) = value {
            self.url.query_pairs_mut().append_pair(name, value);
        }
        self
    }
}

/// Sends `request` and reads its JSON answer: the status and the body. A failure names the
/// request as `sending` or, when the answer is no JSON, as `reading`.
async fn json_answer(
    request: reqwest::RequestBuilder,
    sending: &str,
    reading: &str,
) -> CliResult<(reqwest::StatusCode, Value)> {
    let resp = request
        .send()
        .await
        .map_err(|e| fail(format!("{sending}: {}", e.without_url())))?;
    let status = resp.status();
    let body = resp
        .json()
        .await
        .map_err(|e| fail(format!("{reading}: {e}")))?;
    Ok((status, body))
}

/// A token request with the client's auth method (and a DPoP proof of `dpop`'s key, sent again
/// once with the nonce a `use_dpop_nonce` answer gives): the JSON answer, or why it was refused.
pub async fn token_request(
    http: &reqwest::Client,
    endpoint: &str,
    mut form: Vec<(&str, String)>,
    client_id: &str,
    secret: Option<&str>,
    method: &str,
    dpop: Option<&dpop::DpopSigner>,
) -> CliResult<Value> {
    let mut req = http.post(endpoint);
    match (method, secret) {
        ("client_secret_basic", Some(secret)) => {
            let enc = |s: &str| -> String {
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
            };
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(client_id),
                enc(secret)
            ));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        ("client_secret_post", Some(secret)) => {
            form.push(("client_id", client_id.to_string()));
            form.push(("client_secret", secret.to_string()));
        }
        _ => form.push(("client_id", client_id.to_string())),
    }
    let req = req.form(&form);
    let Some(dpop) = dpop else {
        return tokens_from(req, "token request", "token response").await;
    };
    let mut retried = false;
    loop {
        let attempt = req
            .try_clone()
            .ok_or_else(|| fail("token request: cannot be sent twice"))?
            .header("dpop", dpop.proof("POST", endpoint, None));
        let resp = attempt
            .send()
            .await
            .map_err(|e| fail(format!("token request: {}", e.without_url())))?;
        let fresh = dpop.observe(endpoint, resp.headers());
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| fail(format!("token response: {e}")))?;
        if !retried && fresh && status == 400 && body["error"] == "use_dpop_nonce" {
            retried = true;
            continue;
        }
        return token_answer(status, body, "token request");
    }
}

/// Sends a token request: the tokens, or the refusal with the server's error.
async fn tokens_from(req: reqwest::RequestBuilder, sent: &str, answer: &str) -> CliResult<Value> {
    let (status, body) = json_answer(req, sent, answer).await?;
    token_answer(status, body, sent)
}

/// A token response: the tokens, or the refusal with the server's error.
fn token_answer(status: reqwest::StatusCode, body: Value, sent: &str) -> CliResult<Value> {
    if !status.is_success() || body["access_token"].as_str().is_none() {
        return Err(fail(format!(
            "{sent} refused: {} {}",
            body["error"].as_str().unwrap_or("error"),
            body["error_description"].as_str().unwrap_or("")
        )));
    }
    Ok(body)
}
