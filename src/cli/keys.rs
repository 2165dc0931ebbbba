//! `mcp-gateway keys …`: signing keys.

use base64::Engine;
use clap::Subcommand;

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
}

pub fn run(cli: &Cli, cmd: &KeysCommand) -> CliResult {
    match cmd {
        KeysCommand::Generate { alg } => generate(cli, alg),
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

fn generate(cli: &Cli, alg: &str) -> CliResult {
    let alg = SigningAlgorithm::parse(alg).map_err(|e| CliError::Failed(format!("--alg: {e}")))?;
    let (lines, kid) = generate_env_lines(alg)?;
    match &cli.env_file {
        Some(path) => {
            let updates: Vec<(&str, &str)> = lines.iter().map(|(k, v)| (*k, v.as_str())).collect();
            envfile::update(path, &updates)
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
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
