//! Reading the settings: the `--config` TOML file overlaid by the environment, by lower-case
//! name, with typed accessors that name the variable in every error.

use std::collections::HashMap;
use std::time::Duration;

use super::{ConfigError, ConfigSource};

/// Every setting the services read: a `--config` file may name only these (a typo must not
/// be ignored silently).
pub const KNOWN_SETTINGS: &[&str] = &[
    "AUDIT_ENABLED",
    "AUDIT_MAX_EVENTS",
    "AUDIT_RETENTION",
    "AUDIT_USAGE",
    "AUDIT_USAGE_FLUSH",
    "AUDIT_REFUSAL_INTERVAL",
    "AUDIT_WEBHOOK_URL",
    "AUDIT_WEBHOOK_MIN_LEVEL",
    "AUDIT_WEBHOOK_SECRET",
    "AUDIT_WEBHOOK_FORMAT",
    "AUDIT_WEBHOOK_TIMEOUT",
    "AUDIT_WEBHOOK_CLAIM_IDLE",
    "LOG_AUDIT",
    "TRUSTED_ISSUER",
    "TRUSTED_ISSUER_KIND",
    "TRUSTED_ISSUER_JWKS_URI",
    "TRUSTED_ISSUER_JWKS_FILE",
    "TRUSTED_ISSUER_AUDIENCE",
    "TRUSTED_ISSUER_SUBJECT",
    "TRUSTED_ISSUER_REQUIRED_CLAIMS",
    "TRUSTED_ISSUER_SCOPES",
    "TRUSTED_ISSUER_CLIENTS",
    "ALLOWED_USERS",
    "ALLOWED_EMAILS",
    "ALLOWED_EMAIL_DOMAINS",
    "ALLOWED_GROUPS",
    "UPSTREAM",
    "OIDC_ISSUER",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "OIDC_CLIENT_AUTH_METHOD",
    "OIDC_PRIVATE_KEY_FILE",
    "OIDC_PRIVATE_KEY_ID",
    "OIDC_SCOPES",
    "OIDC_REFRESH",
    "OIDC_DISPLAY_NAME",
    "OIDC_SUBJECT_CLAIM",
    "OIDC_USERNAME_CLAIM",
    "OIDC_GROUPS_CLAIM",
    "OIDC_EMAIL_VERIFIED",
    "OIDC_USERINFO",
    "OIDC_REQUIRED_CLAIMS",
    "OIDC_AUTH_PARAMS",
    "OIDC_TIMEOUT",
    "FORWARD_UPSTREAM_TOKEN",
    "UPSTREAM_TOKEN_HEADER",
    "UPSTREAM_TOKEN_KEY",
    "REDIS_CA_FILE",
    "REDIS_CLIENT_CERT_FILE",
    "REDIS_CLIENT_KEY_FILE",
    "ACCEPT_ISSUER_AUDIENCE",
    "ACCESS_TOKEN_LIFETIME",
    "ALLOWED_GITHUB_USERS",
    "BASE_DOMAIN",
    "CIMD_ALLOWED_HOSTS",
    "CIMD_DENIED_HOSTS",
    "CIMD_ENABLED",
    "CIMD_FETCH_TIMEOUT",
    "CIMD_MAX_AGE",
    "CIMD_MIN_AGE",
    "CIMD_STALE_IF_ERROR",
    "CIMD_TEST_LOOPBACK_CA",
    "CLIENT_LIFETIME",
    "DEBUG",
    "FORWARD_ACCESS_TOKEN",
    "GATEWAY_JWT_PREVIOUS_SECRETS",
    "GATEWAY_JWT_SECRET",
    "GITHUB_API_URL",
    "GITHUB_AUTHORIZE_URL",
    "GITHUB_CLIENT_ID",
    "GITHUB_CLIENT_SECRET",
    "GITHUB_SCOPES",
    "GITHUB_TOKEN_URL",
    "ISSUER_URL",
    "JWT_ALGORITHM",
    "JWT_PRIVATE_KEY_B64",
    "JWT_PRIVATE_KEY_FILE",
    "JWT_VERIFICATION_KEYS_B64",
    "LISTEN_ADDR",
    "LOG_FORMAT",
    "MFA_ENCRYPTION_KEY",
    "MFA_FAILURE_WINDOW",
    "MFA_LOCKOUT",
    "MFA_MAX_FAILURES",
    "RATE_LIMIT_AUTHORIZE",
    "RATE_LIMIT_CLIENT_FAILURES",
    "RATE_LIMIT_REGISTER",
    "RATE_LIMIT_TOKEN",
    "REDIS_CLUSTER_NODES",
    "REDIS_FAILURE_MODE",
    "REDIS_PASSWORD",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_URL",
    "REDIS_WAIT_REPLICAS",
    "REFRESH_REUSE_GRACE",
    "REFRESH_TOKEN_LIFETIME",
    "REQUIRED_SCOPES",
    "RESOURCE_HOSTS",
    "RESOURCE_NAME",
    "RESOURCE_PATH",
    "SCOPES_SUPPORTED",
    "SCOPE_GRANTS",
    "DEFAULT_SCOPE",
    "CODE_RETRY_GRACE",
    "DPOP_IAT_WINDOW",
    "DPOP_REPLAY_CAPACITY",
    "DPOP_NONCE",
    "DPOP_NONCE_KEY",
    "TOOL_POLICY_TRUST_HEADERS",
    "RATE_LIMIT_IPV4_PREFIX",
    "RATE_LIMIT_IPV6_PREFIX",
    "SCOPE_HIERARCHY",
    "SHUTDOWN_DRAIN",
    "TOKEN_BIND_CERT",
    "TOKEN_BIND_IP",
    "TOKEN_BIND_UA",
    "TOKEN_CUSTOM_CLAIMS",
    "TOKEN_MFA_PROVIDER",
    "TOKEN_MFA_REQUIRED",
    "TOOL_POLICY",
    "TOOL_POLICY_HEADER",
    "TOOL_POLICY_MISSING_NAME",
    "TRUSTED_PROXIES",
    "UNUSED_CLIENT_BUDGET",
    "UNUSED_CLIENT_BUDGET_PER_ADDRESS",
    "UNUSED_CLIENT_LIFETIME",
    "VERIFY_CACHE_CAPACITY",
    "VERIFY_H2_MAX_CONNECTION_AGE",
    "VERIFY_TLS_CERT",
    "VERIFY_TLS_KEY",
    "VERIFY_TLS_LISTEN_ADDR",
    "VERIFY_CACHE_TTL",
];

