//! `mcp-gateway login` without a browser: a machine client (MCP's OAuth Client Credentials
//! extension: `client_credentials` with a secret or a `private_key_jwt` assertion, RFC 7523
//! §2.2), an enterprise user's ID-JAG (MCP Enterprise-Managed Authorization: the IdP's ID
//! token exchanged at the IdP for an ID-JAG, RFC 8693, then the JWT bearer grant here), or a
//! workload's own JWT (MCP Workload Identity Federation). Discovery is the interactive flow's
//! (the 401, RFC 9728, RFC 8414); then exactly one token request: a refusal is reported and
//! nothing is retried or tried another way.

use serde_json::{Value, json};

use super::discovery::strings;
use super::probe::challenge_and_metadata;
use super::{
    Login, Probe, Target, fail, http_client, param, protected_resource, token_request, tokens_from,
};
use crate::cli::CliResult;
use crate::clock::{Clock, SystemClock};
use crate::token::random_token;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// How a machine login gets its token.
#[derive(Debug, Clone)]
pub enum MachineGrant {
    /// `client_credentials` with a client secret (Basic when the server takes it, else the
    /// form).
    Secret { client_id: String, secret: String },
    /// `client_credentials` with a `private_key_jwt` assertion signed by this PKCS#8 PEM key.
    PrivateKey {
        client_id: String,
        pem: String,
        alg: String,
    },
    /// The JWT bearer grant with an ID-JAG (from the IdP exchange, or given), presented by
    /// an authenticating client.
    IdJag {
        client_id: String,
        secret: String,
        source: AssertionSource,
    },
    /// The JWT bearer grant with a workload's JWT, no client authentication (`client_id`
    /// only as a hint when given).
    Workload {
        assertion: String,
        client_id: Option<String>,
    },
}

/// Where an ID-JAG comes from.
#[derive(Debug, Clone)]
pub enum AssertionSource {
    Given(String),
    /// RFC 8693 at the enterprise IdP's token endpoint, with its ID token for this client.
    Exchange(IdpExchange),
}

/// The user's ID token and the client's credentials at the enterprise IdP.
#[derive(Debug, Clone)]
pub struct IdpExchange {
    pub token_endpoint: String,
    pub id_token: String,
    pub client_id: String,
    pub client_secret: Option<String>,
}

/// The whole flow for `grant`; `target.tool` is called once the token is in hand.
pub async fn login(target: &Target<'_>, grant: &MachineGrant) -> CliResult<Login> {
    let http = http_client()?;
    let (mut probe, challenge) = Probe::unauthorized(&http, target).await?;
    let (params, prm) = challenge_and_metadata(&http, &probe.server, challenge.as_deref()).await;
    let prm =
        prm.ok_or_else(|| fail("the server publishes no protected-resource metadata (RFC 9728)"))?;
    let (resource, meta) = protected_resource(&http, &probe.server, &prm).await?;
    let issuer = meta["issuer"].as_str().unwrap_or_default().to_string();
    let token_endpoint = meta["token_endpoint"]
        .as_str()
        .ok_or_else(|| fail("the authorization server metadata has no token_endpoint"))?
        .to_string();
    let scope = target
        .scope
        .map(str::to_string)
        .or_else(|| param(&params, "scope"));
    let methods = strings(&meta["token_endpoint_auth_methods_supported"]);
    let secret_method = |methods: &[String]| {
        if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") {
            "client_secret_basic"
        } else {
            "client_secret_post"
        }
    };
    let mut form = vec![("resource", resource.clone())];
    if let Some(scope) = &scope {
        form.push(("scope", scope.clone()));
    }
    // The grant's parameters, and the secret the client authenticates with (none: an
    // assertion in the form authenticates it, or nothing does).
    let (client_id, secret) = match grant {
        MachineGrant::Secret { client_id, secret } => {
            form.push(("grant_type", "client_credentials".into()));
            (client_id.clone(), Some(secret.clone()))
        }
        MachineGrant::PrivateKey {
            client_id,
            pem,
            alg,
        } => {
            form.push(("grant_type", "client_credentials".into()));
            form.push(("client_assertion_type", ASSERTION_TYPE.into()));
            // rfc7523bis: the audience is the authorization server's issuer.
            form.push((
                "client_assertion",
                client_assertion(client_id, pem, alg, &issuer)?,
            ));
            (client_id.clone(), None)
        }
        MachineGrant::IdJag {
            client_id,
            secret,
            source,
        } => {
            let assertion = match source {
                AssertionSource::Given(jwt) => jwt.clone(),
                AssertionSource::Exchange(idp) => {
                    exchange(&http, idp, &issuer, &resource, scope.as_deref()).await?
                }
            };
            form.push(("grant_type", JWT_BEARER.into()));
            form.push(("assertion", assertion));
            (client_id.clone(), Some(secret.clone()))
        }
        MachineGrant::Workload {
            assertion,
            client_id,
        } => {
            form.push(("grant_type", JWT_BEARER.into()));
            form.push(("assertion", assertion.clone()));
            if let Some(id) = client_id {
                form.push(("client_id", id.clone()));
            }
            (client_id.clone().unwrap_or_default(), None)
        }
    };
    let (tokens, method) = match &secret {
        Some(secret) => {
            let method = secret_method(&methods);
            let tokens = token_request(
                &http,
                &token_endpoint,
                form,
                &client_id,
                Some(secret),
                method,
                None,
            )
            .await?;
            (tokens, method)
        }
        None => {
            let method = match grant {
                MachineGrant::PrivateKey { .. } => "private_key_jwt",
                _ => "none",
            };
            (send(&http, &token_endpoint, &form, None).await?, method)
        }
    };
    let access = tokens["access_token"].as_str().unwrap_or("").to_string();
    let answer = probe.session(&http, Some(&access), target.tool).await?;
    answer.accepted(target.server_url)?;
    Ok(Login {
        access_token: access,
        refresh_token: tokens["refresh_token"].as_str().map(str::to_string),
        client_id,
        client_secret: secret,
        auth_method: method.to_string(),
        token_endpoint,
        registration: Value::Null,
        scope: tokens["scope"].as_str().map(str::to_string).or(scope),
        dpop_key: None,
    })
}

