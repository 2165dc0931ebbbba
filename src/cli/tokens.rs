//! `mcp-gateway tokens …`: list, inspect, mint, revoke and tidy access tokens, and check the
//! tokens saved in the env file.

use std::io::Write;
use std::time::Duration;

use base64::Engine;

use clap::{Args, Subcommand};
use redis::AsyncCommands;

use super::admin::{Admin, print_table, redis_failed, relative};
use super::{Cli, CliError, CliResult, envfile};
use crate::clock::{Clock, SystemClock};
use crate::store::{TokenRecord, keys};
use crate::token::{MintRequest, ValidationPolicy, mint, validate};

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
    #[arg(long)]
    pub bind_cert_thumbprint: Option<String>,
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
        } => list(cli, user.as_deref(), client.as_deref(), *expired).await,
        TokensCommand::Show { jti } => show(cli, jti).await,
        TokensCommand::Mint(args) => mint_token(cli, args).await,
        TokensCommand::Revoke {
            jti,
            token,
            user,
            client,
        } => match (jti, token, user, client) {
            (Some(jti), ..) => revoke(cli, jti).await,
            (None, Some(token), ..) => revoke(cli, &jti_of(token)?).await,
            (None, None, Some(user), _) => {
                revoke_all(cli, &keys::user_tokens(user), "user", user).await
            }
            (None, None, None, Some(client)) => {
                revoke_all(cli, &keys::client_tokens(client), "client", client).await
            }
            _ => Err(CliError::Failed(
                "give a JTI, --token, --user or --client".into(),
            )),
        },
        TokensCommand::CheckExpiry => check_expiry(cli),
        TokensCommand::Validate { verify_url } => validate_saved(cli, verify_url.as_deref()).await,
        TokensCommand::PurgeExpired => purge_expired(cli).await,
    }
}

fn now() -> i64 {
    SystemClock.now_unix()
}

fn record_json(record: &TokenRecord, ttl_ms: Option<i64>) -> serde_json::Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    if let (Some(ttl), Some(map)) = (ttl_ms, v.as_object_mut()) {
        map.insert("ttl_seconds".into(), (ttl / 1000).into());
    }
    v
}

/// The live token records of an index (`oauth:user_tokens:…`/`oauth:client_tokens:…`), by
/// expiry.
async fn indexed_records(admin: &mut Admin, index: &str) -> CliResult<Vec<TokenRecord>> {
    let jtis: Vec<String> = admin
        .zset(index)
        .await?
        .into_iter()
        .map(|(j, _)| j)
        .collect();
    records_at(admin, jtis.iter().map(|j| keys::token(j)).collect()).await
}

/// Rows written as they are read: a JSON array, or a table whose columns are at least as
/// wide as typical values (a listing of a million tokens never waits for the last one).
struct RowWriter {
    json: bool,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    headers: &'static [&'static str],
    widths: &'static [usize],
    rows: u64,
}

impl RowWriter {
    fn new(json: bool, headers: &'static [&'static str], widths: &'static [usize]) -> Self {
        Self {
            json,
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            headers,
            widths,
            rows: 0,
        }
    }

    fn write_cells(&mut self, cells: &[&str]) -> CliResult {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let w = self.widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(self.out, "{}", line.trim_end()).map_err(write_failed)
    }

    fn row(&mut self, value: &serde_json::Value, cells: &[&str]) -> CliResult {
        if self.json {
            let sep = if self.rows == 0 { "[\n  " } else { ",\n  " };
            write!(self.out, "{sep}{value}").map_err(write_failed)?;
        } else {
            if self.rows == 0 {
                let headers = self.headers;
                self.write_cells(headers)?;
            }
            self.write_cells(cells)?;
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self) -> CliResult {
        let end = match (self.json, self.rows) {
            (true, 0) => "[]\n",
            (true, _) => "\n]\n",
            (false, 0) => "(none)\n",
            (false, _) => "",
        };
        self.out.write_all(end.as_bytes()).map_err(write_failed)?;
        self.out.flush().map_err(write_failed)
    }
}

