//! The verify service's state and its decision: [`VerifyState`] holds what every decision
//! reads (settings, keys, caches, the store, metrics), and `VerifyState::decide` is the
//! ForwardAuth decision itself, DESIGN §2 steps 1–6 in that order, with its helpers (the
//! token check, the liveness check, the tool rule, the challenge's scope). The HTTP handler
//! around it is [`super::forward_auth`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use actix_web::http::header::{HeaderMap, USER_AGENT};

use crate::clock::SharedClock;
use crate::config::{FailureMode, Settings};
use crate::store::{Store, StoreError};
use crate::token::{KeySet, TokenError, ValidationPolicy, sha256_b64url, validate};

use super::cache::{Liveness, LivenessCache, Stamp, TokenCache, VerifiedToken};
use super::error::Denial;
use super::metrics::{Reason, VerifyMetrics};
use super::request::{self, Scheme, Target};

/// Everything a decision reads, shared by all workers.
pub struct VerifyState {
    pub settings: Settings,
    pub keys: Arc<KeySet>,
    pub validation: ValidationPolicy,
    pub tokens: TokenCache,
    pub liveness: LivenessCache,
    /// Whether the revocation subscription is established right now.
    pub feed_up: AtomicBool,
    /// Moves on with every feed interruption (and if revocations were ever forgotten too
    /// early); liveness stamps on cached tokens are valid only under the epoch they were made
    /// in. A single revocation does not move it: it is checked against the revoked set.
    pub liveness_epoch: Arc<AtomicU64>,
    /// Origin of the service's millisecond clock for cache stamps.
    pub started: Instant,
    pub store: Arc<dyn Store>,
    pub metrics: VerifyMetrics,
    pub clock: SharedClock,
    /// Who the client is: what a trusted proxy says in `X-Forwarded-For`.
    pub client_address: request::ClientAddress,
    /// Set on SIGTERM: not ready, connections closed after each response.
    pub draining: Arc<crate::service::Draining>,
    /// `FORWARD_UPSTREAM_TOKEN`: the header, and the key that opens the sealed tokens.
    pub upstream_token: Option<(actix_web::http::header::HeaderName, crate::seal::SecretBox)>,
    /// Usage counts and refusal events, handed to the audit writer off the request path.
    pub audit: super::audit::Recorder,
    /// The writer's end, taken by the server that runs the writer.
    pub audit_queue: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<super::audit::Sample>>>,
    /// DPoP proofs: the ones this replica accepted, until their window ends
    /// (`DPOP_REPLAY_CAPACITY`), and the server nonces (`DPOP_NONCE`).
    pub dpop: super::dpop::Dpop,
}

impl VerifyState {
    pub fn new(settings: Settings, store: Arc<dyn Store>, clock: SharedClock) -> Self {
        let validation = ValidationPolicy::new(settings.issuer.clone());
        let liveness_epoch = Arc::new(AtomicU64::new(0));
        let metrics = VerifyMetrics::new();
        metrics.register(Box::new(store.audit_sink().counter()));
        let (audit, audit_queue) =
            super::audit::Recorder::new(&settings.audit, metrics.audit_dropped.clone());
        Self {
            audit,
            audit_queue: std::sync::Mutex::new(audit_queue),
            keys: settings.keys.clone(),
            tokens: TokenCache::new(
                settings.verify_cache_capacity,
                clock.clone(),
                validation.leeway,
            ),
            liveness: LivenessCache::new(
                settings.verify_cache_capacity,
                settings.verify_cache_ttl,
                liveness_epoch.clone(),
            ),
            validation,
            feed_up: AtomicBool::new(false),
            liveness_epoch,
            started: Instant::now(),
            store,
            metrics,
            clock,
            client_address: request::ClientAddress::new(settings.trusted_proxies.clone()),
            draining: Arc::default(),
            dpop: super::dpop::Dpop::new(&settings),
            upstream_token: settings
                .upstream_token
                .enabled()
                .then(|| {
                    let name = actix_web::http::header::HeaderName::from_bytes(
                        settings.upstream_token.header.as_bytes(),
                    )
                    .ok()?;
                    Some((name, settings.upstream_sealer()?))
                })
                .flatten(),
            settings,
        }
    }
}

