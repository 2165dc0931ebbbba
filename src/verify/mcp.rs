//! What an MCP request calls, for the per-tool policy: the JSON-RPC `method` and the tool,
//! prompt (`params.name`) or resource (`params.uri`) it names. Read from the body Traefik
//! forwards (`forwardBody: true`), else from the `Mcp-Method`/`Mcp-Name` headers of the MCP
//! 2026-07-28 streamable-HTTP transport; when both are present they must agree (the spec's
//! HeaderMismatch), so neither can be forged to smuggle a call past a rule.
//!
//! Only `method` and `params.name`/`params.uri` are read; every other member is skipped without
//! being built. A duplicate member is an error (parsers differ on which one wins), and so is a
//! member that only case-folds to one of these (`"Method"`, `"paramſ"`: Go's `encoding/json`
//! matches struct fields that way, so a Go MCP server would read it); a JSON-RPC batch is read
//! element by element.

use std::borrow::Cow;

use actix_web::http::header::{HeaderMap, HeaderName};

mod scan;

// Names built once: looking a header up by `&str` parses the name on every request.
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// One JSON-RPC message of the request (borrowed from the body unless it had escapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCall<'a> {
    pub method: Cow<'a, str>,
    pub name: Option<Cow<'a, str>>,
}

/// Why the request's calls cannot be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Headers and body disagree (JSON-RPC error -32020).
    Mismatch(&'static str),
    /// The body is not JSON-RPC we can read (-32700 / -32600).
    Unreadable(&'static str),
}

/// The calls of a request: `Ok(None)` when neither body nor headers say (every rule then
/// applies, so omitting them never skips one).
pub fn calls<'a>(
    headers: &'a HeaderMap,
    body: &'a [u8],
) -> Result<Option<Vec<McpCall<'a>>>, CallError> {
    let header_method = single_header(headers, MCP_METHOD)?;
    let header_name = single_header(headers, MCP_NAME)?;
    let body = trim_ascii(body);
    if !body.is_empty() {
        read_as_utf8(headers)?;
    }
    if body.is_empty() {
        return Ok(header_method.map(|method| {
            vec![McpCall {
                method: Cow::Borrowed(method),
                name: header_name.map(Cow::Borrowed),
            }]
        }));
    }
    let mut out = Vec::new();
    // The whole body is read first: an unreadable one is refused as such, mismatch or not.
    let mut mismatch = None;
    let messages = scan::messages(body, |message| {
        // Responses (no method) call nothing.
        let Some(method) = message.method else {
            return;
        };
        let name = message.params.and_then(|p| {
            if method.starts_with("resources/") {
                p.uri
            } else {
                p.name
            }
        });
        if header_method.is_some_and(|h| h != method.as_ref()) {
            mismatch.get_or_insert("the Mcp-Method header does not match the body's method");
        }
        if header_name.is_some_and(|h| name.as_deref() != Some(h)) {
            mismatch.get_or_insert("the Mcp-Name header does not match the body's name");
        }
        out.push(McpCall { method, name });
    })
    .map_err(|_| {
        CallError::Unreadable(if body.first() == Some(&b'[') {
            "the body is not a JSON-RPC batch"
        } else {
            "the body is not a JSON-RPC message"
        })
    })?;
    if messages == 0 {
        return Err(CallError::Unreadable("an empty JSON-RPC batch"));
    }
    if let Some(why) = mismatch {
        return Err(CallError::Mismatch(why));
    }
    Ok(Some(out))
}

/// The body is decided on only when the MCP server reads it exactly as we do: UTF-8 JSON, not
/// encoded. An Express/body-parser server decodes any `utf-*` charset it is told (UTF-7 turns
/// `+AGQ-elete_x` into `delete_x`) and inflates gzip, deflate and br; we read bytes as UTF-8.
fn read_as_utf8(headers: &HeaderMap) -> Result<(), CallError> {
    for encoding in headers.get_all(actix_web::http::header::CONTENT_ENCODING) {
        let identity = encoding.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .all(|e| e.is_empty() || e.eq_ignore_ascii_case("identity"))
        });
        if !identity {
            return Err(CallError::Unreadable(
                "an encoded request body (Content-Encoding) is not read: send it as identity",
            ));
        }
    }
    let mut types = headers.get_all(actix_web::http::header::CONTENT_TYPE);
    let Some(content_type) = types.next() else {
        return Ok(());
    };
    let utf8 = types.next().is_none()
        && content_type.to_str().is_ok_and(|v| {
            v.split(';')
                .skip(1)
                .all(|param| match param.split_once('=') {
                    Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
                        let value = value.trim().trim_matches('"');
                        value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
                    }
                    _ => true,
                })
        });
    if utf8 {
        Ok(())
    } else {
        Err(CallError::Unreadable(
            "a request body in a charset other than UTF-8 is not read",
        ))
    }
}