fn write_failed(e: std::io::Error) -> CliError {
    CliError::Failed(format!("cannot write: {e}"))
}

/// The records behind `jtis` (MGET), those still live.
async fn records_of(admin: &mut Admin, jtis: &[String]) -> CliResult<Vec<TokenRecord>> {
    records_at(admin, jtis.iter().map(|j| keys::token(j)).collect()).await
}

/// The token records stored under `keys` (MGET; gone or unreadable ones left out), by expiry.
async fn records_at(admin: &mut Admin, keys: Vec<String>) -> CliResult<Vec<TokenRecord>> {
    let mut records: Vec<TokenRecord> = admin
        .values(&keys)
        .await?
        .into_iter()
        .flatten()
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect();
    records.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then(a.jti.cmp(&b.jti)));
    Ok(records)
}

/// Lists without holding the list: with `--user`/`--client`, that index page by page (by
/// expiry); otherwise every token record, SCAN page by page (in no particular order).
async fn list(cli: &Cli, user: Option<&str>, client: Option<&str>, expired: bool) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let index = match (user, client) {
        (Some(u), _) => Some(keys::user_tokens(u)),
        (None, Some(c)) => Some(keys::client_tokens(c)),
        _ => None,
    };
    let now = now();
    if expired {
        return list_expired(cli, &mut admin, index, now).await;
    }
    let mut out = RowWriter::new(
        cli.json,
        &["JTI", "USER", "CLIENT", "SCOPE", "EXPIRES"],
        &[22, 12, 22, 12],
    );
    let emit = |out: &mut RowWriter, records: Vec<TokenRecord>| -> CliResult {
        for r in records {
            if let (Some(u), Some(c)) = (user, client)
                && !(r.username.eq_ignore_ascii_case(u) && r.client_id == c)
            {
                continue;
            }
            let expires = relative(r.expires_at - now);
            out.row(
                &record_json(&r, None),
                &[&r.jti, &r.username, &r.client_id, &r.scope, &expires],
            )?;
        }
        Ok(())
    };
    match index {
        Some(index) => {
            let mut start = 0;
            loop {
                let page = admin.zset_page(&index, start).await?;
                let jtis: Vec<String> = page
                    .iter()
                    .filter(|(_, exp)| *exp as i64 >= now)
                    .map(|(j, _)| j.clone())
                    .collect();
                emit(&mut out, records_of(&mut admin, &jtis).await?)?;
                if page.len() < super::admin::SCAN_PAGE {
                    break;
                }
                start += page.len() as isize;
            }
        }
        None => {
            let pattern = format!("{}*", keys::TOKEN_PREFIX);
            let mut cursor = 0;
            loop {
                let (next, page) = admin.scan_page(cursor, &pattern).await?;
                emit(&mut out, records_at(&mut admin, page).await?)?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    out.finish()
}

/// What remains of expired tokens: their index entries (until `purge-expired`).
async fn list_expired(cli: &Cli, admin: &mut Admin, index: Option<String>, now: i64) -> CliResult {
    let mut out = RowWriter::new(cli.json, &["JTI", "USER", "EXPIRED"], &[22, 12]);
    let mut indexes: Vec<String> = match index {
        Some(i) => vec![i],
        None => Vec::new(),
    };
    let all = indexes.is_empty();
    let mut cursor = 0;
    loop {
        if all {
            let pattern = format!("{}*", keys::USER_TOKENS_PREFIX);
            let (next, page) = admin.scan_page(cursor, &pattern).await?;
            indexes = page;
            cursor = next;
        }
        for idx in indexes.drain(..) {
            let user = idx
                .strip_prefix(keys::USER_TOKENS_PREFIX)
                .unwrap_or("")
                .to_string();
            let expired: Vec<(String, f64)> = admin
                .conn
                .zrangebyscore_withscores(&idx, "-inf", format!("({now}"))
                .await
                .map_err(redis_failed)?;
            for (jti, exp) in expired {
                let v = serde_json::json!({"jti": jti, "index": idx, "expires_at": exp as i64});
                out.row(&v, &[&jti, &user, &relative(exp as i64 - now)])?;
            }
        }
        if !all || cursor == 0 {
            break;
        }
    }
    out.finish()
}

async fn show(cli: &Cli, jti: &str) -> CliResult {
    let settings = cli.settings()?;
    let store = cli.store(&settings).await?;
    let failed = |e: crate::store::StoreError| CliError::Failed(format!("Redis: {e}"));
    let record = store
        .token(jti)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| CliError::Failed(format!("no live token with jti {jti}")))?;
    let ttl = match store.ttl(&keys::token(jti)).await.map_err(failed)? {
        crate::store::Ttl::Expires(left) => left.as_millis() as i64,
        crate::store::Ttl::Persistent => -1,
        crate::store::Ttl::Missing => -2,
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&record_json(&record, Some(ttl))).unwrap_or_default()
        );
    } else {
        let now = now();
        println!("jti        {}", record.jti);
        println!("user       {} (id {})", record.username, record.user_id);
        println!("client     {}", record.client_id);
        println!("scope      {}", record.scope);
        println!("audience   {}", record.audience.join(" "));
        println!(
            "issued     {}",
            relative(record.issued_at - now)
                .replace("in ", "")
                .replace("expired ", "")
        );
        println!("expires    {}", relative(record.expires_at - now));
        if let Some(f) = &record.family_id {
            println!("family     {f}");
        }
    }
    Ok(())
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
    let now = now();
    let lifetime = args
        .lifetime
        .map(Duration::from_secs)
        .unwrap_or(settings.access_token_lifetime);
    let request = MintRequest {
        subject: args.user_id.clone(),
        username: args.user.clone(),
        email: args.email.clone(),
        name: args.name.clone(),
        groups: args.groups.clone(),
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
    let upstream = match &args.upstream_token {
        None => None,
        Some(token) => {
            let sealer = settings.upstream_sealer().ok_or_else(|| {
                CliError::Failed(
                    "--upstream-token needs UPSTREAM_TOKEN_KEY or the signing key".into(),
                )
            })?;
            let session = crate::records::UpstreamSession {
                provider: "operator".into(),
                access_token: token.clone(),
                refresh_token: None,
                expires_at: None,
            };
            Some((sealer, session))
        }
    };
    let store = cli.store(&settings).await?;
    let count = args.count as usize;
    // Signing dominates (RSA): on every core, in batches that are recorded as they are made.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(10_000);
        let per_thread = batch.div_ceil(threads);
        let minted: Vec<crate::token::MintedToken> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let n = per_thread.min(batch.saturating_sub(t * per_thread));
                    let (settings, request) = (&settings, &request);
                    scope.spawn(move || {
                        (0..n)
                            .map(|_| mint(&settings.keys, &settings.issuer, request.clone(), now))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Ok(Vec::new())))
                .collect::<Result<Vec<Vec<_>>, _>>()
                .map(|v| v.into_iter().flatten().collect())
        })
        .map_err(|e| CliError::Failed(format!("cannot mint: {e}")))?;
        for chunk in minted.chunks(200) {
            let records: Vec<TokenRecord> = chunk
                .iter()
                .map(|m| {
                    let mut record = TokenRecord::for_claims(&m.claims, None);
                    record.upstream = upstream
                        .as_ref()
                        .map(|(sealer, session)| session.seal(sealer, &m.claims.jti));
                    record
                })
                .collect();
            let writes = records.iter().map(|r| store.put_token(r, now));
            for result in futures_util::future::join_all(writes).await {
                result.map_err(|e| CliError::Failed(format!("cannot record the token: {e}")))?;
            }
        }
        for token in &minted {
            writeln!(out, "{}", token.token)
                .map_err(|e| CliError::Failed(format!("cannot write: {e}")))?;
        }
        done += minted.len().max(1);
    }
    out.flush()
        .map_err(|e| CliError::Failed(format!("cannot write: {e}")))?;
    Ok(())
}

