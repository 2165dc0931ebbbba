//! `mcp-gateway-healthcheck`: the container health probe of the Docker image.
//!
//! The runtime image (distroless) has no shell, curl or wget, so the Dockerfile compiles this
//! file with plain `rustc` (standard library only, not part of the Cargo package) and ships it
//! next to the three gateway binaries.
//!
//!   mcp-gateway-healthcheck                       GET /health on the port of $LISTEN_ADDR, or on
//!                                                 8081 then 8080 (verify, auth) when it is unset
//!   mcp-gateway-healthcheck http://127.0.0.1:8081/ready
//!
//! Exit 0 when the answer is 2xx, 1 otherwise (refused, timed out, other status). HTTP only:
//! the probe runs inside the container, next to the service.

use std::env;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let targets: Vec<(String, String)> = match env::args().nth(1) {
        Some(url) => match parse_url(&url) {
            Some(t) => vec![t],
            None => {
                eprintln!("mcp-gateway-healthcheck: expected http://HOST:PORT/PATH, got {url:?}");
                return ExitCode::from(2);
            }
        },
        None => default_targets(),
    };
    let mut last_error = String::new();
    for (authority, path) in &targets {
        match probe(authority, path) {
            Ok(status) if (200..300).contains(&status) => return ExitCode::SUCCESS,
            Ok(status) => last_error = format!("http://{authority}{path}: status {status}"),
            Err(e) => last_error = format!("http://{authority}{path}: {e}"),
        }
    }
    eprintln!("mcp-gateway-healthcheck: unhealthy: {last_error}");
    ExitCode::FAILURE
}

/// `/health` on the service's own port: from LISTEN_ADDR (a wildcard address becomes loopback),
/// else verify's and auth's default ports.
fn default_targets() -> Vec<(String, String)> {
    let health = "/health".to_string();
    if let Some(addr) = env::var("LISTEN_ADDR")
        .ok()
        .and_then(|a| a.trim().parse::<SocketAddr>().ok())
    {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        return vec![(SocketAddr::new(ip, addr.port()).to_string(), health)];
    }
    vec![
        ("127.0.0.1:8081".to_string(), health.clone()),
        ("127.0.0.1:8080".to_string(), health),
    ]
}

/// `http://host[:port][/path]` → (`host:port`, `/path`).
fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || path.contains(['\r', '\n', ' ']) {
        return None;
    }
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_string()))
}

fn probe(authority: &str, path: &str) -> Result<u16, String> {
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mcp-gateway-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&head[..len]);
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line {line:?}")),
        _ => Err(format!("not an HTTP answer: {line:?}")),
    }
}
