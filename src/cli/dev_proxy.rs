//! `mcp-gateway dev --upstream URL`: a loopback reverse proxy in front of an MCP server, doing
//! what Traefik does with the shipped configuration, so a first try needs no proxy at all:
//!
//! - `/.well-known/oauth-protected-resource…` → verify (RFC 9728, the resource named from this
//!   origin), `/.well-known/oauth-authorization-server…` and `openid-configuration…` → auth;
//! - everything else: verify decides first (`GET /verify` with the request's headers, its
//!   `X-Forwarded-*` and its body, as forwardAuth with `forwardBody` sends them); a refusal is
//!   answered as verify gave it (401 with the challenge, 403, 400, 503); an allowed request goes
//!   to the upstream with verify's identity headers (`X-User-*`, `X-Auth-*`), the client's own
//!   headers of those names, and its `Authorization`, removed; the answer streams back as it
//!   comes (SSE, chunked), never buffered.
//!
//! It is a way to try the gateway, not a production proxy: in production Traefik, Caddy or
//! nginx stay in front (README, "Deploy").

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// The largest request body passed on (verify reads as much for the per-tool policy).
const BODY_LIMIT: usize = 1024 * 1024;

/// Never passed on, either way (RFC 9110 §7.6.1), with `Host` (set for the target).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

struct Proxy {
    /// Our own listening address: the host verify is told (never the client's `Host` or
    /// forwarding headers).
    listen: SocketAddr,
    upstream: url::Url,
    resource_path: String,
    verify: String,
    auth: String,
    http: reqwest::Client,
}

/// The proxy, listening.
pub struct DevProxy {
    pub server: actix_web::dev::Server,
    pub addr: SocketAddr,
}

