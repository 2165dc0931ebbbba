//! What the proxy in front tells both services in its forwarding headers: the client's
//! address behind trusted proxies (`X-Forwarded-For`), the client certificate Traefik's
//! passTLSClientCert forwards (RFC 8705 thumbprint), and the request path
//! (`X-Forwarded-Uri`), normalised the way backends route it.

use std::borrow::Cow;
use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HeaderName};
use base64::Engine;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

// Names built once: a lookup by `&str` parses the name again on every request.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_TLS_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-tls-client-cert");

/// The path as scope rules compare it, the way a backend may route `uri`: query and fragment
/// dropped, percent-escapes of unreserved characters decoded, `%2F`, `%5C` and `\\` taken as
/// separators (Go, Starlette and ASP.NET route them so), `;` path parameters dropped (Servlet
/// containers route `/admin;x` to `/admin`), dot segments removed (RFC 3986 §5.2.4), repeated
/// slashes merged, and ASCII lower-cased (Express and ASP.NET route case-insensitively). Rule
/// prefixes go through this same function, so `/mcp/../admin`, `/MCP/ADMIN`, `/mcp%2Fadmin` or
/// `/%61dmin` cannot slip past a rule for `/mcp/admin`. `None` for anything that is not an
/// absolute path of visible ASCII with valid escapes: then every path rule applies.
pub fn normalize_path(uri: &str) -> Option<Cow<'_, str>> {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let plain = !path
        .bytes()
        .any(|b| matches!(b, b'%' | b'\\' | b';') || b.is_ascii_uppercase())
        && !path.contains("//")
        && !path.contains("/.");
    if plain {
        return Some(Cow::Borrowed(path));
    }
    let decoded = crate::rfc3986::decode_unreserved(path, true, true)?;
    let (segments, trailing) = crate::rfc3986::dot_segments(&decoded, true);
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Some(Cow::Owned(out))
}

/// The client's address, the same way in both services: the TCP peer, unless the peer is a
/// trusted proxy (`TRUSTED_PROXIES`); then the right-most `X-Forwarded-For` hop that is not a
/// trusted proxy. Forwarded headers from any other peer were written by the client and prove
/// nothing, so a client that reaches a service without the proxy cannot pick its address.
#[derive(Debug, Default)]
pub struct ClientAddress {
    trusted: Vec<IpNet>,
    warned: std::sync::atomic::AtomicBool,
}

