//! Prometheus metrics of the verify service (DESIGN §7). Handles are resolved once at start so
//! the hot path only touches atomics; labels never carry a user, a token or a path.

use prometheus::{Histogram, IntCounter, IntGauge};

use crate::service::MetricRegistry;

/// Why a request was allowed or refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok,
    NoToken,
    Malformed,
    BadSignature,
    UnknownKid,
    WrongIssuer,
    Expired,
    WrongAudience,
    Revoked,
    BindingMismatch,
    MfaRequired,
    InsufficientScope,
    UserNotAllowed,
    ToolNotAllowed,
    /// A scope the call needs is one the user may not hold (`SCOPE_GRANTS`).
    NotEntitled,
    BadRequest,
    StoreUnavailable,
    /// A DPoP proof that is missing a part, does not match the request or the token's key, or
    /// was used before (RFC 9449 §7.1).
    InvalidDpopProof,
    /// A DPoP-bound token presented as a bearer token.
    DpopRequired,
    /// `DPOP_NONCE`: the proof lacks a current server nonce; the answer gives one.
    UseDpopNonce,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::Ok,
        Reason::NoToken,
        Reason::Malformed,
        Reason::BadSignature,
        Reason::UnknownKid,
        Reason::WrongIssuer,
        Reason::Expired,
        Reason::WrongAudience,
        Reason::Revoked,
        Reason::BindingMismatch,
        Reason::MfaRequired,
        Reason::InsufficientScope,
        Reason::UserNotAllowed,
        Reason::ToolNotAllowed,
        Reason::NotEntitled,
        Reason::BadRequest,
        Reason::StoreUnavailable,
        Reason::InvalidDpopProof,
        Reason::DpopRequired,
        Reason::UseDpopNonce,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::NoToken => "no_token",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKid => "unknown_kid",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::Expired => "expired",
            Reason::WrongAudience => "wrong_audience",
            Reason::Revoked => "revoked",
            Reason::BindingMismatch => "binding_mismatch",
            Reason::MfaRequired => "mfa_required",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::UserNotAllowed => "user_not_allowed",
            Reason::ToolNotAllowed => "tool_not_allowed",
            Reason::NotEntitled => "not_entitled",
            Reason::BadRequest => "bad_request",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::InvalidDpopProof => "invalid_dpop_proof",
            Reason::DpopRequired => "dpop_required",
            Reason::UseDpopNonce => "use_dpop_nonce",
        }
    }

    /// The `outcome` label.
    pub fn outcome(self) -> &'static str {
        match self {
            Reason::Ok => "allowed",
            Reason::StoreUnavailable => "unavailable",
            _ => "denied",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Sub-millisecond resolution where the hot path lives, up to a second for cold misses.
pub const DECISION_BUCKETS: &[f64] = &[
    0.000_000_5,
    0.000_001,
    0.000_002,
    0.000_003,
    0.000_005,
    0.000_01,
    0.000_015,
    0.000_02,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
];

pub struct CacheCounters {
    pub hit: IntCounter,
    pub miss: IntCounter,
}

pub struct VerifyMetrics {
    registry: MetricRegistry,
    decisions: Vec<IntCounter>,
    pub decision_seconds: Histogram,
    pub token_cache: CacheCounters,
    pub liveness_cache: CacheCounters,
    pub redis_errors: IntCounter,
    pub feed_up: IntGauge,
    pub feed_reconnects: IntCounter,
    pub revocations_received: IntCounter,
    /// Decisions the audit writer never saw (its queue was full).
    pub audit_dropped: IntCounter,
    /// Connections accepted on the plain listener (HTTP/1.1 and h2c).
    pub connections_plain: IntCounter,
    /// Connections accepted on the TLS listener (HTTP/2 or HTTP/1.1 by ALPN).
    pub connections_tls: IntCounter,
    /// HTTP/2 connections told to go away (draining, or older than the maximum age).
    pub goaways: IntCounter,
    /// Looks at the certificate files that found them renewed, and that found them unusable.
    pub tls_reloaded: IntCounter,
    pub tls_reload_failed: IntCounter,
}

impl VerifyMetrics {
    pub fn new() -> Self {
        let registry = MetricRegistry::new();
        let decisions_vec = registry.counters(
            "mcp_gateway_verify_decisions_total",
            "ForwardAuth decisions by outcome and reason",
            &["outcome", "reason"],
        );
        let decisions = Reason::ALL
            .iter()
            .map(|r| decisions_vec.with_label_values(&[r.outcome(), r.as_str()]))
            .collect();
        let cache = registry.counters(
            "mcp_gateway_verify_cache_requests_total",
            "Verify cache lookups by cache and result",
            &["cache", "result"],
        );
        let counters = |name: &str| CacheCounters {
            hit: cache.with_label_values(&[name, "hit"]),
            miss: cache.with_label_values(&[name, "miss"]),
        };
        let connections = registry.counters(
            "mcp_gateway_verify_connections_total",
            "Connections accepted, by listener (plain: HTTP/1.1 and h2c; tls: h2 or HTTP/1.1)",
            &["listener"],
        );
        let reloads = registry.counters(
            "mcp_gateway_verify_tls_reloads_total",
            "Changes of VERIFY_TLS_CERT/VERIFY_TLS_KEY seen, by outcome (failed: the previous certificate stays)",
            &["outcome"],
        );
        Self {
            decisions,
            decision_seconds: registry.histogram(
                "mcp_gateway_verify_decision_duration_seconds",
                "Time to decide one /verify request, in seconds",
                DECISION_BUCKETS,
            ),
            token_cache: counters("token"),
            liveness_cache: counters("liveness"),
            redis_errors: registry.counter(
                "mcp_gateway_redis_errors_total",
                "Store operations that failed (Redis unreachable, timed out or refused)",
            ),
            feed_up: registry.gauge(
                "mcp_gateway_revocation_feed_up",
                "1 while the revocation subscription is established",
            ),
            feed_reconnects: registry.counter(
                "mcp_gateway_revocation_feed_reconnects_total",
                "Times the revocation subscription was lost",
            ),
            revocations_received: registry.counter(
                "mcp_gateway_revocations_received_total",
                "Revocation messages received from the feed",
            ),
            audit_dropped: registry.counter(
                "mcp_gateway_audit_dropped_total",
                "Decisions not counted in usage nor recorded: the audit writer's queue was full",
            ),
            connections_plain: connections.with_label_values(&["plain"]),
            connections_tls: connections.with_label_values(&["tls"]),
            goaways: registry.counter(
                "mcp_gateway_verify_http2_goaways_total",
                "HTTP/2 connections told to go away (GOAWAY): verify draining, or the connection older than VERIFY_H2_MAX_CONNECTION_AGE",
            ),
            tls_reloaded: reloads.with_label_values(&["reloaded"]),
            tls_reload_failed: reloads.with_label_values(&["failed"]),
            registry,
        }
    }

    /// Adds a collector another part owns (the store's security-events counter).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry.add(collector);
    }

    pub fn record(&self, reason: Reason, seconds: f64) {
        self.decisions[reason.index()].inc();
        self.decision_seconds.observe(seconds);
    }

    pub fn decisions(&self, reason: Reason) -> u64 {
        self.decisions[reason.index()].get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

impl Default for VerifyMetrics {
    fn default() -> Self {
        Self::new()
    }
}
