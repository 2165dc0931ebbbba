//! Client ID Metadata Documents (`CIMD_*`): whether an https URL may be a `client_id`, which
//! hosts may serve the documents, and how long fetched documents are kept.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::raw::{Raw, split_list};
use crate::policy::HostPattern;

#[derive(Debug, Clone)]
pub struct CimdSettings {
    /// `CIMD_ENABLED` (default true): https URL client ids are fetched and accepted.
    pub enabled: bool,
    /// `CIMD_ALLOWED_HOSTS` (default `*`: any public host).
    pub allowed_hosts: Vec<HostPattern>,
    /// `CIMD_DENIED_HOSTS` (default none); wins over the allow-list.
    pub denied_hosts: Vec<HostPattern>,
    /// `CIMD_MIN_AGE` (default 5 min): a document is kept at least this long, whatever its
    /// `Cache-Control` says, so one host cannot make us fetch on every request.
    pub min_age: Duration,
    /// `CIMD_MAX_AGE` (default 24 h): and at most this long before it is fetched again.
    pub max_age: Duration,
    /// `CIMD_STALE_IF_ERROR` (default 1 h): past its age, a cached document still serves while
    /// refetches fail (network errors, timeouts, 5xx), for at most this long.
    pub stale_if_error: Duration,
    /// `CIMD_FETCH_TIMEOUT` (default 5 s): the whole fetch, connection included.
    pub fetch_timeout: Duration,
    /// `CIMD_TEST_LOOPBACK_CA` — for tests and `mcp-gateway dev` only: documents may then be
    /// fetched from loopback addresses, trusting the CA certificates in this PEM file. Refused
    /// unless `ISSUER_URL` is itself a loopback URL (no deployed gateway has one).
    pub test_loopback_ca: Option<PathBuf>,
}

pub(super) fn cimd(raw: &Raw, issuer: &str) -> Result<CimdSettings, ConfigError> {
    let hosts = |name: &'static str, default: &str| -> Result<Vec<HostPattern>, ConfigError> {
        split_list(raw.get(name).unwrap_or(default))
            .map(|h| HostPattern::parse(h).map_err(|e| ConfigError::new(name, e)))
            .collect()
    };
    let test_loopback_ca = raw.get("CIMD_TEST_LOOPBACK_CA").map(PathBuf::from);
    if let Some(path) = &test_loopback_ca {
        let loopback_issuer = url::Url::parse(issuer)
            .ok()
            .is_some_and(|u| crate::records::is_loopback(&u));
        if !loopback_issuer {
            return Err(ConfigError::new(
                "CIMD_TEST_LOOPBACK_CA",
                "is for tests and `mcp-gateway dev` only: it needs a loopback ISSUER_URL",
            ));
        }
        if let Err(e) = std::fs::read(path) {
            return Err(ConfigError::new(
                "CIMD_TEST_LOOPBACK_CA",
                format!("{}: {e}", path.display()),
            ));
        }
    }
    let min_age = raw.duration("CIMD_MIN_AGE", 300)?;
    let max_age = raw.duration("CIMD_MAX_AGE", 86_400)?;
    if max_age < min_age {
        return Err(ConfigError::new(
            "CIMD_MAX_AGE",
            "must be at least CIMD_MIN_AGE",
        ));
    }
    let fetch_timeout = raw.duration("CIMD_FETCH_TIMEOUT", 5)?;
    if fetch_timeout.is_zero() || fetch_timeout > Duration::from_secs(30) {
        return Err(ConfigError::new(
            "CIMD_FETCH_TIMEOUT",
            "must be between 1 and 30 seconds",
        ));
    }
    Ok(CimdSettings {
        enabled: raw.bool("CIMD_ENABLED", true)?,
        allowed_hosts: hosts("CIMD_ALLOWED_HOSTS", "*")?,
        denied_hosts: hosts("CIMD_DENIED_HOSTS", "")?,
        min_age,
        max_age,
        stale_if_error: raw.duration("CIMD_STALE_IF_ERROR", 3_600)?,
        fetch_timeout,
        test_loopback_ca,
    })
}

impl CimdSettings {
    /// Whether documents from `host` (lower-case, no port) are accepted.
    pub fn host_allowed(&self, host: &str) -> bool {
        !self.denied_hosts.iter().any(|p| p.matches(host))
            && self.allowed_hosts.iter().any(|p| p.matches(host))
    }
}
