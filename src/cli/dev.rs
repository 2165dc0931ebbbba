//! `mcp-gateway dev`: the whole gateway in one process for a first try. The authorization
//! server and verify run with the same handlers as in production, on the embedded store
//! (or `REDIS_URL` when set), with a development login page in place of GitHub. It binds
//! loopback addresses only: the development login lets anyone be anyone.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use clap::Args;

use super::{Cli, CliError, CliResult};
use crate::auth::{AuthServer, AuthState, Upstreams};
use crate::config::{ConfigSource, Settings};
use crate::store::{MemoryStore, RedisStore, Store};
use crate::token::keys::{KeyMaterial, SigningAlgorithm};
use crate::verify::VerifyServer;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Authorization server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Verify (ForwardAuth) address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub verify_listen: SocketAddr,
    /// Your MCP server (e.g. http://127.0.0.1:3001/mcp): put it behind the gateway at
    /// --mcp-listen, with the same verify decision a proxy would ask for.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<url::Url>,
    /// Where MCP clients connect when --upstream is given (loopback only).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub mcp_listen: SocketAddr,
}

/// Settings for dev mode: the environment and env file, with development defaults for
/// whatever they leave unset.
pub fn dev_settings(cli: &Cli, args: &DevArgs) -> CliResult<(Settings, bool)> {
    let mut source = ConfigSource::from_process(cli.config.clone());
    if let Some(path) = cli.env_file_to_read() {
        super::overlay_env_file(&mut source, &path)?;
    }
    if let Some(url) = &cli.redis_url {
        source.env.insert("REDIS_URL".into(), url.clone());
    }
    let use_redis = source.env.get("REDIS_URL").is_some_and(|u| !u.is_empty());
    let defaults = [
        ("ISSUER_URL", format!("http://{}", args.listen)),
        (
            "RESOURCE_HOSTS",
            "localhost, 127.0.0.1, *.localhost".to_string(),
        ),
        ("ALLOWED_GITHUB_USERS", "*".to_string()),
        ("LOG_FORMAT", "text".to_string()),
        ("ACCEPT_ISSUER_AUDIENCE", "true".to_string()),
    ];
    for (key, value) in defaults {
        source.env.entry(key.to_string()).or_insert(value);
    }
    let has_key = [
        "JWT_PRIVATE_KEY_B64",
        "JWT_PRIVATE_KEY_FILE",
        "GATEWAY_JWT_SECRET",
    ]
    .iter()
    .any(|k| source.env.get(*k).is_some_and(|v| !v.is_empty()));
    if !has_key {
        let (_, pem) = KeyMaterial::generate(SigningAlgorithm::Rs256).map_err(CliError::Failed)?;
        source.env.insert("JWT_ALGORITHM".into(), "RS256".into());
        source.env.insert(
            "JWT_PRIVATE_KEY_B64".into(),
            base64::engine::general_purpose::STANDARD.encode(pem),
        );
    }
    // Nothing routes around a development gateway: Ctrl-C stops it at once.
    if !source.env.contains_key("SHUTDOWN_DRAIN") {
        source.env.insert("SHUTDOWN_DRAIN".into(), "0".into());
    }
    Ok((Settings::load(&source)?, use_redis))
}

