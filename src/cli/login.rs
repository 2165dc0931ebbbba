//! `mcp-gateway login`, `refresh`, `github-token`: the CLI as an OAuth client of the gateway
//! (the seed's `mcp-client-token`, `refresh-tokens`, `generate-github-token`). Discovery from
//! the MCP server's 401 (RFC 9728) or the issuer (RFC 8414), dynamic registration (RFC 7591),
//! PKCE S256, a loopback redirect (RFC 8252), and the tokens saved to the env file.

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::{Cli, CliError, CliResult, envfile};
use crate::clock::{Clock, SystemClock};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The MCP server's URL, e.g. `https://mcp.example.com/mcp`.
    #[arg(long = "server-url", env = "MCP_SERVER_URL", value_name = "URL")]
    pub server_url_flag: Option<String>,
    /// The same, as a plain argument (wins over the flag).
    #[arg(value_name = "SERVER_URL")]
    pub server_url: Option<String>,
    #[command(flatten)]
    pub browser: BrowserArgs,
    /// A client registered with the authorization server beforehand (no registration then).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Its secret, for a confidential pre-registered client.
    #[arg(long)]
    pub client_secret: Option<String>,
    /// The https URL of a Client ID Metadata Document describing this client: used as the
    /// client_id when the authorization server supports them (else the client registers).
    #[arg(long, value_name = "URL")]
    pub client_metadata_url: Option<String>,
    /// The MCP revision to speak to the server: 2025-11-25 (initialize) or 2026-07-28
    /// (stateless requests).
    #[arg(long, default_value = super::mcp_auth::PROTOCOL_2025, env = "MCP_PROTOCOL_VERSION")]
    pub protocol_version: String,
    /// Fetch the authorization URL and follow its redirects instead of a browser: for test
    /// harnesses whose authorization server approves without a user.
    #[arg(long)]
    pub follow_authorization: bool,
    /// DPoP (RFC 9449): prove a new ES256 key with every token request and MCP request, so
    /// the tokens are bound to it; the key is saved as MCP_CLIENT_DPOP_KEY beside them.
    #[arg(long)]
    pub dpop: bool,
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Once logged in, call this tool as a check (a 403 insufficient_scope steps up).
    #[arg(long, value_name = "NAME")]
    pub call_tool: Option<String>,
    /// Its arguments, as a JSON object.
    #[arg(
        long,
        value_name = "JSON",
        default_value = "{}",
        requires = "call_tool"
    )]
    pub tool_arguments: String,
}

/// Logging in without a browser: a machine client, an enterprise user's ID-JAG, a workload.
#[derive(Debug, Args)]
pub struct MachineArgs {
    /// Log in as a machine client (the client_credentials grant) with --client-id and
    /// --client-secret, or --private-key (private_key_jwt).
    #[arg(long)]
    pub client_credentials: bool,
    /// The client's private key (PKCS#8 PEM file) for private_key_jwt.
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<std::path::PathBuf>,
    /// The key's algorithm: ES256, RS256 or EdDSA.
    #[arg(long, default_value = "ES256")]
    pub signing_alg: String,
    /// Present this JWT with the JWT bearer grant: an ID-JAG (with --client-id and
    /// --client-secret) or a workload's token (alone); `@FILE` reads it from a file (a
    /// Kubernetes service-account token, say).
    #[arg(long, value_name = "JWT|@FILE")]
    pub assertion: Option<String>,
    /// Enterprise-managed authorization: exchange this ID token at --idp-token-endpoint for
    /// an ID-JAG, then present it (with --client-id and --client-secret).
    #[arg(long, value_name = "JWT", requires = "idp_token_endpoint")]
    pub id_token: Option<String>,
    /// The enterprise IdP's token endpoint (RFC 8693 token exchange).
    #[arg(long, value_name = "URL")]
    pub idp_token_endpoint: Option<String>,
    /// This client's id at the IdP.
    #[arg(long)]
    pub idp_client_id: Option<String>,
    /// Its secret at the IdP.
    #[arg(long)]
    pub idp_client_secret: Option<String>,
}

