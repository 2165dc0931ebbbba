//! Authorization-server metrics (DESIGN §7): tokens issued by grant, registrations, OAuth
//! errors by endpoint and code, upstream failures. No user or client labels.

use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

pub struct AuthMetrics {
    registry: Registry,
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
}

impl AuthMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let tokens_issued = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_tokens_issued_total",
                "Access tokens issued, by grant type",
            ),
            &["grant"],
        )
        .expect("static metric definition");
        let registrations = IntCounter::new(
            "mcp_gateway_client_registrations_total",
            "Clients registered dynamically (RFC 7591)",
        )
        .expect("static metric definition");
        let errors = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_oauth_errors_total",
                "OAuth errors returned, by endpoint and error code",
            ),
            &["endpoint", "error"],
        )
        .expect("static metric definition");
        let upstream_failures = IntCounter::new(
            "mcp_gateway_upstream_failures_total",
            "Failed exchanges with the upstream identity provider",
        )
        .expect("static metric definition");
        let logins = IntCounter::new(
            "mcp_gateway_logins_total",
            "Completed upstream logins that issued an authorization code",
        )
        .expect("static metric definition");
        let mfa_failures = IntCounter::new(
            "mcp_gateway_mfa_failures_total",
            "Wrong, replayed or malformed second-factor codes",
        )
        .expect("static metric definition");
        let mfa_lockouts = IntCounter::new(
            "mcp_gateway_mfa_lockouts_total",
            "Users or addresses locked out after repeated second-factor failures",
        )
        .expect("static metric definition");
        let redis_errors = IntCounter::new(
            "mcp_gateway_redis_errors_total",
            "Store operations that failed (Redis unreachable, timed out or refused)",
        )
        .expect("static metric definition");
        let cimd_fetches = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_cimd_fetches_total",
                "Client ID Metadata Document fetches, by result (ok, refused, failed, stale: a cached copy served after a failed refetch)",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_rate_limited_total",
                "Requests refused with 429, by endpoint and limit key (address: all requests of a client address; address_client: failed requests of one client from one address)",
            ),
            &["endpoint", "key"],
        )
        .expect("static metric definition");
        let unused_clients_evicted = IntCounter::new(
            "mcp_gateway_unused_clients_evicted_total",
            "Registrations never used for a token, deleted (oldest first) to stay within UNUSED_CLIENT_BUDGET",
        )
        .expect("static metric definition");
        let unused_clients = prometheus::IntGauge::new(
            "mcp_gateway_unused_clients",
            "Registrations never used for a token, as counted at the last registration",
        )
        .expect("static metric definition");
        for c in [
            Box::new(redis_errors.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(cimd_fetches.clone()),
            Box::new(rate_limited.clone()),
            Box::new(unused_clients_evicted.clone()),
            Box::new(unused_clients.clone()),
            Box::new(mfa_failures.clone()),
            Box::new(mfa_lockouts.clone()),
            Box::new(tokens_issued.clone()),
            Box::new(registrations.clone()),
            Box::new(errors.clone()),
            Box::new(upstream_failures.clone()),
            Box::new(logins.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            tokens_issued,
            registrations,
            errors,
            upstream_failures,
            logins,
            mfa_failures,
            mfa_lockouts,
            redis_errors,
            cimd_fetches,
            rate_limited,
            unused_clients_evicted,
            unused_clients,
        }
    }

    pub fn error(&self, endpoint: &str, code: &str) {
        self.errors.with_label_values(&[endpoint, code]).inc();
    }

    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(4096);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for AuthMetrics {
    fn default() -> Self {
        Self::new()
    }
}