/// Settings a TOML file may also write as arrays of tables (`[[tool_policy]]`,
/// `[[scope_grant]]`), by their lower-case name.
pub const TABLE_SETTINGS: &[&str] = &["tool_policy", "scope_grant", "trusted_issuer"];

/// The merged raw values, keyed by lower-case name.
pub(super) struct Raw {
    pub(super) values: HashMap<String, String>,
    /// `[[tool_policy]]` tables of a TOML file.
    pub(super) tool_tables: Vec<crate::policy::RawToolRule>,
    /// `[[scope_grant]]` tables of a TOML file.
    pub(super) grant_tables: Vec<crate::policy::RawScopeGrant>,
    /// `[[trusted_issuer]]` tables of a TOML file, read by [`Raw::trust_tables`].
    trust_tables: Option<config::Value>,
}

impl Raw {
    /// `var` as one of the named `options` (compared in lower case); unset, the first.
    pub(super) fn choice<T: Clone>(
        &self,
        var: &str,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(value) = self.get(var) else {
            return Ok(options[0].1.clone());
        };
        let value = value.to_ascii_lowercase();
        match options.iter().find(|(name, _)| *name == value) {
            Some((_, choice)) => Ok(choice.clone()),
            None => {
                let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
                Err(ConfigError::new(
                    var,
                    format!("{value:?} is not one of {}", names.join(", ")),
                ))
            }
        }
    }