impl MachineArgs {
    /// The grant these flags ask for, if any; `client_id` and `secret` are the login's.
    fn grant(
        &self,
        client_id: Option<&str>,
        secret: Option<&str>,
    ) -> CliResult<Option<super::mcp_auth::machine::MachineGrant>> {
        use super::mcp_auth::machine::{AssertionSource, IdpExchange, MachineGrant};
        let need_id = |what: &str| {
            client_id
                .map(str::to_string)
                .ok_or_else(|| CliError::Failed(format!("{what} needs --client-id")))
        };
        let need_secret = |what: &str| {
            secret
                .map(str::to_string)
                .ok_or_else(|| CliError::Failed(format!("{what} needs --client-secret")))
        };
        if let Some(id_token) = &self.id_token {
            let endpoint = self.idp_token_endpoint.clone().unwrap_or_default();
            return Ok(Some(MachineGrant::IdJag {
                client_id: need_id("--id-token")?,
                secret: need_secret("--id-token")?,
                source: AssertionSource::Exchange(IdpExchange {
                    token_endpoint: endpoint,
                    id_token: id_token.clone(),
                    client_id: self.idp_client_id.clone().ok_or_else(|| {
                        CliError::Failed("--id-token needs --idp-client-id".into())
                    })?,
                    client_secret: self.idp_client_secret.clone(),
                }),
            }));
        }
        if let Some(assertion) = &self.assertion {
            let jwt = match assertion.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| CliError::Failed(format!("--assertion {assertion}: {e}")))?
                    .trim()
                    .to_string(),
                None => assertion.trim().to_string(),
            };
            return Ok(Some(match (client_id, secret) {
                (Some(id), Some(secret)) => MachineGrant::IdJag {
                    client_id: id.to_string(),
                    secret: secret.to_string(),
                    source: AssertionSource::Given(jwt),
                },
                (id, _) => MachineGrant::Workload {
                    assertion: jwt,
                    client_id: id.map(str::to_string),
                },
            }));
        }
        if !self.client_credentials {
            return Ok(None);
        }
        let client_id = need_id("--client-credentials")?;
        Ok(Some(match &self.private_key {
            Some(path) => MachineGrant::PrivateKey {
                client_id,
                pem: std::fs::read_to_string(path).map_err(|e| {
                    CliError::Failed(format!("--private-key {}: {e}", path.display()))
                })?,
                alg: self.signing_alg.clone(),
            },
            None => MachineGrant::Secret {
                client_id,
                secret: need_secret("--client-credentials")?,
            },
        }))
    }
}

#[derive(Debug, Args)]
pub struct GithubTokenArgs {
    /// The authorization server (default: ISSUER_URL).
    #[arg(long)]
    pub issuer: Option<String>,
    #[command(flatten)]
    pub browser: BrowserArgs,
}

#[derive(Debug, Args)]
pub struct BrowserArgs {
    /// Try to open a browser (xdg-open/open); the URL is printed either way.
    #[arg(long)]
    pub open: bool,
    /// Seconds to wait for the browser to come back.
    #[arg(long, default_value = "300")]
    pub timeout: u64,
    /// Loopback port for the redirect (0 = any free port).
    #[arg(long, default_value = "0")]
    pub port: u16,
    /// Scopes to ask for (default: what the server advertises).
    #[arg(long)]
    pub scope: Option<String>,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// Refresh tokens that expire within this many seconds.
    #[arg(long, default_value = "86400")]
    pub within: u64,
    /// Refresh even if not expiring soon.
    #[arg(long)]
    pub force: bool,
}

/// Where a login's results go in the env file.
struct Names {
    prefix: &'static str,
}

impl Names {
    fn var(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.prefix)
    }
}

const MCP_CLIENT: Names = Names {
    prefix: "MCP_CLIENT",
};
const GATEWAY_OAUTH: Names = Names {
    prefix: "GATEWAY_OAUTH",
};

