//! `mcp-gateway clients …`: registered clients (RFC 7591 registrations).

use clap::Subcommand;
use redis::AsyncCommands;

use super::admin::{Admin, print_table, redis_failed, relative};
use super::progress::Progress;
use super::{Cli, CliError, CliResult};
use crate::clock::{Clock, SystemClock};
use crate::records::ClientRecord;
use crate::store::keys;

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Every registered client.
    List,
    /// One client's registration and its live tokens.
    Show {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Create a client that dynamic registration cannot: a machine client
    /// (--client-credentials: it calls as itself, `sub` = client:{id}) and/or one that
    /// presents ID-JAGs of trusted IdPs (--id-jag). It authenticates with a secret (printed
    /// once, stored hashed) or, with --jwks-uri or --jwks, with private_key_jwt.
    Create(CreateArgs),
    /// Delete a registration; with --complete also its access and refresh tokens, codes and
    /// consents (every verify replica is told).
    Delete {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        complete: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Its name, shown in the audit trail and in `clients list`.
    #[arg(long)]
    pub name: String,
    /// It may use the client_credentials grant (as itself, no user).
    #[arg(long)]
    pub client_credentials: bool,
    /// It may present ID-JAGs (the JWT bearer grant) for the users of a trusted IdP.
    #[arg(long)]
    pub id_jag: bool,
    /// The scopes it may be given at most (space- or comma-separated); without it, a request
    /// that names none gets DEFAULT_SCOPE.
    #[arg(long)]
    pub scope: Option<String>,
    /// private_key_jwt with the keys served at this https URL (fetched as metadata
    /// documents' keys are: SSRF-guarded, cached, refetched for an unknown kid).
    #[arg(long, value_name = "URL", conflicts_with = "jwks")]
    pub jwks_uri: Option<String>,
    /// private_key_jwt with the public JWK set in this file.
    #[arg(long, value_name = "FILE")]
    pub jwks: Option<std::path::PathBuf>,
    /// Its id (letters, digits, `.`, `_`, `-`; at most 64); default a random one. Tool rules
    /// and scope grants name it as `client:{id}`.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// How a secret client sends its secret: in a Basic header (`basic`) or the form (`post`).
    #[arg(long, default_value = "basic", value_parser = ["basic", "post"])]
    pub secret_method: String,
}

pub async fn run(cli: &Cli, cmd: &ClientsCommand) -> CliResult {
    match cmd {
        ClientsCommand::List => list(cli).await,
        ClientsCommand::Create(args) => create(cli, args).await,
        ClientsCommand::Show { client_id } => show(cli, client_id).await,
        ClientsCommand::Delete {
            client_id,
            complete,
        } => delete(cli, client_id, *complete).await,
    }
}

pub async fn all_clients(admin: &mut Admin) -> CliResult<Vec<ClientRecord>> {
    let keys = admin.scan(&format!("{}*", keys::CLIENT_PREFIX)).await?;
    let mut clients: Vec<ClientRecord> = admin
        .values(&keys)
        .await?
        .into_iter()
        .flatten()
        .filter_map(|j| serde_json::from_str(&j).ok())
        .collect();
    clients.sort_by_key(|c| c.client_id_issued_at);
    Ok(clients)
}

/// The registration as shown to operators: never a secret or its hash.
fn public_json(client: &ClientRecord, live_tokens: usize) -> serde_json::Value {
    let mut v = serde_json::to_value(client).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.remove("client_secret_hash");
        map.remove("registration_token_hash");
        map.insert("live_tokens".into(), live_tokens.into());
    }
    v
}

async fn live_count(admin: &mut Admin, client_id: &str) -> CliResult<usize> {
    let now = SystemClock.now_unix();
    let n: usize = admin
        .conn
        .zcount(keys::client_tokens(client_id), now, "+inf")
        .await
        .map_err(redis_failed)?;
    Ok(n)
}

