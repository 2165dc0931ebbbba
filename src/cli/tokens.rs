//! `mcp-gateway tokens …`: mint and revoke access tokens.

use std::time::Duration;

use base64::Engine;
use clap::{Args, Subcommand};

use super::{Cli, CliError, CliResult};
use crate::clock::{Clock, SystemClock};
use crate::store::TokenRecord;
use crate::token::{MintRequest, mint};

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Mint an access token and put it on the allow-list; prints only the token.
    Mint(Box<MintArgs>),
    /// Revoke a token by jti (or --token): deletes it and tells every verify replica.
    Revoke {
        /// The token's jti.
        #[arg(required_unless_present = "token", conflicts_with = "token")]
        jti: Option<String>,
        /// The token itself; its jti is read from it.
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct MintArgs {
    /// GitHub user id (the `sub` claim).
    #[arg(long)]
    pub user_id: String,
    /// GitHub login.
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub client_id: String,
    /// Space-separated scopes.
    #[arg(long, default_value = "")]
    pub scope: String,
    /// The MCP resource URL the token is for (RFC 8707), e.g. https://mcp.example.com/mcp.
    /// Repeat for several; none means the issuer only.
    #[arg(long)]
    pub resource: Vec<String>,
    /// Lifetime in seconds (default ACCESS_TOKEN_LIFETIME).
    #[arg(long)]
    pub lifetime: Option<u64>,
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// Authentication methods, comma-separated (e.g. github,otp).
    #[arg(long, value_delimiter = ',')]
    pub amr: Vec<String>,
    /// Bind the token to this client IP.
    #[arg(long)]
    pub bind_ip: Option<std::net::IpAddr>,
    /// Bind the token to this User-Agent string.
    #[arg(long)]
    pub bind_ua: Option<String>,
    /// Bind the token to a client certificate (RFC 8705 x5t#S256 thumbprint).
    #[arg(long)]
    pub bind_cert_thumbprint: Option<String>,
}

pub async fn run(cli: &Cli, cmd: &TokensCommand) -> CliResult {
    match cmd {
        TokensCommand::Mint(args) => mint_token(cli, args).await,
        TokensCommand::Revoke { jti, token } => {
            let jti = match (jti, token) {
                (Some(jti), _) => jti.clone(),
                (None, Some(token)) => jti_of(token)?,
                (None, None) => return Err(CliError::Failed("give a JTI or --token".into())),
            };
            revoke(cli, &jti).await
        }
    }
}

async fn mint_token(cli: &Cli, args: &MintArgs) -> CliResult {
    let settings = cli.settings()?;
    for resource in &args.resource {
        let url = url::Url::parse(resource)
            .map_err(|e| CliError::Failed(format!("--resource {resource:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.fragment().is_some() {
            return Err(CliError::Failed(format!(
                "--resource {resource:?}: must be an http(s) URL without fragment (RFC 8707)"
            )));
        }
    }
    let now = SystemClock.now_unix();
    let lifetime = args
        .lifetime
        .map(Duration::from_secs)
        .unwrap_or(settings.access_token_lifetime);
    let request = MintRequest {
        subject: args.user_id.clone(),
        username: args.user.clone(),
        email: args.email.clone(),
        name: args.name.clone(),
        client_id: args.client_id.clone(),
        scope: args.scope.split_whitespace().collect::<Vec<_>>().join(" "),
        audience: args.resource.clone(),
        lifetime,
        amr: args.amr.clone(),
        cert_thumbprint: args.bind_cert_thumbprint.clone(),
        bind_ip: args.bind_ip.map(|ip| ip.to_string()),
        bind_ua: args
            .bind_ua
            .as_deref()
            .map(|ua| crate::token::sha256_b64url(ua.as_bytes())),
        custom_claims: settings.custom_claims.clone(),
    };
    let minted = mint(&settings.keys, &settings.issuer, request, now)
        .map_err(|e| CliError::Failed(format!("cannot mint: {e}")))?;
    let claims = &minted.claims;
    let record = TokenRecord {
        jti: claims.jti.clone(),
        user_id: claims.sub.clone(),
        username: claims.username.clone(),
        client_id: claims.client_id.clone(),
        scope: claims.scope.clone(),
        audience: claims.aud.iter().map(str::to_string).collect(),
        issued_at: claims.iat,
        expires_at: claims.exp,
        family_id: None,
    };
    let store = cli.store(&settings)?;
    store
        .put_token(&record, now)
        .await
        .map_err(|e| CliError::Failed(format!("cannot record the token: {e}")))?;
    println!("{}", minted.token);
    Ok(())
}

async fn revoke(cli: &Cli, jti: &str) -> CliResult {
    let settings = cli.settings()?;
    let store = cli.store(&settings)?;
    let existed = store
        .revoke_token(jti)
        .await
        .map_err(|e| CliError::Failed(format!("cannot revoke: {e}")))?;
    if existed {
        println!("revoked {jti}");
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "no live token with jti {jti} (already revoked or expired); revocation published anyway"
        )))
    }
}

/// The `jti` of a token, read without checking the signature: revoking is always safe, and
/// an operator must be able to revoke a token signed by a key that is gone.
fn jti_of(token: &str) -> CliResult<String> {
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or_else(|| CliError::Failed("--token is not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| CliError::Failed("--token payload is not base64url".into()))?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| CliError::Failed("--token payload is not JSON".into()))?;
    claims
        .get("jti")
        .and_then(|j| j.as_str())
        .filter(|j| !j.is_empty())
        .map(str::to_string)
        .ok_or_else(|| CliError::Failed("--token has no jti".into()))
}
