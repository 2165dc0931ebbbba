//! `mcp-gateway mfa …`: a user's second factor.

use clap::Subcommand;

use super::{Cli, CliError, CliResult};
use crate::records::MfaRecord;
use crate::store::{Ttl, keys};

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
    let store = cli.store(&settings).await?;
    let failed = |e: crate::store::StoreError| CliError::Failed(format!("Redis: {e}"));
    match cmd {
        MfaCommand::Status { user } => {
            let record = MfaRecord::load(store.as_ref(), user)
                .await
                .map_err(failed)?;
            let recovery = admin
                .scan(&format!("{}*", keys::mfa_recovery_prefix(user)))
                .await?
                .len();
            let lock_ms = match store
                .ttl(&keys::mfa_lock("user", user))
                .await
                .map_err(failed)?
            {
                Ttl::Expires(left) => left.as_millis() as i64,
                _ => 0,
            };
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
            let reset = cli.event(crate::audit::Kind::MfaReset).user(user);
            let had_factor = crate::records::MfaRecord::remove(store.as_ref(), user, reset)
                .await
                .map_err(failed)?;
            let mut doomed = vec![keys::mfa_lock("user", user), keys::mfa_fail("user", user)];
            doomed.extend(
                admin
                    .scan(&format!("{}*", keys::mfa_recovery_prefix(user)))
                    .await?,
            );
            doomed.extend(
                admin
                    .scan(&format!("{}*", keys::mfa_used_prefix(user)))
                    .await?,
            );
            let mut removed = usize::from(had_factor);
            for key in &doomed {
                if store.delete(key).await.map_err(failed)? {
                    removed += 1;
                }
            }
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
