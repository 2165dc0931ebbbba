//! `mcp-gateway-auth`: the OAuth 2.1 authorization server MCP clients log in through
//! (DESIGN §3). Every file of this folder, by what it serves:
//!
//! | module | endpoints or role | standards |
//! |---|---|---|
//! | [`metadata`] | `/.well-known/oauth-authorization-server`, `/.well-known/openid-configuration`, `/jwks` | RFC 8414, RFC 7517 |
//! | [`register`] | `POST /register`, `GET/PUT/DELETE /register/{client_id}` | RFC 7591, RFC 7592 |
//! | [`client_metadata`] | client metadata rules, for registrations and documents alike | RFC 7591 §2 |
//! | [`cimd`] | Client ID Metadata Documents: SSRF-safe fetch ([`cimd::fetch`], [`cimd::address`]), cache | draft-ietf-oauth-client-id-metadata-document |
//! | [`authorize`] | `GET /authorize`, `GET/POST /consent` | OAuth 2.1 §4.1, RFC 7636, RFC 8707, RFC 9207 |
//! | [`consent`] | what a user approved for a client | — |
//! | [`params`] | PKCE challenge and resource, parsed at the edge | RFC 7636, RFC 8707 |
//! | [`callback`] | `GET /login`, `GET /login/{provider}`, `GET /callback/{provider}` (GitHub's `/callback`) | — |
//! | [`upstream`] | the identity providers: [`upstream::github`], [`upstream::oidc`], [`upstream::dev`] | OpenID Connect Core 1.0 |
//! | [`login`] | the end of every login: allow-list, entitlements, account pin, our code | — |
//! | [`identity`] | which upstream account a login name belongs to | — |
//! | [`mfa`] | `GET/POST /mfa`: TOTP enrolment and check | — |
//! | [`totp`] | TOTP codes, sealed secrets, recovery codes | RFC 6238 |
//! | [`session`] | CSRF, login and session cookies | — |
//! | [`token`] | `POST /token` (the provider's refresh in `token/upstream_refresh.rs`; `client_credentials` and the JWT bearer grant beside it) | OAuth 2.1 §4.1.3, §4.3, RFC 6749 §4.4, §5, RFC 7523 |
//! | [`trusted`] | assertions of trusted issuers: ID-JAGs ([`trusted::id_jag`]) and workload JWTs ([`trusted::workload`]) | draft-ietf-oauth-identity-assertion-authz-grant, RFC 7523 |
//! | [`client_auth`] | client authentication at `/token`, `/revoke`, `/introspect` | RFC 6749 §2.3 |
//! | [`assertion`] | `private_key_jwt` client assertions | RFC 7523 |
//! | [`jwks`] | which key of a JWK Set may have signed a JWT | RFC 7517, RFC 7518 |
//! | [`revoke`] | `POST /revoke`, `POST /introspect` | RFC 7009, RFC 7662 |
//! | [`ratelimit`] | per-address and per-/64 limits on the public endpoints | — |
//! | [`pages`] | `/error`, `/success`, the HTML layout | — |
//! | [`error`] | one error type and its status table | RFC 6749 §5.2, RFC 6750 §3 |
//! | [`metrics`] | the authorization server's metrics | — |

pub mod assertion;
pub mod authorize;
pub mod callback;
pub mod cimd;
pub mod client_auth;
pub mod client_metadata;
pub mod consent;
pub mod error;
pub mod identity;
pub mod jwks;
pub mod login;
pub mod metadata;
pub mod metrics;
pub mod mfa;
pub mod notify;
pub mod pages;
pub mod params;
pub mod ratelimit;
pub mod register;
pub mod revoke;
pub mod session;
pub mod token;
pub mod totp;
pub mod trusted;
pub mod upstream;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};

use crate::audit::{Actor, Event, Events, Kind};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::store::Store;

pub use error::OAuthError;
pub use upstream::Upstreams;

/// Where auth listens unless `LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8080";

pub use crate::records::{CODE_LIFETIME, CONSENT_LIFETIME, PENDING_LIFETIME, UpstreamUser};

