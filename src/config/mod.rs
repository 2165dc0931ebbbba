//! Configuration: one optional TOML file overlaid by environment variables (DESIGN §6), parsed
//! into validated types before any port is bound.
//!
//! Every setting has one public name, the environment variable (`ACCESS_TOKEN_LIFETIME`); in the
//! TOML file the same name is written in lower case (`access_token_lifetime = 3600`). A bad value
//! is a [`ConfigError`] naming the variable; the binaries print it on one line and exit 64.
//! The environment is read through [`ConfigSource`], so tests hand in a map instead of calling
//! `set_var`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ipnet::IpNet;

mod cimd;
mod raw;
mod redis;
mod upstream;

use raw::Raw;
pub use raw::{KNOWN_SETTINGS, parse_duration};

use crate::policy::{Admission, HostPattern, ScopePolicy, is_scope_token, split_list};
pub use cimd::{CimdSettings, canonical_host};
pub use redis::{RedisSentinel, RedisTls};
pub use upstream::{EmailTrust, OidcClientAuth, OidcSettings, Provider, UpstreamTokenSettings};

use crate::token::keys::{KeyMaterial, KeySet, SigningAlgorithm};

/// Exit status for a configuration error (`EX_USAGE` of sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// A bad configuration value: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            reason: reason.into(),
        }
    }
}

/// A value that must never reach a log line or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where settings come from: an optional TOML file and an environment map.
#[derive(Clone, Default)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSource")
            .field("file", &self.file)
            .field("env", &format_args!("{} variables", self.env.len()))
            .finish()
    }
}

impl ConfigSource {
    /// The process environment, plus the file given with `--config`.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: std::env::vars().collect(),
        }
    }

    /// Only the given variables (tests, embedded use).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            file: None,
            env: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Sets one variable, replacing an earlier value.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

/// What verify does when the store cannot be asked (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// 503 for anything not decidable without the store; the liveness cache is dropped as soon
    /// as the revocation feed is lost.
    Closed,
    /// Keep serving positives still in the liveness cache while the store is away.
    Cached,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Which bindings the authorization server writes into new tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindingPolicy {
    pub ip: bool,
    pub user_agent: bool,
    pub client_cert: bool,
}

/// The second factor's knobs (TOTP).
#[derive(Debug, Clone)]
pub struct MfaSettings {
    /// `MFA_ENCRYPTION_KEY`: 32 bytes, base64. Unset: derived from the signing key.
    pub encryption_key: Option<Secret<[u8; 32]>>,
    /// Failures within `failure_window` that lock a user and an address out.
    pub max_failures: u32,
    pub failure_window: Duration,
    pub lockout: Duration,
}

/// Requests per client IP per minute on the public endpoints; 0 = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Requests per client address per minute, all clients together.
    pub register: u32,
    pub authorize: u32,
    pub token: u32,
    /// `RATE_LIMIT_CLIENT_FAILURES`: failed `/authorize` and `/token` requests per client
    /// address and client per minute, before that pair is refused for the rest of the minute.
    pub client_failures: u32,
    /// `UNUSED_CLIENT_BUDGET`: registrations never used for a token that are kept, in all;
    /// beyond it the oldest of them are deleted.
    pub unused_client_budget: u64,
    /// `UNUSED_CLIENT_BUDGET_PER_ADDRESS`: the same, of those made from one client address
    /// (its own oldest go first, so a flood from one address evicts only its own).
    pub unused_client_budget_per_address: u64,
    /// `UNUSED_CLIENT_LIFETIME`: how long a registration lives before its first token.
    pub unused_client_lifetime: Duration,
    /// `RATE_LIMIT_IPV4_PREFIX` / `RATE_LIMIT_IPV6_PREFIX` (default 32 and 64): every
    /// per-address count (these limits, the unused-client budget, MFA lockouts) counts the
    /// network of this prefix length, so one host with a /64 cannot spread itself over
    /// 2^64 addresses.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl RateLimitSettings {
    /// The network `ip` is counted as: its prefix of the configured length (an IPv4-mapped
    /// IPv6 address counts as the IPv4 address).
    pub fn network(&self, ip: IpAddr) -> IpAddr {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = match ip {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        };
        IpNet::new(ip, prefix).map_or(ip, |net| net.network())
    }
}

#[derive(Debug, Clone)]
pub struct GithubSettings {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret<String>>,
    pub authorize_url: String,
    pub token_url: String,
    pub api_url: String,
    /// `GITHUB_SCOPES` (default `read:user user:email`).
    pub scopes: String,
}

/// Where the upstream sealing key comes from.
enum UpstreamKey {
    Given([u8; 32]),
    Derived(crate::seal::Derived),
}