impl DevProxy {
    pub fn bind(
        listen: SocketAddr,
        upstream: url::Url,
        resource_path: &str,
        verify: String,
        auth: String,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let state = web::Data::new(Proxy {
            listen: addr,
            upstream,
            resource_path: resource_path.to_string(),
            verify,
            auth,
            http,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(BODY_LIMIT))
                .default_service(web::to(proxy))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(1)
        .run();
        Ok(Self { server, addr })
    }
}

/// Whether a header name is, or aliases, one the gateway sets for the MCP server
/// (`X-User-Id`, `x_user_id`, `X.Auth.Scope`, …).
fn is_identity_header(name: &str) -> bool {
    let normalized: String = name
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    normalized.starts_with("x-user-")
        || normalized.starts_with("x-auth-")
        || normalized == "x-upstream-token"
}

fn passed_on(name: &str) -> bool {
    !HOP_BY_HOP.contains(&name)
}

/// What a proxy in front says about the request (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`):
/// ours alone, a client's never passed on.
fn is_forwarding_header(name: &str) -> bool {
    name.starts_with("x-forwarded-") || name == "forwarded" || name == "x-real-ip"
}

async fn proxy(req: HttpRequest, body: web::Bytes, state: web::Data<Proxy>) -> HttpResponse {
    let path = req.path();
    // The request line and our own listener say where the request went; the client's `Host`,
    // `Forwarded` and `X-Forwarded-*` could name a resource of another server.
    let host = state.listen.to_string();
    if path.starts_with("/.well-known/oauth-protected-resource") {
        return metadata(&state, &state.verify, &req, &host).await;
    }
    if path.starts_with("/.well-known/oauth-authorization-server")
        || path.starts_with("/.well-known/openid-configuration")
    {
        return metadata(&state, &state.auth, &req, &host).await;
    }
    match forward(&state, &req, body, &host).await {
        Ok(response) => response,
        Err(message) => {
            tracing::warn!(error = %message, "dev proxy");
            HttpResponse::BadGateway()
                .content_type("application/json")
                .body(
                    serde_json::json!({"error": "bad_gateway", "error_description": message})
                        .to_string(),
                )
        }
    }
}

/// The `X-Forwarded-*` a proxy in front of verify sets.
fn forwarded(req: &HttpRequest, host: &str) -> Vec<(&'static str, String)> {
    let uri = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut out = vec![
        ("x-forwarded-proto", "http".to_string()),
        ("x-forwarded-host", host.to_string()),
        ("x-forwarded-uri", uri),
        ("x-forwarded-method", req.method().as_str().to_string()),
    ];
    if let Some(peer) = req.peer_addr() {
        out.push(("x-forwarded-for", peer.ip().to_string()));
    }
    out
}

/// A metadata document from verify or auth, as served on this origin.
async fn metadata(state: &Proxy, base: &str, req: &HttpRequest, host: &str) -> HttpResponse {
    let url = format!(
        "{base}{}",
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let mut call = state.http.get(url).timeout(Duration::from_secs(10));
    for (name, value) in forwarded(req, host) {
        call = call.header(name, value);
    }
    match call.send().await {
        Ok(answer) => relay_whole(answer).await,
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

async fn forward(
    state: &Proxy,
    req: &HttpRequest,
    body: web::Bytes,
    host: &str,
) -> Result<HttpResponse, String> {
    // 1. verify decides, as forwardAuth asks it.
    let mut ask = state
        .http
        .get(format!("{}/verify", state.verify))
        .timeout(Duration::from_secs(10));
    for (name, value) in req.headers() {
        if passed_on(name.as_str()) && !is_forwarding_header(name.as_str()) {
            ask = ask.header(name.as_str(), value.as_bytes());
        }
    }
    for (name, value) in forwarded(req, host) {
        ask = ask.header(name, value);
    }
    let decision = match ask.body(body.clone()).send().await {
        Ok(d) => d,
        Err(e) => {
            return Ok(HttpResponse::ServiceUnavailable()
                .insert_header(("retry-after", "1"))
                .body(format!("verify is unreachable: {e}")));
        }
    };
    if !decision.status().is_success() {
        return Ok(relay_whole(decision).await);
    }
    let identity: Vec<(String, Vec<u8>)> = decision
        .headers()
        .iter()
        .filter(|(name, _)| is_identity_header(name.as_str()))
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();

    // 2. the upstream, with the identity verify vouches for and nothing the client claimed.
    let mut target = state.upstream.clone();
    let path = req.path();
    let suffix = path
        .strip_prefix(state.resource_path.as_str())
        .filter(|rest| rest.is_empty() || rest.starts_with('/'));
    match suffix {
        Some(rest) => {
            let base = state.upstream.path().trim_end_matches('/').to_string();
            target.set_path(&format!("{base}{rest}"));
            if target.path().is_empty() {
                target.set_path("/");
            }
        }
        None => target.set_path(path),
    }
    target.set_query(req.uri().query());
    let method =
        reqwest::Method::from_bytes(req.method().as_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut call = state.http.request(method, target.clone());
    for (name, value) in req.headers() {
        let name = name.as_str();
        if passed_on(name)
            && name != "authorization"
            && !is_identity_header(name)
            && !is_forwarding_header(name)
        {
            call = call.header(name, value.as_bytes());
        }
    }
    for (name, value) in forwarded(req, host) {
        call = call.header(name, value);
    }
    for (name, value) in identity {
        call = call.header(name, value);
    }
    let answer = call
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the MCP server at {target} did not answer: {e}"))?;
    Ok(relay_streaming(answer))
}

fn status_of(answer: &reqwest::Response) -> StatusCode {
    StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// The answer's headers over whatever the response had by default (its content type).
fn copy_headers(from: &reqwest::header::HeaderMap, to: &mut HeaderMap) {
    for name in from.keys() {
        if let Ok(n) = HeaderName::from_bytes(name.as_str().as_bytes()) {
            to.remove(n);
        }
    }
    for (name, value) in from {
        if !passed_on(name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            to.append(n, v);
        }
    }
}

/// A small answer (verify's refusal, a metadata document), read whole.
async fn relay_whole(answer: reqwest::Response) -> HttpResponse {
    let status = status_of(&answer);
    let headers = answer.headers().clone();
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = HttpResponse::build(status).body(body);
    copy_headers(&headers, response.headers_mut());
    response
}

/// The MCP server's answer, passed on chunk by chunk as it arrives.
fn relay_streaming(answer: reqwest::Response) -> HttpResponse {
    let status = status_of(&answer);
    let headers = answer.headers().clone();
    let chunks = futures_util::stream::unfold(answer, |mut answer| async move {
        match answer.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), answer)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), answer)),
        }
    });
    let mut response = HttpResponse::build(status).streaming(chunks);
    copy_headers(&headers, response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_and_their_aliases_are_recognized() {
        for name in [
            "x-user-id",
            "X-User-Name",
            "x_user_email",
            "X.Auth.Scope",
            "x-auth-token",
            "X_Upstream_Token",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in [
            "x-forwarded-for",
            "x-username",
            "authorization",
            "mcp-method",
        ] {
            assert!(!is_identity_header(name), "{name}");
        }
    }
}
