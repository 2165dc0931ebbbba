//! `mcp-gateway mfa …`: a user's second factor.

use clap::Subcommand;
use redis::AsyncCommands;

use super::admin::redis_failed;
use super::{Cli, CliError, CliResult};
use crate::auth::mfa::{MfaRecord, lock_key};
use crate::store::keys;

#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// Whether USER has a second factor, how many recovery codes are left, any lockout.
    Status { user: String },
    /// Remove USER's second factor, recovery codes and lockout: they enrol again at next login.
    Reset { user: String },
}

pub async fn run(cli: &Cli, cmd: &MfaCommand) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    match cmd {
        MfaCommand::Status { user } => {
            let raw: Option<String> = admin
                .conn
                .get(keys::mfa(user))
                .await
                .map_err(redis_failed)?;
            let record: Option<MfaRecord> = raw.and_then(|j| serde_json::from_str(&j).ok());
            let recovery = admin
                .scan(&format!(
                    "oauth:mfa_recovery:{}:*",
                    user.to_ascii_lowercase()
                ))
                .await?
                .len();
            let lock_ms = admin.pttl(&lock_key("user", user)).await?;
            let status = serde_json::json!({
                "user": user,
                "enrolled": record.is_some(),
                "provider": record.as_ref().map(|r| r.provider.clone()),
                "enrolled_at": record.as_ref().map(|r| r.enrolled_at),
                "recovery_codes_left": recovery,
                "locked_for_seconds": if lock_ms > 0 { lock_ms / 1000 } else { 0 },
            });
            if cli.json {
                println!("{status}");
            } else {
                match &record {
                    Some(r) => println!(
                        "{user}: {} enrolled (at {}), {recovery} recovery codes left",
                        r.provider, r.enrolled_at
                    ),
                    None => println!(
                        "{user}: no second factor (enrols at next login when TOKEN_MFA_REQUIRED=true)"
                    ),
                }
                if lock_ms > 0 {
                    println!(
                        "locked out for {} more seconds after repeated wrong codes",
                        lock_ms / 1000
                    );
                }
            }
            Ok(())
        }
        MfaCommand::Reset { user } => {
            let lower = user.to_ascii_lowercase();
            let mut doomed = vec![
                keys::mfa(user),
                lock_key("user", user),
                format!("oauth:mfa_fail:user:{lower}"),
            ];
            doomed.extend(admin.scan(&format!("oauth:mfa_recovery:{lower}:*")).await?);
            doomed.extend(admin.scan(&format!("oauth:mfa_used:{lower}:*")).await?);
            let removed: u64 = admin.conn.del(&doomed).await.map_err(redis_failed)?;
            if removed == 0 {
                return Err(CliError::Failed(format!(
                    "{user} has no second factor to reset"
                )));
            }
            println!("reset the second factor of {user}; they enrol again at their next login");
            Ok(())
        }
    }
}
