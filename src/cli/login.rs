//! `mcp-gateway login`, `refresh`, `github-token`: the CLI as an OAuth client of the gateway
//! (the seed's `mcp-client-token`, `refresh-tokens`, `generate-github-token`). Discovery from
//! the MCP server's 401 (RFC 9728) or the issuer (RFC 8414), dynamic registration (RFC 7591),
//! PKCE S256, a loopback redirect (RFC 8252), and the tokens saved to the env file.

use std::time::Duration;

use clap::Args;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Cli, CliError, CliResult, envfile};
use crate::clock::{Clock, SystemClock};
use crate::token::{random_token, sha256_b64url};

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

fn http() -> CliResult<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("mcp-gateway-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CliError::Failed(e.to_string()))
}

async fn get_json(http: &reqwest::Client, url: &str) -> CliResult<Value> {
    let resp = http.get(url).send().await.map_err(failed(url))?;
    if !resp.status().is_success() {
        return Err(CliError::Failed(format!(
            "{url} answered {}",
            resp.status()
        )));
    }
    resp.json().await.map_err(failed(url))
}

/// RFC 9728 discovery: the `resource_metadata` of the server's 401, else the well-known URL.
async fn discover_resource(
    http: &reqwest::Client,
    server_url: &str,
) -> CliResult<(String, String)> {
    let server =
        url::Url::parse(server_url).map_err(|e| CliError::Failed(format!("--server-url: {e}")))?;
    let resp = http
        .get(server_url)
        .send()
        .await
        .map_err(failed(server_url))?;
    let from_challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split("resource_metadata=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string);
    let path = server.path().trim_end_matches('/');
    let well_known = format!(
        "{}/.well-known/oauth-protected-resource{}",
        server.origin().ascii_serialization(),
        if path.is_empty() { "" } else { path }
    );
    let metadata = get_json(http, from_challenge.as_deref().unwrap_or(&well_known)).await?;
    let issuer = metadata["authorization_servers"][0]
        .as_str()
        .ok_or_else(|| {
            CliError::Failed("the protected-resource metadata names no authorization server".into())
        })?
        .to_string();
    let resource = metadata["resource"]
        .as_str()
        .unwrap_or(server_url)
        .to_string();
    Ok((resource, issuer))
}

async fn server_metadata(http: &reqwest::Client, issuer: &str) -> CliResult<Value> {
    let meta = get_json(
        http,
        &format!(
            "{}/.well-known/oauth-authorization-server",
            issuer.trim_end_matches('/')
        ),
    )
    .await?;
    if meta["issuer"].as_str() != Some(issuer.trim_end_matches('/')) {
        return Err(CliError::Failed(format!(
            "the metadata's issuer is not {issuer} (RFC 8414 §3.3)"
        )));
    }
    Ok(meta)
}

/// The browser part: print (and maybe open) the URL, wait for the loopback redirect.
async fn wait_for_code(
    listener: tokio::net::TcpListener,
    url: &str,
    state: &str,
    args: &BrowserArgs,
) -> CliResult<(String, Option<String>)> {
    println!("Open this URL in a browser to log in:");
    println!("{url}");
    if args.open {
        for opener in ["xdg-open", "open"] {
            if std::process::Command::new(opener).arg(url).spawn().is_ok() {
                break;
            }
        }
    }
    let wait = async {
        loop {
            let (mut socket, _) = listener
                .accept()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            while len < buf.len() {
                let n = socket.read(&mut buf[len..]).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..len]).to_string();
            let target = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let parsed = url::Url::parse(&format!("http://127.0.0.1{target}")).ok();
            let param = |name: &str| {
                parsed.as_ref().and_then(|u| {
                    u.query_pairs()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.into_owned())
                })
            };
            if parsed.as_ref().map(|u| u.path()) != Some("/callback") {
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                continue;
            }
            let (body, outcome) = match (param("code"), param("state"), param("error")) {
                (_, _, Some(error)) => (
                    "Login failed. You can close this window.",
                    Err(CliError::Failed(format!(
                        "the login failed: {error}: {}",
                        param("error_description").unwrap_or_default()
                    ))),
                ),
                (Some(code), Some(s), None) if s == state => (
                    "Logged in. You can close this window.",
                    Ok((code, param("iss"))),
                ),
                _ => (
                    "Unexpected answer. You can close this window.",
                    Err(CliError::Failed(
                        "the redirect had no code or a wrong state".into(),
                    )),
                ),
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            return outcome;
        }
    };
    tokio::time::timeout(Duration::from_secs(args.timeout), wait)
        .await
        .map_err(|_| CliError::Failed(format!("no login within {} s", args.timeout)))?
}

/// Registration, authorization with PKCE and the code exchange; returns what to save.
async fn authorize(
    cli: &Cli,
    issuer: &str,
    resource: Option<&str>,
    args: &BrowserArgs,
    names: &Names,
) -> CliResult {
    let http = http()?;
    let meta = server_metadata(&http, issuer).await?;
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

    let verifier = format!("{}{}", random_token(), random_token());
    let state = random_token();
    let mut url = url::Url::parse(&endpoint("authorization_endpoint")?)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("code_challenge", &sha256_b64url(verifier.as_bytes()))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state);
        if let Some(r) = resource {
            q.append_pair("resource", r);
        }
        if let Some(s) = &args.scope {
            q.append_pair("scope", s);
        }
    }
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
        ("client_id", client_id.clone()),
        ("client_secret", client_secret.clone()),
    ];
    if let Some(r) = resource {
        form.push(("resource", r.to_string()));
    }
    let tokens = token_request(&http, &token_endpoint, &form).await?;
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

async fn token_request(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, String)],
) -> CliResult<Value> {
    let resp = http
        .post(endpoint)
        .form(form)
        .send()
        .await
        .map_err(failed("token request"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(failed("token response"))?;
    if !status.is_success() || body["access_token"].as_str().is_none() {
        return Err(CliError::Failed(format!(
            "token request refused: {} {}",
            body["error"].as_str().unwrap_or("error"),
            body["error_description"].as_str().unwrap_or("")
        )));
    }
    Ok(body)
}

pub async fn login(cli: &Cli, args: &LoginArgs) -> CliResult {
    let server_url = args
        .server_url
        .as_deref()
        .or(args.server_url_flag.as_deref())
        .ok_or_else(|| {
            CliError::Failed("give the MCP server URL (or set MCP_SERVER_URL)".into())
        })?;
    let http = http()?;
    let (resource, issuer) = discover_resource(&http, server_url).await?;
    authorize(cli, &issuer, Some(&resource), &args.browser, &MCP_CLIENT).await
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
    let http = http()?;
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
                server_metadata(&http, issuer).await?["token_endpoint"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            }
        };
        let form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh),
            ("client_id", get(id_var.to_string()).unwrap_or_default()),
            (
                "client_secret",
                get(secret_var.to_string()).unwrap_or_default(),
            ),
        ];
        let tokens = token_request(&http, &endpoint, &form).await?;
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