fn failed(what: &str) -> impl Fn(reqwest::Error) -> CliError + '_ {
    move |e| CliError::Failed(format!("{what}: {}", e.without_url()))
}

fn browser_of(args: &BrowserArgs, follow: bool) -> super::mcp_auth::Browser {
    super::mcp_auth::Browser {
        open: args.open,
        follow,
        port: args.port,
        timeout: Duration::from_secs(args.timeout),
    }
}

/// The browser step for the gateway's own flows: the code and `iss` of the redirect.
async fn wait_for_code(
    listener: tokio::net::TcpListener,
    url: &str,
    state: &str,
    args: &BrowserArgs,
) -> CliResult<(String, Option<String>)> {
    let back = super::mcp_auth::wait_for_redirect(&listener, url, &browser_of(args, false)).await?;
    let param = |name: &str| {
        back.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    match (param("code"), param("state"), param("error")) {
        (_, _, Some(error)) => Err(CliError::Failed(format!(
            "the login failed: {error}: {}",
            param("error_description").unwrap_or_default()
        ))),
        (Some(code), Some(s), None) if s == state => Ok((code, param("iss"))),
        _ => Err(CliError::Failed(
            "the redirect had no code or a wrong state".into(),
        )),
    }
}

/// Registration, authorization with PKCE and the code exchange; returns what to save.
async fn authorize(
    cli: &Cli,
    issuer: &str,
    resource: Option<&str>,
    args: &BrowserArgs,
    names: &Names,
) -> CliResult {
    let http = super::mcp_auth::http_client()?;
    let meta = super::mcp_auth::server_metadata(&http, issuer.trim_end_matches('/')).await?;
    let endpoint = |name: &str| {
        meta[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| CliError::Failed(format!("the server metadata has no {name}")))
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener
            .local_addr()
            .map_err(|e| CliError::Failed(e.to_string()))?
            .port()
    );
    let registration: Value = http
        .post(endpoint("registration_endpoint")?)
        .json(&serde_json::json!({
            "client_name": "mcp-gateway CLI",
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["authorization_code", "refresh_token"],
        }))
        .send()
        .await
        .map_err(failed("registration"))?
        .json()
        .await
        .map_err(failed("registration"))?;
    let client_id = registration["client_id"]
        .as_str()
        .ok_or_else(|| CliError::Failed(format!("registration failed: {registration}")))?
        .to_string();
    let client_secret = registration["client_secret"]
        .as_str()
        .unwrap_or("")
        .to_string();

    let super::mcp_auth::AuthorizationRequest {
        url,
        verifier,
        state,
    } = super::mcp_auth::AuthorizationRequest::new(
        &endpoint("authorization_endpoint")?,
        &client_id,
        &redirect_uri,
    )?
    .with("resource", resource)
    .with("scope", args.scope.as_deref());
    let (code, iss) = wait_for_code(listener, url.as_str(), &state, args).await?;
    if iss
        .as_deref()
        .is_some_and(|i| i != issuer.trim_end_matches('/'))
    {
        return Err(CliError::Failed(
            "the redirect came from another issuer (RFC 9207): refusing".into(),
        ));
    }
    let token_endpoint = endpoint("token_endpoint")?;
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(r) = resource {
        form.push(("resource", r.to_string()));
    }
    let tokens = super::mcp_auth::token_request(
        &http,
        &token_endpoint,
        form,
        &client_id,
        Some(&client_secret),
        "client_secret_post",
        None,
    )
    .await?;
    let mut save = vec![
        (
            names.var("ACCESS_TOKEN"),
            tokens["access_token"].as_str().unwrap_or("").to_string(),
        ),
        (
            names.var("REFRESH_TOKEN"),
            tokens["refresh_token"].as_str().unwrap_or("").to_string(),
        ),
        (names.var("ID"), client_id),
        (names.var("SECRET"), client_secret),
        (names.var("TOKEN_ENDPOINT"), token_endpoint),
    ];
    if names.prefix == "MCP_CLIENT" {
        save.push((
            names.var("REGISTRATION_TOKEN"),
            registration["registration_access_token"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ));
        save.push((
            names.var("REGISTRATION_URI"),
            registration["registration_client_uri"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ));
    } else {
        save[2].0 = "GATEWAY_OAUTH_CLIENT_ID".into();
        save[3].0 = "GATEWAY_OAUTH_CLIENT_SECRET".into();
    }
    let path = cli.env_file_to_write();
    let updates: Vec<(&str, &str)> = save.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    envfile::update(&path, &updates)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    let names: Vec<&str> = save.iter().map(|(k, _)| k.as_str()).collect();
    println!(
        "Logged in. Saved {} to {}",
        names.join(", "),
        path.display()
    );
    Ok(())
}

pub async fn login(cli: &Cli, args: &LoginArgs) -> CliResult {
    let server_url = args
        .server_url
        .as_deref()
        .or(args.server_url_flag.as_deref())
        .ok_or_else(|| {
            CliError::Failed("give the MCP server URL (or set MCP_SERVER_URL)".into())
        })?;
    // Run as the MCP conformance suite's client under test (`conformance client --command
    // "mcp-gateway login"`), it takes what the suite hands its clients: the revision, a
    // pre-registered client, the suite's metadata document URL; its authorization servers
    // approve at once, and its step-up scenarios need a tool call.
    let harness = Harness::from_env();
    let protocol_flag = match &harness {
        Some(h) => h.protocol.as_str(),
        None => args.protocol_version.as_str(),
    };
    let protocol = match protocol_flag {
        v @ (super::mcp_auth::PROTOCOL_2025 | super::mcp_auth::PROTOCOL_2026) => v,
        other => {
            return Err(CliError::Failed(format!(
                "--protocol-version {other}: 2025-11-25 or 2026-07-28"
            )));
        }
    };
    let from_context = |name: &str| {
        harness
            .as_ref()
            .and_then(|h| h.context[name].as_str().map(str::to_string))
    };
    let choice = super::mcp_auth::ClientChoice {
        client_id: args
            .client_id
            .clone()
            .or_else(|| from_context("client_id"))
            .filter(|c| !c.is_empty()),
        client_secret: args
            .client_secret
            .clone()
            .or_else(|| from_context("client_secret"))
            .filter(|c| !c.is_empty()),
        metadata_url: args.client_metadata_url.clone().or_else(|| {
            harness
                .as_ref()
                .map(|_| Harness::CLIENT_METADATA_URL.to_string())
        }),
        dpop: if args.dpop || harness.as_ref().is_some_and(Harness::wants_dpop) {
            Some(std::sync::Arc::new(
                super::mcp_auth::dpop::DpopSigner::generate()?,
            ))
        } else {
            None
        },
    };
    let call_tool = args
        .call_tool
        .clone()
        .or_else(|| harness.as_ref().map(|_| Harness::TOOL.to_string()));
    let follow = args.follow_authorization || harness.is_some();
    let tool = match &call_tool {
        Some(name) => Some(super::mcp_auth::ToolCall {
            name: name.clone(),
            arguments: serde_json::from_str::<Value>(&args.tool_arguments)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| CliError::Failed("--tool-arguments: a JSON object".into()))?,
        }),
        None => None,
    };
    let machine = match harness.as_ref().and_then(Harness::machine_grant) {
        Some(grant) => Some(grant),
        None => args
            .machine
            .grant(choice.client_id.as_deref(), choice.client_secret.as_deref())?,
    };
    let target = super::mcp_auth::Target {
        server_url,
        protocol,
        scope: args.browser.scope.as_deref(),
        tool: tool.as_ref(),
    };
    let done = match &machine {
        Some(grant) => super::mcp_auth::machine::login(&target, grant).await?,
        None => {
            super::mcp_auth::login(&target, &choice, &browser_of(&args.browser, follow)).await?
        }
    };
    if harness.is_some() && cli.env_file.is_none() {
        println!(
            "Logged in to {server_url} as client {} ({}); nothing saved under the conformance suite",
            done.client_id, done.auth_method
        );
        return Ok(());
    }
    let text = |v: &Value, name: &str| v[name].as_str().unwrap_or("").to_string();
    let save = [
        (MCP_CLIENT.var("ACCESS_TOKEN"), done.access_token.clone()),
        (
            MCP_CLIENT.var("REFRESH_TOKEN"),
            done.refresh_token.clone().unwrap_or_default(),
        ),
        (MCP_CLIENT.var("ID"), done.client_id.clone()),
        (
            MCP_CLIENT.var("SECRET"),
            done.client_secret.clone().unwrap_or_default(),
        ),
        (MCP_CLIENT.var("AUTH_METHOD"), done.auth_method.clone()),
        (
            MCP_CLIENT.var("DPOP_KEY"),
            done.dpop_key.clone().unwrap_or_default(),
        ),
        (
            MCP_CLIENT.var("TOKEN_ENDPOINT"),
            done.token_endpoint.clone(),
        ),
        (
            MCP_CLIENT.var("REGISTRATION_TOKEN"),
            text(&done.registration, "registration_access_token"),
        ),
        (
            MCP_CLIENT.var("REGISTRATION_URI"),
            text(&done.registration, "registration_client_uri"),
        ),
    ];
    let path = cli.env_file_to_write();
    let updates: Vec<(&str, &str)> = save.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    envfile::update(&path, &updates)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    println!(
        "Logged in to {server_url} as client {} ({}){}. Saved MCP_CLIENT_* to {}",
        done.client_id,
        done.auth_method,
        done.scope
            .as_deref()
            .map(|s| format!(", scope {s}"))
            .unwrap_or_default(),
        path.display()
    );
    Ok(())
}

/// What the MCP conformance suite hands the client it runs (its README: "Testing Clients").
struct Harness {
    scenario: String,
    protocol: String,
    context: Value,
}

impl Harness {
    /// The Client ID Metadata Document URL the suite's CIMD scenario expects clients to use.
    const CLIENT_METADATA_URL: &'static str = "https://conformance-test.local/client-metadata.json";
    /// The tool the suite's servers offer.
    const TOOL: &'static str = "test-tool";

    /// The DPoP extension's scenarios (SEP-1932): the client proves a key.
    fn wants_dpop(&self) -> bool {
        matches!(self.scenario.as_str(), "auth/dpop" | "auth/dpop-nonce")
    }

    /// The extension scenarios' grants, from the context the suite hands over: machine
    /// clients, enterprise-managed authorization, workload identity.
    fn machine_grant(&self) -> Option<super::mcp_auth::machine::MachineGrant> {
        use super::mcp_auth::machine::{AssertionSource, IdpExchange, MachineGrant};
        let text = |name: &str| self.context[name].as_str().map(str::to_string);
        Some(match self.scenario.as_str() {
            "auth/client-credentials-basic" => MachineGrant::Secret {
                client_id: text("client_id")?,
                secret: text("client_secret")?,
            },
            "auth/client-credentials-jwt" => MachineGrant::PrivateKey {
                client_id: text("client_id")?,
                pem: text("private_key_pem")?,
                alg: text("signing_algorithm").unwrap_or_else(|| "ES256".into()),
            },
            "auth/enterprise-managed-authorization" => MachineGrant::IdJag {
                client_id: text("client_id")?,
                secret: text("client_secret")?,
                source: AssertionSource::Exchange(IdpExchange {
                    token_endpoint: text("idp_token_endpoint")?,
                    id_token: text("idp_id_token")?,
                    client_id: text("idp_client_id")?,
                    client_secret: text("idp_client_secret"),
                }),
            },
            // Only the valid token: the others are for the suite's own broken clients.
            "auth/wif-jwt-bearer" => MachineGrant::Workload {
                assertion: text("valid_jwt")?,
                client_id: text("client_id"),
            },
            _ => return None,
        })
    }

    fn from_env() -> Option<Self> {
        let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").ok()?;
        let protocol = match std::env::var("MCP_CONFORMANCE_PROTOCOL_VERSION").as_deref() {
            Ok(super::mcp_auth::PROTOCOL_2026) => super::mcp_auth::PROTOCOL_2026,
            _ => super::mcp_auth::PROTOCOL_2025,
        };
        let context = std::env::var("MCP_CONFORMANCE_CONTEXT")
            .ok()
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or(Value::Null);
        Some(Self {
            scenario,
            protocol: protocol.to_string(),
            context,
        })
    }
}

pub async fn github_token(cli: &Cli, args: &GithubTokenArgs) -> CliResult {
    let issuer = match &args.issuer {
        Some(i) => i.clone(),
        None => cli.settings()?.issuer,
    };
    authorize(cli, &issuer, None, &args.browser, &GATEWAY_OAUTH).await
}

pub async fn refresh(cli: &Cli, args: &RefreshArgs) -> CliResult {
    let path = cli.env_file_to_write();
    let pairs = envfile::read(&path)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let get = |name: String| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let http = super::mcp_auth::http_client()?;
    let now = SystemClock.now_unix();
    let mut refreshed = Vec::new();
    let mut found = false;
    for (names, id_var, secret_var) in [
        (&MCP_CLIENT, "MCP_CLIENT_ID", "MCP_CLIENT_SECRET"),
        (
            &GATEWAY_OAUTH,
            "GATEWAY_OAUTH_CLIENT_ID",
            "GATEWAY_OAUTH_CLIENT_SECRET",
        ),
    ] {
        let (Some(access), Some(refresh)) = (
            get(names.var("ACCESS_TOKEN")),
            get(names.var("REFRESH_TOKEN")),
        ) else {
            continue;
        };
        found = true;
        let claims = super::tokens::unverified_claims(&access).unwrap_or_default();
        let exp = claims["exp"].as_i64().unwrap_or(0);
        if !args.force && exp - now > args.within as i64 {
            println!(
                "{}: still valid {}, not refreshed",
                names.var("ACCESS_TOKEN"),
                super::admin::relative(exp - now)
            );
            continue;
        }
        let endpoint = match get(names.var("TOKEN_ENDPOINT")) {
            Some(e) => e,
            None => {
                let issuer = claims["iss"]
                    .as_str()
                    .ok_or_else(|| CliError::Failed("cannot tell where to refresh".into()))?;
                super::mcp_auth::server_metadata(&http, issuer.trim_end_matches('/')).await?["token_endpoint"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            }
        };
        let secret = get(secret_var.to_string());
        // Saved by `login`; the gateway's own flows register client_secret_post.
        let method = get(names.var("AUTH_METHOD")).unwrap_or_else(|| {
            if secret.is_some() {
                "client_secret_post".into()
            } else {
                "none".into()
            }
        });
        let form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh),
        ];
        // Tokens bound to a DPoP key are refreshed with a proof of it (a public client's
        // refresh token is bound to it too).
        let dpop = get(names.var("DPOP_KEY"))
            .map(|k| super::mcp_auth::dpop::DpopSigner::from_saved(&k))
            .transpose()?;
        let tokens = super::mcp_auth::token_request(
            &http,
            &endpoint,
            form,
            &get(id_var.to_string()).unwrap_or_default(),
            secret.as_deref(),
            &method,
            dpop.as_ref(),
        )
        .await?;
        refreshed.push((
            names.var("ACCESS_TOKEN"),
            tokens["access_token"].as_str().unwrap_or("").to_string(),
        ));
        refreshed.push((
            names.var("REFRESH_TOKEN"),
            tokens["refresh_token"].as_str().unwrap_or("").to_string(),
        ));
        println!(
            "{}: refreshed (the refresh token rotated)",
            names.var("ACCESS_TOKEN")
        );
    }
    if !found {
        return Err(CliError::Failed(format!(
            "no saved tokens in {} (run `mcp-gateway login`)",
            path.display()
        )));
    }
    if !refreshed.is_empty() {
        let updates: Vec<(&str, &str)> = refreshed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        envfile::update(&path, &updates)
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}