fn single_header(headers: &HeaderMap, name: HeaderName) -> Result<Option<&str>, CallError> {
    let mut values = headers.get_all(name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CallError::Mismatch(
            "a repeated Mcp-Method or Mcp-Name header",
        ));
    }
    first
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| CallError::Unreadable("an Mcp-Method or Mcp-Name header that is not text"))
}

fn trim_ascii(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes
        && first.is_ascii_whitespace()
    {
        bytes = rest;
    }
    while let [rest @ .., last] = bytes
        && last.is_ascii_whitespace()
    {
        bytes = rest;
    }
    bytes
}

/// A JSON-RPC message, reduced to `method` and the params the policy reads.
#[derive(Debug, PartialEq, Eq)]
struct Message<'a> {
    method: Option<Cow<'a, str>>,
    params: Option<Params<'a>>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Params<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::tests::headers;

    fn call(method: &str, name: Option<&str>) -> McpCall<'static> {
        McpCall {
            method: Cow::Owned(method.into()),
            name: name.map(|n| Cow::Owned(n.to_string())),
        }
    }

    #[test]
    fn body_headers_and_their_disagreement() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"x"},"name":"delete_all"}}"#;
        assert_eq!(
            calls(&headers(&[]), body).unwrap(),
            Some(vec![call("tools/call", Some("delete_all"))])
        );
        let h = headers(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]);
        assert_eq!(
            calls(&h, b"").unwrap(),
            Some(vec![call("tools/call", Some("echo"))])
        );
        assert!(matches!(calls(&h, body), Err(CallError::Mismatch(_))));
        assert_eq!(calls(&headers(&[]), b"  ").unwrap(), None);
        // Escapes decode before comparison; duplicates and non-strings are refused.
        let escaped = br#"{"method":"tools/call","params":{"name":"\u0064elete_all"}}"#;
        assert_eq!(
            calls(&headers(&[]), escaped).unwrap(),
            Some(vec![call("tools/call", Some("delete_all"))])
        );
        for bad in [
            &br#"{"method":"tools/call","params":{"name":"echo","name":"delete_all"}}"#[..],
            br#"{"method":"tools/call","method":"ping"}"#,
            br#"{"method":"tools/call","params":{"name":["delete_all"]}}"#,
            br#"not json"#,
            br#"[]"#,
            // What a Go server's case-insensitive field matching would read.
            br#"{"method":"tools/list","Method":"tools/call","params":{"name":"delete_all"}}"#,
            br#"{"method":"tools/call","params":{"name":"echo","NAME":"delete_all"}}"#,
            "{\"method\":\"tools/call\",\"param\u{17F}\":{\"name\":\"delete_all\"}}".as_bytes(),
        ] {
            assert!(
                calls(&headers(&[]), bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Only bodies read exactly as the server will read them.
        let call_body = br#"{"method":"tools/list"}"#;
        for (name, value) in [
            ("content-type", "application/json; charset=utf-7"),
            ("content-type", "application/json;charset=\"UTF-16\""),
            ("content-type", "application/json; charset=iso-8859-1"),
            ("content-encoding", "gzip"),
            ("content-encoding", "identity, br"),
        ] {
            assert!(
                matches!(
                    calls(&headers(&[(name, value)]), call_body),
                    Err(CallError::Unreadable(_))
                ),
                "{name}: {value}"
            );
        }
        for value in [
            "application/json",
            "application/json; charset=UTF-8",
            "application/json;charset=\"utf-8\"",
        ] {
            assert!(
                calls(&headers(&[("content-type", value)]), call_body).is_ok(),
                "{value}"
            );
        }
        assert!(calls(&headers(&[("content-encoding", "identity")]), call_body).is_ok());
        let batch = br#"[{"method":"tools/list"},{"method":"resources/read","params":{"uri":"file:///x"}},{"id":3,"result":{}}]"#;
        assert_eq!(
            calls(&headers(&[]), batch).unwrap(),
            Some(vec![
                call("tools/list", None),
                call("resources/read", Some("file:///x"))
            ])
        );
    }
}
