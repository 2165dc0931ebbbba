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
    /// Delete a registration; with --complete also its access and refresh tokens, codes and
    /// consents (every verify replica is told).
    Delete {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        complete: bool,
    },
}

pub async fn run(cli: &Cli, cmd: &ClientsCommand) -> CliResult {
    match cmd {
        ClientsCommand::List => list(cli).await,
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