pub async fn run(cli: &Cli, args: &DevArgs) -> CliResult {
    for (flag, addr) in [
        ("--listen", args.listen),
        ("--verify-listen", args.verify_listen),
        ("--mcp-listen", args.mcp_listen),
    ] {
        if !addr.ip().is_loopback() {
            return Err(CliError::Failed(format!(
                "{flag} {addr}: dev mode binds loopback addresses only (its login trusts anyone)"
            )));
        }
    }
    if let Some(upstream) = &args.upstream
        && !matches!(upstream.scheme(), "http" | "https")
    {
        return Err(CliError::Failed(format!(
            "--upstream {upstream}: an http(s) URL of your MCP server"
        )));
    }
    let (settings, use_redis) = dev_settings(cli, args)?;
    crate::telemetry::init(&settings);
    let store: Arc<dyn Store> = if use_redis {
        Arc::new(
            RedisStore::connect_with(&settings)
                .map_err(|e| CliError::Failed(format!("REDIS_URL: {e}")))?,
        )
    } else {
        Arc::new(MemoryStore::new().with_audit(
            settings.audit.bounds,
            crate::audit::Sink::new(settings.audit.log, crate::clock::system()),
        ))
    };
    let clock = crate::clock::system();
    let mut auth_settings = settings.clone();
    auth_settings.listen_addr = Some(args.listen);
    let mut verify_settings = settings.clone();
    verify_settings.listen_addr = Some(args.verify_listen);
    let auth_state = AuthState::new(
        auth_settings,
        store.clone(),
        clock.clone(),
        Upstreams::dev_login(),
    );
    let auth = auth_state
        .and_then(AuthServer::build)
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let verify = VerifyServer::build(verify_settings, store, clock)
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.verify_listen)))?;

    let verify_base = format!("http://{}", verify.addr());
    let path = &settings.resource_path;
    let proxy = match &args.upstream {
        Some(upstream) => Some(
            super::dev_proxy::DevProxy::bind(
                args.mcp_listen,
                upstream.clone(),
                path,
                verify_base.clone(),
                settings.issuer.clone(),
            )
            .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.mcp_listen)))?,
        ),
        None => None,
    };
    println!("MCP OAuth Gateway, development mode");
    println!(
        "  store: {}",
        if use_redis {
            "Redis (REDIS_URL)"
        } else {
            "embedded, in memory (gone when this stops)"
        }
    );
    println!("  login: development login page, any user name (no GitHub); loopback only");
    println!();
    println!("  issuer (authorization server)  {}", settings.issuer);
    println!("  verify (ForwardAuth endpoint)  {verify_base}/verify");
    match (&proxy, &args.upstream) {
        (Some(proxy), Some(upstream)) => {
            let mcp = format!("http://{}{path}", proxy.addr);
            println!("  MCP server (your upstream)     {upstream}");
            println!();
            println!("Connect your MCP client to:     {mcp}");
            println!(
                "  (its protected-resource metadata: http://{}/.well-known/oauth-protected-resource{path})",
                proxy.addr
            );
            println!("Try it:");
            println!("  npx -y mcp-remote {mcp}");
            println!("  curl -i {mcp}   # 401 with the challenge MCP clients follow to log in");
            println!(
                "The login page takes any user name: alice gets X-User-Id dev-alice and X-User-Name alice."
            );
        }
        _ => {
            println!();
            println!("Try it:");
            println!(
                "  curl -i {verify_base}/verify -H 'X-Forwarded-Proto: http' -H 'X-Forwarded-Host: localhost'"
            );
            println!("  # 401 with WWW-Authenticate: the challenge MCP clients follow to log in");
            println!(
                "  curl -s {}/.well-known/oauth-authorization-server",
                settings.issuer
            );
            println!();
            println!(
                "Put your MCP server behind it: mcp-gateway dev --upstream http://127.0.0.1:3001/mcp"
            );
            println!(
                "(or a proxy whose forwardAuth calls {verify_base}/verify: README, \"Deploy\")."
            );
        }
    }
    println!("Press Ctrl-C to stop.");

    // The proxy takes no signals of its own: it stops when the services have (Ctrl-C, SIGTERM).
    let stop_proxy = proxy.as_ref().map(|p| p.server.handle());
    let services = async {
        let done = tokio::join!(auth.run_until_stopped(), verify.run_until_stopped());
        if let Some(handle) = stop_proxy {
            handle.stop(false).await;
        }
        done
    };
    let proxied = async {
        match proxy {
            Some(p) => p.server.await,
            None => Ok(()),
        }
    };
    let ((a, v), p) = tokio::join!(services, proxied);
    a.and(v)
        .and(p)
        .map_err(|e| CliError::Failed(format!("server failed: {e}")))
}