/// Everything the handlers share.
pub struct AuthState {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    pub upstream: Upstreams,
    pub metrics: metrics::AuthMetrics,
    pub limits: ratelimit::RateLimits,
    pub pages: pages::Pages,
    /// Key for the browser-session cookie that lets a returning user skip consent.
    pub cookie_key: crate::seal::Derived,
    /// Encrypts TOTP secrets at rest.
    pub mfa_box: crate::seal::SecretBox,
    /// Encrypts upstream sessions at rest (`UPSTREAM_TOKEN_KEY`, else from the signing key);
    /// verify opens the access tokens it forwards with the same key.
    pub upstream_box: crate::seal::SecretBox,
    /// `DPOP_NONCE`: the server nonces DPoP proofs at `/token` must carry.
    pub dpop_nonces: Option<crate::token::dpop::Nonces>,
    /// Who the client is: the peer, or what a trusted proxy says.
    pub client_address: crate::forwarded::ClientAddress,
    /// Set on SIGTERM: not ready, connections closed after each response.
    pub draining: Arc<crate::service::Draining>,
    /// Clients whose `client_id` is the URL of their metadata document.
    pub documents: cimd::Documents,
    /// The providers' refresh answers this replica could not keep in the store (sealed, by
    /// store key): a retry must not present a rotated upstream refresh token again.
    pub upstream_answers: moka::sync::Cache<String, String>,
    /// Refusal events, at most one per client and reason per `AUDIT_REFUSAL_INTERVAL`.
    pub refusals: crate::audit::Limiter,
}

impl AuthState {
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: SharedClock,
        upstream: Upstreams,
    ) -> std::io::Result<Self> {
        // Derived from the signing key: sessions survive restarts and work on every replica.
        let cookie_key = match settings.keys.signing_key().and_then(|k| k.encoding()) {
            Some(key) => crate::seal::Derived::root("mcp-gateway session cookie", key.as_bytes()),
            None => crate::seal::Derived::root(
                "mcp-gateway session cookie",
                &rand::random::<[u8; 32]>(),
            ),
        };
        let mfa_box = match &settings.mfa.encryption_key {
            Some(key) => crate::seal::SecretBox::new(*key.expose()),
            None => cookie_key.child("mcp-gateway totp secrets").sealer(),
        };
        let metrics = metrics::AuthMetrics::new();
        metrics.register(Box::new(store.audit_sink().counter()));
        let refusals = crate::audit::Limiter::new(settings.audit.refusal_interval);
        let documents = cimd::Documents::new(
            &settings.cimd,
            &settings.scopes_supported,
            metrics.cimd_fetches.clone(),
        )
        .map_err(|e| std::io::Error::other(format!("CIMD: {e}")))?
        .with_audit(store.clone());
        let upstream_box = settings
            .upstream_sealer()
            .unwrap_or_else(|| cookie_key.child("mcp-gateway upstream tokens").sealer());
        Ok(Self {
            dpop_nonces: settings.dpop_nonces(),
            upstream_box,
            documents,
            mfa_box,
            client_address: crate::forwarded::ClientAddress::new(settings.trusted_proxies.clone()),
            draining: Arc::default(),
            limits: ratelimit::RateLimits::new(&settings, metrics.rate_limited.clone()),
            settings,
            store,
            clock,
            upstream,
            metrics,
            pages: pages::Pages::new(),
            cookie_key,
            refusals,
            upstream_answers: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.settings.issuer)
    }

    /// Whether our own pages are served over HTTPS (cookies then get `Secure`).
    pub fn secure_cookies(&self) -> bool {
        self.settings.issuer.starts_with("https://")
    }

    /// The client's address: the peer, or behind a trusted proxy the right-most untrusted
    /// `X-Forwarded-For` hop.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.client_address
            .resolve(req.headers(), req.peer_addr().map(|a| a.ip()))
    }

    /// An audit event by `actor`, stamped with the request's client address and User-Agent.
    pub fn event(&self, kind: Kind, actor: Actor, req: &HttpRequest) -> Event {
        Event::new(kind, actor).ip(self.client_ip(req)).user_agent(
            req.headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        )
    }

    /// An event by the client `client_id`, about it.
    pub fn client_event(&self, kind: Kind, client_id: &str, req: &HttpRequest) -> Event {
        self.event(kind, Actor::Client(client_id.to_string()), req)
            .client(client_id)
    }

    /// Ends a refresh grant (its family, with every token it issued), writing `revoked` when
    /// there was something to end.
    pub async fn revoke_grant(&self, family_id: &str, revoked: Event) -> Result<(), OAuthError> {
        let events = Events::none().on(crate::audit::outcome::REVOKED, revoked);
        self.store
            .revoke_family(family_id, self.settings.refresh_token_lifetime, &events)
            .await?;
        Ok(())
    }

    /// Writes events that go with no other change (a refusal): a store that cannot take
    /// them is logged, and the request goes on.
    pub async fn record(&self, events: Events) {
        if let Err(e) = self.store.append_events(&events).await {
            tracing::warn!(error = %e, "cannot write audit events");
        }
    }

    /// Records a refusal of `req` that says more than the generic one would.
    pub async fn record_refusal(&self, req: &HttpRequest, events: Events) {
        refusal_recorded(req);
        self.record(events).await;
    }

    /// Records a refusal at most once per `client_id` and `reason` per
    /// `AUDIT_REFUSAL_INTERVAL` (the ones held back are counted in the next).
    pub async fn record_limited(&self, client_id: &str, reason: &str, event: Event) {
        let key = format!("{client_id}\0{reason}");
        if let Some(held) = self.refusals.admit(&key, self.clock.now_millis()) {
            let event = if held > 0 {
                event.detail("suppressed", held)
            } else {
                event
            };
            self.record(Events::one(event)).await;
        }
    }

    /// The network the client is counted as by every per-address limit (rate limits, the
    /// unused-client budget, MFA lockouts): its /64 on IPv6, its address on IPv4, as
    /// `RATE_LIMIT_IPV6_PREFIX`/`RATE_LIMIT_IPV4_PREFIX` say.
    pub fn client_network(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.client_ip(req)
            .map(|ip| self.settings.rate_limits.network(ip))
    }
}