/// Validated settings shared by every binary.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `ISSUER_URL` without a trailing slash (default `https://auth.${BASE_DOMAIN}`).
    pub issuer: String,
    pub base_domain: String,
    pub keys: Arc<KeySet>,
    pub redis_url: Secret<String>,
    /// TLS material for `rediss://` (`REDIS_CA_FILE`, `REDIS_CLIENT_CERT_FILE`/`_KEY_FILE`).
    pub redis_tls: RedisTls,
    /// Sentinel-managed Redis (`REDIS_SENTINELS`), if configured.
    pub redis_sentinel: Option<RedisSentinel>,
    pub github: GithubSettings,
    /// `UPSTREAM`: who users sign in with, in the chooser's order.
    pub upstreams: Vec<Provider>,
    /// `OIDC_*`, when `oidc` is an upstream.
    pub oidc: Option<OidcSettings>,
    /// The `ALLOWED_*` lists. None set: verify leaves the decision to the authorization
    /// server, which treats "not set" as "nobody".
    pub admission: Admission,
    /// `FORWARD_UPSTREAM_TOKEN` and its header and key.
    pub upstream_token: UpstreamTokenSettings,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    /// `None` = registrations never expire (`CLIENT_LIFETIME=0`).
    pub client_lifetime: Option<Duration>,
    pub custom_claims: serde_json::Map<String, serde_json::Value>,
    pub bind: BindingPolicy,
    pub mfa_required: bool,
    pub mfa_provider: String,
    pub trusted_proxies: Vec<IpNet>,
    pub debug: bool,
    pub log_format: LogFormat,
    /// `None` = the binary's own default port.
    pub listen_addr: Option<SocketAddr>,
    pub resource_hosts: Vec<HostPattern>,
    pub resource_path: String,
    pub resource_name: String,
    pub accept_issuer_audience: bool,
    pub required_scopes: ScopePolicy,
    pub scopes_supported: Vec<String>,
    /// `DEFAULT_SCOPE`: what a request without `scope` gets (default: the first of
    /// `SCOPES_SUPPORTED`), never everything.
    pub default_scope: String,
    /// `SCOPE_GRANTS` and `[[scope_grant]]`: which users may hold which scope.
    pub entitlements: crate::policy::Entitlements,
    pub forward_access_token: bool,
    pub verify_cache_ttl: Duration,
    /// `REFRESH_REUSE_GRACE`: how long a refresh's answer is kept for a retry of the same
    /// request (a refresh token just rotated out).
    pub refresh_reuse_grace: Duration,
    /// `CODE_RETRY_GRACE`: how long a code exchange's answer is kept for a retry of the
    /// identical request (RFC 6749 §4.1.2 says a code works once; this is the one deliberate
    /// deviation, so a client that lost the answer is not sent back to the login).
    pub code_retry_grace: Duration,
    /// `SCOPE_HIERARCHY`: broader scopes that imply narrower ones, for every scope check.
    pub scope_hierarchy: crate::policy::ScopeHierarchy,
    /// `TOOL_POLICY` (and `[[tool_policy]]`): per-method and per-tool rules at verify.
    pub tool_policy: crate::policy::ToolPolicy,
    /// `TOOL_POLICY_HEADER`: send `X-Auth-Denied-Tools` to the MCP server.
    pub tool_policy_header: bool,
    /// `TOOL_POLICY_TRUST_HEADERS`: the MCP server refuses a request whose `Mcp-Method` and
    /// `Mcp-Name` disagree with its body (the 2026-07-28 rule), so a request that reaches
    /// verify without its body (Caddy, nginx) may be decided from those headers. Off: such a
    /// request is refused wherever a rule could apply.
    pub tool_policy_trust_headers: bool,
    /// `SHUTDOWN_DRAIN`: after SIGTERM, how long requests are still answered (with
    /// `Connection: close`, `/ready` 503) before the server stops.
    pub shutdown_drain: Duration,
    /// 0 disables both verify caches (every request verifies and asks the store).
    pub verify_cache_capacity: u64,
    pub failure_mode: FailureMode,
    pub rate_limits: RateLimitSettings,
    pub mfa: MfaSettings,
    pub cimd: CimdSettings,
}

const DEFAULT_GITHUB_AUTHORIZE_URL: &str = "https://github.com/login/oauth/authorize";
const DEFAULT_GITHUB_TOKEN_URL: &str = "https://github.com/login/oauth/access_token";
const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