impl VerifyState {
    /// Milliseconds of the service clock at `at`.
    pub fn millis_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    pub fn now_ms(&self) -> u64 {
        self.millis_at(Instant::now())
    }

    /// Invalidates every liveness stamp (the feed was interrupted).
    pub fn advance_liveness_epoch(&self) {
        self.liveness_epoch.fetch_add(1, Ordering::AcqRel);
    }
}

impl VerifyState {
    pub(crate) async fn decide(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        peer: Option<std::net::IpAddr>,
        target: Option<&Target<'_>>,
        started: Instant,
    ) -> Result<Arc<VerifiedToken>, Denial> {
        let settings = &self.settings;
        let (scheme, token) = request::access_token(headers).ok_or(Denial::new(
            Reason::NoToken,
            "the request has no bearer token in the Authorization header",
        ))?;
        let verified = self.verified(token)?;
        if self.clock.now_unix() > verified.exp.saturating_add(self.validation.leeway) {
            return Err(Denial::new(Reason::Expired, "the token has expired"));
        }

        let Some(target) = target else {
            return Err(Denial::new(
                Reason::WrongAudience,
                "the request does not name a resource this gateway protects",
            ));
        };
        let audience_ok = verified.aud.iter().any(|aud| {
            target.is_resource(aud, &settings.resource_path)
                || (settings.accept_issuer_audience && **aud == *settings.issuer)
        });
        if !audience_ok {
            return Err(Denial::new(
                Reason::WrongAudience,
                "the token is not valid for this resource",
            ));
        }
        // RFC 9449 §7.1: a bound token only with a proof of its key, a proof only for one.
        match (scheme, verified.dpop_jkt()) {
            (Scheme::Bearer, None) => {}
            (Scheme::Bearer, Some(_)) => {
                return Err(Denial::new(
                    Reason::DpopRequired,
                    "the token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof",
                ));
            }
            (Scheme::Dpop, None) => {
                return Err(Denial::new(
                    Reason::InvalidDpopProof,
                    "the token is not DPoP-bound: send it as Authorization: Bearer",
                ));
            }
            (Scheme::Dpop, Some(jkt)) => {
                self.dpop
                    .check(headers, token, jkt, target, self.clock.now_unix())?
            }
        }

        match self.is_live(&verified, self.millis_at(started)).await {
            Ok(true) => {}
            Ok(false) => return Err(Denial::new(Reason::Revoked, "the token has been revoked")),
            Err(e) => {
                tracing::warn!(error = %e, "token liveness cannot be decided");
                return Err(Denial::new(
                    Reason::StoreUnavailable,
                    "the token's status cannot be checked right now; retry shortly",
                ));
            }
        }

        if let Some(bound) = verified.bind_ip() {
            let client = self.client_address.resolve(headers, peer);
            if bound.is_none() || client != bound {
                return Err(Denial::new(
                    Reason::BindingMismatch,
                    "the token is bound to another client address",
                ));
            }
        }
        if let Some(bound) = verified.bind_ua() {
            let ua = headers.get(USER_AGENT).map(|v| v.as_bytes()).unwrap_or(b"");
            if sha256_b64url(ua) != bound {
                return Err(Denial::new(
                    Reason::BindingMismatch,
                    "the token is bound to another user agent",
                ));
            }
        }
        if let Some(bound) = verified.cert_thumbprint()
            && self.client_address.client_cert(headers, peer).as_deref() != Some(bound)
        {
            return Err(Denial::new(
                Reason::BindingMismatch,
                "the token is bound to another client certificate",
            ));
        }
        // A client or a workload has no second factor to show: their admission is the
        // operator's (a created client, a trusted issuer's rules), made at /token.
        let is_user = verified.subject_type() == crate::token::SubjectType::User;
        if settings.mfa_required && is_user && !verified.has_otp {
            return Err(Denial::new(
                Reason::MfaRequired,
                "the token was issued without a second factor",
            ));
        }

        if is_user
            && settings.admission.is_configured()
            && !settings.admission.admits(&verified.who())
        {
            return Err(Denial::new(
                Reason::UserNotAllowed,
                "the user is not allowed to use this gateway",
            ));
        }
        let hierarchy = &settings.scope_hierarchy;
        let required: Vec<&str> = if settings.required_scopes.is_empty() {
            Vec::new()
        } else {
            settings
                .required_scopes
                .required_for(&target.host, target.path.as_deref())
        };
        let tool_scopes = if settings.tool_policy.is_empty() || !is_mcp_message(headers) {
            Vec::new()
        } else {
            self.tool_requirement(headers, body, &verified)?
        };
        let missing = required
            .iter()
            .chain(&tool_scopes)
            .any(|needed| !hierarchy.satisfies(verified.scopes(), needed));
        if missing {
            // A scope the user may not hold at all: a step-up could only end on the
            // authorization server's refusal, so the client is not invited to try.
            let entitlements = &settings.entitlements;
            if !entitlements.is_empty() {
                let who = verified.who();
                let hopeless = required
                    .iter()
                    .chain(&tool_scopes)
                    .filter(|needed| !hierarchy.satisfies(verified.scopes(), needed))
                    .any(|needed| !entitlements.allows(hierarchy, needed, &who));
                if hopeless {
                    return Err(Denial::new(
                        Reason::NotEntitled,
                        "the user is not entitled to a scope this request needs; ask the gateway's operator",
                    ));
                }
            }
            // Every scope the operation needs, in one challenge, so a step-up asks once.
            let mut all: Vec<&str> = required;
            for s in tool_scopes {
                if !all.contains(&s) {
                    all.push(s);
                }
            }
            return Err(Denial {
                reason: Reason::InsufficientScope,
                description: "the token lacks a scope this resource requires",
                scope: Some(all.join(" ")),
                jsonrpc_code: None,
                dpop_nonce: None,
            });
        }
        if self.upstream_token.is_some() && settings.upstream_token.forwards_to(&target.host) {
            self.load_upstream_token(&verified).await?;
        }
        Ok(verified)
    }