/// Marks `req` as refused with its own audit event, so the endpoint's generic refusal
/// event is not written too.
pub fn refusal_recorded(req: &HttpRequest) {
    req.extensions_mut().insert(RefusalRecorded);
}

pub fn refusal_was_recorded(req: &HttpRequest) -> bool {
    req.extensions().get::<RefusalRecorded>().is_some()
}

#[derive(Clone, Copy)]
struct RefusalRecorded;

/// Mounts the authorization server's routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AuthState>) {
    cfg.app_data(state)
        .app_data(web::PayloadConfig::new(64 * 1024))
        .app_data(web::FormConfig::default().limit(16 * 1024))
        .configure(metadata::routes)
        .configure(register::routes)
        .configure(authorize::routes)
        .configure(callback::routes)
        .configure(mfa::routes)
        .configure(token::routes)
        .configure(revoke::routes)
        .configure(pages::routes)
        .route("/health", web::get().to(crate::service::health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics_text))
        .route("/unavailable", web::get().to(verify_unavailable));
}

/// The answer a proxy gives in verify's place when verify cannot be reached (Traefik's
/// `errors` middleware fetches it: Traefik itself would answer an empty 500). The same shape
/// as verify's own 503, so MCP clients retry instead of starting a new login.
async fn verify_unavailable() -> HttpResponse {
    actix_web::ResponseError::error_response(&OAuthError::temporarily_unavailable(
        "the authorization check is unavailable; retry shortly",
    ))
}

/// Endpoints browser-based MCP clients call cross-origin. Never the HTML pages: a page
/// readable cross-origin would leak its CSRF token.
fn cors_path(path: &str) -> bool {
    matches!(
        path,
        "/token" | "/register" | "/revoke" | "/introspect" | "/jwks"
    ) || path.starts_with("/register/")
        || path.starts_with("/.well-known/")
}