/// A token request with no client secret (an assertion authenticates, or nothing does).
async fn send(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, String)],
    what: Option<&str>,
) -> CliResult<Value> {
    let what = what.unwrap_or("token request");
    tokens_from(http.post(endpoint).form(form), what, what).await
}

/// RFC 8693 at the IdP: the user's ID token for an ID-JAG naming this authorization server
/// (`audience`, its issuer) and MCP server (`resource`). The client's IdP credentials go in
/// the form, as the MCP SDKs send them.
async fn exchange(
    http: &reqwest::Client,
    idp: &IdpExchange,
    audience: &str,
    resource: &str,
    scope: Option<&str>,
) -> CliResult<String> {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE.to_string()),
        ("requested_token_type", ID_JAG_TYPE.to_string()),
        ("subject_token", idp.id_token.clone()),
        ("subject_token_type", ID_TOKEN_TYPE.to_string()),
        ("audience", audience.to_string()),
        ("resource", resource.to_string()),
        ("client_id", idp.client_id.clone()),
    ];
    if let Some(secret) = &idp.client_secret {
        form.push(("client_secret", secret.clone()));
    }
    if let Some(scope) = scope {
        form.push(("scope", scope.to_string()));
    }
    let answer = send(
        http,
        &idp.token_endpoint,
        &form,
        Some("the IdP's token exchange"),
    )
    .await?;
    if answer["issued_token_type"].as_str() != Some(ID_JAG_TYPE) {
        return Err(fail(format!(
            "the IdP's token exchange issued {}, not an ID-JAG",
            answer["issued_token_type"]
        )));
    }
    Ok(answer["access_token"].as_str().unwrap_or("").to_string())
}

/// A `private_key_jwt` client assertion (RFC 7523 §3): `iss` = `sub` = the client, `aud`
/// the authorization server's issuer, five minutes, a fresh `jti`.
pub fn client_assertion(
    client_id: &str,
    pem: &str,
    alg: &str,
    audience: &str,
) -> CliResult<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let bad_key = |e: jsonwebtoken::errors::Error| fail(format!("the private key: {e}"));
    let (algorithm, key) = match alg {
        "ES256" => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(bad_key)?,
        ),
        "RS256" => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(bad_key)?,
        ),
        "EdDSA" => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(pem.as_bytes()).map_err(bad_key)?,
        ),
        other => {
            return Err(fail(format!(
                "signing algorithm {other}: ES256, RS256 or EdDSA"
            )));
        }
    };
    let now = SystemClock.now_unix();
    let mut header = Header::new(algorithm);
    header.typ = Some("JWT".into());
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": audience,
        "iat": now, "exp": now + 300, "jti": random_token(),
    });
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| fail(format!("signing: {e}")))
}