async fn list(cli: &Cli) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let now = SystemClock.now_unix();
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for client in all_clients(&mut admin).await? {
        let live = live_count(&mut admin, &client.client_id).await?;
        rows.push(vec![
            client.client_id.clone(),
            client.client_name.clone().unwrap_or_default(),
            client.token_endpoint_auth_method.clone(),
            client.redirect_uris.join(" "),
            live.to_string(),
            if client.client_secret_expires_at == 0 {
                "never".into()
            } else {
                relative(client.client_secret_expires_at - now)
            },
        ]);
        items.push(public_json(&client, live));
    }
    print_table(
        cli.json,
        &serde_json::Value::Array(items),
        &[
            "CLIENT_ID",
            "NAME",
            "AUTH",
            "REDIRECT_URIS",
            "TOKENS",
            "EXPIRES",
        ],
        &rows,
    );
    Ok(())
}

async fn show(cli: &Cli, client_id: &str) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let store = cli.store(&settings).await?;
    let client = ClientRecord::load(store.as_ref(), client_id)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| CliError::Failed(format!("no client {client_id}")))?;
    let live = live_count(&mut admin, client_id).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&public_json(&client, live)).unwrap_or_default()
    );
    Ok(())
}

async fn create(cli: &Cli, args: &CreateArgs) -> CliResult {
    let settings = cli.settings()?;
    let invalid = |why: String| CliError::Failed(why);
    let mut grant_types = Vec::new();
    if args.client_credentials {
        grant_types.push("client_credentials".to_string());
    }
    if args.id_jag {
        grant_types.push(crate::auth::client_metadata::JWT_BEARER.to_string());
    }
    if grant_types.is_empty() {
        return Err(invalid(
            "say what the client is for: --client-credentials and/or --id-jag".into(),
        ));
    }
    let name = args.name.trim();
    if name.is_empty() || name.len() > 512 || name.chars().any(char::is_control) {
        return Err(invalid("--name must be a short line of text".into()));
    }
    let scope = match &args.scope {
        None => None,
        Some(raw) => {
            let scope = crate::policy::Scope::parse(&raw.replace(',', " "));
            if let Some(bad) = scope.first_not(|s| settings.scopes_supported.iter().any(|x| x == s))
            {
                return Err(invalid(format!(
                    "--scope: {bad:?} is not one of SCOPES_SUPPORTED ({})",
                    settings.scopes_supported.join(" ")
                )));
            }
            Some(scope.to_string()).filter(|s| !s.is_empty())
        }
    };
    let jwks = match &args.jwks {
        None => None,
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| invalid(format!("--jwks {}: {e}", path.display())))?;
            crate::auth::cimd::parse_key_set(&text)
                .map_err(|e| invalid(format!("--jwks {}: {e}", path.display())))?;
            Some(
                serde_json::from_slice::<serde_json::Value>(&text)
                    .map_err(|e| invalid(format!("--jwks {}: {e}", path.display())))?,
            )
        }
    };
    if let Some(uri) = &args.jwks_uri {
        let ok = url::Url::parse(uri).is_ok_and(|u| u.scheme() == "https" && u.has_host());
        if !ok {
            return Err(invalid(format!("--jwks-uri {uri:?} must be an https URL")));
        }
    }
    let client_id = match &args.client_id {
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(invalid(format!(
                    "--client-id {id:?}: letters, digits, '.', '_' and '-', at most 64"
                )));
            }
            id.clone()
        }
        None => crate::token::random_id(16),
    };
    let keyed = jwks.is_some() || args.jwks_uri.is_some();
    let secret = (!keyed).then(crate::token::random_token);
    let now = SystemClock.now_unix();
    let record = ClientRecord {
        client_id,
        client_secret_hash: secret
            .as_deref()
            .map(|s| crate::token::sha256_b64url(s.as_bytes())),
        // Nobody holds a registration access token: only the operator manages it.
        registration_token_hash: crate::token::sha256_b64url(
            crate::token::random_token().as_bytes(),
        ),
        token_endpoint_auth_method: if keyed {
            "private_key_jwt".into()
        } else {
            format!("client_secret_{}", args.secret_method)
        },
        grant_types,
        client_name: Some(name.to_string()),
        scope,
        client_id_issued_at: now,
        jwks,
        jwks_uri: args.jwks_uri.clone(),
        // No redirect URIs, response types or contacts; a secret that never expires.
        ..ClientRecord::default()
    };
    let store = cli.store(&settings).await?;
    let created = cli
        .event(crate::audit::Kind::ClientCreated)
        .client(&record.client_id)
        .detail("client_name", name)
        .detail("grant_types", record.grant_types.clone())
        .detail(
            "token_endpoint_auth_method",
            record.token_endpoint_auth_method.as_str(),
        )
        .scope(record.scope.as_deref().unwrap_or(""));
    record
        .create(store.as_ref(), created)
        .await
        .map_err(|e| CliError::Failed(format!("cannot create the client: {e}")))?;
    let mut shown = public_json(&record, 0);
    if let (Some(map), Some(secret)) = (shown.as_object_mut(), &secret) {
        map.insert("client_secret".into(), secret.as_str().into());
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).unwrap_or_default()
        );
        return Ok(());
    }
    println!("client_id:     {}", record.client_id);
    match &secret {
        Some(secret) => {
            println!("client_secret: {secret}");
            println!("(the secret is shown this once and stored only as a hash)");
        }
        None => println!("authenticates with private_key_jwt"),
    }
    println!("grant_types:   {}", record.grant_types.join(" "));
    if let Some(scope) = &record.scope {
        println!("scope:         {scope}");
    }
    Ok(())
}

