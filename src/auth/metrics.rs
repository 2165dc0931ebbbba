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
        for c in [
            Box::new(redis_errors.clone()) as Box<dyn prometheus::core::Collector>,
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
