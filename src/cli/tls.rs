//! `mcp-gateway tls generate`: a private CA and verify's certificate for the ForwardAuth hop
//! over TLS (HTTP/2 by ALPN), for operators without their own PKI.

use std::path::PathBuf;

use super::{Cli, CliError, CliResult};

#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// Write a private CA (ca.crt, ca.key; kept when already in DIR) and a certificate for
    /// verify signed by it (verify.crt, verify.key), ECDSA P-256, valid a year. Rerun to renew:
    /// the CA stays, so the proxy's trust does not change, and a running verify picks the new
    /// certificate up by itself.
    Generate {
        /// Folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// DNS names and IP addresses the proxy reaches verify by, comma-separated.
        #[arg(long, value_name = "NAMES", value_delimiter = ',', required = true)]
        names: Vec<String>,
    },
}

pub fn run(cli: &Cli, cmd: &TlsCommand) -> CliResult {
    match cmd {
        TlsCommand::Generate { out, names } => {
            let names: Vec<String> = names
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            let made = crate::tls::generate(out, &names).map_err(CliError::Failed)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ca_cert": made.ca_cert,
                        "new_ca": made.new_ca,
                        "cert": made.cert.cert,
                        "key": made.cert.key,
                        "names": names,
                        "valid_days": crate::tls::CERT_LIFETIME_DAYS,
                    })
                );
            } else {
                println!(
                    "{} CA {}",
                    if made.new_ca { "new" } else { "kept" },
                    made.ca_cert.display()
                );
                println!(
                    "certificate {} and key {} for {} (valid {} days)",
                    made.cert.cert.display(),
                    made.cert.key.display(),
                    names.join(", "),
                    crate::tls::CERT_LIFETIME_DAYS
                );
                println!(
                    "verify: VERIFY_TLS_CERT={} VERIFY_TLS_KEY={}; the proxy trusts {}",
                    made.cert.cert.display(),
                    made.cert.key.display(),
                    made.ca_cert.display()
                );
            }
            Ok(())
        }
    }
}