/// CORS for [`cors_path`]: `*` (no cookies are involved there) and preflight answers.
fn cors<S>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse, actix_web::Error>> + use<S>
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    use actix_web::http::header::{
        ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, HeaderValue,
    };
    use futures_util::future::{Either, ready};
    let allowed = cors_path(req.path());
    if allowed && req.method() == actix_web::http::Method::OPTIONS {
        let preflight = HttpResponse::NoContent()
            .insert_header((ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .insert_header((
                ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, PUT, DELETE, OPTIONS",
            ))
            .insert_header((
                ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, MCP-Protocol-Version",
            ))
            .insert_header((ACCESS_CONTROL_MAX_AGE, "86400"))
            .finish();
        return Either::Left(ready(Ok(req.into_response(preflight))));
    }
    let call = srv.call(req);
    Either::Right(async move {
        let mut res = call.await?;
        if allowed {
            let headers = res.headers_mut();
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            headers.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("WWW-Authenticate, Retry-After"),
            );
        }
        Ok(res)
    })
}

/// A bound, not yet running authorization server.
pub struct AuthServer {
    serving: crate::service::Serving,
    state: web::Data<AuthState>,
    /// The webhook receivers' delivery tasks.
    webhooks: Vec<tokio::task::JoinHandle<()>>,
}

impl AuthServer {
    /// The server for `state`, listening on its `LISTEN_ADDR`.
    pub fn build(state: AuthState) -> std::io::Result<Self> {
        let default: SocketAddr = DEFAULT_LISTEN_ADDR.parse().expect("valid default address");
        let listener = TcpListener::bind(state.settings.listen_addr_or(default))?;
        Self::from_listener(listener, state)
    }

    pub fn from_listener(listener: TcpListener, state: AuthState) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = web::Data::new(state);
        let app_state = state.clone();
        let draining = state.draining.clone();
        let sockets = vec![listener.try_clone()?];
        let server = HttpServer::new(move || {
            App::new()
                .wrap_fn(cors)
                .wrap_fn(crate::service::close_connections_while_draining(
                    draining.clone(),
                ))
                .configure(|cfg| configure(cfg, app_state.clone()))
        })
        .listen(listener)?
        // Signals are ours (`run_until_stopped`): drain first, then stop.
        .disable_signals()
        .shutdown_timeout(30)
        .run();
        let webhooks = notify::spawn(notify::Webhooks {
            settings: state.settings.audit.clone(),
            issuer: state.settings.issuer.clone(),
            store: state.store.clone(),
            clock: state.clock.clone(),
            deliveries: state.metrics.webhook_deliveries.clone(),
            backlog: state.metrics.webhook_backlog.clone(),
        });
        Ok(Self {
            serving: crate::service::Serving {
                server,
                sockets,
                addr,
            },
            state,
            webhooks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// Serves until SIGTERM/SIGINT, then drains for `SHUTDOWN_DRAIN` and stops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (draining, drain) = (
            self.state.draining.clone(),
            self.state.settings.shutdown_drain,
        );
        let result = self.serving.until_stopped(draining, drain).await;
        // What was read and not yet delivered is taken over by another replica (or this one,
        // restarted) once it has been idle long enough.
        for task in self.webhooks {
            task.abort();
        }
        result
    }
}

/// Ready = the store answers and a signing key is loaded.
async fn ready(state: web::Data<AuthState>) -> HttpResponse {
    let draining = state.draining.is_draining();
    let store_ok = !draining && crate::service::store_reachable(state.store.as_ref()).await;
    let keys_ok = state.settings.keys.signing_key().is_some();
    crate::service::ready_response(
        store_ok && keys_ok && !draining,
        serde_json::json!({
            "store": if store_ok { "ok" } else if draining { "not_checked" } else { "unreachable" },
            "signing_key": keys_ok,
            "shutting_down": draining,
        }),
    )
}

async fn metrics_text(state: web::Data<AuthState>) -> HttpResponse {
    crate::service::metrics_response(state.metrics.render())
}
