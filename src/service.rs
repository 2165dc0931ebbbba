//! What both service binaries do around their server: settings validated before any port is
//! bound (a bad value exits 64 with one line), `--check-config`, logging, the Redis store, and
//! serving until SIGTERM/SIGINT (in-flight requests drain), and the Prometheus registry each
//! one's metrics live in.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::{ConfigSource, EXIT_CONFIG, Settings};
use crate::store::{RedisStore, Store};

/// The command line both services share.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// TOML configuration file; environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

pub fn config_error(name: &str, message: impl Display) -> ExitCode {
    eprintln!("{name}: configuration error: {message}");
    ExitCode::from(EXIT_CONFIG as u8)
}

/// A service ready to build its server: settings, what `prepare` made of them, the store.
pub type Started<T> = (Settings, T, Arc<dyn Store>);

/// Loads and validates the settings, with the service's own checks in `prepare`. `Ok(None)`
/// after `--check-config` succeeded; `Err` with the exit code after printing why.
/// What `--check-config` says about who logs users in, how their claims map, who is admitted
/// and which MCP servers get the upstream token.
fn describe_upstreams(settings: &Settings) -> Vec<String> {
    let names: Vec<&str> = settings.upstreams.iter().map(|p| p.name()).collect();
    let mut lines = vec![format!("upstream: {}", names.join(", "))];
    if let Some(oidc) = &settings.oidc {
        lines.push(format!(
            "  oidc: issuer {} as {:?}, client {} ({}), scopes {:?}, redirect URI {}/callback/oidc",
            oidc.issuer,
            oidc.display_name,
            oidc.client_id,
            oidc.client_auth.name(),
            oidc.scopes.join(" "),
            settings.issuer
        ));
        lines.push(format!(
            "  claims: id = {}#<{}>, username = {} (else the verified e-mail, else the id), groups = {}, e-mail verified by {:?}{}",
            oidc.issuer,
            oidc.subject_claim,
            oidc.username_claim,
            oidc.groups_claim,
            oidc.email_trust,
            if oidc.userinfo { ", userinfo read" } else { "" }
        ));
        for (name, value) in &oidc.required_claims {
            lines.push(format!("  required claim: {name} = {value:?}"));
        }
        lines.push(format!(
            "  upstream refresh at each of ours: {}",
            if oidc.refresh {
                "yes (offline_access)"
            } else {
                "no"
            }
        ));
    }
    lines.push("allowed:".to_string());
    for line in settings.admission.describe() {
        lines.push(format!("  {line}"));
    }
    if settings.upstream_token.enabled() {
        lines.push(format!(
            "upstream token forwarded in {} to: {:?}",
            settings.upstream_token.header, settings.upstream_token.hosts
        ));
    }
    if !settings.trusted_issuers.is_empty() {
        lines.push("trusted issuers (the JWT bearer grant):".to_string());
    }
    for issuer in &settings.trusted_issuers {
        lines.extend(issuer.describe().into_iter().map(|l| format!("  {l}")));
    }
    lines
}

pub fn start<T>(
    name: &str,
    args: &ServiceArgs,
    prepare: impl FnOnce(&Settings) -> Result<T, String>,
) -> Result<Option<Started<T>>, ExitCode> {
    let settings = Settings::load(&ConfigSource::from_process(args.config.clone()))
        .map_err(|e| config_error(name, e))?;
    let prepared = prepare(&settings).map_err(|e| config_error(name, e))?;
    let store = RedisStore::connect_with(&settings)
        .map_err(|e| config_error(name, format!("REDIS_URL: {e}")))?;
    if args.check_config {
        println!("configuration ok");
        if !settings.tool_policy.is_empty() {
            println!("tool policy ({} rules):", settings.tool_policy.rules.len());
            for line in settings.tool_policy.describe() {
                println!("  {line}");
            }
            println!(
                "  a request that names no tool where a rule needs one: {:?}",
                settings.tool_policy.missing_name
            );
            println!(
                "  a POST that reaches verify without its body: {}",
                if settings.tool_policy_trust_headers {
                    "decided from Mcp-Method/Mcp-Name (TOOL_POLICY_TRUST_HEADERS)"
                } else {
                    "refused"
                }
            );
        }
        if !settings.scope_hierarchy.is_empty() {
            println!("scope hierarchy: {}", settings.scope_hierarchy.describe());
        }
        println!(
            "scopes: {} (a request without scope gets {:?})",
            settings.scopes_supported.join(" "),
            settings.default_scope
        );
        if settings.entitlements.is_empty() {
            println!("scope grants: none (every scope open to every allowed user)");
        } else {
            println!("scope grants (a scope not named here is open to every allowed user):");
            for line in settings.entitlements.describe() {
                println!("  {line}");
            }
        }
        for line in describe_upstreams(&settings) {
            println!("{line}");
        }
        return Ok(None);
    }
    crate::telemetry::init(&settings);
    Ok(Some((settings, prepared, Arc::new(store))))
}