    /// The user's upstream access token for this MCP server: read from the token's record
    /// once, opened with the key it was sealed with, then kept with the cached token.
    async fn load_upstream_token(&self, verified: &VerifiedToken) -> Result<(), Denial> {
        let Some((_, sealer)) = &self.upstream_token else {
            return Ok(());
        };
        let expires_at = match verified.upstream_token_state() {
            Some(expires_at) => expires_at,
            None => {
                let record = self.store.token(&verified.jti).await.map_err(|e| {
                    tracing::warn!(error = %e, "the upstream token cannot be read");
                    Denial::new(
                        Reason::StoreUnavailable,
                        "the token's status cannot be checked right now; retry shortly",
                    )
                })?;
                match record.and_then(|r| r.upstream) {
                    None => verified.set_upstream_token(None),
                    Some(sealed) => {
                        let Some(session) =
                            crate::records::UpstreamSession::open(sealer, &verified.jti, &sealed)
                        else {
                            // Sealed with another key (UPSTREAM_TOKEN_KEY differs from auth's,
                            // or changed): never pass without it; the client's refresh or a
                            // new login mends it.
                            tracing::warn!(
                                "an upstream token cannot be opened: is UPSTREAM_TOKEN_KEY the authorization server's?"
                            );
                            return Err(Denial::new(
                                Reason::Expired,
                                "the identity provider's token for this server cannot be read; sign in again",
                            ));
                        };
                        verified.set_upstream_token(Some((
                            session.access_token.as_str(),
                            session.expires_at,
                        )))
                    }
                }
            }
        };
        if expires_at.is_some_and(|at| self.clock.now_unix() >= at) {
            return Err(Denial::new(
                Reason::Expired,
                "the identity provider's token for this server has expired; refresh",
            ));
        }
        Ok(())
    }