impl Settings {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        let raw = Raw::gather(source)?;
        Self::from_raw(&raw)
    }

    /// The box that seals upstream sessions and tokens at rest: `UPSTREAM_TOKEN_KEY`, else a
    /// key derived from the signing key; `None` when neither is there (a verify without the
    /// signing key needs `UPSTREAM_TOKEN_KEY` to forward upstream tokens).
    pub fn upstream_sealer(&self) -> Option<crate::seal::SecretBox> {
        self.upstream_key().map(|k| match k {
            UpstreamKey::Given(key) => crate::seal::SecretBox::new(key),
            UpstreamKey::Derived(derived) => derived.sealer(),
        })
    }

    /// The secret the upstream logins' own derivations start from (PKCE verifiers, nonces).
    pub fn upstream_login_key(&self) -> Option<[u8; 32]> {
        self.upstream_key().map(|k| match k {
            UpstreamKey::Given(key) => crate::seal::derive_key("mcp-gateway oidc logins", &key),
            UpstreamKey::Derived(derived) => derived.child("mcp-gateway oidc logins").key(),
        })
    }

    fn upstream_key(&self) -> Option<UpstreamKey> {
        if let Some(key) = &self.upstream_token.key {
            return Some(UpstreamKey::Given(*key.expose()));
        }
        let key = self.keys.signing_key()?.encoding()?.as_bytes();
        Some(UpstreamKey::Derived(crate::seal::Derived::root(
            "mcp-gateway upstream tokens",
            key,
        )))
    }

    /// The listen address, or the binary's default.
    pub fn listen_addr_or(&self, default: SocketAddr) -> SocketAddr {
        self.listen_addr.unwrap_or(default)
    }

    fn from_raw(raw: &Raw) -> Result<Self, ConfigError> {
        let base_domain = match raw.get("BASE_DOMAIN") {
            Some(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                HostPattern::parse(&d).map_err(|e| ConfigError::new("BASE_DOMAIN", e))?;
                d
            }
            None => "localhost".to_string(),
        };
        let issuer = match raw.get("ISSUER_URL") {
            Some(u) => parse_http_url("ISSUER_URL", u)?,
            None => format!("https://auth.{base_domain}"),
        };
        let algorithm = match raw.get("JWT_ALGORITHM") {
            Some(a) => {
                SigningAlgorithm::parse(a).map_err(|e| ConfigError::new("JWT_ALGORITHM", e))?
            }
            None => SigningAlgorithm::Rs256,
        };
        let keys = Arc::new(load_keys(raw, algorithm)?);

        let redis_url = redis_url(raw)?;

        let github = github(raw)?;

        let upstream::Upstreams {
            providers: upstreams,
            oidc,
            admission,
            upstream_token,
        } = upstream::upstreams(raw)?;

        let access_token_lifetime = raw.duration("ACCESS_TOKEN_LIFETIME", 30 * 86_400)?;
        if access_token_lifetime.is_zero() {
            return Err(ConfigError::new(
                "ACCESS_TOKEN_LIFETIME",
                "must be at least 1 second",
            ));
        }
        let refresh_token_lifetime = raw.duration("REFRESH_TOKEN_LIFETIME", 365 * 86_400)?;
        if refresh_token_lifetime.is_zero() {
            return Err(ConfigError::new(
                "REFRESH_TOKEN_LIFETIME",
                "must be at least 1 second",
            ));
        }
        let client_lifetime =
            Some(raw.duration("CLIENT_LIFETIME", 90 * 86_400)?).filter(|d| !d.is_zero());

        let custom_claims = custom_claims(raw)?;
        let cimd = cimd::cimd(raw, &issuer)?;

        let mfa_provider = raw
            .get("TOKEN_MFA_PROVIDER")
            .unwrap_or("totp")
            .to_ascii_lowercase();
        if mfa_provider != "totp" {
            return Err(ConfigError::new(
                "TOKEN_MFA_PROVIDER",
                format!("{mfa_provider:?} is not supported (only \"totp\")"),
            ));
        }

        let trusted_proxies = match raw.get("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => split_list(list)
                .map(|p| parse_net(p).map_err(|e| ConfigError::new("TRUSTED_PROXIES", e)))
                .collect::<Result<_, _>>()?,
        };

        let log_format = match raw
            .get("LOG_FORMAT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("json") => LogFormat::Json,
            Some("text") | Some("pretty") => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("{other:?} is not one of json, text"),
                ));
            }
        };

        let listen_addr = raw
            .get("LISTEN_ADDR")
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    ConfigError::new(
                        "LISTEN_ADDR",
                        format!("{a:?} is not an address like 0.0.0.0:8081"),
                    )
                })
            })
            .transpose()?;

        let resource_hosts = split_list(
            &raw.get("RESOURCE_HOSTS")
                .map(str::to_string)
                .unwrap_or_else(|| format!("*.{base_domain}")),
        )
        .map(|p| HostPattern::parse(p).map_err(|e| ConfigError::new("RESOURCE_HOSTS", e)))
        .collect::<Result<Vec<_>, _>>()?;
        if resource_hosts.is_empty() {
            return Err(ConfigError::new("RESOURCE_HOSTS", "names no host"));
        }

        let resource_path = raw.get("RESOURCE_PATH").unwrap_or("/mcp").to_string();
        if !resource_path.starts_with('/')
            || resource_path.contains(['?', '#', ' '])
            || (resource_path.len() > 1 && resource_path.ends_with('/'))
        {
            return Err(ConfigError::new(
                "RESOURCE_PATH",
                "must be a path like /mcp (leading slash, no query, no trailing slash)",
            ));
        }

        let default_upstream = upstreams.first().map_or("github", |p| p.name());
        let Scopes {
            required: required_scopes,
            hierarchy: scope_hierarchy,
            tools: tool_policy,
            supported: scopes_supported,
            default: default_scope,
            entitlements,
        } = scopes(raw, default_upstream)?;
        let redis_tls = RedisTls::load(raw)?;
        let redis_sentinel = RedisSentinel::load(raw)?;

        let verify_cache_ttl = raw.duration("VERIFY_CACHE_TTL", 30)?;
        if verify_cache_ttl.is_zero() {
            return Err(ConfigError::new(
                "VERIFY_CACHE_TTL",
                "must be at least 1 second (use VERIFY_CACHE_CAPACITY=0 to disable caching)",
            ));
        }

        let failure_mode = match raw
            .get("REDIS_FAILURE_MODE")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("closed") => FailureMode::Closed,
            Some("cached") => FailureMode::Cached,
            Some(other) => {
                return Err(ConfigError::new(
                    "REDIS_FAILURE_MODE",
                    format!("{other:?} is not one of closed, cached"),
                ));
            }
        };

        Ok(Settings {
            issuer,
            base_domain,
            keys,
            redis_url: Secret::new(redis_url),
            redis_tls,
            redis_sentinel,
            github,
            upstreams,
            oidc,
            admission,
            upstream_token,
            access_token_lifetime,
            refresh_token_lifetime,
            client_lifetime,
            custom_claims,
            bind: BindingPolicy {
                ip: raw.bool("TOKEN_BIND_IP", false)?,
                user_agent: raw.bool("TOKEN_BIND_UA", false)?,
                client_cert: raw.bool("TOKEN_BIND_CERT", false)?,
            },
            mfa_required: raw.bool("TOKEN_MFA_REQUIRED", false)?,
            mfa_provider,
            trusted_proxies,
            debug: raw.bool("DEBUG", false)?,
            log_format,
            listen_addr,
            resource_hosts,
            resource_path,
            resource_name: raw.get("RESOURCE_NAME").unwrap_or("MCP server").to_string(),
            accept_issuer_audience: raw.bool("ACCEPT_ISSUER_AUDIENCE", false)?,
            required_scopes,
            scopes_supported,
            default_scope,
            entitlements,
            forward_access_token: raw.bool("FORWARD_ACCESS_TOKEN", false)?,
            verify_cache_ttl,
            shutdown_drain: raw.duration("SHUTDOWN_DRAIN", 5)?,
            refresh_reuse_grace: raw.duration("REFRESH_REUSE_GRACE", 60)?,
            code_retry_grace: raw.duration("CODE_RETRY_GRACE", 10)?,
            tool_policy_trust_headers: raw.bool("TOOL_POLICY_TRUST_HEADERS", false)?,
            tool_policy_header: raw.bool("TOOL_POLICY_HEADER", false)?,
            scope_hierarchy,
            tool_policy,
            verify_cache_capacity: raw.number("VERIFY_CACHE_CAPACITY", 100_000)?,
            failure_mode,
            mfa: mfa(raw)?,
            cimd,
            rate_limits: RateLimitSettings {
                register: raw.number_u32("RATE_LIMIT_REGISTER", 1_200)?,
                authorize: raw.number_u32("RATE_LIMIT_AUTHORIZE", 3_000)?,
                token: raw.number_u32("RATE_LIMIT_TOKEN", 6_000)?,
                client_failures: raw.number_u32("RATE_LIMIT_CLIENT_FAILURES", 60)?,
                unused_client_budget: raw.number("UNUSED_CLIENT_BUDGET", 100_000)?.max(1),
                unused_client_budget_per_address: raw
                    .number("UNUSED_CLIENT_BUDGET_PER_ADDRESS", 1_000)?
                    .max(1),
                unused_client_lifetime: raw
                    .duration("UNUSED_CLIENT_LIFETIME", 86_400)?
                    .max(Duration::from_secs(60)),
                ipv4_prefix: prefix_length(raw, "RATE_LIMIT_IPV4_PREFIX", 32)?,
                ipv6_prefix: prefix_length(raw, "RATE_LIMIT_IPV6_PREFIX", 64)?,
            },
        })
    }
}