    pub(super) fn gather(source: &ConfigSource) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = &source.file {
            if !file.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("{} does not exist", file.display()),
                ));
            }
            let only_file = config::Config::builder()
                .add_source(
                    config::File::from(file.as_path())
                        .format(config::FileFormat::Toml)
                        .required(true),
                )
                .build()
                .and_then(|c| c.try_deserialize::<HashMap<String, config::Value>>())
                .map_err(|e| ConfigError::new("--config", e.to_string()))?;
            let mut unknown: Vec<&String> = only_file
                .keys()
                .filter(|k| {
                    !KNOWN_SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(k))
                        && !TABLE_SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(k))
                })
                .collect();
            unknown.sort();
            if let Some(first) = unknown.first() {
                return Err(ConfigError::new(
                    "--config",
                    format!(
                        "{}: unknown setting {first:?} (settings are the environment names in lower case, e.g. issuer_url)",
                        file.display()
                    ),
                ));
            }
            builder = builder.add_source(
                config::File::from(file.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::default().source(Some(
                source
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )),
        );
        let merged = builder
            .build()
            .map_err(|e| ConfigError::new("--config", e.to_string()))?;
        let table: HashMap<String, config::Value> = merged
            .try_deserialize()
            .map_err(|e| ConfigError::new("--config", e.to_string()))?;
        let mut values = HashMap::with_capacity(table.len());
        let (mut tool_tables, mut grant_tables, mut trust_tables) = (Vec::new(), Vec::new(), None);
        for (key, value) in table {
            let key = key.to_ascii_lowercase();
            if TABLE_SETTINGS.contains(&key.as_str()) && value.clone().into_string().is_err() {
                match key.as_str() {
                    "tool_policy" => tool_tables = tables(value, &key, "TOOL_POLICY")?,
                    "trusted_issuer" => trust_tables = Some(value),
                    _ => grant_tables = tables(value, &key, "[[scope_grant]]")?,
                }
                continue;
            }
            let text = match value.clone().into_string() {
                Ok(s) => s,
                Err(_) => match value.into_array() {
                    Ok(items) => items
                        .into_iter()
                        .map(|v| v.into_string())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| {
                            ConfigError::new(
                                key.to_ascii_uppercase(),
                                "list items must be plain values",
                            )
                        })?
                        .join(","),
                    Err(_) => continue, // tables belong to no setting of ours
                },
            };
            values.insert(key, text);
        }
        Ok(Self {
            values,
            tool_tables,
            grant_tables,
            trust_tables,
        })
    }

    /// The value, trimmed; empty counts as unset.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.get_raw(name).filter(|v| !v.is_empty())
    }

    /// The value, trimmed, empty kept (for settings where "set to nothing" means something).
    pub(super) fn get_raw(&self, name: &str) -> Option<&str> {
        self.values
            .get(&name.to_ascii_lowercase())
            .map(|v| v.trim())
    }

    pub(super) fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::new(
                name,
                format!("{other:?} is not a boolean (true or false)"),
            )),
        }
    }

    pub(super) fn number(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<u64>().map_err(|_| {
                ConfigError::new(name, format!("{v:?} is not a whole non-negative number"))
            }),
        }
    }

    pub(super) fn number_u32(&self, name: &str, default: u32) -> Result<u32, ConfigError> {
        let n = self.number(name, u64::from(default))?;
        u32::try_from(n).map_err(|_| ConfigError::new(name, format!("{n} is too large")))
    }

    /// Seconds, as a plain number or with a unit: `3600`, `90s`, `15m`, `12h`, `30d`.
    pub(super) fn duration(&self, name: &str, default_secs: u64) -> Result<Duration, ConfigError> {
        match self.get(name) {
            None => Ok(Duration::from_secs(default_secs)),
            Some(v) => parse_duration(v).map_err(|e| ConfigError::new(name, e)),
        }
    }
}

/// The `[[name]]` tables of a TOML file, read as `T`; `var` names the setting in errors.
impl Raw {
    /// The `[[trusted_issuer]]` tables of a TOML file, as `T`.
    pub(super) fn trust_tables<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Vec<T>, ConfigError> {
        match &self.trust_tables {
            None => Ok(Vec::new()),
            Some(value) => tables(value.clone(), "trusted_issuer", "[[trusted_issuer]]"),
        }
    }
}

fn tables<T: serde::de::DeserializeOwned>(
    value: config::Value,
    name: &str,
    var: &str,
) -> Result<Vec<T>, ConfigError> {
    value
        .try_deserialize()
        .map_err(|e| ConfigError::new(var, format!("[[{name}]]: {e}")))
}

pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{v:?} is not a duration (seconds, or a number with s, m, h or d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{v:?} has an unknown unit (use s, m, h or d)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{v:?} is too large"))
}
