//! Redirect URIs (RFC 8252, OAuth 2.1 §2.3.1): which may be registered, and whether a
//! requested one is the registered one. `https`, loopback `http` (`localhost`, `127.0.0.1`,
//! `[::1]` exactly; any port at redemption, RFC 8252 §7.3), private-use schemes (RFC 8252
//! §7.1), and the out-of-band `urn:ietf:wg:oauth:2.0:oob`.

/// The out-of-band redirect: the code is shown on our `/success` page.
pub const OOB_REDIRECT: &str = "urn:ietf:wg:oauth:2.0:oob";

/// Whether `uri` may be registered as a redirect URI.
pub fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    if uri == OOB_REDIRECT {
        return Ok(());
    }
    let url = url::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URI"))?;
    if url.fragment().is_some() {
        return Err(format!("{uri:?} has a fragment"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(format!(
            "{uri:?}: plain http is allowed only for localhost, 127.0.0.1 and [::1]"
        )),
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss" => {
            Err(format!("{uri:?}: scheme not allowed"))
        }
        "https" => Err(format!("{uri:?} has no host")),
        // Private-use URI schemes of native apps (RFC 8252 §7.1).
        _ => Ok(()),
    }
}

/// Whether `url` names this machine's loopback interface (`localhost`, `127.0.0.1`, `[::1]`).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => false,
    }
}

/// Whether `requested` is the registered redirect URI: exactly, or a loopback `http` URI with
/// another port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(a), Ok(b)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    a.scheme() == "http"
        && b.scheme() == "http"
        && is_loopback(&a)
        && a.host() == b.host()
        && a.path() == b.path()
        && a.query() == b.query()
        && b.fragment().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://localhost:8080/cb",
            "http://127.0.0.1/cb",
            "http://[::1]:3000/cb",
            "com.example.app:/oauth",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            OOB_REDIRECT,
        ] {
            assert!(validate_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com/cb",
            "http://127.0.0.2/cb",
            "http://example.com/cb",
            "https://example.com/cb#frag",
            "javascript:alert(1)",
            "data:text/html,x",
            "/relative",
            "https://",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_redirects_match_on_any_port_only() {
        assert!(redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5555/cb"
        ));
        assert!(redirect_matches(
            "http://localhost:1/cb",
            "http://localhost:2/cb"
        ));
        assert!(!redirect_matches(
            "http://localhost:1/cb",
            "http://localhost:2/other"
        ));
        assert!(!redirect_matches(
            "https://a.com/cb",
            "https://a.com:444/cb"
        ));
        assert!(!redirect_matches(
            "http://localhost/cb",
            "http://localhost.evil.com/cb"
        ));
    }
}
