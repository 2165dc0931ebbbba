//! Resource URIs as per-tool rules compare them (`resources/read file:///secret/*`): one
//! spelling per resource, so `file:///public/../secret/key`, `FILE://localhost/secret/key`,
//! `file:///secret//key` or `file:///%73ecret/key` cannot slip past a rule for
//! `file:///secret/*`. RFC 3986 §6.2.2 syntax-based normalisation (case of the scheme and the
//! host, percent-encoding of unreserved characters decoded and the rest upper-cased, dot
//! segments removed, §5.2.4) and §6.2.3 scheme-based normalisation (default ports, an empty
//! path, `file://localhost/` = `file:///`), plus what MCP servers do when they turn a URI into
//! a file: empty segments collapsed and `%2F`, `%5C` and `\` read as separators.
//!
//! A URI this cannot read (no scheme, bytes outside visible ASCII, a broken escape) is `None`:
//! the caller then applies every rule the method has, as an unreadable path does.

use crate::rfc3986::{decode_unreserved, dot_segments};

/// The normal form of `uri`, or `None` when it cannot be read.
pub fn normalize_resource_uri(uri: &str) -> Option<String> {
    if uri.is_empty() || !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let colon = uri.find(':')?;
    let scheme = &uri[..colon];
    let valid_scheme = scheme
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid_scheme {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let rest = &uri[colon + 1..];
    // The fragment names a part of the resource, never another one.
    let rest = rest.split('#').next().unwrap_or("");
    let (hier, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let hier = hier.replace('\\', "/");
    let mut out = String::with_capacity(uri.len());
    out.push_str(&scheme);
    out.push(':');
    let has_authority = hier.starts_with("//");
    let path = if let Some(after) = hier.strip_prefix("//") {
        let (authority, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        let authority = authority_normal(&scheme, authority)?;
        out.push_str("//");
        out.push_str(&authority);
        path.to_string()
    } else {
        hier
    };
    let path = decode_unreserved(&path, true, false)?;
    let absolute = path.starts_with('/');
    let (segments, trailing) = dot_segments(&path, false);
    if absolute || has_authority {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(&decode_unreserved(query, false, false)?);
    }
    Some(out)
}

/// `userinfo@host:port`, host lower-cased, a default port dropped, `localhost` of a `file:` URI
/// dropped (RFC 8089 §2: it means the local machine, as an empty host does).
fn authority_normal(scheme: &str, authority: &str) -> Option<String> {
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host_port, None),
    };
    let host = decode_unreserved(host, false, false)?.to_ascii_lowercase();
    // An escape left in a host (`file://%2Fsecret/key`) is no name a resolver knows, and a
    // server that decodes the whole URI would read a path in it: unreadable.
    if host.contains('%') {
        return None;
    }
    let host = host.trim_end_matches('.');
    let default_port = match scheme {
        "http" | "ws" => Some("80"),
        "https" | "wss" => Some("443"),
        _ => None,
    };
    let port = port.filter(|p| !p.is_empty() && Some(*p) != default_port);
    let mut out = String::new();
    if let Some(u) = userinfo {
        out.push_str(&decode_unreserved(u, false, false)?);
        out.push('@');
    }
    if !(scheme == "file" && host == "localhost") {
        out.push_str(host);
    }
    if let Some(p) = port {
        out.push(':');
        out.push_str(p.trim_start_matches('0'));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_resource() {
        let n = |u| normalize_resource_uri(u);
        for spelling in [
            "file:///secret/key",
            "FILE:///secret/key",
            "file://localhost/secret/key",
            "file://LOCALHOST/secret/key",
            "file:///public/../secret/key",
            "file:///public/./../secret/./key",
            "file:///secret//key",
            "file:////secret/key",
            "file:///%73ecret/key",
            "file:///secret%2Fkey",
            "file:///secret%2fkey",
            "file:///secret\\key",
            "file:///secret/key#part",
            "file:///a/b/../../secret/key",
            "file:///../secret/key",
        ] {
            assert_eq!(
                n(spelling).as_deref(),
                Some("file:///secret/key"),
                "{spelling}"
            );
        }
        assert_eq!(
            n("HTTPS://Example.COM:443/a/%7euser/?q=%7e%2f").as_deref(),
            Some("https://example.com/a/~user/?q=~%2F")
        );
        assert_eq!(n("http://h:8080").as_deref(), Some("http://h:8080/"));
        assert_eq!(n("ui://widget/x").as_deref(), Some("ui://widget/x"));
        assert_eq!(n("mem:notes/a/../b").as_deref(), Some("mem:notes/b"));
        for unreadable in [
            "",
            "no-scheme",
            "1x:/a",
            "file:///a%zz",
            "file:///ä",
            "file:///a b",
            "file:///a%",
        ] {
            assert_eq!(n(unreadable), None, "{unreadable}");
        }
    }
}
