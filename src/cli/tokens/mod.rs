//! `mcp-gateway tokens …`: list, inspect, mint, revoke and tidy access tokens, and check the
//! tokens saved in the env file. One file a job: [`mint`] makes tokens, [`listing`] reads and
//! revokes what the store holds (list, show, revoke, purge), [`saved`] checks the tokens saved
//! in the env file.

pub mod listing;
pub mod mint;
pub mod saved;

use clap::{Args, Subcommand};

use super::{Cli, CliError, CliResult};
use crate::clock::{Clock, SystemClock};
use crate::store::keys;

pub use saved::unverified_claims;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Live tokens (or, with --expired, index entries of tokens that have expired).
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        expired: bool,
    },
    /// One token's record.
    Show {
        #[arg(allow_hyphen_values = true)]
        jti: String,
    },
    /// Mint an access token and put it on the allow-list; prints only the token.
    Mint(Box<MintArgs>),
    /// Revoke by jti, by token, or every token of a user or client (with their refresh
    /// grants); every verify replica is told at once.
    Revoke {
        #[arg(conflicts_with_all = ["token", "user", "client"], allow_hyphen_values = true)]
        jti: Option<String>,
        #[arg(long, conflicts_with_all = ["user", "client"])]
        token: Option<String>,
        #[arg(long, conflicts_with = "client")]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
    },
    /// The tokens saved in the env file: whose, which client, when they expire.
    CheckExpiry,
    /// Check the saved tokens against the keys, the allow-list and Redis, and with
    /// --verify-url against a live /verify.
    Validate {
        #[arg(long, value_name = "URL")]
        verify_url: Option<String>,
    },
    /// Remove expired index entries and orphans (entries whose token is gone).
    PurgeExpired,
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
    /// The MCP resource URL the token is for (RFC 8707), e.g. `https://mcp.example.com/mcp`.
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
    /// Upstream groups for the `groups` claim (`X-User-Groups`), comma-separated.
    #[arg(long = "groups", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// An upstream access token verify hands to MCP servers of `FORWARD_UPSTREAM_TOKEN` hosts
    /// with this token (a service account's credential, say); stored sealed.
    #[arg(long, env = "MCP_UPSTREAM_TOKEN", hide_env_values = true)]
    pub upstream_token: Option<String>,
    /// Bind the token to this client IP.
    #[arg(long)]
    pub bind_ip: Option<std::net::IpAddr>,
    /// Bind the token to this User-Agent string.
    #[arg(long)]
    pub bind_ua: Option<String>,
    /// Bind the token to a client certificate (RFC 8705 x5t#S256 thumbprint).
    // Thumbprints are base64url: one in 32 starts with '-'.
    #[arg(long, allow_hyphen_values = true)]
    pub bind_cert_thumbprint: Option<String>,
    /// Bind the token to a DPoP key (RFC 9449 cnf.jkt: the key's RFC 7638 thumbprint); it is
    /// then accepted only as `Authorization: DPoP` with a proof signed by that key.
    #[arg(long, allow_hyphen_values = true)]
    pub bind_dpop_jkt: Option<String>,
    /// Mint this many distinct tokens (one per line), e.g. to load-test a deployment.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub count: u32,
}

/// The env-file variables that hold saved access tokens (the seed's names).
pub const SAVED_TOKENS: [&str; 2] = ["MCP_CLIENT_ACCESS_TOKEN", "GATEWAY_OAUTH_ACCESS_TOKEN"];

pub async fn run(cli: &Cli, cmd: &TokensCommand) -> CliResult {
    match cmd {
        TokensCommand::List {
            user,
            client,
            expired,
        } => listing::list(cli, user.as_deref(), client.as_deref(), *expired).await,
        TokensCommand::Show { jti } => listing::show(cli, jti).await,
        TokensCommand::Mint(args) => mint::mint_token(cli, args).await,
        TokensCommand::Revoke {
            jti,
            token,
            user,
            client,
        } => match (jti, token, user, client) {
            (Some(jti), ..) => listing::revoke(cli, jti).await,
            (None, Some(token), ..) => listing::revoke(cli, &saved::jti_of(token)?).await,
            (None, None, Some(user), _) => {
                listing::revoke_all(cli, &keys::user_tokens(user), "user", user).await
            }
            (None, None, None, Some(client)) => {
                listing::revoke_all(cli, &keys::client_tokens(client), "client", client).await
            }
            _ => Err(CliError::Failed(
                "give a JTI, --token, --user or --client".into(),
            )),
        },
        TokensCommand::CheckExpiry => saved::check_expiry(cli),
        TokensCommand::Validate { verify_url } => {
            saved::validate_saved(cli, verify_url.as_deref()).await
        }
        TokensCommand::PurgeExpired => listing::purge_expired(cli).await,
    }
}

fn now() -> i64 {
    SystemClock.now_unix()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn thumbprints_that_start_with_a_hyphen_are_values() {
        let jkt = "-7Ji8aGgLchbTGFOZKMDOXlmRVzsE8mBnux6y7X_DCY";
        let words = "mcp-gateway tokens mint --user-id 1 --user alice --client-id c";
        let bindings = ["--bind-dpop-jkt", jkt, "--bind-cert-thumbprint", "-x5t"];
        let cli = crate::cli::Cli::try_parse_from(words.split(' ').chain(bindings)).unwrap();
        let crate::cli::Command::Tokens(super::TokensCommand::Mint(args)) = cli.command else {
            panic!("not tokens mint");
        };
        assert_eq!(args.bind_dpop_jkt.as_deref(), Some(jkt));
        assert_eq!(args.bind_cert_thumbprint.as_deref(), Some("-x5t"));
    }
}