async fn delete(cli: &Cli, client_id: &str, complete: bool) -> CliResult {
    let settings = cli.settings()?;
    let store = cli.store(&settings).await?;
    if !complete {
        let deleted = cli
            .event(crate::audit::Kind::ClientDeleted)
            .client(client_id)
            .detail("complete", false);
        let removed = ClientRecord::delete(store.as_ref(), client_id, deleted)
            .await
            .map_err(|e| CliError::Failed(format!("cannot delete: {e}")))?;
        if !removed {
            return Err(CliError::Failed(format!("no client {client_id}")));
        }
        println!(
            "deleted the registration of {client_id} (its tokens stay valid until they expire; --complete revokes them)"
        );
        return Ok(());
    }
    // The same store operation as DELETE /register/{id}, step by step so the operator sees
    // what was done if Redis stops answering half-way; running it again finishes the job.
    let (mut revoked, mut steps) = (0, 0);
    let mut admin = cli.admin(&settings).await?;
    let mut total = 0;
    for index in [
        crate::store::keys::client_families(client_id),
        crate::store::keys::client_tokens(client_id),
        crate::store::keys::client_consents(client_id),
        crate::store::keys::client_pending(client_id),
    ] {
        total += admin.zcard(&index).await?;
    }
    let progress = Progress::new(cli, Some(total), &format!("deleting {client_id}"));
    loop {
        let deleted = cli
            .event(crate::audit::Kind::ClientDeleted)
            .client(client_id)
            .detail("complete", true)
            .detail("revoked_before", revoked);
        let step = store
            .delete_client_step(
                client_id,
                settings.refresh_token_lifetime,
                crate::store::DELETE_STEP_BUDGET,
                &crate::audit::Events::none().on(crate::audit::outcome::DONE, deleted),
            )
            .await
            .map_err(|e| {
                CliError::Failed(format!(
                    "cannot finish deleting {client_id}: {e}; {revoked} access tokens were revoked in {steps} completed steps and the registration is still there: run the command again to finish"
                ))
            })?;
        revoked += step.revoked;
        steps += 1;
        progress.set_position(total.saturating_sub(step.remaining as u64));
        if step.remaining == 0 {
            break;
        }
    }
    progress.finish();
    println!(
        "deleted client {client_id} with everything issued to it ({revoked} loose access tokens revoked; its refresh grants, consents, codes and pending logins removed)"
    );
    Ok(())
}