/// A network prefix length, at most `max` bits.
fn prefix_length(raw: &Raw, var: &str, max: u8) -> Result<u8, ConfigError> {
    let n = raw.number(var, u64::from(max))?;
    u8::try_from(n)
        .ok()
        .filter(|n| (8..=max).contains(n))
        .ok_or_else(|| ConfigError::new(var, format!("must be between 8 and {max}")))
}

/// `REDIS_URL`, with `REDIS_PASSWORD` added when the URL has none.
fn redis_url(raw: &Raw) -> Result<String, ConfigError> {
    let mut redis_url = raw
        .get("REDIS_URL")
        .unwrap_or("redis://127.0.0.1:6379")
        .to_string();
    let parsed = url::Url::parse(&redis_url)
        .map_err(|e| ConfigError::new("REDIS_URL", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
        return Err(ConfigError::new(
            "REDIS_URL",
            "scheme must be redis://, rediss:// or unix://",
        ));
    }
    if let Some(password) = raw.get("REDIS_PASSWORD")
        && parsed.password().is_none()
    {
        let mut with_pw = parsed.clone();
        with_pw
            .set_password(Some(password))
            .map_err(|_| ConfigError::new("REDIS_PASSWORD", "cannot be set on this URL"))?;
        redis_url = with_pw.to_string();
    }
    Ok(redis_url)
}

/// The GitHub OAuth app and GitHub's endpoints (configurable for Enterprise and for tests).
fn github(raw: &Raw) -> Result<GithubSettings, ConfigError> {
    Ok(GithubSettings {
        client_id: raw.get("GITHUB_CLIENT_ID").map(str::to_string),
        client_secret: raw
            .get("GITHUB_CLIENT_SECRET")
            .map(|s| Secret::new(s.to_string())),
        authorize_url: raw
            .get("GITHUB_AUTHORIZE_URL")
            .map(|u| parse_http_url("GITHUB_AUTHORIZE_URL", u))
            .transpose()?
            .unwrap_or_else(|| DEFAULT_GITHUB_AUTHORIZE_URL.into()),
        token_url: raw
            .get("GITHUB_TOKEN_URL")
            .map(|u| parse_http_url("GITHUB_TOKEN_URL", u))
            .transpose()?
            .unwrap_or_else(|| DEFAULT_GITHUB_TOKEN_URL.into()),
        api_url: raw
            .get("GITHUB_API_URL")
            .map(|u| parse_http_url("GITHUB_API_URL", u))
            .transpose()?
            .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.into()),
        scopes: split_list(raw.get("GITHUB_SCOPES").unwrap_or("read:user user:email"))
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// `TOKEN_CUSTOM_CLAIMS`: a JSON object merged into new tokens.
fn custom_claims(raw: &Raw) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    Ok(match raw.get("TOKEN_CUSTOM_CLAIMS") {
        None => serde_json::Map::new(),
        Some(json) => match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                return Err(ConfigError::new(
                    "TOKEN_CUSTOM_CLAIMS",
                    "must be a JSON object",
                ));
            }
            Err(e) => {
                return Err(ConfigError::new(
                    "TOKEN_CUSTOM_CLAIMS",
                    format!("not valid JSON: {e}"),
                ));
            }
        },
    })
}

