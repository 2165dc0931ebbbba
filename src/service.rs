//! What both service binaries do around their server: settings validated before any port is
//! bound (a bad value exits 64 with one line), `--check-config`, logging, the Redis store, and
//! serving until SIGTERM/SIGINT (in-flight requests drain).

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{ConfigSource, EXIT_CONFIG, Settings};
use crate::store::{RedisStore, Store};

/// The command line both services share.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// TOML configuration file; environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

pub fn config_error(name: &str, message: impl Display) -> ExitCode {
    eprintln!("{name}: configuration error: {message}");
    ExitCode::from(EXIT_CONFIG as u8)
}

/// A service ready to build its server: settings, what `prepare` made of them, the store.
pub type Started<T> = (Settings, T, Arc<dyn Store>);

/// Loads and validates the settings, with the service's own checks in `prepare`. `Ok(None)`
/// after `--check-config` succeeded; `Err` with the exit code after printing why.
pub fn start<T>(
    name: &str,
    args: &ServiceArgs,
    prepare: impl FnOnce(&Settings) -> Result<T, String>,
) -> Result<Option<Started<T>>, ExitCode> {
    let settings = Settings::load(&ConfigSource::from_process(args.config.clone()))
        .map_err(|e| config_error(name, e))?;
    let prepared = prepare(&settings).map_err(|e| config_error(name, e))?;
    let store = RedisStore::connect(settings.redis_url.expose())
        .map_err(|e| config_error(name, format!("REDIS_URL: {e}")))?;
    if args.check_config {
        println!("configuration ok");
        return Ok(None);
    }
    crate::telemetry::init(&settings);
    Ok(Some((settings, prepared, Arc::new(store))))
}

/// Runs a bound server to the end and turns the outcome into the exit status.
pub async fn serve(
    name: &str,
    server: std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)>,
) -> ExitCode {
    let (addr, run) = match server {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("{name}: cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%addr, "{name} listening");
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            ExitCode::from(1)
        }
    }
}