    /// The scopes the per-tool policy requires of this request's calls; a refusal when the
    /// request cannot be read, names no tool where a rule needs one, or the user is not one
    /// a rule admits.
    fn tool_requirement<'p>(
        &'p self,
        headers: &HeaderMap,
        body: &[u8],
        verified: &VerifiedToken,
    ) -> Result<Vec<&'p str>, Denial> {
        let policy = &self.settings.tool_policy;
        // Caddy's forward_auth and nginx's auth_request send no body: the headers alone could
        // lie to a server that never compares them with its body (MCP before 2026-07-28).
        if !self.settings.tool_policy_trust_headers && body.iter().all(u8::is_ascii_whitespace) {
            return Err(Denial::new(
                Reason::ToolNotAllowed,
                "the request's body did not reach the authorization check, and a tool rule may apply (forward the body, or set TOOL_POLICY_TRUST_HEADERS=true if the MCP server refuses an Mcp-Method/Mcp-Name that differs from its body)",
            ));
        }
        let calls = super::mcp::calls(headers, body).map_err(|e| {
            let (description, code) = match e {
                super::mcp::CallError::Mismatch(d) => (d, super::error::JSONRPC_HEADER_MISMATCH),
                super::mcp::CallError::Unreadable(d) => (d, super::error::JSONRPC_PARSE_ERROR),
            };
            Denial {
                reason: Reason::BadRequest,
                description,
                scope: None,
                jsonrpc_code: Some(code),
                dpop_nonce: None,
            }
        })?;
        // One requirement a call (every rule's when the calls are unknown), none collected.
        let mut unknown = calls.is_none().then_some(None);
        let mut known = calls.iter().flatten().map(|c| {
            Some(crate::policy::Call {
                method: &c.method,
                name: c.name.as_deref(),
            })
        });
        let mut scopes: Vec<&'p str> = Vec::new();
        while let Some(call) = unknown.take().or_else(|| known.next()) {
            let requirement = policy.requirement(call);
            if requirement.name_missing {
                return Err(Denial::new(
                    Reason::ToolNotAllowed,
                    "the request does not say which tool it calls (send Mcp-Method and Mcp-Name, or forward the body), and a rule needs to know",
                ));
            }
            let who = verified.who();
            if requirement.who.iter().any(|w| !w.admits(&who)) {
                return Err(Denial::new(
                    Reason::ToolNotAllowed,
                    "this user may not call this tool",
                ));
            }
            for s in requirement.scopes {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
        }
        Ok(scopes)
    }

    /// The verified token from the cache, or validated now and cached.
    fn verified(&self, token: &str) -> Result<Arc<VerifiedToken>, Denial> {
        if let Some(hit) = self.tokens.get(token) {
            self.metrics.token_cache.hit.inc();
            return Ok(hit);
        }
        self.metrics.token_cache.miss.inc();
        let claims = validate(token, &self.keys, &self.validation, self.clock.now_unix())
            .map_err(token_denial)?;
        let verified = Arc::new(VerifiedToken::new(
            claims,
            token,
            self.settings.forward_access_token,
            &self.tokens.strings,
        ));
        self.tokens.insert(token, verified.clone());
        Ok(verified)
    }

    /// Whether the allow-list entry for the token's `jti` exists. On a warm token this is two
    /// atomic loads (the stamp), plus one set lookup the first time after revocations were
    /// heard; otherwise the liveness cache, trusted only while the revocation feed is up or
    /// when the operator chose to serve cached positives, and last the store.
    async fn is_live(&self, verified: &VerifiedToken, now_ms: u64) -> Result<bool, StoreError> {
        let epoch = self.liveness_epoch.load(Ordering::Acquire);
        let revocations = self.liveness.revocations();
        let jti = &*verified.jti;
        match verified.stamp(epoch, revocations, now_ms) {
            Stamp::Live => {
                self.metrics.liveness_cache.hit.inc();
                return Ok(true);
            }
            Stamp::Recheck => {
                self.metrics.liveness_cache.hit.inc();
                if self.liveness.revoked_recently(jti) {
                    return Ok(false);
                }
                verified.restamp(revocations);
                return Ok(true);
            }
            Stamp::Stale => {}
        }
        let cached_mode = self.settings.failure_mode == FailureMode::Cached;
        let cache_trusted =
            self.liveness.is_enabled() && (self.feed_up.load(Ordering::Relaxed) || cached_mode);
        let answer = if !cache_trusted {
            self.metrics.liveness_cache.miss.inc();
            self.store
                .token_is_live(jti)
                .await
                .inspect_err(|_| self.metrics.redis_errors.inc())
                .map(|live| Liveness {
                    live: live && !self.liveness.revoked_recently(jti),
                    read_at_ms: now_ms,
                })
        } else {
            match self.liveness.get(jti).await {
                Some(hit) => {
                    self.metrics.liveness_cache.hit.inc();
                    Ok(hit)
                }
                None => {
                    self.metrics.liveness_cache.miss.inc();
                    self.liveness
                        .get_or_load(jti, &self.store, now_ms)
                        .await
                        .inspect_err(|_| self.metrics.redis_errors.inc())
                }
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            // Serving cached positives through an outage: what the store said less than a
            // liveness TTL ago, unless a revocation was heard since.
            Err(_) if cached_mode && verified.recently_live(now_ms) => {
                return Ok(!self.liveness.revoked_recently(jti));
            }
            Err(e) => return Err(e),
        };
        // Stamped only while revocations can be heard: a stamp must never hide one.
        if answer.live && self.liveness.is_enabled() && self.feed_up.load(Ordering::Relaxed) {
            let ttl_ms = self.settings.verify_cache_ttl.as_millis() as u64;
            verified.stamp_live(epoch, revocations, answer.read_at_ms.saturating_add(ttl_ms));
        }
        Ok(answer.live)
    }

    /// The `scope` of a challenge: what this route requires, else what the resource supports.
    pub(crate) fn challenge_scope(&self, target: Option<&Target<'_>>) -> Option<String> {
        let required = match target {
            Some(t) => self
                .settings
                .required_scopes
                .required_for(&t.host, t.path.as_deref()),
            None => Vec::new(),
        };
        let scope = if required.is_empty() {
            self.settings.scopes_supported.join(" ")
        } else {
            required.join(" ")
        };
        (!scope.is_empty()).then_some(scope)
    }
}

