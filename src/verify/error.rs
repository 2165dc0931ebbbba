//! How a refusal looks on the wire (RFC 6750 §3, RFC 9728 §5.1): one table from [`Denial`] to
//! status, `WWW-Authenticate`, `Retry-After` and the JSON body. Traefik hands all of it back to
//! the MCP client unchanged. Never a redirect: MCP clients refuse cross-origin redirects.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};

use super::metrics::Reason;

/// Seconds a client should wait when the store is unreachable.
pub const RETRY_AFTER_SECS: &str = "2";

/// A refusal, with what the client needs to recover from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub description: &'static str,
    /// For `insufficient_scope`: the scopes the route needs.
    pub scope: Option<String>,
    /// For a request that is not readable JSON-RPC: the JSON-RPC error code of the answer.
    pub jsonrpc_code: Option<i32>,
    /// For `use_dpop_nonce`: the nonce the client's next proof must carry (`DPoP-Nonce`).
    pub dpop_nonce: Option<String>,
}

/// JSON-RPC error codes of a 400: the body does not parse, and MCP's HeaderMismatch.
pub const JSONRPC_PARSE_ERROR: i32 = -32700;
pub const JSONRPC_HEADER_MISMATCH: i32 = -32020;

impl Denial {
    pub fn new(reason: Reason, description: &'static str) -> Self {
        Self {
            reason,
            description,
            scope: None,
            jsonrpc_code: None,
            dpop_nonce: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.reason {
            Reason::InsufficientScope | Reason::ToolNotAllowed | Reason::NotEntitled => {
                StatusCode::FORBIDDEN
            }
            Reason::BadRequest => StatusCode::BAD_REQUEST,
            Reason::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 error code of the body (and of the challenge, where one is sent).
    pub fn error_code(&self) -> &'static str {
        match self.reason {
            Reason::NoToken => "invalid_request",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::ToolNotAllowed | Reason::NotEntitled => "access_denied",
            Reason::BadRequest => "invalid_request",
            Reason::StoreUnavailable => "temporarily_unavailable",
            Reason::InvalidDpopProof => "invalid_dpop_proof",
            Reason::UseDpopNonce => "use_dpop_nonce",
            _ => "invalid_token",
        }
    }

    /// `metadata_url`: where the client finds the protected-resource metadata (absent when the
    /// request named no host of ours). `scope`: what to ask for in a new authorization.
    pub fn into_response(self, metadata_url: Option<&str>, scope: Option<&str>) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status());
        builder
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((CACHE_CONTROL, "no-store"));
        match self.reason {
            Reason::StoreUnavailable => {
                builder.insert_header((RETRY_AFTER, RETRY_AFTER_SECS));
            }
            Reason::InsufficientScope => {
                let needed = self.scope.as_deref().or(scope);
                let mut challenge = String::from("Bearer error=\"insufficient_scope\"");
                push_param(&mut challenge, "error_description", Some(self.description));
                push_param(&mut challenge, "scope", needed);
                push_param(&mut challenge, "resource_metadata", metadata_url);
                builder.insert_header((WWW_AUTHENTICATE, challenge));
            }
            Reason::BadRequest => {
                // A JSON-RPC answer the MCP client understands (no credential problem).
                let body = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": null,
                    "error": {
                        "code": self.jsonrpc_code.unwrap_or(JSONRPC_PARSE_ERROR),
                        "message": self.description,
                    },
                });
                return builder.body(body.to_string());
            }
            Reason::ToolNotAllowed | Reason::NotEntitled => {
                // No step-up would help (the user is not one a rule admits, or may not hold
                // the scope): no error in the challenge, so clients do not try one.
                let mut challenge = String::from("Bearer realm=\"mcp\"");
                push_param(&mut challenge, "error_description", Some(self.description));
                push_param(&mut challenge, "resource_metadata", metadata_url);
                builder.insert_header((WWW_AUTHENTICATE, challenge));
            }
            Reason::NoToken => {
                // RFC 6750 §3.1: no error code when the request carried no credential.
                let mut challenge = String::from("Bearer realm=\"mcp\"");
                push_param(&mut challenge, "resource_metadata", metadata_url);
                push_param(&mut challenge, "scope", scope);
                builder.insert_header((WWW_AUTHENTICATE, challenge));
            }
            Reason::InvalidDpopProof | Reason::DpopRequired | Reason::UseDpopNonce => {
                if let Some(nonce) = &self.dpop_nonce {
                    builder.insert_header(("DPoP-Nonce", nonce.as_str()));
                }
                // RFC 9449 §7.1: the DPoP challenge names the algorithms and the error; the
                // Bearer one beside it, as bearer tokens are accepted too.
                let mut dpop =
                    format!("DPoP algs=\"{}\"", crate::token::dpop::ALGORITHMS.join(" "));
                push_param(&mut dpop, "error", Some(self.error_code()));
                push_param(&mut dpop, "error_description", Some(self.description));
                builder.append_header((WWW_AUTHENTICATE, dpop));
                let mut bearer = String::from("Bearer realm=\"mcp\"");
                push_param(&mut bearer, "resource_metadata", metadata_url);
                push_param(&mut bearer, "scope", scope);
                builder.append_header((WWW_AUTHENTICATE, bearer));
            }
            _ => {
                let mut challenge = String::from("Bearer realm=\"mcp\", error=\"invalid_token\"");
                push_param(&mut challenge, "error_description", Some(self.description));
                push_param(&mut challenge, "resource_metadata", metadata_url);
                push_param(&mut challenge, "scope", scope);
                builder.insert_header((WWW_AUTHENTICATE, challenge));
            }
        }
        let body = serde_json::json!({
            "error": self.error_code(),
            "error_description": self.description,
        });
        builder.body(body.to_string())
    }
}

/// Appends `, name="value"`; values are ours (URLs, scope tokens, fixed texts), but quotes
/// and backslashes are escaped all the same (RFC 9110 quoted-string).
fn push_param(out: &mut String, name: &str, value: Option<&str>) {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return;
    };
    out.push_str(", ");
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.push('"');
}