/// The whole life of a service binary named `name` (`about` in its `--help`): its command line,
/// the settings and what `prepare` makes of them ([`start`]), then the server `build` binds,
/// served to the end ([`serve`]). The exit status.
pub async fn run<T, F>(
    name: &'static str,
    about: &'static str,
    prepare: impl FnOnce(&Settings) -> Result<T, String>,
    build: impl FnOnce(Settings, T, Arc<dyn Store>) -> std::io::Result<(SocketAddr, F)>,
) -> ExitCode
where
    F: Future<Output = std::io::Result<()>>,
{
    use clap::{Args, FromArgMatches};
    // After the shared arguments, whose own doc comment would otherwise be the about text.
    let matches = ServiceArgs::augment_args(clap::Command::new(name))
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .long_about(None)
        .get_matches();
    let args = ServiceArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match start(name, &args, prepare) {
        Ok(Some((settings, prepared, store))) => {
            serve(name, build(settings, prepared, store)).await
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Runs a bound server to the end and turns the outcome into the exit status.
pub async fn serve(
    name: &str,
    server: std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)>,
) -> ExitCode {
    let (addr, run) = match server {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("{name}: cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%addr, "{name} listening");
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            ExitCode::from(1)
        }
    }
}

/// `/health`: the process serves. Identical for both services.
pub async fn health() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header((actix_web::http::header::CONTENT_TYPE, "application/json"))
        .body(r#"{"status":"ok"}"#)
}

/// Whether the store answers a PING within two seconds (`/ready`).
pub async fn store_reachable(store: &dyn Store) -> bool {
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), store.ping()).await,
        Ok(Ok(()))
    )
}

/// `/ready`: 200 when `ready`, else 503; `details` says which check failed.
pub fn ready_response(ready: bool, details: serde_json::Value) -> actix_web::HttpResponse {
    use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
    let mut body = serde_json::json!({"status": if ready { "ready" } else { "not_ready" }});
    if let (Some(map), serde_json::Value::Object(extra)) = (body.as_object_mut(), details) {
        map.extend(extra);
    }
    let mut response = if ready {
        actix_web::HttpResponse::Ok()
    } else {
        actix_web::HttpResponse::ServiceUnavailable()
    };
    response
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(body.to_string())
}

/// `/metrics`: the Prometheus text exposition.
pub fn metrics_response(text: String) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(text)
}

/// Set once SIGTERM or SIGINT arrived: the service is draining. `/ready` answers 503 (so the
/// proxy and Kubernetes stop sending), every response says `Connection: close`, and requests
/// are still answered, on open connections too, for `SHUTDOWN_DRAIN`; then the server stops
/// and in-flight requests finish.
#[derive(Debug, Default)]
pub struct Draining {
    draining: AtomicBool,
    /// The last part of the drain: the listeners take no new connection.
    closing: AtomicBool,
}

impl Draining {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the listeners have stopped taking connections (`ACCEPT_GRACE` before the stop).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// Middleware: while draining, close each connection after its response, so clients move to
/// another replica without a request lost on a connection the server is about to drop.
pub fn close_connections_while_draining<S>(
    draining: Arc<Draining>,
) -> impl Fn(
    actix_web::dev::ServiceRequest,
    &S,
) -> futures_util::future::LocalBoxFuture<
    'static,
    Result<actix_web::dev::ServiceResponse, actix_web::Error>,
> + Clone
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        > + 'static,
{
    use futures_util::FutureExt;
    move |req, srv| {
        let call = srv.call(req);
        let draining = draining.clone();
        async move {
            let mut res = call.await?;
            if draining.is_draining() {
                res.response_mut()
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
            }
            Ok(res)
        }
        .boxed_local()
    }
}

/// A bound server: what it serves on, and the listening sockets it stops taking connections
/// on before it stops ([`serve_until_stopped`]).
pub struct Serving {
    pub server: actix_web::dev::Server,
    pub sockets: Vec<std::net::TcpListener>,
    pub addr: SocketAddr,
}

impl Serving {
    /// [`serve_until_stopped`], `draining` telling the handlers, for `drain`.
    pub async fn until_stopped(
        self,
        draining: Arc<Draining>,
        drain: Duration,
    ) -> std::io::Result<()> {
        serve_until_stopped(self.server, self.sockets, draining, drain).await
    }
}

/// How long before the end of the drain the listening sockets close: connections accepted
/// just before have this long to send their request and get its answer.
pub const ACCEPT_GRACE: Duration = Duration::from_secs(1);

/// Serves until SIGTERM or SIGINT, then drains for `drain` and stops without dropping a
/// request: first not ready and `Connection: close` on every answer (the proxy moves away);
/// `ACCEPT_GRACE` (at most half the drain) before its end the `sockets` stop taking new
/// connections ([`stop_listening`]), so none is accepted and then cut by the stop; then the
/// server stops gracefully, in-flight requests finishing.
pub async fn serve_until_stopped(
    server: actix_web::dev::Server,
    sockets: Vec<std::net::TcpListener>,
    draining: Arc<Draining>,
    drain: Duration,
) -> std::io::Result<()> {
    let handle = server.handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        draining.start();
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: not ready, still answering during the drain period"
        );
        let grace = ACCEPT_GRACE.min(drain / 2);
        tokio::time::sleep(drain - grace).await;
        for socket in &sockets {
            stop_listening(socket);
        }
        draining.close();
        tokio::time::sleep(grace).await;
        handle.stop(true).await;
    });
    server.await
}

