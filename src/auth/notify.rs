//! Webhooks (`AUDIT_WEBHOOK_URL`): the events at or above `AUDIT_WEBHOOK_MIN_LEVEL`, posted to
//! each receiver, signed, at least once.
//!
//! Each receiver is a consumer group on the trail (`webhook:{hash of its URL}`: the URL itself
//! is a credential and never named), and every auth replica is one consumer of each group:
//! Redis hands each new event to one replica, so replicas never deliver one event twice in
//! normal operation. An event is acknowledged only after the receiver answered 2xx; a failure
//! is retried by the same replica with backoff (the receiver may be down for an hour: the
//! trail keeps the events), and what a stopped replica left unacknowledged is taken over by
//! another after `AUDIT_WEBHOOK_CLAIM_IDLE`.
//!
//! The signature (`X-Gateway-Signature: t={unix},v1={hex}`) is HMAC-SHA256 under
//! `AUDIT_WEBHOOK_SECRET` over `{t}.{body}`, as Stripe's and GitHub's are checked: recompute,
//! compare in constant time, and refuse an old `t`.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::Stored;
use crate::clock::SharedClock;
use crate::config::{AuditSettings, WebhookFormat};
use crate::store::{GroupRead, Store};

/// Entries read per round.
const BATCH: usize = 20;
/// How often an idle consumer looks for new events.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at a receiver that fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the backlog gauge is refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(15);

pub const SIGNATURE_HEADER: &str = "x-gateway-signature";
pub const EVENT_ID_HEADER: &str = "x-gateway-event-id";
pub const EVENT_TYPE_HEADER: &str = "x-gateway-event-type";

/// The consumer group of a receiver: a hash of its URL, never the URL.
pub fn group_of(url: &str) -> String {
    format!(
        "webhook:{}",
        &crate::token::sha256_b64url(url.as_bytes())[..16]
    )
}

/// `t={unix},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`.
pub fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(unix.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={unix},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// What the receivers need to run.
pub struct Webhooks {
    pub settings: AuditSettings,
    pub issuer: String,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    pub deliveries: prometheus::IntCounterVec,
    pub backlog: prometheus::IntGaugeVec,
}

/// Starts one delivery task per receiver.
pub fn spawn(webhooks: Webhooks) -> Vec<tokio::task::JoinHandle<()>> {
    let webhooks = Arc::new(webhooks);
    let consumer = uuid::Uuid::new_v4().to_string();
    (0..webhooks.settings.webhooks.len())
        .map(|index| tokio::spawn(deliver(webhooks.clone(), index, consumer.clone())))
        .collect()
}

async fn deliver(webhooks: Arc<Webhooks>, index: usize, consumer: String) {
    let url = webhooks.settings.webhooks[index].expose().clone();
    let group = group_of(&url);
    let receiver = index.to_string();
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(webhooks.settings.webhook_timeout)
        .user_agent(concat!("mcp-gateway-auth/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, receiver, "webhook client cannot be built");
            return;
        }
    };
    let mut failures: u32 = 0;
    let mut backlog_at = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= backlog_at {
            if let Ok(n) = webhooks.store.audit_backlog(&group).await {
                webhooks
                    .backlog
                    .with_label_values(&[&receiver])
                    .set(n as i64);
            }
            backlog_at = tokio::time::Instant::now() + BACKLOG_EVERY;
        }
        let read = GroupRead {
            group: &group,
            consumer: &consumer,
            count: BATCH,
            claim_idle: webhooks.settings.webhook_claim_idle,
        };
        let entries = match webhooks.store.audit_deliveries(&read).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!(error = %e, receiver, "webhook: the trail cannot be read");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if entries.is_empty() {
            tokio::time::sleep(POLL).await;
            continue;
        }
        let mut done = Vec::new();
        let mut failed = false;
        for stored in &entries {
            if stored.event.level < webhooks.settings.webhook_min_level {
                done.push(stored.id.clone());
                continue;
            }
            match post(&webhooks, &http, &url, stored).await {
                Ok(()) => {
                    webhooks.deliveries.with_label_values(&["delivered"]).inc();
                    done.push(stored.id.clone());
                }
                Err(why) => {
                    webhooks.deliveries.with_label_values(&["failed"]).inc();
                    tracing::warn!(receiver, reason = %why, "webhook delivery failed; retrying");
                    failed = true;
                    break;
                }
            }
        }
        if let Err(e) = webhooks.store.audit_ack(&group, &done).await {
            // Delivered but not marked: sent again later (receivers dedupe by event id).
            tracing::warn!(error = %e, receiver, "webhook: deliveries not acknowledged");
        }
        if failed {
            // The gauge says at once that this receiver is behind.
            backlog_at = tokio::time::Instant::now();
            failures = failures.saturating_add(1);
            let wait = Duration::from_secs(1 << failures.min(5)).min(MAX_BACKOFF);
            let jitter = Duration::from_millis(rand::random::<u64>() % 500);
            tokio::time::sleep(wait + jitter).await;
        } else {
            failures = 0;
        }
    }
}

/// One attempt: 2xx is delivered, anything else (or no answer) is a failure.
async fn post(
    webhooks: &Webhooks,
    http: &reqwest::Client,
    url: &str,
    stored: &Stored,
) -> Result<(), String> {
    let body = body(webhooks, stored);
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, &stored.id)
        .header(EVENT_TYPE_HEADER, &stored.event.kind);
    if let Some(secret) = &webhooks.settings.webhook_secret {
        request = request.header(
            SIGNATURE_HEADER,
            signature(
                secret.expose().as_bytes(),
                webhooks.clock.now_unix(),
                body.as_bytes(),
            ),
        );
    }
    let answer = request.body(body).send().await.map_err(|e| {
        // The URL may be a credential: the error's own text names it.
        if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            "request failed".to_string()
        }
    })?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", answer.status().as_u16()))
    }
}

/// The body a receiver gets: the event (with its id, time and our issuer), or Slack's
/// `{"text": …}`.
fn body(webhooks: &Webhooks, stored: &Stored) -> String {
    let mut json = stored.to_json();
    if let Some(map) = json.as_object_mut() {
        map.insert("issuer".into(), webhooks.issuer.clone().into());
    }
    match webhooks.settings.webhook_format {
        WebhookFormat::Json => json.to_string(),
        WebhookFormat::Slack => {
            serde_json::json!({ "text": slack_text(webhooks, stored) }).to_string()
        }
    }
}

fn slack_text(webhooks: &Webhooks, stored: &Stored) -> String {
    let e = &stored.event;
    let mut text = format!("[{}] {}", e.level.as_str(), e.kind);
    if let Some(user) = &e.user {
        text.push_str(&format!(" — user {user}"));
    }
    if let Some(client) = &e.client_id {
        text.push_str(&format!(", client {client}"));
    }
    if let Some(reason) = &e.reason {
        text.push_str(&format!(": {reason}"));
    }
    if let Some(n) = e.detail.get("count") {
        text.push_str(&format!(" ({n} revoked)"));
    }
    text.push_str(&format!(" · {}", webhooks.issuer));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        // Known answer, computed with Python's hmac module:
        // hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn a_group_never_names_its_url() {
        let group = group_of("https://hooks.slack.com/services/T0/B0/secret");
        assert!(group.starts_with("webhook:"));
        assert!(!group.contains("secret"));
        assert_eq!(group.len(), "webhook:".len() + 16);
    }
}
