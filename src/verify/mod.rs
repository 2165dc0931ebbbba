//! `mcp-gateway-verify`: the ForwardAuth service (DESIGN §2, §4, §7).
//!
//! Routes: `/verify` (any method), RFC 9728 protected-resource metadata on
//! `/.well-known/oauth-protected-resource[/<path>]`, `/health`, `/ready`, `/metrics`.
//! On a warm cache a decision is two in-memory lookups and no I/O; the store is asked only on
//! a liveness miss, and every replica hears revocations through the feed.

pub mod audit;
pub mod cache;
pub mod dpop;
pub mod error;
pub mod feed;
pub mod forward_auth;
pub mod goaway;
pub mod mcp;
pub mod metrics;
pub mod request;
pub mod state;
pub mod transport;

pub use state::VerifyState;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{App, HttpRequest, HttpResponse, web};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::store::Store;

use request::Target;

/// Where verify listens unless `LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8081";

/// Mounts verify's routes (also used by `mcp-gateway dev`, which serves auth and verify
/// from one process).
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<VerifyState>) {
    cfg.app_data(state)
        // The body Traefik forwards (`forwardBody`) for the per-tool policy, up to this much.
        .app_data(web::PayloadConfig::new(forward_auth::FORWARDED_BODY_LIMIT))
        .route("/verify", web::route().to(forward_auth::forward_auth))
        .route(
            "/.well-known/oauth-protected-resource",
            web::get().to(protected_resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{path:.*}",
            web::get().to(protected_resource_metadata),
        )
        .route("/health", web::get().to(crate::service::health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics_text));
}

/// Re-reads the TLS certificate files when they change; a renewal applies to new handshakes,
/// open connections keep going.
async fn watch_certificate(
    certificate: Arc<crate::tls::ReloadingCert>,
    state: web::Data<VerifyState>,
) {
    use crate::tls::Reload;
    let mut every = tokio::time::interval(crate::tls::RELOAD_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let check = certificate.clone();
        let Ok(outcome) = tokio::task::spawn_blocking(move || check.check()).await else {
            continue;
        };
        match outcome {
            Reload::Unchanged => {}
            Reload::Reloaded => {
                state.metrics.tls_reloaded.inc();
                tracing::info!("TLS certificate reloaded");
            }
            Reload::Failed(e) => {
                state.metrics.tls_reload_failed.inc();
                tracing::error!(error = %e, "TLS certificate files changed but cannot be used; the previous certificate stays");
            }
        }
    }
}

/// A bound, not yet running verify server.
pub struct VerifyServer {
    /// The server and its sockets (plain, then TLS).
    serving: crate::service::Serving,
    /// The task re-reading the TLS certificate files.
    reload: Option<tokio::task::JoinHandle<()>>,
    feed: tokio::task::JoinHandle<()>,
    /// The audit writer and how to stop it (after a last flush).
    audit: Option<(tokio::task::JoinHandle<()>, Arc<tokio::sync::Notify>)>,
    state: web::Data<VerifyState>,
}

impl VerifyServer {
    /// Binds `LISTEN_ADDR` (port 0 allowed) and starts the revocation feed. Must be called
    /// inside a Tokio runtime.
    pub fn build(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> std::io::Result<Self> {
        let default: SocketAddr = DEFAULT_LISTEN_ADDR.parse().expect("valid default address");
        let listener = TcpListener::bind(settings.listen_addr_or(default))?;
        Self::from_listener(listener, settings, store, clock)
    }

    pub fn from_listener(
        listener: TcpListener,
        settings: Settings,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = web::Data::new(VerifyState::new(settings, store, clock));
        let feed = tokio::spawn(feed::run(state.clone().into_inner()));
        let queue = state
            .audit_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let audit = queue.map(|rx| {
            let stop = Arc::new(tokio::sync::Notify::new());
            let writer = tokio::spawn(audit::run(
                state.store.clone(),
                state.settings.audit.clone(),
                state.clock.clone(),
                rx,
                stop.clone(),
            ));
            (writer, stop)
        });
        let app_state = state.clone();
        let draining = state.draining.clone();
        let mut sockets = vec![listener.try_clone()?];
        let mut reload = None;
        let mut tls = None;
        if let Some(settings) = &state.settings.verify_tls {
            let certificate = crate::tls::ReloadingCert::new(settings.files.clone())
                .map_err(std::io::Error::other)?;
            let socket = TcpListener::bind(settings.listen_addr)?;
            sockets.push(socket.try_clone()?);
            tls = Some((socket, certificate.server_config()));
            reload = Some(tokio::spawn(watch_certificate(certificate, state.clone())));
        }
        let listeners = transport::Listeners {
            plain: listener,
            plain_connections: state.metrics.connections_plain.clone(),
            tls,
            tls_connections: state.metrics.connections_tls.clone(),
        };
        let when = goaway::GoAwayWhen {
            draining: state.draining.clone(),
            max_age: state.settings.verify_h2_max_connection_age,
            sent: state.metrics.goaways.clone(),
        };
        let server = transport::serve(
            move || {
                App::new()
                    .wrap_fn(crate::service::close_connections_while_draining(
                        draining.clone(),
                    ))
                    .configure(|cfg| configure(cfg, app_state.clone()))
            },
            listeners,
            when,
        )?;
        Ok(Self {
            serving: crate::service::Serving {
                server,
                sockets,
                addr,
            },
            reload,
            feed,
            audit,
            state,
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
        self.feed.abort();
        if let Some(reload) = self.reload {
            reload.abort();
        }
        if let Some((writer, stop)) = self.audit {
            // The last counts are written before the process ends.
            stop.notify_one();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
        }
        result
    }
}

/// Ready = the store answers, the keys are loaded (they are, or we would not have started),
/// and revocations are being heard.
async fn ready(state: web::Data<VerifyState>) -> HttpResponse {
    let draining = state.draining.is_draining();
    let store_ok = !draining && crate::service::store_reachable(state.store.as_ref()).await;
    let feed_ok = state.feed_up.load(Ordering::Relaxed);
    crate::service::ready_response(
        store_ok && feed_ok && !draining,
        serde_json::json!({
            "store": if store_ok { "ok" } else if draining { "not_checked" } else { "unreachable" },
            "revocation_feed": if feed_ok { "subscribed" } else { "down" },
            "keys": state.keys.iter().count(),
            "shutting_down": draining,
        }),
    )
}

async fn metrics_text(state: web::Data<VerifyState>) -> HttpResponse {
    crate::service::metrics_response(state.metrics.render())
}

/// RFC 9728 protected-resource metadata for the MCP host the proxy forwarded. Traefik routes
/// these paths to verify without the forwardAuth middleware, adding `X-Forwarded-*`.
async fn protected_resource_metadata(
    req: HttpRequest,
    state: web::Data<VerifyState>,
) -> HttpResponse {
    let settings = &state.settings;
    let suffix = req.match_info().get("path").unwrap_or("");
    let path_ok = suffix.is_empty() || settings.resource_path.trim_start_matches('/') == suffix;
    let mut headers = req.headers().clone();
    // Reached directly (no proxy in front, e.g. `mcp-gateway dev`): the connection's own
    // scheme and Host stand in for the forwarded ones. Only metadata, never a decision.
    if !headers.contains_key(request::X_FORWARDED_HOST) {
        let info = req.connection_info();
        if let Ok(host) = info.host().parse() {
            headers.insert(request::X_FORWARDED_HOST, host);
        }
        if !headers.contains_key(request::X_FORWARDED_PROTO)
            && let Ok(proto) = info.scheme().parse()
        {
            headers.insert(request::X_FORWARDED_PROTO, proto);
        }
    }
    let target = Target::from_headers(&headers, &settings.resource_hosts);
    let (Some(target), true) = (target, path_ok) else {
        return HttpResponse::NotFound()
            .insert_header((CONTENT_TYPE, "application/json"))
            .body(r#"{"error":"not_found","error_description":"no protected resource here"}"#);
    };
    let body = serde_json::json!({
        "resource": target.resource(&settings.resource_path),
        "authorization_servers": [settings.issuer],
        "scopes_supported": settings.scopes_supported,
        "bearer_methods_supported": ["header"],
        "resource_name": settings.resource_name,
        // RFC 9728 §2: DPoP-bound tokens are checked here, bearer tokens still accepted.
        "dpop_signing_alg_values_supported": crate::token::dpop::ALGORITHMS,
        "dpop_bound_access_tokens_required": false,
    });
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .insert_header((ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(body.to_string())
}
