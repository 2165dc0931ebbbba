//! Client ID Metadata Documents (`CIMD_*`): whether an https URL may be a `client_id`, which
//! hosts may serve the documents, and how long fetched documents are kept.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::raw::Raw;
use crate::policy::HostPattern;
use crate::policy::split_list;

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
            .map(|h| {
                let (wildcard, name_part) = match h.strip_prefix("*.") {
                    Some(rest) => ("*.", rest),
                    None => ("", h),
                };
                let canonical = if name_part == "*" {
                    "*".to_string()
                } else {
                    canonical_host(name_part)
                        .ok_or_else(|| format!("{h:?} is not a host name"))
                        .map_err(|e| ConfigError::new(name, e))?
                };
                HostPattern::parse(&format!("{wildcard}{canonical}"))
                    .map_err(|e| ConfigError::new(name, e))
            })
            .collect()
    };
    let test_loopback_ca = raw.get("CIMD_TEST_LOOPBACK_CA").map(PathBuf::from);
    if let Some(path) = &test_loopback_ca {
        let loopback_issuer = url::Url::parse(issuer)
            .ok()
            .is_some_and(|u| crate::policy::is_loopback(&u));
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
    /// Whether documents from `host` (no port) are accepted. Both sides are compared in
    /// their canonical form ([`canonical_host`]): upper case, a trailing dot, the Unicode or
    /// punycode spelling of a name or percent-escapes cannot step around a list.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(host) = canonical_host(host) else {
            return false;
        };
        !self.denied_hosts.iter().any(|p| p.matches(&host))
            && self.allowed_hosts.iter().any(|p| p.matches(&host))
    }
}

/// A host name as DNS resolves it: IDNA (UTS #46) to its ASCII form, lower case, percent-
/// escapes decoded, without the trailing dot of a fully qualified name; IP addresses in their
/// usual text. `None` for what is not a host.
pub fn canonical_host(host: &str) -> Option<String> {
    let trimmed = host.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return None;
    }
    match url::Host::parse(trimmed).ok()? {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            (!d.is_empty()).then_some(d)
        }
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(format!("[{ip}]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_compare_in_one_spelling() {
        for spelling in [
            "evil.example",
            "EVIL.example",
            "evil.example.",
            "evil.example..",
            "%65vil.example",
            "ev%49l.example",
        ] {
            assert_eq!(
                canonical_host(spelling).as_deref(),
                Some("evil.example"),
                "{spelling}"
            );
        }
        assert_eq!(
            canonical_host("Bücher.example.").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(
            canonical_host("xn--bcher-kva.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(canonical_host("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(canonical_host("0x7f.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(canonical_host("."), None);
        let source = crate::config::ConfigSource::from_pairs([
            ("JWT_ALGORITHM", "HS256"),
            (
                "GATEWAY_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-test",
            ),
            ("CIMD_DENIED_HOSTS", "Evil.Example., *.bücher.example"),
        ]);
        let settings = crate::config::Settings::load(&source).unwrap().cimd;
        for host in [
            "evil.example",
            "EVIL.EXAMPLE.",
            "a.xn--bcher-kva.example",
            "a.BÜCHER.example.",
        ] {
            assert!(!settings.host_allowed(host), "{host}");
        }
        assert!(settings.host_allowed("good.example"));
    }
}
