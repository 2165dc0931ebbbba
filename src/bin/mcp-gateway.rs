//! `mcp-gateway`: the operator CLI. Wiring only; the commands live in `cli`.

use std::process::ExitCode;

use clap::Parser;
use mcp_oauth_gateway::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