/// What scopes requests need and which are offered: `REQUIRED_SCOPES`, `SCOPE_HIERARCHY`,
/// `TOOL_POLICY` (with the TOML file's `[[tool_policy]]` tables), `SCOPES_SUPPORTED`.
struct Scopes {
    required: ScopePolicy,
    hierarchy: crate::policy::ScopeHierarchy,
    tools: crate::policy::ToolPolicy,
    supported: Vec<String>,
    default: String,
    entitlements: crate::policy::Entitlements,
}

fn scopes(raw: &Raw, default_upstream: &'static str) -> Result<Scopes, ConfigError> {
    let required_scopes = ScopePolicy::parse(raw.get("REQUIRED_SCOPES").unwrap_or(""))
        .map_err(|e| ConfigError::new("REQUIRED_SCOPES", e))?;
    let scope_hierarchy =
        crate::policy::ScopeHierarchy::parse(raw.get("SCOPE_HIERARCHY").unwrap_or(""))
            .map_err(|e| ConfigError::new("SCOPE_HIERARCHY", e))?;
    let mut tool_policy =
        crate::policy::ToolPolicy::parse(raw.get("TOOL_POLICY").unwrap_or(""), default_upstream)
            .map_err(|e| ConfigError::new("TOOL_POLICY", e))?;
    tool_policy.rules.extend(
        crate::policy::ToolPolicy::from_tables(raw.tool_tables.clone(), default_upstream)
            .map_err(|e| ConfigError::new("TOOL_POLICY", e))?,
    );
    tool_policy.missing_name = match raw
        .get("TOOL_POLICY_MISSING_NAME")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("deny") => crate::policy::MissingName::Deny,
        Some("allow") => crate::policy::MissingName::Allow,
        Some(other) => {
            return Err(ConfigError::new(
                "TOOL_POLICY_MISSING_NAME",
                format!("{other:?} is not one of deny, allow"),
            ));
        }
    };
    let scopes_supported = match raw.get("SCOPES_SUPPORTED") {
        Some(list) => {
            let scopes: Vec<String> = split_list(list).map(str::to_string).collect();
            if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
                return Err(ConfigError::new(
                    "SCOPES_SUPPORTED",
                    format!("{bad:?} is not a valid scope token"),
                ));
            }
            scopes
        }
        None => {
            let mut s = vec!["mcp".to_string()];
            for extra in required_scopes
                .all_scopes()
                .into_iter()
                .chain(tool_policy.all_scopes())
            {
                if !s.contains(&extra) {
                    s.push(extra);
                }
            }
            s
        }
    };
    let default = match raw.get("DEFAULT_SCOPE") {
        None => scopes_supported.first().cloned().unwrap_or_default(),
        Some(value) => {
            let scope = crate::policy::Scope::parse(value);
            if let Some(bad) = scope.first_not(|s| scopes_supported.iter().any(|x| x == s)) {
                return Err(ConfigError::new(
                    "DEFAULT_SCOPE",
                    format!("{bad:?} is not in SCOPES_SUPPORTED"),
                ));
            }
            scope.to_string()
        }
    };
    let mut grants =
        crate::policy::Entitlements::parse(raw.get("SCOPE_GRANTS").unwrap_or(""), default_upstream)
            .map_err(|e| ConfigError::new("SCOPE_GRANTS", e))?;
    let tables =
        crate::policy::Entitlements::from_tables(raw.grant_tables.clone(), default_upstream)
            .map_err(|e| ConfigError::new("[[scope_grant]]", e))?;
    let from_file = tables.len();
    grants.extend(tables);
    // A grant for a scope nobody can ask for is a typo that would leave the real one open.
    for (i, grant) in grants.iter().enumerate() {
        if !scopes_supported.contains(&grant.scope) {
            let var = if i + from_file >= grants.len() {
                "[[scope_grant]]"
            } else {
                "SCOPE_GRANTS"
            };
            return Err(ConfigError::new(
                var,
                format!(
                    "a grant names {:?}, which is not in SCOPES_SUPPORTED ({})",
                    grant.scope,
                    scopes_supported.join(" ")
                ),
            ));
        }
    }
    Ok(Scopes {
        required: required_scopes,
        hierarchy: scope_hierarchy,
        tools: tool_policy,
        supported: scopes_supported,
        default,
        entitlements: crate::policy::Entitlements::new(grants),
    })
}

