//! What verify reads from the proxy's request: the access token (RFC 6750 §2.1, or RFC 9449
//! §7.1's `DPoP` scheme) and the
//! resource being accessed (DESIGN §4). The forwarding headers themselves (client address,
//! client certificate, path normalisation) are read in [`crate::forwarded`], which auth uses
//! too.

use std::borrow::Cow;

use actix_web::http::header::HeaderMap;

pub use crate::forwarded::{
    ClientAddress, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_FORWARDED_URI,
    client_cert_thumbprint, normalize_path,
};
use crate::policy::HostPattern;

/// How the access token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    /// `Authorization: DPoP <t>` with a `DPoP` proof header (RFC 9449 §7.1).
    Dpop,
}

/// The bearer token of `Authorization: Bearer <t>`: scheme case-insensitive, one or more
/// spaces. Tokens in the query string are never looked at.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    match access_token(headers)? {
        (Scheme::Bearer, token) => Some(token),
        (Scheme::Dpop, _) => None,
    }
}

/// The access token of `Authorization: Bearer <t>` or `Authorization: DPoP <t>`, with its
/// scheme (case-insensitive, one or more spaces).
pub fn access_token(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let mut values = headers.get_all(actix_web::http::header::AUTHORIZATION);
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        // Two Authorization headers: ambiguous, so no credential at all.
        return None;
    }
    let (scheme, mut token) = if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
        (Scheme::Bearer, &value[7..])
    } else if value.len() > 5 && value[..5].eq_ignore_ascii_case(b"dpop ") {
        (Scheme::Dpop, &value[5..])
    } else {
        return None;
    };
    while let [b' ', rest @ ..] = token {
        token = rest;
    }
    while let [rest @ .., b' '] = token {
        token = rest;
    }
    // RFC 6750 §2.1 b64token. No early exit, so the check compiles to SIMD over the ~700
    // bytes of a JWT; the alphabet is ASCII, so the token is then valid UTF-8 as well.
    let invalid = token
        .iter()
        .fold(false, |invalid, &b| invalid | !is_b64token_byte(b));
    if token.is_empty() || invalid {
        return None;
    }
    Some((scheme, std::str::from_utf8(token).ok()?))
}

#[inline(always)]
fn is_b64token_byte(b: u8) -> bool {
    (b | 0x20).is_ascii_lowercase()
        | b.is_ascii_digit()
        | matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// The resource the proxied request is for: `{proto}://{host}` from the proxy's
/// `X-Forwarded-*` headers. `Host` is never used: under Traefik and nginx it names us.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub proto: &'static str,
    /// Lower-case, port kept.
    pub host: Cow<'a, str>,
    /// Path of the original request as its backend will resolve it (see [`normalize_path`]);
    /// `None` when the proxy sent none or one that cannot be read: every path rule applies.
    pub path: Option<Cow<'a, str>>,
}

impl<'a> Target<'a> {
    /// `None` when the proxy sent no usable host or protocol, or the host is not one of ours.
    pub fn from_headers(headers: &'a HeaderMap, hosts: &[HostPattern]) -> Option<Self> {
        // Every proxy we support sets it; a bare ForwardAuth client that does not is taken
        // to be serving HTTPS, the only scheme a production MCP resource has.
        let proto = match headers.get(X_FORWARDED_PROTO).map(|v| v.as_bytes()) {
            None => "https",
            Some(p) if p.eq_ignore_ascii_case(b"https") => "https",
            Some(p) if p.eq_ignore_ascii_case(b"http") => "http",
            Some(_) => return None,
        };
        let host = headers.get(X_FORWARDED_HOST)?.to_str().ok()?;
        // A proxy chain may list several hosts; the first is the client's.
        let host = host.split(',').next()?.trim();
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return None;
        }
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        if !hosts.iter().any(|p| p.matches(&host)) {
            return None;
        }
        let path = headers
            .get(X_FORWARDED_URI)
            .and_then(|v| v.to_str().ok())
            .and_then(normalize_path);
        Some(Self { proto, host, path })
    }

    /// Whether `aud` is exactly `{proto}://{host}{resource_path}`, without allocating.
    pub fn is_resource(&self, aud: &str, resource_path: &str) -> bool {
        let Some(rest) = aud.strip_prefix(self.proto) else {
            return false;
        };
        let Some(rest) = rest.strip_prefix("://") else {
            return false;
        };
        let host = self.host.as_ref();
        rest.len() == host.len() + resource_path.len()
            && rest[..host.len()].eq_ignore_ascii_case(host)
            && &rest[host.len()..] == resource_path
    }

    pub fn resource(&self, resource_path: &str) -> String {
        format!("{}://{}{}", self.proto, self.host, resource_path)
    }

    /// RFC 9728 §3.1: the metadata URL for resource `https://h/mcp` is
    /// `https://h/.well-known/oauth-protected-resource/mcp`.
    pub fn metadata_url(&self, resource_path: &str) -> String {
        let suffix = if resource_path == "/" {
            ""
        } else {
            resource_path
        };
        format!(
            "{}://{}/.well-known/oauth-protected-resource{}",
            self.proto, self.host, suffix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::tests::headers;

    #[test]
    fn bearer_extraction() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc.def")])),
            Some("abc.def")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bEaReR    abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(bearer_token(&headers(&[("authorization", "Bearer")])), None);
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearerabc")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer a b")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b")
            ])),
            None
        );
    }

    #[test]
    fn target_and_audience() {
        let hosts = vec![HostPattern::parse("*.example.com").unwrap()];
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "MCP.example.com"),
            ("x-forwarded-uri", "/mcp?x=1"),
        ]);
        let t = Target::from_headers(&h, &hosts).unwrap();
        assert_eq!(t.path.as_deref(), Some("/mcp"));
        assert!(t.is_resource("https://mcp.example.com/mcp", "/mcp"));
        assert!(!t.is_resource("https://mcp.example.com/mcp/", "/mcp"));
        assert!(!t.is_resource("http://mcp.example.com/mcp", "/mcp"));
        assert!(!t.is_resource("https://other.example.com/mcp", "/mcp"));
        assert_eq!(
            t.metadata_url("/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        let foreign = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.com"),
        ]);
        assert!(Target::from_headers(&foreign, &hosts).is_none());
        let no_proto = headers(&[("x-forwarded-host", "mcp.example.com")]);
        assert_eq!(
            Target::from_headers(&no_proto, &hosts).unwrap().proto,
            "https"
        );
        let bad_proto = headers(&[
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "mcp.example.com"),
        ]);
        assert!(Target::from_headers(&bad_proto, &hosts).is_none());
    }
}
