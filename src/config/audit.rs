//! The audit trail's settings (`AUDIT_*`, `LOG_AUDIT`): how much is kept, whether verify
//! counts usage, and the webhooks that are told of what matters.

use std::time::Duration;

use super::raw::Raw;
use super::{ConfigError, Secret};
use crate::audit::{Bounds, DEFAULT_MAX_EVENTS, Level};
use crate::policy::split_list;

/// What a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event as JSON, signed.
    Json,
    /// `{"text": "…"}`, what Slack's (and Mattermost's, Teams' workflow) incoming webhooks take.
    Slack,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// `AUDIT_ENABLED`, `AUDIT_MAX_EVENTS`, `AUDIT_RETENTION`.
    pub bounds: Bounds,
    /// `LOG_AUDIT`: every event also as one JSON line on stdout.
    pub log: bool,
    /// `AUDIT_USAGE`: verify counts decisions per user, client, method and tool.
    pub usage: bool,
    /// `AUDIT_USAGE_FLUSH`: how often verify writes its counts.
    pub usage_flush: Duration,
    /// `AUDIT_REFUSAL_INTERVAL`: at most one refusal event per client and reason this often
    /// per verify replica (the rest are counted in the next one's `detail.suppressed`).
    pub refusal_interval: Duration,
    /// `AUDIT_WEBHOOK_URL` (several allowed): they are credentials (Slack's are), never logged.
    pub webhooks: Vec<Secret<String>>,
    /// `AUDIT_WEBHOOK_MIN_LEVEL`: events below it are not sent.
    pub webhook_min_level: Level,
    /// `AUDIT_WEBHOOK_SECRET`: the HMAC-SHA256 key of the signature header.
    pub webhook_secret: Option<Secret<String>>,
    /// `AUDIT_WEBHOOK_FORMAT`.
    pub webhook_format: WebhookFormat,
    /// `AUDIT_WEBHOOK_TIMEOUT`: one delivery attempt at most this long.
    pub webhook_timeout: Duration,
    /// `AUDIT_WEBHOOK_CLAIM_IDLE`: what a replica read and left undelivered this long (it
    /// stopped) is taken over by another; longer than an attempt, so a live one keeps its own.
    pub webhook_claim_idle: Duration,
}

/// The shortest `AUDIT_WEBHOOK_SECRET` accepted.
const MIN_SECRET_LEN: usize = 16;

pub(super) fn audit(raw: &Raw) -> Result<AuditSettings, ConfigError> {
    let retention = raw.duration("AUDIT_RETENTION", 30 * 86_400)?;
    if retention < Duration::from_secs(60) {
        return Err(ConfigError::new("AUDIT_RETENTION", "must be at least 60 s"));
    }
    let max_events = raw.number("AUDIT_MAX_EVENTS", DEFAULT_MAX_EVENTS)?;
    if max_events < 1_000 {
        return Err(ConfigError::new(
            "AUDIT_MAX_EVENTS",
            "must be at least 1000",
        ));
    }
    let mut webhooks = Vec::new();
    for url in raw
        .get("AUDIT_WEBHOOK_URL")
        .map(split_list)
        .into_iter()
        .flatten()
    {
        let parsed = url::Url::parse(url).map_err(|_| {
            ConfigError::new(
                "AUDIT_WEBHOOK_URL",
                "an entry is not a URL (value not shown)",
            )
        })?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
            return Err(ConfigError::new(
                "AUDIT_WEBHOOK_URL",
                "every entry must be an http(s) URL with a host",
            ));
        }
        webhooks.push(Secret::new(url.to_string()));
    }
    let webhook_format = match raw
        .get("AUDIT_WEBHOOK_FORMAT")
        .unwrap_or("json")
        .to_ascii_lowercase()
        .as_str()
    {
        "json" => WebhookFormat::Json,
        "slack" => WebhookFormat::Slack,
        other => {
            return Err(ConfigError::new(
                "AUDIT_WEBHOOK_FORMAT",
                format!("{other:?} is neither json nor slack"),
            ));
        }
    };
    let webhook_secret = raw.get("AUDIT_WEBHOOK_SECRET").map(str::to_string);
    match &webhook_secret {
        Some(secret) if secret.len() < MIN_SECRET_LEN => {
            return Err(ConfigError::new(
                "AUDIT_WEBHOOK_SECRET",
                format!("must be at least {MIN_SECRET_LEN} characters"),
            ));
        }
        None if !webhooks.is_empty() && webhook_format == WebhookFormat::Json => {
            return Err(ConfigError::new(
                "AUDIT_WEBHOOK_SECRET",
                "required with AUDIT_WEBHOOK_URL: receivers check the signature with it",
            ));
        }
        _ => {}
    }
    let webhook_timeout = raw
        .duration("AUDIT_WEBHOOK_TIMEOUT", 10)?
        .max(Duration::from_secs(1));
    let webhook_claim_idle = raw.duration("AUDIT_WEBHOOK_CLAIM_IDLE", 60)?;
    if webhook_claim_idle <= webhook_timeout {
        return Err(ConfigError::new(
            "AUDIT_WEBHOOK_CLAIM_IDLE",
            "must be longer than AUDIT_WEBHOOK_TIMEOUT (a delivery in progress is never taken over)",
        ));
    }
    let level = raw.get("AUDIT_WEBHOOK_MIN_LEVEL").unwrap_or("warning");
    let webhook_min_level = Level::parse(level).ok_or_else(|| {
        ConfigError::new(
            "AUDIT_WEBHOOK_MIN_LEVEL",
            format!("{level:?} is not info, warning or critical"),
        )
    })?;
    Ok(AuditSettings {
        bounds: Bounds {
            enabled: raw.bool("AUDIT_ENABLED", true)?,
            max_events,
            retention,
        },
        log: raw.bool("LOG_AUDIT", false)?,
        usage: raw.bool("AUDIT_USAGE", true)?,
        usage_flush: raw
            .duration("AUDIT_USAGE_FLUSH", 5)?
            .max(Duration::from_secs(1)),
        refusal_interval: raw.duration("AUDIT_REFUSAL_INTERVAL", 10)?,
        webhooks,
        webhook_min_level,
        webhook_secret: webhook_secret.map(Secret::new),
        webhook_format,
        webhook_timeout,
        webhook_claim_idle,
    })
}