/// The second factor's key and lockout.
fn mfa(raw: &Raw) -> Result<MfaSettings, ConfigError> {
    Ok(MfaSettings {
        encryption_key: match raw.get("MFA_ENCRYPTION_KEY") {
            None => None,
            Some(b64) => Some(Secret::new(upstream::key32("MFA_ENCRYPTION_KEY", b64)?)),
        },
        max_failures: raw.number_u32("MFA_MAX_FAILURES", 3)?.max(1),
        failure_window: raw.duration("MFA_FAILURE_WINDOW", 120)?,
        lockout: raw.duration("MFA_LOCKOUT", 300)?,
    })
}

fn load_keys(raw: &Raw, algorithm: SigningAlgorithm) -> Result<KeySet, ConfigError> {
    let signing = if algorithm == SigningAlgorithm::Hs256 {
        match raw.get("GATEWAY_JWT_SECRET") {
            Some(secret) => Some(
                KeyMaterial::hmac_secret(secret.as_bytes())
                    .map_err(|e| ConfigError::new("GATEWAY_JWT_SECRET", e))?,
            ),
            None => None,
        }
    } else {
        let (var, pem) = match (
            raw.get("JWT_PRIVATE_KEY_B64"),
            raw.get("JWT_PRIVATE_KEY_FILE"),
        ) {
            (Some(b64), _) => (
                "JWT_PRIVATE_KEY_B64",
                decode_pem_b64(b64).map_err(|e| ConfigError::new("JWT_PRIVATE_KEY_B64", e))?,
            ),
            (None, Some(path)) => (
                "JWT_PRIVATE_KEY_FILE",
                std::fs::read(path).map_err(|e| {
                    ConfigError::new("JWT_PRIVATE_KEY_FILE", format!("cannot read {path}: {e}"))
                })?,
            ),
            (None, None) => ("JWT_PRIVATE_KEY_B64", Vec::new()),
        };
        if pem.is_empty() {
            None
        } else {
            Some(KeyMaterial::private_pem(algorithm, &pem).map_err(|e| ConfigError::new(var, e))?)
        }
    };

    let mut verification = Vec::new();
    if let Some(list) = raw.get("JWT_VERIFICATION_KEYS_B64") {
        for (i, item) in split_list(list).enumerate() {
            let var = "JWT_VERIFICATION_KEYS_B64";
            let pem = decode_pem_b64(item)
                .map_err(|e| ConfigError::new(var, format!("key {}: {e}", i + 1)))?;
            let key = KeyMaterial::any_pem(&pem)
                .map_err(|e| ConfigError::new(var, format!("key {}: {e}", i + 1)))?;
            verification.push(key);
        }
    }
    {
        // Previous HMAC secrets, so an HS256 secret can rotate (or give way to another
        // algorithm) without logging anyone out.
        if let Some(list) = raw.get("GATEWAY_JWT_PREVIOUS_SECRETS") {
            for item in split_list(list) {
                verification.push(
                    KeyMaterial::hmac_secret(item.as_bytes())
                        .map_err(|e| ConfigError::new("GATEWAY_JWT_PREVIOUS_SECRETS", e))?,
                );
            }
        }
    }

    if signing.is_none() && verification.is_empty() {
        let (var, hint) = if algorithm == SigningAlgorithm::Hs256 {
            (
                "GATEWAY_JWT_SECRET",
                "required for HS256 (mcp-gateway generate-jwt-secret)",
            )
        } else {
            (
                "JWT_PRIVATE_KEY_B64",
                "required (or JWT_PRIVATE_KEY_FILE): generate one with `mcp-gateway keys generate`",
            )
        };
        return Err(ConfigError::new(var, hint));
    }
    KeySet::new(signing, verification).map_err(|e| ConfigError::new("JWT_VERIFICATION_KEYS_B64", e))
}

