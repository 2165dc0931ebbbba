//! One error type for the authorization server, with one table from error to status and
//! headers (RFC 6749 §5.2, RFC 7591 §3.2.2, RFC 7592 §2, RFC 6750 §3). The client sees the
//! RFC error and a description; the cause chain goes to the log.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};

use crate::store::StoreError;

/// Constructors of the errors that are 400 and their RFC code, nothing more: each named as its
/// code, with the client's description.
macro_rules! bad_request_errors {
    ($($(#[$doc:meta])* $code:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $code(description: impl Into<String>) -> Self {
                Self::new(StatusCode::BAD_REQUEST, stringify!($code), description)
            }
        )*
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    pub challenge: Option<&'static str>,
    pub retry_after: Option<u64>,
    /// The store failed (counted as `mcp_gateway_redis_errors_total`).
    pub store_failure: bool,
    /// RFC 9449 §8: the nonce the client must put in its next DPoP proof (`DPoP-Nonce`).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            challenge: None,
            retry_after: None,
            store_failure: false,
            dpop_nonce: None,
        }
    }

    /// RFC 9449 §8: the proof lacks a current server nonce; `nonce` is the one to use.
    pub fn use_dpop_nonce(nonce: String) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "use_dpop_nonce",
            "the DPoP proof must carry the server nonce given in DPoP-Nonce",
        );
        e.dpop_nonce = Some(nonce);
        e
    }

    bad_request_errors! {
        invalid_request;
        invalid_grant;
        unauthorized_client;
        unsupported_grant_type;
        invalid_scope;
        /// RFC 8707 §2: the requested resource is not one we serve.
        invalid_target;
        invalid_client_metadata;
        invalid_redirect_uri;
        /// Our own: the login this request continues is unknown, expired or used.
        invalid_state;
        /// RFC 9449 §5: the DPoP proof is missing where required, malformed or replayed.
        invalid_dpop_proof;
    }

    /// The user (or a check on their behalf, such as CSRF) refused: 403.
    pub fn access_denied(description: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "access_denied", description)
    }

    /// Client authentication failed (RFC 6749 §5.2): 401 with a Basic challenge.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description);
        e.challenge = Some("Basic realm=\"auth\"");
        e
    }

    /// RFC 7592 §2: no registration access token.
    pub fn registration_token_missing() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "a registration access token is required",
        );
        e.challenge = Some("Bearer realm=\"auth\"");
        e
    }

    pub fn registration_token_wrong() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_token",
            "the registration access token is not valid for this client",
        )
    }

    pub fn unknown_client() -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_client", "no such client")
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many requests from this address; retry later",
        );
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    pub fn temporarily_unavailable(description: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        );
        e.retry_after = Some(2);
        e
    }

    pub fn server_error(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            description,
        )
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store operation failed");
        let mut error = match e {
            StoreError::Unavailable(_) => {
                OAuthError::temporarily_unavailable("storage is unavailable; retry shortly")
            }
            StoreError::Corrupt(_) => OAuthError::server_error("stored data could not be read"),
        };
        error.store_failure = true;
        error
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        builder
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((CACHE_CONTROL, "no-store"))
            .insert_header((PRAGMA, "no-cache"));
        if let Some(challenge) = self.challenge {
            builder.insert_header((WWW_AUTHENTICATE, challenge));
        }
        if let Some(secs) = self.retry_after {
            builder.insert_header((RETRY_AFTER, secs.to_string()));
        }
        if let Some(nonce) = &self.dpop_nonce {
            builder.insert_header(("DPoP-Nonce", nonce.as_str()));
        }
        builder.body(
            serde_json::json!({"error": self.code, "error_description": self.description})
                .to_string(),
        )
    }
}

/// The answer to a JSON endpoint: the response, or the error as RFC 6749 §5.2 JSON, counted
/// in the metrics under `endpoint` (and as a Redis error when the store failed).
pub fn track(
    state: &super::AuthState,
    endpoint: &str,
    result: Result<HttpResponse, OAuthError>,
) -> HttpResponse {
    result.unwrap_or_else(|e| {
        state.metrics.error(endpoint, e.code);
        if e.store_failure {
            state.metrics.redis_errors.inc();
        }
        e.error_response()
    })
}

/// A JSON body that must not be cached (it may carry credentials).
pub fn json_response(status: StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((PRAGMA, "no-cache"))
        .body(body.to_string())
}