impl ClientAddress {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self {
            trusted,
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn is_trusted(&self, ip: &IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client certificate's thumbprint ([`client_cert_thumbprint`]), believed only from a
    /// trusted proxy, as `X-Forwarded-For` is: anyone who reaches a service directly could
    /// otherwise present a victim's (public) certificate in the header. `peer` as for
    /// [`ClientAddress::resolve`].
    pub fn client_cert(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<String> {
        if peer.is_some_and(|p| !self.is_trusted(&p)) {
            if headers.contains_key(X_FORWARDED_TLS_CLIENT_CERT) {
                tracing::debug!(
                    "X-Forwarded-Tls-Client-Cert from a peer outside TRUSTED_PROXIES is ignored"
                );
            }
            return None;
        }
        client_cert_thumbprint(headers)
    }

    /// `peer` is the TCP peer; `None` only where there is no socket (in-process callers).
    pub fn resolve(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        let Some(peer) = peer else {
            return forwarded_client(headers, &self.trusted);
        };
        if self.is_trusted(&peer) {
            if !headers.contains_key(X_FORWARDED_FOR) {
                return Some(peer);
            }
            // A trusted proxy that sent an unreadable header: the address is unknown.
            return forwarded_client(headers, &self.trusted);
        }
        if headers.contains_key(X_FORWARDED_FOR)
            && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                %peer,
                "X-Forwarded-For from a peer outside TRUSTED_PROXIES is ignored; if this is \
                 your proxy, add its address to TRUSTED_PROXIES"
            );
        }
        Some(peer)
    }
}

/// The right-most `X-Forwarded-For` hop that is not a trusted proxy (hops to its left were
/// written by the client); when every hop is trusted, the left-most one.
fn forwarded_client(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let mut leftmost = None;
    let values: Vec<_> = headers.get_all(X_FORWARDED_FOR).collect();
    for value in values.iter().rev() {
        for hop in value.to_str().ok()?.rsplit(',') {
            let ip = parse_hop(hop.trim())?;
            if !trusted.iter().any(|net| net.contains(&ip)) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
    }
    leftmost
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[v6]:port` or `v4:port`
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

/// RFC 8705 `x5t#S256` of the certificate in `X-Forwarded-Tls-Client-Cert`: Traefik sends the
/// PEM body URL-escaped, without delimiters or line breaks; a chain is comma-separated and the
/// leaf comes first. A complete PEM is accepted too (nginx's `$ssl_client_escaped_cert`).
pub fn client_cert_thumbprint(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(X_FORWARDED_TLS_CLIENT_CERT)?.to_str().ok()?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let leaf = decoded.split(',').next()?;
    let body: String = leaf
        .replace("-----BEGIN CERTIFICATE-----", "")
        .replace("-----END CERTIFICATE-----", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok()?;
    Some(crate::token::b64url(&Sha256::digest(&der)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    /// A header map from name/value pairs (repeated names append).
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn paths_are_normalised_before_rules_see_them() {
        for (raw, expected) in [
            ("/mcp", Some("/mcp")),
            ("/mcp?x=1#f", Some("/mcp")),
            ("/mcp/../admin", Some("/admin")),
            ("/mcp/./../admin/x", Some("/admin/x")),
            ("//admin", Some("/admin")),
            ("/%61dmin", Some("/admin")),
            ("/mcp/%2e%2e/admin", Some("/admin")),
            ("/a%2Fb", Some("/a/b")),
            ("/a%5cb", Some("/a/b")),
            ("/a\\b", Some("/a/b")),
            ("/MCP/Admin", Some("/mcp/admin")),
            ("/mcp%2F..%2Fadmin", Some("/admin")),
            ("/mcp/admin;jsessionid=1/x", Some("/mcp/admin/x")),
            ("/mcp;x/admin", Some("/mcp/admin")),
            ("/a%3Bb", Some("/a%3Bb")),
            ("/a%3bb", Some("/a%3Bb")),
            ("/../../admin", Some("/admin")),
            ("/admin/", Some("/admin/")),
            ("/a/..", Some("/")),
            ("relative", None),
            ("/bad%zz", None),
            ("/trunc%4", None),
            ("/sp ace", None),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), expected, "{raw}");
        }
    }

    /// As seen from a trusted proxy at 10.9.9.9.
    fn client_ip(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
        let mut trusted = trusted.to_vec();
        trusted.push("10.9.9.9/32".parse().unwrap());
        ClientAddress::new(trusted).resolve(headers, Some("10.9.9.9".parse().unwrap()))
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let addr = ClientAddress::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        let direct: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(addr.resolve(&h, Some(direct)), Some(direct));
        let proxy: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(addr.resolve(&h, Some(proxy)), "203.0.113.7".parse().ok());
        assert_eq!(addr.resolve(&headers(&[]), Some(proxy)), Some(proxy));
        let none = ClientAddress::new(Vec::new());
        assert_eq!(none.resolve(&h, Some(direct)), Some(direct));
    }

    #[test]
    fn right_most_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.2")]);
        assert_eq!(
            client_ip(&h, &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(
            client_ip(&h, &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711")]);
        assert_eq!(client_ip(&h, &[]), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            client_ip(&headers(&[]), &trusted),
            Some("10.9.9.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(&headers(&[("x-forwarded-for", "garbage")]), &trusted),
            None
        );
    }
}
