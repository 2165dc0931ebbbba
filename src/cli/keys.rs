//! `mcp-gateway keys …`: signing keys. Rotation keeps the previous key for verification so
//! nobody is logged out; restart the services to apply.

use base64::Engine;
use clap::Subcommand;

use super::admin::print_table;
use super::{Cli, CliError, CliResult, envfile};
use crate::token::keys::{KeyMaterial, SigningAlgorithm};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a signing key. Prints the .env lines, or with --env-file writes them there
    /// (mode 600) and prints only which variables changed.
    Generate {
        /// RS256 (default), ES256, EdDSA or HS256.
        #[arg(long, default_value = "RS256")]
        alg: String,
    },
    /// New signing key in the env file; the current one moves to JWT_VERIFICATION_KEYS_B64
    /// (GATEWAY_JWT_PREVIOUS_SECRETS for HS256) so its tokens stay valid until they expire.
    Rotate {
        /// Algorithm of the new key (default: the current one).
        #[arg(long)]
        alg: Option<String>,
    },
    /// The keys the services would load: kid, algorithm, role.
    List,
}

pub async fn run(cli: &Cli, cmd: &KeysCommand) -> CliResult {
    match cmd {
        KeysCommand::Generate { alg } => generate(cli, alg),
        KeysCommand::Rotate { alg } => {
            let (old_kid, new_kid) = rotate(cli, alg.as_deref())?;
            // Recorded where the store can be reached; the rotation stands either way.
            if let Ok(settings) = cli.settings() {
                let rotated = cli
                    .event(crate::audit::Kind::KeyRotated)
                    .detail("new_kid", new_kid)
                    .detail("previous_kid", old_kid.unwrap_or_default());
                cli.record(&settings, rotated).await;
            }
            Ok(())
        }
        KeysCommand::List => list(cli),
    }
}

/// The `.env` assignments for a fresh key of `alg`, and its kid.
pub fn generate_env_lines(
    alg: SigningAlgorithm,
) -> CliResult<(Vec<(&'static str, String)>, String)> {
    let (key, secret) = KeyMaterial::generate(alg).map_err(CliError::Failed)?;
    let secret_line = if alg == SigningAlgorithm::Hs256 {
        ("GATEWAY_JWT_SECRET", secret)
    } else {
        (
            "JWT_PRIVATE_KEY_B64",
            base64::engine::general_purpose::STANDARD.encode(secret.as_bytes()),
        )
    };
    Ok((
        vec![("JWT_ALGORITHM", alg.as_str().to_string()), secret_line],
        key.kid().to_string(),
    ))
}

fn write_env(path: &std::path::Path, lines: &[(&str, String)]) -> CliResult {
    let updates: Vec<(&str, &str)> = lines.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envfile::update(path, &updates)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

fn generate(cli: &Cli, alg: &str) -> CliResult {
    let alg = SigningAlgorithm::parse(alg).map_err(|e| CliError::Failed(format!("--alg: {e}")))?;
    let (lines, kid) = generate_env_lines(alg)?;
    match &cli.env_file {
        Some(path) => {
            write_env(path, &lines)?;
            let names: Vec<&str> = lines.iter().map(|(k, _)| *k).collect();
            println!(
                "updated {}: {} (kid {kid})",
                path.display(),
                names.join(", ")
            );
        }
        None => {
            for (key, value) in &lines {
                println!("{key}={value}");
            }
        }
    }
    Ok(())
}

/// Rotates the env file's signing key; returns the previous kid and the new one.
fn rotate(cli: &Cli, alg: Option<&str>) -> CliResult<(Option<String>, String)> {
    let path = cli.env_file_to_write();
    let pairs = envfile::read(&path).map_err(|e| {
        CliError::Failed(format!(
            "cannot read {}: {e} (run `keys generate --env-file` first)",
            path.display()
        ))
    })?;
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let current_alg = SigningAlgorithm::parse(get("JWT_ALGORITHM").as_deref().unwrap_or("RS256"))
        .map_err(|e| CliError::Failed(format!("JWT_ALGORITHM: {e}")))?;
    let new_alg = match alg {
        Some(a) => {
            SigningAlgorithm::parse(a).map_err(|e| CliError::Failed(format!("--alg: {e}")))?
        }
        None => current_alg,
    };
    let before = cli.settings()?;
    let old_kid = before.keys.signing_key().map(|k| k.kid().to_string());
    let (mut lines, new_kid) = generate_env_lines(new_alg)?;
    let append = |list: Option<String>, item: String| match list {
        Some(list) => format!("{list},{item}"),
        None => item,
    };
    if current_alg == SigningAlgorithm::Hs256 {
        let secret = get("GATEWAY_JWT_SECRET")
            .ok_or_else(|| CliError::Failed("GATEWAY_JWT_SECRET is not in the env file".into()))?;
        lines.push((
            "GATEWAY_JWT_PREVIOUS_SECRETS",
            append(get("GATEWAY_JWT_PREVIOUS_SECRETS"), secret),
        ));
    } else {
        let key = get("JWT_PRIVATE_KEY_B64")
            .ok_or_else(|| CliError::Failed("JWT_PRIVATE_KEY_B64 is not in the env file".into()))?;
        lines.push((
            "JWT_VERIFICATION_KEYS_B64",
            append(get("JWT_VERIFICATION_KEYS_B64"), key),
        ));
    }
    write_env(&path, &lines)?;
    let days = before.access_token_lifetime.as_secs() / 86_400;
    println!(
        "rotated {}: new signing key {new_kid} ({new_alg}); previous key {} kept for verification.",
        path.display(),
        old_kid.as_deref().unwrap_or("?")
    );
    println!(
        "Restart auth and verify to apply. Drop the previous key after ACCESS_TOKEN_LIFETIME ({days} d), when its last token has expired."
    );
    Ok((old_kid, new_kid))
}

fn list(cli: &Cli) -> CliResult {
    let settings = cli.settings()?;
    let signing = settings.keys.signing_key().map(|k| k.kid().to_string());
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for key in settings.keys.iter() {
        let role = if Some(key.kid()) == signing.as_deref() {
            "signing"
        } else {
            "verification"
        };
        rows.push(vec![
            key.kid().to_string(),
            key.alg().to_string(),
            role.to_string(),
        ]);
        items.push(serde_json::json!({"kid": key.kid(), "alg": key.alg().as_str(), "role": role}));
    }
    print_table(
        cli.json,
        &serde_json::Value::Array(items),
        &["KID", "ALG", "ROLE"],
        &rows,
    );
    Ok(())
}