async fn revoke(cli: &Cli, jti: &str) -> CliResult {
    let settings = cli.settings()?;
    let store = cli.store(&settings).await?;
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

/// Every token in an index, with the refresh grants they came from.
async fn revoke_all(cli: &Cli, index: &str, what: &str, name: &str) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let store = cli.store(&settings).await?;
    let records = indexed_records(&mut admin, index).await?;
    let mut families: Vec<String> = records.iter().filter_map(|r| r.family_id.clone()).collect();
    // Through the family index too: a grant whose access tokens expired or were revoked
    // alone still has a live refresh token.
    let family_index = match what {
        "client" => keys::client_families(name),
        _ => keys::user_families(name),
    };
    families.extend(admin.zset(&family_index).await?.into_iter().map(|(f, _)| f));
    families.sort();
    families.dedup();
    // Told what was done when Redis stops answering half-way; revoking again is safe.
    let failed = |e: crate::store::StoreError, grants: usize, revoked: usize| {
        CliError::Failed(format!(
            "cannot finish revoking {what} {name}: {e}; {grants} refresh grants and {revoked} access tokens were revoked before that: run the command again to finish"
        ))
    };
    let mut grants = 0;
    for family in &families {
        let members = store
            .revoke_family(family, settings.refresh_token_lifetime)
            .await
            .map_err(|e| failed(e, grants, 0))?;
        if members > 0 {
            grants += 1;
        }
    }
    let mut revoked = 0;
    for record in &records {
        // Already gone if its family was revoked above; the call still announces it.
        store
            .revoke_token(&record.jti)
            .await
            .map_err(|e| failed(e, grants, revoked))?;
        revoked += 1;
    }
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"revoked_tokens": revoked, "revoked_refresh_families": grants})
        );
    } else {
        println!("revoked {revoked} access tokens and {grants} refresh grants of {what} {name}");
    }
    Ok(())
}

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
fn jti_of(token: &str) -> CliResult<String> {
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

fn check_expiry(cli: &Cli) -> CliResult {
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

async fn validate_saved(cli: &Cli, verify_url: Option<&str>) -> CliResult {
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

/// One SCAN walk of the keyspace; for each page, the expired entries of its indexes removed
/// (one pipelined ZREMRANGEBYSCORE each) and their orphans found with pipelined EXISTS, so no
/// step asks Redis for more than a page. Safe to interrupt and run again.
async fn purge_expired(cli: &Cli) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let now = now();
    let pattern = format!("{}*", keys::PREFIX);
    let mut purged = crate::store::admin::Purged::default();
    let mut cursor = 0;
    // Told what was done when Redis stops answering half-way; purging again is safe.
    let partial = |e: crate::store::StoreError, purged: &crate::store::admin::Purged| {
        CliError::Failed(format!(
            "{e}; {} expired index entries and {} orphans were removed before that: run the command again to finish",
            purged.expired, purged.orphans
        ))
    };
    loop {
        let (next, page) = admin
            .scan_page(cursor, &pattern)
            .await
            .map_err(|e| partial(e, &purged))?;
        let mut step = purged;
        admin
            .purge_page(&page, now, &crate::records::layout::Rules, &mut step)
            .await
            .map_err(|e| partial(e, &step))?;
        purged = step;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"expired_index_entries": purged.expired, "orphans": purged.orphans, "empty_families": purged.empty_families})
        );
    } else {
        println!(
            "removed {} expired index entries and {} orphans; {} refresh families emptied",
            purged.expired, purged.orphans, purged.empty_families
        );
    }
    Ok(())
}
