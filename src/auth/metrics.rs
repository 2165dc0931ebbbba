//! Authorization-server metrics (DESIGN §7): tokens issued by grant, registrations, OAuth
//! errors by endpoint and code, upstream failures. No user or client labels.

use prometheus::{IntCounter, IntCounterVec};

use crate::service::MetricRegistry;

pub struct AuthMetrics {
    registry: MetricRegistry,
    pub tokens_issued: IntCounterVec,
    pub registrations: IntCounter,
    pub errors: IntCounterVec,
    pub upstream_failures: IntCounter,
    pub logins: IntCounter,
    pub mfa_failures: IntCounter,
    pub mfa_lockouts: IntCounter,
    pub redis_errors: IntCounter,
    /// Metadata-document fetches by result (`ok`, `refused`, `failed`, `stale`).
    pub cimd_fetches: IntCounterVec,
    /// Requests refused by a rate limit, by endpoint and key (`address`, `address_client`).
    pub rate_limited: IntCounterVec,
    /// Never-used registrations deleted to keep within `UNUSED_CLIENT_BUDGET`.
    pub unused_clients_evicted: IntCounter,
    /// Never-used registrations stored, as of the last registration.
    pub unused_clients: prometheus::IntGauge,
    /// Webhook delivery attempts by result (`delivered`, `failed`).
    pub webhook_deliveries: IntCounterVec,
    /// Events not yet delivered, per receiver (by its position in `AUDIT_WEBHOOK_URL`).
    pub webhook_backlog: prometheus::IntGaugeVec,
}

impl AuthMetrics {
    pub fn new() -> Self {
        let registry = MetricRegistry::new();
        Self {
            tokens_issued: registry.counters(
                "mcp_gateway_tokens_issued_total",
                "Access tokens issued, by grant type",
                &["grant"],
            ),
            registrations: registry.counter(
                "mcp_gateway_client_registrations_total",
                "Clients registered dynamically (RFC 7591)",
            ),
            errors: registry.counters(
                "mcp_gateway_oauth_errors_total",
                "OAuth errors returned, by endpoint and error code",
                &["endpoint", "error"],
            ),
            upstream_failures: registry.counter(
                "mcp_gateway_upstream_failures_total",
                "Failed exchanges with the upstream identity provider",
            ),
            logins: registry.counter(
                "mcp_gateway_logins_total",
                "Completed upstream logins that issued an authorization code",
            ),
            mfa_failures: registry.counter(
                "mcp_gateway_mfa_failures_total",
                "Wrong, replayed or malformed second-factor codes",
            ),
            mfa_lockouts: registry.counter(
                "mcp_gateway_mfa_lockouts_total",
                "Users or addresses locked out after repeated second-factor failures",
            ),
            redis_errors: registry.counter(
                "mcp_gateway_redis_errors_total",
                "Store operations that failed (Redis unreachable, timed out or refused)",
            ),
            cimd_fetches: registry.counters(
                "mcp_gateway_cimd_fetches_total",
                "Client ID Metadata Document fetches, by result (ok, refused, failed, stale: a cached copy served after a failed refetch)",
                &["result"],
            ),
            rate_limited: registry.counters(
                "mcp_gateway_rate_limited_total",
                "Requests refused with 429, by endpoint and limit key (address: all requests of a client address; address_client: failed requests of one client from one address)",
                &["endpoint", "key"],
            ),
            unused_clients_evicted: registry.counter(
                "mcp_gateway_unused_clients_evicted_total",
                "Registrations never used for a token, deleted (oldest first) to stay within UNUSED_CLIENT_BUDGET",
            ),
            unused_clients: registry.gauge(
                "mcp_gateway_unused_clients",
                "Registrations never used for a token, as counted at the last registration",
            ),
            webhook_deliveries: {
                let deliveries = registry.counters(
                    "mcp_gateway_audit_webhook_deliveries_total",
                    "Audit webhook delivery attempts, by result (delivered, failed)",
                    &["result"],
                );
                for result in ["delivered", "failed"] {
                    deliveries.with_label_values(&[result]);
                }
                deliveries
            },
            webhook_backlog: registry.gauges(
                "mcp_gateway_audit_webhook_backlog",
                "Audit events a webhook receiver has not been sent yet, by receiver (its position in AUDIT_WEBHOOK_URL)",
                &["receiver"],
            ),
            registry,
        }
    }

    /// Adds a collector another part owns (the store's security-events counter).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry.add(collector);
    }

    pub fn error(&self, endpoint: &str, code: &str) {
        self.errors.with_label_values(&[endpoint, code]).inc();
    }

    pub fn render(&self) -> String {
        self.registry.render()
    }
}

impl Default for AuthMetrics {
    fn default() -> Self {
        Self::new()
    }
}