/// Stops taking new connections on a listening socket the server still holds, without
/// cutting any it has: on Linux a socket filter drops connection requests (a bare SYN), so
/// handshakes already under way complete and queued connections are still accepted and
/// answered, while a new client waits and, after the stop, is refused (RST) and retries
/// elsewhere. Elsewhere the socket leaves the LISTEN state (which resets the few connections
/// queued at that instant).
pub fn stop_listening(socket: &std::net::TcpListener) {
    if let Err(e) = refuse_new_connections(socket) {
        tracing::warn!(error = %e, "could not stop listening before the stop");
    }
}

#[cfg(target_os = "linux")]
fn refuse_new_connections(socket: &std::net::TcpListener) -> std::io::Result<()> {
    use libc::{BPF_ABS, BPF_B, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET};
    use socket2::SockFilter;
    // Classic BPF over the TCP header, whose 14th byte holds the flags: drop a segment with SYN
    // and without ACK, pass the rest.
    let op = |code: u32| code as u16;
    let (flags_byte, ack, syn) = (13, 0x10, 0x02);
    let program = [
        SockFilter::new(op(BPF_LD | BPF_B | BPF_ABS), 0, 0, flags_byte),
        SockFilter::new(op(BPF_JMP | BPF_JSET | BPF_K), 2, 0, ack),
        SockFilter::new(op(BPF_JMP | BPF_JSET | BPF_K), 0, 1, syn),
        SockFilter::new(op(BPF_RET | BPF_K), 0, 0, 0),
        SockFilter::new(op(BPF_RET | BPF_K), 0, 0, u32::MAX),
    ];
    socket2::SockRef::from(socket).attach_filter(&program)
}

#[cfg(not(target_os = "linux"))]
fn refuse_new_connections(socket: &std::net::TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A service's Prometheus registry, handing out each metric registered as it is defined (the
/// names are static: a failure is a programming error).
pub struct MetricRegistry(prometheus::Registry);

impl MetricRegistry {
    pub fn new() -> Self {
        Self(prometheus::Registry::new())
    }

    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    pub fn counter(&self, name: &str, help: &str) -> prometheus::IntCounter {
        self.register(prometheus::IntCounter::new(name, help).expect("static metric definition"))
    }

    pub fn gauge(&self, name: &str, help: &str) -> prometheus::IntGauge {
        self.register(prometheus::IntGauge::new(name, help).expect("static metric definition"))
    }

    /// Counters by `labels`.
    pub fn counters(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
        let opts = prometheus::Opts::new(name, help);
        self.register(
            prometheus::IntCounterVec::new(opts, labels).expect("static metric definition"),
        )
    }

    /// Gauges by `labels`.
    pub fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
        let opts = prometheus::Opts::new(name, help);
        self.register(prometheus::IntGaugeVec::new(opts, labels).expect("static metric definition"))
    }

    /// Adds a collector another part owns (the store's security-events counter); a second
    /// registration of it (one store behind both services of `mcp-gateway dev`) is ignored.
    pub fn add(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.0.register(collector) {
            tracing::debug!(error = %e, "metric already registered");
        }
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> prometheus::Histogram {
        let opts = prometheus::HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(prometheus::Histogram::with_opts(opts).expect("static metric definition"))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = prometheus::TextEncoder::new().encode(&self.0.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for MetricRegistry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn a_socket_that_stopped_listening_keeps_what_it_has_and_takes_nothing_new() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut established = TcpStream::connect(addr).unwrap();
        let (mut served, _) = listener.accept().unwrap();
        let mut queued = TcpStream::connect(addr).unwrap();
        super::stop_listening(&listener);
        // A connection request now goes unanswered (the client retries, then is refused).
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
            "a new connection is not taken"
        );
        // The connection that was waiting in the queue is still accepted and served.
        let (mut late, _) = listener.accept().unwrap();
        queued.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        late.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        // And the one already served goes on.
        established.write_all(b"pong").unwrap();
        served.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        served.write_all(b"done").unwrap();
        established.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"done");
    }
}
