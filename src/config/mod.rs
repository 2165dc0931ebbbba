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

use ipnet::IpNet;

mod audit;
mod cimd;
mod keys;
mod raw;
mod redis;
mod scopes;
mod trust;
mod upstream;

use raw::Raw;
pub use raw::{KNOWN_SETTINGS, parse_duration};

use crate::policy::{Admission, HostPattern, ScopePolicy, split_list};
pub use audit::{AuditSettings, WebhookFormat};
pub use cimd::{CimdSettings, canonical_host};
pub use redis::{RedisCluster, RedisSentinel, RedisTls};
pub use trust::{IssuerKind, KeySource, TrustedIssuer};
pub use upstream::{EmailTrust, OidcClientAuth, OidcSettings, Provider, UpstreamTokenSettings};

use crate::token::keys::{KeySet, SigningAlgorithm};
use keys::load_keys;
use scopes::{Scopes, custom_claims, scopes};

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
    /// Redis Cluster (`REDIS_CLUSTER_NODES`), if configured.
    pub redis_cluster: Option<RedisCluster>,
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
    /// `VERIFY_TLS_CERT` + `VERIFY_TLS_KEY` (+ `VERIFY_TLS_LISTEN_ADDR`): verify also serves
    /// TLS with ALPN h2 for the proxy's forwardAuth.
    pub verify_tls: Option<VerifyTls>,
    /// `VERIFY_H2_MAX_CONNECTION_AGE`: an HTTP/2 connection older than this is told to go away
    /// (GOAWAY), so a proxy's one long-lived connection is spread over the replicas in time;
    /// `None` (0): never.
    pub verify_h2_max_connection_age: Option<Duration>,
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
    /// `DPOP_IAT_WINDOW`: how far a DPoP proof's `iat` may be from our clock, either way
    /// (RFC 9449 §11.1), at most 5 minutes; also how long a proof's `jti` is remembered.
    pub dpop_iat_window: Duration,
    /// `DPOP_REPLAY_CAPACITY`: how many DPoP proofs one verify replica remembers at most.
    pub dpop_replay_capacity: usize,
    /// `DPOP_NONCE`: proofs must carry a server nonce (RFC 9449 §8, §9).
    pub dpop_nonce: bool,
    /// `DPOP_NONCE_KEY`: 32 bytes the nonces are sealed with; unset: derived from the signing
    /// key (auth and verify must then share it).
    pub dpop_nonce_key: Option<crate::config::Secret<[u8; 32]>>,
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
    /// The audit trail: retention, usage counting, webhooks.
    pub audit: AuditSettings,
    /// `[[trusted_issuer]]` and `TRUSTED_ISSUER_*`: whose ID-JAGs and workload JWTs `/token`
    /// accepts (the JWT bearer grant).
    pub trusted_issuers: Vec<TrustedIssuer>,
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

    /// The DPoP server nonces, when `DPOP_NONCE` is on: sealed with `DPOP_NONCE_KEY`, else a
    /// key derived from the signing key; valid as long as a proof's `iat` window.
    pub fn dpop_nonces(&self) -> Option<crate::token::dpop::Nonces> {
        if !self.dpop_nonce {
            return None;
        }
        let sealer = match &self.dpop_nonce_key {
            Some(key) => crate::seal::SecretBox::new(*key.expose()),
            None => {
                let key = self.keys.signing_key()?.encoding()?.as_bytes();
                crate::seal::Derived::root("mcp-gateway dpop nonces", key).sealer()
            }
        };
        Some(crate::token::dpop::Nonces::new(
            sealer,
            self.dpop_iat_window.as_secs() as i64,
        ))
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
        let trusted_issuers = trust::trusted_issuers(raw, &issuer)?;

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
        let redis_cluster = RedisCluster::load(raw)?;

        let verify_cache_ttl = raw.duration("VERIFY_CACHE_TTL", 30)?;
        if verify_cache_ttl.is_zero() {
            return Err(ConfigError::new(
                "VERIFY_CACHE_TTL",
                "must be at least 1 second (use VERIFY_CACHE_CAPACITY=0 to disable caching)",
            ));
        }

        let failure_mode = raw.choice(
            "REDIS_FAILURE_MODE",
            &[
                ("closed", FailureMode::Closed),
                ("cached", FailureMode::Cached),
            ],
        )?;

        let settings = Settings {
            issuer,
            base_domain,
            keys,
            redis_url: Secret::new(redis_url),
            redis_tls,
            redis_sentinel,
            redis_cluster,
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
            verify_tls: verify_tls(raw)?,
            verify_h2_max_connection_age: Some(raw.duration("VERIFY_H2_MAX_CONNECTION_AGE", 0)?)
                .filter(|age| !age.is_zero()),
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
            dpop_iat_window: dpop_iat_window(raw)?,
            dpop_replay_capacity: raw.number("DPOP_REPLAY_CAPACITY", 1_000_000)? as usize,
            dpop_nonce: raw.bool("DPOP_NONCE", false)?,
            dpop_nonce_key: match raw.get("DPOP_NONCE_KEY") {
                None => None,
                Some(b64) => Some(Secret::new(upstream::key32("DPOP_NONCE_KEY", b64)?)),
            },
            tool_policy_trust_headers: raw.bool("TOOL_POLICY_TRUST_HEADERS", false)?,
            tool_policy_header: raw.bool("TOOL_POLICY_HEADER", false)?,
            scope_hierarchy,
            tool_policy,
            verify_cache_capacity: raw.number("VERIFY_CACHE_CAPACITY", 100_000)?,
            failure_mode,
            mfa: mfa(raw)?,
            cimd,
            audit: audit::audit(raw)?,
            trusted_issuers,
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
        };
        if settings.dpop_nonce && settings.dpop_nonces().is_none() {
            return Err(ConfigError::new(
                "DPOP_NONCE",
                "needs DPOP_NONCE_KEY (the same on auth and verify) or the signing key",
            ));
        }
        Ok(settings)
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

/// `DPOP_IAT_WINDOW`: 1 s to 5 minutes (the conformance suite's bound; a longer window only
/// lengthens a stolen proof's life).
fn dpop_iat_window(raw: &Raw) -> Result<Duration, ConfigError> {
    let window = raw.duration("DPOP_IAT_WINDOW", 300)?;
    if window.is_zero() || window > Duration::from_secs(300) {
        return Err(ConfigError::new(
            "DPOP_IAT_WINDOW",
            "must be between 1s and 5m",
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests;

/// Where verify serves TLS (HTTP/2 by ALPN, HTTP/1.1) and with which certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyTls {
    pub files: crate::tls::CertFiles,
    pub listen_addr: SocketAddr,
}

/// verify's TLS listener unless `VERIFY_TLS_LISTEN_ADDR` says otherwise.
pub const DEFAULT_VERIFY_TLS_LISTEN_ADDR: &str = "0.0.0.0:8443";

fn verify_tls(raw: &Raw) -> Result<Option<VerifyTls>, ConfigError> {
    let (cert, key) = match (raw.get("VERIFY_TLS_CERT"), raw.get("VERIFY_TLS_KEY")) {
        (None, None) => {
            if raw.get("VERIFY_TLS_LISTEN_ADDR").is_some() {
                return Err(ConfigError::new(
                    "VERIFY_TLS_LISTEN_ADDR",
                    "needs VERIFY_TLS_CERT and VERIFY_TLS_KEY",
                ));
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => {
            return Err(ConfigError::new(
                "VERIFY_TLS_KEY",
                "VERIFY_TLS_CERT is set: the key file is needed too",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "VERIFY_TLS_CERT",
                "VERIFY_TLS_KEY is set: the certificate file is needed too",
            ));
        }
    };
    let listen = raw
        .get("VERIFY_TLS_LISTEN_ADDR")
        .unwrap_or(DEFAULT_VERIFY_TLS_LISTEN_ADDR);
    let listen_addr = listen.parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            "VERIFY_TLS_LISTEN_ADDR",
            format!("{listen:?} is not an address like 0.0.0.0:8443"),
        )
    })?;
    Ok(Some(VerifyTls {
        files: crate::tls::CertFiles {
            cert: cert.into(),
            key: key.into(),
        },
        listen_addr,
    }))
}