/// Whether the proxied request carries JSON-RPC messages: a POST (or a request whose method
/// the proxy did not say, which must not skip a rule).
fn is_mcp_message(headers: &HeaderMap) -> bool {
    headers
        .get(crate::forwarded::X_FORWARDED_METHOD)
        .is_none_or(|m| m.as_bytes().eq_ignore_ascii_case(b"POST"))
}

fn token_denial(error: TokenError) -> Denial {
    let (reason, description) = match error {
        TokenError::Malformed => (Reason::Malformed, "the token is not a well-formed JWT"),
        TokenError::WrongType => (Reason::Malformed, "the token is not an access token (typ)"),
        TokenError::MissingJti => (Reason::Malformed, "the token has no jti"),
        TokenError::AlgorithmNotAllowed => (
            Reason::BadSignature,
            "the token's signing algorithm is not accepted",
        ),
        TokenError::UnknownKid => (Reason::UnknownKid, "the token's signing key is unknown"),
        TokenError::BadSignature => (Reason::BadSignature, "the token signature is invalid"),
        TokenError::WrongIssuer => (
            Reason::WrongIssuer,
            "the token was issued by another issuer",
        ),
        TokenError::Expired => (Reason::Expired, "the token has expired"),
        TokenError::NotYetValid => (Reason::Expired, "the token is not valid yet"),
        TokenError::NoSigningKey | TokenError::Signing(_) => {
            (Reason::BadSignature, "the token cannot be verified")
        }
    };
    Denial::new(reason, description)
}