/// Accepts base64 of a PEM (the seed's form), with or without line breaks, or the PEM itself.
fn decode_pem_b64(value: &str) -> Result<Vec<u8>, String> {
    let trimmed = value.trim();
    if trimmed.starts_with("-----BEGIN") {
        return Ok(trimmed.replace("\\n", "\n").into_bytes());
    }
    let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| "not base64 of a PEM key".to_string())
}

fn parse_http_url(var: &str, value: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(value.trim())
        .map_err(|e| ConfigError::new(var, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(var, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(var, "must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn parse_net(value: &str) -> Result<IpNet, String> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    value
        .parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{value:?} is neither an IP address nor a CIDR range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs_source() -> ConfigSource {
        ConfigSource::from_pairs([
            ("JWT_ALGORITHM", "HS256"),
            (
                "GATEWAY_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-test",
            ),
            ("BASE_DOMAIN", "example.com"),
        ])
    }

    #[test]
    fn upstreams_allow_lists_and_upstream_tokens_are_validated() {
        let with = |pairs: &[(&str, &str)]| {
            let mut source = hs_source();
            for (k, v) in pairs {
                source = source.with(*k, *v);
            }
            Settings::load(&source)
        };
        let oidc = [
            ("OIDC_ISSUER", "https://login.example.com/t/v2.0"),
            ("OIDC_CLIENT_ID", "gw"),
            ("OIDC_CLIENT_SECRET", "s"),
        ];
        // The providers configured are the upstreams, GitHub alone by default.
        assert_eq!(with(&[]).unwrap().upstreams, vec![Provider::Github]);
        let s = with(&oidc).unwrap();
        assert_eq!(s.upstreams, vec![Provider::Oidc]);
        let o = s.oidc.unwrap();
        assert_eq!(o.scopes, ["openid", "email", "profile", "offline_access"]);
        assert_eq!(o.display_name, "login.example.com");
        let mut both = oidc.to_vec();
        both.push(("UPSTREAM", "oidc, github"));
        assert_eq!(
            with(&both).unwrap().upstreams,
            vec![Provider::Oidc, Provider::Github]
        );
        let err = |pairs: &[(&str, &str)]| with(pairs).unwrap_err().var;
        assert_eq!(err(&[("UPSTREAM", "saml")]), "UPSTREAM");
        assert_eq!(err(&[("UPSTREAM", "oidc")]), "OIDC_ISSUER");
        let mut plain = oidc.to_vec();
        plain[0] = ("OIDC_ISSUER", "http://idp.example.com");
        assert_eq!(err(&plain), "OIDC_ISSUER");
        let mut no_secret = oidc.to_vec();
        no_secret.pop();
        assert_eq!(err(&no_secret), "OIDC_CLIENT_SECRET");
        let mut jwt = oidc.to_vec();
        jwt.push(("OIDC_CLIENT_AUTH_METHOD", "private_key_jwt"));
        assert_eq!(err(&jwt), "OIDC_PRIVATE_KEY_FILE");
        let mut ours = oidc.to_vec();
        ours.push(("OIDC_AUTH_PARAMS", "nonce=1"));
        assert_eq!(err(&ours), "OIDC_AUTH_PARAMS");

        assert_eq!(
            err(&[("ALLOWED_EMAIL_DOMAINS", "*")]),
            "ALLOWED_EMAIL_DOMAINS"
        );
        assert_eq!(
            err(&[("ALLOWED_USERS", "a"), ("ALLOWED_GITHUB_USERS", "b")]),
            "ALLOWED_USERS"
        );
        assert_eq!(err(&[("ALLOWED_EMAILS", "nobody")]), "ALLOWED_EMAILS");
        let s = with(&[
            ("ALLOWED_EMAIL_DOMAINS", "@Example.com"),
            ("ALLOWED_GROUPS", "eng"),
        ])
        .unwrap();
        assert!(s.admission.is_configured());
        assert_eq!(s.admission.groups, ["eng"]);

        for header in ["Authorization", "X-User-Token", "bad header"] {
            assert_eq!(
                err(&[
                    ("FORWARD_UPSTREAM_TOKEN", "true"),
                    ("UPSTREAM_TOKEN_HEADER", header)
                ]),
                "UPSTREAM_TOKEN_HEADER"
            );
        }
        let s = with(&[("FORWARD_UPSTREAM_TOKEN", "github-mcp.example.com")]).unwrap();
        assert!(s.upstream_token.forwards_to("github-mcp.example.com"));
        assert!(!s.upstream_token.forwards_to("other.example.com"));
        assert!(!with(&[]).unwrap().upstream_token.enabled());
        assert_eq!(
            err(&[("UPSTREAM_TOKEN_KEY", "c2hvcnQ=")]),
            "UPSTREAM_TOKEN_KEY"
        );
        // Derived from the signing key when not given: auth and verify agree.
        assert!(with(&[]).unwrap().upstream_sealer().is_some());
    }

    #[test]
    fn defaults_follow_base_domain() {
        let s = Settings::load(&hs_source()).unwrap();
        assert_eq!(s.issuer, "https://auth.example.com");
        assert!(s.resource_hosts[0].matches("mcp.example.com"));
        assert!(!s.resource_hosts[0].matches("example.com"));
        assert!(!s.resource_hosts[0].matches("mcp.example.com.evil.net"));
        assert_eq!(s.resource_path, "/mcp");
        assert_eq!(s.access_token_lifetime, Duration::from_secs(30 * 86_400));
        assert_eq!(s.failure_mode, FailureMode::Closed);
        assert!(!s.admission.is_configured());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("ACCESS_TOKEN_LIFETIME", "soon"),
            ("LISTEN_ADDR", "nowhere"),
            ("REDIS_FAILURE_MODE", "open"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TOKEN_CUSTOM_CLAIMS", "[1]"),
            ("JWT_ALGORITHM", "none"),
            ("ISSUER_URL", "ftp://x"),
            ("TOKEN_BIND_IP", "maybe"),
            ("REQUIRED_SCOPES", "a=\"b\""),
        ] {
            let err = Settings::load(&hs_source().with(var, value)).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn short_hmac_secret_is_refused() {
        let err = Settings::load(&hs_source().with("GATEWAY_JWT_SECRET", "short")).unwrap_err();
        assert_eq!(err.var, "GATEWAY_JWT_SECRET");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = Settings::load(
            &hs_source()
                .with("REDIS_URL", "redis://:hunter2hunter2@127.0.0.1:6379")
                .with("GITHUB_CLIENT_SECRET", "ghsecretvalue"),
        )
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"));
        assert!(!dbg.contains("ghsecretvalue"));
        assert!(!dbg.contains("0123456789abcdef"));
    }

    #[test]
    fn every_setting_read_is_known_to_the_file_check() {
        let source = [
            include_str!("mod.rs"),
            include_str!("redis.rs"),
            include_str!("raw.rs"),
        ]
        .concat();
        for call in [
            "raw.get(\"",
            "raw.get_raw(\"",
            "raw.bool(\"",
            "raw.duration(\"",
            "raw.number(\"",
            "raw.number_u32(\"",
        ] {
            for piece in source.split(call).skip(1) {
                let name = piece.split('"').next().unwrap();
                if name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && !name.is_empty()
                {
                    assert!(
                        KNOWN_SETTINGS.contains(&name),
                        "{name} is read but not in KNOWN_SETTINGS"
                    );
                }
            }
        }
    }

    #[test]
    fn a_typo_in_the_config_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            "gateway_jwt_secret = \"0123456789abcdef0123456789abcdef\"\njwt_algorithm = \"HS256\"\nissuer_ulr = \"https://auth.example.com\"\n",
        )
        .unwrap();
        let mut source = ConfigSource::from_pairs::<&str, &str>([]);
        source.file = Some(file);
        let err = Settings::load(&source).unwrap_err();
        assert_eq!(err.var, "--config");
        assert!(err.reason.contains("\"issuer_ulr\""), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("1w").is_err());
    }

    #[test]
    fn toml_file_is_overlaid_by_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            "base_domain = \"file.example\"\naccess_token_lifetime = 120\nrequired_scopes = \"mcp\"\n",
        )
        .unwrap();
        let mut source = hs_source().with("ACCESS_TOKEN_LIFETIME", "60");
        source.env.remove("BASE_DOMAIN");
        source.file = Some(path);
        let s = Settings::load(&source).unwrap();
        assert_eq!(s.base_domain, "file.example");
        assert_eq!(s.access_token_lifetime, Duration::from_secs(60));
        assert!(!s.required_scopes.is_empty());
    }
}
